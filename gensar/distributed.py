"""Data-parallel training over processes and machines with MPI (Open MPI via mpi4py).

Nothing to call: run the same program under ``mpirun``::

    pip install "gensar[mpi]"                     # mpi4py; Open MPI from the system packages
    mpirun -np 4 gensar train --config cfg.json --out model/
    mpirun -np 4 python my_script.py              # the Python API, unchanged

gensar detects MPI from the launcher's environment (``OMPI_COMM_WORLD_SIZE`` of
Open MPI, ``PMI_SIZE`` of MPICH/Hydra) and imports mpi4py only then, so a plain
``python`` run never touches MPI. ``GENSAR_MPI=0`` switches it off under mpirun
(every process then trains alone).

What runs where
---------------
- Data preparation, embeddings, SASRec and the identifiers run on every process
  (each has the whole dataset); rank 0's identifiers and pseudo-queries are then
  broadcast, so every process trains on the very same tasks even if thread counts
  differ between machines.
- Training (:class:`gensar.training.Trainer`): every process builds the same
  global batches (they depend only on the seed and the epoch). Each rank runs
  forward + backward on its contiguous share of the rows of each batch, scales its
  gradient by its share of the batch's target tokens (n_rank / n_batch: the loss is
  a mean over tokens, so shards are weighted by tokens, not counted equally) and
  writes its share of the loss into the slot after the gradients
  (``Seq2Seq.grad_buffer``). ONE in-place allreduce (sum) of that buffer per step
  then gives every rank the global batch's mean-token gradient and loss, and every
  rank applies the same clipping + AdamW step, so parameters stay identical (this
  is checked after every epoch). With dropout off, np = N reproduces np = 1 with
  the same global batch up to float rounding (tests/test_mpi.py); dropout masks
  are drawn per shard (rank-dependent seeds), the same distribution as np = 1 but
  not the same masks.
- Evaluation (``GenSAR.evaluate``, also the per-epoch validation): the cases are
  split across ranks, each decodes its share, and the ranked lists are gathered
  (to every rank, so all take the same early-stopping decision).
- Checkpoints and ``GenSAR.save`` are written by rank 0 only; on resume rank 0
  reads the checkpoint and broadcasts it, so no shared file system is needed.

Threads: under mpirun without ``OMP_NUM_THREADS``, each process uses
cores / (processes on its node) OpenMP threads, so the node is not oversubscribed.
"""
from __future__ import annotations

import hashlib
import os
import warnings

import numpy as np

__all__ = ["World", "world", "shard", "data_parallel_step"]

IGNORE_INDEX = -100
_SIZE_VARS = ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE")


class World:
    """The processes of this run: ``rank``, ``size``, and the few collectives gensar
    needs. ``size == 1`` (no MPI) makes every collective a no-op."""

    def __init__(self, comm=None):
        self.comm = comm
        self.rank = 0 if comm is None else int(comm.Get_rank())
        self.size = 1 if comm is None else int(comm.Get_size())

    @property
    def is_root(self) -> bool:
        return self.rank == 0

    def allreduce_sum_(self, buf: np.ndarray) -> None:
        """Sums a float32 C-contiguous buffer over all ranks, in place (zero copy)."""
        if self.size == 1:
            return
        if buf.dtype != np.float32 or not buf.flags.c_contiguous:
            raise ValueError("allreduce_sum_ needs a C-contiguous float32 buffer")
        from mpi4py import MPI

        self.comm.Allreduce(MPI.IN_PLACE, buf, op=MPI.SUM)

    def bcast(self, obj, root: int = 0):
        """obj of `root`, on every rank (pickled)."""
        return obj if self.size == 1 else self.comm.bcast(obj, root=root)

    def allgather(self, obj) -> list:
        """[obj of rank 0, obj of rank 1, ...] on every rank (pickled)."""
        return [obj] if self.size == 1 else self.comm.allgather(obj)

    def barrier(self) -> None:
        if self.size > 1:
            self.comm.Barrier()

    def bcast_call(self, fn):
        """Runs fn() on rank 0 and returns its result on every rank; an exception
        raised by fn on rank 0 is raised on every rank (no rank waits forever)."""
        if self.size == 1:
            return fn()
        out = None
        if self.is_root:
            try:
                out = ("ok", fn())
            except Exception as exc:  # re-raised below, on every rank
                out = ("error", exc)
        out = self.bcast(out)
        if out[0] == "error":
            raise out[1]
        return out[1]

    def __repr__(self) -> str:
        return f"World(rank={self.rank}, size={self.size})"


_WORLD: World | None = None


def launched_size() -> int:
    """Processes the MPI launcher started (1 without a launcher or with GENSAR_MPI=0)."""
    if os.environ.get("GENSAR_MPI", "1") == "0":
        return 1
    for var in _SIZE_VARS:
        v = os.environ.get(var)
        if v and v.isdigit():
            return int(v)
    return 1


def world() -> World:
    """The World of this process (created on first use; mpi4py imported only when a
    launcher started more than one process)."""
    global _WORLD
    if _WORLD is None:
        if launched_size() <= 1:
            _WORLD = World()
        else:
            try:
                from mpi4py import MPI
            except ImportError:
                raise ImportError("this process was started by mpirun with several processes but mpi4py "
                                  "is not installed: pip install 'gensar[mpi]' (or set GENSAR_MPI=0 to "
                                  "train each process alone)") from None
            _WORLD = World(MPI.COMM_WORLD)
            _share_cores(_WORLD)
    return _WORLD


def _share_cores(w: World) -> None:
    """Without OMP_NUM_THREADS, give each of the node's processes an equal share of its cores."""
    if os.environ.get("OMP_NUM_THREADS"):
        return
    local = os.environ.get("OMPI_COMM_WORLD_LOCAL_SIZE") or os.environ.get("MPI_LOCALNRANKS") or "1"
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count() or 1
    from . import _core

    _core.set_num_threads(max(1, cores // max(1, int(local) if local.isdigit() else 1)))


def shard(n: int, w: World | None = None) -> slice:
    """This rank's contiguous share of n rows (sizes differ by at most one; ranks
    beyond n get an empty slice)."""
    w = world() if w is None else w
    bounds = np.linspace(0, n, w.size + 1).round().astype(int)
    return slice(int(bounds[w.rank]), int(bounds[w.rank + 1]))


def _rows(batch: dict, sl: slice) -> dict:
    return {k: np.asarray(v)[sl] for k, v in batch.items()}


def supports(model) -> bool:
    """Whether a model can take data-parallel steps (gensar.Seq2Seq can)."""
    return all(hasattr(model, a) for a in ("train_grads", "apply_grads", "grad_buffer"))


def data_parallel_step(model, batch: dict, lr: float, w: World | None = None) -> float:
    """One optimiser step on the global `batch` spread over the ranks; returns the
    global batch's mean token loss (equal on every rank). See the module doc.

    model : a gensar.Seq2Seq (train_grads / apply_grads / grad_buffer)
    batch : dict with input_ids (B, T_in) (or item bags (B, T_in, K)), labels (B, T_dec) (-100 = ignored) and
        optional attention_mask / decoder_input_ids; the same on every rank
    """
    w = world() if w is None else w
    if not supports(model):
        raise TypeError(f"model must provide train_grads, apply_grads and grad_buffer (a gensar.Seq2Seq), "
                        f"got {type(model).__name__}")
    if not isinstance(batch, dict) or "labels" not in batch or "input_ids" not in batch:
        raise TypeError("batch must be a dict with 'input_ids' and 'labels' (and optionally "
                        "'attention_mask', 'decoder_input_ids'), one row per example")
    labels = np.asarray(batch["labels"])
    if labels.ndim != 2:
        raise ValueError(f"batch['labels'] must be 2-dimensional (rows, length), got shape {labels.shape}")
    total = int((labels != IGNORE_INDEX).sum())       # every rank holds the whole batch
    if total == 0:
        raise ValueError("the batch has no target token (every label is -100): nothing to learn from")
    sl = shard(len(labels), w)
    mine = int((labels[sl] != IGNORE_INDEX).sum())
    buf = model.grad_buffer                            # grads + 1 free slot, one C buffer
    if mine == 0:                                      # fewer rows than ranks, or only ignored labels
        buf[:] = 0.0
    else:
        # rank-dependent dropout masks: rank 0 keeps the masks of a 1-process run
        loss = model.train_grads(_rows(batch, sl), dropout_seed=model.seed + 1_000_003 * w.rank)
        share = np.float32(mine / total)
        buf[:-1] *= share
        buf[-1] = np.float32(loss) * share
    w.allreduce_sum_(buf)
    loss = float(buf[-1])
    model.apply_grads(lr)
    return loss


def params_digest(model) -> str:
    """sha256 of the model's parameters (to check that ranks agree)."""
    return hashlib.sha256(memoryview(np.ascontiguousarray(model.params)).cast("B")).hexdigest()


def check_in_sync(model, w: World | None = None) -> bool:
    """True if every rank holds the same parameters; if not, rank 0's state is
    broadcast to all (with a warning) so training continues consistently."""
    w = world() if w is None else w
    if w.size == 1:
        return True
    digests = w.allgather(params_digest(model))
    if len(set(digests)) == 1:
        return True
    warnings.warn("data-parallel ranks hold different parameters (an MPI reduction that is not "
                  "bitwise identical on every rank?); re-synchronising from rank 0", RuntimeWarning,
                  stacklevel=2)
    model.load_state_dict(w.bcast(model.state_dict() if w.is_root else None))
    return False
