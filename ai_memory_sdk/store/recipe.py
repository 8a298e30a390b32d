"""The retrieval recipe: what a passage's lexical row holds and how a query becomes FTS5 syntax.

Measured on LoCoMo (docs/dev/search-research.md): indexing a passage with its
date as words and the text of the 2 passages stored before it (a separate,
half-weighted FTS5 column), a Porter-stemmed index, and a bag-of-words query
without stopwords lift BM25 recall@10 from 0.55 to 0.76. Only previous
passages are used: a row changes only when a passage it names as context is
deleted (the store then rewrites the contexts that named it).

Part of the store (every backend builds its index rows with these functions);
search reads scores from the store and never needs it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime

from .._time import as_utc

CONTEXT_PASSAGES = 2  # previous passages of the subject indexed with a passage
CONTENT_WEIGHT = 1.0  # bm25() weight of the passage's own text
CONTEXT_WEIGHT = 0.5  # bm25() weight of its date and neighbours

_MONTHS = (
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
)

# English function words, dropped from queries when other words remain (written for this project).
STOPWORDS = frozenset(
    [
        "a",
        "an",
        "the",
        "and",
        "or",
        "but",
        "if",
        "then",
        "so",
        "of",
        "to",
        "in",
        "on",
        "at",
        "by",
        "for",
        "with",
        "from",
        "about",
        "as",
        "into",
        "onto",
        "over",
        "under",
        "up",
        "down",
        "out",
        "off",
        "than",
        "too",
        "very",
        "is",
        "am",
        "are",
        "was",
        "were",
        "be",
        "been",
        "being",
        "do",
        "does",
        "did",
        "done",
        "doing",
        "have",
        "has",
        "had",
        "having",
        "i",
        "me",
        "my",
        "mine",
        "you",
        "your",
        "yours",
        "he",
        "him",
        "his",
        "she",
        "her",
        "hers",
        "it",
        "its",
        "we",
        "us",
        "our",
        "ours",
        "they",
        "them",
        "their",
        "theirs",
        "this",
        "that",
        "these",
        "those",
        "what",
        "which",
        "who",
        "whom",
        "whose",
        "when",
        "where",
        "why",
        "how",
        "there",
        "here",
        "not",
        "no",
        "nor",
        "can",
        "could",
        "would",
        "should",
        "will",
        "shall",
        "may",
        "might",
        "must",
        "s",
        "t",
        "d",
        "ll",
        "re",
        "ve",
        "m",
        "just",
        "also",
        "any",
        "some",
        "such",
        "own",
        "same",
        "other",
        "each",
        "few",
        "more",
        "most",
        "all",
        "both",
        "only",
    ]
)

_TOKEN = re.compile(r"\w+", re.UNICODE)
_INDEXED = re.compile(r"[^\W_]+", re.UNICODE)  # what FTS5's unicode61 makes a token: letters and digits


def date_words(when: datetime) -> str:
    """'8 May 2023' (UTC, English month names whatever the locale): how people name a day in a query."""
    when = as_utc(when)
    return f"{when.day} {_MONTHS[when.month - 1]} {when.year}"


def passage_context(when: datetime, previous: Sequence[str]) -> str:
    """The ``context`` column of a passage: its date, then the passages stored before it (oldest first)."""
    return " ".join([date_words(when), *previous[-CONTEXT_PASSAGES:]]) if CONTEXT_PASSAGES else date_words(when)


def query_terms(query: str) -> list[str]:
    """Lowercased word tokens of a query, stopwords dropped (all kept if nothing else is left), deduplicated."""
    words = [w.lower() for w in _TOKEN.findall(query)]
    kept = [w for w in words if w not in STOPWORDS] or words
    return list(dict.fromkeys(kept))


def token_count(text: str) -> int:
    """Tokens of a text as a lexical index counts them (the document length BM25 normalises by)."""
    return len(_INDEXED.findall(text))


def quote(term: str) -> str:
    """One term as an FTS5 string: a ``\\w+`` token holds no ``"``, so no query text is FTS5 syntax."""
    return f'"{term}"'


def fts_query(query: str) -> str:
    """A safe FTS5 expression: the query's terms, each quoted, joined by OR ('' when it has no word)."""
    return " OR ".join(quote(t) for t in query_terms(query))
