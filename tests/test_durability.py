"""Durability (docs/runs.md): SIGKILL while runs are queued and running; two processes writing one store.

Children run ``tests/support/procs/durability_child.py`` and use only the public
API. A pass is made slow the way a real one is: the child's embedder is an
OpenAI-compatible server on 127.0.0.1 (``ScriptedOpenAI``, owned by the test
and outliving the child) whose embeddings stall, so a kill lands mid-pass.
"""

from __future__ import annotations

import json
import re
import sqlite3
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from support import internals
from support.child import Child
from support.openai_server import ScriptedOpenAI, stall

from ai_memory_sdk import Memory

EMBEDDER = "openai:text-embedding-3-small"
NOTE = re.compile(r"^\d{4}-\d{2}-\d{2}: (\d+) message\(s\)", re.MULTILINE)
MakeMemory = Callable[..., Memory]


def _status_counts(path: str) -> Counter[str]:
    conn = sqlite3.connect(path, timeout=30)
    try:
        return Counter(dict(conn.execute("SELECT status, count(*) FROM runs GROUP BY status").fetchall()))
    finally:
        conn.close()


def _query(path: str, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(path, timeout=30)
    try:
        return conn.execute(sql, args).fetchall()
    finally:
        conn.close()


def _assert_learned_exactly_once(memory: Memory, subject: str, expected_messages: int) -> None:
    """Every message of the subject went through exactly one applied pass.

    The offline learner appends one dated note ``N message(s)`` per pass to a
    summary block large enough to keep them all; each applied pass also leaves
    one summary version naming the first run it applied.
    """
    summary = memory.get_summary(subject) or ""
    assert sum(int(n) for n in NOTE.findall(summary)) == expected_messages, summary
    run_ids = [v.run_id for v in memory.block_history("summary", subject_id=subject) if v.run_id]
    assert len(run_ids) == len(set(run_ids)), f"a run was applied twice: {Counter(run_ids).most_common(3)}"
    assert len(run_ids) == len(NOTE.findall(summary))


@pytest.mark.timeout(120)
def test_sigkill_while_queued_and_running_loses_and_repeats_nothing(tmp_path: Path, make_memory: MakeMemory) -> None:
    path = str(tmp_path / "crash.db")
    subjects = [f"crash-user-{i}" for i in range(6)]
    batches, msgs = 30, 4
    with ScriptedOpenAI(embedding_dim=16) as server:
        server.script_embeddings(*[stall(0.4)] * 10_000)  # every pass waits 0.4 s on its embeddings
        options = dict(
            learner="offline",
            embedder=EMBEDDER,
            llm_base_url=server.base_url,
            llm_api_key="sk-test",
            workers=2,
            poll_interval=0.05,
        )
        child = Child(
            "durability_child.py",
            {
                "mode": "crash",
                "path": path,
                "options": options,
                "subjects": subjects,
                "batches": batches,
                "msgs": msgs,
                "gap": 0.03,
                "tag": "crash",
            },
        )
        try:
            child.expect_line("ENQUEUED", timeout=60)
            deadline = time.monotonic() + 30
            while True:  # kill with passes applied, passes in flight and runs still waiting
                counts = _status_counts(path)
                if counts["completed"] >= 1 and counts["running"] >= 1 and counts["queued"] >= 1:
                    break
                assert time.monotonic() < deadline, f"never saw queued+running+completed together: {counts}"
                time.sleep(0.01)
        finally:
            child.kill()
        at_kill = _status_counts(path)
        assert at_kill["running"] >= 1 and at_kill["queued"] >= 1, at_kill
        confirmed = {ln.split()[2] for ln in child.lines_with("ENQ ")}
        assert len(confirmed) == batches

        server.clear()  # embeddings answer at once from now on
        survivor = make_memory(path=path, **options)  # opening the store resumes what the dead process left
        for run_id in confirmed:
            survivor.wait_for_run(run_id, timeout=30)

        all_runs = [r for s in subjects for r in survivor.list_runs(s)]
        assert {r.id for r in all_runs} == confirmed
        assert {r.status for r in all_runs} == {"completed"}
        # runs that were running at the kill were claimed again (attempts counts claims)
        assert _query(path, "SELECT count(*) FROM runs WHERE attempts >= 2")[0][0] >= at_kill["running"]

        contents = [r[0] for r in _query(path, "SELECT content FROM messages")]
        assert len(contents) == batches * msgs and len(set(contents)) == len(contents)
        passages = _query(path, "SELECT count(*), count(DISTINCT message_seq) FROM passages")[0]
        assert passages == (batches * msgs, batches * msgs)
        vectors = _query(path, "SELECT count(*), count(DISTINCT passage_pk) FROM passage_vectors")[0]
        assert vectors == (batches * msgs, batches * msgs)
        for s in subjects:
            per_subject = len(survivor.get_messages(s))
            assert per_subject == batches // len(subjects) * msgs
            _assert_learned_exactly_once(survivor, s, per_subject)
        assert survivor.search(subjects[0], "item 0 of crash")  # archived and searchable


def _writers(
    path: str,
    n: int,
    batches: int,
    msgs: int,
    subjects: list[str],
    options: dict[str, Any],
    wait: bool = False,
    timeout: float = 90,
) -> list[dict[str, Any]]:
    children = [
        Child(
            "durability_child.py",
            {
                "mode": "write",
                "path": path,
                "options": options,
                "subjects": subjects,
                "batches": batches,
                "msgs": msgs,
                "tag": f"w{i}",
                "wait": wait,
            },
        )
        for i in range(n)
    ]
    try:
        for c in children:
            c.expect_line("READY", timeout=60)
        for c in children:  # start together
            c.send("go")
        done = [json.loads(c.expect_line("DONE", timeout=timeout)[5:]) for c in children]
        for c in children:
            c.proc.wait(timeout=30)
            err = c.stderr_tail(None)
            assert c.proc.returncode == 0, err
            assert "database is locked" not in err and "Traceback" not in err, err
        return done
    finally:
        for c in children:
            c.kill()


@pytest.mark.timeout(120)
def test_two_processes_enqueueing_at_once_lose_nothing(tmp_path: Path, make_memory: MakeMemory) -> None:
    path = str(tmp_path / "two.db")
    subjects = ["shared-a", "shared-b", "shared-c"]  # both processes write the same subjects
    batches, msgs = 300, 2
    setup = Memory(path=path, learner="offline", embedder="none", background=False)
    for s in subjects:  # summaries large enough to keep every pass's note
        setup.initialize_user_memory(s, summary_block_char_limit=1_000_000)
    setup.close()
    done = _writers(path, 2, batches, msgs, subjects, dict(learner="offline", embedder="none", background=False))
    assert [d["runs"] for d in done] == [batches, batches]

    reader = make_memory(path=path, background=False)
    runs = [r for s in subjects for r in reader.list_runs(s)]
    assert len(runs) == 2 * batches and {r.status for r in runs} == {"queued"}
    contents = [r[0] for r in _query(path, "SELECT content FROM messages")]
    expected = {
        f"w{w}-B{n}-M{j} talk about item {n} of w{w}" for w in range(2) for n in range(batches) for j in range(msgs)
    }
    assert len(contents) == len(expected) and set(contents) == expected
    per_run = _query(path, "SELECT count(*) FROM messages GROUP BY run_seq")
    assert {c for (c,) in per_run} == {msgs}

    internals.drain(reader)  # what `ai-memory worker` does
    runs = [r for s in subjects for r in reader.list_runs(s)]
    assert {r.status for r in runs} == {"completed"}
    for s in subjects:
        _assert_learned_exactly_once(reader, s, len(reader.get_messages(s)))


@pytest.mark.timeout(120)
def test_two_processes_learning_the_same_subjects_apply_each_run_once(tmp_path: Path, make_memory: MakeMemory) -> None:
    path = str(tmp_path / "two-workers.db")
    subjects = ["both-a", "both-b"]
    batches, msgs = 60, 2
    setup = Memory(path=path, learner="offline", embedder="none", background=False)
    for s in subjects:
        setup.initialize_user_memory(s, summary_block_char_limit=1_000_000)
    setup.close()
    # both processes enqueue and run background workers that claim the same subjects' runs
    _writers(
        path,
        2,
        batches,
        msgs,
        subjects,
        dict(learner="offline", embedder="none", workers=2, poll_interval=0.05),
        wait=True,
    )
    reader = make_memory(path=path, background=False)
    runs = [r for s in subjects for r in reader.list_runs(s)]
    assert len(runs) == 2 * batches and {r.status for r in runs} == {"completed"}
    for s in subjects:
        _assert_learned_exactly_once(reader, s, batches * msgs)


def test_a_batch_is_durable_once_add_messages_returns(tmp_path: Path) -> None:
    """Enqueue in a child, SIGKILL it at once: every confirmed batch is there, whole."""
    path = str(tmp_path / "commit.db")
    child = Child(
        "durability_child.py",
        {
            "mode": "crash",
            "path": path,
            "subjects": ["u"],
            "batches": 200,
            "msgs": 3,
            "gap": 0.0,
            "tag": "d",
            "options": {"learner": "offline", "embedder": "none", "background": False},
        },
    )
    try:
        child.expect_line("ENQ 20 ", timeout=60)
    finally:
        child.kill()
    confirmed = {ln.split()[2] for ln in child.lines_with("ENQ ")}
    stored = {
        r[0]: r[1]
        for r in _query(
            path, "SELECT r.id, count(m.seq) FROM runs r LEFT JOIN messages m ON m.run_seq=r.seq GROUP BY r.id"
        )
    }
    assert confirmed <= set(stored)
    assert set(stored.values()) == {3}  # no batch half-stored, confirmed or not
    assert len(stored) - len(confirmed) <= 1
