"""Child process of the resource-bound tests: one scenario in a fresh process, measured.

One JSON argument ``{"scenario", "path", ...}``; prints ``RESULT <json>``
with wall times of each phase, the process's peak RSS (``VmHWM``) and
its RSS before the scenario, so a scenario's memory is not mixed with the
test runner's. Scenarios: ``big_batch`` (one batch of ``mb`` megabytes in
``n`` messages), ``many_messages`` (one batch of ``n`` short messages),
``block_at_limit`` (a 1,000,000-character block: set, format, learn, refuse
one more character), ``many_subjects`` (``n`` subjects, one batch each).
"""

from __future__ import annotations

import json
import resource
import sys
import time
from collections.abc import Callable
from typing import Any

from ai_memory_sdk import Memory


def _status_mb(field: str) -> float:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:  # not Linux
        pass
    return 0.0


def _rss_mb() -> float:
    return _status_mb("VmRSS")


def _peak_mb() -> float:
    """Peak RSS of this program: VmHWM (``ru_maxrss`` survives exec on Linux, so it reports the parent's)."""
    return _status_mb("VmHWM") or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _timed(out: dict[str, Any], name: str, fn: Callable[[], Any]) -> Any:
    t = time.perf_counter()
    result = fn()
    out[f"{name}_s"] = round(time.perf_counter() - t, 3)
    return result


def big_batch(mem: Memory, cfg: dict[str, Any], out: dict[str, Any]) -> None:
    n, size = cfg["n"], int(cfg["mb"] * 1_000_000)
    each = size // n
    batch = [
        {
            "role": "user" if i % 2 == 0 else "assistant",
            "content": (f"m{i} I like tea. " + "lorem ipsum dolor sit amet " * (each // 27 + 1))[:each],
        }
        for i in range(n)
    ]
    run = _timed(
        out, "add_messages", lambda: mem.add_messages("big", batch, skip_vector_storage=not cfg.get("archive", True))
    )
    out["peak_after_add_mb"] = round(_peak_mb(), 1)
    del batch[:]  # what the caller still holds is not the engine's memory
    _timed(out, "learn", lambda: mem.wait_for_run(run, timeout=600))
    out["peak_after_learn_mb"] = round(_peak_mb(), 1)
    got = _timed(out, "get_messages", lambda: mem.get_messages("big"))
    out["stored_chars"] = sum(len(m.content) for m in got)
    out["stored_messages"] = len(got)
    run_info = mem.get_run(run)
    out["run"] = {"status": run_info.status, "error": run_info.error}
    out["search_results"] = len(_timed(out, "search", lambda: mem.search("big", "lorem tea", tags=[])))


def many_messages(mem: Memory, cfg: dict[str, Any], out: dict[str, Any]) -> None:
    cfg = {**cfg, "mb": cfg["n"] * 50 / 1_000_000}
    big_batch(mem, cfg, out)


def block_at_limit(mem: Memory, cfg: dict[str, Any], out: dict[str, Any]) -> None:
    limit = 1_000_000
    mem.initialize_user_memory("full", user_context_block_char_limit=limit)
    value = "".join(f"Fact {i:05d}: " + "x" * 75 + "\n" for i in range(limit // 88))  # distinct Key: value lines
    value = value + "y" * (limit - len(value))
    _timed(out, "set_memory", lambda: mem.set_memory("human", value, subject_id="full"))
    out["formatted_chars"] = len(_timed(out, "format", lambda: mem.get_user_memory("full", prompt_formatted=True)))
    try:
        mem.set_memory("human", value + "z", subject_id="full")
        out["over_limit"] = "accepted"
    except ValueError as exc:
        out["over_limit"] = f"ValueError: {exc}"[:160]
    run = mem.add_messages("full", [{"role": "user", "content": "My name is Zed and I love hiking."}])
    try:
        _timed(out, "learn", lambda: mem.wait_for_run(run, timeout=600))
        out["learn_outcome"] = "completed"
    except Exception as exc:
        out["learn_outcome"] = f"{type(exc).__name__}: {exc}"[:200]
    after = mem.get_user_memory("full") or ""
    out["value_unchanged"] = after == value
    out["value_len_after_learn"] = len(after)
    for i in range(cfg.get("edits", 20)):  # history: each version is a full copy of the value
        mem.set_memory("human", value[: limit - 1 - i], subject_id="full")
    out["history_versions"] = len(_timed(out, "history", lambda: mem.block_history("human", subject_id="full")))


def many_subjects(mem: Memory, cfg: dict[str, Any], out: dict[str, Any]) -> None:
    n = cfg["n"]
    runs = _timed(
        out,
        "add_messages",
        lambda: [
            mem.add_messages(
                f"user-{i}",
                [{"role": "user", "content": f"My name is User{i} and I live in City{i}."}],
                skip_vector_storage=False,
            )
            for i in range(n)
        ],
    )

    def wait_all() -> None:
        for r in runs:
            mem.wait_for_run(r, timeout=600)

    _timed(out, "learn", wait_all)
    t = time.perf_counter()
    ok = sum(1 for i in range(n) if f"City{i}" in (mem.get_user_memory(f"user-{i}") or ""))
    out["get_user_memory_ms_each"] = round(1000 * (time.perf_counter() - t) / n, 3)
    out["subjects_learned"] = ok
    t = time.perf_counter()
    hits = sum(1 for i in range(0, n, max(1, n // 100)) if mem.search(f"user-{i}", f"City{i}"))
    out["search_ms_each"] = round(1000 * (time.perf_counter() - t) / len(range(0, n, max(1, n // 100))), 3)
    out["search_hits"] = hits


def main() -> None:
    cfg = json.loads(sys.argv[1])
    mem = Memory(path=cfg["path"], learner="offline", embedder="none", **cfg.get("options", {}))
    out: dict[str, Any] = {"scenario": cfg["scenario"], "rss_before_mb": round(_rss_mb(), 1)}
    t = time.perf_counter()
    {
        "big_batch": big_batch,
        "many_messages": many_messages,
        "block_at_limit": block_at_limit,
        "many_subjects": many_subjects,
    }[cfg["scenario"]](mem, cfg, out)
    out["total_s"] = round(time.perf_counter() - t, 3)
    mem.close()
    out["peak_rss_mb"] = round(_peak_mb(), 1)
    import os

    out["db_mb"] = round(os.path.getsize(cfg["path"]) / 1e6, 1)
    print("RESULT " + json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
