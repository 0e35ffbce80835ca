import numpy as np
import pytest

from gensar.metrics import metrics_from_ranks
from gensar.stats import ndcg_at, paired_test


def test_ndcg_at_matches_the_metric_code():
    ranks = np.array([0, 1, 5, 9, 10, -1, 3])
    assert ndcg_at(ranks, 10).mean() == pytest.approx(metrics_from_ranks(ranks)["NDCG@10"])
    assert ndcg_at(ranks, 5).mean() == pytest.approx(metrics_from_ranks(ranks)["NDCG@5"])
    with pytest.raises(ValueError, match="k must"):
        ndcg_at(ranks, 0)


def test_paired_test_agrees_with_scipy_and_detects_a_real_difference():
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(0)
    base = rng.random(500)
    better = base + 0.05 + 0.1 * rng.standard_normal(500)
    r = paired_test(better, base, n_boot=4000)
    ref = stats.ttest_rel(better, base)
    assert r["t"] == pytest.approx(ref.statistic) and r["p_ttest"] == pytest.approx(ref.pvalue)
    assert r["diff"] == pytest.approx((better - base).mean())
    assert r["ci_low"] < r["diff"] < r["ci_high"] and r["ci_low"] > 0
    assert r["p_bootstrap"] < 0.001 and r["p_ttest"] < 0.001
    # No difference in law: p-values are not small, and the interval covers 0.
    same = base + 0.1 * rng.standard_normal(500)
    null = paired_test(same, base + 0.1 * rng.standard_normal(500), n_boot=4000)
    assert null["ci_low"] < 0 < null["ci_high"] and null["p_bootstrap"] > 0.01
    assert abs(null["p_bootstrap"] - null["p_ttest"]) < 0.1  # the two tests agree
    equal = paired_test(base, base)
    assert equal["diff"] == 0 and equal["p_ttest"] == 1.0


def test_paired_test_bad_input():
    with pytest.raises(ValueError, match="same length"):
        paired_test([1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match="at least 2"):
        paired_test([1.0], [1.0])
    with pytest.raises(ValueError, match="finite"):
        paired_test([1.0, np.nan], [1.0, 2.0])
    with pytest.raises(ValueError, match="n_boot"):
        paired_test([1.0, 2.0], [1.0, 2.0], n_boot=10)
