"""The search / recommendation trade-off study: GenSAR against baselines.

Every method is evaluated on the same dataset, splits, candidate sets and
metrics (test split; sampled = target + 99 negatives, full = whole catalogue):

  popularity             both tasks, no personalisation, no query
  sasrec                 recommendation (SASRec trained in C)
  bm25                   search (BM25 over item text)
  dense                  search (zero-shot sentence-encoder retrieval)
  tiger                  recommendation only, semantic IDs from a single-embedding RQ-VAE
  gensar                 both tasks: collaborative IDs for rec, semantic IDs for search
  gensar_rec_only        GenSAR trained on the recommendation tasks only
  gensar_search_only     GenSAR trained on the search tasks only
  gensar_semantic_ids    GenSAR with semantic IDs for both tasks (paper ablation)
  gensar_collab_ids      GenSAR with collaborative IDs for both tasks (paper ablation)

Writes benchmarks/results/<dataset>.csv (one row per method, seed, task,
protocol), <dataset>.md (mean and spread over seeds of HR@10 / NDCG@10, train
and inference time) and <dataset>.png (search NDCG@10 against recommendation
NDCG@10, one point per method, one panel per protocol).

    python benchmarks/tradeoff.py --dataset ml-100k --seeds 0 1 2
    python benchmarks/tradeoff.py --preset quick --seeds 0 --methods popularity bm25 gensar
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

import gensar
from gensar import datasets
from gensar.baselines import BM25Search, DenseSearch, Popularity
from gensar.cli import PRESETS
from gensar.evaluate import evaluate_scorer

REC_TASKS = {"nrip": 1.0, "item2col": 1.0, "col2item": 1.0}
SEARCH_TASKS = {"nsip": 1.0, "nsqp": 1.0, "adhoc": 1.0, "item2sem": 1.0, "sem2item": 1.0}
GENSAR_VARIANTS = {
    "gensar": {},
    "gensar_rec_only": dict(task_weights=REC_TASKS),
    "gensar_search_only": dict(task_weights=SEARCH_TASKS),
    "gensar_semantic_ids": dict(rec_id="semantic"),
    "gensar_collab_ids": dict(search_id="collaborative"),
    "tiger": dict(id_method="single", rec_id="semantic", task_weights={"nrip": 1.0, "item2sem": 1.0, "sem2item": 1.0}),
}
METHODS = ["popularity", "sasrec", "bm25", "dense", *GENSAR_VARIANTS]


def run_seed(ds, seed, methods, preset, progress):
    """All methods for one seed -> list of metric rows."""
    from gensar.embeddings import SASRec, SentenceEncoder

    rows = []

    def add(table, method, train_s, infer_s):
        table = table.assign(method=method, seed=seed, train_s=train_s, infer_s=infer_s)
        rows.extend(table.to_dict("records"))
        print(table[["method", "task", "protocol", "HR@10", "NDCG@10"]].to_string(index=False), flush=True)

    cfg = dict(PRESETS[preset], seed=seed)
    need_emb = any(m in methods for m in ("dense", "sasrec", *GENSAR_VARIANTS))
    sem = col = None
    if need_emb:
        t = time.perf_counter()
        encoder = SentenceEncoder(cfg.get("sentence_model", "all-MiniLM-L6-v2"))
        sem = encoder.encode(ds.items["text"].tolist(), show_progress=progress)
        sem_s = time.perf_counter() - t
        t = time.perf_counter()
        sasrec = SASRec(epochs=cfg.get("sasrec_epochs", 30), seed=seed, show_progress=progress).fit(ds)
        col = sasrec.item_embeddings_
        sasrec_s = time.perf_counter() - t
    for method in methods:
        t = time.perf_counter()
        if method == "popularity":
            model = Popularity().fit(ds)
            train_s = time.perf_counter() - t
            t = time.perf_counter()
            add(evaluate_scorer(ds, model.score), method, train_s, time.perf_counter() - t)
        elif method == "sasrec":
            t = time.perf_counter()
            add(evaluate_scorer(ds, lambda task, ex: sasrec.score(task, ex, ds), tasks=("rec",)),
                method, sasrec_s, time.perf_counter() - t)
        elif method == "bm25":
            model = BM25Search().fit(ds)
            train_s = time.perf_counter() - t
            t = time.perf_counter()
            add(evaluate_scorer(ds, model.score, tasks=("search",)), method, train_s, time.perf_counter() - t)
        elif method == "dense":
            model = DenseSearch(encoder).fit(ds, item_embeddings=sem)
            t = time.perf_counter()
            add(evaluate_scorer(ds, model.score, tasks=("search",)), method, sem_s, time.perf_counter() - t)
        else:
            variant = dict(cfg, **GENSAR_VARIANTS[method])
            model = gensar.GenSAR(**variant).fit(ds, semantic_embeddings=sem, collaborative_embeddings=col,
                                                 progress=progress)
            train_s = time.perf_counter() - t + sem_s + sasrec_s
            t = time.perf_counter()
            table = model.evaluate("test", progress=progress)
            add(table.drop(columns=["seconds"]), method, train_s, time.perf_counter() - t)
    return rows


def summarise(df: pd.DataFrame) -> pd.DataFrame:
    g = df.groupby(["method", "task", "protocol"], sort=False)
    out = g.agg(seeds=("seed", "nunique"), HR10_mean=("HR@10", "mean"), HR10_std=("HR@10", "std"),
                NDCG10_mean=("NDCG@10", "mean"), NDCG10_std=("NDCG@10", "std"),
                train_s=("train_s", "mean"), infer_s=("infer_s", "mean")).reset_index()
    return out.fillna({"HR10_std": 0.0, "NDCG10_std": 0.0})


def write_markdown(summary, path, header):
    lines = [header, "", "| method | task | protocol | seeds | HR@10 | NDCG@10 | train s | inference s |",
             "|---|---|---|---|---|---|---|---|"]
    for r in summary.itertuples():
        lines.append(f"| {r.method} | {r.task} | {r.protocol} | {r.seeds} | {r.HR10_mean:.4f} ± {r.HR10_std:.4f} | "
                     f"{r.NDCG10_mean:.4f} ± {r.NDCG10_std:.4f} | {r.train_s:.0f} | {r.infer_s:.0f} |")
    Path(path).write_text("\n".join(lines) + "\n")


def plot(summary, path, title):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))
    for ax, protocol in zip(axes, ("sampled", "full")):
        s = summary[summary["protocol"] == protocol]
        rec = s[s["task"] == "rec"].set_index("method")["NDCG10_mean"]
        src = s[s["task"] == "search"].set_index("method")["NDCG10_mean"]
        for m in sorted(set(rec.index) | set(src.index)):
            x, y = rec.get(m, 0.0), src.get(m, 0.0)  # a single-task method sits on an axis
            ax.scatter(x, y, s=40)
            ax.annotate(m, (x, y), fontsize=8, xytext=(3, 3), textcoords="offset points")
        ax.set(xlabel="recommendation NDCG@10", ylabel="search NDCG@10", title=f"{title}: {protocol}")
        ax.grid(alpha=0.3)
    plt.tight_layout()
    fig.savefig(path, dpi=120)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="ml-100k")
    ap.add_argument("--path", default=None, help="local files for loaders other than ml-100k")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--methods", nargs="+", default=METHODS, choices=METHODS)
    ap.add_argument("--preset", default="full", choices=sorted(PRESETS))
    ap.add_argument("--out", default=str(Path(__file__).parent / "results"))
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args()
    ds = datasets.load(args.dataset, args.path) if args.path else datasets.load(args.dataset)
    rows = []
    t0 = time.perf_counter()
    for seed in args.seeds:
        rows += run_seed(ds, seed, args.methods, args.preset, not args.no_progress)
    df = pd.DataFrame(rows)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            cwd=Path(__file__).parent).stdout.strip() or "unknown"
    command = "python benchmarks/tradeoff.py " + " ".join(sys.argv[1:])
    header = (f"# Trade-off study on {args.dataset}\n\ncommand: `{command}`  \ncommit: {commit}  \n"
              f"threads: {gensar.get_num_threads()}, wall time {(time.perf_counter() - t0) / 60:.0f} min, "
              f"seeds {args.seeds}, preset {args.preset}. Test split; mean ± std over seeds.")
    name = args.dataset.replace("/", "_")
    with open(out / f"{name}.csv", "w") as f:
        f.write(f"# command: {command}\n# commit: {commit}\n")
        df.to_csv(f, index=False)
    summary = summarise(df)
    write_markdown(summary, out / f"{name}.md", header)
    plot(summary, out / f"{name}.png", args.dataset)
    print((out / f"{name}.md").read_text())


if __name__ == "__main__":
    main()
