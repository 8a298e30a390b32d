"""Request ids: one per HTTP request (``X-Request-ID``), on its access-log line and on the log lines it causes.

A request's id is taken from its ``X-Request-ID`` header when that is a
sensible token (1-128 characters of ``A-Za-z0-9._:-``), else generated, and
sent back in the response's ``X-Request-ID``. While the request is handled
the id is in a context variable, so anything logged on its behalf (the
handler's thread included) carries it.

The run a request queues is learned later, by a worker thread. Rather than
storing the id with the run (it would show up in the application's data), the
server remembers which request queued each run (``RUNS``, the latest 100,000
in this process), and the worker marks its thread with the runs of the pass
it is learning (``worker.current_runs``): :class:`RequestIdFilter` gives the
pass's log lines the ids of the requests that queued its runs. A run learned
by another process (several servers on one PostgreSQL store) is logged there
with its run id, which the queueing request's access-log line also names.
"""

from __future__ import annotations

import logging
import re
import threading
import uuid
from collections import OrderedDict
from contextvars import ContextVar

from ..worker import current_runs

_VALID = re.compile(r"[A-Za-z0-9._:-]{1,128}\Z")
HEADER = "X-Request-ID"

request_id: ContextVar[str | None] = ContextVar("ai_memory_request_id", default=None)


def from_header(value: str | None) -> str:
    """The client's request id if it is a sensible token, else a new one (never echo arbitrary text into logs)."""
    if value is not None and _VALID.match(value):
        return value
    return uuid.uuid4().hex


class RunRequests:
    """Which request queued which run, for the newest ``size`` runs of this process."""

    def __init__(self, size: int = 100_000) -> None:
        self._size = size
        self._map: OrderedDict[str, str] = OrderedDict()
        self._lock = threading.Lock()

    def record(self, run_id: str, rid: str) -> None:
        with self._lock:
            self._map[run_id] = rid
            self._map.move_to_end(run_id)
            while len(self._map) > self._size:
                self._map.popitem(last=False)

    def lookup(self, run_ids: tuple[str, ...]) -> str | None:
        with self._lock:
            found = [self._map[r] for r in run_ids if r in self._map]
        return ",".join(dict.fromkeys(found)) or None


RUNS = RunRequests()


class RequestIdFilter(logging.Filter):
    """Gives every record a ``request_id`` attribute: the request's, the queueing requests' of a pass, or ``-``."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            rid = request_id.get()
            if rid is None:
                runs = current_runs.get()
                rid = RUNS.lookup(runs) if runs else None
            record.request_id = rid or "-"
        return True
