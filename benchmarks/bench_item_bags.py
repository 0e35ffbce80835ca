"""Training-step time with item bags against identifiers as tokens, on real ml-100k batches.

GenSARConfig.item_bags folds each identifier of the encoder's input (behaviour token +
codes) into one position. This times Seq2Seq.train_step on the same examples encoded
both ways: a saved GenSAR model (--model: its tokenizer, identifiers and config) renders
--batches batches of next-item and personalised-search training examples (the tasks
that carry histories), grouped by length as fit does, each with the constrained-softmax
mask when the model uses it. Both forms train a fresh copy of the same initial weights;
the two alternate for --rounds rounds (one round = every batch once) and the median
round is reported, with the encoder positions per input of each form.

    python benchmarks/bench_item_bags.py --model DIR [--threads 1] [--batches 20] [--rounds 5]

Prints one Markdown table (CPU model and kernel path in it).
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np
import pandas as pd

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))  # the checkout
import gensar  # noqa: E402
from gensar import datasets  # noqa: E402
from gensar.seq2seq import Seq2Seq  # noqa: E402
from gensar.tasks import length_grouped_batches  # noqa: E402


def batches_both_ways(model, ds, n_batches, seed):
    """(token batches, bag batches): the same examples, encoded by the model's own
    training-batch code (GenSAR._encode_batches) once with item_bags off, once on."""
    builder = model._builder(ds)
    rng = np.random.default_rng(seed)
    pool = pd.concat([builder.examples(t, "train") for t in ("nrip", "nsip")], ignore_index=True)
    size = model.config.batch_size
    pick = pool.iloc[rng.permutation(len(pool))[: n_batches * size]].reset_index(drop=True)
    inputs = model._render(pick, rng)
    groups = length_grouped_batches([len(s) for s in inputs], size, rng)
    saved, out = model.config.item_bags, {}
    try:
        for bags in (False, True):
            model.config.item_bags = bags
            out[bags] = model._encode_batches(pick, inputs, groups)
    finally:
        model.config.item_bags = saved
    return out[False], out[True]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True, help="a GenSAR model saved on ml-100k (GenSAR.save)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batches", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    gensar.set_num_threads(a.threads)
    ds = datasets.load("ml-100k", seed=0)
    model = gensar.GenSAR.load(a.model, dataset=ds)
    tokens, bags = batches_both_ways(model, ds, a.batches, a.seed)
    cfg = model.seq2seq_.config
    init = Seq2Seq(cfg, seed=a.seed).state_dict()
    times = {"tokens": [], "bags": []}
    for _ in range(a.rounds):
        for name, batches in (("tokens", tokens), ("bags", bags)):
            s2s = Seq2Seq(cfg, lr=1e-3, seed=a.seed)
            s2s.load_state_dict(init)
            t = time.perf_counter()
            for b in batches:
                s2s.train_step(b)
            times[name].append(time.perf_counter() - t)
    info = gensar.cpu_info()
    pos = {name: np.mean([b["attention_mask"].sum(1).mean() for b in bs]) for name, bs in
           (("tokens", tokens), ("bags", bags))}
    med = {k: float(np.median(v)) for k, v in times.items()}
    print(f"{len(tokens)} batches of {model.config.batch_size} (next-item + personalised-search examples), "
          f"{a.rounds} rounds, {a.threads} thread(s); CPU {info['cpu']}, kernel path {info['isa']}\n")
    print("| input | encoder positions per input (mean) | seconds per round (median) | ms per batch |")
    print("|---|---|---|---|")
    for k in ("tokens", "bags"):
        print(f"| {k} | {pos[k]:.1f} | {med[k]:.2f} | {1e3 * med[k] / len(tokens):.0f} |")
    print(f"\nbags / tokens step time: {med['bags'] / med['tokens']:.3f}")


if __name__ == "__main__":
    main()
