"""The embedded engine: a SQLite store plus background workers in this process."""

from __future__ import annotations

import atexit
import logging
import os
import shutil
import tempfile
import threading
import time
import weakref
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from ..config import Settings, default_path
from ..errors import RunNotFoundError
from ..learners import make_learner
from ..learners.llm import openai_client
from ..models import TERMINAL_STATUSES, Block, BlockSpec, BlockVersion, MessageIn, Run, SearchResult, StoredMessage
from ..search import hybrid
from ..search.embedders import Embedder, make_embedder
from ..store.sqlite import SQLiteStore
from ..worker import WorkerPool

log = logging.getLogger(__name__)


class LocalEngine:
    """State in one SQLite file; the memory agent runs in worker threads (or ``ai-memory worker``)."""

    name = "local"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._tmpdir: str | None = None
        path = settings.path or str(default_path())
        if path == ":memory:":  # a throwaway store: a private temporary file, removed on close
            self._tmpdir = tempfile.mkdtemp(prefix="ai-memory-")
            path = os.path.join(self._tmpdir, "memory.db")
        self.path = path
        self.store = SQLiteStore(
            path,
            history_limit=settings.history_limit,
            busy_timeout=settings.busy_timeout,
            secure_delete=settings.secure_delete,
        )
        self.learner = make_learner(settings)
        self.embedder = self._resolve_embedder()
        self.vectors = hybrid.VectorCache()
        self.pool = WorkerPool(
            self.store,
            self.learner,
            self.embedder,
            concurrency=settings.workers,
            lease_seconds=settings.lease_seconds,
            poll_interval=settings.poll_interval,
            max_pass_chars=settings.max_pass_chars,
        )
        self._pid = os.getpid()
        self._closed = False
        log.info(
            "local engine: store %s, learner %s, embedder %s",
            path,
            self.learner.name,
            self.embedder.name if self.embedder else "none (lexical search only)",
        )
        _open_engines.add(self)
        if settings.background:
            self.pool.start()  # resumes what a previous process left, and serves other processes' batches

    def _resolve_embedder(self) -> Embedder | None:
        recorded = self.store.get_meta("embedder")
        embedder = make_embedder(
            self.settings.embedder,
            recorded=recorded,
            llm_configured=self.settings.llm_configured,
            openai_client=self._openai_client,
        )
        name = embedder.name if embedder else None
        if recorded and name and recorded != name:
            log.warning(
                "store %s has vectors from %s; the configured embedder is %s. Search never compares the two:"
                " stored passages are re-embedded with %s by the background worker (ai-memory worker when"
                " background=False), in batches, and found by lexical search only until then",
                self.path,
                recorded,
                name,
                name,
            )
        if name and recorded != name:
            self.store.set_meta("embedder", name)
        return embedder

    def _openai_client(self) -> Any:
        return openai_client(self.settings)

    def info(self) -> dict[str, str]:
        return {
            "engine": self.name,
            "store": self.path,
            "learner": self.learner.name,
            "embedder": self.embedder.name if self.embedder else "none",
        }

    # -- process plumbing ------------------------------------------------------------------------

    def _check_fork(self) -> None:
        if os.getpid() != self._pid:
            self._pid = os.getpid()
            self.pool.reset_after_fork()

    def _kick(self) -> None:
        self._check_fork()
        if self.settings.background and not self._closed:
            if not self.pool.running:
                self.pool.start()
            self.pool.wake()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.pool.stop()
        self.store.close()
        _open_engines.discard(self)
        if self._tmpdir:
            shutil.rmtree(self._tmpdir, ignore_errors=True)

    # -- subjects --------------------------------------------------------------------------------

    def agent_id(self, subject_id: str) -> str | None:
        return self.store.agent_id(subject_id)

    def create_subject(self, subject_id: str, *, reset: bool, blocks: Sequence[BlockSpec], kind: str) -> str:
        noun = "user" if kind == "user" else "subject"
        msg = f"Agent {{agent_id}} already exists for {noun} {{subject_id}}. Cannot re-initialize memory unless reset=True."
        return self.store.create_subject(subject_id, reset=reset, blocks=blocks, exists_message=msg)

    def ensure_subject(self, subject_id: str) -> str:
        return self.store.ensure_subject(subject_id)

    def delete_subject(self, subject_id: str) -> None:
        self.store.delete_subject(subject_id)

    # -- blocks ----------------------------------------------------------------------------------

    def list_blocks(self, subject_id: str) -> list[Block]:
        return self.store.list_blocks(subject_id)

    def get_block(self, subject_id: str, label: str) -> Block | None:
        return self.store.get_block(subject_id, label)

    def block_text(self, subject_id: str, label: str) -> tuple[str, str] | None:
        return self.store.block_text(subject_id, label)

    def create_block(self, subject_id: str, spec: BlockSpec, *, reset: bool) -> str:
        return self.store.create_block(subject_id, spec, reset=reset)

    def delete_block(self, subject_id: str, label: str) -> None:
        self.store.delete_block(subject_id, label)

    def set_block_value(self, subject_id: str, label: str, value: str) -> None:
        from .._validation import block_value

        self.store.set_block_value(subject_id, label, value, check=block_value)

    def block_history(self, subject_id: str, label: str) -> list[BlockVersion]:
        return self.store.block_history(subject_id, label)

    def restore_block(self, subject_id: str, label: str, version: int) -> str:
        return self.store.restore_block(subject_id, label, version)

    # -- messages and runs -----------------------------------------------------------------------

    def add_messages(
        self, subject_id: str, messages: Sequence[MessageIn], *, archive: bool, default_blocks: Sequence[BlockSpec]
    ) -> str:
        texts = [m.content if archive else None for m in messages]
        run_id = self.store.enqueue(subject_id, messages, passages=texts, default_blocks=default_blocks)
        self._kick()
        return run_id

    def get_messages(
        self, subject_id: str, *, limit: int | None, before: datetime | None, after: datetime | None
    ) -> list[StoredMessage]:
        return self.store.get_messages(subject_id, limit=limit, before=before, after=after)

    def delete_message(self, message_id: str) -> None:
        self.store.delete_message(message_id)

    def get_run(self, run_id: str) -> Run | None:
        return self.store.get_run(run_id)

    def wait_for_run(self, run_id: str, timeout: float) -> Run:
        """Wait on this process's completion signal; poll the store with backoff for other processes."""
        self._check_fork()
        deadline = time.monotonic() + timeout
        delay = 0.002
        pool = self.pool
        while True:
            with pool.completed:
                seen = pool.generation
            status = self.store.run_status(run_id)
            if status is None:
                raise RunNotFoundError(f"Run {run_id} not found")
            if status in TERMINAL_STATUSES:
                return self.store.get_run(run_id)  # type: ignore[return-value]
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"Run {run_id} did not complete within {timeout} seconds")
            with pool.completed:
                pool.completed.wait_for(lambda seen=seen: pool.generation != seen, timeout=min(delay, remaining))
            delay = min(delay * 2, 0.25)

    def list_runs(self, subject_id: str, status: str | None) -> list[Run]:
        return self.store.list_runs(subject_id, status)

    def cancel_run(self, run_id: str) -> Run:
        return self.store.cancel_run(run_id)

    def retry_run(self, run_id: str) -> Run:
        run = self.store.retry_run(run_id)
        self._kick()
        return run

    # -- search ----------------------------------------------------------------------------------

    def search(
        self,
        subject_id: str,
        query: str,
        *,
        tags: Sequence[str],
        tag_match_mode: str,
        limit: int,
        start: datetime | None,
        end: datetime | None,
    ) -> list[SearchResult]:
        pk = self.store.subject_pk(subject_id)
        if pk is None:
            return []
        return hybrid.search(
            self.store,
            self.vectors,
            self.embedder,
            pk,
            query,
            tags=tags,
            tag_match_mode=tag_match_mode,
            limit=limit,
            start=start,
            end=end,
        )

    # -- worker process --------------------------------------------------------------------------

    def work(self, *, once: bool = False, stop: threading.Event | None = None) -> int:
        """Foreground worker (``ai-memory worker``): drain the queue once, or keep working until ``stop``."""
        if once:
            return self.pool.drain()
        stop = stop or threading.Event()
        self.pool.start()
        try:
            while not stop.wait(1.0):
                pass
        finally:
            self.pool.stop()
        return 0


_open_engines: weakref.WeakSet[LocalEngine] = weakref.WeakSet()


@atexit.register
def _close_all() -> None:
    """At exit, let passes in progress finish (bounded) so nothing is left half-done needlessly."""
    for engine in list(_open_engines):
        try:
            engine.pool.stop(timeout=5.0)
        except Exception:  # pragma: no cover
            pass
