"""The SQLite connection layer: one connection per thread, transactions, migrations, errors.

WAL mode with ``synchronous=NORMAL``: a committed transaction survives a crash
of the process (a power loss may lose the last ones). Every write is ``BEGIN
IMMEDIATE`` with a busy timeout, so concurrent writers queue instead of
failing; the threads of one process queue on a lock first, so a writer waits
exactly as long as the one before it writes, not SQLite's busy-handler sleeps
(1, 2, 5, 10 ms ...). Checkpoints run off the callers' commits (``_wal``).
A forked child opens its own connections (``_fork.PerProcess``) and never
touches its parent's. Every public method of the store's classes runs under
the fork gate and turns SQLite's errors into ``StoreError`` naming the file
(``guarded``, shared with the other SQL backends in ``store/_guard.py``).
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ..._fork import PerProcess, gate
from ...errors import StoreError
from .._guard import guarded, waits
from . import _wal
from ._schema import MIGRATIONS, SCHEMA_VERSION

log = logging.getLogger(__name__)

_OUR_TABLES = frozenset({"meta", "subjects", "blocks", "block_versions", "runs", "messages", "search_gen", "passages"})


class _Connections:
    """This process's connections to one file (one per thread), its writers' lock and its WAL helpers."""

    def __init__(self, path: str) -> None:
        self.local = threading.local()
        self.all: list[sqlite3.Connection] = []
        self.lock = threading.Lock()
        # This process's writers queue here, not in SQLite's busy handler, whose sleeps (up to 100 ms)
        # outlast the millisecond a write holds the lock: many threads writing at once stay fast.
        # Re-entrant: a nested transaction fails in SQLite ("within a transaction"), not by waiting here.
        self.writer = threading.RLock()
        self.checkpointer: _wal.Checkpointer | None = None
        self.inline_at = 0  # -wal size at the last checkpoint a committing thread ran itself


class Database:
    """One SQLite file: per-thread connections, ``tx()``/``read()`` transactions and schema migration."""

    def __init__(self, path: str, *, busy_timeout: float = 60.0, secure_delete: bool = True) -> None:
        self.path = path
        self.busy_timeout = busy_timeout
        self.secure_delete = secure_delete
        self.closed = False
        self.checkpoint_bytes = _wal.CHECKPOINT_BYTES
        self.max_wal_bytes = _wal.MAX_BYTES
        self._conns = PerProcess(lambda: _Connections(path))  # a child's parent connections are kept, never touched
        self._open()

    # -- connections -------------------------------------------------------------------------------

    def _open(self) -> None:
        """Create the file if needed, refuse what is not ours, migrate; errors name the path and cause."""
        target = Path(self.path)
        if target.is_dir():
            raise StoreError(self.path, "is a directory; give the path of a SQLite file (it is created if missing)")
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(self.path, f"cannot create its directory ({exc.strerror or exc})") from None
        with translated(self.path):
            self._migrate()

    def conn(self) -> sqlite3.Connection:
        """This thread's connection (opened on first use)."""
        if self.closed:
            raise StoreError(self.path, "the store is closed")
        state = self._conns.get()
        conn: sqlite3.Connection | None = getattr(state.local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=self.busy_timeout, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA foreign_keys=ON")
            conn.execute(f"PRAGMA secure_delete={'ON' if self.secure_delete else 'OFF'}")
            conn.execute("PRAGMA wal_autocheckpoint=0")  # checkpoints run off the callers' commits (_wal)
            conn.execute(f"PRAGMA journal_size_limit={self.checkpoint_bytes}")
            state.local.conn = conn
            with state.lock:
                state.all.append(conn)
        return conn

    errors: tuple[type[Exception], ...] = (sqlite3.Error,)
    """The driver's exceptions ``store_error`` turns into ``StoreError`` (``store._guard.guarded``)."""

    def store_error(self, exc: Exception) -> StoreError:
        """SQLite's error as a ``StoreError`` naming this file."""
        return StoreError(self.path, _cause(exc) if isinstance(exc, sqlite3.Error) else str(exc))

    def close(self) -> None:
        self.closed = True
        state = self._conns.get()
        if state.checkpointer is not None:
            state.checkpointer.stop()
        with state.lock:
            conns, state.all = state.all, []
        for conn in conns:
            try:
                conn.close()
            except sqlite3.Error:  # pragma: no cover - closing is best effort
                pass
        state.local = threading.local()

    @contextmanager
    def tx(self) -> Iterator[sqlite3.Connection]:
        """A write transaction that takes the write lock up front (no deadlock on a read-to-write upgrade)."""
        with gate:
            conn = self.conn()
            writer = self._conns.get().writer
            if not writer.acquire(timeout=self.busy_timeout):
                raise sqlite3.OperationalError(f"database is locked: no write turn within {self.busy_timeout:g}s")
            try:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    yield conn
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise
                conn.execute("COMMIT")
                self._committed(conn)
            finally:
                writer.release()

    def _committed(self, conn: sqlite3.Connection) -> None:
        """After a commit, still this process's only writer: keep the write-ahead log bounded (see ``_wal``)."""
        size = _wal.wal_size(self.path)
        if size <= self.checkpoint_bytes:
            return
        state = self._conns.get()
        if state.checkpointer is None:
            with state.lock:
                if state.checkpointer is None and not self.closed:
                    state.checkpointer = _wal.Checkpointer(self._background_checkpoint, "ai-memory-checkpoint")
        if state.checkpointer is not None:
            state.checkpointer.wake()
        if size > max(self.max_wal_bytes, state.inline_at + self.checkpoint_bytes):
            # Nobody kept up: checkpoint here, holding the writers' lock, so the next write starts the log over.
            state.inline_at = size
            try:
                busy, frames, copied = _wal.checkpoint(conn)
            except sqlite3.Error as exc:  # the commit is done; the next commit past the mark tries again
                log.warning("checkpoint of %s (-wal at %d bytes) failed: %s", self.path, size, exc)
                return
            log.info(
                "%s: -wal at %d bytes, past %d: checkpointed %d of %d frame(s) in the committing thread%s",
                self.path,
                size,
                self.max_wal_bytes,
                copied,
                frames,
                " (a reader holds an older snapshot)" if busy or copied < frames else "",
            )
        elif size < state.inline_at:
            state.inline_at = 0  # the log started over

    def _background_checkpoint(self) -> None:
        if not self.closed:
            _wal.checkpoint(self.conn())

    def change_stamp(self) -> tuple[int, int, int] | None:
        """A value that changes with every commit to the file by any connection of any process, as this thread's
        connection sees it; None inside a transaction (its snapshot may be older).

        ``PRAGMA data_version`` changes when another connection commits, ``total_changes`` when this one does.
        A cache keyed on it is current: read it before reading what is cached.
        """
        conn = self.conn()
        if conn.in_transaction:
            return None
        with gate:
            version = conn.execute("PRAGMA data_version").fetchone()[0]
        return (id(conn), version, conn.total_changes)

    @contextmanager
    def read(self) -> Iterator[sqlite3.Connection]:
        """A read transaction: everything read inside sees one state of the store."""
        with gate:
            conn = self.conn()
            conn.execute("BEGIN")
            try:
                yield conn
            finally:
                conn.execute("COMMIT")

    # -- schema ------------------------------------------------------------------------------------

    def _migrate(self) -> None:
        conn = self.conn()
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise StoreError(
                self.path,
                f"has schema version {version}; this ai_memory_sdk knows up to {SCHEMA_VERSION}."
                " Upgrade the package to open it (nothing was changed)",
            )
        if version == SCHEMA_VERSION:
            return
        conn.execute("PRAGMA foreign_keys=OFF")  # a table rebuild must not cascade (only outside a transaction)
        try:
            with self.tx() as c:
                version = c.execute("PRAGMA user_version").fetchone()[0]  # another process may have migrated
                if version == 0:
                    foreign = [r[0] for r in c.execute("SELECT name FROM sqlite_master WHERE type='table'")]
                    if foreign:
                        raise StoreError(
                            self.path,
                            "is a SQLite database of another application (tables: "
                            + ", ".join(sorted(foreign)[:8])
                            + "); refusing to add tables to it. Give ai_memory_sdk a file of its own",
                        )
                for i in range(version, SCHEMA_VERSION):
                    log.info("migrating %s to schema version %d", self.path, i + 1)
                    for stmt in _split_sql(MIGRATIONS[i]):
                        c.execute(stmt)
                    c.execute(f"PRAGMA user_version={i + 1}")
                broken = c.execute("PRAGMA foreign_key_check").fetchall()
                if broken:
                    raise StoreError(self.path, f"migration left {len(broken)} broken reference(s); nothing changed")
        finally:
            conn.execute("PRAGMA foreign_keys=ON")


def _split_sql(script: str) -> list[str]:
    """Split a migration into statements (``sqlite3.complete_statement`` keeps triggers whole)."""
    out, buf = [], ""
    for line in script.splitlines(keepends=True):
        buf += line
        if sqlite3.complete_statement(buf):
            if buf.strip():
                out.append(buf.strip())
            buf = ""
    if buf.strip():
        out.append(buf.strip())
    return out


@contextmanager
def translated(path: str) -> Iterator[None]:
    """Turn SQLite's own errors into ``StoreError`` naming the file (a corrupt file, a read-only mount, ...)."""
    try:
        yield
    except sqlite3.Error as exc:
        raise StoreError(path, _cause(exc)) from exc


def _cause(exc: sqlite3.Error) -> str:
    text = str(exc)
    if "file is not a database" in text:
        return "is not a SQLite database (a corrupt file, or another kind of file)"
    if "readonly" in text or "read-only" in text:
        return f"cannot be written ({text}): check the file's and its directory's permissions"
    if "unable to open" in text:
        return f"cannot be opened ({text}): check that its directory exists and is writable"
    if "locked" in text:
        return f"{text} (another process held the write lock past the busy timeout)"
    return text


__all__ = ["Database", "guarded", "translated", "waits"]
