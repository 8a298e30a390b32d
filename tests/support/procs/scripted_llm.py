"""Child process of benchmarks/bench_local.py: the scripted OpenAI-compatible server in a process of its own.

An LLM endpoint is another process (or host) than the application: in the
application's process the scripted server's own request parsing would take
the interpreter lock from the workers being measured. One JSON argument:
``{"delay": seconds}``. Prints ``URL <base url>`` and serves until its stdin
closes. Every chat request is answered with one rewrite of the ``human``
block and finish, after ``delay``; the times (``time.time()``) each was
received and its answer left are kept, and printed on request, so no line
wakes the parent while it is measured: stdin ``DUMP <n>`` prints
``TIMES <n> {"received": [...], "answered": [...]}``.
"""

from __future__ import annotations

import json
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # tests/: the helpers are ``support.*``
from support.openai_server import ScriptedOpenAI, Step, reply


def main() -> None:
    cfg = json.loads(sys.argv[1])
    delay = float(cfg.get("delay", 0.0))
    times: dict[str, list[float]] = {"received": [], "answered": []}
    lock = threading.Lock()

    def answer(request: dict[str, Any]) -> Step:
        received = time.time()
        if delay:
            time.sleep(delay)
        step = reply(
            tool_calls=[
                ("memory_rethink", {"label": "human", "new_memory": f"Name: Alice\nSeen: {uuid.uuid4().hex[:8]}"}),
                ("memory_finish_edits", {}),
            ]
        )
        with lock:
            times["received"].append(received)
            times["answered"].append(time.time())
        return step

    with ScriptedOpenAI() as server:
        server.responder = answer
        print(f"URL {server.base_url}", flush=True)
        for line in sys.stdin:  # until the parent closes it
            if line.startswith("DUMP "):
                with lock:
                    print(f"TIMES {line.split()[1]} {json.dumps(times)}", flush=True)


if __name__ == "__main__":
    main()
