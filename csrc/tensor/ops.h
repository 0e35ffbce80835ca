/* Small row-wise kernels of the transformer and their backward passes.
 * Shapes: `rows` independent rows of `n` (or C) contiguous floats. Backward
 * functions ACCUMULATE into parameter gradients (dgamma, dbeta, dweight) and
 * OVERWRITE input gradients (dx), the convention of every layer in csrc/nn.
 * dx may alias dy (in-place) wherever noted. */
#ifndef GENSAR_OPS_H
#define GENSAR_OPS_H

#include <stddef.h>

// y[j] = exp(x[j] - shift) for j < n (0 where x[j] = -inf), returns sum_j y[j]. shift >= max x,
// finite. y == NULL only returns the sum. The exponentials of softmax, attention and
// cross-entropy: 16 lanes with AVX-512, 8 with AVX2, summed in a fixed order per path.
float gs_exp_shifted(int n, const float *x, float shift, float *y);
// x (rows, n) -> y (rows, n), y = softmax(x) per row; y may alias x
void gs_softmax_forward(size_t rows, int n, const float *x, float *y);
// y (rows, n) softmax output, dy (rows, n) -> dx (rows, n); dx may alias dy
void gs_softmax_backward(size_t rows, int n, const float *y, const float *dy, float *dx);

// x (rows, C), gamma (C), beta (C) or NULL -> y (rows, C), mean (rows), rstd (rows)
void gs_layernorm_forward(size_t rows, int C, const float *x, const float *gamma,
                          const float *beta, float eps, float *y, float *mean, float *rstd);
// dy (rows, C) -> dx (rows, C) overwritten; dgamma (C), dbeta (C) or NULL accumulated
void gs_layernorm_backward(size_t rows, int C, const float *x, const float *gamma,
                           const float *mean, const float *rstd, const float *dy, float *dx,
                           float *dgamma, float *dbeta);

// T5-style RMS norm: y = x / sqrt(mean(x^2) + eps) * weight. x (rows, C), weight (C)
// -> y (rows, C), rstd (rows)
void gs_rmsnorm_forward(size_t rows, int C, const float *x, const float *weight, float eps,
                        float *y, float *rstd);
// dy (rows, C) -> dx (rows, C) overwritten; dweight (C) accumulated
void gs_rmsnorm_backward(size_t rows, int C, const float *x, const float *weight,
                         const float *rstd, const float *dy, float *dx, float *dweight);

// Elementwise activations over n floats. y may alias x; dx may alias dy.
void gs_relu_forward(size_t n, const float *x, float *y);
void gs_relu_backward(size_t n, const float *x, const float *dy, float *dx);
// GELU, tanh approximation (T5 "gated-gelu", GPT-2 "gelu_new")
void gs_gelu_tanh_forward(size_t n, const float *x, float *y);
void gs_gelu_tanh_backward(size_t n, const float *x, const float *dy, float *dx);
// GELU, exact erf form (BERT "gelu")
void gs_gelu_erf_forward(size_t n, const float *x, float *y);
// the same in place on a (rows, cols) block with row stride ldy, on the calling thread
// (for use inside a parallel region, e.g. on a tile of a product just computed)
void gs_gelu_erf_rows(int rows, int cols, float *y, int ldy);
void gs_gelu_erf_backward(size_t n, const float *x, const float *dy, float *dx);

#endif
