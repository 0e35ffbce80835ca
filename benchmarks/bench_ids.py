"""Wall time to fit GenSAR dual-purpose identifiers (joint RQ-VAE) in C, at 1
and 2 threads, against the same RQ-VAE written in PyTorch (if importable).

Data: synthetic clustered catalogue, 60k items, 768-d semantic and 64-d
collaborative embeddings; reference sizes (encoders 512-256-128-64 -> h=32,
shared 2 x 256 x 64-d, specific 2 x 256 x 32-d per embedding, batch 1024,
AdamW lr 1e-3 wd 1e-5, beta 0.25), a fixed small number of epochs.

For each thread count the two implementations run alternately `--repeats`
times from the same initial weights (the C model's Xavier init + k-means
codebooks, copied into PyTorch) on the same batch order; the table reports
the median seconds per training epoch of each and their ratio, plus the total
fit time of gensar (training + assignment + collision resolution).

    python benchmarks/bench_ids.py                 # 60k items, 3 epochs, 1 repeat
    python benchmarks/bench_ids.py --items 20000 --epochs 2 --repeats 2

Convergence and code use on real item embeddings (an .npz with arrays
"semantic" and "collaborative", e.g. the ml-100k embeddings GenSAR.fit builds):
the old defaults (256 codes per level, 400 steps at a constant lr, no restarts)
against the current defaults at several step budgets; per budget the final
loss, whether it converged, per-level codes used / perplexity, collisions and
the fit time (wall and CPU seconds):

    python benchmarks/bench_ids.py --embeddings /work/notes/ml100k_emb.npz --budgets 250 500 1000 2000
"""
import argparse
import os
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
import gensar  # noqa: E402
from gensar import _core  # noqa: E402
from gensar.ids import DualIDs, make_synthetic_embeddings  # noqa: E402


# ----------------------------------------------------------------- PyTorch model

def torch_rqvae_class():
    """The joint RQ-VAE as the reference writes it in PyTorch (MLPLayers,
    VectorQuantizer with straight-through x + (x_q - x).detach(), residual
    quantiser residual = residual - x_res), with GenSAR's shared + specific
    codebooks. Built lazily so this module imports without torch."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    def mlp(dims):
        layers = []
        for i in range(len(dims) - 1):
            layers.append(nn.Linear(dims[i], dims[i + 1]))
            if i < len(dims) - 2:
                layers.append(nn.ReLU())
        return nn.Sequential(*layers)

    class TorchRQVAE(nn.Module):
        def __init__(self, in_dims, hidden, h, shared, specific, beta):
            super().__init__()
            self.h, self.beta = h, beta
            T = len(in_dims)
            self.enc = nn.ModuleList([mlp([d, *hidden, h]) for d in in_dims])
            self.dec = nn.ModuleList([mlp([h, *hidden[::-1], d]) for d in in_dims])
            self.shared = nn.ModuleList([nn.Embedding(k, T * h) for k in shared])
            self.specific = nn.ModuleList(
                [nn.ModuleList([nn.Embedding(k, h) for k in specific]) for _ in in_dims])

        def vq(self, x, emb):
            w = emb.weight
            d = (x ** 2).sum(1, keepdim=True) + (w ** 2).sum(1) - 2 * x @ w.t()
            idx = d.argmin(1)
            xq = emb(idx)
            loss = F.mse_loss(xq, x.detach()) + self.beta * F.mse_loss(xq.detach(), x)
            return x + (xq - x).detach(), loss, idx

        def forward(self, xs):
            z = torch.cat([e(x) for e, x in zip(self.enc, xs)], dim=1)
            residual, zq, losses, codes = z, 0, [], []
            for emb in self.shared:
                xr, loss, idx = self.vq(residual, emb)
                residual = residual - xr
                zq = zq + xr
                losses.append(loss)
                codes.append(idx)
            parts = []
            for t, levels in enumerate(self.specific):
                r = residual[:, t * self.h:(t + 1) * self.h]
                part = torch.zeros_like(r)
                for emb in levels:
                    xr, loss, idx = self.vq(r, emb)
                    r = r - xr
                    part = part + xr
                    losses.append(loss)
                    codes.append(idx)
                parts.append(part)
            if parts:
                zq = zq + torch.cat(parts, dim=1)
            recon = [F.mse_loss(dec(zq[:, t * self.h:(t + 1) * self.h]), x)
                     for t, (dec, x) in enumerate(zip(self.dec, xs))]
            quant = torch.stack(losses).mean()
            return sum(recon) + quant, recon, quant, torch.stack(codes, 1)

        def load_gensar(self, params, layout):
            """Copies a gensar RQ-VAE parameter buffer (layout from rqvae_layout)."""
            lin = {}
            for kind, mods in (("encoder", self.enc), ("decoder", self.dec)):
                for t, seq in enumerate(mods):
                    linears = [m for m in seq if isinstance(m, nn.Linear)]
                    for i, m in enumerate(linears):
                        lin[f"{kind}{t}.{i}.weight"] = m.weight
                        lin[f"{kind}{t}.{i}.bias"] = m.bias
            books = [e.weight for e in self.shared] + [e.weight for lv in self.specific for e in lv]
            for l, w in enumerate(books):
                lin[f"codebook.{l}"] = w
            with torch.no_grad():
                for name, off, shape in layout:
                    src = params[off:off + int(np.prod(shape))].reshape(shape)
                    lin[name].copy_(torch.from_numpy(np.array(src)))

        def gensar_grads(self, layout, n):
            """Gradients in gensar's flat layout (for comparisons)."""
            out = np.zeros(n, np.float32)
            named = {}
            for kind, mods in (("encoder", self.enc), ("decoder", self.dec)):
                for t, seq in enumerate(mods):
                    linears = [m for m in seq if isinstance(m, nn.Linear)]
                    for i, m in enumerate(linears):
                        named[f"{kind}{t}.{i}.weight"] = m.weight
                        named[f"{kind}{t}.{i}.bias"] = m.bias
            books = [e.weight for e in self.shared] + [e.weight for lv in self.specific for e in lv]
            for l, w in enumerate(books):
                named[f"codebook.{l}"] = w
            for name, off, shape in layout:
                g = named[name].grad
                out[off:off + int(np.prod(shape))] = 0 if g is None else g.detach().numpy().ravel()
            return out

    return TorchRQVAE


# ------------------------------------------------------------------- benchmark

REFERENCE_SIZES = dict(shared_levels=(256, 256), specific_levels=(256, 256))


def make_ids(epochs, seed=0):
    """The reference configuration (256 codes per level, constant lr, no
    restarts): the training loop the PyTorch model below also runs."""
    return DualIDs(**REFERENCE_SIZES, epochs=epochs, schedule="constant", warmup=0.0,
                   restart_dead_codes=False, progress=False, seed=seed)


def run_gensar(sem, col, epochs):
    ids = make_ids(epochs)
    t0 = time.perf_counter()
    ids.fit(sem, col)
    total = time.perf_counter() - t0
    return [h["seconds"] for h in ids.history_], total, [h["loss"] for h in ids.history_]


def run_torch(sem, col, epochs, init_params, layout, scale, n_threads, seed=0):
    import torch

    # the same inputs as DualIDs trains on (scale_inputs: one scalar per embedding)
    sem = np.ascontiguousarray(sem * np.float32(scale[0]))
    col = np.ascontiguousarray(col * np.float32(scale[1]))
    torch.set_num_threads(n_threads)
    ref = make_ids(0)
    model = torch_rqvae_class()((sem.shape[1], col.shape[1]), ref.hidden, ref.latent_dim,
                                ref.shared_levels, ref.specific_levels, ref.beta)
    model.load_gensar(init_params, layout)
    opt = torch.optim.AdamW(model.parameters(), lr=ref.lr, weight_decay=ref.weight_decay)
    n, bs = sem.shape[0], ref.batch_size
    rng = np.random.default_rng(seed)
    rng.permutation(n)  # the draw DualIDs uses for the k-means initialisation batch
    S, C = torch.from_numpy(sem), torch.from_numpy(col)
    times, losses = [], []
    for _ in range(epochs):
        t0 = time.perf_counter()
        perm = torch.from_numpy(rng.permutation(n))
        total = 0.0
        for s in range(0, n, bs):
            idx = perm[s:s + bs]
            loss, *_ = model((S[idx], C[idx]))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
        times.append(time.perf_counter() - t0)
        losses.append(total / n)
    return times, losses


def initial_state(sem, col):
    """The C model right after Xavier init + k-means codebook init (0 epochs)."""
    ids = make_ids(0)
    ids.fit(sem, col)
    return ids._params.copy(), _core.rqvae_layout(ids._model), ids.input_scale_


def _fit_and_describe(label, sem, col, **kw):
    t0, c0 = time.perf_counter(), time.process_time()
    ids = DualIDs(progress=False, **kw).fit(sem, col)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    rep = ids.report()
    print(f"\n### {label}: wall {wall:.1f} s, CPU {cpu:.1f} s")
    print(rep["summary"], flush=True)
    lv = rep["levels"]
    tr = rep["training"] or {}
    return {"label": label, "steps": tr.get("steps"), "final_loss": tr.get("final_loss"),
            "final_recon": tr.get("final_reconstruction"), "final_quant": tr.get("final_quantisation"),
            "change": tr.get("change"), "converged": tr.get("converged"), "wall_s": wall,
            "cpu_s": cpu, "min_util_pct": float(lv.utilisation_pct.min()),
            "min_util_raw_pct": float((lv.codes_used_raw / lv.codebook_size).min() * 100),
            "codes": lv.codebook_size.tolist()[:1],
            "perplexity": [round(p, 1) for p in lv.perplexity.tolist()],
            "collisions_before": rep["collisions"], "ids": ids}


def convergence(args):
    """Old defaults against the new ones at several step budgets (see the module doc)."""
    with np.load(args.embeddings) as f:
        sem, col = f["semantic"], f["collaborative"]
    gensar.set_num_threads(args.threads[0])
    print(f"{args.embeddings}: {sem.shape[0]} items, semantic {sem.shape[1]}-d, collaborative "
          f"{col.shape[1]}-d; {gensar.get_num_threads()} threads")
    rows = []
    if not args.skip_old:
        rows.append(_fit_and_describe("old defaults (256 codes, 200 epochs = 400 steps, constant lr, "
                                      "no restarts)", sem, col, **REFERENCE_SIZES, epochs=200,
                                      schedule="constant", warmup=0.0, restart_dead_codes=False,
                                      seed=args.seed))
    for method in args.methods:
        for steps in args.budgets:
            r = _fit_and_describe(f"{method}, auto sizes, {steps} steps, warm-up + linear decay, "
                                  f"restarts", sem, col, method=method, steps=steps, seed=args.seed)
            rows.append(r)
            if args.curves:
                np.save(f"{args.curves}_{method}_{steps}.npy", r["ids"].loss_curve_)
    print("\n| run | steps | final loss (reconstruction / quantisation) | recon. change last 10% "
          "| converged | min utilisation % (final / nearest codes) | wall s | CPU s |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        fl = ("n/a" if r["final_loss"] is None else
              f"{r['final_loss']:.5f} ({r['final_recon']:.5f} / {r['final_quant']:.5f})")
        ch = "n/a" if r["change"] is None else f"{100 * r['change']:+.2f}%"
        print(f"| {r['label']} | {r['steps']} | {fl} | {ch} | {r['converged']} | "
              f"{r['min_util_pct']:.1f} / {r['min_util_raw_pct']:.1f} | {r['wall_s']:.0f} | "
              f"{r['cpu_s']:.0f} |")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--items", type=int, default=60000)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--no-torch", action="store_true")
    ap.add_argument("--embeddings", help="npz with 'semantic' and 'collaborative': convergence mode")
    ap.add_argument("--budgets", type=int, nargs="*", default=[250, 500, 1000, 2000])
    ap.add_argument("--methods", nargs="+", default=["joint"])
    ap.add_argument("--skip-old", action="store_true")
    ap.add_argument("--curves", help="path prefix: save each run's per-step loss curve (.npy)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if args.embeddings:
        return convergence(args)

    sem, col = make_synthetic_embeddings(args.items, 768, 64, n_clusters=200, seed=0)
    try:
        if args.no_torch:
            raise ImportError
        import torch
        have_torch = True
        print(f"torch {torch.__version__}")
    except ImportError:
        have_torch = False
        print("PyTorch not importable: gensar only")
    print(f"gensar {gensar.__version__}, {args.items} items, 768-d + 64-d, reference sizes, "
          f"{args.epochs} epochs, {args.repeats} repeat(s)")
    rows = []
    for nt in args.threads:
        gensar.set_num_threads(nt)
        init_params, layout, scale = initial_state(sem, col)
        g_ep, g_total, t_ep = [], [], []
        for r in range(args.repeats):
            ep, total, gl = run_gensar(sem, col, args.epochs)
            g_ep += ep
            g_total.append(total)
            print(f"  threads={nt} repeat={r} gensar: per-epoch s {[round(x, 2) for x in ep]}, "
                  f"fit total {total:.1f} s, loss per epoch {[round(x, 4) for x in gl]}", flush=True)
            if have_torch:
                ep, tl = run_torch(sem, col, args.epochs, init_params, layout, scale, nt)
                t_ep += ep
                print(f"  threads={nt} repeat={r} torch : per-epoch s {[round(x, 2) for x in ep]}, "
                      f"loss per epoch {[round(x, 4) for x in tl]}", flush=True)
        rows.append((nt, statistics.median(g_ep), statistics.median(g_total),
                     statistics.median(t_ep) if t_ep else float("nan")))
    gensar.set_num_threads(0)
    print()
    print("| threads | gensar s/epoch (median) | gensar fit total s | torch s/epoch (median) | torch / gensar |")
    print("|---|---|---|---|---|")
    for nt, g, tot, t in rows:
        ratio = f"{t / g:.2f}" if have_torch else "n/a"
        print(f"| {nt} | {g:.2f} | {tot:.1f} | {t:.2f} | {ratio} |")


if __name__ == "__main__":
    main()
