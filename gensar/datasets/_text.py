"""Small text helpers shared by the loaders, BM25 and the semi-synthetic queries.

One tokenizer is used everywhere (BM25 index, BM25 queries, overlap statistics) so
that "word" means the same thing in every number this package reports.
"""

from __future__ import annotations

import html
import re

# Unicode letters/digits runs; keeps "1990s" and "sci" "fi" apart from punctuation.
_WORD_RE = re.compile(r"[^\W_]+", re.UNICODE)
_TAG_RE = re.compile(r"<[^>]*>")
_SPACE_RE = re.compile(r"\s+")

# Words dropped from category-path queries: they carry no category meaning and
# would only add noise to the query (e.g. "Cases & Sleeves" -> "cases sleeves").
QUERY_STOPWORDS = frozenset(
    "a an and the of for with in on to by or at from".split()
)


def tokenize(text: str) -> list[str]:
    """Lower-cased word tokens of ``text`` (letters and digits; punctuation splits)."""
    return _WORD_RE.findall(str(text).lower())


def clean_html(text: object) -> str:
    """Plain text from a metadata field: unescape entities, drop tags, squeeze spaces."""
    if text is None:
        return ""
    if isinstance(text, (list, tuple)):
        text = " ".join(str(t) for t in text)
    text = html.unescape(_TAG_RE.sub(" ", str(text)))
    return _SPACE_RE.sub(" ", text).strip()


def category_query(words_source: list[str] | str) -> str:
    """Query text from category words: tokens lower-cased, stopwords dropped,
    duplicates removed keeping the first occurrence, joined by single spaces.

    >>> category_query(["Electronics", "Cases & Sleeves", "Cases"])
    'electronics cases sleeves'
    """
    if isinstance(words_source, str):
        words_source = [words_source]
    seen: dict[str, None] = {}
    for part in words_source:
        for tok in tokenize(part):
            if tok not in QUERY_STOPWORDS:
                seen.setdefault(tok, None)
    return " ".join(seen)


_ARTICLE_RE = re.compile(r"^(?P<body>.+), (?P<art>The|A|An)(?P<alt> \(.*\))?$")


def movielens_title(raw: str) -> tuple[str, int | None]:
    """Split a MovieLens title into (readable title, year or None).

    MovieLens writes "Shawshank Redemption, The (1994)": the year is stripped and a
    trailing English article is moved to the front ("The Shawshank Redemption"), so
    the title reads like the text a sentence encoder was trained on.
    """
    title = str(raw).strip()
    year = None
    m = re.search(r"\s*\((\d{4})(?:[-\u2013]\d{0,4})?\)\s*$", title)
    if m:
        year = int(m.group(1))
        title = title[: m.start()].strip()
    m = _ARTICLE_RE.match(title)
    if m:
        title = f"{m.group('art')} {m.group('body')}{m.group('alt') or ''}"
    return title, year
