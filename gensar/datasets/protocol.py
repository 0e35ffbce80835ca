"""The unified search + recommendation protocol: :class:`Dataset` and :func:`from_pandas`.

Every loader in :mod:`gensar.datasets` ends in :func:`from_pandas`, so the rules below
hold for all data.

Building a dataset (in this order)
----------------------------------
1. Events. Each row of ``interactions`` is a recommendation click (kind ``"rec"``).
   Each row of ``searches`` is one clicked item of a search session (kind
   ``"search"``, with its query text). Exact duplicate rows (same user, item,
   timestamp, kind and query) are dropped.
2. k-core filtering. Users with fewer than ``min_user_events`` events and items with
   fewer than ``min_item_events`` events (both kinds counted) are removed, repeatedly,
   until both conditions hold. The item catalogue is the items left with >= 1 event.
3. Dense ids. Users and items are numbered 0..n-1 in ascending order of their
   original ids, so the numbering does not depend on row order.
4. Order. Each user's events are sorted by (timestamp, kind with "rec" before
   "search", dense item index, query text). This makes ties between equal timestamps
   deterministic and independent of the input's row order. (Semi-synthetic searches
   are chosen after this sort, so there equal timestamps are ordered by item alone.)
5. Semi-synthetic search (only with ``search_share``, for data without queries).
   One uniform number u in [0, 1) per event is drawn, in the order of step 4, from
   ``numpy.random.default_rng([seed, 1])``; an event becomes a one-click search
   session when u < search_share and its item has a non-empty ``synthetic_query``
   (the query text is that item's ``synthetic_query``). Same seed -> same data.
6. Sessions. ``session`` is a dense int id: every recommendation event is its own
   session; search events share a session when they have the same user and
   ``session_id`` (or, without that column, the same user, timestamp and query).
7. Leave-one-out split, per task. For each user and each kind separately, the
   sessions of that kind are ordered by their first event: the last -> ``"test"``,
   the second last -> ``"valid"``, the rest -> ``"train"``. A user with fewer than
   3 sessions of a kind has all of them in ``"train"`` (no evaluation example for
   that task). For search, all clicked items of the held-out session are targets.

History rule (what an example may see)
--------------------------------------
The history of an example is the user's events that come before the example's
session in the order of step 4 (both kinds mixed, oldest first), restricted by split
so that no evaluation target leaks into training inputs:

- a ``"train"`` example sees earlier ``"train"`` events only;
- a ``"valid"`` example sees earlier ``"train"`` and ``"valid"`` events;
- a ``"test"`` example sees all earlier events (of both kinds, any split).

Candidate sets (the reference's sampled protocol)
-------------------------------------------------
``candidates(task, split)`` returns int64 (n_examples, 1 + n_neg), target in
column 0, rows aligned with ``examples(task, split)``:

- ``"rec"``, ``sampler="popularity"`` (the default, as the reference): n_neg items
  the user never interacted with (any kind, any split), drawn without replacement
  with probability proportional to the item's popularity: its number of events
  (both kinds) in the ``"train"`` split. Drawing is successive: each next negative
  is drawn among the items not yet drawn, proportionally to popularity.
  ``default_rng([seed, 3, split])``. Items with no training event have weight 0;
  only a user who has seen all but fewer than n_neg items of positive weight gets
  such items, uniformly, to complete the set.
- ``"rec"``, ``sampler="uniform"``: n_neg items drawn uniformly without replacement
  from the items the user never interacted with, ``default_rng([seed, 2, split])``
  (gensar's protocol before the popularity sampler; easier, not comparable with the
  reference's numbers);
- ``"search"``: the n_neg best BM25 items for the query over ``items.text``,
  excluding the target; equal scores are ordered by a seeded random priority.

Full-catalogue evaluation ranks ``target`` among all ``n_items`` items; the targets
are the ``target`` column of ``examples``.
"""

from __future__ import annotations

import warnings
from typing import Iterable

import numpy as np
import pandas as pd

from ._text import category_query, tokenize

TASKS = ("rec", "search")
REC_SAMPLERS = ("popularity", "uniform")
SPLITS = ("train", "valid", "test")
_SPLIT_CODE = {s: i for i, s in enumerate(SPLITS)}
# Session key of semi-synthetic searches; the NUL byte keeps it apart from user keys.
_SYNTHETIC = "\x00synthetic"


# --------------------------------------------------------------------------- validation


def _show(v) -> str:
    """repr of an id without numpy's wrapper (np.int64(5) -> 5)."""
    return repr(v.item() if isinstance(v, np.generic) else v)


def _require_frame(df, what: str) -> pd.DataFrame:
    if not isinstance(df, pd.DataFrame):
        raise TypeError(f"{what} must be a pandas DataFrame, got {type(df).__name__}")
    return df


def _require_columns(df: pd.DataFrame, cols: Iterable[str], what: str, hint: str) -> None:
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise ValueError(
            f"{what} is missing column(s) {missing}; it has {list(df.columns)}. "
            f"{hint}"
        )


def _id_kind(s: pd.Series) -> str:
    """'int' or 'str': the two id types accepted (floats are not ids)."""
    if pd.api.types.is_integer_dtype(s):
        return "int"
    if pd.api.types.is_string_dtype(s) or s.dtype == object:
        if s.map(lambda v: isinstance(v, str)).all():
            return "str"
    return "bad"


def _normalise_ids(s: pd.Series, kind: str, int_dtype=np.int64) -> pd.Series:
    """int ids as int_dtype (int64, or uint64 for ids >= 2**63; also from nullable
    Int64/UInt64), str ids as Python-object str."""
    return s.astype(int_dtype) if kind == "int" else s.astype(object)


_INT64_MAX = np.iinfo(np.int64).max


def _int_id_dtype(columns: list) -> type:
    """The exact dtype for one role's integer ids (items, or users) over all the
    columns [(what, Series)] that hold them: int64, or uint64 when some id exceeds
    2**63 - 1 (int64 would wrap it negative). uint64 cannot hold negative ids, so
    a role that mixes both is refused with the columns named."""
    big = [what for what, s in columns if len(s) and pd.api.types.is_unsigned_integer_dtype(s)
           and int(s.max()) > _INT64_MAX]
    if not big:
        return np.int64
    neg = [what for what, s in columns if len(s) and pd.api.types.is_signed_integer_dtype(s)
           and int(s.min()) < 0]
    if neg:
        raise ValueError(f"{big[0]} holds ids >= 2**63 while {neg[0]} holds negative ids: no integer type "
                         f"holds both exactly; convert the ids to str")
    return np.uint64


def _check_ids(s: pd.Series, what: str) -> str:
    if s.isna().any():
        raise ValueError(f"{what} has {int(s.isna().sum())} missing value(s); drop those rows first")
    kind = _id_kind(s)
    if kind == "bad":
        raise TypeError(
            f"{what} must hold integers or strings, got dtype {s.dtype}; "
            f"convert it, e.g. df[col] = df[col].astype('int64') or .astype(str)"
        )
    return kind


def _to_timestamp(s: pd.Series, what: str) -> pd.Series:
    """Numeric timestamps as int64 (float64 if not integral); datetimes -> unix seconds."""
    if pd.api.types.is_datetime64_any_dtype(s):
        if s.isna().any():
            raise ValueError(f"{what} has missing timestamps; drop those rows first")
        if getattr(s.dt, "tz", None) is not None:
            s = s.dt.tz_convert("UTC").dt.tz_localize(None)
        return (s.astype("datetime64[ns]").astype("int64") // 10**9).astype("int64")
    if pd.api.types.is_bool_dtype(s) or not pd.api.types.is_numeric_dtype(s):
        raise TypeError(
            f"{what} must be numeric (e.g. unix seconds) or datetime64, got dtype {s.dtype}; "
            f"convert it with pd.to_numeric or pd.to_datetime"
        )
    if s.isna().any():
        raise ValueError(f"{what} has {int(s.isna().sum())} missing timestamp(s); drop those rows first")
    if pd.api.types.is_integer_dtype(s):
        return s.astype(np.int64)  # no float round trip: ns timestamps exceed 2**53
    v = s.to_numpy(dtype=np.float64)
    if not np.isfinite(v).all():
        raise ValueError(f"{what} has non-finite timestamps")
    if np.all(v == np.round(v)):
        return pd.Series(v.astype(np.int64), index=s.index)
    return pd.Series(v, index=s.index)


def _text_column(s: pd.Series, what: str) -> pd.Series:
    bad = s.map(lambda v: not (isinstance(v, str) or v is None or (isinstance(v, float) and np.isnan(v))))
    if bad.any():
        example = s[bad].iloc[0]
        raise TypeError(f"{what} must hold strings, found {type(example).__name__} {example!r}")
    return s.fillna("").astype(object).map(str)


# ------------------------------------------------------------------------------ builder


def _item_table(items: pd.DataFrame, *, item_col: str, title_col: str, text_col: str | None,
                category_col: str, item_kind: str, item_dtype) -> pd.DataFrame:
    """The items frame of a Dataset from the user's items table (columns checked
    by the caller): item_id, title, category, text, synthetic_query (+ the
    user's other columns). The text rule is from_pandas': ``text_col``, else a
    column "text", else title + ". " + description + ". " + category. Also used
    by GenSAR.add_items, so items added later get their text the same way."""
    it = items.copy()
    it = it.rename(columns={item_col: "item_id", title_col: "title"})
    it["item_id"] = _normalise_ids(it["item_id"], item_kind, item_dtype)
    it["title"] = _text_column(it["title"], f"items[{title_col!r}]")
    if category_col in items.columns:
        it = it.rename(columns={category_col: "category"}) if category_col != "category" else it
        it["category"] = it["category"].map(
            lambda v: " | ".join(map(str, v)) if isinstance(v, (list, tuple, np.ndarray))
            else ("" if v is None or (isinstance(v, float) and np.isnan(v)) else str(v))
        )
    else:
        it["category"] = ""
    if "description" in it.columns:
        it["description"] = _text_column(it["description"], "items['description']")
    if text_col is not None:
        if text_col not in items.columns:
            raise ValueError(f"items has no text_col {text_col!r}; it has {list(items.columns)}")
        it["text"] = _text_column(items[text_col].set_axis(it.index), f"items[{text_col!r}]")
    elif "text" in it.columns:
        it["text"] = _text_column(it["text"], "items['text']")
    else:
        parts = [it["title"]]
        if "description" in it.columns:
            parts.append(it["description"])
        parts.append(it["category"])
        it["text"] = [". ".join(p for p in row if p) for row in zip(*parts)]
    if "synthetic_query" in it.columns:
        it["synthetic_query"] = _text_column(it["synthetic_query"], "items['synthetic_query']")
    else:
        it["synthetic_query"] = it["category"].map(lambda c: category_query(c.split(" | ")) if c else "")
    return it


def from_pandas(
    interactions: pd.DataFrame,
    items: pd.DataFrame,
    searches: pd.DataFrame | None = None,
    *,
    user_col: str = "user_id",
    item_col: str = "item_id",
    time_col: str = "timestamp",
    query_col: str = "query",
    session_col: str = "session_id",
    title_col: str = "title",
    text_col: str | None = None,
    category_col: str = "category",
    search_share: float | None = None,
    min_user_events: int = 5,
    min_item_events: int = 5,
    unknown_items: str = "raise",
    seed: int = 0,
    name: str = "custom",
) -> "Dataset":
    """Build a :class:`Dataset` from your own tables (see the module docstring for rules).

    Parameters
    ----------
    interactions : DataFrame
        Recommendation clicks, one row each: ``user_col``, ``item_col``, ``time_col``
        (numeric, e.g. unix seconds, or datetime64). Ids are int or str.
    items : DataFrame
        One row per item: ``item_col`` (unique), ``title_col`` (str). Optional:
        ``text_col`` (the text for embeddings and BM25; default: the column "text" if
        present, else title + ". " + description + ". " + category), ``"description"``,
        ``category_col`` (str or list of str), ``"synthetic_query"`` (str; the query used
        by ``search_share``; default: the words of ``category_col``, see
        :func:`gensar.datasets._text.category_query`). Other columns are kept.
    searches : DataFrame, optional
        Real search clicks, one row per clicked item: ``user_col``, ``item_col``,
        ``time_col``, ``query_col`` (non-empty str), optional ``session_col``.
    search_share : float in [0, 1], optional
        Turn this share of interactions into semi-synthetic search sessions
        (only when ``searches`` is None).
    min_user_events, min_item_events : int
        k-core thresholds (both kinds counted). After filtering every user needs
        at least 3 events (train, valid, test).
    unknown_items : {"raise", "drop"}
        What to do with events whose item is not in ``items``.
    seed : int
        Seeds the semi-synthetic search and the candidate sampling.

    Returns
    -------
    Dataset
    """
    _require_frame(interactions, "interactions")
    _require_frame(items, "items")
    if searches is not None:
        _require_frame(searches, "searches")
    if unknown_items not in ("raise", "drop"):
        raise ValueError(f"unknown_items must be 'raise' or 'drop', got {unknown_items!r}")
    for k, v in (("min_user_events", min_user_events), ("min_item_events", min_item_events)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0:
            raise ValueError(f"{k} must be an int >= 0, got {v!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be an int >= 0, got {seed!r}")
    if search_share is not None:
        if searches is not None:
            raise ValueError(
                "give either real `searches` or `search_share` (semi-synthetic search), not both"
            )
        if isinstance(search_share, bool) or not (isinstance(search_share, (int, float, np.integer, np.floating))
                                                  and 0.0 <= float(search_share) <= 1.0):
            raise ValueError(f"search_share must be a number in [0, 1], got {search_share!r}")

    hint = (
        f"Name them with the arguments user_col/item_col/time_col/query_col/title_col "
        f"(now {user_col!r}, {item_col!r}, {time_col!r}, {query_col!r}, {title_col!r})."
    )
    _require_columns(interactions, [user_col, item_col, time_col], "interactions", hint)
    _require_columns(items, [item_col, title_col], "items", hint)
    if searches is not None:
        _require_columns(searches, [user_col, item_col, time_col, query_col], "searches", hint)

    if len(items) == 0:
        raise ValueError(f"items is empty (0 rows): it needs one row per item, with columns "
                         f"{item_col!r} and {title_col!r}")
    if len(interactions) == 0 and (searches is None or len(searches) == 0):
        raise ValueError(f"interactions is empty (0 rows){'' if searches is None else ' and so is searches'}: "
                         f"there are no events to build a dataset from")

    # ---- items table
    item_kind = _check_ids(items[item_col], f"items[{item_col!r}]")
    # one exact integer dtype per role, over every column holding such ids
    item_cols = [(f"items[{item_col!r}]", items[item_col]), (f"interactions[{item_col!r}]", interactions[item_col])]
    user_cols = [(f"interactions[{user_col!r}]", interactions[user_col])]
    if searches is not None:
        item_cols.append((f"searches[{item_col!r}]", searches[item_col]))
        user_cols.append((f"searches[{user_col!r}]", searches[user_col]))
    item_dtype = _int_id_dtype(item_cols)
    user_dtype = _int_id_dtype(user_cols)
    if items[item_col].duplicated().any():
        dup = items.loc[items[item_col].duplicated(), item_col].iloc[0]
        raise ValueError(f"items[{item_col!r}] must be unique; {_show(dup)} appears more than once")
    it = _item_table(items, item_col=item_col, title_col=title_col, text_col=text_col,
                     category_col=category_col, item_kind=item_kind, item_dtype=item_dtype)

    # ---- events
    frames = []
    rec = interactions[[user_col, item_col, time_col]].copy()
    rec.columns = ["user_id", "item_id", "timestamp"]
    rec["kind"] = "rec"
    rec["query"] = ""
    rec["session_key"] = ""
    frames.append(("interactions", rec))
    if searches is not None:
        cols = [user_col, item_col, time_col, query_col]
        src = searches[cols].copy()
        src.columns = ["user_id", "item_id", "timestamp", "query"]
        src["query"] = _text_column(src["query"], f"searches[{query_col!r}]")
        empty = src["query"].str.strip() == ""
        if empty.any():
            raise ValueError(
                f"searches[{query_col!r}] has {int(empty.sum())} empty quer(y/ies); "
                f"every search session needs its query text"
            )
        src["kind"] = "search"
        if session_col in searches.columns:
            src["session_key"] = searches[session_col].astype(str).to_numpy()
        else:
            # No session ids: one session per (user, timestamp, query).
            src["session_key"] = src["timestamp"].astype(str) + "\x1f" + src["query"]
        frames.append(("searches", src))

    user_kind = None
    frames = [(what, f) for what, f in frames if len(f)]  # an empty table has no id type
    for what, f in frames:
        uk = _check_ids(f["user_id"], f"{what}[{user_col!r}]")
        if user_kind is not None and uk != user_kind:
            raise TypeError(f"user ids of interactions and searches differ in type ({user_kind} vs {uk})")
        user_kind = uk
        ik = _check_ids(f["item_id"], f"{what}[{item_col!r}]")
        if ik != item_kind:
            raise TypeError(
                f"{what}[{item_col!r}] holds {ik} ids but items[{item_col!r}] holds {item_kind} ids; "
                f"convert one so they match"
            )
        f["user_id"] = _normalise_ids(f["user_id"], uk, user_dtype)
        f["item_id"] = _normalise_ids(f["item_id"], ik, item_dtype)
        f["timestamp"] = _to_timestamp(f["timestamp"], f"{what}[{time_col!r}]")
    ev = pd.concat([f for _, f in frames], ignore_index=True)
    if len(ev) == 0:
        raise ValueError("no interactions given: the interactions table is empty")

    known = ev["item_id"].isin(it["item_id"])
    if not known.all():
        unknown = ev.loc[~known, "item_id"].unique()
        msg = (
            f"{int((~known).sum())} event(s) refer to {len(unknown)} item id(s) missing from items, "
            f"e.g. [{', '.join(_show(u) for u in unknown[:5])}]"
        )
        if unknown_items == "raise":
            raise ValueError(msg + "; add them to items or pass unknown_items='drop'")
        warnings.warn(msg + "; dropped", stacklevel=2)
        ev = ev[known]

    ev = ev.drop_duplicates(["user_id", "item_id", "timestamp", "kind", "query"])

    # ---- k-core, repeated until stable (removing items can push users below the bar)
    while True:
        ucount = ev.groupby("user_id")["item_id"].transform("size")
        icount = ev.groupby("item_id")["user_id"].transform("size")
        keep = (ucount >= min_user_events) & (icount >= min_item_events)
        if keep.all():
            break
        ev = ev[keep]
        if len(ev) == 0:
            break
    if len(ev) == 0:
        raise ValueError(
            f"no events left after k-core filtering (min_user_events={min_user_events}, "
            f"min_item_events={min_item_events}); lower these thresholds"
        )
    sizes = ev.groupby("user_id").size()
    short = sizes[sizes < 3]
    if len(short):
        raise ValueError(
            f"{len(short)} user(s) have fewer than 3 events (e.g. user {_show(short.index[0])} has "
            f"{int(short.iloc[0])}); leave-one-out needs train, valid and test events. "
            f"Use min_user_events >= 3 or drop those users"
        )

    # ---- dense ids in sorted original-id order
    user_ids = np.sort(ev["user_id"].unique())
    item_ids = np.sort(ev["item_id"].unique())
    ev["user"] = np.searchsorted(user_ids, ev["user_id"].to_numpy()).astype(np.int64)
    ev["item"] = np.searchsorted(item_ids, ev["item_id"].to_numpy()).astype(np.int64)
    it = it.set_index("item_id").loc[item_ids].reset_index()

    # ---- canonical order (step 4); rec (0) before search (1) at equal timestamps
    ev["_kind_code"] = (ev["kind"] == "search").astype(np.int8)
    ev = ev.sort_values(
        ["user", "timestamp", "_kind_code", "item", "query"], kind="mergesort"
    ).reset_index(drop=True)

    # ---- semi-synthetic search (step 5)
    if search_share is not None:
        u = np.random.default_rng([int(seed), 1]).random(len(ev))
        q = it["synthetic_query"].to_numpy(dtype=object)[ev["item"].to_numpy()]
        to_search = (u < float(search_share)) & (q != "")
        ev.loc[to_search, "kind"] = "search"
        ev.loc[to_search, "query"] = q[to_search]
        ev.loc[to_search, "session_key"] = _SYNTHETIC  # one session per event, see _build
        ev.loc[to_search, "_kind_code"] = 1

    return Dataset._build(ev, it, user_ids, seed=int(seed), name=name, config=dict(
        search_share=search_share, min_user_events=int(min_user_events),
        min_item_events=int(min_item_events), seed=int(seed),
    ))


# ------------------------------------------------------------------------------ dataset


class Dataset:
    """Users' time-ordered streams of recommendation clicks and search sessions.

    Build one with :func:`from_pandas` or a loader (:func:`gensar.datasets.load`).
    The rules (order, k-core, splits, history, candidates) are in the docstring of
    :mod:`gensar.datasets.protocol`.

    Attributes
    ----------
    events : DataFrame, one row per event, RangeIndex 0..n_events-1, sorted by
        (user, timestamp, kind, item, query). Columns:
        ``user`` int64 in [0, n_users), ``item`` int64 in [0, n_items),
        ``timestamp`` int64 (float64 if the source was fractional), ``kind`` str in
        {"rec", "search"}, ``query`` str ("" for rec), ``session`` int64 (dense; each rec
        event is its own session), ``split`` str in {"train", "valid", "test"} (per-task
        leave-one-out), ``user_id`` / ``item_id`` (original ids).
    items : DataFrame indexed 0..n_items-1 (dense item index). Columns: ``item_id``
        (original id), ``title`` str, ``text`` str (for embeddings and BM25),
        ``category`` str (" | "-joined categories or genres), ``synthetic_query`` str,
        plus loader-specific columns (MovieLens: ``genres``, ``year``).
    users : ndarray (n_users,) of the original user ids; position = dense user index.
    n_users, n_items : int
    seed : int
    name : str
    config : dict of the parameters the dataset was built with.
    """

    def __init__(self, events: pd.DataFrame, items: pd.DataFrame, users: np.ndarray,
                 *, seed: int, name: str, config: dict | None = None):
        self.events = events
        self.items = items
        self.users = users
        self.seed = seed
        self.name = name
        self.config = dict(config or {})
        self.n_users = int(len(users))
        self.n_items = int(len(items))
        self._cand_cache: dict = {}
        self._ranker = None
        self._prepare_arrays()

    # -- construction helpers
    @classmethod
    def _build(cls, ev: pd.DataFrame, it: pd.DataFrame, user_ids: np.ndarray, *, seed, name, config):
        n = len(ev)
        # Sessions (step 6): rec events and synthetic searches are sessions of one event.
        single = (ev["kind"] == "rec") | (ev["session_key"] == _SYNTHETIC)
        key = np.where(single, "\x00" + pd.Series(np.arange(n)).astype(str),
                       ev["user"].astype(str) + "\x1f" + ev["session_key"].astype(str))
        # factorize without sorting numbers sessions in order of first appearance,
        # i.e. in time order, which is what the split ranks by.
        session, _ = pd.factorize(pd.Series(key, dtype=object), sort=False)
        ev = ev.assign(session=session.astype(np.int64))

        # Split (step 7): rank sessions per (user, kind) from the newest.
        first = ev.drop_duplicates("session")[["user", "kind", "session"]]
        from_end = first.groupby(["user", "kind"]).cumcount(ascending=False).to_numpy()
        count = first.groupby(["user", "kind"])["session"].transform("size").to_numpy()
        code = np.where(count >= 3, np.select([from_end == 0, from_end == 1], [2, 1], 0), 0)
        split_of_session = np.empty(n, dtype=np.int8)
        split_of_session[first["session"].to_numpy()] = code
        split = np.asarray(SPLITS, dtype=object)[split_of_session[ev["session"].to_numpy()]]

        events = pd.DataFrame({
            "user": ev["user"].to_numpy(np.int64),
            "item": ev["item"].to_numpy(np.int64),
            "timestamp": ev["timestamp"].to_numpy(),
            "kind": ev["kind"].to_numpy(dtype=object),
            "query": ev["query"].to_numpy(dtype=object),
            "session": ev["session"].to_numpy(np.int64),
            "split": split,
            "user_id": ev["user_id"].to_numpy(),
            "item_id": ev["item_id"].to_numpy(),
        })
        items = it.reset_index(drop=True)
        front = ["item_id", "title", "text", "category", "synthetic_query"]
        items = items[front + [c for c in items.columns if c not in front]]
        return cls(events, items, np.asarray(user_ids), seed=seed, name=name, config=config)

    def _prepare_arrays(self) -> None:
        ev = self.events
        self._user = ev["user"].to_numpy(np.int64)
        self._split_code = ev["split"].map(_SPLIT_CODE).to_numpy(np.int8)
        sess = ev["session"].to_numpy(np.int64)
        # Position of the first event of each event's session: history stops there.
        first_pos = pd.Series(np.arange(len(ev))).groupby(sess).transform("min").to_numpy()
        self._session_start = first_pos.astype(np.int64)
        self._user_start = np.searchsorted(self._user, np.arange(self.n_users + 1))

    # -- examples
    def _check_task_split(self, task: str, split: str) -> None:
        if task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got {task!r}")
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")

    def examples(self, task: str, split: str, max_history: int | None = None) -> pd.DataFrame:
        """One row per target event of ``task`` in ``split``, in ``events`` order.

        Columns: ``event`` int64 (row of ``events``), ``user`` int64, ``target`` int64
        (dense item), ``timestamp``, ``session`` int64, ``query`` str (search only),
        ``history`` (ndarray int64 of ``events`` rows, oldest first, see the history
        rule in :mod:`gensar.datasets.protocol`; the last ``max_history`` if given),
        ``history_len`` int64. Use :meth:`history_tuples` to read a history.
        """
        self._check_task_split(task, split)
        if max_history is not None and (not isinstance(max_history, (int, np.integer)) or max_history < 0):
            raise ValueError(f"max_history must be None or an int >= 0, got {max_history!r}")
        ev = self.events
        code = _SPLIT_CODE[split]
        rows = np.flatnonzero((ev["kind"].to_numpy() == task) & (self._split_code == code))
        visible = np.flatnonzero(self._split_code <= code)
        lo = np.searchsorted(visible, self._user_start[self._user[rows]])
        hi = np.searchsorted(visible, self._session_start[rows])
        if max_history is not None:
            lo = np.maximum(lo, hi - max_history)
        history = [visible[a:b] for a, b in zip(lo, hi)]
        out = pd.DataFrame({
            "event": rows.astype(np.int64),
            "user": self._user[rows],
            "target": ev["item"].to_numpy()[rows],
            "timestamp": ev["timestamp"].to_numpy()[rows],
            "session": ev["session"].to_numpy()[rows],
        })
        if task == "search":
            out["query"] = ev["query"].to_numpy(dtype=object)[rows]
        out["history"] = pd.Series(history, dtype=object)
        out["history_len"] = (hi - lo).astype(np.int64)
        return out

    def history_tuples(self, history: np.ndarray) -> list[tuple[str, int, str]]:
        """Events rows -> [(kind, item, query), ...] in the given order."""
        ev = self.events
        idx = np.asarray(history, dtype=np.int64)
        return list(zip(ev["kind"].to_numpy()[idx], ev["item"].to_numpy()[idx].tolist(),
                        ev["query"].to_numpy()[idx]))

    # -- candidates
    def candidates(self, task: str, split: str, n_neg: int = 99, seed: int | None = None,
                   sampler: str = "popularity") -> np.ndarray:
        """Sampled candidate sets: int64 array (n_examples, 1 + n_neg), target in column 0.

        Rows align with ``examples(task, split)``. Columns 1.. are negatives (rec:
        items the user never interacted with, drawn by ``sampler``: "popularity"
        (default, the reference's protocol) or "uniform"; search: BM25 hard negatives
        for the query, best first; ``sampler`` does not apply). Callers that feed the
        set to a model whose output depends on order should shuffle it. ``seed``
        defaults to ``self.seed``; results are cached per (task, split, n_neg, seed,
        sampler).
        """
        self._check_task_split(task, split)
        if isinstance(n_neg, bool) or not isinstance(n_neg, (int, np.integer)) or n_neg < 1:
            raise ValueError(f"n_neg must be an int >= 1, got {n_neg!r}")
        if sampler not in REC_SAMPLERS:
            raise ValueError(f"sampler must be one of {REC_SAMPLERS}, got {sampler!r}")
        seed = self.seed if seed is None else int(seed)
        if task == "search":
            sampler = "bm25"
        key = (task, split, int(n_neg), seed, sampler)
        if key not in self._cand_cache:
            ex = self.examples(task, split, max_history=0)
            if task == "rec":
                weights = self.item_popularity() if sampler == "popularity" else None
                out = self._rec_negatives(ex, int(n_neg), seed, _SPLIT_CODE[split], weights)
            else:
                from ._bm25 import BM25Ranker, hard_negatives
                if self._ranker is None:
                    self._ranker = BM25Ranker(self.items["text"].tolist())
                out = hard_negatives(self._ranker, ex["query"].tolist(), ex["target"].to_numpy(),
                                     int(n_neg), seed)
            out.setflags(write=False)  # cached and shared: callers must copy to modify
            self._cand_cache[key] = out
        return self._cand_cache[key]

    def item_popularity(self) -> np.ndarray:
        """float64 (n_items,): events of each item (both kinds) in the "train" split,
        the weights of the popularity negative sampler."""
        train = self._split_code == _SPLIT_CODE["train"]
        return np.bincount(self.events["item"].to_numpy(np.int64)[train],
                           minlength=self.n_items).astype(np.float64)

    def _rec_negatives(self, ex: pd.DataFrame, n_neg: int, seed: int, split_code: int,
                       weights: np.ndarray | None = None) -> np.ndarray:
        """Negatives for rec examples: uniform (weights None) or proportional to
        ``weights`` (n_items,), without replacement, never an item the user saw."""
        n_items = np.int64(self.n_items)
        seen = np.unique(self._user * n_items + self.events["item"].to_numpy(np.int64))
        seen_per_user = np.bincount(seen // n_items, minlength=self.n_users)
        users = ex["user"].to_numpy(np.int64)
        free = n_items - seen_per_user[users]
        if len(users) and free.min() < n_neg:
            u = int(users[np.argmin(free)])
            raise ValueError(
                f"user {_show(self.users[u])} interacted with all but {int(free.min())} items, "
                f"fewer than n_neg={n_neg}; lower n_neg"
            )
        if weights is None:
            rng = np.random.default_rng([seed, 2, split_code])
            draw_items = lambda shape: rng.integers(0, n_items, size=shape)  # noqa: E731
        else:
            rng = np.random.default_rng([seed, 3, split_code])
            cdf = np.cumsum(weights)
            total = cdf[-1]
            if total <= 0:
                raise ValueError("no item has a training event: popularity weights are all 0; "
                                 "use sampler='uniform'")
            # Inverse-CDF draws; side="right" never returns an item of weight 0.
            draw_items = lambda shape: np.minimum(  # noqa: E731
                np.searchsorted(cdf, rng.random(shape) * total, side="right"), n_items - 1)
        out = np.empty((len(users), n_neg + 1), dtype=np.int64)
        out[:, 0] = ex["target"].to_numpy(np.int64)
        todo = np.arange(len(users))
        width = 2 * n_neg + 16
        for _attempt in range(4):
            if len(todo) == 0:
                break
            # Rejection sampling in one batch: draw more than needed, drop seen items and
            # repeats within a row, keep the first n_neg survivors in draw order. Keeping
            # the first new unseen items of i.i.d. draws is exactly successive sampling
            # without replacement, for uniform and for popularity weights alike.
            draw = draw_items((len(todo), width))
            ok = ~np.isin(users[todo, None] * n_items + draw, seen)
            order = np.argsort(draw, axis=1, kind="stable")
            sd = np.take_along_axis(draw, order, axis=1)
            dup_sorted = np.zeros_like(ok)
            dup_sorted[:, 1:] = sd[:, 1:] == sd[:, :-1]
            dup = np.zeros_like(ok)
            np.put_along_axis(dup, order, dup_sorted, axis=1)
            ok &= ~dup
            filled = ok.sum(axis=1) >= n_neg
            sel = ok[filled] & (np.cumsum(ok[filled], axis=1) <= n_neg)
            out[todo[filled], 1:] = draw[filled][sel].reshape(-1, n_neg)
            todo = todo[~filled]
            width *= 4
        for r in todo:  # users who saw most of the (popular) catalogue: sample the complement directly
            mine = seen[(seen >= users[r] * n_items) & (seen < (users[r] + 1) * n_items)] - users[r] * n_items
            pool = np.setdiff1d(np.arange(n_items), mine)
            if weights is None:
                out[r, 1:] = rng.choice(pool, size=n_neg, replace=False)
                continue
            w = weights[pool]
            pos, zero = pool[w > 0], pool[w <= 0]
            k = min(n_neg, len(pos))
            # Exponential race: the k smallest Exp(1)/w are a successive weighted sample.
            race = rng.exponential(size=len(pos)) / w[w > 0]
            picked = pos[np.argsort(race, kind="stable")[:k]]
            if k < n_neg:
                picked = np.concatenate([picked, rng.choice(zero, size=n_neg - k, replace=False)])
            out[r, 1:] = picked
        return out

    # -- statistics
    def stats(self) -> pd.DataFrame:
        """Summary statistics: a one-row DataFrame indexed by the dataset name
        (``.T`` reads best). Query/item overlap = mean, over search events, of the
        share of query words that occur in the clicked item's text."""
        ev = self.events
        is_rec = ev["kind"].to_numpy() == "rec"
        per_user = lambda mask: np.bincount(self._user[mask], minlength=self.n_users)  # noqa: E731
        src = ev[~is_rec]
        if len(src):
            pairs = src[["query", "item"]].drop_duplicates()
            item_tokens = {}
            overlap = {}
            for q, i in zip(pairs["query"], pairs["item"]):
                if i not in item_tokens:
                    item_tokens[i] = set(tokenize(self.items.at[i, "text"]))
                qt = tokenize(q)
                overlap[(q, i)] = (sum(t in item_tokens[i] for t in qt) / len(qt)) if qt else 0.0
            ov = float(np.mean([overlap[(q, i)] for q, i in zip(src["query"], src["item"])]))
            qlen = float(src["query"].map(lambda q: len(tokenize(q))).mean())
        else:
            ov, qlen = float("nan"), float("nan")
        row = {
            "users": self.n_users,
            "items": self.n_items,
            "events": len(ev),
            "rec_interactions": int(is_rec.sum()),
            "search_interactions": int((~is_rec).sum()),
            "search_sessions": int(src["session"].nunique()),
            "distinct_queries": int(src["query"].nunique()),
            "mean_events_per_user": float(len(ev) / self.n_users),
            "mean_rec_per_user": float(per_user(is_rec).mean()),
            "mean_search_per_user": float(per_user(~is_rec).mean()),
            "rec_test_examples": int(((ev["split"] == "test") & is_rec).sum()),
            "search_test_examples": int(((ev["split"] == "test") & ~is_rec).sum()),
            "mean_test_history_rec": float(self.examples("rec", "test")["history_len"].mean()),
            "mean_test_history_search": float(self.examples("search", "test")["history_len"].mean()),
            "mean_query_words": qlen,
            "mean_item_text_words": float(self.items["text"].map(lambda t: len(tokenize(t))).mean()),
            "query_item_overlap": ov,
        }
        return pd.DataFrame([row], index=pd.Index([self.name], name="dataset"))

    def __repr__(self) -> str:
        kinds = self.events["kind"].value_counts()
        return (f"Dataset({self.name!r}: {self.n_users} users, {self.n_items} items, "
                f"{int(kinds.get('rec', 0))} rec + {int(kinds.get('search', 0))} search events, "
                f"seed={self.seed})")
