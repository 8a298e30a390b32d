"""Drivers shared by the reliability tests and ``benchmarks/soak.py``: child processes killed at random.

Nothing here is a test; the tests call these with small figures and assert on
what they return, the soak script calls them with large ones and prints it.
"""

from __future__ import annotations

import json
import os
import random
import re
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from support import internals
from support.child import Child
from support.openai_server import fail, reply, stall

from . import _checks

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
        return (
            f"crash rounds {self.rounds}, runs {self.runs} ({self.completed} completed, "
            f"{self.retried_crashed} retried after the crash limit), batches confirmed {self.batches_confirmed}"
            f" (+{self.batches_unconfirmed_stored} stored before their confirmation was printed), "
            f"runs killed mid-pass {self.killed_in_flight}, kills during enqueue {self.killed_during_enqueue}, "
            f"lost {self.lost}, duplicated {self.duplicated}, {self.seconds:.1f} s "
            f"(final drain {self.drain_seconds:.1f} s)"
        )

    @property
    def problems(self) -> list[str]:
        return self.store_problems + self.batch_problems + self.summary_problems + self.learned_problems


def _running(path: str) -> int:
    conn = _checks.connect(path)
    try:
        return int(conn.execute("SELECT count(*) FROM runs WHERE status='running'").fetchone()[0])
    finally:
        conn.close()


def crash_campaign(
    path: str,
    base_url: str,
    *,
    subjects: int = 40,
    first_batches: int = 200,
    kill_rounds: int = 10,
    extra_per_round: int = 4,
    msgs: int = 3,
    max_delay: float = 0.8,
    learner: str = "offline",
    options: dict[str, Any] | None = None,
    seed: int = 0,
    progress: Callable[[str], None] = lambda s: None,
) -> CrashReport:
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
            setup.initialize_user_memory(
                sid, summary_block_char_limit=1_000_000, user_context_block_char_limit=1_000_000
            )
    base = {"path": path, "base_url": base_url, "learner": learner, "msgs": msgs, "options": options or {}}
    attempted: list[int] = []
    confirmed: set[int] = set()
    next_batch = 0
    for rnd in range(kill_rounds + 1):
        final = rnd == kill_rounds
        count = first_batches if rnd == 0 else (0 if final else extra_per_round)
        batches: list[tuple[int, str]] = [
            (next_batch + i, subject_ids[(next_batch + i) % subjects]) for i in range(count)
        ]
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
                if not child.lines_with("ENQUEUED"):
                    report.killed_during_enqueue += 1
                report.killed_in_flight += _running(path)
        finally:
            child.kill()
        confirmed |= {int(ln.split()[1]) for ln in child.lines_with("ENQ ")}
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
    calls: list[tuple[str, Any]] = [
        ("memory_insert", {"label": "human", "new_str": f"learned B{b}"}) for b in sorted(batches)
    ]
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
        return (
            self.store_problems
            + self.batch_problems
            + [f"leak: {x}" for x in self.leaks]
            + [f"writer error x{n}: {k}" for k, n in self.writer_errors.items()]
            + [f"reader error x{n}: {k}" for k, n in self.reader_errors.items()]
        )

    def figures(self) -> str:
        total = self.writers * self.batches_per_writer
        return (
            f"{self.writers} writer processes x {self.batches_per_writer} batches = {total} batches, runs "
            f"{self.runs} ({self.completed} completed), lost {self.lost}, duplicated {self.duplicated}, "
            f"'database is locked' seen {self.locked_errors}, {self.seconds:.1f} s "
            f"({total / self.seconds if self.seconds else 0:.0f} batches/s learned end to end; slowest writer "
            f"enqueued its batches in {self.enqueue_seconds_max:.1f} s), reader ops {self.reader_ops}, "
            f"reader p50 ms {self.reader_p50_ms}, p99 ms {self.reader_p99_ms}, isolation leaks {len(self.leaks)}"
        )


def concurrency_campaign(
    path: str,
    *,
    writers: int = 4,
    batches: int = 100,
    subjects: int = 8,
    readers: int = 2,
    msgs: int = 2,
    options: dict[str, Any] | None = None,
    timeout: float = 600,
) -> ConcurrencyReport:
    """Run ``writers`` writer processes and ``readers`` reader processes on one store; check everything."""
    from ai_memory_sdk import Memory

    report = ConcurrencyReport(writers=writers, batches_per_writer=batches)
    subject_ids = [f"shared-subject-{k}" for k in range(subjects)]
    with Memory(path=path, learner="offline", embedder="none", background=False) as setup:
        for sid in subject_ids:
            setup.initialize_user_memory(
                sid, summary_block_char_limit=1_000_000, user_context_block_char_limit=1_000_000
            )
    stop_file = path + ".stop"
    t0 = time.monotonic()
    reader_procs = [
        Child(
            "reliability_reader.py",
            {
                "path": path,
                "subjects": subject_ids,
                "seconds": timeout,
                "stop_file": stop_file,
                "seed": i,
                "options": options or {},
            },
        )
        for i in range(readers)
    ]
    writer_procs = [
        Child(
            "reliability_writer.py",
            {
                "path": path,
                "writer": w,
                "batches": batches,
                "subjects": subject_ids,
                "msgs": msgs,
                "options": options or {},
            },
        )
        for w in range(writers)
    ]
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
            confirmed |= {int(ln.split()[1]) for ln in child.lines_with("ENQ ")}
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
    report.store_problems = (
        _checks.invariant_problems(path, drained=True) + _checks.overlap_problems(path) + _checks.order_problems(path)
    )
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


# ------------------------------------------------------------------------------------------ erasure


def _erasure_seed(path: str, subjects: int, per_subject: int, rng: random.Random) -> tuple[str, str]:
    """A store of ``subjects`` x ``per_subject`` archived messages; returns (victim subject id, its marker)."""
    from ai_memory_sdk import Memory

    words = [
        "alpha",
        "beta",
        "gamma",
        "delta",
        "river",
        "mountain",
        "coffee",
        "garden",
        "piano",
        "rocket",
        "violet",
        "summer",
    ]
    victim, marker = f"victim-{rng.getrandbits(64):x}@example.com", f"zqv{rng.getrandbits(96):x}7"
    with Memory(path=path, learner="offline", embedder="none", background=False) as mem:
        for s in range(subjects):
            sid = victim if s == subjects // 2 else f"subject-{s}"
            batch = [
                {
                    "role": "user",
                    "content": " ".join(rng.choice(words) for _ in range(20))
                    + (f" {marker}" if sid == victim else f" tok{s}x{i}"),
                }
                for i in range(per_subject)
            ]
            for i in range(0, per_subject, 10):
                mem.add_messages(sid, batch[i : i + 10], skip_vector_storage=False)
    return victim, marker


def _residue(path: str, needles: list[bytes]) -> list[str]:
    out = []
    for suffix in ("", "-wal"):
        p = Path(path + suffix)
        if p.exists():
            data = p.read_bytes()
            out += [f"{p.name}:{n[:12]!r}" for n in needles if n in data]
    return out


def erasure_costs(
    workdir: str, *, subjects: int = 500, per_subject: int = 40, writes: int = 2000, seed: int = 0
) -> dict[str, Any]:
    """Time ``delete_user``'s purge strategies on copies of one store, and scan each for residue.

    Variants: ``secure_delete`` + FTS5 ``optimize`` + ``wal_checkpoint(TRUNCATE)`` (what the store does);
    ``VACUUM`` instead of ``secure_delete``; and each without the FTS5 optimize, to show what it is for.
    """
    import shutil

    rng = random.Random(seed)
    base = os.path.join(workdir, "erasure-base.db")
    t = time.perf_counter()
    victim, marker = _erasure_seed(base, subjects, per_subject, rng)
    out: dict[str, Any] = {
        "subjects": subjects,
        "messages": subjects * per_subject,
        "seed_s": round(time.perf_counter() - t, 2),
        "db_mb": round(os.path.getsize(base) / 1e6, 1),
    }
    needles = [victim.encode(), marker.encode(), marker[8:-2].encode()]
    variants = {
        "secure_delete+optimize+checkpoint": (True, True, False),
        "vacuum+optimize+checkpoint": (False, True, True),
        "secure_delete+checkpoint (no optimize)": (True, False, False),
        "vacuum+checkpoint (no optimize)": (False, False, True),
        "nothing (secure_delete off, no optimize, no vacuum)": (False, False, False),
    }
    for name, (secure, optimize, vacuum) in variants.items():
        path = os.path.join(workdir, f"erasure-{len(out)}.db")
        shutil.copyfile(base, path)
        store = internals.open_sqlite_store(path, secure_delete=secure)
        conn = internals.store_connection(store)
        times: dict[str, float] = {}
        t0 = time.perf_counter()
        with internals.store_transaction(store) as c:
            internals.delete_subject_rows(store, c, victim)
            c.execute("DELETE FROM meta WHERE key='purge_pending'")  # this benchmark purges by hand below
        times["delete_tx"] = time.perf_counter() - t0
        if optimize:
            t = time.perf_counter()
            with internals.store_transaction(store) as c:
                c.execute("INSERT INTO passages_fts(passages_fts) VALUES ('optimize')")
            times["fts_optimize"] = time.perf_counter() - t
        if vacuum:
            t = time.perf_counter()
            conn.execute("VACUUM")
            times["vacuum"] = time.perf_counter() - t
        t = time.perf_counter()
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        times["checkpoint"] = time.perf_counter() - t
        times["total"] = time.perf_counter() - t0
        residue = _residue(path, needles)
        store.close()
        out[name] = {
            **{k: round(v * 1000, 1) for k, v in times.items()},
            "unit": "ms",
            "residue": residue,
            "db_mb_after": round(os.path.getsize(path) / 1e6, 1),
        }
        os.remove(path)
    # What secure_delete costs every ordinary write: enqueue + learn the same batches with it on and off.
    for secure in (True, False):
        path = os.path.join(workdir, f"writes-{secure}.db")
        from ai_memory_sdk import Memory

        t = time.perf_counter()
        with Memory(path=path, learner="offline", embedder="none", secure_delete=secure) as mem:
            runs = [
                mem.add_messages(
                    f"w{i % 50}",
                    [{"role": "user", "content": f"I like item{i}. My name is W{i}."}],
                    skip_vector_storage=False,
                )
                for i in range(writes)
            ]
            for r in runs:
                mem.wait_for_run(r)
        out[f"{writes} batches enqueued+learned, secure_delete={'on' if secure else 'off'}"] = (
            f"{time.perf_counter() - t:.2f} s"
        )
    os.remove(base)
    return out


# --------------------------------------------------------------------------------------- LLM faults

FAULT_TIMEOUT, FAULT_BUDGET, FAULT_MAX_STEPS = 0.5, 1.0, 3
CLEAR_ERROR = re.compile(
    r"HTTP \d{3}|timed out|LLM endpoint \S+ unreachable|invalid response|max_steps|"
    r"without choices",
    re.I,
)


def fault_kinds() -> list[Any]:
    """Every fault of issue 6, as ``ScriptedOpenAI.fault_rate`` kinds."""
    return [
        "429",  # with Retry-After: 0 and retry-after-ms: 10
        fail(429),  # without Retry-After: our backoff
        "500",
        "503",
        "drop",
        "invalid_json",
        stall(FAULT_TIMEOUT + 0.7),  # past the client timeout
        reply(tool_calls=[("memory_insert", '{"label": "human", "new_str": ')]),  # garbage arguments
        reply(tool_calls=[("drop_all_tables", {"label": "human"})]),  # an unknown tool
        reply(tool_calls=[("memory_replace", {"label": "nope", "old_str": 1, "new_str": None})]),  # wrong types
    ]


@dataclass
class FaultReport:
    runs: int = 0
    states: dict[str, int] = field(default_factory=dict)
    failure_kinds: dict[str, int] = field(default_factory=dict)
    chat_calls: int = 0
    faults: int = 0
    seconds: float = 0.0
    longest_pass_s: float = 0.0
    pass_bound_s: float = 0.0
    problems: list[str] = field(default_factory=list)

    def figures(self) -> str:
        return (
            f"{self.runs} runs -> {self.states} in {self.seconds:.1f} s; chat calls {self.chat_calls}, injected "
            f"faults {self.faults}; failure kinds {self.failure_kinds}; longest pass {self.longest_pass_s:.1f} s"
            f" (bound {self.pass_bound_s:.1f} s)"
        )


def fault_campaign(
    path: str,
    server: Any,
    *,
    subjects: int = 40,
    per_subject: int = 8,
    rate: float = 0.3,
    seed: int = 7,
    pace: float = 0.02,
    deadline_s: float = 180,
) -> FaultReport:
    """Batches arrive while the endpoint fails ``rate`` of chat calls; every run must end, clearly, once."""
    from ai_memory_sdk import Memory

    server.responder = batch_learner_responder
    server.fault_rate(rate, seed=seed, kinds=fault_kinds())
    report = FaultReport(pass_bound_s=FAULT_BUDGET + FAULT_MAX_STEPS * (FAULT_TIMEOUT + 1.0) + 5)
    mem = Memory(
        path=path,
        learner="llm",
        embedder="none",
        llm_base_url=server.base_url,
        llm_api_key="sk-test",
        llm_timeout=FAULT_TIMEOUT,
        llm_retry_budget=FAULT_BUDGET,
        max_steps=FAULT_MAX_STEPS,
        history_limit=0,
        poll_interval=0.05,
    )
    try:
        for s in range(subjects):
            mem.initialize_user_memory(f"s{s}", user_context_block_char_limit=1_000_000)
        t0 = time.monotonic()
        runs: dict[str, int] = {}
        for b in range(subjects * per_subject):
            runs[
                mem.add_messages(
                    f"s{b % subjects}",
                    [
                        {"role": "user", "content": f"batch B{b}-M0 says hello"},
                        {"role": "assistant", "content": f"B{b}-M1 hello back"},
                    ],
                )
            ] = b
            time.sleep(pace)  # batches keep arriving while passes fail around them
        end = time.monotonic() + deadline_s
        while time.monotonic() < end:
            if not any(mem.get_run(r).status in ("queued", "running") for r in runs):
                break
            time.sleep(0.2)
        report.seconds = time.monotonic() - t0
        report.chat_calls, report.faults = server.counters["chat"], server.counters["faults"]
        final = {r: mem.get_run(r) for r in runs}
    finally:
        mem.close()
    report.runs = len(runs)
    for run in final.values():
        report.states[run.status] = report.states.get(run.status, 0) + 1
        if run.started_at and run.finished_at:
            report.longest_pass_s = max(report.longest_pass_s, (run.finished_at - run.started_at).total_seconds())
        if run.status == "failed":
            m = CLEAR_ERROR.search(run.error or "")
            kind = f"{run.stop_reason}: {m.group(0) if m else run.error}"
            report.failure_kinds[kind] = report.failure_kinds.get(kind, 0) + 1
            if not m or run.stop_reason not in ("llm_error", "max_steps"):
                report.problems.append(f"unclear failure of {run.id}: {run.stop_reason} {run.error!r}")
        elif run.status != "completed":
            report.problems.append(f"run {run.id} left {run.status}")
    if report.longest_pass_s > report.pass_bound_s:
        report.problems.append(f"a pass took {report.longest_pass_s:.1f} s (bound {report.pass_bound_s:.1f} s)")
    report.problems += _checks.invariant_problems(path)
    conn = _checks.connect(path)
    try:
        completed = {b for r, b in runs.items() if final[r].status == "completed"}
        failed = {b for r, b in runs.items() if final[r].status == "failed"}
        report.problems += learned_once_problems(conn, completed)
        learned = {
            int(m)
            for (v,) in conn.execute("SELECT value FROM blocks WHERE label='human'")
            for m in re.findall(r"^learned B(\d+)$", v, re.M)
        }
        if learned & failed:
            report.problems.append(f"failed passes changed blocks: batches {sorted(learned & failed)[:10]}")
    finally:
        conn.close()
    return report
