"""The run queue in a SQLite file (``store.base.RunQueue``): claims, leases, recovery, applying passes.

SQLite serialises writers, so a claim is one ``BEGIN IMMEDIATE`` transaction
that picks the subject and moves its runs to ``running``: no two workers, in
any process, can claim one subject at once. Leases use this host's clock (all
processes of a SQLite file share a host). Other processes' wake-ups are not
signalled: a waiting worker polls at its interval.
"""

from __future__ import annotations

import logging
import sqlite3
import time
import uuid
from typing import Any

from ..._fork import PerProcess
from ..._process import owner_dead, process_owner
from ...learners.tools import replay
from ...models import Block, StoredMessage
from .._rows import BLOCK_COLS, CRASHED_ERROR, MSG_COLS, block_row, dumps, message_row, new_id
from .._signals import Signals
from ..base import MAX_ATTEMPTS, Claim, PassResult, RunStats
from ._db import Database, guarded, waits

log = logging.getLogger(__name__)


@guarded
class SQLiteQueue:
    """``RunQueue`` over one SQLite file."""

    def __init__(self, db: Database, signals: Signals, *, history_limit: int) -> None:
        self.db = db
        self.signals = signals
        self.history_limit = history_limit
        self._owner = PerProcess(process_owner)

    @property
    def owner(self) -> str:
        """This process's lease-owner name (a forked child gets its own)."""
        return self._owner.get()

    def claim(self, lease_seconds: float) -> Claim | None:
        if not self.db.conn().execute("SELECT 1 FROM runs WHERE status='queued' LIMIT 1").fetchone():
            return None  # nothing to claim: do not take the write lock from the application
        with self.db.tx() as conn:
            row = conn.execute(
                "SELECT r.subject_pk FROM runs r WHERE r.status='queued' AND NOT EXISTS"
                " (SELECT 1 FROM runs x WHERE x.subject_pk=r.subject_pk AND x.status='running') ORDER BY r.seq LIMIT 1"
            ).fetchone()
            if not row:
                return None
            pk = row[0]
            kind = (
                "consolidate"
                if conn.execute(
                    "SELECT 1 FROM runs WHERE subject_pk=? AND status='queued' AND kind='consolidate' LIMIT 1", (pk,)
                ).fetchone()
                else "learn"
            )
            first_seq, first_attempts = conn.execute(
                "SELECT seq, attempts FROM runs WHERE subject_pk=? AND status='queued' AND kind=? ORDER BY seq LIMIT 1",
                (pk, kind),
            ).fetchone()
            claim_id = uuid.uuid4().hex
            now = time.time()
            # A run whose pass already died with its process is claimed alone (see RunQueue.claim).
            conn.execute(
                "UPDATE runs SET status='running', started_at=?, claim_id=?, lease_owner=?, lease_expires=?,"
                " attempts=attempts+1 WHERE subject_pk=? AND status='queued' AND kind=?"
                + (" AND seq=?" if first_attempts else ""),
                (now, claim_id, self.owner, now + lease_seconds, pk, kind, *((first_seq,) if first_attempts else ())),
            )
            runs = [r[0] for r in conn.execute("SELECT id FROM runs WHERE claim_id=? ORDER BY seq", (claim_id,))]
            subject_id = conn.execute("SELECT subject_id FROM subjects WHERE pk=?", (pk,)).fetchone()[0]
        return Claim(claim_id, pk, subject_id, kind, tuple(runs))  # type: ignore[arg-type]

    def split_claim(self, claim: Claim) -> list[Claim]:
        out = []
        with self.db.tx() as conn:
            for run_id in claim.run_ids:
                claim_id = uuid.uuid4().hex
                if conn.execute(
                    "UPDATE runs SET claim_id=? WHERE id=? AND claim_id=? AND status='running'",
                    (claim_id, run_id, claim.claim_id),
                ).rowcount:
                    out.append(Claim(claim_id, claim.subject_pk, claim.subject_id, claim.kind, (run_id,)))
        return out

    def claim_messages(self, claim: Claim) -> list[StoredMessage]:
        rows = (
            self.db.conn()
            .execute(
                f"SELECT {MSG_COLS} FROM messages m JOIN runs r ON r.seq=m.run_seq WHERE r.claim_id=? ORDER BY m.seq",
                (claim.claim_id,),
            )
            .fetchall()
        )
        return [message_row(r) for r in rows]

    def claim_passages(self, claim: Claim, embedder: str) -> list[tuple[int, str]]:
        return [
            (r[0], r[1])
            for r in self.db.conn().execute(
                "SELECT p.pk, p.content FROM passages p JOIN messages m ON m.seq=p.message_seq"
                " JOIN runs r ON r.seq=m.run_seq LEFT JOIN passage_vectors v ON v.passage_pk=p.pk AND v.embedder=?"
                " WHERE r.claim_id=? AND v.passage_pk IS NULL ORDER BY p.pk",
                (embedder, claim.claim_id),
            )
        ]

    def pass_blocks(self, subject_pk: int) -> tuple[list[Block], dict[str, int]]:
        rows = (
            self.db.conn()
            .execute(
                f"SELECT {BLOCK_COLS}, b.version FROM blocks b JOIN subjects s"
                " ON s.pk=b.subject_pk WHERE b.subject_pk=? ORDER BY b.pk",
                (subject_pk,),
            )
            .fetchall()
        )
        return [block_row(r) for r in rows], {r[1]: r[8] for r in rows}

    def renew_leases(self, lease_seconds: float) -> int:
        with self.db.tx() as conn:
            return conn.execute(
                "UPDATE runs SET lease_expires=? WHERE lease_owner=? AND status='running'",
                (time.time() + lease_seconds, self.owner),
            ).rowcount

    def recover(self) -> int:
        conn = self.db.conn()
        now = time.time()
        dead = [
            owner
            for (owner,) in conn.execute("SELECT DISTINCT lease_owner FROM runs WHERE status='running'")
            if owner != self.owner and owner_dead(owner or "")
        ]
        with self.db.tx() as conn:
            n = sum(_requeue(conn, "lease_owner=?", (owner,)) for owner in dead)
            n += _requeue(conn, "lease_expires<?", (now,))
        if n:
            log.warning("requeued %d run(s) left running by a process that died", n)
            self.signals.work_queued(n)
        return n

    def release(self, claim: Claim) -> int:
        with self.db.tx() as conn:
            n = conn.execute(
                "UPDATE runs SET status='queued', started_at=NULL, claim_id=NULL, lease_owner=NULL,"
                " lease_expires=NULL, attempts=max(attempts-1, 0) WHERE claim_id=? AND status='running'",
                (claim.claim_id,),
            ).rowcount
        if n:
            self.signals.work_queued()
        return n

    def complete(self, claim: Claim, result: PassResult) -> bool:
        now = time.time()
        with self.db.tx() as conn:
            owned = conn.execute(
                "SELECT count(*) FROM runs WHERE claim_id=? AND status='running'", (claim.claim_id,)
            ).fetchone()[0]
            if owned != len(claim.run_ids):
                return False  # requeued by recovery, released, cancelled, or the subject was deleted
            for label, (value, read_version) in result.values.items():
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
                    value = replay(result.ops, label, row[1], row[3])
                if value != row[1]:
                    write_value(conn, row[0], value, claim.run_ids[0], now, self.history_limit)
            if result.vectors:
                insert_vectors(
                    conn, [(pk, claim.subject_pk, blob) for pk, blob in result.vectors], result.embedder or ""
                )
            _finish(conn, claim, "completed", now, result.learner, None, result.stats)
            if result.trace is not None:
                _store_trace(conn, claim, result.trace, now)
            queued = (
                result.consolidate
                and not conn.execute(
                    "SELECT 1 FROM runs WHERE subject_pk=? AND status='queued' AND kind='consolidate'",
                    (claim.subject_pk,),
                ).fetchone()
            )
            if queued:
                conn.execute(
                    "INSERT INTO runs(id, subject_pk, status, created_at, kind) VALUES (?, ?, 'queued', ?, 'consolidate')",
                    (new_id("run"), claim.subject_pk, now),
                )
        self.signals.run_ended()
        if queued:
            self.signals.work_queued()
        return True

    def fail(
        self,
        claim: Claim,
        *,
        learner: str,
        error: str,
        stats: RunStats,
        trace: dict[str, Any] | None = None,
    ) -> bool:
        now = time.time()
        with self.db.tx() as conn:
            done = _finish(conn, claim, "failed", now, learner, error, stats) > 0
            if done and trace is not None:
                _store_trace(conn, claim, trace, now)
        if done:
            self.signals.run_ended()
        return done

    @waits
    def wait_for_work(self, timeout: float) -> None:
        self.signals.wait_work(timeout)

    def wake(self, count: int = 1) -> None:
        self.signals.work_queued(count)

    def maintain(self) -> None:
        from .erasure import purge

        purge(self.db, wait=False)


def _finish(
    conn: sqlite3.Connection,
    claim: Claim,
    status: str,
    now: float,
    learner: str,
    error: str | None,
    stats: RunStats,
) -> int:
    return conn.execute(
        "UPDATE runs SET status=?, finished_at=?, learner=?, error=?, stop_reason=?, llm_calls=?, prompt_tokens=?,"
        " completion_tokens=?, lease_owner=NULL, lease_expires=NULL WHERE claim_id=? AND status='running'",
        (
            status,
            now,
            learner,
            error,
            stats.stop_reason,
            stats.llm_calls,
            stats.prompt_tokens,
            stats.completion_tokens,
            claim.claim_id,
        ),
    ).rowcount


def _store_trace(conn: sqlite3.Connection, claim: Claim, trace: dict[str, Any], now: float) -> None:
    conn.execute(
        "INSERT OR REPLACE INTO traces(claim_id, subject_pk, trace, created_at) VALUES (?, ?, ?, ?)",
        (claim.claim_id, claim.subject_pk, dumps(trace), now),
    )


def _requeue(conn: sqlite3.Connection, where: str, args: tuple[Any, ...]) -> int:
    failed = conn.execute(
        "UPDATE runs SET status='failed', finished_at=?, stop_reason='crashed', claim_id=NULL, lease_owner=NULL,"
        f" error=? WHERE status='running' AND attempts>={MAX_ATTEMPTS} AND {where}",
        (time.time(), CRASHED_ERROR, *args),
    ).rowcount
    return (
        failed
        + conn.execute(
            "UPDATE runs SET status='queued', started_at=NULL, claim_id=NULL, lease_owner=NULL, lease_expires=NULL"
            f" WHERE status='running' AND {where}",
            args,
        ).rowcount
    )


def write_value(
    conn: sqlite3.Connection, block_pk: int, value: str, run_id: str | None, now: float, history_limit: int
) -> None:
    """A block's new value as a new version; versions beyond ``history_limit`` dropped."""
    version = conn.execute(
        "UPDATE blocks SET value=?, version=version+1, updated_at=? WHERE pk=? RETURNING version",
        (value, now, block_pk),
    ).fetchone()[0]
    conn.execute(
        "INSERT INTO block_versions(block_pk, version, value, run_id, created_at) VALUES (?, ?, ?, ?, ?)",
        (block_pk, version, value, run_id, now),
    )
    if history_limit > 0:
        conn.execute("DELETE FROM block_versions WHERE block_pk=? AND version<=?", (block_pk, version - history_limit))


def insert_vectors(conn: sqlite3.Connection, rows: list[tuple[int, int, bytes]], embedder: str) -> None:
    """Store (passage pk, subject pk, blob) rows, skipping passages deleted meanwhile; record the dimension."""
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
