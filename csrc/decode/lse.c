/* log-sum-exp over a row (see lse.h). */
#include "lse.h"

#include <math.h>

static double lse_generic(const float *x, int n)
{
    float m = x[0];
    int nan = isnan(x[0]);
    for (int i = 1; i < n; i++) {
        m = x[i] > m ? x[i] : m;
        nan |= isnan(x[i]);
    }
    if (nan) return NAN;
    if (!isfinite(m)) return m;
    double s = 0.0;
    for (int i = 0; i < n; i++) s += exp((double)x[i] - (double)m);
    return (double)m + log(s);
}

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>

/* exp(x) for 8 lanes x <= 0: x = n ln2 + r, |r| <= ln2/2, exp(r) by a degree-6
 * polynomial (Cephes expf coefficients, ~1 ulp), times 2^n built in the exponent
 * bits. Inputs below -87.3 are clamped (their exp, < 1e-38, is negligible next to
 * the maximum's exp(0) = 1 in the sum). */
__attribute__((target("avx2,fma"))) static inline __m256 exp_nonpositive_avx2(__m256 x)
{
    x = _mm256_max_ps(x, _mm256_set1_ps(-87.3f));
    __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                               _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
    __m256 p = _mm256_set1_ps(1.9875691500e-4f);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
    p = _mm256_fmadd_ps(_mm256_mul_ps(p, r), r, _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
    __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    return _mm256_mul_ps(p, _mm256_castsi256_ps(e));
}

__attribute__((target("avx2,fma"))) static double lse_avx2(const float *x, int n)
{
    int i = 0;
    __m256 vmax = _mm256_set1_ps(-INFINITY), vnan = _mm256_setzero_ps();
    for (; i + 8 <= n; i += 8) {
        __m256 v = _mm256_loadu_ps(x + i);
        vmax = _mm256_max_ps(vmax, v);
        vnan = _mm256_or_ps(vnan, _mm256_cmp_ps(v, v, _CMP_UNORD_Q));
    }
    float lanes[8];
    _mm256_storeu_ps(lanes, vmax);
    float m = lanes[0];
    for (int j = 1; j < 8; j++) m = lanes[j] > m ? lanes[j] : m;
    int nan = _mm256_movemask_ps(vnan) != 0;
    for (int j = i; j < n; j++) {
        m = x[j] > m ? x[j] : m;
        nan |= isnan(x[j]);
    }
    if (nan) return NAN;
    if (!isfinite(m)) return m;
    /* sum of exp(x - m) in double lanes: each term is in (0, 1] and the float
     * terms carry ~1e-7 relative error, so the sum is good to ~1e-7. */
    __m256 vm = _mm256_set1_ps(m);
    __m256d acc_lo = _mm256_setzero_pd(), acc_hi = _mm256_setzero_pd();
    for (i = 0; i + 8 <= n; i += 8) {
        __m256 e = exp_nonpositive_avx2(_mm256_sub_ps(_mm256_loadu_ps(x + i), vm));
        acc_lo = _mm256_add_pd(acc_lo, _mm256_cvtps_pd(_mm256_castps256_ps128(e)));
        acc_hi = _mm256_add_pd(acc_hi, _mm256_cvtps_pd(_mm256_extractf128_ps(e, 1)));
    }
    double parts[4];
    _mm256_storeu_pd(parts, _mm256_add_pd(acc_lo, acc_hi));
    double s = (parts[0] + parts[1]) + (parts[2] + parts[3]);
    for (; i < n; i++) s += exp((double)x[i] - (double)m);
    return (double)m + log(s);
}
#endif

typedef double (*lse_fn)(const float *, int);
static lse_fn chosen = NULL;
static const char *chosen_name = "generic";

static lse_fn select_lse(void)
{
    if (chosen) return chosen;
    lse_fn f = lse_generic;
    const char *name = "generic";
#if defined(__x86_64__) && defined(__GNUC__)
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
        f = lse_avx2;
        name = "avx2-fma";
    }
#endif
    chosen_name = name;
    chosen = f; /* idempotent race: every thread stores the same value */
    return f;
}

double gs_log_sum_exp(const float *x, int n) { return select_lse()(x, n); }

const char *gs_log_sum_exp_kernel_name(void)
{
    select_lse();
    return chosen_name;
}
