"""BM25 hard negatives for the search task (the reference's sampled protocol).

The index is built with ``bm25s`` (Lucene-style BM25, k1=1.5, b=0.75) over the item
texts, tokenised by :func:`gensar.datasets._text.tokenize`. Ranking is exact and
deterministic: items are ordered by BM25 score (descending) and, among equal scores,
by a seeded random priority, so ties (frequent with short category queries) neither
favour low item ids nor depend on the library's internal order.
"""

from __future__ import annotations

import numpy as np

from ._text import tokenize


class BM25Ranker:
    """BM25 over a fixed list of item texts.

    Parameters
    ----------
    texts : sequence of str, length n_items
        Item texts; position = dense item index.
    """

    def __init__(self, texts):
        try:
            import bm25s
        except ImportError as exc:  # optional dependency: only search candidates need it
            raise ImportError(
                "BM25 hard negatives need the 'bm25s' package: pip install 'bm25s>=0.2'"
            ) from exc
        corpus = [tokenize(t) for t in texts]
        self.n_items = len(corpus)
        self._bm25 = bm25s.BM25(k1=1.5, b=0.75, method="lucene")
        self._bm25.index(corpus, show_progress=False)

    def scores(self, query: str) -> np.ndarray:
        """BM25 scores of every item for ``query``: float64 array (n_items,)."""
        toks = tokenize(query)
        if not toks:
            return np.zeros(self.n_items)
        return np.asarray(self._bm25.get_scores(toks), dtype=np.float64)

    def top(self, query: str, k: int, priority: np.ndarray) -> np.ndarray:
        """The k best items for ``query``: int64 array (k,), best first.

        ``priority`` (int array (n_items,), a permutation) breaks score ties: the
        smaller priority ranks higher.
        """
        s = self.scores(query)
        k = min(k, self.n_items)
        # Only items scoring at least the k-th best can be in the top k; sorting just
        # those keeps this O(n_items) per query instead of a full sort.
        kth = np.partition(s, self.n_items - k)[self.n_items - k]
        cand = np.flatnonzero(s >= kth)
        order = np.lexsort((priority[cand], -s[cand]))
        return cand[order[:k]].astype(np.int64)


def hard_negatives(ranker: BM25Ranker, queries, targets, n_neg: int, seed: int) -> np.ndarray:
    """Candidate sets [target, n_neg best BM25 items other than the target].

    Parameters
    ----------
    queries : sequence of str, length n
    targets : int array (n,)
    Returns int64 array (n, 1 + n_neg), target in column 0.
    """
    targets = np.asarray(targets, dtype=np.int64)
    n = len(targets)
    if ranker.n_items < n_neg + 1:
        raise ValueError(
            f"n_neg={n_neg} needs at least {n_neg + 1} items in the catalogue, "
            f"the dataset has {ranker.n_items}; lower n_neg"
        )
    priority = np.random.default_rng([seed, 0xB125]).permutation(ranker.n_items)
    out = np.empty((n, n_neg + 1), dtype=np.int64)
    out[:, 0] = targets
    codes, uniq = _factorize(queries)
    by_query = np.argsort(codes, kind="stable")
    bounds = np.searchsorted(codes[by_query], np.arange(len(uniq) + 1))
    for qi, q in enumerate(uniq):
        top = ranker.top(q, n_neg + 1, priority)  # n_neg + 1: one may be the target
        rows = by_query[bounds[qi] : bounds[qi + 1]]
        # Drop the target where it is among the n_neg + 1 best, else drop the last.
        keep = top[None, :] != targets[rows, None]
        keep[keep.all(axis=1), -1] = False
        out[rows, 1:] = np.broadcast_to(top, keep.shape)[keep].reshape(len(rows), n_neg)
    return out


def _factorize(values):
    import pandas as pd

    codes, uniq = pd.factorize(pd.Series(list(values), dtype=object), sort=True)
    return codes, list(uniq)
