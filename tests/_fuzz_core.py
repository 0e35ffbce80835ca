"""Random-argument fuzzer of every entry point of gensar._core (run by
tests/test_fuzz_core.py in a subprocess, so a crash fails a test instead of
killing pytest; also runnable by hand):

    python tests/_fuzz_core.py --seed 1 --cases 2000 [--log cases.txt] [--atheris]

Each case takes one function, builds plausible arguments for it from small random
sizes (so calls get past the argument checks into the kernels), then replaces 0-2
of them with a hostile value: wrong types, bools and floats for counts, 2**31,
2**64 + 5, NaN, inf, empty / 0-d / transposed / big-endian / unaligned / read-only
arrays, the wrong dtype, a capsule of another kind... A case passes when the call
returns or raises one of the clean exceptions below; for stateless kernels called
with unmutated (finite) arguments the float results must also be finite. Anything else (another exception, a non-finite
result of valid input) is printed as a finding; a crash kills the process, and the
last line of --log says which case (seed and index reproduce it).

With --atheris (if atheris is installed) the random choices are drawn from
atheris' fuzzed bytes instead of a seeded generator. The C core is not compiled
with coverage instrumentation, so atheris guides by the Python-side choices only;
the seeded mode is the one the test suite uses (reproducible).
"""
import argparse
import os
import resource
import sys

import numpy as np

# Run by hand from a checkout: use this checkout's gensar, not an installed one.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

CLEAN = (TypeError, ValueError, MemoryError, OverflowError, RuntimeError, KeyError, IndexError)
# Results that may legitimately hold non-finite values for finite input.
NONFINITE_OK = {"sinkhorn_scores"}


def _limit_memory(gib=3):
    """A huge size asked for by a hostile argument must fail as MemoryError, not
    exhaust the machine."""
    if "libasan" in os.environ.get("LD_PRELOAD", ""):
        return  # AddressSanitizer reserves terabytes of address space; it bounds allocations itself
    lim = int(gib * 2**30)
    resource.setrlimit(resource.RLIMIT_AS, (lim, lim))


class Choices:
    """The random decisions of a case, from a seeded generator or atheris bytes."""

    def __init__(self, rng=None, fdp=None):
        self.rng, self.fdp = rng, fdp

    def int(self, lo, hi):  # inclusive
        if self.fdp is not None:
            return self.fdp.ConsumeIntInRange(lo, hi)
        return int(self.rng.integers(lo, hi + 1))

    def pick(self, seq):
        return seq[self.int(0, len(seq) - 1)]

    def coin(self, p):
        return self.int(0, 999) < p * 1000

    def normal(self, shape, scale=1.0):
        seed = self.int(0, 2**31 - 1)
        return (np.random.default_rng(seed).standard_normal(shape) * scale).astype(np.float32)


def hostile_values(c, models):
    """Values that are wrong for almost any argument."""
    base = np.ones((3, 4), np.float32)
    unaligned = np.frombuffer(np.zeros(4 * 12 + 1, np.uint8).data, np.float32, 12, 1).reshape(3, 4)
    readonly = base.copy()
    readonly.flags.writeable = False
    return [
        None, True, False, -1, 0, 1, 2**31, 2**63, 2**64 + 5, -2**31 - 1, 3.7, -0.0, float("nan"),
        float("inf"), -float("inf"), 1e300, "relu", b"x", [], [1, 2], (3.5,), {}, object(),
        np.int64(2**40), np.float32("nan"), np.bool_(True),
        np.zeros((0, 4), np.float32), np.zeros((3, 0), np.int32), np.float32(1.0) * np.ones(()),
        base.astype(np.float64), base.astype(">f4"), base.T, base[:, ::2], unaligned, readonly,
        np.ones((3, 4), np.int32), np.full((3, 4), 2**30, np.int32), np.full((3, 4), -5, np.int32),
        np.ones((3, 4), np.int64), np.ones(5, np.int32), np.ones((2, 2, 2, 2, 2), np.float32),
        np.full((3, 4), np.nan, np.float32), np.full((3, 4), np.inf, np.float32),
        models[c.pick(sorted(models))],
    ]


def make_models():
    """One of each handle, tiny, built once per process."""
    from gensar import _core

    t5 = _core.t5_new(vocab_size=11, d_model=8, d_kv=4, d_ff=8, num_layers=1, num_decoder_layers=1,
                      num_heads=2, relative_attention_num_buckets=4,
                      relative_attention_max_distance=8, gated_gelu=False,
                      tie_word_embeddings=True, layer_norm_epsilon=1e-6, dropout_rate=0.1)
    p = _core.t5_buffers(t5)[0]
    p[:] = np.random.default_rng(0).standard_normal(p.size).astype(np.float32) * 0.3
    trie = _core.trie_build(np.array([[1, 2], [1, 3], [4, 5], [4, 6]], np.int32), 11)
    ids = np.array([[1, 2, 3]], np.int32)
    cache = _core.t5_cache_new(t5, ids, np.ones_like(ids), 2, 4)
    sas = _core.sasrec_new(n_items=6, max_len=4, hidden=8, layers=1, heads=2, inner=8, dropout=0.2)
    sp = _core.sasrec_buffers(sas)[0]
    sp[:] = np.random.default_rng(1).standard_normal(sp.size).astype(np.float32) * 0.3
    bert = _core.bert_new(vocab_size=20, hidden=8, layers=1, heads=2, intermediate=8,
                          max_positions=16, type_vocab_size=2, layer_norm_eps=1e-12)
    bp = _core.bert_params(bert)
    bp[:] = np.random.default_rng(2).standard_normal(bp.size).astype(np.float32) * 0.3
    rqvae = _core.rqvae_new((6,), (8,), 4, (3,), (2,), 0.25, 16, 0)
    return {"t5": t5, "trie": trie, "cache": cache, "sasrec": sas, "bert": bert, "rqvae": rqvae}


def templates(c, m):
    """name -> (args, kwargs) of a plausible call, sizes drawn by c."""
    n, k, d = c.int(1, 9), c.int(1, 5), c.int(1, 8)
    B, T, H = c.int(1, 3), c.int(1, 5), c.pick([1, 2])
    f = c.normal
    i32 = lambda shape, hi: np.asarray(  # noqa: E731
        np.random.default_rng(c.int(0, 10**6)).integers(0, hi, shape), np.int32)
    q = f((B, T, 2 * H))
    probs_shape = (B, H, T, T)
    return {
        "activation": lambda: ((c.pick(["relu", "gelu_tanh", "gelu_erf"]), f((n, d))), {}),
        "activation_backward": lambda: (("gelu_erf", f((n, d)), f((n, d))), {}),
        "adamw_step": lambda: ((f(n), f(n), f(n), np.abs(f(n)), c.int(1, 10)), {"lr": 1e-3}),
        "attention": lambda: ((q, q, q, H), {"causal": c.coin(0.5), "dropout_p": 0.1, "seed": 3}),
        "attention_backward": lambda: ((q, q, q, np.full(probs_shape, 1 / T, np.float32), q, H), {}),
        "bert_encode": lambda: ((m["bert"], i32(n, 20), np.array([0, n], np.int64)), {}),
        "bert_new": lambda: ((20, 8, 1, 2, 8, 16, 2, 1e-12), {}),
        "bert_params": lambda: ((m["bert"],), {}),
        "bert_tensor_specs": lambda: ((20, 8, 1, 2, 8, 16, 2, 1e-12), {}),
        "clip_grad_norm": lambda: ((f(n), 1.0), {}),
        "cross_entropy": lambda: ((f((n, d)), i32(n, d)), {}),
        "cross_entropy_backward": lambda: ((f((n, d)), i32(n, d), 0.5), {}),
        "dropout": lambda: ((f((n, d)), 0.3, c.int(0, 99)), {}),
        "embedding": lambda: ((i32(n, d), f((d, k))), {}),
        "embedding_backward": lambda: ((i32(n, d), f((n, k)), d), {}),
        "gemm_kernel_name": lambda: ((), {}),
        "get_num_threads": lambda: ((), {}),
        "kmeans": lambda: ((f((n, d)), c.int(1, n)), {"n_init": 2, "max_iter": 20}),
        "layernorm": lambda: ((f((n, d)), f(d)), {"beta": f(d)}),
        "layernorm_backward": lambda: ((f((n, d)), f(d), f(n), np.abs(f(n)), f((n, d))), {}),
        "linear": lambda: ((f((n, d)), f((k, d))), {"b": f(k)}),
        "linear_backward": lambda: ((f((n, d)), f((k, d)), f((n, k))), {}),
        "linear_log_sum_exp": lambda: ((f((n, d)), f((k, d))), {}),
        "log_sum_exp": lambda: ((f((n, d)),), {}),
        "log_sum_exp_kernel_name": lambda: ((), {}),
        "nearest_centroid": lambda: ((f((n, d)), f((k, d))), {}),
        "relative_bias": lambda: ((f((8, H)), T, T, 0, c.coin(0.5), 16), {}),
        "relative_bias_backward": lambda: ((f((H, T, T)), 8, 0, True, 16), {}),
        "relative_bucket": lambda: ((c.int(-50, 50), c.coin(0.5), 8, 16), {}),
        "resolve_collisions": lambda: ((i32((n, 2), 3), (3, 3), f((n, d)), f((3, d))), {}),
        "rmsnorm": lambda: ((f((n, d)), f(d)), {}),
        "rmsnorm_backward": lambda: ((f((n, d)), f(d), np.abs(f(n)), f((n, d))), {}),
        "rq_encode": lambda: ((f((n, d)), f(d * 5), (d,), (3,), (2,)), {"levels": (0, 1)}),
        "rq_fit_kmeans": lambda: ((f((max(n, 3), d)), (d,), (3,), (2,)), {"max_iter": 10}),
        "rqvae_buffers": lambda: ((m["rqvae"],), {}),
        "rqvae_code_usage": lambda: ((m["rqvae"],), {}),
        "rqvae_restart_dead_codes": lambda: ((m["rqvae"], c.int(0, 9)), {}),
        "rqvae_forward_backward": lambda: ((m["rqvae"], f((n, 6))), {}),
        "rqvae_init_codebooks": lambda: ((m["rqvae"], f((max(n, 3), 6))), {}),
        "rqvae_latent": lambda: ((m["rqvae"], f((n, 6))), {}),
        "rqvae_layout": lambda: ((m["rqvae"],), {}),
        "rqvae_new": lambda: (((6,), (8,), 4, (3,), (2,), 0.25, 16, 0), {}),
        "rqvae_reconstruct": lambda: ((m["rqvae"], f((n, 6))), {}),
        "rqvae_step_count": lambda: ((m["rqvae"],), {}),
        "rqvae_train_step": lambda: ((m["rqvae"], f((n, 6)), None, 1e-3, 1e-5), {}),
        "sasrec_adamw": lambda: ((m["sasrec"],), {"lr": 1e-3, "max_grad_norm": 1.0}),
        "sasrec_buffers": lambda: ((m["sasrec"],), {}),
        "sasrec_forward_backward": lambda: ((m["sasrec"], i32((B, 4), 7), i32((B, 4), 6)), {}),
        "sasrec_new": lambda: ((6, 4, 8, 1, 2, 8, 0.2), {}),
        "sasrec_score": lambda: ((m["sasrec"], i32((B, 4), 7)), {}),
        "sasrec_step": lambda: ((m["sasrec"],), {}),
        "sasrec_tensor_specs": lambda: ((6, 4, 8, 1, 2, 8, 0.2), {}),
        "set_num_threads": lambda: ((c.pick([0, 1, 2]),), {}),
        "set_isa": lambda: ((c.pick(["scalar", "avx2", "avx512"]),), {}),
        "get_isa": lambda: ((), {}),
        "best_isa": lambda: ((), {}),
        "set_precision": lambda: ((c.pick(["fp32", "bf16"]),), {}),
        "get_precision": lambda: ((), {}),
        "has_bf16": lambda: ((), {}),
        "set_amx": lambda: ((c.pick([False, True]),), {}),
        "amx": lambda: ((), {}),
        "sgemm": lambda: ((f((n, k)), f((k, d))), {"alpha": 0.5}),
        "sinkhorn_scores": lambda: ((np.abs(f((n, k))).astype(np.float64), 0.1, 5), {}),
        "softmax": lambda: ((f((n, d)),), {}),
        "softmax_backward": lambda: ((f((n, d)), f((n, d))), {}),
        "t5_beam_search": lambda: ((m["t5"], i32((B, T), 11), np.ones((B, T), np.int32), 3, 2),
                                   {"trie": m["trie"]}),
        "t5_apply_grads": lambda: ((m["t5"], 1e-3, 0.9, 0.999, 1e-8, 0.01, 1.0), {}),
        "t5_buffers": lambda: ((m["t5"],), {}),
        "t5_grad_buffer": lambda: ((m["t5"],), {}),
        "t5_cache_new": lambda: ((m["t5"], i32((B, T), 11), np.ones((B, T), np.int32), 2, 4), {}),
        "t5_cache_reorder": lambda: ((m["cache"], np.array([0, 0], np.int32)), {}),
        "t5_cache_rows": lambda: ((m["cache"],), {}),
        "t5_cache_steps": lambda: ((m["cache"],), {}),
        "t5_decode_step": lambda: ((m["cache"], i32(2, 11)), {}),
        "t5_forward_backward": lambda: ((m["t5"], i32((B, T), 11), np.ones((B, T), np.int32),
                                         i32((B, 2), 11), i32((B, 2), 11)), {"dropout": True}),
        "t5_logits": lambda: ((m["t5"], i32((B, T), 11), np.ones((B, T), np.int32), i32((B, 2), 11)),
                              {}),
        "t5_new": lambda: ((11, 8, 4, 8, 1, 1, 2, 4, 8, False, True, 1e-6, 0.1), {}),
        "t5_set_step": lambda: ((m["t5"], c.int(0, 5)), {}),
        "t5_step": lambda: ((m["t5"],), {}),
        "t5_tensors": lambda: ((m["t5"],), {}),
        "t5_train_grads": lambda: ((m["t5"], i32((B, T), 11), np.ones((B, T), np.int32),
                                    i32((B, 2), 11), i32((B, 2), 11), 0), {}),
        "t5_train_step": lambda: ((m["t5"], i32((B, T), 11), np.ones((B, T), np.int32),
                                   i32((B, 2), 11), i32((B, 2), 11), 1e-3, 0.9, 0.999, 1e-8, 0.01,
                                   1.0, 0), {}),
        "t5_workspace_bytes": lambda: ((m["t5"],), {}),
        "trie_arrays": lambda: ((m["trie"],), {}),
        "trie_build": lambda: ((i32((n, 2), 9),), {"vocab_size": 11, "on_duplicate": 1}),
        "trie_children": lambda: ((m["trie"], i32(c.int(0, 2), 7)), {}),
        "trie_info": lambda: ((m["trie"],), {}),
        "trie_lookup": lambda: ((m["trie"], i32(2, 7)), {}),
    }


def _arrays(x):
    if isinstance(x, np.ndarray):
        yield x
    elif isinstance(x, (tuple, list)):
        for y in x:
            yield from _arrays(y)
    elif isinstance(x, float):
        yield np.array([x])


def one_case(core, c, models, names):
    """Runs one case; returns (description, finding or None)."""
    name = c.pick(names)
    args, kwargs = templates(c, models)[name]()
    args = list(args)
    mutated = []
    n_mut = c.pick([0, 1, 1, 2]) if (args or kwargs) else 0
    slots = [("arg", i) for i in range(len(args))] + [("kw", key) for key in kwargs]
    pool = hostile_values(c, models)
    for _ in range(n_mut):
        if not slots:
            break
        kind, where = c.pick(slots)
        v = c.pick(pool)
        if kind == "arg":
            args[where] = v
        else:
            kwargs[where] = v
        mutated.append(f"{where}={_short(v)}")
    if c.coin(0.03) and args:  # too few positional arguments
        args = args[:-1]
        mutated.append("dropped last arg")
    desc = f"{name}({', '.join(_short(a) for a in args)}; {kwargs and list(kwargs)}) mutated: {mutated}"
    try:
        out = getattr(core, name)(*args, **kwargs)
    except CLEAN:
        return desc, None
    except Exception as e:  # noqa: BLE001 - the finding is the unexpected type
        return desc, f"unexpected {type(e).__name__}: {e}"
    # Valid finite input must give finite output. Only for the stateless kernels:
    # a model handle may hold weights an earlier legal call (lr=2**31) blew up, and
    # then the next training step reports the divergence itself.
    stateless = not any(type(a).__name__ == "PyCapsule" for a in args)
    if not mutated and stateless and name not in NONFINITE_OK:
        for a in _arrays(out):
            if a.dtype.kind == "f" and a.size and not np.isfinite(a).all():
                return desc, "non-finite result for valid finite input"
    return desc, None


def _short(v):
    if isinstance(v, np.ndarray):
        return f"array{v.shape}:{v.dtype.str}{'' if v.flags.c_contiguous else ':strided'}"
    r = repr(v)
    return r if len(r) < 40 else r[:37] + "..."


def run(seed, cases, log=None, use_atheris=False):
    _limit_memory()
    from gensar import _core

    models = make_models()
    names = sorted(templates(Choices(np.random.default_rng(0)), models))
    missing = [n for n in dir(_core) if callable(getattr(_core, n)) and not n.startswith("_")
               and n not in names]
    if missing:
        print(f"FINDING: entry points without a fuzz template: {missing}")
    findings = []
    logf = open(log, "w", buffering=1) if log else None
    count = [0]

    def case(c):
        desc, finding = one_case(_core, c, models, names)
        count[0] += 1
        if finding:
            findings.append(f"{finding} :: {desc}")
            print(f"FINDING: {finding} :: {desc}", flush=True)

    if use_atheris:
        import atheris

        # Coverage of the harness's own choices guides atheris (the C core has none).
        for fn in ("one_case", "templates", "hostile_values"):
            globals()[fn] = atheris.instrument_func(globals()[fn])

        def test_one(data):
            c = Choices(fdp=atheris.FuzzedDataProvider(data))
            if logf:
                logf.write(f"atheris case {count[0]}\n")
            desc, finding = globals()["one_case"](_core, c, models, names)
            count[0] += 1
            if finding:
                findings.append(finding)
                print(f"FINDING: {finding} :: {desc}", flush=True)
            if count[0] >= cases:  # libFuzzer exits the process itself after the last run
                print(f"CASES {count[0]} FINDINGS {len(findings)}", flush=True)

        atheris.Setup([sys.argv[0], f"-runs={cases}", f"-seed={seed}"], test_one)
        try:
            atheris.Fuzz()
        except SystemExit:
            pass
    else:
        for i in range(cases):
            c = Choices(np.random.default_rng([seed, i]))
            if logf:  # written before the call: after a crash, the last line names the case
                logf.write(f"seed {seed} case {i}\n")
            case(c)
    print(f"CASES {count[0]} FINDINGS {len(findings)}", flush=True)
    return 1 if findings or missing else 0


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cases", type=int, default=1000)
    ap.add_argument("--log")
    ap.add_argument("--atheris", action="store_true")
    a = ap.parse_args()
    sys.exit(run(a.seed, a.cases, a.log, a.atheris))
