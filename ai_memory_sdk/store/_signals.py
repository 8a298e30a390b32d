"""In-process wake-ups shared by every backend: "a run ended" and "work was queued".

All ``Memory`` objects and workers of one process on one store share one
``Signals`` (``signals_for(key)``), so a run completed by a worker thread
wakes ``wait_for_run`` at once, and ``add_messages`` wakes an idle worker at
once. Other processes are the backend's business: SQLite polls with backoff,
PostgreSQL forwards its LISTEN/NOTIFY messages into the same ``Signals``.
Its conditions are rebuilt in a forked child (``_fork.PerProcess``).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Iterable

from .._fork import PerProcess

_ENDED_LOG = 1024  # ends remembered with their run ids, so a waiter wakes only for its own run


class _State:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.ended = threading.Condition(self.lock)
        self.queued = threading.Condition(self.lock)
        self.generation = 0  # bumped whenever a run ends
        self.pending = 0  # work notices not yet taken by a waiting worker
        # (generation, ids of the runs that ended then, or None: unknown) of the latest ends
        self.ended_log: deque[tuple[int, frozenset[str] | None]] = deque(maxlen=_ENDED_LOG)

    def may_have_ended(self, seen: int, run_id: str) -> bool:
        """Whether ``run_id`` may be among the runs that ended since generation ``seen`` (lock held)."""
        if self.generation == seen:
            return False
        if not self.ended_log or self.ended_log[0][0] > seen + 1:
            return True  # older ends than the log holds
        return any(ids is None or run_id in ids for gen, ids in self.ended_log if gen > seen)


class Signals:
    """Wake-ups of one store within this process."""

    def __init__(self) -> None:
        self._state = PerProcess(_State)

    @property
    def generation(self) -> int:
        """A counter of ended runs: read it before checking a run, pass it to ``wait_run``."""
        return self._state.get().generation

    def run_ended(self, run_ids: Iterable[str] | None = None) -> None:
        """Runs ended: ``run_ids`` when known (a waiter for another run sleeps on), None wakes every waiter."""
        state = self._state.get()
        with state.lock:
            state.generation += 1
            state.ended_log.append((state.generation, None if run_ids is None else frozenset(run_ids)))
            state.ended.notify_all()

    def wait_run(self, seen: int, timeout: float, run_id: str | None = None) -> None:
        """Return when a run (``run_id``, or any) may have ended since ``generation`` was ``seen``, or after ``timeout``."""
        state = self._state.get()
        with state.lock:
            if run_id is None:
                state.ended.wait_for(lambda: state.generation != seen, timeout=max(0.0, timeout))
            else:
                state.ended.wait_for(lambda: state.may_have_ended(seen, run_id), timeout=max(0.0, timeout))

    def work_queued(self, count: int = 1) -> None:
        state = self._state.get()
        with state.lock:
            state.pending += count
            state.queued.notify(count)

    def wait_work(self, timeout: float) -> bool:
        """Take one work notice, waiting up to ``timeout`` for it; True if there was one.

        A notice given while nobody waited is kept, so no wake-up is lost
        between a worker's empty ``claim`` and its wait.
        """
        state = self._state.get()
        deadline = time.monotonic() + max(0.0, timeout)
        with state.lock:
            while state.pending == 0:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                state.queued.wait(left)
            state.pending -= 1
            return True


_registry: dict[str, Signals] = {}
_registry_lock = PerProcess(threading.Lock)


def signals_for(key: str) -> Signals:
    """The process's ``Signals`` of one store (``key``: its absolute path or connection URL)."""
    with _registry_lock.get():
        sig = _registry.get(key)
        if sig is None:
            sig = _registry[key] = Signals()
        return sig
