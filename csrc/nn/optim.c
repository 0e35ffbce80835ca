#include "optim.h"

#include <math.h>

#include "../common.h"

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
