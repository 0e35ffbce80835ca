"""Two builds of the C core, one process: the training-step time of a change.

A few percent is all most kernel changes are worth, and a shared machine drifts
by more than that between runs, so two bench_train.py runs of two builds cannot
show it. This script loads a second build's ``_core`` extension beside the
installed one, builds the same model (same seed) with each, and times training
steps on the same batch in alternating blocks of --block steps. The two models
must give the same first loss to float32 accuracy (checked), and both builds
must share the Python API of ``_core`` (any build of this repository does).

    git worktree add /tmp/base <commit> && (cd /tmp/base && python setup.py build_ext --inplace)
    python benchmarks/bench_train_ab.py /tmp/base/gensar                 # quick preset's model
    python benchmarks/bench_train_ab.py /tmp/base/gensar --model default --threads 2
    python benchmarks/bench_train_ab.py /tmp/base/gensar --model sasrec     # one SASRec epoch on ml-100k

With ``--model sasrec`` a "step" is one SASRec training epoch on ml-100k (default
settings, seed 0), and the two builds must give the same epoch loss. Prints each
build's median step time and the ratio installed / other (< 1: the
installed build is faster), with the CPU model and kernel path.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_serve_ab import load_core, report_ab  # noqa: E402
from bench_train import DEFAULTS, PRESETS, config, make_batch  # noqa: E402

import gensar  # noqa: E402
import gensar.seq2seq as seq2seq  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("other", help="the other build's gensar package directory (holding its _core*.so)")
    ap.add_argument("--model", choices=("quick", "default", "sasrec"), default="quick",
                    help="the quick preset's model, bench_train.py's defaults, or one SASRec epoch")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=10, help="blocks per build")
    ap.add_argument("--block", type=int, default=5, help="steps per block")
    args = ap.parse_args(argv)
    if args.model == "sasrec":
        return sasrec_ab(args)
    sizes = argparse.Namespace(**(PRESETS["quick"] if args.model == "quick" else DEFAULTS))
    cores = {"installed": seq2seq._core, "other": load_core(Path(args.other))}
    ids, mask, labels = make_batch(sizes.batch, sizes.t_in, sizes.t_dec, sizes.vocab)
    batch = dict(input_ids=ids, attention_mask=mask, labels=labels)
    models, first = {}, {}
    for key, core in cores.items():
        core.set_num_threads(args.threads)
        seq2seq._core = core
        models[key] = gensar.Seq2Seq(config(sizes), lr=1e-3, weight_decay=0.01, max_grad_norm=1.0, seed=0)
        first[key] = models[key].train_step(batch)  # also the warm-up
    if abs(first["installed"] - first["other"]) > 1e-4 * abs(first["other"]):
        raise SystemExit(f"the two builds disagree on the first loss: {first}")
    times = {key: [] for key in cores}
    for _ in range(args.rounds):
        for key, core in cores.items():
            seq2seq._core = core
            for _ in range(args.block):
                t = time.perf_counter()
                models[key].train_step(batch)
                times[key].append(time.perf_counter() - t)
    seq2seq._core = cores["installed"]
    info = gensar.cpu_info()
    report_ab(f"model {args.model} (batch {sizes.batch}, input {sizes.t_in}, target {sizes.t_dec}, vocab "
              f"{sizes.vocab}, d_model {sizes.d_model}, {sizes.layers}+{sizes.layers} layers), {args.threads} "
              f"thread(s); CPU {info['cpu']}, kernel path {info['isa']}", times, what="step")


def sasrec_ab(args):
    """One SASRec epoch on ml-100k per step, the two builds alternating."""
    import gensar.embeddings.sasrec as sasrec_mod
    from gensar import datasets

    ds = datasets.load("ml-100k", seed=0)
    cores = {"installed": sasrec_mod._core, "other": load_core(Path(args.other))}
    times, losses = {key: [] for key in cores}, {key: set() for key in cores}
    try:
        for _ in range(args.rounds):
            for key, core in cores.items():
                core.set_num_threads(args.threads)
                sasrec_mod._core = core
                t = time.perf_counter()
                m = sasrec_mod.SASRec(epochs=1, eval_every=0, seed=0, show_progress=False).fit(ds)
                times[key].append(time.perf_counter() - t)
                losses[key].add(round(m.loss_, 4))
    finally:
        sasrec_mod._core = cores["installed"]
    if losses["installed"] != losses["other"]:
        raise SystemExit(f"the two builds disagree on the epoch loss: {losses}")
    info = gensar.cpu_info()
    report_ab(f"SASRec on ml-100k, one epoch per step (epoch loss {sorted(losses['installed'])}), {args.threads} "
              f"thread(s); CPU {info['cpu']}, kernel path {info['isa']}", times, unit="s", what="epoch")


if __name__ == "__main__":
    main()
