"""Builds gensar._core from every C file under csrc/ (C11 + OpenMP).

Environment switches:
  GENSAR_SANITIZE=address   build with AddressSanitizer (see README, "Sanitizer build")
  GENSAR_SANITIZE=undefined build with UndefinedBehaviorSanitizer; any undefined
                            behaviour aborts the process (-fno-sanitize-recover), so a
                            test run cannot pass over it
  GENSAR_DEBUG=1            -O0 -g, for a debugger
"""
import glob
import os
import sys

import numpy
from setuptools import Extension, setup

sources = sorted(glob.glob("csrc/**/*.c", recursive=True))

# -fno-math-errno and -fno-trapping-math change no result (the core never reads
# errno or traps on floating-point exceptions); they let sqrtf inline and let
# branch-free selects vectorise on every kernel path. A call to an undeclared
# function is an error, not a warning: it would link to nothing (ImportError at
# run time) or to the wrong symbol.
compile_args = ["-std=c11", "-fopenmp", "-Wall", "-Wextra", "-Wno-unused-parameter",
                "-Wno-missing-field-initializers", "-fno-strict-aliasing", "-fno-math-errno",
                "-fno-trapping-math", "-Werror=implicit-function-declaration", "-Werror=int-conversion"]
link_args = ["-fopenmp"]
sanitize = os.environ.get("GENSAR_SANITIZE", "")
if sanitize:
    known = {"address", "undefined"}
    if not set(sanitize.split(",")) <= known:
        raise SystemExit(f"GENSAR_SANITIZE must be one of {sorted(known)} (or both, comma-separated), "
                         f"got {sanitize!r}")
    compile_args += [f"-fsanitize={sanitize}", "-fno-omit-frame-pointer", "-O1", "-g"]
    link_args += [f"-fsanitize={sanitize}"]
    if "undefined" in sanitize:
        # Stop at the first report instead of printing and going on: UB fails the tests.
        compile_args += ["-fno-sanitize-recover=all"]
        link_args += ["-fno-sanitize-recover=all"]
elif os.environ.get("GENSAR_DEBUG"):
    compile_args += ["-O0", "-g"]
else:
    # No -march=native: one build runs on any x86-64; the hot kernels pick
    # AVX2/FMA at run time (see csrc/tensor/gemm.c).
    compile_args += ["-O3"]

if sys.platform == "darwin":  # Apple clang needs libomp; not a supported target yet
    raise SystemExit("gensar builds with gcc + OpenMP on Linux; macOS is not supported yet")

setup(
    ext_modules=[
        Extension(
            "gensar._core",
            sources=sources,
            include_dirs=[numpy.get_include(), "csrc"],
            define_macros=[("NPY_TARGET_VERSION", "NPY_1_22_API_VERSION")],
            extra_compile_args=compile_args,
            extra_link_args=link_args,
            language="c",
        )
    ],
)
