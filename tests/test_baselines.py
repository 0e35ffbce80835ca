"""The two-model baseline: BM25 candidates re-ranked by the user's SASRec score."""
import numpy as np
import pytest

from gensar import datasets
from gensar.baselines import BM25Search, BM25SASRecSearch
from gensar.embeddings import SASRec
from gensar.evaluate import evaluate_scorer, scorer_ranks
from gensar.metrics import metrics_from_ranks


@pytest.fixture(scope="module")
def world():
    # Topic-following users: SASRec knows which of the many same-genre items comes next,
    # which BM25 (same words for every item of a topic) cannot tell apart.
    ds = datasets.toy(n_users=100, n_items=120, n_topics=5, events_per_user=14, seed=3)
    sas = SASRec(hidden=32, max_len=8, epochs=10, lr=5e-3, eval_every=0, seed=0, show_progress=False).fit(ds)
    return ds, sas


def test_alpha_chosen_on_validation_and_personalisation_helps(world):
    ds, sas = world
    model = BM25SASRecSearch(sas).fit(ds)
    assert set(model.valid_curve_) == set(model.alphas)
    assert model.valid_curve_[model.alpha_] == max(model.valid_curve_.values())
    # alpha 0 is plain BM25 (same ranks as the BM25 baseline on every case)
    ex = ds.examples("search", "valid")
    bm25, s = model._parts(ex, ds)
    for protocol in ("sampled", "full"):
        assert np.array_equal(scorer_ranks(ds, "search", "valid", model._mix(bm25, s, 0.0), protocol),
                              scorer_ranks(ds, "search", "valid", BM25Search().fit(ds).score("search", ex),
                                           protocol))
    test = evaluate_scorer(ds, model.score, tasks=("search",), protocols=("sampled",))
    plain = evaluate_scorer(ds, BM25Search().fit(ds).score, tasks=("search",), protocols=("sampled",))
    assert model.alpha_ > 0
    assert test["NDCG@10"].iloc[0] > plain["NDCG@10"].iloc[0]


def test_candidates_stay_above_the_rest(world):
    ds, sas = world
    model = BM25SASRecSearch(sas, top_k=5, alphas=(1.0,)).fit(ds)
    ex = ds.examples("search", "test").iloc[:10]
    bm25, s = model._parts(ex, ds)
    mixed = model.score("search", ex)
    for row_b, row_m in zip(bm25, mixed):
        top = np.argsort(-row_b, kind="stable")[:5]
        rest = np.setdiff1d(np.arange(ds.n_items), top)
        if row_b[top[-1]] > row_b[rest].max():  # no BM25 tie at the cut
            assert row_m[top].min() > row_m[rest].max()
        assert np.array_equal(np.argsort(-row_m[rest], kind="stable"), np.argsort(-row_b[rest], kind="stable")) \
            or len(np.unique(row_b[rest])) < len(rest)


def test_rerank_bad_input(world):
    ds, sas = world
    with pytest.raises(ValueError, match="top_k"):
        BM25SASRecSearch(top_k=0)
    with pytest.raises(ValueError, match="alphas"):
        BM25SASRecSearch(alphas=(1.5,))
    with pytest.raises(RuntimeError, match="fit"):
        BM25SASRecSearch(sas).score("search", ds.examples("search", "test"))
    with pytest.raises(ValueError, match="search queries only"):
        BM25SASRecSearch(sas).fit(ds).score("rec", ds.examples("rec", "test"))
    other = datasets.toy(n_users=20, n_items=30, seed=1)
    with pytest.raises(ValueError, match="fitted on this dataset"):
        BM25SASRecSearch(sas).fit(other)
