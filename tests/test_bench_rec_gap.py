"""benchmarks/rec_gap.py: NDCG@10 by the target item's popularity, in equal-count groups."""
import numpy as np

from conftest import load_benchmark


def test_cases_are_grouped_by_their_target_items_popularity():
    rec_gap = load_benchmark("rec_gap")

    class Data:
        def item_popularity(self):
            return np.array([50.0, 1.0, 7.0, 3.0])

    items = np.array([0, 1, 2, 3, 1, 0])  # popularity 50, 1, 7, 3, 1, 50
    ranks_a = np.array([0, 9, 1, -1, 0, 20])  # rank 0 -> NDCG 1, rank 1 -> 1/log2(3), -1 and >= 10 -> 0
    ranks_b = np.zeros(6, np.int64)
    rows = rec_gap.by_popularity(Data(), items, {"a": ranks_a, "b": ranks_b})
    # least popular first: cases 1 and 4 (popularity 1), then 3 and 2 (3, 7), then 0 and 5 (50)
    ndcg9 = 1 / np.log2(11)
    assert rows == [f"| 1 | 1-1 | 2 | {(ndcg9 + 1) / 2:.4f} | 1.0000 |",
                    f"| 2 | 3-7 | 2 | {(0 + 1 / np.log2(3)) / 2:.4f} | 1.0000 |",
                    "| 3 | 50-50 | 2 | 0.5000 | 1.0000 |"]
