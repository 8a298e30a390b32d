"""Scale-out on PostgreSQL: learning throughput of worker processes, ``add_messages`` latency, cross-process wake-up.

Usage::

    .venv/bin/python benchmarks/scale_out.py [--path postgresql://...] [--smoke]

Without ``--path`` it starts a PostgreSQL server of its own in a temporary
directory (the system's ``postgresql-15``, see tests/support/postgres_server.py);
with it, it creates (and drops) its databases on that server, which needs the
``CREATEDB`` privilege. Three measurements:

1. Throughput. 2,000 batches queued over 400 subjects, then 1, 2, 4 and 8
   worker processes (``ai-memory worker`` as ``tests/support/procs/pg_worker.py``
   runs it) with 1 and 4 passes each at once learn them, with the scripted LLM
   answering each pass's one call after 200 ms. A subject's queued batches
   coalesce into one pass, so the work is 400 passes; the limit is workers x
   concurrency / 0.2 s passes per second and efficiency is the rate reached
   over it (goal >= 0.90). Every configuration starts from the same copy of
   the queue (a template database) and is timed from the moment every worker
   process is up.
2. ``add_messages`` (a batch of 2 archived messages for one of 20 existing
   users, ``background=False``) against a raw psycopg transaction inserting
   the same rows (the run, the messages, the passages) into the same tables,
   alternated in the same run (goal: p50 at most 2x).
3. ``wait_for_run`` in another process: from the commit of a completion to
   the waiter's return (goal: p50 at most 50 ms).

With each configuration it prints the CPU time spent per pass by the worker
processes, the PostgreSQL server (when it runs here) and this process (the
scripted LLM): on a machine whose cores are busy, throughput stops at the CPU
share the benchmark gets, whatever the number of workers.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from contextlib import ExitStack
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import _common
import psycopg
from reliability._harness import batch_learner_responder
from support.child import Child
from support.openai_server import ScriptedOpenAI
from support.postgres_server import PostgresServer, database_name

from ai_memory_sdk import Memory
from ai_memory_sdk.store._rows import dumps, new_id
from ai_memory_sdk.store.base import PassResult
from ai_memory_sdk.store.postgres import PostgresStore
from ai_memory_sdk.store.recipe import passage_context, token_count

LATENCY = 0.2  # seconds the scripted LLM takes per call (one call per pass)
_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time of these processes so far (Linux /proc; 0 for a process gone or elsewhere)."""
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / _TICK
    return total


def server_pids(server: PostgresServer | None) -> list[int]:
    """The PostgreSQL server's processes (postmaster and its backends), when it runs on this machine."""
    if server is None:
        return []
    try:
        postmaster = int((server.data_dir / "postmaster.pid").read_text().split()[0])
        children = subprocess.run(["pgrep", "-P", str(postmaster)], capture_output=True, text=True).stdout.split()
    except (OSError, ValueError):
        return []
    return [postmaster, *(int(p) for p in children)]


class Databases:
    """Databases on one server: created for the benchmark, dropped at the end."""

    def __init__(self, admin_url: str) -> None:
        self.admin_url = admin_url
        self.made: list[str] = []

    def url(self, name: str) -> str:
        base, _, query = self.admin_url.partition("?")
        return f"{base.rsplit('/', 1)[0]}/{name}" + (f"?{query}" if query else "")

    def create(self, template: str | None = None) -> str:
        name = f"scale_out_{uuid.uuid4().hex[:10]}"
        sql = f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else "")
        for attempt in range(50):  # a template must have no session left: the last ones may still be closing
            try:
                with psycopg.connect(self.admin_url, autocommit=True) as conn:
                    conn.execute(sql)
                break
            except psycopg.errors.ObjectInUse:
                if attempt == 49:
                    raise
                time.sleep(0.1)
        self.made.append(name)
        return self.url(name)

    def drop_all(self) -> None:
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            for name in self.made:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _rows(url: str, sql: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(url, autocommit=True) as conn:
        return list(conn.execute(sql).fetchall())


# -- 1. throughput -------------------------------------------------------------------------------------------


def queue_batches(url: str, batches: int, subjects: int) -> None:
    with Memory(path=url, learner="offline", embedder="none", background=False) as mem:
        for b in range(batches):
            mem.add_messages(f"subject-{b % subjects}", [{"role": "user", "content": f"batch B{b}-M0 says hello"}])


def throughput(
    dbs: Databases,
    template_url: str,
    workers: int,
    concurrency: int,
    llm: ScriptedOpenAI,
    server: PostgresServer | None,
) -> dict[str, Any]:
    url = dbs.create(template=database_name(template_url))
    go = Path(tempfile.mkdtemp(prefix="scale-out-")) / "go"
    llm.clear()
    children = [
        Child(
            "pg_worker.py",
            {
                "url": url,
                "base_url": llm.base_url,
                "concurrency": concurrency,
                "go_file": str(go),
                "poll_interval": 0.2,
            },
        )
        for _ in range(workers)
    ]
    try:
        for child in children:
            if child.wait_line("READY", 120) is None:
                raise RuntimeError(f"worker did not start: {child.stderr_tail()}")
        total = _rows(url, "SELECT count(*) FROM ai_memory.runs")[0][0]
        pids = [c.proc.pid for c in children]
        cpu0 = (cpu_seconds(pids), cpu_seconds(server_pids(server)), time.process_time())
        go.touch()
        t0 = time.monotonic()
        while _rows(url, "SELECT count(*) FROM ai_memory.runs WHERE status IN ('queued', 'running')")[0][0]:
            time.sleep(0.05)
        seconds = time.monotonic() - t0
        cpu = (cpu_seconds(pids), cpu_seconds(server_pids(server)), time.process_time())
    finally:
        for child in children:
            child.kill()
    statuses = dict(_rows(url, "SELECT status, count(*) FROM ai_memory.runs GROUP BY status"))
    passes = len(llm.chat_requests)
    limit = workers * concurrency / LATENCY
    return {
        "workers": workers,
        "concurrency": concurrency,
        "batches": total,
        "passes": passes,
        "seconds": seconds,
        "passes_per_s": passes / seconds,
        "limit_per_s": limit,
        "efficiency": passes / seconds / limit,
        "completed": statuses.get("completed", 0),
        # CPU per pass (ms): the worker processes, PostgreSQL (0 when not on this machine), and this process (the
        # scripted LLM serving every call, and the polling for the end)
        "cpu_ms_per_pass": [round((b - a) * 1000 / max(passes, 1), 1) for a, b in zip(cpu0, cpu)],
    }


# -- 2. add_messages against a raw transaction -----------------------------------------------------------------


def _raw_insert(conn: psycopg.Connection[Any], subject_pk: int, messages: list[dict[str, Any]]) -> None:
    """The same rows ``add_messages`` writes (a queued run, its messages, their passages), as plain INSERTs."""
    now = time.time()
    with conn.transaction():
        seq = conn.execute(
            "INSERT INTO ai_memory.runs(id, subject_pk, status, created_at) VALUES (%s, %s, 'queued', %s) RETURNING seq",
            (new_id("run"), subject_pk, now),
        ).fetchone()[0]  # type: ignore[index]
        previous: list[str] = []
        rows = []
        for m in messages:
            context = passage_context(datetime.now(timezone.utc), previous)
            rows.append(
                (
                    new_id("msg"),
                    subject_pk,
                    seq,
                    m["role"],
                    m["content"],
                    None,
                    None,
                    now,
                    subject_pk,
                    m["content"],
                    context,
                    m["role"],
                    dumps([m["role"]]),
                    now,
                    token_count(m["content"]) + token_count(context),
                )
            )
            previous.append(m["content"])
        conn.cursor().executemany(
            "WITH m AS (INSERT INTO ai_memory.messages(id, subject_pk, run_seq, role, content, name, metadata,"
            " created_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s) RETURNING seq)"
            " INSERT INTO ai_memory.passages(subject_pk, message_seq, content, context, role, tags, created_at, tokens)"
            " SELECT %s, m.seq, %s, %s, %s, %s, %s, %s FROM m",
            rows,
        )


def add_messages_latency(dbs: Databases, samples: int) -> tuple[list[float], list[float]]:
    url = dbs.create()
    ours, raw = [], []
    with Memory(path=url, learner="offline", embedder="none", background=False) as mem:
        mem.add_messages("raw-subject", [{"role": "user", "content": "hello"}])  # the subject the raw rows go to
        subject_pk = mem._engine.store.subject_pk("raw-subject")  # type: ignore[attr-defined]
        with psycopg.connect(url, autocommit=True) as conn:
            for i in range(-20, samples):  # the first 20 create the users and warm both paths up: not timed
                batch = [
                    {"role": "user", "content": f"I went hiking near lake {i} with my sister last weekend."},
                    {"role": "assistant", "content": f"That sounds lovely. How was the weather at lake {i}?"},
                ]
                t = time.perf_counter()
                mem.add_messages(f"user-{i % 20}", batch, skip_vector_storage=False)
                t1 = time.perf_counter()
                _raw_insert(conn, subject_pk, batch)
                if i >= 0:
                    ours.append(t1 - t)
                    raw.append(time.perf_counter() - t1)
    return ours, raw


# -- 3. cross-process wake-up ----------------------------------------------------------------------------------

_WAITER = """
import sys, time
from ai_memory_sdk.store.postgres import PostgresStore
store = PostgresStore(sys.argv[1])
store.listener.wait_up(10)
print("READY", flush=True)
for line in sys.stdin:
    print("WAITING", flush=True)
    store.wait_for_run(line.strip(), 60)
    print("WOKE", time.time(), flush=True)
store.close()
"""


def wake_latency(dbs: Databases, samples: int) -> list[float]:
    url = dbs.create()
    store = PostgresStore(url)
    child = subprocess.Popen(
        [sys.executable, "-c", _WAITER, url], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=_common.ROOT
    )
    assert child.stdin is not None and child.stdout is not None
    delays = []
    try:
        if child.stdout.readline().strip() != "READY":
            raise RuntimeError("the waiting process did not start")
        for i in range(samples):
            from ai_memory_sdk.models import MessageIn

            run_id = store.enqueue(
                "s", [MessageIn(role="user", content=f"m{i}", created_at=datetime.now(timezone.utc))], passages=[None]
            )
            child.stdin.write(run_id + "\n")
            child.stdin.flush()
            child.stdout.readline()  # WAITING
            time.sleep(0.05)
            claim = store.queue.claim(30)
            assert claim is not None
            store.queue.complete(claim, PassResult(learner="bench"))
            done = time.time()
            delays.append(float(child.stdout.readline().split()[1]) - done)
    finally:
        child.stdin.close()
        child.wait(30)
        store.close()
    return delays


# -- main ----------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--path", help="a database URL of the server to use (default: a server started here)")
    ap.add_argument("--workers", default="1,2,4,8", help="worker process counts (default 1,2,4,8)")
    ap.add_argument("--concurrency", default="1,4", help="passes at once per worker (default 1,4)")
    _common.add_smoke_flag(ap)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)
    batches, subjects, samples, wakes = 2000, 400, 200, 50
    workers = [int(x) for x in args.workers.split(",")]
    concurrency = [int(x) for x in args.concurrency.split(",")]
    if args.smoke:
        batches, subjects, samples, wakes, workers, concurrency = 40, 8, 20, 5, [1, 2], [2]
    print(_common.machine_line())
    with ExitStack() as stack:
        server: PostgresServer | None = None
        if args.path:
            admin = args.path
        else:
            server = stack.enter_context(PostgresServer.start("system"))
            admin = server.url()
        dbs = Databases(admin)
        stack.callback(dbs.drop_all)
        print(f"PostgreSQL: {_rows(admin, 'SELECT version()')[0][0].split(' on ')[0]}")

        ours, raw = add_messages_latency(dbs, samples)
        p50_ours, p50_raw = statistics.median(ours), statistics.median(raw)
        print(
            f"add_messages (2 archived messages) {_common.p50_p99(ours)}; raw INSERT transaction of the same rows"
            f" {_common.p50_p99(raw)}; ratio of p50s {p50_ours / p50_raw:.2f} (goal <= 2)"
        )
        delays = wake_latency(dbs, wakes)
        print(f"wait_for_run wake across processes: {_common.p50_p99(delays)} (goal p50 <= 50 ms)")

        template = dbs.create()
        t = time.monotonic()
        queue_batches(template, batches, subjects)
        print(f"{batches} batches queued over {subjects} subjects in {time.monotonic() - t:.1f}s")
        results = []
        with ScriptedOpenAI(latency=LATENCY) as llm:
            llm.responder = batch_learner_responder
            print(
                f"{'workers':>7} {'conc':>4} {'batches':>7} {'passes':>6} {'seconds':>7} {'passes/s':>8}"
                f" {'limit/s':>7} {'efficiency':>10}   CPU ms per pass: workers / PostgreSQL / this process (LLM)"
            )
            for w in workers:
                for c in concurrency:
                    r = throughput(dbs, template, w, c, llm, server)
                    results.append(r)
                    print(
                        f"{r['workers']:>7} {r['concurrency']:>4} {r['completed']:>7} {r['passes']:>6}"
                        f" {r['seconds']:>7.2f} {r['passes_per_s']:>8.1f} {r['limit_per_s']:>7.1f}"
                        f" {r['efficiency']:>10.2f}   {' / '.join(str(x) for x in r['cpu_ms_per_pass'])}",
                        flush=True,
                    )
        print(
            "scale_out: efficiency "
            + ", ".join(f"{r['workers']}x{r['concurrency']} {r['efficiency']:.2f}" for r in results)
            + f"; add_messages/raw p50 {p50_ours / p50_raw:.2f}; wake p50 {statistics.median(delays) * 1000:.1f} ms"
        )
        print(json.dumps({"throughput": results, "machine": _common.machine()}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
