"""Crash: SIGKILL a process that is learning, many times; a new process completes every run.

Each child opens the store (which resumes what the dead one left), learns
with a pass slowed down by the scripted server, and is killed at a random
moment. At the end: every confirmed batch stored exactly once (and an
unconfirmed one whole or not at all), every run completed, every block equal
to its newest history entry, every history entry from a completed run or a
direct edit, no pass applied twice.
"""

from __future__ import annotations

import json

import pytest
from support.child import Child
from support.openai_server import ScriptedOpenAI, stall

from ._harness import batch_learner_responder, crash_campaign


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_sigkill_at_random_points_loses_and_duplicates_nothing(tmp_path, capsys):
    with ScriptedOpenAI(embedding_dim=32) as server:  # small vectors: the test measures the engine, not JSON
        # Every embedding call stalls 0.15 s: a pass (learn + embed + apply) is slow enough to be killed in.
        server.script_embeddings(*[stall(0.15)] * 100_000)
        report = crash_campaign(
            str(tmp_path / "crash.db"),
            server.base_url,
            subjects=40,
            first_batches=200,
            kill_rounds=8,
            extra_per_round=4,
            max_delay=0.8,
            seed=1,
        )
    with capsys.disabled():
        print("\n[reliability] offline learner, slowed embedder:", report.figures())
    assert report.problems == []
    assert report.lost == 0 and report.duplicated == 0
    assert report.completed == report.runs >= 200
    assert report.killed_in_flight > 0, "no kill landed during a pass: the campaign proved nothing"


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_sigkill_during_llm_passes_every_batch_learned_exactly_once(tmp_path, capsys):
    """The LLM learner against a slow scripted endpoint that records each batch it is shown in ``human``."""
    with ScriptedOpenAI(latency=0.15, embedding_dim=32) as server:
        server.responder = batch_learner_responder
        report = crash_campaign(
            str(tmp_path / "crash.db"),
            server.base_url,
            learner="llm",
            subjects=40,
            first_batches=200,
            kill_rounds=8,
            extra_per_round=4,
            max_delay=0.8,
            seed=2,
        )
    with capsys.disabled():
        print("\n[reliability] llm learner, 0.15 s per call:", report.figures())
    assert report.problems == []  # includes: every stored batch learned exactly once, none twice
    assert report.lost == 0 and report.duplicated == 0
    assert report.completed == report.runs >= 200
    assert report.killed_in_flight > 0


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_a_batch_that_kills_its_process_fails_alone_after_the_crash_limit(tmp_path, capsys):
    """A poison batch (its pass kills the process every time) must not crash-loop forever nor take the
    batches queued behind it down with it: it ends ``failed`` (``crashed``), the others complete."""
    import os
    import signal

    from ai_memory_sdk import Memory
    from ai_memory_sdk.store.base import MAX_ATTEMPTS

    path = str(tmp_path / "poison.db")
    victim_pid = [0]
    kills = [0]

    def responder(request):
        if "POISON" in json.dumps(request.get("messages")) and victim_pid[0] > 0:
            kills[0] += 1
            os.kill(victim_pid[0], signal.SIGKILL)  # what an OOM or a native crash on this input would do
        return batch_learner_responder(request)

    with Memory(path=path, learner="offline", embedder="none", background=False) as setup:
        setup.initialize_user_memory("u", user_context_block_char_limit=100_000)
        poison = setup.add_messages("u", [{"role": "user", "content": "batch B0-M0 says hello POISON"}])
        others = [
            setup.add_messages("u", [{"role": "user", "content": f"batch B{i}-M0 says hello"}]) for i in range(1, 5)
        ]
    with ScriptedOpenAI(embedding_dim=32) as server:
        server.responder = responder
        cfg = {"path": path, "base_url": server.base_url, "learner": "llm", "final": True, "retry_crashed": False}
        for spawn in range(MAX_ATTEMPTS + 3):  # noqa: B007 (printed after the loop)
            child = Child("reliability_crash.py", cfg)
            victim_pid[0] = child.proc.pid
            done = child.wait_line("DONE", 120)
            child.kill()
            if done:
                break
    with Memory(path=path, learner="offline", embedder="none", background=False) as check:
        bad = check.get_run(poison)
        good = [check.get_run(r) for r in others]
        human = check.get_user_memory("u")
    with capsys.disabled():
        print(
            f"\n[reliability] poison batch: {kills[0]} process deaths, {spawn + 1} processes; poison run "
            f"{bad.status} ({bad.stop_reason}); the other runs {[r.status for r in good]}"
        )
    assert bad.status == "failed" and bad.stop_reason == "crashed" and "retry_run" in (bad.error or ""), bad.error
    assert kills[0] == MAX_ATTEMPTS
    assert [r.status for r in good] == ["completed"] * 4
    assert sorted(human.split("\n")) == [f"learned B{i}" for i in range(1, 5)]
