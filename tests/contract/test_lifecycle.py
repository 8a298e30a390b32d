"""Lifecycle: close, the context manager, background workers and a throwaway ``:memory:`` store."""

from __future__ import annotations

from pathlib import Path

import pytest
from support import internals
from support.backends import MakeMemory
from support.scenario import CONVERSATION, unique_id


@pytest.mark.needs("enqueue_only")
def test_close_and_context_manager_keep_queued_runs(make_memory: MakeMemory) -> None:
    uid = unique_id()
    with make_memory(background=False) as producer:
        run = producer.add_messages(uid, [{"role": "user", "content": "My name is Frank"}])
    producer.close()  # idempotent
    worker = make_memory()  # background workers resume what is queued
    worker.wait_for_run(run, timeout=10)
    assert worker.get_user_memory(uid) == "Name: Frank"


@pytest.mark.needs("enqueue_only")
def test_close_finishes_work_in_progress(make_memory: MakeMemory) -> None:
    memory = make_memory()
    uid = unique_id()
    runs = [memory.add_messages(uid, [{"role": "user", "content": f"I live in Town{i}"}]) for i in range(20)]
    memory.close()
    reader = make_memory(background=False)
    statuses = {reader.get_run(r).status for r in runs}
    assert statuses <= {"queued", "completed"}, statuses  # nothing left half-done in 'running'
    if "queued" in statuses:
        internals.drain(reader)
    assert {reader.get_run(r).status for r in runs} == {"completed"}
    assert "Location: Town19" in (reader.get_user_memory(uid) or "")


@pytest.mark.needs("enqueue_only")
def test_idle_background_memory_processes_runs_enqueued_elsewhere(make_memory: MakeMemory) -> None:
    worker = make_memory()  # background workers on, nothing queued yet
    producer = make_memory(background=False)
    run = producer.add_messages(unique_id(), [{"role": "user", "content": "My name is Gina"}])
    worker.wait_for_run(run, timeout=2)


@pytest.mark.needs("sqlite_file")
def test_throwaway_memory_path(make_memory: MakeMemory) -> None:
    memory = make_memory(path=":memory:")
    uid = unique_id()
    memory.wait_for_run(memory.add_messages(uid, CONVERSATION))
    assert "Bob" in (memory.get_user_memory(uid) or "")
    path = Path(internals.db_path(memory))
    assert path.exists()
    memory.close()
    assert not path.exists()
