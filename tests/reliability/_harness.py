"""Drivers shared by the reliability tests and ``benchmarks/soak.py``: child processes killed at random.

Nothing here is a test; the tests call these with small figures and assert on
what they return, the soak script calls them with large ones and prints it.
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

from . import _checks

ROOT = Path(__file__).resolve().parents[2]
PROCS = ROOT / "tests" / "support" / "procs"
PYTHON = sys.executable


class Child:
    """A child program whose stdout lines are collected by a thread (so a kill never blocks the reader)."""

    def __init__(self, script: str, cfg: dict[str, Any], *, env: Optional[dict[str, str]] = None) -> None:
        self.stderr = tempfile.TemporaryFile()
        self.proc = subprocess.Popen([PYTHON, str(PROCS / script), json.dumps(cfg)], stdout=subprocess.PIPE,
                                     stderr=self.stderr, text=True, cwd=str(ROOT), env=env)
        self.lines: list[str] = []
        self._cond = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._cond:
                self.lines.append(line.rstrip("\n"))
                self._cond.notify_all()
        with self._cond:
            self.lines.append("<EOF>")
            self._cond.notify_all()

    def wait_line(self, prefix: str, timeout: float) -> Optional[str]:
        """The first line starting with ``prefix`` (None at EOF or timeout)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for line in self.lines:
                    if line.startswith(prefix):
                        return line
                if "<EOF>" in self.lines:
                    return None
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._cond.wait(left)

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        self._reader.join(10)

    def finish(self, timeout: float) -> int:
        try:
            return self.proc.wait(timeout)
        finally:
            self._reader.join(10)

    def stderr_tail(self, n: int = 4000) -> str:
        self.stderr.seek(0)
        return self.stderr.read().decode("utf-8", "replace")[-n:]


def lines_with(lines: list[str], prefix: str) -> list[str]:
    return [ln for ln in lines if ln.startswith(prefix)]


# -------------------------------------------------------------------------------------------- crash


@dataclass
class CrashReport:
    """What a crash campaign did and what it found (every ``*_problems`` list must be empty)."""

    rounds: int = 0
    runs: int = 0
    batches_confirmed: int = 0
    batches_unconfirmed_stored: int = 0
    killed_in_flight: int = 0
    killed_during_enqueue: int = 0
    completed: int = 0
    retried_crashed: int = 0
    lost: int = 0
    duplicated: int = 0
    seconds: float = 0.0
    drain_seconds: float = 0.0
    store_problems: list[str] = field(default_factory=list)
    batch_problems: list[str] = field(default_factory=list)
    summary_problems: list[str] = field(default_factory=list)
    learned_problems: list[str] = field(default_factory=list)

    def figures(self) -> str:
        return (f"crash rounds {self.rounds}, runs {self.runs} ({self.completed} completed, "
                f"{self.retried_crashed} retried after the crash limit), batches confirmed {self.batches_confirmed}"
                f" (+{self.batches_unconfirmed_stored} stored before their confirmation was printed), "
                f"runs killed mid-pass {self.killed_in_flight}, kills during enqueue {self.killed_during_enqueue}, "
                f"lost {self.lost}, duplicated {self.duplicated}, {self.seconds:.1f} s "
                f"(final drain {self.drain_seconds:.1f} s)")

    @property
    def problems(self) -> list[str]:
        return self.store_problems + self.batch_problems + self.summary_problems + self.learned_problems


def _running(path: str) -> int:
    conn = _checks.connect(path)
    try:
        return conn.execute("SELECT count(*) FROM runs WHERE status='running'").fetchone()[0]
    finally:
        conn.close()


def crash_campaign(path: str, base_url: str, *, subjects: int = 40, first_batches: int = 200, kill_rounds: int = 10,
                   extra_per_round: int = 4, msgs: int = 3, max_delay: float = 0.8, learner: str = "offline",
                   options: Optional[dict[str, Any]] = None, seed: int = 0,
                   progress: Callable[[str], None] = lambda s: None) -> CrashReport:
    """Queue ``first_batches`` runs, SIGKILL ``kill_rounds`` children at random moments, let a last one finish.

    Round 0 enqueues the first batches (killed only after all are durable);
    every later round enqueues ``extra_per_round`` more and may die while doing
    so. Each child learns (slowly: the caller makes the learner or embedder
    slow through the scripted server) until it is killed.
    """
    from ai_memory_sdk import Memory

    rng = random.Random(seed)
    report = CrashReport()
    t0 = time.monotonic()
    subject_ids = [f"crash-user-{i}@example.com" for i in range(subjects)]
    with Memory(path=path, learner="offline", embedder="none", background=False) as setup:
        for sid in subject_ids:  # a summary that never drops old notes, so every pass stays visible
            setup.initialize_user_memory(sid, summary_block_char_limit=1_000_000, user_context_block_char_limit=1_000_000)
    base = {"path": path, "base_url": base_url, "learner": learner, "msgs": msgs, "options": options or {}}
    attempted: list[int] = []
    confirmed: set[int] = set()
    next_batch = 0
    for rnd in range(kill_rounds + 1):
        final = rnd == kill_rounds
        count = first_batches if rnd == 0 else (0 if final else extra_per_round)
        batches = [[next_batch + i, subject_ids[(next_batch + i) % subjects]] for i in range(count)]
        next_batch += count
        attempted += [b for b, _ in batches]
        child = Child("reliability_crash.py", {**base, "batches": batches, "final": final})
        try:
            if child.wait_line("READY", 120) is None:
                raise RuntimeError(f"crash child did not start: {child.stderr_tail()}")
            if final:
                done = child.wait_line("DONE", 600)
                if done is None:
                    raise RuntimeError(f"final child did not finish: {child.stderr_tail()}")
                stats = json.loads(done[5:])
                report.drain_seconds, report.retried_crashed = stats["drain_seconds"], stats["retried_crashed"]
                child.finish(60)
            else:
                if rnd == 0 and child.wait_line("ENQUEUED", 120) is None:
                    raise RuntimeError(f"crash child died while enqueuing: {child.stderr_tail()}")
                time.sleep(rng.uniform(0.0, max_delay))
                child.kill()
                if not lines_with(child.lines, "ENQUEUED"):
                    report.killed_during_enqueue += 1
                report.killed_in_flight += _running(path)
        finally:
            child.kill()
        confirmed |= {int(ln.split()[1]) for ln in lines_with(child.lines, "ENQ ")}
        report.rounds = rnd
        progress(f"round {rnd}: {len(confirmed)} batches confirmed, {report.killed_in_flight} runs killed mid-pass")
    report.seconds = time.monotonic() - t0
    report.store_problems = _checks.invariant_problems(path, drained=True, vectors=True)
    counts = _checks.marker_counts(path)
    report.batch_problems = _checks.batch_problems(counts, confirmed, attempted, msgs)
    report.batch_problems += _checks.batch_problems(_checks.marker_counts(path, "passages"), confirmed, attempted, msgs)
    report.batches_confirmed = len(confirmed)
    stored = {b for b, j in counts if j == 0}
    report.batches_unconfirmed_stored = len(stored - confirmed)
    report.lost = len(confirmed - stored)
    report.duplicated = sum(1 for n in counts.values() if n > 1)
    conn = _checks.connect(path)
    try:
        statuses = dict(conn.execute("SELECT status, count(*) FROM runs GROUP BY status").fetchall())
        report.runs = sum(statuses.values())
        report.completed = statuses.get("completed", 0)
        if report.runs != len(stored):
            report.batch_problems.append(f"{report.runs} runs for {len(stored)} stored batches")
        # The offline learner quotes the first message of each pass in the summary: a pass applied
        # twice would quote its first batch twice.
        quoted: dict[int, int] = {}
        for (value,) in conn.execute("SELECT value FROM blocks WHERE label='summary'"):
            for m in re.finditer(r'"batch B(\d+)-M0 says hello"', value):
                quoted[int(m.group(1))] = quoted.get(int(m.group(1)), 0) + 1
        if learner == "offline":
            report.summary_problems = [f"batch {b} quoted {n} times in summaries" for b, n in quoted.items() if n > 1]
        else:
            report.learned_problems = learned_once_problems(conn, stored)
    finally:
        conn.close()
    return report


def learned_once_problems(conn: sqlite3.Connection, stored: set[int]) -> list[str]:
    """With ``batch_learner_responder``: every stored batch learned exactly once across the human blocks."""
    seen: dict[int, int] = {}
    for (value,) in conn.execute("SELECT value FROM blocks WHERE label='human'"):
        for m in re.finditer(r"^learned B(\d+)$", value, re.M):
            seen[int(m.group(1))] = seen.get(int(m.group(1)), 0) + 1
    out = [f"batch {b} learned {n} times" for b, n in sorted(seen.items()) if n != 1]
    missing = sorted(stored - set(seen))
    if missing:
        out.append(f"{len(missing)} stored batch(es) never learned: {missing[:10]}")
    return out


def batch_learner_responder(request: dict[str, Any]) -> Any:
    """A scripted memory agent: one ``memory_insert`` of ``learned B<n>`` per new batch, then finish.

    It reads the batches from the transcript of the request and leaves out
    those whose insert already succeeded earlier in the same pass (a faulty
    step may come between), so the human blocks end up listing exactly the
    batches that were applied (twice if a pass were applied twice).
    """
    from support.openai_server import reply  # type: ignore[import-not-found]

    msgs = request.get("messages") or []
    user = next((m.get("content") or "" for m in msgs if m.get("role") == "user"), "")
    if isinstance(user, list):
        user = " ".join(p.get("text", "") for p in user if isinstance(p, dict))
    batches = {int(b) for b in re.findall(r"batch B(\d+)-M0 says hello", user)}
    answers = {m.get("tool_call_id"): m.get("content") or "" for m in msgs if m.get("role") == "tool"}
    for m in msgs:
        for call in (m.get("tool_calls") or []) if m.get("role") == "assistant" else []:
            fn = call.get("function") or {}
            if fn.get("name") != "memory_insert" or not answers.get(call.get("id"), "").startswith("OK"):
                continue
            try:
                done = re.fullmatch(r"learned B(\d+)", json.loads(fn.get("arguments") or "{}").get("new_str", ""))
            except (ValueError, AttributeError):
                done = None
            if done:
                batches.discard(int(done.group(1)))
    calls: list[tuple[str, Any]] = [("memory_insert", {"label": "human", "new_str": f"learned B{b}"})
                                    for b in sorted(batches)]
    return reply(tool_calls=calls + [("memory_finish_edits", {})])


# -------------------------------------------------------------------------------------- concurrency


@dataclass
class ConcurrencyReport:
    """4 writer processes x N batches into one store, reader processes at the same time."""

    writers: int = 0
    batches_per_writer: int = 0
    runs: int = 0
    completed: int = 0
    lost: int = 0
    duplicated: int = 0
    seconds: float = 0.0
    enqueue_seconds_max: float = 0.0
    writer_errors: dict[str, int] = field(default_factory=dict)
    reader_errors: dict[str, int] = field(default_factory=dict)
    reader_ops: dict[str, int] = field(default_factory=dict)
    reader_p50_ms: dict[str, float] = field(default_factory=dict)
    reader_p99_ms: dict[str, float] = field(default_factory=dict)
    leaks: list[str] = field(default_factory=list)
    store_problems: list[str] = field(default_factory=list)
    batch_problems: list[str] = field(default_factory=list)

    @property
    def locked_errors(self) -> int:
        return sum(n for k, n in {**self.writer_errors, **self.reader_errors}.items() if "locked" in k)

    @property
    def problems(self) -> list[str]:
        return (self.store_problems + self.batch_problems + [f"leak: {x}" for x in self.leaks]
                + [f"writer error x{n}: {k}" for k, n in self.writer_errors.items()]
                + [f"reader error x{n}: {k}" for k, n in self.reader_errors.items()])

    def figures(self) -> str:
        total = self.writers * self.batches_per_writer
        return (f"{self.writers} writer processes x {self.batches_per_writer} batches = {total} batches, runs "
                f"{self.runs} ({self.completed} completed), lost {self.lost}, duplicated {self.duplicated}, "
                f"'database is locked' seen {self.locked_errors}, {self.seconds:.1f} s "
                f"({total / self.seconds if self.seconds else 0:.0f} batches/s learned end to end; slowest writer "
                f"enqueued its batches in {self.enqueue_seconds_max:.1f} s), reader ops {self.reader_ops}, "
                f"reader p50 ms {self.reader_p50_ms}, p99 ms {self.reader_p99_ms}, isolation leaks {len(self.leaks)}")


def concurrency_campaign(path: str, *, writers: int = 4, batches: int = 100, subjects: int = 8, readers: int = 2,
                         msgs: int = 2, options: Optional[dict[str, Any]] = None,
                         timeout: float = 600) -> ConcurrencyReport:
    """Run ``writers`` writer processes and ``readers`` reader processes on one store; check everything."""
    from ai_memory_sdk import Memory

    report = ConcurrencyReport(writers=writers, batches_per_writer=batches)
    subject_ids = [f"shared-subject-{k}" for k in range(subjects)]
    with Memory(path=path, learner="offline", embedder="none", background=False) as setup:
        for sid in subject_ids:
            setup.initialize_user_memory(sid, summary_block_char_limit=1_000_000, user_context_block_char_limit=1_000_000)
    stop_file = path + ".stop"
    t0 = time.monotonic()
    reader_procs = [Child("reliability_reader.py", {"path": path, "subjects": subject_ids, "seconds": timeout,
                                                    "stop_file": stop_file, "seed": i, "options": options or {}})
                    for i in range(readers)]
    writer_procs = [Child("reliability_writer.py", {"path": path, "writer": w, "batches": batches,
                                                    "subjects": subject_ids, "msgs": msgs, "options": options or {}})
                    for w in range(writers)]
    confirmed: set[int] = set()
    try:
        for child in writer_procs:
            done = child.wait_line("DONE", timeout)
            if done is None:
                raise RuntimeError(f"writer did not finish: {child.stderr_tail()}")
            stats = json.loads(done[5:])
            report.enqueue_seconds_max = max(report.enqueue_seconds_max, stats["enqueue_seconds"])
            for k, n in stats["errors"].items():
                report.writer_errors[k] = report.writer_errors.get(k, 0) + n
            confirmed |= {int(ln.split()[1]) for ln in lines_with(child.lines, "ENQ ")}
        report.seconds = time.monotonic() - t0
        Path(stop_file).touch()
        for child in reader_procs:
            done = child.wait_line("DONE", 120)
            if done is None:
                raise RuntimeError(f"reader did not finish: {child.stderr_tail()}")
            stats = json.loads(done[5:])
            for k, n in stats["errors"].items():
                report.reader_errors[k] = report.reader_errors.get(k, 0) + n
            for k, n in stats["ops"].items():
                report.reader_ops[k] = report.reader_ops.get(k, 0) + n
            for k, v in stats["p50_ms"].items():
                report.reader_p50_ms[k] = max(report.reader_p50_ms.get(k, 0.0), v)
            for k, v in stats["p99_ms"].items():
                report.reader_p99_ms[k] = max(report.reader_p99_ms.get(k, 0.0), v)
            report.leaks += stats["leaks"]
    finally:
        for child in writer_procs + reader_procs:
            child.kill()
    attempted = list(range(writers * batches))
    counts = _checks.marker_counts(path)
    report.batch_problems = _checks.batch_problems(counts, confirmed, attempted, msgs)
    report.batch_problems += _checks.batch_problems(_checks.marker_counts(path, "passages"), confirmed, attempted, msgs)
    report.lost = len(confirmed - {b for b, j in counts if j == 0})
    report.duplicated = sum(1 for n in counts.values() if n > 1)
    report.store_problems = (_checks.invariant_problems(path, drained=True) + _checks.overlap_problems(path)
                             + _checks.order_problems(path))
    conn = _checks.connect(path)
    try:
        statuses = dict(conn.execute("SELECT status, count(*) FROM runs GROUP BY status").fetchall())
        report.runs = sum(statuses.values())
        report.completed = statuses.get("completed", 0)
        quoted: dict[int, int] = {}
        for (value,) in conn.execute("SELECT value FROM blocks WHERE label='summary'"):
            for m in re.finditer(r'"batch B(\d+)-M0 says hello', value):
                quoted[int(m.group(1))] = quoted.get(int(m.group(1)), 0) + 1
        report.batch_problems += [f"batch {b} quoted {n} times in summaries" for b, n in quoted.items() if n > 1]
    finally:
        conn.close()
    return report
