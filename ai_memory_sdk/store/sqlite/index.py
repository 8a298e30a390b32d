"""Archival passages in a SQLite file (``store.base.PassageIndex``): FTS5 rows, vectors, re-embedding.

Lexical search is FTS5 with the Porter tokenizer over two columns, the
passage and its ``context`` (its date as words and the subject's previous
passages, ``search.recipe``), scored by ``bm25()`` with the recipe's weights.
A query scores every passage it matches at 2-3 µs each; when the store's
matches would exceed ``LEXICAL_BUDGET``, the most frequent terms are dropped
(they carry the least IDF), and a query of only very frequent words is scored
over the newest matches. A subject that holds most of the store is filtered
against its pks in numpy rather than by joining ``passages`` in SQL (half the
cost).
"""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import Callable, Sequence

import numpy as np

from ...search.recipe import CONTENT_WEIGHT, CONTEXT_WEIGHT, query_terms, quote
from .._rows import PASSAGE_COLS, passage_row
from ..base import IndexChanges, IndexCursor, PassageRow
from ._db import Database, guarded
from .queue import insert_vectors

log = logging.getLogger(__name__)

LEXICAL_BUDGET = 2_000  # matching passages (whole store) one lexical query may score


@guarded
class SQLiteIndex:
    """``PassageIndex`` over one SQLite file."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.budget = LEXICAL_BUDGET

    def changes(self, subject_pk: int, embedder: str | None, since: IndexCursor) -> IndexChanges:
        with self.db.read() as conn:
            row = conn.execute("SELECT added, removed FROM search_gen WHERE subject_pk=?", (subject_pk,)).fetchone()
            gen = (row[0], row[1]) if row else (0, 0)
            if gen == since.generation and since != IndexCursor():
                return IndexChanges(since)
            reset = since == IndexCursor() or gen[1] != since.generation[1] or gen[0] < since.generation[0]
            after_pk, after_seq = (0, 0) if reset else (since.max_pk, since.max_seq)
            passages = [
                (r[0], r[1], json.loads(r[2]))
                for r in conn.execute(
                    "SELECT pk, created_at, tags FROM passages WHERE subject_pk=? AND pk>? ORDER BY pk",
                    (subject_pk, after_pk),
                )
            ]
            vectors = (
                conn.execute(
                    "SELECT seq, passage_pk, vector FROM passage_vectors WHERE subject_pk=? AND embedder=?"
                    " AND seq>? ORDER BY seq",
                    (subject_pk, embedder, after_seq),
                ).fetchall()
                if embedder
                else []
            )
        cursor = IndexCursor(
            gen,
            passages[-1][0] if passages else after_pk,
            vectors[-1][0] if vectors else after_seq,
        )
        return IndexChanges(cursor, reset, passages, vectors)

    def lexical(
        self,
        subject_pk: int,
        query: str,
        k: int,
        *,
        allowed: Callable[[np.ndarray], np.ndarray] | None = None,
        subject_size: int | None = None,
        allowed_fraction: float = 1.0,
    ) -> list[tuple[int, float]]:
        match, min_pk, size = self._match(query)
        if not match or subject_size == 0 or allowed_fraction <= 0.0:
            return []
        join = allowed is None or subject_size is None or subject_size < 0.5 * size
        if join and (allowed is None or allowed_fraction >= 1.0):  # the join alone is the whole filter
            return self._fts(subject_pk, match, k, min_pk)
        assert allowed is not None
        share = allowed_fraction * (1.0 if join else (subject_size or 0) / max(size, 1))
        limit: int | None = max(4 * k, int(2 * k / max(share, 1e-9)))
        while True:
            rows = self._fts(subject_pk if join else None, match, limit, min_pk)
            pks = np.fromiter((r[0] for r in rows), np.int64, len(rows))
            hits = [rows[i] for i in np.flatnonzero(allowed(pks))[:k]]
            if len(hits) >= k or limit is None or len(rows) < limit:
                return hits
            limit = None  # the filter is more selective than its share suggested: rank every match

    # -- lexical helpers ---------------------------------------------------------------------------

    def _match(self, query: str) -> tuple[str, int, int]:
        """(FTS5 expression, lowest pk to scan, passages in the store) for a query, within the budget.

        Small stores get the whole bag of words. Otherwise terms are kept rarest
        first while their matches fit the budget; if even the rarest term matches
        more, it alone is scored over its ``budget`` newest matches.
        """
        terms = query_terms(query)
        if not terms:
            return "", 0, 0
        conn = self.db.conn()  # two statements: SQLite answers a lone min() or max() from the index, not both
        lo = conn.execute("SELECT coalesce(min(pk), 0) FROM passages").fetchone()[0]
        hi = conn.execute("SELECT coalesce(max(pk), 0) FROM passages").fetchone()[0]
        size = hi - lo + 1 if hi else 0  # an upper bound: deleted pks leave holes
        budget = self.budget
        if size <= budget:
            return " OR ".join(quote(t) for t in terms), 0, size
        counts = sorted((self._doc_count(quote(t), budget + 1), i, t) for i, t in enumerate(terms))
        kept, total = [], 0
        for df, _, t in counts:
            if df and total + df <= budget:
                kept.append(t)
                total += df
        if kept:
            if len(kept) < len(terms):
                log.debug("lexical query %r: kept %s, dropped the more frequent ones", query, kept)
            return " OR ".join(quote(t) for t in kept), 0, size
        rarest = next((t for df, _, t in counts if df), None)
        if rarest is None:
            return "", 0, size
        min_pk = self._nth_newest(quote(rarest), budget)
        log.debug("lexical query %r: every term is frequent; %r scored over passages from pk %d", query, rarest, min_pk)
        return quote(rarest), min_pk, size

    def _fts(self, subject_pk: int | None, match: str, limit: int | None, min_pk: int) -> list[tuple[int, float]]:
        """(pk, -bm25) best first, of one subject (a join) or of the whole store (the caller filters)."""
        sql = (
            "SELECT f.rowid, bm25(passages_fts, ?, ?) AS s FROM passages_fts f"
            + (" CROSS JOIN passages p ON p.pk=f.rowid" if subject_pk is not None else "")
            + " WHERE passages_fts MATCH ? AND f.rowid>=?"
            + (" AND p.subject_pk=?" if subject_pk is not None else "")
            + " ORDER BY s LIMIT ?"
        )
        args = (
            CONTENT_WEIGHT,
            CONTEXT_WEIGHT,
            match,
            min_pk,
            *(() if subject_pk is None else (subject_pk,)),
            -1 if limit is None else limit,
        )
        try:
            rows = self.db.conn().execute(sql, args).fetchall()
        except sqlite3.OperationalError as exc:
            log.debug("FTS query %r refused: %s", match, exc)
            return []
        return [(r[0], -r[1]) for r in rows]

    def _doc_count(self, match: str, cap: int) -> int:
        try:
            row = (
                self.db.conn()
                .execute(
                    "SELECT count(*) FROM (SELECT 1 FROM passages_fts WHERE passages_fts MATCH ? LIMIT ?)", (match, cap)
                )
                .fetchone()
            )
        except sqlite3.OperationalError:
            return 0
        return int(row[0])

    def _nth_newest(self, match: str, n: int) -> int:
        try:
            row = (
                self.db.conn()
                .execute(
                    "SELECT rowid FROM passages_fts WHERE passages_fts MATCH ? ORDER BY rowid DESC LIMIT 1 OFFSET ?",
                    (match, n - 1),
                )
                .fetchone()
            )
        except sqlite3.OperationalError:
            return 0
        return int(row[0]) if row else 0

    # -- rows and vectors --------------------------------------------------------------------------

    def passages(self, pks: Sequence[int]) -> dict[int, PassageRow]:
        out: dict[int, PassageRow] = {}
        conn = self.db.conn()
        for i in range(0, len(pks), 500):
            chunk = list(pks[i : i + 500])
            rows = conn.execute(
                f"SELECT {PASSAGE_COLS} FROM passages p LEFT JOIN messages m ON m.seq=p.message_seq"
                f" WHERE p.pk IN ({','.join('?' * len(chunk))})",
                chunk,
            )
            out.update(passage_row(r) for r in rows)
        return out

    def passages_without_vectors(self, embedder: str, limit: int, after_pk: int = 0) -> list[tuple[int, int, str]]:
        return [
            (r[0], r[1], r[2])
            for r in self.db.conn().execute(
                "SELECT p.pk, p.subject_pk, p.content FROM passages p LEFT JOIN passage_vectors v"
                " ON v.passage_pk=p.pk AND v.embedder=? LEFT JOIN messages m ON m.seq=p.message_seq"
                " LEFT JOIN runs r ON r.seq=m.run_seq WHERE p.pk>? AND v.passage_pk IS NULL"
                " AND coalesce(r.status, '') NOT IN ('queued', 'running') ORDER BY p.pk LIMIT ?",
                (embedder, after_pk, limit),
            )
        ]

    def put_vectors(self, rows: Sequence[tuple[int, int, bytes]], embedder: str) -> None:
        with self.db.tx() as conn:
            insert_vectors(conn, list(rows), embedder)

    def drop_vectors(self, *, embedder: str | None = None, keep: str | None = None) -> int:
        """Deleted in short transactions of ``batch`` rows, so the application's writes are not held up."""
        where, arg = ("embedder=?", embedder) if embedder is not None else ("embedder!=?", keep)
        batch, n = 5000, 0
        while True:
            with self.db.tx() as conn:
                done = conn.execute(
                    f"DELETE FROM passage_vectors WHERE seq IN (SELECT seq FROM passage_vectors WHERE {where} LIMIT ?)",
                    (arg, batch),
                ).rowcount
                if not n:
                    conn.execute(
                        "DELETE FROM meta WHERE key LIKE 'embedder_dim:%' AND "
                        + ("key=?" if embedder is not None else "key!=?"),
                        (f"embedder_dim:{arg}",),
                    )
            n += done
            if done < batch:
                return n

    def vector_dim(self, embedder: str) -> int | None:
        row = self.db.conn().execute("SELECT value FROM meta WHERE key=?", (f"embedder_dim:{embedder}",)).fetchone()
        return int(row[0]) if row else None
