"""``create_app(engine)``: the FastAPI application of ``ai-memory serve``, ready for more routers.

The app serves one ``LocalEngine`` (its workers running) to many tenants:
every request is authenticated by the gateway and handled on
``engine.scoped(tenant)``. Other routers (the browser inspector at ``/ui``)
are added with ``create_app(engine, routers=[(router, "/ui")])`` or
``app.include_router(...)`` afterwards; they sit behind the same gateway
(keys, limits, request ids, metrics) and reach the engine through
``state.state_of(request)`` and the tenant through ``state.tenant_of(request)``.
The caller owns the engine: closing it is the caller's (``server.run.serve``
does it after the last request).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

import anyio.to_thread
from fastapi import APIRouter, FastAPI

from .. import __version__
from ..engines.local import LocalEngine
from . import errors, probes, routes
from .gateway import Gateway
from .limits import ServerSettings
from .state import ServerState

DESCRIPTION = """The HTTP API of an ai_memory_sdk store: long-term memory through learned context blocks.

Each route under `/v1` is one method of the engine protocol; `Memory(server_url=...)` (the `remote` engine)
calls them. Every route but `GET /healthz` needs `Authorization: Bearer <key>` (`ai-memory keys create NAME`);
a key's name is its tenant, and a tenant sees only its own subjects, runs, messages and passages.
Errors are `{"error": {"type": ..., "message": ...}}`. Reference: docs/server.md.
"""


def create_app(
    engine: LocalEngine,
    settings: ServerSettings | None = None,
    *,
    routers: Sequence[tuple[APIRouter, str]] = (),
) -> FastAPI:
    """The server's app over ``engine``; ``routers`` are (router, prefix) pairs added after the API's own."""
    state = ServerState(engine, settings or ServerSettings())

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        anyio.to_thread.current_default_thread_limiter().total_tokens = state.settings.threads
        yield
        state.stopping.set()

    app = FastAPI(
        title="ai_memory_sdk server",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        redirect_slashes=False,
    )
    app.state.server = state
    errors.install(app)
    app.include_router(probes.router)
    app.include_router(routes.router)
    for router, prefix in routers:
        app.include_router(router, prefix=prefix)
    app.add_middleware(Gateway, state=state)
    return app
