"""The memory agent with a real local model in the loop (SmolLM2-135M behind llama.cpp's OpenAI server).

The ``llama`` tests point ``Memory`` at the server exactly as a user points it at Ollama or
vLLM: ``OPENAI_BASE_URL`` and ``AI_MEMORY_MODEL`` in the environment, no API key. A
recording proxy on 127.0.0.1 sits between them so every pass can be replayed
(tests/support/agent_audit.py): whatever the model says, the tool rules of docs/memory-agent.md must hold. The model is
tiny and its calls mostly nonsense, which is the point: every pass ends, no block is ever
anything but valid calls applied in order, every refused call is answered ``Error:``
where the model can see it, and nothing outside the blocks changes.

The other tests pin, against the scripted server, the agent behaviour that the real
model made necessary; they run without llama.cpp.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from support.agent_audit import RecordingProxy, audit_run, block_state, conversation_batches
from support.llama_server import LlamaServer
from support.openai_server import ScriptedOpenAI, fail, reply

from ai_memory_sdk import Memory
from ai_memory_sdk.errors import RunFailedError
from ai_memory_sdk.learners.llm import string_bounds, tool_schemas

HUMAN = 'Name: Caroline\nMotto: "be yourself" <always>'
FINISH = ("memory_finish_edits", {})
MAX_PASSES = 4  # a pass is 1 to 3 LLM calls of 2-30 s each on a loaded 2-core box
TIME_BUDGET = 100.0  # seconds of passes; no new pass starts after it (at least 2 always run)
# Block limits under 1,000 characters: every string argument then carries maxLength (see tool_schemas),
# and a rambling argument costs at most a few hundred tokens.
HUMAN_LIMIT, SUMMARY_LIMIT = 600, 300


# ----------------------------------------------------------------------------- the real model
@pytest.fixture
def proxy(llama_server: LlamaServer) -> Iterator[RecordingProxy]:
    with RecordingProxy(llama_server.base_url) as p:
        yield p


@pytest.mark.llama
@pytest.mark.timeout(420)
def test_contract_holds_whatever_the_model_says(
    tmp_path: Path, proxy: RecordingProxy, llama_server: LlamaServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_BASE_URL", proxy.base_url)
    monkeypatch.setenv("AI_MEMORY_MODEL", llama_server.model)
    mem = Memory(path=str(tmp_path / "m.db"), embedder="none", max_steps=3, llm_timeout=240.0)
    try:
        uid = "caroline"
        mem.initialize_user_memory(
            uid,
            user_context_block_char_limit=HUMAN_LIMIT,
            user_context_block_value=HUMAN,
            summary_block_char_limit=SUMMARY_LIMIT,
        )
        mem.initialize_user_memory("bystander", user_context_block_value="Name: Bob")
        bystander = (mem.list_blocks("bystander"), mem.get_messages("bystander"))
        _, limits, descriptions = block_state(mem, uid)
        sent: list[dict[str, Any]] = []
        audits = []
        started = time.monotonic()
        for n, (_, batch) in enumerate(conversation_batches(size=6, limit=MAX_PASSES)):
            if n >= 2 and time.monotonic() - started > TIME_BUDGET:
                break
            before, _, _ = block_state(mem, uid)
            t0 = time.monotonic()
            run = mem.add_messages(uid, batch)
            try:
                mem.wait_for_run(run, timeout=300)
            except RunFailedError:
                pass
            sent += batch
            audit = audit_run(mem, uid, run, proxy.take(), before, limits, time.monotonic() - t0)
            audits.append(audit)
            print(
                f"pass {n + 1}: {audit.status} ({audit.stop_reason}), {audit.llm_calls} LLM call(s),"
                f" {audit.valid_calls}/{audit.calls} valid tool call(s) {audit.tools}, {audit.request_bytes} B,"
                f" {audit.seconds:.1f}s"
            )
            assert not audit.problems, audit.problems
            assert audit.status == "completed" or audit.stop_reason == "max_steps", mem.get_run(run).error
            assert 1 <= audit.llm_calls <= 3
            assert set(audit.statuses) == {200}, audit.statuses  # the server took every request the agent sent
        # nothing outside the blocks: labels, descriptions, limits, messages, the other subject
        values, now_limits, now_descriptions = block_state(mem, uid)
        assert (now_limits, now_descriptions) == (limits, descriptions)
        assert [(m.role, m.name, m.content) for m in mem.get_messages(uid)] == [
            (m["role"], m["name"], m["content"]) for m in sent
        ]
        assert (mem.list_blocks("bystander"), mem.get_messages("bystander")) == bystander
        completed = {a.run_id for a in audits if a.status == "completed"}
        for label in values:
            assert all(v.run_id is None or v.run_id in completed for v in mem.block_history(label, subject_id=uid))
        print(
            f"{len(audits)} passes, {sum(a.calls for a in audits)} tool calls,"
            f" {sum(a.valid_calls for a in audits)} valid; final blocks {values!r}"
        )
    finally:
        mem.close()


# ----------------------------------------------------------------------------- what it made necessary
@pytest.fixture
def make(tmp_path: Path, openai_server: ScriptedOpenAI) -> Iterator[Callable[..., Memory]]:
    made: list[Memory] = []

    def build(**options: Any) -> Memory:
        options = {
            "path": str(tmp_path / "m.db"),
            "learner": "llm",
            "llm_base_url": openai_server.base_url,
            "embedder": "none",
            "llm_retry_budget": 5.0,
            **options,
        }
        made.append(Memory(**options))
        return made[-1]

    yield build
    for m in made:
        m.close()


def _requests(server: ScriptedOpenAI) -> list[dict[str, Any]]:
    return [r.json for r in server.chat_requests]


def test_step_answers_reach_the_model_in_the_user_turn(make, openai_server) -> None:
    """Some templates drop ``tool`` messages: the next user turn repeats the answers and shows the staged blocks."""
    mem = make(max_steps=3)
    mem.initialize_user_memory("u", user_context_block_value=HUMAN)
    openai_server.script(
        reply(
            tool_calls=[
                ("memory_insert", {"label": "human", "new_str": "Job: counsellor", "insert_line": -1}),
                ("memory_replace", {"label": "summary", "old_str": "x", "new_str": "y"}),
            ]
        ),
        reply(tool_calls=[("memory_insert", {"label": "summary", "new_str": "Talked about work."})]),
        reply(tool_calls=[FINISH]),
    )
    mem.wait_for_run(mem.add_messages("u", [{"role": "user", "content": "I work as a counsellor."}]), timeout=10)
    first, second, third = _requests(openai_server)
    assert second["messages"][0] == first["messages"][0] == third["messages"][0]  # a stable, cacheable prefix
    assert third["tools"] != first["tools"]  # the bounds follow the staged values
    user1, user2, user3 = (r["messages"][1]["content"] for r in (first, second, third))
    assert user2.startswith(user1 + "\nYour calls so far in this pass ran in order:\n")
    assert user3.startswith(user2.split("\nBlock human now")[0] + "\n3. memory_insert (summary): OK")  # appended
    assert "1. memory_insert (human): OK: block 'human' is now" in user2
    assert "2. memory_replace (summary): Error: old_str was not found in block 'summary': the block is empty" in user2
    assert f"Block human now ({len(HUMAN) + 16}/10000 chars):\n<human>\n{HUMAN}\nJob: counsellor\n</human>" in user2
    assert user2.endswith(
        "1 call(s) of your last response failed: fix them, or drop them if they do not matter,"
        " then call memory_finish_edits."
    )
    assert "Block summary now (18/1000 chars):\n<summary>\nTalked about work.\n</summary>" in user3
    assert "last step" not in user2 and user3.endswith(
        "If nothing else is worth keeping, call memory_finish_edits now.\nThis is the last step of the pass: call"
        " memory_finish_edits in this response, or no edit of this pass is kept."
    )
    assistant = second["messages"][2]
    assert assistant["role"] == "assistant" and assistant["content"] == ""  # llama.cpp answers 500 to null
    assert [m["role"] for m in second["messages"]] == ["system", "user", "assistant", "tool", "tool"]
    assert mem.get_user_memory("u") == HUMAN + "\nJob: counsellor" and mem.get_summary("u") == "Talked about work."


def test_raw_newlines_and_html_entities_are_repaired_only_when_safe(make, openai_server) -> None:
    mem = make()
    mem.initialize_user_memory("u", user_context_block_value=HUMAN)
    openai_server.script(
        reply(
            tool_calls=[
                # a grammar let a raw newline into the string: accepted (json strict=False)
                ("memory_insert", '{"label": "human", "new_str": "Pet: cat\nPet: dog", "insert_line": 1}'),
                # copied from an HTML-escaped prompt: unescaped, the one exact match
                (
                    "memory_replace",
                    {
                        "label": "human",
                        "old_str": "&#34;be yourself&#34; &lt;always&gt;",
                        "new_str": "&#34;stay kind&#34;",
                    },
                ),
                # no match even unescaped: refused, not guessed
                ("memory_replace", {"label": "human", "old_str": "&#34;be brave&#34;", "new_str": "x"}),
                # a literal entity that matches as sent is never unescaped
                ("memory_rethink", {"label": "summary", "new_memory": "Fish &amp; chips"}),
                ("memory_replace", {"label": "summary", "old_str": "&amp;", "new_str": "&amp;amp;"}),
                FINISH,
            ]
        ),
        reply(tool_calls=[FINISH]),
    )
    mem.wait_for_run(mem.add_messages("u", [{"role": "user", "content": "hi"}]), timeout=10)
    assert mem.get_user_memory("u") == 'Name: Caroline\nPet: cat\nPet: dog\nMotto: "stay kind"'
    assert mem.get_summary("u") == "Fish &amp;amp; chips"
    answers = [m["content"] for m in _requests(openai_server)[1]["messages"] if m["role"] == "tool"]
    assert [a.split(":")[0] for a in answers[:5]] == ["OK", "OK", "Error", "OK", "OK"]


def test_strings_are_bounded_where_a_grammar_can_take_it() -> None:
    from ai_memory_sdk.models import Block

    blocks = [
        Block(id="1", label="human", description="d", value="abc", limit=800, subject_id="u"),
        Block(id="2", label="summary", description="d", value="", limit=400, subject_id="u"),
    ]
    bounds = string_bounds(blocks)
    assert bounds == {
        "memory_replace.old_str": 3,
        "memory_replace.new_str": 800,
        "memory_insert.new_str": 796,
        "memory_rethink.new_memory": 800,
        "memory_insert.insert_line": 1,
    }
    assert string_bounds(blocks, {"human": "abc", "summary": "x" * 390})["memory_replace.old_str"] == 390

    def props(bounds: dict[str, int]) -> dict[str, dict[str, Any]]:
        return {
            f"{t['function']['name']}.{k}": p
            for t in tool_schemas(["human", "summary"], bounds=bounds)
            for k, p in t["function"]["parameters"]["properties"].items()
            if k != "label"
        }

    # one more than the bound: a string cut there by a grammar is always refused
    assert {k: p.get("maxLength", p.get("enum")) for k, p in props(bounds).items()} == {
        "memory_replace.old_str": 4,
        "memory_replace.new_str": 801,
        "memory_insert.new_str": 797,
        "memory_insert.insert_line": [-1, 0, 1],
        "memory_rethink.new_memory": 801,
    }
    many = string_bounds(blocks, {"human": "\n" * 30, "summary": ""})["memory_insert.insert_line"]
    assert many == 31 and "enum" not in props({"memory_insert.insert_line": many})["memory_insert.insert_line"]
    assert len(props({"memory_insert.insert_line": 30})["memory_insert.insert_line"]["enum"]) == 32
    # llama-cpp-python 0.3.36 crashes (SIGSEGV) on a grammar for maxLength 1001: larger bounds are left out
    big = props(string_bounds([blocks[0].model_copy(update={"limit": 10000}), blocks[1]]))
    assert big["memory_replace.old_str"]["maxLength"] == 4 and "maxLength" not in big["memory_rethink.new_memory"]
    assert props({"memory_rethink.new_memory": 999})["memory_rethink.new_memory"]["maxLength"] == 1000


def test_an_endpoint_refusing_maxlength_gets_none_from_then_on(make, openai_server) -> None:
    mem = make()
    mem.initialize_user_memory("u", user_context_block_char_limit=500, summary_block_char_limit=300)
    openai_server.script(
        fail(
            400,
            body={
                "error": {
                    "message": "Invalid schema for function 'memory_replace': In context=('properties',"
                    " 'old_str'), 'maxLength' is not permitted."
                }
            },
        ),
        reply(tool_calls=[("memory_insert", {"label": "human", "new_str": "Name: Ana"})]),
        reply(tool_calls=[FINISH]),
        reply(tool_calls=[FINISH]),
    )
    mem.wait_for_run(mem.add_messages("u", [{"role": "user", "content": "I'm Ana."}]), timeout=10)
    mem.wait_for_run(mem.add_messages("u", [{"role": "user", "content": "Bye."}]), timeout=10)
    refused, *rest = (json.dumps(r["tools"]) for r in _requests(openai_server))
    assert '"maxLength": 1}' in refused and '"strict": true' in refused
    assert len(rest) == 3 and all("maxLength" not in r and '"strict": true' in r for r in rest)
    assert mem.get_user_memory("u") == "Name: Ana"


def test_html_repair_never_overrides_a_match_as_sent() -> None:
    from ai_memory_sdk.learners.tools import EditSession
    from ai_memory_sdk.models import Block

    session = EditSession(
        {
            "human": Block(
                id="1", label="human", description="d", value="a x&lt;y, b x&lt;y, c x<y", limit=100, subject_id="u"
            )
        }
    )
    ok, answer = session.call("memory_replace", {"label": "human", "old_str": "x&lt;y", "new_str": "z"})
    assert not ok and "occurs 2 times" in answer
    ok, answer = session.call("memory_replace", {"label": "human", "old_str": "c x&lt;y", "new_str": "c z"})
    assert ok and session.values["human"] == "a x&lt;y, b x&lt;y, c z"
    assert session.ops[-1].args == {"label": "human", "old_str": "c x<y", "new_str": "c z"}  # replayable as applied
