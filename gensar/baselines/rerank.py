import numpy as np

ALPHAS = tuple(np.round(np.linspace(0.0, 1.0, 11), 2))


def _minmax(x: np.ndarray) -> np.ndarray:
    """Row-wise min-max scaling to [0, 1] (constant rows -> 0)."""
    lo = x.min(axis=1, keepdims=True)
    span = x.max(axis=1, keepdims=True) - lo
    return np.where(span > 0, (x - lo) / np.where(span > 0, span, 1.0), 0.0)


class BM25SASRecSearch:
    """The two-model system GenSAR replaces: BM25 retrieves, SASRec personalises.

    For each search case, BM25 over item text proposes its `top_k` best items; they
    are re-ranked by ``(1 - alpha) * bm25 + alpha * sasrec``, both scores min-max
    scaled to [0, 1] over those candidates, where sasrec is the user's next-item
    score from a SASRec trained on the training split (its history: the case's
    events, as for recommendation). Items outside BM25's top_k keep BM25's order
    below every candidate. ``alpha`` is chosen on the validation split (sampled
    NDCG@10 by default), never on test; alpha = 0 is plain BM25.

    sasrec : a fitted gensar.embeddings.SASRec, or None to train one in fit()
        (with sasrec_kwargs)
    top_k : BM25 candidates re-ranked per query
    alphas : mixing weights tried on validation

    Fitted attributes: ``alpha_``, ``valid_curve_`` (alpha -> validation metric),
    ``sasrec_``, ``ranker_``.
    """

    def __init__(self, sasrec=None, top_k: int = 100, alphas=ALPHAS, metric: str = "NDCG@10",
                 protocol: str = "sampled", sasrec_kwargs=None):
        if isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer)) or top_k < 1:
            raise ValueError(f"top_k must be an int >= 1, got {top_k!r}")
        alphas = tuple(float(a) for a in alphas)
        if not alphas or any(not (0.0 <= a <= 1.0) for a in alphas):
            raise ValueError(f"alphas must be a non-empty list of numbers in [0, 1], got {alphas!r}")
        if protocol not in ("sampled", "full"):
            raise ValueError(f"protocol must be 'sampled' or 'full', got {protocol!r}")
        self.sasrec, self.top_k, self.alphas, self.metric = sasrec, int(top_k), alphas, metric
        self.protocol, self.sasrec_kwargs = protocol, dict(sasrec_kwargs or {})

    def fit(self, dataset):
        from ..datasets._bm25 import BM25Ranker
        from ..evaluate import scorer_ranks
        from ..metrics import metrics_from_ranks

        self.dataset_ = dataset
        self.ranker_ = BM25Ranker(dataset.items["text"].tolist())
        if self.sasrec is None:
            from ..embeddings import SASRec

            self.sasrec_ = SASRec(**{"show_progress": False, **self.sasrec_kwargs}).fit(dataset)
        else:
            self.sasrec_ = self.sasrec
        if getattr(self.sasrec_, "n_items_", None) != dataset.n_items:
            raise ValueError(f"sasrec must be fitted on this dataset's {dataset.n_items} items")
        ex = dataset.examples("search", "valid")
        self.valid_curve_ = {}
        if len(ex) == 0:  # nothing to choose on: the midpoint
            self.alpha_ = self.alphas[len(self.alphas) // 2]
            return self
        bm25, sas = self._parts(ex, dataset)
        for a in self.alphas:
            ranks = scorer_ranks(dataset, "search", "valid", self._mix(bm25, sas, a), self.protocol)
            m = metrics_from_ranks(ranks)
            if self.metric not in m:
                raise ValueError(f"metric must be one of {sorted(m)}, got {self.metric!r}")
            self.valid_curve_[a] = m[self.metric]
        best = max(self.valid_curve_.values())
        # The smallest alpha among the best: prefer the simpler (less personalised) model.
        self.alpha_ = min(a for a, v in self.valid_curve_.items() if v == best)
        return self

    def _parts(self, examples, dataset):
        bm25 = np.empty((len(examples), self.ranker_.n_items))
        cache = {}
        for i, q in enumerate(examples["query"]):
            if q not in cache:
                cache[q] = self.ranker_.scores(q)
            bm25[i] = cache[q]
        ev_items = dataset.events["item"].to_numpy()
        kinds = getattr(self.sasrec_, "_kinds", None) or ("rec", "search")  # what it was trained on
        kind_ok = np.isin(dataset.events["kind"].to_numpy(), kinds)
        hist = [ev_items[h[kind_ok[h]]] for h in examples["history"]]
        return bm25, self.sasrec_.score_histories(hist).astype(np.float64)

    def _mix(self, bm25: np.ndarray, sas: np.ndarray, alpha: float) -> np.ndarray:
        k = min(self.top_k, bm25.shape[1])
        top = np.argpartition(-bm25, k - 1, axis=1)[:, :k]
        b = _minmax(np.take_along_axis(bm25, top, 1))
        s = _minmax(np.take_along_axis(sas, top, 1))
        # Outside the candidates: BM25's order, strictly below every candidate (>= 0).
        out = _minmax(bm25) - 2.0
        np.put_along_axis(out, top, (1.0 - alpha) * b + alpha * s, 1)
        return out

    def score(self, task, examples):
        if task != "search":
            raise ValueError("BM25SASRecSearch ranks items for search queries only")
        if not hasattr(self, "alpha_"):
            raise RuntimeError("call fit(dataset) first")
        bm25, sas = self._parts(examples, self.dataset_)
        return self._mix(bm25, sas, self.alpha_)
