"""Which CPU this is, and which kernel path gensar's C core runs on it.

The hot C kernels (SGEMM, exponentials, softmax, cross-entropy, GELU, the LM
head's log-sum-exp) exist in three versions: ``"avx512"``, ``"avx2"`` (AVX2 +
FMA) and ``"scalar"`` (portable C). gensar uses the best one the CPU supports.
To force a lower path, set the environment variable ``GENSAR_ISA`` before
importing gensar, or call :func:`set_isa` at run time; :func:`cpu_info` says
which path is in use. Benchmarks print it beside every figure, since times
from different CPUs or paths are not comparable.

Opt-in bf16 matrix products: on CPUs with AVX512-BF16 (Intel Cooper Lake,
Sapphire Rapids and later; AMD Zen 4/5), :func:`set_precision` ``("bf16")`` or
``GENSAR_PRECISION=bf16`` makes every SGEMM (linear layers forward and
backward, the LM head: training and inference of every model) round its two
inputs to bfloat16 and sum the products in fp32. Master weights, gradients,
optimiser state, attention score products, norms and every other kernel stay
fp32. Default ``"fp32"``. The beam search's packed LM head (its log-normaliser)
always runs in fp32, so that it matches the fp32 logits of the candidate tokens.
"""
from __future__ import annotations

import os
import platform
import warnings

from . import _core

ISAS = ("scalar", "avx2", "avx512")
PRECISIONS = ("fp32", "bf16")
_FLAGS = ("avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512_bf16", "amx_tile", "amx_bf16")


def _cpuinfo_fields() -> dict:
    """The first processor's fields of /proc/cpuinfo (Linux); {} elsewhere."""
    out = {}
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if not line.strip():
                    break  # the end of the first processor's block
                key, _, value = line.partition(":")
                out[key.strip()] = value.strip()
    except OSError:
        pass
    return out


def cpu_model() -> str:
    """The CPU's model name with its family and model numbers (as lscpu shows them),
    e.g. 'Intel(R) Xeon(R) Processor (family 6, model 207)': virtual machines often
    report a generic name, and the numbers tell the CPU generations apart."""
    f = _cpuinfo_fields()
    name = f.get("model name") or platform.processor() or platform.machine() or "unknown CPU"
    if "cpu family" in f and "model" in f:
        name += f" (family {f['cpu family']}, model {f['model']})"
    return name


def _cpu_flags() -> set[str]:
    return set(_cpuinfo_fields().get("flags", "").split())


def cpu_info() -> dict:
    """What gensar runs on: a dict with

    - ``cpu``: the CPU model name,
    - ``isa``: the kernel path in use (``"avx512"``, ``"avx2"`` or ``"scalar"``),
    - ``best_isa``: the best path this CPU supports,
    - ``sgemm_kernel``: the matrix-multiply micro-kernel of that path,
    - ``threads``: threads the C kernels use,
    - ``precision``: of the matrix products, ``"fp32"`` or ``"bf16"`` (:func:`set_precision`),
    - ``bf16``: whether this CPU can run the bf16 products,
    - ``flags``: the CPU features that matter to gensar that this CPU reports.
    """
    flags = _cpu_flags()
    return {"cpu": cpu_model(), "isa": _core.get_isa(), "best_isa": _core.best_isa(),
            "sgemm_kernel": _core.gemm_kernel_name(), "threads": _core.get_num_threads(),
            "precision": _core.get_precision(), "bf16": _core.has_bf16(),
            "flags": [f for f in _FLAGS if f in flags]}


def describe() -> str:
    """One line for benchmark rows and logs: 'CPU model, path avx512, 2 threads'."""
    info = cpu_info()
    precision = f", bf16 products ({info['sgemm_kernel']})" if info["precision"] == "bf16" else ""
    return f"{info['cpu']}, kernel path {info['isa']}{precision}, {info['threads']} thread(s)"


def set_isa(isa: str) -> None:
    """Run every C kernel on the path ``isa`` from now on: ``"avx512"``,
    ``"avx2"`` or ``"scalar"``. Raises ``ValueError`` for another name or a path
    this CPU does not support (``cpu_info()["best_isa"]`` is the highest), or a
    path below ``"avx512"`` while the precision is ``"bf16"``."""
    if not isinstance(isa, str):
        raise TypeError(f"isa must be one of {ISAS}, got {type(isa).__name__}")
    _core.set_isa(isa.strip().lower())


def get_isa() -> str:
    """The kernel path in use."""
    return _core.get_isa()


def set_precision(precision: str) -> None:
    """Precision of every matrix product (SGEMM) from now on: ``"fp32"`` (the
    default) or ``"bf16"`` (inputs rounded to bfloat16, fp32 sums; see the
    module docstring for what it covers). Raises ``ValueError`` for another name,
    for ``"bf16"`` on a CPU without AVX512-BF16 (``cpu_info()["bf16"]``), or
    while a path below ``"avx512"`` is forced; ``TypeError`` for a non-str.
    Back to ``"fp32"``, results are bit-identical to never having switched."""
    if not isinstance(precision, str):
        raise TypeError(f"precision must be one of {PRECISIONS}, got {type(precision).__name__}")
    _core.set_precision(precision.strip().lower())


def get_precision() -> str:
    """The precision of the matrix products: ``"fp32"`` or ``"bf16"``."""
    return _core.get_precision()


def _apply_environment() -> None:
    """GENSAR_ISA, then GENSAR_PRECISION, read once at import."""
    _apply_isa_environment()
    _apply_precision_environment()


def _apply_isa_environment() -> None:
    """GENSAR_ISA. An unknown name is an error (a typo
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
                      f"{_core.best_isa()}; using {_core.best_isa()}", RuntimeWarning, stacklevel=4)
        return
    _core.set_isa(name)


def _apply_precision_environment() -> None:
    """GENSAR_PRECISION: an unknown name is an error; bf16 where it cannot run
    (no AVX512-BF16, or GENSAR_ISA below avx512) warns and stays fp32."""
    name = os.environ.get("GENSAR_PRECISION", "").strip().lower()
    if not name:
        return
    if name not in PRECISIONS:
        raise ValueError(f"GENSAR_PRECISION={os.environ['GENSAR_PRECISION']!r} is not a precision: "
                         f"use one of {', '.join(PRECISIONS)} or unset it")
    if name == "bf16" and not (_core.has_bf16() and _core.get_isa() == "avx512"):
        why = (f"this CPU ({cpu_model()}) has no AVX512-BF16" if not _core.has_bf16()
               else f"the kernel path is {_core.get_isa()}, not avx512")
        warnings.warn(f"GENSAR_PRECISION=bf16 but {why}; using fp32", RuntimeWarning, stacklevel=4)
        return
    _core.set_precision(name)
