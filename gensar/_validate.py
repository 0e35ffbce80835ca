"""Argument checks shared by the public Python API.

Every check names the argument it rejects and says what it expected, so a
misuse fails at the call that made it with a message a user can act on, and
never deep inside NumPy, pandas, the tokenizers library or the C core.
Counts must be real integers: a float (2.9) or a bool (True) where a count is
meant is refused rather than truncated.
"""
from __future__ import annotations

import math
import numbers

import numpy as np


def is_int(v) -> bool:
    """True for Python / NumPy integers, False for bools and everything else."""
    return isinstance(v, (numbers.Integral, np.integer)) and not isinstance(v, (bool, np.bool_))


def check_int(name: str, v, minimum: int | None = None, maximum: int | None = None) -> int:
    """v as a Python int; TypeError unless an integer, ValueError outside [minimum, maximum]."""
    if not is_int(v):
        raise TypeError(f"{name} must be an integer, got {type(v).__name__} {v!r}")
    v = int(v)
    if minimum is not None and v < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {v}")
    if maximum is not None and v > maximum:
        raise ValueError(f"{name} must be <= {maximum}, got {v}")
    return v


def check_float(name: str, v, minimum: float | None = None, maximum: float | None = None,
                strict_min: bool = False, strict_max: bool = False, allow_inf: bool = False) -> float:
    """v as a Python float in range; bools, non-numbers and NaN are refused.

    strict_min / strict_max: the bound is exclusive (v > minimum, e.g. a learning
    rate; v < maximum, e.g. Adam's betas). allow_inf: +-inf pass (when in range),
    e.g. a gradient-norm limit of inf (no clipping)."""
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, (numbers.Real, np.floating, np.integer)):
        raise TypeError(f"{name} must be a number, got {type(v).__name__} {v!r}")
    f = float(v)
    if math.isnan(f) or (math.isinf(f) and not allow_inf):
        raise ValueError(f"{name} must be finite, got {f}")
    if minimum is not None and (f <= minimum if strict_min else f < minimum):
        raise ValueError(f"{name} must be {'>' if strict_min else '>='} {minimum}, got {f}")
    if maximum is not None and (f >= maximum if strict_max else f > maximum):
        raise ValueError(f"{name} must be {'<' if strict_max else '<='} {maximum}, got {f}")
    return f


def check_ks(ks, name: str = "ks") -> tuple:
    """A non-empty sequence of distinct positive integer cut-offs, as a tuple of ints."""
    if is_int(ks):
        ks = (ks,)
    if isinstance(ks, (str, bytes)) or not hasattr(ks, "__iter__"):
        raise TypeError(f"{name} must be a sequence of positive integers, got {type(ks).__name__} {ks!r}")
    ks = tuple(ks)
    if not ks:
        raise ValueError(f"{name} must hold at least one cut-off")
    out = tuple(check_int(f"{name}[{i}]", k, minimum=1) for i, k in enumerate(ks))
    if len(set(out)) != len(out):
        raise ValueError(f"{name} must not repeat a cut-off, got {out}")
    return out


def check_str_list(name: str, values, allow_empty_list: bool = False) -> list:
    """A list of str from a str or an iterable of str; names the first bad element."""
    if isinstance(values, str):
        return [values]
    if isinstance(values, bytes) or not hasattr(values, "__iter__"):
        raise TypeError(f"{name} must be a string or a list of strings, got {type(values).__name__} {values!r}")
    values = list(values)
    if not values and not allow_empty_list:
        raise ValueError(f"{name} is empty: pass at least one")
    for i, v in enumerate(values):
        if not isinstance(v, str):
            raise TypeError(f"{name}[{i}] must be a string, got {type(v).__name__} {v!r}")
    return values
