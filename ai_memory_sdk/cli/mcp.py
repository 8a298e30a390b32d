"""``ai-memory mcp``: the memory as a Model Context Protocol server for any assistant (stdio, or HTTP with ``--http``).

Over stdio, stdout carries the protocol and nothing else: this command
prints its one status line to stderr, and the library only logs (stderr).
"""

from __future__ import annotations

import argparse
import contextlib
import getpass
import sys
from typing import Any

from ._errors import UsageError, config_error
from ._open import settings
from ._parser import AddCommand, Command, argument, port, seconds, subject

DEFAULT_PORT = 8421  # next to ai-memory serve's 8420
# MCP clients end a stdio server by closing stdin, then SIGTERM about two seconds later: close within that. Runs
# not learned by then stay queued and are learned by the next process with workers on the store.
CLOSE_TIMEOUT = 1.5
_LOOPBACK = ("127.0.0.1", "localhost", "::1")


def _default_subject() -> str:
    try:
        return subject(getpass.getuser())
    except (OSError, KeyError, ValueError, TypeError):
        raise UsageError("cannot tell the OS user name to use as the subject; give --subject ID") from None


def mcp(args: argparse.Namespace, options: dict[str, Any]) -> int:
    try:
        import anyio

        from ..mcp_server import WATCH_INTERVAL, MemoryServer, Scope
    except ImportError as exc:
        raise UsageError(f"ai-memory mcp needs the MCP SDK ({exc}): pip install 'ai-memory-sdk[mcp]'") from None
    from ..memory import AsyncMemory

    default = args.subject if args.subject or args.multi_subject else _default_subject()
    scope = Scope(default, multi=args.multi_subject)
    options = {**options, "close_timeout": CLOSE_TIMEOUT}
    settings(options)  # a bad option or variable is named before anything starts
    with contextlib.redirect_stdout(sys.stderr):  # over stdio, stdout is the protocol's alone
        try:
            memory = AsyncMemory(**options)
        except (TypeError, ValueError) as exc:
            raise config_error(exc, options) from None
    server = MemoryServer(memory, scope, watch_interval=args.watch_interval or WATCH_INTERVAL)
    if not scope.multi:
        whose = repr(default)
    else:
        whose = "the subject each call names" + (f" (default {default!r})" if default else "")

    def ready(url: str) -> None:
        print(f"ai-memory mcp: memory of {whose} over {url} ({memory!r})", file=sys.stderr, flush=True)
        if args.http and args.host not in _LOOPBACK:
            print(
                f"ai-memory mcp: warning: listening on {args.host} without authentication: anyone who reaches it "
                "reads and writes this memory",
                file=sys.stderr,
                flush=True,
            )

    async def serve() -> None:
        try:
            if args.http:
                await server.serve_http(args.host, args.port, ready)
            else:
                ready("stdio")
                await server.serve_stdio()
        finally:
            with anyio.CancelScope(shield=True):
                await memory.close()

    anyio.run(serve)
    return 0


def register(command: AddCommand) -> dict[str, Command]:
    m = command(
        "mcp",
        "serve the memory to assistants over the Model Context Protocol (stdio; --http for streamable HTTP)",
    )
    m.add_argument(
        "--subject",
        type=argument(subject),
        help="whose memory: the user (or subject) id (default: the OS user name; with --multi-subject: none)",
    )
    m.add_argument(
        "--multi-subject",
        action="store_true",
        help="serve every subject: each tool takes a subject_id argument (--subject, if given, is its default)",
    )
    m.add_argument("--http", action="store_true", help="serve streamable HTTP at http://HOST:PORT/mcp, not stdio")
    m.add_argument("--host", default="127.0.0.1", help="address to listen on with --http (default 127.0.0.1)")
    m.add_argument(
        "--port",
        type=argument(port),
        default=DEFAULT_PORT,
        help=f"port to listen on with --http (default {DEFAULT_PORT}; 0 picks a free one)",
    )
    m.add_argument(
        "--watch-interval",
        type=argument(seconds),
        help="seconds between checks of the followed memory blocks for changes made elsewhere (default 1)",
    )
    return {"mcp": mcp}
