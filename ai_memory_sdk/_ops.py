"""The facade's logic, written once for ``Memory`` and ``AsyncMemory``.

Each public method is a generator here: it checks its arguments
(``_validation``), yields the engine calls it needs as ``Call`` objects, and
returns the shaped result (prompt formatting, run-outcome errors). ``Memory``
drives a generator with direct engine calls, ``AsyncMemory`` with awaited ones
(a thread for the embedded engines, an async HTTP client for ``remote``), so
neither face repeats any of it. An engine's exception is thrown back into
the generator, so an op can translate it.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from datetime import datetime
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

from . import _validation as check
from . import formatting
from ._text import split_text
from .errors import RunCancelledError, RunFailedError, RunNotFoundError, SubjectExistsError
from .models import Block, BlockSpec, BlockVersion, Run, SearchResult, StoredMessage

T = TypeVar("T")
FILE_PART_CHARS = 4000
USER_PROMPT = "Details about the human user you are speaking to."
SUMMARY_PROMPT = "A short (1-2 sentences) running summary of the conversation."


class Call(NamedTuple):
    """One engine method call an op needs (``engines.base.Engine``); a tuple: built on every call of the facade."""

    method: str
    args: tuple[Any, ...]
    kwargs: dict[str, Any]


Op = Generator[Call, Any, T]


def call(method: str, *args: Any, **kwargs: Any) -> Call:
    return Call(method, args, kwargs)


def subject(bound: str | None, subject_id: str | None) -> str:
    """The explicit subject, else the one the ``Memory`` is bound to."""
    sid = subject_id or bound
    if not sid:
        raise ValueError(
            "No subject_id provided and instance is not bound to a subject. "
            "Pass subject_id=... or initialize Memory(subject_id=...)."
        )
    return check.subject_id(sid)


def _user_blocks(prompt: str, limit: int, value: str, summary_prompt: str, summary_limit: int) -> list[BlockSpec]:
    human_limit = check.char_limit(limit, "user_context_block_char_limit")
    return [
        BlockSpec(
            label="human",
            description=check.description(prompt, "user_context_block_prompt"),
            limit=human_limit,
            value=check.block_value(value, human_limit, "user_context_block_value"),
        ),
        BlockSpec(
            label="summary",
            description=check.description(summary_prompt, "summary_block_prompt"),
            limit=check.char_limit(summary_limit, "summary_block_char_limit"),
            value="",
        ),
    ]


DEFAULT_USER_BLOCKS = _user_blocks(USER_PROMPT, 10000, "", SUMMARY_PROMPT, 1000)


# -- user helpers (0.2.0) ---------------------------------------------------------------------------


def initialize_user_memory(
    user_id: str,
    prompt: str,
    limit: int,
    value: str,
    summary_prompt: str,
    summary_limit: int,
    reset: bool,
) -> Op[str]:
    uid = check.subject_id(user_id, "user_id")
    blocks = _user_blocks(prompt, limit, value, summary_prompt, summary_limit)
    try:
        agent_id: str = yield call("create_subject", uid, reset=check.flag(reset, "reset"), blocks=blocks)
    except SubjectExistsError as exc:
        raise SubjectExistsError(exc.agent_id, exc.subject_id, noun="user") from None
    return agent_id


def add_messages(bound: str | None, user_or_messages: Any, messages: Any, skip_vector_storage: Any) -> Op[str]:
    archive = not check.flag(skip_vector_storage, "skip_vector_storage")
    if isinstance(user_or_messages, str):
        if messages is None:
            raise ValueError("messages must be provided when calling add_messages(user_id, messages, ...)")
        uid = check.subject_id(user_or_messages, "user_id")
        run_id: str = yield call(
            "add_messages", uid, check.messages(messages), archive=archive, default_blocks=DEFAULT_USER_BLOCKS
        )
        return run_id
    if not isinstance(user_or_messages, (list, tuple)):
        raise ValueError("First argument must be a user_id (str) or a messages list (List[Dict]).")
    if messages is not None:
        raise TypeError("add_messages(messages, ...) takes no second messages list")
    return (yield from add_messages_for_subject(subject(bound, None), list(user_or_messages), skip_vector_storage))


def user_block(user_id: str, label: str, prompt_formatted: bool) -> Op[str | None]:
    uid = check.subject_id(user_id, "user_id")
    text: tuple[str, str] | None = yield call("block_text", uid, label)
    if text is None:
        return None
    if not check.flag(prompt_formatted, "prompt_formatted"):
        return text[1]
    return formatting.format_summary(text[1]) if label == "summary" else formatting.format_block(label, *text)


def get_memory_agent_id(user_id: str) -> Op[str | None]:
    agent: str | None = yield call("agent_id", check.subject_id(user_id, "user_id"))
    return agent


def delete_user(user_id: str) -> Op[None]:
    yield call("delete_subject", check.subject_id(user_id, "user_id"))


def search(user_id: str, query: str, tags: Any, limit: Any) -> Op[list[str]]:
    results = yield from search_passages(check.subject_id(user_id, "user_id"), query, tags, "any", limit, None, None)
    return [r.content for r in results]


# -- subject API (0.2.0) ----------------------------------------------------------------------------


def initialize_subject(subject_id: str, reset: bool) -> Op[str]:
    agent_id: str = yield call(
        "create_subject", check.subject_id(subject_id), reset=check.flag(reset, "reset"), blocks=[]
    )
    return agent_id


def list_blocks(sid: str) -> Op[list[Block]]:
    blocks: list[Block] = yield call("list_blocks", sid)
    return blocks


def initialize_memory(sid: str, label: str, description: str, value: str, char_limit: int, reset: bool) -> Op[str]:
    spec = check.block_spec(label, description, value, char_limit)
    block_id: str = yield call("create_block", sid, spec, reset=check.flag(reset, "reset"))
    return block_id


def get_memory(sid: str, label: str, prompt_formatted: bool) -> Op[str | None]:
    text: tuple[str, str] | None = yield call("block_text", sid, check.label(label))
    if text is None:
        return None
    return formatting.format_block(label, *text) if check.flag(prompt_formatted, "prompt_formatted") else text[1]


def delete_block(sid: str, label: str) -> Op[None]:
    yield call("delete_block", sid, check.label(label))


def add_messages_for_subject(subject_id: str, messages: Any, skip_vector_storage: Any) -> Op[str]:
    sid = check.subject_id(subject_id)
    archive = not check.flag(skip_vector_storage, "skip_vector_storage")
    run_id: str = yield call("add_messages", sid, check.messages(messages), archive=archive, default_blocks=[])
    return run_id


def add_files(bound: str | None, files: Any) -> Op[list[str]]:
    """Every file is read and checked before anything is stored."""
    jobs = []
    for i, spec in enumerate(check.file_specs(files)):
        sid = check.subject_id(spec.get("subject_id") or subject(bound, None), f"files[{i}].subject_id")
        path = Path(spec["file_path"])
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ValueError(f"files[{i}].file_path {str(path)!r} cannot be read as UTF-8 text: {exc}") from None
        label = check.label(spec["label"]) if spec.get("label") else None
        desc = check.description(spec.get("description") or f"What has been learned from the file {path.name}.")
        jobs.append((sid, path, text, label, desc))
    runs = []
    for sid, path, text, label, desc in jobs:
        if label:
            yield call("create_block", sid, BlockSpec(label=label, description=desc), reset=False)
        parts = split_text(text, FILE_PART_CHARS) or [""]
        batch = [
            {
                "role": "user",
                "name": path.name,
                "content": f"File {path.name} (part {n}/{len(parts)}):\n{part}",
                "metadata": {
                    "file_path": str(path),
                    "part": n,
                    "parts": len(parts),
                    **({"label": label} if label else {}),
                },
                "tags": ["file"],
            }
            for n, part in enumerate(parts, 1)
        ]
        runs.append((yield from add_messages_for_subject(sid, batch, False)))
    return runs


# -- runs -------------------------------------------------------------------------------------------


def wait_for_run(run_id: str, timeout: Any) -> Op[None]:
    rid = check.run_id(run_id)
    run: Run = yield call("wait_for_run", rid, check.timeout(timeout))
    if run.status == "failed":
        raise RunFailedError(run)
    if run.status == "cancelled":
        raise RunCancelledError(run)


def get_run(run_id: str) -> Op[Run]:
    rid = check.run_id(run_id)
    run: Run | None = yield call("get_run", rid)
    if run is None:
        raise RunNotFoundError(f"Run {rid} not found")
    return run


def list_runs(subject_id: str, status: Any) -> Op[list[Run]]:
    runs: list[Run] = yield call("list_runs", check.subject_id(subject_id), check.run_status(status))
    return runs


def run_call(method: str, run_id: str) -> Op[Run]:
    run: Run = yield call(method, check.run_id(run_id))
    return run


def consolidate(sid: str) -> Op[str]:
    run_id: str = yield call("consolidate", sid)
    return run_id


# -- new in this project ----------------------------------------------------------------------------


def search_passages(
    subject_id: str,
    query: str,
    tags: Any,
    tag_match_mode: Any,
    limit: Any,
    start: datetime | str | None,
    end: datetime | str | None,
) -> Op[list[SearchResult]]:
    sid = check.subject_id(subject_id)
    q = check.query(query)
    tag_list = ["user"] if tags is None else check.tags(tags)
    results: list[SearchResult] = yield call(
        "search",
        sid,
        q,
        tags=tag_list,
        tag_match_mode=check.tag_match_mode(tag_match_mode),
        limit=check.limit(limit),
        start=check.optional_timestamp(start, "start"),
        end=check.optional_timestamp(end, "end"),
    )
    return results


def get_messages(
    subject_id: str, limit: Any, before: datetime | str | None, after: datetime | str | None
) -> Op[list[StoredMessage]]:
    messages: list[StoredMessage] = yield call(
        "get_messages",
        check.subject_id(subject_id),
        limit=None if limit is None else check.limit(limit),
        before=check.optional_timestamp(before, "before"),
        after=check.optional_timestamp(after, "after"),
    )
    return messages


def delete_message(message_id: str) -> Op[None]:
    yield call("delete_message", check.nonempty(message_id, "message_id"))


def get_context(sid: str) -> Op[str]:
    blocks: list[Block] = yield call("list_blocks", sid)
    return formatting.format_context(blocks)


def set_memory(sid: str, label: str, value: str) -> Op[None]:
    yield call("set_block_value", sid, check.label(label), check.string(value, "value"))


def block_history(sid: str, label: str) -> Op[list[BlockVersion]]:
    versions: list[BlockVersion] = yield call("block_history", sid, check.label(label))
    return versions


def restore_block(sid: str, label: str, version: Any) -> Op[str]:
    value: str = yield call("restore_block", sid, check.label(label), check.version(version))
    return value


# -- integrations (agent sessions, the OpenAI client wrapper) ---------------------------------------


def session_items(session_id: str, limit: Any) -> Op[list[dict[str, Any]]]:
    sid = check.subject_id(session_id, "session_id")
    n = check.session_limit(limit)
    if n == 0:
        return []
    items: list[dict[str, Any]] = yield call("session_items", sid, n)
    return items


def add_session_items(
    session_id: str,
    items: Any,
    subject_id: str,
    learnable: Callable[[list[dict[str, Any]]], list[dict[str, Any]]],
) -> Op[str | None]:
    """Append items to a session and queue what they say for learning under the subject.

    Everything is checked first (the items, and the messages ``learnable`` makes
    of them), so bad input stores nothing. The subject gets the default user
    blocks if it is new, as ``add_messages(user_id, ...)`` does. Returns the
    learning run's id, or None when the items say nothing learnable.
    """
    sid = check.subject_id(session_id, "session_id")
    subj = check.subject_id(subject_id)
    batch = check.session_items(items)
    said = learnable(batch)
    messages = check.messages(said) if said else []
    if batch:
        yield call("add_session_items", sid, batch, subject_id=subj)
    if not messages:
        return None
    run_id: str = yield call("add_messages", subj, messages, archive=False, default_blocks=DEFAULT_USER_BLOCKS)
    return run_id


def pop_session_item(session_id: str) -> Op[dict[str, Any] | None]:
    item: dict[str, Any] | None = yield call("pop_session_item", check.subject_id(session_id, "session_id"))
    return item


def clear_session(session_id: str) -> Op[None]:
    yield call("clear_session", check.subject_id(session_id, "session_id"))


def prompt_context(subject_id: str, query: str | None, search_limit: int) -> Op[str]:
    """The subject's context for a system prompt, plus up to ``search_limit`` user messages matching ``query``."""
    sid = check.subject_id(subject_id)
    context = yield from get_context(sid)
    if search_limit > 0 and query and query.strip():
        results: list[SearchResult] = yield call(
            "search", sid, query, tags=["user"], tag_match_mode="any", limit=search_limit, start=None, end=None
        )
        if results:
            context = formatting.with_context(context, formatting.format_search_results(results))
    return context


def run_sync(engine: Any, op: Op[T]) -> T:
    """Drive an op with direct calls on ``engine``."""
    try:
        step = next(op)
        while True:
            try:
                result = getattr(engine, step.method)(*step.args, **step.kwargs)
            except Exception as exc:  # the op may translate it; if not, it comes back out
                step = op.throw(exc)
            else:
                step = op.send(result)
    except StopIteration as stop:
        value: T = stop.value
        return value


async def run_async(engine: Any, op: Op[T]) -> T:
    """Drive an op with awaited calls on an async engine."""
    try:
        step = next(op)
        while True:
            try:
                result = await getattr(engine, step.method)(*step.args, **step.kwargs)
            except Exception as exc:
                step = op.throw(exc)
            else:
                step = op.send(result)
    except StopIteration as stop:
        value: T = stop.value
        return value
