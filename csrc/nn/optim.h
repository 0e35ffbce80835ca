/* AdamW with decoupled weight decay (Loshchilov & Hutter) and global
 * gradient-norm clipping, over flat buffers: params, grads, m and v share one
 * layout of n floats. */
#ifndef GENSAR_OPTIM_H
#define GENSAR_OPTIM_H

#include <stddef.h>

typedef struct {
    float lr, beta1, beta2, eps, weight_decay;
} gs_adamw_config;

/* Checks an AdamW setting before any update: lr, eps, weight_decay finite,
 * lr >= 0, 0 <= beta1, beta2 < 1, eps > 0, weight_decay >= 0, and (when the
 * buffers are given, n floats each) that params, grads, m and v do not overlap:
 * the update reads and writes them element by element, so m and v as one buffer
 * would silently compute garbage. Returns GS_OK or GS_EINVAL naming the setting. */
int gs_adamw_check(const gs_adamw_config *cfg, size_t n, const float *params, const float *grads,
                   const float *m, const float *v);

/* max_grad_norm of the training steps: >= 0 (0 = no clipping), not NaN. */
int gs_check_max_grad_norm(double max_grad_norm);

/* One update at step t (1-based, for bias correction). Entries whose
 * decay_mask is 0 get no weight decay (norm gains, biases); decay_mask may be
 * NULL (decay everything). */
void gs_adamw_step(size_t n, float *params, const float *grads, float *m, float *v,
                   const unsigned char *decay_mask, const gs_adamw_config *cfg, long t);

/* L2 norm of grads (n floats), summed in double in a fixed order. */
double gs_grad_norm(size_t n, const float *grads);

/* Scales grads so their L2 norm is at most max_norm (no-op if max_norm <= 0).
 * Returns the norm before clipping. */
double gs_clip_grad_norm(size_t n, float *grads, double max_norm);

#endif
