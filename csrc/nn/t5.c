#include "t5.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "../common.h"
#include "../tensor/gemm.h"
#include "../tensor/lse.h"
#include "../tensor/ops.h"
#include "../tensor/scratch.h"
#include "layers.h"
#include "linear.h"
#include "optim.h"

/* Offsets (floats) of one block's tensors in the parameter buffer. q,k,v are
 * stored back to back, so they form one fused (3I, C) projection; likewise the
 * cross-attention k,v form a fused (2I, C) one, and gated-gelu wi_0, wi_1 a
 * fused (2F, C) one. */
typedef struct {
    size_t ln_sa, qkv, o_sa, rel_bias;
    int has_rel_bias;
    size_t ln_ca, q_ca, kv_ca, o_ca; /* decoder blocks only */
    size_t ln_ff, wi, wo;
} block_params;

/* Activation workspace of one (B, T_in, T_dec) batch: what the backward pass
 * needs from the forward pass, plus scratch. Per-layer arrays are (L, ...)
 * contiguous; the accessors below index them. */
typedef struct {
    size_t Ne, Nd, Nm; /* B*T_in, B*T_dec, max of the two */
    /* encoder, per layer */
    float *e_x, *e_rstd1, *e_qkv, *e_probs, *e_att, *e_xmid, *e_rstd2, *e_hpre;
    float *e_xfinal, *e_rstdf, *enc_out, *e_bias;
    /* decoder, per layer */
    float *d_y, *d_rstd1, *d_qkv, *d_probs, *d_att, *d_ymid1, *d_rstd2, *d_q, *d_kv, *d_cprobs,
        *d_catt, *d_ymid2, *d_rstd3, *d_hpre;
    float *d_yfinal, *d_rstdf, *dec_out, *d_bias, *logits;
    /* scratch */
    float *ln, *act, *tmp, *tmp2, *g_o, *g_act, *g_h, *g_att, *g_qkv, *g_kv, *dx, *d_enc,
        *dscores, *dbias_e, *dbias_d, *row_loss;
} workspace;

struct gs_t5 {
    gs_t5_config cfg;
    int I, F2; /* inner attention width H*d_kv; feed-forward input rows (F or 2F) */
    size_t n_params;
    float *params, *grads, *m, *v;
    unsigned char *decay;
    gs_t5_tensor *tensors;
    int n_tensors;
    size_t shared, enc_final_ln, dec_final_ln, lm_head;
    block_params *enc, *dec;
    long step;
    float *ws_base;
    size_t ws_floats;
    workspace ws;
};

/* Dropout stream of (stack, layer, site): each place that drops gets its own
 * stream so no two share a mask. */
enum { SITE_EMB, SITE_FINAL, SITE_SA_P, SITE_SA_OUT, SITE_CA_P, SITE_CA_OUT, SITE_FF_HID, SITE_FF_OUT };
#define STREAM(stack, layer, site) \
    (((uint64_t)(stack) << 40) | ((uint64_t)((layer) + 1) << 8) | (uint64_t)(site))

/* ------------------------------------------------------------ model set-up */

static size_t add_tensor(gs_t5 *m, int decay, int ndim, int s0, int s1, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 6, 7)))
#endif
    ;

#include <stdarg.h>
static size_t add_tensor(gs_t5 *m, int decay, int ndim, int s0, int s1, const char *fmt, ...)
{
    gs_t5_tensor *t = &m->tensors[m->n_tensors++];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(t->name, sizeof t->name, fmt, ap);
    va_end(ap);
    t->offset = m->n_params;
    t->ndim = ndim;
    t->shape[0] = s0;
    t->shape[1] = ndim == 2 ? s1 : 0;
    t->decay = decay;
    m->n_params += (size_t)s0 * (ndim == 2 ? (size_t)s1 : 1);
    return t->offset;
}

static void build_stack(gs_t5 *m, int decoder)
{
    const gs_t5_config *c = &m->cfg;
    const int L = decoder ? c->num_decoder_layers : c->num_layers, C = c->d_model, I = m->I;
    const char *st = decoder ? "decoder" : "encoder";
    block_params *bp = decoder ? m->dec : m->enc;
    for (int i = 0; i < L; i++) {
        block_params *b = &bp[i];
        b->qkv = add_tensor(m, 1, 2, I, C, "%s.block.%d.layer.0.SelfAttention.q.weight", st, i);
        add_tensor(m, 1, 2, I, C, "%s.block.%d.layer.0.SelfAttention.k.weight", st, i);
        add_tensor(m, 1, 2, I, C, "%s.block.%d.layer.0.SelfAttention.v.weight", st, i);
        b->o_sa = add_tensor(m, 1, 2, C, I, "%s.block.%d.layer.0.SelfAttention.o.weight", st, i);
        if (i == 0) {
            b->has_rel_bias = 1;
            b->rel_bias = add_tensor(m, 0, 2, c->relative_attention_num_buckets, c->num_heads,
                                     "%s.block.0.layer.0.SelfAttention.relative_attention_bias.weight",
                                     st);
        }
        b->ln_sa = add_tensor(m, 0, 1, C, 0, "%s.block.%d.layer.0.layer_norm.weight", st, i);
        int ff = 1;
        if (decoder) {
            b->q_ca = add_tensor(m, 1, 2, I, C, "decoder.block.%d.layer.1.EncDecAttention.q.weight", i);
            b->kv_ca = add_tensor(m, 1, 2, I, C, "decoder.block.%d.layer.1.EncDecAttention.k.weight", i);
            add_tensor(m, 1, 2, I, C, "decoder.block.%d.layer.1.EncDecAttention.v.weight", i);
            b->o_ca = add_tensor(m, 1, 2, C, I, "decoder.block.%d.layer.1.EncDecAttention.o.weight", i);
            b->ln_ca = add_tensor(m, 0, 1, C, 0, "decoder.block.%d.layer.1.layer_norm.weight", i);
            ff = 2;
        }
        if (c->gated_gelu) {
            b->wi = add_tensor(m, 1, 2, c->d_ff, C, "%s.block.%d.layer.%d.DenseReluDense.wi_0.weight",
                               st, i, ff);
            add_tensor(m, 1, 2, c->d_ff, C, "%s.block.%d.layer.%d.DenseReluDense.wi_1.weight", st, i, ff);
        } else {
            b->wi = add_tensor(m, 1, 2, c->d_ff, C, "%s.block.%d.layer.%d.DenseReluDense.wi.weight", st,
                               i, ff);
        }
        b->wo = add_tensor(m, 1, 2, C, c->d_ff, "%s.block.%d.layer.%d.DenseReluDense.wo.weight", st, i,
                           ff);
        b->ln_ff = add_tensor(m, 0, 1, C, 0, "%s.block.%d.layer.%d.layer_norm.weight", st, i, ff);
    }
    size_t fin = add_tensor(m, 0, 1, C, 0, "%s.final_layer_norm.weight", st);
    if (decoder)
        m->dec_final_ln = fin;
    else
        m->enc_final_ln = fin;
}

static int check_config(const gs_t5_config *c)
{
#define NEED(cond, ...) \
    if (!(cond)) return gs_fail(GS_EINVAL, __VA_ARGS__)
    NEED(c->vocab_size >= 1, "vocab_size must be >= 1, got %d", c->vocab_size);
    NEED(c->d_model >= 1 && c->d_kv >= 1 && c->d_ff >= 1 && c->num_heads >= 1,
         "d_model, d_kv, d_ff and num_heads must be >= 1, got %d, %d, %d, %d", c->d_model, c->d_kv,
         c->d_ff, c->num_heads);
    NEED(c->num_layers >= 1 && c->num_decoder_layers >= 1,
         "num_layers and num_decoder_layers must be >= 1, got %d and %d", c->num_layers,
         c->num_decoder_layers);
    NEED(c->num_layers <= 4096 && c->num_decoder_layers <= 4096, "at most 4096 layers per stack");
    NEED(c->relative_attention_num_buckets >= 4,
         "relative_attention_num_buckets must be >= 4, got %d", c->relative_attention_num_buckets);
    NEED(c->relative_attention_max_distance > c->relative_attention_num_buckets / 2,
         "relative_attention_max_distance (%d) must exceed relative_attention_num_buckets / 2 (%d)",
         c->relative_attention_max_distance, c->relative_attention_num_buckets / 2);
    NEED(c->layer_norm_epsilon > 0.0f, "layer_norm_epsilon must be > 0, got %g",
         (double)c->layer_norm_epsilon);
    NEED(c->dropout_rate >= 0.0f && c->dropout_rate < 1.0f, "dropout_rate must be in [0, 1), got %g",
         (double)c->dropout_rate);
    NEED((double)c->vocab_size * c->d_model < 2e9 && (double)c->num_heads * c->d_kv < 1e6 &&
             (double)c->d_ff * c->d_model < 2e9,
         "model too large");
#undef NEED
    return GS_OK;
}

int gs_t5_new(const gs_t5_config *cfg, gs_t5 **out)
{
    *out = NULL;
    int st = check_config(cfg);
    if (st) return st;
    gs_t5 *m = gs_calloc(sizeof *m);
    if (!m) return gs_fail(GS_ENOMEM, "out of memory allocating the model");
    m->cfg = *cfg;
    m->cfg.gated_gelu = cfg->gated_gelu ? 1 : 0;
    m->cfg.tie_word_embeddings = cfg->tie_word_embeddings ? 1 : 0;
    m->cfg.scale_decoder_outputs = cfg->scale_decoder_outputs ? 1 : 0;
    m->I = cfg->num_heads * cfg->d_kv;
    m->F2 = cfg->gated_gelu ? 2 * cfg->d_ff : cfg->d_ff;
    int max_tensors = 4 + 16 * (cfg->num_layers + cfg->num_decoder_layers);
    m->tensors = gs_calloc(sizeof(gs_t5_tensor) * max_tensors);
    m->enc = gs_calloc(sizeof(block_params) * cfg->num_layers);
    m->dec = gs_calloc(sizeof(block_params) * cfg->num_decoder_layers);
    if (!m->tensors || !m->enc || !m->dec) {
        gs_t5_free(m);
        return gs_fail(GS_ENOMEM, "out of memory allocating the model");
    }
    m->shared = add_tensor(m, 1, 2, cfg->vocab_size, cfg->d_model, "shared.weight");
    build_stack(m, 0);
    build_stack(m, 1);
    m->lm_head = m->shared;
    if (!m->cfg.tie_word_embeddings)
        m->lm_head = add_tensor(m, 1, 2, cfg->vocab_size, cfg->d_model, "lm_head.weight");
    size_t n = m->n_params;
    m->params = gs_calloc(sizeof(float) * n);
    /* GS_T5_GRAD_EXTRA floats after the gradients: see t5.h */
    m->grads = gs_calloc(sizeof(float) * (n + GS_T5_GRAD_EXTRA));
    m->m = gs_calloc(sizeof(float) * n);
    m->v = gs_calloc(sizeof(float) * n);
    m->decay = gs_calloc(n);
    if (!m->params || !m->grads || !m->m || !m->v || !m->decay) {
        gs_t5_free(m);
        return gs_fail(GS_ENOMEM, "out of memory allocating %zu parameters", n);
    }
    for (int i = 0; i < m->n_tensors; i++) {
        const gs_t5_tensor *t = &m->tensors[i];
        size_t sz = (size_t)t->shape[0] * (t->ndim == 2 ? (size_t)t->shape[1] : 1);
        memset(m->decay + t->offset, t->decay, sz);
    }
    *out = m;
    return GS_OK;
}

void gs_t5_free(gs_t5 *m)
{
    if (!m) return;
    gs_free(m->params), gs_free(m->grads), gs_free(m->m), gs_free(m->v), gs_free(m->decay);
    gs_free(m->tensors), gs_free(m->enc), gs_free(m->dec), gs_free(m->ws_base);
    gs_free(m);
}

const gs_t5_config *gs_t5_get_config(const gs_t5 *m) { return &m->cfg; }
size_t gs_t5_num_params(const gs_t5 *m) { return m->n_params; }
float *gs_t5_params(gs_t5 *m) { return m->params; }
float *gs_t5_grads(gs_t5 *m) { return m->grads; }
float *gs_t5_adam_m(gs_t5 *m) { return m->m; }
float *gs_t5_adam_v(gs_t5 *m) { return m->v; }
int gs_t5_num_tensors(const gs_t5 *m) { return m->n_tensors; }
const gs_t5_tensor *gs_t5_tensor_at(const gs_t5 *m, int i)
{
    return i >= 0 && i < m->n_tensors ? &m->tensors[i] : NULL;
}
long gs_t5_step(const gs_t5 *m) { return m->step; }
void gs_t5_set_step(gs_t5 *m, long step) { m->step = step < 0 ? 0 : step; }
size_t gs_t5_workspace_bytes(const gs_t5 *m) { return m->ws_floats * sizeof(float); }
int gs_t5_vocab_size(const gs_t5 *m) { return m->cfg.vocab_size; }

/* ---------------------------------------------------------------- workspace */

/* Lays the workspace of a (B, Te, Td) batch out from `base` (or, base == NULL,
 * only counts) and returns its size in floats. */
static size_t layout_workspace(const gs_t5 *m, int B, int Te, int Td, workspace *w, float *base)
{
    const gs_t5_config *c = &m->cfg;
    const size_t C = c->d_model, I = m->I, F = c->d_ff, F2 = m->F2, H = c->num_heads;
    const size_t Le = c->num_layers, Ld = c->num_decoder_layers, V = c->vocab_size;
    const size_t Ne = (size_t)B * Te, Nd = (size_t)B * Td, Nm = Ne > Nd ? Ne : Nd;
    const size_t Tm = Te > Td ? Te : Td;
    size_t off = 0;
    memset(w, 0, sizeof *w);
    w->Ne = Ne, w->Nd = Nd, w->Nm = Nm;
#define TAKE(field, n)                              \
    do {                                            \
        w->field = base ? base + off : NULL;        \
        off += ((size_t)(n) + 15) & ~(size_t)15;    \
    } while (0)
    TAKE(e_x, Le * Ne * C);
    TAKE(e_rstd1, Le * Ne);
    TAKE(e_qkv, Le * Ne * 3 * I);
    TAKE(e_probs, Le * B * H * Te * Te);
    TAKE(e_att, Le * Ne * I);
    TAKE(e_xmid, Le * Ne * C);
    TAKE(e_rstd2, Le * Ne);
    TAKE(e_hpre, Le * Ne * F2);
    TAKE(e_xfinal, Ne * C);
    TAKE(e_rstdf, Ne);
    TAKE(enc_out, Ne * C);
    TAKE(e_bias, H * Te * Te);
    TAKE(d_y, Ld * Nd * C);
    TAKE(d_rstd1, Ld * Nd);
    TAKE(d_qkv, Ld * Nd * 3 * I);
    TAKE(d_probs, Ld * B * H * Td * Td);
    TAKE(d_att, Ld * Nd * I);
    TAKE(d_ymid1, Ld * Nd * C);
    TAKE(d_rstd2, Ld * Nd);
    TAKE(d_q, Ld * Nd * I);
    TAKE(d_kv, Ld * Ne * 2 * I);
    TAKE(d_cprobs, Ld * B * H * Td * Te);
    TAKE(d_catt, Ld * Nd * I);
    TAKE(d_ymid2, Ld * Nd * C);
    TAKE(d_rstd3, Ld * Nd);
    TAKE(d_hpre, Ld * Nd * F2);
    TAKE(d_yfinal, Nd * C);
    TAKE(d_rstdf, Nd);
    TAKE(dec_out, Nd * C);
    TAKE(d_bias, H * Td * Td);
    TAKE(logits, Nd * V);
    TAKE(ln, Nm * C);
    TAKE(act, Nm * F);
    TAKE(tmp, Nm * C);
    TAKE(tmp2, Nm * C);
    TAKE(g_o, Nm * C);
    TAKE(g_act, Nm * F);
    TAKE(g_h, Nm * F2);
    TAKE(g_att, Nm * I);
    TAKE(g_qkv, Nm * 3 * I);
    TAKE(g_kv, Ne * 2 * I);
    TAKE(dx, Nm * C);
    TAKE(d_enc, Ne * C);
    TAKE(dscores, (size_t)B * H * Tm * Tm);
    TAKE(dbias_e, H * Te * Te);
    TAKE(dbias_d, H * Td * Td);
    TAKE(row_loss, Nd);
#undef TAKE
    return off;
}

static int ensure_workspace(gs_t5 *m, int B, int Te, int Td)
{
    workspace w;
    size_t need = layout_workspace(m, B, Te, Td, &w, NULL);
    if (need > m->ws_floats) {
        gs_free(m->ws_base);
        m->ws_floats = 0;
        m->ws_base = gs_alloc(sizeof(float) * need);
        if (!m->ws_base)
            return gs_fail(GS_ENOMEM, "out of memory: the activations of a batch of %d x (%d, %d) "
                           "tokens need %.1f MB; use smaller batches", B, Te, Td,
                           need * 4.0 / 1048576.0);
        m->ws_floats = need;
    }
    layout_workspace(m, B, Te, Td, &m->ws, m->ws_base);
    return GS_OK;
}

/* ---------------------------------------------------------------- validation */

static int check_ids(const char *what, const int32_t *ids, size_t n, int V)
{
    return gs_check_ids(n, ids, V, what);
}

int gs_t5_check_batch(const gs_t5 *m, int B, int T_in, int K_in, int T_dec, const int32_t *input_ids,
                      const int32_t *attention_mask, const int32_t *decoder_input_ids,
                      const int32_t *labels)
{
    const int V = m->cfg.vocab_size;
    if (B < 1 || T_in < 1 || (decoder_input_ids && T_dec < 1))
        return gs_fail(GS_EINVAL, "empty batch: B=%d, T_in=%d, T_dec=%d must all be >= 1", B, T_in,
                       T_dec);
    if (K_in < 1 || K_in > 64)
        return gs_fail(GS_EINVAL, "input_ids has %d tokens per position; need 1 to 64", K_in);
    if ((double)B * T_in * K_in > 2e9 || (double)B * T_dec * V > 4e9)
        return gs_fail(GS_EINVAL, "batch too large (B=%d, T_in=%d, T_dec=%d)", B, T_in, T_dec);
    int st = gs_check_bag_ids((size_t)B * T_in, K_in, input_ids, V, "input_ids");
    if (st) return st;
    for (int b = 0; b < B; b++) {
        int any = 0;
        for (int t = 0; t < T_in; t++) {
            int32_t v = attention_mask[(size_t)b * T_in + t];
            if (v != 0 && v != 1)
                return gs_fail(GS_EINVAL, "attention_mask[%d, %d] = %d: the mask must hold 0 or 1",
                               b, t, (int)v);
            any |= v;
        }
        if (!any)
            return gs_fail(GS_EINVAL,
                           "attention_mask row %d is all zeros: every input needs at least one "
                           "token", b);
    }
    if (decoder_input_ids &&
        (st = check_ids("decoder_input_ids", decoder_input_ids, (size_t)B * T_dec, V)))
        return st;
    if (labels) {
        size_t count = 0;
        for (size_t i = 0; i < (size_t)B * T_dec; i++) {
            if (labels[i] == -100) continue;
            if (labels[i] < 0 || labels[i] >= V)
                return gs_fail(GS_EINVAL, "labels[%zu] = %d: labels must be in [0, %d) or -100 "
                               "(ignored)", i, (int)labels[i], V);
            count++;
        }
        if (!count)
            return gs_fail(GS_EINVAL, "labels has no target token (every entry is -100)");
    }
    return GS_OK;
}

/* ------------------------------------------------------------ sublayer helpers */

#define GELU_K 0.7978845608028654f /* sqrt(2/pi), as csrc/tensor/ops.c */
static inline float gelu_tanh(float v)
{
    return 0.5f * v * (1.0f + tanhf(GELU_K * (v + 0.044715f * v * v * v)));
}

// a (N,C) += b (N,C)
static void add_inplace(size_t n, float *restrict a, const float *restrict b)
{
#pragma omp parallel for schedule(static) num_threads(gs_num_threads()) if (n > 65536)
    for (size_t i = 0; i < n; i++) a[i] += b[i];
}

// x (N,C), rstd (N) saved by the forward pass, w (C) -> y (N,C) = x * rstd * w, bit-identical to
// gs_rmsnorm_forward (so the backward pass recomputes normalised inputs instead of storing them)
static void rms_recompute(size_t N, int C, const float *x, const float *rstd, const float *w,
                          float *y)
{
#pragma omp parallel for schedule(static) num_threads(gs_num_threads()) if (N * C > 32768)
    for (size_t n = 0; n < N; n++) {
        float s = rstd[n];
        for (int j = 0; j < C; j++) y[n * C + j] = x[n * C + j] * s * w[j];
    }
}

// hpre (N,F2) -> act (N,F): relu(h), or gelu_tanh(h[:, :F]) * h[:, F:] (gated); then dropout
static void ffn_activation(const gs_t5 *m, size_t N, const float *hpre, float *act, float p,
                           uint64_t seed, uint64_t stream)
{
    const int F = m->cfg.d_ff;
    if (m->cfg.gated_gelu) {
#pragma omp parallel for schedule(static) num_threads(gs_num_threads()) if (N * F > 32768)
        for (size_t n = 0; n < N; n++)
            for (int f = 0; f < F; f++)
                act[n * F + f] = gelu_tanh(hpre[n * 2 * F + f]) * hpre[n * 2 * F + F + f];
        gs_dropout(N * F, p, seed, stream, act, act);
    } else {
        gs_relu_dropout_forward(N * F, p, seed, stream, hpre, act); /* one pass */
    }
}

// ln (N,C) -> hpre (N,F2) = ln @ wi^T, act (N,F), out (N,C) = act @ wo^T
static void ffn_forward(const gs_t5 *m, size_t N, const float *ln, const block_params *b,
                        float *hpre, float *act, float *out, float p, uint64_t seed,
                        uint64_t stream)
{
    const float *P = m->params;
    const int C = m->cfg.d_model, F = m->cfg.d_ff;
    gs_linear_forward(N, C, m->F2, ln, P + b->wi, NULL, hpre);
    ffn_activation(m, N, hpre, act, p, seed, stream);
    gs_linear_forward(N, F, C, act, P + b->wo, NULL, out);
}

// dout (N,C) -> dln (N,C) OVERWRITTEN; dwi, dwo ACCUMULATED. act, g_act, g_h are scratch.
static void ffn_backward(gs_t5 *m, size_t N, const float *ln, const block_params *b,
                         const float *hpre, float *act, const float *dout, float *g_act,
                         float *g_h, float *dln, float p, uint64_t seed, uint64_t stream)
{
    const float *P = m->params;
    float *G = m->grads;
    const int C = m->cfg.d_model, F = m->cfg.d_ff;
    ffn_activation(m, N, hpre, act, p, seed, stream); /* recompute, same masks */
    gs_linear_backward(N, F, C, act, P + b->wo, dout, g_act, G + b->wo, NULL);
    if (m->cfg.gated_gelu) {
        gs_dropout(N * F, p, seed, stream, g_act, g_act);
#pragma omp parallel for schedule(static) num_threads(gs_num_threads()) if (N * F > 32768)
        for (size_t n = 0; n < N; n++)
            for (int f = 0; f < F; f++) {
                float h0 = hpre[n * 2 * F + f], h1 = hpre[n * 2 * F + F + f];
                float t = tanhf(GELU_K * (h0 + 0.044715f * h0 * h0 * h0));
                float dt = GELU_K * (1.0f + 3.0f * 0.044715f * h0 * h0) * (1.0f - t * t);
                float g = 0.5f * h0 * (1.0f + t), dg = 0.5f * (1.0f + t) + 0.5f * h0 * dt;
                float ga = g_act[n * F + f];
                g_h[n * 2 * F + f] = ga * h1 * dg;
                g_h[n * 2 * F + F + f] = ga * g;
            }
    } else {
        gs_relu_dropout_backward(N * F, p, seed, stream, hpre, g_act, g_h); /* one pass */
    }
    gs_linear_backward(N, C, m->F2, ln, P + b->wi, g_h, dln, G + b->wi, NULL);
}

static gs_attention_args attn_args(const gs_t5 *m, int B, int Tq, int Tk, int ldq, int ldkv,
                                   int causal, const int32_t *key_mask, const float *bias,
                                   float p, uint64_t seed, uint64_t stream)
{
    gs_attention_args a;
    memset(&a, 0, sizeof a);
    a.B = B, a.H = m->cfg.num_heads, a.Tq = Tq, a.Tk = Tk, a.dh = m->cfg.d_kv;
    a.ldq = ldq, a.ldk = ldkv, a.ldv = ldkv, a.ldo = m->I;
    a.scale = 1.0f; /* T5: no 1/sqrt(d_kv) */
    a.causal = causal, a.key_mask = key_mask, a.pos_bias = bias;
    a.dropout_p = p, a.dropout_seed = seed, a.dropout_stream = stream;
    return a;
}

/* ------------------------------------------------------------------ forward */

static int encoder_forward(const gs_t5 *m, const workspace *w, int B, int T, int K, const int32_t *ids,
                            const int32_t *mask, float p, uint64_t seed)
{
    const gs_t5_config *c = &m->cfg;
    const float *P = m->params;
    const int C = c->d_model, I = m->I, F2 = m->F2, H = c->num_heads;
    const size_t N = (size_t)B * T, NC = N * C;
    const float eps = c->layer_norm_epsilon;
    int st;
    gs_relative_bias_forward(H, T, T, 0, 1, c->relative_attention_num_buckets,
                             c->relative_attention_max_distance, P + m->enc[0].rel_bias, w->e_bias);
    gs_embedding_bag_forward(N, K, C, ids, P + m->shared, w->e_x);
    gs_dropout(NC, p, seed, STREAM(0, -1, SITE_EMB), w->e_x, w->e_x);
    for (int l = 0; l < c->num_layers; l++) {
        const block_params *b = &m->enc[l];
        float *x = w->e_x + l * NC, *xm = w->e_xmid + l * NC;
        float *xn = l + 1 < c->num_layers ? w->e_x + (l + 1) * NC : w->e_xfinal;
        float *qkv = w->e_qkv + l * N * 3 * I, *att = w->e_att + l * N * I;
        // self-attention: xm = x + drop(o(attn(rmsnorm(x))))
        gs_rmsnorm_forward(N, C, x, P + b->ln_sa, eps, w->ln, w->e_rstd1 + l * N);
        gs_linear_forward(N, C, 3 * I, w->ln, P + b->qkv, NULL, qkv);
        gs_attention_args a = attn_args(m, B, T, T, 3 * I, 3 * I, 0, mask, w->e_bias, p, seed,
                                        STREAM(0, l, SITE_SA_P));
        if ((st = gs_attention_forward(&a, qkv, qkv + I, qkv + 2 * I, w->e_probs + (size_t)l * B * H * T * T,
                             att))) return st;
        gs_linear_forward(N, I, C, att, P + b->o_sa, NULL, w->tmp);
        gs_dropout_add(NC, p, seed, STREAM(0, l, SITE_SA_OUT), x, w->tmp, xm); /* xm = x + drop(tmp) */
        // feed-forward: xn = xm + drop(ffn(rmsnorm(xm)))
        gs_rmsnorm_forward(N, C, xm, P + b->ln_ff, eps, w->ln, w->e_rstd2 + l * N);
        ffn_forward(m, N, w->ln, b, w->e_hpre + l * N * F2, w->act, w->tmp, p, seed,
                    STREAM(0, l, SITE_FF_HID));
        gs_dropout_add(NC, p, seed, STREAM(0, l, SITE_FF_OUT), xm, w->tmp, xn); /* xn = xm + drop(tmp) */
    }
    gs_rmsnorm_forward(N, C, w->e_xfinal, P + m->enc_final_ln, eps, w->enc_out, w->e_rstdf);
    gs_dropout(NC, p, seed, STREAM(0, -1, SITE_FINAL), w->enc_out, w->enc_out);
    return GS_OK;
}

/* Decoder over the encoder output in w->enc_out -> logits (B*Td, V). */
static int decoder_forward(const gs_t5 *m, const workspace *w, int B, int Te, int Td,
                            const int32_t *dec_ids, const int32_t *mask, float p, uint64_t seed,
                            float *logits)
{
    const gs_t5_config *c = &m->cfg;
    const float *P = m->params;
    const int C = c->d_model, I = m->I, F2 = m->F2, H = c->num_heads;
    const size_t N = (size_t)B * Td, Ne = (size_t)B * Te, NC = N * C;
    const float eps = c->layer_norm_epsilon;
    int st;
    gs_relative_bias_forward(H, Td, Td, 0, 0, c->relative_attention_num_buckets,
                             c->relative_attention_max_distance, P + m->dec[0].rel_bias, w->d_bias);
    gs_embedding_forward(N, C, dec_ids, P + m->shared, w->d_y);
    gs_dropout(NC, p, seed, STREAM(1, -1, SITE_EMB), w->d_y, w->d_y);
    for (int l = 0; l < c->num_decoder_layers; l++) {
        const block_params *b = &m->dec[l];
        float *y = w->d_y + l * NC, *ym1 = w->d_ymid1 + l * NC, *ym2 = w->d_ymid2 + l * NC;
        float *yn = l + 1 < c->num_decoder_layers ? w->d_y + (l + 1) * NC : w->d_yfinal;
        float *qkv = w->d_qkv + l * N * 3 * I, *att = w->d_att + l * N * I;
        float *q = w->d_q + l * N * I, *kv = w->d_kv + l * Ne * 2 * I, *catt = w->d_catt + l * N * I;
        // causal self-attention
        gs_rmsnorm_forward(N, C, y, P + b->ln_sa, eps, w->ln, w->d_rstd1 + l * N);
        gs_linear_forward(N, C, 3 * I, w->ln, P + b->qkv, NULL, qkv);
        gs_attention_args a = attn_args(m, B, Td, Td, 3 * I, 3 * I, 1, NULL, w->d_bias, p, seed,
                                        STREAM(1, l, SITE_SA_P));
        if ((st = gs_attention_forward(&a, qkv, qkv + I, qkv + 2 * I,
                             w->d_probs + (size_t)l * B * H * Td * Td, att))) return st;
        gs_linear_forward(N, I, C, att, P + b->o_sa, NULL, w->tmp);
        gs_dropout_add(NC, p, seed, STREAM(1, l, SITE_SA_OUT), y, w->tmp, ym1); /* ym1 = y + drop(tmp) */
        // cross-attention over the encoder output (padding keys masked, no position bias)
        gs_rmsnorm_forward(N, C, ym1, P + b->ln_ca, eps, w->ln, w->d_rstd2 + l * N);
        gs_linear_forward(N, C, I, w->ln, P + b->q_ca, NULL, q);
        gs_linear_forward(Ne, C, 2 * I, w->enc_out, P + b->kv_ca, NULL, kv);
        gs_attention_args ca = attn_args(m, B, Td, Te, I, 2 * I, 0, mask, NULL, p, seed,
                                         STREAM(1, l, SITE_CA_P));
        if ((st = gs_attention_forward(&ca, q, kv, kv + I, w->d_cprobs + (size_t)l * B * H * Td * Te, catt))) return st;
        gs_linear_forward(N, I, C, catt, P + b->o_ca, NULL, w->tmp);
        gs_dropout_add(NC, p, seed, STREAM(1, l, SITE_CA_OUT), ym1, w->tmp, ym2); /* ym2 = ym1 + drop(tmp) */
        // feed-forward
        gs_rmsnorm_forward(N, C, ym2, P + b->ln_ff, eps, w->ln, w->d_rstd3 + l * N);
        ffn_forward(m, N, w->ln, b, w->d_hpre + l * N * F2, w->act, w->tmp, p, seed,
                    STREAM(1, l, SITE_FF_HID));
        gs_dropout_add(NC, p, seed, STREAM(1, l, SITE_FF_OUT), ym2, w->tmp, yn); /* yn = ym2 + drop(tmp) */
    }
    gs_rmsnorm_forward(N, C, w->d_yfinal, P + m->dec_final_ln, eps, w->dec_out, w->d_rstdf);
    gs_dropout(NC, p, seed, STREAM(1, -1, SITE_FINAL), w->dec_out, w->dec_out);
    if (c->scale_decoder_outputs) { /* T5: rescale before the tied projection */
        const float s = 1.0f / sqrtf((float)C);
#pragma omp parallel for schedule(static) num_threads(gs_num_threads()) if (NC > 65536)
        for (size_t i = 0; i < NC; i++) w->dec_out[i] *= s;
    }
    // dec_out (N,C) @ head^T (C,V) -> logits (N,V)
    gs_linear_forward(N, C, c->vocab_size, w->dec_out, P + m->lm_head, NULL, logits);
    return GS_OK;
}

/* ----------------------------------------------------------------- backward */

/* Self-attention sublayer backward. dres (N,C): gradient of the residual stream after the
 * sublayer; on return it holds the gradient before it (x). */
static int self_attention_backward(gs_t5 *m, const workspace *w, const block_params *b, int B,
                                    int T, int causal, const int32_t *mask, const float *x,
                                    const float *rstd, const float *qkv, const float *probs,
                                    const float *att, const float *bias, float *dbias, float *dres,
                                    float p, uint64_t seed, int stack, int l)
{
    const float *P = m->params;
    float *G = m->grads;
    const int C = m->cfg.d_model, I = m->I;
    const size_t N = (size_t)B * T;
    int st;
    gs_dropout(N * C, p, seed, STREAM(stack, l, SITE_SA_OUT), dres, w->g_o);
    gs_linear_backward(N, I, C, att, P + b->o_sa, w->g_o, w->g_att, G + b->o_sa, NULL);
    gs_attention_args a = attn_args(m, B, T, T, 3 * I, 3 * I, causal, mask, bias, p, seed,
                                    STREAM(stack, l, SITE_SA_P));
    float *gq = w->g_qkv;
    if ((st = gs_attention_backward(&a, qkv, qkv + I, qkv + 2 * I, probs, w->g_att, w->dscores, gq, gq + I,
                          gq + 2 * I, dbias))) return st;
    rms_recompute(N, C, x, rstd, P + b->ln_sa, w->ln);
    gs_linear_backward(N, C, 3 * I, w->ln, P + b->qkv, gq, w->tmp2, G + b->qkv, NULL);
    gs_rmsnorm_backward(N, C, x, P + b->ln_sa, rstd, w->tmp2, w->tmp, G + b->ln_sa);
    add_inplace(N * C, dres, w->tmp);
    return GS_OK;
}

/* Feed-forward sublayer backward, same convention as above. */
static void ffn_sublayer_backward(gs_t5 *m, const workspace *w, const block_params *b, size_t N,
                                  const float *x, const float *rstd, const float *hpre,
                                  float *dres, float p, uint64_t seed, int stack, int l)
{
    const float *P = m->params;
    float *G = m->grads;
    const int C = m->cfg.d_model;
    gs_dropout(N * C, p, seed, STREAM(stack, l, SITE_FF_OUT), dres, w->g_o);
    rms_recompute(N, C, x, rstd, P + b->ln_ff, w->ln);
    ffn_backward(m, N, w->ln, b, hpre, w->act, w->g_o, w->g_act, w->g_h, w->tmp2, p, seed,
                 STREAM(stack, l, SITE_FF_HID));
    gs_rmsnorm_backward(N, C, x, P + b->ln_ff, rstd, w->tmp2, w->tmp, G + b->ln_ff);
    add_inplace(N * C, dres, w->tmp);
}

/* w->logits must hold dL/dlogits. Grads are accumulated (callers zero them first). */
static int t5_backward(gs_t5 *m, const workspace *w, int B, int Te, int Ke, int Td, const int32_t *ids,
                        const int32_t *mask, const int32_t *dec_ids, float p, uint64_t seed)
{
    const gs_t5_config *c = &m->cfg;
    const float *P = m->params;
    float *G = m->grads;
    const int C = c->d_model, I = m->I, F2 = m->F2, H = c->num_heads;
    const int nb = c->relative_attention_num_buckets, maxd = c->relative_attention_max_distance;
    const size_t N = (size_t)B * Td, Ne = (size_t)B * Te, NC = N * C, NeC = Ne * C;
    float *dy = w->dx;
    int st;
    // lm head: dec_out (N,C) -> logits; dy = dlogits @ head, dhead += dlogits^T @ dec_out
    gs_linear_backward(N, C, c->vocab_size, w->dec_out, P + m->lm_head, w->logits, dy,
                       G + m->lm_head, NULL);
    if (c->scale_decoder_outputs) {
        const float s = 1.0f / sqrtf((float)C);
        for (size_t i = 0; i < NC; i++) dy[i] *= s;
    }
    gs_dropout(NC, p, seed, STREAM(1, -1, SITE_FINAL), dy, dy);
    gs_rmsnorm_backward(N, C, w->d_yfinal, P + m->dec_final_ln, w->d_rstdf, dy, w->tmp,
                        G + m->dec_final_ln);
    memcpy(dy, w->tmp, sizeof(float) * NC);
    memset(w->dbias_d, 0, sizeof(float) * H * Td * Td);
    memset(w->d_enc, 0, sizeof(float) * NeC);
    for (int l = c->num_decoder_layers - 1; l >= 0; l--) {
        const block_params *b = &m->dec[l];
        const float *y = w->d_y + l * NC, *ym1 = w->d_ymid1 + l * NC, *ym2 = w->d_ymid2 + l * NC;
        const float *q = w->d_q + l * N * I, *kv = w->d_kv + l * Ne * 2 * I;
        ffn_sublayer_backward(m, w, b, N, ym2, w->d_rstd3 + l * N, w->d_hpre + l * N * F2, dy, p,
                              seed, 1, l);
        // cross-attention
        gs_dropout(NC, p, seed, STREAM(1, l, SITE_CA_OUT), dy, w->g_o);
        gs_linear_backward(N, I, C, w->d_catt + l * N * I, P + b->o_ca, w->g_o, w->g_att,
                           G + b->o_ca, NULL);
        gs_attention_args ca = attn_args(m, B, Td, Te, I, 2 * I, 0, mask, NULL, p, seed,
                                         STREAM(1, l, SITE_CA_P));
        float *gq = w->g_qkv, *gkv = w->g_kv;
        if ((st = gs_attention_backward(&ca, q, kv, kv + I, w->d_cprobs + (size_t)l * B * H * Td * Te,
                              w->g_att, w->dscores, gq, gkv, gkv + I, NULL))) return st;
        // kv = enc_out @ Wkv^T: d_enc (Ne,C) += gkv (Ne,2I) @ Wkv (2I,C); dWkv += gkv^T @ enc_out
        gs_sgemm(0, 0, (int)Ne, C, 2 * I, 1.0f, gkv, 2 * I, P + b->kv_ca, C, 1.0f, w->d_enc, C);
        gs_sgemm(1, 0, 2 * I, C, (int)Ne, 1.0f, gkv, 2 * I, w->enc_out, C, 1.0f, G + b->kv_ca, C);
        rms_recompute(N, C, ym1, w->d_rstd2 + l * N, P + b->ln_ca, w->ln);
        gs_linear_backward(N, C, I, w->ln, P + b->q_ca, gq, w->tmp2, G + b->q_ca, NULL);
        gs_rmsnorm_backward(N, C, ym1, P + b->ln_ca, w->d_rstd2 + l * N, w->tmp2, w->tmp,
                            G + b->ln_ca);
        add_inplace(NC, dy, w->tmp);
        st = self_attention_backward(m, w, b, B, Td, 1, NULL, y, w->d_rstd1 + l * N,
                                w->d_qkv + l * N * 3 * I, w->d_probs + (size_t)l * B * H * Td * Td,
                                w->d_att + l * N * I, w->d_bias, w->dbias_d, dy, p, seed, 1, l);
        if (st) return st;
    }
    gs_dropout(NC, p, seed, STREAM(1, -1, SITE_EMB), dy, dy);
    gs_embedding_backward(N, C, dec_ids, dy, G + m->shared);
    gs_relative_bias_backward(H, Td, Td, 0, 0, nb, maxd, w->dbias_d, G + m->dec[0].rel_bias);

    // encoder: the gradient of its output collected from every cross-attention
    float *dx = w->dx;
    gs_dropout(NeC, p, seed, STREAM(0, -1, SITE_FINAL), w->d_enc, w->d_enc);
    gs_rmsnorm_backward(Ne, C, w->e_xfinal, P + m->enc_final_ln, w->e_rstdf, w->d_enc, dx,
                        G + m->enc_final_ln);
    memset(w->dbias_e, 0, sizeof(float) * H * Te * Te);
    for (int l = c->num_layers - 1; l >= 0; l--) {
        const block_params *b = &m->enc[l];
        ffn_sublayer_backward(m, w, b, Ne, w->e_xmid + l * NeC, w->e_rstd2 + l * Ne,
                              w->e_hpre + l * Ne * F2, dx, p, seed, 0, l);
        st = self_attention_backward(m, w, b, B, Te, 0, mask, w->e_x + l * NeC, w->e_rstd1 + l * Ne,
                                w->e_qkv + l * Ne * 3 * I,
                                w->e_probs + (size_t)l * B * H * Te * Te, w->e_att + l * Ne * I,
                                w->e_bias, w->dbias_e, dx, p, seed, 0, l);
        if (st) return st;
    }
    gs_dropout(NeC, p, seed, STREAM(0, -1, SITE_EMB), dx, dx);
    gs_embedding_bag_backward(Ne, Ke, C, ids, dx, G + m->shared);
    gs_relative_bias_backward(H, Te, Te, 0, 1, nb, maxd, w->dbias_e, G + m->enc[0].rel_bias);
    return GS_OK;
}

/* ---------------------------------------------------------------- public API */

int gs_t5_logits(gs_t5 *m, int B, int T_in, int K_in, int T_dec, const int32_t *input_ids,
                 const int32_t *attention_mask, const int32_t *decoder_input_ids, float *logits)
{
    int st = gs_t5_check_batch(m, B, T_in, K_in, T_dec, input_ids, attention_mask, decoder_input_ids, NULL);
    if (st || (st = ensure_workspace(m, B, T_in, T_dec))) return st;
    if ((st = encoder_forward(m, &m->ws, B, T_in, K_in, input_ids, attention_mask, 0.0f, 0))) return st;
    return decoder_forward(m, &m->ws, B, T_in, T_dec, decoder_input_ids, attention_mask, 0.0f, 0,
                           logits);
}

/* Checks that every counted label is allowed at its position (else its loss would be
 * infinite), then sets the logits of the tokens not allowed to -1e30: their softmax
 * probability, and so their gradient, is exactly 0. */
static int mask_logits(size_t N, int T_dec, int V, const int32_t *labels, const uint8_t *allowed,
                       float *logits)
{
    for (size_t i = 0; i < N; i++)
        if (labels[i] != -100 && !allowed[i * V + labels[i]])
            return gs_fail(GS_EINVAL, "labels[%zu, %zu] = %d is not among the tokens allowed there",
                           i / (size_t)T_dec, i % (size_t)T_dec, labels[i]);
#pragma omp parallel for schedule(static) num_threads(gs_num_threads()) if (N * (size_t)V > 65536)
    for (size_t i = 0; i < N; i++) {
        const uint8_t *a = allowed + i * V;
        float *z = logits + i * V;
        for (int j = 0; j < V; j++)
            if (!a[j]) z[j] = -1e30f;  /* finite: exp() gives 0 without inf - inf */
    }
    return GS_OK;
}

int gs_t5_forward_backward(gs_t5 *m, int B, int T_in, int K_in, int T_dec, const int32_t *input_ids,
                           const int32_t *attention_mask, const int32_t *decoder_input_ids,
                           const int32_t *labels, const uint8_t *allowed, int dropout,
                           uint64_t dropout_seed, float *loss)
{
    int st = gs_t5_check_batch(m, B, T_in, K_in, T_dec, input_ids, attention_mask, decoder_input_ids,
                               labels);
    if (st || (st = ensure_workspace(m, B, T_in, T_dec))) return st;
    const workspace *w = &m->ws;
    const float p = dropout ? m->cfg.dropout_rate : 0.0f;
    const size_t N = (size_t)B * T_dec;
    if ((st = encoder_forward(m, w, B, T_in, K_in, input_ids, attention_mask, p, dropout_seed)) ||
        (st = decoder_forward(m, w, B, T_in, T_dec, decoder_input_ids, attention_mask, p,
                              dropout_seed, w->logits)))
        return st;
    if (allowed && (st = mask_logits(N, T_dec, m->cfg.vocab_size, labels, allowed, w->logits))) return st;
    double sum;
    size_t count;
    st = gs_cross_entropy_forward_backward(N, m->cfg.vocab_size, w->logits, labels, -100, w->row_loss,
                                           &sum, &count, w->logits); /* logits become dlogits */
    if (st) return st;
    *loss = (float)(sum / (double)count);
    memset(m->grads, 0, sizeof(float) * m->n_params);
    return t5_backward(m, w, B, T_in, K_in, T_dec, input_ids, attention_mask, decoder_input_ids, p,
                       dropout_seed);
}

int gs_t5_train_grads(gs_t5 *m, int B, int T_in, int K_in, int T_dec, const int32_t *input_ids,
                      const int32_t *attention_mask, const int32_t *decoder_input_ids,
                      const int32_t *labels, const uint8_t *allowed, uint64_t dropout_seed, float *loss)
{
    /* a fresh mask per step, fixed by (seed, step) */
    uint64_t seed = dropout_seed * 0x9e3779b97f4a7c15ULL + (uint64_t)m->step * 0xd1b54a32d192ed03ULL;
    return gs_t5_forward_backward(m, B, T_in, K_in, T_dec, input_ids, attention_mask, decoder_input_ids,
                                  labels, allowed, 1, seed, loss);
}

static int check_train_config(const gs_t5_train_config *tc, gs_adamw_config *ac)
{
    *ac = (gs_adamw_config){tc->lr, tc->beta1, tc->beta2, tc->eps, tc->weight_decay};
    int st = gs_adamw_check(ac, 0, NULL, NULL, NULL, NULL);
    return st ? st : gs_check_max_grad_norm(tc->max_grad_norm);
}

int gs_t5_apply_grads(gs_t5 *m, const gs_t5_train_config *tc, float *grad_norm)
{
    gs_adamw_config ac;
    int st = check_train_config(tc, &ac);
    if (st) return st;
    double norm = gs_clip_grad_norm(m->n_params, m->grads, tc->max_grad_norm);
    if (grad_norm) *grad_norm = (float)norm;
    if (!isfinite(norm))
        return gs_fail(GS_ERUNTIME, "the gradient is not finite; parameters left unchanged; "
                       "lower the learning rate");
    m->step++;
    gs_adamw_step(m->n_params, m->params, m->grads, m->m, m->v, m->decay, &ac, m->step);
    return GS_OK;
}

int gs_t5_train_step(gs_t5 *m, int B, int T_in, int K_in, int T_dec, const int32_t *input_ids,
                     const int32_t *attention_mask, const int32_t *decoder_input_ids,
                     const int32_t *labels, const uint8_t *allowed, const gs_t5_train_config *tc,
                     float *loss, float *grad_norm)
{
    gs_adamw_config ac;
    int st = check_train_config(tc, &ac); /* before the costly forward pass */
    if (st || (st = gs_t5_train_grads(m, B, T_in, K_in, T_dec, input_ids, attention_mask,
                                      decoder_input_ids, labels, allowed, tc->dropout_seed, loss)))
        return st;
    st = gs_t5_apply_grads(m, tc, grad_norm);
    if (st == GS_ERUNTIME)
        return gs_fail(GS_ERUNTIME, "the gradient is not finite (loss %g); parameters left "
                       "unchanged; lower the learning rate", (double)*loss);
    return st;
}

/* ------------------------------------------------------ cached decoding */

/* the decoder projections a decoding step multiplies by, per layer */
enum { W_QKV, W_O_SA, W_Q_CA, W_O_CA, W_WI, W_WO, N_DECODE_WEIGHTS };

struct gs_t5_cache {
    int B, rows_per_input, rows, T_in, max_steps, t;
    int Ld, I;              /* decoder layers and attention width of the model */
    const gs_t5 *model;     /* the model that encoded the inputs */
    int32_t *mask;          /* (B, T_in) */
    float *kv_cross;        /* (Ld, B*T_in, 2I): cross-attention K,V of every input */
    float *k_self, *v_self; /* (Ld, rows, max_steps, I) */
    float *x, *ln, *tmp, *qkv, *q, *att, *hpre, *act, *probs, *bias, *rstd, *reorder;
    float *base;            /* one block for all the floats above and below */
    int in_call;            /* base is the thread's GS_SCRATCH_DECODE block (gs_t5_cache_new_in_call) */
    float *head_data;       /* room for the LM head, packed on first use of the log-sum-exp */
    gs_packed_b head;
    /* Each decoder layer's projections packed once per cache, not once per step as
     * gs_sgemm would: with a few rows per step, packing the weights costs more than
     * the product. The cache is tied to the weights it encoded with anyway. */
    gs_packed_b (*w)[N_DECODE_WEIGHTS];
    int32_t *tok;           /* (rows) tokens of the rows that run in a sparse step */
};

/* y (R, pb->N) = x (R, pb->K) @ W^T, W packed by pack_decoder_weights */
static void packed_linear(size_t R, const float *x, const gs_packed_b *pb, float *y)
{
    gs_sgemm_packed_b((int)R, pb->N, x, pb->K, pb, 0, y, pb->N); /* j0 = 0 always valid */
}

/* The decoder projections of layer l: offset of W (OC, C) in the parameters,
 * OC and C, in the order of the W_* names. */
static void decode_weight_shapes(const gs_t5 *m, int l, size_t off[], int oc[], int ic[])
{
    const block_params *b = &m->dec[l];
    const int C = m->cfg.d_model, I = m->I, F = m->cfg.d_ff;
    const size_t o[N_DECODE_WEIGHTS] = {b->qkv, b->o_sa, b->q_ca, b->o_ca, b->wi, b->wo};
    const int out[N_DECODE_WEIGHTS] = {3 * I, C, I, C, m->F2, C};
    const int in[N_DECODE_WEIGHTS] = {C, I, C, I, C, F};
    for (int i = 0; i < N_DECODE_WEIGHTS; i++) off[i] = o[i], oc[i] = out[i], ic[i] = in[i];
}

static int cache_new(const gs_t5 *m, const int32_t *input_ids, const int32_t *attention_mask, int B,
                     int T_in, int K_in, int rows_per_input, int max_steps, int in_call, gs_t5_cache **out)
{
    *out = NULL;
    if (rows_per_input < 1 || max_steps < 1)
        return gs_fail(GS_EINVAL, "rows_per_input and max_steps must be >= 1, got %d and %d",
                       rows_per_input, max_steps);
    if ((double)B * rows_per_input > 1e8 || max_steps > 1000000)
        return gs_fail(GS_EINVAL, "too many decoding rows or steps");
    int st = gs_t5_check_batch(m, B, T_in, K_in, 1, input_ids, attention_mask, NULL, NULL);
    if (st) return st;
    const gs_t5_config *c = &m->cfg;
    const size_t C = c->d_model, I = m->I, F = c->d_ff, F2 = m->F2, H = c->num_heads;
    const size_t Ld = c->num_decoder_layers;
    const size_t Ne = (size_t)B * T_in, R = (size_t)B * rows_per_input, S = max_steps;
    const size_t Tm = (size_t)T_in > S ? (size_t)T_in : S;
    gs_t5_cache *k = gs_calloc(sizeof *k);
    if (!k) return gs_fail(GS_ENOMEM, "out of memory allocating a decoding cache");
    k->B = B, k->rows_per_input = rows_per_input, k->rows = (int)R, k->T_in = T_in;
    k->max_steps = max_steps, k->t = 0;
    k->Ld = (int)Ld, k->I = (int)I, k->model = m;
    size_t sizes[] = {Ld * Ne * 2 * I, Ld * R * S * I, Ld * R * S * I, R * C, R * C, R * C,
                      R * 3 * I, R * I, R * I, R * F2, R * F, R * H * Tm, H * S, R,
                      R * S * I};
    size_t total = 0;
    for (size_t i = 0; i < sizeof sizes / sizeof *sizes; i++) total += (sizes[i] + 15) & ~(size_t)15;
    size_t w_off[N_DECODE_WEIGHTS];
    int w_oc[N_DECODE_WEIGHTS], w_ic[N_DECODE_WEIGHTS];
    const size_t states = total;
    for (size_t l = 0; l < Ld; l++) {
        decode_weight_shapes(m, (int)l, w_off, w_oc, w_ic);
        for (int i = 0; i < N_DECODE_WEIGHTS; i++) total += gs_packed_b_floats(w_ic[i], w_oc[i]);
    }
    const size_t head_at = total;
    total += gs_packed_b_floats((int)C, c->vocab_size);
    /* in a call, kept per thread: a fresh block of this size per request would be
     * fresh pages, whose zeroing costs more than the decoding itself */
    k->in_call = in_call;
    k->base = in_call ? gs_scratch_get(GS_SCRATCH_DECODE, sizeof(float) * total) : gs_alloc(sizeof(float) * total);
    k->w = gs_calloc(sizeof *k->w * Ld);
    k->mask = gs_alloc(sizeof(int32_t) * Ne);
    k->tok = gs_alloc(sizeof(int32_t) * R);
    if (!k->base || !k->w || !k->mask || !k->tok) {
        gs_t5_cache_free(k);
        return gs_fail(GS_ENOMEM, "out of memory: a decoding cache of %zu rows x %d steps needs "
                       "%.1f MB", R, max_steps, total * 4.0 / 1048576.0);
    }
    float **slots[] = {&k->kv_cross, &k->k_self, &k->v_self, &k->x, &k->ln, &k->tmp, &k->qkv, &k->q,
                       &k->att, &k->hpre, &k->act, &k->probs, &k->bias, &k->rstd, &k->reorder};
    size_t off = 0;
    for (size_t i = 0; i < sizeof sizes / sizeof *sizes; i++) {
        *slots[i] = k->base + off;
        off += (sizes[i] + 15) & ~(size_t)15;
    }
    for (size_t l = 0, at = states; l < Ld; l++) {
        decode_weight_shapes(m, (int)l, w_off, w_oc, w_ic);
        for (int i = 0; i < N_DECODE_WEIGHTS; i++) {
            gs_packed_b_pack(1, w_ic[i], w_oc[i], m->params + w_off[i], w_ic[i], k->base + at, &k->w[l][i]);
            at += gs_packed_b_floats(w_ic[i], w_oc[i]);
        }
    }
    k->head_data = k->base + head_at;
    memcpy(k->mask, attention_mask, sizeof(int32_t) * Ne);
    /* run the encoder once in a temporary workspace, keep only the cross K,V */
    workspace w;
    size_t need = layout_workspace(m, B, T_in, 1, &w, NULL);
    float *wbase = gs_scratch_get(GS_SCRATCH_MODEL_TMP, sizeof(float) * need);
    if (!wbase) {
        gs_t5_cache_free(k);
        return gs_fail(GS_ENOMEM, "out of memory encoding %d inputs for decoding", B);
    }
    layout_workspace(m, B, T_in, 1, &w, wbase);
    st = encoder_forward(m, &w, B, T_in, K_in, input_ids, attention_mask, 0.0f, 0);
    if (!st)
        for (size_t l = 0; l < Ld; l++)
            gs_linear_forward(Ne, (int)C, (int)(2 * I), w.enc_out, m->params + m->dec[l].kv_ca, NULL,
                              k->kv_cross + l * Ne * 2 * I);
    gs_scratch_put(GS_SCRATCH_MODEL_TMP, wbase);
    if (st) {
        gs_t5_cache_free(k);
        return st;
    }
    *out = k;
    return GS_OK;
}

int gs_t5_cache_new(const gs_t5 *m, const int32_t *input_ids, const int32_t *attention_mask, int B,
                    int T_in, int K_in, int rows_per_input, int max_steps, gs_t5_cache **out)
{
    return cache_new(m, input_ids, attention_mask, B, T_in, K_in, rows_per_input, max_steps, 0, out);
}

int gs_t5_cache_new_in_call(const gs_t5 *m, const int32_t *input_ids, const int32_t *attention_mask, int B,
                            int T_in, int K_in, int rows_per_input, int max_steps, gs_t5_cache **out)
{
    return cache_new(m, input_ids, attention_mask, B, T_in, K_in, rows_per_input, max_steps, 1, out);
}

/* 1 when live marks exactly the first row of each input: the first steps of a
 * beam search (the root, then a lone behaviour token) have one beam per input. */
static int only_first_rows_live(const gs_t5_cache *k, const uint8_t *live)
{
    if (!live || k->rows_per_input == 1) return 0;
    for (int r = 0; r < k->rows; r++)
        if (!live[r] != (r % k->rows_per_input != 0)) return 0;
    return 1;
}

/* Runs the decoder layers for one new token per row; leaves the final-norm output
 * (scaled for a tied head) in k->ln (rows, C), the LM head's input. When only the
 * first row of each input is live (live may be NULL: all rows), only those rows
 * run: the others keep a stale history at this position, which beam search
 * overwrites by reordering before it uses them. */
static int decode_layers(const gs_t5 *m, gs_t5_cache *k, const int32_t *tokens, const uint8_t *live)
{
    const gs_t5_config *c = &m->cfg;
    if (k->model != m)
        return gs_fail(GS_EINVAL, "this decoding cache was made by another model");
    if (k->t >= k->max_steps)
        return gs_fail(GS_EINVAL, "the decoding cache is full: max_steps = %d steps were taken",
                       k->max_steps);
    int st = gs_check_ids((size_t)k->rows, tokens, c->vocab_size, "tokens");
    if (st) return st;
    const float *P = m->params;
    const int C = c->d_model, I = m->I, H = c->num_heads, t = k->t, S = k->max_steps;
    const size_t R_all = k->rows, Ne = (size_t)k->B * k->T_in;
    const float eps = c->layer_norm_epsilon;
    // rows that run (R) and the cache row of run row r (r * stride)
    const int sparse = only_first_rows_live(k, live);
    const size_t R = sparse ? (size_t)k->B : R_all, stride = sparse ? (size_t)k->rows_per_input : 1;
    if (sparse) {
        for (size_t r = 0; r < R; r++) k->tok[r] = tokens[r * stride];
        tokens = k->tok;
    }
    gs_embedding_forward(R, C, tokens, P + m->shared, k->x);
    // position bias of query position t over keys 0..t: (H, 1, t+1)
    gs_relative_bias_forward(H, 1, t + 1, t, 0, c->relative_attention_num_buckets,
                             c->relative_attention_max_distance, P + m->dec[0].rel_bias, k->bias);
    for (int l = 0; l < c->num_decoder_layers; l++) {
        const block_params *b = &m->dec[l];
        const gs_packed_b *pw = k->w[l];
        float *ks = k->k_self + (size_t)l * R_all * S * I, *vs = k->v_self + (size_t)l * R_all * S * I;
        // self-attention with the new token's k, v appended at position t
        gs_rmsnorm_forward(R, C, k->x, P + b->ln_sa, eps, k->ln, k->rstd);
        packed_linear(R, k->ln, &pw[W_QKV], k->qkv);
        for (size_t r = 0; r < R; r++) {
            memcpy(ks + (r * stride * S + t) * I, k->qkv + r * 3 * I + I, sizeof(float) * I);
            memcpy(vs + (r * stride * S + t) * I, k->qkv + r * 3 * I + 2 * I, sizeof(float) * I);
        }
        gs_attention_args a = attn_args(m, (int)R, 1, t + 1, 3 * I, I, 0, NULL, k->bias, 0.0f, 0, 0);
        a.kv_batch_stride = stride * S * I;
        if ((st = gs_attention_forward(&a, k->qkv, ks, vs, k->probs, k->att))) return st;
        packed_linear(R, k->att, &pw[W_O_SA], k->tmp);
        add_inplace(R * C, k->x, k->tmp);
        // cross-attention: row r reads the K,V of input r / rows_per_input
        gs_rmsnorm_forward(R, C, k->x, P + b->ln_ca, eps, k->ln, k->rstd);
        packed_linear(R, k->ln, &pw[W_Q_CA], k->q);
        const float *kv = k->kv_cross + (size_t)l * Ne * 2 * I;
        /* rows r = input * rows_per_input + beam, so the queries of one input form a
         * (rows_per_input, I) block against its K,V: one attention batch per input */
        gs_attention_args ca = attn_args(m, k->B, (int)(R / k->B), k->T_in, I, 2 * I, 0, k->mask,
                                         NULL, 0.0f, 0, 0);
        if ((st = gs_attention_forward(&ca, k->q, kv, kv + I, k->probs, k->att))) return st;
        packed_linear(R, k->att, &pw[W_O_CA], k->tmp);
        add_inplace(R * C, k->x, k->tmp);
        // feed-forward
        gs_rmsnorm_forward(R, C, k->x, P + b->ln_ff, eps, k->ln, k->rstd);
        packed_linear(R, k->ln, &pw[W_WI], k->hpre);
        ffn_activation(m, R, k->hpre, k->act, 0.0f, 0, 0);
        packed_linear(R, k->act, &pw[W_WO], k->tmp);
        add_inplace(R * C, k->x, k->tmp);
    }
    gs_rmsnorm_forward(R, C, k->x, P + m->dec_final_ln, eps, k->ln, k->rstd);
    if (c->scale_decoder_outputs) {
        const float s = 1.0f / sqrtf((float)C);
        for (size_t i = 0; i < R * C; i++) k->ln[i] *= s;
    }
    if (sparse) // run row r -> its own row r * stride, last first (no overlap)
        for (size_t r = R; r-- > 1;) memcpy(k->ln + r * stride * C, k->ln + r * C, sizeof(float) * C);
    return GS_OK;
}

int gs_t5_decode_step(const gs_t5 *m, gs_t5_cache *k, const int32_t *tokens, float *logits)
{
    int st = decode_layers(m, k, tokens, NULL);
    if (st) return st;
    gs_linear_forward(k->rows, m->cfg.d_model, m->cfg.vocab_size, k->ln, m->params + m->lm_head, NULL,
                      logits);
    k->t++;
    return GS_OK;
}

int gs_t5_decode_step_lse(const gs_t5 *m, gs_t5_cache *k, const int32_t *tokens, const uint8_t *live,
                          double *lse)
{
    int st = decode_layers(m, k, tokens, live);
    if (st) return st;
    if (!lse) { /* the caller renormalises over a few tokens: no LM head over the vocabulary */
        k->t++;
        return GS_OK;
    }
    if (!k->head.data)
        gs_packed_b_pack(1, m->cfg.d_model, m->cfg.vocab_size, m->params + m->lm_head, m->cfg.d_model,
                         k->head_data, &k->head);
    // live rows of ln (R, C) gathered into tmp (n, C); their lse computed into lse[0..n-1],
    // then moved to their own rows, last first (row r >= its compact index, no overlap)
    const size_t R = k->rows, C = m->cfg.d_model;
    size_t n = 0;
    for (size_t r = 0; r < R; r++)
        if (live[r]) memcpy(k->tmp + n++ * C, k->ln + r * C, sizeof(float) * C);
    st = gs_linear_log_sum_exp(n, k->tmp, &k->head, lse);
    if (st) return st;
    for (size_t r = R; r-- > 0;)
        if (live[r] && --n != r) lse[r] = lse[n];
    k->t++;
    return GS_OK;
}

void gs_t5_decode_logits(const gs_t5 *m, const gs_t5_cache *k, size_t row, int n,
                         const int32_t *token_ids, float *out)
{
    const size_t C = m->cfg.d_model;
    const float *h = k->ln + row * C, *W = m->params + m->lm_head;
    for (int i = 0; i < n; i++) {
        const float *w = W + (size_t)token_ids[i] * C;
        double s = 0.0;
        for (size_t j = 0; j < C; j++) s += (double)h[j] * w[j];
        out[i] = (float)s;
    }
}

int gs_t5_cache_reorder(gs_t5_cache *k, const int32_t *src_rows)
{
    const int R = k->rows, g = k->rows_per_input;
    for (int r = 0; r < R; r++) {
        int s = src_rows[r];
        if (s < 0 || s >= R)
            return gs_fail(GS_EINVAL, "src_rows[%d] = %d is not a row: rows are 0..%d", r, s, R - 1);
        if (s / g != r / g)
            return gs_fail(GS_EINVAL,
                           "src_rows[%d] = %d belongs to input %d, but row %d belongs to input %d: "
                           "a row may only take the history of a row of the same input",
                           r, s, s / g, r, r / g);
    }
    if (k->t == 0) return GS_OK;
    const size_t S = k->max_steps, t = k->t, I = k->I, RSI = (size_t)R * S * I;
    for (int l = 0; l < k->Ld; l++)
        for (int kv = 0; kv < 2; kv++) {
            float *buf = (kv ? k->v_self : k->k_self) + l * RSI;
            // gather the first t positions of every source row, then write them back in row order
#pragma omp parallel for schedule(static) num_threads(gs_num_threads()) if (R * t * I > 65536)
            for (int r = 0; r < R; r++)
                memcpy(k->reorder + r * t * I, buf + (size_t)src_rows[r] * S * I, sizeof(float) * t * I);
#pragma omp parallel for schedule(static) num_threads(gs_num_threads()) if (R * t * I > 65536)
            for (int r = 0; r < R; r++)
                memcpy(buf + r * S * I, k->reorder + r * t * I, sizeof(float) * t * I);
        }
    return GS_OK;
}

int gs_t5_cache_rows(const gs_t5_cache *k) { return k->rows; }
int gs_t5_cache_steps(const gs_t5_cache *k) { return k->t; }

void gs_t5_cache_free(gs_t5_cache *k)
{
    if (!k) return;
    if (k->in_call) /* the packed weights live in base too */
        gs_scratch_put(GS_SCRATCH_DECODE, k->base);
    else
        gs_free(k->base);
    gs_free(k->mask);
    gs_free(k->tok);
    gs_free(k->w);
    gs_free(k);
}
