"""Runs: waiting, timeouts, listing, cancelling, failing and retrying; order within a subject.

Timeouts and run states need a run that cannot complete on its own (``enqueue_only``: the
local engine with ``background=False``, drained by ``support.internals.drain``); failures
are made the offline learner's way (``offline_learner``: a fact over a block's limit). The
letta engine's own failure, cancelling and ordering tests are in tests/test_letta_engine.py.
"""

from __future__ import annotations

import itertools
import time
from datetime import datetime
from typing import Any

import pytest
from support import internals
from support.backends import Backend, MakeMemory
from support.openai_server import fail, reply
from support.scenario import CONVERSATION, unique_id

from ai_memory_sdk import Memory, Run, RunCancelledError, RunFailedError, RunNotFoundError, RunStateError


def test_wait_for_run_fast_completion(make_memory: MakeMemory, backend: Backend) -> None:
    memory = make_memory(subject_id=unique_id("user_test2"))
    memory.initialize_memory(label="test", description="Test", value="v", reset=True)
    run = memory.add_messages([{"role": "user", "content": "test"}])
    start = time.monotonic()
    memory.wait_for_run(run)  # default timeout (300 s)
    assert time.monotonic() - start < backend.fast_run_s, "a fast run should complete quickly"


def test_wait_for_run_unknown_id_raises_at_once(memory: Memory) -> None:
    start = time.monotonic()
    with pytest.raises(RunNotFoundError):
        memory.wait_for_run("run-00000000-0000-0000-0000-000000000000", timeout=30)
    assert time.monotonic() - start < 1.0
    with pytest.raises(RunNotFoundError):
        memory.get_run("run-does-not-exist")


@pytest.mark.needs("enqueue_only")
def test_wait_for_run_timeout(make_memory: MakeMemory) -> None:
    memory = make_memory(subject_id=unique_id("user_test"), background=False)
    memory.initialize_memory(label="test", description="Test block", value="initial", reset=True)
    run = memory.add_messages([{"role": "user", "content": "second"}])
    start = time.monotonic()
    with pytest.raises(TimeoutError) as exc_info:
        memory.wait_for_run(run, timeout=1)
    elapsed = time.monotonic() - start
    assert 0.9 <= elapsed < 2.5, elapsed
    assert run in str(exc_info.value) and "did not complete within" in str(exc_info.value)
    assert memory.get_run(run).status == "queued"


@pytest.mark.needs("enqueue_only")
def test_wait_for_run_timeout_message_matches_original(make_memory: MakeMemory) -> None:
    memory = make_memory(subject_id=unique_id("user_test"), background=False)
    run = memory.add_messages([{"role": "user", "content": "second"}])
    with pytest.raises(TimeoutError) as exc_info:
        memory.wait_for_run(run, timeout=1)
    assert "did not complete within 1 seconds" in str(exc_info.value)


@pytest.mark.needs("enqueue_only", "offline_learner")
def test_get_run_and_list_runs(make_memory: MakeMemory) -> None:
    producer = make_memory(background=False)
    uid = unique_id()
    r1 = producer.add_messages(uid, CONVERSATION)
    r2 = producer.add_messages(uid, [{"role": "user", "content": "I live in Oslo"}])
    run = producer.get_run(r1)
    assert isinstance(run, Run)
    assert run.id == r1 and run.subject_id == uid and run.status == "queued"
    assert run.started_at is None and run.finished_at is None and run.created_at is not None
    assert [r.id for r in producer.list_runs(uid)] == [r1, r2]
    assert [r.id for r in producer.list_runs(uid, status="queued")] == [r1, r2]
    assert producer.list_runs(uid, status="completed") == []
    with pytest.raises(ValueError):
        producer.list_runs(uid, status="bogus")

    assert internals.drain(producer) >= 1
    done = producer.get_run(r2)
    assert done.status == "completed" and done.learner == "offline" and done.error is None
    assert done.started_at is not None and done.finished_at is not None
    assert done.created_at <= done.started_at <= done.finished_at
    assert done.llm_calls == 0 and done.prompt_tokens == 0 and done.completion_tokens == 0
    assert [r.id for r in producer.list_runs(uid, status="completed")] == [r1, r2]
    producer.wait_for_run(r1, timeout=1)
    assert "Location: Oslo" in (producer.get_user_memory(uid) or "")


@pytest.mark.needs("enqueue_only")
def test_cancel_run(make_memory: MakeMemory) -> None:
    producer = make_memory(background=False)
    uid = unique_id()
    r1 = producer.add_messages(uid, [{"role": "user", "content": "My name is Carol"}])
    r2 = producer.add_messages(uid, [{"role": "user", "content": "I live in Rome"}])
    cancelled = producer.cancel_run(r1)
    assert cancelled.status == "cancelled" and cancelled.finished_at is not None
    with pytest.raises(RunCancelledError):
        producer.wait_for_run(r1, timeout=5)
    internals.drain(producer)
    producer.wait_for_run(r2, timeout=5)
    human = producer.get_user_memory(uid) or ""
    assert "Rome" in human and "Carol" not in human  # the cancelled batch was not learned
    assert next(m.content for m in producer.get_messages(uid)) == "My name is Carol"  # but stays stored
    with pytest.raises(RunStateError):
        producer.cancel_run(r2)  # completed
    with pytest.raises(ValueError):  # RunStateError is a ValueError
        producer.cancel_run(r1)
    with pytest.raises(RunNotFoundError):
        producer.cancel_run("run-unknown")


@pytest.mark.needs("scripted_llm")  # letta: tests/test_letta_engine.py fails a run through its own server's LLM
def test_failed_run_retry(make_memory: MakeMemory, openai_server: Any) -> None:
    """A failed run changes no block, holds nothing back, and ``retry_run`` learns it once the cause is gone."""
    uid = unique_id()
    llm = openai_server
    memory = make_memory(learner="llm", llm_base_url=llm.base_url, llm_api_key="sk-test")
    memory.initialize_user_memory(uid)
    llm.script(fail(400))  # the endpoint refuses the pass: the run fails at once
    bad = memory.add_messages(uid, [{"role": "user", "content": "My name is Bartholomew and I live in San Francisco"}])
    with pytest.raises(RunFailedError) as exc_info:
        memory.wait_for_run(bad, timeout=10)
    failed = memory.get_run(bad)
    assert failed.status == "failed" and failed.error and exc_info.value.run.id == bad
    assert failed.stop_reason
    assert memory.get_user_memory(uid) == ""  # a failed pass changes no block (never truncated)
    # a failed run does not hold back the subject's later runs
    llm.script(reply(tool_calls=[("memory_finish_edits", {})]))
    later = memory.add_messages(uid, [{"role": "user", "content": "hello there"}])
    memory.wait_for_run(later, timeout=10)
    assert memory.get_run(later).status == "completed"
    with pytest.raises(RunStateError):
        memory.retry_run(later)  # only a failed run can be retried
    with pytest.raises(RunNotFoundError):
        memory.retry_run("run-unknown")
    # the cause is gone (the endpoint answers): retry, the run is learned
    llm.script(
        reply(
            tool_calls=[
                ("memory_insert", {"label": "human", "new_str": "Name: Bartholomew"}),
                ("memory_finish_edits", {}),
            ]
        )
    )
    requeued = memory.retry_run(bad)
    assert requeued.status in ("queued", "running", "completed") and requeued.error is None
    memory.wait_for_run(bad, timeout=10)
    assert "Bartholomew" in (memory.get_user_memory(uid) or "")


@pytest.mark.needs("enqueue_only", "scripted_llm")
def test_failed_run_does_not_fail_runs_queued_behind_it(make_memory: MakeMemory, openai_server: Any) -> None:
    def answer(req: dict[str, Any]) -> Any:  # a pass over the bad batch never finishes (max_steps)
        if "Bartholomew" in str(req["messages"]):
            return reply(tool_calls=[("memory_replace", {"label": "human", "old_str": "nowhere", "new_str": "x"})])
        return reply(tool_calls=[("memory_finish_edits", {})])

    openai_server.responder = answer
    producer = make_memory(
        background=False, learner="llm", llm_base_url=openai_server.base_url, llm_api_key="sk-test", max_steps=2
    )
    uid = unique_id()
    producer.initialize_user_memory(uid)
    bad = producer.add_messages(uid, [{"role": "user", "content": "My name is Bartholomew and I live in Paris"}])
    good = producer.add_messages(uid, [{"role": "user", "content": "hello there"}])
    internals.drain(producer)
    assert producer.get_run(bad).status == "failed"
    assert producer.get_run(good).status == "completed"


def test_runs_of_one_subject_apply_in_order_never_two_at_once(memory: Memory, backend: Backend) -> None:
    uid = unique_id()
    cities = [f"City{i:02d}" for i in range(25)]
    runs = [memory.add_messages(uid, [{"role": "user", "content": f"I live in {c}"}]) for c in cities]
    for run in runs:
        memory.wait_for_run(run, timeout=30)
    assert "Location: City24" in (memory.get_user_memory(uid) or "")
    if not backend.has("pass_spans"):
        return
    # A consolidation run may be queued automatically when a block fills up (when is up to the timing of passes).
    listed = [r for r in memory.list_runs(uid) if r.kind == "learn"]
    assert [r.id for r in listed] == runs
    passes: list[tuple[datetime, datetime]] = []
    for r in listed:
        assert r.started_at is not None and r.finished_at is not None
        span = (r.started_at, r.finished_at)
        if not passes or passes[-1] != span:  # coalesced runs share one pass
            passes.append(span)
    for (_s1, f1), (s2, _f2) in itertools.pairwise(passes):
        assert f1 <= s2, "two passes of one subject overlapped or ran out of order"


def test_subjects_are_learned_independently(memory: Memory) -> None:
    users = [unique_id() for _ in range(6)]
    runs = [memory.add_messages(u, [{"role": "user", "content": f"My name is Person{i}"}]) for i, u in enumerate(users)]
    for run in runs:
        memory.wait_for_run(run, timeout=30)
    for i, u in enumerate(users):
        assert memory.get_user_memory(u) == f"Name: Person{i}"
