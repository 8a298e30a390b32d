"""The LLM memory agent: a sleeptime pass over any OpenAI-compatible endpoint.

One pass sends only the subject's blocks (system prompt) and the new messages
(user turn), never earlier passes, so it costs the same on a user's first day
and their thousandth. A consolidation pass sends the blocks alone, with its own
rules (``consolidate.j2``), through the same loop. The model is asked to make
every edit and ``memory_finish_edits`` in one response with parallel tool
calls, so most passes are a single LLM call. Edits are staged in an
``EditSession`` and returned; the worker applies them atomically. The answers
to a step's calls go in ``tool`` messages and again at the end of the next user
turn, which every chat template shows (some drop ``tool`` messages).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from functools import lru_cache
from importlib import resources
from typing import TYPE_CHECKING, Any

from .._fork import PerProcess, gate
from .._openai import openai_client
from .._retry import RetryBudget, Transient, openai_transient, status_message
from .._time import as_utc
from ..config import Settings
from ..errors import LearnerError
from ..formatting import escape_attr, neutralise
from ..models import Block
from .base import PassInput, PassOutput
from .tools import EditSession

if TYPE_CHECKING:  # pragma: no cover
    import jinja2

log = logging.getLogger(__name__)

_HINTS = {
    401: "check OPENAI_API_KEY / llm_api_key",
    403: "check the API key's permissions",
    404: "check AI_MEMORY_MODEL / model and OPENAI_BASE_URL / llm_base_url",
}
_TEMPLATES = ("system.j2", "user.j2", "consolidate.j2", "consolidate_user.j2")


# -- prompts --------------------------------------------------------------------------------------


def _minute_utc(dt: datetime) -> str:
    """A message time as ``2025-03-14 09:30`` in UTC (a naive time is taken as UTC)."""
    return as_utc(dt).strftime("%Y-%m-%d %H:%M")


def _now_line(now: datetime) -> str:
    return as_utc(now).strftime("%Y-%m-%d %H:%M, %A")


def _quoted(text: str) -> str:
    """Message text as transcript data: it cannot close ``<messages>`` nor start a forged entry."""
    # Every line break a tokenizer or str.splitlines honours (\r, \v, \f, U+0085, U+2028, ...) becomes an
    # indented continuation line, so no message text can begin a line of its own.
    return "\n  ".join(neutralise(text, "messages").splitlines())


def _quoted_line(text: str) -> str:
    return " ".join(neutralise(text, "messages").split())


@lru_cache(maxsize=1)
def _environment() -> jinja2.Environment:
    """The templates' environment, loading from the package ``ai_memory_sdk.prompts`` (compiled once each)."""
    import jinja2

    root = resources.files("ai_memory_sdk.prompts")

    def load(name: str) -> str | None:
        source = root.joinpath(name)
        return source.read_text(encoding="utf-8") if source.is_file() else None

    env = jinja2.Environment(
        loader=jinja2.FunctionLoader(load),
        autoescape=False,
        trim_blocks=True,
        lstrip_blocks=True,
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=False,
    )
    env.filters.update(
        attr=escape_attr, block_value=neutralise, utc=_minute_utc, quoted=_quoted, quoted_line=_quoted_line
    )
    return env


def _render(name: str, **context: Any) -> str:
    return _environment().get_template(name).render(**context).strip()


def render_system(blocks: Sequence[Block]) -> str:
    """The system prompt: rules and every block with its size and limit (no clock: a stable prefix caches)."""
    return _render("system.j2", blocks=blocks)


def render_user(
    messages: Sequence[Any],
    now: datetime,
    results: Sequence[Mapping[str, str]] = (),
    changed: Sequence[Block] = (),
    failed: int = 0,
    last: bool = False,
) -> str:
    """The user turn: the current time and the new messages as a quoted transcript.

    After the first step of a pass it also lists the answer to every call so far
    (``tool``, ``label``, ``answer``), the blocks the pass has changed (staged values) and
    what to do next (``failed``: refused calls in the last response; ``last``: the step limit
    is next, so only finishing now keeps the pass's edits). The answers also go
    in ``tool`` messages, but some servers' chat templates drop those (llama-cpp-python's
    ``chatml-function-calling`` does), and a model that cannot see its errors cannot fix
    them. Appended at the end, so the prompt's prefix (and a server's prompt cache) stays
    the same from step to step.
    """
    return _render(
        "user.j2",
        messages=messages,
        now=_now_line(now),
        results=results,
        changed=changed,
        failed=failed,
        last=last,
    )


def render_consolidate_system(blocks: Sequence[Block]) -> str:
    """The system prompt of a consolidation pass: its rules, each block's target and the blocks."""
    return _render("consolidate.j2", blocks=blocks)


def render_consolidate_user(
    now: datetime,
    results: Sequence[Mapping[str, str]] = (),
    changed: Sequence[Block] = (),
    failed: int = 0,
    last: bool = False,
) -> str:
    """The user turn of a consolidation pass: no messages, only the time and (after step 1) the progress."""
    return _render(
        "consolidate_user.j2", now=_now_line(now), results=results, changed=changed, failed=failed, last=last
    )


def learn_messages(inp: PassInput) -> list[dict[str, Any]]:
    """The messages of a learning pass's first request."""
    return [
        {"role": "system", "content": render_system(inp.blocks)},
        {"role": "user", "content": render_user(inp.messages, inp.now)},
    ]


def consolidate_messages(inp: PassInput) -> list[dict[str, Any]]:
    """The messages of a consolidation pass's first request: the blocks, no conversation."""
    return [
        {"role": "system", "content": render_consolidate_system(inp.blocks)},
        {"role": "user", "content": render_consolidate_user(inp.now)},
    ]


# A schema's ``maxLength`` is compiled into a grammar by llama.cpp-based servers, one nested rule per
# character: llama-cpp-python 0.3.36 crashes (SIGSEGV) on a string of maxLength 1001, and llama.cpp
# refuses grammars past 2,000 repetitions. A larger bound is left out.
_MAX_SCHEMA_LENGTH = 1000
_MAX_LINE_ENUM = 32  # insert_line is an enum of its valid values while they are this few


def string_bounds(blocks: Sequence[Block], values: Mapping[str, str] | None = None) -> dict[str, int]:
    """Bounds of the arguments (``tool.argument``) of a call that is not refused.

    For strings the longest text, for ``insert_line`` the largest line number.
    ``values``: the values staged so far in the pass (default: the blocks' own). A longer
    ``old_str`` occurs in no block; a longer text would push every block over its limit.
    """
    vals = {b.label: b.value for b in blocks} if values is None else values
    top = max(b.limit for b in blocks)
    room = max(b.limit - len(vals[b.label]) - (1 if vals[b.label] else 0) for b in blocks)
    return {
        "memory_replace.old_str": max(len(v) for v in vals.values()),
        "memory_replace.new_str": top,
        "memory_insert.new_str": max(room, 0),
        "memory_rethink.new_memory": top,
        "memory_insert.insert_line": max(v.count("\n") + 1 if v else 0 for v in vals.values()),
    }


def tool_schemas(
    labels: Sequence[str], strict: bool = True, bounds: Mapping[str, int] | None = None
) -> list[dict[str, Any]]:
    """The four tools (Letta's names and parameters), strict, with ``label`` limited to the subject's blocks.

    With ``bounds`` (``string_bounds``) a string gets ``maxLength`` one above its bound where
    that stays small enough for grammar-constrained servers: a model that rambles is stopped
    there instead of filling its context window (minutes on a CPU, with the server blocked),
    and a string cut at that length is always refused (over the limit, or not found), never
    applied truncated. ``insert_line`` becomes an enum of its valid values while they are few.
    """
    label = {"type": "string", "enum": list(labels)}
    line: dict[str, Any] = {"type": "integer"}
    lines = None if bounds is None else bounds.get("memory_insert.insert_line")
    if lines is not None and lines + 2 <= _MAX_LINE_ENUM:
        line = {"type": "integer", "enum": list(range(-1, lines + 1))}

    def text(key: str) -> dict[str, Any]:
        bound = None if bounds is None else bounds.get(key)
        if bound is None or bound + 1 > _MAX_SCHEMA_LENGTH:
            return {"type": "string"}
        return {"type": "string", "maxLength": bound + 1}

    def tool(name: str, description: str, props: dict[str, Any]) -> dict[str, Any]:
        params: dict[str, Any] = {"type": "object", "properties": props, "required": list(props)}
        if not strict:  # Letta's form: insert_line is optional (-1)
            params["required"] = [p for p in props if p != "insert_line"]
            return {"type": "function", "function": {"name": name, "description": description, "parameters": params}}
        params["additionalProperties"] = False
        return {
            "type": "function",
            "function": {"name": name, "description": description, "strict": True, "parameters": params},
        }

    return [
        tool(
            "memory_replace",
            "Replace the one exact occurrence of old_str in a block with new_str.",
            {"label": label, "old_str": text("memory_replace.old_str"), "new_str": text("memory_replace.new_str")},
        ),
        tool(
            "memory_insert",
            "Insert new_str as new line(s) after line insert_line (from 1; 0: top; -1: end).",
            {"label": label, "new_str": text("memory_insert.new_str"), "insert_line": line},
        ),
        tool(
            "memory_rethink",
            "Rewrite a whole block.",
            {"label": label, "new_memory": text("memory_rethink.new_memory")},
        ),
        tool("memory_finish_edits", "Call when all edits are made, in the same response.", {}),
    ]


def build_request(
    inp: PassInput,
    model: str,
    strict: bool = True,
    bounded: bool = True,
    values: Mapping[str, str] | None = None,
    messages: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """The keyword arguments of a ``chat.completions.create`` call of a pass (default: a learning pass's first).

    ``tool_choice`` is ``auto``: every compatible server takes it (llama-cpp-python,
    older vLLM and others refuse ``required``), and the prompt asks for the tools;
    a reply without tool calls simply ends the pass. ``bounded``: strings carry
    ``maxLength`` from the blocks (``values``: as staged so far in the pass).
    """
    return {
        "model": model,
        "messages": messages if messages is not None else learn_messages(inp),
        "tools": tool_schemas(
            [b.label for b in inp.blocks], strict, string_bounds(inp.blocks, values) if bounded else None
        ),
        "tool_choice": "auto",
        "parallel_tool_calls": True,
    }


# -- errors ---------------------------------------------------------------------------------------


def _classify(exc: Exception, endpoint: str) -> Exception:
    """Map an ``openai`` exception to ``Transient`` or a final ``LearnerError``; others pass through."""
    import openai

    transient = openai_transient(exc)
    if transient is not None:
        return transient
    if isinstance(exc, openai.APIStatusError):
        hint = _HINTS.get(exc.status_code)
        return LearnerError(
            f"{endpoint} answered HTTP {exc.status_code}: {status_message(exc)}" + (f" ({hint})" if hint else ""),
            stop_reason="llm_error",
        )
    return exc


# -- the agent loop -------------------------------------------------------------------------------

Turn = Callable[[Sequence[Mapping[str, str]], Sequence[Block], int, bool], str]


def _tool_call_parts(call: Any, index: int) -> tuple[str, str, Any]:
    """(id, name, raw arguments) of a tool call, tolerating servers that omit ids."""
    fn = getattr(call, "function", None)
    name = getattr(fn, "name", None) or getattr(call, "name", None) or ""
    args = getattr(fn, "arguments", None)
    return (getattr(call, "id", None) or f"call_{index}"), name, args


def _sent_arguments(raw_args: Any) -> str:
    return raw_args if isinstance(raw_args, str) else json.dumps(raw_args or {})


def _shared_prefix(a: str, b: str) -> int:
    """Length of the longest common prefix of two strings (binary search on slices: C speed)."""
    lo, hi = 0, min(len(a), len(b))
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if a[:mid] == b[:mid]:
            lo = mid
        else:
            hi = mid - 1
    return lo


def _trace_messages(sent: Sequence[Mapping[str, Any]], before: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The messages of a request that the step before did not send as they are, each with its ``index``.

    The previous step's response and its calls' answers, sent back as ``assistant`` and
    ``tool`` messages, are named (``echo``), not copied: the trace holds them under that step.
    A message that only grew (the user turn gains the answers so far) keeps ``prefix_chars``
    of its previous version and records the rest as ``content_tail``.
    """
    out: list[dict[str, Any]] = []
    for i, message in enumerate(sent):
        old = before[i] if i < len(before) else None
        if old == message:
            continue
        if old is None and before and message["role"] == "assistant":
            out.append({"index": i, "role": "assistant", "echo": "response"})
        elif old is None and before and message["role"] == "tool":
            out.append({"index": i, "role": "tool", "echo": "answer", "tool_call_id": message["tool_call_id"]})
        elif old is not None and isinstance(old.get("content"), str) and isinstance(message.get("content"), str):
            kept = _shared_prefix(old["content"], message["content"])
            out.append(
                {"index": i, "role": message["role"], "prefix_chars": kept, "content_tail": message["content"][kept:]}
            )
        else:
            out.append({"index": i, **message})
    return out


class LLMLearner:
    """The sleeptime memory agent over ``chat.completions`` (thread-safe: no state between passes)."""

    name = "llm"

    def __init__(self, settings: Settings, client: Any = None) -> None:
        from openai.types.chat import ChatCompletion  # imported here, not first in a worker thread: see _fork

        self._completion = ChatCompletion

        for template in _TEMPLATES:  # a broken or missing template fails here, not in a pass
            _environment().get_template(template)
        self.settings = settings
        self._own_client = PerProcess(lambda: openai_client(settings))  # a forked child builds its own
        self._client = client
        self._parallel = True  # dropped once if the endpoint refuses parallel_tool_calls
        self._strict = True  # dropped once if the endpoint refuses strict schemas
        self._bounded = True  # maxLength dropped once if the endpoint refuses it

    @property
    def client(self) -> Any:
        return self._client if self._client is not None else self._own_client.get()

    @property
    def endpoint(self) -> str:
        """``LLM endpoint <base URL>``, as errors and retry warnings name it."""
        url = getattr(self.client, "base_url", None) or self.settings.llm_base_url or "(the openai client's default)"
        return f"LLM endpoint {str(url).rstrip('/')}"

    def learn(self, inp: PassInput) -> PassOutput:
        """Read the new messages into the blocks."""
        if not inp.blocks or not inp.messages:
            return PassOutput(stop_reason="end_turn")

        def turn(results: Sequence[Mapping[str, str]], changed: Sequence[Block], failed: int, last: bool) -> str:
            return render_user(inp.messages, inp.now, results, changed, failed, last)

        return self._pass(inp, learn_messages(inp), turn)

    def consolidate(self, inp: PassInput) -> PassOutput:
        """Rewrite the blocks alone: duplicates merged, contradictions resolved, each condensed toward half its
        limit, no standing fact dropped."""
        if not any(b.value for b in inp.blocks):
            return PassOutput(stop_reason="end_turn")

        def turn(results: Sequence[Mapping[str, str]], changed: Sequence[Block], failed: int, last: bool) -> str:
            return render_consolidate_user(inp.now, results, changed, failed, last)

        return self._pass(inp, consolidate_messages(inp), turn)

    def _pass(self, inp: PassInput, messages: list[dict[str, Any]], turn: Turn) -> PassOutput:
        """The tool loop of one pass: request, run every call, answer, until finished or the step limit."""
        out = PassOutput()
        session = EditSession({b.label: b for b in inp.blocks})

        def build() -> dict[str, Any]:
            """The request for the next step, with whatever the endpoint has refused so far left out."""
            request = build_request(inp, self.settings.model, self._strict, self._bounded, session.values, messages)
            if not self._parallel:
                del request["parallel_tool_calls"]
            return request

        budget = RetryBudget(self.settings.llm_retry_budget, self.endpoint, log)
        results: list[dict[str, str]] = []  # every call of the pass and its answer, for the user turn
        sent_before: list[dict[str, Any]] = []
        for step in range(1, self.settings.max_steps + 1):
            retries_before = len(budget.errors)
            try:
                response, request = self._create(build, budget)
            except LearnerError as exc:
                exc.stats = {**out.usage(), **exc.stats}
                exc.trace = out.trace + exc.trace
                raise
            out.llm_calls += 1
            usage = getattr(response, "usage", None)
            prompt_tokens = int(getattr(usage, "prompt_tokens", 0) or 0)
            completion_tokens = int(getattr(usage, "completion_tokens", 0) or 0)
            out.prompt_tokens += prompt_tokens
            out.completion_tokens += completion_tokens
            message = response.choices[0].message
            calls = list(getattr(message, "tool_calls", None) or [])
            record: dict[str, Any] = {
                "step": step,
                "request": {
                    "messages": _trace_messages(request["messages"], sent_before),
                    "tools": [t["function"]["name"] for t in request["tools"]],
                },
                "response": {"content": getattr(message, "content", None) or "", "tool_calls": []},
                "answers": [],
                "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens},
            }
            if len(budget.errors) > retries_before:
                record["retried"] = budget.errors[retries_before:]
            out.trace.append(record)
            sent_before = list(request["messages"])
            if not calls:
                out.stop_reason = "end_turn"
                break
            echoed: list[dict[str, Any]] = []
            answers: list[dict[str, str]] = []
            failed, finished = 0, False
            for i, call in enumerate(calls):
                call_id, tool, raw_args = _tool_call_parts(call, step * 100 + i)
                ok, answer = session.call(tool, raw_args)
                results.append({"tool": tool, "label": _label_of(raw_args), "answer": answer})
                if ok and tool == "memory_finish_edits":
                    finished = True
                elif not ok:
                    failed += 1
                    answer = self._explain(session, tool, raw_args, answer)
                echoed.append(
                    {
                        "id": call_id,
                        "type": "function",
                        "function": {"name": tool, "arguments": _sent_arguments(raw_args)},
                    }
                )
                answers.append({"role": "tool", "tool_call_id": call_id, "content": answer})
            if finished and failed and step < self.settings.max_steps:
                # The model finished without seeing its errors: give it the answers and one more step.
                finished = False
                answers[-1]["content"] += (
                    f"\nNot finished: {failed} call(s) of this response failed (see their"
                    " answers). Fix them or call memory_finish_edits again."
                )
            record["response"]["tool_calls"] = [{"id": e["id"], **e["function"]} for e in echoed]
            record["answers"] = [{"tool_call_id": a["tool_call_id"], "answer": a["content"]} for a in answers]
            if finished:
                out.stop_reason = "end_turn"
                break
            # content "" rather than None: some servers (llama-cpp-python) answer HTTP 500 to a null content.
            messages.append(
                {"role": "assistant", "content": getattr(message, "content", None) or "", "tool_calls": echoed}
            )
            messages.extend(answers)
            changed = [
                b.model_copy(update={"value": session.values[b.label]})
                for b in inp.blocks
                if session.values[b.label] != b.value
            ]
            messages[1] = {
                "role": "user",
                "content": turn(results, changed, failed, step + 1 == self.settings.max_steps),
            }
        else:
            raise LearnerError(
                f"the memory agent did not finish within {self.settings.max_steps} LLM calls"
                " (max_steps); no edit of this pass was applied",
                stop_reason="max_steps",
                stats=out.usage(),
                trace=out.trace,
            )
        out.values = session.changed()
        out.ops = list(session.ops)
        out.limit_refusals = session.limit_refusals
        log.debug("pass of %r: %d call(s), %d edit(s)", inp.subject_id, out.llm_calls, len(out.ops))
        return out

    @staticmethod
    def _explain(session: EditSession, tool: str, raw_args: Any, answer: str) -> str:
        """A refused replace on a block this pass already edited: show the value the model must copy from."""
        if tool != "memory_replace" or "old_str" not in answer:
            return answer
        label = _label_of(raw_args)
        if label in session.blocks and session.values[label] != session.blocks[label].value:
            answer += f"\nCurrent value of '{label}':\n{session.values[label]}"
        return answer

    def _create(self, build: Callable[[], dict[str, Any]], budget: RetryBudget) -> tuple[Any, dict[str, Any]]:
        """One LLM call with our retries: a response that has at least one choice, and the request that got it."""
        client = self.client
        request = build()
        while True:
            started = time.monotonic()
            try:
                with gate:  # a fork waits for this call (see _fork)
                    # chat.completions.create(**request) without its argument transform, which walks the whole
                    # request against the SDK's type hints (~2 ms of the ~3 ms from a batch to its request); the
                    # request is plain JSON already, and the body sent is the same (tests/test_hotpath.py).
                    response = client.post("/chat/completions", cast_to=self._completion, body=request)
                if not getattr(response, "choices", None) or getattr(response.choices[0], "message", None) is None:
                    raise Transient("sent a response without choices")
                return response, request
            except Exception as exc:
                err = _classify(exc, budget.endpoint)
                if isinstance(err, Transient):
                    if budget.pause(err, time.monotonic() - started):
                        continue
                    raise LearnerError(budget.gave_up(err), stop_reason="llm_error") from exc
                if isinstance(err, LearnerError) and self._downgrade(request, str(err)):
                    request = build()
                    continue
                if err is exc:
                    raise
                raise err from exc

    def _downgrade(self, request: dict[str, Any], error: str) -> bool:
        """An endpoint that rejects ``parallel_tool_calls``, ``maxLength`` or strict schemas (HTTP 400 naming
        them) gets plain ones from now on."""
        if "HTTP 400" not in error:
            return False
        if "parallel_tool_calls" in request and "parallel_tool_calls" in error:
            log.warning("the LLM endpoint refused parallel_tool_calls; leaving it out")
            self._parallel = False
            return True
        if self._bounded and "maxLength" in error and "maxLength" in json.dumps(request["tools"]):
            log.warning("the LLM endpoint refused maxLength in tool schemas; leaving it out")
            self._bounded = False
            return True
        if self._strict and ("strict" in error or "additionalProperties" in error):
            log.warning("the LLM endpoint refused strict tool schemas; sending plain ones")
            self._strict = False
            return True
        return False


def _label_of(raw_args: Any) -> str:
    """The ``label`` argument of a call if it has a readable one, else ``""``."""
    try:
        args = json.loads(raw_args, strict=False) if isinstance(raw_args, str) else dict(raw_args or {})
    except (ValueError, TypeError, AttributeError):
        return ""
    label = args.get("label") if isinstance(args, dict) else None
    return label if isinstance(label, str) else ""
