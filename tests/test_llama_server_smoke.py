"""The real ``openai`` client against a real small LLM (SmolLM2-135M) served on 127.0.0.1.

Needs ``bash .ci/setup-llama.sh``; without it these tests skip (or fail under CI).
Marker ``llama`` (registered in pyproject.toml: "llama: needs the llama.cpp server with
SmolLM2 (installed by .ci/setup-llama.sh)"). Select with ``pytest -m llama``.

Besides the happy path they pin down what this server version does with the parts of
the tool-calling API that the memory agent may send, so an upgrade that changes them
shows up here rather than as a puzzling agent failure.
"""

from __future__ import annotations

import json
import time
from typing import Any

import openai
import pytest
from support.llama_server import LlamaServer, find_model

pytestmark = [pytest.mark.llama, pytest.mark.timeout(600)]

MEMORY_INSERT: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "memory_insert",
        "description": "Insert text into a memory block at a given line.",
        "parameters": {
            "type": "object",
            "properties": {
                # maxLength bounds the grammar: without it this model, under the server's
                # default repeat_penalty 1.1, can fill the whole context with one string.
                "label": {"type": "string", "maxLength": 32, "description": "Block label, e.g. human"},
                "new_str": {"type": "string", "maxLength": 200, "description": "Text to insert"},
                "insert_line": {"type": "integer", "description": "Insert after this line; 0 for the top"},
            },
            "required": ["label", "new_str", "insert_line"],
        },
    },
}
MEMORY_REPLACE: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "memory_replace",
        "description": "Replace text in a memory block.",
        "parameters": {
            "type": "object",
            "properties": {
                "label": {"type": "string", "maxLength": 32},
                "old_str": {"type": "string", "maxLength": 200},
                "new_str": {"type": "string", "maxLength": 200},
            },
            "required": ["label", "old_str", "new_str"],
        },
    },
}
NAMED = {"type": "function", "function": {"name": "memory_insert"}}
# The chatml-function-calling template lists the tools only inside the system message.
MESSAGES: list[dict[str, Any]] = [
    {
        "role": "system",
        "content": "You are a memory agent. Save new facts about the user into the "
        "'human' memory block by calling memory_insert.\n<human>\n</human>",
    },
    {"role": "user", "content": "My name is Bob, I live in Paris and I love chess."},
]


def _client(server: LlamaServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.base_url, api_key="sk-local", max_retries=0, timeout=300)


def _check_insert_args(arguments: str) -> dict[str, Any]:
    """Arguments arrive as a JSON string shaped by the schema's grammar.

    strict=False: the grammar's string rule admits raw control characters (newlines),
    which strict JSON rejects.
    """
    args = json.loads(arguments, strict=False)
    assert isinstance(args, dict)
    assert isinstance(args["label"], str) and isinstance(args["new_str"], str)
    assert isinstance(args["insert_line"], int)
    return args


def _timed(server: LlamaServer, **kw: Any) -> tuple[Any, float]:
    t0 = time.monotonic()
    resp = _client(server).chat.completions.create(model=server.model, temperature=0, **kw)
    return resp, time.monotonic() - t0


def test_find_model_and_models_endpoint(llama_server: LlamaServer) -> None:
    assert find_model().suffix == ".gguf" and find_model().stat().st_size > 50_000_000
    assert llama_server.base_url.startswith("http://127.0.0.1:") and llama_server.base_url.endswith("/v1")
    ids = [m.id for m in _client(llama_server).models.list().data]
    assert llama_server.model in ids


def test_plain_chat_reports_usage(llama_server: LlamaServer) -> None:
    resp, elapsed = _timed(llama_server, messages=MESSAGES, max_tokens=32)
    msg = resp.choices[0].message
    assert msg.role == "assistant" and isinstance(msg.content, str)
    assert resp.usage is not None and resp.usage.prompt_tokens > 0 and resp.usage.completion_tokens > 0
    print(f"plain {elapsed:.2f}s: {msg.content!r} usage={resp.usage}")


def test_tool_choice_auto(llama_server: LlamaServer) -> None:
    resp, elapsed = _timed(llama_server, messages=MESSAGES, tools=[MEMORY_INSERT], tool_choice="auto", max_tokens=128)
    choice = resp.choices[0]
    print(f"auto {elapsed:.2f}s: {choice.model_dump_json(exclude_none=True)} usage={resp.usage}")
    if choice.message.tool_calls:
        assert choice.finish_reason == "tool_calls"
        for call in choice.message.tool_calls:
            assert call.type == "function" and call.id
            assert call.function.name == "memory_insert"
            _check_insert_args(call.function.arguments)
    else:  # the model may answer in text; the grammar allows exactly these two shapes
        assert isinstance(choice.message.content, str)


def test_tool_choice_named(llama_server: LlamaServer) -> None:
    resp, elapsed = _timed(llama_server, messages=MESSAGES, tools=[MEMORY_INSERT], tool_choice=NAMED, max_tokens=256)
    choice = resp.choices[0]
    print(f"named {elapsed:.2f}s: {choice.model_dump_json(exclude_none=True)} usage={resp.usage}")
    calls = choice.message.tool_calls
    assert calls and len(calls) == 1
    assert calls[0].function.name == "memory_insert"
    _check_insert_args(calls[0].function.arguments)
    assert resp.usage is not None and resp.usage.prompt_tokens > 0


# ---------------------------------------------------------------------------------------
# What this server version (llama-cpp-python 0.3.36, chatml-function-calling) does with
# the rest of the API. If one of these fails after an upgrade, the quirk is gone: update
# the notes in tests/support/llama_server.py and whatever the memory agent does about it.


def test_quirk_tool_choice_required_is_a_500(llama_server: LlamaServer) -> None:
    with pytest.raises(openai.InternalServerError):
        _timed(llama_server, messages=MESSAGES, tools=[MEMORY_INSERT], tool_choice="required", max_tokens=8)


def test_quirk_parallel_tool_calls_accepted_and_ignored(llama_server: LlamaServer) -> None:
    resp, _ = _timed(
        llama_server,
        messages=MESSAGES,
        tools=[MEMORY_INSERT, MEMORY_REPLACE],
        tool_choice=NAMED,
        parallel_tool_calls=True,
        max_tokens=8,
    )
    calls = resp.choices[0].message.tool_calls
    assert calls and calls[0].function.name == "memory_insert"
    # max_tokens cuts the grammar short: the arguments are then not valid JSON at all
    with pytest.raises(json.JSONDecodeError):
        json.loads(calls[0].function.arguments, strict=False)


def _assistant_call(**content: Any) -> dict[str, Any]:
    return {
        "role": "assistant",
        **content,
        "tool_calls": [
            {
                "id": "call_1",
                "type": "function",
                "function": {
                    "name": "memory_insert",
                    "arguments": json.dumps({"label": "human", "new_str": "Name: Bob", "insert_line": 0}),
                },
            }
        ],
    }


def test_quirk_assistant_tool_call_needs_string_content(llama_server: LlamaServer) -> None:
    for bad in ({"content": None}, {}):  # what openai's own message.model_dump() gives back, and omitted
        with pytest.raises(openai.InternalServerError):
            _timed(llama_server, messages=MESSAGES + [_assistant_call(**bad)], tool_choice="none", max_tokens=2)
    resp, _ = _timed(llama_server, messages=MESSAGES + [_assistant_call(content="")], max_tokens=2)
    assert resp.choices[0].message.role == "assistant"


def test_quirk_tool_results_never_reach_the_prompt(llama_server: LlamaServer) -> None:
    def prompt_tokens(result: str) -> int:
        tool_msg = {"role": "tool", "tool_call_id": "call_1", "content": result}
        resp, _ = _timed(
            llama_server,
            messages=MESSAGES + [_assistant_call(content=""), tool_msg],
            tools=[MEMORY_INSERT],
            tool_choice="none",
            max_tokens=1,
        )
        assert resp.usage is not None
        return resp.usage.prompt_tokens

    assert prompt_tokens("OK") == prompt_tokens("OK: inserted. " * 50)


def test_quirk_streaming(llama_server: LlamaServer) -> None:
    with openai.OpenAI(base_url=llama_server.base_url, api_key="sk-local", max_retries=0, timeout=300) as client:
        # plain streaming works, but stream_options.include_usage yields no usage chunk
        chunks = list(
            client.chat.completions.create(
                model=llama_server.model,
                messages=MESSAGES,
                max_tokens=4,
                temperature=0,
                stream=True,
                stream_options={"include_usage": True},
            )
        )
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert not any(c.usage for c in chunks)
        # a named tool streams its arguments as tool_call deltas
        chunks = list(
            client.chat.completions.create(
                model=llama_server.model,
                messages=MESSAGES,
                tools=[MEMORY_INSERT],
                tool_choice=NAMED,
                max_tokens=256,
                temperature=0,
                stream=True,
            )
        )
        args = "".join(
            tc.function.arguments or ""
            for c in chunks
            if c.choices
            for tc in (c.choices[0].delta.tool_calls or [])
            if tc.function
        )
        _check_insert_args(args)
    # tool_choice="auto" + stream: when the model picks a tool the server raises mid-stream;
    # the client sees an empty stream and no error (and the next request on that pooled
    # connection fails), so never stream with tool_choice="auto" here.
    with openai.OpenAI(base_url=llama_server.base_url, api_key="sk-local", max_retries=0, timeout=300) as client:
        chunks = list(
            client.chat.completions.create(
                model=llama_server.model,
                messages=MESSAGES,
                tools=[MEMORY_INSERT],
                tool_choice="auto",
                max_tokens=64,
                temperature=0,
                stream=True,
            )
        )
        assert chunks == []
