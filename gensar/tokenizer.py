"""Text + identifier tokenizer of GenSAR.

Text (instructions, queries, item text) is split by a WordPiece vocabulary that
is trained on the dataset's own text with the `tokenizers` library. Every
identifier code is one atomic token, and each level has its own tokens: code 17
at level a is ``<a_17>``, a different token from ``<b_17>``. Levels are lettered
in this order: the shared levels, then the semantic-specific levels, then the
collaborative-specific levels, so with the reference layout (2 shared, 2 + 2
specific) a semantic ID reads ``<a_3><b_250><c_17><d_9>`` and the same item's
collaborative ID ``<a_3><b_250><e_41><f_0>``. Behaviour tokens mark what a
sequence is: ``<rec_item>``, ``<src_query>``, ``<src_item>``.

Token ids are laid out so that identifier tokens are contiguous:
0 ``<pad>`` (also the decoder start token, as in T5), 1 ``</s>``, 2 ``<unk>``,
3..5 the behaviour tokens, then every level's codes, then the text vocabulary.

User text never becomes a control token. Prompts mix control tokens written by
gensar (identifiers in a history, behaviour tokens) with text from users and
datasets (queries, titles, item text), and the backend matches control tokens
as raw substrings. So every piece of user text goes through :func:`escape_text`
before it is put into a prompt or a text target: it follows each ``<`` with a
space, so ``</s>``, ``<pad>``, ``<a_12>`` or ``<rec_item>`` typed by a user can
no longer match. The escape changes no text token, because the pre-tokenizer
splits ``<`` off as punctuation either way ("<pad>" and "< pad>" both give the
text tokens "<", "pad", ">").

Lone surrogates (U+D800..U+DFFF, e.g. from text decoded with
``errors="surrogateescape"``) cannot be encoded as UTF-8, which the backend
needs; :meth:`Tokenizer.encode` and :meth:`Tokenizer.train` replace each with
U+FFFD (the Unicode replacement character, which the normaliser then drops), the
same outcome as decoding such bytes with ``errors="replace"``.
"""
from __future__ import annotations

import json
import os
import re
import string
from dataclasses import asdict, dataclass
from itertools import chain
from pathlib import Path

import numpy as np

from ._validate import check_int

PAD, EOS, UNK = "<pad>", "</s>", "<unk>"
REC_ITEM, SRC_QUERY, SRC_ITEM = "<rec_item>", "<src_query>", "<src_item>"
BEHAVIOURS = (REC_ITEM, SRC_QUERY, SRC_ITEM)
# What separates the events of a history (GENSAR.md section 3: "; " as in the reference).
HISTORY_SEPARATOR = "; "
# Characters every vocabulary holds even when the training texts lack them: the history
# separator and the other ASCII punctuation the task inputs are written with. Without
# this ";" (absent from item texts, queries and instructions) became <unk>. The BERT
# pre-tokenizer always splits punctuation off as a word of its own, so these need no
# "##" continuation form, and they are added on top of the word budget.
ALWAYS_CHARS = frozenset(string.punctuation)
ID_KINDS = ("semantic", "collaborative")

_SURROGATE = re.compile("[\ud800-\udfff]")


def escape_text(text: str) -> str:
    """User text -> text that cannot contain a control token (see the module
    docstring): each "<" becomes "< ". Gives the same text tokens as `text`."""
    if not isinstance(text, str):
        raise TypeError(f"text must be a string, got {type(text).__name__} {text!r}")
    return text.replace("<", "< ")


def _utf8_safe(text: str) -> str:
    """text with every lone surrogate replaced by U+FFFD (encodable as UTF-8)."""
    return _SURROGATE.sub("\ufffd", text)


@dataclass(frozen=True)
class IDLayout:
    """Codebook sizes of the identifier levels.

    shared: sizes of the levels both identifiers share (their common prefix);
    semantic / collaborative: sizes of each identifier's specific levels.
    """

    shared: tuple = (256, 256)
    semantic: tuple = (256, 256)
    collaborative: tuple = (256, 256)

    def __post_init__(self):
        for name in ("shared", "semantic", "collaborative"):
            v = getattr(self, name)
            if isinstance(v, (str, bytes)) or not hasattr(v, "__iter__"):
                raise TypeError(f"IDLayout.{name} must be a tuple of codebook sizes, got {v!r}")
            sizes = tuple(check_int(f"IDLayout.{name}[{i}]", s, minimum=1) for i, s in enumerate(v))
            object.__setattr__(self, name, sizes)
        if len(self.semantic) != len(self.collaborative):
            raise ValueError("semantic and collaborative IDs must have the same number of levels")
        if len(self.shared) + len(self.semantic) + len(self.collaborative) > 26:
            raise ValueError("at most 26 identifier levels (one letter each)")

    @property
    def length(self) -> int:
        """Tokens in one identifier (without the behaviour token)."""
        return len(self.shared) + len(self.semantic)

    def levels(self, kind: str) -> list:
        """Indices into the letter list of the levels that make up a `kind` ID."""
        if kind not in ID_KINDS:
            raise ValueError(f"kind must be one of {ID_KINDS}, got {kind!r}")
        ls, lp = len(self.shared), len(self.semantic)
        tail = range(ls, ls + lp) if kind == "semantic" else range(ls + lp, ls + 2 * lp)
        return list(range(ls)) + list(tail)

    @property
    def all_sizes(self) -> tuple:
        return self.shared + self.semantic + self.collaborative


class Tokenizer:
    """WordPiece text tokens plus atomic identifier and behaviour tokens.

    Build with :meth:`train`; persist with :meth:`save` / :meth:`load`.
    """

    def __init__(self, backend, layout: IDLayout):
        self.backend = backend
        self.layout = layout
        self.pad_id, self.eos_id, self.unk_id = 0, 1, 2
        self.behaviour_ids = {b: 3 + i for i, b in enumerate(BEHAVIOURS)}
        offsets = np.cumsum((0,) + layout.all_sizes)[:-1] + 3 + len(BEHAVIOURS)
        self.level_offsets = offsets.astype(np.int64)  # first token id of each level
        self.first_text_id = int(3 + len(BEHAVIOURS) + sum(layout.all_sizes))
        for i, tok in enumerate(self._special_tokens()):
            if backend.token_to_id(tok) != i:
                raise ValueError(f"tokenizer vocabulary does not match the layout: {tok} should be id {i}")
        # Space-separated chunk -> its token ids (see _chunks); None: a backend
        # whose pipeline does not split at spaces, which is always encoded whole.
        splits_at_spaces = (type(backend.pre_tokenizer).__name__ == "BertPreTokenizer"
                            and type(backend.normalizer).__name__ in ("BertNormalizer", "NoneType"))
        self._chunk_ids = {} if splits_at_spaces else None

    # ------------------------------------------------------------------ build
    @staticmethod
    def _letters(n: int) -> str:
        return string.ascii_lowercase[:n]

    def _special_tokens(self) -> list:
        return special_tokens(self.layout)

    @classmethod
    def train(cls, texts, layout: IDLayout = IDLayout(), vocab_size: int = 4000,
              min_frequency: int = 2) -> "Tokenizer":
        """Builds a lower-cased WordPiece vocabulary from an iterable of strings
        (item texts, queries, instructions): every character seen (as a word start
        and as a "##" continuation) plus the most frequent whole words, up to about
        `vocab_size` text tokens, plus every ASCII punctuation mark not seen
        (``ALWAYS_CHARS``: the history separator ";" must survive). Words outside it
        split into known pieces.

        The vocabulary is counted here rather than by the `tokenizers` trainer,
        whose choices among equally frequent merges vary from run to run; this
        makes the same texts give the same token ids, so a seeded run repeats."""
        from collections import Counter

        from tokenizers import Tokenizer as Backend
        from tokenizers import decoders, models, normalizers, pre_tokenizers

        check_int("vocab_size", vocab_size, minimum=100)
        if isinstance(texts, str) or not hasattr(texts, "__iter__"):
            raise TypeError(f"texts must be an iterable of strings, got {type(texts).__name__}")
        texts = list(texts)
        for i, t in enumerate(texts):
            if not isinstance(t, str):
                raise TypeError(f"texts[{i}] must be a string, got {type(t).__name__} {t!r}")
        texts = [_utf8_safe(t) for t in texts if t]
        if not texts:
            raise ValueError("train needs at least one non-empty text")
        normalizer = normalizers.BertNormalizer(lowercase=True, clean_text=True,
                                                handle_chinese_chars=True, strip_accents=True)
        pre = pre_tokenizers.BertPreTokenizer()
        counts = Counter(w for t in texts for w, _ in pre.pre_tokenize_str(normalizer.normalize_str(t)))
        chars = sorted({c for w in counts for c in w})
        pieces = chars + ["##" + c for c in chars]
        room = max(0, vocab_size - len(pieces))
        pieces += sorted(ALWAYS_CHARS - set(chars))
        words = [w for w, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
                 if n >= min_frequency and len(w) > 1][:room]
        vocab = {}
        for tok in special_tokens(layout) + pieces + words:
            vocab.setdefault(tok, len(vocab))
        backend = Backend(models.WordPiece(vocab=vocab, unk_token=UNK, max_input_chars_per_word=100))
        backend.normalizer = normalizer
        backend.pre_tokenizer = pre
        backend.decoder = decoders.WordPiece()
        backend.add_special_tokens(special_tokens(layout))
        return cls(backend, layout)

    # ------------------------------------------------------------------ identifiers
    @property
    def vocab_size(self) -> int:
        return self.backend.get_vocab_size()

    def id_token_ids(self, kind: str, codes, behaviour: str | None = None) -> np.ndarray:
        """Token ids of identifiers.

        codes : int array (N, L) of level codes, L = layout.length
        behaviour : optional behaviour token prepended to every row
        returns : int32 (N, L) or (N, L + 1)
        """
        codes = np.asarray(codes)
        if codes.ndim != 2 or codes.shape[1] != self.layout.length:
            raise ValueError(f"codes must have shape (N, {self.layout.length}), got {codes.shape}")
        if not np.issubdtype(codes.dtype, np.integer):
            raise TypeError(f"codes must be integers, got {codes.dtype}")
        levels = self.layout.levels(kind)
        sizes = np.array([self.layout.all_sizes[lv] for lv in levels])
        if codes.size and (codes.min() < 0 or (codes >= sizes).any()):
            raise ValueError(f"codes out of range for the layout: level sizes {sizes.tolist()}")
        ids = (codes + self.level_offsets[levels]).astype(np.int32)
        if behaviour is not None:
            if behaviour not in self.behaviour_ids:
                raise ValueError(f"behaviour must be one of {BEHAVIOURS}, got {behaviour!r}")
            ids = np.concatenate([np.full((len(ids), 1), self.behaviour_ids[behaviour], np.int32), ids], 1)
        return ids

    def id_strings(self, kind: str, codes) -> list:
        """Identifiers as text, e.g. '<a_3><b_250><c_17><d_9>', one per row of codes."""
        ids = self.id_token_ids(kind, codes)
        vocab = self.specials_by_id()
        return ["".join(vocab[i] for i in row) for row in ids.tolist()]

    def specials_by_id(self) -> list:
        return self._special_tokens()

    # ------------------------------------------------------------------ text
    def encode(self, texts, max_length: int, eos: bool = True):
        """Texts -> (input_ids int32 (B, T), attention_mask int32 (B, T)), right-padded
        with <pad> to the longest row (at most max_length); </s> ends each row when eos.
        Longer texts keep their LAST tokens: histories are oldest-first, so the
        newest interactions and the instruction's end survive truncation."""
        if isinstance(texts, str):
            raise TypeError("encode takes a list of strings, not a single string")
        if not hasattr(texts, "__iter__"):
            raise TypeError(f"texts must be a list of strings, got {type(texts).__name__} {texts!r}")
        texts = list(texts)
        if not texts:
            raise ValueError("encode needs at least one text")
        for i, t in enumerate(texts):
            if not isinstance(t, str):
                raise TypeError(f"texts[{i}] must be a string, got {type(t).__name__} {t!r}")
        max_length = check_int("max_length", max_length, minimum=2)
        rows = []
        room = max_length - (1 if eos else 0)
        for ids in self._token_ids(texts):
            ids = ids[-room:] if room > 0 else []
            rows.append(ids + [self.eos_id] if eos else ids)
        lengths = np.fromiter(map(len, rows), np.int64, len(rows))
        T = max(1, int(lengths.max()))
        mask = (np.arange(T) < lengths[:, None]).astype(np.int32)
        out = np.zeros((len(rows), T), np.int32)
        out[mask.astype(bool)] = np.fromiter(chain.from_iterable(rows), np.int32, int(lengths.sum()))
        return out, mask

    def token_counts(self, texts) -> np.ndarray:
        """Tokens of each text as :meth:`encode` makes them, without </s> and never
        cut: int64 (len(texts),)."""
        if isinstance(texts, str):
            raise TypeError("token_counts takes a list of strings, not a single string")
        texts = list(texts)
        for i, t in enumerate(texts):
            if not isinstance(t, str):
                raise TypeError(f"texts[{i}] must be a string, got {type(t).__name__} {t!r}")
        if self._chunk_ids is None:
            return np.array([len(e.ids) for e in self._encode_whole(texts)], np.int64)
        chunked, cache = self._chunks(texts)
        lookup = cache.__getitem__
        return np.array([sum(map(len, map(lookup, chunks))) for chunks in chunked], np.int64)

    # Past this many cached chunks the cache starts over (memory stays bounded on
    # catalogues with millions of distinct words and identifiers).
    _CHUNK_CACHE_LIMIT = 2_000_000

    def _token_ids(self, texts: list) -> list:
        """Token ids (list of int, no </s>) of each string of texts, exactly as the
        backend encodes it (see _chunks)."""
        if self._chunk_ids is None:
            return [e.ids for e in self._encode_whole(texts)]
        chunked, cache = self._chunks(texts)
        lookup = cache.__getitem__
        return [list(chain.from_iterable(map(lookup, chunks))) for chunks in chunked]

    def _chunks(self, texts: list):
        """(texts split at spaces, a chunk -> token ids dict holding every chunk). The
        normalizer works character by character, the pre-tokenizer splits at every
        space and no added token holds one, so a text's ids are the ids of its
        space-separated chunks in order. Each distinct chunk is encoded once:
        histories repeat the same identifiers and words across many examples
        (benchmarks/bench_loop.py times both)."""
        cache = self._chunk_ids
        chunked = [(t if t.isascii() else _utf8_safe(t)).split(" ") for t in texts]
        new = {c for chunks in chunked for c in chunks if c not in cache}
        if len(cache) + len(new) > self._CHUNK_CACHE_LIMIT:
            # A new dict, not clear(): a call in another thread keeps reading the old one.
            self._chunk_ids = cache = {}
            new = {c for chunks in chunked for c in chunks}
        new = list(new)
        if new:
            for c, e in zip(new, self.backend.encode_batch(new, add_special_tokens=False)):
                cache[c] = e.ids
        return chunked, cache

    def _encode_whole(self, texts: list) -> list:
        """The backend's encodings of whole texts (no chunk cache)."""
        texts = [_utf8_safe(t) for t in texts]
        if len(texts) == 1:  # the batch call's thread-pool hand-off costs more than one text
            return [self.backend.encode(texts[0], add_special_tokens=False)]
        return self.backend.encode_batch(texts, add_special_tokens=False)

    @property
    def bag_width(self) -> int:
        """Token slots of an item bag: a behaviour token and one identifier's codes."""
        return 1 + self.layout.length

    def bag_identifiers(self, ids, mask, recency: int = 0):
        """Item bags: each identifier of encoded inputs (a behaviour token ``<rec_item>``
        or ``<src_item>`` and the code tokens after it) folded into one position whose
        slots hold its tokens (the model sums their embeddings: gensar.seq2seq.encoder_input);
        every other token keeps a position of its own, its other slots -1. A history item
        then takes one encoder position instead of layout.length + 1, so the encoder's
        relative positions count events, not tokens.

        recency : R > 0 adds a slot to every identifier bag holding a recency token, id
            vocab_size + min(r, R - 1) with r the number of identifiers after it in its
            row (0: the newest): R input-only tokens past the vocabulary whose
            embeddings act as learned positions counted from the end of the history
            (SASRec's positions); text positions leave that slot empty
        ids, mask : int (B, T) from :meth:`encode` (right-padded, mask 0 on padding)
        returns : ids int32 (B, T', bag_width (+ 1 with recency)), mask int32 (B, T'), T' <= T
        """
        recency = check_int("recency", recency, minimum=0)
        ids, mask = np.asarray(ids), np.asarray(mask)
        if ids.ndim != 2 or ids.shape != mask.shape:
            raise ValueError(f"ids and mask must be 2-D arrays of one shape, got {ids.shape} and {mask.shape}")
        B, T = ids.shape
        K = self.bag_width
        live = mask.astype(bool)
        is_code = (ids >= self.level_offsets[0]) & (ids < self.first_text_id)
        opens = (ids == self.behaviour_ids[REC_ITEM]) | (ids == self.behaviour_ids[SRC_ITEM])
        cont = np.zeros((B, T), bool)  # token t joins the bag of token t - 1
        cont[:, 1:] = is_code[:, 1:] & (is_code[:, :-1] | opens[:, :-1]) & live[:, 1:]
        t = np.arange(T)
        while True:  # a run longer than a bag (never rendered by gensar) opens a new bag
            start = np.maximum.accumulate(np.where(cont, 0, t), axis=1)
            slot = t - start
            over = slot >= K
            if not over.any():
                break
            first = over & ~np.concatenate([np.zeros((B, 1), bool), over[:, :-1]], 1)
            cont[first] = False
        group = np.cumsum(~cont, axis=1) - 1
        Tn = max(1, int((np.where(live, group, -1)).max()) + 1)
        out = np.full((B, Tn, K), -1, np.int32)
        out[:, :, 0] = self.pad_id
        new_mask = np.zeros((B, Tn), np.int32)
        r, c = np.nonzero(live)
        out[r, group[r, c], slot[r, c]] = ids[r, c]
        new_mask[r, group[r, c]] = 1
        if recency:
            is_id = (out[:, :, 1] >= 0) & np.isin(out[:, :, 0], [self.behaviour_ids[REC_ITEM],
                                                                 self.behaviour_ids[SRC_ITEM]])
            after = np.cumsum(is_id[:, ::-1], axis=1)[:, ::-1] - is_id  # identifiers after each position
            slot_r = np.where(is_id, self.vocab_size + np.minimum(after, recency - 1), -1).astype(np.int32)
            out = np.concatenate([out, slot_r[:, :, None]], axis=2)
        return out, new_mask

    def encode_text(self, text: str) -> list:
        """Token ids (list of int) of one piece of user text, escaped first
        (:func:`escape_text`) so it holds text tokens (and <unk>) only."""
        return self.backend.encode(_utf8_safe(escape_text(text)), add_special_tokens=False).ids

    def encode_texts(self, texts) -> list:
        """:meth:`encode_text` for a list of texts (one batched backend call)."""
        texts = [_utf8_safe(escape_text(t)) for t in texts]
        return [e.ids for e in self.backend.encode_batch(texts, add_special_tokens=False)]

    def decode(self, ids) -> str:
        """Token ids -> text; stops at </s> and drops pad / identifier / behaviour tokens.
        ids: integer token ids in [0, vocab_size); anything else raises (a float would
        otherwise be truncated to another token)."""
        a = np.asarray(ids)
        if a.ndim != 1:
            raise ValueError(f"ids must be a 1-D sequence of token ids, got shape {a.shape}")
        if a.size and (a.dtype == np.bool_ or not np.issubdtype(a.dtype, np.integer)):
            raise TypeError(f"ids must be integer token ids, got dtype {a.dtype}")
        if a.size and (a.min() < 0 or a.max() >= self.vocab_size):
            bad = a.min() if a.min() < 0 else a.max()
            raise ValueError(f"ids holds {bad}, not a token id: ids are in [0, {self.vocab_size})")
        ids = [int(i) for i in a]
        if self.eos_id in ids:
            ids = ids[:ids.index(self.eos_id)]
        return self.backend.decode([i for i in ids if i >= self.first_text_id or i == self.unk_id])

    # ------------------------------------------------------------------ persistence
    def save(self, directory) -> None:
        """Writes directory/tokenizer.json (the backend) and id_layout.json, each
        atomically (temporary name, then rename)."""
        from ._io import atomic_write, atomic_write_text

        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        atomic_write(d / "tokenizer.json", lambda tmp: self.backend.save(str(tmp)))
        atomic_write_text(d / "id_layout.json", json.dumps(asdict(self.layout)))

    @classmethod
    def load(cls, directory) -> "Tokenizer":
        """A tokenizer saved with :meth:`save`; errors name the file at fault."""
        from tokenizers import Tokenizer as Backend

        d = Path(directory)
        for f in ("tokenizer.json", "id_layout.json"):
            if not (d / f).is_file():
                raise FileNotFoundError(f"{d / f} is missing; was the tokenizer saved with Tokenizer.save?")
        try:
            raw = json.loads((d / "id_layout.json").read_text(encoding="utf-8"))
            if not isinstance(raw, dict) or set(raw) != {"shared", "semantic", "collaborative"}:
                raise ValueError(f"expected keys shared/semantic/collaborative, got {raw!r}"[:200])
            layout = IDLayout(**{k: tuple(v) for k, v in raw.items()})
        except (ValueError, TypeError, UnicodeDecodeError) as exc:
            raise ValueError(f"{d / 'id_layout.json'} is corrupt: {exc}") from None
        try:
            backend = Backend.from_file(os.fspath(d / "tokenizer.json"))
        except Exception as exc:  # the tokenizers library raises its own Exception type
            raise ValueError(f"{d / 'tokenizer.json'} is corrupt or not a tokenizers file: {exc}") from None
        try:
            return cls(backend, layout)
        except ValueError as exc:
            raise ValueError(f"{d / 'tokenizer.json'} does not match {d / 'id_layout.json'}: {exc}") from None


def special_tokens(layout: IDLayout) -> list:
    """All atomic tokens in id order: pad, eos, unk, behaviours, then level codes."""
    letters = string.ascii_lowercase
    toks = [PAD, EOS, UNK, *BEHAVIOURS]
    for lv, size in enumerate(layout.all_sizes):
        toks += [f"<{letters[lv]}_{c}>" for c in range(size)]
    return toks
