/* Joint RQ-VAE of GenSAR's dual-purpose identifiers (GENSAR.md section 2).
 *
 * Per tower t (0 = semantic, 1 = collaborative; T = 1 gives the single-embedding,
 * TIGER-style RQ-VAE):
 *   encoder  x_t (B,in_t) -> Linear/ReLU ... -> Linear -> z_t (B,h)   (no ReLU last)
 *   z = [z_0 | z_1] (B, T*h) -> residual quantiser (rq.h): shared levels on z,
 *       then tower-specific levels on each half of the residual -> zq (B, T*h)
 *   decoder  zq_t (B,h) -> mirrored MLP -> xhat_t (B,in_t)
 * Loss = sum_t mean((xhat_t - x_t)^2) + (1/nL) sum_l [mse(q_l, sg(r_l)) + beta mse(sg(q_l), r_l)]
 * where r_l is the residual entering level l and q_l its chosen codeword.
 *
 * Gradients follow the reference's autograd exactly (straight-through):
 *   - the decoder input zq passes its gradient to z unchanged;
 *   - the residual handed to the next level is r - (r + sg(q - r)), whose
 *     gradient path to z is zero, so only levels that read the encoder output
 *     directly (the first shared level, or with no shared level the first
 *     specific level of each tower) pass their commitment term to the encoder;
 *   - codebooks learn only from the codebook term.
 * All parameters (MLPs and codebooks) live in one float buffer; AdamW (csrc/nn/optim.h)
 * decays all of them, as torch.optim.AdamW(model.parameters()) does. */
#ifndef GENSAR_RQVAE_H
#define GENSAR_RQVAE_H

#include <stddef.h>
#include <stdint.h>

#include "rq.h"

#define GS_RQVAE_MAX_HIDDEN 8

typedef struct {
    int n_towers;  /* 1 or 2 */
    int in_dim[2]; /* embedding width of each tower */
    int n_hidden;  /* encoder hidden layers; the decoder mirrors them */
    int hidden[GS_RQVAE_MAX_HIDDEN];
    int latent; /* h, per tower */
    int n_shared, n_specific;
    int shared_k[GS_RQ_MAX_LEVELS], specific_k[GS_RQ_MAX_LEVELS];
    float beta; /* commitment weight (reference 0.25) */
} gs_rqvae_config;

typedef struct gs_rqvae gs_rqvae;

/* Allocates a model for batches of at most max_batch rows; MLP weights
 * Xavier-normal from seed, biases 0, codebooks 0 (call gs_rqvae_init_codebooks). */
int gs_rqvae_create(const gs_rqvae_config *cfg, int max_batch, uint64_t seed, gs_rqvae **out);
void gs_rqvae_free(gs_rqvae *m);

size_t gs_rqvae_num_params(const gs_rqvae *m);
float *gs_rqvae_params(gs_rqvae *m);
float *gs_rqvae_grads(gs_rqvae *m);
float *gs_rqvae_adam_m(gs_rqvae *m);
float *gs_rqvae_adam_v(gs_rqvae *m);
long *gs_rqvae_step_counter(gs_rqvae *m);
const gs_rq_config *gs_rqvae_rq(const gs_rqvae *m);
size_t gs_rqvae_codebook_offset(const gs_rqvae *m);

/* Tensor i of the parameter buffer (0 <= i < count): name, offset, 1 or 2 dims.
 * Returns the number of tensors when i < 0. */
int gs_rqvae_tensor(const gs_rqvae *m, int i, char *name, size_t name_len, size_t *offset,
                    int *ndim, int dims[2]);

/* Encoder forward of N rows (any N, processed in chunks of max_batch):
 * x0 (N,in_0), x1 (N,in_1) or NULL when T = 1 -> z (N, T*h). */
int gs_rqvae_latent(gs_rqvae *m, size_t N, const float *x0, const float *x1, float *z);

/* k-means initialisation of every codebook on one batch (B <= max_batch,
 * B >= every codebook size), level by level on the running residual. */
int gs_rqvae_init_codebooks(gs_rqvae *m, int B, const float *x0, const float *x1, int max_iter,
                            uint64_t seed);

/* One batch forward + backward: grads are overwritten. losses (4): total,
 * reconstruction MSE of tower 0, of tower 1 (0 when T = 1), quantisation term. */
int gs_rqvae_forward_backward(gs_rqvae *m, int B, const float *x0, const float *x1,
                              double losses[4]);

/* forward_backward, then one AdamW update (lr > 0, weight_decay >= 0, both
 * finite, else GS_EINVAL; betas 0.9/0.999, eps 1e-8). */
int gs_rqvae_train_step(gs_rqvae *m, int B, const float *x0, const float *x1, float lr,
                        float weight_decay, double losses[4]);

/* Full forward of N rows without gradients: codes (N, nL) (plain nearest
 * codes), and sq_err (N, T): per-item sum of squared reconstruction errors of
 * each tower (NULL to skip). */
int gs_rqvae_reconstruct(gs_rqvae *m, size_t N, const float *x0, const float *x1, int32_t *codes,
                         float *sq_err);

/* Codes assigned during training since the last restart check: out (sum of
 * the levels' codebook sizes, levels in code order) int64, if not NULL.
 * Returns that total number of codes. */
size_t gs_rqvae_code_usage(const gs_rqvae *m, int64_t *out);

/* Dead-code restarts (the usual VQ remedy for codebook collapse): every code
 * no training row was assigned to since the previous call (or creation) is
 * moved onto the residual entering its level of a distinct random row of the
 * last forward batch (the last training batch when called after a step), with its AdamW moments zeroed; then every usage counter
 * is reset. At most B codes per level move per call (B = last batch size).
 * restarted (nL) or NULL: codes moved per level. Needs one training step first. */
int gs_rqvae_restart_dead_codes(gs_rqvae *m, uint64_t seed, int *restarted);

#endif
