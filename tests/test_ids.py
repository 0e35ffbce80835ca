"""Tests of csrc/quant (k-means, residual quantiser, Sinkhorn, collision
resolution, RQ-VAE forward/backward) and gensar.ids.DualIDs."""
import math

import numpy as np
import pytest

import gensar
from gensar import _core
from gensar.ids import DualIDs, auto_codebook_size, kmeans, make_synthetic_embeddings
from conftest import load_benchmark


# ----------------------------------------------------------------------------- k-means


def blobs(rng, n=3000, d=10, centers=25, spread=0.6):
    c = rng.normal(scale=4.0, size=(centers, d))
    return (c[rng.integers(0, centers, n)] + spread * rng.normal(size=(n, d))).astype(np.float32)


@pytest.mark.parametrize("case", ["blobs", "uniform"])
def test_kmeans_inertia_within_1pct_of_sklearn(rng, case):
    sk = pytest.importorskip("sklearn.cluster")
    x = blobs(rng) if case == "blobs" else rng.random((2500, 6)).astype(np.float32)
    k, n_init = 25, 10
    _, labels, inertia = kmeans(x, k, n_init=n_init, max_iter=300, seed=3)
    try:  # one BLAS/OpenMP thread: the machine may be shared
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover
        import contextlib
        threadpool_limits = lambda limits: contextlib.nullcontext()  # noqa: E731
    with threadpool_limits(1):
        ref = sk.KMeans(n_clusters=k, n_init=n_init, max_iter=300, random_state=0).fit(
            x.astype(np.float64))
    assert inertia <= ref.inertia_ * 1.01, (inertia, ref.inertia_)
    # the reported inertia is the true one for the returned labels
    C, _, _ = kmeans(x, k, n_init=n_init, max_iter=300, seed=3)
    true = ((x.astype(np.float64) - C[labels]) ** 2).sum()
    assert math.isclose(inertia, true, rel_tol=1e-5)


def test_kmeans_labels_are_nearest_and_deterministic(rng, threads):
    x = blobs(rng, n=777, d=5, centers=9)
    gensar.set_num_threads(1)
    C1, l1, i1 = kmeans(x, 9, n_init=2, seed=11)
    gensar.set_num_threads(2)
    C2, l2, i2 = kmeans(x, 9, n_init=2, seed=11)
    np.testing.assert_array_equal(C1, C2)
    np.testing.assert_array_equal(l1, l2)
    assert i1 == i2
    d = ((x[:, None, :].astype(np.float64) - C1[None].astype(np.float64)) ** 2).sum(-1)
    np.testing.assert_array_equal(l1, d.argmin(1))
    _, l3, _ = kmeans(x, 9, n_init=2, seed=12)  # another seed explores other inits
    assert l3.shape == l1.shape


def test_kmeans_repairs_empty_clusters(rng):
    # two centroids start far from every point: after the first assignment
    # they are empty and must be moved onto points
    x = blobs(rng, n=300, d=2, centers=5)
    init = np.concatenate([x[:3], np.full((2, 2), 1e3, np.float32)])
    C, labels, inertia = kmeans(x, 5, init=init, max_iter=1)
    assert np.abs(C).max() < 100
    assert np.bincount(labels, minlength=5).min() >= 1
    _, labels, _ = kmeans(x, 5, init=init)
    assert np.bincount(labels, minlength=5).min() >= 1


def test_kmeans_k_equals_n_gives_zero_inertia(rng):
    x = rng.normal(size=(17, 3)).astype(np.float32)
    _, labels, inertia = kmeans(x, 17, seed=1)
    assert sorted(labels.tolist()) == list(range(17))
    assert inertia == pytest.approx(0.0, abs=1e-6)


def test_nearest_centroid_matches_brute_force(rng):
    x = rng.normal(size=(1031, 13)).astype(np.float32)
    C = rng.normal(size=(37, 13)).astype(np.float32)
    labels, d2 = _core.nearest_centroid(x, C)
    d = ((x[:, None, :].astype(np.float64) - C[None]) ** 2).sum(-1)
    np.testing.assert_array_equal(labels, d.argmin(1))
    np.testing.assert_allclose(d2, d.min(1), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(
    "x, k, exc, msg",
    [
        (np.array([[0.0, np.nan], [1, 1]], np.float32), 1, ValueError, "NaN"),
        (np.array([[0.0, np.inf], [1, 1]], np.float32), 1, ValueError, "infinite"),
        (np.zeros((3, 2), np.float32), 4, ValueError, "at least 4 points"),
        (np.zeros((3, 2), np.int64), 2, TypeError, "floating"),
        (np.zeros(6, np.float32), 2, ValueError, "2-dimensional"),
        (np.zeros((3, 2), np.float32), 0, ValueError, "positive"),
    ],
)
def test_kmeans_bad_input(x, k, exc, msg):
    with pytest.raises(exc, match=msg):
        kmeans(x, k)


def test_core_kmeans_refuses_float64():
    with pytest.raises(TypeError, match="float32"):
        _core.kmeans(np.zeros((4, 2)), 2)


# ------------------------------------------------------------------- Sinkhorn


def reference_sinkhorn(dist, eps, iters):
    """The reference's exp-domain Sinkhorn on centred distances (float64)."""
    mx, mn = dist.max(), dist.min()
    mid = (mx + mn) / 2
    amp = mx - mid + 1e-5
    d = (dist - mid) / amp
    Q = np.exp(-d / eps)
    B, K = Q.shape
    Q /= Q.sum()
    for _ in range(iters):
        Q /= Q.sum(0, keepdims=True)
        Q /= K
        Q /= Q.sum(1, keepdims=True)
        Q /= B
    return Q * B


@pytest.mark.parametrize("m, F", [(1, 3), (5, 7), (17, 5)])
def test_sinkhorn_matches_reference_plan(rng, m, F):
    dist = rng.random((m, F))
    eps, iters = 0.1, 50  # moderate epsilon so the exp-domain reference does not overflow
    score = _core.sinkhorn_scores(dist, eps, iters)
    Q = reference_sinkhorn(dist, eps, iters)
    plan = np.exp(score - score.max(1, keepdims=True))
    plan /= plan.sum(1, keepdims=True)
    np.testing.assert_allclose(plan, Q / Q.sum(1, keepdims=True), rtol=1e-6, atol=1e-9)


def test_sinkhorn_balances_identical_preferences():
    # every row prefers code 0, but a square balanced plan spreads them out
    dist = np.tile(np.linspace(0, 1, 6), (6, 1)) + np.linspace(0, 1e-3, 6)[:, None]
    score = _core.sinkhorn_scores(dist, 0.003, 50)
    assert len(set(score.argmax(1).tolist())) > 1


# --------------------------------------------------------- collision resolution


def test_resolution_gives_duplicates_distinct_codes(rng):
    K, d = 8, 3
    C = rng.normal(size=(K, d)).astype(np.float32)
    r = np.repeat(rng.normal(size=(1, d)), 5, axis=0).astype(np.float32)  # 5 identical items
    ids = np.zeros((5, 2), np.int32)
    ids[:, 0] = 4
    ids[:, 1] = _core.nearest_centroid(r, C)[0]
    nearest = ids[0, 1]
    st = _core.resolve_collisions(ids, [6, K], r, C)
    assert len(set(ids[:, 1].tolist())) == 5
    assert (ids[:, 0] == 4).all()  # the prefix never changes
    assert ids[0, 1] == nearest  # the lowest index keeps the nearest code
    assert st["collided_before"] == 5 and st["moved"] == 4 and st["unresolved"] == 0


def test_resolution_keeps_nearest_and_fixed(rng):
    K, d = 6, 2
    C = np.eye(K, d, dtype=np.float32) * 3
    r = np.array([[3.1, 0], [2.0, 0], [0, 3.0], [0, 2.9]], np.float32)
    ids = np.array([[0, 0], [0, 0], [0, 1], [0, 1]], np.int32)
    fixed = np.array([False, False, False, True])
    _core.resolve_collisions(ids, [1, K], r, C, fixed)
    assert ids[0, 1] == 0  # nearer to code 0 than item 1
    assert ids[3, 1] == 1  # fixed rows keep their code even if farther
    assert len(set(ids[:, 1].tolist())) == 4


def test_resolution_reports_overflow(rng):
    K = 3
    C = rng.normal(size=(K, 2)).astype(np.float32)
    r = rng.normal(size=(5, 2)).astype(np.float32)
    ids = np.zeros((5, 2), np.int32)
    ids[:, 1] = _core.nearest_centroid(r, C)[0]
    st = _core.resolve_collisions(ids, [2, K], r, C)
    assert st["largest_group"] == 5 and st["unresolved"] == 2


def test_resolution_rejects_out_of_range_codes(rng):
    ids = np.array([[0, 9]], np.int32)
    with pytest.raises(ValueError, match="code 9"):
        _core.resolve_collisions(ids, [2, 3], np.zeros((1, 1), np.float32), np.zeros((3, 1), np.float32))


# --------------------------------------------------- RQ-VAE forward / backward


def levels_of(n_towers, h, shared, specific):
    """(k, column start, width, tower or -1) per level, in code order."""
    D = n_towers * h
    lv = [(k, 0, D, -1) for k in shared]
    for t in range(n_towers):
        lv += [(k, t * h, h, t) for k in specific]
    return lv


def mlp(P, prefix, x, n_layers):
    for i in range(n_layers):
        x = x @ P[f"{prefix}.{i}.weight"].T + P[f"{prefix}.{i}.bias"]
        if i < n_layers - 1:
            x = np.maximum(x, 0.0)
    return x


class Surrogate:
    """Float64 NumPy model whose exact gradient is the reference's
    straight-through gradient at the point it was built: the codes, the
    straight-through offset zq - z and every stop-gradient value are frozen at
    P0. Its value at P0 is the RQ-VAE loss."""

    def __init__(self, P0, xs, cfg, codes):
        self.xs, self.cfg, self.codes = xs, cfg, codes
        T, h, shared, specific, beta, nl = cfg
        self.lv = levels_of(T, h, shared, specific)
        z = self.latent(P0)
        r = z.copy()
        zq = np.zeros_like(z)
        self.r0, self.q0 = [], []
        for l, (k, c0, w, _) in enumerate(self.lv):
            q = P0[f"codebook.{l}"][codes[:, l]]
            self.r0.append(r[:, c0:c0 + w].copy())
            self.q0.append(q.copy())
            r[:, c0:c0 + w] -= q
            zq[:, c0:c0 + w] += q
        self.offset = zq - z
        self.live = [(l == 0) if shared else (l % len(specific) == 0) for l in range(len(self.lv))]

    def latent(self, P):
        T, h, _, _, _, nl = self.cfg
        return np.concatenate([mlp(P, f"encoder{t}", self.xs[t], nl) for t in range(T)], axis=1)

    def losses(self, P):
        T, h, _, _, beta, nl = self.cfg
        z = self.latent(P)
        zq = z + self.offset
        recon = [np.mean((mlp(P, f"decoder{t}", zq[:, t * h:(t + 1) * h], nl) - self.xs[t]) ** 2)
                 for t in range(T)]
        quant = 0.0
        for l, (k, c0, w, _) in enumerate(self.lv):
            q = P[f"codebook.{l}"][self.codes[:, l]]
            r = z[:, c0:c0 + w] if self.live[l] else self.r0[l]
            quant += np.mean((q - self.r0[l]) ** 2) + beta * np.mean((self.q0[l] - r) ** 2)
        quant /= len(self.lv)
        return sum(recon) + quant, recon, quant


def pad(xs):
    """Positional inputs of the rqvae_* bindings: x1 is None for one tower."""
    return list(xs) + [None] * (2 - len(xs))


RQVAE_CASES = [
    # in_dims, hidden, h, shared, specific, batch
    ((7, 5), (6, 3), 3, (4, 3), (3, 2), 17),
    ((7, 5), (6, 3), 3, (4, 3), (3, 2), 1),
    ((5, 4), (3,), 2, (), (3, 2, 2), 13),
    ((9,), (5,), 3, (4, 3, 2), (), 11),
    ((6, 3), (), 2, (3,), (2,), 7),
]


@pytest.mark.parametrize("case", RQVAE_CASES)
def test_rqvae_gradients_match_central_differences(rng, case):
    in_dims, hidden, h, shared, specific, B = case
    T, beta = len(in_dims), 0.25
    model = _core.rqvae_new(in_dims, hidden, h, shared, specific, beta, 17, 5)
    # biases start at 0: make them non-zero so that no pre-activation sits
    # exactly on the ReLU kink (rows whose hidden input is all zero)
    params = _core.rqvae_buffers(model)[0]
    params += rng.normal(scale=0.05, size=params.shape).astype(np.float32)
    init = [rng.normal(size=(17, d)).astype(np.float32) for d in in_dims]
    _core.rqvae_init_codebooks(model, *pad(init), 10, 1)
    for _ in range(3):  # move away from the initial point
        _core.rqvae_train_step(model, *pad(init), 1e-2, 1e-5)
    xs = [rng.normal(size=(B, d)).astype(np.float32) for d in in_dims]
    losses = _core.rqvae_forward_backward(model, *xs)
    params, grads, _, _ = _core.rqvae_buffers(model)
    layout = _core.rqvae_layout(model)
    codes, _ = _core.rqvae_reconstruct(model, *xs)
    P = {n: params[o:o + int(np.prod(s))].reshape(s).astype(np.float64) for n, o, s in layout}
    cfg = (T, h, shared, specific, beta, len(hidden) + 1)
    sur = Surrogate(P, [x.astype(np.float64) for x in xs], cfg, codes)
    total, recon, quant = sur.losses(P)
    assert losses[0] == pytest.approx(total, rel=1e-4, abs=1e-6)
    assert losses[1] == pytest.approx(recon[0], rel=1e-4, abs=1e-6)
    assert losses[3] == pytest.approx(quant, rel=1e-4, abs=1e-6)
    eps = 1e-5
    for name, off, shape in layout:
        g = grads[off:off + int(np.prod(shape))].reshape(shape)
        flat = P[name].reshape(-1)
        pick = rng.choice(flat.size, size=min(flat.size, 12), replace=False)
        for i in pick:
            old = flat[i]
            flat[i] = old + eps
            up = sur.losses(P)[0]
            flat[i] = old - eps
            down = sur.losses(P)[0]
            flat[i] = old
            num = (up - down) / (2 * eps)
            assert g.reshape(-1)[i] == pytest.approx(num, rel=2e-3, abs=2e-6), (name, i)


def test_rqvae_only_first_level_commitment_reaches_encoder(rng):
    """Straight-through as in the reference: with zero reconstruction weight on
    the encoder path blocked (beta = 0 and decoder-free check), changing beta
    changes encoder grads only through the first level."""
    in_dims, hidden, h = (6, 4), (5,), 3
    xs = [rng.normal(size=(9, d)).astype(np.float32) for d in in_dims]
    grads = []
    for beta in (0.0, 1.0):
        m = _core.rqvae_new(in_dims, hidden, h, (3,), (3,), beta, 9, 2)
        _core.rqvae_init_codebooks(m, *xs, 5, 0)
        _core.rqvae_forward_backward(m, *xs)
        p, g, _, _ = _core.rqvae_buffers(m)
        grads.append(g.copy())
        layout = _core.rqvae_layout(m)
    diff = grads[1] - grads[0]
    enc_last = [(o, s) for n, o, s in layout if n.startswith("encoder") and n.endswith(".1.weight")]
    assert all(np.abs(diff[o:o + np.prod(s)]).max() > 0 for o, s in enc_last)
    dec = [(o, s) for n, o, s in layout if n.startswith("decoder")]
    assert all(np.abs(diff[o:o + np.prod(s)]).max() == 0 for o, s in dec)


def test_rqvae_training_reduces_reconstruction_and_is_deterministic(rng, threads):
    """Reconstruction falls with training (the quantisation term of this
    formulation may rise while the encoder output grows, as in the reference)
    and a fixed seed gives bit-identical runs at 1 and 2 threads."""
    s, c = make_synthetic_embeddings(600, 24, 8, n_clusters=12, seed=3)
    runs = []
    for nt in (1, 2):
        gensar.set_num_threads(nt)
        m = _core.rqvae_new((24, 8), (16,), 4, (8,), (8,), 0.25, 200, 7)
        _core.rqvae_init_codebooks(m, s[:200], c[:200], 20, 0)
        hist = [_core.rqvae_train_step(m, s[i:i + 200], c[i:i + 200], 3e-3, 1e-5)
                for _ in range(30) for i in range(0, 600, 200)]
        runs.append((np.array(hist), _core.rqvae_buffers(m)[0].copy()))
    recon = runs[0][0][:, 1] + runs[0][0][:, 2]
    assert recon[-3:].mean() < 0.8 * recon[:3].mean()
    assert np.isfinite(runs[0][0]).all()
    np.testing.assert_array_equal(runs[0][0], runs[1][0])
    np.testing.assert_array_equal(runs[0][1], runs[1][1])


@pytest.mark.parametrize("case", [RQVAE_CASES[0], RQVAE_CASES[2]])
def test_rqvae_matches_pytorch_autograd_and_adamw(rng, case):
    """Independent reference: the reference's PyTorch formulation (in
    benchmarks/bench_ids.py) gives the same loss, codes, gradients and AdamW
    update from the same weights."""
    torch = pytest.importorskip("torch")
    in_dims, hidden, h, shared, specific, B = case
    model = _core.rqvae_new(in_dims, hidden, h, shared, specific, 0.25, 17, 3)
    params, grads, _, _ = _core.rqvae_buffers(model)
    params += rng.normal(scale=0.05, size=params.shape).astype(np.float32)
    init = [rng.normal(size=(17, d)).astype(np.float32) for d in in_dims]
    _core.rqvae_init_codebooks(model, *pad(init), 10, 1)
    layout = _core.rqvae_layout(model)
    tm = load_benchmark("bench_ids").torch_rqvae_class()(in_dims, hidden, h, shared, specific, 0.25)
    tm.load_gensar(params, layout)
    opt = torch.optim.AdamW(tm.parameters(), lr=1e-2, weight_decay=1e-5)
    for step in range(3):
        xs = [rng.normal(size=(B, d)).astype(np.float32) for d in in_dims]
        loss_c = _core.rqvae_forward_backward(model, *pad(xs))
        codes_c, _ = _core.rqvae_reconstruct(model, *pad(xs))
        loss_t, recon_t, quant_t, codes_t = tm([torch.from_numpy(x) for x in xs])
        opt.zero_grad()
        loss_t.backward()
        np.testing.assert_array_equal(codes_c, codes_t.numpy())
        assert loss_c[0] == pytest.approx(loss_t.item(), rel=1e-5)
        assert loss_c[3] == pytest.approx(quant_t.item(), rel=1e-5, abs=1e-7)
        np.testing.assert_allclose(grads, tm.gensar_grads(layout, grads.size), rtol=1e-4, atol=1e-6)
        _core.rqvae_train_step(model, *pad(xs), 1e-2, 1e-5)
        opt.step()
        # parameters after the update agree
        flat = np.concatenate([p.detach().numpy().ravel() for p in _torch_in_layout(tm, layout)])
        np.testing.assert_allclose(params, flat, rtol=1e-4, atol=1e-6)


def _torch_in_layout(tm, layout):
    import torch.nn as nn

    named = {}
    for kind, mods in (("encoder", tm.enc), ("decoder", tm.dec)):
        for t, seq in enumerate(mods):
            for i, m in enumerate([m for m in seq if isinstance(m, nn.Linear)]):
                named[f"{kind}{t}.{i}.weight"], named[f"{kind}{t}.{i}.bias"] = m.weight, m.bias
    books = [e.weight for e in tm.shared] + [e.weight for lv in tm.specific for e in lv]
    for l, w in enumerate(books):
        named[f"codebook.{l}"] = w
    return [named[name] for name, _, _ in sorted(layout, key=lambda r: r[1])]


def test_rqvae_rejects_bad_config_and_batch(rng):
    with pytest.raises(ValueError, match="n_towers|dims|entries"):
        _core.rqvae_new((3, 3, 3), (4,), 2, (2,), (2,), 0.25, 8, 0)
    m = _core.rqvae_new((3, 2), (4,), 2, (2,), (2,), 0.25, 8, 0)
    x0, x1 = rng.normal(size=(9, 3)).astype(np.float32), rng.normal(size=(9, 2)).astype(np.float32)
    with pytest.raises(ValueError, match="batch of 9 rows"):
        _core.rqvae_forward_backward(m, x0, x1)
    with pytest.raises(ValueError, match="2 columns"):
        _core.rqvae_forward_backward(m, x0[:4], x0[:4])
    with pytest.raises(ValueError, match="rows"):
        _core.rqvae_forward_backward(m, x0[:4], x1[:3])
    with pytest.raises(ValueError, match="codes but only"):
        _core.rqvae_init_codebooks(m, x0[:1], x1[:1], 5, 0)


# ------------------------------------------------------------------- DualIDs

SMALL = dict(shared_levels=(32, 32), specific_levels=(32, 64), hidden=(48, 24), latent_dim=8,
             epochs=3, batch_size=512, progress=False)


@pytest.fixture(scope="module")
def catalogue():
    return make_synthetic_embeddings(3000, 48, 16, n_clusters=40, duplicates=30, seed=5)


@pytest.fixture(scope="module")
def fitted(catalogue):
    return DualIDs(**SMALL, seed=1).fit(*catalogue)


def unique_rows(a):
    return np.unique(a, axis=0).shape[0] == a.shape[0]


@pytest.mark.parametrize("method", ["joint", "residual_kmeans", "single", "random"])
def test_zero_collisions_every_method(catalogue, method, fitted):
    ids = fitted if method == "joint" else DualIDs(**SMALL, method=method, seed=1).fit(*catalogue)
    s, c = ids.semantic_ids_, ids.collaborative_ids_
    assert s.shape == (3000, 4) and c.shape == (3000, 4) and s.dtype == np.int64
    assert unique_rows(s) and unique_rows(c)
    np.testing.assert_array_equal(s[:, :2], c[:, :2])  # shared prefix
    rep = ids.report()
    assert rep["collision_rate_after"] == {"semantic": 0.0, "collaborative": 0.0}
    assert rep["collision_rate_before"]["semantic"] > 0  # the 30 duplicates at least
    lv = rep["levels"]
    assert len(lv) == 8 and ((lv.utilisation > 0) & (lv.utilisation <= 1)).all()
    assert ((lv.perplexity >= 1) & (lv.perplexity <= lv.codebook_size + 1e-9)).all()
    if method != "random":
        assert rep["reconstruction"]["semantic"]["mse"] > 0


def test_duplicates_keep_prefix_and_differ_at_last_level(catalogue, fitted):
    sem, col = catalogue
    n = sem.shape[0]
    # the synthetic duplicates are the last 30 rows; find their originals
    for i in range(n - 30, n):
        j = int(np.flatnonzero((sem[:n - 30] == sem[i]).all(1))[0])
        a, b = fitted.semantic_ids_[i], fitted.semantic_ids_[j]
        assert (a[:3] == b[:3]).all() and a[3] != b[3]


def test_report_matches_recomputation(fitted):
    rep = fitted.report()
    s = fitted.semantic_ids_
    counts = np.bincount(s[:, 3], minlength=64)
    p = counts[counts > 0] / counts.sum()
    row = rep["levels"].query("id == 'semantic' and level == 3").iloc[0]
    assert row.perplexity == pytest.approx(np.exp(-(p * np.log(p)).sum()))
    assert row.utilisation == pytest.approx((counts > 0).mean())
    assert rep["n_items"] == 3000 and rep["id_length"] == {"semantic": 4, "collaborative": 4}
    assert len(fitted.history_) == 3 and set(fitted.history_[0]) >= {"loss", "quantisation"}


def test_fit_is_deterministic(catalogue, fitted):
    again = DualIDs(**SMALL, seed=1).fit(*catalogue)
    np.testing.assert_array_equal(again.semantic_ids_, fitted.semantic_ids_)
    np.testing.assert_array_equal(again.collaborative_ids_, fitted.collaborative_ids_)
    np.testing.assert_array_equal(again._params, fitted._params)


def test_transform_new_items_unique_against_catalogue(catalogue, fitted):
    sem, col = catalogue
    new_s, new_c = make_synthetic_embeddings(200, 48, 16, n_clusters=40, seed=99)
    new_s[:5], new_c[:5] = sem[:5], col[:5]  # cold-start copies of catalogue items
    s, c = fitted.transform(new_s, new_c)
    assert s.shape == (200, 4) and c.shape == (200, 4)
    assert unique_rows(np.concatenate([fitted.semantic_ids_, s]))
    assert unique_rows(np.concatenate([fitted.collaborative_ids_, c]))
    # without resolution the nearest codes of catalogue items are their raw codes
    s_raw, _ = fitted.transform(sem[:50], col[:50], resolve=False)
    np.testing.assert_array_equal(s_raw, fitted._raw_codes[:50, [0, 1, 2, 3]])


def test_save_load_roundtrip(tmp_path, catalogue, fitted):
    path = tmp_path / "ids.npz"
    fitted.save(path)
    loaded = DualIDs.load(path)
    np.testing.assert_array_equal(loaded.semantic_ids_, fitted.semantic_ids_)
    np.testing.assert_array_equal(loaded._params, fitted._params)
    new_s, new_c = make_synthetic_embeddings(50, 48, 16, n_clusters=40, seed=7)
    for a, b in zip(loaded.transform(new_s, new_c), fitted.transform(new_s, new_c)):
        np.testing.assert_array_equal(a, b)
    assert loaded.report()["collision_rate_after"] == fitted.report()["collision_rate_after"]


@pytest.mark.parametrize("method", ["residual_kmeans", "random", "single"])
def test_save_load_other_methods(tmp_path, catalogue, method):
    ids = DualIDs(**SMALL, method=method, seed=2).fit(*catalogue)
    ids.save(tmp_path / "x.npz")
    loaded = DualIDs.load(tmp_path / "x.npz")
    new = make_synthetic_embeddings(20, 48, 16, seed=8)
    for a, b in zip(loaded.transform(*new), ids.transform(*new)):
        np.testing.assert_array_equal(a, b)


def overflow_catalogue():
    """40 exact copies of one item among 100."""
    sem = np.repeat(np.random.default_rng(0).normal(size=(1, 6)), 40, 0).astype(np.float32)
    sem = np.concatenate([sem, np.random.default_rng(1).normal(size=(60, 6)).astype(np.float32)])
    col = np.random.default_rng(2).normal(size=(100, 3)).astype(np.float32)
    col[:40] = col[0]
    return sem, col


def test_second_to_last_level_spill_resolves_large_groups():
    # 40 copies exceed the 8 last-level codes of their prefix: the excess moves
    # to other codes of the second-to-last level (capacity 8 x 8 = 64)
    sem, col = overflow_catalogue()
    ids = DualIDs(shared_levels=(8,), specific_levels=(8, 8), method="residual_kmeans",
                  progress=False).fit(sem, col)
    rep = ids.report()
    assert ids.semantic_ids_.shape == (100, 3) and unique_rows(ids.semantic_ids_)
    assert unique_rows(ids.collaborative_ids_)
    assert rep["spilled"]["semantic"] >= 40 - 8 and rep["collision_rate_after"]["semantic"] == 0
    copies = ids.semantic_ids_[:40]
    assert (copies[:, 0] == copies[0, 0]).all()  # the shared prefix is never changed


def test_overflow_extra_level_or_error():
    # 40 copies cannot fit in 2 x 8 codes under one shared prefix
    sem, col = overflow_catalogue()
    kw = dict(shared_levels=(8,), specific_levels=(2, 8), method="residual_kmeans", progress=False)
    with pytest.raises(ValueError, match="larger than the last codebook"):
        DualIDs(**kw).fit(sem, col)
    ids = DualIDs(**kw, overflow="extra_level").fit(sem, col)
    assert ids.semantic_ids_.shape[1] == 4 and unique_rows(ids.semantic_ids_)
    assert unique_rows(ids.collaborative_ids_)
    assert ids.report()["levels"].part.eq("disambiguation").any()
    s, c = ids.transform(sem[:3], col[:3])
    assert unique_rows(np.concatenate([ids.semantic_ids_, s]))
    assert unique_rows(np.concatenate([ids.collaborative_ids_, c]))


def test_tiny_catalogue_adapts_codebooks_with_warning(rng):
    sem, col = make_synthetic_embeddings(100, 12, 4, n_clusters=5, seed=1)
    with pytest.warns(UserWarning, match="shrinking"):
        ids = DualIDs(shared_levels=(256,), specific_levels=(256,), hidden=(8,), latent_dim=3,
                      epochs=1, progress=False).fit(sem, col)
    assert ids.shared_levels_ == (100,) and unique_rows(ids.semantic_ids_)
    with pytest.raises(ValueError, match="fewer than the codes"):
        DualIDs(shared_levels=(256,), specific_levels=(256,), adapt_codebooks=False,
                progress=False).fit(sem, col)


@pytest.mark.parametrize(
    "sem, col, exc, msg",
    [
        ("nan", None, ValueError, "NaN or infinite"),
        ("inf", None, ValueError, "NaN or infinite"),
        (None, "rows", ValueError, "rows"),
        ("int", None, TypeError, "floating"),
        ("str", None, TypeError, "floating"),
        ("1d", None, ValueError, "2-dimensional"),
        ("3d", None, ValueError, "2-dimensional"),
        ("empty", None, ValueError, "empty"),
        (None, "none", TypeError, "required"),
    ],
)
def test_fit_bad_input(sem, col, exc, msg):
    s, c = make_synthetic_embeddings(64, 6, 3, n_clusters=4, seed=0)
    if sem == "nan":
        s[5, 2] = np.nan
    elif sem == "inf":
        s[7, 0] = np.inf
    elif sem == "int":
        s = (s * 10).astype(np.int32)
    elif sem == "str":
        s = s.astype(str)
    elif sem == "1d":
        s = s[:, 0]
    elif sem == "3d":
        s = s[:, :, None]
    elif sem == "empty":
        s = s[:0]
    if col == "rows":
        c = c[:-1]
    elif col == "none":
        c = None
    with pytest.raises(exc, match=msg):
        DualIDs(shared_levels=(4,), specific_levels=(4,), hidden=(4,), latent_dim=2, epochs=1,
                progress=False).fit(s, c)


def test_float64_input_is_accepted():
    s, c = make_synthetic_embeddings(64, 6, 3, n_clusters=4, seed=0)
    ids = DualIDs(shared_levels=(4,), specific_levels=(8, 8), hidden=(4,), latent_dim=2, epochs=1,
                  progress=False).fit(s.astype(np.float64), c.astype(np.float64))
    assert unique_rows(ids.semantic_ids_)


def test_transform_and_report_need_fit_and_matching_widths(fitted):
    with pytest.raises(RuntimeError, match="not fitted"):
        DualIDs().report()
    s, c = make_synthetic_embeddings(5, 47, 16, seed=0)
    with pytest.raises(ValueError, match="48 columns"):
        fitted.transform(s, c)


def test_bad_parameters():
    s, c = make_synthetic_embeddings(64, 6, 3, seed=0)
    with pytest.raises(ValueError, match="method"):
        DualIDs(method="vq").fit(s, c)
    with pytest.raises(ValueError, match="overflow"):
        DualIDs(overflow="ignore").fit(s, c)
    with pytest.raises(ValueError, match="positive"):
        DualIDs(shared_levels=(0,)).fit(s, c)
    with pytest.raises(ValueError, match="cannot get unique IDs"):
        DualIDs(shared_levels=(2,), specific_levels=(2,), progress=False).fit(s, c)


# -------------------------------------------------------------------- slow


@pytest.mark.slow
def test_zero_collisions_100k_reference_sizes():
    sem, col = make_synthetic_embeddings(100_000, 768, 64, n_clusters=200, duplicates=100, seed=0)
    # explicit reference sizes: the default sizes now follow the catalogue
    ids = DualIDs(shared_levels=(256, 256), specific_levels=(256, 256), epochs=2,
                  progress=False).fit(sem, col)
    rep = ids.report()
    assert rep["collision_rate_after"] == {"semantic": 0.0, "collaborative": 0.0}
    assert unique_rows(ids.semantic_ids_) and unique_rows(ids.collaborative_ids_)


# ------------------------------------------- codebook sizes, restarts, schedule


def hierarchical_clusters(n, k, seed, dims=(24, 12)):
    """A clustered catalogue where k codes per level is the right answer:
    every item draws 4 cluster labels a, b, c, e in [0, k); its semantic
    embedding is a sum of Gaussian centres for (a, b, c) at scales 4, 1.5, 0.5,
    its collaborative embedding one for (a, b, e) (the two agree on the coarse
    structure, like text and co-clicks), plus tiny noise. The shared levels
    then have a and b to find, each specific level c or e."""
    rng = np.random.default_rng(seed)
    a, b, c, e = rng.integers(0, k, (4, n))
    out = []
    for d, last in zip(dims, (c, e)):
        A, B, C = (rng.normal(size=(k, d)) * s for s in (4.0, 1.5, 0.5))
        out.append((A[a] + B[b] + C[last] + 0.05 * rng.normal(size=(n, d))).astype(np.float32))
    return out


SMALL_NET = dict(hidden=(32,), latent_dim=6, batch_size=256, progress=False)


@pytest.mark.parametrize("n, levels, fixed", [(1349, 4, ()), (60_000, 4, ()), (100, 4, ()),
                                              (5, 4, ()), (10 ** 12, 4, ()), (1349, 2, (16, 16)),
                                              (4096, 4, ()), (4097, 4, ())])
def test_auto_codebook_size_rule(n, levels, fixed):
    k = auto_codebook_size(n, levels, fixed)
    assert 4 <= k <= 256 and k & (k - 1) == 0  # a power of two within floor and cap
    need = 16 * n / math.prod(fixed)
    if 4 < k < 256:  # the smallest power of two leaving 16x headroom
        assert k ** levels >= need and (k // 2) ** levels < need
    elif k == 4:
        assert 4 ** levels >= need or levels == 0
    else:
        assert 128 ** levels < need


def test_auto_codebook_size_examples_and_bad_input():
    assert auto_codebook_size(1349, 4) == 16  # ml-100k: 16 codes (65,536 IDs for 1,349 items)
    assert auto_codebook_size(200, 4) == 8
    assert auto_codebook_size(60_000, 4) == 32
    assert auto_codebook_size(10 ** 6, 2) == 256  # the cap
    with pytest.raises(ValueError, match="n_items"):
        auto_codebook_size(0, 4)
    with pytest.raises(ValueError, match="n_levels"):
        auto_codebook_size(10, True)


def test_default_sizes_follow_the_catalogue():
    s, c = make_synthetic_embeddings(700, 16, 6, n_clusters=10, seed=0)
    ids = DualIDs(**SMALL_NET, steps=5).fit(s, c)
    k = auto_codebook_size(700, 4)
    assert ids.shared_levels_ == (k, k) and ids.specific_levels_ == (k, k)
    # explicit and auto entries mix: auto levels share the remaining budget
    ids = DualIDs(**SMALL_NET, steps=5, shared_levels=(64, "auto"),
                  specific_levels=["auto", "auto"]).fit(s, c)
    k = auto_codebook_size(700, 3, (64,))
    assert ids.shared_levels_ == (64, k) and ids.specific_levels_ == (k, k)
    # a catalogue smaller than the floor: auto sizes shrink silently (no warning)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tiny = DualIDs(**SMALL_NET, steps=2).fit(s[:3], c[:3])
    assert max(tiny.shared_levels_ + tiny.specific_levels_) <= 3
    assert unique_rows(tiny.semantic_ids_)


@pytest.mark.parametrize("method", ["joint", "residual_kmeans"])
def test_codes_used_on_clustered_fixture(method):
    """8 clusters per level, 8 codes per level: >= 90% of the codes of every level
    are used by the nearest codes (before collision resolution). (8 ** 3 cluster
    paths for 500 noisy items leave some IDs to the disambiguation token.)"""
    s, c = hierarchical_clusters(500, 8, seed=0)
    ids = DualIDs(**SMALL_NET, method=method, steps=150, shared_levels=(8, 8),
                  specific_levels=(8, 8), overflow="extra_level").fit(s, c)
    rep = ids.report()
    lv = rep["levels"].query("part != 'disambiguation'")
    assert len(lv) == 8
    assert (lv.codes_used_raw / lv.codebook_size >= 0.9).all(), lv
    assert (lv.utilisation >= 0.9).all()
    assert rep["collision_rate_after"] == {"semantic": 0.0, "collaborative": 0.0}
    assert unique_rows(ids.semantic_ids_) and unique_rows(ids.collaborative_ids_)


@pytest.mark.parametrize("method", ["joint", "residual_kmeans", "single"])
def test_default_sizes_give_zero_collisions_and_use_codes(method):
    """Default ("auto") sizes on a clustered catalogue with exact duplicates: every
    item gets a unique ID of 4 tokens, and >= 90% of every level's codes are used."""
    s, c = make_synthetic_embeddings(1349, 32, 12, n_clusters=40, duplicates=20, seed=3)
    ids = DualIDs(**SMALL_NET, method=method, steps=150).fit(s, c)
    rep = ids.report()
    assert ids.semantic_ids_.shape == (1349, 4) and ids.collaborative_ids_.shape == (1349, 4)
    assert unique_rows(ids.semantic_ids_) and unique_rows(ids.collaborative_ids_)
    assert rep["collision_rate_after"] == {"semantic": 0.0, "collaborative": 0.0}
    assert rep["collisions"]["semantic"]["before"] >= 20  # the duplicates at least
    assert (rep["levels"].utilisation >= 0.9).all()


def test_dead_code_restarts_fire_and_keep_codes_used():
    """64 codes per level on 1,200 items: without restarts a fifth of the first
    level's codes end unused; with them, codes are restarted and >= 90% are used."""
    s, c = hierarchical_clusters(1200, 8, seed=0)
    kw = dict(SMALL_NET, steps=150, shared_levels=(64, 64), specific_levels=(64, 64))
    off = DualIDs(**kw, restart_dead_codes=False).fit(s, c).report()
    on_ids = DualIDs(**kw).fit(s, c)
    on = on_ids.report()
    assert off["training"]["restarts"] == [0] * 6
    assert sum(on["training"]["restarts"]) > 0 and on["training"]["restarts"][0] > 0
    assert sum(h["restarted"][0] for h in on_ids.history_) == on["training"]["restarts"][0]
    raw = lambda rep: (rep["levels"].codes_used_raw / rep["levels"].codebook_size)  # noqa: E731
    assert raw(off).min() < 0.85
    assert raw(on).min() >= 0.9
    assert on["collision_rate_after"] == {"semantic": 0.0, "collaborative": 0.0}


def test_restart_moves_dead_codes_onto_batch_residuals(rng):
    """C level: codes pushed far away are dead after one batch; a restart puts
    each onto the residual (entering its level) of a distinct row of that batch,
    with zeroed AdamW moments, and resets the usage counters."""
    in_dims, h = (10, 6), 3
    x = [rng.normal(size=(40, d)).astype(np.float32) for d in in_dims]
    m = _core.rqvae_new(in_dims, (8,), h, (6,), (5,), 0.25, 40, 0)
    _core.rqvae_init_codebooks(m, *x, 10, 0)
    params, _, am, av = _core.rqvae_buffers(m)
    layout = {n: (o, s) for n, o, s in _core.rqvae_layout(m)}
    o0, (k0, w0) = layout["codebook.0"]
    book0 = params[o0:o0 + k0 * w0].reshape(k0, w0)
    book0[[1, 4]] = 1e3  # two dead codes at level 0
    am[o0:o0 + k0 * w0] = 1.0
    av[o0:o0 + k0 * w0] = 1.0
    with pytest.raises(ValueError, match="training step first"):
        _core.rqvae_restart_dead_codes(m, 0)
    _core.rqvae_forward_backward(m, *x)
    usage = _core.rqvae_code_usage(m)
    assert usage.shape == (6 + 5 + 5,) and usage[:6].sum() == 40 and usage[1] == usage[4] == 0
    z = _core.rqvae_latent(m, *x)
    cb = params[layout["codebook.0"][0]:].copy()
    _, _, (r0,) = _core.rq_encode(z, cb, (h, h), (6,), (5,), levels=[0])
    restarted = _core.rqvae_restart_dead_codes(m, 7)
    assert restarted[0] == 2
    for c in (1, 4):
        assert np.abs(r0 - book0[c]).max(1).min() == 0  # exactly some row's residual
    assert not np.array_equal(book0[1], book0[4])  # distinct rows
    np.testing.assert_array_equal(am[o0 + w0:o0 + 2 * w0], 0)
    assert am[o0] == 1.0  # live codes keep their moments
    assert _core.rqvae_code_usage(m).sum() == 0


def test_schedule_warmup_then_linear_decay():
    ids = DualIDs(lr=2e-3, warmup=0.1, steps=200)
    lrs = np.array([ids._lr_at(t, 200) for t in range(200)])
    assert lrs.min() > 0 and lrs.max() == pytest.approx(2e-3)
    assert int(lrs.argmax()) == 19  # the end of 20 warm-up steps
    np.testing.assert_allclose(np.diff(lrs[:20]), 2e-3 / 20)  # linear rise
    np.testing.assert_allclose(np.diff(lrs[20:]), -2e-3 / 181)  # linear fall towards 0
    assert lrs[-1] < 0.01 * lrs.max()
    cos = np.array([DualIDs(schedule="cosine", steps=200)._lr_at(t, 200) for t in range(200)])
    assert (np.diff(cos[20:]) < 0).all() and cos[-1] < 1e-3 * 1e-3
    const = [DualIDs(schedule="constant", warmup=0.0)._lr_at(t, 200) for t in range(200)]
    assert const == [1e-3] * 200


def test_fit_follows_schedule_and_step_budget():
    s, c = make_synthetic_embeddings(700, 16, 6, n_clusters=10, seed=0)
    ids = DualIDs(**SMALL_NET, steps=37).fit(s, c)
    assert ids.loss_curve_.shape == (37, 5) and _core.rqvae_step_count(ids._model) == 37
    np.testing.assert_allclose(ids.loss_curve_[:, 0], [ids._lr_at(t, 37) for t in range(37)],
                               rtol=1e-12)
    assert ids.history_[-1]["step"] == 37 and len(ids.history_) == 13  # 3 batches per epoch
    # epochs override the step budget: 2 epochs of 3 batches
    ids = DualIDs(**SMALL_NET, epochs=2).fit(s, c)
    assert ids.loss_curve_.shape[0] == 6 and len(ids.history_) == 2


def test_report_shows_codes_collisions_and_convergence():
    s, c = make_synthetic_embeddings(700, 16, 6, n_clusters=10, seed=0)
    ids = DualIDs(**SMALL_NET, steps=120).fit(s, c)
    rep = ids.report()
    lv = rep["levels"]
    assert {"codebook_size", "codes_used", "codes_used_raw", "utilisation", "utilisation_pct",
            "perplexity"} <= set(lv.columns)
    for t, kind in enumerate(("semantic", "collaborative")):
        i = (ids.semantic_ids_, ids.collaborative_ids_)[t]
        got = lv[lv.id == kind]
        assert got.codes_used.tolist() == [np.unique(i[:, j]).size for j in range(i.shape[1])]
        assert rep["collisions"][kind]["after"] == 0
        n_coll = rep["collisions"][kind]["before"]
        assert n_coll == round(rep["collision_rate_before"][kind] * 700)
    tr = rep["training"]
    curve = ids.loss_curve_
    recon = curve[:, 2] + curve[:, 3]
    assert tr["steps"] == 120 and tr["final_loss"] == pytest.approx(curve[-12:, 1].mean())
    assert tr["final_reconstruction"] == pytest.approx(recon[-12:].mean())
    assert tr["final_quantisation"] == pytest.approx(curve[-12:, 4].mean())
    assert tr["change"] == pytest.approx((recon[-24:-12].mean() - recon[-12:].mean())
                                         / recon[-12:].mean())
    assert tr["converged"] == (tr["change"] < 0.01)
    text = rep["summary"]
    assert "converged" in text and "perplexity" in text and "colliding items" in text
    assert DualIDs(method="residual_kmeans", progress=False).fit(s, c).report()["training"] is None


# ------------------------------------------------------- misuse (issue 15)


@pytest.mark.parametrize("method", ["joint", "residual_kmeans"])
def test_huge_finite_values_do_not_crash(method):
    """x = normal * 1e20 used to segfault in k-means. With scale_inputs (default)
    the data are rescaled in float64 and fit works; without, a clear ValueError."""
    x = (np.random.default_rng(0).normal(size=(300, 8)) * 1e20).astype(np.float32)
    kw = dict(SMALL_NET, method=method, steps=20)
    ids = DualIDs(**kw).fit(x, x)
    assert unique_rows(ids.semantic_ids_) and unique_rows(ids.collaborative_ids_)
    with pytest.raises(ValueError, match="semantic_emb.*standardise"):
        DualIDs(**kw, scale_inputs=False).fit(x, x)


def test_kmeans_refuses_overflowing_data_and_always_labels():
    x = (np.random.default_rng(0).normal(size=(50, 8)) * 1e20).astype(np.float32)
    with pytest.raises(ValueError, match="x has rows with squared L2 norm.*standardise"):
        kmeans(x, 3)
    with pytest.raises(ValueError, match="squared norm.*standardise"):
        _core.kmeans(x, 3)  # the C core checks too
    with pytest.raises(ValueError, match="beyond float32 range"):
        kmeans(x.astype(np.float64) * 1e20, 3)
    # just inside the limit: every label is a real cluster index
    y = (x / 1e20 * 1e17).astype(np.float32)
    C, labels, inertia = kmeans(y, 3, n_init=3)
    assert labels.min() >= 0 and labels.max() < 3 and np.isfinite(inertia) and np.isfinite(C).all()


@pytest.mark.parametrize("kw, exc, msg", [
    (dict(k=True), TypeError, "k must be an integer"),
    (dict(k=2.0), TypeError, "k must be an integer"),
    (dict(k=2, n_init=True), TypeError, "n_init"),
    (dict(k=2, max_iter=False), TypeError, "max_iter"),
    (dict(k=2, tol=float("nan")), ValueError, "tol"),
    (dict(k=2, seed=-1), ValueError, "seed"),
])
def test_kmeans_rejects_bools_and_bad_numbers(kw, exc, msg):
    x = np.random.default_rng(0).normal(size=(10, 2)).astype(np.float32)
    with pytest.raises(exc, match=msg):
        kmeans(x, **kw)


def test_core_rejects_bool_sizes():
    x = np.zeros((4, 2), np.float32)
    with pytest.raises(TypeError, match="k must be an integer"):
        _core.kmeans(x, True)
    with pytest.raises(TypeError, match="shared_levels"):
        _core.rq_fit_kmeans(x, (1, 1), (True,), (2,))


@pytest.mark.parametrize("kw, exc, msg", [
    (dict(lr=-1), ValueError, "lr must be a finite number > 0"),
    (dict(lr=0.0), ValueError, "lr must"),
    (dict(lr=float("inf")), ValueError, "lr must"),
    (dict(weight_decay=-1e-3), ValueError, "weight_decay"),
    (dict(beta=float("nan")), ValueError, "beta"),
    (dict(warmup=1.5), ValueError, "warmup"),
    (dict(schedule="step"), ValueError, "schedule"),
    (dict(steps=-3), ValueError, "steps"),
    (dict(steps=True), TypeError, "steps"),
    (dict(epochs=2.5), TypeError, "epochs"),
    (dict(batch_size=0), ValueError, "batch_size"),
    (dict(shared_levels=(True, 4)), TypeError, "shared_levels"),
    (dict(specific_levels=("big",)), TypeError, "specific_levels"),
    (dict(hidden=(8, 0)), ValueError, "hidden"),
    (dict(sinkhorn_epsilon=0), ValueError, "sinkhorn_epsilon"),
    (dict(restart_window=0), ValueError, "restart_window"),
    (dict(progress="yes"), TypeError, "progress"),
])
def test_bad_parameters_name_the_argument(kw, exc, msg):
    s, c = make_synthetic_embeddings(64, 6, 3, seed=0)
    with pytest.raises(exc, match=msg):
        DualIDs(**{**SMALL_NET, **kw}).fit(s, c)


def test_core_train_step_refuses_bad_learning_rate(rng):
    m = _core.rqvae_new((3, 2), (4,), 2, (2,), (2,), 0.25, 8, 0)
    x0, x1 = rng.normal(size=(8, 3)).astype(np.float32), rng.normal(size=(8, 2)).astype(np.float32)
    _core.rqvae_init_codebooks(m, x0, x1, 5, 0)
    with pytest.raises(ValueError, match="lr must be a finite number >= 0"):
        _core.rqvae_train_step(m, x0, x1, -1.0, 1e-5)
    with pytest.raises(ValueError, match="weight_decay must be a finite number >= 0"):
        _core.rqvae_train_step(m, x0, x1, 1e-3, float("nan"))
