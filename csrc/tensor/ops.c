#include "ops.h"

#include <math.h>

#include "../common.h"
#include "simd.h"

/* Each kernel is a serial body over a range of rows (or elements, or columns)
 * compiled for every path (GS_MULTIVERSION, simd.h); the public function splits
 * the range into fixed chunks shared statically among threads. Rows are
 * independent; parameter-gradient reductions are split by column, so each
 * column is summed over rows in row order by one thread: results do not depend
 * on the thread count. Row reductions use `omp simd` (a fixed vector order per
 * path). No libm calls in the loops: the exponentials are simd.h's. */

#define ROW_CHUNK 8       /* rows per task */
#define ELEM_CHUNK 16384  /* elements per task */
#define COL_BLOCK 64      /* columns per reduction task: one accumulator vector set */

/* y[j] = exp(x[j] - shift) (exactly 0 for masked keys, x[j] = -inf), summed in a
 * fixed order per path; y == NULL only sums. Lanes are added pairwise at the end,
 * the tail in order. */
static float exp_shifted_scalar(int n, const float *x, float shift, float *y)
{
    float sum = 0.0f;
    for (int j = 0; j < n; j++) {
        float e = x[j] == -INFINITY ? 0.0f : gs_exp_nonpositive_scalar(x[j] - shift);
        if (y) y[j] = e;
        sum += e;
    }
    return sum;
}

#ifdef GS_HAVE_AVX2_PATH
GS_TARGET_AVX2 static float exp_shifted_avx2(int n, const float *x, float shift, float *y)
{
    const __m256 vs = _mm256_set1_ps(shift), ninf = _mm256_set1_ps(-INFINITY);
    __m256 acc = _mm256_setzero_ps();
    int j = 0;
    for (; j + 8 <= n; j += 8) {
        __m256 v = _mm256_loadu_ps(x + j);
        __m256 e = gs_exp_nonpositive_avx2(_mm256_sub_ps(v, vs));
        e = _mm256_andnot_ps(_mm256_cmp_ps(v, ninf, _CMP_EQ_OQ), e); /* masked keys: exactly 0 */
        if (y) _mm256_storeu_ps(y + j, e);
        acc = _mm256_add_ps(acc, e);
    }
    float lanes[8];
    _mm256_storeu_ps(lanes, acc);
    float sum = ((lanes[0] + lanes[1]) + (lanes[2] + lanes[3])) + ((lanes[4] + lanes[5]) + (lanes[6] + lanes[7]));
    for (; j < n; j++) {
        float e = x[j] == -INFINITY ? 0.0f : gs_exp_nonpositive_scalar(x[j] - shift);
        if (y) y[j] = e;
        sum += e;
    }
    return sum;
}
#endif

#ifdef GS_HAVE_AVX512_PATH
GS_TARGET_AVX512 static float exp_shifted_avx512(int n, const float *x, float shift, float *y)
{
    const __m512 vs = _mm512_set1_ps(shift), ninf = _mm512_set1_ps(-INFINITY);
    __m512 acc = _mm512_setzero_ps();
    for (int j = 0; j < n; j += 16) {
        /* the tail as a masked vector: no scalar code between vector loops */
        __mmask16 m = n - j >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (n - j)) - 1u);
        __m512 v = _mm512_maskz_loadu_ps(m, x + j);
        __mmask16 live = _mm512_mask_cmp_ps_mask(m, v, ninf, _CMP_NEQ_UQ); /* masked keys: exactly 0 */
        __m512 e = _mm512_maskz_mov_ps(live, gs_exp_nonpositive_avx512(_mm512_sub_ps(v, vs)));
        if (y) _mm512_mask_storeu_ps(y + j, m, e);
        acc = _mm512_add_ps(acc, e);
    }
    return _mm512_reduce_add_ps(acc);
}
#endif

float gs_exp_shifted(int n, const float *x, float shift, float *y)
{
    switch (gs_isa()) {
#ifdef GS_HAVE_AVX512_PATH
    case GS_ISA_AVX512: return exp_shifted_avx512(n, x, shift, y);
#endif
#ifdef GS_HAVE_AVX2_PATH
    case GS_ISA_AVX2: return exp_shifted_avx2(n, x, shift, y);
#endif
    default: return exp_shifted_scalar(n, x, shift, y);
    }
}


/* ----------------------------------------------------------------- softmax */

GS_INLINE void softmax_rows_body(size_t r0, size_t r1, int n, const float *x, float *y)
{
    for (size_t r = r0; r < r1; r++) {
        const float *xr = x + r * n;
        float *yr = y + r * n;
        float mx = -INFINITY;
#pragma omp simd reduction(max : mx)
        for (int j = 0; j < n; j++) mx = xr[j] > mx ? xr[j] : mx;
        if (mx == -INFINITY) { /* a fully masked row: no mass anywhere */
            for (int j = 0; j < n; j++) yr[j] = 0.0f;
            continue;
        }
        float inv = 1.0f / gs_exp_shifted(n, xr, mx, yr);
        for (int j = 0; j < n; j++) yr[j] *= inv;
    }
}
GS_MULTIVERSION(softmax_rows, (size_t r0, size_t r1, int n, const float *x, float *y), (r0, r1, n, x, y))

void gs_softmax_forward(size_t rows, int n, const float *x, float *y)
{
    softmax_rows_fn k = softmax_rows_pick();
    GS_FOR_CHUNKS(rows, ROW_CHUNK, 16, r0, r1, k(r0, r1, n, x, y));
}

GS_INLINE void softmax_back_rows_body(size_t r0, size_t r1, int n, const float *y, const float *dy, float *dx)
{
    for (size_t r = r0; r < r1; r++) {
        const float *yr = y + r * n, *dyr = dy + r * n;
        float *dxr = dx + r * n;
        float dot = 0.0f;
#pragma omp simd reduction(+ : dot)
        for (int j = 0; j < n; j++) dot += yr[j] * dyr[j];
        for (int j = 0; j < n; j++) dxr[j] = yr[j] * (dyr[j] - dot);
    }
}
GS_MULTIVERSION(softmax_back_rows, (size_t r0, size_t r1, int n, const float *y, const float *dy, float *dx),
                (r0, r1, n, y, dy, dx))

void gs_softmax_backward(size_t rows, int n, const float *y, const float *dy, float *dx)
{
    softmax_back_rows_fn k = softmax_back_rows_pick();
    GS_FOR_CHUNKS(rows, ROW_CHUNK, 16, r0, r1, k(r0, r1, n, y, dy, dx));
}

/* --------------------------------------------------------------- layernorm */

GS_INLINE void layernorm_rows_body(size_t r0, size_t r1, int C, const float *x, const float *gamma,
                                   const float *beta, float eps, float *y, float *mean, float *rstd)
{
    for (size_t r = r0; r < r1; r++) {
        const float *xr = x + r * C;
        float *yr = y + r * C;
        float m = 0.0f;
#pragma omp simd reduction(+ : m)
        for (int j = 0; j < C; j++) m += xr[j];
        m /= C;
        float v = 0.0f;
#pragma omp simd reduction(+ : v)
        for (int j = 0; j < C; j++) v += (xr[j] - m) * (xr[j] - m);
        v /= C;
        float s = 1.0f / sqrtf(v + eps);
        if (beta)
            for (int j = 0; j < C; j++) yr[j] = (xr[j] - m) * s * gamma[j] + beta[j];
        else
            for (int j = 0; j < C; j++) yr[j] = (xr[j] - m) * s * gamma[j];
        mean[r] = m;
        rstd[r] = s;
    }
}
GS_MULTIVERSION(layernorm_rows,
                (size_t r0, size_t r1, int C, const float *x, const float *gamma, const float *beta,
                 float eps, float *y, float *mean, float *rstd),
                (r0, r1, C, x, gamma, beta, eps, y, mean, rstd))

void gs_layernorm_forward(size_t rows, int C, const float *x, const float *gamma,
                          const float *beta, float eps, float *y, float *mean, float *rstd)
{
    layernorm_rows_fn k = layernorm_rows_pick();
    GS_FOR_CHUNKS(rows, ROW_CHUNK, 16, r0, r1, k(r0, r1, C, x, gamma, beta, eps, y, mean, rstd));
}

/* dgamma[j] += sum_r dy[r,j] xhat[r,j], dbeta[j] += sum_r dy[r,j] for j in [j0, j1), r in order */
GS_INLINE void layernorm_param_grads_body(size_t j0, size_t j1, size_t rows, int C, const float *x,
                                          const float *mean, const float *rstd, const float *dy,
                                          float *dgamma, float *dbeta)
{
    float dg[COL_BLOCK] = {0}, db[COL_BLOCK] = {0};
    const int w = (int)(j1 - j0);
    for (size_t r = 0; r < rows; r++) {
        const float *xr = x + r * C + j0, *dyr = dy + r * C + j0;
        const float m = mean[r], s = rstd[r];
        for (int j = 0; j < w; j++) {
            dg[j] += dyr[j] * ((xr[j] - m) * s);
            db[j] += dyr[j];
        }
    }
    for (int j = 0; j < w; j++) {
        dgamma[j0 + j] += dg[j];
        if (dbeta) dbeta[j0 + j] += db[j];
    }
}
GS_MULTIVERSION(layernorm_param_grads,
                (size_t j0, size_t j1, size_t rows, int C, const float *x, const float *mean,
                 const float *rstd, const float *dy, float *dgamma, float *dbeta),
                (j0, j1, rows, C, x, mean, rstd, dy, dgamma, dbeta))

GS_INLINE void layernorm_back_rows_body(size_t r0, size_t r1, int C, const float *x, const float *gamma,
                                        const float *mean, const float *rstd, const float *dy, float *dx)
{
    for (size_t r = r0; r < r1; r++) {
        const float *xr = x + r * C, *dyr = dy + r * C;
        float *dxr = dx + r * C;
        const float m = mean[r], s = rstd[r];
        float mean_g = 0.0f, mean_gx = 0.0f; /* g = dy * gamma */
#pragma omp simd reduction(+ : mean_g, mean_gx)
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
GS_MULTIVERSION(layernorm_back_rows,
                (size_t r0, size_t r1, int C, const float *x, const float *gamma, const float *mean,
                 const float *rstd, const float *dy, float *dx),
                (r0, r1, C, x, gamma, mean, rstd, dy, dx))

void gs_layernorm_backward(size_t rows, int C, const float *x, const float *gamma,
                           const float *mean, const float *rstd, const float *dy, float *dx,
                           float *dgamma, float *dbeta)
{
    /* parameter gradients first: dx may alias dy */
    layernorm_param_grads_fn kp = layernorm_param_grads_pick();
    GS_FOR_CHUNKS((size_t)C, COL_BLOCK, 0, j0, j1, kp(j0, j1, rows, C, x, mean, rstd, dy, dgamma, dbeta));
    layernorm_back_rows_fn k = layernorm_back_rows_pick();
    GS_FOR_CHUNKS(rows, ROW_CHUNK, 16, r0, r1, k(r0, r1, C, x, gamma, mean, rstd, dy, dx));
}

/* ----------------------------------------------------------------- rmsnorm */

GS_INLINE void rmsnorm_rows_body(size_t r0, size_t r1, int C, const float *x, const float *weight, float eps,
                                 float *y, float *rstd)
{
    for (size_t r = r0; r < r1; r++) {
        const float *xr = x + r * C;
        float *yr = y + r * C;
        float ss = 0.0f;
#pragma omp simd reduction(+ : ss)
        for (int j = 0; j < C; j++) ss += xr[j] * xr[j];
        float s = 1.0f / sqrtf(ss / C + eps);
        for (int j = 0; j < C; j++) yr[j] = xr[j] * s * weight[j];
        rstd[r] = s;
    }
}
GS_MULTIVERSION(rmsnorm_rows,
                (size_t r0, size_t r1, int C, const float *x, const float *weight, float eps, float *y,
                 float *rstd),
                (r0, r1, C, x, weight, eps, y, rstd))

void gs_rmsnorm_forward(size_t rows, int C, const float *x, const float *weight, float eps,
                        float *y, float *rstd)
{
    rmsnorm_rows_fn k = rmsnorm_rows_pick();
    GS_FOR_CHUNKS(rows, ROW_CHUNK, 16, r0, r1, k(r0, r1, C, x, weight, eps, y, rstd));
}

/* dweight[j] += sum_r dy[r,j] x[r,j] rstd[r] for j in [j0, j1), r in order */
GS_INLINE void rmsnorm_param_grads_body(size_t j0, size_t j1, size_t rows, int C, const float *x,
                                        const float *rstd, const float *dy, float *dweight)
{
    float dw[COL_BLOCK] = {0};
    const int w = (int)(j1 - j0);
    for (size_t r = 0; r < rows; r++) {
        const float *xr = x + r * C + j0, *dyr = dy + r * C + j0;
        const float s = rstd[r];
        for (int j = 0; j < w; j++) dw[j] += dyr[j] * xr[j] * s;
    }
    for (int j = 0; j < w; j++) dweight[j0 + j] += dw[j];
}
GS_MULTIVERSION(rmsnorm_param_grads,
                (size_t j0, size_t j1, size_t rows, int C, const float *x, const float *rstd,
                 const float *dy, float *dweight),
                (j0, j1, rows, C, x, rstd, dy, dweight))

GS_INLINE void rmsnorm_back_rows_body(size_t r0, size_t r1, int C, const float *x, const float *weight,
                                      const float *rstd, const float *dy, float *dx)
{
    for (size_t r = r0; r < r1; r++) {
        const float *xr = x + r * C, *dyr = dy + r * C;
        float *dxr = dx + r * C;
        const float s = rstd[r];
        float dot = 0.0f; /* sum_j dy_j w_j x_j */
#pragma omp simd reduction(+ : dot)
        for (int j = 0; j < C; j++) dot += dyr[j] * weight[j] * xr[j];
        const float k = dot * s * s * s / C;
        for (int j = 0; j < C; j++) dxr[j] = dyr[j] * weight[j] * s - xr[j] * k;
    }
}
GS_MULTIVERSION(rmsnorm_back_rows,
                (size_t r0, size_t r1, int C, const float *x, const float *weight, const float *rstd,
                 const float *dy, float *dx),
                (r0, r1, C, x, weight, rstd, dy, dx))

void gs_rmsnorm_backward(size_t rows, int C, const float *x, const float *weight,
                         const float *rstd, const float *dy, float *dx, float *dweight)
{
    /* parameter gradients first: dx may alias dy */
    rmsnorm_param_grads_fn kp = rmsnorm_param_grads_pick();
    GS_FOR_CHUNKS((size_t)C, COL_BLOCK, 0, j0, j1, kp(j0, j1, rows, C, x, rstd, dy, dweight));
    rmsnorm_back_rows_fn k = rmsnorm_back_rows_pick();
    GS_FOR_CHUNKS(rows, ROW_CHUNK, 16, r0, r1, k(r0, r1, C, x, weight, rstd, dy, dx));
}

/* ------------------------------------------------------------- activations */

/* Branch-free forms (the backward reads dy unconditionally), so every path
 * vectorises. */
GS_INLINE void relu_fwd_body(size_t i0, size_t i1, const float *x, float *y)
{
    for (size_t i = i0; i < i1; i++) y[i] = x[i] > 0.0f ? x[i] : 0.0f;
}
GS_MULTIVERSION(relu_fwd, (size_t i0, size_t i1, const float *x, float *y), (i0, i1, x, y))

GS_INLINE void relu_bwd_body(size_t i0, size_t i1, const float *x, const float *dy, float *dx)
{
    for (size_t i = i0; i < i1; i++) {
        float g = dy[i];
        dx[i] = x[i] > 0.0f ? g : 0.0f;
    }
}
GS_MULTIVERSION(relu_bwd, (size_t i0, size_t i1, const float *x, const float *dy, float *dx), (i0, i1, x, dy, dx))

#define GELU_K 0.7978845608028654f /* sqrt(2/pi) */

GS_INLINE void gelu_tanh_fwd_body(size_t i0, size_t i1, const float *x, float *y)
{
    for (size_t i = i0; i < i1; i++) {
        float v = x[i];
        y[i] = 0.5f * v * (1.0f + gs_tanh_scalar(GELU_K * (v + 0.044715f * v * v * v)));
    }
}
GS_MULTIVERSION(gelu_tanh_fwd, (size_t i0, size_t i1, const float *x, float *y), (i0, i1, x, y))

GS_INLINE void gelu_tanh_bwd_body(size_t i0, size_t i1, const float *x, const float *dy, float *dx)
{
    for (size_t i = i0; i < i1; i++) {
        float v = x[i];
        float t = gs_tanh_scalar(GELU_K * (v + 0.044715f * v * v * v));
        float dt = GELU_K * (1.0f + 3.0f * 0.044715f * v * v) * (1.0f - t * t);
        dx[i] = dy[i] * (0.5f * (1.0f + t) + 0.5f * v * dt);
    }
}
GS_MULTIVERSION(gelu_tanh_bwd, (size_t i0, size_t i1, const float *x, const float *dy, float *dx),
                (i0, i1, x, dy, dx))

/* GELU(x) = x Phi(x) = 0.5 x erfc(-x / sqrt 2), written through erfc(|x| / sqrt 2)
 * so that the negative side, where 1 + erf cancels, keeps its relative accuracy. */
GS_INLINE float two_phi(float v) /* 2 Phi(v) */
{
    float q = gs_erfc_nonnegative_scalar(fabsf(v) * 0.7071067811865476f);
    return v < 0.0f ? q : 2.0f - q;
}

/* The forward by hand on the vector paths: the compiler's vectorisation of the scalar
 * form keeps every multiply and add apart (ISO C contracts nothing into FMAs), and it
 * was 5% of a 1-thread sentence encode even fused into the product (perf, Xeon model 167). */
static void gelu_erf_fwd_scalar(size_t i0, size_t i1, const float *x, float *y)
{
    for (size_t i = i0; i < i1; i++) y[i] = 0.5f * x[i] * two_phi(x[i]);
}

#ifdef GS_HAVE_AVX2_PATH
GS_TARGET_AVX2 static void gelu_erf_fwd_avx2(size_t i0, size_t i1, const float *x, float *y)
{
    const __m256 sign = _mm256_set1_ps(-0.0f), half = _mm256_set1_ps(0.5f), two = _mm256_set1_ps(2.0f);
    const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    for (size_t i = i0; i < i1; i += 8) {
        /* the tail as a masked vector too, so that every element gets the same rounding
         * wherever it lies (a fused product's tiles split rows differently) */
        __m256i m = _mm256_cmpgt_epi32(_mm256_set1_epi32(i1 - i >= 8 ? 8 : (int)(i1 - i)), lane);
        __m256 v = _mm256_maskload_ps(x + i, m);
        __m256 q = gs_erfc_nonnegative_avx2(_mm256_mul_ps(_mm256_andnot_ps(sign, v), _mm256_set1_ps(0.7071067811865476f)));
        __m256 two_phi_v = _mm256_blendv_ps(_mm256_sub_ps(two, q), q, _mm256_cmp_ps(v, _mm256_setzero_ps(), _CMP_LT_OQ));
        _mm256_maskstore_ps(y + i, m, _mm256_mul_ps(_mm256_mul_ps(half, v), two_phi_v));
    }
}
#endif

#ifdef GS_HAVE_AVX512_PATH
GS_TARGET_AVX512 static void gelu_erf_fwd_avx512(size_t i0, size_t i1, const float *x, float *y)
{
    const __m512 half = _mm512_set1_ps(0.5f), two = _mm512_set1_ps(2.0f);
    for (size_t i = i0; i < i1; i += 16) {
        __mmask16 m = i1 - i >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (i1 - i)) - 1u);
        __m512 v = _mm512_maskz_loadu_ps(m, x + i);
        __m512 q = gs_erfc_nonnegative_avx512(_mm512_mul_ps(_mm512_abs_ps(v), _mm512_set1_ps(0.7071067811865476f)));
        __mmask16 neg = _mm512_cmp_ps_mask(v, _mm512_setzero_ps(), _CMP_LT_OQ);
        __m512 two_phi_v = _mm512_mask_blend_ps(neg, _mm512_sub_ps(two, q), q);
        _mm512_mask_storeu_ps(y + i, m, _mm512_mul_ps(_mm512_mul_ps(half, v), two_phi_v));
    }
}
#endif

typedef void (*gelu_erf_fwd_fn)(size_t i0, size_t i1, const float *x, float *y);
static gelu_erf_fwd_fn gelu_erf_fwd_pick(void)
{
    switch (gs_isa()) {
#ifdef GS_HAVE_AVX512_PATH
    case GS_ISA_AVX512: return gelu_erf_fwd_avx512;
#endif
#ifdef GS_HAVE_AVX2_PATH
    case GS_ISA_AVX2: return gelu_erf_fwd_avx2;
#endif
    default: return gelu_erf_fwd_scalar;
    }
}

GS_INLINE void gelu_erf_bwd_body(size_t i0, size_t i1, const float *x, const float *dy, float *dx)
{
    for (size_t i = i0; i < i1; i++) {
        float v = x[i];
        float pdf = 0.3989422804014327f * gs_exp_nonpositive_scalar(-0.5f * v * v);
        dx[i] = dy[i] * (0.5f * two_phi(v) + v * pdf);
    }
}
GS_MULTIVERSION(gelu_erf_bwd, (size_t i0, size_t i1, const float *x, const float *dy, float *dx),
                (i0, i1, x, dy, dx))

#define ELEMWISE_FWD(pub, kern)                                                                    \
    void pub(size_t n, const float *x, float *y)                                                   \
    {                                                                                              \
        kern##_fn k = kern##_pick();                                                               \
        GS_FOR_CHUNKS(n, ELEM_CHUNK, 32768, i0, i1, k(i0, i1, x, y));                                 \
    }
#define ELEMWISE_BWD(pub, kern)                                                                    \
    void pub(size_t n, const float *x, const float *dy, float *dx)                                 \
    {                                                                                              \
        kern##_fn k = kern##_pick();                                                               \
        GS_FOR_CHUNKS(n, ELEM_CHUNK, 32768, i0, i1, k(i0, i1, x, dy, dx));                            \
    }
ELEMWISE_FWD(gs_relu_forward, relu_fwd)
ELEMWISE_BWD(gs_relu_backward, relu_bwd)
ELEMWISE_FWD(gs_gelu_tanh_forward, gelu_tanh_fwd)
ELEMWISE_BWD(gs_gelu_tanh_backward, gelu_tanh_bwd)
ELEMWISE_FWD(gs_gelu_erf_forward, gelu_erf_fwd)

void gs_gelu_erf_rows(int rows, int cols, float *y, int ldy)
{
    gelu_erf_fwd_fn k = gelu_erf_fwd_pick();
    for (int r = 0; r < rows; r++) k(0, (size_t)cols, y + (size_t)r * ldy, y + (size_t)r * ldy);
}
ELEMWISE_BWD(gs_gelu_erf_backward, gelu_erf_bwd)
