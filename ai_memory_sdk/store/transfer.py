"""Copying a whole store from one backend to another (``ai-memory migrate``): SQLite <-> PostgreSQL.

Every row is copied with its ids and keys: subjects, blocks with their
history, messages, passages with their vectors (pgvector or bytea on either
side), runs, traces, sessions, API keys and the recorded embedders, so a
copy answers every call as the original did. The source is read in one
snapshot; the target must be empty (nothing is merged, so nothing can be
duplicated), and is written in one transaction, so an interrupted copy leaves
it empty. A run ``running`` in the source (a worker was using it) is copied
``queued``: the target's workers learn it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, ExitStack
from typing import Any

from .base import Store
from .recipe import token_count

log = logging.getLogger(__name__)

BATCH = 1000

# (table, columns), parents before children. Columns both backends have; the target adds its own.
TABLES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("meta", ("key", "value")),
    ("subjects", ("pk", "tenant", "subject_id", "agent_id", "created_at")),
    (
        "blocks",
        (
            "pk",
            "id",
            "subject_pk",
            "label",
            "description",
            "value",
            "char_limit",
            "version",
            "created_at",
            "updated_at",
        ),
    ),
    ("block_versions", ("block_pk", "version", "value", "run_id", "created_at")),
    (
        "runs",
        (
            "seq",
            "id",
            "subject_pk",
            "kind",
            "status",
            "error",
            "stop_reason",
            "created_at",
            "started_at",
            "finished_at",
            "learner",
            "llm_calls",
            "prompt_tokens",
            "completion_tokens",
            "attempts",
            "claim_id",
            "lease_owner",
            "lease_expires",
        ),
    ),
    ("messages", ("seq", "id", "subject_pk", "run_seq", "role", "content", "name", "metadata", "created_at")),
    ("passages", ("pk", "subject_pk", "message_seq", "content", "context", "role", "tags", "created_at")),
    ("passage_vectors", ("passage_pk", "subject_pk", "embedder", "vector")),
    ("traces", ("claim_id", "subject_pk", "trace", "created_at")),
    ("sessions", ("pk", "tenant", "session_id", "subject_id", "created_at")),
    ("session_items", ("seq", "session_pk", "item", "created_at")),
    ("api_keys", ("pk", "name", "key_hash", "created_at", "revoked_at")),
)
_COPIED_META = ("embedder",)  # and every embedder_dim:<name>; the rest is each backend's own bookkeeping
_RUN_STATUS = TABLES[4][1].index("status")


class NotEmptyError(ValueError):
    """The target store already holds data: a copy would mix two stores."""


def _meta_copied(key: str) -> bool:
    return key in _COPIED_META or key.startswith("embedder_dim:")


def _requeued(row: tuple[Any, ...]) -> tuple[Any, ...]:
    """A run as the target gets it: one that was running is queued again, without its claim and lease."""
    if row[_RUN_STATUS] != "running":
        return row
    out = list(row)
    out[_RUN_STATUS] = "queued"
    out[8] = None  # started_at
    out[-3:] = [None, None, None]  # claim_id, lease_owner, lease_expires
    return tuple(out)


def copy_store(source: Store, target: Store, progress: Callable[[int], object] = lambda n: None) -> dict[str, int]:
    """Copy every row of ``source`` into the empty ``target``; returns rows copied per table.

    ``progress`` is called with the number of rows of each batch written.
    Raises ``NotEmptyError`` (nothing written) when the target holds anything.
    """
    src, dst = _side(source), _side(target)
    with ExitStack() as stack:
        stack.enter_context(src.snapshot())
        held = dst.held()
        if held:
            raise NotEmptyError(
                f"{target.path} is not empty ({held}): migrate copies into an empty store only,"
                " so nothing is merged or copied twice"
            )
        stack.enter_context(dst.transaction())
        copied: dict[str, int] = {}
        for table, cols in TABLES:
            n = 0
            for batch in src.rows(table, cols):
                progress(len(batch))
                if table == "meta":
                    batch = [r for r in batch if _meta_copied(r[0])]
                elif table == "runs":
                    batch = [_requeued(r) for r in batch]
                dst.write(table, cols, batch)
                n += len(batch)
            copied[table] = n
        dst.finish()
    dst.after()
    return copied


def count_rows(source: Store) -> int:
    """Rows ``copy_store`` will read from ``source`` (for a progress bar)."""
    side = _side(source)
    with side.snapshot():
        return sum(side.count(table) for table, _ in TABLES)


# -- the two backends ---------------------------------------------------------------------------------


class _Side:
    """Reading and writing one store's tables (an adapter per backend)."""

    def snapshot(self) -> AbstractContextManager[None]:
        raise NotImplementedError  # pragma: no cover - each backend's own

    def transaction(self) -> AbstractContextManager[None]:
        raise NotImplementedError  # pragma: no cover

    def count(self, table: str) -> int:
        raise NotImplementedError  # pragma: no cover

    def rows(self, table: str, cols: Sequence[str]) -> Iterator[list[tuple[Any, ...]]]:
        raise NotImplementedError  # pragma: no cover

    def held(self) -> str:
        """What the store holds ('' when empty), e.g. '3 subjects, 1 API key'."""
        counts = {t: self.count(t) for t in ("subjects", "sessions", "api_keys")}
        return ", ".join(f"{n} {t}" for t, n in counts.items() if n)

    def write(self, table: str, cols: Sequence[str], rows: list[tuple[Any, ...]]) -> None:
        raise NotImplementedError  # pragma: no cover

    def finish(self) -> None:
        """After the last table, inside the transaction: the backend's derived state."""

    def after(self) -> None:
        """After the copy committed: what takes its own transactions (indexes)."""


def _side(store: Store) -> _Side:
    from .postgres import PostgresStore
    from .sqlite import SQLiteStore

    if isinstance(store, SQLiteStore):
        return _SQLiteSide(store)
    if isinstance(store, PostgresStore):
        return _PostgresSide(store)
    raise TypeError(f"cannot copy a {type(store).__name__}")


class _SQLiteSide(_Side):
    def __init__(self, store: Any) -> None:
        self.db = store.db

    def snapshot(self) -> AbstractContextManager[None]:
        return self._within(self.db.read())

    def transaction(self) -> AbstractContextManager[None]:
        return self._within(self.db.tx())

    @staticmethod
    def _within(tx: AbstractContextManager[Any]) -> AbstractContextManager[None]:
        from contextlib import contextmanager

        @contextmanager
        def run() -> Iterator[None]:
            with tx:
                yield

        return run()

    def count(self, table: str) -> int:
        return int(self.db.conn().execute(f"SELECT count(*) FROM {table}").fetchone()[0])

    def rows(self, table: str, cols: Sequence[str]) -> Iterator[list[tuple[Any, ...]]]:
        cur = self.db.conn().execute(f"SELECT {', '.join(cols)} FROM {table}")
        while batch := cur.fetchmany(BATCH):
            yield [tuple(r) for r in batch]

    def write(self, table: str, cols: Sequence[str], rows: list[tuple[Any, ...]]) -> None:
        self.db.conn().executemany(
            f"INSERT INTO {table}({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})", rows
        )


class _PostgresSide(_Side):
    def __init__(self, store: Any) -> None:
        from .postgres.queue import sync

        self.store = store
        self.db = store.db
        self.conn: Any = None
        self._sync = sync
        self._dims: list[tuple[str, int]] = []

    def _open(self, tx: AbstractContextManager[Any]) -> AbstractContextManager[None]:
        from contextlib import contextmanager

        @contextmanager
        def run() -> Iterator[None]:
            with tx as conn:
                self.conn = conn
                try:
                    yield
                finally:
                    self.conn = None

        return run()

    def snapshot(self) -> AbstractContextManager[None]:
        return self._open(self.db.read())

    def transaction(self) -> AbstractContextManager[None]:
        return self._open(self.db.tx())

    def count(self, table: str) -> int:
        if self.conn is None:
            with self.db.conn() as conn:
                return int(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])
        return int(self.conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])

    def rows(self, table: str, cols: Sequence[str]) -> Iterator[list[tuple[Any, ...]]]:
        from .postgres.index import vector_bytes

        select = list(cols)
        if table == "passage_vectors" and self.db.vectors == "pgvector":
            select[-1] = "embedding::real[]"
        cur = self.conn.cursor(name=f"copy_{table}")  # server-side: a big table is not read into memory at once
        cur.execute(f"SELECT {', '.join(select)} FROM {table}")
        while batch := cur.fetchmany(BATCH):
            if table == "passage_vectors":
                batch = [(*r[:-1], vector_bytes(r[-1])) for r in batch]
            yield [tuple(r) for r in batch]
        cur.close()

    def write(self, table: str, cols: Sequence[str], rows: list[tuple[Any, ...]]) -> None:
        import numpy as np

        if not rows:
            return
        if table == "passage_vectors":
            if self.db.vectors == "pgvector":
                self.conn.cursor().executemany(
                    "INSERT INTO passage_vectors(passage_pk, subject_pk, embedder, embedding)"
                    " VALUES (%s, %s, %s, %s::real[]::vector)",
                    [(*r[:-1], np.frombuffer(r[-1], np.float32).tolist()) for r in rows],
                )
            else:
                self.conn.cursor().executemany(
                    "INSERT INTO passage_vectors(passage_pk, subject_pk, embedder, vector) VALUES (%s, %s, %s, %s)",
                    rows,
                )
            return
        if table == "passages":
            cols = (*cols, "tokens")
            rows = [(*r, token_count(r[3]) + token_count(r[4])) for r in rows]
        with self.conn.cursor().copy(f"COPY {table} ({', '.join(cols)}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)

    def finish(self) -> None:
        """Identity counters past the copied ids, search counters, the subjects' queue state."""
        conn = self.conn
        for table, col in (
            ("subjects", "pk"),
            ("blocks", "pk"),
            ("runs", "seq"),
            ("messages", "seq"),
            ("passages", "pk"),
            ("passage_vectors", "seq"),
            ("sessions", "pk"),
            ("session_items", "seq"),
            ("api_keys", "pk"),
        ):
            conn.execute(
                f"SELECT setval(pg_get_serial_sequence(%s, %s), coalesce((SELECT max({col}) FROM {table}), 0) + 1,"
                " false)",
                (f"ai_memory.{table}", col),
            )
        conn.execute(
            "INSERT INTO search_gen(subject_pk, added, passages, tokens) SELECT s.pk, 1,"
            " (SELECT count(*) FROM passages p WHERE p.subject_pk=s.pk),"
            " (SELECT coalesce(sum(tokens), 0) FROM passages p WHERE p.subject_pk=s.pk) FROM subjects s"
        )
        for (pk,) in conn.execute("SELECT pk FROM subjects").fetchall():
            self._sync(conn, pk)
        dims = conn.execute("SELECT substr(key, 14), value FROM meta WHERE key LIKE 'embedder\\_dim:%%'").fetchall()
        self._dims = [(name, int(dim)) for name, dim in dims]

    def after(self) -> None:
        from .postgres.index import ensure_vector_index

        for name, dim in self._dims:
            ensure_vector_index(self.db, name, dim)
