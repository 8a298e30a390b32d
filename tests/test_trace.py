"""Pass traces (``trace=True``, the default): stored with each learned or failed run; ``trace=False`` stores none."""

from __future__ import annotations

import sqlite3

import pytest
from support.inspector_data import llm_options, responder

from ai_memory_sdk.errors import RunFailedError

BATCH = [
    {"role": "user", "content": "Hi, fact: name is Maya."},
    {"role": "assistant", "content": "Hello Maya!"},
]


def _trace_rows(path: str) -> int:
    conn = sqlite3.connect(path)
    try:
        return int(conn.execute("SELECT count(*) FROM traces").fetchone()[0])
    finally:
        conn.close()


def test_a_learned_run_keeps_its_trace(make_memory, openai_server, tmp_path):
    openai_server.responder = responder
    path = str(tmp_path / "on.db")
    mem = make_memory(path=path, **llm_options(openai_server))
    run = mem.add_messages("maya", BATCH)
    mem.wait_for_run(run)
    trace = mem._engine.get_trace(run)
    assert trace is not None and trace["kind"] == "learn" and trace["learner"] == "llm" and trace["runs"] == [run]
    assert isinstance(trace["steps"], list)
    assert trace["edits"] == [
        {"tool": "memory_insert", "args": {"label": "human", "new_str": "name is Maya", "insert_line": -1}}
    ]
    assert _trace_rows(path) == 1


def test_a_failed_run_keeps_its_trace_too(make_memory, openai_server, tmp_path):
    openai_server.responder = responder
    mem = make_memory(path=str(tmp_path / "failed.db"), **llm_options(openai_server))
    run = mem.add_messages("maya", [{"role": "user", "content": "FAILME please"}])
    with pytest.raises(RunFailedError):
        mem.wait_for_run(run)
    trace = mem._engine.get_trace(run)
    assert trace is not None and trace["runs"] == [run] and trace["edits"] == []


def test_trace_false_stores_no_trace_and_learns_the_same(make_memory, openai_server, tmp_path):
    openai_server.responder = responder
    learned = {}
    for flag in (True, False):
        path = str(tmp_path / f"trace-{flag}.db")
        mem = make_memory(path=path, trace=flag, **llm_options(openai_server))
        run = mem.add_messages("maya", BATCH)
        mem.wait_for_run(run)
        learned[flag] = mem.get_user_memory("maya")
        assert (mem._engine.get_trace(run) is not None) is flag
        assert _trace_rows(path) == (1 if flag else 0)
    assert learned[True] == learned[False] and "name is Maya" in learned[False]
