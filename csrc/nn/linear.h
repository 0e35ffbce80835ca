/* Fully connected layer, the building block of every model in the core
 * (transformer projections, RQ-VAE MLPs, SASRec, the sentence encoder).
 * Weights use the PyTorch / HuggingFace layout W (OC, C), so checkpoints load
 * without transposes. */
#ifndef GENSAR_LINEAR_H
#define GENSAR_LINEAR_H

#include <stddef.h>

// x (N,C) @ W^T (C,OC) + b (OC) or NULL -> y (N,OC)
void gs_linear_forward(size_t N, int C, int OC, const float *x, const float *W, const float *b,
                       float *y);
// the same, then GELU (erf form), fused into the product (gs_sgemm_bias_gelu)
void gs_linear_gelu_forward(size_t N, int C, int OC, const float *x, const float *W, const float *b,
                            float *y);
// dy (N,OC) -> dx (N,C) OVERWRITTEN (skipped if dx is NULL); dW (OC,C) and db (OC) ACCUMULATED
// (db may be NULL)
void gs_linear_backward(size_t N, int C, int OC, const float *x, const float *W, const float *dy,
                        float *dx, float *dW, float *db);

#endif
