"""A real Letta 0.11.7 server on 127.0.0.1, driven by a scripted OpenAI-compatible endpoint.

The ``letta`` engine must be tested against the real thing, not a mock of
letta-client. The server lives in its own virtualenv made by
``.ci/setup-letta.sh`` (``${AI_MEMORY_CACHE:-~/.cache/ai-memory-sdk}/letta-0.11.7``)
and is started as a subprocess with a throwaway HOME/LETTA_DIR, so runs never
share state. Its LLM and embeddings are a :class:`ScriptedOpenAI`; the
:class:`SleeptimeResponder` plays the sleeptime agent's model with simple
rules, so "Hi my name is Bob" really ends up in the ``human`` block.
Standard library and ``support.openai_server`` only (pytest optional): the
benchmarks import it as ``support.letta_server`` too.

Usage::

    with ScriptedOpenAI() as llm, LettaServer(llm.base_url) as letta:
        llm.responder = SleeptimeResponder()
        client = letta_client.Letta(base_url=letta.base_url, api_key="x")
        client.agents.create(..., embedding_config=letta.embedding_config)

or, in pytest, the session-scoped ``letta_server`` fixture (with ``letta_llm``).
"""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import socket
import sqlite3
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from support.openai_server import ScriptedOpenAI, reply

_log = logging.getLogger(__name__)

LETTA_VERSION = "0.11.7"
SETUP_COMMAND = "bash .ci/setup-letta.sh"
INSTALL_MARKER = ".ai-memory-sdk-installed"  # written by .ci/setup-letta.sh after a finished install
EMBEDDING_MODEL = "text-embedding-3-small"
EMBEDDING_DIM = 1536
DEFAULT_MODEL = "openai/gpt-4o-mini"
_DEAD_PROXY = "http://127.0.0.1:9"  # discard port: nothing listens, so a stray outside request fails fast  # the `openai-proxy/...` handles the server lists are refused

# Letta 0.11.7's ORM declares archives_agents.created_at with server_default="now()",
# which SQLite stores as the string 'now()'; the first archival insert then fails
# with 400 "Invalid isoformat string: 'now()'". The server creates its schema with
# create_all(checkfirst=True), so a table that already exists is left alone: we
# create this one, correctly, before the first start.
_ARCHIVES_AGENTS_DDL = """
CREATE TABLE IF NOT EXISTS archives_agents (
    agent_id VARCHAR NOT NULL,
    archive_id VARCHAR NOT NULL,
    created_at DATETIME DEFAULT CURRENT_TIMESTAMP NOT NULL,
    is_owner BOOLEAN NOT NULL,
    PRIMARY KEY (agent_id, archive_id),
    CONSTRAINT unique_agent_archive UNIQUE (agent_id),
    FOREIGN KEY(agent_id) REFERENCES agents (id) ON DELETE CASCADE,
    FOREIGN KEY(archive_id) REFERENCES archives (id) ON DELETE CASCADE
)
"""


class LettaNotInstalled(RuntimeError):
    """The Letta server venv is missing: run ``.ci/setup-letta.sh``."""


class LettaStartError(RuntimeError):
    """The server exited or did not answer ``/v1/health/`` in time (the message holds its log tail)."""


def letta_cache() -> Path:
    """The cache root shared with ``.ci/setup-letta.sh``."""
    return Path(os.environ.get("AI_MEMORY_CACHE") or Path.home() / ".cache" / "ai-memory-sdk")


def letta_venv() -> Path:
    """The separate virtualenv that holds ``letta[server,sqlite]==0.11.7``."""
    return letta_cache() / f"letta-{LETTA_VERSION}"


def original_sdk_venv() -> Path:
    """The virtualenv with the original ``ai-memory-sdk==0.2.0`` (letta-client 0.1.307), for benchmarks."""
    return letta_cache() / "ai-memory-sdk-0.2.0"


def is_installed() -> bool:
    """True when setup-letta.sh finished installing the server venv."""
    venv = letta_venv()
    return (venv / "bin" / "letta").exists() and (venv / INSTALL_MARKER).exists()


def _free_port(host: str) -> int:
    """A port the OS reports free now (the server binds it a moment later; a clash shows as a start error)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _die_with_parent() -> None:
    """In the child before exec: get SIGKILL when the starting thread dies (Linux), so no server outlives a killed test run."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def fix_archives_agents(db_path: Path) -> bool:
    """Create or repair ``archives_agents`` with a real timestamp default; True when something changed.

    Before the first start the table is simply created. On a database the
    server already made (DEFAULT 'now()'), the table is rebuilt with its rows;
    do this while no archival passage is being inserted.
    """
    conn = sqlite3.connect(str(db_path), timeout=30)
    try:
        row = conn.execute("SELECT sql FROM sqlite_master WHERE type='table' AND name='archives_agents'").fetchone()
        if row is None:
            conn.executescript(_ARCHIVES_AGENTS_DDL)
            return True
        if "'now()'" not in row[0]:
            return False
        conn.executescript(
            "BEGIN;"
            "ALTER TABLE archives_agents RENAME TO _archives_agents_old;" + _ARCHIVES_AGENTS_DDL + ";"
            "INSERT INTO archives_agents (agent_id, archive_id, created_at, is_owner)"
            " SELECT agent_id, archive_id,"
            " CASE WHEN created_at = 'now()' THEN CURRENT_TIMESTAMP ELSE created_at END, is_owner"
            " FROM _archives_agents_old;"
            "DROP TABLE _archives_agents_old;"
            "COMMIT;"
        )
        return True
    finally:
        conn.close()


class LettaServer:
    """``letta server`` in a subprocess with a private HOME, stopped (whole process group) on exit."""

    def __init__(
        self,
        llm_base_url: str,
        port: int = 0,
        *,
        host: str = "127.0.0.1",
        startup_timeout: float = 180.0,
        embedding_dim: int = EMBEDDING_DIM,
        default_embedding: bool = False,
        offline: bool = True,
        extra_env: dict[str, str] | None = None,
        venv: Path | None = None,
    ) -> None:
        """``llm_base_url`` ends in ``/v1``. ``default_embedding=True`` also registers
        ``openai/text-embedding-3-small`` as the server's default embedding (what the
        original SDK, which sends no embedding_config, needs). ``offline`` points the
        server's HTTP(S) proxy at a dead loopback port (loopback itself is exempt), so a
        test can never reach the internet by accident."""
        self.llm_base_url = llm_base_url.rstrip("/")
        self.host = host
        self.port = port
        self.startup_timeout = startup_timeout
        self.embedding_dim = embedding_dim
        self.default_embedding = default_embedding
        self.offline = offline
        self.extra_env = dict(extra_env or {})
        self.venv = Path(venv) if venv else letta_venv()
        self.base_url = ""
        self.startup_seconds: float | None = None
        self._tmp: tempfile.TemporaryDirectory | None = None
        self._proc: subprocess.Popen | None = None
        self._log_file: Any = None

    # -- paths and settings
    @property
    def home(self) -> Path:
        """The server's HOME (throwaway)."""
        if self._tmp is None:
            raise RuntimeError("LettaServer not started")
        return Path(self._tmp.name)

    @property
    def letta_dir(self) -> Path:
        return self.home / ".letta"

    @property
    def db_path(self) -> Path:
        """The server's SQLite database (inspect it in tests, e.g. for orphan blocks)."""
        return self.letta_dir / "sqlite.db"

    @property
    def log_path(self) -> Path:
        return self.home / "letta-server.log"

    @property
    def embedding_config(self) -> dict[str, Any]:
        """Pass as ``embedding_config=`` when creating agents: the server lists no handle for our endpoint."""
        return {
            "embedding_endpoint_type": "openai",
            "embedding_endpoint": self.llm_base_url,
            "embedding_model": EMBEDDING_MODEL,
            "embedding_dim": self.embedding_dim,
            "embedding_chunk_size": 300,
        }

    def env(self) -> dict[str, str]:
        """The server's environment: private dirs, loopback LLM, no telemetry, no proxy for loopback."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("LETTA_", "OPENAI_", "VIRTUAL_ENV"))}
        env.update(
            {
                "HOME": str(self.home),
                "LETTA_DIR": str(self.letta_dir),
                "OPENAI_API_KEY": "sk-test",
                "OPENAI_BASE_URL": self.llm_base_url,
                "LETTA_TELEMETRY_ENABLE_DATADOG": "false",
                "LETTA_DISABLE_TRACING": "true",
                "NO_PROXY": "127.0.0.1,localhost",
                "no_proxy": "127.0.0.1,localhost",
                "PATH": f"{self.venv / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}",
                "PYTHONUNBUFFERED": "1",
            }
        )
        static = self._llama_index_static()
        if static is not None:  # offline copies shipped in llama-index: no downloads at run time
            env["NLTK_DATA"] = str(static / "nltk_cache")  # sentence splitting of long passages
            env["TIKTOKEN_CACHE_DIR"] = str(static / "tiktoken_cache")  # cl100k_base, o200k_base
        if self.offline:  # anything not on loopback fails at once instead of reaching the internet
            for var in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY", "all_proxy"):
                env[var] = _DEAD_PROXY
        if self.default_embedding:
            env["LETTA_DEFAULT_EMBEDDING_HANDLE"] = f"openai/{EMBEDDING_MODEL}"
        env.update(self.extra_env)
        return env

    def _llama_index_static(self) -> Path | None:
        hits = sorted(self.venv.glob("lib/python*/site-packages/llama_index/core/_static"))
        return hits[0] if hits else None

    # -- lifecycle
    def start(self) -> LettaServer:
        """Prepare the private LETTA_DIR (schema fix, embedding config), start, wait for health."""
        exe = self.venv / "bin" / "letta"
        if not exe.exists():
            raise LettaNotInstalled(f"{exe} not found (run: {SETUP_COMMAND})")
        self._tmp = tempfile.TemporaryDirectory(prefix="letta-server-")
        self.letta_dir.mkdir(parents=True)
        fix_archives_agents(self.db_path)
        if self.default_embedding:
            self._write_default_embedding()
        if not self.port:
            self.port = _free_port(self.host)
        self.base_url = f"http://{self.host}:{self.port}"
        self._log_file = open(self.log_path, "wb")
        t0 = time.monotonic()
        self._proc = subprocess.Popen(
            [str(exe), "server", "--host", self.host, "--port", str(self.port)],
            cwd=str(self.home),
            env=self.env(),
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
        try:
            self._wait_healthy(t0)
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - t0
        if fix_archives_agents(self.db_path):  # a belt-and-braces check; create_all should have kept ours
            _log.warning("archives_agents had to be repaired after start")
        _log.info("letta %s up at %s in %.1f s", LETTA_VERSION, self.base_url, self.startup_seconds)
        return self

    def _write_default_embedding(self) -> None:
        cfg = dict(self.embedding_config, handle=f"openai/{EMBEDDING_MODEL}")
        folder = self.letta_dir / "embedding_configs"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{EMBEDDING_MODEL}.json").write_text(json.dumps(cfg))

    def _wait_healthy(self, t0: float) -> None:
        url = f"{self.base_url}/v1/health/"
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        while True:
            assert self._proc is not None
            if self._proc.poll() is not None:
                raise LettaStartError(f"letta server exited with {self._proc.returncode}:\n{self.log_tail()}")
            try:
                with opener.open(url, timeout=2) as resp:
                    if resp.status == 200 and json.loads(resp.read()).get("status") == "ok":
                        return
            except (urllib.error.URLError, OSError, ValueError):
                pass
            if time.monotonic() - t0 > self.startup_timeout:
                raise LettaStartError(
                    f"letta server not healthy after {self.startup_timeout:.0f} s:\n{self.log_tail()}"
                )
            time.sleep(0.2)

    def stop(self) -> None:
        """SIGTERM the process group, SIGKILL it after 15 s, remove the private HOME."""
        proc, self._proc = self._proc, None
        if proc is not None:
            for sig, wait in ((signal.SIGTERM, 15.0), (signal.SIGKILL, 5.0)):
                try:
                    os.killpg(proc.pid, sig)
                except ProcessLookupError:
                    break
                try:
                    proc.wait(timeout=wait)
                    break
                except subprocess.TimeoutExpired:
                    continue
            try:  # workers the server forked stay in its group; make sure none outlives it
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def log_tail(self, n: int = 60) -> str:
        """The last ``n`` lines of the server's log (for failure messages)."""
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return "(no log)"

    def __enter__(self) -> LettaServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


# ----------------------------------------------------------------------------- the sleeptime "model"
_FACT_RULES: Sequence[tuple[str, re.Pattern[str]]] = (
    ("Name", re.compile(r"\b(?i:my name is|my name's|call me)\s+([A-Z][\w'-]*(?:\s+[A-Z][\w'-]*)?)")),
    ("Location", re.compile(r"\bI (?:live|am living|'m living) in\s+([^.,;!?\n]+)", re.I)),
    ("Location", re.compile(r"\bI(?: am|'m) from\s+([^.,;!?\n]+)", re.I)),
    ("Job", re.compile(r"\bI work as (?:an? )?([^.,;!?\n]+)", re.I)),
    (
        "Job",
        re.compile(r"\bI(?: am|'m) an? ([a-z][\w -]*?(?:er|or|ist|ian|ant|ent|eer|ect|nurse|chef|doctor))\b", re.I),
    ),
    ("Likes", re.compile(r"\bI (?:really )?(?:love|like|enjoy|adore)\s+([^.,;!?\n]+)", re.I)),
    (
        "Dislikes",
        re.compile(r"\bI (?:really )?(?:hate|dislike|can't stand|do not like|don't like)\s+([^.,;!?\n]+)", re.I),
    ),
    ("Age", re.compile(r"\bI(?: am|'m) (\d{1,3}) years? old", re.I)),
)
_ROLE_LINE = re.compile(r"^\s*(user|assistant|system|tool)\s*:\s?(.*)$", re.I)


def extract_facts(text: str) -> list[str]:
    """``Key: value`` lines from the user's first-person statements in a transcript, in order, deduplicated."""
    lines = text.splitlines()
    user_lines = [m.group(2) for m in map(_ROLE_LINE.match, lines) if m and m.group(1).lower() == "user"]
    spoken = user_lines if any(_ROLE_LINE.match(ln) for ln in lines) else lines
    found: list[tuple[int, str]] = []
    for line_no, line in enumerate(spoken):
        for key, rx in _FACT_RULES:
            for m in rx.finditer(line):
                value = m.group(1).strip().rstrip(".!? ")
                if value:
                    found.append((line_no * 1000 + m.start(), f"{key}: {value}"))
    return list(dict.fromkeys(fact for _, fact in sorted(found)))


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""


_ENVELOPES = {"heartbeat", "system_alert", "login"}
_TAG = re.compile(r"</?[A-Za-z_][\w.:-]*(?:\s[^<>]*)?>")


def _user_turn(content: str) -> str | None:
    """The application's text of a user message; None for Letta's own JSON envelopes (heartbeats, alerts)."""
    try:
        data = json.loads(content)
    except ValueError:
        return content
    if isinstance(data, dict):
        if data.get("type") in _ENVELOPES:
            return None
        if isinstance(data.get("message"), str):
            return data["message"]
    return content


def block_value(system_prompt: str, label: str) -> str | None:
    """The value of block ``label`` as Letta 0.11.7 renders it in the system prompt (line-number prefixes removed)."""
    m = re.search(
        rf"<{re.escape(label)}>\s*<description>.*?</description>.*?<value>\n?(.*?)</value>\s*</{re.escape(label)}>",
        system_prompt,
        re.S,
    )
    if not m:
        return None
    lines = [ln for ln in m.group(1).splitlines() if not ln.startswith("# NOTE: Line numbers")]
    lines = [re.sub(r"^Line \d+: ?", "", ln) for ln in lines]
    return "\n".join(lines).strip("\n")


class SleeptimeResponder:
    """Plays the model of Letta's sleeptime agent: record first-person facts in ``human``, then finish.

    For the newest user turn (Letta's heartbeat messages are skipped) it plans one edit of
    the ``human`` block -- ``memory_rethink`` with the facts when the block is empty, else
    ``memory_insert`` of the facts not yet in it, e.g. ``"Name: Bob\\nLikes: cats"`` -- then
    ``memory_finish_edits``. Each LLM call answers the next step of the plan, counted by the
    assistant tool calls since that user turn, so a run is 2 LLM calls (1 without facts).
    Requests that offer no ``memory_finish_edits`` tool get ``None`` (the server's default reply).
    """

    def __init__(self, label: str = "human", summary_label: str | None = None) -> None:
        """``summary_label`` (e.g. ``"summary"``) adds a ``memory_rethink`` of that block to the plan."""
        self.label = label
        self.summary_label = summary_label
        self.calls = 0

    def __call__(self, req: dict) -> Any:
        tools = {(t.get("function") or {}).get("name") for t in req.get("tools") or []}
        if "memory_finish_edits" not in tools:
            return None
        self.calls += 1
        messages = req.get("messages") or []
        turn, text = -1, ""
        for i, m in enumerate(messages):
            if m.get("role") == "user":
                said = _user_turn(_text_of(m.get("content")))
                if said is not None:
                    turn, text = i, said
        done = sum(len(m.get("tool_calls") or []) for m in messages[turn + 1 :] if m.get("role") == "assistant")
        system = "\n".join(_text_of(m.get("content")) for m in messages if m.get("role") == "system")
        plan = self.plan(text, system) if turn >= 0 else []
        if done < len(plan):
            name, args = plan[done]
            thinking = f"Recording what the user said ({done + 1}/{len(plan)})."
        else:
            name, args = "memory_finish_edits", {}
            thinking = "Nothing more to record." if plan else "No new facts about the user."
        args = dict(args, thinking=thinking)
        if name != "memory_finish_edits":
            args["request_heartbeat"] = True
        return reply(tool_calls=[(name, args)])

    def plan(self, text: str, system_prompt: str) -> list[tuple[str, dict]]:
        """The edits for one user turn, given the block values Letta rendered into the system prompt."""
        current = block_value(system_prompt, self.label) or ""
        facts = [f for f in extract_facts(_TAG.sub(" ", text)) if f not in current]
        if not facts:
            return []
        if current.strip():
            steps = [("memory_insert", {"label": self.label, "new_str": "\n".join(facts), "insert_line": -1})]
        else:
            steps = [("memory_rethink", {"label": self.label, "new_memory": "\n".join(facts)})]
        if self.summary_label and block_value(system_prompt, self.summary_label) is not None:
            summary = "The user shared: " + "; ".join(facts) + "."
            steps.append(("memory_rethink", {"label": self.summary_label, "new_memory": summary}))
        return steps


# ----------------------------------------------------------------------------- pytest fixtures
try:  # the fixtures exist only where pytest does; benchmark venvs import the server alone
    import pytest
except ImportError:  # pragma: no cover
    pytest = None  # type: ignore[assignment]

if pytest is not None:

    @pytest.fixture(scope="session")
    def letta_llm() -> Iterator[ScriptedOpenAI]:
        """The session's scripted LLM behind the Letta server, answering as a :class:`SleeptimeResponder`."""
        with ScriptedOpenAI() as llm:
            llm.responder = SleeptimeResponder()
            yield llm

    @pytest.fixture(scope="session")
    def letta_server(letta_llm: ScriptedOpenAI) -> Iterator[LettaServer]:
        """One real Letta server per test session (start-up costs 10-40 s); tests create their own agents."""
        if not is_installed():
            msg = f"Letta {LETTA_VERSION} server venv missing at {letta_venv()}; run: {SETUP_COMMAND}"
            if os.environ.get("CI"):
                pytest.fail(msg)
            pytest.skip(msg)
        with LettaServer(letta_llm.base_url) as server:
            yield server
