"""What ``Memory.wrap`` adds to a chat call: latency per call, and bytes in the system prompt.

A plain ``openai.OpenAI`` and the same client wrapped by a local-engine
``Memory`` (a SQLite file in a temp dir; each wrapped call queues its turn;
with ``--learn`` background workers learn the turns meanwhile, with the
offline learner, competing for the same CPUs) call the scripted OpenAI-compatible server on 127.0.0.1, which answers at
once, so what differs is the wrapper's own work: reading the subject's
context before the call, queueing the turn after it. The two clients
alternate call by call, so both see the same machine. Reported per case:
p50/p95 of each client; the added latency: the difference of the p50s, and
the median of the paired differences of neighbouring calls (a plain and a
wrapped call one after the other), which is checked against the goal (p50
added <= 1 ms) because it stays put on a busy machine where two p50s of
2 ms calls drift apart by a millisecond from run to run; the wrapper's own
time (a wrapped call's time minus the time spent inside the real client's
``create``); and the bytes added to the system message.
Cases: sync client; sync with ``search_limit=3`` (lexical search over 200
archived messages); async client. The goal is the default wrapper's (no
search): the exit status is 1 when a case without search misses it; the
search row shows what a search adds.

Usage::

    .venv/bin/python benchmarks/wrap_overhead.py [--n 400] [--learn] [--json FILE]
    .venv/bin/python benchmarks/wrap_overhead.py --smoke     # a few calls per case, no goal check
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import openai
from _common import percentile
from support.openai_server import ScriptedOpenAI

from ai_memory_sdk import Memory

GOAL_MS = 1.0
SUBJECT = "bench-user"
SYSTEM = "You are a helpful assistant. Answer briefly and use what you know about the user."
PROFILE = (
    "Name: Priya Raman\nLocation: Lisbon, Portugal (moved from Chennai in 2021)\nJob: backend engineer at a "
    "logistics start-up; on call every third week\nLikes: trail running, South Indian filter coffee, sci-fi novels "
    "(Le Guin, Chiang)\nDislikes: early meetings, cilantro\nFamily: partner Tomas, a cat called Miso\n"
    "Goals: a half marathon in October; learning Portuguese (A2)"
)
SUMMARY = "Priya is planning her training for the October half marathon and asked for a weekly schedule."
QUESTIONS = [
    "How should I structure my long runs this month?",
    "Can you suggest a book for the flight to Chennai?",
    "What should I cook for Tomas this weekend?",
    "How do I say 'the cat is sleeping' in Portuguese?",
]


def _seed(memory: Memory) -> None:
    memory.initialize_user_memory(SUBJECT, user_context_block_value=PROFILE)
    memory.set_memory("summary", SUMMARY, subject_id=SUBJECT)
    history = [
        {"role": "user", "content": f"Note {i}: {q} I ran {i % 15 + 3} km today and slept {6 + i % 3} hours."}
        for i, q in enumerate(QUESTIONS * 50)
    ]
    memory.add_messages(SUBJECT, history, skip_vector_storage=False)  # archived at once (searchable before learning)


def _messages(i: int) -> list[dict[str, str]]:
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": QUESTIONS[i % len(QUESTIONS)]}]


def _system_bytes(srv: ScriptedOpenAI) -> int:
    return len(srv.chat_requests[-1].json["messages"][0]["content"].encode("utf-8"))


class _Inner:
    """Times the real client's ``create`` under the wrapper: the rest of a wrapped call is the wrapper's own."""

    def __init__(self, resource: Any, is_async: bool) -> None:
        self.spent: list[float] = []
        create = resource.create

        def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return create(*args, **kwargs)
            finally:
                self.spent.append(time.perf_counter() - started)

        async def atimed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return await create(*args, **kwargs)
            finally:
                self.spent.append(time.perf_counter() - started)

        resource.create = atimed if is_async else timed


def _figures(
    case: str, plain: list[float], wrapped: list[float], inner: list[float], added_bytes: int, smoke: bool
) -> dict[str, Any]:
    paired = [w - p for p, w in zip(plain, wrapped)]
    own = [w - i for w, i in zip(wrapped, inner[-len(wrapped) :])]
    added = statistics.median(wrapped) - statistics.median(plain)
    return {
        "case": case,
        "calls": len(plain),
        "plain_p50_ms": statistics.median(plain) * 1e3,
        "plain_p95_ms": percentile(plain, 0.95) * 1e3,
        "wrapped_p50_ms": statistics.median(wrapped) * 1e3,
        "wrapped_p95_ms": percentile(wrapped, 0.95) * 1e3,
        "added_p50_ms": added * 1e3,
        "added_paired_median_ms": statistics.median(paired) * 1e3,
        "added_paired_p95_ms": percentile(paired, 0.95) * 1e3,
        "own_p50_ms": statistics.median(own) * 1e3,
        "own_p95_ms": percentile(own, 0.95) * 1e3,
        "system_bytes_added": added_bytes,
        "verdict": "SMOKE" if smoke else ("PASS" if statistics.median(paired) * 1e3 <= GOAL_MS else "MISS"),
        "goal_applies": "search" not in case,
    }


def _sync_case(
    srv: ScriptedOpenAI, memory: Memory, n: int, warmup: int, search_limit: int, smoke: bool
) -> dict[str, Any]:
    plain = openai.OpenAI(base_url=srv.base_url, api_key="x", max_retries=0)
    raw = openai.OpenAI(base_url=srv.base_url, api_key="x", max_retries=0)
    inner = _Inner(raw.chat.completions, is_async=False)
    wrapped = memory.wrap(raw, search_limit=search_limit)
    calls: dict[str, list[float]] = {"plain": [], "wrapped": []}
    sizes: dict[str, int] = {}
    for i in range(warmup + n):
        for name, client in (
            (("plain", plain), ("wrapped", wrapped)) if i % 2 else (("wrapped", wrapped), ("plain", plain))
        ):
            started = time.perf_counter()
            client.chat.completions.create(model="gpt-4o-mini", messages=_messages(i), user=SUBJECT)
            if i >= warmup:
                calls[name].append(time.perf_counter() - started)
            sizes[name] = _system_bytes(srv)
    case = "sync" + (f", search_limit={search_limit}" if search_limit else "")
    return _figures(case, calls["plain"], calls["wrapped"], inner.spent, sizes["wrapped"] - sizes["plain"], smoke)


def _async_case(srv: ScriptedOpenAI, memory: Memory, n: int, warmup: int, smoke: bool) -> dict[str, Any]:
    async def run() -> dict[str, Any]:
        plain = openai.AsyncOpenAI(base_url=srv.base_url, api_key="x", max_retries=0)
        raw = openai.AsyncOpenAI(base_url=srv.base_url, api_key="x", max_retries=0)
        inner = _Inner(raw.chat.completions, is_async=True)
        wrapped = memory.wrap(raw)
        calls: dict[str, list[float]] = {"plain": [], "wrapped": []}
        sizes: dict[str, int] = {}
        for i in range(warmup + n):
            order = (("plain", plain), ("wrapped", wrapped)) if i % 2 else (("wrapped", wrapped), ("plain", plain))
            for name, client in order:
                create: Callable[..., Awaitable[Any]] = client.chat.completions.create
                started = time.perf_counter()
                await create(model="gpt-4o-mini", messages=_messages(i), user=SUBJECT)
                if i >= warmup:
                    calls[name].append(time.perf_counter() - started)
                sizes[name] = _system_bytes(srv)
        await plain.close()
        added_bytes = sizes["wrapped"] - sizes["plain"]
        return _figures("async", calls["plain"], calls["wrapped"], inner.spent, added_bytes, smoke)

    return asyncio.run(run())


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=400, help="measured calls per client and case")
    p.add_argument("--warmup", type=int, default=30, help="unmeasured calls first")
    p.add_argument("--learn", action="store_true", help="background workers learn the queued turns meanwhile")
    p.add_argument("--smoke", action="store_true", help="a handful of calls: check that it runs")
    p.add_argument("--json", default=None, help="also write the figures here")
    args = p.parse_args()
    n, warmup = (8, 2) if args.smoke else (args.n, args.warmup)
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp, ScriptedOpenAI() as srv:
        memory = Memory(path=str(Path(tmp) / "memory.db"), learner="offline", embedder="none", background=args.learn)
        try:
            _seed(memory)
            figures = [
                _sync_case(srv, memory, n, warmup, 0, args.smoke),
                _sync_case(srv, memory, n, warmup, 3, args.smoke),
                _async_case(srv, memory, n, warmup, args.smoke),
            ]
        finally:
            memory.close()
    learning = "background learning on" if args.learn else "no background learning"
    print(f"wrap overhead: {n} calls per client per case, scripted server on 127.0.0.1, {learning}")
    print(f"goal: p50 added <= {GOAL_MS} ms (the paired median)")
    print("milliseconds; own: the wrapper's own time in a wrapped call; bytes: added to the system message")
    head = ("case", "plain p50/p95", "wrapped p50/p95", "added p50", "paired p50/p95", "own p50/p95", "bytes")
    print(f"{head[0]:<22}{head[1]:>15}{head[2]:>17}{head[3]:>11}{head[4]:>16}{head[5]:>14}{head[6]:>7}")
    for f in figures:
        print(
            f"{f['case']:<22}{f['plain_p50_ms']:>8.2f}/{f['plain_p95_ms']:<6.2f}{f['wrapped_p50_ms']:>10.2f}/"
            f"{f['wrapped_p95_ms']:<6.2f}{f['added_p50_ms']:>9.2f}  {f['added_paired_median_ms']:>8.2f}/"
            f"{f['added_paired_p95_ms']:<6.2f}{f['own_p50_ms']:>6.2f}/{f['own_p95_ms']:<6.2f}"
            f"{f['system_bytes_added']:>7}  {f['verdict']}"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))
    return 1 if any(f["verdict"] == "MISS" and f["goal_applies"] for f in figures) else 0


if __name__ == "__main__":
    sys.exit(main())
