"""Training throughput of gensar.Seq2Seq (C core) against the same T5 architecture
in PyTorch (HuggingFace T5ForConditionalGeneration + torch.optim.AdamW), same
sizes, same batch, same thread count, in the same run.

Each (engine, threads) measurement runs in a fresh child process (so peak RSS is
per engine and thread settings do not leak), warm-up steps first, then the median
step time of --steps steps; engines alternate for --rounds rounds and the median
over rounds is reported.

    python benchmarks/bench_train.py                  # default GenSAR config
    python benchmarks/bench_train.py --steps 5 --rounds 3 --threads 1 2

Prints, per thread count: target tokens/s and examples/s of each engine, the
C/PyTorch ratio, and the peak memory (max RSS of the child, and for gensar its
activation workspace).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

import numpy as np


def make_batch(B, T_in, T_dec, V, seed=0):
    rng = np.random.default_rng(seed)
    ids = rng.integers(1, V, (B, T_in)).astype(np.int32)
    mask = np.ones((B, T_in), np.int32)
    lengths = rng.integers(T_in // 2, T_in + 1, B)
    for b, n in enumerate(lengths):  # realistic padding
        mask[b, n:] = 0
        ids[b, n:] = 0
    labels = rng.integers(1, V, (B, T_dec)).astype(np.int32)
    return ids, mask, labels


def config(a):
    return dict(vocab_size=a.vocab, d_model=a.d_model, d_kv=a.d_model // a.heads, d_ff=a.d_ff,
                num_layers=a.layers, num_decoder_layers=a.layers, num_heads=a.heads,
                relative_attention_num_buckets=32, relative_attention_max_distance=128,
                feed_forward_proj=a.ffn, tie_word_embeddings=True, dropout_rate=0.1,
                layer_norm_epsilon=1e-6)


def worker(a):
    ids, mask, labels = make_batch(a.batch, a.t_in, a.t_dec, a.vocab)
    times = []
    extra = {}
    if a.engine == "gensar":
        sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
        import gensar

        gensar.set_num_threads(a.worker_threads)
        m = gensar.Seq2Seq(config(a), lr=1e-3, weight_decay=0.01, max_grad_norm=1.0)
        batch = dict(input_ids=ids, attention_mask=mask, labels=labels)
        for i in range(a.warmup + a.steps):
            t = time.perf_counter()
            loss = m.train_step(batch)
            if i >= a.warmup:
                times.append(time.perf_counter() - t)
        extra["workspace_mb"] = gensar._core.t5_workspace_bytes(m._model) / 2**20
        extra["params"] = m.num_params
    else:
        import torch
        import transformers

        torch.set_num_threads(a.worker_threads)
        torch.manual_seed(0)
        cfg = transformers.T5Config(**config(a), decoder_start_token_id=0, pad_token_id=0)
        m = transformers.T5ForConditionalGeneration(cfg).train()
        opt = torch.optim.AdamW(m.parameters(), lr=1e-3, weight_decay=0.01)
        ti, tm, tl = (torch.from_numpy(x).long() for x in (ids, mask, labels))
        for i in range(a.warmup + a.steps):
            t = time.perf_counter()
            out = m(input_ids=ti, attention_mask=tm, labels=tl)
            opt.zero_grad(set_to_none=True)
            out.loss.backward()
            torch.nn.utils.clip_grad_norm_(m.parameters(), 1.0)
            opt.step()
            loss = float(out.loss)
            if i >= a.warmup:
                times.append(time.perf_counter() - t)
        extra["params"] = sum(p.numel() for p in m.parameters())
    step = statistics.median(times)
    print(json.dumps(dict(step_s=step, loss=float(loss),
                          max_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                          **extra)))


def run_child(a, engine, threads):
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", "--engine", engine,
           "--worker-threads", str(threads)]
    for k in ("batch", "t_in", "t_dec", "vocab", "d_model", "layers", "heads", "d_ff", "ffn",
              "steps", "warmup"):
        cmd += [f"--{k.replace('_', '-')}", str(getattr(a, k))]
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    out = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if out.returncode:
        raise RuntimeError(f"{engine} worker failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--t-in", type=int, default=96)
    p.add_argument("--t-dec", type=int, default=6)
    p.add_argument("--vocab", type=int, default=2000)
    p.add_argument("--d-model", type=int, default=128)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--d-ff", type=int, default=512)
    p.add_argument("--ffn", default="relu", choices=["relu", "gated-gelu"])
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--no-torch", action="store_true")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--engine", default="gensar", help=argparse.SUPPRESS)
    p.add_argument("--worker-threads", type=int, default=1, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.worker:
        return worker(a)
    try:
        import torch  # noqa: F401
        import transformers  # noqa: F401
        have_torch = not a.no_torch
    except ImportError:
        have_torch = False
    engines = ["gensar"] + (["torch"] if have_torch else [])
    print(f"config: batch {a.batch}, input {a.t_in}, target {a.t_dec} tokens, vocab {a.vocab}, "
          f"d_model {a.d_model}, {a.layers}+{a.layers} layers, {a.heads} heads, d_ff {a.d_ff}, "
          f"ffn {a.ffn}; {a.steps} timed steps after {a.warmup} warm-up, {a.rounds} rounds")
    if not have_torch:
        print("torch/transformers not importable: PyTorch comparison skipped")
    for threads in a.threads:
        res = {e: [] for e in engines}
        for r in range(a.rounds):
            for e in (engines if r % 2 == 0 else engines[::-1]):  # alternate the order
                res[e].append(run_child(a, e, threads))
        print(f"\nthreads = {threads}")
        step = {}
        for e in engines:
            step[e] = statistics.median(x["step_s"] for x in res[e])
            rss = max(x["max_rss_mb"] for x in res[e])
            tok = a.batch * a.t_dec / step[e]
            extra = ""
            if e == "gensar":
                extra = f", activation workspace {res[e][0]['workspace_mb']:.0f} MB"
            print(f"  {e:7s} step {step[e] * 1000:8.1f} ms  {tok:9.0f} target tokens/s  "
                  f"{a.batch / step[e]:7.1f} examples/s  peak RSS {rss:.0f} MB{extra}  "
                  f"(params {res[e][0]['params']}, rounds: "
                  + ", ".join(f"{x['step_s'] * 1000:.0f}" for x in res[e]) + " ms)")
        if have_torch:
            print(f"  ratio gensar/torch throughput: {step['torch'] / step['gensar']:.2f}x")


if __name__ == "__main__":
    main()
