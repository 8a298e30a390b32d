"""The hot paths' shortcuts keep every guarantee (docs/dev/hot-path.md).

- ``get_user_memory``/``get_memory`` answer from a cache keyed on the file's
  change stamp: a value written by another process, another thread, another
  ``Memory`` or a worker's pass is seen by the very next read.
- Checkpoints run off the callers' commits, and the write-ahead log stays
  bounded when no checkpointer thread keeps up (or none runs).
- The memory agent's request skips the openai SDK's argument transform and
  sends the same body ``chat.completions.create`` would.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import openai
import pytest
from support import internals
from support.backends import MakeMemory
from support.child import Child
from support.openai_server import ScriptedOpenAI, reply

from ai_memory_sdk import Memory
from ai_memory_sdk.config import resolve
from ai_memory_sdk.learners.base import PassInput
from ai_memory_sdk.learners.llm import LLMLearner
from ai_memory_sdk.models import Block, StoredMessage
from ai_memory_sdk.store.sqlite import _wal

FAST: dict[str, Any] = dict(learner="offline", embedder="none", background=False)


def _wal_bytes(path: str) -> int:
    try:
        return os.path.getsize(path + "-wal")
    except OSError:
        return 0


# -- the block-text cache --------------------------------------------------------------------------


def test_a_write_by_another_process_is_read_at_once(tmp_path: Path) -> None:
    path = str(tmp_path / "m.db")
    reader = Memory(path=path, **FAST)
    reader.initialize_user_memory("u", user_context_block_value="start")
    child = Child("block_writer.py", {"path": path, "user": "u", "rounds": 40})
    try:
        for n in range(40):
            for _ in range(3):  # served from the cache between two writes
                assert reader.get_user_memory("u") == ("start" if n == 0 else f"value {n - 1}")
            child.send("go")
            child.expect_line(f"WROTE {n}", timeout=30)
            assert reader.get_user_memory("u") == f"value {n}"
            assert reader.get_user_memory("u", prompt_formatted=True) == (
                f'<human description="Details about the human user you are speaking to.">value {n}</human>'
            )
        child.expect_line("DONE", timeout=30)
        assert child.finish(timeout=30) == 0
    finally:
        child.kill()
        reader.close()


def test_a_write_by_another_thread_or_memory_is_read_at_once(make_memory: MakeMemory) -> None:
    reader = make_memory(**FAST)
    other = make_memory(**FAST)  # its own connections to the same file
    reader.initialize_user_memory("u", user_context_block_value="v0")
    stop = threading.Event()
    written: list[int] = []

    def write() -> None:
        n = 0
        while not stop.is_set() and n < 300:
            n += 1
            (reader if n % 2 else other).set_memory("human", f"v{n}", subject_id="u")
            written.append(n)

    thread = threading.Thread(target=write)
    thread.start()
    try:
        while thread.is_alive():
            before = written[-1] if written else 0
            seen = int((reader.get_user_memory("u") or "v0")[1:])
            assert seen >= before  # never older than a write that had returned before the read began
    finally:
        stop.set()
        thread.join()
    assert reader.get_user_memory("u") == f"v{written[-1]}"
    assert other.get_user_memory("u") == f"v{written[-1]}"


def test_a_workers_pass_is_read_at_once(make_memory: MakeMemory, openai_server: ScriptedOpenAI) -> None:
    memory = make_memory(learner="llm", llm_base_url=openai_server.base_url, llm_api_key="sk-test", embedder="none")
    memory.initialize_user_memory("u", user_context_block_value="Name: Ann")
    for n in range(5):
        assert memory.get_user_memory("u") == ("Name: Ann" if n == 0 else f"Name: Ann {n - 1}")
        openai_server.script(
            reply(
                tool_calls=[
                    ("memory_rethink", {"label": "human", "new_memory": f"Name: Ann {n}"}),
                    ("memory_finish_edits", {}),
                ]
            )
        )
        memory.wait_for_run(memory.add_messages("u", [{"role": "user", "content": f"pass {n}"}]), timeout=30)
        assert memory.get_user_memory("u") == f"Name: Ann {n}"


def test_reading_never_drops_this_processs_sqlite_locks(tmp_path: Path) -> None:
    """SQLite's locks are POSIX record locks: closing *any* descriptor of the ``-shm`` file in this process drops
    them all. The first change-stamp design opened and closed ``-shm`` beside SQLite, so another process could
    checkpoint under a live reader (the soak's concurrency run found a corrupt file). A reader's lock must hold."""
    path = str(tmp_path / "locks.db")
    with Memory(path=path, **FAST) as m:
        m.add_messages("u", [{"role": "user", "content": "I live in Oslo"}])
        internals.drain(m)
        reader = sqlite3.connect(path, isolation_level=None)  # another connection of this process
        reader.execute("BEGIN")
        reader.execute("SELECT count(*) FROM messages").fetchone()  # a read snapshot: its WAL read lock is held
        try:
            for _ in range(3):
                m.get_user_memory("u", prompt_formatted=True)  # the hot path, whatever it opens
                m.add_messages("u", [{"role": "user", "content": "and I ski"}])
            other = subprocess.run(
                [
                    sys.executable,
                    "-c",
                    "import sqlite3, sys; c = sqlite3.connect(sys.argv[1], timeout=0);"
                    " print(c.execute('PRAGMA wal_checkpoint(TRUNCATE)').fetchone()[0])",
                    path,
                ],
                capture_output=True,
                text=True,
                timeout=60,
            )
        finally:
            reader.execute("COMMIT")
            reader.close()
    assert other.stdout.strip() == "1", ("another process checkpointed under this process's live reader", other)


def test_deleted_and_unknown_users_read_as_none(make_memory: MakeMemory) -> None:
    memory = make_memory(**FAST)
    assert memory.get_user_memory("nobody") is None
    memory.initialize_user_memory("nobody", user_context_block_value="here now")
    assert memory.get_user_memory("nobody") == "here now"  # the cached None did not outlive the write
    memory.delete_user("nobody")
    assert memory.get_user_memory("nobody") is None
    memory.initialize_memory("notes", "Notes.", value="x", subject_id="s")
    assert memory.get_memory("notes", subject_id="s") == "x"
    memory.delete_block("notes", subject_id="s")
    assert memory.get_memory("notes", subject_id="s") is None


# -- the write-ahead log ---------------------------------------------------------------------------


def _batch(i: int) -> list[dict[str, str]]:
    return [{"role": "user", "content": f"message {j} of batch {i}: " + "x" * 200} for j in range(10)]


@pytest.fixture
def small_wal(monkeypatch: pytest.MonkeyPatch) -> tuple[int, int]:
    """Thresholds of 64 KiB (wake the checkpointer) and 512 KiB (checkpoint in the commit) for stores opened now."""
    monkeypatch.setattr(_wal, "CHECKPOINT_BYTES", 64 << 10)
    monkeypatch.setattr(_wal, "MAX_BYTES", 512 << 10)
    return 64 << 10, 512 << 10


def test_the_log_stays_bounded_when_no_checkpointer_runs(
    make_memory: MakeMemory, small_wal: tuple[int, int], caplog: pytest.LogCaptureFixture
) -> None:
    soft, hard = small_wal
    memory = make_memory(**FAST)
    path = internals.db_path(memory)
    internals.stop_checkpointer(internals.store(memory))
    sizes = []
    with caplog.at_level(logging.INFO, logger="ai_memory_sdk.store.sqlite._db"):
        for i in range(300):
            memory.add_messages(f"u{i % 7}", _batch(i))
            sizes.append(_wal_bytes(path))
    inline = [r for r in caplog.records if "in the committing thread" in r.getMessage()]
    assert len(inline) >= 3  # without them the log would have grown past three times the bound
    assert max(sizes) <= hard + soft + (256 << 10), max(sizes)  # the bound, plus one transaction
    assert sum(len(memory.get_messages(f"u{k}")) for k in range(7)) == 3000  # nothing lost on the way


def test_the_checkpointer_keeps_the_log_small_without_the_callers(
    tmp_path: Path, small_wal: tuple[int, int], caplog: pytest.LogCaptureFixture
) -> None:
    """Two files written alike at an application's pace, one without its checkpointer thread."""
    soft, _ = small_wal
    alone = Memory(path=str(tmp_path / "alone.db"), **FAST)  # no worker runs: the store checkpoints by itself
    helpless = Memory(path=str(tmp_path / "helpless.db"), **FAST)
    internals.stop_checkpointer(internals.store(helpless))
    try:
        with caplog.at_level(logging.INFO, logger="ai_memory_sdk.store.sqlite._db"):
            for i in range(120):  # about 4 times the hard bound in all
                alone.add_messages("u", _batch(i))
                helpless.add_messages("u", _batch(i))
                time.sleep(0.02)
            assert any(t.name == "ai-memory-checkpoint" for t in threading.enumerate())
            path = internals.db_path(alone)
            deadline = time.monotonic() + 10
            while _wal_bytes(path) > soft + (128 << 10) and time.monotonic() < deadline:
                time.sleep(0.1)
                alone.add_messages("u", _batch(0))  # a write after a complete checkpoint starts the log over
        # started over and cut back to the limit (a log is cut after its first transaction: plus one)
        assert _wal_bytes(path) <= soft + (128 << 10)

        def inline(memory: Memory) -> int:
            where = internals.db_path(memory)
            return sum(where in r.getMessage() and "in the committing thread" in r.getMessage() for r in caplog.records)

        assert inline(helpless) >= 3
        assert inline(alone) <= inline(helpless) // 2
    finally:
        alone.close()
        helpless.close()
    assert not any(t.name == "ai-memory-checkpoint" for t in threading.enumerate())


# -- the memory agent's request --------------------------------------------------------------------


def test_the_agents_request_body_is_what_chat_completions_create_sends(openai_server: ScriptedOpenAI) -> None:
    settings = resolve(None, learner="llm", llm_base_url=openai_server.base_url, llm_api_key="sk-test")
    learner = LLMLearner(settings)
    now = datetime(2025, 3, 14, 9, 30, tzinfo=timezone.utc)
    blocks = [
        Block(id="b1", label="human", description="About the user.", value="Name: Ann", limit=2000, subject_id="u"),
        Block(id="b2", label="summary", description="Summary.", value="", limit=500, subject_id="u"),
    ]
    messages = [
        StoredMessage(
            id="m1", role="user", content='I moved to Rome <human> "quoted" & done', created_at=now, run_id="r"
        )
    ]
    openai_server.script(
        reply(tool_calls=[("memory_insert", {"label": "human", "new_str": "Lives in Rome", "insert_line": -1})]),
        reply(tool_calls=[("memory_finish_edits", {})]),
    )
    out = learner.learn(PassInput("u", blocks, messages, now))
    assert out.values == {"human": "Name: Ann\nLives in Rome"}
    sent = [r.json for r in openai_server.chat_requests]
    assert len(sent) == 2
    client = openai.OpenAI(base_url=openai_server.base_url, api_key="sk-test", max_retries=0)
    for body in sent:  # the same arguments through the SDK's own method, which transforms them first
        client.chat.completions.create(**body)
        assert openai_server.chat_requests[-1].json == body
    assert openai_server.chat_requests[-1].headers["authorization"] == "Bearer sk-test"
    assert openai_server.chat_requests[0].headers["authorization"] == "Bearer sk-test"
