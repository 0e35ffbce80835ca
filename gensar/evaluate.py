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
A scorer that returns NaN is an error (ValueError naming the scorer, the task
and the first bad case), never a silent rank: see :mod:`gensar.metrics`.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from ._validate import check_int, check_ks
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


TASKS = ("rec", "search")


def check_protocols(protocols) -> tuple:
    """protocols as a tuple of known protocol names ("sampled" alone is allowed)."""
    if isinstance(protocols, str):
        protocols = (protocols,)
    if not hasattr(protocols, "__iter__"):
        raise TypeError(f"protocols must be a sequence of names from {PROTOCOLS}, got {protocols!r}")
    protocols = tuple(protocols)
    if not protocols:
        raise ValueError(f"protocols is empty; choose from {PROTOCOLS}")
    bad = [p for p in protocols if not isinstance(p, str) or p not in PROTOCOLS]
    if bad:
        raise ValueError(f"unknown protocol(s) {bad}; the protocols are {PROTOCOLS}")
    return protocols


def check_tasks(tasks) -> tuple:
    """tasks as a tuple of task names ("rec" alone is allowed)."""
    if isinstance(tasks, str):
        tasks = (tasks,)
    if not hasattr(tasks, "__iter__"):
        raise TypeError(f"tasks must be a sequence of names from {TASKS}, got {tasks!r}")
    tasks = tuple(tasks)
    bad = [t for t in tasks if not isinstance(t, str) or t not in TASKS]
    if bad:
        raise ValueError(f"unknown task(s) {bad}; the tasks are {TASKS}")
    if not tasks:
        raise ValueError(f"tasks is empty; choose from {TASKS}")
    return tasks


def _check(task, split, protocols):
    if task not in TASKS:
        raise ValueError(f"task must be 'rec' or 'search', got {task!r}")
    if split not in ("valid", "test"):
        raise ValueError(f"split must be 'valid' or 'test', got {split!r}")
    check_protocols(protocols)


def scorer_ranks(ds, task, split, scores, protocol, seed=0, n_neg=99, rows=None) -> np.ndarray:
    """0-based target ranks from scores (B, n_items) aligned with ds.examples(task, split)
    (or with its rows ``rows``, a slice, when given: one chunk of the cases)."""
    _check(task, split, (protocol,))
    if not applies(task, protocol):
        raise ValueError(f"protocol {protocol!r} does not apply to task {task!r}")
    ex = ds.examples(task, split, max_history=0)
    rows = slice(0, len(ex)) if rows is None else rows
    targets = ex["target"].to_numpy()[rows]
    cand = None if protocol == "full" else np.asarray(candidates(ds, task, split, protocol, n_neg))[rows]
    return _ranks(ds, scores, targets, cand, seed)


def _ranks(ds, scores, targets, cand, seed) -> np.ndarray:
    """Ranks of targets (B,) under scores (B, n_items): among every item (cand None) or
    among the candidate rows cand (B, 1 + n_neg)."""
    scores = np.asarray(scores, dtype=np.float64)
    if scores.shape != (len(targets), ds.n_items):
        raise ValueError(f"scores must have shape ({len(targets)}, {ds.n_items}), got {scores.shape}")
    # A seeded random relabelling of items makes index-order tie-breaking random.
    perm = np.random.default_rng([seed, 7]).permutation(ds.n_items)
    if cand is None:
        return ranks_from_scores(scores[:, perm], np.argsort(perm)[targets])
    sub = np.take_along_axis(scores, cand, 1)
    order = np.argsort(perm[cand], axis=1)  # random but fixed order of each case's candidates
    sub = np.take_along_axis(sub, order, 1)
    target_col = np.argmax(order == 0, axis=1)
    return ranks_from_scores(sub, target_col)


# Cases scored per call of a scorer: at most about 2**27 scores (1 GiB of float64) at a
# time, so memory does not grow with cases x items (170k x 63k would be 86 GB on
# Amazon Electronics).
_SCORE_BUDGET = 2**27


def evaluate_scorer(ds, score_fn, tasks=("rec", "search"), split="test", protocols=PROTOCOLS,
                    ks=DEFAULT_KS, method="", seed=0, n_neg=99, ranks_out=None) -> pd.DataFrame:
    """Metrics of a scorer. score_fn(task, examples DataFrame) -> scores (B, n_items),
    higher is better (-inf excludes an item; NaN raises ValueError naming the
    scorer). Returns one row per (task, protocol) that applies to the task.
    ranks_out: optional dict that receives the per-case ranks, keyed (task, protocol)
    (rows aligned with ds.examples(task, split); for paired significance tests)."""
    from .datasets import Dataset

    if not isinstance(ds, Dataset):
        raise TypeError(f"ds must be a gensar.datasets.Dataset, got {type(ds).__name__}")
    if not callable(score_fn):
        raise TypeError(f"score_fn must be callable (task, examples) -> scores, got {type(score_fn).__name__}")
    tasks, protocols, ks = check_tasks(tasks), check_protocols(protocols), check_ks(ks)
    check_int("seed", seed, minimum=0)
    check_int("n_neg", n_neg, minimum=1)
    who = method or getattr(score_fn, "__name__", None) or type(score_fn).__name__
    rows = []
    for task in tasks:
        _check(task, split, protocols)
        ex = ds.examples(task, split)
        targets = ex["target"].to_numpy()
        todo = [p for p in protocols if applies(task, p)]
        cands = {p: None if p == "full" else np.asarray(candidates(ds, task, split, p, n_neg)) for p in todo}
        parts = {p: [] for p in todo}
        chunk = max(1, _SCORE_BUDGET // max(1, ds.n_items))
        for s in range(0, max(1, len(ex)), chunk):
            sl = slice(s, min(len(ex), s + chunk))
            part = ex.iloc[sl]
            scores = _scorer_output(score_fn(task, part), who, task, (len(part), ds.n_items), offset=s)
            for p in todo:
                parts[p].append(_ranks(ds, scores, targets[sl], None if cands[p] is None else cands[p][sl], seed))
        for protocol in todo:
            ranks = np.concatenate(parts[protocol])
            if ranks_out is not None:
                ranks_out[(task, protocol)] = ranks
            rows.append({"method": method, "task": task, "protocol": protocol, "split": split,
                         "cases": len(ranks), **metrics_from_ranks(ranks, ks)})
    return pd.DataFrame(rows)


def _scorer_output(scores, who, task, shape, offset=0) -> np.ndarray:
    """The scores a scorer returned, checked: real numbers of the right shape, no NaN."""
    try:
        a = np.asarray(scores, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"scorer {who!r} returned {type(scores).__name__} for task {task!r}, "
                        f"not a numeric array of shape {shape}: {exc}") from None
    if a.shape != shape:
        raise ValueError(f"scorer {who!r} returned scores of shape {a.shape} for task {task!r}; "
                         f"expected {shape} (cases, n_items)")
    nan_rows = np.flatnonzero(np.isnan(a).any(1))
    if len(nan_rows):
        raise ValueError(f"scorer {who!r} returned NaN scores for task {task!r} in {len(nan_rows)} of "
                         f"{len(a)} case(s) (first: case {offset + int(nan_rows[0])}); NaN cannot be ranked "
                         f"(use -inf to exclude an item)")
    return a


def generator_row(ranked, targets, task, protocol, split, ks=DEFAULT_KS, method="") -> dict:
    """One metrics row from ranked item lists (B, K) of a generator."""
    ranks = target_ranks(ranked, targets)
    return {"method": method, "task": task, "protocol": protocol, "split": split,
            "cases": len(ranks), **metrics_from_ranks(ranks, ks)}
