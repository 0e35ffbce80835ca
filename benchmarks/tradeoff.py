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

Rows are appended to --csv as each method finishes, so a long study can run as
several processes (one seed each, --threads 1 on a 2-core machine) and be
combined afterwards:

    python benchmarks/tradeoff.py --seeds 0 --threads 1 --csv /tmp/s0.csv &
    python benchmarks/tradeoff.py --seeds 1 --threads 1 --csv /tmp/s1.csv &
    wait; python benchmarks/tradeoff.py --merge /tmp/s0.csv /tmp/s1.csv
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

import gensar
from gensar.baselines import BM25Search, DenseSearch, Popularity
from gensar.cli import PRESETS, _load_dataset
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


def run_seed(ds, seed, methods, cfg, progress, csv_path, provenance):
    """All methods for one seed -> list of metric rows (also appended to csv_path)."""
    from gensar.embeddings import SASRec, SentenceEncoder

    rows = []

    def add(table, method, train_s, infer_s):
        table = table.assign(method=method, seed=seed, train_s=train_s, infer_s=infer_s, **provenance)
        rows.extend(table.to_dict("records"))
        new = not Path(csv_path).exists()
        table.to_csv(csv_path, mode="a", header=new, index=False)
        print(table[["method", "task", "protocol", "HR@10", "NDCG@10"]].to_string(index=False), flush=True)

    cfg = dict(cfg, seed=seed)
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
    # The joint-quantiser variants differ only in tasks and in which ID each task
    # uses, so they share one set of identifiers per seed: the comparison then
    # measures the variants, not quantiser noise. Its fit time is charged to each.
    shared_ids, ids_s = None, 0.0
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
            reuse = shared_ids is not None and variant.get("id_method", "joint") == "joint"
            model = gensar.GenSAR(**variant).fit(ds, ids=shared_ids if reuse else None, semantic_embeddings=sem,
                                                 collaborative_embeddings=col, progress=progress)
            if shared_ids is None and variant.get("id_method", "joint") == "joint":
                shared_ids, ids_s = model.ids_, model.timings_["identifiers"]
            train_s = time.perf_counter() - t + sem_s + sasrec_s + (ids_s if reuse else 0.0)
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
                     f"{r.NDCG10_mean:.4f} ± {r.NDCG10_std:.4f} | {r.train_s:.0f} | {r.infer_s:.1f} |")
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
    ap.add_argument("--threads", type=int, default=None, help="OpenMP threads (default: all cores)")
    ap.add_argument("--csv", default=None, help="append raw rows here as methods finish "
                    "(default: <out>/<dataset>.raw.csv, replaced at start)")
    ap.add_argument("--set", default="{}", metavar="JSON",
                    help='GenSAR config overrides on top of the preset, e.g. \'{"epochs": 1}\'')
    ap.add_argument("--merge", nargs="+", default=None, metavar="CSV",
                    help="do not run: combine raw CSVs written by earlier --csv runs into the results")
    args = ap.parse_args()
    if args.threads:
        gensar.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    name = args.dataset.replace("/", "_")
    t0 = time.perf_counter()
    if args.merge:
        df = pd.concat([pd.read_csv(p) for p in args.merge], ignore_index=True)
    else:
        commit = subprocess.run(["git", "describe", "--always", "--dirty"], capture_output=True, text=True,
                                cwd=Path(__file__).parent).stdout.strip() or "unknown"
        provenance = dict(command="python benchmarks/tradeoff.py " + " ".join(sys.argv[1:]), commit=commit,
                          threads=gensar.get_num_threads())
        csv_path = Path(args.csv or out / f"{name}.raw.csv")
        csv_path.unlink(missing_ok=True)
        ds = _load_dataset(args.dataset, args.path)
        cfg = dict(PRESETS[args.preset], **json.loads(args.set))
        for seed in args.seeds:
            run_seed(ds, seed, args.methods, cfg, not args.no_progress, csv_path, provenance)
        df = pd.read_csv(csv_path)
    runs = df.groupby(["command", "commit", "threads"], sort=False)["seed"].unique()
    header = [f"# Trade-off study on {args.dataset}", "",
              f"Test split; mean ± std over seeds {sorted(df['seed'].unique().tolist())}. "
              "Times are seconds per seed (train includes the embeddings and identifiers a method needs). "
              "Produced by:", ""]
    header += [f"- `{cmd}` at commit {commit}, {threads} thread(s), seeds {[int(s) for s in seeds]}"
               for (cmd, commit, threads), seeds in runs.items()]
    header = "\n".join(header)
    with open(out / f"{name}.csv", "w") as f:
        f.write("".join(f"# {line}\n" for line in header.splitlines()[2:] if line))
        df.to_csv(f, index=False)
    summary = summarise(df)
    write_markdown(summary, out / f"{name}.md", header)
    plot(summary, out / f"{name}.png", args.dataset)
    print((out / f"{name}.md").read_text())


if __name__ == "__main__":
    main()
