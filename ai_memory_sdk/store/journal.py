"""The ``letta`` engine's journal: batches accepted but not yet learned, in a local SQLite file.

``add_messages`` must return only once the batch survives a crash (the durability promise),
but a batch queued behind a busy subject cannot be sent to Letta yet (runs of
one agent must not overlap). So it is written here first, in one commit. The
sending thread records each Letta run it starts and each passage it stores;
a finished run's rows are removed. A process that opens the journal adopts
the rows of dead processes (same host, pid gone) for its server: unsent
batches are sent, a Letta run already sent is awaited instead of re-sent, and
passages already stored are not stored twice.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import sqlite3
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .._fork import PerProcess, gate
from .._process import owner_dead, process_owner
from ..models import MessageIn

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS pending (
    run_id      TEXT PRIMARY KEY,
    server      TEXT NOT NULL,
    owner       TEXT NOT NULL,
    subject_id  TEXT NOT NULL,
    agent_id    TEXT NOT NULL,
    seq         INTEGER NOT NULL,       -- order of acceptance (time_ns)
    payload     TEXT NOT NULL,          -- messages, keys, options (JSON)
    group_id    TEXT,                   -- runs learned in one Letta pass share it once sent
    chunks_sent INTEGER NOT NULL DEFAULT 0,
    inflight    TEXT,                   -- the Letta run of the last chunk sent
    archived    INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS pending_server ON pending(server, owner);
"""


@dataclass
class Entry:
    """One journalled batch, as a process that adopts it needs it."""

    run_id: str
    subject_id: str
    agent_id: str
    seq: int
    messages: list[MessageIn]
    keys: list[str]
    archive: bool
    max_chars: int
    max_steps: int
    group_id: str | None
    chunks_sent: int
    inflight: str | None
    archived: int


class _Connection:
    """This process's side of the journal: its SQLite connection, the lock around it, and its owner name."""

    def __init__(self, path: str) -> None:
        self.owner = process_owner()
        self.lock = threading.Lock()
        self.conn = sqlite3.connect(path, timeout=60.0, isolation_level=None, check_same_thread=False)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=NORMAL")
        self.conn.executescript(_SCHEMA)


class Journal:
    """One SQLite file (WAL), shared by the processes of one machine; every write is one short commit.

    A forked child opens its own connection under a new owner name on first use
    (``PerProcess``); the parent's stays untouched.
    """

    def __init__(self, path: str | os.PathLike[str], server: str) -> None:
        self.path = str(path)
        self.server = server
        Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._local: PerProcess[_Connection] = PerProcess(lambda: _Connection(self.path))
        self._local.get()

    @property
    def owner(self) -> str:
        """This process's owner name on the rows it writes or adopts."""
        return self._local.get().owner

    def _write(self, sql: str, args: Sequence[object]) -> None:
        with gate:
            local = self._local.get()
            with local.lock:
                local.conn.execute(sql, args)

    def add(
        self,
        run_id: str,
        subject_id: str,
        agent_id: str,
        seq: int,
        messages: Sequence[MessageIn],
        keys: Sequence[str],
        *,
        archive: bool,
        max_chars: int,
        max_steps: int,
    ) -> None:
        payload = json.dumps(
            {
                "messages": [m.model_dump(mode="json") for m in messages],
                "keys": list(keys),
                "archive": archive,
                "max_chars": max_chars,
                "max_steps": max_steps,
            }
        )
        self._write(
            "INSERT INTO pending (run_id, server, owner, subject_id, agent_id, seq, payload) VALUES (?,?,?,?,?,?,?)",
            (run_id, self.server, self.owner, subject_id, agent_id, seq, payload),
        )

    def sent(self, run_ids: Sequence[str], letta_run: str, chunks_sent: int) -> None:
        """A Letta run was started for these batches (progress: a failure to record it is logged, not raised)."""
        marks = ",".join("?" * len(run_ids))
        self._progress(
            f"UPDATE pending SET group_id=?, inflight=?, chunks_sent=? WHERE run_id IN ({marks})",
            (run_ids[0], letta_run, chunks_sent, *run_ids),
        )

    def archived(self, run_id: str, count: int) -> None:
        """The batch's first ``count`` messages are stored as passages (progress, as above)."""
        self._progress("UPDATE pending SET archived=? WHERE run_id=?", (count, run_id))

    def _progress(self, sql: str, args: Sequence[object]) -> None:
        # Raising here would abandon a Letta run in flight; unrecorded, a crash only re-does this step.
        try:
            self._write(sql, args)
        except sqlite3.Error as exc:
            log.warning("letta engine: could not record progress in %s: %s", self.path, exc)

    def done(self, run_ids: Sequence[str]) -> None:
        if run_ids:
            self._write(f"DELETE FROM pending WHERE run_id IN ({','.join('?' * len(run_ids))})", tuple(run_ids))

    def adopt(self) -> list[Entry]:
        """Take over this server's rows whose process died; oldest first."""
        host = socket.gethostname()
        with gate:
            local = self._local.get()
            conn = local.conn
            with local.lock:
                owners = [
                    r[0] for r in conn.execute("SELECT DISTINCT owner FROM pending WHERE server=?", (self.server,))
                ]
                dead = [o for o in owners if owner_dead(o, host)]
                if not dead:
                    return []
                marks = ",".join("?" * len(dead))
                conn.execute("BEGIN IMMEDIATE")
                try:
                    rows = conn.execute(
                        f"SELECT run_id, subject_id, agent_id, seq, payload, group_id, chunks_sent, inflight, archived"
                        f" FROM pending WHERE server=? AND owner IN ({marks}) ORDER BY seq",
                        (self.server, *dead),
                    ).fetchall()
                    conn.execute(
                        f"UPDATE pending SET owner=? WHERE server=? AND owner IN ({marks})",
                        (local.owner, self.server, *dead),
                    )
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise
                conn.execute("COMMIT")
        out = []
        for run_id, sid, agent_id, seq, payload, group_id, chunks_sent, inflight, archived in rows:
            p = json.loads(payload)
            out.append(
                Entry(
                    run_id,
                    sid,
                    agent_id,
                    seq,
                    [MessageIn.model_validate(m) for m in p["messages"]],
                    p["keys"],
                    p["archive"],
                    p["max_chars"],
                    p["max_steps"],
                    group_id,
                    chunks_sent,
                    inflight,
                    archived,
                )
            )
        if out:
            log.warning("letta engine: resuming %d batch(es) accepted by a process that died", len(out))
        return out


def journal_path(store_path: str | None, default: Path) -> Path:
    """Beside the configured store file (or the default one): ``memory.db`` -> ``memory.letta-journal.db``."""
    base = Path(store_path) if store_path and store_path != ":memory:" else default
    return base.with_name(base.stem + ".letta-journal.db")
