"""How tests build ``Memory`` objects on each engine: one builder per backend, and what each engine can do.

``tests/conftest.py`` (local tests), ``tests/contract/conftest.py`` (the contract suite,
every backend) and ``tests/test_letta_engine.py`` build through these, and close what they
built after the test with :class:`Made`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ai_memory_sdk import Memory
from support.ai_memory_server import ServeProcess, ThreadServer
from support.letta_server import LettaServer

MakeMemory = Callable[..., Memory]
LETTA_MODEL = "openai/gpt-4o-mini"  # the Letta server refuses its listed openai-proxy/... handles

# What a backend may lack. Each name says what a test relying on it assumes.
CAPABILITIES = {
    "enqueue_only": "Memory(background=False) only enqueues; support.internals.drain(m) learns what is queued",
    "block_history": "block_history / restore_block / history_limit",
    "sqlite_file": "the store is one SQLite file tests may open (support.internals); path=':memory:' is a throwaway",
    "offline_learner": "runs are learned by the offline learner (Key: value lines from first-person statements)",
    "scripted_llm": "Memory(learner='llm', llm_base_url=openai_server.base_url) learns through the test's scripted server",
    "unarchived_messages": "get_messages lists messages added with skip_vector_storage=True",
    "relevance_cutoff": "search returns nothing for a query that shares no word with any passage (lexical search)",
    "absolute_scores": "SearchResult.score is in [0, 1] and means the same in every query (docs/search.md#scores)",
    "exact_parts": "get_messages returns the parts of a long text exactly as stored (no re-chunking)",
    "pass_spans": "a run records the start and finish of the pass that applied it",
}


@dataclass(frozen=True)
class Backend:
    """One engine configuration under test."""

    name: str
    capabilities: frozenset[str]
    fast_run_s: float  # a one-message run is learned within this (letta: one LLM call on a real server)

    def has(self, capability: str) -> bool:
        assert capability in CAPABILITIES, f"unknown capability {capability!r}"
        return capability in self.capabilities


def local_sqlite(tmp_path: Path) -> MakeMemory:
    """The embedded engine on ``memory.db`` in the test's tmp dir: offline learner, lexical search only."""

    def build(**options: Any) -> Memory:
        options.setdefault("path", str(tmp_path / "memory.db"))
        options.setdefault("learner", "offline")
        options.setdefault("embedder", "none")
        return Memory(**options)

    return build


def local_postgres(url: str) -> MakeMemory:
    """The embedded engine on a PostgreSQL database (the test's own, empty): offline learner, lexical search only."""

    def build(**options: Any) -> Memory:
        options.setdefault("path", url)
        options.setdefault("learner", "offline")
        options.setdefault("embedder", "none")
        return Memory(**options)

    return build


def letta(server: LettaServer) -> MakeMemory:
    """``Memory(engine="letta")`` on a running Letta server; options of the local engine are accepted and unused."""

    def build(**options: Any) -> Memory:
        options.setdefault("letta_model", LETTA_MODEL)
        options.setdefault("letta_embedding", json.dumps(server.embedding_config))
        return Memory(engine="letta", base_url=server.base_url, api_key="test-key", **options)

    return build


_CLIENT_OPTIONS = ("subject_id", "close_timeout", "path")  # what a remote Memory keeps (path: the server's store)


def remote(server: ServeProcess, key: str, tmp_path: Path, started: list[ThreadServer]) -> MakeMemory:
    """``Memory(server_url=...)`` on the session's ``ai-memory serve`` with the test's own tenant ``key``.

    Options that configure the server side (``learner``, ``llm_base_url``, ``history_limit``, ...) get a
    server of their own for the test (an in-process ``ThreadServer`` on a fresh store, one per option set,
    appended to ``started`` for the caller to stop), since the session's server runs the offline learner.
    """
    servers: dict[str, ThreadServer] = {}

    def build(**options: Any) -> Memory:
        client = {k: options.pop(k) for k in _CLIENT_OPTIONS if k in options}
        client.pop("path", None)
        server_side = {k: v for k, v in options.items() if (k, v) not in (("learner", "offline"), ("embedder", "none"))}
        if not server_side:
            return Memory(server_url=server.url, server_api_key=key, **client)
        spec = json.dumps(options, sort_keys=True, default=str)
        if spec not in servers:
            servers[spec] = ThreadServer(tmp_path / f"remote-{len(servers)}.db", **options).start()
            started.append(servers[spec])
            servers[spec].tenant_key = servers[spec].key()
        own = servers[spec]
        return Memory(server_url=own.url, server_api_key=own.tenant_key, **client)

    return build


class Made:
    """Builds ``Memory`` objects with a builder and remembers them, so the fixture closes them all."""

    def __init__(self, build: MakeMemory) -> None:
        self._build = build
        self.made: list[Memory] = []

    def __call__(self, **options: Any) -> Memory:
        m = self._build(**options)
        self.made.append(m)
        return m

    def close_all(self) -> None:
        for m in self.made:
            m.close()
