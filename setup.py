"""Builds gensar._core from every C file under csrc/ (C11 + OpenMP).

Environment switches:
  GENSAR_SANITIZE=address   build with AddressSanitizer (see README, "Sanitizer build")
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
# branch-free selects vectorise on every kernel path.
compile_args = ["-std=c11", "-fopenmp", "-Wall", "-Wextra", "-Wno-unused-parameter",
                "-Wno-missing-field-initializers", "-fno-strict-aliasing", "-fno-math-errno",
                "-fno-trapping-math"]
link_args = ["-fopenmp"]
sanitize = os.environ.get("GENSAR_SANITIZE", "")
if sanitize:
    compile_args += [f"-fsanitize={sanitize}", "-fno-omit-frame-pointer", "-O1", "-g"]
    link_args += [f"-fsanitize={sanitize}"]
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
