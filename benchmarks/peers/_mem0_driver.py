"""mem0 (``mem0ai`` 2.2.x) behind the JSON-lines driver protocol; runs only inside the mem0 venv.

The configuration is mem0's local (open-source) one: ``Memory.from_config``
with its default vector store, Qdrant in embedded local mode on a path, its
SQLite history database, the ``huggingface`` embedder (sentence-transformers)
given the packaged MiniLM-L6 directory, and the ``openai`` LLM provider pointed
at the benchmark's scripted endpoint. Telemetry is off (``MEM0_TELEMETRY``:
nothing may leave the machine) and ``MEM0_DIR`` is the run's own folder.
"""

from __future__ import annotations

import os
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # started as a script by the benchmark: its folder's parent holds ``peers``
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from peers import _driver

_state: dict[str, Any] = {}


def open_memory(folder: str, llm_base_url: str, model_path: str, llm_model: str) -> dict[str, Any]:
    """Build the Memory; returns the versions and the settings used (printed with the figures)."""
    os.environ["MEM0_DIR"] = os.path.join(folder, ".mem0")
    from mem0 import Memory  # type: ignore[import-not-found]  # only in the mem0 venv

    config = {
        "vector_store": {
            "provider": "qdrant",
            "config": {
                "collection_name": "bench",
                "path": os.path.join(folder, "qdrant"),
                "embedding_model_dims": 384,
            },
        },
        "llm": {
            "provider": "openai",
            "config": {"model": llm_model, "api_key": "sk-bench", "openai_base_url": llm_base_url},
        },
        "embedder": {"provider": "huggingface", "config": {"model": model_path}},
        "history_db_path": os.path.join(folder, "history.db"),
    }
    _state["memory"] = Memory.from_config(config)
    versions = {p: metadata.version(p) for p in ("mem0ai", "qdrant-client", "sentence-transformers", "torch")}
    return {"versions": versions, "config": config}


def add(user_id: str, messages: list[dict[str, Any]], infer: bool) -> list[str]:
    """``Memory.add``: the texts of the memories it reports added."""
    result = _state["memory"].add(messages, user_id=user_id, infer=infer)
    return [r["memory"] for r in result.get("results", [])]


def search(user_id: str, query: str, limit: int) -> list[str]:
    """``Memory.search`` (its defaults otherwise: threshold 0.1, no reranker): memory texts, best first."""
    result = _state["memory"].search(query, top_k=limit, filters={"user_id": user_id})
    return [r["memory"] for r in result["results"]]


def delete_user(user_id: str) -> None:
    """``Memory.delete_all(user_id=...)``: mem0's call for erasing one user."""
    _state["memory"].delete_all(user_id=user_id)


def close() -> None:
    _state.pop("memory").close()


if __name__ == "__main__":
    os.environ["MEM0_TELEMETRY"] = "False"
    os.environ["HF_HUB_OFFLINE"] = os.environ["TRANSFORMERS_OFFLINE"] = "1"
    _driver.serve(
        {
            "open": open_memory,
            "add": add,
            "search": search,
            "delete_user": delete_user,
            "close": close,
        }
    )
