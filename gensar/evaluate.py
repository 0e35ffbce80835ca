"""Evaluation of any method on the protocol's two rankings.

- "sampled": the reference's protocol. Each case ranks its target among the
  candidates of ``Dataset.candidates`` (target + 99 negatives: random unseen items
  for recommendation, BM25 hard negatives for search).
- "full": the target is ranked among every item of the catalogue (stricter).

A method is either a *scorer* (scores for every item, e.g. popularity, BM25,
SASRec, dense retrieval) or a *generator* (a ranked list per case, e.g. GenSAR's
constrained beam search). Score ties are broken by a seeded random order of the
items, so a constant scorer lands at random-guess level rather than at rank 0.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from .metrics import DEFAULT_KS, metrics_from_ranks, ranks_from_scores, target_ranks

PROTOCOLS = ("sampled", "full")


def _check(task, split, protocols):
    if task not in ("rec", "search"):
        raise ValueError(f"task must be 'rec' or 'search', got {task!r}")
    if split not in ("valid", "test"):
        raise ValueError(f"split must be 'valid' or 'test', got {split!r}")
    bad = set(protocols) - set(PROTOCOLS)
    if bad:
        raise ValueError(f"unknown protocol(s) {sorted(bad)}; expected {PROTOCOLS}")


def scorer_ranks(ds, task, split, scores, protocol, seed=0, n_neg=99) -> np.ndarray:
    """0-based target ranks from scores (B, n_items) aligned with ds.examples(task, split)."""
    ex = ds.examples(task, split, max_history=0)
    scores = np.asarray(scores, dtype=np.float64)
    if scores.shape != (len(ex), ds.n_items):
        raise ValueError(f"scores must have shape ({len(ex)}, {ds.n_items}), got {scores.shape}")
    # A seeded random relabelling of items makes index-order tie-breaking random.
    perm = np.random.default_rng([seed, 7]).permutation(ds.n_items)
    if protocol == "full":
        return ranks_from_scores(scores[:, perm], np.argsort(perm)[ex["target"].to_numpy()])
    cand = ds.candidates(task, split, n_neg=n_neg)
    sub = np.take_along_axis(scores, cand, 1)
    order = np.argsort(perm[cand], axis=1)  # random but fixed order of each case's candidates
    sub = np.take_along_axis(sub, order, 1)
    target_col = np.argmax(order == 0, axis=1)
    return ranks_from_scores(sub, target_col)


def evaluate_scorer(ds, score_fn, tasks=("rec", "search"), split="test", protocols=PROTOCOLS,
                    ks=DEFAULT_KS, method="", seed=0, n_neg=99) -> pd.DataFrame:
    """Metrics of a scorer. score_fn(task, examples DataFrame) -> scores (B, n_items),
    higher is better. Returns one row per (task, protocol)."""
    rows = []
    for task in tasks:
        _check(task, split, protocols)
        ex = ds.examples(task, split)
        scores = score_fn(task, ex)
        for protocol in protocols:
            ranks = scorer_ranks(ds, task, split, scores, protocol, seed, n_neg)
            rows.append({"method": method, "task": task, "protocol": protocol, "split": split,
                         "cases": len(ranks), **metrics_from_ranks(ranks, ks)})
    return pd.DataFrame(rows)


def generator_row(ranked, targets, task, protocol, split, ks=DEFAULT_KS, method="") -> dict:
    """One metrics row from ranked item lists (B, K) of a generator."""
    ranks = target_ranks(ranked, targets)
    return {"method": method, "task": task, "protocol": protocol, "split": split,
            "cases": len(ranks), **metrics_from_ranks(ranks, ks)}
