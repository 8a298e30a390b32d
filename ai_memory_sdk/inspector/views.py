"""What the inspector's pages show, computed from engine models: diffs, version timelines, trace steps, pages.

Pure functions over models and plain JSON, so the pages stay templates and
these are tested without a browser. Nothing here escapes HTML: the templates
do (autoescape), so every value from the store reaches the page as text.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from ..models import BlockVersion

_TOKEN = re.compile(r"\s+|[^\s]+")
_CONTEXT = 80  # unchanged characters shown on each side of a change; longer unchanged runs are folded
_SHORT_JSON = 60  # JSON this short stays on one line


@dataclass(frozen=True)
class Segment:
    """A piece of a diff: ``same``, ``added``, ``removed``, or ``folded`` (unchanged text, named by its size)."""

    op: Literal["same", "added", "removed", "folded"]
    text: str


def diff(old: str | None, new: str) -> list[Segment]:
    """Word-level diff of two block values; ``old`` None (no earlier version kept) shows ``new`` as added."""
    if old is None:
        return [Segment("added", new)] if new else []
    a, b = _TOKEN.findall(old), _TOKEN.findall(new)
    out: list[Segment] = []
    opcodes = difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes()
    for i, (tag, i1, i2, j1, j2) in enumerate(opcodes):
        if tag == "equal":
            out += _fold("".join(a[i1:i2]), first=i == 0, last=i == len(opcodes) - 1)
            continue
        if i2 > i1:
            out.append(Segment("removed", "".join(a[i1:i2])))
        if j2 > j1:
            out.append(Segment("added", "".join(b[j1:j2])))
    return out


def _fold(text: str, *, first: bool, last: bool) -> list[Segment]:
    """Unchanged text: kept whole when short, else its ends next to the changes and the size of what is folded."""
    head = "" if first else text[:_CONTEXT]
    tail = "" if last else text[-_CONTEXT:]
    if len(text) <= len(head) + len(tail) + _CONTEXT:
        return [Segment("same", text)]
    folded = len(text) - len(head) - len(tail)
    pieces = [Segment("same", head)] if head else []
    pieces.append(Segment("folded", f"{folded:,} unchanged characters"))
    return pieces + ([Segment("same", tail)] if tail else [])


def changed(segments: Iterable[Segment]) -> bool:
    return any(s.op in ("added", "removed") for s in segments)


@dataclass(frozen=True)
class VersionView:
    """One version of a block in its timeline, with the change from the version before it."""

    version: int
    value: str
    created_at: datetime
    run_id: str | None
    current: bool
    previous: int | None  # the version it is compared with (None: the oldest kept)
    same_as: int | None  # a direct edit that wrote an earlier version's text again (a restore, most likely)
    diff: list[Segment]


def timeline(history: Sequence[BlockVersion]) -> list[VersionView]:
    """A block's kept versions, newest first, each diffed against the one before it."""
    ordered = sorted(history, key=lambda v: v.version)
    views: list[VersionView] = []
    for i, v in enumerate(ordered):
        before = ordered[i - 1] if i else None
        same_as = None
        if v.run_id is None:
            same_as = next((o.version for o in reversed(ordered[:i]) if o.value == v.value), None)
        views.append(
            VersionView(
                version=v.version,
                value=v.value,
                created_at=v.created_at,
                run_id=v.run_id,
                current=i == len(ordered) - 1,
                previous=before.version if before else None,
                same_as=same_as,
                diff=diff(before.value if before else None, v.value),
            )
        )
    return views[::-1]


@dataclass(frozen=True)
class BlockChange:
    """What a run wrote to one block: the new version and its diff from the version before."""

    label: str
    version: VersionView


def run_changes(histories: Mapping[str, Sequence[BlockVersion]], run_ids: Iterable[str]) -> list[BlockChange]:
    """The versions written by these runs (a pass records its first run's id), oldest first per block."""
    ids = set(run_ids)
    out: list[BlockChange] = []
    for label, history in histories.items():
        for v in reversed(timeline(history)):
            if v.run_id in ids:
                out.append(BlockChange(label, v))
    return out


# -- traces ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Item:
    """A named value shown as text (JSON, indented, when it is not a string)."""

    name: str
    text: str


@dataclass(frozen=True)
class SentMessage:
    role: str
    note: str  # how it relates to the step before (echoed, grown), or ""
    text: str
    extra: list[Item] = field(default_factory=list)


@dataclass(frozen=True)
class CallView:
    name: str
    call_id: str
    arguments: str
    answer: str | None


@dataclass(frozen=True)
class StepView:
    """One recorded LLM step of a pass; keys this page does not know are listed as they are, in ``other``."""

    title: str
    sent: list[SentMessage]
    tools: list[str]
    reply: str
    calls: list[CallView]
    usage: str
    other: list[Item]


def pretty(value: Any) -> str:
    """A value as readable text: strings as they are, anything else as JSON (indented unless it is short)."""
    if isinstance(value, str):
        return value
    compact = json.dumps(value, ensure_ascii=False, default=str)
    if len(compact) <= _SHORT_JSON:
        return compact
    return json.dumps(value, indent=2, ensure_ascii=False, default=str)


def pretty_arguments(raw: Any) -> str:
    """Tool-call arguments: JSON text is indented; text that is not JSON is shown as the model sent it."""
    if isinstance(raw, str):
        try:
            return pretty(json.loads(raw))
        except ValueError:
            return raw
    return pretty(raw)


def steps(raw: Any) -> list[StepView]:
    """The trace's ``steps`` as views, whatever shape each one has (unknown parts are shown as JSON)."""
    if not isinstance(raw, list):
        return [] if raw is None else [StepView("steps", [], [], "", [], "", [Item("steps", pretty(raw))])]
    return [_step(i, s) for i, s in enumerate(raw, 1)]


def _step(index: int, raw: Any) -> StepView:
    if not isinstance(raw, dict):
        return StepView(f"Step {index}", [], [], "", [], "", [Item("step", pretty(raw))])
    rest = dict(raw)
    number = rest.pop("step", index)
    sent: list[SentMessage] = []
    tools: list[str] = []
    request = rest.get("request")
    if isinstance(request, dict):
        rest.pop("request")
        request = dict(request)
        messages = request.pop("messages", None)
        if isinstance(messages, list):
            sent = [_sent(m) for m in messages]
        elif messages is not None:
            request["messages"] = messages
        names = request.pop("tools", None)
        if isinstance(names, list) and all(isinstance(n, str) for n in names):
            tools = names
        elif names is not None:
            request["tools"] = names
        if request:
            rest["request"] = request
    reply, calls = "", []
    response = rest.get("response")
    if isinstance(response, dict):
        rest.pop("response")
        response = dict(response)
        content = response.pop("content", "")
        reply = pretty(content) if content else ""
        raw_calls = response.pop("tool_calls", [])
        if isinstance(raw_calls, list):
            calls = [c for c in raw_calls if isinstance(c, dict)]
            if len(calls) != len(raw_calls):
                response["tool_calls"] = raw_calls
                calls = []
        if response:
            rest["response"] = response
    answers: dict[str, str] = {}
    raw_answers = rest.get("answers")
    if isinstance(raw_answers, list) and all(isinstance(a, dict) and "tool_call_id" in a for a in raw_answers):
        rest.pop("answers")
        answers = {str(a["tool_call_id"]): pretty(a.get("answer", "")) for a in raw_answers}
    usage = ""
    raw_usage = rest.get("usage")
    if isinstance(raw_usage, dict) and {"prompt_tokens", "completion_tokens"} <= raw_usage.keys():
        rest.pop("usage")
        usage = f"{raw_usage['prompt_tokens']} prompt + {raw_usage['completion_tokens']} completion tokens"
    views = [
        CallView(
            name=str(c.get("name", "?")),
            call_id=str(c.get("id", "")),
            arguments=pretty_arguments(c.get("arguments", "")),
            answer=answers.pop(str(c.get("id", "")), None),
        )
        for c in calls
    ]
    if answers:  # answers to calls the step does not list: kept, not dropped
        rest["answers"] = [{"tool_call_id": k, "answer": v} for k, v in answers.items()]
    other = [Item(str(k), pretty(v)) for k, v in rest.items()]
    return StepView(f"Step {number}", sent, tools, reply, views, usage, other)


def _sent(raw: Any) -> SentMessage:
    """A message of a step's request, as the learner recorded it (unchanged ones are left out by the learner)."""
    if not isinstance(raw, dict):
        return SentMessage("?", "", pretty(raw))
    m = dict(raw)
    m.pop("index", None)
    role = str(m.pop("role", "?"))
    echo = m.pop("echo", None)
    if echo is not None:
        call = m.pop("tool_call_id", None)
        what = {"response": "the previous step's response", "answer": "the answer to a call of the previous step"}
        note = f"sent back: {what.get(str(echo), pretty(echo))}" + (f" ({call})" if call else "")
        return SentMessage(role, note, "", _items(m))
    if "content_tail" in m:
        kept = m.pop("prefix_chars", 0)
        tail = m.pop("content_tail")
        note = f"as in the step before for its first {kept:,} characters, then:" if kept else ""
        return SentMessage(role, note, pretty(tail), _items(m))
    content = m.pop("content", "")
    return SentMessage(role, "", pretty(content) if content is not None else "", _items(m))


def _items(values: Mapping[str, Any]) -> list[Item]:
    return [Item(str(k), pretty(v)) for k, v in values.items()]


def edits(raw: Any) -> list[tuple[str, list[Item]]]:
    """The trace's ``edits`` (tool and arguments of each applied call), as (tool, arguments)."""
    if not isinstance(raw, list):
        return [] if raw is None else [("edits", [Item("value", pretty(raw))])]
    out: list[tuple[str, list[Item]]] = []
    for e in raw:
        if isinstance(e, dict) and isinstance(e.get("args"), dict):
            out.append((str(e.get("tool", "?")), _items(e["args"])))
        else:
            out.append(("?", [Item("edit", pretty(e))]))
    return out


# -- paging ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pager:
    """Page ``page`` (from 1) of ``total`` items, ``size`` a page."""

    page: int
    size: int
    total: int

    @property
    def offset(self) -> int:
        return (self.page - 1) * self.size

    @property
    def pages(self) -> int:
        return max(1, -(-self.total // self.size))

    @property
    def first(self) -> int:
        return min(self.offset + 1, self.total)

    @property
    def last(self) -> int:
        return min(self.offset + self.size, self.total)

    @property
    def has_prev(self) -> bool:
        return self.page > 1

    @property
    def has_next(self) -> bool:
        return self.page < self.pages


def fill(length: int, limit: int) -> int:
    """How full a block is, in whole percent (can pass 100 for a block stored before its limit was lowered)."""
    return round(100 * length / limit) if limit > 0 else 0
