"""Run lanes: each subject's batches go to Letta one Letta run at a time, sent by background threads.

Letta runs concurrent runs of one agent side by side, and all but the last
edit are lost, so a subject's batches queue on its :class:`SubjectLane` and
a thread sends the lane's next ``create_async`` only after the previous run
ended. Batches that queued meanwhile for the same agent are coalesced into
one Letta run (each of their runs completes with it). Archival writes are
sent while the Letta run works, and the run completes only once they are
stored. After each run the agent's conversation is reset, so the next run's
prompt does not grow. Lanes of different subjects run in parallel.

All ``LettaEngine`` objects of a process that talk to one server share one
:class:`ServerLanes` (two ``Memory`` objects adding to one subject still never
overlap its runs); a forked child gets its own (``_fork.PerProcess``).
"""

from __future__ import annotations

import functools
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, cast

from letta_client import APIConnectionError, InternalServerError, Letta, NotFoundError, omit
from letta_client.types.agents.run import Run as LettaRun
from letta_client.types.passage import Passage

from ..._fork import Gated, PerProcess
from ...errors import ServerUnreachableError
from ...models import TERMINAL_STATUSES, MessageIn, Run
from ...store.journal import Journal
from .wire import message_record, passage_tags, run_outcome, transcript_chunks

log = logging.getLogger(__name__)

_POLL_FIRST, _POLL_MAX = 0.02, 0.1  # seconds between runs.retrieve polls of a run in flight
_LETTA_ENDED = ("completed", "failed", "cancelled")


def _now() -> datetime:
    return datetime.now(timezone.utc)


@dataclass
class Batch:
    """One accepted ``add_messages`` batch: our run, the Letta run(s) that learn it and its outcome."""

    id: str
    subject_id: str
    agent_id: str
    messages: list[MessageIn]
    keys: list[str]  # one message key each (message id = key@agent_id)
    archive: bool
    max_chars: int
    max_steps: int
    created_at: datetime = field(default_factory=_now)
    order: int = field(default_factory=time.time_ns)  # with the message index: order within equal created_at
    status: str = "queued"
    started_at: datetime | None = None
    finished_at: datetime | None = None
    error: str | None = None
    stop_reason: str | None = None
    archived: int = 0  # messages already stored as passages (a retry does not store them twice)
    letta_runs: list[str] = field(default_factory=list)
    journal: Journal | None = None  # where the batch waits durably until its run ends
    resumed: str | None = None  # adopted from a dead process: the group id its Letta pass had
    chunks_sent: int = 0  # ... how many chunks of that pass were sent
    inflight: str | None = None  # ... and the Letta run of the last one (awaited, never re-sent)
    llm_calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0

    def model(self) -> Run:
        return Run(
            id=self.id,
            subject_id=self.subject_id,
            status=self.status,  # type: ignore[arg-type]  # one of RunStatus, kept as str here
            error=self.error,
            stop_reason=self.stop_reason,
            created_at=self.created_at,
            started_at=self.started_at,
            finished_at=self.finished_at,
            learner="letta",
            llm_calls=self.llm_calls,
            prompt_tokens=self.prompt_tokens,
            completion_tokens=self.completion_tokens,
        )

    @property
    def chars(self) -> int:
        return sum(len(m.content) for m in self.messages)


@dataclass
class SubjectLane:
    """A subject's queue: at most one Letta run in flight, sent by one thread at a time."""

    pending: deque[Batch] = field(default_factory=deque)
    busy: bool = False  # a thread works on it
    letta_run: str | None = None  # in flight now
    agent_id: str | None = None  # of the run in flight
    closed: bool = False  # the subject is being deleted


def drop_from_journal(batches: Sequence[Batch]) -> None:
    """Runs that ended (or were dropped) leave the journal; a failure there is logged, never raised."""
    by_journal: dict[int, tuple[Journal, list[str]]] = {}
    for b in batches:
        if b.journal is not None:
            by_journal.setdefault(id(b.journal), (b.journal, []))[1].append(b.id)
    for journal, ids in by_journal.values():
        try:
            journal.done(ids)
        except Exception as exc:  # the run's outcome stands; the row is adopted and settled by a later process
            log.warning("letta engine: could not clear %d journal row(s): %s", len(ids), exc)


def _unreachable_cause(exc: APIConnectionError) -> str:
    cause = exc.__cause__
    detail = f" ({type(cause).__name__}: {cause})" if cause is not None and str(cause) else ""
    return f"{str(exc).rstrip('.')}{detail}"


class _Reachable:
    """A proxy of the client whose calls raise ``ServerUnreachableError`` (naming the URL) for a silent server."""

    __slots__ = ("_target", "_url")

    def __init__(self, target: Any, url: str) -> None:
        self._target = target
        self._url = url

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._target, name)
        if callable(value):
            url = self._url

            @functools.wraps(value)
            def call(*args: Any, **kwargs: Any) -> Any:
                try:
                    return value(*args, **kwargs)
                except APIConnectionError as exc:  # refused, DNS failure, timeout (after the client's retries)
                    raise ServerUnreachableError(url, _unreachable_cause(exc)) from exc

            return call
        if isinstance(value, (str, bytes, int, float, bool, type(None))):
            return value
        return _Reachable(value, self._url)


class ServerLanes:
    """What all ``LettaEngine`` objects of this process that talk to one server share.

    The client (every request under the fork gate, a silent server raised as
    ``ServerUnreachableError``), the agent cache, the run table, the subjects'
    lanes and the threads that send them.
    """

    def __init__(self, client: Letta, url: str, workers: int) -> None:
        self.raw_client = client
        self.url = url
        self.client = cast(Letta, _Reachable(Gated(client), url))
        self.lock = threading.RLock()
        self.changed = threading.Condition(self.lock)  # notified whenever a run ends or a lane goes idle
        self.runs: dict[str, Batch] = {}
        self.lanes: dict[str, SubjectLane] = {}
        self.agents: dict[str, str] = {}  # subject id -> agent id
        self._create_locks: dict[str, threading.Lock] = {}
        self._ready: queue.SimpleQueue[str | None] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._workers = workers
        self.refs = 0

    # -- queueing --------------------------------------------------------------------------------
    def enqueue(self, batches: Sequence[Batch]) -> None:
        """Put batches at the end of their subjects' lanes (a new lane for a subject being deleted) and start them."""
        with self.lock:
            for b in batches:
                lane = self.lanes.get(b.subject_id)
                if lane is None or lane.closed:
                    lane = self.lanes[b.subject_id] = SubjectLane()
                self.runs[b.id] = b
                lane.pending.append(b)
            for sid in dict.fromkeys(b.subject_id for b in batches):
                self._kick(sid)

    def wait_ended(self, run_ids: Sequence[str], timeout: float | None) -> list[str]:
        """Wait until these runs ended (or left the table); the ids still going when ``timeout`` passed."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self.lock:
            while True:
                going = [
                    r for r in run_ids if (b := self.runs.get(r)) is not None and b.status not in TERMINAL_STATUSES
                ]
                left = None if deadline is None else deadline - time.monotonic()
                if not going or (left is not None and left <= 0):
                    return going
                self.changed.wait(left)

    def create_lock(self, sid: str) -> threading.Lock:
        """Held while a subject's agent is made, so two threads make one."""
        with self.lock:
            return self._create_locks.setdefault(sid, threading.Lock())

    def stop(self) -> None:
        """Let the threads go once the lanes queued before now are drained."""
        for _ in self._threads:
            self._ready.put(None)
        self._threads = []

    # -- threads ---------------------------------------------------------------------------------
    def _kick(self, sid: str) -> None:
        """Make sure a thread works on the subject's lane (call with the lock held)."""
        lane = self.lanes.get(sid)
        if lane is None or lane.busy or lane.closed or not lane.pending:
            return
        lane.busy = True
        if not self._threads:
            for i in range(self._workers):
                t = threading.Thread(target=self._thread_main, name=f"ai-memory-letta-{i}", daemon=True)
                t.start()
                self._threads.append(t)
        self._ready.put(sid)

    def _thread_main(self) -> None:
        while True:
            sid = self._ready.get()
            if sid is None:
                return
            try:
                self._drain(sid)
            except Exception:  # pragma: no cover - _drain handles its own errors
                log.exception("letta lane of %r stopped unexpectedly", sid)
                with self.lock:
                    lane = self.lanes.get(sid)
                    if lane is not None:
                        lane.busy = False
                    self.changed.notify_all()

    def _drain(self, sid: str) -> None:
        while True:
            with self.lock:
                lane = self.lanes.get(sid)
                if lane is None or lane.closed or not lane.pending:
                    if lane is not None:
                        lane.busy = False
                    self.changed.notify_all()
                    return
                group = self._take(lane)
                started = _now()
                for b in group:
                    b.status, b.started_at = "running", started
                lane.agent_id = group[0].agent_id
            try:
                self._learn(lane, group)
            except Exception as exc:  # the server or the network failed us: the group fails, the lane goes on
                log.warning("letta run for %r failed: %s", sid, exc)
                self._finish(group, "failed", f"{type(exc).__name__}: {exc}", "error", None)
            with self.lock:
                lane.agent_id = None

    @staticmethod
    def _take(lane: SubjectLane) -> list[Batch]:
        """The next runs to learn in one Letta run: the oldest, plus what queued behind it for the same agent."""
        first = lane.pending.popleft()
        group, used = [first], first.chars
        while lane.pending:
            nxt = lane.pending[0]
            if first.resumed or nxt.resumed:  # a resumed pass is finished as it was sent, nothing added
                if nxt.resumed != first.resumed:
                    break
            elif nxt.agent_id != first.agent_id or used + nxt.chars > first.max_chars:
                break
            group.append(lane.pending.popleft())
            used += nxt.chars
        return group

    def _learn(self, lane: SubjectLane, group: list[Batch]) -> None:
        """One Letta pass over the group: a Letta run per transcript chunk, archival writes alongside."""
        first = group[0]
        agent_id = first.agent_id
        chunks = transcript_chunks([m for b in group for m in b.messages], first.max_chars)
        archive_error: str | None = None
        archived = False
        final: tuple[str, str | None, str | None] = ("completed", None, None)
        begin = first.chunks_sent if first.resumed else 0
        for n in range(max(begin - 1, 0), len(chunks)):
            if lane.closed:
                final = ("cancelled", None, "cancelled")
                break
            if n < begin:  # resumed: the process that died sent this chunk; await its run, never re-send it
                sent_id = first.inflight or ""
            else:
                if n:
                    self._reset(agent_id)
                sent_id = self.client.agents.messages.create_async(
                    agent_id, messages=[{"role": "user", "content": chunks[n]}], max_steps=first.max_steps
                ).id
                if first.journal is not None:
                    first.journal.sent([b.id for b in group], sent_id, n + 1)
            with self.lock:
                lane.letta_run = sent_id
                for b in group:
                    if sent_id not in b.letta_runs:
                        b.letta_runs.append(sent_id)
            log.debug("letta run %s sent for %s (%d chars)", sent_id, [b.id for b in group], len(chunks[n]))
            if not archived:  # archival writes overlap the run
                archive_error, archived = self._archive(lane, group), True
            done = self._await(sent_id)
            with self.lock:
                lane.letta_run = None
                outcome = run_outcome(done, first.max_steps)
                for b in group:
                    b.llm_calls += outcome.llm_calls
                    b.prompt_tokens += outcome.prompt_tokens
                    b.completion_tokens += outcome.completion_tokens
            final = (outcome.status, outcome.error, outcome.stop_reason)
            if outcome.status != "completed":
                break
        if not archived:
            archive_error = self._archive(lane, group)
        if final[0] == "completed" and archive_error:
            final = ("failed", f"archival insert failed: {archive_error}", "error")
        self._finish(group, *final, agent_id if chunks else None)

    def _finish(
        self, group: list[Batch], status: str, error: str | None, stop: str | None, reset_agent: str | None
    ) -> None:
        if reset_agent:  # before the runs end: a caller back from wait_for_run sees the flat history
            self._reset(reset_agent)
        drop_from_journal(group)
        with self.lock:
            done = _now()
            for b in group:
                b.status, b.error, b.stop_reason, b.finished_at = status, error, stop, done
                b.resumed, b.chunks_sent, b.inflight = None, 0, None
            self.changed.notify_all()

    def _reset(self, agent_id: str) -> None:
        """Clear the agent's conversation (blocks stay), so the next run's prompt does not grow."""
        try:
            self.client.agents.messages.reset(agent_id, add_default_initial_messages=False)
        except Exception as exc:
            log.warning("could not reset the message history of letta agent %s: %s", agent_id, exc)

    def _await(self, letta_run_id: str) -> LettaRun | None:
        """Poll the Letta run until it ends; None if it vanished with its agent (a few transient errors are retried)."""
        delay, errors = _POLL_FIRST, 0
        while True:
            run: LettaRun | None = None
            try:
                run = self.client.runs.retrieve(letta_run_id)
                errors = 0
            except NotFoundError:  # the agent (and its runs) went away under us
                return None
            except (ServerUnreachableError, InternalServerError):
                errors += 1
                if errors > 5:
                    raise
            if run is not None and run.status in _LETTA_ENDED:
                return run
            time.sleep(delay)
            delay = min(delay * 1.5, _POLL_MAX)

    def list_passages(self, agent_id: str) -> list[Passage]:
        """Every passage of the agent, oldest first (pages of 100; each carries its embedding, so this is heavy)."""
        out: list[Passage] = []
        after: str | None = None
        while True:
            page = self.client.agents.passages.list(agent_id, limit=100, ascending=True, after=after or omit)
            out += page
            if len(page) < 100:
                return out
            after = page[-1].id

    def _archive(self, lane: SubjectLane, group: list[Batch]) -> str | None:
        """Store the group's archived messages as passages, one request each; the first error, if any.

        A resumed pass first looks for passages the dead process stored after its last journal write.
        """
        stored: set[str] | None = None
        for b in group:
            if not b.archive:
                continue
            while b.archived < len(b.messages):
                if lane.closed:
                    return "the subject was deleted"
                m, key = b.messages[b.archived], b.keys[b.archived]
                if b.resumed and stored is None:
                    try:
                        records = (message_record(p.tags or []) or {} for p in self.list_passages(b.agent_id))
                        stored = {str(rec.get("id")) for rec in records}
                    except Exception as exc:
                        return f"{type(exc).__name__}: {exc}"
                if m.content and not (b.resumed and stored is not None and key in stored):
                    try:
                        self.client.agents.passages.create(
                            b.agent_id,
                            text=m.content,
                            tags=passage_tags(m, key, b.id, [b.order, b.archived]),
                            created_at=m.created_at,
                        )
                    except Exception as exc:
                        return f"{type(exc).__name__}: {exc}"
                b.archived += 1
                if b.journal is not None:
                    b.journal.archived(b.id, b.archived)
        return None


# ----------------------------------------------------------------------------- one ServerLanes per server
class _Registry:
    """This process's ``ServerLanes``, by (URL, API key), counted by the engines that use them."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.by_server: dict[tuple[str, str], ServerLanes] = {}


_registry: PerProcess[_Registry] = PerProcess(_Registry)
_registry.get()  # built here, at import: in a forked child the first engine call builds the child's


def acquire(server: tuple[str, str], make: Callable[[], ServerLanes]) -> ServerLanes:
    """The shared lanes of a (URL, API key) (made by ``make`` for the first engine); ``release`` once per call."""
    registry = _registry.get()
    with registry.lock:
        lanes = registry.by_server.get(server)
        if lanes is None:
            lanes = registry.by_server[server] = make()
        lanes.refs += 1
        return lanes


def release(server: tuple[str, str], lanes: ServerLanes) -> None:
    """One engine is done with the lanes; the last one lets the threads go (they drain what is queued first)."""
    registry = _registry.get()
    with registry.lock:
        lanes.refs -= 1
        last = lanes.refs <= 0
        if last and registry.by_server.get(server) is lanes:
            del registry.by_server[server]
    if last:
        lanes.stop()
