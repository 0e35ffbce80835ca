"""Learning curve of GenSAR on ml-100k: validation NDCG@10 of recommendation and
search after every epoch, against the number of training examples seen.

    python benchmarks/learning_curve.py --preset quick --epochs 12 --out /tmp/lc-quick
    python benchmarks/learning_curve.py --preset quick --set lr=1e-3 --set n_rec=20 --out /tmp/lc-b

Every setting comes from a CLI preset (gensar/cli.py) plus `--set key=value`
overrides (GenSARConfig fields, values parsed as JSON where they parse). The
cosine schedule spans all `--epochs`, validation (the sampled protocol,
`--valid-cases` cases per task, on the validation split only) runs after each
epoch, early stopping is off (patience 0) so the curve runs to the end.
Item embeddings are cached in `--cache` (semantic: the sentence encoder; collaborative:
SASRec with the preset's epochs and the run's seed), so variants share them.
Checkpoints go to OUT/checkpoints: running the same command again resumes.

Writes OUT/run.json (command, commit, CPU and kernel path, config) and, at the
end, OUT/learning-curve-<OUT name>.{csv,md,png} (epoch, examples_seen, train loss,
validation metrics, seconds, CPU and kernel path).

    python benchmarks/learning_curve.py --report /tmp/lc-quick --results benchmarks/results

reads the epochs done so far (also of a run still going or stopped) and writes
RESULTS/learning-curve-<name>.{csv,md,png};

    python benchmarks/learning_curve.py --baselines --results benchmarks/results

writes the baselines' validation NDCG@10 on the same cases (popularity, SASRec,
BM25) that the report draws beside the curve.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _provenance import commit, md_table, save_figure  # noqa: E402
import pandas as pd

import gensar
from gensar import datasets
from gensar.cli import PRESETS


def parse_sets(pairs):
    out = {}
    for p in pairs:
        key, _, raw = p.partition("=")
        if not key or not _:
            raise SystemExit(f"--set wants key=value, got {p!r}")
        try:
            out[key] = json.loads(raw)
        except json.JSONDecodeError:
            out[key] = raw
    return out


def cached_embeddings(ds, cache: Path, sasrec_epochs: int, seed: int):
    """(semantic, collaborative) item embeddings, computed once per setting."""
    from gensar.embeddings import SASRec, SentenceEncoder

    cache.mkdir(parents=True, exist_ok=True)
    sem_path = cache / "semantic-minilm.npy"
    col_path = cache / f"collaborative-sasrec-e{sasrec_epochs}-s{seed}.npy"
    if not sem_path.is_file():
        np.save(sem_path, SentenceEncoder().encode(ds.items["text"].tolist(), show_progress=False))
    if not col_path.is_file():
        model = SASRec(epochs=sasrec_epochs, seed=seed, show_progress=False).fit(ds)
        np.save(col_path, model.item_embeddings_)
    return np.load(sem_path), np.load(col_path)




def validation_baselines(cases: int, sasrec_epochs: int, seed: int = 0) -> dict:
    """Validation NDCG@10 (sampled protocol, the first `cases` cases, as GenSAR's
    validation) of popularity and SASRec (recommendation), BM25 (search): the lines
    a learning curve is read against."""
    from gensar.baselines import BM25SASRecSearch, BM25Search, Popularity
    from gensar.embeddings import SASRec
    from gensar.evaluate import evaluate_scorer
    from gensar.metrics import metrics_from_ranks

    ds = datasets.load("ml-100k")
    out = {}
    sasrec = SASRec(epochs=sasrec_epochs, seed=seed, show_progress=False).fit(ds)
    # BM25+SASRec picks its mixing weight on these validation cases: its line is an
    # upper bound of what the two-model system scores on unseen cases.
    for name, fn, tasks in (("popularity", Popularity().fit(ds).score, ("rec", "search")),
                            ("SASRec", lambda t, ex: sasrec.score(t, ex, ds), ("rec",)),
                            ("BM25", BM25Search().fit(ds).score, ("search",)),
                            ("BM25+SASRec", BM25SASRecSearch(sasrec).fit(ds).score, ("search",))):
        ranks = {}
        evaluate_scorer(ds, fn, tasks=tasks, split="valid", protocols=("sampled",), ranks_out=ranks)
        for (task, _), r in ranks.items():
            out[f"{name} {task}"] = float(metrics_from_ranks(np.asarray(r)[:cases], (10,))["NDCG@10"])
    return out


def baselines_path(results: Path, cases) -> Path:
    """Where the baselines' validation NDCG@10 on the first `cases` cases is kept
    (one file per case count: a curve is only read against the same cases)."""
    return results / f"validation-baselines-ml-100k-c{cases}.json"


def report(run_dir: Path, results: Path) -> None:
    """Curve so far of the run in run_dir (its checkpoint's trainer state) ->
    results/learning-curve-<run name>.{csv,md,png}."""
    info = json.loads((run_dir / "run.json").read_text())
    state = json.loads((run_dir / "checkpoints" / "last" / "trainer.json").read_text())
    hist = pd.DataFrame(state["history"])
    if hist.empty:
        raise SystemExit(f"{run_dir}: no epoch finished yet")
    done = state["epoch"]
    steps_per_epoch = (state["step"] - state["batch_in_epoch"]) / max(1, done)
    batch = info["config"].get("batch_size", 64)
    hist.insert(1, "examples_seen", (hist["epoch"] * steps_per_epoch * batch).round().astype(int))
    name = run_dir.name
    results.mkdir(parents=True, exist_ok=True)
    # every row names the machine and kernel path: figures from other CPUs are not comparable
    hist["cpu"] = info["cpu"]["cpu"]
    hist["kernel_path"] = info["cpu"]["isa"]
    hist["threads"] = info["cpu"]["threads"]
    hist.to_csv(results / f"learning-curve-{name}.csv", index=False)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    colors = {"rec": "C0", "search": "C1"}
    for col, label, task in (("rec_NDCG@10", "GenSAR recommendation", "rec"),
                             ("search_NDCG@10", "GenSAR search", "search")):
        if col in hist:
            ax.plot(hist["examples_seen"], hist[col], marker="o", label=label, color=colors[task])
    base_path = baselines_path(results, info["config"].get("valid_cases"))
    base = json.loads(base_path.read_text()) if base_path.is_file() else {}
    for key, v in base.items():
        method, task = key.rsplit(" ", 1)
        ax.axhline(v, ls="--" if method != "popularity" else ":", color=colors[task], alpha=0.6)
        ax.annotate(key, (0.01, v), xycoords=("axes fraction", "data"), xytext=(0, 2),
                    textcoords="offset points", fontsize=7, color=colors[task])
    ax.set_xlabel("training examples seen")
    ax.set_ylabel("validation NDCG@10 (sampled, 100 candidates)")
    precision = info["cpu"].get("precision", "fp32")  # opt-in bf16 runs say so (older runs: fp32)
    path = info["cpu"]["isa"] if precision == "fp32" else f"{info['cpu']['isa']}, {precision} products"
    ax.set_title(f"GenSAR on ml-100k: {name}\n{info['cpu']['cpu']}\nkernel path {path}, "
                 f"{info['cpu']['threads']} thread(s)", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    save_figure(fig, results / f"learning-curve-{name}.png",
                f"{info['cpu']['cpu']}, kernel path {path}, {info['cpu']['threads']} thread(s)", dpi=120)
    cfg = info["config"]
    total = cfg.get("epochs")
    lines = [f"# Learning curve: {name}", "",
             f"Command: `{info['command']}` at commit {info['commit']}, started {info['started']}.",
             f"CPU: {info['cpu']['cpu']}, kernel path {info['cpu']['isa']}, {info['cpu']['threads']} thread(s) "
             f"(other work shared the machine: seconds are indicative only).", "",
             f"{done} of {total} epochs done (cosine schedule over all {total}: the learning rate is still "
             f"high in early epochs, so later points also reflect the decay). Validation split only, "
             f"{cfg.get('valid_cases')} cases per task, sampled protocol (popularity negatives for "
             f"recommendation, BM25 hard negatives for search).", "",
             "Settings (the preset plus overrides; everything else is GenSARConfig's default): "
             + ", ".join(f"{k}={v}" for k, v in sorted(cfg.items())) + ".", "",
             md_table(hist), "",
             ("Baselines on the same validation cases (dashed in the plot): "
              + ", ".join(f"{k} {v:.4f}" for k, v in base.items()) + ".") if base else "",
             "",
             f"![validation NDCG@10 against examples seen](learning-curve-{name}.png)", ""]
    (results / f"learning-curve-{name}.md").write_text("\n".join(lines))
    print("\n".join(lines))


def main():
    if "--baselines" in sys.argv:
        ap = argparse.ArgumentParser()
        ap.add_argument("--baselines", action="store_true")
        ap.add_argument("--valid-cases", type=int, default=200)
        ap.add_argument("--sasrec-epochs", type=int, default=gensar.GenSARConfig.sasrec_epochs)
        ap.add_argument("--threads", type=int, default=1)
        ap.add_argument("--results", default=str(Path(__file__).parent / "results"))
        a = ap.parse_args()
        gensar.set_num_threads(a.threads)
        base = validation_baselines(a.valid_cases, a.sasrec_epochs)
        Path(a.results).mkdir(parents=True, exist_ok=True)
        baselines_path(Path(a.results), a.valid_cases).write_text(json.dumps(base, indent=1))
        return print(base)
    if "--report" in sys.argv:
        ap = argparse.ArgumentParser()
        ap.add_argument("--report", required=True)
        ap.add_argument("--results", default=str(Path(__file__).parent / "results"))
        a = ap.parse_args()
        return report(Path(a.report), Path(a.results))
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="quick", choices=sorted(PRESETS))
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--valid-cases", type=int, default=300)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--cache", default=str(Path.home() / ".cache" / "gensar" / "embeddings-ml-100k"))
    ap.add_argument("--out", required=True)
    ap.add_argument("--progress", action="store_true")
    args = ap.parse_args()
    gensar.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cfg = dict(PRESETS[args.preset])
    cfg.update(epochs=args.epochs, seed=args.seed, valid_cases=args.valid_cases, patience=0)
    cfg.update(parse_sets(args.set))
    ds = datasets.load("ml-100k")
    t0 = time.perf_counter()
    sasrec_epochs = cfg.get("sasrec_epochs", gensar.GenSARConfig.sasrec_epochs)
    sem, col = cached_embeddings(ds, Path(args.cache), sasrec_epochs, args.seed)
    (out / "run.json").write_text(json.dumps(dict(
        command=" ".join([Path(sys.executable).name] + sys.argv), commit=commit(),
        cpu=gensar.cpu_info(), config=cfg, started=time.strftime("%Y-%m-%d %H:%M:%S")), indent=1))
    model = gensar.GenSAR(**cfg)
    model.fit(ds, semantic_embeddings=sem, collaborative_embeddings=col,
              checkpoint_dir=out / "checkpoints", progress=args.progress)
    model.save(out / "model")  # for diagnostics (GenSAR.load(path, dataset=ds))
    report(out, out)  # the same table, CSV and plot as --report, in OUT
    print(f"wall time {time.perf_counter() - t0:.0f} s; timings {model.timings_}")


if __name__ == "__main__":
    main()
