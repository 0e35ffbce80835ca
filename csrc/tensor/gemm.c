/* Blocked SGEMM in the BLIS style: op(B) is packed into KC x NR column panels,
 * op(A) into MR x KC row panels, and a register-blocked MR x NR micro-kernel
 * multiplies one pair of panels. Packing absorbs every transpose form, so the
 * micro-kernel sees a single layout; the AVX-512 kernel also reads a
 * non-transposed A in place (no A packing). Three micro-kernels: portable C (6 x 16),
 * AVX2+FMA (6 x 16) and AVX-512 (12 x 32); the vector ones are compiled with
 * target attributes and chosen per call by gs_isa(), so one build runs on any
 * x86-64. The panel shapes follow the kernel. In bf16 precision (opt-in,
 * gs_precision()) two more kernels of the same blocking take over: VDPBF16PS in
 * the 12 x 32 tile, and 32 x 32 blocks of AMX tiles (sgemm_bf16, sgemm_amx). */
#include "gemm.h"

#include <omp.h>
#include <stdint.h>
#include <string.h>

#include "../common.h"
#include "ops.h"
#include "scratch.h"
#include "simd.h"

#define MC 120  /* rows of A packed per block: MC x KC floats stay in L2 (a multiple of every MR) */
#define KC 256  /* depth of one packed slab: a B panel (16 or 32 KB) stays in L1 */
#define NC 3072 /* columns of B packed per slab: KC x NC floats stay in L3 */

/* Depth of the slabs. Every slab after the first re-reads C, which has left the
 * caches by then on large products, so a depth of up to 1.5 KC (384: BERT-small
 * and MiniLM widths) is done in one slab; deeper products use KC. Depends on K
 * only: results do not depend on M or threads. */
static int slab_depth(int K)
{
    return K <= KC + KC / 2 ? K : KC;
}

typedef void (*micro_kernel_fn)(int kc, const float *a, const float *b, float *c, int ldc,
                                float alpha, float beta, const float *bias, int mr, int nr);

/* The same product reading A unpacked: a = &A[row][p0], row stride lda. */
typedef void (*direct_kernel_fn)(int kc, const float *a, int lda, const float *b, float *c, int ldc,
                                 float alpha, float beta, const float *bias, int mr, int nr);

/* A micro-kernel and the shape of the tile it computes: `rows` rows of A (packed
 * as (kc, rows) panels) times `cols` columns of B (packed as (kc, cols) panels). */
typedef struct {
    micro_kernel_fn fn;
    direct_kernel_fn direct; /* NULL: A is always packed */
    int rows, cols;          /* the tile: rows of A (MR), columns of B (NR) */
    const char *name;
} gemm_kernel;

#define MR 6  /* the portable and AVX2 kernels' tile */
#define NR 16

/* Writes alpha * acc + beta * C for the mr x nr corner that lies inside C;
 * acc is (MR, NR) of the 6 x 16 kernels. */
static void store_tile(const float *acc, float *c, int ldc, float alpha, float beta, const float *bias,
                       int mr, int nr)
{
    for (int i = 0; i < mr; i++) {
        float *ci = c + (size_t)i * ldc;
        const float *ai = acc + i * NR;
        if (beta == 0.0f)
            for (int j = 0; j < nr; j++) ci[j] = alpha * ai[j];
        else
            for (int j = 0; j < nr; j++) ci[j] = alpha * ai[j] + beta * ci[j];
        if (bias)
            for (int j = 0; j < nr; j++) ci[j] += bias[j];
    }
}

// a: packed (kc, MR), b: packed (kc, NR) -> c tile (mr, nr)
static void micro_kernel_generic(int kc, const float *restrict a, const float *restrict b,
                                 float *c, int ldc, float alpha, float beta, const float *bias, int mr,
                                 int nr)
{
    float acc[MR * NR];
    memset(acc, 0, sizeof acc);
    for (int p = 0; p < kc; p++) {
        const float *bp = b + p * NR;
        for (int i = 0; i < MR; i++) {
            float ai = a[p * MR + i];
            for (int j = 0; j < NR; j++) acc[i * NR + j] += ai * bp[j];
        }
    }
    store_tile(acc, c, ldc, alpha, beta, bias, mr, nr);
}

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>

GS_TARGET_AVX2 static void
micro_kernel_avx2(int kc, const float *restrict a, const float *restrict b, float *c, int ldc,
                  float alpha, float beta, const float *bias, int mr, int nr)
{
    __m256 c00 = _mm256_setzero_ps(), c01 = _mm256_setzero_ps();
    __m256 c10 = _mm256_setzero_ps(), c11 = _mm256_setzero_ps();
    __m256 c20 = _mm256_setzero_ps(), c21 = _mm256_setzero_ps();
    __m256 c30 = _mm256_setzero_ps(), c31 = _mm256_setzero_ps();
    __m256 c40 = _mm256_setzero_ps(), c41 = _mm256_setzero_ps();
    __m256 c50 = _mm256_setzero_ps(), c51 = _mm256_setzero_ps();
#pragma GCC unroll 4
    for (int p = 0; p < kc; p++) {
        __m256 b0 = _mm256_load_ps(b), b1 = _mm256_load_ps(b + 8);
        __m256 ai;
        ai = _mm256_broadcast_ss(a + 0);
        c00 = _mm256_fmadd_ps(ai, b0, c00); c01 = _mm256_fmadd_ps(ai, b1, c01);
        ai = _mm256_broadcast_ss(a + 1);
        c10 = _mm256_fmadd_ps(ai, b0, c10); c11 = _mm256_fmadd_ps(ai, b1, c11);
        ai = _mm256_broadcast_ss(a + 2);
        c20 = _mm256_fmadd_ps(ai, b0, c20); c21 = _mm256_fmadd_ps(ai, b1, c21);
        ai = _mm256_broadcast_ss(a + 3);
        c30 = _mm256_fmadd_ps(ai, b0, c30); c31 = _mm256_fmadd_ps(ai, b1, c31);
        ai = _mm256_broadcast_ss(a + 4);
        c40 = _mm256_fmadd_ps(ai, b0, c40); c41 = _mm256_fmadd_ps(ai, b1, c41);
        ai = _mm256_broadcast_ss(a + 5);
        c50 = _mm256_fmadd_ps(ai, b0, c50); c51 = _mm256_fmadd_ps(ai, b1, c51);
        a += MR;
        b += NR;
    }
    __m256 rows[2 * MR] = {c00, c01, c10, c11, c20, c21, c30, c31, c40, c41, c50, c51};
    if (mr == MR && nr == NR) {
        __m256 va = _mm256_set1_ps(alpha), vb = _mm256_set1_ps(beta);
        for (int i = 0; i < MR; i++) {
            float *ci = c + (size_t)i * ldc;
            __m256 r0 = _mm256_mul_ps(va, rows[2 * i]), r1 = _mm256_mul_ps(va, rows[2 * i + 1]);
            if (bias) {
                r0 = _mm256_add_ps(r0, _mm256_loadu_ps(bias));
                r1 = _mm256_add_ps(r1, _mm256_loadu_ps(bias + 8));
            }
            if (beta != 0.0f) {
                r0 = _mm256_fmadd_ps(vb, _mm256_loadu_ps(ci), r0);
                r1 = _mm256_fmadd_ps(vb, _mm256_loadu_ps(ci + 8), r1);
            }
            _mm256_storeu_ps(ci, r0);
            _mm256_storeu_ps(ci + 8, r1);
        }
    } else {
        float acc[MR * NR] __attribute__((aligned(32)));
        for (int i = 0; i < 2 * MR; i++) _mm256_store_ps(acc + 8 * i, rows[i]);
        store_tile(acc, c, ldc, alpha, beta, bias, mr, nr);
    }
}
#endif


#ifdef GS_HAVE_AVX512_PATH
static inline __mmask16 first_lanes(int n) /* the lowest min(max(n, 0), 16) bits */
{
    return n >= 16 ? (__mmask16)0xFFFF : n <= 0 ? 0 : (__mmask16)((1u << n) - 1u);
}

/* Writes alpha * acc + beta * C (+ bias) for the mr x nr corner of a 12 x 32
 * tile that lies inside C; rows[2 i], rows[2 i + 1] are row i's accumulators. */
GS_TARGET_AVX512 static inline __attribute__((always_inline)) void
store_rows_avx512(const __m512 *rows, float *c, int ldc, float alpha, float beta, const float *bias, int mr,
                  int nr)
{
    const __mmask16 m0 = first_lanes(nr), m1 = first_lanes(nr - 16);
    const __m512 va = _mm512_set1_ps(alpha), vb = _mm512_set1_ps(beta);
    __m512 bias0 = _mm512_setzero_ps(), bias1 = _mm512_setzero_ps();
    if (bias) bias0 = _mm512_maskz_loadu_ps(m0, bias), bias1 = _mm512_maskz_loadu_ps(m1, bias + 16);
    for (int i = 0; i < mr; i++) {
        float *ci = c + (size_t)i * ldc;
        __m512 r0 = _mm512_fmadd_ps(va, rows[2 * i], bias0), r1 = _mm512_fmadd_ps(va, rows[2 * i + 1], bias1);
        if (beta != 0.0f) {
            r0 = _mm512_fmadd_ps(vb, _mm512_maskz_loadu_ps(m0, ci), r0);
            r1 = _mm512_fmadd_ps(vb, _mm512_maskz_loadu_ps(m1, ci + 16), r1);
        }
        _mm512_mask_storeu_ps(ci, m0, r0);
        _mm512_mask_storeu_ps(ci + 16, m1, r1);
    }
}

/* 12 x 32: 24 accumulators + 2 B vectors + the broadcast A value in 32 zmm
 * registers; each A element feeds two FMAs. Edges are written with masks.
 * A is read as a[i * a_rs + p * a_ks]: a packed panel (a_rs 1, a_ks 12) or, for
 * a non-transposed A, the matrix itself (a_rs lda, a_ks 1), which skips packing
 * A: the rows stream from L1/L2 and the broadcasts need no contiguous panel.
 * B is read as b[p * b_ks + j]: a packed panel (b_ks 32, aligned) or, with
 * b_unpacked, a non-transposed B itself (b_ks ldb), its columns past nr masked
 * off (a masked load does not fault). Every path runs the same FMAs in the same
 * order, so where A and B are read from never changes a bit of C. */
#define K512_ROW(i)                                                                                \
    do {                                                                                           \
        __m512 ai = _mm512_set1_ps(a[(i) * a_rs]);                                                 \
        c##i##a = _mm512_fmadd_ps(ai, b0, c##i##a);                                                \
        c##i##b = _mm512_fmadd_ps(ai, b1, c##i##b);                                                \
    } while (0)

GS_TARGET_AVX512 static inline __attribute__((always_inline)) void
tile_avx512(int kc, const float *restrict a, size_t a_rs, size_t a_ks, const float *restrict b, size_t b_ks,
            const int b_unpacked, float *c, int ldc, float alpha, float beta, const float *bias, int mr, int nr)
{
    const __mmask16 bm0 = first_lanes(nr), bm1 = first_lanes(nr - 16);
    __m512 c0a = _mm512_setzero_ps(), c0b = _mm512_setzero_ps(), c1a = _mm512_setzero_ps(),
           c1b = _mm512_setzero_ps(), c2a = _mm512_setzero_ps(), c2b = _mm512_setzero_ps(),
           c3a = _mm512_setzero_ps(), c3b = _mm512_setzero_ps(), c4a = _mm512_setzero_ps(),
           c4b = _mm512_setzero_ps(), c5a = _mm512_setzero_ps(), c5b = _mm512_setzero_ps(),
           c6a = _mm512_setzero_ps(), c6b = _mm512_setzero_ps(), c7a = _mm512_setzero_ps(),
           c7b = _mm512_setzero_ps(), c8a = _mm512_setzero_ps(), c8b = _mm512_setzero_ps(),
           c9a = _mm512_setzero_ps(), c9b = _mm512_setzero_ps(), c10a = _mm512_setzero_ps(),
           c10b = _mm512_setzero_ps(), c11a = _mm512_setzero_ps(), c11b = _mm512_setzero_ps();
#pragma GCC unroll 2
    for (int p = 0; p < kc; p++) {
        __m512 b0, b1;
        if (b_unpacked)
            b0 = _mm512_maskz_loadu_ps(bm0, b), b1 = _mm512_maskz_loadu_ps(bm1, b + 16);
        else
            b0 = _mm512_load_ps(b), b1 = _mm512_load_ps(b + 16);
        K512_ROW(0); K512_ROW(1); K512_ROW(2); K512_ROW(3); K512_ROW(4); K512_ROW(5);
        K512_ROW(6); K512_ROW(7); K512_ROW(8); K512_ROW(9); K512_ROW(10); K512_ROW(11);
        a += a_ks;
        b += b_ks;
    }
    const __m512 rows[24] = {c0a, c0b, c1a, c1b, c2a, c2b, c3a, c3b, c4a, c4b, c5a, c5b,
                             c6a, c6b, c7a, c7b, c8a, c8b, c9a, c9b, c10a, c10b, c11a, c11b};
    store_rows_avx512(rows, c, ldc, alpha, beta, bias, mr, nr);
}
#undef K512_ROW

// a: packed (kc, 12), b: packed (kc, 32) -> c tile (mr, nr)
GS_TARGET_AVX512 static void micro_kernel_avx512(int kc, const float *restrict a, const float *restrict b,
                                                 float *c, int ldc, float alpha, float beta,
                                                 const float *bias, int mr, int nr)
{
    tile_avx512(kc, a, 1, 12, b, 32, 0, c, ldc, alpha, beta, bias, mr, nr);
}

/* A tile from rows of A itself (mr, kc), row stride lda, and B read as tile_avx512
 * does (b_ks, b_unpacked). A partial row panel (mr < 12) is copied zero-padded
 * first: no read past A. */
GS_TARGET_AVX512 static inline __attribute__((always_inline)) void
a_rows_tile_avx512(int kc, const float *restrict a, int lda, const float *restrict b, size_t b_ks,
                   const int b_unpacked, float *c, int ldc, float alpha, float beta, const float *bias, int mr,
                   int nr)
{
    if (mr == 12) {
        tile_avx512(kc, a, (size_t)lda, 1, b, b_ks, b_unpacked, c, ldc, alpha, beta, bias, mr, nr);
        return;
    }
    float panel[12 * 384] __attribute__((aligned(64))); /* kc <= slab depth <= 384 */
    for (int p = 0; p < kc; p++)
        for (int i = 0; i < 12; i++) panel[p * 12 + i] = i < mr ? a[(size_t)i * lda + p] : 0.0f;
    tile_avx512(kc, panel, 1, 12, b, b_ks, b_unpacked, c, ldc, alpha, beta, bias, mr, nr);
}

// a: rows of A itself (mr, kc) with row stride lda, b: packed (kc, 32) -> c tile (mr, nr).
GS_TARGET_AVX512 static void direct_kernel_avx512(int kc, const float *restrict a, int lda,
                                                  const float *restrict b, float *c, int ldc, float alpha,
                                                  float beta, const float *bias, int mr, int nr)
{
    a_rows_tile_avx512(kc, a, lda, b, 32, 0, c, ldc, alpha, beta, bias, mr, nr);
}

/* C = alpha A B + beta C (+ bias) for a non-transposed A and B, nothing packed:
 * each 12 x 32 tile reads A's rows and B's rows where they lie (the B panel, K x 32,
 * stays in L1 while every row block passes under it). One slab (K <= the slab
 * depth), one thread: see sgemm for when. */
GS_TARGET_AVX512 static void unpacked_sgemm(int M, int N, int K, float alpha, const float *A, int lda,
                                            const float *B, int ldb, float beta, const float *bias, float *C,
                                            int ldc)
{
    for (int j = 0; j < N; j += 32)
        for (int i = 0; i < M; i += 12)
            a_rows_tile_avx512(K, A + (size_t)i * lda, lda, B + j, (size_t)ldb, 1, C + (size_t)i * ldc + j, ldc,
                               alpha, beta, bias ? bias + j : NULL, M - i < 12 ? M - i : 12,
                               N - j < 32 ? N - j : 32);
}

/* bf16 products (gs_precision() == GS_PRECISION_BF16, AVX512-BF16 CPUs only).
 * The same 12 x 32 tile and blocking as the fp32 kernel, but A and B are rounded
 * to bfloat16 (round to nearest even, by vcvtne2ps2bf16) while they are packed,
 * and VDPBF16PS adds, per fp32 accumulator lane, the products of one *pair* of
 * depth steps: acc[j] += a[2q] b[2q][j] + a[2q + 1] b[2q + 1][j]. So the packed
 * layouts hold depth pairs: a uint32 is (bf16 of step 2q, bf16 of step 2q + 1),
 * low half first; an odd depth is padded with a zero step. Accumulation, alpha,
 * beta and bias stay fp32.
 *   B panel: (kq, 32) pairs, kq = ceil(kc / 2), element (q, j) = B pair of column j.
 *   A: rows of (kq) pairs, row stride kq (non-transposed A: a plain conversion),
 *      or (kq, 12) panels (transposed A); the kernel takes the strides. */
#define KBF_ROW(i)                                                                                 \
    do {                                                                                           \
        __m512bh ai = (__m512bh)_mm512_set1_epi32((int)a[(i) * a_rs]);                             \
        c##i##a = _mm512_dpbf16_ps(c##i##a, ai, b0);                                               \
        c##i##b = _mm512_dpbf16_ps(c##i##b, ai, b1);                                               \
    } while (0)

GS_TARGET_AVX512_BF16 static inline __attribute__((always_inline)) void
tile_bf16(int kq, const uint32_t *restrict a, size_t a_rs, size_t a_ks, const uint32_t *restrict b, float *c,
          int ldc, float alpha, float beta, const float *bias, int mr, int nr)
{
    __m512 c0a = _mm512_setzero_ps(), c0b = _mm512_setzero_ps(), c1a = _mm512_setzero_ps(),
           c1b = _mm512_setzero_ps(), c2a = _mm512_setzero_ps(), c2b = _mm512_setzero_ps(),
           c3a = _mm512_setzero_ps(), c3b = _mm512_setzero_ps(), c4a = _mm512_setzero_ps(),
           c4b = _mm512_setzero_ps(), c5a = _mm512_setzero_ps(), c5b = _mm512_setzero_ps(),
           c6a = _mm512_setzero_ps(), c6b = _mm512_setzero_ps(), c7a = _mm512_setzero_ps(),
           c7b = _mm512_setzero_ps(), c8a = _mm512_setzero_ps(), c8b = _mm512_setzero_ps(),
           c9a = _mm512_setzero_ps(), c9b = _mm512_setzero_ps(), c10a = _mm512_setzero_ps(),
           c10b = _mm512_setzero_ps(), c11a = _mm512_setzero_ps(), c11b = _mm512_setzero_ps();
#pragma GCC unroll 2
    for (int q = 0; q < kq; q++) {
        __m512bh b0 = (__m512bh)_mm512_load_si512(b), b1 = (__m512bh)_mm512_load_si512(b + 16);
        KBF_ROW(0); KBF_ROW(1); KBF_ROW(2); KBF_ROW(3); KBF_ROW(4); KBF_ROW(5);
        KBF_ROW(6); KBF_ROW(7); KBF_ROW(8); KBF_ROW(9); KBF_ROW(10); KBF_ROW(11);
        a += a_ks;
        b += 32;
    }
    const __m512 rows[24] = {c0a, c0b, c1a, c1b, c2a, c2b, c3a, c3b, c4a, c4b, c5a, c5b,
                             c6a, c6b, c7a, c7b, c8a, c8b, c9a, c9b, c10a, c10b, c11a, c11b};
    store_rows_avx512(rows, c, ldc, alpha, beta, bias, mr, nr);
}
#undef KBF_ROW

// a: 12 rows of pairs, row stride a_rs (non-transposed A converted) -> c tile (mr, nr)
GS_TARGET_AVX512_BF16 static void kernel_bf16_rows(int kq, const uint32_t *a, size_t a_rs, const uint32_t *b,
                                                   float *c, int ldc, float alpha, float beta,
                                                   const float *bias, int mr, int nr)
{
    tile_bf16(kq, a, a_rs, 1, b, c, ldc, alpha, beta, bias, mr, nr);
}

// a: a (kq, 12) panel of pairs (transposed A packed) -> c tile (mr, nr)
GS_TARGET_AVX512_BF16 static void kernel_bf16_panel(int kq, const uint32_t *a, const uint32_t *b, float *c,
                                                    int ldc, float alpha, float beta, const float *bias,
                                                    int mr, int nr)
{
    tile_bf16(kq, a, 1, 12, b, c, ldc, alpha, beta, bias, mr, nr);
}

/* Rounds x[0 .. n) (n <= 32) to bf16, the pairs (x[2t], x[2t + 1]) as uint32
 * lanes t = 0..15 (lanes past the data are zero): the layout of a row whose
 * depth runs along memory. */
GS_TARGET_AVX512_BF16 static inline __attribute__((always_inline)) __m512i pairs_along(const float *x, int n)
{
    __m512 lo = _mm512_maskz_loadu_ps(first_lanes(n), x), hi = _mm512_maskz_loadu_ps(first_lanes(n - 16), x + 16);
    return (__m512i)_mm512_cvtne2ps_pbh(hi, lo); /* words 0..15 from lo, 16..31 from hi: x in order */
}

/* Rounds x0[0 .. n) and x1[0 .. n) (n <= 16; x1 NULL: zeros) to bf16 and pairs
 * them lane by lane, (x0[t], x1[t]) as uint32 lane t: two depth steps that lie
 * one row apart in memory. */
GS_TARGET_AVX512_BF16 static inline __attribute__((always_inline)) __m512i
pairs_across(const float *x0, const float *x1, int n)
{
    static const uint16_t interleave[32] = {0, 16, 1, 17, 2,  18, 3,  19, 4,  20, 5,  21, 6,  22, 7,  23,
                                            8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31};
    const __mmask16 m = first_lanes(n);
    __m512 a = _mm512_maskz_loadu_ps(m, x0), b = x1 ? _mm512_maskz_loadu_ps(m, x1) : _mm512_setzero_ps();
    __m512i v = (__m512i)_mm512_cvtne2ps_pbh(b, a); /* words 0..15: x0, 16..31: x1 */
    return _mm512_permutexvar_epi16(_mm512_loadu_si512(interleave), v);
}

/* r[i][j] -> r[j][i] for a 16 x 16 block of 32-bit lanes (pairs): how the
 * packings turn pairs that lie along memory into pairs down a panel, 64 shuffles
 * per 256 pairs instead of 256 scalar stores. */
GS_TARGET_AVX512_BF16 static inline __attribute__((always_inline)) void transpose16(__m512i r[16])
{
    __m512i t[16];
    for (int i = 0; i < 8; i++) {
        t[2 * i] = _mm512_unpacklo_epi32(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_epi32(r[2 * i], r[2 * i + 1]);
    }
    for (int i = 0; i < 4; i++) {
        r[4 * i] = _mm512_unpacklo_epi64(t[4 * i], t[4 * i + 2]);
        r[4 * i + 1] = _mm512_unpackhi_epi64(t[4 * i], t[4 * i + 2]);
        r[4 * i + 2] = _mm512_unpacklo_epi64(t[4 * i + 1], t[4 * i + 3]);
        r[4 * i + 3] = _mm512_unpackhi_epi64(t[4 * i + 1], t[4 * i + 3]);
    }
    for (int i = 0; i < 2; i++)
        for (int k = 0; k < 4; k++) {
            t[8 * i + k] = _mm512_shuffle_i32x4(r[8 * i + k], r[8 * i + 4 + k], 0x88);
            t[8 * i + 4 + k] = _mm512_shuffle_i32x4(r[8 * i + k], r[8 * i + 4 + k], 0xDD);
        }
    for (int k = 0; k < 8; k++) {
        r[k] = _mm512_shuffle_i32x4(t[k], t[8 + k], 0x88);
        r[k + 8] = _mm512_shuffle_i32x4(t[k], t[8 + k], 0xDD);
    }
}

/* op(A)[i0 : i0 + mc, p0 : p0 + kc] in bf16 pairs at dst, rows padded with zeros
 * to a multiple of 12: (rows, kq) row-major when A is not transposed, (kq, 12)
 * panels when it is. */
GS_TARGET_AVX512_BF16 static void pack_a_bf16(int trans_a, const float *A, int lda, int i0, int mc, int p0,
                                              int kc, uint32_t *dst)
{
    const int kq = (kc + 1) / 2, mc_pad = (mc + 11) / 12 * 12;
    if (!trans_a) {
        for (int i = 0; i < mc_pad; i++) {
            uint32_t *d = dst + (size_t)i * kq;
            const float *src = A + (size_t)(i0 + i) * lda + p0;
            for (int q = 0; q < kq; q += 16) {
                __m512i v = i < mc ? pairs_along(src + 2 * q, kc - 2 * q) : _mm512_setzero_si512();
                _mm512_mask_storeu_epi32(d + q, first_lanes(kq - q), v);
            }
        }
    } else {
        for (int q = 0; q < kq; q++) {
            const float *r0 = A + (size_t)(p0 + 2 * q) * lda + i0;
            const float *r1 = 2 * q + 1 < kc ? r0 + lda : NULL;
            for (int ir = 0; ir < mc_pad; ir += 12)
                _mm512_mask_storeu_epi32(dst + (size_t)ir * kq + (size_t)q * 12, 0x0FFF,
                                         pairs_across(r0 + ir, r1 ? r1 + ir : NULL, mc - ir < 12 ? mc - ir : 12));
        }
    }
}

/* op(B)[p0 : p0 + kc, j : j + nr] as one (kq, 32) panel of bf16 pairs, columns
 * past nr zero. */
GS_TARGET_AVX512_BF16 static void pack_b_bf16(int trans_b, const float *B, int ldb, int p0, int kc, int j,
                                              int nr, uint32_t *d)
{
    const int kq = (kc + 1) / 2;
    if (!trans_b) {
        for (int q = 0; q < kq; q++) {
            const float *r0 = B + (size_t)(p0 + 2 * q) * ldb + j;
            const float *r1 = 2 * q + 1 < kc ? r0 + ldb : NULL;
            _mm512_store_si512(d + (size_t)q * 32, pairs_across(r0, r1, nr));
            _mm512_store_si512(d + (size_t)q * 32 + 16, pairs_across(r0 + 16, r1 ? r1 + 16 : NULL, nr - 16));
        }
    } else {
        /* B is stored (N, K): column jj's depth runs along memory. Blocks of 16
         * columns x 16 pairs are converted along the columns and transposed into
         * the panel's rows. */
        for (int j16 = 0; j16 < 32; j16 += 16)
            for (int q0 = 0; q0 < kq; q0 += 16) {
                __m512i r[16];
                for (int c = 0; c < 16; c++)
                    r[c] = j16 + c < nr ? pairs_along(B + (size_t)(j + j16 + c) * ldb + p0 + 2 * q0, kc - 2 * q0)
                                        : _mm512_setzero_si512();
                transpose16(r);
                const int n = kq - q0 < 16 ? kq - q0 : 16;
                for (int t = 0; t < n; t++) _mm512_store_si512(d + (size_t)(q0 + t) * 32 + j16, r[t]);
            }
    }
}

/* The bf16 products on AMX tiles (gs_amx()): TDPBF16PS multiplies a 16 x 32
 * bf16 tile of A (16 rows, 16 depth pairs) by a 16 x 16-pair tile of B (16 depth
 * pairs, 16 columns), into a 16 x 16 fp32 tile of C. The kernel computes a 32 x
 * 32 block of C in four C tiles (two A tiles, two B tiles: the 8 tile registers),
 * 16 depth pairs per step. B uses the (kq, 32) pair panels of pack_b_bf16 (a B
 * tile is 16 rows of 64 bytes, stride 128); A is row-major pairs. The depth is
 * padded with zero pairs to a multiple of 16, the rows to a multiple of 32. */
#define GS_TARGET_AMX                                                                               \
    __attribute__((target("amx-tile,amx-bf16,avx512f,avx512dq,avx512bw,avx512vl,avx512bf16,avx2,fma," \
                          "prefer-vector-width=512")))

/* The tile shapes: tiles 0..7 all 16 rows of 64 bytes (16 x 16 fp32, 16 x 32
 * bf16). Loaded on each thread before its first tile instruction (the
 * configuration is per thread), released after its last. A constant in memory:
 * GCC 12 does not see that ldtilecfg reads its operand and dropped the stores
 * that filled a local copy. */
static const struct {
    uint8_t palette, start_row, reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
} __attribute__((packed, aligned(64))) amx_config = {
    1, 0, {0}, {64, 64, 64, 64, 64, 64, 64, 64}, {16, 16, 16, 16, 16, 16, 16, 16}};

GS_TARGET_AMX static void amx_begin(void) { _tile_loadconfig(&amx_config); }

GS_TARGET_AMX static void amx_end(void) { _tile_release(); }

// a: 32 rows of kq16 pairs (row stride kq16), b: a (kq16, 32) pair panel -> c tile (mr, nr), mr, nr <= 32
GS_TARGET_AMX static void kernel_amx(int kq16, const uint32_t *a, const uint32_t *b, float *c, int ldc,
                                     float alpha, float beta, const float *bias, int mr, int nr)
{
    const size_t a_bytes = sizeof(uint32_t) * (size_t)kq16; /* row stride of A */
    _tile_zero(0);
    _tile_zero(1);
    _tile_zero(2);
    _tile_zero(3);
    for (int q = 0; q < kq16; q += 16) {
        _tile_loadd(4, a + q, a_bytes);
        _tile_loadd(5, a + 16 * (size_t)kq16 + q, a_bytes);
        _tile_loadd(6, b + (size_t)q * 32, 128);
        _tile_loadd(7, b + (size_t)q * 32 + 16, 128);
        _tile_dpbf16ps(0, 4, 6);
        _tile_dpbf16ps(1, 4, 7);
        _tile_dpbf16ps(2, 5, 6);
        _tile_dpbf16ps(3, 5, 7);
    }
    float acc[32 * 32] __attribute__((aligned(64)));
    _tile_stored(0, acc, 128);
    _tile_stored(1, acc + 16, 128);
    _tile_stored(2, acc + 16 * 32, 128);
    _tile_stored(3, acc + 16 * 32 + 16, 128);
    for (int r0 = 0; r0 < mr; r0 += 12) { /* the epilogue of the 12 x 32 kernels, 12 rows at a time */
        __m512 rows[24];
        for (int i = 0; i < 24; i++) rows[i] = r0 + i / 2 < 32 ? _mm512_load_ps(acc + (r0 + i / 2) * 32 + (i % 2) * 16) : _mm512_setzero_ps();
        store_rows_avx512(rows, c + (size_t)r0 * ldc, ldc, alpha, beta, bias, mr - r0 < 12 ? mr - r0 : 12, nr);
    }
}

/* op(A)[i0 : i0 + mc, p0 : p0 + kc] as bf16 pairs, row-major with row stride
 * `stride` pairs; rows mc .. mc_pad - 1 and pairs kq .. stride - 1 are zero. */
GS_TARGET_AVX512_BF16 static void pack_a_rows_bf16(int trans_a, const float *A, int lda, int i0, int mc,
                                                   int mc_pad, int p0, int kc, int stride, uint32_t *dst)
{
    const int kq = (kc + 1) / 2;
    for (int i = mc; i < mc_pad; i++) memset(dst + (size_t)i * stride, 0, sizeof(uint32_t) * stride);
    if (!trans_a) {
        for (int i = 0; i < mc; i++) {
            uint32_t *d = dst + (size_t)i * stride;
            const float *src = A + (size_t)(i0 + i) * lda + p0;
            for (int q = 0; q < stride; q += 16)
                _mm512_mask_storeu_epi32(d + q, first_lanes(stride - q),
                                         q < kq ? pairs_along(src + 2 * q, kc - 2 * q) : _mm512_setzero_si512());
        }
    } else {
        /* A is stored (K, M): two depth rows give one pair of 16 rows of op(A);
         * blocks of 16 pairs x 16 rows are transposed into the rows. */
        for (int q0 = 0; q0 < stride; q0 += 16)
            for (int ir = 0; ir < mc; ir += 16) {
                const int n = mc - ir < 16 ? mc - ir : 16;
                __m512i r[16];
                for (int t = 0; t < 16; t++) {
                    const int q = q0 + t;
                    const float *r0 = A + (size_t)(p0 + 2 * q) * lda + i0 + ir;
                    r[t] = q >= kq ? _mm512_setzero_si512()
                                   : pairs_across(r0, 2 * q + 1 < kc ? r0 + lda : NULL, n);
                }
                transpose16(r);
                for (int i = 0; i < n; i++)
                    _mm512_mask_storeu_epi32(dst + (size_t)(ir + i) * stride + q0, first_lanes(stride - q0), r[i]);
            }
    }
}
#endif

static gemm_kernel kernel_for(int isa)
{
    switch (isa) {
#ifdef GS_HAVE_AVX512_PATH
    case GS_ISA_AVX512: return (gemm_kernel){micro_kernel_avx512, direct_kernel_avx512, 12, 32, "avx512"};
#endif
#ifdef GS_HAVE_AVX2_PATH
    case GS_ISA_AVX2: return (gemm_kernel){micro_kernel_avx2, NULL, MR, NR, "avx2"};
#endif
    default: return (gemm_kernel){micro_kernel_generic, NULL, MR, NR, "scalar"};
    }
}

static gemm_kernel select_kernel(void) { return kernel_for(gs_isa()); }

/* bf16 products are on: the precision asks for them and the AVX-512 path runs
 * (gs_set_precision checks the CPU has AVX512-BF16). */
static int use_bf16(void)
{
#ifdef GS_HAVE_AVX512_PATH
    return gs_precision() == GS_PRECISION_BF16 && gs_isa() == GS_ISA_AVX512;
#else
    return 0;
#endif
}

const char *gs_sgemm_kernel_name(void)
{
    return !use_bf16() ? select_kernel().name : gs_amx() ? "amx-bf16" : "avx512-bf16";
}

/* Packs op(A)[i0:i0+mc, p0:p0+kc] into mr_k-row panels, (kc, mr_k) each, zero-padded.
 * Inlined with a constant mr_k (pack_a below), so the copies unroll and vectorise. */
static inline __attribute__((always_inline)) void pack_a_body(const int mr_k, int trans_a, const float *A,
                                                              int lda, int i0, int mc, int p0, int kc,
                                                              float *dst)
{
    int mc_pad = (mc + mr_k - 1) / mr_k * mr_k;
    if (!trans_a) {
        for (int ir = 0; ir < mc_pad; ir += mr_k) {
            float *d = dst + (size_t)ir * kc;
            for (int i = 0; i < mr_k; i++) {
                if (ir + i < mc) {
                    const float *src = A + (size_t)(i0 + ir + i) * lda + p0;
                    for (int p = 0; p < kc; p++) d[(size_t)p * mr_k + i] = src[p];
                } else {
                    for (int p = 0; p < kc; p++) d[(size_t)p * mr_k + i] = 0.0f;
                }
            }
        }
    } else {
        /* A is stored (K, M): read each row of A once, contiguously, and copy it
         * into the panels (strided reads of mr_k floats per row would waste most
         * of every cache line). */
        for (int p = 0; p < kc; p++) {
            const float *src = A + (size_t)(p0 + p) * lda + i0;
            int ir = 0;
            /* memcpy of a constant size: gcc emits vector moves (the element loop
             * stayed scalar, since src and dst might alias) */
            for (; ir + mr_k <= mc; ir += mr_k)
                memcpy(dst + (size_t)ir * kc + (size_t)p * mr_k, src + ir, sizeof(float) * mr_k);
            if (ir < mc) {
                float *d = dst + (size_t)ir * kc + (size_t)p * mr_k;
                int i = 0;
                for (; i < mc - ir; i++) d[i] = src[ir + i];
                for (; i < mr_k; i++) d[i] = 0.0f;
            }
        }
    }
}

static void pack_a(int mr_k, int trans_a, const float *A, int lda, int i0, int mc, int p0, int kc,
                   float *dst)
{
    if (mr_k == 12)
        pack_a_body(12, trans_a, A, lda, i0, mc, p0, kc, dst);
    else
        pack_a_body(MR, trans_a, A, lda, i0, mc, p0, kc, dst);
}

/* Packs op(B)[p0:p0+kc, j : j + nr] into one (kc, nr_k) panel, zero-padded; inlined
 * with a constant nr_k (pack_b_panel below). */
static inline __attribute__((always_inline)) void pack_b_body(const int nr_k, int trans_b, const float *B,
                                                              int ldb, int p0, int kc, int j, int nr,
                                                              float *d)
{
    if (!trans_b) {
        for (int p = 0; p < kc; p++) {
            const float *src = B + (size_t)(p0 + p) * ldb + j;
            float *dp = d + (size_t)p * nr_k;
            if (nr == nr_k) {
                memcpy(dp, src, sizeof(float) * nr_k); /* constant size: vector moves */
            } else {
                int jj = 0;
                for (; jj < nr; jj++) dp[jj] = src[jj];
                for (; jj < nr_k; jj++) dp[jj] = 0.0f;
            }
        }
    } else {
        for (int jj = 0; jj < nr_k; jj++) {
            if (jj < nr) {
                const float *src = B + (size_t)(j + jj) * ldb + p0;
                for (int p = 0; p < kc; p++) d[(size_t)p * nr_k + jj] = src[p];
            } else {
                for (int p = 0; p < kc; p++) d[(size_t)p * nr_k + jj] = 0.0f;
            }
        }
    }
}

static void pack_b_panel(int nr_k, int trans_b, const float *B, int ldb, int p0, int kc, int j, int nr,
                         float *d)
{
    if (nr_k == 32)
        pack_b_body(32, trans_b, B, ldb, p0, kc, j, nr, d);
    else
        pack_b_body(NR, trans_b, B, ldb, p0, kc, j, nr, d);
}

static void scale_c(int M, int N, float beta, float *C, int ldc)
{
    for (int i = 0; i < M; i++) {
        float *ci = C + (size_t)i * ldc;
        if (beta == 0.0f)
            memset(ci, 0, sizeof(float) * (size_t)N);
        else
            for (int j = 0; j < N; j++) ci[j] *= beta;
    }
}

/* Panels per tile of C (one row block x this many panels): 4, so a tile reuses its
 * row block of A across panels, unless fewer panels per tile balance the threads
 * better. With 4 a product of few row blocks and few panels leaves threads idle:
 * 64 x 2048 x 128 was one tile for two threads, 256 x 2048 x 128 three. Each
 * element of C is still summed by one thread in the same order. */
static int panels_per_tile(int n_mblocks, int n_panels, int nthreads)
{
    int best = 4;
    double best_balance = 0.0;
    for (int ppt = 4; ppt >= 1; ppt--) {
        int tiles = n_mblocks * ((n_panels + ppt - 1) / ppt);
        int rounds = (tiles + nthreads - 1) / nthreads;
        double balance = (double)tiles / ((double)rounds * nthreads); /* busy share of the threads */
        if (balance > best_balance + 0.05) best = ppt, best_balance = balance;
        if (balance >= 0.9) break;
    }
    return best;
}

/* C[:, j0 : j0+nc] (+)= alpha * packed A slab (M rows) @ packed B panels (kc deep),
 * (+ bias[j0 + j] on every row when bias is given), as tiles of (one row block) x
 * (panels_per_tile panels): enough tiles for every thread even when M is one block.
 * With gelu (the last slab of depth only), each finished tile goes through GELU (erf
 * form) while it is still in cache. Call inside a parallel region (work-shared loop). */
static inline void multiply_tiles(gemm_kernel k, int kc, const float *apack, const float *a_direct, int lda,
                                  int mc_step, int n_mblocks, int M, const float *bpanels, int n_panels,
                                  int nc, int j0, float alpha, float beta, const float *bias, int gelu,
                                  float *C, int ldc)
{
    const int ppt = panels_per_tile(n_mblocks, n_panels, omp_get_num_threads());
    int n_ngroups = (n_panels + ppt - 1) / ppt;
#pragma omp for schedule(static) collapse(2)
    for (int mb = 0; mb < n_mblocks; mb++) {
        for (int ng = 0; ng < n_ngroups; ng++) {
            int i0 = mb * mc_step, mc = M - i0 < mc_step ? M - i0 : mc_step;
            int jp_end = (ng + 1) * ppt;
            if (jp_end > n_panels) jp_end = n_panels;
            for (int jp = ng * ppt; jp < jp_end; jp++) {
                int j = jp * k.cols, nr = nc - j < k.cols ? nc - j : k.cols;
                const float *bp = bpanels + (size_t)jp * k.cols * kc;
                for (int ir = 0; ir < mc; ir += k.rows) {
                    int mr = mc - ir < k.rows ? mc - ir : k.rows;
                    float *ct = C + (size_t)(i0 + ir) * ldc + j0 + j;
                    const float *bt = bias ? bias + j0 + j : NULL;
                    if (a_direct)
                        k.direct(kc, a_direct + (size_t)(i0 + ir) * lda, lda, bp, ct, ldc, alpha, beta, bt, mr, nr);
                    else
                        k.fn(kc, apack + (size_t)(i0 + ir) * kc, bp, ct, ldc, alpha, beta, bt, mr, nr);
                }
            }
            if (gelu) {
                int j_first = ng * ppt * k.cols, j_end = jp_end * k.cols < nc ? jp_end * k.cols : nc;
                gs_gelu_erf_rows(mc, j_end - j_first, C + (size_t)i0 * ldc + j0 + j_first, ldc);
            }
        }
    }
}

/* Equal row blocks of at most MC rows (a multiple of mr_k), so that no thread is
 * left with a thin last block while the other works. */
static void row_blocks(int M, int mr_k, int *mc_step, int *n_mblocks)
{
    int n = (M + MC - 1) / MC;
    int step = (M + n - 1) / n;
    step = (step + mr_k - 1) / mr_k * mr_k;
    *mc_step = step;
    *n_mblocks = (M + step - 1) / step;
}

/* Products of fewer multiply-adds run on one thread: splitting them costs more than it
 * saves (bench_gemm.py --threads 2, idle Xeon: 64 x 64 x 64 ran at 52 GFLOP/s on two
 * threads against 87 on one, 64 x 128 x 128 at 57 against 93; with balanced tiles,
 * products of 4.2M multiply-adds ran 0.87x to 1.01x as fast on two threads as on one,
 * 8.4M 1.02x, 16.8M 1.18x). */
#define SERIAL_MACS (8.0 * 1024 * 1024)

/* Whether a product below SERIAL_MACS still runs on several threads, each on its own
 * rows with its own packed copy of B: one fork and no barrier, where the shared-panel
 * scheme above pays three. Worth it when B is small beside A (M >= 2N) and each
 * thread gets at least 64 rows; not inside another parallel region. bench_gemm.py
 * --quick --threads 2 --against <the build before>, Xeon model 167, three runs: 256 x 64
 * x 64 TN 1.48-1.67x, 256 x 128 x 128 TT 1.65-1.79x (0.66 -> 1.08-1.12 of OpenBLAS); the
 * shared-panel scheme on these rows gave 0.87-1.05x, and 0.68-0.71x at 64 x 512 x 128 TT,
 * whose B is large, so those stay on one thread. A training step of the quick model at
 * 2 threads: 0.999-1.020x (noise). */
#define ROW_SPLIT_MACS (1.0 * 1024 * 1024)
static int splits_rows(int M, int N, int K, int nthreads)
{
    return nthreads > 1 && !omp_in_parallel() && M >= 64 * nthreads && M >= 2 * N &&
           (double)M * N * K >= ROW_SPLIT_MACS && (double)M * N * K < SERIAL_MACS;
}

/* Whether a product of few rows (M < 2N, so splits_rows does not take it) runs on
 * several threads, each on its own columns (whole panels, at least two per thread)
 * with its own packed copy of its part of B and of all of A: one fork and no
 * barrier. Taken from ROW_SPLIT_MACS up to COL_SPLIT_MACS, past SERIAL_MACS, since
 * the shared-panel scheme's barriers per slab cost too much while M is one row
 * block (M <= MC). bench_gemm.py --quick --threads 2 --against <the build before>, AMD
 * EPYC family 25 model 17 (Zen 4), idle, two runs: 64 x 128 x 128 NT 1.70x, 1.53x; 64 x
 * 128 x 512 TN 1.80x, 1.97x; 64 x 512 x 128 TT 1.73x, 1.58x; 64 x 2048 x 128 NT 1.29x,
 * 1.17x; the other 24 shapes 0.86x-1.09x (noise). Not yet measured on a Xeon. */
#define COL_SPLIT_MACS (32.0 * 1024 * 1024)
static int splits_cols(int M, int N, int K, int cols, int nthreads)
{
    return nthreads > 1 && !omp_in_parallel() && M <= MC && M < 2 * N && N >= 2 * cols * nthreads &&
           (double)M * N * K >= ROW_SPLIT_MACS && (double)M * N * K < COL_SPLIT_MACS;
}

/* Whether a product with non-transposed A and B (one thread, one slab) skips
 * packing B. Packing costs one pass over B and saves strided reads on every pass
 * the row blocks make: with one row block it is pure overhead, and with a shallow
 * B (a K x 32 panel of 16 KB or less, in L1 beside the A rows) the strided reads
 * cost nothing. bench_gemm.py --small --threads 1 --against <the packing build>,
 * Xeon model 167, study jobs paused, 1.00x = same speed (unchanged code spans
 * 0.76x-1.32x there): 12 rows, K = N = 64..384: 1.42x-2.17x; 32 and 64 rows with
 * K <= 128: 0.84x-1.30x; an earlier run reading B in place up to 64 rows at any K
 * gave 0.85x-1.09x for K >= 256, so those still pack. */
static int reads_b_in_place(int M, int K)
{
    return M <= 12 || (M <= 64 && K <= 128);
}

#ifdef GS_HAVE_AVX512_PATH
/* The bf16 products: sgemm's blocking with bf16 pair packing (see pack_a_bf16,
 * pack_b_bf16). Every element of C is summed by one thread in a fixed order, as
 * in sgemm. Returns GS_OK, or GS_ENOMEM (nothing written) when the packing
 * buffers cannot be had. */
static int sgemm_bf16(int trans_a, int trans_b, int M, int N, int K, float alpha, const float *A, int lda,
                      const float *B, int ldb, float beta, const float *bias, float *C, int ldc)
{
    int nthreads = gs_num_threads();
    if ((double)M * N * K < SERIAL_MACS) nthreads = 1;
    const int nc_max = N < NC ? N : NC, kq_max = (slab_depth(K) + 1) / 2;
    const size_t n_panels_max = ((size_t)nc_max + 31) / 32, m_pad = ((size_t)M + 11) / 12 * 12;
    uint32_t *bpack = gs_scratch_get(GS_SCRATCH_GEMM_B, sizeof(uint32_t) * n_panels_max * 32 * kq_max);
    uint32_t *apack = gs_scratch_get(GS_SCRATCH_GEMM_A, sizeof(uint32_t) * m_pad * kq_max);
    if (!bpack || !apack) {
        gs_scratch_put(GS_SCRATCH_GEMM_B, bpack);
        gs_scratch_put(GS_SCRATCH_GEMM_A, apack);
        return GS_ENOMEM;
    }
    int mc_step, n_mblocks;
    row_blocks(M, 12, &mc_step, &n_mblocks);
    const int kc_max = slab_depth(K);
#pragma omp parallel num_threads(nthreads)
    for (int p0 = 0; p0 < K; p0 += kc_max) {
        const int kc = K - p0 < kc_max ? K - p0 : kc_max, kq = (kc + 1) / 2;
        const float beta_step = p0 == 0 ? beta : 1.0f;
#pragma omp for schedule(static)
        for (int mb = 0; mb < n_mblocks; mb++) {
            int i0 = mb * mc_step, mc = M - i0 < mc_step ? M - i0 : mc_step;
            pack_a_bf16(trans_a, A, lda, i0, mc, p0, kc, apack + (size_t)i0 * kq);
        }
        for (int j0 = 0; j0 < N; j0 += NC) {
            const int nc = N - j0 < NC ? N - j0 : NC, n_panels = (nc + 31) / 32;
#pragma omp for schedule(static)
            for (int jp = 0; jp < n_panels; jp++) {
                int j = j0 + jp * 32, nr = N - j < 32 ? N - j : 32;
                pack_b_bf16(trans_b, B, ldb, p0, kc, j, nr, bpack + (size_t)jp * 32 * kq);
            }
            /* tiles of (one row block) x (ppt panels), as multiply_tiles */
            const int ppt = panels_per_tile(n_mblocks, n_panels, omp_get_num_threads());
            const int n_ngroups = (n_panels + ppt - 1) / ppt;
#pragma omp for schedule(static) collapse(2)
            for (int mb = 0; mb < n_mblocks; mb++) {
                for (int ng = 0; ng < n_ngroups; ng++) {
                    int i0 = mb * mc_step, mc = M - i0 < mc_step ? M - i0 : mc_step;
                    int jp_end = (ng + 1) * ppt < n_panels ? (ng + 1) * ppt : n_panels;
                    for (int jp = ng * ppt; jp < jp_end; jp++) {
                        int j = jp * 32, nr = nc - j < 32 ? nc - j : 32;
                        const uint32_t *bp = bpack + (size_t)jp * 32 * kq;
                        const float *bt = p0 == 0 && bias ? bias + j0 + j : NULL;
                        for (int ir = 0; ir < mc; ir += 12) {
                            int mr = mc - ir < 12 ? mc - ir : 12;
                            float *ct = C + (size_t)(i0 + ir) * ldc + j0 + j;
                            const uint32_t *ap = apack + (size_t)(i0 + ir) * kq;
                            if (trans_a)
                                kernel_bf16_panel(kq, ap, bp, ct, ldc, alpha, beta_step, bt, mr, nr);
                            else
                                kernel_bf16_rows(kq, ap, (size_t)kq, bp, ct, ldc, alpha, beta_step, bt, mr, nr);
                        }
                    }
                }
            }
        }
    }
    gs_scratch_put(GS_SCRATCH_GEMM_B, bpack);
    gs_scratch_put(GS_SCRATCH_GEMM_A, apack);
    return GS_OK;
}
#endif

#ifdef GS_HAVE_AVX512_PATH
/* The bf16 products on AMX tiles: sgemm_bf16's blocking with 32 x 32 blocks of C
 * and the depth of each slab padded to a multiple of 32 (16 pairs). GS_OK, or
 * GS_ENOMEM (nothing written). */
static int sgemm_amx(int trans_a, int trans_b, int M, int N, int K, float alpha, const float *A, int lda,
                     const float *B, int ldb, float beta, const float *bias, float *C, int ldc)
{
    int nthreads = gs_num_threads();
    if ((double)M * N * K < SERIAL_MACS) nthreads = 1;
    const int kc_max = slab_depth(K), nc_max = N < NC ? N : NC;
    const int kq16_max = ((kc_max + 1) / 2 + 15) / 16 * 16;
    const size_t n_panels_max = ((size_t)nc_max + 31) / 32, m_pad = ((size_t)M + 31) / 32 * 32;
    uint32_t *bpack = gs_scratch_get(GS_SCRATCH_GEMM_B, sizeof(uint32_t) * n_panels_max * 32 * kq16_max);
    uint32_t *apack = gs_scratch_get(GS_SCRATCH_GEMM_A, sizeof(uint32_t) * m_pad * kq16_max);
    if (!bpack || !apack) {
        gs_scratch_put(GS_SCRATCH_GEMM_B, bpack);
        gs_scratch_put(GS_SCRATCH_GEMM_A, apack);
        return GS_ENOMEM;
    }
    int mc_step, n_mblocks;
    row_blocks(M, 32, &mc_step, &n_mblocks);
#pragma omp parallel num_threads(nthreads)
    {
        amx_begin();
        for (int p0 = 0; p0 < K; p0 += kc_max) {
            const int kc = K - p0 < kc_max ? K - p0 : kc_max, kq = (kc + 1) / 2, kq16 = (kq + 15) / 16 * 16;
            const float beta_step = p0 == 0 ? beta : 1.0f;
#pragma omp for schedule(static)
            for (int mb = 0; mb < n_mblocks; mb++) {
                int i0 = mb * mc_step, mc = M - i0 < mc_step ? M - i0 : mc_step;
                pack_a_rows_bf16(trans_a, A, lda, i0, mc, (mc + 31) / 32 * 32, p0, kc, kq16,
                                 apack + (size_t)i0 * kq16);
            }
            for (int j0 = 0; j0 < N; j0 += NC) {
                const int nc = N - j0 < NC ? N - j0 : NC, n_panels = (nc + 31) / 32;
#pragma omp for schedule(static)
                for (int jp = 0; jp < n_panels; jp++) {
                    int j = j0 + jp * 32, nr = N - j < 32 ? N - j : 32;
                    uint32_t *d = bpack + (size_t)jp * 32 * kq16;
                    pack_b_bf16(trans_b, B, ldb, p0, kc, j, nr, d);
                    memset(d + (size_t)kq * 32, 0, sizeof(uint32_t) * 32 * (size_t)(kq16 - kq));
                }
                const int ppt = panels_per_tile(n_mblocks, n_panels, omp_get_num_threads());
                const int n_ngroups = (n_panels + ppt - 1) / ppt;
#pragma omp for schedule(static) collapse(2)
                for (int mb = 0; mb < n_mblocks; mb++) {
                    for (int ng = 0; ng < n_ngroups; ng++) {
                        int i0 = mb * mc_step, mc = M - i0 < mc_step ? M - i0 : mc_step;
                        int jp_end = (ng + 1) * ppt < n_panels ? (ng + 1) * ppt : n_panels;
                        for (int jp = ng * ppt; jp < jp_end; jp++) {
                            int j = jp * 32, nr = nc - j < 32 ? nc - j : 32;
                            const uint32_t *bp = bpack + (size_t)jp * 32 * kq16;
                            const float *bt = p0 == 0 && bias ? bias + j0 + j : NULL;
                            for (int ir = 0; ir < mc; ir += 32)
                                kernel_amx(kq16, apack + (size_t)(i0 + ir) * kq16, bp,
                                           C + (size_t)(i0 + ir) * ldc + j0 + j, ldc, alpha, beta_step, bt,
                                           mc - ir < 32 ? mc - ir : 32, nr);
                        }
                    }
                }
            }
        }
        amx_end();
    }
    gs_scratch_put(GS_SCRATCH_GEMM_B, bpack);
    gs_scratch_put(GS_SCRATCH_GEMM_A, apack);
    return GS_OK;
}
#endif

/* GELU (erf form) over all of C, for the paths that cannot apply it tile by tile. */
static void gelu_all(int M, int N, float *C, int ldc)
{
    if (ldc == N) {
        gs_gelu_erf_forward((size_t)M * N, C, C);
        return;
    }
#pragma omp parallel for schedule(static) num_threads(gs_num_threads()) if ((double)M * N > 32768)
    for (int i = 0; i < M; i++) gs_gelu_erf_rows(1, N, C + (size_t)i * ldc, ldc);
}

/* gs_sgemm with an optional bias (N) added to every row of C (with beta == 0), then
 * GELU (erf form) if gelu: fused into the tiles on the fp32 packed path. */
static void sgemm(int trans_a, int trans_b, int M, int N, int K, float alpha, const float *A, int lda,
                  const float *B, int ldb, float beta, const float *bias, int gelu, float *C, int ldc)
{
    if (M <= 0 || N <= 0) return;
    if (K <= 0 || alpha == 0.0f) {
        if (beta != 1.0f) scale_c(M, N, beta, C, ldc);
        if (bias)
            for (int i = 0; i < M; i++)
                for (int j = 0; j < N; j++) C[(size_t)i * ldc + j] += bias[j];
        if (gelu) gelu_all(M, N, C, ldc);
        return;
    }
#ifdef GS_HAVE_AVX512_PATH
    if (use_bf16() && (gs_amx() ? sgemm_amx : sgemm_bf16)(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb,
                                                          beta, bias, C, ldc) == GS_OK) {
        if (gelu) gelu_all(M, N, C, ldc);
        return; /* else out of memory: the fp32 path below, with its own fallback */
    }
#endif
    const gemm_kernel k = select_kernel();
    int nthreads = gs_num_threads();
    const int by_rows = splits_rows(M, N, K, nthreads);
    if (by_rows || splits_cols(M, N, K, k.cols, nthreads)) {
        /* each thread its share of rows (whole micro-kernel strips) or of columns (whole
         * panels), so every element is summed as on one thread */
        const int unit = by_rows ? k.rows : k.cols, extent = by_rows ? M : N;
        const int units = (extent + unit - 1) / unit;
#pragma omp parallel num_threads(nthreads)
        {
            const int t = omp_get_thread_num(), n = omp_get_num_threads();
            const int u0 = units * t / n * unit, u1 = units * (t + 1) / n * unit;
            const int len = (u1 < extent ? u1 : extent) - u0;
            if (len > 0 && by_rows)
                sgemm(trans_a, trans_b, len, N, K, alpha, trans_a ? A + u0 : A + (size_t)u0 * lda, lda, B, ldb,
                      beta, bias, gelu, C + (size_t)u0 * ldc, ldc);
            else if (len > 0)
                sgemm(trans_a, trans_b, M, len, K, alpha, A, lda, trans_b ? B + (size_t)u0 * ldb : B + u0, ldb,
                      beta, bias ? bias + u0 : NULL, gelu, C + u0, ldc);
        }
        return;
    }
    /* Other small products are faster on one thread than with a fork/join. */
    if ((double)M * N * K < SERIAL_MACS) nthreads = 1;
#ifdef GS_HAVE_AVX512_PATH
    /* A few rows reuse a packed B too little to pay for packing it: B is then read
     * in place (unpacked_sgemm; same bits as packed). */
    if (!trans_a && !trans_b && k.direct == direct_kernel_avx512 && nthreads == 1 && reads_b_in_place(M, K) &&
        slab_depth(K) == K) {
        unpacked_sgemm(M, N, K, alpha, A, lda, B, ldb, beta, bias, C, ldc);
        if (gelu) gelu_all(M, N, C, ldc);
        return;
    }
#endif

    int nc_max = N < NC ? N : NC;
    int kc_max = slab_depth(K);
    size_t b_panels_max = (size_t)(nc_max + k.cols - 1) / k.cols;
    size_t m_pad = ((size_t)M + k.rows - 1) / k.rows * k.rows;
    /* Packing buffers are kept per thread (scratch.h): fresh pages cost more than packing. */
    float *bpack = gs_scratch_get(GS_SCRATCH_GEMM_B, sizeof(float) * b_panels_max * k.cols * kc_max);
    /* The whole M x KC slab of A is packed once per depth step and reused for every
     * column slab; rows are padded to a multiple of MR. A kernel that reads a
     * non-transposed A directly needs no packed A. */
    const int direct = !trans_a && k.direct != NULL;
    float *apack = direct ? NULL : gs_scratch_get(GS_SCRATCH_GEMM_A, sizeof(float) * m_pad * kc_max);
    if (!bpack || (!direct && !apack)) {
        /* Out of memory for the packing buffers: fall back to an unpacked loop. */
        gs_scratch_put(GS_SCRATCH_GEMM_B, bpack);
        gs_scratch_put(GS_SCRATCH_GEMM_A, apack);
        for (int i = 0; i < M; i++)
            for (int j = 0; j < N; j++) {
                double s = 0.0;
                for (int p = 0; p < K; p++) {
                    float a = trans_a ? A[(size_t)p * lda + i] : A[(size_t)i * lda + p];
                    float b = trans_b ? B[(size_t)j * ldb + p] : B[(size_t)p * ldb + j];
                    s += (double)a * b;
                }
                float *c = C + (size_t)i * ldc + j;
                *c = (float)(alpha * s) + (beta == 0.0f ? 0.0f : beta * *c) + (bias ? bias[j] : 0.0f);
            }
        if (gelu) gelu_all(M, N, C, ldc);
        return;
    }

    int mc_step, n_mblocks;
    row_blocks(M, k.rows, &mc_step, &n_mblocks);
#pragma omp parallel num_threads(nthreads)
    for (int p0 = 0; p0 < K; p0 += kc_max) {
        int kc = K - p0 < kc_max ? K - p0 : kc_max;
        float beta_step = p0 == 0 ? beta : 1.0f;
        if (!direct) {
#pragma omp for schedule(static)
            for (int mb = 0; mb < n_mblocks; mb++) {
                int i0 = mb * mc_step, mc = M - i0 < mc_step ? M - i0 : mc_step;
                pack_a(k.rows, trans_a, A, lda, i0, mc, p0, kc, apack + (size_t)i0 * kc);
            }
        }
        for (int j0 = 0; j0 < N; j0 += NC) {
            int nc = N - j0 < NC ? N - j0 : NC;
            int n_panels = (nc + k.cols - 1) / k.cols;
#pragma omp for schedule(static)
            for (int jp = 0; jp < n_panels; jp++) {
                int j = j0 + jp * k.cols, nr = N - j < k.cols ? N - j : k.cols;
                pack_b_panel(k.cols, trans_b, B, ldb, p0, kc, j, nr, bpack + (size_t)jp * k.cols * kc);
            }
            multiply_tiles(k, kc, apack, direct ? A + p0 : NULL, lda, mc_step, n_mblocks, M, bpack, n_panels,
                           nc, j0, alpha, beta_step, p0 == 0 ? bias : NULL, gelu && p0 + kc >= K, C, ldc);
        }
    }
    gs_scratch_put(GS_SCRATCH_GEMM_B, bpack);
    gs_scratch_put(GS_SCRATCH_GEMM_A, apack);
}

void gs_sgemm(int trans_a, int trans_b, int M, int N, int K, float alpha, const float *A, int lda,
              const float *B, int ldb, float beta, float *C, int ldc)
{
    sgemm(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, NULL, 0, C, ldc);
}

void gs_sgemm_bias(int trans_a, int trans_b, int M, int N, int K, const float *A, int lda, const float *B,
                   int ldb, const float *bias, float *C, int ldc)
{
    sgemm(trans_a, trans_b, M, N, K, 1.0f, A, lda, B, ldb, 0.0f, bias, 0, C, ldc);
}

void gs_sgemm_bias_gelu(int trans_a, int trans_b, int M, int N, int K, const float *A, int lda,
                        const float *B, int ldb, const float *bias, float *C, int ldc)
{
    sgemm(trans_a, trans_b, M, N, K, 1.0f, A, lda, B, ldb, 0.0f, bias, 1, C, ldc);
}

size_t gs_packed_b_floats(int K, int N)
{
    const size_t cols = (size_t)GS_SGEMM_NR_MAX; /* the widest panel any path uses */
    return (size_t)K * (((size_t)N + cols - 1) / cols * cols);
}

void gs_packed_b_pack(int trans_b, int K, int N, const float *B, int ldb, float *data, gs_packed_b *out)
{
    /* The kernel of this moment is recorded: gs_sgemm_packed_b uses it even if
     * the path changes later, since the panels are shaped for it. */
    const gemm_kernel k = select_kernel();
    const size_t n_panels = ((size_t)N + k.cols - 1) / k.cols;
    out->K = K, out->N = N, out->isa = gs_isa(), out->data = data;
    const int kc_max = slab_depth(K); /* the slabs gs_sgemm_packed_b walks */
    for (int p0 = 0; p0 < K; p0 += kc_max) {
        int kc = K - p0 < kc_max ? K - p0 : kc_max;
        float *slab = data + (size_t)p0 * n_panels * k.cols;
#pragma omp parallel for schedule(static) num_threads(gs_num_threads()) if (n_panels * kc > 4096)
        for (size_t jp = 0; jp < n_panels; jp++) {
            int j = (int)jp * k.cols, nr = N - j < k.cols ? N - j : k.cols;
            pack_b_panel(k.cols, trans_b, B, ldb, p0, kc, j, nr, slab + jp * k.cols * kc);
        }
    }
}

int gs_packed_b_new(int trans_b, int K, int N, const float *B, int ldb, gs_packed_b *out)
{
    float *data = gs_alloc(sizeof(float) * gs_packed_b_floats(K, N));
    if (!data) return gs_fail(GS_ENOMEM, "out of memory packing a %d x %d matrix", K, N);
    gs_packed_b_pack(trans_b, K, N, B, ldb, data, out);
    return GS_OK;
}

void gs_packed_b_free(gs_packed_b *pb)
{
    gs_free(pb->data);
    pb->data = NULL;
}

int gs_sgemm_packed_b(int M, int nc, const float *A, int lda, const gs_packed_b *pb, int j0, float *C,
                      int ldc)
{
    if (M <= 0 || nc <= 0) return GS_OK;
    const int K = pb->K;
    const gemm_kernel k = kernel_for(pb->isa); /* the panels are shaped for it */
    if (j0 % k.cols != 0)
        return gs_fail(GS_EINVAL, "packed SGEMM: column offset %d is not a multiple of the panel width %d",
                       j0, k.cols);
    const size_t n_panels_all = ((size_t)pb->N + k.cols - 1) / k.cols;
    int nthreads = gs_num_threads();
    if ((double)M * nc * K < SERIAL_MACS) nthreads = 1;
    int mc_step, n_mblocks;
    row_blocks(M, k.rows, &mc_step, &n_mblocks);
    size_t m_pad = ((size_t)M + k.rows - 1) / k.rows * k.rows;
    const int kc_max = slab_depth(K);
    const int direct = k.direct != NULL;
    float *apack = direct ? NULL : gs_scratch_get(GS_SCRATCH_GEMM_A, sizeof(float) * m_pad * kc_max);
    if (!direct && !apack) return gs_fail(GS_ENOMEM, "out of memory packing %d rows", M);
#pragma omp parallel num_threads(nthreads)
    for (int p0 = 0; p0 < K; p0 += kc_max) {
        int kc = K - p0 < kc_max ? K - p0 : kc_max;
        if (!direct) {
#pragma omp for schedule(static)
            for (int mb = 0; mb < n_mblocks; mb++) {
                int i0 = mb * mc_step, mc = M - i0 < mc_step ? M - i0 : mc_step;
                pack_a(k.rows, 0, A, lda, i0, mc, p0, kc, apack + (size_t)i0 * kc);
            }
        }
        const float *panels = pb->data + (size_t)p0 * n_panels_all * k.cols + (size_t)(j0 / k.cols) * k.cols * kc;
        multiply_tiles(k, kc, apack, direct ? A + p0 : NULL, lda, mc_step, n_mblocks, M, panels,
                       (nc + k.cols - 1) / k.cols, nc, 0, 1.0f, p0 == 0 ? 0.0f : 1.0f, NULL, 0, C, ldc);
    }
    gs_scratch_put(GS_SCRATCH_GEMM_A, apack);
    return GS_OK;
}
