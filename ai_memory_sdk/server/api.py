"""The HTTP API as both sides see it: routes, request bodies, response shapes and error types.

The server (``server/routes.py``) registers these routes and parses these
bodies; the ``remote`` engine (``engines/remote.py``) builds the same paths and
bodies and maps the same error types back to exceptions. Each route is one
method of the engine protocol (``engines/base.py``). This module needs only
pydantic, so the client never imports the server's dependencies.

Request fields that the library validates (``_validation``) are typed ``Any``
here, with their JSON schema spelled out for ``/openapi.json``: the handler runs
the library's own check on them, so a bad value gets the library's message.
"""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import quote

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, WithJsonSchema

from .._validation import MAX_CHAR_LIMIT, MAX_DESCRIPTION, MAX_TAG, ROLES
from ..errors import (
    BlockNotFoundError,
    MemoryClosedError,
    RunNotFoundError,
    RunStateError,
    StoreError,
    SubjectExistsError,
    SubjectNotFoundError,
    UnsupportedByEngineError,
)
from ..models import Block, BlockVersion, Run, SearchResult, StoredMessage, SubjectSummary

# -- routes ------------------------------------------------------------------------------------------

SUBJECTS = "/v1/subjects"
SUBJECT_COUNT = "/v1/subjects:count"
SUBJECT = "/v1/subjects/{subject_id}"
BLOCKS = SUBJECT + "/blocks"
BLOCK = BLOCKS + "/{label}"
BLOCK_HISTORY = BLOCK + "/history"
BLOCK_RESTORE = BLOCK + "/restore"
MESSAGES = SUBJECT + "/messages"
CONSOLIDATE = SUBJECT + "/consolidate"
SUBJECT_RUNS = SUBJECT + "/runs"
SEARCH = SUBJECT + "/search"
MESSAGE = "/v1/messages/{message_id}"
RUN = "/v1/runs/{run_id}"
RUN_WAIT = RUN + "/wait"
RUN_CANCEL = RUN + "/cancel"
RUN_RETRY = RUN + "/retry"
RUN_MESSAGES = RUN + "/messages"
RUN_TRACE = RUN + "/trace"
SESSION = "/v1/sessions/{session_id}"
SESSION_ITEMS = SESSION + "/items"
SESSION_POP = SESSION + "/pop"

API_PREFIX = "/v1/"
"""Paths under this prefix are routed on the raw (still percent-encoded) path, so an id may contain ``/``."""

LONG_POLL_SECONDS = 25.0
"""The longest a ``wait`` request is held by default; the client asks again until its own timeout."""


def path(template: str, **params: str) -> str:
    """A route with its parameters percent-encoded (``/`` included: ids may contain any character)."""
    return template.format(**{name: _segment(value) for name, value in params.items()})


def _segment(value: str) -> str:
    encoded = quote(value, safe="", errors="strict")
    # "." and ".." would be resolved away as relative path segments by clients and proxies.
    return encoded.replace(".", "%2E") if set(encoded) <= {"."} else encoded


# -- errors ------------------------------------------------------------------------------------------

ERRORS: tuple[tuple[type[Exception], int], ...] = (
    (SubjectExistsError, 409),
    (RunStateError, 409),
    (RunNotFoundError, 404),
    (BlockNotFoundError, 404),
    (SubjectNotFoundError, 404),
    (StoreError, 503),
    (MemoryClosedError, 503),
    (UnsupportedByEngineError, 501),
    (TypeError, 422),
    (ValueError, 400),
    (OverflowError, 400),
)
"""Library exceptions and their HTTP statuses, most specific first; the body's ``type`` is the class name."""

MESSAGE_NOT_FOUND = "MessageNotFoundError"
TRACE_NOT_FOUND = "TraceNotFoundError"
"""404 types with no exception class: the engine protocol reads those as None."""


def error_for(exc: BaseException) -> tuple[int, str] | None:
    """(status, type) of a library exception, or None for one the server has no answer for (a bug: 500)."""
    for cls, status in ERRORS:
        if isinstance(exc, cls):
            if cls is OverflowError:  # a number too large for the store: a bad value like any other
                return status, "ValueError"
            return status, cls.__name__
    return None


ERROR_CLASSES: dict[str, type[Exception]] = {cls.__name__: cls for cls, _ in ERRORS if cls is not OverflowError}


class ErrorInfo(BaseModel):
    """What went wrong: ``type`` is the exception class (``ValueError``, ``RunNotFoundError``, ...) or an HTTP-level
    kind (``Unauthorized``, ``PayloadTooLarge``, ``RateLimited``, ``Overloaded``, ``NotFound``, ``ValidationError``)."""

    model_config = ConfigDict(extra="allow")

    type: str
    message: str


class ErrorBody(BaseModel):
    error: ErrorInfo


# -- request bodies ----------------------------------------------------------------------------------


def _checked(schema: dict[str, Any]) -> Any:
    """A field validated by the library's own check in the handler; ``schema`` documents it."""
    return WithJsonSchema(schema)


_STR = {"type": "string"}
_BOOL = {"type": "boolean"}
_INT = {"type": "integer"}
LABEL_SCHEMA = {"type": "string", "pattern": r"^[A-Za-z_][A-Za-z0-9_.-]*$", "minLength": 1, "maxLength": 64}
_DESCRIPTION = {"type": "string", "maxLength": MAX_DESCRIPTION}
_CHAR_LIMIT = {"type": "integer", "minimum": 1, "maximum": MAX_CHAR_LIMIT}
_TAGS = {"type": "array", "items": {"type": "string", "minLength": 1, "maxLength": MAX_TAG}}
_TIME = {"anyOf": [{"type": "string", "format": "date-time"}, {"type": "null"}]}
_MESSAGE = {
    "type": "object",
    "description": "A chat message in the OpenAI format (docs/api.md, 'Messages').",
    "properties": {
        "role": {"type": "string", "enum": list(ROLES)},
        "content": {
            "anyOf": [{"type": "string"}, {"type": "array", "items": {}}, {"type": "null"}],
            "description": "text, or content parts whose text parts are joined",
        },
        "name": {"type": "string"},
        "metadata": {"type": "object"},
        "created_at": {"type": "string", "format": "date-time"},
        "tags": _TAGS,
        "tool_calls": {"type": "array", "items": {}},
        "tool_call_id": {"type": "string"},
    },
    "required": ["role", "content"],
}


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class BlockSpecIn(_Body):
    """A block to create (``limit``: its character limit)."""

    label: Annotated[Any, _checked(LABEL_SCHEMA)]
    description: Annotated[Any, _checked(_DESCRIPTION)]
    value: Annotated[Any, _checked(_STR)] = ""
    limit: Annotated[Any, _checked(_CHAR_LIMIT)] = 10000


class CreateSubject(_Body):
    """``create_subject``: a subject with these blocks; ``reset`` erases an existing one first."""

    reset: Annotated[Any, _checked(_BOOL)] = False
    blocks: list[BlockSpecIn] = Field(default_factory=list)


class CreateBlock(_Body):
    """``create_block``: an existing label is kept as it is (its id returned) unless ``reset``."""

    description: Annotated[Any, _checked(_DESCRIPTION)]
    value: Annotated[Any, _checked(_STR)] = ""
    limit: Annotated[Any, _checked(_CHAR_LIMIT)] = 10000
    reset: Annotated[Any, _checked(_BOOL)] = False


class SetBlockValue(_Body):
    """``set_block_value``: a direct edit, checked against the block's limit and recorded in its history."""

    value: Annotated[Any, _checked(_STR)]


class RestoreBlock(_Body):
    """``restore_block``: make an earlier version the current value (as a new version)."""

    version: Annotated[Any, _checked(_INT)]


class AddMessages(_Body):
    """``add_messages``: store a batch and queue its run; the subject is created with ``default_blocks`` if new."""

    messages: Annotated[Any, _checked({"type": "array", "items": _MESSAGE, "minItems": 1})]
    archive: Annotated[Any, _checked(_BOOL)] = False
    default_blocks: list[BlockSpecIn] = Field(default_factory=list)


class Search(_Body):
    """``search``: passages of the subject, best first; ``tags`` as in ``search_passages`` (``[]``: every role)."""

    query: Annotated[Any, _checked({"type": "string", "minLength": 1})]
    tags: Annotated[Any, _checked(_TAGS)] = Field(default_factory=lambda: ["user"])
    tag_match_mode: Annotated[Any, _checked({"type": "string", "enum": ["any", "all"]})] = "any"
    limit: Annotated[Any, _checked({"type": "integer", "minimum": 1})] = 10
    start: Annotated[Any, _checked(_TIME)] = None
    end: Annotated[Any, _checked(_TIME)] = None


class AddSessionItems(_Body):
    """``add_session_items``: append JSON objects to a session bound to ``subject_id``."""

    items: Annotated[Any, _checked({"type": "array", "items": {"type": "object"}})]
    subject_id: Annotated[Any, _checked({"type": "string", "minLength": 1, "maxLength": 256})]


# -- response bodies ---------------------------------------------------------------------------------


class SubjectOut(BaseModel):
    subject_id: str
    agent_id: str


class AgentId(BaseModel):
    agent_id: str


class Count(BaseModel):
    count: int


class BlockText(BaseModel):
    """One block's description and value (the hot path of prompt formatting)."""

    label: str
    description: str
    value: str


class BlockId(BaseModel):
    block_id: str


class RunId(BaseModel):
    run_id: str


class Value(BaseModel):
    value: str


class SessionItem(BaseModel):
    item: dict[str, Any] | None


class Status(BaseModel):
    status: str
    checks: dict[str, str] = Field(default_factory=dict)


# The JSON bodies of the answers, read by the remote engine and written by the routes with the same adapters.
SUBJECTS_JSON = TypeAdapter(list[SubjectSummary])
BLOCKS_JSON = TypeAdapter(list[Block])
VERSIONS_JSON = TypeAdapter(list[BlockVersion])
RUNS_JSON = TypeAdapter(list[Run])
RUN_JSON = TypeAdapter(Run)
MESSAGES_JSON = TypeAdapter(list[StoredMessage])
RESULTS_JSON = TypeAdapter(list[SearchResult])
ITEMS_JSON = TypeAdapter(list[dict[str, Any]])
