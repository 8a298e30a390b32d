"""JSON lines between ``vs_peers.py`` and a peer's driver running in the peer's own virtualenv.

Standard library only: both ends import it (the driver as a top-level module
from its own folder, the benchmark as ``peers._driver``). A request is one line
``{"op": name, "args": {...}}``; the answer is one line ``{"value": ...,
"seconds": ...}`` (the call's duration measured inside the driver, so the pipe
costs the peer nothing) or ``{"error": ..., "traceback": ...}``. The driver's
own ``print`` output goes to stderr, so a peer that prints (ai-memory-sdk 0.2.0's
``delete_user`` does) cannot break the channel.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any


def serve(handlers: dict[str, Callable[..., Any]]) -> None:
    """Answer requests from stdin until it closes (runs inside the peer's venv)."""
    channel: IO[str] = sys.stdout
    sys.stdout = sys.stderr
    for line in sys.stdin:
        request = json.loads(line)
        t0 = time.perf_counter()
        try:
            value = handlers[request["op"]](**request.get("args", {}))
        except Exception as exc:  # reported to the benchmark, which stops with it
            answer: dict[str, Any] = {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()}
        else:
            answer = {"value": value, "seconds": time.perf_counter() - t0}
        channel.write(json.dumps(answer) + "\n")
        channel.flush()


class PeerError(RuntimeError):
    """The driver answered an error or died; the message holds its traceback or log tail."""


class Peer:
    """A driver script started under another venv's python; ``call`` sends one request and waits for its answer."""

    def __init__(self, python: Path, script: Path, log: Path, env: dict[str, str] | None = None) -> None:
        self.log = log
        self._log_file = open(log, "w")  # noqa: SIM115 (closed in close())
        self._proc = subprocess.Popen(
            [str(python), str(script)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log_file,
            text=True,
            cwd=str(log.parent),
            env=env if env is not None else dict(os.environ),
        )

    def call(self, op: str, **args: Any) -> tuple[Any, float]:
        """(value, seconds the call took inside the driver)."""
        proc = self._proc
        assert proc.stdin is not None and proc.stdout is not None
        try:
            proc.stdin.write(json.dumps({"op": op, "args": args}) + "\n")
            proc.stdin.flush()
        except BrokenPipeError:
            pass
        line = proc.stdout.readline()
        if not line:
            raise PeerError(f"driver exited ({proc.poll()}) during {op!r}:\n{self.log_tail()}")
        answer = json.loads(line)
        if "error" in answer:
            raise PeerError(f"{op}: {answer['error']}\n{answer.get('traceback', '')}")
        return answer["value"], float(answer["seconds"])

    def log_tail(self, n: int = 40) -> str:
        self._log_file.flush()
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])

    def close(self) -> None:
        """Close stdin (the driver's loop ends), wait a little, then kill."""
        proc = self._proc
        if proc.stdin is not None and not proc.stdin.closed:
            try:
                proc.stdin.close()
            except BrokenPipeError:
                pass
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
        self._log_file.close()

    def __enter__(self) -> Peer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
