"""The opt-in bf16 matrix products (gensar.set_precision("bf16"), GENSAR_PRECISION)
on CPUs with AVX512-BF16; the tests that need such a CPU skip elsewhere.

Tolerances, with u = 2**-8 the unit roundoff of bfloat16 (8 significant bits,
round to nearest even):
- against float64 NumPy on inputs first rounded to bf16 (as the kernel rounds
  them): the product of two bf16 numbers is exact in fp32 (8 + 8 significant
  bits), so the only error left is the fp32 summation over K, the same bound as
  the fp32 path's tests: rtol 1e-4, atol 1e-4 sqrt(K).
- against float64 NumPy on the unrounded inputs: |bf(a) bf(b) - a b| <= (2u + u^2)
  |a b| for every term, so |error| <= |alpha| (2u + u^2) (|op(A)| @ |op(B)|) plus
  that fp32 summation slack; a bound that holds for every element and every K.
- training: a seeded 200-step run of a small T5 on a fixed synthetic task (reverse
  the first six tokens) in bf16 has a loss curve (means over 20-step windows)
  within 2% of the fp32 run's, window by window (at most 0.7% seen on a Xeon
  with AVX512-BF16 and AMX, either kernel), and it learns (final window below
  85% of the first; about 80% in either precision).
"""
import os
import subprocess
import sys

import numpy as np
import pytest

import gensar
from gensar import ops

HAS_BF16 = gensar._core.has_bf16()
needs_bf16 = pytest.mark.skipif(not HAS_BF16, reason="this CPU has no AVX512-BF16 (or no AVX-512 path)")
U = 2.0 ** -8  # bfloat16 unit roundoff


def bf16(x):
    """x rounded to bfloat16 (nearest, ties to even), as float32; finite x only."""
    u = np.ascontiguousarray(x, np.float32).view(np.uint32).astype(np.uint64)
    r = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16) << 16
    return r.astype(np.uint32).view(np.float32).reshape(np.shape(x))


# the two bf16 kernels: VDPBF16PS (AVX512-BF16) and, where the CPU has AMX, TDPBF16PS tiles
BF16_KERNELS = ["avx512-bf16"] + (["amx-bf16"] if HAS_BF16 and gensar._core.amx() else [])


@pytest.fixture(params=BF16_KERNELS)
def bf16_mode(request):
    """Runs the test in bf16 on each bf16 kernel, and restores the precision,
    path and AMX setting after it."""
    before_isa, before, amx = gensar.get_isa(), gensar.get_precision(), gensar._core.amx()
    gensar.set_isa("avx512")
    gensar.set_precision("bf16")
    gensar._core.set_amx(request.param == "amx-bf16")
    yield request.param
    gensar._core.set_amx(amx)
    gensar.set_precision(before)
    gensar.set_isa(before_isa)


def f32(rng, *shape):
    return rng.standard_normal(shape).astype(np.float32)


def test_bf16_rounding_helper():
    # ties go to even: 1 + 2^-8 lies halfway between 1 and 1 + 2^-7
    x = np.array([1.0, 1 + 2 ** -8, 1 + 3 * 2 ** -8, -2.5, 1 + 2 ** -9], np.float32)
    np.testing.assert_array_equal(bf16(x), [1.0, 1.0, 1 + 2 ** -6, -2.5, 1.0])


def test_precision_default_and_reported():
    info = gensar.cpu_info()
    assert info["precision"] == gensar.get_precision() == "fp32"
    assert info["bf16"] == HAS_BF16
    assert HAS_BF16 == ("avx512_bf16" in info["flags"] and info["best_isa"] == "avx512")


def test_set_precision_rejects_bad_values():
    with pytest.raises(ValueError, match="fp32"):
        gensar.set_precision("fp16")
    with pytest.raises(TypeError, match="precision"):
        gensar.set_precision(16)
    assert gensar.get_precision() == "fp32"
    if not HAS_BF16:
        with pytest.raises(ValueError, match="AVX512-BF16"):
            gensar.set_precision("bf16")
        assert gensar.get_precision() == "fp32"


@needs_bf16
def test_bf16_needs_the_avx512_path(bf16_mode):
    info = gensar.cpu_info()
    assert info["precision"] == "bf16" and info["sgemm_kernel"] == bf16_mode
    assert "bf16" in gensar.cpu.describe()
    with pytest.raises(ValueError, match="fp32 first"):
        gensar.set_isa("avx2")
    assert gensar.get_isa() == "avx512"
    gensar.set_precision("fp32")
    gensar.set_isa("avx2")
    with pytest.raises(ValueError, match="avx512 path first"):
        gensar.set_precision("bf16")
    gensar.set_isa("avx512")


def _child(env_extra, code="import gensar; print(gensar.get_precision())"):
    keep = {k: os.environ[k] for k in ("LD_PRELOAD", "ASAN_OPTIONS", "UBSAN_OPTIONS") if k in os.environ}
    return subprocess.run([sys.executable, "-c", code], env={"PATH": "", **keep, **env_extra},
                          capture_output=True, text=True, cwd=".")


def test_gensar_precision_environment_variable():
    out = _child({"GENSAR_PRECISION": "bf16"})
    assert out.returncode == 0, out.stderr
    if HAS_BF16:
        assert out.stdout.strip() == "bf16"
    else:  # warns and stays fp32, as GENSAR_ISA does for a path the CPU lacks
        assert out.stdout.strip() == "fp32" and "GENSAR_PRECISION" in out.stderr
    # bf16 with a forced path below avx512: a warning, fp32
    out = _child({"GENSAR_PRECISION": "bf16", "GENSAR_ISA": "scalar"})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "fp32" and "GENSAR_PRECISION" in out.stderr
    bad = _child({"GENSAR_PRECISION": "half"})
    assert bad.returncode != 0 and "GENSAR_PRECISION" in bad.stderr


# K: odd, one slab, exactly the one-slab limit, odd and above it (two slabs), three slabs
SHAPES = [(1, 1, 1), (13, 33, 7), (25, 70, 130), (12, 32, 384), (130, 67, 385), (37, 100, 900),
          (64, 1000, 40)]


@needs_bf16
@pytest.mark.parametrize("M,N,K", SHAPES)
@pytest.mark.parametrize("ta,tb", [(False, False), (False, True), (True, False), (True, True)])
def test_bf16_matmul_against_numpy(rng, bf16_mode, M, N, K, ta, tb):
    a = f32(rng, K, M) if ta else f32(rng, M, K)
    b = f32(rng, N, K) if tb else f32(rng, K, N)
    op_a, op_b = (a.T if ta else a), (b.T if tb else b)
    c0 = f32(rng, M, N)
    out = c0.copy()
    ops.matmul(a, b, trans_a=ta, trans_b=tb, alpha=0.5, beta=2.0, out=out)
    assert ops.gemm_kernel_name() == bf16_mode
    # 1) the inputs rounded as the kernel rounds them: only fp32 summation error
    ref = 0.5 * (bf16(op_a).astype(np.float64) @ bf16(op_b).astype(np.float64)) + 2.0 * c0
    np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-4 * np.sqrt(K))
    # 2) the unrounded inputs: the per-term rounding bound (2u + u^2) |a b|, summed
    exact = 0.5 * (op_a.astype(np.float64) @ op_b.astype(np.float64)) + 2.0 * c0
    bound = 0.5 * (2 * U + U * U) * (np.abs(op_a).astype(np.float64) @ np.abs(op_b).astype(np.float64))
    assert np.all(np.abs(out - exact) <= bound + 1e-4 * np.sqrt(K) + 1e-4 * np.abs(exact))
    # and bf16 is really in use: the error is that of bf16 (not of fp32) on these sizes
    if K >= 7:
        assert np.abs(out - exact).max() > 1e-3


@needs_bf16
def test_bf16_beta_zero_ignores_garbage_and_bias(rng, bf16_mode):
    x, w, b = f32(rng, 37, 45), f32(rng, 29, 45), f32(rng, 29)
    ref = bf16(x).astype(np.float64) @ bf16(w).T.astype(np.float64) + b  # bias stays fp32
    np.testing.assert_allclose(ops.linear(x, w, b), ref, rtol=1e-5, atol=1e-5)
    out = np.full((37, 29), np.nan, np.float32)
    ops.matmul(x, w, trans_b=True, out=out)
    np.testing.assert_allclose(out, ref - b, rtol=1e-5, atol=1e-5)


@needs_bf16
def test_bf16_linear_with_gelu(rng, bf16_mode):
    """The bf16 products apply a fused GELU after the product (not per tile): same
    values as the product followed by the activation."""
    x, w, b = f32(rng, 130, 384), f32(rng, 1536, 384), f32(rng, 1536)
    np.testing.assert_allclose(ops.linear(x, w, b, activation="gelu_erf"),
                               ops.activation("gelu_erf", ops.linear(x, w, b)), rtol=0, atol=1e-36)


@needs_bf16
def test_bf16_does_not_depend_on_threads(rng, bf16_mode, threads):
    a, b = f32(rng, 300, 200), f32(rng, 200, 170)
    gensar.set_num_threads(1)
    one = ops.matmul(a, b)
    gensar.set_num_threads(2)
    np.testing.assert_array_equal(ops.matmul(a, b), one)


def _train(steps, cfg, seed=1):
    """Losses of `steps` seeded training steps on a fixed task: reverse the first
    six of twelve random tokens."""
    rng = np.random.default_rng(0)
    m = gensar.Seq2Seq(cfg, seed=seed, lr=3e-3)
    losses = []
    for _ in range(steps):
        ids = rng.integers(2, cfg["vocab_size"], (32, 12)).astype(np.int32)
        labels = np.ascontiguousarray(ids[:, :6][:, ::-1])
        losses.append(m.train_step(dict(input_ids=ids, attention_mask=np.ones_like(ids), labels=labels)))
    return np.array(losses)


SMALL = dict(vocab_size=64, d_model=64, d_kv=16, d_ff=128, num_layers=2, num_decoder_layers=2,
             num_heads=4, dropout_rate=0.1)


@needs_bf16
def test_back_to_fp32_is_bit_identical(rng):
    a, b = f32(rng, 70, 130), f32(rng, 90, 130)
    before = ops.matmul(a, b, trans_b=True)
    losses = _train(3, SMALL)
    gensar.set_precision("bf16")
    try:
        in_bf16 = ops.matmul(a, b, trans_b=True)
        _train(3, SMALL)
    finally:
        gensar.set_precision("fp32")
    assert not np.array_equal(in_bf16, before)
    np.testing.assert_array_equal(ops.matmul(a, b, trans_b=True), before)
    np.testing.assert_array_equal(_train(3, SMALL), losses)


@needs_bf16
def test_packed_lm_head_stays_fp32(rng, bf16_mode):
    """The beam search's log-normaliser runs on the fp32 packed product in either
    precision, so it matches the fp32 logits of the candidate tokens."""
    A, W = f32(rng, 20, 64), f32(rng, 700, 64)
    in_bf16 = gensar._core.linear_log_sum_exp(A, W)
    gensar.set_precision("fp32")
    np.testing.assert_array_equal(gensar._core.linear_log_sum_exp(A, W), in_bf16)


@needs_bf16
def test_bf16_training_follows_fp32(bf16_mode, threads):
    """200 steps in each precision from the same seed: the bf16 loss curve stays
    within 2% of the fp32 one (20-step window means), and both learn."""
    gensar.set_num_threads(1)
    gensar.set_precision("fp32")
    fp32 = _train(200, SMALL)
    gensar.set_precision("bf16")
    bf = _train(200, SMALL)
    w32, wbf = fp32.reshape(10, 20).mean(1), bf.reshape(10, 20).mean(1)
    assert w32[-1] < 0.85 * w32[0] and wbf[-1] < 0.85 * wbf[0]
    np.testing.assert_allclose(wbf, w32, rtol=0.02)
    assert not np.array_equal(bf, fp32)  # the products really ran in bf16


def test_amx_switch():
    if HAS_BF16 and gensar._core.amx():
        gensar._core.set_amx(False)
        assert not gensar._core.amx()
        gensar._core.set_amx(True)
        assert gensar._core.amx()
    else:
        with pytest.raises(ValueError, match="AMX"):
            gensar._core.set_amx(True)
        gensar._core.set_amx(False)  # forbidding what is absent is allowed
