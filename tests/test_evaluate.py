import numpy as np
import pytest

from gensar import datasets
from gensar.baselines import BM25Search, Popularity
from gensar.evaluate import evaluate_scorer, generator_row, scorer_ranks


@pytest.fixture(scope="module")
def ds():
    return datasets.toy(n_users=40, n_items=120, seed=5)


def test_oracle_scorer_is_perfect_and_constant_scorer_is_random(ds):
    def oracle(task, ex):
        s = np.zeros((len(ex), ds.n_items))
        s[np.arange(len(ex)), ex["target"].to_numpy()] = 1.0
        return s

    perfect = evaluate_scorer(ds, oracle)
    assert (perfect["HR@1"] == 1.0).all() and (perfect["NDCG@10"] == 1.0).all()
    const = evaluate_scorer(ds, lambda task, ex: np.zeros((len(ex), ds.n_items)),
                            protocols=("full",), tasks=("rec",))
    # random guessing among 120 items: HR@10 near 10/120, certainly not 1
    assert const["HR@10"].iloc[0] < 0.3


def test_sampled_protocol_ranks_among_candidates(ds):
    ex = ds.examples("rec", "test")
    cand = ds.candidates("rec", "test")
    s = np.zeros((len(ex), ds.n_items))
    s[np.arange(len(ex))[:, None], cand[:, 1:]] = 1.0  # every negative beats the target
    ranks = scorer_ranks(ds, "rec", "test", s, "sampled")
    assert (ranks == cand.shape[1] - 1).all()


def test_baselines_run_on_both_protocols(ds):
    pop = Popularity().fit(ds)
    table = evaluate_scorer(ds, pop.score, method="popularity")
    assert set(zip(table["task"], table["protocol"])) == {
        ("rec", "sampled"), ("rec", "sampled-uniform"), ("rec", "full"), ("search", "sampled"),
        ("search", "full")}
    # Popularity is hard to beat with uniform negatives, weak against popular ones.
    rec = table[table["task"] == "rec"].set_index("protocol")
    assert rec.loc["sampled-uniform", "NDCG@10"] > rec.loc["sampled", "NDCG@10"]
    bm25 = BM25Search().fit(ds)
    with pytest.raises(ValueError, match="search queries only"):
        bm25.score("rec", ds.examples("rec", "test"))
    with pytest.raises(RuntimeError, match="fit"):
        Popularity().score("rec", ds.examples("rec", "test"))


def test_protocols_use_their_own_candidates_and_report_ranks(ds):
    ex = ds.examples("rec", "test")
    pop_cand = ds.candidates("rec", "test")
    uni_cand = ds.candidates("rec", "test", sampler="uniform")
    assert np.array_equal(pop_cand, ds.candidates("rec", "test", sampler="popularity"))
    assert not np.array_equal(pop_cand, uni_cand)
    s = np.zeros((len(ex), ds.n_items))
    s[np.arange(len(ex))[:, None], uni_cand[:, 1:]] = 1.0  # the uniform negatives beat the target
    s[np.arange(len(ex)), ex["target"].to_numpy()] = 0.5  # which beats every other item
    ranks = {}
    evaluate_scorer(ds, lambda task, e: s, tasks=("rec",), protocols=("sampled", "sampled-uniform"),
                    ranks_out=ranks)
    assert (ranks[("rec", "sampled-uniform")] == 99).all()
    shared = np.array([len(set(a[1:]) & set(b[1:])) for a, b in zip(pop_cand, uni_cand)])
    assert np.array_equal(ranks[("rec", "sampled")], shared)
    with pytest.raises(ValueError, match="does not apply"):
        scorer_ranks(ds, "search", "test", np.zeros((1, ds.n_items)), "sampled-uniform")


def test_generator_row_and_bad_input(ds):
    row = generator_row(np.array([[3, 1], [0, 2]]), np.array([1, 5]), "rec", "full", "test")
    assert row["HR@5"] == 0.5
    with pytest.raises(ValueError, match="split"):
        evaluate_scorer(ds, lambda t, e: None, split="train")
    with pytest.raises(ValueError, match="shape"):
        evaluate_scorer(ds, lambda t, e: np.zeros((1, 1)), tasks=("rec",))


def test_dense_search_with_tfidf_encoder(ds):
    from gensar.baselines import DenseSearch
    from gensar.embeddings import SentenceEncoder

    dense = DenseSearch(SentenceEncoder("tfidf").fit(ds.items["text"].tolist())).fit(ds)
    table = evaluate_scorer(ds, dense.score, tasks=("search",), method="dense")
    assert len(table) == 2 and table["HR@20"].between(0, 1).all()
    with pytest.raises(ValueError, match="search queries only"):
        dense.score("rec", ds.examples("rec", "test"))


def test_scorer_evaluated_in_chunks_equals_one_call(ds, monkeypatch):
    """evaluate_scorer scores cases in chunks (memory bounded by a budget, not by
    cases x items); the ranks do not depend on the chunk size."""
    import gensar.evaluate as ev

    calls = []

    def noisy(task, ex):
        calls.append(len(ex))
        s = np.round(np.random.default_rng(0).random((1, ds.n_items)), 1).repeat(len(ex), 0)
        s[np.arange(len(ex)), ex["target"].to_numpy()] += 0.05 * (ex["user"].to_numpy() % 7)
        return s  # ties (rounded scores) exercise the seeded tie-breaking per chunk

    whole, chunked = {}, {}
    evaluate_scorer(ds, noisy, ranks_out=whole)
    n_calls = len(calls)
    monkeypatch.setattr(ev, "_SCORE_BUDGET", 3 * ds.n_items)  # 3 cases per call
    evaluate_scorer(ds, noisy, ranks_out=chunked)
    assert len(calls) - n_calls > 2 * n_calls and max(calls[n_calls:]) == 3
    assert whole.keys() == chunked.keys()
    for k in whole:
        np.testing.assert_array_equal(whole[k], chunked[k])
