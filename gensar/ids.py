"""Dual-purpose item identifiers (GenSAR section 2): joint residual quantisation.

Every item gets two identifiers of L = len(shared_levels) + len(specific_levels)
tokens that share their prefix:

    semantic ID      = [shared_1 .. shared_Ls, semantic_1 .. semantic_Lp]
    collaborative ID = [shared_1 .. shared_Ls, collab_1   .. collab_Lp]

The numeric work (k-means, the RQ-VAE forward/backward and AdamW, the residual
quantiser, Sinkhorn collision resolution) runs in ``gensar._core`` (C); this
module drives the epochs and mini-batches, validates input, and keeps the
fitted state (scikit-learn style: ``fit`` returns self, fitted attributes end
with ``_``).

Methods (``DualIDs(method=...)``), all sharing the same quantiser and collision code:

- ``"joint"`` (default): the GenSAR RQ-VAE. Two MLP encoders map the semantic and
  collaborative embeddings to h-d latents, shared codebooks quantise the
  concatenated 2h latent, tower-specific codebooks quantise each half of the
  residual, two MLP decoders reconstruct the embeddings.
- ``"residual_kmeans"``: no network; residual k-means on the raw concatenation
  [semantic | collaborative] with the same shared + specific level structure
  (specific codebooks on the raw semantic and collaborative slices).
- ``"single"``: TIGER-style single-embedding RQ-VAE on the semantic embedding
  with all levels shared; the one ID serves as both semantic and collaborative ID.
- ``"random"``: uniformly random codes per level (a lower bound).

Collisions. Nearest-code assignment can give two items the same ID. After
fitting (and in ``transform``), each ID kind is made unique without ever
changing the shared prefix:

1. Spill (fit only, when the last two levels quantise the same residual slice,
   as with the default 2 specific levels): among items sharing the first L-2
   tokens, a code of level L-1 can hold at most K_last items; the items beyond
   that (farthest from the codeword) move to the nearest level-(L-1) code with
   room and take the nearest last-level code of their new residual.
2. Last level, inside each prefix group (items sharing the first L-1 tokens):
   every code keeps the item nearest to it; the other items of the group
   ("colliders") are re-assigned over the group's free codes with a
   Sinkhorn-balanced plan (centred distances, epsilon 0.003, 50 iterations, as
   in the reference), one to one, colliders nearest to their original code
   choosing first. Sinkhorn is used here only, not during training.

Exactly duplicate embeddings therefore get distinct IDs: the lowest item index
keeps the nearest code, the others take the next codes by the plan (or spill to
a neighbouring code one level up). If a group sharing the first L-2 tokens
still holds more items than K_(L-1) x K_last (or, without the spill, a prefix
group more than K_last), uniqueness is impossible at L levels: with
``overflow="error"`` (default) ``fit`` raises a ValueError saying so; with
``overflow="extra_level"`` a disambiguation token (the item's rank among the
items still sharing its ID, 0 for most) is appended to every ID of that kind,
which then has L + 1 tokens. ``transform`` re-assigns only the new items'
tokens (published IDs never change): the last level and the spill as above,
and, with two specific levels, new items beyond the room of their shared
prefix (K_(L-1) x K_L IDs) move to the nearest shared prefix with room.

Training follows the reference's autograd exactly (see csrc/quant/rqvae.h):
straight-through from the decoders to the encoder output, codebooks trained by
the codebook term only, and only the first level's commitment term reaching
the encoder. One deviation, on by default: ``scale_inputs`` (see DualIDs).

Collision rate = (N - number of distinct IDs) / N.
"""
from __future__ import annotations

import json
import math
import time
import warnings

import numpy as np

from . import _core

__all__ = ["DualIDs", "kmeans", "make_synthetic_embeddings"]

METHODS = ("joint", "residual_kmeans", "single", "random")
SCHEDULES = ("linear", "cosine", "constant")


def _is_auto(k):
    return isinstance(k, str) and k == "auto"


def _as_levels(v):
    """Level sizes as a tuple (lists accepted; anything else is checked at fit)."""
    return tuple(v) if isinstance(v, (list, tuple)) else v

# Training length in optimiser steps (the reference: ~31k steps of batch 1024,
# i.e. 500 epochs of 60k items, 10% warm-up then linear decay). Measured on
# ml-100k (benchmarks/bench_ids.py --embeddings, GenSAR's MiniLM + SASRec
# embeddings, default sizes): codes used and perplexity stop changing by 1000
# steps (16/16 codes at every level, perplexity 14.7-15.8); the reconstruction
# loss keeps falling slowly, about 15% per doubling of the budget, with no
# plateau yet: 0.00329 after a 1000-step schedule, 0.00274 after 2000, 0.00232
# after 4000 (report() then says converged: NO). 2000 steps cost ~250 CPU
# seconds (4000: 491 s on one idle core) for 1.3k items; pass steps=... for more.
DEFAULT_STEPS = 2000
DEFAULT_WARMUP = 0.1
# report(): the training has converged when the mean reconstruction loss of its
# last 10% of steps is less than 1% below that of the 10% before
CONVERGED_CHANGE = 0.01

# Codebook sizes derived from the catalogue ("auto" levels, see auto_codebook_size).
AUTO_HEADROOM = 16     # product of the codebook sizes of one ID >= 16 x n_items
AUTO_MIN_CODES = 4
AUTO_MAX_CODES = 256   # the reference's size (60k items)


def _as_float_matrix(x, name, allow_none=False):
    """Checks one embedding matrix (N, d) of real floats; returns float32 C-contiguous."""
    if x is None:
        if allow_none:
            return None
        raise TypeError(f"{name} is required (an (N, d) float array), got None")
    if not isinstance(x, np.ndarray):
        try:
            x = np.asarray(x)
        except Exception as e:  # pragma: no cover - exotic objects
            raise TypeError(f"{name} must be an (N, d) float array, got {type(x).__name__}") from e
    if not np.issubdtype(x.dtype, np.floating):
        raise TypeError(
            f"{name} must hold real floating-point numbers (float16/32/64), got dtype {x.dtype}; "
            f"convert with .astype(np.float32)")
    if x.ndim != 2:
        raise ValueError(f"{name} must be 2-dimensional (items, features), got shape {x.shape}")
    if x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"{name} is empty (shape {x.shape})")
    finite = np.isfinite(x).all(axis=1)
    if not finite.all():
        bad = np.flatnonzero(~finite)
        raise ValueError(
            f"{name} contains NaN or infinite values in {bad.size} rows (first: row {bad[0]}); "
            f"clean or drop those items first")
    if x.dtype.itemsize > 4 and np.abs(x).max() > _FLOAT32_MAX:
        raise ValueError(
            f"{name} holds values up to {np.abs(x).max():.3g}, beyond float32 range "
            f"({_FLOAT32_MAX:.3g}); standardise it first (e.g. divide by its scale)")
    return np.ascontiguousarray(x, dtype=np.float32)


_FLOAT32_MAX = float(np.finfo(np.float32).max)
# squared distances between rows whose squared norm is below this stay finite in
# float32 (|a - b|^2 <= 2|a|^2 + 2|b|^2); csrc/quant/kmeans.c uses the same bound
_SQNORM_LIMIT = _FLOAT32_MAX / 8


def _is_int(v):
    """A Python or NumPy integer that is not a bool (True is not a count)."""
    return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))


def _check_sqnorms(x, name, hint="standardise it first (e.g. divide by its scale)"):
    """ValueError if squared distances between rows of x (float32) would overflow."""
    sq = np.einsum("ij,ij->i", x, x, dtype=np.float64)
    i = int(sq.argmax())
    if not sq[i] <= _SQNORM_LIMIT:
        raise ValueError(
            f"{name} has rows with squared L2 norm up to {sq[i]:.3g} (row {i}); squared "
            f"distances would overflow float32 (limit {_SQNORM_LIMIT:.3g}); {hint}")


def auto_codebook_size(n_items, n_levels, fixed=(), headroom=AUTO_HEADROOM,
                       min_codes=AUTO_MIN_CODES, max_codes=AUTO_MAX_CODES):
    """Codes per level for a catalogue of n_items, when n_levels levels of one ID
    are left to choose and the other levels of that ID have the sizes `fixed`.

    K = the smallest power of two with K ** n_levels >= headroom * n_items /
    prod(fixed), clipped to [min_codes, max_codes]. Why: a code is useful only
    if items land on it, so K should be as small as uniqueness allows (a level
    of 256 codes over 1.3k items leaves most codes unused), while the product of
    the sizes must leave room well above n_items: collisions are resolved
    inside a prefix group (items sharing all but the last one or two tokens),
    which can hold at most K_last (or K_(L-1) x K_last) items, and real
    catalogues fill prefixes unevenly (with headroom 4 a 700-item clustered
    catalogue already overflowed a prefix group). headroom 16 gives K ** L
    between 16 and 16 x 2 ** L times the catalogue: ml-100k (1,349 items, 4
    levels) gets 16 codes per level, 100 items 8, 60k items 32; the cap 256 is
    the reference's size.
    """
    if not _is_int(n_items) or n_items < 1:
        raise ValueError(f"n_items must be a positive integer, got {n_items!r}")
    if not _is_int(n_levels) or n_levels < 1:
        raise ValueError(f"n_levels must be a positive integer, got {n_levels!r}")
    need = headroom * n_items / max(1, math.prod(fixed))
    per_level = need ** (1.0 / n_levels) if need > 1 else 1.0
    k = 1 << max(0, math.ceil(math.log2(per_level) - 1e-9))
    return int(min(max_codes, max(min_codes, k)))


def kmeans(x, k, n_init=1, max_iter=300, tol=1e-4, seed=0, init=None):
    """k-means in C: greedy k-means++ seeding, Lloyd iterations, empty-cluster
    repair, best inertia of ``n_init`` runs; deterministic for a given seed.

    x (N, d) float array (converted to float32); k <= N. init (k, d) or None:
    starting centroids instead of k-means++ (then one run).
    Returns (centroids (k, d) float32, labels (N,) int64, inertia float: sum of
    squared distances of the points to their centroid).
    """
    x = _as_float_matrix(x, "x")
    for name, v in (("k", k), ("n_init", n_init), ("max_iter", max_iter), ("seed", seed)):
        if not _is_int(v):
            raise TypeError(f"{name} must be an integer, got {type(v).__name__} {v!r}")
        if v < (0 if name == "seed" else 1):
            raise ValueError(f"{name} must be a {'non-negative' if name == 'seed' else 'positive'} "
                             f"integer, got {v!r}")
    if k > x.shape[0]:
        raise ValueError(f"k = {k} clusters need at least {k} points, got {x.shape[0]}")
    if not (isinstance(tol, (int, float, np.floating, np.integer)) and not isinstance(tol, bool)
            and math.isfinite(tol) and tol >= 0):
        raise ValueError(f"tol must be a finite number >= 0, got {tol!r}")
    _check_sqnorms(x, "x")
    if init is not None:
        init = _as_float_matrix(init, "init")
        if init.shape != (k, x.shape[1]):
            raise ValueError(f"init must have shape ({k}, {x.shape[1]}), got {init.shape}")
        _check_sqnorms(init, "init")
    C, labels, inertia = _core.kmeans(x, int(k), int(n_init), int(max_iter), float(tol), int(seed),
                                      init)
    return C, labels.astype(np.int64), inertia


def _collision_rate(ids):
    n = ids.shape[0]
    return (n - np.unique(ids, axis=0).shape[0]) / n


def _perplexity(codes, k):
    counts = np.bincount(codes, minlength=k).astype(np.float64)
    p = counts[counts > 0] / counts.sum()
    return float(np.exp(-(p * np.log(p)).sum())), float((counts > 0).sum() / k)


class DualIDs:
    """Dual-purpose identifiers by joint residual quantisation (GenSAR).

    Parameters (defaults = the reference settings unless noted)
    ----------
    shared_levels : codebook sizes of the shared levels; each entry an int or
        "auto" (default ("auto", "auto")): "auto" sizes come from the catalogue
        at fit time (auto_codebook_size: the smallest power of two whose
        product over the ID's levels is >= 16 x n_items, between 4 and 256; the
        reference's 256 suits 60k items, not 1k)
    specific_levels : the same for the semantic- and collaborative-specific
        levels (default ("auto", "auto"))
    method : "joint" | "residual_kmeans" | "single" | "random" (see module doc)
    latent_dim : h, latent width per embedding (32)
    hidden : encoder hidden widths (512, 256, 128, 64); decoders mirror them
    beta : commitment weight (0.25)
    steps : optimiser steps of the RQ-VAE (joint, single); default DEFAULT_STEPS
        (2000: code use has plateaued on ml-100k, the reconstruction loss is
        still falling slowly; the reference: ~31k steps on 60k items)
    epochs : None (default: train for `steps`) or a number of passes over the
        catalogue (then steps = epochs x batches per epoch)
    warmup : fraction of the steps with a linear learning-rate warm-up from 0
        (0.1, the reference's 50 of 500 epochs)
    schedule : "linear" (reference: decay to 0 after the warm-up) | "cosine" |
        "constant"
    batch_size : 1024; lr 1e-3 (peak); weight_decay 1e-5 (AdamW)
    restart_dead_codes : True: every `restart_window` steps, codes that no
        training row used during the window move to random residuals of the
        current batch (with fresh AdamW moments); not in the reference, which
        relies on 60k items to keep 256 codes busy
    restart_window : steps per usage window (None: one epoch, so that every
        item was seen once)
    restart_until : fraction of the steps after which restarts stop, so the
        last moved codes still get trained (0.9)
    kmeans_iters : Lloyd iterations of the codebook k-means initialisation (and
        of residual_kmeans)
    sinkhorn_epsilon, sinkhorn_iters : 0.003, 50 (collision resolution)
    overflow : "error" | "extra_level" (see module doc)
    adapt_codebooks : shrink explicit codebooks larger than the catalogue (or
        first batch) with a warning instead of raising ("auto" sizes always fit)
    scale_inputs : divide each embedding matrix by one scalar, its mean row L2
        norm at fit time (computed in float64, so data of any finite scale is
        accepted; not in the reference, whose semantic embeddings are unit-norm
        already). It puts both reconstruction terms on the same
        footing whatever the units of the collaborative embedding; without it an
        embedding with large values (e.g. norm ~10) makes the straight-through
        encoder outrun the codebooks and the quantisation loss diverge. The
        geometry of each embedding is unchanged; reported reconstruction errors
        are in the original units. False gives the reference exactly.
    seed : every random choice (weights, batches, k-means, restarts) derives from it
    progress : show a tqdm progress bar over steps

    Fitted attributes: semantic_ids_, collaborative_ids_ (N, L) int64,
    history_ (per-epoch mean losses, learning rate and restarted codes),
    loss_curve_ (per-step losses), shared_levels_, specific_levels_ (the sizes
    used), restarts_ (codes restarted per level).
    """

    def __init__(self, shared_levels=("auto", "auto"), specific_levels=("auto", "auto"),
                 method="joint", latent_dim=32, hidden=(512, 256, 128, 64), beta=0.25,
                 steps=DEFAULT_STEPS, epochs=None, warmup=DEFAULT_WARMUP, schedule="linear",
                 batch_size=1024, lr=1e-3, weight_decay=1e-5, restart_dead_codes=True,
                 restart_window=None, restart_until=0.9, kmeans_iters=50,
                 sinkhorn_epsilon=0.003, sinkhorn_iters=50, overflow="error",
                 adapt_codebooks=True, scale_inputs=True, seed=0, progress=True):
        self.shared_levels = _as_levels(shared_levels)
        self.specific_levels = _as_levels(specific_levels)
        self.method = method
        self.latent_dim = latent_dim
        self.hidden = tuple(hidden) if isinstance(hidden, (list, tuple)) else hidden
        self.beta = beta
        self.steps = steps
        self.epochs = epochs
        self.warmup = warmup
        self.schedule = schedule
        self.batch_size = batch_size
        self.lr = lr
        self.weight_decay = weight_decay
        self.restart_dead_codes = restart_dead_codes
        self.restart_window = restart_window
        self.restart_until = restart_until
        self.kmeans_iters = kmeans_iters
        self.sinkhorn_epsilon = sinkhorn_epsilon
        self.sinkhorn_iters = sinkhorn_iters
        self.overflow = overflow
        self.adapt_codebooks = adapt_codebooks
        self.scale_inputs = scale_inputs
        self.seed = seed
        self.progress = progress

    # ------------------------------------------------------------------ checks
    def _check_params(self):
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {self.method!r}")
        if self.overflow not in ("error", "extra_level"):
            raise ValueError(f"overflow must be 'error' or 'extra_level', got {self.overflow!r}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        for name in ("shared_levels", "specific_levels"):
            v = getattr(self, name)
            if not isinstance(v, tuple):
                raise TypeError(f"{name} must be a tuple of codebook sizes (ints or 'auto'), got {v!r}")
            for k in v:
                if _is_auto(k):
                    continue
                if not _is_int(k):
                    raise TypeError(f"{name} entries must be positive integers or 'auto', got {k!r}")
                if k < 1:
                    raise ValueError(f"{name}: codebook sizes must be positive integers, got {v}")
        if not self.shared_levels + self.specific_levels:
            raise ValueError("at least one level is needed (shared_levels or specific_levels)")
        if len(self.shared_levels) > 8 or len(self.specific_levels) > 8:
            raise ValueError("at most 8 shared and 8 specific levels are supported")
        if not isinstance(self.hidden, tuple) or not all(_is_int(w) and w >= 1 for w in self.hidden):
            raise ValueError(f"hidden must be a tuple of positive layer widths, got {self.hidden!r}")
        if len(self.hidden) > 8:
            raise ValueError(f"hidden: at most 8 layers are supported, got {len(self.hidden)}")
        ints = {"steps": 0, "batch_size": 1, "latent_dim": 1, "kmeans_iters": 1,
                "sinkhorn_iters": 0, "seed": 0}
        if self.epochs is not None:
            ints["epochs"] = 0
        if self.restart_window is not None:
            ints["restart_window"] = 1
        for name, lo in ints.items():
            v = getattr(self, name)
            if not _is_int(v):
                raise TypeError(f"{name} must be an integer, got {type(v).__name__} {v!r}")
            if v < lo:
                raise ValueError(f"{name} must be an integer >= {lo}, got {v!r}")
        # (name, lowest allowed, lowest excluded, highest allowed)
        for name, lo, open_lo, hi in (("lr", 0.0, True, None), ("weight_decay", 0.0, False, None),
                                      ("beta", 0.0, False, None),
                                      ("sinkhorn_epsilon", 0.0, True, None),
                                      ("warmup", 0.0, False, 1.0), ("restart_until", 0.0, False, 1.0)):
            v = getattr(self, name)
            ok = (isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)
                  and math.isfinite(v) and (v > lo if open_lo else v >= lo) and (hi is None or v <= hi))
            if not ok:
                rng_txt = (f"> {lo}" if open_lo else f">= {lo}") + (f" and <= {hi}" if hi is not None else "")
                raise ValueError(f"{name} must be a finite number {rng_txt}, got {v!r}")
        for name in ("restart_dead_codes", "adapt_codebooks", "scale_inputs", "progress"):
            if not isinstance(getattr(self, name), (bool, np.bool_)):
                raise TypeError(f"{name} must be True or False, got {getattr(self, name)!r}")

    def _check_inputs(self, semantic_emb, collaborative_emb, fitted=False):
        needs_col = self.method != "single"
        xs = _as_float_matrix(semantic_emb, "semantic_emb")
        xc = _as_float_matrix(collaborative_emb, "collaborative_emb", allow_none=not needs_col)
        if xc is not None and xc.shape[0] != xs.shape[0]:
            raise ValueError(
                f"semantic_emb has {xs.shape[0]} rows but collaborative_emb has {xc.shape[0]}; "
                f"row i of both must describe the same item")
        if self.method == "single":
            xc = None  # the single-embedding baseline ignores the collaborative embedding
        if fitted:
            ds, dc = self.dims_
            if xs.shape[1] != ds:
                raise ValueError(f"semantic_emb must have {ds} columns as at fit time, got {xs.shape[1]}")
            if xc is not None and xc.shape[1] != dc:
                raise ValueError(
                    f"collaborative_emb must have {dc} columns as at fit time, got {xc.shape[1]}")
        return xs, xc

    def _scaled(self, xs, xc):
        a, b = self.input_scale_
        # in float64: a tiny scale times a huge value must not underflow/overflow midway
        xs = xs if a == 1.0 else np.ascontiguousarray(xs * np.float64(a), dtype=np.float32)
        xc = xc if (xc is None or b == 1.0) else np.ascontiguousarray(xc * np.float64(b),
                                                                     dtype=np.float32)
        return xs, xc

    def _adapt_levels(self, n):
        """Codebook sizes for n items: "auto" entries from the catalogue, explicit
        ones checked (they cannot be larger than the items that initialise them)."""
        limit = n if self.method in ("residual_kmeans", "random") else min(self.batch_size, n)
        shared, specific = list(self.shared_levels), list(self.specific_levels)
        # levels of one ID: shared + specific (the single method merges them)
        id_levels = shared + specific
        n_auto = sum(_is_auto(k) for k in id_levels)
        if n_auto:
            k_auto = min(limit, auto_codebook_size(n, n_auto, [k for k in id_levels if not _is_auto(k)]))
            shared = [k_auto if _is_auto(k) else k for k in shared]
            specific = [k_auto if _is_auto(k) else k for k in specific]
        too_big = [k for k in shared + specific if k > limit]
        if too_big:
            msg = (f"{n} items (first batch {limit}) are fewer than the codes of a level "
                   f"(codebook sizes {tuple(shared)} + {tuple(specific)})")
            if not self.adapt_codebooks:
                raise ValueError(msg + "; use smaller codebooks, more items, or adapt_codebooks=True")
            shared = [min(k, limit) for k in shared]
            specific = [min(k, limit) for k in specific]
            warnings.warn(msg + f"; shrinking them to {tuple(shared)} + {tuple(specific)}",
                          UserWarning, stacklevel=3)
        if self.method == "single":
            shared, specific = shared + specific, []
        capacity = math.prod(shared) * math.prod(specific)
        if capacity < n and self.overflow == "error":
            raise ValueError(
                f"{n} items cannot get unique IDs from {capacity} possible codes "
                f"({tuple(shared)} + {tuple(specific)}); use more or larger levels, or "
                f"overflow='extra_level'")
        return tuple(shared), tuple(specific)

    # ---------------------------------------------------------------- quantiser
    def _rq_dims(self):
        if self.method == "joint":
            return (self.latent_dim, self.latent_dim)
        if self.method == "single":
            return (self.latent_dim,)
        if self.method == "residual_kmeans":
            return self.dims_
        return (1, 1)

    def _n_levels(self):
        return len(self.shared_levels_) + len(self.dims_q_) * len(self.specific_levels_)

    def _kind_levels(self, t):
        """Level indices (in code order) of ID kind t, and its last level."""
        ns, npec = len(self.shared_levels_), len(self.specific_levels_)
        if npec == 0 or len(self.dims_q_) == 1:
            return list(range(ns + npec))
        return list(range(ns)) + [ns + t * npec + j for j in range(npec)]

    def _level_sizes(self):
        return list(self.shared_levels_) + list(self.specific_levels_) * len(self.dims_q_)

    def _codebooks_flat(self):
        if self.method in ("joint", "single"):
            return self._params[self._cb_offset:]
        return self._codebooks

    def _level_codebook(self, l):
        sizes = self._level_sizes()
        widths = ([sum(self.dims_q_)] * len(self.shared_levels_)
                  + [w for w in self.dims_q_ for _ in self.specific_levels_])
        off = sum(k * w for k, w in zip(sizes[:l], widths[:l]))
        return self._codebooks_flat()[off:off + sizes[l] * widths[l]].reshape(sizes[l], widths[l])

    def _latent(self, xs, xc):
        if self.method in ("joint", "single"):
            return _core.rqvae_latent(self._model, xs, xc)
        if self.method == "residual_kmeans":
            return np.ascontiguousarray(np.concatenate([xs, xc], axis=1))
        return np.zeros((xs.shape[0], 2), np.float32)

    def _same_chain(self, a, b):
        """True if level b directly follows level a on the same residual slice."""
        ns, npec = len(self.shared_levels_), len(self.specific_levels_)
        if a < ns and b < ns:
            return b == a + 1
        if a >= ns and b >= ns:
            return b == a + 1 and (a - ns) // npec == (b - ns) // npec
        return False

    def _assign(self, xs, xc, rng=None):
        """Nearest codes (N, nL), the residual entering each kind's last level,
        and the residual entering its second-to-last level (None when that
        level quantises another slice)."""
        z = self._latent(xs, xc)
        n_kinds = len(self.dims_q_)
        kinds = [self._kind_levels(t) for t in range(n_kinds)]
        last = [lv[-1] for lv in kinds]
        prev = [lv[-2] if len(lv) > 1 and self._same_chain(lv[-2], lv[-1]) else None
                for lv in kinds]
        want = sorted(set(last) | {p for p in prev if p is not None})
        codes, zq, resid = _core.rq_encode(z, self._codebooks_flat(), self.dims_q_,
                                           self.shared_levels_, self.specific_levels_,
                                           levels=want)
        resid = dict(zip(want, resid))
        if self.method == "random":
            rng = rng or np.random.default_rng(self.seed)
            sizes = np.array(self._level_sizes())
            codes = (rng.random(codes.shape) * sizes).astype(np.int32)
        return codes, zq, [resid[l] for l in last], [None if p is None else resid[p] for p in prev]

    def _spill(self, ids, r_last, r_prev, C_prev, C_last, movable=None):
        """Second-to-last level capacity: within a group of items sharing the
        first L-2 tokens, a code of level L-2 can hold at most K_last items (one
        per last-level code). Items beyond that (those farthest from the
        codeword) move to the nearest code of level L-2 that still has room, and
        take the nearest last-level code from their new residual. Changes ids
        (N, L) and r_last in place; returns the number of items moved. Only
        overloaded groups are touched, so this is a rare path.

        movable : None (every item may move: fit) or (N,) bool; items with False
        (already published IDs, in transform) never move and keep their place
        before any movable item of their group."""
        L = ids.shape[1]
        K_prev, K_last = C_prev.shape[0], C_last.shape[0]
        if L > 2:
            _, group = np.unique(ids[:, :L - 2], axis=0, return_inverse=True)
            group = group.ravel().astype(np.int64)
        else:
            group = np.zeros(ids.shape[0], np.int64)
        key = group * K_prev + ids[:, L - 2]
        counts = np.bincount(key, minlength=(int(group.max()) + 1) * K_prev)
        over = np.flatnonzero(counts > K_last)
        moved = 0
        for k in over:
            grp, c2 = divmod(int(k), K_prev)
            members = np.flatnonzero(key == k)
            d = ((r_prev[members] - C_prev[c2]) ** 2).sum(1)
            order = (np.argsort(d, kind="stable") if movable is None
                     else np.lexsort((d, movable[members])))  # fixed items first, then by distance
            for i in members[order][K_last:]:
                if movable is not None and not movable[i]:
                    continue  # cannot happen with unique published IDs; never move one anyway
                room = counts[grp * K_prev:(grp + 1) * K_prev] < K_last
                if not room.any():
                    break  # the whole group exceeds K_prev * K_last: left to overflow handling
                dist = ((r_prev[i] - C_prev) ** 2).sum(1)
                dist[~room] = np.inf
                c = int(dist.argmin())
                counts[k] -= 1
                counts[grp * K_prev + c] += 1
                ids[i, L - 2] = c
                r_last[i] = r_prev[i] - C_prev[c]
                ids[i, L - 1] = int(((r_last[i] - C_last) ** 2).sum(1).argmin())
                moved += 1
        return moved

    def _resolve(self, codes, resid, prev=None, fixed_ids=None):
        """Unique IDs per kind. codes (N, nL) int32 of the new items; resid / prev:
        per kind the residual entering the last / second-to-last level; fixed_ids:
        list per kind of already published IDs (M, L or L+1) that must not change
        (then only the new items may spill to another second-to-last code)."""
        n_kinds = len(self.dims_q_)
        out, stats = [], []
        sizes = self._level_sizes()
        for t in range(n_kinds):
            lv = self._kind_levels(t)
            ids = np.ascontiguousarray(codes[:, lv], dtype=np.int32)
            r = resid[t]
            C = np.ascontiguousarray(self._level_codebook(lv[-1]))
            n_new = ids.shape[0]
            fixed = None
            old = None
            before = _collision_rate(ids)
            spilled = 0
            if fixed_ids is None and prev is not None and prev[t] is not None:
                r = r.copy()
                spilled = self._spill(ids, r, prev[t], self._level_codebook(lv[-2]), C)
            if fixed_ids is not None:
                old = fixed_ids[t]
                ids = np.ascontiguousarray(np.concatenate([old[:, :len(lv)].astype(np.int32), ids]))
                r = np.ascontiguousarray(np.concatenate([np.zeros((old.shape[0], r.shape[1]), np.float32), r]))
                fixed = np.zeros(ids.shape[0], bool)
                fixed[:old.shape[0]] = True
                if prev is not None and prev[t] is not None:
                    # New items whose second-to-last code is full (K_last published items
                    # already under it) spill to the nearest code with room, as in fit;
                    # without this a crowded prefix would make transform fail.
                    rp = np.concatenate([np.zeros((old.shape[0], prev[t].shape[1]), np.float32), prev[t]])
                    r = r.copy()
                    spilled = self._spill(ids, r, rp, self._level_codebook(lv[-2]), C, movable=~fixed)
            st = _core.resolve_collisions(ids, [sizes[l] for l in lv], r, C, fixed,
                                          float(self.sinkhorn_epsilon), int(self.sinkhorn_iters))
            st["collision_rate_before"] = before
            st["spilled"] = spilled
            ids = ids.astype(np.int64)
            extra = self._extra_level_[t] if hasattr(self, "_extra_level_") else False
            if old is not None and old.shape[1] > len(lv):  # published IDs carry an extra token
                ids = np.concatenate([ids, np.zeros((ids.shape[0], 1), np.int64)], axis=1)
                ids[:old.shape[0]] = old
            if _collision_rate(ids) > 0:
                if self.overflow == "error":
                    raise ValueError(
                        f"{'semantic' if t == 0 else 'collaborative'} IDs: a prefix group of "
                        f"{st['largest_group']} items (items sharing the first {len(lv) - 1} "
                        f"tokens) is larger than the last codebook ({sizes[lv[-1]]} codes), so "
                        f"{st['unresolved']} items cannot get a unique ID; use larger "
                        f"codebooks or DualIDs(overflow='extra_level')")
                ids = self._append_rank(ids, n_fixed=0 if old is None else old.shape[0],
                                        has_extra=old is not None and old.shape[1] > len(lv))
                extra = True
            out.append(ids[ids.shape[0] - n_new:])
            stats.append((st, extra))
        return out, stats

    @staticmethod
    def _append_rank(ids, n_fixed, has_extra):
        """Disambiguation token: rank among items sharing the same ID (fixed rows first)."""
        base = ids[:, :-1] if has_extra else ids
        extra = ids[:, -1].copy() if has_extra else np.zeros(ids.shape[0], np.int64)
        _, inv = np.unique(base, axis=0, return_inverse=True)
        inv = inv.ravel()
        used = {}
        for i in range(n_fixed):
            used.setdefault(inv[i], set()).add(int(extra[i]))
        for i in range(n_fixed, ids.shape[0]):
            taken = used.setdefault(inv[i], set())
            e = 0
            while e in taken:
                e += 1
            extra[i] = e
            taken.add(e)
        return np.concatenate([base, extra[:, None]], axis=1)

    # ---------------------------------------------------------------------- fit
    def fit(self, semantic_emb, collaborative_emb=None):
        """Learns the quantiser and assigns unique IDs to every item.

        semantic_emb (N, d_sem), collaborative_emb (N, d_col): real float arrays,
        row i of both describing item i (collaborative_emb is ignored by
        method="single"). Returns self.
        """
        self._check_params()
        t0 = time.perf_counter()
        xs, xc = self._check_inputs(semantic_emb, collaborative_emb)
        n = xs.shape[0]
        self.dims_ = (xs.shape[1], xc.shape[1] if xc is not None else 0)
        self.input_scale_ = (1.0, 1.0)
        if self.scale_inputs:
            # float64: rows of huge but finite float32 values (e.g. 1e20) keep a finite norm
            norm = lambda x: (float(np.sqrt(np.einsum("ij,ij->i", x, x, dtype=np.float64)).mean())  # noqa: E731
                              if x is not None else 1.0)
            self.input_scale_ = tuple(1.0 / v if v > 0 else 1.0 for v in (norm(xs), norm(xc)))
        xs, xc = self._scaled(xs, xc)
        hint = ("standardise it first (e.g. divide by its scale)"
                + ("" if self.scale_inputs else " or use scale_inputs=True"))
        _check_sqnorms(xs, "semantic_emb", hint)
        if xc is not None:
            _check_sqnorms(xc, "collaborative_emb", hint)
        self.shared_levels_, self.specific_levels_ = self._adapt_levels(n)
        self.dims_q_ = self._rq_dims()
        self.history_ = []
        self.loss_curve_ = np.zeros((0, 5))
        self.restarts_ = []
        rng = np.random.default_rng(self.seed)
        if self.method in ("joint", "single"):
            self._fit_rqvae(xs, xc, rng)
        elif self.method == "residual_kmeans":
            z = self._latent(xs, xc)
            self._codebooks = _core.rq_fit_kmeans(z, self.dims_q_, self.shared_levels_,
                                                  self.specific_levels_, 1, int(self.kmeans_iters),
                                                  int(self.seed))
        else:
            n_cb = sum(k * w for k, w in zip(
                self._level_sizes(),
                [sum(self.dims_q_)] * len(self.shared_levels_)
                + [w for w in self.dims_q_ for _ in self.specific_levels_]))
            self._codebooks = np.zeros(n_cb, np.float32)
        codes, zq, resid, prev = self._assign(xs, xc, rng)
        self._recon = self._reconstruction(xs, xc, zq)
        self._raw_codes = codes
        ids, stats = self._resolve(codes, resid, prev)
        self._extra_level_ = [e for _, e in stats]
        self._resolve_stats = [s for s, _ in stats]
        if len(ids) == 1:  # single: one ID serves both tasks
            ids = [ids[0], ids[0]]
            self._resolve_stats = self._resolve_stats * 2
        self.semantic_ids_, self.collaborative_ids_ = ids
        self.fit_seconds_ = time.perf_counter() - t0
        return self

    def _lr_at(self, step, total):
        """Learning rate of optimiser step `step` (0-based) of `total`: linear
        warm-up over the first round(warmup x total) steps up to lr, then the
        `schedule` decay towards 0, reached just after the last step (so that no
        step is wasted at lr 0)."""
        warm = int(round(self.warmup * total))
        if step < warm:
            return self.lr * (step + 1) / warm
        if self.schedule == "constant":
            return self.lr
        p = (step - warm + 1) / (total - warm + 1)  # in (0, 1)
        frac = 1.0 - p if self.schedule == "linear" else 0.5 * (1.0 + math.cos(math.pi * p))
        return self.lr * frac

    def _total_steps(self, n):
        per_epoch = -(-n // min(self.batch_size, n))
        return per_epoch * self.epochs if self.epochs is not None else int(self.steps)

    def _fit_rqvae(self, xs, xc, rng):
        from tqdm.auto import tqdm

        n = xs.shape[0]
        bs = min(self.batch_size, n)
        in_dims = (xs.shape[1],) if xc is None else (xs.shape[1], xc.shape[1])
        self._model = _core.rqvae_new(in_dims, self.hidden, int(self.latent_dim),
                                      self.shared_levels_, self.specific_levels_,
                                      float(self.beta), int(bs), int(self.seed))
        self._bind_buffers()
        first = np.sort(rng.permutation(n)[:bs])
        _core.rqvae_init_codebooks(self._model, xs[first], None if xc is None else xc[first],
                                   int(self.kmeans_iters), int(self.seed))
        per_epoch = -(-n // bs)
        total = self._total_steps(n)
        window = self.restart_window or per_epoch
        restart_stop = int(self.restart_until * total)
        n_levels = self._n_levels()
        self.restarts_ = [0] * n_levels
        curve = np.zeros((total, 5))  # step lr, total, recon_s, recon_c, quantisation
        bar = tqdm(total=total, desc=f"RQ-VAE ({self.method})", unit="step",
                   disable=not self.progress, leave=False)
        step = 0
        while step < total:
            t0 = time.perf_counter()
            perm = rng.permutation(n)
            sums, rows, restarted = np.zeros(4), 0, [0] * n_levels
            for s in range(0, n, bs):
                if step >= total:
                    break
                idx = perm[s:s + bs]
                lr = self._lr_at(step, total)
                losses = _core.rqvae_train_step(self._model, xs[idx],
                                                None if xc is None else xc[idx],
                                                float(lr), float(self.weight_decay))
                curve[step] = (lr, *losses)
                sums += np.array(losses) * len(idx)
                rows += len(idx)
                step += 1
                if self.restart_dead_codes and step % window == 0 and step <= restart_stop:
                    moved = _core.rqvae_restart_dead_codes(
                        self._model, (int(self.seed) * 1_000_003 + step) % 2 ** 64)
                    restarted = [a + b for a, b in zip(restarted, moved)]
                    self.restarts_ = [a + b for a, b in zip(self.restarts_, moved)]
            mean = sums / rows
            entry = dict(zip(("loss", "recon_semantic", "recon_collaborative", "quantisation"),
                             mean.tolist()))
            entry.update(step=step, lr=float(curve[step - 1, 0]), restarted=restarted,
                         seconds=time.perf_counter() - t0)
            self.history_.append(entry)
            bar.update(-(-rows // bs))
            bar.set_postfix(loss=f"{mean[0]:.4g}", refresh=False)
        bar.close()
        self.loss_curve_ = curve

    def _bind_buffers(self):
        self._params, self._grads, self._adam_m, self._adam_v = _core.rqvae_buffers(self._model)
        layout = _core.rqvae_layout(self._model)
        self._cb_offset = next(off for name, off, _ in layout if name.startswith("codebook"))

    def _reconstruction(self, xs, xc, zq):
        """Per-embedding reconstruction error of the quantised representation."""
        out = {}
        if self.method in ("joint", "single"):
            _, err = _core.rqvae_reconstruct(self._model, xs, xc)
            errs = [err[:, 0]] + ([err[:, 1]] if err.shape[1] > 1 else [])
        elif self.method == "residual_kmeans":
            ds = self.dims_[0]
            errs = [((zq[:, :ds] - xs) ** 2).sum(1), ((zq[:, ds:] - xc) ** 2).sum(1)]
        else:
            errs = []
        for name, x, e, sc in zip(("semantic", "collaborative"), (xs, xc), errs, self.input_scale_):
            out[name] = {"mse": float(e.mean() / x.shape[1]) / sc ** 2,  # original units
                         "relative": float(e.sum() / max((x.astype(np.float64) ** 2).sum(), 1e-30))}
        return out

    # ---------------------------------------------------------------- transform
    def transform(self, semantic_emb, collaborative_emb=None, resolve=True, published=None):
        """IDs for new items with the fitted quantiser (no refitting; cold start).

        Returns (semantic_ids, collaborative_ids), each (M, L) int64. With
        resolve=True the new IDs are made unique among themselves and against the
        IDs already in use (which never change), by the same re-assignment as fit
        (last level; a new item under a full second-to-last code spills to the
        nearest one with room); with resolve=False they are the plain nearest codes.

        published : None (the IDs in use are the fitted catalogue's) or a pair
            (semantic_ids, collaborative_ids) of int arrays (P, L), the IDs in use
            now, e.g. the fitted catalogue's plus items added since
        """
        self._check_fitted()
        if published is not None:
            published = self._check_published(published)
        xs, xc = self._check_inputs(semantic_emb, collaborative_emb, fitted=True)
        xs, xc = self._scaled(xs, xc)
        _check_sqnorms(xs, "semantic_emb")
        if xc is not None:
            _check_sqnorms(xc, "collaborative_emb")
        rng = np.random.default_rng([self.seed, len(xs)])
        codes, _, resid, prev = self._assign(xs, xc, rng)
        if not resolve:
            ids = [codes[:, self._kind_levels(t)].astype(np.int64) for t in range(len(self.dims_q_))]
        else:
            fixed = list(published or (self.semantic_ids_, self.collaborative_ids_))[:len(self.dims_q_)]
            codes, resid, prev = self._reprefix(xs, xc, codes, resid, prev, fixed[0])
            ids, _ = self._resolve(codes, resid, prev, fixed_ids=fixed)
        if len(ids) == 1:
            ids = [ids[0], ids[0]]
        return ids[0], ids[1]

    def _reprefix(self, xs, xc, codes, resid, prev, published):
        """transform: new items under a full shared prefix move to another one.

        With two specific levels, the items sharing a shared prefix can have at
        most K_spec1 x K_spec2 distinct IDs; published IDs never move, so when a
        prefix is full (or the new items would overfill it) the new items beyond
        its room (in row order) take the shared prefix with room whose quantised
        vector (sum of its shared codewords) is nearest to their latent, then
        the nearest specific codes of that new residual for each ID kind.
        Returns (codes, resid, prev) with the moved rows updated (copies);
        unchanged for other layouts, where collision resolution alone decides."""
        import itertools

        ns, npec = len(self.shared_levels_), len(self.specific_levels_)
        if (self.method not in ("joint", "residual_kmeans") or len(self.dims_q_) != 2 or npec != 2 or ns == 0
                or math.prod(self.shared_levels_) > 1 << 16):
            return codes, resid, prev
        cap = math.prod(self.specific_levels_)
        key = lambda a: (a * np.cumprod((1,) + tuple(self.shared_levels_[:0:-1]))[::-1]).sum(1)  # noqa: E731
        n_prefix = math.prod(self.shared_levels_)
        room = cap - np.bincount(key(np.asarray(published)[:, :ns]), minlength=n_prefix)
        over = []
        for i, k in enumerate(key(codes[:, :ns].astype(np.int64)).tolist()):
            if room[k] > 0:
                room[k] -= 1
            else:
                over.append(i)
        if not over:
            return codes, resid, prev
        codes = codes.copy()
        resid, prev = [r.copy() for r in resid], [p.copy() for p in prev]
        grid = np.array(list(itertools.product(*[range(k) for k in self.shared_levels_])), np.int64)
        assert np.array_equal(key(grid), np.arange(n_prefix))  # grid row j is prefix key j
        Q = sum(self._level_codebook(l)[grid[:, l]] for l in range(ns)).astype(np.float64)
        z = self._latent(xs, xc).astype(np.float64)
        for i in over:
            d = ((z[i] - Q) ** 2).sum(1)
            d[room <= 0] = np.inf
            j = int(np.argmin(d))
            if not np.isfinite(d[j]):
                break  # every prefix is full: left to collision resolution (which then says so)
            room[j] -= 1
            codes[i, :ns] = grid[j]
            r, off = z[i] - Q[j], 0
            for t in range(2):
                first, last = self._kind_levels(t)[ns:]
                w = self.dims_q_[t]
                rt = r[off:off + w]
                off += w
                C1, C2 = self._level_codebook(first), self._level_codebook(last)
                prev[t][i] = rt
                codes[i, first] = c1 = int(((rt - C1) ** 2).sum(1).argmin())
                resid[t][i] = rt - C1[c1]
                codes[i, last] = int(((resid[t][i] - C2) ** 2).sum(1).argmin())
        return codes, resid, prev

    def _check_published(self, published):
        """transform(published=...) checked: two int64 arrays shaped like the fitted IDs."""
        if not isinstance(published, (tuple, list)) or len(published) != 2:
            raise TypeError(f"published must be None or a pair (semantic_ids, collaborative_ids), "
                            f"got {type(published).__name__}")
        out = []
        for name, a, ref in zip(("semantic", "collaborative"), published,
                                (self.semantic_ids_, self.collaborative_ids_)):
            a = np.asarray(a)
            if a.dtype == np.bool_ or not np.issubdtype(a.dtype, np.integer):
                raise TypeError(f"published {name} IDs must be integer codes, got dtype {a.dtype}")
            if a.ndim != 2 or a.shape[1] != ref.shape[1]:
                raise ValueError(f"published {name} IDs must have shape (P, {ref.shape[1]}), got {a.shape}")
            if a.size and a.min() < 0:
                raise ValueError(f"published {name} IDs hold a negative code ({int(a.min())})")
            out.append(a.astype(np.int64))
        if out[0].shape[0] != out[1].shape[0]:
            raise ValueError(f"published semantic and collaborative IDs have {out[0].shape[0]} and "
                             f"{out[1].shape[0]} rows; one row per item in both")
        return out

    def level_sizes(self):
        """Codebook sizes of each ID kind's levels: {"semantic": [...], "collaborative": [...]}
        (the codes a token layout must hold for any item, present or future)."""
        self._check_fitted()
        sizes = self._level_sizes()
        kinds = [self._kind_levels(min(t, len(self.dims_q_) - 1)) for t in range(2)]
        return {k: [int(sizes[l]) for l in lv] for k, lv in zip(("semantic", "collaborative"), kinds)}

    # ------------------------------------------------------------------- report
    def training_summary(self):
        """How the RQ-VAE training ended (joint and single methods; None otherwise):
        steps; final_loss, final_reconstruction, final_quantisation: means over
        the last 10% of the steps of the total loss, of the reconstruction terms
        (semantic + collaborative) and of the quantisation term; change: relative
        fall of the mean reconstruction loss from the previous 10% of the steps
        to the last 10%; converged: change < CONVERGED_CHANGE (a plateau);
        restarts: dead codes restarted per level over the whole fit.

        The plateau is judged on the reconstruction loss, not the total: in this
        formulation (the reference's) only the first level's commitment term
        restrains the encoder, so the latent's scale drifts during training and
        the quantisation term (in latent units) drifts with it, rising for
        long stretches while the reconstructions keep improving."""
        self._check_fitted()
        curve = getattr(self, "loss_curve_", np.zeros((0, 5)))
        if self.method not in ("joint", "single"):
            return None
        out = {"steps": int(curve.shape[0]), "final_loss": None, "final_reconstruction": None,
               "final_quantisation": None, "change": None, "converged": None,
               "restarts": list(getattr(self, "restarts_", []))}
        if curve.shape[0] == 0:
            return out
        w = max(1, curve.shape[0] // 10)
        recon = curve[:, 2] + curve[:, 3]
        out.update(final_loss=float(curve[-w:, 1].mean()), final_reconstruction=float(recon[-w:].mean()),
                   final_quantisation=float(curve[-w:, 4].mean()))
        if curve.shape[0] >= 20:
            last, prev = recon[-w:].mean(), recon[-2 * w:-w].mean()
            change = float((prev - last) / max(abs(last), 1e-30))
            out.update(change=change, converged=bool(change < CONVERGED_CHANGE))
        return out

    def report(self):
        """Quality of the fitted identifiers, as a dict:

        - "collision_rate_before" / "collision_rate_after": {"semantic", "collaborative"}
          fraction (N - distinct IDs) / N of the nearest-code IDs and of the final IDs;
          "collisions": the same as counts of items sharing their ID with another item;
        - "levels": pandas DataFrame, one row per (ID kind, level): codebook_size,
          codes_used and utilisation (fraction of codes used; utilisation_pct in
          %) by the final IDs, codes_used_raw (by the nearest codes, before
          collision resolution) and perplexity (exp of the entropy of code usage;
          equals the codebook size when usage is uniform);
        - "training": training_summary() (final loss, converged, restarts);
        - "reconstruction": {"semantic", "collaborative"} -> {"mse" (mean squared error
          per element), "relative" (sum ||xhat - x||^2 / sum ||x||^2)} (empty for random);
        - "n_items", "method", "id_length", "fit_seconds", "moved" (items whose last
          token was changed by collision resolution), "spilled";
        - "summary": all of the above as readable text.
        """
        import pandas as pd

        self._check_fitted()
        kinds = ("semantic", "collaborative")
        ids = (self.semantic_ids_, self.collaborative_ids_)
        rows = []
        sizes = self._level_sizes()
        for t, kind in enumerate(kinds):
            lv = self._kind_levels(min(t, len(self.dims_q_) - 1))
            for j in range(ids[t].shape[1]):
                k = sizes[lv[j]] if j < len(lv) else int(ids[t][:, j].max()) + 1
                perp, util = _perplexity(ids[t][:, j], k)
                raw = (int(np.unique(self._raw_codes[:, lv[j]]).size) if j < len(lv)
                       else None)
                rows.append({"id": kind, "level": j,
                             "part": ("shared" if j < len(self.shared_levels_) else
                                      "specific" if j < len(lv) else "disambiguation"),
                             "codebook_size": k, "codes_used": int(np.unique(ids[t][:, j]).size),
                             "utilisation": util, "utilisation_pct": 100.0 * util,
                             "codes_used_raw": raw, "perplexity": perp})
        before = {}
        for t, kind in enumerate(kinds):
            lv = self._kind_levels(min(t, len(self.dims_q_) - 1))
            before[kind] = _collision_rate(self._raw_codes[:, lv])
        n = int(self.semantic_ids_.shape[0])
        rep = {
            "method": self.method,
            "n_items": n,
            "id_length": {k: int(i.shape[1]) for k, i in zip(kinds, ids)},
            "collision_rate_before": before,
            "collision_rate_after": {k: _collision_rate(i) for k, i in zip(kinds, ids)},
            "collisions": {k: {"before": int(round(before[k] * n)),
                               "after": int(round(_collision_rate(i) * n))}
                           for k, i in zip(kinds, ids)},
            "moved": {k: int(s["moved"]) for k, s in zip(kinds, self._resolve_stats)},
            "spilled": {k: int(s.get("spilled", 0)) for k, s in zip(kinds, self._resolve_stats)},
            "levels": pd.DataFrame(rows),
            "training": self.training_summary(),
            "reconstruction": self._recon,
            "fit_seconds": self.fit_seconds_,
        }
        rep["summary"] = _summary_text(rep)
        return rep

    def _check_fitted(self):
        if not hasattr(self, "semantic_ids_"):
            raise RuntimeError("this DualIDs is not fitted yet: call fit(semantic_emb, collaborative_emb)")

    # ---------------------------------------------------------------- save/load
    _PARAMS = ("shared_levels", "specific_levels", "method", "latent_dim", "hidden", "beta",
               "steps", "epochs", "warmup", "schedule", "batch_size", "lr", "weight_decay",
               "restart_dead_codes", "restart_window", "restart_until", "kmeans_iters",
               "sinkhorn_epsilon", "sinkhorn_iters", "overflow", "adapt_codebooks", "scale_inputs",
               "seed", "progress")

    def save(self, path):
        """Writes the fitted state to one .npz file (arrays + a JSON header; no pickle)."""
        self._check_fitted()
        header = {"format": "gensar.DualIDs", "version": 1,
                  "params": {k: getattr(self, k) for k in self._PARAMS},
                  "dims": list(self.dims_), "shared_levels_": list(self.shared_levels_),
                  "input_scale": list(self.input_scale_),
                  "specific_levels_": list(self.specific_levels_),
                  "extra_level": list(self._extra_level_), "recon": self._recon,
                  "resolve_stats": self._resolve_stats, "history": self.history_,
                  "restarts": list(getattr(self, "restarts_", [])),
                  "fit_seconds": self.fit_seconds_}
        arrays = {"semantic_ids": self.semantic_ids_, "collaborative_ids": self.collaborative_ids_,
                  "raw_codes": self._raw_codes,
                  "loss_curve": getattr(self, "loss_curve_", np.zeros((0, 5)))}
        if self.method in ("joint", "single"):
            arrays.update(params=self._params, adam_m=self._adam_m, adam_v=self._adam_v,
                          step=np.array(_core.rqvae_step_count(self._model)))
        else:
            arrays["codebooks"] = self._codebooks
        from ._io import atomic_write

        path = str(path)
        if not path.endswith(".npz"):  # what np.savez(path) did: keep the name users expect
            path += ".npz"

        def write(tmp):
            with open(tmp, "wb") as f:  # written whole under a temporary name, then renamed
                np.savez(f, header=np.array(json.dumps(header)), **arrays)

        atomic_write(path, write)

    @classmethod
    def load(cls, path):
        """Reads a file written by save(); transform() then works without refitting.
        A missing, truncated or corrupt file (the zip's CRC-32 checks every array)
        raises an error naming it."""
        import zipfile
        from pathlib import Path

        if Path(path).is_dir():
            raise IsADirectoryError(f"{path} is a directory, not a DualIDs file (.npz)")
        if not Path(path).is_file():
            raise FileNotFoundError(f"{path} does not exist (expected a .npz file written by DualIDs.save)")
        try:
            return cls._load(path)
        except (ValueError, KeyError, TypeError, OSError, EOFError, zipfile.BadZipFile) as exc:
            if isinstance(exc, ValueError) and str(exc).startswith(str(path)):
                raise
            raise ValueError(f"{path} is corrupt or not a DualIDs file ({type(exc).__name__}: {exc})") from None

    @classmethod
    def _load(cls, path):
        with np.load(path, allow_pickle=False) as f:
            header = json.loads(str(f["header"]))
            if header.get("format") != "gensar.DualIDs":
                raise ValueError(f"{path} is not a gensar.DualIDs file")
            if header.get("version", 1) > 1:
                raise ValueError(f"{path} has format version {header.get('version')}; this gensar reads version 1")
            p = header["params"]
            self = cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in p.items()})
            self.dims_ = tuple(header["dims"])
            self.input_scale_ = tuple(header["input_scale"])
            self.shared_levels_ = tuple(header["shared_levels_"])
            self.specific_levels_ = tuple(header["specific_levels_"])
            self.dims_q_ = self._rq_dims()
            self._extra_level_ = header["extra_level"]
            self._recon = header["recon"]
            self._resolve_stats = header["resolve_stats"]
            self.history_ = header["history"]
            self.restarts_ = header.get("restarts", [])
            self.loss_curve_ = f["loss_curve"] if "loss_curve" in f else np.zeros((0, 5))
            self.fit_seconds_ = header["fit_seconds"]
            self.semantic_ids_ = f["semantic_ids"]
            self.collaborative_ids_ = f["collaborative_ids"]
            self._raw_codes = f["raw_codes"]
            for name in ("semantic_ids_", "collaborative_ids_"):
                a = getattr(self, name)
                if a.ndim != 2 or not np.issubdtype(a.dtype, np.integer) or (a.size and a.min() < 0):
                    raise ValueError(f"{path}: {name} must be a 2-D array of codes >= 0, got {a.dtype} {a.shape}")
            if self.semantic_ids_.shape[0] != self.collaborative_ids_.shape[0]:
                raise ValueError(f"{path}: semantic_ids_ and collaborative_ids_ have different numbers of items")
            if self.method in ("joint", "single"):
                in_dims = (self.dims_[0],) if self.method == "single" else self.dims_
                n = self.semantic_ids_.shape[0]
                self._model = _core.rqvae_new(in_dims, self.hidden, int(self.latent_dim),
                                              self.shared_levels_, self.specific_levels_,
                                              float(self.beta), int(min(self.batch_size, n)),
                                              int(self.seed))
                self._bind_buffers()
                if f["params"].shape != self._params.shape:
                    raise ValueError(f"{path}: parameter buffer does not match its configuration")
                self._params[:] = f["params"]
                self._adam_m[:] = f["adam_m"]
                self._adam_v[:] = f["adam_v"]
                _core.rqvae_step_count(self._model, int(f["step"]))
            else:
                self._codebooks = f["codebooks"].copy()
        return self

    def __repr__(self):
        length = f"epochs={self.epochs}" if self.epochs is not None else f"steps={self.steps}"
        return (f"DualIDs(method={self.method!r}, shared_levels={self.shared_levels}, "
                f"specific_levels={self.specific_levels}, {length})")


def _summary_text(rep):
    """report() as readable text: one line per level of each ID kind."""
    lines = [f"DualIDs ({rep['method']}), {rep['n_items']} items, fit {rep['fit_seconds']:.1f} s"]
    tr = rep["training"]
    if tr is not None:
        conv = ("n/a (fewer than 20 steps)" if tr["converged"] is None else
                f"{'yes' if tr['converged'] else 'NO'} (reconstruction loss fell "
                f"{100 * tr['change']:+.2f}% from the previous 10% of steps to the last 10%)")
        fl = ("n/a" if tr["final_loss"] is None else
              f"{tr['final_loss']:.5g} (reconstruction {tr['final_reconstruction']:.5g}, "
              f"quantisation {tr['final_quantisation']:.5g})")
        lines.append(f"training: {tr['steps']} steps, final loss {fl}; converged {conv}; "
                     f"dead codes restarted per level {tr['restarts']}")
    for kind in ("semantic", "collaborative"):
        c = rep["collisions"][kind]
        lines.append(f"{kind} IDs ({rep['id_length'][kind]} tokens): colliding items before "
                     f"resolution {c['before']} ({100 * rep['collision_rate_before'][kind]:.1f}%), "
                     f"after {c['after']}; moved {rep['moved'][kind]}, spilled {rep['spilled'][kind]}")
        lv = rep["levels"][rep["levels"].id == kind]
        for r in lv.itertuples():
            raw = "" if r.codes_used_raw is None or r.codes_used_raw != r.codes_used_raw else \
                f" (nearest codes: {int(r.codes_used_raw)})"
            lines.append(f"  level {r.level} {r.part:<8} codes {r.codebook_size:>4}  used "
                         f"{r.codes_used:>4}{raw}  utilisation {r.utilisation_pct:5.1f}%  "
                         f"perplexity {r.perplexity:7.2f}")
    return "\n".join(lines)


def make_synthetic_embeddings(n_items, semantic_dim=768, collaborative_dim=64, n_clusters=100,
                              duplicates=0, seed=0):
    """Synthetic clustered catalogue for tests and benchmarks.

    Items belong to one of n_clusters semantic topics; the collaborative
    embedding follows the topic only partly (each item also joins one of
    n_clusters taste groups), so the two embeddings agree on coarse structure
    and differ in detail, like text and co-click signals. Semantic rows are
    L2-normalised (as bge embeddings are). The last `duplicates` items are exact
    copies of earlier items (both embeddings), to exercise collision handling.
    Returns (semantic (N, semantic_dim), collaborative (N, collaborative_dim)) float32.
    """
    rng = np.random.default_rng(seed)
    topic = rng.integers(0, n_clusters, n_items)
    taste = np.where(rng.random(n_items) < 0.5, topic, rng.integers(0, n_clusters, n_items))
    sc = rng.normal(size=(n_clusters, semantic_dim))
    sem = sc[topic] + 0.35 * rng.normal(size=(n_items, semantic_dim))
    sem /= np.linalg.norm(sem, axis=1, keepdims=True)
    cc = rng.normal(size=(n_clusters, collaborative_dim))
    col = cc[taste] + 0.5 * cc[topic] + 0.3 * rng.normal(size=(n_items, collaborative_dim))
    if duplicates:
        src = rng.integers(0, n_items - duplicates, duplicates)
        sem[n_items - duplicates:] = sem[src]
        col[n_items - duplicates:] = col[src]
    return sem.astype(np.float32), col.astype(np.float32)
