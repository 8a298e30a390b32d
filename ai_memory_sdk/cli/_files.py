"""Message files for ``ai-memory ingest``: JSON or JSON Lines, told apart by content, checked whole before storing.

Every problem is reported as ``FILE line N: ...`` so the user can open the
file at the right place; nothing is stored unless every message is valid.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import _validation as check
from ._errors import UsageError

_WS = re.compile(r"\s*")
_DECODER = json.JSONDecoder()
_FORMS = "a JSON list of messages, an object with a 'messages' list, or JSON Lines (one message per line)"


@dataclass(frozen=True)
class Record:
    """One message of the file and the line it starts on (1-based)."""

    line: int
    message: Any


def read_messages(path: Path) -> list[Record]:
    """Every message of the file, each validated as ``add_messages`` would; ``UsageError`` names file and line."""
    records = _parse(path, _read_text(path))
    if not records:
        raise UsageError(f"{path}: no messages in the file")
    for record in records:
        try:
            check.messages([record.message])
        except (TypeError, ValueError) as exc:
            raise UsageError(f"{path} line {record.line}: {str(exc).replace('messages[0]', 'message')}") from None
    return records


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise UsageError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise UsageError(f"{path}: is a directory, not a file of messages") from None
    except UnicodeDecodeError as exc:
        raise UsageError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise UsageError(f"{path}: cannot read: {exc.strerror or exc}") from None


def _parse(path: Path, text: str) -> list[Record]:
    """One JSON document if the whole text is one; JSON Lines if its first line is a JSON value by itself."""
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        lines = text.split("\n")
        first = next((line for line in lines if line.strip()), None)
        if first is None:
            raise UsageError(f"{path}: the file is empty; expected {_FORMS}") from None
        if not _is_json(first):
            raise UsageError(f"{path} line {exc.lineno}: invalid JSON: {exc.msg} (column {exc.colno})") from None
        return _json_lines(path, lines)
    start = _skip(text, 0)
    if isinstance(document, list):
        return _array_records(text, start)
    if isinstance(document, dict) and isinstance(document.get("messages"), list):
        return _array_records(text, _member_start(text, start, "messages"))
    if isinstance(document, dict) and "role" in document:  # JSON Lines with a single message
        return [Record(_line_of(text, start), document)]
    raise UsageError(f"{path}: expected {_FORMS}; got a JSON {type(document).__name__}")


def _is_json(line: str) -> bool:
    try:
        json.loads(line)
    except json.JSONDecodeError:
        return False
    return True


def _json_lines(path: Path, lines: list[str]) -> list[Record]:
    # split on "\n" only: str.splitlines() would also cut at U+2028, which JSON strings may hold raw
    records = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            records.append(Record(number, json.loads(line)))
        except json.JSONDecodeError as exc:
            raise UsageError(f"{path} line {number}: invalid JSON: {exc.msg} (column {exc.colno})") from None
    return records


def _line_of(text: str, offset: int) -> int:
    return text.count("\n", 0, offset) + 1


def _skip(text: str, pos: int) -> int:
    """The first non-space position at or after ``pos``."""
    match = _WS.match(text, pos)
    return match.end() if match else pos


def _array_records(text: str, pos: int) -> list[Record]:
    """The elements of the JSON array at ``pos`` (a valid document) with the line each starts on."""
    records: list[Record] = []
    pos = _skip(text, pos + 1)
    while text[pos] != "]":
        value, end = _DECODER.raw_decode(text, pos)
        records.append(Record(_line_of(text, pos), value))
        pos = _skip(text, end)
        if text[pos] == ",":
            pos = _skip(text, pos + 1)
    return records


def _member_start(text: str, pos: int, key: str) -> int:
    """Where the value of ``key`` starts in the JSON object at ``pos`` (the last one wins, as in ``json``)."""
    found = -1
    pos = _skip(text, pos + 1)
    while text[pos] != "}":
        name, end = _DECODER.raw_decode(text, pos)
        pos = _skip(text, _skip(text, end) + 1)  # past the ':'
        if name == key:
            found = pos
        _, end = _DECODER.raw_decode(text, pos)
        pos = _skip(text, end)
        if text[pos] == ",":
            pos = _skip(text, pos + 1)
    return found
