"""Layer kernels of csrc/nn/layers.c against independent NumPy references
(float64), on odd shapes."""
import math

import numpy as np
import pytest

from gensar import _core

rng = np.random.default_rng(0)


def f32(*shape, scale=1.0):
    return (rng.standard_normal(shape) * scale).astype(np.float32)


# ------------------------------------------------------------------ embedding
def test_embedding_forward_backward():
    V, C, N = 7, 17, 11
    table = f32(V, C)
    ids = rng.integers(0, V, N).astype(np.int32)
    ids[:3] = 2  # repeated ids accumulate
    np.testing.assert_array_equal(_core.embedding(ids, table), table[ids])
    dout = f32(N, C)
    ref = np.zeros((V, C))
    np.add.at(ref, ids, dout.astype(np.float64))
    np.testing.assert_allclose(_core.embedding_backward(ids, dout, V), ref, rtol=1e-5, atol=1e-5)


def test_embedding_bad_input():
    table = f32(5, 3)
    with pytest.raises(ValueError, match="not a valid token id"):
        _core.embedding(np.array([0, 5], np.int32), table)
    with pytest.raises(ValueError, match="not a valid token id"):
        _core.embedding(np.array([-1], np.int32), table)
    with pytest.raises(TypeError, match="int32"):
        _core.embedding(np.array([0, 1], np.int64), table)
    with pytest.raises(ValueError, match="empty"):
        _core.embedding(np.zeros(0, np.int32), table)


# ------------------------------------------------------------------ attention
def attention_ref(q, k, v, H, scale, causal, key_mask, bias, drop=None):
    """float64 reference; drop (B,H,Tq,Tk) multiplies the probabilities."""
    B, Tq, D = q.shape
    Tk = k.shape[1]
    dh = D // H
    q4 = q.reshape(B, Tq, H, dh).transpose(0, 2, 1, 3).astype(np.float64)
    k4 = k.reshape(B, Tk, H, dh).transpose(0, 2, 1, 3).astype(np.float64)
    v4 = v.reshape(B, Tk, H, dh).transpose(0, 2, 1, 3).astype(np.float64)
    s = scale * q4 @ k4.transpose(0, 1, 3, 2)
    if bias is not None:
        s = s + bias[None].astype(np.float64)
    allowed = np.ones((B, 1, Tq, Tk), bool)
    if key_mask is not None:
        allowed &= key_mask[:, None, None, :].astype(bool)
    if causal:
        allowed &= (np.arange(Tk)[None, :] <= np.arange(Tq)[:, None] + (Tk - Tq))[None, None]
    s = np.where(allowed, s, -np.inf)
    mx = s.max(-1, keepdims=True)
    mx = np.where(np.isfinite(mx), mx, 0.0)
    e = np.where(allowed, np.exp(s - mx), 0.0)
    den = e.sum(-1, keepdims=True)
    p = np.where(den > 0, e / np.where(den > 0, den, 1.0), 0.0)
    pd = p if drop is None else p * drop
    out = (pd @ v4).transpose(0, 2, 1, 3).reshape(B, Tq, D)
    return out, p


CASES = [
    # B, H, Tq, Tk, dh, causal, use_mask, use_bias, scale
    (1, 1, 1, 1, 1, False, False, False, 1.0),
    (3, 2, 5, 7, 3, False, True, True, 1.0),
    (2, 3, 4, 4, 5, True, False, True, 1.0),
    (2, 2, 3, 6, 4, True, True, False, 0.5),  # causal with Tk > Tq (cached decoding offset)
    (1, 2, 17, 17, 8, True, True, True, 0.35),
    # heads of 16k columns: multiplied in place, not through padded scratch (layers.c mm_head)
    (2, 2, 5, 19, 16, True, True, True, 1.0),
    (2, 3, 4, 6, 32, False, True, False, 0.7),
]


@pytest.mark.parametrize("B,H,Tq,Tk,dh,causal,use_mask,use_bias,scale", CASES)
def test_attention_forward(B, H, Tq, Tk, dh, causal, use_mask, use_bias, scale):
    q, k, v = f32(B, Tq, H * dh), f32(B, Tk, H * dh), f32(B, Tk, H * dh)
    mask = None
    if use_mask:
        mask = (rng.random((B, Tk)) > 0.3).astype(np.int32)
        mask[:, -1] = 1
        mask[0, :] = 0 if B > 1 and not causal else mask[0, :]  # a fully padded row -> zeros
    bias = f32(H, Tq, Tk) if use_bias else None
    out, probs = _core.attention(q, k, v, H, scale=scale, causal=causal, key_mask=mask, pos_bias=bias)
    ref_out, ref_p = attention_ref(q, k, v, H, scale, causal, mask, bias)
    np.testing.assert_allclose(out, ref_out, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(probs, ref_p, rtol=1e-4, atol=1e-6)


def numeric_grad(f, x, eps=1e-6):
    """Central differences of a float64 scalar function f of a float64 array x."""
    g = np.zeros_like(x)
    it = np.nditer(x, flags=["multi_index"])
    for _ in it:
        i = it.multi_index
        old = x[i]
        x[i] = old + eps
        fp = f(x)
        x[i] = old - eps
        fm = f(x)
        x[i] = old
        g[i] = (fp - fm) / (2 * eps)
    return g


@pytest.mark.parametrize("B,H,Tq,Tk,dh,causal,use_mask,use_bias,scale", CASES)
@pytest.mark.parametrize("dropout_p", [0.0, 0.3])
def test_attention_backward(B, H, Tq, Tk, dh, causal, use_mask, use_bias, scale, dropout_p):
    q, k, v = f32(B, Tq, H * dh), f32(B, Tk, H * dh), f32(B, Tk, H * dh)
    mask = None
    if use_mask:
        mask = (rng.random((B, Tk)) > 0.3).astype(np.int32)
        mask[:, -1] = 1
    bias = f32(H, Tq, Tk) if use_bias else None
    seed, stream = 1234, 7
    opts = dict(scale=scale, causal=causal, key_mask=mask, pos_bias=bias, dropout_p=dropout_p,
                seed=seed, stream=stream)
    # the attention's dropout mask is the dropout stream indexed like probs (B,H,Tq,Tk)
    drop = None
    if dropout_p > 0:
        drop = _core.dropout(np.ones((B, H, Tq, Tk), np.float32), dropout_p, seed, stream).astype(np.float64)
    out, probs = _core.attention(q, k, v, H, **opts)
    ref_out, _ = attention_ref(q, k, v, H, scale, causal, mask, bias, drop)
    np.testing.assert_allclose(out, ref_out, rtol=1e-4, atol=1e-5)
    G = f32(*out.shape)
    dq, dk, dv, db = _core.attention_backward(q, k, v, probs, G, H, **opts)
    G64 = G.astype(np.float64)
    xs = {"q": q.astype(np.float64), "k": k.astype(np.float64), "v": v.astype(np.float64)}
    if use_bias:
        xs["bias"] = bias.astype(np.float64)

    def loss_of(name):
        def f(x):
            a = dict(xs)
            a[name] = x
            o, _ = attention_ref(a["q"], a["k"], a["v"], H, scale, causal, mask, a.get("bias"), drop)
            return float((o * G64).sum())
        return f

    for name, got in [("q", dq), ("k", dk), ("v", dv)] + ([("bias", db)] if use_bias else []):
        ref = numeric_grad(loss_of(name), xs[name].copy())
        np.testing.assert_allclose(got, ref, rtol=1e-3, atol=1e-4, err_msg=name)
    if not use_bias:
        assert db is None


def test_attention_bad_input():
    q = f32(2, 3, 4)
    with pytest.raises(ValueError, match="divide"):
        _core.attention(q, q, q, 3)
    with pytest.raises(ValueError, match="key_mask"):
        _core.attention(q, q, q, 2, key_mask=np.ones((2, 4), np.int32))
    with pytest.raises(ValueError, match="pos_bias"):
        _core.attention(q, q, q, 2, pos_bias=f32(2, 3, 4))
    with pytest.raises(TypeError, match="float32"):
        _core.attention(q.astype(np.float64), q, q, 2)
    with pytest.raises(ValueError, match="dropout_p"):
        _core.attention(q, q, q, 2, dropout_p=1.0)


# ------------------------------------------------------------- relative bias
def hf_bucket(rel, bidirectional, num_buckets, max_distance):
    """HuggingFace T5Attention._relative_position_bucket, restated in NumPy float32."""
    rel = np.asarray(rel, np.int64)
    buckets = np.zeros_like(rel)
    if bidirectional:
        num_buckets //= 2
        buckets += (rel > 0).astype(np.int64) * num_buckets
        rel = np.abs(rel)
    else:
        rel = -np.minimum(rel, 0)
    max_exact = num_buckets // 2
    is_small = rel < max_exact
    safe = np.maximum(rel, 1).astype(np.float32)  # small offsets take the exact branch below
    large = max_exact + (np.log(safe / np.float32(max_exact))
                         / np.float32(math.log(max_distance / max_exact))
                         * np.float32(num_buckets - max_exact)).astype(np.int64)
    large = np.minimum(large, num_buckets - 1)
    return buckets + np.where(is_small, rel, large)


@pytest.mark.parametrize("bidirectional", [True, False])
@pytest.mark.parametrize("nb,maxd", [(32, 128), (8, 20), (7, 5)])
def test_relative_bucket_matches_hf_formula(bidirectional, nb, maxd):
    rels = np.arange(-300, 301)
    ref = hf_bucket(rels, bidirectional, nb, maxd)
    got = np.array([_core.relative_bucket(int(r), bidirectional, nb, maxd) for r in rels])
    np.testing.assert_array_equal(got, ref)


@pytest.mark.parametrize("bidirectional", [True, False])
def test_relative_bias_forward_backward(bidirectional):
    nb, H, Tq, Tk, q0, maxd = 8, 3, 5, 9, 2, 12
    table = f32(nb, H)
    bias = _core.relative_bias(table, Tq, Tk, q0, bidirectional, maxd)
    rel = np.arange(Tk)[None, :] - (q0 + np.arange(Tq))[:, None]
    bk = hf_bucket(rel, bidirectional, nb, maxd)
    np.testing.assert_array_equal(bias, table[bk].transpose(2, 0, 1))
    dbias = f32(H, Tq, Tk)
    ref = np.zeros((nb, H))
    np.add.at(ref, bk, dbias.transpose(1, 2, 0).astype(np.float64))
    np.testing.assert_allclose(_core.relative_bias_backward(dbias, nb, q0, bidirectional, maxd), ref,
                               rtol=1e-5, atol=1e-5)


# -------------------------------------------------------------------- dropout
def test_dropout_is_repeatable_and_scaled():
    x = f32(1001)
    y1 = _core.dropout(x, 0.25, 42, 3)
    y2 = _core.dropout(x, 0.25, 42, 3)
    np.testing.assert_array_equal(y1, y2)
    kept = y1 != 0
    assert 0.65 < kept.mean() < 0.85
    np.testing.assert_allclose(y1[kept], x[kept] / 0.75, rtol=1e-6)
    assert not np.array_equal(_core.dropout(x, 0.25, 43, 3) != 0, kept)  # another seed
    assert not np.array_equal(_core.dropout(x, 0.25, 42, 4) != 0, kept)  # another stream
    np.testing.assert_array_equal(_core.dropout(x, 0.0, 42, 3), x)
    with pytest.raises(ValueError, match="dropout"):
        _core.dropout(x, 1.0, 1)


def test_dropout_independent_of_threads():
    x = f32(100_003)
    n0 = _core.get_num_threads()
    try:
        _core.set_num_threads(1)
        a = _core.dropout(x, 0.1, 9)
        _core.set_num_threads(2)
        b = _core.dropout(x, 0.1, 9)
    finally:
        _core.set_num_threads(n0)
    np.testing.assert_array_equal(a, b)


# -------------------------------------------------------------- cross-entropy
def test_cross_entropy_forward_backward():
    N, V = 13, 17
    logits = f32(N, V, scale=3.0)
    targets = rng.integers(0, V, N).astype(np.int32)
    targets[[2, 5]] = -100
    loss, row, count = _core.cross_entropy(logits, targets)
    x = logits.astype(np.float64)
    lse = np.log(np.exp(x - x.max(1, keepdims=True)).sum(1)) + x.max(1)
    keep = targets != -100
    ref_row = np.where(keep, lse - x[np.arange(N), np.where(keep, targets, 0)], 0.0)
    assert count == keep.sum()
    np.testing.assert_allclose(row, ref_row, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(loss, ref_row.sum() / count, rtol=1e-5)
    d = _core.cross_entropy_backward(logits, targets, 1.0 / count)
    p = np.exp(x - lse[:, None])
    ref_d = p.copy()
    ref_d[np.arange(N)[keep], targets[keep]] -= 1
    ref_d[~keep] = 0
    np.testing.assert_allclose(d, ref_d / count, rtol=1e-4, atol=1e-6)


def test_cross_entropy_bad_input():
    logits = f32(3, 4)
    with pytest.raises(ValueError, match="targets"):
        _core.cross_entropy(logits, np.array([0, 4, 1], np.int32))
    with pytest.raises(ValueError, match="targets"):
        _core.cross_entropy(logits, np.array([0, -1, 1], np.int32))
    with pytest.raises(ValueError, match="one entry per row"):
        _core.cross_entropy(logits, np.array([0, 1], np.int32))
    with pytest.raises(TypeError, match="int32"):
        _core.cross_entropy(logits, np.array([0, 1, 2], np.int64))
    with pytest.raises(ValueError, match="targets"):
        _core.cross_entropy_backward(logits, np.array([0, 9, 1], np.int32), 1.0)
