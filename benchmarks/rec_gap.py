"""Where GenSAR's recommendation loses against SASRec, identifier level by level.

For a saved GenSAR model on ml-100k (``gensar run --preset quick --out DIR``, or
GenSAR.save) and the validation next-item cases, this prints and writes:

1. Mean -log p of the target's collaborative-ID code at each level (nats),
   teacher-forced:
   - GenSAR over the whole vocabulary (what its training loss and the default beam
     search score),
   - GenSAR renormalised over the codes valid after the target's prefix in the
     catalogue (what constrained decoding can choose among),
   - SASRec trained on the same data with the same seed (its item softmax summed
     over the items under each prefix: how predictable each code is to a strong
     sequential recommender),
   - a uniform guess over the valid codes.
   Summed over the levels this is the item's log-probability, so the rows say which
   level the gap to SASRec sits at.
2. Validation NDCG@10 on the sampled protocol (100 candidates, popularity
   negatives) three ways: the model's own beam search, and the exact ranking of
   all 100 candidates (100 beams: nothing pruned) with full-vocabulary and with
   renormalised scores.
3. The same NDCG@10 (the model's beam search, and SASRec) by the target item's
   popularity (its training events, the negative sampler's weights), in three
   equal-count groups of cases: whether the gap sits at the head or the tail.

    python benchmarks/rec_gap.py --model DIR [--sasrec-epochs 200] [--name NAME]

Writes benchmarks/results/rec-gap-<name>.md. Validation split only.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _provenance import commit  # noqa: E402

import gensar  # noqa: E402
from gensar import datasets  # noqa: E402
from gensar.embeddings.sasrec import SASRec  # noqa: E402
from gensar.evaluate import scorer_ranks  # noqa: E402
from gensar.seq2seq import shift_right  # noqa: E402
from gensar.stats import ndcg_at  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def level_losses(model, builder, examples, items, batch_size=64):
    """(n, L) -log p of each target code: over the vocabulary and renormalised; and the
    catalogue trie (which codes follow a prefix: what the constrained softmax normalises over)."""
    table = model._id_table("rec")  # (n_items, 1 + L): behaviour token + codes
    L = table.shape[1] - 1
    trie = builder.id_trie(model.config.rec_id)
    inputs = model._render(examples)
    full, renorm = np.zeros((len(items), L)), np.zeros((len(items), L))
    for s in range(0, len(items), batch_size):
        # the model's own input encoding (item bags, recency tokens) and targets
        b = model._encode_batches(examples, inputs, [np.arange(s, min(s + batch_size, len(items)))])[0]
        dec = shift_right(b["labels"], model.seq2seq_.config.decoder_start_token_id, 0)
        z = model.seq2seq_.logits(b["input_ids"], b["attention_mask"], dec).astype(np.float64)
        for r in range(len(z)):
            path = table[items[s + r], 1:].tolist()
            for lv in range(L):
                row = z[r, 1 + lv]  # position 0 predicts the behaviour token
                allowed = row[trie.children(path[:lv])]
                full[s + r, lv] = _lse(row) - row[path[lv]]
                renorm[s + r, lv] = _lse(allowed) - row[path[lv]]
    return full, renorm, trie


def _lse(x):
    m = x.max()
    return m + np.log(np.exp(x - m).sum())


def sasrec_levels(ds, model, items, epochs, seed):
    """(n, L) -log of SASRec's item mass of each target code given its prefix, SASRec's
    validation NDCG@10 (sampled) and its per-case ranks there."""
    sr = SASRec(epochs=epochs, seed=seed, show_progress=False).fit(ds)
    scores = sr.score("rec", ds.examples("rec", "valid")).astype(np.float64)
    p = np.exp(scores - scores.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    codes = model.collaborative_ids_
    out = np.zeros((len(items), codes.shape[1]))
    for i, item in enumerate(items):
        under = np.ones(len(codes), bool)
        for lv in range(codes.shape[1]):
            before = p[i, under].sum()
            under &= codes[:, lv] == codes[item, lv]
            out[i, lv] = np.log(before) - np.log(p[i, under].sum())
    ranks = scorer_ranks(ds, "rec", "valid", scores, "sampled")
    return out, float(ndcg_at(ranks).mean()), ranks


def by_popularity(ds, items, ranks: dict, groups: int = 3) -> list:
    """Markdown rows: NDCG@10 per method (ranks: name -> per-case ranks) in `groups`
    equal-count groups of cases ordered by the target item's training popularity (a
    popularity at a group boundary can fall in both groups)."""
    pop = ds.item_popularity()[items]
    order = np.argsort(pop, kind="stable")
    rows = []
    for g, part in enumerate(np.array_split(order, groups)):
        cells = " | ".join(f"{ndcg_at(r[part]).mean():.4f}" for r in ranks.values())
        rows.append(f"| {g + 1} | {pop[part].min():.0f}-{pop[part].max():.0f} | {len(part)} | {cells} |")
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True, help="a GenSAR model saved after fitting on ml-100k")
    ap.add_argument("--sasrec-epochs", type=int, default=gensar.GenSARConfig.sasrec_epochs)
    ap.add_argument("--name", default=None, help="results/rec-gap-<name>.md (default: the model folder's name)")
    ap.add_argument("--threads", type=int, default=0)
    args = ap.parse_args(argv)
    if args.threads:
        gensar.set_num_threads(args.threads)
    t0 = time.perf_counter()
    ds = datasets.load("ml-100k", seed=0)
    model = gensar.GenSAR.load(args.model, dataset=ds)
    builder = model._builder(ds)
    examples = builder.examples("nrip", "valid")
    items = examples["item"].to_numpy()
    full, renorm, trie = level_losses(model, builder, examples, items)
    sas, sas_ndcg, sas_ranks = sasrec_levels(ds, model, items, args.sasrec_epochs, model.config.seed)
    table = model._id_table("rec")[:, 1:]
    uniform = np.array([[np.log(len(trie.children(table[i, :lv]))) for lv in range(table.shape[1])]
                        for i in items])

    ndcg, case_ranks = {}, {}
    c = model.config
    own = (c.num_beams, c.constrained_softmax)
    for label, beams, renormalise in (("beam search (model's setting)", *own),
                                      ("exact, full-vocabulary scores", 100, False),
                                      ("exact, renormalised scores", 100, True)):
        c.num_beams, c.constrained_softmax = beams, renormalise
        ndcg[label] = float(model.evaluate("valid", protocols=("sampled",), tasks=("rec",),
                                           progress=False)["NDCG@10"].iloc[0])
        case_ranks[label] = model.eval_ranks_[("rec", "sampled")]
    c.num_beams, c.constrained_softmax = own

    name = args.name or Path(args.model).name
    info = gensar.cpu_info()
    lines = [f"# Recommendation gap by identifier level: {name}", "",
             f"Command: `python benchmarks/rec_gap.py --model {args.model} --sasrec-epochs {args.sasrec_epochs}` "
             f"at commit {commit()}; CPU {info['cpu']}, kernel path {info['isa']}; "
             f"{time.perf_counter() - t0:.0f} s.", "",
             f"Model: {args.model} (constrained_softmax={c.constrained_softmax}, seed {c.seed}). ml-100k "
             f"validation next-item cases: {len(items)}. Mean -log p of the target's collaborative-ID code "
             "(nats), teacher-forced; the last row sums the levels (the item's -log p).", "",
             "| level | GenSAR, whole vocabulary | GenSAR, renormalised over valid codes | SASRec (item mass) "
             "| uniform over valid codes |", "|---|---:|---:|---:|---:|"]
    for lv in range(full.shape[1]):
        lines.append(f"| {lv + 1} | {full[:, lv].mean():.3f} | {renorm[:, lv].mean():.3f} | "
                     f"{sas[:, lv].mean():.3f} | {uniform[:, lv].mean():.3f} |")
    lines.append(f"| item | {full.sum(1).mean():.3f} | {renorm.sum(1).mean():.3f} | {sas.sum(1).mean():.3f} | "
                 f"{uniform.sum(1).mean():.3f} |")
    lines += ["", "Validation NDCG@10, sampled protocol (100 candidates, popularity negatives):", "",
              "| ranking | NDCG@10 |", "|---|---:|"]
    lines += [f"| GenSAR {k} | {v:.4f} |" for k, v in ndcg.items()]
    lines.append(f"| SASRec ({args.sasrec_epochs} epochs, the same seed) | {sas_ndcg:.4f} |")
    lines += ["", "The same NDCG@10 by the target item's popularity (training events of the item, both "
              "kinds): the cases in three equal-count groups, least popular first:", "",
              "| group | item's training events | cases | GenSAR beam search | SASRec |", "|---|---|---:|---:|---:|"]
    lines += by_popularity(ds, items, {"gensar": case_ranks["beam search (model's setting)"],
                                       "sasrec": sas_ranks})
    text = "\n".join(lines) + "\n"
    print(text)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"rec-gap-{name}.md").write_text(text)


if __name__ == "__main__":
    main()
