#include "rqvae.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "../common.h"
#include "../nn/linear.h"
#include "../nn/optim.h"
#include "../tensor/ops.h"
#include "rng.h"

#define MAX_LAYERS (GS_RQVAE_MAX_HIDDEN + 1)

/* One MLP: n_layers Linear layers, ReLU between them (none after the last). */
typedef struct {
    int n_layers;
    int dims[MAX_LAYERS + 1]; /* dims[0] input ... dims[n_layers] output */
    size_t w_off[MAX_LAYERS], b_off[MAX_LAYERS];
    float *pre[MAX_LAYERS];  /* (B, dims[i+1]) layer outputs before ReLU */
    float *post[MAX_LAYERS]; /* (B, dims[i+1]) after ReLU, i < n_layers-1 */
} mlp;

struct gs_rqvae {
    gs_rqvae_config cfg;
    gs_rq_config rq;
    gs_rq_level lv[GS_RQ_MAX_TOTAL];
    int nL, D, T, h, max_batch, maxdim;
    mlp enc[2], dec[2];
    size_t cb_off, n_params;
    float *params, *grads, *adam_m, *adam_v;
    long t;
    /* activations, sized for max_batch rows */
    float *z, *zq, *dz, *zq_t[2], *g1, *g2, *dzq_t; /* dzq_t (B,h): decoder input grad */
    float *lvl_in[GS_RQ_MAX_TOTAL];
    int32_t *codes;
    float *arena;
    /* dead-code restarts: usage[level offset + code] counts the training rows
     * assigned to each code since the last restart check; last_B is the size
     * of the last forward batch, whose level inputs lvl_in still hold */
    int64_t *usage;
    size_t usage_off[GS_RQ_MAX_TOTAL];
    size_t n_codes;
    int last_B;
};

size_t gs_rqvae_num_params(const gs_rqvae *m) { return m->n_params; }
float *gs_rqvae_params(gs_rqvae *m) { return m->params; }
float *gs_rqvae_grads(gs_rqvae *m) { return m->grads; }
float *gs_rqvae_adam_m(gs_rqvae *m) { return m->adam_m; }
float *gs_rqvae_adam_v(gs_rqvae *m) { return m->adam_v; }
long *gs_rqvae_step_counter(gs_rqvae *m) { return &m->t; }
const gs_rq_config *gs_rqvae_rq(const gs_rqvae *m) { return &m->rq; }
size_t gs_rqvae_codebook_offset(const gs_rqvae *m) { return m->cb_off; }

void gs_rqvae_free(gs_rqvae *m)
{
    if (!m) return;
    gs_free(m->params), gs_free(m->grads), gs_free(m->adam_m), gs_free(m->adam_v);
    gs_free(m->arena);
    gs_free(m->usage);
    gs_free(m);
}

static void mlp_layout(mlp *p, int n_layers, const int *dims, size_t *off)
{
    p->n_layers = n_layers;
    for (int i = 0; i <= n_layers; i++) p->dims[i] = dims[i];
    for (int i = 0; i < n_layers; i++) {
        p->w_off[i] = *off;
        *off += (size_t)dims[i + 1] * dims[i];
        p->b_off[i] = *off;
        *off += (size_t)dims[i + 1];
    }
}

static size_t mlp_act_floats(const mlp *p, size_t B)
{
    size_t s = 0;
    for (int i = 0; i < p->n_layers; i++) s += 2 * B * p->dims[i + 1];
    return s;
}

static void mlp_bind(mlp *p, size_t B, float **cursor)
{
    for (int i = 0; i < p->n_layers; i++) {
        p->pre[i] = *cursor, *cursor += B * p->dims[i + 1];
        p->post[i] = *cursor, *cursor += B * p->dims[i + 1];
    }
}

static void xavier_normal(float *W, int fan_out, int fan_in, gs_rng *rng)
{
    double std = sqrt(2.0 / (double)(fan_in + fan_out));
    for (size_t i = 0; i < (size_t)fan_out * fan_in; i++) W[i] = (float)(std * gs_rng_normal(rng));
}

int gs_rqvae_create(const gs_rqvae_config *cfg, int max_batch, uint64_t seed, gs_rqvae **out)
{
    *out = NULL;
    if (cfg->n_towers != 1 && cfg->n_towers != 2)
        return gs_fail(GS_EINVAL, "RQ-VAE: n_towers must be 1 or 2, got %d", cfg->n_towers);
    if (cfg->n_hidden < 0 || cfg->n_hidden > GS_RQVAE_MAX_HIDDEN)
        return gs_fail(GS_EINVAL, "RQ-VAE: 0 to %d hidden layers, got %d", GS_RQVAE_MAX_HIDDEN,
                       cfg->n_hidden);
    if (cfg->latent < 1) return gs_fail(GS_EINVAL, "RQ-VAE: latent size must be >= 1");
    if (max_batch < 1) return gs_fail(GS_EINVAL, "RQ-VAE: max_batch must be >= 1");
    if (!(cfg->beta >= 0.0f)) return gs_fail(GS_EINVAL, "RQ-VAE: beta must be >= 0");
    for (int t = 0; t < cfg->n_towers; t++)
        if (cfg->in_dim[t] < 1) return gs_fail(GS_EINVAL, "RQ-VAE: input %d has width %d", t, cfg->in_dim[t]);
    for (int i = 0; i < cfg->n_hidden; i++)
        if (cfg->hidden[i] < 1) return gs_fail(GS_EINVAL, "RQ-VAE: hidden layer %d has width %d", i, cfg->hidden[i]);

    gs_rqvae *m = gs_calloc(sizeof(gs_rqvae));
    if (!m) return gs_fail(GS_ENOMEM, "RQ-VAE: out of memory");
    m->cfg = *cfg;
    m->T = cfg->n_towers, m->h = cfg->latent, m->D = m->T * m->h, m->max_batch = max_batch;
    m->rq.n_towers = m->T;
    m->rq.dim[0] = m->rq.dim[1] = m->h;
    m->rq.n_shared = cfg->n_shared, m->rq.n_specific = cfg->n_specific;
    memcpy(m->rq.shared_k, cfg->shared_k, sizeof cfg->shared_k);
    memcpy(m->rq.specific_k, cfg->specific_k, sizeof cfg->specific_k);
    size_t cb_floats;
    int st = gs_rq_levels(&m->rq, m->lv, &m->nL, &cb_floats);
    if (st != GS_OK) {
        gs_free(m);
        return st;
    }
    /* parameter layout: enc0, enc1, dec0, dec1, codebooks */
    size_t off = 0;
    int nl = cfg->n_hidden + 1, dims[MAX_LAYERS + 1];
    m->maxdim = m->D;
    for (int t = 0; t < m->T; t++) {
        dims[0] = cfg->in_dim[t];
        for (int i = 0; i < cfg->n_hidden; i++) dims[i + 1] = cfg->hidden[i];
        dims[nl] = m->h;
        mlp_layout(&m->enc[t], nl, dims, &off);
        for (int i = 0; i <= nl; i++)
            if (dims[i] > m->maxdim) m->maxdim = dims[i];
    }
    for (int t = 0; t < m->T; t++) {
        dims[0] = m->h;
        for (int i = 0; i < cfg->n_hidden; i++) dims[i + 1] = cfg->hidden[cfg->n_hidden - 1 - i];
        dims[nl] = cfg->in_dim[t];
        mlp_layout(&m->dec[t], nl, dims, &off);
    }
    m->cb_off = off;
    m->n_params = off + cb_floats;
    m->params = gs_calloc(sizeof(float) * m->n_params);
    m->grads = gs_calloc(sizeof(float) * m->n_params);
    m->adam_m = gs_calloc(sizeof(float) * m->n_params);
    m->adam_v = gs_calloc(sizeof(float) * m->n_params);
    size_t B = (size_t)max_batch, act = 0;
    for (int t = 0; t < m->T; t++) act += mlp_act_floats(&m->enc[t], B) + mlp_act_floats(&m->dec[t], B);
    act += 3 * B * m->D + 2 * B * m->maxdim + B * m->D + B * m->h; /* z, zq, dz, g1, g2, zq_t, dzq_t */
    for (int l = 0; l < m->nL; l++) act += B * m->lv[l].width;
    act += B * m->nL; /* codes (int32, same size as float) */
    m->arena = gs_alloc(sizeof(float) * act);
    m->n_codes = 0;
    for (int l = 0; l < m->nL; l++) m->usage_off[l] = m->n_codes, m->n_codes += (size_t)m->lv[l].k;
    m->usage = gs_calloc(sizeof(int64_t) * m->n_codes);
    if (!m->params || !m->grads || !m->adam_m || !m->adam_v || !m->arena || !m->usage) {
        gs_rqvae_free(m);
        return gs_fail(GS_ENOMEM, "RQ-VAE: out of memory (%zu parameters, batch %d)", off, max_batch);
    }
    float *cur = m->arena;
    for (int t = 0; t < m->T; t++) mlp_bind(&m->enc[t], B, &cur), mlp_bind(&m->dec[t], B, &cur);
    m->z = cur, cur += B * m->D;
    m->zq = cur, cur += B * m->D;
    m->dz = cur, cur += B * m->D;
    m->g1 = cur, cur += B * m->maxdim;
    m->g2 = cur, cur += B * m->maxdim;
    for (int t = 0; t < m->T; t++) m->zq_t[t] = cur, cur += B * m->h;
    m->dzq_t = cur, cur += B * m->h;
    for (int l = 0; l < m->nL; l++) m->lvl_in[l] = cur, cur += B * m->lv[l].width;
    m->codes = (int32_t *)cur;

    gs_rng rng;
    gs_rng_seed(&rng, seed);
    for (int t = 0; t < m->T; t++)
        for (int i = 0; i < nl; i++)
            xavier_normal(m->params + m->enc[t].w_off[i], m->enc[t].dims[i + 1], m->enc[t].dims[i], &rng);
    for (int t = 0; t < m->T; t++)
        for (int i = 0; i < nl; i++)
            xavier_normal(m->params + m->dec[t].w_off[i], m->dec[t].dims[i + 1], m->dec[t].dims[i], &rng);
    *out = m;
    return GS_OK;
}

int gs_rqvae_tensor(const gs_rqvae *m, int i, char *name, size_t name_len, size_t *offset,
                    int *ndim, int dims[2])
{
    int nl = m->cfg.n_hidden + 1, count = 4 * m->T * nl + m->nL;
    if (i < 0) return count;
    if (i >= count) return gs_fail(GS_EINVAL, "RQ-VAE: tensor %d of %d", i, count);
    if (i < 4 * m->T * nl) {
        int which = i / (2 * nl); /* 0..T-1 encoders, T..2T-1 decoders */
        int layer = (i % (2 * nl)) / 2, is_bias = i % 2;
        const mlp *p = which < m->T ? &m->enc[which] : &m->dec[which - m->T];
        snprintf(name, name_len, "%s%d.%d.%s", which < m->T ? "encoder" : "decoder",
                 which % m->T, layer, is_bias ? "bias" : "weight");
        *offset = is_bias ? p->b_off[layer] : p->w_off[layer];
        *ndim = is_bias ? 1 : 2;
        dims[0] = p->dims[layer + 1], dims[1] = is_bias ? 0 : p->dims[layer];
        return GS_OK;
    }
    int l = i - 4 * m->T * nl;
    snprintf(name, name_len, "codebook.%d", l);
    *offset = m->cb_off + m->lv[l].cb_offset;
    *ndim = 2;
    dims[0] = m->lv[l].k, dims[1] = m->lv[l].width;
    return GS_OK;
}

// x (B, dims[0]) -> pre[last] (B, dims[n_layers])
static void mlp_forward(mlp *p, const float *params, size_t B, const float *x)
{
    const float *in = x;
    for (int i = 0; i < p->n_layers; i++) {
        gs_linear_forward(B, p->dims[i], p->dims[i + 1], in, params + p->w_off[i],
                          params + p->b_off[i], p->pre[i]);
        if (i < p->n_layers - 1) {
            gs_relu_forward(B * p->dims[i + 1], p->pre[i], p->post[i]);
            in = p->post[i];
        }
    }
}

/* dout (B, dims[n_layers]) in g1 (clobbered) -> dx (B, dims[0]) (skipped if NULL);
 * weight and bias grads accumulated. g1, g2: (B, maxdim) scratch. */
static void mlp_backward(mlp *p, const float *params, float *grads, size_t B, const float *x,
                         float *g1, float *g2, float *dx)
{
    float *cur = g1, *other = g2;
    for (int i = p->n_layers - 1; i >= 0; i--) {
        if (i < p->n_layers - 1) gs_relu_backward(B * p->dims[i + 1], p->pre[i], cur, cur);
        const float *in = i == 0 ? x : p->post[i - 1];
        float *dst = i == 0 ? dx : other;
        gs_linear_backward(B, p->dims[i], p->dims[i + 1], in, params + p->w_off[i], cur, dst,
                           grads + p->w_off[i], grads + p->b_off[i]);
        float *tmp = cur;
        cur = other, other = tmp;
    }
}

static int check_batch(const gs_rqvae *m, size_t B, const float *x1)
{
    if (B < 1 || B > (size_t)m->max_batch)
        return gs_fail(GS_EINVAL, "RQ-VAE: batch of %zu rows, expected 1 to %d", B, m->max_batch);
    if (m->T == 2 && !x1) return gs_fail(GS_EINVAL, "RQ-VAE: two towers need two inputs");
    return GS_OK;
}

/* encoders: x0, x1 (B rows) -> m->z (B, D) */
static void encode_batch(gs_rqvae *m, size_t B, const float *x0, const float *x1)
{
    const float *xs[2] = {x0, x1};
    for (int t = 0; t < m->T; t++) {
        mlp *p = &m->enc[t];
        mlp_forward(p, m->params, B, xs[t]);
        const float *zt = p->pre[p->n_layers - 1];
        for (size_t b = 0; b < B; b++)
            memcpy(m->z + b * m->D + t * m->h, zt + b * m->h, sizeof(float) * m->h);
    }
}

/* full forward of B rows: z, codes, level inputs, zq, reconstructions */
static int forward_batch(gs_rqvae *m, size_t B, const float *x0, const float *x1)
{
    encode_batch(m, B, x0, x1);
    int st = gs_rq_encode(&m->rq, m->params + m->cb_off, B, m->z, m->codes, m->zq, m->lvl_in);
    if (st != GS_OK) return st;
    m->last_B = (int)B; /* lvl_in now holds these B rows (dead-code restarts read them) */
    for (int t = 0; t < m->T; t++) {
        for (size_t b = 0; b < B; b++)
            memcpy(m->zq_t[t] + b * m->h, m->zq + b * m->D + t * m->h, sizeof(float) * m->h);
        mlp_forward(&m->dec[t], m->params, B, m->zq_t[t]);
    }
    return GS_OK;
}

int gs_rqvae_latent(gs_rqvae *m, size_t N, const float *x0, const float *x1, float *z)
{
    if (m->T == 2 && !x1) return gs_fail(GS_EINVAL, "RQ-VAE: two towers need two inputs");
    for (size_t r0 = 0; r0 < N; r0 += m->max_batch) {
        size_t B = N - r0 < (size_t)m->max_batch ? N - r0 : (size_t)m->max_batch;
        encode_batch(m, B, x0 + r0 * m->cfg.in_dim[0], x1 ? x1 + r0 * m->cfg.in_dim[1] : NULL);
        memcpy(z + r0 * m->D, m->z, sizeof(float) * B * m->D);
    }
    return GS_OK;
}

int gs_rqvae_init_codebooks(gs_rqvae *m, int B, const float *x0, const float *x1, int max_iter,
                            uint64_t seed)
{
    int st = check_batch(m, (size_t)B, x1);
    if (st != GS_OK) return st;
    encode_batch(m, (size_t)B, x0, x1);
    return gs_rq_fit_kmeans(&m->rq, (size_t)B, m->z, 1, max_iter, seed, m->params + m->cb_off);
}

int gs_rqvae_forward_backward(gs_rqvae *m, int Bi, const float *x0, const float *x1,
                              double losses[4])
{
    size_t B = (size_t)Bi;
    int st = check_batch(m, B, x1);
    if (st != GS_OK) return st;
    if ((st = forward_batch(m, B, x0, x1)) != GS_OK) return st;
    for (size_t b = 0; b < B; b++)
        for (int l = 0; l < m->nL; l++) m->usage[m->usage_off[l] + m->codes[b * m->nL + l]]++;
    memset(m->grads, 0, sizeof(float) * m->n_params);
    const float *xs[2] = {x0, x1};
    losses[0] = losses[1] = losses[2] = losses[3] = 0.0;

    /* reconstruction: mean((xhat - x)^2) per tower; d xhat = 2 (xhat - x) / (B in) */
    for (int t = 0; t < m->T; t++) {
        mlp *p = &m->dec[t];
        const float *xhat = p->pre[p->n_layers - 1], *x = xs[t];
        int in = m->cfg.in_dim[t];
        size_t n = B * in;
        double sse = 0.0;
        float scale = 2.0f / (float)n;
        for (size_t i = 0; i < n; i++) {
            float e = xhat[i] - x[i];
            sse += (double)e * e;
            m->g1[i] = scale * e;
        }
        losses[1 + t] = sse / (double)n;
        // d xhat (B,in) -> d zq_t (B,h), written into dz[:, t*h:(t+1)*h] (straight-through)
        mlp_backward(p, m->params, m->grads, B, m->zq_t[t], m->g1, m->g2, m->dzq_t);
        for (size_t b = 0; b < B; b++)
            memcpy(m->dz + b * m->D + t * m->h, m->dzq_t + b * m->h, sizeof(float) * m->h);
    }

    /* quantisation: (1/nL) sum_l (1 + beta) mse(q_l, r_l); codebook term -> codebook,
     * commitment term -> encoder only for levels that read z itself */
    const float beta = m->cfg.beta, inv_levels = 1.0f / (float)m->nL;
    double qloss = 0.0;
    for (int l = 0; l < m->nL; l++) {
        const gs_rq_level *L = &m->lv[l];
        const float *C = m->params + m->cb_off + L->cb_offset;
        float *dC = m->grads + m->cb_off + L->cb_offset;
        int live = (m->rq.n_shared > 0) ? (l == 0) : (l % m->rq.n_specific == 0);
        float scale = 2.0f * inv_levels / (float)(B * L->width);
        double sse = 0.0;
        for (size_t b = 0; b < B; b++) {
            const float *r = m->lvl_in[l] + b * L->width;
            const float *q = C + (size_t)m->codes[b * m->nL + l] * L->width;
            float *dq = dC + (size_t)m->codes[b * m->nL + l] * L->width;
            float *dzb = m->dz + b * m->D + L->col;
            for (int j = 0; j < L->width; j++) {
                float e = q[j] - r[j];
                sse += (double)e * e;
                dq[j] += scale * e;
                if (live) dzb[j] -= beta * scale * e;
            }
        }
        qloss += (1.0 + beta) * sse / (double)(B * L->width);
    }
    losses[3] = qloss / m->nL;
    losses[0] = losses[1] + losses[2] + losses[3];

    /* encoders: dz_t (B,h) -> weight grads */
    for (int t = 0; t < m->T; t++) {
        for (size_t b = 0; b < B; b++)
            memcpy(m->g1 + b * m->h, m->dz + b * m->D + t * m->h, sizeof(float) * m->h);
        mlp_backward(&m->enc[t], m->params, m->grads, B, xs[t], m->g1, m->g2, NULL);
    }
    return GS_OK;
}

int gs_rqvae_train_step(gs_rqvae *m, int B, const float *x0, const float *x1, float lr,
                        float weight_decay, double losses[4])
{
    if (!(lr > 0.0f) || !isfinite(lr))
        return gs_fail(GS_EINVAL, "RQ-VAE: the learning rate must be a finite number > 0, got %g",
                       (double)lr);
    if (!(weight_decay >= 0.0f) || !isfinite(weight_decay))
        return gs_fail(GS_EINVAL, "RQ-VAE: weight decay must be a finite number >= 0, got %g",
                       (double)weight_decay);
    int st = gs_rqvae_forward_backward(m, B, x0, x1, losses);
    if (st != GS_OK) return st;
    if (!isfinite(losses[0]))
        return gs_fail(GS_ERUNTIME, "RQ-VAE: the loss is not finite (%g); lower the learning rate",
                       losses[0]);
    gs_adamw_config cfg = {lr, 0.9f, 0.999f, 1e-8f, weight_decay};
    m->t++;
    gs_adamw_step(m->n_params, m->params, m->grads, m->adam_m, m->adam_v, NULL, &cfg, m->t);
    return GS_OK;
}

int gs_rqvae_reconstruct(gs_rqvae *m, size_t N, const float *x0, const float *x1, int32_t *codes,
                         float *sq_err)
{
    if (m->T == 2 && !x1) return gs_fail(GS_EINVAL, "RQ-VAE: two towers need two inputs");
    for (size_t r0 = 0; r0 < N; r0 += m->max_batch) {
        size_t B = N - r0 < (size_t)m->max_batch ? N - r0 : (size_t)m->max_batch;
        const float *xs[2] = {x0 + r0 * m->cfg.in_dim[0], x1 ? x1 + r0 * m->cfg.in_dim[1] : NULL};
        int st = forward_batch(m, B, xs[0], xs[1]);
        if (st != GS_OK) return st;
        if (codes) memcpy(codes + r0 * m->nL, m->codes, sizeof(int32_t) * B * m->nL);
        if (sq_err)
            for (int t = 0; t < m->T; t++) {
                const mlp *p = &m->dec[t];
                const float *xhat = p->pre[p->n_layers - 1];
                int in = m->cfg.in_dim[t];
                for (size_t b = 0; b < B; b++) {
                    double s = 0.0;
                    for (int j = 0; j < in; j++) {
                        double e = (double)xhat[b * in + j] - xs[t][b * in + j];
                        s += e * e;
                    }
                    sq_err[(r0 + b) * m->T + t] = (float)s;
                }
            }
    }
    return GS_OK;
}

size_t gs_rqvae_code_usage(const gs_rqvae *m, int64_t *out)
{
    if (out) memcpy(out, m->usage, sizeof(int64_t) * m->n_codes);
    return m->n_codes;
}

int gs_rqvae_restart_dead_codes(gs_rqvae *m, uint64_t seed, int *restarted)
{
    if (m->last_B < 1)
        return gs_fail(GS_EINVAL, "RQ-VAE: dead-code restarts need a training step first");
    size_t B = (size_t)m->last_B;
    size_t *rows = gs_alloc(sizeof(size_t) * B);
    if (!rows) return gs_fail(GS_ENOMEM, "RQ-VAE: out of memory for dead-code restarts");
    gs_rng rng;
    gs_rng_seed(&rng, seed);
    for (int l = 0; l < m->nL; l++) {
        const gs_rq_level *L = &m->lv[l];
        float *C = m->params + m->cb_off + L->cb_offset;
        float *am = m->adam_m + m->cb_off + L->cb_offset, *av = m->adam_v + m->cb_off + L->cb_offset;
        const int64_t *u = m->usage + m->usage_off[l];
        for (size_t i = 0; i < B; i++) rows[i] = i;
        size_t taken = 0;
        int count = 0;
        for (int c = 0; c < L->k && taken < B; c++) {
            if (u[c] > 0) continue;
            /* a distinct random row of the last batch (partial Fisher-Yates) */
            size_t j = taken + (size_t)gs_rng_below(&rng, B - taken);
            size_t r = rows[j];
            rows[j] = rows[taken], rows[taken] = r;
            taken++;
            size_t w = (size_t)L->width;
            memcpy(C + (size_t)c * w, m->lvl_in[l] + r * w, sizeof(float) * w);
            /* fresh AdamW moments: the old ones belong to the dead position */
            memset(am + (size_t)c * w, 0, sizeof(float) * w);
            memset(av + (size_t)c * w, 0, sizeof(float) * w);
            count++;
        }
        if (restarted) restarted[l] = count;
    }
    memset(m->usage, 0, sizeof(int64_t) * m->n_codes);
    gs_free(rows);
    return GS_OK;
}
