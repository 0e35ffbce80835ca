"""Doc2query: a small Seq2Seq that writes search queries for an item's text.

GenSAR's ad-hoc search task trains on pseudo-queries (GENSAR.md section 3).
The reference fine-tuned msmarco-t5-base; here a small encoder-decoder of the
same C core is trained from scratch on (item text -> query) pairs of the
training search sessions, then sampled once (or n times) per item.
"""
from __future__ import annotations

import numpy as np

from .generate import generate
from .tasks import encode_batch
from .tokenizer import escape_text


class Doc2Query:
    """tokenizer : the GenSAR Tokenizer (shared vocabulary)
    d_model, layers : size of the small model; epochs, batch_size, lr : training
    """

    def __init__(self, tokenizer, d_model: int = 128, layers: int = 2, epochs: int = 3,
                 batch_size: int = 64, lr: float = 1e-3, max_input_len: int = 64,
                 max_query_len: int = 16, seed: int = 0, progress: bool = True):
        if epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {epochs}")
        self.tok, self.d_model, self.layers, self.epochs = tokenizer, d_model, layers, epochs
        self.batch_size, self.lr, self.seed, self.progress = batch_size, lr, seed, progress
        self.max_input_len, self.max_query_len = max_input_len, max_query_len

    def fit(self, dataset) -> "Doc2Query":
        """Trains on the unique (item text, query) pairs of training search events."""
        from .seq2seq import Seq2Seq
        from .training import Trainer

        ev = dataset.events
        pairs = ev[(ev["kind"] == "search") & (ev["split"] == "train")][["item", "query"]].drop_duplicates()
        if pairs.empty:
            raise ValueError("the dataset has no training search sessions to learn queries from")
        # user text is escaped so it cannot spell a control token (tokenizer docstring)
        texts = np.array([escape_text(t) for t in dataset.items["text"]],
                         dtype=object)[pairs["item"].to_numpy()]
        targets = [ids + [self.tok.eos_id] for ids in self.tok.encode_texts(pairs["query"].tolist())]
        self.model_ = Seq2Seq(dict(vocab_size=self.tok.vocab_size, d_model=self.d_model, d_kv=self.d_model // 4,
                                   d_ff=4 * self.d_model, num_layers=self.layers,
                                   num_decoder_layers=self.layers, num_heads=4, dropout_rate=0.1),
                              lr=self.lr, seed=self.seed)
        n = len(texts)

        def make_epoch(epoch):
            order = np.random.default_rng([self.seed, 5, epoch]).permutation(n)
            return [encode_batch(self.tok, list(texts[order[i:i + self.batch_size]]),
                                 [targets[j] for j in order[i:i + self.batch_size]],
                                 self.max_input_len, self.max_query_len)
                    for i in range(0, n, self.batch_size)]

        self.history_ = Trainer(self.model_, make_epoch, epochs=self.epochs, lr=self.lr,
                                progress=self.progress, description="doc2query").fit(resume=False)
        return self

    def generate(self, texts, n: int = 1, batch_size: int = 128) -> list:
        """n sampled queries per text (top-k 10 sampling; the first is greedy so
        n=1 gives the most likely query). Returns a list of lists of strings."""
        if not hasattr(self, "model_"):
            raise RuntimeError("call fit(dataset) first")
        texts = [escape_text(t) for t in texts]
        out = []
        banned = np.arange(3, self.tok.first_text_id)  # no behaviour or identifier tokens
        for s in range(0, len(texts), batch_size):
            ids, mask = self.tok.encode(texts[s:s + batch_size], self.max_input_len)
            greedy = generate(self.model_, ids, mask, self.max_query_len, self.tok.eos_id, banned_ids=banned)
            sampled = (generate(self.model_, ids, mask, self.max_query_len, self.tok.eos_id, num_return=n - 1,
                                do_sample=True, top_k=10, seed=self.seed + s, banned_ids=banned)
                       if n > 1 else [])
            for b in range(len(greedy)):
                qs = [self.tok.decode(greedy[b])] + [self.tok.decode(sampled[b * (n - 1) + j]) for j in range(n - 1)]
                out.append(qs)
        return out
