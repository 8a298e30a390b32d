"""``MemorySession`` and ``memory_instructions`` with the real OpenAI Agents SDK against the scripted server.

The session tests port what the SDK's own tests check of ``SQLiteSession``
(history across turns, separate sessions, limits and settings, pop and
clear, input callbacks, unicode, concurrency, cancellation, errors in
streamed runs) to ``MemorySession``; the rest check what it adds: the store
(restarts, ``delete_user``), learning under the subject, and instructions
with the learned context. No pytest-asyncio: each test runs its own loop.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import openai
import pytest
from agents import (
    Agent,
    OpenAIChatCompletionsModel,
    OpenAIResponsesModel,
    RunConfig,
    Runner,
    SessionSettings,
    SQLiteSession,
    function_tool,
    set_tracing_disabled,
)
from agents.memory import Session
from support.openai_server import ScriptedOpenAI, reply

from ai_memory_sdk import AsyncMemory, Memory, MemoryClosedError, UnsupportedByEngineError
from ai_memory_sdk.integrations.openai_agents import MemorySession, memory_instructions

ROOT = Path(__file__).resolve().parents[1]
set_tracing_disabled(True)  # the SDK would export traces to OpenAI's platform


def _agent(srv: ScriptedOpenAI, api: str = "responses", **kwargs: Any) -> Agent[Any]:
    """A fresh client per agent: an AsyncOpenAI belongs to the event loop of its first request."""
    client = openai.AsyncOpenAI(base_url=srv.base_url, api_key="x", max_retries=0)
    model_cls = OpenAIResponsesModel if api == "responses" else OpenAIChatCompletionsModel
    kwargs.setdefault("name", "test")
    return Agent(model=model_cls(model="gpt-4o-mini", openai_client=client), **kwargs)


def _run(method: str, make_agent: Callable[[], Agent[Any]], given: Any, **kwargs: Any) -> Any:
    if method == "run_sync":
        return Runner.run_sync(make_agent(), given, **kwargs)

    async def go() -> Any:
        if method == "run":
            return await Runner.run(make_agent(), given, **kwargs)
        result = Runner.run_streamed(make_agent(), given, **kwargs)
        async for _ in result.stream_events():
            pass
        return result

    return asyncio.run(go())


def _last_input(srv: ScriptedOpenAI) -> list[dict[str, Any]]:
    body = srv.responses_requests[-1].json
    return body["input"] if isinstance(body["input"], list) else [{"role": "user", "content": body["input"]}]


def _texts(items: list[dict[str, Any]]) -> list[str]:
    out = []
    for item in items:
        content = item.get("content")
        out.append(content if isinstance(content, str) else "".join(p.get("text", "") for p in content or []))
    return out


# -- the SDK's session behaviour ----------------------------------------------------------------------


@pytest.mark.parametrize("method", ["run", "run_sync", "run_streamed"])
def test_second_turn_carries_the_first(method: str, openai_server: ScriptedOpenAI, memory: Memory) -> None:
    session = MemorySession("test_session_123", memory=memory)
    openai_server.script_responses(reply("San Francisco"), reply("California"))
    first = _run(method, lambda: _agent(openai_server), "What city is the Golden Gate Bridge in?", session=session)
    assert first.final_output == "San Francisco"
    second = _run(method, lambda: _agent(openai_server), "What state is it in?", session=session)
    assert second.final_output == "California"
    assert _texts(_last_input(openai_server)) == [
        "What city is the Golden Gate Bridge in?",
        "San Francisco",
        "What state is it in?",
    ]


def test_chat_completions_model_gets_the_history(openai_server: ScriptedOpenAI, memory: Memory) -> None:
    session = MemorySession("chat", memory=memory)
    openai_server.script(reply("Hello"), reply("You said hi"))
    _run("run", lambda: _agent(openai_server, "chat"), "Hi there", session=session)
    _run("run", lambda: _agent(openai_server, "chat"), "What did I say?", session=session)
    sent = openai_server.chat_requests[-1].json["messages"]
    assert [(m["role"], m["content"]) for m in sent] == [
        ("user", "Hi there"),
        ("assistant", "Hello"),
        ("user", "What did I say?"),
    ]


def test_sessions_keep_separate_histories(openai_server: ScriptedOpenAI, memory: Memory) -> None:
    one, two = MemorySession("session_1", memory=memory), MemorySession("session_2", memory=memory)
    openai_server.script_responses(reply("I like cats"), reply("I like dogs"), reply("Yes, you mentioned cats"))
    _run("run", lambda: _agent(openai_server), "I like cats", session=one)
    _run("run", lambda: _agent(openai_server), "I like dogs", session=two)
    result = _run("run", lambda: _agent(openai_server), "What did I say I like?", session=one)
    assert result.final_output == "Yes, you mentioned cats"
    assert _texts(_last_input(openai_server)) == ["I like cats", "I like cats", "What did I say I like?"]


def test_add_get_clear_and_the_clear_survives_a_restart(make_memory: Callable[..., Memory]) -> None:
    memory = make_memory()
    session = MemorySession("direct_test", memory=memory)
    items = [{"role": "user", "content": "Hello"}, {"role": "assistant", "content": "Hi there!"}]

    async def fill() -> list[Any]:
        await session.add_items(items)  # type: ignore[arg-type]
        return await session.get_items()

    assert asyncio.run(fill()) == items
    again = MemorySession("direct_test", memory=make_memory())  # another Memory on the same file
    assert asyncio.run(again.get_items()) == items
    asyncio.run(session.clear_session())
    assert asyncio.run(session.get_items()) == []
    memory.close()
    reopened = MemorySession("direct_test", memory=make_memory())
    assert asyncio.run(reopened.get_items()) == []


def test_every_item_type_round_trips_exactly(memory: Memory) -> None:
    items: list[dict[str, Any]] = [
        {
            "role": "user",
            "content": [
                {"type": "input_text", "text": "こんにちは 😊"},
                {"type": "input_image", "image_url": "data:image/png;base64,iVBORw0KGgo=", "detail": "auto"},
            ],
        },
        {
            "id": "rs_1",
            "type": "reasoning",
            "summary": [{"type": "summary_text", "text": "think"}],
            "encrypted_content": "gAAAA==",
        },
        {
            "type": "function_call",
            "id": "fc_1",
            "call_id": "call_1",
            "name": "get_weather",
            "arguments": '{"city": "Paris"}',
            "status": "completed",
        },
        {"type": "function_call_output", "call_id": "call_1", "output": "Robert'); DROP TABLE students;--"},
        {
            "type": "message",
            "id": "msg_1",
            "role": "assistant",
            "status": "completed",
            "content": [
                {"type": "output_text", "text": 'O\'Reilly "quoted" \\ back', "annotations": [], "logprobs": []}
            ],
        },
        {"type": "custom_tool_call", "call_id": "call_2", "name": "patch", "input": "*** Begin Patch"},
        {
            "type": "web_search_call",
            "id": "ws_1",
            "status": "completed",
            "action": {"type": "search", "query": "weather"},
        },
        {"role": "user", "content": "nested", "extra": {"n": [1, 2.5, None, True, {"deep": "x" * 5000}]}},
        {"role": "developer", "content": "Answer in French."},
        {"type": "item_reference", "id": "msg_0"},
    ]
    session = MemorySession("exact", memory=memory)
    asyncio.run(session.add_items(items))  # type: ignore[arg-type]
    assert asyncio.run(session.get_items()) == items
    assert json.dumps(asyncio.run(session.get_items())) == json.dumps(items)  # key order kept too
    learned = [(m.role, m.name, m.content) for m in memory.get_messages("exact")]
    assert learned == [
        ("user", None, "こんにちは 😊\n[image]"),
        ("assistant", None, "[reasoning] think"),
        ("assistant", None, '[calls get_weather({"city": "Paris"})]'),
        ("tool", "get_weather", "Robert'); DROP TABLE students;--"),
        ("assistant", None, items[4]["content"][0]["text"]),
        ("assistant", None, "[calls patch(*** Begin Patch)]"),
        ("assistant", None, '[web_search_call] {"action": {"type": "search", "query": "weather"}}'),
        ("user", None, "nested"),
    ]  # instructions and an item reference are kept in the session, not learned
    assert memory.get_messages("exact")[2].metadata["item"] == items[2]


def test_pop_item_returns_the_latest_until_empty(memory: Memory) -> None:
    session = MemorySession("pop_test", memory=memory)

    async def scenario() -> None:
        assert await session.pop_item() is None
        items = [
            {"role": "user", "content": "Hello"},
            {"role": "assistant", "content": "Hi there!"},
            {"role": "user", "content": "How are you?"},
        ]
        await session.add_items(items)  # type: ignore[arg-type]
        assert await session.pop_item() == items[2]
        assert await session.get_items() == items[:2]
        assert await session.pop_item() == items[1]
        assert await session.pop_item() == items[0]
        assert await session.pop_item() is None
        assert await session.get_items() == []

    asyncio.run(scenario())


def test_pop_touches_only_its_own_session(memory: Memory) -> None:
    one, two = MemorySession("session_1", memory=memory), MemorySession("session_2", memory=memory)

    async def scenario() -> None:
        await one.add_items([{"role": "user", "content": "Session 1 message"}])
        await two.add_items(
            [{"role": "user", "content": "Session 2 message 1"}, {"role": "user", "content": "Session 2 message 2"}]
        )
        assert (await two.pop_item() or {}).get("content") == "Session 2 message 2"
        assert _texts(await one.get_items()) == ["Session 1 message"]  # type: ignore[arg-type]
        assert _texts(await two.get_items()) == ["Session 2 message 1"]  # type: ignore[arg-type]

    asyncio.run(scenario())


def test_get_items_limit_reads_the_latest_in_order(memory: Memory) -> None:
    session = MemorySession("count_test", memory=memory)
    items = [{"role": "user" if i % 2 == 0 else "assistant", "content": f"Item {i}"} for i in range(6)]
    asyncio.run(session.add_items(items))  # type: ignore[arg-type]

    def get(limit: int | None) -> list[str]:
        return _texts(asyncio.run(session.get_items(limit)))  # type: ignore[arg-type]

    assert get(None) == [f"Item {i}" for i in range(6)]
    assert get(2) == ["Item 4", "Item 5"]
    assert get(4) == ["Item 2", "Item 3", "Item 4", "Item 5"]
    assert get(10) == [f"Item {i}" for i in range(6)]
    assert get(0) == []
    assert get(-1) == [f"Item {i}" for i in range(6)]  # a negative limit reads everything, as SQLite's LIMIT does
    with pytest.raises(TypeError, match="limit"):
        asyncio.run(session.get_items("2"))  # type: ignore[arg-type]


def test_no_hidden_cap_on_long_sessions(memory: Memory) -> None:
    session = MemorySession("long", memory=memory)
    items = [{"role": "user", "content": f"m{i}"} for i in range(1500)]
    asyncio.run(session.add_items(items))  # type: ignore[arg-type]
    assert asyncio.run(session.get_items()) == items


def test_session_settings(memory: Memory) -> None:
    assert MemorySession("d", memory=memory).session_settings == SessionSettings()
    assert MemorySession("d", memory=memory).session_settings.limit is None  # type: ignore[union-attr]
    dict_settings = MemorySession("d", memory=memory, session_settings={"limit": 0}).session_settings
    assert isinstance(dict_settings, SessionSettings) and dict_settings.limit == 0
    with pytest.raises(TypeError, match="Unknown session settings: limitt"):
        MemorySession("d", memory=memory, session_settings={"limitt": 1})
    session = MemorySession("limited", memory=memory, session_settings=SessionSettings(limit=3))
    asyncio.run(session.add_items([{"role": "user", "content": f"Message {i}"} for i in range(5)]))
    assert _texts(asyncio.run(session.get_items())) == ["Message 2", "Message 3", "Message 4"]  # type: ignore[arg-type]
    assert _texts(asyncio.run(session.get_items(limit=1))) == ["Message 4"]  # type: ignore[arg-type]


def test_run_config_limit_overrides_the_session(openai_server: ScriptedOpenAI, memory: Memory) -> None:
    session = MemorySession("override", memory=memory, session_settings=SessionSettings(limit=100))
    asyncio.run(session.add_items([{"role": "user", "content": f"Turn {i}"} for i in range(10)]))
    openai_server.script_responses(reply("Got it"))
    config = RunConfig(session_settings=SessionSettings(limit=2))
    _run("run", lambda: _agent(openai_server), "New question", session=session, run_config=config)
    assert _texts(_last_input(openai_server)) == ["Turn 8", "Turn 9", "New question"]


def test_limit_zero_sends_no_history(openai_server: ScriptedOpenAI, memory: Memory) -> None:
    session = MemorySession("zero", memory=memory)
    openai_server.script_responses(reply("Reply 1"), reply("Reply 2"))
    _run("run", lambda: _agent(openai_server), "Message 1", session=session)
    config = RunConfig(session_settings=SessionSettings(limit=0))
    _run("run", lambda: _agent(openai_server), "Message 2", session=session, run_config=config)
    assert _texts(_last_input(openai_server)) == ["Message 2"]


def test_limit_boundary_drops_an_output_without_its_call(openai_server: ScriptedOpenAI, memory: Memory) -> None:
    history: list[dict[str, Any]] = [
        {"role": "user", "content": "What is the weather?"},
        {"type": "function_call", "call_id": "call_1", "name": "get_weather", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "call_1", "output": "sunny"},
        {
            "type": "message",
            "role": "assistant",
            "content": [{"type": "output_text", "text": "It is sunny.", "annotations": []}],
        },
    ]
    session = MemorySession("limit_tool_pair", memory=memory)
    asyncio.run(session.add_items(history))  # type: ignore[arg-type]
    assert asyncio.run(session.get_items(limit=2)) == history[-2:]
    openai_server.script_responses(reply("Tomorrow is sunny too."))
    config = RunConfig(session_settings=SessionSettings(limit=2))
    _run("run", lambda: _agent(openai_server), "What about tomorrow?", session=session, run_config=config)
    assert _last_input(openai_server) == [history[-1], {"role": "user", "content": "What about tomorrow?"}]


def test_list_input_is_appended_to_the_history(openai_server: ScriptedOpenAI, memory: Memory) -> None:
    session = MemorySession("list_input", memory=memory)
    history = [{"role": "user", "content": "Earlier message"}, {"role": "assistant", "content": "Saved reply"}]
    asyncio.run(session.add_items(history))  # type: ignore[arg-type]
    openai_server.script_responses(reply("This should run"))
    given = [{"role": "user", "content": "Test message"}]
    _run("run", lambda: _agent(openai_server), given, session=session)
    assert _last_input(openai_server) == history + given


def test_input_callback_shapes_the_model_input(openai_server: ScriptedOpenAI, memory: Memory) -> None:
    session = MemorySession("callback", memory=memory)
    history = [{"role": "user", "content": "Hello there."}, {"role": "assistant", "content": "Hi, I'm here."}]
    asyncio.run(session.add_items(history))  # type: ignore[arg-type]

    def only_user(old: list[Any], new: list[Any]) -> list[Any]:
        return [item for item in old if item["role"] == "user"] + new

    openai_server.script_responses(reply("I'm gpt-4o"))
    given = [{"role": "user", "content": "What your name?"}]
    config = RunConfig(session_input_callback=only_user)
    _run("run", lambda: _agent(openai_server), given, session=session, run_config=config)
    assert _last_input(openai_server) == [history[0], given[0]]


def test_a_callback_repeating_history_does_not_grow_the_session(openai_server: ScriptedOpenAI, memory: Memory) -> None:
    session = MemorySession("repeat", memory=memory)

    def repeat_first(old: list[Any], new: list[Any]) -> list[Any]:
        return old + [old[0]] + new if old else new

    for turn in range(3):
        openai_server.script_responses(reply(f"assistant {turn}"))
        config = RunConfig(session_input_callback=repeat_first)
        _run("run", lambda: _agent(openai_server), f"user {turn}", session=session, run_config=config)
    stored = asyncio.run(session.get_items())
    assert [i.get("content") for i in stored if i.get("role") == "user"] == ["user 0", "user 1", "user 2"]
    assert len(stored) == 6


def test_threads_with_their_own_loops_all_land(memory: Memory) -> None:
    session = MemorySession("concurrent_test", memory=memory)
    threads = [
        threading.Thread(
            target=lambda i=i: asyncio.run(session.add_items([{"role": "user", "content": f"Message {i}"}]))
        )
        for i in range(10)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert {i["content"] for i in asyncio.run(session.get_items())} == {f"Message {i}" for i in range(10)}  # type: ignore[typeddict-item]


@pytest.mark.parametrize("kind", ["Memory", "AsyncMemory"])
def test_concurrent_pops_and_adds_neither_deadlock_nor_lose_items(kind: str, tmp_path: Path) -> None:
    async def scenario() -> None:
        options: dict[str, Any] = {"path": str(tmp_path / "m.db"), "learner": "offline", "embedder": "none"}
        memory: Memory | AsyncMemory = Memory(**options) if kind == "Memory" else AsyncMemory(**options)
        session = MemorySession("busy", memory=memory)
        await session.add_items([{"role": "user", "content": f"old {i}"} for i in range(40)])  # type: ignore[misc]
        adds = [session.add_items([{"role": "user", "content": f"new {i}"}]) for i in range(20)]
        pops = [session.pop_item() for _ in range(40)]
        results = await asyncio.wait_for(asyncio.gather(*pops, *adds), 60)
        popped = [r["content"] for r in results[:40] if r is not None]
        left = [i["content"] for i in await session.get_items()]  # type: ignore[typeddict-item]
        assert len(popped) == len(set(popped)) == 40  # every pop got an item, none twice
        assert sorted(popped + left) == sorted([f"old {i}" for i in range(40)] + [f"new {i}" for i in range(20)])
        if isinstance(memory, AsyncMemory):
            await memory.close()
        else:
            memory.close()

    asyncio.run(scenario())


@pytest.mark.parametrize("operation", ["add", "pop", "clear"])
def test_a_cancelled_caller_still_gets_a_known_outcome(operation: str, memory: Memory) -> None:
    session = MemorySession(f"cancel_{operation}", memory=memory)
    item = {"role": "user", "content": "once"}

    async def scenario() -> None:
        if operation != "add":
            await session.add_items([item])  # type: ignore[list-item]
        call = {"add": lambda: session.add_items([item]), "pop": session.pop_item, "clear": session.clear_session}
        task = asyncio.ensure_future(call[operation]())  # type: ignore[operator]
        await asyncio.sleep(0)  # the write is under way in its thread
        task.cancel()
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert task.cancelled()
        assert await session.get_items() == ([item] if operation == "add" else [])

    asyncio.run(scenario())


def test_a_closed_memory_raises_at_once_and_a_streamed_run_does_not_hang(
    openai_server: ScriptedOpenAI, make_memory: Callable[..., Memory]
) -> None:
    memory = make_memory()
    session = MemorySession("closed", memory=memory)
    memory.close()
    with pytest.raises(MemoryClosedError):
        asyncio.run(session.add_items([]))
    with pytest.raises(MemoryClosedError):
        asyncio.run(session.get_items())

    async def streamed() -> None:
        result = Runner.run_streamed(_agent(openai_server), "Hello", session=session)
        async for _ in result.stream_events():
            pass

    with pytest.raises(MemoryClosedError):
        asyncio.run(asyncio.wait_for(streamed(), 10))


def test_bad_input_is_refused_whole(memory: Memory) -> None:
    session = MemorySession("bad", memory=memory)
    with pytest.raises(TypeError, match="items must be a list"):
        asyncio.run(session.add_items({"role": "user", "content": "x"}))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"items\[1\] must be JSON-serialisable"):
        asyncio.run(session.add_items([{"role": "user", "content": "ok"}, {"role": "user", "content": object()}]))  # type: ignore[list-item]
    with pytest.raises(TypeError, match=r"items\[0\] must be a JSON object"):
        asyncio.run(session.add_items(["just text"]))  # type: ignore[list-item]
    assert asyncio.run(session.get_items()) == []
    assert memory.get_messages("bad") == []
    with pytest.raises(ValueError, match="session_id"):
        MemorySession("", memory=memory)
    with pytest.raises(ValueError, match="subject_id"):
        MemorySession("ok", memory=memory, subject_id="bad\x00id")
    with pytest.raises(TypeError, match="Memory or AsyncMemory"):
        MemorySession("ok", memory=SQLiteSession("x"))  # type: ignore[arg-type]


def test_it_is_an_sdk_session(memory: Memory) -> None:
    session = MemorySession("proto", memory=memory)
    assert isinstance(session, Session)
    assert session.session_id == "proto" and session.subject_id == "proto"


# -- what MemorySession adds: learning, the subject, the store ----------------------------------------


def test_items_are_learned_under_the_subject(openai_server: ScriptedOpenAI, memory: Memory) -> None:
    @function_tool
    def get_weather(city: str) -> str:
        return f"sunny in {city}"

    session = MemorySession("weather-chat", memory=memory, subject_id="ada")
    openai_server.script_responses(
        reply(None, tool_calls=[("get_weather", {"city": "Paris"})], reasoning="The user wants the weather."),
        reply("It is sunny in Paris."),
    )
    _run(
        "run", lambda: _agent(openai_server, tools=[get_weather]), "My name is Ada. Weather in Paris?", session=session
    )
    said = [(m.role, m.name, m.content) for m in memory.get_messages("ada")]
    assert said == [
        ("user", None, "My name is Ada. Weather in Paris?"),
        ("assistant", None, "[reasoning] The user wants the weather."),
        ("assistant", None, '[calls get_weather({"city": "Paris"})]'),
        ("tool", "get_weather", "sunny in Paris"),
        ("assistant", None, "It is sunny in Paris."),
    ]
    raw_call = memory.get_messages("ada")[2].metadata["item"]
    assert raw_call["type"] == "function_call" and raw_call["name"] == "get_weather"
    assert raw_call in asyncio.run(session.get_items())  # the raw item is the one the session keeps
    assert [b.label for b in memory.list_blocks("ada")] == ["human", "summary"]  # default blocks, as add_messages
    for run in memory.list_runs("ada"):
        memory.wait_for_run(run.id)
    assert "Name: Ada" in (memory.get_user_memory("ada") or "")
    assert memory.get_messages("weather-chat") == []  # the subject is ada, not the session


def test_reasoning_and_tool_items_stored_as_sqlite_session_stores_them(
    openai_server: ScriptedOpenAI, memory: Memory
) -> None:
    @function_tool
    def lookup(term: str) -> str:
        return f"{term}: found"

    def normalised(items: list[Any]) -> list[Any]:
        seen: dict[str, str] = {}
        text = json.dumps(items)
        for item in items:
            for key in ("id", "call_id"):
                if isinstance(item.get(key), str):
                    seen.setdefault(item[key], f"<{key}{len(seen)}>")
        for real, placeholder in seen.items():
            text = text.replace(real, placeholder)
        return json.loads(text)  # type: ignore[no-any-return]

    stored = []
    for session in (SQLiteSession("reference"), MemorySession("ours", memory=memory)):
        openai_server.script_responses(
            reply(None, tool_calls=[("lookup", {"term": "x"})], reasoning="look it up"), reply("done"), reply("again")
        )
        _run("run", lambda: _agent(openai_server, tools=[lookup]), "find x", session=session)
        _run("run", lambda: _agent(openai_server, tools=[lookup]), "and now?", session=session)
        stored.append(asyncio.run(session.get_items()))
        second_input = _last_input(openai_server)
        assert [i.get("type") for i in second_input[1:4]] == ["reasoning", "function_call", "function_call_output"]
    assert normalised(stored[1]) == normalised(stored[0])


def test_deleting_the_subject_erases_its_sessions(memory: Memory) -> None:
    session = MemorySession("s1", memory=memory, subject_id="carol")
    other = MemorySession("s2", memory=memory, subject_id="dave")
    asyncio.run(session.add_items([{"role": "user", "content": "I am Carol"}]))
    asyncio.run(other.add_items([{"role": "user", "content": "I am Dave"}]))
    memory.delete_user("carol")
    assert asyncio.run(session.get_items()) == []
    assert memory.get_messages("carol") == []
    assert _texts(asyncio.run(other.get_items())) == ["I am Dave"]  # type: ignore[arg-type]


def test_sessions_may_share_a_subject(memory: Memory) -> None:
    a = MemorySession("phone", memory=memory, subject_id="erin")
    b = MemorySession("laptop", memory=memory, subject_id="erin")
    asyncio.run(a.add_items([{"role": "user", "content": "from the phone"}]))
    asyncio.run(b.add_items([{"role": "user", "content": "from the laptop"}]))
    assert [m.content for m in memory.get_messages("erin")] == ["from the phone", "from the laptop"]
    assert _texts(asyncio.run(a.get_items())) == ["from the phone"]  # type: ignore[arg-type]


def test_async_memory_backs_a_session(openai_server: ScriptedOpenAI, tmp_path: Path) -> None:
    async def scenario() -> None:
        async with AsyncMemory(path=str(tmp_path / "m.db"), learner="offline", embedder="none") as memory:
            session = MemorySession("async", memory=memory, subject_id="fay")
            openai_server.script_responses(reply("Hi Fay"), reply("Still here"))
            await Runner.run(_agent(openai_server), "I'm Fay", session=session)
            await Runner.run(_agent(openai_server), "Are you there?", session=session)
            assert _texts(_last_input(openai_server)) == ["I'm Fay", "Hi Fay", "Are you there?"]
            assert [m.content for m in await memory.get_messages("fay")][:2] == ["I'm Fay", "Hi Fay"]

    asyncio.run(scenario())


# -- memory_instructions ----------------------------------------------------------------------------


def test_instructions_carry_the_context_learned_so_far(openai_server: ScriptedOpenAI, memory: Memory) -> None:
    session = MemorySession("learn", memory=memory, subject_id="gus")
    instructions = memory_instructions(memory, "gus", "Be brief.")
    openai_server.script_responses(reply("Nice to meet you"), reply("You are Gus"))
    _run("run", lambda: _agent(openai_server, instructions=instructions), "My name is Gus", session=session)
    for run in memory.list_runs("gus"):
        memory.wait_for_run(run.id)
    assert "Name: Gus" in (memory.get_user_memory("gus") or "")
    memory.initialize_memory("preferences", "What the user prefers.", "Likes tea.", subject_id="gus")
    _run("run", lambda: _agent(openai_server, instructions=instructions), "Who am I?", session=session)
    sent = openai_server.responses_requests[-1].json["instructions"]
    assert sent.startswith('Be brief.\n\n<human description="Details about the human user you are speaking to.">')
    assert "Name: Gus" in sent  # learned from the first run
    assert sent.endswith('<preferences description="What the user prefers.">Likes tea.</preferences>')  # read afresh


def test_dynamic_instructions_and_fail_open(
    openai_server: ScriptedOpenAI, make_memory: Callable[..., Memory], caplog: pytest.LogCaptureFixture
) -> None:
    memory = make_memory()
    memory.initialize_user_memory("hal", user_context_block_value="Name: Hal")

    async def dynamic(context: Any, agent: Agent[Any]) -> str:
        return f"You are {agent.name}."

    instructions = memory_instructions(memory, "hal", dynamic)
    openai_server.script_responses(reply("a"), reply("b"), reply("c"))
    _run("run", lambda: _agent(openai_server, name="Helper", instructions=instructions), "hi")
    assert openai_server.responses_requests[-1].json["instructions"] == "You are Helper.\n\n" + memory.get_context(
        "hal"
    )
    memory.close()
    with caplog.at_level(logging.WARNING, logger="ai_memory_sdk"):
        _run("run", lambda: _agent(openai_server, name="Helper", instructions=instructions), "hi")
        _run("run", lambda: _agent(openai_server, name="Helper", instructions=instructions), "hi")
    assert openai_server.responses_requests[-1].json["instructions"] == "You are Helper."
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and "memory_instructions" in r.getMessage()]
    assert len(warnings) == 1 and "MemoryClosedError" in warnings[0].getMessage()


# -- the example, two processes ---------------------------------------------------------------------


def _memory_agent(req: dict[str, Any]) -> Any:
    """The memory agent's side of the scripted server: learn the user's name and city from the transcript."""
    messages = req.get("messages")
    if not messages:
        return None
    if messages[-1]["role"] == "tool":
        return reply("done")
    if "Lisbon" in str(messages[-1]["content"]):
        return reply(tool_calls=[("memory_insert", {"label": "human", "new_str": "Name: Ada. Lives in Lisbon."})])
    return reply("nothing new")


def test_example_two_processes_history_and_learned_block(openai_server: ScriptedOpenAI, tmp_path: Path) -> None:
    openai_server.responder = _memory_agent
    openai_server.script_responses(reply("Nice to meet you, Ada."), reply("You live in Lisbon."))
    env = {
        **os.environ,
        "OPENAI_BASE_URL": openai_server.base_url,
        "OPENAI_API_KEY": "x",
        "AI_MEMORY_PATH": str(tmp_path / "memory.db"),
        "AI_MEMORY_LEARNER": "llm",
        "AI_MEMORY_EMBEDDER": "none",
        "OPENAI_AGENTS_DISABLE_TRACING": "1",
    }
    script = str(ROOT / "examples" / "agents_session.py")
    first = subprocess.run(
        [sys.executable, script, "--user", "ada", "Hi, I'm Ada and I live in Lisbon."],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert first.returncode == 0, first.stderr
    assert first.stdout.strip() == "Nice to meet you, Ada."
    second = subprocess.run(
        [sys.executable, script, "--user", "ada", "Where do I live?", "--show-memory"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert second.returncode == 0, second.stderr
    assert second.stdout.startswith("You live in Lisbon.\n")
    body = openai_server.responses_requests[-1].json
    assert _texts(body["input"]) == ["Hi, I'm Ada and I live in Lisbon.", "Nice to meet you, Ada.", "Where do I live?"]
    assert "Name: Ada. Lives in Lisbon." in body["instructions"]
    assert body["instructions"].startswith("You are a helpful assistant.")
    assert "Name: Ada. Lives in Lisbon." in second.stdout  # --show-memory prints the learned context


def test_the_letta_engine_has_no_sessions(tmp_path: Path) -> None:
    memory = Memory(engine="letta", base_url="http://127.0.0.1:9", api_key="x", path=str(tmp_path / "m.db"))
    try:
        session = MemorySession("s", memory=memory)
        with pytest.raises(UnsupportedByEngineError, match="sessions"):
            asyncio.run(session.get_items())
        with pytest.raises(UnsupportedByEngineError, match="sessions"):
            asyncio.run(session.add_items([{"role": "user", "content": "hi"}]))
    finally:
        memory.close()
