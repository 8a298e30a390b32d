"""Reliability soak of the embedded engine (issue 6): the test suite's campaigns, longer, with figures.

    .venv/bin/python benchmarks/soak.py                  # everything (about 6-9 minutes on 2 cores)
    .venv/bin/python benchmarks/soak.py --only crash,concurrency --crash-rounds 40 --batches 1000
    .venv/bin/python benchmarks/soak.py --quick          # small figures, a couple of minutes
    .venv/bin/python benchmarks/soak.py --smoke          # tiny figures, seconds: checks that it runs

Sections (each prints one line of figures, then a verdict):
  crash        SIGKILL a learning child process at random moments, many rounds; offline learner with a
               slowed embedder, and the LLM learner against a slow scripted endpoint
  concurrency  4 writer processes x N batches into one store, with reader processes searching and formatting
  faults       the LLM endpoint fails 30 % of calls (429, 5xx, drops, stalls, invalid JSON, bad tool calls)
  erasure      delete_user on a large store: secure_delete + FTS5 optimize + WAL truncate vs VACUUM, timed,
               each variant's file scanned for residue; and what secure_delete costs ordinary writes
  bounds       a 10 MB batch, a 100k-message batch, a block at its limit, 1,000 subjects: time, peak RSS

Everything runs on 127.0.0.1 against the scripted OpenAI-compatible server; nothing is downloaded.
Exit status 1 when any section found a problem.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable

import _common
from reliability import _harness  # shared with tests/reliability/
from support.child import Child
from support.openai_server import ScriptedOpenAI, stall

# --smoke: every section, each a few seconds (the bounds scenarios scaled down alike)
SMOKE = {
    "crash_rounds": 1,
    "crash_runs": 8,
    "crash_subjects": 4,
    "batches": 10,
    "fault_runs": 20,
    "fault_subjects": 4,
    "erasure_subjects": 20,
    "erasure_writes": 20,
    "subjects": 20,
    "scale": 0.01,
}


def _verdict(name: str, problems: list[str]) -> bool:
    if problems:
        print(f"  {name}: {len(problems)} PROBLEM(S)")
        for p in problems[:20]:
            print(f"    - {p}")
        return False
    print(f"  {name}: OK")
    return True


def crash(args: argparse.Namespace, work: str) -> bool:
    ok = True
    with ScriptedOpenAI(embedding_dim=32) as server:
        server.script_embeddings(*[stall(0.15)] * 1_000_000)
        r = _harness.crash_campaign(
            os.path.join(work, "crash-offline.db"),
            server.base_url,
            subjects=args.crash_subjects,
            first_batches=args.crash_runs,
            kill_rounds=args.crash_rounds,
            extra_per_round=4,
            max_delay=0.8,
            seed=11,
            progress=_progress(args),
        )
    print(f"crash (offline learner, embedder stalled 0.15 s per call): {r.figures()}")
    ok &= _verdict("crash/offline", r.problems + ([] if r.completed == r.runs else ["not every run completed"]))
    with ScriptedOpenAI(latency=0.15, embedding_dim=32) as server:
        server.responder = _harness.batch_learner_responder
        r = _harness.crash_campaign(
            os.path.join(work, "crash-llm.db"),
            server.base_url,
            learner="llm",
            subjects=args.crash_subjects,
            first_batches=args.crash_runs,
            kill_rounds=args.crash_rounds,
            extra_per_round=4,
            max_delay=0.8,
            seed=12,
            progress=_progress(args),
        )
    print(f"crash (LLM learner, 0.15 s per LLM call): {r.figures()}")
    return ok & _verdict("crash/llm", r.problems + ([] if r.completed == r.runs else ["not every run completed"]))


def concurrency(args: argparse.Namespace, work: str) -> bool:
    r = _harness.concurrency_campaign(
        os.path.join(work, "concurrency.db"), writers=4, batches=args.batches, subjects=8, readers=2, timeout=1800
    )
    print(f"concurrency: {r.figures()}")
    return _verdict(
        "concurrency", r.problems + ([f"{r.locked_errors} 'database is locked'"] if r.locked_errors else [])
    )


def faults(args: argparse.Namespace, work: str) -> bool:
    with ScriptedOpenAI(latency=0.05) as server:
        r = _harness.fault_campaign(
            os.path.join(work, "faults.db"),
            server,
            subjects=args.fault_subjects,
            per_subject=max(1, args.fault_runs // args.fault_subjects),
            rate=0.3,
            deadline_s=1200,
        )
    print(f"LLM faults at 30 %: {r.figures()}")
    return _verdict("faults", r.problems)


def erasure(args: argparse.Namespace, work: str) -> bool:
    r = _harness.erasure_costs(work, subjects=args.erasure_subjects, per_subject=50, writes=args.erasure_writes)
    print(f"erasure on a store of {r['subjects']} subjects, {r['messages']} archived messages, {r['db_mb']} MB:")
    problems = []
    for k, v in r.items():
        if isinstance(v, dict):
            steps = ", ".join(f"{s} {ms:.0f}" for s, ms in v.items() if s not in ("unit", "residue", "db_mb_after"))
            print(f"  {k}: {steps} ms; residue {v['residue'] or 'none'}; file {v['db_mb_after']} MB after")
        elif k.startswith(f"{args.erasure_writes} batches"):
            print(f"  {k}: {v}")
    for name in ("secure_delete+optimize+checkpoint", "vacuum+optimize+checkpoint"):
        if r[name]["residue"]:
            problems.append(f"{name} left {r[name]['residue']}")
    return _verdict("erasure", problems)


def bounds(args: argparse.Namespace, work: str) -> bool:
    problems = []
    mb = max(1, round(10 * args.scale))
    scenarios = [
        {"scenario": "big_batch", "n": 10, "mb": mb},
        {"scenario": "big_batch", "n": 1, "mb": mb},
        {"scenario": "many_messages", "n": max(100, round(100_000 * args.scale))},
        {"scenario": "block_at_limit", "edits": max(2, round(100 * args.scale))},
        {"scenario": "many_subjects", "n": args.subjects},
    ]
    for i, sc in enumerate(scenarios):
        child = Child("reliability_bounds.py", {"path": os.path.join(work, f"bounds-{i}.db"), **sc})
        line = child.wait_line("RESULT ", 1800)
        child.kill()
        if line is None:
            problems.append(f"{sc}: no result: {child.stderr_tail(800)}")
            continue
        r = json.loads(line[len("RESULT ") :])
        r["peak_over_baseline_mb"] = round(r["peak_rss_mb"] - r["rss_before_mb"], 1)
        print(f"bounds {json.dumps(sc)}: {json.dumps(r)}")
        if r.get("run", {}).get("status", "completed") != "completed":
            problems.append(f"{sc}: run {r['run']}")
        if sc["scenario"] == "block_at_limit" and not r["over_limit"].startswith("ValueError"):
            problems.append("a value over the limit was accepted")
    return _verdict("bounds", problems)


def _progress(args: argparse.Namespace) -> Callable[[str], None]:
    return (lambda s: print(f"    {s}", flush=True)) if args.verbose else (lambda s: None)


SECTIONS: dict[str, Callable[[argparse.Namespace, str], bool]] = {
    "crash": crash,
    "concurrency": concurrency,
    "faults": faults,
    "erasure": erasure,
    "bounds": bounds,
}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", default=",".join(SECTIONS), help="comma-separated sections: " + ", ".join(SECTIONS))
    ap.add_argument("--crash-rounds", type=int, default=40, help="SIGKILLed children per crash campaign")
    ap.add_argument("--crash-runs", type=int, default=200, help="runs queued before the first kill")
    ap.add_argument("--crash-subjects", type=int, default=40, help="subjects of the crash campaigns")
    ap.add_argument("--batches", type=int, default=1000, help="batches per writer process (4 writers)")
    ap.add_argument("--fault-runs", type=int, default=800, help="runs sent to the faulty endpoint")
    ap.add_argument("--fault-subjects", type=int, default=40, help="subjects the faulty runs are spread over")
    ap.add_argument("--erasure-subjects", type=int, default=2000, help="subjects (50 messages each) in the store")
    ap.add_argument("--erasure-writes", type=int, default=2000, help="batches timed with secure_delete on and off")
    ap.add_argument("--subjects", type=int, default=1000, help="subjects in the bounds scenario")
    ap.add_argument("--scale", type=float, default=1.0, help="bounds: batch sizes times this (1 = 10 MB, 100k)")
    ap.add_argument("--quick", action="store_true", help="small figures (a couple of minutes)")
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    ap.add_argument("-v", "--verbose", action="store_true")
    _common.add_smoke_flag(ap)
    args = ap.parse_args(argv)
    if args.quick:
        args.crash_rounds, args.batches, args.fault_runs, args.erasure_subjects = 6, 100, 160, 200
    if args.smoke:
        for key, value in SMOKE.items():
            setattr(args, key, value)
    work = tempfile.mkdtemp(prefix="ai-memory-soak-")
    logging.basicConfig(level=logging.ERROR)  # failed runs are expected here (faults): their warnings are noise

    print(f"soak: {_common.machine_line()}, work dir {work}")
    ok = True
    for name in args.only.split(","):
        t = time.monotonic()
        ok &= SECTIONS[name.strip()](args, work)
        print(f"  ({name} took {time.monotonic() - t:.0f} s)", flush=True)
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    print("soak:", "all OK" if ok else "PROBLEMS FOUND")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
