"""Constrained decoding: the prefix trie of item identifiers and beam search over it.

Every answer of GenSAR must be a real item, so decoding only follows paths of a
trie built from the identifiers (token ids) of the catalogue. Two ways to say
which items are allowed:

* ``Trie(id_sequences)``: the whole catalogue, one trie shared by every input
  (full-catalogue ranking);
* ``CandidateSets(id_sequences, candidates)``: per input its own candidates (the
  sampled protocol: target + 99 negatives). The C core builds one tiny trie per
  input from the rows of the shared id table, so no Python structure is built per
  test case.

Scores are summed natural-log probabilities of the identifier tokens, each
normalised over the model's FULL vocabulary (a masked log-softmax, as HF generate
with a prefix constraint), no length penalty, no end token. With
``beam_search(..., renormalise=...)`` each token is normalised over the tokens
the trie allows after its prefix instead (the catalogue's, when a Trie is given:
what a model trained with GenSARConfig.constrained_softmax learnt). Equal scores
rank the lexicographically smaller identifier (token-id path) first.
"""
import warnings

import numpy as np

from . import _core

_DUP_POLICIES = {"error": 0, "first": 1, "warn": 1}

__all__ = ["Trie", "CandidateSets", "beam_search"]


def _as_id_table(id_sequences, name="id_sequences"):
    try:
        a = np.asarray(id_sequences)
    except ValueError:  # NumPy refuses ragged nested lists
        raise ValueError(f"{name} must be a rectangular (n_items, id_length) table: its rows differ "
                         f"in length (every identifier needs the same number of tokens)") from None
    if a.dtype == object:
        raise ValueError(f"{name} must be a rectangular (n_items, id_length) table of integers; got "
                         f"rows of different lengths or non-numbers")
    if a.ndim != 2:
        raise ValueError(f"{name} must be 2-D (n_items, id_length), got shape {a.shape}")
    if a.shape[0] == 0 or a.shape[1] == 0:
        raise ValueError(f"{name} is empty (shape {a.shape})")
    if not np.issubdtype(a.dtype, np.integer):
        raise TypeError(f"{name} must hold integer token ids, got dtype {a.dtype}")
    if a.size and (a.min() < 0 or a.max() > np.iinfo(np.int32).max):
        bad = a.min() if a.min() < 0 else a.max()
        raise ValueError(f"{name} contains token id {bad}; token ids must be in [0, 2**31)")
    return np.ascontiguousarray(a, dtype=np.int32)


def _token_path(x, name):
    """A 1-D int64 array of the integer token ids in ``x``. Floats (3.7), bools and
    strings are refused (TypeError) rather than truncated; values are not wrapped."""
    a = np.asarray(x)
    if a.size == 0:
        return np.zeros(0, np.int64)
    if a.dtype == np.bool_ or not np.issubdtype(a.dtype, np.integer):
        if a.dtype == object:  # Python ints beyond int64 (2**64 + 5): never a valid token
            if all(isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))
                   for v in a.ravel()):
                return np.array([min(max(int(v), -1), 2**40) for v in a.ravel()], np.int64)
        raise TypeError(f"{name} must hold integer token ids, got dtype {a.dtype}")
    if a.dtype == np.uint64 and a.max() > np.iinfo(np.int64).max:
        a = np.minimum(a, np.uint64(2**40))  # out of range either way; keep it out of range
    return a.astype(np.int64).reshape(-1)


def _dup_code(on_duplicate):
    if on_duplicate not in _DUP_POLICIES:
        raise ValueError(f"on_duplicate must be one of {sorted(_DUP_POLICIES)}, got {on_duplicate!r}")
    return _DUP_POLICIES[on_duplicate]


class Trie:
    """Prefix trie of item identifiers, built in C.

    Parameters
    ----------
    id_sequences : (n_items, L) integer array
        Row i is the token-id path of item i (behaviour token first, if used: it is
        just another column).
    vocab_size : int, optional
        If given, every token must be in [0, vocab_size).
    on_duplicate : {"error", "warn", "first"}
        Several items with the same path (identifier collision): raise (default),
        keep the first item of each group and warn, or keep it silently. Only the
        kept item can be decoded.

    Attributes
    ----------
    n_items : rows given; n_paths : distinct paths (= decodable items);
    depth : L; n_nodes : nodes including the root; max_token : largest token id;
    n_duplicates : rows dropped as duplicates; duplicate_examples : list of
    (kept item, dropped item) pairs (at most 8).
    """

    def __init__(self, id_sequences, vocab_size=None, on_duplicate="error", _sort=0):
        table = _as_id_table(id_sequences)
        code = _dup_code(on_duplicate)
        if vocab_size is not None and (isinstance(vocab_size, bool)
                                       or not isinstance(vocab_size, (int, np.integer))
                                       or not 1 <= vocab_size < 2**31):
            raise ValueError(f"vocab_size must be an integer in [1, 2**31), got {vocab_size!r}")
        self._handle = _core.trie_build(table, 0 if vocab_size is None else int(vocab_size), code,
                                        int(_sort))
        info = _core.trie_info(self._handle)
        self.depth = info["depth"]
        self.n_items = info["n_items"]
        self.n_nodes = info["n_nodes"]
        self.n_paths = info["n_paths"]
        self.max_token = info["max_token"]
        self.n_duplicates = info["n_duplicates"]
        self.duplicate_examples = info["duplicate_examples"]
        self.vocab_size = vocab_size
        if self.n_duplicates and on_duplicate == "warn":
            warnings.warn(
                f"{self.n_duplicates} item(s) share their identifier with an earlier item and "
                f"cannot be decoded; (kept, dropped) examples: {self.duplicate_examples}",
                stacklevel=2)

    def children(self, prefix):
        """Sorted tokens that may follow `prefix` (a sequence of integer token
        ids; floats are refused, ids are never wrapped: 2**32 + 5 is not 5);
        empty if `prefix` is not a prefix of any identifier or is complete."""
        p = _token_path(prefix, "prefix")
        if p.size and (p.min() < 0 or p.max() > np.iinfo(np.int32).max):
            return np.zeros(0, dtype=np.int32)
        return _core.trie_children(self._handle, p.astype(np.int32))

    def lookup(self, seq):
        """Item index whose identifier is `seq` (length L), or -1."""
        s = _token_path(seq, "seq")
        if s.size != self.depth:
            raise ValueError(f"seq must have {self.depth} tokens (the trie depth), got {s.size}")
        if s.min() < 0 or s.max() > np.iinfo(np.int32).max:
            return -1
        return _core.trie_lookup(self._handle, np.ascontiguousarray(s, dtype=np.int32))

    def arrays(self):
        """Copies of the CSR arrays: (level_start (L+2,) int64, token (n_nodes,)
        int32, child_start (n_nodes+1,) int32, leaf_item (n_paths,) int64); see
        csrc/decode/trie.h for the layout."""
        return _core.trie_arrays(self._handle)

    def __len__(self):
        return self.n_paths

    def __repr__(self):
        return (f"Trie(n_items={self.n_items}, depth={self.depth}, n_paths={self.n_paths}, "
                f"n_nodes={self.n_nodes}, n_duplicates={self.n_duplicates})")


class CandidateSets:
    """Per-input candidate items (the sampled protocol), for beam search.

    Parameters
    ----------
    id_sequences : (n_items, L) integer array, the identifier table of the whole catalogue.
    candidates : (B, n_cand) integer array of item indices into id_sequences; -1 pads
        rows with fewer candidates. Row b constrains the decoding of input b.
    on_duplicate : {"error", "first"}
        Two candidates of a row with the same path (or an item listed twice): raise,
        or keep the first listed.

    The tries are built in C at search time, one per input (about 100 items each:
    microseconds), in parallel; this object only holds the two arrays.
    """

    def __init__(self, id_sequences, candidates, on_duplicate="error"):
        self.id_sequences = _as_id_table(id_sequences)
        c = np.asarray(candidates)
        if c.ndim != 2 or c.shape[0] == 0 or c.shape[1] == 0:
            raise ValueError(f"candidates must be a non-empty 2-D (B, n_cand) array, got shape {c.shape}")
        if not np.issubdtype(c.dtype, np.integer):
            raise TypeError(f"candidates must hold integer item indices, got dtype {c.dtype}")
        n = self.id_sequences.shape[0]
        if c.min() < -1 or c.max() >= n:
            bad = c.min() if c.min() < -1 else c.max()
            raise ValueError(f"candidates contains item index {bad}; indices must be in [0, {n}) "
                             "or -1 for padding")
        if on_duplicate not in ("error", "first"):
            raise ValueError(f"on_duplicate must be 'error' or 'first', got {on_duplicate!r}")
        self.candidates = np.ascontiguousarray(c, dtype=np.int64)
        self.on_duplicate = on_duplicate
        self.depth = self.id_sequences.shape[1]
        self.max_token = int(self.id_sequences.max())

    def __len__(self):
        return self.candidates.shape[0]

    def rows(self, start, stop):
        """The candidate sets of inputs start..stop-1 (same id table)."""
        sub = object.__new__(CandidateSets)
        sub.__dict__.update(self.__dict__)
        sub.candidates = np.ascontiguousarray(self.candidates[start:stop])
        return sub

    def __repr__(self):
        return (f"CandidateSets(n_inputs={self.candidates.shape[0]}, "
                f"n_cand={self.candidates.shape[1]}, n_items={self.id_sequences.shape[0]})")


def _target_kwargs(trie_or_candidates, start=None, stop=None):
    """Keyword arguments of the C beam-search entry points for a Trie or CandidateSets."""
    if isinstance(trie_or_candidates, Trie):
        return {"trie": trie_or_candidates._handle}
    if isinstance(trie_or_candidates, CandidateSets):
        cs = trie_or_candidates if start is None else trie_or_candidates.rows(start, stop)
        return {"id_sequences": cs.id_sequences, "candidates": cs.candidates,
                "on_duplicate": _DUP_POLICIES[cs.on_duplicate]}
    raise TypeError("trie_or_candidates must be a gensar.Trie (whole catalogue) or a "
                    f"gensar.CandidateSets (per-input candidates), got {type(trie_or_candidates).__name__}")


def _check_beam_args(num_beams, top_k, n_inputs, trie_or_candidates):
    if isinstance(num_beams, bool) or not isinstance(num_beams, (int, np.integer)) or num_beams < 1:
        raise ValueError(f"num_beams must be an integer >= 1, got {num_beams!r}")
    top_k = num_beams if top_k is None else top_k
    if isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer)) or top_k < 1:
        raise ValueError(f"top_k must be an integer >= 1, got {top_k!r}")
    if top_k > num_beams:
        raise ValueError(f"top_k ({top_k}) > num_beams ({num_beams}): beam search returns at most "
                         "num_beams items; raise num_beams or lower top_k")
    if isinstance(trie_or_candidates, CandidateSets) and len(trie_or_candidates) != n_inputs:
        raise ValueError(f"candidates has {len(trie_or_candidates)} rows but there are {n_inputs} inputs")
    return int(num_beams), int(top_k)


# Logits of one decode step for a chunk of inputs: chunk * beams * vocab floats.
_LOGITS_BUDGET_FLOATS = 16 * 2**20  # 64 MB


def beam_search(model, input_ids, attention_mask, trie_or_candidates, num_beams=30, top_k=None,
                batch_size=None, renormalise=False):
    """Trie-constrained beam search with a ``gensar.Seq2Seq`` model (C, GIL released).

    Parameters
    ----------
    model : gensar.Seq2Seq
    input_ids, attention_mask : (B, T_in) integer arrays (mask 0/1; None = all ones);
        input_ids may be item bags (B, T_in, K) (gensar.seq2seq.encoder_input)
    trie_or_candidates : Trie (every input may produce any catalogue item) or
        CandidateSets (input b may only produce its own candidates)
    num_beams : beams kept per input (reference setting: 30)
    top_k : items returned per input, <= num_beams (default num_beams)
    batch_size : inputs per C call (default: as many as keep one step's logits
        under 64 MB); results do not depend on it
    renormalise : False (default, as HF generate with a prefix constraint): each
        token's log-probability over the full vocabulary; True: over the tokens the
        searched trie allows after its prefix; a Trie (the whole catalogue's): over
        the tokens that trie allows after the prefix, so that candidate sets are
        ranked by catalogue-normalised probabilities (the scores of a model trained
        with GenSARConfig.constrained_softmax); every searched path must be in it

    Returns
    -------
    items : (B, top_k) int64 item indices (rows of the id table), best first
    scores : (B, top_k) float32 summed natural-log probabilities of the identifier
        tokens, each normalised over the full vocabulary (see module docstring), or
        over its trie siblings with renormalise
    """
    norm_trie = None
    if isinstance(renormalise, Trie):
        norm_trie, renormalise = renormalise._handle, True
    elif not isinstance(renormalise, (bool, np.bool_)):
        raise TypeError(f"renormalise must be True, False or a Trie, got {renormalise!r}")
    from .seq2seq import encoder_input

    ids, mask = encoder_input(input_ids, attention_mask)
    B = ids.shape[0]
    num_beams, top_k = _check_beam_args(num_beams, top_k, B, trie_or_candidates)
    _target_kwargs(trie_or_candidates)  # type check before any work
    vocab = int(model.config.vocab_size)
    if batch_size is None:
        batch_size = max(1, _LOGITS_BUDGET_FLOATS // (num_beams * vocab))
    elif isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    start_token = int(model.config.decoder_start_token_id)
    items = np.empty((B, top_k), np.int64)
    scores = np.empty((B, top_k), np.float32)
    for s in range(0, B, batch_size):
        e = min(B, s + batch_size)
        items[s:e], scores[s:e] = _core.t5_beam_search(
            model._model, np.ascontiguousarray(ids[s:e]), np.ascontiguousarray(mask[s:e]),
            num_beams, top_k, start_token, renormalise=bool(renormalise), norm_trie=norm_trie,
            **_target_kwargs(trie_or_candidates, s, e))
    return items, scores
