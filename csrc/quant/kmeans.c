#include "kmeans.h"

#include <float.h>
#include <math.h>
#include <string.h>

#include "../common.h"
#include "../tensor/gemm.h"
#include "rng.h"

/* Sums of many doubles in fixed-size chunks added in order: the result does
 * not depend on the number of threads. */
enum { SUM_CHUNK = 4096 };

static double sum_fixed_order(size_t n, const float *v, double *partial)
{
    size_t nchunks = (n + SUM_CHUNK - 1) / SUM_CHUNK;
#pragma omp parallel for schedule(static) num_threads(gs_num_threads()) if (nchunks > 4)
    for (size_t c = 0; c < nchunks; c++) {
        size_t end = (c + 1) * SUM_CHUNK < n ? (c + 1) * SUM_CHUNK : n;
        double s = 0.0;
        for (size_t i = c * SUM_CHUNK; i < end; i++) s += v[i];
        partial[c] = s;
    }
    double total = 0.0;
    for (size_t c = 0; c < nchunks; c++) total += partial[c];
    return total;
}

// x (N,d) -> sq (N): squared L2 norm of each row
static void row_sqnorms(size_t N, int d, const float *x, float *sq)
{
#pragma omp parallel for schedule(static) num_threads(gs_num_threads()) if (N * d > (1 << 18))
    for (size_t i = 0; i < N; i++) {
        const float *r = x + i * d;
        float s = 0.0f;
        for (int j = 0; j < d; j++) s += r[j] * r[j];
        sq[i] = s;
    }
}

int gs_nearest_centroid(size_t N, int d, const float *x, int K, const float *C, int32_t *labels,
                        float *dist2)
{
    if (N == 0) return GS_OK;
    if (K < 1 || d < 1) return gs_fail(GS_EINVAL, "nearest centroid: need K >= 1 and d >= 1");
    /* Rows per block: the dot-product block (rows, K) stays around 4 MB. */
    size_t rows = (size_t)(1 << 20) / (size_t)K;
    if (rows < 64) rows = 64;
    if (rows > N) rows = N;
    float *dots = gs_alloc(sizeof(float) * rows * K);
    float *cn = gs_alloc(sizeof(float) * K);
    float *xn = gs_alloc(sizeof(float) * rows);
    if (!dots || !cn || !xn) {
        gs_free(dots), gs_free(cn), gs_free(xn);
        return gs_fail(GS_ENOMEM, "nearest centroid: out of memory for a %zu x %d block", rows, K);
    }
    row_sqnorms((size_t)K, d, C, cn);
    for (size_t r0 = 0; r0 < N; r0 += rows) {
        size_t R = N - r0 < rows ? N - r0 : rows;
        const float *xb = x + r0 * d;
        row_sqnorms(R, d, xb, xn);
        // xb (R,d) @ C^T (d,K) -> dots (R,K)
        gs_sgemm(0, 1, (int)R, K, d, 1.0f, xb, d, C, d, 0.0f, dots, K);
#pragma omp parallel for schedule(static) num_threads(gs_num_threads()) if (R * K > (1 << 18))
        for (size_t i = 0; i < R; i++) {
            const float *dr = dots + i * K;
            float best = FLT_MAX;
            int arg = 0;
            for (int c = 0; c < K; c++) {
                float v = cn[c] - 2.0f * dr[c]; /* ||x||^2 is the same for every c */
                if (v < best) best = v, arg = c;
            }
            labels[r0 + i] = arg;
            if (dist2) {
                float dd = best + xn[i];
                dist2[r0 + i] = dd > 0.0f ? dd : 0.0f;
            }
        }
    }
    gs_free(dots), gs_free(cn), gs_free(xn);
    return GS_OK;
}

/* Greedy k-means++ (Arthur & Vassilvitskii, with 2 + ln k candidate draws per
 * centre keeping the one that lowers the potential most, as scikit-learn does).
 * Work buffers: closest (N), cand_d2 (N * T), xn (N), partial (chunks). */
static int kmeanspp(size_t N, int d, const float *x, int k, gs_rng *rng, float *centroids)
{
    int trials = 2 + (int)log((double)k);
    size_t nchunks = (N + SUM_CHUNK - 1) / SUM_CHUNK;
    float *closest = gs_alloc(sizeof(float) * N);
    float *dots = gs_alloc(sizeof(float) * N * trials);
    float *xn = gs_alloc(sizeof(float) * N);
    float *cand = gs_alloc(sizeof(float) * (size_t)trials * d);
    float *cn = gs_alloc(sizeof(float) * trials);
    double *partial = gs_alloc(sizeof(double) * (nchunks * trials + 1));
    size_t *cand_idx = gs_alloc(sizeof(size_t) * trials);
    if (!closest || !dots || !xn || !cand || !cn || !partial || !cand_idx) {
        gs_free(closest), gs_free(dots), gs_free(xn), gs_free(cand), gs_free(cn), gs_free(partial),
            gs_free(cand_idx);
        return gs_fail(GS_ENOMEM, "k-means++: out of memory (N=%zu)", N);
    }
    row_sqnorms(N, d, x, xn);
    size_t first = (size_t)gs_rng_below(rng, N);
    memcpy(centroids, x + first * d, sizeof(float) * d);
    // closest (N): squared distance of each point to its nearest chosen centre
    {
        float c0 = xn[first];
        gs_sgemm(0, 1, (int)N, 1, d, 1.0f, x, d, centroids, d, 0.0f, dots, 1);
#pragma omp parallel for schedule(static) num_threads(gs_num_threads()) if (N > (1 << 17))
        for (size_t i = 0; i < N; i++) {
            float v = xn[i] - 2.0f * dots[i] + c0;
            closest[i] = v > 0.0f ? v : 0.0f;
        }
    }
    double pot = sum_fixed_order(N, closest, partial);
    for (int c = 1; c < k; c++) {
        /* draw candidates proportionally to closest[] by a linear scan of the
         * running sum (the scan is serial, so its order is fixed) */
        for (int t = 0; t < trials; t++) {
            double target = gs_rng_uniform(rng) * pot, run = 0.0;
            size_t pick = N - 1;
            for (size_t i = 0; i < N; i++) {
                run += closest[i];
                if (run > target) {
                    pick = i;
                    break;
                }
            }
            if (pot <= 0.0) pick = (size_t)gs_rng_below(rng, N); /* all points covered */
            cand_idx[t] = pick;
            memcpy(cand + (size_t)t * d, x + pick * d, sizeof(float) * d);
            cn[t] = xn[pick];
        }
        // x (N,d) @ cand^T (d,T) -> dots (N,T)
        gs_sgemm(0, 1, (int)N, trials, d, 1.0f, x, d, cand, d, 0.0f, dots, trials);
        /* potential if candidate t were added, chunk partials summed in order */
#pragma omp parallel for schedule(static) num_threads(gs_num_threads()) if (nchunks > 4)
        for (size_t ch = 0; ch < nchunks; ch++) {
            size_t end = (ch + 1) * SUM_CHUNK < N ? (ch + 1) * SUM_CHUNK : N;
            for (int t = 0; t < trials; t++) {
                double s = 0.0;
                for (size_t i = ch * SUM_CHUNK; i < end; i++) {
                    float v = xn[i] - 2.0f * dots[i * trials + t] + cn[t];
                    v = v > 0.0f ? v : 0.0f;
                    s += v < closest[i] ? v : closest[i];
                }
                partial[(size_t)t * nchunks + ch] = s;
            }
        }
        int best = 0;
        double best_pot = DBL_MAX;
        for (int t = 0; t < trials; t++) {
            double s = 0.0;
            for (size_t ch = 0; ch < nchunks; ch++) s += partial[(size_t)t * nchunks + ch];
            if (s < best_pot) best_pot = s, best = t;
        }
        memcpy(centroids + (size_t)c * d, cand + (size_t)best * d, sizeof(float) * d);
#pragma omp parallel for schedule(static) num_threads(gs_num_threads()) if (N > (1 << 17))
        for (size_t i = 0; i < N; i++) {
            float v = xn[i] - 2.0f * dots[i * trials + best] + cn[best];
            v = v > 0.0f ? v : 0.0f;
            if (v < closest[i]) closest[i] = v;
        }
        pot = sum_fixed_order(N, closest, partial);
    }
    gs_free(closest), gs_free(dots), gs_free(xn), gs_free(cand), gs_free(cn), gs_free(partial),
        gs_free(cand_idx);
    return GS_OK;
}

/* Recomputes centroids (k,d) as the mean of their points; sums in double, one
 * dimension range per thread walking the points in order (thread-count
 * independent). counts (k) is filled. sums: k*d doubles of scratch. */
static void update_centroids(size_t N, int d, const float *x, int k, const int32_t *labels,
                             double *sums, int64_t *counts, float *centroids)
{
    memset(sums, 0, sizeof(double) * (size_t)k * d);
    memset(counts, 0, sizeof(int64_t) * k);
    for (size_t i = 0; i < N; i++) counts[labels[i]]++;
#pragma omp parallel for schedule(static) num_threads(gs_num_threads()) if (N * d > (1 << 18))
    for (int j = 0; j < d; j++)
        for (size_t i = 0; i < N; i++) sums[(size_t)labels[i] * d + j] += x[i * d + j];
    for (int c = 0; c < k; c++)
        if (counts[c] > 0)
            for (int j = 0; j < d; j++)
                centroids[(size_t)c * d + j] = (float)(sums[(size_t)c * d + j] / counts[c]);
}

/* Empty clusters take the points farthest from their centroid (as in
 * scikit-learn): each empty cluster gets a distinct point, which leaves its old
 * cluster. Returns how many clusters were repaired. */
static int repair_empty(size_t N, int d, const float *x, int k, int32_t *labels, float *dist2,
                        int64_t *counts, float *centroids)
{
    int repaired = 0;
    for (int c = 0; c < k; c++) {
        if (counts[c] > 0) continue;
        size_t far = 0;
        float fd = -1.0f;
        for (size_t i = 0; i < N; i++)
            if (dist2[i] > fd && counts[labels[i]] > 1) fd = dist2[i], far = i;
        if (fd < 0.0f) break; /* every cluster is a singleton: cannot happen when N >= k */
        counts[labels[far]]--;
        labels[far] = c;
        counts[c] = 1;
        dist2[far] = 0.0f;
        memcpy(centroids + (size_t)c * d, x + far * d, sizeof(float) * d);
        repaired++;
    }
    return repaired;
}

int gs_check_points(size_t N, int d, const float *x, const char *what)
{
    /* ||a - b||^2 <= 2 ||a||^2 + 2 ||b||^2: rows whose squared norm stays
     * below FLT_MAX / 8 keep every squared distance between them (and to
     * their means) finite in float. */
    const double limit = (double)FLT_MAX / 8.0;
    size_t bad_row = SIZE_MAX, big_row = SIZE_MAX;
    double big = 0.0;
    for (size_t i = 0; i < N && bad_row == SIZE_MAX; i++) {
        const float *r = x + i * d;
        double s = 0.0;
        for (int j = 0; j < d; j++) {
            if (!isfinite(r[j])) {
                bad_row = i;
                break;
            }
            s += (double)r[j] * r[j];
        }
        if (s > big) big = s, big_row = i;
    }
    if (bad_row != SIZE_MAX)
        return gs_fail(GS_EINVAL, "%s: row %zu contains NaN or infinite values", what, bad_row);
    if (big > limit)
        return gs_fail(GS_EINVAL,
                       "%s: row %zu has squared norm %.3g, too large for float squared distances "
                       "(limit %.3g); standardise the data first (e.g. divide by its scale)",
                       what, big_row, big, limit);
    return GS_OK;
}

static double exact_inertia(size_t N, int d, const float *x, const float *C, const int32_t *labels,
                            float *per_point, double *partial)
{
#pragma omp parallel for schedule(static) num_threads(gs_num_threads()) if (N * d > (1 << 18))
    for (size_t i = 0; i < N; i++) {
        const float *r = x + i * d, *c = C + (size_t)labels[i] * d;
        double s = 0.0;
        for (int j = 0; j < d; j++) {
            double t = (double)r[j] - c[j];
            s += t * t;
        }
        per_point[i] = (float)s;
    }
    return sum_fixed_order(N, per_point, partial);
}

int gs_kmeans(size_t N, int d, const float *x, int k, int n_init, int max_iter, double tol,
              uint64_t seed, const float *init, float *centroids, int32_t *labels,
              double *inertia)
{
    if (k < 1) return gs_fail(GS_EINVAL, "k-means: k must be >= 1, got %d", k);
    if (d < 1) return gs_fail(GS_EINVAL, "k-means: dimension must be >= 1, got %d", d);
    if (N < (size_t)k)
        return gs_fail(GS_EINVAL,
                       "k-means: %zu points cannot fill %d clusters; use k <= number of points",
                       N, k);
    if (n_init < 1) return gs_fail(GS_EINVAL, "k-means: n_init must be >= 1, got %d", n_init);
    if (max_iter < 1) return gs_fail(GS_EINVAL, "k-means: max_iter must be >= 1, got %d", max_iter);
    if (!(tol >= 0.0) || !isfinite(tol))
        return gs_fail(GS_EINVAL, "k-means: tol must be a finite number >= 0");
    int st0 = gs_check_points(N, d, x, "k-means: x");
    if (st0 != GS_OK) return st0;
    if (init && (st0 = gs_check_points((size_t)k, d, init, "k-means: init")) != GS_OK) return st0;

    size_t nchunks = (N + SUM_CHUNK - 1) / SUM_CHUNK;
    float *C = gs_alloc(sizeof(float) * (size_t)k * d);
    float *Cold = gs_alloc(sizeof(float) * (size_t)k * d);
    int32_t *lab = gs_alloc(sizeof(int32_t) * N);
    float *dist2 = gs_alloc(sizeof(float) * N);
    double *sums = gs_alloc(sizeof(double) * (size_t)k * d);
    int64_t *counts = gs_alloc(sizeof(int64_t) * k);
    double *partial = gs_alloc(sizeof(double) * (nchunks + 1));
    int status = GS_OK;
    if (!C || !Cold || !lab || !dist2 || !sums || !counts || !partial) {
        status = gs_fail(GS_ENOMEM, "k-means: out of memory (N=%zu, d=%d, k=%d)", N, d, k);
        goto done;
    }
    /* tolerance relative to the data's spread, as scikit-learn */
    double var_sum = 0.0;
    for (int j = 0; j < d; j++) {
        double m = 0.0, m2 = 0.0;
        for (size_t i = 0; i < N; i++) m += x[i * d + j];
        m /= (double)N;
        for (size_t i = 0; i < N; i++) {
            double t = x[i * d + j] - m;
            m2 += t * t;
        }
        var_sum += m2 / (double)N;
    }
    double tol_abs = tol * var_sum / d;

    uint64_t seed_state = seed;
    double best = DBL_MAX;
    for (int run = 0; run < n_init; run++) {
        gs_rng rng;
        gs_rng_seed(&rng, gs_splitmix64(&seed_state));
        if (init) {
            memcpy(C, init, sizeof(float) * (size_t)k * d);
            n_init = 1;
        } else if ((status = kmeanspp(N, d, x, k, &rng, C)) != GS_OK)
            goto done;
        for (int it = 0; it < max_iter; it++) {
            if ((status = gs_nearest_centroid(N, d, x, k, C, lab, dist2)) != GS_OK) goto done;
            memcpy(Cold, C, sizeof(float) * (size_t)k * d);
            update_centroids(N, d, x, k, lab, sums, counts, C);
            repair_empty(N, d, x, k, lab, dist2, counts, C);
            double shift = 0.0;
            for (size_t i = 0; i < (size_t)k * d; i++) {
                double t = (double)C[i] - Cold[i];
                shift += t * t;
            }
            if (shift <= tol_abs) break;
        }
        /* final labels for the final centroids, exact inertia */
        if ((status = gs_nearest_centroid(N, d, x, k, C, lab, dist2)) != GS_OK) goto done;
        double in = exact_inertia(N, d, x, C, lab, dist2, partial);
        if (!isfinite(in)) { /* cannot happen after gs_check_points; never return garbage */
            status = gs_fail(GS_ERUNTIME, "k-means: the inertia is not finite (%g)", in);
            goto done;
        }
        if (run == 0 || in < best) { /* the first run always writes its result */
            best = in;
            memcpy(centroids, C, sizeof(float) * (size_t)k * d);
            if (labels) memcpy(labels, lab, sizeof(int32_t) * N);
        }
    }
    if (inertia) *inertia = best;
done:
    gs_free(C), gs_free(Cold), gs_free(lab), gs_free(dist2), gs_free(sums), gs_free(counts),
        gs_free(partial);
    return status;
}
