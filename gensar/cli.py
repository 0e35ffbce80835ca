"""The ``gensar`` command line.

    gensar demo      a one-minute tour of the C core (matmul speed, kernels, threads)
"""
import argparse
import sys
import time


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
    x = rng.standard_normal((4, 7)).astype(np.float32)
    y, _ = ops.rmsnorm(x, np.ones(7, np.float32))
    p = ops.softmax(x)
    print(f"rmsnorm rows have RMS {np.sqrt((y ** 2).mean(-1)).round(4).tolist()}; "
          f"softmax rows sum to {p.sum(-1).round(6).tolist()}")
    return 0


def main(argv=None):
    parser = argparse.ArgumentParser(prog="gensar", description="GenSAR: unified generative "
                                     "search and recommendation with a C core.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("demo", help="a quick tour of the C core")
    p.add_argument("--threads", type=int, default=0, help="OpenMP threads (default: OMP_NUM_THREADS)")
    p.set_defaults(func=demo)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
