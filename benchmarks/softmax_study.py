"""The constrained softmax against the reference's loss, paired over seeds, on validation.

For each seed, two GenSAR models of the quick preset on ml-100k that differ only in
``constrained_softmax`` (False: the reference's full-vocabulary loss and HF-style
beam scores; True: each identifier code trained and scored against the codes valid
after its prefix, see GenSARConfig), fitted and saved under --cache (a model already
there is loaded, not refitted), then evaluated on the validation split: both tasks,
the sampled protocol (100 candidates: popularity negatives for recommendation, BM25
hard negatives for search) and the full catalogue. Test is never looked at.

    python benchmarks/softmax_study.py --cache DIR --seeds 0 1 2 --threads 1

Writes benchmarks/results/softmax-study-ml-100k.{md,csv}: NDCG@10 and HR@10 per
seed and variant, the mean difference with a paired t over seeds and a paired t
over every (seed, case) pair of per-case NDCG@10.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _provenance import commit, md_table  # noqa: E402

import gensar  # noqa: E402
from gensar import datasets  # noqa: E402
from gensar.cli import PRESETS  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
VARIANTS = {"reference": False, "constrained": True}


def case_ndcg(ranks, k=10):
    """Per-case NDCG@k from 0-based target ranks (-1: not in the list)."""
    r = np.asarray(ranks)
    return np.where((r >= 0) & (r < k), 1.0 / np.log2(r + 2.0), 0.0)


def paired_t(d):
    """(t, two-sided p) of a paired t-test on differences d (normal approximation
    for many pairs, Student's t via scipy when it is there)."""
    d = np.asarray(d, float)
    n = len(d)
    if n < 2 or d.std(ddof=1) == 0:
        return float("nan"), float("nan")
    t = d.mean() / (d.std(ddof=1) / np.sqrt(n))
    try:
        from scipy import stats

        p = 2 * stats.t.sf(abs(t), n - 1)
    except ImportError:
        from math import erfc, sqrt

        p = erfc(abs(t) / sqrt(2))
    return float(t), float(p)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cache", required=True, help="folder of the saved models (<variant>-s<seed>)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--threads", type=int, default=0)
    args = ap.parse_args(argv)
    if args.threads:
        gensar.set_num_threads(args.threads)
    t0 = time.perf_counter()
    ds = datasets.load("ml-100k", seed=0)
    rows, per_case = [], {}
    for seed in args.seeds:
        for variant, on in VARIANTS.items():
            d = Path(args.cache) / f"{variant}-s{seed}"
            if (d / "manifest.json").is_file():
                model = gensar.GenSAR.load(d, dataset=ds)
            else:
                model = gensar.GenSAR(**dict(PRESETS["quick"], seed=seed, constrained_softmax=on)).fit(ds)
                model.save(d)
            if model.config.constrained_softmax != on or model.config.seed != seed:
                raise SystemExit(f"{d} holds another model (constrained_softmax "
                                 f"{model.config.constrained_softmax}, seed {model.config.seed})")
            table = model.evaluate("valid", protocols=("sampled", "full"), progress=False)
            for r in table.to_dict("records"):
                rows.append({"seed": seed, "variant": variant, "task": r["task"], "protocol": r["protocol"],
                             "cases": r["cases"], "HR@10": r["HR@10"], "NDCG@10": r["NDCG@10"]})
            for key, ranks in model.eval_ranks_.items():
                per_case[(seed, variant) + key] = case_ndcg(ranks)
            print(f"seed {seed} {variant}: done ({time.perf_counter() - t0:.0f} s)", flush=True)
    df = pd.DataFrame(rows)
    RESULTS.mkdir(exist_ok=True)
    df.to_csv(RESULTS / "softmax-study-ml-100k.csv", index=False)

    summary = []
    for (task, protocol), g in df.groupby(["task", "protocol"], sort=False):
        piv = g.pivot(index="seed", columns="variant", values="NDCG@10")
        diff = piv["constrained"] - piv["reference"]
        t_seeds, p_seeds = paired_t(diff)
        cases = np.concatenate([per_case[(s, "constrained", task, protocol)] - per_case[(s, "reference", task, protocol)]
                                for s in args.seeds])
        t_cases, p_cases = paired_t(cases)
        summary.append({"task": task, "protocol": protocol,
                        "reference NDCG@10": f"{piv['reference'].mean():.4f} ± {piv['reference'].std(ddof=1):.4f}",
                        "constrained NDCG@10": f"{piv['constrained'].mean():.4f} ± {piv['constrained'].std(ddof=1):.4f}",
                        "difference per seed": ", ".join(f"{v:+.4f}" for v in diff),
                        "mean difference": f"{diff.mean():+.4f}",
                        "paired t over seeds (p)": f"{t_seeds:.2f} ({p_seeds:.3f})",
                        "paired t over seed x case (p)": f"{t_cases:.2f} ({p_cases:.2g})"})
    info = gensar.cpu_info()
    text = "\n".join([
        "# Constrained softmax vs the reference's loss (ml-100k, validation)", "",
        f"Command: `python benchmarks/softmax_study.py --cache {args.cache} --seeds "
        f"{' '.join(map(str, args.seeds))}` at commit {commit()}; CPU {info['cpu']}, kernel path "
        f"{info['isa']}; {time.perf_counter() - t0:.0f} s here (fits cached: they ran before, 1 thread each, "
        "two at a time).", "",
        "Quick preset (1 epoch, d_model 128, 2 + 2 layers, the reference's task mixture), one model per "
        "seed and variant, the same data split (dataset seed 0) for all. NDCG@10, mean ± std over seeds; "
        "validation cases: 943 rec, 942 search.", "",
        md_table(pd.DataFrame(summary)), "",
        "Per seed:", "",
        md_table(df.sort_values(["task", "protocol", "seed", "variant"])), ""])
    (RESULTS / "softmax-study-ml-100k.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
