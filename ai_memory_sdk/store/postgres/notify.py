"""Wake-ups across processes and machines: PostgreSQL ``LISTEN``/``NOTIFY`` forwarded into ``Signals``.

A transaction that queues work (an enqueue, a retry, a run handed back or
recovered) sends ``ai_memory_work``; one that ends runs sends
``ai_memory_ended`` with their ids. PostgreSQL delivers a notification when
its transaction commits, and never one of a transaction rolled back, so a
wake-up always follows a change that is visible. Each payload starts with the
sender's owner name: the sending process has already woken its own threads
(``Signals``) and skips its own notifications.

One listener per process and store (shared by every ``PostgresStore`` of the
same URL in the process) holds one extra connection, on a daemon thread
started by the first wait (``wait_for_run``, an idle worker). After it
(re)connects it wakes every waiter, which re-checks the tables once: a
notification sent while it was not listening is never waited for. When it
cannot connect, waiters fall back to a slow poll (``up`` is False).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg

from ..._fork import PerProcess, gate
from ..._process import process_owner
from .._signals import Signals
from ._db import CONNECT_TIMEOUT, SCHEMA_CHANNEL

log = logging.getLogger(__name__)

WORK_CHANNEL = "ai_memory_work"
ENDED_CHANNEL = "ai_memory_ended"
_MAX_PAYLOAD = 7900  # bytes; PostgreSQL's limit is 8000: longer lists of ended runs are sent as "some ended"
_RECONNECT_MAX = 5.0  # seconds between attempts, at most
_WAKE = 0.5  # seconds the thread waits for notifications before it looks whether it is to stop
_SENDER = PerProcess(process_owner)  # this process, as the sender of its notifications


def notify_work(conn: psycopg.Connection[Any], owner: str) -> None:
    """Inside a transaction: wake idle workers of every other process when it commits."""
    conn.execute("SELECT pg_notify(%s, %s)", (WORK_CHANNEL, owner))


def notify_ended(conn: psycopg.Connection[Any], owner: str, run_ids: Sequence[str]) -> None:
    """Inside a transaction: wake ``wait_for_run`` of these runs in every other process when it commits."""
    payload = f"{owner} {','.join(run_ids)}"
    if len(payload.encode()) > _MAX_PAYLOAD:
        payload = owner  # too many to list: every waiter re-checks its run
    conn.execute("SELECT pg_notify(%s, %s)", (ENDED_CHANNEL, payload))


@dataclass
class _Thread:
    thread: threading.Thread | None = None
    stop: threading.Event = field(default_factory=threading.Event)
    up: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)


class Listener:
    """A ``LISTEN`` connection on a daemon thread of this process; notifications become ``Signals`` calls."""

    def __init__(self, url: str, path: str, signals: Signals) -> None:
        self.url = url
        self.path = path
        self.signals = signals
        self._state = PerProcess(_Thread)
        self.newer_schema: int | None = None  # a schema version announced by a newer package's migration
        self.users = 0  # stores of this process sharing it (``listener_for``)

    @property
    def sender(self) -> str:
        """This process's name in the payloads it sends (its own are skipped when they come back)."""
        return _SENDER.get()

    @property
    def up(self) -> bool:
        """Listening now (False: waiters poll)."""
        return self._state.get().up.is_set()

    def ensure(self) -> None:
        """Start listening in this process if it is not already (cheap when it is)."""
        state = self._state.get()
        if state.thread is not None and state.thread.is_alive():
            return
        with state.lock:
            if state.thread is None or not state.thread.is_alive():
                state.stop.clear()
                state.thread = threading.Thread(target=self._run, args=(state,), name="ai-memory-listen", daemon=True)
                state.thread.start()

    def wait_up(self, timeout: float) -> bool:
        """Start listening and wait until it is (tests, and callers that want no missed wake-up at all)."""
        self.ensure()
        return self._state.get().up.wait(timeout)

    def stop(self) -> None:
        """Stop listening: the thread ends (and closes its connection) within ``_WAKE`` seconds."""
        self._state.get().stop.set()

    def _run(self, state: _Thread) -> None:
        delay = 0.1
        failing_since: float | None = None
        while not state.stop.is_set():
            try:
                with gate:
                    conn = psycopg.Connection.connect(
                        self.url,
                        autocommit=True,
                        connect_timeout=CONNECT_TIMEOUT,
                        keepalives=1,
                        keepalives_idle=10,
                        keepalives_interval=5,
                        keepalives_count=3,
                    )
                with conn:
                    for channel in (WORK_CHANNEL, ENDED_CHANNEL, SCHEMA_CHANNEL):
                        conn.execute(f"LISTEN {channel}")
                    state.up.set()
                    if failing_since is not None:
                        log.warning("listening to %s again after %.0fs", self.path, time.monotonic() - failing_since)
                    failing_since, delay = None, 0.1
                    self.signals.run_ended()  # what ended or was queued while not listening: every waiter re-checks
                    self.signals.work_queued()
                    while not state.stop.is_set():
                        for note in conn.notifies(timeout=_WAKE):
                            self._deliver(note.channel, note.payload)
            except psycopg.Error as exc:
                if failing_since is None:
                    failing_since = time.monotonic()
                    log.warning(
                        "notifications from %s interrupted (%s); waiting processes poll until they are back",
                        self.path,
                        " ".join(str(exc).split()),
                    )
            except Exception:  # pragma: no cover - never let the thread die silently
                log.exception("listener of %s failed", self.path)
            finally:
                state.up.clear()
            if not state.stop.wait(delay):
                delay = min(delay * 2, _RECONNECT_MAX)

    def _deliver(self, channel: str, payload: str) -> None:
        sender, _, rest = payload.partition(" ")
        if channel == SCHEMA_CHANNEL:
            from ._schema import SCHEMA_VERSION

            if payload.isdigit() and int(payload) > SCHEMA_VERSION:
                self.newer_schema = int(payload)
            return
        if sender == _SENDER.get():
            return  # this process signalled its own threads already
        if channel == WORK_CHANNEL:
            self.signals.work_queued()
        elif channel == ENDED_CHANNEL:
            self.signals.run_ended(rest.split(",") if rest else None)


_listeners: dict[str, Listener] = {}
_listeners_lock = PerProcess(threading.Lock)


def listener_for(url: str, path: str, signals: Signals) -> Listener:
    """The process's listener of one store (``path``: its masked URL), shared by the stores opened on it."""
    with _listeners_lock.get():
        listener = _listeners.get(path)
        if listener is None:
            listener = _listeners[path] = Listener(url, path, signals)
        listener.users += 1
        return listener


def release(listener: Listener) -> None:
    """A store closed: the last one stops the listener."""
    with _listeners_lock.get():
        listener.users -= 1
        if listener.users > 0:
            return
        if _listeners.get(listener.path) is listener:
            del _listeners[listener.path]
    listener.stop()
