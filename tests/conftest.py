import importlib.util
import pathlib

import numpy as np
import pytest

import gensar


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


@pytest.fixture
def threads():
    """Restores the thread count a test changes."""
    before = gensar.get_num_threads()
    yield
    gensar.set_num_threads(0)
    if gensar.get_num_threads() != before:
        gensar.set_num_threads(before)


def central_difference(loss, x, eps=1e-2):
    """Numerical gradient of the scalar loss() with respect to array x (changed
    in place and restored), by central differences computed in float64."""
    grad = np.zeros(x.shape, dtype=np.float64)
    flat, g = x.reshape(-1), grad.reshape(-1)
    for i in range(flat.size):
        old = flat[i]
        flat[i] = old + eps
        up = float(loss())
        flat[i] = old - eps
        down = float(loss())
        flat[i] = old
        g[i] = (up - down) / (2 * eps)
    return grad


def load_benchmark(name: str):
    """The module benchmarks/<name>.py (benchmarks are scripts, not a package), freshly loaded."""
    path = pathlib.Path(__file__).resolve().parent.parent / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod
