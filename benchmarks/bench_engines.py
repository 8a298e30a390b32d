"""Caller-side latency: local engine vs letta engine vs the original ai-memory-sdk 0.2.0, one Letta server.

    .venv/bin/python benchmarks/bench_engines.py [--reps 5] [--latency 0.2] [--json FILE] [--no-original] [--smoke]

Everything runs on 127.0.0.1: a scripted OpenAI-compatible endpoint answering
every chat call after a fixed latency (default 200 ms) as Letta's sleeptime
model would (``SleeptimeResponder``: one memory edit, then
``memory_finish_edits``, so a run is 2 LLM calls), and a real Letta 0.11.7
server (``.ci/setup-letta.sh``) using that endpoint for chat and embeddings.

For the same 10-message batch (~80 characters a message, one new fact per
repetition so every run edits the ``human`` block) and an existing user, it
measures, p50 over ``--reps`` repetitions (each on an idle subject):

- ``add_messages`` (returns a run id), with ``skip_vector_storage`` True (the
  default) and False (archival passages);
- ``add_messages`` -> ``wait_for_run`` returning (the batch learned);
- ``get_user_memory(prompt_formatted=True)`` (20 calls a repetition).

on three systems:

- ``local``: this package's embedded engine, learner ``llm`` against the same
  scripted endpoint (its own prompt and tools, same latency per call);
- ``letta``: this package's ``letta`` engine on the Letta server;
- ``original``: ai-memory-sdk 0.2.0 (letta-client 0.1.307) in its own venv,
  run as a subprocess of this script. **Benchmark-only shim**: 0.2.0 builds
  ``Letta(token=...)`` and letta-client 0.1.307 reads no base URL, so it always
  targets Letta Cloud; after ``Memory(api_key=...)`` its ``letta_client``
  attribute is replaced by ``Letta(base_url=<this server>, token=...)`` from the
  same package. Nothing else of 0.2.0 is changed. The server is started with a
  default embedding because 0.2.0 sends no embedding config.

It prints the figures side by side with ratios to the original, plus LLM calls
and request bytes per run (the original never clears its agent's history).
The measuring code is one stdlib-only function shared by all three systems.
``--smoke``: one repetition of each, a 10 ms scripted LLM.
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
from collections.abc import Callable
from pathlib import Path
from typing import Any

import _common
from support.letta_server import LettaServer, SleeptimeResponder, original_sdk_venv
from support.openai_server import ScriptedOpenAI

BATCH = 10
GET_CALLS = 20


def batch(rep: int) -> list[dict[str, Any]]:
    """A 10-message exchange, ~80 characters a message, with one new first-person fact (a city) per repetition."""
    city = f"Town{rep:03d}"
    lines = [
        ("user", f"Good morning! I live in {city}. I am planning a short trip for the weekend, any tips?"),
        ("assistant", "Good morning! A weekend trip sounds lovely. Where are you thinking of going?"),
        ("user", "Somewhere near the coast, ideally with good walking trails and a quiet beach."),
        ("assistant", "The northern coast has great trails and small beaches that stay quiet in spring."),
        ("user", "That sounds perfect. How long does it take by train from the central station?"),
        ("assistant", "About two hours by the regional train, with a change at the junction station."),
        ("user", "Great, and are there places to stay that accept dogs? Our dog always comes along."),
        ("assistant", "Yes, several guesthouses accept dogs; booking ahead is wise on spring weekends."),
        ("user", "Thanks, I will book one tonight and pack the walking boots and the rain jackets."),
        ("assistant", "Enjoy the trip! Remember to check the tide times before the longer coast walks."),
    ]
    return [{"role": role, "content": text} for role, text in lines]


def measure(
    add: Callable[[str, list[dict[str, Any]], bool], str],
    wait: Callable[[str], None],
    get: Callable[[str], Any],
    reps: int,
    archive_reps: int,
    mark: Callable[[str], None] = lambda phase: None,
) -> dict[str, list[float]]:
    """Time one system (seconds). Stdlib only: the original SDK's venv runs this same function."""
    clock = time.perf_counter
    uid = f"bench_{uuid.uuid4().hex[:10]}"
    wait(add(uid, batch(0), True))  # creates the user's agent and blocks: not timed
    out: dict[str, list[Any]] = {"add": [], "add_wait": [], "get": [], "add_archive": [], "add_archive_wait": []}

    def add_and_wait(reps_: range, skip_vectors: bool, key: str) -> None:
        for rep in reps_:
            t0 = clock()
            run = add(uid, batch(rep), skip_vectors)
            t1 = clock()
            wait(run)
            t2 = clock()
            out[key].append(t1 - t0)
            out[key + "_wait"].append(t2 - t0)

    mark("learn")
    add_and_wait(range(1, reps + 1), True, "add")
    mark("get")
    for _ in range(reps):
        for _ in range(GET_CALLS):
            t0 = clock()
            value = get(uid)
            out["get"].append(clock() - t0)
        assert value and value.startswith("<human"), value
    mark("archive")
    add_and_wait(range(reps + 1, reps + 1 + archive_reps), False, "add_archive")
    mark("done")
    out["final_memory"] = [get(uid)]
    return out


# ----------------------------------------------------------------------------- the original SDK (child process)
def _original_child(cfg: dict[str, Any]) -> None:
    """Runs inside the ai-memory-sdk 0.2.0 venv: measure its Memory against the local Letta server."""
    import letta_client  # 0.1.307

    import ai_memory_sdk  # 0.2.0 (a top-level module in its own venv)

    memory: Any = ai_memory_sdk.Memory(api_key="bench-key")
    letta: Any = letta_client.Letta  # 0.1.307 takes token=, reads no base URL from the environment
    memory.letta_client = letta(base_url=cfg["base_url"], token="bench-key")  # the benchmark-only shim

    def add(uid: str, messages: list[dict[str, Any]], skip: bool) -> str:
        return str(memory.add_messages(uid, messages, skip_vector_storage=skip))

    def mark(phase: str) -> None:
        print(json.dumps({"phase": phase}), flush=True)
        sys.stdin.readline()  # the parent snapshots the LLM's request log between phases

    out = measure(
        add,
        lambda run: memory.wait_for_run(run, timeout=600),
        lambda uid: memory.get_user_memory(uid, prompt_formatted=True),
        cfg["reps"],
        cfg["archive_reps"],
        mark,
    )
    print(json.dumps({"result": out}), flush=True)


# ----------------------------------------------------------------------------- the parent
def _p50_ms(values: list[float]) -> float:
    return 1000 * _common.percentile(values, 0.5)


class _Phases:
    """LLM requests seen during each phase of one system's measurement."""

    def __init__(self, llm: ScriptedOpenAI) -> None:
        self.llm = llm
        self.start = 0
        self.learn: list[Any] = []

    def __call__(self, phase: str) -> None:
        n = len(self.llm.chat_requests)
        if phase == "learn":
            self.start = n
        elif phase == "get":
            self.learn = self.llm.chat_requests[self.start : n]


def _run_ours(
    engine: str, llm: ScriptedOpenAI, letta: LettaServer, reps: int, archive_reps: int, tmp: str
) -> tuple[dict[str, Any], _Phases]:
    from ai_memory_sdk import Memory

    if engine == "local":
        memory = Memory(
            engine="local",
            path=os.path.join(tmp, "local.db"),
            learner="llm",
            llm_base_url=llm.base_url,
            llm_api_key="sk-bench",
            model="gpt-4.1",
            embedder="none",
        )
    else:
        memory = Memory(
            engine="letta",
            base_url=letta.base_url,
            api_key="bench-key",
            letta_model="openai/gpt-4.1",
            letta_embedding=json.dumps(letta.embedding_config),
        )
    phases = _Phases(llm)
    try:
        out = measure(
            lambda uid, m, skip: memory.add_messages(uid, m, skip_vector_storage=skip),
            lambda run: memory.wait_for_run(run, timeout=600),
            lambda uid: memory.get_user_memory(uid, prompt_formatted=True),
            reps,
            archive_reps,
            phases,
        )
    finally:
        memory.close()
    return out, phases


def _run_original(
    llm: ScriptedOpenAI, letta: LettaServer, reps: int, archive_reps: int
) -> tuple[dict[str, Any], _Phases]:
    python = original_sdk_venv() / "bin" / "python"
    if not python.exists():
        raise SystemExit(f"original SDK venv missing at {python}: run bash .ci/setup-letta.sh (or pass --no-original)")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "LETTA_API_KEY", "LETTA_BASE_URL")}
    env["NO_PROXY"] = "127.0.0.1,localhost"
    cfg = {"base_url": letta.base_url, "reps": reps, "archive_reps": archive_reps}
    proc = subprocess.Popen(
        [str(python), str(Path(__file__).resolve()), "--original-child", json.dumps(cfg)],
        cwd=tempfile.gettempdir(),
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    phases = _Phases(llm)
    result = None
    assert proc.stdin is not None and proc.stdout is not None
    for line in proc.stdout:
        msg = json.loads(line)
        if "phase" in msg:
            phases(msg["phase"])
            proc.stdin.write("\n")
            proc.stdin.flush()
        elif "result" in msg:
            result = msg["result"]
    if proc.wait() != 0 or result is None:
        raise SystemExit(f"the original SDK's benchmark failed (exit {proc.returncode})")
    return result, phases


def _llm_figures(phases: _Phases, reps: int) -> tuple[float, float]:
    calls = len(phases.learn) / reps if reps else float("nan")
    sizes = [len(r.body) for r in phases.learn]
    return calls, (statistics.fmean(sizes) if sizes else float("nan"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=5, help="repetitions of each measurement (p50 over them)")
    parser.add_argument("--archive-reps", type=int, default=3, help="repetitions with skip_vector_storage=False")
    parser.add_argument("--latency", type=float, default=0.2, help="seconds the scripted LLM takes per call")
    parser.add_argument("--json", help="also write the raw figures to this file")
    parser.add_argument("--no-original", action="store_true", help="skip ai-memory-sdk 0.2.0")
    parser.add_argument("--original-child", help=argparse.SUPPRESS)
    _common.add_smoke_flag(parser)
    args = parser.parse_args(argv)
    if args.original_child:  # inside the original SDK's venv
        _original_child(json.loads(args.original_child))
        return 0
    if args.smoke:
        args.reps, args.archive_reps, args.latency = 1, 1, 0.01

    logging.basicConfig(level=logging.WARNING)
    systems = ["local", "letta"] + ([] if args.no_original else ["original"])
    results: dict[str, dict[str, Any]] = {}
    llm_stats: dict[str, tuple[float, float]] = {}
    t_start = time.perf_counter()
    with (
        tempfile.TemporaryDirectory() as tmp,
        ScriptedOpenAI(latency=args.latency) as llm,
        LettaServer(llm.base_url, default_embedding=True) as letta,
    ):
        llm.responder = SleeptimeResponder()
        for name in systems:
            t0 = time.perf_counter()
            if name == "original":
                out, phases = _run_original(llm, letta, args.reps, args.archive_reps)
            else:
                out, phases = _run_ours(name, llm, letta, args.reps, args.archive_reps, tmp)
            results[name] = out
            llm_stats[name] = _llm_figures(phases, args.reps)
            print(
                f"# {name}: measured in {time.perf_counter() - t0:.1f} s; memory now {out['final_memory'][0]!r}",
                file=sys.stderr,
            )
        startup = letta.startup_seconds

    rows = [
        ("add_messages (10 msgs)", "add"),
        ("add -> wait_for_run", "add_wait"),
        ("get_user_memory(prompt_formatted=True)", "get"),
        ("add_messages, skip_vector_storage=False", "add_archive"),
        ("  ... -> wait_for_run", "add_archive_wait"),
    ]
    print(
        f"\nbench_engines: {_common.machine_line()}; Letta 0.11.7 server (start {startup or 0:.0f} s); scripted LLM "
        f"{args.latency * 1000:.0f} ms per call; p50 over {args.reps} reps ({args.archive_reps} with archival, "
        f"{args.reps * GET_CALLS} get calls); total {time.perf_counter() - t_start:.0f} s"
    )
    if "original" in systems:
        print(
            "original = ai-memory-sdk 0.2.0 (letta-client 0.1.307, own venv, subprocess) with a benchmark-only shim: "
            "its letta_client replaced by Letta(base_url=<local server>) (0.1.307 reads no base URL)"
        )
    head = f"{'p50 ms':42s}" + "".join(f"{s:>11s}" for s in systems)
    if "original" in systems:
        head += f"{'letta/orig':>12s}{'local/orig':>12s}"
    print(head)
    for label, key in rows:
        vals = {s: _p50_ms(results[s][key]) for s in systems}
        line = f"{label:42s}" + "".join(f"{vals[s]:11.2f}" for s in systems)
        if "original" in systems:
            line += f"{vals['letta'] / vals['original']:12.3f}{vals['local'] / vals['original']:12.3f}"
        print(line)
    print(f"{'LLM calls per run (learning phase)':42s}" + "".join(f"{llm_stats[s][0]:11.1f}" for s in systems))
    print(f"{'mean LLM request bytes':42s}" + "".join(f"{llm_stats[s][1]:11.0f}" for s in systems))
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {
                    "args": vars(args),
                    "results": results,
                    "llm": {s: {"calls_per_run": c, "mean_request_bytes": b} for s, (c, b) in llm_stats.items()},
                },
                indent=1,
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
