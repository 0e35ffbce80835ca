"""The GenSAR estimator: one generative model for search and recommendation.

    import gensar
    from gensar import datasets

    ds = datasets.load("ml-100k")
    model = gensar.GenSAR(epochs=3).fit(ds)          # embeddings, IDs, training
    model.evaluate("test")                            # DataFrame: both tasks, both protocols
    model.recommend([[1, 50, 181]], k=10)             # histories of item ids -> DataFrame
    model.search(["comedy romance 1990s"], k=10)
    model.save("gensar-ml100k"); gensar.GenSAR.load("gensar-ml100k")

Pipeline of ``fit`` (GENSAR.md sections 1-4): semantic item embeddings from a
sentence encoder, collaborative item embeddings from SASRec, dual identifiers
from the joint RQ-VAE, a tokenizer trained on the dataset's text, pseudo-queries
(the dataset's own query text, or a doc2query model trained until its held-out
loss stops falling), then the encoder-decoder trained on the reference's task
mixture with validation every epoch and early stopping. Recommendation decodes
collaborative IDs, search decodes semantic IDs, both with beam search
constrained to real items.
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import pandas as pd

from .metrics import DEFAULT_KS, target_ranks
from .tasks import (REFERENCE_MIXTURE, TASKS, TEMPLATES, TaskBuilder, encode_batch, epoch_counts,
                    epoch_mixture, render)
from .tokenizer import REC_ITEM, SRC_ITEM, IDLayout, Tokenizer

# Examples of each task per next-item example: the reference's mixture (tasks.py).
DEFAULT_WEIGHTS = dict(REFERENCE_MIXTURE)


@dataclass
class GenSARConfig:
    """Every setting of a GenSAR run. Defaults: the project's CPU-sized version of
    the reference (GENSAR.md); the `quick` preset of the CLI shrinks them further.
    """

    # identifiers (GENSAR.md section 2)
    shared_levels: tuple = (256, 256)
    specific_levels: tuple = (256, 256)
    id_method: str = "joint"            # joint | residual_kmeans | single | random
    id_epochs: int = 200
    rec_id: str = "collaborative"       # which ID recommendation generates (ablations)
    search_id: str = "semantic"         # which ID search generates
    # item embeddings (section 1)
    sentence_model: str = "all-MiniLM-L6-v2"
    sasrec_epochs: int = 30
    # text
    vocab_size: int = 3000
    # Input tokens; 0: fitted to the longest training input (longest phrasing), so no
    # input is cut (the fitted length is `input_len_`, saved with the model).
    max_input_len: int = 0
    max_target_len: int = 24
    # History: the last n_rec recommendation events and n_search search sessions.
    # The reference's 5 + 5 suited Amazon's short histories; ml-100k training
    # examples have a median of 41 earlier recommendation events and 28 searches
    # (benchmarks/history_lengths.py), so 20 + 10 (about 250 input tokens) keeps far
    # more of it (SASRec sees the last 50 events).
    n_rec: int = 20
    n_search: int = 10
    # sequence model (section 3)
    d_model: int = 128
    num_layers: int = 4
    num_decoder_layers: int = 4
    num_heads: int = 4
    d_kv: int = 32
    d_ff: int = 512
    feed_forward_proj: str = "relu"
    dropout_rate: float = 0.1
    # training
    epochs: int = 10
    batch_size: int = 64
    lr: float = 1e-3
    schedule: str = "cosine"
    warmup: float = 0.01
    weight_decay: float = 0.01
    max_grad_norm: float = 1.0
    # Examples of each task per next-item example (default: the reference's mixture,
    # ~90% next-item, ~10% personalised search, ~0.1% each for the others). The budget
    # is per task and anchored on next-item recommendation, never renormalised over the
    # tasks present, so a variant without some tasks sees the others exactly as often.
    task_weights: dict = field(default_factory=lambda: dict(DEFAULT_WEIGHTS))
    examples_per_epoch: int = 0          # next-item examples per epoch (the anchor); 0: every
                                         # next-item training example once per epoch
    # pseudo-queries (ad-hoc search task): "dataset" uses the dataset's own query text
    # (semi-synthetic data: each item's synthetic_query; real logs: its most frequent
    # training queries), "doc2query" trains a doc2query model until its held-out loss
    # stops falling (at most doc2query_epochs, patience doc2query_patience), "auto" is
    # "dataset" for semi-synthetic data and "doc2query" otherwise. The source used is
    # `pseudo_query_source_`, saved with the model.
    pseudo_query_source: str = "auto"
    doc2query_epochs: int = 50
    doc2query_patience: int = 3
    pseudo_queries_per_item: int = 1
    # validation / inference (section 4)
    num_beams: int = 30
    n_negatives: int = 99                # sampled protocol: target + n_negatives candidates
    valid_cases: int = 300               # validation cases per task (sampled protocol)
    metric: str = "NDCG@10"
    patience: int = 3
    seed: int = 0

    def __post_init__(self):
        self.shared_levels = tuple(self.shared_levels)
        self.specific_levels = tuple(self.specific_levels)
        for name in ("rec_id", "search_id"):
            if getattr(self, name) not in ("semantic", "collaborative"):
                raise ValueError(f"{name} must be 'semantic' or 'collaborative', got {getattr(self, name)!r}")
        if not isinstance(self.task_weights, dict):
            raise TypeError(f"task_weights must be a dict task -> weight, got {type(self.task_weights).__name__}")
        unknown = set(self.task_weights) - set(TASKS)
        if unknown:
            raise ValueError(f"unknown task(s) in task_weights: {sorted(unknown)}; tasks are {TASKS}")
        epoch_counts(self.task_weights, 1)  # validates the weights
        if not any(float(w) > 0 for w in self.task_weights.values()):
            raise ValueError("task_weights gives every task weight 0: nothing to train on")
        if isinstance(self.examples_per_epoch, bool) or int(self.examples_per_epoch) < 0:
            raise ValueError(f"examples_per_epoch must be an int >= 0, got {self.examples_per_epoch!r}")
        for name in ("epochs", "batch_size", "num_beams", "max_target_len"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if int(self.max_input_len) < 0 or int(self.max_input_len) == 1:
            raise ValueError(f"max_input_len must be 0 (fit to the data) or >= 2, got {self.max_input_len}")
        for name in ("n_rec", "n_search", "doc2query_patience"):
            if isinstance(getattr(self, name), bool) or int(getattr(self, name)) < 0:
                raise ValueError(f"{name} must be an int >= 0, got {getattr(self, name)!r}")
        if self.pseudo_query_source not in ("auto", "dataset", "doc2query"):
            raise ValueError(f"pseudo_query_source must be 'auto', 'dataset' or 'doc2query', "
                             f"got {self.pseudo_query_source!r}")
        if self.lr <= 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        valid_metrics = [f"{m}@{k}" for m in ("HR", "NDCG") for k in DEFAULT_KS if f"{m}@{k}" != "NDCG@1"]
        if self.metric not in valid_metrics:
            raise ValueError(f"metric must be one of {valid_metrics}, got {self.metric!r}")

    @classmethod
    def from_dict(cls, d: dict) -> "GenSARConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown GenSAR setting(s) {sorted(unknown)}; known: {sorted(known)}")
        return cls(**d)


class GenSAR:
    """Unified generative search and recommendation (see the module docstring).

    Parameters: any field of :class:`GenSARConfig` as a keyword, or `config=`.

    Fitted attributes: ``semantic_ids_`` / ``collaborative_ids_`` (n_items, L)
    int level codes, ``tokenizer_``, ``seq2seq_``, ``items_`` (DataFrame of the
    catalogue: item_id, title), ``history_`` (per-epoch log: loss, lr, seconds,
    validation metrics), ``loss_curve_`` (DataFrame step, loss), ``timings_``
    (seconds per stage), ``ids_`` (the fitted DualIDs, whose report() shows
    collisions, codebook use and reconstruction error), ``epoch_counts_`` (examples
    per epoch of each task), ``input_len_`` (input tokens), ``pseudo_query_source_``
    and ``pseudo_query_quality_`` (when the ad-hoc task is trained), ``eval_ranks_``
    (per-case ranks of the last evaluate()).
    """

    def __init__(self, config: GenSARConfig | dict | None = None, **kwargs):
        if isinstance(config, GenSARConfig):
            base = asdict(config)
        else:
            base = dict(config or {})
        base.update(kwargs)
        self.config = GenSARConfig.from_dict(base)

    # ================================================================== fit
    def fit(self, dataset, ids=None, semantic_embeddings=None, collaborative_embeddings=None,
            checkpoint_dir=None, progress: bool = True) -> "GenSAR":
        """Builds everything GenSAR needs from a :class:`gensar.datasets.Dataset` and trains.

        ids : optional (semantic_ids, collaborative_ids) arrays (n_items, L), or a
            fitted gensar.DualIDs; skips the embeddings and the quantiser
        semantic_embeddings / collaborative_embeddings : optional (n_items, d)
            float32 arrays; skip the sentence encoder / SASRec
        checkpoint_dir : where training checkpoints go; fit() again with the same
            directory resumes an interrupted run exactly
        """
        c = self.config
        self.timings_ = {}
        self.dataset_ = dataset
        self.items_ = dataset.items[["item_id", "title"]].reset_index(drop=True)
        self._progress = progress
        sem, col = self._identifiers(dataset, ids, semantic_embeddings, collaborative_embeddings)
        self.semantic_ids_, self.collaborative_ids_ = sem, col
        t = time.perf_counter()
        texts = (dataset.items["text"].tolist() + dataset.events["query"].unique().tolist()
                 + [p for v in TEMPLATES.values() for p in v])
        self.tokenizer_ = Tokenizer.train(texts, self._layout(), vocab_size=c.vocab_size)
        self.builder_ = self._builder(dataset)
        self.timings_["tokenizer"] = time.perf_counter() - t
        pseudo = None
        if c.task_weights.get("adhoc", 0) > 0:
            t = time.perf_counter()
            pseudo = self._pseudo_queries(dataset)
            self.timings_["doc2query"] = time.perf_counter() - t
        t = time.perf_counter()
        self._train(dataset, pseudo, checkpoint_dir)
        self.timings_["train"] = time.perf_counter() - t
        return self

    def _layout(self) -> IDLayout:
        ls = len(self.config.shared_levels)
        sizes = np.concatenate([self.semantic_ids_, self.collaborative_ids_[:, ls:]], 1).max(0) + 1
        lp = self.semantic_ids_.shape[1] - ls
        return IDLayout(tuple(int(s) for s in sizes[:ls]), tuple(int(s) for s in sizes[ls:ls + lp]),
                        tuple(int(s) for s in sizes[ls + lp:]))

    def _builder(self, dataset) -> TaskBuilder:
        return TaskBuilder(dataset, self.tokenizer_, self.semantic_ids_, self.collaborative_ids_,
                           n_rec=self.config.n_rec, n_search=self.config.n_search,
                           rec_id=self.config.rec_id, search_id=self.config.search_id)

    def _identifiers(self, dataset, ids, semantic_embeddings, collaborative_embeddings):
        c = self.config
        n = dataset.n_items
        if ids is not None:
            if hasattr(ids, "semantic_ids_"):
                sem, col = ids.semantic_ids_, ids.collaborative_ids_
            else:
                sem, col = ids
            sem, col = np.asarray(sem, np.int64), np.asarray(col, np.int64)
            if sem.shape != col.shape or sem.ndim != 2 or sem.shape[0] != n:
                raise ValueError(f"ids must be two (n_items={n}, L) arrays of the same shape, "
                                 f"got {sem.shape} and {col.shape}")
            ls = len(c.shared_levels)
            if not np.array_equal(sem[:, :ls], col[:, :ls]):
                raise ValueError(f"semantic and collaborative IDs must share their first {ls} levels")
            return sem, col
        from .embeddings import SASRec, SentenceEncoder
        from .ids import DualIDs

        t = time.perf_counter()
        if semantic_embeddings is None:
            enc = SentenceEncoder(c.sentence_model)
            semantic_embeddings = enc.encode(dataset.items["text"].tolist(), show_progress=self._progress)
        self.timings_["semantic_embeddings"] = time.perf_counter() - t
        t = time.perf_counter()
        if collaborative_embeddings is None:
            self.sasrec_ = SASRec(epochs=c.sasrec_epochs, seed=c.seed, show_progress=self._progress).fit(dataset)
            collaborative_embeddings = self.sasrec_.item_embeddings_
        self.timings_["collaborative_embeddings"] = time.perf_counter() - t
        t = time.perf_counter()
        self.ids_ = DualIDs(shared_levels=c.shared_levels, specific_levels=c.specific_levels,
                            method=c.id_method, epochs=c.id_epochs, seed=c.seed,
                            progress=self._progress).fit(semantic_embeddings, collaborative_embeddings)
        self.timings_["identifiers"] = time.perf_counter() - t
        return (np.asarray(self.ids_.semantic_ids_, np.int64),
                np.asarray(self.ids_.collaborative_ids_, np.int64))

    def _new_seq2seq(self, vocab_size: int, seed: int):
        from .seq2seq import Seq2Seq

        c = self.config
        cfg = dict(vocab_size=vocab_size, d_model=c.d_model, d_kv=c.d_kv, d_ff=c.d_ff,
                   num_layers=c.num_layers, num_decoder_layers=c.num_decoder_layers,
                   num_heads=c.num_heads, feed_forward_proj=c.feed_forward_proj,
                   dropout_rate=c.dropout_rate)
        return Seq2Seq(cfg, lr=c.lr, weight_decay=c.weight_decay, max_grad_norm=c.max_grad_norm,
                       seed=seed)

    # ------------------------------------------------------------------ doc2query
    def _pseudo_queries(self, dataset) -> list:
        """Pseudo-queries per item for the ad-hoc search task, from the source the
        config asks for (see GenSARConfig.pseudo_query_source). Sets
        ``pseudo_query_source_`` ("dataset" or "doc2query") and
        ``pseudo_query_quality_`` (gensar.doc2query.pseudo_query_quality against the
        items' real queries; for doc2query also on its held-out items)."""
        from .doc2query import Doc2Query, dataset_queries, is_semi_synthetic, pseudo_query_quality

        c = self.config
        source = c.pseudo_query_source
        if source == "auto":
            source = "dataset" if is_semi_synthetic(dataset) else "doc2query"
        self.pseudo_query_source_ = source
        if source == "dataset":
            pseudo = dataset_queries(dataset, n=c.pseudo_queries_per_item)
            self.pseudo_query_quality_ = {"all searched": pseudo_query_quality(dataset, pseudo)}
            return pseudo
        self.doc2query_ = Doc2Query(self.tokenizer_, d_model=c.d_model, epochs=c.doc2query_epochs,
                                    patience=c.doc2query_patience, seed=c.seed,
                                    progress=self._progress).fit(dataset)
        pseudo = self.doc2query_.generate(dataset.items["text"].tolist(), n=c.pseudo_queries_per_item)
        self.pseudo_query_quality_ = {"all searched": pseudo_query_quality(dataset, pseudo),
                                      "held out": pseudo_query_quality(dataset, pseudo,
                                                                       self.doc2query_.valid_items_),
                                      "doc2query_best_epoch": self.doc2query_.best_epoch_,
                                      "doc2query_valid_loss": self.doc2query_.valid_loss_}
        return pseudo

    def _fit_input_len(self, frames) -> int:
        """The longest input in tokens (+ </s>) among example frames (each of one
        task), every example rendered with its task's longest phrasing (the phrasings
        differ only by fixed words)."""
        longest = 2
        for ex in frames:
            if len(ex) == 0:
                continue
            task = ex["task"].iloc[0]
            probe = ex.iloc[:1]
            k = int(np.argmax([len(self.tokenizer_.backend.encode(render(probe, template=j)[0],
                                                                   add_special_tokens=False).ids)
                               for j in range(len(TEMPLATES[task]))]))
            enc = self.tokenizer_.backend.encode_batch(render(ex, template=k), add_special_tokens=False)
            # + 1 for </s>, + 2 for words that split differently at a placeholder's edges
            longest = max(longest, max(len(e.ids) for e in enc) + 3)
        return longest

    def _input_len(self) -> int:
        """max_input_len, or the length fitted to the data when it is 0."""
        if self.config.max_input_len:
            return int(self.config.max_input_len)
        return int(getattr(self, "input_len_", 128))

    def epoch_plan(self, dataset) -> dict:
        """Examples per epoch of each task (task -> int) on `dataset`: the config's
        task_weights times the anchor, examples_per_epoch or, if 0, the dataset's
        number of next-item training examples (whether or not this model trains
        next-item recommendation, so every variant gets the same per-task budget)."""
        c = self.config
        anchor = int(c.examples_per_epoch)
        if anchor == 0:
            ev = dataset.events
            anchor = int(((ev["kind"] == "rec") & (ev["split"] == "train")).sum())
        if anchor < 1:
            raise ValueError("the dataset has no next-item training examples; set examples_per_epoch")
        return epoch_counts({t: float(c.task_weights.get(t, 0.0)) for t in TASKS}, anchor)

    def _train(self, dataset, pseudo, checkpoint_dir):
        from .training import Trainer

        c = self.config
        self.epoch_counts_ = self.epoch_plan(dataset)
        parts = {t: self.builder_.examples(t, "train", pseudo_queries=pseudo)
                 for t, n in self.epoch_counts_.items() if n > 0}
        if c.max_input_len:
            self.input_len_ = int(c.max_input_len)
        else:
            # Training inputs and the inputs evaluation will decode (their histories
            # are inputs at inference time too; no target is looked at), so none is cut.
            frames = list(parts.values()) + [self.builder_.examples(t, s) for t in ("nrip", "nsip")
                                             for s in ("valid", "test")]
            self.input_len_ = self._fit_input_len(frames)
        self.seq2seq_ = self._new_seq2seq(self.tokenizer_.vocab_size, c.seed)

        def make_epoch(epoch):
            ep = epoch_mixture(parts, self.epoch_counts_, c.seed, epoch)
            inputs = render(ep, np.random.default_rng([c.seed, 12, epoch]))
            targets = ep["target"].tolist()
            return [encode_batch(self.tokenizer_, inputs[i:i + c.batch_size], targets[i:i + c.batch_size],
                                 self.input_len_, c.max_target_len)
                    for i in range(0, len(inputs), c.batch_size)]

        tasks = self._eval_tasks()
        validate = None
        if tasks and c.valid_cases > 0:
            def validate():
                table = self.evaluate("valid", protocols=("sampled",), max_cases=c.valid_cases,
                                      tasks=tasks, progress=False)
                out = {f"{task}_{c.metric}": float(v) for task, v in zip(table["task"], table[c.metric])}
                out[c.metric] = float(np.mean(list(out.values())))
                return out

        self.trainer_ = Trainer(self.seq2seq_, make_epoch, epochs=c.epochs, lr=c.lr, schedule=c.schedule,
                                warmup=c.warmup, validate=validate, metric=c.metric if validate else None,
                                patience=c.patience, checkpoint_dir=checkpoint_dir,
                                progress=self._progress, description="gensar")
        self.history_ = self.trainer_.fit()
        self.loss_curve_ = self.trainer_.loss_curve

    def _eval_tasks(self) -> tuple:
        w = self.config.task_weights
        out = []
        if w.get("nrip", 0) > 0:
            out.append("rec")
        if w.get("nsip", 0) > 0 or w.get("adhoc", 0) > 0:
            out.append("search")
        return tuple(out)

    # ================================================================== inference
    def _check_fitted(self):
        if not hasattr(self, "seq2seq_"):
            raise RuntimeError("this GenSAR is not fitted: call fit(dataset) or GenSAR.load(path)")

    def _id_table(self, task: str) -> np.ndarray:
        """Token paths (n_items, 1 + L) the decoder may produce for a task."""
        kind = self.config.rec_id if task == "rec" else self.config.search_id
        codes = self.semantic_ids_ if kind == "semantic" else self.collaborative_ids_
        return self.tokenizer_.id_token_ids(kind, codes, behaviour=REC_ITEM if task == "rec" else SRC_ITEM)

    def _decode(self, task, inputs, k, candidates=None, progress=False, batch_size=32):
        """Constrained beam search for input strings -> (items (B, k), scores (B, k))."""
        from .decode import CandidateSets, Trie

        c = self.config
        table = self._id_table(task)
        if candidates is None:
            target = Trie(table, vocab_size=self.tokenizer_.vocab_size)
            k = min(k, target.n_paths)
        beams = max(c.num_beams, k)
        items = np.full((len(inputs), k), -1, np.int64)
        scores = np.full((len(inputs), k), -np.inf, np.float32)
        from tqdm.auto import tqdm

        for s in tqdm(range(0, len(inputs), batch_size), disable=not progress, leave=False,
                      desc=f"decode {task}"):
            e = min(len(inputs), s + batch_size)
            ids, mask = self.tokenizer_.encode(inputs[s:e], self._input_len())
            tgt = target if candidates is None else CandidateSets(table, candidates[s:e])
            kk = k if candidates is None else min(k, candidates.shape[1])
            it, sc = self.seq2seq_.beam_search(ids, mask, tgt, num_beams=max(beams, kk), top_k=kk)
            items[s:e, :kk], scores[s:e, :kk] = it, sc
        return items, scores

    def evaluate(self, split: str = "test", protocols=("sampled", "sampled-uniform", "full"), tasks=None,
                 ks=DEFAULT_KS, max_cases: int | None = None, progress: bool = True) -> pd.DataFrame:
        """HR@k / NDCG@k on a split of the fitted dataset, one row per (task, protocol).

        sampled: target + 99 negatives per case (the trie holds those 100 only;
        recommendation negatives drawn by popularity, search negatives from BM25);
        sampled-uniform: recommendation only, uniform negatives; full: every item
        of the catalogue (see gensar.evaluate). The instruction phrasing is template 0.
        max_cases: evaluate the first N cases of each task only (validation).
        The per-case 0-based target ranks (-1: not in the top max(ks)) are kept in
        ``eval_ranks_[(task, protocol)]`` for paired significance tests."""
        from .evaluate import _check, applies, generator_row
        from .evaluate import candidates as protocol_candidates

        self._check_fitted()
        if split not in ("valid", "test"):
            raise ValueError(f"split must be 'valid' or 'test', got {split!r}")
        tasks = tasks or self._eval_tasks()
        rows = []
        self.eval_ranks_ = {}
        for task in tasks:
            _check(task, split, protocols)
            ex = self.builder_.examples("nrip" if task == "rec" else "nsip", split)
            if max_cases:
                ex = ex.iloc[:max_cases]
            inputs = render(ex)
            targets = ex["item"].to_numpy()
            for protocol in protocols:
                if not applies(task, protocol):
                    continue
                cand = protocol_candidates(self.dataset_, task, split, protocol, self.config.n_negatives)
                if cand is not None:
                    cand = np.asarray(cand)[:len(ex)]
                t = time.perf_counter()
                items, _ = self._decode(task, inputs, max(ks), candidates=cand, progress=progress)
                row = generator_row(items, targets, task, protocol, split, ks, method="GenSAR")
                row["seconds"] = time.perf_counter() - t
                rows.append(row)
                self.eval_ranks_[(task, protocol)] = target_ranks(items, targets)
        return pd.DataFrame(rows)

    def _item_index(self, item_ids) -> np.ndarray:
        lookup = pd.Series(np.arange(len(self.items_)), index=self.items_["item_id"])
        idx = lookup.reindex(list(item_ids))
        if idx.isna().any():
            missing = [i for i, v in zip(item_ids, idx.isna()) if v][:5]
            raise KeyError(f"unknown item id(s) {missing}: not in the fitted catalogue")
        return idx.to_numpy(np.int64)

    def _history_strings(self, histories) -> list:
        """histories: list (one per case) of events, each an item id (a
        recommendation click) or a tuple (kind, item_id, query), oldest first."""
        out = []
        for h in histories:
            if h is None:
                h = []
            if isinstance(h, (str, bytes)) or not hasattr(h, "__iter__"):
                raise TypeError("each history must be a list of item ids or (kind, item_id, query) tuples")
            events = [(e if isinstance(e, tuple) else ("rec", e, "")) for e in h]
            for kind, _, _ in events:
                if kind not in ("rec", "search"):
                    raise ValueError(f"event kind must be 'rec' or 'search', got {kind!r}")
            idx = self._item_index([e[1] for e in events]) if events else []
            out.append(self.builder_.render_history([(k, int(i), q) for (k, _, q), i in zip(events, idx)]))
        return out

    def _result_frame(self, items, scores) -> pd.DataFrame:
        rows = []
        for case, (its, scs) in enumerate(zip(items, scores)):
            for rank, (i, s) in enumerate(zip(its, scs)):
                if i >= 0:
                    rows.append((case, rank + 1, self.items_["item_id"].iloc[i], self.items_["title"].iloc[i], float(s)))
        return pd.DataFrame(rows, columns=["case", "rank", "item_id", "title", "score"])

    def recommend(self, histories, k: int = 10) -> pd.DataFrame:
        """Next-item recommendation for each history.

        histories : list of histories, each a list of item ids (recommendation
            clicks) or (kind, item_id, query) tuples with kind "rec" / "search", oldest first
        returns : DataFrame (case, rank, item_id, title, score), score = summed
            log-probability of the generated identifier
        """
        self._check_fitted()
        hist = self._history_strings(list(histories))
        inputs = [TEMPLATES["nrip"][0].format(history=h) for h in hist]
        return self._result_frame(*self._decode("rec", inputs, int(k)))

    def search(self, queries, histories=None, k: int = 10) -> pd.DataFrame:
        """Personalised search: items for each query, given the user's history
        (same format as in recommend; None for no history)."""
        self._check_fitted()
        if isinstance(queries, str):
            queries = [queries]
        queries = list(queries)
        if not all(isinstance(q, str) and q.strip() for q in queries):
            raise ValueError("queries must be non-empty strings")
        histories = [None] * len(queries) if histories is None else list(histories)
        if len(histories) != len(queries):
            raise ValueError(f"got {len(queries)} queries but {len(histories)} histories")
        hist = self._history_strings(histories)
        inputs = [TEMPLATES["nsip"][0].format(history=h, query=q) for h, q in zip(hist, queries)]
        return self._result_frame(*self._decode("search", inputs, int(k)))

    # ================================================================== persistence
    def save(self, path) -> None:
        """One directory: config.json, model.safetensors, ids.npz, items.json, tokenizer/,
        fit_info.json (what fit() resolved: input length, pseudo-query source and
        quality, examples per epoch of each task)."""
        self._check_fitted()
        d = Path(path)
        d.mkdir(parents=True, exist_ok=True)
        (d / "config.json").write_text(json.dumps(asdict(self.config), indent=1))
        info = {"input_len": self._input_len(),
                "pseudo_query_source": getattr(self, "pseudo_query_source_", None),
                "pseudo_query_quality": getattr(self, "pseudo_query_quality_", None),
                "epoch_counts": getattr(self, "epoch_counts_", None)}
        (d / "fit_info.json").write_text(json.dumps(info, indent=1, default=float))
        self.seq2seq_.save(d / "model.safetensors")
        np.savez(d / "ids.npz", semantic=self.semantic_ids_, collaborative=self.collaborative_ids_)
        self.items_.to_json(d / "items.json", orient="records")
        self.tokenizer_.save(d / "tokenizer")

    @classmethod
    def load(cls, path, dataset=None) -> "GenSAR":
        """A saved model; pass the dataset to evaluate() it again."""
        from .seq2seq import Seq2Seq

        d = Path(path)
        for f in ("config.json", "model.safetensors", "ids.npz", "items.json", "tokenizer"):
            if not (d / f).exists():
                raise FileNotFoundError(f"{d / f} is missing; is {d} a directory written by GenSAR.save?")
        cfg = json.loads((d / "config.json").read_text())
        self = cls(cfg)
        ids = np.load(d / "ids.npz")
        self.semantic_ids_, self.collaborative_ids_ = ids["semantic"], ids["collaborative"]
        self.items_ = pd.read_json(d / "items.json", orient="records")
        self.tokenizer_ = Tokenizer.load(d / "tokenizer")
        if (d / "fit_info.json").is_file():  # absent in models saved before it existed
            info = json.loads((d / "fit_info.json").read_text())
            self.input_len_ = int(info["input_len"])
            if info.get("pseudo_query_source"):
                self.pseudo_query_source_ = info["pseudo_query_source"]
                self.pseudo_query_quality_ = info.get("pseudo_query_quality")
            if info.get("epoch_counts"):
                self.epoch_counts_ = info["epoch_counts"]
        self.seq2seq_ = Seq2Seq.load(d / "model.safetensors")
        if dataset is not None:
            self.dataset_ = dataset
            self.builder_ = self._builder(dataset)
        else:
            self.builder_ = TaskBuilder.for_items(self.tokenizer_, self.semantic_ids_, self.collaborative_ids_,
                                                  n_rec=self.config.n_rec, n_search=self.config.n_search,
                                                  rec_id=self.config.rec_id, search_id=self.config.search_id)
        return self
