"""Is it the identifiers or the code-by-code generation? A SASRec that sees items only
through GenSAR's identifier codes.

GenSAR's encoder sees a history item only as its identifier's codes, and its decoder
generates the next item code by code. This probe asks how much of SASRec's
recommendation quality survives each of those two steps, with everything else held
fixed (the same causal transformer, data, optimiser and epochs; PyTorch, 1 thread):

  item            SASRec: one learnt embedding per item, in the history and as the
                  output (item score = h . e_item, softmax over the catalogue)
  codes_in        history items as the sum of their codes' embeddings (one table
                  per level, as GenSAR's token embeddings); output as `item`
  codes           codes in and out: an item's output embedding is the sum of its
                  codes' embeddings too (the identifiers are all the model knows)
  codes_generative  codes in; out, the item's log-probability generated code by
                  code: level l's code from an MLP of h + the embeddings of the
                  codes before it, softmax over the codes valid after that prefix in
                  the catalogue (GenSAR's decoder with constrained_softmax, reduced
                  to an MLP per level)
  code_tokens_generative  (--targets last) each history item as L code tokens (an
                  item position and a level embedding) in a bidirectional encoder,
                  read at the last item; generated as codes_generative
  t5_tokens_generative  (--targets last) the same tokens plus a separator per item
                  in HuggingFace's T5 encoder (relative position bias only, as
                  GenSAR's encoder); generated as codes_generative
  t5_marked_generative  (--targets last) as t5_tokens_generative, each item's
                  separator replaced by a token saying how recent it is (0 = last)
  codes_bidir_generative  (--targets last) as codes_generative with the causal mask
                  removed: every item position sees the whole history (as GenSAR's
                  encoder), read at the last item
  t5_bags_generative  (--targets last) GenSAR's item bags in HF's T5 encoder: one
                  position per item, the sum of its codes' embeddings and a learnt
                  recency embedding (GenSAR's recency_embeddings), T5's relative
                  position bias, read at the last item
  t5_seq2seq_generative  (--targets last) GenSAR's model without text: the encoder of
                  t5_bags_generative and HF's T5 decoder generating the codes as
                  tokens (cross-attention over every item position, tied embeddings,
                  softmax over the codes valid after the prefix)

Identifiers: the collaborative IDs of a saved GenSAR model (``--model DIR``, e.g.
``gensar run --preset quick --out DIR``), or fitted here per seed (``--fit-ids N``:
SASRec trained as GenSAR trains it, the sentence encoder, and DualIDs with GenSAR's
settings but N of the 4 levels shared; GenSAR's own layout is N = 2, and N = 0 gives a
purely collaborative ID, to ask whether the shared prefix costs recommendation).
Data: ml-100k's training events (both kinds, as gensar's SASRec), windows of
``--max-len`` items with a target at every position; validation next-item cases
scored on the sampled protocol (100 candidates, popularity negatives) with gensar's
own metric code. Validation only.

    python benchmarks/id_factorisation.py --model DIR [--epochs 40] [--seeds 0 1]
    python benchmarks/id_factorisation.py --fit-ids 0 --targets last --examples-per-epoch 41000

Writes benchmarks/results/id-factorisation-<name>.{md,csv}. Needs torch (optional
dependency, ``pip install torch``).
"""
from __future__ import annotations

import argparse
import csv
import shlex
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _provenance import commit  # noqa: E402

VARIANTS = ("item", "codes_in", "codes", "codes_generative", "code_tokens_generative", "t5_tokens_generative",
            "t5_marked_generative", "codes_bidir_generative", "t5_bags_generative", "t5_seq2seq_generative")
BIDIRECTIONAL = ("code_tokens_generative", "t5_tokens_generative", "t5_marked_generative", "codes_bidir_generative",
                 "t5_bags_generative", "t5_seq2seq_generative")
T5_ENCODER = ("t5_tokens_generative", "t5_marked_generative", "t5_bags_generative")


def windows(seqs, T, targets="all", is_target=None):
    """(inputs, targets) int64 (n, T): left-padded windows, -1 = no item, -100 = no target.
    targets "all": gensar's SASRec windows (every position a target, every item a target
    once per epoch); "last" (GenSAR's examples): one window per target, the up to T items
    before it, a target at the last position only; is_target (one bool array per
    sequence, "last" only): which events may be a target (the others are history only)."""
    if targets == "all":
        from gensar.embeddings.sasrec import IGNORE, SASRec

        x, y = SASRec(max_len=T)._windows(seqs)  # slots hold item + 1, 0 = none
        return x.astype(np.int64) - 1, np.where(y == IGNORE, -100, y).astype(np.int64)
    X, Y = [], []
    for u, s in enumerate(seqs):
        for t in range(1, len(s)):
            if is_target is not None and not is_target[u][t]:
                continue
            h = s[max(0, t - T):t]
            x, y = np.full(T, -1), np.full(T, -100)
            x[T - len(h):], y[-1] = h, s[t]
            X.append(x)
            Y.append(y)
    return np.stack(X), np.stack(Y)


def valid_code_masks(codes, K):
    """(N, L, K) bool: at each level, the codes valid after the item's own prefix (the
    catalogue trie's children, as GenSAR's constrained softmax uses them)."""
    from gensar import Trie

    trie = Trie(codes, on_duplicate="first")
    N, L = codes.shape
    out = np.zeros((N, L, K), bool)
    for i in range(N):
        for lv in range(L):
            out[i, lv, trie.children(codes[i, :lv])] = True
    return out


def build(variant, codes, T, H, torch, dropout=0.2):
    nn = torch.nn
    N, L = codes.shape
    K = int(codes.max()) + 1
    code_t = torch.as_tensor(codes)
    allowed = torch.as_tensor(valid_code_masks(codes, K))

    class Probe(nn.Module):
        def __init__(self):
            super().__init__()
            self.item = nn.Embedding(N, H)
            self.code = nn.ModuleList(nn.Embedding(K, H) for _ in range(L))
            self.pos = nn.Embedding(T, H)
            layer = nn.TransformerEncoderLayer(H, 1, H, dropout, batch_first=True, norm_first=True)
            self.enc = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
            self.ln, self.drop = nn.LayerNorm(H), nn.Dropout(dropout)
            # generative head: level l's code from h + embeddings of the codes before it
            self.prev = nn.ModuleList(nn.Embedding(K, H) for _ in range(L))
            self.level = nn.Parameter(torch.zeros(L, H))  # code_tokens: which level a position holds
            self.head = nn.ModuleList(nn.Sequential(nn.Linear(H, H), nn.GELU(), nn.Linear(H, K))
                                      for _ in range(L))
            for e in (self.item, *self.code, *self.prev):
                nn.init.normal_(e.weight, std=0.05)
            if variant == "t5_seq2seq_generative":  # decoder tokens: 0 start, 2 + lv * K + code
                import transformers

                self.s2s = transformers.T5ForConditionalGeneration(transformers.T5Config(
                    vocab_size=L * K + 2, d_model=H, d_kv=H // 2, num_heads=2, d_ff=H, num_layers=2,
                    num_decoder_layers=2, dropout_rate=dropout, feed_forward_proj="relu",
                    decoder_start_token_id=0, pad_token_id=0, tie_word_embeddings=True))
            if variant in T5_ENCODER:  # HF's T5 encoder: relative positions only
                import transformers

                self.t5 = transformers.T5EncoderModel(transformers.T5Config(
                    vocab_size=L * K + 2 + T, d_model=H, d_kv=H // 2, num_heads=2, d_ff=H, num_layers=2,
                    dropout_rate=dropout, feed_forward_proj="relu"))

        def composed(self, idx):
            return sum(self.code[lv](code_t[idx, lv]) for lv in range(L))

        def hidden(self, x):
            pad = x < 0
            xi = x.clamp(min=0)
            if variant in ("t5_bags_generative", "t5_seq2seq_generative"):  # an item: its codes + recency
                e = (self.composed(xi) * H ** 0.5 + self.pos.weight[None]) * (~pad)[..., None]
                if variant == "t5_bags_generative":
                    return self.t5(inputs_embeds=e, attention_mask=(~pad).long()).last_hidden_state
                out = self.s2s.encoder(inputs_embeds=e, attention_mask=(~pad).long()).last_hidden_state
                return torch.cat([out, (~pad)[..., None].float()], -1)  # the mask rides along as a channel
            if variant in ("t5_tokens_generative", "t5_marked_generative"):
                # each item as its L code tokens (ids level * K + code + 2) and a separator (1),
                # as GenSAR writes a history; marked: the separator is a token saying how
                # recent the item is (T - 1 - slot: 0 = the last item). 0 = padding. The
                # state read is the last token's.
                sep = (torch.ones(len(x), T, 1, dtype=torch.long) if variant == "t5_tokens_generative" else
                       (2 + L * K + torch.arange(T - 1, -1, -1))[None, :, None].expand(len(x), T, 1))
                tok = torch.cat([code_t[xi] + 2 + torch.arange(L) * K, sep], 2)
                tok = tok.masked_fill(pad[..., None], 0).reshape(len(x), T * (L + 1))
                out = self.t5(input_ids=tok, attention_mask=(tok > 0).long()).last_hidden_state
                return out.reshape(len(x), T, L + 1, H)[:, :, -1]
            if variant == "code_tokens_generative":  # L positions per item, as GenSAR's tokens
                e = torch.stack([self.code[lv](code_t[xi, lv]) + self.level[lv] for lv in range(L)], 2)
                e = self.drop(e * H ** 0.5 + self.pos.weight[None, :, None]).reshape(len(x), T * L, H)
                # bidirectional, as GenSAR's encoder (so "last" targets only): item t's state
                # is its last code's
                out = self.enc(e, src_key_padding_mask=pad.repeat_interleave(L, 1))
                return self.ln(out.reshape(len(x), T, L, H)[:, :, -1])
            e = self.item(xi) if variant == "item" else self.composed(xi)
            e = self.drop(e * H ** 0.5 + self.pos.weight[None]) * (~pad)[..., None]
            if variant == "codes_bidir_generative":  # every position sees the whole window (padding masked)
                return self.ln(self.enc(e, src_key_padding_mask=pad))
            causal = torch.triu(torch.ones(T, T, dtype=torch.bool), 1)
            return self.ln(self.enc(e, mask=causal))

        def level_logp(self, ctx, lv, items):
            """log p of level lv's codes (..., K), over the codes valid after each item's prefix."""
            z = self.head[lv](ctx).masked_fill(~allowed[items, lv], float("-inf"))
            return torch.log_softmax(z, -1)

        def seq2seq_logp(self, enc, items):
            """(R,) log p of items (R,), row r's after encoder states enc[r] (R, T, H + 1):
            teacher-forced decoder, each level's softmax over the codes valid after the
            item's prefix."""
            states, mask = enc[..., :-1], enc[..., -1].long()
            tok = code_t[items] + 2 + torch.arange(L) * K  # (R, L)
            dec_in = torch.cat([torch.zeros(len(items), 1, dtype=torch.long), tok[:, :-1]], 1)
            logits = self.s2s(encoder_outputs=(states,), attention_mask=mask, decoder_input_ids=dec_in).logits
            total = 0.0
            for lv in range(L):
                z = logits[:, lv, 2 + lv * K:2 + (lv + 1) * K].masked_fill(~allowed[items, lv], float("-inf"))
                total = total + torch.log_softmax(z, -1).gather(-1, code_t[items, lv, None])[:, 0]
            return total

        def loss(self, h, y):
            if variant == "t5_seq2seq_generative":  # targets at the last position only (--targets last)
                keep = y[:, -1] >= 0
                return -self.seq2seq_logp(h[keep], y[keep, -1]).mean()
            keep = y >= 0
            h, y = h[keep], y[keep]
            if not variant.endswith("generative"):
                out = self.item.weight if variant in ("item", "codes_in") else self.composed(torch.arange(N))
                return nn.functional.cross_entropy(h @ out.T, y)
            total, ctx = 0.0, h
            for lv in range(L):
                total = total - self.level_logp(ctx, lv, y).gather(-1, code_t[y, lv, None]).mean()
                ctx = ctx + self.prev[lv](code_t[y, lv])
            return total

        def scores(self, h):
            """(B, N) log-scores of every item after hidden states h (B, H) (t5_seq2seq_generative:
            encoder states (B, T, H + 1))."""
            if variant == "t5_seq2seq_generative":
                return torch.stack([self.seq2seq_logp(h[b:b + 1].expand(N, -1, -1), torch.arange(N))
                                    for b in range(len(h))])
            if not variant.endswith("generative"):
                out = self.item.weight if variant in ("item", "codes_in") else self.composed(torch.arange(N))
                return h @ out.T
            items = torch.arange(N)
            ctx, total = h[:, None, :].expand(-1, N, -1), 0.0
            for lv in range(L):
                total = total + self.level_logp(ctx, lv, items).gather(-1, code_t[None, :, lv, None].expand(len(h), -1, 1))[..., 0]
                ctx = ctx + self.prev[lv](code_t[:, lv])[None]
            return total

    return Probe()


def run(variant, seed, a, ds, codes, seqs, torch, log):
    from gensar.evaluate import evaluate_scorer

    torch.manual_seed(seed)
    T = a.max_len
    X, Y = (torch.as_tensor(v) for v in windows(seqs, T, a.targets, a.is_target))
    m = build(variant, codes, T, a.hidden, torch, a.dropout)
    opt = torch.optim.Adam(m.parameters(), a.lr)
    ev_items = ds.events["item"].to_numpy()

    def score(task, ex):
        m.eval()
        xs = np.full((len(ex), T), -1)
        for i, h in enumerate(ex["history"]):
            h = ev_items[h][-T:]
            if len(h):
                xs[i, T - len(h):] = h
        with torch.no_grad():
            hid = m.hidden(torch.as_tensor(xs))
            hid = hid if variant == "t5_seq2seq_generative" else hid[:, -1]
            out = np.concatenate([m.scores(hid[s:s + 64]).numpy() for s in range(0, len(hid), 64)])
        m.train()
        return out

    gen = torch.Generator().manual_seed(seed)
    rows, t0 = [], time.perf_counter()
    for epoch in range(1, a.epochs + 1):
        total, n = 0.0, 0
        order = torch.randperm(len(X), generator=gen)[:a.examples_per_epoch or None]
        for s in range(0, len(order), a.batch_size):
            idx = order[s:s + a.batch_size]
            loss = m.loss(m.hidden(X[idx]), Y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            total, n = total + loss.item(), n + 1
        if epoch % a.eval_every == 0 or epoch == a.epochs:
            table = evaluate_scorer(ds, score, tasks=("rec",), split="valid", protocols=("sampled",),
                                    method=variant, seed=seed)
            row = dict(variant=variant, targets=a.targets, seed=seed, epoch=epoch,
                       targets_seen=epoch * int((Y[order] >= 0).sum()), train_loss=round(total / n, 4),
                       **{k: float(table[k].iloc[0]) for k in ("HR@10", "NDCG@10")},
                       seconds=round(time.perf_counter() - t0, 1))
            rows.append(row)
            log(f"{variant} seed {seed} epoch {epoch}: loss {row['train_loss']:.3f} "
                f"valid sampled NDCG@10 {row['NDCG@10']:.4f} ({row['seconds']:.0f} s)")
    return rows


def fitted_collaborative_ids(ds, n_shared, seed):
    """(n_items, 4) collaborative IDs fitted as GenSAR fits them (GenSAR.fit_identifiers:
    its default SASRec, sentence encoder and DualIDs settings), n_shared of the 4 levels shared."""
    import gensar

    model = gensar.GenSAR(shared_levels=("auto",) * n_shared, specific_levels=("auto",) * (4 - n_shared),
                          seed=seed).fit_identifiers(ds, progress=False)
    print(f"seed {seed}: identifiers fitted, {n_shared} of 4 levels shared, level sizes "
          f"{model.ids_.level_sizes()['collaborative']}", flush=True)
    return model.collaborative_ids_


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--model", nargs="+",
                     help="saved GenSAR model(s): their collaborative IDs are used; one, or one per seed")
    src.add_argument("--fit-ids", type=int, choices=(0, 1, 2, 3), metavar="N_SHARED",
                     help="fit each seed's identifiers here: GenSAR's settings, N_SHARED of the 4 levels "
                          "shared by both ID kinds (GenSAR: 2)")
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    p.add_argument("--seeds", nargs="+", type=int, default=[0])
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument("--eval-every", type=int, default=5)
    p.add_argument("--max-len", type=int, default=15, help="history items (GenSAR quick: 10 rec + 5 search)")
    p.add_argument("--targets", default="all", choices=("all", "last"),
                   help="all: a target at every position (SASRec); last: one example per target (GenSAR)")
    p.add_argument("--target-kinds", default="all", choices=("all", "rec"),
                   help="--targets last: every event's item is a target (as SASRec), or recommendation "
                        "events' only (GenSAR's next-item task); search events stay in the histories")
    p.add_argument("--examples-per-epoch", type=int, default=0,
                   help="windows drawn per epoch (0: all); GenSAR's quick preset: 41,000 next-item examples")
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--dropout", type=float, default=0.2)
    p.add_argument("--name", default=None, help="default: ml-100k, ml-100k-last with --targets last")
    p.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"))
    a = p.parse_args()
    if set(BIDIRECTIONAL) & set(a.variants) and a.targets != "last":
        raise SystemExit(f"the variants {BIDIRECTIONAL} read a bidirectional encoder: use them with --targets last")
    a.name = a.name or ("ml-100k" if a.targets == "all" else "ml-100k-last")
    try:
        import torch
    except ImportError:
        raise SystemExit("this probe needs torch: pip install torch") from None
    torch.set_num_threads(1)
    from gensar import datasets

    ds = datasets.load("ml-100k", seed=0)
    codes_of = {}
    if a.fit_ids is not None:
        for seed in a.seeds:
            codes_of[seed] = fitted_collaborative_ids(ds, a.fit_ids, seed)
    else:
        if len(a.model) not in (1, len(a.seeds)):
            raise SystemExit(f"give one --model, or one per seed ({len(a.seeds)}), got {len(a.model)}")
        for seed, d in zip(a.seeds, a.model * len(a.seeds) if len(a.model) == 1 else a.model):
            with np.load(Path(d) / "ids.npz") as z:
                codes_of[seed] = z["collaborative"].astype(np.int64)
            if len(codes_of[seed]) != ds.n_items:
                raise SystemExit(f"{d} holds IDs of {len(codes_of[seed])} items; ml-100k has {ds.n_items}")
    ev = ds.events
    keep = ev["split"].to_numpy() == "train"
    users, items = ev["user"].to_numpy()[keep], ev["item"].to_numpy()[keep]
    bounds = np.searchsorted(users, np.arange(ds.n_users + 1))
    seqs = [items[bounds[u]:bounds[u + 1]] for u in range(ds.n_users)]
    if a.target_kinds == "rec" and a.targets != "last":
        raise SystemExit("--target-kinds rec needs --targets last")
    is_rec = ev["kind"].to_numpy()[keep] == "rec"
    a.is_target = [is_rec[bounds[u]:bounds[u + 1]] for u in range(ds.n_users)] if a.target_kinds == "rec" else None
    rev = commit()
    per_epoch = int((windows(seqs, a.max_len, a.targets, a.is_target)[1] >= 0).sum())
    rows = []
    for seed in a.seeds:
        for v in a.variants:
            rows += run(v, seed, a, ds, codes_of[seed], seqs, torch, lambda s: print(s, flush=True))
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    import gensar

    cpu = gensar.cpu_info()["cpu"]
    with open(out / f"id-factorisation-{a.name}.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=[*rows[0], "cpu", "commit"])
        w.writeheader()
        w.writerows(dict(r, cpu=cpu, commit=rev) for r in rows)
    last = {}
    for r in rows:
        last.setdefault(r["variant"], {})[r["seed"]] = r
    ids_source = (f"collaborative IDs fitted here per seed, GenSAR's settings with {a.fit_ids} of the 4 levels shared"
                  if a.fit_ids is not None else
                  f"the collaborative IDs of {', '.join(a.model)} (one per seed when several)")
    lines = [f"# Identifiers or generation? SASRec seeing items through GenSAR's codes ({a.name})", "",
             f"Command: `python benchmarks/id_factorisation.py {' '.join(shlex.quote(x) for x in sys.argv[1:])}` "
             f"at commit {rev}; {cpu}; PyTorch, 1 thread. "
             f"Identifiers: {ids_source}, {codes_of[a.seeds[0]].shape[1]} levels. "
             f"Causal transformer (2 layers, hidden {a.hidden}, dropout {a.dropout}), windows of {a.max_len} items, "
             f"Adam lr {a.lr}, batch {a.batch_size}, target events: {a.target_kinds}, targets: {a.targets} ({'a target at every position, as SASRec' if a.targets == 'all' else 'one example per target, its target at the last position, as GenSAR'}). Validation next-item cases, sampled protocol "
             f"(100 candidates, popularity negatives), NDCG@10 after the last epoch; mean over seeds. "
             f"Targets per epoch: {per_epoch:,}" + (f" (windows drawn per epoch: {a.examples_per_epoch:,})"
                                                     if a.examples_per_epoch else "") + ".", "",
             "| variant | what the model knows of an item | valid NDCG@10 (last epoch) | per seed |",
             "|---|---|---|---|"]
    what = {"item": "its own embedding, in and out (SASRec)",
            "codes_in": "its codes in the history, its own embedding as output",
            "codes": "its codes only, in and out",
            "codes_generative": "its codes in; generated code by code (constrained softmax per level)",
            "code_tokens_generative": "its codes as L tokens in a bidirectional encoder (GenSAR's input); "
                                      "generated code by code",
            "t5_tokens_generative": "its codes as L tokens + a separator in HF's T5 encoder (relative "
                                    "positions only, as GenSAR's); generated code by code",
            "t5_marked_generative": "as t5_tokens_generative, each separator a token saying how recent the "
                                    "item is",
            "codes_bidir_generative": "as codes_generative in a bidirectional encoder (GenSAR's), read at the "
                                      "last item",
            "t5_bags_generative": "its codes summed with a recency embedding at one position of HF's T5 "
                                  "encoder (GenSAR's item bags); generated code by code",
            "t5_seq2seq_generative": "t5_bags_generative's encoder; generated as code tokens by HF's T5 decoder "
                                     "(cross-attention, tied embeddings)"}
    for v in a.variants:
        vals = [last[v][s]["NDCG@10"] for s in a.seeds]
        lines.append(f"| {v} | {what[v]} | {np.mean(vals):.4f} | {', '.join(f'{x:.4f}' for x in vals)} |")
    lines += ["", "Learning curves (validation NDCG@10 by epoch):", "",
              "| variant | seed | " + " | ".join(str(r["epoch"]) for r in rows if r["variant"] == rows[0]["variant"]
                                                  and r["seed"] == rows[0]["seed"]) + " |",
              "|---|---|" + "---|" * sum(1 for r in rows if r["variant"] == rows[0]["variant"]
                                          and r["seed"] == rows[0]["seed"])]
    for v in a.variants:
        for s in a.seeds:
            lines.append(f"| {v} | {s} | " + " | ".join(f"{r['NDCG@10']:.4f}" for r in rows
                                                           if r["variant"] == v and r["seed"] == s) + " |")
    (out / f"id-factorisation-{a.name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
