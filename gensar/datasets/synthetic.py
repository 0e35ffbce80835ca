"""A small synthetic catalogue with learnable structure, for tests, the
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
