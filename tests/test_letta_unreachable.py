"""A Letta server that does not answer is named: ``ServerUnreachableError(url)`` from every engine method.

The server is a closed port on 127.0.0.1 (connection refused, after the
client's own retries: ~1.5 s per call). No Letta server needed.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from letta_client import APIConnectionError

from ai_memory_sdk.config import Settings
from ai_memory_sdk.engines.letta import LettaEngine
from ai_memory_sdk.errors import ServerUnreachableError, UnsupportedByEngineError
from ai_memory_sdk.models import BlockSpec, MessageIn
from ai_memory_sdk.store.journal import Journal

CLOSED = "http://127.0.0.1:9"  # the discard port: nothing listens on it here


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LettaEngine]:
    path = tmp_path_factory.mktemp("letta") / "memory.db"
    made = LettaEngine(Settings(engine="letta", base_url=CLOSED, api_key="k", path=str(path)))  # sends nothing
    yield made
    made.close()


_MSG = [MessageIn(role="user", content="hi", created_at=datetime(2024, 1, 1, tzinfo=timezone.utc))]
_SPEC = BlockSpec(label="notes", description="Notes")
CALLS: dict[str, Callable[[LettaEngine], Any]] = {
    "agent_id": lambda e: e.agent_id("alice"),
    "create_subject": lambda e: e.create_subject("alice", reset=False, blocks=[]),
    "delete_subject": lambda e: e.delete_subject("alice"),
    "list_subjects": lambda e: e.list_subjects(query=None, offset=0, limit=10),
    "count_subjects": lambda e: e.count_subjects(query="a"),
    "list_blocks": lambda e: e.list_blocks("alice"),
    "block_text": lambda e: e.block_text("alice", "human"),
    "create_block": lambda e: e.create_block("alice", _SPEC, reset=False),
    "delete_block": lambda e: e.delete_block("alice", "human"),
    "set_block_value": lambda e: e.set_block_value("alice", "human", "v"),
    "add_messages": lambda e: e.add_messages("alice", _MSG, archive=True, default_blocks=[]),
    "get_messages": lambda e: e.get_messages("alice", limit=None, before=None, after=None),
    "delete_message": lambda e: e.delete_message("msg-1@agent-1"),
    "get_run": lambda e: e.get_run("run-1"),
    "wait_for_run": lambda e: e.wait_for_run("run-1", 5),
    "cancel_run": lambda e: e.cancel_run("run-1"),
    "retry_run": lambda e: e.retry_run("run-1"),
    "search": lambda e: e.search("alice", "cats", tags=[], tag_match_mode="any", limit=5, start=None, end=None),
}


@pytest.mark.parametrize("method", sorted(CALLS))
def test_every_method_names_the_unreachable_server(engine: LettaEngine, method: str) -> None:
    with pytest.raises(ServerUnreachableError) as info:
        CALLS[method](engine)
    assert info.value.url == CLOSED and f"cannot reach {CLOSED}" in str(info.value)
    assert "Connection refused" in info.value.cause
    assert isinstance(info.value, ConnectionError) and not isinstance(info.value, APIConnectionError)


def test_add_messages_to_an_unreachable_server_stores_nothing(engine: LettaEngine, tmp_path: Path) -> None:
    journal = Path(engine._journal.path)
    with pytest.raises(ServerUnreachableError):
        CALLS["add_messages"](engine)
    with sqlite3.connect(journal) as conn:
        assert conn.execute("SELECT count(*) FROM pending").fetchone()[0] == 0  # refused whole, not half-accepted


def test_what_letta_cannot_do_says_so_without_a_request(engine: LettaEngine) -> None:
    for call, capability in [
        (lambda: engine.consolidate("alice"), "consolidation"),
        (lambda: engine.run_messages("sdkrun-1"), "run messages"),
        (lambda: engine.get_trace("sdkrun-1"), "run traces"),
        (lambda: engine.session_items("s", None), "sessions"),
        (lambda: engine.add_session_items("s", [{"role": "user", "content": "x"}], subject_id="alice"), "sessions"),
        (lambda: engine.pop_session_item("s"), "sessions"),
        (lambda: engine.clear_session("s"), "sessions"),
        (lambda: engine.block_history("alice", "human"), "block history"),
        (lambda: engine.restore_block("alice", "human", 1), "block history"),
    ]:
        with pytest.raises(UnsupportedByEngineError) as info:
            call()
        assert (info.value.engine, info.value.capability) == ("letta", capability)
    assert engine.get_run("sdkrun-unknown") is None  # not a Letta id: nothing to ask


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_writes_the_journal_under_its_own_owner(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j.db", server=CLOSED)
    journal.add("sdkrun-parent", "alice", "agent-1", 1, _MSG, ["k"], archive=False, max_chars=1000, max_steps=1)
    code = (
        "import os, sys\n"
        "from ai_memory_sdk.store.journal import Journal\n"
        "from ai_memory_sdk.models import MessageIn\n"
        "from datetime import datetime, timezone\n"
        f"j = Journal({str(tmp_path / 'j.db')!r}, server={CLOSED!r})\n"
        "owner = j.owner\n"
        "pid = os.fork()\n"
        "if pid == 0:\n"
        "    m = [MessageIn(role='user', content='x', created_at=datetime.now(timezone.utc))]\n"
        "    j.add('sdkrun-child', 'bob', 'agent-2', 2, m, ['k'], archive=False, max_chars=1000, max_steps=1)\n"
        "    os._exit(0 if j.owner != owner and str(os.getpid()) in j.owner else 3)\n"
        "_, status = os.waitpid(pid, 0)\n"
        "sys.exit(os.waitstatus_to_exitcode(status))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    with sqlite3.connect(tmp_path / "j.db") as conn:
        rows = dict(conn.execute("SELECT run_id, owner FROM pending").fetchall())
    assert set(rows) == {"sdkrun-parent", "sdkrun-child"} and rows["sdkrun-parent"] == journal.owner
    assert f":{os.getpid()}:" in journal.owner
