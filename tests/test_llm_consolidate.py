"""The LLM learner's consolidation pass, limit refusals and trace, against the scripted server on 127.0.0.1."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from support.openai_server import ScriptedOpenAI, reply

from ai_memory_sdk.config import Settings
from ai_memory_sdk.errors import LearnerError
from ai_memory_sdk.learners import PassInput
from ai_memory_sdk.learners.llm import LLMLearner, build_request, consolidate_messages
from ai_memory_sdk.models import Block, StoredMessage

NOW = datetime(2025, 3, 14, 9, 30, tzinfo=timezone.utc)
FINISH = ("memory_finish_edits", {})
HUMAN_DESCRIPTION = "Details about the human user you are speaking to."
SUMMARY_DESCRIPTION = "A short (1-2 sentences) running summary of the conversation."
REFERENCE_BATCH = [  # 10 messages of about 80 characters (the request-size reference batch)
    ("user", "Hi! I'm Priya, I just moved to Lisbon from Toronto for a new job at a fintech."),
    ("assistant", "Welcome to Lisbon, Priya! How are you finding the city so far? Settling in ok?"),
    ("user", "Loving it, though the hills are brutal. I cycle to work, so my legs are dying."),
    ("assistant", "Lisbon's hills are famous. An e-bike might help. What do you do at the firm?"),
    ("user", "I'm a backend engineer, mostly Go and Postgres. Team of six, very relaxed vibe."),
    ("assistant", "Sounds like a nice team. Go and Postgres are a solid pair for payments work."),
    ("user", "My sister Anika visits next Friday; I want to take her somewhere for fado music."),
    ("assistant", "Alfama has the most traditional fado houses. Book ahead on weekend evenings."),
    ("user", "Great tip. Also I'm vegetarian, so any restaurant ideas should keep that in mind."),
    ("assistant", "Noted: vegetarian. I'll suggest places with good meat-free options next time."),
]


def _learner(server: ScriptedOpenAI, **options: Any) -> LLMLearner:
    settings = Settings(llm_base_url=server.base_url, llm_api_key="sk-test", llm_retry_budget=5.0, **options)
    return LLMLearner(settings)


def _blocks(human: str = "", summary: str = "") -> list[Block]:
    return [
        Block(id="h", label="human", description=HUMAN_DESCRIPTION, value=human, limit=10000, subject_id="s"),
        Block(id="s", label="summary", description=SUMMARY_DESCRIPTION, value=summary, limit=1000, subject_id="s"),
    ]


def _filled(chars: int, prefix: str) -> str:
    lines, i = [], 0
    while sum(len(x) + 1 for x in lines) < chars:
        lines.append(f"{prefix} {i:04d}: the user mentioned something durable about topic {i} on 2025-01-01")
        i += 1
    return "\n".join(lines)[:chars]


def _messages() -> list[StoredMessage]:
    return [
        StoredMessage(id=f"m{i}", role=role, content=text, created_at=NOW - timedelta(minutes=10 - i))
        for i, (role, text) in enumerate(REFERENCE_BATCH)
    ]


def test_consolidation_sends_the_blocks_only_and_applies_the_rewrite(openai_server: ScriptedOpenAI) -> None:
    human = "Name: Sam\nCity: Paris (2024-01-02)\nname: Sam\nCity: Lyon (2025-03-01)\nLikes: tea\nLikes: jazz"
    openai_server.script(
        reply(
            tool_calls=[
                (
                    "memory_rethink",
                    {"label": "human", "new_memory": "Name: Sam\nCity: Lyon (2025-03-01)\nLikes: tea; jazz"},
                ),
                FINISH,
            ],
            usage={"prompt_tokens": 900, "completion_tokens": 40},
        )
    )
    out = _learner(openai_server).consolidate(PassInput("s", _blocks(human, "Talked about tea."), [], NOW))
    assert out.values == {"human": "Name: Sam\nCity: Lyon (2025-03-01)\nLikes: tea; jazz"}
    assert (out.llm_calls, out.prompt_tokens, out.completion_tokens, out.stop_reason) == (1, 900, 40, "end_turn")
    (sent,) = openai_server.chat_requests
    system, user = (m["content"] for m in sent.json["messages"])
    assert "consolidation pass" in system and "Targets (chars): human 5000, summary 500." in system
    assert "newer fact" in system and "Never drop a fact that still stands" in system
    assert f'chars="{len(human)}/10000"' in system and human in system and "Talked about tea." in system
    assert "<messages>" not in system + user and user.startswith("Consolidate the memory blocks now")
    assert "2025-03-14 09:30" in user
    assert [t["function"]["name"] for t in sent.json["tools"]] == [
        "memory_replace",
        "memory_insert",
        "memory_rethink",
        "memory_finish_edits",
    ]


def test_consolidation_runs_the_same_loop_with_answers_and_step_limit(openai_server: ScriptedOpenAI) -> None:
    openai_server.script(
        reply(tool_calls=[("memory_replace", {"label": "human", "old_str": "City: Rome", "new_str": "x"})]),
        reply(tool_calls=[("memory_replace", {"label": "human", "old_str": "City: Paris", "new_str": "City: Lyon"})]),
        reply(tool_calls=[("memory_insert", {"label": "summary", "new_str": "more"})]),
    )
    with pytest.raises(LearnerError) as err:
        _learner(openai_server, max_steps=3).consolidate(PassInput("s", _blocks("City: Paris"), [], NOW))
    assert err.value.stop_reason == "max_steps" and err.value.stats["llm_calls"] == 3
    second = openai_server.chat_requests[1].json["messages"]
    assert [m["role"] for m in second] == ["system", "user", "assistant", "tool"]
    assert second[3]["content"].startswith("Error: old_str was not found")
    assert "Your calls so far in this pass ran in order" in second[1]["content"]
    assert "Consolidate the memory blocks now" in second[1]["content"]
    assert "This is the last step" in openai_server.chat_requests[2].json["messages"][1]["content"]


def test_consolidation_of_empty_blocks_makes_no_call(openai_server: ScriptedOpenAI) -> None:
    out = _learner(openai_server).consolidate(PassInput("s", _blocks(), [], NOW))
    assert out.values == {} and out.llm_calls == 0 and not openai_server.chat_requests


def test_consolidation_request_size_for_blocks_filled_to_90_percent(openai_server: ScriptedOpenAI) -> None:
    blocks = _blocks(_filled(9000, "Fact"), _filled(900, "Note"))
    assert [len(b.value) for b in blocks] == [9000, 900]
    request = build_request(
        PassInput("s", blocks, [], NOW), "gpt-4.1-mini", messages=consolidate_messages(PassInput("s", blocks, [], NOW))
    )
    size = len(json.dumps(request).encode())
    openai_server.script(reply(tool_calls=[FINISH]))
    _learner(openai_server).consolidate(PassInput("s", blocks, [], NOW))
    sent = len(openai_server.chat_requests[0].body)
    print(  # shown with pytest -s
        f"\nconsolidation request, default blocks at 90%: {sent} bytes sent ({size} as built)"
    )
    overhead = sent - 9900  # everything but the blocks' own text
    assert abs(sent - size) < 200 and overhead < 4500, (sent, overhead)


def test_an_edit_over_the_limit_is_refused_and_counted(openai_server: ScriptedOpenAI) -> None:
    openai_server.script(
        reply(
            tool_calls=[
                ("memory_rethink", {"label": "summary", "new_memory": "s" * 1001}),
                ("memory_insert", {"label": "summary", "new_str": "t" * 1001}),
                ("memory_insert", {"label": "human", "new_str": "Name: Priya"}),
                FINISH,
            ]
        ),
        reply(tool_calls=[("memory_rethink", {"label": "summary", "new_memory": "Priya moved to Lisbon."}), FINISH]),
    )
    out = _learner(openai_server).learn(PassInput("s", _blocks(), _messages(), NOW))
    assert out.values == {"human": "Name: Priya", "summary": "Priya moved to Lisbon."}
    assert out.limit_refusals == 2 and out.llm_calls == 2


def test_trace_records_each_step_compactly(openai_server: ScriptedOpenAI) -> None:
    openai_server.script(
        reply(
            tool_calls=[
                ("memory_insert", {"label": "human", "new_str": "Name: Priya\nCity: Lisbon"}),
                ("memory_replace", {"label": "human", "old_str": "Toronto", "new_str": "x"}),
            ],
            usage={"prompt_tokens": 1500, "completion_tokens": 60},
        ),
        reply(tool_calls=[FINISH], usage={"prompt_tokens": 1700, "completion_tokens": 5}),
    )
    out = _learner(openai_server).learn(PassInput("s", _blocks(), _messages(), NOW))
    first, second = out.trace
    sent = [r.json for r in openai_server.chat_requests]
    assert first["step"] == 1 and first["request"]["messages"] == [
        {"index": i, **m} for i, m in enumerate(sent[0]["messages"])
    ]
    assert first["request"]["tools"] == ["memory_replace", "memory_insert", "memory_rethink", "memory_finish_edits"]
    assert first["response"]["tool_calls"] == [
        {"id": c["id"], "name": c["function"]["name"], "arguments": c["function"]["arguments"]}
        for c in sent[1]["messages"][2]["tool_calls"]
    ]
    assert [a["answer"][:5] for a in first["answers"]] == ["OK: b", "Error"]
    assert first["usage"] == {"prompt_tokens": 1500, "completion_tokens": 60}
    # step 2: what the user turn gained; the echoed response and answers by reference; no system prompt again
    before, after = sent[0]["messages"][1]["content"], sent[1]["messages"][1]["content"]
    assert after.startswith(before)  # the user turn only grew: the trace keeps what was added
    assert second["request"]["messages"] == [
        {"index": 1, "role": "user", "prefix_chars": len(before), "content_tail": after[len(before) :]},
        {"index": 2, "role": "assistant", "echo": "response"},
        {"index": 3, "role": "tool", "echo": "answer", "tool_call_id": first["answers"][0]["tool_call_id"]},
        {"index": 4, "role": "tool", "echo": "answer", "tool_call_id": first["answers"][1]["tool_call_id"]},
    ]
    assert second["response"]["tool_calls"][0]["name"] == "memory_finish_edits"
    json.dumps(out.trace)  # JSON-able


def test_trace_size_for_the_reference_batch(openai_server: ScriptedOpenAI) -> None:
    edits = [
        (
            "memory_insert",
            {"label": "human", "new_str": "Name: Priya\nCity: Lisbon (from Toronto)\nJob: backend engineer"},
        ),
        ("memory_rethink", {"label": "summary", "new_memory": "Priya moved to Lisbon; sister Anika visits."}),
        FINISH,
    ]
    openai_server.script(reply(tool_calls=edits))
    out = _learner(openai_server).learn(PassInput("s", _blocks(), _messages(), NOW))
    size = len(json.dumps(out.trace).encode())
    body = len(openai_server.chat_requests[0].body)
    print(  # shown with pytest -s
        f"\ntrace of a one-step pass over the reference batch: {size} bytes (request body {body} bytes)"
    )
    assert size < body  # no tool schemas in the trace


def test_arguments_with_an_integer_past_pythons_digit_limit_are_refused_as_invalid_json() -> None:
    from ai_memory_sdk.learners.tools import EditSession

    session = EditSession({b.label: b for b in _blocks("Name: Sam")})
    ok, answer = session.call("memory_insert", '{"label": "human", "new_str": "x", "insert_line": ' + "9" * 5000 + "}")
    assert not ok and answer.startswith("Error: arguments are not valid JSON (Exceeds the limit")
    assert session.values["human"] == "Name: Sam" and session.limit_refusals == 0
