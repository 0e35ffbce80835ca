import numpy as np


class Popularity:
    """Ranks items by how often they were clicked in the training split (both
    kinds of event), the same list for every user and query."""

    def fit(self, dataset):
        ev = dataset.events
        train = ev[ev["split"] == "train"]
        self.counts_ = np.bincount(train["item"].to_numpy(), minlength=dataset.n_items).astype(np.float64)
        return self

    def score(self, task, examples):
        if not hasattr(self, "counts_"):
            raise RuntimeError("call fit(dataset) first")
        return np.broadcast_to(self.counts_, (len(examples), len(self.counts_)))
