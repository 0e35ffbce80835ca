"""Collaborative embeddings for items without interactions (GenSAR.add_items):
predicted from their semantic embedding by a ridge regression fitted on the
training catalogue, saved with the model."""
from __future__ import annotations

import json

import numpy as np


class ColdStart:
    """Collaborative embedding of an item without interactions, predicted from its
    semantic embedding: ridge regression fitted on the training catalogue,
    ``collaborative ~= (semantic - x_mean) @ W + y_mean``.

    Why a regression, not the codes of the nearest training items: the joint
    quantiser encodes the concatenated [semantic | collaborative] latent, so even a
    new item's *semantic* ID (its shared prefix) depends on its collaborative
    embedding. An estimate of that embedding lets the fitted quantiser assign both
    IDs the way it assigns them to training items (then collision resolution makes
    them unique), whereas copying a neighbour's codes would put the new item on a
    taken identifier and leave its semantic side unused. Ridge is the least-squares
    map that generalises to texts unlike any one training item (a k-nearest-neighbour
    average cannot leave the span of its k neighbours) and has a closed-form
    leave-one-out error, so its penalty is chosen on the data with no setting:
    the alpha of a grid (relative to the largest squared singular value) with the
    smallest leave-one-out squared error. ``loo_r2`` (1 - LOO error / variance) says
    how much of the collaborative embedding the text predicts. Measured on ml-100k
    (MiniLM semantic, SASRec-20-epoch collaborative embeddings, 1,349 items): ridge
    leave-one-out R^2 0.263; the mean of the k nearest items by cosine similarity
    -0.50 (k=1), 0.13 (5), 0.20 (10), 0.23 (30), 0.19 (100).

    Attributes: W (d_sem, d_col), x_mean (d_sem,), y_mean (d_col,) float32; alpha,
    loo_r2 float; semantic_source "encoder" (the config's sentence encoder),
    "tfidf" (its TF-IDF encoder, fitted on the training texts) or "given"
    (embeddings passed to fit); tfidf: that fitted TF-IDF encoder (a
    gensar.embeddings.TfidfSvdEncoder, saved with the regression so a loaded model
    embeds new items' text the same way) or None.
    """

    GRID = 10.0 ** np.arange(-6.0, 1.5, 0.5)

    def __init__(self, W, x_mean, y_mean, alpha, loo_r2, semantic_source, tfidf=None):
        self.W, self.x_mean, self.y_mean = (np.asarray(a, np.float32) for a in (W, x_mean, y_mean))
        self.alpha, self.loo_r2, self.semantic_source = float(alpha), float(loo_r2), str(semantic_source)
        self.tfidf = tfidf

    @classmethod
    def fit(cls, semantic, collaborative, semantic_source="given", tfidf=None) -> "ColdStart":
        """semantic (N, d_sem), collaborative (N, d_col) float arrays, row i = item i."""
        X = np.asarray(semantic, np.float64)
        Y = np.asarray(collaborative, np.float64)
        if X.ndim != 2 or Y.ndim != 2 or len(X) != len(Y) or len(X) < 2:
            raise ValueError(f"ColdStart.fit needs (N, d) semantic and collaborative embeddings of the same "
                             f"N >= 2 items, got {X.shape} and {Y.shape}")
        xm, ym = X.mean(0), Y.mean(0)
        U, S, Vt = np.linalg.svd(X - xm, full_matrices=False)
        UtY = U.T @ (Y - ym)
        var = max(float(((Y - ym) ** 2).mean()), 1e-30)
        best = None
        for a in cls.GRID * max(float(S[0]) ** 2, 1e-30):
            f = S ** 2 / (S ** 2 + a)
            hat = (U ** 2 * f).sum(1)  # diagonal of the hat matrix
            resid = (Y - ym) - U @ (f[:, None] * UtY)
            loo = float(((resid / np.maximum(1.0 - hat, 1e-9)[:, None]) ** 2).mean())
            if best is None or loo < best[0]:
                best = (loo, a)
        loo, a = best
        W = Vt.T @ ((S / (S ** 2 + a))[:, None] * UtY)
        return cls(W, xm, ym, a, 1.0 - loo / var, semantic_source, tfidf)

    def predict(self, semantic) -> np.ndarray:
        """(M, d_sem) -> (M, d_col) float32 estimated collaborative embeddings."""
        X = np.asarray(semantic, np.float64)
        return ((X - self.x_mean) @ self.W + self.y_mean).astype(np.float32)

    def save(self, path) -> None:
        from ._io import atomic_write

        info = {"format": "gensar.ColdStart", "alpha": self.alpha, "loo_r2": self.loo_r2,
                "semantic_source": self.semantic_source}
        arrays = dict(W=self.W, x_mean=self.x_mean, y_mean=self.y_mean)
        if self.tfidf is not None:  # its terms in column order, idf and projection
            t = self.tfidf
            info["tfidf"] = {"n_components": t.n_components, "max_features": t.max_features, "seed": t.seed}
            arrays.update(tfidf_terms=np.array(sorted(t.vocabulary_, key=t.vocabulary_.get), dtype=str),
                          tfidf_idf=t.idf_, tfidf_components=t.components_)
        info = json.dumps(info)

        def write(tmp):
            with open(tmp, "wb") as f:
                np.savez(f, info=np.array(info), **arrays)

        atomic_write(path, write)

    @classmethod
    def load(cls, path) -> "ColdStart":
        import zipfile

        try:
            with np.load(path, allow_pickle=False) as f:
                info = json.loads(str(f["info"]))
                if info.get("format") != "gensar.ColdStart":
                    raise ValueError("not a gensar.ColdStart file")
                tfidf = None
                if info.get("tfidf"):
                    from .embeddings import TfidfSvdEncoder

                    tfidf = TfidfSvdEncoder(**info["tfidf"])
                    tfidf.vocabulary_ = {str(w): j for j, w in enumerate(f["tfidf_terms"].tolist())}
                    tfidf.idf_, tfidf.components_ = f["tfidf_idf"], f["tfidf_components"]
                    if (tfidf.idf_.shape != (len(tfidf.vocabulary_),)
                            or tfidf.components_.shape[0] != len(tfidf.vocabulary_)):
                        raise ValueError("the TF-IDF arrays do not match its vocabulary")
                self = cls(f["W"], f["x_mean"], f["y_mean"], info["alpha"], info["loo_r2"],
                           info["semantic_source"], tfidf)
        except (ValueError, KeyError, TypeError, OSError, EOFError, zipfile.BadZipFile) as exc:
            raise ValueError(f"{path} is corrupt or not a cold-start file ({type(exc).__name__}: {exc})") from None
        if (self.W.ndim != 2 or self.x_mean.shape != (self.W.shape[0],) or self.y_mean.shape != (self.W.shape[1],)
                or not all(np.isfinite(a).all() for a in (self.W, self.x_mean, self.y_mean))):
            raise ValueError(f"{path}: the regression arrays have inconsistent shapes or non-finite values")
        return self
