"""Audit the memory agent against a real model: a recording proxy, conversation batches and a replay check.

The agent talks to ``RecordingProxy.base_url`` (set as ``OPENAI_BASE_URL``, as a user
would point it at Ollama or vLLM); the proxy forwards every request unchanged to the
real server and keeps each request and response. ``audit_run`` then replays the
recorded tool calls of a pass with an independent reference implementation of the
four tools (docs/memory-agent.md) and checks what the store recorded against it:

* a completed run's block values are exactly the valid calls applied in order;
* a failed run changed no block (no history entry carries its id);
* every call the reference refuses was answered ``Error:`` (in the ``tool`` message and
  in the next request's user turn, which every chat template shows), every call it accepts was answered ``OK``;
* every block stays within its limit.

Standard library only (plus ``ai_memory_sdk`` for types), so the benchmark and the
test share it.
"""

from __future__ import annotations

import html
import json
import logging
import re
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from support.data import LOCOMO_DEV

_log = logging.getLogger(__name__)

FINISH = "memory_finish_edits"


# ----------------------------------------------------------------------------- proxy
@dataclass
class Exchange:
    """One chat request through the proxy and what came back (``response`` is None on a transport error)."""

    request: dict
    request_bytes: int
    status: int
    response: dict | None
    seconds: float
    error: str = ""


class RecordingProxy:
    """A transparent HTTP proxy on 127.0.0.1 in front of an OpenAI-compatible server.

    Requests are forwarded one at a time (the llama.cpp server runs one anyway), with
    the upstream status and body passed back unchanged.
    """

    def __init__(self, upstream: str, timeout: float = 600.0) -> None:
        self.upstream = upstream.rstrip("/")
        self.timeout = timeout
        self.exchanges: list[Exchange] = []
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def start(self) -> RecordingProxy:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                proxy._forward(self, None)

            def do_POST(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                proxy._forward(self, self.rfile.read(length))

            def log_message(self, format: str, *args: Any) -> None:
                _log.debug(format, *args)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="recording-proxy", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> RecordingProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def take(self) -> list[Exchange]:
        """The chat exchanges recorded since the last call."""
        with self._lock:
            got, self.exchanges = self.exchanges, []
        return got

    def _forward(self, h: BaseHTTPRequestHandler, body: bytes | None) -> None:
        path = h.path[3:] if h.path.startswith("/v1") else h.path
        req = urllib.request.Request(
            self.upstream + path,
            data=body,
            method="POST" if body is not None else "GET",
            headers={"content-type": "application/json"},
        )
        t0 = time.monotonic()
        status, payload, error = 502, b'{"error": {"message": "proxy: upstream unreachable"}}', ""
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                status, payload = resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            status, payload = exc.code, exc.read()
        except OSError as exc:
            error = f"{type(exc).__name__}: {exc}"
        seconds = time.monotonic() - t0
        if body is not None and path.endswith("/chat/completions"):
            try:
                parsed = json.loads(payload) if status == 200 else None
            except ValueError:
                parsed = None
            with self._lock:
                self.exchanges.append(Exchange(json.loads(body), len(body), status, parsed, seconds, error))
        try:
            h.send_response(status)
            h.send_header("content-type", "application/json")
            h.send_header("content-length", str(len(payload)))
            h.end_headers()
            h.wfile.write(payload)
        except OSError:  # the client gave up (its timeout): the exchange is recorded anyway
            h.close_connection = True


# ----------------------------------------------------------------------------- conversations
_FALLBACK = [  # used when the LoCoMo file is not next to the repository (written for this test)
    ("Ana", "Hi! I'm Ana. I just started a new job as a nurse at the city hospital in Porto."),
    ("Ben", "Congratulations Ana! Night shifts or day shifts? I'm still teaching maths at the high school."),
    ("Ana", "Mostly nights for now. My cat Miso hates it, she wants breakfast at 5am sharp."),
    ("Ben", "Ha, my dog Rex is the same. We are training for a half marathon in October, by the way."),
    ("Ana", "That's ambitious! I prefer swimming. I go to the pool on Tuesdays and Fridays."),
    ("Ben", "Nice. My sister Clara moved to Berlin last month for her PhD in chemistry."),
    ("Ana", "Berlin is great. I want to visit Japan next spring, I've been learning Japanese on an app."),
    ("Ben", "I'm allergic to peanuts, so I always worry about food when I travel. Any tips?"),
]


def conversation_batches(
    size: int = 8, limit: int | None = None, path: Path = LOCOMO_DEV
) -> Iterator[tuple[str, list[dict]]]:
    """(conversation id, batch of ``size`` messages) in order: LoCoMo dev turns, else a built-in chat.

    Speaker A is the ``user``, speaker B the ``assistant``, ``name`` the speaker and
    ``created_at`` the session's date plus a minute per turn (as in the dataset's README).
    """
    n = 0
    if not path.exists():
        _log.warning("%s not found: using the built-in conversation", path)
        base = datetime(2024, 5, 8, 13, 56, tzinfo=timezone.utc)
        msgs = [
            {
                "role": "user" if who == "Ana" else "assistant",
                "name": who,
                "content": text,
                "created_at": (base + timedelta(minutes=i)).isoformat(),
            }
            for i, (who, text) in enumerate(_FALLBACK)
        ]
        while limit is None or n < limit:
            for i in range(0, len(msgs), size):
                if limit is not None and n >= limit:
                    return
                yield "builtin", msgs[i : i + size]
                n += 1
        return
    for conv in json.loads(path.read_text(encoding="utf-8")):
        c = conv["conversation"]
        sessions = sorted(int(k.split("_")[1]) for k in c if re.fullmatch(r"session_\d+", k))
        for s in sessions:
            when = datetime.strptime(c[f"session_{s}_date_time"], "%I:%M %p on %d %B, %Y").replace(tzinfo=timezone.utc)
            turns = c[f"session_{s}"]
            msgs = []
            for i, t in enumerate(turns):
                text = t["text"] + (f" [shares a photo: {t['blip_caption']}]" if t.get("blip_caption") else "")
                msgs.append(
                    {
                        "role": "user" if t["speaker"] == c["speaker_a"] else "assistant",
                        "name": t["speaker"],
                        "content": f"{t['speaker']}: {text}",
                        "created_at": (when + timedelta(minutes=i)).isoformat(),
                    }
                )
            for i in range(0, len(msgs), size):
                if limit is not None and n >= limit:
                    return
                yield conv["sample_id"], msgs[i : i + size]
                n += 1


# ----------------------------------------------------------------------------- reference tools
class _Refused(Exception):
    pass


def _parse(raw: Any) -> dict:
    if isinstance(raw, dict):
        return raw
    if raw is None or raw == "":
        return {}
    try:
        args = json.loads(raw, strict=False)
    except ValueError:
        raise _Refused("invalid JSON") from None
    if not isinstance(args, dict):
        raise _Refused("arguments not an object")
    return args


def _str(args: dict, name: str) -> str:
    if not isinstance(args.get(name), str):
        raise _Refused(f"{name} missing or not a string")
    return args[name]


def reference_call(values: dict[str, str], limits: dict[str, int], tool: str, raw: Any) -> dict[str, str] | None:
    """The tool rules of docs/memory-agent.md applied to a copy of ``values``: the new values, or None when the call must be refused."""
    return reference_verdict(values, limits, tool, raw)[0]


def reference_verdict(
    values: dict[str, str], limits: dict[str, int], tool: str, raw: Any
) -> tuple[dict[str, str] | None, str]:
    """(new values or None, why): ``ok``, ``ok (unescaped)`` or the reason for refusing.

    Written independently of ``ai_memory_sdk.learners.tools``. Repairs the agent may make
    are modelled: JSON strings with raw control characters, and an ``old_str`` that occurs
    nowhere but whose HTML entities, once unescaped, give the one exact match (then
    ``new_str`` is unescaped too).
    """
    try:
        args = _parse(raw)
        if tool == FINISH:
            return dict(values), "ok"
        if tool not in ("memory_replace", "memory_insert", "memory_rethink"):
            raise _Refused("unknown tool")
        label = _str(args, "label")
        if label not in values:
            raise _Refused("unknown label")
        value, note = values[label], "ok"
        if tool == "memory_rethink":
            new = _str(args, "new_memory")
        elif tool == "memory_insert":
            text = _str(args, "new_str")
            line = args.get("insert_line", -1)
            if isinstance(line, str) and re.fullmatch(r"\s*-?\d+\s*", line):
                line = int(line)
            if isinstance(line, bool) or not isinstance(line, int):
                raise _Refused("insert_line not an integer")
            lines = value.split("\n") if value else []
            if line == -1:
                line = len(lines)
            if not 0 <= line <= len(lines):
                raise _Refused("insert_line out of range")
            new = "\n".join(lines[:line] + text.split("\n") + lines[line:])
        else:
            old, text = _str(args, "old_str"), _str(args, "new_str")
            if old and old not in value and value.count(html.unescape(old)) == 1:
                old, text, note = html.unescape(old), html.unescape(text), "ok (unescaped)"
            if not old:
                raise _Refused("old_str empty")
            if value.count(old) != 1:
                raise _Refused("old_str not found" if value.count(old) == 0 else "old_str not unique")
            new = value.replace(old, text, 1)
        if len(new) > limits[label]:
            raise _Refused("over the limit")
        return {**values, label: new}, note
    except _Refused as exc:
        return None, str(exc)


# ----------------------------------------------------------------------------- audit
@dataclass
class PassAudit:
    """What one pass did and whether the store agrees with the replay."""

    run_id: str
    status: str
    stop_reason: str | None
    llm_calls: int
    requests: int
    request_bytes: int
    seconds: float
    calls: int = 0
    valid_calls: int = 0
    valid_edits: int = 0  # valid calls other than memory_finish_edits
    tools: dict[str, int] = field(default_factory=dict)
    verdicts: dict[str, int] = field(default_factory=dict)  # "tool: why" -> count
    statuses: list[int] = field(default_factory=list)  # HTTP status of each request (502: no answer)
    problems: list[str] = field(default_factory=list)


def _tool_calls(exchange: Exchange) -> list[tuple[str, str, Any]]:
    """(id, name, raw arguments) of the calls in a recorded response."""
    if exchange.response is None:
        return []
    msg = (exchange.response.get("choices") or [{}])[0].get("message") or {}
    return [
        (c.get("id") or "", (c.get("function") or {}).get("name") or "", (c.get("function") or {}).get("arguments"))
        for c in msg.get("tool_calls") or []
    ]


def audit_run(
    mem: Any,
    subject: str,
    run_id: str,
    exchanges: Sequence[Exchange],
    before: dict[str, str],
    limits: dict[str, int],
    seconds: float,
) -> PassAudit:
    """Replay one pass's recorded calls and compare with what ``mem`` stored for ``run_id``."""
    run = mem.get_run(run_id)
    ok = [e for e in exchanges if e.status == 200 and e.response is not None]
    audit = PassAudit(
        run_id,
        run.status,
        run.stop_reason,
        run.llm_calls,
        len(exchanges),
        sum(e.request_bytes for e in exchanges),
        seconds,
        statuses=[e.status for e in exchanges],
    )
    p = audit.problems
    if run.status not in ("completed", "failed"):
        p.append(f"run ended {run.status}")
    if run.llm_calls != len(ok):
        p.append(f"run counts {run.llm_calls} LLM calls, the proxy saw {len(ok)} answered")
    values = dict(before)
    finished = False  # the last response called memory_finish_edits validly
    for n, ex in enumerate(ok):
        nxt = ok[n + 1].request if n + 1 < len(ok) else None
        answers = {
            m.get("tool_call_id"): m.get("content") or ""
            for m in (nxt or {}).get("messages", [])
            if m.get("role") == "tool"
        }
        finished, refused = False, 0
        for call_id, tool, raw in _tool_calls(ex):
            audit.calls += 1
            audit.tools[tool] = audit.tools.get(tool, 0) + 1
            after, why = reference_verdict(values, limits, tool, raw)
            key = f"{tool}: {why}"
            audit.verdicts[key] = audit.verdicts.get(key, 0) + 1
            if after is not None:
                audit.valid_calls += 1
                audit.valid_edits += tool != FINISH
                values = after
                finished = finished or tool == FINISH
            else:
                refused += 1
            if nxt is None:
                continue
            answer = answers.get(call_id)
            if answer is None:
                p.append(f"step {n + 1}: call {tool} got no tool answer in the next request")
            elif after is None and not answer.startswith("Error:"):
                p.append(f"step {n + 1}: refused {tool} {raw!r} answered {answer[:80]!r}")
            elif after is not None and answer.startswith("Error:"):
                p.append(f"step {n + 1}: valid {tool} {raw!r} answered {answer[:120]!r}")
            if after is None and answer is not None and answer.split("\n")[0] not in nxt["messages"][1]["content"]:
                p.append(f"step {n + 1}: the refusal of {tool} is not in the next user turn")
        if finished and not refused and nxt is not None:
            p.append(f"step {n + 1}: the pass went on after a clean memory_finish_edits")
    if run.status == "completed" and not ok:
        p.append("completed without an LLM call")
    if run.status == "completed" and ok and _tool_calls(ok[-1]) and not finished:
        p.append("completed although the last response neither finished nor was empty")
    stored = {b.label: b for b in mem.list_blocks(subject)}
    for label, block in stored.items():
        if len(block.value) > block.limit:
            p.append(f"block {label} is over its limit ({len(block.value)}/{block.limit})")
        hist = [v for v in mem.block_history(label, subject_id=subject) if v.run_id == run_id]
        if run.status == "completed":
            want = values.get(label)
            if block.value != want:
                p.append(f"block {label}: stored {block.value!r} != replayed {want!r}")
            if (want != before.get(label)) != bool(hist):
                p.append(f"block {label}: history entries {len(hist)} for a change {want != before.get(label)}")
            if hist and hist[-1].value != want:
                p.append(f"block {label}: history holds {hist[-1].value!r} != replayed {want!r}")
        else:
            if block.value != before.get(label) or hist:
                p.append(f"failed run changed block {label}")
    return audit


def block_state(mem: Any, subject: str) -> tuple[dict[str, str], dict[str, int], dict[str, str]]:
    """(values, limits, descriptions) of a subject's blocks."""
    blocks = mem.list_blocks(subject)
    return (
        {b.label: b.value for b in blocks},
        {b.label: b.limit for b in blocks},
        {b.label: b.description for b in blocks},
    )
