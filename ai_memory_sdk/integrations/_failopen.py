"""Fail-open reporting: memory that fails must not fail the application's call, nor flood its log.

The first failure of each kind (what was being done, and the exception type or
a timeout) is one WARNING saying what happened and that the call went on
without memory; repeats are logged at DEBUG.
"""

from __future__ import annotations

import logging
import threading


class FailOpen:
    def __init__(self, log: logging.Logger, owner: str) -> None:
        self._log = log
        self._owner = owner
        self._seen: set[tuple[str, str]] = set()
        self._lock = threading.Lock()

    def failed(self, doing: str, exc: BaseException | None, *, timeout: float | None = None) -> None:
        """Report that ``doing`` failed with ``exc``, or (``exc`` None) took longer than ``timeout`` seconds."""
        kind = (doing, type(exc).__name__ if exc is not None else "timeout")
        with self._lock:
            first = kind not in self._seen
            self._seen.add(kind)
        why = f"{type(exc).__name__}: {exc}" if exc is not None else f"took longer than {timeout:g} s"
        if first:
            self._log.warning(
                "%s: %s failed (%s); going on without memory. Later failures of this kind are logged at DEBUG.",
                self._owner,
                doing,
                why,
            )
        else:
            self._log.debug("%s: %s failed again (%s)", self._owner, doing, why)
