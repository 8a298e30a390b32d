"""Prompt-formatted XML (SPEC §5) and transcripts, shared by every engine.

Byte-for-byte the original's format when the description has no ``&<>"``;
a value can never close its own block early (its own tag is neutralised).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from .models import Block, SearchResult


class _Said(Protocol):
    role: str
    content: str
    name: str | None
    created_at: datetime


def escape_attr(text: str) -> str:
    """Escape a value for a double-quoted XML attribute."""
    if not any(c in text for c in '&<>"'):
        return text
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")


def neutralise(value: str, tag: str) -> str:
    """Escape the ``<`` of any opening or closing ``tag`` inside ``value``.

    Only the block's own tag is touched, so ordinary markup passes unchanged.
    """
    if "<" not in value:
        return value
    pattern = re.compile(r"<(?=/?\s*" + re.escape(tag) + r"(?![A-Za-z0-9_.\-]))", re.IGNORECASE)
    return pattern.sub("&lt;", value)


def format_block(label: str, description: str, value: str) -> str:
    return f'<{label} description="{escape_attr(description)}">{neutralise(value, label)}</{label}>'


def format_block_obj(block: Block) -> str:
    return format_block(block.label, block.description, block.value)


def format_summary(value: str) -> str:
    return f"<conversation_summary>{neutralise(value, 'conversation_summary')}</conversation_summary>"


def format_context(blocks: Iterable[Block]) -> str:
    return "\n".join(format_block_obj(b) for b in blocks)


def with_context(instructions: str, context: str) -> str:
    """A system prompt with the memory context appended (a blank line between them)."""
    if not context:
        return instructions
    return f"{instructions}\n\n{context}" if instructions else context


@dataclass
class _Line:
    role: str
    content: str
    name: str | None
    created_at: datetime


def format_search_results(results: Iterable[SearchResult]) -> str:
    """Search results for a system prompt: the matching messages, best first, as a quoted transcript."""
    return transcript((_Line(r.role or "file", r.content, None, r.created_at) for r in results), "relevant_messages")


def format_time(dt: datetime) -> str:
    """Absolute minute-precision UTC time, as used in transcripts."""
    return dt.strftime("%Y-%m-%d %H:%M UTC")


def transcript(messages: Iterable[_Said], tag: str = "messages") -> str:
    """Render messages as a quoted transcript: one ``[time] role (name): text`` entry each.

    The text is quoted data: any occurrence of the wrapping tag inside a
    message is neutralised so a message cannot end the transcript early.
    """
    lines = []
    for m in messages:
        who = f"{m.role} ({m.name})" if m.name else m.role
        lines.append(f"[{format_time(m.created_at)}] {who}: {neutralise(m.content, tag)}")
    return f"<{tag}>\n" + "\n".join(lines) + f"\n</{tag}>"
