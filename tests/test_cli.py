"""The ``ai-memory`` command, run as a user runs it: the console script in a subprocess, on real SQLite files.

A mistake (command line, file, environment) must end with exit status 2 and
one line on stderr naming what was wrong; a failed run with status 1 and one
line naming its cause; never a traceback.
"""

from __future__ import annotations

import ast
import fcntl
import json
import os
import pty
import queue
import select
import socket
import struct
import subprocess
import sys
import termios
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import pytest
from support.openai_server import ScriptedOpenAI, fail

import ai_memory_sdk
from ai_memory_sdk import Memory
from ai_memory_sdk.cli import MODULES, build_parser
from ai_memory_sdk.cli._open import _require_store
from ai_memory_sdk.config import resolve

CLI = str(Path(sys.executable).parent / "ai-memory")
QUIET = ("--learner", "offline", "--embedder", "none")  # no warning, no model load: fast and exact output
CHAT = [
    {"role": "user", "content": "I am Kai and I love sailing."},
    {"role": "assistant", "content": "Sailing is great."},
]


def cli(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CLI, *args], capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})}
    )


def assert_usage_error(proc: subprocess.CompletedProcess[str], *names: str) -> str:
    """Exit status 2, exactly one line on stderr that names each of ``names``, no traceback."""
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    for name in names:
        assert name in lines[0], lines[0]
    return lines[0]


def write_jsonl(path: Path, records: Sequence[object]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


@pytest.fixture
def db(tmp_path: Path) -> str:
    return str(tmp_path / "memory.db")


@pytest.fixture
def chat(tmp_path: Path) -> Path:
    return write_jsonl(tmp_path / "chat.jsonl", CHAT)


@pytest.fixture
def learned(db: str, chat: Path) -> str:
    """A store where subject u1 has learned the chat."""
    proc = cli("--path", db, *QUIET, "ingest", str(chat), "--subject", "u1")
    assert proc.returncode == 0, proc.stderr
    return db


def free_port() -> int:
    """A port nothing listens on: connections to it are refused."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def stop(proc: subprocess.Popen[bytes] | subprocess.Popen[str]) -> None:
    proc.kill()
    proc.wait(timeout=30)


def run_on_terminal(args: list[str], env: dict[str, str], until: float, seen: str = "") -> str:
    """What the command writes to a 120-column terminal (stdout and stderr) within ``until`` seconds.

    It is stopped when it ends, after ``until`` seconds, or once ``seen`` is on the screen.
    """
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 120, 0, 0))
    proc = subprocess.Popen([CLI, *args], stdin=slave, stdout=slave, stderr=slave, env={**os.environ, **env})
    os.close(slave)
    out = b""
    deadline = time.monotonic() + until
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.1)
            if ready:
                try:
                    chunk = os.read(master, 65536)
                except OSError:  # the command ended and closed the terminal
                    break
                if not chunk:
                    break
                out += chunk
                if seen and seen.encode() in out:
                    break
    finally:
        stop(proc)
        os.close(master)
    return out.decode("utf-8", "replace")


# -- 2: ingest creates the user's blocks ----------------------------------------------------------


def test_ingest_creates_the_default_user_blocks(learned: str) -> None:
    shown = cli("--path", learned, "show", "u1")
    assert shown.returncode == 0, shown.stderr
    assert '<human description="Details about the human user you are speaking to.">' in shown.stdout
    assert "Kai" in shown.stdout and "<summary" in shown.stdout
    runs = cli("--path", learned, "runs", "u1")
    assert " completed " in runs.stdout


def test_ingest_bare_makes_a_subject_without_blocks(db: str, chat: Path) -> None:
    proc = cli("--path", db, *QUIET, "ingest", str(chat), "--subject", "u1", "--bare")
    assert proc.returncode == 0, proc.stderr
    assert "2 messages stored for subject 'u1'; nothing learned: it has no blocks" in proc.stdout
    assert "learned for" not in proc.stdout
    assert cli("--path", db, "show", "u1").stdout.strip() == "subject 'u1' has no blocks"
    runs = cli("--path", db, "runs", "u1").stdout.splitlines()
    assert "stop" in runs[0].split() and runs[-1].split()[-1] == "no_blocks", runs  # no error column text


# -- 4: a slow or failing LLM endpoint ------------------------------------------------------------


def test_a_failed_run_ends_with_one_line_naming_the_endpoint_and_cause(openai_server: ScriptedOpenAI) -> None:
    openai_server.script(fail(401))
    env = {"OPENAI_BASE_URL": openai_server.base_url, "OPENAI_API_KEY": "sk-wrong"}
    proc = cli("demo", "--embedder", "none", "--timeout", "60", env=env)
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.returncode == 1, (proc.returncode, proc.stderr)
    lines = proc.stderr.splitlines()
    assert any(
        line.startswith(f"learning batch 1 with llm gpt-4.1-mini at {openai_server.base_url}; waiting (run run-")
        for line in lines
    ), lines
    assert lines[-1].startswith("ai-memory: error: "), lines
    assert openai_server.base_url in lines[-1] and "HTTP 401" in lines[-1], lines[-1]


def test_a_dead_endpoint_is_not_silent() -> None:
    url = f"http://127.0.0.1:{free_port()}/v1"
    proc = subprocess.Popen(
        [CLI, "demo", "--embedder", "none"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "OPENAI_BASE_URL": url},
    )
    lines: queue.Queue[str] = queue.Queue()

    def read() -> None:
        for line in proc.stderr or []:
            lines.put(line)

    threading.Thread(target=read, daemon=True).start()
    try:
        line = lines.get(timeout=30)  # the learner retries for two minutes: the user must see why it waits
    finally:
        stop(proc)
    assert line.startswith(f"learning batch 1 with llm gpt-4.1-mini at {url}; waiting (run run-"), line


def test_the_waiting_line_updates_on_a_terminal() -> None:
    url = f"http://127.0.0.1:{free_port()}/v1"
    screen = run_on_terminal(["demo", "--embedder", "none"], {"OPENAI_BASE_URL": url}, until=15, seen="waiting 00:03")
    assert f"with llm gpt-4.1-mini at {url}; waiting 00:00" in screen, screen
    assert f"{url}; waiting 00:03" in screen, screen  # the elapsed time moves while the endpoint is retried


# -- 6: reading never learns -------------------------------------------------------------------------


def test_read_only_commands_do_not_learn(db: str) -> None:
    with Memory(path=db, background=False, learner="offline", embedder="none") as mem:
        run = mem.add_messages("u1", CHAT, skip_vector_storage=False)
    for args in (["show", "u1"], ["search", "u1", "sailing"], ["runs", "u1"], ["show", "nobody"]):
        cli("--path", db, *args)
        with Memory(path=db, background=False, learner="offline", embedder="none") as mem:
            assert mem.get_run(run).status == "queued", args


# -- 7: ordinary mistakes are one line, exit 2, and store nothing ----------------------------------


def test_a_bad_jsonl_line_names_the_file_and_line(db: str, tmp_path: Path) -> None:
    path = tmp_path / "chat.jsonl"
    path.write_text(json.dumps(CHAT[0]) + "\n\n" + '{"role": "user", "content": \n', encoding="utf-8")
    line = assert_usage_error(cli("--path", db, *QUIET, "ingest", str(path), "--subject", "u1"))
    assert line.startswith(f"ai-memory: error: {path} line 3: invalid JSON"), line
    assert not Path(db).exists()


def test_a_missing_file_is_named(db: str, tmp_path: Path) -> None:
    missing = tmp_path / "nope.jsonl"
    assert_usage_error(cli("--path", db, *QUIET, "ingest", str(missing), "--subject", "u1"), f"{missing}: no such file")


def test_the_whole_file_is_checked_before_anything_is_stored(db: str, tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "chat.jsonl", [*CHAT, {"role": "bot", "content": "hi"}])
    line = assert_usage_error(cli("--path", db, *QUIET, "ingest", str(path), "--subject", "u1", "--batch", "1"))
    assert f"{path} line 3: message.role must be one of user, assistant" in line, line
    assert "'bot'" in line
    assert not Path(db).exists()  # the two good lines were not stored (nor learned) first


@pytest.mark.parametrize("form", ["list", "object"])
def test_errors_in_a_json_document_name_the_line(db: str, tmp_path: Path, form: str) -> None:
    messages = [*CHAT, {"role": "user", "content": "fine"}, {"role": "user"}]
    path = tmp_path / "chat.json"
    text = json.dumps(messages if form == "list" else {"title": "t", "messages": messages}, indent=2)
    path.write_text(text, encoding="utf-8")
    lines = text.split("\n")
    start = [n for n, line in enumerate(lines, 1) if line.strip() == "{"][-1]  # where the 4th message opens
    line = assert_usage_error(cli("--path", db, *QUIET, "ingest", str(path), "--subject", "u1"))
    assert f"{path} line {start}: message.content is missing" in line, (line, text)


@pytest.mark.parametrize(
    ("args", "option"),
    [
        (["ingest", "{chat}", "--subject", "u1", "--batch", "0"], "argument --batch"),
        (["ingest", "{chat}", "--subject", ""], "argument --subject"),
        (["search", "u1", " "], "argument query"),
        (["search", "u1", "sailing", "--limit", "0"], "argument --limit"),
        (["demo", "--timeout", "-1"], "argument --timeout"),
    ],
)
def test_bad_arguments_name_the_option(db: str, chat: Path, args: list[str], option: str) -> None:
    args = [a.replace("{chat}", str(chat)) for a in args]
    assert_usage_error(cli("--path", db, *QUIET, *args), option)


@pytest.mark.parametrize(
    ("var", "value", "args"),
    [
        ("AI_MEMORY_LEARNER", "LLM", ["ingest", "{chat}", "--subject", "u1"]),
        ("AI_MEMORY_ENGINE", "sqlite", ["show", "u1"]),
        ("AI_MEMORY_EMBEDDER", "bert", ["--learner", "offline", "demo"]),
    ],
)
def test_a_bad_environment_value_names_the_variable(
    learned: str, chat: Path, var: str, value: str, args: list[str]
) -> None:
    args = [a.replace("{chat}", str(chat)) for a in args]
    assert_usage_error(cli("--path", learned, *args, env={var: value}), f"environment variable {var}", repr(value))


@pytest.mark.parametrize("name", ["chat.ndjson", "chat.txt", "chat.json", "chat"])
def test_json_lines_are_recognised_by_content(db: str, tmp_path: Path, name: str) -> None:
    path = write_jsonl(tmp_path / name, CHAT)
    proc = cli("--path", db, *QUIET, "ingest", str(path), "--subject", "u1")
    assert proc.returncode == 0, proc.stderr
    assert "2 messages learned for subject 'u1'" in proc.stdout


# -- 8: options, help, stores and subjects that do not exist, where warnings and bars go ------------


def test_store_options_work_after_the_command(learned: str) -> None:
    proc = cli("show", "u1", "--path", learned, "--embedder", "none")
    assert proc.returncode == 0, proc.stderr
    assert "<human" in proc.stdout


def test_version() -> None:
    proc = cli("--version")
    assert proc.returncode == 0
    assert proc.stdout.strip() == f"ai-memory {ai_memory_sdk.__version__}"


def test_every_argument_has_help() -> None:
    parser, _ = build_parser(MODULES)
    parsers = [
        parser,
        *(a.choices[c] for a in parser._actions if a.choices and isinstance(a.choices, dict) for c in a.choices),
    ]
    for p in parsers:
        for action in p._actions:
            assert action.help, f"{p.prog}: {action.option_strings or action.dest} has no help"
    assert {"demo", "ingest", "worker", "show", "search", "runs", "delete"} <= {p.prog.split()[-1] for p in parsers}


@pytest.mark.parametrize("args", [["show", "kai"], ["search", "kai", "sailing"], ["runs", "kai"], ["delete", "kai"]])
def test_a_mistyped_path_is_refused_and_nothing_is_created(tmp_path: Path, args: list[str]) -> None:
    wrong = tmp_path / "typo" / "memory.db"
    assert_usage_error(cli(*args, "--path", str(wrong)), f"no store at {wrong}")
    assert not wrong.parent.exists()


def test_a_database_url_is_not_looked_for_as_a_file() -> None:
    _require_store(resolve(path="postgresql://ai@127.0.0.1/memory"))  # no "no store at" for a server's store
    with pytest.raises(Exception, match="no store at"):
        _require_store(resolve(path="/nonexistent/memory.db"))


def test_deleting_an_unknown_subject_says_so(learned: str) -> None:
    assert_usage_error(cli("--path", learned, "delete", "nobody"), f"no subject 'nobody' in {learned}")
    proc = cli("--path", learned, "delete", "u1")
    assert proc.returncode == 0 and "deleted everything stored about 'u1'" in proc.stdout
    assert_usage_error(cli("--path", learned, "show", "u1"), "no subject 'u1'")


def test_the_no_llm_warning_only_where_learning_happens(learned: str, chat: Path) -> None:
    for args in (["show", "u1"], ["runs", "u1"], ["search", "u1", "sailing"]):
        proc = cli("--path", learned, *args)
        assert proc.returncode == 0 and proc.stderr == "", (args, proc.stderr)
    proc = cli("--path", learned, "--embedder", "none", "ingest", str(chat), "--subject", "u2")
    assert proc.returncode == 0 and "no LLM configured" in proc.stderr


def test_no_progress_bars_when_stderr_is_not_a_terminal(db: str, chat: Path) -> None:
    proc = cli("--path", db, *QUIET, "ingest", str(chat), "--subject", "u1", "--batch", "1")
    assert proc.returncode == 0, proc.stderr
    assert "\r" not in proc.stderr
    assert proc.stderr.splitlines() == [f"learning 2 batch(es) of {chat} with the offline learner; waiting"]


def test_progress_bars_on_a_terminal(db: str, chat: Path) -> None:
    screen = run_on_terminal(["--path", db, *QUIET, "ingest", str(chat), "--subject", "u1"], {}, until=30)
    assert "storing:" in screen and "msg/s]" in screen, screen
    assert "2 messages learned for subject 'u1'" in screen


def test_the_worker_learns_what_was_queued(db: str) -> None:
    with Memory(path=db, background=False, learner="offline", embedder="none") as mem:
        run = mem.add_messages("u1", CHAT)
    proc = cli("--path", db, *QUIET, "worker", "--once")
    assert proc.returncode == 0, proc.stderr
    with Memory(path=db, background=False, learner="offline", embedder="none") as mem:
        assert mem.get_run(run).status == "completed"
        assert "Kai" in (mem.get_user_memory("u1") or "")


# -- 9: the demo -----------------------------------------------------------------------------------


def test_the_demo_works_without_a_key() -> None:
    proc = cli("demo")
    assert proc.returncode == 0, proc.stderr
    assert "Name: Maya" in proc.stdout and "<summary" in proc.stdout
    assert "no LLM configured" in proc.stderr


def test_the_demo_prints_the_search_it_runs(db: str) -> None:
    proc = cli("--path", db, *QUIET, "demo")
    assert proc.returncode == 0, proc.stderr
    line = next(line for line in proc.stdout.splitlines() if line.startswith("memory.search("))
    call, _, printed = line.partition(" -> ")
    node = ast.parse(call, mode="eval").body
    assert isinstance(node, ast.Call)
    args = [ast.literal_eval(a) for a in node.args]
    kwargs = {k.arg: ast.literal_eval(k.value) for k in node.keywords if k.arg}
    with Memory(path=db, background=False, learner="offline", embedder="none") as mem:
        again = mem.search(*args, **kwargs)
    assert again == ast.literal_eval(printed) and again, line
