"""Erasure in a SQLite file: deleted text must not stay readable, and deleted ids are never reused.

``secure_delete`` zeroes freed pages. Two places keep deleted text beyond
that: FTS5 segments (until merged: ``optimize``) and the write-ahead log
(until a checkpoint truncates it). A delete marks a purge in its own
transaction; the purge runs right after, and whatever a reader deferred is
finished by the worker's heartbeat, ``close()`` or the next open (the mark
survives a crash).
"""

from __future__ import annotations

import logging
import sqlite3

from ._db import Database

log = logging.getLogger(__name__)

_PURGE_KEY = "purge_pending"  # meta row: 'optimize' or 'checkpoint' still to do after a delete


def mark_purge(conn: sqlite3.Connection) -> None:
    """Record, inside the deleting transaction, that a purge is due."""
    conn.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, 'optimize')", (_PURGE_KEY,))


def purge(db: Database, *, wait: bool = True) -> bool:
    """Merge FTS segments and truncate the WAL if a purge is due; True when none is left.

    A reader holding an old snapshot past the busy timeout (with
    ``wait=False``: any reader) defers the truncation: the mark stays and a
    later call finishes it.
    """
    conn = db.conn()
    row = conn.execute("SELECT value FROM meta WHERE key=?", (_PURGE_KEY,)).fetchone()
    if row is None:
        return True
    if row[0] == "optimize":
        try:
            with db.tx() as c:
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
            conn.execute(f"PRAGMA busy_timeout={int(db.busy_timeout * 1000)}")
    if busy:
        (log.warning if wait else log.debug)(
            "a reader of %s kept the write-ahead log from being truncated after a delete; deleted text stays"
            " in its -wal file until a later checkpoint (retried by the worker heartbeat, close() and the next"
            " open)",
            db.path,
        )
        return False
    try:
        with db.tx() as c:  # this small write goes to the fresh WAL; it holds nothing deleted
            c.execute("DELETE FROM meta WHERE key=? AND value='checkpoint'", (_PURGE_KEY,))  # not a newer delete's
    except sqlite3.OperationalError as exc:  # the mark stays: a later call checkpoints again, harmlessly
        log.debug("clearing the purge mark deferred: %s", exc)
    return True


def raise_floor(conn: sqlite3.Connection, table: str) -> None:
    """Before deleting rows of ``table``: remember its highest pk, so ``next_pk`` never hands it out again.

    ``subjects`` and ``passages`` have no AUTOINCREMENT (schema v1), and SQLite
    reuses the highest row id once it is deleted: a search that looked up a
    subject's pk just before ``delete_user`` could then read the next
    subject's rows, and caches keyed on pks could serve deleted vectors.
    """
    conn.execute(
        f"INSERT INTO meta(key, value) SELECT ?, coalesce(max(pk), 0) FROM {table} WHERE true"
        " ON CONFLICT(key) DO UPDATE SET value=max(CAST(value AS INTEGER), CAST(excluded.value AS INTEGER))",
        (f"pk_floor:{table}",),
    )


def next_pk(conn: sqlite3.Connection, table: str) -> int:
    """The next pk of ``table``: above every pk it ever had (see ``raise_floor``)."""
    row = conn.execute(
        f"SELECT max(coalesce((SELECT max(pk) FROM {table}), 0),"
        " coalesce((SELECT CAST(value AS INTEGER) FROM meta WHERE key=?), 0)) + 1",
        (f"pk_floor:{table}",),
    ).fetchone()
    return int(row[0])
