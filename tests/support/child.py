"""A Python child program (``tests/support/procs/<script>``) that reports on stdout, one line at a time.

The durability and reliability tests (and ``benchmarks/soak.py``) start processes
that use the public API, read their progress lines, and SIGKILL them at chosen
moments. Stdout is collected by a thread, so a kill never blocks the reader;
stderr goes to a file, so a chatty child never blocks on a full pipe.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
PROCS = Path(__file__).resolve().parent / "procs"


class Child:
    """``python tests/support/procs/<script> '<cfg as JSON>'``, started at once, its stdout lines in ``lines``."""

    def __init__(self, script: str, cfg: dict[str, Any], *, env: dict[str, str] | None = None) -> None:
        self._stderr = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(
            [sys.executable, str(PROCS / script), json.dumps(cfg)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
            cwd=str(ROOT),
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
        )
        self.lines: list[str] = []
        self._eof = False
        self._cond = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._cond:
                self.lines.append(line.rstrip("\n"))
                self._cond.notify_all()
        with self._cond:
            self._eof = True
            self._cond.notify_all()

    def wait_line(self, prefix: str, timeout: float) -> str | None:
        """The first line starting with ``prefix``; None when the child's stdout ended or ``timeout`` passed."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                hit = next((line for line in self.lines if line.startswith(prefix)), None)
                if hit is not None or self._eof:
                    return hit
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._cond.wait(left)

    def expect_line(self, prefix: str, timeout: float) -> str:
        """Like :meth:`wait_line`, but a child that never printed the line fails the test, saying what it did."""
        line = self.wait_line(prefix, timeout)
        if line is None:
            raise AssertionError(
                f"child never printed {prefix!r}; rc={self.proc.poll()}, stdout={self.lines[-5:]}, "
                f"stderr={self.stderr_tail(3000)}"
            )
        return line

    def lines_with(self, prefix: str) -> list[str]:
        with self._cond:
            return [line for line in self.lines if line.startswith(prefix)]

    def send(self, text: str) -> None:
        """Write one line to the child's stdin."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(text + "\n")
        self.proc.stdin.flush()

    def kill(self) -> None:
        """SIGKILL (if still alive) and reap it: its pid is dead for the next opener's liveness check."""
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)
        self._reader.join(10)
        self._close()

    def finish(self, timeout: float) -> int:
        """Wait for the child to exit by itself; its exit status."""
        try:
            return self.proc.wait(timeout)
        finally:
            self._reader.join(10)

    def stderr_tail(self, n: int | None = 4000) -> str:
        """The last ``n`` characters the child wrote to stderr (all of it when ``n`` is None)."""
        self._stderr.seek(0)
        text = self._stderr.read().decode("utf-8", "replace")
        return text if n is None else text[-n:]

    def _close(self) -> None:
        if self.proc.stdin is not None and not self.proc.stdin.closed:
            try:
                self.proc.stdin.close()
            except BrokenPipeError:
                pass
