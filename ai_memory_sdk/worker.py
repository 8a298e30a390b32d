"""Background workers: claim a subject's queued runs, learn them in one pass, apply.

Threads in the calling process (``background=True``) or the foreground of
``ai-memory worker``. The pool talks to one queue interface only
(``store.base.RunQueue``): a claim is a lease, renewed by a heartbeat while
the pass runs, applied by one transaction that checks the claim still holds
(so nothing is applied twice), and handed back (``release``) when the pool
stops before the pass ends.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import datetime, timezone

from ._fork import PerProcess
from .errors import LearnerError
from .learners.base import Learner, PassInput, PassOutput, split_for_passes
from .models import Block
from .store.base import Claim, PassResult, RunQueue, RunStats

log = logging.getLogger(__name__)

current_runs: ContextVar[tuple[str, ...]] = ContextVar("ai_memory_current_runs", default=())
"""The runs of the pass this thread is learning, for log records (the server tags them with request ids)."""

Embed = Callable[[Claim], tuple[list[tuple[int, bytes]], str | None]]
"""The claim's passage vectors and the embedder's name (``search.indexer.Indexer.embed_claim``); never raises."""


@dataclass
class _Threads:
    """What a process's pool runs; a forked child starts with none (threads do not survive a fork)."""

    threads: list[threading.Thread] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)
    inflight: dict[int, Claim] = field(default_factory=dict)  # thread id -> the claim it is learning


class WorkerPool:
    """A bounded set of worker threads over one run queue."""

    def __init__(
        self,
        queue: RunQueue,
        learner: Learner,
        embed: Embed,
        *,
        concurrency: int = 4,
        lease_seconds: float = 60.0,
        poll_interval: float = 0.5,
        max_pass_chars: int = 24_000,
        consolidate_at: float | None = 0.9,
        idle: Callable[[], bool] = lambda: False,
        trace: bool = True,
    ) -> None:
        self.queue = queue
        self.learner = learner
        self.embed = embed
        self.concurrency = concurrency
        self.lease_seconds = lease_seconds
        self.poll_interval = poll_interval
        self.max_pass_chars = max_pass_chars
        self.consolidate_at = consolidate_at
        self.idle = idle  # background work for idle time (re-embedding); True when it did something
        self.trace = trace  # store what each pass sent and did (the inspector)
        self._state = PerProcess(_Threads)

    # -- lifecycle -----------------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return any(t.is_alive() for t in self._state.get().threads)

    def start(self) -> None:
        state = self._state.get()
        with state.lock:
            if any(t.is_alive() for t in state.threads):
                return
            state.stop.clear()
            self.queue.recover()
            state.threads = [
                threading.Thread(target=self._loop, name=f"ai-memory-worker-{i}", daemon=True)
                for i in range(self.concurrency)
            ]
            state.threads.append(threading.Thread(target=self._heartbeat, name="ai-memory-heartbeat", daemon=True))
            for t in state.threads:
                t.start()

    def stop(self, timeout: float | None = None) -> list[Claim]:
        """Let passes in progress finish within ``timeout``, then stop; returns the claims handed back unapplied.

        A pass still running at the deadline (a stalled LLM call) is released
        to the queue: its thread is abandoned, and its late ``complete`` finds
        the claim gone, so nothing of it is ever applied.
        """
        state = self._state.get()
        state.stop.set()
        self.wake(len(state.threads))
        deadline = None if timeout is None else time.monotonic() + timeout
        for t in state.threads:
            t.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
        with state.lock:
            abandoned = list(state.inflight.values())
            state.inflight.clear()
            state.threads = []
        released = [c for c in abandoned if self.queue.release(c)]
        if released:
            log.warning(
                "stopped with %d pass(es) unfinished (run(s) %s): handed back to the queue, nothing applied",
                len(released),
                ", ".join(r for c in released for r in c.run_ids),
            )
        return released

    def wake(self, count: int = 1) -> None:
        """Wake idle workers (busy ones look for more work when their pass ends)."""
        self.queue.wake(count)

    # -- loops ---------------------------------------------------------------------------------------

    def _loop(self) -> None:
        stop = self._state.get().stop
        while not stop.is_set():
            try:
                did = self.run_once()
            except Exception as exc:  # a store error must not kill the worker: log, back off, go on
                if stop.is_set():  # a pass abandoned by stop(): it was handed back, and the store may be closed
                    log.debug("a pass abandoned at stop ended with %s: %s", type(exc).__name__, exc)
                    return
                log.exception("worker iteration failed")
                did = False
            if not did and not stop.is_set():
                try:
                    did = self.idle()
                except Exception:
                    log.exception("idle-time work failed")
            if not did and not stop.is_set():
                self.queue.wait_for_work(self.poll_interval)

    def _heartbeat(self, stop: threading.Event | None = None) -> None:
        state = self._state.get()
        stop = stop or state.stop
        interval = self.lease_seconds / 3
        last_recover = time.monotonic()
        while not stop.wait(interval):
            try:
                if state.inflight:
                    self.queue.renew_leases(self.lease_seconds)
                if time.monotonic() - last_recover > self.lease_seconds / 2:
                    last_recover = time.monotonic()
                    self.queue.recover()
                    self.queue.maintain()
            except Exception:
                log.exception("lease heartbeat failed")

    def drain(self, *, stop: Callable[[], bool] | None = None) -> int:
        """Process passes in the calling thread until the queue is empty; returns passes run.

        A heartbeat renews the leases meanwhile: without it, a pass longer than
        the lease is taken back by another process's recovery and learned twice.
        """
        self.queue.recover()
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
        """Claim and learn one pass; False when there was nothing to claim."""
        claim = self.queue.claim(self.lease_seconds)
        if claim is None:
            return False
        state = self._state.get()
        me = threading.get_ident()
        with state.lock:
            state.inflight[me] = claim
        token = current_runs.set(claim.run_ids)
        try:
            self.process(claim)
        finally:
            current_runs.reset(token)
            with state.lock:
                state.inflight.pop(me, None)
        return True

    # -- one pass ------------------------------------------------------------------------------------

    def process(self, claim: Claim) -> None:
        """Learn a claim in one pass; if a coalesced pass fails on its content, learn its runs one by one.

        So one bad batch fails alone and does not take the batches queued
        behind it down too. An unreachable LLM (``llm_error``) fails them
        together: retrying each would only spend the retry budget again.
        """
        failure = self._learn(claim)
        if failure is not None and len(claim.run_ids) > 1 and failure.stats.stop_reason != "llm_error":
            log.info("coalesced pass of runs %s failed (%s); learning them one by one", claim.run_ids, failure.error)
            for single in self.queue.split_claim(claim):
                failure = self._learn(single)
                if failure is not None:
                    self._fail(single, failure)
        elif failure is not None:
            self._fail(claim, failure)

    @property
    def learner_name(self) -> str:
        return getattr(self.learner, "name", type(self.learner).__name__)

    def _fail(self, claim: Claim, failure: _Failure) -> None:
        self.queue.fail(claim, learner=self.learner_name, error=failure.error, stats=failure.stats, trace=failure.trace)

    def _learn(self, claim: Claim) -> _Failure | None:
        """Run the learner over the claim and apply the result; the failure when it did not finish."""
        out = PassOutput()
        try:
            blocks, versions = self.queue.pass_blocks(claim.subject_pk)
            now = datetime.now(timezone.utc)
            if claim.kind == "consolidate":
                if blocks:
                    out.merge(self.learner.consolidate(PassInput(claim.subject_id, blocks, [], now)))
            else:
                messages = self.queue.claim_messages(claim)
                if not blocks:
                    log.warning(
                        "subject %r has no blocks: run(s) %s stored its messages but learned nothing; create blocks"
                        " with initialize_memory() (or use add_messages(user_id, ...) for the human/summary pair)",
                        claim.subject_id,
                        ", ".join(claim.run_ids),
                    )
                    out.stop_reason = "no_blocks"
                current = list(blocks)
                for chunk in split_for_passes(messages, self.max_pass_chars) if blocks else []:
                    out.merge(self.learner.learn(PassInput(claim.subject_id, current, chunk, now)))
                    current = [_with(b, out.values.get(b.label)) for b in blocks]
        except LearnerError as exc:
            log.warning("run(s) %s of subject %r failed: %s", claim.run_ids, claim.subject_id, exc)
            failed = exc.stats  # what the failing part spent, on top of the parts before it
            stats = RunStats(
                out.llm_calls + failed.get("llm_calls", 0),
                out.prompt_tokens + failed.get("prompt_tokens", 0),
                out.completion_tokens + failed.get("completion_tokens", 0),
                exc.stop_reason,
            )
            out.trace.extend(exc.trace)
            return _Failure(str(exc), stats, self._trace(claim, out))
        except Exception as exc:
            log.exception("run(s) %s of subject %r failed", claim.run_ids, claim.subject_id)
            return _Failure(f"{type(exc).__name__}: {exc}", RunStats(stop_reason="error"), None)
        vectors, embedder = self.embed(claim)
        values = {label: (value, versions[label]) for label, value in out.values.items() if label in versions}
        result = PassResult(
            learner=self.learner_name,
            values=values,
            ops=out.ops,
            vectors=vectors,
            embedder=embedder,
            stats=RunStats(out.llm_calls, out.prompt_tokens, out.completion_tokens, out.stop_reason),
            trace=self._trace(claim, out),
            consolidate=claim.kind == "learn" and self._needs_consolidation(blocks, out),
        )
        if not self.queue.complete(claim, result):
            log.warning(
                "claim on run(s) %s was lost (recovered by another process, handed back, or subject deleted);"
                " its pass was discarded",
                claim.run_ids,
            )
        return None

    def _trace(self, claim: Claim, out: PassOutput) -> dict[str, object] | None:
        """What the inspector shows of a pass: the learner's steps and the edits it made (None: tracing off)."""
        return _trace(claim, self.learner_name, out) if self.trace else None

    def _needs_consolidation(self, blocks: list[Block], out: PassOutput) -> bool:
        """After a learning pass: an edit was refused for a limit, or a block crossed ``consolidate_at`` of its limit.

        Crossing, not being above: a block that consolidation cannot bring
        below the mark (every line a distinct standing fact) does not queue
        one consolidation per pass; a refused edit still does.
        """
        if self.consolidate_at is None:
            return False
        if out.limit_refusals:
            return True
        mark = self.consolidate_at
        return any(len(b.value) <= mark * b.limit < len(out.values.get(b.label, b.value)) for b in blocks)


@dataclass(frozen=True)
class _Failure:
    error: str
    stats: RunStats
    trace: dict[str, object] | None


def _with(block: Block, value: str | None) -> Block:
    return block if value is None else block.model_copy(update={"value": value})


def _trace(claim: Claim, learner: str, out: PassOutput) -> dict[str, object]:
    return {
        "kind": claim.kind,
        "learner": learner,
        "runs": list(claim.run_ids),
        "steps": out.trace,
        "edits": [{"tool": op.tool, "args": op.args} for op in out.ops],
    }
