"""The contract suite: every test here runs once per backend, through ``memory`` / ``make_memory``.

A backend is a name, the capabilities its engine has, and a builder
(``support/backends.py``). Adding one (``postgres``, ``remote``) is one entry in
``BACKENDS`` and one builder function. ``postgres`` and ``postgres-pgvector`` run
the local engine on a fresh database of the session's PostgreSQL servers
(``support/postgres_server.py``). A test that needs a capability some
engine lacks declares it, ``@pytest.mark.needs("block_history")``, and is
skipped on backends without it; a test whose assertion differs by engine asks
``backend.has(...)``.

The ``letta`` backend runs on the session's one Letta server (``-m letta``; skipped
when the server is not installed) with the scripted model of ``support/letta_model.py``.

The ``remote`` backend is ``Memory(server_url=...)`` on the session's one ``ai-memory serve``
(a real server under uvicorn on 127.0.0.1), each test with a new API key: a tenant of its own.
Tests that configure the server side (a scripted LLM, ``history_limit``) get a server of their own.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from support import backends, letta_model
from support.ai_memory_server import ThreadServer
from support.backends import Backend, MakeMemory

from ai_memory_sdk import Memory


def _local_sqlite(request: pytest.FixtureRequest) -> MakeMemory:
    return backends.local_sqlite(request.getfixturevalue("tmp_path"))


def _postgres(request: pytest.FixtureRequest) -> MakeMemory:
    return backends.local_postgres(request.getfixturevalue("postgres_url"))


def _pgvector(request: pytest.FixtureRequest) -> MakeMemory:
    return backends.local_postgres(request.getfixturevalue("pgvector_url"))


def _letta(request: pytest.FixtureRequest) -> MakeMemory:
    server = request.getfixturevalue("letta_server")
    llm = request.getfixturevalue("letta_llm")
    previous = llm.responder
    llm.responder = letta_model.responder

    def restore() -> None:
        llm.responder = previous

    request.addfinalizer(restore)
    return backends.letta(server)


def _remote(request: pytest.FixtureRequest) -> MakeMemory:
    started: list[ThreadServer] = []

    def stop() -> None:
        for server in started:
            server.stop()

    request.addfinalizer(stop)
    server = request.getfixturevalue("ai_memory_server")
    key = request.getfixturevalue("remote_key")
    return backends.remote(server, key, request.getfixturevalue("tmp_path"), started)


# The remote engine has what its server has, but no store file and no enqueue-only mode of its own.
_REMOTE = frozenset(backends.CAPABILITIES) - {"enqueue_only", "sqlite_file"}

_SERVER_STORE = frozenset(backends.CAPABILITIES) - {"sqlite_file"}  # the local engine on PostgreSQL
BACKENDS: dict[str, tuple[Backend, Callable[[pytest.FixtureRequest], MakeMemory]]] = {
    "local-sqlite": (Backend("local-sqlite", frozenset(backends.CAPABILITIES), fast_run_s=2.0), _local_sqlite),
    "postgres": (Backend("postgres", _SERVER_STORE, fast_run_s=2.0), _postgres),
    "postgres-pgvector": (Backend("postgres-pgvector", _SERVER_STORE, fast_run_s=2.0), _pgvector),
    "letta": (Backend("letta", frozenset(), fast_run_s=10.0), _letta),
    "remote": (Backend("remote", _REMOTE, fast_run_s=2.0), _remote),
}
_MARKS = {"letta": [pytest.mark.letta], "postgres": [pytest.mark.postgres], "postgres-pgvector": [pytest.mark.postgres]}


@pytest.fixture(params=[pytest.param(name, marks=_MARKS.get(name, []), id=name) for name in BACKENDS])
def backend(request: pytest.FixtureRequest) -> Backend:
    found: Backend = BACKENDS[request.param][0]
    for mark in request.node.iter_markers("needs"):
        missing = [c for c in mark.args if not found.has(c)]
        if missing:
            pytest.skip(f"{found.name} lacks {', '.join(missing)}")
    return found


@pytest.fixture(autouse=True)
def _every_backend(backend: Backend) -> None:
    """Every contract test runs per backend (and is skipped where a capability it needs is missing)."""


@pytest.fixture
def make_memory(backend: Backend, request: pytest.FixtureRequest) -> Iterator[MakeMemory]:
    """Build ``Memory`` objects on the backend under test; all closed after the test."""
    made = backends.Made(BACKENDS[backend.name][1](request))
    yield made
    made.close_all()


@pytest.fixture
def memory(make_memory: MakeMemory) -> Memory:
    return make_memory()
