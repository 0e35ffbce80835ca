"""Zero-collision check of DualIDs on a large synthetic clustered catalogue.

Fits identifiers for N synthetic items (768-d semantic, 64-d collaborative,
codebook sizes derived from the catalogue, or the reference's 256 per level
with --reference-sizes; `--duplicates` exact copies included) and prints
report(): collision rates before/after resolution, per-level codes used,
utilisation and perplexity, the training's final loss and convergence,
reconstruction errors, and the wall time.

    python benchmarks/ids_collisions.py --items 100000 --epochs 5
    python benchmarks/ids_collisions.py --items 100000 --reference-sizes --epochs 5
    python benchmarks/ids_collisions.py --items 100000 --method residual_kmeans
"""
import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
import gensar  # noqa: E402
from gensar.ids import DualIDs, make_synthetic_embeddings  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--items", type=int, default=100_000)
    ap.add_argument("--epochs", type=int, default=None, help="default: DualIDs' step budget")
    ap.add_argument("--reference-sizes", action="store_true", help="256 codes per level")
    ap.add_argument("--duplicates", type=int, default=100)
    ap.add_argument("--method", default="joint")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    gensar.set_num_threads(args.threads)
    sem, col = make_synthetic_embeddings(args.items, 768, 64, n_clusters=200,
                                         duplicates=args.duplicates, seed=args.seed)
    t0 = time.perf_counter()
    sizes = (dict(shared_levels=(256, 256), specific_levels=(256, 256)) if args.reference_sizes
             else {})
    ids = DualIDs(method=args.method, epochs=args.epochs, seed=args.seed, **sizes).fit(sem, col)
    wall = time.perf_counter() - t0
    rep = ids.report()
    print(f"method={args.method} items={args.items} duplicates={args.duplicates} "
          f"epochs={args.epochs} threads={gensar.get_num_threads()} fit wall time {wall:.1f} s "
          f"[{gensar.cpu.describe()}]")
    print(rep["summary"])
    print(f"reconstruction: {rep['reconstruction']}")
    s, c = ids.semantic_ids_, ids.collaborative_ids_
    print("distinct semantic IDs:", np.unique(s, axis=0).shape[0], "of", len(s),
          "| distinct collaborative IDs:", np.unique(c, axis=0).shape[0], "of", len(c))
    if ids.history_:
        h = ids.history_
        print("per-epoch seconds:", [round(e["seconds"], 1) for e in h])
        print("loss first/last epoch:", {k: (round(h[0][k], 4), round(h[-1][k], 4))
                                         for k in ("loss", "recon_semantic", "recon_collaborative", "quantisation")})


if __name__ == "__main__":
    main()
