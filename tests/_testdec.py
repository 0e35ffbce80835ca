"""Beam search on the tiny recurrent test decoder of tests/csrc/testdec.h.

The test decoder belongs to the tests, not to the product, so it is not compiled
into gensar._core. Design (the least fragile found): at first use the two C files
of tests/csrc/ are compiled into a small shared library in a temporary directory
and loaded with ctypes. That library holds only the decoder and one entry point;
everything else it calls (gs_beam_search, the tries, gs_fail, allocation) is
resolved against the already-imported gensar._core, which is re-opened with
RTLD_GLOBAL (RTLD_NOLOAD: the same loaded copy, not a second one), so the tests
exercise the shipped beam search. Its only needs are a C compiler (any source
build of gensar has one) and the csrc/ headers of a source checkout; without
them the tests using it are skipped, not failed.

    h <- tanh(E[token] + h @ A),  logits = h @ O + U[input]
    A (D, D), E (V, D), O (D, V), U (B, V) float32
"""
import ctypes
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pytest

import gensar._core as _core
from gensar.decode import CandidateSets, Trie, _DUP_POLICIES, _check_beam_args

_HERE = Path(__file__).resolve().parent
_SOURCES = [_HERE / "csrc" / "testdec.c", _HERE / "csrc" / "testdec_search.c"]
_CSRC = _HERE.parent / "csrc"
_lib = None


def _load():
    global _lib
    if _lib is not None:
        return _lib
    cc = os.environ.get("CC", "gcc")
    if shutil.which(cc) is None or not (_CSRC / "decode" / "beam.h").exists():
        pytest.skip("the test decoder needs a C compiler and the csrc/ headers (source checkout)")
    out_dir = Path(tempfile.mkdtemp(prefix="gensar_testdec_"))
    so = out_dir / "libgensar_testdec.so"
    cmd = [cc, "-std=c11", "-O1", "-g", "-fPIC", "-shared", "-fopenmp", f"-I{_CSRC}",
           f"-I{_HERE / 'csrc'}", *map(str, _SOURCES), "-o", str(so)]
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        raise RuntimeError(f"compiling the test decoder failed:\n{' '.join(cmd)}\n{res.stderr}")
    # Make _core's symbols visible to the library about to be loaded.
    core = ctypes.CDLL(_core.__file__, mode=os.RTLD_NOLOAD | os.RTLD_GLOBAL)
    lib = ctypes.CDLL(str(so))
    shutil.rmtree(out_dir, ignore_errors=True)  # the mapping stays valid after unlink
    f32p, i32p, i64p = (np.ctypeslib.ndpointer(t, flags="C_CONTIGUOUS")
                        for t in (np.float32, np.int32, np.int64))
    lib.gs_testdec_search.restype = ctypes.c_int
    lib.gs_testdec_search.argtypes = [
        ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64, ctypes.c_int, ctypes.c_void_p,
        ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_int,
        f32p, f32p, f32p, f32p, ctypes.c_int, ctypes.c_int, i64p, f32p]
    core.gs_last_error.restype = ctypes.c_char_p  # the message lives in _core
    lib.last_error = core.gs_last_error
    _lib = lib
    return lib


def _f32_2d(x, name):
    if not isinstance(x, np.ndarray) or x.dtype != np.float32:
        raise TypeError(f"{name} must be a float32 numpy array, got {getattr(x, 'dtype', type(x))}")
    if x.ndim != 2 or x.size == 0:
        raise ValueError(f"{name} must be a non-empty 2-D array, got shape {x.shape}")
    return np.ascontiguousarray(x)


_capsule_pointer = ctypes.pythonapi.PyCapsule_GetPointer
_capsule_pointer.restype = ctypes.c_void_p
_capsule_pointer.argtypes = [ctypes.py_object, ctypes.c_char_p]


def beam_search_test_decoder(A, E, O, U, trie_or_candidates, num_beams, top_k=None):
    """(items (B, top_k) int64, scores (B, top_k) float32) of the constrained beam
    search on the test decoder; errors as the product's beam search raises them."""
    A, E, O, U = (_f32_2d(a, n) for a, n in zip((A, E, O, U), "AEOU"))
    V, D, B = E.shape[0], E.shape[1], U.shape[0]
    for a, name, shape in ((A, "A", (D, D)), (O, "O", (D, V)), (U, "U", (B, V))):
        if a.shape != shape:
            raise ValueError(f"{name} must have shape {shape}, got {a.shape}")
    num_beams, top_k = _check_beam_args(num_beams, top_k, B, trie_or_candidates)
    lib = _load()
    items = np.empty((B, top_k), np.int64)
    scores = np.empty((B, top_k), np.float32)
    if isinstance(trie_or_candidates, Trie):
        shared = _capsule_pointer(trie_or_candidates._handle, b"gensar._core.trie")
        args = (shared, None, 0, 0, None, 0, 0)
    elif isinstance(trie_or_candidates, CandidateSets):
        cs = trie_or_candidates
        table, cand = cs.id_sequences, cs.candidates  # int32 / int64, C-contiguous
        args = (None, table.ctypes.data, table.shape[0], table.shape[1], cand.ctypes.data,
                cand.shape[1], _DUP_POLICIES[cs.on_duplicate])
    else:
        raise TypeError("trie_or_candidates must be a gensar.Trie or a gensar.CandidateSets, got "
                        f"{type(trie_or_candidates).__name__}")
    status = lib.gs_testdec_search(*args, B, V, D, A, E, O, U, num_beams, top_k, items, scores)
    if status:
        exc = {1: ValueError, 2: MemoryError}.get(status, RuntimeError)
        raise exc(lib.last_error().decode())
    return items, scores
