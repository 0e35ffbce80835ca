"""Collaborative item embeddings: a SASRec-style causal transformer over users' item
sequences, trained in C (csrc/nn/sasrec.c) with full softmax cross-entropy over the whole
catalogue at every position and AdamW. It is also the recommendation baseline.

Protocol choices (written down because they change the numbers):

- Interactions: every training event of the kinds in ``kinds`` (default both recommendation
  clicks and search clicks, since both say "the user interacted with this item"), in the
  dataset's event order. Only events with ``split == "train"`` are used for training, so no
  validation or test target leaks in.
- Training sequences: each user's sequence is cut from its end into windows of
  ``max_len + 1`` items that overlap by one (the newest window first); each window gives
  ``max_len`` next-item targets. Windows are left-padded.
- Scoring a case: its history (the protocol's history rule: every earlier event visible to
  that split) filtered to ``kinds``, the last ``max_len`` items; the score of item i is
  h . E_i with h the final hidden state.
- Full-catalogue evaluation ranks the target among all ``n_items`` items and excludes
  NOTHING (not even the items the user has already seen), as the standard SASRec full
  ranking; ties are broken by a seeded random order (gensar.evaluate).
"""
from __future__ import annotations

import math
import time

import numpy as np

from .. import _core

IGNORE = -100


def _int(value, name, lo, hi=None):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < lo or (
            hi is not None and value > hi):
        rng = f">= {lo}" if hi is None else f"in [{lo}, {hi}]"
        raise ValueError(f"{name} must be an integer {rng}, got {value!r}")
    return int(value)


def _float(value, name, lo, hi, hi_open=False):
    ok = isinstance(value, (int, float, np.floating)) and not isinstance(value, bool)
    if not ok or not math.isfinite(value) or value < lo or value > hi or (hi_open and value >= hi):
        raise ValueError(f"{name} must be a number in [{lo}, {hi}{')' if hi_open else ']'}, "
                         f"got {value!r}")
    return float(value)


class SASRec:
    """Self-attentive sequential recommender (Kang & McAuley 2018), pre-LayerNorm blocks,
    learned positions, dropout, output layer tied to the item table, full-softmax loss.

    Parameters
    ----------
    hidden, layers, heads : model width d, blocks, attention heads (d % heads == 0)
    max_len : items of history the model sees (older ones are dropped)
    dropout : on embeddings, attention probabilities, ReLU outputs and block outputs
    inner : feed-forward width (default: hidden, as in SASRec)
    epochs, batch_size, lr, weight_decay, max_grad_norm : AdamW training (weight decay on
        weight matrices only; 0 = the SASRec default)
    kinds : event kinds treated as interactions ("rec", "search")
    eval_every, patience : validate (full-catalogue NDCG@10 on the "valid" split) every
        eval_every epochs, keep the best parameters, stop after `patience` validations
        without improvement; eval_every=0 trains all epochs and keeps the last parameters
    seed : initialisation, shuffling and dropout; same seed + thread count -> same model

    Fitted attributes: ``item_embeddings_`` (n_items, hidden) float32, ``n_items_``,
    ``history_`` (list of dicts per validation: epoch, loss, NDCG@10), ``best_epoch_``.
    """

    def __init__(self, hidden=64, layers=2, heads=1, max_len=50, dropout=0.2, inner=None,
                 epochs=200, batch_size=128, lr=1e-3, weight_decay=0.0, max_grad_norm=5.0,
                 kinds=("rec", "search"), eval_every=5, patience=5, seed=0, show_progress=True):
        self.hidden, self.layers, self.heads, self.max_len = hidden, layers, heads, max_len
        self.dropout, self.inner, self.epochs, self.batch_size = dropout, inner, epochs, batch_size
        self.lr, self.weight_decay, self.max_grad_norm = lr, weight_decay, max_grad_norm
        self.kinds, self.eval_every, self.patience = kinds, eval_every, patience
        self.seed, self.show_progress = seed, show_progress

    # ------------------------------------------------------------------ setup
    def _check_params(self):
        _int(self.hidden, "hidden", 1)
        _int(self.layers, "layers", 0)
        _int(self.heads, "heads", 1)
        if self.hidden % self.heads:
            raise ValueError(f"heads ({self.heads}) must divide hidden ({self.hidden})")
        _int(self.max_len, "max_len", 1)
        _float(self.dropout, "dropout", 0.0, 1.0, hi_open=True)
        if self.inner is not None:
            _int(self.inner, "inner", 1)
        _int(self.epochs, "epochs", 0)
        _int(self.batch_size, "batch_size", 1)
        _float(self.lr, "lr", 0.0, 10.0)
        _float(self.weight_decay, "weight_decay", 0.0, 10.0)
        _float(self.max_grad_norm, "max_grad_norm", 0.0, float("inf"))
        _int(self.eval_every, "eval_every", 0)
        _int(self.patience, "patience", 1)
        kinds = (self.kinds,) if isinstance(self.kinds, str) else tuple(self.kinds)
        if not kinds or any(k not in ("rec", "search") for k in kinds):
            raise ValueError(f"kinds must be a non-empty subset of ('rec', 'search'), got {self.kinds!r}")
        return kinds

    def _build(self, n_items):
        cfg = dict(n_items=n_items, max_len=self.max_len, hidden=self.hidden, layers=self.layers,
                   heads=self.heads, inner=self.inner or self.hidden, dropout=float(self.dropout))
        self._cfg = cfg
        self._model = _core.sasrec_new(**cfg)
        self._params, self._grads, _, _ = _core.sasrec_buffers(self._model)
        self._specs = _core.sasrec_tensor_specs(**cfg)
        self.n_items_ = n_items
        # init as BERT/RecBole: N(0, 0.02) weights and embeddings, LN gain 1, biases 0
        rng = np.random.default_rng([self.seed, 0])
        for name, off, shape, decay in self._specs:
            size = int(np.prod(shape))
            view = self._params[off: off + size]
            if name.endswith(".bias"):
                view[:] = 0.0
            elif "ln" in name:  # LayerNorm gains
                view[:] = 1.0
            else:
                view[:] = rng.normal(0.0, 0.02, size).astype(np.float32)
        self._params[: self.hidden] = 0.0  # padding row of the item table

    # ------------------------------------------------------------------ data
    def _sequences(self, dataset, kinds):
        """Per-user training item sequences (train split, chosen kinds, event order)."""
        ev = dataset.events
        keep = ev["split"].to_numpy() == "train"
        keep &= np.isin(ev["kind"].to_numpy(), kinds)
        users = ev["user"].to_numpy()[keep]
        items = ev["item"].to_numpy()[keep]
        bounds = np.searchsorted(users, np.arange(dataset.n_users + 1))
        return [items[bounds[u]: bounds[u + 1]] for u in range(dataset.n_users)]

    def _windows(self, seqs):
        """Left-padded (inputs, targets) int32 arrays (n_windows, max_len) from sequences."""
        T = self.max_len
        ins, outs = [], []
        for s in seqs:
            end = len(s)
            while end >= 2:
                start = max(0, end - T - 1)
                w = s[start:end]
                x = np.zeros(T, np.int32)
                y = np.full(T, IGNORE, np.int32)
                x[T - len(w) + 1:] = w[:-1] + 1
                y[T - len(w) + 1:] = w[1:]
                ins.append(x)
                outs.append(y)
                end = start + 1  # windows overlap by one item: every item is a target once
        if not ins:
            raise ValueError("no user has 2 or more training interactions: nothing to learn")
        return np.stack(ins), np.stack(outs)

    def _pad(self, histories):
        """List of item-index sequences -> (B, max_len) int32 left-padded slots (item + 1)."""
        T = self.max_len
        out = np.zeros((len(histories), T), np.int32)
        for b, h in enumerate(histories):
            h = np.asarray(h)
            if h.ndim != 1:
                raise ValueError(f"histories[{b}] must be a 1-D sequence of item indices")
            if h.size:
                if not np.issubdtype(h.dtype, np.integer):
                    raise TypeError(f"histories[{b}] must hold integer item indices, got {h.dtype}")
                if h.min() < 0 or h.max() >= self.n_items_:
                    raise ValueError(f"histories[{b}] has item indices outside [0, {self.n_items_})")
                h = h[-T:]
                out[b, T - h.size:] = h + 1
        return out

    # ------------------------------------------------------------------ training
    def fit(self, dataset):
        """Trains on dataset's training events; returns self."""
        kinds = self._check_params()
        for attr in ("events", "n_items", "n_users", "examples"):
            if not hasattr(dataset, attr):
                raise TypeError(f"dataset must be a gensar.datasets.Dataset (no .{attr}), got "
                                f"{type(dataset).__name__}")
        self._kinds = kinds
        self.dataset_ = dataset  # evaluate() and score() default to it
        self._build(int(dataset.n_items))
        X, Y = self._windows(self._sequences(dataset, kinds))
        validate = self.eval_every > 0 and len(dataset.examples("rec", "valid", max_history=0)) > 0
        from tqdm.auto import tqdm

        rng = np.random.default_rng([self.seed, 1])
        best, best_params, bad = -1.0, None, 0
        self.history_, self.best_epoch_ = [], self.epochs
        t0 = time.perf_counter()
        bar = tqdm(range(1, self.epochs + 1), disable=not self.show_progress, desc="SASRec",
                   unit="epoch")
        for epoch in bar:
            order = rng.permutation(len(X))
            total, n = 0.0, 0
            for s in range(0, len(X), self.batch_size):
                idx = order[s: s + self.batch_size]
                step = _core.sasrec_step(self._model)
                loss, count = _core.sasrec_forward_backward(
                    self._model, X[idx], Y[idx], True, (self.seed << 32) + step + 1)
                _core.sasrec_adamw(self._model, lr=self.lr, weight_decay=self.weight_decay,
                                   max_grad_norm=self.max_grad_norm)
                total += loss * count
                n += count
            self.loss_ = total / max(n, 1)
            bar.set_postfix(loss=f"{self.loss_:.4f}")
            if validate and epoch % self.eval_every == 0:
                ndcg = self.evaluate("valid", dataset, ks=(10,))["NDCG@10"]
                self.history_.append({"epoch": epoch, "loss": self.loss_, "NDCG@10": ndcg,
                                      "seconds": time.perf_counter() - t0})
                bar.set_postfix(loss=f"{self.loss_:.4f}", val_ndcg10=f"{ndcg:.4f}")
                if ndcg > best:
                    best, best_params, bad, self.best_epoch_ = ndcg, self._params.copy(), 0, epoch
                else:
                    bad += 1
                    if bad >= self.patience:
                        break
        bar.close()
        if best_params is not None:
            self._params[:] = best_params
        self.fit_seconds_ = time.perf_counter() - t0
        return self

    # ------------------------------------------------------------------ inference
    def _check_fitted(self):
        if not hasattr(self, "_model"):
            raise RuntimeError("this SASRec is not fitted; call fit(dataset) first")

    @property
    def item_embeddings_(self) -> np.ndarray:
        """(n_items, hidden) float32 copy of the item table (row i = item index i)."""
        self._check_fitted()
        d = self.hidden
        return self._params[d: d * (self.n_items_ + 1)].reshape(self.n_items_, d).copy()

    def score_histories(self, histories, batch_size=1024) -> np.ndarray:
        """Scores (B, n_items) float32 of every item as the next one after each history
        (a list of item-index sequences, oldest first; empty histories are allowed)."""
        self._check_fitted()
        if isinstance(histories, np.ndarray) and histories.ndim == 2:
            histories = list(histories)
        if not isinstance(histories, (list, tuple)):
            raise TypeError("histories must be a list of item-index sequences")
        if not histories:
            raise ValueError("histories is empty")
        seqs = self._pad(histories)
        out = np.empty((len(seqs), self.n_items_), np.float32)
        for s in range(0, len(seqs), batch_size):
            out[s: s + batch_size] = _core.sasrec_score(self._model, seqs[s: s + batch_size])[0]
        return out

    def recommend(self, histories, k=10, exclude_seen=False) -> np.ndarray:
        """Top-k item indices (B, k) int64, best first, for each history. exclude_seen drops
        the items of the history itself from the ranking."""
        self._check_fitted()
        k = _int(k, "k", 1, self.n_items_)
        scores = self.score_histories(histories)
        if exclude_seen:
            for b, h in enumerate(histories):
                scores[b, np.asarray(h, dtype=np.int64)] = -np.inf
        top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(scores, top, 1), axis=1, kind="stable")
        return np.take_along_axis(top, order, 1).astype(np.int64)

    def _case_histories(self, dataset, examples):
        ev_items = dataset.events["item"].to_numpy()
        kind_ok = np.isin(dataset.events["kind"].to_numpy(), self._kinds)
        return [ev_items[h[kind_ok[h]]] for h in examples["history"]]

    def score(self, task, examples, dataset=None):
        """Scorer interface of gensar.evaluate: scores (B, n_items) for examples (a frame of
        dataset.examples("rec", split)); dataset defaults to the fitted one."""
        self._check_fitted()
        if task != "rec":
            raise ValueError("SASRec scores recommendation cases only (task 'rec'); it has no "
                             "use for a search query")
        dataset = self.dataset_ if dataset is None else dataset
        return self.score_histories(self._case_histories(dataset, examples))

    def evaluate(self, split="test", dataset=None, protocol="full", ks=(5, 10, 20)) -> dict:
        """HR@k and NDCG@k (dict, plus "cases") of next-item recommendation on the
        leave-one-out ``split`` ("valid" or "test") of dataset (default: the fitted one).
        protocol "full" ranks the target among all items, excluding nothing; "sampled" among
        the dataset's 100 candidates (target + 99 items the user never interacted with, drawn
        by popularity; "sampled-uniform": drawn uniformly; see gensar.evaluate)."""
        self._check_fitted()
        dataset = self.dataset_ if dataset is None else dataset
        if getattr(dataset, "n_items", None) != self.n_items_:
            raise ValueError(f"dataset must be a Dataset over the model's {self.n_items_} items")
        from ..evaluate import evaluate_scorer

        table = evaluate_scorer(dataset, lambda t, ex: self.score(t, ex, dataset), tasks=("rec",),
                                split=split, protocols=(protocol,), ks=ks, method="SASRec",
                                seed=self.seed)
        row = table.iloc[0]
        return {c: float(row[c]) for c in table.columns if "@" in c} | {"cases": int(row["cases"])}
