"""The tools: what a model can do with a subject's memory, each with a schema and a description of when to use it.

Arguments are checked for shape here (a schema the model sees, extra
arguments refused) and for values by the library, whose message becomes the
tool error. Every failure is a tool result with ``isError`` set, so the model
reads why and the server goes on.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, cast

import anyio
from mcp_types import CallToolResult, TextContent, Tool, ToolAnnotations
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model

from .. import _validation as check
from ..errors import AIMemoryError, BlockNotFoundError, RunNotFoundError
from ..memory import AsyncMemory
from ..models import Run
from ._scope import Scope
from ._watch import Watch

log = logging.getLogger(__name__)

MAX_WAIT = 300.0  # seconds one wait_for_run call may wait; clients time out long calls
MAX_RESULTS = 100
_WAIT_STEP = 1.0  # a long wait is many short ones: a cancelled call or a stopping server never waits on a thread


class _Args(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _NoArgs(_Args):
    pass


class _Search(_Args):
    query: str = Field(description="Words or a question to look for in earlier messages.")
    limit: int = Field(10, ge=1, le=MAX_RESULTS, description=f"Most results to return, best first (1-{MAX_RESULTS}).")
    tags: list[str] | None = Field(
        None,
        description="Which messages to search, by role or tag: omitted = what the user said; [] = every role "
        '(the assistant\'s replies too); or a list such as ["assistant"].',
    )
    start: str | None = Field(
        None, description="Only messages said at or after this time (ISO 8601: 2025-03-01 or 2025-03-01T09:30:00Z)."
    )
    end: str | None = Field(None, description="Only messages said before this time (ISO 8601).")


class _Message(BaseModel):
    model_config = ConfigDict(extra="forbid", title="Message")

    role: str = Field(description="Who said it.", json_schema_extra={"enum": list(check.ROLES)})
    content: str = Field(description="What was said.")
    name: str | None = Field(None, description="The speaker's name, when several people talk.")
    created_at: str | None = Field(None, description="When it was said (ISO 8601); default: now.")


class _Remember(_Args):
    messages: list[_Message] = Field(
        default_factory=list,
        description="Messages of the conversation to learn from, oldest first: what the user said, and the replies "
        "that give it context.",
    )
    note: str | None = Field(
        None,
        description="Instead of (or as well as) messages: one thing to remember, in the user's own words in the "
        'first person, e.g. "I prefer metric units." Stored as a message of the user.',
    )
    archive: bool = Field(True, description="Also keep the messages searchable with search_passages (default true).")


class _RunId(_Args):
    run_id: str = Field(description="The run id that add_messages returned.")


class _Wait(_RunId):
    timeout_seconds: float = Field(
        30.0, gt=0, le=MAX_WAIT, description=f"How long to wait at most (default 30, at most {MAX_WAIT:g})."
    )


class _Label(_Args):
    label: str = Field(description="The block's label, e.g. human or summary (list_blocks shows them).")


class _Set(_Label):
    value: str = Field(description="The block's whole new value (it replaces the old one).")
    description: str | None = Field(
        None, description="Only to create a block that does not exist yet: what the block holds, for the model."
    )
    char_limit: int | None = Field(None, description="Only when creating a block: its character limit (default 10000).")


class _Restore(_Label):
    version: int = Field(description="The version number to bring back, from block_history.")


Handler = Callable[["Toolbox", Any, str], Awaitable["str | dict[str, Any]"]]


@dataclass(frozen=True)
class _Spec:
    name: str
    title: str
    description: str
    args: type[_Args]
    handler: Handler
    read_only: bool = False
    idempotent: bool = False


class Toolbox:
    """The tools of one server: their list (``tools/list``) and their calls (``tools/call``)."""

    def __init__(self, memory: AsyncMemory, scope: Scope, watch: Watch) -> None:
        self.memory = memory
        self.scope = scope
        self.watch = watch
        self._specs = {spec.name: _with_subject(spec, scope) for spec in _SPECS}

    def tools(self) -> list[Tool]:
        return [
            Tool(
                name=s.name,
                title=s.title,
                description=s.description,
                input_schema=_schema(s.args),
                annotations=ToolAnnotations(
                    title=s.title,
                    read_only_hint=s.read_only,
                    destructive_hint=False,  # edits keep the old value in the block's history
                    idempotent_hint=s.read_only or s.idempotent,
                    open_world_hint=False,
                ),
            )
            for s in self._specs.values()
        ]

    async def call(self, name: str, arguments: dict[str, Any] | None) -> CallToolResult:
        """Run a tool; any failure comes back as a tool error naming what was wrong."""
        spec = self._specs.get(name)
        if spec is None:
            return _error(f"unknown tool {name!r}; the tools are {', '.join(self._specs)}")
        try:
            args = spec.args.model_validate(arguments or {})
        except ValidationError as exc:
            return _error(f"invalid arguments for {name}: {_describe(exc)}")
        try:
            subject = self.scope.subject(getattr(args, "subject_id", None))
            return _result(await spec.handler(self, args, subject))
        except (AIMemoryError, ValueError, TypeError, LookupError, TimeoutError) as exc:
            log.info("tool %s: %s", name, exc)
            return _error(str(exc))
        except Exception as exc:  # a bug or an engine failure: the server must go on
            log.exception("tool %s failed", name)
            return _error(f"{name} failed: {type(exc).__name__}: {exc}")

    async def run_of(self, run_id: str, subject: str) -> Run:
        """The run, if it is the subject's: another subject's runs do not exist for this caller."""
        run = await self.memory.get_run(run_id)
        if run.subject_id != subject:
            raise RunNotFoundError(f"Run {run_id} not found")
        return run


def _with_subject(spec: _Spec, scope: Scope) -> _Spec:
    """On a multi-subject server every tool takes ``subject_id`` (optional when there is a default)."""
    if not scope.multi:
        return spec
    about = "Whose memory: the id of the user (or other subject), e.g. an e-mail address or a user name."
    arg: Any = (
        (str, Field(description=about))
        if scope.default is None
        else (str | None, Field(None, description=f"{about} Default: {scope.default}."))
    )
    model = cast("type[_Args]", create_model(spec.args.__name__, __base__=spec.args, subject_id=arg))
    return _Spec(spec.name, spec.title, spec.description, model, spec.handler, spec.read_only, spec.idempotent)


def _schema(args: type[_Args]) -> dict[str, Any]:
    """The JSON schema of a tool's arguments, without the (private) model name as its title."""
    schema = args.model_json_schema()
    schema.pop("title", None)
    return schema


def _describe(exc: ValidationError) -> str:
    parts = []
    for e in exc.errors():
        where = ".".join(str(p) for p in e["loc"]) or "arguments"
        parts.append(f"{where}: {'unknown argument' if e['type'] == 'extra_forbidden' else e['msg']}")
    return "; ".join(parts)


def _result(value: str | dict[str, Any]) -> CallToolResult:
    if isinstance(value, str):
        return CallToolResult(content=[TextContent(type="text", text=value)])
    text = json.dumps(value, ensure_ascii=False)
    return CallToolResult(content=[TextContent(type="text", text=text)], structured_content=value)


def _error(message: str) -> CallToolResult:
    return CallToolResult(content=[TextContent(type="text", text=message)], is_error=True)


# -- the tools -------------------------------------------------------------------------------------------


async def _get_context(t: Toolbox, a: _NoArgs, subject: str) -> str:
    context = await t.memory.get_context(subject)
    return context or f"Nothing is remembered about {subject} yet (no memory blocks)."


async def _search_passages(t: Toolbox, a: _Search, subject: str) -> dict[str, Any]:
    found = await t.memory.search_passages(subject, a.query, tags=a.tags, limit=a.limit, start=a.start, end=a.end)
    return {"results": [r.model_dump(mode="json") for r in found]}


async def _add_messages(t: Toolbox, a: _Remember, subject: str) -> dict[str, Any]:
    messages = [m.model_dump(exclude_none=True) for m in a.messages]
    if a.note is not None:
        messages.append({"role": "user", "content": a.note, "metadata": {"note": True}})
    if not messages:
        raise ValueError("nothing to remember: give messages or a note")
    run_id = await t.memory.add_messages(subject, messages, skip_vector_storage=not a.archive)
    await t.watch.refresh()  # a first remember creates the subject's blocks
    return {"run_id": run_id, "subject_id": subject, "messages": len(messages), "status": "queued"}


async def _wait_for_run(t: Toolbox, a: _Wait, subject: str) -> dict[str, Any]:
    run = await t.run_of(a.run_id, subject)
    deadline = anyio.current_time() + a.timeout_seconds
    while True:
        left = deadline - anyio.current_time()
        try:
            await t.memory.wait_for_run(run.id, timeout=max(0.0, min(_WAIT_STEP, left)))
            break
        except TimeoutError:
            if left <= _WAIT_STEP:
                status = (await t.memory.get_run(run.id)).status
                raise TimeoutError(
                    f"run {run.id} is still {status} after {a.timeout_seconds:g} s; it goes on learning in the "
                    "background (call wait_for_run again, or carry on)"
                ) from None
    await t.watch.refresh()  # followers hear of the learned blocks before the caller reads them
    return (await t.memory.get_run(run.id)).model_dump(mode="json")


async def _get_run(t: Toolbox, a: _RunId, subject: str) -> dict[str, Any]:
    return (await t.run_of(a.run_id, subject)).model_dump(mode="json")


async def _set_memory(t: Toolbox, a: _Set, subject: str) -> dict[str, Any]:
    try:
        await t.memory.set_memory(a.label, a.value, subject_id=subject)
        created = False
    except BlockNotFoundError as exc:
        if a.description is None:
            raise BlockNotFoundError(f"{exc}; give a description to create it") from None
        await t.memory.initialize_memory(
            a.label,
            a.description,
            a.value,
            char_limit=10000 if a.char_limit is None else a.char_limit,
            subject_id=subject,
        )
        created = True
    await t.watch.refresh()
    return {"label": a.label, "chars": len(a.value), "created": created}


async def _restore_block(t: Toolbox, a: _Restore, subject: str) -> dict[str, Any]:
    value = await t.memory.restore_block(a.label, a.version, subject_id=subject)
    await t.watch.refresh()
    return {"label": a.label, "restored_version": a.version, "value": value}


async def _list_blocks(t: Toolbox, a: _NoArgs, subject: str) -> dict[str, Any]:
    return {"blocks": [b.model_dump(mode="json") for b in await t.memory.list_blocks(subject)]}


async def _block_history(t: Toolbox, a: _Label, subject: str) -> dict[str, Any]:
    return {"versions": [v.model_dump(mode="json") for v in await t.memory.block_history(a.label, subject_id=subject)]}


_SPECS = (
    _Spec(
        "get_context",
        "Read memory",
        "Read everything remembered about the user: all memory blocks (such as `human`, a profile of the user, and "
        "`summary`, the story of earlier conversations) as prompt-formatted XML. Call it at the start of a "
        "conversation and whenever the answer may depend on who the user is, what they like or what was said "
        "before; it is cheap. Right after add_messages, call wait_for_run first to see what was learned.",
        _NoArgs,
        _get_context,
        read_only=True,
    ),
    _Spec(
        "search_passages",
        "Search earlier conversations",
        "Search the archive of earlier conversations for messages about something, best match first, each with its "
        'role, time and score. Use it when the user refers to a detail of a past conversation ("which book did I '
        'mention?") that the memory blocks of get_context do not hold. Finds the messages remembered with '
        "archive=true; filter by role or tag and by time (start, end).",
        _Search,
        _search_passages,
        read_only=True,
    ),
    _Spec(
        "add_messages",
        "Remember",
        "Remember: store messages of this conversation (or a note) so that the background memory agent learns from "
        "them and updates the memory blocks. Use it whenever the user shares something worth keeping across "
        "conversations (facts about themselves, preferences, plans, decisions, corrections), and at the end of a "
        "conversation with its important messages. Do not store secrets the user did not ask you to keep. Returns "
        "at once with a run id; learning takes a moment in the background (call wait_for_run only when you need "
        "the updated memory now).",
        _Remember,
        _add_messages,
    ),
    _Spec(
        "wait_for_run",
        "Wait for learning",
        "Wait until a remember run (the run id from add_messages) has been learned, so that get_context shows the "
        "updated memory. Use it only when your next step needs what was just remembered; otherwise carry on, "
        "learning finishes in the background. Fails with the reason when the run failed, or when timeout_seconds "
        "pass first (then call it again).",
        _Wait,
        _wait_for_run,
        read_only=True,
    ),
    _Spec(
        "get_run",
        "Check a run",
        "Look up a remember run without waiting: its status (queued, running, completed, failed, cancelled), its "
        "times, and the error when it failed. Use it to check on an earlier add_messages.",
        _RunId,
        _get_run,
        read_only=True,
    ),
    _Spec(
        "set_memory",
        "Edit memory",
        "Replace the value of one memory block. Use it when the user explicitly asks to change, correct or forget "
        "something remembered about them (read the block first and write back the whole corrected value), or to "
        "keep notes in a block of your own (give a description to create it). The value must fit the block's "
        "character limit. The old value stays in block_history and restore_block brings it back.",
        _Set,
        _set_memory,
        idempotent=True,
    ),
    _Spec(
        "restore_block",
        "Undo a memory change",
        "Bring back an earlier version of a memory block (a version number from block_history) as its current "
        "value. Use it when the user wants a change to their memory undone. The value it replaces stays in the "
        "history too.",
        _Restore,
        _restore_block,
        idempotent=True,
    ),
    _Spec(
        "list_blocks",
        "List memory blocks",
        "List the memory blocks with their label, description, value, character limit and last update. Use it to "
        "find a block's label before set_memory, block_history or restore_block.",
        _NoArgs,
        _list_blocks,
        read_only=True,
    ),
    _Spec(
        "block_history",
        "Memory block history",
        "Show the stored versions of one memory block, oldest first, each with its version number, value, time and "
        "the run that wrote it (none for direct edits). Use it when the user asks what changed in their memory, "
        "and before restore_block.",
        _Label,
        _block_history,
        read_only=True,
    ),
)
