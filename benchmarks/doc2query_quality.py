"""Pseudo-query quality on a dataset: the dataset's own query text against doc2query
trained for a fixed number of epochs (the old behaviour) and with early stopping.

Quality is measured against the items' real queries (gensar.doc2query.pseudo_query_quality):
distinct queries, exact match, best word F1; for doc2query also on its held-out items.

    python benchmarks/doc2query_quality.py --dataset ml-100k
"""
from __future__ import annotations

import argparse
import time

import pandas as pd

from gensar.cli import _load_dataset
from gensar.doc2query import Doc2Query, dataset_queries, is_semi_synthetic, pseudo_query_quality
from gensar.model import GenSAR
from gensar.tasks import TEMPLATES
from gensar.tokenizer import IDLayout, Tokenizer


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="ml-100k")
    ap.add_argument("--path", default=None)
    ap.add_argument("--fixed-epochs", type=int, nargs="*", default=[1, 3])
    ap.add_argument("--max-epochs", type=int, default=50)
    args = ap.parse_args()
    ds = _load_dataset(args.dataset, args.path)
    c = GenSAR().config
    texts = (ds.items["text"].tolist() + ds.events["query"].unique().tolist()
             + [p for v in TEMPLATES.values() for p in v])
    tok = Tokenizer.train(texts, IDLayout((2,), (2,), (2,)), vocab_size=c.vocab_size)
    rows = []
    if is_semi_synthetic(ds):
        q = pseudo_query_quality(ds, dataset_queries(ds))
        rows.append({"source": "dataset", "epochs": 0, "best_epoch": 0, "steps": 0, "seconds": 0.0, **q})
    runs = [(e, 0) for e in args.fixed_epochs] + [(args.max_epochs, c.doc2query_patience)]
    for epochs, patience in runs:
        t = time.perf_counter()
        d2q = Doc2Query(tok, d_model=c.d_model, epochs=epochs, patience=patience,
                        valid_share=0.1 if patience else 0.0, seed=0, progress=False).fit(ds)
        pq = d2q.generate(ds.items["text"].tolist())
        secs = time.perf_counter() - t
        name = f"doc2query, early stopping (max {epochs})" if patience else f"doc2query, {epochs} epoch(s)"
        steps = int(d2q.model_.step)
        for what, items in (("all searched", None), ("held out", d2q.valid_items_)):
            if items is not None and not len(items):
                continue
            rows.append({"source": f"{name}: {what}", "epochs": len(d2q.history_), "best_epoch": d2q.best_epoch_,
                         "steps": steps, "seconds": secs, **pseudo_query_quality(ds, pq, items)})
        if patience:
            print(d2q.history_.round(4).to_string(index=False))
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(pd.DataFrame(rows).round(3).to_string(index=False))


if __name__ == "__main__":
    main()
