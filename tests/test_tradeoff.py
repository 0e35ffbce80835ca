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


def test_saved_models_are_evaluated_like_fitted_ones(tradeoff, tmp_path):
    """--load: a model fitted earlier (e.g. a paired_study cell) gives the rows and ranks
    its own evaluate() gives, with its training log as the valid curve."""
    ds = datasets.toy(n_users=24, n_items=30, events_per_user=8, seed=1)
    rng = np.random.default_rng(0)
    sem = np.stack([rng.integers(0, 6, 30), rng.integers(0, 6, 30), np.arange(30) % 6, np.arange(30) // 6], 1)
    col = sem.copy()
    col[:, 2] = (np.arange(30) * 5) % 6
    cfg = dict(d_model=32, num_layers=1, num_decoder_layers=1, num_heads=2, d_kv=16, d_ff=64, epochs=2,
               batch_size=32, vocab_size=150, valid_cases=10, num_beams=8, n_negatives=9,
               shared_levels=(6, 6), specific_levels=(6, 6), max_input_len=48, seed=4)
    model = GenSAR(**cfg).fit(ds, ids=(sem, col), progress=False)
    model.save(tmp_path / "cell-s4")
    want = model.evaluate("test", progress=False)
    csv = tmp_path / "study.csv"
    rows = tradeoff.run_seed(ds, 4, ["gensar"], cfg, False, csv, {}, saved={"gensar": str(tmp_path / "cell-s{seed}")})
    got = pd.DataFrame(rows)
    assert len(got) == len(want) and (got["method"] == "gensar").all() and np.isnan(got["train_s"]).all()
    for r in got.itertuples():
        w = want[(want["task"] == r.task) & (want["protocol"] == r.protocol)].iloc[0]
        assert r.cases == w["cases"]
        assert got.loc[r.Index, "NDCG@10"] == w["NDCG@10"]
    best = int(model.history_.loc[model.history_["NDCG@10"].idxmax(), "epoch"])
    assert (got["best_epoch"] == best).all() and (got["epochs_run"] == 2).all()
    assert tradeoff.load_ranks([csv]).keys() == {("gensar", 4, t, p) for t, p in model.eval_ranks_}
    # a saved model is evaluated only as the variant it was trained as
    with pytest.raises(SystemExit, match="not trained as gensar_rec_only.*task_weights"):
        tradeoff.run_seed(ds, 4, ["gensar_rec_only"], cfg, False, tmp_path / "wrong.csv", {},
                          saved={"gensar_rec_only": str(tmp_path / "cell-s{seed}")})


def test_a_variant_is_recognised_by_its_defining_settings(tradeoff):
    """variant_mismatches: a task left out of task_weights weighs 0; settings outside
    VARIANT_KEYS (epochs, lr) may differ; the identifier a task generates may not."""
    from gensar.model import GenSARConfig

    preset = dict(tradeoff.PRESETS["full"], epochs=80, lr=1e-3)
    variant = lambda m: dict(preset, **tradeoff.GENSAR_VARIANTS[m])  # noqa: E731
    rec_only = {t: w for t, w in tradeoff.GENSAR_VARIANTS["gensar_rec_only"]["task_weights"].items() if w > 0}
    assert tradeoff.variant_mismatches(GenSARConfig(task_weights=rec_only), variant("gensar_rec_only")) == []
    assert tradeoff.variant_mismatches(GenSARConfig(), variant("gensar")) == []
    assert [m.split(":")[0] for m in tradeoff.variant_mismatches(GenSARConfig(), variant("gensar_rec_only"))] \
        == ["task_weights"]
    assert [m.split(":")[0] for m in tradeoff.variant_mismatches(GenSARConfig(), variant("gensar_semantic_ids"))] \
        == ["rec_id"]


def test_the_plot_names_every_method_once_in_one_legend(tradeoff, tmp_path):
    """The trade-off plot: a legend (labels at the points overlapped where single-task
    methods sit close on an axis) naming each method once, even one in one panel only."""
    rows = [("gensar", "rec", "sampled", 0.30), ("gensar", "search", "sampled", 0.30),
            ("sasrec", "rec", "sampled", 0.35), ("gensar_rec_only", "rec", "sampled", 0.29),
            ("bm25", "search", "full", 0.29)]
    summary = pd.DataFrame([dict(method=m, task=t, protocol=p, NDCG10_mean=v) for m, t, p, v in rows])
    labels = tradeoff.plot(summary, tmp_path / "p.png", "ml-100k", "cpu X, avx512\ncpu Y, avx2")
    assert labels == ["bm25", "gensar", "gensar_rec_only", "sasrec"]
    from PIL import Image  # every machine the rows ran on, in the file's metadata too

    assert Image.open(tmp_path / "p.png").text["Description"] == "cpu X, avx512; cpu Y, avx2"
