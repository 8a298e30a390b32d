"""``create_app(engine)``: the FastAPI application of ``ai-memory serve``, ready for more routers.

The app serves one ``LocalEngine`` (its workers running) to many tenants:
every request is authenticated by the gateway and handled on
``engine.scoped(tenant)``. The browser inspector is mounted at ``/ui`` on the
same terms (each key sees its tenant's subjects). Other routers are added with
``create_app(engine, routers=[(router, "/prefix")])`` or
``app.include_router(...)`` afterwards; they sit behind the same gateway
(keys, limits, request ids, metrics) and reach the engine through
``state.state_of(request)`` and the tenant through ``state.tenant_of(request)``.
The caller owns the engine: closing it is the caller's (``server.run.serve``
does it after the last request).
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import anyio.to_thread
from fastapi import APIRouter, FastAPI, Request

from .. import __version__, inspector
from ..engines.base import Engine
from ..engines.local import LocalEngine
from . import errors, probes, routes
from .gateway import Gateway
from .limits import ServerSettings
from .state import ServerState, state_of, tenant_of

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
    ui: bool = True,
) -> FastAPI:
    """The server's app over ``engine``; ``routers`` are (router, prefix) pairs added after the API's own.

    ``ui``: mount the inspector at ``/ui`` (the pages of each key's tenant).
    """
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
    if ui:
        ui_router = inspector.router(_tenant_engine, secret=_ui_secret(engine))
        app.include_router(ui_router, prefix="/ui", tags=["inspector"], responses=_UI_RESPONSES)
    for router, prefix in routers:
        app.include_router(router, prefix=prefix)
    app.add_middleware(Gateway, state=state)
    return app


_UI_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"description": f"A page saying what went wrong ({what})", "content": {"text/html": {}, "text/plain": {}}}
    for status, what in (
        (303, "after a form: back to the page"),
        (400, "a bad parameter, named"),
        (403, "a form without its page's token"),
        (404, "no such subject, run or file in this tenant"),
        (409, "the run's status does not allow it"),
        (413, "a form too large"),
        (415, "not a form"),
    )
}
"""What the inspector's pages answer besides 200, for ``/openapi.json`` (the gateway's 401/413/429 come first)."""


def _tenant_engine(request: Request) -> Engine:
    return state_of(request).tenant_engine(tenant_of(request))


def _ui_secret(engine: LocalEngine) -> bytes:
    """The inspector's CSRF signing secret, kept in the store: every server process on it signs alike."""
    stored = engine.store.get_meta("inspector_secret")
    if stored is None:
        engine.store.set_meta("inspector_secret", secrets.token_hex(32))
        stored = engine.store.get_meta("inspector_secret") or ""
    return bytes.fromhex(stored)
