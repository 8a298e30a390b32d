"""ai-memory-sdk 0.2.0 (Letta's original SDK) behind the JSON-lines driver protocol; runs only in its venv.

The same benchmark-only shim as ``bench_engines.py``: 0.2.0 builds
``Letta(token=...)`` and letta-client 0.1.307 reads no base URL, so after
``Memory(api_key=...)`` its ``letta_client`` is replaced by
``Letta(base_url=<the local server>, token=...)`` from the same package.
Everything else is 0.2.0's own code, except two things it has no call for:
storing messages for search without starting a learning run (``archive``:
the very ``agents.passages.create`` call its ``add_messages`` makes per
message when ``skip_vector_storage=False``), and a search with ``top_k``
(its ``search`` sends none, so the server's default of 5 applies).
"""

from __future__ import annotations

import sys
import time
from concurrent.futures import ThreadPoolExecutor
from importlib import metadata
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # started as a script by the benchmark: its folder's parent holds ``peers``
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from peers import _driver

_state: dict[str, Any] = {}
_POLL = 0.02  # seconds between run-status reads while waiting for a run (0.2.0's wait_for_run sleeps 1 s)


def open_memory(base_url: str) -> dict[str, Any]:
    import letta_client

    import ai_memory_sdk

    memory: Any = ai_memory_sdk.Memory(api_key="bench-key")
    letta: Any = letta_client.Letta  # 0.1.307 takes token=, reads no base URL from the environment
    memory.letta_client = letta(base_url=base_url, token="bench-key")  # the benchmark-only shim
    _state["memory"] = memory
    return {"versions": {p: metadata.version(p) for p in ("ai-memory-sdk", "letta-client")}}


def add(user_id: str, messages: list[dict[str, Any]], archive: bool) -> str:
    """0.2.0's ``add_messages``: returns its run id once the server accepted the batch."""
    return str(_state["memory"].add_messages(user_id, messages, skip_vector_storage=not archive))


def learned(run_id: str, timeout: float) -> str:
    """Poll the run's status (0.2.0's ``_get_run_status``) until it completes; its final status."""
    memory = _state["memory"]
    deadline = time.monotonic() + timeout
    while True:
        status = str(memory._get_run_status(run_id))
        if status == "completed":
            return status
        if status in ("failed", "cancelled"):
            raise RuntimeError(f"run {run_id} ended {status}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"run {run_id} not completed after {timeout} s (status {status})")
        time.sleep(_POLL)


def archive(user_id: str, messages: list[dict[str, Any]], concurrency: int) -> int:
    """Store messages as archival passages with the call 0.2.0's ``add_messages(skip_vector_storage=False)``
    makes per message; ``concurrency`` > 1 sends that many at once (0.2.0 sends them one by one)."""
    memory = _state["memory"]
    agent = memory._get_matching_agent(tags=[user_id])
    agent_id = agent.id if agent else memory.initialize_user_memory(user_id)

    def create(message: dict[str, Any]) -> None:
        memory.letta_client.agents.passages.create(
            agent_id=agent_id, text=message["content"], tags=[message["role"], memory._default_tag]
        )

    with ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
        list(pool.map(create, messages))
    return len(messages)


def search(user_id: str, query: str, top_k: int | None) -> list[str]:
    """0.2.0's ``search(user_id, query, tags=[])`` (every role); with ``top_k``, the same server call asking for k."""
    memory = _state["memory"]
    if top_k is None:
        return list(memory.search(user_id, query, tags=[]) or [])
    agent = memory._get_matching_agent(tags=[user_id])
    response = memory.letta_client.agents.passages.search(agent_id=agent.id, query=query, tags=[], top_k=top_k)
    return [r.content for r in response.results]


def user_memory(user_id: str) -> str | None:
    return _state["memory"].get_user_memory(user_id)  # type: ignore[no-any-return]


def delete_user(user_id: str) -> None:
    """0.2.0's ``delete_user``: deletes the user's agent (its messages and blocks go with it)."""
    _state["memory"].delete_user(user_id)


if __name__ == "__main__":
    _driver.serve(
        {
            "open": open_memory,
            "add": add,
            "learned": learned,
            "archive": archive,
            "search": search,
            "user_memory": user_memory,
            "delete_user": delete_user,
        }
    )
