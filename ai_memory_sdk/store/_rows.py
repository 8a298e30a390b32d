"""Rows to models, shared by the SQL backends (the same columns in SQLite and PostgreSQL).

Times are stored as epoch seconds (a float), JSON as text, so both backends
read rows the same way and these converters are written once.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Any

from ..models import Block, BlockVersion, MessageIn, Run, StoredMessage, SubjectSummary
from .base import MAX_ATTEMPTS, PassageRow

RUN_COLS = (
    "r.id, s.subject_id, r.kind, r.status, r.error, r.stop_reason, r.created_at, r.started_at, r.finished_at,"
    " r.learner, r.llm_calls, r.prompt_tokens, r.completion_tokens"
)
BLOCK_COLS = "b.id, b.label, b.description, b.value, b.char_limit, s.subject_id, b.created_at, b.updated_at"
MSG_COLS = "m.id, m.role, m.content, m.name, m.metadata, m.created_at, r.id"
PASSAGE_COLS = "p.pk, p.content, p.role, p.tags, p.created_at, m.id, m.metadata"  # FROM passages p LEFT JOIN messages m
VERSION_COLS = "version, value, run_id, created_at"
SUMMARY_COLS = (
    "s.subject_id, s.agent_id, s.created_at,"
    " (SELECT count(*) FROM blocks b WHERE b.subject_pk=s.pk),"
    " (SELECT count(*) FROM messages m WHERE m.subject_pk=s.pk),"
    " (SELECT count(*) FROM runs r WHERE r.subject_pk=s.pk AND r.status='queued'),"
    " (SELECT count(*) FROM runs r WHERE r.subject_pk=s.pk AND r.status='failed'),"
    " (SELECT max(r.created_at) FROM runs r WHERE r.subject_pk=s.pk)"
)
CRASHED_ERROR = f"the process applying this run died {MAX_ATTEMPTS} times; retry_run() requeues it"
"""``runs.error`` of a run failed by recovery at ``MAX_ATTEMPTS`` (``stop_reason='crashed'``)."""


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4()}"


def utc(ts: float) -> datetime:
    """Epoch seconds as an aware UTC datetime."""
    return datetime.fromtimestamp(ts, timezone.utc)


def maybe_utc(ts: float | None) -> datetime | None:
    return None if ts is None else utc(ts)


def run_row(row: Sequence[Any]) -> Run:
    return Run(
        id=row[0],
        subject_id=row[1],
        kind=row[2],
        status=row[3],
        error=row[4],
        stop_reason=row[5],
        created_at=utc(row[6]),
        started_at=maybe_utc(row[7]),
        finished_at=maybe_utc(row[8]),
        learner=row[9],
        llm_calls=row[10],
        prompt_tokens=row[11],
        completion_tokens=row[12],
    )


def block_row(row: Sequence[Any]) -> Block:
    return Block(
        id=row[0],
        label=row[1],
        description=row[2],
        value=row[3],
        limit=row[4],
        subject_id=row[5],
        created_at=maybe_utc(row[6]),
        updated_at=maybe_utc(row[7]),
    )


def message_row(row: Sequence[Any]) -> StoredMessage:
    return StoredMessage(
        id=row[0],
        role=row[1],
        content=row[2],
        name=row[3],
        metadata=json.loads(row[4]) if row[4] else {},
        created_at=utc(row[5]),
        run_id=row[6],
    )


def version_row(row: Sequence[Any]) -> BlockVersion:
    return BlockVersion(version=row[0], value=row[1], run_id=row[2], created_at=utc(row[3]))


def summary_row(row: Sequence[Any]) -> SubjectSummary:
    return SubjectSummary(
        subject_id=row[0],
        agent_id=row[1],
        created_at=utc(row[2]),
        blocks=row[3],
        messages=row[4],
        runs_queued=row[5],
        runs_failed=row[6],
        last_run_at=maybe_utc(row[7]),
    )


def passage_row(row: Sequence[Any]) -> tuple[int, PassageRow]:
    """(pk, row) from ``PASSAGE_COLS``."""
    return row[0], PassageRow(
        content=row[1],
        role=row[2],
        tags=json.loads(row[3]),
        created_at=utc(row[4]),
        message_id=row[5],
        metadata=json.loads(row[6]) if row[6] else {},
    )


def passage_tags(msg: MessageIn) -> str:
    """The stored tags of a message's passage: its role, then its own tags (JSON, no duplicates)."""
    return dumps(list(dict.fromkeys([msg.role, *msg.tags])))


def like_pattern(query: str) -> str:
    """A case-folded ``LIKE ... ESCAPE '\\'`` pattern matching ids that contain ``query``."""
    escaped = query.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def dumps(value: Any) -> str:
    """Compact JSON for stored objects (metadata, traces, session items)."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)
