"""Latency of the local engine's hot paths, against the project's goals.

    .venv/bin/python benchmarks/bench_local.py [--n 2000] [--path DIR] [--json FILE] [--profile] [--smoke]

Measures, on a fresh SQLite file (WAL, ``synchronous=NORMAL``: every
``add_messages`` is a durable commit that survives a process crash):

- ``add_messages`` of a 10-message batch (goal: p50 <= 1 ms), with background
  workers off (enqueue only) and on (the offline learner applying runs in
  threads of the same process while the application keeps adding);
- the same with ``skip_vector_storage=False`` (passages + FTS5 index; no goal);
- ``get_memory(label, prompt_formatted=True)`` (goal: p50 <= 50 us).

It prints the machine (CPU, cores, Python, SQLite) and settings, each figure
with its goal and PASS/MISS. ``--profile`` runs cProfile over any missed
measurement and prints where the time goes. Exit status 1 when a goal is missed
(``--smoke``: tiny sizes, goals not judged).
"""

from __future__ import annotations

import argparse
import cProfile
import functools
import io
import json
import logging
import pstats
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import _common
from support import internals

from ai_memory_sdk import Memory

GOAL_ADD_P50_MS = 1.0
GOAL_GET_P50_US = 50.0
BATCH = 10


@dataclass
class Figure:
    name: str
    n: int
    p50: float
    p99: float
    mean: float
    unit: str
    goal: float | None

    @property
    def verdict(self) -> str:
        if self.goal is None:
            return "-"
        return "PASS" if self.p50 <= self.goal else "MISS"


def _figure(name: str, samples_ns: list[int], unit: str, goal: float | None) -> Figure:
    scale = {"ms": 1e6, "us": 1e3}[unit]
    values = [s / scale for s in samples_ns]
    return Figure(
        name,
        len(values),
        _common.percentile(values, 0.50),
        _common.percentile(values, 0.99),
        statistics.fmean(values),
        unit,
        goal,
    )


def _batch(i: int) -> list[dict[str, Any]]:
    """A realistic 10-message exchange, ~80 characters per message."""
    out = []
    for j in range(BATCH):
        role = "user" if j % 2 == 0 else "assistant"
        out.append(
            {
                "role": role,
                "content": f"Message {j} of exchange {i}: I was thinking about the trip to "
                f"Lisbon next month and what to pack.",
            }
        )
    return out


def _time_calls(call: Callable[[int], Any], n: int, warmup: int) -> list[int]:
    for i in range(warmup):
        call(-1 - i)
    samples = []
    clock = time.perf_counter_ns
    for i in range(n):
        t0 = clock()
        call(i)
        samples.append(clock() - t0)
    return samples


def bench_add(path: str, n: int, *, background: bool, archive: bool, subjects: int = 50) -> list[int]:
    memory = Memory(path=path, learner="offline", embedder="none", background=background)
    try:
        users = [f"bench-user-{k}" for k in range(subjects)]
        batches = [_batch(i) for i in range(64)]

        def call(i: int) -> None:
            memory.add_messages(users[i % subjects], batches[i % 64], skip_vector_storage=not archive)

        samples = _time_calls(call, n, warmup=min(100, n // 10 + 1))
        if background:  # let the workers finish so the next measurement starts quiet
            last = memory.add_messages(users[0], batches[0])
            memory.wait_for_run(last, timeout=600)
        return samples
    finally:
        memory.close()


def bench_get(path: str, n: int) -> list[int]:
    memory = Memory(path=path, learner="offline", embedder="none", background=False)
    try:
        uid = "bench-reader"
        memory.initialize_user_memory(
            uid,
            reset=True,
            user_context_block_value=(
                "Name: Alice Walker\nLocation: Lisbon\nJob: nurse\nLikes: jazz; hiking; cats\nDislikes: mornings"
            ),
        )

        def call(_: int) -> None:
            memory.get_memory("human", prompt_formatted=True, subject_id=uid)

        return _time_calls(call, n, warmup=1000)
    finally:
        memory.close()


def _settings(path: str) -> dict[str, Any]:
    conn = sqlite3.connect(path)
    try:
        journal = conn.execute("PRAGMA journal_mode").fetchone()[0]
    finally:
        conn.close()
    probe = Memory(path=path, learner="offline", embedder="none", background=False)
    try:
        conn = internals.store_connection(internals.store(probe))
        sync = {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}[conn.execute("PRAGMA synchronous").fetchone()[0]]
        workers = probe.settings.workers
    finally:
        probe.close()
    return {
        "journal_mode": journal,
        "synchronous": sync,
        "learner": "offline",
        "embedder": "none",
        "workers (background on)": workers,
        "batch": f"{BATCH} messages, ~80 chars each",
        "subjects": 50,
        "path": path,
    }


def _profile(label: str, fn: Callable[[], Any]) -> str:
    prof = cProfile.Profile()
    prof.enable()
    fn()
    prof.disable()
    out = io.StringIO()
    stats = pstats.Stats(prof, stream=out).strip_dirs().sort_stats("tottime")
    stats.print_stats(18)
    return f"--- cProfile: {label} (sorted by own time) ---\n" + out.getvalue()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=2000, help="timed calls per add_messages measurement")
    ap.add_argument("--n-get", type=int, default=20000, help="timed get_memory calls")
    ap.add_argument("--path", help="directory for the database files (default: a temporary directory)")
    ap.add_argument("--json", help="also write the figures to this JSON file")
    ap.add_argument("--profile", action="store_true", help="cProfile any measurement that misses its goal")
    _common.add_smoke_flag(ap)
    args = ap.parse_args(argv)
    if args.smoke:
        args.n, args.n_get = 50, 500
    logging.basicConfig(level=logging.WARNING)

    with tempfile.TemporaryDirectory(prefix="bench-local-", dir=args.path) as tmp:
        paths = {k: str(Path(tmp) / f"{k}.db") for k in ("off", "on", "archive", "get")}
        figures = [
            _figure(
                "add_messages, 10 msgs, background off",
                bench_add(paths["off"], args.n, background=False, archive=False),
                "ms",
                GOAL_ADD_P50_MS,
            ),
            _figure(
                "add_messages, 10 msgs, background on",
                bench_add(paths["on"], args.n, background=True, archive=False),
                "ms",
                GOAL_ADD_P50_MS,
            ),
            _figure(
                "add_messages, 10 msgs, archived (FTS), bg off",
                bench_add(paths["archive"], args.n, background=False, archive=True),
                "ms",
                None,
            ),
            _figure("get_memory(prompt_formatted=True)", bench_get(paths["get"], args.n_get), "us", GOAL_GET_P50_US),
        ]
        settings = _settings(paths["off"])
        machine = _common.machine()

        print("machine:  " + ", ".join(f"{k}={v}" for k, v in machine.items()))
        print("settings: " + ", ".join(f"{k}={v}" for k, v in settings.items() if k != "path"))
        print(
            f"database: {Path(tmp)} (durable commit: journal_mode={settings['journal_mode']}, "
            f"synchronous={settings['synchronous']})"
        )
        print()
        print(f"{'measurement':48} {'n':>6} {'p50':>9} {'p99':>9} {'mean':>9}  {'goal (p50)':>11}  verdict")
        for f in figures:
            goal = f"<= {f.goal:g} {f.unit}" if f.goal is not None else "-"
            print(
                f"{f.name:48} {f.n:>6} {f.p50:>7.3f}{f.unit:>2} {f.p99:>7.3f}{f.unit:>2} {f.mean:>7.3f}{f.unit:>2}"
                f"  {goal:>11}  {f.verdict}"
            )

        if args.json:
            Path(args.json).write_text(
                json.dumps(
                    {
                        "machine": machine,
                        "settings": settings,
                        "figures": [dict(asdict(f), verdict=f.verdict) for f in figures],
                    },
                    indent=2,
                )
            )
        missed = [f for f in figures if f.verdict == "MISS"]
        if args.profile:
            for f in missed:
                if f.name.startswith("add_messages"):
                    bg = "background on" in f.name
                    run = functools.partial(
                        bench_add, str(Path(tmp) / "prof.db"), min(args.n, 1000), background=bg, archive=False
                    )
                    print(_profile(f.name, run))
                else:
                    print(_profile(f.name, lambda: bench_get(str(Path(tmp) / "prof-get.db"), args.n_get)))
    if args.smoke:
        print("(smoke run: sizes too small to judge the goals)")
        return 0
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
