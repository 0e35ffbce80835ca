"""gensar: unified generative search and recommendation (GenSAR) with a C core.

The numeric work (matrix multiply, transformer, quantiser, beam search) runs in
``gensar._core`` (C11 + OpenMP); this package is the Python API around it.
"""
import os

# OpenMP threads that spin while waiting for work steal the CPU from each other
# and from every other process when the machine is busy: on a loaded 2-core
# machine, a training step ran 14x slower with spinning than with sleeping.
# Unless the user chose a policy, gensar's threads sleep when idle. This must
# be set before the OpenMP runtime loads with the C core.
if "OMP_WAIT_POLICY" not in os.environ and "GOMP_SPINCOUNT" not in os.environ:
    os.environ["OMP_WAIT_POLICY"] = "PASSIVE"

from . import _core  # noqa: E402
from ._core import get_num_threads, set_num_threads
from . import schedules
from .decode import CandidateSets, Trie
from .seq2seq import Seq2Seq, Seq2SeqConfig
from .ids import DualIDs
from .model import GenSAR, GenSARConfig

__version__ = "0.1.0"

__all__ = ["get_num_threads", "set_num_threads", "Seq2Seq", "Seq2SeqConfig", "schedules",
           "Trie", "CandidateSets", "DualIDs", "GenSAR", "GenSARConfig", "__version__"]
