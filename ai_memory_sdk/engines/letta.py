"""The ``letta`` engine: the same API over a Letta server, through letta-client 1.x.

As ai-memory-sdk 0.2.0 did: one ``sleeptime_agent`` per subject, Letta blocks,
``create_async`` runs and archival passages. What it does differently, and why
(details and measurements: docs/dev/letta-notes.md):

- **Runs of one subject never overlap on the server.** Letta runs concurrent
  runs of one agent side by side, and all but the last edit are lost.
  ``add_messages`` therefore returns a run id of *this* package at once and
  puts the batch on the subject's lane; a background thread sends a lane's
  next ``create_async`` only after the previous Letta run ended. Batches that
  queue up meanwhile are coalesced into one Letta run (each of their runs
  completes with it), as the local engine does. Lanes of different subjects
  run in parallel. A batch waits in a local journal (``_journal``) until its
  run ends, so it survives a crash: the next process for the same server
  sends it. Runs are known to the process that holds them (``get_run`` also
  accepts Letta's own ``run-...`` ids).
- **Archival writes leave the caller's thread.** Letta 0.11.7 has no batch
  insert (``archives.passages.create_many`` is 404) and the server's SQLite
  serialises inserts, so threads do not speed them up; the lane's thread
  sends them one after another *while the Letta run works*, and the run
  completes only when they are stored (learned and searchable together).
- **Agent history stays flat.** After each run the agent's messages are reset
  (``agents.messages.reset``); only then does the lane send the next run, so
  the reset never races a run of this process. Without it every run re-sends
  all earlier ones (+1.4 kB per small batch, measured).
- **Deleting a subject leaves nothing behind.** Letta keeps an agent's blocks
  and passages when the agent is deleted; ``delete_subject`` deletes the
  passages, the agent and its blocks (only Letta's empty archive row stays:
  no API removes it).
- **Failures are reported.** A Letta run that ends ``failed``/``cancelled``,
  or that stops at the step limit, ends our run ``failed``/``cancelled`` with
  Letta's error and ``stop_reason``; the facade turns that into
  ``RunFailedError``/``RunCancelledError``.

Agents are found the way 0.2.0 made them: tags ``[subj:<id>, ai-memory-sdk]``,
then ``[<id>, ai-memory-sdk]`` (0.2.0's user agents). New agents carry all
three tags, so 0.2.0 finds them too, and a name derived safely from the id
(Letta accepts only ``[A-Za-z0-9 _-]`` in names; the raw id lives in the tags).

Not available on this engine (``UnsupportedByEngineError``): block history and
restore. ``get_messages``/``delete_message`` cover archived messages only (see
their docstrings).
"""

from __future__ import annotations

import atexit
import hashlib
import itertools
import json
import logging
import os
import queue
import re
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, ClassVar, TypeVar

from .._fork import Gated, gate
from ..config import Settings, default_path
from ..errors import BlockNotFoundError, RunNotFoundError, RunStateError, SubjectNotFoundError, UnsupportedByEngineError
from ..formatting import neutralise
from ..models import TERMINAL_STATUSES, Block, BlockSpec, BlockVersion, MessageIn, Run, SearchResult, StoredMessage
from ._journal import Journal, journal_path

log = logging.getLogger(__name__)

T = TypeVar("T")

SDK_TAG = "ai-memory-sdk"  # 0.2.0's tag on every agent and passage it made
SUBJECT_TAG = "subj:"  # 0.2.0's namespaced subject tag
MESSAGE_TAG = "ai-memory-sdk:message="  # a passage's message record (JSON): id, role, run, name, metadata
RUN_PREFIX = "sdkrun-"  # our run ids; Letta's own are "run-..."
ORDER_KEY = "ai_memory_sdk_order"  # block metadata: creation order (Letta lists an agent's blocks in no fixed order)
MESSAGES_PROMPT = "The following message interactions have occured"  # 0.2.0's wording, spelling included
_NAME_OK = re.compile(r"[A-Za-z0-9 _-]+")  # what Letta accepts in an agent name
_NAME_BAD = re.compile(r"[^A-Za-z0-9_-]+")
_MAX_MESSAGE_TAG = 2000  # beyond this a passage's message record drops its metadata
_MAX_TOP_K = 5000
_POLL_FIRST, _POLL_MAX = 0.02, 0.1  # seconds between runs.retrieve polls of a run in flight
_FLUSH_SECONDS = 60.0  # close()/exit: how long to wait for queued batches to be sent and learned


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _utc(value: Any) -> datetime | None:
    """A server timestamp (datetime or ISO string, naive meaning UTC) as an aware datetime."""
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
    if not isinstance(value, datetime):
        return None
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


def agent_name(kind: str, subject_id: str) -> str:
    """0.2.0's agent name when the id is one Letta accepts; else a safe form plus a hash of the raw id.

    Letta refuses names outside ``[A-Za-z0-9 _-]`` (422), so ``bob@example.com``
    becomes ``subconscious_agent_user_bob_example_com_<hash>``; names need not be unique,
    the hash only keeps distinct ids distinct for people reading the agent list.
    """
    prefix = f"subconscious_agent_{kind}_"
    if _NAME_OK.fullmatch(subject_id) and len(subject_id) <= 128:
        return prefix + subject_id
    safe = _NAME_BAD.sub("_", subject_id).strip("_")[:64]
    digest = hashlib.sha256(subject_id.encode("utf-8")).hexdigest()[:12]
    return f"{prefix}{safe}_{digest}" if safe else prefix + digest


def subject_tags(subject_id: str) -> list[str]:
    return [SUBJECT_TAG + subject_id, subject_id, SDK_TAG]


def _embedding_options(value: str | None) -> dict[str, Any]:
    """``letta_embedding``: a handle (``openai/text-embedding-3-small``) or a JSON ``embedding_config``."""
    if not value or not value.strip():
        return {}
    text = value.strip()
    if text.startswith("{"):
        try:
            cfg = json.loads(text)
        except ValueError as exc:
            raise ValueError(f"letta_embedding is not valid JSON: {exc}") from None
        if not isinstance(cfg, dict):
            raise ValueError("letta_embedding JSON must be an object (an embedding_config)")
        return {"embedding_config": cfg}
    return {"embedding": text}


def transcript_chunks(messages: Sequence[MessageIn], max_chars: int) -> list[str]:
    """What the sleeptime agent is sent: 0.2.0's ``<messages>`` transcript, in parts of at most ``max_chars``.

    One ``role: text`` line per message, as 0.2.0 formatted it; a message longer than
    the limit is split into ``(part i/n)`` lines, never truncated. A message cannot
    close the transcript early (its ``<messages>`` tags are neutralised).
    """
    budget = max(200, max_chars - 100)
    lines: list[str] = []
    for m in messages:
        text = neutralise(m.content, "messages")
        if not text:
            continue
        if len(text) + len(m.role) + 2 <= budget:
            lines.append(f"{m.role}: {text}")
            continue
        size = budget - len(m.role) - 24
        parts = [text[i : i + size] for i in range(0, len(text), size)]
        lines += [f"{m.role}: (part {n}/{len(parts)}) {p}" for n, p in enumerate(parts, 1)]
    chunks: list[list[str]] = []
    used = budget + 1
    for line in lines:
        if used + len(line) + 1 > budget:
            chunks.append([])
            used = 0
        chunks[-1].append(line)
        used += len(line) + 1
    return [f"<messages>{MESSAGES_PROMPT}:\n" + "\n".join(c) + "</messages>" for c in chunks]


def _overlap(a: str, b: str) -> int:
    """Length of the longest suffix of ``a`` that is a prefix of ``b``."""
    for k in range(min(len(a), len(b)), 0, -1):
        if a.endswith(b[:k]):
            return k
    return 0


def _merge_chunks(texts: Sequence[str]) -> str:
    """Rejoin the chunks Letta's splitter made of one long text (best effort).

    Letta splits a long passage into overlapping chunks (SentenceSplitter,
    ``embedding_chunk_size`` tokens, stripped) that share one ``created_at``, and
    lists them in id order, which is random. The order is rebuilt by chaining
    each chunk to the one its end overlaps most; chunks that do not overlap are
    joined with a space (whitespace at those seams is lost).
    """
    chunks = [t for t in texts if t]
    if len(chunks) <= 1:
        return chunks[0] if chunks else ""
    n = len(chunks)
    ov = [[_overlap(chunks[i], chunks[j]) if i != j else -1 for j in range(n)] for i in range(n)]
    start = min(range(n), key=lambda j: (max(ov[i][j] for i in range(n) if i != j), j))
    order, used = [start], {start}
    while len(order) < n:
        cur = order[-1]
        nxt = max((j for j in range(n) if j not in used), key=lambda j: (ov[cur][j], -j))
        order.append(nxt)
        used.add(nxt)
    out = chunks[order[0]]
    for prev, j in itertools.pairwise(order):
        k = ov[prev][j]
        out = out + chunks[j][k:] if k else out + " " + chunks[j]
    return out


# ----------------------------------------------------------------------------- runs and lanes
@dataclass
class _Rec:
    """One of our runs: a batch, its Letta run(s) and its outcome."""

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
            status=self.status,
            error=self.error,  # type: ignore[arg-type]
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
class _Lane:
    """A subject's queue: at most one Letta run in flight, sent by one thread at a time."""

    pending: deque = field(default_factory=deque)
    busy: bool = False
    letta_run: str | None = None  # in flight now
    agent_id: str | None = None  # of the run in flight
    closed: bool = False  # the subject is being deleted


def _outcome(run: Any, max_steps: int | None) -> tuple[str, str | None, str | None, tuple[int, int, int]]:
    """A terminal Letta run as (status, error, stop_reason, (llm_calls, prompt_tokens, completion_tokens))."""
    meta = run.metadata if isinstance(getattr(run, "metadata", None), dict) else {}
    result = meta.get("result") if isinstance(meta.get("result"), dict) else {}
    stop = getattr(run, "stop_reason", None)
    sr = result.get("stop_reason")
    if not stop and isinstance(sr, dict):
        stop = sr.get("stop_reason")
    elif not stop and isinstance(sr, str):
        stop = sr
    usage = result.get("usage") if isinstance(result.get("usage"), dict) else {}
    stats = (
        int(usage.get("step_count") or 0),
        int(usage.get("prompt_tokens") or 0),
        int(usage.get("completion_tokens") or 0),
    )
    status = getattr(run, "status", None)
    if status == "completed":
        if stop == "max_steps":
            limit = f" ({max_steps})" if max_steps else ""
            return "failed", f"the memory agent reached its step limit{limit} before finishing its edits", stop, stats
        return "completed", None, stop, stats
    if status == "cancelled":
        return "cancelled", None, stop or "cancelled", stats
    if status == "failed":
        error = meta.get("error") or "the Letta run failed without an error message"
        return "failed", str(error), stop or "error", stats
    return "running", None, None, stats


class _Hub:
    """What all ``LettaEngine`` objects of this process that talk to one server share.

    The client, the agent cache, our run table and the per-subject lanes, so
    two ``Memory`` objects adding to one subject still never overlap its runs.
    """

    def __init__(self, client: Any, workers: int) -> None:
        self.raw_client = client
        self.client = Gated(client)  # every request under the fork gate (see _fork)
        self.lock = threading.RLock()
        self.changed = threading.Condition(self.lock)
        self.runs: dict[str, _Rec] = {}
        self.lanes: dict[str, _Lane] = {}
        self.agents: dict[str, str] = {}  # subject id -> agent id
        self._create_locks: dict[str, threading.Lock] = {}
        self._ready: queue.SimpleQueue[str | None] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._workers = workers
        self.refs = 0

    # -- threads ---------------------------------------------------------------------------------
    def _ensure_threads(self) -> None:
        if self._threads:
            return
        for i in range(self._workers):
            t = threading.Thread(target=self._thread_main, name=f"ai-memory-letta-{i}", daemon=True)
            t.start()
            self._threads.append(t)

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

    def kick(self, sid: str) -> None:
        """Make sure a thread works on the subject's lane (call with the lock held)."""
        lane = self.lanes.get(sid)
        if lane is None or lane.busy or lane.closed or not lane.pending:
            return
        lane.busy = True
        self._ensure_threads()
        self._ready.put(sid)

    def stop(self) -> None:
        for _ in self._threads:
            self._ready.put(None)
        self._threads = []

    def flush(self, timeout: float) -> bool:
        """Wait until every lane is idle (queued batches sent and learned); False on timeout."""
        deadline = time.monotonic() + timeout
        with self.lock:
            while any(lane.busy or lane.pending for lane in self.lanes.values()):
                left = deadline - time.monotonic()
                if left <= 0:
                    waiting = [r.id for r in self.runs.values() if r.status in ("queued", "running")]
                    log.warning("letta engine closing with %d runs not finished: %s", len(waiting), waiting[:20])
                    return False
                self.changed.wait(min(left, 0.5))
        return True

    def create_lock(self, sid: str) -> threading.Lock:
        with self.lock:
            return self._create_locks.setdefault(sid, threading.Lock())

    # -- one lane --------------------------------------------------------------------------------
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
                for r in group:
                    r.status, r.started_at = "running", started
                lane.agent_id = group[0].agent_id
            try:
                self._pass(lane, group)
            except Exception as exc:  # the server or the network failed us: the group fails, the lane goes on
                log.warning("letta run for %r failed: %s", sid, exc)
                self._finish(group, "failed", f"{type(exc).__name__}: {exc}", "error", None)
            with self.lock:
                lane.agent_id = None

    @staticmethod
    def _take(lane: _Lane) -> list[_Rec]:
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

    def _pass(self, lane: _Lane, group: list[_Rec]) -> None:
        agent_id = group[0].agent_id
        chunks = transcript_chunks([m for r in group for m in r.messages], group[0].max_chars)
        archive_error: str | None = None
        archived = False
        final: tuple[str, str | None, str | None] = ("completed", None, None)
        first = group[0]
        begin = first.chunks_sent if first.resumed else 0
        for n in range(max(begin - 1, 0), len(chunks)):
            chunk = chunks[n]
            if lane.closed:
                final = ("cancelled", None, "cancelled")
                break
            if n < begin:  # resumed: the process that died sent this chunk; await its run, never re-send it
                sent_id = first.inflight or ""
            else:
                if n:
                    self._reset(agent_id)
                sent_id = self.client.agents.messages.create_async(
                    agent_id, messages=[{"role": "user", "content": chunk}], max_steps=first.max_steps
                ).id
                if first.journal is not None:
                    first.journal.sent([r.id for r in group], sent_id, n + 1)
            with self.lock:
                lane.letta_run = sent_id
                for r in group:
                    if sent_id not in r.letta_runs:
                        r.letta_runs.append(sent_id)
            log.debug("letta run %s sent for %s (%d chars)", sent_id, [r.id for r in group], len(chunk))
            if not archived:  # archival writes overlap the run
                archive_error, archived = self._archive(lane, group), True
            done = self._await(sent_id)
            with self.lock:
                lane.letta_run = None
            status, error, stop, stats = _outcome(done, group[0].max_steps)
            with self.lock:
                for r in group:
                    r.llm_calls += stats[0]
                    r.prompt_tokens += stats[1]
                    r.completion_tokens += stats[2]
            final = (status, error, stop)
            if status != "completed":
                break
        if not archived:
            archive_error = self._archive(lane, group)
        if final[0] == "completed" and archive_error:
            final = ("failed", f"archival insert failed: {archive_error}", "error")
        self._finish(group, *final, agent_id if chunks else None)

    def _finish(
        self, group: list[_Rec], status: str, error: str | None, stop: str | None, reset_agent: str | None
    ) -> None:
        if reset_agent:  # before the runs end: a caller back from wait_for_run sees the flat history
            self._reset(reset_agent)
        _forget(group)
        with self.lock:
            done = _now()
            for r in group:
                r.status, r.error, r.stop_reason, r.finished_at = status, error, stop, done
                r.resumed, r.chunks_sent, r.inflight = None, 0, None
            self.changed.notify_all()

    def _reset(self, agent_id: str) -> None:
        """Clear the agent's conversation (blocks stay), so the next run's prompt does not grow."""
        try:
            self.client.agents.messages.reset(agent_id, add_default_initial_messages=False)
        except Exception as exc:
            log.warning("could not reset the message history of letta agent %s: %s", agent_id, exc)

    def _await(self, letta_run_id: str) -> Any:
        """Poll the Letta run until it ends (a few transient errors are retried)."""
        from letta_client import APIConnectionError, InternalServerError, NotFoundError

        delay, errors = _POLL_FIRST, 0
        while True:
            try:
                run = self.client.runs.retrieve(letta_run_id)
                errors = 0
            except NotFoundError:  # the agent (and its runs) went away under us
                return _Gone()
            except (APIConnectionError, InternalServerError):
                errors += 1
                if errors > 5:
                    raise
                run = None
            if run is not None and run.status in ("completed", "failed", "cancelled"):
                return run
            time.sleep(delay)
            delay = min(delay * 1.5, _POLL_MAX)

    def passages(self, agent_id: str) -> list[Any]:
        """Every passage of the agent, oldest first (pages of 100; each carries its embedding, so this is heavy)."""
        out: list[Any] = []
        after: str | None = None
        while True:
            kwargs: dict[str, Any] = {"limit": 100, "ascending": True}
            if after:
                kwargs["after"] = after
            page = self.client.agents.passages.list(agent_id, **kwargs)
            if not page:
                return out
            out += page
            if len(page) < 100:
                return out
            after = page[-1].id

    def _archive(self, lane: _Lane, group: list[_Rec]) -> str | None:
        """Store the group's archived messages as passages, one request each; the first error, if any.

        A resumed pass first looks for passages the dead process stored after its last journal write.
        """
        stored: set[str] | None = None
        for r in group:
            if not r.archive:
                continue
            while r.archived < len(r.messages):
                if lane.closed:
                    return "the subject was deleted"
                m, key = r.messages[r.archived], r.keys[r.archived]
                if r.resumed and stored is None:
                    try:
                        records = (_message_record(p.tags or []) or {} for p in self.passages(r.agent_id))
                        stored = {str(rec.get("id")) for rec in records}
                    except Exception as exc:
                        return f"{type(exc).__name__}: {exc}"
                if m.content and not (r.resumed and stored is not None and key in stored):
                    try:
                        self.client.agents.passages.create(
                            r.agent_id,
                            text=m.content,
                            tags=_passage_tags(m, key, r.id, [r.order, r.archived]),
                            created_at=m.created_at,
                        )
                    except Exception as exc:
                        return f"{type(exc).__name__}: {exc}"
                r.archived += 1
                if r.journal is not None:
                    r.journal.archived(r.id, r.archived)
        return None


def _forget(recs: Sequence[_Rec]) -> None:
    """Runs that ended (or were dropped) leave the journal; a failure there is logged, never raised."""
    by_journal: dict[int, tuple[Journal, list[str]]] = {}
    for r in recs:
        if r.journal is not None:
            by_journal.setdefault(id(r.journal), (r.journal, []))[1].append(r.id)
    for journal, ids in by_journal.values():
        try:
            journal.done(ids)
        except Exception as exc:  # the run's outcome stands; the row is adopted and settled by a later process
            log.warning("letta engine: could not clear %d journal row(s): %s", len(ids), exc)


class _Gone:
    """Stands for a Letta run that disappeared with its agent."""

    status = "cancelled"
    stop_reason = "cancelled"
    metadata: ClassVar[dict[str, Any]] = {}


def _passage_tags(m: MessageIn, key: str, run_id: str, order: list[int]) -> list[str]:
    """The role and message tags (as 0.2.0: role + ``ai-memory-sdk``), plus one tag holding the message record.

    Letta's search results carry only content, timestamp and tags, so the
    record (message id, role, run, name, metadata, order) rides in a tag.
    """
    record: dict[str, Any] = {"id": key, "role": m.role, "run": run_id, "order": order}
    if m.name:
        record["name"] = m.name
    if m.metadata:
        record["metadata"] = m.metadata
    text = json.dumps(record, ensure_ascii=False, separators=(",", ":"), default=str)
    if len(text) > _MAX_MESSAGE_TAG:
        record.pop("metadata", None)
        record["metadata_dropped"] = True
        text = json.dumps(record, ensure_ascii=False, separators=(",", ":"), default=str)
    return list(dict.fromkeys([m.role, *m.tags, SDK_TAG, MESSAGE_TAG + text]))


def _message_record(tags: Sequence[str]) -> dict[str, Any] | None:
    for t in tags:
        if t.startswith(MESSAGE_TAG):
            try:
                rec = json.loads(t[len(MESSAGE_TAG) :])
            except ValueError:
                return None
            return rec if isinstance(rec, dict) else None
    return None


def _visible_tags(tags: Sequence[str]) -> list[str]:
    return [t for t in tags if t != SDK_TAG and not t.startswith(MESSAGE_TAG)]


_ROLES = ("user", "assistant", "system", "developer", "tool", "function")
_hubs: dict[tuple[str, str, int], _Hub] = {}
_hubs_lock = threading.Lock()


def _fresh_hubs_lock() -> None:
    """A forked child gets a free lock (a parent thread may have held it at the fork)."""
    global _hubs_lock
    _hubs_lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_fresh_hubs_lock)


def _acquire_hub(settings: Settings) -> tuple[tuple[str, str, int], _Hub]:
    key = (settings.base_url or os.environ.get("LETTA_BASE_URL") or "", settings.api_key or "", os.getpid())
    with _hubs_lock:
        hub = _hubs.get(key)
        if hub is None:
            from letta_client import Letta

            kwargs: dict[str, Any] = {"api_key": settings.api_key, "max_retries": 2, "timeout": 60.0}
            if settings.base_url:
                kwargs["base_url"] = settings.base_url
            with gate:  # building a client loads CA certificates (OpenSSL's locks: see _fork)
                client = Letta(**kwargs)
            hub = _hubs[key] = _Hub(client, workers=max(4, settings.workers))
        hub.refs += 1
        return key, hub


def _release_hub(key: tuple[str, str, int], hub: _Hub) -> None:
    with _hubs_lock:
        hub.refs -= 1
        last = hub.refs <= 0
        if last and _hubs.get(key) is hub:
            del _hubs[key]
    if last:
        hub.flush(_FLUSH_SECONDS)
        hub.stop()


@atexit.register
def _flush_at_exit() -> None:
    """Send what is still queued before the interpreter exits (bounded)."""
    with _hubs_lock:
        hubs = [h for k, h in _hubs.items() if k[2] == os.getpid()]
    for hub in hubs:
        hub.flush(_FLUSH_SECONDS / 2)


# ----------------------------------------------------------------------------- the engine
class LettaEngine:
    """Memory on a Letta server (Letta Cloud or self-hosted) through ``letta_client.Letta``."""

    name = "letta"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._embedding = _embedding_options(settings.letta_embedding)
        self._key, self._hub = _acquire_hub(settings)
        self._pid = os.getpid()
        self._closed = False
        server = settings.base_url or os.environ.get("LETTA_BASE_URL") or "https://api.letta.com"
        self._journal = Journal(journal_path(settings.path, default_path()), server=server)
        self._resume()
        log.info(
            "letta engine: server %s, model %s, embedding %s",
            settings.base_url or os.environ.get("LETTA_BASE_URL") or "Letta Cloud",
            settings.letta_model,
            settings.letta_embedding or "the server's default",
        )

    def _journal_add(self, rec: _Rec) -> None:
        self._journal.add(
            rec.id,
            rec.subject_id,
            rec.agent_id,
            rec.order,
            rec.messages,
            rec.keys,
            archive=rec.archive,
            max_chars=rec.max_chars,
            max_steps=rec.max_steps,
        )

    def _resume(self) -> None:
        """Adopt the batches a dead process accepted for this server: onto their lanes, oldest first."""
        entries = self._journal.adopt()
        if not entries:
            return
        hub = self.hub
        with hub.lock:
            for e in entries:
                rec = _Rec(
                    id=e.run_id,
                    subject_id=e.subject_id,
                    agent_id=e.agent_id,
                    messages=e.messages,
                    keys=e.keys,
                    archive=e.archive,
                    max_chars=e.max_chars,
                    max_steps=e.max_steps,
                    created_at=datetime.fromtimestamp(e.seq / 1e9, timezone.utc),
                    order=e.seq,
                    archived=e.archived,
                    journal=self._journal,
                    resumed=e.group_id if e.inflight else None,
                    chunks_sent=e.chunks_sent,
                    inflight=e.inflight,
                )
                if e.inflight:
                    rec.letta_runs.append(e.inflight)
                lane = hub.lanes.get(e.subject_id)
                if lane is None or lane.closed:
                    lane = hub.lanes[e.subject_id] = _Lane()
                hub.runs[rec.id] = rec
                lane.pending.append(rec)
            for sid in {e.subject_id for e in entries}:
                hub.kick(sid)

    @property
    def hub(self) -> _Hub:
        if os.getpid() != self._pid:  # a forked child: its own client, lanes and threads
            self._pid = os.getpid()
            self._key, self._hub = _acquire_hub(self.settings)
        return self._hub

    @property
    def client(self) -> Any:
        """The ``letta_client.Letta`` in use (for what this package does not wrap)."""
        return self.hub.raw_client

    def close(self) -> None:
        """Send the batches still queued and wait for their runs (bounded), then let the threads go."""
        if self._closed:
            return
        self._closed = True
        _release_hub(self._key, self._hub)  # the journal stays open while a shared lane may still use it

    # -- agents ----------------------------------------------------------------------------------

    def _lookup(self, sid: str, *, fresh: bool = False) -> tuple[str | None, bool]:
        """(agent id, whether it came from the cache): tags ``subj:<id>`` first, then the raw id (0.2.0 users)."""
        hub = self.hub
        if not fresh:
            with hub.lock:
                hit = hub.agents.get(sid)
            if hit:
                return hit, True
        for tags in ([SUBJECT_TAG + sid, SDK_TAG], [sid, SDK_TAG]):
            items = hub.client.agents.list(tags=tags, match_all_tags=True, limit=1).items
            if items:
                with hub.lock:
                    hub.agents[sid] = items[0].id
                return items[0].id, False
        with hub.lock:
            hub.agents.pop(sid, None)
        return None, False

    def _with_agent(self, sid: str, fn: Callable[[str], T], missing: T) -> T:
        """Call ``fn(agent_id)``; a 404 on a cached id re-reads the agent once (another process may have reset it)."""
        from letta_client import NotFoundError

        agent_id, cached = self._lookup(sid)
        if agent_id is None:
            return missing
        try:
            return fn(agent_id)
        except NotFoundError:
            if not cached:
                raise
            fresh, _ = self._lookup(sid, fresh=True)
            if fresh is None:
                return missing
            if fresh == agent_id:
                raise
            return fn(fresh)

    def _create_agent(self, sid: str, kind: str, blocks: Sequence[BlockSpec]) -> str:
        client = self.hub.client
        block_ids: list[str] = []
        try:
            for spec in blocks:
                block_ids.append(self._new_block(spec))
            agent = client.agents.create(
                name=agent_name(kind, sid),
                model=self.settings.letta_model,
                agent_type="sleeptime_agent",
                initial_message_sequence=[],
                tags=subject_tags(sid),
                block_ids=block_ids,
                **self._embedding,
            )
        except BaseException:
            for bid in block_ids:
                self._quietly(client.blocks.delete, bid)
            raise
        with self.hub.lock:
            self.hub.agents[sid] = agent.id
        log.info("letta agent %s created for %s %r", agent.id, kind, sid)
        return agent.id

    def _new_block(self, spec: BlockSpec) -> str:
        return self.hub.client.blocks.create(
            label=spec.label,
            value=spec.value,
            description=spec.description,
            limit=spec.limit,
            metadata={ORDER_KEY: time.time_ns()},
        ).id

    @staticmethod
    def _quietly(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        try:
            fn(*args, **kwargs)
        except Exception as exc:
            log.debug("ignored during cleanup: %s", exc)

    def _ensure(self, sid: str, kind: str, blocks: Sequence[BlockSpec]) -> str:
        agent_id, _ = self._lookup(sid)
        if agent_id:
            return agent_id
        with self.hub.create_lock(sid):  # two threads adding a new subject's first batch make one agent
            agent_id, _ = self._lookup(sid)
            return agent_id or self._create_agent(sid, kind, blocks)

    # -- subjects --------------------------------------------------------------------------------

    def agent_id(self, subject_id: str) -> str | None:
        return self._lookup(subject_id)[0]

    def create_subject(self, subject_id: str, *, reset: bool, blocks: Sequence[BlockSpec], kind: str) -> str:
        """Create the subject's agent (with ``blocks``); ``reset`` first deletes everything of the old one."""
        with self.hub.create_lock(subject_id):
            existing, _ = self._lookup(subject_id, fresh=True)
            if existing:
                if not reset:
                    noun = "user" if kind == "user" else "subject"
                    raise ValueError(
                        f"Agent {existing} already exists for {noun} {subject_id}. "
                        "Cannot re-initialize memory unless reset=True."
                    )
                self.delete_subject(subject_id)
            return self._create_agent(subject_id, "user" if kind == "user" else "subject", blocks)

    def ensure_subject(self, subject_id: str) -> str:
        return self._ensure(subject_id, "subject", [])

    def delete_subject(self, subject_id: str) -> None:
        """Delete the subject's agents with their passages and blocks (Letta leaves those behind otherwise).

        Queued batches are dropped and a run in flight is cancelled first. Every
        agent found for the id goes (0.2.0 could make more than one); a block that
        is still attached to an agent of another subject is only detached.
        """
        hub = self.hub
        with hub.lock:
            lane = hub.lanes.get(subject_id)
            inflight = None
            if lane is not None:
                lane.closed = True
                lane.pending.clear()
                inflight = (lane.agent_id, lane.letta_run) if lane.letta_run else None
        if inflight and inflight[0]:
            self._quietly(hub.client.agents.messages.cancel, inflight[0], run_ids=[inflight[1]])
        if lane is not None:
            with hub.lock:
                hub.changed.wait_for(lambda: not lane.busy, timeout=60.0)
        for _ in range(10):
            agent_id, _ = self._lookup(subject_id, fresh=True)
            if agent_id is None:
                break
            self._delete_agent(agent_id)
            with hub.lock:
                hub.agents.pop(subject_id, None)
        with hub.lock:
            dropped = []
            for rid in [rid for rid, r in hub.runs.items() if r.subject_id == subject_id]:
                rec = hub.runs.pop(rid)
                if rec.status not in TERMINAL_STATUSES:
                    rec.status, rec.stop_reason, rec.finished_at = "cancelled", "subject deleted", _now()
                    dropped.append(rec)
            _forget(dropped)
            if hub.lanes.get(subject_id) is lane:
                hub.lanes.pop(subject_id, None)
            hub.agents.pop(subject_id, None)
            hub.changed.notify_all()

    def _delete_agent(self, agent_id: str) -> None:
        """Letta's clean delete: passages, then the agent, then its blocks."""
        from letta_client import NotFoundError

        client = self.hub.client
        try:
            blocks = client.agents.blocks.list(agent_id).items
        except NotFoundError:
            return
        while True:
            page = client.agents.passages.list(agent_id, limit=100)
            if not page:
                break
            for p in page:
                self._quietly(client.agents.passages.delete, p.id, agent_id=agent_id)
        try:
            client.agents.delete(agent_id)
        except NotFoundError:
            pass
        for b in blocks:
            self._quietly(client.blocks.delete, b.id)
        log.info("letta agent %s deleted with %d blocks", agent_id, len(blocks))

    # -- blocks ----------------------------------------------------------------------------------

    def _block_model(self, sid: str, b: Any) -> Block:
        return Block(
            id=b.id,
            label=b.label,
            description=b.description or "",
            value=b.value or "",
            limit=int(b.limit or 0),
            subject_id=sid,
        )

    def _raw_block(self, sid: str, label: str) -> Any:
        from letta_client import NotFoundError

        try:
            return self._with_agent(sid, lambda aid: self.hub.client.agents.blocks.retrieve(label, agent_id=aid), None)
        except NotFoundError:
            return None

    def list_blocks(self, subject_id: str) -> list[Block]:
        """The subject's blocks in creation order (kept in block metadata: Letta lists them in no fixed order)."""
        items = self._with_agent(subject_id, lambda aid: self.hub.client.agents.blocks.list(aid).items, [])
        order = {"human": 0, "summary": 1}  # blocks made by 0.2.0 carry no order: its two defaults first

        def key(pair: tuple[int, Any]) -> tuple[int, int, int, str]:
            i, b = pair
            stamp = (b.metadata or {}).get(ORDER_KEY) if isinstance(b.metadata, dict) else None
            if isinstance(stamp, int):
                return (1, stamp, i, "")
            return (0, order.get(b.label, 2), i, b.label or "")

        return [self._block_model(subject_id, b) for _, b in sorted(enumerate(items), key=key)]

    def get_block(self, subject_id: str, label: str) -> Block | None:
        b = self._raw_block(subject_id, label)
        return None if b is None else self._block_model(subject_id, b)

    def block_text(self, subject_id: str, label: str) -> tuple[str, str] | None:
        """(description, value) through one block retrieval (agent id cached)."""
        b = self._raw_block(subject_id, label)
        return None if b is None else (b.description or "", b.value or "")

    def create_block(self, subject_id: str, spec: BlockSpec, *, reset: bool) -> str:
        """Create and attach a block (creating the subject's agent if needed); an existing label is kept unless ``reset``."""
        client = self.hub.client
        agent_id = self._ensure(subject_id, "subject", [])
        existing = self._raw_block(subject_id, spec.label)
        if existing is not None:
            if not reset:
                return existing.id
            agent_id = self.agent_id(subject_id) or agent_id
            client.agents.blocks.detach(existing.id, agent_id=agent_id)
            self._quietly(client.blocks.delete, existing.id)
        block_id = self._new_block(spec)
        try:
            client.agents.blocks.attach(block_id, agent_id=agent_id)
        except Exception:
            self._quietly(client.blocks.delete, block_id)
            raise
        return block_id

    def delete_block(self, subject_id: str, label: str) -> None:
        b = self._raw_block(subject_id, label)
        if b is None:
            return
        agent_id = self.agent_id(subject_id)
        if agent_id:
            self._quietly(self.hub.client.agents.blocks.detach, b.id, agent_id=agent_id)
        self._quietly(self.hub.client.blocks.delete, b.id)

    def set_block_value(self, subject_id: str, label: str, value: str) -> None:
        """A direct edit, checked against the block's limit here (never truncated). No history on Letta.

        The block is read first: Letta 0.11.7 answers an update of a label the agent
        does not have without an error.
        """
        from .._validation import block_value

        if self.agent_id(subject_id) is None:
            raise SubjectNotFoundError(f"Subject {subject_id} not found")
        b = self._raw_block(subject_id, label)
        if b is None:
            raise BlockNotFoundError(f"Block {label!r} not found for subject {subject_id}")
        block_value(value, int(b.limit))
        self._with_agent(
            subject_id, lambda aid: self.hub.client.agents.blocks.update(label, agent_id=aid, value=value), None
        )

    def block_history(self, subject_id: str, label: str) -> list[BlockVersion]:
        """Not available: Letta keeps no block versions. Raises ``UnsupportedByEngineError``."""
        raise UnsupportedByEngineError(self.name, "block history")

    def restore_block(self, subject_id: str, label: str, version: int) -> str:
        """Not available: Letta keeps no block versions. Raises ``UnsupportedByEngineError``."""
        raise UnsupportedByEngineError(self.name, "block history")

    # -- messages and runs -----------------------------------------------------------------------

    def add_messages(
        self, subject_id: str, messages: Sequence[MessageIn], *, archive: bool, default_blocks: Sequence[BlockSpec]
    ) -> str:
        """Queue the batch on the subject's lane; returns our run id at once (the agent is made first if missing)."""
        kind = "user" if default_blocks else "subject"
        agent_id = self._ensure(subject_id, kind, default_blocks)
        rec = _Rec(
            id=f"{RUN_PREFIX}{uuid.uuid4()}",
            subject_id=subject_id,
            agent_id=agent_id,
            messages=list(messages),
            keys=[f"msg-{uuid.uuid4().hex}" for _ in messages],
            archive=archive,
            max_chars=self.settings.max_pass_chars,
            max_steps=self.settings.max_steps,
            journal=self._journal,
        )
        self._journal_add(rec)  # durable before the id is returned (SPEC §6)
        hub = self.hub
        with hub.lock:
            lane = hub.lanes.get(subject_id)
            if lane is None or lane.closed:
                lane = hub.lanes[subject_id] = _Lane()
            hub.runs[rec.id] = rec
            lane.pending.append(rec)
            hub.kick(subject_id)
        return rec.id

    def get_messages(
        self, subject_id: str, *, limit: int | None, before: datetime | None, after: datetime | None
    ) -> list[StoredMessage]:
        """The subject's *archived* messages (added with ``skip_vector_storage=False``, and file parts), oldest first.

        Letta keeps no other copy: batches go to the agent as one transcript and
        the agent's history is reset after each run, so messages that were not
        archived cannot be listed on this engine. A long message that Letta split
        into overlapping chunks is joined back (whitespace at the seams may differ).
        """
        return self._with_agent(subject_id, lambda aid: self._messages(aid, limit, before, after), [])

    def _messages(
        self, agent_id: str, limit: int | None, before: datetime | None, after: datetime | None
    ) -> list[StoredMessage]:
        groups: dict[str, list[tuple[Any, dict[str, Any] | None]]] = {}
        for p in self.hub.passages(agent_id):
            tags = list(p.tags or [])
            if not _visible_tags(tags):  # 0.2.0's "Initialized memory for ..." marker
                continue
            rec = _message_record(tags)
            groups.setdefault(rec["id"] if rec and rec.get("id") else p.id, []).append((p, rec))
        out: list[tuple[datetime, list[int], StoredMessage]] = []
        for key, parts in groups.items():
            p, found = parts[0]
            rec = found or {}
            tags = _visible_tags(p.tags or [])
            role = rec.get("role") or next((t for t in tags if t in _ROLES), "user")
            created = _utc(p.created_at) or _now()
            if before is not None and created >= before:
                continue
            if after is not None and created <= after:
                continue
            order = rec.get("order") if isinstance(rec.get("order"), list) else []
            out.append(
                (
                    created,
                    order,
                    StoredMessage(
                        id=f"{key}@{agent_id}",
                        role=role,
                        content=_merge_chunks([x.text or "" for x, _ in parts]),
                        name=rec.get("name"),
                        metadata=rec.get("metadata") or {},
                        created_at=created,
                        run_id=rec.get("run"),
                    ),
                )
            )
        out.sort(key=lambda x: (x[0], x[1]))
        messages = [m for _, _, m in out]
        return messages[-limit:] if limit else messages

    def delete_message(self, message_id: str) -> None:
        """Delete an archived message's passages (ids from ``get_messages``); an unknown id is a no-op."""
        from letta_client import NotFoundError, UnprocessableEntityError

        key, sep, agent_id = message_id.rpartition("@")
        if not sep or not key or not agent_id.startswith("agent-"):
            return
        client = self.hub.client
        try:
            passages = self.hub.passages(agent_id)
        except (NotFoundError, UnprocessableEntityError):
            return
        for p in passages:
            rec = _message_record(p.tags or [])
            if (rec and rec.get("id") == key) or p.id == key:
                self._quietly(client.agents.passages.delete, p.id, agent_id=agent_id)

    def _foreign_run(self, run_id: str, with_subject: bool = True) -> Run | None:
        """A Letta run id this process did not make (e.g. stored by 0.2.0): read from the server."""
        from letta_client import BadRequestError, NotFoundError, UnprocessableEntityError

        if not run_id.startswith("run-"):
            return None
        try:
            r = self.hub.client.runs.retrieve(run_id)
        except (NotFoundError, UnprocessableEntityError, BadRequestError):
            return None
        status, error, stop, stats = _outcome(r, None)
        agent = r.agent_id or ((r.metadata or {}).get("agent_id") if isinstance(r.metadata, dict) else None)
        subject = self._subject_of(agent, run_id) if with_subject else ""
        return Run(
            id=r.id,
            subject_id=subject,
            status=status,
            error=error,
            stop_reason=stop,  # type: ignore[arg-type]
            created_at=_utc(r.created_at) or _now(),
            started_at=_utc(r.created_at),
            finished_at=_utc(getattr(r, "completed_at", None)) if status in TERMINAL_STATUSES else None,
            learner="letta",
            llm_calls=stats[0],
            prompt_tokens=stats[1],
            completion_tokens=stats[2],
        )

    def _subject_of(self, agent_id: str | None, run_id: str) -> str:
        """The subject of a Letta run: a finished run forgets its agent, but its steps remember it."""
        client = self.hub.client
        try:
            if not agent_id:
                steps = client.runs.steps.list(run_id, limit=1).items
                agent_id = steps[0].agent_id if steps else None
            if not agent_id:
                return ""
            with self.hub.lock:
                known = next((s for s, a in self.hub.agents.items() if a == agent_id), None)
            if known is not None:
                return known
            tags = list(client.agents.retrieve(agent_id).tags or [])
        except Exception as exc:
            log.debug("subject of letta run %s unknown: %s", run_id, exc)
            return ""
        subj = [t[len(SUBJECT_TAG) :] for t in tags if t.startswith(SUBJECT_TAG)]
        raw = [t for t in tags if t != SDK_TAG]
        return subj[0] if subj else (raw[0] if raw else "")

    def get_run(self, run_id: str) -> Run | None:
        with self.hub.lock:
            rec = self.hub.runs.get(run_id)
            if rec is not None:
                return rec.model()
        return self._foreign_run(run_id)

    def wait_for_run(self, run_id: str, timeout: float) -> Run:
        """Our runs: wait on the lane's signal. Letta run ids: poll the server (at most every 250 ms)."""
        hub = self.hub
        deadline = time.monotonic() + timeout
        with hub.lock:
            rec = hub.runs.get(run_id)
            if rec is not None:
                while rec.status not in TERMINAL_STATUSES:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise TimeoutError(f"Run {run_id} did not complete within {timeout} seconds")
                    hub.changed.wait(left)
                return rec.model()
        delay = _POLL_FIRST
        while True:
            run = self._foreign_run(run_id, with_subject=False)
            if run is None:
                raise RunNotFoundError(f"Run {run_id} not found")
            if run.status in TERMINAL_STATUSES:
                return self._foreign_run(run_id) or run
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"Run {run_id} did not complete within {timeout} seconds")
            time.sleep(min(delay, left))
            delay = min(delay * 1.5, 0.25)

    def list_runs(self, subject_id: str, status: str | None) -> list[Run]:
        """Runs this process made for the subject, oldest first (Letta cannot list runs by agent)."""
        with self.hub.lock:
            return [
                r.model()
                for r in self.hub.runs.values()
                if r.subject_id == subject_id and (status is None or r.status == status)
            ]

    def _unknown(self, run_id: str, action: str) -> Exception:
        """The error for a run id that is not one of ours (call without the hub lock)."""
        if self._foreign_run(run_id, with_subject=False) is not None:
            return UnsupportedByEngineError(self.name, f"{action} of a run this process did not start")
        return RunNotFoundError(f"Run {run_id} not found")

    def cancel_run(self, run_id: str) -> Run:
        """Cancel a queued run (not yet sent to Letta); its messages are not learned."""
        hub = self.hub
        with hub.lock:
            rec = hub.runs.get(run_id)
            if rec is not None:
                lane = hub.lanes.get(rec.subject_id)
                if rec.status != "queued" or lane is None or rec not in lane.pending:
                    raise RunStateError(f"Run {run_id} is {rec.status}; only a queued run can be cancelled")
                lane.pending.remove(rec)
                _forget([rec])
                rec.status, rec.stop_reason, rec.finished_at = "cancelled", "cancelled", _now()
                hub.changed.notify_all()
                return rec.model()
        raise self._unknown(run_id, "cancelling")

    def retry_run(self, run_id: str) -> Run:
        """Put a failed run back on its subject's lane (passages already stored are not stored twice)."""
        hub = self.hub
        with hub.lock:
            rec = hub.runs.get(run_id)
            if rec is not None:
                if rec.status != "failed":
                    raise RunStateError(f"Run {run_id} is {rec.status}; only a failed run can be retried")
                rec.agent_id = hub.agents.get(rec.subject_id) or rec.agent_id
                if rec.journal is not None:
                    self._journal_add(rec)
                rec.status, rec.error, rec.stop_reason = "queued", None, None
                rec.started_at = rec.finished_at = None
                lane = hub.lanes.get(rec.subject_id)
                if lane is None or lane.closed:
                    lane = hub.lanes[rec.subject_id] = _Lane()
                lane.pending.append(rec)
                hub.kick(rec.subject_id)
                return rec.model()
        raise self._unknown(run_id, "retrying")

    # -- search ----------------------------------------------------------------------------------

    def search(
        self,
        subject_id: str,
        query: str,
        *,
        tags: Sequence[str],
        tag_match_mode: str,
        limit: int,
        start: datetime | None,
        end: datetime | None,
    ) -> list[SearchResult]:
        """Letta's semantic passage search, filtered here.

        The server applies tag filters *after* taking the ``top_k`` nearest, so tags
        are matched here over a large ``top_k`` that grows until ``limit`` results
        pass or every passage was seen. Letta returns no scores: ``score`` is
        ``1/rank`` in Letta's order (best first). Every query returns the nearest
        passages, however far (no relevance cut-off, as in Letta).
        """
        return self._with_agent(
            subject_id, lambda aid: self._search(aid, query, tags, tag_match_mode, limit, start, end), []
        )

    def _search(
        self,
        agent_id: str,
        query: str,
        tags: Sequence[str],
        mode: str,
        limit: int,
        start: datetime | None,
        end: datetime | None,
    ) -> list[SearchResult]:
        want = set(tags)
        top_k = max(50, limit * 5)
        while True:
            kwargs: dict[str, Any] = {"top_k": top_k}
            if start is not None:
                kwargs["start_datetime"] = start
            if end is not None:
                kwargs["end_datetime"] = end
            res = self.hub.client.agents.passages.search(agent_id, query=query, **kwargs)
            hits = list(res.results or [])
            found: list[SearchResult] = []
            for hit in hits:
                all_tags = list(hit.tags or [])
                visible = _visible_tags(all_tags)
                if not visible:  # 0.2.0's "Initialized memory for ..." marker
                    continue
                if want and (
                    (mode == "all" and not want <= set(visible)) or (mode != "all" and not want & set(visible))
                ):
                    continue
                created = _utc(hit.timestamp) or _now()
                if (start is not None and created < start) or (end is not None and created > end):
                    continue
                rec = _message_record(all_tags) or {}
                role = rec.get("role") or next((t for t in visible if t in _ROLES), None)
                found.append(
                    SearchResult(
                        content=hit.content,
                        score=0.0,
                        role=role,
                        tags=visible,
                        created_at=created,
                        message_id=f"{rec['id']}@{agent_id}" if rec.get("id") else None,
                        metadata=rec.get("metadata") or {},
                    )
                )
            if len(found) >= limit or len(hits) < top_k or top_k >= _MAX_TOP_K:
                break
            top_k = min(top_k * 8, _MAX_TOP_K)
        return [r.model_copy(update={"score": 1.0 / (i + 1)}) for i, r in enumerate(found[:limit])]
