"""The ``letta`` engine: the same API over a Letta server, through letta-client 1.x.

As ai-memory-sdk 0.2.0 did: one ``sleeptime_agent`` per subject, Letta blocks,
``create_async`` runs and archival passages (formats: ``wire``). What it does
differently, and why (details and measurements: docs/dev/letta-notes.md):

- **Runs of one subject never overlap on the server.** ``add_messages``
  returns a run id of *this* package at once and puts the batch on the
  subject's lane (``lanes``), which sends it after the previous Letta run
  ended, coalesced with what queued behind it. A batch waits in a local
  journal (``journal``) until its run ends, so it survives a crash: the next
  process for the same server sends it. Runs are known to the process that
  holds them (``get_run`` also accepts Letta's own ``run-...`` ids).
- **Archival writes leave the caller's thread** (Letta 0.11.7 has no batch
  insert): the lane sends them while the Letta run works, and the run
  completes only when they are stored.
- **Agent history stays flat**: the lane resets the agent's messages after
  each run (without it every run re-sends all earlier ones).
- **Deleting a subject leaves nothing behind.** Letta keeps an agent's blocks
  and passages when the agent is deleted; ``delete_subject`` deletes the
  passages, the agent and its blocks (only Letta's empty archive row stays:
  no API removes it).
- **Failures are reported.** A Letta run that ends ``failed``/``cancelled``,
  or that stops at the step limit, ends our run ``failed``/``cancelled`` with
  Letta's error and ``stop_reason``.
- **A silent server is named**: connection refused, DNS failure or timeout
  raise ``ServerUnreachableError`` with the server's URL, from every method.

Not available on this engine (``UnsupportedByEngineError``): block history and
restore, consolidation, run messages and traces, sessions. ``get_messages``/
``delete_message`` cover archived messages only (see their docstrings).
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import time
import uuid
import weakref
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from typing import Any, TypeVar

from letta_client import BadRequestError, Letta, NotFoundError, UnprocessableEntityError, omit
from letta_client.types.agent_state import AgentState
from letta_client.types.block_response import BlockResponse

from ..._fork import PerProcess
from ..._validation import ROLES, block_value
from ...config import Settings, default_path
from ...errors import (
    BlockNotFoundError,
    RunNotFoundError,
    RunStateError,
    SubjectExistsError,
    SubjectNotFoundError,
    UnsupportedByEngineError,
)
from ...models import (
    TERMINAL_STATUSES,
    Block,
    BlockSpec,
    BlockVersion,
    MessageIn,
    Run,
    SearchResult,
    StoredMessage,
    SubjectSummary,
)
from ...store.journal import Journal, journal_path
from .lanes import Batch, ServerLanes, acquire, drop_from_journal, release
from .wire import (
    ORDER_KEY,
    RUN_PREFIX,
    SDK_TAG,
    SUBJECT_TAG,
    agent_name,
    lookup_tags,
    merge_chunks,
    message_record,
    parse_server_time,
    run_outcome,
    subject_of_tags,
    subject_tags,
    visible_tags,
)

log = logging.getLogger(__name__)

T = TypeVar("T")

_MAX_TOP_K = 5000
_PAGE = 100
_DEFAULT_SERVER = "https://api.letta.com"  # letta-client's default (Letta Cloud)


def _now() -> datetime:
    return datetime.now(timezone.utc)


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


def _kind(blocks: Sequence[BlockSpec]) -> str:
    """The word in a new agent's name, as 0.2.0 chose it: its user helpers made blocks, its subjects none."""
    return "user" if blocks else "subject"


class LettaEngine:
    """Memory on a Letta server (Letta Cloud or self-hosted) through ``letta_client.Letta``."""

    name = "letta"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._embedding = _embedding_options(settings.letta_embedding)
        self.url = settings.base_url or os.environ.get("LETTA_BASE_URL") or _DEFAULT_SERVER
        self._server = (self.url, settings.api_key or "")
        self._shared: PerProcess[ServerLanes] = PerProcess(lambda: acquire(self._server, self._connect))
        self._shared.get()
        self._closed = False
        self._accepted: set[str] = set()  # run ids close() waits for
        self._journal = Journal(journal_path(settings.path, default_path()), server=self.url)
        self._resume()
        _open_engines.add(self)
        log.info(
            "letta engine: server %s, model %s, embedding %s",
            self.url,
            settings.letta_model,
            settings.letta_embedding or "the server's default",
        )

    def _connect(self) -> ServerLanes:
        client = Letta(api_key=self.settings.api_key, base_url=self.url, max_retries=2, timeout=60.0)
        return ServerLanes(client, self.url, workers=max(4, self.settings.workers))

    @property
    def lanes(self) -> ServerLanes:
        """This process's lanes of the server (a forked child makes its own on first use)."""
        return self._shared.get()

    @property
    def client(self) -> Letta:
        """The ``letta_client.Letta`` in use (for what this package does not wrap)."""
        return self.lanes.raw_client

    def info(self) -> dict[str, str]:
        return {"engine": self.name, "server": self.url, "model": self.settings.letta_model}

    def close(self) -> None:
        """Wait up to ``close_timeout`` for the batches this engine accepted to be learned, then let go.

        Runs still going are named in one WARNING: their batches stay in the
        journal, and the next process that opens the letta engine on it resumes them.
        """
        if self._closed:
            return
        self._closed = True
        _open_engines.discard(self)
        lanes = self.lanes
        going = lanes.wait_ended(sorted(self._accepted), self.settings.close_timeout)
        if going:
            log.warning(
                "letta engine closed after %.0f s with %d run(s) not learned yet: %s. Their batches stay in %s;"
                " the next process that opens the letta engine on it resumes them",
                self.settings.close_timeout,
                len(going),
                ", ".join(going),
                self._journal.path,
            )
        release(self._server, lanes)  # the journal stays open while a shared lane may still use it

    # -- journal ---------------------------------------------------------------------------------

    def _journal_add(self, batch: Batch) -> None:
        self._journal.add(
            batch.id,
            batch.subject_id,
            batch.agent_id,
            batch.order,
            batch.messages,
            batch.keys,
            archive=batch.archive,
            max_chars=batch.max_chars,
            max_steps=batch.max_steps,
        )

    def _accept(self, run_id: str) -> None:
        lanes = self.lanes
        with lanes.lock:
            if len(self._accepted) >= 1000:  # forget ended runs now and then
                ended = {r for r in self._accepted if (b := lanes.runs.get(r)) is None or b.status in TERMINAL_STATUSES}
                self._accepted -= ended
            self._accepted.add(run_id)

    def _resume(self) -> None:
        """Adopt the batches a dead process accepted for this server: onto their lanes, oldest first."""
        batches = [
            Batch(
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
                letta_runs=[e.inflight] if e.inflight else [],
            )
            for e in self._journal.adopt()
        ]
        for b in batches:
            self._accept(b.id)
        if batches:
            self.lanes.enqueue(batches)

    # -- agents ----------------------------------------------------------------------------------

    def _lookup(self, sid: str, *, fresh: bool = False) -> tuple[str | None, bool]:
        """(agent id, whether it came from the cache): tags ``subj:<id>`` first, then the raw id (0.2.0 users)."""
        lanes = self.lanes
        if not fresh:
            with lanes.lock:
                hit = lanes.agents.get(sid)
            if hit:
                return hit, True
        for tags in lookup_tags(sid):
            items = lanes.client.agents.list(tags=tags, match_all_tags=True, limit=1).items
            if items:
                with lanes.lock:
                    lanes.agents[sid] = items[0].id
                return items[0].id, False
        with lanes.lock:
            lanes.agents.pop(sid, None)
        return None, False

    def _with_agent(self, sid: str, fn: Callable[[str], T], missing: T) -> T:
        """Call ``fn(agent_id)``; a 404 on a cached id re-reads the agent once (another process may have reset it)."""
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

    def _create_agent(self, sid: str, blocks: Sequence[BlockSpec]) -> str:
        client = self.lanes.client
        block_ids: list[str] = []
        try:
            for spec in blocks:
                block_ids.append(self._new_block(spec))
            agent = client.agents.create(
                name=agent_name(_kind(blocks), sid),
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
        with self.lanes.lock:
            self.lanes.agents[sid] = agent.id
        log.info("letta agent %s created for %s %r", agent.id, _kind(blocks), sid)
        return agent.id

    def _new_block(self, spec: BlockSpec) -> str:
        return self.lanes.client.blocks.create(
            label=spec.label,
            value=spec.value,
            description=spec.description,
            limit=spec.limit,
            metadata={ORDER_KEY: time.time_ns()},
        ).id

    @staticmethod
    def _quietly(fn: Callable[..., object], *args: Any, **kwargs: Any) -> None:
        try:
            fn(*args, **kwargs)
        except Exception as exc:
            log.debug("ignored during cleanup: %s", exc)

    def _ensure(self, sid: str, blocks: Sequence[BlockSpec]) -> str:
        agent_id, _ = self._lookup(sid)
        if agent_id:
            return agent_id
        with self.lanes.create_lock(sid):  # two threads adding a new subject's first batch make one agent
            agent_id, _ = self._lookup(sid)
            return agent_id or self._create_agent(sid, blocks)

    # -- subjects --------------------------------------------------------------------------------

    def agent_id(self, subject_id: str) -> str | None:
        return self._lookup(subject_id)[0]

    def create_subject(self, subject_id: str, *, reset: bool, blocks: Sequence[BlockSpec]) -> str:
        """Create the subject's agent (with ``blocks``); ``reset`` first deletes everything of the old one.

        The agent is named ``subconscious_agent_user_...`` when it starts with
        blocks (0.2.0's user helpers), ``subconscious_agent_subject_...`` otherwise.
        """
        with self.lanes.create_lock(subject_id):
            existing, _ = self._lookup(subject_id, fresh=True)
            if existing:
                if not reset:
                    raise SubjectExistsError(existing, subject_id)
                self.delete_subject(subject_id)
            return self._create_agent(subject_id, blocks)

    def delete_subject(self, subject_id: str) -> None:
        """Delete the subject's agents with their passages and blocks (Letta leaves those behind otherwise).

        Queued batches are dropped and a run in flight is cancelled first. Every
        agent found for the id goes (0.2.0 could make more than one).
        """
        lanes = self.lanes
        with lanes.lock:
            lane = lanes.lanes.get(subject_id)
            inflight = None
            if lane is not None:
                lane.closed = True
                lane.pending.clear()
                inflight = (lane.agent_id, lane.letta_run) if lane.letta_run else None
        if inflight and inflight[0]:
            self._quietly(lanes.client.agents.messages.cancel, inflight[0], run_ids=[inflight[1]])
        if lane is not None:
            with lanes.lock:
                lanes.changed.wait_for(lambda: not lane.busy, timeout=60.0)
        for _ in range(10):
            agent_id, _ = self._lookup(subject_id, fresh=True)
            if agent_id is None:
                break
            self._delete_agent(agent_id)
            with lanes.lock:
                lanes.agents.pop(subject_id, None)
        with lanes.lock:
            dropped = []
            for rid in [rid for rid, b in lanes.runs.items() if b.subject_id == subject_id]:
                batch = lanes.runs.pop(rid)
                if batch.status not in TERMINAL_STATUSES:
                    batch.status, batch.stop_reason, batch.finished_at = "cancelled", "subject deleted", _now()
                    dropped.append(batch)
            drop_from_journal(dropped)
            if lanes.lanes.get(subject_id) is lane:
                lanes.lanes.pop(subject_id, None)
            lanes.agents.pop(subject_id, None)
            lanes.changed.notify_all()

    def _delete_agent(self, agent_id: str) -> None:
        """Letta's clean delete: passages, then the agent, then its blocks."""
        client = self.lanes.client
        try:
            blocks = client.agents.blocks.list(agent_id).items
        except NotFoundError:
            return
        while True:
            page = client.agents.passages.list(agent_id, limit=_PAGE)
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

    def list_subjects(self, *, query: str | None, offset: int, limit: int) -> list[SubjectSummary]:
        """The subjects of this server's agents tagged ``ai-memory-sdk`` (0.2.0's and ours), by subject id.

        ``query`` keeps ids that contain it (case-insensitive). ``blocks`` comes with
        the agent list; ``messages`` stays 0 (counting an agent's passages costs a
        request per agent); run counts and ``last_run_at`` cover the runs this process holds.
        """
        return self._subjects(query)[offset : offset + limit]

    def count_subjects(self, *, query: str | None) -> int:
        return len(self._subjects(query))

    def _subjects(self, query: str | None) -> list[SubjectSummary]:
        lanes = self.lanes
        found: dict[str, tuple[bool, AgentState]] = {}  # the agent _lookup picks: newest, subj: tag first
        after: str | None = None
        while True:
            page = lanes.client.agents.list(
                tags=[SDK_TAG],
                limit=_PAGE,
                ascending=True,
                after=after or omit,
                include_relationships=["tags", "memory"],  # Letta 0.11.7
                include=["agent.tags", "agent.blocks"],  # newer servers
            ).items
            for agent in page:
                tags = list(agent.tags or [])
                sid = subject_of_tags(tags)
                if sid is None or (query and query.casefold() not in sid.casefold()):
                    continue
                namespaced = SUBJECT_TAG + sid in tags
                if sid not in found or namespaced or not found[sid][0]:
                    found[sid] = (namespaced, agent)
            if len(page) < _PAGE:
                break
            after = page[-1].id
        with lanes.lock:
            runs = [b for b in lanes.runs.values() if b.subject_id in found]
        out = []
        for sid in sorted(found):
            agent = found[sid][1]
            mine = [b for b in runs if b.subject_id == sid]
            blocks = agent.memory.blocks if agent.memory is not None and agent.memory.blocks else agent.blocks
            times = [b.finished_at or b.started_at or b.created_at for b in mine]
            out.append(
                SubjectSummary(
                    subject_id=sid,
                    agent_id=agent.id,
                    created_at=parse_server_time(agent.created_at) or _now(),
                    blocks=len(blocks or []),
                    runs_queued=sum(b.status == "queued" for b in mine),
                    runs_failed=sum(b.status == "failed" for b in mine),
                    last_run_at=max(times) if times else None,
                )
            )
        return out

    # -- blocks ----------------------------------------------------------------------------------

    def _raw_block(self, sid: str, label: str) -> BlockResponse | None:
        try:
            return self._with_agent(
                sid, lambda aid: self.lanes.client.agents.blocks.retrieve(label, agent_id=aid), None
            )
        except NotFoundError:
            return None

    def list_blocks(self, subject_id: str) -> list[Block]:
        """The subject's blocks in creation order (kept in block metadata: Letta lists them in no fixed order)."""
        none: list[BlockResponse] = []
        items = self._with_agent(subject_id, lambda aid: self.lanes.client.agents.blocks.list(aid).items, none)
        order = {"human": 0, "summary": 1}  # blocks made by 0.2.0 carry no order: its two defaults first

        def key(pair: tuple[int, BlockResponse]) -> tuple[int, int, int, str]:
            i, b = pair
            stamp = (b.metadata or {}).get(ORDER_KEY) if isinstance(b.metadata, dict) else None
            if isinstance(stamp, int):
                return (1, stamp, i, "")
            return (0, order.get(b.label or "", 2), i, b.label or "")

        return [
            Block(
                id=b.id,
                label=b.label or "",
                description=b.description or "",
                value=b.value or "",
                limit=int(b.limit or 0),
                subject_id=subject_id,
            )
            for _, b in sorted(enumerate(items), key=key)
        ]

    def block_text(self, subject_id: str, label: str) -> tuple[str, str] | None:
        """(description, value) through one block retrieval (agent id cached)."""
        b = self._raw_block(subject_id, label)
        return None if b is None else (b.description or "", b.value or "")

    def create_block(self, subject_id: str, spec: BlockSpec, *, reset: bool) -> str:
        """Create and attach a block (creating the subject's agent if needed); an existing label is kept unless ``reset``."""
        client = self.lanes.client
        agent_id = self._ensure(subject_id, [])
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
            self._quietly(self.lanes.client.agents.blocks.detach, b.id, agent_id=agent_id)
        self._quietly(self.lanes.client.blocks.delete, b.id)

    def set_block_value(self, subject_id: str, label: str, value: str) -> None:
        """A direct edit, checked against the block's limit here (never truncated). No history on Letta.

        The block is read first: Letta 0.11.7 answers an update of a label the agent
        does not have without an error.
        """
        if self.agent_id(subject_id) is None:
            raise SubjectNotFoundError(f"Subject {subject_id} not found")
        b = self._raw_block(subject_id, label)
        if b is None:
            raise BlockNotFoundError(f"Block {label!r} not found for subject {subject_id}")
        block_value(value, int(b.limit or 0))
        self._with_agent(
            subject_id, lambda aid: self.lanes.client.agents.blocks.update(label, agent_id=aid, value=value), None
        )

    def block_history(self, subject_id: str, label: str) -> list[BlockVersion]:
        """Not available: Letta keeps no block versions. Raises ``UnsupportedByEngineError``."""
        raise UnsupportedByEngineError(self.name, "block history")

    def restore_block(self, subject_id: str, label: str, version: int) -> str:
        """Not available: Letta keeps no block versions. Raises ``UnsupportedByEngineError``."""
        raise UnsupportedByEngineError(self.name, "block history")

    # -- messages --------------------------------------------------------------------------------

    def add_messages(
        self, subject_id: str, messages: Sequence[MessageIn], *, archive: bool, default_blocks: Sequence[BlockSpec]
    ) -> str:
        """Queue the batch on the subject's lane; returns our run id at once (the agent is made first if missing)."""
        agent_id = self._ensure(subject_id, default_blocks)
        batch = Batch(
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
        self._journal_add(batch)  # durable before the id is returned
        self._accept(batch.id)
        self.lanes.enqueue([batch])
        return batch.id

    def consolidate(self, subject_id: str) -> str:
        """Not available: a Letta sleeptime agent has no consolidation pass. Raises ``UnsupportedByEngineError``."""
        raise UnsupportedByEngineError(self.name, "consolidation")

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
        groups: dict[str, list[tuple[str, list[str], datetime | None, dict[str, Any] | None]]] = {}
        for p in self.lanes.list_passages(agent_id):
            tags = list(p.tags or [])
            if not visible_tags(tags):  # 0.2.0's "Initialized memory for ..." marker
                continue
            rec = message_record(tags)
            key = str(rec["id"]) if rec and rec.get("id") else p.id or ""
            groups.setdefault(key, []).append((p.text or "", tags, parse_server_time(p.created_at), rec))
        out: list[tuple[datetime, list[int], StoredMessage]] = []
        for key, parts in groups.items():
            _, tags, created_at, found = parts[0]
            rec = found or {}
            role = rec.get("role") or next((t for t in visible_tags(tags) if t in ROLES), "user")
            created = created_at or _now()
            if (before is not None and created >= before) or (after is not None and created <= after):
                continue
            stamp = rec.get("order")
            order: list[int] = stamp if isinstance(stamp, list) else []
            message = StoredMessage(
                id=f"{key}@{agent_id}",
                role=role,
                content=merge_chunks([text for text, _, _, _ in parts]),
                name=rec.get("name"),
                metadata=rec.get("metadata") or {},
                created_at=created,
                run_id=rec.get("run"),
            )
            out.append((created, order, message))
        out.sort(key=lambda x: (x[0], x[1]))
        messages = [m for _, _, m in out]
        return messages[-limit:] if limit else messages

    def delete_message(self, message_id: str) -> None:
        """Delete an archived message's passages (ids from ``get_messages``); an unknown id is a no-op."""
        key, sep, agent_id = message_id.rpartition("@")
        if not sep or not key or not agent_id.startswith("agent-"):
            return
        client = self.lanes.client
        try:
            passages = self.lanes.list_passages(agent_id)
        except (NotFoundError, UnprocessableEntityError):
            return
        for p in passages:
            rec = message_record(p.tags or [])
            if p.id and ((rec and rec.get("id") == key) or p.id == key):
                self._quietly(client.agents.passages.delete, p.id, agent_id=agent_id)

    # -- runs ------------------------------------------------------------------------------------

    def _foreign_run(self, run_id: str, with_subject: bool = True) -> Run | None:
        """A Letta run id this process did not make (e.g. stored by 0.2.0): read from the server."""
        if not run_id.startswith("run-"):
            return None
        try:
            r = self.lanes.client.runs.retrieve(run_id)
        except (NotFoundError, UnprocessableEntityError, BadRequestError):
            return None
        outcome = run_outcome(r, None)
        meta = r.metadata if isinstance(r.metadata, dict) else {}
        agent = r.agent_id or meta.get("agent_id")
        subject = self._subject_of(agent if isinstance(agent, str) else None, run_id) if with_subject else ""
        return Run(
            id=r.id,
            subject_id=subject,
            status=outcome.status,  # type: ignore[arg-type]  # run_outcome gives RunStatus values
            error=outcome.error,
            stop_reason=outcome.stop_reason,
            created_at=parse_server_time(r.created_at) or _now(),
            started_at=parse_server_time(r.created_at),
            finished_at=parse_server_time(r.completed_at) if outcome.status in TERMINAL_STATUSES else None,
            learner="letta",
            llm_calls=outcome.llm_calls,
            prompt_tokens=outcome.prompt_tokens,
            completion_tokens=outcome.completion_tokens,
        )

    def _subject_of(self, agent_id: str | None, run_id: str) -> str:
        """The subject of a Letta run: a finished run forgets its agent, but its steps remember it."""
        client = self.lanes.client
        try:
            if not agent_id:
                steps = client.runs.steps.list(run_id, limit=1).items
                agent_id = steps[0].agent_id if steps else None
            if not agent_id:
                return ""
            with self.lanes.lock:
                known = next((s for s, a in self.lanes.agents.items() if a == agent_id), None)
            if known is not None:
                return known
            tags = list(client.agents.retrieve(agent_id).tags or [])
        except Exception as exc:
            log.debug("subject of letta run %s unknown: %s", run_id, exc)
            return ""
        return subject_of_tags(tags) or ""

    def get_run(self, run_id: str) -> Run | None:
        with self.lanes.lock:
            batch = self.lanes.runs.get(run_id)
            if batch is not None:
                return batch.model()
        return self._foreign_run(run_id)

    def wait_for_run(self, run_id: str, timeout: float | None) -> Run:
        """Our runs: wait on the lane's signal. Letta run ids: poll the server (at most every 250 ms).

        ``timeout`` None waits as long as the run takes.
        """
        lanes = self.lanes
        with lanes.lock:
            batch = lanes.runs.get(run_id)
        if batch is not None:
            if lanes.wait_ended([run_id], timeout):
                raise TimeoutError(f"Run {run_id} did not complete within {timeout} seconds")
            with lanes.lock:
                return batch.model()
        deadline = None if timeout is None else time.monotonic() + timeout
        delay = 0.02
        while True:
            run = self._foreign_run(run_id, with_subject=False)
            if run is None:
                raise RunNotFoundError(f"Run {run_id} not found")
            if run.status in TERMINAL_STATUSES:
                return self._foreign_run(run_id) or run
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise TimeoutError(f"Run {run_id} did not complete within {timeout} seconds")
            time.sleep(delay if left is None else min(delay, left))
            delay = min(delay * 1.5, 0.25)

    def list_runs(self, subject_id: str, status: str | None) -> list[Run]:
        """Runs this process holds for the subject, oldest first (Letta cannot list runs by agent)."""
        with self.lanes.lock:
            return [
                b.model()
                for b in self.lanes.runs.values()
                if b.subject_id == subject_id and (status is None or b.status == status)
            ]

    def _unknown(self, run_id: str, action: str) -> Exception:
        """The error for a run id that is not one of ours (call without the lanes' lock)."""
        if self._foreign_run(run_id, with_subject=False) is not None:
            return UnsupportedByEngineError(self.name, f"{action} of a run this process did not start")
        return RunNotFoundError(f"Run {run_id} not found")

    def cancel_run(self, run_id: str) -> Run:
        """Cancel a queued run (not yet sent to Letta); its messages are not learned."""
        lanes = self.lanes
        with lanes.lock:
            batch = lanes.runs.get(run_id)
            if batch is not None:
                lane = lanes.lanes.get(batch.subject_id)
                if batch.status != "queued" or lane is None or batch not in lane.pending:
                    raise RunStateError(f"Run {run_id} is {batch.status}; only a queued run can be cancelled")
                lane.pending.remove(batch)
                drop_from_journal([batch])
                batch.status, batch.stop_reason, batch.finished_at = "cancelled", "cancelled", _now()
                lanes.changed.notify_all()
                return batch.model()
        raise self._unknown(run_id, "cancelling")

    def retry_run(self, run_id: str) -> Run:
        """Put a failed run back on its subject's lane (passages already stored are not stored twice)."""
        lanes = self.lanes
        with lanes.lock:
            batch = lanes.runs.get(run_id)
            if batch is not None:
                if batch.status != "failed":
                    raise RunStateError(f"Run {run_id} is {batch.status}; only a failed run can be retried")
                batch.agent_id = lanes.agents.get(batch.subject_id) or batch.agent_id
                if batch.journal is not None:
                    self._journal_add(batch)
                batch.status, batch.error, batch.stop_reason = "queued", None, None
                batch.started_at = batch.finished_at = None
                self._accept(batch.id)
                lanes.enqueue([batch])
                return batch.model()
        raise self._unknown(run_id, "retrying")

    def run_messages(self, run_id: str) -> list[StoredMessage]:
        """Not available: Letta keeps no per-run copy of a batch. Raises ``UnsupportedByEngineError``."""
        raise UnsupportedByEngineError(self.name, "run messages")

    def get_trace(self, run_id: str) -> dict[str, Any] | None:
        """Not available: the memory agent's steps stay on the Letta server. Raises ``UnsupportedByEngineError``."""
        raise UnsupportedByEngineError(self.name, "run traces")

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
            res = self.lanes.client.agents.passages.search(
                agent_id,
                query=query,
                top_k=top_k,
                start_datetime=start if start is not None else omit,
                end_datetime=end if end is not None else omit,
            )
            hits = list(res.results or [])
            found: list[SearchResult] = []
            for hit in hits:
                all_tags = list(hit.tags or [])
                visible = visible_tags(all_tags)
                if not visible:  # 0.2.0's "Initialized memory for ..." marker
                    continue
                if want and (
                    (mode == "all" and not want <= set(visible)) or (mode != "all" and not want & set(visible))
                ):
                    continue
                created = parse_server_time(hit.timestamp) or _now()
                if (start is not None and created < start) or (end is not None and created > end):
                    continue
                rec = message_record(all_tags) or {}
                role = rec.get("role") or next((t for t in visible if t in ROLES), None)
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

    # -- sessions --------------------------------------------------------------------------------

    def session_items(self, session_id: str, limit: int | None) -> list[dict[str, Any]]:
        """Not available: Letta has no store for agent-SDK sessions. Raises ``UnsupportedByEngineError``."""
        raise UnsupportedByEngineError(self.name, "sessions")

    def add_session_items(self, session_id: str, items: Sequence[dict[str, Any]], *, subject_id: str) -> None:
        """Not available (see ``session_items``)."""
        raise UnsupportedByEngineError(self.name, "sessions")

    def pop_session_item(self, session_id: str) -> dict[str, Any] | None:
        """Not available (see ``session_items``)."""
        raise UnsupportedByEngineError(self.name, "sessions")

    def clear_session(self, session_id: str) -> None:
        """Not available (see ``session_items``)."""
        raise UnsupportedByEngineError(self.name, "sessions")


_open_engines: weakref.WeakSet[LettaEngine] = weakref.WeakSet()


@atexit.register
def _close_open_engines() -> None:
    """An engine never closed is closed at exit the same way: its accepted batches get ``close_timeout`` to finish."""
    for engine in list(_open_engines):
        try:
            engine.close()
        except Exception as exc:  # pragma: no cover - exit goes on
            log.warning("letta engine: closing at exit failed: %s", exc)
