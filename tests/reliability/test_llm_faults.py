"""LLM faults: a scripted endpoint that fails 30 % of chat calls at random.

Faults: 429 with and without ``Retry-After``, 500, 503, dropped connections,
stalls past the client timeout, invalid JSON, tool calls with garbage
arguments, unknown tools and wrong argument types. With small budgets
(``llm_timeout``, ``llm_retry_budget``, ``max_steps``) every run must end
``completed`` or ``failed`` with a clear error, within a bounded time (nothing
retried forever, nothing stuck ``running``); a failed pass changes no block
and a completed one is applied exactly once.
"""

from __future__ import annotations

import time

import pytest
from support.openai_server import ScriptedOpenAI, fail, reply, stall

from ._harness import CLEAR_ERROR, FAULT_BUDGET, FAULT_MAX_STEPS, FAULT_TIMEOUT, fault_campaign

TIMEOUT, BUDGET, MAX_STEPS = FAULT_TIMEOUT, FAULT_BUDGET, FAULT_MAX_STEPS


def _messages(batch_no: int) -> list[dict[str, str]]:
    return [
        {"role": "user", "content": f"batch B{batch_no}-M0 says hello"},
        {"role": "assistant", "content": f"B{batch_no}-M1 hello back"},
    ]


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_thirty_percent_faults_every_run_ends_and_no_block_is_corrupted(tmp_path, capsys):
    with ScriptedOpenAI(latency=0.05) as server:
        report = fault_campaign(str(tmp_path / "faults.db"), server, subjects=40, per_subject=8, rate=0.3)
    with capsys.disabled():
        print("\n[reliability] LLM faults at 30 %:", report.figures())
    assert report.problems == []  # every run ended clearly, in bounded time; failed passes changed nothing
    assert report.states.get("completed", 0) > report.runs // 2 and report.states.get("failed", 0) > 0, report.states
    assert report.faults > 30


@pytest.mark.parametrize("kind", ["503", "429", "drop", "invalid_json", "stall", "garbage", "unknown_tool"])
def test_an_endpoint_that_always_fails_fails_the_run_in_bounded_time(make_memory, tmp_path, kind):
    """Nothing is retried forever: the retry budget (transient errors) or max_steps (bad tool calls) ends it."""
    steps = {
        "503": fail(503),
        "429": fail(429, headers={"Retry-After": "0.2"}),
        "drop": "drop",
        "invalid_json": "invalid_json",
        "stall": stall(TIMEOUT + 0.7),
        "garbage": reply(tool_calls=[("memory_rethink", "{{{")]),
        "unknown_tool": reply(tool_calls=[("format_disk", {})]),
    }
    with ScriptedOpenAI() as server:
        server.fault_rate(1.0, seed=1, kinds=[steps[kind]])
        mem = make_memory(
            path=str(tmp_path / "f.db"),
            learner="llm",
            llm_base_url=server.base_url,
            llm_api_key="sk-test",
            llm_timeout=TIMEOUT,
            llm_retry_budget=BUDGET,
            max_steps=MAX_STEPS,
        )
        mem.initialize_user_memory("u", user_context_block_value="Name: Ann")
        t0 = time.monotonic()
        run_id = mem.add_messages("u", _messages(1))
        with pytest.raises(Exception) as info:
            mem.wait_for_run(run_id, timeout=60)
        took = time.monotonic() - t0
        run = mem.get_run(run_id)
    assert run.status == "failed" and type(info.value).__name__ == "RunFailedError"
    assert CLEAR_ERROR.search(run.error or ""), run.error
    assert run.stop_reason == ("max_steps" if kind in ("garbage", "unknown_tool") else "llm_error")
    assert took < BUDGET + MAX_STEPS * (TIMEOUT + 1.0) + 5
    assert mem.get_user_memory("u") == "Name: Ann" and mem.block_history("human", subject_id="u")[-1].run_id is None
