"""Archival passages in PostgreSQL (``store.base.PassageIndex``): BM25 over a GIN-indexed tsvector, vectors.

Lexical search: the GIN index on ``passages.tsv`` finds the subject's
passages that contain a query term; they are scored here with the BM25 of
SQLite's FTS5 (k1 1.2, b 0.75, the recipe's column weights, IDF from the
subject's passages), from each candidate's term counts per weight and its
token count, divided by the sum of the IDFs of the query's terms (as
``PassageIndex.lexical`` defines the score). PostgreSQL's own ``ts_rank``/``ts_rank_cd`` have no IDF: a
frequent word counts as much as a rare one (see docs/postgres.md for the
recall measured both ways). Queries never reach PostgreSQL's query syntax:
their words (``store.recipe.query_terms``) are stemmed by the server
(``to_tsvector``) and the lexemes quoted into a tsquery. As with FTS5, a
subject larger than the budget keeps its rarest terms within
``LEXICAL_BUDGET`` matches.

Vectors: float32 ``bytea`` read by the in-process cache (``changes``) as in
SQLite; or, in a database with pgvector, an ``embedding vector`` column that
``PgvectorIndex.nearest`` searches in the database (exact for a subject of up
to ``EXACT_MAX`` vectors, through a per-embedder HNSW index above), so no
process has to hold the vectors in memory.

Passage pks and vector seqs of one subject grow in commit order, as the
``changes`` cursor needs: every transaction that adds a subject's passages or
vectors first locks its ``search_gen`` row.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import psycopg
from psycopg import sql

from .._guard import guarded
from .._rows import PASSAGE_COLS, passage_row
from ..base import IndexChanges, IndexCursor, PassageRow
from ..recipe import CONTENT_WEIGHT, CONTEXT_WEIGHT, query_terms
from ._db import Database
from ._schema import TS_CONFIG

log = logging.getLogger(__name__)

LEXICAL_BUDGET = 2_000  # matching passages of the subject one lexical query may score
EXACT_MAX = 8_192  # vectors of a subject searched exactly by pgvector; above: the HNSW index
K1, B = 1.2, 0.75  # FTS5's bm25() constants
_MAX_TERMS = 64  # words of a query that are searched (a pasted document is not a query)


@guarded
class PostgresIndex:
    """``PassageIndex`` over one PostgreSQL database; vectors as float32 bytea, searched in process."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.budget = LEXICAL_BUDGET

    def changes(self, subject_pk: int, embedder: str | None, since: IndexCursor) -> IndexChanges:
        with self.db.read() as conn:
            row = conn.execute("SELECT added, removed FROM search_gen WHERE subject_pk=%s", (subject_pk,)).fetchone()
            gen = (int(row[0]), int(row[1])) if row else (0, 0)
            if gen == since.generation and since != IndexCursor():
                return IndexChanges(since)
            reset = since == IndexCursor() or gen[1] != since.generation[1] or gen[0] < since.generation[0]
            after_pk, after_seq = (0, 0) if reset else (since.max_pk, since.max_seq)
            passages = [
                (r[0], r[1], json.loads(r[2]))
                for r in conn.execute(
                    "SELECT pk, created_at, tags FROM passages WHERE subject_pk=%s AND pk>%s ORDER BY pk",
                    (subject_pk, after_pk),
                )
            ]
            vectors = (
                [
                    (r[0], r[1], vector_bytes(r[2]))
                    for r in conn.execute(
                        f"SELECT seq, passage_pk, {self._vector_col} FROM passage_vectors WHERE subject_pk=%s"
                        " AND embedder=%s AND seq>%s ORDER BY seq",
                        (subject_pk, embedder, after_seq),
                    )
                ]
                if embedder
                else []
            )
        cursor = IndexCursor(gen, passages[-1][0] if passages else after_pk, vectors[-1][0] if vectors else after_seq)
        return IndexChanges(cursor, reset, passages, vectors)

    @property
    def _vector_col(self) -> str:
        return "embedding::real[]" if self.db.vectors == "pgvector" else "vector"

    # -- lexical -----------------------------------------------------------------------------------

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
        terms = query_terms(query)[:_MAX_TERMS]
        if not terms or subject_size == 0 or allowed_fraction <= 0.0:
            return []
        try:
            with self.db.conn() as conn:
                return self._bm25(conn, subject_pk, terms, k, allowed, subject_size, also)
        except psycopg.DataError as exc:  # never for our quoting; but a query must never fail a search
            log.debug("lexical query %r refused: %s", query, exc)
            return []

    def _bm25(
        self,
        conn: psycopg.Connection[Any],
        subject_pk: int,
        terms: list[str],
        k: int,
        allowed: Callable[[np.ndarray], np.ndarray] | None,
        subject_size: int | None,
        also: Sequence[int] = (),
    ) -> list[tuple[int, float]]:
        lexemes = [
            lex
            for (lex,) in conn.execute(
                f"SELECT DISTINCT l FROM unnest(%s::text[]) t, unnest(tsvector_to_array(to_tsvector('{TS_CONFIG}', t))) l",
                (terms,),
            )
        ]
        stats = conn.execute("SELECT passages, tokens FROM search_gen WHERE subject_pk=%s", (subject_pk,)).fetchone()
        if not lexemes or not stats or not stats[0]:
            return []
        n_docs, avgdl = int(stats[0]), max(float(stats[1]) / max(int(stats[0]), 1), 1e-9)
        min_pk, absent = 0, 0
        if (subject_size if subject_size is not None else n_docs) > self.budget:
            lexemes, min_pk, absent = self._within_budget(conn, subject_pk, lexemes)
            if not lexemes:
                return []
        # Per candidate: its token count and, per query lexeme, whether the passage's own text (weight A) and its
        # context (weight B) hold it. PostgreSQL evaluates these on the stored tsvector, ~1 us each; reading the
        # counts instead (unnest) costs ~70 us per passage. A term's count in one short passage is almost always 1.
        checks = sql.SQL(", ").join(sql.SQL("p.tsv @@ %s::tsquery") for _ in range(2 * len(lexemes)))
        rows = conn.execute(
            sql.SQL(
                "SELECT p.pk, p.tokens, {} FROM passages p WHERE p.subject_pk=%s AND p.tsv @@ %s::tsquery AND p.pk>=%s"
            ).format(checks),
            (*[q for lex in lexemes for q in _weighted(lex)], subject_pk, _tsquery(lexemes), min_pk),
        ).fetchall()
        return _rank(rows, len(lexemes), n_docs, avgdl, k, allowed, also, absent)

    def _within_budget(
        self, conn: psycopg.Connection[Any], subject_pk: int, lexemes: list[str]
    ) -> tuple[list[str], int, int]:
        """Lexemes kept rarest first while their matches fit the budget; if even the rarest matches more,
        it alone, scored over its ``budget`` newest matches (the lowest pk to score); and how many lexemes
        no passage holds."""
        budget = self.budget
        counts = []
        for i, lex in enumerate(lexemes):
            row = conn.execute(
                "SELECT count(*) FROM (SELECT 1 FROM passages WHERE subject_pk=%s AND tsv @@ %s::tsquery LIMIT %s) x",
                (subject_pk, _tsquery([lex]), budget + 1),
            ).fetchone()
            counts.append((int(row[0]) if row else 0, i, lex))
        counts.sort()
        absent = sum(1 for df, _, _ in counts if not df)
        kept, total = [], 0
        for df, _, lex in counts:
            if df and total + df <= budget:
                kept.append(lex)
                total += df
        if kept:
            return kept, 0, absent
        rarest = next((lex for df, _, lex in counts if df), None)
        if rarest is None:
            return [], 0, absent
        row = conn.execute(
            "SELECT pk FROM passages WHERE subject_pk=%s AND tsv @@ %s::tsquery ORDER BY pk DESC LIMIT 1 OFFSET %s",
            (subject_pk, _tsquery([rarest]), budget - 1),
        ).fetchone()
        return [rarest], int(row[0]) if row else 0, absent

    # -- rows and vectors --------------------------------------------------------------------------

    def passages(self, pks: Sequence[int]) -> dict[int, PassageRow]:
        if not pks:
            return {}
        with self.db.conn() as conn:
            rows = conn.execute(
                f"SELECT {PASSAGE_COLS} FROM passages p LEFT JOIN messages m ON m.seq=p.message_seq"
                " WHERE p.pk = ANY(%s)",
                (list(pks),),
            ).fetchall()
        return dict(passage_row(r) for r in rows)

    def passages_without_vectors(self, embedder: str, limit: int, after_pk: int = 0) -> list[tuple[int, int, str]]:
        with self.db.conn() as conn:
            rows = conn.execute(
                "SELECT p.pk, p.subject_pk, p.content FROM passages p LEFT JOIN passage_vectors v"
                " ON v.passage_pk=p.pk AND v.embedder=%s LEFT JOIN messages m ON m.seq=p.message_seq"
                " LEFT JOIN runs r ON r.seq=m.run_seq WHERE p.pk>%s AND v.passage_pk IS NULL"
                " AND coalesce(r.status, '') NOT IN ('queued', 'running') ORDER BY p.pk LIMIT %s",
                (embedder, after_pk, limit),
            ).fetchall()
        return [(r[0], r[1], r[2]) for r in rows]

    def put_vectors(self, rows: Sequence[tuple[int, int, bytes]], embedder: str) -> None:
        if not rows:
            return
        ensure_vector_index(self.db, embedder, len(rows[0][2]) // 4)
        with self.db.tx() as conn:
            insert_vectors(self.db, conn, list(rows), embedder)

    def drop_vectors(self, *, embedder: str | None = None, keep: str | None = None) -> int:
        """Deleted in short transactions of ``batch`` rows, so the application's writes are not held up."""
        where, arg = ("embedder=%s", embedder) if embedder is not None else ("embedder<>%s", keep)
        batch, n = 5000, 0
        with self.db.conn() as conn:
            dropped = [
                r[0]
                for r in conn.execute(
                    "SELECT substr(key, 6) FROM meta WHERE key LIKE 'hnsw:%%' AND "
                    + ("substr(key, 6)=%s" if embedder is not None else "substr(key, 6)<>%s"),
                    (arg,),
                )
            ]
            while True:
                with conn.transaction():
                    done = conn.execute(
                        "DELETE FROM passage_vectors WHERE seq IN"
                        f" (SELECT seq FROM passage_vectors WHERE {where} LIMIT %s)",
                        (arg, batch),
                    ).rowcount
                    if done:
                        conn.execute(
                            "UPDATE search_gen SET removed=removed+1 WHERE subject_pk IN"
                            f" (SELECT DISTINCT subject_pk FROM passage_vectors WHERE {where})",
                            (arg,),
                        )
                    if not n:
                        conn.execute(
                            "DELETE FROM meta WHERE key LIKE 'embedder\\_dim:%%' AND "
                            + ("key=%s" if embedder is not None else "key<>%s"),
                            (f"embedder_dim:{arg}",),
                        )
                n += done
                if done < batch:
                    break
            for name in dropped:
                _drop_vector_index(conn, name)
        return n

    def vector_dim(self, embedder: str) -> int | None:
        with self.db.conn() as conn:
            row = conn.execute("SELECT value FROM meta WHERE key=%s", (f"embedder_dim:{embedder}",)).fetchone()
        return int(row[0]) if row else None


@guarded
class PgvectorIndex(PostgresIndex):
    """``PassageIndex`` of a database with pgvector: the vector channel runs in the database (``nearest``)."""

    def nearest(
        self,
        subject_pk: int,
        embedder: str,
        vector: np.ndarray,
        k: int,
        *,
        allowed: Callable[[np.ndarray], np.ndarray] | None = None,
        subject_size: int | None = None,
        allowed_fraction: float = 1.0,
    ) -> list[tuple[int, float]]:
        if allowed_fraction <= 0.0 or subject_size == 0:
            return []
        dim = len(vector)
        if self.vector_dim(embedder) != dim:
            return []  # no vectors of this embedder, or of another dimension: the caller warns
        exact = subject_size is None or subject_size <= EXACT_MAX
        q = [float(x) for x in np.asarray(vector, np.float32)]
        limit: int | None = k if allowed is None else max(4 * k, int(2 * k / max(allowed_fraction, 1e-9)))
        while True:
            with self.db.tx() as conn:
                rows = self._search(conn, subject_pk, embedder, q, dim, limit, exact)
            if allowed is None:
                return rows
            pks = np.fromiter((r[0] for r in rows), np.int64, len(rows))
            hits = [rows[i] for i in np.flatnonzero(allowed(pks))[:k]]
            if len(hits) >= k or limit is None or len(rows) < limit:
                return hits
            limit = None  # the filter is more selective than its share suggested: every vector of the subject

    def similarity(self, embedder: str, vector: np.ndarray, pks: Sequence[int]) -> list[tuple[int, float]]:
        if not len(pks) or self.vector_dim(embedder) != len(vector):
            return []
        q = [float(x) for x in np.asarray(vector, np.float32)]
        with self.db.conn() as conn:
            rows = conn.execute(
                "SELECT passage_pk, 1 - (embedding <=> %s::real[]::vector) FROM passage_vectors"
                " WHERE embedder=%s AND passage_pk = ANY(%s)",
                (q, embedder, [int(pk) for pk in pks]),
            ).fetchall()
        return [(int(r[0]), float(r[1])) for r in rows if r[1] is not None and not math.isnan(r[1])]

    def _search(
        self,
        conn: psycopg.Connection[Any],
        subject_pk: int,
        embedder: str,
        q: list[float],
        dim: int,
        limit: int | None,
        exact: bool,
    ) -> list[tuple[int, float]]:
        """(passage pk, cosine) best first: exact (a distance the HNSW index cannot serve), or through it."""
        query: sql.Composable
        if exact:
            query = sql.SQL(
                "SELECT passage_pk, 1 - (embedding <=> %(q)s::real[]::vector) AS d FROM passage_vectors"
                " WHERE subject_pk=%(s)s AND embedder=%(e)s ORDER BY embedding <=> %(q)s::real[]::vector"
                " LIMIT %(n)s"
            )
        else:
            ef = 1000 if limit is None else max(100, min(1000, 2 * limit))
            conn.execute(sql.SQL("SET LOCAL hnsw.ef_search = {}").format(sql.Literal(ef)))
            try:
                with conn.transaction():
                    conn.execute("SET LOCAL hnsw.iterative_scan = relaxed_order")  # pgvector 0.8: filtered scans
            except psycopg.Error:
                pass
            typed = sql.SQL("vector({})").format(sql.Literal(dim))
            query = sql.SQL(
                "SELECT passage_pk, 1 - (embedding::{t} <=> %(q)s::real[]::{t}) AS d FROM passage_vectors"
                " WHERE embedder={e} AND subject_pk=%(s)s ORDER BY embedding::{t} <=> %(q)s::real[]::{t}"
                " LIMIT %(n)s"
            ).format(t=typed, e=sql.Literal(embedder))
        rows = conn.execute(query, {"q": q, "s": subject_pk, "e": embedder, "n": limit}).fetchall()
        out = [(int(r[0]), float(r[1])) for r in rows if r[1] is not None and not math.isnan(r[1])]
        out.sort(key=lambda x: -x[1])  # an iterative scan returns them in nearly, not exactly, that order
        return out


# -- shared with the queue --------------------------------------------------------------------------


def insert_vectors(
    db: Database, conn: psycopg.Connection[Any], rows: list[tuple[int, int, bytes]], embedder: str
) -> None:
    """Store (passage pk, subject pk, float32 bytes) rows, skipping passages deleted meanwhile; record the dimension.

    Locks the subjects' ``search_gen`` rows first (in pk order), so vector seqs
    of a subject grow in commit order. Lock order everywhere: a subject's row,
    then its ``search_gen`` row, then passages and vectors. With pgvector, the
    caller makes the embedder's HNSW index first (``ensure_vector_index``),
    outside its transaction.
    """
    if not rows:
        return
    subjects = sorted({spk for _, spk, _ in rows})
    conn.execute("SELECT 1 FROM search_gen WHERE subject_pk = ANY(%s) ORDER BY subject_pk FOR UPDATE", (subjects,))
    if db.vectors == "pgvector":
        conn.cursor().executemany(
            "INSERT INTO passage_vectors(passage_pk, subject_pk, embedder, embedding)"
            " SELECT %s, %s, %s, %s::real[]::vector WHERE EXISTS (SELECT 1 FROM passages WHERE pk=%s)"
            " ON CONFLICT (passage_pk, embedder) DO NOTHING",
            [(pk, spk, embedder, np.frombuffer(blob, np.float32).tolist(), pk) for pk, spk, blob in rows],
        )
    else:
        conn.cursor().executemany(
            "INSERT INTO passage_vectors(passage_pk, subject_pk, embedder, vector)"
            " SELECT %s, %s, %s, %s WHERE EXISTS (SELECT 1 FROM passages WHERE pk=%s)"
            " ON CONFLICT (passage_pk, embedder) DO NOTHING",
            [(pk, spk, embedder, blob, pk) for pk, spk, blob in rows],
        )
    conn.execute("UPDATE search_gen SET added=added+1 WHERE subject_pk = ANY(%s)", (subjects,))
    conn.execute(
        "INSERT INTO meta(key, value) VALUES (%s, %s) ON CONFLICT (key) DO UPDATE SET value=excluded.value",
        (f"embedder_dim:{embedder}", str(len(rows[0][2]) // 4)),
    )


def ensure_vector_index(db: Database, embedder: str, dim: int) -> None:
    """With pgvector: the HNSW index of this embedder's vectors (made once, in its own transaction)."""
    if db.vectors != "pgvector" or (embedder, dim) in db.vector_indexes:
        return
    name = "passage_vectors_hnsw_" + hashlib.sha1(f"{embedder}:{dim}".encode()).hexdigest()[:16]
    with db.conn() as conn:
        if conn.execute("SELECT to_regclass(%s)", (name,)).fetchone() == (None,):
            log.info("creating the HNSW index of %s vectors (%d dimensions) in %s", embedder, dim, db.path)
            conn.execute(
                sql.SQL(
                    "CREATE INDEX IF NOT EXISTS {n} ON passage_vectors USING hnsw ((embedding::vector({d}))"
                    " vector_cosine_ops) WHERE embedder = {e}"
                ).format(n=sql.Identifier(name), d=sql.Literal(dim), e=sql.Literal(embedder))
            )
            conn.execute(
                "INSERT INTO meta(key, value) VALUES (%s, %s) ON CONFLICT (key) DO UPDATE SET value=excluded.value",
                (f"hnsw:{embedder}", name),
            )
    db.vector_indexes.add((embedder, dim))


def _drop_vector_index(conn: psycopg.Connection[Any], embedder: str) -> None:
    row = conn.execute("SELECT value FROM meta WHERE key=%s", (f"hnsw:{embedder}",)).fetchone()
    if row:
        conn.execute(sql.SQL("DROP INDEX IF EXISTS {}").format(sql.Identifier(row[0])))
        conn.execute("DELETE FROM meta WHERE key=%s", (f"hnsw:{embedder}",))


def vector_bytes(value: Any) -> bytes:
    """A stored vector as float32 bytes: ``bytea`` as it is, a pgvector (read as ``real[]``) converted."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    return np.asarray(value, dtype=np.float32).tobytes()


def _tsquery(lexemes: Sequence[str]) -> str:
    """An OR of quoted lexemes in tsquery syntax (quoted: no word of a query is an operator)."""
    return " | ".join("'" + lex.replace("\\", "\\\\").replace("'", "''") + "'" for lex in lexemes)


def _weighted(lexeme: str) -> tuple[str, str]:
    """Tsqueries matching ``lexeme`` in a passage's own text (weight A), and in its context (weight B)."""
    quoted = _tsquery([lexeme])
    return f"{quoted}:A", f"{quoted}:B"


def _rank(
    rows: Sequence[tuple[Any, ...]],
    n_terms: int,
    n_docs: int,
    avgdl: float,
    k: int,
    allowed: Callable[[np.ndarray], np.ndarray] | None,
    also: Sequence[int] = (),
    absent: int = 0,
) -> list[tuple[int, float]]:
    """FTS5's bm25() over the candidates, divided by the query's IDF sum: (pk, score) of the best ``k``
    allowed, best first (ties: older first), then those of ``also`` that are not among them.

    ``rows``: (pk, tokens, in text, in context, ... per term). IDF counts the
    subject's passages holding a term in either column; ``absent`` more terms
    (left out of ``rows``) no passage holds.
    """
    if not rows:
        return []
    pks = np.fromiter((r[0] for r in rows), np.int64, len(rows))
    tokens = np.fromiter((r[1] for r in rows), np.float64, len(rows))
    hits = np.array([r[2:] for r in rows], dtype=bool).reshape(len(rows), n_terms, 2)
    tf = CONTENT_WEIGHT * hits[:, :, 0] + CONTEXT_WEIGHT * hits[:, :, 1]  # (docs, terms)
    df = (tf > 0).sum(axis=0)
    n_docs = max(n_docs, int(df.max()))  # the count is read by an earlier statement: rows added since can outnumber it
    idf = np.maximum(np.log((n_docs - df + 0.5) / (df + 0.5)), 1e-6)
    norm = K1 * (1 - B + B * tokens / avgdl)
    ideal = float(idf.sum()) + absent * max(math.log((n_docs + 0.5) / 0.5), 1e-6)
    scores = (idf * tf * (K1 + 1) / (tf + norm[:, None])).sum(axis=1) / ideal
    if allowed is not None:
        keep = allowed(pks)
        pks, scores = pks[keep], scores[keep]
    order = np.lexsort((pks, -scores))
    best = [(int(pks[i]), float(scores[i])) for i in order[:k]]
    if also:
        chosen, wanted = {pk for pk, _ in best}, set(also)
        best += [(int(pk), float(sc)) for pk, sc in zip(pks, scores) if pk in wanted and pk not in chosen]
    return best
