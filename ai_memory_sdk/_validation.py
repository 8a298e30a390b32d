"""Input checks of the public API (docs/api.md), shared by every engine and the HTTP server.

Each check raises ``ValueError``/``TypeError`` with a message that names the
offending argument (and, for batches, the message index and field), before
anything is stored.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable
from datetime import datetime, timezone
from typing import Any

from ._time import as_utc
from .models import BlockSpec, MessageIn

ROLES = ("user", "assistant", "system", "developer", "tool", "function")
_LABEL_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*\Z")
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f-\x9f]")
# Fields of the OpenAI chat format that we accept and keep in ``metadata``.
_OPENAI_EXTRAS = ("tool_calls", "tool_call_id", "function_call", "refusal", "audio", "annotations")
MAX_DESCRIPTION = 2000
MAX_CHAR_LIMIT = 1_000_000
MAX_TAG = 64


def subject_id(value: Any, what: str = "subject_id") -> str:
    if not isinstance(value, str):
        raise TypeError(f"{what} must be a string, got {type(value).__name__}")
    if not 1 <= len(value) <= 256:
        raise ValueError(f"{what} must be 1-256 characters, got {len(value)}")
    if _CONTROL_RE.search(value):
        raise ValueError(f"{what} must not contain control characters: {value!r}")
    return value


def label(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(f"label must be a string, got {type(value).__name__}")
    if not 1 <= len(value) <= 64 or not _LABEL_RE.match(value):
        raise ValueError(f"label must be 1-64 characters matching [A-Za-z_][A-Za-z0-9_.-]*, got {value!r}")
    return value


def description(value: Any, what: str = "description") -> str:
    if not isinstance(value, str):
        raise TypeError(f"{what} must be a string, got {type(value).__name__}")
    if len(value) > MAX_DESCRIPTION:
        raise ValueError(f"{what} must be at most {MAX_DESCRIPTION} characters, got {len(value)}")
    return text(value, what)


def char_limit(value: Any, what: str = "char_limit") -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{what} must be an integer, got {type(value).__name__}")
    if not 1 <= value <= MAX_CHAR_LIMIT:
        raise ValueError(f"{what} must be from 1 to {MAX_CHAR_LIMIT:,}, got {value}")
    return value


def block_value(value: Any, limit: int, what: str = "value") -> str:
    if not isinstance(value, str):
        raise TypeError(f"{what} must be a string, got {type(value).__name__}")
    if len(value) > limit:
        raise ValueError(f"{what} has {len(value)} characters, over the block's limit of {limit}")
    return text(value, what)


def block_spec(label_: Any, description_: Any, value: Any = "", limit_: Any = 10000) -> BlockSpec:
    """A block to create: label, description, a value within its limit, and the limit."""
    limit_ = char_limit(limit_)
    return BlockSpec(
        label=label(label_), description=description(description_), value=block_value(value, limit_), limit=limit_
    )


def distinct_labels(specs: list[BlockSpec], what: str) -> list[BlockSpec]:
    """Blocks to create together: no label twice."""
    seen: set[str] = set()
    for i, spec in enumerate(specs):
        if spec.label in seen:
            raise ValueError(f"{what}[{i}].label {spec.label!r} repeats the label of an earlier block")
        seen.add(spec.label)
    return specs


def string(value: Any, what: str) -> str:
    """Any storable text (a block's new value; its limit is the store's to check)."""
    if not isinstance(value, str):
        raise TypeError(f"{what} must be a string, got {type(value).__name__}")
    return text(value, what)


def text(value: str, what: str) -> str:
    """A string that can be stored: no lone surrogates (they have no UTF-8 encoding)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(
            f"{what} holds a lone surrogate {value[exc.start]!r} at index {exc.start}: not valid text"
        ) from None
    return value


def flag(value: Any, what: str) -> bool:
    """A true boolean: ``"no"`` or ``0`` is not silently taken for one."""
    if not isinstance(value, bool):
        raise TypeError(f"{what} must be True or False, got {value!r}")
    return value


def nonempty(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{what} must be a string, got {type(value).__name__}")
    if not value:
        raise ValueError(f"{what} must not be empty")
    return value


def run_id(value: Any) -> str:
    return nonempty(value, "run_id")


def timeout(value: Any) -> float | None:
    """Seconds to wait; None means no limit."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value or value < 0:
        raise ValueError(f"timeout must be a non-negative number of seconds or None, got {value!r}")
    return float(value)


RUN_STATUSES = ("queued", "running", "completed", "failed", "cancelled")


def run_status(value: Any) -> str | None:
    if value is not None and value not in RUN_STATUSES:
        raise ValueError(f"status must be one of {', '.join(RUN_STATUSES)}; got {value!r}")
    return value  # type: ignore[no-any-return]


def tags(value: Any, what: str = "tags") -> list[str]:
    if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
        raise TypeError(f"{what} must be a list of strings, got {type(value).__name__}")
    out: list[str] = []
    for i, tag in enumerate(value):
        if not isinstance(tag, str):
            raise TypeError(f"{what}[{i}] must be a string, got {type(tag).__name__}")
        if not 1 <= len(tag) <= MAX_TAG:
            raise ValueError(f"{what}[{i}] must be 1-{MAX_TAG} characters, got {len(tag)}")
        out.append(tag)
    return out


def query(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(f"query must be a string, got {type(value).__name__}")
    if not value.strip():
        raise ValueError("query must be a non-empty string")
    return value


def tag_match_mode(value: Any) -> str:
    if value not in ("any", "all"):
        raise ValueError(f"tag_match_mode must be 'any' or 'all', got {value!r}")
    return value  # type: ignore[no-any-return]


def version(value: Any) -> int:
    """A block version number (whether it exists is the store's to say)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"version must be an integer, got {type(value).__name__}")
    return value


def offset(value: Any, what: str = "offset") -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{what} must be an integer, got {type(value).__name__}")
    if value < 0:
        raise ValueError(f"{what} must be at least 0, got {value}")
    return value


def limit(value: Any, what: str = "limit") -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{what} must be an integer, got {type(value).__name__}")
    if value < 1:
        raise ValueError(f"{what} must be at least 1, got {value}")
    return value


def timestamp(value: Any, what: str) -> datetime:
    """An ISO 8601 string or a datetime; naive times are taken as UTC."""
    if isinstance(value, datetime):
        dt = value
    elif isinstance(value, str):
        try:
            dt = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            raise ValueError(f"{what} must be an ISO 8601 date-time, got {value!r}") from None
    else:
        raise TypeError(f"{what} must be an ISO 8601 string or a datetime, got {type(value).__name__}")
    return as_utc(dt)


def optional_timestamp(value: Any, what: str) -> datetime | None:
    return None if value is None else timestamp(value, what)


def _content(value: Any, where: str, allow_none: bool) -> str:
    if value is None:
        if allow_none:
            return ""
        raise ValueError(f"{where}.content: None is only allowed on an assistant message with tool_calls")
    if isinstance(value, str):
        return value
    if isinstance(value, (list, tuple)):
        texts: list[str] = []
        for j, part in enumerate(value):
            if isinstance(part, str):
                texts.append(part)
                continue
            if not isinstance(part, dict) or not isinstance(part.get("type"), str):
                raise TypeError(f"{where}.content[{j}] must be a content part with a 'type'")
            if part["type"] in ("text", "input_text", "output_text"):
                text = part.get("text")
                if not isinstance(text, str):
                    raise TypeError(f"{where}.content[{j}].text must be a string")
                texts.append(text)
        return "\n".join(texts)
    raise TypeError(f"{where}.content must be a string or a list of content parts, got {type(value).__name__}")


def _json_object(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise TypeError(f"{where} must be a JSON object (dict), got {type(value).__name__}")
    try:
        encoded = json.dumps(value, allow_nan=False, ensure_ascii=False)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{where} must be JSON-serialisable: {exc}") from None
    text(encoded, where)
    result: dict[str, Any] = json.loads(encoded)
    return result


_PLAIN_FIELDS = frozenset({"role", "content", "name", "metadata", "created_at", "tags"})
_MESSAGE_FIELDS = _PLAIN_FIELDS | frozenset(_OPENAI_EXTRAS)


def messages(batch: Any, *, now: datetime | None = None) -> list[MessageIn]:
    """Validate a whole batch; refuse it whole on the first problem.

    On every ``add_messages``: the usual message (a role and ASCII text) takes
    the short way through the same checks, in the same order.
    """
    if isinstance(batch, (str, bytes, dict)) or not isinstance(batch, (list, tuple)):
        raise TypeError(f"messages must be a list of message dicts, got {type(batch).__name__}")
    if not batch:
        raise ValueError("messages must contain at least one message")
    now = now or datetime.now(timezone.utc)
    out: list[MessageIn] = []
    for i, msg in enumerate(batch):
        if not isinstance(msg, dict):
            raise TypeError(f"messages[{i}] must be a dict, got {type(msg).__name__}")
        role = msg.get("role")
        if role not in ROLES:
            raise ValueError(f"messages[{i}].role must be one of {', '.join(ROLES)}; got {role!r}")
        if "content" not in msg:
            raise ValueError(f"messages[{i}].content is missing")
        content = msg["content"]
        if type(content) is not str or not content.isascii():  # ASCII text has no lone surrogate
            allow_none = role == "assistant" and bool(msg.get("tool_calls"))
            content = text(_content(content, f"messages[{i}]", allow_none), f"messages[{i}].content")
        name = msg.get("name")
        if name is not None and not isinstance(name, str):
            raise TypeError(f"messages[{i}].name must be a string, got {type(name).__name__}")
        if name is not None:
            text(name, f"messages[{i}].name")
        metadata = _json_object(msg["metadata"], f"messages[{i}].metadata") if msg.get("metadata") is not None else {}
        keys = msg.keys()
        if not keys <= _PLAIN_FIELDS:
            for key in _OPENAI_EXTRAS:
                if msg.get(key) is not None:
                    metadata.setdefault(key, _json_object({key: msg[key]}, f"messages[{i}].{key}")[key])
            unknown = keys - _MESSAGE_FIELDS
            if unknown:
                raise ValueError(f"messages[{i}]: unknown field(s) {', '.join(sorted(unknown))}")
        created = (
            timestamp(msg["created_at"], f"messages[{i}].created_at") if msg.get("created_at") is not None else now
        )
        msg_tags = tags(msg["tags"], f"messages[{i}].tags") if msg.get("tags") is not None else []
        out.append(
            MessageIn(role=role, content=content, name=name, metadata=metadata, created_at=created, tags=msg_tags)
        )
    return out


def file_specs(files: Any) -> list[dict[str, Any]]:
    """``add_files`` input: a list of dicts with ``file_path`` and optional label/description/subject_id."""
    if isinstance(files, (str, bytes, dict)) or not isinstance(files, Iterable):
        raise TypeError("files must be a list of dicts with a 'file_path'")
    out = []
    for i, spec in enumerate(files):
        if not isinstance(spec, dict):
            raise TypeError(f"files[{i}] must be a dict, got {type(spec).__name__}")
        path = spec.get("file_path")
        if isinstance(path, os.PathLike):
            path = os.fspath(path)
        if not isinstance(path, str) or not path:
            raise ValueError(f"files[{i}].file_path must be a path (a non-empty string or os.PathLike), got {path!r}")
        unknown = set(spec) - {"file_path", "label", "description", "subject_id"}
        if unknown:
            raise ValueError(f"files[{i}]: unknown field(s) {', '.join(sorted(unknown))}")
        out.append({**spec, "file_path": path})
    if not out:
        raise ValueError("files must contain at least one file")
    return out


def session_items(items: Any) -> list[dict[str, Any]]:
    """Items of an agent session: JSON objects, stored and returned exactly (a JSON round trip of each)."""
    if isinstance(items, (str, bytes, dict)) or not isinstance(items, (list, tuple)):
        raise TypeError(f"items must be a list of item dicts, got {type(items).__name__}")
    return [_json_object(item, f"items[{i}]") for i, item in enumerate(items)]


def session_limit(value: Any) -> int | None:
    """How many of a session's latest items to read: None (or a negative number, as SQLite reads it) means all."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"limit must be an integer or None, got {type(value).__name__}")
    return None if value < 0 else value
