"""The GenSAR training loop, not just the step: how much of a training step's wall
time is tokenisation, batching and Python overhead (issue 14: keep it under 10%).

Runs the real GenSAR.fit training stage on ml-100k with the quick preset of
``gensar run`` (gensar/cli.py), instrumented from outside, and reports per step:

(a) epoch building: the real ``make_epoch`` of GenSAR._train (task mixing,
    rendering the templates, tokenizer.encode, encode_batch) for one full epoch of
    the preset (45,000 examples), divided by its number of batches;
(b) the C training step: time inside ``_core.t5_train_step``;
    plus the Python of ``Seq2Seq.train_step`` around it (batch checks, conversion);
(c) the Trainer loop (gensar/training.py Trainer.fit) per step: (b) plus the loop's
    own Python (schedule, loss bookkeeping, progress bar), timed as the mean gap
    between the end of one train_step and the start of the next. Trainer.fit's
    fixed costs (imports, set-up, the end-of-epoch save) are shown apart.

Each part is printed as a share of the whole step: (a) + (c). Overhead = all but
the C step. Only the first --steps batches of the epoch are trained (the epoch is
built in full), so a run takes about two minutes; the per-step figures do not
depend on how many steps run. Trainer.fit builds each epoch once (epoch 0 also
sets the learning-rate schedule's length); the number of builds is printed.
A breakdown of (a) re-enacts make_epoch's pieces (mix, render, tokenizer.encode,
labels) with the same data; it is skipped with a message if those functions changed.

Stand-ins, so that only the training stage runs: random item identifiers (the
identifier values do not change the cost) instead of SASRec + RQ-VAE, and each
item's lower-cased title as its one pseudo-query instead of doc2query.

    python benchmarks/bench_loop.py                    # 1 thread, 30 steps
    python benchmarks/bench_loop.py --threads 2 --steps 40
    python benchmarks/bench_loop.py --no-progress      # without the progress bar

The CPU model and kernel path are printed at the top and beside the result.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))  # the checkout
import gensar  # noqa: E402
import gensar.training  # noqa: E402
from gensar import _core, datasets  # noqa: E402
from gensar.cli import PRESETS  # noqa: E402


class Clock:
    """Accumulates wall seconds and calls of a wrapped function."""

    def __init__(self):
        self.seconds, self.calls = 0.0, 0
        self.starts, self.ends = [], []

    def wrap(self, fn):
        def timed(*args, **kw):
            t = time.perf_counter()
            try:
                return fn(*args, **kw)
            finally:
                end = time.perf_counter()
                self.starts.append(t)
                self.ends.append(end)
                self.seconds += end - t
                self.calls += 1
        return timed

    @property
    def mean_gap(self):
        """Mean time between the end of one call and the start of the next."""
        gaps = np.array(self.starts[1:]) - np.array(self.ends[:-1])
        return float(gaps.mean())

    @property
    def mean(self):
        return self.seconds / max(self.calls, 1)


def random_ids(n_items, shared, specific, seed):
    """(semantic, collaborative) int64 (n_items, len(shared) + len(specific)) codes that
    share their first len(shared) levels, as GenSAR.fit(ids=...) takes them; "auto"
    levels get the size DualIDs would give them."""
    from gensar.ids import auto_codebook_size

    fixed = [k for k in (*shared, *specific) if k != "auto"]
    auto = auto_codebook_size(n_items, len(shared) + len(specific) - len(fixed), fixed)
    shared, specific = ([auto if k == "auto" else k for k in ks] for ks in (shared, specific))
    rng = np.random.default_rng(seed)
    draw = lambda sizes, n: np.stack([rng.integers(0, k, n) for k in sizes], 1)  # noqa: E731
    sh = draw(shared, n_items)
    out = []
    for _ in range(2):
        codes = np.concatenate([sh, draw(specific, n_items)], 1)
        while True:  # every item its own identifier (GenSAR.fit refuses duplicates)
            _, first = np.unique(codes, axis=0, return_index=True)
            dup = np.setdiff1d(np.arange(n_items), first)
            if not dup.size:
                break
            codes[dup, len(shared):] = draw(specific, dup.size)
        out.append(codes)
    return tuple(out)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=30, help="training steps to time (>= 2, default 30)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--isa", choices=gensar.cpu.ISAS, help="force gensar's kernel path (default: the best)")
    ap.add_argument("--preset", choices=sorted(PRESETS), default="quick")
    ap.add_argument("--examples-per-epoch", type=int, default=None,
                    help="override the preset's epoch size (the quick preset: 45,000)")
    ap.add_argument("--no-progress", action="store_true", help="no progress bar (gensar run shows one)")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    if a.steps < 2:
        ap.error("--steps must be >= 2 (the loop's Python is timed between steps)")
    if a.isa:
        gensar.set_isa(a.isa)
    gensar.set_num_threads(a.threads)
    where = gensar.cpu.describe()
    print(f"CPU and kernel path: {where}")

    ds = datasets.load("ml-100k")
    cfg = dict(PRESETS[a.preset], seed=a.seed, epochs=1, valid_cases=0)
    if a.examples_per_epoch is not None:
        cfg["examples_per_epoch"] = a.examples_per_epoch
    c = gensar.GenSARConfig(**cfg)

    build, step_py, step_c, fit_clock = Clock(), Clock(), Clock(), Clock()
    batches_per_build = []

    class TimedTrainer(gensar.training.Trainer):
        """The real Trainer; its make_epoch is timed and the epoch cut to a.steps batches."""

        def __init__(self, model, make_epoch, *args, **kw):
            timed = build.wrap(make_epoch)

            def first_batches(epoch):
                batches = timed(epoch)
                batches_per_build.append(len(batches))
                return batches[: a.steps]
            super().__init__(model, first_batches, *args, **kw)

        def fit(self, *args, **kw):
            return fit_clock.wrap(super().fit)(*args, **kw)

    class LoopBench(gensar.GenSAR):
        def _pseudo_queries(self, dataset):  # stand-in for doc2query: the title, lower case
            return [[t.lower()] for t in dataset.items["title"].astype(str)]

        def _new_seq2seq(self, vocab_size, seed):
            model = super()._new_seq2seq(vocab_size, seed)
            model.train_step = step_py.wrap(model.train_step)
            return model

    patched = {}
    for mod in (gensar.training, sys.modules["gensar.model"]):
        if hasattr(mod, "Trainer"):
            patched[mod] = mod.Trainer
            mod.Trainer = TimedTrainer
    c_step = _core.t5_train_step
    _core.t5_train_step = step_c.wrap(c_step)
    try:
        t0 = time.perf_counter()
        ids = random_ids(ds.n_items, c.shared_levels, c.specific_levels, a.seed)
        model = LoopBench(c).fit(ds, ids=ids, progress=not a.no_progress)
        total = time.perf_counter() - t0
    finally:
        _core.t5_train_step = c_step
        for mod, cls in patched.items():
            mod.Trainer = cls

    if step_c.calls != a.steps or step_py.calls != a.steps or not batches_per_build:
        raise RuntimeError(f"expected {a.steps} steps, saw {step_py.calls} Seq2Seq.train_step and "
                           f"{step_c.calls} t5_train_step calls (did the epoch have fewer batches?)")
    n_build = build.calls
    per_build = build.seconds / n_build
    batches = batches_per_build[0]
    a_step = per_build / batches                          # (a) one build, per batch
    b_c = step_c.mean                                     # (b) C step
    b_py = step_py.mean - step_c.mean                     # Seq2Seq.train_step's Python
    loop_py = step_py.mean_gap                            # the loop's own Python, per step
    loop = step_py.mean + loop_py                         # (c) Trainer loop per step
    fixed = fit_clock.seconds - build.seconds - step_py.seconds - loop_py * (a.steps - 1)
    whole = a_step + loop
    share = lambda x: f"{100 * x / whole:5.1f}%"  # noqa: E731

    print(f"\n{a.preset} preset: batch {c.batch_size}, input <= {model.input_len_} tokens, "
          f"vocab {model.tokenizer_.vocab_size}, d_model {c.d_model}, {c.num_layers}+"
          f"{c.num_decoder_layers} layers; epoch of {batches} batches built in full "
          f"({n_build} builds, {per_build:.2f} s each), {a.steps} steps trained; "
          f"{a.threads} thread(s), progress bar {'off' if a.no_progress else 'on'}")
    print(f"setup before the loop (tokenizer training, task examples, model init): "
          f"{total - fit_clock.seconds:.1f} s once per fit")
    print("\n| part | ms per step | share of step | CPU, kernel path |\n|---|---|---|---|")
    rows = [("(a) epoch building: mix, render, tokenize, batch (make_epoch / batches)", a_step),
            ("(b) C train step (_core.t5_train_step)", b_c),
            ("(b') Seq2Seq.train_step Python around the C step", b_py),
            ("(c') Trainer loop Python (schedule, bookkeeping, progress bar)", loop_py),
            ("whole step = (a) + (c), (c) = Trainer loop per step", whole),
            ("overhead = whole - (b)", whole - b_c)]
    for name, sec in rows:
        print(f"| {name} | {1000 * sec:.1f} | {share(sec)} | {where} |")
    print(f"\nTrainer.fit's fixed cost besides builds and steps (imports, set-up, end-of-epoch "
          f"save): {fixed:.2f} s per fit.")
    if n_build > 1:
        print(f"Trainer.fit built the epoch {n_build} times for one epoch: {per_build:.2f} s each.")
    breakdown(model, c, a)


def breakdown(model, c, a):
    """Times the pieces of make_epoch, re-enacted with the same data (see the docstring)."""
    from gensar.tasks import TASKS, mix

    try:
        weights = {t: float(c.task_weights.get(t, 0.0)) for t in TASKS}
        pseudo = [[t.lower()] for t in model.dataset_.items["title"].astype(str)]
        parts = {t: model.builder_.examples(t, "train", pseudo_queries=pseudo)
                 for t, w in weights.items() if w > 0}
        tok = model.tokenizer_
        rng = np.random.default_rng([c.seed, 11, 0])
        t = [time.perf_counter()]
        lap = lambda: (t.append(time.perf_counter()), t[-1] - t[-2])[1]  # noqa: E731
        ep = mix(parts, weights, rng)
        if c.examples_per_epoch:
            ep = ep.iloc[:c.examples_per_epoch]
        t_mix = lap() / len(ep)  # per example
        ep = ep.iloc[:200 * c.batch_size]  # the rest costs the same per batch
        lap()
        ep = ep.reset_index(drop=True)
        inputs = model._render(ep, rng)
        t_render = lap()
        B = c.batch_size
        for i in range(0, len(inputs), B):
            tok.encode(inputs[i:i + B], model._input_len())
        t_encode = lap()
        for i in range(0, len(inputs), B):  # the reference: the backend on whole texts
            tok._encode_whole(inputs[i:i + B])
        t_whole = lap()
        for i in range(0, len(inputs), B):  # the training batches as fit makes them
            model._encode_batches(ep, inputs, [np.arange(i, min(i + B, len(inputs)))])
        t_batch = lap()
    except Exception as e:  # noqa: BLE001 - the pieces are other modules' internals
        print(f"\nbreakdown of (a) skipped: make_epoch's pieces changed ({type(e).__name__}: {e})")
        return
    n = -(-len(inputs) // B)
    print(f"\nbreakdown of (a), re-enacted on the epoch's first {n} batches, ms per batch:")
    for name, sec in (("mix (task mixture, shuffle), amortised over the epoch", t_mix * B),
                      ("render (templates)", t_render),
                      ("tokenizer.encode", t_encode),
                      ("  reference: the backend's encode_batch on whole texts", t_whole),
                      ("GenSAR._encode_batches (encode, item bags, labels, masks), done separately",
                       t_batch)):
        print(f"  {name:50s} {1000 * sec / n:7.2f}")
    print(f"  tokenizer.encode / whole-text reference: {t_encode / t_whole:.2f}x the time")
    input_length_scan(model, pseudo)


def input_length_scan(model, pseudo):
    """GenSAR._fit_input_len (cold chunk cache) against the backend encoding the same
    rendered texts whole, as it did before the chunk cache."""
    frames = [model.builder_.examples(t, "train", pseudo_queries=pseudo) for t in model.epoch_counts_
              if model.epoch_counts_[t] > 0]
    frames += [model.builder_.examples(t, s) for t in ("nrip", "nsip") for s in ("valid", "test")]
    tok = model.tokenizer_
    tok._chunk_ids.clear()
    t0 = time.perf_counter()
    longest = model._fit_input_len(frames)
    t_scan = time.perf_counter() - t0
    longest_whole = 2
    t0 = time.perf_counter()
    for ex in frames:
        for i in range(0, len(ex), 4096):
            enc = tok._encode_whole(model._render(ex.iloc[i:i + 4096]))
            longest_whole = max(longest_whole, max(len(e.ids) for e in enc) + 3)
    t_whole = time.perf_counter() - t0
    n = sum(len(ex) for ex in frames)
    print(f"\ninput-length scan over {n} examples (GenSAR._fit_input_len, cold cache): {t_scan:.2f} s; "
          f"the same texts encoded whole: {t_whole:.2f} s ({t_scan / t_whole:.2f}x the time); "
          f"longest input {longest} (whole-text scan, phrasing 0: {longest_whole})")


if __name__ == "__main__":
    main()
