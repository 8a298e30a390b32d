"""What a newcomer tripped over, each fixed: learning that silently did not happen, errors and inputs.

Each test here failed before its fix (the "tried as a new user" review). The
CLI's items are in tests/test_cli.py.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
from support.openai_server import ScriptedOpenAI, fail, reply, stall

from ai_memory_sdk import Memory, MemoryClosedError, RunFailedError, StoreError

HI = [{"role": "user", "content": "Hi, I'm Sam and I live in Oslo."}]


def _status(path: Path, run_id: str) -> str:
    with sqlite3.connect(path) as conn:
        return str(conn.execute("SELECT status FROM runs WHERE id=?", (run_id,)).fetchone()[0])


# -- 1. a script that adds messages and ends learns them ------------------------------------------------


def test_close_learns_what_this_memory_queued(tmp_path: Path) -> None:
    path = tmp_path / "m.db"
    with Memory(path=path, learner="offline", embedder="none") as m:
        run = m.add_messages("u", HI)
    assert _status(path, run) == "completed"


def test_a_script_that_never_closes_gets_its_batch_learned_at_exit(tmp_path: Path) -> None:
    path = tmp_path / "m.db"
    script = textwrap.dedent(
        f"""
        from ai_memory_sdk import Memory
        m = Memory(path={str(path)!r}, learner="offline", embedder="none")
        print(m.add_messages("u", {HI!r}))
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True)
    assert _status(path, proc.stdout.strip()) == "completed"


def test_close_respects_its_bound_when_the_llm_stalls(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "m.db"
    with ScriptedOpenAI() as llm:
        llm.script(stall(30.0))
        m = Memory(path=path, learner="llm", llm_base_url=llm.base_url, embedder="none", close_timeout=1.0)
        run = m.add_messages("u", HI)
        assert llm.wait_for(1, timeout=10)  # the pass is inside its LLM call
        started = time.monotonic()
        with caplog.at_level(logging.WARNING, logger="ai_memory_sdk"):
            m.close()
        took = time.monotonic() - started
    assert took < 3.0, f"close() took {took:.1f}s with close_timeout=1"
    assert _status(path, run) == "queued"  # handed back, nothing half-applied
    warning = " ".join(r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    assert run in warning and "ai-memory worker" in warning
    with ScriptedOpenAI() as llm:  # the next process with workers learns it
        _learns(llm)
        with Memory(path=path, learner="llm", llm_base_url=llm.base_url, embedder="none") as again:
            again.wait_for_run(run, timeout=30)
            assert again.get_user_memory("u") == "Name: Sam"


def test_every_call_on_a_closed_memory_raises(tmp_path: Path) -> None:
    m = Memory(path=tmp_path / "m.db", learner="offline", embedder="none")
    run = m.add_messages("u", HI)
    m.close()
    m.close()  # closing twice is fine
    for call in (
        lambda: m.add_messages("u", HI),
        lambda: m.wait_for_run(run),
        lambda: m.get_user_memory("u"),
        lambda: m.search("u", "Oslo"),
        lambda: m.get_run(run),
    ):
        with pytest.raises(MemoryClosedError):
            call()


# -- 2 (library side). a subject without blocks ---------------------------------------------------------


def test_a_run_of_a_subject_without_blocks_says_so(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with Memory(path=tmp_path / "m.db", learner="offline", embedder="none") as m:
        with caplog.at_level(logging.WARNING, logger="ai_memory_sdk"):
            run = m.add_messages_for_subject("bare", HI)
            m.wait_for_run(run)
        assert m.get_run(run).stop_reason == "no_blocks"
    assert any("no blocks" in r.getMessage() for r in caplog.records)


# -- 3. learning never waits on or fails with the embedder ----------------------------------------------


def _learns(llm: ScriptedOpenAI) -> None:
    llm.responder = lambda req: reply(
        tool_calls=[("memory_insert", {"label": "human", "new_str": "Name: Sam"}), ("memory_finish_edits", {})]
    )


def test_an_embeddings_endpoint_without_the_model_falls_back(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with ScriptedOpenAI() as llm:
        _learns(llm)
        llm.script_embeddings(*[fail(404, {"error": {"message": "model not found", "code": "model_not_found"}})] * 50)
        with caplog.at_level(logging.WARNING, logger="ai_memory_sdk"):
            with Memory(path=tmp_path / "m.db", llm_base_url=llm.base_url) as m:  # auto learner, auto embedder
                run = m.add_messages("u", HI, skip_vector_storage=False)
                m.wait_for_run(run, timeout=60)  # completes: the edits are not thrown away
                assert m.get_user_memory("u") == "Name: Sam"
                assert m.search("u", "Oslo") == [HI[0]["content"]]
                fallback = m._engine.info()["embedder"]  # type: ignore[attr-defined]
    assert fallback != "openai:text-embedding-3-small"
    assert any("falls back" in r.getMessage() for r in caplog.records)


def test_a_dead_embedder_does_not_fail_learning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with ScriptedOpenAI() as llm:
        _learns(llm)
        with caplog.at_level(logging.WARNING, logger="ai_memory_sdk"):
            with Memory(
                path=tmp_path / "m.db",
                llm_base_url=llm.base_url,
                embedder="openai:text-embedding-3-small",
                llm_retry_budget=0,
            ) as m:
                llm.script_embeddings(*[fail(500)] * 200)
                run = m.add_messages("u", HI, skip_vector_storage=False)
                m.wait_for_run(run, timeout=120)
                assert m.get_user_memory("u") == "Name: Sam"
                assert m.search("u", "Oslo") == [HI[0]["content"]]  # lexically searchable meanwhile
    warnings = [
        r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and "embedding" in r.getMessage()
    ]
    assert warnings and "openai:text-embedding-3-small" in warnings[0]


# -- 10. storage errors name the path and the cause -----------------------------------------------------


def test_a_corrupt_file_is_a_store_error_naming_it(tmp_path: Path) -> None:
    bad = tmp_path / "corrupt.db"
    bad.write_bytes(b"this is not a database" * 100)
    with pytest.raises(StoreError, match=r"corrupt\.db.*not a SQLite database"):
        Memory(path=bad, learner="offline", embedder="none")


def test_a_directory_is_a_store_error_naming_it(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="is a directory"):
        Memory(path=tmp_path, learner="offline", embedder="none")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes through directory permissions")
def test_a_read_only_location_is_a_store_error(tmp_path: Path) -> None:
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(stat.S_IRUSR | stat.S_IXUSR)
    try:
        with pytest.raises(StoreError, match="ro"):
            Memory(path=ro / "m.db", learner="offline", embedder="none")
    finally:
        ro.chmod(stat.S_IRWXU)


def test_another_applications_database_is_refused_and_left_alone(tmp_path: Path) -> None:
    other = tmp_path / "app.db"
    with sqlite3.connect(other) as conn:
        conn.execute("CREATE TABLE orders (id INTEGER PRIMARY KEY, total REAL)")
    with pytest.raises(StoreError, match="another application"):
        Memory(path=other, learner="offline", embedder="none")
    with sqlite3.connect(other) as conn:
        assert [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")] == ["orders"]


def test_a_tilde_path_is_expanded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("AI_MEMORY_PATH", "~/memory.db")
    monkeypatch.chdir(tmp_path)
    with Memory(learner="offline", embedder="none") as m:
        m.initialize_subject("s")
    assert (tmp_path / "home" / "memory.db").is_file()
    assert not (tmp_path / "~").exists()


# -- 12. inputs -----------------------------------------------------------------------------------------


def test_paths_may_be_path_objects(tmp_path: Path) -> None:
    note = tmp_path / "note.txt"
    note.write_text("I love tea.", encoding="utf-8")
    with Memory(path=tmp_path / "m.db", learner="offline", embedder="none") as m:
        (run,) = m.add_files([{"file_path": note, "subject_id": "u"}])
        m.wait_for_run(run)
        assert m.search("u", "tea", tags=[])


@pytest.mark.parametrize(
    ("options", "names"),
    [
        ({"workers": 0}, "workers"),
        ({"llm_timeout": "abc"}, "llm_timeout"),
        ({"learner": "LLM"}, "learner"),
        ({"embedder": "bert"}, "embedder"),
    ],
)
def test_bad_options_name_the_option(tmp_path: Path, options: dict[str, Any], names: str) -> None:
    with pytest.raises(ValueError, match=f"argument {names}"):
        Memory(path=tmp_path / "m.db", **options)
    assert not (tmp_path / "m.db").exists()  # refused before anything was created


def test_a_bad_environment_value_names_the_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AI_MEMORY_LEARNER", "LLM")
    with pytest.raises(ValueError, match="AI_MEMORY_LEARNER"):
        Memory(path=tmp_path / "m.db")


def test_inconsistent_inputs_are_named(tmp_path: Path) -> None:
    with Memory(path=tmp_path / "m.db", learner="offline", embedder="none") as m:
        with pytest.raises(ValueError, match=r"messages\[1\]\.content"):
            m.add_messages("u", [HI[0], {"role": "user", "content": "bad \ud800 surrogate"}])
        assert m.get_memory_agent_id("u") is None  # nothing stored
        with pytest.raises(TypeError, match="run_id"):
            m.get_run(None)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="run_id"):
            m.wait_for_run(5)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="user_context_block_char_limit"):
            m.initialize_user_memory("u", user_context_block_char_limit=0)
        with pytest.raises(TypeError, match="skip_vector_storage"):
            m.add_messages("u", HI, skip_vector_storage="no")  # type: ignore[arg-type]
        run = m.add_messages("u", HI)
        m.wait_for_run(run, timeout=None)  # None: no limit


# -- 13. repr -------------------------------------------------------------------------------------------


def test_repr_shows_engine_store_and_learner(tmp_path: Path) -> None:
    with Memory(path=tmp_path / "m.db", learner="offline", embedder="none") as m:
        text = repr(m)
    assert "engine='local'" in text and "m.db" in text and "learner='offline'" in text


# -- 14. search -----------------------------------------------------------------------------------------


def test_messages_without_text_are_not_archived(tmp_path: Path) -> None:
    with Memory(path=tmp_path / "m.db", learner="offline", embedder="none") as m:
        run = m.add_messages(
            "u",
            [
                {"role": "assistant", "content": None, "tool_calls": [{"id": "c1", "type": "function"}]},
                {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://x/y.png"}}]},
                {"role": "user", "content": "tea with milk"},
            ],
            skip_vector_storage=False,
        )
        m.wait_for_run(run)
        results = m.search_passages("u", "tea image", tags=[], limit=10)
        assert [r.content for r in results] == ["tea with milk"]
        assert len(m.get_messages("u")) == 3  # all stored


def test_lexical_only_search_says_so_once(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with Memory(path=tmp_path / "m.db", learner="offline", embedder="none") as m:
        m.wait_for_run(m.add_messages("u", HI, skip_vector_storage=False))
        with caplog.at_level(logging.WARNING, logger="ai_memory_sdk"):
            m.search("u", "Oslo")
            m.search("u", "Sam")
    said = [r for r in caplog.records if "lexical only" in r.getMessage()]
    assert len(said) == 1 and said[0].levelno == logging.WARNING and "ai-memory-sdk[local]" in said[0].getMessage()


def test_a_failed_run_still_reports_failure(tmp_path: Path) -> None:
    with ScriptedOpenAI() as llm:
        llm.script(fail(401))
        with Memory(path=tmp_path / "m.db", learner="llm", llm_base_url=llm.base_url, embedder="none") as m:
            with pytest.raises(RunFailedError):
                m.wait_for_run(m.add_messages("u", HI), timeout=30)
