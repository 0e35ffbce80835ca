"""Per-request serving speed of GenSAR.recommend and GenSAR.search (issue 17, item 2).

What is timed: one public call, `model.recommend(histories, k)` or
`model.search(queries, histories, k)`, with the default request options
(recommend excludes the history's items, search does not; scores returned), for
1 request per call and for batches (default 8 and 64), on one thread
(gensar.set_num_threads), 30 beams. Each setting first makes --warmup calls that
are not timed (first-call costs: building and caching the catalogue's trie, the
item-id index, page faults), then times every call with time.perf_counter. Rows
give p50 / p99 per call, per request (call / batch) and requests/s (requests
timed / summed call time). One more call kind, "recommend, 100 candidates",
restricts each request to 100 given items (candidates=..., the sampled protocol's
path: one small trie per request in C).

Requests are drawn from the data set the model was trained on (seeded): a user's
last events before their final one (at most 20, as (kind, item_id, query) tuples),
and for search the query of the user's last search (another user's when they
have none).

Catalogues
----------
- ``ml-100k``: a trained model given by ``--model DIR`` (GenSAR.save output, e.g.
  ``gensar run --preset quick --save DIR``), loaded with the ml-100k data set
  (``--model-dataset``). Without --model this catalogue is skipped (and says so).
- ``amazon-like``: the item catalogue of ``gensar.datasets.amazon_like(fraction)``
  (62,882 items at fraction 1) with few users: --users users of its generated
  events are kept and every item no kept event touches gets one event of a kept
  user (at a random time inside that user's span), so from_pandas (k-core
  thresholds 3 users / 1 item) keeps the whole catalogue. The serving model is
  built cheaply, because training a real one on 63k items takes hours here and
  latency does not depend on how well the weights are trained: beam search does
  the same work per step whatever the weights say (30 beams through the same
  layers; the trie is full enough at 63k items that every step keeps 30 live
  beams). So: the quick preset's model size (gensar.cli.PRESETS["quick"]: d_model
  128, 2 + 2 layers, vocabulary 3,000), identifiers given to fit(ids=...) with
  the auto codebook size of a 63k catalogue (32 codes per level, 2 shared + 2
  specific levels, the layout the quantiser would produce; items ordered by
  category and spread evenly over the code space, the collaborative specific
  codes a permutation of the semantic ones inside each shared prefix), and a
  training budget of --train-examples next-item examples, one epoch, no
  validation: a real fitted GenSAR whose weights are barely trained. It is saved
  under --cache (default ~/.cache/gensar/bench-serve/) so re-runs load it.
- ``toy`` (--catalogue toy): gensar.datasets.toy with the smoke preset's model; for
  the test of this script only.

Profile: a single whole-catalogue recommend on the largest catalogue, split into
building the prompt, tokenising, the cached trie lookup, the C beam search
(encoder = Seq2Seq.decode_cache, the C function beam search starts with; the rest
of the C call by difference: decoder steps, the vocabulary log-sum-exp, trie
walk, top-k, cache reordering; and, for comparison, the same C call with 1 beam)
and building the result frame; each the median of --profile-rounds rounds, plus
cProfile's top functions.

Writes <out>/serve.csv and <out>/serve.md (default benchmarks/results/) with the
CPU model, kernel path (gensar.cpu_info()), threads, beams, command and commit.

    python benchmarks/bench_serve.py --model /path/to/ml100k-model     # both catalogues
    python benchmarks/bench_serve.py                                  # amazon-like only
    python benchmarks/bench_serve.py --catalogue toy --requests 4 --batches 2 --out /tmp/x   # a smoke run
"""
from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import shlex
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _provenance import commit  # noqa: E402
import pandas as pd

import gensar
from gensar.cli import PRESETS, _load_dataset

RESULTS = Path(__file__).resolve().parent / "results"
CALLS = ("recommend", "search", "recommend, 100 candidates")
HISTORY_EVENTS = 20  # events per request's history (the model reads its last n_rec + n_search)
# identifiers of the synthetic serving model: 2 shared + 2 specific levels of 32 codes, the
# auto codebook size of a 63k-item catalogue (gensar.ids.auto_codebook_size)
LEVEL_CODES, N_LEVELS = 32, 4



# ------------------------------------------------------------------ catalogues
def synthetic_dataset(fraction: float, users: int, seed: int):
    """amazon_like's whole item catalogue with the events of `users` users only
    (see the module doc); the same arguments give the same Dataset."""
    from gensar.datasets import from_pandas
    from gensar.datasets.synthetic import _amazon_like_tables

    inter, items, kw = _amazon_like_tables(fraction, seed)
    rng = np.random.default_rng([seed, 2017])
    all_users = inter["user_id"].unique()
    keep = rng.choice(all_users, size=min(users, len(all_users)), replace=False)
    sub = inter[inter["user_id"].isin(keep)]
    missing = np.setdiff1d(items["item_id"].to_numpy(), sub["item_id"].unique())
    span = sub.groupby("user_id")["timestamp"].agg(["min", "max"])
    owner = rng.choice(span.index.to_numpy(), size=len(missing))
    lo, hi = span.loc[owner, "min"].to_numpy(), span.loc[owner, "max"].to_numpy()
    t = (lo + rng.random(len(missing)) * (hi - lo + 1)).astype(np.int64)
    inter = pd.concat([sub, pd.DataFrame({"user_id": owner, "item_id": missing, "timestamp": t})],
                      ignore_index=True)
    kw.update(min_user_events=3, min_item_events=1, name=f"amazon-like-{fraction:g}-items-{users}-users")
    ds = from_pandas(inter, items, **kw)
    if ds.n_items != len(items):
        raise RuntimeError(f"the subsampled data set kept {ds.n_items} of {len(items)} items")
    return ds


def spread_ids(ds, seed: int, codes: int = LEVEL_CODES, levels: int = N_LEVELS, shared: int = 2):
    """(semantic, collaborative) level codes (n_items, levels): items ordered by
    category (random inside one) spread evenly over codes ** levels identifiers, so
    an item's category decides its first codes; the collaborative ID keeps the
    shared levels and permutes the specific codes inside each shared prefix."""
    n = ds.n_items
    if n > codes ** levels:
        raise ValueError(f"{n} items do not fit {codes} ** {levels} identifiers")
    rng = np.random.default_rng([seed, 2018])
    cat = pd.factorize(ds.items["category"])[0] if "category" in ds.items else np.zeros(n, np.int64)
    order = np.lexsort((rng.random(n), cat))
    pos = np.empty(n, np.int64)
    pos[order] = np.arange(n) * codes ** levels // n
    sem = np.stack([(pos // codes ** (levels - 1 - l)) % codes for l in range(levels)], 1)
    col = sem.copy()
    prefix = sem[:, :shared] @ (codes ** np.arange(shared - 1, -1, -1))
    by_prefix = np.argsort(prefix, kind="stable")
    bounds = np.flatnonzero(np.diff(prefix[by_prefix])) + 1
    for rows in np.split(by_prefix, bounds):
        col[rows, shared:] = sem[rng.permutation(rows), shared:]
    return sem, col


def build_cheap_model(ds, preset: str, train_examples: int, seed: int, beams: int, codes: int):
    """A real fitted GenSAR on `ds` with given identifiers and a tiny training
    budget (see the module doc: the weights do not change the latency)."""
    n_levels = N_LEVELS
    cfg = dict(PRESETS[preset], epochs=1, examples_per_epoch=train_examples, valid_cases=0,
               num_beams=beams, seed=seed, shared_levels=(codes, codes), specific_levels=(codes, codes))
    ids = spread_ids(ds, seed, codes=codes, levels=n_levels)
    return gensar.GenSAR(**cfg).fit(ds, ids=ids, progress=False)


def synthetic_model(args, log):
    """(name, model, dataset) of the synthetic catalogue, from the cache when built before."""
    if args.catalogue == "toy":
        ds = _load_dataset("toy", seed=args.seed)
        preset, codes, name = "smoke", 4, "toy"
    else:
        t = time.perf_counter()
        ds = synthetic_dataset(args.fraction, args.users, args.seed)
        log(f"data set {ds.name}: {ds.n_items} items, {ds.n_users} users, {len(ds.events)} events "
            f"({time.perf_counter() - t:.1f} s)")
        preset, codes, name = "quick", LEVEL_CODES, f"amazon-like ({ds.n_items:,} items)"
    key = f"{args.catalogue}-f{args.fraction:g}-u{args.users}-s{args.seed}-e{args.train_examples}-{preset}"
    path = Path(args.cache).expanduser() / key
    if (path / "manifest.json").is_file():
        model = gensar.GenSAR.load(path, dataset=ds)
        log(f"loaded the serving model from {path}")
    else:
        t = time.perf_counter()
        model = build_cheap_model(ds, preset, args.train_examples, args.seed, args.beams, codes)
        path.parent.mkdir(parents=True, exist_ok=True)
        model.save(path)
        log(f"built the serving model in {time.perf_counter() - t:.1f} s, saved to {path}")
    return name, model, ds


# ------------------------------------------------------------------ requests
def make_requests(ds, n: int, seed: int):
    """n requests drawn from the data set: (histories, queries), see the module doc."""
    ev = ds.events
    rng = np.random.default_rng([seed, 2019])
    starts = np.flatnonzero(np.r_[True, ev["user"].to_numpy()[1:] != ev["user"].to_numpy()[:-1]])
    ends = np.r_[starts[1:], len(ev)]
    searches = ev.index[ev["kind"].to_numpy() == "search"].to_numpy()
    kind, item, query = ev["kind"].to_numpy(), ev["item_id"].to_numpy(), ev["query"].to_numpy()
    histories, queries = [], []
    for u in rng.integers(len(starts), size=n):
        s, e = starts[u], ends[u] - 1          # the final event is what the request would predict
        lo = max(s, e - HISTORY_EVENTS)
        histories.append([(kind[j], item[j], query[j]) for j in range(lo, e)])
        mine = [j for j in range(s, e + 1) if kind[j] == "search"]
        j = mine[-1] if mine else (searches[rng.integers(len(searches))] if len(searches) else None)
        queries.append(query[j] if j is not None else "item")
    return histories, queries


def call_fn(model, kind, histories, queries, k, candidates):
    if kind == "recommend":
        return lambda a, b: model.recommend(histories[a:b], k=k)
    if kind == "search":
        return lambda a, b: model.search(queries[a:b], histories[a:b], k=k)
    return lambda a, b: model.recommend(histories[a:b], k=k, candidates=candidates)


def time_calls(fn, batch: int, n_requests: int, warmup: int, min_calls: int):
    """Seconds of each timed call of `batch` requests (warm-up calls first, untimed);
    calls walk through the requests cyclically."""
    n_calls = max(min_calls, n_requests // batch)
    out, pos = [], 0
    for i in range(warmup + n_calls):
        if pos + batch > n_requests:
            pos = 0
        t = time.perf_counter()
        fn(pos, pos + batch)
        dt = time.perf_counter() - t
        pos += batch
        if i >= warmup:
            out.append(dt)
    return np.array(out)


def measure(name, model, ds, args, info, log):
    k = args.k
    n_req = max(args.requests, max(args.batches))
    histories, queries = make_requests(ds, n_req, args.seed)
    rng = np.random.default_rng([args.seed, 2020])
    ids = model.items_["item_id"].to_numpy()
    candidates = ids[rng.choice(len(ids), size=min(100, len(ids)), replace=False)].tolist()
    rows = []
    # what the latency depends on besides the catalogue: input length, vocabulary, codes per level
    codes = "+".join(str(int(v) + 1) for v in model.semantic_ids_.max(0))
    shape = dict(input_len=model._input_len(), vocab=model.tokenizer_.vocab_size, id_codes=codes,
                 d_model=model.config.d_model,
                 layers=f"{model.config.num_layers}+{model.config.num_decoder_layers}")
    for kind in CALLS:
        fn = call_fn(model, kind, histories, queries, k, candidates)
        for b in args.batches:
            sec = time_calls(fn, b, n_req, args.warmup, args.min_calls)
            ms = sec * 1e3
            row = dict(catalogue=name, items=len(model.items_), call=kind, batch=b, calls=len(sec),
                       p50_ms_call=np.percentile(ms, 50), p99_ms_call=np.percentile(ms, 99),
                       p50_ms_request=np.percentile(ms, 50) / b, p99_ms_request=np.percentile(ms, 99) / b,
                       requests_per_s=b * len(sec) / sec.sum(), k=k, cpu=info["cpu"],
                       kernel_path=info["isa"], threads=gensar.get_num_threads(), beams=model.config.num_beams,
                       **shape)
            rows.append(row)
            log(f"  {name:>28} {kind:>26} batch {b:>3}: p50 {row['p50_ms_request']:7.2f} ms/request "
                f"(p99 {row['p99_ms_request']:7.2f}), {row['requests_per_s']:7.1f} requests/s")
    return rows, histories


# ------------------------------------------------------------------ profile
def profile(model, histories, args):
    """Median seconds of each piece of a single whole-catalogue recommend (module doc)."""
    k, rounds = args.k, args.profile_rounds
    s2s = model.seq2seq_
    parts = {p: [] for p in ("prompt (history rendering, item-id lookup)", "tokenise",
                             "trie lookup (cached)", "C beam search", "of which: encoder (+ cross-attention K, V)",
                             "of which: decoder steps, vocabulary log-sum-exp, trie walk, top-k, reorder",
                             "exclude history + result frame",
                             "other: argument checks, request plumbing (whole call - pieces)",
                             "whole recommend() call",
                             "for comparison: C beam search with 1 beam, top 1")}
    for r in range(rounds):
        h = [histories[r % len(histories)]]
        t0 = time.perf_counter()
        hist_idx = []
        inputs = model._rec_inputs(h, hist_idx)
        t1 = time.perf_counter()
        ids, mask = model._encode_inputs(inputs)  # tokens, or item bags (+ recency) as the model reads them
        t2 = time.perf_counter()
        _, trie = model._decode_target("rec")
        t3 = time.perf_counter()
        kq = min(k + len(hist_idx[0]), trie.n_paths)  # as GenSAR._decode asks with exclude_history
        beams = max(model.config.num_beams, kq)
        items, scores = s2s.beam_search(ids, mask, trie, num_beams=beams, top_k=kq)
        t4 = time.perf_counter()
        keep = np.flatnonzero((items[0] >= 0) & ~np.isin(items[0], hist_idx[0]))[:k]
        model._result_frame(items[:, keep], scores[:, keep])
        t5 = time.perf_counter()
        # the encoder alone: the cache the C beam search starts from (same C function)
        a = time.perf_counter()
        s2s.decode_cache(ids, mask, rows_per_input=beams, max_steps=trie.depth)
        enc = time.perf_counter() - a
        a = time.perf_counter()
        s2s.beam_search(ids, mask, trie, num_beams=1, top_k=1)
        one = time.perf_counter() - a
        a = time.perf_counter()
        model.recommend(h, k=k)
        whole = time.perf_counter() - a
        for p, v in zip(parts, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, enc, (t4 - t3) - enc, t5 - t4,
                                whole - (t5 - t0), whole, one)):
            parts[p].append(v)
    med = {p: float(np.median(v)) * 1e3 for p, v in parts.items()}
    pr = cProfile.Profile()
    pr.enable()
    for r in range(rounds):
        model.recommend([histories[r % len(histories)]], k=k)
    pr.disable()
    buf = io.StringIO()
    pstats.Stats(pr, stream=buf).sort_stats("tottime").print_stats(12)
    # a first request after the catalogue changed builds the trie once (add_items, load)
    model.__dict__.pop("_target_cache", None)
    a = time.perf_counter()
    model._decode_target("rec")
    build = (time.perf_counter() - a) * 1e3
    return med, buf.getvalue(), build


# ------------------------------------------------------------------ report
def write_report(out: Path, rows, prof, info, args, skipped, log):
    out.mkdir(parents=True, exist_ok=True)
    df = pd.DataFrame(rows)
    df.to_csv(out / "serve.csv", index=False, float_format="%.4g")
    cmd = "python " + shlex.join(["benchmarks/" + Path(sys.argv[0]).name] + sys.argv[1:])
    lines = ["# Serving speed: GenSAR.recommend / search per request", "",
             f"Command: `{cmd}`  ", f"Commit: {commit()}  ",
             f"CPU: {info['cpu']}, kernel path {info['isa']}, {gensar.get_num_threads()} thread(s), "
             f"{args.beams} beams, k={args.k}, {args.warmup} warm-up calls per setting excluded.  ",
             f"Date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}", ""]
    if skipped:
        lines += [f"Skipped: {s}" for s in skipped] + [""]
    if args.note:
        lines += [args.note, ""]
    lines += ["| catalogue | items | call | batch | calls timed | p50 ms / request | p99 ms / request | "
              "p50 ms / call | p99 ms / call | requests/s | CPU | kernel path | threads | beams |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['catalogue']} | {r['items']:,} | {r['call']} | {r['batch']} | {r['calls']} | "
                     f"{r['p50_ms_request']:.2f} | {r['p99_ms_request']:.2f} | {r['p50_ms_call']:.1f} | "
                     f"{r['p99_ms_call']:.1f} | {r['requests_per_s']:.1f} | {r['cpu']} | {r['kernel_path']} | "
                     f"{r['threads']} | {r['beams']} |")
    lines += ["", "Models (what latency depends on besides the catalogue):", "",
              "| catalogue | input tokens (max) | vocabulary | semantic ID codes per level | d_model | layers |",
              "|---|---|---|---|---|---|"]
    for r in df.drop_duplicates("catalogue").to_dict("records"):
        lines.append(f"| {r['catalogue']} | {r['input_len']} | {r['vocab']:,} | {r['id_codes']} | "
                     f"{r['d_model']} | {r['layers']} |")
    lines += ["", "Per request = per call / batch. Requests: users' last events (at most "
              f"{HISTORY_EVENTS}) before their final one, from the model's data set; recommend excludes the "
              "history's items (asks beam search for k + history items), search does not.", ""]
    if prof is not None:
        med, stats, build, name = prof
        goal = med["whole recommend() call"]
        lines += [f"## Where the time of one recommend goes ({name}, batch 1)", "",
                  f"Median of {args.profile_rounds} rounds, milliseconds. Pieces are timed one after "
                  "another in the same round (the pieces of GenSAR._decode called directly); the encoder "
                  "is Seq2Seq.decode_cache, the C function the beam search starts with, and the line "
                  "after it the rest of the C call by difference. The 1-beam line shows what the 30 "
                  "beams add.", "",
                  "| piece | ms |", "|---|---|"]
        lines += [f"| {p} | {v:.2f} |" for p, v in med.items()]
        lines += ["", f"Building the whole-catalogue trie and token table (once per catalogue, cached on the "
                  f"model; again after add_items or load): {build:.1f} ms.", "",
                  f"Goal (issue 17): p50 under 10 ms per single request at 63k items on one thread; this run's "
                  f"profile median of the whole call: {goal:.2f} ms.", "",
                  "cProfile of the same calls (top 12 by own time):", "", "```", stats.strip(), "```", ""]
    (out / "serve.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    log(f"wrote {out / 'serve.md'} and {out / 'serve.csv'}")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None, help="a saved ml-100k GenSAR directory (else that catalogue is skipped)")
    p.add_argument("--model-dataset", default="ml-100k", help="the data set --model was trained on")
    p.add_argument("--catalogue", choices=("amazon-like", "toy", "none"), default="amazon-like",
                   help="the synthetic catalogue (toy: a tiny one, for tests)")
    p.add_argument("--fraction", type=float, default=1.0, help="amazon_like fraction (1.0: 62,882 items)")
    p.add_argument("--users", type=int, default=2000, help="users kept from amazon_like's events")
    p.add_argument("--train-examples", type=int, default=256,
                   help="next-item examples the cheap serving model is trained on (one epoch)")
    p.add_argument("--cache", default=os.path.join("~", ".cache", "gensar", "bench-serve"))
    p.add_argument("--requests", type=int, default=200, help="distinct requests (single calls timed)")
    p.add_argument("--batches", type=int, nargs="+", default=[1, 8, 64])
    p.add_argument("--min-calls", type=int, default=10, help="timed calls per batch size at least")
    p.add_argument("--warmup", type=int, default=5, help="untimed calls before each setting")
    p.add_argument("--beams", type=int, default=30)
    p.add_argument("-k", "--k", type=int, default=10)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--profile-rounds", type=int, default=50)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--note", default="", help="a line for the report (e.g. 'machine busy')")
    p.add_argument("--out", default=str(RESULTS))
    args = p.parse_args(argv)
    for name in ("users", "train_examples", "requests", "min_calls", "beams", "k", "threads", "profile_rounds"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.warmup < 0 or any(b < 1 for b in args.batches):
        p.error("--warmup must be >= 0 and every --batches value >= 1")
    log = lambda *a: print(*a, flush=True)  # noqa: E731
    gensar.set_num_threads(args.threads)
    info = gensar.cpu_info()
    log(f"CPU {info['cpu']}, kernel path {info['isa']}, {gensar.get_num_threads()} thread(s), {args.beams} beams")
    rows, skipped, prof, biggest = [], [], None, None
    if args.model:
        from gensar import datasets

        ds = _load_dataset(args.model_dataset, seed=args.seed) if args.model_dataset == "toy" \
            else datasets.load(args.model_dataset)
        model = gensar.GenSAR.load(args.model, dataset=ds)
        model.config.num_beams = args.beams
        r, hist = measure(args.model_dataset, model, ds, args, info, log)
        rows += r
        biggest = (len(model.items_), args.model_dataset, model, hist)
    else:
        skipped.append("ml-100k: no --model DIR given (a saved, trained ml-100k GenSAR)")
        log("ml-100k catalogue skipped: no --model DIR given")
    if args.catalogue != "none":
        name, model, ds = synthetic_model(args, log)
        model.config.num_beams = args.beams
        r, hist = measure(name, model, ds, args, info, log)
        rows += r
        if biggest is None or len(model.items_) >= biggest[0]:
            biggest = (len(model.items_), name, model, hist)
    if biggest is not None:
        _, name, model, hist = biggest
        med, stats, build = profile(model, hist, args)
        prof = (med, stats, build, name)
        for piece, v in med.items():
            log(f"  {piece:<72} {v:8.2f} ms")
    write_report(Path(args.out), rows, prof, info, args, skipped, log)
    return rows


if __name__ == "__main__":
    main()
