"""Two builds of the C core, one process: the per-request latency of a change.

Latency on a shared machine drifts by a third between runs taken minutes apart,
more than most changes to the decoder are worth, so comparing two bench_serve.py
runs of two builds says little. This script loads a second build's ``_core``
extension beside the installed one and times single ``GenSAR.recommend`` (or
``search``) calls with each in turn, in blocks of --block calls, on the same
requests and the same model (the amazon-like serving model of bench_serve.py,
built or loaded from its cache), 1 thread, 30 beams. Both builds must give the
same items for the first requests (checked), and the two must share the Python
API of ``_core`` (any build of this repository does).

    git worktree add /tmp/base <commit> && (cd /tmp/base && python setup.py build_ext --inplace)
    python benchmarks/bench_serve_ab.py /tmp/base/gensar              # installed build vs /tmp/base's

Prints each build's p50 / p10 per call and the ratio installed / other.
"""
from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_serve  # noqa: E402

import gensar  # noqa: E402
import gensar.decode as decode  # noqa: E402


def load_core(package_dir: Path):
    """The _core extension of another build, as its own module."""
    found = sorted(package_dir.glob("_core*.so")) + sorted(package_dir.glob("_core*.pyd"))
    if not found:
        raise SystemExit(f"no _core extension in {package_dir}: build it there first "
                         f"(python setup.py build_ext --inplace)")
    spec = importlib.util.spec_from_file_location("gensar_other_build._core", found[0])
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def report_ab(title, times, unit="ms", what="call"):
    """Prints each build's median and p10 time (times: {"installed": [s], "other": [s]}) and
    the ratio installed / other of the medians (< 1: the installed build is faster)."""
    scale = 1e3 if unit == "ms" else 1.0
    print(title)
    for key, t in times.items():
        print(f"  {key:>9}: median {np.median(t) * scale:7.3f} {unit}, p10 {np.percentile(t, 10) * scale:7.3f} "
              f"{unit} ({len(t)} {what}s)")
    print(f"  ratio installed / other (median {what}): {np.median(times['installed']) / np.median(times['other']):.3f}")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("other", help="the other build's gensar package directory (holding its _core*.so)")
    ap.add_argument("--call", choices=("recommend", "search"), default="recommend")
    ap.add_argument("--rounds", type=int, default=40, help="blocks per build")
    ap.add_argument("--block", type=int, default=20, help="calls per block")
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--cache", default=str(Path("~") / ".cache" / "gensar" / "bench-serve"))
    args = ap.parse_args(argv)
    cores = {"installed": decode._core, "other": load_core(Path(args.other))}
    for core in cores.values():
        core.set_num_threads(1)
    cfg = SimpleNamespace(catalogue="amazon-like", fraction=1.0, users=2000, seed=0, train_examples=256,
                          cache=args.cache, beams=30)
    name, model, ds = bench_serve.synthetic_model(cfg, print)
    histories, queries = bench_serve.make_requests(ds, args.requests, 0)
    if args.call == "recommend":
        call = lambda i: model.recommend(histories[i:i + 1], k=10)  # noqa: E731
    else:
        call = lambda i: model.search(queries[i:i + 1], histories[i:i + 1], k=10)  # noqa: E731
    first = {}
    for key, core in cores.items():
        decode._core = core
        first[key] = [call(i)["item_id"].tolist() for i in range(5)]  # also the warm-up
    if first["installed"] != first["other"]:
        raise SystemExit("the two builds return different items for the same requests")
    times = {key: [] for key in cores}
    for r in range(args.rounds):
        for key, core in cores.items():
            decode._core = core
            for j in range(args.block):
                i = (r * args.block + j) % args.requests
                t = time.perf_counter()
                call(i)
                times[key].append(time.perf_counter() - t)
    decode._core = cores["installed"]
    info = gensar.cpu_info()
    report_ab(f"{name}, {args.call}, 1 request per call, 1 thread, 30 beams; CPU {info['cpu']}, "
              f"kernel path {info['isa']}", times)


if __name__ == "__main__":
    main()
