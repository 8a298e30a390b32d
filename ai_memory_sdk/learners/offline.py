"""The offline learner: deterministic rules, no network.

It keeps ``human`` as ``Key: value`` lines learned from the user's first-person
statements and ``summary`` as one dated line per batch, within each block's
limit. A full block is condensed, never cut: duplicate keys merge, the oldest
summary lines fold into one line that counts them, and a fact that still does
not fit is refused (counted in ``limit_refusals``, named in the summary and in
a warning) rather than squeezing out a fact that stands. It makes the SDK work
end to end without an LLM; it is not a substitute for one.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from .._time import as_utc
from ..models import Block, StoredMessage
from .base import PassInput, PassOutput
from .tools import EditOp

log = logging.getLogger(__name__)

_OPPOSITE = {"likes": "Dislikes", "dislikes": "Likes"}  # list keys (lower case) and the list an item leaves
_MAX_KEY = 40
_STOP = r"(?=\s*(?:[.!?;,]|$)|\s+(?:and|but|because|so|which|who|since|though|too|very|a lot|anymore)\b)"
_VALUE = r"([^.!?;,\n]{1,80}?)" + _STOP
_DATE = re.compile(r"\b\d{4}-\d{2}-\d{2}\b")
_PART = re.compile(r"\(part (\d+)/(\d+)\) ")  # the marker of a long message split over passes (_text.marked_parts)
_SENTENCE = re.compile(r".+?[.!?](?=\s|$)")
_QUOTE_WIDTH = 100  # a batch with nothing learned is summarised by a quote of its first sentence, this long at most
_FULL = "Not kept (no room in human)"
_NOTHING = "nothing new"

_FACTS: list[tuple[str, re.Pattern[str], Callable[[str], str]]] = []


def _fact(key: str, pattern: str, fmt: Callable[[str], str] = str.strip) -> None:
    _FACTS.append((key, re.compile(pattern, re.IGNORECASE), fmt))


def _title(s: str) -> str:
    return " ".join(w[:1].upper() + w[1:] for w in s.strip().split())


_fact("Name", r"\b(?:my name is|my name's|call me|i am called)\s+([A-Za-z][\w'-]*(?:\s+(?-i:[A-Z])[\w'-]*)?)", _title)
_fact("Name", r"\b(?:i'm|i am)\s+((?-i:[A-Z])[a-z'-]+)(?=[.!?,;]|\s+(?:and|from|here)\b|$)", _title)
_fact("Age", r"\b(?:i'm|i am)\s+(\d{1,3})\s+years?\s+old")
_fact("Location", r"\b(?:i live in|i'm living in|i am living in|i moved to|i'm based in|i am based in)\s+" + _VALUE)
_fact("From", r"\b(?:i'm from|i am from|i come from)\s+" + _VALUE)
_fact("Job", r"\b(?:i work as|i'm working as|my job is|i am employed as)\s+(?:an?\s+)?" + _VALUE)
_fact(
    "Job",
    r"\b(?:i'm|i am)\s+an?\s+((?:[a-z-]+\s+){0,2}(?:engineer|developer|teacher|doctor|nurse|student|designer|manager|writer|scientist|lawyer|chef|artist|researcher|programmer|consultant|accountant|architect|musician|photographer|analyst|founder|pilot|farmer|baker))\b",
)
_fact("Employer", r"\b(?:i work at|i work for|i'm working at|i am working at)\s+" + _VALUE)
_fact("Studies", r"\b(?:i study|i'm studying|i am studying|i major in)\s+" + _VALUE)
_fact("Partner", r"\bmy (?:wife|husband|partner|girlfriend|boyfriend)(?:'s name)? is\s+([A-Z][\w'-]*)", _title)
_fact(
    "Pet",
    r"\b(?:i have|i've got|we have)\s+an?\s+((?:[a-z]+\s+)?(?:dog|cat|parrot|hamster|rabbit|bird|fish|turtle|snake|horse|pet))\b",
)
_fact("Language", r"\bi speak\s+" + _VALUE)
_fact("Birthday", r"\bmy birthday is\s+(?:on\s+)?" + _VALUE)
_LIKE = re.compile(r"\bi (?:really |absolutely |also )?(?:love|like|enjoy|adore|am into|'m into)\s+" + _VALUE, re.I)
_DISLIKE = re.compile(
    r"\bi (?:really )?(?:hate|dislike|can't stand|cannot stand|don't like|do not like)\s+" + _VALUE, re.I
)
_FAVORITE = re.compile(r"\bmy favou?rite\s+([a-z ]{1,30}?)\s+is\s+" + _VALUE, re.I)


# -- the human block: application lines and Key: value facts ------------------------------------


@dataclass(frozen=True)
class _Change:
    """One statement: ``key`` set to ``value``, or (``item``) ``value`` added to the list ``key``."""

    key: str
    value: str
    item: bool = False

    def describe(self) -> str:
        return f"{self.key.lower()} {self.value}"


def _statements(text: str) -> list[_Change]:
    """What one first-person message states, in the order it is applied (a later statement wins)."""
    out = [_Change(key, fmt(m.group(1)).strip()) for key, pattern, fmt in _FACTS if (m := pattern.search(text))]
    out += [_Change("Favorite " + m.group(1).strip().lower(), m.group(2).strip()) for m in _FAVORITE.finditer(text)]
    negated = {m.group(1).strip() for m in _DISLIKE.finditer(text)}
    out += [_Change("Dislikes", item, item=True) for item in sorted(negated)]
    out += [
        _Change("Likes", item, item=True)
        for m in _LIKE.finditer(text)
        if (item := m.group(1).strip()) and item not in negated
    ]
    return [c for c in out if c.value]


def _items(value: str) -> list[str]:
    return [i.strip() for i in value.split(";") if i.strip()]


def _dated_later(old: str, new: str) -> bool:
    """True when ``old`` carries a later date than ``new`` (both must carry one): the older line stands."""
    old_dates, new_dates = _DATE.findall(old), _DATE.findall(new)
    return bool(old_dates and new_dates) and max(old_dates) > max(new_dates)


def _unique_lines(lines: Iterable[str]) -> list[str]:
    """Each line once: the first of lines equal up to letter case and spacing."""
    seen: set[str] = set()
    out: list[str] = []
    for line in lines:
        key = " ".join(line.split()).casefold()
        if key not in seen:
            seen.add(key)
            out.append(line)
    return out


@dataclass
class _Profile:
    """``human`` as the application's own lines (kept verbatim) and facts keyed case-insensitively.

    Reading a block already merges it: a key given twice keeps its newest value (a
    later date, else the later line), a list key given twice gets the items of both.
    """

    other: list[str] = field(default_factory=list)
    facts: dict[str, tuple[str, str]] = field(default_factory=dict)  # key.lower() -> (key as written, value)

    @classmethod
    def parse(cls, value: str) -> _Profile:
        profile = cls()
        for line in value.split("\n"):
            key, sep, val = line.partition(": ")
            key, val = key.strip(), " ".join(val.split())
            if sep and key and val and len(key) <= _MAX_KEY:
                if key.lower() in _OPPOSITE:
                    for item in _items(val):
                        profile.apply(_Change(key, item, item=True))
                else:
                    profile.apply(_Change(key, val), by_date=True)
            elif line.strip():
                profile.other.append(line)
        return profile

    def copy(self) -> _Profile:
        return _Profile(list(self.other), dict(self.facts))

    def apply(self, change: _Change, by_date: bool = False) -> None:
        """Record ``change``; with ``by_date`` a value dated earlier than the one recorded does not replace it."""
        lower = change.key.lower()
        if not change.item:
            old = self.facts.get(lower)
            if old is None:
                self.facts[lower] = (change.key, change.value)
            elif not (by_date and _dated_later(old[1], change.value)):
                self.facts[lower] = (old[0], change.value)  # the first line's place and spelling of the key
            return
        folded = change.value.casefold()
        key, value = self.facts.get(lower, (change.key, ""))
        self.facts[lower] = (key, "; ".join([*(i for i in _items(value) if i.casefold() != folded), change.value]))
        opposite = _OPPOSITE.get(lower)
        if opposite is not None and opposite.lower() in self.facts:
            other_key, other_value = self.facts[opposite.lower()]
            rest = [i for i in _items(other_value) if i.casefold() != folded]
            if rest:
                self.facts[opposite.lower()] = (other_key, "; ".join(rest))
            else:
                del self.facts[opposite.lower()]

    def without_repeated_lines(self) -> _Profile:
        """The same facts, each application line once."""
        return _Profile(_unique_lines(self.other), dict(self.facts))

    def render(self) -> str:
        return "\n".join([*self.other, *(f"{k}: {v}" for k, v in self.facts.values())])


def _learn_profile(human: Block, messages: Sequence[StoredMessage]) -> tuple[str | None, list[str], list[str]]:
    """(new value or None, what was learned, what did not fit) from the user's messages.

    Each statement is applied in order; one that would take the block over its limit,
    even with repeated lines merged, is refused and the block keeps every fact it has.
    """
    profile = _Profile.parse(human.value)
    rendered = profile.render()
    learned: list[str] = []
    refused: list[str] = []
    for message in messages:
        if message.role != "user":
            continue
        marker = _PART.match(message.content)
        for change in _statements(message.content[marker.end() :] if marker else message.content):
            trial = profile.copy()
            trial.apply(change)
            new = trial.render()
            if new == rendered:
                continue  # already known
            if len(new) > human.limit:
                trial = trial.without_repeated_lines()
                new = trial.render()
            if len(new) > human.limit:
                refused.append(change.describe())
                continue
            profile, rendered = trial, new
            learned.append(change.describe())
    return (rendered if learned else None), learned, refused


# -- the summary block: one dated line per batch, the oldest folded into one line ----------------

_SPAN = r"(?:(?P<start>\d{4}-\d{2}-\d{2})(?: to (?P<end>\d{4}-\d{2}-\d{2}))?|Earlier): "
_FOLD_LINE = re.compile(_SPAN + r"(?P<entries>\d+) entries, (?P<messages>\d+) messages(?:; about: (?P<items>.*))?\.$")
_NOTE_LINE = re.compile(
    _SPAN + r"(?:(?P<messages>\d+) message\(s\)|long message continued); user: (?P<about>.*?)\."
    r"(?: " + re.escape(_FULL) + r": (?P<refused>.*)\.)?$"
)


@dataclass
class _Entries:
    """Summary lines folded together: their span of days, how many, their messages and what they learned."""

    start: str | None
    end: str | None
    entries: int
    messages: int
    items: list[str]
    more: int = 0

    @classmethod
    def parse(cls, line: str) -> _Entries:
        fold = _FOLD_LINE.match(line)
        if fold:
            items, more = _unlisted(fold["items"] or "")
            start = fold["start"]
            return cls(start, fold["end"] or start, int(fold["entries"]), int(fold["messages"]), items, more)
        note = _NOTE_LINE.match(line)
        if note:
            about = note["about"]
            items, more = _unlisted("" if about.startswith('"') or about == _NOTHING else about)
            return cls(note["start"], note["end"] or note["start"], 1, int(note["messages"] or 0), items, more)
        dates = _DATE.findall(line)  # a line the application or another learner wrote: kept as a short quote
        return cls(min(dates, default=None), max(dates, default=None), 1, 0, [_shorten(line, 60)])

    def merge(self, later: _Entries) -> _Entries:
        starts = [d for d in (self.start, later.start) if d]
        ends = [d for d in (self.end, later.end) if d]
        return _Entries(
            min(starts, default=None),
            max(ends, default=None),
            self.entries + later.entries,
            self.messages + later.messages,
            self.items + later.items,
            self.more + later.more,
        )

    def render(self, width: int) -> str:
        span = self.start or "Earlier"
        if self.end and self.end != self.start:
            span = f"{self.start} to {self.end}"
        head = f"{span}: {self.entries} entries, {self.messages} messages"
        listing = _newest(self.items, self.more, width - len(head) - len("; about: ."))
        return f"{head}; about: {listing}." if listing else f"{head}."


def _newest(items: Sequence[str], more: int, room: int) -> str:
    """``+3 earlier, c, d``: the last items that fit in ``room`` characters, the others counted.

    A folded summary line names the most recent things it holds: after years of batches,
    the topics of the first week (and the facts they set, long superseded) say least.
    """
    shown: list[str] = []
    for i in range(len(items) - 1, -1, -1):
        trial = [items[i], *shown]
        if len(", ".join([f"+{i + more} earlier", *trial] if i + more else trial)) > room:
            break
        shown = trial
    hidden = len(items) - len(shown) + more
    return ", ".join([f"+{hidden} earlier", *shown] if hidden else shown)


def _listing(items: Sequence[str], more: int, room: int) -> str:
    """``a, b, +3 more``: as many items as fit in ``room`` characters, the others counted."""
    shown: list[str] = []
    for i, item in enumerate(items):
        rest = len(items) - i - 1 + more
        if len(", ".join([*shown, item]) + (f", +{rest} more" if rest else "")) > room:
            break
        shown.append(item)
    hidden = len(items) - len(shown) + more
    return ", ".join([*shown, f"+{hidden} more"] if hidden else shown)


def _unlisted(text: str) -> tuple[list[str], int]:
    """The items of a listing and how many it counted without naming (``+3 earlier`` first, ``+3 more`` last)."""
    items = [i for i in text.split(", ") if i]
    more = 0
    if items and (m := re.fullmatch(r"\+(\d+) more", items[-1])):
        more += int(m.group(1))
        items.pop()
    if items and (m := re.fullmatch(r"\+(\d+) earlier", items[0])):
        more += int(m.group(1))
        items.pop(0)
    return items, more


def _shorten(text: str, width: int) -> str:
    """``text`` on one line, cut at a word boundary with ``…`` when longer than ``width``."""
    text = " ".join(text.split())
    if len(text) <= width:
        return text
    cut = text.rfind(" ", 0, width)
    return text[: cut if cut > width // 2 else width - 1].rstrip() + "…"


def _first_sentence(text: str) -> str:
    text = " ".join(text.split())
    m = _SENTENCE.match(text)
    return _shorten(m.group(0) if m else text, _QUOTE_WIDTH)


def _day(dt: datetime) -> str:
    return as_utc(dt).strftime("%Y-%m-%d")


def _continued(message: StoredMessage) -> bool:
    """A later part of a long message split over passes (its first part has the batch's note)."""
    m = _PART.match(message.content)
    return m is not None and m.group(1) != "1"


def _summary_note(messages: Sequence[StoredMessage], learned: list[str], refused: list[str], width: int) -> str | None:
    """The batch's dated line: what was learned, else a quote of the first user sentence; None for a later
    part of a long message that taught nothing."""
    when = _day(messages[-1].created_at)
    kept = f" {_FULL}: {_listing(refused, 0, width // 3)}." if refused else ""
    fresh = [m for m in messages if not _continued(m)]
    if not fresh and not (learned or refused):
        return None
    head = f"{when}: {len(messages)} message(s); user: " if fresh else f"{when}: long message continued; user: "
    if learned:
        about = _listing(list(dict.fromkeys(learned)), 0, width - len(head) - len(kept) - 1)
    elif not fresh:
        about = _NOTHING
    else:
        said = [m for m in fresh if m.role == "user" and m.content.strip()] or fresh
        text = said[0].content
        marker = _PART.match(text)
        about = f'"{_first_sentence(text[marker.end() :] if marker else text)}"' + (" (long message)" if marker else "")
    return f"{head}{about}.{kept}"


def _fold_summary(lines: list[str], target: int, limit: int) -> str:
    """Fold the fewest oldest lines into one that makes the text fit ``target``; never over ``limit``.

    The newest line stays as it is while the limit allows. The folded line counts the
    entries and messages it holds and names what they were about in up to a quarter of
    the limit (at least 80 characters), counting what it cannot name.
    """
    lines = [ln for ln in lines if ln.strip()]
    text = "\n".join(lines)
    if len(text) <= target or len(lines) < 2:
        return text if len(text) <= limit else _shorten(text, limit)
    width = max(80, limit // 4)
    merged = _Entries.parse(lines[0])
    rest = len(text) - len(lines[0]) - 1  # length of the lines after the folded ones
    k = 0
    while len(merged.render(width)) > target - rest - 1 and k < len(lines) - 2:
        k += 1
        merged = merged.merge(_Entries.parse(lines[k]))
        rest -= len(lines[k]) + 1
    room = target - rest - 1
    fold = merged.render(min(width, room))
    if len(fold) > room:  # the target cannot be met: as short as it gets, within the limit
        room = limit - rest - 1
        fold = merged.render(min(width, room))
    if len(fold) > room:
        log.debug("summary limit %d holds only the newest line", limit)
        return lines[-1] if len(lines[-1]) <= limit else _shorten(lines[-1], limit)
    return "\n".join([fold, *lines[k + 1 :]])


def _summarise(summary: Block, note: str) -> str:
    """Append the batch's note; a summary that overflows is folded to three quarters of its limit, which
    leaves the folded line room to name things and the next batches room to add theirs."""
    lines = [ln for ln in summary.value.split("\n") if ln.strip()] + [note]
    text = "\n".join(lines)
    return text if len(text) <= summary.limit else _fold_summary(lines, summary.limit * 3 // 4, summary.limit)


# -- the learner ---------------------------------------------------------------------------------


def _rethink(out: PassOutput, block: Block, new: str, **trace: Any) -> None:
    out.values[block.label] = new
    out.ops.append(EditOp("memory_rethink", {"label": block.label, "new_memory": new}))
    out.trace.append({"op": "memory_rethink", "label": block.label, "chars": [len(block.value), len(new)], **trace})


class OfflineLearner:
    """Rule-based learner; deterministic for the same input."""

    name = "offline"

    def learn(self, inp: PassInput) -> PassOutput:
        blocks: dict[str, Block] = {b.label: b for b in inp.blocks}
        out = PassOutput(stop_reason="end_turn")
        learned: list[str] = []
        refused: list[str] = []
        human = blocks.get("human")
        if human is not None:
            new, learned, refused = _learn_profile(human, inp.messages)
            if new is not None and new != human.value:
                _rethink(out, human, new, learned=learned)
            if refused:
                out.limit_refusals = len(refused)
                out.trace.append({"op": "refused", "label": "human", "refused": refused})
                log.warning(
                    "block 'human' of %r has no room (%d/%d characters) for %d new fact(s): %s; it is"
                    " consolidated next",
                    inp.subject_id,
                    len(new if new is not None else human.value),
                    human.limit,
                    len(refused),
                    "; ".join(refused[:5]) + ("; ..." if len(refused) > 5 else ""),
                )
        summary = blocks.get("summary")
        if summary is not None and inp.messages:
            note = _summary_note(inp.messages, learned, refused, max(80, summary.limit // 4))
            new_summary = _summarise(summary, note) if note is not None else summary.value
            if new_summary != summary.value:
                _rethink(out, summary, new_summary)
        return out

    def consolidate(self, inp: PassInput) -> PassOutput:
        """Merge duplicate keys and list items (the newest value, by date else by line, wins), drop repeated
        lines, and fold the oldest summary lines toward half the block's limit; no standing fact is dropped."""
        out = PassOutput(stop_reason="end_turn")
        for block in inp.blocks:
            if block.label == "human":
                new = _Profile.parse(block.value).without_repeated_lines().render()
            elif block.label == "summary":
                new = _fold_summary(block.value.split("\n"), block.limit // 2, block.limit)
            else:
                new = "\n".join(_unique_lines(block.value.split("\n")))
            if new != block.value and len(new) <= max(block.limit, len(block.value)):
                _rethink(out, block, new, consolidated=True)
        return out
