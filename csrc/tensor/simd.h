/* Vector math shared by the kernels (exponentials, log-sum-exp, GELU), in a
 * portable scalar version and AVX2 / AVX-512 versions. The vector functions are
 * compiled with target attributes, so callers check gs_isa() (cpu.h) first and
 * keep the portable path: one build runs on any x86-64. No libm calls: the
 * scalar exponential below is the same polynomial as the vector ones, so every
 * path gives nearly the same bits, and no hot loop calls into libm (on some
 * Intel CPUs each such call paid an SSE/AVX state-transition stall). */
#ifndef GS_SIMD_H
#define GS_SIMD_H

#include <math.h>
#include <stdint.h>
#include <string.h>

#include "cpu.h"

/* exp(x) for x <= 0 (NaN propagates): the polynomial of the vector versions,
 * in plain C. Inputs below -87.3 are clamped (their exp is < 1e-38). */
static inline float gs_exp_nonpositive_scalar(float x)
{
    x = x < -87.3f ? -87.3f : x;
    /* round to nearest by the 1.5 * 2^23 trick: no libm call, no SSE4.1 needed */
    float n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
    n = n == n ? n : 0.0f; /* NaN in: p below is NaN; keep the int conversion defined */
    float r = x - n * 0.693359375f;
    r = r - n * -2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + (r + 1.0f);
    int32_t bits = ((int32_t)n + 127) * (1 << 23);
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    return p * scale;
}

/* erfc(z) for z >= 0, Abramowitz & Stegun 7.1.26 (absolute error <= 1.5e-7), as
 * the vector versions below. */
static inline float gs_erfc_nonnegative_scalar(float z)
{
    float t = 1.0f / (1.0f + 0.3275911f * z);
    float q = ((((1.061405429f * t - 1.453152027f) * t + 1.421413741f) * t - 0.284496736f) * t +
               0.254829592f) * t;
    return q * gs_exp_nonpositive_scalar(-z * z);
}

/* tanh(u) = sign(u) (1 - e) / (1 + e), e = exp(-2|u|): absolute error ~1e-7. */
static inline float gs_tanh_scalar(float u)
{
    float e = gs_exp_nonpositive_scalar(-2.0f * fabsf(u));
    float t = (1.0f - e) / (1.0f + e);
    return u < 0.0f ? -t : t;
}

#if defined(__x86_64__) && defined(__GNUC__)
#define GS_HAVE_AVX2_PATH 1
#define GS_HAVE_AVX512_PATH 1
#include <immintrin.h>

#define GS_TARGET_AVX2 __attribute__((target("avx2,fma")))
#define GS_TARGET_AVX512 \
    __attribute__((target("avx512f,avx512dq,avx512bw,avx512vl,avx2,fma,prefer-vector-width=512")))
/* AVX-512 plus the bf16 conversions and dot products (gs_precision() bf16 only). */
#define GS_TARGET_AVX512_BF16                                                                       \
    __attribute__((target("avx512f,avx512dq,avx512bw,avx512vl,avx512bf16,avx2,fma,"                \
                          "prefer-vector-width=512")))

/* exp(x) for 8 lanes x <= 0: x = n ln2 + r, |r| <= ln2/2, exp(r) by a degree-6
 * polynomial (Cephes expf coefficients, ~1 ulp), times 2^n built in the exponent
 * bits. Inputs below -87.3 are clamped (their exp is < 1e-38). */
GS_TARGET_AVX2 static inline __m256 gs_exp_nonpositive_avx2(__m256 x)
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
GS_TARGET_AVX2 static inline __m256 gs_erfc_nonnegative_avx2(__m256 z)
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

/* The same two functions for 16 lanes. */
GS_TARGET_AVX512 static inline __m512 gs_exp_nonpositive_avx512(__m512 x)
{
    x = _mm512_max_ps(x, _mm512_set1_ps(-87.3f));
    __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
    __m512 p = _mm512_set1_ps(1.9875691500e-4f);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
    p = _mm512_fmadd_ps(_mm512_mul_ps(p, r), r, _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
    __m512i e = _mm512_slli_epi32(_mm512_add_epi32(_mm512_cvtps_epi32(n), _mm512_set1_epi32(127)), 23);
    return _mm512_mul_ps(p, _mm512_castsi512_ps(e));
}

GS_TARGET_AVX512 static inline __m512 gs_erfc_nonnegative_avx512(__m512 z)
{
    __m512 t = _mm512_div_ps(_mm512_set1_ps(1.0f),
                             _mm512_fmadd_ps(_mm512_set1_ps(0.3275911f), z, _mm512_set1_ps(1.0f)));
    __m512 q = _mm512_set1_ps(1.061405429f);
    q = _mm512_fmadd_ps(q, t, _mm512_set1_ps(-1.453152027f));
    q = _mm512_fmadd_ps(q, t, _mm512_set1_ps(1.421413741f));
    q = _mm512_fmadd_ps(q, t, _mm512_set1_ps(-0.284496736f));
    q = _mm512_fmadd_ps(q, t, _mm512_set1_ps(0.254829592f));
    q = _mm512_mul_ps(q, t);
    __m512 minus_z2 = _mm512_mul_ps(_mm512_sub_ps(_mm512_setzero_ps(), z), z);
    return _mm512_mul_ps(q, gs_exp_nonpositive_avx512(minus_z2));
}
#endif

/* Three copies of a serial kernel written once as an always-inline function
 * `name##_body`: portable, AVX2 and AVX-512, each vectorised by the compiler for
 * its target, and `name##_pick()`, the copy for the path gs_isa() names. */
#ifdef GS_HAVE_AVX512_PATH
#define GS_MULTIVERSION(name, params, args)                                                        \
    static void name##_scalar params { name##_body args; }                                         \
    GS_TARGET_AVX2 static void name##_avx2 params { name##_body args; }                            \
    GS_TARGET_AVX512 static void name##_avx512 params { name##_body args; }                        \
    typedef void(*name##_fn) params;                                                               \
    static name##_fn name##_pick(void)                                                             \
    {                                                                                              \
        int isa_ = gs_isa();                                                                       \
        return isa_ == GS_ISA_AVX512 ? name##_avx512 : isa_ == GS_ISA_AVX2 ? name##_avx2 : name##_scalar; \
    }
#else
#define GS_MULTIVERSION(name, params, args)                                                        \
    static void name##_scalar params { name##_body args; }                                         \
    typedef void(*name##_fn) params;                                                               \
    static name##_fn name##_pick(void) { return name##_scalar; }
#endif
#define GS_INLINE static inline __attribute__((always_inline))

/* for (c = 0; c < n; c += chunk) call with [lo, hi) = [c, min(n, c + chunk)); the
 * chunks are shared statically among threads when n > serial_below. The split
 * depends on n and chunk only, so results do not depend on the thread count. */
#define GS_FOR_CHUNKS(n, chunk, serial_below, lo, hi, call)                                            \
    do {                                                                                               \
        const size_t n_ = (n), chunk_ = (chunk), nchunks_ = (n_ + chunk_ - 1) / chunk_;                \
        const int parallel_ = n_ > (size_t)(serial_below) && nchunks_ > 1;                            \
        _Pragma("omp parallel for schedule(static) num_threads(gs_num_threads()) if(parallel_)")      \
        for (size_t c_ = 0; c_ < nchunks_; c_++) {                                                     \
            size_t lo = c_ * chunk_, hi = lo + chunk_ < n_ ? lo + chunk_ : n_;                         \
            call;                                                                                      \
        }                                                                                              \
    } while (0)

#endif
