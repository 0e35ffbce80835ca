"""Synthetic catalogues: :func:`amazon_like` (the shape of Amazon Electronics at
any scale, for measuring cost) and :func:`toy`, described here: a small catalogue with learnable structure, for tests, the
notebook's smoke run and trying the API without downloading anything.

Items belong to topics; each topic has two genre words and a description.
Every user favours one topic and walks through it in order: after item i of a
topic the next interaction is usually item i + 1 of the same topic (a
collaborative signal only sequences reveal), sometimes a random item. A share
of interactions becomes search sessions whose query is the item's genre words
(the same semi-synthetic rule as MovieLens).
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from ._text import category_query
from .protocol import Dataset, from_pandas

WORDS = ["action", "comedy", "drama", "romance", "horror", "western", "musical", "mystery",
         "fantasy", "crime", "war", "animation", "documentary", "thriller", "adventure", "noir"]


def toy(n_users: int = 60, n_items: int = 80, n_topics: int = 8, events_per_user: int = 12,
        follow: float = 0.8, search_share: float = 0.4, seed: int = 0) -> Dataset:
    """Returns a Dataset of n_users users over n_items items (see the module doc).

    follow : probability that the next interaction continues the user's walk
    """
    from .._validate import check_float, check_int

    n_users = check_int("n_users", n_users, minimum=1)
    n_items = check_int("n_items", n_items, minimum=1)
    n_topics = check_int("n_topics", n_topics, minimum=1)
    events_per_user = check_int("events_per_user", events_per_user, minimum=3)  # train, valid, test
    follow = check_float("follow", follow, minimum=0.0, maximum=1.0)
    search_share = check_float("search_share", search_share, minimum=0.0, maximum=1.0)
    seed = check_int("seed", seed, minimum=0)
    if n_items < n_topics:
        raise ValueError(f"need n_items >= n_topics, got n_items={n_items} and n_topics={n_topics}")
    rng = np.random.default_rng(seed)
    topic = np.arange(n_items) % n_topics
    pairs = [(WORDS[t % len(WORDS)], WORDS[(3 * t + 1) % len(WORDS)]) for t in range(n_topics)]
    items = pd.DataFrame({
        "item_id": np.arange(n_items),
        "title": [f"item {i} {pairs[topic[i]][0]}" for i in range(n_items)],
        "category": ["|".join(pairs[topic[i]]) for i in range(n_items)],
        "description": [f"a {pairs[topic[i]][0]} story with {pairs[topic[i]][1]} number {i}"
                        for i in range(n_items)],
    })
    members = [np.flatnonzero(topic == t) for t in range(n_topics)]
    rows = []
    for u in range(n_users):
        t = rng.integers(n_topics)
        pos = rng.integers(len(members[t]))
        for j in range(events_per_user):
            if rng.random() < follow:
                item = members[t][pos % len(members[t])]
                pos += 1
            else:
                item = rng.integers(n_items)
            rows.append((u, int(item), 1_000_000 + 3600 * j))
    inter = pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"])
    return from_pandas(inter, items, search_share=search_share, min_user_events=3,
                       min_item_events=1, seed=seed, name="toy")


# ----------------------------------------------------------------- Amazon-shaped data

# Amazon Electronics after the reference's preparation (GENSAR.md section 5).
AMAZON_ELECTRONICS = {"users": 192_403, "items": 62_882, "rec": 1_680_000, "search": 1_280_000}

_ONSETS = np.array(list("bcdfghklmnprstvz") + ["br", "ch", "cl", "dr", "gr", "pl", "st", "tr"])
_VOWELS = np.array(["a", "e", "i", "o", "u", "ai", "ea", "ou"])


def _words(rng: np.random.Generator, n: int, syllables: int) -> np.ndarray:
    """n distinct pseudo-words of `syllables` consonant+vowel syllables (object array).

    Made-up words rather than English ones so no sentence encoder or BM25 index
    knows them from elsewhere; each is a whole token for every tokenizer here."""
    out: dict[str, None] = {}
    while len(out) < n:  # a few rounds at most: the space holds 192**syllables words
        k = 2 * (n - len(out)) + 8
        w = np.full(k, "", dtype=object)
        for _ in range(syllables):
            w = w + _ONSETS[rng.integers(len(_ONSETS), size=k)].astype(object) \
                + _VOWELS[rng.integers(len(_VOWELS), size=k)].astype(object)
        for s in w:
            if len(out) == n:
                break
            out.setdefault(s, None)
    return np.array(list(out), dtype=object)


def amazon_like(fraction: float = 0.01, seed: int = 0, *, zipf: float = 0.8,
                favourite_share: float = 0.85, search_share: float | None = None,
                min_events: int = 5) -> Dataset:
    """A synthetic catalogue with the shape of Amazon Electronics, scaled by ``fraction``.

    At ``fraction=1`` it has about 192,403 users, 62,882 items, 1.68M recommendation
    and 1.28M search interactions (the reference's Electronics statistics); every
    count scales linearly with ``fraction``. Everything is drawn with NumPy in whole
    arrays (no per-event Python loop): the full size takes seconds plus
    :func:`from_pandas`.

    What it holds
    -------------
    - Items belong to a three-level category path "Electronics | <group> | <leaf>"
      (12 groups, about one leaf per 60 items); each item has a made-up brand, an
      adjective and a model number, and its title + category words are its text.
    - Popularity is long-tailed: item weight ~ 1 / rank**zipf over a random ranking.
    - Users have between ``min_events`` and a long tail of events (mean about 15.4,
      the reference's events per user), grouped in sessions: minutes apart inside a
      session, days apart between them.
    - Each user favours two leaf categories (chosen by their popularity); a share
      ``favourite_share`` of their events picks an item of a favourite leaf (by
      popularity within the leaf), the rest an item of the whole catalogue. Every
      item gets at least ``min_events`` events, so the k-core filter keeps it.
    - Search: the semi-synthetic rule of the reference (as for real Amazon data in
      :func:`gensar.datasets.load_amazon`): an event becomes a one-click search whose
      query is the item's category words (:func:`gensar.datasets._text.category_query`),
      with probability ``search_share`` (default 1.28 / (1.68 + 1.28)).

    Parameters
    ----------
    fraction : float in (0, 10], share of the Electronics statistics; at least 120
        items are needed (fraction >= 0.002) so every user keeps 99 unseen items for
        the sampled protocol
    seed : int >= 0; the same (fraction, seed, settings) gives the same Dataset
    zipf : float in [0, 3], popularity exponent (0: uniform)
    favourite_share : float in [0, 1]
    search_share : float in [0, 1] or None (the reference's search/recommendation ratio)
    min_events : int >= 3, the k-core threshold for users and items

    Returns
    -------
    Dataset (through :func:`from_pandas`, with ``min_user_events = min_item_events =
    min_events``), named ``"amazon-like-<fraction>"``.
    """
    inter, items, kwargs = _amazon_like_tables(fraction, seed, zipf=zipf, favourite_share=favourite_share,
                                               search_share=search_share, min_events=min_events)
    return from_pandas(inter, items, **kwargs)


def _amazon_like_tables(fraction: float = 0.01, seed: int = 0, *, zipf: float = 0.8,
                        favourite_share: float = 0.85, search_share: float | None = None,
                        min_events: int = 5):
    """The tables behind :func:`amazon_like` before :func:`from_pandas`: (interactions
    DataFrame (user_id, item_id, timestamp), items DataFrame (item_id, title, category,
    synthetic_query), from_pandas keyword arguments). Arguments as in amazon_like.
    benchmarks/bench_serve.py keeps the full catalogue but subsamples the events."""
    from .._validate import check_float, check_int

    fraction = check_float("fraction", fraction, minimum=0.0, maximum=10.0, strict_min=True)
    seed = check_int("seed", seed, minimum=0)
    zipf = check_float("zipf", zipf, minimum=0.0, maximum=3.0)
    favourite_share = check_float("favourite_share", favourite_share, minimum=0.0, maximum=1.0)
    a = AMAZON_ELECTRONICS
    if search_share is None:
        search_share = a["search"] / (a["rec"] + a["search"])
    search_share = check_float("search_share", search_share, minimum=0.0, maximum=1.0)
    min_events = check_int("min_events", min_events, minimum=3, maximum=100)
    n_users = int(round(a["users"] * fraction))
    n_items = int(round(a["items"] * fraction))
    if n_items < 120:
        raise ValueError(f"fraction={fraction} gives {n_items} items; at least 120 are needed "
                         f"(fraction >= 0.002) so every user keeps 99 unseen items to rank against")
    mean_events = (a["rec"] + a["search"]) / a["users"]  # 15.4 events per user
    rng = np.random.default_rng([seed, 16])

    # ---- catalogue: categories, brands, titles
    n_groups = 12
    n_leaves = int(np.clip(n_items // 60, 4, 1200))
    words = _words(rng, n_groups + n_leaves + 200 + 60, syllables=2)
    groups, leaves = words[:n_groups], words[n_groups:n_groups + n_leaves]
    brands, adjectives = words[n_groups + n_leaves:-60], words[-60:]
    leaf_group = rng.integers(n_groups, size=n_leaves)
    # leaf sizes vary (Dirichlet shares), every leaf holds at least one item
    item_leaf = np.concatenate([np.arange(n_leaves), rng.choice(
        n_leaves, size=n_items - n_leaves, p=rng.dirichlet(np.full(n_leaves, 2.0)))])
    rng.shuffle(item_leaf)
    leaf_path = "Electronics | " + groups[leaf_group] + " | " + leaves  # (n_leaves,) object
    leaf_query = np.array([category_query(p.split(" | ")) for p in leaf_path], dtype=object)
    model_no = rng.integers(100, 1000, size=n_items).astype(str).astype(object)
    titles = (brands[rng.integers(len(brands), size=n_items)] + " " + adjectives[rng.integers(60, size=n_items)]
              + " " + leaves[item_leaf] + " " + groups[leaf_group[item_leaf]] + " " + model_no)
    items = pd.DataFrame({"item_id": np.arange(n_items, dtype=np.int64), "title": titles,
                          "category": leaf_path[item_leaf], "synthetic_query": leaf_query[item_leaf]})

    # ---- popularity: Zipf over a random ranking; cumulative weights grouped by leaf
    weight = 1.0 / np.arange(1, n_items + 1, dtype=np.float64) ** zipf
    weight = weight[rng.permutation(n_items)]
    by_leaf = np.argsort(item_leaf, kind="stable")              # items ordered by leaf
    cum = np.cumsum(weight[by_leaf])
    leaf_end = np.cumsum(np.bincount(item_leaf, minlength=n_leaves))
    leaf_hi = cum[leaf_end - 1]
    leaf_lo = np.concatenate([[0.0], leaf_hi[:-1]])
    leaf_mass = leaf_hi - leaf_lo

    # ---- users: event counts (min_events + a geometric tail), favourite leaves
    counts = min_events + rng.geometric(1.0 / max(1.0, mean_events - min_events + 1), size=n_users) - 1
    # at most n_items - 100 events: every user keeps >= 99 unseen items for the sampled protocol
    counts = np.minimum(counts, n_items - 100)
    n_events = int(counts.sum())
    user = np.repeat(np.arange(n_users, dtype=np.int64), counts)
    fav = rng.choice(n_leaves, size=(n_users, 2), p=leaf_mass / leaf_mass.sum())

    # ---- items of the events: a favourite leaf, or the whole catalogue, by popularity
    r = rng.random(n_events)
    leaf = fav[user, (rng.random(n_events) >= 0.8).astype(np.int64)]  # the first favourite 4 times in 5
    lo = np.where(r < favourite_share, leaf_lo[leaf], 0.0)
    hi = np.where(r < favourite_share, leaf_hi[leaf], cum[-1])
    pos = np.searchsorted(cum, lo + rng.random(n_events) * (hi - lo), side="right")
    item = by_leaf[np.minimum(pos, n_items - 1)]
    # Every item at least min_events times: overwrite random events with each item's
    # missing count (a small share of events; the long tail stays long).
    missing = np.maximum(0, min_events - np.bincount(item, minlength=n_items))
    need = np.repeat(np.arange(n_items), missing)
    if len(need) > n_events // 2:
        raise ValueError(f"fraction={fraction}: too few events to give each of {n_items} items "
                         f"{min_events} events; lower min_events")
    # Slots come from items with more than min_events events, at most their surplus each
    # (in a random order), so no item drops below the threshold.
    count = np.bincount(item, minlength=n_items)
    order = rng.permutation(n_events)
    order = order[np.argsort(item[order], kind="stable")]         # events grouped by item
    rank = np.arange(n_events) - np.repeat(np.cumsum(count) - count, count)
    eligible = order[rank < (count - min_events)[item[order]]]
    slots = rng.choice(eligible, size=len(need), replace=False)
    item[slots] = need
    # A user may meet an item twice (a re-purchase); from_pandas keeps both events.

    # ---- timestamps: sessions minutes apart inside, days apart between
    new_session = rng.random(n_events) < 0.45
    gap = np.where(new_session, rng.exponential(20 * 86_400.0, n_events), rng.uniform(30, 900, n_events))
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    gap[starts] = 0.0
    t = np.cumsum(gap)
    t -= np.repeat(t[starts], counts)                            # each user starts at 0 ...
    t += np.repeat(rng.uniform(946_684_800, 1_356_998_400, n_users), counts)  # ... in 2000-2012
    inter = pd.DataFrame({"user_id": user, "item_id": item, "timestamp": t.astype(np.int64)})
    return inter, items, dict(search_share=search_share, min_user_events=min_events,
                              min_item_events=min_events, seed=seed, name=f"amazon-like-{fraction:g}")
