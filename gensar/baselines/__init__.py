"""Baselines on the same splits and metrics as GenSAR (see gensar.evaluate).

Each baseline is a scorer: ``fit(dataset)`` then ``score(task, examples)`` ->
float array (n_examples, n_items), higher is better.
"""
from .bm25 import BM25Search
from .dense import DenseSearch
from .popularity import Popularity
from .rerank import BM25SASRecSearch

__all__ = ["BM25SASRecSearch", "BM25Search", "DenseSearch", "Popularity"]
