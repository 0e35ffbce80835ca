"""The serving path of recommend / search: the whole-catalogue trie and token table
cached on the model give the same answers as building them per call did, the cache
follows the catalogue (add_items, fit), the item-id lookup and the result frame;
and benchmarks/bench_serve.py on a tiny setting (slow)."""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import gensar
from gensar import datasets
from gensar.decode import Trie
from gensar.model import REC_ITEM, SRC_ITEM

ROOT = Path(__file__).resolve().parent.parent
TINY = dict(d_model=32, num_layers=1, num_decoder_layers=1, num_heads=2, d_kv=16, d_ff=64,
            epochs=1, batch_size=32, vocab_size=150, valid_cases=0, num_beams=8, n_negatives=9,
            shared_levels=(4, 4), specific_levels=(4, 4), id_epochs=30, doc2query_epochs=1,
            max_input_len=48)


def embeddings(n, seed):
    rng = np.random.default_rng(seed)
    topic = np.arange(n) % 8
    sem = np.eye(8, 16)[topic] * 3 + 0.3 * rng.standard_normal((n, 16))
    col = sem @ np.random.default_rng(99).standard_normal((16, 8)) / 4 + 0.1 * rng.standard_normal((n, 8))
    return sem.astype(np.float32), col.astype(np.float32)


@pytest.fixture(scope="module")
def fitted():
    ds = datasets.toy(n_users=30, n_items=40, n_topics=8, events_per_user=8, seed=3)
    sem, col = embeddings(40, 0)
    model = gensar.GenSAR(**TINY).fit(ds, semantic_embeddings=sem, collaborative_embeddings=col, progress=False)
    return ds, model


def fresh(model, task, inputs, k):
    """What GenSAR._decode did before the cache: token table and trie built for this call."""
    kind = model.config.rec_id if task == "rec" else model.config.search_id
    codes = model.semantic_ids_ if kind == "semantic" else model.collaborative_ids_
    table = model.tokenizer_.id_token_ids(kind, codes, behaviour=REC_ITEM if task == "rec" else SRC_ITEM)
    trie = Trie(table, vocab_size=model.tokenizer_.vocab_size)
    k = min(k, trie.n_paths)
    ids, mask = model._encode_inputs(inputs)  # tokens, or item bags (the default)
    return model.seq2seq_.beam_search(ids, mask, trie, num_beams=max(model.config.num_beams, k), top_k=k,
                                      renormalise=model.config.constrained_softmax)


def histories(ds, n):
    ev = ds.events
    return [ev.loc[ev["user"] == u, "item_id"].tolist()[:6] for u in range(n)]


def test_cached_trie_gives_the_answers_of_a_fresh_one(fitted):
    ds, model = fitted
    model.__dict__.pop("_target_cache", None)
    hist = histories(ds, 5)
    inputs = model._rec_inputs(hist)
    want_items, want_scores = fresh(model, "rec", inputs, 6)
    for _ in range(2):  # the first call builds the cache, the second uses it
        items, scores = model._decode("rec", inputs, 6)
        np.testing.assert_array_equal(items, want_items)
        np.testing.assert_array_equal(scores, want_scores)
    queries = ["story", "item news", "a b c", "film", "music"]
    s_inputs = model._search_inputs(queries, hist)
    want_items, want_scores = fresh(model, "search", s_inputs, 4)
    items, scores = model._decode("search", s_inputs, 4)
    np.testing.assert_array_equal(items, want_items)
    np.testing.assert_array_equal(scores, want_scores)
    # the public call returns those items (search keeps the history's items by default)
    out = model.search(queries, hist, k=4)
    ids = model.items_["item_id"].to_numpy()
    for case in range(5):
        got = out.loc[out["case"] == case]
        np.testing.assert_array_equal(got["item_id"].to_numpy(), ids[want_items[case]])
        np.testing.assert_allclose(got["score"].to_numpy(), want_scores[case].astype(np.float64))
    assert set(model._target_cache) == {"rec", "search"}


def test_cached_table_is_read_only_and_shared(fitted):
    _, model = fitted
    t1, trie1 = model._decode_target("rec")
    t2, trie2 = model._decode_target("rec")
    assert t1 is t2 and trie1 is trie2
    assert not t1.flags.writeable
    assert trie1.n_items == len(model.items_)


def test_cache_follows_add_items_and_refit(fitted, tmp_path):
    ds, model = fitted
    model.save(tmp_path / "m")
    m = gensar.GenSAR.load(tmp_path / "m", dataset=ds)
    before_table, before_trie = m._decode_target("search")
    m.recommend([[ds.items["item_id"].iloc[0]]], k=3)
    assert m._item_index([ds.items["item_id"].iloc[1]])[0] == 1
    sem, _ = embeddings(3, 7)
    new = pd.DataFrame({"item_id": [900, 901, 902], "title": ["new one", "new two", "new three"]})
    m.add_items(new, semantic_embeddings=sem)
    assert "_target_cache" not in m.__dict__ and "_item_lookup" not in m.__dict__
    table, trie = m._decode_target("search")
    assert trie is not before_trie and len(table) == len(before_table) + 3 == trie.n_items
    np.testing.assert_array_equal(table[:len(before_table)], before_table)  # published IDs never change
    # the new items are known to requests at once (history, candidates)
    assert m._item_index([901])[0] == len(ds.items) + 1
    out = m.search(["new"], [[900]], k=3, candidates=[900, 901, 902])
    assert set(out["item_id"]) <= {900, 901, 902} and len(out) == 3
    # refit drops the cache: it is keyed on arrays fit replaces
    m.fit(ds, semantic_embeddings=embeddings(40, 0)[0], collaborative_embeddings=embeddings(40, 0)[1],
          progress=False)
    assert "_target_cache" not in m.__dict__
    assert m._decode_target("rec")[1].n_items == len(ds.items)


def test_cache_rebuilt_when_ids_are_replaced(fitted):
    """Anything that assigns new ID arrays (not through fit / add_items) still gets a
    matching trie: the cache is keyed on the arrays' identity."""
    _, model = fitted
    table, trie = model._decode_target("rec")
    saved = model.collaborative_ids_
    try:
        model.collaborative_ids_ = saved.copy()
        table2, trie2 = model._decode_target("rec")
        assert trie2 is not trie
        np.testing.assert_array_equal(table2, table)
    finally:
        model.collaborative_ids_ = saved


def test_item_index_unknown_ids(fitted):
    ds, model = fitted
    ids = ds.items["item_id"].tolist()
    np.testing.assert_array_equal(model._item_index([ids[3], ids[0], ids[3]]), [3, 0, 3])
    with pytest.raises(KeyError, match="unknown item id"):
        model._item_index([ids[0], -12345])
    with pytest.raises(KeyError, match="unknown item id"):
        model.recommend([[ids[0], "no such item"]])


def result_frame_loop(model, items, scores, with_scores=True):
    """The per-row loop _result_frame was before it worked on whole arrays."""
    rows = []
    ids, titles = model.items_["item_id"].to_numpy(), model.items_["title"].to_numpy()
    for case, (its, scs) in enumerate(zip(items, scores)):
        for rank, (i, s) in enumerate(zip(its, scs)):
            if i >= 0:
                rows.append((case, rank + 1, ids[i], titles[i], float(s)))
    out = pd.DataFrame(rows, columns=["case", "rank", "item_id", "title", "score"])
    if len(out):
        out["item_id"] = out["item_id"].astype(model.items_["item_id"].dtype)
    return out if with_scores else out.drop(columns="score")


def test_result_frame_matches_the_row_loop(fitted, rng):
    _, model = fitted
    n = len(model.items_)
    items = rng.integers(0, n, size=(4, 5))
    items[1, 3:] = -1   # fewer than k allowed
    items[2, :] = -1    # none
    scores = np.where(items >= 0, -rng.random(items.shape) * 5, -np.inf).astype(np.float32)
    for with_scores in (True, False):
        got = model._result_frame(items, scores, with_scores)
        want = result_frame_loop(model, items, scores, with_scores)
        pd.testing.assert_frame_equal(got, want, check_dtype=True)
    empty = model._result_frame(np.full((2, 3), -1), np.full((2, 3), -np.inf, np.float32))
    assert list(empty.columns) == ["case", "rank", "item_id", "title", "score"] and len(empty) == 0


@pytest.mark.slow
def test_bench_serve_tiny(tmp_path):
    """benchmarks/bench_serve.py end to end on the toy catalogue: a saved toy model
    through --model, and the cheaply built synthetic serving model (built, then
    loaded from the cache on a second run)."""
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    from gensar.cli import PRESETS, _load_dataset

    ds = _load_dataset("toy")
    model = gensar.GenSAR(**dict(PRESETS["smoke"], epochs=1, examples_per_epoch=64, valid_cases=0)).fit(
        ds, ids=_spread_ids(ds), progress=False)
    model.save(tmp_path / "toy-model")
    args = [sys.executable, str(ROOT / "benchmarks" / "bench_serve.py"), "--catalogue", "toy",
            "--requests", "3", "--batches", "1", "2", "--min-calls", "2", "--warmup", "1",
            "--profile-rounds", "2", "--beams", "6", "--cache", str(tmp_path / "cache"),
            "--out", str(tmp_path / "out")]
    for extra, built in (([], "built the serving model"), (["--model", str(tmp_path / "toy-model"),
                                                             "--model-dataset", "toy"], "loaded the serving model")):
        r = subprocess.run(args + extra, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)
        assert r.returncode == 0, r.stderr[-3000:]
        assert built in r.stdout
    csv = pd.read_csv(tmp_path / "out" / "serve.csv")
    assert set(csv["catalogue"]) == {"toy"}  # the --model run: model-dataset toy + the toy catalogue
    assert len(csv) == 2 * 3 * 2  # 2 catalogues x 3 calls x 2 batch sizes
    assert (csv["p50_ms_request"] > 0).all() and (csv["p99_ms_call"] >= csv["p50_ms_call"]).all()
    assert (csv["threads"] == 1).all() and (csv["beams"] == 6).all()
    assert set(csv["kernel_path"]) == {gensar.cpu_info()["isa"]}
    md = (tmp_path / "out" / "serve.md").read_text()
    assert "Where the time of one recommend goes" in md and "encoder" in md and "Commit:" in md


def _spread_ids(ds):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import bench_serve
    finally:
        sys.path.pop(0)
    return bench_serve.spread_ids(ds, 0, codes=4, levels=4)


@pytest.mark.slow
def test_bench_serve_skips_ml100k_without_model(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_serve.py"), "--catalogue", "toy",
                        "--requests", "2", "--batches", "1", "--min-calls", "1", "--warmup", "0",
                        "--profile-rounds", "1", "--cache", str(tmp_path / "c"), "--out", str(tmp_path)],
                       capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "ml-100k catalogue skipped" in r.stdout
    assert "Skipped: ml-100k: no --model DIR given" in (tmp_path / "serve.md").read_text()
