#include "bert.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "../common.h"
#include "../tensor/ops.h"
#include "../tensor/scratch.h"
#include "layers.h"
#include "linear.h"

#ifdef _OPENMP
#include <omp.h>
#endif

int gs_bert_check_config(const gs_bert_config *c)
{
    if (c->vocab_size < 1) return gs_fail(GS_EINVAL, "vocab_size must be >= 1, got %d", c->vocab_size);
    if (c->hidden < 1) return gs_fail(GS_EINVAL, "hidden_size must be >= 1, got %d", c->hidden);
    if (c->layers < 0) return gs_fail(GS_EINVAL, "num_hidden_layers must be >= 0, got %d", c->layers);
    if (c->heads < 1 || c->hidden % c->heads != 0)
        return gs_fail(GS_EINVAL,
                       "num_attention_heads must be >= 1 and divide hidden_size, got %d heads for "
                       "hidden_size %d",
                       c->heads, c->hidden);
    if (c->intermediate < 1)
        return gs_fail(GS_EINVAL, "intermediate_size must be >= 1, got %d", c->intermediate);
    if (c->max_positions < 1)
        return gs_fail(GS_EINVAL, "max_position_embeddings must be >= 1, got %d", c->max_positions);
    if (c->type_vocab_size < 1)
        return gs_fail(GS_EINVAL, "type_vocab_size must be >= 1, got %d", c->type_vocab_size);
    if (!(c->layer_norm_eps > 0.0f))
        return gs_fail(GS_EINVAL, "layer_norm_eps must be > 0, got %g", (double)c->layer_norm_eps);
    return GS_OK;
}

int gs_bert_num_tensors(const gs_bert_config *c) { return 5 + 12 * c->layers; }

/* Per-layer tensors, in buffer order: name suffix and shape as (rows, cols) in terms of
 * H and I (0 = H, 1 = I, 2 = 3H, 3 = scalar column). */
static const struct {
    const char *suffix;
    int rows, cols;
} layer_tensors[12] = {
    {"attention.self.qkv.weight", 2, 0},     {"attention.self.qkv.bias", 2, 3},
    {"attention.output.dense.weight", 0, 0}, {"attention.output.dense.bias", 0, 3},
    {"attention.output.LayerNorm.weight", 0, 3}, {"attention.output.LayerNorm.bias", 0, 3},
    {"intermediate.dense.weight", 1, 0},     {"intermediate.dense.bias", 1, 3},
    {"output.dense.weight", 0, 1},           {"output.dense.bias", 0, 3},
    {"output.LayerNorm.weight", 0, 3},       {"output.LayerNorm.bias", 0, 3},
};

static int dim_of(const gs_bert_config *c, int code)
{
    return code == 0 ? c->hidden : code == 1 ? c->intermediate : code == 2 ? 3 * c->hidden : 1;
}

static size_t layer_floats(const gs_bert_config *c)
{
    size_t n = 0;
    for (int t = 0; t < 12; t++)
        n += (size_t)dim_of(c, layer_tensors[t].rows) * (size_t)dim_of(c, layer_tensors[t].cols);
    return n;
}

int gs_bert_tensor_spec(const gs_bert_config *c, int i, gs_bert_tensor *s)
{
    int st = gs_bert_check_config(c);
    if (st) return st;
    if (i < 0 || i >= gs_bert_num_tensors(c))
        return gs_fail(GS_EINVAL, "tensor index %d out of range [0, %d)", i, gs_bert_num_tensors(c));
    size_t H = (size_t)c->hidden;
    /* embeddings: word (V,H), position (P,H), token type (T,H), LayerNorm gain and bias (H) */
    size_t emb_rows[5] = {(size_t)c->vocab_size, (size_t)c->max_positions,
                          (size_t)c->type_vocab_size, H, H};
    static const char *emb_names[5] = {
        "embeddings.word_embeddings.weight", "embeddings.position_embeddings.weight",
        "embeddings.token_type_embeddings.weight", "embeddings.LayerNorm.weight",
        "embeddings.LayerNorm.bias"};
    size_t off = 0;
    if (i < 5) {
        for (int k = 0; k < i; k++) off += emb_rows[k] * (k < 3 ? H : 1);
        snprintf(s->name, sizeof s->name, "%s", emb_names[i]);
        s->offset = off;
        s->rows = (int)emb_rows[i];
        s->cols = i < 3 ? (int)H : 1;
        return GS_OK;
    }
    for (int k = 0; k < 5; k++) off += emb_rows[k] * (k < 3 ? H : 1);
    int layer = (i - 5) / 12, t = (i - 5) % 12;
    off += (size_t)layer * layer_floats(c);
    for (int k = 0; k < t; k++)
        off += (size_t)dim_of(c, layer_tensors[k].rows) * (size_t)dim_of(c, layer_tensors[k].cols);
    snprintf(s->name, sizeof s->name, "encoder.layer.%d.%s", layer, layer_tensors[t].suffix);
    s->offset = off;
    s->rows = dim_of(c, layer_tensors[t].rows);
    s->cols = dim_of(c, layer_tensors[t].cols);
    return GS_OK;
}

int gs_bert_create(const gs_bert_config *c, gs_bert **out)
{
    *out = NULL;
    int st = gs_bert_check_config(c);
    if (st) return st;
    gs_bert_tensor last;
    gs_bert_tensor_spec(c, gs_bert_num_tensors(c) - 1, &last);
    size_t n = last.offset + (size_t)last.rows * (size_t)last.cols;
    gs_bert *m = gs_calloc(sizeof *m);
    if (!m) return gs_fail(GS_ENOMEM, "out of memory allocating the BERT model");
    m->cfg = *c;
    m->n_params = n;
    m->params = gs_calloc(n * sizeof(float));
    m->layer = gs_calloc((size_t)(c->layers > 0 ? c->layers : 1) * sizeof(gs_bert_layer));
    if (!m->params || !m->layer) {
        gs_bert_free(m);
        return gs_fail(GS_ENOMEM, "out of memory allocating %zu BERT parameters", n);
    }
    float *p[5];
    gs_bert_tensor s;
    for (int i = 0; i < 5; i++) {
        gs_bert_tensor_spec(c, i, &s);
        p[i] = m->params + s.offset;
    }
    m->word_emb = p[0], m->pos_emb = p[1], m->type_emb = p[2], m->emb_ln_g = p[3], m->emb_ln_b = p[4];
    for (int l = 0; l < c->layers; l++) {
        float *q[12];
        for (int t = 0; t < 12; t++) {
            gs_bert_tensor_spec(c, 5 + 12 * l + t, &s);
            q[t] = m->params + s.offset;
        }
        gs_bert_layer *L = &m->layer[l];
        L->qkv_w = q[0], L->qkv_b = q[1], L->ao_w = q[2], L->ao_b = q[3];
        L->ln1_g = q[4], L->ln1_b = q[5], L->ff1_w = q[6], L->ff1_b = q[7];
        L->ff2_w = q[8], L->ff2_b = q[9], L->ln2_g = q[10], L->ln2_b = q[11];
    }
    *out = m;
    return GS_OK;
}

void gs_bert_free(gs_bert *m)
{
    if (!m) return;
    gs_free(m->params);
    gs_free(m->layer);
    gs_free(m);
}

/* Bidirectional multi-head attention within each packed sequence, forward only, with the
 * shared kernel of layers.h: one call per sequence (B = 1, no mask needed since the packed
 * sequence has no padding), sequences spread over threads (a title's 12 x 15 x 15 scores
 * are too little work to split its heads: run one sequence after another, attention, about
 * 6% of a 1-thread encode by perf, ran on one thread).
 * qkv (N, 3H) rows [q | k | v] -> ctx (N, H); probs: scratch of nthreads * heads * Lmax * Lmax
 * floats. Returns GS_OK or the kernel's GS_ENOMEM. */
static int attention_forward(int n_seq, const int64_t *offsets, int H, int heads, int Lmax, int nthreads,
                             const float *qkv, float *ctx, float *probs)
{
    int status = GS_OK;
#pragma omp parallel for schedule(dynamic, 8) num_threads(nthreads) if (n_seq > 1)
    for (int b = 0; b < n_seq; b++) {
        gs_attention_args a;
        memset(&a, 0, sizeof a);
        a.B = 1, a.H = heads, a.dh = H / heads;
        a.ldq = a.ldk = a.ldv = 3 * H;
        a.ldo = H;
        a.scale = 1.0f / sqrtf((float)a.dh);
        const size_t t0 = (size_t)offsets[b];
        a.Tq = a.Tk = (int)(offsets[b + 1] - offsets[b]);
        const float *q = qkv + t0 * 3 * H;
#ifdef _OPENMP
        float *p = probs + (size_t)omp_get_thread_num() * heads * Lmax * Lmax;
#else
        float *p = probs;
#endif
        int st = gs_attention_forward(&a, q, q + H, q + 2 * H, p, ctx + t0 * H);
        if (st != GS_OK) {
#pragma omp atomic write
            status = st;
        }
    }
    return status;
}

// a (n) += b (n), elementwise
static void add_inplace(size_t n, float *a, const float *b)
{
#pragma omp parallel for schedule(static) num_threads(gs_num_threads()) if (n > 32768)
    for (size_t i = 0; i < n; i++) a[i] += b[i];
}

int gs_bert_encode(const gs_bert *m, int n_seq, const int64_t *offsets, const int32_t *ids,
                   const int32_t *type_ids, int pooling, int normalize, float *out)
{
    const gs_bert_config *c = &m->cfg;
    const int H = c->hidden, I = c->intermediate;
    if (n_seq < 1) return gs_fail(GS_EINVAL, "need at least one sequence, got %d", n_seq);
    if (pooling != GS_BERT_POOL_MEAN && pooling != GS_BERT_POOL_CLS)
        return gs_fail(GS_EINVAL, "pooling must be 0 (mean) or 1 (cls), got %d", pooling);
    if (offsets[0] != 0) return gs_fail(GS_EINVAL, "offsets[0] must be 0, got %lld", (long long)offsets[0]);
    int Lmax = 0;
    for (int b = 0; b < n_seq; b++) {
        int64_t L = offsets[b + 1] - offsets[b];
        if (L < 1 || L > c->max_positions)
            return gs_fail(GS_EINVAL,
                           "sequence %d has %lld tokens; each must have 1 to %d "
                           "(max_position_embeddings) tokens",
                           b, (long long)L, c->max_positions);
        if (L > Lmax) Lmax = (int)L;
    }
    const size_t N = (size_t)offsets[n_seq];
    for (size_t t = 0; t < N; t++) {
        if (ids[t] < 0 || ids[t] >= c->vocab_size)
            return gs_fail(GS_EINVAL, "token id %d at position %zu is outside [0, %d) (vocab_size)",
                           ids[t], t, c->vocab_size);
        if (type_ids && (type_ids[t] < 0 || type_ids[t] >= c->type_vocab_size))
            return gs_fail(GS_EINVAL, "token type id %d at position %zu is outside [0, %d)",
                           type_ids[t], t, c->type_vocab_size);
    }

    const int nthreads = gs_num_threads();
    size_t n_x = N * H, n_qkv = N * 3 * H, n_ff = N * I;
    size_t n_scratch = (size_t)nthreads * c->heads * Lmax * Lmax;  /* attention probabilities */
    size_t total = 3 * n_x + n_qkv + n_ff + 2 * N + n_scratch;
    /* kept per thread between calls: fresh pages for every batch of texts cost 7% of an
     * encode in page faults */
    float *buf = gs_scratch_get(GS_SCRATCH_MODEL_ACTS, total * sizeof(float));
    if (!buf) return gs_fail(GS_ENOMEM, "out of memory: the batch needs %zu MB of activations",
                             total * sizeof(float) >> 20);
    float *x = buf;             /* (N,H) hidden state */
    float *x1 = x + n_x;        /* (N,H) state after the attention sub-block */
    float *tmp = x1 + n_x;      /* (N,H) attention context, then sub-block outputs */
    float *qkv = tmp + n_x;     /* (N,3H) */
    float *ff = qkv + n_qkv;    /* (N,I) */
    float *mean = ff + n_ff;    /* (N) LayerNorm statistics (unused at inference) */
    float *rstd = mean + N;     /* (N) */
    float *probs = rstd + N;    /* (heads, Lmax, Lmax) attention probabilities */

    // embeddings: word[id] + position[t - start] + type[tt] -> tmp (N,H), then LayerNorm -> x
#pragma omp parallel for schedule(static) num_threads(nthreads)
    for (int b = 0; b < n_seq; b++)
        for (int64_t t = offsets[b]; t < offsets[b + 1]; t++) {
            const float *we = m->word_emb + (size_t)ids[t] * H;
            const float *pe = m->pos_emb + (size_t)(t - offsets[b]) * H;
            const float *te = m->type_emb + (size_t)(type_ids ? type_ids[t] : 0) * H;
            float *row = tmp + (size_t)t * H;
            for (int k = 0; k < H; k++) row[k] = we[k] + pe[k] + te[k];
        }
    gs_layernorm_forward(N, H, tmp, m->emb_ln_g, m->emb_ln_b, c->layer_norm_eps, x, mean, rstd);

    for (int l = 0; l < c->layers; l++) {
        const gs_bert_layer *L = &m->layer[l];
        gs_linear_forward(N, H, 3 * H, x, L->qkv_w, L->qkv_b, qkv);       // (N,H) -> (N,3H)
        int st = attention_forward(n_seq, offsets, H, c->heads, Lmax, nthreads, qkv, tmp, probs);  // -> (N,H)
        if (st != GS_OK) {
            gs_scratch_put(GS_SCRATCH_MODEL_ACTS, buf);
            return st;
        }
        gs_linear_forward(N, H, H, tmp, L->ao_w, L->ao_b, x1);            // (N,H) -> (N,H)
        add_inplace(n_x, x1, x);                                          // residual
        gs_layernorm_forward(N, H, x1, L->ln1_g, L->ln1_b, c->layer_norm_eps, x1, mean, rstd);
        gs_linear_gelu_forward(N, H, I, x1, L->ff1_w, L->ff1_b, ff);      // (N,H) -> (N,I), GELU
        gs_linear_forward(N, I, H, ff, L->ff2_w, L->ff2_b, tmp);          // (N,I) -> (N,H)
        add_inplace(n_x, tmp, x1);                                        // residual
        gs_layernorm_forward(N, H, tmp, L->ln2_g, L->ln2_b, c->layer_norm_eps, x, mean, rstd);
    }

    // pooling x (N,H) -> out (n_seq,H), then optional L2 normalisation (eps 1e-12 as torch)
#pragma omp parallel for schedule(static) num_threads(nthreads)
    for (int b = 0; b < n_seq; b++) {
        float *o = out + (size_t)b * H;
        const int64_t t0 = offsets[b], t1 = offsets[b + 1];
        if (pooling == GS_BERT_POOL_CLS) {
            memcpy(o, x + (size_t)t0 * H, sizeof(float) * H);
        } else {
            for (int k = 0; k < H; k++) o[k] = 0.0f;
            for (int64_t t = t0; t < t1; t++) {
                const float *row = x + (size_t)t * H;
                for (int k = 0; k < H; k++) o[k] += row[k];
            }
            const float inv = 1.0f / (float)(t1 - t0);
            for (int k = 0; k < H; k++) o[k] *= inv;
        }
        if (normalize) {
            double ss = 0.0;
            for (int k = 0; k < H; k++) ss += (double)o[k] * o[k];
            const float inv = (float)(1.0 / fmax(sqrt(ss), 1e-12));
            for (int k = 0; k < H; k++) o[k] *= inv;
        }
    }
    gs_scratch_put(GS_SCRATCH_MODEL_ACTS, buf);
    return GS_OK;
}
