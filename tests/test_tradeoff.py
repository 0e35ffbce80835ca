"""benchmarks/tradeoff.py: the study's fairness rules and its significance table."""
import numpy as np
import pandas as pd
import pytest

from gensar import datasets
from gensar.model import GenSAR
from gensar.tasks import REC_TASKS, SEARCH_TASKS
from conftest import load_benchmark


@pytest.fixture(scope="module")
def tradeoff():
    return load_benchmark("tradeoff")


def test_variants_share_per_task_exposure_and_validate(tradeoff):
    ds = datasets.toy(n_users=20, n_items=30, seed=0)
    cfg = tradeoff.study_config(tradeoff.PRESETS["smoke"], {})
    assert cfg["valid_cases"] > 0
    assert tradeoff.study_config({"valid_cases": 0}, {})["valid_cases"] == tradeoff.STUDY_VALID_CASES
    plans = {m: GenSAR(**dict(cfg, **v)).epoch_plan(ds) for m, v in tradeoff.GENSAR_VARIANTS.items()}
    for m, plan in plans.items():
        for task, n in plan.items():
            assert n in (0, plans["gensar"][task]), (m, task)  # a task is dropped or kept as in the joint model
    assert {t for t, n in plans["gensar_rec_only"].items() if n} == set(REC_TASKS)
    assert {t for t, n in plans["gensar_search_only"].items() if n} == set(SEARCH_TASKS)


def sampled_summary(task, **ndcg):
    """A study summary of the sampled protocol on `task`: method -> mean NDCG@10."""
    return pd.DataFrame([{"method": m, "task": task, "protocol": "sampled", "NDCG10_mean": v}
                         for m, v in ndcg.items()])


def test_significance_compares_gensar_with_the_best_baseline(tradeoff):
    rng = np.random.default_rng(0)
    n = 300
    ranks = {}
    for seed in (0, 1):
        ranks[("gensar", seed, "rec", "sampled")] = rng.integers(0, 3, n)    # good
        ranks[("sasrec", seed, "rec", "sampled")] = rng.integers(0, 30, n)   # worse
        ranks[("popularity", seed, "rec", "sampled")] = rng.integers(20, 99, n)
    summary = sampled_summary("rec", gensar=0.7, sasrec=0.2, popularity=0.01, gensar_rec_only=0.9)
    sig = tradeoff.significance(summary, ranks, n_boot=1000)
    assert len(sig) == 1  # the rec-only variant has no ranks: no row for it
    row = sig.iloc[0]
    assert row["baseline"] == "sasrec" and row["seeds"] == 2 and row["cases"] == n  # best *baseline*
    assert row["diff"] > 0 and row["p_ttest"] < 1e-6 and row["p_bootstrap"] < 0.01
    # With its ranks, the rec-only variant (the paper's single-task comparison) gets its own row.
    for seed in (0, 1):
        ranks[("gensar_rec_only", seed, "rec", "sampled")] = rng.integers(0, 2, n)  # better than gensar
    sig = tradeoff.significance(summary, ranks, n_boot=1000).set_index("baseline")
    assert list(sig.index) == ["sasrec", "gensar_rec_only"]
    assert sig.loc["gensar_rec_only", "diff"] < 0 and sig.loc["gensar_rec_only", "p_ttest"] < 1e-3


def test_significance_adds_the_best_single_model_after_a_two_model_system(tradeoff):
    rng = np.random.default_rng(1)
    ranks = {(m, 0, "search", "sampled"): rng.integers(0, 20, 200) for m in ("gensar", "bm25_sasrec", "bm25")}
    summary = sampled_summary("search", gensar=0.3, bm25_sasrec=0.4, dense=0.2, bm25=0.28)
    sig = tradeoff.significance(summary, ranks, n_boot=200)
    assert sig["baseline"].tolist() == ["bm25_sasrec", "bm25"]


def test_ranks_round_trip(tradeoff, tmp_path):
    csv = tmp_path / "s0.csv"
    d = tradeoff.ranks_dir(csv)
    d.mkdir()
    np.savez(d / "bm25_sasrec.s3.npz", **{"search|full": np.array([0, 5, -1])})
    got = tradeoff.load_ranks([csv])
    assert list(got) == [("bm25_sasrec", 3, "search", "full")]
    assert got[("bm25_sasrec", 3, "search", "full")].tolist() == [0, 5, -1]
