"""``ai-memory migrate`` (SQLite <-> PostgreSQL) and ``ai-memory worker`` on a PostgreSQL store.

A second machine needs nothing but the store's URL and an LLM endpoint: the
worker processes here get exactly that, through the environment.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest
from reliability._harness import batch_learner_responder
from support.child import Child
from support.openai_server import ScriptedOpenAI

from ai_memory_sdk import Memory

pytestmark = pytest.mark.postgres
ROOT = Path(__file__).resolve().parents[1]


def cli(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ai_memory_sdk.cli", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        timeout=timeout,
    )


def _fill(path: str, server: ScriptedOpenAI) -> None:
    """A store with one of everything: blocks with history, archived messages with vectors, runs (one failed,
    one queued), traces, a session and an API key."""
    with Memory(
        path=path,
        learner="offline",
        embedder="openai:text-embedding-3-small",
        llm_base_url=server.base_url,
        llm_api_key="sk-test",
    ) as mem:
        for i, who in enumerate(("alice", "bob@example.com")):
            run = mem.add_messages(
                who,
                [
                    {"role": "user", "content": f"Hi, I'm {who}. I live in city{i} and I love octopuses."},
                    {"role": "assistant", "content": "Nice!", "metadata": {"n": i}},
                ],
                skip_vector_storage=False,
            )
            mem.wait_for_run(run)
        mem.set_memory("human", "edited by the app", subject_id="alice")
        mem.initialize_memory("notes", "free notes", value="v1", subject_id="alice")
        store = mem._engine.store  # type: ignore[attr-defined]
        store.create_key("tenant-a", "hash-of-a-key")
        store.add_session_items("chat-1", [{"role": "user", "content": "hello"}], subject_id="alice")
    with Memory(path=path, learner="offline", embedder="none", background=False) as mem:
        queued = mem.add_messages("alice", [{"role": "user", "content": "queued, not learned yet"}])
        assert mem.get_run(queued).status == "queued"


def _view(path: str, server: ScriptedOpenAI) -> dict[str, Any]:
    """Everything a user can read back from a store, to compare two copies."""
    with Memory(
        path=path,
        learner="offline",
        embedder="openai:text-embedding-3-small",
        llm_base_url=server.base_url,
        llm_api_key="sk-test",
        background=False,
    ) as mem:
        store = mem._engine.store  # type: ignore[attr-defined]
        out: dict[str, Any] = {}
        for who in ("alice", "bob@example.com"):
            out[who] = {
                "context": mem.get_context(who),
                "history": [(v.version, v.value, v.run_id) for v in mem.block_history("human", subject_id=who)],
                "messages": [
                    (m.id, m.role, m.content, m.metadata, m.created_at, m.run_id) for m in mem.get_messages(who)
                ],
                "runs": [(r.id, r.status, r.created_at, r.learner) for r in mem.list_runs(who)],
                "search": [(r.content, r.role) for r in mem.search_passages(who, "ocean animals", tags=[], limit=3)],
                "traces": [store.get_trace(r.id) is not None for r in mem.list_runs(who)],
            }
        out["keys"] = [(k.name, k.revoked_at) for k in store.list_keys()]
        out["tenant"] = store.key_tenant("hash-of-a-key")
        out["session"] = store.session_items("chat-1")
        out["embedder"] = store.get_meta("embedder")
        return out


@pytest.mark.parametrize("server_kind", ["postgres", "pgvector"])
def test_migrate_to_postgres_and_back_keeps_everything(
    tmp_path: Path, server_kind: str, request: pytest.FixtureRequest, openai_server: ScriptedOpenAI
) -> None:
    url = str(request.getfixturevalue("postgres_url" if server_kind == "postgres" else "pgvector_url"))
    source, back = str(tmp_path / "memory.db"), str(tmp_path / "back.db")
    _fill(source, openai_server)
    to_pg = cli("migrate", "--from", source, "--to", url)
    assert to_pg.returncode == 0, to_pg.stderr
    assert "copied 2 subjects" in to_pg.stdout and "passage_vectors" in to_pg.stdout
    to_sqlite = cli("migrate", "--from", url, "--to", back)
    assert to_sqlite.returncode == 0, to_sqlite.stderr
    original = _view(source, openai_server)
    assert original["alice"]["search"] and original["alice"]["runs"][-1][1] == "queued"
    assert _view(url, openai_server) == original
    assert _view(back, openai_server) == original
    with Memory(path=url, learner="offline", embedder="none") as mem:  # the copy goes on working: its queue too
        mem.wait_for_run(original["alice"]["runs"][-1][0], timeout=30)
        new = mem.add_messages("bob@example.com", [{"role": "user", "content": "I also like squids."}])
        mem.wait_for_run(new, timeout=30)


def test_migrate_refuses_a_target_that_is_not_empty(tmp_path: Path, postgres_url: str) -> None:
    source = str(tmp_path / "memory.db")
    with Memory(path=source, learner="offline", embedder="none") as mem:
        mem.wait_for_run(mem.add_messages("alice", [{"role": "user", "content": "I live in Oslo."}]))
    with Memory(path=postgres_url, learner="offline", embedder="none") as mem:
        mem.initialize_user_memory("someone-else")
    refused = cli("migrate", "--from", source, "--to", postgres_url)
    assert refused.returncode == 2
    assert "is not empty (1 subjects)" in refused.stderr and "postgresql://app@" in refused.stderr
    with Memory(path=postgres_url, learner="offline", embedder="none", background=False) as mem:
        assert mem.get_memory_agent_id("alice") is None  # nothing was copied
    missing = cli("migrate", "--from", str(tmp_path / "nope.db"), "--to", postgres_url)
    assert missing.returncode == 2 and "option --from: no store at" in missing.stderr


def test_a_worker_with_only_the_url_learns_and_sigterm_lets_its_pass_finish(postgres_url: str) -> None:
    with ScriptedOpenAI(latency=1.5) as server:
        server.responder = batch_learner_responder
        with Memory(path=postgres_url, learner="offline", embedder="none", background=False) as app:
            app.initialize_user_memory("u", user_context_block_char_limit=100_000)
            runs = [app.add_messages("u", [{"role": "user", "content": "batch B1-M0 says hello"}])]
            env = {"OPENAI_BASE_URL": server.base_url, "OPENAI_API_KEY": "sk-test", "AI_MEMORY_LEARNER": "llm"}
            worker = subprocess.Popen(
                [sys.executable, "-m", "ai_memory_sdk.cli", "worker", "--path", postgres_url, "--concurrency", "3"],
                cwd=ROOT,
                env={**os.environ, **env, "AI_MEMORY_EMBEDDER": "none"},
                stderr=subprocess.PIPE,
                text=True,
            )
            try:
                assert server.wait_for(1, "chat", timeout=60)  # the pass is in flight
                worker.send_signal(signal.SIGTERM)
                assert worker.wait(30) == 0
            finally:
                worker.kill()
            run = app.get_run(runs[0])
            assert run.status == "completed", worker.stderr.read() if worker.stderr else ""  # type: ignore[union-attr]
            assert app.get_user_memory("u") == "learned B1"
            assert "worker on postgresql://app@" in (worker.stderr.read() if worker.stderr else "")


def test_a_stopped_worker_hands_back_a_pass_that_outlives_its_close_timeout(postgres_url: str) -> None:
    with ScriptedOpenAI(latency=4.0) as server:
        server.responder = batch_learner_responder
        with Memory(path=postgres_url, learner="offline", embedder="none", background=False) as app:
            app.initialize_user_memory("u", user_context_block_char_limit=100_000)
            run_id = app.add_messages("u", [{"role": "user", "content": "batch B7-M0 says hello"}])
            child = Child(
                "pg_worker.py",
                {"url": postgres_url, "base_url": server.base_url, "concurrency": 1, "close_timeout": 0.5},
            )
            try:
                assert child.wait_line("READY", 60), child.stderr_tail()
                assert server.wait_for(1, "chat", timeout=30)
                child.proc.send_signal(signal.SIGTERM)
                assert child.wait_line("STOPPED", 30), child.stderr_tail()
            finally:
                child.kill()
            with psycopg.connect(postgres_url, autocommit=True) as conn:
                row = conn.execute("SELECT status, attempts, claim_id FROM ai_memory.runs WHERE id=%s", (run_id,))
                assert row.fetchone() == ("queued", 0, None)  # handed back, the attempt not counted
            time.sleep(4.0)  # the abandoned pass's answer arrives: nothing of it may be applied
            assert app.get_user_memory("u") == ""
            assert "handed back to the queue" in child.stderr_tail()
