"""The ``letta`` engine against a real Letta 0.11.7 server on 127.0.0.1.

First the engine-neutral scenarios of tests/test_api.py, re-run here with
``memory``/``make_memory`` building ``Memory(engine="letta", ...)`` (tests that
need the local engine skip themselves through ``_local_only``). A few of them
assume what only the local engine can do — lexical relevance cut-offs, every
message stored — and have letta variants below that say why. Then what is
specific to Letta: agents made by ai-memory-sdk 0.2.0, deletion without
orphans, serialised runs, failure reporting, unsupported capabilities, ids
Letta's agent names refuse.

One server per test session (``letta_server``, shared with the smoke tests);
its model is the scripted ``responder`` below.
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
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import test_api as _api

from ai_memory_sdk import Memory, RunCancelledError, RunFailedError, UnsupportedByEngineError
from ai_memory_sdk.engines.letta import SDK_TAG, agent_name

try:
    from support.letta_server import _TAG, LettaServer, block_value, extract_facts
    from support.openai_server import ScriptedOpenAI, Stall, fail, reply
except ImportError:  # rootdir not on sys.path: pytest put tests/ there instead
    from support.letta_server import _TAG, LettaServer, block_value, extract_facts  # type: ignore
    from support.openai_server import ScriptedOpenAI, Stall, fail, reply  # type: ignore


pytestmark = [pytest.mark.letta, pytest.mark.timeout(300)]

MakeMemory = Callable[..., Memory]
MODEL = "openai/gpt-4o-mini"  # the server refuses its listed openai-proxy/... handles
CONVERSATION = _api.CONVERSATION
_uid = _api._uid


# ----------------------------------------------------------------------------- the scripted model
def _text(content: Any) -> str:
    if isinstance(content, list):
        return "\n".join(p.get("text", "") for p in content if isinstance(p, dict))
    return content if isinstance(content, str) else ""


def _said(content: str) -> str | None:
    """The application's text of a user message; None for Letta's JSON envelopes (heartbeats)."""
    try:
        data = json.loads(content)
    except ValueError:
        return content
    return None if isinstance(data, dict) and data.get("type") else content


def responder(req: dict) -> Any:
    """Plays the sleeptime agent's model: record first-person facts in ``human``, a line in ``summary``, finish.

    Unlike ``SleeptimeResponder(summary_label=...)``, which re-plans from the blocks on every
    call and so finishes right after its first edit, each call here makes the first edit
    the blocks still lack (at most 4), then ``memory_finish_edits``.
    """
    if "memory_finish_edits" not in {(t.get("function") or {}).get("name") for t in req.get("tools") or []}:
        return None
    messages = req.get("messages") or []
    turn, text = -1, ""
    for i, m in enumerate(messages):
        if m.get("role") == "user":
            said = _said(_text(m.get("content")))
            if said is not None:
                turn, text = i, said
    done = sum(len(m.get("tool_calls") or []) for m in messages[turn + 1 :] if m.get("role") == "assistant")
    system = "\n".join(_text(m.get("content")) for m in messages if m.get("role") == "system")
    facts = extract_facts(_TAG.sub(" ", text)) if turn >= 0 else []
    human, summary = block_value(system, "human"), block_value(system, "summary")
    call: tuple[str, dict] = ("memory_finish_edits", {})
    if facts and done < 4:
        new = [f for f in facts if f not in (human or "")]
        line = "The user shared: " + "; ".join(facts) + "."
        if human is not None and new:
            call = (
                ("memory_insert", {"label": "human", "new_str": "\n".join(new), "insert_line": -1})
                if human.strip()
                else ("memory_rethink", {"label": "human", "new_memory": "\n".join(new)})
            )
        elif summary is not None and summary != line:
            call = ("memory_rethink", {"label": "summary", "new_memory": line})
    args = dict(call[1], thinking="Recording what the user said." if call[1] else "Done.")
    if call[1]:
        args["request_heartbeat"] = True
    return reply(tool_calls=[(call[0], args)])


# ----------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module", autouse=True)
def _scripted_model(letta_llm: ScriptedOpenAI) -> Iterator[None]:
    old = letta_llm.responder
    letta_llm.responder = responder
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
    """``Memory(engine="letta")`` on the session's server; options of the local engine are accepted and unused."""
    made: list[Memory] = []

    def make(**options: Any) -> Memory:
        options.setdefault("letta_model", MODEL)
        options.setdefault("letta_embedding", json.dumps(letta_server.embedding_config))
        m = Memory(engine="letta", base_url=letta_server.base_url, api_key="test-key", **options)
        made.append(m)
        return m

    yield make
    for m in made:
        m.close()


@pytest.fixture
def memory(make_memory: MakeMemory) -> Memory:
    return make_memory()


@pytest.fixture(scope="module")
def client(letta_server: LettaServer) -> Any:
    from letta_client import Letta

    return Letta(base_url=letta_server.base_url, api_key="test-key", max_retries=0)


def _db(server: LettaServer) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{server.db_path}?mode=ro", uri=True, timeout=30)


# ----------------------------------------------------------------------------- test_api, re-run
for _name in dir(_api):
    if _name.startswith("test_"):
        globals()[_name] = getattr(_api, _name)


# Letta variants of test_api scenarios. Why each differs:
# - get_messages lists archived messages only (Letta keeps no other copy; agent history is reset per run);
# - Letta's archival search is purely semantic with no score or cut-off: any query returns the nearest
#   passages (test_api's "giraffes" -> [] holds only for the local engine's lexical-only configuration).


def test_bound_subject_helpers(make_memory: MakeMemory) -> None:
    sid = _uid("bound")
    memory = make_memory(subject_id=sid)
    assert memory.subject_id == sid
    memory.wait_for_run(
        memory.add_messages_here([{"role": "user", "content": "My name is Dana"}], skip_vector_storage=False)
    )
    assert [m.content for m in memory.get_messages(sid)] == ["My name is Dana"]


def test_search_tags_semantics(memory: Memory) -> None:
    uid = _uid()
    batch = [
        {"role": "user", "content": "I adopted two cats last spring"},
        {"role": "assistant", "content": "Cats are wonderful companions"},
        {"role": "system", "content": "cats topic noted"},
    ]
    memory.wait_for_run(memory.add_messages(uid, batch, skip_vector_storage=False))
    assert memory.search(uid, "cats") == ["I adopted two cats last spring"]  # None means ["user"]
    assert memory.search(uid, "cats", tags=["assistant"]) == ["Cats are wonderful companions"]
    assert sorted(memory.search(uid, "cats", tags=[])) == sorted(m["content"] for m in batch)
    assert sorted(memory.search(uid, "cats", tags=["user", "system"])) == sorted(
        [batch[0]["content"], batch[2]["content"]]
    )
    assert memory.search(_uid("nobody"), "cats") == []
    assert memory.search(uid, "giraffes") == ["I adopted two cats last spring"]  # semantic: nearest, no cut-off


def test_skip_vector_storage_default_is_not_searched(memory: Memory) -> None:
    uid = _uid()
    memory.wait_for_run(memory.add_messages(uid, [{"role": "user", "content": "I love cats"}]))
    assert memory.search(uid, "cats") == []
    assert memory.get_messages(uid) == []  # not archived: Letta keeps no copy
    assert "Likes: cats" in (memory.get_user_memory(uid) or "")  # but it was learned


def test_search_never_returns_another_subject(memory: Memory) -> None:
    a, b = _uid(), _uid()
    memory.wait_for_run(
        memory.add_messages(a, [{"role": "user", "content": "secret cats of a"}], skip_vector_storage=False)
    )
    memory.wait_for_run(
        memory.add_messages(b, [{"role": "user", "content": "public dogs of b"}], skip_vector_storage=False)
    )
    assert memory.search(b, "secret cats of a") == ["public dogs of b"]
    assert memory.search(a, "public dogs of b") == ["secret cats of a"]


def test_get_messages_order_limit_window_and_run(memory: Memory) -> None:
    uid = _uid()
    t0 = datetime(2024, 1, 1, 9, 0, tzinfo=timezone.utc)
    first = [
        {"role": "user", "content": "m0", "created_at": t0, "metadata": {"k": [1, 2]}},
        {"role": "assistant", "content": "m1", "created_at": t0 + timedelta(hours=1), "name": "Sam"},
    ]
    second = [
        {"role": "user", "content": "m2", "created_at": (t0 + timedelta(hours=2)).isoformat()},
        {"role": "user", "content": "m3", "created_at": t0 + timedelta(hours=3)},
        {"role": "user", "content": "m4 same time", "created_at": t0 + timedelta(hours=3)},
    ]
    r1 = memory.add_messages(uid, first, skip_vector_storage=False)
    r2 = memory.add_messages(uid, second, skip_vector_storage=False)
    memory.wait_for_run(r2)
    msgs = memory.get_messages(uid)
    assert [m.content for m in msgs] == ["m0", "m1", "m2", "m3", "m4 same time"]
    assert [m.run_id for m in msgs] == [r1, r1, r2, r2, r2]
    assert [m.role for m in msgs] == ["user", "assistant", "user", "user", "user"]
    assert msgs[1].name == "Sam" and msgs[0].name is None and msgs[0].metadata == {"k": [1, 2]}
    assert msgs[0].created_at == t0
    assert len({m.id for m in msgs}) == 5
    assert [m.content for m in memory.get_messages(uid, limit=2)] == ["m3", "m4 same time"]
    assert [m.content for m in memory.get_messages(uid, before=t0 + timedelta(hours=1))] == ["m0"]
    assert [m.content for m in memory.get_messages(uid, after=t0 + timedelta(hours=2))] == ["m3", "m4 same time"]
    window = memory.get_messages(uid, after=t0, before=(t0 + timedelta(hours=3)).isoformat())
    assert [m.content for m in window] == ["m1", "m2"]
    assert memory.get_messages(_uid("nobody")) == []


def test_delete_message_removes_it_everywhere(memory: Memory) -> None:
    uid = _uid()
    memory.wait_for_run(memory.add_messages(uid, CONVERSATION, skip_vector_storage=False))
    cats = next(m for m in memory.get_messages(uid) if "cats" in m.content)
    assert memory.search(uid, "cats")[0] == "I love cats"
    memory.delete_message(cats.id)
    assert cats.id not in [m.id for m in memory.get_messages(uid)]
    assert len(memory.get_messages(uid)) == 2
    assert "I love cats" not in memory.search(uid, "cats")
    assert "I love cats" not in [r.content for r in memory.search_passages(uid, "cats", tags=[])]
    memory.delete_message(cats.id)  # already gone: no error
    memory.delete_message("not-a-message-id")


def test_add_files(memory: Memory, tmp_path: Path) -> None:
    sid = _uid("files")
    words = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta", "iota", "kappa", "lambda", "mu"]
    paragraphs = [
        f"Paragraph {i}: "
        + " ".join(
            f"Sentence {j} of part {i} mentions {words[(i * 7 + j) % 12]} and {words[(i + j * 5) % 12]}."
            for j in range(12)
        )
        for i in range(12)
    ]
    paragraphs[-1] += " The treasure is buried in Zanzibar."
    text = "\n\n".join(paragraphs) + "\n"
    path = tmp_path / "notes.txt"
    path.write_text(text, encoding="utf-8")
    runs = memory.add_files(
        [{"file_path": str(path), "label": "notes_file", "description": "Project notes", "subject_id": sid}]
    )
    memory.wait_for_run(runs[0])
    msgs = memory.get_messages(sid)
    n = len(msgs)
    assert n >= 2 and all(f"(part {i}/{n})" in m.content for i, m in enumerate(msgs, 1))
    # Letta stores a long text as overlapping chunks in no order; joined back, every word is there in order
    # (periodic text, like test_api's "lorem ipsum" * 40, can defeat the rejoining: see get_messages)
    body = " ".join(m.content.partition("\n")[2] for m in msgs)
    assert body.split() == text.split()
    hits = memory.search(sid, "Zanzibar treasure")
    assert hits and "Zanzibar" in hits[0]
    assert memory.get_memory("notes_file", subject_id=sid) == ""
    assert memory.list_blocks(sid)[0].description == "Project notes"


def test_wait_for_run_fast_completion(make_memory: MakeMemory) -> None:
    memory = make_memory(subject_id=_uid("user_test2"))
    memory.initialize_memory(label="test", description="Test", value="v", reset=True)
    run = memory.add_messages([{"role": "user", "content": "test"}])
    start = time.monotonic()
    memory.wait_for_run(run)
    assert time.monotonic() - start < 10, "one Letta run with one LLM call (up to ~3 s on a loaded machine)"


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
    return agent.id


def test_finds_agents_made_by_0_2_0(memory: Memory, client: Any, letta_server: LettaServer) -> None:
    uid = _uid("legacy")
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
    sid = _uid("legacy_subject")
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
    ours = _uid("ours")
    made = memory.initialize_user_memory(ours)
    assert [a.id for a in client.agents.list(tags=[ours], match_all_tags=True).items] == [made]
    assert [a.id for a in client.agents.list(tags=[f"subj:{ours}"], match_all_tags=True).items] == [made]
    assert client.agents.retrieve(made).name == f"subconscious_agent_user_{ours}"
    memory.delete_user(uid)
    memory.delete_user(sid)
    memory.delete_user(ours)


def test_delete_leaves_no_orphans(memory: Memory, client: Any, letta_server: LettaServer) -> None:
    from letta_client import NotFoundError

    uid = _uid("erase")
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
    sid = _uid("reset")
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
    uid = _uid("burst")
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
        assert f1 <= s2, "two Letta runs of one subject overlapped"
    # the agent's history is reset after each run: only the system message is left
    assert len(client.agents.retrieve(memory.get_memory_agent_id(uid)).message_ids) == 1
    assert [r.id for r in memory.list_runs(uid)] == runs
    assert memory.list_runs(uid, status="completed") == memory.list_runs(uid)
    memory.delete_user(uid)


def test_archival_writes_leave_the_callers_thread(memory: Memory) -> None:
    uid = _uid("archive")
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
    uid = _uid("fail")
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
    uid = _uid("steps")
    run = memory.add_messages(uid, [{"role": "user", "content": "My name is Una"}])
    with pytest.raises(RunFailedError):
        memory.wait_for_run(run, timeout=60)
    assert memory.get_run(run).stop_reason == "max_steps"
    memory.delete_user(uid)


def test_cancel_queued_run(memory: Memory, llm: ScriptedOpenAI) -> None:
    uid = _uid("cancel")
    memory.initialize_user_memory(uid)
    good = llm.responder
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
    uid = _uid("raw")
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
    sid = _uid("hist")
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
            i for i, m in enumerate(messages) if m.get("role") == "user" and _said(_text(m.get("content"))) is not None
        ]
        if (
            turns
            and text in _text(messages[turns[-1]].get("content"))
            and not any(m.get("role") == "assistant" and m.get("tool_calls") for m in messages[turns[-1] + 1 :])
        ):
            n += 1
    return n


def test_a_batch_queued_behind_a_busy_subject_survives_a_crash(
    make_memory: MakeMemory, llm: ScriptedOpenAI, letta_server: LettaServer, tmp_path: Path
) -> None:
    """SPEC §6 on this engine: once add_messages returns, the batch survives the process.

    The child's first batch is in flight on the server (a slow model), its passage stored, and its
    second batch waits on the lane (or rides in the same Letta run) when the child is killed. The
    journal is then set back as if the child had died between storing the passage and recording it.
    A new process adopts both batches: it awaits the Letta run in flight instead of sending it
    again, finds the passage already stored, and sends what was never sent.
    """
    uid = _uid("crash")
    path = tmp_path / "memory.db"
    journal = tmp_path / "memory.letta-journal.db"
    good = llm.responder
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
