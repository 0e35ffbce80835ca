"""benchmarks/paired_study.py: two studies sharing a cache fit each cell once (a lock per
cell names the study fitting it; a lock left by a study that died is taken over)."""
import os
import subprocess
import sys

from conftest import load_benchmark


def test_a_cell_is_claimed_once_and_a_dead_owners_lock_is_taken_over(tmp_path):
    study = load_benchmark("paired_study")
    cell = tmp_path / "base-s0"
    assert study.claim(cell)  # free: taken, the lock names this process
    assert (cell / "fitting.pid").read_text() == str(os.getpid())
    assert not study.claim(cell)  # held by a live process (here: this one)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True).stdout.strip()
    (cell / "fitting.pid").write_text(dead)  # its owner has exited
    assert study.claim(cell)
    assert (cell / "fitting.pid").read_text() == str(os.getpid())
