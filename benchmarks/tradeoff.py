"""The search / recommendation trade-off study: GenSAR against baselines.

Every method is evaluated on the same dataset, splits, candidate sets and
metrics (the test split, or validation with --split valid to choose a setting;
protocols of gensar.evaluate: "sampled" = target + 99 negatives, drawn by
popularity for recommendation (the reference's protocol) and from BM25 for search;
"sampled-uniform" = recommendation with uniform negatives; "full" = the whole
catalogue):

  popularity             both tasks, no personalisation, no query
  sasrec                 recommendation (SASRec trained in C, best epoch on validation)
  bm25                   search (BM25 over item text)
  bm25_sasrec            search, the two-model system GenSAR replaces: BM25 top-100
                         re-ranked by the user's SASRec score (mix chosen on validation)
  dense                  search (zero-shot sentence-encoder retrieval)
  tiger                  recommendation only, semantic IDs from a single-embedding RQ-VAE
  gensar                 both tasks: collaborative IDs for rec, semantic IDs for search
  gensar_rec_only        GenSAR trained on the recommendation tasks only
  gensar_search_only     GenSAR trained on the search tasks only
  gensar_semantic_ids    GenSAR with semantic IDs for both tasks (paper ablation)
  gensar_collab_ids      GenSAR with collaborative IDs for both tasks (paper ablation)

Fairness rules. The GenSAR variants share the training budget per task: examples
per epoch of each task are the task weight times one anchor (next-item examples
per epoch), never renormalised over the tasks a variant keeps, so the rec-only
variant sees exactly the joint model's next-item examples (GenSAR.epoch_plan).
They share the schedule (epochs, patience) and, per seed, the identifiers. Every
trained model keeps its best epoch by validation (sampled NDCG@10 on the "valid"
split); test is only evaluated, never used to choose. Several seeds give mean and
std; a paired test over test cases (bootstrap and t-test on per-case NDCG@10,
averaged over seeds) compares GenSAR with the best baseline on each task.

Writes <out>/<dataset>.csv (one row per method, seed, task, protocol), .md (mean
± std over seeds of HR@10 / NDCG@10, times, the significance table), .png (search
against recommendation NDCG@10), and <dataset>.raw.ranks/ (per-case ranks, one
.npz per method and seed, for the paired tests).

    python benchmarks/tradeoff.py --dataset ml-100k --seeds 0 1 2
    python benchmarks/tradeoff.py --preset quick --seeds 0 --methods popularity bm25 gensar

Smoke test of the whole pipeline (tiny models, a few minutes; numbers mean nothing):

    python benchmarks/tradeoff.py --preset smoke --seeds 0 1 --out /tmp/smoke --no-progress

Rows are appended to --csv as each method finishes (ranks go to <csv>.ranks/),
so a long study can run as several processes (one seed each, --threads 1 on a
2-core machine) and be combined afterwards:

    python benchmarks/tradeoff.py --seeds 0 --threads 1 --csv /tmp/s0.csv &
    python benchmarks/tradeoff.py --seeds 1 --threads 1 --csv /tmp/s1.csv &
    wait; python benchmarks/tradeoff.py --merge /tmp/s0.csv /tmp/s1.csv
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _provenance import commit as checkout_commit, save_figure  # noqa: E402

import gensar
from gensar.baselines import BM25SASRecSearch, BM25Search, DenseSearch, Popularity
from gensar.cli import PRESETS, _load_dataset
from gensar.evaluate import evaluate_scorer
from gensar.stats import ndcg_at, paired_test
from gensar.tasks import REC_TASKS, SEARCH_TASKS, TASKS, task_subset

# Variants differ only in which tasks they train and which identifier each task uses;
# task_subset keeps the reference mixture's weight of every task a variant keeps, so
# per-task exposure is the same as the joint model's (see the module docstring).
GENSAR_VARIANTS = {
    "gensar": {},
    "gensar_rec_only": dict(task_weights=task_subset(REC_TASKS)),
    "gensar_search_only": dict(task_weights=task_subset(SEARCH_TASKS)),
    "gensar_semantic_ids": dict(rec_id="semantic"),
    "gensar_collab_ids": dict(search_id="collaborative"),
    "tiger": dict(id_method="single", rec_id="semantic",
                  task_weights=task_subset(("nrip", "item2sem", "sem2item"))),
}
BASELINES = ["popularity", "sasrec", "bm25", "bm25_sasrec", "dense"]
METHODS = [*BASELINES, *GENSAR_VARIANTS]
# What the CSV records of each GenSAR run's training (and SASRec's epochs and validation
# log; empty for the other baselines). valid_curve: the per-epoch log (training loss;
# validation NDCG@10 and teacher-forced losses per task) as JSON, the learning curve the
# best epoch was chosen on.
TRAINING_COLUMNS = ("examples_per_epoch", "epoch_counts", "epochs_run", "best_epoch", "pseudo_queries",
                    "valid_curve")
# Validation cases per task for checkpoint selection when a preset has none.
STUDY_VALID_CASES = 300


def study_config(preset: dict, overrides: dict) -> dict:
    """The GenSAR config of the study: preset + overrides, with validation on, so
    every variant keeps its best epoch by validation (never by test)."""
    cfg = dict(preset, **overrides)
    if int(cfg.get("valid_cases", 300)) <= 0:
        print(f"note: the preset validates on no cases; the study uses valid_cases={STUDY_VALID_CASES} "
              "so checkpoints are chosen on validation", file=sys.stderr)
        cfg["valid_cases"] = STUDY_VALID_CASES
    return cfg


def ranks_dir(csv_path) -> Path:
    p = Path(csv_path)
    return p.with_name(p.stem + ".ranks")


def run_seed(ds, seed, methods, cfg, progress, csv_path, provenance, saved=None, split="test"):
    """All methods for one seed -> list of metric rows (also appended to csv_path;
    per-case ranks saved to ranks_dir(csv_path)/<method>.s<seed>.npz). saved:
    {GenSAR method: directory template with {seed}}, models fitted earlier (e.g. the
    cells of paired_study.py, chosen on validation) that are loaded and evaluated.
    split: the split evaluated ("valid" to choose a setting, e.g. SASRec's epochs)."""
    from gensar.embeddings import SASRec, SentenceEncoder

    saved = saved or {}
    rows = []
    rdir = ranks_dir(csv_path)
    rdir.mkdir(parents=True, exist_ok=True)

    def add(table, method, train_s, infer_s, ranks, **extra):
        extra = {**dict.fromkeys(TRAINING_COLUMNS, ""), **extra}
        table = table.assign(method=method, seed=seed, train_s=train_s, infer_s=infer_s, **extra, **provenance)
        # One column order for every method: rows are appended under one header.
        metrics = [c for c in table.columns if "@" in c]
        table = table[["method", "task", "protocol", "split", "cases", *metrics, "seed", "train_s", "infer_s",
                       *TRAINING_COLUMNS, *provenance]]
        rows.extend(table.to_dict("records"))
        new = not Path(csv_path).exists()
        table.to_csv(csv_path, mode="a", header=new, index=False)
        np.savez(rdir / f"{method}.s{seed}.npz", **{f"{t}|{p}": r for (t, p), r in ranks.items()})
        print(table[["method", "task", "protocol", "HR@10", "NDCG@10"]].to_string(index=False), flush=True)

    def scorer(model_score, method, train_s, tasks=("rec", "search"), **extra):
        t = time.perf_counter()
        ranks = {}
        table = evaluate_scorer(ds, model_score, tasks=tasks, split=split, ranks_out=ranks)
        add(table, method, train_s, time.perf_counter() - t, ranks, **extra)

    cfg = dict(cfg, seed=seed)
    need_emb = any(m in methods and m not in saved for m in ("dense", "sasrec", "bm25_sasrec", *GENSAR_VARIANTS))
    sem = col = None
    if need_emb:
        t = time.perf_counter()
        encoder = SentenceEncoder(cfg.get("sentence_model", "all-MiniLM-L6-v2"))
        sem = encoder.encode(ds.items["text"].tolist(), show_progress=progress)
        sem_s = time.perf_counter() - t
        t = time.perf_counter()
        # one SASRec per seed: the baseline, the re-ranker's scores and GenSAR's collaborative
        # embeddings; trained until its own validation stops improving (sasrec_epochs caps it)
        sasrec = SASRec(epochs=cfg.get("sasrec_epochs", gensar.GenSARConfig.sasrec_epochs), seed=seed,
                        show_progress=progress).fit(ds)
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
            scorer(model.score, method, time.perf_counter() - t)
        elif method == "sasrec":
            # its validation log (full-catalogue NDCG@10 every eval_every epochs): the kept epoch's curve
            scorer(lambda task, ex: sasrec.score(task, ex, ds), method, sasrec_s, tasks=("rec",),
                   epochs_run=max([h["epoch"] for h in sasrec.history_], default=sasrec.epochs),
                   best_epoch=sasrec.best_epoch_, valid_curve=json.dumps(sasrec.history_))
        elif method == "bm25":
            model = BM25Search().fit(ds)
            scorer(model.score, method, time.perf_counter() - t, tasks=("search",))
        elif method == "bm25_sasrec":
            model = BM25SASRecSearch(sasrec).fit(ds)
            print(f"bm25_sasrec: alpha {model.alpha_} chosen on validation {model.valid_curve_}", flush=True)
            scorer(model.score, method, time.perf_counter() - t + sasrec_s, tasks=("search",))
        elif method == "dense":
            model = DenseSearch(encoder).fit(ds, item_embeddings=sem)
            scorer(model.score, method, sem_s, tasks=("search",))
        elif method in saved:
            evaluate_saved(ds, Path(saved[method].format(seed=seed)), method, add, progress, split,
                           expected=dict(cfg, **GENSAR_VARIANTS[method]))
        else:
            variant = dict(cfg, **GENSAR_VARIANTS[method])
            reuse = shared_ids is not None and variant.get("id_method", "joint") == "joint"
            model = gensar.GenSAR(**variant).fit(ds, ids=shared_ids if reuse else None, semantic_embeddings=sem,
                                                 collaborative_embeddings=col, progress=progress)
            if shared_ids is None and variant.get("id_method", "joint") == "joint":
                shared_ids, ids_s = model.ids_, model.timings_["identifiers"]
            train_s = time.perf_counter() - t + sem_s + sasrec_s + (ids_s if reuse else 0.0)
            t = time.perf_counter()
            table = model.evaluate(split, progress=progress)
            st = model.trainer_.state
            add(table.drop(columns=["seconds"]), method, train_s, time.perf_counter() - t, model.eval_ranks_,
                examples_per_epoch=sum(model.epoch_counts_.values()),
                epoch_counts=json.dumps(model.epoch_counts_, sort_keys=True),
                epochs_run=st.epoch, best_epoch=st.best_epoch,
                pseudo_queries=getattr(model, "pseudo_query_source_", ""),
                valid_curve=json.dumps(model.history_.drop(columns=["lr", "seconds"], errors="ignore")
                                       .round(4).to_dict("records")))
    return rows


# The settings that make a GenSAR variant what it is: a saved model evaluated as a
# variant must have been trained with that variant's values of these.
VARIANT_KEYS = ("task_weights", "id_method", "rec_id", "search_id")


def variant_mismatches(config, expected: dict) -> list:
    """The VARIANT_KEYS where a saved model's config differs from the variant's settings
    `expected` (preset + variant overrides; a key missing there means GenSAR's default)."""
    default = gensar.GenSARConfig()
    bad = []
    for key in VARIANT_KEYS:
        want, got = expected.get(key, getattr(default, key)), getattr(config, key)
        if key == "task_weights":  # a task left out weighs 0
            want, got = ({t: float(w.get(t, 0.0)) for t in TASKS} for w in (want, got))
        if want != got:
            bad.append(f"{key}: trained with {got}, the variant needs {want}")
    return bad


def evaluate_saved(ds, directory, method, add, progress, split, expected):
    """A GenSAR model saved by an earlier fit, evaluated on `split` like a fitted one; its
    training log is the saved history_ (or paired_study's history.csv beside it). The
    fit time is not known here: train_s is NaN. expected: the variant's settings; a model
    trained as another variant (e.g. a joint model loaded as gensar_rec_only) is refused."""
    model = gensar.GenSAR.load(directory, dataset=ds)
    bad = variant_mismatches(model.config, expected)
    if bad:
        raise SystemExit(f"--load {method}={directory}: that model was not trained as {method} ("
                         + "; ".join(bad) + "); load it under the method it was trained as")
    history = getattr(model, "history_", None)
    if history is None and (directory / "history.csv").is_file():
        history = pd.read_csv(directory / "history.csv")
    t = time.perf_counter()
    table = model.evaluate(split, progress=progress)
    metric = model.config.metric
    curve = {}
    if history is not None and len(history):
        best = int(history.loc[history[metric].idxmax(), "epoch"]) if metric in history else ""
        curve = dict(epochs_run=int(history["epoch"].max()), best_epoch=best,
                     valid_curve=json.dumps(history.drop(columns=["lr", "seconds"], errors="ignore")
                                            .round(4).to_dict("records")))
    add(table.drop(columns=["seconds"]), method, float("nan"), time.perf_counter() - t, model.eval_ranks_,
        examples_per_epoch=sum(getattr(model, "epoch_counts_", {}).values()),
        epoch_counts=json.dumps(getattr(model, "epoch_counts_", {}), sort_keys=True),
        pseudo_queries=getattr(model, "pseudo_query_source_", ""), **curve)


def load_ranks(csv_paths) -> dict:
    """{(method, seed, task, protocol): ranks} from the ranks directories of csv files."""
    out = {}
    for p in csv_paths:
        d = ranks_dir(p)
        if not d.is_dir():
            continue
        for f in sorted(d.glob("*.s*.npz")):
            method, seed = f.stem.rsplit(".s", 1)
            with np.load(f) as z:
                for key in z.files:
                    task, protocol = key.split("|")
                    out[(method, int(seed), task, protocol)] = z[key]
    return out


# The paper's claim is about GenSAR's own single-task variants: on each task the
# joint model against the variant trained for that task alone.
OWN_VARIANT = {"rec": "gensar_rec_only", "search": "gensar_search_only"}
# Baselines made of two models (what GenSAR replaces): when one is the best, GenSAR is
# also compared with the best single model.
TWO_MODEL = {"bm25_sasrec"}


def significance(summary: pd.DataFrame, ranks: dict, method: str = "gensar", k: int = 10,
                 n_boot: int = 10_000) -> pd.DataFrame:
    """Paired tests of `method` over test cases, on each task and protocol, against
    the best baseline (by mean NDCG@k; if that is a two-model system, also the best
    single model) and against its own single-task variant;
    each case's NDCG@k is averaged over the seeds both methods have."""
    rows = []
    for (task, protocol), s in summary.groupby(["task", "protocol"], sort=False):
        if method not in set(s["method"]):
            continue
        base = s[s["method"].isin(BASELINES)]
        rivals = []
        if not base.empty:
            ranked = base.sort_values("NDCG10_mean", ascending=False)["method"].tolist()
            rivals.append(ranked[0])
            if ranked[0] in TWO_MODEL:
                rivals += [m for m in ranked if m not in TWO_MODEL][:1]
        if OWN_VARIANT.get(task) in set(s["method"]):
            rivals.append(OWN_VARIANT[task])
        for rival in rivals:
            seeds = sorted({sd for (m, sd, t, p) in ranks if m == method and t == task and p == protocol}
                           & {sd for (m, sd, t, p) in ranks if m == rival and t == task and p == protocol})
            if not seeds:
                continue
            a = np.mean([ndcg_at(ranks[(method, sd, task, protocol)], k) for sd in seeds], 0)
            b = np.mean([ndcg_at(ranks[(rival, sd, task, protocol)], k) for sd in seeds], 0)
            r = paired_test(a, b, n_boot=n_boot)
            rows.append({"task": task, "protocol": protocol, "method": method, "baseline": rival,
                         "seeds": len(seeds), **r})
    return pd.DataFrame(rows)


def summarise(df: pd.DataFrame) -> pd.DataFrame:
    g = df.groupby(["method", "task", "protocol"], sort=False)
    out = g.agg(seeds=("seed", "nunique"), HR10_mean=("HR@10", "mean"), HR10_std=("HR@10", "std"),
                NDCG10_mean=("NDCG@10", "mean"), NDCG10_std=("NDCG@10", "std"),
                train_s=("train_s", "mean"), infer_s=("infer_s", "mean")).reset_index()
    return out.fillna({"HR10_std": 0.0, "NDCG10_std": 0.0})


def write_markdown(summary, path, header, sig=None):
    lines = [header, "", "| method | task | protocol | seeds | HR@10 | NDCG@10 | train s | inference s |",
             "|---|---|---|---|---|---|---|---|"]
    for r in summary.itertuples():
        lines.append(f"| {r.method} | {r.task} | {r.protocol} | {r.seeds} | {r.HR10_mean:.4f} ± {r.HR10_std:.4f} | "
                     f"{r.NDCG10_mean:.4f} ± {r.NDCG10_std:.4f} | {r.train_s:.0f} | {r.infer_s:.1f} |")
    if sig is not None and len(sig):
        lines += ["", "## GenSAR against the best baseline and its own single-task variant (paired over test cases)", "",
                  "Per-case NDCG@10 averaged over seeds; difference = GenSAR - baseline; 95% bootstrap "
                  "interval (10,000 resamples of cases); two-sided p-values.", "",
                  "| task | protocol | against | seeds | cases | GenSAR | against | difference [95% CI] "
                  "| p (bootstrap) | p (paired t) |", "|---|---|---|---|---|---|---|---|---|---|"]
        for r in sig.itertuples():
            # No bootstrap resample crossed the observed difference: p is below 1 / resamples.
            p_boot = f"{r.p_bootstrap:.3g}" if r.p_bootstrap > 0 else "< 1e-4"
            lines.append(f"| {r.task} | {r.protocol} | {r.baseline} | {r.seeds} | {r.cases} | {r.mean_a:.4f} | "
                         f"{r.mean_b:.4f} | {r.diff:+.4f} [{r.ci_low:+.4f}, {r.ci_high:+.4f}] | "
                         f"{p_boot} | {r.p_ttest:.3g} |")
    Path(path).write_text("\n".join(lines) + "\n")


def plot(summary, path, title, ran_on) -> list:
    """Both tasks' NDCG@10 per method, one panel per protocol, saved to `path` (`ran_on`:
    the CPUs and kernel paths, in the title and the file's metadata); returns the legend's
    labels (every method once, in both panels' shared order)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12.5, 4.5))
    methods = sorted(summary["method"].unique())
    for ax, protocol in zip(axes, ("sampled", "full")):
        s = summary[summary["protocol"] == protocol]
        rec = s[s["task"] == "rec"].set_index("method")["NDCG10_mean"]
        src = s[s["task"] == "search"].set_index("method")["NDCG10_mean"]
        # a legend, not labels at the points: single-task methods share an axis and sit
        # close together (the rec-only variant beside SASRec), where labels overlap
        for m in sorted(set(rec.index) | set(src.index)):
            x, y = rec.get(m, 0.0), src.get(m, 0.0)  # a single-task method sits on an axis
            i = methods.index(m)  # one marker and colour per method in both panels
            ax.scatter(x, y, s=40, marker="os^Dv<>PX*"[i % 10], color=plt.cm.tab10(i % 10), label=m)
        ax.set(xlabel="recommendation NDCG@10", ylabel="search NDCG@10")
        ax.set_title(f"{protocol} protocol", fontsize=8)
        ax.grid(alpha=0.3)
    fig.suptitle(f"{title}, run on:\n{ran_on}", fontsize=8)  # every CPU, one per line, across both panels
    plt.tight_layout(rect=(0, 0, 0.86, 1))  # the legend, right of both panels, hides no point
    handles = {label: h for ax in axes for h, label in zip(*ax.get_legend_handles_labels())}
    labels = [m for m in methods if m in handles]
    fig.legend([handles[m] for m in labels], labels, fontsize=8, loc="center right")
    save_figure(fig, path, ran_on.replace("\n", "; "), dpi=120)
    plt.close(fig)
    return labels


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="ml-100k")
    ap.add_argument("--path", default=None, help="local files for loaders other than ml-100k")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--methods", nargs="+", default=METHODS, choices=METHODS)
    ap.add_argument("--preset", default="full", choices=sorted(PRESETS),
                    help="GenSAR preset of gensar.cli (smoke: a tiny end-to-end check)")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results"))
    ap.add_argument("--no-progress", action="store_true")
    ap.add_argument("--threads", type=int, default=None, help="OpenMP threads (default: all cores)")
    ap.add_argument("--csv", default=None, help="append raw rows here as methods finish "
                    "(default: <out>/<dataset>.raw.csv, replaced at start)")
    ap.add_argument("--set", default="{}", metavar="JSON",
                    help='GenSAR config overrides on top of the preset, e.g. \'{"epochs": 1}\'')
    ap.add_argument("--split", default="test", choices=["test", "valid"],
                    help="the split evaluated: valid to choose a setting (never test), test for the study")
    ap.add_argument("--load", nargs="+", default=[], metavar="METHOD=DIR",
                    help="evaluate saved GenSAR models instead of fitting METHOD: DIR holds {seed}, e.g. "
                         "gensar=/runs/cells/e15-s{seed} (models chosen on validation by paired_study.py)")
    ap.add_argument("--merge", nargs="+", default=None, metavar="CSV",
                    help="do not run: combine raw CSVs written by earlier --csv runs into the results")
    ap.add_argument("--merge-on-same-machine", action="store_true",
                    help="rows of older CSVs that do not name their CPU ran on this machine")
    args = ap.parse_args()
    if args.threads:
        gensar.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    name = args.dataset.replace("/", "_")
    if args.merge:
        df = pd.concat([pd.read_csv(p, comment="#") for p in args.merge], ignore_index=True)
        rank_sources = args.merge
    else:
        commit = checkout_commit()
        info = gensar.cpu_info()
        provenance = dict(command="python benchmarks/tradeoff.py " + " ".join(sys.argv[1:]), commit=commit,
                          threads=gensar.get_num_threads(), cpu=info["cpu"], kernel_path=info["isa"],
                          precision=info.get("precision", "fp32"))
        csv_path = Path(args.csv or out / f"{name}.raw.csv")
        csv_path.unlink(missing_ok=True)
        shutil.rmtree(ranks_dir(csv_path), ignore_errors=True)
        ds = _load_dataset(args.dataset, args.path)
        cfg = study_config(PRESETS[args.preset], json.loads(args.set))
        saved = dict(kv.split("=", 1) for kv in args.load if "=" in kv)
        if len(saved) != len(args.load) or not set(saved) <= set(GENSAR_VARIANTS):
            raise SystemExit(f"--load takes METHOD=DIR with METHOD one of {sorted(GENSAR_VARIANTS)}; "
                             f"got {args.load}")
        for seed in args.seeds:
            run_seed(ds, seed, args.methods, cfg, not args.no_progress, csv_path, provenance, saved, args.split)
        df = pd.read_csv(csv_path)
        rank_sources = [csv_path]
    if "cpu" not in df or df["cpu"].isna().any():
        # Rows from runs before the CSV named the machine: the merge must run on the
        # machine that ran them (--merge-cpu-note says so in the header).
        if not args.merge_on_same_machine:
            raise SystemExit("some rows do not name their CPU; rerun them, or pass "
                             "--merge-on-same-machine if they ran on this machine")
        info = gensar.cpu_info()
        for col, v in (("cpu", info["cpu"]), ("kernel_path", info["isa"]), ("precision", "fp32")):
            df[col] = df[col].fillna(v) if col in df else v
    runs = df.groupby(["command", "commit", "threads", "cpu", "kernel_path", "precision"], sort=False)["seed"].unique()
    header = [f"# Trade-off study on {args.dataset}", "",
              f"{'Validation' if set(df['split']) == {'valid'} else 'Test'} split; mean ± std over seeds {sorted(df['seed'].unique().tolist())}. "
              "Times are seconds per seed (train includes the embeddings and identifiers a method needs). "
              "Produced by:", ""]
    header += [f"- `{cmd}` at commit {commit}, {threads} thread(s), seeds {[int(s) for s in seeds]}; "
               f"{cpu}, kernel path {path}, {precision} matrix products"
               for (cmd, commit, threads, cpu, path, precision), seeds in runs.items()]
    header = "\n".join(header)
    with open(out / f"{name}.csv", "w") as f:
        f.write("".join(f"# {line}\n" for line in header.splitlines()[2:] if line))
        df.to_csv(f, index=False)
    summary = summarise(df)
    sig = significance(summary, load_ranks(rank_sources))
    write_markdown(summary, out / f"{name}.md", header, sig)
    machines = "\n".join(sorted({f"{c}, {k}" for c, k in zip(df["cpu"], df["kernel_path"])}))
    plot(summary, out / f"{name}.png", args.dataset, machines)
    print((out / f"{name}.md").read_text())


if __name__ == "__main__":
    main()
