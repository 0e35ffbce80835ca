import numpy as np


class BM25Search:
    """Lexical search: BM25 (bm25s, k1=1.5, b=0.75) of the query over item text.
    Search only; it has no notion of a user."""

    def fit(self, dataset):
        from ..datasets._bm25 import BM25Ranker

        self.ranker_ = BM25Ranker(dataset.items["text"].tolist())
        return self

    def score(self, task, examples):
        if task != "search":
            raise ValueError("BM25Search ranks items for search queries only")
        if not hasattr(self, "ranker_"):
            raise RuntimeError("call fit(dataset) first")
        cache = {}
        out = np.empty((len(examples), self.ranker_.n_items))
        for i, q in enumerate(examples["query"]):
            if q not in cache:
                cache[q] = self.ranker_.scores(q)
            out[i] = cache[q]
        return out
