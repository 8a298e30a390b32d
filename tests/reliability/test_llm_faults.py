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

import re
import sqlite3
import time
from collections import Counter

import pytest

from support.openai_server import ScriptedOpenAI, fail, reply, stall  # type: ignore[import-not-found]

from . import _checks
from ._harness import batch_learner_responder, learned_once_problems

TIMEOUT, BUDGET, MAX_STEPS = 0.5, 1.0, 3
FAULTS = [
    "429",  # with Retry-After: 0 and retry-after-ms: 10
    fail(429),  # without Retry-After: our backoff
    "500", "503", "drop", "invalid_json",
    stall(TIMEOUT + 0.7),  # past the client timeout
    reply(tool_calls=[("memory_insert", '{"label": "human", "new_str": ')]),  # garbage arguments
    reply(tool_calls=[("drop_all_tables", {"label": "human"})]),  # an unknown tool
    reply(tool_calls=[("memory_replace", {"label": "nope", "old_str": 1, "new_str": None})]),  # wrong types
]
CLEAR_ERROR = re.compile(r"HTTP \d{3}|timed out|connection to the LLM endpoint|invalid response|max_steps|"
                         r"without choices", re.I)


def _messages(batch_no: int) -> list[dict[str, str]]:
    return [{"role": "user", "content": f"batch B{batch_no}-M0 says hello"},
            {"role": "assistant", "content": f"B{batch_no}-M1 hello back"}]


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_thirty_percent_faults_every_run_ends_and_no_block_is_corrupted(make_memory, tmp_path, capsys):
    with ScriptedOpenAI(latency=0.05) as server:
        server.responder = batch_learner_responder
        server.fault_rate(0.3, seed=7, kinds=FAULTS)
        path = str(tmp_path / "faults.db")
        mem = make_memory(path=path, learner="llm", llm_base_url=server.base_url, llm_api_key="sk-test",
                          llm_timeout=TIMEOUT, llm_retry_budget=BUDGET, max_steps=MAX_STEPS, history_limit=0,
                          poll_interval=0.05)
        subjects, per_subject = 40, 8
        for s in range(subjects):
            mem.initialize_user_memory(f"s{s}", user_context_block_char_limit=100_000)
        t0 = time.monotonic()
        runs = {}
        for b in range(subjects * per_subject):
            runs[mem.add_messages(f"s{b % subjects}", _messages(b))] = b
            time.sleep(0.02)  # batches keep arriving while passes fail around them
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            states = Counter(mem.get_run(r).status for r in runs)
            if states["queued"] + states["running"] == 0:
                break
            time.sleep(0.2)
        elapsed = time.monotonic() - t0
        counters = dict(server.counters)
    final = {r: mem.get_run(r) for r in runs}
    states = Counter(run.status for run in final.values())
    errors = Counter(CLEAR_ERROR.search(run.error or "").group(0).split(" ")[0] if run.error and
                     CLEAR_ERROR.search(run.error) else run.error for run in final.values() if run.status == "failed")
    with capsys.disabled():
        print(f"\n[reliability] LLM faults at 30 %: {len(runs)} runs -> {dict(states)} in {elapsed:.1f} s; "
              f"chat calls {counters.get('chat')}, faults {counters.get('faults')}; failure kinds {dict(errors)}")
    assert states["queued"] == states["running"] == 0, f"runs left unfinished: {states}"
    assert set(states) <= {"completed", "failed"}
    assert states["completed"] > len(runs) // 2 and states["failed"] > 0, states
    for run in final.values():
        if run.status == "failed":
            assert run.error and CLEAR_ERROR.search(run.error), f"unclear error: {run.error!r}"
            assert run.stop_reason in ("llm_error", "max_steps"), run.stop_reason
        # bounded: the retry budget, plus every step's last attempt (a stall is cut at the timeout)
        assert (run.finished_at - run.started_at).total_seconds() < BUDGET + MAX_STEPS * (TIMEOUT + 1.0) + 5
    mem.close()
    assert _checks.invariant_problems(path) == []
    conn = sqlite3.connect(path)
    try:
        completed = {b for r, b in runs.items() if final[r].status == "completed"}
        failed = {b for r, b in runs.items() if final[r].status == "failed"}
        problems = learned_once_problems(conn, completed)
        learned = {int(m) for (v,) in conn.execute("SELECT value FROM blocks WHERE label='human'")
                   for m in re.findall(r"^learned B(\d+)$", v, re.M)}
    finally:
        conn.close()
    assert problems == []
    assert not learned & failed, f"failed passes changed blocks: {sorted(learned & failed)[:10]}"


@pytest.mark.parametrize("kind", ["503", "429", "drop", "invalid_json", "stall", "garbage", "unknown_tool"])
def test_an_endpoint_that_always_fails_fails_the_run_in_bounded_time(make_memory, tmp_path, kind):
    """Nothing is retried forever: the retry budget (transient errors) or max_steps (bad tool calls) ends it."""
    steps = {"503": fail(503), "429": fail(429, headers={"Retry-After": "0.2"}), "drop": "drop",
             "invalid_json": "invalid_json", "stall": stall(TIMEOUT + 0.7),
             "garbage": reply(tool_calls=[("memory_rethink", "{{{")]),
             "unknown_tool": reply(tool_calls=[("format_disk", {})])}
    with ScriptedOpenAI() as server:
        server.fault_rate(1.0, seed=1, kinds=[steps[kind]])
        mem = make_memory(path=str(tmp_path / "f.db"), learner="llm", llm_base_url=server.base_url,
                          llm_api_key="sk-test", llm_timeout=TIMEOUT, llm_retry_budget=BUDGET, max_steps=MAX_STEPS)
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
