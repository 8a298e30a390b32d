"""SPEC §4: a Memory inherited by a forked child re-opens its connections and workers on first use."""

from __future__ import annotations

import os
import sys

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
