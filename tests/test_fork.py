"""docs/api.md: a Memory inherited by a forked child re-opens its connections and workers on first use."""

from __future__ import annotations

import faulthandler
import os
import signal
import sys
import threading
import time

import pytest


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_forked_child_reopens_connections_and_workers(make_memory) -> None:
    memory = make_memory()
    memory.wait_for_run(memory.add_messages("parent", [{"role": "user", "content": "My name is Ada"}]), timeout=30)
    pid = os.fork()
    if pid == 0:  # the child: its own connections and worker threads, same file
        code = 1
        try:
            run = memory.add_messages("child", [{"role": "user", "content": "My name is Lin"}])
            memory.wait_for_run(run, timeout=30)
            ok = "Name: Lin" in (memory.get_user_memory("child") or "")
            ok = ok and "Name: Ada" in (memory.get_user_memory("parent") or "")
            code = 0 if ok else 2
        except BaseException as exc:  # report, never return into pytest in the child
            print(f"child failed: {exc!r}", file=sys.stderr)
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    # the parent keeps working on its own connections, and sees what the child learned
    assert "Name: Lin" in (memory.get_user_memory("child") or "")
    run = memory.add_messages("parent", [{"role": "user", "content": "I live in Kyoto"}])
    memory.wait_for_run(run, timeout=30)
    assert "Location: Kyoto" in memory.get_user_memory("parent")


def _reap(pids: list[int], timeout: float) -> dict[int, str]:
    """Exit codes of the children; one still running at the deadline is killed and reported as hung."""
    deadline = time.monotonic() + timeout
    outcome: dict[int, str] = {}
    while len(outcome) < len(pids) and time.monotonic() < deadline:
        for pid in pids:
            if pid not in outcome:
                done, status = os.waitpid(pid, os.WNOHANG)
                if done:
                    outcome[pid] = str(os.waitstatus_to_exitcode(status))
        time.sleep(0.02)
    for pid in pids:
        if pid not in outcome:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            outcome[pid] = "hung"
    return outcome


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_fork_while_threads_are_inside_sqlite_and_http(make_memory, openai_server) -> None:
    """Forks land while the parent's workers learn, embed over HTTP and search: every child still works.

    Before the fork gate a child inherited SQLite's allocator mutex held by a worker thread and hung
    for ever, or saw a write lock no thread of its own would release ("database is locked").
    """
    memory = make_memory(embedder="openai:embed", llm_base_url=openai_server.base_url, llm_api_key="k")
    stop = threading.Event()
    errors: list[BaseException] = []

    def busy_parent() -> None:
        i = 0
        while not stop.is_set():
            try:
                sid = f"p{i % 5}"
                memory.add_messages(
                    sid,
                    [{"role": "user", "content": f"My name is P{i}. I like tea number {i}"}],
                    skip_vector_storage=False,
                )
                memory.search(sid, "tea")
                memory.get_user_memory(sid)
                i += 1
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)
                return

    threads = [threading.Thread(target=busy_parent) for _ in range(2)]
    for t in threads:
        t.start()
    pids: list[int] = []
    try:
        for k in range(12):
            time.sleep(0.03 + 0.01 * (k % 4))
            pid = os.fork()
            if pid == 0:
                code = 1
                faulthandler.dump_traceback_later(25)  # a hung child shows where it hangs
                try:
                    run = memory.add_messages(
                        f"child{k}", [{"role": "user", "content": f"My name is C{k}"}], skip_vector_storage=False
                    )
                    memory.wait_for_run(run, timeout=30)
                    found = memory.search(f"child{k}", "name")
                    learned = memory.get_user_memory(f"child{k}") or ""
                    code = 0 if f"Name: C{k}" in learned and len(found) == 1 else 2
                    if code:
                        print(f"child {k}: learned {learned!r}, found {found!r}", file=sys.stderr)
                    memory.close()  # finishes a pass its workers took from another process's queue
                except BaseException as exc:
                    print(f"child {k} failed: {exc!r}", file=sys.stderr)
                    code = code or 1
                finally:
                    os._exit(code)
            pids.append(pid)
    finally:
        outcome = _reap(pids, timeout=60)
        stop.set()
        for t in threads:
            t.join(30)
    assert not errors, errors
    assert sorted(outcome.values()) == ["0"] * len(pids), outcome
    for k in range(len(pids)):  # what each child learned is in the shared file
        assert f"Name: C{k}" in (memory.get_user_memory(f"child{k}") or "")


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
@pytest.mark.parametrize("depth", [0, 1, 2])
def test_a_fork_waits_until_no_other_thread_is_inside_the_gate(depth: int) -> None:
    """The gate's contract, also when the forking thread itself is inside it (nested store calls)."""
    from ai_memory_sdk._fork import gate

    inside, release = threading.Event(), threading.Event()

    def other() -> None:
        with gate:
            inside.set()
            release.wait(10)

    t = threading.Thread(target=other)
    t.start()
    assert inside.wait(10)
    timer = threading.Timer(0.3, release.set)
    timer.start()
    entered = [gate.__enter__() for _ in range(depth)]
    try:
        started = time.monotonic()
        pid = os.fork()
        if pid == 0:
            os._exit(0)
        waited = time.monotonic() - started
    finally:
        for _ in entered:
            gate.__exit__(None, None, None)
    os.waitpid(pid, 0)
    t.join(10)
    assert 0.25 <= waited < 5, waited  # it waited for the other thread to leave, then went on
