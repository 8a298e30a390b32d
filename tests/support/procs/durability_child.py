"""Child process of ``tests/test_durability.py``: uses only the public ``Memory`` API.

One JSON argument::

    {"mode": "crash" | "write", "path": db file, "options": {Memory options},
     "subjects": [...], "batches": N, "msgs": messages per batch, "tag": text, "gap": seconds,
     "summary_limit": chars, "wait": bool}

``crash``: create each subject's memory (a summary block large enough to keep
every note), then enqueue ``batches`` batches round-robin over the subjects
with background workers on; prints ``READY``, ``ENQ <n> <run_id>`` after each
durable ``add_messages``, ``ENQUEUED``, then learns until it is killed.

``write``: prints ``READY``, waits for a line on stdin (so writers start
together), enqueues ``batches`` batches, optionally waits for its runs
(``wait``), and prints ``DONE <json>``; any exception is printed and exits 1.
"""

from __future__ import annotations

import json
import sys
import time
import traceback
from typing import Any

from ai_memory_sdk import Memory


def batch(tag: str, n: int, msgs: int) -> list[dict[str, Any]]:
    """One batch; every content is unique (``<tag>-B<n>-M<j>``) so tests can count rows."""
    out = []
    for j in range(msgs):
        role = "user" if j % 2 == 0 else "assistant"
        out.append({"role": role, "content": f"{tag}-B{n}-M{j} talk about item {n} of {tag}"})
    return out


def _crash(cfg: dict[str, Any]) -> None:
    memory = Memory(path=cfg["path"], **cfg.get("options", {}))
    for subject in cfg["subjects"]:
        memory.initialize_user_memory(subject, summary_block_char_limit=cfg.get("summary_limit", 1_000_000))
    print("READY", flush=True)
    subjects = cfg["subjects"]
    for n in range(cfg["batches"]):
        run_id = memory.add_messages(
            subjects[n % len(subjects)], batch(cfg.get("tag", "c"), n, cfg["msgs"]), skip_vector_storage=False
        )
        print(f"ENQ {n} {run_id}", flush=True)
        time.sleep(cfg.get("gap", 0.0))
    print("ENQUEUED", flush=True)
    while True:
        time.sleep(3600)


def _write(cfg: dict[str, Any]) -> None:
    memory = Memory(path=cfg["path"], **cfg.get("options", {}))
    print("READY", flush=True)
    sys.stdin.readline()
    subjects = cfg["subjects"]
    start = time.perf_counter()
    runs = []
    for n in range(cfg["batches"]):
        runs.append(
            memory.add_messages(
                subjects[n % len(subjects)],
                batch(cfg["tag"], n, cfg["msgs"]),
                skip_vector_storage=not cfg.get("archive", False),
            )
        )
    enqueued = time.perf_counter() - start
    if cfg.get("wait"):
        for run_id in runs:
            memory.wait_for_run(run_id, timeout=120)
    memory.close()
    print(
        "DONE "
        + json.dumps(
            {
                "runs": len(runs),
                "enqueue_seconds": round(enqueued, 3),
                "total_seconds": round(time.perf_counter() - start, 3),
            }
        ),
        flush=True,
    )


def main() -> None:
    cfg = json.loads(sys.argv[1])
    try:
        {"crash": _crash, "write": _write}[cfg["mode"]](cfg)
    except Exception:
        traceback.print_exc()
        print("ERROR", flush=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
