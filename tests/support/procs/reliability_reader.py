"""Child process of the concurrency and isolation tests: read while others write.

One JSON argument: ``{"path", "subjects", "seconds", "stop_file", "options"}``.
Until ``stop_file`` exists (or ``seconds`` have passed) it picks a subject at random and searches its
passages, formats its context and blocks, lists its runs and messages. Every
result must carry only that subject's ``[S<k>]`` marker (isolation); every
exception is counted. Prints ``DONE <json>`` with operation counts, latency
percentiles, errors and leaks.
"""

from __future__ import annotations

import json
import os
import random
import re
import sys
import time
from collections import Counter
from typing import Any

from ai_memory_sdk import Memory

_SUBJECT = re.compile(r"\[S(\d+)\]")


def _leaks(texts: list[str], k: int) -> list[str]:
    return [t[:120] for t in texts if any(int(s) != k for s in _SUBJECT.findall(t))]


def main() -> None:
    cfg = json.loads(sys.argv[1])
    options: dict[str, Any] = dict(path=cfg["path"], learner="offline", embedder="none", background=False)
    options.update(cfg.get("options", {}))
    mem = Memory(**options)
    subjects: list[str] = cfg["subjects"]
    rng = random.Random(cfg.get("seed", 0))
    errors: Counter = Counter()
    leaks: list[str] = []
    lat: dict[str, list[float]] = {"search": [], "context": [], "block": [], "runs": []}
    deadline = time.monotonic() + cfg["seconds"]
    stop_file = cfg.get("stop_file") or ""
    while time.monotonic() < deadline and not (stop_file and os.path.exists(stop_file)):
        k = rng.randrange(len(subjects))
        sid = subjects[k]
        try:
            t = time.perf_counter()
            found = mem.search(sid, f"topic{rng.randrange(7)} hello", tags=[], limit=20)
            lat["search"].append(time.perf_counter() - t)
            leaks += _leaks(found, k)
            t = time.perf_counter()
            ctx = mem.get_context(sid)
            lat["context"].append(time.perf_counter() - t)
            t = time.perf_counter()
            human = mem.get_user_memory(sid, prompt_formatted=True) or ""
            summary = mem.get_summary(sid, prompt_formatted=True) or ""
            lat["block"].append(time.perf_counter() - t)
            leaks += _leaks([ctx, human, summary], k)
            t = time.perf_counter()
            mem.list_runs(sid)
            msgs = mem.get_messages(sid, limit=20)
            lat["runs"].append(time.perf_counter() - t)
            leaks += _leaks([m.content for m in msgs], k)
        except Exception as exc:
            errors[f"{type(exc).__name__}: {exc}"[:300]] += 1
    mem.close()

    def pct(xs: list[float], q: float) -> float:
        xs = sorted(xs)
        return round(1000 * xs[min(len(xs) - 1, int(q * len(xs)))], 2) if xs else 0.0

    print(
        "DONE "
        + json.dumps(
            {
                "ops": {k: len(v) for k, v in lat.items()},
                "p50_ms": {k: pct(v, 0.5) for k, v in lat.items()},
                "p99_ms": {k: pct(v, 0.99) for k, v in lat.items()},
                "errors": dict(errors),
                "leaks": leaks[:20],
                "leak_count": len(leaks),
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    main()
