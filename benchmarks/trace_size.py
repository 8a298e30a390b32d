"""What tracing costs in store size: the same batches learned with ``trace=True`` and ``trace=False``.

Usage::

    .venv/bin/python benchmarks/trace_size.py [--batches 200] [--messages 10] [--learner llm|offline] [--json FILE] [--smoke]

Each store (a fresh SQLite file) gets the same ``--batches`` batches of
``--messages`` messages (about 80 characters each, user and assistant turns,
one new fact per batch) for one user, each learned in its own pass (the run
is waited for before the next batch). The ``llm`` learner talks to the
scripted OpenAI-compatible server on 127.0.0.1, which plays a memory agent
making one ``memory_insert`` and ``memory_finish_edits`` per pass, so a pass
records what a real one records; ``offline`` needs no server.

It prints, for each setting: the stored trace rows (one a pass, consolidation
passes included) and their JSON bytes, the file size after a checkpoint, and
the size after ``VACUUM`` (live data only), then what tracing adds per batch.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import tempfile
import time
from pathlib import Path
from typing import Any

import _common
from support.openai_server import ScriptedOpenAI, reply

from ai_memory_sdk import Memory

FACTS = ["tea", "octopuses", "bouldering", "jazz", "Lisbon", "sailing", "chess", "ramen", "rain", "maps"]


def _batch(i: int, size: int) -> list[dict[str, str]]:
    """``size`` messages of ~80 characters, the first one stating fact ``i``."""
    fact = f"{FACTS[i % len(FACTS)]} #{i}"
    out = []
    for j in range(size):
        if j == 0:
            text = f"By the way, fact: likes {fact}. I thought you should know that about me."
        elif j % 2:
            text = f"That is good to know. Tell me more about it whenever you like ({i}.{j})."
        else:
            text = f"Sure, not much more to say today, maybe later in the week ({i}.{j}) then."
        out.append({"role": "assistant" if j % 2 else "user", "content": text})
    return out


def _model(request: dict[str, Any]) -> Any:
    """The memory agent's model: one insert of the newest fact, then finish, in one response."""
    if not request.get("tools"):
        return reply("ok")
    said = json.dumps(request["messages"][1:2])
    facts = [s.split(".")[0] for s in said.split("fact: likes ")[1:]]
    calls: list[tuple[str, dict[str, Any]]] = [
        ("memory_insert", {"label": "human", "new_str": f"Likes {f}", "insert_line": -1}) for f in facts[-1:]
    ]
    return reply(
        tool_calls=[*calls, ("memory_finish_edits", {})], usage={"prompt_tokens": 900, "completion_tokens": 40}
    )


def _measure(path: str) -> dict[str, int]:
    conn = sqlite3.connect(path)
    try:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        rows, total, largest = conn.execute(
            "SELECT count(*), coalesce(sum(length(trace)), 0), coalesce(max(length(trace)), 0) FROM traces"
        ).fetchone()
        steps = sum(len(json.loads(t)["steps"]) for (t,) in conn.execute("SELECT trace FROM traces"))
        file_bytes = os.path.getsize(path)
        conn.execute("VACUUM")
        page_size = conn.execute("PRAGMA page_size").fetchone()[0]
        live = conn.execute("PRAGMA page_count").fetchone()[0] * page_size
    finally:
        conn.close()
    return {
        "trace_rows": rows,
        "trace_bytes": total,
        "largest_trace": largest,
        "steps": steps,
        "file_bytes": file_bytes,
        "vacuumed_bytes": live,
    }


def run(batches: int, messages: int, learner: str, trace: bool, base_url: str | None) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "m.db")
        options: dict[str, Any] = {"learner": learner, "embedder": "none", "trace": trace}
        if base_url:
            options.update(llm_base_url=base_url, llm_api_key="sk-bench")
        mem = Memory(path=path, **options)
        t0 = time.perf_counter()
        runs = []
        for i in range(batches):
            run_id = mem.add_messages("bench-user", _batch(i, messages))
            mem.wait_for_run(run_id)
            runs.append(run_id)
        elapsed = time.perf_counter() - t0
        mem.close()
        return {"trace": trace, "runs": len(runs), "seconds": round(elapsed, 2), **_measure(path)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--batches", type=int, default=200)
    p.add_argument("--messages", type=int, default=10)
    p.add_argument("--learner", choices=["llm", "offline"], default="llm")
    p.add_argument("--json", help="also write the figures to this file")
    _common.add_smoke_flag(p)
    args = p.parse_args(argv)
    if args.smoke:
        args.batches = 5
    print(_common.machine_line())
    with ScriptedOpenAI() as server:
        server.responder = _model
        base_url = server.base_url if args.learner == "llm" else None
        results = [run(args.batches, args.messages, args.learner, t, base_url) for t in (True, False)]
    on, off = results
    added = on["vacuumed_bytes"] - off["vacuumed_bytes"]
    traces = max(on["trace_rows"], 1)
    summary = {
        "batches": args.batches,
        "messages_per_batch": args.messages,
        "learner": args.learner,
        "trace_json_bytes_per_batch": round(on["trace_bytes"] / args.batches),
        "traces": on["trace_rows"],  # a pass each, consolidation passes included
        "average_trace_bytes": round(on["trace_bytes"] / traces),
        "largest_trace_bytes": on["largest_trace"],
        "steps_per_trace": round(on["steps"] / traces, 2),
        "store_bytes_added_per_batch": round(added / args.batches),
        "store_growth_percent": round(100 * added / max(off["vacuumed_bytes"], 1), 1),
        "runs": results,
        "machine": _common.machine(),
    }
    print(f"{args.batches} batches x {args.messages} messages, learner {args.learner}")
    for r in results:
        print(
            f"  trace={r['trace']!s:5}  trace rows {r['trace_rows']:5}  trace JSON {r['trace_bytes']:>10,} B"
            f"  file {r['file_bytes']:>10,} B  after VACUUM {r['vacuumed_bytes']:>10,} B  ({r['seconds']} s)"
        )
    print(
        f"tracing: {summary['trace_json_bytes_per_batch']:,} B of trace JSON per batch learned ({summary['traces']}"
        f" traces: average {summary['average_trace_bytes']:,} B, largest {summary['largest_trace_bytes']:,} B,"
        f" {summary['steps_per_trace']} steps each); the store grows {summary['store_bytes_added_per_batch']:,} B per"
        f" batch ({summary['store_growth_percent']}% over trace=False)"
    )
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
