"""The local engine's durable state: one SQLite file in WAL mode.

Everything the engine does is a short transaction here: enqueue (messages,
passages and the run in one commit), claim a subject's queued runs, apply a
finished pass (block edits, versions, vectors and run completion in one
commit), delete a subject. Connections are per thread and re-opened after a
fork; every write transaction is ``BEGIN IMMEDIATE`` with a busy timeout, so
concurrent writers queue instead of failing. Every public method runs under
the fork gate (``_fork.gate``), so no thread is inside SQLite when the process
forks.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import socket
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TypeVar

from .._fork import gate, inherited
from .._process import owner_dead, process_owner
from ..errors import BlockNotFoundError, RunNotFoundError, RunStateError
from ..models import Block, BlockSpec, BlockVersion, MessageIn, Run, StoredMessage
from ..search.recipe import CONTENT_WEIGHT, CONTEXT_PASSAGES, CONTEXT_WEIGHT, passage_context
from ._schema import MIGRATIONS, SCHEMA_VERSION

log = logging.getLogger(__name__)

_PURGE_KEY = "purge_pending"  # meta row: 'optimize' or 'checkpoint' still to do after a delete
MAX_ATTEMPTS = 5  # a run whose pass kills its process this often is failed, not retried forever


def _ts(dt: datetime) -> float:
    return dt.timestamp()


def _dt(ts: float | None) -> datetime | None:
    return None if ts is None else datetime.fromtimestamp(ts, timezone.utc)


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4()}"


@dataclass
class Claim:
    """A subject's queued runs taken by one worker for one pass."""

    claim_id: str
    subject_pk: int
    subject_id: str
    run_ids: list[str]
    run_seqs: list[int]


_RUN_COLS = (
    "r.id, s.subject_id, r.status, r.error, r.stop_reason, r.created_at, r.started_at, r.finished_at, "
    "r.learner, r.llm_calls, r.prompt_tokens, r.completion_tokens"
)
_BLOCK_COLS = "b.id, b.label, b.description, b.value, b.char_limit, s.subject_id, b.created_at, b.updated_at"


def _run(row: Sequence[Any]) -> Run:
    return Run(
        id=row[0],
        subject_id=row[1],
        status=row[2],
        error=row[3],
        stop_reason=row[4],
        created_at=_dt(row[5]),
        started_at=_dt(row[6]),
        finished_at=_dt(row[7]),
        learner=row[8],
        llm_calls=row[9],
        prompt_tokens=row[10],
        completion_tokens=row[11],
    )


def _block(row: Sequence[Any]) -> Block:
    return Block(
        id=row[0],
        label=row[1],
        description=row[2],
        value=row[3],
        limit=row[4],
        subject_id=row[5],
        created_at=_dt(row[6]),
        updated_at=_dt(row[7]),
    )


def _message(row: Sequence[Any]) -> StoredMessage:
    return StoredMessage(
        id=row[0],
        role=row[1],
        content=row[2],
        name=row[3],
        metadata=json.loads(row[4]) if row[4] else {},
        created_at=_dt(row[5]),
        run_id=row[6],
    )


_MSG_COLS = "m.id, m.role, m.content, m.name, m.metadata, m.created_at, r.id"


_C = TypeVar("_C", bound=type)


def _fork_gated(cls: _C) -> _C:
    """Run every public method of ``cls`` under the fork gate (see ``_fork``)."""

    def wrap(fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def gated(*args: Any, **kwargs: Any) -> Any:
            with gate:
                return fn(*args, **kwargs)

        return gated

    for name, fn in list(vars(cls).items()):
        if not name.startswith("_") and callable(fn) and name != "snapshot":  # snapshot gates its own body
            setattr(cls, name, wrap(fn))
    return cls


@_fork_gated
class SQLiteStore:
    """Durable store of subjects, blocks, block versions, messages, runs and passages."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        history_limit: int = 100,
        busy_timeout: float = 60.0,
        secure_delete: bool = True,
    ) -> None:
        self.path = str(path)
        self.history_limit = history_limit
        self.busy_timeout = busy_timeout
        self.secure_delete = secure_delete
        self.owner = process_owner()
        self._pid = os.getpid()
        self._local = threading.local()
        self._all_conns: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._migrate()
        self.finish_purge()  # a process died, or a reader blocked it, before a delete's purge finished

    # -- connections -----------------------------------------------------------------------------

    def _conn(self) -> sqlite3.Connection:
        if os.getpid() != self._pid:
            self._after_fork()
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=self.busy_timeout, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA foreign_keys=ON")
            conn.execute(f"PRAGMA secure_delete={'ON' if self.secure_delete else 'OFF'}")
            self._local.conn = conn
            with self._lock:
                self._all_conns.append(conn)
        return conn

    def _after_fork(self) -> None:
        """A forked child must not use its parent's SQLite connections: open new ones."""
        self._pid = os.getpid()
        self._local = threading.local()
        inherited.extend(self._all_conns)  # the parent's connections: never used, closed or finalised here
        self._all_conns = []
        self._lock = threading.Lock()
        self.owner = process_owner()

    def close(self) -> None:
        try:  # a purge deferred by a reader gets one more (non-blocking) try
            self.finish_purge()
        except sqlite3.Error as exc:
            log.debug("purge at close deferred: %s", exc)
        with self._lock:
            conns, self._all_conns = self._all_conns, []
        for conn in conns:
            try:
                conn.close()
            except sqlite3.Error:  # pragma: no cover - closing is best effort
                pass
        self._local = threading.local()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """A write transaction that takes the write lock up front (no deadlock on upgrade)."""
        with gate:
            conn = self._conn()
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    def _migrate(self) -> None:
        with self._tx() as conn:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise RuntimeError(
                    f"{self.path} has schema version {version}; this ai_memory_sdk knows up to "
                    f"{SCHEMA_VERSION}. Upgrade the package to open it."
                )
            for i in range(version, SCHEMA_VERSION):
                log.info("migrating %s to schema version %d", self.path, i + 1)
                for stmt in _split_sql(MIGRATIONS[i]):
                    conn.execute(stmt)
                conn.execute(f"PRAGMA user_version={i + 1}")

    # -- meta ------------------------------------------------------------------------------------

    def get_meta(self, key: str) -> str | None:
        row = self._conn().execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return row[0] if row else None

    def set_meta(self, key: str, value: str) -> None:
        with self._tx() as conn:
            conn.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", (key, value))

    # -- subjects --------------------------------------------------------------------------------

    def agent_id(self, subject_id: str) -> str | None:
        row = self._conn().execute("SELECT agent_id FROM subjects WHERE subject_id=?", (subject_id,)).fetchone()
        return row[0] if row else None

    def _subject_pk(self, conn: sqlite3.Connection, subject_id: str) -> int | None:
        row = conn.execute("SELECT pk FROM subjects WHERE subject_id=?", (subject_id,)).fetchone()
        return row[0] if row else None

    def _ensure_subject(
        self, conn: sqlite3.Connection, subject_id: str, blocks: Sequence[BlockSpec] = ()
    ) -> tuple[int, str, bool]:
        row = conn.execute("SELECT pk, agent_id FROM subjects WHERE subject_id=?", (subject_id,)).fetchone()
        if row:
            return row[0], row[1], False
        agent_id = new_id("agent")
        pk = _next_pk(conn, "subjects")
        conn.execute(
            "INSERT INTO subjects(pk, subject_id, agent_id, created_at) VALUES (?, ?, ?, ?)",
            (pk, subject_id, agent_id, time.time()),
        )
        for spec in blocks:
            self._insert_block(conn, pk, spec)
        return pk, agent_id, True

    def create_subject(
        self, subject_id: str, *, reset: bool, blocks: Sequence[BlockSpec] = (), exists_message: str = ""
    ) -> str:
        """Create a subject (and blocks) in one transaction; ``reset`` erases an existing one first."""
        with self._tx() as conn:
            row = conn.execute("SELECT agent_id FROM subjects WHERE subject_id=?", (subject_id,)).fetchone()
            if row and not reset:
                raise ValueError(
                    exists_message.format(agent_id=row[0], subject_id=subject_id)
                    or f"Agent {row[0]} already exists for subject {subject_id}. Cannot re-initialize unless reset=True."
                )
            if row:
                self._delete_subject(conn, subject_id)
            _, agent_id, _ = self._ensure_subject(conn, subject_id, blocks)
        if row:
            self._purge_freed()
        return agent_id

    def ensure_subject(self, subject_id: str, blocks: Sequence[BlockSpec] = ()) -> str:
        conn = self._conn()
        row = conn.execute("SELECT agent_id FROM subjects WHERE subject_id=?", (subject_id,)).fetchone()
        if row:
            return row[0]
        with self._tx() as conn:
            return self._ensure_subject(conn, subject_id, blocks)[1]

    def _delete_subject(self, conn: sqlite3.Connection, subject_id: str) -> bool:
        pk = self._subject_pk(conn, subject_id)
        if pk is None:
            return False
        _raise_floor(conn, "subjects")
        _raise_floor(conn, "passages")
        # Children first, so each delete is one indexed pass (cascades would do it row by row).
        conn.execute("DELETE FROM passage_vectors WHERE subject_pk=?", (pk,))
        conn.execute("DELETE FROM passages WHERE subject_pk=?", (pk,))
        conn.execute("DELETE FROM messages WHERE subject_pk=?", (pk,))
        conn.execute("DELETE FROM runs WHERE subject_pk=?", (pk,))
        conn.execute("DELETE FROM block_versions WHERE block_pk IN (SELECT pk FROM blocks WHERE subject_pk=?)", (pk,))
        conn.execute("DELETE FROM blocks WHERE subject_pk=?", (pk,))
        conn.execute("DELETE FROM subjects WHERE pk=?", (pk,))
        self._mark_purge(conn)
        return True

    def delete_subject(self, subject_id: str) -> bool:
        """Erase every row about the subject in one transaction."""
        with self._tx() as conn:
            found = self._delete_subject(conn, subject_id)
        if found:
            self._purge_freed()
        return found

    def _mark_purge(self, conn: sqlite3.Connection) -> None:
        """Record, in the deleting transaction, that deleted text may still sit in FTS5 segments or the -wal.

        The mark survives a crash before the purge, so the next process (or
        this one's heartbeat and ``close``) finishes it.
        """
        conn.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, 'optimize')", (_PURGE_KEY,))

    def purge_pending(self) -> bool:
        return self.get_meta(_PURGE_KEY) is not None

    def finish_purge(self) -> bool:
        """Finish a purge that a reader (or a crash) deferred, without waiting for readers; True when none is left."""
        return self._purge_freed(wait=False)

    def _purge_freed(self, *, wait: bool = True) -> bool:
        """Leave no deleted text behind: merge FTS segments and truncate the WAL; True when done.

        ``secure_delete`` zeroes freed pages; FTS5 (before SQLite 3.42's
        secure-delete option) keeps deleted tokens in old segments until they
        are merged, and the WAL keeps old page images until a checkpoint
        truncates it. A reader holding an old snapshot past the busy timeout
        (or ``wait=False``: any reader) defers the truncation: the mark stays
        and a later call finishes it.
        """
        state = self.get_meta(_PURGE_KEY)
        if state is None:
            return True
        conn = self._conn()
        if state == "optimize":
            try:
                with self._tx() as c:
                    c.execute("INSERT INTO passages_fts(passages_fts) VALUES ('optimize')")
                    c.execute("UPDATE meta SET value='checkpoint' WHERE key=?", (_PURGE_KEY,))
            except sqlite3.OperationalError as exc:  # the delete itself is committed: never fail it now
                log.warning("merging the search index after a delete was deferred (%s); it is retried later", exc)
                return False
        if not wait:
            conn.execute("PRAGMA busy_timeout=0")
        try:
            busy = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
        except sqlite3.OperationalError as exc:
            log.debug("checkpoint after delete deferred: %s", exc)
            busy = 1
        finally:
            if not wait:
                conn.execute(f"PRAGMA busy_timeout={int(self.busy_timeout * 1000)}")
        if busy:
            (log.warning if wait else log.debug)(
                "a reader of %s kept the write-ahead log from being truncated after a delete; deleted text stays"
                " in its -wal file until a later checkpoint (retried by the worker heartbeat, close() and the next"
                " open)",
                self.path,
            )
            return False
        try:
            with self._tx() as c:  # this small write goes to the fresh WAL; it holds nothing deleted
                c.execute("DELETE FROM meta WHERE key=? AND value='checkpoint'", (_PURGE_KEY,))  # not a newer delete's
        except sqlite3.OperationalError as exc:  # the mark stays: a later call checkpoints again, harmlessly
            log.debug("clearing the purge mark deferred: %s", exc)
        return True

    def list_subjects(self) -> list[str]:
        return [r[0] for r in self._conn().execute("SELECT subject_id FROM subjects ORDER BY pk")]

    # -- blocks ----------------------------------------------------------------------------------

    def _insert_block(self, conn: sqlite3.Connection, subject_pk: int, spec: BlockSpec) -> str:
        now = time.time()
        block_id = new_id("block")
        cur = conn.execute(
            "INSERT INTO blocks(id, subject_pk, label, description, value, char_limit, version, created_at, updated_at)"
            " VALUES (?, ?, ?, ?, ?, ?, 1, ?, ?)",
            (block_id, subject_pk, spec.label, spec.description, spec.value, spec.limit, now, now),
        )
        conn.execute(
            "INSERT INTO block_versions(block_pk, version, value, run_id, created_at) VALUES (?, 1, ?, NULL, ?)",
            (cur.lastrowid, spec.value, now),
        )
        return block_id

    def list_blocks(self, subject_id: str) -> list[Block]:
        rows = (
            self._conn()
            .execute(
                f"SELECT {_BLOCK_COLS} FROM blocks b JOIN subjects s ON s.pk=b.subject_pk"
                " WHERE s.subject_id=? ORDER BY b.pk",
                (subject_id,),
            )
            .fetchall()
        )
        return [_block(r) for r in rows]

    def get_block(self, subject_id: str, label: str) -> Block | None:
        row = (
            self._conn()
            .execute(
                f"SELECT {_BLOCK_COLS} FROM blocks b JOIN subjects s ON s.pk=b.subject_pk"
                " WHERE s.subject_id=? AND b.label=?",
                (subject_id, label),
            )
            .fetchone()
        )
        return _block(row) if row else None

    def block_text(self, subject_id: str, label: str) -> tuple[str, str] | None:
        """(description, value) of one block: the hot path of prompt formatting."""
        return (
            self._conn()
            .execute(
                "SELECT b.description, b.value FROM blocks b JOIN subjects s ON s.pk=b.subject_pk"
                " WHERE s.subject_id=? AND b.label=?",
                (subject_id, label),
            )
            .fetchone()
        )

    def create_block(self, subject_id: str, spec: BlockSpec, *, reset: bool) -> str:
        """Create a block (creating the subject if needed); an existing label is kept unless ``reset``."""
        with self._tx() as conn:
            pk, _, _ = self._ensure_subject(conn, subject_id)
            row = conn.execute("SELECT pk, id FROM blocks WHERE subject_pk=? AND label=?", (pk, spec.label)).fetchone()
            if row and not reset:
                return row[1]
            if row:
                conn.execute("DELETE FROM block_versions WHERE block_pk=?", (row[0],))
                conn.execute("DELETE FROM blocks WHERE pk=?", (row[0],))
            return self._insert_block(conn, pk, spec)

    def delete_block(self, subject_id: str, label: str) -> bool:
        with self._tx() as conn:
            row = conn.execute(
                "SELECT b.pk FROM blocks b JOIN subjects s ON s.pk=b.subject_pk WHERE s.subject_id=? AND b.label=?",
                (subject_id, label),
            ).fetchone()
            if not row:
                return False
            conn.execute("DELETE FROM block_versions WHERE block_pk=?", (row[0],))
            conn.execute("DELETE FROM blocks WHERE pk=?", (row[0],))
            return True

    def _write_value(self, conn: sqlite3.Connection, block_pk: int, value: str, run_id: str | None, now: float) -> None:
        version = conn.execute(
            "UPDATE blocks SET value=?, version=version+1, updated_at=? WHERE pk=? RETURNING version",
            (value, now, block_pk),
        ).fetchone()[0]
        conn.execute(
            "INSERT INTO block_versions(block_pk, version, value, run_id, created_at) VALUES (?, ?, ?, ?, ?)",
            (block_pk, version, value, run_id, now),
        )
        if self.history_limit > 0:
            conn.execute(
                "DELETE FROM block_versions WHERE block_pk=? AND version<=?", (block_pk, version - self.history_limit)
            )

    def set_block_value(self, subject_id: str, label: str, value: str, *, check: Any = None) -> None:
        """A direct edit by the application (recorded in history like any edit)."""
        with self._tx() as conn:
            row = conn.execute(
                "SELECT b.pk, b.char_limit, b.value FROM blocks b JOIN subjects s ON s.pk=b.subject_pk"
                " WHERE s.subject_id=? AND b.label=?",
                (subject_id, label),
            ).fetchone()
            if not row:
                raise BlockNotFoundError(f"subject {subject_id!r} has no block labelled {label!r}")
            if check is not None:
                check(value, row[1])
            if row[2] != value:
                self._write_value(conn, row[0], value, None, time.time())

    def block_history(self, subject_id: str, label: str) -> list[BlockVersion]:
        conn = self._conn()
        row = conn.execute(
            "SELECT b.pk FROM blocks b JOIN subjects s ON s.pk=b.subject_pk WHERE s.subject_id=? AND b.label=?",
            (subject_id, label),
        ).fetchone()
        if not row:
            raise BlockNotFoundError(f"subject {subject_id!r} has no block labelled {label!r}")
        rows = conn.execute(
            "SELECT version, value, run_id, created_at FROM block_versions WHERE block_pk=? ORDER BY version", (row[0],)
        ).fetchall()
        return [BlockVersion(version=r[0], value=r[1], run_id=r[2], created_at=_dt(r[3])) for r in rows]

    def restore_block(self, subject_id: str, label: str, version: int) -> str:
        with self._tx() as conn:
            row = conn.execute(
                "SELECT b.pk, b.char_limit FROM blocks b JOIN subjects s ON s.pk=b.subject_pk"
                " WHERE s.subject_id=? AND b.label=?",
                (subject_id, label),
            ).fetchone()
            if not row:
                raise BlockNotFoundError(f"subject {subject_id!r} has no block labelled {label!r}")
            old = conn.execute(
                "SELECT value FROM block_versions WHERE block_pk=? AND version=?", (row[0], version)
            ).fetchone()
            if not old:
                raise BlockNotFoundError(f"block {label!r} of subject {subject_id!r} has no version {version}")
            if len(old[0]) > row[1]:
                raise ValueError(f"version {version} has {len(old[0])} characters, over the block's limit of {row[1]}")
            self._write_value(conn, row[0], old[0], None, time.time())
            return old[0]

    # -- messages and runs -----------------------------------------------------------------------

    def enqueue(
        self,
        subject_id: str,
        messages: Sequence[MessageIn],
        *,
        passages: Sequence[str | None],
        default_blocks: Sequence[BlockSpec] = (),
    ) -> str:
        """Store a batch and its queued run in one transaction; returns the run id.

        ``passages[i]`` is the passage text of message i, or None when the
        message is not archived for search. Each passage's lexical context (its
        date and the subject's previous passages) is written here, so it is
        searchable lexically as soon as this commits.
        """
        run_id = new_id("run")
        now = time.time()
        with self._tx() as conn:
            pk, _, _ = self._ensure_subject(conn, subject_id, default_blocks)
            run_seq = conn.execute(
                "INSERT INTO runs(id, subject_pk, status, created_at) VALUES (?, ?, 'queued', ?)", (run_id, pk, now)
            ).lastrowid
            passage_pk = _next_pk(conn, "passages") if any(t is not None for t in passages) else 0
            previous = (
                [
                    r[0]
                    for r in conn.execute(
                        "SELECT content FROM passages WHERE subject_pk=? ORDER BY pk DESC LIMIT ?",
                        (pk, CONTEXT_PASSAGES),
                    )
                ][::-1]
                if passage_pk
                else []
            )
            for msg, text in zip(messages, passages):
                created = _ts(msg.created_at)
                seq = conn.execute(
                    "INSERT INTO messages(id, subject_pk, run_seq, role, content, name, metadata, created_at)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        new_id("msg"),
                        pk,
                        run_seq,
                        msg.role,
                        msg.content,
                        msg.name,
                        json.dumps(msg.metadata) if msg.metadata else None,
                        created,
                    ),
                ).lastrowid
                if text is not None:
                    conn.execute(
                        "INSERT INTO passages(pk, subject_pk, message_seq, content, context, role, tags, created_at)"
                        " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                        (
                            passage_pk,
                            pk,
                            seq,
                            text,
                            passage_context(msg.created_at, previous),
                            msg.role,
                            json.dumps(list(dict.fromkeys([msg.role, *msg.tags]))),
                            created,
                        ),
                    )
                    passage_pk += 1
                    previous = [*previous, text][-CONTEXT_PASSAGES:]
        return run_id

    def get_run(self, run_id: str) -> Run | None:
        row = (
            self._conn()
            .execute(f"SELECT {_RUN_COLS} FROM runs r JOIN subjects s ON s.pk=r.subject_pk WHERE r.id=?", (run_id,))
            .fetchone()
        )
        return _run(row) if row else None

    def run_status(self, run_id: str) -> str | None:
        row = self._conn().execute("SELECT status FROM runs WHERE id=?", (run_id,)).fetchone()
        return row[0] if row else None

    def list_runs(self, subject_id: str, status: str | None = None) -> list[Run]:
        sql = f"SELECT {_RUN_COLS} FROM runs r JOIN subjects s ON s.pk=r.subject_pk WHERE s.subject_id=?"
        args: list[Any] = [subject_id]
        if status is not None:
            sql += " AND r.status=?"
            args.append(status)
        return [_run(r) for r in self._conn().execute(sql + " ORDER BY r.seq", args)]

    def cancel_run(self, run_id: str) -> Run:
        with self._tx() as conn:
            row = conn.execute("SELECT status FROM runs WHERE id=?", (run_id,)).fetchone()
            if not row:
                raise RunNotFoundError(f"Run {run_id} not found")
            if row[0] != "queued":
                raise RunStateError(f"Run {run_id} is {row[0]}; only a queued run can be cancelled")
            conn.execute("UPDATE runs SET status='cancelled', finished_at=? WHERE id=?", (time.time(), run_id))
        return self.get_run(run_id)  # type: ignore[return-value]

    def retry_run(self, run_id: str) -> Run:
        with self._tx() as conn:
            row = conn.execute("SELECT status FROM runs WHERE id=?", (run_id,)).fetchone()
            if not row:
                raise RunNotFoundError(f"Run {run_id} not found")
            if row[0] != "failed":
                raise RunStateError(f"Run {run_id} is {row[0]}; only a failed run can be retried")
            conn.execute(
                "UPDATE runs SET status='queued', error=NULL, stop_reason=NULL, started_at=NULL,"
                " finished_at=NULL, attempts=0, claim_id=NULL, lease_owner=NULL, lease_expires=NULL"
                " WHERE id=?",
                (run_id,),
            )
        return self.get_run(run_id)  # type: ignore[return-value]

    def get_messages(
        self,
        subject_id: str,
        *,
        limit: int | None = None,
        before: datetime | None = None,
        after: datetime | None = None,
    ) -> list[StoredMessage]:
        """Oldest first; with ``limit``, the newest ``limit`` messages in that window."""
        sql = (
            f"SELECT {_MSG_COLS} FROM messages m JOIN subjects s ON s.pk=m.subject_pk"
            " LEFT JOIN runs r ON r.seq=m.run_seq WHERE s.subject_id=?"
        )
        args: list[Any] = [subject_id]
        if before is not None:
            sql += " AND m.created_at<?"
            args.append(_ts(before))
        if after is not None:
            sql += " AND m.created_at>?"
            args.append(_ts(after))
        if limit is not None:
            rows = (
                self._conn().execute(sql + " ORDER BY m.created_at DESC, m.seq DESC LIMIT ?", (*args, limit)).fetchall()
            )
            rows.reverse()
        else:
            rows = self._conn().execute(sql + " ORDER BY m.created_at, m.seq", args).fetchall()
        return [_message(r) for r in rows]

    def delete_message(self, message_id: str) -> bool:
        with self._tx() as conn:
            row = conn.execute("SELECT seq FROM messages WHERE id=?", (message_id,)).fetchone()
            if not row:
                return False
            _raise_floor(conn, "passages")
            gone = conn.execute("SELECT subject_pk, pk FROM passages WHERE message_seq=?", (row[0],)).fetchall()
            conn.execute(
                "DELETE FROM passage_vectors WHERE passage_pk IN (SELECT pk FROM passages WHERE message_seq=?)",
                (row[0],),
            )
            conn.execute("DELETE FROM passages WHERE message_seq=?", (row[0],))
            for subject_pk, pk in gone:
                self._rewrite_contexts(conn, subject_pk, pk)
            conn.execute("DELETE FROM messages WHERE seq=?", (row[0],))
            self._mark_purge(conn)
        self._purge_freed()
        return True

    # -- the worker's side -----------------------------------------------------------------------

    def has_work(self) -> bool:
        return (
            self._conn().execute("SELECT 1 FROM runs WHERE status IN ('queued','running') LIMIT 1").fetchone()
            is not None
        )

    def claim(self, lease_seconds: float, *, subject_pk: int | None = None) -> Claim | None:
        """Take every queued run of the idle subject whose oldest queued run is oldest.

        Runs of one subject are never claimed while another of its runs is
        running, so one subject's passes are serial and in order.
        """
        if not self._conn().execute("SELECT 1 FROM runs WHERE status='queued' LIMIT 1").fetchone():
            return None  # nothing to claim: do not take the write lock from the application
        with self._tx() as conn:
            row = conn.execute(
                "SELECT r.subject_pk FROM runs r WHERE r.status='queued'"
                + (" AND r.subject_pk=?" if subject_pk is not None else "")
                + " AND NOT EXISTS (SELECT 1 FROM runs x WHERE x.subject_pk=r.subject_pk AND x.status='running')"
                " ORDER BY r.seq LIMIT 1",
                (() if subject_pk is None else (subject_pk,)),
            ).fetchone()
            if not row:
                return None
            pk = row[0]
            claim_id = uuid.uuid4().hex
            now = time.time()
            # A run whose pass already died with its process is claimed alone: if it is what kills the
            # process, it reaches MAX_ATTEMPTS by itself instead of taking the runs queued behind it along.
            first_seq, first_attempts = conn.execute(
                "SELECT seq, attempts FROM runs WHERE subject_pk=? AND status='queued' ORDER BY seq LIMIT 1", (pk,)
            ).fetchone()
            conn.execute(
                "UPDATE runs SET status='running', started_at=?, claim_id=?, lease_owner=?, lease_expires=?,"
                " attempts=attempts+1 WHERE subject_pk=? AND status='queued'"
                + (" AND seq=?" if first_attempts else ""),
                (now, claim_id, self.owner, now + lease_seconds, pk, *((first_seq,) if first_attempts else ())),
            )
            runs = conn.execute("SELECT id, seq FROM runs WHERE claim_id=? ORDER BY seq", (claim_id,)).fetchall()
            subject_id = conn.execute("SELECT subject_id FROM subjects WHERE pk=?", (pk,)).fetchone()[0]
        return Claim(claim_id, pk, subject_id, [r[0] for r in runs], [r[1] for r in runs])

    def split_claim(self, claim: Claim) -> list[Claim]:
        """Turn a coalesced claim into one claim per run (still held by this process), oldest first."""
        out = []
        with self._tx() as conn:
            for run_id, seq in zip(claim.run_ids, claim.run_seqs):
                claim_id = uuid.uuid4().hex
                if conn.execute(
                    "UPDATE runs SET claim_id=? WHERE id=? AND claim_id=? AND status='running'",
                    (claim_id, run_id, claim.claim_id),
                ).rowcount:
                    out.append(Claim(claim_id, claim.subject_pk, claim.subject_id, [run_id], [seq]))
        return out

    def claim_messages(self, claim: Claim) -> list[StoredMessage]:
        rows = (
            self._conn()
            .execute(
                f"SELECT {_MSG_COLS} FROM messages m JOIN runs r ON r.seq=m.run_seq WHERE r.claim_id=? ORDER BY m.seq",
                (claim.claim_id,),
            )
            .fetchall()
        )
        return [_message(r) for r in rows]

    def claim_passages(self, claim: Claim, embedder: str) -> list[tuple[int, str]]:
        """(passage pk, text) of the claim's passages that have no vector from ``embedder``."""
        return (
            self._conn()
            .execute(
                "SELECT p.pk, p.content FROM passages p JOIN messages m ON m.seq=p.message_seq"
                " JOIN runs r ON r.seq=m.run_seq LEFT JOIN passage_vectors v ON v.passage_pk=p.pk AND v.embedder=?"
                " WHERE r.claim_id=? AND v.passage_pk IS NULL ORDER BY p.pk",
                (embedder, claim.claim_id),
            )
            .fetchall()
        )

    def renew_leases(self, lease_seconds: float) -> int:
        with self._tx() as conn:
            return conn.execute(
                "UPDATE runs SET lease_expires=? WHERE lease_owner=? AND status='running'",
                (time.time() + lease_seconds, self.owner),
            ).rowcount

    def recover(self) -> int:
        """Requeue runs left ``running`` by a dead process (dead pid on this host, or lease expired)."""
        conn = self._conn()
        now = time.time()
        host = socket.gethostname()
        dead: list[str] = []
        for (owner,) in conn.execute("SELECT DISTINCT lease_owner FROM runs WHERE status='running'"):
            if owner != self.owner and owner_dead(owner or "", host):
                dead.append(owner)
        with self._tx() as conn:
            n = 0
            for owner in dead:
                n += self._requeue(conn, "lease_owner=?", (owner,))
            n += self._requeue(conn, "lease_expires<?", (now,))
        if n:
            log.warning("requeued %d run(s) left running by a process that died", n)
        return n

    def _requeue(self, conn: sqlite3.Connection, where: str, args: tuple[Any, ...]) -> int:
        failed = conn.execute(
            f"UPDATE runs SET status='failed', finished_at=?, stop_reason='crashed', claim_id=NULL, lease_owner=NULL,"
            f" error='the process applying this run died {MAX_ATTEMPTS} times; retry_run() requeues it'"
            f" WHERE status='running' AND attempts>={MAX_ATTEMPTS} AND {where}",
            (time.time(), *args),
        ).rowcount
        return (
            failed
            + conn.execute(
                f"UPDATE runs SET status='queued', started_at=NULL, claim_id=NULL, lease_owner=NULL, lease_expires=NULL"
                f" WHERE status='running' AND {where}",
                args,
            ).rowcount
        )

    def complete(
        self,
        claim: Claim,
        *,
        learner: str,
        values: dict[str, tuple[str, int]],
        vectors: Sequence[tuple[int, bytes]],
        embedder: str | None,
        stats: dict[str, Any],
        replay: Any,
    ) -> bool:
        """Apply a finished pass in one transaction; False when the claim was lost.

        ``values`` maps label -> (new value, block version the pass read);
        when the block changed since, ``replay(label, current value, limit)``
        gives the value to write instead (or None to leave it).
        """
        now = time.time()
        first_run = claim.run_ids[0]
        with self._tx() as conn:
            owned = conn.execute(
                "SELECT count(*) FROM runs WHERE claim_id=? AND status='running'", (claim.claim_id,)
            ).fetchone()[0]
            if owned != len(claim.run_ids):
                return False  # requeued by recovery, cancelled, or the subject was deleted
            for label, (value, read_version) in values.items():
                row = conn.execute(
                    "SELECT pk, value, version, char_limit FROM blocks WHERE subject_pk=? AND label=?",
                    (claim.subject_pk, label),
                ).fetchone()
                if not row:
                    log.warning(
                        "block %r of subject %r was deleted during a pass; its edits are dropped",
                        label,
                        claim.subject_id,
                    )
                    continue
                if row[2] != read_version:
                    value = replay(label, row[1], row[3])
                    if value is None:
                        continue
                if value != row[1]:
                    self._write_value(conn, row[0], value, first_run, now)
            if vectors:
                self._insert_vectors(conn, [(pk, claim.subject_pk, blob) for pk, blob in vectors], embedder or "")
            conn.execute(
                "UPDATE runs SET status='completed', finished_at=?, learner=?, llm_calls=?, prompt_tokens=?,"
                " completion_tokens=?, stop_reason=?, error=NULL, lease_owner=NULL, lease_expires=NULL"
                " WHERE claim_id=?",
                (
                    now,
                    learner,
                    stats.get("llm_calls", 0),
                    stats.get("prompt_tokens", 0),
                    stats.get("completion_tokens", 0),
                    stats.get("stop_reason"),
                    claim.claim_id,
                ),
            )
        return True

    def fail(self, claim: Claim, *, learner: str, error: str, stop_reason: str | None, stats: dict[str, Any]) -> bool:
        with self._tx() as conn:
            return (
                conn.execute(
                    "UPDATE runs SET status='failed', finished_at=?, learner=?, error=?, stop_reason=?, llm_calls=?,"
                    " prompt_tokens=?, completion_tokens=?, lease_owner=NULL, lease_expires=NULL"
                    " WHERE claim_id=? AND status='running'",
                    (
                        time.time(),
                        learner,
                        error,
                        stop_reason,
                        stats.get("llm_calls", 0),
                        stats.get("prompt_tokens", 0),
                        stats.get("completion_tokens", 0),
                        claim.claim_id,
                    ),
                ).rowcount
                > 0
            )

    def pass_blocks(self, subject_pk: int) -> tuple[list[Block], dict[str, int]]:
        """The subject's blocks and the version of each, read together for a pass."""
        rows = (
            self._conn()
            .execute(
                f"SELECT {_BLOCK_COLS}, b.version FROM blocks b JOIN subjects s"
                " ON s.pk=b.subject_pk WHERE b.subject_pk=? ORDER BY b.pk",
                (subject_pk,),
            )
            .fetchall()
        )
        return [_block(r) for r in rows], {r[1]: r[8] for r in rows}

    # -- search primitives -----------------------------------------------------------------------

    def subject_pk(self, subject_id: str) -> int | None:
        return self._subject_pk(self._conn(), subject_id)

    @contextmanager
    def snapshot(self) -> Iterator[sqlite3.Connection]:
        """A read transaction: everything read inside sees one state of the store."""
        with gate:
            conn = self._conn()
            conn.execute("BEGIN")
            try:
                yield conn
            finally:
                conn.execute("COMMIT")

    def fts(self, subject_pk: int | None, match: str, limit: int | None, *, min_pk: int = 0) -> list[tuple[int, float]]:
        """(passage pk, -bm25; higher is better) for an FTS5 MATCH expression, best first.

        Passages of ``subject_pk`` only, or of every subject when it is None
        (the caller filters). ``min_pk`` limits the scan to passages stored
        after it (the newest ones), which FTS5 seeks to without reading older postings.
        """
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
            rows = self._conn().execute(sql, args).fetchall()
        except sqlite3.OperationalError as exc:
            log.debug("FTS query %r refused: %s", match, exc)
            return []
        return [(r[0], -r[1]) for r in rows]

    def _rewrite_contexts(self, conn: sqlite3.Connection, subject_pk: int, deleted_pk: int) -> None:
        """Rebuild the context of the passages that held a deleted passage's text (the next ones of its subject)."""
        for pk, created in conn.execute(
            "SELECT pk, created_at FROM passages WHERE subject_pk=? AND pk>? ORDER BY pk LIMIT ?",
            (subject_pk, deleted_pk, CONTEXT_PASSAGES),
        ).fetchall():
            previous = [
                r[0]
                for r in conn.execute(
                    "SELECT content FROM passages WHERE subject_pk=? AND pk<? ORDER BY pk DESC LIMIT ?",
                    (subject_pk, pk, CONTEXT_PASSAGES),
                )
            ][::-1]
            conn.execute("UPDATE passages SET context=? WHERE pk=?", (passage_context(_dt(created), previous), pk))

    def fts_doc_count_capped(self, match: str, cap: int) -> int:
        """Passages (of every subject) an FTS5 expression matches, counted up to ``cap`` (bounded cost)."""
        try:
            return (
                self._conn()
                .execute(
                    "SELECT count(*) FROM (SELECT 1 FROM passages_fts WHERE passages_fts MATCH ? LIMIT ?)", (match, cap)
                )
                .fetchone()[0]
            )
        except sqlite3.OperationalError:
            return 0

    def fts_nth_newest(self, match: str, n: int) -> int:
        """The pk of the ``n``-th newest passage (of every subject) an expression matches; 0 if fewer match."""
        try:
            row = (
                self._conn()
                .execute(
                    "SELECT rowid FROM passages_fts WHERE passages_fts MATCH ? ORDER BY rowid DESC LIMIT 1 OFFSET ?",
                    (match, n - 1),
                )
                .fetchone()
            )
        except sqlite3.OperationalError:
            return 0
        return row[0] if row else 0

    def passage_pk_range(self) -> tuple[int, int]:
        """(lowest, highest) passage pk of the whole store; (0, 0) when empty."""
        conn = self._conn()  # two statements: SQLite answers a lone min() or max() from the index, not both
        return (
            conn.execute("SELECT coalesce(min(pk), 0) FROM passages").fetchone()[0],
            conn.execute("SELECT coalesce(max(pk), 0) FROM passages").fetchone()[0],
        )

    def search_gen(self, conn: sqlite3.Connection, subject_pk: int) -> tuple[int, int]:
        """(added, removed): counters of the subject's passage and vector rows, bumped by triggers."""
        row = conn.execute("SELECT added, removed FROM search_gen WHERE subject_pk=?", (subject_pk,)).fetchone()
        return (row[0], row[1]) if row else (0, 0)

    def passage_rows(self, conn: sqlite3.Connection, subject_pk: int, after_pk: int) -> list[tuple[int, float, str]]:
        """(pk, created_at, tags JSON) of the subject's passages above ``after_pk``, in pk order."""
        return conn.execute(
            "SELECT pk, created_at, tags FROM passages WHERE subject_pk=? AND pk>? ORDER BY pk", (subject_pk, after_pk)
        ).fetchall()

    def vector_rows(
        self, conn: sqlite3.Connection, subject_pk: int, embedder: str, after_seq: int
    ) -> list[tuple[int, int, bytes]]:
        """(seq, passage pk, float32 blob) of the subject's vectors from ``embedder`` above ``after_seq``."""
        return conn.execute(
            "SELECT seq, passage_pk, vector FROM passage_vectors WHERE subject_pk=? AND embedder=?"
            " AND seq>? ORDER BY seq",
            (subject_pk, embedder, after_seq),
        ).fetchall()

    def passages(self, pks: Sequence[int]) -> dict[int, dict[str, Any]]:
        if not pks:
            return {}
        out: dict[int, dict[str, Any]] = {}
        conn = self._conn()
        for i in range(0, len(pks), 500):
            chunk = list(pks[i : i + 500])
            rows = conn.execute(
                "SELECT p.pk, p.content, p.role, p.tags, p.created_at, m.id, m.metadata FROM passages p"
                f" LEFT JOIN messages m ON m.seq=p.message_seq WHERE p.pk IN ({','.join('?' * len(chunk))})",
                chunk,
            )
            for r in rows:
                out[r[0]] = {
                    "content": r[1],
                    "role": r[2],
                    "tags": json.loads(r[3]),
                    "created_at": _dt(r[4]),
                    "message_id": r[5],
                    "metadata": json.loads(r[6]) if r[6] else {},
                }
        return out

    def passages_without_vectors(
        self, embedder: str, limit: int = 256, after_pk: int = 0
    ) -> list[tuple[int, int, str]]:
        """(passage pk, subject pk, text) above ``after_pk`` still to embed with ``embedder``, in pk order.

        Passages of queued or running runs are left out: their pass embeds them.
        """
        return (
            self._conn()
            .execute(
                "SELECT p.pk, p.subject_pk, p.content FROM passages p LEFT JOIN passage_vectors v"
                " ON v.passage_pk=p.pk AND v.embedder=? LEFT JOIN messages m ON m.seq=p.message_seq"
                " LEFT JOIN runs r ON r.seq=m.run_seq WHERE p.pk>? AND v.passage_pk IS NULL"
                " AND coalesce(r.status, '') NOT IN ('queued', 'running') ORDER BY p.pk LIMIT ?",
                (embedder, after_pk, limit),
            )
            .fetchall()
        )

    def put_vectors(self, rows: Sequence[tuple[int, int, bytes]], embedder: str) -> None:
        """Store (passage pk, subject pk, blob) rows; passages deleted meanwhile are skipped."""
        with self._tx() as conn:
            self._insert_vectors(conn, rows, embedder)

    def _insert_vectors(self, conn: sqlite3.Connection, rows: Sequence[tuple[int, int, bytes]], embedder: str) -> None:
        conn.executemany(
            "INSERT OR IGNORE INTO passage_vectors(passage_pk, subject_pk, embedder, vector)"
            " SELECT ?, ?, ?, ? WHERE EXISTS (SELECT 1 FROM passages WHERE pk=?)",
            [(pk, spk, embedder, blob, pk) for pk, spk, blob in rows],
        )
        if rows:
            conn.execute(
                "INSERT INTO meta(key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value=excluded.value",
                (f"embedder_dim:{embedder}", str(len(rows[0][2]) // 4)),
            )

    def drop_vectors(self, *, embedder: str | None = None, keep: str | None = None, batch: int = 5000) -> int:
        """Delete the vectors of ``embedder`` (or of every embedder but ``keep``) in short transactions."""
        where, arg = ("embedder=?", embedder) if embedder is not None else ("embedder!=?", keep)
        n = 0
        while True:
            with self._tx() as conn:
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


def _raise_floor(conn: sqlite3.Connection, table: str) -> None:
    """Before deleting rows of ``table``: remember its highest pk, so ``_next_pk`` never hands it out again.

    The v1 schema has no AUTOINCREMENT on subjects and passages, and SQLite
    reuses the highest row id once it is deleted: a search that looked up a
    subject's pk just before ``delete_user`` could then read the next
    subject's rows, and vector caches keyed on (pk, count, max pk) could serve
    a deleted subject's vectors.
    """
    conn.execute(
        f"INSERT INTO meta(key, value) SELECT ?, coalesce(max(pk), 0) FROM {table} WHERE true"
        " ON CONFLICT(key) DO UPDATE SET value=max(CAST(value AS INTEGER), CAST(excluded.value AS INTEGER))",
        (f"pk_floor:{table}",),
    )


def _next_pk(conn: sqlite3.Connection, table: str) -> int:
    """The next pk of ``table``: above every pk it ever had (see ``_raise_floor``)."""
    return conn.execute(
        f"SELECT max(coalesce((SELECT max(pk) FROM {table}), 0),"
        " coalesce((SELECT CAST(value AS INTEGER) FROM meta WHERE key=?), 0)) + 1",
        (f"pk_floor:{table}",),
    ).fetchone()[0]


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
