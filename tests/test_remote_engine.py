"""The ``remote`` engine's own behaviour: construction, errors mapped back, the long poll, retries, async, fork.

The full API through it is the contract suite's (``tests/contract``, backend ``remote``); here is what only
an HTTP client has: a server that is down, a refused key, what is sent again and what is not.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import re
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.ai_memory_server import ServeProcess, ThreadServer
from support.openai_server import ScriptedOpenAI, fail, reply

from ai_memory_sdk import (
    AsyncMemory,
    Block,
    BlockNotFoundError,
    Memory,
    Run,
    RunCancelledError,
    RunFailedError,
    RunNotFoundError,
    RunStateError,
    ServerError,
    ServerUnreachableError,
    StoredMessage,
    SubjectExistsError,
    SubjectNotFoundError,
)
from ai_memory_sdk.server.limits import ServerSettings

CLOSED = "http://127.0.0.1:9"  # the discard port: nothing listens on it here
KEY = "aim_" + "k" * 43


@pytest.fixture
def remote(ai_memory_server: ServeProcess, remote_key: str) -> Iterator[Memory]:
    with Memory(server_url=ai_memory_server.url, server_api_key=remote_key) as memory:
        yield memory


def test_construction_sends_nothing_and_a_down_server_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    t0 = time.monotonic()
    memory = Memory(server_url=CLOSED, server_api_key=KEY)
    assert memory.engine == "remote" and time.monotonic() - t0 < 0.5
    assert repr(memory) == f"Memory(engine='remote', server='{CLOSED}')"
    for call in (
        lambda: memory.get_user_memory("u"),
        lambda: memory.add_messages("u", [{"role": "user", "content": "x"}]),
    ):
        with pytest.raises(ServerUnreachableError, match=re.escape(f"cannot reach {CLOSED}")) as info:
            call()
        assert info.value.url == CLOSED and "ConnectError" in info.value.cause
    assert time.monotonic() - t0 < 10  # two quick retries each, not a hang
    memory.close()
    monkeypatch.setenv("AI_MEMORY_SERVER_URL", CLOSED)
    monkeypatch.setenv("AI_MEMORY_SERVER_API_KEY", KEY)
    assert Memory().engine == "remote"  # the variables select it


def test_configuration_mistakes_are_named(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match=re.escape("server_url=... or AI_MEMORY_SERVER_URL")):
        Memory(engine="remote", server_api_key=KEY)
    with pytest.raises(ValueError, match="http:// or https://"):
        Memory(server_url="127.0.0.1:8420", server_api_key=KEY)
    with pytest.raises(ValueError, match=re.escape("server_api_key=... or AI_MEMORY_SERVER_API_KEY")):
        Memory(server_url=CLOSED)


def test_a_refused_key_says_which_setting(ai_memory_server: ServeProcess) -> None:
    with (
        Memory(server_url=ai_memory_server.url, server_api_key=KEY) as memory,
        pytest.raises(ServerError, match="AI_MEMORY_SERVER_API_KEY") as info,
    ):
        memory.list_blocks("u")
    assert info.value.status == 401 and info.value.type == "Unauthorized"


def test_the_librarys_exceptions_come_back(remote: Memory) -> None:
    remote.initialize_user_memory("u", user_context_block_char_limit=20)
    with pytest.raises(SubjectExistsError, match=re.escape("already exists for user u. Cannot re-initialize memory")):
        remote.initialize_user_memory("u")
    with pytest.raises(RunNotFoundError):
        remote.get_run("run-nope")
    with pytest.raises(RunNotFoundError):
        remote.wait_for_run("run-nope")
    with pytest.raises(BlockNotFoundError):
        remote.restore_block("human", 99, subject_id="u")
    with pytest.raises(ValueError, match="over the block's limit of 20"):
        remote.set_memory("human", "x" * 21, subject_id="u")
    with pytest.raises(SubjectNotFoundError):
        remote.consolidate("nobody")


def test_a_failed_run_comes_back_with_its_run(tmp_path: Path, openai_server: ScriptedOpenAI) -> None:
    options = {"learner": "llm", "llm_base_url": openai_server.base_url, "llm_api_key": "sk-x"}
    openai_server.script(fail(400))  # the endpoint refuses the pass: the run fails at once
    with (
        ThreadServer(tmp_path / "m.db", **options) as server,
        Memory(server_url=server.url, server_api_key=server.key()) as memory,
    ):
        run = memory.add_messages("u", [{"role": "user", "content": "My name is Bartholomew"}])
        with pytest.raises(RunFailedError) as failed:
            memory.wait_for_run(run, timeout=30)
        got = failed.value.run
        assert isinstance(got, Run) and got.id == run and got.status == "failed" and got.stop_reason and got.error
        with pytest.raises(RunStateError):
            memory.cancel_run(run)
        openai_server.responder = lambda req: reply(tool_calls=[("memory_finish_edits", {})])
        assert memory.retry_run(run).status in ("queued", "running", "completed")
        memory.wait_for_run(run, timeout=30)


def test_models_come_back_as_the_same_types(remote: Memory) -> None:
    run = remote.add_messages("u", [{"role": "user", "content": "I like tea", "metadata": {"k": [1, 2]}}], False)
    remote.wait_for_run(run)
    blocks, messages = remote.list_blocks("u"), remote.get_messages("u")
    assert all(isinstance(b, Block) for b in blocks) and isinstance(messages[0], StoredMessage)
    assert messages[0].metadata == {"k": [1, 2]} and messages[0].created_at.tzinfo is not None
    assert remote.get_run(run).finished_at is not None
    assert remote.search_passages("u", "tea")[0].content == "I like tea"


def test_timeouts_and_a_cancelled_run(tmp_path: Path) -> None:
    with (
        ThreadServer(tmp_path / "m.db", background=False) as server,  # nothing learns: the run stays queued
        Memory(server_url=server.url, server_api_key=server.key()) as memory,
    ):
        run = memory.add_messages("u", [{"role": "user", "content": "hi"}])
        with pytest.raises(TimeoutError, match=f"Run {run} did not complete within 0 seconds"):
            memory.wait_for_run(run, timeout=0)
        t0 = time.monotonic()
        with pytest.raises(TimeoutError, match=re.escape("within 0.8 seconds")):
            memory.wait_for_run(run, timeout=0.8)
        assert 0.7 < time.monotonic() - t0 < 3
        assert memory.cancel_run(run).status == "cancelled"
        with pytest.raises(RunCancelledError):
            memory.wait_for_run(run)


def test_wait_for_run_is_a_long_poll(tmp_path: Path) -> None:
    with ScriptedOpenAI(latency=2.0) as llm:
        llm.responder = lambda req: reply(tool_calls=[("memory_finish_edits", {})])
        options = {"learner": "llm", "llm_base_url": llm.base_url, "llm_api_key": "sk-x"}
        with ThreadServer(tmp_path / "m.db", ServerSettings(long_poll_seconds=1.5), **options) as server:
            metrics = server.state.metrics
            with Memory(server_url=server.url, server_api_key=server.key()) as memory:
                run = memory.add_messages("u", [{"role": "user", "content": "hi"}])
                memory.wait_for_run(run, timeout=30)
                done = time.time()
                finished = memory.get_run(run).finished_at
            asked = metrics.registry.get_sample_value(
                "ai_memory_http_request_duration_seconds_count", {"method": "GET", "route": "/v1/runs/{run_id}/wait"}
            )
    assert finished is not None and done - finished.timestamp() < 0.5  # woken at completion, not at a poll tick
    assert asked is not None and 1 <= asked <= 3  # ~2 s of learning: one or two held requests, not one a second


class _Swallower:
    """A TCP server that reads a request and closes the connection without answering; counts requests."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.requests = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                if conn.recv(65536):
                    self.requests += 1

    def close(self) -> None:
        self.sock.close()


def test_only_requests_safe_to_repeat_are_sent_again() -> None:
    server = _Swallower()
    try:
        with Memory(server_url=server.url, server_api_key=KEY) as memory:
            with pytest.raises(ServerUnreachableError):
                memory.get_user_memory("u")  # a read: sent three times
            reads = server.requests
            with pytest.raises(ServerUnreachableError, match="POST /v1/subjects/u/messages"):
                memory.add_messages("u", [{"role": "user", "content": "hi"}])  # it may have been stored: once
            adds = server.requests - reads
    finally:
        server.close()
    assert (reads, adds) == (3, 1)


def test_async_memory_on_the_remote_engine(ai_memory_server: ServeProcess, remote_key: str) -> None:
    memory = AsyncMemory(server_url=ai_memory_server.url, server_api_key=remote_key)

    async def learn(uid: str) -> str | None:
        run = await memory.add_messages(uid, [{"role": "user", "content": f"My name is {uid.title()}"}])
        await memory.wait_for_run(run)
        return await memory.get_user_memory(uid)

    async def main() -> list[str | None]:
        return list(await asyncio.gather(*(learn(f"user{i}") for i in range(5))))

    assert memory.engine == "remote"
    assert asyncio.run(main()) == [f"Name: User{i}" for i in range(5)]
    assert asyncio.run(memory.get_user_memory("user0")) == "Name: User0"  # a second event loop: its own client
    with pytest.raises(RunNotFoundError):
        asyncio.run(memory.get_run("run-nope"))
    asyncio.run(memory.close())


def _child(url: str, key: str, queue: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    memory = _inherited
    run = memory.add_messages("forked", [{"role": "user", "content": "I live in Forkville"}])
    memory.wait_for_run(run)
    queue.put(memory.get_user_memory("forked"))


_inherited: Memory


def test_a_forked_child_uses_its_own_connections(ai_memory_server: ServeProcess, remote_key: str) -> None:
    global _inherited
    _inherited = Memory(server_url=ai_memory_server.url, server_api_key=remote_key)
    _inherited.list_blocks("warm")  # the parent has a pooled connection now
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_child, args=(ai_memory_server.url, remote_key, queue))
    child.start()
    child.join(30)
    assert child.exitcode == 0 and queue.get(timeout=5) == "Location: Forkville"
    assert _inherited.get_user_memory("forked") == "Location: Forkville"  # the parent's connections still work
    _inherited.close()


def test_an_agents_session_on_the_remote_engine(ai_memory_server: ServeProcess, remote_key: str) -> None:
    """The OpenAI Agents SDK session keeps its items in the server's store and queues them for learning."""
    from ai_memory_sdk.integrations.openai_agents import MemorySession

    async def main() -> None:
        memory = AsyncMemory(server_url=ai_memory_server.url, server_api_key=remote_key)
        other = AsyncMemory(server_url=ai_memory_server.url, server_api_key=ai_memory_server.key())
        try:
            session = MemorySession("chat-1", memory=memory, subject_id="dana")
            await session.add_items(
                [{"role": "user", "content": "My name is Dana"}, {"role": "assistant", "content": "Hi"}]
            )
            assert [i["content"] for i in await session.get_items()] == ["My name is Dana", "Hi"]
            assert await session.get_items(limit=1) == [{"role": "assistant", "content": "Hi"}]
            assert await session.pop_item() == {"role": "assistant", "content": "Hi"}
            runs = await memory.list_runs("dana")
            await memory.wait_for_run(runs[-1].id)
            assert await memory.get_user_memory("dana") == "Name: Dana"
            assert await MemorySession("chat-1", memory=other, subject_id="dana").get_items() == []  # another tenant
            await session.clear_session()
            assert await session.get_items() == []
        finally:
            await memory.close()
            await other.close()

    asyncio.run(main())
