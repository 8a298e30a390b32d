"""Hybrid retrieval: FTS5 BM25 and exact cosine similarity, fused by reciprocal rank.

Vectors of a subject are held as one normalised float32 matrix per
(subject, embedder), rebuilt only when the subject's vectors change, so a
query is one matrix-vector product.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from datetime import datetime
from typing import Optional, Sequence

import numpy as np

from ..models import SearchResult
from ..store.sqlite import SQLiteStore
from .embedders import Embedder

_WORD = re.compile(r"\w+", re.UNICODE)
_STOPWORDS = frozenset(
    "a an and are as at be by did do does for from had has have he her his how i in is it its me my of on or our "
    "she so that the their them they this to was we were what when where which who why will with you your".split()
)
RRF_K = 60


def index_text(content: str, name: Optional[str] = None) -> str:
    """The text indexed for a passage (lexically and for its vector)."""
    return content


def fts_query(query: str) -> str:
    """A safe FTS5 expression: the query's words, quoted, OR-ed (stopwords dropped when others remain)."""
    words = [w.lower() for w in _WORD.findall(query)]
    kept = [w for w in words if w not in _STOPWORDS] or words
    return " OR ".join(f'"{w}"' for w in dict.fromkeys(kept))


@dataclass
class _Matrix:
    stamp: tuple[int, int]
    pks: np.ndarray
    vectors: np.ndarray


class VectorCache:
    """Per (subject, embedder) matrices, rebuilt when ``vector_stamp`` changes."""

    def __init__(self, max_subjects: int = 64) -> None:
        self._lock = threading.Lock()
        self._cache: dict[tuple[int, str], _Matrix] = {}
        self._max = max_subjects

    def matrix(self, store: SQLiteStore, subject_pk: int, embedder: str) -> _Matrix:
        stamp = store.vector_stamp(subject_pk, embedder)
        key = (subject_pk, embedder)
        with self._lock:
            hit = self._cache.get(key)
        if hit is not None and hit.stamp == stamp:
            return hit
        rows = store.vectors(subject_pk, embedder)
        if rows:
            pks = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
            vectors = np.frombuffer(b"".join(r[1] for r in rows), dtype=np.float32).reshape(len(rows), -1)
        else:
            pks, vectors = np.zeros(0, np.int64), np.zeros((0, 0), np.float32)
        m = _Matrix(stamp, pks, vectors)
        with self._lock:
            if len(self._cache) >= self._max:
                self._cache.pop(next(iter(self._cache)))
            self._cache[key] = m
        return m


def _allowed(store: SQLiteStore, pks: Sequence[int], tags: Sequence[str], mode: str,
             start: Optional[datetime], end: Optional[datetime]) -> dict[int, dict]:
    rows = store.passages(list(pks))
    out = {}
    for pk, p in rows.items():
        if tags:
            have = set(p["tags"])
            if mode == "all" and not all(t in have for t in tags):
                continue
            if mode == "any" and not any(t in have for t in tags):
                continue
        if start is not None and p["created_at"] < start:
            continue
        if end is not None and p["created_at"] > end:
            continue
        out[pk] = p
    return out


def search(store: SQLiteStore, cache: VectorCache, embedder: Optional[Embedder], subject_pk: int, query: str, *,
           tags: Sequence[str], tag_match_mode: str, limit: int, start: Optional[datetime],
           end: Optional[datetime]) -> list[SearchResult]:
    pool = max(50, limit * 5)
    filtered = bool(tags) or start is not None or end is not None
    lexical = [pk for pk, _ in store.fts(subject_pk, fts_query(query), pool if not filtered else 10_000)]
    semantic: list[int] = []
    if embedder is not None:
        m = cache.matrix(store, subject_pk, embedder.name)
        if len(m.pks):
            q = embedder.embed([query])[0]
            scores = m.vectors @ q
            top = np.argsort(-scores)[: (pool if not filtered else len(scores))]
            semantic = [int(m.pks[i]) for i in top]
    fused: dict[int, float] = {}
    for ranking in (lexical, semantic):
        for rank, pk in enumerate(ranking):
            fused[pk] = fused.get(pk, 0.0) + 1.0 / (RRF_K + rank + 1)
    ordered = sorted(fused, key=lambda pk: -fused[pk])
    allowed = _allowed(store, ordered, tags, tag_match_mode, start, end)
    results = []
    for pk in ordered:
        p = allowed.get(pk)
        if p is None:
            continue
        results.append(SearchResult(score=fused[pk], **p))
        if len(results) >= limit:
            break
    return results
