/* Blocked SGEMM in the BLIS style: op(B) is packed into KC x NR column panels,
 * op(A) into MR x KC row panels, and a register-blocked MR x NR micro-kernel
 * multiplies one pair of panels. Packing absorbs every transpose form, so the
 * micro-kernel sees a single layout. The AVX2+FMA micro-kernel is compiled with
 * a target attribute and chosen at run time, so one build runs on any x86-64. */
#include "gemm.h"

#include <string.h>

#include "../common.h"
#include "simd.h"

#define MR 6
#define NR GS_SGEMM_NR
#define MC 120  /* rows of A packed per block: MC x KC floats stay in L2 */
#define KC 256  /* depth of one packed slab: a 16 KB B panel stays in L1 */
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

/* Writes alpha * acc + beta * C for the mr x nr corner that lies inside C. */
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

__attribute__((target("avx2,fma"))) static void
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

static micro_kernel_fn chosen_kernel = NULL;
static const char *chosen_name = "generic";

static micro_kernel_fn select_kernel(void)
{
    if (chosen_kernel) return chosen_kernel;
    micro_kernel_fn k = micro_kernel_generic;
    const char *name = "generic";
#ifdef GS_HAVE_AVX2_PATH
    if (gs_cpu_has_avx2_fma()) {
        k = micro_kernel_avx2;
        name = "avx2-fma";
    }
#endif
    chosen_name = name;
    chosen_kernel = k; /* idempotent race: every thread stores the same value */
    return k;
}

const char *gs_sgemm_kernel_name(void)
{
    select_kernel();
    return chosen_name;
}

/* Packs op(A)[i0:i0+mc, p0:p0+kc] into MR-row panels, (kc, MR) each, zero-padded. */
static void pack_a(int trans_a, const float *A, int lda, int i0, int mc, int p0, int kc, float *dst)
{
    int mc_pad = (mc + MR - 1) / MR * MR;
    if (!trans_a) {
        for (int ir = 0; ir < mc_pad; ir += MR) {
            float *d = dst + (size_t)ir * kc;
            for (int i = 0; i < MR; i++) {
                if (ir + i < mc) {
                    const float *src = A + (size_t)(i0 + ir + i) * lda + p0;
                    for (int p = 0; p < kc; p++) d[p * MR + i] = src[p];
                } else {
                    for (int p = 0; p < kc; p++) d[p * MR + i] = 0.0f;
                }
            }
        }
    } else {
        /* A is stored (K, M): read each row of A once, contiguously, and scatter it
         * into the panels (strided reads of MR floats per row would waste most of
         * every cache line). */
        for (int p = 0; p < kc; p++) {
            const float *src = A + (size_t)(p0 + p) * lda + i0;
            for (int ir = 0; ir < mc_pad; ir += MR) {
                float *d = dst + (size_t)ir * kc + (size_t)p * MR;
                int mr = mc - ir < MR ? mc - ir : MR;
                int i = 0;
                for (; i < mr; i++) d[i] = src[ir + i];
                for (; i < MR; i++) d[i] = 0.0f;
            }
        }
    }
}

/* Packs op(B)[p0:p0+kc, j0 + jr : j0 + jr + NR] into one (kc, NR) panel, zero-padded. */
static void pack_b_panel(int trans_b, const float *B, int ldb, int p0, int kc, int j, int nr,
                         float *d)
{
    if (!trans_b) {
        for (int p = 0; p < kc; p++) {
            const float *src = B + (size_t)(p0 + p) * ldb + j;
            int jj = 0;
            for (; jj < nr; jj++) d[p * NR + jj] = src[jj];
            for (; jj < NR; jj++) d[p * NR + jj] = 0.0f;
        }
    } else {
        for (int jj = 0; jj < NR; jj++) {
            if (jj < nr) {
                const float *src = B + (size_t)(j + jj) * ldb + p0;
                for (int p = 0; p < kc; p++) d[p * NR + jj] = src[p];
            } else {
                for (int p = 0; p < kc; p++) d[p * NR + jj] = 0.0f;
            }
        }
    }
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
 * (+ bias[j0 + j] on every row when bias is given), as tiles of (one row block) x (four NR panels): enough tiles for both threads even
 * when M is a single block. Call inside a parallel region (work-shared loop). */
static inline void multiply_tiles(micro_kernel_fn kernel, int kc, const float *apack, int mc_step,
                           int n_mblocks, int M, const float *bpanels, int n_panels, int nc, int j0,
                           float alpha, float beta, const float *bias, float *C, int ldc)
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
                int j = jp * NR, nr = nc - j < NR ? nc - j : NR;
                const float *bp = bpanels + (size_t)jp * NR * kc;
                for (int ir = 0; ir < mc; ir += MR) {
                    int mr = mc - ir < MR ? mc - ir : MR;
                    kernel(kc, apack + (size_t)(i0 + ir) * kc, bp, C + (size_t)(i0 + ir) * ldc + j0 + j,
                           ldc, alpha, beta, bias ? bias + j0 + j : NULL, mr, nr);
                }
            }
        }
    }
}

/* Equal row blocks of at most MC rows (a multiple of MR), so that no thread is
 * left with a thin last block while the other works. */
static void row_blocks(int M, int *mc_step, int *n_mblocks)
{
    int n = (M + MC - 1) / MC;
    int step = (M + n - 1) / n;
    step = (step + MR - 1) / MR * MR;
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
    micro_kernel_fn kernel = select_kernel();
    int nthreads = gs_num_threads();
    /* Small products are faster on one thread than with a fork/join. */
    if ((double)M * N * K < 64.0 * 64.0 * 64.0) nthreads = 1;

    int nc_max = N < NC ? N : NC;
    int kc_max = slab_depth(K);
    size_t b_panels_max = (size_t)(nc_max + NR - 1) / NR;
    size_t m_pad = ((size_t)M + MR - 1) / MR * MR;
    float *bpack = gs_alloc(sizeof(float) * b_panels_max * NR * kc_max);
    /* The whole M x KC slab of A is packed once per depth step and reused for every
     * column slab; rows are padded to a multiple of MR. */
    float *apack = gs_alloc(sizeof(float) * m_pad * kc_max);
    if (!bpack || !apack) {
        /* Out of memory for the packing buffers: fall back to an unpacked loop. */
        gs_free(bpack);
        gs_free(apack);
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
    row_blocks(M, &mc_step, &n_mblocks);
#pragma omp parallel num_threads(nthreads)
    for (int p0 = 0; p0 < K; p0 += kc_max) {
        int kc = K - p0 < kc_max ? K - p0 : kc_max;
        float beta_step = p0 == 0 ? beta : 1.0f;
#pragma omp for schedule(static)
        for (int mb = 0; mb < n_mblocks; mb++) {
            int i0 = mb * mc_step, mc = M - i0 < mc_step ? M - i0 : mc_step;
            pack_a(trans_a, A, lda, i0, mc, p0, kc, apack + (size_t)i0 * kc);
        }
        for (int j0 = 0; j0 < N; j0 += NC) {
            int nc = N - j0 < NC ? N - j0 : NC;
            int n_panels = (nc + NR - 1) / NR;
#pragma omp for schedule(static)
            for (int jp = 0; jp < n_panels; jp++) {
                int j = j0 + jp * NR, nr = N - j < NR ? N - j : NR;
                pack_b_panel(trans_b, B, ldb, p0, kc, j, nr, bpack + (size_t)jp * NR * kc);
            }
            multiply_tiles(kernel, kc, apack, mc_step, n_mblocks, M, bpack, n_panels, nc, j0, alpha,
                           beta_step, p0 == 0 ? bias : NULL, C, ldc);
        }
    }
    gs_free(bpack);
    gs_free(apack);
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
    const size_t n_panels = ((size_t)N + NR - 1) / NR;
    out->K = K, out->N = N;
    out->data = gs_alloc(sizeof(float) * (size_t)K * n_panels * NR);
    if (!out->data) return gs_fail(GS_ENOMEM, "out of memory packing a %d x %d matrix", K, N);
    const int kc_max = slab_depth(K); /* the slabs gs_sgemm_packed_b walks */
    for (int p0 = 0; p0 < K; p0 += kc_max) {
        int kc = K - p0 < kc_max ? K - p0 : kc_max;
        float *slab = out->data + (size_t)p0 * n_panels * NR;
#pragma omp parallel for schedule(static) num_threads(gs_num_threads())
        for (size_t jp = 0; jp < n_panels; jp++) {
            int j = (int)jp * NR, nr = N - j < NR ? N - j : NR;
            pack_b_panel(trans_b, B, ldb, p0, kc, j, nr, slab + jp * NR * kc);
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
    const size_t n_panels_all = ((size_t)pb->N + NR - 1) / NR;
    micro_kernel_fn kernel = select_kernel();
    int nthreads = gs_num_threads();
    if ((double)M * nc * K < 64.0 * 64.0 * 64.0) nthreads = 1;
    int mc_step, n_mblocks;
    row_blocks(M, &mc_step, &n_mblocks);
    size_t m_pad = ((size_t)M + MR - 1) / MR * MR;
    const int kc_max = slab_depth(K);
    float *apack = gs_alloc(sizeof(float) * m_pad * kc_max);
    if (!apack) return gs_fail(GS_ENOMEM, "out of memory packing %d rows", M);
#pragma omp parallel num_threads(nthreads)
    for (int p0 = 0; p0 < K; p0 += kc_max) {
        int kc = K - p0 < kc_max ? K - p0 : kc_max;
#pragma omp for schedule(static)
        for (int mb = 0; mb < n_mblocks; mb++) {
            int i0 = mb * mc_step, mc = M - i0 < mc_step ? M - i0 : mc_step;
            pack_a(0, A, lda, i0, mc, p0, kc, apack + (size_t)i0 * kc);
        }
        const float *panels = pb->data + (size_t)p0 * n_panels_all * NR + (size_t)(j0 / NR) * NR * kc;
        multiply_tiles(kernel, kc, apack, mc_step, n_mblocks, M, panels, (nc + NR - 1) / NR, nc,
                       0, 1.0f, p0 == 0 ? 0.0f : 1.0f, NULL, C, ldc);
    }
    gs_free(apack);
    return GS_OK;
}
