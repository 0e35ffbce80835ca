"""GenSAR's training tasks: (input text, target tokens) pairs built from the protocol.

Tasks (the reference's names in brackets; GENSAR.md section 3):

============  =========================================  =====================================
task          input                                      target
============  =========================================  =====================================
nrip          history                                    <rec_item> + collaborative ID
              [SeqRecWithSrcHis]
nsip          history + query [PerSrcWithRecHis]         <src_item> + semantic ID
nsqp          history [QGenWithRecHis]                   <src_query> + query text
adhoc         pseudo-query of an item [AdHocSrc_Doc2Query]  <src_item> + semantic ID
item2sem      item text [Item2Index]                     <src_item> + semantic ID
item2col      item text [Item2Index]                     <rec_item> + collaborative ID
sem2item      <src_item> + semantic ID [Index2Item]      item title
col2item      <rec_item> + collaborative ID [Index2Item] item title
============  =========================================  =====================================

The history is the user's time-ordered mix of recommendation clicks, written
``<rec_item>`` + collaborative ID, and search sessions, written ``<src_query>``
query ``<src_item>`` + semantic ID, separated by "; " (the last `n_rec`
recommendation items and last `n_search` search clicks; the reference kept 5
and 5, GenSAR's default is 20 and 10, see GenSARConfig). The mixture of an
epoch follows the reference by default (REFERENCE_MIXTURE, epoch_counts). Each task has ten instruction phrasings written for this project;
training draws one at random per example, evaluation uses phrasing 0 unless
told otherwise.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from .decode import Trie
from .tokenizer import HISTORY_SEPARATOR, REC_ITEM, SRC_ITEM, SRC_QUERY, Tokenizer, escape_text

NO_HISTORY = "(no history yet)"

TASKS = ("nrip", "nsip", "nsqp", "adhoc", "item2sem", "item2col", "sem2item", "col2item")

TEMPLATES = {
    "nrip": [
        "The user's recent activity, oldest first: {history}. Recommend the next item.",
        "Given this history of clicks and searches: {history}. Which item should be recommended next?",
        "History: {history}. Predict the item this user will click next in their feed.",
        "A user interacted with: {history}. What will they want to see next?",
        "Based on {history}, suggest the next item for this user.",
        "These are the user's past recommendations and searches: {history}. Next recommendation:",
        "Continue the sequence with the most likely next item: {history}.",
        "Knowing the user engaged with {history}, pick the item to recommend now.",
        "Recommendation request. Past behaviour: {history}. Output the next item.",
        "What should the platform show this user next, given {history}?",
    ],
    "nsip": [
        "The user's recent activity, oldest first: {history}. They now search for \"{query}\". Which item will they click?",
        "History: {history}. Query: {query}. Return the item the user wants.",
        "Given the history {history}, find the item that best answers the search \"{query}\".",
        "A user with history {history} typed \"{query}\". Predict the clicked result.",
        "Search request: {query}. User history: {history}. Output the matching item.",
        "Personalised search. Past behaviour: {history}. Query: {query}.",
        "Which item does this user look for with \"{query}\", knowing {history}?",
        "Retrieve the item for the query \"{query}\" for a user who engaged with {history}.",
        "Query \"{query}\" from a user whose history is {history}. Best result:",
        "Find the item the user will pick after searching \"{query}\". Their history: {history}.",
    ],
    "nsqp": [
        "The user's recent activity, oldest first: {history}. What will they search for next?",
        "History: {history}. Predict the user's next search query.",
        "Given {history}, write the query this user is likely to type next.",
        "A user interacted with {history}. Next query:",
        "Based on the history {history}, generate the user's next search.",
        "What will this user look for next, knowing {history}?",
        "Suggest a search query for a user with this history: {history}.",
        "Query prediction. Past behaviour: {history}.",
        "The user engaged with {history}. What do they search now?",
        "Anticipate the next search of a user whose history is {history}.",
    ],
    "adhoc": [
        "Find the item for the query \"{query}\".",
        "Search: {query}.",
        "Which item best matches \"{query}\"?",
        "Return the item a user searching \"{query}\" wants.",
        "Query: {query}. Best result:",
        "Retrieve the item described by the search \"{query}\".",
        "A user searches for \"{query}\". Which item fits?",
        "Answer the search request \"{query}\" with one item.",
        "Look up the item for: {query}.",
        "What is the most relevant item for \"{query}\"?",
    ],
    "item2sem": [
        "Item: {item}. What is its search identifier?",
        "Give the semantic ID of this item: {item}.",
        "Which search identifier belongs to \"{item}\"?",
        "Map the item description to its semantic ID: {item}.",
        "Search identifier of the item {item}:",
        "Write the semantic ID for: {item}.",
        "The item is {item}. Output its identifier for search.",
        "Encode this item as a search identifier: {item}.",
        "Identify the item {item} with its semantic ID.",
        "What semantic ID does the item \"{item}\" have?",
    ],
    "item2col": [
        "Item: {item}. What is its recommendation identifier?",
        "Give the collaborative ID of this item: {item}.",
        "Which recommendation identifier belongs to \"{item}\"?",
        "Map the item description to its collaborative ID: {item}.",
        "Recommendation identifier of the item {item}:",
        "Write the collaborative ID for: {item}.",
        "The item is {item}. Output its identifier for recommendation.",
        "Encode this item as a recommendation identifier: {item}.",
        "Identify the item {item} with its collaborative ID.",
        "What collaborative ID does the item \"{item}\" have?",
    ],
    "sem2item": [
        "Which item has the search identifier {item}?",
        "Describe the item {item}.",
        "Name the item behind the semantic ID {item}.",
        "Semantic ID {item} refers to which item?",
        "Decode the search identifier {item} into the item's title.",
        "Title of the item {item}:",
        "What is the item {item}?",
        "Tell me which item {item} is.",
        "Translate the identifier {item} to the item name.",
        "The search identifier is {item}. Which item is it?",
    ],
    "col2item": [
        "Which item has the recommendation identifier {item}?",
        "Describe the item {item}.",
        "Name the item behind the collaborative ID {item}.",
        "Collaborative ID {item} refers to which item?",
        "Decode the recommendation identifier {item} into the item's title.",
        "Title of the item {item}:",
        "What is the item {item}?",
        "Tell me which item {item} is.",
        "Translate the identifier {item} to the item name.",
        "The recommendation identifier is {item}. Which item is it?",
    ],
}

# The "bare" prompt style (GenSARConfig.prompts): one phrasing per task, a task word and
# the fields only, and histories without separators (each event starts with its
# behaviour token anyway). With item bags on ml-100k's validation inputs 48 instead of 68
# encoder positions (recommendation) and 44 instead of 79 (search); a study setting that
# asks what the instruction text costs or gives.
BARE_TEMPLATES = {
    "nrip": ["recommend: {history}"],
    "nsip": ["search: {history} " + SRC_QUERY + " {query}"],
    "nsqp": ["query: {history}"],
    "adhoc": ["search: " + SRC_QUERY + " {query}"],
    "item2sem": ["semantic: {item}"],
    "item2col": ["collaborative: {item}"],
    "sem2item": ["title: {item}"],
    "col2item": ["title: {item}"],
}
# prompt style -> (templates, history separator)
PROMPT_STYLES = {"phrasings": (TEMPLATES, HISTORY_SEPARATOR), "bare": (BARE_TEMPLATES, " ")}


class TaskBuilder:
    """Turns a :class:`gensar.datasets.Dataset` plus identifiers into task examples.

    dataset : gensar.datasets.Dataset, or None for a builder that only renders
        histories and targets (inference on a loaded model)
    tokenizer : gensar.tokenizer.Tokenizer
    semantic_ids, collaborative_ids : int arrays (n_items, L) of level codes
    n_rec, n_search : how many recent recommendation items / search clicks a history keeps
    rec_id, search_id : which identifier recommendation / search items are written
        with (GenSAR: collaborative / semantic; the ablations use one kind for both)
    separator : what separates a history's events (PROMPT_STYLES)
    """

    def __init__(self, dataset, tokenizer: Tokenizer, semantic_ids, collaborative_ids,
                 n_rec: int = 5, n_search: int = 5, rec_id: str = "collaborative",
                 search_id: str = "semantic", separator: str = HISTORY_SEPARATOR):
        if not isinstance(separator, str):
            raise TypeError(f"separator must be a string, got {type(separator).__name__}")
        self.separator = separator
        semantic_ids, collaborative_ids = np.asarray(semantic_ids), np.asarray(collaborative_ids)
        n = len(semantic_ids) if dataset is None else dataset.n_items
        for name, ids in (("semantic_ids", semantic_ids), ("collaborative_ids", collaborative_ids)):
            if ids.ndim != 2 or ids.shape[0] != n:
                raise ValueError(f"{name} must have one row per item ({n}), got {ids.shape}")
        if n_rec < 0 or n_search < 0:
            raise ValueError("n_rec and n_search must be >= 0")
        self.ds, self.tok = dataset, tokenizer
        self.n_rec, self.n_search = int(n_rec), int(n_search)
        self.id_text = {"semantic": np.array(tokenizer.id_strings("semantic", semantic_ids), dtype=object),
                        "collaborative": np.array(tokenizer.id_strings("collaborative", collaborative_ids), dtype=object)}
        self.id_tokens = {"semantic": tokenizer.id_token_ids("semantic", semantic_ids),
                          "collaborative": tokenizer.id_token_ids("collaborative", collaborative_ids)}
        # Which identifier each ID-producing task generates, and its behaviour token.
        self.target_id = {"nrip": (rec_id, REC_ITEM), "nsip": (search_id, SRC_ITEM),
                          "adhoc": (search_id, SRC_ITEM), "item2sem": ("semantic", SRC_ITEM),
                          "item2col": ("collaborative", REC_ITEM)}
        self.rec_text = REC_ITEM + self.id_text[rec_id]
        self.src_text = SRC_ITEM + self.id_text[search_id]
        if dataset is not None:
            ev = dataset.events
            self._kind_is_rec = (ev["kind"].to_numpy() == "rec")
            items = ev["item"].to_numpy()
            # user text is escaped so it cannot spell a control token (tokenizer docstring)
            queries = np.array([escape_text(q) for q in ev["query"]], dtype=object)
            src = SRC_QUERY + " " + queries + " " + self.src_text[items]
            self._event_text = np.where(self._kind_is_rec, self.rec_text[items], src)

    @classmethod
    def for_items(cls, tokenizer, semantic_ids, collaborative_ids, **kw) -> "TaskBuilder":
        """A builder without a dataset: renders histories and targets only."""
        return cls(None, tokenizer, semantic_ids, collaborative_ids, **kw)

    # ------------------------------------------------------------------ pieces
    def _latest(self, is_rec: np.ndarray) -> np.ndarray:
        """Positions (in order) of the last n_rec rec and last n_search search events."""
        pos = np.arange(len(is_rec))
        rec, src = pos[is_rec], pos[~is_rec]
        keep = np.concatenate([rec[max(0, len(rec) - self.n_rec):] if self.n_rec else rec[:0],
                               src[max(0, len(src) - self.n_search):] if self.n_search else src[:0]])
        keep.sort()
        return keep

    def history_text(self, history_rows) -> str:
        """Event rows of the dataset (oldest first) -> the history string."""
        rows = np.asarray(history_rows, dtype=np.int64)
        keep = rows[self._latest(self._kind_is_rec[rows])]
        return self.separator.join(self._event_text[keep]) if len(keep) else NO_HISTORY

    def render_history(self, events) -> str:
        """[(kind, item index, query), ...] oldest first -> the history string."""
        if not events:
            return NO_HISTORY
        is_rec = np.array([k == "rec" for k, _, _ in events])
        parts = []
        for p in self._latest(is_rec):
            kind, item, query = events[p]
            parts.append(self.rec_text[item] if kind == "rec"
                         else f"{SRC_QUERY} {escape_text(query)} {self.src_text[item]}")
        return self.separator.join(parts)

    def target_tokens(self, task: str, item: int) -> list:
        kind, behaviour = self.target_id[task]
        return [self.tok.behaviour_ids[behaviour], *self.id_tokens[kind][item].tolist(), self.tok.eos_id]

    def id_trie(self, kind: str) -> Trie:
        """The catalogue's trie of identifier kind (code tokens, no behaviour token): which
        codes may follow a prefix, what the constrained loss normalises over. Built once."""
        tries = self.__dict__.setdefault("_tries", {})
        if kind not in tries:
            # "first": items sharing an identifier share its prefixes, all the mask needs
            tries[kind] = Trie(self.id_tokens[kind], vocab_size=self.tok.vocab_size, on_duplicate="first")
        return tries[kind]

    def identifier_index(self):
        """(sorted keys, item index of each) of every item's identifier of both kinds, a key
        being its code tokens in mixed radix over the vocabulary. Built once; a layout whose
        keys would overflow int64 is refused."""
        if "_identifier_index" not in self.__dict__:
            L, V = self.tok.layout.length, self.tok.vocab_size
            if V ** L >= 2 ** 63:
                raise ValueError(f"identifiers of {L} codes over a vocabulary of {V} tokens cannot be keyed "
                                 f"in int64 (at most {int(63 / np.log2(V))} codes): lower vocab_size or the levels")
            keys = self._identifier_keys(np.concatenate([self.id_tokens["semantic"], self.id_tokens["collaborative"]]))
            items = np.tile(np.arange(len(self.id_tokens["semantic"])), 2)
            order = np.argsort(keys, kind="stable")
            self._identifier_index = (keys[order], items[order])
        return self._identifier_index

    def _identifier_keys(self, codes) -> np.ndarray:
        key = np.zeros(codes.shape[:-1], np.int64)
        for j in range(codes.shape[-1]):
            key = key * self.tok.vocab_size + np.maximum(codes[..., j], 0)
        return key

    def items_of_bags(self, bags) -> np.ndarray:
        """Item index (int64, -1: none) of each position of item bags (..., K)
        (Tokenizer.bag_identifiers: slots 1..L an identifier's code tokens), whichever kind
        of identifier it holds; -1 for text positions and cut identifiers."""
        keys, items = self.identifier_index()
        codes = np.asarray(bags)[..., 1:1 + self.tok.layout.length].astype(np.int64)
        key = self._identifier_keys(codes)
        at = np.minimum(np.searchsorted(keys, key), len(keys) - 1)
        return np.where((keys[at] == key) & (codes >= 0).all(-1), items[at], -1)

    def allowed_mask(self, tasks, items, T: int, vocab_size: int) -> np.ndarray:
        """The constrained loss's mask (B, T, vocab_size) bool for a batch's examples
        (their task names and target items): at each identifier code of an ID target
        only the codes valid after its prefix in the catalogue (what constrained beam
        search renormalises over); every other position (behaviour token, </s>, text
        targets) is unconstrained."""
        mask = np.ones((len(tasks), T, vocab_size), bool)
        for b, (task, item) in enumerate(zip(tasks, items)):
            if task not in self.target_id or item < 0:
                continue
            kind = self.target_id[task][0]
            trie, path = self.id_trie(kind), self.id_tokens[kind][item]
            for lv in range(min(len(path), T - 1)):
                mask[b, 1 + lv] = False
                mask[b, 1 + lv, trie.children(path[:lv])] = True
        return mask

    def text_target_tokens(self, text: str, behaviour: str | None = None) -> list:
        ids = self.tok.encode_text(text)  # user text: escaped, text tokens only
        head = [self.tok.behaviour_ids[behaviour]] if behaviour else []
        return head + ids + [self.tok.eos_id]

    # ------------------------------------------------------------------ examples
    def examples(self, task: str, split: str, pseudo_queries=None) -> pd.DataFrame:
        """Examples of one task as a DataFrame with columns ``task``, ``fields``
        (dict filling the template placeholders), ``target`` (token id list) and
        ``item`` (the target item, -1 for text targets).

        history tasks (nrip, nsip, nsqp) use the dataset's split; item tasks
        (adhoc, item2sem, item2col, sem2item, col2item) cover every item and exist
        for split "train" only. adhoc needs pseudo_queries: a list of query lists,
        one list per item.
        """
        if task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got {task!r}")
        if self.ds is None:
            raise RuntimeError("this TaskBuilder has no dataset (made by for_items)")
        if task in ("nrip", "nsip", "nsqp"):
            ex = self.ds.examples("rec" if task == "nrip" else "search", split)
            hist = [self.history_text(h) for h in ex["history"]]
            targets = ex["target"].to_numpy()
            if task == "nrip":
                fields = [{"history": h} for h in hist]
                tgt = [self.target_tokens(task, t) for t in targets]
                items = targets
            elif task == "nsip":
                fields = [{"history": h, "query": escape_text(q)} for h, q in zip(hist, ex["query"])]
                tgt = [self.target_tokens(task, t) for t in targets]
                items = targets
            else:
                fields = [{"history": h} for h in hist]
                tgt = [self.text_target_tokens(q, SRC_QUERY) for q in ex["query"]]
                items = np.full(len(ex), -1)
            return pd.DataFrame({"task": task, "fields": fields, "target": tgt, "item": items})
        if split != "train":
            raise ValueError(f"task {task!r} covers every item and is a training task only")
        n = self.ds.n_items
        titles = self.ds.items["title"].astype(str).tolist()
        texts = self.ds.items["text"].astype(str).tolist()
        if task == "adhoc":
            if pseudo_queries is None or len(pseudo_queries) != n:
                raise ValueError(f"adhoc needs pseudo_queries: one list of queries per item ({n})")
            rows = [(q, i) for i in range(n) for q in pseudo_queries[i] if q]
            fields = [{"query": escape_text(q)} for q, _ in rows]
            items = np.array([i for _, i in rows], dtype=np.int64)
            tgt = [self.target_tokens(task, i) for i in items]
        elif task in ("item2sem", "item2col"):
            fields = [{"item": escape_text(t)} for t in texts]
            items = np.arange(n)
            tgt = [self.target_tokens(task, i) for i in items]
        else:
            kind, behaviour = ("semantic", SRC_ITEM) if task == "sem2item" else ("collaborative", REC_ITEM)
            fields = [{"item": behaviour + s} for s in self.id_text[kind]]
            items = np.full(n, -1)
            tgt = [self.text_target_tokens(t) for t in titles]
        return pd.DataFrame({"task": task, "fields": fields, "target": tgt, "item": items})


def render(examples: pd.DataFrame, rng: np.random.Generator | None = None, template: int = 0,
           templates: dict = TEMPLATES) -> list:
    """Input strings of examples: a random phrasing per example when rng is given
    (training), else phrasing `template` (evaluation); `templates`: TEMPLATES or
    BARE_TEMPLATES (one phrasing per task)."""
    out = []
    for task, fields in zip(examples["task"], examples["fields"]):
        options = templates[task]
        k = int(rng.integers(len(options))) if rng is not None else template
        out.append(options[k].format(**fields))
    return out


# The reference's epoch (GENSAR.md section 3, Amazon): every next-item example (~930k),
# 100k personalised-search, 1k query-generation, 1k doc2query and 2k + 2k alignment
# examples (Item2Index, Index2Item over both ID kinds: 1k per task here). Written as
# examples of each task per next-item recommendation example: about 90% next-item
# recommendation, 10% personalised search, 0.1% each for the rest.
REFERENCE_MIXTURE = {"nrip": 1.0, "nsip": 100 / 930, "nsqp": 1 / 930, "adhoc": 1 / 930,
                     "item2sem": 1 / 930, "item2col": 1 / 930, "sem2item": 1 / 930, "col2item": 1 / 930}
# The tasks of each side, for single-task variants (ablations, the trade-off study).
REC_TASKS = ("nrip", "item2col", "col2item")
SEARCH_TASKS = ("nsip", "nsqp", "adhoc", "item2sem", "sem2item")


def task_subset(tasks, weights: dict | None = None) -> dict:
    """The weights of `tasks` only (default weights: REFERENCE_MIXTURE), the others 0.
    With :func:`epoch_counts` a variant trained on a subset sees exactly the same
    examples per epoch of each task it keeps as the model trained on all of them."""
    weights = REFERENCE_MIXTURE if weights is None else weights
    bad = [t for t in tasks if t not in TASKS]
    if bad:
        raise ValueError(f"unknown task(s) {bad}; tasks are {TASKS}")
    return {t: (float(weights.get(t, 0.0)) if t in tasks else 0.0) for t in TASKS}


def epoch_counts(weights: dict, anchor: int) -> dict:
    """Examples per epoch of each task: round(weight * anchor), at least 1 for a task
    with weight > 0, 0 for weight 0 or a missing task.

    weights : task -> examples of the task per next-item example (see REFERENCE_MIXTURE)
    anchor : next-item examples per epoch (the budget is defined per task, anchored on
        next-item recommendation, and never renormalised over the tasks present: a
        variant that drops tasks keeps the same exposure to the tasks it has)
    """
    if isinstance(anchor, bool) or not isinstance(anchor, (int, np.integer)) or anchor < 1:
        raise ValueError(f"anchor must be an int >= 1, got {anchor!r}")
    out = {}
    for task, w in (weights or {}).items():
        if task not in TASKS:
            raise ValueError(f"unknown task {task!r} in weights; tasks are {TASKS}")
        w = float(w)
        if not np.isfinite(w) or w < 0:
            raise ValueError(f"task weight must be a finite number >= 0, got {w} for {task}")
        out[task] = max(1, int(round(w * anchor))) if w > 0 else 0
    return out


def _stream_rows(n_rows: int, take: int, seed: int, task: str, epoch: int) -> np.ndarray:
    """Rows [epoch * take, (epoch + 1) * take) of an endless stream of seeded
    permutations of range(n_rows): every example of a task is seen once before any
    is seen twice, and epoch e depends only on (seed, task, e), so a resumed run and
    every variant that trains the task see the very same rows."""
    start, stop = epoch * take, (epoch + 1) * take
    tid = TASKS.index(task)
    pieces = [np.random.default_rng([seed, 13, tid, c]).permutation(n_rows)
              for c in range(start // n_rows, (stop - 1) // n_rows + 1)]
    stream = np.concatenate(pieces)
    off = (start // n_rows) * n_rows
    return stream[start - off: stop - off]


def epoch_mixture(parts: dict, counts: dict, seed: int, epoch: int) -> pd.DataFrame:
    """One epoch: counts[t] examples of each task t from parts[t] (see
    :func:`_stream_rows`), shuffled together with default_rng([seed, 11, epoch])."""
    chunks = []
    for task in TASKS:
        n = int(counts.get(task, 0))
        if n <= 0:
            continue
        if task not in parts or len(parts[task]) == 0:
            raise ValueError(f"task {task!r} has {n} examples per epoch but no examples to draw from")
        chunks.append(parts[task].iloc[_stream_rows(len(parts[task]), n, int(seed), task, int(epoch))])
    if not chunks:
        raise ValueError("every task has weight 0 or no examples: nothing to train on")
    out = pd.concat(chunks, ignore_index=True)
    rng = np.random.default_rng([int(seed), 11, int(epoch)])
    return out.iloc[rng.permutation(len(out))].reset_index(drop=True)


def mix(parts: dict, weights: dict | None, rng: np.random.Generator) -> pd.DataFrame:
    """One epoch's mixture sized by each task's own data: task t contributes
    weight_t * len(parts[t]) examples (sampled without replacement up to its size,
    with replacement beyond), shuffled together. Missing weights count as 1; weight 0
    drops a task. (GenSAR trains with :func:`epoch_mixture`, whose budget is per task.)"""
    weights = weights or {}
    chunks = []
    for task, df in parts.items():
        w = float(weights.get(task, 1.0))
        if w < 0:
            raise ValueError(f"task weight must be >= 0, got {w} for {task}")
        n = int(round(w * len(df)))
        if n == 0 or len(df) == 0:
            continue
        idx = rng.permutation(len(df))[:n] if n <= len(df) else rng.integers(len(df), size=n)
        chunks.append(df.iloc[idx])
    if not chunks:
        raise ValueError("every task has weight 0 or no examples: nothing to train on")
    out = pd.concat(chunks, ignore_index=True)
    return out.iloc[rng.permutation(len(out))].reset_index(drop=True)


def length_grouped_batches(lengths, batch_size: int, rng: np.random.Generator, group: int = 50) -> list:
    """Batches (arrays of example indices) of similar length, for training.

    The (already shuffled) epoch is cut into windows of `group` batches; each window
    is sorted by length and cut into batches, and the batches are shuffled. Every
    example is used once, batches stay random mixtures of tasks and users, but a
    batch pads to the longest of similar rows. Measured on ml-100k's quick preset
    (one epoch of 5,000 next-item examples): padding fell from 16.0% to 9.2% of the
    encoder's positions, 7.5% fewer positions in all.

    lengths : (n,) lengths of the inputs (characters are a good enough proxy)
    """
    lengths = np.asarray(lengths)
    window = int(batch_size) * int(group)
    batches = []
    for s in range(0, len(lengths), window):
        w = np.arange(s, min(s + window, len(lengths)))
        w = w[np.argsort(lengths[w], kind="stable")]
        batches += [w[i:i + batch_size] for i in range(0, len(w), batch_size)]
    return [batches[i] for i in rng.permutation(len(batches))]


def target_labels(targets, max_target: int) -> np.ndarray:
    """Targets (token id lists) -> labels int32 (B, T) for the loss, -100 on padding, each cut
    to max_target tokens (T: the longest, at most max_target)."""
    T = min(max_target, max(len(t) for t in targets))
    labels = np.full((len(targets), T), -100, np.int32)
    for i, t in enumerate(targets):
        t = t[:T]
        labels[i, :len(t)] = t
    return labels


def encode_batch(tokenizer: Tokenizer, inputs, targets, max_input: int, max_target: int):
    """Inputs (strings) and targets (token id lists) -> a training batch dict of plain
    token inputs: input_ids / attention_mask int32 (B, T_in), labels int32 (B, T_out)
    with -100 on padding. (GenSAR's own inputs, item bags included: GenSAR._encode_inputs.)"""
    ids, mask = tokenizer.encode(inputs, max_input)
    return {"input_ids": ids, "attention_mask": mask, "labels": target_labels(targets, max_target)}
