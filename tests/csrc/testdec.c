/* Test decoder for beam search (see testdec.h). */
#include "testdec.h"

#include <math.h>
#include <string.h>

#include "common.h"
#include "tensor/lse.h"

struct gs_testdec {
    int V, D, B, K;
    const float *A, *E, *O, *U;
    float *h;   /* (B*K, D) state */
    float *tmp; /* (B*K, D) reorder scratch */
    float *logits; /* (B*K, V) of the last step */
};

int gs_testdec_new(int V, int D, int B, int rows_per_input, const float *A, const float *E,
                   const float *O, const float *U, gs_testdec **out)
{
    *out = NULL;
    if (V < 1 || D < 1 || B < 1 || rows_per_input < 1)
        return gs_fail(GS_EINVAL, "test decoder sizes must be >= 1 (V=%d D=%d B=%d rows=%d)", V, D,
                       B, rows_per_input);
    gs_testdec *d = gs_calloc(sizeof *d);
    if (!d) return gs_fail(GS_ENOMEM, "out of memory");
    size_t n = (size_t)B * rows_per_input * D;
    d->h = gs_calloc(n * sizeof *d->h);
    d->tmp = gs_alloc(n * sizeof *d->tmp);
    d->logits = gs_alloc((size_t)B * rows_per_input * V * sizeof *d->logits);
    if (!d->h || !d->tmp || !d->logits) {
        gs_testdec_free(d);
        return gs_fail(GS_ENOMEM, "out of memory");
    }
    d->V = V, d->D = D, d->B = B, d->K = rows_per_input;
    d->A = A, d->E = E, d->O = O, d->U = U;
    *out = d;
    return GS_OK;
}

void gs_testdec_free(gs_testdec *d)
{
    if (!d) return;
    gs_free(d->h);
    gs_free(d->tmp);
    gs_free(d->logits);
    gs_free(d);
}

// tokens (B*K) -> logits (B*K, V) kept for testdec_logits, and their log-sum-exp
static int testdec_step(void *ctx, const int32_t *tokens, const uint8_t *live, double *lse)
{
    gs_testdec *d = ctx;
    float *logits = d->logits;
    const int V = d->V, D = d->D, rows = d->B * d->K;
    for (int r = 0; r < rows; r++)
        if (tokens[r] < 0 || tokens[r] >= V)
            return gs_fail(GS_EINVAL, "test decoder: token %d outside [0, %d)", (int)tokens[r], V);
#pragma omp parallel for schedule(static) num_threads(gs_num_threads())
    for (int r = 0; r < rows; r++) {
        float *out = logits + (size_t)r * V;
        if (!live[r]) { /* skipped, as a real decoder may: NaN makes any use visible */
            lse[r] = NAN;
            for (int v = 0; v < V; v++) out[v] = NAN;
            continue;
        }
        float *h = d->h + (size_t)r * D, *x = d->tmp + (size_t)r * D;
        const float *e = d->E + (size_t)tokens[r] * D;
        for (int j = 0; j < D; j++) x[j] = e[j];
        for (int i = 0; i < D; i++) // x (D) += h (D) @ A (D, D)
            for (int j = 0; j < D; j++) x[j] += h[i] * d->A[(size_t)i * D + j];
        for (int j = 0; j < D; j++) h[j] = tanhf(x[j]);
        const float *u = d->U + (size_t)(r / d->K) * V;
        for (int v = 0; v < V; v++) out[v] = u[v];
        for (int i = 0; i < D; i++) // out (V) += h (D) @ O (D, V)
            for (int v = 0; v < V; v++) out[v] += h[i] * d->O[(size_t)i * V + v];
        lse[r] = gs_log_sum_exp(out, V);
    }
    return GS_OK;
}

static void testdec_logits(void *ctx, size_t row, int n, const int32_t *token_ids, float *out)
{
    const gs_testdec *d = ctx;
    for (int i = 0; i < n; i++) out[i] = d->logits[row * d->V + token_ids[i]];
}

static int testdec_reorder(void *ctx, const int32_t *src_rows)
{
    gs_testdec *d = ctx;
    const int rows = d->B * d->K;
    for (int r = 0; r < rows; r++)
        if (src_rows[r] < 0 || src_rows[r] >= rows || src_rows[r] / d->K != r / d->K)
            return gs_fail(GS_EINVAL, "test decoder: row %d cannot take the history of row %d", r,
                           (int)src_rows[r]);
    for (int r = 0; r < rows; r++)
        memcpy(d->tmp + (size_t)r * d->D, d->h + (size_t)src_rows[r] * d->D, d->D * sizeof(float));
    float *t = d->h;
    d->h = d->tmp, d->tmp = t;
    return GS_OK;
}

gs_decoder gs_testdec_decoder(gs_testdec *d)
{
    gs_decoder dec = {d, d->V, d->B, d->K, testdec_step, testdec_logits, testdec_reorder};
    return dec;
}
