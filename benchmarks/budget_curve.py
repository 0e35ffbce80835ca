"""Validation NDCG@10 against the training budget, from paired studies that already ran.

Each GenSAR arm of a study (paired_study.py's CSV) trained the same model for some number of
epochs; this collects their rows per seed and plots the sampled validation NDCG@10 of both tasks
against the epochs (log scale), with the specialised baselines' validation figures as lines, so
that one picture says how much each doubling of the budget bought and how far the baselines are.
Nothing is refitted or re-evaluated: the figures are the studies' own.

    python benchmarks/budget_curve.py \\
        --arm benchmarks/results/sas200-e20-study-ml-100k.csv sas200 10 \\
        --arm benchmarks/results/sas200-e20-study-ml-100k.csv sas200-e20 20 \\
        --arm benchmarks/results/sas200-e40-study-ml-100k.csv sas200-e40 40 \\
        --baselines benchmarks/results/ml-100k-valid-baselines.csv --name ml-100k

Writes benchmarks/results/budget-curve-<name>.{md,png} (--out to change the folder).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _provenance import commit, save_figure  # noqa: E402

PROTOCOL = "sampled"


def arm_rows(csv: str, arm: str, epochs: int) -> pd.DataFrame:
    """One study arm's sampled validation rows: seed, task, NDCG@10, epochs, ran_on (CPU, kernel path)."""
    df = pd.read_csv(csv, comment="#")
    missing = {"seed", "arm", "task", "protocol", "NDCG@10"} - set(df.columns)
    if missing:
        raise SystemExit(f"{csv} is not a paired_study.py CSV (no column {sorted(missing)})")
    rows = df[(df["arm"] == arm) & (df["protocol"] == PROTOCOL)]
    if rows.empty:
        raise SystemExit(f"{csv} has no {PROTOCOL} rows of arm {arm!r}; its arms: {sorted(set(df['arm']))}")
    out = rows[["seed", "task", "NDCG@10"]].assign(epochs=epochs, arm=arm, source=Path(csv).name)
    out["ran_on"] = (rows["cpu"] + ", " + rows["kernel_path"]) if {"cpu", "kernel_path"} <= set(rows) else "unrecorded"
    return out


def baseline_lines(csv: str) -> dict:
    """{task: (method, mean sampled validation NDCG@10 over seeds)} of the best baseline per task."""
    df = pd.read_csv(csv, comment="#")
    if "split" in df and not (df["split"] == "valid").all():
        raise SystemExit(f"{csv} holds rows of split(s) {sorted(set(df['split']))}: baselines here must be "
                         "validation figures (tradeoff.py --split valid), as the study arms are")
    s = df[df["protocol"] == PROTOCOL].groupby(["task", "method"])["NDCG@10"].mean().reset_index()
    best = s.sort_values("NDCG@10").groupby("task").tail(1)
    return {r.task: (r.method, float(r["NDCG@10"])) for _, r in best.iterrows()}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arm", nargs=3, action="append", required=True, metavar=("CSV", "ARM", "EPOCHS"),
                    help="a study CSV, the arm's name in it and the epochs it trained")
    ap.add_argument("--baselines", help="tradeoff.py --split valid CSV: the baselines' validation figures")
    ap.add_argument("--name", default="ml-100k")
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"))
    args = ap.parse_args(argv)
    arms = []
    for csv, arm, epochs in args.arm:
        try:
            e = int(epochs)
        except ValueError:
            raise SystemExit(f"--arm {csv} {arm} {epochs}: EPOCHS must be a whole number of epochs")
        arms.append(arm_rows(csv, arm, e))
    rows = pd.concat(arms, ignore_index=True).drop_duplicates(["epochs", "seed", "task"])
    lines = baseline_lines(args.baselines) if args.baselines else {}

    g = rows.groupby(["task", "epochs"])["NDCG@10"]
    table = g.agg(["mean", "std", "count"]).reset_index()
    per_seed = rows.pivot_table(index=["task", "epochs"], columns="seed", values="NDCG@10").round(4)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cmd = "python benchmarks/budget_curve.py " + " ".join(
        f"--arm {c} {a} {e}" for c, a, e in args.arm) + (f" --baselines {args.baselines}" if args.baselines else "")
    md = [f"# Validation NDCG@10 against the training budget ({args.name})", "",
          f"Command: `{cmd} --name {args.name}` at commit {commit()}. No refit: the rows are the studies' own "
          f"({', '.join(sorted(set(rows['source'])))}); models fitted on {', '.join(sorted(set(rows['ran_on'])))}. "
          f"Sampled protocol (100 candidates), mean ± std over seeds; all validation cases.", "",
          "| task | epochs | seeds | NDCG@10 | per seed | gain over the budget before, on the seeds both have |", "|---|---|---|---|---|---|"]
    for task, t in table.groupby("task", sort=False):
        prev = None
        for r in t.sort_values("epochs").itertuples():
            seeds = per_seed.loc[(task, r.epochs)].dropna()
            gain = ""
            if prev is not None:  # over the seeds both budgets have: a seed's own difference
                shared = seeds.index.intersection(prev.index)
                gain = f"{(seeds[shared] - prev[shared]).mean():+.4f} ({len(shared)} seed{'s' if len(shared) > 1 else ''})" if len(shared) else "-"
            md.append(f"| {task} | {r.epochs} | {int(r.count)} | {r.mean:.4f} ± {0 if np.isnan(r.std) else r.std:.4f} "
                      f"| {', '.join(f'{v:.4f} (seed {s})' for s, v in seeds.items())} | {gain} |")
            prev = seeds
    for task in dict.fromkeys(table["task"]):
        if task not in lines:
            continue
        method, v = lines[task]
        md.append(f"\nBaseline, {task}: {method} {v:.4f} (validation, {PROTOCOL}, mean over its seeds; "
                  f"{args.baselines}).")
    (out / f"budget-curve-{args.name}.md").write_text("\n".join(md) + "\n")

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    tasks = list(dict.fromkeys(rows["task"]))
    fig, axes = plt.subplots(1, len(tasks), figsize=(5 * len(tasks), 4), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        r = rows[rows["task"] == task]
        for i, (seed, rs) in enumerate(r.sort_values("epochs").groupby("seed")):
            ax.plot(rs["epochs"], rs["NDCG@10"], marker=".", lw=0.8, alpha=0.5, color="tab:blue",
                    label="GenSAR, one seed" if i == 0 else None)
        m = table[table["task"] == task].sort_values("epochs")
        ax.plot(m["epochs"], m["mean"], marker="o", color="tab:blue",
                label="GenSAR, mean over the seeds each budget has")
        if task in lines:
            ax.axhline(lines[task][1], ls="--", color="grey", label=f"{lines[task][0]} (validation)")
        ax.set_xscale("log", base=2)
        ax.set_xticks(sorted(set(rows["epochs"])), [str(e) for e in sorted(set(rows["epochs"]))])
        ax.set_xlabel("training epochs (log scale)")
        ax.set_ylabel(f"validation NDCG@10 ({PROTOCOL})")
        ax.set_title(task)
        ax.legend(fontsize=8, loc="lower right")
    fig.suptitle(f"GenSAR on {args.name}: validation quality against budget\nfitted on "
                 + "; ".join(sorted(set(rows["ran_on"]))), fontsize=9)
    fig.tight_layout()
    save_figure(fig, out / f"budget-curve-{args.name}.png", "; ".join(sorted(set(rows["ran_on"]))))
    print("\n".join(md))


if __name__ == "__main__":
    main()
