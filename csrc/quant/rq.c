#include "rq.h"

#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../common.h"
#include "kmeans.h"
#include "rng.h"

int gs_rq_levels(const gs_rq_config *cfg, gs_rq_level *levels, int *n_levels,
                 size_t *codebook_floats)
{
    if (cfg->n_towers != 1 && cfg->n_towers != 2)
        return gs_fail(GS_EINVAL, "quantiser: n_towers must be 1 or 2, got %d", cfg->n_towers);
    if (cfg->n_shared < 0 || cfg->n_shared > GS_RQ_MAX_LEVELS || cfg->n_specific < 0 ||
        cfg->n_specific > GS_RQ_MAX_LEVELS)
        return gs_fail(GS_EINVAL, "quantiser: between 0 and %d shared and specific levels allowed",
                       GS_RQ_MAX_LEVELS);
    if (cfg->n_shared + cfg->n_specific < 1)
        return gs_fail(GS_EINVAL, "quantiser: at least one level is needed");
    int D = 0;
    for (int t = 0; t < cfg->n_towers; t++) {
        if (cfg->dim[t] < 1)
            return gs_fail(GS_EINVAL, "quantiser: tower %d has width %d", t, cfg->dim[t]);
        D += cfg->dim[t];
    }
    int n = 0;
    size_t off = 0;
    for (int l = 0; l < cfg->n_shared; l++) {
        if (cfg->shared_k[l] < 1)
            return gs_fail(GS_EINVAL, "quantiser: shared level %d has %d codes", l, cfg->shared_k[l]);
        levels[n] = (gs_rq_level){cfg->shared_k[l], D, 0, -1, off};
        off += (size_t)cfg->shared_k[l] * D;
        n++;
    }
    for (int t = 0, col = 0; t < cfg->n_towers; col += cfg->dim[t], t++)
        for (int l = 0; l < cfg->n_specific; l++) {
            if (cfg->specific_k[l] < 1)
                return gs_fail(GS_EINVAL, "quantiser: specific level %d has %d codes", l,
                               cfg->specific_k[l]);
            levels[n] = (gs_rq_level){cfg->specific_k[l], cfg->dim[t], col, t, off};
            off += (size_t)cfg->specific_k[l] * cfg->dim[t];
            n++;
        }
    *n_levels = n;
    if (codebook_floats) *codebook_floats = off;
    return GS_OK;
}

int gs_rq_encode(const gs_rq_config *cfg, const float *codebooks, size_t N, const float *z,
                 int32_t *codes, float *zq, float **level_in)
{
    gs_rq_level lv[GS_RQ_MAX_TOTAL];
    int nL;
    int st = gs_rq_levels(cfg, lv, &nL, NULL);
    if (st != GS_OK) return st;
    int D = cfg->dim[0] + (cfg->n_towers == 2 ? cfg->dim[1] : 0);
    float *r = gs_alloc(sizeof(float) * N * D);
    float *scratch = gs_alloc(sizeof(float) * N * D);
    int32_t *lab = gs_alloc(sizeof(int32_t) * N);
    if (!r || !scratch || !lab) {
        gs_free(r), gs_free(scratch), gs_free(lab);
        return gs_fail(GS_ENOMEM, "quantiser: out of memory encoding %zu items", N);
    }
    memcpy(r, z, sizeof(float) * N * D);
    if (zq) memset(zq, 0, sizeof(float) * N * D);
    for (int l = 0; l < nL && st == GS_OK; l++) {
        const gs_rq_level *L = &lv[l];
        float *in = (level_in && level_in[l]) ? level_in[l] : scratch;
        // residual slice r[:, col:col+width] -> in (N,width), contiguous for the distance GEMM
#pragma omp parallel for schedule(static) num_threads(gs_num_threads()) if (N * L->width > 65536)
        for (size_t i = 0; i < N; i++)
            memcpy(in + i * L->width, r + i * D + L->col, sizeof(float) * L->width);
        const float *C = codebooks + L->cb_offset;
        st = gs_nearest_centroid(N, L->width, in, L->k, C, lab, NULL);
#pragma omp parallel for schedule(static) num_threads(gs_num_threads()) if (N * L->width > 65536)
        for (size_t i = 0; i < N; i++) {
            const float *c = C + (size_t)lab[i] * L->width;
            float *ri = r + i * D + L->col;
            for (int j = 0; j < L->width; j++) ri[j] -= c[j];
            if (zq)
                for (int j = 0; j < L->width; j++) zq[i * D + L->col + j] += c[j];
            codes[i * nL + l] = lab[i];
        }
    }
    gs_free(r), gs_free(scratch), gs_free(lab);
    return st;
}

static double logsumexp(int n, const double *v, int stride)
{
    double mx = -DBL_MAX;
    for (int i = 0; i < n; i++)
        if (v[(size_t)i * stride] > mx) mx = v[(size_t)i * stride];
    double s = 0.0;
    for (int i = 0; i < n; i++) s += exp(v[(size_t)i * stride] - mx);
    return mx + log(s);
}

void gs_sinkhorn_scores(int m, int F, const double *dist, double eps, int iters, double *score)
{
    double lo = DBL_MAX, hi = -DBL_MAX;
    for (size_t i = 0; i < (size_t)m * F; i++) {
        if (dist[i] < lo) lo = dist[i];
        if (dist[i] > hi) hi = dist[i];
    }
    /* centred distances in [-1, 1] (the reference adds 1e-5 to the amplitude) */
    double mid = 0.5 * (lo + hi), amp = hi - mid + 1e-5;
    double *u = malloc(sizeof(double) * m), *v = malloc(sizeof(double) * F);
    double *tmp = malloc(sizeof(double) * (m > F ? m : F));
    if (!u || !v || !tmp) { /* fall back to plain nearest: score = -distance */
        for (size_t i = 0; i < (size_t)m * F; i++) score[i] = -dist[i];
        free(u), free(v), free(tmp);
        return;
    }
    // logK (m,F) = -centred / eps, kept in score
    for (size_t i = 0; i < (size_t)m * F; i++) score[i] = -((dist[i] - mid) / amp) / eps;
    /* total mass normalisation only shifts u; start from u = v = 0 */
    for (int i = 0; i < m; i++) u[i] = 0.0;
    for (int j = 0; j < F; j++) v[j] = 0.0;
    const double logm = log((double)m), logF = log((double)F);
    for (int it = 0; it < iters; it++) {
        /* columns: each code carries mass 1/F */
        for (int j = 0; j < F; j++) {
            for (int i = 0; i < m; i++) tmp[i] = score[(size_t)i * F + j] + u[i];
            v[j] = -logF - logsumexp(m, tmp, 1);
        }
        /* rows: each item carries mass 1/m */
        for (int i = 0; i < m; i++) {
            for (int j = 0; j < F; j++) tmp[j] = score[(size_t)i * F + j] + v[j];
            u[i] = -logm - logsumexp(F, tmp, 1);
        }
    }
    for (int i = 0; i < m; i++)
        for (int j = 0; j < F; j++) score[(size_t)i * F + j] += v[j];
    free(u), free(v), free(tmp);
}

typedef struct {
    uint64_t key; /* packed prefix codes */
    size_t idx;
} prefix_item;

static int cmp_prefix(const void *a, const void *b)
{
    const prefix_item *x = a, *y = b;
    if (x->key != y->key) return x->key < y->key ? -1 : 1;
    return x->idx < y->idx ? -1 : (x->idx > y->idx);
}

typedef struct {
    size_t collided_before, moved, unresolved;
} group_result;

typedef struct {
    float dist; /* squared distance to the item's original code */
    size_t pos; /* position in the group (groups list items in index order) */
} collider;

static int cmp_collider(const void *a, const void *b)
{
    const collider *x = a, *y = b;
    if (x->dist != y->dist) return x->dist < y->dist ? -1 : 1;
    return x->pos < y->pos ? -1 : (x->pos > y->pos);
}

/* Resolves one prefix group: items idx[0..g) (ascending item order). */
static int resolve_group(size_t g, const size_t *idx, int L, int32_t *ids, int K, int d,
                         const float *resid, const float *codebook, const unsigned char *fixed,
                         double eps, int iters, group_result *res)
{
    int32_t *count = calloc((size_t)K, sizeof(int32_t));
    if (!count) return GS_ENOMEM;
    for (size_t a = 0; a < g; a++) count[ids[idx[a] * L + L - 1]]++;
    size_t dup = 0;
    for (size_t a = 0; a < g; a++) dup += count[ids[idx[a] * L + L - 1]] > 1;
    res->collided_before += dup;
    if (dup == 0) {
        free(count);
        return GS_OK;
    }
    /* owner[c]: the item keeping code c (fixed rows first, else the nearest movable) */
    size_t *owner = malloc(sizeof(size_t) * K);
    float *odist = malloc(sizeof(float) * K);
    float *own_d = malloc(sizeof(float) * g);
    size_t *coll = malloc(sizeof(size_t) * g);
    int status = GS_OK;
    double *dist = NULL, *score = NULL;
    int *free_codes = NULL;
    unsigned char *taken = NULL;
    if (!owner || !odist || !own_d || !coll) {
        status = GS_ENOMEM;
        goto out;
    }
    for (int c = 0; c < K; c++) owner[c] = SIZE_MAX, odist[c] = FLT_MAX;
    /* distance of every item to its current code */
    for (size_t a = 0; a < g; a++) {
        size_t i = idx[a];
        const float *r = resid + i * d, *c = codebook + (size_t)ids[i * L + L - 1] * d;
        double s = 0.0;
        for (int j = 0; j < d; j++) s += ((double)r[j] - c[j]) * ((double)r[j] - c[j]);
        own_d[a] = (float)s;
    }
    for (size_t a = 0; a < g; a++) /* fixed rows own their codes */
        if (fixed && fixed[idx[a]]) {
            int c = ids[idx[a] * L + L - 1];
            if (owner[c] == SIZE_MAX) owner[c] = a, odist[c] = -1.0f; /* cannot be displaced */
        }
    for (size_t a = 0; a < g; a++) {
        if (fixed && fixed[idx[a]]) continue;
        int c = ids[idx[a] * L + L - 1];
        if (odist[c] >= 0.0f && own_d[a] < odist[c]) owner[c] = a, odist[c] = own_d[a];
    }
    size_t m = 0;
    for (size_t a = 0; a < g; a++) {
        int c = ids[idx[a] * L + L - 1];
        if (owner[c] != a) {
            if (fixed && fixed[idx[a]]) res->unresolved++; /* two fixed rows share an ID */
            else coll[m++] = a;
        }
    }
    int F = 0;
    free_codes = malloc(sizeof(int) * K);
    if (!free_codes) {
        status = GS_ENOMEM;
        goto out;
    }
    for (int c = 0; c < K; c++)
        if (owner[c] == SIZE_MAX) free_codes[F++] = c;
    if (m == 0 || F == 0) {
        res->unresolved += m;
        goto out;
    }
    /* colliders choose in order of their distance to their original code
     * (ties: lower item index first) */
    {
        collider *cs = malloc(sizeof(collider) * m);
        if (!cs) {
            status = GS_ENOMEM;
            goto out;
        }
        for (size_t s = 0; s < m; s++) cs[s] = (collider){own_d[coll[s]], coll[s]};
        qsort(cs, m, sizeof(collider), cmp_collider);
        for (size_t s = 0; s < m; s++) coll[s] = cs[s].pos;
        free(cs);
    }
    dist = malloc(sizeof(double) * m * F);
    score = malloc(sizeof(double) * m * F);
    taken = calloc((size_t)F, 1);
    if (!dist || !score || !taken) {
        status = GS_ENOMEM;
        goto out;
    }
    // dist (m,F): squared distance of each collider's residual to each free codeword
    for (size_t s = 0; s < m; s++) {
        const float *r = resid + idx[coll[s]] * d;
        for (int f = 0; f < F; f++) {
            const float *c = codebook + (size_t)free_codes[f] * d;
            double acc = 0.0;
            for (int j = 0; j < d; j++) acc += ((double)r[j] - c[j]) * ((double)r[j] - c[j]);
            dist[s * F + f] = acc;
        }
    }
    gs_sinkhorn_scores((int)m, F, dist, eps, iters, score);
    for (size_t s = 0; s < m; s++) {
        int best = -1;
        double bs = -DBL_MAX;
        for (int f = 0; f < F; f++)
            if (!taken[f] && score[s * F + f] > bs) bs = score[s * F + f], best = f;
        if (best < 0) {
            res->unresolved += m - s; /* more colliders than free codes */
            break;
        }
        taken[best] = 1;
        ids[idx[coll[s]] * L + L - 1] = free_codes[best];
        res->moved++;
    }
out:
    free(count), free(owner), free(odist), free(own_d), free(coll), free(dist), free(score),
        free(free_codes), free(taken);
    return status;
}

int gs_resolve_collisions(size_t N, int L, int32_t *ids, const int *level_k, int d,
                          const float *resid, const float *codebook, const unsigned char *fixed,
                          double eps, int iters, gs_resolve_stats *stats)
{
    memset(stats, 0, sizeof *stats);
    if (L < 1) return gs_fail(GS_EINVAL, "resolve: IDs need at least one level");
    if (d < 1) return gs_fail(GS_EINVAL, "resolve: residual dimension must be >= 1");
    if (!(eps > 0.0) || iters < 0)
        return gs_fail(GS_EINVAL, "resolve: need epsilon > 0 and iterations >= 0");
    int bits = 0, shift[GS_RQ_MAX_TOTAL + 1];
    if (L > GS_RQ_MAX_TOTAL + 1) return gs_fail(GS_EINVAL, "resolve: at most %d levels", GS_RQ_MAX_TOTAL + 1);
    for (int l = 0; l < L; l++) {
        if (level_k[l] < 1) return gs_fail(GS_EINVAL, "resolve: level %d has %d codes", l, level_k[l]);
        if (l < L - 1) {
            int b = 0;
            while ((1LL << b) < level_k[l]) b++;
            shift[l] = bits;
            bits += b;
        }
    }
    if (bits > 64)
        return gs_fail(GS_EINVAL, "resolve: the ID prefix needs %d bits, at most 64 supported", bits);
    for (size_t i = 0; i < N; i++)
        for (int l = 0; l < L; l++)
            if (ids[i * L + l] < 0 || ids[i * L + l] >= level_k[l])
                return gs_fail(GS_EINVAL, "resolve: item %zu has code %d at level %d (codebook of %d)",
                               i, ids[i * L + l], l, level_k[l]);
    prefix_item *items = malloc(sizeof(prefix_item) * (N ? N : 1));
    size_t *order = malloc(sizeof(size_t) * (N ? N : 1));
    if (!items || !order) {
        free(items), free(order);
        return gs_fail(GS_ENOMEM, "resolve: out of memory for %zu items", N);
    }
    for (size_t i = 0; i < N; i++) {
        uint64_t key = 0;
        for (int l = 0; l < L - 1; l++) key |= (uint64_t)ids[i * L + l] << shift[l];
        items[i] = (prefix_item){key, i};
    }
    qsort(items, N, sizeof(prefix_item), cmp_prefix);
    for (size_t i = 0; i < N; i++) order[i] = items[i].idx;
    /* group boundaries */
    size_t n_groups = 0;
    size_t *start = malloc(sizeof(size_t) * (N + 1));
    if (!start) {
        free(items), free(order);
        return gs_fail(GS_ENOMEM, "resolve: out of memory for %zu items", N);
    }
    for (size_t i = 0; i < N; i++)
        if (i == 0 || items[i].key != items[i - 1].key) start[n_groups++] = i;
    start[n_groups] = N;
    for (size_t gi = 0; gi < n_groups; gi++) {
        size_t g = start[gi + 1] - start[gi];
        if (g > stats->largest_group) stats->largest_group = g;
    }
    int K = level_k[L - 1], failed = 0;
    size_t cb = 0, mv = 0, un = 0;
    /* groups are independent: any thread count gives the same IDs */
#pragma omp parallel for schedule(static) num_threads(gs_num_threads()) reduction(+ : cb, mv, un, failed)
    for (size_t gi = 0; gi < n_groups; gi++) {
        group_result r = {0, 0, 0};
        size_t g = start[gi + 1] - start[gi];
        if (g < 2) continue;
        if (resolve_group(g, order + start[gi], L, ids, K, d, resid, codebook, fixed, eps, iters,
                          &r) != GS_OK)
            failed++;
        cb += r.collided_before, mv += r.moved, un += r.unresolved;
    }
    free(items), free(order), free(start);
    if (failed) return gs_fail(GS_ENOMEM, "resolve: out of memory in %d prefix groups", failed);
    stats->collided_before = cb, stats->moved = mv, stats->unresolved = un;
    return GS_OK;
}

int gs_rq_fit_kmeans(const gs_rq_config *cfg, size_t N, const float *z, int n_init, int max_iter,
                     uint64_t seed, float *codebooks)
{
    gs_rq_level lv[GS_RQ_MAX_TOTAL];
    int nL;
    int st = gs_rq_levels(cfg, lv, &nL, NULL);
    if (st != GS_OK) return st;
    for (int l = 0; l < nL; l++)
        if ((size_t)lv[l].k > N)
            return gs_fail(GS_EINVAL,
                           "residual k-means: level %d has %d codes but only %zu items to fit "
                           "them; use smaller codebooks or more items",
                           l, lv[l].k, N);
    int D = cfg->dim[0] + (cfg->n_towers == 2 ? cfg->dim[1] : 0);
    float *r = gs_alloc(sizeof(float) * N * D);
    float *in = gs_alloc(sizeof(float) * N * D);
    int32_t *lab = gs_alloc(sizeof(int32_t) * N);
    if (!r || !in || !lab) {
        gs_free(r), gs_free(in), gs_free(lab);
        return gs_fail(GS_ENOMEM, "residual k-means: out of memory for %zu items", N);
    }
    memcpy(r, z, sizeof(float) * N * D);
    uint64_t s = seed;
    for (int l = 0; l < nL && st == GS_OK; l++) {
        const gs_rq_level *L = &lv[l];
        // residual slice r[:, col:col+width] -> in (N,width)
        for (size_t i = 0; i < N; i++)
            memcpy(in + i * L->width, r + i * D + L->col, sizeof(float) * L->width);
        float *C = codebooks + L->cb_offset;
        double inertia;
        st = gs_kmeans(N, L->width, in, L->k, n_init, max_iter, 1e-4, gs_splitmix64(&s), NULL,
                       C, lab, &inertia);
        if (st != GS_OK) break;
        for (size_t i = 0; i < N; i++) {
            const float *c = C + (size_t)lab[i] * L->width;
            float *ri = r + i * D + L->col;
            for (int j = 0; j < L->width; j++) ri[j] -= c[j];
        }
    }
    gs_free(r), gs_free(in), gs_free(lab);
    return st;
}
