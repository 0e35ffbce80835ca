"""benchmarks/budget_curve.py: study rows per budget, the gain per doubling, the baselines' lines."""
import pandas as pd
import pytest

from conftest import load_benchmark


def _study(path, arm, values):
    rows = [{"seed": s, "arm": arm, "task": t, "protocol": p, "cases": 10, "HR@10": 0.5,
             "NDCG@10": v + (0.5 if p == "full" else 0.0), "fit_s": 1.0, "cpu": "CPU X", "kernel_path": "avx512",
             "commit": "abc"} for (s, t), v in values.items() for p in ("sampled", "full")]
    pd.DataFrame(rows).to_csv(path, index=False)


def test_budget_curve_tabulates_sampled_means_and_gains(tmp_path):
    bench = load_benchmark("budget_curve")
    _study(tmp_path / "a.csv", "e10", {(0, "rec"): 0.20, (1, "rec"): 0.22, (0, "search"): 0.30, (1, "search"): 0.30})
    _study(tmp_path / "b.csv", "e20", {(0, "rec"): 0.25, (1, "rec"): 0.27, (0, "search"): 0.31, (1, "search"): 0.33})
    pd.DataFrame([{"method": "sasrec", "task": "rec", "protocol": "sampled", "split": "valid", "NDCG@10": 0.4,
                   "seed": 0},
                  {"method": "pop", "task": "rec", "protocol": "sampled", "split": "valid", "NDCG@10": 0.1,
                   "seed": 0}]).to_csv(tmp_path / "base.csv", index=False)
    bench.main(["--arm", str(tmp_path / "a.csv"), "e10", "10", "--arm", str(tmp_path / "b.csv"), "e20", "20",
                "--baselines", str(tmp_path / "base.csv"), "--name", "t", "--out", str(tmp_path)])
    md = (tmp_path / "budget-curve-t.md").read_text()
    assert "| rec | 10 | 2 | 0.2100 ± 0.0141 |" in md          # the full protocol's rows are not mixed in
    assert "| rec | 20 | 2 | 0.2600 ± 0.0141 |" in md and "| +0.0500 (2 seeds) |" in md
    assert "| search | 20 | 2 | 0.3200 ± 0.0141 |" in md and "| +0.0200 (2 seeds) |" in md
    assert "Baseline, rec: sasrec 0.4000" in md                 # the best baseline of the task
    assert (tmp_path / "budget-curve-t.png").stat().st_size > 0


def test_budget_curve_names_what_is_wrong(tmp_path):
    bench = load_benchmark("budget_curve")
    _study(tmp_path / "a.csv", "e10", {(0, "rec"): 0.2})
    with pytest.raises(SystemExit, match="no sampled rows of arm 'e40'.*e10"):
        bench.main(["--arm", str(tmp_path / "a.csv"), "e40", "40", "--out", str(tmp_path)])
    with pytest.raises(SystemExit, match="EPOCHS must be a whole number"):
        bench.main(["--arm", str(tmp_path / "a.csv"), "e10", "ten", "--out", str(tmp_path)])
    pd.DataFrame([{"x": 1}]).to_csv(tmp_path / "other.csv", index=False)
    with pytest.raises(SystemExit, match="not a paired_study.py CSV"):
        bench.main(["--arm", str(tmp_path / "other.csv"), "e10", "10", "--out", str(tmp_path)])
    pd.DataFrame([{"method": "sasrec", "task": "rec", "protocol": "sampled", "split": "test",
                   "NDCG@10": 0.4}]).to_csv(tmp_path / "test.csv", index=False)
    with pytest.raises(SystemExit, match="must be validation figures"):
        bench.main(["--arm", str(tmp_path / "a.csv"), "e10", "10", "--baselines", str(tmp_path / "test.csv"),
                    "--out", str(tmp_path)])
