"""Background workers: claim a subject's queued runs, learn them in one pass, apply.

Threads in the calling process (``background=True``) or the foreground of
``ai-memory worker``. A claim is a lease on the store: renewed by a heartbeat
while the pass runs, released by completion, and taken back by
``SQLiteStore.recover`` when its process dies. A pass is applied by one
transaction that checks the claim still holds, so no batch is applied twice.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

import numpy as np

from .errors import LearnerError
from .learners.base import Learner, PassInput, PassOutput, split_for_passes
from .learners.tools import ToolError, apply_op
from .search.embedders import Embedder
from .store.sqlite import Claim, SQLiteStore

log = logging.getLogger(__name__)

BACKFILL_BATCH = 64  # passages embedded per idle step when the store's embedder changed
BACKFILL_RETRY = 60.0  # seconds before re-embedding is tried again after the embedder failed


class WorkerPool:
    """A bounded set of worker threads over one store; ``completed`` wakes ``wait_for_run``."""

    def __init__(
        self,
        store: SQLiteStore,
        learner: Learner,
        embedder: Embedder | None,
        *,
        concurrency: int = 4,
        lease_seconds: float = 60.0,
        poll_interval: float = 0.5,
        max_pass_chars: int = 24_000,
    ) -> None:
        self.store = store
        self.learner = learner
        self.embedder = embedder
        self.concurrency = concurrency
        self.lease_seconds = lease_seconds
        self.poll_interval = poll_interval
        self.max_pass_chars = max_pass_chars
        self.completed = threading.Condition()
        self.generation = 0  # bumped (under ``completed``) whenever a run of this process ends
        self._wake = threading.Condition()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._active = 0
        self._active_lock = threading.Lock()
        self._start_lock = threading.Lock()
        self._backfill_lock = threading.Lock()
        self._backfill_pending = embedder is not None  # look once for passages without this embedder's vectors
        self._backfill_after = 0
        self._backfill_done = 0
        self._backfill_retry_at = 0.0
        self._dim_checked = False
        self._dim_reset = False

    # -- lifecycle -------------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return any(t.is_alive() for t in self._threads)

    def start(self) -> None:
        with self._start_lock:
            if self.running:
                return
            self._stop.clear()
            self.store.recover()
            self._threads = [
                threading.Thread(target=self._loop, name=f"ai-memory-worker-{i}", daemon=True)
                for i in range(self.concurrency)
            ]
            self._threads.append(threading.Thread(target=self._heartbeat, name="ai-memory-heartbeat", daemon=True))
            for t in self._threads:
                t.start()

    def stop(self, timeout: float | None = None) -> None:
        """Let passes in progress finish, then stop; queued runs stay in the store."""
        self._stop.set()
        with self._wake:
            self._wake.notify_all()
        for t in self._threads:
            t.join(timeout)
        self._threads = []

    def wake(self) -> None:
        """Wake one idle worker (busy ones look for more work when their pass ends)."""
        with self._wake:
            self._wake.notify()

    def reset_after_fork(self) -> None:
        """Threads do not survive a fork: forget them so the child starts its own."""
        self._threads = []
        self.completed = threading.Condition()
        self._wake = threading.Condition()
        self._stop = threading.Event()
        self._active_lock = threading.Lock()
        self._start_lock = threading.Lock()
        self._backfill_lock = threading.Lock()
        self._active = 0

    # -- loops -----------------------------------------------------------------------------------

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                did = self.run_once()
            except Exception:  # a store error must not kill the worker: log, back off, go on
                log.exception("worker iteration failed")
                did = False
            if not did:
                try:
                    did = self.backfill_once()
                except Exception:
                    log.exception("re-embedding step failed")
                    self._backfill_retry_at = time.monotonic() + BACKFILL_RETRY
            if not did:
                with self._wake:
                    if not self._stop.is_set():
                        self._wake.wait(self.poll_interval)

    def _heartbeat(self, stop: threading.Event | None = None) -> None:
        stop = stop or self._stop
        interval = self.lease_seconds / 3
        last_recover = time.monotonic()
        while not stop.wait(interval):
            try:
                if self._active:
                    self.store.renew_leases(self.lease_seconds)
                if time.monotonic() - last_recover > self.lease_seconds / 2:
                    last_recover = time.monotonic()
                    if self.store.recover():
                        self.wake()
                    self.store.finish_purge()  # a delete's WAL truncation that a reader deferred
            except Exception:
                log.exception("lease heartbeat failed")

    def drain(self, *, stop: Callable[[], bool] | None = None) -> int:
        """Process passes in the calling thread until the queue is empty; returns passes run.

        A heartbeat renews the leases meanwhile: without it, a pass longer than
        the lease is taken back by another process's recovery and learned twice.
        """
        self.store.recover()
        done = threading.Event()
        beat = threading.Thread(target=self._heartbeat, args=(done,), name="ai-memory-drain-heartbeat", daemon=True)
        beat.start()
        n = 0
        try:
            while (stop is None or not stop()) and self.run_once():
                n += 1
        finally:
            done.set()
            beat.join()
        return n

    def run_once(self) -> bool:
        claim = self.store.claim(self.lease_seconds)
        if claim is None:
            return False
        with self._active_lock:
            self._active += 1
        try:
            self.process(claim)
        finally:
            with self._active_lock:
                self._active -= 1
            with self.completed:
                self.generation += 1
                self.completed.notify_all()
        self.wake()  # another subject may have become runnable meanwhile
        return True

    # -- one pass --------------------------------------------------------------------------------

    def process(self, claim: Claim) -> None:
        """Learn a claim in one pass; if a coalesced pass fails on its content, learn its runs one by one.

        So one bad batch fails alone and does not take the batches queued
        behind it down too. An unreachable LLM (``llm_error``) fails them
        together: retrying each would only spend the retry budget again.
        """
        failure = self._learn(claim)
        if failure is not None and len(claim.run_ids) > 1 and failure[1] != "llm_error":
            log.info("coalesced pass of runs %s failed (%s); learning them one by one", claim.run_ids, failure[0])
            for single in self.store.split_claim(claim):
                failure = self._learn(single)
                if failure is not None:
                    self.store.fail(
                        single, learner=self._learner_name, error=failure[0], stop_reason=failure[1], stats=failure[2]
                    )
        elif failure is not None:
            self.store.fail(
                claim, learner=self._learner_name, error=failure[0], stop_reason=failure[1], stats=failure[2]
            )

    @property
    def _learner_name(self) -> str:
        return getattr(self.learner, "name", type(self.learner).__name__)

    def _learn(self, claim: Claim) -> tuple[str, str | None, dict[str, Any]] | None:
        """Run the learner over the claim's messages and apply the result; (error, stop_reason, stats) on failure."""
        stats: dict[str, Any] = {}
        try:
            blocks, versions = self.store.pass_blocks(claim.subject_pk)
            messages = self.store.claim_messages(claim)
            out = PassOutput()
            current = list(blocks)
            for chunk in split_for_passes(messages, self.max_pass_chars):
                part = self.learner.learn(PassInput(claim.subject_id, current, chunk, datetime.now(timezone.utc)))
                _merge(out, part)
                stats = _stats(out)
                current = [
                    b.model_copy(update={"value": out.values[b.label]}) if b.label in out.values else b for b in blocks
                ]
            vectors = self._embed(claim)
        except LearnerError as exc:
            log.warning("run(s) %s of subject %r failed: %s", claim.run_ids, claim.subject_id, exc)
            failed = exc.stats  # what the failing part spent, on top of the parts before it
            stats = {k: stats.get(k, 0) + failed.get(k, 0) for k in ("llm_calls", "prompt_tokens", "completion_tokens")}
            return str(exc), exc.stop_reason, stats
        except Exception as exc:
            log.exception("run(s) %s of subject %r failed", claim.run_ids, claim.subject_id)
            return f"{type(exc).__name__}: {exc}", "error", stats
        values = {label: (value, versions[label]) for label, value in out.values.items() if label in versions}

        def replay(label: str, value: str, limit: int) -> str | None:
            """The block changed during the pass: apply this pass's edits on top of the newer value."""
            for op in out.ops:
                if op.args.get("label") == label:
                    try:
                        value = apply_op(op, value, limit)
                    except ToolError as exc:
                        log.warning("edit of %r skipped: the block changed during the pass (%s)", label, exc)
            return value

        if not self.store.complete(
            claim,
            learner=self._learner_name,
            values=values,
            vectors=vectors,
            embedder=self.embedder.name if self.embedder else None,
            stats=_stats(out),
            replay=replay,
        ):
            log.warning(
                "claim on run(s) %s was lost (recovered by another process, or subject deleted);"
                " its pass was discarded",
                claim.run_ids,
            )
        return None

    def _embed(self, claim: Claim) -> list[tuple[int, bytes]]:
        if self.embedder is None:
            return []
        pending = self.store.claim_passages(claim, self.embedder.name)
        if not pending:
            return []
        matrix = self._vectors([text for _, text in pending])
        return [(pk, np.ascontiguousarray(row, dtype=np.float32).tobytes()) for (pk, _), row in zip(pending, matrix)]

    def _vectors(self, texts: list[str]) -> np.ndarray:
        """Embed; the first time, check the dimension against the one the store recorded for this embedder."""
        assert self.embedder is not None
        matrix = self.embedder.embed(texts)
        if matrix.ndim != 2 or matrix.shape[0] != len(texts):
            raise ValueError(f"{self.embedder.name} returned {matrix.shape} for {len(texts)} texts")
        if not self._dim_checked:
            self._dim_checked = True
            name = self.embedder.name
            recorded = self.store.get_meta(f"embedder_dim:{name}")
            if recorded is not None and int(recorded) != matrix.shape[1]:
                log.warning(
                    "%s now gives %d-dimensional vectors, the store's are %d-dimensional: they are dropped"
                    " and the passages re-embedded in the background",
                    name,
                    matrix.shape[1],
                    int(recorded),
                )
                self.store.drop_vectors(embedder=name)
                self._backfill_pending, self._backfill_after, self._dim_reset = True, 0, True
        return matrix

    def backfill_once(self) -> bool:
        """Embed one batch of stored passages that lack this embedder's vectors (idle time); True if it did.

        That happens after the store's embedder changed (or a run's vectors
        were lost): until then those passages are found by lexical search
        only. When none is left, other embedders' vectors are dropped.
        """
        if not self._backfill_pending or self.embedder is None or time.monotonic() < self._backfill_retry_at:
            return False
        if not self._backfill_lock.acquire(blocking=False):
            return False
        try:
            name = self.embedder.name
            recorded = self.store.get_meta("embedder")
            if recorded is not None and recorded != name:
                log.warning(
                    "the store's embedder is now %s (set by another process); this process embeds with %s"
                    " and does not re-embed old passages",
                    recorded,
                    name,
                )
                self._backfill_pending = False
                return False
            rows = self.store.passages_without_vectors(name, limit=BACKFILL_BATCH, after_pk=self._backfill_after)
            if not rows:
                self._backfill_pending = False
                if self._backfill_done:
                    log.info("re-embedding with %s finished: %d passage(s)", name, self._backfill_done)
                dropped = self.store.drop_vectors(keep=name)
                if dropped:
                    log.info("dropped %d vector(s) of previous embedders", dropped)
                return False
            try:
                matrix = self._vectors([r[2] for r in rows])
            except Exception as exc:
                log.warning("re-embedding with %s failed (%s); retried in %gs", name, exc, BACKFILL_RETRY)
                self._backfill_retry_at = time.monotonic() + BACKFILL_RETRY
                return False
            if not self._backfill_done:
                log.info("re-embedding stored passages with %s in the background", name)
            self.store.put_vectors(
                [
                    (pk, spk, np.ascontiguousarray(v, dtype=np.float32).tobytes())
                    for (pk, spk, _), v in zip(rows, matrix)
                ],
                name,
            )
            self._backfill_after = 0 if self._dim_reset else rows[-1][0]
            self._dim_reset = False
            self._backfill_done += len(rows)
            return True
        finally:
            self._backfill_lock.release()


def _merge(total: PassOutput, part: PassOutput) -> None:
    total.values.update(part.values)
    total.ops.extend(part.ops)
    total.llm_calls += part.llm_calls
    total.prompt_tokens += part.prompt_tokens
    total.completion_tokens += part.completion_tokens
    total.stop_reason = part.stop_reason


def _stats(out: PassOutput) -> dict[str, Any]:
    return {
        "llm_calls": out.llm_calls,
        "prompt_tokens": out.prompt_tokens,
        "completion_tokens": out.completion_tokens,
        "stop_reason": out.stop_reason,
    }
