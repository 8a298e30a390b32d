"""Cutting long text into parts: one splitter for files, learner passes and Letta transcripts.

Nothing is ever dropped: the parts joined give the text back exactly. A cut
falls at a paragraph end, else a line end, else a space, in the second half
of a part; only text with no such place is cut mid-word.
"""

from __future__ import annotations


def split_text(text: str, size: int) -> list[str]:
    """``text`` in consecutive parts of at most ``size`` characters (``[]`` for ``""``)."""
    if size < 1:
        raise ValueError(f"size must be at least 1, got {size}")
    parts: list[str] = []
    while len(text) > size:
        cut = -1
        for sep in ("\n\n", "\n", " "):
            at = text.rfind(sep, 0, size)
            if at >= size // 2:
                cut = at + len(sep)
                break
        if cut <= 0:
            cut = size
        parts.append(text[:cut])
        text = text[cut:]
    if text:
        parts.append(text)
    return parts


def marked_parts(text: str, size: int) -> list[str]:
    """``text`` as ``(part i/n) ...`` pieces of at most ``size`` characters each, marker included.

    A text that fits is returned as it is, unmarked. ``size`` must leave room for
    the marker (at least 32).
    """
    if size < 32:
        raise ValueError(f"size must be at least 32, got {size}")
    if len(text) <= size:
        return [text]
    room = size - len("(part 1/1) ")
    while True:
        parts = split_text(text, max(1, room))
        marker = len(f"(part {len(parts)}/{len(parts)}) ")
        if marker + max(len(p) for p in parts) <= size:
            return [f"(part {i}/{len(parts)}) {p}" for i, p in enumerate(parts, 1)]
        room = max(1, size - marker)
