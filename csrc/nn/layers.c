#include "layers.h"

#include <math.h>
#include <string.h>

#include "../common.h"

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

/* p as a 24-bit threshold: keep iff the top 24 bits of the hash are >= it. */
static inline uint32_t drop_threshold(float p)
{
    if (p >= 1.0f) p = 0.999999f;
    return (uint32_t)((double)p * 16777216.0);
}

static inline int keep_elem(uint64_t key, uint64_t i, uint32_t thr)
{
    return (uint32_t)(mix64(key + i * 0x9e3779b97f4a7c15ULL) >> 40) >= thr;
}

float gs_dropout_factor(float p, uint64_t seed, uint64_t stream, uint64_t i)
{
    if (p <= 0.0f) return 1.0f;
    uint32_t thr = drop_threshold(p);
    return keep_elem(stream_key(seed, stream), i, thr) ? 1.0f / (1.0f - p) : 0.0f;
}

void gs_dropout(size_t n, float p, uint64_t seed, uint64_t stream, const float *x, float *y)
{
    if (p <= 0.0f) {
        if (y != x) memcpy(y, x, sizeof(float) * n);
        return;
    }
    const uint64_t key = stream_key(seed, stream);
    const uint32_t thr = drop_threshold(p);
    const float s = 1.0f / (1.0f - (p >= 1.0f ? 0.999999f : p));
#pragma omp parallel for schedule(static) num_threads(gs_num_threads()) if (n > 32768)
    for (size_t i = 0; i < n; i++) y[i] = keep_elem(key, i, thr) ? x[i] * s : 0.0f;
}

/* ---------------------------------------------------------------- attention */

static inline float dot(const float *restrict a, const float *restrict b, int n)
{
    float s = 0.0f;
#pragma omp simd reduction(+ : s)
    for (int d = 0; d < n; d++) s += a[d] * b[d];
    return s;
}

static inline void axpy(float alpha, const float *restrict x, float *restrict y, int n)
{
#pragma omp simd
    for (int d = 0; d < n; d++) y[d] += alpha * x[d];
}

/* Last key index query i may see (inclusive). */
static inline int last_key(const gs_attention_args *a, int i)
{
    if (!a->causal) return a->Tk - 1;
    int j = i + (a->Tk - a->Tq);
    return j < a->Tk - 1 ? j : a->Tk - 1;
}

void gs_attention_forward(const gs_attention_args *a, const float *q, const float *k,
                          const float *v, float *probs, float *out)
{
    const int B = a->B, H = a->H, Tq = a->Tq, Tk = a->Tk, dh = a->dh;
    const int use_drop = a->dropout_p > 0.0f;
    const uint64_t key = use_drop ? stream_key(a->dropout_seed, a->dropout_stream) : 0;
    const uint32_t thr = use_drop ? drop_threshold(a->dropout_p) : 0;
    const float keep_scale = use_drop ? 1.0f / (1.0f - a->dropout_p) : 1.0f;
    const size_t kstride = a->kv_batch_stride ? a->kv_batch_stride : (size_t)Tk * a->ldk;
    const size_t vstride = a->kv_batch_stride ? a->kv_batch_stride : (size_t)Tk * a->ldv;
#pragma omp parallel for schedule(static) num_threads(gs_num_threads()) if (B * H > 1)
    for (int bh = 0; bh < B * H; bh++) {
        const int b = bh / H, h = bh % H;
        const int bkv = a->kv_group > 1 ? b / a->kv_group : b;
        const int32_t *km = a->key_mask ? a->key_mask + (size_t)bkv * Tk : NULL;
        const float *kb = k + bkv * kstride + h * dh, *vb = v + bkv * vstride + h * dh;
        for (int i = 0; i < Tq; i++) {
            const float *qi = q + ((size_t)b * Tq + i) * a->ldq + h * dh;
            float *p = probs + ((size_t)bh * Tq + i) * Tk;
            const float *bias = a->pos_bias ? a->pos_bias + ((size_t)h * Tq + i) * Tk : NULL;
            const int jmax = last_key(a, i);
            float mx = -INFINITY;
            for (int j = 0; j <= jmax; j++) {
                if (km && !km[j]) {
                    p[j] = -INFINITY;
                    continue;
                }
                const float *kj = kb + (size_t)j * a->ldk;
                float s = a->scale * dot(qi, kj, dh) + (bias ? bias[j] : 0.0f);
                p[j] = s;
                mx = s > mx ? s : mx;
            }
            for (int j = jmax + 1; j < Tk; j++) p[j] = 0.0f;
            float *oi = out + ((size_t)b * Tq + i) * a->ldo + h * dh;
            for (int d = 0; d < dh; d++) oi[d] = 0.0f;
            if (mx == -INFINITY) { /* every key masked: no mass, zero output */
                for (int j = 0; j <= jmax; j++) p[j] = 0.0f;
                continue;
            }
            float sum = 0.0f;
            for (int j = 0; j <= jmax; j++) {
                float e = p[j] == -INFINITY ? 0.0f : expf(p[j] - mx);
                p[j] = e;
                sum += e;
            }
            const float inv = 1.0f / sum;
            const uint64_t base = ((uint64_t)bh * Tq + i) * Tk;
            for (int j = 0; j <= jmax; j++) {
                p[j] *= inv;
                float w = p[j];
                if (use_drop) w = keep_elem(key, base + j, thr) ? w * keep_scale : 0.0f;
                if (w != 0.0f) axpy(w, vb + (size_t)j * a->ldv, oi, dh);
            }
        }
    }
}

void gs_attention_backward(const gs_attention_args *a, const float *q, const float *k,
                           const float *v, const float *probs, const float *dout, float *dscores,
                           float *dq, float *dk, float *dv, float *dpos_bias)
{
    const int B = a->B, H = a->H, Tq = a->Tq, Tk = a->Tk, dh = a->dh;
    const int use_drop = a->dropout_p > 0.0f;
    const uint64_t key = use_drop ? stream_key(a->dropout_seed, a->dropout_stream) : 0;
    const uint32_t thr = use_drop ? drop_threshold(a->dropout_p) : 0;
    const float keep_scale = use_drop ? 1.0f / (1.0f - a->dropout_p) : 1.0f;
#pragma omp parallel for schedule(static) num_threads(gs_num_threads()) if (B * H > 1)
    for (int bh = 0; bh < B * H; bh++) {
        const int b = bh / H, h = bh % H;
        /* each (b,h) owns the head-h columns of batch b's rows of dk, dv, dq */
        for (int j = 0; j < Tk; j++) {
            memset(dk + ((size_t)b * Tk + j) * a->ldk + h * dh, 0, sizeof(float) * dh);
            memset(dv + ((size_t)b * Tk + j) * a->ldv + h * dh, 0, sizeof(float) * dh);
        }
        for (int i = 0; i < Tq; i++) {
            const float *qi = q + ((size_t)b * Tq + i) * a->ldq + h * dh;
            const float *doi = dout + ((size_t)b * Tq + i) * a->ldo + h * dh;
            const float *p = probs + ((size_t)bh * Tq + i) * Tk;
            float *ds = dscores + ((size_t)bh * Tq + i) * Tk;
            float *dqi = dq + ((size_t)b * Tq + i) * a->ldq + h * dh;
            const int jmax = last_key(a, i);
            const uint64_t base = ((uint64_t)bh * Tq + i) * Tk;
            // dP[j] = dout_i . v_j (through dropout); dv_j += dropout(P)[i,j] * dout_i
            float pdp = 0.0f; /* sum_j P[j] dP[j] */
            for (int j = 0; j <= jmax; j++) {
                if (p[j] == 0.0f) {
                    ds[j] = 0.0f;
                    continue;
                }
                float f = use_drop ? (keep_elem(key, base + j, thr) ? keep_scale : 0.0f) : 1.0f;
                float dpj = 0.0f;
                if (f != 0.0f) {
                    const float *vj = v + ((size_t)b * Tk + j) * a->ldv + h * dh;
                    dpj = f * dot(doi, vj, dh);
                    axpy(f * p[j], doi, dv + ((size_t)b * Tk + j) * a->ldv + h * dh, dh);
                }
                ds[j] = dpj;
                pdp += p[j] * dpj;
            }
            for (int j = jmax + 1; j < Tk; j++) ds[j] = 0.0f;
            // dS = P * (dP - sum P dP); dq_i = scale sum_j dS_j k_j; dk_j += scale dS_j q_i
            for (int d = 0; d < dh; d++) dqi[d] = 0.0f;
            for (int j = 0; j <= jmax; j++) {
                if (p[j] == 0.0f) continue;
                float dsj = p[j] * (ds[j] - pdp);
                ds[j] = dsj;
                const float *kj = k + ((size_t)b * Tk + j) * a->ldk + h * dh;
                axpy(a->scale * dsj, kj, dqi, dh);
                axpy(a->scale * dsj, qi, dk + ((size_t)b * Tk + j) * a->ldk + h * dh, dh);
            }
        }
    }
    if (dpos_bias) {
        const size_t per_batch = (size_t)H * Tq * Tk;
#pragma omp parallel for schedule(static) num_threads(gs_num_threads()) if (per_batch * B > 32768)
        for (size_t e = 0; e < per_batch; e++) {
            float s = 0.0f;
            for (int b = 0; b < B; b++) s += dscores[(size_t)b * per_batch + e];
            dpos_bias[e] += s;
        }
    }
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

void gs_relative_bias_forward(int H, int Tq, int Tk, int q0, int bidirectional, int num_buckets,
                              int max_distance, const float *table, float *bias)
{
#pragma omp parallel for schedule(static) num_threads(gs_num_threads()) if ((size_t)Tq * Tk > 4096)
    for (int i = 0; i < Tq; i++)
        for (int j = 0; j < Tk; j++) {
            int bk = gs_t5_relative_bucket(j - (q0 + i), bidirectional, num_buckets, max_distance);
            for (int h = 0; h < H; h++) bias[((size_t)h * Tq + i) * Tk + j] = table[bk * H + h];
        }
}

void gs_relative_bias_backward(int H, int Tq, int Tk, int q0, int bidirectional, int num_buckets,
                               int max_distance, const float *dbias, float *dtable)
{
    /* many (i,j) share a bucket: one thread per head, (i,j) in order */
#pragma omp parallel for schedule(static) num_threads(gs_num_threads()) if ((size_t)Tq * Tk > 4096)
    for (int h = 0; h < H; h++)
        for (int i = 0; i < Tq; i++)
            for (int j = 0; j < Tk; j++) {
                int bk = gs_t5_relative_bucket(j - (q0 + i), bidirectional, num_buckets, max_distance);
                dtable[bk * H + h] += dbias[((size_t)h * Tq + i) * Tk + j];
            }
}

/* ------------------------------------------------------------ cross-entropy */

/* log(sum_j exp(x_j)) of one row, stable. */
static float row_logsumexp(const float *x, int V, float *mx_out)
{
    float mx = -INFINITY;
    for (int j = 0; j < V; j++) mx = x[j] > mx ? x[j] : mx;
    float s = 0.0f;
    for (int j = 0; j < V; j++) s += expf(x[j] - mx);
    *mx_out = mx;
    return mx + logf(s);
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
        float mx;
        row_loss[n] = row_logsumexp(x, V, &mx) - x[targets[n]];
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
        float mx;
        float lse = row_logsumexp(x, V, &mx);
        for (int j = 0; j < V; j++) dx[j] = scale * expf(x[j] - lse);
        dx[targets[n]] -= scale;
    }
}
