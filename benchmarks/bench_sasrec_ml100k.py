"""SASRec (C core) on the real MovieLens-100K next to a popularity baseline.

    python benchmarks/bench_sasrec_ml100k.py [--epochs 100] [--hidden 64] [--layers 2] ...

Data: gensar.datasets.load("ml-100k") (RecBole's copy on PyPI, 40% of events made
semi-synthetic search clicks by the data protocol). Split: per-user leave-one-out of the
recommendation events (last -> test, second last -> valid). Metrics: HR@k / NDCG@k of the
held-out recommendation click, full-catalogue ranking (all items, nothing excluded, ties
broken by a seeded random order) and the sampled protocol (target + 99 unseen items).
SASRec keeps the parameters of its best validation NDCG@10 (full catalogue).
"""
import argparse
import time

import pandas as pd

from gensar import datasets
from gensar.baselines import Popularity
from gensar.embeddings import SASRec
from gensar.evaluate import evaluate_scorer


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
    args = ap.parse_args()
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
              f"  ({h['seconds']:.0f} s)")
    print(f"SASRec fit: {model.fit_seconds_:.0f} s, best epoch {model.best_epoch_}")
    rows.append(evaluate_scorer(ds, lambda t, ex: model.score(t, ex, ds), tasks=("rec",),
                                split="test", ks=(5, 10, 20), method="SASRec", seed=args.seed))
    table = pd.concat(rows, ignore_index=True)
    with pd.option_context("display.width", 200, "display.max_columns", 20,
                           "display.float_format", "{:.4f}".format):
        print(table)
    print(f"wall time {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
