"""Child process of the hot-path tests: rewrite one block in lockstep with a reader in another process.

One JSON argument: ``{"path", "user", "rounds"}``. For each round it waits for a
line on stdin, sets the user's ``human`` block to ``value <round>`` and prints
``WROTE <round>`` once the write has returned (committed). Prints ``DONE`` at the end.
"""

from __future__ import annotations

import json
import sys

from ai_memory_sdk import Memory


def main() -> None:
    cfg = json.loads(sys.argv[1])
    memory = Memory(path=cfg["path"], learner="offline", embedder="none", background=False)
    try:
        for n in range(cfg["rounds"]):
            if not sys.stdin.readline():
                return
            memory.set_memory("human", f"value {n}", subject_id=cfg["user"])
            print(f"WROTE {n}", flush=True)
        print("DONE", flush=True)
    finally:
        memory.close()


if __name__ == "__main__":
    main()
