"""datasets.amazon_like: Amazon Electronics' shape at a fraction of its size."""
import numpy as np
import pandas as pd
import pytest

from gensar import datasets
from gensar.datasets import AMAZON_ELECTRONICS as A


@pytest.fixture(scope="module")
def small():
    return datasets.amazon_like(0.004, seed=3)


def test_sizes_follow_the_fraction(small):
    ds = small
    kinds = ds.events["kind"].value_counts()
    for got, full in ((ds.n_users, A["users"]), (ds.n_items, A["items"]),
                      (kinds["rec"], A["rec"]), (kinds["search"], A["search"])):
        want = full * 0.004
        assert abs(got - want) / want < 0.08, (got, want)  # sampling noise of a few %
    assert ds.n_items == int(round(A["items"] * 0.004))   # every item survives the 5-core
    assert ds.n_users == int(round(A["users"] * 0.004))


def test_deterministic_per_seed(small):
    again = datasets.amazon_like(0.004, seed=3)
    pd.testing.assert_frame_equal(small.events, again.events)
    pd.testing.assert_frame_equal(small.items, again.items)
    other = datasets.amazon_like(0.004, seed=4)
    assert not np.array_equal(other.events["item"].to_numpy()[:200], small.events["item"].to_numpy()[:200])


def test_long_tail_and_k_core(small):
    ev = small.events
    pop = np.sort(np.bincount(ev["item"], minlength=small.n_items))[::-1]
    top = pop[: max(1, len(pop) // 20)].sum() / pop.sum()
    assert top > 0.25          # the top 5% of items hold far more than 5% of events
    assert pop.min() >= 5      # 5-core: every item and user keeps >= 5 events
    assert np.bincount(ev["user"]).min() >= 5
    per_user = len(ev) / small.n_users
    assert 13 < per_user < 18  # Electronics: 15.4 events per user


def test_queries_are_category_words(small):
    ev = small.events
    src = ev[ev["kind"] == "search"]
    q = small.items["synthetic_query"].to_numpy()[src["item"].to_numpy()]
    assert (src["query"].to_numpy() == q).all()
    cat = small.items["category"].iloc[0]
    assert small.items["synthetic_query"].iloc[0] == datasets._text.category_query(cat.split(" | "))
    assert cat.startswith("Electronics | ")
    # the item text carries the query words, as in the reference's Amazon data
    text = small.items["text"].iloc[0].lower()
    assert all(w in text for w in small.items["synthetic_query"].iloc[0].split())


def test_smallest_fraction_supports_the_sampled_protocol():
    ds = datasets.amazon_like(0.002, seed=1)  # 126 items: users' event counts are capped
    assert ds.candidates("rec", "test").shape[1] == 100


def test_sessions_and_protocol_work(small):
    ts = small.events.groupby("user")["timestamp"].diff().dropna().to_numpy()
    assert (ts < 3600).mean() > 0.3 and (ts > 86_400).mean() > 0.2  # bursts and long gaps
    cand = small.candidates("rec", "test")
    assert cand.shape == (len(small.examples("rec", "test")), 100)
    assert len(cand) > 0.8 * small.n_users  # most users have >= 3 recommendation events
    assert small.candidates("search", "test").shape[1] == 100


@pytest.mark.parametrize("kw, err, word", [
    (dict(fraction=0), ValueError, "fraction"), (dict(fraction=-1), ValueError, "fraction"),
    (dict(fraction=0.001), ValueError, "fraction"), (dict(fraction="1"), TypeError, "fraction"),
    (dict(fraction=float("nan")), ValueError, "fraction"), (dict(seed=-1), ValueError, "seed"),
    (dict(seed=1.5), TypeError, "seed"), (dict(zipf=-1), ValueError, "zipf"),
    (dict(favourite_share=2), ValueError, "favourite_share"),
    (dict(search_share=1.5), ValueError, "search_share"), (dict(min_events=2), ValueError, "min_events"),
])
def test_bad_arguments(kw, err, word):
    with pytest.raises(err, match=word):
        datasets.amazon_like(**kw)
