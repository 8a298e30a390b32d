"""The HTTP server's commands: ``serve`` and ``keys create|list|revoke`` (docs/server.md).

``serve`` needs the ``server`` extra (FastAPI, uvicorn, prometheus-client);
``keys`` needs only the store, so keys can be made before the server is
installed or started.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

from .. import config
from ..store import is_postgres_url, open_store
from ..store.base import Store
from . import _display
from ._errors import UsageError, config_error
from ._open import settings
from ._parser import AddCommand, Command, argument, count, port, rate, seconds, workers

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"


def _key_name(text: str) -> str:
    from ..server.auth import key_name

    return key_name(text)


def serve(args: argparse.Namespace, options: dict[str, Any]) -> int:
    try:
        from ..server.limits import ServerSettings
        from ..server.request_ids import RequestIdFilter
        from ..server.run import serve as run_server
    except ImportError as exc:
        raise UsageError(
            f"ai-memory serve needs the server extra: pip install 'ai-memory-sdk[server]' ({exc})"
        ) from None
    from ..engines.local import LocalEngine

    extra: dict[str, Any] = {"workers": args.workers} if args.workers else {}
    if args.close_timeout is not None:
        extra["close_timeout"] = args.close_timeout
    # --workers 0: this process only serves; `ai-memory worker` processes on the store learn.
    s = settings({**options, "background": args.workers != 0, **extra})
    if config.choose_engine(s) != "local":
        raise UsageError(
            "ai-memory serve runs the local engine on a store (unset AI_MEMORY_ENGINE, AI_MEMORY_SERVER_URL and"
            " LETTA_API_KEY)"
        )
    try:
        limits = ServerSettings(
            max_body_bytes=max(1, int(args.max_body_mb * 1024 * 1024)),
            rate=args.rate,
            burst=args.burst,
            max_long_polls=args.max_long_polls,
            long_poll_seconds=args.long_poll_seconds,
            threads=args.threads,
        )
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    _log_requests(RequestIdFilter(), access=not args.no_access_log, verbose=args.verbose)
    try:
        engine = LocalEngine(s)
    except (TypeError, ValueError) as exc:
        raise config_error(exc, options) from None
    info = engine.info()

    learning = (
        f"{_display.learner_text(info, s)}, {s.workers} workers"
        if s.background
        else f"no workers (ai-memory worker --path {info['store']} learns)"
    )

    def ready(url: str) -> None:
        print(
            f"serving {url} (docs: {url}/docs, needs a key) on {info['store']} with {learning};"
            " Ctrl-C or SIGTERM stops",
            file=sys.stderr,
            flush=True,
        )

    try:
        run_server(engine, host=args.host, port=args.port, settings=limits, on_ready=ready)
    finally:
        engine.close()
    print("stopped: every request answered, the workers closed", file=sys.stderr, flush=True)
    return 0


def _log_requests(request_ids: logging.Filter, *, access: bool, verbose: bool) -> None:
    """Every log line names its request id; access lines (INFO) are shown unless turned off."""
    root = logging.getLogger()
    for handler in root.handlers:
        handler.addFilter(request_ids)
        handler.setFormatter(logging.Formatter(LOG_FORMAT))
    if access and not verbose:
        logging.getLogger("ai_memory_sdk.server.access").setLevel(logging.INFO)
        logging.getLogger("ai_memory_sdk.server.run").setLevel(logging.INFO)
    if not access:
        logging.getLogger("ai_memory_sdk.server.access").setLevel(logging.WARNING)


def keys(args: argparse.Namespace, options: dict[str, Any]) -> int:
    if args.action in ("create", "revoke") and args.name is None:
        raise UsageError(f"ai-memory keys {args.action} needs a NAME (the key's tenant)")
    if args.action == "list" and args.name is not None:
        raise UsageError("ai-memory keys list takes no NAME")
    store = _key_store(options, create=args.action == "create")
    try:
        if args.action == "create":
            from ..server.auth import create_key

            try:
                key = create_key(store, args.name)
            except ValueError as exc:
                raise UsageError(str(exc)) from None
            print(f"key {args.name!r} created for {store.path}; only its hash is stored, so this is the one time it")
            print("is shown. Clients send it as 'Authorization: Bearer <key>' (AI_MEMORY_SERVER_API_KEY):")
            print(key)
        elif args.action == "revoke":
            if not store.revoke_key(args.name):
                raise UsageError(f"no active key named {args.name!r} in {store.path}")
            print(f"key {args.name!r} revoked: requests with it get 401 from now on")
        else:
            found = store.list_keys()
            if not found:
                print(f"no keys in {store.path} (ai-memory keys create NAME)", file=sys.stderr)
                return 0
            rows = [
                [
                    k.name,
                    f"{k.created_at:%Y-%m-%d %H:%M:%S}",
                    f"{k.revoked_at:%Y-%m-%d %H:%M:%S}" if k.revoked_at else "-",
                ]
                for k in found
            ]
            print(_display.table(["name", "created", "revoked"], rows))
    finally:
        store.close()
    return 0


def _key_store(options: dict[str, Any], *, create: bool) -> Store:
    """The store the keys live in; only ``create`` may make a new one (a server's first key)."""
    s = settings(options)
    path = s.path or str(config.default_path())
    if not create and not is_postgres_url(path) and not Path(path).is_file():
        raise UsageError(f"no store at {path} (--path or $AI_MEMORY_PATH)")
    if not is_postgres_url(path):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    return open_store(path, busy_timeout=s.busy_timeout)


def register(command: AddCommand) -> dict[str, Command]:
    s = command("serve", "serve the store over HTTP to API-key clients (Memory(server_url=...)); needs [server]")
    s.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    s.add_argument("--port", type=argument(port), default=8420, help="port (default 8420; 0: any free port)")
    s.add_argument(
        "--workers",
        type=argument(workers),
        help="worker threads learning runs (default 4; 0: none here, `ai-memory worker` processes learn)",
    )
    s.add_argument(
        "--max-body-mb", type=argument(seconds), default=16.0, help="largest request body in MiB (default 16): 413"
    )
    s.add_argument(
        "--rate", type=argument(rate), default=200.0, help="requests/s allowed per key (default 200; 0: no limit)"
    )
    s.add_argument("--burst", type=argument(count), default=400, help="requests a key may make at once (default 400)")
    s.add_argument(
        "--max-long-polls", type=argument(count), default=256, help="wait requests held at once (default 256): 503"
    )
    s.add_argument(
        "--long-poll-seconds",
        type=argument(seconds),
        default=25.0,
        help="longest a wait request is held before the client asks again (default 25)",
    )
    s.add_argument("--threads", type=argument(count), default=64, help="threads running handlers (default 64)")
    s.add_argument(
        "--close-timeout",
        type=argument(seconds),
        help="at shutdown, seconds to wait for runs queued here before handing them back to the queue (default 30)",
    )
    s.add_argument("--no-access-log", action="store_true", help="no log line per request")

    k = command("keys", "create, list or revoke the server's API keys (a key's NAME is its tenant)")
    k.add_argument("action", choices=["create", "list", "revoke"], help="what to do")
    k.add_argument("name", nargs="?", type=argument(_key_name), help="the key's name: its tenant (create, revoke)")
    return {"serve": serve, "keys": keys}
