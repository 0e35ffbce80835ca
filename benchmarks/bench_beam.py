"""Trie-constrained beam search throughput: gensar (C) vs HuggingFace generate.

What is measured
- gensar: Seq2Seq.beam_search (encoder once, cached decoder, trie constraint and
  bookkeeping in C) with 30 beams, all 30 returned, on catalogues of random
  4-token identifiers plus a behaviour token (5 decoded tokens), full-catalogue
  trie; and the sampled protocol (100 candidates per query) on the largest one.
- HuggingFace: T5ForConditionalGeneration.generate(num_beams=30,
  num_return_sequences=30, prefix_allowed_tokens_fn over a Python dict trie,
  length_penalty=0 so beam scores are summed log-probabilities as in gensar) on
  the SAME weights (Seq2Seq.to_hf_t5()), in the same process, alternating with
  gensar run by run; medians of --repeats runs. The dict tries are built before
  timing (not counted); gensar's per-query candidate tries are built inside the
  timed call (counted).
- Trie construction time for 1M items.
- --renormalise: the scores of a model trained with GenSARConfig.constrained_softmax
  (GenSAR's default, what its evaluate and recommend decode): each token's
  log-probability over the tokens the catalogue allows after its prefix. gensar:
  beam_search(renormalise=True, or the catalogue's Trie for candidate sets), which
  needs the logits of the allowed tokens only, not the LM head over the vocabulary;
  HF: generate with a logits processor that masks to the catalogue's allowed tokens,
  renormalises (log-softmax) and then masks to the searched trie, so both return the
  same items and scores (HF still computes the whole vocabulary's logits).
Both libraries use the same thread count (--threads). The machine may be shared:
only ratios measured in the same run are meaningful. Every result line ends with
the CPU model and gensar's kernel path (--isa forces one).

    python benchmarks/bench_beam.py                 # default model, vocab 33126
    python benchmarks/bench_beam.py --vocab 5600    # vocabulary of gensar's own tokenizer
    python benchmarks/bench_beam.py --no-hf --queries 64
"""
import argparse
import os
import statistics
import sys
import time

import numpy as np

# Both engines run under the same OpenMP wait policy: gensar's default
# (GOMP_SPINCOUNT=30000, set on import unless OMP_WAIT_POLICY or GOMP_SPINCOUNT is
# exported; PyTorch's libgomp reads the same variables). Export one to compare others.
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))  # the checkout
import gensar  # noqa: E402
from gensar import CandidateSets, Seq2Seq, Trie  # noqa: E402

TEXT_VOCAB = 32100  # T5's sentencepiece vocabulary; identifier tokens come after it
CODES, LEVELS = 256, 4


def random_catalogue(rng, n_items, vocab=TEXT_VOCAB + 2 + LEVELS * CODES):
    """(n, 5) int32: behaviour token, then 4 levels of 256 codes, one token range per
    level; identifier tokens are the last 2 + 4 * 256 ids of the vocabulary."""
    base = vocab - (2 + LEVELS * CODES)
    codes = np.unique(rng.integers(0, CODES, size=(int(n_items * 1.01) + 16, LEVELS)), axis=0)
    codes = codes[rng.permutation(len(codes))[:n_items]]
    assert len(codes) == n_items
    table = np.empty((n_items, LEVELS + 1), np.int32)
    table[:, 0] = base  # behaviour token (e.g. <rec_item>)
    table[:, 1:] = base + 2 + np.arange(LEVELS) * CODES + codes
    return table


def dict_trie(paths):
    """prefix tuple -> sorted list of allowed next tokens (what Python pipelines use)."""
    nxt = {}
    for row in map(tuple, paths.tolist()):
        for d in range(len(row)):
            nxt.setdefault(row[:d], set()).add(row[d])
    return {k: sorted(v) for k, v in nxt.items()}


def timed(fn, *args, **kw):
    t0 = time.perf_counter()
    out = fn(*args, **kw)
    return time.perf_counter() - t0, out


def hf_model_from(model):
    import torch
    from transformers import T5Config, T5ForConditionalGeneration

    cfg = T5Config(**model.hf_config(), eos_token_id=1)
    hf = T5ForConditionalGeneration(cfg).eval()
    state = {k: torch.from_numpy(v) for k, v in model.to_hf_t5().items()}
    missing, unexpected = hf.load_state_dict(state, strict=False)
    if [k for k in missing if "embed_tokens" not in k] or unexpected:
        raise RuntimeError(f"HF state dict mismatch: missing {missing}, unexpected {unexpected}")
    return hf


def renormalised_constraint(norm_trie, tries_per_query, num_beams):
    """An HF logits processor giving constrained-softmax scores: each row's logits masked
    to the tokens norm_trie (the catalogue's dict trie) allows after its prefix,
    log-softmaxed, then masked to those its query's trie allows."""
    import torch
    from transformers import LogitsProcessor

    shared = isinstance(tries_per_query, dict)

    def mask_of(scores, prefixes, trie_of_row):
        m = torch.full_like(scores, float("-inf"))
        for r, prefix in enumerate(prefixes):
            m[r, trie_of_row(r).get(prefix, [])] = 0.0
        return m

    class Renormalised(LogitsProcessor):
        def __call__(self, input_ids, scores):
            prefixes = [tuple(row[1:].tolist()) for row in input_ids]
            scores = torch.log_softmax(scores + mask_of(scores, prefixes, lambda r: norm_trie), -1)
            if tries_per_query is norm_trie:  # the catalogue searched: already masked to it
                return scores
            return scores + mask_of(scores, prefixes, lambda r: tries_per_query if shared
                                    else tries_per_query[r // num_beams])

    return Renormalised()


def hf_search(hf, ids, mask, tries_per_query, num_beams, L, item_of, norm_trie=None):
    """tries_per_query: one dict trie shared, or a list (one per query). norm_trie: the
    catalogue's dict trie to renormalise over (constrained-softmax scores), or None
    (full-vocabulary scores, HF's prefix constraint)."""
    import torch

    shared = isinstance(tries_per_query, dict)

    def allowed(batch_id, sent):
        t = tries_per_query if shared else tries_per_query[batch_id]
        return t.get(tuple(sent[1:].tolist()), [])

    constraint = (dict(prefix_allowed_tokens_fn=allowed) if norm_trie is None else
                  dict(logits_processor=[renormalised_constraint(norm_trie, tries_per_query, num_beams)]))
    with torch.no_grad():
        out = hf.generate(input_ids=torch.from_numpy(ids.astype(np.int64)),
                          attention_mask=torch.from_numpy(mask.astype(np.int64)),
                          num_beams=num_beams, num_return_sequences=num_beams,
                          max_new_tokens=L, min_new_tokens=L, do_sample=False, length_penalty=0.0,
                          early_stopping=True, output_scores=True, return_dict_in_generate=True, **constraint)
    seqs = out.sequences[:, 1:].numpy().reshape(len(ids), num_beams, -1)
    items = np.array([[item_of.get(tuple(s.tolist()), -1) for s in row] for row in seqs])
    return items, out.sequences_scores.numpy().reshape(len(ids), num_beams)


def agreement(a, b):
    """top-1 equal fraction and mean overlap of the returned sets."""
    top1 = float(np.mean(a[:, 0] == b[:, 0]))
    overlap = float(np.mean([len(set(x) & set(y)) / len(x) for x, y in zip(a.tolist(), b.tolist())]))
    return top1, overlap


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--catalogues", type=int, nargs="+", default=[1682, 10_000, 100_000])
    ap.add_argument("--queries", type=int, default=8, help="queries per gensar run")
    ap.add_argument("--hf-queries", type=int, default=8, help="queries per HF run")
    ap.add_argument("--beams", type=int, default=30)
    ap.add_argument("--input-len", type=int, default=64)
    ap.add_argument("--vocab", type=int, default=TEXT_VOCAB + 2 + LEVELS * CODES,
                    help="model vocabulary, identifier tokens last (default: T5's 32100 text "
                         "tokens + 2 behaviour + 4x256 code tokens; gensar's own WordPiece "
                         "tokenizer gives about 4000 text tokens + specials + 6x256 codes)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-hf", action="store_true")
    ap.add_argument("--trie-items", type=int, default=1_000_000)
    ap.add_argument("--isa", choices=gensar.cpu.ISAS, help="force gensar's kernel path (default: the best)")
    ap.add_argument("--renormalise", action="store_true",
                    help="constrained-softmax scores (GenSAR's default decoding) in both engines")
    args = ap.parse_args()

    if args.isa:
        gensar.set_isa(args.isa)
    gensar.set_num_threads(args.threads)
    tag = f"[{gensar.cpu.cpu_model()}, {gensar.get_isa()}]"
    print(f"CPU: {gensar.cpu.cpu_model()}; gensar kernel path: {gensar.get_isa()}")
    rng = np.random.default_rng(0)
    model = Seq2Seq({"vocab_size": args.vocab, "dropout_rate": 0.0}, seed=0)
    print(f"model: {model}")
    print(f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}, GOMP_SPINCOUNT={os.environ.get('GOMP_SPINCOUNT')}, "
          f"threads {args.threads}, "
          f"beams {args.beams} (all returned), input length {args.input_len}, "
          f"scores {'renormalised over the catalogue' if args.renormalise else 'over the full vocabulary'}, "
          f"log-sum-exp kernel {gensar._core.log_sum_exp_kernel_name()}")

    hf = None
    if not args.no_hf:
        try:
            import torch
            import transformers

            torch.set_num_threads(args.threads)
            hf = hf_model_from(model)
            print(f"HuggingFace: torch {torch.__version__}, transformers {transformers.__version__}")
        except ImportError as e:
            print(f"HuggingFace comparison skipped ({e})")

    L = LEVELS + 1
    n_q = max(args.queries, args.hf_queries)
    ids = rng.integers(2, args.vocab - (2 + LEVELS * CODES), size=(n_q, args.input_len)).astype(np.int32)
    mask = np.ones_like(ids)
    rows = []
    for n_items in args.catalogues:
        table = random_catalogue(rng, n_items, args.vocab)
        catalogue = Trie(table, vocab_size=args.vocab)
        modes = [("full", catalogue, None)]
        if n_items == max(args.catalogues):
            cand = np.stack([rng.choice(n_items, 100, replace=False) for _ in range(n_q)])
            modes.append(("100 cand", CandidateSets(table, cand), cand))
        for mode, target, cand in modes:
            sub = lambda k: target if cand is None else CandidateSets(table, cand[:k])  # noqa: E731
            # renormalised: over the searched trie's siblings for the catalogue, over the
            # catalogue's for a candidate set (GenSAR.evaluate's sampled protocol)
            renorm = (True if cand is None else catalogue) if args.renormalise else False
            # warm-up with the timed batch size: the first calls of a size pay page faults
            model.beam_search(ids[:args.queries], mask[:args.queries], sub(args.queries), args.beams,
                              renormalise=renorm)
            ours, theirs = [], []
            if hf is not None:
                item_of = {tuple(r): i for i, r in enumerate(table.tolist())}
                tries = (dict_trie(table) if cand is None
                         else [dict_trie(table[c]) for c in cand[:args.hf_queries]])
                norm = (tries if cand is None else dict_trie(table)) if args.renormalise else None
                hf_search(hf, ids[:args.hf_queries], mask[:args.hf_queries], tries, args.beams, L,
                          item_of, norm)  # warm-up, as for gensar
            for _ in range(args.repeats):
                t, (items, scores) = timed(model.beam_search, ids[:args.queries], mask[:args.queries],
                                           sub(args.queries), args.beams, renormalise=renorm)
                ours.append(args.queries / t)
                if hf is not None:
                    t, (hf_items, hf_scores) = timed(hf_search, hf, ids[:args.hf_queries],
                                                     mask[:args.hf_queries], tries, args.beams, L, item_of, norm)
                    theirs.append(args.hf_queries / t)
            line = f"{n_items:>8} items  {mode:<9} gensar {statistics.median(ours):8.2f} q/s"
            if hf is not None:
                top1, overlap = agreement(items[:args.hf_queries], hf_items)
                ratio = statistics.median(ours) / statistics.median(theirs)
                gap = float(np.max(np.abs(scores[:args.hf_queries, 0] - hf_scores[:, 0])))
                line += (f"   HF generate {statistics.median(theirs):7.3f} q/s   ratio {ratio:6.1f}x"
                         f"   (same top-1 {top1:.2f}, top-{args.beams} overlap {overlap:.2f}, "
                         f"top-1 score gap {gap:.1e})")
            line += f"   {tag}"
            print(line, flush=True)
            rows.append(line)

    table = random_catalogue(rng, args.trie_items, args.vocab)
    times = [timed(Trie, table, vocab_size=args.vocab)[0] for _ in range(args.repeats)]
    t_dict = timed(dict_trie, table[: args.trie_items // 10])[0] if hf is not None else None
    msg = f"trie build, {args.trie_items} items x {L} tokens: median {statistics.median(times):.2f} s"
    if t_dict is not None:
        msg += f" (Python dict trie of {args.trie_items // 10} items: {t_dict:.2f} s)"
    print(f"{msg}   {tag}")


if __name__ == "__main__":
    main()
