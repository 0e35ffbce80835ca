"""benchmarks/paired_study.py: two studies sharing a cache fit each cell once (a lock per
cell names the study fitting it; a lock left by a study that died is taken over)."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import load_benchmark


def test_a_cell_is_claimed_once_and_a_dead_owners_lock_is_taken_over(tmp_path):
    study = load_benchmark("paired_study")
    cell = tmp_path / "base-s0"
    assert study.claim(cell)  # free: taken, the lock names this process
    assert (cell / "fitting.pid").read_text() == str(os.getpid())
    assert not study.claim(cell)  # held by a live process (here: this one)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True).stdout.strip()
    (cell / "fitting.pid").write_text(dead)  # its owner has exited
    assert study.claim(cell)
    assert (cell / "fitting.pid").read_text() == str(os.getpid())


def _earlier_and_new_cells(tmp_path, monkeypatch, new_tasks=("rec", "search")):
    """An earlier study's CSV (arm "old", seeds 0 and 1; arm "other") and two fitted cells of
    arm "new" with their eval.csv, ranks.npz and history.csv, evaluated on `new_tasks`;
    returns the script's module."""
    import numpy as np
    import pandas as pd

    study = load_benchmark("paired_study")
    monkeypatch.setattr(study, "RESULTS", tmp_path / "results")
    keys = [("rec", "sampled"), ("search", "sampled")]
    prov = dict(cpu="cpu X", kernel_path="avx512", commit="abc")
    earlier = pd.DataFrame([dict(seed=s, arm="old", task=t, protocol=p, cases=3, **{"HR@10": 0.5},
                                 **{"NDCG@10": 0.20 + 0.01 * s}, fit_s=1.0, **prov)
                            for s in (0, 1) for t, p in keys] + [
        dict(seed=0, arm="other", task="rec", protocol="sampled", cases=3, **{"HR@10": 0.5, "NDCG@10": 0.9},
             fit_s=1.0, **prov)])
    earlier.to_csv(tmp_path / "earlier.csv", index=False)
    for s in (0, 1):
        cell = tmp_path / "cells" / f"new-s{s}"
        cell.mkdir(parents=True)
        new_keys = [(t, p) for t, p in keys if t in new_tasks]
        pd.DataFrame([dict(task=t, protocol=p, cases=3, **{"HR@10": 0.6, "NDCG@10": 0.25 + 0.01 * s}, fit_s=2.0,
                           **prov) for t, p in new_keys]).to_csv(cell / "eval.csv", index=False)
        np.savez(cell / "ranks.npz", **{f"{t}|{p}": np.array([0, 3, -1]) for t, p in new_keys})
        curve = {"rec_NDCG@10": [0.1, 0.2 + s], "search_NDCG@10": [0.3, 0.1]}
        pd.DataFrame({"epoch": [1, 2], "loss": [2.0, 1.0], "lr": [1e-3, 0.0], "seconds": [5.0, 5.0],
                      **{k: v for k, v in curve.items() if k.split("_")[0] in new_tasks},
                      "NDCG@10": [0.2, 0.15 + s]}).to_csv(cell / "history.csv", index=False)
    return study


def test_an_earlier_studys_arm_and_the_learning_curves(tmp_path, monkeypatch):
    """--earlier: the first arm's rows come from an earlier study's CSV (compared over
    seeds only); the cells' history.csv give each arm's mean validation curve."""
    import numpy as np
    import pandas as pd

    study = _earlier_and_new_cells(tmp_path, monkeypatch)
    study.main(["--name", "t", "--cache", str(tmp_path / "cells"), "--seeds", "0", "1", "--earlier",
                str(tmp_path / "earlier.csv"), "--arm", "old", "--arm", "new", "epochs=2"])
    df = pd.read_csv(tmp_path / "results" / "t-study-ml-100k.csv")
    assert sorted(df["arm"].unique()) == ["new", "old"] and len(df) == 8  # the other arm's row is not taken
    md = (tmp_path / "results" / "t-study-ml-100k.md").read_text()
    assert "+0.0500, +0.0500" in md and "no per-case ranks (earlier study)" in md
    assert "old " in md and "(fitted for the earlier study)" in md  # not "fitted here"
    curves = pd.read_csv(tmp_path / "results" / "t-study-ml-100k-curves.csv")
    assert curves["epoch"].tolist() == [1, 2] and (curves["arm"] == "new").all()
    assert np.allclose(curves["rec_NDCG@10"], [0.1, 0.7]) and curves["best"].tolist() == [1, 1]
    from PIL import Image  # the figure names the machine its cells ran on in its metadata too

    assert Image.open(tmp_path / "results" / "t-study-ml-100k-curves.png").text["Description"] == \
        "new: cpu X, avx512"


def test_the_earlier_arms_curve_is_drawn_beside_the_new_one(tmp_path, monkeypatch):
    """With the earlier study's -curves.csv beside its CSV, the earlier arm's curve (and no
    other arm's) joins the new arm's in the curves CSV, with the CPU it ran on."""
    import pandas as pd

    study = _earlier_and_new_cells(tmp_path, monkeypatch)
    pd.DataFrame([dict(arm=arm, epoch=e, loss=1.0, **{"rec_NDCG@10": v, "search_NDCG@10": v, "NDCG@10": v},
                       best=0, seeds=3, cpu="cpu Y, avx2") for arm, v in (("old", 0.4), ("other", 0.9))
                  for e in (1, 2)]).to_csv(tmp_path / "earlier-curves.csv", index=False)
    study.main(["--name", "t", "--cache", str(tmp_path / "cells"), "--seeds", "0", "1", "--earlier",
                str(tmp_path / "earlier.csv"), "--arm", "old", "--arm", "new", "epochs=2"])
    curves = pd.read_csv(tmp_path / "results" / "t-study-ml-100k-curves.csv")
    assert curves["arm"].tolist() == ["old", "old", "new", "new"]
    assert curves.loc[curves["arm"] == "old", "rec_NDCG@10"].tolist() == [0.4, 0.4]
    assert curves.loc[curves["arm"] == "old", "seeds"].tolist() == [3, 3]
    assert (curves.loc[curves["arm"] == "new", "cpu"] == "cpu X, avx512").all()
    assert (curves.loc[curves["arm"] == "old", "cpu"] == "cpu Y, avx2").all()  # its own seeds' CPUs
    assert "arm old's curve is the earlier study's" in (tmp_path / "results" / "t-study-ml-100k.md").read_text()


def test_a_task_only_one_arm_was_evaluated_on_is_named_not_compared(tmp_path, monkeypatch):
    """A rec-only arm against a joint one: the rec rows are compared, the search rows are
    kept per seed and named as not compared (no crash on the missing arm)."""
    import pandas as pd

    study = _earlier_and_new_cells(tmp_path, monkeypatch, new_tasks=("rec",))
    study.main(["--name", "t", "--cache", str(tmp_path / "cells"), "--seeds", "0", "1", "--earlier",
                str(tmp_path / "earlier.csv"), "--arm", "old", "--arm", "new", "epochs=2"])
    md = (tmp_path / "results" / "t-study-ml-100k.md").read_text()
    assert "| rec | sampled | 0.2050 ± 0.0071 | 0.2550 ± 0.0071 | +0.0500, +0.0500 |" in md
    assert "Not compared, one arm was not evaluated on them: search sampled (old only)." in md
    df = pd.read_csv(tmp_path / "results" / "t-study-ml-100k.csv")
    assert len(df[(df["task"] == "search") & (df["arm"] == "old")]) == 2 and len(df[df["arm"] == "new"]) == 2


def test_a_finished_cell_run_again_keeps_its_recorded_fit_seconds(tmp_path, monkeypatch):
    """--worker on a cell that already holds a saved model only re-evaluates it: the new
    eval.csv keeps the fit seconds the first run recorded (NaN when none were recorded)."""
    import argparse
    import json

    import numpy as np
    import pandas as pd

    study = load_benchmark("paired_study")

    class SavedModel:  # stands for GenSAR.load's model: evaluation only
        eval_ranks_ = {("rec", "sampled"): np.array([0, 2])}

        def evaluate(self, split, protocols, progress):
            assert split == "valid"  # a study never reads test
            return pd.DataFrame([dict(task="rec", protocol="sampled", cases=2, **{"NDCG@10": 0.5})])

    monkeypatch.setattr(study.datasets, "load", lambda name, seed: None)
    monkeypatch.setattr(study.gensar.GenSAR, "load", classmethod(lambda cls, path, dataset: SavedModel()))
    cell = tmp_path / "arm-s0"
    cell.mkdir()
    (cell / "manifest.json").write_text("{}")  # a model was saved here
    args = argparse.Namespace(worker=json.dumps({"name": "arm", "config": {}, "env": {}}), out=str(cell),
                              threads=0, preset="full", seed=0)

    study.worker(args)  # copied in without an eval.csv: no fit seconds known
    assert np.isnan(pd.read_csv(cell / "eval.csv")["fit_s"].iloc[0])

    pd.DataFrame([dict(task="rec", protocol="sampled", fit_s=7341.0)]).to_csv(cell / "eval.csv", index=False)
    study.worker(args)  # run again on a cell its first run evaluated
    again = pd.read_csv(cell / "eval.csv")
    assert again["fit_s"].tolist() == [7341.0] and again["NDCG@10"].tolist() == [0.5]
    assert set(np.load(cell / "ranks.npz").files) == {"rec|sampled"}


def test_a_gone_cells_rows_are_reused_from_an_earlier_study(tmp_path, monkeypatch):
    """--reuse: the second arm's rows for a seed whose cell is gone come from an earlier
    study's CSV (not refitted, said so); the cells present are read as usual."""
    import shutil

    import pandas as pd

    study = _earlier_and_new_cells(tmp_path, monkeypatch)
    gone = pd.read_csv(tmp_path / "cells" / "new-s0" / "eval.csv").assign(seed=0, arm="new", fit_s=6482.1)
    gone["NDCG@10"] = 0.30
    gone.to_csv(tmp_path / "new-study.csv", index=False)
    shutil.rmtree(tmp_path / "cells" / "new-s0")  # the model went with the machine that fitted it
    seen = []
    monkeypatch.setattr(study, "run_cells", lambda cells, args: seen.extend(cells))
    study.main(["--name", "t", "--cache", str(tmp_path / "cells"), "--seeds", "0", "1", "--earlier",
                str(tmp_path / "earlier.csv"), "--reuse", str(tmp_path / "new-study.csv"),
                "--arm", "old", "--arm", "new", "epochs=2"])
    assert [(c["arm"]["name"], c["seed"]) for c in seen] == [("new", 1)]  # seed 0 is not refitted
    df = pd.read_csv(tmp_path / "results" / "t-study-ml-100k.csv")
    new = df[(df["arm"] == "new") & (df["task"] == "rec")].set_index("seed")
    assert new.loc[0, "NDCG@10"] == 0.30 and new.loc[1, "NDCG@10"] == 0.26
    assert new.loc[0, "reused_from"].endswith("new-study.csv") and pd.isna(new.loc[1, "reused_from"])
    md = (tmp_path / "results" / "t-study-ml-100k.md").read_text()
    assert "+0.1000, +0.0500" in md  # seed 0 against the earlier arm's 0.20, seed 1 against 0.21
    assert "new 2 s (1 of 2 fitted here in one run, 1 from " in md and "fitted in 6482 s there)" in md
    assert "Arm new's rows for seed(s) 0 are from" in md and "--reuse " in md

    with pytest.raises(SystemExit, match="no rows of arm 'new' for a seed whose cell is missing"):
        study.main(["--name", "t", "--cache", str(tmp_path / "cells"), "--seeds", "1", "--reuse",
                    str(tmp_path / "new-study.csv"), "--arm", "old", "--arm", "new"])


def test_a_fit_resumed_from_checkpoints_has_no_fit_seconds(tmp_path, monkeypatch):
    """A cell whose fit resumed from checkpoints (a session's end stopped it) ran in several
    processes: it records resumed=True and no fit seconds, and keeps both when run again."""
    import argparse
    import json

    import numpy as np
    import pandas as pd

    study = load_benchmark("paired_study")

    class Model:
        eval_ranks_ = {("rec", "sampled"): np.array([0, 2])}
        history_ = pd.DataFrame({"epoch": [1], "NDCG@10": [0.3]})

        def fit(self, ds, progress, checkpoint_dir):
            return self

        def save(self, path):
            Path(path).mkdir(parents=True, exist_ok=True)
            (Path(path) / "manifest.json").write_text("{}")

        def evaluate(self, split, protocols, progress):
            return pd.DataFrame([dict(task="rec", protocol="sampled", cases=2, **{"NDCG@10": 0.5})])

    class GenSAR(Model):  # fits a Model; loads one back
        def __init__(self, **config):
            pass

        @classmethod
        def load(cls, path, dataset):
            return Model()

    monkeypatch.setattr(study.datasets, "load", lambda name, seed: None)
    monkeypatch.setattr(study.gensar, "GenSAR", GenSAR)
    cell = tmp_path / "arm-s0"
    (cell / "checkpoints" / "last").mkdir(parents=True)  # an earlier process got this far
    args = argparse.Namespace(worker=json.dumps({"name": "arm", "config": {}, "env": {}}), out=str(cell),
                              threads=0, preset="full", seed=0)
    study.worker(args)
    first = pd.read_csv(cell / "eval.csv")
    assert np.isnan(first["fit_s"].iloc[0]) and bool(first["resumed"].iloc[0])
    study.worker(args)  # the finished cell run again: re-evaluated, still resumed
    again = pd.read_csv(cell / "eval.csv")
    assert np.isnan(again["fit_s"].iloc[0]) and bool(again["resumed"].iloc[0])

    args.out = str(tmp_path / "fresh-s0")  # a fit in one process keeps its seconds
    study.worker(args)
    fresh = pd.read_csv(tmp_path / "fresh-s0" / "eval.csv")
    assert fresh["fit_s"].iloc[0] >= 0 and not bool(fresh["resumed"].iloc[0])
