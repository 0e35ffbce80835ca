"""The tensor kernels of the C core against NumPy references (forward) and
central differences (backward), on odd shapes."""
import numpy as np
import pytest

import gensar
from gensar import ops

from conftest import central_difference

ODD_SHAPES = [(1, 1, 1), (3, 5, 7), (17, 1, 33), (1, 19, 4), (67, 45, 130), (130, 67, 300)]


def f32(rng, *shape):
    return rng.standard_normal(shape).astype(np.float32)


@pytest.mark.parametrize("M,N,K", ODD_SHAPES)
@pytest.mark.parametrize("trans_a", [False, True])
@pytest.mark.parametrize("trans_b", [False, True])
def test_matmul_all_transpose_forms(rng, M, N, K, trans_a, trans_b):
    a = f32(rng, K, M) if trans_a else f32(rng, M, K)
    b = f32(rng, N, K) if trans_b else f32(rng, K, N)
    ref = (a.T if trans_a else a).astype(np.float64) @ (b.T if trans_b else b).astype(np.float64)
    out = ops.matmul(a, b, trans_a=trans_a, trans_b=trans_b)
    assert out.shape == (M, N) and out.dtype == np.float32
    np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-4 * np.sqrt(K))


def test_matmul_alpha_beta_accumulates(rng):
    a, b, c0 = f32(rng, 70, 300), f32(rng, 300, 50), f32(rng, 70, 50)
    c = c0.copy()
    ops.matmul(a, b, alpha=0.5, beta=2.0, out=c)
    np.testing.assert_allclose(c, 0.5 * (a @ b) + 2.0 * c0, rtol=1e-4, atol=1e-3)


def test_matmul_beta_zero_ignores_garbage_in_out(rng):
    a, b = f32(rng, 13, 9), f32(rng, 9, 21)
    out = np.full((13, 21), np.nan, dtype=np.float32)
    ops.matmul(a, b, out=out)
    np.testing.assert_allclose(out, a @ b, rtol=1e-5, atol=1e-5)


# (M, N, K): one of many tiles, and two small-M deep products split one panel per tile
# so that both threads work (gemm.c panels_per_tile).
@pytest.mark.parametrize("M,N,K", [(300, 260, 700), (64, 128, 2048), (256, 96, 2048)])
def test_matmul_same_result_on_one_and_two_threads(rng, threads, M, N, K):
    a, b = f32(rng, M, K), f32(rng, K, N)
    gensar.set_num_threads(1)
    one = ops.matmul(a, b)
    gensar.set_num_threads(2)
    two = ops.matmul(a, b)
    assert np.array_equal(one, two)
    np.testing.assert_allclose(two, a.astype(np.float64) @ b, rtol=1e-4, atol=1e-4 * np.sqrt(K))


# Small products split between the threads, one fork and no barrier: many rows and a
# small B by rows (gemm.c splits_rows), each thread packing its own B; few rows and a
# wide B by whole column panels (splits_cols), each packing its own A. Every transpose
# form, a bias and the fused GELU, and ragged counts (rows not a multiple of the 12-row
# strip, columns not of the 32-column panel, an odd number of panels).
@pytest.mark.parametrize("M,N,K", [(256, 64, 64), (320, 128, 128), (301, 40, 300), (250, 125, 125),
                                   (64, 512, 128), (40, 200, 300), (64, 160, 2048), (120, 130, 512)])
@pytest.mark.parametrize("ta,tb", [(False, False), (False, True), (True, False), (True, True)])
def test_split_products_same_result_on_one_and_two_threads(rng, threads, M, N, K, ta, tb):
    a, b = f32(rng, *((K, M) if ta else (M, K))), f32(rng, *((N, K) if tb else (K, N)))
    w, bias = f32(rng, N, K), f32(rng, N)
    x = a.T.copy() if ta else a
    results = []
    for n in (1, 2):
        gensar.set_num_threads(n)
        results.append((ops.matmul(a, b, trans_a=ta, trans_b=tb), ops.linear(x, w, bias),
                        ops.linear(x, w, bias, activation="gelu_erf")))
    for one, two in zip(results[0][:2], results[1][:2]):  # the product, the linear layer
        assert np.array_equal(one, two)
    # GELU's exp underflows to denormals below x = -13: ops.* flush them on the worker
    # threads only, so there the two may differ by a denormal
    np.testing.assert_allclose(results[0][2], results[1][2], rtol=0, atol=1e-36)
    ref = (a.T if ta else a).astype(np.float64) @ (b.T if tb else b)
    np.testing.assert_allclose(results[1][0], ref, rtol=1e-4, atol=1e-4 * np.sqrt(K))


# A product of few rows (non-transposed A and B) may read B in place instead of
# packing it (gemm.c reads_b_in_place: here all but 13 x 70 x 130); its rows must match,
# bit for bit, the same rows of a tall product, which packs B. K <= 384 keeps both in
# one slab; N = 33 ends B on a masked partial panel.
@pytest.mark.parametrize("M,N,K", [(1, 33, 7), (12, 33, 384), (13, 70, 130), (64, 96, 64)])
def test_matmul_few_rows_match_the_packed_product_bitwise(rng, threads, M, N, K):
    a_tall, b = f32(rng, 600, K), f32(rng, K, N)
    gensar.set_num_threads(1)
    tall = ops.matmul(a_tall, b)
    few = ops.matmul(np.ascontiguousarray(a_tall[:M]), b)
    assert np.array_equal(few, tall[:M])
    np.testing.assert_allclose(few, a_tall[:M].astype(np.float64) @ b, rtol=1e-4, atol=1e-4 * np.sqrt(K))


def test_matmul_bad_input(rng):
    a, b = f32(rng, 4, 5), f32(rng, 5, 6)
    with pytest.raises(TypeError, match="float32"):
        ops.matmul(a.astype(np.float64), b)
    with pytest.raises(TypeError, match="numpy array"):
        ops.matmul([[1.0]], b)
    with pytest.raises(ValueError, match="inner dimensions"):
        ops.matmul(a, f32(rng, 6, 6))
    with pytest.raises(ValueError, match="C-contiguous"):
        ops.matmul(f32(rng, 5, 4).T, b)
    with pytest.raises(ValueError, match="empty"):
        ops.matmul(np.zeros((0, 5), np.float32), b)
    with pytest.raises(ValueError, match="2-dimensional"):
        ops.matmul(f32(rng, 4, 5, 1), b)
    with pytest.raises(ValueError, match="out must have shape"):
        ops.matmul(a, b, out=np.zeros((4, 5), np.float32))
    with pytest.raises(ValueError, match="pass out="):
        ops.matmul(a, b, beta=1.0)
    ro = np.zeros((4, 6), np.float32)
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        ops.matmul(a, b, out=ro)


def np_softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


@pytest.mark.parametrize("shape", [(1,), (3, 17), (2, 3, 33)])
def test_softmax_forward_backward(rng, shape):
    x = f32(rng, *shape)
    y = ops.softmax(x)
    np.testing.assert_allclose(y, np_softmax(x.astype(np.float64)), rtol=1e-5, atol=1e-6)
    r = f32(rng, *shape)
    dx = ops.softmax_backward(y, r)
    num = central_difference(lambda: (ops.softmax(x).astype(np.float64) * r).sum(), x, eps=1e-2)
    np.testing.assert_allclose(dx, num, rtol=2e-2, atol=2e-3)


def test_softmax_wide_range_and_masked_keys():
    """The 8-lane exponential path: rows of 8k + tail lengths, a 60-unit spread
    (terms that underflow), and -inf entries that must get exactly zero mass."""
    rng = np.random.default_rng(5)
    for n in (8, 9, 31, 1000):
        x = (rng.normal(size=(4, n)) * 20).astype(np.float32)
        x[:, ::5] = -np.inf
        y = ops.softmax(x)
        np.testing.assert_allclose(y, np_softmax(x.astype(np.float64)), rtol=1e-5, atol=1e-7)
        assert np.all(y[:, ::5] == 0.0)


def test_softmax_fully_masked_row_is_zero():
    x = np.full((2, 5), -np.inf, np.float32)
    x[1, 2] = 0.0
    y = ops.softmax(x)
    assert np.all(y[0] == 0) and y[1, 2] == 1.0


@pytest.mark.parametrize("shape", [(1, 1), (3, 17), (2, 3, 33)])
@pytest.mark.parametrize("with_beta", [True, False])
def test_layernorm_forward_backward(rng, shape, with_beta):
    C = shape[-1]
    x, gamma = f32(rng, *shape), f32(rng, C)
    beta = f32(rng, C) if with_beta else None
    y, mean, rstd = ops.layernorm(x, gamma, beta, 1e-5)
    x64 = x.astype(np.float64)
    mu, var = x64.mean(-1, keepdims=True), x64.var(-1, keepdims=True)
    ref = (x64 - mu) / np.sqrt(var + 1e-5) * gamma + (beta if with_beta else 0.0)
    np.testing.assert_allclose(y, ref, rtol=1e-4, atol=1e-4)
    r = f32(rng, *shape)
    dx, dgamma, dbeta = ops.layernorm_backward(x, gamma, mean, rstd, r)

    def loss():
        return (ops.layernorm(x, gamma, beta, 1e-5)[0].astype(np.float64) * r).sum()

    if C > 1:  # with C == 1 the output is constant in x
        np.testing.assert_allclose(dx, central_difference(loss, x), rtol=3e-2, atol=3e-3)
    np.testing.assert_allclose(dgamma, central_difference(loss, gamma), rtol=3e-2, atol=3e-3)
    if with_beta:
        np.testing.assert_allclose(dbeta, central_difference(loss, beta), rtol=3e-2, atol=3e-3)


@pytest.mark.parametrize("shape", [(1, 1), (3, 17), (2, 3, 33)])
def test_rmsnorm_forward_backward(rng, shape):
    C = shape[-1]
    x, w = f32(rng, *shape), f32(rng, C)
    y, rstd = ops.rmsnorm(x, w, 1e-6)
    x64 = x.astype(np.float64)
    ref = x64 / np.sqrt((x64**2).mean(-1, keepdims=True) + 1e-6) * w
    np.testing.assert_allclose(y, ref, rtol=1e-4, atol=1e-5)
    r = f32(rng, *shape)
    dx, dw = ops.rmsnorm_backward(x, w, rstd, r)

    def loss():
        return (ops.rmsnorm(x, w, 1e-6)[0].astype(np.float64) * r).sum()

    np.testing.assert_allclose(dx, central_difference(loss, x, eps=1e-3), rtol=3e-2, atol=3e-3)
    np.testing.assert_allclose(dw, central_difference(loss, w, eps=1e-3), rtol=3e-2, atol=3e-3)


def np_gelu_tanh(x):
    return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3)))


def np_gelu_erf(x):
    from math import erf

    return 0.5 * x * (1 + np.vectorize(erf)(x / np.sqrt(2)))


@pytest.mark.parametrize("name,ref", [("relu", lambda x: np.maximum(x, 0)),
                                      ("gelu_tanh", np_gelu_tanh), ("gelu_erf", np_gelu_erf)])
def test_activations_forward_backward(rng, name, ref):
    x = f32(rng, 3, 17)
    x[np.abs(x) < 0.05] += 0.1  # keep away from relu's kink, where differences are undefined
    np.testing.assert_allclose(ops.activation(name, x), ref(x.astype(np.float64)), rtol=1e-5,
                               atol=1e-6)
    r = f32(rng, 3, 17)
    dx = ops.activation_backward(name, x, r)
    num = central_difference(lambda: (ops.activation(name, x).astype(np.float64) * r).sum(), x,
                             eps=1e-2)
    np.testing.assert_allclose(dx, num, rtol=2e-2, atol=2e-3)


def test_gelu_erf_accuracy_over_the_whole_range():
    """The vectorised erfc path (masked vector tails) against float64 erf, from the
    far negative side (where 1 + erf cancels) to saturation, including +-0 and +inf."""
    x = np.concatenate([np.linspace(-12, 12, 40_001), [0.0, -0.0, np.inf, 1e-30, -1e-30, 7.5]]).astype(np.float32)
    y = ops.activation("gelu_erf", x)
    finite = np.isfinite(x)
    ref = np_gelu_erf(x[finite].astype(np.float64))
    err = np.abs(y[finite] - ref)
    assert np.all(err <= 2e-7 * np.abs(x[finite]) + 1e-6 * np.abs(ref) + 1e-30), err.max()
    assert y[~finite][0] == np.inf


@pytest.mark.parametrize("N,C,OC,bias", [(1, 1, 1, True), (3, 17, 5, True), (19, 7, 33, False)])
def test_linear_forward_backward(rng, N, C, OC, bias):
    x, W = f32(rng, N, C), f32(rng, OC, C)
    b = f32(rng, OC) if bias else None
    y = ops.linear(x, W, b)
    ref = x.astype(np.float64) @ W.T + (b if bias else 0.0)
    np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-5)
    r = f32(rng, N, OC)
    dx, dW, db = ops.linear_backward(x, W, r)

    def loss():
        return (ops.linear(x, W, b).astype(np.float64) * r).sum()

    np.testing.assert_allclose(dx, central_difference(loss, x), rtol=1e-2, atol=1e-3)
    np.testing.assert_allclose(dW, central_difference(loss, W), rtol=1e-2, atol=1e-3)
    np.testing.assert_allclose(db, r.sum(0), rtol=1e-5, atol=1e-5)
    if bias:
        np.testing.assert_allclose(db, central_difference(loss, b), rtol=1e-2, atol=1e-3)


@pytest.mark.parametrize("N,C,OC", [(13, 800, 37), (130, 384, 1536)])
def test_linear_forward_fused_bias_deep_products(rng, N, C, OC):
    """The bias is added as the SGEMM writes its tiles: check it on products of
    several depth slabs (C > 384) and ragged tiles, against float64."""
    x, W, b = f32(rng, N, C), f32(rng, OC, C), f32(rng, OC)
    y = ops.linear(x, W, b)
    ref = x.astype(np.float64) @ W.T.astype(np.float64) + b
    np.testing.assert_allclose(y, ref, rtol=1e-5, atol=2e-6 * np.sqrt(C))


def test_adamw_matches_numpy_reference(rng):
    n = 37
    p, m, v = f32(rng, n), np.zeros(n, np.float32), np.zeros(n, np.float32)
    p64, m64, v64 = p.astype(np.float64), np.zeros(n), np.zeros(n)
    lr, b1, b2, eps, wd = 1e-2, 0.9, 0.98, 1e-8, 0.1
    for t in range(1, 6):
        g = f32(rng, n)
        ops.adamw_step(p, g, m, v, t, lr, b1, b2, eps, wd)
        m64 = b1 * m64 + (1 - b1) * g
        v64 = b2 * v64 + (1 - b2) * g.astype(np.float64) ** 2
        p64 = p64 * (1 - lr * wd) - lr * (m64 / (1 - b1**t)) / (np.sqrt(v64 / (1 - b2**t)) + eps)
    np.testing.assert_allclose(p, p64, rtol=1e-5, atol=1e-6)


def test_clip_grad_norm(rng):
    g = f32(rng, 1000) * 10
    norm = np.linalg.norm(g.astype(np.float64))
    assert ops.clip_grad_norm(g, 1.0) == pytest.approx(norm, rel=1e-6)
    assert np.linalg.norm(g.astype(np.float64)) == pytest.approx(1.0, rel=1e-4)
    g2 = g.copy()
    ops.clip_grad_norm(g2, 0.0)  # 0 disables clipping
    assert np.array_equal(g, g2)


def test_row_kernels_bad_input(rng):
    x = f32(rng, 3, 4)
    with pytest.raises(ValueError, match="gamma must have shape"):
        ops.layernorm(x, f32(rng, 5))
    with pytest.raises(ValueError, match="eps must be a finite number > 0"):
        ops.rmsnorm(x, f32(rng, 4), 0.0)
    with pytest.raises(ValueError, match="same shape"):
        ops.softmax_backward(x, f32(rng, 3, 5))
    with pytest.raises(ValueError, match="one entry per row"):
        ops.rmsnorm_backward(x, f32(rng, 4), f32(rng, 2), x)
    with pytest.raises(ValueError, match="unknown activation 'swish'"):
        ops.activation("swish", x)
    with pytest.raises(TypeError, match="float32"):
        ops.softmax(x.astype(np.float16))
    with pytest.raises(ValueError, match="W must have shape"):
        ops.linear(x, f32(rng, 2, 3))
    with pytest.raises(ValueError, match="step must be an integer >= 1"):
        ops.adamw_step(x[0].copy(), x[0], x[0].copy(), x[0].copy(), 0)
    with pytest.raises(ValueError, match="beta1"):
        ops.adamw_step(x[0].copy(), x[0], x[0].copy(), x[0].copy(), 1, beta1=1.0)


def test_set_num_threads(threads):
    gensar.set_num_threads(1)
    assert gensar.get_num_threads() == 1
    gensar.set_num_threads(2)
    assert gensar.get_num_threads() == 2
    with pytest.raises(ValueError, match=r"n \(number of threads\) must be an integer in \[0, "):
        gensar.set_num_threads(-1)


def test_gil_is_released_during_matmul(rng):
    """A Python thread keeps running while a long matmul computes."""
    import threading
    import time

    a, b = f32(rng, 2000, 2000), f32(rng, 2000, 2000)
    ticks = []
    done = threading.Event()

    def ticker():
        while not done.is_set():
            ticks.append(time.perf_counter())
            time.sleep(0.001)

    t = threading.Thread(target=ticker)
    t.start()
    time.sleep(0.01)
    start = time.perf_counter()
    ops.matmul(a, b)  # one call of ~0.1-0.5 s
    end = time.perf_counter()
    done.set()
    t.join()
    during = [x for x in ticks if start < x < end]
    # With the GIL held the ticker could not tick at all inside the call.
    assert len(during) >= 10
