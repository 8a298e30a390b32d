"""``ai-memory ui``: the inspector in a browser, served from this machine over an existing store.

It opens the store like ``show`` does (no workers: opening the page never
learns), so a run retried from the page is learned by a process with workers
on the store: the application, or ``ai-memory worker``. There is no login: it
listens on 127.0.0.1 unless ``--host`` says otherwise.
"""

from __future__ import annotations

import argparse
import ipaddress
import socket
import sys
from typing import Any

from ._errors import UsageError
from ._open import open_memory
from ._parser import AddCommand, Command, argument, port

DEFAULT_PORT = 8765


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def _listen(host: str, number: int) -> socket.socket:
    """The listening socket, bound before the server starts (so ``--port 0`` can print the port it got)."""
    try:
        infos = socket.getaddrinfo(host, number, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise UsageError(f"option --host: cannot resolve {host!r}: {exc.strerror}") from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as exc:
        sock.close()
        raise UsageError(f"cannot listen on {host}:{number}: {exc.strerror} (--host, --port)") from None
    sock.listen(128)
    return sock


def ui(args: argparse.Namespace, options: dict[str, Any]) -> int:
    try:
        import uvicorn
        from fastapi import FastAPI

        from ..inspector import engine_of, router
    except ImportError as exc:
        raise UsageError(f"ai-memory ui needs the server extra: pip install 'ai-memory-sdk[server]' ({exc})") from None
    with open_memory(options, learns=False) as mem, _listen(args.host, args.port) as sock:
        app = FastAPI(title="ai-memory inspector", docs_url=None, redoc_url=None, openapi_url=None)
        app.include_router(router(engine_of(mem)))
        bound_host, bound_port = sock.getsockname()[:2]
        shown = f"[{bound_host}]" if ":" in bound_host else bound_host
        print(
            f"ai-memory inspector: http://{shown}:{bound_port}/ (store {mem._engine.info().get('store', '-')})",
            flush=True,
        )
        if not _loopback(args.host):
            print(
                f"warning: listening on {args.host}: anyone who can reach it can read this store and change blocks"
                " and runs (there is no login)",
                file=sys.stderr,
                flush=True,
            )
        print("Ctrl-C stops it.", flush=True)
        server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off"))
        try:
            server.run(sockets=[sock])
        except KeyboardInterrupt:  # uvicorn stops on Ctrl-C, then re-raises it: stopping is the normal end here
            pass
    print("ai-memory inspector stopped.", flush=True)
    return 0


def register(command: AddCommand) -> dict[str, Command]:
    u = command("ui", "browse subjects, blocks, history, runs and traces in a browser (the inspector)")
    u.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    u.add_argument(
        "--port", type=argument(port), default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT}; 0: any free port)"
    )
    return {"ui": ui}
