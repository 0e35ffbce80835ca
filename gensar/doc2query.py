"""Pseudo-queries for GenSAR's ad-hoc search task: a doc2query model, or the
dataset's own query text.

GenSAR's ad-hoc search task trains on pseudo-queries (GENSAR.md section 3).
The reference fine-tuned msmarco-t5-base on the training search data; here
:class:`Doc2Query` trains a small encoder-decoder of the same C core from
scratch on the (item text -> query) pairs of the training search sessions,
until the loss on held-out items stops falling (early stopping), then writes one
(or n) queries per item.

:func:`dataset_queries` is the alternative when the dataset has its own query
text for every item (semi-synthetic search: the queries *are* each item's
``synthetic_query``, e.g. genre and decade words on MovieLens), and
:func:`pseudo_query_quality` measures either against the items' real queries.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from .generate import generate
from .tasks import encode_batch
from .tokenizer import escape_text

SOURCES = ("auto", "dataset", "doc2query")


def _words(q: str) -> list:
    from .datasets._text import tokenize

    return tokenize(q)


def is_semi_synthetic(dataset) -> bool:
    """True when the dataset's searches were made from the items' ``synthetic_query``
    (``from_pandas(..., search_share=...)``), so every item has its query text."""
    return (dataset.config.get("search_share") is not None
            and "synthetic_query" in dataset.items.columns
            and bool((dataset.items["synthetic_query"].astype(str).str.strip() != "").any()))


def dataset_queries(dataset, n: int = 1) -> list:
    """The dataset's own query text per item: a list (one per item) of up to n queries.

    Semi-synthetic data: the item's ``synthetic_query`` (the only query its searches
    can have). Real search logs: the item's most frequent queries among training
    search events (ties by query text); items never searched get [].
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n must be an int >= 1, got {n!r}")
    if is_semi_synthetic(dataset):
        return [[q] if q.strip() else [] for q in dataset.items["synthetic_query"].astype(str)]
    ev = dataset.events
    src = ev[(ev["kind"] == "search") & (ev["split"] == "train")]
    counts = src.groupby(["item", "query"]).size().rename("n").reset_index()
    counts = counts.sort_values(["item", "n", "query"], ascending=[True, False, True])
    out = [[] for _ in range(dataset.n_items)]
    for item, q in zip(counts["item"], counts["query"]):
        if len(out[item]) < n:
            out[item].append(q)
    return out


def pseudo_query_quality(dataset, pseudo_queries, items=None) -> dict:
    """How close pseudo-queries are to the items' real queries.

    pseudo_queries : list (one per item) of lists of strings
    items : item indices to measure (default: every item with a real query); the
        real queries of an item are the distinct queries of its search events (all
        splits; this is a measurement, nothing is trained on it)
    returns : dict with ``items`` measured, ``distinct_share`` (distinct pseudo-queries
        / pseudo-queries, over all items), ``exact_match`` (share of measured items
        whose first pseudo-query is one of their real queries), ``word_f1`` (mean over
        measured items of the best word-level F1 between the first pseudo-query and a
        real query), ``empty_share`` (items without any pseudo-query).
    """
    if len(pseudo_queries) != dataset.n_items:
        raise ValueError(f"pseudo_queries must have one list per item ({dataset.n_items}), "
                         f"got {len(pseudo_queries)}")
    ev = dataset.events
    src = ev[ev["kind"] == "search"][["item", "query"]].drop_duplicates()
    real = src.groupby("item")["query"].apply(list).to_dict()
    if items is None:
        items = sorted(real)
    all_q = [q for qs in pseudo_queries for q in qs if q]
    exact, f1s = [], []
    for i in items:
        i = int(i)
        if i not in real:
            continue
        first = next((q for q in pseudo_queries[i] if q), "")
        exact.append(first in real[i])
        pw = set(_words(first))
        best = 0.0
        for r in real[i]:
            rw = set(_words(r))
            common = len(pw & rw)
            if common:
                p, rc = common / len(pw), common / len(rw)
                best = max(best, 2 * p * rc / (p + rc))
        f1s.append(best)
    return {"items": len(exact),
            "distinct_share": (len(set(all_q)) / len(all_q)) if all_q else 0.0,
            "distinct_queries": len(set(all_q)),
            "exact_match": float(np.mean(exact)) if exact else float("nan"),
            "word_f1": float(np.mean(f1s)) if f1s else float("nan"),
            "empty_share": float(np.mean([not any(qs) for qs in pseudo_queries]))}


class Doc2Query:
    """A small Seq2Seq trained on (item text -> query) until held-out loss stops falling.

    tokenizer : the GenSAR Tokenizer (shared vocabulary)
    d_model, layers : size of the small model
    epochs : the most epochs to train; training stops earlier when the loss on the
        held-out items has not improved for `patience` epochs, and the best epoch's
        weights are kept
    valid_share : share of the searched items whose pairs are held out (by item, so
        the validation loss measures what matters: queries for items it never saw)
    batch_size, lr : training (AdamW, constant lr after a warm-up over 2% of the most steps)

    Fitted attributes: ``model_``, ``history_`` (per epoch: loss, valid_loss),
    ``best_epoch_``, ``valid_loss_`` (best held-out token loss), ``valid_items_``
    (the held-out item indices), ``pairs_`` (number of training pairs).
    """

    def __init__(self, tokenizer, d_model: int = 128, layers: int = 2, epochs: int = 50,
                 patience: int = 3, valid_share: float = 0.1, batch_size: int = 64, lr: float = 1e-3,
                 max_input_len: int = 64, max_query_len: int = 16, seed: int = 0, progress: bool = True):
        if isinstance(epochs, bool) or not isinstance(epochs, (int, np.integer)) or epochs < 1:
            raise ValueError(f"epochs must be an int >= 1, got {epochs!r}")
        if isinstance(patience, bool) or not isinstance(patience, (int, np.integer)) or patience < 0:
            raise ValueError(f"patience must be an int >= 0, got {patience!r}")
        if not (isinstance(valid_share, (int, float)) and 0.0 <= valid_share < 1.0):
            raise ValueError(f"valid_share must be a number in [0, 1), got {valid_share!r}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.tok, self.d_model, self.layers, self.epochs = tokenizer, d_model, layers, int(epochs)
        self.patience, self.valid_share = int(patience), float(valid_share)
        self.batch_size, self.lr, self.seed, self.progress = batch_size, lr, seed, progress
        self.max_input_len, self.max_query_len = max_input_len, max_query_len

    def _pairs(self, dataset):
        ev = dataset.events
        pairs = ev[(ev["kind"] == "search") & (ev["split"] == "train")][["item", "query"]].drop_duplicates()
        if pairs.empty:
            raise ValueError("the dataset has no training search sessions to learn queries from")
        return pairs.reset_index(drop=True)

    def _batches(self, texts, targets, order):
        return [encode_batch(self.tok, [texts[j] for j in order[i:i + self.batch_size]],
                             [targets[j] for j in order[i:i + self.batch_size]],
                             self.max_input_len, self.max_query_len)
                for i in range(0, len(order), self.batch_size)]

    def loss(self, batches) -> float:
        """Mean token cross-entropy (nats) of batches, teacher-forced, dropout off."""
        from .seq2seq import shift_right

        total, count = 0.0, 0
        for b in batches:
            labels = b["labels"]
            dec = shift_right(labels)
            logits = self.model_.logits(b["input_ids"], b["attention_mask"], dec).astype(np.float64)
            m = logits.max(-1, keepdims=True)
            lse = (m[..., 0] + np.log(np.exp(logits - m).sum(-1)))
            keep = labels != -100
            picked = np.take_along_axis(logits, np.where(keep, labels, 0)[..., None], -1)[..., 0]
            total += float((lse - picked)[keep].sum())
            count += int(keep.sum())
        return total / max(count, 1)

    def fit(self, dataset) -> "Doc2Query":
        """Trains on the unique (item text, query) pairs of training search events."""
        from .seq2seq import Seq2Seq
        from .training import Trainer

        pairs = self._pairs(dataset)
        items = np.unique(pairs["item"].to_numpy())
        rng = np.random.default_rng([self.seed, 6])
        n_valid = int(round(self.valid_share * len(items)))
        if self.valid_share > 0 and len(items) >= 10:
            n_valid = max(1, n_valid)
        else:
            n_valid = 0
        self.valid_items_ = np.sort(rng.choice(items, size=n_valid, replace=False)) if n_valid else items[:0]
        is_valid = np.isin(pairs["item"].to_numpy(), self.valid_items_)
        # user text is escaped so it cannot spell a control token (tokenizer docstring)
        texts_all = np.array([escape_text(t) for t in dataset.items["text"]],
                             dtype=object)[pairs["item"].to_numpy()]
        targets_all = [ids + [self.tok.eos_id] for ids in self.tok.encode_texts(pairs["query"].tolist())]
        tr = np.flatnonzero(~is_valid)
        texts = [texts_all[j] for j in tr]
        targets = [targets_all[j] for j in tr]
        self.pairs_ = len(tr)
        valid = self._batches(list(texts_all), targets_all, np.flatnonzero(is_valid)) if n_valid else []
        self.model_ = Seq2Seq(dict(vocab_size=self.tok.vocab_size, d_model=self.d_model, d_kv=self.d_model // 4,
                                   d_ff=4 * self.d_model, num_layers=self.layers,
                                   num_decoder_layers=self.layers, num_heads=4, dropout_rate=0.1),
                              lr=self.lr, seed=self.seed)
        n = len(texts)

        def make_epoch(epoch):
            order = np.random.default_rng([self.seed, 5, epoch]).permutation(n)
            return self._batches(texts, targets, order)

        validate = (lambda: {"neg_valid_loss": -self.loss(valid)}) if valid else None
        trainer = Trainer(self.model_, make_epoch, epochs=self.epochs, lr=self.lr, schedule="constant",
                          warmup=0.02, validate=validate,
                          metric="neg_valid_loss" if valid else None, patience=self.patience,
                          progress=self.progress, description="doc2query")
        hist = trainer.fit(resume=False)
        if "neg_valid_loss" in hist:
            hist["valid_loss"] = -hist.pop("neg_valid_loss")
            self.best_epoch_ = int(trainer.state.best_epoch)
            self.valid_loss_ = float(-trainer.state.best)
        else:
            self.best_epoch_, self.valid_loss_ = len(hist), math.nan
        self.history_ = hist
        return self

    def generate(self, texts, n: int = 1, batch_size: int = 128) -> list:
        """n queries per text (the first greedy, the others top-k 10 samples, so n=1
        gives the most likely query). Returns a list of lists of strings."""
        if not hasattr(self, "model_"):
            raise RuntimeError("call fit(dataset) first")
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
            raise ValueError(f"n must be an int >= 1, got {n!r}")
        texts = [escape_text(t) for t in texts]  # user text: never control tokens
        out = []
        banned = np.arange(3, self.tok.first_text_id)  # no behaviour or identifier tokens
        for s in range(0, len(texts), batch_size):
            ids, mask = self.tok.encode(texts[s:s + batch_size], self.max_input_len)
            greedy = generate(self.model_, ids, mask, self.max_query_len, self.tok.eos_id, banned_ids=banned)
            sampled = (generate(self.model_, ids, mask, self.max_query_len, self.tok.eos_id, num_return=n - 1,
                                do_sample=True, top_k=10, seed=self.seed + s, banned_ids=banned)
                       if n > 1 else [])
            for b in range(len(greedy)):
                qs = [self.tok.decode(greedy[b])] + [self.tok.decode(sampled[b * (n - 1) + j]) for j in range(n - 1)]
                out.append(qs)
        return out


def quality_table(dataset, pseudo_queries, valid_items=None) -> pd.DataFrame:
    """pseudo_query_quality on every searched item and, if given, on held-out items."""
    rows = [{"items_set": "all searched", **pseudo_query_quality(dataset, pseudo_queries)}]
    if valid_items is not None and len(valid_items):
        rows.append({"items_set": "held out", **pseudo_query_quality(dataset, pseudo_queries, valid_items)})
    return pd.DataFrame(rows)
