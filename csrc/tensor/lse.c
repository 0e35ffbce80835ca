/* log-sum-exp over a row, and fused with the LM head (see lse.h). */
#include "lse.h"

#include <math.h>

#include "../common.h"
#include "simd.h"

/* One row's (or one chunk's) part of a log-sum-exp: its maximum m, whether it
 * holds a NaN, and s = sum exp(x - m) (left 0 when m is not finite). */
typedef struct {
    float max;
    int nan;
    double sum;
} lse_part;

static lse_part part_generic(const float *x, int n)
{
    lse_part p = {x[0], isnan(x[0]), 0.0};
    for (int i = 1; i < n; i++) {
        p.max = x[i] > p.max ? x[i] : p.max;
        p.nan |= isnan(x[i]);
    }
    if (p.nan || !isfinite(p.max)) return p;
    for (int i = 0; i < n; i++) p.sum += exp((double)x[i] - (double)p.max);
    return p;
}

#ifdef GS_HAVE_AVX2_PATH
GS_TARGET_AVX2 static lse_part part_avx2(const float *x, int n)
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
    lse_part p = {lanes[0], _mm256_movemask_ps(vnan) != 0, 0.0};
    for (int j = 1; j < 8; j++) p.max = lanes[j] > p.max ? lanes[j] : p.max;
    for (int j = i; j < n; j++) {
        p.max = x[j] > p.max ? x[j] : p.max;
        p.nan |= isnan(x[j]);
    }
    if (p.nan || !isfinite(p.max)) return p;
    /* sum of exp(x - m) in double lanes: each term is in (0, 1] and the float
     * terms carry ~1e-7 relative error, so the sum is good to ~1e-7. */
    __m256 vm = _mm256_set1_ps(p.max);
    __m256d acc_lo = _mm256_setzero_pd(), acc_hi = _mm256_setzero_pd();
    for (i = 0; i + 8 <= n; i += 8) {
        __m256 e = gs_exp_nonpositive_avx2(_mm256_sub_ps(_mm256_loadu_ps(x + i), vm));
        acc_lo = _mm256_add_pd(acc_lo, _mm256_cvtps_pd(_mm256_castps256_ps128(e)));
        acc_hi = _mm256_add_pd(acc_hi, _mm256_cvtps_pd(_mm256_extractf128_ps(e, 1)));
    }
    double parts[4];
    _mm256_storeu_pd(parts, _mm256_add_pd(acc_lo, acc_hi));
    p.sum = (parts[0] + parts[1]) + (parts[2] + parts[3]);
    for (; i < n; i++) p.sum += exp((double)x[i] - (double)p.max);
    return p;
}
#endif

#ifdef GS_HAVE_AVX512_PATH
GS_TARGET_AVX512 static lse_part part_avx512(const float *x, int n)
{
    __m512 vmax = _mm512_set1_ps(-INFINITY);
    __mmask16 nan = 0;
    for (int i = 0; i < n; i += 16) {
        __mmask16 m = n - i >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (n - i)) - 1u);
        __m512 v = _mm512_mask_loadu_ps(_mm512_set1_ps(-INFINITY), m, x + i);
        vmax = _mm512_max_ps(vmax, v);
        nan |= _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
    }
    lse_part p = {_mm512_reduce_max_ps(vmax), nan != 0, 0.0};
    if (p.nan || !isfinite(p.max)) return p;
    /* sum of exp(x - m) in double lanes (see part_avx2); padding lanes add 0 */
    const __m512 vm = _mm512_set1_ps(p.max);
    __m512d acc_lo = _mm512_setzero_pd(), acc_hi = _mm512_setzero_pd();
    for (int i = 0; i < n; i += 16) {
        __mmask16 m = n - i >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (n - i)) - 1u);
        __m512 v = _mm512_maskz_loadu_ps(m, x + i);
        __m512 e = _mm512_maskz_mov_ps(m, gs_exp_nonpositive_avx512(_mm512_sub_ps(v, vm)));
        acc_lo = _mm512_add_pd(acc_lo, _mm512_cvtps_pd(_mm512_castps512_ps256(e)));
        acc_hi = _mm512_add_pd(acc_hi, _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(e), 1))));
    }
    p.sum = _mm512_reduce_add_pd(_mm512_add_pd(acc_lo, acc_hi));
    return p;
}
#endif

typedef lse_part (*part_fn)(const float *, int);

static part_fn select_part(void)
{
#ifdef GS_HAVE_AVX512_PATH
    if (gs_isa() == GS_ISA_AVX512) return part_avx512;
#endif
#ifdef GS_HAVE_AVX2_PATH
    if (gs_isa() >= GS_ISA_AVX2) return part_avx2;
#endif
    return part_generic;
}

/* Combines parts in the given order: log sum over all of them. */
static double combine(const lse_part *parts, size_t n_parts, size_t stride)
{
    float m = -INFINITY;
    for (size_t c = 0; c < n_parts; c++) {
        const lse_part *p = parts + c * stride;
        if (p->nan) return NAN;
        m = p->max > m ? p->max : m;
    }
    if (!isfinite(m)) return m;
    double s = 0.0;
    for (size_t c = 0; c < n_parts; c++) {
        const lse_part *p = parts + c * stride;
        if (p->max > -INFINITY) s += p->sum * exp((double)p->max - (double)m);
    }
    return (double)m + log(s);
}

double gs_log_sum_exp(const float *x, int n)
{
    lse_part p = select_part()(x, n);
    return combine(&p, 1, 1);
}

/* Tile sizes: a (ROWS_PER_TILE x VOCAB_CHUNK) float tile is 240 KB, within L2,
 * so the exponentials read it back from cache. ROWS_PER_TILE is a multiple of every
 * SGEMM kernel's rows (6 and 12): with 64, each tile's last kernel call multiplied
 * 12 rows for 4 (beam search's 240 live rows: 264 multiplied for 240). */
#define ROWS_PER_TILE 60
#define VOCAB_CHUNK 1024

int gs_linear_log_sum_exp(size_t n, const float *A, const gs_packed_b *W, double *lse)
{
    if (n == 0) return GS_OK;
    const int C = W->K, V = W->N;
    part_fn part = select_part();
    const size_t n_chunks = ((size_t)V + VOCAB_CHUNK - 1) / VOCAB_CHUNK;
    const size_t n_rowblocks = (n + ROWS_PER_TILE - 1) / ROWS_PER_TILE;
    const int nthreads = gs_num_threads();
    lse_part *parts = gs_alloc(sizeof *parts * n_chunks * n);       /* (chunk, row) */
    float *tiles = gs_alloc(sizeof(float) * (size_t)nthreads * ROWS_PER_TILE * VOCAB_CHUNK);
    if (!parts || !tiles) {
        gs_free(parts);
        gs_free(tiles);
        return gs_fail(GS_ENOMEM, "out of memory for the LM head of %zu rows", n);
    }
    int failed = 0;
    /* Chunk-major order: consecutive tiles of one thread share W's chunk. Each
     * product runs on its calling thread (nested parallel regions get 1 thread). */
#pragma omp parallel for schedule(static) num_threads(nthreads) reduction(| : failed)
    for (size_t tile = 0; tile < n_chunks * n_rowblocks; tile++) {
        size_t chunk = tile / n_rowblocks, r0 = (tile % n_rowblocks) * ROWS_PER_TILE;
        int v0 = (int)(chunk * VOCAB_CHUNK), nv = V - v0 < VOCAB_CHUNK ? V - v0 : VOCAB_CHUNK;
        int nr = n - r0 < ROWS_PER_TILE ? (int)(n - r0) : ROWS_PER_TILE;
        float *buf = tiles + (size_t)gs_thread_id() * ROWS_PER_TILE * VOCAB_CHUNK;
        if (gs_sgemm_packed_b(nr, nv, A + r0 * C, C, W, v0, buf, nv)) {
            failed = 1;
            continue;
        }
        for (int i = 0; i < nr; i++) parts[chunk * n + r0 + i] = part(buf + (size_t)i * nv, nv);
    }
    if (failed) {
        gs_free(parts);
        gs_free(tiles);
        return gs_fail(GS_ENOMEM, "out of memory in the LM head of %zu rows", n);
    }
#pragma omp parallel for schedule(static) num_threads(nthreads) if (n > 64)
    for (size_t i = 0; i < n; i++) lse[i] = combine(parts + i, n_chunks, n);
    gs_free(parts);
    gs_free(tiles);
    return GS_OK;
}

const char *gs_log_sum_exp_kernel_name(void) { return gs_isa_name(gs_isa()); }
