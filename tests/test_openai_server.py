"""The scripted OpenAI server, driven by the real ``openai`` client over 127.0.0.1."""

from __future__ import annotations

import json
import math
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import openai
import pytest
from support.openai_server import ScriptedOpenAI, drop, embed_text, fail, invalid_json, reply, stall

MSGS = [{"role": "user", "content": "My name is Bob."}]
TOOLS = [{"type": "function", "function": {"name": "memory_insert", "parameters": {"type": "object"}}}]


def _client(server: ScriptedOpenAI, **kw: object) -> openai.OpenAI:
    kw.setdefault("max_retries", 0)
    return openai.OpenAI(base_url=server.base_url, api_key="sk-test", **kw)  # type: ignore[arg-type]


def _cosine(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b))


def test_tool_call_reply_parses_into_chat_completion(openai_server: ScriptedOpenAI) -> None:
    openai_server.script(
        reply(
            tool_calls=[
                ("memory_insert", {"label": "human", "new_str": "Name: Bob"}),
                ("memory_finish_edits", "{not json"),
            ]
        )
    )
    out = _client(openai_server).chat.completions.create(model="gpt-4.1-mini", messages=MSGS, tools=TOOLS)
    assert out.object == "chat.completion" and out.model == "gpt-4.1-mini"
    choice = out.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    first, second = choice.message.tool_calls
    assert first.type == "function" and first.function.name == "memory_insert" and first.id != second.id
    assert json.loads(first.function.arguments) == {"label": "human", "new_str": "Name: Bob"}
    assert second.function.arguments == "{not json"  # malformed on purpose, passed through
    body = openai_server.chat_requests[0].body
    assert out.usage.prompt_tokens == math.ceil(len(body) / 4)
    assert out.usage.total_tokens == out.usage.prompt_tokens + out.usage.completion_tokens


def test_default_reply_usage_override_and_strict_mode() -> None:
    with ScriptedOpenAI(strict=True) as server:
        client = _client(server)
        server.script(reply("hello", usage={"prompt_tokens": 7}))
        out = client.chat.completions.create(model="gpt-4o-mini", messages=MSGS)
        assert out.choices[0].message.content == "hello" and out.choices[0].finish_reason == "stop"
        assert out.usage.prompt_tokens == 7 and out.choices[0].message.tool_calls is None
        with pytest.raises(openai.InternalServerError, match="unscripted"):
            client.chat.completions.create(model="gpt-4o-mini", messages=MSGS)
        server.strict = False
        assert client.chat.completions.create(model="gpt-4o-mini", messages=MSGS).choices[0].message.content == "ok"
        assert server.counters["unscripted"] == 1 and server.remaining == 0


def test_responder_answers_when_queue_is_empty(openai_server: ScriptedOpenAI) -> None:
    openai_server.responder = lambda req: reply(f"echo {req['messages'][-1]['content']}")
    openai_server.script(reply("scripted first"))
    client = _client(openai_server)
    texts = [client.chat.completions.create(model="m", messages=MSGS).choices[0].message.content for _ in range(2)]
    assert texts == ["scripted first", "echo My name is Bob."]
    openai_server.responder = lambda req: 1 / 0
    with pytest.raises(openai.InternalServerError, match="ZeroDivisionError"):
        client.chat.completions.create(model="m", messages=MSGS)


def test_streaming_content_tool_calls_and_usage(openai_server: ScriptedOpenAI) -> None:
    openai_server.script(
        reply("Saving that now.", tool_calls=[("memory_insert", {"new_str": "x" * 40}), ("memory_finish_edits", {})])
    )
    stream = _client(openai_server).chat.completions.create(
        model="gpt-4o-mini", messages=MSGS, tools=TOOLS, stream=True, stream_options={"include_usage": True}
    )
    text, calls, finish, usage = "", {}, None, None
    for chunk in stream:
        assert chunk.object == "chat.completion.chunk"
        usage = chunk.usage or usage
        for choice in chunk.choices:
            text += choice.delta.content or ""
            finish = choice.finish_reason or finish
            for tc in choice.delta.tool_calls or []:
                slot = calls.setdefault(tc.index, {"name": "", "args": ""})
                slot["name"] += (tc.function.name or "") if tc.function else ""
                slot["args"] += (tc.function.arguments or "") if tc.function else ""
    assert text == "Saving that now." and finish == "tool_calls"
    assert [c["name"] for c in calls.values()] == ["memory_insert", "memory_finish_edits"]
    assert json.loads(calls[0]["args"]) == {"new_str": "x" * 40} and json.loads(calls[1]["args"]) == {}
    assert usage is not None and usage.total_tokens > 0 and openai_server.counters["chat_stream"] == 1


def test_embeddings_float_and_default_base64(openai_server: ScriptedOpenAI) -> None:
    client = _client(openai_server)
    texts = ["Bob likes green tea", "bob LIKES tea!", "quarterly tax filing deadline"]
    floats = client.embeddings.create(model="text-embedding-3-small", input=texts, encoding_format="float")
    default = client.embeddings.create(model="text-embedding-3-small", input=texts)
    assert openai_server.embedding_requests[1].json["encoding_format"] == "base64"  # what the client asks for
    assert isinstance(default.data[0].embedding, list)  # decoded from little-endian float32 base64
    a, b, c = (d.embedding for d in floats.data)
    assert len(a) == 1536 and [d.index for d in floats.data] == [0, 1, 2]
    assert a == openai_server.embed(texts[0]) == embed_text(texts[0])
    assert _cosine(a, b) > 0.5 > _cosine(a, c) and abs(_cosine(a, a) - 1) < 1e-9
    for got, want in zip(default.data, floats.data):
        assert max(abs(x - y) for x, y in zip(got.embedding, want.embedding)) < 1e-6
    small = client.embeddings.create(model="text-embedding-3-small", input="hello", dimensions=64)
    assert len(small.data[0].embedding) == 64 and small.usage.prompt_tokens == 1
    with pytest.raises(openai.BadRequestError):
        client.embeddings.create(model="text-embedding-3-small", input="")


def test_embedding_dimension_per_server_and_scripted_fault() -> None:
    with ScriptedOpenAI(embedding_dim=8) as server:
        client = _client(server)
        server.script_embeddings(fail(503))
        with pytest.raises(openai.InternalServerError):
            client.embeddings.create(model="text-embedding-3-small", input="hi")
        assert len(client.embeddings.create(model="e", input="hi").data[0].embedding) == 8


def test_429_with_retry_after_reaches_the_client(openai_server: ScriptedOpenAI) -> None:
    openai_server.script(
        fail(429, headers={"Retry-After": "1"}), fail(429, headers={"retry-after-ms": "10"}), reply("after retry")
    )
    with pytest.raises(openai.RateLimitError) as err:
        _client(openai_server).chat.completions.create(model="gpt-4o-mini", messages=MSGS)
    assert err.value.status_code == 429 and err.value.response.headers["retry-after"] == "1"
    assert err.value.code == "rate_limit_exceeded"
    out = _client(openai_server, max_retries=1).chat.completions.create(model="gpt-4o-mini", messages=MSGS)
    assert out.choices[0].message.content == "after retry" and openai_server.counters["fails"] == 2


def test_drop_stall_and_invalid_json(openai_server: ScriptedOpenAI) -> None:
    client = _client(openai_server, timeout=0.3)
    openai_server.script(drop(), stall(1.0), reply("served to the next call"), invalid_json())
    with pytest.raises(openai.APIConnectionError):
        client.chat.completions.create(model="gpt-4o-mini", messages=MSGS)
    started = time.monotonic()
    with pytest.raises(openai.APITimeoutError):
        client.chat.completions.create(model="gpt-4o-mini", messages=MSGS)
    assert time.monotonic() - started < 0.9
    out = client.chat.completions.create(model="gpt-4o-mini", messages=MSGS)
    assert out.choices[0].message.content == "served to the next call"
    with pytest.raises(ValueError):  # json.JSONDecodeError from the client
        client.chat.completions.create(model="gpt-4o-mini", messages=MSGS)
    assert openai_server.counters["drops"] == 1 and openai_server.counters["stalls"] == 1
    assert openai_server.counters["invalid_json"] == 1


def test_stall_leaves_next_step_for_the_retry_when_client_gave_up(openai_server: ScriptedOpenAI) -> None:
    openai_server.script(stall(0.25), reply("for the retry"))
    client = _client(openai_server, timeout=0.1)
    with pytest.raises(openai.APITimeoutError):
        client.chat.completions.create(model="gpt-4o-mini", messages=MSGS)
    time.sleep(0.35)  # the stalled handler wakes, sees the client gone, and consumes nothing
    assert openai_server.remaining == 1
    assert (
        client.chat.completions.create(model="gpt-4o-mini", messages=MSGS).choices[0].message.content == "for the retry"
    )


def test_stall_then_explicit_step_acts_as_latency(openai_server: ScriptedOpenAI) -> None:
    openai_server.script(stall(0.2, then=reply("late")))
    started = time.monotonic()
    out = _client(openai_server).chat.completions.create(model="gpt-4o-mini", messages=MSGS)
    assert out.choices[0].message.content == "late" and time.monotonic() - started >= 0.2


def test_request_recording_counters_and_clear(openai_server: ScriptedOpenAI) -> None:
    client = _client(openai_server)
    client.chat.completions.create(model="gpt-4.1", messages=MSGS, tools=TOOLS)
    ids = [m.id for m in client.models.list()]
    assert {"gpt-4o-mini", "gpt-4.1", "gpt-4.1-mini", "text-embedding-3-small"} <= set(ids)
    assert client.models.retrieve("gpt-4.1").id == "gpt-4.1"
    rec = openai_server.chat_requests[0]
    assert (rec.method, rec.path) == ("POST", "/v1/chat/completions")
    assert rec.headers["authorization"] == "Bearer sk-test" and json.loads(rec.body) == rec.json
    assert rec.json["model"] == "gpt-4.1" and rec.json["tools"][0]["function"]["name"] == "memory_insert"
    assert openai_server.counters["chat"] == 1 and openai_server.counters["models"] == 1
    assert openai_server.wait_for(1, "chat", timeout=0.1) and not openai_server.wait_for(2, "chat", timeout=0.05)
    openai_server.clear()
    assert openai_server.requests == [] and openai_server.counters["chat"] == 0


def test_fault_rate_is_seeded_and_counted() -> None:
    def run() -> list[int]:
        statuses = []
        with ScriptedOpenAI() as server:
            server.fault_rate(0.5, seed=3, kinds=["500", "503"])
            for _ in range(20):
                req = urllib.request.Request(
                    server.base_url + "/chat/completions",
                    method="POST",
                    data=json.dumps({"model": "m", "messages": MSGS}).encode(),
                    headers={"Content-Type": "application/json"},
                )
                try:
                    with urllib.request.urlopen(req, timeout=5) as resp:
                        statuses.append(resp.status)
                except urllib.error.HTTPError as exc:
                    statuses.append(exc.code)
            assert server.counters["faults"] == sum(s != 200 for s in statuses)
        return statuses

    first = run()
    assert first == run() and 3 < first.count(200) < 17 and set(first) <= {200, 500, 503}


def test_latency_api_key_and_stop() -> None:
    server = ScriptedOpenAI(latency=0.1, api_key="sk-right").start()
    started = time.monotonic()
    with pytest.raises(openai.AuthenticationError):
        _client(server).chat.completions.create(model="gpt-4o-mini", messages=MSGS)
    right = openai.OpenAI(base_url=server.base_url, api_key="sk-right", max_retries=0)
    right.chat.completions.create(model="gpt-4o-mini", messages=MSGS)
    assert time.monotonic() - started >= 0.1
    server.stop()
    with pytest.raises(openai.APIConnectionError):
        right.chat.completions.create(model="gpt-4o-mini", messages=MSGS)


def test_concurrent_clients_each_get_one_scripted_step(openai_server: ScriptedOpenAI) -> None:
    openai_server.script(*(reply(f"r{i}") for i in range(40)))
    client = _client(openai_server)
    with ThreadPoolExecutor(16) as pool:
        got = list(
            pool.map(
                lambda _: client.chat.completions.create(model="m", messages=MSGS).choices[0].message.content, range(40)
            )
        )
    assert sorted(got) == sorted(f"r{i}" for i in range(40)) and openai_server.remaining == 0
