"""Memory over a thousand conversations: block sizes, consolidation, standing facts and request sizes.

One subject receives 1,000 batches: the LoCoMo dev conversations replayed in
order, again and again, with their dates shifted onto one running timeline
(each session cut into batches of a few turns), and after the turns of each
batch the statements of a synthetic life whose facts change over time (moves,
new jobs, new studies, a new partner, changing favourites, dislikes that
become likes and the reverse, a yearly age), often restating facts that still
stand. It runs twice, through the public API only (``Memory`` over SQLite,
background workers, automatic consolidation at the default ``consolidate_at``):

- with the offline learner;
- with the LLM learner against the scripted OpenAI-compatible server of the
  tests, answering like a careless model: it appends every fact it reads with
  ``memory_insert``, never deduplicating, until an edit is refused for the
  block's limit (then it gives up the pass), and on a consolidation pass
  (recognised by its prompt) it rewrites each block, merging duplicates and
  keeping the newest dated value, and folding the oldest summary lines.

It prints (and plots, with matplotlib: ``pip install 'ai-memory-sdk[bench]'``)
each block's size per batch, the runs failed and the consolidations, and
checks, exiting 1 when one fails:

- no block version ever exceeds its limit, and no run fails (a learning run
  must never fail because a block is full);
- offline learner: every standing fact of the synthetic life is in ``human``
  with its latest value ("N/N standing facts"), no superseded value is left
  under its key, and ``summary`` stays dated lines within its limit;
- LLM learner: a pass's request does not grow with the subject's age. The
  blocks are part of the prompt, and they are bounded by their limits; the
  batch's messages are the user turn. So "constant" means: the request minus
  the blocks' text and minus the user turn (instructions, tool schemas, JSON
  framing) is the same at batch 1, 500 and 1,000 (within 10%), and the whole
  request never exceeds that rest plus both blocks at their limits plus the
  batch. The bytes come from the scripted server's request log.

Usage (from the project root; ``--smoke``: 30 batches, a few seconds)::

    .venv/bin/python benchmarks/long_horizon.py [--batches N] [--learner offline|llm|both] [--png PATH] [--smoke]

Data: LoCoMo (snap-research/LoCoMo, Maharana et al., "Evaluating Very
Long-Term Conversational Memory of LLM Agents", ACL 2024), CC BY-NC 4.0,
non-commercial benchmark use only; read in place from ``../shared/data/locomo``,
never copied.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import re
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Literal

import _common
from locomo_retrieval import conversation
from support.openai_server import ScriptedOpenAI, Step, reply

from ai_memory_sdk import BlockVersion, Memory, Run, RunFailedError

SUBJECT = "robin"
TURNS_PER_BATCH = 6
CONSTANT_RATIO = 1.10  # the request's part that is neither blocks nor the batch may vary this much with age
SMOKE_BATCHES = 30
BIRTH = date(1991, 3, 3)
LIST_KEYS = ("Likes", "Dislikes")
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


# -- the LoCoMo replay -------------------------------------------------------------------------------


def locomo_batches(path: Path, count: int, per_batch: int = TURNS_PER_BATCH) -> Iterator[list[dict[str, Any]]]:
    """``count`` batches of LoCoMo turns, the conversations replayed in order onto one timeline.

    Each replay of a conversation is shifted by whole days so that it starts two
    weeks after the previous one ended (the gaps between its sessions are kept);
    the turns of a session get one minute each.
    """
    samples = json.loads(path.read_text(encoding="utf-8"))
    sessions: list[list[list[dict[str, Any]]]] = []  # per conversation: its sessions' turns, in order
    for sample in samples:
        _, messages, _ = conversation(sample)
        grouped: dict[datetime, list[dict[str, Any]]] = {}
        for m in messages:
            grouped.setdefault(m["created_at"], []).append(m)
        sessions.append([grouped[k] for k in sorted(grouped)])
    cursor = datetime(2020, 1, 6, tzinfo=timezone.utc)
    made = 0
    while True:
        for conv in sessions:
            shift = timedelta(days=(cursor.date() - conv[0][0]["created_at"].date()).days)
            for turns in conv:
                for start in range(0, len(turns), per_batch):
                    batch = []
                    for i, m in enumerate(turns[start : start + per_batch]):
                        batch.append({**m, "created_at": m["created_at"] + shift + timedelta(minutes=start + i)})
                    yield batch
                    made += 1
                    if made == count:
                        return
            cursor = conv[-1][0]["created_at"] + shift + timedelta(days=14)


# -- the synthetic life ------------------------------------------------------------------------------

# key -> (the sentence that changes it, the sentence that restates it). Both learners read these: the
# offline learner by its documented rules, the careless model by the patterns derived from them.
SCALARS: dict[str, tuple[str, str]] = {
    "Name": ("My name is {}.", "My name is {}, by the way."),
    "Birthday": ("My birthday is on {}.", "My birthday is on {}, remember."),
    "Age": ("I'm {} years old now.", "I'm {} years old now."),
    "Location": ("Big news: I moved to {}.", "As you know, I live in {}."),
    "Employer": ("New job! I work at {}.", "As I said, I work at {}."),
    "Studies": ("I'm studying {}.", "Evenings are busy, I study {}."),
    "Partner": ("My partner is {}.", "My partner is {}, still."),
    "Favorite color": ("My favorite color is {}.", "My favorite color is {}, as always."),
    "Favorite dish": ("My favorite dish is {}.", "My favorite dish is {}, as always."),
    "Favorite band": ("My favorite band is {}.", "My favorite band is {}, as always."),
}
ITEMS: dict[str, tuple[str, str]] = {
    "Likes": ("I really enjoy {}.", "Still true: I love {}."),
    "Dislikes": ("I can't stand {}.", "Still true: I hate {}."),
}
POOLS: dict[str, list[str]] = {
    "Location": [
        "Lisbon",
        "Porto",
        "Utrecht",
        "Tallinn",
        "Valparaiso",
        "Hobart",
        "Bergen",
        "Ghent",
        "Tartu",
        "Cork",
        "Leipzig",
        "Bilbao",
        "Graz",
        "Turku",
        "Aarhus",
        "Dunedin",
        "Cusco",
        "Kraków",
        "Trieste",
        "Halifax",
        "Ljubljana",
        "Nantes",
        "Galway",
        "Tromsø",
        "Zadar",
        "Kyoto",
        "Oaxaca",
        "Lyon",
    ],
    "Employer": [
        f"{a} {b}"
        for a in ["Bluefin", "Northwind", "Quarry", "Lantern", "Juniper", "Copperleaf", "Saltmarsh", "Ironwood"]
        for b in ["Robotics", "Logistics", "Labs", "Analytics", "Studios"]
    ],
    "Studies": [
        "marine biology",
        "Portuguese",
        "data engineering",
        "ceramics",
        "music theory",
        "Estonian",
        "urban planning",
        "astronomy",
        "bookbinding",
        "sign language",
        "carpentry",
        "Japanese",
    ],
    "Partner": ["Alex", "Jordan", "Noor", "Mika", "Sasha", "Rene"],
    "Favorite color": ["teal", "ochre", "maroon", "lilac", "saffron", "indigo", "coral", "mint"],
    "Favorite dish": ["bacalhau", "shakshuka", "pierogi", "khachapuri", "laksa", "ceviche", "tagine", "bibimbap"],
    "Favorite band": ["Khruangbin", "Portishead", "Stereolab", "Bonobo", "Cocteau Twins", "Air", "Goldfrapp", "Tycho"],
    "items": [
        "olives",
        "pickled herring",
        "sea kayaking",
        "karaoke",
        "jazz fusion",
        "cilantro",
        "bouldering",
        "licorice",
        "opera",
        "blue cheese",
        "crossword puzzles",
        "oysters",
        "horror films",
        "marathon running",
        "anchovies",
        "free jazz",
        "escape rooms",
        "durian",
        "line dancing",
        "kombucha",
    ],
}
FIXED = {"Name": "Robin Vale", "Birthday": "March 3"}
CHANGE_P, RESTATE_P = 0.08, 0.35


def _age(on: date) -> int:
    return on.year - BIRTH.year - ((on.month, on.day) < (BIRTH.month, BIRTH.day))


@dataclass
class Life:
    """The synthetic subject's statements, batch by batch, and the truth they leave behind."""

    seed: int = 7
    current: dict[str, str] = field(default_factory=dict)  # scalar key -> latest value
    polarity: dict[str, str] = field(default_factory=dict)  # item -> "Likes" / "Dislikes"
    superseded: dict[str, set[str]] = field(default_factory=dict)  # scalar key -> values it no longer has
    statements: int = 0
    changes: int = 0

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)
        self._unused = {k: list(v) for k, v in POOLS.items()}
        for pool in self._unused.values():
            self._rng.shuffle(pool)

    def _set(self, key: str, value: str) -> str:
        old = self.current.get(key)
        if old is not None and old != value:
            self.superseded.setdefault(key, set()).add(old)
            self.changes += 1
        self.superseded.get(key, set()).discard(value)
        self.current[key] = value
        return SCALARS[key][0].format(value)

    def _item(self, item: str, key: str) -> str:
        if self.polarity.get(item, key) != key:
            self.changes += 1
        self.polarity[item] = key
        return ITEMS[key][0].format(item)

    def _fresh(self, key: str) -> str:
        pool = self._unused[key]
        return pool.pop() if pool else self._rng.choice(POOLS[key])

    def say(self, batch: int, when: datetime) -> list[str]:
        """What the subject says at the end of batch ``batch`` (0-based), dated ``when``."""
        rng = self._rng
        out: list[str] = []
        intro = {
            0: ["Name", "Birthday", "Age"],
            1: ["Location", "Employer"],
            2: ["Studies", "Partner"],
            3: ["Favorite color", "Favorite dish", "Favorite band"],
        }
        if batch in intro:
            for key in intro[batch]:
                value = FIXED.get(key) or (str(_age(when.date())) if key == "Age" else self._fresh(key))
                out.append(self._set(key, value))
        elif batch in (4, 5, 6, 7):
            for _ in range(2):
                out.append(self._item(self._unused["items"].pop(), rng.choice(LIST_KEYS)))
        elif batch > 7:
            if "Age" in self.current and str(_age(when.date())) != self.current["Age"]:
                out.append(self._set("Age", str(_age(when.date()))))
            roll = rng.random()
            if roll < CHANGE_P:
                out.append(self._change())
            elif roll < CHANGE_P + RESTATE_P:
                out.append(self._restate())
        self.statements += len(out)
        return out

    def _change(self) -> str:
        rng = self._rng
        kind = rng.choices(
            ["Location", "Employer", "Studies", "Partner", "favorite", "flip", "new item"], [4, 3, 2, 1, 2, 3, 1]
        )[0]
        if kind == "favorite":
            kind = rng.choice(["Favorite color", "Favorite dish", "Favorite band"])
        if kind == "flip":
            item = rng.choice(sorted(self.polarity))
            return self._item(item, "Likes" if self.polarity[item] == "Dislikes" else "Dislikes")
        if kind == "new item":
            if not self._unused["items"]:
                return self._restate()
            return self._item(self._unused["items"].pop(), rng.choice(LIST_KEYS))
        value = self._fresh(kind)
        while value == self.current.get(kind):
            value = rng.choice(POOLS[kind])
        return self._set(kind, value)

    def _restate(self) -> str:
        facts = [("scalar", k) for k in sorted(self.current)] + [("item", i) for i in sorted(self.polarity)]
        kind, name = self._rng.choice(facts)
        if kind == "scalar":
            return SCALARS[name][1].format(self.current[name])
        return ITEMS[self.polarity[name]][1].format(name)

    def standing(self) -> int:
        return len(self.current) + len(self.polarity)


# -- reading a human block back ----------------------------------------------------------------------


def _strip_date(value: str) -> str:
    """``teal (as of 2021-04-02)`` -> ``teal`` (the careless model dates what it writes)."""
    return re.sub(r"\s*\(as of \d{4}-\d{2}-\d{2}\)$", "", value.strip())


def read_human(value: str) -> dict[str, list[str]]:
    """``Key: value`` lines as key (lower case) -> every value written under it (list items one by one)."""
    facts: dict[str, list[str]] = {}
    for line in value.split("\n"):
        key, sep, rest = line.partition(": ")
        if not sep:
            continue
        parts = rest.split("; ") if key.strip() in LIST_KEYS else [rest]
        facts.setdefault(key.strip().lower(), []).extend(_strip_date(p) for p in parts if p.strip())
    return facts


@dataclass
class FactCheck:
    standing: int
    found: int
    missing: list[str]
    stale: list[str]


def check_facts(life: Life, human: str) -> FactCheck:
    """Every standing fact with its latest value, and no superseded value left under its key."""
    facts = read_human(human)
    missing: list[str] = []
    stale: list[str] = []
    for key, value in sorted(life.current.items()):
        values = facts.get(key.lower(), [])
        if value not in values:
            missing.append(f"{key}: {value} (block has {values or 'nothing'})")
        stale += [f"{key}: {old}" for old in sorted(life.superseded.get(key, ())) if old in values]
    for item, key in sorted(life.polarity.items()):
        other = "Dislikes" if key == "Likes" else "Likes"
        if item.casefold() not in {v.casefold() for v in facts.get(key.lower(), [])}:
            missing.append(f"{key}: {item}")
        if item.casefold() in {v.casefold() for v in facts.get(other.lower(), [])}:
            stale.append(f"{other}: {item}")
    return FactCheck(life.standing(), life.standing() - len(missing), missing, stale)


# -- the careless model ------------------------------------------------------------------------------


def _pattern(template: str) -> re.Pattern[str]:
    return re.compile(re.escape(template).replace(r"\{\}", r"(?P<v>[^.,]+?)") + r"(?:\s|$)")


_READS: list[tuple[str, re.Pattern[str]]] = [
    (key, _pattern(t)) for table in (SCALARS, ITEMS) for key, pair in table.items() for t in pair
]
_LINE = re.compile(r"^\[(\d{4}-\d{2}-\d{2}) \d{2}:\d{2}\] (\w+)(?: \(([^)]*)\))?: (.*)$")
_REFUSED = re.compile(r"^Error: the edit would make block '(\w+)' \d+ characters long, over its limit", re.M)
_BLOCK = re.compile(r'<(\w+) chars="\d+/(\d+)" description="[^"]*">\n(.*?)\n</\1>', re.S)


@dataclass
class Careless:
    """Answers chat requests like a careless memory model (see the module docstring); counts what it did."""

    learn_passes: int = 0
    consolidations: int = 0
    follow_ups: int = 0
    refused: dict[str, int] = field(default_factory=dict)  # label -> edits refused for its limit

    def __call__(self, req: dict[str, Any]) -> Step:
        messages = req["messages"]
        answers = [m["content"] for m in messages if m.get("role") == "tool"]
        if answers:  # a later step: it read its answers and gives up
            self.follow_ups += 1
            for label in _REFUSED.findall("\n".join(answers)):
                self.refused[label] = self.refused.get(label, 0) + 1
            return reply(tool_calls=[("memory_finish_edits", {})])
        system, user = messages[0]["content"], messages[1]["content"]
        if "This is a consolidation pass" in system:
            self.consolidations += 1
            return self._consolidate(system)
        self.learn_passes += 1
        return self._learn(user)

    def _learn(self, user: str) -> Step:
        calls: list[tuple[str, dict[str, Any]]] = []
        lines = [m for m in (_LINE.match(line) for line in user.split("\n")) if m]
        for m in lines:
            day, role, text = m.group(1), m.group(2), m.group(4)
            if role != "user":
                continue
            for key, pattern in _READS:
                found = pattern.search(text)
                if found:
                    new = f"{key}: {found.group('v')} (as of {day})"
                    calls.append(("memory_insert", {"label": "human", "new_str": new, "insert_line": -1}))
                    break
        if lines:
            speakers = sorted({m.group(3) for m in lines if m.group(3)})
            first = lines[0].group(4)[:60]
            note = (
                f"{lines[-1].group(1)}: {' and '.join(speakers) or 'the user'} talked ({len(lines)} messages): {first}"
            )
            calls.append(("memory_insert", {"label": "summary", "new_str": note, "insert_line": -1}))
        calls.append(("memory_finish_edits", {}))
        return reply(tool_calls=calls)

    def _consolidate(self, system: str) -> Step:
        calls: list[tuple[str, dict[str, Any]]] = []
        for label, limit, value in _BLOCK.findall(system):
            new = _merge_human(value) if label == "human" else _fold_summary(value, int(limit) // 2)
            if new != value:
                calls.append(("memory_rethink", {"label": label, "new_memory": new}))
        calls.append(("memory_finish_edits", {}))
        return reply(tool_calls=calls)


def _merge_human(value: str) -> str:
    """One line per key with its newest dated value; list items once each, on the list of their newest mention."""
    scalars: dict[str, tuple[str, str]] = {}  # key -> (date, value)
    items: dict[str, tuple[str, str, str]] = {}  # item (folded) -> (date, list key, item)
    other: list[str] = []
    for line in value.split("\n"):
        key, sep, rest = line.partition(": ")
        if not sep:
            if line.strip():
                other.append(line)
            continue
        for part in rest.split("; ") if key in LIST_KEYS else [rest]:
            dated = _DATE.findall(part)
            when = dated[-1] if dated else ""
            plain = _strip_date(part)
            if key in LIST_KEYS:
                if when >= items.get(plain.casefold(), ("",))[0]:
                    items[plain.casefold()] = (when, key, plain)
            elif when >= scalars.get(key, ("",))[0]:
                scalars[key] = (when, plain)
    out = other + [f"{k}: {v} (as of {d})" for k, (d, v) in scalars.items()]
    for list_key in LIST_KEYS:
        listed = [f"{item} (as of {d})" for d, k, item in items.values() if k == list_key]
        if listed:
            out.append(f"{list_key}: {'; '.join(listed)}")
    return "\n".join(out)


def _fold_summary(value: str, target: int) -> str:
    """The newest lines that fit ``target`` characters, after one line counting the older ones."""
    lines = [ln for ln in value.split("\n") if ln.strip()]
    kept: list[str] = []
    size = 60  # room for the folded line
    for line in reversed(lines):
        if size + len(line) + 1 > target:
            break
        kept.insert(0, line)
        size += len(line) + 1
    older = lines[: len(lines) - len(kept)]
    if not older:
        return value
    days = [d for ln in older for d in _DATE.findall(ln)[:1]]
    span = f"{days[0]} to {days[-1]}" if days else "Earlier"
    return "\n".join([f"{span}: {len(older)} earlier conversations.", *kept])


# -- one run -----------------------------------------------------------------------------------------


@dataclass
class Pass:
    """The first request of one learning pass (LLM learner), taken apart."""

    batch: int
    total: int  # bytes of the request body
    blocks: int  # bytes of the blocks' values, as JSON strings
    user_turn: int  # bytes of the user turn (the batch as a transcript), as a JSON string
    calls: int  # LLM calls of the pass
    all_calls: int = 0  # bytes of every request of the pass (a refused edit costs a second call)

    @property
    def rest(self) -> int:
        return self.total - self.blocks - self.user_turn


@dataclass
class Outcome:
    learner: str
    batches: int
    seconds: float
    sizes: dict[str, list[int]]  # label -> size after each batch (after its consolidation, if any)
    peaks: dict[str, list[int]]  # label -> largest version written during each batch
    limits: dict[str, int]
    consolidated_at: list[int]  # batches whose pass queued a consolidation
    failed: list[int]  # cumulative failed runs after each batch
    runs: dict[str, int]
    human: str
    summary: str
    over_limit: list[str]
    passes: list[Pass]
    consolidation_bytes: list[int]
    locomo_turns: int
    model: Careless | None
    last_day: str = ""  # the date of the last batch (the summary's newest line carries it)


def _json_len(text: str) -> int:
    return len(json.dumps(text)) - 2


def _request_pass(bodies: Sequence[bytes], blocks: dict[str, str], batch: int) -> Pass:
    sent = json.loads(bodies[0])
    return Pass(
        batch,
        len(bodies[0]),
        sum(_json_len(v) for v in blocks.values()),
        _json_len(sent["messages"][1]["content"]),
        len(bodies),
        sum(len(b) for b in bodies),
    )


_CONSOLIDATION = b"This is a consolidation pass"


def _settle(mem: Memory, run_id: str) -> None:
    """Wait for the batch's run and for the consolidation its pass queued (queued in the same transaction)."""
    mem.wait_for_run(run_id, timeout=120)
    for r in mem.list_runs(SUBJECT, "queued") + mem.list_runs(SUBJECT, "running"):
        try:
            mem.wait_for_run(r.id, timeout=120)
        except RunFailedError:
            pass  # counted with the failed runs


def _batches_of(runs: Sequence[Run], learn_ids: Sequence[str]) -> dict[str | None, int]:
    """Run id -> the batch (0-based) it belongs to: its own, or for a consolidation the batch whose pass queued it."""
    index = {run_id: i for i, run_id in enumerate(learn_ids)}
    out: dict[str | None, int] = {None: -1}
    current = -1
    for r in runs:  # oldest first: a consolidation is created after its batch's run and before the next one
        current = index.get(r.id, current)
        out[r.id] = current
    return out


def _sizes(
    histories: dict[str, list[BlockVersion]], batch_of: dict[str | None, int], batches: int
) -> tuple[dict[str, list[int]], dict[str, list[int]]]:
    """Per label: the size after each batch, and the largest version written during it (the size before, if none)."""
    sizes: dict[str, list[int]] = {}
    peaks: dict[str, list[int]] = {}
    for label, history in histories.items():
        written: dict[int, list[int]] = {}
        for v in history:
            written.setdefault(batch_of.get(v.run_id, -1), []).append(len(v.value))
        size = written.get(-1, [0])[-1]
        sizes[label], peaks[label] = [], []
        for i in range(batches):
            new = written.get(i, [])
            peaks[label].append(max(new, default=size))
            size = new[-1] if new else size
            sizes[label].append(size)
    return sizes, peaks


def run(
    learner: Literal["offline", "llm"], batches: int, life: Life, data: Path, limits: tuple[int, int] = (10_000, 1_000)
) -> Outcome:
    """Feed ``batches`` batches to one subject and record what each did."""
    server: ScriptedOpenAI | None = None
    model: Careless | None = None
    options: dict[str, Any] = {}
    if learner == "llm":
        model = Careless()
        server = ScriptedOpenAI().start()
        server.responder = model
        options = {"llm_base_url": server.base_url, "llm_api_key": "sk-bench", "model": "gpt-4o-mini"}
    passes: list[Pass] = []
    consolidation_bytes: list[int] = []
    learn_ids: list[str] = []
    turns = 0
    last_day = ""
    started = time.perf_counter()
    try:
        with (
            tempfile.TemporaryDirectory() as tmp,
            Memory(
                path=Path(tmp) / "long.db", learner=learner, embedder="none", history_limit=1_000_000, **options
            ) as mem,
        ):
            mem.initialize_user_memory(
                SUBJECT, user_context_block_char_limit=limits[0], summary_block_char_limit=limits[1]
            )
            for i, batch in enumerate(locomo_batches(data, batches)):
                when = batch[-1]["created_at"] + timedelta(minutes=1)
                last_day = f"{when:%Y-%m-%d}"
                said = [{"role": "user", "content": s, "created_at": when} for s in life.say(i, when)]
                turns += len(batch)
                before = {b.label: b.value for b in mem.list_blocks(SUBJECT)}
                seen = len(server.chat_requests) if server else 0
                learn_ids.append(mem.add_messages(SUBJECT, batch + said))
                _settle(mem, learn_ids[-1])
                if server is not None:
                    reqs = server.chat_requests[seen:]
                    learn = [r for r in reqs if _CONSOLIDATION not in r.body]
                    consolidation_bytes += [
                        len(r.body) for r in reqs if _CONSOLIDATION in r.body and b'"tool"' not in r.body
                    ]
                    if learn:
                        passes.append(_request_pass([r.body for r in learn], before, i + 1))
            seconds = time.perf_counter() - started
            limit_of = {b.label: b.limit for b in mem.list_blocks(SUBJECT)}
            all_runs = mem.list_runs(SUBJECT)
            histories = {label: mem.block_history(label, SUBJECT) for label in limit_of}
            if learner == "llm":  # the careless model leaves duplicates between consolidations: one more, then read
                mem.wait_for_run(mem.consolidate(SUBJECT), timeout=120)
            human = mem.get_user_memory(SUBJECT) or ""
            summary = mem.get_summary(SUBJECT) or ""
    finally:
        if server is not None:
            server.stop()
    batch_of = _batches_of(all_runs, learn_ids)
    consolidated_at = sorted({batch_of[r.id] for r in all_runs if r.kind == "consolidate"})
    failed_in = [batch_of[r.id] for r in all_runs if r.status == "failed"]
    sizes, peaks = _sizes(histories, batch_of, batches)
    over = [
        f"{label} version {v.version}: {len(v.value)}/{limit_of[label]}"
        for label, history in histories.items()
        for v in history
        if len(v.value) > limit_of[label]
    ]
    runs = {
        f"{kind} {status}": sum(1 for r in all_runs if r.kind == kind and r.status == status)
        for kind in ("learn", "consolidate")
        for status in ("completed", "failed")
    }
    return Outcome(
        learner,
        batches,
        seconds,
        sizes,
        peaks,
        limit_of,
        consolidated_at,
        [sum(1 for b in failed_in if b <= i) for i in range(batches)],
        runs,
        human,
        summary,
        over,
        passes,
        consolidation_bytes,
        turns,
        model,
        last_day,
    )


# -- report ------------------------------------------------------------------------------------------


def _at(passes: Sequence[Pass], batch: int) -> Pass | None:
    """The learning pass of ``batch``, or the nearest one before it."""
    before = [p for p in passes if p.batch <= batch]
    return before[-1] if before else None


def report(out: Outcome, life: Life) -> list[str]:
    """Print one learner's figures; return the checks that failed."""
    failures: list[str] = []
    print(f"\n== {out.learner} learner: {out.batches} batches, {out.seconds:.1f} s ==")
    print(
        f"input: {out.locomo_turns:,} LoCoMo turns + {life.statements} synthetic statements"
        f" ({life.changes} changes of a fact)"
    )
    print(
        "runs: "
        + ", ".join(f"{k} {v}" for k, v in out.runs.items())
        + f"; consolidations queued by {len(out.consolidated_at)} passes"
    )
    for label, limit in out.limits.items():
        peak = max(out.peaks[label], default=0)
        marks = [0, len(out.sizes[label]) // 2, len(out.sizes[label]) - 1]
        at = ", ".join(f"batch {m + 1}: {out.sizes[label][m]:,}" for m in marks if out.sizes[label])
        print(f"{label}: largest version {peak:,}/{limit:,} chars; size after {at}")
    if out.over_limit:
        failures.append(f"{out.learner}: block versions over their limit: {out.over_limit[:5]}")
    if out.failed and out.failed[-1]:
        failures.append(f"{out.learner}: {out.failed[-1]} run(s) failed")
    facts = check_facts(life, out.human)
    after = " (after a final consolidation)" if out.learner == "llm" else ""
    print(
        f"{out.learner}: {facts.found}/{facts.standing} standing facts{after}; superseded values left: {len(facts.stale)}"
    )
    for line in facts.missing[:10]:
        print(f"  missing: {line}")
    for line in facts.stale[:10]:
        print(f"  superseded but kept: {line}")
    lines = [ln for ln in out.summary.split("\n") if ln.strip()]
    undated = [ln for ln in lines if not _DATE.match(ln)]
    print(
        f"summary: {len(lines)} lines, {len(out.summary)}/{out.limits['summary']} chars; newest: {lines[-1] if lines else '(empty)'}"
    )
    if out.learner == "offline":
        if facts.missing or facts.stale:
            failures.append(
                f"offline: {len(facts.missing)} standing fact(s) missing, {len(facts.stale)} superseded kept"
            )
        if undated or not lines or len(out.summary) > out.limits["summary"]:
            failures.append(f"offline: summary not dated lines within its limit: {undated[:3]}")
        elif not lines[-1].startswith(out.last_day):
            failures.append(f"offline: the summary's newest line is not the last batch's ({out.last_day}): {lines[-1]}")
    if out.model is not None:
        m = out.model
        refused = ", ".join(f"{label} {m.refused.get(label, 0)}" for label in out.limits)
        print(
            f"careless model: {m.learn_passes} learning passes, {m.consolidations} consolidation passes,"
            f" {m.follow_ups} follow-up steps; edits refused for a limit: {refused}"
        )
    if out.passes:
        failures += _request_sizes(out)
    return failures


def _request_sizes(out: Outcome) -> list[str]:
    n = out.batches
    marks = sorted({1, max(1, n // 2), n})
    print("request bytes of a learning pass (first call): total = blocks + user turn (the batch) + rest")
    picked = [p for p in (_at(out.passes, m) for m in marks) if p is not None]
    for p in picked:
        print(
            f"  batch {p.batch:>5}: total {p.total:>6,} = blocks {p.blocks:>6,} + user turn {p.user_turn:>5,}"
            f" + rest {p.rest:>5,}  ({p.calls} call(s), {p.all_calls:,} bytes in all)"
        )
    first, last = picked[0], picked[-1]
    ratio = last.rest / first.rest
    rests = [p.rest for p in out.passes]
    bound = max(rests) + sum(out.limits.values()) + max(p.user_turn for p in out.passes)
    largest = max(out.passes, key=lambda p: p.total)
    print(
        f"rest at batch {last.batch} / batch {first.batch}: {ratio:.3f} (check <= {CONSTANT_RATIO}); rest over all"
        f" passes {min(rests):,}..{max(rests):,} bytes; total {first.total:,} -> {last.total:,} bytes"
        f" ({last.total / first.total:.2f}x: the blocks filled)"
    )
    print(
        f"largest learning request {largest.total:,} bytes (batch {largest.batch}); bound = rest {max(rests):,}"
        f" + block limits {sum(out.limits.values()):,} + largest user turn: {bound:,}"
    )
    multi = [p for p in out.passes if p.calls > 1]
    if multi:
        most = max(multi, key=lambda p: p.all_calls)
        print(
            f"passes of more than one call (an edit was refused): {len(multi)}; the largest sent {most.all_calls:,}"
            f" bytes in {most.calls} calls (batch {most.batch})"
        )
    if out.consolidation_bytes:
        c = out.consolidation_bytes
        print(f"consolidation requests: {len(c)}, {min(c):,}..{max(c):,} bytes (first {c[0]:,}, last {c[-1]:,})")
    failures = []
    if ratio > CONSTANT_RATIO or max(rests) > CONSTANT_RATIO * min(rests):
        failures.append(f"llm: the request's fixed part grew with age: {first.rest} -> {last.rest} bytes")
    if largest.total > bound:
        failures.append(f"llm: a request of {largest.total} bytes exceeds the bound {bound}")
    return failures


def plot(outcomes: Sequence[Outcome], path: Path) -> bool:
    """Block sizes, consolidations and failed runs per batch, one column per learner; False without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, axes = plt.subplots(3, len(outcomes), figsize=(7 * len(outcomes), 9), squeeze=False, sharex="col")
    for col, out in enumerate(outcomes):
        x = list(range(1, out.batches + 1))
        for row, label in enumerate(("human", "summary")):
            ax = axes[row][col]
            ax.plot(x, out.peaks[label], color="tab:orange", lw=0.8, label="largest version in the batch")
            ax.plot(x, out.sizes[label], color="tab:blue", lw=0.8, label="after the batch")
            ax.axhline(out.limits[label], color="red", ls="--", lw=1, label="limit")
            ax.axhline(0.9 * out.limits[label], color="gray", ls=":", lw=1, label="consolidate_at 0.9")
            ax.set_ylabel(f"{label} (chars)")
            ax.set_ylim(0, out.limits[label] * 1.08)
            ax.set_title(f"{out.learner} learner: {label}", fontsize=10)
            if row == 0 and col == 0:
                ax.legend(fontsize=7, loc="center right")
        ax = axes[2][col]
        cumulative = [sum(1 for b in out.consolidated_at if b < n) for n in x]
        ax.step(x, cumulative, where="post", color="tab:green", label="consolidations")
        ax.step(x, out.failed, where="post", color="red", label="runs failed")
        ax.set_ylabel("runs (cumulative)")
        ax.set_xlabel("batch")
        ax.legend(fontsize=7, loc="upper left")
    fig.suptitle("ai_memory_sdk over 1,000 batches (LoCoMo dev replay + a synthetic changing life)", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--batches", type=int, default=1000, help="batches for the subject (default 1000)")
    parser.add_argument("--learner", choices=("offline", "llm", "both"), default="both")
    parser.add_argument("--human-limit", type=int, default=10_000, help="human's character limit (default 10000)")
    parser.add_argument("--summary-limit", type=int, default=1_000, help="summary's character limit (default 1000)")
    parser.add_argument("--data", type=Path, default=_common.LOCOMO_DEV, help="locomo_dev.json")
    parser.add_argument("--png", type=Path, help="where to write the plot (default: long_horizon.png in a temp dir)")
    _common.add_smoke_flag(parser)  # SMOKE_BATCHES batches
    args = parser.parse_args(argv)
    batches = SMOKE_BATCHES if args.smoke else args.batches
    if batches < 8:
        parser.error("--batches must be at least 8 (the synthetic life introduces itself over 8 batches)")
    logging.basicConfig(level=logging.ERROR)
    print(_common.LOCOMO_ATTRIBUTION)
    learners: list[Literal["offline", "llm"]] = ["offline", "llm"] if args.learner == "both" else [args.learner]
    outcomes: list[Outcome] = []
    failures: list[str] = []
    for learner in learners:
        life = Life()
        outcomes.append(run(learner, batches, life, args.data, (args.human_limit, args.summary_limit)))
        failures += report(outcomes[-1], life)
    png = args.png or Path(tempfile.mkdtemp(prefix="long_horizon-")) / "long_horizon.png"
    if plot(outcomes, png):
        print(f"\nplot: {png}")
    else:
        print("\nplot: matplotlib is not installed (pip install 'ai-memory-sdk[bench]'); no PNG written")
    if failures:
        for f in failures:
            print(f"FAILED: {f}")
        return 1
    print(f"long_horizon: all checks passed ({', '.join(learners)}; {batches} batches)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
