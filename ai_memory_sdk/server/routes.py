"""The ``/v1`` routes: one per method of the engine protocol, on the requesting tenant's view of the engine.

Each handler checks its input with the library's own checks (``_validation``),
calls the tenant's engine, and answers JSON. Where the engine reads an unknown
subject, run or message as empty, the HTTP API answers 404 instead (a tenant
cannot tell another tenant's ids from ids that never existed); the ``remote``
engine reads that 404 back as the empty value. Handlers are plain functions,
run in the handler threads; only the long poll (``wait``) is a coroutine, and
it waits in threads of its own.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Annotated, Any, TypeVar
from urllib.parse import unquote

import anyio.to_thread
from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.routing import APIRoute
from pydantic import TypeAdapter
from starlette.responses import Response
from starlette.routing import Match
from starlette.types import Scope

from .. import _validation as check
from ..engines.local import LocalEngine
from ..errors import BlockNotFoundError, RunNotFoundError, SubjectNotFoundError
from ..models import Block, BlockSpec, BlockVersion, Run, SearchResult, StoredMessage, SubjectSummary
from . import api
from .errors import error_response
from .limits import retry_after
from .request_ids import RUNS, request_id
from .state import state_of, tenant_of

T = TypeVar("T")
_SLICE = 1.0  # a long poll re-enters the store's wait this often, to notice shutdown and a departed client


class EncodedRoute(APIRoute):
    """A route matched on the raw path (see ``gateway``); its path parameters are decoded once matched."""

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        match, child = super().matches(scope)
        params = child.get("path_params")
        if match is not Match.NONE and params:
            child["path_params"] = {k: unquote(v) if isinstance(v, str) else v for k, v in params.items()}
        return match, child


_ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": api.ErrorBody, "description": text}
    for status, text in (
        (400, "A bad value (`ValueError`): the message names the argument"),
        (401, "Missing, malformed, unknown or revoked key"),
        (404, "No such subject, block, run or message in this tenant"),
        (409, "A conflict: the subject exists, or the run's status does not allow it"),
        (413, "The body is over the server's size limit"),
        (422, "A value of the wrong type, or a request that does not fit the route"),
        (429, "The key is over its request rate (see `Retry-After`)"),
        (503, "The store is unavailable, or too many long polls are held (see `Retry-After`)"),
    )
}

router = APIRouter(route_class=EncodedRoute, responses=_ERRORS)


async def _tenant_engine(request: Request) -> LocalEngine:
    return state_of(request).tenant_engine(tenant_of(request))


Tenant = Annotated[LocalEngine, Depends(_tenant_engine)]

# Parameters are documented with their rules and checked by the library's own checks in the handlers.
SubjectId = Annotated[
    str,
    Path(
        description="1-256 characters, no control characters; percent-encoded (a '/' in an id is %2F)",
        json_schema_extra={"minLength": 1, "maxLength": 256, "pattern": "^[^\\x00-\\x1f\\x7f-\\x9f]+$"},
    ),
]
Label = Annotated[str, Path(description="the block's label", json_schema_extra=api.LABEL_SCHEMA)]
Limit = Annotated[int | None, Query(description="at most this many (at least 1)", json_schema_extra={"minimum": 1})]
When = Annotated[str | None, Query(description="an ISO 8601 date-time", json_schema_extra={"format": "date-time"})]

_ANY = TypeAdapter(Any)


def _json(adapter: TypeAdapter[T], value: T, status: int = 200) -> Response:
    return Response(adapter.dump_json(value), status, media_type="application/json")


def _model(value: Any, status: int = 200) -> Response:
    return Response(value.model_dump_json(), status, media_type="application/json")


def _no_content() -> Response:
    return Response(status_code=204)


def _require_subject(engine: LocalEngine, sid: str) -> None:
    if engine.agent_id(sid) is None:
        raise SubjectNotFoundError(f"subject {sid!r} not found")


def _require_run(engine: LocalEngine, rid: str) -> Run:
    run = engine.get_run(rid)
    if run is None:
        raise RunNotFoundError(f"Run {rid} not found")
    return run


def _specs(blocks: Sequence[api.BlockSpecIn], what: str) -> list[BlockSpec]:
    return check.distinct_labels([check.block_spec(b.label, b.description, b.value, b.limit) for b in blocks], what)


def _queued(request: Request, run_id: str) -> None:
    """Tie the run to this request: its access-log line names the run, the run's log lines the request."""
    request.scope["state"]["run_id"] = run_id
    rid = request_id.get()
    if rid is not None:
        RUNS.record(run_id, rid)


# -- subjects -----------------------------------------------------------------------------------------


@router.get(api.SUBJECTS, response_model=list[SubjectSummary], summary="list_subjects")
def list_subjects(
    engine: Tenant,
    query: str | None = None,
    offset: Annotated[int, Query(json_schema_extra={"minimum": 0})] = 0,
    limit: Annotated[int, Query(json_schema_extra={"minimum": 1})] = 50,
) -> Response:
    """The tenant's subjects ordered by id; ``query`` keeps ids containing it (case-insensitive)."""
    found = engine.list_subjects(query=query, offset=check.offset(offset), limit=check.limit(limit))
    return _json(api.SUBJECTS_JSON, found)


@router.get(api.SUBJECT_COUNT, response_model=api.Count, summary="count_subjects")
def count_subjects(engine: Tenant, query: str | None = None) -> Response:
    """How many subjects the tenant has (whose id contains ``query``)."""
    return _model(api.Count(count=engine.count_subjects(query=query)))


@router.get(api.SUBJECT, response_model=api.SubjectOut, summary="agent_id")
def get_subject(subject_id: SubjectId, engine: Tenant) -> Response:
    """The subject's memory agent id (stable for the subject's life)."""
    sid = check.subject_id(subject_id)
    agent = engine.agent_id(sid)
    if agent is None:
        raise SubjectNotFoundError(f"subject {sid!r} not found")
    return _model(api.SubjectOut(subject_id=sid, agent_id=agent))


@router.put(api.SUBJECT, status_code=201, response_model=api.AgentId, summary="create_subject")
def create_subject(subject_id: SubjectId, engine: Tenant, body: api.CreateSubject | None = None) -> Response:
    """Create a subject with these blocks (409 ``SubjectExistsError`` if it exists, unless ``reset``)."""
    sid = check.subject_id(subject_id)
    body = body or api.CreateSubject()
    agent = engine.create_subject(sid, reset=check.flag(body.reset, "reset"), blocks=_specs(body.blocks, "blocks"))
    return _model(api.AgentId(agent_id=agent), 201)


@router.delete(api.SUBJECT, status_code=204, summary="delete_subject")
def delete_subject(subject_id: SubjectId, engine: Tenant) -> Response:
    """Erase everything stored about the subject."""
    sid = check.subject_id(subject_id)
    _require_subject(engine, sid)
    engine.delete_subject(sid)
    return _no_content()


# -- blocks -------------------------------------------------------------------------------------------


@router.get(api.BLOCKS, response_model=list[Block], summary="list_blocks")
def list_blocks(subject_id: SubjectId, engine: Tenant) -> Response:
    """The subject's blocks in creation order."""
    sid = check.subject_id(subject_id)
    blocks = engine.list_blocks(sid)
    if not blocks:
        _require_subject(engine, sid)
    return _json(api.BLOCKS_JSON, blocks)


@router.get(api.BLOCK, response_model=api.BlockText, summary="block_text")
def get_block(subject_id: SubjectId, label: Label, engine: Tenant) -> Response:
    """One block's description and value."""
    sid, lbl = check.subject_id(subject_id), check.label(label)
    text = engine.block_text(sid, lbl)
    if text is None:
        _require_subject(engine, sid)
        raise BlockNotFoundError(f"subject {sid!r} has no block labelled {lbl!r}")
    return _model(api.BlockText(label=lbl, description=text[0], value=text[1]))


@router.put(api.BLOCK, response_model=api.BlockId, summary="create_block")
def create_block(subject_id: SubjectId, label: Label, body: api.CreateBlock, engine: Tenant) -> Response:
    """Create a block (and the subject if missing); an existing label is kept unless ``reset``."""
    sid = check.subject_id(subject_id)
    spec = check.block_spec(label, body.description, body.value, body.limit)
    return _model(api.BlockId(block_id=engine.create_block(sid, spec, reset=check.flag(body.reset, "reset"))))


@router.patch(api.BLOCK, status_code=204, summary="set_block_value")
def set_block(subject_id: SubjectId, label: Label, body: api.SetBlockValue, engine: Tenant) -> Response:
    """Set a block's value directly (checked against its limit, recorded in its history)."""
    engine.set_block_value(check.subject_id(subject_id), check.label(label), check.string(body.value, "value"))
    return _no_content()


@router.delete(api.BLOCK, status_code=204, summary="delete_block")
def delete_block(subject_id: SubjectId, label: Label, engine: Tenant) -> Response:
    """Delete a block and its history."""
    sid, lbl = check.subject_id(subject_id), check.label(label)
    if engine.block_text(sid, lbl) is None:
        _require_subject(engine, sid)
        raise BlockNotFoundError(f"subject {sid!r} has no block labelled {lbl!r}")
    engine.delete_block(sid, lbl)
    return _no_content()


@router.get(api.BLOCK_HISTORY, response_model=list[BlockVersion], summary="block_history")
def block_history(subject_id: SubjectId, label: Label, engine: Tenant) -> Response:
    """A block's stored versions, oldest first."""
    return _json(api.VERSIONS_JSON, engine.block_history(check.subject_id(subject_id), check.label(label)))


@router.post(api.BLOCK_RESTORE, response_model=api.Value, summary="restore_block")
def restore_block(subject_id: SubjectId, label: Label, body: api.RestoreBlock, engine: Tenant) -> Response:
    """Make an earlier version the block's value (a new version); answers that value."""
    sid, lbl = check.subject_id(subject_id), check.label(label)
    return _model(api.Value(value=engine.restore_block(sid, lbl, check.version(body.version))))


# -- messages and runs --------------------------------------------------------------------------------


@router.post(api.MESSAGES, status_code=202, response_model=api.RunId, summary="add_messages")
def add_messages(subject_id: SubjectId, body: api.AddMessages, request: Request, engine: Tenant) -> Response:
    """Store a batch durably and queue it for learning; answers once it is committed."""
    sid = check.subject_id(subject_id)
    messages = check.messages(body.messages)
    archive = check.flag(body.archive, "archive")
    run_id = engine.add_messages(
        sid, messages, archive=archive, default_blocks=_specs(body.default_blocks, "default_blocks")
    )
    _queued(request, run_id)
    return _model(api.RunId(run_id=run_id), 202)


@router.post(api.CONSOLIDATE, status_code=202, response_model=api.RunId, summary="consolidate")
def consolidate(subject_id: SubjectId, request: Request, engine: Tenant) -> Response:
    """Queue a consolidation run of the subject's blocks."""
    run_id = engine.consolidate(check.subject_id(subject_id))
    _queued(request, run_id)
    return _model(api.RunId(run_id=run_id), 202)


@router.get(api.MESSAGES, response_model=list[StoredMessage], summary="get_messages")
def get_messages(
    subject_id: SubjectId,
    engine: Tenant,
    limit: Limit = None,
    before: When = None,
    after: When = None,
) -> Response:
    """Stored messages, oldest first (``limit``: the newest ones in the window)."""
    sid = check.subject_id(subject_id)
    found = engine.get_messages(
        sid,
        limit=None if limit is None else check.limit(limit),
        before=check.optional_timestamp(before, "before"),
        after=check.optional_timestamp(after, "after"),
    )
    if not found:
        _require_subject(engine, sid)
    return _json(api.MESSAGES_JSON, found)


@router.delete(api.MESSAGE, status_code=204, summary="delete_message")
def delete_message(message_id: str, engine: Tenant) -> Response:
    """Remove a stored message and its passage."""
    mid = check.nonempty(message_id, "message_id")
    # The engine protocol's delete_message answers nothing; the tenant's store says whether it found one.
    if not engine.store.delete_message(mid):
        return error_response(404, api.MESSAGE_NOT_FOUND, f"message {mid!r} not found")
    return _no_content()


@router.get(api.RUN, response_model=Run, summary="get_run")
def get_run(run_id: str, engine: Tenant) -> Response:
    """A run's status, kind, times, learner and LLM usage."""
    return _json(api.RUN_JSON, _require_run(engine, check.run_id(run_id)))


@router.get(api.RUN_WAIT, response_model=Run, summary="wait_for_run")
async def wait_for_run(
    run_id: str,
    request: Request,
    engine: Tenant,
    timeout: Annotated[
        float | None,
        Query(description="seconds to wait at most (default: the server's bound)", json_schema_extra={"minimum": 0}),
    ] = None,
) -> Response:
    """Long poll: answers the run as soon as it ends, or as it is after ``timeout`` seconds (at most the server's
    bound, 25 s by default); a client that wants to wait longer asks again."""
    rid = check.run_id(run_id)
    wanted = check.timeout(timeout)
    server = state_of(request)
    bound = server.settings.long_poll_seconds if wanted is None else min(wanted, server.settings.long_poll_seconds)
    if not server.long_polls.enter():
        message = f"{server.long_polls.limit} long polls are held already; ask again shortly"
        return error_response(503, "Overloaded", message, {"Retry-After": retry_after(1)})
    try:
        deadline = time.monotonic() + bound
        while True:
            left = max(0.0, deadline - time.monotonic())
            try:
                run = await anyio.to_thread.run_sync(
                    engine.wait_for_run, rid, min(left, _SLICE), limiter=server.poll_threads
                )
            except TimeoutError:
                if left > _SLICE and not server.stopping.is_set() and not await request.is_disconnected():
                    continue
                run = await anyio.to_thread.run_sync(_require_run, engine, rid, limiter=server.poll_threads)
            return _json(api.RUN_JSON, run)
    finally:
        server.long_polls.leave()


@router.get(api.SUBJECT_RUNS, response_model=list[Run], summary="list_runs")
def list_runs(
    subject_id: SubjectId,
    engine: Tenant,
    status: Annotated[str | None, Query(json_schema_extra={"enum": [*check.RUN_STATUSES, None]})] = None,
) -> Response:
    """The subject's runs, oldest first, optionally of one status."""
    sid = check.subject_id(subject_id)
    runs = engine.list_runs(sid, check.run_status(status))
    if not runs:
        _require_subject(engine, sid)
    return _json(api.RUNS_JSON, runs)


@router.post(api.RUN_CANCEL, response_model=Run, summary="cancel_run")
def cancel_run(run_id: str, engine: Tenant) -> Response:
    """Cancel a queued run (409 ``RunStateError`` otherwise); its messages stay stored."""
    return _json(api.RUN_JSON, engine.cancel_run(check.run_id(run_id)))


@router.post(api.RUN_RETRY, response_model=Run, summary="retry_run")
def retry_run(run_id: str, request: Request, engine: Tenant) -> Response:
    """Put a failed run back on the queue (409 ``RunStateError`` otherwise)."""
    run = engine.retry_run(check.run_id(run_id))
    _queued(request, run.id)
    return _json(api.RUN_JSON, run)


@router.get(api.RUN_MESSAGES, response_model=list[StoredMessage], summary="run_messages")
def run_messages(run_id: str, engine: Tenant) -> Response:
    """The messages a run was queued with, in storage order."""
    rid = check.run_id(run_id)
    found = engine.run_messages(rid)
    if not found:
        _require_run(engine, rid)
    return _json(api.MESSAGES_JSON, found)


@router.get(api.RUN_TRACE, response_model=dict[str, Any], summary="get_trace")
def get_trace(run_id: str, engine: Tenant) -> Response:
    """The trace of the pass that learned the run: what the learner saw, its steps and edits."""
    rid = check.run_id(run_id)
    trace = engine.get_trace(rid)
    if trace is None:
        _require_run(engine, rid)
        return error_response(404, api.TRACE_NOT_FOUND, f"run {rid} has no trace (not learned yet, or tracing off)")
    return _json(_ANY, trace)


# -- search -------------------------------------------------------------------------------------------


@router.post(api.SEARCH, response_model=list[SearchResult], summary="search")
def search(subject_id: SubjectId, body: api.Search, engine: Tenant) -> Response:
    """Archived passages of the subject, best first, filtered by tags and time."""
    sid = check.subject_id(subject_id)
    results = engine.search(
        sid,
        check.query(body.query),
        tags=check.tags(body.tags),
        tag_match_mode=check.tag_match_mode(body.tag_match_mode),
        limit=check.limit(body.limit),
        start=check.optional_timestamp(body.start, "start"),
        end=check.optional_timestamp(body.end, "end"),
    )
    if not results:
        _require_subject(engine, sid)
    return _json(api.RESULTS_JSON, results)


# -- sessions -----------------------------------------------------------------------------------------
# A session exists once items are added to it: an unknown one reads as empty (never another tenant's items).


@router.get(api.SESSION_ITEMS, response_model=list[dict[str, Any]], summary="session_items")
def session_items(
    session_id: str,
    engine: Tenant,
    limit: Annotated[int | None, Query(description="the latest this many (none, or negative: all)")] = None,
) -> Response:
    """The latest ``limit`` items of a session, in order."""
    sid = check.subject_id(session_id, "session_id")
    return _json(api.ITEMS_JSON, engine.session_items(sid, check.session_limit(limit)))


@router.post(api.SESSION_ITEMS, status_code=204, summary="add_session_items")
def add_session_items(session_id: str, body: api.AddSessionItems, engine: Tenant) -> Response:
    """Append items to a session bound to ``subject_id``."""
    sid = check.subject_id(session_id, "session_id")
    items = check.session_items(body.items)
    engine.add_session_items(sid, items, subject_id=check.subject_id(body.subject_id))
    return _no_content()


@router.post(api.SESSION_POP, response_model=api.SessionItem, summary="pop_session_item")
def pop_session_item(session_id: str, engine: Tenant) -> Response:
    """Remove and answer a session's latest item (``null`` when it is empty)."""
    return _model(api.SessionItem(item=engine.pop_session_item(check.subject_id(session_id, "session_id"))))


@router.delete(api.SESSION, status_code=204, summary="clear_session")
def clear_session(session_id: str, engine: Tenant) -> Response:
    """Remove every item of a session."""
    engine.clear_session(check.subject_id(session_id, "session_id"))
    return _no_content()
