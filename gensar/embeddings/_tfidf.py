"""TF-IDF + truncated SVD text embeddings: the fallback when no sentence-encoder weights
can be had. NumPy only; uses scipy.sparse for the term matrix when scipy is installed
(it keeps memory proportional to the number of non-zeros), a dense matrix otherwise."""
from __future__ import annotations

import re
from collections import Counter

import numpy as np

_TOKEN = re.compile(r"(?u)\b\w\w+\b")  # words of 2+ characters, as common TF-IDF setups


def _terms(text: str) -> list[str]:
    return _TOKEN.findall(text.lower())


class TfidfSvdEncoder:
    """Sublinear TF-IDF (smooth idf, L2-normalised rows) projected on the top
    ``n_components`` right singular vectors, then L2-normalised.

    fit(texts) learns the vocabulary, idf and projection; encode(texts) -> (N, d) float32
    with d = min(n_components, rank available from the fitted corpus).
    """

    def __init__(self, n_components: int = 256, max_features: int = 50000, seed: int = 0):
        if n_components < 1:
            raise ValueError(f"n_components must be >= 1, got {n_components}")
        self.n_components = n_components
        self.max_features = max_features
        self.seed = seed
        self.vocabulary_: dict[str, int] | None = None

    def _matrix(self, texts):
        """Row-normalised sublinear TF-IDF matrix (N, n_terms), sparse when scipy exists."""
        rows, cols, vals = [], [], []
        for i, t in enumerate(texts):
            counts = Counter(w for w in _terms(t) if w in self.vocabulary_)
            for w, c in counts.items():
                rows.append(i)
                cols.append(self.vocabulary_[w])
                vals.append((1.0 + np.log(c)) * self.idf_[self.vocabulary_[w]])
        rows = np.asarray(rows, dtype=np.int64)
        cols = np.asarray(cols, dtype=np.int64)
        vals = np.asarray(vals, dtype=np.float64)
        norms = np.zeros(len(texts))
        np.add.at(norms, rows, vals * vals)
        norms = np.sqrt(norms)
        vals = vals / np.maximum(norms[rows], 1e-12)
        shape = (len(texts), len(self.vocabulary_))
        try:
            import scipy.sparse as sp
            return sp.csr_matrix((vals, (rows, cols)), shape=shape)
        except ImportError:
            dense = np.zeros(shape)
            dense[rows, cols] = vals
            return dense

    def fit(self, texts):
        texts = list(texts)
        if not texts:
            raise ValueError("cannot fit TF-IDF on an empty list of texts")
        df = Counter()
        for t in texts:
            df.update(set(_terms(t)))
        if not df:
            raise ValueError("the texts contain no words of 2+ characters; TF-IDF has nothing "
                             "to work with")
        kept = sorted(df.items(), key=lambda kv: (-kv[1], kv[0]))[: self.max_features]
        self.vocabulary_ = {w: j for j, (w, _) in enumerate(sorted(kept))}
        n = len(texts)
        dfs = np.array([df[w] for w in sorted(self.vocabulary_, key=self.vocabulary_.get)])
        self.idf_ = np.log((1.0 + n) / (1.0 + dfs)) + 1.0
        X = self._matrix(texts)
        k = max(1, min(self.n_components, min(X.shape) - 1 if min(X.shape) > 1 else 1))
        self.components_ = _randomized_right_vectors(X, k, self.seed)  # (n_terms, k)
        return self

    def encode(self, texts) -> np.ndarray:
        if self.vocabulary_ is None:
            raise RuntimeError("TfidfSvdEncoder is not fitted; call fit(texts) first")
        Z = np.asarray(self._matrix(list(texts)) @ self.components_)
        Z /= np.maximum(np.linalg.norm(Z, axis=1, keepdims=True), 1e-12)
        return Z.astype(np.float32)

    @property
    def dim(self) -> int:
        return self.components_.shape[1]


def _randomized_right_vectors(X, k: int, seed: int, oversample: int = 10, n_iter: int = 4):
    """Top-k right singular vectors (n_terms, k) of X (N, n_terms) by randomized range
    finding with power iterations (Halko, Martinsson, Tropp 2011), deterministic in seed."""
    rng = np.random.default_rng(seed)
    n_cols = X.shape[1]
    p = min(k + oversample, n_cols)
    Q = np.asarray(X @ rng.standard_normal((n_cols, p)))          # (N, p)
    Q, _ = np.linalg.qr(Q)
    for _ in range(n_iter):
        Q, _ = np.linalg.qr(np.asarray(X.T @ Q))                  # (n_terms, p)
        Q, _ = np.linalg.qr(np.asarray(X @ Q))                    # (N, p)
    B = np.asarray((X.T @ Q).T)                                   # (p, n_terms)
    _, _, Vt = np.linalg.svd(B, full_matrices=False)
    V = Vt[:k].T
    # sign convention: largest-magnitude entry of each vector positive (reproducible output)
    idx = np.argmax(np.abs(V), axis=0)
    V *= np.sign(V[idx, np.arange(V.shape[1])])
    return V
