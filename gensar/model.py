"""The GenSAR estimator: one generative model for search and recommendation.

    import gensar
    from gensar import datasets

    ds = datasets.load("ml-100k")
    model = gensar.GenSAR(epochs=3).fit(ds)          # embeddings, IDs, training
    model.evaluate("test")                            # DataFrame: both tasks, both protocols
    model.recommend([[1, 50, 181]], k=10)             # histories of item ids -> DataFrame
    model.search(["comedy romance 1990s"], k=10)
    model.recommend([[1, 50]], k=10, candidates=[7, 9, 181, 258])  # request options
    model.add_items(new_items_df)                     # new items, no refitting
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
from .cold_start import ColdStart
from .evaluate import check_protocols, check_tasks
from .metrics import DEFAULT_KS, target_ranks
from .tasks import (PROMPT_STYLES, REFERENCE_MIXTURE, TASKS, TaskBuilder, epoch_counts, target_labels,
                    length_grouped_batches,
                    epoch_mixture, render)
from .tokenizer import REC_ITEM, SRC_ITEM, IDLayout, Tokenizer, escape_text

# Examples of each task per next-item example: the reference's mixture (tasks.py).
DEFAULT_WEIGHTS = dict(REFERENCE_MIXTURE)


def _item_queries(value, row: int) -> list:
    """One cell of add_items' query column -> a non-empty list of query strings."""
    out = [value] if isinstance(value, str) else list(value) if isinstance(value, (list, tuple, np.ndarray)) else None
    if out is None or not out or not all(isinstance(q, str) and q.strip() for q in out):
        raise ValueError(f"items' query column, row {row}: expected a non-empty str or a non-empty list of "
                         f"non-empty str, got {value!r}")
    return out


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
    # Each identifier code's softmax over the codes valid after its prefix only, in the
    # training loss and in the beam search's scores, instead of over the whole vocabulary
    # (False: the reference's loss and HF generate's scores). On by default: on ml-100k
    # validation, three seeds paired, it lifts sampled rec NDCG@10 0.151 -> 0.175 (+0.025
    # in every seed, p = 0.008) and search 0.196 -> 0.206 (benchmarks/results/softmax-study-ml-100k.md)
    constrained_softmax: bool = True
    search_id: str = "semantic"         # which ID search generates
    # item embeddings (section 1)
    sentence_model: str = "all-MiniLM-L6-v2"
    # At most this many SASRec epochs; SASRec validates every 5 and stops after 5 validations
    # without improvement, keeping its best epoch. 200 lets it converge: on ml-100k it stops
    # after 80-85 epochs (best 55-60), test sampled NDCG@10 0.346 against 0.293 at 20 epochs;
    # GenSAR on its converged embeddings: validation rec/search within +-0.01 per seed of the
    # 20-epoch ones (benchmarks/results/sas200-study-ml-100k.md).
    sasrec_epochs: int = 200
    # text
    vocab_size: int = 3000
    # Input tokens; 0: fitted to the longest training input (longest phrasing), so no
    # input is cut (the fitted length is `input_len_`, saved with the model).
    max_input_len: int = 0
    max_target_len: int = 24
    # History: the last n_rec recommendation events and n_search search sessions.
    # ml-100k training examples have a median of 41 earlier recommendation events
    # and 28 searches (benchmarks/history_lengths.py), yet 20 + 10 did no better than
    # 10 + 5 on validation (NDCG@10 rec 0.151 vs 0.157, search 0.169 vs 0.181, one
    # epoch of the quick model, all 943 cases; learning-curve-s2-h20-e1.md) and costs
    # 30% more time per example, so 10 + 5 is the default (the reference: 5 + 5). With
    # item bags and recency embeddings 30 + 5 is worse than 10 + 5 on validation (3 seeds,
    # sampled NDCG@10 rec -0.016, search -0.018; recency-history-30-study-ml-100k.md).
    n_rec: int = 10
    n_search: int = 5
    # Item bags: each identifier in the encoder's input (a history item's behaviour token
    # and codes) is one position, the sum of its tokens' embeddings, instead of L + 1
    # positions (Tokenizer.bag_identifiers). False: the reference's token-per-code input
    # (needed for GenSAR.to_hf_t5: HF T5 takes one token per position). On by default: on
    # ml-100k validation (3 seeds paired, quick preset) no worse (rec NDCG@10 +0.006,
    # search +0.003, neither significant; benchmarks/results/item-bags-study-ml-100k.md)
    # with 45% fewer encoder positions and a training step 0.55-0.59x as long
    # (benchmarks/results/item-bags-speed-ml-100k.md).
    item_bags: bool = True
    # Recency embeddings (item bags only): each identifier's bag also sums a learned
    # embedding of its recency (0 = the newest identifier of the input, up to
    # n_rec + n_search - 1): SASRec's absolute positions counted from the end, beside
    # T5's relative position bias (Tokenizer.bag_identifiers). None: on with item_bags
    # (resolved where used, GenSARConfig.uses_recency, so a config copied with another
    # item_bags follows it). The R tokens are input-only: they are in the decoder's
    # output vocabulary too (tied embeddings) but never a target, and the default
    # constrained softmax normalises identifier codes over valid codes only.
    # On ml-100k validation (3 seeds paired, quick preset) it lifts sampled NDCG@10 rec
    # 0.184 -> 0.212 and search 0.214 -> 0.243 (+0.029 each, positive in every seed;
    # benchmarks/results/recency-study-ml-100k.md).
    recency_embeddings: bool | None = None
    # Item embeddings (item bags only): each identifier's bag also sums a learned embedding
    # of its item (one input-only token per item of the fitted catalogue, after the recency
    # tokens), SASRec's item embedding beside the identifier's codes, which items sharing a
    # prefix share. Items added later (add_items) have none: their bags hold codes only.
    # Off by default: on ml-100k validation (3 seeds paired, full preset) it moved sampled
    # NDCG@10 rec +0.005 (p = 0.62) and search +0.001, within noise
    # (benchmarks/results/items-e20-study-ml-100k.md).
    item_embeddings: bool = False
    # Prompt style: "phrasings" (ten instruction phrasings per task, events separated by
    # "; ", as the reference) or "bare" (a task word and the fields, no separators:
    # gensar.tasks.BARE_TEMPLATES); a study setting.
    prompts: str = "phrasings"
    # sequence model (section 3)
    d_model: int = 128
    num_layers: int = 4
    num_decoder_layers: int = 4
    num_heads: int = 4
    d_kv: int = 32
    d_ff: int = 512
    feed_forward_proj: str = "relu"
    # True: the LM head is the shared token embedding (T5, the reference), so one vector per
    # identifier code is its input embedding (summed in history bags), the decoder's previous
    # token and its output weight; False: the head has its own weights (lm_head.weight,
    # V x d_model more parameters). False by default: on ml-100k validation (3 seeds paired,
    # quick model, 6 epochs) it lifts sampled NDCG@10 rec 0.235 -> 0.283 and search 0.264 -> 0.291
    # (+0.048 and +0.027, positive in every seed)
    # (benchmarks/results/untied-e6-study-ml-100k.md). Models saved before the setting existed
    # were tied and load so.
    tie_embeddings: bool = False
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

    @property
    def uses_recency(self) -> bool:
        """Whether identifier bags carry recency tokens (recency_embeddings, None: item_bags)."""
        return bool(self.item_bags if self.recency_embeddings is None else self.recency_embeddings)

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
                              ("pseudo_query_source", ("auto", "dataset", "doc2query")),
                              ("prompts", tuple(PROMPT_STYLES))):
            if getattr(self, name) not in options:
                raise ValueError(f"{name} must be one of {options}, got {getattr(self, name)!r}")
        if not isinstance(self.constrained_softmax, (bool, np.bool_)):
            raise TypeError(f"constrained_softmax must be True or False, got {self.constrained_softmax!r}")
        if not isinstance(self.item_bags, (bool, np.bool_)):
            raise TypeError(f"item_bags must be True or False, got {self.item_bags!r}")
        if self.recency_embeddings is not None and not isinstance(self.recency_embeddings, (bool, np.bool_)):
            raise TypeError(f"recency_embeddings must be True, False or None (on with item_bags), "
                            f"got {self.recency_embeddings!r}")
        if self.recency_embeddings is True and not self.item_bags:
            raise ValueError("recency_embeddings=True needs item_bags=True: the recency embedding is a slot of "
                             "each identifier's bag")
        if not isinstance(self.item_embeddings, (bool, np.bool_)):
            raise TypeError(f"item_embeddings must be True or False, got {self.item_embeddings!r}")
        if self.item_embeddings and not self.item_bags:
            raise ValueError("item_embeddings=True needs item_bags=True: the item embedding is a slot of "
                             "each identifier's bag")
        if not isinstance(self.tie_embeddings, (bool, np.bool_)):
            raise TypeError(f"tie_embeddings must be True or False, got {self.tie_embeddings!r}")
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
    (per-case ranks of the last evaluate()), ``n_fitted_items_`` (items the model
    was trained on; ``items_`` also holds those added later by :meth:`add_items`),
    ``cold_start_`` (:class:`ColdStart`, the collaborative embedding of a new item
    predicted from its semantic one; absent when fit was given ``ids=``).
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
        if checkpoint_dir is not None and not isinstance(checkpoint_dir, (str, os.PathLike)):
            raise TypeError(f"checkpoint_dir must be None, a str or an os.PathLike, got "
                            f"{type(checkpoint_dir).__name__}")
        from .distributed import world

        w = world()
        self._start_fit(dataset, progress, draw=w.is_root)  # under MPI only rank 0 draws progress bars
        sem, col = self._identifiers(dataset, ids, semantic_embeddings, collaborative_embeddings)
        self._check_target_len(sem.shape[1])
        self.semantic_ids_, self.collaborative_ids_ = sem, col
        t = time.perf_counter()
        texts = (dataset.items["text"].tolist() + dataset.events["query"].unique().tolist()
                 + [p for v in self._templates.values() for p in v])
        self.tokenizer_ = Tokenizer.train(texts, self._layout(), vocab_size=c.vocab_size)
        self.builder_ = self._builder(dataset)
        if c.item_embeddings:
            self.builder_.identifier_index()  # a layout it cannot key fails here, before any training
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

    def fit_identifiers(self, dataset, semantic_embeddings=None, collaborative_embeddings=None,
                        progress: bool = True) -> "GenSAR":
        """Only the first step of :meth:`fit`: the two identifiers of every item, as fit
        builds them (the sentence encoder, SASRec and the joint quantiser, with this
        config's settings), without training the sequence model. For studies of the
        identifiers themselves; fit does it all, so a model to use needs fit.

        semantic_embeddings / collaborative_embeddings : optional (n_items, d)
            float32 arrays; skip the sentence encoder / SASRec
        progress : progress bars for the encoder, SASRec and the quantiser
        Sets ``semantic_ids_`` and ``collaborative_ids_``, (n_items, L) int64 level
        codes in dataset.items order (the first ``len(config.shared_levels)`` columns
        shared), and ``ids_``, the fitted :class:`gensar.DualIDs`. The model stays
        unfitted: recommend, search and save still ask for fit.
        """
        self._start_fit(dataset, progress)
        self.semantic_ids_, self.collaborative_ids_ = self._identifiers(
            dataset, None, semantic_embeddings, collaborative_embeddings)
        return self

    def _start_fit(self, dataset, progress, draw=True):
        """Checks fit's common arguments and forgets everything an earlier fit left
        (draw: whether this process draws progress bars)."""
        _check_dataset(dataset)
        if not isinstance(progress, (bool, np.bool_)):
            raise TypeError(f"progress must be True or False, got {progress!r}")
        for name in ("ids_", "cold_start_", "encoder_", "sasrec_", "seq2seq_", "tokenizer_",
                     "builder_", "_data_builder", "_target_cache", "_item_lookup"):
            self.__dict__.pop(name, None)
        self.timings_ = {}
        self.dataset_ = dataset
        self.items_ = dataset.items[["item_id", "title"]].reset_index(drop=True)
        self.n_fitted_items_ = len(self.items_)
        self._progress = bool(progress) and draw

    def _layout(self) -> IDLayout:
        """Token layout of the identifiers: one token per code of every level.

        With a fitted quantiser (ids_) every code of every codebook gets a token,
        used or not, so items added later (add_items) always have tokens for their
        codes; with IDs given to fit, the codes used (max + 1 per level). A saved
        model keeps the layout it was trained with (tokenizer/id_layout.json)."""
        ls = len(self.config.shared_levels)
        sizes = np.concatenate([self.semantic_ids_, self.collaborative_ids_[:, ls:]], 1).max(0) + 1
        lp = self.semantic_ids_.shape[1] - ls
        if getattr(self, "ids_", None) is not None:
            books = self.ids_.level_sizes()
            books = books["semantic"] + books["collaborative"][ls:]
            if len(books) == len(sizes):  # (not with an extra disambiguation level)
                sizes = np.maximum(sizes, books)
        return IDLayout(tuple(int(s) for s in sizes[:ls]), tuple(int(s) for s in sizes[ls:ls + lp]),
                        tuple(int(s) for s in sizes[ls + lp:]))

    @property
    def _templates(self) -> dict:
        """Task -> instruction phrasings of the configured prompt style."""
        return PROMPT_STYLES[self.config.prompts][0]

    def _render(self, examples, rng=None, template: int = 0) -> list:
        """gensar.tasks.render in this model's prompt style."""
        return render(examples, rng, template, self._templates)

    def _builder_settings(self) -> dict:
        c = self.config
        return dict(n_rec=c.n_rec, n_search=c.n_search, rec_id=c.rec_id, search_id=c.search_id,
                    separator=PROMPT_STYLES[c.prompts][1])

    def _builder(self, dataset) -> TaskBuilder:
        """Examples of `dataset` (whose items are the first dataset.n_items of the
        catalogue; items added later have no events)."""
        n = dataset.n_items
        return TaskBuilder(dataset, self.tokenizer_, self.semantic_ids_[:n], self.collaborative_ids_[:n],
                           **self._builder_settings())

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
        semantic_source = "given"
        if semantic_embeddings is None:
            enc = SentenceEncoder(c.sentence_model)
            semantic_embeddings = enc.encode(dataset.items["text"].tolist(), show_progress=self._progress)
            self.encoder_ = enc  # add_items encodes new items' text with it
            semantic_source = "encoder" if enc.backend == "bert" else enc.backend
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
        tfidf = self.encoder_._tfidf if semantic_source == "tfidf" else None
        self.cold_start_ = ColdStart.fit(semantic_embeddings, collaborative_embeddings, semantic_source, tfidf)
        self.timings_["identifiers"] = time.perf_counter() - t
        from .distributed import world

        # Under MPI every rank computed the identifiers; rank 0's are used everywhere, so the
        # ranks train on the same tasks even if thread counts (and so rounding) differ.
        w = world()
        return w.bcast((np.asarray(self.ids_.semantic_ids_, np.int64),
                        np.asarray(self.ids_.collaborative_ids_, np.int64)) if w.is_root else None)

    def _new_seq2seq(self, vocab_size: int, seed: int):
        from .seq2seq import Seq2Seq

        c = self.config
        cfg = dict(vocab_size=vocab_size, d_model=c.d_model, d_kv=c.d_kv, d_ff=c.d_ff,
                   num_layers=c.num_layers, num_decoder_layers=c.num_decoder_layers,
                   num_heads=c.num_heads, feed_forward_proj=c.feed_forward_proj,
                   tie_word_embeddings=bool(c.tie_embeddings),
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
            k = int(np.argmax(self.tokenizer_.token_counts(
                [self._render(probe, template=j)[0] for j in range(len(self._templates[task]))])))
            # In slices, so the rendered texts of a whole frame are never all held at once.
            for s in range(0, len(ex), 4096):
                counts = self.tokenizer_.token_counts(self._render(ex.iloc[s:s + 4096], template=k))
                # + 1 for </s>, + 2 for words that split differently at a placeholder's edges
                longest = max(longest, int(counts.max()) + 3)
        return longest

    def _encode_inputs(self, texts):
        """Input texts -> the encoder's (input_ids, attention_mask): (B, T) tokens, or
        (B, T', bag_width) item bags with item_bags (+ 1 slot with recency tokens, + 1 with
        item tokens)."""
        ids, mask = self.tokenizer_.encode(texts, self._input_len())
        if not self.config.item_bags:
            return ids, mask
        bags, mask = self.tokenizer_.bag_identifiers(ids, mask, self._recency_tokens)
        return self._with_item_tokens(bags), mask

    @property
    def _item_tokens(self) -> int:
        """Item tokens after the recency tokens (item_embeddings: one per item of the
        fitted catalogue), else 0."""
        return int(self.n_fitted_items_) if self.config.item_embeddings else 0

    def _with_item_tokens(self, bags: np.ndarray) -> np.ndarray:
        """With item_embeddings, item bags (B, T, K) -> (B, T, K + 1): the new slot holds
        the item token of each identifier bag (TaskBuilder.items_of_bags), -1 elsewhere and
        for items added after fit; without, bags unchanged."""
        if not self._item_tokens:
            return bags
        item = self.builder_.items_of_bags(bags)
        first = self.tokenizer_.vocab_size + self._recency_tokens
        slot = np.where((item >= 0) & (item < self._item_tokens), first + item, -1).astype(np.int32)
        return np.concatenate([bags, slot[:, :, None]], axis=2)

    @property
    def _recency_tokens(self) -> int:
        """Recency tokens past the tokenizer's vocabulary (recency_embeddings), else 0."""
        c = self.config
        return max(1, c.n_rec + c.n_search) if c.uses_recency else 0

    @property
    def _model_vocab(self) -> int:
        """The sequence model's vocabulary: the tokenizer's, then the recency tokens, then
        the item tokens."""
        return self.tokenizer_.vocab_size + self._recency_tokens + self._item_tokens

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
        self.seq2seq_ = self._new_seq2seq(self._model_vocab, c.seed)

        def make_epoch(epoch):
            ep = epoch_mixture(parts, self.epoch_counts_, c.seed, epoch)
            inputs = self._render(ep, np.random.default_rng([c.seed, 12, epoch]))
            if c.group_by_length:
                batches = length_grouped_batches([len(t) for t in inputs], c.batch_size,
                                                 np.random.default_rng([c.seed, 14, epoch]))
            else:
                batches = [np.arange(i, min(i + c.batch_size, len(inputs)))
                           for i in range(0, len(inputs), c.batch_size)]
            return self._encode_batches(ep, inputs, batches)

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

    def _encode_batches(self, examples, inputs, batches) -> list:
        """Training batches (dicts for Seq2Seq.train_step) of examples (a task frame) with
        their rendered inputs, one per index array of batches; with constrained_softmax,
        each carries its ``allowed`` mask (TaskBuilder.allowed_mask)."""
        c = self.config
        targets = examples["target"].tolist()
        out = []
        for b in batches:
            ids, mask = self._encode_inputs([inputs[i] for i in b])
            out.append({"input_ids": ids, "attention_mask": mask,
                        "labels": target_labels([targets[i] for i in b], c.max_target_len)})
        if c.constrained_softmax:
            tasks, items = examples["task"].to_numpy(), examples["item"].to_numpy()
            for b, batch in zip(batches, out):
                batch["allowed"] = self.builder_.allowed_mask(tasks[b], items[b], batch["labels"].shape[1],
                                                              self._model_vocab)
        return out

    def _teacher_forced_loss(self, examples, batch_size: int = 64) -> float:
        """Mean target-token cross-entropy (nats) of examples, phrasing 0, dropout off;
        with constrained_softmax, the loss the model trains (over the valid codes only)."""
        from .seq2seq import shift_right

        total, count = 0.0, 0
        inputs = self._render(examples)
        batches = [np.arange(s, min(s + batch_size, len(inputs))) for s in range(0, len(inputs), batch_size)]
        for b in self._encode_batches(examples, inputs, batches):
            labels = b["labels"]
            dec = shift_right(labels, self.seq2seq_.config.decoder_start_token_id, 0)
            logits = self.seq2seq_.logits(b["input_ids"], b["attention_mask"], dec).astype(np.float64)
            if "allowed" in b:
                logits = np.where(b["allowed"], logits, -np.inf)
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
        return self._decode_target(task)[0]

    def _decode_target(self, task: str):
        """(token paths (n_items, 1 + L), Trie of the whole catalogue) of a task, built
        once and kept: rebuilding them per request cost more than the beam search of
        a single request at 63k items (benchmarks/results/serve.md). The cache is
        keyed on the identity of the tokenizer and ID arrays it was built from, so
        anything that replaces them (fit, load, add_items) rebuilds it; add_items and
        fit also drop it explicitly. The ID arrays are never modified in place."""
        from .decode import Trie

        kind = self.config.rec_id if task == "rec" else self.config.search_id
        codes = self.semantic_ids_ if kind == "semantic" else self.collaborative_ids_
        cache = self.__dict__.setdefault("_target_cache", {})
        hit = cache.get(task)
        if hit is not None and hit[0] is self.tokenizer_ and hit[1] is codes:
            return hit[2], hit[3]
        table = self.tokenizer_.id_token_ids(kind, codes, behaviour=REC_ITEM if task == "rec" else SRC_ITEM)
        table.setflags(write=False)  # shared by every later request
        trie = Trie(table, vocab_size=self.tokenizer_.vocab_size)
        cache[task] = (self.tokenizer_, codes, table, trie)
        return table, trie

    def _check_target_len(self, id_len: int) -> None:
        """max_target_len must hold a whole identifier target, or training would
        silently cut every target short (and decoding could never match)."""
        need = 1 + int(id_len) + 1  # behaviour token + ID tokens + </s>
        if self.config.max_target_len < need:
            raise ValueError(f"max_target_len={self.config.max_target_len} is shorter than an identifier "
                             f"target: 1 behaviour token + {id_len} ID tokens + </s> = {need}; "
                             f"set max_target_len >= {need}")

    def _decode(self, task, inputs, k, candidates=None, progress=False, batch_size=32, exclude=None,
                shard=False):
        """Constrained beam search for input strings -> (items (B, k), scores (B, k)),
        -1 / -inf where fewer than k items are allowed.

        candidates : None (the whole catalogue) or (B, C) item indices, -1 padded
        exclude : None or, per input, an int array of item indices it must not
            return (whole-catalogue decoding only: callers remove them from
            candidates instead). Beam search then returns k + len(exclude) items
            (with at least as many beams) and drops the excluded ones, so the k
            kept are the best non-excluded items of a search at least that wide.
            The beam count of an input depends on its own exclusions only (inputs
            are decoded in groups of equal beam count), so its answer does not
            depend on the other requests of the call.
        shard : under MPI each rank decodes its share of the cases and every rank
            gets all results (a collective: every rank must call it)."""
        from .distributed import shard as rows_of, world

        w = world()
        if shard and w.size > 1:
            sl = rows_of(len(inputs), w)
            mine = self._decode(task, inputs[sl], k, None if candidates is None else candidates[sl],
                                progress and w.is_root, batch_size,
                                None if exclude is None else exclude[sl])
            parts = w.allgather(mine)
            return (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]))
        from .decode import CandidateSets

        c = self.config
        table, target = self._decode_target(task)
        # constrained_softmax: scores normalised over the catalogue's codes after each prefix
        # (the model's item probabilities), also when ranking only a few candidates
        renormalise = target if c.constrained_softmax else False
        if candidates is None:
            k = min(k, target.n_paths)
        beams = max(c.num_beams, k)
        items = np.full((len(inputs), k), -1, np.int64)
        scores = np.full((len(inputs), k), -np.inf, np.float32)
        if exclude is not None and candidates is None:
            want = np.array([min(k + len(x), target.n_paths) for x in exclude])  # items to ask for
            width = np.maximum(want, beams)
            for b in np.unique(width):
                rows = np.flatnonzero(width == b)
                kq = int(want[rows].max())
                it, sc = self._decode_rows(task, [inputs[i] for i in rows], target, int(b), kq, progress,
                                           batch_size)
                for j, r in enumerate(rows):
                    drop = set(exclude[r].tolist())  # a few dozen items: a set beats np.isin's sort
                    keep = [p for p, v in enumerate(it[j].tolist()) if v >= 0 and v not in drop][:k]
                    items[r, :len(keep)], scores[r, :len(keep)] = it[j, keep], sc[j, keep]
            return items, scores
        if candidates is None:
            return self._decode_rows(task, inputs, target, beams, k, progress, batch_size)
        from tqdm.auto import tqdm

        for s in tqdm(range(0, len(inputs), batch_size), disable=not progress, leave=False,
                      desc=f"decode {task}"):
            e = min(len(inputs), s + batch_size)
            ids, mask = self._encode_inputs(inputs[s:e])
            kk = min(k, candidates.shape[1])
            it, sc = self.seq2seq_.beam_search(ids, mask, CandidateSets(table, candidates[s:e]),
                                               renormalise=renormalise,
                                               num_beams=max(beams, kk), top_k=kk)
            items[s:e, :kk], scores[s:e, :kk] = it, sc
        return items, scores

    def _decode_rows(self, task, inputs, trie, beams, k, progress, batch_size):
        """Beam search over one trie: (items (B, k), scores (B, k)), batch by batch."""
        from tqdm.auto import tqdm

        items = np.full((len(inputs), k), -1, np.int64)
        scores = np.full((len(inputs), k), -np.inf, np.float32)
        for s in tqdm(range(0, len(inputs), batch_size), disable=not progress, leave=False,
                      desc=f"decode {task}"):
            e = min(len(inputs), s + batch_size)
            ids, mask = self._encode_inputs(inputs[s:e])
            items[s:e], scores[s:e] = self.seq2seq_.beam_search(ids, mask, trie, num_beams=beams, top_k=k,
                                                                renormalise=self.config.constrained_softmax)
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
            ex = getattr(self, "_data_builder", self.builder_).examples("nrip" if task == "rec" else "nsip", split)
            if max_cases is not None:
                ex = ex.iloc[:max_cases]
            inputs = self._render(ex)
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

    def _catalogue(self):
        """(id -> row pd.Index, item ids array, titles array) of items_, built once per
        items_ table: rebuilding the hash table per request cost about 2 ms at 63k
        items, and reading the columns out of the frame a tenth of a request."""
        hit = self.__dict__.get("_item_lookup")
        if hit is None or hit[0] is not self.items_:
            ids = self.items_["item_id"].to_numpy()
            hit = (self.items_, pd.Index(ids), ids, self.items_["title"].to_numpy())
            self._item_lookup = hit
        return hit[1:]

    def _item_index(self, item_ids) -> np.ndarray:
        """Catalogue rows (int64) of item ids; KeyError naming unknown ones. The id
        -> row index is built once per items_ table (rebuilding its hash table per
        request cost about 2 ms at 63k items)."""
        item_ids = list(item_ids)
        idx = self._catalogue()[0].get_indexer(item_ids)
        if (idx < 0).any():
            missing = [i for i, v in zip(item_ids, idx) if v < 0][:5]
            raise KeyError(f"unknown item id(s) {missing}: not in the fitted catalogue")
        return idx.astype(np.int64)

    def _history_strings(self, histories, indices=None) -> list:
        """histories: list (one per case) of events, each an item id (a
        recommendation click) or a tuple (kind, item_id, query), oldest first.
        indices: optional list that receives, per case, the item indices of its events."""
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
            if indices is not None:
                indices.append(np.unique(np.asarray(idx, np.int64)))
            out.append(self.builder_.render_history([(k, int(i), q) for (k, _, q), i in zip(events, idx)]))
        return out

    def _result_frame(self, items, scores, with_scores: bool = True) -> pd.DataFrame:
        # whole arrays, no per-row Python loop: it is on the path of every request
        case, pos = np.nonzero(np.asarray(items) >= 0)  # row-major: by case, then rank
        it = np.asarray(items)[case, pos]
        _, ids, titles = self._catalogue()
        out = pd.DataFrame({"case": case.astype(np.int64), "rank": (pos + 1).astype(np.int64),
                            "item_id": ids[it], "title": titles[it],
                            "score": np.asarray(scores, np.float64)[case, pos]})
        return out if with_scores else out.drop(columns="score")

    def _request(self, task, inputs, hist_idx, k, exclude_history, candidates, scores) -> pd.DataFrame:
        """Decodes validated inputs with the request options (see recommend)."""
        if not isinstance(exclude_history, (bool, np.bool_)):
            raise TypeError(f"exclude_history must be True or False, got {exclude_history!r}")
        if not isinstance(scores, (bool, np.bool_)):
            raise TypeError(f"scores must be True or False, got {scores!r}")
        n = len(inputs)
        exclude = hist_idx if exclude_history else None
        if candidates is None:
            items, sc = self._decode(task, inputs, k, exclude=exclude)
            return self._result_frame(items, sc, scores)
        rows = self._candidate_rows(candidates, n)
        if exclude is not None:
            rows = [r[~np.isin(r, x)] for r, x in zip(rows, exclude)]
        items = np.full((n, k), -1, np.int64)
        sc = np.full((n, k), -np.inf, np.float32)
        live = [i for i, r in enumerate(rows) if len(r)]  # a case left without candidates gets no rows
        if live:
            width = max(len(rows[i]) for i in live)
            cand = np.full((len(live), width), -1, np.int64)
            for j, i in enumerate(live):
                cand[j, :len(rows[i])] = rows[i]
            it, s = self._decode(task, [inputs[i] for i in live], k, candidates=cand)
            items[live, :it.shape[1]], sc[live, :s.shape[1]] = it, s
        return self._result_frame(items, sc, scores)

    def _candidate_rows(self, candidates, n_cases: int) -> list:
        """candidates: item ids (one list for every case) or a list of n_cases lists
        -> per case, the unique item indices (first occurrence kept)."""
        def ids_list(v, what):
            if isinstance(v, (str, bytes, dict)) or not hasattr(v, "__iter__"):
                raise TypeError(f"{what} must be a list of item ids, got {type(v).__name__} {v!r}")
            v = list(v)
            if not v:
                raise ValueError(f"{what} is empty: give at least one candidate item id")
            idx = self._item_index(v)
            _, first = np.unique(idx, return_index=True)
            return idx[np.sort(first)]

        if isinstance(candidates, (str, bytes, dict)) or not hasattr(candidates, "__iter__"):
            raise TypeError(f"candidates must be None, a list of item ids or one such list per case, got "
                            f"{type(candidates).__name__} {candidates!r}")
        candidates = list(candidates)
        nested = [isinstance(c, (list, tuple, set, np.ndarray, pd.Series)) for c in candidates]
        if candidates and all(nested):
            if len(candidates) != n_cases:
                raise ValueError(f"candidates holds {len(candidates)} lists but there are {n_cases} cases; give one "
                                 f"list per case, or a single list of item ids for all of them")
            return [ids_list(c, f"candidates[{i}]") for i, c in enumerate(candidates)]
        if any(nested):
            raise TypeError("candidates mixes item ids and lists: give a list of item ids, or one list per case")
        shared = ids_list(candidates, "candidates")
        return [shared] * n_cases

    def recommend(self, histories, k: int = 10, *, exclude_history: bool = True, candidates=None,
                  scores: bool = True) -> pd.DataFrame:
        """Next-item recommendation for each history.

        histories : list of histories, each a list of item ids (recommendation
            clicks) or (kind, item_id, query) tuples with kind "rec" / "search", oldest first
        k : items per history (fewer if fewer are allowed)
        exclude_history : True (default) never returns an item of the case's own
            history (beam search asks for k + that many items and drops them)
        candidates : None (the whole catalogue), a list of item ids (every case
            chooses among them), or one such list per case; unknown ids raise KeyError
        scores : True keeps the ``score`` column: the beam's summed log-probability
            of the generated identifier (higher is better; comparable within a call)
        returns : DataFrame (case, rank, item_id, title[, score]), best first per case
        """
        self._check_fitted()
        k = check_int("k", k, minimum=1)
        hist_idx = []
        inputs = self._rec_inputs(histories, hist_idx)
        return self._request("rec", inputs, hist_idx, k, exclude_history, candidates, scores)

    def _rec_inputs(self, histories, indices=None) -> list:
        """Prompt strings of recommend() (validated histories)."""
        if isinstance(histories, (str, bytes, dict)) or not hasattr(histories, "__iter__"):
            raise TypeError(f"histories must be a list of histories (each a list of item ids), got "
                            f"{type(histories).__name__} {histories!r}")
        histories = list(histories)
        if not histories:
            raise ValueError("histories is empty: pass at least one history (a list of item ids, may be empty)")
        hist = self._history_strings(histories, indices)
        return [self._templates["nrip"][0].format(history=h) for h in hist]

    def search(self, queries, histories=None, k: int = 10, *, exclude_history: bool = False,
               candidates=None, scores: bool = True) -> pd.DataFrame:
        """Personalised search: items for each query, given the user's history
        (same format as in recommend; None for no history).

        exclude_history : False (default: a user may search for an item again);
            True drops the items of the case's history
        candidates, scores : as in :meth:`recommend`
        returns : DataFrame (case, rank, item_id, title[, score]), best first per case"""
        self._check_fitted()
        k = check_int("k", k, minimum=1)
        hist_idx = []
        inputs = self._search_inputs(queries, histories, hist_idx)
        return self._request("search", inputs, hist_idx, k, exclude_history, candidates, scores)

    def _search_inputs(self, queries, histories=None, indices=None) -> list:
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
        hist = self._history_strings(histories, indices)
        return [self._templates["nsip"][0].format(history=h, query=escape_text(q)) for h, q in zip(hist, queries)]

    # ================================================================== new items
    def add_items(self, items, semantic_embeddings=None, *, item_col: str = "item_id",
                  title_col: str = "title", text_col: str | None = None,
                  category_col: str = "category", query_col: str | None = None,
                  learn_passes: int = 8, learn_lr: float | None = None,
                  progress: bool | None = None) -> "GenSAR":
        """Adds items that arrived after training, without refitting anything.

        items : DataFrame, one row per new item, as the ``items`` table of
            gensar.datasets.from_pandas: ``item_col`` (ids of the catalogue's type,
            int or str, new and unique), ``title_col`` (str) and optionally
            ``text_col`` / "text", "description", ``category_col``; the text is
            built by the same rule as from_pandas.
        semantic_embeddings : optional (M, d) float array, row i for items row i;
            required when fit() was given semantic embeddings (otherwise the text
            goes through the model's sentence encoder)

        Each new item gets a collaborative embedding predicted from its semantic
        one (:class:`ColdStart`: it has no interactions), then both identifiers
        from the fitted quantiser (DualIDs.transform), made unique against every
        identifier in use (published IDs never change). The items are searchable
        and recommendable at once (the cached decoding tries are rebuilt from
        the grown catalogue on the next request) and are saved and loaded with the model. Their
        titles join ``items_``; ``n_fitted_items_`` stays the number of items
        the model was trained on. Returns self.

        Crowding: a shared prefix holds at most K_(L-1) x K_L identifiers (the
        specific codebooks' sizes); new items beyond its room take the nearest
        shared prefix with room (DualIDs.transform). Only when every prefix is
        full does it raise a ValueError, and then nothing is added.

        Learning the new identifiers: a decoder trained only on the old items gives
        the code paths of new ones almost no probability, so an identifier alone
        makes a new item reachable, not likely (benchmarks/results/new-items-*.md).
        With ``learn_passes`` > 0 (default 8) the sequence model then takes a short
        update, without refitting anything else: ``learn_passes`` passes over the
        new items' examples, each mixed with as many replayed examples of the
        trained catalogue so nothing is forgotten. New items' examples: item text ->
        semantic ID and -> collaborative ID (the alignment tasks), query -> semantic
        ID (ad-hoc search) and, when the model knows its dataset (fit, or
        GenSAR.load(path, dataset=...)), personalised search: a random training
        user's history plus the query -> semantic ID. Replay: the same alignment
        tasks over trained items and the dataset's own next-item and personalised
        search examples (titles only when the dataset is not known). Queries of a
        new item: ``items[query_col]`` (str, or a list of str per item: a query
        log, a doc2query model's output, a rule over the item's metadata) when
        given, else its title. AdamW restarts (fresh moments) at ``learn_lr``
        (default: the config's lr / 2), cosine decay, 10% warm-up. Costs
        about 2 x learn_passes x 4 x (new items) training examples.
        learn_passes=0 adds identifiers only.
        progress : a progress bar for that update (default: as the model was fitted)."""
        from .datasets.protocol import _check_ids, _item_table, _require_columns, _text_column
        from .ids import DualIDs

        self._check_fitted()
        if not isinstance(getattr(self, "ids_", None), DualIDs) or not hasattr(self, "cold_start_"):
            raise RuntimeError("add_items needs the fitted quantiser and the cold-start regression, which this "
                               "model does not have: it was fitted with ids=... (no embeddings) or saved by a "
                               "gensar without add_items; refit it without ids= to add items later")
        if not isinstance(items, pd.DataFrame):
            raise TypeError(f"items must be a pandas DataFrame (columns {item_col!r}, {title_col!r}, optional "
                            f"text), got {type(items).__name__}")
        for name, v in (("item_col", item_col), ("title_col", title_col), ("category_col", category_col)):
            if not isinstance(v, str):
                raise TypeError(f"{name} must be a column name (str), got {v!r}")
        _require_columns(items, [item_col, title_col], "items",
                         "add_items takes the items table of from_pandas; name the columns with item_col / title_col.")
        if len(items) == 0:
            raise ValueError("items is empty: nothing to add")
        learn_passes = check_int("learn_passes", learn_passes, minimum=0)
        if learn_lr is not None:
            learn_lr = check_float("learn_lr", learn_lr, minimum=0.0, strict_min=True)
        queries = None
        if query_col is not None:
            if not isinstance(query_col, str):
                raise TypeError(f"query_col must be a column name (str) or None, got {query_col!r}")
            _require_columns(items, [query_col], "items", "query_col names the column of each new item's "
                             "search queries (a str or a list of str per item).")
            queries = [_item_queries(v, i) for i, v in enumerate(items[query_col].tolist())]
        kind = _check_ids(items[item_col], f"items[{item_col!r}]")
        ids = items[item_col]
        have = self.items_["item_id"]
        have_kind = "int" if pd.api.types.is_integer_dtype(have) else "str"
        if kind != have_kind:
            raise TypeError(f"items[{item_col!r}] holds {kind} ids but the catalogue's ids are {have_kind}; "
                            f"use the catalogue's id type")
        dtype = have.dtype if kind == "int" else object
        if kind == "int":
            lo, hi = np.iinfo(dtype).min, np.iinfo(dtype).max
            bad = [v for v in ids.tolist() if not lo <= int(v) <= hi]
            if bad:
                raise ValueError(f"items[{item_col!r}] holds {bad[0]}, outside the catalogue's id type {dtype}")
        if ids.duplicated().any():
            raise ValueError(f"items[{item_col!r}] must be unique; {ids[ids.duplicated()].iloc[0]!r} appears "
                             f"more than once")
        known = set(have.tolist())
        taken = [v for v in ids.tolist() if v in known]
        if taken:
            raise ValueError(f"{len(taken)} item id(s) of items are already in the catalogue (e.g. {taken[:5]}); "
                             f"add_items adds new items only")
        it = _item_table(items, item_col=item_col, title_col=title_col, text_col=text_col,
                         category_col=category_col, item_kind=kind, item_dtype=dtype)
        texts = it["text"].tolist()
        xs = self._new_item_embeddings(texts, semantic_embeddings)
        xc = self.cold_start_.predict(xs)
        sem, col = self.ids_.transform(xs, xc, published=(self.semantic_ids_, self.collaborative_ids_))
        try:  # tokens exist for every code of a fitted codebook (see _layout)
            self.tokenizer_.id_token_ids("semantic", sem)
            self.tokenizer_.id_token_ids("collaborative", col)
        except ValueError as exc:
            raise ValueError(f"the new items' identifiers use codes this model's token layout has no token for "
                             f"({exc}); models trained by an older gensar reserved tokens for used codes only: "
                             f"refit to add items") from None
        self.semantic_ids_ = np.concatenate([self.semantic_ids_, sem])
        self.collaborative_ids_ = np.concatenate([self.collaborative_ids_, col])
        new = pd.DataFrame({"item_id": it["item_id"].astype(dtype).to_numpy(),
                            "title": _text_column(it["title"], "title").to_numpy(dtype=object)})
        self.items_ = pd.concat([self.items_, new], ignore_index=True)
        for name in ("_target_cache", "_item_lookup"):  # decoding tries and id lookup of the old catalogue
            self.__dict__.pop(name, None)
        self._refresh_builders()
        if learn_passes > 0:
            if queries is None:
                queries = [[t] for t in new["title"].tolist()]
            self._learn_new_items(len(self.items_) - len(new), texts, queries, learn_passes,
                                  learn_lr if learn_lr is not None else self.config.lr / 2,
                                  getattr(self, "_progress", False) if progress is None else bool(progress))
        return self

    def _learn_new_items(self, first: int, texts: list, queries: list, passes: int, lr: float,
                         progress: bool) -> None:
        """The short update of add_items (see its docstring): items first.. are new,
        texts[j] / queries[j] (a list of str) belong to item first + j."""
        from .training import Trainer

        c = self.config
        rng = np.random.default_rng([c.seed, 31, first])
        b = self.builder_  # covers every item, the new ones included
        new = np.arange(first, len(self.items_))
        rows = []  # (task, fields, target, target item): the item for the constrained loss's mask
        for j, i in enumerate(new):
            item = {"item": escape_text(texts[j])}
            rows += [("item2sem", item, b.target_tokens("item2sem", i), i),
                     ("item2col", item, b.target_tokens("item2col", i), i)]
            rows += [("adhoc", {"query": escape_text(q)}, b.target_tokens("adhoc", i), i) for q in queries[j]]
        data = getattr(self, "_data_builder", None) or (b if b.ds is not None else None)
        replay = []
        if data is not None:
            search = data.examples("nsip", "train")
            if len(search):  # new items in personalised search: a real user's history, the new item's query
                pick = rng.integers(len(search), size=len(new))
                rows += [("nsip", {"history": search["fields"].iloc[p]["history"], "query": escape_text(queries[j][0])},
                          b.target_tokens("nsip", i), i) for j, (i, p) in enumerate(zip(new, pick))]
            replay = [data.examples("nrip", "train"), search]
        # the trained catalogue's text: the dataset's when known, then titles (items added before)
        old_text = data.ds.items["text"].astype(str).tolist() if data is not None else []
        old_text += self.items_["title"].astype(str).tolist()[len(old_text):first]
        old = rng.integers(first, size=len(rows))
        align = [(t, {"item": escape_text(old_text[i])}, b.target_tokens(t, i), i)
                 for t, i in zip(rng.choice(["item2sem", "item2col"], size=len(rows)), old)]
        columns = ["task", "fields", "target", "item"]
        fresh = pd.DataFrame(rows, columns=columns)
        align = pd.DataFrame(align, columns=columns)
        replay = [r[columns] for r in replay if len(r)]
        pool = pd.concat(replay, ignore_index=True) if replay else None

        def make_epoch(epoch):
            er = np.random.default_rng([c.seed, 32, first, epoch])
            n_old = len(fresh)  # as many replayed examples as new ones: half alignment, half the dataset's tasks
            parts = [fresh]
            if pool is not None:
                half = n_old // 2
                parts += [align.iloc[er.integers(len(align), size=n_old - half)],
                          pool.iloc[er.integers(len(pool), size=half)]]
            else:
                parts.append(align.iloc[er.integers(len(align), size=n_old)])
            ep = pd.concat(parts, ignore_index=True)
            ep = ep.iloc[er.permutation(len(ep))].reset_index(drop=True)
            batches = [np.arange(s, min(s + c.batch_size, len(ep))) for s in range(0, len(ep), c.batch_size)]
            return self._encode_batches(ep, self._render(ep, er), batches)

        m = self.seq2seq_
        m.adam_m[...] = 0.0  # a new phase: AdamW starts afresh rather than from the fit's stale moments
        m.adam_v[...] = 0.0
        Trainer(m, make_epoch, epochs=passes, lr=lr, schedule="cosine", warmup=0.1, progress=progress,
                description="learning new items", checkpoint_every_s=float("inf")).fit(resume=False)

    def _new_item_embeddings(self, texts, given) -> np.ndarray:
        """Semantic embeddings (M, d) of new items: `given` checked, or the text encoded."""
        d = self.cold_start_.W.shape[0]
        m = len(texts)
        if given is not None:
            try:
                x = np.asarray(given)
            except ValueError:
                raise ValueError("semantic_embeddings must be a rectangular (M, d) float array") from None
            if x.dtype == np.bool_ or not np.issubdtype(x.dtype, np.floating):
                raise TypeError(f"semantic_embeddings must hold floats, got dtype {x.dtype}")
            if x.shape != (m, d):
                raise ValueError(f"semantic_embeddings must have shape (n_new_items={m}, {d}) like the embeddings "
                                 f"the model was fitted with, got {x.shape}")
            if not np.isfinite(x).all():
                raise ValueError("semantic_embeddings holds NaN or infinite values")
            return np.ascontiguousarray(x, np.float32)
        enc = getattr(self, "encoder_", None)
        if enc is not None:  # the encoder of this session's fit
            x = enc.encode(texts, show_progress=False)
        elif self.cold_start_.tfidf is not None:  # the TF-IDF encoder fitted with the model, saved with it
            x = self.cold_start_.tfidf.encode(texts)
        else:
            if self.cold_start_.semantic_source != "encoder":
                raise ValueError(f"pass semantic_embeddings= (M, {d}) for the new items: fit() was given "
                                 f"semantic embeddings, so gensar cannot embed their text the same way")
            from .embeddings import SentenceEncoder

            self.encoder_ = SentenceEncoder(self.config.sentence_model, allow_fallback=False)
            x = self.encoder_.encode(texts, show_progress=False)
        x = np.asarray(x, np.float32)
        if x.shape != (m, d):
            raise ValueError(f"the sentence encoder {self.config.sentence_model!r} gives {x.shape[1]}-d embeddings "
                             f"but the model was fitted with {d}-d ones")
        return x

    def _refresh_builders(self) -> None:
        """Task builders after the catalogue grew: builder_ renders histories over
        every item; evaluation keeps the dataset's own builder (items added later
        have no events in it)."""
        self.builder_ = TaskBuilder.for_items(self.tokenizer_, self.semantic_ids_, self.collaborative_ids_,
                                              **self._builder_settings())
        if hasattr(self, "dataset_"):
            self._data_builder = self._builder(self.dataset_)

    # ================================================================== persistence
    # Files of a saved model, relative to its directory; manifest.json lists them all.
    _FILES = ("config.json", "fit_info.json", "model.safetensors", "ids.npz", "items.json",
              "tokenizer/tokenizer.json", "tokenizer/id_layout.json")
    _OPTIONAL_IN_OLD_SAVES = ("fit_info.json",)  # saves without a manifest may predate it
    # What add_items needs (absent for models fitted with ids=... and older saves):
    # the fitted quantiser (DualIDs.save) and the cold-start regression.
    _NEW_ITEM_FILES = ("quantiser.npz", "cold_start.npz")
    _FORMAT, _FORMAT_VERSION = "gensar.GenSAR", 1

    def save(self, path) -> None:
        """One directory: config.json, model.safetensors, ids.npz, items.json,
        tokenizer/, fit_info.json (what fit() resolved: input length, pseudo-query
        source and quality, examples per epoch of each task, the per-epoch training
        log ``history_``, restored by load) and manifest.json (size
        and sha256 of every other file, format name and version).

        Each file is written under a temporary name and renamed into place, and the
        manifest last, so an interrupted save (or a save over an older model) never
        leaves a directory that loads as a mix: GenSAR.load checks every file
        against the manifest and names the first that does not match."""
        from ._io import atomic_write, atomic_write_text, save_dir, write_manifest
        from .distributed import world

        self._check_fitted()
        if not world().is_root:  # under MPI every rank holds the same model; rank 0 writes it
            return
        d = save_dir(path, "GenSAR.save")
        atomic_write_text(d / "config.json", json.dumps(asdict(self.config), indent=1))
        info = {"input_len": self._input_len(),
                "pseudo_query_source": getattr(self, "pseudo_query_source_", None),
                "pseudo_query_quality": getattr(self, "pseudo_query_quality_", None),
                "epoch_counts": getattr(self, "epoch_counts_", None),
                "n_fitted_items": int(getattr(self, "n_fitted_items_", len(self.items_))),
                # the per-epoch log (loss, validation metrics) the kept epoch was chosen on
                "history": (self.history_.to_dict("records") if isinstance(getattr(self, "history_", None),
                                                                           pd.DataFrame) else None)}
        atomic_write_text(d / "fit_info.json", json.dumps(info, indent=1, default=float))
        self.seq2seq_.save(d / "model.safetensors")

        def write_ids(tmp):
            with open(tmp, "wb") as f:  # a file object: np.savez would append ".npz" to a name
                np.savez(f, semantic=self.semantic_ids_, collaborative=self.collaborative_ids_)

        atomic_write(d / "ids.npz", write_ids)
        atomic_write_text(d / "items.json", json.dumps(_items_doc(self.items_)))
        self.tokenizer_.save(d / "tokenizer")
        files = list(self._FILES)
        if getattr(self, "ids_", None) is not None and hasattr(self, "cold_start_"):
            self.ids_.save(d / "quantiser.npz")
            self.cold_start_.save(d / "cold_start.npz")
            files += self._NEW_ITEM_FILES
        else:  # a save over a model that had them must not leave stale ones behind
            for f in self._NEW_ITEM_FILES:
                (d / f).unlink(missing_ok=True)
        from . import __version__

        write_manifest(d, files, self._FORMAT, self._FORMAT_VERSION, gensar_version=__version__)

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
        if self.config.item_bags:
            raise ValueError("this model reads identifiers as item bags (item_bags=True): one encoder "
                             "position sums several token embeddings, which HF T5 cannot take as token "
                             "ids. Export a model trained with item_bags=False, or feed HF inputs_embeds "
                             "built from shared.weight yourself (see Tokenizer.bag_identifiers)")
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
            # saved before a setting existed: trained (and so scored) without it
            if isinstance(cfg, dict):
                cfg.setdefault("constrained_softmax", False)
                cfg.setdefault("item_bags", False)  # the same: saved before item bags existed
                cfg.setdefault("recency_embeddings", False)
                cfg.setdefault("item_embeddings", False)
                cfg.setdefault("tie_embeddings", True)
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
            if info.get("history"):  # saved by gensar >= this field: the training log
                self.history_ = pd.DataFrame(info["history"])
            if info.get("n_fitted_items") is not None:
                try:
                    self.n_fitted_items_ = check_int("n_fitted_items", info["n_fitted_items"], minimum=1,
                                                     maximum=len(self.items_))
                except (TypeError, ValueError) as exc:
                    raise ValueError(f"{d / 'fit_info.json'} is invalid: {exc}") from None
        if not hasattr(self, "n_fitted_items_"):
            self.n_fitted_items_ = len(self.items_)
        if all((d / f).is_file() for f in self._NEW_ITEM_FILES):
            from .ids import DualIDs

            self.ids_ = DualIDs.load(d / "quantiser.npz")
            self.cold_start_ = ColdStart.load(d / "cold_start.npz")
            if self.ids_.semantic_ids_.shape[1] != self.semantic_ids_.shape[1]:
                raise ValueError(f"{d / 'quantiser.npz'} gives IDs of {self.ids_.semantic_ids_.shape[1]} tokens but "
                                 f"{d / 'ids.npz'} holds IDs of {self.semantic_ids_.shape[1]}: files of different saves")
        self.seq2seq_ = Seq2Seq.load(d / "model.safetensors")
        self._check_loaded(d)
        self.builder_ = TaskBuilder.for_items(self.tokenizer_, self.semantic_ids_, self.collaborative_ids_,
                                              **self._builder_settings())
        if dataset is not None:
            self._attach_dataset(dataset)
        return self

    def _attach_dataset(self, dataset) -> None:
        """Gives a loaded model its training dataset (for evaluate), refusing one
        whose catalogue differs: item indices would point at other items."""
        _check_dataset(dataset)
        n = int(getattr(self, "n_fitted_items_", len(self.items_)))  # items added later are not in it
        if (dataset.n_items != n or
                not np.array_equal(dataset.items["item_id"].to_numpy(), self.items_["item_id"].to_numpy()[:n])):
            raise ValueError(f"dataset {dataset.name!r} does not have the catalogue this model was trained on "
                             f"({dataset.n_items} items vs {n} saved, or other item ids); evaluating on it "
                             f"would be wrong")
        self.dataset_ = dataset
        if n == len(self.items_):
            self.builder_ = self._builder(dataset)
        else:
            self._refresh_builders()

    def _check_loaded(self, d: Path) -> None:
        """The loaded files agree with each other (a file from another save would not)."""
        c, m = self.config, self.seq2seq_.config
        for name in ("d_model", "num_layers", "num_decoder_layers", "num_heads", "d_kv", "d_ff",
                     "feed_forward_proj"):
            if getattr(c, name) != getattr(m, name):
                raise ValueError(f"{d / 'config.json'} says {name}={getattr(c, name)!r} but {d / 'model.safetensors'} "
                                 f"holds a model with {name}={getattr(m, name)!r}: the files come from different saves")
        if bool(c.tie_embeddings) != bool(m.tie_word_embeddings):
            raise ValueError(f"{d / 'config.json'} says tie_embeddings={c.tie_embeddings!r} but "
                             f"{d / 'model.safetensors'} holds a model with tie_word_embeddings="
                             f"{m.tie_word_embeddings!r}: the files come from different saves")
        if m.vocab_size != self._model_vocab:
            raise ValueError(f"{d / 'tokenizer'} has {self.tokenizer_.vocab_size} tokens and {d / 'config.json'} "
                             f"asks for {self._recency_tokens} recency tokens (recency_embeddings="
                             f"{self.config.recency_embeddings!r}) and {self._item_tokens} item tokens "
                             f"(item_embeddings={self.config.item_embeddings!r}), {self._model_vocab} in all, but "
                             f"{d / 'model.safetensors'} was trained with {m.vocab_size}: the files come from "
                             f"different saves, or config.json was edited")
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
