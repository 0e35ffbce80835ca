"""benchmarks/new_items.py: the hold-out protocol (fast) and the whole script on a
toy setting (slow: it fits a tiny GenSAR)."""
import numpy as np
import pandas as pd
import pytest

from gensar import datasets
from conftest import load_benchmark


def test_hold_out_drops_every_event_of_the_held_items_and_cases_target_them():
    bench = load_benchmark("new_items")
    full = datasets.toy(n_users=100, n_items=240, seed=0)
    held = bench.hold_out(full, 0.1, seed=3)
    assert len(held) == 24 and len(set(held)) == 24
    assert np.array_equal(held, bench.hold_out(full, 0.1, seed=3))  # seeded
    train = bench.without_items(full, held)
    held_ids = set(full.items["item_id"].iloc[held])
    assert not held_ids & set(train.items["item_id"]) and not held_ids & set(train.events["item_id"])
    assert (train.events["kind"] == "search").any()
    known = set(train.items["item_id"]) | held_ids
    qs, hs, targets, dropped = bench.cases(full, held, known, max_cases=10_000, seed=0)
    ev = full.events
    n_search = int(((ev["kind"] == "search") & ev["item"].isin(held)).sum())
    assert len(qs) == len(hs) == len(targets) == n_search > 0
    assert set(targets) <= held_ids and dropped >= 0
    # a history is the user's earlier events: never the target event itself, never empty queries
    for h in hs:
        for e in h:
            assert (e in known) if not isinstance(e, tuple) else (e[1] in known and e[2].strip())
    few = bench.cases(full, held, known, max_cases=5, seed=0)
    assert len(few[0]) == 5


@pytest.mark.slow
def test_new_items_script_runs_end_to_end(tmp_path):
    bench = load_benchmark("new_items")
    argv = ["--dataset", "toy", "--preset", "smoke", "--sentence-model", "tfidf", "--out", str(tmp_path),
            "--no-progress", "--max-cases", "30", "--learn-passes", "2", "--model-cache", str(tmp_path / "fit")]
    table = bench.main(argv)
    new = table[table["items"] == "new"]
    gensar_variants = ("GenSAR, identifiers only", "GenSAR + learning (title as query)",
                       "GenSAR + learning (metadata query)")  # toy items have a synthetic_query
    assert set(zip(new["method"], new["protocol"])) == {(m, p) for m in gensar_variants + ("BM25", "popularity")
                                                        for p in ("full", "sampled")}
    assert (new["cases"] == 30).all() and new["HR@10"].between(0, 1).all()
    # popularity cannot find an item nobody clicked in training
    assert (new.loc[new["method"] == "popularity", "HR@10"] == 0).all()
    csv = pd.read_csv(tmp_path / "new-items-toy.csv")
    assert len(csv) == len(table) and csv["ids_unique"].all()
    md = (tmp_path / "new-items-toy.md").read_text()
    assert "CPU:" in md and "commit" in md and "HR@10" in md
    # a second run loads the fitted model from --model-cache: same identifiers-only rows
    again = bench.main(argv)
    pick = lambda t: t[t["method"] == gensar_variants[0]][["protocol", "items", "HR@10", "NDCG@10"]]  # noqa: E731
    pd.testing.assert_frame_equal(pick(again).reset_index(drop=True), pick(table).reset_index(drop=True))
