"""Child process of the crash test: open a store, enqueue some batches, learn until killed.

Run by ``tests/reliability/test_crash.py`` and ``benchmarks/soak.py``, which
SIGKILL it at random moments. One JSON argument::

    {"path": db file, "base_url": scripted server, "learner": "offline" | "llm",
     "batches": [[batch_no, subject_id], ...], "final": bool, "msgs": messages per batch}

It prints (flushed, one per line) ``READY`` once the store is open,
``ENQ <batch_no> <run_id>`` after each ``add_messages`` returned (the batch
is then durable), ``ENQUEUED`` after the last one. A ``final`` child waits
until no run is queued or running, requeues runs failed by the crash limit
(``stop_reason='crashed'``) with ``retry_run`` (unless ``"retry_crashed": false``),
and prints ``DONE <json>``.
"""

from __future__ import annotations

import json
import sqlite3
import sys
import time
from typing import Any

from ai_memory_sdk import Memory


def batch_messages(batch_no: int, n: int) -> list[dict[str, Any]]:
    """Messages of one batch; every text carries a unique ``B<no>-M<j>`` marker."""
    msgs = [{"role": "user", "content": f"batch B{batch_no}-M0 says hello"}]
    for j in range(1, n):
        role = "assistant" if j % 2 else "user"
        msgs.append({"role": role, "content": f"B{batch_no}-M{j} line {j} of batch {batch_no}, nothing to learn"})
    return msgs


def _pending(path: str) -> tuple[int, list[str]]:
    conn = sqlite3.connect(path, timeout=60)
    try:
        busy = conn.execute("SELECT count(*) FROM runs WHERE status IN ('queued','running')").fetchone()[0]
        crashed = [r[0] for r in conn.execute("SELECT id FROM runs WHERE status='failed' AND stop_reason='crashed'")]
    finally:
        conn.close()
    return busy, crashed


def main() -> None:
    cfg = json.loads(sys.argv[1])
    options: dict[str, Any] = dict(
        path=cfg["path"],
        learner=cfg.get("learner", "offline"),
        history_limit=0,
        lease_seconds=cfg.get("lease_seconds", 10.0),
        poll_interval=0.05,
        llm_base_url=cfg["base_url"],
        llm_api_key="sk-test",
        embedder=cfg.get("embedder", "openai:text-embedding-3-small"),
    )
    options.update(cfg.get("options", {}))
    mem = Memory(**options)
    print("READY", flush=True)
    for batch_no, subject in cfg.get("batches", []):
        run_id = mem.add_messages(subject, batch_messages(batch_no, cfg.get("msgs", 3)), skip_vector_storage=False)
        print(f"ENQ {batch_no} {run_id}", flush=True)
    print("ENQUEUED", flush=True)
    if not cfg.get("final"):
        while True:
            time.sleep(3600)
    start = time.monotonic()
    retried = 0
    while True:
        busy, crashed = _pending(cfg["path"])
        if not cfg.get("retry_crashed", True):
            crashed = []
        if not busy and not crashed:
            break
        for run_id in crashed:
            mem.retry_run(run_id)
            retried += 1
        time.sleep(0.05)
    elapsed = time.monotonic() - start
    mem.close()
    print("DONE " + json.dumps({"drain_seconds": round(elapsed, 2), "retried_crashed": retried}), flush=True)


if __name__ == "__main__":
    main()
