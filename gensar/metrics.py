"""Ranking metrics: hit rate (HR@k) and NDCG@k with one relevant item per case.

Conventions (written down because reruns of generative retrieval papers often
differ here): the rank of the target is its 0-based position in the model's
ranked list; HR@k = 1 if rank < k; NDCG@k = 1 / log2(rank + 2) if rank < k, else
0 (the ideal DCG with one relevant item is 1). A target missing from the list
counts as a miss at every k. Scores are averaged over cases.

NaN scores are an error, not a rank: NaN compares false with everything, so a
NaN-scored target would count nothing "strictly higher" and land at rank 0 (a
scorer returning all NaN would report HR@1 = 1.0). ``ranks_from_scores`` raises
ValueError instead, naming the first case with a NaN; -inf is the way to exclude
an item and +inf the way to force one first.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from ._validate import check_ks

DEFAULT_KS = (1, 5, 10, 20)


def target_ranks(ranked, targets) -> np.ndarray:
    """0-based rank of each target in its ranked list, or -1 when absent.

    ranked : int array (B, K) of item indices, best first (-1 pads short lists)
    targets : int array (B,)
    returns : int64 (B,)
    """
    ranked = np.asarray(ranked)
    targets = np.asarray(targets)
    if ranked.ndim != 2:
        raise ValueError(f"ranked must be 2-D (cases, list length), got shape {ranked.shape}")
    if targets.shape != (ranked.shape[0],):
        raise ValueError(f"targets must have shape ({ranked.shape[0]},), got {targets.shape}")
    for name, a in (("ranked", ranked), ("targets", targets)):
        if a.size and (a.dtype == np.bool_ or not np.issubdtype(a.dtype, np.integer)):
            raise TypeError(f"{name} must hold integer item indices, got dtype {a.dtype}")
    if targets.size and targets.min() < 0:
        # -1 pads short ranked lists: a target of -1 would "hit" the padding
        raise ValueError(f"targets must be item indices >= 0, got {int(targets.min())}")
    hit = ranked == targets[:, None]
    return np.where(hit.any(1), hit.argmax(1), -1).astype(np.int64)


def ranks_from_scores(scores, targets) -> np.ndarray:
    """0-based rank of each target under per-item scores (higher is better).

    scores : float array (B, N) over all N items (use -inf to exclude an item);
        NaN anywhere raises ValueError (see the module docstring)
    targets : int array (B,) of column indices
    The rank counts items scored strictly higher plus, for a fair treatment of
    ties, the tied items whose index is smaller than the target's.
    """
    scores = np.asarray(scores)
    targets = np.asarray(targets)
    if scores.dtype == np.bool_ or not (np.issubdtype(scores.dtype, np.floating)
                                        or np.issubdtype(scores.dtype, np.integer)):
        raise TypeError(f"scores must be a real-valued array, got dtype {scores.dtype}")
    if targets.size and (targets.dtype == np.bool_ or not np.issubdtype(targets.dtype, np.integer)):
        raise TypeError(f"targets must hold integer column indices, got dtype {targets.dtype}")
    targets = targets.astype(np.int64)
    if scores.ndim != 2 or targets.shape != (scores.shape[0],):
        raise ValueError(f"scores must be (B, N) and targets (B,), got shapes {scores.shape} and {targets.shape}")
    if scores.dtype.kind == "f":
        nan_rows = np.flatnonzero(np.isnan(scores).any(1))
        if len(nan_rows):
            raise ValueError(f"scores contain NaN in {len(nan_rows)} of {len(scores)} case(s) "
                             f"(first: case {int(nan_rows[0])}); a NaN cannot be ranked. Use -inf "
                             f"to exclude an item")
    if targets.size and (targets.min() < 0 or targets.max() >= scores.shape[1]):
        raise ValueError(f"targets must lie in [0, {scores.shape[1]})")
    t = scores[np.arange(len(targets)), targets][:, None]
    higher = (scores > t).sum(1)
    tied_before = ((scores == t) & (np.arange(scores.shape[1])[None, :] < targets[:, None])).sum(1)
    return (higher + tied_before).astype(np.int64)


def metrics_from_ranks(ranks, ks=DEFAULT_KS) -> dict:
    """HR@k and NDCG@k (k in ks) from 0-based ranks (-1 = not retrieved)."""
    ks = check_ks(ks)
    ranks = np.asarray(ranks)
    if ranks.size == 0:
        raise ValueError("no cases to score")
    if ranks.dtype == np.bool_ or not np.issubdtype(ranks.dtype, np.integer):
        raise TypeError(f"ranks must be integers (-1 = not retrieved), got dtype {ranks.dtype}")
    if ranks.min() < -1:
        raise ValueError(f"ranks must be >= -1 (-1 = not retrieved), got {int(ranks.min())}")
    ranks = ranks.astype(np.int64)
    found = ranks >= 0
    out = {}
    for k in ks:
        hit = found & (ranks < k)
        out[f"HR@{k}"] = float(hit.mean())
    for k in ks:
        if k == 1:
            continue  # NDCG@1 equals HR@1
        hit = found & (ranks < k)
        out[f"NDCG@{k}"] = float(np.where(hit, 1.0 / np.log2(np.maximum(ranks, 0) + 2.0), 0.0).mean())
    return out


def ranking_metrics(ranked, targets, ks=DEFAULT_KS) -> dict:
    """HR@k / NDCG@k of ranked lists (B, K) against targets (B,)."""
    return metrics_from_ranks(target_ranks(ranked, targets), ks)


def metrics_table(rows) -> pd.DataFrame:
    """[(labels dict, metrics dict), ...] -> one DataFrame row each."""
    return pd.DataFrame([{**labels, **m} for labels, m in rows])
