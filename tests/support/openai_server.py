"""A scripted OpenAI-compatible HTTP server that stands in for a real LLM provider.

Tests and benchmarks point the real ``openai`` client (or a Letta server) at it,
so the whole HTTP path is exercised without network or keys. Standard library
only, so any virtualenv can import it by path.

Usage::

    with ScriptedOpenAI() as srv:
        srv.script(reply(tool_calls=[("memory_insert", {"label": "human", "new_str": "Bob"})]),
                   fail(429, headers={"Retry-After": "0"}), reply("done"))
        client = openai.OpenAI(base_url=srv.base_url, api_key="x")

The Responses API (``POST /v1/responses``, what the OpenAI Agents SDK calls by
default) answers from its own queue (``script_responses``) with the same
steps: a ``Reply`` becomes output items (a reasoning item, function calls, an
assistant message), streamed as Responses events when asked.
"""

from __future__ import annotations

import base64
import itertools
import json
import logging
import math
import random
import re
import socket
import struct
import sys
import threading
import time
import zlib
from collections import Counter, deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Union

_log = logging.getLogger(__name__)

DEFAULT_MODELS = ("gpt-4o-mini", "gpt-4.1", "gpt-4.1-mini", "text-embedding-3-small")
_WORD = re.compile(r"\w+")
_ERROR_CODES = {
    400: ("invalid_request_error", None),
    401: ("invalid_request_error", "invalid_api_key"),
    404: ("invalid_request_error", "not_found"),
    429: ("requests", "rate_limit_exceeded"),
    500: ("server_error", None),
    503: ("server_error", "service_unavailable"),
}


# ----------------------------------------------------------------------------- steps
@dataclass(frozen=True)
class Reply:
    """A successful chat completion (text and/or tool calls)."""

    content: str | None = None
    tool_calls: tuple = ()  # ((name, dict | raw str), ...)
    usage: dict | None = None
    delay: float = 0.0
    finish_reason: str | None = None
    reasoning: str | None = None  # Responses API only: a reasoning item with this summary comes first
    chunk_delay: float = 0.0  # seconds between streamed events (a stream that takes time to arrive)


@dataclass(frozen=True)
class Fail:
    """An HTTP error with an OpenAI-style error body unless ``body`` is given."""

    status: int
    body: Any = None
    headers: dict | None = None


@dataclass(frozen=True)
class Drop:
    """Close the connection without sending any response."""


@dataclass(frozen=True)
class Stall:
    """Sleep, then answer with ``then`` or the next step (queue/responder/default)."""

    seconds: float
    then: Any = None


@dataclass(frozen=True)
class InvalidJson:
    """Status 200 whose body is not JSON."""

    body: bytes = b'{"id": "chatcmpl-broken", "choices": [ this is not json'


Step = Union[Reply, Fail, Drop, Stall, InvalidJson]  # noqa: UP007 (a runtime alias: isinstance() takes it)


def reply(
    content: str | None = None,
    tool_calls: Sequence[Any] = (),
    usage: dict | None = None,
    delay: float = 0.0,
    finish_reason: str | None = None,
    *,
    reasoning: str | None = None,
    chunk_delay: float = 0.0,
) -> Reply:
    """Build a reply; tool calls are ``(name, args)`` pairs, args a dict or a raw (maybe malformed) string."""
    calls = tuple((c["name"], c.get("arguments", {})) if isinstance(c, dict) else tuple(c) for c in tool_calls)
    return Reply(content, calls, usage, delay, finish_reason, reasoning, chunk_delay)


fail, drop, stall, invalid_json = Fail, Drop, Stall, InvalidJson  # the other step builders
_FAULT_NAMES: dict[str, Step] = {  # fault_rate() kinds by name; 429 asks the openai client for a 10 ms wait
    "429": Fail(429, headers={"Retry-After": "0", "retry-after-ms": "10"}),
    "500": Fail(500),
    "502": Fail(502),
    "503": Fail(503),
    "drop": Drop(),
    "invalid_json": InvalidJson(),
    "stall": Stall(1.0),
}


@dataclass
class RecordedRequest:
    """One request as received; header names are lower-cased."""

    method: str
    path: str
    headers: dict
    body: bytes
    json: Any
    time: float = field(default_factory=time.time)


# ----------------------------------------------------------------------------- embeddings
def embed_text(text: str, dim: int = 1536) -> list[float]:
    """Deterministic L2-normalised hashed bag of lowercased words: shared words mean higher cosine."""
    vec = [0.0] * dim
    for tok in _WORD.findall(text.lower()) or [text]:
        vec[zlib.crc32(tok.encode("utf-8")) % dim] += 1.0
    norm = math.sqrt(sum(x * x for x in vec)) or 1.0
    return [x / norm for x in vec]


def _error_body(status: int, message: str) -> dict:
    etype, code = _ERROR_CODES.get(status, ("server_error" if status >= 500 else "invalid_request_error", None))
    return {"error": {"message": message, "type": etype, "param": None, "code": code}}


def _pieces(text: str, size: int) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)] or [""]


# ----------------------------------------------------------------------------- server
class ScriptedOpenAI:
    """Thread-safe scripted server: FIFO of steps, then ``responder``, then a default reply."""

    def __init__(
        self,
        *,
        latency: float = 0.0,
        embedding_dim: int = 1536,
        models: Sequence[str] = DEFAULT_MODELS,
        strict: bool = False,
        api_key: str | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.latency = latency
        self.embedding_dim = embedding_dim
        self.models = list(models)
        self.strict = strict  # unscripted chat calls answer 500 so tests notice them
        self.api_key = api_key  # when set, other bearer tokens get 401
        self.responder: Callable[[dict], Step | None] | None = None
        self.counters: Counter = Counter()
        self._host, self._want_port = host, port
        self._cond = threading.Condition()
        self._chat: deque = deque()
        self._responses: deque = deque()
        self._embed: deque = deque()
        self._requests: list[RecordedRequest] = []
        self._fault: tuple[float, random.Random, list[Step]] | None = None
        self._ids = itertools.count(1)
        self._conns: set = set()
        self._stopping = threading.Event()
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None
        self.port, self.base_url = 0, ""

    # -- lifecycle
    def start(self) -> ScriptedOpenAI:
        self._stopping.clear()
        self._httpd = httpd = _Server((self._host, self._want_port), _Handler)
        httpd.owner = self
        self.port = httpd.server_address[1]
        self.base_url = f"http://{self._host}:{self.port}/v1"
        self._thread = threading.Thread(
            target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, name=f"scripted-openai-{self.port}", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and cut open keep-alive connections so clients see a dead server."""
        if self._httpd is None:
            return
        self._stopping.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        with self._cond:
            conns = list(self._conns)
        for conn in conns:
            _shutdown(conn)
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._httpd = self._thread = None

    def __enter__(self) -> ScriptedOpenAI:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- scripting
    def script(self, *steps: Step) -> ScriptedOpenAI:
        """Queue steps answered, in order, by the next chat calls."""
        with self._cond:
            self._chat.extend(steps)
        return self

    def script_responses(self, *steps: Step) -> ScriptedOpenAI:
        """Queue steps answered, in order, by the next Responses API calls (``POST /v1/responses``)."""
        with self._cond:
            self._responses.extend(steps)
        return self

    def script_embeddings(self, *steps: Step) -> ScriptedOpenAI:
        """Queue faults for the next embedding calls (a ``Reply`` step means a normal answer)."""
        with self._cond:
            self._embed.extend(steps)
        return self

    def fault_rate(self, p: float, seed: int = 0, kinds: Sequence[str | Step] | None = None) -> None:
        """Make a fraction ``p`` of chat calls fail before the script is consulted; p=0 turns it off."""
        names = kinds or ("429", "500", "503", "drop")
        steps = [_FAULT_NAMES[k] if isinstance(k, str) else k for k in names]
        with self._cond:
            self._fault = (p, random.Random(seed), steps) if p > 0 else None

    @property
    def remaining(self) -> int:
        """Chat steps still queued (assert 0 at the end of a test that scripted exactly)."""
        with self._cond:
            return len(self._chat)

    # -- recording
    @property
    def requests(self) -> list[RecordedRequest]:
        with self._cond:
            return list(self._requests)

    @property
    def chat_requests(self) -> list[RecordedRequest]:
        return [r for r in self.requests if r.path.endswith("/chat/completions")]

    @property
    def responses_requests(self) -> list[RecordedRequest]:
        return [r for r in self.requests if r.path.endswith("/responses")]

    @property
    def embedding_requests(self) -> list[RecordedRequest]:
        return [r for r in self.requests if r.path.endswith("/embeddings")]

    def clear(self) -> None:
        """Forget recorded requests, counters, queued steps and faults (not the responder)."""
        with self._cond:
            self._requests.clear()
            self.counters.clear()
            self._chat.clear()
            self._responses.clear()
            self._embed.clear()
            self._fault = None

    def wait_for(self, n: int, counter: str = "chat", timeout: float = 5.0) -> bool:
        """Block until ``counters[counter] >= n`` (for background agents); False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: self.counters[counter] >= n, timeout)

    def embed(self, text: str, dim: int | None = None) -> list[float]:
        return embed_text(text, dim or self.embedding_dim)

    # -- internals used by the handler
    def _count(self, *keys: str) -> None:
        with self._cond:
            self.counters.update(keys)
            self._cond.notify_all()

    def _next_chat_step(self, req: dict, faults: bool = True, queue: deque | None = None) -> Step:
        """Fault, else the queue (chat's unless given), else the responder, else the default reply."""
        queue = self._chat if queue is None else queue
        with self._cond:
            if faults and self._fault is not None:
                p, rng, kinds = self._fault
                if rng.random() < p:
                    self.counters["faults"] += 1
                    return rng.choice(kinds)
            if queue:
                return queue.popleft()
        if self.responder is not None:
            try:
                step = self.responder(req)
            except Exception as exc:  # a broken responder must show up in the test, not hang the client
                _log.exception("ScriptedOpenAI responder failed")
                return Fail(500, _error_body(500, f"ScriptedOpenAI responder raised {exc!r}"))
            if step is not None:
                return reply(step) if isinstance(step, str) else step
        if self.strict:
            self._count("unscripted")
            return Fail(500, _error_body(500, "ScriptedOpenAI: unscripted chat call"))
        return Reply("ok")

    def _handle(self, h: _Handler, method: str) -> None:
        path = h.path.split("?", 1)[0].rstrip("/")
        body = h.rfile.read(int(h.headers.get("Content-Length") or 0))
        try:
            data = json.loads(body) if body else None
        except ValueError:
            data = None
        rec = RecordedRequest(method, path, {k.lower(): v for k, v in h.headers.items()}, body, data)
        with self._cond:
            self._requests.append(rec)
            self.counters["requests"] += 1
            self._cond.notify_all()
        if self.api_key is not None and h.headers.get("Authorization") != f"Bearer {self.api_key}":
            return _send_json(h, 401, _error_body(401, "Incorrect API key provided."))
        if method == "GET" and path.endswith("/models"):
            self._count("models")
            return _send_json(h, 200, {"object": "list", "data": [self._model(m) for m in self.models]})
        if method == "GET" and "/models/" in path:
            name = path.split("/models/", 1)[1]
            if name in self.models:
                return _send_json(h, 200, self._model(name))
            return _send_json(h, 404, _error_body(404, f"The model '{name}' does not exist"))
        if method == "POST" and path.endswith(("/chat/completions", "/embeddings", "/responses")):
            if not isinstance(data, dict):
                return _send_json(h, 400, _error_body(400, "We could not parse the JSON body of your request."))
            if path.endswith("/embeddings"):
                return self._embeddings(h, data)
            if path.endswith("/responses"):
                return self._response(h, data, len(body))
            return self._chat_completion(h, data, len(body))
        return _send_json(h, 404, _error_body(404, f"Unknown request URL: {method} {path}"))

    def _model(self, name: str) -> dict:
        return {"id": name, "object": "model", "created": 1700000000, "owned_by": "scripted"}

    def _fault_step(self, h: _Handler, step: Step | None) -> bool:
        """Carry out a non-reply step; True when the request is done (None: close quietly)."""
        if step is None:
            h.close_connection = True
            return True
        if isinstance(step, Fail):
            self._count("fails")
            body = step.body if step.body is not None else _error_body(step.status, f"Scripted error {step.status}")
            raw = (
                body
                if isinstance(body, bytes)
                else body.encode()
                if isinstance(body, str)
                else json.dumps(body).encode()
            )
            _send_raw(h, step.status, raw, headers=step.headers)
            return True
        if isinstance(step, Drop):
            self._count("drops")
            h.close_connection = True
            _shutdown(h.connection)
            return True
        if isinstance(step, InvalidJson):
            self._count("invalid_json")
            _send_raw(h, 200, step.body)
            return True
        return False

    def _resolve(self, h: _Handler, step: Step, nxt: Callable[[], Step]) -> Step | None:
        """Follow stalls; None when the server stopped or the client left meanwhile (its step stays queued)."""
        while isinstance(step, Stall):
            self._count("stalls")
            if self._stopping.wait(step.seconds) or _client_gone(h.connection):
                return None
            step = step.then if step.then is not None else nxt()
        return step

    def _chat_completion(self, h: _Handler, req: dict, body_len: int) -> None:
        self._count("chat")
        step = self._resolve(h, self._next_chat_step(req), lambda: self._next_chat_step(req, faults=False))
        if self._fault_step(h, step):
            return
        assert isinstance(step, Reply), f"not a step: {step!r}"
        if self.latency + step.delay > 0 and self._stopping.wait(self.latency + step.delay):
            self._fault_step(h, None)
            return
        self._count("replies")
        completion = self._completion(req, step, body_len)
        if req.get("stream"):
            self._count("chat_stream")
            include_usage = bool((req.get("stream_options") or {}).get("include_usage"))
            return _send_sse(h, _stream_chunks(completion, include_usage), delay=step.chunk_delay, stop=self._stopping)
        _send_json(h, 200, completion)

    def _response(self, h: _Handler, req: dict, body_len: int) -> None:
        """``POST /v1/responses``: the same steps as chat, answered as a Responses API object or event stream."""
        self._count("responses")
        step = self._resolve(
            h,
            self._next_chat_step(req, queue=self._responses),
            lambda: self._next_chat_step(req, faults=False, queue=self._responses),
        )
        if self._fault_step(h, step):
            return
        assert isinstance(step, Reply), f"not a step: {step!r}"
        if self.latency + step.delay > 0 and self._stopping.wait(self.latency + step.delay):
            self._fault_step(h, None)
            return
        self._count("replies")
        response = self._response_object(req, step, body_len)
        if req.get("stream"):
            self._count("responses_stream")
            return _send_sse(h, _response_events(response), delay=step.chunk_delay, stop=self._stopping, named=True)
        _send_json(h, 200, response)

    def _response_object(self, req: dict, step: Reply, body_len: int) -> dict:
        output: list[dict] = []
        if step.reasoning is not None:
            output.append(
                {
                    "type": "reasoning",
                    "id": f"rs_{next(self._ids):08d}",
                    "summary": [{"type": "summary_text", "text": step.reasoning}],
                }
            )
        for name, args in step.tool_calls:
            output.append(
                {
                    "type": "function_call",
                    "id": f"fc_{next(self._ids):08d}",
                    "call_id": f"call_{next(self._ids):06d}",
                    "name": name,
                    "arguments": args if isinstance(args, str) else json.dumps(args),
                    "status": "completed",
                }
            )
        if step.content is not None:
            output.append(
                {
                    "type": "message",
                    "id": f"msg_{next(self._ids):08d}",
                    "role": "assistant",
                    "status": "completed",
                    "content": [{"type": "output_text", "text": step.content, "annotations": [], "logprobs": []}],
                }
            )
        out_len = len(json.dumps(output))
        usage = {
            "input_tokens": math.ceil(body_len / 4),
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": max(1, math.ceil(out_len / 4)),
            "output_tokens_details": {"reasoning_tokens": 0},
        }
        usage.update(step.usage or {})
        usage.setdefault("total_tokens", usage["input_tokens"] + usage["output_tokens"])
        return {
            "id": f"resp_{next(self._ids):08d}",
            "object": "response",
            "created_at": int(time.time()),
            "status": "completed",
            "error": None,
            "incomplete_details": None,
            "instructions": req.get("instructions"),
            "max_output_tokens": req.get("max_output_tokens"),
            "model": req.get("model") or "gpt-4o-mini",
            "output": output,
            "parallel_tool_calls": req.get("parallel_tool_calls", True),
            "previous_response_id": req.get("previous_response_id"),
            "reasoning": {"effort": None, "summary": None},
            "store": req.get("store", True),
            "temperature": req.get("temperature", 1.0),
            "text": {"format": {"type": "text"}},
            "tool_choice": req.get("tool_choice", "auto"),
            "tools": req.get("tools", []),
            "top_p": req.get("top_p", 1.0),
            "truncation": "disabled",
            "usage": usage,
            "user": req.get("user"),
            "metadata": req.get("metadata") or {},
        }

    def _completion(self, req: dict, step: Reply, body_len: int) -> dict:
        calls = []
        for name, args in step.tool_calls:
            arguments = args if isinstance(args, str) else json.dumps(args)
            calls.append(
                {
                    "id": f"call_{next(self._ids):06d}",
                    "type": "function",
                    "function": {"name": name, "arguments": arguments},
                }
            )
        message: dict = {"role": "assistant", "content": step.content, "refusal": None}
        if calls:
            message["tool_calls"] = calls
        out_len = len(step.content or "") + sum(
            len(c["function"]["name"]) + len(c["function"]["arguments"]) for c in calls
        )
        usage = {"prompt_tokens": math.ceil(body_len / 4), "completion_tokens": max(1, math.ceil(out_len / 4))}
        usage.update(step.usage or {})
        usage.setdefault("total_tokens", usage["prompt_tokens"] + usage["completion_tokens"])
        return {
            "id": f"chatcmpl-{next(self._ids):08d}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": req.get("model") or "gpt-4o-mini",
            "system_fingerprint": "fp_scripted",
            "choices": [
                {
                    "index": 0,
                    "message": message,
                    "logprobs": None,
                    "finish_reason": step.finish_reason or ("tool_calls" if calls else "stop"),
                }
            ],
            "usage": usage,
        }

    def _embeddings(self, h: _Handler, req: dict) -> None:
        self._count("embeddings")
        with self._cond:
            step: Step | None = self._embed.popleft() if self._embed else None
        if step is not None and self._fault_step(h, self._resolve(h, step, lambda: Reply())):
            return
        raw = req.get("input")
        if isinstance(raw, str) or (isinstance(raw, list) and raw and isinstance(raw[0], int)):
            raw = [raw]
        if not isinstance(raw, list) or not raw or any(x in ("", []) for x in raw):
            return _send_json(
                h,
                400,
                _error_body(
                    400, "'$.input' is invalid: it must be a non-empty string or a non-empty array of non-empty inputs."
                ),
            )
        texts = [x if isinstance(x, str) else " ".join(f"t{t}" for t in x) for x in raw]
        dim = req.get("dimensions") or self.embedding_dim
        if not isinstance(dim, int) or dim < 1:
            return _send_json(h, 400, _error_body(400, f"Invalid 'dimensions': {dim!r}"))
        as_b64 = req.get("encoding_format") == "base64"
        data = []
        for i, text in enumerate(texts):
            vec: Any = embed_text(text, dim)
            if as_b64:
                vec = base64.b64encode(struct.pack(f"<{dim}f", *vec)).decode("ascii")
            data.append({"object": "embedding", "index": i, "embedding": vec})
        tokens = sum(max(1, len(_WORD.findall(t))) for t in texts)
        _send_json(
            h,
            200,
            {
                "object": "list",
                "data": data,
                "model": req.get("model") or "text-embedding-3-small",
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            },
        )


def _stream_chunks(completion: dict, include_usage: bool) -> Iterator[dict]:
    """Split a completion into ``chat.completion.chunk`` events the way OpenAI streams them."""
    choice = completion["choices"][0]
    msg = choice["message"]
    base = {k: completion[k] for k in ("id", "created", "model", "system_fingerprint")}
    base["object"] = "chat.completion.chunk"

    def chunk(delta: dict, finish: str | None = None) -> dict:
        out = dict(base, choices=[{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}])
        if include_usage:
            out["usage"] = None
        return out

    yield chunk({"role": "assistant", "content": "", "refusal": None})
    if msg["content"]:
        for piece in re.findall(r"\S+\s*|\s+", msg["content"]):
            yield chunk({"content": piece})
    for i, call in enumerate(msg.get("tool_calls", [])):
        fn = call["function"]
        yield chunk(
            {
                "tool_calls": [
                    {
                        "index": i,
                        "id": call["id"],
                        "type": "function",
                        "function": {"name": fn["name"], "arguments": ""},
                    }
                ]
            }
        )
        for piece in _pieces(fn["arguments"], 16):
            yield chunk({"tool_calls": [{"index": i, "function": {"arguments": piece}}]})
    yield chunk({}, choice["finish_reason"])
    if include_usage:
        yield dict(base, choices=[], usage=completion["usage"])


def _response_events(response: dict) -> Iterator[dict]:
    """Split a Responses API object into the events OpenAI streams (created ... output items ... completed)."""
    seq = itertools.count()
    start = dict(response, status="in_progress", output=[], usage=None)

    def event(kind: str, **fields: Any) -> dict:
        return {"type": kind, "sequence_number": next(seq), **fields}

    yield event("response.created", response=start)
    yield event("response.in_progress", response=start)
    for i, item in enumerate(response["output"]):
        kind = item["type"]
        if kind == "message":
            yield event("response.output_item.added", output_index=i, item=dict(item, status="in_progress", content=[]))
            for j, part in enumerate(item["content"]):
                ids = {"item_id": item["id"], "output_index": i, "content_index": j}
                yield event("response.content_part.added", **ids, part=dict(part, text=""))
                for piece in re.findall(r"\S+\s*|\s+", part["text"]):
                    yield event("response.output_text.delta", **ids, delta=piece, logprobs=[])
                yield event("response.output_text.done", **ids, text=part["text"], logprobs=[])
                yield event("response.content_part.done", **ids, part=part)
        elif kind == "function_call":
            yield event(
                "response.output_item.added", output_index=i, item=dict(item, status="in_progress", arguments="")
            )
            for piece in _pieces(item["arguments"], 16):
                yield event("response.function_call_arguments.delta", item_id=item["id"], output_index=i, delta=piece)
            yield event(
                "response.function_call_arguments.done", item_id=item["id"], output_index=i, arguments=item["arguments"]
            )
        else:
            yield event("response.output_item.added", output_index=i, item=item)
        yield event("response.output_item.done", output_index=i, item=item)
    yield event("response.completed", response=response)


# ----------------------------------------------------------------------------- HTTP plumbing
def _shutdown(conn: socket.socket) -> None:
    try:
        conn.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


def _client_gone(conn: socket.socket) -> bool:
    """True when the peer closed its end (e.g. a client that timed out during a stall)."""
    timeout = conn.gettimeout()
    try:
        conn.setblocking(False)
        return conn.recv(1, socket.MSG_PEEK) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True
    finally:
        try:
            conn.settimeout(timeout)
        except OSError:
            pass


def _send_raw(
    h: _Handler, status: int, raw: bytes, ctype: str = "application/json", headers: dict | None = None
) -> None:
    h.send_response(status)
    h.send_header("Content-Type", ctype)
    h.send_header("Content-Length", str(len(raw)))
    for k, v in (headers or {}).items():
        h.send_header(k, str(v))
    h.end_headers()
    h.wfile.write(raw)


def _send_json(h: _Handler, status: int, obj: Any) -> None:
    _send_raw(h, status, json.dumps(obj).encode("utf-8"))


def _send_sse(
    h: _Handler,
    chunks: Iterator[dict],
    *,
    delay: float = 0.0,
    stop: threading.Event | None = None,
    named: bool = False,
) -> None:
    """Server-sent events over chunked transfer encoding.

    Chat streams end with ``data: [DONE]``; ``named`` streams (the Responses API)
    carry an ``event:`` line per event and no ``[DONE]``. ``delay`` spaces the
    events out (each is flushed as soon as it is written).
    """
    h.send_response(200)
    h.send_header("Content-Type", "text/event-stream; charset=utf-8")
    h.send_header("Cache-Control", "no-cache")
    h.send_header("Transfer-Encoding", "chunked")
    h.end_headers()
    if named:
        events = [f"event: {c['type']}\ndata: {json.dumps(c)}\n\n".encode() for c in chunks]
    else:
        events = [f"data: {json.dumps(c)}\n\n".encode() for c in chunks] + [b"data: [DONE]\n\n"]
    for n, ev in enumerate(events):
        if n and delay > 0 and stop is not None and stop.wait(delay):
            h.close_connection = True
            return
        h.wfile.write(b"%x\r\n%s\r\n" % (len(ev), ev))
        h.wfile.flush()
    h.wfile.write(b"0\r\n\r\n")


class _Server(ThreadingHTTPServer):
    request_queue_size = 256  # the default 5 resets bursts of concurrent clients
    owner: ScriptedOpenAI


class _Handler(BaseHTTPRequestHandler):
    """Routes every request to the owning ScriptedOpenAI; keep-alive like real providers."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out in separate writes; no 40 ms delayed-ACK stalls
    timeout = 120  # idle keep-alive connections are closed after this
    server: _Server

    def setup(self) -> None:
        super().setup()
        with self.server.owner._cond:
            self.server.owner._conns.add(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        except OSError:
            pass
        finally:
            with self.server.owner._cond:
                self.server.owner._conns.discard(self.connection)

    def handle_one_request(self) -> None:
        try:
            super().handle_one_request()
        except (TimeoutError, BrokenPipeError, ConnectionResetError, OSError) as exc:
            _log.debug("client connection ended: %s", exc)
            self.close_connection = True

    def do_GET(self) -> None:
        self.server.owner._handle(self, "GET")

    def do_POST(self) -> None:
        self.server.owner._handle(self, "POST")

    def log_message(self, format: str, *args: Any) -> None:
        _log.debug("%s " + format, self.address_string(), *args)


try:  # the fixture exists only where pytest does; other virtualenvs import the server alone
    import pytest
except ImportError:  # pragma: no cover
    pytest = None  # type: ignore[assignment]

if pytest is not None:

    @pytest.fixture
    def openai_server() -> Iterator[ScriptedOpenAI]:
        """A started ScriptedOpenAI, stopped after the test."""
        with ScriptedOpenAI() as server:
            yield server


if __name__ == "__main__":  # serve default replies by hand: python tests/support/openai_server.py [port]
    logging.basicConfig(level=logging.INFO)
    with ScriptedOpenAI(port=int(sys.argv[1]) if len(sys.argv) > 1 else 0) as _srv:
        _log.info("serving %s", _srv.base_url)
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            pass
