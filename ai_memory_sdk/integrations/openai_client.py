"""``Memory.wrap(client)``: an OpenAI client whose calls carry a subject's memory and feed it.

``chat.completions.create`` (and ``parse``) and ``responses.create`` (and
``parse``) of the wrapped client:

1. read the subject's context (its blocks, plus ``search_limit`` archived user
   messages matching the last user message) and add it to the system message
   (Chat Completions: the first system or developer message, else a new one in
   front; Responses API: ``instructions``);
2. call the real client with the caller's arguments otherwise untouched; its
   errors are raised unchanged, its result returned as is;
3. queue the new turn (the request's messages after the last assistant one,
   and the reply, tool calls included) with ``add_messages``, in the
   background: the caller does not wait for the write, and ``close()`` of the
   memory waits for the writes under way (as mem0's client proxy, the turn is
   stored right after the reply).

The subject is the call's ``user`` argument, else the one the wrapper is
bound to. Memory fails open: a read that fails or takes longer than
``timeout`` seconds is left behind and the call goes on without it; a write
that fails is reported and dropped; the first failure of each kind is one
WARNING. Streams pass every chunk through as it arrives; what was received
is queued when the stream ends, is closed, or the consumer stops iterating.

The wrapper is a proxy: every other attribute is the client's own, and it
reports the client's class as its ``__class__``, so ``isinstance(wrapped,
openai.OpenAI)`` holds (``type(wrapped)`` is the proxy). ``with_options`` and
``copy`` return wrapped clients. Calls made through ``with_raw_response``,
``with_streaming_response`` or the ``.stream()`` helpers go to the client
without memory.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import openai

from .. import _ops as ops
from .. import _validation as check
from .. import formatting
from ..memory import AsyncMemory, Memory
from ._convert import as_dict, chat_turn, parts_text, response_turn
from ._failopen import FailOpen

log = logging.getLogger(__name__)
ClientT = TypeVar("ClientT")
Messages = list[dict[str, Any]]
_POOL_THREADS = 4


# -- the two APIs -----------------------------------------------------------------------------------


@dataclass
class _Request:
    """A call's arguments with its input materialised (an iterable can be read once), and its search query."""

    kwargs: dict[str, Any]
    given: list[Any]  # the caller's messages or input items, as given
    items: list[dict[str, Any]]  # the same as dicts
    query: str | None


class _Accumulator(Protocol):
    def add(self, event: Any) -> None: ...
    def reply(self) -> Any: ...


class _Api(Protocol):
    def request(self, kwargs: dict[str, Any]) -> _Request | None: ...
    def with_context(self, request: _Request, context: str) -> dict[str, Any]: ...
    def reply(self, result: Any) -> Any: ...
    def turn(self, request: _Request, reply: Any) -> Messages: ...
    def accumulator(self) -> _Accumulator: ...


def _last_user_text(items: Sequence[Mapping[str, Any]]) -> str | None:
    for item in reversed(items):
        if item.get("role") == "user":
            return parts_text(item.get("content")) or None
    return None


def _append_text(content: Any, context: str, part_type: str) -> Any:
    """A system message's content with the context appended (a string, or one more text part)."""
    if content is None or isinstance(content, str):
        return formatting.with_context(content or "", context)
    return [*content, {"type": part_type, "text": context}]


class _Chat:
    """Chat Completions: context into the system message; the reply is ``choices[0].message``."""

    def request(self, kwargs: dict[str, Any]) -> _Request | None:
        if "messages" not in kwargs:
            return None
        given = list(kwargs["messages"])
        items = [as_dict(m) for m in given]
        return _Request({**kwargs, "messages": given}, given, items, _last_user_text(items))

    def with_context(self, request: _Request, context: str) -> dict[str, Any]:
        messages = list(request.given)
        for i, m in enumerate(request.items):
            if m.get("role") in ("system", "developer"):
                messages[i] = {**m, "content": _append_text(m.get("content"), context, "text")}
                break
        else:
            messages.insert(0, {"role": "system", "content": context})
        return {**request.kwargs, "messages": messages}

    def reply(self, result: Any) -> Any:
        choices = getattr(result, "choices", None)
        return as_dict(choices[0].message) if choices else None

    def turn(self, request: _Request, reply: Any) -> Messages:
        return chat_turn(request.items, reply)

    def accumulator(self) -> _Accumulator:
        return _ChatStream()


class _Responses:
    """Responses API: context into ``instructions``; the reply is the response's output items."""

    def request(self, kwargs: dict[str, Any]) -> _Request:
        raw = kwargs.get("input")
        if isinstance(raw, str):
            return _Request(dict(kwargs), [raw], [{"role": "user", "content": raw}], raw)
        if not isinstance(raw, Iterable) or isinstance(raw, (bytes, Mapping)):  # none (a stored prompt), or odd
            return _Request(dict(kwargs), [], [], None)
        given = list(raw)
        items = [as_dict(i) for i in given]
        return _Request({**kwargs, "input": given}, given, items, _last_user_text(items))

    def with_context(self, request: _Request, context: str) -> dict[str, Any]:
        base = request.kwargs.get("instructions")
        return {
            **request.kwargs,
            "instructions": formatting.with_context(base if isinstance(base, str) else "", context),
        }

    def reply(self, result: Any) -> Any:
        return [as_dict(item) for item in getattr(result, "output", None) or []]

    def turn(self, request: _Request, reply: Any) -> Messages:
        given = request.kwargs.get("input")
        return response_turn(given if isinstance(given, str) else request.items, reply or [])

    def accumulator(self) -> _Accumulator:
        return _ResponsesStream()


class _ChatStream:
    """Assembles ``choices[0]`` of a streamed chat completion from its chunks (text, refusal, tool calls)."""

    def __init__(self) -> None:
        self._text: list[str] = []
        self._refusal: list[str] = []
        self._calls: dict[int, dict[str, Any]] = {}

    def add(self, event: Any) -> None:
        for choice in getattr(event, "choices", None) or []:
            delta = getattr(choice, "delta", None)
            if getattr(choice, "index", 0) != 0 or delta is None:
                continue
            if getattr(delta, "content", None):
                self._text.append(delta.content)
            if getattr(delta, "refusal", None):
                self._refusal.append(delta.refusal)
            for call in getattr(delta, "tool_calls", None) or []:
                entry = self._calls.setdefault(
                    call.index, {"id": None, "type": "function", "function": {"name": "", "arguments": ""}}
                )
                entry["id"] = call.id or entry["id"]
                fn = call.function
                if fn is not None:
                    entry["function"]["name"] += fn.name or ""
                    entry["function"]["arguments"] += fn.arguments or ""

    def reply(self) -> Any:
        return {
            "role": "assistant",
            "content": "".join(self._text) or None,
            "refusal": "".join(self._refusal) or None,
            "tool_calls": [self._calls[i] for i in sorted(self._calls)],
        }


class _ResponsesStream:
    """Assembles a streamed response's output items: the final response, else the items done and text so far."""

    def __init__(self) -> None:
        self._final: list[dict[str, Any]] | None = None
        self._started: dict[int, dict[str, Any]] = {}
        self._done: dict[int, dict[str, Any]] = {}
        self._text: dict[int, list[str]] = {}

    def add(self, event: Any) -> None:
        kind = getattr(event, "type", None)
        if kind in ("response.completed", "response.incomplete", "response.failed"):
            self._final = [as_dict(item) for item in getattr(event.response, "output", None) or []]
        elif kind == "response.output_item.added":
            self._started[event.output_index] = as_dict(event.item)
        elif kind == "response.output_item.done":
            self._done[event.output_index] = as_dict(event.item)
        elif kind == "response.output_text.delta":
            self._text.setdefault(event.output_index, []).append(event.delta)

    def reply(self) -> Any:
        if self._final is not None:
            return self._final
        out = []
        for i in sorted(self._started.keys() | self._done.keys()):
            if i in self._done:
                out.append(self._done[i])
            elif self._started[i].get("type") == "message" and self._text.get(i):
                text = "".join(self._text[i])
                out.append({"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": text}]})
        return out


_CHAT, _RESPONSES = _Chat(), _Responses()


# -- what every proxy of one wrapped client shares ---------------------------------------------------


class _Binding:
    """The memory, the bound subject, the limits, the fail-open log and the threads that run memory calls."""

    def __init__(
        self, memory: Memory | AsyncMemory, is_async: bool, subject_id: str | None, search_limit: int, timeout: float
    ) -> None:
        self.memory = memory
        self.is_async = is_async  # the client's kind (an AsyncOpenAI's calls are coroutines)
        self.subject_id = subject_id
        self.search_limit = search_limit
        self.timeout = timeout
        self.failures = FailOpen(log, "ai_memory_sdk wrap")
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._lock = threading.Lock()

    def _threads(self) -> concurrent.futures.ThreadPoolExecutor:
        """A few threads per wrapped client: a stalled store holds them, never the caller."""
        with self._lock:
            if self._pool is None:
                self._pool = concurrent.futures.ThreadPoolExecutor(_POOL_THREADS, thread_name_prefix="ai-memory-wrap")
            return self._pool

    def subject(self, kwargs: Mapping[str, Any]) -> str | None:
        user = kwargs.get("user")
        if isinstance(user, str) and user:
            return user
        if self.subject_id is None:
            self.failures.failed(
                "finding the subject",
                ValueError("the call has no user= argument and the wrapper no subject_id; pass one of them"),
            )
        return self.subject_id

    def _watch(self, doing: str, future: concurrent.futures.Future[Any] | asyncio.Future[Any]) -> None:
        """Report a failure that comes after the caller stopped waiting."""

        def done(f: Any) -> None:
            if not f.cancelled() and f.exception() is not None:
                self.failures.failed(doing, f.exception())

        future.add_done_callback(done)

    def prepare(self, api: _Api, kwargs: dict[str, Any]) -> tuple[str, _Request] | None:
        """The call's subject and request, or None: the call goes to the client as it is."""
        subject = self.subject(kwargs)
        if subject is None:
            return None
        try:
            request = api.request(kwargs)
        except Exception as exc:
            self.failures.failed("reading the request", exc)
            return None
        return (subject, request) if request is not None else None

    def read_op(self, subject: str, request: _Request) -> ops.Op[str]:
        return ops.prompt_context(subject, request.query, self.search_limit)

    def write(self, subject: str, api: _Api, request: _Request, reply: Callable[[], Any]) -> None:
        """Queue the turn in the background (never waited for; the memory's ``close()`` waits for it)."""
        doing = "queueing the turn"
        try:
            messages = api.turn(request, reply())
            if not messages:
                return
            op = ops.add_messages(None, subject, messages, self.search_limit <= 0)
            memory = self.memory
            if isinstance(memory, Memory):
                future = self._threads().submit(memory._run, op)
                memory._track(future)
                self._watch(doing, future)
            else:  # an AsyncMemory runs on its event loop (RuntimeError when there is none)
                task = asyncio.get_running_loop().create_task(memory._run(op))
                memory._track(task)
                self._watch(doing, task)
        except Exception as exc:
            self.failures.failed(doing, exc)

    # -- sync clients (a Memory; its calls run in this binding's threads)

    def _read_sync(self, op: ops.Op[str]) -> str | None:
        memory = self.memory
        assert isinstance(memory, Memory)
        future = self._threads().submit(memory._run, op)
        try:
            return future.result(timeout=self.timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()  # not started yet: dropped; under way: it ends on its own, unread
            self.failures.failed("reading memory", None, timeout=self.timeout)
        except Exception as exc:
            self.failures.failed("reading memory", exc)
        return None

    def call_sync(self, api: _Api, create: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        prepared = self.prepare(api, kwargs)
        if prepared is None:
            return create(*args, **kwargs)
        subject, request = prepared
        context = self._read_sync(self.read_op(subject, request))
        result = create(*args, **(api.with_context(request, context) if context else request.kwargs))
        if isinstance(result, openai.Stream):
            return _Stream(result, self, api, subject, request)
        self.write(subject, api, request, lambda: api.reply(result))
        return result

    # -- async clients (an AsyncMemory, or a Memory through this binding's threads)

    async def _read_async(self, op: ops.Op[str]) -> str | None:
        memory = self.memory
        try:
            if isinstance(memory, AsyncMemory):
                context: str = await asyncio.wait_for(memory._run(op), self.timeout)
            else:
                context = await asyncio.wait_for(
                    asyncio.wrap_future(self._threads().submit(memory._run, op)), self.timeout
                )
            return context
        except asyncio.TimeoutError:
            self.failures.failed("reading memory", None, timeout=self.timeout)
        except Exception as exc:
            self.failures.failed("reading memory", exc)
        return None

    async def call_async(
        self, api: _Api, create: Callable[..., Coroutine[Any, Any, Any]], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        prepared = self.prepare(api, kwargs)
        if prepared is None:
            return await create(*args, **kwargs)
        subject, request = prepared
        context = await self._read_async(self.read_op(subject, request))
        result = await create(*args, **(api.with_context(request, context) if context else request.kwargs))
        if isinstance(result, openai.AsyncStream):
            return _AsyncStream(result, self, api, subject, request)
        self.write(subject, api, request, lambda: api.reply(result))
        return result


# -- proxies ----------------------------------------------------------------------------------------


class _Proxy:
    """Forwards every attribute to the wrapped object and reports its class, so ``isinstance`` checks pass."""

    __slots__ = ("_binding", "_target")
    _binding: _Binding
    _target: Any

    def __init__(self, target: Any, binding: _Binding) -> None:
        object.__setattr__(self, "_target", target)
        object.__setattr__(self, "_binding", binding)

    def __getattr__(self, name: str) -> Any:
        return getattr(object.__getattribute__(self, "_target"), name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._target, name, value)

    def __delattr__(self, name: str) -> None:
        delattr(self._target, name)

    @property  # type: ignore[misc]
    def __class__(self) -> type:  # deliberate: isinstance() sees the wrapped class
        return type(object.__getattribute__(self, "_target"))

    def __dir__(self) -> list[str]:
        return dir(self._target)

    def __repr__(self) -> str:
        return f"<memory-wrapped {self._target!r}>"


class _Client(_Proxy):
    __slots__ = ()

    @property
    def chat(self) -> Any:
        return _ChatResource(self._target.chat, self._binding)

    @property
    def responses(self) -> Any:
        calls = _AsyncCalls if self._binding.is_async else _Calls
        return calls(self._target.responses, self._binding, _RESPONSES)

    def with_options(self, *args: Any, **kwargs: Any) -> Any:
        return _Client(self._target.with_options(*args, **kwargs), self._binding)

    def copy(self, *args: Any, **kwargs: Any) -> Any:
        return _Client(self._target.copy(*args, **kwargs), self._binding)


class _ChatResource(_Proxy):
    __slots__ = ()

    @property
    def completions(self) -> Any:
        calls = _AsyncCalls if self._binding.is_async else _Calls
        return calls(self._target.completions, self._binding, _CHAT)


class _Calls(_Proxy):
    """``create`` and ``parse`` of a sync resource, through memory."""

    __slots__ = ("_api",)
    _api: _Api

    def __init__(self, target: Any, binding: _Binding, api: _Api) -> None:
        super().__init__(target, binding)
        object.__setattr__(self, "_api", api)

    def create(self, *args: Any, **kwargs: Any) -> Any:
        return self._binding.call_sync(self._api, self._target.create, args, kwargs)

    def parse(self, *args: Any, **kwargs: Any) -> Any:
        return self._binding.call_sync(self._api, self._target.parse, args, kwargs)


class _AsyncCalls(_Calls):
    """``create`` and ``parse`` of an async resource, through memory."""

    __slots__ = ()

    async def create(self, *args: Any, **kwargs: Any) -> Any:
        return await self._binding.call_async(self._api, self._target.create, args, kwargs)

    async def parse(self, *args: Any, **kwargs: Any) -> Any:
        return await self._binding.call_async(self._api, self._target.parse, args, kwargs)


class _Stream(_Proxy):
    """A sync stream: chunks pass through as they come; the turn is queued once, when reading ends."""

    __slots__ = ("_acc", "_api", "_done", "_request", "_subject")
    _acc: _Accumulator
    _api: _Api
    _done: bool
    _request: _Request
    _subject: str

    def __init__(self, target: Any, binding: _Binding, api: _Api, subject: str, request: _Request) -> None:
        super().__init__(target, binding)
        for name, value in (("_api", api), ("_subject", subject), ("_request", request)):
            object.__setattr__(self, name, value)
        object.__setattr__(self, "_acc", api.accumulator())
        object.__setattr__(self, "_done", False)

    def _record(self, event: Any) -> None:
        try:
            self._acc.add(event)
        except Exception as exc:  # an event of a shape not foreseen: the caller still gets it
            self._binding.failures.failed("reading the stream", exc)

    def _finish(self) -> None:
        if not self._done:
            object.__setattr__(self, "_done", True)
            self._binding.write(self._subject, self._api, self._request, self._acc.reply)

    def __iter__(self) -> Iterator[Any]:
        try:
            for event in self._target:
                self._record(event)
                yield event
        finally:
            self._finish()

    def __next__(self) -> Any:
        try:
            event = next(self._target)
        except StopIteration:
            self._finish()
            raise
        self._record(event)
        return event

    def close(self) -> None:
        try:
            self._target.close()
        finally:
            self._finish()

    def __enter__(self) -> _Stream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:  # dropped unfinished, never closed: what was read is still queued
        try:
            self._finish()
        except AttributeError:  # never fully built
            pass


class _AsyncStream(_Stream):
    """An async stream: chunks pass through as they come; the turn is queued once, when reading ends."""

    __slots__ = ()

    def __iter__(self) -> Iterator[Any]:
        raise TypeError("an async stream is read with 'async for'")

    def __next__(self) -> Any:
        raise TypeError("an async stream is read with 'async for'")

    async def __aiter__(self) -> AsyncIterator[Any]:
        try:
            async for event in self._target:
                self._record(event)
                yield event
        finally:
            self._finish()

    async def __anext__(self) -> Any:
        try:
            event = await self._target.__anext__()
        except StopAsyncIteration:
            self._finish()
            raise
        self._record(event)
        return event

    async def close(self) -> None:  # type: ignore[override]
        try:
            await self._target.close()
        finally:
            self._finish()

    async def __aenter__(self) -> _AsyncStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


# -- the entry point --------------------------------------------------------------------------------


def wrap(
    memory: Memory | AsyncMemory, client: ClientT, *, subject_id: str | None, search_limit: int, timeout: float
) -> ClientT:
    """Build the wrapper (``Memory.wrap`` / ``AsyncMemory.wrap``); the arguments are checked here."""
    if isinstance(client, _Proxy):
        raise ValueError("this client is already wrapped by a Memory; wrap the original client")
    if not isinstance(client, (openai.OpenAI, openai.AsyncOpenAI)):
        raise TypeError(f"wrap() takes an openai.OpenAI or openai.AsyncOpenAI client, got {type(client).__name__}")
    if isinstance(memory, AsyncMemory) and not isinstance(client, openai.AsyncOpenAI):
        raise TypeError("AsyncMemory.wrap() takes an openai.AsyncOpenAI client; wrap an openai.OpenAI with a Memory")
    sid = subject_id if subject_id is not None else memory.subject_id
    if sid is not None:
        sid = check.subject_id(sid)
    if isinstance(search_limit, bool) or not isinstance(search_limit, int) or search_limit < 0:
        raise ValueError(f"search_limit must be a non-negative integer, got {search_limit!r}")
    seconds = check.timeout(timeout)
    if seconds is None:
        raise ValueError("timeout must be a number of seconds (memory must never hold a call up indefinitely)")
    binding = _Binding(memory, isinstance(client, openai.AsyncOpenAI), sid, search_limit, seconds)
    wrapped: ClientT = _Client(client, binding)  # type: ignore[assignment]
    return wrapped
