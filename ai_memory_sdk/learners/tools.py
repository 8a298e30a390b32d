"""The four memory tools (Letta's names) as pure functions on text.

The LLM agent loop, the offline learner, conflict replay and the tests all
use these; none of them touches a store.
"""

from __future__ import annotations

import html
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..models import Block

log = logging.getLogger(__name__)

TOOL_NAMES = ("memory_replace", "memory_insert", "memory_rethink", "memory_finish_edits")


class ToolError(Exception):
    """A refused tool call; its text is sent back to the model after ``Error:``."""


class LimitError(ToolError):
    """A refused edit that would make its block longer than the block's limit (counted per pass)."""


def _check_limit(new: str, limit: int, label: str) -> str:
    if len(new) > limit:
        raise LimitError(
            f"the edit would make block '{label}' {len(new)} characters long, over its limit of "
            f"{limit}; nothing was changed. Make the text shorter (e.g. memory_rethink with a condensed value)."
        )
    return new


def memory_replace(value: str, old_str: str, new_str: str, limit: int, label: str = "block") -> str:
    if not old_str:
        raise ToolError("old_str must not be empty")
    count = value.count(old_str)
    if count == 0 and not value:
        raise ToolError(
            f"old_str was not found in block '{label}': the block is empty; add text with memory_insert"
            " or memory_rethink"
        )
    if count == 0:
        raise ToolError(f"old_str was not found in block '{label}'; copy it exactly from the block's current value")
    if count > 1:
        raise ToolError(
            f"old_str occurs {count} times in block '{label}'; include more surrounding text so it is unique"
        )
    return _check_limit(value.replace(old_str, new_str, 1), limit, label)


def memory_insert(value: str, new_str: str, insert_line: int, limit: int, label: str = "block") -> str:
    lines = value.split("\n") if value else []
    if insert_line == -1:
        pos = len(lines)
    elif 0 <= insert_line <= len(lines):
        pos = insert_line
    else:
        raise ToolError(f"insert_line must be -1 or from 0 to {len(lines)} (block '{label}' has {len(lines)} lines)")
    lines[pos:pos] = new_str.split("\n")
    return _check_limit("\n".join(lines), limit, label)


def memory_rethink(value: str, new_memory: str, limit: int, label: str = "block") -> str:
    return _check_limit(new_memory, limit, label)


@dataclass
class EditOp:
    """One applied tool call, kept so a pass can be replayed on a newer value."""

    tool: str
    args: dict[str, Any]


_REQUIRED: Mapping[str, tuple[tuple[str, type], ...]] = {
    "memory_replace": (("label", str), ("old_str", str), ("new_str", str)),
    "memory_insert": (("label", str), ("new_str", str)),
    "memory_rethink": (("label", str), ("new_memory", str)),
    "memory_finish_edits": (),
}


@dataclass
class EditSession:
    """Staged block values for one pass: tool calls edit copies, never the store."""

    blocks: dict[str, Block]
    values: dict[str, str] = field(default_factory=dict)
    ops: list[EditOp] = field(default_factory=list)
    finished: bool = False
    limit_refusals: int = 0  # calls refused because the edit would exceed a block's limit

    def __post_init__(self) -> None:
        self.values = {label: b.value for label, b in self.blocks.items()}

    def changed(self) -> dict[str, str]:
        return {k: v for k, v in self.values.items() if v != self.blocks[k].value}

    def call(self, tool: str, raw_args: str | Mapping[str, Any] | None) -> tuple[bool, str]:
        """Execute one tool call; returns (ok, answer text for the tool message)."""
        try:
            args = self._parse(tool, raw_args)
            return True, self._apply(tool, args)
        except ToolError as exc:
            if isinstance(exc, LimitError):
                self.limit_refusals += 1
            return False, f"Error: {exc}"

    def _parse(self, tool: str, raw_args: str | Mapping[str, Any] | None) -> dict[str, Any]:
        if tool not in _REQUIRED:
            raise ToolError(f"unknown tool '{tool}'; available tools: {', '.join(TOOL_NAMES)}")
        if raw_args is None or raw_args == "":
            args: Any = {}
        elif isinstance(raw_args, str):
            try:
                # strict=False: grammar-constrained servers (llama.cpp) let raw newlines and tabs into
                # strings; they are unambiguous, so accept them rather than refuse the call.
                args = json.loads(raw_args, strict=False)
            except ValueError as exc:  # a JSONDecodeError, or e.g. an integer literal past Python's digit limit
                why = exc.msg if isinstance(exc, json.JSONDecodeError) else str(exc)
                raise ToolError(f"arguments are not valid JSON ({why}); send a JSON object") from None
        else:
            args = dict(raw_args)
        if not isinstance(args, dict):
            raise ToolError("arguments must be a JSON object")
        for name, typ in _REQUIRED[tool]:
            if name not in args:
                raise ToolError(f"missing required argument '{name}'")
            if not isinstance(args[name], typ):
                raise ToolError(f"argument '{name}' must be a {typ.__name__}")
        if tool == "memory_insert":
            line = args.get("insert_line", -1)
            if isinstance(line, str) and line.strip().lstrip("-").isdigit():
                line = int(line)
            if isinstance(line, bool) or not isinstance(line, int):
                raise ToolError("argument 'insert_line' must be an integer")
            args["insert_line"] = line
        if "label" in args and args["label"] not in self.values:
            raise ToolError(
                f"there is no block labelled '{args['label']}'; blocks: {', '.join(self.values) or '(none)'}"
            )
        checked: dict[str, Any] = args
        if tool == "memory_replace":
            checked = _unescaped_replace(self.values[args["label"]], checked)
        return checked

    def _apply(self, tool: str, args: dict[str, Any]) -> str:
        if tool == "memory_finish_edits":
            self.finished = True
            return "Edits finished."
        label = args["label"]
        new = apply_op(EditOp(tool, args), self.values[label], self.blocks[label].limit)
        self.values[label] = new
        self.ops.append(EditOp(tool, args))
        return f"OK: block '{label}' is now {len(new)}/{self.blocks[label].limit} characters."


def _unescaped_replace(value: str, args: dict[str, Any]) -> dict[str, Any]:
    """Undo HTML escaping that a chat template put between the block and the model, when provably safe.

    Some servers' templates HTML-escape the prompt (llama.cpp's ``chatml-function-calling``
    shows ``"`` as ``&#34;``), and a model then copies the entities into ``old_str``. Only
    when ``old_str`` does not occur at all as sent but its unescaped form occurs exactly
    once is it taken unescaped, and ``new_str`` with it (written from the same escaped
    view); the recorded op carries the repaired arguments.
    """
    old = args["old_str"]
    if "&" not in old or old in value:
        return args
    plain = html.unescape(old)
    if plain == old or not plain or value.count(plain) != 1:
        return args
    log.debug("memory_replace: old_str matched once after HTML-unescaping; new_str unescaped too")
    return {**args, "old_str": plain, "new_str": html.unescape(args["new_str"])}


def apply_op(op: EditOp, value: str, limit: int) -> str:
    """Apply one recorded edit to ``value`` (raises ToolError when it no longer fits)."""
    a = op.args
    label = a.get("label", "block")
    if op.tool == "memory_replace":
        return memory_replace(value, a["old_str"], a["new_str"], limit, label)
    if op.tool == "memory_insert":
        return memory_insert(value, a["new_str"], a.get("insert_line", -1), limit, label)
    if op.tool == "memory_rethink":
        return memory_rethink(value, a["new_memory"], limit, label)
    raise ToolError(f"unknown tool '{op.tool}'")


def replay(ops: Sequence[EditOp], label: str, value: str, limit: int) -> str:
    """Apply a pass's edits of one block on a newer value of it (the application edited it during the pass).

    Edits that no longer apply (their ``old_str`` is gone, or the result would
    exceed the limit) are skipped with a warning; the others keep their order.
    """
    for op in ops:
        if op.args.get("label") == label:
            try:
                value = apply_op(op, value, limit)
            except ToolError as exc:
                log.warning("edit of %r skipped: the block changed during the pass (%s)", label, exc)
    return value
