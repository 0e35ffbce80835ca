/* FMA contraction (a*b+c in one rounding) lets the AVX2 clone of small_mm use vfmadd;
 * results stay deterministic for a given machine and thread count. */
#pragma GCC optimize("fp-contract=fast")
#include "layers.h"

#include <math.h>
#include <string.h>

#include "../common.h"
#include "../tensor/ops.h"
#include "../tensor/scratch.h"
#include "../tensor/simd.h"

#ifdef _OPENMP
#include <omp.h>
#endif

/* ---------------------------------------------------------------- embedding */

int gs_check_ids(size_t N, const int32_t *ids, int V, const char *what)
{
    for (size_t i = 0; i < N; i++)
        if (ids[i] < 0 || ids[i] >= V)
            return gs_fail(GS_EINVAL, "%s[%zu] = %d is not a valid token id: ids must be in [0, %d)",
                           what, i, (int)ids[i], V);
    return GS_OK;
}

void gs_embedding_forward(size_t N, int C, const int32_t *ids, const float *table, float *out)
{
#pragma omp parallel for schedule(static) num_threads(gs_num_threads()) if (N * (size_t)C > 32768)
    for (size_t n = 0; n < N; n++)
        memcpy(out + n * C, table + (size_t)ids[n] * C, sizeof(float) * (size_t)C);
}

void gs_embedding_backward(size_t N, int C, const int32_t *ids, const float *dout, float *dtable)
{
    /* Columns in blocks of 16 per task: each dtable element is summed by one
     * thread over n in order, so repeated ids never race and the order is fixed. */
    int nblocks = (C + 15) / 16;
#pragma omp parallel for schedule(static) num_threads(gs_num_threads()) if (N * (size_t)C > 32768)
    for (int blk = 0; blk < nblocks; blk++) {
        int c0 = blk * 16, c1 = c0 + 16 < C ? c0 + 16 : C;
        for (size_t n = 0; n < N; n++) {
            float *dst = dtable + (size_t)ids[n] * C;
            const float *src = dout + n * C;
            for (int c = c0; c < c1; c++) dst[c] += src[c];
        }
    }
}

int gs_check_bag_ids(size_t N, int K, const int32_t *ids, int V, const char *what)
{
    if (K < 1) return gs_fail(GS_EINVAL, "%s: %d tokens per position, need >= 1", what, K);
    for (size_t n = 0; n < N; n++)
        for (int k = 0; k < K; k++) {
            int32_t v = ids[n * K + k];
            if (v >= V || v < (k ? -1 : 0))
                return gs_fail(GS_EINVAL,
                               "%s[%zu, %d] = %d is not a valid token id: ids must be in [0, %d)%s",
                               what, n, k, (int)v, V,
                               k ? " or -1 (empty slot)" : " (the first slot of a position is never empty)");
        }
    return GS_OK;
}

void gs_embedding_bag_forward(size_t N, int K, int C, const int32_t *ids, const float *table,
                              float *out)
{
    if (K == 1) {
        gs_embedding_forward(N, C, ids, table, out);
        return;
    }
#pragma omp parallel for schedule(static) num_threads(gs_num_threads()) if (N * (size_t)C * K > 32768)
    for (size_t n = 0; n < N; n++) {
        float *o = out + n * C;
        memcpy(o, table + (size_t)ids[n * K] * C, sizeof(float) * (size_t)C);
        for (int k = 1; k < K; k++) {
            int32_t v = ids[n * K + k];
            if (v < 0) continue;
            const float *row = table + (size_t)v * C;
            for (int c = 0; c < C; c++) o[c] += row[c];
        }
    }
}

void gs_embedding_bag_backward(size_t N, int K, int C, const int32_t *ids, const float *dout,
                               float *dtable)
{
    if (K == 1) {
        gs_embedding_backward(N, C, ids, dout, dtable);
        return;
    }
    int nblocks = (C + 15) / 16;  // as gs_embedding_backward: one thread per column block
#pragma omp parallel for schedule(static) num_threads(gs_num_threads()) if (N * (size_t)C * K > 32768)
    for (int blk = 0; blk < nblocks; blk++) {
        int c0 = blk * 16, c1 = c0 + 16 < C ? c0 + 16 : C;
        for (size_t n = 0; n < N; n++)
            for (int k = 0; k < K; k++) {
                int32_t v = ids[n * K + k];
                if (v < 0) continue;
                float *dst = dtable + (size_t)v * C;
                const float *src = dout + n * C;
                for (int c = c0; c < c1; c++) dst[c] += src[c];
            }
    }
}

/* ------------------------------------------------------------------ dropout */

/* splitmix64 finaliser: a bijective mix with full avalanche, enough to turn a
 * counter into independent-looking bits. */
static inline uint64_t mix64(uint64_t z)
{
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static inline uint64_t stream_key(uint64_t seed, uint64_t stream)
{
    return mix64(seed * 0x9e3779b97f4a7c15ULL + mix64(stream + 0x632be59bd9b4e019ULL));
}

/* Element i of a stream is kept iff the top 16 bits of a 32-bit hash of
 * (key, i) are >= p * 2^16 (murmur3's finaliser over key + i * golden ratio:
 * 32-bit multiplies, so the loop vectorises). i wraps at 2^32 elements. */
static inline uint32_t key32(uint64_t key) { return (uint32_t)(key ^ (key >> 32)); }

static inline uint32_t elem_hash(uint32_t k, uint32_t i)
{
    uint32_t h = k + i * 0x9e3779b9u;
    h ^= h >> 16;
    h *= 0x85ebca6bu;
    h ^= h >> 13;
    h *= 0xc2b2ae35u;
    h ^= h >> 16;
    return h >> 16;
}

static inline uint32_t drop_threshold(float p)
{
    if (p >= 1.0f) p = 0.999999f;
    return (uint32_t)((double)p * 65536.0 + 0.5);
}

/* f[0..n) = multipliers (0 or scale) of elements base .. base+n-1 of a stream. */
GS_INLINE void drop_factors(uint32_t k, uint32_t thr, float scale, uint64_t base, int n, float *f)
{
    const uint32_t b = (uint32_t)base;
    for (int j = 0; j < n; j++) f[j] = elem_hash(k, b + (uint32_t)j) >= thr ? scale : 0.0f;
}

/* The mask of one dropout stream: element i is kept (times s) iff
 * elem_hash(k, i) >= thr. p <= 0 keeps every element with s = 1. */
typedef struct {
    uint32_t k, thr;
    float s;
} drop_mask;

static drop_mask drop_mask_of(float p, uint64_t seed, uint64_t stream)
{
    if (p <= 0.0f) return (drop_mask){0, 0, 1.0f};
    return (drop_mask){key32(stream_key(seed, stream)), drop_threshold(p),
                       1.0f / (1.0f - (p >= 1.0f ? 0.999999f : p))};
}

GS_INLINE float drop_factor(drop_mask d, size_t i) { return elem_hash(d.k, (uint32_t)i) >= d.thr ? d.s : 0.0f; }

/* y[i] = x[i] * f_i for i in [i0, i1); the vector paths vectorise the hash. */
GS_INLINE void dropout_span_body(size_t i0, size_t i1, drop_mask d, const float *x, float *y)
{
    for (size_t i = i0; i < i1; i++) y[i] = x[i] * drop_factor(d, i);
}
GS_MULTIVERSION(dropout_span, (size_t i0, size_t i1, drop_mask d, const float *x, float *y), (i0, i1, d, x, y))

float gs_dropout_factor(float p, uint64_t seed, uint64_t stream, uint64_t i)
{
    return drop_factor(drop_mask_of(p, seed, stream), i);
}

void gs_dropout(size_t n, float p, uint64_t seed, uint64_t stream, const float *x, float *y)
{
    if (p <= 0.0f) {
        if (y != x) memcpy(y, x, sizeof(float) * n);
        return;
    }
    const dropout_span_fn span = dropout_span_pick();
    const drop_mask d = drop_mask_of(p, seed, stream);
    GS_FOR_CHUNKS(n, 4096, 65536, i0, i1, span(i0, i1, d, x, y));
}

/* ReLU and dropout in one pass over a large activation (the feed-forward hidden
 * layer is the largest tensor of a step; each extra pass over it is a pass over
 * memory), with gs_dropout's masks:
 *   forward:  y[i] = max(x[i], 0) * f_i
 *   backward: dx[i] = (x[i] > 0) ? dy[i] * f_i : 0    (x: the pre-activation) */
GS_INLINE void relu_drop_fwd_body(size_t i0, size_t i1, drop_mask d, const float *x, float *y)
{
    for (size_t i = i0; i < i1; i++) {
        float v = x[i];
        y[i] = (v > 0.0f ? v : 0.0f) * drop_factor(d, i);
    }
}
GS_MULTIVERSION(relu_drop_fwd, (size_t i0, size_t i1, drop_mask d, const float *x, float *y), (i0, i1, d, x, y))

GS_INLINE void relu_drop_bwd_body(size_t i0, size_t i1, drop_mask d, const float *x, const float *dy, float *dx)
{
    for (size_t i = i0; i < i1; i++) {
        float g = dy[i] * drop_factor(d, i);
        dx[i] = x[i] > 0.0f ? g : 0.0f;
    }
}
GS_MULTIVERSION(relu_drop_bwd, (size_t i0, size_t i1, drop_mask d, const float *x, const float *dy, float *dx),
                (i0, i1, d, x, dy, dx))

void gs_relu_dropout_forward(size_t n, float p, uint64_t seed, uint64_t stream, const float *x, float *y)
{
    const relu_drop_fwd_fn span = relu_drop_fwd_pick();
    const drop_mask d = drop_mask_of(p, seed, stream);
    GS_FOR_CHUNKS(n, 4096, 65536, i0, i1, span(i0, i1, d, x, y));
}

void gs_relu_dropout_backward(size_t n, float p, uint64_t seed, uint64_t stream, const float *x,
                              const float *dy, float *dx)
{
    const relu_drop_bwd_fn span = relu_drop_bwd_pick();
    const drop_mask d = drop_mask_of(p, seed, stream);
    GS_FOR_CHUNKS(n, 4096, 65536, i0, i1, span(i0, i1, d, x, dy, dx));
}

/* A residual connection through dropout in one pass: y = x + dropout(r) with
 * gs_dropout's masks; y may alias x (not r). */
GS_INLINE void drop_add_body(size_t i0, size_t i1, drop_mask d, const float *x, const float *r, float *y)
{
    for (size_t i = i0; i < i1; i++) y[i] = x[i] + r[i] * drop_factor(d, i);
}
GS_MULTIVERSION(drop_add, (size_t i0, size_t i1, drop_mask d, const float *x, const float *r, float *y),
                (i0, i1, d, x, r, y))

void gs_dropout_add(size_t n, float p, uint64_t seed, uint64_t stream, const float *x, const float *r, float *y)
{
    const drop_add_fn span = drop_add_pick();
    const drop_mask d = drop_mask_of(p, seed, stream);
    GS_FOR_CHUNKS(n, 4096, 65536, i0, i1, span(i0, i1, d, x, r, y));
}

/* ---------------------------------------------------------------- attention */

/* The per-(batch, head) products are small (T x T x d_head), too small for
 * gs_sgemm's packing and threads, so each thread runs them through small_mm, a
 * register-blocked serial kernel compiled twice (AVX2+FMA and baseline x86-64)
 * and picked at run time. The vectorised operand needs a multiple of 16 columns: a
 * head of 16k columns is read in place, others are repacked per (batch, head) into
 * zero-padded scratch (mm_head). */
typedef float v8f __attribute__((vector_size(32)));
/* the same vector type at float alignment, for unaligned loads and stores (macros, not
 * functions: passing 32-byte vectors by value to a baseline-ABI function is not portable) */
typedef float v8f_u __attribute__((vector_size(32), aligned(4)));
#define load8(p) (*(const v8f_u *)(p))
#define store8(p, x) (*(v8f_u *)(p) = (x))

// C (M,N16) = op(A) (M,K) @ B (K,N16); op(A)[r][k] = A[r*a_rs + k*a_ks]; N16 % 16 == 0
static inline __attribute__((always_inline)) void
small_mm_body(int M, int N16, int K, const float *A, size_t a_rs, size_t a_ks, const float *B, int ldb,
         float *C, int ldc)
{
    int m = 0;
    for (; m + 4 <= M; m += 4) {
        const float *a0 = A + (size_t)m * a_rs, *a1 = a0 + a_rs, *a2 = a1 + a_rs, *a3 = a2 + a_rs;
        for (int n = 0; n < N16; n += 16) {
            v8f c00 = {0}, c01 = {0}, c10 = {0}, c11 = {0}, c20 = {0}, c21 = {0}, c30 = {0},
                c31 = {0};
            for (int k = 0; k < K; k++) {
                const float *b = B + (size_t)k * ldb + n;
                v8f b0 = load8(b), b1 = load8(b + 8);
                size_t ak = (size_t)k * a_ks;
                float x0 = a0[ak], x1 = a1[ak], x2 = a2[ak], x3 = a3[ak];
                c00 += x0 * b0, c01 += x0 * b1;
                c10 += x1 * b0, c11 += x1 * b1;
                c20 += x2 * b0, c21 += x2 * b1;
                c30 += x3 * b0, c31 += x3 * b1;
            }
            float *c = C + (size_t)m * ldc + n;
            store8(c, c00), store8(c + 8, c01);
            store8(c + ldc, c10), store8(c + ldc + 8, c11);
            store8(c + 2 * ldc, c20), store8(c + 2 * ldc + 8, c21);
            store8(c + 3 * ldc, c30), store8(c + 3 * ldc + 8, c31);
        }
    }
    for (; m < M; m++) {
        const float *a0 = A + (size_t)m * a_rs;
        for (int n = 0; n < N16; n += 16) {
            v8f c0 = {0}, c1 = {0};
            for (int k = 0; k < K; k++) {
                const float *b = B + (size_t)k * ldb + n;
                float x0 = a0[(size_t)k * a_ks];
                c0 += x0 * load8(b), c1 += x0 * load8(b + 8);
            }
            store8(C + (size_t)m * ldc + n, c0), store8(C + (size_t)m * ldc + n + 8, c1);
        }
    }
}

#ifdef GS_HAVE_AVX2_PATH
GS_TARGET_AVX2 static void small_mm_avx2(int M, int N16, int K, const float *A, size_t a_rs, size_t a_ks,
                                         const float *B, int ldb, float *C, int ldc)
{
    small_mm_body(M, N16, K, A, a_rs, a_ks, B, ldb, C, ldc);
}
#endif

#ifdef GS_HAVE_AVX512_PATH
/* AVX-512: blocks of R rows x 16 columns, one zmm accumulator per row (R = 8 keeps 8
 * independent FMA chains in flight; the shared body, compiled for AVX-512, stays at
 * 256-bit vectors). Each element is the same fused sum over k in the same order as
 * the AVX2 clone's. */
GS_TARGET_AVX512 static inline __attribute__((always_inline)) void
small_mm_rows512(int R, int N16, int K, const float *A, size_t a_rs, size_t a_ks, const float *B, int ldb,
                 float *C, int ldc)
{
    for (int n = 0; n < N16; n += 16) {
        __m512 c[8];
        for (int r = 0; r < R; r++) c[r] = _mm512_setzero_ps();
        for (int k = 0; k < K; k++) {
            const __m512 b = _mm512_loadu_ps(B + (size_t)k * ldb + n);
            const float *ak = A + (size_t)k * a_ks;
            for (int r = 0; r < R; r++) c[r] = _mm512_fmadd_ps(_mm512_set1_ps(ak[(size_t)r * a_rs]), b, c[r]);
        }
        for (int r = 0; r < R; r++) _mm512_storeu_ps(C + (size_t)r * ldc + n, c[r]);
    }
}

GS_TARGET_AVX512 static void small_mm_avx512(int M, int N16, int K, const float *A, size_t a_rs,
                                             size_t a_ks, const float *B, int ldb, float *C, int ldc)
{
    int m = 0;
    for (; m + 8 <= M; m += 8)
        small_mm_rows512(8, N16, K, A + (size_t)m * a_rs, a_rs, a_ks, B, ldb, C + (size_t)m * ldc, ldc);
    if (m + 4 <= M) {
        small_mm_rows512(4, N16, K, A + (size_t)m * a_rs, a_rs, a_ks, B, ldb, C + (size_t)m * ldc, ldc);
        m += 4;
    }
    for (; m < M; m++)
        small_mm_rows512(1, N16, K, A + (size_t)m * a_rs, a_rs, a_ks, B, ldb, C + (size_t)m * ldc, ldc);
}
#endif

static void small_mm_generic(int M, int N16, int K, const float *A, size_t a_rs, size_t a_ks,
                             const float *B, int ldb, float *C, int ldc)
{
    small_mm_body(M, N16, K, A, a_rs, a_ks, B, ldb, C, ldc);
}

typedef void (*small_mm_fn)(int, int, int, const float *, size_t, size_t, const float *, int,
                            float *, int);

static small_mm_fn pick_small_mm(void)
{
    switch (gs_isa()) {
#ifdef GS_HAVE_AVX512_PATH
    case GS_ISA_AVX512: return small_mm_avx512;
#endif
#ifdef GS_HAVE_AVX2_PATH
    case GS_ISA_AVX2: return small_mm_avx2;
#endif
    default: return small_mm_generic;
    }
}

static inline int round16(int n) { return (n + 15) & ~15; }

// rows (n, cols) with row stride ld -> dst (n, ld_dst) zero-padded to ld_dst columns
static void pack_rows(int n, int cols, const float *src, size_t ld, float *dst, int ld_dst)
{
    for (int r = 0; r < n; r++) {
        memcpy(dst + (size_t)r * ld_dst, src + r * ld, sizeof(float) * cols);
        memset(dst + (size_t)r * ld_dst + cols, 0, sizeof(float) * (ld_dst - cols));
    }
}

/* C (M, dh), row stride ldc, = op(A) (M, K) @ B (K, dh), row stride ldb (one head's
 * columns of a strided tensor). With dh a multiple of 16 small_mm reads and writes the
 * tensors in place; otherwise B goes through the zero-padded scratch Bp (K, D16) and
 * the product through R (M, D16). The same sums in the same order either way. */
static void mm_head(small_mm_fn mm, int M, int dh, int K, const float *A, size_t a_rs, size_t a_ks,
                    const float *B, int ldb, float *Bp, float *C, int ldc, float *R)
{
    if (dh % 16 == 0) {
        mm(M, dh, K, A, a_rs, a_ks, B, ldb, C, ldc);
        return;
    }
    const int D16 = round16(dh);
    pack_rows(K, dh, B, ldb, Bp, D16);
    mm(M, D16, K, A, a_rs, a_ks, Bp, D16, R, D16);
    for (int i = 0; i < M; i++) memcpy(C + (size_t)i * ldc, R + (size_t)i * D16, sizeof(float) * dh);
}

// rows (n, cols) with row stride ld -> transposed dst (cols, ld_dst), zero-padded columns
static void pack_transposed(int n, int cols, const float *src, size_t ld, float *dst, int ld_dst)
{
    for (int c = 0; c < cols; c++) {
        float *d = dst + (size_t)c * ld_dst;
        for (int r = 0; r < n; r++) d[r] = src[r * ld + c];
        for (int r = n; r < ld_dst; r++) d[r] = 0.0f;
    }
}

/* Last key index query i may see (inclusive). */
static inline int last_key(const gs_attention_args *a, int i)
{
    if (!a->causal) return a->Tk - 1;
    int j = i + (a->Tk - a->Tq);
    return j < a->Tk - 1 ? j : a->Tk - 1;
}

static int attn_threads(const gs_attention_args *a)
{
#ifdef _OPENMP
    if (omp_in_parallel()) return 1; /* a caller already spreads its calls over the threads */
#endif
    size_t work = (size_t)a->B * a->H * a->Tq * a->Tk * a->dh;
    int nt = gs_num_threads();
    return a->B * a->H > 1 && work > 65536 ? (nt > 0 ? nt : 1) : 1;
}

/* Columns of mm_head's repacking buffers (its Bp and R) per row: none for a head it
 * reads in place. */
static size_t repack_cols(int dh) { return dh % 16 == 0 ? 0 : (size_t)round16(dh); }

/* Floats of per-thread scratch of the forward / backward pass (layouts in each). */
static size_t fwd_scratch(const gs_attention_args *a)
{
    size_t Tk16 = round16(a->Tk), Dp = repack_cols(a->dh);
    return (size_t)a->dh * Tk16 + (size_t)a->Tq * Tk16 + (size_t)a->Tk * Dp + (size_t)a->Tq * Dp + Tk16;
}
static size_t bwd_scratch(const gs_attention_args *a)
{
    size_t Tk16 = round16(a->Tk), Dp = repack_cols(a->dh), Tm = a->Tq > a->Tk ? a->Tq : a->Tk;
    return (size_t)a->dh * Tk16 + 2 * (size_t)a->Tq * Tk16 + 2 * (size_t)a->Tq * Dp + (size_t)a->Tk * Dp +
           Tm * Dp + Tk16;
}

/* One query row of the forward pass, on keys [0, n) of Tk (later keys are
 * causally hidden): s (Tk16 scratch) holds q.k on entry; p (Tk) gets the
 * probabilities (zero past n and on masked keys); s gets dropout(p), the
 * operand of P @ V. Branch-free passes, compiled per path. */
GS_INLINE void attn_fwd_row_body(int n, int Tk, float *s, float *p, const float *bias, const int32_t *km,
                                 float scale, int use_drop, uint32_t key, uint32_t thr, float keep_scale,
                                 uint64_t base, float *f)
{
    if (bias)
        for (int j = 0; j < n; j++) s[j] = scale * s[j] + bias[j];
    else
        for (int j = 0; j < n; j++) s[j] = scale * s[j];
    if (km)
        for (int j = 0; j < n; j++) s[j] = km[j] ? s[j] : -INFINITY;
    float mx = -INFINITY;
#pragma omp simd reduction(max : mx)
    for (int j = 0; j < n; j++) mx = s[j] > mx ? s[j] : mx;
    if (mx == -INFINITY) { /* every key masked: no mass, zero output */
        memset(p, 0, sizeof(float) * Tk);
        memset(s, 0, sizeof(float) * Tk);
        return;
    }
    const float inv = 1.0f / gs_exp_shifted(n, s, mx, p);
    for (int j = 0; j < n; j++) p[j] *= inv;
    for (int j = n; j < Tk; j++) p[j] = 0.0f, s[j] = 0.0f;
    if (use_drop) {
        drop_factors(key, thr, keep_scale, base, n, f);
        for (int j = 0; j < n; j++) s[j] = p[j] * f[j];
    } else {
        memcpy(s, p, sizeof(float) * n);
    }
}
GS_MULTIVERSION(attn_fwd_row,
                (int n, int Tk, float *s, float *p, const float *bias, const int32_t *km, float scale,
                 int use_drop, uint32_t key, uint32_t thr, float keep_scale, uint64_t base, float *f),
                (n, Tk, s, p, bias, km, scale, use_drop, key, thr, keep_scale, base, f))

/* One query row of the backward pass on keys [0, n): through dropout dP *= f and
 * Pd = P * f; then dS = P * (dP - sum_j P dP) into ds (Tk, zero past n) and
 * scale * dS into dp (S = scale * q.k: dq and dk carry the scale). */
GS_INLINE void attn_bwd_row_body(int n, int Tk, const float *p, float *dp, float *pd, float *ds, float scale,
                                 int use_drop, uint32_t key, uint32_t thr, float keep_scale, uint64_t base,
                                 float *f)
{
    if (use_drop) {
        drop_factors(key, thr, keep_scale, base, n, f);
        for (int j = 0; j < n; j++) dp[j] *= f[j], pd[j] = p[j] * f[j];
    } else {
        memcpy(pd, p, sizeof(float) * n);
    }
    float pdp = 0.0f;
#pragma omp simd reduction(+ : pdp)
    for (int j = 0; j < n; j++) pdp += p[j] * dp[j];
    for (int j = 0; j < n; j++) {
        float dsj = p[j] * (dp[j] - pdp);
        ds[j] = dsj;
        dp[j] = scale * dsj;
    }
    for (int j = n; j < Tk; j++) ds[j] = 0.0f, dp[j] = 0.0f, pd[j] = 0.0f;
}
GS_MULTIVERSION(attn_bwd_row,
                (int n, int Tk, const float *p, float *dp, float *pd, float *ds, float scale, int use_drop,
                 uint32_t key, uint32_t thr, float keep_scale, uint64_t base, float *f),
                (n, Tk, p, dp, pd, ds, scale, use_drop, key, thr, keep_scale, base, f))

int gs_attention_forward(const gs_attention_args *a, const float *q, const float *k,
                         const float *v, float *probs, float *out)
{
    const int B = a->B, H = a->H, Tq = a->Tq, Tk = a->Tk, dh = a->dh;
    const int Tk16 = round16(Tk);
    const size_t Dp = repack_cols(dh);
    const int use_drop = a->dropout_p > 0.0f;
    const uint32_t key = use_drop ? key32(stream_key(a->dropout_seed, a->dropout_stream)) : 0;
    const uint32_t thr = use_drop ? drop_threshold(a->dropout_p) : 0;
    const float keep_scale = use_drop ? 1.0f / (1.0f - a->dropout_p) : 1.0f;
    const size_t kstride = a->kv_batch_stride ? a->kv_batch_stride : (size_t)Tk * a->ldk;
    const size_t vstride = a->kv_batch_stride ? a->kv_batch_stride : (size_t)Tk * a->ldv;
    const int nt = attn_threads(a);
    const small_mm_fn small_mm = pick_small_mm();
    const attn_fwd_row_fn fwd_row = attn_fwd_row_pick();
    const size_t per = fwd_scratch(a);
    float *scratch = gs_scratch_get(GS_SCRATCH_ATTENTION, sizeof(float) * per * nt);
    if (!scratch) return gs_fail(GS_ENOMEM, "out of memory for attention scratch");
#pragma omp parallel num_threads(nt)
    {
#ifdef _OPENMP
        float *KT = scratch + per * omp_get_thread_num();
#else
        float *KT = scratch;
#endif
        // KT (dh,Tk16) | S (Tq,Tk16) | Vp (Tk,Dp) | O (Tq,Dp) | f (Tk16); Dp = 0 for in-place heads
        float *S = KT + (size_t)dh * Tk16, *Vp = S + (size_t)Tq * Tk16, *O = Vp + (size_t)Tk * Dp;
        float *f = O + (size_t)Tq * Dp;
#pragma omp for schedule(static)
        for (int bh = 0; bh < B * H; bh++) {
            const int b = bh / H, h = bh % H;
            const int bkv = a->kv_group > 1 ? b / a->kv_group : b;
            const int32_t *km = a->key_mask ? a->key_mask + (size_t)bkv * Tk : NULL;
            const float *kb = k + bkv * kstride + h * dh, *vb = v + bkv * vstride + h * dh;
            const float *qb = q + (size_t)b * Tq * a->ldq + h * dh;
            // S (Tq,Tk16) = q_bh (Tq,dh) @ k_bh^T (dh,Tk16)
            pack_transposed(Tk, dh, kb, a->ldk, KT, Tk16);
            small_mm(Tq, Tk16, dh, qb, a->ldq, 1, KT, Tk16, S, Tk16);
            for (int i = 0; i < Tq; i++) {
                const float *bias = a->pos_bias ? a->pos_bias + ((size_t)h * Tq + i) * Tk : NULL;
                fwd_row(last_key(a, i) + 1, Tk, S + (size_t)i * Tk16, probs + ((size_t)bh * Tq + i) * Tk,
                        bias, km, a->scale, use_drop, key, thr, keep_scale, ((uint64_t)bh * Tq + i) * Tk, f);
            }
            // out_bh (Tq,dh) = dropout(P) (Tq,Tk) @ v_bh (Tk,dh)
            mm_head(small_mm, Tq, dh, Tk, S, Tk16, 1, vb, a->ldv, Vp,
                    out + (size_t)b * Tq * a->ldo + h * dh, a->ldo, O);
        }
    }
    gs_scratch_put(GS_SCRATCH_ATTENTION, scratch);
    return GS_OK;
}

int gs_attention_backward(const gs_attention_args *a, const float *q, const float *k,
                          const float *v, const float *probs, const float *dout, float *dscores,
                          float *dq, float *dk, float *dv, float *dpos_bias)
{
    const int B = a->B, H = a->H, Tq = a->Tq, Tk = a->Tk, dh = a->dh;
    const int Tk16 = round16(Tk);
    const size_t Dp = repack_cols(dh);
    const int use_drop = a->dropout_p > 0.0f;
    const uint32_t key = use_drop ? key32(stream_key(a->dropout_seed, a->dropout_stream)) : 0;
    const uint32_t thr = use_drop ? drop_threshold(a->dropout_p) : 0;
    const float keep_scale = use_drop ? 1.0f / (1.0f - a->dropout_p) : 1.0f;
    if (a->kv_batch_stride || a->kv_group > 1)
        return gs_fail(GS_EINVAL, "attention backward needs the training layout "
                       "(kv_batch_stride 0, kv_group <= 1)");
    const int nt = attn_threads(a);
    const small_mm_fn small_mm = pick_small_mm();
    const attn_bwd_row_fn bwd_row = attn_bwd_row_pick();
    const size_t per = bwd_scratch(a);
    float *scratch = gs_scratch_get(GS_SCRATCH_ATTENTION, sizeof(float) * per * nt);
    if (!scratch) return gs_fail(GS_ENOMEM, "out of memory for attention scratch");
#pragma omp parallel num_threads(nt)
    {
#ifdef _OPENMP
        float *VT = scratch + per * omp_get_thread_num();
#else
        float *VT = scratch;
#endif
        // VT (dh,Tk16) | dP, Pd (Tq,Tk16) | dOp, Qp (Tq,Dp) | Kp (Tk,Dp) | R (max(Tq,Tk),Dp) | f (Tk16)
        float *dP = VT + (size_t)dh * Tk16, *Pd = dP + (size_t)Tq * Tk16;
        float *dOp = Pd + (size_t)Tq * Tk16, *Qp = dOp + (size_t)Tq * Dp;
        float *Kp = Qp + (size_t)Tq * Dp, *R = Kp + (size_t)Tk * Dp;
        float *f = R + (size_t)(Tq > Tk ? Tq : Tk) * Dp;
#pragma omp for schedule(static)
        for (int bh = 0; bh < B * H; bh++) {
            const int b = bh / H, h = bh % H;
            const float *qb = q + (size_t)b * Tq * a->ldq + h * dh;
            const float *kb = k + (size_t)b * Tk * a->ldk + h * dh;
            const float *vb = v + (size_t)b * Tk * a->ldv + h * dh;
            const float *dob = dout + (size_t)b * Tq * a->ldo + h * dh;
            // dP (Tq,Tk16) = dout_bh (Tq,dh) @ v_bh^T (dh,Tk16)
            pack_transposed(Tk, dh, vb, a->ldv, VT, Tk16);
            small_mm(Tq, Tk16, dh, dob, a->ldo, 1, VT, Tk16, dP, Tk16);
            for (int i = 0; i < Tq; i++)
                bwd_row(last_key(a, i) + 1, Tk, probs + ((size_t)bh * Tq + i) * Tk, dP + (size_t)i * Tk16,
                        Pd + (size_t)i * Tk16, dscores + ((size_t)bh * Tq + i) * Tk, a->scale, use_drop, key,
                        thr, keep_scale, ((uint64_t)bh * Tq + i) * Tk, f);
            // dv_bh (Tk,dh) = Pd^T (Tk,Tq) @ dout_bh (Tq,dh)
            mm_head(small_mm, Tk, dh, Tq, Pd, 1, Tk16, dob, a->ldo, dOp,
                    dv + (size_t)b * Tk * a->ldv + h * dh, a->ldv, R);
            // dk_bh (Tk,dh) = dS^T (Tk,Tq) @ q_bh (Tq,dh)
            mm_head(small_mm, Tk, dh, Tq, dP, 1, Tk16, qb, a->ldq, Qp,
                    dk + (size_t)b * Tk * a->ldk + h * dh, a->ldk, R);
            // dq_bh (Tq,dh) = dS (Tq,Tk) @ k_bh (Tk,dh)
            mm_head(small_mm, Tq, dh, Tk, dP, Tk16, 1, kb, a->ldk, Kp,
                    dq + (size_t)b * Tq * a->ldq + h * dh, a->ldq, R);
        }
    }
    gs_scratch_put(GS_SCRATCH_ATTENTION, scratch);
    if (dpos_bias) {
        /* sum over b in order b = 0..B-1, blocks of 256 elements per task */
        const size_t per_batch = (size_t)H * Tq * Tk, nblk = (per_batch + 255) / 256;
#pragma omp parallel for schedule(static) num_threads(gs_num_threads()) if (per_batch * B > 65536)
        for (size_t blk = 0; blk < nblk; blk++) {
            size_t e0 = blk * 256, e1 = e0 + 256 < per_batch ? e0 + 256 : per_batch;
            float acc[256];
            for (size_t e = e0; e < e1; e++) acc[e - e0] = 0.0f;
            for (int b = 0; b < B; b++) {
                const float *d = dscores + (size_t)b * per_batch;
                for (size_t e = e0; e < e1; e++) acc[e - e0] += d[e];
            }
            for (size_t e = e0; e < e1; e++) dpos_bias[e] += acc[e - e0];
        }
    }
    return GS_OK;
}

/* ------------------------------------------------- T5 relative position bias */

int gs_t5_relative_bucket(int relative_position, int bidirectional, int num_buckets,
                          int max_distance)
{
    int bucket = 0, n = relative_position;
    if (bidirectional) {
        num_buckets /= 2;
        if (n > 0) bucket += num_buckets;
        n = n < 0 ? -n : n;
    } else {
        n = n < 0 ? -n : 0; /* future keys (n > 0) share bucket 0 */
    }
    const int max_exact = num_buckets / 2;
    if (n < max_exact) return bucket + n;
    /* float32 arithmetic in the order HF's torch code uses, so boundary
     * offsets land in the same bucket */
    float lg = logf((float)n / (float)max_exact) / (float)log((double)max_distance / max_exact) *
               (float)(num_buckets - max_exact);
    int large = max_exact + (int)lg;
    if (large > num_buckets - 1) large = num_buckets - 1;
    return bucket + large;
}

/* The bucket of every relative position rel = j - (q0 + i) of a (Tq, Tk) bias, at
 * out[rel + q0 + Tq - 1]: a bucket depends on rel alone, so Tq + Tk - 1 logf calls
 * instead of one per (i, j) pair (which cost more than a one-input encoder's
 * attention). NULL when out of memory: callers then compute each pair's bucket. */
static int *relative_buckets(int Tq, int Tk, int q0, int bidirectional, int num_buckets, int max_distance)
{
    const int lo = -(q0 + Tq - 1), n = Tk - 1 - lo + 1;
    int *out = gs_alloc(sizeof(int) * (size_t)n);
    if (out)
        for (int r = 0; r < n; r++)
            out[r] = gs_t5_relative_bucket(r + lo, bidirectional, num_buckets, max_distance);
    return out;
}

#define BUCKET(i, j)                                                                                   \
    (buckets ? buckets[(j) - (q0 + (i)) + q0 + Tq - 1]                                                 \
             : gs_t5_relative_bucket((j) - (q0 + (i)), bidirectional, num_buckets, max_distance))

void gs_relative_bias_forward(int H, int Tq, int Tk, int q0, int bidirectional, int num_buckets,
                              int max_distance, const float *table, float *bias)
{
    int *buckets = relative_buckets(Tq, Tk, q0, bidirectional, num_buckets, max_distance);
#pragma omp parallel for schedule(static) num_threads(gs_num_threads()) if ((size_t)Tq * Tk > 4096)
    for (int i = 0; i < Tq; i++)
        for (int h = 0; h < H; h++) {
            float *row = bias + ((size_t)h * Tq + i) * Tk;
            for (int j = 0; j < Tk; j++) row[j] = table[BUCKET(i, j) * H + h];
        }
    gs_free(buckets);
}

void gs_relative_bias_backward(int H, int Tq, int Tk, int q0, int bidirectional, int num_buckets,
                               int max_distance, const float *dbias, float *dtable)
{
    int *buckets = relative_buckets(Tq, Tk, q0, bidirectional, num_buckets, max_distance);
    /* many (i,j) share a bucket: one thread per head, (i,j) in order */
#pragma omp parallel for schedule(static) num_threads(gs_num_threads()) if ((size_t)Tq * Tk > 4096)
    for (int h = 0; h < H; h++)
        for (int i = 0; i < Tq; i++)
            for (int j = 0; j < Tk; j++)
                dtable[BUCKET(i, j) * H + h] += dbias[((size_t)h * Tq + i) * Tk + j];
    gs_free(buckets);
}
#undef BUCKET

/* ------------------------------------------------------------ cross-entropy */

/* log(sum_j exp(x_j)) of one row, stable; the exponentials are the vector
 * kernel's (no libm call per element). */
static float row_logsumexp(const float *x, int V)
{
    float mx = -INFINITY;
    for (int j = 0; j < V; j++) mx = x[j] > mx ? x[j] : mx;
    if (!(mx > -INFINITY && mx < INFINITY)) return mx; /* NaN or +-inf: the loss says so */
    return mx + logf(gs_exp_shifted(V, x, mx, NULL));
}

int gs_cross_entropy_forward(size_t N, int V, const float *logits, const int32_t *targets,
                             int ignore_index, float *row_loss, double *loss_sum, size_t *count)
{
    for (size_t n = 0; n < N; n++)
        if (targets[n] != ignore_index && (targets[n] < 0 || targets[n] >= V))
            return gs_fail(GS_EINVAL,
                           "target %zu is %d: targets must be in [0, %d) or the ignore index %d", n,
                           (int)targets[n], V, ignore_index);
#pragma omp parallel for schedule(static) num_threads(gs_num_threads()) if (N * (size_t)V > 32768)
    for (size_t n = 0; n < N; n++) {
        if (targets[n] == ignore_index) {
            row_loss[n] = 0.0f;
            continue;
        }
        const float *x = logits + n * V;
        row_loss[n] = row_logsumexp(x, V) - x[targets[n]];
    }
    double s = 0.0;
    size_t c = 0;
    for (size_t n = 0; n < N; n++) {
        s += row_loss[n];
        c += targets[n] != ignore_index;
    }
    *loss_sum = s;
    *count = c;
    return GS_OK;
}

void gs_cross_entropy_backward(size_t N, int V, const float *logits, const int32_t *targets,
                               int ignore_index, float scale, float *dlogits)
{
#pragma omp parallel for schedule(static) num_threads(gs_num_threads()) if (N * (size_t)V > 32768)
    for (size_t n = 0; n < N; n++) {
        const float *x = logits + n * V;
        float *dx = dlogits + n * V;
        if (targets[n] == ignore_index) {
            memset(dx, 0, sizeof(float) * V);
            continue;
        }
        float lse = row_logsumexp(x, V);
        gs_exp_shifted(V, x, lse, dx); /* softmax: x - lse <= 0 */
        for (int j = 0; j < V; j++) dx[j] *= scale;
        dx[targets[n]] -= scale;
    }
}

/* Rows r0..r1 of the cross-entropy: each row's loss and d(mean loss)/dlogits (scale =
 * 1 / counted rows). Compiled per ISA (GS_MULTIVERSION) so the max and scaling loops are
 * vector loops; dlogits may be logits (each row's target logit is read first). */
GS_INLINE void ce_rows_body(size_t r0, size_t r1, int V, const float *logits, const int32_t *targets,
                            int ignore_index, float scale, float *row_loss, float *dlogits)
{
    for (size_t n = r0; n < r1; n++) {
        const float *x = logits + n * V;
        float *dx = dlogits + n * V;
        if (targets[n] == ignore_index) {
            row_loss[n] = 0.0f;
            memset(dx, 0, sizeof(float) * V);
            continue;
        }
        const float xt = x[targets[n]]; /* read before dx (which may be x) is written */
        float mx = -INFINITY;
#pragma omp simd reduction(max : mx)
        for (int j = 0; j < V; j++) mx = x[j] > mx ? x[j] : mx;
        if (!(mx > -INFINITY && mx < INFINITY)) { /* NaN or inf logits: say so, do not train on them */
            row_loss[n] = NAN;
            for (int j = 0; j < V; j++) dx[j] = NAN;
            continue;
        }
        const float sum = gs_exp_shifted(V, x, mx, dx); /* dx = exp(x - max) */
        row_loss[n] = mx + logf(sum) - xt;
        const float k = scale / sum;
        for (int j = 0; j < V; j++) dx[j] *= k;
        dx[targets[n]] -= scale;
    }
}
GS_MULTIVERSION(ce_rows, (size_t r0, size_t r1, int V, const float *logits, const int32_t *targets,
                          int ignore_index, float scale, float *row_loss, float *dlogits),
                (r0, r1, V, logits, targets, ignore_index, scale, row_loss, dlogits))

int gs_cross_entropy_forward_backward(size_t N, int V, const float *logits, const int32_t *targets,
                                      int ignore_index, float *row_loss, double *loss_sum, size_t *count,
                                      float *dlogits)
{
    size_t c = 0;
    for (size_t n = 0; n < N; n++) {
        if (targets[n] == ignore_index) continue;
        if (targets[n] < 0 || targets[n] >= V)
            return gs_fail(GS_EINVAL,
                           "target %zu is %d: targets must be in [0, %d) or the ignore index %d", n,
                           (int)targets[n], V, ignore_index);
        c++;
    }
    const float scale = c ? 1.0f / (float)c : 0.0f;
    const ce_rows_fn rows = ce_rows_pick();
    /* one row per chunk: rows are independent, so the result does not depend on threads */
    GS_FOR_CHUNKS(N, 1, 32768 / (V > 0 ? V : 1), r0, r1,
                  rows(r0, r1, V, logits, targets, ignore_index, scale, row_loss, dlogits));
    double s = 0.0;
    for (size_t n = 0; n < N; n++) s += row_loss[n];
    *loss_sum = s;
    *count = c;
    return GS_OK;
}
