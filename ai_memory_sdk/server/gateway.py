"""The one middleware every request passes: request id, auth, rate limit, body size, metrics and access log.

In that order, before any routing, so an unauthenticated request learns
nothing about routes or bodies (401 on every path but ``/healthz``), and a
refused request costs no handler. Pure ASGI (no per-request task or
response wrapping): it adds microseconds, not milliseconds.

API paths (``/v1/...``) are routed on the raw request path, still
percent-encoded, and each path parameter is decoded once it is matched
(``routes.EncodedRoute``), so a subject id may contain ``/``.
"""

from __future__ import annotations

import logging
import time
from urllib.parse import quote_from_bytes

import anyio.to_thread
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from . import api
from .auth import bearer, tenant_of
from .errors import error_body
from .limits import retry_after
from .request_ids import HEADER, from_header, request_id
from .state import ServerState

access = logging.getLogger("ai_memory_sdk.server.access")
log = logging.getLogger(__name__)

PUBLIC_PATHS = frozenset({"/healthz"})
_RAW_SAFE = "/%:@!$&'()*+,;=-._~"  # what stays as it is when re-encoding a raw path's other bytes
_HEADER_BYTES = HEADER.lower().encode()


class Gateway:
    """ASGI middleware in front of the app (``create_app`` installs it)."""

    def __init__(self, app: ASGIApp, state: ServerState) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        headers = Headers(scope=scope)
        rid = from_header(headers.get(HEADER))
        token = request_id.set(rid)
        status = 500
        tenant = "-"

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), (_HEADER_BYTES, rid.encode())]
            await send(message)

        path = scope["path"]
        try:
            if path.startswith(api.API_PREFIX):
                scope["path"] = path = quote_from_bytes(scope.get("raw_path") or path.encode(), safe=_RAW_SAFE)
            if path not in PUBLIC_PATHS:
                found = await self._authenticate(headers, send_with_id, browser=path.startswith(_BROWSER_PATHS))
                if found is None:
                    return
                tenant = found
                scope.setdefault("state", {})["tenant"] = tenant
                wait = self.state.rate.take(tenant)
                if wait:
                    await _reply(
                        send_with_id,
                        429,
                        "RateLimited",
                        f"key {tenant!r} is over its rate of {self.state.settings.rate:g} requests/s;"
                        f" retry after {retry_after(wait)}s",
                        [(b"retry-after", retry_after(wait).encode())],
                    )
                    return
            buffered = await self._body(scope, headers, receive, send_with_id)
            if buffered is None:
                return
            await self.app(scope, buffered, send_with_id)
        finally:
            seconds = time.perf_counter() - started
            route = getattr(scope.get("route"), "path", None) or "-"
            self.state.metrics.observe(scope["method"], route, status, seconds)
            run = scope.get("state", {}).get("run_id")
            access.info(
                '%s "%s %s" %d %.2fms tenant=%s%s',
                _client(scope),
                scope["method"],
                path if not scope.get("query_string") else f"{path}?{scope['query_string'].decode('latin-1')}",
                status,
                seconds * 1000,
                tenant,
                f" run={run}" if run else "",
            )
            request_id.reset(token)

    async def _authenticate(self, headers: Headers, send: Send, *, browser: bool) -> str | None:
        """The request's tenant, or None after answering 401 (or 503 when the store cannot say)."""
        header = headers.get("authorization")
        key = bearer(header)
        if key is None:
            problem = (
                "missing Authorization header"
                if header is None
                else "malformed Authorization header: expected 'Bearer aim_...'"
            )
            await _unauthorized(
                send, f"{problem}; send 'Authorization: Bearer <key>' (ai-memory keys create NAME)", browser=browser
            )
            return None
        try:
            tenant = await anyio.to_thread.run_sync(tenant_of, self.state.engine.store, key)
        except Exception as exc:  # the store is down: not the client's fault, and not a 500 either
            log.warning("key lookup failed: %s", exc)
            await _reply(send, 503, "StoreError", "the server cannot check keys now", [(b"retry-after", b"1")])
            return None
        if tenant is None:
            await _unauthorized(send, "unknown or revoked key", browser=browser)
        return tenant

    async def _body(self, scope: Scope, headers: Headers, receive: Receive, send: Send) -> Receive | None:
        """Read the body up to the limit and hand it to the app in one piece; None after answering 413."""
        limit = self.state.settings.max_body_bytes
        length = headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            await _too_large(send, limit)
            return None
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                await _too_large(send, limit)
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        delivered = False

        async def replay() -> Message:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        return replay


async def _reply(send: Send, status: int, type_: str, message: str, headers: list[tuple[bytes, bytes]]) -> None:
    body = error_body(type_, message)
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


_BROWSER_PATHS = ("/ui", "/docs")  # pages a person opens: the browser is asked for the key


async def _unauthorized(send: Send, message: str, *, browser: bool = False) -> None:
    """401; pages a person opens (``/ui``, ``/docs``) also ask the browser for the key (as a password)."""
    challenge = b'Basic realm="ai-memory: any user name, the API key as password"' if browser else b"Bearer"
    await _reply(send, 401, "Unauthorized", message, [(b"www-authenticate", challenge)])


async def _too_large(send: Send, limit: int) -> None:
    message = f"the request body is over the server's limit of {limit} bytes (ai-memory serve --max-body-mb)"
    await _reply(send, 413, "PayloadTooLarge", message, [(b"connection", b"close")])


def _client(scope: Scope) -> str:
    client = scope.get("client")
    return f"{client[0]}:{client[1]}" if client else "-"
