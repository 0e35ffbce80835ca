#include "sasrec.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "../common.h"
#include "../tensor/scratch.h"
#include "../tensor/ops.h"
#include "layers.h"
#include "linear.h"

#define IGNORE_INDEX (-100)

int gs_sasrec_check_config(const gs_sasrec_config *c)
{
    if (c->n_items < 1) return gs_fail(GS_EINVAL, "n_items must be >= 1, got %d", c->n_items);
    if (c->max_len < 1) return gs_fail(GS_EINVAL, "max_len must be >= 1, got %d", c->max_len);
    if (c->hidden < 1) return gs_fail(GS_EINVAL, "hidden must be >= 1, got %d", c->hidden);
    if (c->layers < 0) return gs_fail(GS_EINVAL, "layers must be >= 0, got %d", c->layers);
    if (c->heads < 1 || c->hidden % c->heads)
        return gs_fail(GS_EINVAL, "heads must be >= 1 and divide hidden, got heads=%d hidden=%d",
                       c->heads, c->hidden);
    if (c->inner < 1) return gs_fail(GS_EINVAL, "inner must be >= 1, got %d", c->inner);
    if (!(c->dropout >= 0.0f && c->dropout < 1.0f))
        return gs_fail(GS_EINVAL, "dropout must be in [0, 1), got %g", (double)c->dropout);
    return GS_OK;
}

int gs_sasrec_num_tensors(const gs_sasrec_config *c) { return 4 + 12 * c->layers; }

/* Block tensors in buffer order; shape codes 0 = d, 1 = I, 2 = 3d, 3 = column vector. */
static const struct {
    const char *name;
    int rows, cols, decay;
} block_tensors[12] = {
    {"ln1.weight", 0, 3, 0},  {"ln1.bias", 0, 3, 0},  {"qkv.weight", 2, 0, 1},
    {"qkv.bias", 2, 3, 0},    {"out.weight", 0, 0, 1}, {"out.bias", 0, 3, 0},
    {"ln2.weight", 0, 3, 0},  {"ln2.bias", 0, 3, 0},  {"ffn1.weight", 1, 0, 1},
    {"ffn1.bias", 1, 3, 0},   {"ffn2.weight", 0, 1, 1}, {"ffn2.bias", 0, 3, 0},
};

static int dim_of(const gs_sasrec_config *c, int code)
{
    return code == 0 ? c->hidden : code == 1 ? c->inner : code == 2 ? 3 * c->hidden : 1;
}

int gs_sasrec_tensor_spec(const gs_sasrec_config *c, int i, gs_sasrec_tensor *s)
{
    int st = gs_sasrec_check_config(c);
    if (st) return st;
    int n = gs_sasrec_num_tensors(c);
    if (i < 0 || i >= n) return gs_fail(GS_EINVAL, "tensor index %d out of range [0, %d)", i, n);
    size_t off = 0;
    for (int k = 0; k <= i; k++) {
        int rows, cols, decay;
        char name[48];
        if (k == 0) {
            snprintf(name, sizeof name, "item_embedding");
            rows = c->n_items + 1, cols = c->hidden, decay = 0;
        } else if (k == 1) {
            snprintf(name, sizeof name, "position_embedding");
            rows = c->max_len, cols = c->hidden, decay = 0;
        } else if (k < n - 2) {
            int l = (k - 2) / 12, t = (k - 2) % 12;
            snprintf(name, sizeof name, "blocks.%d.%s", l, block_tensors[t].name);
            rows = dim_of(c, block_tensors[t].rows);
            cols = dim_of(c, block_tensors[t].cols);
            decay = block_tensors[t].decay;
        } else {
            snprintf(name, sizeof name, k == n - 2 ? "final_ln.weight" : "final_ln.bias");
            rows = c->hidden, cols = 1, decay = 0;
        }
        if (k == i) {
            memcpy(s->name, name, sizeof name);
            s->offset = off, s->rows = rows, s->cols = cols, s->decay = decay;
        }
        off += (size_t)rows * (size_t)cols;
    }
    return GS_OK;
}

int gs_sasrec_create(const gs_sasrec_config *c, gs_sasrec **out)
{
    *out = NULL;
    int st = gs_sasrec_check_config(c);
    if (st) return st;
    const int n_t = gs_sasrec_num_tensors(c);
    gs_sasrec_tensor s;
    gs_sasrec_tensor_spec(c, n_t - 1, &s);
    const size_t n = s.offset + (size_t)s.rows * s.cols;
    gs_sasrec *m = gs_calloc(sizeof *m);
    if (!m) return gs_fail(GS_ENOMEM, "out of memory allocating SASRec");
    m->cfg = *c;
    m->n_params = n;
    m->params = gs_calloc(n * sizeof(float));
    m->grads = gs_calloc(n * sizeof(float));
    m->m = gs_calloc(n * sizeof(float));
    m->v = gs_calloc(n * sizeof(float));
    m->decay_mask = gs_calloc(n);
    m->block = gs_calloc((size_t)(c->layers > 0 ? c->layers : 1) * sizeof(gs_sasrec_block));
    if (!m->params || !m->grads || !m->m || !m->v || !m->decay_mask || !m->block) {
        gs_sasrec_free(m);
        return gs_fail(GS_ENOMEM, "out of memory allocating %zu SASRec parameters", n);
    }
    float *p[64];
    for (int i = 0; i < n_t; i++) {
        gs_sasrec_tensor_spec(c, i, &s);
        if (s.decay) memset(m->decay_mask + s.offset, 1, (size_t)s.rows * s.cols);
        if (i < 2 || i >= n_t - 2) {
            float *ptr = m->params + s.offset;
            if (i == 0) m->item_emb = ptr;
            else if (i == 1) m->pos_emb = ptr;
            else if (i == n_t - 2) m->lnf_g = ptr;
            else m->lnf_b = ptr;
            continue;
        }
        int t = (i - 2) % 12;
        p[t] = m->params + s.offset;
        if (t == 11) {
            gs_sasrec_block *b = &m->block[(i - 2) / 12];
            b->ln1_g = p[0], b->ln1_b = p[1], b->qkv_w = p[2], b->qkv_b = p[3];
            b->o_w = p[4], b->o_b = p[5], b->ln2_g = p[6], b->ln2_b = p[7];
            b->w1 = p[8], b->b1 = p[9], b->w2 = p[10], b->b2 = p[11];
        }
    }
    *out = m;
    return GS_OK;
}

void gs_sasrec_free(gs_sasrec *m)
{
    if (!m) return;
    gs_free(m->params);
    gs_free(m->grads);
    gs_free(m->m);
    gs_free(m->v);
    gs_free(m->decay_mask);
    gs_free(m->block);
    gs_free(m);
}

/* ------------------------------------------------------------ activations */

/* Everything the backward pass reads, for one batch of B sequences (N = B*T slots). */
typedef struct {
    float *x;      /* (L+1, N, d): input of block l at x + l*N*d; x[L] = last block's output */
    float *a;      /* (L, N, d) LN1 output */
    float *mean1, *rstd1, *mean2, *rstd2;  /* (L, N) */
    float *qkv;    /* (L, N, 3d) */
    float *probs;  /* (L, B, H, T, T) attention probabilities before dropout */
    float *ctx;    /* (L, N, d) attention context (heads concatenated) */
    float *x2;     /* (L, N, d) after the attention residual */
    float *fin;    /* (L, N, d) LN2 output */
    float *h1;     /* (L, N, I) pre-ReLU */
    float *r;      /* (L, N, I) ReLU output after dropout */
    float *hf, *meanf, *rstdf;  /* (N, d), (N), (N) final LayerNorm */
    int32_t *key_mask;          /* (B, T) 1 = real item */
    float *buf;
} acts;

static int acts_alloc(const gs_sasrec_config *c, int B, acts *A)
{
    const size_t N = (size_t)B * c->max_len, d = c->hidden, I = c->inner, L = c->layers;
    const size_t P = (size_t)B * c->heads * c->max_len * c->max_len;
    size_t total = (L + 1) * N * d + L * (N * d * 4 + N * 3 * d + P + 2 * N * I + 4 * N) +
                   N * d + 2 * N;
    A->buf = gs_scratch_get(GS_SCRATCH_MODEL_ACTS, total * sizeof(float)); /* kept per thread */
    A->key_mask = gs_alloc(N * sizeof(int32_t));
    if (!A->buf || !A->key_mask) {
        gs_scratch_put(GS_SCRATCH_MODEL_ACTS, A->buf);
        gs_free(A->key_mask);
        return gs_fail(GS_ENOMEM, "out of memory: %zu MB of SASRec activations for batch %d",
                       total * sizeof(float) >> 20, B);
    }
    float *p = A->buf;
#define TAKE(field, n) (A->field = p, p += (n))
    TAKE(x, (L + 1) * N * d);
    TAKE(a, L * N * d);
    TAKE(mean1, L * N);
    TAKE(rstd1, L * N);
    TAKE(mean2, L * N);
    TAKE(rstd2, L * N);
    TAKE(qkv, L * N * 3 * d);
    TAKE(probs, L * P);
    TAKE(ctx, L * N * d);
    TAKE(x2, L * N * d);
    TAKE(fin, L * N * d);
    TAKE(h1, L * N * I);
    TAKE(r, L * N * I);
    TAKE(hf, N * d);
    TAKE(meanf, N);
    TAKE(rstdf, N);
#undef TAKE
    return GS_OK;
}

static void acts_free(acts *A)
{
    gs_scratch_put(GS_SCRATCH_MODEL_ACTS, A->buf);
    gs_free(A->key_mask);
}

/* Dropout streams: one per site, so no two sites share a mask. */
enum { SITE_EMB = 0, SITE_ATTN_P = 1, SITE_ATTN_OUT = 2, SITE_RELU = 3, SITE_FFN_OUT = 4 };
static uint64_t stream_of(int layer, int site) { return (uint64_t)(layer + 1) * 8 + (uint64_t)site; }

static gs_attention_args attn_args(const gs_sasrec_config *c, int B, const int32_t *key_mask,
                                   float p, uint64_t seed, int layer)
{
    gs_attention_args a;
    memset(&a, 0, sizeof a);
    const int d = c->hidden;
    a.B = B, a.H = c->heads, a.Tq = c->max_len, a.Tk = c->max_len, a.dh = d / c->heads;
    a.ldq = a.ldk = a.ldv = 3 * d;
    a.ldo = d;
    a.scale = 1.0f / sqrtf((float)a.dh);
    a.causal = 1;
    a.key_mask = key_mask;
    a.dropout_p = p;
    a.dropout_seed = seed;
    a.dropout_stream = stream_of(layer, SITE_ATTN_P);
    return a;
}

static void add_inplace(size_t n, float *a, const float *b)
{
#pragma omp parallel for schedule(static) num_threads(gs_num_threads()) if (n > 32768)
    for (size_t i = 0; i < n; i++) a[i] += b[i];
}

// seqs (B,T) -> activations A (hf holds the final hidden states (N,d))
static void forward(const gs_sasrec *m, int B, const int32_t *seqs, int train, uint64_t seed,
                    acts *A)
{
    const gs_sasrec_config *c = &m->cfg;
    const int T = c->max_len, d = c->hidden, I = c->inner;
    const size_t N = (size_t)B * T;
    const float p = train ? c->dropout : 0.0f;
    for (size_t i = 0; i < N; i++) A->key_mask[i] = seqs[i] != 0;
    // x0 (N,d) = dropout(E[seqs] + P[t])
    gs_embedding_forward(N, d, seqs, m->item_emb, A->x);
#pragma omp parallel for schedule(static) num_threads(gs_num_threads())
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++) {
            float *row = A->x + ((size_t)b * T + t) * d;
            const float *pe = m->pos_emb + (size_t)t * d;
            for (int k = 0; k < d; k++) row[k] += pe[k];
        }
    if (p > 0) gs_dropout(N * d, p, seed, stream_of(-1, SITE_EMB), A->x, A->x);

    for (int l = 0; l < c->layers; l++) {
        const gs_sasrec_block *W = &m->block[l];
        const size_t P = (size_t)B * c->heads * T * T;
        float *x = A->x + l * N * d, *xout = x + N * d;
        float *a = A->a + l * N * d, *qkv = A->qkv + l * N * 3 * d, *ctx = A->ctx + l * N * d;
        float *x2 = A->x2 + l * N * d, *fin = A->fin + l * N * d;
        float *h1 = A->h1 + l * N * I, *r = A->r + l * N * I;
        gs_layernorm_forward(N, d, x, W->ln1_g, W->ln1_b, 1e-8f, a, A->mean1 + l * N,
                             A->rstd1 + l * N);
        gs_linear_forward(N, d, 3 * d, a, W->qkv_w, W->qkv_b, qkv);          // (N,d) -> (N,3d)
        gs_attention_args aa = attn_args(c, B, A->key_mask, p, seed, l);
        gs_attention_forward(&aa, qkv, qkv + d, qkv + 2 * d, A->probs + l * P, ctx);
        gs_linear_forward(N, d, d, ctx, W->o_w, W->o_b, x2);                 // (N,d) -> (N,d)
        if (p > 0) gs_dropout(N * d, p, seed, stream_of(l, SITE_ATTN_OUT), x2, x2);
        add_inplace(N * d, x2, x);                                           // residual
        gs_layernorm_forward(N, d, x2, W->ln2_g, W->ln2_b, 1e-8f, fin, A->mean2 + l * N,
                             A->rstd2 + l * N);
        gs_linear_forward(N, d, I, fin, W->w1, W->b1, h1);                   // (N,d) -> (N,I)
        gs_relu_forward(N * I, h1, r);
        if (p > 0) gs_dropout(N * I, p, seed, stream_of(l, SITE_RELU), r, r);
        gs_linear_forward(N, I, d, r, W->w2, W->b2, xout);                   // (N,I) -> (N,d)
        if (p > 0) gs_dropout(N * d, p, seed, stream_of(l, SITE_FFN_OUT), xout, xout);
        add_inplace(N * d, xout, x2);                                        // residual
    }
    gs_layernorm_forward(N, d, A->x + (size_t)c->layers * N * d, m->lnf_g, m->lnf_b, 1e-8f, A->hf,
                         A->meanf, A->rstdf);
}

static int check_seqs(const gs_sasrec_config *c, int B, const int32_t *seqs)
{
    if (B < 1) return gs_fail(GS_EINVAL, "need at least one sequence, got %d", B);
    return gs_check_ids((size_t)B * c->max_len, seqs, c->n_items + 1,
                        "sequence slot (0 = padding, item i written i+1)");
}

/* The sampled softmax's output layer (see gs_sasrec_forward_backward): hc (Nv,d) hidden
 * states of the counted slots, tc (Nv) their targets, negatives (K), log_q (n_items) or NULL
 * (subtracted from every logit: the sampled softmax's correction) -> *loss_sum, *n_count,
 * dhc (Nv,d) OVERWRITTEN and the item table's gradient ACCUMULATED (gitems, rows of
 * items). work holds (Nv,1+K) + (Nv,K) + 2 (K,d) floats. Slot r's logits are
 * [hc_r . item(t_r), hc_r . item(neg_k) for k < K], a negative equal to t_r masked out. */
static int sampled_output_layer(size_t Nv, int d, const float *hc, const int32_t *tc, int K,
                                const int32_t *neg, const float *log_q, const float *items, float *gitems,
                                float *work, float *row_loss, double *loss_sum, size_t *n_count, float *dhc)
{
    const int W = K + 1;
    float *lg = work, *part = lg + Nv * (size_t)W, *wn = part + Nv * (size_t)K, *dwn = wn + (size_t)K * d;
    for (int k = 0; k < K; k++) memcpy(wn + (size_t)k * d, items + (size_t)neg[k] * d, d * sizeof(float));
    gs_linear_forward(Nv, d, K, hc, wn, NULL, part);                         // (Nv,d) -> (Nv,K)
#pragma omp parallel for schedule(static) num_threads(gs_num_threads()) if (Nv * (size_t)W > 65536)
    for (size_t r = 0; r < Nv; r++) {
        const float *h = hc + r * d, *e = items + (size_t)tc[r] * d;
        float dot = 0.0f;
        for (int j = 0; j < d; j++) dot += h[j] * e[j];
        float *row = lg + r * W;
        row[0] = log_q ? dot - log_q[tc[r]] : dot;
        for (int k = 0; k < K; k++)  // finite, not -inf: exp() of it is exactly 0 all the same
            row[1 + k] = neg[k] == tc[r] ? -1e30f : log_q ? part[r * K + k] - log_q[neg[k]] : part[r * K + k];
    }
    int32_t *zero = (int32_t *)part;  // every slot's target is column 0; part is consumed
    for (size_t r = 0; r < Nv; r++) zero[r] = 0;
    int st = gs_cross_entropy_forward_backward(Nv, W, lg, zero, IGNORE_INDEX, row_loss, loss_sum, n_count,
                                               lg);                          // lg becomes dlogits
    if (st) return st;
    for (size_t r = 0; r < Nv; r++) memcpy(part + r * K, lg + r * W + 1, K * sizeof(float));
    memset(dwn, 0, (size_t)K * d * sizeof(float));
    gs_linear_backward(Nv, d, K, hc, wn, part, dhc, dwn, NULL);               // dhc, dwn (K,d)
    // the target column, in slot order (deterministic): dhc += g e_t, d e_t += g h
    for (size_t r = 0; r < Nv; r++) {
        const float g = lg[r * W], *h = hc + r * d, *e = items + (size_t)tc[r] * d;
        float *dh = dhc + r * d, *de = gitems + (size_t)tc[r] * d;
        for (int j = 0; j < d; j++) {
            dh[j] += g * e[j];
            de[j] += g * h[j];
        }
    }
    for (int k = 0; k < K; k++) {  // repeated negatives add up, in k order
        float *de = gitems + (size_t)neg[k] * d;
        const float *dw = dwn + (size_t)k * d;
        for (int j = 0; j < d; j++) de[j] += dw[j];
    }
    return GS_OK;
}

int gs_sasrec_forward_backward(gs_sasrec *m, int B, const int32_t *seqs, const int32_t *targets,
                               int n_negatives, const int32_t *negatives, const float *log_q, int train,
                               uint64_t seed, double *loss, size_t *count)
{
    const gs_sasrec_config *c = &m->cfg;
    int st = check_seqs(c, B, seqs);
    if (st) return st;
    const int T = c->max_len, d = c->hidden, I = c->inner, V = c->n_items;
    const int K = n_negatives;
    if (K < 0 || (K > 0 && !negatives)) return gs_fail(GS_EINVAL, "n_negatives must be >= 0, with negatives");
    for (int k = 0; k < K; k++)
        if (negatives[k] < 0 || negatives[k] >= V)
            return gs_fail(GS_EINVAL, "negatives[%d] = %d is not an item index in [0, %d)", k, negatives[k], V);
    const size_t N = (size_t)B * T;
    const float p = train ? c->dropout : 0.0f;
    acts A;
    if ((st = acts_alloc(c, B, &A))) return st;
    const size_t P = (size_t)B * c->heads * T * T;
    // the output layer's logits: (N,V) for the full softmax, the sampled one's work otherwise
    const size_t n_out = K ? N * (size_t)(2 * K + 1) + 2 * (size_t)K * d : N * (size_t)V;
    const size_t n_scratch = n_out + N + N * d * 4 + N * 3 * d + N * I + P + 2 * N;
    float *scratch = gs_scratch_get(GS_SCRATCH_MODEL_TMP, n_scratch * sizeof(float));
    if (!scratch) {
        acts_free(&A);
        return gs_fail(GS_ENOMEM, "out of memory: %zu MB of SASRec gradients for batch %d",
                       n_scratch * sizeof(float) >> 20, B);
    }
    float *logits = scratch, *row_loss = logits + n_out;
    float *dx = row_loss + N, *dt = dx + N * d, *dln = dt + N * d, *dqkv = dln + N * d;
    float *dh = dqkv + N * 3 * d, *dscores = dh + N * I, *hc = dscores + P;
    int32_t *rows = (int32_t *)(hc + N * d), *tc = rows + N;  // compacted slots, their targets

    forward(m, B, seqs, train, seed, &A);
    // Only slots with a target reach the output layer (padding is ~20% of slots and the
    // (slots, n_items) logits are the largest cost): hc (Nv,d) gathers their hidden states.
    size_t Nv = 0;
    for (size_t i = 0; i < N; i++)
        if (targets[i] != IGNORE_INDEX) {
            rows[Nv] = (int32_t)i;
            tc[Nv] = targets[i];
            memcpy(hc + Nv * d, A.hf + i * d, d * sizeof(float));
            Nv++;
        }
    memset(m->grads, 0, m->n_params * sizeof(float));
    *loss = 0.0;
    *count = 0;
    if (Nv == 0) goto done;
    const float *items = m->item_emb + d;  // (V,d): the output layer is the item table
    gs_sasrec *g = m;  // gradient pointers mirror the parameter pointers
#define G(ptr) (g->grads + ((ptr) - g->params))
    double loss_sum = 0.0;
    size_t n_count = 0;
    if (K) {
        st = sampled_output_layer(Nv, d, hc, tc, K, negatives, log_q, items, G(items), logits, row_loss, &loss_sum,
                                  &n_count, dln);                            // -> dhc (Nv,d)
        if (st) goto done;
    } else {
        gs_linear_forward(Nv, d, V, hc, items, NULL, logits);                // (Nv,d) -> (Nv,V)
        st = gs_cross_entropy_forward_backward(Nv, V, logits, tc, IGNORE_INDEX, row_loss, &loss_sum,
                                               &n_count, logits);  // logits become dlogits (mean loss)
        if (st) goto done;
        gs_linear_backward(Nv, d, V, hc, items, logits, dln, G(items), NULL); // -> dhc (Nv,d)
    }
    *loss = loss_sum / (double)n_count;
    *count = n_count;

    memset(dt, 0, N * d * sizeof(float));                                    // dhf (N,d)
    for (size_t r = 0; r < Nv; r++) memcpy(dt + (size_t)rows[r] * d, dln + r * d, d * sizeof(float));
    gs_layernorm_backward(N, d, A.x + (size_t)c->layers * N * d, m->lnf_g, A.meanf, A.rstdf, dt, dx,
                          G(m->lnf_g), G(m->lnf_b));
    for (int l = c->layers - 1; l >= 0; l--) {
        const gs_sasrec_block *W = &m->block[l];
        float *x = A.x + l * N * d, *a = A.a + l * N * d, *qkv = A.qkv + l * N * 3 * d;
        float *ctx = A.ctx + l * N * d, *x2 = A.x2 + l * N * d, *fin = A.fin + l * N * d;
        float *h1 = A.h1 + l * N * I, *r = A.r + l * N * I;
        // dx = d(block output); feed-forward branch: xout = x2 + drop(r W2^T + b2)
        if (p > 0) gs_dropout(N * d, p, seed, stream_of(l, SITE_FFN_OUT), dx, dt);
        else memcpy(dt, dx, N * d * sizeof(float));
        gs_linear_backward(N, I, d, r, W->w2, dt, dh, G(W->w2), G(W->b2));  // -> dr (N,I)
        if (p > 0) gs_dropout(N * I, p, seed, stream_of(l, SITE_RELU), dh, dh);
        gs_relu_backward(N * I, h1, dh, dh);
        gs_linear_backward(N, d, I, fin, W->w1, dh, dt, G(W->w1), G(W->b1)); // -> dfin (N,d)
        gs_layernorm_backward(N, d, x2, W->ln2_g, A.mean2 + l * N, A.rstd2 + l * N, dt, dln,
                              G(W->ln2_g), G(W->ln2_b));
        add_inplace(N * d, dx, dln);                                         // dx = d x2
        // attention branch: x2 = x + drop(ctx Wo^T + bo)
        if (p > 0) gs_dropout(N * d, p, seed, stream_of(l, SITE_ATTN_OUT), dx, dt);
        else memcpy(dt, dx, N * d * sizeof(float));
        gs_linear_backward(N, d, d, ctx, W->o_w, dt, dln, G(W->o_w), G(W->o_b)); // -> dctx
        gs_attention_args aa = attn_args(c, B, A.key_mask, p, seed, l);
        gs_attention_backward(&aa, qkv, qkv + d, qkv + 2 * d, A.probs + l * P, dln, dscores, dqkv,
                              dqkv + d, dqkv + 2 * d, NULL);
        gs_linear_backward(N, d, 3 * d, a, W->qkv_w, dqkv, dt, G(W->qkv_w), G(W->qkv_b)); // da
        gs_layernorm_backward(N, d, x, W->ln1_g, A.mean1 + l * N, A.rstd1 + l * N, dt, dln,
                              G(W->ln1_g), G(W->ln1_b));
        add_inplace(N * d, dx, dln);                                         // dx = d x
    }
    // embeddings: x0 = drop(E[seqs] + P[t])
    if (p > 0) gs_dropout(N * d, p, seed, stream_of(-1, SITE_EMB), dx, dx);
    gs_embedding_backward(N, d, seqs, dx, G(m->item_emb));
    float *dpos = G(m->pos_emb);
#pragma omp parallel for schedule(static) num_threads(gs_num_threads())
    for (int t = 0; t < T; t++)  // each slot's row summed over the batch in order b = 0..B-1
        for (int b = 0; b < B; b++) {
            const float *row = dx + ((size_t)b * T + t) * d;
            for (int k = 0; k < d; k++) dpos[(size_t)t * d + k] += row[k];
        }
#undef G
done:
    gs_scratch_put(GS_SCRATCH_MODEL_TMP, scratch);
    acts_free(&A);
    return st;
}

int gs_sasrec_adamw(gs_sasrec *m, const gs_adamw_config *cfg, double max_grad_norm,
                    double *grad_norm)
{
    int st = gs_adamw_check(cfg, 0, NULL, NULL, NULL, NULL);
    if (st || (st = gs_check_max_grad_norm(max_grad_norm))) return st;
    *grad_norm = gs_clip_grad_norm(m->n_params, m->grads, max_grad_norm);
    if (!isfinite(*grad_norm))
        return gs_fail(GS_ERUNTIME, "the gradient norm is %g: training diverged (lower lr?)",
                       *grad_norm);
    m->step++;
    gs_adamw_step(m->n_params, m->params, m->grads, m->m, m->v, m->decay_mask, cfg, m->step);
    return GS_OK;
}

int gs_sasrec_score(const gs_sasrec *m, int B, const int32_t *seqs, float *scores, float *hidden)
{
    const gs_sasrec_config *c = &m->cfg;
    int st = check_seqs(c, B, seqs);
    if (st) return st;
    const int T = c->max_len, d = c->hidden;
    acts A;
    if ((st = acts_alloc(c, B, &A))) return st;
    float *last = gs_alloc((size_t)B * d * sizeof(float));
    if (!last) {
        acts_free(&A);
        return gs_fail(GS_ENOMEM, "out of memory scoring %d sequences", B);
    }
    forward(m, B, seqs, 0, 0, &A);
    for (int b = 0; b < B; b++)
        memcpy(last + (size_t)b * d, A.hf + ((size_t)b * T + T - 1) * d, d * sizeof(float));
    if (hidden) memcpy(hidden, last, (size_t)B * d * sizeof(float));
    gs_linear_forward((size_t)B, d, c->n_items, last, m->item_emb + d, NULL, scores);  // (B,V)
    gs_free(last);
    acts_free(&A);
    return GS_OK;
}
