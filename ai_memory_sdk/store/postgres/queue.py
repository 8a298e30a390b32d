"""The run queue in PostgreSQL (``store.base.RunQueue``) for any number of workers on any number of machines.

A claim locks a *subject row*: ``SELECT ... FROM subjects WHERE queue_seq IS
NOT NULL AND NOT busy ORDER BY queue_seq LIMIT 1 FOR NO KEY UPDATE SKIP
LOCKED``, then, in the same transaction, moves that subject's queued runs to
``running`` and sets ``busy``. Two workers can never claim one subject: the
second either skips the locked row or, once the first commits, re-reads it
(PostgreSQL re-checks a row updated meanwhile against the query's
conditions) and finds it busy. Every transaction that changes the status of
a subject's runs (enqueue, claim, complete, fail, release, recover, cancel,
retry, delete) locks the subject's row first and recomputes ``queue_seq``
and ``busy`` from its runs (``sync``), so the row always says what its runs
are, and transactions on one subject queue up in one order (no deadlock).
Locking run rows instead (``SKIP LOCKED`` on ``runs`` plus a "no running
run" check) races: a check made in one snapshot does not see a claim
committed a moment later, and two claims of one subject meet.

Leases are on the server's clock (``now()``): machines whose clocks differ
agree on when a lease expired. ``complete``/``fail``/``release`` act only
while every run of the claim is still ``running`` under its claim id, so a
worker whose lease was taken over never applies its pass. Wake-ups cross
processes as notifications (``notify.py``), sent in the transaction that
made the work visible.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Sequence
from typing import Any

import psycopg

from ..._fork import PerProcess
from ..._process import owner_dead
from ...learners.tools import replay
from ...models import Block, StoredMessage
from .._guard import guarded, waits
from .._rows import BLOCK_COLS, CRASHED_ERROR, MSG_COLS, block_row, dumps, message_row, new_id
from .._signals import Signals
from ..base import MAX_ATTEMPTS, Claim, PassResult, RunStats
from ._db import Database
from .erasure import purge
from .index import ensure_vector_index, insert_vectors
from .notify import WORK_CHANNEL, Listener, notify_ended, notify_work

log = logging.getLogger(__name__)

NOW = "extract(epoch from now())::float8"  # the server's clock, as epoch seconds
PROBE_EVERY = 1.0  # seconds between two looks for expired leases by an idle claimer of this process

# A claim in one statement. ``s`` locks the oldest claimable subject (a row another worker holds is skipped;
# one claimed meanwhile is re-read, found busy and passed over); ``f`` is its first queued run (consolidation
# first); ``c`` takes the runs of that kind (only ``f`` when it was attempted before); ``u`` marks the subject
# busy and moves ``queue_seq`` on (or repairs a stale row when no run was queued after all). Every CTE reads
# the statement's snapshot, hence ``NOT IN c``.
_CLAIM = f"""
WITH s AS (
    SELECT pk, subject_id FROM subjects WHERE queue_seq IS NOT NULL AND NOT busy
    ORDER BY queue_seq LIMIT 1 FOR NO KEY UPDATE SKIP LOCKED
), f AS (
    SELECT r.kind, r.seq, r.attempts FROM runs r JOIN s ON r.subject_pk = s.pk
    WHERE r.status = 'queued' ORDER BY r.kind <> 'consolidate', r.seq LIMIT 1
), c AS (
    UPDATE runs r SET status = 'running', started_at = {NOW}, claim_id = %(claim)s, lease_owner = %(owner)s,
        lease_expires = {NOW} + %(lease)s, attempts = r.attempts + 1
    FROM s, f
    WHERE r.subject_pk = s.pk AND r.status = 'queued' AND r.kind = f.kind AND (f.attempts = 0 OR r.seq = f.seq)
    RETURNING r.seq, r.id
), u AS (
    UPDATE subjects SET busy = EXISTS (SELECT 1 FROM c), queue_seq = (
        SELECT min(q.seq) FROM runs q
        WHERE q.subject_pk = subjects.pk AND q.status = 'queued' AND q.seq NOT IN (SELECT seq FROM c))
    FROM s WHERE subjects.pk = s.pk
)
SELECT s.pk, s.subject_id, (SELECT kind FROM f), ARRAY(SELECT id FROM c ORDER BY seq) FROM s
"""
# A subject's queue state from its runs (the caller holds its row lock); the row back when runs still wait.
_SYNC = (
    "UPDATE subjects SET queue_seq=(SELECT min(seq) FROM runs WHERE subject_pk=%(pk)s AND status='queued'),"
    " busy=EXISTS (SELECT 1 FROM runs WHERE subject_pk=%(pk)s AND status='running')"
    " WHERE pk=%(pk)s RETURNING queue_seq"
)


@guarded
class PostgresQueue:
    """``RunQueue`` over one PostgreSQL database."""

    def __init__(
        self, db: Database, signals: Signals, listener: Listener, *, history_limit: int, secure_delete: bool
    ) -> None:
        self.db = db
        self.signals = signals
        self.listener = listener
        self.history_limit = history_limit
        self.secure_delete = secure_delete
        self._probed = PerProcess(lambda: [0.0])
        self._probe_lock = PerProcess(threading.Lock)

    @property
    def owner(self) -> str:
        return self.db.owner

    # -- claiming ------------------------------------------------------------------------------------

    def claim(self, lease_seconds: float) -> Claim | None:
        """One statement (``_CLAIM``): lock a claimable subject, take its runs, mark it busy."""
        self._probe_expired()
        with self.db.conn() as conn:
            for _ in range(3):
                claim_id = uuid.uuid4().hex
                row = conn.execute(_CLAIM, {"claim": claim_id, "owner": self.owner, "lease": lease_seconds}).fetchone()
                if row is None:
                    return None  # no subject has runnable work
                pk, subject_id, kind, run_ids = row
                if run_ids:
                    return Claim(claim_id, pk, subject_id, kind, tuple(run_ids))
                # the row said queued but no run was (it is repaired by now): look again
        return None

    def split_claim(self, claim: Claim) -> list[Claim]:
        out = []
        with self.db.tx() as conn:
            for run_id in claim.run_ids:
                claim_id = uuid.uuid4().hex
                if conn.execute(
                    "UPDATE runs SET claim_id=%s WHERE id=%s AND claim_id=%s AND status='running'",
                    (claim_id, run_id, claim.claim_id),
                ).rowcount:
                    out.append(Claim(claim_id, claim.subject_pk, claim.subject_id, claim.kind, (run_id,)))
        return out

    def claim_messages(self, claim: Claim) -> list[StoredMessage]:
        with self.db.conn() as conn:
            rows = conn.execute(
                f"SELECT {MSG_COLS} FROM messages m JOIN runs r ON r.seq=m.run_seq WHERE r.claim_id=%s ORDER BY m.seq",
                (claim.claim_id,),
            ).fetchall()
        return [message_row(r) for r in rows]

    def claim_passages(self, claim: Claim, embedder: str) -> list[tuple[int, str]]:
        with self.db.conn() as conn:
            rows = conn.execute(
                "SELECT p.pk, p.content FROM passages p JOIN messages m ON m.seq=p.message_seq"
                " JOIN runs r ON r.seq=m.run_seq LEFT JOIN passage_vectors v ON v.passage_pk=p.pk AND v.embedder=%s"
                " WHERE r.claim_id=%s AND v.passage_pk IS NULL ORDER BY p.pk",
                (embedder, claim.claim_id),
            ).fetchall()
        return [(r[0], r[1]) for r in rows]

    def pass_blocks(self, subject_pk: int) -> tuple[list[Block], dict[str, int]]:
        with self.db.conn() as conn:
            rows = conn.execute(
                f"SELECT {BLOCK_COLS}, b.version FROM blocks b JOIN subjects s"
                " ON s.pk=b.subject_pk WHERE b.subject_pk=%s ORDER BY b.pk",
                (subject_pk,),
            ).fetchall()
        return [block_row(r) for r in rows], {r[1]: r[8] for r in rows}

    # -- leases ----------------------------------------------------------------------------------------

    def renew_leases(self, lease_seconds: float) -> int:
        with self.db.conn() as conn:
            return conn.execute(
                f"UPDATE runs SET lease_expires={NOW} + %s WHERE lease_owner=%s AND status='running'",
                (lease_seconds, self.owner),
            ).rowcount

    def recover(self) -> int:
        """Per subject, one transaction that locks it: requeue (or fail at the crash limit) its lost runs."""
        with self.db.conn() as conn:
            owners = [r[0] for r in conn.execute("SELECT DISTINCT lease_owner FROM runs WHERE status='running'")]
            dead = [o for o in owners if o and o != self.owner and owner_dead(o)]
            lost = f"status='running' AND (lease_expires < {NOW} OR lease_owner = ANY(%s))"
            subjects = [r[0] for r in conn.execute(f"SELECT DISTINCT subject_pk FROM runs WHERE {lost}", (dead,))]
            requeued, failed = 0, []
            for pk in subjects:
                with conn.transaction():
                    if not lock_subject(conn, pk):
                        continue
                    ended = [
                        r[0]
                        for r in conn.execute(
                            f"UPDATE runs SET status='failed', finished_at={NOW}, stop_reason='crashed', claim_id=NULL,"
                            f" lease_owner=NULL, error=%s WHERE subject_pk=%s AND attempts>={MAX_ATTEMPTS} AND {lost}"
                            " RETURNING id",
                            (CRASHED_ERROR, pk, dead),
                        )
                    ]
                    n = conn.execute(
                        "UPDATE runs SET status='queued', started_at=NULL, claim_id=NULL, lease_owner=NULL,"
                        f" lease_expires=NULL WHERE subject_pk=%s AND {lost}",
                        (pk, dead),
                    ).rowcount
                    sync(conn, pk)
                    if n:
                        notify_work(conn, self.listener.sender)
                    if ended:
                        notify_ended(conn, self.listener.sender, ended)
                requeued += n
                failed += ended
        if requeued or failed:
            log.warning("requeued %d run(s) left running by a process that died", requeued + len(failed))
        if requeued:
            self.signals.work_queued(requeued)
        if failed:
            self.signals.run_ended(failed)
        return requeued + len(failed)

    def _probe_expired(self) -> None:
        """At most once a second per process: recover if some lease expired (a dead worker on another machine)."""
        probed = self._probed.get()
        if time.monotonic() - probed[0] < PROBE_EVERY or not self._probe_lock.get().acquire(blocking=False):
            return
        try:
            probed[0] = time.monotonic()
            with self.db.conn() as conn:
                expired = conn.execute(
                    f"SELECT 1 FROM runs WHERE status='running' AND lease_expires < {NOW} LIMIT 1"
                ).fetchone()
            if expired:
                self.recover()
        finally:
            self._probe_lock.get().release()

    def release(self, claim: Claim) -> int:
        with self.db.tx() as conn:
            if not lock_subject(conn, claim.subject_pk):
                return 0
            n = conn.execute(
                "UPDATE runs SET status='queued', started_at=NULL, claim_id=NULL, lease_owner=NULL,"
                " lease_expires=NULL, attempts=greatest(attempts-1, 0) WHERE claim_id=%s AND status='running'",
                (claim.claim_id,),
            ).rowcount
            sync(conn, claim.subject_pk)
            if n:
                notify_work(conn, self.listener.sender)
        if n:
            self.signals.work_queued()
        return n

    # -- applying ------------------------------------------------------------------------------------

    def complete(self, claim: Claim, result: PassResult) -> bool:
        """One transaction in two pipelined round trips: read what the claim holds, then write it all."""
        if result.vectors:
            ensure_vector_index(self.db, result.embedder or "", len(result.vectors[0][1]) // 4)
        with self.db.conn() as conn:
            try:
                return self._complete(conn, claim, result)
            finally:  # a claim found lost, or an error: the transaction the pipeline began ends here
                if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
                    conn.execute("ROLLBACK")

    def _complete(self, conn: psycopg.Connection[Any], claim: Claim, result: PassResult) -> bool:
        with conn.pipeline():
            conn.execute("BEGIN")
            held = conn.execute(
                "SELECT (SELECT count(*) FROM runs WHERE claim_id=%s AND status='running') FROM subjects"
                " WHERE pk=%s FOR NO KEY UPDATE",
                (claim.claim_id, claim.subject_pk),
            )
            blocks = conn.execute(
                "SELECT label, pk, value, version, char_limit FROM blocks WHERE subject_pk=%s AND label = ANY(%s)"
                " ORDER BY pk FOR UPDATE",
                (claim.subject_pk, list(result.values)),
            )
            row = held.fetchone()
            if row is None or row[0] != len(claim.run_ids):
                return False  # requeued by recovery, released, cancelled, or the subject was deleted
            current = {r[0]: r[1:] for r in blocks.fetchall()}
            for label, (value, read_version) in result.values.items():
                if label not in current:
                    log.warning(
                        "block %r of subject %r was deleted during a pass; its edits are dropped",
                        label,
                        claim.subject_id,
                    )
                    continue
                block_pk, old, version, limit = current[label]
                if version != read_version:
                    value = replay(result.ops, label, old, limit)
                if value != old:
                    write_value(conn, block_pk, value, claim.run_ids[0], self.history_limit)
            if result.vectors:
                insert_vectors(
                    self.db, conn, [(pk, claim.subject_pk, blob) for pk, blob in result.vectors], result.embedder or ""
                )
            _finish(conn, claim, "completed", result.learner, None, result.stats)
            if result.trace is not None:
                _store_trace(conn, claim, result.trace)
            consolidation = conn.execute(
                "INSERT INTO runs(id, subject_pk, status, created_at, kind)"
                f" SELECT %s, %s, 'queued', {NOW}, 'consolidate' WHERE %s AND NOT EXISTS"
                " (SELECT 1 FROM runs WHERE subject_pk=%s AND status='queued' AND kind='consolidate') RETURNING id",
                (new_id("run"), claim.subject_pk, result.consolidate, claim.subject_pk),
            )
            waiting = self._ended(conn, claim.subject_pk, claim.run_ids)
            conn.execute("COMMIT")
        queued = consolidation.fetchone() is not None
        self.signals.run_ended(claim.run_ids)
        if waiting.fetchone() is not None or queued:
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
        with self.db.tx() as conn:
            if not lock_subject(conn, claim.subject_pk):
                return False
            ended = [r[0] for r in _finish(conn, claim, "failed", learner, error, stats)]
            if not ended:
                return False
            if trace is not None:
                _store_trace(conn, claim, trace)
            waiting = self._ended(conn, claim.subject_pk, ended).fetchone() is not None
        self.signals.run_ended(ended)
        if waiting:
            self.signals.work_queued()
        return True

    def _ended(self, conn: psycopg.Connection[Any], subject_pk: int, ended: Sequence[str]) -> psycopg.Cursor[Any]:
        """After runs of a subject ended: its queue state and the notifications.

        The cursor returned has a row when runs wait behind them (batches that queued during the pass): an
        idle worker anywhere is woken to take them.
        """
        notify_ended(conn, self.listener.sender, ended)
        return conn.execute(
            f"WITH x AS ({_SYNC}) SELECT pg_notify(%(channel)s, %(sender)s) FROM x WHERE queue_seq IS NOT NULL",
            {"pk": subject_pk, "channel": WORK_CHANNEL, "sender": self.listener.sender},
        )

    # -- waiting -------------------------------------------------------------------------------------

    @waits
    def wait_for_work(self, timeout: float) -> None:
        self.listener.ensure()
        self.signals.wait_work(timeout)

    def wake(self, count: int = 1) -> None:
        self.signals.work_queued(count)

    def maintain(self) -> None:
        purge(self.db, secure=self.secure_delete, wait=False)


# -- shared with the store ----------------------------------------------------------------------


def lock_subject(conn: psycopg.Connection[Any], subject_pk: int) -> bool:
    """Lock a subject's row for a change of its runs (False: the subject was deleted)."""
    return conn.execute("SELECT 1 FROM subjects WHERE pk=%s FOR NO KEY UPDATE", (subject_pk,)).fetchone() is not None


def sync(conn: psycopg.Connection[Any], subject_pk: int) -> bool:
    """Recompute a locked subject's queue state from its runs; True when it has queued runs."""
    row = conn.execute(_SYNC, {"pk": subject_pk}).fetchone()
    return bool(row and row[0] is not None)


def write_value(
    conn: psycopg.Connection[Any], block_pk: int, value: str, run_id: str | None, history_limit: int
) -> None:
    """A block's new value as a new version; versions beyond ``history_limit`` dropped (one statement)."""
    conn.execute(
        f"WITH b AS (UPDATE blocks SET value=%(v)s, version=version+1, updated_at={NOW} WHERE pk=%(pk)s"
        " RETURNING version),"
        " i AS (INSERT INTO block_versions(block_pk, version, value, run_id, created_at)"
        f" SELECT %(pk)s, version, %(v)s, %(run)s, {NOW} FROM b)"
        " DELETE FROM block_versions WHERE block_pk=%(pk)s AND %(keep)s > 0 AND version <= (SELECT version FROM b) - %(keep)s",
        {"v": value, "pk": block_pk, "run": run_id, "keep": history_limit},
    )


def _finish(
    conn: psycopg.Connection[Any],
    claim: Claim,
    status: str,
    learner: str,
    error: str | None,
    stats: RunStats,
) -> psycopg.Cursor[Any]:
    """End the claim's runs; the cursor's rows are the ids of those it ended."""
    return conn.execute(
        f"UPDATE runs SET status=%s, finished_at={NOW}, learner=%s, error=%s, stop_reason=%s, llm_calls=%s,"
        " prompt_tokens=%s, completion_tokens=%s, lease_owner=NULL, lease_expires=NULL"
        " WHERE claim_id=%s AND status='running' RETURNING id",
        (
            status,
            learner,
            error,
            stats.stop_reason,
            stats.llm_calls,
            stats.prompt_tokens,
            stats.completion_tokens,
            claim.claim_id,
        ),
    )


def _store_trace(conn: psycopg.Connection[Any], claim: Claim, trace: dict[str, Any]) -> None:
    conn.execute(
        f"INSERT INTO traces(claim_id, subject_pk, trace, created_at) VALUES (%s, %s, %s, {NOW})"
        " ON CONFLICT (claim_id) DO UPDATE SET trace=excluded.trace, created_at=excluded.created_at",
        (claim.claim_id, claim.subject_pk, dumps(trace)),
    )
