"""Property-based misuse tests (hypothesis) over the public Python entry points:
metrics, from_pandas, the tokenizer, recommend / search argument handling on a
tiny fitted model, and save / load.

Each property runs twice: a short default run (a few dozen examples, part of
the default suite) and a `slow`-marked run with many more examples
(``pytest -m slow tests/test_properties.py``). The properties say what must hold
for ANY input: either a correct result or a clear ValueError / TypeError /
KeyError naming the argument, never another exception or a silent wrong answer.
"""
import json
import shutil
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, event, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from hypothesis.extra import numpy as hnp  # noqa: E402

import gensar  # noqa: E402
from gensar import datasets  # noqa: E402
from gensar.metrics import metrics_from_ranks, ranks_from_scores, target_ranks  # noqa: E402
from gensar.seq2seq import Seq2Seq  # noqa: E402
from gensar.tokenizer import IDLayout, Tokenizer, escape_text  # noqa: E402

from test_model import TINY, unique_ids  # noqa: E402

COMMON = dict(deadline=None, derandomize=True, print_blob=True,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                     HealthCheck.filter_too_much])


def twin(fast: int, slow: int, *given_args, **given_kwargs):
    """Two tests from one property: `fast` examples by default, `slow` under -m slow."""
    def deco(fn):
        quick = settings(max_examples=fast, **COMMON)(given(*given_args, **given_kwargs)(fn))
        many = pytest.mark.slow(settings(max_examples=slow, **COMMON)(given(*given_args, **given_kwargs)(fn)))
        return quick, many
    return deco


# ===================================================================== metrics
finite = st.floats(-1e6, 1e6, allow_nan=False, width=32)
score_values = st.one_of(finite, st.sampled_from([0.0, 1.0, -np.inf, np.inf]))


@st.composite
def scores_and_targets(draw, nan=False):
    b = draw(st.integers(1, 6))
    n = draw(st.integers(1, 12))
    elements = st.one_of(score_values, st.just(np.nan)) if nan else score_values
    scores = draw(hnp.arrays(np.float64, (b, n), elements=elements))
    targets = draw(hnp.arrays(np.int64, (b,), elements=st.integers(0, n - 1)))
    return scores, targets


def _ranks_match_brute_force(data):
    scores, targets = data
    ranks = ranks_from_scores(scores, targets)
    for i, t in enumerate(targets):
        s = scores[i]
        expect = sum(1 for j in range(len(s)) if s[j] > s[t] or (s[j] == s[t] and j < t))
        assert ranks[i] == expect
    assert ((ranks >= 0) & (ranks < scores.shape[1])).all()
    # the generator path (ranked lists) agrees with the scorer path
    order = np.argsort(-scores, axis=1, kind="stable")
    k = max(1, scores.shape[1] // 2)
    via_lists = target_ranks(order[:, :k], targets)
    np.testing.assert_array_equal(via_lists, np.where(ranks < k, ranks, -1))


test_ranks_match_brute_force, test_ranks_match_brute_force_slow = twin(60, 1000, scores_and_targets())(
    _ranks_match_brute_force)


def _nan_scores_never_rank(data):
    scores, targets = data
    if np.isnan(scores).any():
        event("has NaN")
        with pytest.raises(ValueError, match="NaN"):
            ranks_from_scores(scores, targets)
    else:
        event("no NaN")
        ranks_from_scores(scores, targets)


test_nan_scores_never_rank, test_nan_scores_never_rank_slow = twin(60, 1000, scores_and_targets(nan=True))(
    _nan_scores_never_rank)


def _metrics_bounded_and_monotone(ranks, ks):
    ranks = np.asarray(ranks, np.int64)
    m = metrics_from_ranks(ranks, ks)
    ks = sorted(ks)
    for a, b in zip(ks, ks[1:]):
        assert m[f"HR@{a}"] <= m[f"HR@{b}"]
    for k in ks:
        assert 0.0 <= m[f"HR@{k}"] <= 1.0
        assert m[f"HR@{k}"] == np.mean((ranks >= 0) & (ranks < k))
        if k > 1:
            assert 0.0 <= m[f"NDCG@{k}"] <= m[f"HR@{k}"] + 1e-12


test_metrics_bounded_and_monotone, test_metrics_bounded_and_monotone_slow = twin(
    60, 1000, st.lists(st.integers(-1, 50), min_size=1, max_size=30),
    st.lists(st.integers(1, 60), min_size=1, max_size=5, unique=True))(_metrics_bounded_and_monotone)


def _bad_ks_named(ks):
    try:
        metrics_from_ranks(np.array([0, 3]), ks)
    except (TypeError, ValueError) as exc:
        assert "ks" in str(exc)
        event(f"refused: {type(exc).__name__}")
        return
    event("accepted")


test_bad_ks_named, test_bad_ks_named_slow = twin(40, 500, st.one_of(
    st.lists(st.one_of(st.integers(-3, 30), st.floats(allow_nan=True), st.booleans(), st.text(max_size=2)),
             max_size=4),
    st.integers(-3, 5), st.none(), st.text(max_size=3)))(_bad_ks_named)


# ===================================================================== from_pandas
ids_int = st.integers(-(2**63), 2**63 - 1)
ids_uint = st.one_of(st.integers(2**63, 2**64 - 1), st.integers(0, 2**64 - 1))  # half above int64
ids_str = st.text(min_size=1, max_size=6)


@st.composite
def tables(draw):
    kind = draw(st.sampled_from(["int", "uint64", "str", "mixed"]))
    pool = {"int": ids_int, "uint64": ids_uint, "str": ids_str,
            "mixed": st.one_of(st.integers(-5, 5), ids_str)}[kind]
    item_pool = draw(st.lists(pool, min_size=1, max_size=6, unique=True))
    # most users get 3+ events (a valid leave-one-out), some fewer (must be refused)
    counts = draw(st.lists(st.integers(0, 7), min_size=0, max_size=4))
    users = [u for u, c in enumerate(counts) for _ in range(c)]
    rows = [(u, draw(st.sampled_from(item_pool)), draw(st.integers(0, 5))) for u in users]
    drop_item = draw(st.integers(0, 3)) == 0 and len(item_pool) > 1
    items_ids = item_pool[1:] if drop_item else item_pool

    def col(values):
        if kind == "uint64":
            return pd.Series(np.array(values, dtype=np.uint64))
        if kind == "int":
            return pd.Series(np.array(values, dtype=np.int64))
        return pd.Series(values, dtype=object)

    inter = pd.DataFrame({"user_id": pd.Series([r[0] for r in rows], dtype=np.int64),
                          "item_id": col([r[1] for r in rows]),
                          "timestamp": pd.Series([r[2] for r in rows], dtype=np.int64)})
    items = pd.DataFrame({"item_id": col(items_ids),
                          "title": draw(st.lists(st.one_of(st.text(max_size=8), st.none()),
                                                 min_size=len(items_ids), max_size=len(items_ids)))})
    return inter, items, draw(st.sampled_from(["raise", "drop"])), draw(st.integers(0, 3))


def _from_pandas_is_exact_or_refuses(data):
    inter, items, unknown, k = data
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # unknown_items="drop" warns by design
            ds = datasets.from_pandas(inter, items, unknown_items=unknown, min_user_events=k,
                                      min_item_events=min(k, 1))
    except (ValueError, TypeError) as exc:
        assert str(exc)  # a message, never an empty error
        event(f"refused: {type(exc).__name__}")
        return
    event("dataset built")
    # exact ids: every event's original id is the id of its dense item, no wrap or rounding
    orig = {(v if isinstance(v, str) else int(v)) for v in items["item_id"].tolist()}
    got = [(v if isinstance(v, str) else int(v)) for v in ds.items["item_id"].tolist()]
    assert set(got) <= orig and len(got) == len(set(got)) == ds.n_items
    ev_ids = [(v if isinstance(v, str) else int(v)) for v in ds.events["item_id"].tolist()]
    assert ev_ids == [got[i] for i in ds.events["item"].tolist()]
    assert set(ds.events["split"]) <= {"train", "valid", "test"}


test_from_pandas_is_exact_or_refuses, test_from_pandas_is_exact_or_refuses_slow = twin(60, 800, tables())(
    _from_pandas_is_exact_or_refuses)


# ===================================================================== tokenizer
ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789<>/_.,;!?-"


@pytest.fixture(scope="module")
def tok():
    text = " ".join(ALPHABET) + " hello world the quick brown fox"
    return Tokenizer.train([text, text], IDLayout((4,), (4,), (4,)), vocab_size=200)


def special(tok, ids):
    ids = np.asarray(ids, np.int64)
    return ids[(ids < tok.first_text_id) & (ids != tok.unk_id)]


controls = st.sampled_from(["</s>", "<pad>", "<unk>", "<a_0>", "<b_3>", "<c_1>", "<rec_item>", "<src_query>",
                            "<src_item>"])
any_text = st.lists(st.one_of(st.text(max_size=12), controls,
                              st.sampled_from(["\ud800", "\udfff", "\x00", "\ufffd", "  "])),
                    max_size=8).map("".join)


def _user_text_is_text_only(tok, text):
    ids = tok.encode_text(text)
    assert special(tok, ids).size == 0
    enc, mask = tok.encode([escape_text(text) or "x"], 400)
    body = enc[0, :mask[0].sum() - 1]
    assert special(tok, body).size == 0 and enc[0, mask[0].sum() - 1] == tok.eos_id


test_user_text_is_text_only, test_user_text_is_text_only_slow = twin(80, 2000, text=any_text)(
    _user_text_is_text_only)


plain_text = st.lists(st.one_of(st.text(alphabet=ALPHABET, min_size=1, max_size=12), st.just(" "), controls),
                      max_size=10).map("".join)


def _round_trip_keeps_the_text(tok, text):
    """Text of known characters comes back from decode(encode) unchanged, up to
    whitespace (the WordPiece decoder re-spaces punctuation)."""
    back = tok.decode(tok.encode_text(text))
    assert "".join(back.split()) == "".join(text.split())


test_round_trip_keeps_the_text, test_round_trip_keeps_the_text_slow = twin(80, 2000, text=plain_text)(
    _round_trip_keeps_the_text)


# ===================================================================== the fitted model
@pytest.fixture(scope="module")
def fitted():
    ds = datasets.toy(n_users=24, n_items=30, events_per_user=8, seed=1)
    model = gensar.GenSAR(**TINY).fit(ds, ids=unique_ids(ds.n_items), progress=False)
    return ds, model


k_values = st.one_of(st.integers(-3, 40), st.floats(allow_nan=True), st.booleans(), st.none(),
                     st.text(max_size=2), st.integers(2**31, 2**70))


def _recommend_k(fitted, k):
    ds, model = fitted
    try:
        out = model.recommend([[ds.items["item_id"].iloc[0]]], k=k, exclude_history=False)
    except (TypeError, ValueError) as exc:
        assert "k must be" in str(exc)
        assert not (isinstance(k, int) and not isinstance(k, bool) and k >= 1)
        event(f"refused: {type(exc).__name__}")
        return
    event("recommended")
    assert isinstance(k, int) and not isinstance(k, bool) and k >= 1
    assert len(out) == min(k, ds.n_items) and out["item_id"].is_unique
    assert set(out["item_id"]) <= set(ds.items["item_id"])


test_recommend_k, test_recommend_k_slow = twin(25, 300, k=k_values)(_recommend_k)


queries = st.one_of(st.lists(any_text, min_size=1, max_size=3), st.lists(any_text, min_size=1, max_size=3),
                    st.lists(st.one_of(any_text, st.integers(), st.none()), min_size=0, max_size=3))


def _search_queries(fitted, qs):
    ds, model = fitted
    try:
        inputs = model._search_inputs(qs)
    except TypeError as exc:
        assert "queries" in str(exc)
        assert not all(isinstance(q, str) for q in qs)
        event("refused: TypeError")
        return
    except ValueError as exc:
        assert "quer" in str(exc)
        assert not qs or any(not q.strip() for q in qs)
        event("refused: ValueError")
        return
    event("searched")
    tok = model.tokenizer_
    # the prompt's control tokens are the same whatever the user typed
    enc, mask = tok.encode(inputs, 400)
    for row, m in zip(enc, mask):
        assert special(tok, row[:m.sum() - 1]).size == 0
    out = model.search(qs, k=3)
    assert sorted(set(out["case"])) == list(range(len(qs)))
    assert set(out["item_id"]) <= set(ds.items["item_id"])


test_search_queries, test_search_queries_slow = twin(25, 300, qs=queries)(_search_queries)


def events(item_ids):
    real = st.sampled_from(item_ids)
    return st.one_of(real, st.integers(-5, 500), st.floats(allow_nan=True), st.none(), st.text(max_size=3),
                     st.tuples(st.sampled_from(["rec", "search", "click"]), real, any_text),
                     st.tuples(real), st.lists(real, max_size=2))


def _recommend_histories(fitted, data):
    ds, model = fitted
    item_ids = ds.items["item_id"].tolist()
    hist = data.draw(st.lists(st.lists(events(item_ids), max_size=4), min_size=0, max_size=3))
    try:
        out = model.recommend(hist, k=2)
    except KeyError as exc:
        assert "unknown item" in str(exc)
        event("refused: KeyError")
        return
    except (TypeError, ValueError) as exc:
        assert "histor" in str(exc)
        event(f"refused: {type(exc).__name__}")
        return
    event("recommended")
    assert sorted(set(out["case"])) == list(range(len(hist)))
    assert set(out["item_id"]) <= set(item_ids)


test_recommend_histories, test_recommend_histories_slow = twin(30, 300, data=st.data())(_recommend_histories)


# ===================================================================== save / load
@pytest.fixture(scope="module")
def saved(fitted, tmp_path_factory):
    d = tmp_path_factory.mktemp("prop") / "model"
    fitted[1].save(d)
    return d


damage = st.tuples(st.sampled_from(gensar.GenSAR._FILES), st.sampled_from(["truncate", "flip", "append", "empty"]),
                   st.floats(0.0, 1.0), st.integers(1, 255))


def _damaged_file_is_named(saved, how):
    rel, kind, frac, mask = how
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp) / "m"
        shutil.copytree(saved, d)
        p = d / rel
        raw = bytearray(p.read_bytes())
        pos = min(len(raw) - 1, int(frac * len(raw)))
        if kind == "truncate":
            raw = raw[:pos]
        elif kind == "flip":
            raw[pos] ^= mask
        elif kind == "append":
            raw += bytes([mask])
        else:
            raw = bytearray()
        p.write_bytes(bytes(raw))
        with pytest.raises((ValueError, FileNotFoundError)) as info:
            gensar.GenSAR.load(d)
        assert Path(rel).name in str(info.value)


test_damaged_file_is_named, test_damaged_file_is_named_slow = twin(20, 300, how=damage)(_damaged_file_is_named)


seq_configs = st.fixed_dictionaries({
    "vocab_size": st.integers(2, 40), "d_model": st.integers(1, 12), "d_kv": st.integers(1, 6),
    "d_ff": st.integers(1, 12), "num_layers": st.integers(1, 2), "num_decoder_layers": st.integers(1, 2),
    "num_heads": st.integers(1, 3), "feed_forward_proj": st.sampled_from(["relu", "gated-gelu"]),
    "tie_word_embeddings": st.booleans()})


def _seq2seq_round_trip(cfg, seed):
    m = Seq2Seq(cfg, seed=seed)
    with tempfile.TemporaryDirectory() as tmp:
        p = Path(tmp) / "m.safetensors"
        m.save(p)
        back = Seq2Seq.load(p)
        assert [q.name for q in Path(tmp).iterdir()] == ["m.safetensors"]
    np.testing.assert_array_equal(back.params, m.params)
    assert back.config == m.config
    x = np.array([[1, 0, 1]], np.int32) % cfg["vocab_size"]
    np.testing.assert_array_equal(back.logits(x, None, x), m.logits(x, None, x))


test_seq2seq_round_trip, test_seq2seq_round_trip_slow = twin(15, 200, cfg=seq_configs, seed=st.integers(0, 2**31))(
    _seq2seq_round_trip)


def _config_json_round_trip(settings_):
    """Any accepted config survives save -> JSON -> load unchanged; any refused one
    names a setting."""
    from dataclasses import asdict, fields

    try:
        c = gensar.GenSAR(**settings_).config
    except (TypeError, ValueError) as exc:
        names = {f.name for f in fields(gensar.model.GenSARConfig)}
        assert any(n in str(exc) for n in names | {"config"}), exc
        event(f"refused: {type(exc).__name__}")
        return
    event("accepted")
    back = gensar.model.GenSARConfig.from_dict(json.loads(json.dumps(asdict(c))))
    assert back == c


config_settings = st.dictionaries(
    st.sampled_from(["lr", "epochs", "batch_size", "max_grad_norm", "dropout_rate", "warmup", "shared_levels",
                     "specific_levels", "max_input_len", "max_target_len", "n_rec", "seed", "task_weights",
                     "metric", "num_beams"]),
    st.one_of(st.integers(-3, 300), st.integers(1, 40), st.floats(1e-4, 0.9), st.just("NDCG@10"),
              st.lists(st.integers(1, 9), min_size=1, max_size=3),
              st.floats(allow_nan=True, allow_infinity=True), st.booleans(), st.none(),
              st.text(max_size=3), st.lists(st.integers(-1, 9), max_size=3),
              st.dictionaries(st.sampled_from(["nrip", "nsip", "bogus"]), st.floats(-1, 2), max_size=2)),
    max_size=3)

test_config_json_round_trip, test_config_json_round_trip_slow = twin(60, 1500, settings_=config_settings)(
    _config_json_round_trip)
