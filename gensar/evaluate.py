"""Evaluation of any method on the protocol's two rankings.

- "sampled": the reference's protocol. Each case ranks its target among the
  candidates of ``Dataset.candidates`` (target + 99 negatives: for recommendation,
  unseen items drawn by training popularity; for search, BM25 hard negatives).
- "sampled-uniform": recommendation only: the 99 unseen negatives are drawn
  uniformly (gensar's "sampled" protocol before it followed the reference; easier).
  Search has no such variant; its rows are left out.
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

PROTOCOLS = ("sampled", "sampled-uniform", "full")
# How each sampled protocol draws recommendation negatives (Dataset.candidates).
REC_SAMPLER = {"sampled": "popularity", "sampled-uniform": "uniform"}


def applies(task: str, protocol: str) -> bool:
    """Whether a protocol exists for a task ("sampled-uniform" is recommendation only)."""
    return not (task == "search" and protocol == "sampled-uniform")


def candidates(ds, task: str, split: str, protocol: str, n_neg: int = 99):
    """The candidate sets (n_cases, 1 + n_neg) of a sampled protocol; None for "full"."""
    if protocol == "full":
        return None
    return ds.candidates(task, split, n_neg=n_neg, sampler=REC_SAMPLER[protocol])


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
    _check(task, split, (protocol,))
    if not applies(task, protocol):
        raise ValueError(f"protocol {protocol!r} does not apply to task {task!r}")
    ex = ds.examples(task, split, max_history=0)
    scores = np.asarray(scores, dtype=np.float64)
    if scores.shape != (len(ex), ds.n_items):
        raise ValueError(f"scores must have shape ({len(ex)}, {ds.n_items}), got {scores.shape}")
    # A seeded random relabelling of items makes index-order tie-breaking random.
    perm = np.random.default_rng([seed, 7]).permutation(ds.n_items)
    if protocol == "full":
        return ranks_from_scores(scores[:, perm], np.argsort(perm)[ex["target"].to_numpy()])
    cand = candidates(ds, task, split, protocol, n_neg)
    sub = np.take_along_axis(scores, cand, 1)
    order = np.argsort(perm[cand], axis=1)  # random but fixed order of each case's candidates
    sub = np.take_along_axis(sub, order, 1)
    target_col = np.argmax(order == 0, axis=1)
    return ranks_from_scores(sub, target_col)


def evaluate_scorer(ds, score_fn, tasks=("rec", "search"), split="test", protocols=PROTOCOLS,
                    ks=DEFAULT_KS, method="", seed=0, n_neg=99, ranks_out=None) -> pd.DataFrame:
    """Metrics of a scorer. score_fn(task, examples DataFrame) -> scores (B, n_items),
    higher is better. Returns one row per (task, protocol) that applies to the task.
    ranks_out: optional dict that receives the per-case ranks, keyed (task, protocol)
    (rows aligned with ds.examples(task, split); for paired significance tests)."""
    rows = []
    for task in tasks:
        _check(task, split, protocols)
        ex = ds.examples(task, split)
        scores = score_fn(task, ex)
        for protocol in protocols:
            if not applies(task, protocol):
                continue
            ranks = scorer_ranks(ds, task, split, scores, protocol, seed, n_neg)
            if ranks_out is not None:
                ranks_out[(task, protocol)] = ranks
            rows.append({"method": method, "task": task, "protocol": protocol, "split": split,
                         "cases": len(ranks), **metrics_from_ranks(ranks, ks)})
    return pd.DataFrame(rows)


def generator_row(ranked, targets, task, protocol, split, ks=DEFAULT_KS, method="") -> dict:
    """One metrics row from ranked item lists (B, K) of a generator."""
    ranks = target_ranks(ranked, targets)
    return {"method": method, "task": task, "protocol": protocol, "split": split,
            "cases": len(ranks), **metrics_from_ranks(ranks, ks)}
