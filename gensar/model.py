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
import os
import time
import warnings
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import pandas as pd

from ._validate import check_float, check_int, check_ks, check_str_list, is_int
from .evaluate import check_protocols, check_tasks
from .metrics import DEFAULT_KS, target_ranks
from .tasks import (REFERENCE_MIXTURE, TASKS, TEMPLATES, TaskBuilder, encode_batch, epoch_counts,
                    length_grouped_batches,
                    epoch_mixture, render)
from .tokenizer import REC_ITEM, SRC_ITEM, IDLayout, Tokenizer, escape_text

# Examples of each task per next-item example: the reference's mixture (tasks.py).
DEFAULT_WEIGHTS = dict(REFERENCE_MIXTURE)


@dataclass
class GenSARConfig:
    """Every setting of a GenSAR run. Defaults: the project's CPU-sized version of
    the reference (GENSAR.md); the `quick` preset of the CLI shrinks them further.
    """

    # identifiers (GENSAR.md section 2)
    # codebook sizes per level: ints, or "auto" (sized from the catalogue: 16 for ml-100k)
    shared_levels: tuple = ("auto", "auto")
    specific_levels: tuple = ("auto", "auto")
    id_method: str = "joint"            # joint | residual_kmeans | single | random
    id_epochs: int | None = None        # None: DualIDs' step budget (warm-up + linear decay)
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
    group_by_length: bool = True         # batches of similar input length (less padding, same
                                         # examples; see tasks.length_grouped_batches)
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
        """Checks every setting (type and range) so a bad one fails here, named,
        rather than as a silently wrong run or an error deep inside training."""
        for name in ("shared_levels", "specific_levels"):
            v = getattr(self, name)
            if isinstance(v, (str, bytes)) or not hasattr(v, "__iter__"):
                raise TypeError(f"{name} must be a tuple of codebook sizes, got {v!r}")
            # "auto": codes per level chosen from the catalogue size (gensar.ids.auto_codebook_size)
            setattr(self, name, tuple(k if isinstance(k, str) and k == "auto" else
                                      check_int(f"{name}[{i}]", k, minimum=1) for i, k in enumerate(v)))
        if not self.specific_levels:
            raise ValueError("specific_levels must hold at least one level (the IDs of the two kinds differ there)")
        if len(self.shared_levels) + 2 * len(self.specific_levels) > 26:
            raise ValueError("at most 26 identifier levels in all (shared + 2 x specific): one letter each")
        from .ids import METHODS

        for name, options in (("id_method", METHODS), ("rec_id", ("semantic", "collaborative")),
                              ("search_id", ("semantic", "collaborative")),
                              ("feed_forward_proj", ("relu", "gated-gelu")),
                              ("schedule", ("constant", "linear", "cosine")),
                              ("pseudo_query_source", ("auto", "dataset", "doc2query"))):
            if getattr(self, name) not in options:
                raise ValueError(f"{name} must be one of {options}, got {getattr(self, name)!r}")
        if not isinstance(self.group_by_length, (bool, np.bool_)):
            raise TypeError(f"group_by_length must be True or False, got {self.group_by_length!r}")
        if not isinstance(self.sentence_model, str) or not self.sentence_model:
            raise TypeError(f"sentence_model must be a model name (str), got {self.sentence_model!r}")
        if self.id_epochs is not None:  # None: DualIDs' own step budget
            self.id_epochs = check_int("id_epochs", self.id_epochs, minimum=0)
        minimum = {"sasrec_epochs": 1, "vocab_size": 100, "max_input_len": 0,
                   "max_target_len": 2, "n_rec": 0, "n_search": 0, "doc2query_patience": 0, "d_model": 1, "num_layers": 1,
                   "num_decoder_layers": 1, "num_heads": 1, "d_kv": 1, "d_ff": 1, "epochs": 1,
                   "batch_size": 1, "examples_per_epoch": 0, "doc2query_epochs": 1,
                   "pseudo_queries_per_item": 1, "num_beams": 1, "n_negatives": 1, "valid_cases": 0,
                   "patience": 0, "seed": 0}
        for name, lo in minimum.items():
            setattr(self, name, check_int(name, getattr(self, name), minimum=lo))
        if self.max_input_len == 1:
            raise ValueError("max_input_len must be 0 (fit to the data) or >= 2, got 1")
        self.lr = check_float("lr", self.lr, minimum=0.0, strict_min=True)
        self.dropout_rate = check_float("dropout_rate", self.dropout_rate, minimum=0.0)
        if self.dropout_rate >= 1.0:
            raise ValueError(f"dropout_rate must be in [0, 1), got {self.dropout_rate}")
        self.warmup = check_float("warmup", self.warmup, minimum=0.0, maximum=1.0)
        self.weight_decay = check_float("weight_decay", self.weight_decay, minimum=0.0)
        # 0 switches clipping off; NaN or a negative norm would switch it off silently
        self.max_grad_norm = check_float("max_grad_norm", self.max_grad_norm, minimum=0.0)
        if not isinstance(self.task_weights, dict):
            raise TypeError(f"task_weights must be a dict task -> weight, got {type(self.task_weights).__name__}")
        unknown = set(self.task_weights) - set(TASKS)
        if unknown:
            raise ValueError(f"unknown task(s) in task_weights: {sorted(unknown, key=str)}; tasks are {TASKS}")
        self.task_weights = {t: check_float(f"task_weights[{t!r}]", w, minimum=0.0)
                             for t, w in self.task_weights.items()}
        if not any(w > 0 for w in self.task_weights.values()):
            raise ValueError("task_weights gives every task weight 0: nothing to train on")
        valid_metrics = [f"{m}@{k}" for m in ("HR", "NDCG") for k in DEFAULT_KS if f"{m}@{k}" != "NDCG@1"]
        if self.metric not in valid_metrics:
            raise ValueError(f"metric must be one of {valid_metrics}, got {self.metric!r}")

    @classmethod
    def from_dict(cls, d: dict) -> "GenSARConfig":
        if not isinstance(d, dict):
            raise TypeError(f"a GenSAR config must be a dict of settings, got {type(d).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown GenSAR setting(s) {sorted(unknown)}; known: {sorted(known)}")
        return cls(**d)


def _check_dataset(dataset) -> None:
    from .datasets import Dataset

    if not isinstance(dataset, Dataset):
        raise TypeError(f"dataset must be a gensar.datasets.Dataset (from datasets.load, datasets.from_pandas "
                        f"or datasets.toy), got {type(dataset).__name__}")


def _given_ids(ids, n_items: int, n_shared: int):
    """fit(ids=...) checked: (semantic, collaborative) int64 arrays (n_items, L).

    Refuses what would silently corrupt the task: non-integer codes (a float
    would be truncated), negative codes, shapes that do not match the catalogue,
    a shared prefix that differs, and two items with the same identifier (only
    one of them could ever be decoded)."""
    if hasattr(ids, "semantic_ids_"):
        pair = (ids.semantic_ids_, ids.collaborative_ids_)
    elif isinstance(ids, (tuple, list)) and len(ids) == 2:
        pair = ids
    else:
        raise TypeError(f"ids must be a fitted gensar.DualIDs or a pair (semantic_ids, collaborative_ids), "
                        f"got {type(ids).__name__}")
    out = []
    for name, a in zip(("semantic", "collaborative"), pair):
        try:
            a = np.asarray(a)
        except ValueError as exc:
            raise ValueError(f"ids: the {name} IDs are not a rectangular array ({exc})") from None
        if a.dtype == np.bool_ or not np.issubdtype(a.dtype, np.integer):
            raise TypeError(f"ids: the {name} IDs must be integer level codes, got dtype {a.dtype} "
                            f"(floats would be truncated)")
        if a.ndim != 2 or a.shape[0] != n_items or a.shape[1] <= n_shared:
            raise ValueError(f"ids: the {name} IDs must have shape (n_items={n_items}, L) with L > "
                             f"{n_shared} shared levels, got {a.shape}")
        if a.min() < 0:
            raise ValueError(f"ids: the {name} IDs hold a negative code ({int(a.min())}); codes are >= 0")
        a = a.astype(np.int64)
        _, first, counts = np.unique(a, axis=0, return_index=True, return_counts=True)
        if (counts > 1).any():
            row = a[first[np.argmax(counts > 1)]]
            clash = np.flatnonzero((a == row).all(1))[:2].tolist()
            raise ValueError(f"ids: {int((counts > 1).sum())} {name} identifier(s) are shared by several items "
                             f"(e.g. items {clash} both have {row.tolist()}); each item needs its own ID")
        out.append(a)
    sem, col = out
    if sem.shape != col.shape:
        raise ValueError(f"ids: semantic and collaborative IDs must have the same shape, got {sem.shape} and {col.shape}")
    if not np.array_equal(sem[:, :n_shared], col[:, :n_shared]):
        raise ValueError(f"semantic and collaborative IDs must share their first {n_shared} levels")
    return sem, col


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
        elif config is None or isinstance(config, dict):
            base = dict(config or {})
        else:
            hint = (" (presets are dicts: GenSAR(**gensar.cli.PRESETS['quick']))"
                    if isinstance(config, str) else "")
            raise TypeError(f"config must be a GenSARConfig or a dict of settings, got "
                            f"{type(config).__name__} {config!r}; pass settings as keywords, "
                            f"e.g. GenSAR(epochs=3){hint}")
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
        _check_dataset(dataset)
        if not isinstance(progress, (bool, np.bool_)):
            raise TypeError(f"progress must be True or False, got {progress!r}")
        if checkpoint_dir is not None and not isinstance(checkpoint_dir, (str, os.PathLike)):
            raise TypeError(f"checkpoint_dir must be None, a str or an os.PathLike, got "
                            f"{type(checkpoint_dir).__name__}")
        self.timings_ = {}
        self.dataset_ = dataset
        self.items_ = dataset.items[["item_id", "title"]].reset_index(drop=True)
        from .distributed import world

        w = world()
        self._progress = progress and w.is_root  # under MPI only rank 0 draws progress bars
        sem, col = self._identifiers(dataset, ids, semantic_embeddings, collaborative_embeddings)
        # Under MPI every rank computed the identifiers; rank 0's are used everywhere, so the
        # ranks train on the same tasks even if thread counts (and so rounding) differ.
        sem, col = w.bcast((sem, col) if w.is_root else None)
        self._check_target_len(sem.shape[1])
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
            pseudo = w.bcast(self._pseudo_queries(dataset))
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
            return _given_ids(ids, n, len(c.shared_levels))
        from .embeddings import SASRec, SentenceEncoder
        from .ids import DualIDs

        for name, emb in (("semantic_embeddings", semantic_embeddings),
                          ("collaborative_embeddings", collaborative_embeddings)):
            if emb is not None:
                shape = np.shape(emb)
                if len(shape) != 2 or shape[0] != n:
                    raise ValueError(f"{name} must have shape (n_items={n}, dim), one row per item of the "
                                     f"dataset in dataset.items order, got {shape}")

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
            # In chunks: the tokenizer's Encoding objects take ~100 bytes per token, so a
            # whole frame at once held ~2 GB per 100k examples (Amazon size: ~20 GB).
            for s in range(0, len(ex), 4096):
                enc = self.tokenizer_.backend.encode_batch(render(ex.iloc[s:s + 4096], template=k),
                                                           add_special_tokens=False)
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
            if c.group_by_length:
                batches = length_grouped_batches([len(t) for t in inputs], c.batch_size,
                                                 np.random.default_rng([c.seed, 14, epoch]))
            else:
                batches = [np.arange(i, min(i + c.batch_size, len(inputs)))
                           for i in range(0, len(inputs), c.batch_size)]
            return [encode_batch(self.tokenizer_, [inputs[i] for i in b], [targets[i] for i in b],
                                 self.input_len_, c.max_target_len)
                    for b in batches]

        tasks = self._eval_tasks()
        validate = None
        if tasks and c.valid_cases > 0:
            # Teacher-forced loss (dropout off) on the same number of validation and
            # training examples of each ranking task: the gap between the two tells
            # over-fitting (valid loss rising) from under-fitting (both high).
            loss_probes = {}
            for task, part in (("rec", "nrip"), ("search", "nsip")):
                if task in tasks and part in parts:
                    n = min(c.valid_cases, len(parts[part]))
                    pick = np.random.default_rng([c.seed, 15]).choice(len(parts[part]), n, replace=False)
                    loss_probes[f"{task}_train_loss"] = parts[part].iloc[np.sort(pick)]
                    loss_probes[f"{task}_valid_loss"] = self.builder_.examples(part, "valid").iloc[:c.valid_cases]

            def validate():
                table = self.evaluate("valid", protocols=("sampled",), max_cases=c.valid_cases,
                                      tasks=tasks, progress=False)
                out = {f"{task}_{c.metric}": float(v) for task, v in zip(table["task"], table[c.metric])}
                out[c.metric] = float(np.mean([out[f"{task}_{c.metric}"] for task in table["task"]]))
                for name, ex in loss_probes.items():
                    out[name] = self._teacher_forced_loss(ex)
                return out

        self.trainer_ = Trainer(self.seq2seq_, make_epoch, epochs=c.epochs, lr=c.lr, schedule=c.schedule,
                                warmup=c.warmup, validate=validate, metric=c.metric if validate else None,
                                patience=c.patience, checkpoint_dir=checkpoint_dir,
                                progress=self._progress, description="gensar")
        self.history_ = self.trainer_.fit()
        self.loss_curve_ = self.trainer_.loss_curve

    def _teacher_forced_loss(self, examples, batch_size: int = 64) -> float:
        """Mean target-token cross-entropy (nats) of examples, phrasing 0, dropout off."""
        from .seq2seq import shift_right

        total, count = 0.0, 0
        inputs, targets = render(examples), examples["target"].tolist()
        for s in range(0, len(inputs), batch_size):
            b = encode_batch(self.tokenizer_, inputs[s:s + batch_size], targets[s:s + batch_size],
                             self._input_len(), self.config.max_target_len)
            labels = b["labels"]
            dec = shift_right(labels, self.seq2seq_.config.decoder_start_token_id, 0)
            logits = self.seq2seq_.logits(b["input_ids"], b["attention_mask"], dec).astype(np.float64)
            logits -= logits.max(-1, keepdims=True)
            logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
            keep = labels != -100
            total -= np.take_along_axis(logp, np.where(keep, labels, 0)[..., None], -1)[..., 0][keep].sum()
            count += int(keep.sum())
        return total / max(count, 1)

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

    def _check_target_len(self, id_len: int) -> None:
        """max_target_len must hold a whole identifier target, or training would
        silently cut every target short (and decoding could never match)."""
        need = 1 + int(id_len) + 1  # behaviour token + ID tokens + </s>
        if self.config.max_target_len < need:
            raise ValueError(f"max_target_len={self.config.max_target_len} is shorter than an identifier "
                             f"target: 1 behaviour token + {id_len} ID tokens + </s> = {need}; "
                             f"set max_target_len >= {need}")

    def _decode(self, task, inputs, k, candidates=None, progress=False, batch_size=32, shard=False):
        """Constrained beam search for input strings -> (items (B, k), scores (B, k)).
        shard: under MPI each rank decodes its share of the cases and every rank gets
        all results (a collective: every rank must call it)."""
        from .distributed import shard as rows_of, world

        w = world()
        if shard and w.size > 1:
            sl = rows_of(len(inputs), w)
            mine = self._decode(task, inputs[sl], k, None if candidates is None else candidates[sl],
                                progress and w.is_root, batch_size)
            parts = w.allgather(mine)
            return (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]))
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

        protocols : names from ("sampled", "sampled-uniform", "full") -- sampled:
            target + n_negatives per case (the trie holds those only; recommendation
            negatives drawn by popularity, search negatives from BM25);
            sampled-uniform: recommendation only, uniform negatives; full: every item
            of the catalogue (see gensar.evaluate). Unknown names raise ValueError.
        tasks : names from ("rec", "search"); None: the tasks the model was trained for
        ks : positive integer cut-offs of HR@k / NDCG@k
        max_cases : None evaluates every case; a positive int the first N cases of
            each task only (validation). 0, negative or non-int values raise.
        The instruction phrasing is template 0. The per-case 0-based target ranks
        (-1: not in the top max(ks)) are kept in ``eval_ranks_[(task, protocol)]``
        for paired significance tests."""
        from .evaluate import _check, applies, generator_row
        from .evaluate import candidates as protocol_candidates

        self._check_fitted()
        if not isinstance(split, str) or split not in ("valid", "test"):
            raise ValueError(f"split must be 'valid' or 'test', got {split!r}")
        protocols = check_protocols(protocols)
        tasks = self._eval_tasks() if tasks is None else check_tasks(tasks)
        ks = check_ks(ks)
        if max_cases is not None:
            max_cases = check_int("max_cases", max_cases, minimum=1)
        if not any(applies(t, p) for t in tasks for p in protocols):
            raise ValueError(f"no protocol of {protocols} applies to the task(s) {tasks} "
                             f"('sampled-uniform' is recommendation only): nothing to evaluate")
        if not hasattr(self, "dataset_"):
            raise RuntimeError("this model was loaded without its dataset: use "
                               "GenSAR.load(path, dataset=ds) to evaluate it")
        rows = []
        self.eval_ranks_ = {}
        for task in tasks:
            _check(task, split, protocols)
            ex = self.builder_.examples("nrip" if task == "rec" else "nsip", split)
            if max_cases is not None:
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
                items, _ = self._decode(task, inputs, max(ks), candidates=cand, progress=progress, shard=True)
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
        for n, h in enumerate(histories):
            if h is None:
                h = []
            if isinstance(h, (str, bytes, dict)) or not hasattr(h, "__iter__"):
                raise TypeError(f"histories[{n}] must be a list of item ids or (kind, item_id, query) "
                                f"tuples, got {type(h).__name__} {h!r} (one user: pass [[id, id, ...]])")
            events = []
            for j, e in enumerate(h):
                if isinstance(e, tuple):
                    if len(e) != 3 or e[0] not in ("rec", "search"):
                        raise ValueError(f"histories[{n}][{j}] must be an item id or a (kind, item_id, query) "
                                         f"tuple with kind 'rec' or 'search', got {e!r}")
                    if not isinstance(e[2], str) or (e[0] == "search" and not e[2].strip()):
                        raise ValueError(f"histories[{n}][{j}]: the query of a search event must be a "
                                         f"non-empty string, got {e[2]!r}")
                    events.append(e)
                elif isinstance(e, (list, dict, set, float, bool, np.bool_, np.floating)) or e is None:
                    raise TypeError(f"histories[{n}][{j}] must be an item id or a (kind, item_id, query) "
                                    f"tuple, got {type(e).__name__} {e!r}")
                else:
                    events.append(("rec", e, ""))
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
        k = check_int("k", k, minimum=1)
        return self._result_frame(*self._decode("rec", self._rec_inputs(histories), k))

    def _rec_inputs(self, histories) -> list:
        """Prompt strings of recommend() (validated histories)."""
        if isinstance(histories, (str, bytes, dict)) or not hasattr(histories, "__iter__"):
            raise TypeError(f"histories must be a list of histories (each a list of item ids), got "
                            f"{type(histories).__name__} {histories!r}")
        histories = list(histories)
        if not histories:
            raise ValueError("histories is empty: pass at least one history (a list of item ids, may be empty)")
        hist = self._history_strings(histories)
        return [TEMPLATES["nrip"][0].format(history=h) for h in hist]

    def search(self, queries, histories=None, k: int = 10) -> pd.DataFrame:
        """Personalised search: items for each query, given the user's history
        (same format as in recommend; None for no history)."""
        self._check_fitted()
        k = check_int("k", k, minimum=1)
        return self._result_frame(*self._decode("search", self._search_inputs(queries, histories), k))

    def _search_inputs(self, queries, histories=None) -> list:
        """Prompt strings of search() (validated; query text escaped, see gensar.tokenizer)."""
        queries = check_str_list("queries", queries)
        empty = [i for i, q in enumerate(queries) if not q.strip()]
        if empty:
            raise ValueError(f"queries must be non-empty strings; queries[{empty[0]}] is {queries[empty[0]]!r}")
        if histories is None:
            histories = [None] * len(queries)
        elif isinstance(histories, (str, bytes, dict)) or not hasattr(histories, "__iter__"):
            raise TypeError(f"histories must be None or a list with one history per query, got "
                            f"{type(histories).__name__} {histories!r}")
        histories = list(histories)
        if len(histories) != len(queries):
            raise ValueError(f"got {len(queries)} queries but {len(histories)} histories")
        hist = self._history_strings(histories)
        return [TEMPLATES["nsip"][0].format(history=h, query=escape_text(q)) for h, q in zip(hist, queries)]

    # ================================================================== persistence
    # Files of a saved model, relative to its directory; manifest.json lists them all.
    _FILES = ("config.json", "fit_info.json", "model.safetensors", "ids.npz", "items.json",
              "tokenizer/tokenizer.json", "tokenizer/id_layout.json")
    _OPTIONAL_IN_OLD_SAVES = ("fit_info.json",)  # saves without a manifest may predate it
    _FORMAT, _FORMAT_VERSION = "gensar.GenSAR", 1

    def save(self, path) -> None:
        """One directory: config.json, model.safetensors, ids.npz, items.json,
        tokenizer/, fit_info.json (what fit() resolved: input length, pseudo-query
        source and quality, examples per epoch of each task) and manifest.json (size
        and sha256 of every other file, format name and version).

        Each file is written under a temporary name and renamed into place, and the
        manifest last, so an interrupted save (or a save over an older model) never
        leaves a directory that loads as a mix: GenSAR.load checks every file
        against the manifest and names the first that does not match."""
        from ._io import atomic_write, atomic_write_text, write_manifest
        from .distributed import world

        self._check_fitted()
        if not world().is_root:  # under MPI every rank holds the same model; rank 0 writes it
            return
        if not isinstance(path, (str, os.PathLike)):
            raise TypeError(f"path must be a str or os.PathLike, got {type(path).__name__}")
        d = Path(path)
        if d.exists() and not d.is_dir():
            raise FileExistsError(f"{d} exists and is not a directory; GenSAR.save writes a directory")
        d.mkdir(parents=True, exist_ok=True)
        atomic_write_text(d / "config.json", json.dumps(asdict(self.config), indent=1))
        info = {"input_len": self._input_len(),
                "pseudo_query_source": getattr(self, "pseudo_query_source_", None),
                "pseudo_query_quality": getattr(self, "pseudo_query_quality_", None),
                "epoch_counts": getattr(self, "epoch_counts_", None)}
        atomic_write_text(d / "fit_info.json", json.dumps(info, indent=1, default=float))
        self.seq2seq_.save(d / "model.safetensors")

        def write_ids(tmp):
            with open(tmp, "wb") as f:  # a file object: np.savez would append ".npz" to a name
                np.savez(f, semantic=self.semantic_ids_, collaborative=self.collaborative_ids_)

        atomic_write(d / "ids.npz", write_ids)
        atomic_write_text(d / "items.json", json.dumps(_items_doc(self.items_)))
        self.tokenizer_.save(d / "tokenizer")
        from . import __version__

        write_manifest(d, self._FILES, self._FORMAT, self._FORMAT_VERSION, gensar_version=__version__)

    def to_hf_t5(self, path) -> Path:
        """Exports the fitted encoder-decoder as a HuggingFace T5 checkpoint: the
        directory ``path`` gets config.json and model.safetensors (see
        ``Seq2Seq.to_hf_t5``) plus the tokenizer, so ``T5ForConditionalGeneration``
        and ``AutoTokenizer.from_pretrained(path)`` both load from it:
        tokenizer.json (this model's vocabulary; its post-processor appends
        ``</s>``), tokenizer_config.json (pad/eos/unk tokens, left truncation to the
        model's input length) and id_layout.json (for gensar's Tokenizer.load).

        To feed inputs from HF, a user tokenizes the prompt strings gensar builds
        (``gensar.tasks.TEMPLATES`` template 0 filled with the history, user text
        passed through ``gensar.tokenizer.escape_text``) with
        ``tok(prompts, padding=True, truncation=True)``: that gives the token ids
        and mask gensar feeds. Decoding starts from ``<pad>`` (id 0); outputs are
        identifier tokens (``<rec_item><a_3>...``) that map to items through the
        IDs saved by ``GenSAR.save`` (ids.npz, items.json). HF's unconstrained
        ``generate`` may produce identifiers of no item: gensar's trie-constrained
        beam search does not. Returns the directory as a Path."""
        from tokenizers import Tokenizer as Backend
        from tokenizers.processors import TemplateProcessing

        from ._io import atomic_write, atomic_write_text
        from .tokenizer import EOS, PAD, UNK

        self._check_fitted()
        tok = self.tokenizer_
        d = self.seq2seq_.to_hf_t5(path)
        tok.save(d)  # tokenizer.json and id_layout.json, as in GenSAR.save
        # HF's tokenizer call adds special tokens by default: appending </s> there gives
        # what Tokenizer.encode feeds (which encodes without them and appends </s> itself).
        hf = Backend.from_str(tok.backend.to_str())
        hf.post_processor = TemplateProcessing(single=f"$A {EOS}", special_tokens=[(EOS, tok.eos_id)])
        atomic_write(d / "tokenizer.json", lambda tmp: hf.save(str(tmp)))
        atomic_write_text(d / "tokenizer_config.json", json.dumps({
            "tokenizer_class": "PreTrainedTokenizerFast", "pad_token": PAD, "eos_token": EOS,
            "unk_token": UNK, "model_max_length": self._input_len(), "truncation_side": "left",
            "padding_side": "right"}, indent=1))
        return d

    @classmethod
    def load(cls, path, dataset=None) -> "GenSAR":
        """A saved model; pass the dataset it was trained on to evaluate() it again.

        Every file is checked against manifest.json (size and sha256) and for
        consistency with the others (ids rows = items, tokenizer vocabulary = model
        vocabulary, config = model shape); errors name the file at fault. A
        directory without manifest.json (saved before gensar wrote manifests) still
        loads, with a warning that its files cannot be verified; save it again to
        add one."""
        from ._io import verify_manifest
        from .seq2seq import Seq2Seq

        if not isinstance(path, (str, os.PathLike)):
            raise TypeError(f"path must be a str or os.PathLike, got {type(path).__name__}")
        d = Path(path)
        if not d.is_dir():
            raise FileNotFoundError(f"{d} is not a directory written by GenSAR.save"
                                    f"{' (it is a file)' if d.exists() else ''}")
        for f in cls._FILES:
            if not (d / f).is_file() and not (f in cls._OPTIONAL_IN_OLD_SAVES and not (d / "manifest.json").exists()):
                raise FileNotFoundError(f"{d / f} is missing; is {d} a directory written by GenSAR.save?")
        if verify_manifest(d, cls._FORMAT, cls._FORMAT_VERSION, cls._FILES) is None:
            warnings.warn(f"{d} has no manifest.json (saved by an older gensar): its files cannot be checked "
                          f"for corruption or mixing; save it again to add one", stacklevel=2)
        try:
            cfg = json.loads((d / "config.json").read_text(encoding="utf-8"))
            self = cls(cfg)
        except (ValueError, TypeError, UnicodeDecodeError) as exc:
            raise ValueError(f"{d / 'config.json'} is corrupt or invalid: {exc}") from None
        self.semantic_ids_, self.collaborative_ids_ = _load_ids(d / "ids.npz")
        self.items_ = _load_items(d / "items.json")
        n = len(self.items_)
        try:
            _given_ids((self.semantic_ids_, self.collaborative_ids_), n, len(self.config.shared_levels))
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{d / 'ids.npz'} does not fit {d / 'items.json'} ({n} items): {exc}") from None
        self.tokenizer_ = Tokenizer.load(d / "tokenizer")
        if (d / "fit_info.json").is_file():  # absent in models saved before it existed
            try:
                info = json.loads((d / "fit_info.json").read_text(encoding="utf-8"))
                self.input_len_ = check_int("input_len", info["input_len"], minimum=2)
            except (ValueError, TypeError, KeyError, UnicodeDecodeError) as exc:
                raise ValueError(f"{d / 'fit_info.json'} is corrupt or invalid ({type(exc).__name__}: {exc})") from None
            if info.get("pseudo_query_source"):
                self.pseudo_query_source_ = info["pseudo_query_source"]
                self.pseudo_query_quality_ = info.get("pseudo_query_quality")
            if info.get("epoch_counts"):
                self.epoch_counts_ = info["epoch_counts"]
        self.seq2seq_ = Seq2Seq.load(d / "model.safetensors")
        self._check_loaded(d)
        self.builder_ = TaskBuilder.for_items(self.tokenizer_, self.semantic_ids_, self.collaborative_ids_,
                                              n_rec=self.config.n_rec, n_search=self.config.n_search,
                                              rec_id=self.config.rec_id, search_id=self.config.search_id)
        if dataset is not None:
            self._attach_dataset(dataset)
        return self

    def _attach_dataset(self, dataset) -> None:
        """Gives a loaded model its training dataset (for evaluate), refusing one
        whose catalogue differs: item indices would point at other items."""
        _check_dataset(dataset)
        n = len(self.items_)
        if (dataset.n_items != n or
                not np.array_equal(dataset.items["item_id"].to_numpy(), self.items_["item_id"].to_numpy())):
            raise ValueError(f"dataset {dataset.name!r} does not have the catalogue this model was trained on "
                             f"({dataset.n_items} items vs {n} saved, or other item ids); evaluating on it "
                             f"would be wrong")
        self.dataset_ = dataset
        self.builder_ = self._builder(dataset)

    def _check_loaded(self, d: Path) -> None:
        """The loaded files agree with each other (a file from another save would not)."""
        c, m = self.config, self.seq2seq_.config
        for name in ("d_model", "num_layers", "num_decoder_layers", "num_heads", "d_kv", "d_ff",
                     "feed_forward_proj"):
            if getattr(c, name) != getattr(m, name):
                raise ValueError(f"{d / 'config.json'} says {name}={getattr(c, name)!r} but {d / 'model.safetensors'} "
                                 f"holds a model with {name}={getattr(m, name)!r}: the files come from different saves")
        if m.vocab_size != self.tokenizer_.vocab_size:
            raise ValueError(f"{d / 'tokenizer'} has {self.tokenizer_.vocab_size} tokens but {d / 'model.safetensors'} "
                             f"was trained with {m.vocab_size}: the files come from different saves")
        try:
            self.tokenizer_.id_token_ids("semantic", self.semantic_ids_)
            self.tokenizer_.id_token_ids("collaborative", self.collaborative_ids_)
        except ValueError as exc:
            raise ValueError(f"{d / 'ids.npz'} does not fit the identifier layout of {d / 'tokenizer'}: {exc}") from None
        try:
            self._check_target_len(self.semantic_ids_.shape[1])
        except ValueError as exc:
            raise ValueError(f"{d / 'config.json'}: {exc}") from None


def _items_doc(items: pd.DataFrame) -> dict:
    """items_ (item_id, title) as JSON that round-trips exactly: ids as JSON
    numbers or strings (no float or type guessing as in pandas.read_json; ints
    of any size, e.g. uint64 >= 2**63, stay exact) plus their dtype."""
    ids = items["item_id"]
    kind = "uint64" if ids.dtype == np.uint64 else "int64" if pd.api.types.is_integer_dtype(ids) else "str"
    return {"format": "gensar.items", "item_id_dtype": kind,
            "item_id": [int(v) for v in ids] if kind != "str" else [str(v) for v in ids],
            "title": [str(t) for t in items["title"]]}


def _load_items(path: Path) -> pd.DataFrame:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path} is corrupt (not JSON: {exc})") from None
    try:
        if isinstance(doc, list):  # written by gensar < 0.2: pandas records
            ids, titles = [r["item_id"] for r in doc], [r["title"] for r in doc]
            kind = "int64" if all(is_int(v) for v in ids) else "str"
        else:
            if doc.get("format") != "gensar.items":
                raise ValueError("not a gensar items file")
            ids, titles, kind = doc["item_id"], doc["title"], doc["item_id_dtype"]
        if len(ids) != len(titles) or not ids:
            raise ValueError(f"{len(ids)} ids but {len(titles)} titles")
        if kind == "str":
            if not all(isinstance(v, str) for v in ids):
                raise ValueError("item ids of dtype str must be strings")
            col = pd.Series(ids, dtype=object)
        elif kind in ("int64", "uint64"):
            if not all(is_int(v) for v in ids):
                raise ValueError(f"item ids of dtype {kind} must be integers")
            col = pd.Series(np.array(ids, dtype=kind))
        else:
            raise ValueError(f"unknown item_id_dtype {kind!r}")
        if col.duplicated().any():
            raise ValueError("item ids repeat")
    except (ValueError, KeyError, TypeError, AttributeError, OverflowError) as exc:
        raise ValueError(f"{path} is corrupt or invalid ({type(exc).__name__}: {exc})") from None
    return pd.DataFrame({"item_id": col, "title": pd.Series([str(t) for t in titles], dtype=object)})


def _load_ids(path: Path):
    """(semantic, collaborative) int64 arrays from ids.npz, errors naming the file."""
    import zipfile

    try:
        with np.load(path, allow_pickle=False) as f:
            missing = {"semantic", "collaborative"} - set(f.files)
            if missing:
                raise ValueError(f"it lacks the array(s) {sorted(missing)}")
            sem, col = f["semantic"], f["collaborative"]
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, KeyError) as exc:
        raise ValueError(f"{path} is corrupt or not an ids file ({type(exc).__name__}: {exc})") from None
    for name, a in (("semantic", sem), ("collaborative", col)):
        if a.dtype == np.bool_ or not np.issubdtype(a.dtype, np.integer):
            raise ValueError(f"{path}: the {name} IDs have dtype {a.dtype}; integer codes expected")
    return sem.astype(np.int64), col.astype(np.int64)
