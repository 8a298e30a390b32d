"""``Memory`` and ``AsyncMemory``: the public facade (one implementation, two faces).

The facade owns what every engine shares: argument validation, the bound
subject, default blocks, prompt formatting and run-outcome errors. Engines
(``engines/``) only store and learn.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
from datetime import datetime
from pathlib import Path
from typing import Any

from . import _validation as check
from . import config, formatting
from .engines.base import Engine
from .errors import RunCancelledError, RunFailedError
from .models import Block, BlockSpec, BlockVersion, Run, SearchResult, StoredMessage

log = logging.getLogger(__name__)

FILE_PART_CHARS = 4000


def _make_engine(settings: config.Settings) -> Engine:
    name = config.choose_engine(settings)
    log.info("ai_memory_sdk engine: %s", name)
    if name == "letta":
        from .engines.letta import LettaEngine

        return LettaEngine(settings)
    from .engines.local import LocalEngine

    return LocalEngine(settings)


class Memory:
    """Long-term memory through learned context blocks (drop-in for ``ai-memory-sdk`` 0.2.0).

    ``Memory()`` runs embedded (SQLite + background workers) unless a Letta
    key or ``engine="letta"`` selects the Letta engine. Options: see SPEC §3
    or the README (``path``, ``learner``, ``model``, ``embedder``, ...).
    """

    def __init__(self, api_key: str | None = None, subject_id: str | None = None, **options: Any) -> None:
        self.settings = config.resolve(api_key, **options)
        self.subject_id = check.subject_id(subject_id) if subject_id is not None else None
        self._engine: Engine = _make_engine(self.settings)

    @property
    def engine(self) -> str:
        return self._engine.name

    # -- lifecycle -------------------------------------------------------------------------------

    def close(self) -> None:
        """Finish the pass in progress and stop the workers; queued runs stay stored."""
        self._engine.close()

    def __enter__(self) -> Memory:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- helpers ---------------------------------------------------------------------------------

    def _get_effective_subject(self, subject_id: str | None) -> str:
        sid = subject_id or self.subject_id
        if not sid:
            raise ValueError(
                "No subject_id provided and instance is not bound to a subject. "
                "Pass subject_id=... or initialize Memory(subject_id=...)."
            )
        return check.subject_id(sid)

    @staticmethod
    def _user_blocks(prompt: str, limit: int, value: str, summary_prompt: str, summary_limit: int) -> list[BlockSpec]:
        return [
            BlockSpec(
                label="human",
                description=check.description(prompt),
                limit=check.char_limit(limit),
                value=check.block_value(value, limit, "user_context_block_value"),
            ),
            BlockSpec(
                label="summary",
                description=check.description(summary_prompt),
                limit=check.char_limit(summary_limit, "summary_block_char_limit"),
                value="",
            ),
        ]

    # -- user helpers (0.2.0) --------------------------------------------------------------------

    def initialize_user_memory(
        self,
        user_id: str,
        user_context_block_prompt: str = "Details about the human user you are speaking to.",
        user_context_block_char_limit: int = 10000,
        user_context_block_value: str = "",
        summary_block_prompt: str = "A short (1-2 sentences) running summary of the conversation.",
        summary_block_char_limit: int = 1000,
        reset: bool = False,
    ) -> str:
        """Create the user's ``human`` and ``summary`` blocks; returns the memory agent id.

        Raises ``ValueError`` when the user exists and ``reset`` is false.
        """
        uid = check.subject_id(user_id, "user_id")
        blocks = self._user_blocks(
            user_context_block_prompt,
            user_context_block_char_limit,
            user_context_block_value,
            summary_block_prompt,
            summary_block_char_limit,
        )
        return self._engine.create_subject(uid, reset=reset, blocks=blocks, kind="user")

    def add_messages(
        self, user_or_messages: Any, messages: list[dict[str, Any]] | None = None, skip_vector_storage: bool = True
    ) -> str:
        """Store a batch and queue it for learning; returns the run id once the batch is durable.

        ``add_messages(user_id, messages)`` creates the user's memory if missing;
        ``add_messages(messages)`` uses the bound ``subject_id``.
        """
        if isinstance(user_or_messages, str):
            if messages is None:
                raise ValueError("messages must be provided when calling add_messages(user_id, messages, ...)")
            uid = check.subject_id(user_or_messages, "user_id")
            batch = check.messages(messages)
            defaults = self._user_blocks(
                "Details about the human user you are speaking to.",
                10000,
                "",
                "A short (1-2 sentences) running summary of the conversation.",
                1000,
            )
            return self._engine.add_messages(uid, batch, archive=not skip_vector_storage, default_blocks=defaults)
        if not isinstance(user_or_messages, (list, tuple)):
            raise ValueError("First argument must be a user_id (str) or a messages list (List[Dict]).")
        if messages is not None:
            raise TypeError("add_messages(messages, ...) takes no second messages list")
        return self.add_messages_for_subject(
            self._get_effective_subject(None), list(user_or_messages), skip_vector_storage=skip_vector_storage
        )

    def get_user_memory(self, user_id: str, prompt_formatted: bool = False) -> str | None:
        """The ``human`` block (raw, or as ``<human description="...">...</human>``); None if unknown."""
        return self.get_memory(
            "human", prompt_formatted=prompt_formatted, subject_id=check.subject_id(user_id, "user_id")
        )

    def get_summary(self, user_id: str, prompt_formatted: bool = False) -> str | None:
        """The ``summary`` block (raw, or as ``<conversation_summary>...</conversation_summary>``)."""
        text = self._engine.block_text(check.subject_id(user_id, "user_id"), "summary")
        if text is None:
            return None
        return formatting.format_summary(text[1]) if prompt_formatted else text[1]

    def get_memory_agent_id(self, user_id: str) -> str | None:
        return self._engine.agent_id(check.subject_id(user_id, "user_id"))

    def delete_user(self, user_id: str) -> None:
        """Erase everything stored about the user (blocks, history, messages, passages, runs)."""
        self._engine.delete_subject(check.subject_id(user_id, "user_id"))

    def search(self, user_id: str, query: str, tags: list[str] | None = None, limit: int = 10) -> list[str]:
        """Archived passage texts, best first; ``tags=None`` means user messages, ``[]`` every role."""
        return [r.content for r in self.search_passages(user_id, query, tags=tags, limit=limit)]

    # -- subject API (0.2.0) ---------------------------------------------------------------------

    def initialize_subject(self, subject_id: str, reset: bool = False) -> str:
        """Create a subject (no blocks); raises ``ValueError`` if it exists and ``reset`` is false."""
        return self._engine.create_subject(check.subject_id(subject_id), reset=reset, blocks=[], kind="subject")

    def list_blocks(self, subject_id: str | None = None) -> list[Block]:
        return self._engine.list_blocks(self._get_effective_subject(subject_id))

    def initialize_memory(
        self,
        label: str,
        description: str,
        value: str = "",
        char_limit: int = 10000,
        reset: bool = False,
        subject_id: str | None = None,
    ) -> str:
        """Create a labelled block; an existing label is kept as it is (its id returned) unless ``reset``."""
        sid = self._get_effective_subject(subject_id)
        limit = check.char_limit(char_limit)
        spec = BlockSpec(
            label=check.label(label),
            description=check.description(description),
            value=check.block_value(value, limit),
            limit=limit,
        )
        return self._engine.create_block(sid, spec, reset=reset)

    def get_memory(self, label: str, prompt_formatted: bool = False, subject_id: str | None = None) -> str | None:
        sid = self._get_effective_subject(subject_id)
        text = self._engine.block_text(sid, check.label(label))
        if text is None:
            return None
        return formatting.format_block(label, text[0], text[1]) if prompt_formatted else text[1]

    def delete_block(self, label: str, subject_id: str | None = None) -> None:
        self._engine.delete_block(self._get_effective_subject(subject_id), check.label(label))

    def add_messages_for_subject(
        self, subject_id: str, messages: list[dict[str, Any]], skip_vector_storage: bool = True
    ) -> str:
        sid = check.subject_id(subject_id)
        return self._engine.add_messages(
            sid, check.messages(messages), archive=not skip_vector_storage, default_blocks=[]
        )

    def add_messages_here(self, messages: list[dict[str, Any]], skip_vector_storage: bool = True) -> str:
        return self.add_messages_for_subject(
            self._get_effective_subject(None), messages, skip_vector_storage=skip_vector_storage
        )

    def add_files(self, files: list[dict[str, Any]]) -> list[str]:
        """Learn text files: each is split into parts, archived for search and learned like messages.

        ``files``: dicts with ``file_path`` and optional ``label``/``description``
        (a block created for it if missing) and ``subject_id``. Returns one run id per file.
        """
        specs = check.file_specs(files)
        jobs = []
        for i, spec in enumerate(specs):
            sid = check.subject_id(
                spec.get("subject_id") or self._get_effective_subject(None), f"files[{i}].subject_id"
            )
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
                self._engine.create_block(sid, BlockSpec(label=label, description=desc), reset=False)
            parts = _split_text(text, FILE_PART_CHARS) or [""]
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
            runs.append(self.add_messages_for_subject(sid, batch, skip_vector_storage=False))
        return runs

    # -- runs ------------------------------------------------------------------------------------

    def wait_for_run(self, run_id: str, timeout: int = 300) -> None:
        """Return when the run has completed.

        Raises ``TimeoutError`` after ``timeout`` seconds, ``RunFailedError`` /
        ``RunCancelledError`` when it ended otherwise, ``RunNotFoundError`` at
        once for an unknown id.
        """
        if not isinstance(run_id, str) or not run_id:
            raise TypeError("run_id must be a non-empty string")
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout < 0:
            raise ValueError(f"timeout must be a non-negative number of seconds, got {timeout!r}")
        run = self._engine.wait_for_run(run_id, timeout)
        if run.status == "failed":
            raise RunFailedError(run)
        if run.status == "cancelled":
            raise RunCancelledError(run)

    def get_run(self, run_id: str) -> Run:
        from .errors import RunNotFoundError

        run = self._engine.get_run(run_id)
        if run is None:
            raise RunNotFoundError(f"Run {run_id} not found")
        return run

    def list_runs(self, subject_id: str, status: str | None = None) -> list[Run]:
        if status is not None and status not in ("queued", "running", "completed", "failed", "cancelled"):
            raise ValueError(f"status must be queued, running, completed, failed or cancelled; got {status!r}")
        return self._engine.list_runs(check.subject_id(subject_id), status)

    def cancel_run(self, run_id: str) -> Run:
        """Cancel a queued run (its messages stay stored)."""
        return self._engine.cancel_run(run_id)

    def retry_run(self, run_id: str) -> Run:
        """Put a failed run back on the queue."""
        return self._engine.retry_run(run_id)

    # -- new in this project ---------------------------------------------------------------------

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
        sid = check.subject_id(subject_id)
        q = check.query(query)
        tag_list = ["user"] if tags is None else check.tags(tags)
        if tag_match_mode not in ("any", "all"):
            raise ValueError(f"tag_match_mode must be 'any' or 'all', got {tag_match_mode!r}")
        return self._engine.search(
            sid,
            q,
            tags=tag_list,
            tag_match_mode=tag_match_mode,
            limit=check.limit(limit),
            start=check.optional_timestamp(start, "start"),
            end=check.optional_timestamp(end, "end"),
        )

    def get_messages(
        self,
        subject_id: str,
        *,
        limit: int | None = None,
        before: datetime | str | None = None,
        after: datetime | str | None = None,
    ) -> list[StoredMessage]:
        """Stored messages of a subject, oldest first (``limit``: the newest ones in the window).

        On the ``letta`` engine only archived messages (``skip_vector_storage=False``,
        file parts) are listed: Letta keeps no other copy.
        """
        return self._engine.get_messages(
            check.subject_id(subject_id),
            limit=None if limit is None else check.limit(limit),
            before=check.optional_timestamp(before, "before"),
            after=check.optional_timestamp(after, "after"),
        )

    def delete_message(self, message_id: str) -> None:
        """Remove a stored message and its passage everywhere."""
        if not isinstance(message_id, str) or not message_id:
            raise TypeError("message_id must be a non-empty string")
        self._engine.delete_message(message_id)

    def get_context(self, subject_id: str | None = None) -> str:
        """Every block of the subject in creation order, prompt-formatted, one per line."""
        return formatting.format_context(self._engine.list_blocks(self._get_effective_subject(subject_id)))

    def set_memory(self, label: str, value: str, subject_id: str | None = None) -> None:
        """Set a block's value directly (same limit check; recorded in history)."""
        if not isinstance(value, str):
            raise TypeError(f"value must be a string, got {type(value).__name__}")
        self._engine.set_block_value(self._get_effective_subject(subject_id), check.label(label), value)

    def block_history(self, label: str, subject_id: str | None = None) -> list[BlockVersion]:
        return self._engine.block_history(self._get_effective_subject(subject_id), check.label(label))

    def restore_block(self, label: str, version: int, subject_id: str | None = None) -> str:
        """Make an earlier version the block's current value (a new version); returns it."""
        if isinstance(version, bool) or not isinstance(version, int):
            raise TypeError(f"version must be an integer, got {type(version).__name__}")
        return self._engine.restore_block(self._get_effective_subject(subject_id), check.label(label), version)


def _split_text(text: str, size: int) -> list[str]:
    """Cut text into parts of at most ``size`` characters, at paragraph or line ends where possible."""
    parts = []
    while len(text) > size:
        cut = max(text.rfind("\n\n", 0, size), text.rfind("\n", 0, size))
        cut = cut + 1 if cut > size // 2 else size
        parts.append(text[:cut])
        text = text[cut:]
    if text:
        parts.append(text)
    return parts


class AsyncMemory:
    """``Memory`` with every method a coroutine (safe inside a running event loop).

    Each call runs the shared synchronous implementation in a worker thread,
    so the event loop is never blocked by SQLite or HTTP.
    """

    def __init__(self, api_key: str | None = None, subject_id: str | None = None, **options: Any) -> None:
        self._sync = Memory(api_key, subject_id, **options)

    @property
    def subject_id(self) -> str | None:
        return self._sync.subject_id

    @property
    def engine(self) -> str:
        return self._sync.engine

    async def __aenter__(self) -> AsyncMemory:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()


def _async_twin(name: str) -> Any:
    method = getattr(Memory, name)

    @functools.wraps(method)
    async def twin(self: AsyncMemory, *args: Any, **kwargs: Any) -> Any:
        return await asyncio.to_thread(getattr(self._sync, name), *args, **kwargs)

    return twin


PUBLIC_METHODS = [name for name, member in inspect.getmembers(Memory, inspect.isfunction) if not name.startswith("_")]
for _name in PUBLIC_METHODS:
    setattr(AsyncMemory, _name, _async_twin(_name))
