"""``Memory.wrap(client)`` with the real ``openai`` package against the scripted server on 127.0.0.1.

What a wrapped call sends (the context in the system message or
``instructions``), what it queues (the new turn, tool calls included), that
streams pass through in time (also when the consumer stops early), that
memory fails open (a closed memory, a locked store, a store that stalls past
``timeout``: the call goes on, one WARNING per kind of failure), that the
LLM's own errors come through unchanged, and that the rest of the client is
the client's own.
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import os
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
from support.openai_server import ScriptedOpenAI, fail, reply

from ai_memory_sdk import AsyncMemory, Memory

ROOT = Path(__file__).resolve().parents[1]
SYSTEM = "You are helpful."


def _client(srv: ScriptedOpenAI) -> openai.OpenAI:
    return openai.OpenAI(base_url=srv.base_url, api_key="x", max_retries=0)


def _aclient(srv: ScriptedOpenAI) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=srv.base_url, api_key="x", max_retries=0)


def _written(memory: Memory | AsyncMemory) -> None:
    """Wait for the turns the wrapper queues in the background (``close()`` would wait for them too)."""
    assert _eventually(lambda: not memory._writes), "the wrapper's writes did not finish"


def _said(memory: Memory, subject: str) -> list[tuple[str, str]]:
    _written(memory)
    return [(m.role, m.content) for m in memory.get_messages(subject)]


def _eventually(check: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.01)
    return check()


@pytest.fixture
def alice(make_memory: Callable[..., Memory]) -> Memory:
    """A user with a known profile; no background learning, so the context stays what the test expects."""
    memory = make_memory(background=False)
    memory.initialize_user_memory("alice", user_context_block_value="Name: Alice. Likes hiking.")
    return memory


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING and r.name.startswith("ai_memory")]


# -- chat completions -------------------------------------------------------------------------------


def test_context_goes_into_the_system_message_and_the_turn_is_queued(
    openai_server: ScriptedOpenAI, alice: Memory
) -> None:
    client = alice.wrap(_client(openai_server))
    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "Plan my weekend"}]
    before = [dict(m) for m in messages]
    openai_server.script(reply("Go hiking."))
    completion = client.chat.completions.create(model="gpt-4o-mini", messages=messages, user="alice")
    assert completion.choices[0].message.content == "Go hiking."
    sent = openai_server.chat_requests[-1].json
    assert sent["messages"] == [
        {"role": "system", "content": SYSTEM + "\n\n" + alice.get_context("alice")},
        {"role": "user", "content": "Plan my weekend"},
    ]
    assert "Name: Alice. Likes hiking." in sent["messages"][0]["content"]
    assert sent["user"] == "alice"  # the caller's arguments go on untouched
    assert messages == before  # the caller's list and dicts are not changed
    assert _said(alice, "alice") == [("user", "Plan my weekend"), ("assistant", "Go hiking.")]


def test_without_a_system_message_one_is_added_in_front(openai_server: ScriptedOpenAI, alice: Memory) -> None:
    client = alice.wrap(_client(openai_server), subject_id="alice")
    client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "Hi"}])
    assert openai_server.chat_requests[-1].json["messages"] == [
        {"role": "system", "content": alice.get_context("alice")},
        {"role": "user", "content": "Hi"},
    ]


def test_a_developer_message_with_content_parts_gets_a_text_part(openai_server: ScriptedOpenAI, alice: Memory) -> None:
    client = alice.wrap(_client(openai_server), subject_id="alice")
    parts = [{"type": "text", "text": SYSTEM}]
    client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "developer", "content": parts}, {"role": "user", "content": "Hi"}]
    )
    sent = openai_server.chat_requests[-1].json["messages"][0]
    assert sent == {"role": "developer", "content": [*parts, {"type": "text", "text": alice.get_context("alice")}]}


def test_the_subject_the_user_argument_then_the_bound_one(openai_server: ScriptedOpenAI, alice: Memory) -> None:
    alice.initialize_user_memory("bob", user_context_block_value="Name: Bob.")
    client = alice.wrap(_client(openai_server), subject_id="alice")
    client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}], user="bob")
    assert "Name: Bob." in openai_server.chat_requests[-1].json["messages"][0]["content"]
    client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "y"}])
    assert "Name: Alice." in openai_server.chat_requests[-1].json["messages"][0]["content"]
    assert [c for _, c in _said(alice, "bob")] == ["x", "ok"] and [c for _, c in _said(alice, "alice")] == ["y", "ok"]


def test_a_memory_bound_to_a_subject_lends_it_to_the_wrapper(
    openai_server: ScriptedOpenAI, make_memory: Callable[..., Memory]
) -> None:
    bound = make_memory(subject_id="carol")
    client = bound.wrap(_client(openai_server))
    client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "I'm Carol"}])
    assert _said(bound, "carol") == [("user", "I'm Carol"), ("assistant", "ok")]


def test_no_subject_means_a_plain_call_and_one_warning(
    openai_server: ScriptedOpenAI, memory: Memory, caplog: pytest.LogCaptureFixture
) -> None:
    client = memory.wrap(_client(openai_server))
    with caplog.at_level(logging.WARNING):
        for _ in range(3):
            client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "Hi"}])
    assert openai_server.chat_requests[-1].json["messages"] == [{"role": "user", "content": "Hi"}]
    assert len(_warnings(caplog)) == 1 and "user=" in _warnings(caplog)[0]


def test_a_new_user_gets_no_context_then_default_blocks(openai_server: ScriptedOpenAI, memory: Memory) -> None:
    client = memory.wrap(_client(openai_server))
    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "Hi, I'm Dana"}]
    client.chat.completions.create(model="gpt-4o-mini", messages=messages, user="dana")
    assert openai_server.chat_requests[-1].json["messages"] == messages  # nothing known: nothing added
    _written(memory)
    assert [b.label for b in memory.list_blocks("dana")] == ["human", "summary"]
    assert _said(memory, "dana") == [("user", "Hi, I'm Dana"), ("assistant", "ok")]


def test_only_the_new_part_of_a_conversation_is_queued(openai_server: ScriptedOpenAI, alice: Memory) -> None:
    client = alice.wrap(_client(openai_server), subject_id="alice")
    history: list[Any] = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "one"}]
    first = client.chat.completions.create(model="gpt-4o-mini", messages=history)
    history += [first.choices[0].message, {"role": "user", "content": "two"}]  # a response object in the list
    client.chat.completions.create(model="gpt-4o-mini", messages=history)
    assert _said(alice, "alice") == [("user", "one"), ("assistant", "ok"), ("user", "two"), ("assistant", "ok")]


def test_tool_calls_are_queued_readably_with_their_raw_form(openai_server: ScriptedOpenAI, alice: Memory) -> None:
    client = alice.wrap(_client(openai_server), subject_id="alice")
    openai_server.script(reply(tool_calls=[("get_weather", {"city": "Oslo"})]), reply("Rainy in Oslo."))
    history: list[Any] = [{"role": "user", "content": "Weather in Oslo?"}]
    first = client.chat.completions.create(model="gpt-4o-mini", messages=history)
    call = first.choices[0].message.tool_calls[0]  # type: ignore[index]
    history += [first.choices[0].message, {"role": "tool", "tool_call_id": call.id, "content": "rain, 9 C"}]
    client.chat.completions.create(model="gpt-4o-mini", messages=history)
    _written(alice)
    stored = alice.get_messages("alice")
    assert [(m.role, m.name, m.content) for m in stored] == [
        ("user", None, "Weather in Oslo?"),
        ("assistant", None, '[calls get_weather({"city": "Oslo"})]'),
        ("tool", "get_weather", "rain, 9 C"),
        ("assistant", None, "Rainy in Oslo."),
    ]
    assert stored[1].metadata["tool_calls"][0]["id"] == call.id
    assert stored[1].metadata["tool_calls"][0]["function"] == {"name": "get_weather", "arguments": '{"city": "Oslo"}'}
    assert stored[2].metadata["tool_call_id"] == call.id


def test_search_results_for_the_last_user_message(openai_server: ScriptedOpenAI, alice: Memory) -> None:
    alice.add_messages(
        "alice",
        [{"role": "user", "content": "My dog is called Rex"}, {"role": "user", "content": "I work as a nurse"}],
        skip_vector_storage=False,
    )
    client = alice.wrap(_client(openai_server), subject_id="alice", search_limit=1)
    client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "What is my dog called?"}]
    )
    system = openai_server.chat_requests[-1].json["messages"][0]["content"]
    assert system.startswith(alice.get_context("alice") + "\n\n<relevant_messages>\n")
    assert "user: My dog is called Rex" in system and "nurse" not in system
    _written(alice)
    assert alice.search("alice", "called") != []  # with search on, the queued turn is archived for search too
    assert "What is my dog called?" in alice.search("alice", "dog called", limit=5)


def test_an_llm_error_comes_through_unchanged_and_nothing_is_queued(
    openai_server: ScriptedOpenAI, alice: Memory
) -> None:
    plain, wrapped = _client(openai_server), alice.wrap(_client(openai_server), subject_id="alice")
    caught = []
    for client in (plain, wrapped):
        openai_server.script(fail(400, headers={"x-request-id": "req_1"}))
        with pytest.raises(openai.BadRequestError) as info:
            client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}])
        caught.append(info.value)
    assert type(caught[0]) is type(caught[1]) and str(caught[0]) == str(caught[1])
    assert caught[1].status_code == 400 and caught[1].request_id == "req_1"
    assert _said(alice, "alice") == []
    with pytest.raises(TypeError):  # the client's own argument errors too
        wrapped.chat.completions.create(messages=[{"role": "user", "content": "x"}])  # type: ignore[call-overload]


def test_parse_goes_through_memory(openai_server: ScriptedOpenAI, alice: Memory) -> None:
    client = alice.wrap(_client(openai_server), subject_id="alice")
    openai_server.script(reply('{"answer": "hiking"}'))
    parsed = client.chat.completions.parse(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "What do I like?"}]
    )
    assert parsed.choices[0].message.content == '{"answer": "hiking"}'
    assert "Name: Alice." in openai_server.chat_requests[-1].json["messages"][0]["content"]
    assert _said(alice, "alice")[-1] == ("assistant", '{"answer": "hiking"}')


# -- streaming --------------------------------------------------------------------------------------


def _texts(chunks: list[Any]) -> list[str]:
    return [c.choices[0].delta.content or "" for c in chunks if c.choices]


def test_a_stream_passes_through_in_time_and_is_queued_when_it_ends(
    openai_server: ScriptedOpenAI, alice: Memory
) -> None:
    words = "one two three four five"
    plain, wrapped = _client(openai_server), alice.wrap(_client(openai_server), subject_id="alice")
    got: list[list[Any]] = []
    for client in (plain, wrapped):
        openai_server.script(reply(words, chunk_delay=0.15))
        started = time.monotonic()
        stream = client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "count"}], stream=True
        )
        chunks, arrivals = [], []
        for chunk in stream:
            arrivals.append(time.monotonic() - started)
            chunks.append(chunk)
        got.append(chunks)
        assert arrivals[0] < 0.5 and arrivals[-1] > 0.8  # the first chunk did not wait for the last

    def shape(chunks: list[Any]) -> list[dict[str, Any]]:  # ids and times differ from reply to reply
        return [{k: v for k, v in c.model_dump().items() if k not in ("id", "created")} for c in chunks]

    assert shape(got[1]) == shape(got[0])  # the same chunks, unchanged
    assert "".join(_texts(got[1])) == words
    assert isinstance(stream, openai.Stream)
    assert _said(alice, "alice") == [("user", "count"), ("assistant", words)]


def test_a_consumer_that_stops_early_gets_what_it_read_queued(openai_server: ScriptedOpenAI, alice: Memory) -> None:
    client = alice.wrap(_client(openai_server), subject_id="alice")
    openai_server.script(reply("alpha beta gamma delta epsilon", chunk_delay=0.05))
    stream = client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "letters"}], stream=True
    )
    read = []
    for chunk in stream:
        read.append(chunk.choices[0].delta.content or "")
        if len(read) == 3:  # the role chunk, "alpha ", "beta "
            break
    assert _eventually(lambda: len(_said(alice, "alice")) == 2)
    assert _said(alice, "alice") == [("user", "letters"), ("assistant", "alpha beta ")]
    stream.close()
    assert len(_said(alice, "alice")) == 2  # queued once


def test_a_stream_read_with_next_and_closed_by_a_with_block(openai_server: ScriptedOpenAI, alice: Memory) -> None:
    client = alice.wrap(_client(openai_server), subject_id="alice")
    openai_server.script(reply("first second third"))
    with client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "go"}], stream=True
    ) as stream:
        next(stream)
        assert next(stream).choices[0].delta.content == "first "
    assert _said(alice, "alice") == [("user", "go"), ("assistant", "first ")]


def test_a_streamed_tool_call_is_assembled(openai_server: ScriptedOpenAI, alice: Memory) -> None:
    client = alice.wrap(_client(openai_server), subject_id="alice")
    args = {"city": "Reykjavik", "unit": "celsius", "days": 3}
    openai_server.script(reply(tool_calls=[("forecast", args)]))
    for _ in client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "forecast?"}], stream=True
    ):
        pass
    _written(alice)
    last = alice.get_messages("alice")[-1]
    assert last.content == '[calls forecast({"city": "Reykjavik", "unit": "celsius", "days": 3})]'
    assert last.metadata["tool_calls"][0]["function"]["name"] == "forecast"


# -- async ------------------------------------------------------------------------------------------


def test_async_client_with_a_memory(openai_server: ScriptedOpenAI, alice: Memory) -> None:
    async def scenario() -> None:
        client = alice.wrap(_aclient(openai_server), subject_id="alice")
        assert isinstance(client, openai.AsyncOpenAI)
        openai_server.script(reply("Async hello."))
        completion = await client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "hi async"}]
        )
        assert completion.choices[0].message.content == "Async hello."
        assert openai_server.chat_requests[-1].json["messages"][0]["content"] == alice.get_context("alice")
        openai_server.script(reply("streamed async words", chunk_delay=0.1))
        started = time.monotonic()
        stream = await client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "stream async"}], stream=True
        )
        arrivals = []
        async for _ in stream:
            arrivals.append(time.monotonic() - started)
        assert arrivals[0] < 0.35 and arrivals[-1] > 0.3
        assert isinstance(stream, openai.AsyncStream)

    asyncio.run(scenario())
    assert _said(alice, "alice") == [
        ("user", "hi async"),
        ("assistant", "Async hello."),
        ("user", "stream async"),
        ("assistant", "streamed async words"),
    ]


def test_async_memory_and_an_async_stream_stopped_early(openai_server: ScriptedOpenAI, tmp_path: Path) -> None:
    async def scenario() -> list[tuple[str, str]]:
        async with AsyncMemory(path=str(tmp_path / "m.db"), learner="offline", embedder="none") as memory:
            await memory.initialize_user_memory("erin", user_context_block_value="Name: Erin.")
            client = memory.wrap(_aclient(openai_server), subject_id="erin")
            openai_server.script(reply("red green blue yellow", chunk_delay=0.05))
            stream = await client.chat.completions.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": "colours"}], stream=True
            )
            seen = 0
            async for _ in stream:
                seen += 1
                if seen == 2:
                    break
            del stream
            gc.collect()
            for _ in range(200):  # the loop finalises the abandoned iterator, which queues the turn
                if len(await memory.get_messages("erin")) == 2:
                    break
                await asyncio.sleep(0.01)
            assert "Name: Erin." in openai_server.chat_requests[-1].json["messages"][0]["content"]
            return [(m.role, m.content) for m in await memory.get_messages("erin")]

    assert asyncio.run(scenario()) == [("user", "colours"), ("assistant", "red ")]


def test_async_memory_refuses_a_sync_client(openai_server: ScriptedOpenAI, tmp_path: Path) -> None:
    async def scenario() -> None:
        async with AsyncMemory(path=str(tmp_path / "m.db"), learner="offline", embedder="none") as memory:
            with pytest.raises(TypeError, match="AsyncOpenAI"):
                memory.wrap(_client(openai_server))

    asyncio.run(scenario())


# -- the Responses API ------------------------------------------------------------------------------


def test_responses_api_instructions_and_turn(openai_server: ScriptedOpenAI, alice: Memory) -> None:
    client = alice.wrap(_client(openai_server))
    openai_server.script_responses(reply("You like hiking."))
    response = client.responses.create(model="gpt-4o-mini", instructions=SYSTEM, input="What do I like?", user="alice")
    assert response.output_text == "You like hiking."
    sent = openai_server.responses_requests[-1].json
    assert sent["instructions"] == SYSTEM + "\n\n" + alice.get_context("alice")
    assert sent["input"] == "What do I like?"
    openai_server.script_responses(reply(None, tool_calls=[("lookup", {"q": "trails"})], reasoning="Find trails."))
    client.responses.create(
        model="gpt-4o-mini",
        input=[
            {"role": "user", "content": "What do I like?"},
            *[o.model_dump() for o in response.output],
            {"role": "user", "content": [{"type": "input_text", "text": "Find me trails"}]},
        ],
        user="alice",
    )
    assert openai_server.responses_requests[-1].json["instructions"] == alice.get_context("alice")
    assert _said(alice, "alice") == [
        ("user", "What do I like?"),
        ("assistant", "You like hiking."),
        ("user", "Find me trails"),
        ("assistant", "[reasoning] Find trails."),
        ("assistant", '[calls lookup({"q": "trails"})]'),
    ]


def test_responses_api_streams_sync_and_async(openai_server: ScriptedOpenAI, alice: Memory) -> None:
    client = alice.wrap(_client(openai_server), subject_id="alice")
    openai_server.script_responses(reply("sync streamed answer"))
    kinds = [e.type for e in client.responses.create(model="gpt-4o-mini", input="sync?", stream=True)]
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed"

    async def scenario() -> None:
        aclient = alice.wrap(_aclient(openai_server), subject_id="alice")
        openai_server.script_responses(reply("async streamed answer that stops", chunk_delay=0.02))
        stream = await aclient.responses.create(model="gpt-4o-mini", input="async?", stream=True)
        async with stream:
            async for event in stream:
                if event.type == "response.output_text.delta" and event.delta.startswith("answer"):
                    break  # stopped mid-message: what arrived is queued

    asyncio.run(scenario())
    assert _said(alice, "alice") == [
        ("user", "sync?"),
        ("assistant", "sync streamed answer"),
        ("user", "async?"),
        ("assistant", "async streamed answer "),
    ]
    assert "Name: Alice." in openai_server.responses_requests[-1].json["instructions"]


# -- fail-open --------------------------------------------------------------------------------------


def _plain_request(srv: ScriptedOpenAI, client: Any) -> Any:
    client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "system", "content": SYSTEM}, {"role": "user", "content": "Hi"}]
    )
    return srv.chat_requests[-1].json


def test_a_closed_memory_fails_open_with_one_warning_per_kind(
    openai_server: ScriptedOpenAI, make_memory: Callable[..., Memory], caplog: pytest.LogCaptureFixture
) -> None:
    memory = make_memory()
    memory.initialize_user_memory("alice", user_context_block_value="Name: Alice.")
    client = memory.wrap(_client(openai_server), subject_id="alice")
    expected = _plain_request(openai_server, _client(openai_server))
    memory.close()
    with caplog.at_level(logging.DEBUG, logger="ai_memory_sdk"):
        for _ in range(4):
            assert _plain_request(openai_server, client) == expected

        async def async_calls() -> None:
            aclient = memory.wrap(_aclient(openai_server), subject_id="alice")
            await aclient.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}])

        asyncio.run(async_calls())
        _written(memory)
    warnings = _warnings(caplog)
    assert len(warnings) == 4, warnings  # reading and queueing, for each of the two wrapped clients
    assert all("MemoryClosedError" in w for w in warnings)
    assert sum("reading memory" in w for w in warnings) == 2
    debug = [r for r in caplog.records if r.levelno == logging.DEBUG and "failed again" in r.getMessage()]
    assert len(debug) == 6  # the other three sync calls, both kinds


def test_a_locked_store_fails_open(
    openai_server: ScriptedOpenAI, make_memory: Callable[..., Memory], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    memory = make_memory(busy_timeout=0.05, background=False)
    memory.initialize_user_memory("alice", user_context_block_value="Name: Alice.")
    client = memory.wrap(_client(openai_server), subject_id="alice")
    locker = sqlite3.connect(str(tmp_path / "memory.db"), isolation_level=None)
    locker.execute("BEGIN IMMEDIATE")  # another process's long write: the store cannot take this turn
    try:
        with caplog.at_level(logging.WARNING):
            for _ in range(3):
                openai_server.script(reply("fine"))
                started = time.monotonic()
                completion = client.chat.completions.create(
                    model="gpt-4o-mini", messages=[{"role": "user", "content": "Hi"}]
                )
                assert completion.choices[0].message.content == "fine"
                assert time.monotonic() - started < 1.0
            _written(memory)
        assert "Name: Alice." in openai_server.chat_requests[-1].json["messages"][0]["content"]  # reads still work
        warnings = _warnings(caplog)
        assert len(warnings) == 1 and "queueing the turn" in warnings[0] and "StoreError" in warnings[0]
    finally:
        locker.execute("ROLLBACK")
        locker.close()
    assert _said(memory, "alice") == []


class _SilentServer:
    """Accepts connections and never answers: a memory server that stalls."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.05)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.conns: list[socket.socket] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while not self.stop.is_set():
            try:
                self.conns.append(self.sock.accept()[0])
            except TimeoutError:
                pass

    def close(self) -> None:
        self.stop.set()
        self.thread.join()
        for conn in self.conns:
            conn.close()
        self.sock.close()


@pytest.fixture
def silent_server() -> Iterator[_SilentServer]:
    server = _SilentServer()
    yield server
    server.close()


def test_a_stalled_store_costs_at_most_timeout(
    openai_server: ScriptedOpenAI, silent_server: _SilentServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    memory = Memory(engine="letta", base_url=silent_server.url, api_key="x", path=str(tmp_path / "m.db"))
    try:
        plain, wrapped = _client(openai_server), memory.wrap(_client(openai_server), subject_id="alice", timeout=0.2)
        _plain_request(openai_server, plain)
        with caplog.at_level(logging.WARNING):
            times = {}
            for name, client in (("plain", plain), ("wrapped", wrapped)):
                started = time.monotonic()
                for _ in range(5):
                    request = _plain_request(openai_server, client)
                times[name] = (time.monotonic() - started) / 5
        assert request == _plain_request(openai_server, plain)  # the call went on unchanged
        assert 0.15 < times["wrapped"] - times["plain"] < 0.35, times  # the read's 0.2 s; writes are never waited for
        warnings = _warnings(caplog)
        assert len(warnings) == 1 and "reading memory" in warnings[0] and "longer than 0.2 s" in warnings[0]
    finally:
        silent_server.close()  # the stalled requests fail now, and the letta engine can close
        memory.close()


def test_async_calls_fail_open_on_a_stalled_store(
    openai_server: ScriptedOpenAI, silent_server: _SilentServer, tmp_path: Path
) -> None:
    memory = Memory(engine="letta", base_url=silent_server.url, api_key="x", path=str(tmp_path / "m.db"))

    async def scenario() -> float:
        client = memory.wrap(_aclient(openai_server), subject_id="alice", timeout=0.1)
        started = time.monotonic()
        await client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "Hi"}])
        return time.monotonic() - started

    try:
        assert asyncio.run(scenario()) < 0.6
        assert openai_server.chat_requests[-1].json["messages"] == [{"role": "user", "content": "Hi"}]
    finally:
        silent_server.close()
        memory.close()


# -- the rest of the client -------------------------------------------------------------------------


def test_everything_else_passes_through(openai_server: ScriptedOpenAI, alice: Memory) -> None:
    raw = _client(openai_server)
    client = alice.wrap(raw, subject_id="alice")
    assert isinstance(client, openai.OpenAI) and not isinstance(client, openai.AsyncOpenAI)
    assert [m.id for m in client.models.list().data] == [m.id for m in raw.models.list().data]
    assert client.base_url == raw.base_url and client.api_key == "x"
    assert client.embeddings.create(model="text-embedding-3-small", input="hi").data[0].embedding
    variant = client.with_options(timeout=5.0)
    assert isinstance(variant, openai.OpenAI) and variant.timeout == 5.0
    variant.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "via with_options"}])
    assert "Name: Alice." in openai_server.chat_requests[-1].json["messages"][0]["content"]
    client.max_retries = 1  # attribute writes reach the client
    assert raw.max_retries == 1
    plain = client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "raw"}]
    )
    assert plain.parse().choices[0].message.content == "ok"
    assert openai_server.chat_requests[-1].json["messages"] == [{"role": "user", "content": "raw"}]  # no memory there
    assert "memory-wrapped" in repr(client)


def test_wrap_checks_its_arguments(openai_server: ScriptedOpenAI, memory: Memory) -> None:
    client = memory.wrap(_client(openai_server))
    with pytest.raises(ValueError, match="already wrapped"):
        memory.wrap(client)
    with pytest.raises(TypeError, match=r"openai\.OpenAI"):
        memory.wrap(object())
    with pytest.raises(ValueError, match="search_limit"):
        memory.wrap(_client(openai_server), search_limit=-1)
    with pytest.raises(ValueError, match="timeout"):
        memory.wrap(_client(openai_server), timeout=None)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="subject_id"):
        memory.wrap(_client(openai_server), subject_id="")


# -- the example, two processes ---------------------------------------------------------------------


@pytest.mark.parametrize("mode", [[], ["--stream"], ["--responses"]])
def test_example_learns_between_processes(mode: list[str], openai_server: ScriptedOpenAI, tmp_path: Path) -> None:
    env = {
        **os.environ,
        "OPENAI_BASE_URL": openai_server.base_url,
        "OPENAI_API_KEY": "x",
        "AI_MEMORY_PATH": str(tmp_path / "memory.db"),
        "AI_MEMORY_LEARNER": "offline",
        "AI_MEMORY_EMBEDDER": "none",
    }
    script = [sys.executable, str(ROOT / "examples" / "wrap_openai.py"), "--user", "ivy", *mode]
    answers = [reply("Hello Ivy!", chunk_delay=0.01), reply("You love hiking.")]
    (openai_server.script_responses if mode == ["--responses"] else openai_server.script)(*answers)
    first = subprocess.run(
        [*script, "My name is Ivy and I love hiking."], env=env, capture_output=True, text=True, timeout=120
    )
    assert first.returncode == 0, first.stderr
    assert first.stdout == "Hello Ivy!\n"
    second = subprocess.run([*script, "What do I love?"], env=env, capture_output=True, text=True, timeout=120)
    assert second.returncode == 0, second.stderr
    assert second.stdout == "You love hiking.\n"
    if mode == ["--responses"]:
        system = openai_server.responses_requests[-1].json["instructions"]
    else:
        system = openai_server.chat_requests[-1].json["messages"][0]["content"]
    assert system.startswith("You are a helpful assistant. Be brief.\n\n<human ")
    assert "Name: Ivy" in system


def test_the_overhead_benchmark_runs(tmp_path: Path) -> None:
    out = tmp_path / "figures.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "wrap_overhead.py"), "--smoke", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    figures = {f["case"]: f for f in json.loads(out.read_text())}
    assert set(figures) == {"sync", "sync, search_limit=3", "async"}
    assert figures["sync"]["system_bytes_added"] > 500  # the seeded profile and summary reached the prompt
    assert figures["sync, search_limit=3"]["system_bytes_added"] > figures["sync"]["system_bytes_added"]
