"""The public API (SPEC §4) end to end on a real store, with the offline learner.

The first part rewrites the scenarios of ai-memory-sdk 0.2.0's own tests
(messages, subject API, edge cases, timeouts) without a fake ``letta_client``;
then every other public method. Tests that take only the ``memory`` /
``make_memory`` fixtures and make no engine-specific assertion are
engine-neutral: another engine's suite can re-run them by overriding those
fixtures. Tests that need the local engine's internals or options
(``background=False``, block history, row counts) say so with ``_local_only``.
"""

from __future__ import annotations

import itertools
import sqlite3
import time
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from ai_memory_sdk import (
    Block,
    BlockNotFoundError,
    BlockVersion,
    Memory,
    Run,
    RunCancelledError,
    RunFailedError,
    RunNotFoundError,
    RunStateError,
    SearchResult,
    StoredMessage,
)

MakeMemory = Callable[..., Memory]

CONVERSATION = [
    {"role": "user", "content": "Hi my name is Bob"},
    {"role": "assistant", "content": "Hi Bob, how can I help you today?"},
    {"role": "user", "content": "I love cats"},
]


def _uid(prefix: str = "user") -> str:
    """A subject id no other test uses (engines with a shared server keep state across tests)."""
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


def _local_only(m: Memory) -> None:
    if m.engine != "local":
        pytest.skip("checks the local engine's store or options")


def _drain(m: Memory) -> int:
    """Process every queued run in this thread, as ``ai-memory worker`` does."""
    _local_only(m)
    return m._engine.work(once=True)  # type: ignore[attr-defined]


def _db_path(m: Memory) -> str:
    return m._engine.path  # type: ignore[attr-defined]


# =============================================================================================
# The original package's scenarios (tests/test_messages.py, test_subject.py, test_edge_cases.py,
# test_timeout.py of ai-memory-sdk 0.2.0), engine-neutral.
# =============================================================================================


def test_conversational_memory(memory: Memory) -> None:
    user_id = _uid()
    memory.initialize_user_memory(user_id, reset=True)
    run = memory.add_messages(user_id, messages=CONVERSATION, skip_vector_storage=False)
    memory.wait_for_run(run)

    value = memory.get_user_memory(user_id)
    assert value is not None and "Bob" in value, value

    results = memory.search(user_id, "cats")
    assert results, "expected search results for 'cats'"
    assert "cats" in results[0]
    memory.delete_user(user_id)
    assert memory.get_user_memory(user_id) is None


def test_instance_scoped_subject(make_memory: MakeMemory) -> None:
    memory = make_memory(subject_id=_uid("user_sarah"))
    memory.initialize_memory(label="preferences", description="Known user preferences.", value="Likes cats", reset=True)
    run = memory.add_messages([{"role": "user", "content": "I love cats"}])
    memory.wait_for_run(run)

    assert memory.get_memory("preferences") == "Likes cats"
    formatted = memory.get_memory("preferences", prompt_formatted=True)
    assert formatted is not None and formatted.startswith("<preferences") and "Likes cats" in formatted

    blocks = memory.list_blocks()
    assert [b.label for b in blocks] == ["preferences"]
    assert [b.get("label") for b in blocks] == ["preferences"]  # dict-style access, as 0.2.0's tests used
    assert isinstance(blocks[0], Block) and blocks[0].limit == 10000

    memory.delete_block("preferences")
    assert memory.get_memory("preferences") is None
    assert memory.list_blocks() == []


def test_bound_subject_helpers(make_memory: MakeMemory) -> None:
    sid = _uid("bound")
    memory = make_memory(subject_id=sid)
    assert memory.subject_id == sid
    memory.wait_for_run(memory.add_messages_here([{"role": "user", "content": "My name is Dana"}]))
    assert len(memory.get_messages(sid)) == 1


def test_explicit_subject(memory: Memory) -> None:
    sid = _uid("project_alpha")
    agent_id = memory.initialize_subject(sid, reset=True)
    assert isinstance(agent_id, str) and agent_id
    memory.initialize_memory(label="spec", description="Project spec", value="v1", subject_id=sid)
    run = memory.add_messages_for_subject(sid, [{"role": "user", "content": "Kickoff complete"}])
    memory.wait_for_run(run)
    assert memory.get_memory("spec", subject_id=sid) == "v1"


def test_no_subject_id_raises_error(memory: Memory) -> None:
    calls: list[Callable[[], Any]] = [
        lambda: memory.initialize_memory("test", "Test block"),
        lambda: memory.get_memory("test"),
        lambda: memory.list_blocks(),
        lambda: memory.delete_block("test"),
        lambda: memory.add_messages([{"role": "user", "content": "hi"}]),
        lambda: memory.add_messages_here([{"role": "user", "content": "hi"}]),
        lambda: memory.get_context(),
        lambda: memory.set_memory("test", "v"),
    ]
    for call in calls:
        with pytest.raises(ValueError, match="No subject_id provided"):
            call()


def test_add_messages_argument_errors(memory: Memory) -> None:
    with pytest.raises(ValueError, match="messages must be provided"):
        memory.add_messages(_uid())
    with pytest.raises(ValueError, match="First argument must be"):
        memory.add_messages(42)  # type: ignore[arg-type]


def test_block_reset_functionality(make_memory: MakeMemory) -> None:
    memory = make_memory(subject_id=_uid("user_reset_test"))
    memory.initialize_memory("config", "Configuration", value="v1", reset=True)
    assert memory.get_memory("config") == "v1"
    memory.initialize_memory("config", "Configuration", value="v2", reset=True)
    assert memory.get_memory("config") == "v2"
    first_id = memory.list_blocks()[0].id
    assert memory.initialize_memory("config", "Configuration", value="v3", reset=False) == first_id
    assert memory.get_memory("config") == "v2"


def test_multiple_blocks_per_subject(make_memory: MakeMemory) -> None:
    memory = make_memory(subject_id=_uid("user_multi"))
    memory.initialize_memory("human", "Human info", value="Alice", reset=True)
    memory.initialize_memory("summary", "Summary", value="First conversation", reset=True)
    memory.initialize_memory("preferences", "User preferences", value="Likes Python", reset=True)
    assert sorted(b.label for b in memory.list_blocks()) == ["human", "preferences", "summary"]
    assert memory.get_memory("human") == "Alice"
    assert memory.get_memory("summary") == "First conversation"
    assert memory.get_memory("preferences") == "Likes Python"


def test_empty_block_value(make_memory: MakeMemory) -> None:
    memory = make_memory(subject_id=_uid("user_empty"))
    memory.initialize_memory("notes", "User notes", value="", reset=True)
    assert memory.get_memory("notes") == ""


def test_nonexistent_block_returns_none(make_memory: MakeMemory) -> None:
    memory = make_memory(subject_id=_uid("user_none"))
    assert memory.get_memory("nonexistent") is None
    assert memory.get_memory("nonexistent", prompt_formatted=True) is None
    memory.initialize_memory("other", "Other")
    assert memory.get_memory("nonexistent") is None


def test_subject_initialization_reset(memory: Memory) -> None:
    sid = _uid("project_x")
    memory.initialize_subject(sid, reset=True)
    memory.initialize_memory("status", "Status", value="active", subject_id=sid)
    assert memory.get_memory("status", subject_id=sid) == "active"
    memory.initialize_subject(sid, reset=True)
    assert memory.get_memory("status", subject_id=sid) is None


def test_subject_initialization_without_reset_raises(memory: Memory) -> None:
    sid = _uid("project_y")
    memory.initialize_subject(sid, reset=True)
    with pytest.raises(ValueError, match="already exists"):
        memory.initialize_subject(sid, reset=False)


def test_initialize_user_memory_reset_and_exists(memory: Memory) -> None:
    uid = _uid()
    agent_id = memory.initialize_user_memory(uid, user_context_block_value="Seed")
    assert memory.get_memory_agent_id(uid) == agent_id
    assert memory.get_user_memory(uid) == "Seed"
    with pytest.raises(ValueError, match="already exists"):
        memory.initialize_user_memory(uid)
    memory.initialize_user_memory(uid, reset=True)
    assert memory.get_user_memory(uid) == ""
    labels = [b.label for b in memory.list_blocks(uid)]
    assert labels == ["human", "summary"]
    blocks = {b.label: b for b in memory.list_blocks(uid)}
    assert blocks["human"].limit == 10000 and blocks["summary"].limit == 1000
    assert blocks["human"].description == "Details about the human user you are speaking to."
    assert blocks["summary"].description == "A short (1-2 sentences) running summary of the conversation."


def test_special_characters_in_block_labels(make_memory: MakeMemory) -> None:
    memory = make_memory(subject_id=_uid("user_special"))
    memory.initialize_memory("user_name", "User name", value="Bob", reset=True)
    memory.initialize_memory("api-key", "API key", value="secret", reset=True)
    memory.initialize_memory("v1.settings", "Dotted", value="dots", reset=True)
    assert memory.get_memory("user_name") == "Bob"
    assert memory.get_memory("api-key") == "secret"
    assert memory.get_memory("v1.settings") == "dots"


def test_long_block_value(make_memory: MakeMemory) -> None:
    memory = make_memory(subject_id=_uid("user_long"))
    long_value = "x" * 5000
    memory.initialize_memory("data", "Large data", value=long_value, char_limit=10000, reset=True)
    result = memory.get_memory("data")
    assert result == long_value and len(result) == 5000


def test_wait_for_run_fast_completion(make_memory: MakeMemory) -> None:
    memory = make_memory(subject_id=_uid("user_test2"))
    memory.initialize_memory(label="test", description="Test", value="v", reset=True)
    run = memory.add_messages([{"role": "user", "content": "test"}])
    start = time.monotonic()
    memory.wait_for_run(run)  # default timeout (300 s)
    assert time.monotonic() - start < 2, "a fast run should complete quickly"


def test_wait_for_run_unknown_id_raises_at_once(memory: Memory) -> None:
    start = time.monotonic()
    with pytest.raises(RunNotFoundError):
        memory.wait_for_run("run-00000000-0000-0000-0000-000000000000", timeout=30)
    assert time.monotonic() - start < 1.0
    with pytest.raises(RunNotFoundError):
        memory.get_run("run-does-not-exist")


# ---------------------------------------------------------------------------------------------
# Timeouts need a run that cannot complete: local engine with background=False.
# ---------------------------------------------------------------------------------------------


def test_wait_for_run_timeout(make_memory: MakeMemory) -> None:
    memory = make_memory(subject_id=_uid("user_test"), background=False)
    _local_only(memory)
    memory.initialize_memory(label="test", description="Test block", value="initial", reset=True)
    run = memory.add_messages([{"role": "user", "content": "second"}])
    start = time.monotonic()
    with pytest.raises(TimeoutError) as exc_info:
        memory.wait_for_run(run, timeout=1)
    elapsed = time.monotonic() - start
    assert 0.9 <= elapsed < 2.5, elapsed
    assert run in str(exc_info.value) and "did not complete within" in str(exc_info.value)
    assert memory.get_run(run).status == "queued"


def test_wait_for_run_timeout_message_matches_original(make_memory: MakeMemory) -> None:
    memory = make_memory(subject_id=_uid("user_test"), background=False)
    _local_only(memory)
    run = memory.add_messages([{"role": "user", "content": "second"}])
    with pytest.raises(TimeoutError) as exc_info:
        memory.wait_for_run(run, timeout=1)
    assert "did not complete within 1 seconds" in str(exc_info.value)


# =============================================================================================
# Every other public method of SPEC §4.
# =============================================================================================


def test_get_summary_and_agent_id(memory: Memory) -> None:
    uid = _uid()
    assert memory.get_summary(uid) is None
    assert memory.get_summary(uid, prompt_formatted=True) is None
    assert memory.get_memory_agent_id(uid) is None
    run = memory.add_messages(uid, CONVERSATION)  # creates the user's memory
    agent_id = memory.get_memory_agent_id(uid)
    assert isinstance(agent_id, str) and agent_id
    memory.wait_for_run(run)
    summary = memory.get_summary(uid)
    assert summary
    assert memory.get_summary(uid, prompt_formatted=True) == f"<conversation_summary>{summary}</conversation_summary>"
    assert memory.get_memory_agent_id(uid) == agent_id


def test_delete_user_erases_everything(memory: Memory, capsys: pytest.CaptureFixture[str]) -> None:
    uid, other = _uid(), _uid()
    memory.wait_for_run(memory.add_messages(uid, CONVERSATION, skip_vector_storage=False))
    memory.wait_for_run(memory.add_messages(other, CONVERSATION, skip_vector_storage=False))
    memory.delete_user(uid)
    assert capsys.readouterr().out == ""  # unlike 0.2.0, nothing is printed
    assert memory.get_user_memory(uid) is None
    assert memory.get_summary(uid) is None
    assert memory.get_memory_agent_id(uid) is None
    assert memory.search(uid, "cats") == []
    assert memory.get_messages(uid) == []
    assert memory.list_runs(uid) == []
    # the other user is untouched
    assert "Bob" in (memory.get_user_memory(other) or "")
    assert memory.search(other, "cats")
    memory.delete_user(uid)  # deleting an unknown user is a no-op


def test_delete_user_leaves_no_rows(memory: Memory) -> None:
    _local_only(memory)
    uid, other = _uid(), _uid()
    memory.wait_for_run(memory.add_messages(uid, CONVERSATION, skip_vector_storage=False))
    memory.wait_for_run(memory.add_messages(other, CONVERSATION, skip_vector_storage=False))
    memory.set_memory("human", "edited", subject_id=uid)
    memory.delete_user(uid)
    db = sqlite3.connect(_db_path(memory))
    try:
        tables = ["messages", "runs", "passages", "blocks", "passage_vectors", "block_versions"]
        remaining = {t: db.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in tables}
        assert db.execute("SELECT count(*) FROM subjects WHERE subject_id=?", (uid,)).fetchone()[0] == 0
        # only the other user's rows remain: 3 messages, 1 run, 3 passages, 2 blocks
        assert remaining["messages"] == 3 and remaining["runs"] == 1 and remaining["passages"] == 3
        assert remaining["blocks"] == 2
        hits = db.execute("SELECT count(*) FROM passages_fts WHERE passages_fts MATCH 'cats'").fetchone()[0]
        assert hits == 1
    finally:
        db.close()


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
    assert memory.search(uid, "giraffes") == []


def test_skip_vector_storage_default_is_not_searched(memory: Memory) -> None:
    uid = _uid()
    memory.wait_for_run(memory.add_messages(uid, [{"role": "user", "content": "I love cats"}]))
    assert memory.search(uid, "cats") == []
    assert [m.content for m in memory.get_messages(uid)] == ["I love cats"]


def test_search_limit(memory: Memory) -> None:
    uid = _uid()
    batch = [{"role": "user", "content": f"cats note number {i}"} for i in range(8)]
    memory.wait_for_run(memory.add_messages(uid, batch, skip_vector_storage=False))
    assert len(memory.search(uid, "cats")) == 8
    assert len(memory.search(uid, "cats", limit=3)) == 3
    assert len(memory.search_passages(uid, "cats", limit=2)) == 2


def test_search_never_returns_another_subject(memory: Memory) -> None:
    a, b = _uid(), _uid()
    memory.wait_for_run(
        memory.add_messages(a, [{"role": "user", "content": "secret cats of a"}], skip_vector_storage=False)
    )
    memory.wait_for_run(
        memory.add_messages(b, [{"role": "user", "content": "public dogs of b"}], skip_vector_storage=False)
    )
    assert memory.search(b, "cats") == []
    assert memory.search(b, "secret cats of a dogs") == ["public dogs of b"]


def test_search_passages_fields(memory: Memory) -> None:
    uid = _uid()
    said = datetime(2024, 3, 1, 12, 0, tzinfo=timezone.utc)
    batch = [
        {
            "role": "user",
            "content": "We went hiking in the Alps",
            "tags": ["travel"],
            "metadata": {"trip": 7},
            "created_at": said,
        },
        {"role": "user", "content": "Hiking boots are expensive", "created_at": said + timedelta(days=1)},
    ]
    memory.wait_for_run(memory.add_messages(uid, batch, skip_vector_storage=False))
    stored = memory.get_messages(uid)
    results = memory.search_passages(uid, "hiking Alps")
    assert results and all(isinstance(r, SearchResult) for r in results)
    top = results[0]
    assert top.content == "We went hiking in the Alps"
    assert isinstance(top.score, float)
    assert [r.score for r in results] == sorted((r.score for r in results), reverse=True)
    assert top.role == "user"
    assert set(top.tags) == {"user", "travel"}
    assert top.created_at == said
    assert top.message_id == stored[0].id
    assert top.metadata == {"trip": 7}

    only_travel = memory.search_passages(uid, "hiking", tags=["user", "travel"], tag_match_mode="all")
    assert [r.content for r in only_travel] == ["We went hiking in the Alps"]
    any_travel = memory.search_passages(uid, "hiking", tags=["user", "travel"], tag_match_mode="any")
    assert len(any_travel) == 2
    late = memory.search_passages(uid, "hiking", start=said + timedelta(hours=1))
    assert [r.content for r in late] == ["Hiking boots are expensive"]
    early = memory.search_passages(uid, "hiking", end=(said + timedelta(hours=1)).isoformat())
    assert [r.content for r in early] == ["We went hiking in the Alps"]


def test_get_messages_order_limit_window_and_run(memory: Memory) -> None:
    uid = _uid()
    t0 = datetime(2024, 1, 1, 9, 0, tzinfo=timezone.utc)
    first = [
        {"role": "user", "content": "m0", "created_at": t0},
        {"role": "assistant", "content": "m1", "created_at": t0 + timedelta(hours=1), "name": "Sam"},
    ]
    second = [
        {"role": "user", "content": "m2", "created_at": (t0 + timedelta(hours=2)).isoformat()},
        {"role": "user", "content": "m3", "created_at": t0 + timedelta(hours=3)},
    ]
    r1 = memory.add_messages(uid, first)
    r2 = memory.add_messages(uid, second)
    memory.wait_for_run(r2)
    msgs = memory.get_messages(uid)
    assert all(isinstance(m, StoredMessage) for m in msgs)
    assert [m.content for m in msgs] == ["m0", "m1", "m2", "m3"]
    assert [m.run_id for m in msgs] == [r1, r1, r2, r2]
    assert [m.role for m in msgs] == ["user", "assistant", "user", "user"]
    assert msgs[1].name == "Sam" and msgs[0].name is None
    assert msgs[0].created_at == t0
    assert len({m.id for m in msgs}) == 4
    assert [m.content for m in memory.get_messages(uid, limit=2)] == ["m2", "m3"]
    assert [m.content for m in memory.get_messages(uid, before=t0 + timedelta(hours=1))] == ["m0"]
    assert [m.content for m in memory.get_messages(uid, after=t0 + timedelta(hours=2))] == ["m3"]
    window = memory.get_messages(uid, after=t0, before=(t0 + timedelta(hours=3)).isoformat())
    assert [m.content for m in window] == ["m1", "m2"]
    assert memory.get_messages(_uid("nobody")) == []


def test_delete_message_removes_it_everywhere(memory: Memory) -> None:
    uid = _uid()
    memory.wait_for_run(memory.add_messages(uid, CONVERSATION, skip_vector_storage=False))
    cats = next(m for m in memory.get_messages(uid) if "cats" in m.content)
    assert memory.search(uid, "cats")
    memory.delete_message(cats.id)
    assert cats.id not in [m.id for m in memory.get_messages(uid)]
    assert len(memory.get_messages(uid)) == 2
    assert memory.search(uid, "cats") == []
    assert memory.search_passages(uid, "cats", tags=[]) == []
    memory.delete_message(cats.id)  # already gone: no error


def test_get_context_renders_every_block_in_creation_order(memory: Memory) -> None:
    sid = _uid("ctx")
    memory.initialize_memory("zeta", "Last letter", value="z", subject_id=sid)
    memory.initialize_memory("alpha", "First letter", value="a\nline two", subject_id=sid)
    memory.initialize_memory("mid", 'Quoted "desc" & more', value="", subject_id=sid)
    expected = "\n".join(
        memory.get_memory(label, prompt_formatted=True, subject_id=sid)  # type: ignore[misc]
        for label in ("zeta", "alpha", "mid")
    )
    assert memory.get_context(sid) == expected
    assert memory.get_context(_uid("empty")) == ""


def test_set_memory(memory: Memory) -> None:
    sid = _uid("set")
    memory.initialize_memory("notes", "Notes", value="old", char_limit=20, subject_id=sid)
    memory.set_memory("notes", "new value", subject_id=sid)
    assert memory.get_memory("notes", subject_id=sid) == "new value"
    with pytest.raises(ValueError, match="limit"):
        memory.set_memory("notes", "y" * 21, subject_id=sid)
    assert memory.get_memory("notes", subject_id=sid) == "new value"
    memory.set_memory("notes", "z" * 20, subject_id=sid)  # exactly at the limit
    with pytest.raises(LookupError):
        memory.set_memory("missing", "v", subject_id=sid)
    with pytest.raises(TypeError):
        memory.set_memory("notes", 5, subject_id=sid)  # type: ignore[arg-type]


def test_add_files(memory: Memory, tmp_path: Path) -> None:
    sid = _uid("files")
    paragraphs = [f"Paragraph {i}: " + ("lorem ipsum dolor sit amet " * 40) for i in range(12)]
    paragraphs[-1] += " The treasure is buried in Zanzibar."
    text = "\n\n".join(paragraphs) + "\n"
    assert len(text) > 8000
    path = tmp_path / "notes.txt"
    path.write_text(text, encoding="utf-8")
    small = tmp_path / "small.txt"
    small.write_text("My favourite colour is teal.\n", encoding="utf-8")

    runs = memory.add_files(
        [
            {"file_path": str(path), "label": "notes_file", "description": "Project notes", "subject_id": sid},
            {"file_path": str(small), "subject_id": sid},
        ]
    )
    assert isinstance(runs, list) and len(runs) == 2
    for run in runs:
        memory.wait_for_run(run)

    msgs = [m for m in memory.get_messages(sid) if m.run_id == runs[0]]
    n = len(msgs)
    assert n >= 3
    body = []
    for i, m in enumerate(msgs, 1):
        assert f"(part {i}/{n})" in m.content
        header, _, part = m.content.partition("\n")
        assert "notes.txt" in header
        body.append(part)
    assert "".join(body) == text  # split, never truncated
    hits = memory.search(sid, "Zanzibar treasure")
    assert hits and "Zanzibar" in hits[0]
    assert memory.get_memory("notes_file", subject_id=sid) == ""
    assert memory.list_blocks(sid)[0].description == "Project notes"


def test_add_files_unreadable_file_stores_nothing(memory: Memory, tmp_path: Path) -> None:
    sid = _uid("files")
    good = tmp_path / "good.txt"
    good.write_text("hello", encoding="utf-8")
    with pytest.raises(ValueError, match=r"files\[1\]"):
        memory.add_files(
            [
                {"file_path": str(good), "subject_id": sid},
                {"file_path": str(tmp_path / "missing.txt"), "subject_id": sid},
            ]
        )
    assert memory.get_messages(sid) == []


# =============================================================================================
# Runs (local engine: background=False enqueues only; the engine's worker drains).
# =============================================================================================


def test_get_run_and_list_runs(make_memory: MakeMemory) -> None:
    producer = make_memory(background=False)
    _local_only(producer)
    uid = _uid()
    r1 = producer.add_messages(uid, CONVERSATION)
    r2 = producer.add_messages(uid, [{"role": "user", "content": "I live in Oslo"}])
    run = producer.get_run(r1)
    assert isinstance(run, Run)
    assert run.id == r1 and run.subject_id == uid and run.status == "queued"
    assert run.started_at is None and run.finished_at is None and run.created_at is not None
    assert [r.id for r in producer.list_runs(uid)] == [r1, r2]
    assert [r.id for r in producer.list_runs(uid, status="queued")] == [r1, r2]
    assert producer.list_runs(uid, status="completed") == []
    with pytest.raises(ValueError):
        producer.list_runs(uid, status="bogus")

    assert _drain(producer) >= 1
    done = producer.get_run(r2)
    assert done.status == "completed" and done.learner == "offline" and done.error is None
    assert done.started_at is not None and done.finished_at is not None
    assert done.created_at <= done.started_at <= done.finished_at
    assert done.llm_calls == 0 and done.prompt_tokens == 0 and done.completion_tokens == 0
    assert [r.id for r in producer.list_runs(uid, status="completed")] == [r1, r2]
    producer.wait_for_run(r1, timeout=1)
    assert "Location: Oslo" in (producer.get_user_memory(uid) or "")


def test_cancel_run(make_memory: MakeMemory) -> None:
    producer = make_memory(background=False)
    _local_only(producer)
    uid = _uid()
    r1 = producer.add_messages(uid, [{"role": "user", "content": "My name is Carol"}])
    r2 = producer.add_messages(uid, [{"role": "user", "content": "I live in Rome"}])
    cancelled = producer.cancel_run(r1)
    assert cancelled.status == "cancelled" and cancelled.finished_at is not None
    with pytest.raises(RunCancelledError):
        producer.wait_for_run(r1, timeout=5)
    _drain(producer)
    producer.wait_for_run(r2, timeout=5)
    human = producer.get_user_memory(uid) or ""
    assert "Rome" in human and "Carol" not in human  # the cancelled batch was not learned
    assert next(m.content for m in producer.get_messages(uid)) == "My name is Carol"  # but stays stored
    with pytest.raises(RunStateError):
        producer.cancel_run(r2)  # completed
    with pytest.raises(ValueError):  # RunStateError is a ValueError
        producer.cancel_run(r1)
    with pytest.raises(RunNotFoundError):
        producer.cancel_run("run-unknown")


def test_failed_run_retry(make_memory: MakeMemory, openai_server) -> None:
    from support.openai_server import fail, reply

    memory = make_memory(learner="llm", llm_base_url=openai_server.base_url, llm_api_key="sk-test")
    _local_only(memory)
    uid = _uid()
    memory.initialize_user_memory(uid)
    openai_server.script(fail(400))  # the endpoint refuses the pass: the run fails at once
    bad = memory.add_messages(uid, [{"role": "user", "content": "My name is Bartholomew and I live in San Francisco"}])
    with pytest.raises(RunFailedError) as exc_info:
        memory.wait_for_run(bad, timeout=10)
    failed = memory.get_run(bad)
    assert failed.status == "failed" and failed.error and exc_info.value.run.id == bad
    assert failed.stop_reason == "llm_error"
    assert memory.get_user_memory(uid) == ""  # a failed pass changes no block
    # a failed run does not hold back the subject's later runs
    openai_server.script(reply(tool_calls=[("memory_finish_edits", {})]))
    later = memory.add_messages(uid, [{"role": "user", "content": "hello there"}])
    memory.wait_for_run(later, timeout=10)
    assert memory.get_run(later).status == "completed"
    with pytest.raises(RunStateError):
        memory.retry_run(later)  # only a failed run can be retried
    with pytest.raises(RunNotFoundError):
        memory.retry_run("run-unknown")
    # the endpoint answers now: retry, the run goes back to the queue and is learned
    openai_server.script(
        reply(
            tool_calls=[
                ("memory_insert", {"label": "human", "new_str": "Name: Bartholomew"}),
                ("memory_finish_edits", {}),
            ]
        )
    )
    requeued = memory.retry_run(bad)
    assert requeued.status in ("queued", "running", "completed") and requeued.error is None
    memory.wait_for_run(bad, timeout=10)
    assert "Bartholomew" in (memory.get_user_memory(uid) or "")


def test_failed_run_does_not_fail_runs_queued_behind_it(make_memory: MakeMemory, openai_server) -> None:
    from support.openai_server import reply

    def answer(request: dict[str, Any]) -> Any:  # a pass over the bad batch never finishes (max_steps)
        if "Bartholomew" in str(request["messages"]):
            return reply(tool_calls=[("memory_replace", {"label": "human", "old_str": "nowhere", "new_str": "x"})])
        return reply(tool_calls=[("memory_finish_edits", {})])

    openai_server.responder = answer
    producer = make_memory(
        background=False, learner="llm", llm_base_url=openai_server.base_url, llm_api_key="sk-test", max_steps=2
    )
    _local_only(producer)
    uid = _uid()
    producer.initialize_user_memory(uid)
    bad = producer.add_messages(uid, [{"role": "user", "content": "My name is Bartholomew and I live in Paris"}])
    good = producer.add_messages(uid, [{"role": "user", "content": "hello there"}])
    _drain(producer)
    assert producer.get_run(bad).status == "failed"
    assert producer.get_run(good).status == "completed"


def test_runs_of_one_subject_apply_in_order_never_two_at_once(memory: Memory) -> None:
    uid = _uid()
    cities = [f"City{i:02d}" for i in range(25)]
    runs = [memory.add_messages(uid, [{"role": "user", "content": f"I live in {c}"}]) for c in cities]
    for run in runs:
        memory.wait_for_run(run, timeout=30)
    assert "Location: City24" in (memory.get_user_memory(uid) or "")
    if memory.engine != "local":
        return
    listed = memory.list_runs(uid)
    assert [r.id for r in listed] == runs
    passes: list[tuple[datetime, datetime]] = []
    for r in listed:
        assert r.started_at is not None and r.finished_at is not None
        span = (r.started_at, r.finished_at)
        if not passes or passes[-1] != span:  # coalesced runs share one pass
            passes.append(span)
    for (_s1, f1), (s2, _f2) in itertools.pairwise(passes):
        assert f1 <= s2, "two passes of one subject overlapped or ran out of order"


def test_subjects_are_learned_independently(memory: Memory) -> None:
    users = [_uid() for _ in range(6)]
    runs = [memory.add_messages(u, [{"role": "user", "content": f"My name is Person{i}"}]) for i, u in enumerate(users)]
    for run in runs:
        memory.wait_for_run(run, timeout=30)
    for i, u in enumerate(users):
        assert memory.get_user_memory(u) == f"Name: Person{i}"


# =============================================================================================
# Block history (local engine).
# =============================================================================================


def test_block_history_and_restore(make_memory: MakeMemory) -> None:
    memory = make_memory()
    _local_only(memory)
    uid = _uid()
    memory.initialize_user_memory(uid)
    run = memory.add_messages(uid, [{"role": "user", "content": "My name is Erin"}])
    memory.wait_for_run(run)
    memory.set_memory("human", "Name: Erin\nNote: manual", subject_id=uid)

    history = memory.block_history("human", subject_id=uid)
    assert all(isinstance(v, BlockVersion) for v in history)
    assert [v.version for v in history] == [1, 2, 3]
    assert [v.value for v in history] == ["", "Name: Erin", "Name: Erin\nNote: manual"]
    assert [v.run_id for v in history] == [None, run, None]
    assert history[0].created_at <= history[1].created_at <= history[2].created_at

    restored = memory.restore_block("human", 2, subject_id=uid)
    assert restored == "Name: Erin"
    assert memory.get_user_memory(uid) == "Name: Erin"
    history = memory.block_history("human", subject_id=uid)
    assert [v.version for v in history] == [1, 2, 3, 4] and history[-1].value == "Name: Erin"

    with pytest.raises(LookupError):
        memory.restore_block("human", 99, subject_id=uid)
    with pytest.raises(BlockNotFoundError):
        memory.block_history("nope", subject_id=uid)
    with pytest.raises(TypeError):
        memory.restore_block("human", "2", subject_id=uid)  # type: ignore[arg-type]


def test_restore_refuses_a_version_over_the_current_limit(make_memory: MakeMemory) -> None:
    memory = make_memory()
    _local_only(memory)
    sid = _uid("lim")
    memory.initialize_memory("b", "B", value="x" * 50, char_limit=100, subject_id=sid)
    memory.set_memory("b", "short", subject_id=sid)
    assert [v.value for v in memory.block_history("b", subject_id=sid)] == ["x" * 50, "short"]
    memory.initialize_memory("b", "B", value="tiny", char_limit=10, reset=True, subject_id=sid)
    assert [v.value for v in memory.block_history("b", subject_id=sid)] == ["tiny"]  # reset starts afresh


def test_history_limit(make_memory: MakeMemory) -> None:
    memory = make_memory(history_limit=3)
    _local_only(memory)
    sid = _uid("hist")
    memory.initialize_memory("b", "B", value="v0", subject_id=sid)
    for i in range(1, 6):
        memory.set_memory("b", f"v{i}", subject_id=sid)
    history = memory.block_history("b", subject_id=sid)
    assert [v.value for v in history] == ["v3", "v4", "v5"]
    assert [v.version for v in history] == [4, 5, 6]


# =============================================================================================
# Lifecycle.
# =============================================================================================


def test_close_and_context_manager_keep_queued_runs(make_memory: MakeMemory) -> None:
    uid = _uid()
    with make_memory(background=False) as producer:
        _local_only(producer)
        run = producer.add_messages(uid, [{"role": "user", "content": "My name is Frank"}])
    producer.close()  # idempotent
    worker = make_memory()  # background workers resume what is queued
    worker.wait_for_run(run, timeout=10)
    assert worker.get_user_memory(uid) == "Name: Frank"


def test_close_finishes_work_in_progress(make_memory: MakeMemory) -> None:
    memory = make_memory()
    _local_only(memory)
    uid = _uid()
    runs = [memory.add_messages(uid, [{"role": "user", "content": f"I live in Town{i}"}]) for i in range(20)]
    memory.close()
    reader = make_memory(background=False)
    statuses = {reader.get_run(r).status for r in runs}
    assert statuses <= {"queued", "completed"}, statuses  # nothing left half-done in 'running'
    if "queued" in statuses:
        _drain(reader)
    assert {reader.get_run(r).status for r in runs} == {"completed"}
    assert "Location: Town19" in (reader.get_user_memory(uid) or "")


def test_idle_background_memory_processes_runs_enqueued_elsewhere(make_memory: MakeMemory) -> None:
    worker = make_memory()  # background workers on, nothing queued yet
    _local_only(worker)
    producer = make_memory(background=False)
    run = producer.add_messages(_uid(), [{"role": "user", "content": "My name is Gina"}])
    worker.wait_for_run(run, timeout=2)


def test_throwaway_memory_path(make_memory: MakeMemory) -> None:
    memory = make_memory(path=":memory:")
    _local_only(memory)
    uid = _uid()
    memory.wait_for_run(memory.add_messages(uid, CONVERSATION))
    assert "Bob" in (memory.get_user_memory(uid) or "")
    path = Path(_db_path(memory))
    assert path.exists()
    memory.close()
    assert not path.exists()
