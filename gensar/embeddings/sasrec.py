"""Collaborative item embeddings: a SASRec-style causal transformer over users' item
sequences, trained in C (csrc/nn/sasrec.c) with softmax cross-entropy at every position
and AdamW. It is also the recommendation baseline.

The softmax covers the whole catalogue up to AUTO_FULL_SOFTMAX_ITEMS items; above that
(by default) it is sampled: each slot's target against ``negatives`` items drawn per
batch by popularity (1 + training count) and shared by its slots, every logit corrected
by minus the log of its item's sampling probability (a negative equal to a slot's own
target is left out), because the full softmax costs slots x items per epoch, which grows
with events x items (at Amazon-Electronics size, 62,882 items and a 64-d model: about 40
times the rest of the network's cost per slot). It costs quality: on ml-100k (1,349
items, 30 epochs, validation, sampled NDCG@10) the full softmax gives 0.328, 256
popularity-drawn negatives 0.270, 256 uniform ones without the correction 0.251.

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

import hashlib
import json
import os
import time
from pathlib import Path

import numpy as np

from .. import _core
from .._validate import check_float, check_int

IGNORE = -100
# negatives="auto": the full softmax up to this many items, AUTO_NEGATIVES sampled above
AUTO_FULL_SOFTMAX_ITEMS = 20_000
AUTO_NEGATIVES = 1024


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
    negatives : the loss's softmax: 0 over every item; K > 0 over each slot's target and
        K items drawn by popularity per batch (seeded, corrected: see above); "auto"
        (default) 0 up to AUTO_FULL_SOFTMAX_ITEMS (20,000) items, AUTO_NEGATIVES (1,024) above
    kinds : event kinds treated as interactions ("rec", "search")
    eval_every, patience : validate (full-catalogue NDCG@10 on the "valid" split) every
        eval_every epochs, keep the best parameters, stop after `patience` validations
        without improvement; eval_every=0 trains all epochs and keeps the last parameters
    seed : initialisation, shuffling and dropout; same seed + thread count -> same model

    Fitted attributes: ``item_embeddings_`` (n_items, hidden) float32, ``n_items_``,
    ``history_`` (list of dicts per validation: epoch, loss, NDCG@10), ``best_epoch_``.

    ``save(path)`` writes a fitted model to a directory; ``SASRec.load(path, dataset=None)``
    gives back a model with bit-identical embeddings and scores (it does not resume
    training: see :meth:`load`).
    """

    def __init__(self, hidden=64, layers=2, heads=1, max_len=50, dropout=0.2, inner=None,
                 epochs=200, batch_size=128, lr=1e-3, weight_decay=0.0, max_grad_norm=5.0,
                 negatives="auto", kinds=("rec", "search"), eval_every=5, patience=5, seed=0,
                 show_progress=True):
        self.hidden, self.layers, self.heads, self.max_len = hidden, layers, heads, max_len
        self.dropout, self.inner, self.epochs, self.batch_size = dropout, inner, epochs, batch_size
        self.lr, self.weight_decay, self.max_grad_norm = lr, weight_decay, max_grad_norm
        self.negatives = negatives
        self.kinds, self.eval_every, self.patience = kinds, eval_every, patience
        self.seed, self.show_progress = seed, show_progress

    # ------------------------------------------------------------------ setup
    def _check_params(self):
        check_int("hidden", self.hidden, minimum=1)
        check_int("layers", self.layers, minimum=1)  # the core builds at least one block
        check_int("heads", self.heads, minimum=1)
        if self.hidden % self.heads:
            raise ValueError(f"heads ({self.heads}) must divide hidden ({self.hidden})")
        check_int("max_len", self.max_len, minimum=1)
        if check_float("dropout", self.dropout, minimum=0.0, maximum=1.0) == 1.0:
            raise ValueError("dropout must be < 1 (1 drops everything), got 1.0")
        if self.inner is not None:
            check_int("inner", self.inner, minimum=1)
        check_int("epochs", self.epochs, minimum=0)
        check_int("batch_size", self.batch_size, minimum=1)
        check_float("lr", self.lr, minimum=0.0, maximum=10.0)
        check_float("weight_decay", self.weight_decay, minimum=0.0, maximum=10.0)
        check_float("max_grad_norm", self.max_grad_norm, minimum=0.0)
        if not (isinstance(self.negatives, str) and self.negatives == "auto"):
            if isinstance(self.negatives, str):
                raise TypeError(f"negatives must be 'auto' or an integer >= 0, got {self.negatives!r}")
            check_int("negatives", self.negatives, minimum=0)
        check_int("eval_every", self.eval_every, minimum=0)
        check_int("patience", self.patience, minimum=1)
        check_int("seed", self.seed, minimum=0, maximum=2**32 - 1)  # dropout seeds are seed << 32
        kinds = (self.kinds,) if isinstance(self.kinds, str) else tuple(self.kinds)
        if not kinds or any(k not in ("rec", "search") for k in kinds):
            raise ValueError(f"kinds must be a non-empty subset of ('rec', 'search'), got {self.kinds!r}")
        return kinds

    def _build(self, n_items, init=True):
        cfg = dict(n_items=n_items, max_len=self.max_len, hidden=self.hidden, layers=self.layers,
                   heads=self.heads, inner=self.inner or self.hidden, dropout=float(self.dropout))
        self._cfg = cfg
        self._model = _core.sasrec_new(**cfg)
        self._params, self._grads, _, _ = _core.sasrec_buffers(self._model)
        self._specs = _core.sasrec_tensor_specs(**cfg)
        self.n_items_ = n_items
        if not init:  # load() writes every parameter
            return
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

    def _n_negatives(self, n_items: int) -> int:
        """Sampled negatives per batch for a catalogue of n_items (0: the full softmax)."""
        if self.negatives == "auto":
            return 0 if n_items <= AUTO_FULL_SOFTMAX_ITEMS else AUTO_NEGATIVES
        return int(self.negatives)

    @staticmethod
    def _sampling(targets, n_items: int):
        """The sampled softmax's proposal: (q (n_items,) float64 summing to 1, log q float32),
        q proportional to 1 + each item's count among the training targets."""
        counts = np.bincount(targets[targets != IGNORE], minlength=n_items).astype(np.float64) + 1.0
        q = counts / counts.sum()
        return q, np.log(q).astype(np.float32)

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
        self.catalogue_sha256_ = _catalogue_digest(dataset)  # saved: load() checks a dataset with it
        self._build(int(dataset.n_items))
        X, Y = self._windows(self._sequences(dataset, kinds))
        validate = self.eval_every > 0 and len(dataset.examples("rec", "valid", max_history=0)) > 0
        from tqdm.auto import tqdm

        rng = np.random.default_rng([self.seed, 1])
        self.negatives_ = self._n_negatives(int(dataset.n_items))
        neg_rng = np.random.default_rng([self.seed, 2])  # its own stream: the full softmax's order is unchanged
        q, log_q = self._sampling(Y, int(dataset.n_items)) if self.negatives_ else (None, None)
        best, best_params, bad = -1.0, None, 0
        self.history_, self.best_epoch_ = [], self.epochs
        t0 = time.perf_counter()
        # counted by hand, so an early stop shows the epochs that ran
        bar = tqdm(total=self.epochs, disable=not self.show_progress, desc="SASRec", unit="epoch")
        for epoch in range(1, self.epochs + 1):
            order = rng.permutation(len(X))
            total, n = 0.0, 0
            for s in range(0, len(X), self.batch_size):
                idx = order[s: s + self.batch_size]
                step = _core.sasrec_step(self._model)
                neg = neg_rng.choice(self.n_items_, self.negatives_, p=q).astype(np.int32) if q is not None else None
                loss, count = _core.sasrec_forward_backward(
                    self._model, X[idx], Y[idx], True, (self.seed << 32) + step + 1, negatives=neg, log_q=log_q)
                _core.sasrec_adamw(self._model, lr=self.lr, weight_decay=self.weight_decay,
                                   max_grad_norm=self.max_grad_norm)
                total += loss * count
                n += count
            self.loss_ = total / max(n, 1)
            bar.update(1)
            bar.set_postfix(loss=f"{self.loss_:.4f}", refresh=False)
            if validate and epoch % self.eval_every == 0:
                ndcg = self.evaluate("valid", dataset, ks=(10,))["NDCG@10"]
                self.history_.append({"epoch": epoch, "loss": self.loss_, "NDCG@10": ndcg,
                                      "seconds": time.perf_counter() - t0})
                bar.set_postfix(loss=f"{self.loss_:.4f}", val_ndcg10=f"{ndcg:.4f}", refresh=False)
                if ndcg > best:
                    best, best_params, bad, self.best_epoch_ = ndcg, self._params.copy(), 0, epoch
                else:
                    bad += 1
                    if bad >= self.patience:  # say why the bar stops short of `epochs`
                        bar.set_postfix_str(f"stopped early: best epoch {self.best_epoch_}, "
                                            f"val NDCG@10 {best:.4f}")
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

    def _dataset(self, dataset):
        """dataset, or the fitted one when None (a loaded model may have none)."""
        if dataset is not None:
            return dataset
        if not hasattr(self, "dataset_"):
            raise RuntimeError("this SASRec was loaded without its dataset: pass dataset=..., or load it "
                               "with SASRec.load(path, dataset=ds)")
        return self.dataset_

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
        k = check_int("k", k, minimum=1, maximum=self.n_items_)
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
        dataset = self._dataset(dataset)
        return self.score_histories(self._case_histories(dataset, examples))

    def evaluate(self, split="test", dataset=None, protocol="full", ks=(5, 10, 20)) -> dict:
        """HR@k and NDCG@k (dict, plus "cases") of next-item recommendation on the
        leave-one-out ``split`` ("valid" or "test") of dataset (default: the fitted one).
        protocol "full" ranks the target among all items, excluding nothing; "sampled" among
        the dataset's 100 candidates (target + 99 items the user never interacted with, drawn
        by popularity; "sampled-uniform": drawn uniformly; see gensar.evaluate)."""
        self._check_fitted()
        dataset = self._dataset(dataset)
        if getattr(dataset, "n_items", None) != self.n_items_:
            raise ValueError(f"dataset must be a Dataset over the model's {self.n_items_} items")
        from ..evaluate import evaluate_scorer

        table = evaluate_scorer(dataset, lambda t, ex: self.score(t, ex, dataset), tasks=("rec",),
                                split=split, protocols=(protocol,), ks=ks, method="SASRec",
                                seed=self.seed)
        row = table.iloc[0]
        return {c: float(row[c]) for c in table.columns if "@" in c} | {"cases": int(row["cases"])}

    # ------------------------------------------------------------------ persistence
    # Files of a saved model, relative to its directory; manifest.json lists them all.
    _FILES = ("config.json", "fit_info.json", "model.safetensors")
    _FORMAT, _FORMAT_VERSION = "gensar.SASRec", 1
    _PARAMS = ("hidden", "layers", "heads", "max_len", "dropout", "inner", "epochs", "batch_size", "lr",
               "weight_decay", "max_grad_norm", "negatives", "kinds", "eval_every", "patience", "seed",
               "show_progress")

    def save(self, path) -> None:
        """Writes a fitted model to the directory ``path`` (created if needed):
        config.json (the constructor parameters), fit_info.json (n_items, the
        validation history, a fingerprint of the training catalogue's item ids),
        model.safetensors (float32 parameters under their layout names, the item
        table as ``item_embedding`` (n_items + 1, hidden), row 0 = padding) and
        manifest.json (size and sha256 of each file, written last).

        Every file goes in under a temporary name and is renamed into place, so an
        interrupted save never leaves a directory that loads as a mix of two saves.
        The AdamW moments are not saved (see :meth:`load`)."""
        from .. import __version__
        from .._io import atomic_write, atomic_write_text, save_dir, write_manifest
        from safetensors.numpy import save_file

        self._check_fitted()
        d = save_dir(path, "SASRec.save")
        cfg = {k: getattr(self, k) for k in self._PARAMS}
        cfg["kinds"] = list(self._kinds)
        atomic_write_text(d / "config.json", json.dumps(cfg, indent=1, default=_json_number))
        dataset = getattr(self, "dataset_", None)
        info = {"n_items": int(self.n_items_), "history": getattr(self, "history_", []),
                "best_epoch": getattr(self, "best_epoch_", None), "loss": getattr(self, "loss_", None),
                "fit_seconds": getattr(self, "fit_seconds_", None),
                "dataset_name": getattr(dataset, "name", None),
                "catalogue_sha256": getattr(self, "catalogue_sha256_", None)}
        atomic_write_text(d / "fit_info.json", json.dumps(info, indent=1, default=_json_number))
        tensors = {name: np.ascontiguousarray(self._params[off: off + int(np.prod(shape))].reshape(shape))
                   for name, off, shape, _ in self._specs}
        meta = {"format": "np", "gensar_format": self._FORMAT}
        atomic_write(d / "model.safetensors", lambda tmp: save_file(tensors, str(tmp), metadata=meta))
        write_manifest(d, self._FILES, self._FORMAT, self._FORMAT_VERSION, gensar_version=__version__)

    @classmethod
    def load(cls, path, dataset=None) -> "SASRec":
        """A model saved with :meth:`save`. Its ``item_embeddings_``, ``score``,
        ``score_histories``, ``recommend`` and ``evaluate`` give exactly the saved
        model's results (same thread count). Pass the dataset it was trained on
        (checked: same number of items and the same item ids) for ``score`` /
        ``evaluate`` without a dataset argument.

        Training does not resume: ``fit`` always trains a new model from the saved
        settings (SASRec has no warm start and the AdamW moments are not saved), so
        calling fit() on a loaded model retrains it from scratch.

        Every file is checked against manifest.json (size and sha256) and for
        content; errors name the file at fault."""
        from .._io import verify_manifest
        from safetensors import safe_open

        if not isinstance(path, (str, os.PathLike)):
            raise TypeError(f"path must be a str or os.PathLike, got {type(path).__name__}")
        d = Path(path)
        if not d.is_dir():
            raise FileNotFoundError(f"{d} is not a directory written by SASRec.save"
                                    f"{' (it is a file)' if d.exists() else ''}")
        for f in cls._FILES + ("manifest.json",):
            if not (d / f).is_file():
                raise FileNotFoundError(f"{d / f} is missing; is {d} a directory written by SASRec.save?")
        verify_manifest(d, cls._FORMAT, cls._FORMAT_VERSION, cls._FILES)
        try:
            cfg = json.loads((d / "config.json").read_text(encoding="utf-8"))
            if not isinstance(cfg, dict):
                raise TypeError(f"expected an object, got {type(cfg).__name__}")
            cfg.setdefault("negatives", "auto")  # saved before the setting existed: the same loss
            missing = [k for k in cls._PARAMS if k not in cfg]
            if missing:
                raise KeyError(f"it lacks the setting(s) {missing}")
            self = cls(**cfg)
            self._kinds = self._check_params()
        except (ValueError, TypeError, KeyError, UnicodeDecodeError) as exc:
            raise ValueError(f"{d / 'config.json'} is corrupt or invalid ({type(exc).__name__}: {exc})") from None
        try:
            info = json.loads((d / "fit_info.json").read_text(encoding="utf-8"))
            n_items = check_int("n_items", info["n_items"], minimum=1)
            history = info["history"]
            if not isinstance(history, list):
                raise TypeError("history must be a list")
        except (ValueError, TypeError, KeyError, UnicodeDecodeError) as exc:
            raise ValueError(f"{d / 'fit_info.json'} is corrupt or invalid ({type(exc).__name__}: {exc})") from None
        p = d / "model.safetensors"
        try:
            with safe_open(str(p), framework="np") as f:
                tensors = {k: f.get_tensor(k) for k in f.keys()}
        except Exception as exc:  # safetensors raises its own error types for bad headers
            raise ValueError(f"{p} is not a readable safetensors file (truncated or corrupt?): {exc}") from None
        try:
            self._build(n_items, init=False)
        except ValueError as exc:  # the core refuses the sizes
            raise ValueError(f"{d / 'config.json'} / {d / 'fit_info.json'} describe an invalid model: {exc}") from None
        names = [s[0] for s in self._specs]
        if sorted(tensors) != sorted(names):
            extra, missing = sorted(set(tensors) - set(names)), sorted(set(names) - set(tensors))
            raise ValueError(f"{p} does not hold the tensors of the model in {d / 'config.json'}: "
                             f"missing {missing[:3]}, unexpected {extra[:3]}")
        for name, off, shape, _ in self._specs:  # check all before writing any
            t = tensors[name]
            if t.dtype != np.float32 or t.shape != tuple(shape):
                raise ValueError(f"{p}: tensor {name!r} is {t.dtype} {t.shape}, the model needs float32 "
                                 f"{tuple(shape)}")
            if not np.isfinite(t).all():
                raise ValueError(f"{p}: tensor {name!r} holds NaN or infinite values; the file is corrupt")
        for name, off, shape, _ in self._specs:
            self._params[off: off + int(np.prod(shape))] = tensors[name].ravel()
        self.history_ = history
        self.best_epoch_ = info.get("best_epoch")
        if info.get("loss") is not None:
            self.loss_ = float(info["loss"])
        if info.get("fit_seconds") is not None:
            self.fit_seconds_ = float(info["fit_seconds"])
        self.catalogue_sha256_ = info.get("catalogue_sha256")
        if dataset is not None:
            self._attach_dataset(dataset)
        return self

    def _attach_dataset(self, dataset) -> None:
        """Gives a loaded model its training dataset, refusing another catalogue
        (item indices would point at other items)."""
        for attr in ("events", "n_items", "n_users", "examples"):
            if not hasattr(dataset, attr):
                raise TypeError(f"dataset must be a gensar.datasets.Dataset (no .{attr}), got "
                                f"{type(dataset).__name__}")
        digest = _catalogue_digest(dataset)
        if dataset.n_items != self.n_items_ or (self.catalogue_sha256_ and digest
                                                and digest != self.catalogue_sha256_):
            raise ValueError(f"dataset {getattr(dataset, 'name', '?')!r} does not have the catalogue this "
                             f"model was trained on ({dataset.n_items} items vs {self.n_items_} saved, or "
                             f"other item ids): its scores would point at other items")
        self.dataset_ = dataset


def _json_number(v):
    """JSON fallback for NumPy scalars in settings and histories."""
    if isinstance(v, np.integer):
        return int(v)
    if isinstance(v, np.floating):
        return float(v)
    raise TypeError(f"{type(v).__name__} {v!r} cannot be saved as JSON")


def _catalogue_digest(dataset) -> str | None:
    """sha256 of the dataset's item ids in item-index order (None without them):
    tells the catalogue a model was trained on from another of the same size."""
    items = getattr(dataset, "items", None)
    if items is None or "item_id" not in getattr(items, "columns", ()):
        return None
    h = hashlib.sha256()
    for v in items["item_id"]:
        h.update(str(v).encode("utf-8", "surrogatepass") + b"\0")
    return h.hexdigest()
