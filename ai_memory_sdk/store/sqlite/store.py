"""``SQLiteStore``: the ``store.base.Store`` of the embedded engine, in one SQLite file.

Every write is one short transaction (``_db``); the queue (``queue.py``) and
the passage index (``index.py``) share its connections, and erasure
(``erasure.py``) runs after each delete.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import sqlite3
import time
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from ... import _validation
from ..._fork import gate
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
from ..recipe import CONTEXT_PASSAGES, passage_context
from ._db import Database, guarded, waits
from .erasure import mark_purge, next_pk, purge, raise_floor
from .index import SQLiteIndex
from .queue import SQLiteQueue, write_value

log = logging.getLogger(__name__)

_TEXTS_MAX = 4096
_INSERT_MESSAGE = (
    "INSERT INTO messages(id, subject_pk, run_seq, role, content, name, metadata, created_at)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)  # block texts cached between two commits to the file


class _Texts:
    """``block_text`` answers as of one change stamp of the file (any commit, by anyone, starts a new dict)."""

    _NONE = (0, -1, -1)  # no connection's stamp

    def __init__(self) -> None:
        self.current: tuple[tuple[int, int, int], dict[tuple[str, str, str], tuple[str, str] | None]] = (self._NONE, {})

    def clear(self) -> None:
        self.current = (self._NONE, {})


@guarded
class SQLiteStore:
    """Subjects, blocks, versions, messages, runs, passages, traces, sessions and keys in one SQLite file."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        history_limit: int = 100,
        busy_timeout: float = 60.0,
        secure_delete: bool = True,
    ) -> None:
        self.path = os.path.abspath(os.path.expanduser(os.fspath(path)))
        self.tenant = ""
        self.history_limit = history_limit
        self.db = Database(self.path, busy_timeout=busy_timeout, secure_delete=secure_delete)
        self.signals = signals_for(self.path)
        self.queue = SQLiteQueue(self.db, self.signals, history_limit=history_limit)
        self.index = SQLiteIndex(self.db)
        self._texts = _Texts()  # shared by the scoped views (their keys hold the tenant)
        purge(self.db, wait=False)  # a process died, or a reader blocked it, before a delete's purge finished

    def scoped(self, tenant: str) -> SQLiteStore:
        view = copy.copy(self)
        view.tenant = tenant
        return view

    def close(self) -> None:
        if self.db.closed:
            return
        try:  # a purge deferred by a reader gets one more (non-blocking) try
            purge(self.db, wait=False)
        except sqlite3.Error as exc:
            log.debug("purge at close deferred: %s", exc)
        self.db.close()

    # -- meta ----------------------------------------------------------------------------------------

    def get_meta(self, key: str) -> str | None:
        row = self.db.conn().execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return row[0] if row else None

    def set_meta(self, key: str, value: str) -> None:
        with self.db.tx() as conn:
            conn.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", (key, value))

    # -- subjects ------------------------------------------------------------------------------------

    def agent_id(self, subject_id: str) -> str | None:
        row = (
            self.db.conn()
            .execute("SELECT agent_id FROM subjects WHERE tenant=? AND subject_id=?", (self.tenant, subject_id))
            .fetchone()
        )
        return row[0] if row else None

    def subject_pk(self, subject_id: str) -> int | None:
        return self._pk(self.db.conn(), subject_id)

    def _pk(self, conn: sqlite3.Connection, subject_id: str) -> int | None:
        row = conn.execute(
            "SELECT pk FROM subjects WHERE tenant=? AND subject_id=?", (self.tenant, subject_id)
        ).fetchone()
        return row[0] if row else None

    def _ensure(self, conn: sqlite3.Connection, subject_id: str, blocks: Sequence[BlockSpec] = ()) -> tuple[int, str]:
        row = conn.execute(
            "SELECT pk, agent_id FROM subjects WHERE tenant=? AND subject_id=?", (self.tenant, subject_id)
        ).fetchone()
        if row:
            return row[0], row[1]
        agent_id = new_id("agent")
        pk = next_pk(conn, "subjects")
        conn.execute(
            "INSERT INTO subjects(pk, tenant, subject_id, agent_id, created_at) VALUES (?, ?, ?, ?, ?)",
            (pk, self.tenant, subject_id, agent_id, time.time()),
        )
        for spec in blocks:
            _insert_block(conn, pk, spec)
        return pk, agent_id

    def create_subject(self, subject_id: str, *, reset: bool, blocks: Sequence[BlockSpec] = ()) -> str:
        with self.db.tx() as conn:
            row = conn.execute(
                "SELECT agent_id FROM subjects WHERE tenant=? AND subject_id=?", (self.tenant, subject_id)
            ).fetchone()
            existing = row[0] if row else None
            if existing and not reset:
                raise SubjectExistsError(existing, subject_id)
            if existing:
                self._delete(conn, subject_id)
            agent_id = self._ensure(conn, subject_id, blocks)[1]
        if existing:
            purge(self.db)
        return agent_id

    def _delete(self, conn: sqlite3.Connection, subject_id: str) -> bool:
        pk = self._pk(conn, subject_id)
        if pk is None:
            return False
        raise_floor(conn, "subjects")
        raise_floor(conn, "passages")
        # Children first, so each delete is one indexed pass (cascades would do it row by row).
        conn.execute("DELETE FROM passage_vectors WHERE subject_pk=?", (pk,))
        conn.execute("DELETE FROM passages WHERE subject_pk=?", (pk,))
        conn.execute("DELETE FROM messages WHERE subject_pk=?", (pk,))
        conn.execute("DELETE FROM traces WHERE subject_pk=?", (pk,))
        conn.execute("DELETE FROM runs WHERE subject_pk=?", (pk,))
        conn.execute("DELETE FROM block_versions WHERE block_pk IN (SELECT pk FROM blocks WHERE subject_pk=?)", (pk,))
        conn.execute("DELETE FROM blocks WHERE subject_pk=?", (pk,))
        conn.execute(
            "DELETE FROM session_items WHERE session_pk IN (SELECT pk FROM sessions WHERE tenant=? AND subject_id=?)",
            (self.tenant, subject_id),
        )
        conn.execute("DELETE FROM sessions WHERE tenant=? AND subject_id=?", (self.tenant, subject_id))
        conn.execute("DELETE FROM subjects WHERE pk=?", (pk,))
        mark_purge(conn)
        self._texts.clear()  # no deleted text stays in this process's memory
        return True

    def delete_subject(self, subject_id: str) -> bool:
        with self.db.tx() as conn:
            found = self._delete(conn, subject_id)
        if found:
            purge(self.db)
        return found

    def list_subjects(self, *, query: str | None = None, offset: int = 0, limit: int = 50) -> list[SubjectSummary]:
        where, args = self._subject_filter(query)
        rows = self.db.conn().execute(
            f"SELECT {SUMMARY_COLS} FROM subjects s WHERE {where} ORDER BY s.subject_id LIMIT ? OFFSET ?",
            (*args, limit, offset),
        )
        return [summary_row(r) for r in rows]

    def count_subjects(self, *, query: str | None = None) -> int:
        where, args = self._subject_filter(query)
        return int(self.db.conn().execute(f"SELECT count(*) FROM subjects s WHERE {where}", args).fetchone()[0])

    def _subject_filter(self, query: str | None) -> tuple[str, tuple[Any, ...]]:
        if not query:
            return "s.tenant=?", (self.tenant,)
        return "s.tenant=? AND lower(s.subject_id) LIKE ? ESCAPE '\\'", (self.tenant, like_pattern(query))

    # -- blocks --------------------------------------------------------------------------------------

    def _block_pk(self, conn: sqlite3.Connection, subject_id: str, label: str, cols: str = "b.pk") -> Any:
        row = conn.execute(
            f"SELECT {cols} FROM blocks b JOIN subjects s ON s.pk=b.subject_pk"
            " WHERE s.tenant=? AND s.subject_id=? AND b.label=?",
            (self.tenant, subject_id, label),
        ).fetchone()
        if not row:
            raise BlockNotFoundError(f"subject {subject_id!r} has no block labelled {label!r}")
        return row

    def list_blocks(self, subject_id: str) -> list[Block]:
        rows = self.db.conn().execute(
            f"SELECT {BLOCK_COLS} FROM blocks b JOIN subjects s ON s.pk=b.subject_pk"
            " WHERE s.tenant=? AND s.subject_id=? ORDER BY b.pk",
            (self.tenant, subject_id),
        )
        return [block_row(r) for r in rows]

    @waits  # a cache hit makes no SQLite call; the query enters the gate itself
    def block_text(self, subject_id: str, label: str) -> tuple[str, str] | None:
        """(description, value) of a block, cached until the next commit to the file by any process.

        The stamp is read before the query, so what is cached under it is at
        least as new as it; a commit anywhere changes the stamp (``Database.change_stamp``).
        """
        stamp = self.db.change_stamp()
        key = (self.tenant, subject_id, label)
        texts = None
        if stamp is not None:
            seen, texts = self._texts.current
            if seen == stamp:
                hit = texts.get(key, key)
                if hit is not key:
                    return hit  # type: ignore[return-value]
            else:
                texts = {}
                self._texts.current = (stamp, texts)
        with gate:
            conn = self.db.conn()
            row = conn.execute(
                "SELECT b.description, b.value FROM blocks b JOIN subjects s ON s.pk=b.subject_pk"
                " WHERE s.tenant=? AND s.subject_id=? AND b.label=?",
                key,
            ).fetchone()
            fresh = not conn.in_transaction  # a transaction's snapshot may be older than the stamp
        text = (row[0], row[1]) if row else None
        if texts is not None and fresh and len(texts) < _TEXTS_MAX:
            texts[key] = text
        return text

    def create_block(self, subject_id: str, spec: BlockSpec, *, reset: bool) -> str:
        with self.db.tx() as conn:
            pk = self._ensure(conn, subject_id)[0]
            row = conn.execute("SELECT pk, id FROM blocks WHERE subject_pk=? AND label=?", (pk, spec.label)).fetchone()
            if row and not reset:
                return str(row[1])
            if row:
                conn.execute("DELETE FROM block_versions WHERE block_pk=?", (row[0],))
                conn.execute("DELETE FROM blocks WHERE pk=?", (row[0],))
            return _insert_block(conn, pk, spec)

    def delete_block(self, subject_id: str, label: str) -> bool:
        with self.db.tx() as conn:
            try:
                (pk,) = self._block_pk(conn, subject_id, label)
            except BlockNotFoundError:
                return False
            conn.execute("DELETE FROM block_versions WHERE block_pk=?", (pk,))
            conn.execute("DELETE FROM blocks WHERE pk=?", (pk,))
        self._texts.clear()
        return True

    def set_block_value(self, subject_id: str, label: str, value: str) -> None:
        with self.db.tx() as conn:
            pk, limit, old = self._block_pk(conn, subject_id, label, "b.pk, b.char_limit, b.value")
            _validation.block_value(value, limit)
            if old != value:
                write_value(conn, pk, value, None, time.time(), self.history_limit)

    def block_history(self, subject_id: str, label: str) -> list[BlockVersion]:
        conn = self.db.conn()
        (pk,) = self._block_pk(conn, subject_id, label)
        rows = conn.execute(f"SELECT {VERSION_COLS} FROM block_versions WHERE block_pk=? ORDER BY version", (pk,))
        return [version_row(r) for r in rows]

    def restore_block(self, subject_id: str, label: str, version: int) -> str:
        with self.db.tx() as conn:
            pk, limit = self._block_pk(conn, subject_id, label, "b.pk, b.char_limit")
            old = conn.execute(
                "SELECT value FROM block_versions WHERE block_pk=? AND version=?", (pk, version)
            ).fetchone()
            if not old:
                raise BlockNotFoundError(f"block {label!r} of subject {subject_id!r} has no version {version}")
            _validation.block_value(old[0], limit, f"version {version}")
            write_value(conn, pk, old[0], None, time.time(), self.history_limit)
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
        run_id = new_id("run")
        now = time.time()
        with self.db.tx() as conn:
            pk = self._ensure(conn, subject_id, default_blocks)[0]
            run_seq = conn.execute(
                "INSERT INTO runs(id, subject_pk, status, created_at) VALUES (?, ?, 'queued', ?)", (run_id, pk, now)
            ).lastrowid
            passage_pk = next_pk(conn, "passages") if any(t is not None for t in passages) else 0
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
            rows = [
                (
                    new_id("msg"),
                    pk,
                    run_seq,
                    msg.role,
                    msg.content,
                    msg.name,
                    dumps(msg.metadata) if msg.metadata else None,
                    msg.created_at.timestamp(),
                )
                for msg in messages
            ]
            if not passage_pk:  # nothing to archive: one statement for the batch
                conn.executemany(_INSERT_MESSAGE, rows)
            else:
                for row, msg, text in zip(rows, messages, passages):
                    seq = conn.execute(_INSERT_MESSAGE, row).lastrowid
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
                                passage_tags(msg),
                                row[7],
                            ),
                        )
                        passage_pk += 1
                        previous = [*previous, text][-CONTEXT_PASSAGES:]
        self.signals.work_queued()
        return run_id

    def consolidate(self, subject_id: str) -> str:
        run_id = new_id("run")
        with self.db.tx() as conn:
            pk = self._pk(conn, subject_id)
            if pk is None:
                raise SubjectNotFoundError(f"subject {subject_id!r} not found")
            conn.execute(
                "INSERT INTO runs(id, subject_pk, status, created_at, kind) VALUES (?, ?, 'queued', ?, 'consolidate')",
                (run_id, pk, time.time()),
            )
        self.signals.work_queued()
        return run_id

    def get_run(self, run_id: str) -> Run | None:
        row = (
            self.db.conn()
            .execute(
                f"SELECT {RUN_COLS} FROM runs r JOIN subjects s ON s.pk=r.subject_pk WHERE r.id=? AND s.tenant=?",
                (run_id, self.tenant),
            )
            .fetchone()
        )
        return run_row(row) if row else None

    def list_runs(self, subject_id: str, status: str | None = None) -> list[Run]:
        sql = f"SELECT {RUN_COLS} FROM runs r JOIN subjects s ON s.pk=r.subject_pk WHERE s.tenant=? AND s.subject_id=?"
        args: list[Any] = [self.tenant, subject_id]
        if status is not None:
            sql += " AND r.status=?"
            args.append(status)
        return [run_row(r) for r in self.db.conn().execute(sql + " ORDER BY r.seq", args)]

    def _run_status(self, conn: sqlite3.Connection, run_id: str) -> str:
        row = conn.execute(
            "SELECT r.status FROM runs r JOIN subjects s ON s.pk=r.subject_pk WHERE r.id=? AND s.tenant=?",
            (run_id, self.tenant),
        ).fetchone()
        if not row:
            raise RunNotFoundError(f"Run {run_id} not found")
        return str(row[0])

    def cancel_run(self, run_id: str) -> Run:
        with self.db.tx() as conn:
            status = self._run_status(conn, run_id)
            if status != "queued":
                raise RunStateError(f"Run {run_id} is {status}; only a queued run can be cancelled")
            conn.execute("UPDATE runs SET status='cancelled', finished_at=? WHERE id=?", (time.time(), run_id))
        self.signals.run_ended()
        return self.get_run(run_id)  # type: ignore[return-value]

    def retry_run(self, run_id: str) -> Run:
        with self.db.tx() as conn:
            status = self._run_status(conn, run_id)
            if status != "failed":
                raise RunStateError(f"Run {run_id} is {status}; only a failed run can be retried")
            conn.execute(
                "UPDATE runs SET status='queued', error=NULL, stop_reason=NULL, started_at=NULL, finished_at=NULL,"
                " attempts=0, claim_id=NULL, lease_owner=NULL, lease_expires=NULL WHERE id=?",
                (run_id,),
            )
        self.signals.work_queued()
        return self.get_run(run_id)  # type: ignore[return-value]

    @waits
    def wait_for_run(self, run_id: str, timeout: float | None) -> Run:
        """In-process completions wake it at once; another process's are seen by polling with backoff.

        A poll reads the run again only when the file changed since the last
        read (``Database.change_stamp``): waiting costs no query, and no
        time taken from the worker threads the wait is for.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        delay = 0.002
        read_at: tuple[int, int, int] | None = None
        while True:
            seen = self.signals.generation
            stamp = self.db.change_stamp()
            if stamp is None or stamp != read_at:
                read_at = stamp
                run = self.get_run(run_id)
                if run is None:
                    raise RunNotFoundError(f"Run {run_id} not found")
                if run.status in TERMINAL_STATUSES:
                    return run
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise TimeoutError(f"Run {run_id} did not complete within {timeout:g} seconds")
            self.signals.wait_run(seen, delay if remaining is None else min(delay, remaining))
            delay = min(delay * 2, 0.05)

    def get_messages(
        self,
        subject_id: str,
        *,
        limit: int | None = None,
        before: datetime | None = None,
        after: datetime | None = None,
    ) -> list[StoredMessage]:
        sql = (
            f"SELECT {MSG_COLS} FROM messages m JOIN subjects s ON s.pk=m.subject_pk"
            " LEFT JOIN runs r ON r.seq=m.run_seq WHERE s.tenant=? AND s.subject_id=?"
        )
        args: list[Any] = [self.tenant, subject_id]
        if before is not None:
            sql += " AND m.created_at<?"
            args.append(before.timestamp())
        if after is not None:
            sql += " AND m.created_at>?"
            args.append(after.timestamp())
        conn = self.db.conn()
        if limit is not None:
            rows = conn.execute(sql + " ORDER BY m.created_at DESC, m.seq DESC LIMIT ?", (*args, limit)).fetchall()
            rows.reverse()
        else:
            rows = conn.execute(sql + " ORDER BY m.created_at, m.seq", args).fetchall()
        return [message_row(r) for r in rows]

    def run_messages(self, run_id: str) -> list[StoredMessage]:
        rows = self.db.conn().execute(
            f"SELECT {MSG_COLS} FROM messages m JOIN runs r ON r.seq=m.run_seq JOIN subjects s ON s.pk=r.subject_pk"
            " WHERE r.id=? AND s.tenant=? ORDER BY m.seq",
            (run_id, self.tenant),
        )
        return [message_row(r) for r in rows]

    def delete_message(self, message_id: str) -> bool:
        with self.db.tx() as conn:
            row = conn.execute(
                "SELECT m.seq FROM messages m JOIN subjects s ON s.pk=m.subject_pk WHERE m.id=? AND s.tenant=?",
                (message_id, self.tenant),
            ).fetchone()
            if not row:
                return False
            raise_floor(conn, "passages")
            gone = conn.execute("SELECT subject_pk, pk FROM passages WHERE message_seq=?", (row[0],)).fetchall()
            conn.execute(
                "DELETE FROM passage_vectors WHERE passage_pk IN (SELECT pk FROM passages WHERE message_seq=?)",
                (row[0],),
            )
            conn.execute("DELETE FROM passages WHERE message_seq=?", (row[0],))
            for subject_pk, pk in gone:
                _rewrite_contexts(conn, subject_pk, pk)
            conn.execute("DELETE FROM messages WHERE seq=?", (row[0],))
            mark_purge(conn)
        purge(self.db)
        return True

    def get_trace(self, run_id: str) -> dict[str, Any] | None:
        row = (
            self.db.conn()
            .execute(
                "SELECT t.trace FROM runs r JOIN subjects s ON s.pk=r.subject_pk JOIN traces t ON t.claim_id=r.claim_id"
                " WHERE r.id=? AND s.tenant=?",
                (run_id, self.tenant),
            )
            .fetchone()
        )
        if not row:
            return None
        trace: dict[str, Any] = json.loads(row[0])
        return trace

    # -- sessions ------------------------------------------------------------------------------------

    def _session_pk(self, conn: sqlite3.Connection, session_id: str) -> int | None:
        row = conn.execute(
            "SELECT pk FROM sessions WHERE tenant=? AND session_id=?", (self.tenant, session_id)
        ).fetchone()
        return row[0] if row else None

    def session_items(self, session_id: str, limit: int | None = None) -> list[dict[str, Any]]:
        with self.db.read() as conn:
            pk = self._session_pk(conn, session_id)
            if pk is None:
                return []
            if limit is None:
                rows = conn.execute("SELECT item FROM session_items WHERE session_pk=? ORDER BY seq", (pk,)).fetchall()
            else:
                rows = conn.execute(
                    "SELECT item FROM session_items WHERE session_pk=? ORDER BY seq DESC LIMIT ?", (pk, limit)
                ).fetchall()[::-1]
        return [json.loads(r[0]) for r in rows]

    def add_session_items(self, session_id: str, items: Sequence[dict[str, Any]], *, subject_id: str) -> None:
        now = time.time()
        with self.db.tx() as conn:
            pk = self._session_pk(conn, session_id)
            if pk is None:
                pk = conn.execute(
                    "INSERT INTO sessions(tenant, session_id, subject_id, created_at) VALUES (?, ?, ?, ?)",
                    (self.tenant, session_id, subject_id, now),
                ).lastrowid
            conn.executemany(
                "INSERT INTO session_items(session_pk, item, created_at) VALUES (?, ?, ?)",
                [(pk, dumps(item), now) for item in items],
            )

    def pop_session_item(self, session_id: str) -> dict[str, Any] | None:
        with self.db.tx() as conn:
            pk = self._session_pk(conn, session_id)
            row = (
                conn.execute(
                    "DELETE FROM session_items WHERE seq=(SELECT max(seq) FROM session_items WHERE session_pk=?)"
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
            pk = self._session_pk(conn, session_id)
            if pk is not None:
                conn.execute("DELETE FROM session_items WHERE session_pk=?", (pk,))
                conn.execute("DELETE FROM sessions WHERE pk=?", (pk,))
                mark_purge(conn)
        purge(self.db, wait=False)

    def unfinished_runs(self, run_ids: Sequence[str]) -> set[str]:
        found: set[str] = set()
        conn = self.db.conn()
        for i in range(0, len(run_ids), 500):
            chunk = list(run_ids[i : i + 500])
            found.update(
                r[0]
                for r in conn.execute(
                    f"SELECT id FROM runs WHERE status IN ('queued', 'running') AND id IN ({','.join('?' * len(chunk))})",
                    chunk,
                )
            )
        return found

    def run_totals(self) -> dict[str, RunTotals]:
        rows = self.db.conn().execute(
            "SELECT status, count(*), total(llm_calls), total(prompt_tokens), total(completion_tokens)"
            " FROM runs GROUP BY status"
        )
        return {r[0]: RunTotals(r[1], int(r[2]), int(r[3]), int(r[4])) for r in rows}

    # -- API keys ------------------------------------------------------------------------------------

    def create_key(self, name: str, key_hash: str) -> None:
        try:
            with self.db.tx() as conn:
                conn.execute(
                    "INSERT INTO api_keys(name, key_hash, created_at) VALUES (?, ?, ?)", (name, key_hash, time.time())
                )
        except sqlite3.IntegrityError:
            raise ValueError(f"an active key named {name!r} exists; revoke it first") from None

    def list_keys(self) -> list[ApiKey]:
        rows = self.db.conn().execute("SELECT name, created_at, revoked_at FROM api_keys ORDER BY pk")
        return [ApiKey(name=r[0], created_at=utc(r[1]), revoked_at=maybe_utc(r[2])) for r in rows]

    def revoke_key(self, name: str) -> bool:
        with self.db.tx() as conn:
            return (
                conn.execute(
                    "UPDATE api_keys SET revoked_at=? WHERE name=? AND revoked_at IS NULL", (time.time(), name)
                ).rowcount
                > 0
            )

    def key_tenant(self, key_hash: str) -> str | None:
        row = (
            self.db.conn()
            .execute("SELECT name FROM api_keys WHERE key_hash=? AND revoked_at IS NULL", (key_hash,))
            .fetchone()
        )
        return row[0] if row else None


def _insert_block(conn: sqlite3.Connection, subject_pk: int, spec: BlockSpec) -> str:
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


def _rewrite_contexts(conn: sqlite3.Connection, subject_pk: int, deleted_pk: int) -> None:
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
        conn.execute("UPDATE passages SET context=? WHERE pk=?", (passage_context(utc(created), previous), pk))
