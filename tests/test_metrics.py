import numpy as np
import pytest

from gensar.metrics import metrics_from_ranks, ranking_metrics, ranks_from_scores, target_ranks


def test_hr_and_ndcg_by_hand():
    ranked = np.array([[5, 3, 9], [1, 2, 3], [7, 8, 4]])
    targets = np.array([5, 3, 0])  # rank 0, rank 2, absent
    assert target_ranks(ranked, targets).tolist() == [0, 2, -1]
    m = ranking_metrics(ranked, targets, ks=(1, 3))
    assert m["HR@1"] == pytest.approx(1 / 3)
    assert m["HR@3"] == pytest.approx(2 / 3)
    assert m["NDCG@3"] == pytest.approx((1.0 + 1.0 / np.log2(4)) / 3)


def test_ranks_from_scores_ties_and_exclusion():
    scores = np.array([[0.1, 0.5, 0.5, 0.9], [1.0, -np.inf, 0.0, 0.0]])
    # target 2 ties with item 1 (smaller index counts ahead) and trails item 3
    assert ranks_from_scores(scores, np.array([2, 3])).tolist() == [2, 2]
    assert ranks_from_scores(scores, np.array([1, 0])).tolist() == [1, 0]


def test_metrics_bad_input():
    with pytest.raises(ValueError, match="2-D"):
        target_ranks(np.arange(3), np.arange(3))
    with pytest.raises(ValueError, match="targets must have shape"):
        target_ranks(np.zeros((2, 3)), np.arange(3))
    with pytest.raises(ValueError, match="no cases"):
        metrics_from_ranks(np.array([], dtype=np.int64))
    with pytest.raises(ValueError, match=r"\[0, 2\)"):
        ranks_from_scores(np.zeros((1, 2)), np.array([2]))
