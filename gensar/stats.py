"""Paired significance tests over evaluation cases (e.g. test users).

Two methods evaluated on the same cases give paired per-case scores; the tests
here ask whether the mean difference could be chance. Used by the trade-off
study (benchmarks/tradeoff.py) to compare GenSAR with the best baseline.
"""
from __future__ import annotations

import math

import numpy as np


def ndcg_at(ranks, k: int = 10) -> np.ndarray:
    """Per-case NDCG@k (float64) from 0-based target ranks (-1 = not retrieved)."""
    ranks = np.asarray(ranks, dtype=np.int64)
    if ranks.ndim != 1:
        raise ValueError(f"ranks must be 1-D, got shape {ranks.shape}")
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be an int >= 1, got {k!r}")
    hit = (ranks >= 0) & (ranks < k)
    return np.where(hit, 1.0 / np.log2(np.maximum(ranks, 0) + 2.0), 0.0)


def paired_test(a, b, n_boot: int = 10_000, seed: int = 0, ci: float = 0.95) -> dict:
    """Paired comparison of per-case scores a and b (same cases, same order).

    Returns a dict: ``cases``, ``mean_a``, ``mean_b``, ``diff`` (mean of a - b),
    ``ci_low`` / ``ci_high`` (percentile bootstrap interval of the mean difference,
    cases resampled with replacement ``n_boot`` times), ``p_bootstrap`` (two-sided: the
    share of bootstrap mean differences, shifted to mean 0 (the null), at least as
    far from 0 as the observed one), ``t`` and ``p_ttest`` (paired t-test,
    two-sided; scipy if installed, else the normal approximation).
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.ndim != 1 or a.shape != b.shape:
        raise ValueError(f"a and b must be 1-D arrays of the same length, got {a.shape} and {b.shape}")
    if len(a) < 2:
        raise ValueError(f"need at least 2 paired cases, got {len(a)}")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise ValueError("a and b must be finite")
    if isinstance(n_boot, bool) or not isinstance(n_boot, (int, np.integer)) or n_boot < 100:
        raise ValueError(f"n_boot must be an int >= 100, got {n_boot!r}")
    if not 0.0 < ci < 1.0:
        raise ValueError(f"ci must be in (0, 1), got {ci!r}")
    d = a - b
    n = len(d)
    rng = np.random.default_rng([seed, 17])
    boots = np.empty(n_boot)
    for s in range(0, n_boot, 1000):  # chunks keep memory at 1000 x n
        idx = rng.integers(0, n, size=(min(1000, n_boot - s), n))
        boots[s:s + len(idx)] = d[idx].mean(1)
    lo, hi = np.percentile(boots, [100 * (1 - ci) / 2, 100 * (1 + ci) / 2])
    centred = boots - d.mean()  # the null distribution of the mean difference
    p_boot = float(min(1.0, np.mean(np.abs(centred) >= abs(d.mean()))))
    sd = d.std(ddof=1)
    if sd == 0:
        t, p_t = (0.0, 1.0) if d.mean() == 0 else (math.copysign(math.inf, d.mean()), 0.0)
    else:
        t = float(d.mean() / (sd / math.sqrt(n)))
        try:
            from scipy import stats

            p_t = float(stats.t.sf(abs(t), n - 1) * 2)
        except ImportError:  # pragma: no cover - scipy is optional
            p_t = float(math.erfc(abs(t) / math.sqrt(2)))
    return {"cases": n, "mean_a": float(a.mean()), "mean_b": float(b.mean()), "diff": float(d.mean()),
            "ci_low": float(lo), "ci_high": float(hi), "p_bootstrap": p_boot, "t": t, "p_ttest": p_t}
