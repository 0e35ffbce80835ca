import numpy as np


class DenseSearch:
    """Zero-shot dense retrieval: cosine similarity between the sentence-encoder
    embeddings of the query and of each item's text. Search only."""

    def __init__(self, encoder="all-MiniLM-L6-v2", progress: bool = False):
        self.encoder, self.progress = encoder, progress

    def fit(self, dataset, item_embeddings=None):
        """item_embeddings: optional (n_items, d) L2-normalised array to reuse."""
        from ..embeddings import SentenceEncoder

        self.encoder_ = self.encoder if hasattr(self.encoder, "encode") else SentenceEncoder(self.encoder)
        if item_embeddings is None:
            item_embeddings = self.encoder_.encode(dataset.items["text"].tolist(), show_progress=self.progress)
        self.items_ = np.asarray(item_embeddings, dtype=np.float32)
        if self.items_.shape[0] != dataset.n_items:
            raise ValueError(f"item_embeddings must have {dataset.n_items} rows, got {self.items_.shape[0]}")
        return self

    def score(self, task, examples):
        if task != "search":
            raise ValueError("DenseSearch ranks items for search queries only")
        if not hasattr(self, "items_"):
            raise RuntimeError("call fit(dataset) first")
        queries = examples["query"].tolist()
        uniq, inverse = np.unique(np.array(queries, dtype=object), return_inverse=True)
        q = self.encoder_.encode(list(uniq), show_progress=False)
        return (q @ self.items_.T)[inverse]
