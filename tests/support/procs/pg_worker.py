"""Child process of the PostgreSQL scale-out tests: a worker as ``ai-memory worker`` runs one, on its own "machine".

One JSON argument: ``{"url", "base_url", "concurrency", "lease_seconds", "host"}``, optionally
``"go_file"``: the pool starts only once that file exists (``benchmarks/scale_out.py`` starts every
worker first, so start-up time is not measured).
``host`` replaces this machine's name in the lease owners it writes, so the
other processes take its runs over only when its lease expires, as they would
for a worker on another machine (a process of the same host that died is
recognised at once instead). Prints ``READY`` once its pool runs; SIGTERM
stops it (a pass in progress finishes or is handed back).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
import threading
import time

cfg = json.loads(sys.argv[1])
if cfg.get("host"):
    socket.gethostname = lambda: cfg["host"]  # type: ignore[assignment]

from ai_memory_sdk import Memory  # noqa: E402  (after the host name is set: owners are built from it)


def main() -> None:
    mem = Memory(
        path=cfg["url"],
        learner="llm",
        embedder="none",
        llm_base_url=cfg["base_url"],
        llm_api_key="sk-test",
        background=False,
        workers=cfg.get("concurrency", 2),
        lease_seconds=cfg.get("lease_seconds", 30.0),
        poll_interval=cfg.get("poll_interval", 0.5),
        history_limit=0,
        close_timeout=cfg.get("close_timeout", 5.0),
    )
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    engine = mem._engine  # what `ai-memory worker` runs: LocalEngine.work
    go = cfg.get("go_file")
    if go:
        print("READY", flush=True)
        while not os.path.exists(go) and not stop.is_set():
            time.sleep(0.002)
    else:
        threading.Timer(0.2, lambda: print("READY", flush=True)).start()
    engine.work(stop=stop)  # type: ignore[attr-defined]
    mem.close()
    print("STOPPED", flush=True)


if __name__ == "__main__":
    main()
