"""Misuses of the public Python API (issue 15): each gets a clear error naming the
argument at fault, or a correct result; never a silent wrong answer or a raw
error from NumPy, pandas or the tokenizers library."""
import numpy as np
import pandas as pd
import pytest

import gensar
from gensar import datasets
from gensar.decode import Trie
from gensar.evaluate import evaluate_scorer
from gensar.generate import generate
from gensar.metrics import metrics_from_ranks, ranks_from_scores
from gensar.seq2seq import Seq2Seq
from gensar.tokenizer import Tokenizer, escape_text

from test_model import TINY, unique_ids


@pytest.fixture(scope="module")
def fitted():
    ds = datasets.toy(n_users=24, n_items=30, events_per_user=8, seed=1)
    model = gensar.GenSAR(**TINY).fit(ds, ids=unique_ids(ds.n_items), progress=False)
    return ds, model


def special_ids_of(tok, ids):
    """The ids among `ids` that are control tokens (pad, eos, behaviour, identifier)."""
    ids = np.asarray(ids).ravel()
    return ids[(ids < tok.first_text_id) & (ids != tok.unk_id)]


# ------------------------------------------------------------------ 1. NaN scores
def test_nan_scores_raise_instead_of_ranking_first():
    scores = np.full((3, 5), np.nan)
    with pytest.raises(ValueError, match=r"NaN in 3 of 3 case\(s\) \(first: case 0\)"):
        ranks_from_scores(scores, np.array([1, 2, 3]))
    partly = np.arange(15, dtype=float).reshape(3, 5)
    partly[2, 4] = np.nan
    with pytest.raises(ValueError, match=r"NaN in 1 of 3 case\(s\) \(first: case 2\)"):
        ranks_from_scores(partly, np.array([0, 0, 0]))
    # -inf still excludes an item: the target ranks behind every finite score
    ok = np.array([[-np.inf, 1.0, 2.0]])
    assert ranks_from_scores(ok, np.array([0])).tolist() == [2]


def test_evaluate_scorer_names_a_nan_scorer():
    ds = datasets.toy(n_users=30, n_items=120, seed=2)

    def nan_scorer(task, ex):
        return np.full((len(ex), ds.n_items), np.nan)

    with pytest.raises(ValueError, match=r"scorer 'broken' returned NaN scores for task 'rec'"):
        evaluate_scorer(ds, nan_scorer, tasks=("rec",), method="broken", n_neg=9)

    def short_scorer(task, ex):
        return np.zeros((len(ex), 3))

    with pytest.raises(ValueError, match=r"scorer 'short_scorer'.*shape"):
        evaluate_scorer(ds, short_scorer, tasks=("rec",), n_neg=9)
    with pytest.raises(TypeError, match="score_fn must be callable"):
        evaluate_scorer(ds, "pop", tasks=("rec",))
    with pytest.raises(ValueError, match=r"unknown protocol\(s\) \['sampeld'\]"):
        evaluate_scorer(ds, nan_scorer, protocols=("sampeld",))


def test_metric_cutoffs_named_ks():
    with pytest.raises(ValueError, match=r"ks\[0\] must be >= 1"):
        metrics_from_ranks(np.array([0, 1]), ks=(0,))
    with pytest.raises(TypeError, match=r"ks\[1\] must be an integer"):
        metrics_from_ranks(np.array([0, 1]), ks=(1, 2.5))
    with pytest.raises(TypeError, match="ranks must be integers"):
        metrics_from_ranks(np.array([0.5]))


# ------------------------------------------------------------------ 2. evaluate arguments
def test_evaluate_checks_protocols_tasks_ks_and_max_cases(fitted):
    _, model = fitted
    with pytest.raises(ValueError, match=r"unknown protocol\(s\) \['sampeld'\]; the protocols are \('sampled', "):
        model.evaluate(protocols=("sampeld",), progress=False)
    with pytest.raises(ValueError, match="unknown task"):
        model.evaluate(tasks=("recommend",), progress=False)
    for bad in (-1, 0):
        with pytest.raises(ValueError, match=f"max_cases must be >= 1, got {bad}"):
            model.evaluate(protocols=("sampled",), max_cases=bad, progress=False)
    for bad in (2.5, "3", True):
        with pytest.raises(TypeError, match="max_cases must be an integer"):
            model.evaluate(protocols=("sampled",), max_cases=bad, progress=False)
    with pytest.raises(ValueError, match=r"ks\[0\] must be >= 1"):
        model.evaluate(protocols=("sampled",), ks=(0,), progress=False)
    with pytest.raises(ValueError, match="split"):
        model.evaluate("train", progress=False)
    with pytest.raises(ValueError, match="no protocol of .* applies"):
        model.evaluate(protocols="sampled-uniform", tasks="search", progress=False)


def test_evaluate_max_cases_none_means_all_and_n_means_n(fitted):
    ds, model = fitted
    n_rec = len(ds.examples("rec", "test"))
    every = model.evaluate(protocols="sampled", tasks="rec", max_cases=None, progress=False)
    assert every["cases"].tolist() == [n_rec] and every["protocol"].tolist() == ["sampled"]
    three = model.evaluate(protocols=("sampled",), tasks=("rec",), max_cases=3, progress=False)
    assert three["cases"].tolist() == [3]


# ------------------------------------------------------------------ 3. control-token injection
INJECTIONS = ["</s>", "<pad>", "<unk>", "<a_1>", "<b_0><c_2>", "<rec_item>", "<src_query>",
              "<src_item>", "x</s>y", "<<pad>>", "</s></s></s>"]


@pytest.mark.parametrize("text", INJECTIONS)
def test_user_text_never_becomes_a_control_token(fitted, text):
    _, model = fitted
    tok = model.tokenizer_
    # search prompt without a history: every token must be text (the final </s> aside)
    ids, mask = tok.encode(model._search_inputs([f"comedy {text} drama"]), 200)
    body = ids[0, :mask[0].sum() - 1]
    assert special_ids_of(tok, body).size == 0, body
    # the escape gives the same text tokens the text would give without control tokens
    plain = tok.encode_text(text)
    assert special_ids_of(tok, plain).size == 0
    assert plain == tok.encode_text(text.replace("<", "< "))


def test_injection_in_history_queries_and_dataset_text(fitted):
    ds, model = fitted
    tok = model.tokenizer_
    item = ds.items["item_id"].iloc[0]
    # one legitimate search event: its behaviour tokens and ID are the only control tokens
    clean = model._rec_inputs([[("search", item, "comedy")]])
    dirty = model._rec_inputs([[("search", item, "comedy </s> <a_1> <rec_item>")]])
    n_clean = special_ids_of(tok, tok.encode(clean, 300)[0]).size
    n_dirty = special_ids_of(tok, tok.encode(dirty, 300)[0]).size
    assert n_clean == n_dirty > 0
    # text targets (queries, titles) built by the task builder hold text tokens only
    target = model.builder_.text_target_tokens("a <pad> title </s>")
    assert special_ids_of(tok, target[:-1]).size == 0 and target[-1] == tok.eos_id


def test_escape_text_type_check():
    assert escape_text("a<b") == "a< b"
    with pytest.raises(TypeError, match="text must be a string"):
        escape_text(3)


# ------------------------------------------------------------------ 4. lone surrogates
def test_lone_surrogate_is_replaced_not_a_type_error(fitted):
    _, model = fitted
    tok = model.tokenizer_
    ids, _ = tok.encode(["comedy \ud800 drama", "\udfff"], 40)
    ref, _ = tok.encode(["comedy \ufffd drama", "\ufffd"], 40)
    np.testing.assert_array_equal(ids, ref)
    out = model.search(["comedy \ud800"], k=3)
    assert len(out) == 3
    with pytest.raises(TypeError, match=r"texts\[1\] must be a string"):
        tok.encode(["ok", 5], 10)


# ------------------------------------------------------------------ 5. from_pandas / toy
def test_from_pandas_keeps_uint64_ids_exact():
    big = np.array([2**63 + 1, 2**63 + 7, 2**64 - 1], np.uint64)
    users = np.array([2**64 - 2, 5], np.uint64)
    inter = pd.DataFrame({"user_id": np.repeat(users, 3),
                          "item_id": np.tile(big, 2),
                          "timestamp": [1, 2, 3, 1, 2, 3]})
    items = pd.DataFrame({"item_id": big, "title": ["a", "b", "c"]})
    ds = datasets.from_pandas(inter, items, min_user_events=1, min_item_events=1)
    assert ds.items["item_id"].tolist() == sorted(int(v) for v in big)
    assert sorted(int(u) for u in ds.users) == sorted(int(u) for u in users)
    assert set(ds.events["item_id"].map(int)) == {int(v) for v in big}
    # a role mixing negative ids and ids >= 2**63 has no exact integer type
    with pytest.raises(ValueError, match=r"ids >= 2\*\*63.*negative ids"):
        datasets.from_pandas(inter.assign(item_id=np.tile(np.array([-1, 2, 3]), 2)), items,
                             min_user_events=1, min_item_events=1)


def test_from_pandas_clear_errors_name_the_column():
    items = pd.DataFrame({"item_id": [1, 2, 3], "title": ["a", "b", "c"]})
    inter = pd.DataFrame({"user_id": [1, 1, 1], "item_id": [1, 2, 3], "timestamp": [1, 2, 3]})
    kw = dict(min_user_events=1, min_item_events=1)
    with pytest.raises(ValueError, match=r"interactions is empty \(0 rows\)"):
        datasets.from_pandas(inter.iloc[:0], items, **kw)
    with pytest.raises(ValueError, match=r"interactions is empty \(0 rows\)"):
        datasets.from_pandas(pd.DataFrame(columns=["user_id", "item_id", "timestamp"]), items, **kw)
    with pytest.raises(ValueError, match=r"items is empty \(0 rows\)"):
        datasets.from_pandas(inter, items.iloc[:0], **kw)
    with pytest.raises(ValueError, match=r"missing column\(s\) \['timestamp'\]"):
        datasets.from_pandas(inter.drop(columns="timestamp"), items, **kw)
    with pytest.raises(TypeError, match=r"interactions\['item_id'\] must hold integers or strings.*float64"):
        datasets.from_pandas(inter.assign(item_id=[1.0, 2.0, 3.0]), items, **kw)
    with pytest.raises(TypeError, match=r"interactions\['timestamp'\] must be numeric"):
        datasets.from_pandas(inter.assign(timestamp=["a", "b", "c"]), items, **kw)
    with pytest.raises(TypeError, match="interactions must be a pandas DataFrame"):
        datasets.from_pandas(None, items, **kw)
    with pytest.raises(ValueError, match="search_share"):
        datasets.from_pandas(inter, items, search_share=True, **kw)


def test_toy_names_its_bad_argument():
    with pytest.raises(ValueError, match="n_users must be >= 1, got 0"):
        datasets.toy(n_users=0)
    with pytest.raises(TypeError, match="n_items must be an integer"):
        datasets.toy(n_items=80.5)
    with pytest.raises(ValueError, match="follow must be <= 1"):
        datasets.toy(follow=2.0)
    with pytest.raises(ValueError, match="n_items >= n_topics"):
        datasets.toy(n_items=3, n_topics=8)


# ------------------------------------------------------------------ 6. inference arguments
def test_recommend_and_search_arguments(fitted):
    ds, model = fitted
    ids = ds.items["item_id"].tolist()
    for bad in (2.9, True, "3", None):
        with pytest.raises(TypeError, match="k must be an integer"):
            model.recommend([[ids[0]]], k=bad)
    for bad in (0, -1):
        with pytest.raises(ValueError, match=f"k must be >= 1, got {bad}"):
            model.recommend([[ids[0]]], k=bad)
        with pytest.raises(ValueError, match="k must be >= 1"):
            model.search(["comedy"], k=bad)
    with pytest.raises(TypeError, match="queries must be a string or a list of strings, got int 123"):
        model.search(123)
    with pytest.raises(TypeError, match=r"queries\[1\] must be a string"):
        model.search(["comedy", 7])
    with pytest.raises(ValueError, match="queries is empty"):
        model.search([])
    with pytest.raises(ValueError, match="histories is empty"):
        model.recommend([])
    with pytest.raises(TypeError, match=r"histories\[0\] must be a list.*one user: pass"):
        model.recommend([ids[0], ids[1]])
    with pytest.raises(TypeError, match=r"histories\[0\]\[1\] must be an item id"):
        model.recommend([[ids[0], 1.5]])
    with pytest.raises(ValueError, match=r"histories\[0\]\[0\] must be an item id or a \(kind"):
        model.recommend([[("click", ids[0], "")]])
    with pytest.raises(ValueError, match=r"histories\[0\]\[0\]: the query of a search event"):
        model.recommend([[("search", ids[0], "")]])
    with pytest.raises(TypeError, match="histories must be a list"):
        model.recommend("1 2 3")
    # k larger than the catalogue returns every item once, no padding rows
    out = model.recommend([[ids[0]]], k=1000, exclude_history=False)
    assert len(out) == ds.n_items and out["item_id"].is_unique
    out = model.recommend([[ids[0]]], k=1000)  # by default without the history's item
    assert len(out) == ds.n_items - 1 and ids[0] not in set(out["item_id"])


def test_gensar_constructor_and_fit_misuse(fitted):
    ds, _ = fitted
    with pytest.raises(TypeError, match=r"config must be a GenSARConfig or a dict.*got str 'quick'.*PRESETS"):
        gensar.GenSAR("quick")
    with pytest.raises(TypeError, match="dataset must be a gensar.datasets.Dataset.*got NoneType"):
        gensar.GenSAR(**TINY).fit(None)
    with pytest.raises(TypeError, match="dataset must be a gensar.datasets.Dataset.*got DataFrame"):
        gensar.GenSAR(**TINY).fit(ds.events)
    with pytest.raises(TypeError, match="progress must be True or False"):
        gensar.GenSAR(**TINY).fit(ds, ids=unique_ids(ds.n_items), progress="no")


def test_generate_and_trie_misuse():
    m = Seq2Seq(dict(vocab_size=20, d_model=8, d_kv=4, d_ff=8, num_layers=1, num_heads=2))
    x = np.array([[3, 4, 1]], np.int32)
    with pytest.raises(ValueError, match=r"banned_ids holds 999, not a token id of this model: ids are in \[0, 20\)"):
        generate(m, x, np.ones_like(x), banned_ids=[999])
    with pytest.raises(ValueError, match="banned_ids holds -1"):
        generate(m, x, np.ones_like(x), banned_ids=[-1])
    with pytest.raises(TypeError, match="banned_ids must be integer"):
        generate(m, x, np.ones_like(x), banned_ids=[2.5])
    with pytest.raises(TypeError, match="max_new_tokens must be an integer"):
        generate(m, x, np.ones_like(x), max_new_tokens=2.5)
    out = generate(m, x, np.ones_like(x), max_new_tokens=3, banned_ids=list(range(1, 19)))
    assert all(t == 19 for t in out[0])  # everything else banned (0 is never emitted)
    with pytest.raises(ValueError, match="id_sequences must be a rectangular"):
        Trie([[1, 2], [3]])
    with pytest.raises(ValueError, match="id_sequences must be a rectangular"):
        Trie([[1, [2]], [3, 4]])


# ------------------------------------------------------------------ 7. settings that corrupt the task
@pytest.mark.parametrize("setting, error, message", [
    (dict(lr=float("inf")), ValueError, "lr must be finite"),
    (dict(lr=float("nan")), ValueError, "lr must be finite"),
    (dict(lr=0.0), ValueError, "lr must be > 0"),
    (dict(max_grad_norm=float("nan")), ValueError, "max_grad_norm must be finite"),
    (dict(max_grad_norm=-1.0), ValueError, "max_grad_norm must be >= 0"),
    (dict(epochs=-1), ValueError, "epochs must be >= 1, got -1"),
    (dict(epochs=2.5), TypeError, "epochs must be an integer"),
    (dict(batch_size=True), TypeError, "batch_size must be an integer"),
    (dict(max_input_len=1), ValueError, r"max_input_len must be 0 \(fit to the data\) or >= 2"),
    (dict(max_input_len=-1), ValueError, "max_input_len must be >= 0"),
    (dict(pseudo_query_source="web"), ValueError, "pseudo_query_source must be one of"),
    (dict(vocab_size=50), ValueError, "vocab_size must be >= 100"),
    (dict(dropout_rate=1.0), ValueError, r"dropout_rate must be in \[0, 1\)"),
    (dict(weight_decay=float("inf")), ValueError, "weight_decay must be finite"),
    (dict(warmup=1.5), ValueError, "warmup must be <= 1"),
    (dict(shared_levels=(6, 0)), ValueError, r"shared_levels\[1\] must be >= 1"),
    (dict(specific_levels=()), ValueError, "specific_levels must hold at least one"),
    (dict(task_weights={"nrip": -1.0}), ValueError, r"task_weights\['nrip'\] must be >= 0"),
    (dict(task_weights={"nrip": 0.0}), ValueError, "every task weight 0"),
    (dict(schedule="cosin"), ValueError, "schedule must be one of"),
    (dict(id_method="kmeans"), ValueError, "id_method must be one of"),
    (dict(seed=-3), ValueError, "seed must be >= 0"),
])
def test_config_refuses_settings_that_corrupt_the_task(setting, error, message):
    with pytest.raises(error, match=message):
        gensar.GenSAR(**setting)


def test_config_accepts_json_style_numbers():
    c = gensar.GenSAR({"lr": 1, "shared_levels": [8, 8], "epochs": np.int64(2), "max_grad_norm": 0}).config
    assert c.lr == 1.0 and isinstance(c.lr, float) and c.shared_levels == (8, 8) and c.epochs == 2
    assert type(c.epochs) is int


def test_fit_refuses_ids_and_lengths_that_corrupt_targets(fitted):
    ds, _ = fitted
    sem, col = unique_ids(ds.n_items)
    with pytest.raises(ValueError, match=r"max_target_len=5 is shorter than an identifier target: "
                                         r"1 behaviour token \+ 4 ID tokens \+ </s> = 6"):
        gensar.GenSAR(**{**TINY, "max_target_len": 5}).fit(ds, ids=(sem, col), progress=False)
    with pytest.raises(TypeError, match="semantic IDs must be integer level codes, got dtype float64"):
        gensar.GenSAR(**TINY).fit(ds, ids=(sem + 0.5, col), progress=False)
    with pytest.raises(ValueError, match="negative code"):
        gensar.GenSAR(**TINY).fit(ds, ids=(sem - 1, col - 1), progress=False)
    dup = sem.copy()
    dup[1] = dup[0]
    with pytest.raises(ValueError, match=r"semantic identifier\(s\) are shared by several items \(e.g. items \[0, 1\]"):
        gensar.GenSAR(**TINY).fit(ds, ids=(dup, col), progress=False)
    with pytest.raises(ValueError, match=r"shape \(n_items=30, L\)"):
        gensar.GenSAR(**TINY).fit(ds, ids=(sem[:-1], col[:-1]), progress=False)
    with pytest.raises(TypeError, match="ids must be a fitted gensar.DualIDs or a pair"):
        gensar.GenSAR(**TINY).fit(ds, ids=sem, progress=False)


def test_wrong_argument_names_fixed():
    m = Seq2Seq(dict(vocab_size=20, d_model=8, d_kv=4, d_ff=8, num_layers=1, num_heads=2))
    x = np.array([[3, 4, 1]], np.int32)
    # a bad label is reported as labels, not as the decoder inputs shifted from it
    with pytest.raises(ValueError, match=r"labels\[0, 0\] = 999: labels must be token ids"):
        m.train_step({"input_ids": x, "labels": np.array([[999, 1]])})
    with pytest.raises(ValueError, match=r"labels\[0, 1\] = -5"):
        m.train_step({"input_ids": x, "labels": np.array([[3, -5]])})
    for kw, msg in ((dict(lr=float("inf")), "lr must be finite"),
                    (dict(max_grad_norm=float("nan")), "max_grad_norm must be finite, got nan"),
                    (dict(betas=(0.9, 1.0)), r"betas\[1\] must be < 1.0, got 1.0"),
                    (dict(eps=0.0), "eps must be > 0.0, got 0.0")):
        with pytest.raises(ValueError, match=msg):
            Seq2Seq(dict(vocab_size=20, d_model=8, d_kv=4, d_ff=8, num_layers=1, num_heads=2), **kw)
    with pytest.raises(ValueError, match="learning rate from the schedule is nan"):
        Seq2Seq(dict(vocab_size=20, d_model=8, d_kv=4, d_ff=8, num_layers=1, num_heads=2),
                schedule=lambda step: float("nan")).train_step({"input_ids": x, "labels": np.array([[3, 1]])})


def test_cli_reports_user_errors_without_traceback(tmp_path, capsys):
    from gensar.cli import main

    cfg = tmp_path / "cfg.json"
    cfg.write_text('{"epochs": -2}')
    assert main(["train", "--config", str(cfg), "--out", str(tmp_path / "o")]) == 2
    assert "epochs must be >= 1, got -2" in capsys.readouterr().err
    cfg.write_text("{not json")
    assert main(["train", "--config", str(cfg), "--out", str(tmp_path / "o")]) == 2
    assert "is not valid JSON" in capsys.readouterr().err
    assert main(["evaluate", str(tmp_path / "none"), "--dataset", "toy"]) == 2
    assert "is not a directory written by GenSAR.save" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["run", "--threads", "-1"])


# ------------------------------------------------------------------ token ids are never truncated or wrapped
def test_token_ids_refused_not_truncated_or_wrapped(fitted):
    _, model = fitted
    t = Trie([[1, 2], [1, 3]])
    assert t.children([1]).tolist() == [2, 3]
    assert t.children(np.array([2**32 + 1])).size == 0  # not a prefix, never token 1
    assert t.children(np.array([2**64 - 1], np.uint64)).size == 0
    with pytest.raises(TypeError, match="prefix must hold integer token ids"):
        t.children([1.0])
    with pytest.raises(TypeError, match="seq must hold integer token ids"):
        t.lookup([1.7, 2])
    m = Seq2Seq(dict(vocab_size=20, d_model=8, d_kv=4, d_ff=8, num_layers=1, num_heads=2))
    cache = m.decode_cache(np.array([[3, 4]]))
    with pytest.raises(ValueError, match=r"tokens contains 4294967301; token ids must be in \[0, 20\)"):
        m.decode_step(cache, np.array([2**32 + 5]))
    with pytest.raises(TypeError, match="tokens must be integer token ids, got dtype float64"):
        m.decode_step(cache, np.array([3.7]))
    with pytest.raises(TypeError, match="rows_per_input must be an integer"):
        m.decode_cache(np.array([[3, 4]]), rows_per_input=2.9)
    tok = model.tokenizer_
    with pytest.raises(TypeError, match="ids must be integer token ids"):
        tok.decode([tok.first_text_id + 0.7])
    with pytest.raises(ValueError, match="not a token id"):
        tok.decode([tok.vocab_size])
    assert tok.decode([]) == ""


def test_fit_names_embeddings_of_the_wrong_size(fitted):
    ds, _ = fitted
    with pytest.raises(ValueError, match=r"semantic_embeddings must have shape \(n_items=30, dim\)"):
        gensar.GenSAR(**TINY).fit(ds, semantic_embeddings=np.zeros((29, 8), np.float32),
                                  collaborative_embeddings=np.zeros((30, 8), np.float32), progress=False)


def test_more_arguments_named():
    from gensar.metrics import target_ranks
    from gensar.tokenizer import IDLayout

    with pytest.raises(ValueError, match="targets must be item indices >= 0"):
        target_ranks(np.array([[3, -1]]), np.array([-1]))  # would "hit" the padding
    with pytest.raises(TypeError, match="ds must be a gensar.datasets.Dataset"):
        evaluate_scorer("ml-100k", lambda t, ex: None)
    with pytest.raises(TypeError, match=r"texts\[1\] must be a string"):
        Tokenizer.train(["a b c", 5], vocab_size=100)
    with pytest.raises(TypeError, match=r"IDLayout.shared\[0\] must be an integer"):
        IDLayout(shared=(2.5,))
    with pytest.raises(TypeError, match="checkpoint_dir must be None"):
        gensar.GenSAR(**TINY).fit(datasets.toy(n_users=24, n_items=30, events_per_user=8, seed=1),
                                  ids=unique_ids(30), checkpoint_dir=3, progress=False)


def test_save_into_a_missing_directory_names_it(tmp_path):
    m = Seq2Seq(dict(vocab_size=20, d_model=8, d_kv=4, d_ff=8, num_layers=1, num_heads=2))
    with pytest.raises(FileNotFoundError, match="the directory .*nowhere does not exist"):
        m.save(tmp_path / "nowhere" / "m.safetensors")
