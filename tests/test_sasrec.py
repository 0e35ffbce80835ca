"""SASRec in C: gradients against central differences (with and without dropout), masking
and scoring invariants, learning on the synthetic toy data, save and load, bad inputs."""
import json
import shutil

import numpy as np
import pytest

import gensar
from gensar import _core, datasets
from gensar.baselines import Popularity
from gensar.embeddings import SASRec
from gensar.evaluate import evaluate_scorer

TINY = dict(n_items=7, max_len=5, hidden=6, layers=2, heads=2, inner=5, dropout=0.3)
SEQS = np.array([[0, 0, 3, 1, 7], [2, 5, 6, 1, 4], [0, 0, 0, 0, 2]], dtype=np.int32)
TGTS = np.array([[-100, -100, 0, 6, 3], [4, 5, 0, 3, -100], [-100, -100, -100, -100, 1]],
                dtype=np.int32)


def tiny_model(cfg=TINY, seed=0):
    m = _core.sasrec_new(**cfg)
    p = _core.sasrec_buffers(m)[0]
    p[:] = np.random.default_rng(seed).standard_normal(p.size).astype(np.float32) * 0.5
    for name, off, shape, decay in _core.sasrec_tensor_specs(**cfg):
        if "ln" in name and name.endswith("weight"):
            p[off: off + shape[0]] += 1.0
    return m


@pytest.mark.parametrize("train", [False, True], ids=["no-dropout", "dropout"])
def test_gradients_match_central_differences(train):
    m = tiny_model()
    p, g, _, _ = _core.sasrec_buffers(m)
    loss, count = _core.sasrec_forward_backward(m, SEQS, TGTS, train, 11)
    assert count == int((TGTS != -100).sum()) and np.isfinite(loss)
    analytic = g.copy()
    assert np.abs(analytic).max() > 0.05
    numeric = np.zeros_like(analytic)
    eps = 1e-3
    for i in range(p.size):
        old = p[i]
        p[i] = old + eps
        lp = _core.sasrec_forward_backward(m, SEQS, TGTS, train, 11)[0]
        p[i] = old - eps
        lm = _core.sasrec_forward_backward(m, SEQS, TGTS, train, 11)[0]
        p[i] = old
        numeric[i] = (lp - lm) / (2 * eps)
    # float32 loss differences: noise ~1e-4; ReLU kinks can cost a little more
    np.testing.assert_allclose(analytic, numeric, atol=2e-3, rtol=2e-2)
    # every tensor receives gradient (nothing silently disconnected), but the padding row
    for name, off, shape, decay in _core.sasrec_tensor_specs(**TINY):
        n = int(np.prod(shape))
        block = analytic[off: off + n]
        if name == "item_embedding":
            assert np.all(block[: TINY["hidden"]] == 0)  # row 0 = padding, masked everywhere
            block = block[TINY["hidden"]:]
        assert np.abs(block).max() > 0, name


# negatives shared by the batch: a repeat (3), and items that are some slot's own target
NEGS = np.array([3, 5, 3, 0], dtype=np.int32)
LOG_Q = np.log(np.array([4, 1, 2, 6, 1, 3, 1]) / 18.0).astype(np.float32)  # a popularity proposal


@pytest.mark.parametrize("log_q", [None, LOG_Q], ids=["uniform", "corrected"])
def test_sampled_softmax_gradients_match_central_differences(log_q):
    m = tiny_model()
    p, g, _, _ = _core.sasrec_buffers(m)
    loss, count = _core.sasrec_forward_backward(m, SEQS, TGTS, True, 11, negatives=NEGS, log_q=log_q)
    assert count == int((TGTS != -100).sum()) and np.isfinite(loss)
    analytic = g.copy()
    numeric = np.zeros_like(analytic)
    eps = 1e-3
    for i in range(p.size):
        old = p[i]
        p[i] = old + eps
        lp = _core.sasrec_forward_backward(m, SEQS, TGTS, True, 11, negatives=NEGS, log_q=log_q)[0]
        p[i] = old - eps
        lm = _core.sasrec_forward_backward(m, SEQS, TGTS, True, 11, negatives=NEGS, log_q=log_q)[0]
        p[i] = old
        numeric[i] = (lp - lm) / (2 * eps)
    np.testing.assert_allclose(analytic, numeric, atol=2e-3, rtol=2e-2)
    d = TINY["hidden"]
    item_grads = analytic[d: d * (TINY["n_items"] + 1)].reshape(TINY["n_items"], d)
    touched = set(NEGS.tolist()) | set(TGTS[TGTS != -100].tolist())
    for i in range(TINY["n_items"]):  # only targets and negatives reach the output layer
        if i not in touched and i + 1 not in SEQS:
            assert np.all(item_grads[i] == 0), i


def test_sampled_softmax_loss_is_the_softmax_over_target_and_negatives():
    m = tiny_model(dict(TINY, dropout=0.0))
    p = _core.sasrec_buffers(m)[0]
    scores, _ = _core.sasrec_score(m, SEQS)  # last slot's scores over every item
    tg = np.full_like(SEQS, -100)
    tg[:, -1] = [2, 0, 5]
    loss = _core.sasrec_forward_backward(m, SEQS, tg, False, 0, negatives=NEGS)[0]
    want = []
    for b, t in enumerate([2, 0, 5]):
        cols = [t] + [k for k in NEGS.tolist() if k != t]  # a negative equal to the target is left out
        z = scores[b, cols].astype(np.float64)
        want.append(np.log(np.exp(z - z.max()).sum()) + z.max() - z[0])
    assert loss == pytest.approx(np.mean(want), rel=1e-5)
    # with log_q, every logit (the target's too) is lowered by its item's log q
    log_q = np.log(np.arange(1, TINY["n_items"] + 1) / 28.0).astype(np.float32)
    corrected = _core.sasrec_forward_backward(m, SEQS, tg, False, 0, negatives=NEGS, log_q=log_q)[0]
    want_q = []
    for b, t in enumerate([2, 0, 5]):
        cols = [t] + [k for k in NEGS.tolist() if k != t]
        z = scores[b, cols].astype(np.float64) - log_q[cols]
        want_q.append(np.log(np.exp(z - z.max()).sum()) + z.max() - z[0])
    assert corrected == pytest.approx(np.mean(want_q), rel=1e-5)
    # every item as a negative (once) is the full softmax
    full = _core.sasrec_forward_backward(m, SEQS, tg, False, 0)[0]
    every = _core.sasrec_forward_backward(m, SEQS, tg, False, 0, negatives=np.arange(TINY["n_items"], dtype=np.int32))[0]
    assert every == pytest.approx(full, rel=1e-5)


def test_sampled_softmax_rejects_bad_negatives():
    m = tiny_model()
    with pytest.raises(ValueError, match=r"negatives\[1\] = 7 is not an item index"):
        _core.sasrec_forward_backward(m, SEQS, TGTS, negatives=np.array([1, 7], np.int32))
    with pytest.raises(ValueError, match="negatives is empty"):
        _core.sasrec_forward_backward(m, SEQS, TGTS, negatives=np.zeros(0, np.int32))
    with pytest.raises(TypeError, match="negatives"):
        _core.sasrec_forward_backward(m, SEQS, TGTS, negatives=np.array([1, 2], np.int64))
    good = np.zeros(TINY["n_items"], np.float32)
    with pytest.raises(ValueError, match="give negatives too"):
        _core.sasrec_forward_backward(m, SEQS, TGTS, log_q=good)
    with pytest.raises(ValueError, match="one value per item"):
        _core.sasrec_forward_backward(m, SEQS, TGTS, negatives=NEGS, log_q=good[:3])
    with pytest.raises(ValueError, match=r"log_q\[2\] is not finite"):
        _core.sasrec_forward_backward(m, SEQS, TGTS, negatives=NEGS, log_q=np.where(np.arange(7) == 2, -np.inf, 0).astype(np.float32))


def test_dropout_is_seeded_and_thread_independent():
    m = tiny_model()
    g = _core.sasrec_buffers(m)[1]
    old = gensar.get_num_threads()
    try:
        gensar.set_num_threads(1)
        l1 = _core.sasrec_forward_backward(m, SEQS, TGTS, True, 5)[0]
        g1 = g.copy()
        gensar.set_num_threads(2)
        l2 = _core.sasrec_forward_backward(m, SEQS, TGTS, True, 5)[0]
        g2 = g.copy()
    finally:
        gensar.set_num_threads(old)
    assert l1 == l2
    np.testing.assert_array_equal(g1, g2)
    l3 = _core.sasrec_forward_backward(m, SEQS, TGTS, True, 6)[0]
    l0 = _core.sasrec_forward_backward(m, SEQS, TGTS, False, 5)[0]
    assert l3 != l1 and l0 != l1  # another seed, or no dropout, changes the loss


def test_score_is_last_hidden_times_item_table_and_padding_is_masked():
    m = tiny_model(dict(TINY, dropout=0.0))
    p = _core.sasrec_buffers(m)[0]
    scores, hidden = _core.sasrec_score(m, SEQS)
    d, V = TINY["hidden"], TINY["n_items"]
    table = p[d: d * (V + 1)].reshape(V, d)
    np.testing.assert_allclose(scores, hidden @ table.T, rtol=1e-5, atol=1e-5)
    # the mean training loss at the last slot equals cross-entropy of these scores
    tg = np.full_like(SEQS, -100)
    tg[:, -1] = [2, 0, 5]
    loss = _core.sasrec_forward_backward(m, SEQS, tg, False, 0)[0]
    z = scores - scores.max(1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(1, keepdims=True))
    assert loss == pytest.approx(-logp[np.arange(3), [2, 0, 5]].mean(), rel=1e-5)
    # changing the padding row of the item table changes nothing (padding keys are masked)
    p[:d] = 123.0
    scores2, _ = _core.sasrec_score(m, SEQS)
    pad_free = SEQS[1:2]  # has no padding: unaffected trivially; padded rows must be too
    np.testing.assert_allclose(scores2, scores, rtol=1e-5, atol=1e-5)
    assert _core.sasrec_score(m, pad_free)[0].shape == (1, V)


def test_adamw_reduces_loss_on_fixed_batch():
    m = tiny_model(dict(TINY, dropout=0.0))
    losses = []
    for _ in range(60):
        losses.append(_core.sasrec_forward_backward(m, SEQS, TGTS, False, 0)[0])
        _core.sasrec_adamw(m, lr=1e-2)
    assert _core.sasrec_step(m) == 60
    assert losses[-1] < 0.2 * losses[0]


@pytest.fixture(scope="module")
def toy():
    return datasets.toy(n_users=80, n_items=40, n_topics=4, events_per_user=16, follow=0.95,
                        seed=1)


@pytest.fixture(scope="module")
def fitted(toy):
    return SASRec(hidden=32, layers=2, heads=2, max_len=10, dropout=0.1, epochs=60,
                  batch_size=32, lr=5e-3, eval_every=0, seed=0, show_progress=False).fit(toy)


def test_learns_toy_sequences_and_beats_popularity(toy, fitted):
    assert fitted.item_embeddings_.shape == (toy.n_items, 32)
    assert fitted.item_embeddings_.dtype == np.float32
    res = fitted.evaluate("test")
    assert res == fitted.evaluate("test", toy)
    pop = evaluate_scorer(toy, Popularity().fit(toy).score, tasks=("rec",), split="test",
                          protocols=("full",), ks=(5, 10, 20)).iloc[0]
    assert set(res) >= {"HR@5", "HR@10", "HR@20", "NDCG@5", "NDCG@10", "NDCG@20", "cases"}
    assert res["cases"] == len(toy.examples("rec", "test"))
    assert res["NDCG@10"] > pop["NDCG@10"] + 0.2 and res["HR@10"] > 0.6


def test_sampled_softmax_learns_and_auto_keeps_the_full_softmax_for_small_catalogues(toy, fitted):
    from gensar.embeddings import sasrec as sasrec_module

    assert fitted.negatives_ == 0  # "auto" at 240 items: the full softmax, as before the option
    sampled = SASRec(hidden=32, layers=2, heads=2, max_len=10, dropout=0.1, epochs=60, batch_size=32,
                     lr=5e-3, eval_every=0, seed=0, negatives=20, show_progress=False).fit(toy)
    assert sampled.negatives_ == 20
    pop = evaluate_scorer(toy, Popularity().fit(toy).score, tasks=("rec",), split="test",
                          protocols=("full",), ks=(10,)).iloc[0]
    assert sampled.evaluate("test")["NDCG@10"] > pop["NDCG@10"] + 0.2
    assert not np.array_equal(sampled.item_embeddings_, fitted.item_embeddings_)
    # above the threshold "auto" samples
    assert SASRec()._n_negatives(sasrec_module.AUTO_FULL_SOFTMAX_ITEMS + 1) == sasrec_module.AUTO_NEGATIVES


def test_training_loss_decreases_and_validation_keeps_best(toy):
    short = SASRec(hidden=16, layers=1, max_len=8, epochs=2, eval_every=0, show_progress=False)
    long = SASRec(hidden=16, layers=1, max_len=8, epochs=20, eval_every=5, patience=10,
                  show_progress=False)
    assert long.fit(toy).loss_ < short.fit(toy).loss_
    assert [h["epoch"] for h in long.history_] == [5, 10, 15, 20]
    best = max(long.history_, key=lambda h: h["NDCG@10"])
    assert long.best_epoch_ == best["epoch"]
    assert long.evaluate("valid", ks=(10,))["NDCG@10"] == pytest.approx(best["NDCG@10"])


def test_early_stop_keeps_the_best_epoch_and_the_bar_says_so(toy, capsys):
    """patience validations without a gain stop training short of `epochs`; the best
    epoch's parameters are kept and the progress bar counts every epoch that ran and
    says why it stopped."""
    m = SASRec(hidden=16, layers=1, max_len=8, epochs=200, eval_every=1, patience=2, seed=0).fit(toy)
    ran = m.history_[-1]["epoch"]
    assert ran < 200 and ran - m.best_epoch_ == 2
    bar = capsys.readouterr().err.replace("\r", "\n").strip().splitlines()[-1]
    assert f"{ran}/200" in bar and f"stopped early: best epoch {m.best_epoch_}" in bar


def test_recommend(toy, fitted):
    top = fitted.recommend([[0, 1, 2], [], np.array([5])], k=4)
    assert top.shape == (3, 4) and top.dtype == np.int64
    scores = fitted.score_histories([[0, 1, 2]])
    assert list(top[0]) == list(np.argsort(-scores[0], kind="stable")[:4])
    no_seen = fitted.recommend([[0, 1, 2]], k=toy.n_items - 3, exclude_seen=True)
    assert not set(no_seen[0]) & {0, 1, 2}
    # histories longer than max_len keep their newest items
    long = list(range(30))
    np.testing.assert_array_equal(fitted.score_histories([long]),
                                  fitted.score_histories([long[-10:]]))


def test_same_seed_same_model(toy):
    kw = dict(hidden=8, layers=1, max_len=6, epochs=2, eval_every=0, show_progress=False)
    a = SASRec(seed=3, **kw).fit(toy).item_embeddings_
    b = SASRec(seed=3, **kw).fit(toy).item_embeddings_
    c = SASRec(seed=4, **kw).fit(toy).item_embeddings_
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


# ---------------------------------------------------------------- bad inputs
@pytest.mark.parametrize("kw, message", [
    (dict(hidden=10, heads=3), "divide"),
    (dict(dropout=1.0), "dropout"),
    (dict(max_len=0), "max_len"),
    (dict(kinds=("rec", "clicks")), "kinds"),
    (dict(kinds=()), "kinds"),
    (dict(batch_size=0), "batch_size"),
    (dict(lr=float("nan")), "lr"),
    (dict(layers=0), "layers"),
    (dict(seed=-1), "seed"),
    (dict(negatives=-1), "negatives"),
])
def test_bad_parameters(toy, kw, message):
    with pytest.raises(ValueError, match=message):
        SASRec(show_progress=False, **kw).fit(toy)


@pytest.mark.parametrize("kw, message", [
    (dict(hidden=True), "hidden must be an integer"),
    (dict(epochs=2.0), "epochs must be an integer"),
    (dict(lr="0.1"), "lr must be a number"),
    (dict(negatives="some"), "negatives must be 'auto' or an integer"),
])
def test_wrong_parameter_types(toy, kw, message):
    with pytest.raises(TypeError, match=message):
        SASRec(show_progress=False, **kw).fit(toy)


def test_bad_dataset_and_unfitted():
    with pytest.raises(TypeError, match="Dataset"):
        SASRec().fit([[1, 2, 3]])
    with pytest.raises(RuntimeError, match="not fitted"):
        SASRec().recommend([[1]])
    with pytest.raises(RuntimeError, match="not fitted"):
        SASRec().item_embeddings_


def test_bad_histories(fitted, toy):
    with pytest.raises(ValueError, match="outside"):
        fitted.recommend([[0, toy.n_items]])
    with pytest.raises(ValueError, match="outside"):
        fitted.recommend([[-1]])
    with pytest.raises(TypeError, match="integer"):
        fitted.recommend([[0.5]])
    with pytest.raises(ValueError, match="empty"):
        fitted.recommend([])
    with pytest.raises(ValueError, match="k must be"):
        fitted.recommend([[0]], k=0)
    with pytest.raises(ValueError, match="k must be"):
        fitted.recommend([[0]], k=toy.n_items + 1)
    with pytest.raises(ValueError, match="rec"):
        fitted.score("search", toy.examples("search", "test"), toy)
    with pytest.raises(ValueError, match="split"):
        fitted.evaluate("train")
    with pytest.raises(ValueError, match="1349 items|items"):
        fitted.evaluate("test", datasets.toy(n_items=30))
    with pytest.raises(ValueError, match="protocol"):
        fitted.evaluate("test", protocol="all")


def test_core_rejects_bad_arrays():
    m = tiny_model()
    with pytest.raises(ValueError, match="max_len"):
        _core.sasrec_forward_backward(m, SEQS[:, :4].copy(), TGTS[:, :4].copy())
    with pytest.raises(ValueError, match="same shape"):
        _core.sasrec_forward_backward(m, SEQS, TGTS[:2].copy())
    with pytest.raises(TypeError, match="int32"):
        _core.sasrec_forward_backward(m, SEQS.astype(np.int64), TGTS)
    bad = SEQS.copy()
    bad[0, 0] = 8  # n_items + 1
    with pytest.raises(ValueError, match="sequence slot"):
        _core.sasrec_forward_backward(m, bad, TGTS)
    with pytest.raises(ValueError, match="sequence slot"):
        _core.sasrec_score(m, bad)
    badt = TGTS.copy()
    badt[1, 0] = 7  # targets are 0-based: n_items is out of range
    with pytest.raises(ValueError):
        _core.sasrec_forward_backward(m, SEQS, badt)
    with pytest.raises(ValueError, match="lr"):
        _core.sasrec_adamw(m, lr=-1.0)
    with pytest.raises(TypeError, match="SASRec handle"):
        _core.sasrec_score(object(), SEQS)
    with pytest.raises(ValueError, match="heads"):
        _core.sasrec_new(10, 5, 6, 1, 4, 6, 0.1)
    with pytest.raises(ValueError, match="dropout"):
        _core.sasrec_new(10, 5, 6, 1, 2, 6, 1.5)
    # no counted target: loss 0, gradient 0
    loss, count = _core.sasrec_forward_backward(m, SEQS, np.full_like(TGTS, -100))
    assert (loss, count) == (0.0, 0) and not _core.sasrec_buffers(m)[1].any()


# ---------------------------------------------------------------- save / load
@pytest.fixture(scope="module")
def saved(fitted, tmp_path_factory):
    d = tmp_path_factory.mktemp("sasrec") / "model"
    fitted.save(d)
    return d


@pytest.fixture
def copy(saved, tmp_path):
    """A fresh copy of the saved directory that a test may damage."""
    d = tmp_path / "m"
    shutil.copytree(saved, d)
    return d


def test_save_load_round_trip_gives_identical_results(toy, fitted, saved):
    assert sorted(p.name for p in saved.iterdir()) == sorted(SASRec._FILES + ("manifest.json",))
    loaded = SASRec.load(saved, dataset=toy)
    np.testing.assert_array_equal(loaded.item_embeddings_, fitted.item_embeddings_)
    ex = toy.examples("rec", "test")
    np.testing.assert_array_equal(loaded.score("rec", ex), fitted.score("rec", ex))
    hist = [[0, 1, 2], [], [5, 3]]
    np.testing.assert_array_equal(loaded.recommend(hist, k=5), fitted.recommend(hist, k=5))
    assert loaded.evaluate("test") == fitted.evaluate("test")
    for k in SASRec._PARAMS:
        assert getattr(loaded, k) == getattr(fitted, k) or (k == "kinds" and tuple(loaded.kinds) == fitted.kinds)
    assert loaded.history_ == fitted.history_ and loaded.best_epoch_ == fitted.best_epoch_
    assert loaded.loss_ == fitted.loss_


def test_loaded_without_dataset_scores_and_saves_again(toy, fitted, saved, tmp_path):
    loaded = SASRec.load(str(saved))
    ex = toy.examples("rec", "valid")
    np.testing.assert_array_equal(loaded.score("rec", ex, toy), fitted.score("rec", ex))
    with pytest.raises(RuntimeError, match="without its dataset"):
        loaded.score("rec", ex)
    with pytest.raises(RuntimeError, match="without its dataset"):
        loaded.evaluate("test")
    loaded.save(tmp_path / "again")  # the catalogue fingerprint survives a second save
    with pytest.raises(ValueError, match="catalogue"):
        SASRec.load(tmp_path / "again", dataset=datasets.toy(n_users=80, n_items=30, seed=1))


def test_loaded_model_retrains_from_scratch_like_a_new_one(toy, tmp_path):
    kw = dict(hidden=8, layers=1, max_len=6, epochs=2, eval_every=0, seed=5, show_progress=False)
    a = SASRec(**kw).fit(toy)
    a.save(tmp_path / "a")
    b = SASRec.load(tmp_path / "a").fit(toy)
    np.testing.assert_array_equal(b.item_embeddings_, SASRec(**kw).fit(toy).item_embeddings_)


def test_load_refuses_another_catalogue(saved, toy):
    with pytest.raises(ValueError, match="catalogue"):
        SASRec.load(saved, dataset=datasets.toy(n_users=80, n_items=30, seed=1))
    other = datasets.toy(n_users=80, n_items=40, n_topics=4, events_per_user=16, follow=0.95, seed=1)
    other.items = other.items.assign(item_id=other.items["item_id"].to_numpy()[::-1].copy())
    with pytest.raises(ValueError, match="other item ids"):
        SASRec.load(saved, dataset=other)
    with pytest.raises(TypeError, match="Dataset"):
        SASRec.load(saved, dataset=[1, 2])


def test_save_and_load_bad_paths(fitted, saved, tmp_path):
    with pytest.raises(RuntimeError, match="not fitted"):
        SASRec().save(tmp_path / "x")
    with pytest.raises(TypeError, match="path"):
        fitted.save(3)
    with pytest.raises(TypeError, match="path"):
        SASRec.load(None)
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(FileExistsError, match="not a directory"):
        fitted.save(f)
    with pytest.raises(FileNotFoundError, match="it is a file"):
        SASRec.load(f)
    with pytest.raises(FileNotFoundError, match="not a directory"):
        SASRec.load(tmp_path / "nothing")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="config.json is missing"):
        SASRec.load(empty)


@pytest.mark.parametrize("name", ["model.safetensors", "config.json", "fit_info.json"])
def test_corrupted_file_is_named(copy, name):
    raw = bytearray((copy / name).read_bytes())
    raw[len(raw) // 2] ^= 0x5A
    (copy / name).write_bytes(bytes(raw))
    with pytest.raises(ValueError, match=name.replace(".", r"\.") + " does not match the checksum"):
        SASRec.load(copy)


def test_truncated_or_missing_file_is_named(copy):
    raw = (copy / "model.safetensors").read_bytes()
    (copy / "model.safetensors").write_bytes(raw[:-8])
    with pytest.raises(ValueError, match=r"model\.safetensors has .* bytes"):
        SASRec.load(copy)
    (copy / "fit_info.json").unlink()
    with pytest.raises(FileNotFoundError, match="fit_info.json is missing"):
        SASRec.load(copy)


def test_bad_contents_behind_a_valid_manifest_are_named(copy):
    from safetensors.numpy import save_file

    from gensar._io import write_manifest

    def remanifest():
        write_manifest(copy, SASRec._FILES, SASRec._FORMAT, SASRec._FORMAT_VERSION)

    cfg = json.loads((copy / "config.json").read_text())
    (copy / "config.json").write_text(json.dumps(dict(cfg, hidden=33)))
    remanifest()
    with pytest.raises(ValueError, match=r"config\.json is corrupt or invalid.*divide"):
        SASRec.load(copy)
    (copy / "config.json").write_text(json.dumps(dict(cfg, hidden=16)))  # valid, other shape
    remanifest()
    with pytest.raises(ValueError, match=r"model\.safetensors: tensor 'item_embedding' is float32"):
        SASRec.load(copy)
    (copy / "config.json").write_text(json.dumps({k: v for k, v in cfg.items() if k != "lr"}))
    remanifest()
    with pytest.raises(ValueError, match=r"config\.json .*lr"):
        SASRec.load(copy)
    (copy / "config.json").write_text(json.dumps(cfg))
    (copy / "fit_info.json").write_text("{not json")
    remanifest()
    with pytest.raises(ValueError, match=r"fit_info\.json is corrupt"):
        SASRec.load(copy)
    (copy / "fit_info.json").write_text(json.dumps({"n_items": 40, "history": []}))
    from safetensors import safe_open

    with safe_open(str(copy / "model.safetensors"), framework="np") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    tensors["final_ln.bias"][1] = np.nan
    save_file(tensors, str(copy / "model.safetensors"))
    remanifest()
    with pytest.raises(ValueError, match=r"model\.safetensors: tensor 'final_ln.bias' holds NaN"):
        SASRec.load(copy)
    save_file({"item_embedding": np.full((41, 32), np.nan, np.float32)}, str(copy / "model.safetensors"))
    remanifest()
    with pytest.raises(ValueError, match=r"model\.safetensors does not hold the tensors"):
        SASRec.load(copy)
    (copy / "manifest.json").write_text("[")
    with pytest.raises(ValueError, match=r"manifest\.json is corrupt"):
        SASRec.load(copy)
