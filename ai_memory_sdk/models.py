"""Pydantic models at the package boundary (what the public API returns)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

RunStatus = Literal["queued", "running", "completed", "failed", "cancelled"]
RunKind = Literal["learn", "consolidate"]
TERMINAL_STATUSES: frozenset[str] = frozenset({"completed", "failed", "cancelled"})


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True)

    def get(self, key: str, default: Any = None) -> Any:
        """Dict-style access, for code written against letta-client objects or dicts."""
        return getattr(self, key, default)


class Block(_Model):
    """A learned context block (``limit`` is its character limit, as in Letta)."""

    id: str
    label: str
    description: str
    value: str
    limit: int
    subject_id: str
    created_at: datetime | None = None
    updated_at: datetime | None = None

    @property
    def char_limit(self) -> int:
        return self.limit


class BlockVersion(_Model):
    """One stored value of a block; ``run_id`` is None for direct edits."""

    version: int
    value: str
    run_id: str | None = None
    created_at: datetime


class Run(_Model):
    """The background learning work for one ``add_messages`` batch."""

    id: str
    subject_id: str
    kind: RunKind = "learn"
    status: RunStatus
    error: str | None = None
    stop_reason: str | None = None
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    learner: str | None = None
    llm_calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0


class SubjectSummary(_Model):
    """One subject as the store lists it (``list_subjects``): what it holds and how its runs stand."""

    subject_id: str
    agent_id: str
    created_at: datetime
    blocks: int = 0
    messages: int = 0
    runs_queued: int = 0
    runs_failed: int = 0
    last_run_at: datetime | None = None


class StoredMessage(_Model):
    """A message as stored (oldest first from ``get_messages``)."""

    id: str
    role: str
    content: str
    name: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    created_at: datetime
    run_id: str | None = None


class SearchResult(_Model):
    """One archival passage found by ``search_passages`` (best first)."""

    content: str
    score: float
    role: str | None = None
    tags: list[str] = Field(default_factory=list)
    created_at: datetime
    message_id: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)


class MessageIn(BaseModel):
    """A validated, normalised input message (internal, see ``_validation``)."""

    role: str
    content: str
    name: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    created_at: datetime
    tags: list[str] = Field(default_factory=list)


class BlockSpec(BaseModel):
    """A block to create: used for the default ``human``/``summary`` pair."""

    label: str
    description: str
    value: str = ""
    limit: int = 10000
