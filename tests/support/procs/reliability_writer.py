"""Child process of the concurrency test: one of several writers into one store.

One JSON argument: ``{"path", "writer", "batches", "subjects", "msgs", "options"}``, and optionally
``"pace"``: seconds between two batches (batches keep arriving while workers come and go).
Sends ``batches`` batches (batch numbers ``writer * batches + n``) to the
shared subjects round-robin, with ``background=True`` so this process also
learns (every writer competes for the same queue), then waits for each of its
runs. Every exception is caught and counted: none may escape. Prints
``ENQ <batch_no> <run_id>`` per stored batch and ``DONE <json>`` at the end.
"""

from __future__ import annotations

import json
import sys
import time
from collections import Counter
from typing import Any

from ai_memory_sdk import Memory


def batch_messages(batch_no: int, subject_no: int, n: int) -> list[dict[str, Any]]:
    """Messages tagged with their batch (``B<no>-M<j>``) and subject (``[S<k>]``) markers."""
    msgs = [{"role": "user", "content": f"batch B{batch_no}-M0 says hello [S{subject_no}] topic{batch_no % 7}"}]
    for j in range(1, n):
        role = "assistant" if j % 2 else "user"
        msgs.append({"role": role, "content": f"B{batch_no}-M{j} [S{subject_no}] more about topic{batch_no % 7}"})
    return msgs


def main() -> None:
    cfg = json.loads(sys.argv[1])
    errors: Counter = Counter()
    options: dict[str, Any] = dict(
        path=cfg["path"], learner="offline", embedder="none", history_limit=0, poll_interval=0.05
    )
    options.update(cfg.get("options", {}))
    mem = Memory(**options)
    subjects: list[str] = cfg["subjects"]
    runs: list[str] = []
    t0 = time.monotonic()
    for n in range(cfg["batches"]):
        batch_no = cfg["writer"] * cfg["batches"] + n
        k = batch_no % len(subjects)
        try:
            run_id = mem.add_messages(subjects[k], batch_messages(batch_no, k, cfg["msgs"]), skip_vector_storage=False)
        except Exception as exc:  # counted, never expected
            errors[f"add_messages {type(exc).__name__}: {exc}"] += 1
            continue
        runs.append(run_id)
        print(f"ENQ {batch_no} {run_id}", flush=True)
        time.sleep(cfg.get("pace", 0))
    enqueue_s = time.monotonic() - t0
    failed = 0
    for run_id in runs:
        try:
            mem.wait_for_run(run_id, timeout=cfg.get("wait_timeout", 600))
        except Exception as exc:
            failed += 1
            errors[f"wait_for_run {type(exc).__name__}: {exc}"[:300]] += 1
    total_s = time.monotonic() - t0
    try:
        mem.close()
    except Exception as exc:
        errors[f"close {type(exc).__name__}: {exc}"] += 1
    print(
        "DONE "
        + json.dumps(
            {
                "enqueue_seconds": round(enqueue_s, 3),
                "total_seconds": round(total_s, 3),
                "batches": len(runs),
                "failed": failed,
                "errors": dict(errors),
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    main()
