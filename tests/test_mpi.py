"""Data-parallel training under mpirun -np 2 (gensar.distributed).

The script tests/_mpi_train.py trains a small Seq2Seq (dropout off, 7 rows per global
batch so the two shards differ in rows and in target tokens) through the Trainer,
alone and under ``mpirun -np 2``. Stated tolerance: the two runs' loss curves agree
within rtol 1e-5 and their final parameters within 1e-5 absolute (measured: about
5e-7 and 2e-7 after 12 steps; the shards only sum the same gradients in another order).
Skips where mpirun or mpi4py is missing (`.ci/run` installs both where it can).
"""
import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import gensar

pytestmark = pytest.mark.mpi

SCRIPT = Path(__file__).with_name("_mpi_train.py")
ROOT = Path(gensar.__file__).resolve().parent.parent


def _mpirun():
    exe = shutil.which("mpirun")
    if exe is None:
        pytest.skip("mpirun not found (apt-get install openmpi-bin libopenmpi-dev)")
    if importlib.util.find_spec("mpi4py") is None:
        pytest.skip("mpi4py not installed (pip install 'gensar[mpi]')")
    cmd = [exe]
    version = subprocess.run([exe, "--version"], capture_output=True, text=True).stdout
    if "Open MPI" in version or "OpenRTE" in version:
        cmd += ["--oversubscribe", "-x", "PYTHONPATH", "-x", "OMP_NUM_THREADS", "-x", "GENSAR_MPI"]
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            cmd.append("--allow-run-as-root")
    return cmd


def _env():
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", GENSAR_MPI="1")
    for k in [k for k in env if k.startswith(("OMPI_", "PMI_", "PMIX_"))]:
        del env[k]  # a test run itself under mpirun must not look like a rank
    # containers often forbid the cross-process memory copies of Open MPI's shared-memory
    # transport (ptrace); plain copies work everywhere
    env["OMPI_MCA_btl_vader_single_copy_mechanism"] = "none"
    return env


def _run(args, np_=1, cwd=None, check=True):
    cmd = ([*_mpirun(), "-np", str(np_)] if np_ > 1 else []) + [sys.executable, str(SCRIPT), *map(str, args)]
    r = subprocess.run(cmd, env=_env(), cwd=cwd, capture_output=True, text=True, timeout=600)
    if check and r.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({r.returncode}):\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
    return r


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    _mpirun()  # skip early
    d = tmp_path_factory.mktemp("mpi")
    _run([d / "np1.npz", "--evaluate"], np_=1, cwd=d)
    _run([d / "np2.npz", "--evaluate"], np_=2, cwd=d)
    return np.load(d / "np1.npz"), np.load(d / "np2.npz"), d


def test_two_ranks_equal_one_process(runs):
    one, two, _ = runs
    assert int(one["size"]) == 1 and int(two["size"]) == 2
    assert len(one["losses"]) == len(two["losses"]) == 12
    np.testing.assert_allclose(two["losses"], one["losses"], rtol=1e-5)
    np.testing.assert_allclose(two["params"], one["params"], rtol=0, atol=1e-5)
    assert one["losses"][-1] < one["losses"][0] - 0.5  # it did learn
    np.testing.assert_allclose(two["gensar_params"], one["gensar_params"], rtol=0, atol=1e-5)


def test_sharded_evaluation_equals_one_rank(runs):
    one, two, _ = runs
    # under mpirun: the sharded-and-gathered ranks equal those one rank decodes alone
    np.testing.assert_array_equal(two["eval_sharded"], two["eval_alone"])
    np.testing.assert_array_equal(two["eval_sharded"], one["eval_sharded"])
    np.testing.assert_allclose(two["eval_ndcg"], one["eval_ndcg"])


def test_resume_after_kill_equals_uninterrupted(runs):
    _, two, d = runs
    ck = d / "ck"
    killed = _run([d / "killed.npz", "--checkpoints", ck, "--die-at", 7], np_=2, cwd=d, check=False)
    assert killed.returncode != 0 and not (d / "killed.npz").exists()
    assert (ck / "last" / "model.safetensors").is_file()
    _run([d / "resumed.npz", "--checkpoints", ck], np_=2, cwd=d)
    resumed = np.load(d / "resumed.npz")
    np.testing.assert_array_equal(resumed["losses"], two["losses"])   # bit for bit
    np.testing.assert_array_equal(resumed["params"], two["params"])


def test_world_without_launcher_is_single():
    from gensar import distributed

    w = distributed.World()
    assert (w.rank, w.size, w.is_root) == (0, 1, True)
    assert distributed.shard(10, w) == slice(0, 10)
    buf = np.ones(3, np.float32)
    w.allreduce_sum_(buf)
    assert buf.tolist() == [1.0, 1.0, 1.0]


def test_shards_cover_rows_once():
    from gensar import distributed

    class Fake:
        def __init__(self, rank, size):
            self.rank, self.size = rank, size

    for n in (0, 1, 5, 7, 64):
        for size in (1, 2, 3, 8):
            rows = np.concatenate([np.arange(n)[distributed.shard(n, Fake(r, size))] for r in range(size)])
            assert rows.tolist() == list(range(n))


def test_split_step_equals_train_step():
    """train_grads + apply_grads (what each rank runs) is train_step, bit for bit,
    with dropout on; the grad buffer is one C buffer with one extra slot."""
    from gensar.seq2seq import Seq2Seq

    rng = np.random.default_rng(0)
    batch = {"input_ids": rng.integers(1, 50, (6, 9)), "labels": rng.integers(1, 50, (6, 5))}
    cfg = dict(vocab_size=50, d_model=16, d_kv=8, num_heads=2, d_ff=32, num_layers=1, dropout_rate=0.1)
    a, b = Seq2Seq(cfg, seed=1), Seq2Seq(cfg, seed=1)
    for _ in range(3):
        la = a.train_step(batch, 1e-2)
        lb = b.train_grads(batch)
        b.apply_grads(1e-2)
        assert la == lb
        np.testing.assert_array_equal(a.params, b.params)
    buf = b.grad_buffer
    assert buf.shape == (b.num_params + 1,) and np.shares_memory(buf, b.grads)
    with pytest.raises(ValueError, match="lr"):
        b.apply_grads(float("nan"))


def test_step_refuses_batch_without_targets():
    from gensar import distributed
    from gensar.seq2seq import Seq2Seq

    m = Seq2Seq(dict(vocab_size=20, d_model=8, d_kv=4, num_heads=2, d_ff=16, num_layers=1))
    batch = {"input_ids": np.ones((2, 3), int), "labels": np.full((2, 3), -100)}
    with pytest.raises(ValueError, match="no target token"):
        distributed.data_parallel_step(m, batch, 1e-3, distributed.World())


def test_step_and_world_refuse_bad_input():
    from gensar import distributed
    from gensar.seq2seq import Seq2Seq

    w = distributed.World()
    m = Seq2Seq(dict(vocab_size=20, d_model=8, d_kv=4, num_heads=2, d_ff=16, num_layers=1))
    with pytest.raises(TypeError, match="model must provide"):
        distributed.data_parallel_step(object(), {"input_ids": 1, "labels": 1}, 1e-3, w)
    with pytest.raises(TypeError, match="batch must be a dict"):
        distributed.data_parallel_step(m, {"input_ids": np.ones((2, 3), int)}, 1e-3, w)
    with pytest.raises(ValueError, match="2-dimensional"):
        distributed.data_parallel_step(m, {"input_ids": np.ones((2, 3), int), "labels": np.ones(3, int)}, 1e-3, w)
    two = distributed.World.__new__(distributed.World)
    two.comm, two.rank, two.size = None, 0, 2
    with pytest.raises(ValueError, match="float32"):
        two.allreduce_sum_(np.ones(3))


def test_launcher_detection(monkeypatch):
    from gensar import distributed

    for var in ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "GENSAR_MPI"):
        monkeypatch.delenv(var, raising=False)
    assert distributed.launched_size() == 1
    monkeypatch.setenv("OMPI_COMM_WORLD_SIZE", "3")
    assert distributed.launched_size() == 3
    monkeypatch.setenv("GENSAR_MPI", "0")
    assert distributed.launched_size() == 1
    monkeypatch.delenv("GENSAR_MPI")
    monkeypatch.delenv("OMPI_COMM_WORLD_SIZE")
    monkeypatch.setenv("PMI_SIZE", "4")
    assert distributed.launched_size() == 4
