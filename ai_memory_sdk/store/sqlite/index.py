"""Archival passages in a SQLite file (``store.base.PassageIndex``): FTS5 rows, vectors, re-embedding.

Lexical search is FTS5 with the Porter tokenizer over two columns, the
passage and its ``context`` (its date as words and the subject's previous
passages, ``store.recipe``), scored by ``bm25()`` with the recipe's weights, divided by the sum of the
IDFs (as ``bm25()`` computes them) of the query's terms: 1.0 is a passage
holding each of them once at the average length, whatever the query's length
or the store's size. A query scores every passage it matches at 1-3 µs each;
when the store's matches would exceed ``LEXICAL_BUDGET``, the most frequent
terms are dropped (they carry the least IDF), and a query of only very
frequent words is scored over the newest matches. A subject that holds most
of the store is filtered against its pks in numpy rather than by joining
``passages`` in SQL (half the cost). Term counts and the store's size are
kept per connection until the next commit.
"""

from __future__ import annotations

import json
import logging
import math
import sqlite3
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from .._rows import PASSAGE_COLS, passage_row
from ..base import IndexChanges, IndexCursor, PassageRow
from ..recipe import CONTENT_WEIGHT, CONTEXT_WEIGHT, query_terms, quote
from ._db import Database, guarded
from .queue import insert_vectors

log = logging.getLogger(__name__)

LEXICAL_BUDGET = 2_000  # matching passages (whole store) one lexical query may score
_COUNTS_KEPT = 4_096  # term match counts remembered per connection until the store changes


@dataclass
class _Stats:
    """What ``_match`` learns of the store between two commits: its size and terms' match counts."""

    stamp: tuple[int, int, int]
    span: int | None = None  # max(pk) - min(pk) + 1: an upper bound of the passages, from the index alone
    rows: int | None = None  # passages (FTS5's row count, for IDF)
    counts: dict[tuple[str, int], int] = field(default_factory=dict)  # (phrase, cap) -> matches, up to cap


@dataclass(frozen=True)
class _Match:
    """How a query is run: FTS5 expression, lowest pk scanned, the store's pk span, the sum of the IDFs scored."""

    expr: str
    min_pk: int
    span: int
    idf: float


@guarded
class SQLiteIndex:
    """``PassageIndex`` over one SQLite file."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.budget = LEXICAL_BUDGET
        self._stats = threading.local()  # per connection: store statistics valid while nothing was committed

    def changes(self, subject_pk: int, embedder: str | None, since: IndexCursor) -> IndexChanges:
        if since != IndexCursor() and self._generation(self.db.conn(), subject_pk) == since.generation:
            return IndexChanges(since)  # the common case, one statement: no read transaction needed
        with self.db.read() as conn:
            gen = self._generation(conn, subject_pk)
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

    @staticmethod
    def _generation(conn: sqlite3.Connection, subject_pk: int) -> tuple[int, int]:
        row = conn.execute("SELECT added, removed FROM search_gen WHERE subject_pk=?", (subject_pk,)).fetchone()
        return (row[0], row[1]) if row else (0, 0)

    def lexical(
        self,
        subject_pk: int,
        query: str,
        k: int,
        *,
        allowed: Callable[[np.ndarray], np.ndarray] | None = None,
        subject_size: int | None = None,
        allowed_fraction: float = 1.0,
        also: Sequence[int] = (),
    ) -> list[tuple[int, float]]:
        match = self._match(query)
        if not match.expr or subject_size == 0 or allowed_fraction <= 0.0:
            return []
        size = match.span
        join = allowed is None or subject_size is None or subject_size < 0.5 * size
        if join and (allowed is None or allowed_fraction >= 1.0):  # the join alone is the whole filter
            return _merged(*self._fts(subject_pk, match, k, also), k)
        assert allowed is not None
        share = allowed_fraction * (1.0 if join else (subject_size or 0) / max(size, 1))
        limit: int | None = max(4 * k, int(2 * k / max(share, 1e-9)))
        while True:
            rows, extra = self._fts(subject_pk if join else None, match, limit, also)
            keep = allowed(np.fromiter((r[0] for r in rows), np.int64, len(rows)))
            hits = rows[:k] if keep.all() else [rows[i] for i in np.flatnonzero(keep)[:k].tolist()]
            if len(hits) >= k or limit is None or len(rows) < limit:
                return _merged(hits, extra, k)
            limit = None  # the filter is more selective than its share suggested: rank every match

    # -- lexical helpers ---------------------------------------------------------------------------

    def _match(self, query: str) -> _Match:
        """How to run a query within the budget.

        Small stores get the whole bag of words. Otherwise terms are kept rarest
        first while their matches fit the budget; if even the rarest term matches
        more, it alone is scored over its ``budget`` newest matches. The IDF sum
        counts the terms scored and those no passage holds (none can match them),
        not the frequent terms left out.
        """
        terms = query_terms(query)
        if not terms:
            return _Match("", 0, 0, 0.0)
        stats = self._store_stats()
        conn = self.db.conn()
        if stats.span is None:  # two statements: SQLite answers a lone min() or max() from the index, not both
            lo = conn.execute("SELECT coalesce(min(pk), 0) FROM passages").fetchone()[0]
            hi = conn.execute("SELECT coalesce(max(pk), 0) FROM passages").fetchone()[0]
            stats.span = hi - lo + 1 if hi else 0
        span: int = stats.span
        budget = self.budget
        counts = sorted((self._doc_count(quote(t), budget + 1, stats), i, t) for i, t in enumerate(terms))
        absent = [0] * sum(1 for df, _, _ in counts if not df)
        if span <= budget:
            kept = [(df, t) for df, _, t in sorted(counts, key=lambda c: c[1]) if df]
        else:
            kept, total = [], 0
            for df, _, t in counts:
                if df and total + df <= budget:
                    kept.append((df, t))
                    total += df
            if len(kept) + len(absent) < len(terms):
                log.debug("lexical query %r: kept %s, dropped the more frequent ones", query, [t for _, t in kept])
        if kept:
            idf = self._idf([df for df, _ in kept] + absent, stats)
            return _Match(" OR ".join(quote(t) for _, t in kept), 0, span, idf)
        rarest = next((t for df, _, t in counts if df), None)
        if rarest is None:
            return _Match("", 0, span, 0.0)
        min_pk = self._nth_newest(quote(rarest), budget)
        log.debug("lexical query %r: every term is frequent; %r scored over passages from pk %d", query, rarest, min_pk)
        return _Match(
            quote(rarest), min_pk, span, self._idf([self._doc_count(quote(rarest), -1, stats), *absent], stats)
        )

    def _idf(self, matches: Sequence[int], stats: _Stats) -> float:
        """The sum of the IDFs ``bm25()`` gives terms matching these numbers of passages (FTS5's formula)."""
        if stats.rows is None:
            stats.rows = int(self.db.conn().execute("SELECT count(*) FROM passages").fetchone()[0])
        # Each statement reads its own snapshot: a count taken before a concurrent delete can exceed today's total.
        n = max(stats.rows, *matches, 0)
        return sum(max(math.log((n - hit + 0.5) / (hit + 0.5)), 1e-6) for hit in matches)

    def _store_stats(self) -> _Stats:
        """This connection's cached statistics of the store, emptied when anything was committed since.

        ``PRAGMA data_version`` changes when another connection commits, ``total_changes`` when this one does.
        """
        conn = self.db.conn()
        stamp = (id(conn), conn.execute("PRAGMA data_version").fetchone()[0], conn.total_changes)
        stats: _Stats | None = getattr(self._stats, "current", None)
        if stats is None or stats.stamp != stamp or len(stats.counts) > _COUNTS_KEPT:
            stats = self._stats.current = _Stats(stamp)
        return stats

    def _fts(
        self, subject_pk: int | None, match: _Match, limit: int | None, also: Sequence[int] = ()
    ) -> tuple[list[tuple[int, float]], list[tuple[int, float]]]:
        """(pk, score) of one subject (a join) or of the whole store (the caller filters): the best ``limit``
        of those not in ``also``, best first, and the matches among ``also``."""
        sql = (
            "SELECT f.rowid, -bm25(passages_fts, ?, ?) / ? AS s"
            + (", f.rowid IN (SELECT value FROM json_each(?)) AS x" if also else "")
            + " FROM passages_fts f"
            + (" CROSS JOIN passages p ON p.pk=f.rowid" if subject_pk is not None else "")
            + " WHERE passages_fts MATCH ? AND f.rowid>=?"
            + (" AND p.subject_pk=?" if subject_pk is not None else "")
            + (
                " ORDER BY x DESC, s DESC, f.rowid" if also else " ORDER BY s DESC, f.rowid"
            )  # ``also`` first; ties: older
            + " LIMIT ?"
        )
        args = (
            CONTENT_WEIGHT,
            CONTEXT_WEIGHT,
            match.idf,
            *((json.dumps([int(pk) for pk in also]),) if also else ()),
            match.expr,
            match.min_pk,
            *(() if subject_pk is None else (subject_pk,)),
            -1 if limit is None else limit + len(also),
        )
        try:
            rows = self.db.conn().execute(sql, args).fetchall()
        except sqlite3.OperationalError as exc:
            log.debug("FTS query %r refused: %s", match.expr, exc)
            return [], []
        if not also:
            return rows, []
        n = next((i for i, r in enumerate(rows) if not r[2]), len(rows))
        return [(r[0], r[1]) for r in rows[n:]], [(r[0], r[1]) for r in rows[:n]]

    def _doc_count(self, match: str, cap: int, stats: _Stats) -> int:
        """Passages matching ``match``, counted up to ``cap`` (-1: all), remembered until the next commit."""
        count = stats.counts.get((match, cap))
        if count is None:
            count = stats.counts[(match, cap)] = self._count(match, cap)
        return count

    def _count(self, match: str, cap: int) -> int:
        args: tuple[object, ...] = (match,)
        if cap < 0:  # every match: FTS5 counts a bare MATCH twice as fast as through a subquery
            sql = "SELECT count(*) FROM passages_fts WHERE passages_fts MATCH ?"
        else:
            sql, args = (
                "SELECT count(*) FROM (SELECT 1 FROM passages_fts WHERE passages_fts MATCH ? LIMIT ?)",
                (match, cap),
            )
        try:
            row = self.db.conn().execute(sql, args).fetchone()
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


def _merged(ranked: list[tuple[int, float]], extra: list[tuple[int, float]], k: int) -> list[tuple[int, float]]:
    """The best ``k`` of both lists, best first, then the rest of ``extra`` (``ranked`` is best first)."""
    if not extra:
        return ranked[:k]
    best = sorted([*ranked[:k], *extra], key=lambda r: -r[1])[:k]
    chosen = {pk for pk, _ in best}
    return best + [r for r in extra if r[0] not in chosen]
