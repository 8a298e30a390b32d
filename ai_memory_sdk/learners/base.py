"""The learner interface: one pass gets blocks and new messages, returns edits.

A learner never touches the store; the worker applies what it returns.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from .._text import marked_parts
from ..models import Block, StoredMessage
from .tools import EditOp


@dataclass
class PassInput:
    """What one learner pass sees: the subject's blocks and only the new messages."""

    subject_id: str
    blocks: list[Block]
    messages: list[StoredMessage]
    now: datetime


@dataclass
class PassOutput:
    """Staged result of a pass: final values of changed blocks and the ops that made them."""

    values: dict[str, str] = field(default_factory=dict)
    ops: list[EditOp] = field(default_factory=list)
    llm_calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    stop_reason: str | None = None
    limit_refusals: int = 0  # edits refused for a block's character limit (the subject is consolidated next)
    trace: list[dict[str, Any]] = field(default_factory=list)  # JSON-able steps of the pass, for the inspector

    def usage(self) -> dict[str, int]:
        """What the pass spent: ``llm_calls``, ``prompt_tokens``, ``completion_tokens`` (a run's stats)."""
        return {
            "llm_calls": self.llm_calls,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
        }

    def merge(self, part: PassOutput) -> None:
        """Add the result of a later pass over the same blocks (a batch learned in several passes)."""
        self.values.update(part.values)
        self.ops.extend(part.ops)
        self.llm_calls += part.llm_calls
        self.prompt_tokens += part.prompt_tokens
        self.completion_tokens += part.completion_tokens
        self.stop_reason = part.stop_reason
        self.limit_refusals += part.limit_refusals
        self.trace.extend(part.trace)


class Learner(Protocol):
    """``name`` is recorded on each run; a pass raises LearnerError to fail the run.

    ``learn`` reads new messages into the blocks. ``consolidate`` gets the
    blocks only (``inp.messages`` is empty) and rewrites them: duplicates
    merged, contradictions resolved in favour of the newer dated fact, each
    block condensed toward half its limit, no fact that still stands dropped.
    """

    name: str

    def learn(self, inp: PassInput) -> PassOutput: ...

    def consolidate(self, inp: PassInput) -> PassOutput: ...


def split_for_passes(messages: Sequence[StoredMessage], max_chars: int) -> list[list[StoredMessage]]:
    """Cut new messages into consecutive passes of at most ``max_chars`` of text.

    One message longer than that is split into parts marked ``(part i/n)``
    (``_text.marked_parts``); nothing is ever dropped or truncated.
    """
    passes: list[list[StoredMessage]] = []
    current: list[StoredMessage] = []
    size = 0
    for msg in messages:
        parts = marked_parts(msg.content, max_chars)
        pieces = [msg] if len(parts) == 1 else [msg.model_copy(update={"content": p}) for p in parts]
        for piece in pieces:
            if current and size + len(piece.content) > max_chars:
                passes.append(current)
                current, size = [], 0
            current.append(piece)
            size += len(piece.content)
    if current:
        passes.append(current)
    return passes
