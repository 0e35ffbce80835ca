"""GFLOP/s of gensar's SGEMM against numpy.matmul (OpenBLAS) in the same run.

Shapes are those of the default GenSAR model: M = batch*tokens in 64..8192, K and
N in 64..2048, every transpose form (NN forward with pre-transposed weights, NT
forward with PyTorch-layout weights, TN weight gradient, TT for completeness).
Both libraries get the same thread count (numpy's through threadpoolctl). Each
shape is timed in alternating blocks (gensar, numpy, gensar, numpy, ...), each
block a warm-up call then repetitions lasting >= 0.05 s, so that neither
library's still-spinning worker threads slow the other; a library's time is the
best block median. The figure of merit is the median over shapes of
speed(gensar) / speed(numpy): a ratio measured in the same run, so a noisy shared
machine moves both sides alike.

    python benchmarks/bench_gemm.py                 # 1 and 2 threads
    python benchmarks/bench_gemm.py --threads 1 --quick
"""
import argparse
import itertools
import os
import statistics
import sys
import time

import numpy as np

try:
    from threadpoolctl import threadpool_info, threadpool_limits
except ImportError:  # the comparison is unfair without it
    raise SystemExit("bench_gemm needs threadpoolctl to give numpy the same threads: "
                     "pip install threadpoolctl")

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))  # the checkout
import gensar  # noqa: E402
from gensar import ops  # noqa: E402

M_VALUES = (64, 256, 1024, 4096, 8192)
KN_VALUES = ((64, 64), (128, 128), (128, 512), (512, 128), (512, 512), (128, 2048), (2048, 128))
FORMS = ((False, False), (False, True), (True, False), (True, True))


def block_median(fn, reps):
    fn()  # warm-up: page faults, the other library's spinning threads
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def compare(fn_gensar, fn_numpy, threads, reps, rounds=3):
    """Best block median of each library over alternating rounds (seconds)."""
    best_gs = best_np = float("inf")
    for _ in range(rounds):
        best_gs = min(best_gs, block_median(fn_gensar, reps))
        with threadpool_limits(limits=threads, user_api="blas"):
            best_np = min(best_np, block_median(fn_numpy, reps))
    return best_gs, best_np


def run(threads, quick):
    rng = np.random.default_rng(0)
    gensar.set_num_threads(threads)
    rows = []
    shapes = list(itertools.product(M_VALUES, KN_VALUES, FORMS))
    if quick:
        shapes = shapes[::5]
    for M, (K, N), (ta, tb) in shapes:
        a = rng.standard_normal((K, M) if ta else (M, K)).astype(np.float32)
        b = rng.standard_normal((N, K) if tb else (K, N)).astype(np.float32)
        out = np.empty((M, N), np.float32)
        flops = 2.0 * M * N * K
        reps = max(3, min(50, int(5e9 / flops)))  # >= ~0.05 s per block
        a_op, b_op = (a.T if ta else a), (b.T if tb else b)
        t_gs, t_np = compare(lambda: ops.matmul(a, b, ta, tb, out=out),
                             lambda: np.matmul(a_op, b_op, out=out), threads, reps)
        rows.append((M, K, N, ("T" if ta else "N") + ("T" if tb else "N"),
                     flops / t_gs / 1e9, flops / t_np / 1e9))
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--quick", action="store_true", help="every 5th shape only")
    ap.add_argument("--verbose", action="store_true", help="print every shape")
    ap.add_argument("--isa", choices=gensar.cpu.ISAS, help="force gensar's kernel path (default: the best)")
    args = ap.parse_args()
    if args.isa:
        gensar.set_isa(args.isa)
    blas = [i for i in threadpool_info() if i.get("user_api") == "blas"]
    print(f"CPU: {gensar.cpu.cpu_model()}; gensar kernel path: {gensar.get_isa()} "
          f"(SGEMM {ops.gemm_kernel_name()}); numpy BLAS: "
          + ", ".join(f"{i.get('internal_api')} {i.get('version')} ({i.get('architecture')})" for i in blas))
    print()
    where = f"{gensar.cpu.cpu_model()} | {gensar.get_isa()}"
    print("| threads | shapes | median ratio gensar/numpy | min | max | gensar GFLOP/s (median) | numpy GFLOP/s (median) | CPU | kernel path |")
    print("|---|---|---|---|---|---|---|---|---|")
    details = []
    for th in args.threads:
        rows = run(th, args.quick)
        ratios = [g / n for *_, g, n in rows]
        print(f"| {th} | {len(rows)} | {statistics.median(ratios):.2f} | {min(ratios):.2f} | "
              f"{max(ratios):.2f} | {statistics.median(r[4] for r in rows):.1f} | "
              f"{statistics.median(r[5] for r in rows):.1f} | {where} |", flush=True)
        details.append((th, rows))
    if args.verbose:
        for th, rows in details:
            print(f"\nthreads={th}, {where}\n| M | K | N | form | gensar GFLOP/s | numpy GFLOP/s | ratio |\n|---|---|---|---|---|---|---|")
            for M, K, N, form, g, n in rows:
                print(f"| {M} | {K} | {N} | {form} | {g:.1f} | {n:.1f} | {g / n:.2f} |")


if __name__ == "__main__":
    main()
