"""What one app holds: the engine, its limits and counters. Nothing in it must be shared between processes."""

from __future__ import annotations

import threading
from typing import cast

import anyio
from starlette.requests import Request

from ..engines.local import LocalEngine
from .limits import LongPolls, RateLimiter, ServerSettings
from .metrics import Metrics


class ServerState:
    """The engine a server runs, its settings, and the per-process limiters, counters and shutdown flag."""

    def __init__(self, engine: LocalEngine, settings: ServerSettings) -> None:
        self.engine = engine
        self.settings = settings
        self.rate = RateLimiter(settings.rate, settings.burst)
        self.long_polls = LongPolls(settings.max_long_polls)
        self.metrics = Metrics(engine, self.long_polls)
        self.stopping = threading.Event()  # set when shutdown begins: long polls answer at once
        self._poll_threads: anyio.CapacityLimiter | None = None

    @property
    def poll_threads(self) -> anyio.CapacityLimiter:
        """Threads for long polls, apart from the handlers' (made in the event loop, on first use)."""
        if self._poll_threads is None:
            self._poll_threads = anyio.CapacityLimiter(self.settings.max_long_polls)
        return self._poll_threads

    def tenant_engine(self, tenant: str) -> LocalEngine:
        """The engine bound to one tenant's data (a cheap view; made per request so it sees ``close()``)."""
        return self.engine.scoped(tenant)


def state_of(request: Request) -> ServerState:
    return cast(ServerState, request.app.state.server)


def tenant_of(request: Request) -> str:
    """The tenant the gateway authenticated this request as."""
    return cast(str, request.scope["state"]["tenant"])
