"""The ``gensar`` command line.

    gensar run [--preset quick|full]   the main job: real ml-100k end to end
    gensar train --config cfg.json --out DIR [--dataset ml-100k]
    gensar evaluate DIR [--dataset ml-100k] [--split test]
    gensar demo                         a one-minute tour of the C core

Every command runs unchanged under ``mpirun -np N`` (data-parallel training and
sharded evaluation; see gensar.distributed).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

# The quick preset: a smaller model, 1 epoch anchored on 41k next-item examples
# (about 45k examples with the reference's task mixture), a 10 + 5 event history
# (inputs fitted to the data, 68 encoder positions with item bags); the reference
# trains for 200 epochs on GPUs. One epoch: a run of minutes, not the plateau.
# The full preset is the quick model trained for 40 epochs (cosine), validation after
# each (300 cases per task), the best epoch kept. 40, because with SASRec trained to
# convergence 40 epochs beat 20 on validation over 3 seeds in every seed, task and
# protocol: sampled rec +0.017 (+0.021, +0.008, +0.023; p = 0.066 over seeds) and search
# +0.018 (p = 0.027), full-catalogue search +0.012 (p = 0.001); the kept epochs the 33rd,
# 34th and 39th, the mean curve within 0.315-0.323 from the 29th on
# (benchmarks/results/sas200-e40-study-ml-100k.md). 20 had beaten 10 the same way
# (sas200-e20-study-ml-100k.md), and 10 beaten 6 (untied-e10-study-ml-100k.md).
# No early stopping: the cosine schedule's low-rate last epochs are where the curve
# peaks (learning-curve-lc-recency-e6.md, -lc-full-e10.md), and on 300 cases an early
# dip looked like a plateau (a test seed with patience 3 stopped after epoch 6, its
# best epoch the 3rd).
# SASRec (the collaborative embeddings) keeps GenSARConfig's default: trained until its
# validation stops improving (the fixed 20 epochs the presets once had under-trained it).
# The smoke preset only checks that a pipeline runs end to end (minutes on ml-100k);
# its numbers mean nothing.
_QUICK = dict(d_model=128, num_layers=2, num_decoder_layers=2, num_heads=4, d_kv=32, d_ff=512,
              n_rec=10, n_search=5, max_input_len=0, epochs=1, examples_per_epoch=41_000,
              batch_size=64, lr=2e-3, id_epochs=500,
              valid_cases=0, num_beams=20)
PRESETS = {
    "quick": _QUICK,
    "full": dict(_QUICK, epochs=40, valid_cases=300, patience=0),
    "smoke": dict(d_model=32, num_layers=1, num_decoder_layers=1, num_heads=2, d_kv=16, d_ff=64,
                  n_rec=5, n_search=3, max_input_len=0, epochs=2, examples_per_epoch=300,
                  batch_size=32, lr=3e-3, id_epochs=5, sasrec_epochs=2, doc2query_epochs=2,
                  vocab_size=1000, valid_cases=20, num_beams=5, patience=0),
}


def _load_dataset(name, path=None, seed=0):
    from . import datasets

    if name == "toy":
        # enough items that every user keeps 99 unseen items for the sampled protocol
        return datasets.toy(n_users=100, n_items=240, seed=seed)
    return datasets.load(name, path, seed=seed) if path else datasets.load(name, seed=seed)


def _print_table(table):
    import pandas as pd

    with pd.option_context("display.width", 200, "display.max_columns", 30, "display.float_format", "{:.4f}".format):
        print(table.to_string(index=False))


def run(args):
    """Data, embeddings, identifiers, training, evaluation table."""
    import gensar

    if args.threads:
        gensar.set_num_threads(args.threads)
    t0 = time.perf_counter()
    ds = _load_dataset(args.dataset, args.path, args.seed)
    print(f"dataset {ds.name}: {ds.n_users} users, {ds.n_items} items, {len(ds.events)} events "
          f"({time.perf_counter() - t0:.1f} s)")
    cfg = dict(PRESETS[args.preset], seed=args.seed)
    if args.epochs:
        cfg["epochs"] = args.epochs
    model = gensar.GenSAR(**cfg).fit(ds, checkpoint_dir=args.checkpoints)
    if hasattr(model, "ids_"):
        rep = model.ids_.report()
        print(f"identifiers: collisions before/after resolution {rep['collision_rate_before']} / "
              f"{rep['collision_rate_after']}; reconstruction {rep['reconstruction']}")
        print(rep["levels"].to_string(index=False))
    table = model.evaluate("test")
    wall = time.perf_counter() - t0
    print(f"\nGenSAR on {ds.name}, preset {args.preset}, test split ({wall / 60:.1f} min wall, "
          f"{gensar.get_num_threads()} threads):")
    _print_table(table[["task", "protocol", "cases", "HR@1", "HR@5", "HR@10", "HR@20",
                        "NDCG@5", "NDCG@10", "NDCG@20"]])
    print("stage seconds:", {k: round(v, 1) for k, v in model.timings_.items()})
    from .distributed import world

    if args.out and world().is_root:  # under MPI rank 0 writes
        model.save(args.out)
        table.to_csv(f"{args.out}/test_metrics.csv", index=False)
        print(f"saved model and metrics to {args.out}")
    return 0


def train(args):
    import gensar

    cfg = {}
    if args.config:
        try:
            with open(args.config, encoding="utf-8") as f:
                cfg = json.load(f)
        except ValueError as exc:
            raise ValueError(f"{args.config} is not valid JSON: {exc}") from None
    model = gensar.GenSAR(cfg)  # checks the settings before the dataset is loaded
    ds = _load_dataset(args.dataset, args.path, model.config.seed)
    model.fit(ds, checkpoint_dir=args.checkpoints)
    model.save(args.out)
    print(f"saved to {args.out}")
    return 0


def evaluate(args):
    import gensar

    model = gensar.GenSAR.load(args.model)  # verifies every file before the dataset is loaded
    ds = _load_dataset(args.dataset, args.path, model.config.seed)
    model._attach_dataset(ds)
    _print_table(model.evaluate(args.split))
    return 0


def demo(args):
    """Exercises the C core and prints what it measured."""
    import numpy as np

    import gensar
    from gensar import ops

    if args.threads:
        gensar.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    print(f"gensar {gensar.__version__}: C core with {gensar.get_num_threads()} OpenMP thread(s), "
          f"SGEMM micro-kernel '{ops.gemm_kernel_name()}'")
    M, K, N = 2048, 512, 512
    a = rng.standard_normal((M, K)).astype(np.float32)
    w = rng.standard_normal((N, K)).astype(np.float32)
    ops.matmul(a, w, trans_b=True)
    t = time.perf_counter()
    reps = 10
    for _ in range(reps):
        y = ops.matmul(a, w, trans_b=True)
    dt = (time.perf_counter() - t) / reps
    err = np.abs(y - a @ w.T).max()
    print(f"matmul ({M}x{K}) @ ({N}x{K})^T: {2 * M * N * K / dt / 1e9:.1f} GFLOP/s, "
          f"max |gensar - numpy| = {err:.2e}")
    return 0


def main(argv=None):
    parser = argparse.ArgumentParser(prog="gensar", description="GenSAR: unified generative "
                                     "search and recommendation with a C core.")
    sub = parser.add_subparsers(dest="command", required=True)

    def data_args(p):
        p.add_argument("--dataset", default="ml-100k", help="ml-100k (downloaded), toy, or a loader "
                       "name of gensar.datasets.load with --path")
        p.add_argument("--path", default=None, help="local files for the loader")
        p.add_argument("--threads", type=int, default=0, help="OpenMP threads (default: OMP_NUM_THREADS)")
        p.add_argument("--checkpoints", default=None, help="checkpoint directory; rerun to resume")

    p = sub.add_parser("run", help="the main job: ml-100k end to end with an evaluation table")
    data_args(p)
    p.add_argument("--preset", choices=sorted(PRESETS), default="quick")
    p.add_argument("--epochs", type=int, default=0, help="override the preset's epochs")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="save the model and metrics here")
    p.set_defaults(func=run)

    p = sub.add_parser("train", help="train with your own config JSON (GenSARConfig fields)")
    data_args(p)
    p.add_argument("--config", default=None)
    p.add_argument("--out", required=True)
    p.set_defaults(func=train)

    p = sub.add_parser("evaluate", help="evaluate a saved model")
    data_args(p)
    p.add_argument("model")
    p.add_argument("--split", default="test", choices=["valid", "test"])
    p.set_defaults(func=evaluate)

    p = sub.add_parser("demo", help="a quick tour of the C core")
    p.add_argument("--threads", type=int, default=0)
    p.set_defaults(func=demo)
    args = parser.parse_args(argv)
    for name in ("threads", "epochs"):
        if getattr(args, name, 0) < 0:
            parser.error(f"--{name} must be >= 0, got {getattr(args, name)}")
    from .distributed import launched_size

    if launched_size() > 1:
        # under mpirun every rank runs the command (training is data-parallel, see
        # gensar.distributed); rank 0 alone prints, and rank 0 alone writes files
        from .distributed import world

        if not world().is_root:
            sys.stdout = open(os.devnull, "w")
    try:
        return args.func(args)
    except (ValueError, TypeError, KeyError, OSError) as exc:
        # A user error (bad setting, missing or corrupt file): the message names
        # the argument or file; a traceback would only hide it (GENSAR_TRACEBACK=1 shows it).
        if os.environ.get("GENSAR_TRACEBACK"):
            raise
        print(f"gensar {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
