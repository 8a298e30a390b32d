"""What a conversation turn says, as messages the memory agent can read.

The OpenAI APIs carry a turn as Chat Completions messages or as Responses API
items (which the Agents SDK stores in its sessions). The memory agent reads a
transcript of plain ``role: text`` lines, so each is turned into a message
dict of the package's input format: text as text, a tool call as a line that
names the call and its arguments, a tool result as a ``tool`` message named
after its tool, a reasoning item as its summary. The raw call, result or item
goes along in ``metadata`` (kept as the API gave it). Instructions (system and
developer messages) are the application's, not the conversation, and are not
learned; nor are items with nothing readable (an encrypted reasoning item).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from .._validation import ROLES

_TEXT_PARTS = ("text", "input_text", "output_text", "summary_text", "reasoning_text")
_INSTRUCTIONS = ("system", "developer")
# Readable fields of hosted-tool items (web search, MCP, code interpreter, ...), shown in this order.
_CALL_FIELDS = ("server_label", "name", "arguments", "input", "action", "queries", "code", "error")


def as_dict(obj: Any) -> dict[str, Any]:
    """A response object of the ``openai`` package (or a dict) as a plain dict of the fields it was given."""
    if isinstance(obj, Mapping):
        return dict(obj)
    to_dict = getattr(obj, "to_dict", None)
    if callable(to_dict):
        return dict(to_dict())
    dumped: dict[str, Any] = obj.model_dump(mode="json", exclude_unset=True)
    return dumped


def parts_text(content: Any) -> str:
    """The text of a message's content: a string, or content parts (non-text parts named in brackets)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, Mapping):
        content = [content]
    if not isinstance(content, Iterable):
        return str(content)
    texts: list[str] = []
    for part in content:
        if isinstance(part, str):
            texts.append(part)
            continue
        part = as_dict(part) if not isinstance(part, Mapping) else part
        kind = part.get("type")
        if kind in _TEXT_PARTS:
            texts.append(str(part.get("text") or ""))
        elif kind == "refusal":
            texts.append(f"[refusal] {part.get('refusal') or ''}")
        elif kind in ("input_file", "file"):
            name = part.get("filename") or (part.get("file") or {}).get("filename")
            texts.append(f"[file {name}]" if name else "[file]")
        elif kind in ("input_image", "image_url"):
            texts.append("[image]")
        elif kind in ("input_audio",):
            texts.append("[audio]")
        elif isinstance(kind, str):
            texts.append(f"[{kind}]")
    return "\n".join(t for t in texts if t)


def call_text(name: Any, arguments: Any) -> str:
    """One tool call as the memory agent reads it: ``[calls name({"arg": ...})]``."""
    args = arguments if isinstance(arguments, str) else json.dumps(arguments, ensure_ascii=False)
    return f"[calls {name}({args})]"


# -- Chat Completions -------------------------------------------------------------------------------


def _after_last_assistant(messages: Sequence[Mapping[str, Any]]) -> Sequence[Mapping[str, Any]]:
    """The new part of a request: what follows the last assistant message (the whole list when there is none)."""
    for i in range(len(messages) - 1, -1, -1):
        if messages[i].get("role") == "assistant":
            return messages[i + 1 :]
    return messages


def assistant_message(reply: Mapping[str, Any]) -> dict[str, Any] | None:
    """A Chat Completions assistant reply (text, refusal, tool calls) as a message; None when it says nothing."""
    calls = [as_dict(c) for c in reply.get("tool_calls") or []]
    lines = [parts_text(reply.get("content"))]
    if reply.get("refusal"):
        lines.append(f"[refusal] {reply['refusal']}")
    for c in calls:
        fn = c.get("function") or {}
        lines.append(call_text(fn.get("name"), fn.get("arguments", "")))
    text = "\n".join(line for line in lines if line)
    if not text:
        return None
    message: dict[str, Any] = {"role": "assistant", "content": text}
    if calls:
        message["tool_calls"] = calls
    if reply.get("refusal"):
        message["refusal"] = reply["refusal"]
    return message


def chat_turn(messages: Sequence[Mapping[str, Any]], reply: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    """The new messages of a Chat Completions request and the assistant's reply, ready for ``add_messages``."""
    tool_names = {
        c.get("id"): (c.get("function") or {}).get("name")
        for m in messages
        if m.get("role") == "assistant"
        for c in (as_dict(x) for x in m.get("tool_calls") or [])
    }
    out: list[dict[str, Any]] = []
    for m in _after_last_assistant(messages):
        role = m.get("role")
        if role in _INSTRUCTIONS or role not in ROLES:
            continue
        text = parts_text(m.get("content"))
        if not text:
            continue
        message: dict[str, Any] = {"role": role, "content": text}
        name = tool_names.get(m.get("tool_call_id")) if role == "tool" else m.get("name")
        if isinstance(name, str) and name:
            message["name"] = name
        if isinstance(m.get("tool_call_id"), str):
            message["tool_call_id"] = m["tool_call_id"]
        out.append(message)
    said = assistant_message(reply) if reply is not None else None
    if said is not None:
        out.append(said)
    return out


# -- Responses API items (also what the Agents SDK keeps in a session) ----------------------------


def _is_model_output(item: Mapping[str, Any]) -> bool:
    kind = str(item.get("type") or "")
    return item.get("role") == "assistant" or kind == "reasoning" or kind.endswith("_call")


def new_items(items: Sequence[Mapping[str, Any]]) -> Sequence[Mapping[str, Any]]:
    """The new part of a Responses API input: what follows the model's last output item."""
    for i in range(len(items) - 1, -1, -1):
        if _is_model_output(items[i]):
            return items[i + 1 :]
    return items


def _output_text(output: Any) -> str:
    if isinstance(output, str):
        return output
    if isinstance(output, Mapping):
        return f"[{output.get('type') or 'output'}]"
    return parts_text(output)


def item_messages(
    items: Sequence[Mapping[str, Any]], known_calls: Iterable[Mapping[str, Any]] = ()
) -> list[dict[str, Any]]:
    """Responses API items as messages; ``known_calls`` are earlier items that may name a result's tool."""
    names = {
        c.get("call_id"): c.get("name")
        for c in [*known_calls, *items]
        if isinstance(c, Mapping) and str(c.get("type") or "").endswith("_call")
    }
    out: list[dict[str, Any]] = []
    for item in items:
        message = _item_message(item, names)
        if message is not None:
            out.append(message)
    return out


def _item_message(item: Mapping[str, Any], names: Mapping[Any, Any]) -> dict[str, Any] | None:
    kind = str(item.get("type") or "message")
    raw = {"item": dict(item)}
    if kind == "message" and "role" in item:
        role = item.get("role")
        if role in _INSTRUCTIONS or role not in ROLES:
            return None
        text = parts_text(item.get("content"))
        return {"role": role, "content": text} if text else None
    if kind == "reasoning":
        text = "\n".join(t for t in (parts_text(item.get("summary")), parts_text(item.get("content"))) if t)
        return {"role": "assistant", "content": f"[reasoning] {text}", "metadata": raw} if text else None
    if kind in ("function_call", "custom_tool_call"):
        args = item.get("arguments") if kind == "function_call" else item.get("input")
        return {"role": "assistant", "content": call_text(item.get("name"), args or ""), "metadata": raw}
    if kind.endswith("_output"):
        message: dict[str, Any] = {"role": "tool", "content": _output_text(item.get("output")), "metadata": raw}
        name = names.get(item.get("call_id"))
        if isinstance(name, str) and name:
            message["name"] = name
        return message
    if kind.endswith("_call"):
        shown = {k: item[k] for k in _CALL_FIELDS if item.get(k) not in (None, "", [], {})}
        text = f"[{kind}] {json.dumps(shown, ensure_ascii=False)}" if shown else f"[{kind}]"
        output = item.get("output")
        if isinstance(output, str) and output:
            text += f"\n{output}"
        return {"role": "assistant", "content": text, "metadata": raw}
    return None


def response_turn(request_input: Any, output: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The new input of a Responses API request and its output items, ready for ``add_messages``."""
    if isinstance(request_input, str):
        said: list[dict[str, Any]] = [{"role": "user", "content": request_input}] if request_input else []
        return said + item_messages(output)
    items = [as_dict(i) for i in request_input or []]
    return item_messages(new_items(items), known_calls=items) + item_messages(output, known_calls=items)
