"""The letta engine's run lanes (``engines/letta/lanes.py``) against an in-process fake of the client.

The fake implements only the calls the lanes make (``create_async``, ``reset``,
``runs.retrieve``, passage create/list) and lets a test hold an agent's runs
open. This is a unit test of the lane logic (order, coalescing, grouping,
failures, close); the real server is covered by tests/test_letta_engine.py.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import httpx
import pytest
from letta_client import APIConnectionError, APITimeoutError, InternalServerError, Letta, NotFoundError

from ai_memory_sdk.config import Settings
from ai_memory_sdk.engines.letta import LettaEngine
from ai_memory_sdk.engines.letta.lanes import Batch, ServerLanes
from ai_memory_sdk.engines.letta.wire import MESSAGES_PROMPT, message_record
from ai_memory_sdk.errors import ServerUnreachableError
from ai_memory_sdk.models import MessageIn
from ai_memory_sdk.store.journal import Journal

URL = "http://letta.fake:8283"


def _request() -> httpx.Request:
    return httpx.Request("GET", URL + "/v1/runs/x")


class FakeLetta:
    """What the lanes call, in process. A run of an agent in ``held`` stays ``running`` until released."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.events: list[tuple[str, str]] = []  # ("send", transcript) / ("reset", agent) / ("passage", text)
        self.sent: list[tuple[str, str, str]] = []  # (letta run id, agent id, transcript)
        self.passages: list[tuple[str, str, list[str]]] = []  # (agent id, text, tags)
        self.held: set[str] = set()
        self.agent_of: dict[str, str] = {}
        self.ended: set[str] = set()
        self.overlaps = 0  # a run sent while another run of its agent had not ended
        self.send_errors: list[Exception] = []  # raised by the next create_async calls, in order
        self.retrieve_errors: list[Exception] = []
        self.finish: Callable[[str], dict[str, Any]] = lambda transcript: {"status": "completed"}
        self.agents = SimpleNamespace(
            messages=SimpleNamespace(create_async=self._create_async, reset=self._reset),
            passages=SimpleNamespace(create=self._create_passage, list=self._list_passages),
        )
        self.runs = SimpleNamespace(retrieve=self._retrieve)

    def _create_async(self, agent_id: str, *, messages: list[dict[str, str]], max_steps: int = 10) -> Any:
        with self.lock:
            if self.send_errors:
                raise self.send_errors.pop(0)
            if any(a == agent_id and r not in self.ended for r, a in self.agent_of.items()):
                self.overlaps += 1
            run_id = f"run-{len(self.sent) + 1}"
            self.agent_of[run_id] = agent_id
            self.sent.append((run_id, agent_id, messages[0]["content"]))
            self.events.append(("send", messages[0]["content"]))
            return SimpleNamespace(id=run_id)

    def _reset(self, agent_id: str, *, add_default_initial_messages: bool) -> None:
        with self.lock:
            self.events.append(("reset", agent_id))

    def _retrieve(self, run_id: str) -> Any:
        with self.lock:
            if self.retrieve_errors:
                raise self.retrieve_errors.pop(0)
            agent = self.agent_of[run_id]
            if agent in self.held:
                return SimpleNamespace(id=run_id, status="running", stop_reason=None, metadata=None)
            self.ended.add(run_id)
            transcript = next(t for r, _, t in self.sent if r == run_id)
            return SimpleNamespace(**{"id": run_id, "stop_reason": None, "metadata": None, **self.finish(transcript)})

    def _create_passage(self, agent_id: str, *, text: str, tags: list[str], created_at: datetime) -> list[Any]:
        with self.lock:
            self.passages.append((agent_id, text, tags))
            self.events.append(("passage", text))
            return []

    def _list_passages(self, agent_id: str, **kwargs: Any) -> list[Any]:
        with self.lock:
            return [SimpleNamespace(id=f"p{i}", tags=t) for i, (a, _, t) in enumerate(self.passages) if a == agent_id]

    def release(self, agent_id: str) -> None:
        with self.lock:
            self.held.discard(agent_id)


@pytest.fixture
def fake() -> FakeLetta:
    return FakeLetta()


@pytest.fixture
def lanes(fake: FakeLetta) -> Iterator[ServerLanes]:
    made = ServerLanes(cast(Letta, fake), URL, workers=4)
    yield made
    for sid, agent in {b.subject_id: b.agent_id for b in made.runs.values()}.items():
        fake.release(agent)
        assert made.wait_ended([b.id for b in made.runs.values() if b.subject_id == sid], 10) == []
    made.stop()


def _batch(sid: str, *texts: str, agent: str = "agent-a", archive: bool = False, max_chars: int = 24_000) -> Batch:
    now = datetime.now(timezone.utc)
    return Batch(
        id=f"sdkrun-{uuid.uuid4()}",
        subject_id=sid,
        agent_id=agent,
        messages=[MessageIn(role="user", content=t, created_at=now) for t in texts],
        keys=[f"msg-{uuid.uuid4().hex}" for _ in texts],
        archive=archive,
        max_chars=max_chars,
        max_steps=10,
    )


def _until(check: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.005)


def _sent_texts(fake: FakeLetta) -> list[list[str]]:
    """Each Letta run's transcript as its message lines."""
    head = f"<messages>{MESSAGES_PROMPT}:\n"
    return [t[len(head) : -len("</messages>")].split("\n") for _, _, t in fake.sent]


# ----------------------------------------------------------------------------- order and coalescing
def test_a_subjects_runs_go_one_at_a_time_and_what_queued_is_coalesced(fake: FakeLetta, lanes: ServerLanes) -> None:
    fake.held.add("agent-a")
    first = _batch("alice", "My name is Carol")
    lanes.enqueue([first])
    _until(lambda: len(fake.sent) == 1)
    later = [_batch("alice", "I love jazz"), _batch("alice", "I live in Rome", "and I cycle"), _batch("alice", "Bye")]
    for b in later:
        lanes.enqueue([b])
    time.sleep(0.1)
    assert len(fake.sent) == 1, "a second run of the agent was sent while the first was in flight"
    assert first.status == "running" and [b.status for b in later] == ["queued"] * 3
    fake.release("agent-a")
    assert lanes.wait_ended([first.id, *(b.id for b in later)], 5) == []
    assert _sent_texts(fake) == [
        ["user: My name is Carol"],
        ["user: I love jazz", "user: I live in Rome", "user: and I cycle", "user: Bye"],  # one run, in order
    ]
    assert fake.overlaps == 0
    assert all(b.status == "completed" for b in [first, *later])
    assert {(b.started_at, b.finished_at) for b in later} == {(later[0].started_at, later[0].finished_at)}
    assert first.finished_at is not None and later[0].started_at is not None
    assert first.finished_at <= later[0].started_at
    assert [b.letta_runs for b in later] == [["run-2"]] * 3 and first.letta_runs == ["run-1"]
    # the agent's history is reset after each run, before the next one is sent
    assert [kind for kind, _ in fake.events] == ["send", "reset", "send", "reset"]


def test_coalescing_stops_at_another_agent_and_at_max_chars(fake: FakeLetta, lanes: ServerLanes) -> None:
    fake.held.update({"agent-a", "agent-b"})
    first = _batch("alice", "first", max_chars=1000)
    lanes.enqueue([first])
    _until(lambda: len(fake.sent) == 1)
    big1, big2 = (_batch("alice", f"{n} " + "x" * 598, max_chars=1000) for n in (1, 2))
    small = _batch("alice", "small", max_chars=1000)
    other = _batch("alice", "after a reset of the subject", agent="agent-b", max_chars=1000)
    lanes.enqueue([big1, big2, small, other])  # one call, four batches, one lane
    fake.release("agent-a")
    _until(lambda: len(fake.sent) == 4)
    fake.release("agent-b")
    assert lanes.wait_ended([b.id for b in (first, big1, big2, small, other)], 5) == []
    assert [len(lines) for lines in _sent_texts(fake)] == [1, 1, 2, 1]  # big2 + small fit in 1000 chars
    assert [agent for _, agent, _ in fake.sent] == ["agent-a", "agent-a", "agent-a", "agent-b"]
    assert fake.overlaps == 0


def test_subjects_run_in_parallel(fake: FakeLetta, lanes: ServerLanes) -> None:
    fake.held.add("agent-a")
    slow, fast = _batch("alice", "slow"), _batch("bob", "fast", agent="agent-b")
    lanes.enqueue([slow, fast])
    assert lanes.wait_ended([fast.id], 5) == []
    assert fast.status == "completed" and slow.status == "running"
    fake.release("agent-a")
    assert lanes.wait_ended([slow.id], 5) == []


def test_a_long_batch_goes_in_several_runs_with_resets_between(fake: FakeLetta, lanes: ServerLanes) -> None:
    texts = [f"message {i}: " + "word " * 100 for i in range(8)]  # ~4,200 chars; 900 per run
    batch = _batch("alice", *texts, max_chars=1000)
    lanes.enqueue([batch])
    assert lanes.wait_ended([batch.id], 5) == []
    lines = [line for run in _sent_texts(fake) for line in run]
    assert lines == [f"user: {t}" for t in texts] and len(fake.sent) > 1
    assert [kind for kind, _ in fake.events] == ["send", "reset"] * len(fake.sent)
    assert batch.letta_runs == [r for r, _, _ in fake.sent] and batch.status == "completed"


def test_wait_ended_returns_what_is_still_going(fake: FakeLetta, lanes: ServerLanes) -> None:
    fake.held.add("agent-a")
    batch = _batch("alice", "hello")
    lanes.enqueue([batch])
    t0 = time.monotonic()
    assert lanes.wait_ended([batch.id, "sdkrun-unknown"], 0.2) == [batch.id]
    assert 0.15 < time.monotonic() - t0 < 2
    fake.release("agent-a")
    assert lanes.wait_ended([batch.id], None) == []


# ----------------------------------------------------------------------------- archival writes
def test_archived_messages_are_stored_while_the_run_works(fake: FakeLetta, lanes: ServerLanes) -> None:
    fake.held.add("agent-a")
    batch = _batch("alice", "one", "", "three", archive=True)
    lanes.enqueue([batch])
    _until(lambda: len(fake.passages) == 2)
    assert batch.status == "running" and batch.archived == 3  # stored while the Letta run works
    assert [kind for kind, _ in fake.events] == ["send", "passage", "passage"]
    records = [message_record(tags) for _, _, tags in fake.passages]
    assert [(r or {}).get("id") for r in records] == [batch.keys[0], batch.keys[2]]  # the empty one is skipped
    assert [(r or {}).get("order") for r in records] == [[batch.order, 0], [batch.order, 2]]
    assert all((r or {}).get("run") == batch.id for r in records)
    fake.release("agent-a")
    assert lanes.wait_ended([batch.id], 5) == [] and batch.status == "completed"


def test_a_failed_archival_write_fails_the_run(fake: FakeLetta, lanes: ServerLanes) -> None:
    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("disk full")

    fake.agents.passages.create = broken
    batch = _batch("alice", "one", archive=True)
    lanes.enqueue([batch])
    assert lanes.wait_ended([batch.id], 5) == []
    assert batch.status == "failed" and batch.error == "archival insert failed: RuntimeError: disk full"
    assert batch.archived == 0  # a retry stores it


# ----------------------------------------------------------------------------- failures
def test_a_failed_send_fails_its_group_and_the_lane_goes_on(fake: FakeLetta, lanes: ServerLanes) -> None:
    fake.send_errors.append(InternalServerError("boom", response=httpx.Response(500, request=_request()), body=None))
    bad, good = _batch("alice", "first"), _batch("alice", "second")
    lanes.enqueue([bad])
    assert lanes.wait_ended([bad.id], 5) == []
    lanes.enqueue([good])
    assert lanes.wait_ended([good.id], 5) == []
    assert (bad.status, bad.error, bad.stop_reason) == ("failed", "InternalServerError: boom", "error")
    assert good.status == "completed"


def test_letta_outcomes_become_the_runs_outcomes(fake: FakeLetta, lanes: ServerLanes) -> None:
    outcomes = {
        "steps": {"status": "completed", "metadata": {"result": {"stop_reason": "max_steps"}}},
        "error": {"status": "failed", "metadata": {"error": "LLM said 400"}},
        "usage": {"status": "completed", "metadata": {"result": {"usage": {"step_count": 2, "prompt_tokens": 9}}}},
    }
    fake.finish = lambda transcript: next(v for k, v in outcomes.items() if f"user: {k}" in transcript)
    batches = {k: _batch(k, k, agent=f"agent-{k}") for k in outcomes}
    lanes.enqueue(list(batches.values()))
    assert lanes.wait_ended([b.id for b in batches.values()], 5) == []
    assert (batches["steps"].status, batches["steps"].stop_reason) == ("failed", "max_steps")
    assert (batches["error"].status, batches["error"].error) == ("failed", "LLM said 400")
    assert (batches["usage"].status, batches["usage"].llm_calls, batches["usage"].prompt_tokens) == ("completed", 2, 9)


def test_a_run_that_vanished_with_its_agent_is_cancelled(fake: FakeLetta, lanes: ServerLanes) -> None:
    fake.retrieve_errors.append(NotFoundError("gone", response=httpx.Response(404, request=_request()), body=None))
    batch = _batch("alice", "hello")
    lanes.enqueue([batch])
    assert lanes.wait_ended([batch.id], 5) == []
    assert (batch.status, batch.stop_reason) == ("cancelled", "cancelled")


def test_polls_ride_out_a_few_network_errors(fake: FakeLetta, lanes: ServerLanes) -> None:
    fake.retrieve_errors += [APIConnectionError(request=_request()), APITimeoutError(request=_request())] * 2
    batch = _batch("alice", "hello")
    lanes.enqueue([batch])
    assert lanes.wait_ended([batch.id], 5) == [] and batch.status == "completed"


def test_a_silent_server_is_named(fake: FakeLetta, lanes: ServerLanes) -> None:
    fake.send_errors += [APIConnectionError(request=_request()), APITimeoutError(request=_request())]
    for message in ("Connection error", "Request timed out"):
        with pytest.raises(ServerUnreachableError) as info:
            lanes.client.agents.messages.create_async("agent-a", messages=[{"role": "user", "content": "x"}])
        assert info.value.url == URL and message in str(info.value) and URL in str(info.value)
        assert not isinstance(info.value, APIConnectionError)
    fake.send_errors.append(APIConnectionError(request=_request()))
    batch = _batch("alice", "hello")
    lanes.enqueue([batch])
    assert lanes.wait_ended([batch.id], 5) == []
    assert batch.status == "failed" and f"ServerUnreachableError: cannot reach {URL}" in (batch.error or "")


# ----------------------------------------------------------------------------- the engine's close()
def test_close_waits_for_its_batches_then_names_what_is_left(
    fake: FakeLetta, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = Settings(engine="letta", base_url="http://127.0.0.1:9", api_key="k", path=str(tmp_path / "m.db"))
    engine = LettaEngine(settings.model_copy(update={"close_timeout": 0.3}))
    lanes = engine.lanes
    lanes.client = cast(Letta, fake)  # the fake instead of the (closed) port
    lanes.agents.update({"alice": "agent-a", "bob": "agent-b"})  # known agents: add_messages needs no lookup
    done = engine.add_messages(
        "bob",
        [MessageIn(role="user", content="quick", created_at=datetime.now(timezone.utc))],
        archive=False,
        default_blocks=[],
    )
    assert engine.wait_for_run(done, 5).status == "completed"
    fake.held.add("agent-a")
    msg = MessageIn(role="user", content="slow", created_at=datetime.now(timezone.utc))
    going = [engine.add_messages("alice", [msg], archive=False, default_blocks=[]) for _ in range(2)]
    journal = Journal(tmp_path / "m.letta-journal.db", server="http://127.0.0.1:9")
    with caplog.at_level(logging.WARNING, logger="ai_memory_sdk.engines.letta"):
        t0 = time.monotonic()
        engine.close()
        assert 0.25 < time.monotonic() - t0 < 3
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, warnings
    assert all(run in warnings[0] for run in going) and done not in warnings[0]
    assert "resumes them" in warnings[0] and "m.letta-journal.db" in warnings[0]
    count = journal._local.get().conn.execute("SELECT count(*) FROM pending").fetchone()[0]
    assert count == 2  # still journalled: the next process resumes them
    fake.release("agent-a")  # the lane goes on while this process lives
    assert lanes.wait_ended(going, 5) == []
    assert journal._local.get().conn.execute("SELECT count(*) FROM pending").fetchone()[0] == 0
    engine.close()  # twice is fine


def test_close_without_pending_batches_is_quiet(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    settings = Settings(engine="letta", base_url="http://127.0.0.1:9", api_key="k", path=str(tmp_path / "m.db"))
    engine = LettaEngine(settings)
    assert engine.info() == {"engine": "letta", "server": "http://127.0.0.1:9", "model": settings.letta_model}
    with caplog.at_level(logging.WARNING):
        engine.close()
    assert not caplog.records
