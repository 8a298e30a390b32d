"""The local engine's hot paths, each against its physical floor measured in the same run.

    .venv/bin/python benchmarks/bench_local.py [--n 2000] [--n-get 20000] [--n-llm 200] [--path DIR] [--json FILE] [--profile] [--smoke]

Absolute times on a shared machine are noise; a ratio to a floor timed in the
same run, call for call interleaved with the measured one, is not (docs/dev/hot-path.md).
Measured on fresh SQLite files (WAL, ``synchronous=NORMAL``: every
``add_messages`` is a durable commit that survives a process crash):

- ``add_messages`` of a 10-message batch, workers off, against a raw SQLite
  transaction (``BEGIN IMMEDIATE``, the run row and the 10 message rows with
  their ids, ``COMMIT``; its checkpoints run between the timed calls) into a
  file of the same schema. Goals: p50 <= 2.0x the floor; p99 <= 5 ms, or, where
  the raw transaction's own p99 shows the machine noisier than that, <= 2.0x
  the floor's p99. The size of the write-ahead log at the end is printed (no
  worker runs). Also shown (no goal): workers on (the offline learner applying
  in threads of the same process) and archived (passages + FTS5).
- ``get_user_memory(prompt_formatted=True)`` against a primary-key SELECT of the
  block plus an f-string. Goal: p50 <= 1.5x the floor.
- the LLM memory agent against the scripted OpenAI-compatible server
  (``tests/support/openai_server.py``, in a process of its own as an endpoint
  is) on 127.0.0.1: from ``add_messages`` returning to the chat request
  received (the server's clock), and from the answer leaving the server to
  ``wait_for_run`` returning. Goals: p50 <= 3 ms each.
- throughput: 48 passes whose LLM call takes 200 ms, on 4 workers, after one
  pass per worker, against the same 48 calls made by 4 bare threads (plain
  HTTP requests, no memory) just before, three times. Goal: elapsed <= floor /
  0.97 (efficiency 0.97 against the floor); the efficiency against the ideal
  48 x 0.2 s / 4 = 2.40 s is printed for both.

It prints the machine and settings, each figure with its floor, ratio, goal and
PASS/MISS. ``--profile`` prints cProfile of ``add_messages``, of
``get_user_memory`` and of passes run in the calling thread (where the time
goes). Exit status 1 when a goal is missed (``--smoke``: tiny sizes, goals not
judged).
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import http.client
import io
import json
import logging
import os
import pstats
import sqlite3
import sys
import tempfile
import threading
import time
import urllib.parse
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import _common
from support import internals
from support.child import Child

from ai_memory_sdk import Memory

BATCH = 10
SUBJECTS = 50
GOAL_ADD_RATIO = 2.0
GOAL_ADD_P99_MS = 5.0
GOAL_GET_RATIO = 1.5
GOAL_LLM_MS = 3.0
GOAL_EFFICIENCY = 0.97
GOAL_THROUGHPUT_RATIO = round(1 / GOAL_EFFICIENCY, 3)  # elapsed against the bare calls' elapsed
THROUGHPUT_PASSES, THROUGHPUT_WORKERS, THROUGHPUT_LLM_S = 48, 4, 0.2
HUMAN = "Name: Alice Walker\nLocation: Lisbon\nJob: nurse\nLikes: jazz; hiking; cats\nDislikes: mornings"


@dataclass
class Figure:
    """One measurement: its samples' p50/p99, the floor's p50 when it has one, and its goals."""

    name: str
    n: int
    unit: str
    p50: float
    p99: float
    floor_p50: float | None = None
    floor_p99: float | None = None
    goals: list[tuple[str, float]] = field(default_factory=list)  # ("ratio" | "p50" | "p99" | "min", bound)

    @property
    def ratio(self) -> float | None:
        return None if not self.floor_p50 else self.p50 / self.floor_p50

    @property
    def ratio_goal(self) -> float | None:
        return next((bound for kind, bound in self.goals if kind == "ratio"), None)

    def met(self) -> list[bool]:
        got = {"ratio": self.ratio, "p50": self.p50, "p99": self.p99, "min": self.p50}
        out = []
        for kind, bound in self.goals:
            value = got[kind]
            if kind == "p99" and self.floor_p99 is not None and self.ratio_goal is not None:
                # The raw transaction's own p99 is this machine's I/O and scheduling noise. Where it is past
                # the bound no code meets the bound; a call doing ``ratio_goal`` times the floor's work is then
                # held to ``ratio_goal`` times the floor's p99 (no checkpoint, no lock wait of its own on top).
                bound = max(bound, self.ratio_goal * self.floor_p99)
            out.append(value is not None and (value >= bound if kind == "min" else value <= bound))
        return out

    @property
    def verdict(self) -> str:
        if not self.goals:
            return "-"
        return "PASS" if all(self.met()) else "MISS"

    def goal_text(self) -> str:
        words = {"ratio": "p50 <= {:g}x floor", "p50": "p50 <= {:g}", "p99": "p99 <= max({:g}", "min": ">= {:g}"}
        scale = f", {self.ratio_goal:g}x floor p99)" if self.ratio_goal else ")"
        return ", ".join(
            words[k].format(b) + ("" if k in ("ratio", "min") else f" {self.unit}") + (scale if k == "p99" else "")
            for k, b in self.goals
        )


def _stats(name: str, samples_ns: list[int], unit: str, floor_ns: list[int] | None = None, **kw: Any) -> Figure:
    scale = {"ms": 1e6, "us": 1e3}[unit]
    values = [s / scale for s in samples_ns]
    floor = None if floor_ns is None else [s / scale for s in floor_ns]
    return Figure(
        name,
        len(values),
        unit,
        _common.percentile(values, 0.5),
        _common.percentile(values, 0.99),
        None if floor is None else _common.percentile(floor, 0.5),
        None if floor is None else _common.percentile(floor, 0.99),
        **kw,
    )


def _batch(i: int) -> list[dict[str, Any]]:
    """A realistic 10-message exchange, ~80 characters per message."""
    return [
        {
            "role": "user" if j % 2 == 0 else "assistant",
            "content": f"Message {j} of exchange {i}: I was thinking about the trip to Lisbon next month and what to pack.",
        }
        for j in range(BATCH)
    ]


def _quiet() -> None:
    """Start each measurement on a collected heap, so one's garbage is not collected during the next."""
    gc.collect()


def _interleaved(
    measured: Callable[[int], Any],
    floor: Callable[[int], Any],
    n: int,
    warmup: int,
    idle: Callable[[int], Any] = lambda i: None,
) -> tuple[list[int], list[int]]:
    """Time ``measured`` and ``floor`` call for call, alternately, so a change in the machine's load hits both."""
    for i in range(warmup):
        floor(-1 - i)
        measured(-1 - i)
    got, base = [], []
    clock = time.perf_counter_ns
    for i in range(n):
        t0 = clock()
        floor(i)
        t1 = clock()
        measured(i)
        t2 = clock()
        base.append(t1 - t0)
        got.append(t2 - t1)
        idle(i)  # untimed
    return got, base


# -- floors ----------------------------------------------------------------------------------------


class _RawFile:
    """A file of the store's schema written and read with bare ``sqlite3`` calls: the floor of each call."""

    def __init__(self, path: str) -> None:
        Memory(path=path, learner="offline", embedder="none", background=False).close()  # the schema, nothing else
        self.conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=NORMAL")
        self.conn.execute("PRAGMA wal_autocheckpoint=0")  # checkpoints between the timed commits (``idle``)
        now = time.time()
        with self.conn:
            self.conn.execute("BEGIN IMMEDIATE")
            self.conn.executemany(
                "INSERT INTO subjects(pk, tenant, subject_id, agent_id, created_at) VALUES (?, '', ?, ?, ?)",
                [(k + 1, f"raw-{k}", f"agent-{uuid.uuid4()}", now) for k in range(SUBJECTS)],
            )
            self.conn.execute(
                "INSERT INTO blocks(pk, id, subject_pk, label, description, value, char_limit, created_at, updated_at)"
                " VALUES (1, 'block-1', 1, 'human', ?, ?, 10000, ?, ?)",
                ("Details about the human user you are speaking to.", HUMAN, now, now),
            )

    def add(self, i: int, messages: list[dict[str, Any]]) -> None:
        """``BEGIN IMMEDIATE``; the run row; the message rows with fresh ids; ``COMMIT``."""
        conn, pk, now = self.conn, i % SUBJECTS + 1, time.time()
        conn.execute("BEGIN IMMEDIATE")
        seq = conn.execute(
            "INSERT INTO runs(id, subject_pk, status, created_at) VALUES (?, ?, 'queued', ?)",
            (f"run-{uuid.uuid4()}", pk, now),
        ).lastrowid
        conn.executemany(
            "INSERT INTO messages(id, subject_pk, run_seq, role, content, name, metadata, created_at)"
            " VALUES (?, ?, ?, ?, ?, NULL, NULL, ?)",
            [(f"msg-{uuid.uuid4()}", pk, seq, m["role"], m["content"], now) for m in messages],
        )
        conn.execute("COMMIT")

    def idle(self, i: int) -> None:
        """Untimed, between two samples: a checkpoint now and then keeps the log small, never inside a commit."""
        if i % 64 == 63:
            self.conn.execute("PRAGMA wal_checkpoint(PASSIVE)")

    def get(self) -> str:
        """A primary-key SELECT of the block and an f-string."""
        description, value = self.conn.execute("SELECT description, value FROM blocks WHERE pk=?", (1,)).fetchone()
        return f'<human description="{description}">{value}</human>'

    def close(self) -> None:
        self.conn.close()


# -- measurements ----------------------------------------------------------------------------------


def _wal_bytes(path: str) -> int:
    try:
        return os.path.getsize(path + "-wal")
    except OSError:
        return 0


def bench_add(tmp: Path, n: int, *, background: bool, archive: bool) -> tuple[list[int], list[int], int]:
    """(samples, floor samples, the -wal file's size at the end) of ``add_messages`` against the raw transaction."""
    path = str(tmp / f"add-{background}-{archive}.db")
    raw = _RawFile(str(tmp / f"raw-{background}-{archive}.db"))
    memory = Memory(path=path, learner="offline", embedder="none", background=background)
    try:
        users = [f"bench-user-{k}" for k in range(SUBJECTS)]
        batches = [_batch(i) for i in range(64)]

        def call(i: int) -> None:
            memory.add_messages(users[i % SUBJECTS], batches[i % 64], skip_vector_storage=not archive)

        _quiet()
        got, base = _interleaved(
            call, lambda i: raw.add(i, batches[i % 64]), n, warmup=min(100, n // 10 + 1), idle=raw.idle
        )
        wal = _wal_bytes(path)
        if background:  # let the workers finish so the next measurement starts quiet
            memory.wait_for_run(memory.add_messages(users[0], batches[0]), timeout=600)
        return got, base, wal
    finally:
        memory.close()
        raw.close()


def bench_get(tmp: Path, n: int) -> tuple[list[int], list[int]]:
    raw = _RawFile(str(tmp / "raw-get.db"))
    memory = Memory(path=str(tmp / "get.db"), learner="offline", embedder="none", background=False)
    try:
        uid = "bench-reader"
        memory.initialize_user_memory(uid, reset=True, user_context_block_value=HUMAN)
        expected = raw.get()
        assert memory.get_user_memory(uid, prompt_formatted=True) == expected, "the floor renders something else"
        _quiet()
        return _interleaved(
            lambda _: memory.get_user_memory(uid, prompt_formatted=True), lambda _: raw.get(), n, warmup=1000
        )
    finally:
        memory.close()
        raw.close()


class _LLM:
    """The scripted OpenAI-compatible server in a child process (``tests/support/procs/scripted_llm.py``).

    An LLM endpoint is another process than the application: run in the
    application's process, the server's own request parsing would take the
    interpreter lock from the workers being measured. Each chat request is
    answered with one rewrite of the ``human`` block and finish, after
    ``delay``; the child reports when each request was received and when its
    answer left (``time.time()``, one clock for both processes).
    """

    def __init__(self, delay: float = 0.0) -> None:
        self.child = Child("scripted_llm.py", {"delay": delay})
        self.base_url = self.child.expect_line("URL ", timeout=60).split(" ", 1)[1]
        self._dumps = 0

    def times(self) -> tuple[list[float], list[float]]:
        """When each chat request so far was received, and when its answer left."""
        self._dumps += 1
        self.child.send(f"DUMP {self._dumps}")
        got = json.loads(self.child.expect_line(f"TIMES {self._dumps} ", timeout=30).split(" ", 2)[2])
        return got["received"], got["answered"]

    def __enter__(self) -> _LLM:
        return self

    def __exit__(self, *exc: object) -> None:
        self.child.kill()


def _llm_memory(path: str, base_url: str, workers: int, background: bool = True) -> Memory:
    return Memory(
        path=path,
        learner="llm",
        llm_base_url=base_url,
        llm_api_key="bench",
        model="gpt-4o-mini",
        embedder="none",
        workers=workers,
        consolidate_at=None,
        background=background,
    )


def passes_in_this_thread(tmp: Path, base_url: str, n: int) -> None:
    """``n`` batches, each learned by a pass run in the calling thread (what ``--profile`` can see)."""
    memory = _llm_memory(str(tmp / "llm-drain.db"), base_url, workers=1, background=False)
    try:
        memory.initialize_user_memory("drained", user_context_block_value=HUMAN, reset=True)
        for i in range(n):
            memory.add_messages("drained", _batch(i))
            assert internals.run_pass(memory), "the batch was not claimed"
    finally:
        memory.close()


def bench_llm_latency(tmp: Path, n: int) -> tuple[list[int], list[int]]:
    """(add_messages returned -> request received, answer sent -> wait_for_run returned), one pass at a time."""
    with _LLM() as llm:
        memory = _llm_memory(str(tmp / "llm.db"), llm.base_url, workers=4)
        try:
            users = [f"llm-user-{k}" for k in range(4)]
            for uid in users:
                memory.initialize_user_memory(uid, user_context_block_value=HUMAN, reset=True)
            for i in range(5):  # warm-up passes
                memory.wait_for_run(memory.add_messages(users[i % 4], _batch(i)), timeout=60)
            before = len(llm.times()[0])
            added, returned = [], []
            _quiet()
            for i in range(n):
                run = memory.add_messages(users[i % 4], _batch(i))
                added.append(time.time())
                memory.wait_for_run(run, timeout=60)
                returned.append(time.time())
            received, answered = llm.times()
            assert len(received) == before + n, "one LLM call per pass expected"
            to_request = [int((r - a) * 1e9) for a, r in zip(added, received[before:])]
            to_return = [int((r - a) * 1e9) for a, r in zip(answered[before:], returned)]
            return to_request, to_return
        finally:
            memory.close()


def _bare_calls(base_url: str, calls: int, clients: int) -> float:
    """Seconds for ``calls`` chat requests on ``clients`` threads and no memory at all: the throughput's floor.

    Plain keep-alive HTTP requests (``http.client``) with a body of an agent's
    request size, each answer read and parsed, to the same server as the
    workers', timed from a common start (each thread connected first).
    """
    url = urllib.parse.urlsplit(base_url)
    body = json.dumps(
        {
            "model": "gpt-4o-mini",
            "messages": [{"role": "system", "content": "s" * 3000}, {"role": "user", "content": "u" * 1500}],
        }
    ).encode()
    headers = {"Content-Type": "application/json", "Authorization": "Bearer bench"}
    turns = iter(range(calls))
    lock = threading.Lock()
    start = threading.Barrier(clients + 1)

    def client() -> None:
        conn = http.client.HTTPConnection(url.hostname or "127.0.0.1", url.port)
        conn.connect()
        start.wait()
        while True:
            with lock:
                if next(turns, None) is None:
                    break
            conn.request("POST", f"{url.path}/chat/completions", body, headers)
            json.loads(conn.getresponse().read())
        conn.close()

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    start.wait()
    began = time.perf_counter()
    for t in threads:
        t.join()
    return time.perf_counter() - began


def bench_throughput(tmp: Path, passes: int, rounds: int) -> list[tuple[float, float]]:
    """(floor seconds, seconds) of each round: ``passes`` LLM calls of 200 ms by bare threads, then as passes.

    A round of passes is timed from the first ``add_messages`` to the last
    of its runs ended. The two alternate, so a change in the machine's load hits both.
    """
    out = []
    with _LLM(delay=THROUGHPUT_LLM_S) as llm:
        memory = _llm_memory(str(tmp / "throughput.db"), llm.base_url, workers=THROUGHPUT_WORKERS)
        try:
            # One pass per worker first: the client's first request (TLS context, connection) is a start-up cost.
            warm = [memory.add_messages(f"tp-warm-{k}", _batch(k)) for k in range(THROUGHPUT_WORKERS)]
            for run in warm:
                memory.wait_for_run(run, timeout=120)
            for r in range(rounds):
                users = [f"tp-user-{r}-{k}" for k in range(passes)]
                for uid in users:
                    memory.initialize_user_memory(uid, user_context_block_value=HUMAN, reset=True)
                _quiet()
                floor = _bare_calls(llm.base_url, passes, THROUGHPUT_WORKERS)
                before = len(llm.times()[0])
                _quiet()
                started = time.perf_counter()
                runs = [memory.add_messages(uid, _batch(k)) for k, uid in enumerate(users)]
                for run in runs:
                    memory.wait_for_run(run, timeout=120)
                out.append((floor, time.perf_counter() - started))
                assert len(llm.times()[0]) == before + passes, "one LLM call per pass expected"
            return out
        finally:
            memory.close()


# -- report ----------------------------------------------------------------------------------------


def _settings(tmp: Path) -> dict[str, Any]:
    probe = Memory(path=str(tmp / "probe.db"), learner="offline", embedder="none", background=False)
    try:
        conn = internals.store_connection(internals.store(probe))
        journal = conn.execute("PRAGMA journal_mode").fetchone()[0]
        sync = {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}[conn.execute("PRAGMA synchronous").fetchone()[0]]
    finally:
        probe.close()
    return {
        "journal_mode": journal,
        "synchronous": sync,
        "batch": f"{BATCH} messages, ~80 chars each",
        "subjects": SUBJECTS,
        "embedder": "none",
    }


def _profile(label: str, fn: Callable[[], Any]) -> str:
    prof = cProfile.Profile()
    prof.enable()
    fn()
    prof.disable()
    out = io.StringIO()
    pstats.Stats(prof, stream=out).strip_dirs().sort_stats("tottime").print_stats(22)
    return f"--- cProfile: {label} (sorted by own time) ---\n" + out.getvalue()


def _print(figures: list[Figure], extra: dict[str, Any]) -> None:
    print(
        f"{'measurement':44} {'n':>6} {'p50':>10} {'p99':>10} {'floor p50':>10} {'floor p99':>10} {'ratio':>6}"
        f"  {'goal':46} verdict"
    )
    for f in figures:
        floor50 = f"{f.floor_p50:8.3f}{f.unit}" if f.floor_p50 else "-"
        floor99 = f"{f.floor_p99:8.3f}{f.unit}" if f.floor_p99 else "-"
        ratio = f"{f.ratio:5.2f}x" if f.ratio else "-"
        print(
            f"{f.name:44} {f.n:>6} {f.p50:8.3f}{f.unit} {f.p99:8.3f}{f.unit} {floor50:>10} {floor99:>10} {ratio:>6}"
            f"  {f.goal_text() or '-':46} {f.verdict}"
        )
    for key, value in extra.items():
        print(f"{key}: {value}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--n", type=int, default=2000, help="timed calls per add_messages measurement")
    ap.add_argument("--n-get", type=int, default=20000, help="timed get_user_memory calls")
    ap.add_argument("--n-llm", type=int, default=200, help="timed passes of the LLM latency measurement")
    ap.add_argument("--path", help="directory for the database files (default: a temporary directory)")
    ap.add_argument("--json", help="also write the figures to this JSON file")
    ap.add_argument("--profile", action="store_true", help="print cProfile of each measured call")
    _common.add_smoke_flag(ap)
    args = ap.parse_args(argv)
    if args.smoke:
        args.n, args.n_get, args.n_llm = 50, 500, 10
    logging.basicConfig(level=logging.WARNING)
    passes = 8 if args.smoke else THROUGHPUT_PASSES

    with tempfile.TemporaryDirectory(prefix="bench-local-", dir=args.path) as tmp_name:
        tmp = Path(tmp_name)
        got, base, wal_off = bench_add(tmp, args.n, background=False, archive=False)
        figures = [
            _stats(
                "add_messages, 10 msgs, workers off",
                got,
                "ms",
                base,
                goals=[("ratio", GOAL_ADD_RATIO), ("p99", GOAL_ADD_P99_MS)],
            )
        ]
        got, base, wal_on = bench_add(tmp, args.n, background=True, archive=False)
        figures.append(_stats("add_messages, 10 msgs, workers on", got, "ms", base))
        got, base, _ = bench_add(tmp, args.n, background=False, archive=True)
        figures.append(_stats("add_messages, 10 msgs, archived (FTS), off", got, "ms", base))
        got, base = bench_get(tmp, args.n_get)
        figures.append(
            _stats("get_user_memory(prompt_formatted=True)", got, "us", base, goals=[("ratio", GOAL_GET_RATIO)])
        )
        to_request, to_return = bench_llm_latency(tmp, args.n_llm)
        figures.append(_stats("add_messages -> LLM request received", to_request, "ms", goals=[("p50", GOAL_LLM_MS)]))
        figures.append(
            _stats("LLM answer sent -> wait_for_run returned", to_return, "ms", goals=[("p50", GOAL_LLM_MS)])
        )
        rounds = bench_throughput(tmp, passes, 1 if args.smoke else 3)
        limit = passes * THROUGHPUT_LLM_S / THROUGHPUT_WORKERS
        figures.append(
            _stats(
                f"throughput: {passes} x 200 ms calls / 4 workers",
                [int(e * 1e9) for _, e in rounds],
                "ms",
                [int(f * 1e9) for f, _ in rounds],
                goals=[("ratio", GOAL_THROUGHPUT_RATIO)],
            )
        )
        extra = {
            "throughput rounds (floor: the same calls from 4 bare threads)": "; ".join(
                f"{e:.3f} s (efficiency {limit / e:.3f}) against a floor of {f:.3f} s ({limit / f:.3f}): {f / e:.3f}"
                for f, e in rounds
            )
            + f"  [efficiency = {limit:.2f} s / elapsed]",
            "write-ahead log after the workers-off run": f"{wal_off / 1e6:.2f} MB ({args.n} commits, no worker)",
            "write-ahead log after the workers-on run": f"{wal_on / 1e6:.2f} MB",
        }
        settings = _settings(tmp)
        machine = _common.machine()
        print("machine:  " + ", ".join(f"{k}={v}" for k, v in machine.items()))
        print("settings: " + ", ".join(f"{k}={v}" for k, v in settings.items()))
        print()
        _print(figures, extra)

        if args.json:
            Path(args.json).write_text(
                json.dumps(
                    {
                        "machine": machine,
                        "settings": settings,
                        "figures": [dict(asdict(f), ratio=f.ratio, verdict=f.verdict) for f in figures],
                        **extra,
                    },
                    indent=2,
                )
            )
        if args.profile:
            again = tmp / "profile"  # fresh files
            again.mkdir()
            print(
                _profile(
                    "add_messages, workers off (and the raw transaction)",
                    lambda: bench_add(again, min(args.n, 1000), background=False, archive=False),
                )
            )
            print(_profile("get_user_memory (and the primary-key select)", lambda: bench_get(again, args.n_get)))
            with _LLM() as llm:
                print(
                    _profile(
                        "add_messages, then its pass run in the same thread (claim, prompt, LLM request, apply)",
                        lambda: passes_in_this_thread(again, llm.base_url, min(args.n_llm, 100)),
                    )
                )
    if args.smoke:
        print("(smoke run: sizes too small to judge the goals)")
        return 0
    return 1 if any(f.verdict == "MISS" for f in figures) else 0


if __name__ == "__main__":
    sys.exit(main())
