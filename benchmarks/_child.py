"""One engine per child process, for the benchmarks that time gensar against
PyTorch: each engine gets a fresh process (no shared thread pools, allocator
state or warm caches) with its own OMP_NUM_THREADS, and reports one JSON line.

The environment is captured when this module is imported, before gensar's own
import sets GOMP_SPINCOUNT, so children start from the user's environment."""
from __future__ import annotations

import json
import os
import subprocess
import sys

BASE_ENV = dict(os.environ)


def run_worker(script: str, engine: str, threads: int, args: list, isa: str | None = None) -> dict:
    """Runs `script --worker --engine ENGINE --worker-threads N *args` with
    OMP_NUM_THREADS=N (and GENSAR_ISA=isa if given); returns the JSON object of the
    last stdout line. A failing worker raises RuntimeError with its stderr."""
    cmd = [sys.executable, os.path.abspath(script), "--worker", "--engine", engine,
           "--worker-threads", str(threads), *map(str, args)]
    env = dict(BASE_ENV, OMP_NUM_THREADS=str(threads))
    if isa:
        env["GENSAR_ISA"] = isa
    out = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if out.returncode:
        raise RuntimeError(f"{engine} worker failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])
