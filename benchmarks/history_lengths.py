"""How long are GenSAR's inputs? History lengths and input token lengths on a dataset.

For each training/test example of next-item recommendation (nrip) and personalised
search (nsip) it measures the history available under the protocol (recommendation
events and search sessions before the example), then renders the input with each
(n_rec, n_search) setting, tokenises it as GenSAR does (its tokenizer trained on the
dataset's text; identifiers are atomic tokens, so random codes give the true length)
and reports token-length percentiles and the share of inputs that a given
max_input_len would cut. Cheap: no model is trained.

    python benchmarks/history_lengths.py --dataset ml-100k
"""
from __future__ import annotations

import argparse

import numpy as np
import pandas as pd

from gensar.cli import _load_dataset
from gensar.model import GenSAR
from gensar.tasks import TEMPLATES, TaskBuilder, render
from gensar.tokenizer import IDLayout, Tokenizer

SETTINGS = [(3, 3), (5, 5), (10, 5), (10, 10), (20, 10), (30, 15), (50, 25)]
LIMITS = [80, 128, 192, 256, 384]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="ml-100k")
    ap.add_argument("--path", default=None)
    ap.add_argument("--split", default="train", choices=["train", "test"])
    ap.add_argument("--settings", nargs="+", default=None, metavar="R+S",
                    help="history settings to measure, e.g. 10+5 20+10 (default: a range)")
    args = ap.parse_args()
    settings = SETTINGS if not args.settings else [tuple(int(x) for x in v.split("+")) for v in args.settings]
    ds = _load_dataset(args.dataset, args.path)
    ev_rec = (ds.events["kind"] == "rec").to_numpy()

    print(f"## Available history per example ({args.split} split): recommendation events / search sessions")
    rows = []
    for task, kind in (("nrip", "rec"), ("nsip", "search")):
        ex = ds.examples(kind, args.split)
        n_rec = np.array([int(ev_rec[h].sum()) for h in ex["history"]])
        n_src = np.array([len(h) - r for h, r in zip(ex["history"], n_rec)])
        for what, v in (("rec events", n_rec), ("search sessions", n_src)):
            q = np.percentile(v, [10, 25, 50, 75, 90])
            rows.append({"task": task, "history": what, "examples": len(v), "mean": v.mean(),
                         **{f"p{p}": x for p, x in zip((10, 25, 50, 75, 90), q)},
                         ">=5": (v >= 5).mean(), ">=10": (v >= 10).mean(), ">=20": (v >= 20).mean()})
    print(pd.DataFrame(rows).round(2).to_string(index=False))

    layout = IDLayout((256, 256), (256, 256), (256, 256))
    texts = (ds.items["text"].tolist() + ds.events["query"].unique().tolist()
             + [p for v in TEMPLATES.values() for p in v])
    tok = Tokenizer.train(texts, layout, vocab_size=GenSAR().config.vocab_size)
    rng = np.random.default_rng(0)
    sem = rng.integers(0, 256, (ds.n_items, 4))
    col = sem.copy()
    col[:, 2:] = rng.integers(0, 256, (ds.n_items, 2))
    print(f"\n## Input tokens ({args.split} split; longest of the 10 phrasings; + 1 for </s>)")
    rows = []
    for n_rec, n_search in settings:
        tb = TaskBuilder(ds, tok, sem, col, n_rec=n_rec, n_search=n_search)
        for task in ("nrip", "nsip"):
            ex = tb.examples(task, args.split)
            # The longest phrasing (by its fixed words) makes the longest input.
            probe = ex.iloc[:1]
            k = int(np.argmax([len(tok.backend.encode(render(probe, template=j)[0]).ids) for j in range(10)]))
            lengths = np.array([len(e.ids) + 1 for e in tok.backend.encode_batch(render(ex, template=k),
                                                                                 add_special_tokens=False)])
            row = {"n_rec+n_search": f"{n_rec}+{n_search}", "task": task, "mean": lengths.mean(),
                   "p50": np.percentile(lengths, 50), "p90": np.percentile(lengths, 90),
                   "p99": np.percentile(lengths, 99), "max": lengths.max()}
            row.update({f"cut@{m}": (lengths > m).mean() for m in LIMITS})
            rows.append(row)
    print(pd.DataFrame(rows).round(3).to_string(index=False))


if __name__ == "__main__":
    main()
