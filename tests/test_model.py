"""The GenSAR estimator end to end on a tiny synthetic dataset (given IDs, tiny model)."""
import json
import numpy as np
import pandas as pd
import pytest

import gensar
from gensar import datasets

TINY = dict(d_model=32, num_layers=1, num_decoder_layers=1, num_heads=2, d_kv=16, d_ff=64,
            epochs=2, batch_size=32, vocab_size=150, valid_cases=10, num_beams=8, n_negatives=9,
            shared_levels=(6, 6), specific_levels=(6, 6), doc2query_epochs=1, max_input_len=48)


def unique_ids(n, seed=0):
    rng = np.random.default_rng(seed)
    sem = np.stack([rng.integers(0, 6, n), rng.integers(0, 6, n), np.arange(n) % 6, np.arange(n) // 6], 1)
    col = sem.copy()
    col[:, 2] = (np.arange(n) * 5) % 6
    return sem, col


def train_batches(monkeypatch) -> list:
    """The batches Seq2Seq.train_step is given from now on, in order (it still trains on them)."""
    seen = []
    real = gensar.Seq2Seq.train_step

    def spy(self, batch, lr=None):
        seen.append(batch)
        return real(self, batch, lr)

    monkeypatch.setattr(gensar.Seq2Seq, "train_step", spy)
    return seen


@pytest.fixture(scope="module")
def fitted():
    ds = datasets.toy(n_users=24, n_items=30, events_per_user=8, seed=1)
    model = gensar.GenSAR(**TINY).fit(ds, ids=unique_ids(ds.n_items), progress=False)
    return ds, model


def test_fit_trains_validates_and_evaluates(fitted):
    ds, model = fitted
    h = model.history_
    assert list(h["epoch"]) == [1, 2] and np.isfinite(h["loss"]).all()
    assert len(model.loss_curve_) == model.trainer_.state.step > 0  # every step of every epoch
    assert h["loss"].iloc[-1] < h["loss"].iloc[0]  # training reduces the loss
    assert {"rec_NDCG@10", "search_NDCG@10", "NDCG@10"} <= set(h.columns)
    table = model.evaluate("test", progress=False)
    assert set(zip(table["task"], table["protocol"])) == {
        ("rec", "sampled"), ("rec", "sampled-uniform"), ("rec", "full"), ("search", "sampled"),
        ("search", "full")}
    for (task, protocol), ranks in model.eval_ranks_.items():  # per-case ranks agree with the table
        row = table[(table["task"] == task) & (table["protocol"] == protocol)].iloc[0]
        assert len(ranks) == row["cases"] and np.mean((ranks >= 0) & (ranks < 10)) == row["HR@10"]
    assert ((table[["HR@1", "HR@10", "NDCG@10"]] >= 0) & (table[["HR@1", "HR@10", "NDCG@10"]] <= 1)).all().all()
    assert (table["HR@10"] >= table["HR@5"]).all()
    assert set(model.timings_) >= {"tokenizer", "doc2query", "train"}


def test_recommend_and_search_return_real_items(fitted, tmp_path):
    ds, model = fitted
    ids = ds.items["item_id"].tolist()
    rec = model.recommend([[ids[0], ids[3]], [("search", ids[1], "comedy"), ids[2]]], k=5)
    assert list(rec.columns) == ["case", "rank", "item_id", "title", "score"]
    assert set(rec["case"]) == {0, 1} and rec.groupby("case").size().tolist() == [5, 5]
    assert set(rec["item_id"]) <= set(ids)
    assert (rec.groupby("case")["score"].apply(lambda s: s.is_monotonic_decreasing)).all()
    src = model.search(["comedy", "drama war"], histories=[[ids[0]], None], k=4)
    assert src.groupby("case").size().tolist() == [4, 4]
    model.save(tmp_path / "m")
    back = gensar.GenSAR.load(tmp_path / "m")
    pd.testing.assert_frame_equal(back.recommend([[ids[0], ids[3]]], k=5),
                                  model.recommend([[ids[0], ids[3]]], k=5))


def test_gensar_bad_input(fitted, tmp_path):
    ds, model = fitted
    with pytest.raises(KeyError, match="unknown item"):
        model.recommend([["no-such-item"]])
    with pytest.raises(ValueError, match="non-empty strings"):
        model.search([""])
    with pytest.raises(ValueError, match="histories"):
        model.search(["a", "b"], histories=[[]])
    with pytest.raises(RuntimeError, match="not fitted"):
        gensar.GenSAR().recommend([[1]])
    with pytest.raises(ValueError, match="unknown GenSAR setting"):
        gensar.GenSAR(d_modle=3)
    with pytest.raises(ValueError, match="rec_id"):
        gensar.GenSAR(rec_id="textual")
    with pytest.raises(ValueError, match="share their first"):
        sem, col = unique_ids(ds.n_items)
        col[:, 0] = (col[:, 0] + 1) % 6
        gensar.GenSAR(**TINY).fit(ds, ids=(sem, col), progress=False)
    with pytest.raises(FileNotFoundError, match="GenSAR.save"):
        gensar.GenSAR.load(tmp_path / "missing")


def test_variants_get_equal_per_task_exposure(fitted):
    """The budget is per task, anchored on next-item examples: a variant that drops
    tasks keeps exactly the joint model's examples per epoch of the tasks it trains."""
    from gensar.tasks import REC_TASKS, REFERENCE_MIXTURE, SEARCH_TASKS, task_subset

    ds, model = fitted
    plans = {name: gensar.GenSAR(**dict(TINY, task_weights=w)).epoch_plan(ds) for name, w in
             (("joint", dict(REFERENCE_MIXTURE)), ("rec", task_subset(REC_TASKS)),
              ("search", task_subset(SEARCH_TASKS)))}
    n_nrip = int(((ds.events["kind"] == "rec") & (ds.events["split"] == "train")).sum())
    assert plans["joint"]["nrip"] == plans["rec"]["nrip"] == n_nrip and plans["search"]["nrip"] == 0
    for name, tasks in (("rec", REC_TASKS), ("search", SEARCH_TASKS)):
        for t in tasks:
            assert plans[name][t] == plans["joint"][t] > 0
    assert model.epoch_counts_ == plans["joint"]
    assert sum(model.epoch_counts_.values()) == sum(len(b["input_ids"]) for b in model.trainer_.make_epoch(0))
    anchored = gensar.GenSAR(**dict(TINY, examples_per_epoch=500)).epoch_plan(ds)
    assert anchored["nrip"] == 500 and anchored["nsip"] == round(500 * REFERENCE_MIXTURE["nsip"])


def test_fitted_input_length_cuts_no_training_input(fitted):
    from gensar.tasks import TEMPLATES, render

    ds, model = fitted
    assert model.config.max_input_len == 48  # TINY fixes it; fit one to the data here
    m = gensar.GenSAR(**dict(TINY, max_input_len=0, epochs=1, valid_cases=0))
    m.fit(ds, ids=unique_ids(ds.n_items), progress=False)
    for task, split in (("nrip", "train"), ("nsip", "train"), ("nrip", "test"), ("nsip", "valid")):
        ex = m.builder_.examples(task, split)
        for k in range(len(TEMPLATES[task])):
            lengths = [len(e.ids) + 1 for e in m.tokenizer_.backend.encode_batch(
                render(ex, template=k), add_special_tokens=False)]
            assert max(lengths) <= m.input_len_
    assert m._input_len() == m.input_len_


def test_pseudo_query_source_is_recorded_and_saved(fitted, tmp_path):
    ds, model = fitted
    assert model.pseudo_query_source_ == "dataset"  # the toy's searches are semi-synthetic
    q = model.pseudo_query_quality_["all searched"]
    assert q["exact_match"] == 1.0 and q["word_f1"] == 1.0
    model.save(tmp_path / "m")
    back = gensar.GenSAR.load(tmp_path / "m")
    assert back.pseudo_query_source_ == "dataset" and back.input_len_ == model._input_len()
    assert back.epoch_counts_ == model.epoch_counts_
    pd.testing.assert_frame_equal(back.history_, model.history_)  # the learning curve travels with the model
    with pytest.raises(ValueError, match="pseudo_query_source"):
        gensar.GenSAR(pseudo_query_source="bm25")
    with pytest.raises(ValueError, match="max_input_len"):
        gensar.GenSAR(max_input_len=1)
    with pytest.raises(ValueError, match="every task weight 0"):
        gensar.GenSAR(task_weights={"nrip": 0.0})


def _as_saved_before(directory, setting):
    """Makes a saved model look as if saved before `setting` existed: the key gone from
    its config.json, and no manifest (older saves had none)."""
    cfg_path = directory / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg.pop(setting, None)
    cfg_path.write_text(json.dumps(cfg))
    (directory / "manifest.json").unlink(missing_ok=True)


def test_item_bags_train_decode_and_save(fitted, monkeypatch, tmp_path):
    """item_bags=True: training batches and beam search read each identifier as one encoder
    position (input_ids (B, T, bag_width)); the model trains, evaluates, recommends, saves
    and loads with the setting, and refuses an HF export it could not be fed through."""
    ds, _ = fitted
    seen = train_batches(monkeypatch)
    model = gensar.GenSAR(**dict(TINY, item_bags=True, recency_embeddings=False))
    model.fit(ds, ids=unique_ids(ds.n_items), progress=False)
    K = model.tokenizer_.bag_width
    shapes = [b["input_ids"].shape for b in seen]
    assert shapes and all(len(s) == 3 and s[2] == K for s in shapes)
    assert model.history_["loss"].iloc[-1] < model.history_["loss"].iloc[0]
    table = model.evaluate("valid", protocols=("sampled",), progress=False)
    assert ((table["NDCG@10"] >= 0) & (table["NDCG@10"] <= 1)).all()
    rec = model.recommend([[0, 1, 2]], k=5)
    model.save(tmp_path / "m")
    back = gensar.GenSAR.load(tmp_path / "m")
    assert back.config.item_bags is True
    pd.testing.assert_frame_equal(back.recommend([[0, 1, 2]], k=5), rec)
    with pytest.raises(ValueError, match="item bags"):
        model.to_hf_t5(tmp_path / "hf")
    assert gensar.GenSARConfig().item_bags is True  # the default since the validation study
    # a bag model saved before recency embeddings existed had none: it loads without them
    _as_saved_before(tmp_path / "m", "recency_embeddings")
    with pytest.warns(UserWarning, match="no manifest.json"):
        old = gensar.GenSAR.load(tmp_path / "m")
    assert old.config.recency_embeddings is False
    pd.testing.assert_frame_equal(old.recommend([[0, 1, 2]], k=5), rec)
    # a model saved before item bags existed read identifiers as tokens: it loads so
    _as_saved_before(tmp_path / "m", "item_bags")
    with pytest.warns(UserWarning, match="no manifest.json"):
        assert gensar.GenSAR.load(tmp_path / "m").config.item_bags is False
    with pytest.raises(TypeError, match="item_bags must be True or False"):
        gensar.GenSAR(item_bags=1)


def test_recency_embeddings_add_input_only_tokens(fitted, monkeypatch, tmp_path):
    """recency_embeddings=True: every bag gets a recency slot, the model's vocabulary holds
    n_rec + n_search input-only tokens past the tokenizer's, it trains, decodes and
    saves so; without item bags the setting is refused."""
    ds, _ = fitted
    seen = train_batches(monkeypatch)
    model = gensar.GenSAR(**dict(TINY, item_bags=True, recency_embeddings=True))
    model.fit(ds, ids=unique_ids(ds.n_items), progress=False)
    V, R = model.tokenizer_.vocab_size, model.config.n_rec + model.config.n_search
    assert model.seq2seq_.config.vocab_size == V + R
    ids = np.concatenate([b["input_ids"].reshape(-1, b["input_ids"].shape[2]) for b in seen])
    assert ids.shape[1] == model.tokenizer_.bag_width + 1
    used = ids[:, -1][ids[:, -1] >= 0]
    assert used.min() == V and used.max() < V + R and len(np.unique(used)) > 1
    assert all(b["allowed"].shape[2] == V + R for b in seen)
    assert model.history_["loss"].iloc[-1] < model.history_["loss"].iloc[0]
    rec = model.recommend([[0, 1, 2]], k=5)
    model.save(tmp_path / "m")
    back = gensar.GenSAR.load(tmp_path / "m")
    pd.testing.assert_frame_equal(back.recommend([[0, 1, 2]], k=5), rec)
    with pytest.raises(ValueError, match="needs item_bags=True"):
        gensar.GenSAR(item_bags=False, recency_embeddings=True)
    # the default (None) follows item_bags, also in a config made from another one
    assert gensar.GenSARConfig().uses_recency is True and gensar.GenSARConfig().recency_embeddings is None
    assert gensar.GenSARConfig(item_bags=False).uses_recency is False
    assert gensar.GenSAR(gensar.GenSARConfig(), item_bags=False).config.uses_recency is False
    with pytest.raises(TypeError, match="recency_embeddings must be"):
        gensar.GenSAR(recency_embeddings="yes")
    # with the setting dropped from its config, this model's weights (a vocabulary with the
    # recency tokens) no longer match: refused, named
    _as_saved_before(tmp_path / "m", "recency_embeddings")
    with pytest.warns(UserWarning, match="no manifest.json"):
        with pytest.raises(ValueError, match="different saves"):
            gensar.GenSAR.load(tmp_path / "m")


def test_item_embeddings_add_one_input_token_per_item(fitted, monkeypatch, tmp_path):
    """item_embeddings=True: every identifier bag gets a slot holding its item's token
    (after the recency tokens), found from its codes whichever kind of identifier it is;
    text positions and items added after fit get none; it trains, decodes and saves so."""
    ds, _ = fitted
    seen = train_batches(monkeypatch)
    model = gensar.GenSAR(**dict(TINY, item_bags=True, item_embeddings=True))
    model.fit(ds, ids=unique_ids(ds.n_items), progress=False)
    V, R, N = model.tokenizer_.vocab_size, model.config.n_rec + model.config.n_search, ds.n_items
    assert model.seq2seq_.config.vocab_size == V + R + N
    ids = np.concatenate([b["input_ids"].reshape(-1, b["input_ids"].shape[2]) for b in seen])
    K = model.tokenizer_.bag_width
    assert ids.shape[1] == K + 2  # codes, recency, item
    opens = [model.tokenizer_.behaviour_ids[b] for b in ("<rec_item>", "<src_item>")]
    is_bag = np.isin(ids[:, 0], opens) & (ids[:, 1:K] >= 0).all(1)  # whole identifiers (inputs cut at
    # max_input_len may hold a part of one: no item token)
    assert (ids[~is_bag, -1] == -1).all() and (ids[is_bag, -1] >= V + R).all() and (ids[:, -1] < V + R + N).all()
    # each bag's item token is the item whose identifier (of the bag's kind) it holds
    tables = [model.tokenizer_.id_token_ids(kind, codes) for kind, codes in
              (("semantic", model.semantic_ids_), ("collaborative", model.collaborative_ids_))]
    for row in ids[is_bag][:200]:
        item = row[-1] - V - R
        assert any((t[item] == row[1:K]).all() for t in tables)
    assert len(np.unique(ids[is_bag, -1])) > N // 2
    assert all(b["allowed"].shape[2] == V + R + N for b in seen)
    assert model.history_["loss"].iloc[-1] < model.history_["loss"].iloc[0]
    rec = model.recommend([[0, 1, 2]], k=5)
    model.save(tmp_path / "m")
    back = gensar.GenSAR.load(tmp_path / "m")
    pd.testing.assert_frame_equal(back.recommend([[0, 1, 2]], k=5), rec)
    # an item the model never trained on has no item token: its bag keeps codes only
    sem, col = model.semantic_ids_, model.collaborative_ids_
    free = next(c for c in np.ndindex(*sem.max(0) + 1) if not (sem == c).all(1).any())
    model.semantic_ids_ = np.concatenate([sem, [free]])
    model.collaborative_ids_ = np.concatenate([col, [free]])
    builder = model.builder_
    model._refresh_builders()  # as add_items does
    tokens = model.tokenizer_.id_token_ids("semantic", model.semantic_ids_[[0, N]], behaviour="<rec_item>")
    bags = np.full((1, 2, K + 1), -1, np.int32)
    bags[0, :, :K] = tokens
    assert model._with_item_tokens(bags)[0, :, -1].tolist() == [V + R, -1]
    model.semantic_ids_, model.collaborative_ids_, model.builder_ = sem, col, builder
    with pytest.raises(ValueError, match="item_embeddings=True needs item_bags=True"):
        gensar.GenSAR(item_bags=False, item_embeddings=True)
    with pytest.raises(TypeError, match="item_embeddings must be True or False"):
        gensar.GenSAR(item_embeddings=None)
    # a model saved before the setting existed had no item tokens: it loads without them
    plain = gensar.GenSAR(**dict(TINY, item_bags=True)).fit(ds, ids=unique_ids(ds.n_items), progress=False)
    plain.save(tmp_path / "p")
    _as_saved_before(tmp_path / "p", "item_embeddings")
    with pytest.warns(UserWarning, match="no manifest.json"):
        assert gensar.GenSAR.load(tmp_path / "p").config.item_embeddings is False
    # this model's weights hold the item tokens: with the setting dropped it is refused, named
    _as_saved_before(tmp_path / "m", "item_embeddings")
    with pytest.warns(UserWarning, match="no manifest.json"):
        with pytest.raises(ValueError, match="item tokens"):
            gensar.GenSAR.load(tmp_path / "m")


def test_untied_embeddings_give_the_head_its_own_weights(fitted, tmp_path):
    """tie_embeddings=False (the default): the LM head has its own weights (so training moves
    it apart from the token embedding); the model trains, recommends, saves and loads so; a
    tied model saved before the setting existed loads tied; a config edited to the other
    setting is refused, named."""
    ds, _ = fitted
    model = gensar.GenSAR(**dict(TINY, tie_embeddings=False)).fit(ds, ids=unique_ids(ds.n_items), progress=False)
    params = model.seq2seq_.named_params()
    assert model.seq2seq_.config.tie_word_embeddings is False and "lm_head.weight" in params
    assert not np.allclose(params["lm_head.weight"], params["shared.weight"])
    assert model.history_["loss"].iloc[-1] < model.history_["loss"].iloc[0]
    rec = model.recommend([[0, 1, 2]], k=5)
    model.save(tmp_path / "m")
    back = gensar.GenSAR.load(tmp_path / "m")
    pd.testing.assert_frame_equal(back.recommend([[0, 1, 2]], k=5), rec)
    assert gensar.GenSARConfig().tie_embeddings is False  # the default since the validation study
    tied = gensar.GenSAR(**dict(TINY, tie_embeddings=True)).fit(ds, ids=unique_ids(ds.n_items), progress=False)
    assert "lm_head.weight" not in tied.seq2seq_.named_params()
    tied.save(tmp_path / "tied")  # saved before the setting existed: tied, and loads so
    _as_saved_before(tmp_path / "tied", "tie_embeddings")
    with pytest.warns(UserWarning, match="no manifest.json"):
        assert gensar.GenSAR.load(tmp_path / "tied").config.tie_embeddings is True
    with pytest.raises(TypeError, match="tie_embeddings must be True or False"):
        gensar.GenSAR(tie_embeddings="no")
    cfg = json.loads((tmp_path / "m" / "config.json").read_text())
    cfg["tie_embeddings"] = True
    (tmp_path / "m" / "config.json").write_text(json.dumps(cfg))
    (tmp_path / "m" / "manifest.json").unlink()
    with pytest.warns(UserWarning, match="no manifest.json"):
        with pytest.raises(ValueError, match="tie_embeddings=True"):
            gensar.GenSAR.load(tmp_path / "m")


def test_bare_prompts_train_with_task_words_only(fitted, monkeypatch, tmp_path):
    """prompts="bare": training and inference inputs are a task word and the fields, with
    no separators between history events; the model trains, recommends and saves so."""
    from gensar.tasks import BARE_TEMPLATES

    ds, _ = fitted
    texts = []
    real = gensar.GenSAR._encode_batches

    def spy(self, examples, inputs, batches):
        texts.extend(inputs)
        return real(self, examples, inputs, batches)

    monkeypatch.setattr(gensar.GenSAR, "_encode_batches", spy)
    model = gensar.GenSAR(**dict(TINY, prompts="bare")).fit(ds, ids=unique_ids(ds.n_items), progress=False)
    starts = tuple(t.split("{")[0] for v in BARE_TEMPLATES.values() for t in v)
    assert texts and all(t.startswith(starts) for t in texts)
    assert not any("; " in t for t in texts)  # no history separator
    assert any(t.count("<rec_item>") + t.count("<src_item>") >= 3 for t in texts)  # histories of several events
    assert any(t.startswith("recommend: <rec_item>") for t in texts)
    assert model._rec_inputs([[0, 1]])[0].startswith("recommend: <rec_item>")
    assert "; " not in model._rec_inputs([[0, 1]])[0]
    assert model.history_["loss"].iloc[-1] < model.history_["loss"].iloc[0]
    rec = model.recommend([[0, 1, 2]], k=5)
    model.save(tmp_path / "m")
    back = gensar.GenSAR.load(tmp_path / "m")
    assert back.config.prompts == "bare"
    pd.testing.assert_frame_equal(back.recommend([[0, 1, 2]], k=5), rec)
    assert gensar.GenSARConfig().prompts == "phrasings"
    with pytest.raises(ValueError, match="prompts must be one of"):
        gensar.GenSAR(prompts="short")


def test_constrained_softmax_trains_on_valid_codes_only(fitted, monkeypatch, tmp_path):
    """constrained_softmax=True: every training batch carries the catalogue-trie mask and the
    model still trains (loss falls) and decodes; the setting is saved with the model."""
    ds, _ = fitted
    seen = train_batches(monkeypatch)
    model = gensar.GenSAR(**dict(TINY, constrained_softmax=True)).fit(ds, ids=unique_ids(ds.n_items), progress=False)
    seen = [b.get("allowed") for b in seen]
    assert seen and all(a is not None and a.dtype == bool for a in seen)
    assert any((~a).any() for a in seen)  # some positions are constrained
    h = model.history_
    assert h["loss"].iloc[-1] < h["loss"].iloc[0]
    assert len(model.recommend([[0, 1, 2]], k=5)) == 5
    # the validation loss probe measures the loss the model trains: over the valid codes,
    # so below the same model's whole-vocabulary cross-entropy
    probe = model._builder(ds).examples("nrip", "valid")
    constrained = model._teacher_forced_loss(probe)
    model.config.constrained_softmax = False
    assert constrained < model._teacher_forced_loss(probe)
    model.config.constrained_softmax = True
    model.save(tmp_path / "m")
    assert gensar.GenSAR.load(tmp_path / "m").config.constrained_softmax is True
    # a model saved before the setting existed was trained with the full softmax: it loads so
    cfg_path = tmp_path / "m" / "config.json"
    cfg = json.loads(cfg_path.read_text())
    del cfg["constrained_softmax"]
    cfg_path.write_text(json.dumps(cfg))
    (tmp_path / "m" / "manifest.json").unlink()  # an old save (no manifest to check it against)
    with pytest.warns(UserWarning, match="no manifest.json"):
        assert gensar.GenSAR.load(tmp_path / "m").config.constrained_softmax is False
    assert gensar.GenSARConfig().constrained_softmax is True  # the default since the validation study
    with pytest.raises(TypeError, match="constrained_softmax must be True or False"):
        gensar.GenSAR(constrained_softmax="yes")
