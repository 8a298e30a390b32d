"""The offline learner (SPEC §8): deterministic rules, no network.

It keeps ``human`` as ``Key: value`` lines learned from the user's
first-person statements and ``summary`` as dated one-line notes within the
block's limit. It makes the SDK work end to end without an LLM; it is not a
substitute for one.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from ..errors import LearnerError
from ..formatting import format_time
from ..models import Block, StoredMessage
from .base import PassInput, PassOutput
from .tools import EditOp

_LIST_KEYS = ("Likes", "Dislikes")
_MAX_LIST = 12
_STOP = r"(?=\s*(?:[.!?;,]|$)|\s+(?:and|but|because|so|which|who|since|though|too|very|a lot|anymore)\b)"
_VALUE = r"([^.!?;,\n]{1,80}?)" + _STOP

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


def _parse_block(value: str) -> tuple[list[str], dict[str, str]]:
    """Split a block into the application's own lines (kept as they are) and ``Key: value`` facts."""
    other: list[str] = []
    facts: dict[str, str] = {}
    for line in value.split("\n"):
        key, sep, val = line.partition(": ")
        if sep and key.strip() and len(key) <= 40 and "\n" not in key:
            facts[key.strip()] = val.strip()
        elif line.strip():
            other.append(line)
    return other, facts


def _render_block(other: list[str], facts: dict[str, str]) -> str:
    return "\n".join([*other, *(f"{k}: {v}" for k, v in facts.items())])


def _add_to_list(facts: dict[str, str], key: str, item: str) -> None:
    items = [i for i in facts.get(key, "").split("; ") if i and i.lower() != item.lower()]
    items.append(item)
    facts[key] = "; ".join(items[-_MAX_LIST:])


def _drop_from_list(facts: dict[str, str], key: str, item: str) -> None:
    if key in facts:
        items = [i for i in facts[key].split("; ") if i and i.lower() != item.lower()]
        if items:
            facts[key] = "; ".join(items)
        else:
            del facts[key]


def extract_facts(text: str, facts: dict[str, str]) -> list[str]:
    """Update ``facts`` from one first-person message; returns what was learned."""
    learned: list[str] = []
    for key, pattern, fmt in _FACTS:
        m = pattern.search(text)
        if m:
            val = fmt(m.group(1)).strip()
            if val and facts.get(key) != val:
                facts[key] = val
                learned.append(f"{key.lower()} {val}")
    for m in _FAVORITE.finditer(text):
        key = "Favorite " + m.group(1).strip().lower()
        facts[key] = m.group(2).strip()
        learned.append(f"{key.lower()} {facts[key]}")
    negated = {m.group(1).strip() for m in _DISLIKE.finditer(text)}
    for item in negated:
        _add_to_list(facts, "Dislikes", item)
        _drop_from_list(facts, "Likes", item)
        learned.append(f"dislikes {item}")
    for m in _LIKE.finditer(text):
        item = m.group(1).strip()
        if item and item not in negated:
            _add_to_list(facts, "Likes", item)
            _drop_from_list(facts, "Dislikes", item)
            learned.append(f"likes {item}")
    return learned


def _summary_note(messages: list[StoredMessage], learned: list[str]) -> str:
    when = format_time(messages[-1].created_at)[:10]
    if learned:
        about = ", ".join(dict.fromkeys(learned))
    else:
        first = next((m.content for m in messages if m.role == "user" and m.content.strip()), messages[0].content)
        first = " ".join(first.split())
        about = f'"{first[:97]}..."' if len(first) > 100 else f'"{first}"'
    return f"{when}: {len(messages)} message(s); user: {about}."


def _fit_summary(old: str, note: str, limit: int) -> str:
    """Append ``note``; drop the oldest notes (whole lines) until the block fits."""
    lines = [ln for ln in old.split("\n") if ln] + [note]
    while len("\n".join(lines)) > limit and len(lines) > 1:
        lines.pop(0)
    text = "\n".join(lines)
    if len(text) > limit:  # one note alone does not fit: shorten the note, say so
        text = note[: max(0, limit - 3)] + "..." if limit > 3 else note[:limit]
    return text


class OfflineLearner:
    """Rule-based learner; deterministic for the same input."""

    name = "offline"

    def learn(self, inp: PassInput) -> PassOutput:
        blocks: dict[str, Block] = {b.label: b for b in inp.blocks}
        out = PassOutput(stop_reason="end_turn")
        learned: list[str] = []
        human = blocks.get("human")
        if human is not None:
            other, facts = _parse_block(human.value)
            for m in inp.messages:
                if m.role == "user":
                    learned += extract_facts(m.content, facts)
            new = _render_block(other, facts) if learned else human.value
            if new != human.value:
                if len(new) > human.limit:
                    raise LearnerError(
                        f"block 'human' would grow to {len(new)} characters, over its limit of {human.limit}",
                        stop_reason="over_limit",
                    )
                out.values["human"] = new
                out.ops.append(EditOp("memory_rethink", {"label": "human", "new_memory": new}))
        summary = blocks.get("summary")
        if summary is not None and inp.messages:
            new = _fit_summary(summary.value, _summary_note(inp.messages, learned), summary.limit)
            if new != summary.value:
                out.values["summary"] = new
                out.ops.append(EditOp("memory_rethink", {"label": "summary", "new_memory": new}))
        return out
