"""Misuse of the C core and its binding (issue 15): each test is a regression test of
a crash, a silent wrong result or an unclear error found by a misuse probe. Every
error must name the argument at fault."""
import threading

import numpy as np
import pytest

import gensar
from gensar import Seq2Seq, Trie, _core, ops
from gensar.decode import beam_search

SMALL = dict(vocab_size=23, d_model=16, d_kv=4, d_ff=24, num_layers=2, num_decoder_layers=2,
             num_heads=4, relative_attention_num_buckets=8, relative_attention_max_distance=16,
             dropout_rate=0.1)


def t5_args(**over):
    a = dict(vocab_size=11, d_model=8, d_kv=4, d_ff=8, num_layers=1, num_decoder_layers=1,
             num_heads=2, relative_attention_num_buckets=4, relative_attention_max_distance=8,
             gated_gelu=False, tie_word_embeddings=True, layer_norm_epsilon=1e-6, dropout_rate=0.0)
    a.update(over)
    return a


# ------------------------------------------------------------- arrays and integers
def test_big_endian_is_refused_not_misread():
    x = np.array([[1.0, 2.0, 3.0]], ">f4")
    with pytest.raises(TypeError, match=r"x has non-native \(big-endian\) byte order.*astype"):
        ops.softmax(x)
    # the conversion the message suggests gives the right answer
    y = ops.softmax(x.astype(np.float32))
    np.testing.assert_allclose(y, np.exp([[1, 2, 3]]) / np.exp([[1, 2, 3]]).sum(), rtol=1e-6)
    with pytest.raises(TypeError, match="b has non-native"):
        ops.matmul(np.ones((2, 2), np.float32), np.ones((2, 2), ">f4"))
    with pytest.raises(TypeError, match="prefix has non-native"):
        _core.trie_children(Trie(np.array([[1, 2]]))._handle, np.array([1], ">i4"))


def test_unaligned_array_is_refused():
    buf = np.zeros(4 * 9 + 1, np.uint8)
    x = np.frombuffer(buf.data, np.float32, count=9, offset=1).reshape(3, 3)
    assert not x.flags.aligned
    with pytest.raises(ValueError, match="x is not aligned"):
        ops.softmax(x)


@pytest.mark.parametrize("bad, exc, words", [
    (2**31, ValueError, r"vocab_size must be an integer in \[1, 2147483647\], got 2147483648"),
    (2**64 + 5, ValueError, "vocab_size must be an integer"),
    (0, ValueError, "vocab_size must be an integer"),
    (3.7, TypeError, "vocab_size must be an integer, got float"),
    (True, TypeError, "vocab_size must be an integer, got bool"),
    ("12", TypeError, "vocab_size must be an integer, got str"),
])
def test_t5_sizes_are_checked_and_named(bad, exc, words):
    with pytest.raises(exc, match=words):
        _core.t5_new(**t5_args(vocab_size=bad))


def test_numpy_integers_are_accepted_as_sizes():
    m = _core.t5_new(**t5_args(vocab_size=np.int64(11), d_model=np.int32(8)))
    assert _core.t5_buffers(m)[0].size > 0


def test_counts_of_decoding_are_checked_and_named():
    model = Seq2Seq(SMALL)
    ids = np.ones((2, 3), np.int32)
    trie = Trie(np.array([[1, 2], [1, 3], [4, 5]]))
    for bad, exc in ((2**31, ValueError), (2.9, TypeError), (True, TypeError), (0, ValueError)):
        with pytest.raises(exc, match="rows_per_input must be an integer"):
            model.decode_cache(ids, None, rows_per_input=bad)
        with pytest.raises(exc, match="max_steps must be an integer"):
            _core.t5_cache_new(model._model, ids, ids, 1, bad)
    for bad, exc in ((2**31, ValueError), (3.0, TypeError), (True, TypeError)):
        with pytest.raises(exc, match="num_beams must be an integer"):
            _core.t5_beam_search(model._model, ids, ids, bad, 1, trie=trie._handle)
        with pytest.raises(exc, match="top_k must be an integer"):
            _core.t5_beam_search(model._model, ids, ids, 3, bad, trie=trie._handle)
    with pytest.raises(ValueError, match="decoder_start_token_id must be an integer in"):
        _core.t5_beam_search(model._model, ids, ids, 3, 1, 2**32, trie=trie._handle)
    with pytest.raises(ValueError, match="vocab_size must be an integer in"):
        _core.trie_build(np.array([[1, 2]], np.int32), 2**31)


def test_token_ids_never_wrap_or_truncate():
    model = Seq2Seq(SMALL)
    cache = model.decode_cache(np.ones((1, 3), np.int32), rows_per_input=1)
    with pytest.raises(ValueError, match=r"tokens contains 4294967301; token ids must be in \[0, 23\)"):
        model.decode_step(cache, np.array([2**32 + 5]))
    with pytest.raises(TypeError, match="tokens must be integer token ids"):
        model.decode_step(cache, np.array([3.7]))
    with pytest.raises(TypeError, match="tokens must be integer token ids"):
        model.decode_step(cache, [True])
    assert _core.t5_cache_steps(cache) == 0  # nothing was fed
    model.decode_step(cache, [5])
    trie = Trie(np.array([[5, 1], [5, 2]]))
    np.testing.assert_array_equal(trie.children([5]), [1, 2])
    assert trie.children([2**32 + 5]).size == 0  # not the children of 5
    assert trie.children(np.array([2**32 + 5], np.uint64)).size == 0
    assert trie.children([2**64 + 5]).size == 0
    assert trie.lookup([2**32 + 5, 2]) == -1
    with pytest.raises(TypeError, match="prefix must hold integer token ids"):
        trie.children([3.7])
    with pytest.raises(TypeError, match="seq must hold integer token ids"):
        trie.lookup([5.0, 2.0])
    with pytest.raises(ValueError, match="vocab_size must be an integer"):
        Trie(np.array([[1, 2]]), vocab_size=2.5)


def test_kmeans_count_is_not_a_bool():
    x = np.random.default_rng(0).standard_normal((10, 2)).astype(np.float32)
    with pytest.raises(TypeError, match="k must be an integer, got bool"):
        _core.kmeans(x, True)
    with pytest.raises(TypeError, match="k must be an integer, got float"):
        _core.kmeans(x, 2.0)
    with pytest.raises(TypeError, match=r"dims\[0\] must be an integer"):
        _core.rq_fit_kmeans(x, (2.0,), (2,), ())


def test_quantiser_input_width_is_checked_against_dims():
    z = np.zeros((10, 5), np.float32)  # dims (2, 2) want 4 columns
    with pytest.raises(ValueError, match=r"z must have 4 columns \(sum of dims\), got 5"):
        _core.rq_fit_kmeans(z, (2, 2), (2,), (2,))
    with pytest.raises(ValueError, match=r"z must have 4 columns \(sum of dims\), got 5"):
        _core.rq_encode(z, np.zeros(100, np.float32), (2, 2), (2,), (2,))


def test_seeds_are_not_wrapped():
    x = np.ones(5, np.float32)
    with pytest.raises(ValueError, match=r"seed must be an integer in \[0, 2\*\*64\)"):
        _core.dropout(x, 0.5, -1)
    np.testing.assert_array_equal(_core.dropout(x, 0.5, 2**64 - 1), _core.dropout(x, 0.5, 2**64 - 1))


# --------------------------------------------------------------- error messages
def test_float_errors_print_the_value_not_percent_g():
    q = np.ones((1, 2, 4), np.float32)
    for call, words in (
        (lambda: _core.attention(q, q, q, 2, dropout_p=1.5), r"dropout_p must be a finite number in \[0, 1\), got 1.5"),
        (lambda: _core.dropout(q, 2.0, 1), r"dropout p must be a finite number in \[0, 1\), got 2.0"),
        (lambda: ops.layernorm(q, np.ones(4, np.float32), eps=-0.25), "eps must be a finite number > 0, got -0.25"),
        (lambda: _core.attention(q, q, q, 2, scale=float("nan")), "scale must be a finite number, got nan"),
    ):
        with pytest.raises(ValueError, match=words) as e:
            call()
        assert "%g" not in str(e.value)


# ---------------------------------------------------------------------- threads
def test_set_num_threads_is_bounded(threads):
    for bad in (1_000_000, 2**40, -1):
        with pytest.raises(ValueError, match=r"n \(number of threads\) must be an integer in \[0, \d+\]"):
            gensar.set_num_threads(bad)
    for bad in (2.0, True, None):
        with pytest.raises(TypeError, match=r"n \(number of threads\) must be an integer"):
            gensar.set_num_threads(bad)
    before = gensar.get_num_threads()
    with pytest.raises(ValueError):
        gensar.set_num_threads(2**40)
    assert gensar.get_num_threads() == before  # unchanged, not 0
    gensar.set_num_threads(64)  # allowed, more than the cores: must still compute right
    a = np.random.default_rng(1).standard_normal((70, 90)).astype(np.float32)
    np.testing.assert_allclose(ops.matmul(a, a, trans_b=True), a.astype(np.float64) @ a.T, rtol=1e-4,
                               atol=1e-3)


# ------------------------------------------------------------- overlapping memory
def test_matmul_out_overlapping_an_input_is_refused():
    rng = np.random.default_rng(2)
    buf = rng.standard_normal(64).astype(np.float32)
    a = buf[:16].reshape(4, 4)
    b = rng.standard_normal((4, 4)).astype(np.float32)
    out = buf[8:24].reshape(4, 4)  # overlaps a's last two rows, different start pointer
    with pytest.raises(ValueError, match="a and out share memory"):
        ops.matmul(a, b, out=out)
    with pytest.raises(ValueError, match="b and out share memory"):
        ops.matmul(b, a, out=buf[4:20].reshape(4, 4))
    np.testing.assert_array_equal(buf[8:24], out.ravel())  # untouched
    # disjoint views of one buffer are fine, and right
    c = buf[32:48].reshape(4, 4)
    ops.matmul(a, b, out=c)
    np.testing.assert_allclose(c, a @ b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("act", ["relu", "GELU", 1, b"gelu_erf"])
def test_linear_names_the_one_fused_activation(act):
    x, w = np.ones((2, 3), np.float32), np.ones((4, 3), np.float32)
    with pytest.raises(ValueError, match="activation must be None or 'gelu_erf'"):
        ops.linear(x, w, None, activation=act)


def test_adamw_refuses_aliased_buffers_and_bad_settings():
    n = 8
    p, g = np.ones(n, np.float32), np.full(n, 0.5, np.float32)
    m, v = np.zeros(n, np.float32), np.zeros(n, np.float32)
    with pytest.raises(ValueError, match="m and v share memory"):
        ops.adamw_step(p, g, m, m, 1)
    both = np.zeros(2 * n, np.float32)
    with pytest.raises(ValueError, match="m and v share memory"):
        ops.adamw_step(p, g, both[:n], both[n // 2: n // 2 + n], 1)
    with pytest.raises(ValueError, match="params and grads share memory"):
        ops.adamw_step(p, p, m, v, 1)
    for kw, words in (({"lr": float("inf")}, "lr must be a finite number >= 0"),
                      ({"lr": float("nan")}, "lr must be a finite number >= 0"),
                      ({"lr": -1e-3}, "lr must be a finite number >= 0"),
                      ({"eps": 0.0}, "eps must be a finite number > 0"),
                      ({"beta1": 1.0}, r"beta1 must be a finite number in \[0, 1\)"),
                      ({"beta2": float("nan")}, "beta2 must be"),
                      ({"weight_decay": -0.1}, "weight_decay must be a finite number >= 0"),
                      ({"lr": 1e300}, "lr = 1e\\+300 does not fit in float32")):
        with pytest.raises(ValueError, match=words):
            ops.adamw_step(p, g, m, v, 1, **kw)
    with pytest.raises(TypeError, match="lr must be a real number"):
        ops.adamw_step(p, g, m, v, 1, lr="0.1")
    np.testing.assert_array_equal(p, 1.0)  # nothing was updated
    ops.adamw_step(p, g, m, v, 1, lr=0.1, weight_decay=0.0)
    np.testing.assert_allclose(p, 1.0 - 0.1, rtol=1e-5)  # first step moves by lr * sign(g)


def test_clip_grad_norm_refuses_nan_and_negative():
    g = np.ones(4, np.float32)
    for bad in (float("nan"), -1.0):
        with pytest.raises(ValueError, match="max_norm must be a number >= 0"):
            ops.clip_grad_norm(g, bad)
    assert ops.clip_grad_norm(g, float("inf")) == pytest.approx(2.0)
    np.testing.assert_array_equal(g, 1.0)


def test_training_settings_are_refused_with_their_name():
    for kw, words in (({"lr": float("inf")}, "lr must be finite"),
                      ({"max_grad_norm": float("nan")}, "max_grad_norm must be finite"),
                      ({"max_grad_norm": -1.0}, "max_grad_norm must be >= 0"),
                      ({"eps": -1.0}, "eps must be > 0"),
                      ({"betas": (0.9, 1.0)}, r"betas\[1\] must be"),
                      ({"weight_decay": float("nan")}, "weight_decay must be")):
        with pytest.raises(ValueError, match=words):
            Seq2Seq(SMALL, **kw)
    model = Seq2Seq(SMALL)
    before = model.params.copy()
    batch = dict(input_ids=np.ones((2, 3), np.int32), labels=np.ones((2, 2), np.int32))
    with pytest.raises(ValueError, match="learning rate from the lr argument is nan"):
        model.train_step(batch, lr=float("nan"))
    model.max_grad_norm = float("nan")  # set behind the constructor's back: the core refuses it
    with pytest.raises(ValueError, match="max_grad_norm must be a number >= 0"):
        model.train_step(batch)
    np.testing.assert_array_equal(model.params, before)
    assert model.step == 0
    sas = _core.sasrec_new(n_items=5, max_len=3, hidden=4, layers=1, heads=1, inner=4, dropout=0.0)
    with pytest.raises(ValueError, match="max_grad_norm must be a number >= 0"):
        _core.sasrec_adamw(sas, max_grad_norm=float("nan"))
    with pytest.raises(ValueError, match="lr must be a finite number >= 0"):
        _core.sasrec_adamw(sas, lr=float("inf"))


# -------------------------------------------------------------- load_state_dict
def test_load_state_dict_is_atomic():
    model = Seq2Seq(SMALL, seed=1)
    other = Seq2Seq(SMALL, seed=2)
    good = other.state_dict()
    before = model.state_dict()

    def unchanged():
        after = model.state_dict()
        for k in before:
            np.testing.assert_array_equal(after[k], before[k])

    bad_v = dict(good, adam_v=good["adam_v"].copy())
    bad_v["adam_v"][-1] = np.nan  # the LAST entry checked: everything before it was fine
    with pytest.raises(ValueError, match="'adam_v' holds 1 non-finite values"):
        model.load_state_dict(bad_v)
    unchanged()
    for state, exc, words in (
        (dict(good, params=good["params"].astype(np.int32)), TypeError, "'params' has dtype int32"),
        (dict(good, adam_m=good["adam_m"].astype(np.float64)), TypeError, "'adam_m' has dtype float64"),
        (dict(good, adam_m=good["adam_m"][:-1]), ValueError, "'adam_m' has shape"),
        (dict(good, adam_v=-np.abs(good["adam_v"]) - 1), ValueError, "'adam_v' holds negative"),
        (dict(good, step=np.array([1.5])), ValueError, "'step' must be one integer"),
        (dict(good, step=np.array([-3])), ValueError, "'step' must be >= 0"),
        ({k: v for k, v in good.items() if k != "adam_v"}, ValueError, r"missing \['adam_v'\]"),
        (dict(good, extra=np.zeros(1)), ValueError, r"unknown \['extra'\]"),
    ):
        with pytest.raises(exc, match=words):
            model.load_state_dict(state)
        unchanged()
    model.load_state_dict(good)
    for k in good:
        np.testing.assert_array_equal(model.state_dict()[k], good[k])


# ------------------------------------------------------------ shared between threads
def run_in_threads(fns, n_threads=4):
    """Runs the callables on n_threads threads (round robin), all released together."""
    results = [None] * len(fns)
    errors = []
    barrier = threading.Barrier(n_threads)

    def worker(t):
        barrier.wait()
        for i in range(t, len(fns), n_threads):
            try:
                results[i] = fns[i]()
            except BaseException as e:  # pragma: no cover - reported below
                errors.append(e)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    return results


def test_one_model_shared_by_four_threads_logits_and_beam_search():
    rng = np.random.default_rng(5)
    model = Seq2Seq(SMALL, seed=3)
    # different shapes per call: the workspace is reallocated under a racing thread
    calls = []
    for k in range(16):
        B, T_in, T_dec = 1 + k % 4, 2 + (3 * k) % 7, 1 + (5 * k) % 6
        calls.append((rng.integers(0, 23, (B, T_in)), rng.integers(0, 23, (B, T_dec))))
    want = [model.logits(i, None, d) for i, d in calls]
    got = run_in_threads([lambda i=i, d=d: model.logits(i, None, d) for i, d in calls])
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)

    trie = Trie(rng.integers(0, 23, (40, 3)), on_duplicate="first")
    inputs = [rng.integers(1, 23, (2, 4)) for _ in range(8)]
    want = [beam_search(model, x, None, trie, 6, 3) for x in inputs]
    mixed = [lambda x=x: beam_search(model, x, None, trie, 6, 3) for x in inputs]
    mixed += [lambda i=i, d=d: model.logits(i, None, d) for i, d in calls[:8]]
    got = run_in_threads(mixed)
    for g, w in zip(got[:8], want):
        np.testing.assert_array_equal(g[0], w[0])
        np.testing.assert_array_equal(g[1], w[1])


def test_one_model_trained_by_four_threads_equals_sequential_training():
    rng = np.random.default_rng(6)
    batch = dict(input_ids=rng.integers(1, 23, (3, 5)), labels=rng.integers(1, 23, (3, 4)))
    shared, alone = Seq2Seq(SMALL, seed=4, lr=1e-2), Seq2Seq(SMALL, seed=4, lr=1e-2)
    n_steps = 12
    want = [alone.train_step(batch) for _ in range(n_steps)]
    # Every step sees the same batch and its dropout mask depends only on the step
    # count, so any serial order of the 12 steps gives the sequential result.
    got = run_in_threads([lambda: shared.train_step(batch) for _ in range(n_steps)])
    assert shared.step == n_steps
    np.testing.assert_array_equal(shared.params, alone.params)
    np.testing.assert_array_equal(shared.adam_v, alone.adam_v)
    assert sorted(got) == sorted(want)


def test_sasrec_and_encoder_models_shared_by_threads():
    cfg = dict(n_items=9, max_len=4, hidden=8, layers=1, heads=2, inner=8, dropout=0.2)
    m = _core.sasrec_new(**cfg)
    p = _core.sasrec_buffers(m)[0]
    p[:] = np.random.default_rng(7).standard_normal(p.size).astype(np.float32) * 0.3
    rng = np.random.default_rng(8)
    seqs = [rng.integers(0, 10, (1 + k % 5, 4)).astype(np.int32) for k in range(12)]
    want = [_core.sasrec_score(m, s) for s in seqs]
    tgt = np.full((2, 4), 1, np.int32)
    fns = [lambda s=s: _core.sasrec_score(m, s) for s in seqs]
    fns += [lambda: _core.sasrec_forward_backward(m, seqs[1][:2], tgt, False, 0)] * 4
    got = run_in_threads(fns)
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g[0], w[0])
    losses = {round(x[0], 6) for x in got[len(seqs):]}
    assert len(losses) == 1  # identical evaluation-mode losses, whatever ran beside them


# ------------------------------------------------------------------ the product
def test_test_decoder_is_not_part_of_the_product():
    assert not hasattr(_core, "beam_search_test_decoder")
    assert not hasattr(gensar.decode, "beam_search_test_decoder")


def test_capsules_of_the_wrong_kind_are_refused():
    t5 = Seq2Seq(SMALL)._model
    for call in (lambda: _core.rqvae_buffers(t5), lambda: _core.sasrec_score(t5, np.ones((1, 4), np.int32)),
                 lambda: _core.t5_logits(Trie(np.array([[1, 2]]))._handle, *[np.ones((1, 2), np.int32)] * 3)):
        with pytest.raises(TypeError, match="handle|capsule"):
            call()


def test_resolve_collisions_refuses_ids_overlapping_its_inputs():
    buf = np.zeros(64, np.float32)
    ids = buf[:8].view(np.int32).reshape(4, 2)
    with pytest.raises(ValueError, match="residual and ids share memory"):
        _core.resolve_collisions(ids, (3, 3), buf[4:12].reshape(4, 2), np.zeros((3, 2), np.float32))


def test_a_bad_label_is_reported_as_a_label():
    """A label is shifted into decoder_input_ids: the error must still name labels."""
    model = Seq2Seq(SMALL)
    ids = np.ones((2, 3), np.int32)
    for lab, where in (([[99, 1], [1, 2]], r"labels\[0, 0\] = 99"), ([[1, 2], [-5, 1]], r"labels\[1, 0\] = -5")):
        with pytest.raises(ValueError, match=where + r": labels must be token ids in \[0, 23\) or -100"):
            model.train_step(dict(input_ids=ids, labels=np.array(lab)))
    assert model.step == 0
