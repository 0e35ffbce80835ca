#include "ops.h"

#include <math.h>

#include "../common.h"
#include "simd.h"

/* Rows are split statically among threads; parameter-gradient reductions are
 * split by column instead, so each column is summed over rows in row order by
 * one thread and the result does not depend on the thread count. */
#define PARALLEL_ROWS(rows) _Pragma("omp parallel for schedule(static) num_threads(gs_num_threads()) if((rows) > 16)")

#ifdef GS_HAVE_AVX2_PATH
__attribute__((target("avx2,fma"))) static float exp_shifted_avx2(int n, const float *x, float shift, float *y)
{
    const __m256 vs = _mm256_set1_ps(shift), ninf = _mm256_set1_ps(-INFINITY);
    __m256 acc = _mm256_setzero_ps();
    int j = 0;
    for (; j + 8 <= n; j += 8) {
        __m256 v = _mm256_loadu_ps(x + j);
        __m256 e = gs_exp_nonpositive_avx2(_mm256_sub_ps(v, vs));
        e = _mm256_andnot_ps(_mm256_cmp_ps(v, ninf, _CMP_EQ_OQ), e); /* masked keys: exactly 0 */
        _mm256_storeu_ps(y + j, e);
        acc = _mm256_add_ps(acc, e);
    }
    float lanes[8];
    _mm256_storeu_ps(lanes, acc);
    float sum = ((lanes[0] + lanes[1]) + (lanes[2] + lanes[3])) + ((lanes[4] + lanes[5]) + (lanes[6] + lanes[7]));
    for (; j < n; j++) {
        y[j] = x[j] == -INFINITY ? 0.0f : expf(x[j] - shift);
        sum += y[j];
    }
    return sum;
}
#endif

float gs_exp_shifted(int n, const float *x, float shift, float *y)
{
#ifdef GS_HAVE_AVX2_PATH
    static int avx2 = -1;
    if (avx2 < 0) avx2 = gs_cpu_has_avx2_fma(); /* idempotent race: same value from every thread */
    if (avx2) return exp_shifted_avx2(n, x, shift, y);
#endif
    float sum = 0.0f;
    for (int j = 0; j < n; j++) {
        y[j] = x[j] == -INFINITY ? 0.0f : expf(x[j] - shift);
        sum += y[j];
    }
    return sum;
}

void gs_softmax_forward(size_t rows, int n, const float *x, float *y)
{
    PARALLEL_ROWS(rows)
    for (size_t r = 0; r < rows; r++) {
        const float *xr = x + r * n;
        float *yr = y + r * n;
        float mx = -INFINITY;
        for (int j = 0; j < n; j++) mx = xr[j] > mx ? xr[j] : mx;
        if (mx == -INFINITY) { /* a fully masked row: no mass anywhere */
            for (int j = 0; j < n; j++) yr[j] = 0.0f;
            continue;
        }
        float inv = 1.0f / gs_exp_shifted(n, xr, mx, yr);
        for (int j = 0; j < n; j++) yr[j] *= inv;
    }
}

void gs_softmax_backward(size_t rows, int n, const float *y, const float *dy, float *dx)
{
    PARALLEL_ROWS(rows)
    for (size_t r = 0; r < rows; r++) {
        const float *yr = y + r * n, *dyr = dy + r * n;
        float *dxr = dx + r * n;
        float dot = 0.0f;
        for (int j = 0; j < n; j++) dot += yr[j] * dyr[j];
        for (int j = 0; j < n; j++) dxr[j] = yr[j] * (dyr[j] - dot);
    }
}

void gs_layernorm_forward(size_t rows, int C, const float *x, const float *gamma,
                          const float *beta, float eps, float *y, float *mean, float *rstd)
{
    PARALLEL_ROWS(rows)
    for (size_t r = 0; r < rows; r++) {
        const float *xr = x + r * C;
        float *yr = y + r * C;
        float m = 0.0f;
        for (int j = 0; j < C; j++) m += xr[j];
        m /= C;
        float v = 0.0f;
        for (int j = 0; j < C; j++) v += (xr[j] - m) * (xr[j] - m);
        v /= C;
        float s = 1.0f / sqrtf(v + eps);
        for (int j = 0; j < C; j++) yr[j] = (xr[j] - m) * s * gamma[j] + (beta ? beta[j] : 0.0f);
        mean[r] = m;
        rstd[r] = s;
    }
}

void gs_layernorm_backward(size_t rows, int C, const float *x, const float *gamma,
                           const float *mean, const float *rstd, const float *dy, float *dx,
                           float *dgamma, float *dbeta)
{
#pragma omp parallel num_threads(gs_num_threads())
    {
        /* parameter gradients, column-parallel (see the note at the top) */
#pragma omp for schedule(static)
        for (int j = 0; j < C; j++) {
            float dg = 0.0f, db = 0.0f;
            for (size_t r = 0; r < rows; r++) {
                float xhat = (x[r * C + j] - mean[r]) * rstd[r];
                dg += dy[r * C + j] * xhat;
                db += dy[r * C + j];
            }
            dgamma[j] += dg;
            if (dbeta) dbeta[j] += db;
        }
#pragma omp for schedule(static)
        for (size_t r = 0; r < rows; r++) {
            const float *xr = x + r * C, *dyr = dy + r * C;
            float *dxr = dx + r * C;
            float m = mean[r], s = rstd[r];
            float mean_g = 0.0f, mean_gx = 0.0f; /* g = dy * gamma */
            for (int j = 0; j < C; j++) {
                float g = dyr[j] * gamma[j];
                mean_g += g;
                mean_gx += g * (xr[j] - m) * s;
            }
            mean_g /= C;
            mean_gx /= C;
            for (int j = 0; j < C; j++) {
                float xhat = (xr[j] - m) * s;
                dxr[j] = s * (dyr[j] * gamma[j] - mean_g - xhat * mean_gx);
            }
        }
    }
}

void gs_rmsnorm_forward(size_t rows, int C, const float *x, const float *weight, float eps,
                        float *y, float *rstd)
{
    PARALLEL_ROWS(rows)
    for (size_t r = 0; r < rows; r++) {
        const float *xr = x + r * C;
        float *yr = y + r * C;
        float ss = 0.0f;
        for (int j = 0; j < C; j++) ss += xr[j] * xr[j];
        float s = 1.0f / sqrtf(ss / C + eps);
        for (int j = 0; j < C; j++) yr[j] = xr[j] * s * weight[j];
        rstd[r] = s;
    }
}

void gs_rmsnorm_backward(size_t rows, int C, const float *x, const float *weight,
                         const float *rstd, const float *dy, float *dx, float *dweight)
{
#pragma omp parallel num_threads(gs_num_threads())
    {
#pragma omp for schedule(static)
        for (int j = 0; j < C; j++) {
            float dw = 0.0f;
            for (size_t r = 0; r < rows; r++) dw += dy[r * C + j] * x[r * C + j] * rstd[r];
            dweight[j] += dw;
        }
#pragma omp for schedule(static)
        for (size_t r = 0; r < rows; r++) {
            const float *xr = x + r * C, *dyr = dy + r * C;
            float *dxr = dx + r * C;
            float s = rstd[r];
            float dot = 0.0f; /* sum_j dy_j w_j x_j */
            for (int j = 0; j < C; j++) dot += dyr[j] * weight[j] * xr[j];
            float k = dot * s * s * s / C;
            for (int j = 0; j < C; j++) dxr[j] = dyr[j] * weight[j] * s - xr[j] * k;
        }
    }
}

#define PARALLEL_ELEMS(n) _Pragma("omp parallel for schedule(static) num_threads(gs_num_threads()) if((n) > 32768)")

void gs_relu_forward(size_t n, const float *x, float *y)
{
    PARALLEL_ELEMS(n)
    for (size_t i = 0; i < n; i++) y[i] = x[i] > 0.0f ? x[i] : 0.0f;
}

void gs_relu_backward(size_t n, const float *x, const float *dy, float *dx)
{
    PARALLEL_ELEMS(n)
    for (size_t i = 0; i < n; i++) dx[i] = x[i] > 0.0f ? dy[i] : 0.0f;
}

#define GELU_K 0.7978845608028654f /* sqrt(2/pi) */

void gs_gelu_tanh_forward(size_t n, const float *x, float *y)
{
    PARALLEL_ELEMS(n)
    for (size_t i = 0; i < n; i++) {
        float v = x[i];
        y[i] = 0.5f * v * (1.0f + tanhf(GELU_K * (v + 0.044715f * v * v * v)));
    }
}

void gs_gelu_tanh_backward(size_t n, const float *x, const float *dy, float *dx)
{
    PARALLEL_ELEMS(n)
    for (size_t i = 0; i < n; i++) {
        float v = x[i];
        float t = tanhf(GELU_K * (v + 0.044715f * v * v * v));
        float dt = GELU_K * (1.0f + 3.0f * 0.044715f * v * v) * (1.0f - t * t);
        dx[i] = dy[i] * (0.5f * (1.0f + t) + 0.5f * v * dt);
    }
}

#ifdef GS_HAVE_AVX2_PATH
/* GELU(x) = x Phi(x) = 0.5 x erfc(-x / sqrt 2), written through erfc(|x| / sqrt 2)
 * so that the negative side, where 1 + erf cancels, keeps its relative accuracy. */
__attribute__((target("avx2,fma"))) static void gelu_erf_avx2(size_t n, const float *x, float *y)
{
    const __m256 half = _mm256_set1_ps(0.5f), two = _mm256_set1_ps(2.0f);
    const __m256 sign = _mm256_set1_ps(-0.0f), rsqrt2 = _mm256_set1_ps(0.7071067811865476f);
    for (size_t i = 0; i < n; i += 8) {
        __m256 v = _mm256_loadu_ps(x + i);
        __m256 q = gs_erfc_nonnegative_avx2(_mm256_mul_ps(_mm256_andnot_ps(sign, v), rsqrt2));
        __m256 neg = _mm256_cmp_ps(v, _mm256_setzero_ps(), _CMP_LT_OQ);
        __m256 phi2 = _mm256_blendv_ps(_mm256_sub_ps(two, q), q, neg); /* 2 Phi(x) */
        _mm256_storeu_ps(y + i, _mm256_mul_ps(_mm256_mul_ps(half, v), phi2));
    }
}
#endif

void gs_gelu_erf_forward(size_t n, const float *x, float *y)
{
#ifdef GS_HAVE_AVX2_PATH
    static int avx2 = -1;
    if (avx2 < 0) avx2 = gs_cpu_has_avx2_fma(); /* idempotent race: same value from every thread */
    if (avx2) {
        size_t n8 = n / 8 * 8, chunk = 8192;
#pragma omp parallel for schedule(static) num_threads(gs_num_threads()) if (n8 > 32768)
        for (size_t i = 0; i < n8; i += chunk) gelu_erf_avx2((n8 - i < chunk ? n8 - i : chunk), x + i, y + i);
        for (size_t i = n8; i < n; i++) y[i] = 0.5f * x[i] * (1.0f + erff(x[i] * 0.7071067811865476f));
        return;
    }
#endif
    PARALLEL_ELEMS(n)
    for (size_t i = 0; i < n; i++) y[i] = 0.5f * x[i] * (1.0f + erff(x[i] * 0.7071067811865476f));
}

void gs_gelu_erf_backward(size_t n, const float *x, const float *dy, float *dx)
{
    PARALLEL_ELEMS(n)
    for (size_t i = 0; i < n; i++) {
        float v = x[i];
        float cdf = 0.5f * (1.0f + erff(v * 0.7071067811865476f));
        float pdf = 0.3989422804014327f * expf(-0.5f * v * v);
        dx[i] = dy[i] * (cdf + v * pdf);
    }
}
