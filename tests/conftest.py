"""Shared fixtures: real SQLite files in tmp dirs, real servers on 127.0.0.1."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from ai_memory_sdk import Memory

# Tests never reach a real provider: scrub variables a developer's shell may carry.
for _var in (
    "OPENAI_API_KEY",
    "OPENAI_BASE_URL",
    "LETTA_API_KEY",
    "LETTA_BASE_URL",
    "AI_MEMORY_ENGINE",
    "AI_MEMORY_PATH",
    "AI_MEMORY_MODEL",
    "AI_MEMORY_LEARNER",
    "AI_MEMORY_EMBEDDER",
):
    os.environ.pop(_var, None)
# Default data files (the letta engine's journal, Memory() without a path) go to a scratch dir, not ~/.local/share.
os.environ["XDG_DATA_HOME"] = tempfile.mkdtemp(prefix="ai-memory-tests-")


@pytest.fixture
def make_memory(tmp_path) -> Iterator[Callable[..., Memory]]:
    """Build local-engine ``Memory`` objects on a fresh SQLite file; all closed after the test."""
    made: list[Memory] = []

    def make(**options: Any) -> Memory:
        options.setdefault("path", str(tmp_path / "memory.db"))
        options.setdefault("learner", "offline")
        options.setdefault("embedder", "none")
        m = Memory(**options)
        made.append(m)
        return m

    yield make
    for m in made:
        m.close()


@pytest.fixture
def memory(make_memory) -> Memory:
    return make_memory()


from support.letta_server import letta_llm, letta_server  # noqa: E402,F401  (session: one real Letta server)
from support.openai_server import openai_server  # noqa: E402,F401  (fixture: a scripted LLM on 127.0.0.1)
from support.postgres_server import (  # noqa: E402,F401  (session: one PostgreSQL server of each kind; a database per test)
    pgvector_server,
    pgvector_url,
    postgres_server,
    postgres_url,
)
