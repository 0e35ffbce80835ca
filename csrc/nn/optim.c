#include "optim.h"

#include <math.h>
#include <stdint.h>

#include "../common.h"

static int overlaps(const float *a, const float *b, size_t n)
{
    /* compared as integers: pointers into different objects are not ordered in C */
    uintptr_t a0 = (uintptr_t)a, b0 = (uintptr_t)b, bytes = (uintptr_t)(n * sizeof(float));
    return a0 < b0 + bytes && b0 < a0 + bytes;
}

int gs_adamw_check(const gs_adamw_config *cfg, size_t n, const float *params, const float *grads,
                   const float *m, const float *v)
{
    if (!(isfinite(cfg->lr) && cfg->lr >= 0.0f))
        return gs_fail(GS_EINVAL, "lr must be a finite number >= 0, got %g", (double)cfg->lr);
    if (!(cfg->beta1 >= 0.0f && cfg->beta1 < 1.0f))
        return gs_fail(GS_EINVAL, "beta1 must be in [0, 1), got %g", (double)cfg->beta1);
    if (!(cfg->beta2 >= 0.0f && cfg->beta2 < 1.0f))
        return gs_fail(GS_EINVAL, "beta2 must be in [0, 1), got %g", (double)cfg->beta2);
    if (!(isfinite(cfg->eps) && cfg->eps > 0.0f))
        return gs_fail(GS_EINVAL, "eps must be a finite number > 0, got %g", (double)cfg->eps);
    if (!(isfinite(cfg->weight_decay) && cfg->weight_decay >= 0.0f))
        return gs_fail(GS_EINVAL, "weight_decay must be a finite number >= 0, got %g",
                       (double)cfg->weight_decay);
    if (params && grads && m && v && n) {
        const float *buf[4] = {params, grads, m, v};
        static const char *names[4] = {"params", "grads", "m", "v"};
        for (int i = 0; i < 4; i++)
            for (int j = i + 1; j < 4; j++)
                if (overlaps(buf[i], buf[j], n))
                    return gs_fail(GS_EINVAL, "AdamW buffers %s and %s overlap; each needs its own memory",
                                   names[i], names[j]);
    }
    return GS_OK;
}

int gs_check_max_grad_norm(double max_grad_norm)
{
    if (!(max_grad_norm >= 0.0))
        return gs_fail(GS_EINVAL, "max_grad_norm must be >= 0 (0 = no clipping), got %g",
                       max_grad_norm);
    return GS_OK;
}

void gs_adamw_step(size_t n, float *params, const float *grads, float *m, float *v,
                   const unsigned char *decay_mask, const gs_adamw_config *cfg, long t)
{
    const float b1 = cfg->beta1, b2 = cfg->beta2;
    const float c1 = 1.0f / (1.0f - powf(b1, (float)t)), c2 = 1.0f / (1.0f - powf(b2, (float)t));
    const float lr = cfg->lr, eps = cfg->eps, decay = cfg->lr * cfg->weight_decay;
#pragma omp parallel for schedule(static) num_threads(gs_num_threads()) if (n > 65536)
    for (size_t i = 0; i < n; i++) {
        float g = grads[i];
        m[i] = b1 * m[i] + (1.0f - b1) * g;
        v[i] = b2 * v[i] + (1.0f - b2) * g * g;
        if (!decay_mask || decay_mask[i]) params[i] -= decay * params[i];
        params[i] -= lr * (m[i] * c1) / (sqrtf(v[i] * c2) + eps);
    }
}

double gs_grad_norm(size_t n, const float *grads)
{
    /* Fixed-size chunks summed in order: the same result for any thread count. */
    enum { CHUNK = 1 << 14 };
    size_t nchunks = (n + CHUNK - 1) / CHUNK;
    double total = 0.0;
    double *partial = gs_alloc(sizeof(double) * (nchunks ? nchunks : 1));
    if (!partial) { /* serial fallback, same chunking */
        for (size_t c = 0; c < nchunks; c++) {
            double s = 0.0;
            size_t end = (c + 1) * CHUNK < n ? (c + 1) * CHUNK : n;
            for (size_t i = c * CHUNK; i < end; i++) s += (double)grads[i] * grads[i];
            total += s;
        }
        return sqrt(total);
    }
#pragma omp parallel for schedule(static) num_threads(gs_num_threads()) if (nchunks > 4)
    for (size_t c = 0; c < nchunks; c++) {
        double s = 0.0;
        size_t end = (c + 1) * CHUNK < n ? (c + 1) * CHUNK : n;
        for (size_t i = c * CHUNK; i < end; i++) s += (double)grads[i] * grads[i];
        partial[c] = s;
    }
    for (size_t c = 0; c < nchunks; c++) total += partial[c];
    gs_free(partial);
    return sqrt(total);
}

double gs_clip_grad_norm(size_t n, float *grads, double max_norm)
{
    double norm = gs_grad_norm(n, grads);
    if (max_norm > 0.0 && norm > max_norm) {
        float s = (float)(max_norm / (norm + 1e-6));
#pragma omp parallel for schedule(static) num_threads(gs_num_threads()) if (n > 65536)
        for (size_t i = 0; i < n; i++) grads[i] *= s;
    }
    return norm;
}
