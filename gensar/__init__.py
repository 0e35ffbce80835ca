"""gensar: unified generative search and recommendation (GenSAR) with a C core.

The numeric work (matrix multiply, transformer, quantiser, beam search) runs in
``gensar._core`` (C11 + OpenMP); this package is the Python API around it.
"""
from . import _core
from ._core import get_num_threads, set_num_threads
from . import schedules
from .decode import CandidateSets, Trie
from .seq2seq import Seq2Seq, Seq2SeqConfig
from .ids import DualIDs
from .model import GenSAR, GenSARConfig

__version__ = "0.1.0"

__all__ = ["get_num_threads", "set_num_threads", "Seq2Seq", "Seq2SeqConfig", "schedules",
           "Trie", "CandidateSets", "DualIDs", "GenSAR", "GenSARConfig", "__version__"]
