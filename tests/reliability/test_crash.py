"""Crash: SIGKILL a process that is learning, many times; a new process completes every run.

Each child opens the store (which resumes what the dead one left), learns
with a pass slowed down by the scripted server, and is killed at a random
moment. At the end: every confirmed batch stored exactly once (and an
unconfirmed one whole or not at all), every run completed, every block equal
to its newest history entry, every history entry from a completed run or a
direct edit, no pass applied twice.
"""

from __future__ import annotations

import pytest

from support.openai_server import ScriptedOpenAI, stall  # type: ignore[import-not-found]

from ._harness import batch_learner_responder, crash_campaign


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_sigkill_at_random_points_loses_and_duplicates_nothing(tmp_path, capsys):
    with ScriptedOpenAI(embedding_dim=32) as server:  # small vectors: the test measures the engine, not JSON
        # Every embedding call stalls 0.15 s: a pass (learn + embed + apply) is slow enough to be killed in.
        server.script_embeddings(*[stall(0.15)] * 100_000)
        report = crash_campaign(str(tmp_path / "crash.db"), server.base_url, subjects=40, first_batches=200,
                                kill_rounds=8, extra_per_round=4, max_delay=0.8, seed=1)
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
        report = crash_campaign(str(tmp_path / "crash.db"), server.base_url, learner="llm", subjects=40,
                                first_batches=200, kill_rounds=8, extra_per_round=4, max_delay=0.8, seed=2)
    with capsys.disabled():
        print("\n[reliability] llm learner, 0.15 s per call:", report.figures())
    assert report.problems == []  # includes: every stored batch learned exactly once, none twice
    assert report.lost == 0 and report.duplicated == 0
    assert report.completed == report.runs >= 200
    assert report.killed_in_flight > 0
