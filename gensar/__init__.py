"""gensar: unified generative search and recommendation (GenSAR) with a C core.

The numeric work (matrix multiply, transformer, quantiser, beam search) runs in
``gensar._core`` (C11 + OpenMP); this package is the Python API around it.
"""
import os

# How long idle OpenMP threads spin before they sleep. libgomp's default (spin
# for a long time) starves other processes, and gensar itself, on a busy
# machine: a training step ran 14x slower than with sleeping threads on a loaded
# 2-core machine. Sleeping at once (OMP_WAIT_POLICY=PASSIVE) makes every barrier
# inside a matrix multiply pay a wake-up, halving 2-thread SGEMM speed on an
# idle machine. A short spin (30,000 iterations, tens of microseconds) covers
# the barriers and measured best both idle and under load (benchmarks/README.md).
# A user's own OMP_WAIT_POLICY or GOMP_SPINCOUNT wins. This must be set before
# the OpenMP runtime loads with the C core.
if "OMP_WAIT_POLICY" not in os.environ and "GOMP_SPINCOUNT" not in os.environ:
    os.environ["GOMP_SPINCOUNT"] = "30000"

from . import _core  # noqa: E402
from ._core import get_num_threads, set_num_threads
from .cpu import cpu_info, get_isa, get_precision, set_isa, set_precision
from . import cpu as _cpu

_cpu._apply_environment()
from . import schedules
from .decode import CandidateSets, Trie
from .seq2seq import Seq2Seq, Seq2SeqConfig
from .ids import DualIDs
from .model import GenSAR, GenSARConfig

__version__ = "0.1.0"

__all__ = ["get_num_threads", "set_num_threads", "cpu_info", "get_isa", "set_isa", "get_precision", "set_precision", "Seq2Seq", "Seq2SeqConfig", "schedules",
           "Trie", "CandidateSets", "DualIDs", "GenSAR", "GenSARConfig", "__version__"]
