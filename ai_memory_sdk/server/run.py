"""Running the app under uvicorn, and stopping it without losing anything.

On SIGTERM or Ctrl-C the server stops accepting connections, lets every
request in flight finish (a long poll answers within a second with the run
as it is, and the client asks again elsewhere or later), and returns; the
caller then closes the engine, which waits ``close_timeout`` for runs queued
here and hands back what is left: queued runs stay in the store for the next
process with workers.
"""

from __future__ import annotations

import signal
import socket
from collections.abc import Callable, Sequence
from types import FrameType
from typing import Any

import uvicorn
from fastapi import APIRouter

from ..engines.local import LocalEngine
from .app import create_app
from .limits import ServerSettings
from .state import ServerState

KEEP_ALIVE_SECONDS = 30  # longer than the remote engine keeps an idle connection (10 s): it never reuses a closed one


class _Server(uvicorn.Server):
    """uvicorn's server, telling the app when shutdown begins and where it listens once it does."""

    def __init__(self, config: uvicorn.Config, state: ServerState, on_ready: Callable[[str], None] | None) -> None:
        super().__init__(config)
        self.state = state
        self.on_ready = on_ready

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started and self.on_ready is not None:
            host, port = self.servers[0].sockets[0].getsockname()[:2]
            self.on_ready(f"http://{f'[{host}]' if ':' in host else host}:{port}")

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self.state.stopping.set()
        super().handle_exit(sig, frame)


def serve(
    engine: LocalEngine,
    *,
    host: str = "127.0.0.1",
    port: int = 8420,
    settings: ServerSettings | None = None,
    routers: Sequence[tuple[APIRouter, str]] = (),
    on_ready: Callable[[str], None] | None = None,
) -> None:
    """Serve ``engine`` until SIGTERM/SIGINT; returns after the last request. The caller closes the engine.

    ``on_ready`` gets the URL once the socket listens (``port=0``: a free port).
    """
    app = create_app(engine, settings, routers=routers)
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_config=None,
        access_log=False,  # the gateway logs each request, with its request id
        timeout_keep_alive=KEEP_ALIVE_SECONDS,
        server_header=False,
        lifespan="on",
    )
    server = _Server(config, app.state.server, on_ready)
    # uvicorn re-raises the stopping signal once it is done; a no-op handler lets the caller close the engine.
    previous: dict[int, Any] = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            previous[sig] = signal.signal(sig, _ignore)
        except ValueError:  # not the main thread: uvicorn leaves signals alone too
            break
    try:
        server.run()
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


def _ignore(sig: int, frame: FrameType | None) -> None:
    """A signal that arrives after the server stopped (uvicorn re-raises it): the caller is closing already."""
