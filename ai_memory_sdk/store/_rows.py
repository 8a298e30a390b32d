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

from ..models import Block, Run, StoredMessage

RUN_COLS = (
    "r.id, s.subject_id, r.kind, r.status, r.error, r.stop_reason, r.created_at, r.started_at, r.finished_at,"
    " r.learner, r.llm_calls, r.prompt_tokens, r.completion_tokens"
)
BLOCK_COLS = "b.id, b.label, b.description, b.value, b.char_limit, s.subject_id, b.created_at, b.updated_at"
MSG_COLS = "m.id, m.role, m.content, m.name, m.metadata, m.created_at, r.id"


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


def dumps(value: Any) -> str:
    """Compact JSON for stored objects (metadata, traces, session items)."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)
