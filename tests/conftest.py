"""Shared fixtures: real SQLite files in tmp dirs, real servers on 127.0.0.1."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

# tests/ is on sys.path (pyproject's pytest ``pythonpath``): the helpers are ``support.<module>`` everywhere.
# Their asserts are rewritten too, so this comes before the first import of one.
pytest.register_assert_rewrite("support")

from support import backends  # noqa: E402
from support.backends import MakeMemory  # noqa: E402

from ai_memory_sdk import Memory  # noqa: E402

# Fixture modules: openai_server (a scripted LLM on 127.0.0.1), letta_server/letta_llm (one real
# Letta server per session), llama_server (one llama.cpp server per session), postgres_server/pgvector_server
# (one PostgreSQL server of each kind per session; postgres_url/pgvector_url: a database per test).
pytest_plugins = [
    "support.openai_server",
    "support.letta_server",
    "support.llama_server",
    "support.postgres_server",
    "support.ai_memory_server",
]

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
def make_memory(tmp_path: Path) -> Iterator[MakeMemory]:
    """Build local-engine ``Memory`` objects on a fresh SQLite file; all closed after the test."""
    made = backends.Made(backends.local_sqlite(tmp_path))
    yield made
    made.close_all()


@pytest.fixture
def memory(make_memory: MakeMemory) -> Memory:
    return make_memory()
