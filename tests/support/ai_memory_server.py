"""Real ``ai-memory serve`` servers on 127.0.0.1 for tests and benchmarks.

- :class:`ServeProcess`: the real command in a subprocess (``python -m ai_memory_sdk.cli serve
  --port 0``), stopped with SIGTERM; its log is kept for assertions.
- :class:`ThreadServer`: ``create_app`` under uvicorn in a thread of the test process, for tests
  that need other limits or want to read the engine or the log records directly.
- :func:`new_key`: a fresh key (a new tenant) made straight in the store, as ``ai-memory keys
  create`` makes it.

Fixtures: ``ai_memory_server`` (one ``ServeProcess`` per test session, offline learner, lexical
search) and ``remote_key`` (a new tenant's key per test).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import uvicorn

from ai_memory_sdk.config import Settings
from ai_memory_sdk.engines.local import LocalEngine
from ai_memory_sdk.server.app import create_app
from ai_memory_sdk.server.auth import create_key
from ai_memory_sdk.server.limits import ServerSettings
from ai_memory_sdk.store import open_store

ROOT = Path(__file__).resolve().parents[2]
_READY = re.compile(r"serving (http://\S+) ")


def new_key(path: str | Path, name: str | None = None) -> str:
    """A key for a new tenant (``name``, else a unique one) in the store at ``path``."""
    store = open_store(str(path))
    try:
        return create_key(store, name or f"t-{uuid.uuid4().hex[:12]}")
    finally:
        store.close()


class ServeProcess:
    """``ai-memory serve`` in a subprocess; ``url`` once started."""

    def __init__(self, path: str | Path, *args: str, env: dict[str, str] | None = None) -> None:
        self.path = str(path)
        self.args = list(args)
        self.env = {**os.environ, **(env or {})}
        self.log_path = Path(tempfile.mkstemp(prefix="ai-memory-serve-", suffix=".log")[1])
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = ""

    def start(self, timeout: float = 60.0) -> ServeProcess:
        command = [sys.executable, "-m", "ai_memory_sdk.cli", "serve", "--path", self.path, "--port", "0", *self.args]
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=self.env, cwd=ROOT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = _READY.search(self.log())
            if found:
                self.url = found.group(1)
                return self
            if self.proc.poll() is not None:
                raise RuntimeError(f"ai-memory serve exited with {self.proc.returncode}:\n{self.log()}")
            time.sleep(0.05)
        self.stop(signal.SIGKILL)
        raise RuntimeError(f"ai-memory serve did not start within {timeout}s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def key(self, name: str | None = None) -> str:
        return new_key(self.path, name)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60.0) -> int:
        """Signal the server and wait for it to exit; its exit status."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def __enter__(self) -> ServeProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class ThreadServer:
    """The app over a ``LocalEngine`` under uvicorn in a thread of this process; ``url``, ``engine``, ``app``."""

    def __init__(self, path: str | Path, settings: ServerSettings | None = None, **options: Any) -> None:
        options = {"learner": "offline", "embedder": "none", **options}
        self.path = str(path)
        self.engine = LocalEngine(Settings(path=self.path, **options))
        self.app = create_app(self.engine, settings)
        self.state = self.app.state.server
        config = uvicorn.Config(self.app, host="127.0.0.1", port=0, log_config=None, access_log=False)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="test-uvicorn", daemon=True)
        self.url = ""
        self.tenant_key = ""  # a key a caller made and keeps with the server

    def start(self) -> ThreadServer:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the in-thread server did not start")
            time.sleep(0.01)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    def key(self, name: str | None = None) -> str:
        return create_key(self.engine.store, name or f"t-{uuid.uuid4().hex[:12]}")

    def stop(self) -> None:
        self.state.stopping.set()
        self.server.should_exit = True
        self.thread.join(30)
        self.engine.close()

    def __enter__(self) -> ThreadServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def headers(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture(scope="session")
def ai_memory_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeProcess]:
    """One ``ai-memory serve`` for the session: offline learner, lexical search, no rate limit."""
    path = tmp_path_factory.mktemp("serve") / "server.db"
    args: Sequence[str] = ("--learner", "offline", "--embedder", "none", "--rate", "0")
    with ServeProcess(path, *args) as server:
        yield server


@pytest.fixture
def remote_key(ai_memory_server: ServeProcess) -> str:
    """A new tenant's key on the session's server: every test starts with an empty memory."""
    return ai_memory_server.key()
