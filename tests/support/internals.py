"""The one place tests and benchmarks reach past the public API into the local engine and its SQLite store.

Some checks need what ``Memory`` does not expose: drain the queue in the
caller's thread (what ``ai-memory worker --once`` does), open the database file,
rank with one search channel, time a store's purge steps. They go through these
functions, so when the engine's internals move, this module is the only test
code to adapt. Every function names the internal it touches.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from contextlib import AbstractContextManager
from typing import Any

from ai_memory_sdk import Memory
from ai_memory_sdk.search import hybrid

_DEFAULT: Any = object()


def _engine(m: Memory) -> Any:
    """``Memory._engine``: the engine object behind the public API."""
    return m._engine


def drain(m: Memory) -> int:
    """Process every queued run in this thread, as ``ai-memory worker --once`` does (``LocalEngine.work``)."""
    return int(_engine(m).work(once=True))


def run_pass(m: Memory) -> bool:
    """Claim and learn one pass in this thread, as a worker thread does (``LocalEngine.pool.run_once``)."""
    return bool(_engine(m).pool.run_once())


def db_path(m: Memory) -> str:
    """The SQLite file of a local-engine ``Memory`` (``LocalEngine.path``)."""
    return str(_engine(m).path)


def connect(m: Memory) -> sqlite3.Connection:
    """A new connection to the local engine's database file; the caller closes it."""
    return sqlite3.connect(db_path(m), timeout=30)


def store(m: Memory) -> Any:
    """The engine's store (``LocalEngine.store``, a ``SQLiteStore``)."""
    return _engine(m).store


def vector_cache(m: Memory) -> Any:
    """The engine's in-memory vector cache (``LocalEngine.vectors``, a ``hybrid.VectorCache``)."""
    return _engine(m).vectors


def embedder(m: Memory) -> Any:
    """The engine's embedder (``LocalEngine.indexer.embedder``; None when searching is lexical only)."""
    return _engine(m).indexer.embedder


def set_embedder(m: Memory, value: Any) -> None:
    """Replace the engine's embedder (``LocalEngine.indexer.embedder``): a benchmark shares one loaded model."""
    _engine(m).indexer.embedder = value


def set_lexical_budget(m: Memory, budget: int) -> None:
    """How many matching passages one lexical query may score (``SQLiteIndex.budget``)."""
    store(m).index.budget = budget


def lexical_idf(m: Memory, matches: Sequence[int], rows: int) -> float:
    """``SQLiteIndex._idf`` for terms matching these counts when the store's size was read as ``rows``."""
    from ai_memory_sdk.store.sqlite.index import _Stats

    return float(store(m).index._idf(matches, _Stats((0, 0, 0), rows=rows)))


def ranked(
    m: Memory,
    subject_id: str,
    query: str,
    *,
    channels: str = "hybrid",
    tags: Sequence[str] = (),
    tag_match_mode: str = "any",
    with_embedder: Any = _DEFAULT,
    overlap: bool | None = None,
) -> list[tuple[int, float]]:
    """``hybrid.ranked`` over the engine's store, cache and embedder: (passage pk, score), best first.

    ``channels`` is ``hybrid``, ``lexical`` or ``vector``; ``with_embedder`` replaces the engine's
    embedder for this call (a stand-in with precomputed query vectors); ``overlap`` forces the channels onto a
    helper thread or not (None: ``hybrid`` decides). Empty when the subject is unknown.
    """
    s = store(m)
    pk = s.subject_pk(subject_id)
    if pk is None:
        return []
    result: list[tuple[int, float]] = hybrid.ranked(
        s.index,
        vector_cache(m),
        embedder(m) if with_embedder is _DEFAULT else with_embedder,
        pk,
        query,
        tags=list(tags),
        tag_match_mode=tag_match_mode,
        start=None,
        end=None,
        channels=channels,
        overlap=overlap,
    )
    return result


def passage_texts(m: Memory, pks: Sequence[int]) -> list[str]:
    """The contents of these passages, in the order given (``PassageIndex.passages``)."""
    rows = store(m).index.passages(list(pks))
    return [rows[pk].content for pk in pks]


def passage_metadata(m: Memory, pks: Sequence[int]) -> dict[int, Any]:
    """Each passage's metadata (``PassageIndex.passages``)."""
    return {pk: row.metadata for pk, row in store(m).index.passages(list(pks)).items()}


# ------------------------------------------------------------------------------- the SQLite store itself


def open_sqlite_store(path: str, *, secure_delete: bool) -> Any:
    """A bare ``SQLiteStore`` on ``path`` (no engine, no workers); the caller closes it."""
    from ai_memory_sdk.store.sqlite import SQLiteStore

    return SQLiteStore(path, secure_delete=secure_delete)


def store_connection(s: Any) -> sqlite3.Connection:
    """The store's own connection of this thread (``Database.conn``)."""
    conn: sqlite3.Connection = s.db.conn()
    return conn


def store_transaction(s: Any) -> AbstractContextManager[sqlite3.Connection]:
    """One write transaction of the store (``Database.tx``)."""
    tx: AbstractContextManager[sqlite3.Connection] = s.db.tx()
    return tx


def delete_subject_rows(s: Any, conn: sqlite3.Connection, subject_id: str) -> None:
    """Delete a subject's rows inside an open transaction, without the purge (``SQLiteStore._delete``)."""
    s._delete(conn, subject_id)


def passage_pks(m: Memory, subject_id: str) -> list[int]:
    """Every passage pk of a subject, oldest first (``PassageIndex.changes`` from the start)."""
    from ai_memory_sdk.store.base import IndexCursor

    s = store(m)
    pk = s.subject_pk(subject_id)
    return [int(row[0]) for row in s.index.changes(pk, None, IndexCursor()).passages]


def stop_checkpointer(s: Any) -> None:
    """Stop the store's background checkpointer thread for good (``Database._conns``' ``_wal.Checkpointer``):
    from then on only the committing threads checkpoint, as when that thread cannot keep up."""
    from ai_memory_sdk.store.sqlite import _wal

    state = s.db._conns.get()
    if state.checkpointer is None:
        state.checkpointer = _wal.Checkpointer(lambda: None, "ai-memory-checkpoint-stopped")
    state.checkpointer.stop()
