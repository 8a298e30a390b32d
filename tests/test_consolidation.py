"""Consolidation runs: queued on demand or automatically, serialised with learning, atomic, in history."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from support.openai_server import ScriptedOpenAI, reply

from ai_memory_sdk import Memory, SubjectNotFoundError


def _kinds(m: Memory, uid: str) -> list[tuple[str, str]]:
    return [(r.kind, r.status) for r in m.list_runs(uid)]


def test_consolidate_queues_a_consolidation_run_that_rewrites_the_blocks(tmp_path: Path) -> None:
    with Memory(path=tmp_path / "m.db", learner="offline", embedder="none") as m:
        uid = "u"
        m.initialize_user_memory(uid, user_context_block_value="Likes: tea\nlikes: Tea\nLikes: tea; chess")
        run = m.consolidate(uid)
        m.wait_for_run(run)
        assert m.get_run(run).kind == "consolidate"
        assert _kinds(m, uid) == [("consolidate", "completed")]
        human = m.get_user_memory(uid) or ""
        assert human.count("tea") == 1 and "chess" in human  # merged, nothing standing dropped
        assert m.block_history("human", uid)[-1].run_id == run


def test_consolidating_an_unknown_subject_is_an_error(tmp_path: Path) -> None:
    with Memory(path=tmp_path / "m.db", learner="offline", embedder="none") as m:
        with pytest.raises(SubjectNotFoundError):
            m.consolidate("nobody")
        with pytest.raises(ValueError, match="subject_id"):
            m.consolidate()  # not bound to a subject


def test_the_llm_consolidation_pass_sends_blocks_only(tmp_path: Path) -> None:
    with ScriptedOpenAI() as llm:
        llm.responder = lambda req: reply(
            tool_calls=[("memory_rethink", {"label": "human", "new_memory": "Name: Sam"}), ("memory_finish_edits", {})]
        )
        with Memory(path=tmp_path / "m.db", learner="llm", llm_base_url=llm.base_url, embedder="none") as m:
            m.initialize_user_memory("u", user_context_block_value="Name: Sam\nName: Sam")
            m.wait_for_run(m.consolidate("u"))
            assert m.get_user_memory("u") == "Name: Sam"
        body = json.loads(llm.chat_requests[-1].body)
    text = json.dumps(body["messages"])
    assert "Name: Sam" in text and "<messages>" not in text  # the blocks, no transcript


def test_a_pass_that_fills_a_block_queues_one_consolidation(tmp_path: Path) -> None:
    with Memory(path=tmp_path / "m.db", learner="offline", embedder="none") as m:
        uid = "u"
        m.initialize_user_memory(uid, user_context_block_char_limit=50)
        m.wait_for_run(m.add_messages(uid, [{"role": "user", "content": "My name is Samantha and I live in Oslo."}]))
        m.wait_for_run(m.add_messages(uid, [{"role": "user", "content": "I love skiing and I love tea."}]))
        for r in m.list_runs(uid):
            m.wait_for_run(r.id)
        kinds = [k for k, _ in _kinds(m, uid)]
        assert kinds.count("consolidate") == 1, kinds
        assert all(len(b.value) <= b.limit for b in m.list_blocks(uid))


def test_consolidate_at_none_turns_automatic_consolidation_off(tmp_path: Path) -> None:
    with Memory(path=tmp_path / "m.db", learner="offline", embedder="none", consolidate_at=None) as m:
        uid = "u"
        m.initialize_user_memory(uid, user_context_block_char_limit=50)
        for text in ("My name is Samantha and I live in Oslo.", "I love skiing and I love tea."):
            m.wait_for_run(m.add_messages(uid, [{"role": "user", "content": text}]))
        assert [k for k, _ in _kinds(m, uid)] == ["learn", "learn"]
