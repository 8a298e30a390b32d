"""``ai-memory keys`` and ``ai-memory serve`` as a user runs them: key output, shutdown, several servers on one store."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from support.ai_memory_server import ServeProcess, headers
from support.openai_server import ScriptedOpenAI, reply

from ai_memory_sdk import Memory


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ai_memory_sdk.cli", *args], capture_output=True, text=True)


def test_keys_create_list_revoke(tmp_path: Path) -> None:
    path = str(tmp_path / "keys.db")
    listed = _cli("keys", "list", "--path", path)
    assert listed.returncode == 2 and f"no store at {path}" in listed.stderr
    made = _cli("keys", "create", "acme", "--path", path)
    assert made.returncode == 0, made.stderr
    key = made.stdout.strip().splitlines()[-1]  # the key is the last line
    assert key.startswith("aim_") and len(key) == 47
    assert key not in Path(path).read_bytes().decode("latin-1")  # only its hash is stored
    again = _cli("keys", "create", "acme", "--path", path)
    assert again.returncode == 2 and "an active key named 'acme' exists" in again.stderr
    bad = _cli("keys", "create", "no spaces", "--path", path)
    assert bad.returncode == 2 and "a key name must be" in bad.stderr
    assert _cli("keys", "create", "--path", path).returncode == 2
    listed = _cli("keys", "list", "--path", path)
    assert listed.returncode == 0 and "acme" in listed.stdout and key not in listed.stdout
    with ServeProcess(path, "--learner", "offline", "--embedder", "none") as server:
        assert httpx.get(f"{server.url}/v1/subjects", headers=headers(key)).status_code == 200
        revoked = _cli("keys", "revoke", "acme", "--path", path)
        assert revoked.returncode == 0 and "revoked" in revoked.stdout
        assert httpx.get(f"{server.url}/v1/subjects", headers=headers(key)).status_code == 401
    assert _cli("keys", "revoke", "acme", "--path", path).returncode == 2  # no active key of that name now
    assert "acme" in _cli("keys", "list", "--path", path).stdout  # listed with its revocation time
    renewed = _cli("keys", "create", "acme", "--path", path)  # a revoked name may get a new key
    assert renewed.returncode == 0 and renewed.stdout.strip().splitlines()[-1] != key


def test_serve_refuses_bad_options(tmp_path: Path) -> None:
    for args, words in (
        (["--port", "70000"], "port number"),
        (["--rate", "-1"], "requests per second"),
        (["--max-long-polls", "0"], "at least 1"),
        (["--workers", "-1"], "0: no workers in this process"),
    ):
        done = _cli("serve", "--path", str(tmp_path / "m.db"), *args)
        assert done.returncode == 2 and words in done.stderr, done.stderr


def test_shutdown_answers_what_is_in_flight_and_loses_nothing(tmp_path: Path) -> None:
    path = tmp_path / "m.db"
    with ScriptedOpenAI(latency=1.0) as llm:
        llm.responder = lambda req: reply(tool_calls=[("memory_finish_edits", {})])
        args = ("--learner", "llm", "--embedder", "none", "--workers", "1", "--close-timeout", "1")
        server = ServeProcess(path, *args, env={"OPENAI_BASE_URL": llm.base_url, "OPENAI_API_KEY": "sk-x"}).start()
        key = server.key()
        with Memory(server_url=server.url, server_api_key=key) as memory:
            runs = [memory.add_messages(f"u{i}", [{"role": "user", "content": f"I live in Town{i}"}]) for i in range(4)]
        held: dict[str, Any] = {}

        def poll() -> None:
            t0 = time.monotonic()
            held["r"] = httpx.get(f"{server.url}/v1/runs/{runs[-1]}/wait?timeout=20", headers=headers(key), timeout=30)
            held["s"] = time.monotonic() - t0

        poller = threading.Thread(target=poll)
        poller.start()
        time.sleep(0.5)
        t0 = time.monotonic()
        assert server.stop(signal.SIGTERM) == 0
        stopped_in = time.monotonic() - t0
        poller.join()
    log = server.log()
    assert held["r"].status_code == 200 and held["r"].json()["status"] in ("queued", "running"), held["r"].text
    assert held["s"] < 5  # the long poll answered at shutdown, not after its 20 s
    assert stopped_in < 15, log
    assert "stopped: every request answered" in log and "not learned yet" in log, log
    with (
        ServeProcess(path, "--learner", "offline", "--embedder", "none") as again,  # the next server learns the rest
        Memory(server_url=again.url, server_api_key=key) as memory,
    ):
        for i, run in enumerate(runs):
            memory.wait_for_run(run, timeout=30)
            assert memory.get_run(run).status == "completed"
            assert [m.content for m in memory.get_messages(f"u{i}")] == [f"I live in Town{i}"]


@pytest.mark.parametrize("store", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_two_servers_on_one_store_serve_one_tenant(tmp_path: Path, store: str, request: pytest.FixtureRequest) -> None:
    """Nothing that matters lives in one server process: a tenant sees the same memory through either.

    On PostgreSQL the two could be on two machines: the long poll on one wakes by NOTIFY from the other.
    """
    path = str(tmp_path / "shared.db") if store == "sqlite" else request.getfixturevalue("postgres_url")
    args = ("--learner", "offline", "--embedder", "none")
    with ServeProcess(path, *args) as one, ServeProcess(path, *args) as two:
        key = one.key()
        a = Memory(server_url=one.url, server_api_key=key)
        b = Memory(server_url=two.url, server_api_key=key)
        try:
            run = a.add_messages("kim", [{"role": "user", "content": "My name is Kim and I live in Oslo"}], False)
            b.wait_for_run(run, timeout=30)  # a long poll on the other server wakes when the run ends
            assert b.get_user_memory("kim") == a.get_user_memory("kim") == "Name: Kim\nLocation: Oslo"
            assert b.search("kim", "Oslo") == ["My name is Kim and I live in Oslo"]
            b.set_memory("human", "Name: Kim", subject_id="kim")
            assert a.get_memory("human", subject_id="kim") == "Name: Kim"
            runs = [
                (a if i % 2 else b).add_messages("kim", [{"role": "user", "content": f"I like tea{i}"}])
                for i in range(6)
            ]
            for run in runs:
                a.wait_for_run(run, timeout=30)
            assert [r.id for r in b.list_runs("kim")][-6:] == runs  # one queue, in order
            b.delete_user("kim")
            assert a.get_user_memory("kim") is None
        finally:
            a.close()
            b.close()


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_serve_exits_cleanly_on_either_signal(tmp_path: Path, sig: int) -> None:
    server = ServeProcess(tmp_path / "m.db", "--learner", "offline", "--embedder", "none").start()
    assert server.stop(sig) == 0
    assert "stopped" in server.log()


def test_serve_without_workers_leaves_learning_to_worker_processes(tmp_path: Path) -> None:
    path = tmp_path / "m.db"
    with ServeProcess(path, "--learner", "offline", "--embedder", "none", "--workers", "0") as server:
        assert f"no workers (ai-memory worker --path {path} learns)" in server.log()
        key = server.key()
        assert httpx.get(f"{server.url}/readyz", headers=headers(key)).json()["checks"]["workers"] == "ok"
        with Memory(server_url=server.url, server_api_key=key) as memory:
            run = memory.add_messages("ivy", [{"role": "user", "content": "My name is Ivy"}])
            time.sleep(1.0)
            assert memory.get_run(run).status == "queued"  # nobody learns here
            done = _cli("worker", "--once", "--path", str(path), "--learner", "offline", "--embedder", "none")
            assert done.returncode == 0, done.stderr
            memory.wait_for_run(run, timeout=10)
            assert memory.get_user_memory("ivy") == "Name: Ivy"
