/* Blocked SGEMM in the BLIS style: op(B) is packed into KC x NR column panels,
 * op(A) into MR x KC row panels, and a register-blocked MR x NR micro-kernel
 * multiplies one pair of panels. Packing absorbs every transpose form, so the
 * micro-kernel sees a single layout; the AVX-512 kernel also reads a
 * non-transposed A in place (no A packing). Three micro-kernels: portable C (6 x 16),
 * AVX2+FMA (6 x 16) and AVX-512 (12 x 32); the vector ones are compiled with
 * target attributes and chosen per call by gs_isa(), so one build runs on any
 * x86-64. The panel shapes follow the kernel. */
#include "gemm.h"

#include <string.h>

#include "../common.h"
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
/* 12 x 32: 24 accumulators + 2 B vectors + the broadcast A value in 32 zmm
 * registers; each A element feeds two FMAs. Edges are written with masks.
 * A is read as a[i * a_rs + p * a_ks]: a packed panel (a_rs 1, a_ks 12) or, for
 * a non-transposed A, the matrix itself (a_rs lda, a_ks 1), which skips packing
 * A: the rows stream from L1/L2 and the broadcasts need no contiguous panel. */
#define K512_ROW(i)                                                                                \
    do {                                                                                           \
        __m512 ai = _mm512_set1_ps(a[(i) * a_rs]);                                                 \
        c##i##a = _mm512_fmadd_ps(ai, b0, c##i##a);                                                \
        c##i##b = _mm512_fmadd_ps(ai, b1, c##i##b);                                                \
    } while (0)

GS_TARGET_AVX512 static inline __attribute__((always_inline)) void
tile_avx512(int kc, const float *restrict a, size_t a_rs, size_t a_ks, const float *restrict b, float *c,
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
    for (int p = 0; p < kc; p++) {
        __m512 b0 = _mm512_load_ps(b), b1 = _mm512_load_ps(b + 16);
        K512_ROW(0); K512_ROW(1); K512_ROW(2); K512_ROW(3); K512_ROW(4); K512_ROW(5);
        K512_ROW(6); K512_ROW(7); K512_ROW(8); K512_ROW(9); K512_ROW(10); K512_ROW(11);
        a += a_ks;
        b += 32;
    }
    const __m512 rows[24] = {c0a, c0b, c1a, c1b, c2a, c2b, c3a, c3b, c4a, c4b, c5a, c5b,
                             c6a, c6b, c7a, c7b, c8a, c8b, c9a, c9b, c10a, c10b, c11a, c11b};
    const __mmask16 m0 = nr >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << nr) - 1u);
    const __mmask16 m1 = nr >= 32 ? (__mmask16)0xFFFF : nr <= 16 ? 0 : (__mmask16)((1u << (nr - 16)) - 1u);
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
#undef K512_ROW

// a: packed (kc, 12), b: packed (kc, 32) -> c tile (mr, nr)
GS_TARGET_AVX512 static void micro_kernel_avx512(int kc, const float *restrict a, const float *restrict b,
                                                 float *c, int ldc, float alpha, float beta,
                                                 const float *bias, int mr, int nr)
{
    tile_avx512(kc, a, 1, 12, b, c, ldc, alpha, beta, bias, mr, nr);
}

// a: rows of A itself (mr, kc) with row stride lda, b: packed (kc, 32) -> c tile (mr, nr).
// A partial panel (mr < 12) is copied to a zero-padded panel first: no read past A.
GS_TARGET_AVX512 static void direct_kernel_avx512(int kc, const float *restrict a, int lda,
                                                  const float *restrict b, float *c, int ldc, float alpha,
                                                  float beta, const float *bias, int mr, int nr)
{
    if (mr == 12) {
        tile_avx512(kc, a, (size_t)lda, 1, b, c, ldc, alpha, beta, bias, mr, nr);
        return;
    }
    float panel[12 * 384] __attribute__((aligned(64))); /* kc <= slab depth <= 384 */
    for (int p = 0; p < kc; p++)
        for (int i = 0; i < 12; i++) panel[p * 12 + i] = i < mr ? a[(size_t)i * lda + p] : 0.0f;
    tile_avx512(kc, panel, 1, 12, b, c, ldc, alpha, beta, bias, mr, nr);
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

const char *gs_sgemm_kernel_name(void) { return select_kernel().name; }

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
            for (; ir + mr_k <= mc; ir += mr_k) {
                float *d = dst + (size_t)ir * kc + (size_t)p * mr_k;
                for (int i = 0; i < mr_k; i++) d[i] = src[ir + i];
            }
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
                for (int jj = 0; jj < nr_k; jj++) dp[jj] = src[jj];
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

/* C[:, j0 : j0+nc] (+)= alpha * packed A slab (M rows) @ packed B panels (kc deep),
 * (+ bias[j0 + j] on every row when bias is given), as tiles of (one row block) x
 * (four panels): enough tiles for both threads even when M is a single block.
 * Call inside a parallel region (work-shared loop). */
static inline void multiply_tiles(gemm_kernel k, int kc, const float *apack, const float *a_direct, int lda,
                                  int mc_step, int n_mblocks, int M, const float *bpanels, int n_panels,
                                  int nc, int j0, float alpha, float beta, const float *bias, float *C,
                                  int ldc)
{
    const int panels_per_tile = 4;
    int n_ngroups = (n_panels + panels_per_tile - 1) / panels_per_tile;
#pragma omp for schedule(static) collapse(2)
    for (int mb = 0; mb < n_mblocks; mb++) {
        for (int ng = 0; ng < n_ngroups; ng++) {
            int i0 = mb * mc_step, mc = M - i0 < mc_step ? M - i0 : mc_step;
            int jp_end = (ng + 1) * panels_per_tile;
            if (jp_end > n_panels) jp_end = n_panels;
            for (int jp = ng * panels_per_tile; jp < jp_end; jp++) {
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

/* gs_sgemm with an optional bias (N) added to every row of C (with beta == 0). */
static void sgemm(int trans_a, int trans_b, int M, int N, int K, float alpha, const float *A, int lda,
                  const float *B, int ldb, float beta, const float *bias, float *C, int ldc)
{
    if (M <= 0 || N <= 0) return;
    if (K <= 0 || alpha == 0.0f) {
        if (beta != 1.0f) scale_c(M, N, beta, C, ldc);
        if (bias)
            for (int i = 0; i < M; i++)
                for (int j = 0; j < N; j++) C[(size_t)i * ldc + j] += bias[j];
        return;
    }
    const gemm_kernel k = select_kernel();
    int nthreads = gs_num_threads();
    /* Small products are faster on one thread than with a fork/join. */
    if ((double)M * N * K < 64.0 * 64.0 * 64.0) nthreads = 1;

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
                           nc, j0, alpha, beta_step, p0 == 0 ? bias : NULL, C, ldc);
        }
    }
    gs_scratch_put(GS_SCRATCH_GEMM_B, bpack);
    gs_scratch_put(GS_SCRATCH_GEMM_A, apack);
}

void gs_sgemm(int trans_a, int trans_b, int M, int N, int K, float alpha, const float *A, int lda,
              const float *B, int ldb, float beta, float *C, int ldc)
{
    sgemm(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, NULL, C, ldc);
}

void gs_sgemm_bias(int trans_a, int trans_b, int M, int N, int K, const float *A, int lda, const float *B,
                   int ldb, const float *bias, float *C, int ldc)
{
    sgemm(trans_a, trans_b, M, N, K, 1.0f, A, lda, B, ldb, 0.0f, bias, C, ldc);
}

int gs_packed_b_new(int trans_b, int K, int N, const float *B, int ldb, gs_packed_b *out)
{
    /* The kernel of this moment is recorded: gs_sgemm_packed_b uses it even if
     * the path changes later, since the panels are shaped for it. */
    const gemm_kernel k = select_kernel();
    const size_t n_panels = ((size_t)N + k.cols - 1) / k.cols;
    out->K = K, out->N = N, out->isa = gs_isa();
    out->data = gs_alloc(sizeof(float) * (size_t)K * n_panels * k.cols);
    if (!out->data) return gs_fail(GS_ENOMEM, "out of memory packing a %d x %d matrix", K, N);
    const int kc_max = slab_depth(K); /* the slabs gs_sgemm_packed_b walks */
    for (int p0 = 0; p0 < K; p0 += kc_max) {
        int kc = K - p0 < kc_max ? K - p0 : kc_max;
        float *slab = out->data + (size_t)p0 * n_panels * k.cols;
#pragma omp parallel for schedule(static) num_threads(gs_num_threads())
        for (size_t jp = 0; jp < n_panels; jp++) {
            int j = (int)jp * k.cols, nr = N - j < k.cols ? N - j : k.cols;
            pack_b_panel(k.cols, trans_b, B, ldb, p0, kc, j, nr, slab + jp * k.cols * kc);
        }
    }
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
    if ((double)M * nc * K < 64.0 * 64.0 * 64.0) nthreads = 1;
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
                       (nc + k.cols - 1) / k.cols, nc, 0, 1.0f, p0 == 0 ? 0.0f : 1.0f, NULL, C, ldc);
    }
    gs_scratch_put(GS_SCRATCH_GEMM_A, apack);
    return GS_OK;
}
