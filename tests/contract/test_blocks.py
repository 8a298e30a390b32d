"""Subjects and their blocks: initialise, read, write, reset, delete, render; block history.

The first scenarios are ai-memory-sdk 0.2.0's own (tests/test_subject.py and test_edge_cases.py of
that package), without a fake ``letta_client``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from support.backends import MakeMemory
from support.scenario import CONVERSATION, unique_id

from ai_memory_sdk import Block, BlockNotFoundError, BlockVersion, Memory


def test_instance_scoped_subject(make_memory: MakeMemory) -> None:
    memory = make_memory(subject_id=unique_id("user_sarah"))
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


def test_explicit_subject(memory: Memory) -> None:
    sid = unique_id("project_alpha")
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


def test_block_reset_functionality(make_memory: MakeMemory) -> None:
    memory = make_memory(subject_id=unique_id("user_reset_test"))
    memory.initialize_memory("config", "Configuration", value="v1", reset=True)
    assert memory.get_memory("config") == "v1"
    memory.initialize_memory("config", "Configuration", value="v2", reset=True)
    assert memory.get_memory("config") == "v2"
    first_id = memory.list_blocks()[0].id
    assert memory.initialize_memory("config", "Configuration", value="v3", reset=False) == first_id
    assert memory.get_memory("config") == "v2"


def test_multiple_blocks_per_subject(make_memory: MakeMemory) -> None:
    memory = make_memory(subject_id=unique_id("user_multi"))
    memory.initialize_memory("human", "Human info", value="Alice", reset=True)
    memory.initialize_memory("summary", "Summary", value="First conversation", reset=True)
    memory.initialize_memory("preferences", "User preferences", value="Likes Python", reset=True)
    assert sorted(b.label for b in memory.list_blocks()) == ["human", "preferences", "summary"]
    assert memory.get_memory("human") == "Alice"
    assert memory.get_memory("summary") == "First conversation"
    assert memory.get_memory("preferences") == "Likes Python"


def test_empty_block_value(make_memory: MakeMemory) -> None:
    memory = make_memory(subject_id=unique_id("user_empty"))
    memory.initialize_memory("notes", "User notes", value="", reset=True)
    assert memory.get_memory("notes") == ""


def test_nonexistent_block_returns_none(make_memory: MakeMemory) -> None:
    memory = make_memory(subject_id=unique_id("user_none"))
    assert memory.get_memory("nonexistent") is None
    assert memory.get_memory("nonexistent", prompt_formatted=True) is None
    memory.initialize_memory("other", "Other")
    assert memory.get_memory("nonexistent") is None


def test_subject_initialization_reset(memory: Memory) -> None:
    sid = unique_id("project_x")
    memory.initialize_subject(sid, reset=True)
    memory.initialize_memory("status", "Status", value="active", subject_id=sid)
    assert memory.get_memory("status", subject_id=sid) == "active"
    memory.initialize_subject(sid, reset=True)
    assert memory.get_memory("status", subject_id=sid) is None


def test_subject_initialization_without_reset_raises(memory: Memory) -> None:
    sid = unique_id("project_y")
    memory.initialize_subject(sid, reset=True)
    with pytest.raises(ValueError, match="already exists"):
        memory.initialize_subject(sid, reset=False)


def test_initialize_user_memory_reset_and_exists(memory: Memory) -> None:
    uid = unique_id()
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
    memory = make_memory(subject_id=unique_id("user_special"))
    memory.initialize_memory("user_name", "User name", value="Bob", reset=True)
    memory.initialize_memory("api-key", "API key", value="secret", reset=True)
    memory.initialize_memory("v1.settings", "Dotted", value="dots", reset=True)
    assert memory.get_memory("user_name") == "Bob"
    assert memory.get_memory("api-key") == "secret"
    assert memory.get_memory("v1.settings") == "dots"


def test_long_block_value(make_memory: MakeMemory) -> None:
    memory = make_memory(subject_id=unique_id("user_long"))
    long_value = "x" * 5000
    memory.initialize_memory("data", "Large data", value=long_value, char_limit=10000, reset=True)
    result = memory.get_memory("data")
    assert result == long_value and len(result) == 5000


def test_get_summary_and_agent_id(memory: Memory) -> None:
    uid = unique_id()
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


def test_get_context_renders_every_block_in_creation_order(memory: Memory) -> None:
    sid = unique_id("ctx")
    memory.initialize_memory("zeta", "Last letter", value="z", subject_id=sid)
    memory.initialize_memory("alpha", "First letter", value="a\nline two", subject_id=sid)
    memory.initialize_memory("mid", 'Quoted "desc" & more', value="", subject_id=sid)
    expected = "\n".join(
        memory.get_memory(label, prompt_formatted=True, subject_id=sid)  # type: ignore[misc]
        for label in ("zeta", "alpha", "mid")
    )
    assert memory.get_context(sid) == expected
    assert memory.get_context(unique_id("empty")) == ""


def test_set_memory(memory: Memory) -> None:
    sid = unique_id("set")
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


@pytest.mark.needs("block_history")
def test_block_history_and_restore(make_memory: MakeMemory) -> None:
    memory = make_memory()
    uid = unique_id()
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


@pytest.mark.needs("block_history")
def test_restore_refuses_a_version_over_the_current_limit(make_memory: MakeMemory) -> None:
    memory = make_memory()
    sid = unique_id("lim")
    memory.initialize_memory("b", "B", value="x" * 50, char_limit=100, subject_id=sid)
    memory.set_memory("b", "short", subject_id=sid)
    assert [v.value for v in memory.block_history("b", subject_id=sid)] == ["x" * 50, "short"]
    memory.initialize_memory("b", "B", value="tiny", char_limit=10, reset=True, subject_id=sid)
    assert [v.value for v in memory.block_history("b", subject_id=sid)] == ["tiny"]  # reset starts afresh


@pytest.mark.needs("block_history")
def test_history_limit(make_memory: MakeMemory) -> None:
    memory = make_memory(history_limit=3)
    sid = unique_id("hist")
    memory.initialize_memory("b", "B", value="v0", subject_id=sid)
    for i in range(1, 6):
        memory.set_memory("b", f"v{i}", subject_id=sid)
    history = memory.block_history("b", subject_id=sid)
    assert [v.value for v in history] == ["v3", "v4", "v5"]
    assert [v.version for v in history] == [4, 5, 6]
