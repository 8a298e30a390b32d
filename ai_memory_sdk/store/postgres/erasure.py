"""Erasure in PostgreSQL: what it takes for deleted text to leave the database's files.

A delete is one transaction: once it commits no query sees the rows, but
their bytes stay in the table and index pages as dead tuples until VACUUM
removes them, and even after VACUUM a page's freed space keeps the old bytes
until new rows overwrite it (measured: plain VACUUM left 8 % of the deleted
rows' text readable in the data files). So after a delete:

- ``secure_delete`` (the default): the tables that held the text are
  rewritten (``VACUUM FULL``: new files with only the live rows, indexes
  rebuilt, the old files unlinked). It takes an exclusive lock on each table
  for the time of its rewrite, which every other process waits for; the lock
  is asked for with a timeout, and a purge that cannot get it stays marked
  and is retried by the worker heartbeat (``maintain``), ``close()`` and the
  next open.
- without it: a plain ``VACUUM`` (no lock against other work): dead rows and
  their index entries are removed, their space reused by later rows.

Vectors (numbers, not text) are vacuumed, not rewritten: rebuilding an HNSW
index is the costliest rewrite there is. What PostgreSQL cannot promise at
all — the write-ahead log, replicas, backups, and freed disk blocks of the
unlinked files — is written down in docs/postgres.md.

The mark (table ``purge``, one row per table with a generation) is written in
the deleting transaction, so it survives a crash; a purge clears a row only
if its generation did not change meanwhile. One process purges at a time
(an advisory lock); the others leave it to that one.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

import psycopg
from psycopg import sql

from ._db import Database

log = logging.getLogger(__name__)

_LOCK_KEY = 0x61695F7075726765  # pg_advisory_lock key of purges ("ai_purge")
SUBJECT_TABLES = (  # a subject's rows with text; passage_vectors is vacuumed only (see above)
    "subjects",
    "blocks",
    "block_versions",
    "runs",
    "messages",
    "passages",
    "traces",
    "sessions",
    "session_items",
    "search_gen",
    "passage_vectors",
)
MESSAGE_TABLES = ("messages", "passages", "passage_vectors")
SESSION_TABLES = ("sessions", "session_items")
_VACUUM_ONLY = frozenset({"passage_vectors"})


def mark_purge(conn: psycopg.Connection[Any], tables: Iterable[str]) -> None:
    """Record, inside the deleting transaction, that these tables are to be purged."""
    conn.cursor().executemany(
        "INSERT INTO purge(tbl) VALUES (%s) ON CONFLICT (tbl) DO UPDATE SET gen = purge.gen + 1",
        [(t,) for t in sorted(set(tables))],
    )


def purge(db: Database, *, secure: bool, wait: bool = True) -> bool:
    """Vacuum (``secure``: rewrite) the tables marked for purging; True when none is left marked.

    ``wait`` bounds the wait for each table's lock at 10 s (else 0.5 s); a
    purge that times out, or finds another process purging, stays marked.
    """
    with db.conn() as conn:
        pending = conn.execute("SELECT tbl, gen FROM purge ORDER BY tbl").fetchall()
        if not pending:
            return True
        if not conn.execute("SELECT pg_try_advisory_lock(%s)", (_LOCK_KEY,)).fetchone()[0]:  # type: ignore[index]
            log.debug("another process is purging %s", db.path)
            return False
        try:
            conn.execute(sql.SQL("SET lock_timeout = {}").format(sql.Literal("10s" if wait else "500ms")))
            done = []
            for table, gen in pending:
                full = secure and table not in _VACUUM_ONLY
                try:
                    conn.execute(sql.SQL("VACUUM (FULL) {}" if full else "VACUUM {}").format(sql.Identifier(table)))
                except psycopg.errors.LockNotAvailable:
                    (log.warning if wait else log.debug)(
                        "purging deleted rows from table %s of %s was deferred: other work held the table;"
                        " retried by the worker heartbeat, close() and the next open",
                        table,
                        db.path,
                    )
                    continue
                done.append((table, gen))
            conn.cursor().executemany("DELETE FROM purge WHERE tbl = %s AND gen = %s", done)
            return len(done) == len(pending)
        finally:
            conn.execute("RESET lock_timeout")
            conn.execute("SELECT pg_advisory_unlock(%s)", (_LOCK_KEY,))
