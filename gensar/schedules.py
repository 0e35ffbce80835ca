"""Learning-rate schedules: callables ``step -> lr`` where ``step`` counts the
optimizer updates already taken (0 for the first update), the convention of
HuggingFace's ``get_*_schedule_with_warmup`` (so with warm-up the very first
update uses lr 0, as there).

    constant(lr, warmup_steps=0)
    linear(lr, total_steps, warmup_steps=0, final_lr=0.0)
    cosine(lr, total_steps, warmup_steps=0, min_lr=0.0, num_cycles=0.5)

Pass one to ``Seq2Seq(..., schedule=...)`` or call it yourself and hand the
value to ``train_step(batch, lr=...)``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["Schedule", "constant", "linear", "cosine"]


def _check(lr, total_steps, warmup_steps):
    if not (lr >= 0 and math.isfinite(lr)):
        raise ValueError(f"lr must be a finite number >= 0, got {lr!r}")
    if warmup_steps < 0:
        raise ValueError(f"warmup_steps must be >= 0, got {warmup_steps}")
    if total_steps is not None and total_steps < 1:
        raise ValueError(f"total_steps must be >= 1, got {total_steps}")
    if total_steps is not None and warmup_steps > total_steps:
        raise ValueError(f"warmup_steps ({warmup_steps}) exceeds total_steps ({total_steps})")


@dataclass(frozen=True)
class Schedule:
    """lr(step) for step = 0, 1, ...: linear warm-up from 0 over ``warmup_steps``,
    then ``kind`` ("constant", "linear" or "cosine") decay to ``final_lr`` at
    ``total_steps`` (and ``final_lr`` after it)."""

    kind: str
    lr: float
    total_steps: int | None = None
    warmup_steps: int = 0
    final_lr: float = 0.0
    num_cycles: float = 0.5

    def __call__(self, step: int) -> float:
        if step < 0:
            raise ValueError(f"step must be >= 0, got {step}")
        if step < self.warmup_steps:
            return self.lr * step / max(1, self.warmup_steps)
        if self.kind == "constant":
            return self.lr
        span = max(1, self.total_steps - self.warmup_steps)
        progress = min(1.0, (step - self.warmup_steps) / span)
        if self.kind == "linear":
            frac = 1.0 - progress
        else:  # cosine
            frac = max(0.0, 0.5 * (1.0 + math.cos(math.pi * 2.0 * self.num_cycles * progress)))
        return self.final_lr + (self.lr - self.final_lr) * frac


def constant(lr: float, warmup_steps: int = 0) -> Schedule:
    """Constant ``lr`` after a linear warm-up of ``warmup_steps`` updates."""
    _check(lr, None, warmup_steps)
    return Schedule("constant", lr, None, warmup_steps)


def linear(lr: float, total_steps: int, warmup_steps: int = 0, final_lr: float = 0.0) -> Schedule:
    """Warm-up, then linear decay from ``lr`` to ``final_lr`` at ``total_steps``."""
    _check(lr, total_steps, warmup_steps)
    return Schedule("linear", lr, total_steps, warmup_steps, final_lr)


def cosine(lr: float, total_steps: int, warmup_steps: int = 0, min_lr: float = 0.0,
           num_cycles: float = 0.5) -> Schedule:
    """Warm-up, then cosine decay from ``lr`` to ``min_lr`` at ``total_steps``
    (half a cosine period by default, as HF's cosine schedule)."""
    _check(lr, total_steps, warmup_steps)
    return Schedule("cosine", lr, total_steps, warmup_steps, min_lr, num_cycles)
