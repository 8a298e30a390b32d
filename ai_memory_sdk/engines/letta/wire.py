"""What this engine writes to and reads from a Letta server, in 0.2.0's format where 0.2.0 had one.

Agents carry the tags ``[subj:<id>, <id>, ai-memory-sdk]`` (0.2.0 finds them,
and 0.2.0's agents are found here) and a name Letta accepts. A batch reaches
the sleeptime agent as 0.2.0's ``<messages>`` transcript. An archived message
is a passage whose tags hold its role (as in 0.2.0) and, in one more tag, its
record (id, run, name, metadata, order), because Letta's search results carry
only text, time and tags. Pure functions: no client, no state.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
from collections.abc import Sequence
from datetime import datetime
from typing import Any, NamedTuple

from letta_client.types.agents.run import Run as LettaRun

from ..._text import marked_parts
from ..._time import as_utc
from ...formatting import neutralise
from ...models import MessageIn

SDK_TAG = "ai-memory-sdk"  # 0.2.0's tag on every agent and passage it made
SUBJECT_TAG = "subj:"  # 0.2.0's namespaced subject tag
MESSAGE_TAG = "ai-memory-sdk:message="  # a passage's message record (JSON): id, role, run, name, metadata, order
RUN_PREFIX = "sdkrun-"  # our run ids; Letta's own are "run-..."
ORDER_KEY = "ai_memory_sdk_order"  # block metadata: creation order (Letta lists an agent's blocks in no fixed order)
MESSAGES_PROMPT = "The following message interactions have occured"  # 0.2.0's wording, spelling included
_NAME_OK = re.compile(r"[A-Za-z0-9 _-]+")  # what Letta accepts in an agent name
_NAME_BAD = re.compile(r"[^A-Za-z0-9_-]+")
_MAX_MESSAGE_TAG = 2000  # beyond this a passage's message record drops its metadata


# ----------------------------------------------------------------------------- agents
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
    """A new agent's tags: 0.2.0's subject tags, which also hold its user tag (the raw id)."""
    return [SUBJECT_TAG + subject_id, subject_id, SDK_TAG]


def lookup_tags(subject_id: str) -> list[list[str]]:
    """The tag sets that find a subject's agent, in order: 0.2.0's subject agents, then its user agents."""
    return [[SUBJECT_TAG + subject_id, SDK_TAG], [subject_id, SDK_TAG]]


def subject_of_tags(tags: Sequence[str]) -> str | None:
    """The subject an agent's tags name: ``subj:<id>`` with ``<id>`` beside it, else a 0.2.0 user agent's raw id.

    A subject agent always carries both tags, so a user id that itself starts
    with ``subj:`` is not mistaken for a namespaced one.
    """
    for t in tags:
        if t.startswith(SUBJECT_TAG) and t[len(SUBJECT_TAG) :] in tags:
            return t[len(SUBJECT_TAG) :]
    return next((t for t in tags if t != SDK_TAG), None)


# ----------------------------------------------------------------------------- transcripts
def transcript_chunks(messages: Sequence[MessageIn], max_chars: int) -> list[str]:
    """What the sleeptime agent is sent: 0.2.0's ``<messages>`` transcript, in parts of at most ``max_chars``.

    One ``role: text`` line per message, as 0.2.0 formatted it; a message longer than
    the limit is split into ``role: (part i/n) text`` lines, never truncated. A message
    cannot close the transcript early (its ``<messages>`` tags are neutralised).
    """
    budget = max(200, max_chars - 100)
    lines: list[str] = []
    for m in messages:
        text = neutralise(m.content, "messages")
        if text:
            prefix = f"{m.role}: "
            lines += [prefix + part for part in marked_parts(text, budget - len(prefix))]
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


def merge_chunks(texts: Sequence[str]) -> str:
    """Rejoin the chunks Letta's splitter made of one long passage text (best effort).

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


# ----------------------------------------------------------------------------- passage tags
def passage_tags(m: MessageIn, key: str, run_id: str, order: list[int]) -> list[str]:
    """The role and message tags (as 0.2.0: role + ``ai-memory-sdk``), plus one tag holding the message record.

    A record longer than 2,000 characters drops its metadata (and says so with
    ``metadata_dropped``): Letta stores tags in one row, and the text itself is
    never cut.
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


def message_record(tags: Sequence[str]) -> dict[str, Any] | None:
    """The record ``passage_tags`` put in a passage's tags; None for passages 0.2.0 (or anyone else) made."""
    for t in tags:
        if t.startswith(MESSAGE_TAG):
            try:
                rec = json.loads(t[len(MESSAGE_TAG) :])
            except ValueError:
                return None
            return rec if isinstance(rec, dict) else None
    return None


def visible_tags(tags: Sequence[str]) -> list[str]:
    """A passage's tags as the application set them (role and message tags), without this package's own."""
    return [t for t in tags if t != SDK_TAG and not t.startswith(MESSAGE_TAG)]


# ----------------------------------------------------------------------------- server answers
def parse_server_time(value: object) -> datetime | None:
    """A server timestamp (datetime or ISO string, naive meaning UTC) as an aware UTC datetime; None if unreadable."""
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
    if not isinstance(value, datetime):
        return None
    return as_utc(value)


class Outcome(NamedTuple):
    """A Letta run as our run sees it: status, error, stop reason and what it spent."""

    status: str
    error: str | None
    stop_reason: str | None
    llm_calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0


def _dict(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def run_outcome(run: LettaRun | None, max_steps: int | None) -> Outcome:
    """What a Letta run came to; ``None`` stands for a run that vanished with its agent (cancelled).

    A run that completed at the step limit failed: the agent stopped before
    finishing its edits. Letta 0.11.7 keeps the stop reason and usage in
    ``metadata.result``; newer servers have ``stop_reason`` on the run.
    """
    if run is None:
        return Outcome("cancelled", None, "cancelled")
    result = _dict(_dict(run.metadata).get("result"))
    stop: object = run.stop_reason
    reported = result.get("stop_reason")
    if not stop:
        stop = reported.get("stop_reason") if isinstance(reported, dict) else reported
    stop_reason = str(stop) if stop else None
    usage = _dict(result.get("usage"))
    stats = (
        int(usage.get("step_count") or 0),
        int(usage.get("prompt_tokens") or 0),
        int(usage.get("completion_tokens") or 0),
    )
    if run.status == "completed":
        if stop_reason == "max_steps":
            limit = f" ({max_steps})" if max_steps else ""
            error = f"the memory agent reached its step limit{limit} before finishing its edits"
            return Outcome("failed", error, stop_reason, *stats)
        return Outcome("completed", None, stop_reason, *stats)
    if run.status == "cancelled":
        return Outcome("cancelled", None, stop_reason or "cancelled", *stats)
    if run.status == "failed":
        error = _dict(run.metadata).get("error") or "the Letta run failed without an error message"
        return Outcome("failed", str(error), stop_reason or "error", *stats)
    return Outcome("running", None, None, *stats)
