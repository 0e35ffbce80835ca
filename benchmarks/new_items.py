"""New items without retraining: search for items the model never saw in training.

Protocol (issue 17, item 1):

1. Load the data set (default ml-100k) and hold out 10% of its items, drawn
   uniformly with numpy.random.default_rng([seed, 17]).
2. Rebuild the data set without every event on those items (gensar.datasets.from_pandas
   over the remaining events, the search events passed as real search sessions, same
   k-core thresholds as the original) and fit GenSAR on it (the CLI's quick preset
   unless --preset says otherwise; pseudo-queries from the data set's own queries).
3. GenSAR.add_items(the held-out items' rows of the original items table): semantic
   ID from their text through the fitted quantiser, collaborative embedding predicted
   from the semantic one (gensar.model.ColdStart), no refitting.
4. Cases: every search event of the ORIGINAL data whose clicked item is held out
   (at most --max-cases, a seeded sample), each with its query and the user's
   history as a test example would have it (all earlier events of both kinds;
   items absent from the model's catalogue are dropped from it).
5. Rank the target among the model's whole catalogue (trained + added items):
   GenSAR (personalised search, beam search over every item), BM25 over item text,
   popularity (training clicks; a new item has none, so it ranks last). Sampled
   protocol too: target + 99 BM25 hard negatives over the catalogue (GenSAR decodes
   among those 100 only, via search(candidates=...)).
   For reference, the same model's search on the training data's own test split
   (items it was trained on; full and sampled protocols) is reported too.

Writes <out>/new-items-<dataset>.csv (one row per method and protocol) and .md
(the table, the protocol, CPU, commit, command, settings).

    python benchmarks/new_items.py --threads 1                       # ml-100k, quick preset
    python benchmarks/new_items.py --dataset toy --preset smoke --sentence-model tfidf --out /tmp/x
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _provenance import commit, md_table  # noqa: E402
import pandas as pd

import gensar
from gensar import datasets
from gensar.cli import PRESETS, _load_dataset
from gensar.metrics import metrics_from_ranks, ranks_from_scores, target_ranks

KS = (1, 5, 10)
COLUMNS = ["HR@1", "HR@5", "HR@10", "NDCG@5", "NDCG@10"]



def hold_out(full, share: float, seed: int) -> np.ndarray:
    """Dense indices of the held-out items of `full` (sorted)."""
    n = max(1, int(round(share * full.n_items)))
    return np.sort(np.random.default_rng([seed, 17]).choice(full.n_items, size=n, replace=False))


def without_items(full, held: np.ndarray):
    """`full` rebuilt without any event on the held-out items (and without them)."""
    ev = full.events[~full.events["item"].isin(held)]
    rec = ev[ev["kind"] == "rec"][["user_id", "item_id", "timestamp"]]
    src = ev[ev["kind"] == "search"][["user_id", "item_id", "timestamp", "query", "session"]]
    items = full.items.drop(index=held).reset_index(drop=True)
    cfg = full.config
    return datasets.from_pandas(rec, items, src.rename(columns={"session": "session_id"}),
                                min_user_events=cfg.get("min_user_events", 5),
                                min_item_events=cfg.get("min_item_events", 5),
                                seed=full.seed, name=f"{full.name}-minus-{len(held)}-items")


def cases(full, held: np.ndarray, known: set, max_cases: int, seed: int, max_history: int = 200):
    """Search events of `full` on held-out items: (queries, histories, target item ids).

    A history is the user's events before the event's session (both kinds, any
    split, oldest first; the last max_history kept), as (kind, item_id, query)
    tuples, without items the model does not know."""
    ev = full.events
    rows = np.flatnonzero((ev["kind"].to_numpy() == "search") & np.isin(ev["item"].to_numpy(), held))
    if len(rows) > max_cases:
        rows = np.sort(np.random.default_rng([seed, 18]).choice(rows, size=max_cases, replace=False))
    users, kinds = ev["user"].to_numpy(), ev["kind"].to_numpy()
    item_ids, queries = ev["item_id"].to_numpy(), ev["query"].to_numpy()
    sess = ev["session"].to_numpy()
    first = pd.Series(np.arange(len(ev))).groupby(sess).transform("min").to_numpy()
    user_start = np.searchsorted(users, users[rows])
    qs, hs, targets, dropped = [], [], [], 0
    for r, u0 in zip(rows, user_start):
        h = []
        for j in range(u0, first[r]):
            if item_ids[j] not in known:
                dropped += 1
                continue
            h.append(("search", item_ids[j], queries[j]) if kinds[j] == "search" else item_ids[j])
        qs.append(queries[r])
        hs.append(h[-max_history:])
        targets.append(item_ids[r])
    return qs, hs, targets, dropped


def sampled_candidates(ranker, queries, target_idx, n_neg: int, seed: int) -> np.ndarray:
    """(B, 1 + n_neg) item indices: the target, then the n_neg best BM25 items for the
    query (the target excluded; ties by a seeded random priority), as the sampled
    search protocol of gensar.datasets."""
    n = ranker.n_items
    priority = np.random.default_rng([seed, 19]).permutation(n)
    out = np.empty((len(queries), 1 + n_neg), np.int64)
    for i, (q, t) in enumerate(zip(queries, target_idx)):
        top = ranker.top(q, n_neg + 1, priority)
        out[i, 0] = t
        out[i, 1:] = top[top != t][:n_neg]
    return out


def row(method, protocol, ranks, **extra) -> dict:
    m = metrics_from_ranks(np.asarray(ranks, np.int64), KS)
    return {"method": method, "protocol": protocol, "cases": len(ranks), **{c: m[c] for c in COLUMNS}, **extra}




def setup_cases(full, held, train, model, args) -> dict:
    """The cases on held-out items and the baselines' rows (BM25, popularity), which
    do not depend on the GenSAR variant: model only gives the catalogue order."""
    n_items = len(model.items_)
    lookup = pd.Series(np.arange(n_items), index=model.items_["item_id"])
    qs, hs, targets, dropped = cases(full, held, set(model.items_["item_id"]), args.max_cases, args.seed)
    if not qs:
        raise SystemExit("no search event on the held-out items: nothing to measure")
    tidx = lookup.loc[targets].to_numpy(np.int64)
    texts = full.items.set_index("item_id").loc[model.items_["item_id"], "text"].tolist()
    from gensar.datasets._bm25 import BM25Ranker

    ranker = BM25Ranker(texts)
    bm25 = np.stack([ranker.scores(q) for q in qs])
    counts = np.zeros(n_items)
    tr = train.events[train.events["split"] == "train"]
    counts[:train.n_items] = np.bincount(tr["item"].to_numpy(), minlength=train.n_items)
    pop = np.broadcast_to(counts, bm25.shape)
    cand = sampled_candidates(ranker, qs, tidx, args.n_negatives, args.seed)
    # Scorers tie often (BM25 on short texts; popularity: every new item has 0 clicks):
    # a seeded random relabelling of the items makes the tie-breaking random, as
    # gensar.evaluate.scorer_ranks does, instead of favouring low (old) item indices.
    perm = np.random.default_rng([args.seed, 7]).permutation(n_items)
    inv = np.argsort(perm)
    order = np.argsort(perm[cand], axis=1)  # a random but fixed order of each case's candidates
    target_col = np.argmax(order == 0, axis=1)  # (column 0 of cand is the target)
    sub = lambda s: np.take_along_axis(np.take_along_axis(s, cand, 1), order, 1)  # noqa: E731
    base = [row("BM25", "full", ranks_from_scores(bm25[:, perm], inv[tidx])),
            row("popularity", "full", ranks_from_scores(np.asarray(pop)[:, perm], inv[tidx])),
            row("BM25", "sampled", ranks_from_scores(sub(bm25), target_col)),
            row("popularity", "sampled", ranks_from_scores(sub(np.asarray(pop)), target_col))]
    for r in base:
        r["items"] = "new"
    return dict(lookup=lookup, qs=qs, hs=hs, tidx=tidx, cand=cand, dropped=dropped, baselines=base)


def main(argv=None) -> pd.DataFrame:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dataset", default="ml-100k", help="ml-100k (default) or toy (a quick check)")
    ap.add_argument("--preset", choices=sorted(PRESETS), default="quick")
    ap.add_argument("--epochs", type=int, default=0, help="override the preset's epochs")
    ap.add_argument("--sentence-model", default=None, help="override the sentence encoder (e.g. tfidf)")
    ap.add_argument("--share", type=float, default=0.1, help="share of items held out (0.1)")
    ap.add_argument("--max-cases", type=int, default=2000, help="at most this many new-item cases (seeded sample)")
    ap.add_argument("--n-negatives", type=int, default=99, help="negatives of the sampled protocol")
    ap.add_argument("--no-reference", action="store_true", help="skip the search on trained items")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None, help="OpenMP threads (default: all cores)")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results"))
    ap.add_argument("--no-progress", action="store_true")
    ap.add_argument("--model-cache", default=None,
                    help="save the model fitted on the reduced data here, or load it if already there "
                         "(the fit is the slow part; a cached model must come from the same settings)")
    ap.add_argument("--learn-passes", type=int, default=None,
                    help="add_items(learn_passes=...) of the learning variants (default: add_items' default)")
    args = ap.parse_args(argv)
    if not 0 < args.share < 1:
        ap.error(f"--share must be in (0, 1), got {args.share}")
    if args.max_cases < 1 or args.n_negatives < 1:
        ap.error("--max-cases and --n-negatives must be >= 1")
    if args.threads:
        gensar.set_num_threads(args.threads)
    progress = not args.no_progress
    t0 = time.perf_counter()
    started_at = commit()

    full = _load_dataset(args.dataset, seed=args.seed)
    held = hold_out(full, args.share, args.seed)
    train = without_items(full, held)
    cfg = dict(PRESETS[args.preset], seed=args.seed, pseudo_query_source="dataset")
    if args.epochs:
        cfg["epochs"] = args.epochs
    if args.sentence_model:
        cfg["sentence_model"] = args.sentence_model
    print(f"{full!r}: holding out {len(held)} items; training on {train!r}", flush=True)
    cache = Path(args.model_cache) if args.model_cache else None
    if cache is not None and (cache / "manifest.json").is_file():
        print(f"loading the fitted model from {cache}", flush=True)
        fitted = gensar.GenSAR.load(cache, dataset=train)
        fit_s = float("nan")
    else:
        fitted = gensar.GenSAR(**cfg).fit(train, progress=progress)
        fit_s = time.perf_counter() - t0
        if cache is not None:
            fitted.save(cache)
    import tempfile

    snapshot = tempfile.TemporaryDirectory()  # each variant starts from the same fitted model
    fitted.save(snapshot.name)

    # The variants of add_items: identifiers only, then the short update (learn_passes) with
    # each new item's title as its query, and, where the data set has one, with the query its
    # own rule makes from the item's metadata (ml-100k: genres + decade, `synthetic_query`;
    # the rule that made every search query of the data, old items' included).
    learn = {} if args.learn_passes is None else {"learn_passes": args.learn_passes}
    variants = [("GenSAR, identifiers only", {"learn_passes": 0}),
                ("GenSAR + learning (title as query)", learn)]
    if "synthetic_query" in full.items.columns:
        variants.append(("GenSAR + learning (metadata query)", dict(learn, query_col="synthetic_query")))

    rows, add_s, n_items, unique = [], {}, 0, True
    shared = None
    for name, kw in variants:
        model = gensar.GenSAR.load(snapshot.name, dataset=train)
        t = time.perf_counter()
        model.add_items(full.items.iloc[held], progress=progress, **kw)
        add_s[name] = round(time.perf_counter() - t, 1)
        n_items = len(model.items_)
        unique &= all(len(np.unique(a, axis=0)) == n_items for a in (model.semantic_ids_, model.collaborative_ids_))
        if shared is None:
            shared = setup_cases(full, held, train, model, args)
        lookup, qs, hs, tidx, cand = (shared[k] for k in ("lookup", "qs", "hs", "tidx", "cand"))
        for protocol, c in (("full", None), ("sampled", [model.items_["item_id"].to_numpy()[x].tolist() for x in cand])):
            t = time.perf_counter()
            out = model.search(qs, hs, k=max(KS), exclude_history=False, candidates=c)
            ranked = np.full((len(qs), max(KS)), -1, np.int64)
            ranked[out["case"].to_numpy(), out["rank"].to_numpy() - 1] = lookup.loc[out["item_id"]].to_numpy()
            rows.append(dict(row(name, protocol, target_ranks(ranked, tidx), seconds=time.perf_counter() - t),
                             items="new"))
        if not args.no_reference:  # the trained items: found as before? (replay keeps them)
            ref = model.evaluate("test", protocols=("full", "sampled"), tasks=("search",),
                                 ks=KS, max_cases=args.max_cases, progress=progress)
            for _, r in ref.iterrows():
                rows.append({"method": name, "protocol": r["protocol"], "cases": int(r["cases"]),
                             **{c: float(r[c]) for c in COLUMNS}, "seconds": float(r["seconds"]),
                             "items": "trained (test split)"})
    rows += shared["baselines"]
    qs, dropped = shared["qs"], shared["dropped"]
    rows.sort(key=lambda r: (r["items"] != "new", r["protocol"] != "full"))
    table = pd.DataFrame(rows)[["items", "method", "protocol", "cases"] + COLUMNS + ["seconds"]]

    cpu = gensar.cpu_info()
    info = {"command": " ".join([Path(sys.executable).name] + sys.argv[:1] + list(argv if argv is not None else sys.argv[1:])),
            "commit": started_at, "cpu": cpu["cpu"], "isa": cpu["isa"], "threads": gensar.get_num_threads(),
            "dataset": args.dataset, "preset": args.preset, "seed": args.seed, "held_out_items": int(len(held)),
            "catalogue_items": n_items, "cases": len(qs), "history_items_dropped": int(dropped),
            "cold_start_loo_r2": round(model.cold_start_.loo_r2, 4), "ids_unique": bool(unique),
            "fit_seconds": round(fit_s, 1), "add_items_seconds": add_s}
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = out_dir / f"new-items-{args.dataset}"
    csv = table.assign(**{k: v for k, v in info.items() if k not in ("command", "add_items_seconds")})
    csv.to_csv(stem.with_suffix(".csv"), index=False)
    md = [f"# New items without retraining: {args.dataset}", "",
          f"{len(held)} items ({args.share:.0%}, seed {args.seed}) held out of training and added afterwards "
          f"with `GenSAR.add_items`; {len(qs)} search events of the original data on them (their query and the "
          f"user's earlier history), ranked among all {n_items} items of the catalogue (full) and among the "
          f"target + {args.n_negatives} BM25 hard negatives (sampled). Popularity counts training clicks, so "
          f"new items rank last by it. The last rows: the same model on its own test split (trained items).", "",
          md_table(table), "",
          f"- command: `{info['command']}` at commit {info['commit']}",
          f"- CPU: {info['cpu']} ({info['isa']}, {info['threads']} thread(s)); fit {info['fit_seconds']} s "
          f"(nan: loaded from --model-cache); add_items seconds per variant: {json.dumps(add_s)}",
          f"- preset {args.preset}: `{json.dumps(cfg)}`",
          f"- cold-start ridge (semantic -> collaborative embedding) leave-one-out R^2: {info['cold_start_loo_r2']}; "
          f"all identifiers unique after adding: {unique}; history items dropped (not in the catalogue): {dropped}"]
    stem.with_suffix(".md").write_text("\n".join(md) + "\n", encoding="utf-8")
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(table.to_string(index=False))
    print(f"wrote {stem}.md and .csv", flush=True)
    return table


if __name__ == "__main__":
    main()
