"""Pseudo-queries: the dataset's own query text, and doc2query with early stopping."""
import numpy as np
import pandas as pd
import pytest

from gensar import datasets
from gensar.doc2query import (Doc2Query, dataset_queries, is_semi_synthetic, pseudo_query_quality,
                              quality_table)
from gensar.tasks import TEMPLATES
from gensar.tokenizer import IDLayout, Tokenizer


@pytest.fixture(scope="module")
def toy():
    return datasets.toy(n_users=40, n_items=40, n_topics=5, events_per_user=10, seed=2)


@pytest.fixture(scope="module")
def tok(toy):
    texts = toy.items["text"].tolist() + toy.events["query"].unique().tolist()
    return Tokenizer.train(texts, IDLayout((2,), (2,), (2,)), vocab_size=150, min_frequency=1)


def test_dataset_queries_semi_synthetic(toy):
    assert is_semi_synthetic(toy)
    pq = dataset_queries(toy)
    assert pq == [[q] for q in toy.items["synthetic_query"]]
    q = pseudo_query_quality(toy, pq)
    assert q["exact_match"] == 1.0 and q["word_f1"] == 1.0 and q["empty_share"] == 0.0
    assert q["distinct_queries"] == toy.items["synthetic_query"].nunique()
    with pytest.raises(ValueError, match="one list per item"):
        pseudo_query_quality(toy, pq[:-1])
    with pytest.raises(ValueError, match="n must be"):
        dataset_queries(toy, n=0)


def test_dataset_queries_real_log_are_most_frequent_training_queries():
    items = pd.DataFrame({"item_id": range(4), "title": ["a", "b", "c", "d"]})
    inter = pd.DataFrame({"user_id": [1] * 4 + [2] * 4, "item_id": [0, 1, 2, 3] * 2, "timestamp": range(8)})
    searches = pd.DataFrame({"user_id": [1] * 5 + [2] * 4, "item_id": [0, 0, 0, 1, 1, 0, 0, 2, 2],
                             "timestamp": range(10, 19),
                             "query": ["x", "y", "x", "z", "z", "y", "x", "w", "w"]})
    ds = datasets.from_pandas(inter, items, searches, min_user_events=1, min_item_events=1)
    assert not is_semi_synthetic(ds)
    pq = dataset_queries(ds, n=2)
    train = ds.events[(ds.events["kind"] == "search") & (ds.events["split"] == "train")]
    for i, qs in enumerate(pq):
        counts = train[train["item"] == i]["query"].value_counts()
        assert len(qs) == min(2, len(counts))
        if qs:
            assert counts[qs[0]] == counts.max()
    assert pq[3] == []


def test_doc2query_stops_when_held_out_loss_stops_falling(toy, tok):
    d2q = Doc2Query(tok, d_model=32, layers=1, epochs=40, patience=2, valid_share=0.25, batch_size=16,
                    lr=3e-3, seed=0, progress=False).fit(toy)
    h = d2q.history_
    assert len(d2q.valid_items_) > 0 and {"loss", "valid_loss"} <= set(h.columns)
    assert d2q.valid_loss_ == pytest.approx(h["valid_loss"].min())
    assert d2q.valid_loss_ < h["valid_loss"].iloc[0]  # it learned something that transfers
    assert d2q.best_epoch_ == int(np.argmin(h["valid_loss"].to_numpy())) + 1
    if len(h) < 40:  # stopped early: the last `patience` epochs did not improve
        assert (h["valid_loss"].iloc[-2:] >= d2q.valid_loss_).all()
    assert d2q.loss(d2q._batches([toy.items["text"].iloc[0]], [[5, 1]], [0])) > 0
    pq = d2q.generate(toy.items["text"].tolist(), n=2)
    assert len(pq) == toy.n_items and all(len(qs) == 2 for qs in pq)
    table = quality_table(toy, pq, d2q.valid_items_)
    assert list(table["items_set"]) == ["all searched", "held out"]
    assert table["word_f1"].between(0, 1).all()
    # The genre words are in the item text: a trained model recovers most of them.
    assert table["word_f1"].iloc[0] > 0.5


def test_doc2query_bad_input(tok, toy):
    with pytest.raises(ValueError, match="epochs"):
        Doc2Query(tok, epochs=0)
    with pytest.raises(ValueError, match="valid_share"):
        Doc2Query(tok, valid_share=1.0)
    with pytest.raises(RuntimeError, match="fit"):
        Doc2Query(tok).generate(["x"])
    no_search = datasets.toy(n_users=10, n_items=20, search_share=0.0, seed=1)
    with pytest.raises(ValueError, match="no training search"):
        Doc2Query(tok).fit(no_search)
