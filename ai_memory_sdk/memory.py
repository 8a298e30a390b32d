"""``Memory`` and ``AsyncMemory``: the public facade, one implementation with two faces.

The logic of every method lives once, in ``_ops``; ``Memory`` drives it with
direct engine calls and ``AsyncMemory`` with awaited ones. Engines
(``engines/``) only store and learn.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import inspect
import logging
from datetime import datetime
from typing import Any, TypeVar

from typing_extensions import Unpack

from . import _ops as ops
from . import config
from .engines.base import Engine
from .errors import MemoryClosedError
from .models import Block, BlockVersion, Run, SearchResult, StoredMessage

log = logging.getLogger(__name__)
T = TypeVar("T")
ClientT = TypeVar("ClientT")


def _make_engine(settings: config.Settings) -> Engine:
    name = config.choose_engine(settings)
    if name == "letta":
        from .engines.letta import LettaEngine

        engine: Engine = LettaEngine(settings)
    elif name == "remote":
        from .engines.remote import RemoteEngine

        engine = RemoteEngine(settings)
    else:
        from .engines.local import LocalEngine

        engine = LocalEngine(settings)
    log.info("ai_memory_sdk: %s", ", ".join(f"{k} {v}" for k, v in engine.info().items()))
    return engine


class Memory:
    """Long-term memory through learned context blocks (drop-in for ``ai-memory-sdk`` 0.2.0).

    Runs embedded (a SQLite file and background workers in this process)
    unless ``engine``, a server URL (``remote``) or a Letta key (``letta``)
    selects another engine. Every option has an environment variable; see
    docs/configuration.md.
    """

    def __init__(
        self,
        api_key: str | None = None,
        subject_id: str | None = None,
        **options: Unpack[config.Options],
    ) -> None:
        self.settings = config.resolve(api_key, **options)
        self.subject_id = ops.subject(None, subject_id) if subject_id is not None else None
        self._closed = False
        self._writes: set[concurrent.futures.Future[Any]] = set()
        self._engine: Engine = _make_engine(self.settings)

    @property
    def engine(self) -> str:
        """The engine in use: ``local``, ``letta`` or ``remote``."""
        return self._engine.name

    def __repr__(self) -> str:
        info = ", ".join(f"{k}={v!r}" for k, v in self._engine.info().items())
        return f"Memory({info}{', closed' if self._closed else ''})"

    def _run(self, op: ops.Op[T]) -> T:
        if self._closed:
            op.close()
            raise MemoryClosedError("this Memory is closed; create a new one")
        return ops.run_sync(self._engine, op)

    def _sid(self, subject_id: str | None) -> str:
        return ops.subject(self.subject_id, subject_id)

    def _track(self, write: concurrent.futures.Future[Any]) -> None:
        """Hold a write another thread does for this Memory (a wrapped client's turn): ``close()`` waits for it."""
        self._writes.add(write)
        write.add_done_callback(self._writes.discard)

    # -- lifecycle -----------------------------------------------------------------------------------

    def close(self) -> None:
        """Wait up to ``close_timeout`` for the runs this Memory queued, then stop its workers.

        Turns a wrapped client (``wrap``) is still queueing are waited for first, within the same limit.

        Runs not learned by then stay stored and are named in one WARNING; the
        next process with background workers (or ``ai-memory worker``) learns
        them. Every later call raises ``MemoryClosedError``. Closing twice is fine.
        """
        if not self._closed:
            if self._writes:
                concurrent.futures.wait(list(self._writes), timeout=self.settings.close_timeout)
            self._closed = True
            self._engine.close()

    def __enter__(self) -> Memory:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- user helpers (0.2.0) ------------------------------------------------------------------------

    def initialize_user_memory(
        self,
        user_id: str,
        user_context_block_prompt: str = ops.USER_PROMPT,
        user_context_block_char_limit: int = 10000,
        user_context_block_value: str = "",
        summary_block_prompt: str = ops.SUMMARY_PROMPT,
        summary_block_char_limit: int = 1000,
        reset: bool = False,
    ) -> str:
        """Create the user's ``human`` and ``summary`` blocks; returns the memory agent id.

        Raises ``SubjectExistsError`` (a ``ValueError``) when the user exists and ``reset`` is false;
        ``reset=True`` erases everything stored about the user first.
        """
        return self._run(
            ops.initialize_user_memory(
                user_id,
                user_context_block_prompt,
                user_context_block_char_limit,
                user_context_block_value,
                summary_block_prompt,
                summary_block_char_limit,
                reset,
            )
        )

    def add_messages(
        self,
        user_or_messages: str | list[dict[str, Any]],
        messages: list[dict[str, Any]] | None = None,
        skip_vector_storage: bool = True,
    ) -> str:
        """Store a batch and queue it for learning; returns the run id once the batch is durable.

        ``add_messages(user_id, messages)`` creates the user's memory (``human`` and ``summary``) if missing;
        ``add_messages(messages)`` uses the bound ``subject_id``. ``skip_vector_storage=False`` also archives
        the messages for search.
        """
        return self._run(ops.add_messages(self.subject_id, user_or_messages, messages, skip_vector_storage))

    def get_user_memory(self, user_id: str, prompt_formatted: bool = False) -> str | None:
        """The ``human`` block (raw, or as ``<human description="...">...</human>``); None for an unknown user."""
        return self._run(ops.user_block(user_id, "human", prompt_formatted))

    def get_summary(self, user_id: str, prompt_formatted: bool = False) -> str | None:
        """The ``summary`` block (raw, or as ``<conversation_summary>...</conversation_summary>``)."""
        return self._run(ops.user_block(user_id, "summary", prompt_formatted))

    def get_memory_agent_id(self, user_id: str) -> str | None:
        """The id of the user's memory agent (stable for the user's life); None for an unknown user."""
        return self._run(ops.get_memory_agent_id(user_id))

    def delete_user(self, user_id: str) -> None:
        """Erase everything stored about the user: blocks, history, messages, passages, runs, traces."""
        return self._run(ops.delete_user(user_id))

    def search(self, user_id: str, query: str, tags: list[str] | None = None, limit: int = 10) -> list[str]:
        """Archived passage texts, best first; ``tags=None`` means user messages, ``[]`` every role."""
        return self._run(ops.search(user_id, query, tags, limit))

    # -- subject API (0.2.0) -------------------------------------------------------------------------

    def initialize_subject(self, subject_id: str, reset: bool = False) -> str:
        """Create a subject with no blocks; ``SubjectExistsError`` if it exists and ``reset`` is false."""
        return self._run(ops.initialize_subject(subject_id, reset))

    def list_blocks(self, subject_id: str | None = None) -> list[Block]:
        """The subject's blocks in creation order ([] for an unknown subject)."""
        return self._run(ops.list_blocks(self._sid(subject_id)))

    def initialize_memory(
        self,
        label: str,
        description: str,
        value: str = "",
        char_limit: int = 10000,
        reset: bool = False,
        subject_id: str | None = None,
    ) -> str:
        """Create a labelled block (and the subject if missing); an existing label is kept unless ``reset``.

        Returns the block's id.
        """
        return self._run(ops.initialize_memory(self._sid(subject_id), label, description, value, char_limit, reset))

    def get_memory(self, label: str, prompt_formatted: bool = False, subject_id: str | None = None) -> str | None:
        """A block's value (raw, or as ``<label description="...">...</label>``); None if there is no such block."""
        return self._run(ops.get_memory(self._sid(subject_id), label, prompt_formatted))

    def delete_block(self, label: str, subject_id: str | None = None) -> None:
        """Delete a block and its history (nothing happens if there is none)."""
        return self._run(ops.delete_block(self._sid(subject_id), label))

    def add_messages_for_subject(
        self, subject_id: str, messages: list[dict[str, Any]], skip_vector_storage: bool = True
    ) -> str:
        """Store a batch for a subject and queue it; returns the run id. Creates no blocks."""
        return self._run(ops.add_messages_for_subject(subject_id, messages, skip_vector_storage))

    def add_messages_here(self, messages: list[dict[str, Any]], skip_vector_storage: bool = True) -> str:
        """``add_messages_for_subject`` for the bound subject."""
        return self._run(ops.add_messages_for_subject(self._sid(None), messages, skip_vector_storage))

    def add_files(self, files: list[dict[str, Any]]) -> list[str]:
        """Learn text files: each is split into parts, archived for search and learned like messages.

        ``files``: dicts with ``file_path`` (a string or ``os.PathLike``) and optional ``label`` and
        ``description`` (a block created for the file if missing) and ``subject_id``. Every file is read
        before anything is stored. Returns one run id per file.
        """
        return self._run(ops.add_files(self.subject_id, files))

    # -- runs ----------------------------------------------------------------------------------------

    def wait_for_run(self, run_id: str, timeout: float | None = 300) -> None:
        """Return when the run has completed.

        Raises ``TimeoutError`` after ``timeout`` seconds (None: no limit), ``RunFailedError`` /
        ``RunCancelledError`` when it ended otherwise, ``RunNotFoundError`` at once for an unknown id.
        """
        return self._run(ops.wait_for_run(run_id, timeout))

    def get_run(self, run_id: str) -> Run:
        """A run's status, kind, times, learner and LLM usage; ``RunNotFoundError`` for an unknown id."""
        return self._run(ops.get_run(run_id))

    def list_runs(self, subject_id: str, status: str | None = None) -> list[Run]:
        """The subject's runs, oldest first, optionally of one status."""
        return self._run(ops.list_runs(subject_id, status))

    def cancel_run(self, run_id: str) -> Run:
        """Cancel a queued run (its messages stay stored); ``RunStateError`` if it is not queued."""
        return self._run(ops.run_call("cancel_run", run_id))

    def retry_run(self, run_id: str) -> Run:
        """Put a failed run back on the queue; ``RunStateError`` if it did not fail."""
        return self._run(ops.run_call("retry_run", run_id))

    def consolidate(self, subject_id: str | None = None) -> str:
        """Queue a consolidation run: the learner rewrites the blocks to merge, resolve and condense them.

        Returns its run id (``Run.kind == "consolidate"``); ``SubjectNotFoundError`` for an unknown subject.
        """
        return self._run(ops.consolidate(self._sid(subject_id)))

    # -- new in this project -------------------------------------------------------------------------

    def search_passages(
        self,
        subject_id: str,
        query: str,
        *,
        tags: list[str] | None = None,
        tag_match_mode: str = "any",
        limit: int = 10,
        start: datetime | str | None = None,
        end: datetime | str | None = None,
    ) -> list[SearchResult]:
        """Archived passages with scores, roles, tags and times, best first (see docs/search.md)."""
        return self._run(ops.search_passages(subject_id, query, tags, tag_match_mode, limit, start, end))

    def get_messages(
        self,
        subject_id: str,
        *,
        limit: int | None = None,
        before: datetime | str | None = None,
        after: datetime | str | None = None,
    ) -> list[StoredMessage]:
        """Stored messages of a subject, oldest first (``limit``: the newest ones in the window).

        On the ``letta`` engine only archived messages (``skip_vector_storage=False``, file parts) are
        listed: Letta keeps no other copy.
        """
        return self._run(ops.get_messages(subject_id, limit, before, after))

    def delete_message(self, message_id: str) -> None:
        """Remove a stored message and its passage everywhere."""
        return self._run(ops.delete_message(message_id))

    def get_context(self, subject_id: str | None = None) -> str:
        """Every block of the subject in creation order, prompt-formatted, one per line."""
        return self._run(ops.get_context(self._sid(subject_id)))

    def set_memory(self, label: str, value: str, subject_id: str | None = None) -> None:
        """Set a block's value directly (same limit check; recorded in history)."""
        return self._run(ops.set_memory(self._sid(subject_id), label, value))

    def block_history(self, label: str, subject_id: str | None = None) -> list[BlockVersion]:
        """A block's stored versions, oldest first (the newest ``history_limit``)."""
        return self._run(ops.block_history(self._sid(subject_id), label))

    def restore_block(self, label: str, version: int, subject_id: str | None = None) -> str:
        """Make an earlier version the block's current value (a new version); returns it."""
        return self._run(ops.restore_block(self._sid(subject_id), label, version))

    # -- integrations --------------------------------------------------------------------------------

    def wrap(
        self, client: ClientT, *, subject_id: str | None = None, search_limit: int = 0, timeout: float = 0.2
    ) -> ClientT:
        """An ``openai.OpenAI`` or ``AsyncOpenAI`` client whose calls carry and feed a subject's memory.

        ``chat.completions.create`` and ``responses.create`` get the subject's context (its blocks, plus
        ``search_limit`` archived user messages matching the last user message) in the system message, and
        the new turn is queued with ``add_messages`` after the reply (streams: when they end). The subject is
        the call's ``user`` argument, else ``subject_id``, else this Memory's own. Memory fails open: a
        failure, or more than ``timeout`` seconds, and the call goes on without it (one WARNING per kind of
        failure). Everything else is the client's own. See docs/integrations.md.
        """
        from .integrations.openai_client import wrap

        return wrap(self, client, subject_id=subject_id, search_limit=search_limit, timeout=timeout)


class _InThreads:
    """An engine's methods as coroutines, each run in a worker thread (SQLite and HTTP never block the loop)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def __getattr__(self, name: str) -> Any:
        method = getattr(self.engine, name)

        @functools.wraps(method)
        async def in_thread(*args: Any, **kwargs: Any) -> Any:
            return await asyncio.to_thread(method, *args, **kwargs)

        return in_thread


class AsyncMemory:
    """``Memory`` with every method a coroutine, safe inside a running event loop.

    The embedded engines run each call in a worker thread; the ``remote``
    engine uses an async HTTP client.
    """

    def __init__(
        self,
        api_key: str | None = None,
        subject_id: str | None = None,
        **options: Unpack[config.Options],
    ) -> None:
        self.settings = config.resolve(api_key, **options)
        self.subject_id = ops.subject(None, subject_id) if subject_id is not None else None
        self._closed = False
        self._writes: set[asyncio.Future[Any]] = set()
        if config.choose_engine(self.settings) == "remote":
            from .engines.remote import AsyncRemoteEngine

            self._engine: Any = AsyncRemoteEngine(self.settings)
            self._sync: Engine | None = None
        else:
            self._sync = _make_engine(self.settings)
            self._engine = _InThreads(self._sync)

    @property
    def engine(self) -> str:
        """The engine in use: ``local``, ``letta`` or ``remote``."""
        return str(self._engine.name) if self._sync is None else self._sync.name

    def __repr__(self) -> str:
        info = self._sync.info() if self._sync is not None else self._engine.info()
        return f"AsyncMemory({', '.join(f'{k}={v!r}' for k, v in info.items())}{', closed' if self._closed else ''})"

    async def _run(self, op: ops.Op[T]) -> T:
        if self._closed:
            op.close()
            raise MemoryClosedError("this AsyncMemory is closed; create a new one")
        return await ops.run_async(self._engine, op)

    def _sid(self, subject_id: str | None) -> str:
        return ops.subject(self.subject_id, subject_id)

    def _track(self, write: asyncio.Future[Any]) -> None:
        """Hold a write a task does for this AsyncMemory (a wrapped client's turn): ``close()`` waits for it."""
        self._writes.add(write)
        write.add_done_callback(self._writes.discard)

    async def close(self) -> None:
        if not self._closed:
            loop = asyncio.get_running_loop()
            writes = [w for w in self._writes if w.get_loop() is loop]
            if writes:
                await asyncio.wait(writes, timeout=self.settings.close_timeout)
            self._closed = True
            await self._engine.close()

    async def __aenter__(self) -> AsyncMemory:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def initialize_user_memory(
        self,
        user_id: str,
        user_context_block_prompt: str = ops.USER_PROMPT,
        user_context_block_char_limit: int = 10000,
        user_context_block_value: str = "",
        summary_block_prompt: str = ops.SUMMARY_PROMPT,
        summary_block_char_limit: int = 1000,
        reset: bool = False,
    ) -> str:
        return await self._run(
            ops.initialize_user_memory(
                user_id,
                user_context_block_prompt,
                user_context_block_char_limit,
                user_context_block_value,
                summary_block_prompt,
                summary_block_char_limit,
                reset,
            )
        )

    async def add_messages(
        self,
        user_or_messages: str | list[dict[str, Any]],
        messages: list[dict[str, Any]] | None = None,
        skip_vector_storage: bool = True,
    ) -> str:
        return await self._run(ops.add_messages(self.subject_id, user_or_messages, messages, skip_vector_storage))

    async def get_user_memory(self, user_id: str, prompt_formatted: bool = False) -> str | None:
        return await self._run(ops.user_block(user_id, "human", prompt_formatted))

    async def get_summary(self, user_id: str, prompt_formatted: bool = False) -> str | None:
        return await self._run(ops.user_block(user_id, "summary", prompt_formatted))

    async def get_memory_agent_id(self, user_id: str) -> str | None:
        return await self._run(ops.get_memory_agent_id(user_id))

    async def delete_user(self, user_id: str) -> None:
        return await self._run(ops.delete_user(user_id))

    async def search(self, user_id: str, query: str, tags: list[str] | None = None, limit: int = 10) -> list[str]:
        return await self._run(ops.search(user_id, query, tags, limit))

    async def initialize_subject(self, subject_id: str, reset: bool = False) -> str:
        return await self._run(ops.initialize_subject(subject_id, reset))

    async def list_blocks(self, subject_id: str | None = None) -> list[Block]:
        return await self._run(ops.list_blocks(self._sid(subject_id)))

    async def initialize_memory(
        self,
        label: str,
        description: str,
        value: str = "",
        char_limit: int = 10000,
        reset: bool = False,
        subject_id: str | None = None,
    ) -> str:
        return await self._run(
            ops.initialize_memory(self._sid(subject_id), label, description, value, char_limit, reset)
        )

    async def get_memory(self, label: str, prompt_formatted: bool = False, subject_id: str | None = None) -> str | None:
        return await self._run(ops.get_memory(self._sid(subject_id), label, prompt_formatted))

    async def delete_block(self, label: str, subject_id: str | None = None) -> None:
        return await self._run(ops.delete_block(self._sid(subject_id), label))

    async def add_messages_for_subject(
        self, subject_id: str, messages: list[dict[str, Any]], skip_vector_storage: bool = True
    ) -> str:
        return await self._run(ops.add_messages_for_subject(subject_id, messages, skip_vector_storage))

    async def add_messages_here(self, messages: list[dict[str, Any]], skip_vector_storage: bool = True) -> str:
        return await self._run(ops.add_messages_for_subject(self._sid(None), messages, skip_vector_storage))

    async def add_files(self, files: list[dict[str, Any]]) -> list[str]:
        return await self._run(ops.add_files(self.subject_id, files))

    async def wait_for_run(self, run_id: str, timeout: float | None = 300) -> None:
        return await self._run(ops.wait_for_run(run_id, timeout))

    async def get_run(self, run_id: str) -> Run:
        return await self._run(ops.get_run(run_id))

    async def list_runs(self, subject_id: str, status: str | None = None) -> list[Run]:
        return await self._run(ops.list_runs(subject_id, status))

    async def cancel_run(self, run_id: str) -> Run:
        return await self._run(ops.run_call("cancel_run", run_id))

    async def retry_run(self, run_id: str) -> Run:
        return await self._run(ops.run_call("retry_run", run_id))

    async def consolidate(self, subject_id: str | None = None) -> str:
        return await self._run(ops.consolidate(self._sid(subject_id)))

    async def search_passages(
        self,
        subject_id: str,
        query: str,
        *,
        tags: list[str] | None = None,
        tag_match_mode: str = "any",
        limit: int = 10,
        start: datetime | str | None = None,
        end: datetime | str | None = None,
    ) -> list[SearchResult]:
        return await self._run(ops.search_passages(subject_id, query, tags, tag_match_mode, limit, start, end))

    async def get_messages(
        self,
        subject_id: str,
        *,
        limit: int | None = None,
        before: datetime | str | None = None,
        after: datetime | str | None = None,
    ) -> list[StoredMessage]:
        return await self._run(ops.get_messages(subject_id, limit, before, after))

    async def delete_message(self, message_id: str) -> None:
        return await self._run(ops.delete_message(message_id))

    async def get_context(self, subject_id: str | None = None) -> str:
        return await self._run(ops.get_context(self._sid(subject_id)))

    async def set_memory(self, label: str, value: str, subject_id: str | None = None) -> None:
        return await self._run(ops.set_memory(self._sid(subject_id), label, value))

    async def block_history(self, label: str, subject_id: str | None = None) -> list[BlockVersion]:
        return await self._run(ops.block_history(self._sid(subject_id), label))

    async def restore_block(self, label: str, version: int, subject_id: str | None = None) -> str:
        return await self._run(ops.restore_block(self._sid(subject_id), label, version))

    def wrap(
        self, client: ClientT, *, subject_id: str | None = None, search_limit: int = 0, timeout: float = 0.2
    ) -> ClientT:
        """``Memory.wrap`` for an ``openai.AsyncOpenAI`` client (it builds the wrapper: nothing to await)."""
        from .integrations.openai_client import wrap

        return wrap(self, client, subject_id=subject_id, search_limit=search_limit, timeout=timeout)


# Each coroutine is documented as its Memory twin (one text; tests/test_compat.py checks the signatures match).
for _name, _method in vars(AsyncMemory).items():
    if not _name.startswith("_") and inspect.iscoroutinefunction(_method) and getattr(Memory, _name, None) is not None:
        _method.__doc__ = getattr(Memory, _name).__doc__
