"""Every kernel path this CPU supports (scalar, AVX2, AVX-512) against float64
NumPy and against each other, and the ways to choose a path (GENSAR_ISA,
gensar.set_isa, gensar.cpu_info).

Tolerances: matrix products 1e-4 relative (float32 accumulation over K); the
row kernels and activations 2e-6 relative + 1e-6 absolute (one polynomial
exponential, ~1 ulp; erfc/tanh to ~1.5e-7 absolute). Paths agree with each
other to within those same bounds, not bit for bit: they sum in different
vector orders."""
import os
import subprocess
import sys

import numpy as np
import pytest

import gensar
from gensar import cpu, ops

SUPPORTED = cpu.ISAS[:cpu.ISAS.index(gensar._core.best_isa()) + 1]


@pytest.fixture(params=SUPPORTED)
def isa(request):
    before = gensar.get_isa()
    gensar.set_isa(request.param)
    yield request.param
    gensar.set_isa(before)


def np_gelu_erf(v):
    from math import erf
    return 0.5 * v * (1 + np.vectorize(erf)(v / np.sqrt(2)))


def f32(rng, *shape, scale=1.0):
    return (rng.standard_normal(shape) * scale).astype(np.float32)


def test_cpu_info_names_the_path():
    info = gensar.cpu_info()
    assert info["isa"] in cpu.ISAS and info["best_isa"] in cpu.ISAS
    assert cpu.ISAS.index(info["isa"]) <= cpu.ISAS.index(info["best_isa"])
    assert info["sgemm_kernel"] == info["isa"]
    assert info["cpu"] and isinstance(info["flags"], list)
    assert info["isa"] in cpu.describe()


def test_set_isa_rejects_unknown_and_unsupported():
    with pytest.raises(ValueError, match="scalar"):
        gensar.set_isa("sse9")
    with pytest.raises(TypeError):
        gensar.set_isa(2)
    if gensar._core.best_isa() != "avx512":
        with pytest.raises(ValueError, match="does not support"):
            gensar.set_isa("avx512")


def test_gensar_isa_environment_variable():
    code = "import gensar; print(gensar.get_isa())"
    # a sanitizer build (README, "Sanitizer build") needs its preload in the child too
    keep = {k: os.environ[k] for k in ("LD_PRELOAD", "ASAN_OPTIONS", "UBSAN_OPTIONS")
            if k in os.environ}
    out = subprocess.run([sys.executable, "-c", code], env={"GENSAR_ISA": "scalar", "PATH": "", **keep},
                         capture_output=True, text=True, cwd=".")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "scalar"
    bad = subprocess.run([sys.executable, "-c", code], env={"GENSAR_ISA": "avx9000", **keep},
                         capture_output=True, text=True)
    assert bad.returncode != 0 and "GENSAR_ISA" in bad.stderr


@pytest.mark.parametrize("M,N,K", [(1, 1, 1), (13, 33, 7), (25, 70, 130), (130, 67, 300), (64, 1000, 40)])
@pytest.mark.parametrize("ta,tb", [(False, False), (False, True), (True, False), (True, True)])
def test_matmul_every_path(rng, isa, M, N, K, ta, tb):
    a = f32(rng, K, M) if ta else f32(rng, M, K)
    b = f32(rng, N, K) if tb else f32(rng, K, N)
    ref = (a.T if ta else a).astype(np.float64) @ (b.T if tb else b).astype(np.float64)
    c0 = f32(rng, M, N)
    out = c0.copy()
    ops.matmul(a, b, trans_a=ta, trans_b=tb, alpha=0.5, beta=2.0, out=out)
    np.testing.assert_allclose(out, 0.5 * ref + 2.0 * c0, rtol=1e-4, atol=1e-4 * np.sqrt(K))
    assert ops.gemm_kernel_name() == isa


def test_linear_with_bias_every_path(rng, isa):
    x, w, b = f32(rng, 37, 45), f32(rng, 29, 45), f32(rng, 29)
    np.testing.assert_allclose(ops.linear(x, w, b), x.astype(np.float64) @ w.T + b, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("N,C,OC", [(37, 45, 29), (130, 384, 1536), (13, 800, 37)])
def test_linear_gelu_fused_every_path(rng, isa, N, C, OC):
    """GELU fused into the product's tiles (activation='gelu_erf') gives the product
    followed by the activation, on every path, for ragged tiles, several depth slabs
    (C = 800) and with or without a bias: bit for bit, except where exp underflows
    (x < -13), since ops.* flush denormals on the pool's worker threads only and the
    two calls share elements out to threads differently."""
    x, w, b = f32(rng, N, C), f32(rng, OC, C), f32(rng, OC)
    for bias in (b, None):
        fused = ops.linear(x, w, bias, activation="gelu_erf")
        np.testing.assert_allclose(fused, ops.activation("gelu_erf", ops.linear(x, w, bias)), rtol=0, atol=1e-36)
    ref = np_gelu_erf(x.astype(np.float64) @ w.T + b)
    np.testing.assert_allclose(ops.linear(x, w, b, activation="gelu_erf"), ref, rtol=1e-4, atol=1e-4)


def np_softmax(x):
    x = x.astype(np.float64)
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


@pytest.mark.parametrize("n", [1, 7, 16, 33, 1000])
def test_softmax_every_path(rng, isa, n):
    x = f32(rng, 9, n, scale=8.0)
    x[0, :n // 2] = -np.inf
    y = ops.softmax(x)
    np.testing.assert_allclose(y, np_softmax(x), rtol=2e-6, atol=1e-7)
    assert np.all(y[0, :n // 2] == 0.0)
    dy = f32(rng, 9, n)
    dx = ops.softmax_backward(y, dy)
    yd = y.astype(np.float64)
    ref = yd * (dy - (yd * dy).sum(-1, keepdims=True))
    np.testing.assert_allclose(dx, ref, rtol=1e-5, atol=1e-6)


def test_norms_every_path(rng, isa):
    x, g, b, dy = f32(rng, 21, 70), f32(rng, 70), f32(rng, 70), f32(rng, 21, 70)
    xd = x.astype(np.float64)
    y, mean, rstd = ops.layernorm(x, g, b, eps=1e-5)
    mu, var = xd.mean(-1, keepdims=True), xd.var(-1, keepdims=True)
    np.testing.assert_allclose(y, (xd - mu) / np.sqrt(var + 1e-5) * g + b, rtol=1e-5, atol=1e-5)
    y, rstd = ops.rmsnorm(x, g, eps=1e-6)
    ref = xd / np.sqrt((xd ** 2).mean(-1, keepdims=True) + 1e-6) * g
    np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-5)
    dx, dw = ops.rmsnorm_backward(x, g, rstd, dy)
    r = 1 / np.sqrt((xd ** 2).mean(-1, keepdims=True) + 1e-6)
    np.testing.assert_allclose(dw, (dy * xd * r).sum(0), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", ["relu", "gelu_tanh", "gelu_erf"])
def test_activations_every_path(rng, isa, name):
    x = np.concatenate([np.linspace(-12, 12, 4001), rng.standard_normal(37) * 3]).astype(np.float32)
    xd = x.astype(np.float64)
    if name == "relu":
        ref = np.maximum(xd, 0)
    elif name == "gelu_tanh":
        ref = 0.5 * xd * (1 + np.tanh(np.sqrt(2 / np.pi) * (xd + 0.044715 * xd ** 3)))
    else:
        ref = np_gelu_erf(xd)
    np.testing.assert_allclose(ops.activation(name, x), ref, rtol=2e-6, atol=1e-6)
    # the backward against a float64 central difference of the float64 reference
    h = 1e-4
    x2 = rng.uniform(-5, 5, 501).astype(np.float32)
    dy = np.ones_like(x2)
    dx = ops.activation_backward(name, x2, dy)
    xd = x2.astype(np.float64)
    if name == "relu":
        num = (xd > 0).astype(np.float64)
    else:
        f = (lambda v: 0.5 * v * (1 + np.tanh(np.sqrt(2 / np.pi) * (v + 0.044715 * v ** 3)))) \
            if name == "gelu_tanh" else np_gelu_erf
        num = (f(xd + h) - f(xd - h)) / (2 * h)
    np.testing.assert_allclose(dx, num, rtol=1e-5, atol=2e-6)


def test_cross_entropy_every_path(rng, isa):
    logits, targets = f32(rng, 23, 517, scale=5.0), rng.integers(0, 517, 23).astype(np.int32)
    targets[3] = -100
    ld = logits.astype(np.float64)
    lse = np.log(np.exp(ld - ld.max(-1, keepdims=True)).sum(-1)) + ld.max(-1)
    row = lse - ld[np.arange(23), np.where(targets < 0, 0, targets)]
    row[3] = 0
    mean, rows, count = gensar._core.cross_entropy(logits, targets)  # mean over counted rows
    assert count == 22
    np.testing.assert_allclose(rows, row, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(mean, row.sum() / 22, rtol=1e-5)
    d = gensar._core.cross_entropy_backward(logits, targets, 0.5)
    p = np.exp(ld - lse[:, None]) * 0.5
    p[np.arange(23), targets] -= 0.5
    p[3] = 0
    np.testing.assert_allclose(d, p, rtol=1e-5, atol=1e-7)


def test_log_sum_exp_every_path(rng, isa):
    x = f32(rng, 7, 2049, scale=10.0)
    ref = np.log(np.exp(x.astype(np.float64) - 40).sum(-1)) + 40
    np.testing.assert_allclose(gensar._core.log_sum_exp(x), ref, rtol=1e-6)
    assert gensar._core.log_sum_exp_kernel_name() in cpu.ISAS


@pytest.mark.parametrize("case", [(3, 2, 5, 7, 3, False, True, True, 1.0),
                                  (2, 2, 5, 19, 16, True, True, True, 1.0),
                                  (2, 3, 4, 6, 32, False, True, False, 0.7)],
                         ids=["3-col-heads", "16-col-heads", "32-col-heads"])
def test_attention_every_path(isa, case):
    """Attention forward against float64 NumPy and every gradient against central
    differences (test_layers' checks), on every path: heads of 16k columns are multiplied
    in place, others through padded scratch (layers.c mm_head)."""
    from test_layers import test_attention_backward, test_attention_forward

    test_attention_forward(*case)
    test_attention_backward(*case, dropout_p=0.3)


def test_paths_agree_on_a_training_step(rng):
    """One Seq2Seq training step from the same start on every path: the losses
    agree to float32 accumulation error."""
    cfg = dict(vocab_size=97, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_decoder_layers=2,
               num_heads=4, dropout_rate=0.1)
    ids = rng.integers(1, 97, (6, 11)).astype(np.int32)
    batch = dict(input_ids=ids, attention_mask=np.ones_like(ids),
                 labels=rng.integers(1, 97, (6, 5)).astype(np.int32))
    before = gensar.get_isa()
    losses = {}
    try:
        for name in SUPPORTED:
            gensar.set_isa(name)
            m = gensar.Seq2Seq(cfg, seed=3)
            losses[name] = [m.train_step(batch) for _ in range(3)]
    finally:
        gensar.set_isa(before)
    ref = losses[SUPPORTED[0]]
    for name, ls in losses.items():
        np.testing.assert_allclose(ls, ref, rtol=1e-4, err_msg=name)


def test_calling_thread_keeps_subnormals_after_gensar_calls():
    """gensar flushes denormals inside its own calls only (csrc/common.c): NumPy on the
    caller's thread still computes IEEE subnormals after a training step."""
    m = gensar.Seq2Seq(dict(vocab_size=50, d_model=16, d_kv=4, d_ff=32, num_layers=1, num_decoder_layers=1,
                            num_heads=4), seed=0)
    ids = np.arange(1, 13, dtype=np.int32).reshape(2, 6)
    m.train_step(dict(input_ids=ids, attention_mask=np.ones_like(ids), labels=ids[:, :3]))
    tiny = np.float32(1e-39)  # subnormal in float32
    assert tiny * np.float32(1.0) != 0 and np.float32(1e-38) / np.float32(100.0) != 0
