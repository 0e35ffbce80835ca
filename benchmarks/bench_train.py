"""Training throughput of gensar.Seq2Seq (C core) against the same T5 architecture
in PyTorch (HuggingFace T5ForConditionalGeneration + torch.optim.AdamW), same
sizes, same batch, same thread count, in the same run.

Each (engine, threads) measurement runs in a fresh child process (so peak RSS is
per engine and thread settings do not leak), warm-up steps first, then the median
step time of --steps steps; engines alternate for --rounds rounds and the median
over rounds is reported.

    python benchmarks/bench_train.py                  # default GenSAR config
    python benchmarks/bench_train.py --steps 5 --rounds 3 --threads 1 2
    python benchmarks/bench_train.py --preset quick   # the quick preset's model
    python benchmarks/bench_train.py --isa avx2       # force gensar's kernel path
    python benchmarks/bench_train.py --precision both # gensar fp32 and bf16 products

``--precision bf16`` runs gensar with bf16 matrix products (gensar.set_precision,
CPUs with AVX512-BF16); ``both`` runs gensar in fp32 and in bf16 as two engines
in the same alternating rounds and prints the ratio of their throughputs. The
bf16 kernel is AMX tiles where the CPU has them (--no-amx: VDPBF16PS).

Prints, per thread count: target tokens/s and examples/s of each engine, the
C/PyTorch ratio, and the peak memory (max RSS of the child, and for gensar its
activation workspace). Every row names the CPU model and the kernel path the
gensar child ran on (GENSAR_ISA is set in that child when --isa is given).

``--preset quick`` sets the model of ``gensar run --preset quick`` (gensar/cli.py):
vocab 5,600 (issue 14's figure; today's tokenizer gives about 2,300 tokens on ml-100k,
which bench_loop.py prints: --vocab 2300 to match it), batch 64, input 80
tokens, target 6, d_model 128, 2+2 layers, 4 heads, d_ff 512, ReLU; other options
given on the command line still override it.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import time

import numpy as np

# The children get the environment this script started with (benchmarks/_child.py):
# importing gensar (the parent does, to name the CPU and path) sets GOMP_SPINCOUNT,
# which must not leak into the PyTorch child.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _child import run_worker  # noqa: E402

# Model sizes: the script's defaults and the GenSAR presets' models.
DEFAULTS = dict(batch=128, t_in=96, t_dec=6, vocab=2000, d_model=128, layers=4, heads=4, d_ff=512,
                ffn="relu")
PRESETS = {"quick": dict(batch=64, t_in=80, t_dec=6, vocab=5600, d_model=128, layers=2, heads=4,
                         d_ff=512, ffn="relu")}


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
    if a.engine in ("gensar", "gensar-bf16"):
        sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
        import gensar

        gensar.set_num_threads(a.worker_threads)
        if a.engine == "gensar-bf16":
            if a.no_amx:
                gensar._core.set_amx(False)
            gensar.set_precision("bf16")  # raises on a CPU without AVX512-BF16
        m = gensar.Seq2Seq(config(a), lr=1e-3, weight_decay=0.01, max_grad_norm=1.0)
        batch = dict(input_ids=ids, attention_mask=mask, labels=labels)
        for i in range(a.warmup + a.steps):
            t = time.perf_counter()
            loss = m.train_step(batch)
            if i >= a.warmup:
                times.append(time.perf_counter() - t)
        extra["workspace_mb"] = gensar._core.t5_workspace_bytes(m._model) / 2**20
        extra["params"] = m.num_params
        extra["isa"] = gensar.get_isa() + (f" + {gensar.cpu_info()['sgemm_kernel']}"
                                           if gensar.get_precision() == "bf16" else "")
        extra["cpu"] = gensar.cpu.cpu_model()
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
        extra["isa"] = f"torch {torch.__version__}"
    step = statistics.median(times)
    print(json.dumps(dict(step_s=step, loss=float(loss),
                          max_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                          **extra)))


def run_child(a, engine, threads):
    args = []
    for k in ("batch", "t_in", "t_dec", "vocab", "d_model", "layers", "heads", "d_ff", "ffn",
              "steps", "warmup"):
        args += [f"--{k.replace('_', '-')}", getattr(a, k)]
    if a.no_amx:
        args.append("--no-amx")
    return run_worker(__file__, engine, threads, args, isa=a.isa if engine.startswith("gensar") else None)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", choices=sorted(PRESETS), default=None,
                   help="model sizes of a GenSAR preset (options given explicitly win)")
    p.add_argument("--batch", type=int, default=None, help="default 128")
    p.add_argument("--t-in", type=int, default=None, help="default 96")
    p.add_argument("--t-dec", type=int, default=None, help="default 6")
    p.add_argument("--vocab", type=int, default=None, help="default 2000")
    p.add_argument("--d-model", type=int, default=None, help="default 128")
    p.add_argument("--layers", type=int, default=None, help="encoder and decoder layers, default 4")
    p.add_argument("--heads", type=int, default=None, help="default 4")
    p.add_argument("--d-ff", type=int, default=None, help="default 512")
    p.add_argument("--ffn", default=None, choices=["relu", "gated-gelu"], help="default relu")
    p.add_argument("--isa", choices=("scalar", "avx2", "avx512"), default=None,
                   help="force gensar's kernel path (GENSAR_ISA in the gensar child)")
    p.add_argument("--precision", choices=("fp32", "bf16", "both"), default="fp32",
                   help="gensar's matrix products: fp32, bf16 (AVX512-BF16 CPUs) or both, as two engines")
    p.add_argument("--no-amx", action="store_true",
                   help="bf16 on VDPBF16PS even where AMX tiles exist (default: AMX where present)")
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--no-torch", action="store_true")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--engine", default="gensar", help=argparse.SUPPRESS)
    p.add_argument("--worker-threads", type=int, default=1, help=argparse.SUPPRESS)
    a = p.parse_args()
    sizes = dict(DEFAULTS, **PRESETS.get(a.preset, {}))
    for k, v in sizes.items():  # explicit options win over the preset and the defaults
        if getattr(a, k) is None:
            setattr(a, k, v)
    if a.worker:
        return worker(a)
    try:
        import torch  # noqa: F401
        import transformers  # noqa: F401
        have_torch = not a.no_torch
    except ImportError:
        have_torch = False
    gensar_engines = {"fp32": ["gensar"], "bf16": ["gensar-bf16"], "both": ["gensar", "gensar-bf16"]}
    engines = gensar_engines[a.precision] + (["torch"] if have_torch else [])
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
    import gensar

    if a.isa:
        gensar.set_isa(a.isa)
    if a.precision != "fp32" and not gensar.cpu_info()["bf16"]:
        raise SystemExit(f"--precision {a.precision}: this CPU ({gensar.cpu.cpu_model()}) has no AVX512-BF16")
    print(f"CPU: {gensar.cpu.cpu_model()}; gensar kernel path: {gensar.get_isa()}; "
          f"gensar precision: {a.precision}")
    print(f"config{' (preset ' + a.preset + ')' if a.preset else ''}: batch {a.batch}, input {a.t_in}, target {a.t_dec} tokens, vocab {a.vocab}, "
          f"d_model {a.d_model}, {a.layers}+{a.layers} layers, {a.heads} heads, d_ff {a.d_ff}, "
          f"ffn {a.ffn}; {a.steps} timed steps after {a.warmup} warm-up, {a.rounds} rounds")
    if not have_torch:
        print("PyTorch comparison skipped (--no-torch, or torch/transformers not importable)")
    for threads in a.threads:
        res = {e: [] for e in engines}
        for r in range(a.rounds):
            for e in (engines if r % 2 == 0 else engines[::-1]):  # alternate the order
                res[e].append(run_child(a, e, threads))
        cpu = gensar.cpu.cpu_model()
        print(f"\nthreads = {threads}")
        step = {}
        for e in engines:
            step[e] = statistics.median(x["step_s"] for x in res[e])
            rss = max(x["max_rss_mb"] for x in res[e])
            tok = a.batch * a.t_dec / step[e]
            extra = ""
            if e.startswith("gensar"):
                extra = f", activation workspace {res[e][0]['workspace_mb']:.0f} MB"
            print(f"  {e:11s} step {step[e] * 1000:8.1f} ms  {tok:9.0f} target tokens/s  "
                  f"{a.batch / step[e]:7.1f} examples/s  peak RSS {rss:.0f} MB{extra}  "
                  f"(params {res[e][0]['params']}, rounds: "
                  + ", ".join(f"{x['step_s'] * 1000:.0f}" for x in res[e]) + " ms)"
                  f"  [{res[e][0].get('cpu', cpu)}, {res[e][0]['isa']}]")
        if have_torch:
            for e in engines[:-1]:
                print(f"  ratio {e}/torch throughput: {step['torch'] / step[e]:.2f}x  "
                      f"[{cpu}, gensar {res[e][0]['isa']}, {res['torch'][0]['isa']}]")
        if a.precision == "both":
            print(f"  ratio gensar bf16/fp32 throughput: {step['gensar'] / step['gensar-bf16']:.2f}x  "
                  f"[{cpu}, {res['gensar-bf16'][0]['isa']} vs {res['gensar'][0]['isa']}; loss after "
                  f"{a.warmup + a.steps} steps: {res['gensar-bf16'][0]['loss']:.4f} vs {res['gensar'][0]['loss']:.4f}]")


if __name__ == "__main__":
    main()
