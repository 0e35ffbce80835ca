"""gensar: unified generative search and recommendation (GenSAR) with a C core.

The numeric work (matrix multiply, transformer, quantiser, beam search) runs in
``gensar._core`` (C11 + OpenMP); this package is the Python API around it.
"""
from . import _core
from ._core import get_num_threads, set_num_threads
from .decode import CandidateSets, Trie

__version__ = "0.1.0"

__all__ = ["get_num_threads", "set_num_threads", "__version__", "Trie", "CandidateSets"]
