"""The GenSAR estimator: one generative model for search and recommendation.

    import gensar
    from gensar import datasets

    ds = datasets.load("ml-100k")
    model = gensar.GenSAR(epochs=3).fit(ds)          # embeddings, IDs, training
    model.evaluate("test")                            # DataFrame: both tasks, both protocols
    model.recommend([[1, 50, 181]], k=10)             # histories of item ids -> DataFrame
    model.search(["comedy romance 1990s"], k=10)
    model.save("gensar-ml100k"); gensar.GenSAR.load("gensar-ml100k")

Pipeline of ``fit`` (GENSAR.md sections 1-4): semantic item embeddings from a
sentence encoder, collaborative item embeddings from SASRec, dual identifiers
from the joint RQ-VAE, a tokenizer trained on the dataset's text, pseudo-queries
from a doc2query model, then the encoder-decoder trained on the task mixture
with validation every epoch and early stopping. Recommendation decodes
collaborative IDs, search decodes semantic IDs, both with beam search
constrained to real items.
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import pandas as pd

from .metrics import DEFAULT_KS
from .tasks import TASKS, TEMPLATES, TaskBuilder, encode_batch, mix, render
from .tokenizer import REC_ITEM, SRC_ITEM, IDLayout, Tokenizer

DEFAULT_WEIGHTS = {t: 1.0 for t in TASKS}


@dataclass
class GenSARConfig:
    """Every setting of a GenSAR run. Defaults: the project's CPU-sized version of
    the reference (GENSAR.md); the `quick` preset of the CLI shrinks them further.
    """

    # identifiers (GENSAR.md section 2)
    # codebook sizes per level: ints, or "auto" (sized from the catalogue: 16 for ml-100k)
    shared_levels: tuple = ("auto", "auto")
    specific_levels: tuple = ("auto", "auto")
    id_method: str = "joint"            # joint | residual_kmeans | single | random
    id_epochs: int | None = None        # None: DualIDs' step budget (warm-up + linear decay)
    rec_id: str = "collaborative"       # which ID recommendation generates (ablations)
    search_id: str = "semantic"         # which ID search generates
    # item embeddings (section 1)
    sentence_model: str = "all-MiniLM-L6-v2"
    sasrec_epochs: int = 30
    # text
    vocab_size: int = 3000
    max_input_len: int = 128
    max_target_len: int = 24
    n_rec: int = 5
    n_search: int = 5
    # sequence model (section 3)
    d_model: int = 128
    num_layers: int = 4
    num_decoder_layers: int = 4
    num_heads: int = 4
    d_kv: int = 32
    d_ff: int = 512
    feed_forward_proj: str = "relu"
    dropout_rate: float = 0.1
    # training
    epochs: int = 10
    batch_size: int = 64
    lr: float = 1e-3
    schedule: str = "cosine"
    warmup: float = 0.01
    weight_decay: float = 0.01
    max_grad_norm: float = 1.0
    task_weights: dict = field(default_factory=lambda: dict(DEFAULT_WEIGHTS))
    examples_per_epoch: int = 0          # 0: every example of the mixture once per epoch
    # pseudo-queries (ad-hoc search task)
    doc2query_epochs: int = 3
    pseudo_queries_per_item: int = 1
    # validation / inference (section 4)
    num_beams: int = 30
    n_negatives: int = 99                # sampled protocol: target + n_negatives candidates
    valid_cases: int = 300               # validation cases per task (sampled protocol)
    metric: str = "NDCG@10"
    patience: int = 3
    seed: int = 0

    def __post_init__(self):
        self.shared_levels = tuple(self.shared_levels)
        self.specific_levels = tuple(self.specific_levels)
        for name in ("rec_id", "search_id"):
            if getattr(self, name) not in ("semantic", "collaborative"):
                raise ValueError(f"{name} must be 'semantic' or 'collaborative', got {getattr(self, name)!r}")
        unknown = set(self.task_weights) - set(TASKS)
        if unknown:
            raise ValueError(f"unknown task(s) in task_weights: {sorted(unknown)}; tasks are {TASKS}")
        for name in ("epochs", "batch_size", "num_beams", "max_input_len", "max_target_len"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.lr <= 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        valid_metrics = [f"{m}@{k}" for m in ("HR", "NDCG") for k in DEFAULT_KS if f"{m}@{k}" != "NDCG@1"]
        if self.metric not in valid_metrics:
            raise ValueError(f"metric must be one of {valid_metrics}, got {self.metric!r}")

    @classmethod
    def from_dict(cls, d: dict) -> "GenSARConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown GenSAR setting(s) {sorted(unknown)}; known: {sorted(known)}")
        return cls(**d)


class GenSAR:
    """Unified generative search and recommendation (see the module docstring).

    Parameters: any field of :class:`GenSARConfig` as a keyword, or `config=`.

    Fitted attributes: ``semantic_ids_`` / ``collaborative_ids_`` (n_items, L)
    int level codes, ``tokenizer_``, ``seq2seq_``, ``items_`` (DataFrame of the
    catalogue: item_id, title), ``history_`` (per-epoch log: loss, lr, seconds,
    validation metrics), ``loss_curve_`` (DataFrame step, loss), ``timings_``
    (seconds per stage), ``ids_`` (the fitted DualIDs, whose report() shows
    collisions, codebook use and reconstruction error).
    """

    def __init__(self, config: GenSARConfig | dict | None = None, **kwargs):
        if isinstance(config, GenSARConfig):
            base = asdict(config)
        else:
            base = dict(config or {})
        base.update(kwargs)
        self.config = GenSARConfig.from_dict(base)

    # ================================================================== fit
    def fit(self, dataset, ids=None, semantic_embeddings=None, collaborative_embeddings=None,
            checkpoint_dir=None, progress: bool = True) -> "GenSAR":
        """Builds everything GenSAR needs from a :class:`gensar.datasets.Dataset` and trains.

        ids : optional (semantic_ids, collaborative_ids) arrays (n_items, L), or a
            fitted gensar.DualIDs; skips the embeddings and the quantiser
        semantic_embeddings / collaborative_embeddings : optional (n_items, d)
            float32 arrays; skip the sentence encoder / SASRec
        checkpoint_dir : where training checkpoints go; fit() again with the same
            directory resumes an interrupted run exactly
        """
        c = self.config
        self.timings_ = {}
        self.dataset_ = dataset
        self.items_ = dataset.items[["item_id", "title"]].reset_index(drop=True)
        self._progress = progress
        sem, col = self._identifiers(dataset, ids, semantic_embeddings, collaborative_embeddings)
        self.semantic_ids_, self.collaborative_ids_ = sem, col
        t = time.perf_counter()
        texts = (dataset.items["text"].tolist() + dataset.events["query"].unique().tolist()
                 + [p for v in TEMPLATES.values() for p in v])
        self.tokenizer_ = Tokenizer.train(texts, self._layout(), vocab_size=c.vocab_size)
        self.builder_ = self._builder(dataset)
        self.timings_["tokenizer"] = time.perf_counter() - t
        pseudo = None
        if c.task_weights.get("adhoc", 0) > 0:
            t = time.perf_counter()
            pseudo = self._pseudo_queries(dataset)
            self.timings_["doc2query"] = time.perf_counter() - t
        t = time.perf_counter()
        self._train(dataset, pseudo, checkpoint_dir)
        self.timings_["train"] = time.perf_counter() - t
        return self

    def _layout(self) -> IDLayout:
        ls = len(self.config.shared_levels)
        sizes = np.concatenate([self.semantic_ids_, self.collaborative_ids_[:, ls:]], 1).max(0) + 1
        lp = self.semantic_ids_.shape[1] - ls
        return IDLayout(tuple(int(s) for s in sizes[:ls]), tuple(int(s) for s in sizes[ls:ls + lp]),
                        tuple(int(s) for s in sizes[ls + lp:]))

    def _builder(self, dataset) -> TaskBuilder:
        return TaskBuilder(dataset, self.tokenizer_, self.semantic_ids_, self.collaborative_ids_,
                           n_rec=self.config.n_rec, n_search=self.config.n_search,
                           rec_id=self.config.rec_id, search_id=self.config.search_id)

    def _identifiers(self, dataset, ids, semantic_embeddings, collaborative_embeddings):
        c = self.config
        n = dataset.n_items
        if ids is not None:
            if hasattr(ids, "semantic_ids_"):
                sem, col = ids.semantic_ids_, ids.collaborative_ids_
            else:
                sem, col = ids
            sem, col = np.asarray(sem, np.int64), np.asarray(col, np.int64)
            if sem.shape != col.shape or sem.ndim != 2 or sem.shape[0] != n:
                raise ValueError(f"ids must be two (n_items={n}, L) arrays of the same shape, "
                                 f"got {sem.shape} and {col.shape}")
            ls = len(c.shared_levels)
            if not np.array_equal(sem[:, :ls], col[:, :ls]):
                raise ValueError(f"semantic and collaborative IDs must share their first {ls} levels")
            return sem, col
        from .embeddings import SASRec, SentenceEncoder
        from .ids import DualIDs

        t = time.perf_counter()
        if semantic_embeddings is None:
            enc = SentenceEncoder(c.sentence_model)
            semantic_embeddings = enc.encode(dataset.items["text"].tolist(), show_progress=self._progress)
        self.timings_["semantic_embeddings"] = time.perf_counter() - t
        t = time.perf_counter()
        if collaborative_embeddings is None:
            self.sasrec_ = SASRec(epochs=c.sasrec_epochs, seed=c.seed, show_progress=self._progress).fit(dataset)
            collaborative_embeddings = self.sasrec_.item_embeddings_
        self.timings_["collaborative_embeddings"] = time.perf_counter() - t
        t = time.perf_counter()
        self.ids_ = DualIDs(shared_levels=c.shared_levels, specific_levels=c.specific_levels,
                            method=c.id_method, epochs=c.id_epochs, seed=c.seed,
                            progress=self._progress).fit(semantic_embeddings, collaborative_embeddings)
        self.timings_["identifiers"] = time.perf_counter() - t
        return (np.asarray(self.ids_.semantic_ids_, np.int64),
                np.asarray(self.ids_.collaborative_ids_, np.int64))

    def _new_seq2seq(self, vocab_size: int, seed: int):
        from .seq2seq import Seq2Seq

        c = self.config
        cfg = dict(vocab_size=vocab_size, d_model=c.d_model, d_kv=c.d_kv, d_ff=c.d_ff,
                   num_layers=c.num_layers, num_decoder_layers=c.num_decoder_layers,
                   num_heads=c.num_heads, feed_forward_proj=c.feed_forward_proj,
                   dropout_rate=c.dropout_rate)
        return Seq2Seq(cfg, lr=c.lr, weight_decay=c.weight_decay, max_grad_norm=c.max_grad_norm,
                       seed=seed)

    # ------------------------------------------------------------------ doc2query
    def _pseudo_queries(self, dataset) -> list:
        """Trains a small doc2query Seq2Seq (item text -> query) on the training
        search sessions and samples `pseudo_queries_per_item` queries per item."""
        from .doc2query import Doc2Query

        c = self.config
        self.doc2query_ = Doc2Query(self.tokenizer_, d_model=c.d_model, epochs=c.doc2query_epochs,
                                    seed=c.seed, progress=self._progress).fit(dataset)
        return self.doc2query_.generate(dataset.items["text"].tolist(), n=c.pseudo_queries_per_item)

    # ------------------------------------------------------------------ training
    def _train(self, dataset, pseudo, checkpoint_dir):
        from .training import Trainer

        c = self.config
        weights = {t: float(c.task_weights.get(t, 0.0)) for t in TASKS}
        parts = {t: self.builder_.examples(t, "train", pseudo_queries=pseudo)
                 for t, w in weights.items() if w > 0}
        self.seq2seq_ = self._new_seq2seq(self.tokenizer_.vocab_size, c.seed)

        def make_epoch(epoch):
            rng = np.random.default_rng([c.seed, 11, epoch])
            ep = mix(parts, weights, rng)
            if c.examples_per_epoch:
                ep = ep.iloc[:c.examples_per_epoch]
            inputs = render(ep, rng)
            targets = ep["target"].tolist()
            return [encode_batch(self.tokenizer_, inputs[i:i + c.batch_size], targets[i:i + c.batch_size],
                                 c.max_input_len, c.max_target_len)
                    for i in range(0, len(inputs), c.batch_size)]

        tasks = self._eval_tasks()
        validate = None
        if tasks and c.valid_cases > 0:
            def validate():
                table = self.evaluate("valid", protocols=("sampled",), max_cases=c.valid_cases,
                                      tasks=tasks, progress=False)
                out = {f"{task}_{c.metric}": float(v) for task, v in zip(table["task"], table[c.metric])}
                out[c.metric] = float(np.mean(list(out.values())))
                return out

        self.trainer_ = Trainer(self.seq2seq_, make_epoch, epochs=c.epochs, lr=c.lr, schedule=c.schedule,
                                warmup=c.warmup, validate=validate, metric=c.metric if validate else None,
                                patience=c.patience, checkpoint_dir=checkpoint_dir,
                                progress=self._progress, description="gensar")
        self.history_ = self.trainer_.fit()
        self.loss_curve_ = self.trainer_.loss_curve

    def _eval_tasks(self) -> tuple:
        w = self.config.task_weights
        out = []
        if w.get("nrip", 0) > 0:
            out.append("rec")
        if w.get("nsip", 0) > 0 or w.get("adhoc", 0) > 0:
            out.append("search")
        return tuple(out)

    # ================================================================== inference
    def _check_fitted(self):
        if not hasattr(self, "seq2seq_"):
            raise RuntimeError("this GenSAR is not fitted: call fit(dataset) or GenSAR.load(path)")

    def _id_table(self, task: str) -> np.ndarray:
        """Token paths (n_items, 1 + L) the decoder may produce for a task."""
        kind = self.config.rec_id if task == "rec" else self.config.search_id
        codes = self.semantic_ids_ if kind == "semantic" else self.collaborative_ids_
        return self.tokenizer_.id_token_ids(kind, codes, behaviour=REC_ITEM if task == "rec" else SRC_ITEM)

    def _decode(self, task, inputs, k, candidates=None, progress=False, batch_size=32):
        """Constrained beam search for input strings -> (items (B, k), scores (B, k))."""
        from .decode import CandidateSets, Trie

        c = self.config
        table = self._id_table(task)
        if candidates is None:
            target = Trie(table, vocab_size=self.tokenizer_.vocab_size)
            k = min(k, target.n_paths)
        beams = max(c.num_beams, k)
        items = np.full((len(inputs), k), -1, np.int64)
        scores = np.full((len(inputs), k), -np.inf, np.float32)
        from tqdm.auto import tqdm

        for s in tqdm(range(0, len(inputs), batch_size), disable=not progress, leave=False,
                      desc=f"decode {task}"):
            e = min(len(inputs), s + batch_size)
            ids, mask = self.tokenizer_.encode(inputs[s:e], c.max_input_len)
            tgt = target if candidates is None else CandidateSets(table, candidates[s:e])
            kk = k if candidates is None else min(k, candidates.shape[1])
            it, sc = self.seq2seq_.beam_search(ids, mask, tgt, num_beams=max(beams, kk), top_k=kk)
            items[s:e, :kk], scores[s:e, :kk] = it, sc
        return items, scores

    def evaluate(self, split: str = "test", protocols=("sampled", "full"), tasks=None,
                 ks=DEFAULT_KS, max_cases: int | None = None, progress: bool = True) -> pd.DataFrame:
        """HR@k / NDCG@k on a split of the fitted dataset, one row per (task, protocol).

        sampled: target + 99 negatives per case (the trie holds those 100 only);
        full: every item of the catalogue. The instruction phrasing is template 0.
        max_cases: evaluate the first N cases of each task only (validation)."""
        from .evaluate import generator_row

        self._check_fitted()
        if split not in ("valid", "test"):
            raise ValueError(f"split must be 'valid' or 'test', got {split!r}")
        tasks = tasks or self._eval_tasks()
        rows = []
        for task in tasks:
            ex = self.builder_.examples("nrip" if task == "rec" else "nsip", split)
            cand = np.asarray(self.dataset_.candidates(task, split, n_neg=self.config.n_negatives))
            if max_cases:
                ex, cand = ex.iloc[:max_cases], cand[:max_cases]
            inputs = render(ex)
            targets = ex["item"].to_numpy()
            for protocol in protocols:
                t = time.perf_counter()
                items, _ = self._decode(task, inputs, max(ks), candidates=cand if protocol == "sampled" else None,
                                        progress=progress)
                row = generator_row(items, targets, task, protocol, split, ks, method="GenSAR")
                row["seconds"] = time.perf_counter() - t
                rows.append(row)
        return pd.DataFrame(rows)

    def _item_index(self, item_ids) -> np.ndarray:
        lookup = pd.Series(np.arange(len(self.items_)), index=self.items_["item_id"])
        idx = lookup.reindex(list(item_ids))
        if idx.isna().any():
            missing = [i for i, v in zip(item_ids, idx.isna()) if v][:5]
            raise KeyError(f"unknown item id(s) {missing}: not in the fitted catalogue")
        return idx.to_numpy(np.int64)

    def _history_strings(self, histories) -> list:
        """histories: list (one per case) of events, each an item id (a
        recommendation click) or a tuple (kind, item_id, query), oldest first."""
        out = []
        for h in histories:
            if h is None:
                h = []
            if isinstance(h, (str, bytes)) or not hasattr(h, "__iter__"):
                raise TypeError("each history must be a list of item ids or (kind, item_id, query) tuples")
            events = [(e if isinstance(e, tuple) else ("rec", e, "")) for e in h]
            for kind, _, _ in events:
                if kind not in ("rec", "search"):
                    raise ValueError(f"event kind must be 'rec' or 'search', got {kind!r}")
            idx = self._item_index([e[1] for e in events]) if events else []
            out.append(self.builder_.render_history([(k, int(i), q) for (k, _, q), i in zip(events, idx)]))
        return out

    def _result_frame(self, items, scores) -> pd.DataFrame:
        rows = []
        for case, (its, scs) in enumerate(zip(items, scores)):
            for rank, (i, s) in enumerate(zip(its, scs)):
                if i >= 0:
                    rows.append((case, rank + 1, self.items_["item_id"].iloc[i], self.items_["title"].iloc[i], float(s)))
        return pd.DataFrame(rows, columns=["case", "rank", "item_id", "title", "score"])

    def recommend(self, histories, k: int = 10) -> pd.DataFrame:
        """Next-item recommendation for each history.

        histories : list of histories, each a list of item ids (recommendation
            clicks) or (kind, item_id, query) tuples with kind "rec" / "search", oldest first
        returns : DataFrame (case, rank, item_id, title, score), score = summed
            log-probability of the generated identifier
        """
        self._check_fitted()
        hist = self._history_strings(list(histories))
        inputs = [TEMPLATES["nrip"][0].format(history=h) for h in hist]
        return self._result_frame(*self._decode("rec", inputs, int(k)))

    def search(self, queries, histories=None, k: int = 10) -> pd.DataFrame:
        """Personalised search: items for each query, given the user's history
        (same format as in recommend; None for no history)."""
        self._check_fitted()
        if isinstance(queries, str):
            queries = [queries]
        queries = list(queries)
        if not all(isinstance(q, str) and q.strip() for q in queries):
            raise ValueError("queries must be non-empty strings")
        histories = [None] * len(queries) if histories is None else list(histories)
        if len(histories) != len(queries):
            raise ValueError(f"got {len(queries)} queries but {len(histories)} histories")
        hist = self._history_strings(histories)
        inputs = [TEMPLATES["nsip"][0].format(history=h, query=q) for h, q in zip(hist, queries)]
        return self._result_frame(*self._decode("search", inputs, int(k)))

    # ================================================================== persistence
    def save(self, path) -> None:
        """One directory: config.json, model.safetensors, ids.npz, items.json, tokenizer/."""
        self._check_fitted()
        d = Path(path)
        d.mkdir(parents=True, exist_ok=True)
        (d / "config.json").write_text(json.dumps(asdict(self.config), indent=1))
        self.seq2seq_.save(d / "model.safetensors")
        np.savez(d / "ids.npz", semantic=self.semantic_ids_, collaborative=self.collaborative_ids_)
        self.items_.to_json(d / "items.json", orient="records")
        self.tokenizer_.save(d / "tokenizer")

    @classmethod
    def load(cls, path, dataset=None) -> "GenSAR":
        """A saved model; pass the dataset to evaluate() it again."""
        from .seq2seq import Seq2Seq

        d = Path(path)
        for f in ("config.json", "model.safetensors", "ids.npz", "items.json", "tokenizer"):
            if not (d / f).exists():
                raise FileNotFoundError(f"{d / f} is missing; is {d} a directory written by GenSAR.save?")
        cfg = json.loads((d / "config.json").read_text())
        self = cls(cfg)
        ids = np.load(d / "ids.npz")
        self.semantic_ids_, self.collaborative_ids_ = ids["semantic"], ids["collaborative"]
        self.items_ = pd.read_json(d / "items.json", orient="records")
        self.tokenizer_ = Tokenizer.load(d / "tokenizer")
        self.seq2seq_ = Seq2Seq.load(d / "model.safetensors")
        if dataset is not None:
            self.dataset_ = dataset
            self.builder_ = self._builder(dataset)
        else:
            self.builder_ = TaskBuilder.for_items(self.tokenizer_, self.semantic_ids_, self.collaborative_ids_,
                                                  n_rec=self.config.n_rec, n_search=self.config.n_search,
                                                  rec_id=self.config.rec_id, search_id=self.config.search_id)
        return self
