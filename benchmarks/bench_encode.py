"""Sentence-encoder throughput: gensar's C BERT vs sentence-transformers (PyTorch), same
model (all-MiniLM-L6-v2 by default), same texts, same thread counts, in one run.

    python benchmarks/bench_encode.py [--model all-MiniLM-L6-v2] [--n 2000] [--repeats 3]
    python benchmarks/bench_encode.py --precision both   # gensar fp32 and bf16 products

The texts are ~2000 synthetic movie/product-like titles (a fixed seed). Each engine and thread
count is run `repeats` times, alternating engines, and the median texts/s is reported with
the ratio gensar / sentence-transformers. The machine is shared: read ratios, not absolutes.
Every result line names the CPU model and gensar's kernel path (--isa forces one) and, for
bf16, the product kernel (AMX tiles or VDPBF16PS). sentence-transformers always runs in
its default fp32; the cosine columns say how far each gensar engine's unit vectors are
from it (mean and worst text).
"""
import argparse
import os
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))  # the checkout
import gensar  # noqa: E402
from gensar.embeddings import SentenceEncoder  # noqa: E402

ADJ = ["Dark", "Last", "Little", "Great", "Lost", "Silent", "Wild", "Red", "Secret", "Golden",
       "Broken", "American", "Eternal", "Hidden", "Crimson", "Midnight", "Final", "Blue"]
NOUN = ["Night", "Story", "Empire", "River", "House", "Kingdom", "Heart", "Road", "City",
        "Game", "Dream", "Summer", "Island", "Machine", "Garden", "Storm", "Mirror", "Voyage"]
TAIL = ["", "", "", ": The Return", " II", ": A Love Story", " of the Dead", " in Paris",
        ", The", " (Director's Cut)", ": Part One"]
PRODUCT = ["wireless headphones with noise cancelling", "stainless steel water bottle 1 l",
           "USB-C charging cable, 2 m, braided", "mechanical keyboard with RGB backlight",
           "running shoes for men, lightweight"]


def make_titles(n, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        if i % 10 == 9:
            out.append(f"{PRODUCT[rng.integers(len(PRODUCT))]} - model {rng.integers(100, 999)}")
        else:
            out.append(f"The {ADJ[rng.integers(len(ADJ))]} {NOUN[rng.integers(len(NOUN))]}"
                       f"{TAIL[rng.integers(len(TAIL))]} ({rng.integers(1930, 2024)})")
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="all-MiniLM-L6-v2")
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--isa", choices=gensar.cpu.ISAS, help="force gensar's kernel path (default: the best)")
    ap.add_argument("--precision", choices=("fp32", "bf16", "both"), default="fp32",
                    help="gensar's matrix products: fp32 (default), bf16 (AVX512-BF16 / AMX CPUs), "
                         "or both as two engines in the same rounds")
    args = ap.parse_args()
    if args.isa:
        gensar.set_isa(args.isa)
    precisions = ["fp32", "bf16"] if args.precision == "both" else [args.precision]
    if "bf16" in precisions and not gensar.cpu_info()["bf16"]:
        ap.error("--precision bf16 needs a CPU with AVX512-BF16 or AMX")
    print(f"CPU: {gensar.cpu.cpu_model()}; gensar kernel path: {gensar.get_isa()}")
    texts = make_titles(args.n)
    enc = SentenceEncoder(args.model, allow_fallback=False)
    n_tok = sum(len(t) for t in enc.tokenize(texts))
    print(f"model {enc.path}  dim {enc.dim}  texts {len(texts)}  tokens {n_tok} "
          f"(mean {n_tok / len(texts):.1f})  batch {args.batch_size}")
    try:
        import torch
        from sentence_transformers import SentenceTransformer
        st = SentenceTransformer(str(enc.path), device="cpu")
    except ImportError:
        st = None
        print("sentence-transformers not importable: gensar only")

    def run_gensar(threads, precision="fp32"):
        gensar.set_num_threads(threads)
        gensar.set_precision(precision)
        t = time.perf_counter()
        v = enc.encode(texts, batch_size=args.batch_size, show_progress=False)
        return time.perf_counter() - t, v

    def run_st(threads):
        torch.set_num_threads(threads)
        t = time.perf_counter()
        with torch.inference_mode():
            v = st.encode(texts, batch_size=args.batch_size, normalize_embeddings=True,
                          convert_to_numpy=True, show_progress_bar=False)
        return time.perf_counter() - t, v

    run_gensar(2)  # warm-up (page in the weights, start the thread pool)
    if st:
        run_st(2)
    for threads in args.threads:
        g_times, s_times, vg = {p: [] for p in precisions}, [], {}
        for _ in range(args.repeats):
            for p in precisions:  # engines alternate inside each round
                dt, vg[p] = run_gensar(threads, p)
                g_times[p].append(dt)
            if st:
                dt, vs = run_st(threads)
                s_times.append(dt)
        for p in precisions:
            g = len(texts) / statistics.median(g_times[p])
            line = f"threads {threads}: gensar {p} {g:8.1f} texts/s"
            if st:
                s = len(texts) / statistics.median(s_times)
                cos = (vg[p] * vs).sum(1)  # both engines return unit vectors
                line += (f" | sentence-transformers (fp32) {s:8.1f} texts/s | ratio gensar/st {g / s:5.2f}"
                         f" | cosine to st mean {cos.mean():.7f} min {cos.min():.7f}")
            gensar.set_precision(p)
            tag = f"[{gensar.cpu.describe()}]"
            print(line + f"  (median of {args.repeats})  {tag}", flush=True)
    gensar.set_num_threads(0)
    gensar.set_precision("fp32")


if __name__ == "__main__":
    main()
