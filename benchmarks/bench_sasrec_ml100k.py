"""SASRec (C core) on the real MovieLens-100K next to a popularity baseline.

    python benchmarks/bench_sasrec_ml100k.py [--epochs 100] [--hidden 64] [--layers 2] ...

Data: gensar.datasets.load("ml-100k") (RecBole's copy on PyPI, 40% of events made
semi-synthetic search clicks by the data protocol). Split: per-user leave-one-out of the
recommendation events (last -> test, second last -> valid). Metrics: HR@k / NDCG@k of the
held-out recommendation click, full-catalogue ranking (all items, nothing excluded, ties
broken by a seeded random order) and the sampled protocol (target + 99 unseen items).
SASRec keeps the parameters of its best validation NDCG@10 (full catalogue).
The CPU model and gensar's kernel path are printed first and beside the timings and
the table (--isa forces a path, --threads the thread count).
"""
import argparse
import os
import sys
import time

import pandas as pd

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))  # the checkout
import gensar  # noqa: E402
from gensar import datasets  # noqa: E402
from gensar.baselines import Popularity  # noqa: E402
from gensar.embeddings import SASRec  # noqa: E402
from gensar.evaluate import evaluate_scorer  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=100)
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--heads", type=int, default=1)
    ap.add_argument("--max-len", type=int, default=50)
    ap.add_argument("--dropout", type=float, default=0.2)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--kinds", default="rec,search")
    ap.add_argument("--eval-every", type=int, default=5)
    ap.add_argument("--patience", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=0, help="OpenMP threads (default: OMP_NUM_THREADS)")
    ap.add_argument("--isa", choices=gensar.cpu.ISAS, help="force gensar's kernel path (default: the best)")
    args = ap.parse_args()
    if args.isa:
        gensar.set_isa(args.isa)
    if args.threads:
        gensar.set_num_threads(args.threads)
    where = gensar.cpu.describe()
    print(f"CPU and kernel path: {where}")
    t0 = time.perf_counter()
    ds = datasets.load("ml-100k")
    print(ds)
    rows = [evaluate_scorer(ds, Popularity().fit(ds).score, tasks=("rec",), split="test",
                            ks=(5, 10, 20), method="popularity")]
    model = SASRec(hidden=args.hidden, layers=args.layers, heads=args.heads, max_len=args.max_len,
                   dropout=args.dropout, epochs=args.epochs, batch_size=args.batch_size,
                   lr=args.lr, kinds=tuple(args.kinds.split(",")), eval_every=args.eval_every,
                   patience=args.patience, seed=args.seed, show_progress=False)
    model.fit(ds)
    for h in model.history_:
        print(f"epoch {h['epoch']:4d}  train loss {h['loss']:.4f}  valid NDCG@10 {h['NDCG@10']:.4f}"
              f"  ({h['seconds']:.0f} s)  [{where}]")
    print(f"SASRec fit: {model.fit_seconds_:.0f} s, best epoch {model.best_epoch_}  [{where}]")
    rows.append(evaluate_scorer(ds, lambda t, ex: model.score(t, ex, ds), tasks=("rec",),
                                split="test", ks=(5, 10, 20), method="SASRec", seed=args.seed))
    table = pd.concat(rows, ignore_index=True)
    with pd.option_context("display.width", 200, "display.max_columns", 20,
                           "display.float_format", "{:.4f}".format):
        print(table)
    print(f"[{where}]")
    print(f"wall time {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
