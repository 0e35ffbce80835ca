"""gensar.Seq2Seq (csrc/nn/t5.c) against an independent float64 NumPy T5, its
gradients against central differences, cached decoding against teacher forcing,
training, save/load, repeatability, bad inputs and (when torch + transformers are
importable) HuggingFace's T5ForConditionalGeneration."""
import math

import numpy as np
import pytest

import gensar
from gensar import Seq2Seq, Seq2SeqConfig, _core, schedules
from gensar.seq2seq import shift_right

TINY = dict(vocab_size=13, d_model=8, d_kv=3, d_ff=7, num_layers=2, num_decoder_layers=2,
            num_heads=2, relative_attention_num_buckets=8, relative_attention_max_distance=12,
            dropout_rate=0.0)
VARIANTS = [dict(feed_forward_proj="relu", tie_word_embeddings=True),
            dict(feed_forward_proj="gated-gelu", tie_word_embeddings=False)]


def tiny(seed=0, **over):
    cfg = dict(TINY, **over)
    m = Seq2Seq(cfg, seed=seed)
    # non-trivial norm weights so their gradients are exercised
    rng = np.random.default_rng(seed + 100)
    for name, v in m.named_params().items():
        if "layer_norm" in name:
            v[...] = 1.0 + 0.3 * rng.standard_normal(v.shape)
    return m


def make_batch(rng, B=3, T_in=7, T_dec=5, V=13):
    ids = rng.integers(0, V, (B, T_in)).astype(np.int32)
    mask = np.ones((B, T_in), np.int32)
    mask[1, 4:] = 0
    mask[-1, 2:] = 0
    labels = rng.integers(0, V, (B, T_dec)).astype(np.int32)
    labels[0, -2:] = -100
    return dict(input_ids=ids, attention_mask=mask, labels=labels)


@pytest.fixture
def one_thread():
    """Tiny models gain nothing from threads; one thread keeps these tests fast on a busy machine."""
    n0 = gensar.get_num_threads()
    gensar.set_num_threads(1)
    yield
    gensar.set_num_threads(n0)


# ----------------------------------------------------------- NumPy reference
def ref_bucket(rel, bidirectional, num_buckets, max_distance):
    rel = np.asarray(rel, np.int64)
    out = np.zeros_like(rel)
    if bidirectional:
        num_buckets //= 2
        out += (rel > 0) * num_buckets
        rel = np.abs(rel)
    else:
        rel = -np.minimum(rel, 0)
    max_exact = num_buckets // 2
    safe = np.maximum(rel, 1).astype(np.float32)
    large = max_exact + (np.log(safe / np.float32(max_exact)) / np.float32(math.log(max_distance / max_exact))
                         * np.float32(num_buckets - max_exact)).astype(np.int64)
    large = np.minimum(large, num_buckets - 1)
    return out + np.where(rel < max_exact, rel, large)


def ref_forward(P, c, ids, mask, dec):
    """T5ForConditionalGeneration forward in float64 from HF-named arrays P -> logits."""
    P = {k: np.asarray(v, np.float64) for k, v in P.items()}
    H, dkv, eps = c["num_heads"], c["d_kv"], c.get("layer_norm_epsilon", 1e-6)
    nb, md = c["relative_attention_num_buckets"], c["relative_attention_max_distance"]
    gated = c["feed_forward_proj"] == "gated-gelu"

    def rms(x, w):
        return x / np.sqrt((x * x).mean(-1, keepdims=True) + eps) * w

    def attention(xq, xkv, pre, bias):
        B, Tq, _ = xq.shape
        Tk = xkv.shape[1]
        q = (xq @ P[pre + "q.weight"].T).reshape(B, Tq, H, dkv).transpose(0, 2, 1, 3)
        k = (xkv @ P[pre + "k.weight"].T).reshape(B, Tk, H, dkv).transpose(0, 2, 1, 3)
        v = (xkv @ P[pre + "v.weight"].T).reshape(B, Tk, H, dkv).transpose(0, 2, 1, 3)
        s = q @ k.transpose(0, 1, 3, 2) + bias  # no 1/sqrt(d_kv) in T5
        s = s - s.max(-1, keepdims=True)
        p = np.exp(s)
        p /= p.sum(-1, keepdims=True)
        return (p @ v).transpose(0, 2, 1, 3).reshape(B, Tq, H * dkv) @ P[pre + "o.weight"].T

    def ffn(x, pre):
        if gated:
            a = x @ P[pre + "wi_0.weight"].T
            g = 0.5 * a * (1 + np.tanh(math.sqrt(2 / math.pi) * (a + 0.044715 * a ** 3)))
            h = g * (x @ P[pre + "wi_1.weight"].T)
        else:
            h = np.maximum(x @ P[pre + "wi.weight"].T, 0)
        return h @ P[pre + "wo.weight"].T

    def pos_bias(stack, Tq, Tk, bidirectional):
        rel = np.arange(Tk)[None, :] - np.arange(Tq)[:, None]
        tab = P[f"{stack}.block.0.layer.0.SelfAttention.relative_attention_bias.weight"]
        return tab[ref_bucket(rel, bidirectional, nb, md)].transpose(2, 0, 1)[None]

    neg = -1e30
    B, Te = ids.shape[:2]
    Td = dec.shape[1]
    pad = np.where(mask[:, None, None, :] > 0, 0.0, neg)
    if ids.ndim == 3:  # item bags: each position sums the embeddings of its slots (-1: empty)
        x = np.where((ids >= 0)[..., None], P["shared.weight"][np.maximum(ids, 0)], 0.0).sum(2)
    else:
        x = P["shared.weight"][ids]
    eb = pos_bias("encoder", Te, Te, True) + pad
    for l in range(c["num_layers"]):
        pre = f"encoder.block.{l}.layer."
        x = x + attention(rms(x, P[pre + "0.layer_norm.weight"]), rms(x, P[pre + "0.layer_norm.weight"]),
                          pre + "0.SelfAttention.", eb)
        x = x + ffn(rms(x, P[pre + "1.layer_norm.weight"]), pre + "1.DenseReluDense.")
    enc = rms(x, P["encoder.final_layer_norm.weight"])
    y = P["shared.weight"][dec]
    causal = np.where(np.arange(Td)[None, :] <= np.arange(Td)[:, None], 0.0, neg)[None, None]
    db = pos_bias("decoder", Td, Td, False) + causal
    for l in range(c["num_decoder_layers"]):
        pre = f"decoder.block.{l}.layer."
        h = rms(y, P[pre + "0.layer_norm.weight"])
        y = y + attention(h, h, pre + "0.SelfAttention.", db)
        y = y + attention(rms(y, P[pre + "1.layer_norm.weight"]), enc, pre + "1.EncDecAttention.", pad)
        y = y + ffn(rms(y, P[pre + "2.layer_norm.weight"]), pre + "2.DenseReluDense.")
    y = rms(y, P["decoder.final_layer_norm.weight"])
    if c["scale_decoder_outputs"]:
        y = y * c["d_model"] ** -0.5
    return y @ P["shared.weight" if c["tie_word_embeddings"] else "lm_head.weight"].T


def ref_loss(logits, labels):
    keep = labels != -100
    x = logits[keep]
    t = labels[keep]
    mx = x.max(-1, keepdims=True)
    lse = np.log(np.exp(x - mx).sum(-1)) + mx[:, 0]
    return float((lse - x[np.arange(len(t)), t]).mean())


def full_cfg(m):
    c = m.config
    return dict(c.to_dict())


# ------------------------------------------------------------------ forward
@pytest.mark.parametrize("variant", VARIANTS, ids=["relu-tied", "gated-untied"])
def test_logits_match_numpy_reference(variant):
    m = tiny(**variant)
    rng = np.random.default_rng(1)
    b = make_batch(rng)
    dec = shift_right(b["labels"])
    got = m.logits(b["input_ids"], b["attention_mask"], dec)
    ref = ref_forward(m.named_params(), full_cfg(m), b["input_ids"], b["attention_mask"], dec)
    assert got.shape == (3, 5, 13) and got.dtype == np.float32
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4)


def test_default_config_is_gensar():
    c = Seq2SeqConfig(vocab_size=2000).resolved()
    assert (c.d_model, c.num_layers, c.num_decoder_layers, c.num_heads, c.d_kv, c.d_ff) == (128, 4, 4, 4, 32, 512)
    assert (c.relative_attention_num_buckets, c.relative_attention_max_distance) == (32, 128)
    assert c.tie_word_embeddings and c.dropout_rate == 0.1 and c.layer_norm_epsilon == 1e-6


def test_parameter_table_is_contiguous_and_hf_named():
    m = tiny(feed_forward_proj="gated-gelu", tie_word_embeddings=False)
    info = m.tensor_info()
    end = 0
    for name, (off, shape, decay) in info.items():
        assert off == end
        end += math.prod(shape)
        assert decay == ("layer_norm" not in name and "relative_attention_bias" not in name)
    assert end == m.params.size == m.grads.size == m.adam_m.size == m.adam_v.size
    assert info["encoder.block.0.layer.0.SelfAttention.q.weight"][1] == (6, 8)
    assert info["encoder.block.0.layer.0.SelfAttention.o.weight"][1] == (8, 6)
    assert info["decoder.block.1.layer.1.EncDecAttention.k.weight"][1] == (6, 8)
    assert info["decoder.block.0.layer.2.DenseReluDense.wi_1.weight"][1] == (7, 8)
    assert info["encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight"][1] == (8, 2)
    assert "encoder.block.1.layer.0.SelfAttention.relative_attention_bias.weight" not in info
    assert info["lm_head.weight"][1] == (13, 8)
    # views are zero-copy
    m.named_params()["shared.weight"][0, 0] = 42.0
    assert m.params[info["shared.weight"][0]] == 42.0


def assert_grads_match_central_differences(grads, P, f, names, eps=1e-5):
    """grads[name] against central differences of the float64 loss f() in each entry of
    the float64 parameters P[name] (changed in place and restored), for every name.
    Tolerance: |g - g_fd| <= 2e-4 + 2e-3 |g_fd| (float32 backward vs float64 FD)."""
    for name in names:
        flat = P[name].reshape(-1)
        fd = np.zeros(flat.size)
        for i in range(flat.size):
            old = flat[i]
            flat[i] = old + eps
            lp = f()
            flat[i] = old - eps
            lm = f()
            flat[i] = old
            fd[i] = (lp - lm) / (2 * eps)
        np.testing.assert_allclose(grads[name], fd.reshape(P[name].shape), rtol=2e-3, atol=2e-4, err_msg=name)


# ---------------------------------------------------------------- gradients
@pytest.mark.parametrize("bags", [False, True], ids=["tokens", "item-bags"])
@pytest.mark.parametrize("variant", VARIANTS, ids=["relu-tied", "gated-untied"])
def test_every_gradient_matches_central_differences(variant, bags, one_thread):
    """C analytic gradients vs central differences (step 1e-5) of the float64 NumPy
    reference loss at the model's float32 parameters, for every parameter entry.
    Tolerance: |g - g_fd| <= 2e-4 + 2e-3 |g_fd| (float32 backward vs float64 FD).
    With item bags, input_ids (B, T_in, K): each encoder position sums its slots'
    embeddings, so the embedding's gradient scatters to each slot (repeats included)."""
    m = tiny(**variant)
    b = bag_batch(np.random.default_rng(11)) if bags else make_batch(np.random.default_rng(2), B=2, T_in=5, T_dec=4)
    dec = shift_right(b["labels"])
    loss = m.loss_and_grads(b)
    cfg = full_cfg(m)
    P = {k: v.astype(np.float64) for k, v in m.named_params().items()}

    def f():
        return ref_loss(ref_forward(P, cfg, b["input_ids"], b["attention_mask"], dec), b["labels"])

    assert abs(loss - f()) < 1e-5
    assert_grads_match_central_differences(m.named_grads(), P, f, P)


def test_constrained_softmax_matches_numpy_reference_and_central_differences(one_thread):
    """allowed (B, T_dec, V): each position's softmax over its allowed tokens only.
    Loss against the float64 NumPy reference with the disallowed logits removed;
    gradients against central differences of that reference (every decoder-side
    tensor entry of a tiny model, same tolerance as the unconstrained check)."""
    m = tiny(**VARIANTS[0])
    rng = np.random.default_rng(7)
    b = make_batch(rng, B=2, T_in=5, T_dec=4)
    allowed = rng.random((2, 4, 13)) < 0.4
    lab = b["labels"]
    for r, t in zip(*np.nonzero(lab != -100)):
        allowed[r, t, lab[r, t]] = True
    allowed[1, 2, :] = True  # a position without constraint
    b["allowed"] = allowed
    dec = shift_right(lab)
    loss = m.loss_and_grads(b)
    cfg = full_cfg(m)
    P = {k: v.astype(np.float64) for k, v in m.named_params().items()}

    def f():
        z = ref_forward(P, cfg, b["input_ids"], b["attention_mask"], dec)
        return ref_loss(np.where(allowed, z, -np.inf), lab)

    assert abs(loss - f()) < 1e-5
    assert abs(loss - m.loss_and_grads({k: v for k, v in b.items() if k != "allowed"})) > 1e-3
    m.loss_and_grads(b)
    assert_grads_match_central_differences(m.named_grads(), P, f,
                                           ("shared.weight", "decoder.final_layer_norm.weight"))
    # an all-True mask is the unconstrained loss, bit for bit
    full = dict(b, allowed=np.ones_like(allowed))
    plain = {k: v for k, v in b.items() if k != "allowed"}
    assert m.loss_and_grads(full) == m.loss_and_grads(plain)


def bag_batch(rng, B=2, T_in=5, K=3, T_dec=4, V=13):
    """A batch whose inputs are item bags (B, T_in, K): slot 0 a token, later slots a
    token or -1, with repeated tokens inside a bag and across positions."""
    b = make_batch(rng, B=B, T_in=T_in, T_dec=T_dec, V=V)
    bags = rng.integers(0, V, (B, T_in, K)).astype(np.int32)
    bags[:, :, 1:][rng.random((B, T_in, K - 1)) < 0.4] = -1
    bags[0, 1, 1] = bags[0, 1, 0]  # a token twice in one bag counts twice
    b["input_ids"] = bags
    return b


def test_item_bags_are_sums_of_embeddings_exactly():
    """A bag (a, b) gives the logits of the one token c whose embedding is E[a] + E[b]
    (a token the decoder never sees); a bag with only slot 0 is that token; cached
    decoding and beam search take bags as well."""
    m = tiny(tie_word_embeddings=False)
    E = m.named_params()["shared.weight"]
    E[12] = E[3] + E[7]
    ids = np.array([[5, 12, 9, 1], [12, 4, 1, 0]], np.int32)
    mask = np.array([[1, 1, 1, 1], [1, 1, 1, 0]], np.int32)
    bags = np.full((2, 4, 3), -1, np.int32)
    bags[:, :, 0] = ids
    dec = np.array([[0, 2, 5], [0, 6, 6]], np.int32)
    np.testing.assert_array_equal(m.logits(bags, mask, dec), m.logits(ids, mask, dec))
    bags[0, 1] = [3, 7, -1]
    bags[1, 0] = [3, -1, 7]
    np.testing.assert_allclose(m.logits(bags, mask, dec), m.logits(ids, mask, dec), rtol=1e-5, atol=1e-6)
    cache = m.decode_cache(bags, mask, rows_per_input=1, max_steps=3)
    full = m.logits(bags, mask, dec)
    for t in range(3):
        np.testing.assert_allclose(m.decode_step(cache, dec[:, t]), full[:, t], rtol=1e-5, atol=1e-5)
    from gensar.decode import Trie

    trie = Trie(np.array([[4, 5], [6, 2], [6, 8]], np.int32), vocab_size=13)
    np.testing.assert_array_equal(m.beam_search(bags, mask, trie, num_beams=3)[0],
                                  m.beam_search(ids, mask, trie, num_beams=3)[0])


def test_item_bags_refuse_bad_input():
    m = tiny()
    b = bag_batch(np.random.default_rng(3))
    bags, mask = b["input_ids"], b["attention_mask"]
    dec = shift_right(b["labels"])
    bad = bags.copy()
    bad[1, 2, 0] = -1
    with pytest.raises(ValueError, match=r"input_ids\[.*-1.*first slot"):
        m.logits(bad, mask, dec)
    bad = bags.copy()
    bad[0, 3, 2] = 13
    with pytest.raises(ValueError, match=r"input_ids\[.*13.*or -1"):
        m.logits(bad, mask, dec)
    with pytest.raises(ValueError, match="attention_mask shape"):
        m.logits(bags, mask[:, :4], dec)
    with pytest.raises(ValueError, match="attention_mask must be 2-dimensional"):
        m.logits(bags, np.ones(bags.shape, np.int32), dec)
    with pytest.raises(ValueError, match="3-dimensional"):
        m.logits(bags[..., None], mask, dec)
    with pytest.raises(ValueError, match="65 tokens per position; need 1 to 64"):
        m.decode_cache(np.zeros((1, 2, 65), np.int32), np.ones((1, 2), np.int32))


def test_constrained_softmax_rejects_bad_masks():
    m = tiny()
    b = make_batch(np.random.default_rng(8), B=2, T_in=5, T_dec=4)
    with pytest.raises(ValueError, match=r"allowed must have shape \(batch 2, target positions 4, vocabulary 13\)"):
        m.train_step(dict(b, allowed=np.ones((2, 4, 12), bool)))
    with pytest.raises(TypeError, match="allowed"):
        m.train_step(dict(b, allowed=np.ones((2, 4, 13), np.float32)))
    bad = np.ones((2, 4, 13), bool)
    bad[0, 1, b["labels"][0, 1]] = False
    with pytest.raises(ValueError, match=r"labels\[0, 1\] = \d+ is not among the tokens allowed"):
        m.train_step(dict(b, allowed=bad))


@pytest.mark.parametrize("ffn", ["gated-gelu", "relu"])  # relu: the fused ReLU + dropout kernels
def test_gradient_with_dropout_matches_finite_differences_of_same_masks(one_thread, ffn):
    """With dropout on, a fixed seed fixes the masks, so the loss is a smooth function of
    the parameters: spot-check 20 entries with float32 central differences (step 1e-2,
    tolerance 2e-3 absolute + 3e-2 relative, float32 loss noise)."""
    m = tiny(feed_forward_proj=ffn, tie_word_embeddings=True, dropout_rate=0.2)
    rng = np.random.default_rng(3)
    b = make_batch(rng)
    m.loss_and_grads(b, dropout=True, seed=5)
    g = m.grads.copy()
    assert m.loss_and_grads(b, dropout=True, seed=5) == m.loss_and_grads(b, dropout=True, seed=5)
    assert m.loss_and_grads(b, dropout=True, seed=5) != m.loss_and_grads(b, dropout=True, seed=6)
    idx = rng.choice(m.params.size, 20, replace=False)
    for i in idx:
        old = m.params[i]
        m.params[i] = old + 1e-2
        lp = m.loss_and_grads(b, dropout=True, seed=5)
        m.params[i] = old - 1e-2
        lm = m.loss_and_grads(b, dropout=True, seed=5)
        m.params[i] = old
        fd = (lp - lm) / 2e-2
        assert abs(g[i] - fd) <= 2e-3 + 3e-2 * abs(fd), (i, g[i], fd)


# --------------------------------------------------------- cached decoding
@pytest.mark.parametrize("variant", VARIANTS, ids=["relu-tied", "gated-untied"])
def test_cached_decoding_equals_teacher_forcing(variant):
    m = tiny(**variant)
    rng = np.random.default_rng(4)
    B, T_in, R, S = 2, 6, 3, 5
    ids = rng.integers(0, 13, (B, T_in)).astype(np.int32)
    mask = np.ones_like(ids)
    mask[1, 3:] = 0
    # every row gets its own token sequence, starting with the decoder start token
    seqs = rng.integers(0, 13, (B * R, S)).astype(np.int32)
    seqs[:, 0] = 0
    full = m.logits(np.repeat(ids, R, 0), np.repeat(mask, R, 0), seqs)
    cache = _core.t5_cache_new(m._model, ids, mask, R, S)
    assert _core.t5_cache_rows(cache) == B * R
    for t in range(S):
        step = _core.t5_decode_step(cache, np.ascontiguousarray(seqs[:, t]))
        np.testing.assert_allclose(step, full[:, t], rtol=1e-5, atol=1e-5)
    assert _core.t5_cache_steps(cache) == S
    with pytest.raises(ValueError, match="full"):
        _core.t5_decode_step(cache, seqs[:, 0].copy())


def test_caches_alive_together_do_not_share_memory():
    """Decoding caches keep their states and packed weights in a per-thread block
    reused between requests; a second cache alive at the same time (and a beam
    search run in between, which takes the block for its own cache) must get memory
    of its own, or one cache would overwrite the other."""
    m = tiny()
    rng = np.random.default_rng(9)
    B, R, S = 2, 2, 4
    ids = [rng.integers(0, 13, (B, 5)).astype(np.int32) for _ in range(2)]
    seqs = [rng.integers(0, 13, (B * R, S)).astype(np.int32) for _ in range(2)]
    for s in seqs:
        s[:, 0] = 0
    full = [m.logits(np.repeat(x, R, 0), np.ones((B * R, 5), np.int32), s) for x, s in zip(ids, seqs)]
    caches = [m.decode_cache(x, np.ones_like(x), rows_per_input=R, max_steps=S) for x in ids]
    trie = gensar.decode.Trie(np.array([[1, 2], [1, 3], [4, 5]]), vocab_size=13)
    for t in range(S):
        for c, s, f in zip(caches, seqs, full):
            np.testing.assert_allclose(m.decode_step(c, s[:, t]), f[:, t], rtol=1e-5, atol=1e-5)
        gensar.decode.beam_search(m, ids[0], None, trie, num_beams=2, top_k=2)


def test_a_cache_made_in_one_thread_can_be_freed_in_another():
    """A decoding cache held by Python may be dropped on any thread, after the thread
    that made it has exited; its memory must not be that thread's reusable scratch
    block (freed twice: once with the cache, once when the thread ends)."""
    import threading

    m = tiny()
    ids = np.array([[3, 4, 5]], np.int32)
    made = []
    for _ in range(3):
        t = threading.Thread(target=lambda: made.append(m.decode_cache(ids, np.ones_like(ids), 2, 3)))
        t.start()
        t.join()  # the thread is gone; its cache lives on here
    steps = [m.decode_step(c, np.zeros(2, np.int32)) for c in made]
    np.testing.assert_array_equal(steps[0], steps[1])
    del made[:], steps  # freed on this thread
    trie = gensar.decode.Trie(np.array([[1, 2], [1, 3]]), vocab_size=13)
    t = threading.Thread(target=lambda: gensar.decode.beam_search(m, ids, None, trie, num_beams=2, top_k=2))
    t.start()
    t.join()


def test_cache_reorder_moves_histories():
    m = tiny()
    rng = np.random.default_rng(5)
    B, R, S = 2, 3, 4
    ids = rng.integers(0, 13, (B, 5)).astype(np.int32)
    mask = np.ones_like(ids)
    seqs = rng.integers(0, 13, (B * R, S)).astype(np.int32)
    seqs[:, 0] = 0
    cache = m.decode_cache(ids, mask, rows_per_input=R, max_steps=S)
    for t in range(2):
        m.decode_step(cache, seqs[:, t])
    src = np.array([2, 2, 0, 4, 3, 3], np.int32)  # stays within each input's rows
    _core.t5_cache_reorder(cache, src)
    hist = seqs[src, :2]
    nxt = seqs[:, 2].copy()
    step = m.decode_step(cache, nxt)
    ref = m.logits(np.repeat(ids, R, 0), np.repeat(mask, R, 0), np.concatenate([hist, nxt[:, None]], 1))
    np.testing.assert_allclose(step, ref[:, 2], rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="same input"):
        _core.t5_cache_reorder(cache, np.array([3, 0, 0, 4, 4, 4], np.int32))
    with pytest.raises(ValueError, match="not a row"):
        _core.t5_cache_reorder(cache, np.array([0, 0, 0, 4, 4, 6], np.int32))
    with pytest.raises(ValueError, match="one entry per cache row"):
        _core.t5_cache_reorder(cache, np.array([0, 1], np.int32))
    with pytest.raises(ValueError, match="token id"):
        m.decode_step(cache, np.array([0, 0, 0, 0, 0, 13]))
    with pytest.raises(ValueError, match="rows_per_input"):
        _core.t5_cache_new(m._model, ids, mask, 0, 4)
    with pytest.raises(TypeError, match="decoding cache"):
        _core.t5_decode_step(m._model, nxt)


# ------------------------------------------------------------- training
def copy_reverse_data(rng, n=64, L=6, V=20):
    """input: L random tokens in [2, V); target: the same tokens reversed."""
    x = rng.integers(2, V, (n, L)).astype(np.int32)
    return x, np.ascontiguousarray(x[:, ::-1])


def test_memorises_reverse_task(one_thread):
    rng = np.random.default_rng(6)
    x, y = copy_reverse_data(rng)
    cfg = dict(vocab_size=20, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
               dropout_rate=0.0)
    m = Seq2Seq(cfg, lr=3e-3, weight_decay=0.0, seed=0,
                schedule=schedules.constant(3e-3, warmup_steps=10))
    batch = dict(input_ids=x, attention_mask=np.ones_like(x), labels=y)
    losses = [m.train_step(batch) for _ in range(300)]
    assert losses[0] > 2.0
    assert losses[-1] < 0.05, losses[-10:]
    pred = m.logits(x, np.ones_like(x), shift_right(y)).argmax(-1)
    assert (pred == y).mean() == 1.0
    assert m.step == 300


def test_save_load_identical_logits(tmp_path):
    pytest.importorskip("safetensors")
    m = tiny(feed_forward_proj="gated-gelu", tie_word_embeddings=False)
    rng = np.random.default_rng(7)
    b = make_batch(rng)
    m.train_step(b)
    dec = shift_right(b["labels"])
    before = m.logits(b["input_ids"], b["attention_mask"], dec)
    path = tmp_path / "m.safetensors"
    m.save(path)
    m2 = Seq2Seq.load(path)
    assert m2.config == m.config
    np.testing.assert_array_equal(m2.params, m.params)
    np.testing.assert_array_equal(m2.logits(b["input_ids"], b["attention_mask"], dec), before)
    with pytest.raises(ValueError, match="metadata"):
        from safetensors.numpy import save_file
        save_file({"a": np.zeros(2, np.float32)}, str(tmp_path / "x.safetensors"))
        Seq2Seq.load(tmp_path / "x.safetensors")


def test_fixed_seed_and_threads_give_bit_identical_losses():
    rng = np.random.default_rng(8)
    b = make_batch(rng)
    n0 = gensar.get_num_threads()

    def run():
        m = tiny(seed=3, dropout_rate=0.1)
        m.seed = 11
        return [m.train_step(b) for _ in range(5)], m.params.copy()

    try:
        for threads in (1, 2):
            gensar.set_num_threads(threads)
            (l1, p1), (l2, p2) = run(), run()
            assert l1 == l2
            np.testing.assert_array_equal(p1, p2)
    finally:
        gensar.set_num_threads(n0)


def test_hf_round_trip_layout():
    m = tiny(feed_forward_proj="gated-gelu", tie_word_embeddings=True)
    sd = m.to_hf_t5()
    assert "encoder.embed_tokens.weight" in sd and "lm_head.weight" in sd
    m2 = Seq2Seq.from_hf_t5(sd, dict(m.hf_config(), unknown_key=1, architectures=["T5"]))
    np.testing.assert_array_equal(m2.params, m.params)
    bad = dict(sd)
    bad["encoder.block.0.layer.0.SelfAttention.q.weight"] = np.zeros((2, 2), np.float32)
    with pytest.raises(ValueError, match="shape"):
        Seq2Seq.from_hf_t5(bad, m.hf_config())
    missing = dict(sd)
    del missing["decoder.final_layer_norm.weight"]
    with pytest.raises(ValueError, match="missing"):
        Seq2Seq.from_hf_t5(missing, m.hf_config())
    with pytest.raises(ValueError, match="do not belong"):
        Seq2Seq.from_hf_t5(sd, dict(m.hf_config(), feed_forward_proj="relu"))


def test_schedules():
    s = schedules.linear(1.0, total_steps=10, warmup_steps=2)
    assert [s(i) for i in (0, 1, 2, 6, 10, 20)] == [0.0, 0.5, 1.0, 0.5, 0.0, 0.0]
    c = schedules.cosine(2.0, total_steps=12, warmup_steps=2, min_lr=0.0)
    assert c(2) == 2.0 and abs(c(7) - 1.0) < 1e-12 and abs(c(12)) < 1e-12
    k = schedules.constant(0.5, warmup_steps=4)
    assert k(1) == 0.125 and k(100) == 0.5
    with pytest.raises(ValueError):
        schedules.linear(1.0, total_steps=5, warmup_steps=6)
    with pytest.raises(ValueError):
        s(-1)


# ------------------------------------------------------------- bad inputs
def test_bad_inputs_raise_clear_errors():
    m = tiny()
    rng = np.random.default_rng(9)
    b = make_batch(rng)
    ids, mask, lab = b["input_ids"], b["attention_mask"], b["labels"]
    dec = shift_right(lab)
    with pytest.raises(TypeError, match="integer"):
        m.logits(ids.astype(np.float32), mask, dec)
    with pytest.raises(ValueError, match="2-dimensional"):
        m.logits(ids[0], mask, dec)
    with pytest.raises(ValueError, match="empty"):
        m.logits(ids[:0], mask[:0], dec[:0])
    with pytest.raises(ValueError, match="does not match"):
        m.logits(ids, mask[:, :3], dec)
    with pytest.raises(ValueError, match="rows"):
        m.logits(ids, mask, dec[:2])
    bad = ids.copy()
    bad[1, 2] = 13
    with pytest.raises(ValueError, match=r"input_ids\[.*13.*\[0, 13\)"):
        m.logits(bad, mask, dec)
    bad[1, 2] = -1
    with pytest.raises(ValueError, match="input_ids"):
        m.logits(bad, mask, dec)
    bdec = dec.copy()
    bdec[0, 0] = 99
    with pytest.raises(ValueError, match="decoder_input_ids"):
        m.logits(ids, mask, bdec)
    bmask = mask.copy()
    bmask[0, 0] = 2
    with pytest.raises(ValueError, match="0 or 1"):
        m.logits(ids, bmask, dec)
    bmask[0] = 0
    with pytest.raises(ValueError, match="all zeros"):
        m.logits(ids, bmask, dec)
    blab = lab.copy()
    blab[1, -1] = 13  # the last label is not shifted into decoder_input_ids
    with pytest.raises(ValueError, match="labels"):
        m.train_step(dict(input_ids=ids, attention_mask=mask, labels=blab))
    with pytest.raises(ValueError, match="no target"):
        m.train_step(dict(input_ids=ids, attention_mask=mask, labels=np.full_like(lab, -100)))
    with pytest.raises(KeyError, match="labels"):
        m.train_step(dict(input_ids=ids, attention_mask=mask))
    with pytest.raises(TypeError, match="dict"):
        m.train_step([ids, mask, lab])
    with pytest.raises(ValueError, match="does not match"):
        m.train_step(dict(input_ids=ids, attention_mask=mask, labels=lab, decoder_input_ids=dec[:, :2]))
    with pytest.raises(ValueError, match="learning rate from the lr argument"):
        m.train_step(dict(input_ids=ids, attention_mask=mask, labels=lab), lr=-1.0)
    with pytest.raises(ValueError, match="vocab_size"):
        Seq2Seq(dict(d_model=8))
    with pytest.raises(ValueError, match="feed_forward_proj"):
        Seq2Seq(dict(TINY, feed_forward_proj="swish"))
    with pytest.raises(ValueError, match="d_model"):
        Seq2Seq(dict(TINY, d_model=0))
    with pytest.raises(ValueError, match="dropout_rate"):
        Seq2Seq(dict(TINY, dropout_rate=1.0))
    with pytest.raises(ValueError, match="max_distance"):
        Seq2Seq(dict(TINY, relative_attention_num_buckets=32, relative_attention_max_distance=8))


# --------------------------------------------------------------- HuggingFace
@pytest.mark.parametrize("variant", VARIANTS + [dict(feed_forward_proj="relu", tie_word_embeddings=False),
                                                dict(feed_forward_proj="gated-gelu", tie_word_embeddings=True)],
                         ids=["relu-tied", "gated-untied", "relu-untied", "gated-tied"])
def test_from_hf_t5_matches_transformers(variant):
    # transformers >= 5 always ties T5's LM head and turns tie_word_embeddings=False into
    # scale_decoder_outputs=False; an untied head is covered by the NumPy reference test.
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    cfg = transformers.T5Config(vocab_size=29, d_model=16, d_kv=4, d_ff=24, num_layers=2,
                                num_decoder_layers=3, num_heads=4, relative_attention_num_buckets=8,
                                relative_attention_max_distance=20, dropout_rate=0.0,
                                decoder_start_token_id=0, pad_token_id=0, **variant)
    hf = transformers.T5ForConditionalGeneration(cfg).eval()
    with torch.no_grad():  # non-trivial norms so a misplaced norm weight shows
        for n, p in hf.named_parameters():
            if "layer_norm" in n:
                p.add_(0.3 * torch.randn_like(p))
    m = Seq2Seq.from_hf_t5(hf.state_dict(), cfg.to_dict())
    rng = np.random.default_rng(10)
    ids = rng.integers(0, 29, (3, 19)).astype(np.int32)
    mask = np.ones_like(ids)
    mask[1, 11:] = 0
    dec = rng.integers(0, 29, (3, 17)).astype(np.int32)  # beyond the exact buckets
    dec[:, 0] = 0
    with torch.no_grad():
        ref = hf(input_ids=torch.from_numpy(ids).long(), attention_mask=torch.from_numpy(mask).long(),
                 decoder_input_ids=torch.from_numpy(dec).long()).logits.numpy()
    got = m.logits(ids, mask, dec)
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4)
    back = m.to_hf_t5()
    sd = hf.state_dict()
    for k, v in sd.items():
        np.testing.assert_array_equal(back[k], v.numpy(), err_msg=k)
