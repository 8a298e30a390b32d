"""Prompt-formatted XML (docs/prompt-formats.md), shared by every engine.

Byte-for-byte the original's format when the description has no ``&<>"``;
a value can never close its own block early (its own tag is neutralised).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import timezone

from .models import Block, SearchResult


def escape_attr(text: str) -> str:
    """Escape a value for a double-quoted XML attribute."""
    if "&" not in text and "<" not in text and ">" not in text and '"' not in text:  # the usual case, fast
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


def format_search_results(results: Iterable[SearchResult], tag: str = "relevant_messages") -> str:
    """Search results for a system prompt, best first: ``[time] role: text`` lines that cannot close the list."""
    lines = [
        f"[{r.created_at.astimezone(timezone.utc):%Y-%m-%d %H:%M} UTC] {r.role or 'file'}: {neutralise(r.content, tag)}"
        for r in results
    ]
    return f"<{tag}>\n" + "\n".join(lines) + f"\n</{tag}>"
