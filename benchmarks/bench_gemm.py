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
    python benchmarks/bench_gemm.py --threads 1 --small --verbose  # products of few rows
    python benchmarks/bench_gemm.py --precision bf16  # also gensar's bf16 products
    python benchmarks/bench_gemm.py --small --threads 1 --against ../other/gensar  # A/B two builds

--precision bf16 (CPUs with AVX512-BF16) times gensar's bf16 products as a third
library in the same alternating rounds and adds the ratio bf16/fp32 of gensar's
speeds (same shapes, same run). The bf16 kernel is AMX tiles where the CPU has
them, VDPBF16PS otherwise; --no-amx forces VDPBF16PS.
"""
import argparse
import itertools
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

try:
    from threadpoolctl import threadpool_info, threadpool_limits
except ImportError:  # the comparison is unfair without it
    raise SystemExit("bench_gemm needs threadpoolctl to give numpy the same threads: "
                     "pip install threadpoolctl")

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))  # the checkout
import gensar  # noqa: E402
from gensar import ops  # noqa: E402
from bench_serve_ab import load_core  # noqa: E402

M_VALUES = (64, 256, 1024, 4096, 8192)
KN_VALUES = ((64, 64), (128, 128), (128, 512), (512, 128), (512, 512), (128, 2048), (2048, 128))
FORMS = ((False, False), (False, True), (True, False), (True, True))
# --small: products of a few rows (beam-search steps, short batches), where packing
# B costs a visible share of the product.
SMALL_M_VALUES = (12, 32, 64, 96, 128)
SMALL_KN_VALUES = ((64, 64), (128, 128), (256, 256), (384, 384))


# After a call, OpenBLAS's worker threads keep spinning for about 2^28 cycles (its
# THREAD_TIMEOUT, ~0.1 s) and take the second core from whatever runs next: gensar's
# 2-thread SGEMM measured right after numpy ran at 0.5-0.7x its own speed. Each timed
# block therefore starts after the other library's threads have gone to sleep.
SETTLE_S = 0.3


def block_median(fn, reps):
    time.sleep(SETTLE_S)
    fn()  # warm-up: page faults
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def compare(fn_gensar, fn_numpy, threads, reps, rounds=3, fn_third=None, third_in_bf16=False):
    """Best block median of each library over alternating rounds (seconds); the
    third time is fn_third's (gensar in bf16 with third_in_bf16, or another build's
    SGEMM), None without fn_third."""
    best_gs = best_np = best_3 = float("inf")
    for _ in range(rounds):
        best_gs = min(best_gs, block_median(fn_gensar, reps))
        with threadpool_limits(limits=threads, user_api="blas"):
            best_np = min(best_np, block_median(fn_numpy, reps))
        if fn_third is not None:
            if third_in_bf16:
                gensar.set_precision("bf16")
            try:
                best_3 = min(best_3, block_median(fn_third, reps))
            finally:
                gensar.set_precision("fp32")
    return best_gs, best_np, (best_3 if fn_third is not None else None)


def run(threads, quick, bf16=False, small=False, other=None):
    rng = np.random.default_rng(0)
    gensar.set_num_threads(threads)
    if other is not None:
        other.set_num_threads(threads)
    rows = []
    shapes = list(itertools.product(SMALL_M_VALUES if small else M_VALUES,
                                    SMALL_KN_VALUES if small else KN_VALUES, FORMS))
    if quick:
        shapes = shapes[::5]
    for M, (K, N), (ta, tb) in shapes:
        a = rng.standard_normal((K, M) if ta else (M, K)).astype(np.float32)
        b = rng.standard_normal((N, K) if tb else (K, N)).astype(np.float32)
        out = np.empty((M, N), np.float32)
        flops = 2.0 * M * N * K
        reps = max(3, min(2000, int(5e9 / flops)))  # >= ~0.05 s per block
        a_op, b_op = (a.T if ta else a), (b.T if tb else b)
        fn = lambda: ops.matmul(a, b, ta, tb, out=out)  # noqa: E731
        third = fn if bf16 else (lambda: other.sgemm(a, b, ta, tb, out=out)) if other is not None else None
        t_gs, t_np, t_3 = compare(fn, lambda: np.matmul(a_op, b_op, out=out), threads, reps,
                                  fn_third=third, third_in_bf16=bf16)
        rows.append((M, K, N, ("T" if ta else "N") + ("T" if tb else "N"),
                     flops / t_gs / 1e9, flops / t_np / 1e9, flops / t_3 / 1e9 if third else None))
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--quick", action="store_true", help="every 5th shape only")
    ap.add_argument("--small", action="store_true", help="products of 12 to 128 rows instead "
                    "(K, N up to 384)")
    ap.add_argument("--verbose", action="store_true", help="print every shape")
    ap.add_argument("--isa", choices=gensar.cpu.ISAS, help="force gensar's kernel path (default: the best)")
    ap.add_argument("--precision", choices=gensar.cpu.PRECISIONS, default="fp32",
                    help="bf16: also time gensar's bf16 products (AVX512-BF16 CPUs) and print bf16/fp32")
    ap.add_argument("--no-amx", action="store_true", help="bf16 on VDPBF16PS even where AMX tiles exist")
    ap.add_argument("--against", metavar="DIR", help="also time another build's SGEMM (DIR: its gensar/ "
                    "package directory, built in place) and print this build / that build")
    args = ap.parse_args()
    if args.against and args.precision == "bf16":
        raise SystemExit("--against compares fp32 builds; drop --precision bf16")
    other = load_core(Path(args.against)) if args.against else None
    if args.isa:
        gensar.set_isa(args.isa)
    bf16 = args.precision == "bf16"
    if bf16 and not gensar.cpu_info()["bf16"]:
        raise SystemExit(f"--precision bf16: this CPU ({gensar.cpu.cpu_model()}) has no AVX512-BF16 "
                         "(or the kernel path is not avx512)")
    bf16_kernel = ""
    if bf16:
        if args.no_amx:
            gensar._core.set_amx(False)
        gensar.set_precision("bf16")
        bf16_kernel = f" (+ {ops.gemm_kernel_name()})"
        gensar.set_precision("fp32")
    blas = [i for i in threadpool_info() if i.get("user_api") == "blas"]
    print(f"CPU: {gensar.cpu.cpu_model()}; gensar kernel path: {gensar.get_isa()} "
          f"(SGEMM {ops.gemm_kernel_name()}); numpy BLAS: "
          + ", ".join(f"{i.get('internal_api')} {i.get('version')} ({i.get('architecture')})" for i in blas))
    print()
    where = f"{gensar.cpu.cpu_model()} | {gensar.get_isa()}"
    # the third engine's column: bf16 speed / fp32 speed, or this build / the other build
    third = "bf16/fp32" if bf16 else "this/other build" if other is not None else None
    vs = (lambda r: r[6] / r[4]) if bf16 else (lambda r: r[4] / r[6])
    extra_head = f" {third} median | min | max |" + (" bf16/numpy median |" if bf16 else "") if third else ""
    print("| threads | shapes | median ratio gensar/numpy | min | max | gensar GFLOP/s (median) | "
          f"numpy GFLOP/s (median) |{extra_head} CPU | kernel path |")
    print("|---|---|---|---|---|---|---|" + "---|" * extra_head.count("|") + "---|---|")
    details = []
    for th in args.threads:
        rows = run(th, args.quick, bf16, args.small, other)
        ratios = [r[4] / r[5] for r in rows]
        extra = ""
        if third:
            v = [vs(r) for r in rows]
            extra = f" {statistics.median(v):.2f} | {min(v):.2f} | {max(v):.2f} |"
            if bf16:
                extra += f" {statistics.median(r[6] / r[5] for r in rows):.2f} |"
        print(f"| {th} | {len(rows)} | {statistics.median(ratios):.2f} | {min(ratios):.2f} | "
              f"{max(ratios):.2f} | {statistics.median(r[4] for r in rows):.1f} | "
              f"{statistics.median(r[5] for r in rows):.1f} |{extra} {where}"
              f"{bf16_kernel} |", flush=True)
        details.append((th, rows))
    if args.verbose:
        for th, rows in details:
            head = f" {'bf16' if bf16 else 'other build'} GFLOP/s | {third} |" if third else ""
            print(f"\nthreads={th}, {where}\n| M | K | N | form | gensar GFLOP/s | numpy GFLOP/s | ratio |{head}"
                  f"\n|---|---|---|---|---|---|---|" + ("---|---|" if third else ""))
            for r in rows:
                M, K, N, form, g, n, b = r
                tail = f" {b:.1f} | {vs(r):.2f} |" if third else ""
                print(f"| {M} | {K} | {N} | {form} | {g:.1f} | {n:.1f} | {g / n:.2f} |{tail}")


if __name__ == "__main__":
    main()
