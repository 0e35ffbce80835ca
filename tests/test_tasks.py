import numpy as np
import pytest

from gensar import datasets
from gensar.tasks import (REC_TASKS, REFERENCE_MIXTURE, SEARCH_TASKS, TASKS, TEMPLATES, TaskBuilder,
                          encode_batch, epoch_counts, epoch_mixture, mix, render, task_subset)
from gensar.tokenizer import IDLayout, Tokenizer


@pytest.fixture(scope="module")
def world():
    ds = datasets.toy(n_users=20, n_items=30, seed=3)
    layout = IDLayout((4, 4), (4, 4), (4, 4))
    texts = ds.items["text"].tolist() + [t for v in TEMPLATES.values() for t in v]
    tok = Tokenizer.train(texts, layout, vocab_size=300, min_frequency=1)
    rng = np.random.default_rng(0)
    sem = rng.integers(0, 4, (ds.n_items, 4))
    col = rng.integers(0, 4, (ds.n_items, 4))
    col[:, :2] = sem[:, :2]  # shared prefix
    return ds, tok, sem, col


def test_ten_phrasings_per_task():
    assert set(TEMPLATES) == set(TASKS)
    assert all(len(v) == 10 and len(set(v)) == 10 for v in TEMPLATES.values())


def test_history_uses_behaviour_tokens_and_keeps_the_latest(world):
    ds, tok, sem, col = world
    tb = TaskBuilder(ds, tok, sem, col, n_rec=2, n_search=1)
    ex = ds.examples("rec", "test")
    h = ex["history"].iloc[0]
    text = tb.history_text(h)
    kinds = [k for k, _, _ in ds.history_tuples(h)]
    items = [i for _, i, _ in ds.history_tuples(h)]
    assert text.count("<rec_item>") == min(2, kinds.count("rec"))
    assert text.count("<src_query>") == min(1, kinds.count("search"))
    last_rec = [i for k, i in zip(kinds, items) if k == "rec"][-1]
    assert "<rec_item>" + tok.id_strings("collaborative", col[[last_rec]])[0] in text


def test_targets_are_behaviour_token_id_and_eos(world):
    ds, tok, sem, col = world
    tb = TaskBuilder(ds, tok, sem, col)
    nrip = tb.examples("nrip", "train")
    row = nrip.iloc[0]
    assert row["target"][0] == tok.behaviour_ids["<rec_item>"]
    assert row["target"][1:-1] == tok.id_token_ids("collaborative", col[[row["item"]]])[0].tolist()
    assert row["target"][-1] == tok.eos_id
    nsip = tb.examples("nsip", "test")
    assert len(nsip) == len(ds.examples("search", "test"))
    assert all(t[0] == tok.behaviour_ids["<src_item>"] for t in nsip["target"])
    nsqp = tb.examples("nsqp", "train")
    assert (nsqp["item"] == -1).all()
    q = ds.examples("search", "train")["query"].iloc[0]
    assert tok.decode(nsqp["target"].iloc[0][1:]) == q


def test_allowed_mask_is_the_catalogue_trie_at_identifier_codes_only(world):
    ds, tok, sem, col = world
    tb = TaskBuilder(ds, tok, sem, col)
    tasks = np.array(["nrip", "nsip", "nsqp", "item2sem"])
    items = np.array([3, 7, -1, 11])
    T, V = 7, tok.vocab_size
    mask = tb.allowed_mask(tasks, items, T, V)
    assert mask.shape == (4, T, V) and mask.dtype == bool
    for b, (kind, ids) in {0: ("collaborative", col), 1: ("semantic", sem), 3: ("semantic", sem)}.items():
        path = tok.id_token_ids(kind, ids[[items[b]]])[0]
        every = tok.id_token_ids(kind, ids)  # (n_items, L): brute force over the catalogue
        assert mask[b, 0].all() and mask[b, 1 + len(path):].all()  # behaviour token, </s>, padding
        for lv in range(len(path)):
            same_prefix = (every[:, :lv] == path[:lv]).all(1)
            assert set(np.nonzero(mask[b, 1 + lv])[0]) == set(every[same_prefix, lv].tolist())
            assert mask[b, 1 + lv, path[lv]]  # the target itself is always allowed
    assert mask[2].all()  # a text target (next query) is not constrained


def test_item_tasks_and_pseudo_queries(world):
    ds, tok, sem, col = world
    tb = TaskBuilder(ds, tok, sem, col)
    pq = [["a query", ""] for _ in range(ds.n_items)]
    adhoc = tb.examples("adhoc", "train", pseudo_queries=pq)
    assert len(adhoc) == ds.n_items  # empty pseudo-queries skipped
    for task in ("item2sem", "item2col", "sem2item", "col2item"):
        assert len(tb.examples(task, "train")) == ds.n_items
    with pytest.raises(ValueError, match="pseudo_queries"):
        tb.examples("adhoc", "train")
    with pytest.raises(ValueError, match="training task only"):
        tb.examples("item2sem", "test")
    with pytest.raises(ValueError, match="task must be one of"):
        tb.examples("nope", "train")


def test_mixing_weights_and_rendering_are_seeded(world):
    ds, tok, sem, col = world
    tb = TaskBuilder(ds, tok, sem, col)
    parts = {"nrip": tb.examples("nrip", "train"), "item2sem": tb.examples("item2sem", "train")}
    a = mix(parts, {"item2sem": 0.5}, np.random.default_rng(1))
    b = mix(parts, {"item2sem": 0.5}, np.random.default_rng(1))
    assert (a["task"] == "item2sem").sum() == round(0.5 * ds.n_items)
    assert render(a, np.random.default_rng(2)) == render(b, np.random.default_rng(2))
    assert all("{" not in s for s in render(a))
    with pytest.raises(ValueError, match="nothing to train"):
        mix(parts, {"nrip": 0, "item2sem": 0}, np.random.default_rng(0))
    targets = a["target"].iloc[:8].tolist()
    batch = encode_batch(tok, render(a.iloc[:8]), targets, 64, 8)
    assert batch["input_ids"].shape == batch["attention_mask"].shape
    for row, t in zip(batch["labels"], targets):
        t = t[:8]
        assert row[:len(t)].tolist() == t and (row[len(t):] == -100).all()


def test_builder_bad_input(world):
    ds, tok, sem, col = world
    with pytest.raises(ValueError, match="one row per item"):
        TaskBuilder(ds, tok, sem[:-1], col)
    with pytest.raises(ValueError, match=">= 0"):
        TaskBuilder(ds, tok, sem, col, n_rec=-1)


def test_render_history_matches_dataset_rendering_and_ablation_kinds(world):
    ds, tok, sem, col = world
    tb = TaskBuilder(ds, tok, sem, col, n_rec=3, n_search=2)
    h = ds.examples("search", "test")["history"].iloc[0]
    assert tb.render_history(ds.history_tuples(h)) == tb.history_text(h)
    assert tb.render_history([]) == "(no history yet)"
    both_sem = TaskBuilder(ds, tok, sem, col, rec_id="semantic")
    t = both_sem.examples("nrip", "train").iloc[0]
    assert t["target"][1:-1] == tok.id_token_ids("semantic", sem[[t["item"]]])[0].tolist()
    assert "<e_" not in both_sem.history_text(h)  # no collaborative tail tokens anywhere
    lean = TaskBuilder.for_items(tok, sem, col)
    assert lean.render_history([("rec", 0, "")]).startswith("<rec_item>")
    with pytest.raises(RuntimeError, match="no dataset"):
        lean.examples("nrip", "train")


def test_rendered_inputs_have_no_unknown_tokens_and_keep_separators(world):
    ds, tok, sem, col = world
    tb = TaskBuilder(ds, tok, sem, col, n_rec=3, n_search=2)
    for task in ("nrip", "nsip"):
        ex = tb.examples(task, "test")
        inputs = render(ex)
        for text, h in zip(inputs, ds.examples("rec" if task == "nrip" else "search", "test")["history"]):
            enc = tok.backend.encode(text, add_special_tokens=False)
            assert tok.unk_id not in enc.ids
            n_events = len(tb._latest(tb._kind_is_rec[np.asarray(h, dtype=np.int64)]))
            assert enc.tokens.count(";") == max(0, n_events - 1)


def test_reference_mixture_shares():
    counts = epoch_counts(REFERENCE_MIXTURE, 930_000)
    total = sum(counts.values())
    assert 0.88 < counts["nrip"] / total < 0.91
    assert 0.09 < counts["nsip"] / total < 0.11
    for t in ("nsqp", "adhoc", "item2sem", "item2col", "sem2item", "col2item"):
        assert counts[t] / total < 0.01
    assert set(REC_TASKS) | set(SEARCH_TASKS) == set(TASKS) and not set(REC_TASKS) & set(SEARCH_TASKS)
    assert epoch_counts({"nrip": 1.0, "nsqp": 1e-9}, 10) == {"nrip": 10, "nsqp": 1}  # a kept task appears
    with pytest.raises(ValueError, match="anchor"):
        epoch_counts(REFERENCE_MIXTURE, 0)
    with pytest.raises(ValueError, match=">= 0"):
        epoch_counts({"nrip": -1.0}, 10)
    with pytest.raises(ValueError, match="unknown task"):
        task_subset(["nrip", "nope"])


def test_equal_per_task_exposure_across_variants(world):
    """The joint model and the single-side variants see, epoch after epoch, the same
    number of examples of every task they share, and the very same examples."""
    ds, tok, sem, col = world
    tb = TaskBuilder(ds, tok, sem, col)
    pq = [["a query"] for _ in range(ds.n_items)]
    parts = {t: tb.examples(t, "train", pseudo_queries=pq) for t in TASKS}
    weights = {"joint": dict(REFERENCE_MIXTURE), "rec": task_subset(REC_TASKS),
               "search": task_subset(SEARCH_TASKS)}
    anchor = 50
    for epoch in range(3):
        eps = {v: epoch_mixture(parts, epoch_counts(w, anchor), seed=4, epoch=epoch) for v, w in weights.items()}
        per_task = {v: e["task"].value_counts().to_dict() for v, e in eps.items()}
        for v, tasks in (("rec", REC_TASKS), ("search", SEARCH_TASKS)):
            assert set(per_task[v]) == set(tasks)
            for t in tasks:
                assert per_task[v][t] == per_task["joint"][t] == epoch_counts(weights["joint"], anchor)[t]
                same = sorted(map(str, eps[v].loc[eps[v]["task"] == t, "fields"]))
                assert same == sorted(map(str, eps["joint"].loc[eps["joint"]["task"] == t, "fields"]))
    assert per_task["joint"]["nrip"] == anchor


def test_epoch_stream_sees_every_example_before_repeating(world):
    from gensar.tasks import _stream_rows

    n, take = 10, 4
    rows = np.concatenate([_stream_rows(n, take, 0, "nrip", e) for e in range(5)])
    assert sorted(rows[:10]) == list(range(10)) and sorted(rows[10:20]) == list(range(10))
    assert not np.array_equal(rows[:10], rows[10:20])  # a fresh order each pass
    assert np.array_equal(_stream_rows(n, 25, 0, "nrip", 0)[:20], rows[:20])
    ds, tok, sem, col = world
    tb = TaskBuilder(ds, tok, sem, col)
    parts = {"nrip": tb.examples("nrip", "train")}
    take = len(parts["nrip"]) // 3 + 1
    a = epoch_mixture(parts, {"nrip": take}, seed=0, epoch=1)
    assert a.equals(epoch_mixture(parts, {"nrip": take}, seed=0, epoch=1))  # resumable: depends on epoch only
    with pytest.raises(ValueError, match="no examples"):
        epoch_mixture(parts, {"nsip": 3}, seed=0, epoch=0)
    with pytest.raises(ValueError, match="nothing to train"):
        epoch_mixture(parts, {"nrip": 0}, seed=0, epoch=0)


def test_length_grouped_batches_use_every_example_once_and_cut_padding():
    from gensar.tasks import length_grouped_batches

    rng = np.random.default_rng(0)
    lengths = rng.integers(5, 200, 1000)
    batches = length_grouped_batches(lengths, 16, np.random.default_rng(1), group=10)
    flat = np.concatenate(batches)
    assert sorted(flat.tolist()) == list(range(1000))
    assert all(len(b) <= 16 for b in batches)
    padded = sum(len(b) * lengths[b].max() for b in batches)
    plain = sum(16 * lengths[i:i + 16].max() for i in range(0, 1000, 16))
    assert padded < 0.8 * plain
    again = length_grouped_batches(lengths, 16, np.random.default_rng(1), group=10)
    assert all(np.array_equal(a, b) for a, b in zip(batches, again))  # seeded: resume sees the same batches
