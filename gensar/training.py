"""The training loop: Python drives epochs and batches, C does each step.

:class:`Trainer` runs a model's ``train_step`` over seeded epochs with a
progress bar (loss, examples/s), validates after every epoch, keeps the best
checkpoint by a chosen metric, stops early after `patience` epochs without
improvement, and resumes exactly after an interruption: the model and its
optimizer state, the schedule position, and the data order (each epoch's order
depends only on (seed, epoch), so a resumed epoch skips the batches already
done and continues with the very same batches).

The model must provide ``train_step(batch, lr) -> float``,
``state_dict() -> dict[str, ndarray]`` (weights and optimizer state) and
``load_state_dict(dict)``.

Under ``mpirun -np N`` (see :mod:`gensar.distributed`) the same code trains
data-parallel: each rank takes its share of every batch, one allreduce sums the
gradients, every rank applies the same step. Rank 0 alone writes checkpoints and
shows progress; on resume it reads the checkpoint and broadcasts it. A model
without ``train_grads`` / ``apply_grads`` / ``grad_buffer`` is trained whole on
every rank (identical results, no speed-up).
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd


def _load_file(path):
    from safetensors.numpy import load_file

    return load_file(str(path))


def make_schedule(lr: float, total_steps: int, schedule: str = "cosine", warmup: float = 0.01):
    """A gensar.schedules schedule over total_steps with warm-up over the first
    `warmup` share of steps."""
    from . import schedules

    if schedule not in ("constant", "linear", "cosine"):
        raise ValueError(f"schedule must be 'constant', 'linear' or 'cosine', got {schedule!r}")
    total_steps = max(1, int(total_steps))
    warm = int(math.ceil(warmup * total_steps)) if warmup > 0 else 0
    if schedule == "constant":
        return schedules.constant(lr, warm)
    return getattr(schedules, schedule)(lr, total_steps, warm)


@dataclass
class TrainerState:
    epoch: int = 0              # epochs fully done
    batch_in_epoch: int = 0     # batches of the current epoch done
    step: int = 0               # optimizer steps done in total
    best: float = -math.inf
    best_epoch: int = -1
    bad_epochs: int = 0
    history: list = field(default_factory=list)
    step_losses: list = field(default_factory=list)  # loss of every step, for curves


class Trainer:
    """Runs training with validation, early stopping, best checkpoint and resume.

    model : object with train_step / state_dict / load_state_dict (see module doc)
    make_epoch : epoch -> list of batches (dicts); must depend only on the epoch
        number (and fixed seeds) so a resumed run sees the same batches
    epochs : maximum number of epochs
    lr, schedule, warmup : learning-rate schedule (see make_schedule); the
        number of steps per epoch is taken from make_epoch(0)
    validate : () -> dict of metrics, run after each epoch (None: no validation)
    metric : key of the validate() dict to maximise for early stopping
    patience : epochs without improvement before stopping (0: never stop early)
    checkpoint_dir : where "last/" and "best/" go (None: keep the best in memory)
    """

    def __init__(self, model, make_epoch: Callable[[int], list], epochs: int, lr: float = 1e-3,
                 schedule: str = "cosine", warmup: float = 0.01, validate=None,
                 metric: str | None = None, patience: int = 0, checkpoint_dir=None,
                 progress: bool = True, description: str = "train",
                 checkpoint_every_s: float = 120.0):
        if epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {epochs}")
        if validate is not None and metric is None:
            raise ValueError("give the metric to maximise when validate is set")
        self.model, self.make_epoch, self.epochs = model, make_epoch, int(epochs)
        self.lr, self.schedule, self.warmup = float(lr), schedule, float(warmup)
        make_schedule(self.lr, 1, schedule, warmup)  # validates the schedule early
        self.validate, self.metric, self.patience = validate, metric, int(patience)
        self.checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir is not None else None
        self.progress, self.description = progress, description
        self.checkpoint_every_s = checkpoint_every_s
        self.state = TrainerState()
        self.best_state_: dict | None = None
        from .distributed import world

        self.world = world()

    # ------------------------------------------------------------------ checkpoints
    def _save(self, which: str, with_state: bool) -> None:
        """Writes checkpoint_dir/which/model.safetensors: the model's state_dict and,
        with with_state, the trainer's state in the file's metadata. One file renamed
        into place (temporary name + os.replace), so weights and trainer state can
        never come from two different saves. trainer.json repeats the state for
        people reading the directory; resume() trusts the metadata."""
        if self.checkpoint_dir is None:
            if which == "best":
                self.best_state_ = {k: v.copy() for k, v in self.model.state_dict().items()}
            return
        if not self.world.is_root:  # every rank holds the same state; one writes it
            return
        from safetensors.numpy import save_file

        from ._io import atomic_write, atomic_write_text

        d = self.checkpoint_dir / which
        d.mkdir(parents=True, exist_ok=True)
        tensors = {k: np.ascontiguousarray(v) for k, v in self.model.state_dict().items()}
        meta = {"trainer_state": json.dumps(self.state.__dict__)} if with_state else None
        atomic_write(d / "model.safetensors", lambda tmp: save_file(tensors, str(tmp), metadata=meta))
        if with_state:
            atomic_write_text(d / "trainer.json", meta["trainer_state"])

    def resume(self) -> bool:
        """Loads checkpoint_dir/last if present; returns whether it did. A checkpoint
        that cannot be read raises ValueError naming the file. Under MPI rank 0 reads
        it and every rank receives it."""
        if self.checkpoint_dir is None:
            return False
        found = self.world.bcast_call(self._read_last)
        if found is None:
            return False
        tensors, state = found
        self.model.load_state_dict(tensors)
        self.state = state
        return True

    def _read_last(self):
        """(tensors, TrainerState) of checkpoint_dir/last, or None if there is none."""
        d = self.checkpoint_dir / "last"
        path = d / "model.safetensors"
        if not path.is_file():
            return None
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="np") as f:
                meta = f.metadata() or {}
                tensors = {k: f.get_tensor(k) for k in f.keys()}
        except Exception as exc:  # safetensors raises its own error types
            raise ValueError(f"checkpoint {path} is unreadable (truncated or corrupt?): {exc}") from None
        if "trainer_state" in meta:
            raw = meta["trainer_state"]
        elif (d / "trainer.json").is_file():  # checkpoints written before the state moved into the file
            raw = (d / "trainer.json").read_text()
        else:
            return None
        try:
            state = TrainerState(**json.loads(raw))
        except (ValueError, TypeError) as exc:
            raise ValueError(f"checkpoint {d}: the trainer state is corrupt ({exc})") from None
        return tensors, state

    def load_best(self) -> None:
        """Puts the best checkpoint's weights back into the model."""
        path = None if self.checkpoint_dir is None else self.checkpoint_dir / "best" / "model.safetensors"
        best = self.world.bcast_call(lambda: _load_file(path) if path is not None and path.is_file() else None)
        if best is not None:
            self.model.load_state_dict(best)
        elif self.best_state_ is not None:
            self.model.load_state_dict(self.best_state_)

    # ------------------------------------------------------------------ loop
    @property
    def loss_curve(self) -> pd.DataFrame:
        """Training loss of every step: DataFrame (step, loss)."""
        return pd.DataFrame({"step": np.arange(1, len(self.state.step_losses) + 1),
                             "loss": self.state.step_losses})

    def fit(self, resume: bool = True) -> pd.DataFrame:
        """Trains; returns the per-epoch history (loss, lr, time, validation metrics)."""
        from tqdm.auto import tqdm

        from .distributed import check_in_sync, data_parallel_step, supports

        w = self.world
        if not (resume and self.resume()) and w.size > 1:
            # the same start everywhere, whatever each rank's initialisation did
            self.model.load_state_dict(w.bcast(self.model.state_dict() if w.is_root else None))
        parallel = w.size > 1 and supports(self.model)
        progress = self.progress and w.is_root
        st = self.state
        first = self.make_epoch(0)  # its length sets the schedule; epoch 0 then trains on it
        steps_per_epoch = len(first)
        lr_of = make_schedule(self.lr, steps_per_epoch * self.epochs, self.schedule, self.warmup)
        last_save = time.monotonic()
        try:
            while st.epoch < self.epochs:
                batches = first if st.epoch == 0 else self.make_epoch(st.epoch)
                first = None
                bar = tqdm(total=len(batches), initial=st.batch_in_epoch, disable=not progress,
                           desc=f"{self.description} epoch {st.epoch + 1}/{self.epochs}", leave=False)
                t0, losses, seen = time.perf_counter(), [], 0
                for b in batches[st.batch_in_epoch:]:
                    lr = lr_of(st.step)
                    if parallel:
                        loss = data_parallel_step(self.model, b, lr, w)
                    else:
                        loss = float(self.model.train_step(b, lr))
                    if not math.isfinite(loss):
                        raise FloatingPointError(
                            f"loss became {loss} at step {st.step}; lower the learning rate "
                            f"(now {self.lr}) or the gradient-clipping norm")
                    losses.append(loss)
                    st.step_losses.append(loss)
                    seen += len(b["input_ids"])
                    st.step += 1
                    st.batch_in_epoch += 1
                    bar.update(1)
                    # shown at the bar's next timed redraw, not one redraw per step
                    bar.set_postfix(loss=f"{np.mean(losses[-50:]):.3f}",
                                    ex_s=f"{seen / (time.perf_counter() - t0):.0f}", refresh=False)
                    if time.monotonic() - last_save > self.checkpoint_every_s:
                        self._save("last", True)
                        last_save = time.monotonic()
                bar.close()
                row = {"epoch": st.epoch + 1, "loss": float(np.mean(losses)) if losses else float("nan"),
                       "lr": lr_of(max(0, st.step - 1)),
                       "seconds": time.perf_counter() - t0}
                st.epoch += 1
                st.batch_in_epoch = 0
                check_in_sync(self.model, w)
                stop = False
                if self.validate is not None:
                    metrics = self.validate()
                    row.update(metrics)
                    if self.metric not in metrics:
                        raise KeyError(f"validate() returned no {self.metric!r}; it has {sorted(metrics)}")
                    if metrics[self.metric] > st.best:
                        st.best, st.best_epoch, st.bad_epochs = float(metrics[self.metric]), st.epoch, 0
                        self._save("best", False)
                    else:
                        st.bad_epochs += 1
                        stop = self.patience > 0 and st.bad_epochs >= self.patience
                st.history.append(row)
                if progress:
                    shown = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items())
                    tqdm.write(f"[{self.description}] {shown}")
                self._save("last", True)
                last_save = time.monotonic()
                if stop:
                    break
        except KeyboardInterrupt:
            self._save("last", True)
            where = f" from {self.checkpoint_dir / 'last'}" if self.checkpoint_dir else ""
            raise KeyboardInterrupt(f"training interrupted at epoch {st.epoch + 1}, batch "
                                    f"{st.batch_in_epoch}; fit() again resumes{where}") from None
        if self.validate is not None:
            self.load_best()
        return pd.DataFrame(st.history)
