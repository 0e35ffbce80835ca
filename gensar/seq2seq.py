"""T5-style encoder-decoder with its numeric core in C (csrc/nn/t5.c).

    model = Seq2Seq(Seq2SeqConfig(vocab_size=2000))          # GenSAR defaults otherwise
    loss = model.train_step({"input_ids": x, "attention_mask": m, "labels": y})
    logits = model.logits(x, m, decoder_input_ids)             # (B, T_dec, V) float32
    model.save("model.safetensors"); model = Seq2Seq.load("model.safetensors")
    model = Seq2Seq.from_hf_t5(hf_model.state_dict(), hf_model.config.to_dict())
    model.to_hf_t5("t5-dir"); hf = T5ForConditionalGeneration.from_pretrained("t5-dir")

The model computes exactly what HuggingFace's ``T5ForConditionalGeneration``
computes (pre-norm RMSNorm blocks without biases, bucketed relative position
bias, no 1/sqrt(d_kv) attention scaling, relu or gated-gelu feed-forward, tied
LM head with d_model**-0.5 scaling), so HF checkpoints load with
``from_hf_t5`` and give HF's logits.

Parameters, gradients and AdamW moments live in single C buffers; ``params``,
``grads``, ``adam_m``, ``adam_v`` are zero-copy float32 NumPy views of them and
``named_params()`` / ``named_grads()`` give per-tensor views under HF names.

Threads: a model may be shared between Python threads. Its C calls hold a
per-model readers-writer lock while the GIL is released: ``logits``,
``loss_and_grads``, ``train_step`` and ``decode_step`` (which use the model's
activation workspace or write its weights or a cache) take it exclusively and run
one at a time; ``beam_search`` and ``decode_cache`` only read the weights and run
in parallel with each other, never beside a training step. Results equal those
of the same calls made one after another. Writing into ``params`` (or the other
views) from Python while another thread trains is not synchronised: do it
between calls.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from . import _core

__all__ = ["Seq2Seq", "Seq2SeqConfig", "shift_right"]

IGNORE_INDEX = -100
# Version of the safetensors layout Seq2Seq.save writes. 2 added the checksum of
# the tensors in the metadata; version-1 files (no checksum) load with a warning.
FORMAT_VERSION = 2


def _tensor_digest(tensors: Mapping[str, np.ndarray]) -> str:
    """sha256 over every tensor (name, dtype, shape, little-endian bytes) in name
    order: detects bytes changed anywhere in a file's data region."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        a = np.ascontiguousarray(tensors[name])
        h.update(f"{name}|{a.dtype.str}|{a.shape}|".encode())
        h.update(memoryview(a).cast("B"))
    return h.hexdigest()


def _check_model_file(path) -> Path:
    """path as a Path to an existing regular file, else an error naming it."""
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a str or os.PathLike, got {type(path).__name__}")
    p = Path(path)
    if p.is_dir():
        raise IsADirectoryError(f"{p} is a directory, not a Seq2Seq file (.safetensors); a model saved "
                                f"with GenSAR.save loads with gensar.GenSAR.load({str(p)!r})")
    if not p.is_file():
        raise FileNotFoundError(f"{p} does not exist (expected a .safetensors file written by Seq2Seq.save)")
    return p


@dataclass
class Seq2SeqConfig:
    """Sizes of the model, named as HuggingFace's ``T5Config``. Defaults are the
    GenSAR configuration (d_model 128, 4+4 layers, 4 heads of 32, d_ff 512);
    ``vocab_size`` must be given. ``num_decoder_layers=None`` means
    ``num_layers``; ``d_kv=None`` means ``d_model // num_heads``."""

    vocab_size: int | None = None
    d_model: int = 128
    d_kv: int | None = 32
    d_ff: int = 512
    num_layers: int = 4
    num_decoder_layers: int | None = None
    num_heads: int = 4
    relative_attention_num_buckets: int = 32
    relative_attention_max_distance: int = 128
    feed_forward_proj: str = "relu"  # or "gated-gelu"
    tie_word_embeddings: bool = True
    # decoder output * d_model**-0.5 before the LM head; None = tie_word_embeddings (T5).
    # transformers >= 5 always ties T5's head and keeps this flag separately.
    scale_decoder_outputs: bool | None = None
    dropout_rate: float = 0.1
    layer_norm_epsilon: float = 1e-6
    initializer_factor: float = 1.0
    pad_token_id: int = 0
    decoder_start_token_id: int = 0

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | "Seq2SeqConfig") -> "Seq2SeqConfig":
        """Builds a config from a dict with T5Config keys; keys it does not know
        (the rest of ``T5Config.to_dict()``) are ignored. Accepts an object with
        ``to_dict()`` (a ``T5Config``) too."""
        if isinstance(d, Seq2SeqConfig):
            return dataclasses.replace(d)
        if hasattr(d, "to_dict") and not isinstance(d, Mapping):
            d = d.to_dict()
        if not isinstance(d, Mapping):
            raise TypeError(f"config must be a Seq2SeqConfig or a dict, got {type(d).__name__}")
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items()
                      if k in names and (v is not None or k in ("num_decoder_layers", "d_kv"))})

    @classmethod
    def from_hf(cls, d) -> "Seq2SeqConfig":
        """Like from_dict, for a HF T5Config (or its dict) of any transformers version."""
        if hasattr(d, "to_dict") and not isinstance(d, Mapping):
            d = d.to_dict()
        c = cls.from_dict(d)
        if "scale_decoder_outputs" not in d:  # transformers < 5: tied <=> scaled
            c.scale_decoder_outputs = None
        return c

    def resolved(self) -> "Seq2SeqConfig":
        """A copy with defaults filled in and every field checked."""
        c = dataclasses.replace(self)
        if c.vocab_size is None:
            raise ValueError("vocab_size is required (the tokenizer's vocabulary size)")
        if c.num_decoder_layers is None:
            c.num_decoder_layers = c.num_layers
        if c.d_kv is None:
            if c.d_model % c.num_heads:
                raise ValueError(f"d_kv not given and num_heads={c.num_heads} does not divide "
                                 f"d_model={c.d_model}")
            c.d_kv = c.d_model // c.num_heads
        for k in ("vocab_size", "d_model", "d_kv", "d_ff", "num_layers", "num_decoder_layers",
                  "num_heads", "relative_attention_num_buckets", "relative_attention_max_distance"):
            v = getattr(c, k)
            if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 1:
                raise ValueError(f"{k} must be a positive integer, got {v!r}")
            setattr(c, k, int(v))
        proj = str(c.feed_forward_proj).lower()
        if proj not in ("relu", "gated-gelu"):
            raise ValueError(f"feed_forward_proj must be 'relu' or 'gated-gelu', got {c.feed_forward_proj!r}")
        c.feed_forward_proj = proj
        if not 0.0 <= c.dropout_rate < 1.0:
            raise ValueError(f"dropout_rate must be in [0, 1), got {c.dropout_rate}")
        if not c.layer_norm_epsilon > 0:
            raise ValueError(f"layer_norm_epsilon must be > 0, got {c.layer_norm_epsilon}")
        for k in ("pad_token_id", "decoder_start_token_id"):
            v = getattr(c, k)
            if not 0 <= int(v) < c.vocab_size:
                raise ValueError(f"{k}={v} must be a token id in [0, {c.vocab_size})")
        c.tie_word_embeddings = bool(c.tie_word_embeddings)
        if c.scale_decoder_outputs is None:
            c.scale_decoder_outputs = c.tie_word_embeddings
        c.scale_decoder_outputs = bool(c.scale_decoder_outputs)
        return c

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def shift_right(labels: np.ndarray, decoder_start_token_id: int = 0, pad_token_id: int = 0) -> np.ndarray:
    """T5's decoder inputs from labels (B, T): start token, then labels[:, :-1], with
    the ignore index -100 replaced by the pad token. Returns int32 (B, T)."""
    labels = np.asarray(labels)
    dec = np.empty(labels.shape, np.int32)
    dec[:, 0] = decoder_start_token_id
    dec[:, 1:] = labels[:, :-1]
    dec[dec == IGNORE_INDEX] = pad_token_id
    return dec


def _ids(x, name: str, bags: bool = False) -> np.ndarray:
    """A (B, T) int32 C-contiguous copy/view of integer array-like ``x`` ((B, T) or
    (B, T, K) when ``bags``)."""
    a = np.asarray(x)
    if a.dtype == np.bool_ or not np.issubdtype(a.dtype, np.integer):
        raise TypeError(f"{name} must be an integer array (token ids / 0-1 mask), got dtype {a.dtype}")
    if a.ndim != 2 and not (bags and a.ndim == 3):
        raise ValueError(f"{name} must be 2-dimensional (batch, length)"
                         + (" or 3-dimensional (batch, length, tokens per position)" if bags else "")
                         + f", got shape {a.shape}")
    if a.size == 0:
        raise ValueError(f"{name} is empty (shape {a.shape}): pass at least one row and one column")
    if a.dtype != np.int32:
        if a.min() < np.iinfo(np.int32).min or a.max() > np.iinfo(np.int32).max:
            raise ValueError(f"{name} holds values outside the int32 range")
        a = a.astype(np.int32)
    return np.ascontiguousarray(a)


def encoder_input(input_ids, attention_mask) -> tuple[np.ndarray, np.ndarray]:
    """The encoder's input, checked: input_ids (B, T) token ids, or (B, T, K) item bags
    (K token slots per position whose embeddings are summed: slot 0 a token, the others
    a token or -1 = empty; see gensar.tokenizer.Tokenizer.bag_identifiers), and
    attention_mask (B, T) 0/1 or None (all ones). Returns both int32, C-contiguous."""
    ids = _ids(input_ids, "input_ids", bags=True)
    mask = np.ones(ids.shape[:2], np.int32) if attention_mask is None else _ids(attention_mask, "attention_mask")
    if mask.shape != ids.shape[:2]:
        raise ValueError(f"attention_mask shape {mask.shape} does not match input_ids shape {ids.shape}: "
                         "it needs one 0/1 entry per input position (batch, length)")
    return ids, mask


def _read_hf_dir(path) -> tuple[dict, dict]:
    """(tensors, config dict) of a HF T5 directory (config.json + model.safetensors);
    errors name the file at fault."""
    from safetensors import safe_open

    d = Path(path)
    if not d.is_dir():
        raise FileNotFoundError(f"{d} is not a directory with a HF checkpoint"
                                f"{' (it is a file)' if d.exists() else ''}")
    cpath, wpath = d / "config.json", d / "model.safetensors"
    if not cpath.is_file():
        raise FileNotFoundError(f"{cpath} is missing; is {d} a HF T5 checkpoint directory?")
    if not wpath.is_file():
        hint = (" (a sharded checkpoint: load it with transformers and pass model.state_dict())"
                if (d / "model.safetensors.index.json").exists() else "")
        raise FileNotFoundError(f"{wpath} is missing{hint}")
    try:
        config = json.loads(cpath.read_text(encoding="utf-8"))
        if not isinstance(config, dict):
            raise TypeError(f"expected an object, got {type(config).__name__}")
    except (ValueError, TypeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{cpath} is not a valid config ({type(exc).__name__}: {exc})") from None
    if config.get("model_type", "t5") != "t5":
        raise ValueError(f"{cpath} describes a {config.get('model_type')!r} model, not T5")
    try:
        with safe_open(str(wpath), framework="np") as f:
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as exc:  # safetensors raises its own error types for bad headers
        raise ValueError(f"{wpath} is not a readable safetensors file (truncated or corrupt?): {exc}") from None
    return tensors, config


class Seq2Seq:
    """T5-style encoder-decoder trained one batch per ``train_step`` call.

    Parameters
    ----------
    config : Seq2SeqConfig or dict with T5Config keys
    lr : float, learning rate when no ``schedule`` is given (default 1e-3)
    betas, eps, weight_decay : AdamW settings; no weight decay on the norm
        weights and the relative position bias tables
    max_grad_norm : global gradient-norm clipping, >= 0 (0 disables)
    schedule : callable step -> lr (see gensar.schedules), overrides ``lr``
    seed : seeds the parameter initialisation and the dropout masks
    init : initialise the parameters as HF's T5 does (False leaves zeros)
    """

    def __init__(self, config: Seq2SeqConfig | Mapping[str, Any], *, lr: float = 1e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.01, max_grad_norm: float = 1.0,
                 schedule: Callable[[int], float] | None = None, seed: int = 0, init: bool = True):
        self.config = Seq2SeqConfig.from_dict(config).resolved()
        from ._validate import check_float, check_int

        # Settings that would silently wreck training are refused before anything is
        # built: lr=inf or NaN turns every weight to NaN, max_grad_norm=NaN switches
        # clipping off (0 disables it on purpose).
        if not isinstance(betas, (tuple, list)) or len(betas) != 2:
            raise TypeError(f"betas must be a pair (beta1, beta2), got {betas!r}")
        self.lr = check_float("lr", lr, minimum=0.0)
        self.betas = tuple(check_float(f"betas[{i}]", b, minimum=0.0, maximum=1.0, strict_max=True)
                           for i, b in enumerate(betas[:2]))
        self.eps = check_float("eps", eps, minimum=0.0, strict_min=True)
        self.weight_decay = check_float("weight_decay", weight_decay, minimum=0.0)
        # inf: no clipping
        self.max_grad_norm = check_float("max_grad_norm", max_grad_norm, minimum=0.0, allow_inf=True)
        check_int("seed", seed, minimum=0)
        if schedule is not None and not callable(schedule):
            raise TypeError(f"schedule must be a callable step -> lr or None, got {type(schedule).__name__}")
        c = self.config
        self._model = _core.t5_new(
            vocab_size=c.vocab_size, d_model=c.d_model, d_kv=c.d_kv, d_ff=c.d_ff,
            num_layers=c.num_layers, num_decoder_layers=c.num_decoder_layers,
            num_heads=c.num_heads, relative_attention_num_buckets=c.relative_attention_num_buckets,
            relative_attention_max_distance=c.relative_attention_max_distance,
            gated_gelu=c.feed_forward_proj == "gated-gelu",
            tie_word_embeddings=c.tie_word_embeddings, layer_norm_epsilon=c.layer_norm_epsilon,
            dropout_rate=c.dropout_rate, scale_decoder_outputs=c.scale_decoder_outputs)
        self.params, self.grads, self.adam_m, self.adam_v = _core.t5_buffers(self._model)
        self._tensors = {name: (off, tuple(shape), bool(decay))
                         for name, off, shape, decay in _core.t5_tensors(self._model)}
        self.schedule = schedule
        self.seed = int(seed)
        self.last_grad_norm = float("nan")
        if init:
            self.init_weights(self.seed)

    # ------------------------------------------------------------ parameters
    def _views(self, buf: np.ndarray) -> dict[str, np.ndarray]:
        out = {}
        for name, (off, shape, _) in self._tensors.items():
            n = math.prod(shape)
            out[name] = buf[off:off + n].reshape(shape)
        return out

    def named_params(self) -> dict[str, np.ndarray]:
        """HF tensor name -> zero-copy view into ``params`` (writes go to the model)."""
        return self._views(self.params)

    def named_grads(self) -> dict[str, np.ndarray]:
        """HF tensor name -> zero-copy view into ``grads`` (of the last step)."""
        return self._views(self.grads)

    def tensor_info(self) -> dict[str, tuple[int, tuple[int, ...], bool]]:
        """HF tensor name -> (offset in floats, shape, weight decay applies)."""
        return dict(self._tensors)

    @property
    def num_params(self) -> int:
        return int(self.params.size)

    @property
    def step(self) -> int:
        """AdamW updates taken so far."""
        return _core.t5_step(self._model)

    def state_dict(self) -> dict[str, np.ndarray]:
        """Everything training needs to resume exactly: weights, AdamW moments and
        the step count (which also seeds the dropout masks). Copies."""
        return {"params": self.params.copy(), "adam_m": self.adam_m.copy(),
                "adam_v": self.adam_v.copy(), "step": np.array([self.step], np.int64)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restores a state_dict() in place, atomically: every entry is checked
        (names, float32 dtype, shape, finite values, adam_v >= 0, an integer
        step >= 0) before anything is written, so a bad state raises ValueError /
        TypeError naming the entry and leaves the model as it was."""
        if not isinstance(state, Mapping):
            raise TypeError(f"state must be a dict from state_dict(), got {type(state).__name__}")
        expected = ("params", "adam_m", "adam_v", "step")
        missing = [k for k in expected if k not in state]
        unknown = [k for k in state if k not in expected]
        if missing or unknown:
            raise ValueError(f"state must have exactly the keys {list(expected)}; missing {missing}, "
                             f"unknown {unknown}")
        checked = {}
        for key in ("params", "adam_m", "adam_v"):
            src = state[key]
            if hasattr(src, "detach"):  # a torch tensor
                src = src.detach().cpu().numpy()
            src = np.asarray(src)
            if src.dtype != np.float32:
                raise TypeError(f"state {key!r} has dtype {src.dtype}; it must be float32 "
                                "(as state_dict() returns it)")
            if src.shape != self.params.shape:
                raise ValueError(f"state {key!r} has shape {src.shape}, the model needs {self.params.shape}")
            if not np.isfinite(src).all():
                raise ValueError(f"state {key!r} holds {int((~np.isfinite(src)).sum())} non-finite values")
            if key == "adam_v" and (src < 0).any():
                raise ValueError("state 'adam_v' holds negative values; a second moment is >= 0")
            checked[key] = src
        step = np.asarray(state["step"])
        if step.size != 1 or not np.issubdtype(step.dtype, np.integer) or step.dtype == np.bool_:
            raise ValueError(f"state 'step' must be one integer, got {state['step']!r}")
        step = int(step.ravel()[0])
        if not 0 <= step < 2**62:
            raise ValueError(f"state 'step' must be >= 0, got {step}")
        # Everything is valid: now write (nothing below can fail on the data).
        for key, src in checked.items():
            getattr(self, key)[...] = src
        _core.t5_set_step(self._model, step)

    def init_weights(self, seed: int = 0) -> None:
        """HF T5's initialisation (``T5PreTrainedModel._init_weights``), from a
        NumPy generator seeded with ``seed``; resets the optimizer state."""
        c = self.config
        f = c.initializer_factor
        rng = np.random.default_rng(seed)
        for name, view in self.named_params().items():
            if "layer_norm" in name:
                std = None
            elif name in ("shared.weight", "lm_head.weight"):
                std = f * 1.0
            elif name.endswith(".q.weight"):
                std = f * (c.d_model * c.d_kv) ** -0.5
            elif name.endswith((".k.weight", ".v.weight", "relative_attention_bias.weight")):
                std = f * c.d_model ** -0.5
            elif name.endswith(".o.weight"):
                std = f * (c.num_heads * c.d_kv) ** -0.5
            elif ".wi" in name:
                std = f * c.d_model ** -0.5
            elif name.endswith(".wo.weight"):
                std = f * c.d_ff ** -0.5
            else:  # pragma: no cover - every tensor is named above
                raise AssertionError(name)
            if std is None:
                view[...] = 1.0
            else:
                view[...] = rng.standard_normal(view.shape, dtype=np.float32) * np.float32(std)
        self.adam_m[:] = 0
        self.adam_v[:] = 0
        _core.t5_set_step(self._model, 0)

    # ----------------------------------------------------------------- batches
    def _batch(self, input_ids, attention_mask, decoder_input_ids=None, labels=None):
        ids, mask = encoder_input(input_ids, attention_mask)
        lab = None
        if labels is not None:
            lab = _ids(labels, "labels")
            if lab.shape[0] != ids.shape[0]:
                raise ValueError(f"labels has {lab.shape[0]} rows but input_ids has {ids.shape[0]}")
            # Checked here: once shifted into decoder_input_ids, a bad label would be
            # reported under that name.
            V = self.config.vocab_size
            bad = (lab != IGNORE_INDEX) & ((lab < 0) | (lab >= V))
            if bad.any():
                r, t = map(int, np.argwhere(bad)[0])
                raise ValueError(f"labels[{r}, {t}] = {int(lab[r, t])}: labels must be token ids in "
                                 f"[0, {V}) or {IGNORE_INDEX} (ignored)")
        if decoder_input_ids is None:
            if lab is None:
                raise ValueError("pass decoder_input_ids or labels")
            dec = shift_right(lab, self.config.decoder_start_token_id, self.config.pad_token_id)
        else:
            dec = _ids(decoder_input_ids, "decoder_input_ids")
        if dec.shape[0] != ids.shape[0]:
            raise ValueError(f"decoder_input_ids has {dec.shape[0]} rows but input_ids has {ids.shape[0]}")
        if lab is not None and lab.shape != dec.shape:
            raise ValueError(f"labels shape {lab.shape} does not match decoder_input_ids shape {dec.shape}")
        return ids, mask, dec, lab

    @staticmethod
    def _get(batch: Mapping[str, Any], key: str, required: bool = True):
        if not isinstance(batch, Mapping):
            raise TypeError(f"batch must be a dict of arrays, got {type(batch).__name__}")
        if key not in batch:
            if required:
                raise KeyError(f"batch has no {key!r}; it needs input_ids, labels and optionally "
                               "attention_mask and decoder_input_ids")
            return None
        return batch[key]

    @classmethod
    def _allowed(cls, batch: Mapping[str, Any]):
        """The batch's optional ``allowed`` mask (B, T_dec, vocab_size): bool or uint8,
        True where a position's softmax may put mass (the constrained loss)."""
        a = cls._get(batch, "allowed", False)
        if a is None:
            return None
        a = np.asarray(a)
        if a.dtype == np.bool_:
            a = a.view(np.uint8)
        return np.ascontiguousarray(a)  # dtype and shape are checked by the core, by name

    def logits(self, input_ids, attention_mask=None, decoder_input_ids=None) -> np.ndarray:
        """Teacher-forced logits (B, T_dec, vocab_size) float32, dropout off.
        input_ids (B, T_in) or item bags (B, T_in, K) (see encoder_input), attention_mask
        (B, T_in), decoder_input_ids (B, T_dec) integers."""
        if decoder_input_ids is None:
            raise ValueError("decoder_input_ids is required (start with decoder_start_token_id)")
        ids, mask, dec, _ = self._batch(input_ids, attention_mask, decoder_input_ids)
        return _core.t5_logits(self._model, ids, mask, dec)

    def loss_and_grads(self, batch: Mapping[str, Any], dropout: bool = False, seed: int = 0) -> float:
        """Mean token loss of ``batch``; fills ``grads`` with its gradient. No update."""
        ids, mask, dec, lab = self._batch(self._get(batch, "input_ids"),
                                          self._get(batch, "attention_mask", False),
                                          self._get(batch, "decoder_input_ids", False),
                                          self._get(batch, "labels"))
        return _core.t5_forward_backward(self._model, ids, mask, dec, lab, dropout=dropout, seed=seed,
                                         allowed=self._allowed(batch))

    def train_step(self, batch: Mapping[str, Any], lr: float | None = None) -> float:
        """One AdamW step on ``batch`` (dict: input_ids, attention_mask, labels with
        -100 = ignored, optional decoder_input_ids, else labels shifted right, optional
        allowed (B, T_dec, vocab_size) bool: each position's softmax over its True tokens
        only, the trie-constrained loss).
        Returns the mean token loss before the update. ``lr`` overrides the
        schedule / constant learning rate for this step."""
        ids, mask, dec, lab = self._batch(self._get(batch, "input_ids"),
                                          self._get(batch, "attention_mask", False),
                                          self._get(batch, "decoder_input_ids", False),
                                          self._get(batch, "labels"))
        lr = self._step_lr(lr)
        loss, norm = _core.t5_train_step(
            self._model, ids, mask, dec, lab, lr=lr, beta1=self.betas[0],
            beta2=self.betas[1], eps=self.eps, weight_decay=self.weight_decay,
            max_grad_norm=self.max_grad_norm, seed=self.seed, allowed=self._allowed(batch))
        self.last_grad_norm = norm
        return loss

    def _step_lr(self, lr) -> float:
        """The learning rate of the next step: ``lr`` if given, else the schedule's or
        the constant one; checked finite and >= 0."""
        source = "the lr argument" if lr is not None else "the schedule" if self.schedule else "lr"
        if lr is None:
            lr = self.schedule(self.step) if self.schedule is not None else self.lr
        try:
            lr = float(lr)
        except (TypeError, ValueError):
            raise TypeError(f"the learning rate from {source} must be a number, got {lr!r}") from None
        if not (math.isfinite(lr) and lr >= 0):
            raise ValueError(f"the learning rate from {source} is {lr} at step {self.step}; "
                             f"it must be finite and >= 0")
        return lr

    # The two halves of train_step, for data-parallel training (gensar.distributed):
    # train_grads(batch) then apply_grads(lr) is train_step(batch, lr), bit for bit;
    # in between, grad_buffer may be summed over processes.
    def train_grads(self, batch: Mapping[str, Any], dropout_seed: int | None = None) -> float:
        """Forward + backward of ``train_step`` (the same dropout masks, fixed by the
        seed and ``step``; ``dropout_seed`` replaces the seed for the masks): fills
        ``grads`` with the gradient of the mean token loss of ``batch``; returns that
        loss. No update."""
        ids, mask, dec, lab = self._batch(self._get(batch, "input_ids"),
                                          self._get(batch, "attention_mask", False),
                                          self._get(batch, "decoder_input_ids", False),
                                          self._get(batch, "labels"))
        seed = self.seed if dropout_seed is None else dropout_seed
        return _core.t5_train_grads(self._model, ids, mask, dec, lab, seed=seed, allowed=self._allowed(batch))

    def apply_grads(self, lr: float | None = None) -> float:
        """Clipping + AdamW of ``train_step`` on ``grads`` as they are now; returns the
        gradient norm before clipping (also ``last_grad_norm``)."""
        lr = self._step_lr(lr)
        self.last_grad_norm = _core.t5_apply_grads(
            self._model, lr=lr, beta1=self.betas[0], beta2=self.betas[1], eps=self.eps,
            weight_decay=self.weight_decay, max_grad_norm=self.max_grad_norm)
        return self.last_grad_norm

    @property
    def grad_buffer(self) -> np.ndarray:
        """float32 view (num_params + 1,) of the C gradient buffer: ``grads`` followed by
        one slot the core never touches (a data-parallel step puts its share of the
        loss there, so one allreduce sums gradients and loss together)."""
        return _core.t5_grad_buffer(self._model)

    # ------------------------------------------------------- cached decoding
    def decode_cache(self, input_ids, attention_mask=None, rows_per_input: int = 1,
                     max_steps: int = 32):
        """Encodes the inputs once; returns a cache capsule for ``decode_step``."""
        ids, mask = encoder_input(input_ids, attention_mask)
        # passed as given: the core refuses 2.9 or True (rather than truncating) and names them
        return _core.t5_cache_new(self._model, ids, mask, rows_per_input, max_steps)

    def decode_step(self, cache, tokens) -> np.ndarray:
        """Feeds one token per cache row; returns next-token logits (rows, vocab).
        tokens: (rows,) integer token ids in [0, vocab_size); floats (3.7) and
        ids beyond int32 (2**32 + 5) are refused, never truncated or wrapped."""
        t = np.asarray(tokens)
        if t.dtype == np.bool_ or not np.issubdtype(t.dtype, np.integer):
            raise TypeError(f"tokens must be integer token ids, got dtype {t.dtype}")
        if t.ndim != 1:
            raise ValueError(f"tokens must be 1-D (one token per cache row), got shape {t.shape}")
        V = self.config.vocab_size
        if t.size and (t.min() < 0 or t.max() >= V):
            bad = t.min() if t.min() < 0 else t.max()
            raise ValueError(f"tokens contains {bad}; token ids must be in [0, {V})")
        return _core.t5_decode_step(cache, np.ascontiguousarray(t, dtype=np.int32))

    def beam_search(self, input_ids, attention_mask, trie_or_candidates, num_beams: int = 30,
                    top_k: int | None = None, batch_size: int | None = None, renormalise: bool = False):
        """Trie-constrained beam search: (items (B, top_k) int64, scores (B, top_k)
        float32), best first. See gensar.decode.beam_search."""
        from .decode import beam_search

        return beam_search(self, input_ids, attention_mask, trie_or_candidates, num_beams, top_k,
                           batch_size, renormalise)

    # ------------------------------------------------------------ save / load
    def save(self, path) -> None:
        """Writes the parameters (HF names) to a safetensors file, the config, the
        step, the format version and a sha256 of the tensors in its metadata.

        The file is written under a temporary name in the same directory and then
        renamed over ``path`` (os.replace), so an interrupted save leaves the old
        file or none, never half a file."""
        from safetensors.numpy import save_file

        p = Path(path)
        if p.is_dir():
            raise IsADirectoryError(f"{p} is a directory; Seq2Seq.save writes one file (e.g. {p / 'model.safetensors'})")
        tensors = {k: np.ascontiguousarray(v) for k, v in self.named_params().items()}
        meta = {"gensar_config": json.dumps(self.config.to_dict()), "format": "np",
                "gensar_step": str(self.step), "gensar_format_version": str(FORMAT_VERSION),
                "gensar_sha256": _tensor_digest(tensors)}
        from ._io import atomic_write

        atomic_write(p, lambda tmp: save_file(tensors, str(tmp), metadata=meta))

    @classmethod
    def load(cls, path, **kwargs) -> "Seq2Seq":
        """A model from a file written by ``save``; kwargs go to the constructor
        (optimizer settings).

        Raises, naming the file (and tensor), when the file is missing, is a
        directory, is not a safetensors file, has a broken config, holds tensors
        that are not float32 or not finite, or whose bytes no longer match the
        checksum saved with them. Files of format version 1 (no checksum) load
        with a warning."""
        from safetensors import safe_open

        p = _check_model_file(path)
        try:
            with safe_open(str(p), framework="np") as f:
                meta = f.metadata() or {}
                tensors = {k: f.get_tensor(k) for k in f.keys()}
        except Exception as exc:  # safetensors raises its own error types for bad headers
            raise ValueError(f"{p} is not a readable safetensors file (truncated or corrupt?): {exc}") from None
        if "gensar_config" not in meta:
            raise ValueError(f"{p} has no gensar_config metadata: not written by Seq2Seq.save "
                             "(for a HF checkpoint use Seq2Seq.from_hf_t5)")
        try:
            cfg = json.loads(meta["gensar_config"])
        except ValueError as exc:
            raise ValueError(f"{p}: the gensar_config metadata is not valid JSON ({exc})") from None
        version = meta.get("gensar_format_version", "1")
        if version not in ("1", str(FORMAT_VERSION)):
            raise ValueError(f"{p} has format version {version!r}; this gensar reads versions 1 to "
                             f"{FORMAT_VERSION} (upgrade gensar)")
        for k, t in tensors.items():
            if t.dtype != np.float32:
                raise ValueError(f"{p}: tensor {k!r} has dtype {t.dtype}; Seq2Seq files hold float32 tensors")
            if not np.isfinite(t).all():
                raise ValueError(f"{p}: tensor {k!r} holds {int((~np.isfinite(t)).sum())} NaN/inf value(s); "
                                 "the file is corrupt")
        if "gensar_sha256" in meta:
            if _tensor_digest(tensors) != meta["gensar_sha256"]:
                raise ValueError(f"{p}: the tensor data does not match the checksum saved with it; "
                                 "the file was changed or corrupted after saving")
        else:
            warnings.warn(f"{p} was saved before gensar stored checksums (format version 1): its "
                          "integrity cannot be verified; save it again to add one", stacklevel=2)
        try:
            model = cls(cfg, init=False, **kwargs)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{p}: the saved gensar_config is invalid: {exc}") from None
        try:
            model._assign(tensors, strict=True)
        except ValueError as exc:
            raise ValueError(f"{p}: {exc}") from None
        return model

    def _assign(self, tensors: Mapping[str, Any], strict: bool) -> None:
        """Copies named tensors into the parameters; everything is checked (names,
        shapes, finite values) before the first write, so a bad tensor leaves the
        parameters as they were."""
        views = self.named_params()
        aliases = {"encoder.embed_tokens.weight", "decoder.embed_tokens.weight"}
        if self.config.tie_word_embeddings:
            aliases.add("lm_head.weight")
        unknown = [k for k in tensors if k not in views and k not in aliases]
        if strict and unknown:
            raise ValueError(f"{len(unknown)} tensors do not belong to this architecture, e.g. "
                             f"{unknown[:3]}; check num_layers / feed_forward_proj / tie_word_embeddings")
        missing = [k for k in views if k not in tensors]
        if missing:
            raise ValueError(f"{len(missing)} tensors are missing, e.g. {missing[:3]}")
        arrays = {}
        for k, view in views.items():
            t = tensors[k]
            if hasattr(t, "detach"):  # a torch tensor
                t = t.detach().cpu().float().numpy()
            a = np.asarray(t, dtype=np.float32)
            if a.shape != view.shape:
                raise ValueError(f"{k} has shape {a.shape}, this model expects {view.shape}")
            if not np.isfinite(a).all():
                raise ValueError(f"{k} holds NaN or infinite values")
            arrays[k] = a
        for k, view in views.items():
            view[...] = arrays[k]

    # -------------------------------------------------------------- HF layout
    @classmethod
    def from_hf_t5(cls, state_dict, config=None, **kwargs) -> "Seq2Seq":
        """A model from a HuggingFace T5 checkpoint: either a state dict (torch
        tensors or NumPy arrays named as ``T5ForConditionalGeneration.state_dict()``)
        with its config (a dict with T5Config keys or a ``T5Config``), or the path of
        a directory holding config.json and model.safetensors (as written by
        ``to_hf_t5(path)`` or ``save_pretrained``; ``config``, if given, replaces
        config.json). Sharded checkpoints are not read: load those with
        transformers and pass ``model.state_dict()``."""
        source = None
        if isinstance(state_dict, (str, os.PathLike)):
            source = Path(state_dict)
            state_dict, file_config = _read_hf_dir(source)
            config = file_config if config is None else config
        elif config is None:
            raise TypeError("config is required with a state dict (a T5Config or its dict)")
        try:
            model = cls(Seq2SeqConfig.from_hf(config), init=False, **kwargs)
            model._assign(state_dict, strict=True)
        except ValueError as exc:
            if source is None:
                raise
            raise ValueError(f"{source}: {exc}") from None
        return model

    def hf_state_dict(self) -> dict[str, np.ndarray]:
        """The parameters as a HF ``T5ForConditionalGeneration`` state dict of
        float32 NumPy copies (tied embeddings appear under every HF name)."""
        out = {k: v.copy() for k, v in self.named_params().items()}
        out["encoder.embed_tokens.weight"] = out["shared.weight"].copy()
        out["decoder.embed_tokens.weight"] = out["shared.weight"].copy()
        if self.config.tie_word_embeddings:
            out["lm_head.weight"] = out["shared.weight"].copy()
        return out

    def to_hf_t5(self, path=None):
        """Exports the model for HuggingFace transformers, the inverse of ``from_hf_t5``.

        With ``path``: writes the directory ``path`` (created if needed) with
        config.json (``T5Config``, ``architectures = ["T5ForConditionalGeneration"]``)
        and model.safetensors (float32, HF tensor names), each atomically, so that
        ``T5ForConditionalGeneration.from_pretrained(path)`` loads it and computes
        this model's logits, and ``Seq2Seq.from_hf_t5(path)`` gives it back exactly.
        Returns the directory as a Path. As ``save_pretrained`` does, tied
        embeddings are written once, as ``shared.weight``; an untied LM head is
        written as ``lm_head.weight``. The LM-head scaling (d_model**-0.5 on the
        decoder output) is stated by ``tie_word_embeddings`` as T5 reads it, and by
        ``scale_decoder_outputs`` when it differs: such a model (tied and unscaled,
        or untied and scaled) needs transformers >= 5, which reads that key; older
        versions scale exactly when the head is tied.

        Without ``path``: returns ``hf_state_dict()`` (kept for older callers)."""
        if path is None:
            return self.hf_state_dict()
        from safetensors.numpy import save_file

        from ._io import atomic_write, atomic_write_text, save_dir

        if not isinstance(path, (str, os.PathLike)):  # before the work below; save_dir checks the rest
            raise TypeError(f"path must be a str or os.PathLike, got {type(path).__name__}")
        tensors = {k: np.ascontiguousarray(v) for k, v in self.named_params().items()}
        for k, t in tensors.items():  # a diverged model would load in HF as silent NaN output
            if not np.isfinite(t).all():
                raise ValueError(f"tensor {k!r} holds {int((~np.isfinite(t)).sum())} NaN/inf value(s); "
                                 "refusing to export a broken model")
        d = save_dir(path, "to_hf_t5")
        cfg = {"architectures": ["T5ForConditionalGeneration"], "model_type": "t5",
               "is_encoder_decoder": True, **self.hf_config()}
        atomic_write_text(d / "config.json", json.dumps(cfg, indent=1))
        # transformers refuses safetensors files without format "pt" in the metadata
        atomic_write(d / "model.safetensors",
                     lambda tmp: save_file(tensors, str(tmp), metadata={"format": "pt"}))
        return d

    def hf_config(self) -> dict:
        """T5Config keyword arguments describing this model."""
        c = self.config
        d = {k: getattr(c, k) for k in (
            "vocab_size", "d_model", "d_kv", "d_ff", "num_layers", "num_decoder_layers",
            "num_heads", "relative_attention_num_buckets", "relative_attention_max_distance",
            "dropout_rate", "layer_norm_epsilon", "initializer_factor", "feed_forward_proj",
            "tie_word_embeddings", "pad_token_id", "decoder_start_token_id")}
        if c.scale_decoder_outputs != c.tie_word_embeddings:
            d["scale_decoder_outputs"] = c.scale_decoder_outputs
        return d

    def __repr__(self) -> str:
        c = self.config
        return (f"Seq2Seq(vocab={c.vocab_size}, d_model={c.d_model}, layers={c.num_layers}+"
                f"{c.num_decoder_layers}, heads={c.num_heads}x{c.d_kv}, d_ff={c.d_ff}, "
                f"ffn={c.feed_forward_proj}, tied={c.tie_word_embeddings}, params={self.num_params})")
