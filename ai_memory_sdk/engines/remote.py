"""The ``remote`` engine: ``Memory`` as a client of an ``ai-memory serve`` server (docs/server.md).

Each engine method is one HTTP request to its route (``server/api.py``), so
``Memory(server_url=...)`` runs the same facade logic (``_ops``) as every
engine, and gets the same models back and the same exceptions (the server
names each error's type; ``RunFailedError`` comes from the ``Run`` the long
poll returns, as on every engine). Where the server answers 404 for an
unknown subject, run or message, the engine protocol's empty value is
returned (``[]``, None), as the local engine returns it.

Building the engine sends nothing. A server that does not answer raises
``ServerUnreachableError`` naming the URL, after a couple of quick retries;
only requests that are safe to repeat are repeated after they may have been
received (reads, the long poll); a request refused before it was handled
(connection refused, 429) is sent again whatever its method. ``wait_for_run``
is a long poll: the server answers when the run ends, or after its bound, and
the client asks again until its own timeout.

``RemoteEngine`` uses one ``httpx.Client`` per process (a forked child makes
its own); ``AsyncRemoteEngine`` (for ``AsyncMemory``) one ``httpx.AsyncClient``
per event loop.
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Generic, TypeVar, cast

import httpx
from pydantic import ValidationError

from .. import __version__
from .._fork import PerProcess, gate
from .._retry import retry_after
from ..config import Settings
from ..errors import (
    ServerError,
    ServerUnreachableError,
    StoreError,
    SubjectExistsError,
)
from ..models import (
    TERMINAL_STATUSES,
    Block,
    BlockSpec,
    BlockVersion,
    MessageIn,
    Run,
    SearchResult,
    StoredMessage,
    SubjectSummary,
)
from ..server import api

log = logging.getLogger(__name__)
T = TypeVar("T")

TIMEOUT = httpx.Timeout(30.0, connect=5.0)
KEEP_ALIVE_SECONDS = 10.0  # below the server's keep-alive (30 s), so an idle connection is never reused as it closes
RETRY_DELAYS = (0.25, 1.0)  # before the second and third attempt of a request that did not get through
RETRY_BUDGET = 30.0  # seconds a request may spend waiting on Retry-After (429, a busy server) before giving up
_POLL_MARGIN = 15.0  # read timeout of a long poll beyond the time asked for


# -- requests ----------------------------------------------------------------------------------------


def _nothing(data: Any) -> None:
    return None


@dataclass(frozen=True)
class _Req(Generic[T]):
    """One request: route, query, body, how to read the answer, and what a 404 means."""

    method: str
    path: str
    decode: Callable[[Any], T]
    params: dict[str, Any] | None = None
    body: Any = None
    absent: tuple[str, ...] = ()  # 404 types that mean "nothing there": answer ``empty``
    empty: Any = None  # a T
    safe: bool = False  # may be sent again after the server may have received it
    read_timeout: float | None = None


@dataclass(frozen=True)
class _Pause:
    """Wait before the next request of an op (a long poll that came back early)."""

    seconds: float


_Op = Generator["_Req[Any] | _Pause", Any, T]

_NO_SUBJECT = ("SubjectNotFoundError",)
_NO_BLOCK = ("SubjectNotFoundError", "BlockNotFoundError")
_NO_RUN = ("RunNotFoundError",)


def _get(
    path: str,
    decode: Callable[[Any], T],
    *,
    params: dict[str, Any] | None = None,
    absent: tuple[str, ...] = (),
    empty: Any = None,
    read_timeout: float | None = None,
) -> _Req[T]:
    query = {k: v for k, v in (params or {}).items() if v is not None}
    return _Req("GET", path, decode, query, absent=absent, empty=empty, safe=True, read_timeout=read_timeout)


def _field(name: str) -> Callable[[Any], str]:
    return lambda data: str(data[name])


def _spec(spec: BlockSpec) -> dict[str, Any]:
    return {"label": spec.label, "description": spec.description, "value": spec.value, "limit": spec.limit}


def _message(m: MessageIn) -> dict[str, Any]:
    return m.model_dump(mode="json", exclude_none=True)


def _time(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def _wait(run_id: str, timeout: float | None) -> _Op[Run]:
    """Long polls until the run ends or ``timeout`` passes (``TimeoutError``, as the local engine says it)."""
    deadline = None if timeout is None else time.monotonic() + timeout
    route = api.path(api.RUN_WAIT, run_id=run_id)
    while True:
        left = None if deadline is None else max(0.0, deadline - time.monotonic())
        ask = api.LONG_POLL_SECONDS if left is None else min(left, api.LONG_POLL_SECONDS)
        asked = time.monotonic()
        run: Run = yield _get(
            route, api.RUN_JSON.validate_python, params={"timeout": ask}, read_timeout=ask + _POLL_MARGIN
        )
        if run.status in TERMINAL_STATUSES:
            return run
        if deadline is not None and time.monotonic() >= deadline:
            raise TimeoutError(f"Run {run_id} did not complete within {timeout:g} seconds")
        if time.monotonic() - asked < ask / 2:  # answered early (a server shutting down): do not spin
            yield _Pause(0.5)


# -- answers -----------------------------------------------------------------------------------------


@dataclass
class _Attempts:
    """How a request has fared so far: transport failures and seconds slept on ``Retry-After``."""

    failures: int = 0
    slept: float = 0.0
    errors: list[str] = field(default_factory=list)


def _transport_retry(url: str, req: _Req[Any], exc: httpx.TransportError, attempts: _Attempts) -> float:
    """Seconds to wait before sending again, or raise ``ServerUnreachableError``."""
    not_sent = isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout))
    cause = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    if (not_sent or req.safe) and attempts.failures < len(RETRY_DELAYS):
        delay = RETRY_DELAYS[attempts.failures]
        attempts.failures += 1
        log.debug("%s %s: %s; retry in %gs", req.method, req.path, cause, delay)
        return delay
    raise ServerUnreachableError(url, f"{req.method} {req.path}: {cause}") from None


def _answer(url: str, req: _Req[Any], response: httpx.Response, attempts: _Attempts) -> tuple[Any, float | None]:
    """(value, None) for a final answer, (None, seconds) to send again after a wait; raises what the server said."""
    status = response.status_code
    if status < 300:
        if status == 204 or not response.content:
            return req.decode(None), None
        try:
            return req.decode(response.json()), None
        except (ValueError, ValidationError) as exc:  # not what this route answers: not an ai-memory server?
            raise ServerError(
                url, status, "BadResponse", f"{req.method} {req.path}: unreadable answer: {exc}"
            ) from None
    info = _error_info(response)
    type_, message = info.get("type", "HTTPError"), info.get("message", response.reason_phrase)
    if status == 404 and type_ in req.absent:
        return req.empty, None
    refused = status == 429 or type_ == "Overloaded"  # turned away before it was handled
    if refused or (req.safe and status in (502, 503, 504)):
        asked = retry_after(response)
        wait = min(1.0 if asked is None else asked, RETRY_BUDGET)
        if attempts.slept + wait <= RETRY_BUDGET:
            attempts.slept += wait
            return None, wait
    raise _exception(url, status, str(type_), str(message), info)


def _error_info(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        return body["error"]  # type: ignore[no-any-return]
    text = " ".join(response.text.split())[:200]
    return {"type": "HTTPError", "message": f"HTTP {response.status_code}: {text or response.reason_phrase}"}


def _exception(url: str, status: int, type_: str, message: str, info: dict[str, Any]) -> Exception:
    """The library exception the server named, else ``ServerError``."""
    if type_ == "SubjectExistsError" and "agent_id" in info and "subject_id" in info:
        return SubjectExistsError(str(info["agent_id"]), str(info["subject_id"]))
    if type_ == "StoreError":
        return StoreError(url, message)
    cls = api.ERROR_CLASSES.get(type_)
    if cls is not None and cls not in (SubjectExistsError, StoreError) and type_ != "UnsupportedByEngineError":
        return cls(message)
    if status == 413:
        return ValueError(message)
    if status == 401:
        message += " (check server_api_key / AI_MEMORY_SERVER_API_KEY)"
    return ServerError(url, status, type_, message)


# -- the engines -------------------------------------------------------------------------------------


def _connection(settings: Settings) -> tuple[str, dict[str, str]]:
    """The server's base URL and the request headers, from the settings; nothing is sent."""
    url = (settings.server_url or "").rstrip("/")
    if not url:
        raise ValueError("the remote engine needs a server URL: server_url=... or AI_MEMORY_SERVER_URL")
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"server_url must be an http:// or https:// URL, got {settings.server_url!r}")
    if not settings.server_api_key:
        raise ValueError(
            "the remote engine needs an API key: server_api_key=... or AI_MEMORY_SERVER_API_KEY"
            " (made on the server with ai-memory keys create NAME)"
        )
    headers = {"Authorization": f"Bearer {settings.server_api_key}", "User-Agent": f"ai-memory-sdk/{__version__}"}
    return url, headers


_LIMITS = httpx.Limits(max_connections=100, max_keepalive_connections=20, keepalive_expiry=KEEP_ALIVE_SECONDS)


def _agent(data: Any) -> str | None:
    return str(data["agent_id"])


def _text(data: Any) -> tuple[str, str] | None:
    return str(data["description"]), str(data["value"])


def _run(data: Any) -> Run | None:
    return api.RUN_JSON.validate_python(data)


def _trace(data: Any) -> dict[str, Any] | None:
    return dict(data)


def _item(data: Any) -> dict[str, Any] | None:
    item = data["item"]
    return None if item is None else dict(item)


class _Routes:
    """The request of each engine method: the same for the blocking and the async engine."""

    @staticmethod
    def agent_id(subject_id: str) -> _Req[str | None]:
        return _get(api.path(api.SUBJECT, subject_id=subject_id), _agent, absent=_NO_SUBJECT)

    @staticmethod
    def create_subject(subject_id: str, reset: bool, blocks: Sequence[BlockSpec]) -> _Req[str]:
        body = {"reset": reset, "blocks": [_spec(b) for b in blocks]}
        return _Req("PUT", api.path(api.SUBJECT, subject_id=subject_id), _field("agent_id"), body=body)

    @staticmethod
    def delete_subject(subject_id: str) -> _Req[None]:
        return _Req("DELETE", api.path(api.SUBJECT, subject_id=subject_id), _nothing, absent=_NO_SUBJECT)

    @staticmethod
    def list_subjects(query: str | None, offset: int, limit: int) -> _Req[list[SubjectSummary]]:
        params = {"query": query, "offset": offset, "limit": limit}
        return _get(api.SUBJECTS, api.SUBJECTS_JSON.validate_python, params=params)

    @staticmethod
    def count_subjects(query: str | None) -> _Req[int]:
        return _get(api.SUBJECT_COUNT, lambda d: int(d["count"]), params={"query": query})

    @staticmethod
    def list_blocks(subject_id: str) -> _Req[list[Block]]:
        route = api.path(api.BLOCKS, subject_id=subject_id)
        return _get(route, api.BLOCKS_JSON.validate_python, absent=_NO_SUBJECT, empty=[])

    @staticmethod
    def block_text(subject_id: str, label: str) -> _Req[tuple[str, str] | None]:
        return _get(api.path(api.BLOCK, subject_id=subject_id, label=label), _text, absent=_NO_BLOCK)

    @staticmethod
    def create_block(subject_id: str, spec: BlockSpec, reset: bool) -> _Req[str]:
        body = {"description": spec.description, "value": spec.value, "limit": spec.limit, "reset": reset}
        return _Req("PUT", api.path(api.BLOCK, subject_id=subject_id, label=spec.label), _field("block_id"), body=body)

    @staticmethod
    def delete_block(subject_id: str, label: str) -> _Req[None]:
        return _Req("DELETE", api.path(api.BLOCK, subject_id=subject_id, label=label), _nothing, absent=_NO_BLOCK)

    @staticmethod
    def set_block_value(subject_id: str, label: str, value: str) -> _Req[None]:
        route = api.path(api.BLOCK, subject_id=subject_id, label=label)
        return _Req("PATCH", route, _nothing, body={"value": value})

    @staticmethod
    def block_history(subject_id: str, label: str) -> _Req[list[BlockVersion]]:
        return _get(api.path(api.BLOCK_HISTORY, subject_id=subject_id, label=label), api.VERSIONS_JSON.validate_python)

    @staticmethod
    def restore_block(subject_id: str, label: str, version: int) -> _Req[str]:
        route = api.path(api.BLOCK_RESTORE, subject_id=subject_id, label=label)
        return _Req("POST", route, _field("value"), body={"version": version})

    @staticmethod
    def add_messages(
        subject_id: str, messages: Sequence[MessageIn], archive: bool, default_blocks: Sequence[BlockSpec]
    ) -> _Req[str]:
        body = {
            "messages": [_message(m) for m in messages],
            "archive": archive,
            "default_blocks": [_spec(b) for b in default_blocks],
        }
        return _Req("POST", api.path(api.MESSAGES, subject_id=subject_id), _field("run_id"), body=body)

    @staticmethod
    def consolidate(subject_id: str) -> _Req[str]:
        return _Req("POST", api.path(api.CONSOLIDATE, subject_id=subject_id), _field("run_id"))

    @staticmethod
    def get_messages(
        subject_id: str, limit: int | None, before: datetime | None, after: datetime | None
    ) -> _Req[list[StoredMessage]]:
        params = {"limit": limit, "before": _time(before), "after": _time(after)}
        route = api.path(api.MESSAGES, subject_id=subject_id)
        return _get(route, api.MESSAGES_JSON.validate_python, params=params, absent=_NO_SUBJECT, empty=[])

    @staticmethod
    def delete_message(message_id: str) -> _Req[None]:
        route = api.path(api.MESSAGE, message_id=message_id)
        return _Req("DELETE", route, _nothing, absent=(api.MESSAGE_NOT_FOUND,))

    @staticmethod
    def get_run(run_id: str) -> _Req[Run | None]:
        return _get(api.path(api.RUN, run_id=run_id), _run, absent=_NO_RUN)

    @staticmethod
    def list_runs(subject_id: str, status: str | None) -> _Req[list[Run]]:
        route = api.path(api.SUBJECT_RUNS, subject_id=subject_id)
        return _get(route, api.RUNS_JSON.validate_python, params={"status": status}, absent=_NO_SUBJECT, empty=[])

    @staticmethod
    def cancel_run(run_id: str) -> _Req[Run]:
        return _Req("POST", api.path(api.RUN_CANCEL, run_id=run_id), api.RUN_JSON.validate_python)

    @staticmethod
    def retry_run(run_id: str) -> _Req[Run]:
        return _Req("POST", api.path(api.RUN_RETRY, run_id=run_id), api.RUN_JSON.validate_python)

    @staticmethod
    def run_messages(run_id: str) -> _Req[list[StoredMessage]]:
        route = api.path(api.RUN_MESSAGES, run_id=run_id)
        return _get(route, api.MESSAGES_JSON.validate_python, absent=_NO_RUN, empty=[])

    @staticmethod
    def get_trace(run_id: str) -> _Req[dict[str, Any] | None]:
        return _get(api.path(api.RUN_TRACE, run_id=run_id), _trace, absent=(*_NO_RUN, api.TRACE_NOT_FOUND))

    @staticmethod
    def search(
        subject_id: str,
        query: str,
        tags: Sequence[str],
        tag_match_mode: str,
        limit: int,
        start: datetime | None,
        end: datetime | None,
    ) -> _Req[list[SearchResult]]:
        body = {
            "query": query,
            "tags": list(tags),
            "tag_match_mode": tag_match_mode,
            "limit": limit,
            "start": _time(start),
            "end": _time(end),
        }
        route = api.path(api.SEARCH, subject_id=subject_id)
        # A read sent as POST (the query and tags are a body): safe to send again.
        return _Req("POST", route, api.RESULTS_JSON.validate_python, body=body, absent=_NO_SUBJECT, empty=[], safe=True)

    @staticmethod
    def session_items(session_id: str, limit: int | None) -> _Req[list[dict[str, Any]]]:
        route = api.path(api.SESSION_ITEMS, session_id=session_id)
        return _get(route, api.ITEMS_JSON.validate_python, params={"limit": limit})

    @staticmethod
    def add_session_items(session_id: str, items: Sequence[dict[str, Any]], subject_id: str) -> _Req[None]:
        body = {"items": list(items), "subject_id": subject_id}
        return _Req("POST", api.path(api.SESSION_ITEMS, session_id=session_id), _nothing, body=body)

    @staticmethod
    def pop_session_item(session_id: str) -> _Req[dict[str, Any] | None]:
        return _Req("POST", api.path(api.SESSION_POP, session_id=session_id), _item)

    @staticmethod
    def clear_session(session_id: str) -> _Req[None]:
        return _Req("DELETE", api.path(api.SESSION, session_id=session_id), _nothing)


R = _Routes


def _timeout(req: _Req[Any]) -> httpx.Timeout:
    return TIMEOUT if req.read_timeout is None else httpx.Timeout(TIMEOUT.connect, read=req.read_timeout)


class RemoteEngine:
    """The engine protocol over HTTP, with a blocking client (``Memory``)."""

    name = "remote"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.url, headers = _connection(settings)
        self._client = PerProcess(
            lambda: httpx.Client(base_url=self.url, headers=headers, timeout=TIMEOUT, limits=_LIMITS)
        )

    def info(self) -> dict[str, str]:
        return {"engine": self.name, "server": self.url}

    def close(self) -> None:
        """Close the connections (the server's workers go on learning what was queued)."""
        self._client.get().close()

    def _send(self, req: _Req[T]) -> T:
        attempts = _Attempts()
        while True:
            try:
                if req.read_timeout is None:
                    with gate:  # a fork waits for the request (see _fork); a long poll is a wait: outside
                        response = self._request(req)
                else:
                    response = self._request(req)
            except httpx.TransportError as exc:
                time.sleep(_transport_retry(self.url, req, exc, attempts))
                continue
            value, wait = _answer(self.url, req, response, attempts)
            if wait is None:
                return cast(T, value)
            time.sleep(wait)

    def _request(self, req: _Req[Any]) -> httpx.Response:
        client = self._client.get()
        return client.request(req.method, req.path, params=req.params, json=req.body, timeout=_timeout(req))

    def _drive(self, op: _Op[T]) -> T:
        try:
            step = next(op)
            while True:
                if isinstance(step, _Pause):
                    time.sleep(step.seconds)
                    step = op.send(None)
                else:
                    step = op.send(self._send(step))
        except StopIteration as stop:
            value: T = stop.value
            return value

    # subjects
    def agent_id(self, subject_id: str) -> str | None:
        return self._send(R.agent_id(subject_id))

    def create_subject(self, subject_id: str, *, reset: bool, blocks: Sequence[BlockSpec]) -> str:
        return self._send(R.create_subject(subject_id, reset, blocks))

    def delete_subject(self, subject_id: str) -> None:
        self._send(R.delete_subject(subject_id))

    def list_subjects(self, *, query: str | None, offset: int, limit: int) -> list[SubjectSummary]:
        return self._send(R.list_subjects(query, offset, limit))

    def count_subjects(self, *, query: str | None) -> int:
        return self._send(R.count_subjects(query))

    # blocks
    def list_blocks(self, subject_id: str) -> list[Block]:
        return self._send(R.list_blocks(subject_id))

    def block_text(self, subject_id: str, label: str) -> tuple[str, str] | None:
        return self._send(R.block_text(subject_id, label))

    def create_block(self, subject_id: str, spec: BlockSpec, *, reset: bool) -> str:
        return self._send(R.create_block(subject_id, spec, reset))

    def delete_block(self, subject_id: str, label: str) -> None:
        self._send(R.delete_block(subject_id, label))

    def set_block_value(self, subject_id: str, label: str, value: str) -> None:
        self._send(R.set_block_value(subject_id, label, value))

    def block_history(self, subject_id: str, label: str) -> list[BlockVersion]:
        return self._send(R.block_history(subject_id, label))

    def restore_block(self, subject_id: str, label: str, version: int) -> str:
        return self._send(R.restore_block(subject_id, label, version))

    # messages and runs
    def add_messages(
        self, subject_id: str, messages: Sequence[MessageIn], *, archive: bool, default_blocks: Sequence[BlockSpec]
    ) -> str:
        return self._send(R.add_messages(subject_id, messages, archive, default_blocks))

    def consolidate(self, subject_id: str) -> str:
        return self._send(R.consolidate(subject_id))

    def get_messages(
        self, subject_id: str, *, limit: int | None, before: datetime | None, after: datetime | None
    ) -> list[StoredMessage]:
        return self._send(R.get_messages(subject_id, limit, before, after))

    def delete_message(self, message_id: str) -> None:
        self._send(R.delete_message(message_id))

    def get_run(self, run_id: str) -> Run | None:
        return self._send(R.get_run(run_id))

    def wait_for_run(self, run_id: str, timeout: float | None) -> Run:
        return self._drive(_wait(run_id, timeout))

    def list_runs(self, subject_id: str, status: str | None) -> list[Run]:
        return self._send(R.list_runs(subject_id, status))

    def cancel_run(self, run_id: str) -> Run:
        return self._send(R.cancel_run(run_id))

    def retry_run(self, run_id: str) -> Run:
        return self._send(R.retry_run(run_id))

    def run_messages(self, run_id: str) -> list[StoredMessage]:
        return self._send(R.run_messages(run_id))

    def get_trace(self, run_id: str) -> dict[str, Any] | None:
        return self._send(R.get_trace(run_id))

    # search
    def search(
        self,
        subject_id: str,
        query: str,
        *,
        tags: Sequence[str],
        tag_match_mode: str,
        limit: int,
        start: datetime | None,
        end: datetime | None,
    ) -> list[SearchResult]:
        return self._send(R.search(subject_id, query, tags, tag_match_mode, limit, start, end))

    # sessions
    def session_items(self, session_id: str, limit: int | None) -> list[dict[str, Any]]:
        return self._send(R.session_items(session_id, limit))

    def add_session_items(self, session_id: str, items: Sequence[dict[str, Any]], *, subject_id: str) -> None:
        self._send(R.add_session_items(session_id, items, subject_id))

    def pop_session_item(self, session_id: str) -> dict[str, Any] | None:
        return self._send(R.pop_session_item(session_id))

    def clear_session(self, session_id: str) -> None:
        self._send(R.clear_session(session_id))


class AsyncRemoteEngine:
    """The engine protocol over HTTP as coroutines (``AsyncMemory``), with an async client per event loop."""

    name = "remote"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.url, self._headers = _connection(settings)
        self._clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, httpx.AsyncClient] = (
            weakref.WeakKeyDictionary()
        )

    def info(self) -> dict[str, str]:
        return {"engine": self.name, "server": self.url}

    def _client(self) -> httpx.AsyncClient:
        loop = asyncio.get_running_loop()
        client = self._clients.get(loop)
        if client is None:
            client = httpx.AsyncClient(base_url=self.url, headers=self._headers, timeout=TIMEOUT, limits=_LIMITS)
            self._clients[loop] = client
        return client

    async def close(self) -> None:
        """Close this event loop's connections (clients of loops that have ended are dropped)."""
        client = self._clients.pop(asyncio.get_running_loop(), None)
        self._clients.clear()
        if client is not None:
            await client.aclose()

    async def _send(self, req: _Req[T]) -> T:
        attempts = _Attempts()
        while True:
            try:
                response = await self._client().request(
                    req.method, req.path, params=req.params, json=req.body, timeout=_timeout(req)
                )
            except httpx.TransportError as exc:
                await asyncio.sleep(_transport_retry(self.url, req, exc, attempts))
                continue
            value, wait = _answer(self.url, req, response, attempts)
            if wait is None:
                return cast(T, value)
            await asyncio.sleep(wait)

    async def _drive(self, op: _Op[T]) -> T:
        try:
            step = next(op)
            while True:
                if isinstance(step, _Pause):
                    await asyncio.sleep(step.seconds)
                    step = op.send(None)
                else:
                    step = op.send(await self._send(step))
        except StopIteration as stop:
            value: T = stop.value
            return value

    # subjects
    async def agent_id(self, subject_id: str) -> str | None:
        return await self._send(R.agent_id(subject_id))

    async def create_subject(self, subject_id: str, *, reset: bool, blocks: Sequence[BlockSpec]) -> str:
        return await self._send(R.create_subject(subject_id, reset, blocks))

    async def delete_subject(self, subject_id: str) -> None:
        await self._send(R.delete_subject(subject_id))

    async def list_subjects(self, *, query: str | None, offset: int, limit: int) -> list[SubjectSummary]:
        return await self._send(R.list_subjects(query, offset, limit))

    async def count_subjects(self, *, query: str | None) -> int:
        return await self._send(R.count_subjects(query))

    # blocks
    async def list_blocks(self, subject_id: str) -> list[Block]:
        return await self._send(R.list_blocks(subject_id))

    async def block_text(self, subject_id: str, label: str) -> tuple[str, str] | None:
        return await self._send(R.block_text(subject_id, label))

    async def create_block(self, subject_id: str, spec: BlockSpec, *, reset: bool) -> str:
        return await self._send(R.create_block(subject_id, spec, reset))

    async def delete_block(self, subject_id: str, label: str) -> None:
        await self._send(R.delete_block(subject_id, label))

    async def set_block_value(self, subject_id: str, label: str, value: str) -> None:
        await self._send(R.set_block_value(subject_id, label, value))

    async def block_history(self, subject_id: str, label: str) -> list[BlockVersion]:
        return await self._send(R.block_history(subject_id, label))

    async def restore_block(self, subject_id: str, label: str, version: int) -> str:
        return await self._send(R.restore_block(subject_id, label, version))

    # messages and runs
    async def add_messages(
        self, subject_id: str, messages: Sequence[MessageIn], *, archive: bool, default_blocks: Sequence[BlockSpec]
    ) -> str:
        return await self._send(R.add_messages(subject_id, messages, archive, default_blocks))

    async def consolidate(self, subject_id: str) -> str:
        return await self._send(R.consolidate(subject_id))

    async def get_messages(
        self, subject_id: str, *, limit: int | None, before: datetime | None, after: datetime | None
    ) -> list[StoredMessage]:
        return await self._send(R.get_messages(subject_id, limit, before, after))

    async def delete_message(self, message_id: str) -> None:
        await self._send(R.delete_message(message_id))

    async def get_run(self, run_id: str) -> Run | None:
        return await self._send(R.get_run(run_id))

    async def wait_for_run(self, run_id: str, timeout: float | None) -> Run:
        return await self._drive(_wait(run_id, timeout))

    async def list_runs(self, subject_id: str, status: str | None) -> list[Run]:
        return await self._send(R.list_runs(subject_id, status))

    async def cancel_run(self, run_id: str) -> Run:
        return await self._send(R.cancel_run(run_id))

    async def retry_run(self, run_id: str) -> Run:
        return await self._send(R.retry_run(run_id))

    async def run_messages(self, run_id: str) -> list[StoredMessage]:
        return await self._send(R.run_messages(run_id))

    async def get_trace(self, run_id: str) -> dict[str, Any] | None:
        return await self._send(R.get_trace(run_id))

    # search
    async def search(
        self,
        subject_id: str,
        query: str,
        *,
        tags: Sequence[str],
        tag_match_mode: str,
        limit: int,
        start: datetime | None,
        end: datetime | None,
    ) -> list[SearchResult]:
        return await self._send(R.search(subject_id, query, tags, tag_match_mode, limit, start, end))

    # sessions
    async def session_items(self, session_id: str, limit: int | None) -> list[dict[str, Any]]:
        return await self._send(R.session_items(session_id, limit))

    async def add_session_items(self, session_id: str, items: Sequence[dict[str, Any]], *, subject_id: str) -> None:
        await self._send(R.add_session_items(session_id, items, subject_id))

    async def pop_session_item(self, session_id: str) -> dict[str, Any] | None:
        return await self._send(R.pop_session_item(session_id))

    async def clear_session(self, session_id: str) -> None:
        await self._send(R.clear_session(session_id))
