"""The write-ahead log of a store file: checkpoints off the callers' commits.

Checkpoints. SQLite's automatic checkpoint runs inside the commit that
crosses 1000 pages: that caller waits for the pages to be copied into the
database file and for its fsync (19-80 ms on a shared disk). The store's
connections turn it off (``wal_autocheckpoint=0``) and this module does the
work instead, with two bounds:

- a commit that finds the ``-wal`` file past ``CHECKPOINT_BYTES`` wakes this
  process's checkpointer thread, which runs ``PASSIVE`` checkpoints (they
  never block a reader or a writer) at most every ``_MIN_INTERVAL`` seconds.
  When writes pause, the last one completes the log and the next write
  starts it over; ``journal_size_limit`` then cuts the file back to
  ``CHECKPOINT_BYTES``.
- a commit that finds the file past ``MAX_BYTES`` (the thread cannot keep up,
  writes never pause, or no thread runs) checkpoints itself before it lets
  the next writer of this process in: the next write starts the log over.
  So the file stays under ``MAX_BYTES`` plus one transaction whoever
  checkpoints or not, unless a reader holds one snapshot all along (then no
  checkpoint can complete, SQLite's own included).

Nothing here opens the store's files beside SQLite: SQLite's locks are POSIX
record locks, and closing any descriptor of a file drops every lock this
process holds on it (a reader's, a writer's), after which another process
may checkpoint or write under them. Only ``os.stat`` is used.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
from collections.abc import Callable

from ..._fork import gate

log = logging.getLogger(__name__)

CHECKPOINT_BYTES = 16 << 20
"""Past this size of the ``-wal`` file a commit wakes the checkpointer; a restarted log is cut back to it."""
MAX_BYTES = 32 << 20
"""Past this size the committing thread checkpoints itself (the bound when no checkpointer keeps up)."""
_MIN_INTERVAL = 0.05  # seconds between two background checkpoints: each costs an fsync of the database file


class Checkpointer:
    """A daemon thread that checkpoints one file when commits ask for it (``wake``)."""

    def __init__(self, checkpoint: Callable[[], None], name: str) -> None:
        self._checkpoint = checkpoint
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def wake(self) -> None:
        self._wake.set()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout)

    def _run(self) -> None:
        """Checkpoint right after a commit: the gap before the next one is when a checkpoint can complete.

        A checkpoint that completes lets the next write start the log over; one
        overtaken by a commit only copies. So after a checkpoint and a pause of
        ``_MIN_INTERVAL``, commits made meanwhile are followed by another
        checkpoint at the next commit, or once the writes pause.
        """
        while not self._stop.is_set():
            self._wake.wait()
            while not self._stop.is_set():
                self._wake.clear()
                try:
                    self._checkpoint()
                except Exception:  # a store error must not end the thread: the next commit wakes it again
                    log.exception("background checkpoint failed")
                if self._stop.wait(_MIN_INTERVAL) or not self._wake.is_set():
                    break
                self._wake.clear()
                self._wake.wait(_MIN_INTERVAL)


def checkpoint(conn: sqlite3.Connection) -> tuple[int, int, int]:
    """A ``PASSIVE`` checkpoint on ``conn`` (outside any transaction): (busy, frames in the log, frames copied)."""
    with gate:
        busy, frames, copied = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
    return int(busy), int(frames), int(copied)


def wal_size(path: str) -> int:
    """Bytes of the ``-wal`` file (0 when it does not exist)."""
    try:
        return os.stat(path + "-wal").st_size
    except OSError:
        return 0
