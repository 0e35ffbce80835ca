"""Which CPU this is, and which kernel path gensar's C core runs on it.

The hot C kernels (SGEMM, exponentials, softmax, cross-entropy, GELU, the LM
head's log-sum-exp) exist in three versions: ``"avx512"``, ``"avx2"`` (AVX2 +
FMA) and ``"scalar"`` (portable C). gensar uses the best one the CPU supports.
To force a lower path, set the environment variable ``GENSAR_ISA`` before
importing gensar, or call :func:`set_isa` at run time; :func:`cpu_info` says
which path is in use. Benchmarks print it beside every figure, since times
from different CPUs or paths are not comparable.
"""
from __future__ import annotations

import os
import platform
import warnings

from . import _core

ISAS = ("scalar", "avx2", "avx512")
_FLAGS = ("avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512_bf16", "amx_tile", "amx_bf16")


def cpu_model() -> str:
    """The CPU's model name (from /proc/cpuinfo on Linux), e.g. 'AMD EPYC 9R45'."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def _cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def cpu_info() -> dict:
    """What gensar runs on: a dict with

    - ``cpu``: the CPU model name,
    - ``isa``: the kernel path in use (``"avx512"``, ``"avx2"`` or ``"scalar"``),
    - ``best_isa``: the best path this CPU supports,
    - ``sgemm_kernel``: the matrix-multiply micro-kernel of that path,
    - ``threads``: threads the C kernels use,
    - ``flags``: the CPU features that matter to gensar that this CPU reports.
    """
    flags = _cpu_flags()
    return {"cpu": cpu_model(), "isa": _core.get_isa(), "best_isa": _core.best_isa(),
            "sgemm_kernel": _core.gemm_kernel_name(), "threads": _core.get_num_threads(),
            "flags": [f for f in _FLAGS if f in flags]}


def describe() -> str:
    """One line for benchmark rows and logs: 'CPU model, path avx512, 2 threads'."""
    info = cpu_info()
    return f"{info['cpu']}, kernel path {info['isa']}, {info['threads']} thread(s)"


def set_isa(isa: str) -> None:
    """Run every C kernel on the path ``isa`` from now on: ``"avx512"``,
    ``"avx2"`` or ``"scalar"``. Raises ``ValueError`` for another name or a path
    this CPU does not support (``cpu_info()["best_isa"]`` is the highest)."""
    if not isinstance(isa, str):
        raise TypeError(f"isa must be one of {ISAS}, got {type(isa).__name__}")
    _core.set_isa(isa.strip().lower())


def get_isa() -> str:
    """The kernel path in use."""
    return _core.get_isa()


def _apply_environment() -> None:
    """GENSAR_ISA, read once at import. An unknown name is an error (a typo
    should not pass silently); a path this CPU lacks falls back to the best it
    has, with a warning, so one script runs on every machine."""
    name = os.environ.get("GENSAR_ISA", "").strip().lower()
    if not name:
        return
    if name not in ISAS:
        raise ValueError(f"GENSAR_ISA={os.environ['GENSAR_ISA']!r} is not a kernel path: "
                         f"use one of {', '.join(ISAS)} or unset it")
    if ISAS.index(name) > ISAS.index(_core.best_isa()):
        warnings.warn(f"GENSAR_ISA={name} but this CPU ({cpu_model()}) supports at most "
                      f"{_core.best_isa()}; using {_core.best_isa()}", RuntimeWarning, stacklevel=3)
        return
    _core.set_isa(name)
