"""The HTTP server under load: ``ai-memory serve`` with 32 async clients, side by side with the Letta server's add.

    .venv/bin/python benchmarks/server_load.py [--clients 32] [--seconds 60] [--latency 0.05] [--worker-processes 0] [--no-letta] [--json FILE] [--smoke]

Everything runs on 127.0.0.1. A scripted OpenAI-compatible endpoint plays the
memory agent's model (after ``--latency`` seconds a call: one ``memory_insert``,
then ``memory_finish_edits``); ``ai-memory serve`` (a real uvicorn process,
learner ``llm`` on that endpoint, lexical search, access log on) serves a fresh
store; the clients are ``AsyncMemory(server_url=...)`` (the ``remote`` engine)
in this process.

1. One client, one request at a time: p50/p99 of ``add_messages``,
   ``get_context``, ``search`` (the latency a caller sees when the server is
   not queueing).
2. ``--clients`` clients for ``--seconds`` seconds, closed loop: each repeats
   3 x ``add_messages`` (2 messages, archived), ``get_context``, ``search``,
   over 8 subjects of its own, and every 4th round waits for its last batch
   with ``wait_for_run`` alongside (at most one wait of its own at a time, as
   an app waits for a run while it serves its next user). Per route: p50/p99
   and requests; requests/s and adds/s sustained; errors (goal 0). By
   Little's law a closed loop of 32 clients sees about 32 / throughput of
   latency per request: the 1-client figures are the service time, these are
   throughput. ``wait_for_run`` measures how far learning (4 workers, 2 LLM
   calls a pass) trails the adds.
3. Unless ``--no-letta`` (or ``--smoke``): a real Letta 0.11.7 server
   (``.ci/setup-letta.sh``) on the same scripted endpoint, and its own add
   (``POST /v1/agents/{id}/messages/async``, what ai-memory-sdk 0.2.0's
   ``add_messages`` sends) measured the same two ways (the load phase for
   ``--seconds / 4``), with the ratio of the p50s.

``--worker-processes K``: the server only serves (``serve --workers 0``) and K
``ai-memory worker`` processes on the store learn, so learning does not take
the serving process's CPU (the scale-out shape of docs/server.md).

Goals on a 2-core machine: ``add_messages`` p50 <= 3 ms through HTTP (phase 1),
>= 500 adds/s sustained (phase 2), 0 errors. ``--smoke``: 4 clients for 3 s,
no Letta.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Awaitable, Iterator
from pathlib import Path
from typing import Any

import _common
import httpx
from support.ai_memory_server import ServeProcess
from support.letta_server import LettaServer, SleeptimeResponder, is_installed
from support.openai_server import ScriptedOpenAI, reply

from ai_memory_sdk import AsyncMemory, Memory

SUBJECTS_PER_CLIENT = 8
LETTA_AGENTS = 8
_LINES = [
    ("user", "I went hiking in the mountains this weekend and the weather was perfect."),
    ("assistant", "That sounds wonderful! Which trail did you take, and how long was the walk?"),
]


def batch(i: int) -> list[dict[str, Any]]:
    return [{"role": role, "content": f"{text} ({i})"} for role, text in _LINES]


def _model(request: dict[str, Any]) -> Any:
    """The memory agent's model: one short insert, then done (2 LLM calls a pass)."""
    if any(m.get("role") == "tool" for m in request.get("messages", [])):
        return reply(tool_calls=[("memory_finish_edits", {})])
    return reply(tool_calls=[("memory_insert", {"label": "human", "new_str": "- hikes"})])


class Recorder:
    """Latencies and errors per route."""

    def __init__(self) -> None:
        self.seconds: dict[str, list[float]] = defaultdict(list)
        self.errors: dict[str, list[str]] = defaultdict(list)

    async def time(self, route: str, call: Awaitable[Any]) -> Any:
        t0 = time.perf_counter()
        try:
            result = await call
        except Exception as exc:  # counted and shown: the goal is none
            self.errors[route].append(f"{type(exc).__name__}: {exc}")
            return None
        self.seconds[route].append(time.perf_counter() - t0)
        return result

    def rows(self, elapsed: float | None = None) -> list[str]:
        out = []
        for route in sorted(self.seconds):
            n = len(self.seconds[route])
            rate = f"  {n / elapsed:8.1f}/s" if elapsed else ""
            out.append(f"  {route:24s} {_common.p50_p99(self.seconds[route])}  n={n:<7d}{rate}")
        return out


# -- ai-memory serve -------------------------------------------------------------------------------------


async def sequential(url: str, key: str, n: int) -> Recorder:
    rec = Recorder()
    memory = AsyncMemory(server_url=url, server_api_key=key)
    try:
        for i in range(n):
            sid = f"seq-{i % 8}"
            await rec.time("add_messages", memory.add_messages(sid, batch(i), skip_vector_storage=False))
        for i in range(n):
            await rec.time("get_context", memory.get_context(f"seq-{i % 8}"))
        for i in range(n):
            await rec.time("search", memory.search(f"seq-{i % 8}", "hiking weather", tags=[]))
    finally:
        await memory.close()
    return rec


async def load(url: str, key: str, clients: int, seconds: float) -> tuple[Recorder, float]:
    rec = Recorder()
    deadline = time.monotonic() + seconds

    async def client(c: int) -> None:
        memory = AsyncMemory(server_url=url, server_api_key=key)
        subjects = [f"c{c}-s{s}" for s in range(SUBJECTS_PER_CLIENT)]
        last = None
        waiting: asyncio.Task[Any] | None = None
        i = 0
        try:
            while time.monotonic() < deadline:
                sid = subjects[i % len(subjects)]
                for _ in range(3):
                    run = await rec.time("add_messages", memory.add_messages(sid, batch(i), skip_vector_storage=False))
                    last = run or last
                await rec.time("get_context", memory.get_context(sid))
                await rec.time("search", memory.search(sid, "hiking weather", tags=[]))
                if i % 4 == 3 and last and (waiting is None or waiting.done()):
                    waiting = asyncio.create_task(rec.time("wait_for_run", memory.wait_for_run(last, timeout=300)))
                i += 1
            if waiting is not None:
                await waiting
        finally:
            await memory.close()

    t0 = time.monotonic()
    await asyncio.gather(*(client(c) for c in range(clients)))
    return rec, time.monotonic() - t0


@contextlib.contextmanager
def _workers(store: Path, count: int, env: dict[str, str]) -> Iterator[None]:
    """``count`` ``ai-memory worker`` processes learning the store's queue, stopped (SIGTERM) at the end."""
    command = [sys.executable, "-m", "ai_memory_sdk.cli", "worker", "--path", str(store), "--learner", "llm"]
    procs = [
        subprocess.Popen(command, env={**os.environ, **env}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(count)
    ]
    try:
        yield
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            proc.wait(60)


# -- the Letta server ------------------------------------------------------------------------------------


def letta_agents(letta: LettaServer) -> list[str]:
    memory = Memory(
        engine="letta",
        base_url=letta.base_url,
        api_key="bench-key",
        letta_model="openai/gpt-4.1",
        letta_embedding=json.dumps(letta.embedding_config),
    )
    try:
        return [memory.initialize_user_memory(f"bench-{i}") for i in range(LETTA_AGENTS)]
    finally:
        memory.close()


async def letta_add(client: httpx.AsyncClient, agent: str, i: int) -> None:
    r = await client.post(f"/v1/agents/{agent}/messages/async", json={"messages": batch(i)})
    r.raise_for_status()


async def letta_sequential(url: str, agents: list[str], n: int) -> Recorder:
    rec = Recorder()
    async with httpx.AsyncClient(base_url=url, headers={"Authorization": "Bearer bench-key"}, timeout=120) as c:
        for i in range(n):
            await rec.time("letta add (async)", letta_add(c, agents[i % len(agents)], i))
    return rec


async def letta_load(url: str, agents: list[str], clients: int, seconds: float) -> tuple[Recorder, float]:
    rec = Recorder()
    deadline = time.monotonic() + seconds

    async def client(k: int) -> None:
        async with httpx.AsyncClient(base_url=url, headers={"Authorization": "Bearer bench-key"}, timeout=120) as c:
            i = 0
            while time.monotonic() < deadline:
                await rec.time("letta add (async)", letta_add(c, agents[(k + i) % len(agents)], i))
                i += 1

    t0 = time.monotonic()
    await asyncio.gather(*(client(k) for k in range(clients)))
    return rec, time.monotonic() - t0


# -- report ----------------------------------------------------------------------------------------------


def _p50(rec: Recorder, route: str) -> float:
    return _common.percentile(rec.seconds[route], 0.5) * 1000


def _errors(rec: Recorder) -> int:
    return sum(len(v) for v in rec.errors.values())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=32, help="concurrent async clients (default 32)")
    parser.add_argument("--seconds", type=float, default=60.0, help="length of the load phase (default 60)")
    parser.add_argument("--latency", type=float, default=0.05, help="seconds the scripted LLM takes per call")
    parser.add_argument("--sequential", type=int, default=300, help="requests per route in phase 1 (default 300)")
    parser.add_argument(
        "--worker-processes", type=int, default=0, help="learn in this many ai-memory worker processes (default 0)"
    )
    parser.add_argument("--no-letta", action="store_true", help="skip the Letta server")
    parser.add_argument("--json", help="also write the raw figures to this file")
    _common.add_smoke_flag(parser)
    args = parser.parse_args(argv)
    if args.smoke:
        args.clients, args.seconds, args.sequential, args.no_letta = 4, 3.0, 20, True

    print(f"server_load: {_common.machine_line()}")
    report: dict[str, Any] = {"args": vars(args), "machine": _common.machine()}
    with tempfile.TemporaryDirectory() as tmp, ScriptedOpenAI(latency=args.latency) as llm:
        llm.responder = _model
        env = {"OPENAI_BASE_URL": llm.base_url, "OPENAI_API_KEY": "sk-bench"}
        store = Path(tmp) / "server.db"
        serve_args = ["--learner", "llm", "--embedder", "none", "--rate", "100000", "--burst", "100000"]
        if args.worker_processes:
            serve_args += ["--workers", "0"]
        with ServeProcess(store, *serve_args, env=env) as server, _workers(store, args.worker_processes, env):
            key = server.key("bench")
            seq = asyncio.run(sequential(server.url, key, args.sequential))
            print(f"\n1. ai-memory serve, 1 client, one request at a time ({args.sequential} per route):")
            print("\n".join(seq.rows()))
            rec, elapsed = asyncio.run(load(server.url, key, args.clients, args.seconds))
            adds = len(rec.seconds["add_messages"])
            total = sum(len(v) for v in rec.seconds.values())
            where = (
                f"{args.worker_processes} worker process(es) learning"
                if args.worker_processes
                else "learning in-process"
            )
            print(f"\n2. ai-memory serve ({where}), {args.clients} clients for {elapsed:.1f} s (closed loop):")
            print("\n".join(rec.rows(elapsed)))
            print(f"  requests/s {total / elapsed:.1f}   adds/s {adds / elapsed:.1f}   errors {_errors(rec)}")
            for route, errs in rec.errors.items():
                print(f"  errors of {route}: {len(errs)}, e.g. {errs[0]}")
            report["serve"] = {"sequential": seq.seconds, "load": rec.seconds, "elapsed": elapsed, "errors": rec.errors}
            log = server.log()
        print(f"  (server log: {log.count(chr(10))} lines, {log.count(' 500 ')} with status 500)")
        add_p50 = _p50(seq, "add_messages")
        print(
            f"\nserver_load: add_messages p50 {add_p50:.2f} ms (1 client), {adds / elapsed:.0f} adds/s sustained"
            f" with {args.clients} clients, {_errors(rec)} errors"
        )
        if args.no_letta:
            print("letta: skipped (--no-letta or --smoke)")
        elif not is_installed():
            print("letta: the Letta 0.11.7 server is not installed (bash .ci/setup-letta.sh): skipped")
        else:
            llm.responder = SleeptimeResponder()
            with LettaServer(llm.base_url, default_embedding=True) as letta:
                agents = letta_agents(letta)
                lseq = asyncio.run(letta_sequential(letta.base_url, agents, min(args.sequential, 100)))
                lrec, lelapsed = asyncio.run(letta_load(letta.base_url, agents, args.clients, args.seconds / 4))
            ladds = len(lrec.seconds["letta add (async)"])
            print(
                f"\n3. Letta 0.11.7 server, its own add (POST /v1/agents/{{id}}/messages/async, {LETTA_AGENTS} agents):"
            )
            print("   1 client:\n" + "\n".join(lseq.rows()))
            print(f"   {args.clients} clients for {lelapsed:.1f} s:\n" + "\n".join(lrec.rows(lelapsed)))
            print(f"  adds/s {ladds / lelapsed:.1f}   errors {_errors(lrec)}")
            ratio = add_p50 / _p50(lseq, "letta add (async)")
            load_ratio = _p50(rec, "add_messages") / _p50(lrec, "letta add (async)")
            print(
                f"\nadd p50, ai-memory serve / Letta server: {ratio:.3f} (1 client), {load_ratio:.3f} ({args.clients} clients);"
                f" adds/s {adds / elapsed:.0f} vs {ladds / lelapsed:.0f}"
            )
            report["letta"] = {
                "sequential": lseq.seconds,
                "load": lrec.seconds,
                "elapsed": lelapsed,
                "errors": lrec.errors,
            }
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1, default=str))
    return 1 if _errors(rec) else 0


if __name__ == "__main__":
    os.environ.setdefault("NO_PROXY", "127.0.0.1,localhost")
    sys.exit(main())
