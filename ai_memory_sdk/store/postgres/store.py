"""``PostgresStore``: the ``store.base.Store`` of the embedded engine in a PostgreSQL database.

Any number of processes on any number of machines share one database: each
write is one short transaction (``_db``), the run queue (``queue.py``)
claims subjects with row locks, wake-ups cross machines as notifications
(``notify.py``), search runs over a GIN-indexed tsvector and stored vectors
(``index.py``), and erasure vacuums or rewrites what held deleted text
(``erasure.py``). Rows are the SQLite store's (``store/_rows.py`` reads
both). Lock order, in every transaction that takes more than one: a
subject's row, its ``search_gen`` row, then its other rows.
"""

from __future__ import annotations

import copy
import json
import logging
import time
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import psycopg

from ... import _validation
from ...errors import BlockNotFoundError, RunNotFoundError, RunStateError, SubjectExistsError, SubjectNotFoundError
from ...models import (
    TERMINAL_STATUSES,
    Block,
    BlockSpec,
    BlockVersion,
    MessageIn,
    Run,
    StoredMessage,
    SubjectSummary,
)
from .._guard import guarded, waits
from .._rows import (
    BLOCK_COLS,
    MSG_COLS,
    RUN_COLS,
    SUMMARY_COLS,
    VERSION_COLS,
    block_row,
    dumps,
    like_pattern,
    maybe_utc,
    message_row,
    new_id,
    passage_tags,
    run_row,
    summary_row,
    utc,
    version_row,
)
from .._signals import signals_for
from ..base import ApiKey, RunTotals
from ..recipe import CONTEXT_PASSAGES, passage_context, token_count
from ._db import Database
from .erasure import MESSAGE_TABLES, SESSION_TABLES, SUBJECT_TABLES, mark_purge, purge
from .index import PgvectorIndex, PostgresIndex
from .notify import WORK_CHANNEL, listener_for, notify_ended, notify_work, release
from .queue import NOW, PostgresQueue, lock_subject, sync, write_value

log = logging.getLogger(__name__)

# An enqueue's first statement: lock an existing subject, queue its run, and read the passages a new
# passage's context quotes (the subject's row lock keeps its runs and passages in commit order).
_ENQUEUE = (
    "WITH s AS (SELECT pk FROM subjects WHERE tenant=%(tenant)s AND subject_id=%(subject)s FOR NO KEY UPDATE),"
    " r AS (INSERT INTO runs(id, subject_pk, status, created_at)"
    f" SELECT %(run)s, pk, 'queued', {NOW} FROM s RETURNING subject_pk, seq),"
    " u AS (UPDATE subjects SET queue_seq=least(queue_seq, r.seq) FROM r WHERE subjects.pk=r.subject_pk)"
    " SELECT r.subject_pk, r.seq, CASE WHEN %(archived)s THEN ARRAY(SELECT p.content FROM passages p"
    f" WHERE p.subject_pk=r.subject_pk ORDER BY p.pk DESC LIMIT {CONTEXT_PASSAGES}) END FROM r"
)
LISTENING_POLL = 5.0  # seconds between two looks at a waited-for run while notifications flow (a safety net)
FALLBACK_POLL = 0.25  # ... and while they do not (the listener is reconnecting)


@guarded
class PostgresStore:
    """Subjects, blocks, versions, messages, runs, passages, traces, sessions and keys in PostgreSQL."""

    def __init__(self, url: str, *, history_limit: int = 100, secure_delete: bool = True, pool_size: int = 16) -> None:
        self.db = Database(url, pool_size=pool_size)
        self.path = self.db.path
        self.tenant = ""
        self.history_limit = history_limit
        self.secure_delete = secure_delete
        self.signals = signals_for(self.path)
        self.listener = listener_for(url, self.path, self.signals)
        self.db.listener = self.listener
        self.queue = PostgresQueue(
            self.db, self.signals, self.listener, history_limit=history_limit, secure_delete=secure_delete
        )
        self.index: PostgresIndex = PgvectorIndex(self.db) if self.db.vectors == "pgvector" else PostgresIndex(self.db)
        self._view = False
        purge(self.db, secure=secure_delete, wait=False)  # a process died before a delete's purge finished

    def scoped(self, tenant: str) -> PostgresStore:
        view = copy.copy(self)
        view.tenant = tenant
        view._view = True
        return view

    def close(self) -> None:
        if self.db.closed or self._view:
            return
        try:  # a purge deferred by other work gets one more (non-blocking) try
            purge(self.db, secure=self.secure_delete, wait=False)
        except Exception as exc:
            log.debug("purge at close deferred: %s", exc)
        release(self.listener)
        self.db.close()

    # -- meta ----------------------------------------------------------------------------------------

    def get_meta(self, key: str) -> str | None:
        with self.db.conn() as conn:
            row = conn.execute("SELECT value FROM meta WHERE key=%s", (key,)).fetchone()
        return row[0] if row else None

    def set_meta(self, key: str, value: str) -> None:
        with self.db.conn() as conn:
            conn.execute(
                "INSERT INTO meta(key, value) VALUES (%s, %s) ON CONFLICT (key) DO UPDATE SET value=excluded.value",
                (key, value),
            )

    # -- subjects ------------------------------------------------------------------------------------

    def agent_id(self, subject_id: str) -> str | None:
        with self.db.conn() as conn:
            row = conn.execute(
                "SELECT agent_id FROM subjects WHERE tenant=%s AND subject_id=%s", (self.tenant, subject_id)
            ).fetchone()
        return row[0] if row else None

    def subject_pk(self, subject_id: str) -> int | None:
        with self.db.conn() as conn:
            return self._pk(conn, subject_id)

    def _pk(self, conn: psycopg.Connection[Any], subject_id: str) -> int | None:
        row = conn.execute(
            "SELECT pk FROM subjects WHERE tenant=%s AND subject_id=%s", (self.tenant, subject_id)
        ).fetchone()
        return int(row[0]) if row else None

    def _ensure(
        self, conn: psycopg.Connection[Any], subject_id: str, blocks: Sequence[BlockSpec] = ()
    ) -> tuple[int, str, bool]:
        """(pk, agent id, created) of the subject, created with ``blocks`` if missing; its row locked."""
        while True:
            row = conn.execute(
                "SELECT pk, agent_id FROM subjects WHERE tenant=%s AND subject_id=%s FOR NO KEY UPDATE",
                (self.tenant, subject_id),
            ).fetchone()
            if row:
                return int(row[0]), str(row[1]), False
            agent_id = new_id("agent")
            row = conn.execute(
                f"INSERT INTO subjects(tenant, subject_id, agent_id, created_at) VALUES (%s, %s, %s, {NOW})"
                " ON CONFLICT (tenant, subject_id) DO NOTHING RETURNING pk",
                (self.tenant, subject_id, agent_id),
            ).fetchone()
            if row:  # else another transaction created it meanwhile: lock theirs
                pk = int(row[0])
                conn.execute("INSERT INTO search_gen(subject_pk) VALUES (%s)", (pk,))
                for spec in blocks:
                    _insert_block(conn, pk, spec)
                return pk, agent_id, True

    def create_subject(self, subject_id: str, *, reset: bool, blocks: Sequence[BlockSpec] = ()) -> str:
        with self.db.tx() as conn:
            row = conn.execute(
                "SELECT agent_id FROM subjects WHERE tenant=%s AND subject_id=%s FOR UPDATE", (self.tenant, subject_id)
            ).fetchone()
            existing = row[0] if row else None
            if existing and not reset:
                raise SubjectExistsError(existing, subject_id)
            if existing:
                self._delete(conn, subject_id)
            _, agent_id, created = self._ensure(conn, subject_id, blocks)
            if not created and not existing:  # created by another process between our look and our insert
                raise SubjectExistsError(agent_id, subject_id)
        if existing:
            purge(self.db, secure=self.secure_delete)
        return agent_id

    def _delete(self, conn: psycopg.Connection[Any], subject_id: str) -> bool:
        row = conn.execute(
            "SELECT pk FROM subjects WHERE tenant=%s AND subject_id=%s FOR UPDATE", (self.tenant, subject_id)
        ).fetchone()
        if row is None:
            return False
        pk = row[0]
        waited = [
            r[0]
            for r in conn.execute("SELECT id FROM runs WHERE subject_pk=%s AND status IN ('queued', 'running')", (pk,))
        ]
        # Children first, so each delete is one indexed pass (cascades would do it row by row).
        conn.execute("DELETE FROM search_gen WHERE subject_pk=%s", (pk,))
        conn.execute("DELETE FROM passage_vectors WHERE subject_pk=%s", (pk,))
        conn.execute("DELETE FROM passages WHERE subject_pk=%s", (pk,))
        conn.execute("DELETE FROM messages WHERE subject_pk=%s", (pk,))
        conn.execute("DELETE FROM traces WHERE subject_pk=%s", (pk,))
        conn.execute("DELETE FROM runs WHERE subject_pk=%s", (pk,))
        conn.execute("DELETE FROM block_versions WHERE block_pk IN (SELECT pk FROM blocks WHERE subject_pk=%s)", (pk,))
        conn.execute("DELETE FROM blocks WHERE subject_pk=%s", (pk,))
        conn.execute(
            "DELETE FROM session_items WHERE session_pk IN (SELECT pk FROM sessions WHERE tenant=%s AND subject_id=%s)",
            (self.tenant, subject_id),
        )
        conn.execute("DELETE FROM sessions WHERE tenant=%s AND subject_id=%s", (self.tenant, subject_id))
        conn.execute("DELETE FROM subjects WHERE pk=%s", (pk,))
        mark_purge(conn, SUBJECT_TABLES)
        if waited:  # their waiters learn at once that the runs are gone
            notify_ended(conn, self.listener.sender, waited)
        return True

    def delete_subject(self, subject_id: str) -> bool:
        with self.db.tx() as conn:
            found = self._delete(conn, subject_id)
        if found:
            self.signals.run_ended()
            purge(self.db, secure=self.secure_delete)
        return found

    def list_subjects(self, *, query: str | None = None, offset: int = 0, limit: int = 50) -> list[SubjectSummary]:
        where, args = self._subject_filter(query)
        with self.db.conn() as conn:
            rows = conn.execute(
                f"SELECT {SUMMARY_COLS} FROM subjects s WHERE {where} ORDER BY s.subject_id LIMIT %s OFFSET %s",
                (*args, limit, offset),
            ).fetchall()
        return [summary_row(r) for r in rows]

    def count_subjects(self, *, query: str | None = None) -> int:
        where, args = self._subject_filter(query)
        with self.db.conn() as conn:
            row = conn.execute(f"SELECT count(*) FROM subjects s WHERE {where}", args).fetchone()
        return int(row[0]) if row else 0

    def _subject_filter(self, query: str | None) -> tuple[str, tuple[Any, ...]]:
        if not query:
            return "s.tenant=%s", (self.tenant,)
        return "s.tenant=%s AND lower(s.subject_id) LIKE %s ESCAPE '\\'", (self.tenant, like_pattern(query))

    # -- blocks --------------------------------------------------------------------------------------

    def _block(self, conn: psycopg.Connection[Any], subject_id: str, label: str, cols: str = "b.pk") -> Any:
        row = conn.execute(
            f"SELECT {cols} FROM blocks b JOIN subjects s ON s.pk=b.subject_pk"
            " WHERE s.tenant=%s AND s.subject_id=%s AND b.label=%s FOR UPDATE OF b",
            (self.tenant, subject_id, label),
        ).fetchone()
        if not row:
            raise BlockNotFoundError(f"subject {subject_id!r} has no block labelled {label!r}")
        return row

    def list_blocks(self, subject_id: str) -> list[Block]:
        with self.db.conn() as conn:
            rows = conn.execute(
                f"SELECT {BLOCK_COLS} FROM blocks b JOIN subjects s ON s.pk=b.subject_pk"
                " WHERE s.tenant=%s AND s.subject_id=%s ORDER BY b.pk",
                (self.tenant, subject_id),
            ).fetchall()
        return [block_row(r) for r in rows]

    def block_text(self, subject_id: str, label: str) -> tuple[str, str] | None:
        with self.db.conn() as conn:
            row = conn.execute(
                "SELECT b.description, b.value FROM blocks b JOIN subjects s ON s.pk=b.subject_pk"
                " WHERE s.tenant=%s AND s.subject_id=%s AND b.label=%s",
                (self.tenant, subject_id, label),
            ).fetchone()
        return (row[0], row[1]) if row else None

    def create_block(self, subject_id: str, spec: BlockSpec, *, reset: bool) -> str:
        with self.db.tx() as conn:
            pk = self._ensure(conn, subject_id)[0]
            row = conn.execute(
                "SELECT pk, id FROM blocks WHERE subject_pk=%s AND label=%s FOR UPDATE", (pk, spec.label)
            ).fetchone()
            if row and not reset:
                return str(row[1])
            if row:
                conn.execute("DELETE FROM block_versions WHERE block_pk=%s", (row[0],))
                conn.execute("DELETE FROM blocks WHERE pk=%s", (row[0],))
            return _insert_block(conn, pk, spec)

    def delete_block(self, subject_id: str, label: str) -> bool:
        with self.db.tx() as conn:
            try:
                (pk,) = self._block(conn, subject_id, label)
            except BlockNotFoundError:
                return False
            conn.execute("DELETE FROM block_versions WHERE block_pk=%s", (pk,))
            conn.execute("DELETE FROM blocks WHERE pk=%s", (pk,))
            return True

    def set_block_value(self, subject_id: str, label: str, value: str) -> None:
        with self.db.tx() as conn:
            pk, limit, old = self._block(conn, subject_id, label, "b.pk, b.char_limit, b.value")
            _validation.block_value(value, limit)
            if old != value:
                write_value(conn, pk, value, None, self.history_limit)

    def block_history(self, subject_id: str, label: str) -> list[BlockVersion]:
        with self.db.read() as conn:
            row = conn.execute(
                "SELECT b.pk FROM blocks b JOIN subjects s ON s.pk=b.subject_pk"
                " WHERE s.tenant=%s AND s.subject_id=%s AND b.label=%s",
                (self.tenant, subject_id, label),
            ).fetchone()
            if not row:
                raise BlockNotFoundError(f"subject {subject_id!r} has no block labelled {label!r}")
            rows = conn.execute(
                f"SELECT {VERSION_COLS} FROM block_versions WHERE block_pk=%s ORDER BY version", (row[0],)
            ).fetchall()
        return [version_row(r) for r in rows]

    def restore_block(self, subject_id: str, label: str, version: int) -> str:
        with self.db.tx() as conn:
            pk, limit = self._block(conn, subject_id, label, "b.pk, b.char_limit")
            old = conn.execute(
                "SELECT value FROM block_versions WHERE block_pk=%s AND version=%s", (pk, version)
            ).fetchone()
            if not old:
                raise BlockNotFoundError(f"block {label!r} of subject {subject_id!r} has no version {version}")
            _validation.block_value(old[0], limit, f"version {version}")
            write_value(conn, pk, old[0], None, self.history_limit)
            return str(old[0])

    # -- messages and runs ---------------------------------------------------------------------------

    def enqueue(
        self,
        subject_id: str,
        messages: Sequence[MessageIn],
        *,
        passages: Sequence[str | None],
        default_blocks: Sequence[BlockSpec] = (),
    ) -> str:
        """Two round trips: the run with the subject's lock and the context passages; then the rows and the commit.

        Both are pipelined (psycopg sends a transaction's statements without
        waiting for each answer), so an enqueue costs about what a plain
        INSERT transaction of the same rows does.
        """
        run_id = new_id("run")
        archived = [t for t in passages if t is not None]
        with self.db.conn() as conn:
            try:
                self._enqueue(conn, run_id, subject_id, messages, passages, default_blocks, bool(archived))
            except BaseException:
                if conn.info.transaction_status == psycopg.pq.TransactionStatus.INERROR:
                    conn.execute("ROLLBACK")  # the pipeline's BEGIN is ours to end; the pool gets an idle connection
                raise
        self.signals.work_queued()
        return run_id

    def _enqueue(
        self,
        conn: psycopg.Connection[Any],
        run_id: str,
        subject_id: str,
        messages: Sequence[MessageIn],
        passages: Sequence[str | None],
        default_blocks: Sequence[BlockSpec],
        archived: bool,
    ) -> None:
        # BEGIN and COMMIT as statements of the pipeline: a psycopg transaction block would add a sync each.
        with conn.pipeline():
            conn.execute("BEGIN")
            args = {"tenant": self.tenant, "subject": subject_id, "run": run_id, "archived": archived}
            row = conn.execute(_ENQUEUE, args).fetchone()
            if row is None:  # a new subject: created, locked, then the same statement
                self._ensure(conn, subject_id, default_blocks)
                row = conn.execute(_ENQUEUE, args).fetchone()
            assert row is not None
            pk, run_seq, newest = row
            previous: list[str] = list(reversed(newest or []))
            rows: list[tuple[Any, ...]] = []
            tokens = 0
            for msg, text in zip(messages, passages):
                context = tags = None
                count = 0
                if text is not None:
                    context = passage_context(msg.created_at, previous)
                    tags = passage_tags(msg)
                    count = token_count(text) + token_count(context)
                    tokens += count
                    previous = [*previous, text][-CONTEXT_PASSAGES:]
                created = msg.created_at.timestamp()
                rows.append(
                    (
                        new_id("msg"),
                        pk,
                        run_seq,
                        msg.role,
                        msg.content,
                        msg.name,
                        dumps(msg.metadata) if msg.metadata else None,
                        created,
                        pk,
                        text,
                        context,
                        msg.role,
                        tags,
                        created,
                        count,
                        text,
                    )
                )
            conn.cursor().executemany(
                "WITH m AS (INSERT INTO messages(id, subject_pk, run_seq, role, content, name, metadata, created_at)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s, %s) RETURNING seq)"
                " INSERT INTO passages(subject_pk, message_seq, content, context, role, tags, created_at, tokens)"
                " SELECT %s, m.seq, %s, %s, %s, %s, %s, %s FROM m WHERE %s::text IS NOT NULL",
                rows,
            )
            conn.execute(
                "WITH g AS (UPDATE search_gen SET added=added+1, passages=passages+%s, tokens=tokens+%s"
                " WHERE subject_pk=%s AND %s) SELECT pg_notify(%s, %s)",
                (sum(t is not None for t in passages), tokens, pk, archived, WORK_CHANNEL, self.listener.sender),
            )
            conn.execute("COMMIT")

    def consolidate(self, subject_id: str) -> str:
        run_id = new_id("run")
        with self.db.tx() as conn:
            row = conn.execute(
                "SELECT pk FROM subjects WHERE tenant=%s AND subject_id=%s FOR NO KEY UPDATE",
                (self.tenant, subject_id),
            ).fetchone()
            if row is None:
                raise SubjectNotFoundError(f"subject {subject_id!r} not found")
            conn.execute(
                "WITH r AS (INSERT INTO runs(id, subject_pk, status, created_at, kind)"
                f" VALUES (%s, %s, 'queued', {NOW}, 'consolidate') RETURNING seq)"
                " UPDATE subjects SET queue_seq=least(queue_seq, (SELECT seq FROM r)) WHERE pk=%s",
                (run_id, row[0], row[0]),
            )
            notify_work(conn, self.listener.sender)
        self.signals.work_queued()
        return run_id

    def get_run(self, run_id: str) -> Run | None:
        with self.db.conn() as conn:
            row = conn.execute(
                f"SELECT {RUN_COLS} FROM runs r JOIN subjects s ON s.pk=r.subject_pk WHERE r.id=%s AND s.tenant=%s",
                (run_id, self.tenant),
            ).fetchone()
        return run_row(row) if row else None

    def list_runs(self, subject_id: str, status: str | None = None) -> list[Run]:
        query = (
            f"SELECT {RUN_COLS} FROM runs r JOIN subjects s ON s.pk=r.subject_pk WHERE s.tenant=%s AND s.subject_id=%s"
        )
        args: list[Any] = [self.tenant, subject_id]
        if status is not None:
            query += " AND r.status=%s"
            args.append(status)
        with self.db.conn() as conn:
            rows = conn.execute(query + " ORDER BY r.seq", args).fetchall()
        return [run_row(r) for r in rows]

    def _locked_run(self, conn: psycopg.Connection[Any], run_id: str) -> tuple[int, str]:
        """(subject pk, status) of a run of this tenant, its subject's row locked; RunNotFoundError if none."""
        for _ in range(3):
            row = conn.execute(
                "SELECT r.subject_pk FROM runs r JOIN subjects s ON s.pk=r.subject_pk WHERE r.id=%s AND s.tenant=%s",
                (run_id, self.tenant),
            ).fetchone()
            if not row:
                break
            if lock_subject(conn, row[0]):
                status = conn.execute("SELECT status FROM runs WHERE id=%s", (run_id,)).fetchone()
                if status:
                    return int(row[0]), str(status[0])
        raise RunNotFoundError(f"Run {run_id} not found")

    def cancel_run(self, run_id: str) -> Run:
        with self.db.tx() as conn:
            pk, status = self._locked_run(conn, run_id)
            if status != "queued":
                raise RunStateError(f"Run {run_id} is {status}; only a queued run can be cancelled")
            conn.execute(f"UPDATE runs SET status='cancelled', finished_at={NOW} WHERE id=%s", (run_id,))
            sync(conn, pk)
            notify_ended(conn, self.listener.sender, [run_id])
        self.signals.run_ended([run_id])
        return self.get_run(run_id)  # type: ignore[return-value]

    def retry_run(self, run_id: str) -> Run:
        with self.db.tx() as conn:
            pk, status = self._locked_run(conn, run_id)
            if status != "failed":
                raise RunStateError(f"Run {run_id} is {status}; only a failed run can be retried")
            conn.execute(
                "UPDATE runs SET status='queued', error=NULL, stop_reason=NULL, started_at=NULL, finished_at=NULL,"
                " attempts=0, claim_id=NULL, lease_owner=NULL, lease_expires=NULL WHERE id=%s",
                (run_id,),
            )
            sync(conn, pk)
            notify_work(conn, self.listener.sender)
        self.signals.work_queued()
        return self.get_run(run_id)  # type: ignore[return-value]

    @waits
    def wait_for_run(self, run_id: str, timeout: float | None) -> Run:
        """Woken by this process's completions at once and by other machines' through notifications.

        The run is read again only when a run ended that may be this one (or,
        as a safety net, every ``LISTENING_POLL`` seconds; ``FALLBACK_POLL``
        while notifications are interrupted).
        """
        self.listener.ensure()
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            seen = self.signals.generation
            run = self.get_run(run_id)
            if run is None:
                raise RunNotFoundError(f"Run {run_id} not found")
            if run.status in TERMINAL_STATUSES:
                return run
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise TimeoutError(f"Run {run_id} did not complete within {timeout:g} seconds")
            poll = LISTENING_POLL if self.listener.up else FALLBACK_POLL
            self.signals.wait_run(seen, poll if remaining is None else min(poll, remaining), run_id)

    def get_messages(
        self,
        subject_id: str,
        *,
        limit: int | None = None,
        before: datetime | None = None,
        after: datetime | None = None,
    ) -> list[StoredMessage]:
        query = (
            f"SELECT {MSG_COLS} FROM messages m JOIN subjects s ON s.pk=m.subject_pk"
            " LEFT JOIN runs r ON r.seq=m.run_seq WHERE s.tenant=%s AND s.subject_id=%s"
        )
        args: list[Any] = [self.tenant, subject_id]
        if before is not None:
            query += " AND m.created_at<%s"
            args.append(before.timestamp())
        if after is not None:
            query += " AND m.created_at>%s"
            args.append(after.timestamp())
        with self.db.conn() as conn:
            if limit is not None:
                rows = conn.execute(
                    query + " ORDER BY m.created_at DESC, m.seq DESC LIMIT %s", (*args, limit)
                ).fetchall()
                rows.reverse()
            else:
                rows = conn.execute(query + " ORDER BY m.created_at, m.seq", args).fetchall()
        return [message_row(r) for r in rows]

    def run_messages(self, run_id: str) -> list[StoredMessage]:
        with self.db.conn() as conn:
            rows = conn.execute(
                f"SELECT {MSG_COLS} FROM messages m JOIN runs r ON r.seq=m.run_seq JOIN subjects s"
                " ON s.pk=r.subject_pk WHERE r.id=%s AND s.tenant=%s ORDER BY m.seq",
                (run_id, self.tenant),
            ).fetchall()
        return [message_row(r) for r in rows]

    def delete_message(self, message_id: str) -> bool:
        with self.db.tx() as conn:
            row = conn.execute(
                "SELECT m.seq, m.subject_pk FROM messages m JOIN subjects s ON s.pk=m.subject_pk"
                " WHERE m.id=%s AND s.tenant=%s",
                (message_id, self.tenant),
            ).fetchone()
            if not row or not lock_subject(conn, row[1]):
                return False
            seq, subject_pk = row
            conn.execute("SELECT 1 FROM search_gen WHERE subject_pk=%s FOR UPDATE", (subject_pk,))
            conn.execute(
                "DELETE FROM passage_vectors WHERE passage_pk IN (SELECT pk FROM passages WHERE message_seq=%s)", (seq,)
            )
            gone = conn.execute("DELETE FROM passages WHERE message_seq=%s RETURNING pk, tokens", (seq,)).fetchall()
            tokens = -sum(r[1] for r in gone)
            for pk, _ in gone:
                tokens += _rewrite_contexts(conn, subject_pk, pk)
            if gone:
                conn.execute(
                    "UPDATE search_gen SET removed=removed+1, passages=passages-%s, tokens=tokens+%s WHERE subject_pk=%s",
                    (len(gone), tokens, subject_pk),
                )
            conn.execute("DELETE FROM messages WHERE seq=%s", (seq,))
            mark_purge(conn, MESSAGE_TABLES)
        purge(self.db, secure=self.secure_delete)
        return True

    def get_trace(self, run_id: str) -> dict[str, Any] | None:
        with self.db.conn() as conn:
            row = conn.execute(
                "SELECT t.trace FROM runs r JOIN subjects s ON s.pk=r.subject_pk JOIN traces t ON t.claim_id=r.claim_id"
                " WHERE r.id=%s AND s.tenant=%s",
                (run_id, self.tenant),
            ).fetchone()
        if not row:
            return None
        trace: dict[str, Any] = json.loads(row[0])
        return trace

    # -- sessions ------------------------------------------------------------------------------------

    def _session_pk(self, conn: psycopg.Connection[Any], session_id: str, *, lock: bool = False) -> int | None:
        row = conn.execute(
            "SELECT pk FROM sessions WHERE tenant=%s AND session_id=%s" + (" FOR UPDATE" if lock else ""),
            (self.tenant, session_id),
        ).fetchone()
        return int(row[0]) if row else None

    def session_items(self, session_id: str, limit: int | None = None) -> list[dict[str, Any]]:
        with self.db.read() as conn:
            pk = self._session_pk(conn, session_id)
            if pk is None:
                return []
            if limit is None:
                rows = conn.execute("SELECT item FROM session_items WHERE session_pk=%s ORDER BY seq", (pk,)).fetchall()
            else:
                rows = conn.execute(
                    "SELECT item FROM session_items WHERE session_pk=%s ORDER BY seq DESC LIMIT %s", (pk, limit)
                ).fetchall()[::-1]
        return [json.loads(r[0]) for r in rows]

    def add_session_items(self, session_id: str, items: Sequence[dict[str, Any]], *, subject_id: str) -> None:
        with self.db.tx() as conn:
            conn.execute(
                f"INSERT INTO sessions(tenant, session_id, subject_id, created_at) VALUES (%s, %s, %s, {NOW})"
                " ON CONFLICT (tenant, session_id) DO NOTHING",
                (self.tenant, session_id, subject_id),
            )
            pk = self._session_pk(conn, session_id, lock=True)  # one writer of a session at a time
            conn.cursor().executemany(
                f"INSERT INTO session_items(session_pk, item, created_at) VALUES (%s, %s, {NOW})",
                [(pk, dumps(item)) for item in items],
            )

    def pop_session_item(self, session_id: str) -> dict[str, Any] | None:
        with self.db.tx() as conn:
            pk = self._session_pk(conn, session_id, lock=True)
            row = (
                conn.execute(
                    "DELETE FROM session_items WHERE seq=(SELECT max(seq) FROM session_items WHERE session_pk=%s)"
                    " RETURNING item",
                    (pk,),
                ).fetchone()
                if pk is not None
                else None
            )
        if row is None:
            return None
        item: dict[str, Any] = json.loads(row[0])
        return item

    def clear_session(self, session_id: str) -> None:
        with self.db.tx() as conn:
            pk = self._session_pk(conn, session_id, lock=True)
            if pk is not None:
                conn.execute("DELETE FROM session_items WHERE session_pk=%s", (pk,))
                conn.execute("DELETE FROM sessions WHERE pk=%s", (pk,))
                mark_purge(conn, SESSION_TABLES)
        purge(self.db, secure=self.secure_delete, wait=False)

    def unfinished_runs(self, run_ids: Sequence[str]) -> set[str]:
        if not run_ids:
            return set()
        with self.db.conn() as conn:
            rows = conn.execute(
                "SELECT id FROM runs WHERE status IN ('queued', 'running') AND id = ANY(%s)", (list(run_ids),)
            ).fetchall()
        return {r[0] for r in rows}

    def run_totals(self) -> dict[str, RunTotals]:
        with self.db.conn() as conn:
            rows = conn.execute(
                "SELECT status, count(*), coalesce(sum(llm_calls), 0), coalesce(sum(prompt_tokens), 0),"
                " coalesce(sum(completion_tokens), 0) FROM runs GROUP BY status"
            ).fetchall()
        return {r[0]: RunTotals(int(r[1]), int(r[2]), int(r[3]), int(r[4])) for r in rows}

    # -- API keys ------------------------------------------------------------------------------------

    def create_key(self, name: str, key_hash: str) -> None:
        try:
            with self.db.conn() as conn:
                conn.execute(
                    f"INSERT INTO api_keys(name, key_hash, created_at) VALUES (%s, %s, {NOW})", (name, key_hash)
                )
        except psycopg.errors.UniqueViolation:
            raise ValueError(f"an active key named {name!r} exists; revoke it first") from None

    def list_keys(self) -> list[ApiKey]:
        with self.db.conn() as conn:
            rows = conn.execute("SELECT name, created_at, revoked_at FROM api_keys ORDER BY pk").fetchall()
        return [ApiKey(name=r[0], created_at=utc(r[1]), revoked_at=maybe_utc(r[2])) for r in rows]

    def revoke_key(self, name: str) -> bool:
        with self.db.conn() as conn:
            return (
                conn.execute(
                    f"UPDATE api_keys SET revoked_at={NOW} WHERE name=%s AND revoked_at IS NULL", (name,)
                ).rowcount
                > 0
            )

    def key_tenant(self, key_hash: str) -> str | None:
        with self.db.conn() as conn:
            row = conn.execute(
                "SELECT name FROM api_keys WHERE key_hash=%s AND revoked_at IS NULL", (key_hash,)
            ).fetchone()
        return row[0] if row else None


def _insert_block(conn: psycopg.Connection[Any], subject_pk: int, spec: BlockSpec) -> str:
    block_id = new_id("block")
    row = conn.execute(
        "INSERT INTO blocks(id, subject_pk, label, description, value, char_limit, version, created_at, updated_at)"
        f" VALUES (%s, %s, %s, %s, %s, %s, 1, {NOW}, {NOW}) RETURNING pk",
        (block_id, subject_pk, spec.label, spec.description, spec.value, spec.limit),
    ).fetchone()
    assert row is not None
    conn.execute(
        f"INSERT INTO block_versions(block_pk, version, value, run_id, created_at) VALUES (%s, 1, %s, NULL, {NOW})",
        (row[0], spec.value),
    )
    return block_id


def _rewrite_contexts(conn: psycopg.Connection[Any], subject_pk: int, deleted_pk: int) -> int:
    """Rebuild the context of the passages that held a deleted passage's text; returns the change of tokens."""
    delta = 0
    for pk, created, content, tokens in conn.execute(
        "SELECT pk, created_at, content, tokens FROM passages WHERE subject_pk=%s AND pk>%s ORDER BY pk LIMIT %s",
        (subject_pk, deleted_pk, CONTEXT_PASSAGES),
    ).fetchall():
        previous = [
            r[0]
            for r in conn.execute(
                "SELECT content FROM passages WHERE subject_pk=%s AND pk<%s ORDER BY pk DESC LIMIT %s",
                (subject_pk, pk, CONTEXT_PASSAGES),
            )
        ][::-1]
        context = passage_context(utc(created), previous)
        count = token_count(content) + token_count(context)
        conn.execute("UPDATE passages SET context=%s, tokens=%s WHERE pk=%s", (context, count, pk))
        delta += count - tokens
    return delta
