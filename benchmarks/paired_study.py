"""Two GenSAR settings compared on the validation split, paired over seeds.

Each arm is a name plus settings: lower-case ``key=value`` pairs override the preset's
GenSAR config (values are JSON: ``epochs=3``, ``constrained_softmax=false``),
upper-case ``KEY=value`` pairs are environment variables of the arm's process
(``GENSAR_KEEP_DENORMALS=1``). Every (seed, arm) is fitted and evaluated in its own
child process (an environment variable can only act from a process's start), saved
under ``--cache/<arm>-s<seed>`` with its validation table and per-case ranks; a
finished cell is reused, not refitted; a cell stopped midway resumes from its
checkpoints, and its log.txt has one line per epoch (loss, validation NDCG@10).
Evaluation: both tasks, the sampled protocol (100 candidates: popularity negatives for
recommendation, BM25 hard negatives for search) and the full catalogue. Test is never
looked at. The second arm is compared with the first: mean difference, a paired t over
seeds and over every (seed, case).

    python benchmarks/paired_study.py --name softmax --cache DIR --seeds 0 1 2 --threads 1 --jobs 2 \\
        --arm reference constrained_softmax=false --arm constrained constrained_softmax=true
    python benchmarks/paired_study.py --name denormals --cache DIR --seeds 0 1 2 --threads 1 --jobs 2 \\
        --arm keep GENSAR_KEEP_DENORMALS=1 --arm flush

The first arm can come from an earlier study instead (``--earlier CSV``: that
study's per-seed rows of the arm named first; its cells are not refitted). Its
per-case ranks are not in the CSV, so the comparison is then paired over seeds only.
Likewise a second-arm cell whose model is gone (it went with the machine that fitted it)
can be stood in for by its rows in an earlier study's CSV (``--reuse CSV``; only for the
seeds missing from --cache).

    python benchmarks/paired_study.py --name e15 --cache DIR --preset full --seeds 0 1 2 --jobs 2 \\
        --earlier benchmarks/results/untied-e10-study-ml-100k.csv --arm e10-untied --arm e15 epochs=15

Writes benchmarks/results/<name>-study-ml-100k.{md,csv}, and when the cells logged
their epochs (history.csv), the mean validation curve per arm:
<name>-study-ml-100k-curves.{csv,png}.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

if "--worker" in sys.argv:
    # A cell's output goes to a log file read hours later: its progress bars redraw
    # once a minute there, between the one line per epoch (read by tqdm on import).
    os.environ.setdefault("TQDM_MININTERVAL", "60")

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _child import BASE_ENV  # noqa: E402  (the user's environment, before gensar's import)
from _provenance import commit, md_table, save_figure  # noqa: E402

import gensar  # noqa: E402
from gensar import datasets  # noqa: E402
from gensar.cli import PRESETS  # noqa: E402
from gensar.stats import ndcg_at, paired_test  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def parse_arm(tokens):
    """["name", "k=v", "ENV=v", ...] -> {"name", "config": {...}, "env": {...}}."""
    if not tokens or "=" in tokens[0]:
        raise SystemExit(f"--arm needs a name first, then key=value settings; got {tokens}")
    arm = {"name": tokens[0], "config": {}, "env": {}}
    for kv in tokens[1:]:
        key, sep, value = kv.partition("=")
        if not sep or not key:
            raise SystemExit(f"arm {tokens[0]}: setting {kv!r} is not key=value")
        if key.isupper():
            arm["env"][key] = value
        else:
            try:
                arm["config"][key] = json.loads(value)
            except json.JSONDecodeError:
                arm["config"][key] = value  # a bare string, e.g. id_mode=semantic
    return arm


def recorded_fit(cell_dir: Path) -> tuple[float, bool]:
    """(fit seconds, resumed) as a cell's earlier evaluation recorded them (a finished cell
    run again only re-evaluates its saved model, and must not lose them); (NaN, False)
    when none were recorded (e.g. a model copied from an earlier study)."""
    try:
        row = pd.read_csv(cell_dir / "eval.csv").iloc[0]
        return float(row["fit_s"]), bool(row.get("resumed", False))
    except (FileNotFoundError, KeyError, IndexError, ValueError, pd.errors.EmptyDataError):
        return float("nan"), False


def worker(args):
    """One cell: fit (or load) the arm's model for one seed, evaluate on validation,
    write eval.csv and ranks.npz beside the saved model."""
    arm = json.loads(args.worker)
    out = Path(args.out)
    if args.threads:
        gensar.set_num_threads(args.threads)
    ds = datasets.load("ml-100k", seed=0)
    t0 = time.perf_counter()
    fitted = not (out / "manifest.json").is_file()
    # a fit resumed from checkpoints (a session's end stopped it) ran in several
    # processes: this one's seconds are not the fit's, and the others' are not known
    resumed = fitted and (out / "checkpoints" / "last").is_dir()
    if not fitted:  # a model saved there before (e.g. copied from an earlier study)
        model = gensar.GenSAR.load(out, dataset=ds)
    else:
        # checkpoints: a cell stopped midway (a session's end) resumes where it was
        model = gensar.GenSAR(**dict(PRESETS[args.preset], seed=args.seed, **arm["config"])).fit(
            ds, progress=True, checkpoint_dir=out / "checkpoints")
        model.save(out)
        # the learning curve the best epoch was chosen on (validation cases of the preset)
        model.history_.to_csv(out / "history.csv", index=False)
    if not fitted:
        fit_s, resumed = recorded_fit(out)
    else:
        fit_s = float("nan") if resumed else round(time.perf_counter() - t0, 1)
    table = model.evaluate("valid", protocols=("sampled", "full"), progress=False)
    table.insert(0, "fit_s", fit_s)
    table.insert(1, "resumed", resumed)
    info = gensar.cpu_info()  # every cell names the CPU, kernel path and code it ran on
    # the kernel path names the bf16 product kernel too when the arm ran with bf16 products
    path = info["isa"] + (f" + {info['sgemm_kernel']}" if info["precision"] != "fp32" else "")
    table["cpu"], table["kernel_path"], table["commit"] = info["cpu"], path, commit()
    table.to_csv(out / "eval.csv", index=False)
    np.savez(out / "ranks.npz", **{f"{t}|{p}": np.asarray(r) for (t, p), r in model.eval_ranks_.items()})


def claim(cell_dir: Path) -> bool:
    """Takes a cell for this study: False while another live study fits it (two studies
    sharing a cache, e.g. the same baseline arm, then fit each cell once)."""
    cell_dir.mkdir(parents=True, exist_ok=True)
    lock = cell_dir / "fitting.pid"
    try:
        fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        try:
            os.kill(int(lock.read_text() or 0), 0)
            return False  # its owner still runs
        except (ProcessLookupError, ValueError):
            lock.unlink(missing_ok=True)  # left by a study that died: take it over
            return claim(cell_dir)
    with os.fdopen(fd, "w") as f:
        f.write(str(os.getpid()))
    return True


def run_cells(cells, args):
    """Runs the missing cells as child processes, at most --jobs at a time; a cell another
    study is fitting is waited for, not fitted twice."""
    todo = [c for c in cells if not (c["dir"] / "eval.csv").is_file()]
    running = []
    while todo or running:
        waiting = []
        while todo and len(running) < args.jobs:
            c = todo.pop(0)
            if (c["dir"] / "eval.csv").is_file():
                continue  # finished by another study meanwhile
            if not claim(c["dir"]):
                waiting.append(c)
                continue
            env = dict(BASE_ENV, OMP_NUM_THREADS=str(args.threads or 1), **c["arm"]["env"])
            cmd = [sys.executable, os.path.abspath(__file__), "--worker", json.dumps(c["arm"]),
                   "--out", str(c["dir"]), "--seed", str(c["seed"]), "--preset", args.preset,
                   "--threads", str(args.threads)]
            log = open(c["dir"] / "log.txt", "w")
            running.append((c, subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT), log))
            print(f"started {c['arm']['name']} seed {c['seed']}", flush=True)
        todo = waiting + todo
        if waiting and not running and len(todo) == len(waiting):
            time.sleep(30)  # only cells another study is fitting are left
        time.sleep(2)
        for item in list(running):
            c, proc, log = item
            if proc.poll() is not None:
                log.close()
                (c["dir"] / "fitting.pid").unlink(missing_ok=True)
                running.remove(item)
                if proc.returncode:
                    raise SystemExit(f"{c['arm']['name']} seed {c['seed']} failed; see {c['dir'] / 'log.txt'}")
                print(f"finished {c['arm']['name']} seed {c['seed']}", flush=True)


def arm_rows(path, arm, seeds) -> pd.DataFrame:
    """The rows of `arm` for `seeds` in an earlier study's CSV."""
    df = pd.read_csv(path)
    return df[(df["arm"] == arm) & df["seed"].isin(seeds)]


def load_earlier(path, arm, seeds) -> list:
    """The rows of `arm` in an earlier study's CSV, one per seed, task and protocol."""
    df = arm_rows(path, arm, seeds)
    missing = sorted(set(seeds) - set(df["seed"]))
    if missing:
        raise SystemExit(f"{path} has no rows of arm {arm!r} for seeds {missing}")
    return df.to_dict("records")


def load_reused(path, arm, seeds, cache) -> dict:
    """seed -> the rows of `arm` in an earlier study's CSV for each of `seeds` whose cell is
    not in `cache` (its model gone with the machine that fitted it), marked as reused."""
    df = arm_rows(path, arm, seeds)
    gone = [s for s in sorted(set(df["seed"])) if not (Path(cache) / f"{arm}-s{s}" / "eval.csv").is_file()]
    if not gone:
        raise SystemExit(f"--reuse {path}: it has no rows of arm {arm!r} for a seed whose cell is missing "
                         f"from {cache} (seeds {seeds})")
    return {s: df[df["seed"] == s].assign(reused_from=str(path)).to_dict("records") for s in gone}


def earlier_curves(path, arm):
    """The earlier study's mean curve of `arm` (its <name>-curves.csv beside the CSV, written
    by this script) and where its cells ran (None if not named), or (None, None) when that
    study logged none."""
    f = Path(path).with_name(Path(path).stem + "-curves.csv")
    c = pd.read_csv(f) if f.is_file() else pd.DataFrame(columns=["arm"])
    c = c[c["arm"] == arm]
    if c.empty:
        return None, None
    where = "; ".join(sorted(set(c["cpu"].dropna()))) if "cpu" in c else ""
    return c.drop(columns=["cpu"], errors="ignore"), where or None


def learning_curves(cells):
    """Per arm and epoch, the mean over seeds of the cells' history.csv columns (validation
    NDCG@10 and teacher-forced losses), or None when no cell logged its epochs."""
    frames = []
    for c in cells:
        f = c["dir"] / "history.csv"
        if f.is_file():
            h = pd.read_csv(f).drop(columns=["lr", "seconds"], errors="ignore")
            h["best"] = (h["epoch"] == h.loc[h["NDCG@10"].idxmax(), "epoch"]).astype(int) if "NDCG@10" in h else 0
            frames.append(h.assign(arm=c["arm"]["name"], seed=c["seed"]))
    if not frames:
        return None
    h = pd.concat(frames, ignore_index=True)
    agg = {col: "mean" for col in h.columns if col not in ("arm", "seed", "epoch", "best")}
    out = h.groupby(["arm", "epoch"], sort=False).agg({**agg, "best": "sum", "seed": "nunique"})
    return out.rename(columns={"seed": "seeds"}).reset_index()


def plot_curves(curves, path, title, ran_on):
    """One panel per task's validation NDCG@10 against the epoch; `ran_on`: arm -> where its
    cells ran (CPU, kernel path, environment), named in the figure's title."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = [c for c in curves.columns if c.endswith("_NDCG@10")]
    fig, axes = plt.subplots(1, max(len(tasks), 1), figsize=(5 * max(len(tasks), 1), 4), squeeze=False)
    for ax, col in zip(axes[0], tasks):
        for arm, g in curves.groupby("arm", sort=False):
            n = int(g["seeds"].max())
            ax.plot(g["epoch"], g[col], marker="o", label=f"{arm} (mean of {n} seed{'s' * (n > 1)})")
        ax.set(xlabel="epoch", ylabel=f"validation {col}")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title + "\n" + "\n".join(f"{arm}: {where}" for arm, where in ran_on.items()), fontsize=8)
    plt.tight_layout()
    save_figure(fig, path, "; ".join(f"{arm}: {where}" for arm, where in ran_on.items()))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--name", help="study name: results go to results/<name>-study-ml-100k.*")
    ap.add_argument("--cache", help="folder of the fitted cells (<arm>-s<seed>)")
    ap.add_argument("--arm", action="append", nargs="+", default=[], metavar="NAME [k=v ...]",
                    help="an arm: a name, then config overrides (lower case) and env variables (UPPER case)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--preset", default="quick", choices=sorted(PRESETS))
    ap.add_argument("--threads", type=int, default=1, help="threads per cell")
    ap.add_argument("--jobs", type=int, default=1, help="cells run at once")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    ap.add_argument("--seed", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--earlier", metavar="CSV", help="the first arm's rows from this earlier study's CSV "
                    "(not refitted; compared over seeds only)")
    ap.add_argument("--reuse", metavar="CSV", help="the second arm's rows for the seeds whose cell is gone "
                    "(not in --cache), from this earlier study's CSV (not refitted; compared over seeds only)")
    args = ap.parse_args(argv)
    if args.worker:
        return worker(args)
    if not args.name or not args.cache or len(args.arm) != 2:
        ap.error("--name, --cache and exactly two --arm are required")
    arms = [parse_arm(a) for a in args.arm]
    if arms[0]["name"] == arms[1]["name"]:
        ap.error("the two arms need different names")
    t0 = time.perf_counter()
    code = commit()
    earlier = load_earlier(args.earlier, arms[0]["name"], args.seeds) if args.earlier else []
    reused = load_reused(args.reuse, arms[1]["name"], args.seeds, args.cache) if args.reuse else {}
    cells = [{"arm": a, "seed": s, "dir": Path(args.cache) / f"{a['name']}-s{s}"} for s in args.seeds
             for a in (arms[1:] if args.earlier else arms) if not (a is arms[1] and s in reused)]
    run_cells(cells, args)

    rows, per_case = list(earlier) + [r for s in sorted(reused) for r in reused[s]], {}
    for c in cells:
        table = pd.read_csv(c["dir"] / "eval.csv")
        ranks = np.load(c["dir"] / "ranks.npz")
        for r in table.to_dict("records"):
            rows.append({"seed": c["seed"], "arm": c["arm"]["name"], "task": r["task"], "protocol": r["protocol"],
                         "cases": r["cases"], "HR@10": r["HR@10"], "NDCG@10": r["NDCG@10"], "fit_s": r["fit_s"],
                         "resumed": bool(r.get("resumed", False)),
                         **{k: r.get(k, "unrecorded") for k in ("cpu", "kernel_path", "commit")}})
            per_case[(c["seed"], c["arm"]["name"], r["task"], r["protocol"])] = \
                ndcg_at(ranks[f"{r['task']}|{r['protocol']}"])
    df = pd.DataFrame(rows)
    a, b = arms[0]["name"], arms[1]["name"]
    summary, one_arm_only = [], []
    for (task, protocol), g in df.groupby(["task", "protocol"], sort=False):
        piv = g.pivot(index="seed", columns="arm", values="NDCG@10")
        if a not in piv or b not in piv:  # e.g. a rec-only variant has no search rows
            one_arm_only.append(f"{task} {protocol} ({', '.join(piv.columns)} only)")
            continue
        diff = piv[b] - piv[a]
        # over seeds needs two of them: a one-seed probe reports the test over cases only
        over_seeds = paired_test(piv[b].to_numpy(), piv[a].to_numpy()) if len(piv) > 1 else None
        over_cases = None if args.earlier or reused else paired_test(
            *(np.concatenate([per_case[(s, arm, task, protocol)] for s in args.seeds]) for arm in (b, a)))
        summary.append({"task": task, "protocol": protocol,
                        f"{a} NDCG@10": f"{piv[a].mean():.4f} ± {piv[a].std(ddof=1):.4f}",
                        f"{b} NDCG@10": f"{piv[b].mean():.4f} ± {piv[b].std(ddof=1):.4f}",
                        "difference per seed": ", ".join(f"{v:+.4f}" for v in diff),
                        "mean difference": f"{diff.mean():+.4f}",
                        "paired t over seeds (p)": (f"{over_seeds['t']:.2f} ({over_seeds['p_ttest']:.3f})"
                                                    if over_seeds else "one seed"),
                        "paired t over seed x case (p)": (f"{over_cases['t']:.2f} ({over_cases['p_ttest']:.2g})"
                                                          if over_cases else "no per-case ranks (earlier study)")})
    cells_df = df.drop_duplicates(["seed", "arm"])
    def fit_seconds(arm, g):
        """The arm's median fit seconds over the cells fitted here in one run, and where the
        others came from."""
        if args.earlier and arm == a:
            return f"{g['fit_s'].median():.0f} s (fitted for the earlier study)"
        no = pd.Series(False, index=g.index)
        from_csv = g["reused_from"].notna() if "reused_from" in g else no
        resumed = g["resumed"].eq(True) & ~from_csv if "resumed" in g else no
        one_run = g["fit_s"].notna() & ~from_csv & ~resumed
        loaded = ~(one_run | resumed | from_csv)
        where = ([f"{one_run.sum()} of {len(g)} fitted here in one run"]
                 + ([f"{from_csv.sum()} from {args.reuse}, fitted in "
                     f"{g.loc[from_csv, 'fit_s'].median():.0f} s there"] if from_csv.any() else [])
                 + ([f"{resumed.sum()} resumed from checkpoints, fit seconds not known (each epoch's are "
                     f"in its cell's history.csv)"] if resumed.any() else [])
                 + ([f"{loaded.sum()} loaded from an earlier fit"] if loaded.any() else []))
        median = f"{g.loc[one_run, 'fit_s'].median():.0f} s" if one_run.any() else "-"
        return f"{median} ({', '.join(where)})"
    fit = [f"{arm} {fit_seconds(arm, g)}" for arm, g in cells_df.groupby("arm", sort=False)]
    info = gensar.cpu_info()
    describe = lambda arm: " ".join([arm["name"]] + [f"{k}={json.dumps(v)}" for k, v in arm["config"].items()]  # noqa: E731
                                    + [f"{k}={v}" for k, v in arm["env"].items()])
    text = "\n".join([
        f"# {a} vs {b} (ml-100k, validation)", "",
        f"Command: `python benchmarks/paired_study.py --name {args.name} --cache {args.cache} --seeds "
        f"{' '.join(map(str, args.seeds))} --preset {args.preset} --threads {args.threads} --jobs {args.jobs} "
        + (f"--earlier {args.earlier} " if args.earlier else "")
        + (f"--reuse {args.reuse} " if args.reuse else "")
        + " ".join(f"--arm {describe(arm)}" for arm in arms) + f"` at commit {code}; CPU {info['cpu']}, "
        f"kernel path {info['isa']}; {time.perf_counter() - t0:.0f} s here. The cells ran on: "
        + "; ".join(f"{cpu}, kernel path {isa}, commit {com} ({len(g)} cells)" for (cpu, isa, com), g in
                    cells_df.groupby(["cpu", "kernel_path", "commit"])) + ".", "",
        (f"Arm {a}'s rows are from {args.earlier} (its own study's command, preset and settings; not "
         f"refitted here), so arm {b} alone follows what is said next. " if args.earlier else "")
        + (f"Arm {b}'s rows for seed(s) {', '.join(map(str, sorted(reused)))} are from {args.reuse} (their "
           f"cells are gone; not refitted), so its curve below averages the other seeds only. "
           if reused else "")
        + f"Preset {args.preset}, one model per seed and arm, the same data split (dataset seed 0) for all. "
        f"NDCG@10, mean ± std over seeds; differences are {b} - {a}. Median fit seconds per arm "
        f"({args.threads} thread(s) each, {args.jobs} cell(s) at once, so indicative only): "
        + "; ".join(fit) + ".", "",
        md_table(pd.DataFrame(summary)), "",
        *([f"Not compared, one arm was not evaluated on them: {'; '.join(one_arm_only)}.", ""]
          if one_arm_only else []),
        "Per seed:", "",
        md_table(df.sort_values(["task", "protocol", "seed", "arm"]).fillna({"reused_from": ""})), ""])
    curves = learning_curves(cells)
    # the earlier arm's curve beside the new one: its mean over the earlier study's seeds
    # (the `seeds` column says how many), so the plot shows what the new arm is compared with
    old, old_ran_on = earlier_curves(args.earlier, a) if args.earlier and curves is not None else (None, None)
    if old is not None:
        curves = pd.concat([old, curves], ignore_index=True)
    if curves is not None:
        text += "\n".join([
            "", "Learning curves: validation after each epoch on the preset's validation cases (the curve "
            "the kept epoch was chosen on), mean over seeds; `best` counts the seeds whose kept epoch it is"
            + (f"; arm {a}'s curve is the earlier study's" if old is not None else "") + ".",
            "", md_table(curves), "", f"![validation curves]({args.name}-study-ml-100k-curves.png)", ""])
    RESULTS.mkdir(exist_ok=True)
    if curves is not None:
        # every row names the CPUs and kernel paths its arm's cells ran on
        ran_on = df.groupby("arm").apply(lambda g: "; ".join(sorted(set(g["cpu"] + ", " + g["kernel_path"]))))
        if old_ran_on:  # the earlier curve averages all its study's seeds, not only the ones compared
            ran_on[a] = old_ran_on
        curves.assign(cpu=curves["arm"].map(ran_on)).to_csv(RESULTS / f"{args.name}-study-ml-100k-curves.csv",
                                                             index=False)
        envs = {a["name"]: "".join(f", {k}={v}" for k, v in a["env"].items()) for a in arms}
        plot_curves(curves, RESULTS / f"{args.name}-study-ml-100k-curves.png", args.name,
                    {arm: f"{cpu}{envs.get(arm, '')}" for arm, cpu in ran_on.items() if arm in set(curves["arm"])})
    df.to_csv(RESULTS / f"{args.name}-study-ml-100k.csv", index=False)
    (RESULTS / f"{args.name}-study-ml-100k.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
