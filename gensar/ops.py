"""Low-level kernels of the C core, exposed for tests, benchmarks and glue code.

All functions take C-contiguous float32 NumPy arrays (non-contiguous arrays are
refused with a ValueError rather than copied silently) and release the GIL.
Row-wise kernels act on the last axis: an array of shape (..., C) is seen as
(rows, C).

    matmul(a, b, trans_a=False, trans_b=False, alpha=1.0, beta=0.0, out=None)
        out (M, N) = alpha * op(a) (M, K) @ op(b) (K, N) + beta * out
    softmax(x) -> y;                          softmax_backward(y, dy) -> dx
    layernorm(x, gamma, beta=None, eps=1e-5) -> (y, mean, rstd)
    layernorm_backward(x, gamma, mean, rstd, dy) -> (dx, dgamma, dbeta)
    rmsnorm(x, weight, eps=1e-6) -> (y, rstd)
    rmsnorm_backward(x, weight, rstd, dy) -> (dx, dweight)
    activation(name, x) -> y;                  activation_backward(name, x, dy) -> dx
        name: "relu", "gelu_tanh" (T5 gated-gelu), "gelu_erf" (BERT)
    linear(x, W, b=None, activation=None) -> y   x (..., C), W (OC, C) (PyTorch layout), y (..., OC);
        activation="gelu_erf" fuses BERT's GELU into the product (each tile while in cache)
    linear_backward(x, W, dy) -> (dx, dW, db)
    adamw_step(params, grads, m, v, step, lr, beta1, beta2, eps, weight_decay)   in place
    clip_grad_norm(grads, max_norm) -> norm before clipping                     in place
"""
from ._core import (
    activation,
    activation_backward,
    adamw_step,
    clip_grad_norm,
    linear,
    linear_backward,
    gemm_kernel_name,
    layernorm,
    layernorm_backward,
    rmsnorm,
    rmsnorm_backward,
    softmax,
    softmax_backward,
)
from ._core import sgemm as matmul

__all__ = [
    "matmul", "softmax", "softmax_backward", "layernorm", "layernorm_backward", "rmsnorm",
    "rmsnorm_backward", "activation", "activation_backward", "linear", "linear_backward",
    "adamw_step", "clip_grad_norm", "gemm_kernel_name",
]
