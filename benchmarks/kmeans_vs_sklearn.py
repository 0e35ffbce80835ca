"""Inertia of gensar.ids.kmeans against scikit-learn's KMeans: same data, same
k, best of the same number of inits (10), scikit-learn on one thread.

    python benchmarks/kmeans_vs_sklearn.py
"""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
import numpy as np
from threadpoolctl import threadpool_limits
from sklearn.cluster import KMeans
import gensar
from gensar.ids import kmeans

gensar.set_num_threads(1)  # both on one thread (scikit-learn limited below)
rng = np.random.default_rng(1234)
def blobs(n=3000, d=10, centers=25, spread=0.6):
    c = rng.normal(scale=4.0, size=(centers, d))
    return (c[rng.integers(0, centers, n)] + spread * rng.normal(size=(n, d))).astype(np.float32)
cases = {"blobs 3000x10 k=25": (blobs(), 25), "uniform 2500x6 k=25": (rng.random((2500, 6)).astype(np.float32), 25),
         "gaussian 20000x32 k=256": (rng.normal(size=(20000, 32)).astype(np.float32), 256)}
print(f"CPU and kernel path: {gensar.cpu.describe()}")
print("| data | gensar inertia | sklearn inertia | ratio |")
print("|---|---|---|---|")
for name, (x, k) in cases.items():
    _, _, ours = kmeans(x, k, n_init=10, max_iter=300, seed=3)
    with threadpool_limits(1):
        sk = KMeans(n_clusters=k, n_init=10, max_iter=300, random_state=0).fit(x.astype(np.float64)).inertia_
    print(f"| {name} | {ours:.2f} | {sk:.2f} | {ours / sk:.4f} |")
