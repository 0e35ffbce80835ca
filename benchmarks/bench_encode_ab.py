"""Two builds of the C core, one process: the sentence-encoder time of a change.

Like bench_train_ab.py / bench_serve_ab.py: a second build's ``_core`` extension is
loaded beside the installed one, each build loads the same sentence model, and the
two encode bench_encode.py's titles in alternating rounds (the same texts, batch
size and thread count). Both must give the same unit vectors to float32 accuracy
(checked).

    git worktree add /tmp/base <commit> && (cd /tmp/base && python setup.py build_ext --inplace)
    python benchmarks/bench_encode_ab.py /tmp/base/gensar --threads 2

Prints each build's median seconds per encode and the ratio installed / other (< 1: the
installed build is faster), with the CPU model and kernel path.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_encode import make_titles  # noqa: E402
from bench_serve_ab import load_core, report_ab  # noqa: E402

import gensar  # noqa: E402
from gensar.embeddings import SentenceEncoder  # noqa: E402
from gensar.embeddings import semantic  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("other", help="the other build's gensar package directory (holding its _core*.so)")
    ap.add_argument("--model", default="all-MiniLM-L6-v2")
    ap.add_argument("--n", type=int, default=2000, help="titles per encode")
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--rounds", type=int, default=7, help="encodes per build, alternating")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    cores = {"installed": semantic._core, "other": load_core(Path(args.other))}
    texts = make_titles(args.n)
    encoders, first = {}, {}
    for key, core in cores.items():  # each build makes its own model (capsule) and encodes with it
        core.set_num_threads(args.threads)
        semantic._core = core
        encoders[key] = SentenceEncoder(args.model, allow_fallback=False)
        first[key] = encoders[key].encode(texts, batch_size=args.batch_size, show_progress=False)  # + warm-up
    gap = float(np.abs(first["installed"] - first["other"]).max())
    if gap > 1e-5:
        raise SystemExit(f"the two builds' embeddings differ by up to {gap:.2e}")
    times = {key: [] for key in cores}
    for _ in range(args.rounds):
        for key, core in cores.items():
            semantic._core = core
            t = time.perf_counter()
            encoders[key].encode(texts, batch_size=args.batch_size, show_progress=False)
            times[key].append(time.perf_counter() - t)
    semantic._core = cores["installed"]
    info = gensar.cpu_info()
    report_ab(f"sentence encoder {args.model}, {args.n} titles, batch {args.batch_size}, {args.threads} thread(s); "
              f"CPU {info['cpu']}, kernel path {info['isa']}; largest difference {gap:.1e}", times,
              unit="s", what="encode")


if __name__ == "__main__":
    main()
