"""The ``letta`` engine against a real Letta 0.11.7 server on 127.0.0.1: what is specific to Letta.

The engine-neutral behaviour runs in the contract suite (tests/contract/, backend ``letta``).
Here: agents made by ai-memory-sdk 0.2.0, deletion without orphans, serialised runs,
archival writes off the caller's thread, failure reporting, the step limit, cancelling a
queued run, Letta's own run ids, unsupported capabilities, ids Letta's agent names refuse,
and a batch that survives a crash of its process.

One server per test session (``letta_server``, shared with the contract suite and the smoke
tests); its model is the scripted ``support.letta_model.responder``.
Marker ``letta``: ``pytest -m letta tests/test_letta_engine.py``.
"""

from __future__ import annotations

import itertools
import json
import re
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support import backends, letta_model
from support.backends import MakeMemory
from support.letta_server import LettaServer, _text_of
from support.openai_server import ScriptedOpenAI, Stall, fail
from support.scenario import CONVERSATION, unique_id

from ai_memory_sdk import Memory, RunCancelledError, RunFailedError, UnsupportedByEngineError
from ai_memory_sdk.engines.letta import SDK_TAG, agent_name

pytestmark = [pytest.mark.letta, pytest.mark.timeout(300)]

MODEL = backends.LETTA_MODEL


# ----------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module", autouse=True)
def _scripted_model(letta_llm: ScriptedOpenAI) -> Iterator[None]:
    old = letta_llm.responder
    letta_llm.responder = letta_model.responder
    yield
    letta_llm.responder = old


@pytest.fixture
def llm(letta_llm: ScriptedOpenAI) -> Iterator[ScriptedOpenAI]:
    """The scripted LLM; whatever a test does to its responder is undone afterwards."""
    old = letta_llm.responder
    yield letta_llm
    letta_llm.responder = old


@pytest.fixture
def make_memory(letta_server: LettaServer) -> Iterator[MakeMemory]:
    """``Memory(engine="letta")`` on the session's server, all closed after the test."""
    made = backends.Made(backends.letta(letta_server))
    yield made
    made.close_all()


@pytest.fixture
def memory(make_memory: MakeMemory) -> Memory:
    return make_memory()


@pytest.fixture(scope="module")
def client(letta_server: LettaServer) -> Any:
    from letta_client import Letta

    return Letta(base_url=letta_server.base_url, api_key="test-key", max_retries=0)


def _db(server: LettaServer) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{server.db_path}?mode=ro", uri=True, timeout=30)


# ----------------------------------------------------------------------------- Letta-specific
def _make_like_0_2_0(client: Any, server: LettaServer, user_id: str, seed: str) -> str:
    """A user's agent exactly as ai-memory-sdk 0.2.0's initialize_user_memory made it (plus embedding_config)."""
    agent = client.agents.create(
        name=f"subconscious_agent_user_{user_id}",
        model=MODEL,
        agent_type="sleeptime_agent",
        initial_message_sequence=[],
        tags=[user_id, SDK_TAG],
        embedding_config=server.embedding_config,
    )
    for label, desc, limit, value in (
        ("human", "Details about the human user you are speaking to.", 10000, seed),
        ("summary", "A short (1-2 sentences) running summary of the conversation.", 1000, ""),
    ):
        block = client.blocks.create(label=label, description=desc, limit=limit, value=value)
        client.agents.blocks.attach(block.id, agent_id=agent.id)
    client.agents.passages.create(agent.id, text=f"Initialized memory for user {user_id}", tags=[SDK_TAG])
    return str(agent.id)


def test_finds_agents_made_by_0_2_0(memory: Memory, client: Any, letta_server: LettaServer) -> None:
    uid = unique_id("legacy")
    agent_id = _make_like_0_2_0(client, letta_server, uid, "Name: Old")
    assert memory.get_memory_agent_id(uid) == agent_id
    assert memory.get_user_memory(uid) == "Name: Old"
    assert [b.label for b in memory.list_blocks(uid)] == ["human", "summary"]
    with pytest.raises(ValueError, match="already exists"):
        memory.initialize_user_memory(uid)
    run = memory.add_messages(uid, [{"role": "user", "content": "I love tea"}], skip_vector_storage=False)
    memory.wait_for_run(run)
    assert memory.get_user_memory(uid) == "Name: Old\nLikes: tea"
    assert memory.search(uid, "Initialized memory", tags=[]) == ["I love tea"]  # 0.2.0's marker is not a message
    # a 0.2.0 subject agent (tags subj:<id>, <id>, ai-memory-sdk) is found by its namespaced tag
    sid = unique_id("legacy_subject")
    subject = client.agents.create(
        name=f"subconscious_agent_subject_{sid}",
        model=MODEL,
        agent_type="sleeptime_agent",
        initial_message_sequence=[],
        tags=[f"subj:{sid}", sid, SDK_TAG],
        embedding_config=letta_server.embedding_config,
    )
    assert memory.get_memory_agent_id(sid) == subject.id
    with pytest.raises(ValueError, match="already exists"):
        memory.initialize_subject(sid)
    # and agents made here are found the 0.2.0 ways (raw tag for users, subj: for subjects)
    ours = unique_id("ours")
    made = memory.initialize_user_memory(ours)
    assert [a.id for a in client.agents.list(tags=[ours], match_all_tags=True).items] == [made]
    assert [a.id for a in client.agents.list(tags=[f"subj:{ours}"], match_all_tags=True).items] == [made]
    assert client.agents.retrieve(made).name == f"subconscious_agent_user_{ours}"
    memory.delete_user(uid)
    memory.delete_user(sid)
    memory.delete_user(ours)


def test_delete_leaves_no_orphans(memory: Memory, client: Any, letta_server: LettaServer) -> None:
    from letta_client import NotFoundError

    uid = unique_id("erase")
    memory.wait_for_run(memory.add_messages(uid, CONVERSATION, skip_vector_storage=False))
    memory.initialize_memory("extra", "More", value="private", subject_id=uid)
    agent_id = memory.get_memory_agent_id(uid)
    blocks = [b.id for b in memory.list_blocks(uid)]
    assert len(blocks) == 3
    with _db(letta_server) as db:
        archive_id = db.execute("SELECT archive_id FROM archives_agents WHERE agent_id=?", (agent_id,)).fetchone()[0]
        assert db.execute("SELECT count(*) FROM archival_passages WHERE archive_id=?", (archive_id,)).fetchone()[0] == 3
    memory.delete_user(uid)
    with pytest.raises(NotFoundError):
        client.agents.retrieve(agent_id)
    for block_id in blocks:
        with pytest.raises(NotFoundError):
            client.blocks.retrieve(block_id)
    with _db(letta_server) as db:
        assert db.execute("SELECT count(*) FROM archival_passages WHERE archive_id=?", (archive_id,)).fetchone()[0] == 0
        assert (
            db.execute(
                "SELECT count(*) FROM block WHERE id IN ({})".format(",".join("?" * len(blocks))), blocks
            ).fetchone()[0]
            == 0
        )
        assert db.execute("SELECT count(*) FROM messages WHERE agent_id=?", (agent_id,)).fetchone()[0] == 0
    assert client.agents.list(tags=[uid], match_all_tags=True).items == []
    # reset=True erases the old agent the same way (0.2.0 left its blocks and passages behind)
    sid = unique_id("reset")
    first = memory.initialize_user_memory(sid, user_context_block_value="old")
    old_blocks = [b.id for b in memory.list_blocks(sid)]
    second = memory.initialize_user_memory(sid, reset=True)
    assert second != first and memory.get_user_memory(sid) == ""
    for block_id in old_blocks:
        with pytest.raises(NotFoundError):
            client.blocks.retrieve(block_id)
    memory.delete_user(sid)


def test_runs_of_one_subject_never_overlap(memory: Memory, client: Any) -> None:
    """Letta runs concurrent runs of one agent side by side (only the last edit survives): we queue them."""
    uid = unique_id("burst")
    memory.initialize_user_memory(uid)
    runs = [
        memory.add_messages(uid, [{"role": "user", "content": text}])
        for text in ("My name is Carol", "I love jazz", "I live in Rome")
    ]
    for run in runs:
        memory.wait_for_run(run, timeout=60)
    human = memory.get_user_memory(uid) or ""
    assert all(f in human for f in ("Name: Carol", "Likes: jazz", "Location: Rome")), human
    spans = sorted({(r.started_at, r.finished_at) for r in (memory.get_run(x) for x in runs)})
    assert 1 <= len(spans) <= 3  # the later two may be coalesced into one Letta run
    for (_s1, f1), (s2, _f2) in itertools.pairwise(spans):
        assert f1 is not None and s2 is not None and f1 <= s2, "two Letta runs of one subject overlapped"
    # the agent's history is reset after each run: only the system message is left
    assert len(client.agents.retrieve(memory.get_memory_agent_id(uid)).message_ids) == 1
    assert [r.id for r in memory.list_runs(uid)] == runs
    assert memory.list_runs(uid, status="completed") == memory.list_runs(uid)
    memory.delete_user(uid)


def test_archival_writes_leave_the_callers_thread(memory: Memory) -> None:
    uid = unique_id("archive")
    memory.initialize_user_memory(uid)
    batch = [{"role": "user", "content": f"note {i} about cats and the number {i}"} for i in range(10)]
    t0 = time.perf_counter()
    run = memory.add_messages(uid, batch, skip_vector_storage=False)
    added = time.perf_counter() - t0
    memory.wait_for_run(run, timeout=120)
    total = time.perf_counter() - t0
    assert added < 0.1 < total, (added, total)  # ten inserts (~0.3-0.7 s each here) happen in the background
    assert len(memory.search(uid, "cats", limit=20)) == 10
    memory.delete_user(uid)


def test_failed_run_reports_letta_error_and_does_not_block(memory: Memory, llm: ScriptedOpenAI) -> None:
    uid = unique_id("fail")
    memory.initialize_user_memory(uid)
    good = llm.responder
    llm.responder = lambda req: fail(400)
    bad = memory.add_messages(uid, [{"role": "user", "content": "My name is Zed"}])
    with pytest.raises(RunFailedError) as info:
        memory.wait_for_run(bad, timeout=60)
    run = memory.get_run(bad)
    assert run.status == "failed" and info.value.run.id == bad
    assert run.error and run.stop_reason
    assert memory.get_user_memory(uid) == ""
    llm.responder = good
    later = memory.add_messages(uid, [{"role": "user", "content": "I love tea"}])
    memory.wait_for_run(later, timeout=60)
    assert memory.get_user_memory(uid) == "Likes: tea"
    assert memory.retry_run(bad).status in ("queued", "running", "completed")
    memory.wait_for_run(bad, timeout=60)
    assert memory.get_user_memory(uid) == "Likes: tea\nName: Zed"
    memory.delete_user(uid)


def test_step_limit_fails_the_run(make_memory: MakeMemory) -> None:
    memory = make_memory(max_steps=1)
    uid = unique_id("steps")
    run = memory.add_messages(uid, [{"role": "user", "content": "My name is Una"}])
    with pytest.raises(RunFailedError):
        memory.wait_for_run(run, timeout=60)
    assert memory.get_run(run).stop_reason == "max_steps"
    memory.delete_user(uid)


def test_cancel_queued_run(memory: Memory, llm: ScriptedOpenAI) -> None:
    uid = unique_id("cancel")
    memory.initialize_user_memory(uid)
    good = llm.responder
    assert good is not None
    llm.responder = lambda req: Stall(1.5, then=good(req))
    first = memory.add_messages(uid, [{"role": "user", "content": "My name is Carol"}])
    second = memory.add_messages(uid, [{"role": "user", "content": "I live in Rome"}])
    assert memory.cancel_run(second).status == "cancelled"
    with pytest.raises(RunCancelledError):
        memory.wait_for_run(second, timeout=5)
    memory.wait_for_run(first, timeout=60)
    assert memory.get_user_memory(uid) == "Name: Carol"
    with pytest.raises(ValueError):  # RunStateError: completed
        memory.cancel_run(first)
    memory.delete_user(uid)


def test_letta_run_ids_work_too(memory: Memory, client: Any) -> None:
    """A run id Letta made (e.g. stored by 0.2.0) works with get_run/wait_for_run."""
    uid = unique_id("raw")
    agent_id = memory.initialize_user_memory(uid)
    raw = client.agents.messages.create_async(agent_id, messages=[{"role": "user", "content": "user: I love figs"}])
    memory.wait_for_run(raw.id, timeout=60)
    run = memory.get_run(raw.id)
    assert run.status == "completed" and run.llm_calls >= 1 and run.subject_id == uid
    assert "Likes: figs" in (memory.get_user_memory(uid) or "")
    with pytest.raises(UnsupportedByEngineError):
        memory.cancel_run(raw.id)
    memory.delete_user(uid)


def test_unsupported_capabilities_name_engine_and_capability(memory: Memory) -> None:
    sid = unique_id("hist")
    memory.initialize_memory("notes", "Notes", value="v1", subject_id=sid)
    for call in (
        lambda: memory.block_history("notes", subject_id=sid),
        lambda: memory.restore_block("notes", 1, subject_id=sid),
    ):
        with pytest.raises(UnsupportedByEngineError) as info:
            call()
        assert info.value.engine == "letta" and info.value.capability == "block history"
        assert "letta" in str(info.value) and "block history" in str(info.value)
    memory.delete_user(sid)


@pytest.mark.parametrize("raw_id", ["carol.o'neil+test@example.com", 'team:alpha/ü ñ <x> & "q"'])
def test_ids_letta_names_refuse(memory: Memory, client: Any, raw_id: str) -> None:
    uid = raw_id + uuid.uuid4().hex[:6]
    memory.wait_for_run(
        memory.add_messages(uid, [{"role": "user", "content": "My name is Olive"}], skip_vector_storage=False)
    )
    assert memory.get_user_memory(uid) == "Name: Olive"
    agent = client.agents.retrieve(memory.get_memory_agent_id(uid))
    assert re.fullmatch(r"[A-Za-z0-9 _-]+", agent.name) and agent.name == agent_name("user", uid)
    assert uid in agent.tags and f"subj:{uid}" in agent.tags
    assert memory.search(uid, "Olive") == ["My name is Olive"]
    assert memory.get_memory_agent_id(uid + "x") is None  # tags match exactly
    memory.delete_user(uid)
    assert memory.get_memory_agent_id(uid) is None


def test_agent_name_rules() -> None:
    assert agent_name("user", "bob") == "subconscious_agent_user_bob"  # as 0.2.0 named it
    assert agent_name("subject", "project alpha-1") == "subconscious_agent_subject_project alpha-1"
    odd = agent_name("user", "bob@example.com")
    assert re.fullmatch(r"subconscious_agent_user_bob_example_com_[0-9a-f]{12}", odd)
    assert agent_name("user", "bob@example.org") != odd
    assert re.fullmatch(r"[A-Za-z0-9 _-]+", agent_name("user", "ü" * 256))
    assert len(agent_name("user", "x" * 256)) < 128


_CRASHING_CHILD = r"""
import json, os, signal, sqlite3, sys, time
from ai_memory_sdk import Memory
cfg = json.loads(sys.argv[1])
m = Memory(engine="letta", base_url=cfg["base_url"], api_key="test-key", letta_model=cfg["model"],
           letta_embedding=cfg["embedding"], path=cfg["path"])
m.initialize_user_memory(cfg["uid"])
first = m.add_messages(cfg["uid"], [{"role": "user", "content": "I live in Rome"}], skip_vector_storage=False)
second = m.add_messages(cfg["uid"], [{"role": "user", "content": "My name is Carol"}])
journal = sqlite3.connect(cfg["journal"])
deadline = time.monotonic() + 60
while time.monotonic() < deadline:  # die once the first batch's Letta run is in flight and its passage stored
    row = journal.execute("SELECT inflight, archived FROM pending WHERE run_id=?", (first,)).fetchone()
    if row and row[0] and row[1] == 1:
        break
    time.sleep(0.05)
print(json.dumps([first, second]), flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


def _first_calls_with(llm: ScriptedOpenAI, text: str) -> int:
    """LLM requests that start a Letta run (no tool call yet after the user turn) whose turn holds ``text``."""
    n = 0
    for req in llm.chat_requests:
        messages = (req.json or {}).get("messages") or []
        turns = [
            i
            for i, m in enumerate(messages)
            if m.get("role") == "user" and letta_model.said(_text_of(m.get("content"))) is not None
        ]
        if (
            turns
            and text in _text_of(messages[turns[-1]].get("content"))
            and not any(m.get("role") == "assistant" and m.get("tool_calls") for m in messages[turns[-1] + 1 :])
        ):
            n += 1
    return n


def test_a_batch_queued_behind_a_busy_subject_survives_a_crash(
    make_memory: MakeMemory, llm: ScriptedOpenAI, letta_server: LettaServer, tmp_path: Path
) -> None:
    """docs/runs.md on this engine: once add_messages returns, the batch survives the process.

    The child's first batch is in flight on the server (a slow model), its passage stored, and its
    second batch waits on the lane (or rides in the same Letta run) when the child is killed. The
    journal is then set back as if the child had died between storing the passage and recording it.
    A new process adopts both batches: it awaits the Letta run in flight instead of sending it
    again, finds the passage already stored, and sends what was never sent.
    """
    uid = unique_id("crash")
    path = tmp_path / "memory.db"
    journal = tmp_path / "memory.letta-journal.db"
    good = llm.responder
    assert good is not None
    llm.responder = lambda req: Stall(4.0, then=good(req))
    llm.clear()
    cfg = {
        "base_url": letta_server.base_url,
        "model": MODEL,
        "embedding": json.dumps(letta_server.embedding_config),
        "path": str(path),
        "journal": str(journal),
        "uid": uid,
    }
    child = subprocess.run(
        [sys.executable, "-c", _CRASHING_CHILD, json.dumps(cfg)], capture_output=True, text=True, timeout=180
    )
    assert child.returncode == -signal.SIGKILL, child.stderr[-2000:]
    first, second = json.loads(child.stdout.strip().splitlines()[-1])
    with sqlite3.connect(journal) as conn:
        assert conn.execute("SELECT count(*) FROM pending").fetchone()[0] == 2
        conn.execute("UPDATE pending SET archived=0")
    llm.responder = good
    memory = make_memory(path=str(path))  # adopts what the dead process accepted
    memory.wait_for_run(second, timeout=180)  # raises unless completed
    memory.wait_for_run(first, timeout=60)
    assert memory.get_run(first).status == memory.get_run(second).status == "completed"
    human = memory.get_user_memory(uid) or ""
    assert "Name: Carol" in human and "Location: Rome" in human
    assert _first_calls_with(llm, "I live in Rome") == 1  # awaited, never sent twice
    assert _first_calls_with(llm, "My name is Carol") == 1
    assert memory.search(uid, "Rome") == ["I live in Rome"]  # stored once
    with sqlite3.connect(journal) as conn:  # settled runs leave the journal
        assert conn.execute("SELECT count(*) FROM pending").fetchone()[0] == 0
    memory.delete_user(uid)
