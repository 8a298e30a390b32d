"""The OpenAI Agents SDK with long-term memory: a session in the memory's store, instructions with learned context.

``MemorySession`` implements the SDK's ``Session`` protocol on the store of a
``Memory`` or ``AsyncMemory``: the items survive restarts, are scoped like
everything else in the store (tenants, ``delete_user`` of the subject) and,
as they are added, are queued for learning under the session's subject. Its
history is the SDK's (``get_items``/``pop_item``/``clear_session`` touch only
the session's items; what was learned stays learned). ``memory_instructions``
gives an agent instructions that end with the subject's learned context,
read afresh at every run; several sessions may share one subject.

    memory = Memory()
    agent = Agent(name="Assistant", instructions=memory_instructions(memory, "alice", "Be brief."))
    result = await Runner.run(agent, "Hi!", session=MemorySession("alice-chat-1", memory=memory, subject_id="alice"))
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, cast

try:
    from agents import Agent, RunContextWrapper, TResponseInputItem
    from agents.memory import SessionSettings
    from agents.memory.session_settings import coerce_session_settings, resolve_session_limit
except ImportError as _missing:  # pragma: no cover - the extra is not installed
    raise ImportError(
        "ai_memory_sdk.integrations.openai_agents needs the OpenAI Agents SDK: pip install 'ai-memory-sdk[agents]'"
    ) from _missing

from .. import _ops as ops
from .. import _validation as check
from .. import formatting
from ..memory import AsyncMemory, Memory
from ._convert import item_messages
from ._failopen import FailOpen

__all__ = ["MemorySession", "memory_instructions"]

log = logging.getLogger(__name__)
T = TypeVar("T")
Instructions = Callable[[RunContextWrapper[Any], Agent[Any]], Awaitable[str] | str]


async def _call(memory: Memory | AsyncMemory, op: ops.Op[T]) -> T:
    """Drive a facade op: awaited on an ``AsyncMemory``, in a worker thread on a ``Memory``."""
    if isinstance(memory, AsyncMemory):
        return await memory._run(op)
    return await asyncio.to_thread(memory._run, op)


async def _settle(write: Awaitable[T]) -> T:
    """Carry a write through to its outcome even when the caller is cancelled meanwhile, then re-raise that.

    A cancelled caller then knows the write happened (or failed) and will not retry it into a duplicate.
    """
    task = asyncio.ensure_future(write)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        while not task.done():
            try:
                await asyncio.wait({task})
            except asyncio.CancelledError:
                pass
        if not task.cancelled():
            task.exception()  # retrieved, so a failure behind the cancellation is not reported as unhandled
        raise


def _memory(memory: Any) -> Memory | AsyncMemory:
    if not isinstance(memory, (Memory, AsyncMemory)):
        raise TypeError(f"memory must be an ai_memory_sdk Memory or AsyncMemory, got {type(memory).__name__}")
    return memory


class MemorySession:
    """An Agents SDK ``Session`` stored in a ``Memory``'s store; the items it is given are also learned.

    ``subject_id`` (default: ``session_id``) is whose memory learns from the session; the session's
    items are erased with that subject (``delete_user``). ``session_settings`` works as in the SDK's
    own sessions (``SessionSettings(limit=N)``: ``get_items()`` reads the latest N; default: all).
    With a ``Memory`` each call runs in a worker thread; with an ``AsyncMemory`` it is awaited.
    """

    session_settings: SessionSettings | None = None

    def __init__(
        self,
        session_id: str,
        *,
        memory: Memory | AsyncMemory,
        subject_id: str | None = None,
        session_settings: SessionSettings | dict[str, Any] | None = None,
    ) -> None:
        self.session_id = check.subject_id(session_id, "session_id")
        self.subject_id = check.subject_id(subject_id) if subject_id is not None else self.session_id
        self.memory = _memory(memory)
        self.session_settings = (
            coerce_session_settings(session_settings) if session_settings is not None else SessionSettings()
        )

    def __repr__(self) -> str:
        return f"MemorySession(session_id={self.session_id!r}, subject_id={self.subject_id!r}, memory={self.memory!r})"

    async def get_items(self, limit: int | None = None) -> list[TResponseInputItem]:
        """The latest ``limit`` items (default: ``session_settings.limit``; None: all) in chronological order."""
        items = await _call(
            self.memory, ops.session_items(self.session_id, resolve_session_limit(limit, self.session_settings))
        )
        return cast(list[TResponseInputItem], items)

    async def add_items(self, items: list[TResponseInputItem]) -> None:
        """Append items (stored exactly) and queue what they say for learning under the subject.

        Bad input (not a list of JSON objects) stores nothing and raises ``TypeError`` naming the item.
        """
        op = ops.add_session_items(self.session_id, items, self.subject_id, item_messages)
        await _settle(_call(self.memory, op))

    async def pop_item(self) -> TResponseInputItem | None:
        """Remove and return the latest item (None when the session is empty); what was learned stays."""
        item = await _settle(_call(self.memory, ops.pop_session_item(self.session_id)))
        return cast(TResponseInputItem | None, item)

    async def clear_session(self) -> None:
        """Remove every item of the session (the subject's learned memory stays)."""
        await _settle(_call(self.memory, ops.clear_session(self.session_id)))


def memory_instructions(
    memory: Memory | AsyncMemory,
    subject_id: str,
    instructions: str | Instructions | None,
) -> Callable[[RunContextWrapper[Any], Agent[Any]], Awaitable[str]]:
    """Instructions for ``Agent(instructions=...)``: ``instructions`` plus the subject's ``get_context()``.

    The context is read at every run, so what the memory agent learned between runs is there.
    ``instructions`` may be a string or the SDK's dynamic-instructions callable. When memory cannot be
    read the agent runs on ``instructions`` alone (one WARNING per kind of failure).
    """
    mem = _memory(memory)
    sid = check.subject_id(subject_id)
    if instructions is not None and not isinstance(instructions, str) and not callable(instructions):
        raise TypeError(f"instructions must be a string or a callable, got {type(instructions).__name__}")
    failures = FailOpen(log, "ai_memory_sdk memory_instructions")

    async def instructions_with_memory(context: RunContextWrapper[Any], agent: Agent[Any]) -> str:
        if callable(instructions):
            given = instructions(context, agent)
            base = await given if inspect.isawaitable(given) else given
        else:
            base = instructions or ""
        try:
            learned = await _call(mem, ops.get_context(sid))
        except Exception as exc:
            failures.failed("reading memory", exc)
            return base
        return formatting.with_context(base, learned)

    return instructions_with_memory
