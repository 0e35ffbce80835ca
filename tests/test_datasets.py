"""Tests of gensar.datasets: loaders (every on-disk format), the protocol, bad inputs.

All fixtures are written by the tests into tmp_path; only the test marked
``network`` downloads anything (the real MovieLens 100K from the RecBole wheel).
"""

from __future__ import annotations

import gzip
import json
import os
import time
import zipfile

import numpy as np
import pandas as pd
import pytest

from gensar import datasets
from gensar.datasets import Dataset, from_pandas
from gensar.datasets._text import category_query, movielens_title, tokenize

# ----------------------------------------------------------------------------- fixtures

GENRES = ["Action", "Comedy", "Drama", "Romance", "Sci-Fi", "Children's"]


def toy_world(n_users=12, n_items=30, per_user=9, seed=0):
    """A small catalogue and interaction log with repeated timestamps.

    Returns (interactions, items) as from_pandas expects: items have title,
    category ("g1|g2") and description; every user rates ``per_user`` distinct items.
    """
    rng = np.random.default_rng(seed)
    items = pd.DataFrame({
        "item_id": np.arange(100, 100 + n_items),
        "title": [f"Movie {chr(65 + i % 26)}{i}" for i in range(n_items)],
        "category": ["|".join(sorted({GENRES[i % 6], GENRES[(i * 7 + 1) % 6]})) for i in range(n_items)],
        "description": [f"story number {i} about {GENRES[i % 6].lower()}" for i in range(n_items)],
    })
    rows = []
    for u in range(n_users):
        its = rng.choice(items["item_id"], size=per_user, replace=False)
        # Timestamps in pairs so equal-timestamp ties occur in every user's stream.
        for j, it in enumerate(its):
            rows.append((1000 + u, int(it), 10_000 + 60 * (j // 2)))
    return pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"]), items


def small_ds(seed=0, share=0.5, **kw):
    inter, items = toy_world()
    kw.setdefault("min_user_events", 3)
    kw.setdefault("min_item_events", 1)
    return from_pandas(inter, items, search_share=share, seed=seed, **kw)


def real_search_world():
    """Hand-made log with real queries; two users, multi-click search sessions."""
    items = pd.DataFrame({
        "item_id": ["a", "b", "c", "d", "e", "f"],
        "title": ["red running shoes", "blue running shoes", "red dress", "blue jeans",
                  "green hat", "red hat"],
    })
    inter = pd.DataFrame({
        "user_id": ["u1"] * 5 + ["u2"] * 4,
        "item_id": ["a", "b", "c", "d", "e", "a", "c", "e", "f"],
        "timestamp": [1, 3, 5, 7, 9, 1, 2, 3, 4],
    })
    searches = pd.DataFrame({
        "user_id": ["u1"] * 6 + ["u2"],
        "item_id": ["c", "f", "a", "b", "e", "f", "d"],
        "timestamp": [2, 2, 4, 6, 8, 8, 5],
        "query": ["red", "red", "running shoes", "shoes", "hat", "hat", "jeans"],
        "session_id": [1, 1, 2, 3, 4, 4, 9],
    })
    return inter, items, searches


# ---------------------------------------------------------------------- the Dataset class


def test_events_and_items_layout():
    ds = small_ds()
    ev = ds.events
    assert list(ev.columns[:7]) == ["user", "item", "timestamp", "kind", "query", "session", "split"]
    assert ev["user"].dtype == np.int64 and ev["item"].dtype == np.int64 and ev["session"].dtype == np.int64
    assert ev["user"].min() == 0 and ev["user"].max() == ds.n_users - 1
    assert set(ev["kind"]) == {"rec", "search"}
    assert set(ev["split"]) == {"train", "valid", "test"}
    assert (ev.loc[ev["kind"] == "rec", "query"] == "").all()
    assert (ev.loc[ev["kind"] == "search", "query"] != "").all()
    # Sorted by user, then time.
    key = ev[["user", "timestamp"]].to_numpy()
    assert (np.diff(key[:, 0]) >= 0).all()
    same_user = np.diff(key[:, 0]) == 0
    assert (np.diff(key[:, 1])[same_user] >= 0).all()
    assert list(ds.items.index) == list(range(ds.n_items))
    assert {"item_id", "title", "text", "category", "synthetic_query"} <= set(ds.items.columns)
    # Dense ids map back to the originals.
    assert (ds.items["item_id"].to_numpy()[ev["item"]] == ev["item_id"].to_numpy()).all()
    assert (ds.users[ev["user"]] == ev["user_id"].to_numpy()).all()
    assert ds.seed == 0 and "Dataset(" in repr(ds)


def test_ties_do_not_depend_on_row_order():
    inter, items = toy_world()
    a = from_pandas(inter, items, search_share=0.5, min_user_events=3, min_item_events=1)
    shuffled = inter.sample(frac=1.0, random_state=3)
    b = from_pandas(shuffled, items.sample(frac=1.0, random_state=4), search_share=0.5,
                    min_user_events=3, min_item_events=1)
    pd.testing.assert_frame_equal(a.events, b.events)
    pd.testing.assert_frame_equal(a.items, b.items)


def test_equal_timestamps_ordered_by_kind_then_item():
    items = pd.DataFrame({"item_id": ["a", "b", "c", "d"], "title": ["w", "x", "y", "z"]})
    inter = pd.DataFrame({"user_id": ["u"] * 3, "item_id": ["d", "b", "c"], "timestamp": [5, 5, 1]})
    searches = pd.DataFrame({"user_id": ["u"] * 2, "item_id": ["c", "a"], "timestamp": [5, 5],
                             "query": ["q", "q"]})
    ds = from_pandas(inter, items, searches, min_user_events=1, min_item_events=1)
    # t=1 first; at t=5 recs (b, d by item) precede the search session's clicks (a, c).
    assert list(ds.events["item_id"]) == ["c", "b", "d", "a", "c"]
    assert list(ds.events["kind"]) == ["rec", "rec", "rec", "search", "search"]


def test_k_core_is_iterative():
    # Item 3 has one event (from user 4), so it goes; that leaves user 4 with 2 events
    # < 3, so user 4 goes in the second round. Users 0-3 and items 0-2 remain.
    inter = pd.DataFrame({
        "user_id": [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3, 4, 4, 4],
        "item_id": [0, 1, 2] * 4 + [2, 3, 0],
        "timestamp": np.arange(15),
    })
    items = pd.DataFrame({"item_id": [0, 1, 2, 3], "title": ["w", "x", "y", "z"]})
    ds = from_pandas(inter, items, min_user_events=3, min_item_events=2)
    assert ds.users.tolist() == [0, 1, 2, 3]
    assert ds.items["item_id"].tolist() == [0, 1, 2]
    assert len(ds.events) == 12


def test_leave_one_out_per_task():
    ds = small_ds()
    ev = ds.events
    for (u, kind), g in ev.groupby(["user", "kind"]):
        sessions = g.drop_duplicates("session")
        if len(sessions) >= 3:
            assert sessions["split"].iloc[-1] == "test"
            assert sessions["split"].iloc[-2] == "valid"
            assert (sessions["split"].iloc[:-2] == "train").all()
        else:
            assert (g["split"] == "train").all()


def test_multi_click_session_is_one_split_unit():
    inter, items, searches = real_search_world()
    ds = from_pandas(inter, items, searches, min_user_events=1, min_item_events=1)
    src = ds.events[(ds.events["user_id"] == "u1") & (ds.events["kind"] == "search")]
    assert src["session"].nunique() == 4
    test_rows = src[src["split"] == "test"]
    assert sorted(test_rows["item_id"]) == ["e", "f"]  # both clicks of the last session
    ex = ds.examples("search", "test")
    u1 = ex[ex["user"] == int(np.flatnonzero(ds.users == "u1")[0])]
    assert len(u1) == 2
    # Neither click sees the other: history stops before the session's first event.
    for h in u1["history"]:
        assert not set(h) & set(test_rows.index)
    # u2 has one search session only: no search evaluation for u2.
    assert (ds.events[(ds.events["user_id"] == "u2") & (ds.events["kind"] == "search")]["split"] == "train").all()


def test_history_rule_by_split():
    ds = small_ds()
    ev = ds.events
    code = ev["split"].map({"train": 0, "valid": 1, "test": 2}).to_numpy()
    for split, allowed in (("train", {0}), ("valid", {0, 1}), ("test", {0, 1, 2})):
        for task in ("rec", "search"):
            ex = ds.examples(task, split)
            assert len(ex) > 0
            for _, row in ex.iterrows():
                h = row["history"]
                assert h.dtype == np.int64
                assert (np.diff(h) > 0).all()  # oldest first
                assert set(code[h]) <= allowed
                assert (ev["user"].to_numpy()[h] == row["user"]).all()
                assert (h < row["event"]).all()
                # Test examples see *every* earlier event of the user (both kinds).
                if split == "test":
                    earlier = np.flatnonzero((ev["user"].to_numpy() == row["user"])
                                             & (np.arange(len(ev)) < row["event"]))
                    assert np.array_equal(h, earlier)
                assert row["history_len"] == len(h)
            assert (ex["target"].to_numpy() == ev["item"].to_numpy()[ex["event"]]).all()
    sex = ds.examples("search", "test")
    assert (sex["query"] != "").all()
    assert "query" not in ds.examples("rec", "test").columns


def test_max_history_and_history_tuples():
    ds = small_ds()
    full = ds.examples("rec", "test")
    short = ds.examples("rec", "test", max_history=2)
    for a, b in zip(full["history"], short["history"]):
        assert np.array_equal(a[-2:], b)
    tuples = ds.history_tuples(full["history"].iloc[0])
    assert len(tuples) == len(full["history"].iloc[0])
    kind, item, query = tuples[0]
    assert kind in ("rec", "search") and isinstance(item, int) and isinstance(query, str)


@pytest.mark.parametrize("sampler", ["popularity", "uniform"])
def test_rec_candidates(sampler):
    ds = small_ds()
    for split in ("valid", "test"):
        ex = ds.examples("rec", split)
        cand = ds.candidates("rec", split, n_neg=5, sampler=sampler)
        assert cand.shape == (len(ex), 6) and cand.dtype == np.int64
        assert np.array_equal(cand[:, 0], ex["target"].to_numpy())
        seen = ds.events.groupby("user")["item"].apply(set)
        for u, row in zip(ex["user"], cand):
            assert len(set(row)) == 6
            assert not set(row[1:]) & seen[u]
            assert ((row >= 0) & (row < ds.n_items)).all()


def popularity_world(n_users=300, n_items=120, per_user=8, seed=0):
    """Zipf-like item popularity: item i is chosen with weight 1 / (i + 1)."""
    rng = np.random.default_rng(seed)
    p = 1.0 / np.arange(1, n_items + 1)
    rows = []
    for u in range(n_users):
        its = rng.choice(n_items, size=per_user, replace=False, p=p / p.sum())
        rows += [(u, int(i), t) for t, i in enumerate(its)]
    inter = pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"])
    items = pd.DataFrame({"item_id": range(n_items), "title": [f"t{i}" for i in range(n_items)]})
    return from_pandas(inter, items, min_user_events=1, min_item_events=1)


def test_popularity_sampler_follows_training_popularity():
    """One negative per case: its law is exactly popularity restricted to the items the
    user never saw, so observed counts over many seeds pass a chi-square test against
    the expected counts; the uniform sampler fails it, and its counts do not follow
    popularity."""
    stats = pytest.importorskip("scipy.stats")
    ds = popularity_world()
    w = ds.item_popularity()
    train = ds.events[ds.events["split"] == "train"]
    assert np.array_equal(w, np.bincount(train["item"], minlength=ds.n_items))
    ex = ds.examples("rec", "test")
    seen = np.zeros((ds.n_users, ds.n_items), bool)
    seen[ds.events["user"], ds.events["item"]] = True
    free_w = np.where(seen[ex["user"]], 0.0, w[None, :])
    seeds = range(40)
    expected = len(seeds) * (free_w / free_w.sum(1, keepdims=True)).sum(0)
    observed = {s: np.zeros(ds.n_items) for s in ("popularity", "uniform")}
    for sampler in observed:
        for seed in seeds:
            cand = ds.candidates("rec", "test", n_neg=1, seed=seed, sampler=sampler)
            assert not seen[ex["user"], cand[:, 1]].any()  # never a seen item (nor the target)
            np.add.at(observed[sampler], cand[:, 1], 1)
    assert observed["popularity"][w == 0].sum() == 0
    keep = expected > 5  # chi-square needs enough expected counts per cell: pool the rest
    rest = ~keep & (expected > 0)

    def cells(counts):
        return np.r_[counts[keep], counts[rest].sum()] if rest.any() else counts[keep]

    assert keep.sum() > 50
    assert stats.chisquare(cells(observed["popularity"]), cells(expected)).pvalue > 1e-3
    assert stats.chisquare(cells(observed["uniform"]), cells(expected)).pvalue < 1e-6
    assert np.corrcoef(observed["popularity"], expected)[0, 1] > 0.98
    assert np.corrcoef(observed["popularity"], w)[0, 1] > 0.6
    assert np.corrcoef(observed["uniform"], w)[0, 1] < 0


def test_popularity_sampler_many_negatives_and_fallback():
    ds = popularity_world()
    w = ds.item_popularity()
    ex = ds.examples("rec", "test")
    seen = ds.events.groupby("user")["item"].apply(set)
    cand = ds.candidates("rec", "test", n_neg=20)
    for u, row in zip(ex["user"], cand):
        assert len(set(row)) == 21 and not set(row[1:]) & seen[u]
    # Popular items are negatives far more often than rare ones, even without
    # replacement (the uniform sampler does the opposite: popular items are seen more).
    counts = np.bincount(cand[:, 1:].ravel(), minlength=ds.n_items)
    uni = np.bincount(ds.candidates("rec", "test", n_neg=20, sampler="uniform")[:, 1:].ravel(),
                      minlength=ds.n_items)
    top, bottom = np.argsort(-w)[:10], np.argsort(-w)[-30:]
    assert counts[top].mean() > 4 * counts[bottom].mean()
    assert uni[top].mean() < uni[bottom].mean()
    # Weights concentrated on one user's seen items force the exact fallback path,
    # which must still exclude the seen items and complete with weight-0 items.
    code = 2  # test split
    u0 = ex.iloc[:1]
    mine = np.array(sorted(seen[int(u0["user"].iloc[0])]))
    skew = np.zeros(ds.n_items)
    skew[mine] = 1e9
    free = np.setdiff1d(np.arange(ds.n_items), mine)
    skew[free[:3]] = 1.0  # only 3 unseen items have positive weight
    row = ds._rec_negatives(u0, 10, 0, code, skew)[0]
    assert set(free[:3]) <= set(row[1:]) and not set(row[1:]) & set(mine) and len(set(row)) == 11


def test_rec_candidates_when_user_saw_most_items():
    # 15 items, the user saw 10: the fallback path samples the 5 left exactly.
    inter = pd.DataFrame({"user_id": [1] * 10 + [2] * 5, "item_id": list(range(10)) + list(range(10, 15)),
                          "timestamp": list(range(10)) + list(range(5))})
    items = pd.DataFrame({"item_id": range(15), "title": [f"t{i}" for i in range(15)]})
    ds = from_pandas(inter, items, min_user_events=1, min_item_events=1)
    cand = ds.candidates("rec", "test", n_neg=5)
    u1 = int(np.flatnonzero(ds.users == 1)[0])
    row = cand[ds.examples("rec", "test")["user"].to_numpy() == u1][0]
    assert sorted(row[1:]) == list(range(10, 15))
    with pytest.raises(ValueError, match="lower n_neg"):
        ds.candidates("rec", "test", n_neg=6)


def test_search_candidates_are_bm25_hard_negatives():
    ds = small_ds()
    from gensar.datasets._bm25 import BM25Ranker
    ranker = BM25Ranker(ds.items["text"].tolist())
    ex = ds.examples("search", "test")
    cand = ds.candidates("search", "test", n_neg=10)
    assert cand.shape == (len(ex), 11)
    assert np.array_equal(cand[:, 0], ex["target"].to_numpy())
    for q, t, row in zip(ex["query"], ex["target"], cand):
        assert t not in row[1:] and len(set(row)) == 11
        s = ranker.scores(q)
        neg = s[row[1:]]
        assert (np.diff(neg) <= 1e-9).all()  # best first
        # Nothing left out scores better than the worst negative kept.
        others = np.setdiff1d(np.arange(ds.n_items), row)
        assert s[others].max() <= neg.min() + 1e-9
        assert neg[0] > 0  # the hardest negative shares a query word


def test_candidates_cached_and_read_only():
    ds = small_ds()
    a = ds.candidates("rec", "test", n_neg=10)
    assert a is ds.candidates("rec", "test", n_neg=10)
    with pytest.raises(ValueError):
        a[0, 0] = 1


def test_semi_synthetic_search_rule():
    inter, items = toy_world()
    none = from_pandas(inter, items, search_share=0.0, min_user_events=3, min_item_events=1)
    assert (none.events["kind"] == "rec").all()
    every = from_pandas(inter, items, search_share=1.0, min_user_events=3, min_item_events=1)
    assert (every.events["kind"] == "search").all()
    # The query is the item's synthetic_query: its category words.
    q = every.items["synthetic_query"].to_numpy()[every.events["item"]]
    assert (every.events["query"].to_numpy() == q).all()
    assert every.items.loc[every.items["category"] == "Children's|Sci-Fi", "synthetic_query"].iloc[0] \
        == "children s sci fi"
    half = small_ds(share=0.5)
    share = (half.events["kind"] == "search").mean()
    assert 0.3 < share < 0.7
    # Each synthetic search is its own one-click session.
    src = half.events[half.events["kind"] == "search"]
    assert src["session"].is_unique


def test_items_without_category_never_become_searches():
    inter, items = toy_world()
    items.loc[items["item_id"] == 100, "category"] = ""
    ds = from_pandas(inter, items, search_share=1.0, min_user_events=3, min_item_events=1)
    assert (ds.events.loc[ds.events["item_id"] == 100, "kind"] == "rec").all()


def test_determinism_same_seed_same_data_different_seed_different():
    a, b, c = small_ds(seed=7), small_ds(seed=7), small_ds(seed=8)
    pd.testing.assert_frame_equal(a.events, b.events)
    for task in ("rec", "search"):
        for split in ("train", "valid", "test"):
            pd.testing.assert_frame_equal(a.examples(task, split), b.examples(task, split))
            assert np.array_equal(a.candidates(task, split, n_neg=10), b.candidates(task, split, n_neg=10))
    # A different seed changes which events are searches, hence splits and candidates.
    assert not a.events["kind"].equals(c.events["kind"])
    assert not a.events["split"].equals(c.events["split"])
    # The candidate seed alone changes rec negatives but never the target column.
    r1, r2 = a.candidates("rec", "test", n_neg=10), a.candidates("rec", "test", n_neg=10, seed=99)
    assert np.array_equal(r1[:, 0], r2[:, 0]) and not np.array_equal(r1, r2)


def test_stats():
    ds = small_ds()
    st = ds.stats()
    assert st.index.tolist() == [ds.name]
    row = st.iloc[0]
    ev = ds.events
    assert row["users"] == ds.n_users and row["items"] == ds.n_items
    assert row["rec_interactions"] + row["search_interactions"] == len(ev)
    assert row["search_sessions"] == ev.loc[ev["kind"] == "search", "session"].nunique()
    assert row["distinct_queries"] == ev.loc[ev["kind"] == "search", "query"].nunique()
    assert row["mean_events_per_user"] == pytest.approx(len(ev) / ds.n_users)
    # Category words are part of the item text here, so every query word overlaps.
    assert row["query_item_overlap"] == pytest.approx(1.0)


def test_text_helpers():
    assert tokenize("Sci-Fi, Children's 1990s!") == ["sci", "fi", "children", "s", "1990s"]
    assert category_query(["Electronics", "Cases & Sleeves", "Cases"]) == "electronics cases sleeves"
    assert movielens_title("Shawshank Redemption, The (1994)") == ("The Shawshank Redemption", 1994)
    assert movielens_title("City of Lost Children, The (Cité des enfants perdus, La) (1995)") == \
        ("The City of Lost Children (Cité des enfants perdus, La)", 1995)
    assert movielens_title("Toy Story") == ("Toy Story", None)


# ------------------------------------------------------------------------ on-disk loaders

ML_TITLES = ["Toy Story (1995)", "Usual Suspects, The (1995)", "Amélie (2001)", "Heat (1995)",
             "Alien (1979)", "Babe (1995)"]
ML_GENRES = [["Animation", "Children's", "Comedy"], ["Crime", "Thriller"], ["Comedy", "Romance"],
             ["Action", "Crime"], ["Horror", "Sci-Fi"], ["Children's", "Drama"]]


def ml_ratings(n_users=6):
    """(user, item, rating, timestamp) rows: each user rates every item once."""
    rows = []
    for u in range(1, n_users + 1):
        for i in range(1, len(ML_TITLES) + 1):
            rows.append((u, i, (u + i) % 5 + 1, 880000000 + 100 * u + 10 * ((i + u) % len(ML_TITLES))))
    return rows


def write_recbole(folder):
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "ml-100k.inter", "w", encoding="utf-8") as fh:
        fh.write("user_id:token\titem_id:token\trating:float\ttimestamp:float\n")
        for r in ml_ratings():
            fh.write("\t".join(map(str, r)) + "\n")
    with open(folder / "ml-100k.item", "w", encoding="utf-8") as fh:
        fh.write("item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n")
        for i, (t, g) in enumerate(zip(ML_TITLES, ML_GENRES), 1):
            title, year = movielens_title(t)
            fh.write(f"{i}\t{title.replace('The ', '', 1) + ', The' if title.startswith('The ') else title}"
                     f"\t{year}\t{' '.join(g)}\n")
    with open(folder / "ml-100k.user", "w", encoding="utf-8") as fh:
        fh.write("user_id:token\tage:token\tgender:token\toccupation:token\tzip_code:token\n")
        for u in range(1, 7):
            fh.write(f"{u}\t30\tF\tother\t00000\n")
    return folder


def write_u_data(folder):
    from gensar.datasets.loaders import ML100K_GENRES
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "u.data", "w", encoding="latin-1") as fh:
        for r in ml_ratings():
            fh.write("\t".join(map(str, r)) + "\n")
    with open(folder / "u.item", "w", encoding="latin-1") as fh:
        for i, (t, g) in enumerate(zip(ML_TITLES, ML_GENRES), 1):
            year = t[-5:-1]
            flags = "|".join("1" if name in g else "0" for name in ML100K_GENRES)
            fh.write(f"{i}|{t}|01-Jan-{year}||http://example.invalid/{i}|{flags}\n")
    return folder


def write_ml1m(folder):
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "ratings.dat", "w", encoding="latin-1") as fh:
        for r in ml_ratings():
            fh.write("::".join(map(str, r)) + "\n")
    with open(folder / "movies.dat", "w", encoding="latin-1") as fh:
        for i, (t, g) in enumerate(zip(ML_TITLES, ML_GENRES), 1):
            fh.write(f"{i}::{t}::{'|'.join(g)}\n")
    return folder


def write_ml_latest(folder):
    folder.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(ml_ratings(), columns=["userId", "movieId", "rating", "timestamp"]).assign(
        rating=lambda d: d["rating"] - 0.5).to_csv(folder / "ratings.csv", index=False)
    genres = ["|".join(g) for g in ML_GENRES]
    genres[4] = "(no genres listed)"
    pd.DataFrame({"movieId": range(1, 7), "title": ML_TITLES, "genres": genres}).to_csv(
        folder / "movies.csv", index=False)
    return folder


@pytest.mark.parametrize("writer", [write_recbole, write_u_data, write_ml1m, write_ml_latest])
def test_movielens_layouts(tmp_path, writer):
    folder = writer(tmp_path / "ml")
    inter, items = datasets.read_movielens(folder)
    assert len(inter) == 36 and inter["user_id"].dtype == np.int64
    assert inter["timestamp"].dtype == np.int64
    it = items.set_index("item_id")
    assert it.at[2, "title"] == "The Usual Suspects"
    assert it.at[3, "title"] == "Amélie"  # latin-1 / utf-8 decoded correctly
    assert it.at[1, "year"] == 1995
    assert it.at[1, "text"] == "Toy Story. Genres: Animation, Children's, Comedy. Year: 1995."
    assert it.at[1, "synthetic_query"] == "animation children comedy 1990s"
    if writer is write_ml_latest:
        assert it.at[5, "synthetic_query"] == "1970s"  # "(no genres listed)" is no genre
    ds = datasets.load_movielens(folder, min_user_events=3, min_item_events=1, seed=1)
    assert isinstance(ds, Dataset) and ds.n_users == 6 and ds.n_items == 6
    assert ds.examples("rec", "test").shape[0] > 0
    # All layouts describe the same data, so they give the same protocol.
    if writer is not write_recbole:
        ref = datasets.load_movielens(write_recbole(tmp_path / "ref"), min_user_events=3,
                                      min_item_events=1, seed=1)
        # ml-latest's fixture lists no genres for item 5, so its query differs there.
        drop = ["query"] if writer is write_ml_latest else []
        pd.testing.assert_frame_equal(ds.events.drop(columns=drop), ref.events.drop(columns=drop))


def test_load_dispatch_and_min_rating(tmp_path):
    folder = write_ml1m(tmp_path / "ml-1m")
    ds = datasets.load("ml-1m", folder, min_user_events=3, min_item_events=1, min_rating=3)
    assert ds.name == "ml-1m"
    assert len(ds.events) == sum(1 for r in ml_ratings() if r[2] >= 3)
    with pytest.raises(ValueError, match="unknown data set"):
        datasets.load("netflix")
    with pytest.raises(ValueError, match="path="):
        datasets.load("ml-1m")
    with pytest.raises(TypeError):
        datasets.load(3)


# Amazon -------------------------------------------------------------------------------

AMZ_ITEMS = {
    "B001": ("USB-C Cable &amp; Charger", "Fast <b>charging</b> cable",
             [["Electronics", "Computers & Accessories", "Cables & Accessories"], ["Electronics"]]),
    "B002": ("Laptop Sleeve", "Neoprene sleeve for 13 inch laptops",
             [["Electronics", "Computers & Accessories", "Laptop Accessories", "Bags, Cases & Sleeves"]]),
    "B003": ("Wireless Mouse", "Quiet mouse", [["Electronics", "Computers & Accessories", "Mice"]]),
    "B004": ("HDMI Cable", "4K cable", [["Electronics", "Accessories & Supplies", "Cables"]]),
}


def amazon_reviews(n_users=5):
    rows = []
    for u in range(n_users):
        for j, asin in enumerate(["B001", "B002", "B003", "B004"]):
            rows.append({"reviewerID": f"A{u}", "asin": asin, "reviewerName": "x", "overall": 5.0,
                         "reviewText": "ok", "unixReviewTime": 1400000000 + 86400 * (j + u),
                         "reviewTime": "05 1, 2014"})
    return rows


def write_amazon_2014(folder):
    folder.mkdir(parents=True, exist_ok=True)
    with gzip.open(folder / "reviews_Electronics_5.json.gz", "wt", encoding="utf-8") as fh:
        for r in amazon_reviews():
            fh.write(json.dumps(r) + "\n")
    with gzip.open(folder / "meta_Electronics.json.gz", "wt", encoding="utf-8") as fh:
        for asin, (title, desc, cats) in AMZ_ITEMS.items():
            # 2014 metadata is one Python literal per line (single quotes: not JSON).
            fh.write(repr({"asin": asin, "title": title, "description": desc, "categories": cats,
                           "price": 9.99}) + "\n")
        fh.write(repr({"asin": "B999", "title": "never reviewed", "categories": [["X"]]}) + "\n")
    return folder


def write_amazon_2018(folder):
    folder.mkdir(parents=True, exist_ok=True)
    with gzip.open(folder / "Electronics_5.json.gz", "wt", encoding="utf-8") as fh:
        for r in amazon_reviews():
            r = dict(r, verified=True, style={"Color:": "Black"})
            fh.write(json.dumps(r) + "\n")
    with open(folder / "meta_Electronics.json", "w", encoding="utf-8") as fh:
        for asin, (title, desc, cats) in AMZ_ITEMS.items():
            fh.write(json.dumps({"asin": asin, "title": title, "description": [desc],
                                 "category": max(cats, key=len), "also_buy": []}) + "\n")
    return folder


@pytest.mark.parametrize("writer", [write_amazon_2014, write_amazon_2018])
def test_amazon_layouts(tmp_path, writer):
    folder = writer(tmp_path / "amz")
    ds = datasets.load("amazon", folder, category="Electronics", min_user_events=3, min_item_events=1)
    assert ds.n_items == 4 and ds.n_users == 5
    it = ds.items.set_index("item_id")
    assert it.at["B001", "title"] == "USB-C Cable & Charger"  # entities unescaped
    assert it.at["B001", "description"] == "Fast charging cable"  # tags removed
    assert it.at["B001", "category"] == "Electronics > Computers & Accessories > Cables & Accessories"
    assert it.at["B001", "synthetic_query"] == "electronics computers accessories cables"
    assert it.at["B002", "synthetic_query"] == "electronics computers accessories laptop bags cases sleeves"
    assert "Category: Electronics > Computers" in it.at["B003", "text"]
    assert ds.name == "amazon-Electronics"
    ds2 = datasets.load("amazon-Electronics", folder, min_user_events=3, min_item_events=1)
    pd.testing.assert_frame_equal(ds.events, ds2.events)


def test_amazon_reviews_without_metadata_are_dropped(tmp_path):
    folder = write_amazon_2018(tmp_path / "amz")
    with gzip.open(folder / "Electronics_5.json.gz", "at", encoding="utf-8") as fh:
        fh.write(json.dumps({"reviewerID": "A0", "asin": "B777", "unixReviewTime": 1500000000}) + "\n")
    with pytest.warns(UserWarning, match="missing from items"):
        ds = datasets.load_amazon(folder, "Electronics", min_user_events=3, min_item_events=1)
    assert "B777" not in set(ds.items["item_id"])


# KuaiSAR ------------------------------------------------------------------------------


def write_kuaisar(folder):
    folder.mkdir(parents=True, exist_ok=True)
    rec, src = [], []
    for u in range(1, 5):
        for j, it in enumerate([1, 2, 3, 4, 5]):
            rec.append({"user_id": u, "item_id": it, "playing_time": 1000.0, "duration_ms": 2000.0,
                        "time": "2023-05-22 15:53:20", "timestamp": 1.6847e12 + 1e6 * (j + u),
                        "click": 1, "forward": 0, "like": 0, "follow": 0, "search": 0,
                        "search_item_related": 0})
        rec.append(dict(rec[-1], item_id=6, click=0, timestamp=1.6847e12))  # not a click
        for s in range(3):
            for it, clicked, typ in ((2 + s, 1, "VIDEO"), (5, 0, "VIDEO"), (777, 1, "LIVE")):
                src.append({"user_id": u, "search_session_id": 100 * u + s,
                            "search_session_time": "2023-05-22 21:58:52",
                            "search_session_timestamp": 1.6847e12 + 1e6 * (s + u) + 5e5,
                            "keyword": f"[{20 + s}, 34]", "search_source": "USER_INPUT",
                            "item_id": it, "click_cnt": clicked, "item_type": typ})
    pd.DataFrame(rec).to_csv(folder / "rec_inter.csv", index=False)
    pd.DataFrame(src).to_csv(folder / "src_inter.csv", index=False)
    pd.DataFrame({
        "item_id": [1, 2, 3, 4, 5, 6], "caption": ["[1, 213, 24]", "[20, 5]", "[21]", "[22, 34]", "[]", "[9]"],
        "author_id": 1, "item_type": "NORMAL", "upload_time": "2023-04-22", "upload_type": "LongImport",
        "first_level_category_id": 9, "first_level_category_name": "x",
        "first_level_category_name_en": ["Funny", "Food", "Food", "Games", "Funny", "Pets"],
        "second_level_category_name_en": ["Funny joke", "empty", "Snacks", "empty", "empty", "empty"],
        "third_level_category_name_en": "empty", "fourth_level_category_name_en": "empty",
    }).to_csv(folder / "item_features.csv", index=False)
    pd.DataFrame({"user_id": [1], "user_follow_id": [2]}).to_csv(folder / "social_network.csv", index=False)
    return folder


def test_kuaisar(tmp_path):
    folder = write_kuaisar(tmp_path / "KuaiSAR")
    inter, items, searches = datasets.read_kuaisar(folder)
    assert len(inter) == 20  # click == 0 rows dropped
    assert set(searches["item_id"]) == {2, 3, 4}  # unclicked and LIVE results dropped
    assert searches["query"].iloc[0] == "t20 t34"
    it = items.set_index("item_id")
    assert it.at[1, "text"] == "t1 t213 t24. Category: Funny > Funny joke"
    assert it.at[2, "category"] == "Food"
    ds = datasets.load("kuaisar", folder, min_user_events=3, min_item_events=1)
    src = ds.events[ds.events["kind"] == "search"]
    assert src["session"].nunique() == 12
    assert (src["query"].str.startswith("t2")).all()
    assert ds.events["timestamp"].dtype == np.int64
    ex = ds.examples("search", "test")
    assert len(ex) == 4 and (ex["query"] == "t22 t34").all()
    cand = ds.candidates("search", "test", n_neg=3)
    assert cand.shape == (4, 4)


# from_pandas with real searches --------------------------------------------------------


def test_from_pandas_with_real_searches_and_datetimes():
    inter, items, searches = real_search_world()
    inter = inter.assign(timestamp=pd.to_datetime(inter["timestamp"], unit="s"))
    searches = searches.assign(timestamp=pd.to_datetime(searches["timestamp"], unit="s"))
    ds = from_pandas(inter, items, searches, min_user_events=1, min_item_events=1)
    assert ds.events["timestamp"].dtype == np.int64
    assert set(ds.events.loc[ds.events["kind"] == "search", "query"]) == {
        "red", "running shoes", "shoes", "hat", "jeans"}
    assert ds.items["text"].tolist() == ds.items["title"].tolist()  # no category/description


def test_nullable_int_ids_and_tz_aware_times():
    inter, items = toy_world()
    ref = from_pandas(inter, items, min_user_events=3, min_item_events=1)
    inter2 = inter.assign(user_id=inter["user_id"].astype("Int64"),
                          timestamp=pd.to_datetime(inter["timestamp"], unit="s", utc=True))
    ds = from_pandas(inter2, items.assign(item_id=items["item_id"].astype("Int32")),
                     min_user_events=3, min_item_events=1)
    pd.testing.assert_frame_equal(ds.events, ref.events)


def test_custom_column_names():
    inter, items, searches = real_search_world()
    ds = from_pandas(inter.rename(columns={"user_id": "uid", "timestamp": "ts"}),
                     items.rename(columns={"title": "name"}),
                     searches.rename(columns={"user_id": "uid", "timestamp": "ts", "query": "q"}),
                     user_col="uid", time_col="ts", query_col="q", title_col="name",
                     min_user_events=1, min_item_events=1)
    assert ds.n_users == 2


# ---------------------------------------------------------------------------- bad inputs


def test_missing_and_misnamed_columns():
    inter, items = toy_world()
    with pytest.raises(ValueError, match=r"interactions is missing column\(s\) \['timestamp'\].*time_col"):
        from_pandas(inter.rename(columns={"timestamp": "time"}), items)
    with pytest.raises(ValueError, match=r"items is missing column\(s\) \['title'\]"):
        from_pandas(inter, items.drop(columns="title"))
    inter2, items2, searches = real_search_world()
    with pytest.raises(ValueError, match=r"searches is missing column\(s\) \['query'\]"):
        from_pandas(inter2, items2, searches.drop(columns="query"))
    with pytest.raises(ValueError, match="no text_col"):
        from_pandas(inter, items, text_col="blurb")


def test_wrong_types():
    inter, items = toy_world()
    with pytest.raises(TypeError, match="must be a pandas DataFrame"):
        from_pandas(inter.to_dict(), items)
    with pytest.raises(TypeError, match="integers or strings"):
        from_pandas(inter.assign(item_id=inter["item_id"] + 0.5), items)
    with pytest.raises(TypeError, match="numeric .* or datetime64"):
        from_pandas(inter.assign(timestamp=inter["timestamp"].astype(str)), items)
    with pytest.raises(TypeError, match="holds str ids but items"):
        from_pandas(inter.assign(item_id=inter["item_id"].astype(str)), items)
    with pytest.raises(TypeError, match="must hold strings"):
        from_pandas(inter, items.assign(title=1))
    with pytest.raises(ValueError, match="missing value"):
        from_pandas(inter.assign(user_id=inter["user_id"].astype(float).where(inter.index > 0)), items)
    with pytest.raises(ValueError, match="missing timestamp"):
        from_pandas(inter.assign(timestamp=inter["timestamp"].astype(float).where(inter.index > 0)), items)


def test_bad_arguments():
    inter, items, searches = real_search_world()
    for kw, msg in (({"search_share": 1.5}, "search_share"), ({"min_user_events": -1}, "min_user_events"),
                    ({"seed": -3}, "seed"), ({"unknown_items": "skip"}, "unknown_items")):
        with pytest.raises(ValueError, match=msg):
            from_pandas(inter, items, **kw)
    with pytest.raises(ValueError, match="not both"):
        from_pandas(inter, items, searches, search_share=0.5)
    with pytest.raises(ValueError, match="empty quer"):
        from_pandas(inter, items, searches.assign(query=""))
    ds = small_ds()
    with pytest.raises(ValueError, match="task must be"):
        ds.examples("ads", "test")
    with pytest.raises(ValueError, match="split must be"):
        ds.candidates("rec", "dev")
    with pytest.raises(ValueError, match="n_neg"):
        ds.candidates("rec", "test", n_neg=0)
    with pytest.raises(ValueError, match="sampler"):
        ds.candidates("rec", "test", sampler="bm25")
    with pytest.raises(ValueError, match="max_history"):
        ds.examples("rec", "test", max_history=-1)
    with pytest.raises(ValueError, match="lower n_neg"):
        ds.candidates("search", "test", n_neg=ds.n_items)


def test_unknown_items():
    inter, items = toy_world()
    bad = pd.concat([inter, pd.DataFrame({"user_id": [1000], "item_id": [999], "timestamp": [5]})])
    with pytest.raises(ValueError, match="missing from items.*999.*unknown_items='drop'"):
        from_pandas(bad, items, min_user_events=3, min_item_events=1)
    with pytest.warns(UserWarning, match="dropped"):
        ds = from_pandas(bad, items, min_user_events=3, min_item_events=1, unknown_items="drop")
    assert 999 not in set(ds.items["item_id"])


def test_duplicate_item_ids():
    inter, items = toy_world()
    with pytest.raises(ValueError, match="must be unique"):
        from_pandas(inter, pd.concat([items, items.iloc[:1]]))


def test_users_with_too_little_history():
    inter, items = toy_world()
    short = pd.concat([inter, pd.DataFrame({"user_id": [5], "item_id": [100], "timestamp": [1]})])
    with pytest.raises(ValueError, match="fewer than 3 events.*user 5 has 1"):
        from_pandas(short, items, min_user_events=1, min_item_events=1)


def test_empty_after_filtering_and_empty_input():
    inter, items = toy_world()
    with pytest.raises(ValueError, match="no events left after k-core"):
        from_pandas(inter, items, min_user_events=100)
    with pytest.raises(ValueError, match="empty"):
        from_pandas(inter.iloc[:0], items)


def test_corrupt_files(tmp_path):
    # u.data with a non-numeric field
    folder = write_u_data(tmp_path / "a")
    with open(folder / "u.data", "a") as fh:
        fh.write("7\tabc\t3\t880000000\n")
    with pytest.raises(ValueError, match="must be numeric.*corrupt"):
        datasets.read_movielens(folder)
    # u.data with a missing field
    folder = write_u_data(tmp_path / "b")
    (folder / "u.data").write_text("1\t2\t3\n4\t5\t6\n")
    with pytest.raises(ValueError, match="expected 4"):
        datasets.read_movielens(folder)
    # RecBole file without typed header
    folder = write_recbole(tmp_path / "c")
    (folder / "ml-100k.inter").write_text("user_id\titem_id\n1\t2\n")
    with pytest.raises(ValueError, match="not a RecBole atomic file"):
        datasets.read_movielens(folder)
    # JSON lines: a garbage line
    folder = write_amazon_2018(tmp_path / "d")
    (folder / "meta_Electronics.json").write_text('{"asin": "B001", "title": "x"}\n{oops\n')
    with pytest.raises(ValueError, match="line 2 is neither JSON nor a Python literal"):
        datasets.load_amazon(folder, "Electronics")
    # Truncated gzip
    folder = write_amazon_2014(tmp_path / "e")
    data = (folder / "reviews_Electronics_5.json.gz").read_bytes()
    (folder / "reviews_Electronics_5.json.gz").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="corrupt"):
        datasets.load_amazon(folder, "Electronics")
    # Review lacking a required field
    folder = write_amazon_2018(tmp_path / "f")
    with gzip.open(folder / "Electronics_5.json.gz", "wt") as fh:
        fh.write(json.dumps({"reviewerID": "A", "unixReviewTime": 1}) + "\n")
    with pytest.raises(ValueError, match="lacks field 'asin'"):
        datasets.load_amazon(folder, "Electronics")
    # KuaiSAR file with a misnamed column
    folder = write_kuaisar(tmp_path / "g")
    pd.read_csv(folder / "src_inter.csv").rename(columns={"keyword": "query"}).to_csv(
        folder / "src_inter.csv", index=False)
    with pytest.raises(ValueError, match=r"lacks column\(s\) \['keyword'\]"):
        datasets.read_kuaisar(folder)


def test_missing_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="no MovieLens files"):
        datasets.read_movielens(tmp_path)
    with pytest.raises(FileNotFoundError):
        datasets.read_movielens(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match="no Amazon files"):
        datasets.load_amazon(tmp_path, "Books")
    with pytest.raises(FileNotFoundError, match="KuaiSAR file missing"):
        datasets.read_kuaisar(tmp_path)
    with pytest.raises(FileNotFoundError):
        datasets.read_recbole_atomic(tmp_path / "x.inter")


# ------------------------------------------------------------------------ ml-100k caching


def test_cache_dir_resolution(tmp_path, monkeypatch):
    monkeypatch.setenv("GENSAR_CACHE", str(tmp_path / "env"))
    assert datasets.cache_dir() == tmp_path / "env"
    assert datasets.cache_dir(tmp_path / "arg") == tmp_path / "arg"
    monkeypatch.delenv("GENSAR_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert datasets.cache_dir() == tmp_path / "xdg" / "gensar"


def test_fetch_extracts_from_wheel_and_caches(tmp_path, monkeypatch):
    """The RecBole download is replaced by a fake wheel: extraction and caching are
    checked offline."""
    import subprocess

    from gensar.datasets import loaders

    src = write_recbole(tmp_path / "src")
    calls = []

    def fake_run(cmd, **kw):
        calls.append(cmd)
        dest = cmd[cmd.index("-d") + 1]
        with zipfile.ZipFile(os.path.join(dest, "recbole-1.2.1-py3-none-any.whl"), "w") as zf:
            for ext in ("inter", "item", "user"):
                zf.write(src / f"ml-100k.{ext}", f"recbole/dataset_example/ml-100k/ml-100k.{ext}")
        return subprocess.CompletedProcess(cmd, 0, "", "")

    monkeypatch.setattr(loaders.subprocess, "run", fake_run)
    cache = tmp_path / "cache"
    ds = datasets.load("ml-100k", cache_dir=cache, min_user_events=3, min_item_events=1)
    assert calls and "recbole==1.2.1" in calls[0] and "--no-deps" in calls[0]
    assert (cache / "ml-100k" / "parsed-v1.pkl").is_file()
    again = datasets.load("ml-100k", cache_dir=cache, min_user_events=3, min_item_events=1)
    assert len(calls) == 1  # second load: no download
    pd.testing.assert_frame_equal(ds.events, again.events)
    # A corrupt parsed cache is re-parsed, not fatal.
    (cache / "ml-100k" / "parsed-v1.pkl").write_bytes(b"not a pickle")
    third = datasets.load("ml-100k", cache_dir=cache, min_user_events=3, min_item_events=1)
    pd.testing.assert_frame_equal(ds.events, third.events)


def test_fetch_failure_is_explained(tmp_path, monkeypatch):
    import subprocess

    from gensar.datasets import loaders

    monkeypatch.setattr(loaders.subprocess, "run",
                        lambda cmd, **kw: subprocess.CompletedProcess(cmd, 1, "", "No matching distribution"))
    with pytest.raises(RuntimeError, match="PyPI must be reachable"):
        datasets.fetch_recbole_ml100k(tmp_path)


@pytest.mark.network
def test_real_ml100k(tmp_path):
    t0 = time.perf_counter()
    ds = datasets.load("ml-100k", cache_dir=tmp_path)
    ds.candidates("search", "test")
    ds.candidates("search", "valid")
    ds.candidates("rec", "test")
    elapsed = time.perf_counter() - t0
    st = ds.stats().iloc[0]
    assert st["users"] == 943
    assert 1300 < st["items"] <= 1682
    assert st["rec_interactions"] + st["search_interactions"] > 99_000
    assert st["rec_test_examples"] == 943
    assert elapsed < 60
