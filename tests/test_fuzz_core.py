"""Fuzzing of every gensar._core entry point (harness: tests/_fuzz_core.py).

Each batch runs in its own Python process, so a crash (segmentation fault, abort,
sanitizer report) fails the test with the case that caused it instead of killing
pytest. The default suite runs a short seeded batch (~2 s); the slow test runs a
fixed budget of 20,000 seeded cases, plus an atheris run when atheris is installed.
"""
import os
import subprocess
import sys
from pathlib import Path

import pytest

import gensar

HARNESS = Path(__file__).with_name("_fuzz_core.py")


def run_batch(tmp_path, seed, cases, extra=(), timeout=900):
    log = tmp_path / f"cases_{seed}.txt"
    env = dict(os.environ, PYTHONPATH=str(Path(gensar.__file__).parents[1]), OMP_NUM_THREADS="2")
    # Under AddressSanitizer a hostile size must fail as MemoryError, not abort the run.
    env["ASAN_OPTIONS"] = ":".join(filter(None, [env.get("ASAN_OPTIONS", ""),
                                                 "allocator_may_return_null=1"]))
    res = subprocess.run([sys.executable, str(HARNESS), "--seed", str(seed), "--cases", str(cases),
                          "--log", str(log), *extra], capture_output=True, text=True,
                         timeout=timeout, env=env)
    out = res.stdout + res.stderr
    if res.returncode < 0 or "CASES" not in res.stdout:
        last = log.read_text().splitlines()[-1:] if log.exists() else ["?"]
        pytest.fail(f"the fuzzer process died (return code {res.returncode}) at {last}; "
                    f"rerun: python {HARNESS} --seed {seed} --cases {cases}\n{out[-3000:]}")
    findings = [line for line in out.splitlines() if line.startswith("FINDING")]
    assert not findings, "\n".join(findings[:20])
    assert res.returncode == 0, out[-3000:]
    return int(res.stdout.split("CASES")[1].split()[0])


def test_fuzz_core_short(tmp_path):
    assert run_batch(tmp_path, seed=20261130, cases=200) == 200


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(10))
def test_fuzz_core_long(tmp_path, seed):
    """20,000 cases in all: 10 batches of 2,000, one process each."""
    assert run_batch(tmp_path, seed=seed, cases=2000) == 2000


@pytest.mark.slow
def test_fuzz_core_atheris(tmp_path):
    pytest.importorskip("atheris")
    assert run_batch(tmp_path, seed=7, cases=5000, extra=("--atheris",)) == 5000
