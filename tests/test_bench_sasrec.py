"""The PyTorch SASRec of benchmarks/bench_sasrec.py is the same model as gensar's C
SASRec: from the same weights, with dropout off, the same loss and gradients, on
every kernel path this CPU supports (skipped without torch)."""
import argparse

import numpy as np
import pytest

import gensar
from gensar import cpu
from gensar.embeddings import SASRec
from conftest import load_benchmark

SUPPORTED = cpu.ISAS[:cpu.ISAS.index(gensar._core.best_isa()) + 1]


def windows(n_items, n_users, T, rng):
    """Left-padded (inputs, targets) like SASRec._windows, from random sequences."""
    m = SASRec(max_len=T)
    seqs = [rng.integers(0, n_items, rng.integers(2, 2 * T)) for _ in range(n_users)]
    return m._windows(seqs)


@pytest.fixture
def isa(request):
    before = gensar.get_isa()
    gensar.set_isa(request.param)
    yield request.param
    gensar.set_isa(before)


@pytest.mark.parametrize("isa", SUPPORTED, indirect=True)
@pytest.mark.parametrize("layers,heads", [(2, 1), (2, 2)])
def test_torch_reference_matches_gensar(isa, layers, heads):
    torch = pytest.importorskip("torch")
    bench = load_benchmark("bench_sasrec")
    rng = np.random.default_rng(3)
    n_items, T = 60, 12
    X, Y = windows(n_items, 30, T, rng)
    a = argparse.Namespace(hidden=16, layers=layers, heads=heads, inner=24, max_len=T,
                           dropout=0.2, batch=len(X), lr=1e-3, weight_decay=0.0, clip=5.0,
                           seed=0, torch_attention="sdpa")
    m = SASRec(hidden=16, layers=layers, heads=heads, inner=24, max_len=T, seed=0)
    m._build(n_items)
    # larger weights than the N(0, 0.02) init, so every path carries signal
    m._params[:] = rng.normal(0.0, 0.3, m._params.size).astype(np.float32)
    m._params[:16] = 0.0  # padding row
    torch.manual_seed(0)
    model, _, _ = bench.torch_model(n_items, a)
    loss_g, loss_t, err, name = bench.compare_with_gensar(m, model, X, Y)
    assert np.isfinite(loss_g) and loss_g > 0
    assert abs(loss_g - loss_t) <= 1e-5 * loss_t
    assert err < 1e-4, f"gradient of {name} differs by {err:.2e} of its largest entry"
