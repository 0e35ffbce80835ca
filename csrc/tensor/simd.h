/* Vector math shared by the AVX2 kernels (log-sum-exp, GELU). Every function is
 * compiled with a target attribute, so callers must check gs_cpu_has_avx2_fma()
 * first and keep a portable path: one build runs on any x86-64. */
#ifndef GS_SIMD_H
#define GS_SIMD_H

#if defined(__x86_64__) && defined(__GNUC__)
#define GS_HAVE_AVX2_PATH 1
#include <immintrin.h>

static inline int gs_cpu_has_avx2_fma(void)
{
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
}

/* exp(x) for 8 lanes x <= 0: x = n ln2 + r, |r| <= ln2/2, exp(r) by a degree-6
 * polynomial (Cephes expf coefficients, ~1 ulp), times 2^n built in the exponent
 * bits. Inputs below -87.3 are clamped (their exp is < 1e-38). */
__attribute__((target("avx2,fma"))) static inline __m256 gs_exp_nonpositive_avx2(__m256 x)
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

/* erfc(z) for 8 lanes z >= 0, Abramowitz & Stegun 7.1.26: t = 1 / (1 + p z),
 * erfc(z) = t (a1 + t (a2 + ... a5)) exp(-z^2), absolute error <= 1.5e-7. */
__attribute__((target("avx2,fma"))) static inline __m256 gs_erfc_nonnegative_avx2(__m256 z)
{
    __m256 t = _mm256_div_ps(_mm256_set1_ps(1.0f),
                             _mm256_fmadd_ps(_mm256_set1_ps(0.3275911f), z, _mm256_set1_ps(1.0f)));
    __m256 q = _mm256_set1_ps(1.061405429f);
    q = _mm256_fmadd_ps(q, t, _mm256_set1_ps(-1.453152027f));
    q = _mm256_fmadd_ps(q, t, _mm256_set1_ps(1.421413741f));
    q = _mm256_fmadd_ps(q, t, _mm256_set1_ps(-0.284496736f));
    q = _mm256_fmadd_ps(q, t, _mm256_set1_ps(0.254829592f));
    q = _mm256_mul_ps(q, t);
    __m256 minus_z2 = _mm256_mul_ps(_mm256_sub_ps(_mm256_setzero_ps(), z), z);
    return _mm256_mul_ps(q, gs_exp_nonpositive_avx2(minus_z2));
}
#else
static inline int gs_cpu_has_avx2_fma(void) { return 0; }
#endif

#endif
