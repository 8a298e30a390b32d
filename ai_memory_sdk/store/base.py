"""The store seam: what the engine, the worker and search need from a storage backend.

A backend (``store/sqlite/``, ``store/postgres/``) is one object implementing
``Store``, whose ``queue`` implements ``RunQueue`` (the worker's only
dependency) and whose ``index`` implements ``PassageIndex`` (search's only
dependency). The docstrings below are the whole contract: a new backend is
written from them, and ``tests/contract/`` runs the same suite over each.

Terms used throughout:

- A *subject* is identified by ``subject_id`` inside a *tenant*. The
  embedded store has one tenant, ``""``; the HTTP server binds a view of the
  store to each API key's tenant with ``scoped``. Two tenants may both have a
  subject ``"alice"``: nothing of one is ever visible through the other's view
  (not its runs, messages, passages, traces or session items, even by id).
- ``subject_pk`` is a backend-chosen integer, unique in the whole store and
  never reused, even after the subject is deleted (a search or cache keyed on
  a stale pk must find nothing, never another subject's rows).
- A passage ``pk`` is likewise unique, never reused, and increases in the
  order passages were stored.
- Times are timezone-aware UTC ``datetime``s at the seam; a backend stores
  them as it likes.
- Every method is safe to call from any thread, and from a process forked
  from the one that opened the store (the child opens its own connections).
- "Atomically" means: in one transaction, so that after a crash either all of
  it or none of it is visible.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol, runtime_checkable

import numpy as np

from ..learners.tools import EditOp
from ..models import (
    Block,
    BlockSpec,
    BlockVersion,
    MessageIn,
    Run,
    RunKind,
    StoredMessage,
    SubjectSummary,
)

MAX_ATTEMPTS = 5
"""A run whose pass was taken back from a dead process this many times is failed (``stop_reason="crashed"``),
not retried forever: it is probably what kills the process."""


# -- values crossing the seam ---------------------------------------------------------------------


@dataclass(frozen=True)
class Claim:
    """Queued runs of one subject taken by one worker for one pass.

    ``claim_id`` fences the claim: ``complete``/``fail``/``release`` act only
    while every run of ``run_ids`` is still ``running`` under this id, so a
    worker whose lease was taken over can never apply its pass.
    """

    claim_id: str
    subject_pk: int
    subject_id: str
    kind: RunKind
    run_ids: tuple[str, ...]


@dataclass(frozen=True)
class RunStats:
    """What a pass spent, recorded on each of its runs."""

    llm_calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    stop_reason: str | None = None


@dataclass(frozen=True)
class PassResult:
    """A finished pass, as ``RunQueue.complete`` applies it.

    ``values`` maps a label to (new value, the block's version the pass read).
    When the block's version has changed since (the application edited it
    during the pass), the value written is ``learners.tools.replay(ops, ...)``
    of this pass's edits on the newer value instead, so the application's edit
    is not overwritten. ``vectors`` are (passage pk, float32 bytes) from
    ``embedder``. ``trace`` (a JSON object) is stored with each run when the
    store keeps traces. ``consolidate`` asks for one consolidation run of the
    subject to be queued in the same transaction, unless one is queued already.
    """

    learner: str
    values: dict[str, tuple[str, int]] = field(default_factory=dict)
    ops: Sequence[EditOp] = ()
    vectors: Sequence[tuple[int, bytes]] = ()
    embedder: str | None = None
    stats: RunStats = RunStats()
    trace: dict[str, Any] | None = None
    consolidate: bool = False


@dataclass(frozen=True)
class PassageRow:
    """What search returns about one passage (``SearchResult`` without the score)."""

    content: str
    role: str | None
    tags: list[str]
    created_at: datetime
    message_id: str | None
    metadata: dict[str, Any]


@dataclass(frozen=True)
class IndexCursor:
    """How far a reader has followed one subject's passages and vectors (``PassageIndex.changes``)."""

    generation: tuple[int, int] = (0, 0)
    max_pk: int = 0
    max_seq: int = 0


@dataclass(frozen=True)
class IndexChanges:
    """New passage and vector rows of one subject since a cursor, read in one consistent snapshot.

    ``reset`` means rows were removed since the cursor: the reader drops what
    it holds and takes ``passages``/``vectors`` as the subject's complete set.
    ``passages`` are (pk, created_at epoch seconds, tags) in pk order;
    ``vectors`` are (seq, passage pk, float32 bytes) in seq order, where seq
    only grows.
    """

    cursor: IndexCursor
    reset: bool = False
    passages: list[tuple[int, float, list[str]]] = field(default_factory=list)
    vectors: list[tuple[int, int, bytes]] = field(default_factory=list)


@dataclass(frozen=True)
class RunTotals:
    """Runs of one status across the whole store, and the LLM usage recorded on them (the server's metrics)."""

    runs: int = 0
    llm_calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0


@dataclass(frozen=True)
class ApiKey:
    """A server API key as listed (the key itself is never stored, only its hash)."""

    name: str
    created_at: datetime
    revoked_at: datetime | None = None


# -- the worker's side -----------------------------------------------------------------------------


class RunQueue(Protocol):
    """The run queue: everything the worker uses, and nothing else.

    Guarantees every backend keeps, across any number of processes and hosts
    sharing the store: a subject's runs are applied in queue order and never
    two passes of one subject at once; each run is applied at most once; a
    run left ``running`` by a dead worker is taken back after its lease.
    """

    @property
    def owner(self) -> str:
        """``host:pid:nonce`` of this process (``_process.process_owner``): the lease owner of its claims."""
        ...

    def claim(self, lease_seconds: float) -> Claim | None:
        """Atomically take the next pass, or return None when no subject has runnable work.

        The subject chosen is the one, among subjects with no ``running`` run,
        whose oldest queued run is oldest. Of that subject it takes every
        queued ``consolidate`` run if there is one (they go first, as one
        pass), else every queued ``learn`` run (coalesced into one pass),
        marking them ``running`` with ``started_at``, a new claim id, this
        process as lease owner, a lease of ``lease_seconds`` from now (the
        database's clock where it has one) and ``attempts`` + 1. Exception: a
        queued run that was already attempted (its pass died with a process)
        is claimed alone, so a batch that kills its process reaches
        ``MAX_ATTEMPTS`` by itself instead of taking its neighbours along.
        """
        ...

    def split_claim(self, claim: Claim) -> list[Claim]:
        """Give each run of a coalesced claim a claim of its own (same owner and lease), oldest first.

        Runs no longer held by ``claim`` are left out. Used when a coalesced
        pass failed on its content, to learn its batches one by one.
        """
        ...

    def claim_messages(self, claim: Claim) -> list[StoredMessage]:
        """The messages of the claim's runs, in the order they were stored."""
        ...

    def claim_passages(self, claim: Claim, embedder: str) -> list[tuple[int, str]]:
        """(passage pk, text) of the claim's passages with no vector from ``embedder`` yet, in pk order."""
        ...

    def pass_blocks(self, subject_pk: int) -> tuple[list[Block], dict[str, int]]:
        """The subject's blocks in creation order and each one's current version, read together."""
        ...

    def renew_leases(self, lease_seconds: float) -> int:
        """Extend every lease this process (``owner``) holds to ``lease_seconds`` from now; returns runs renewed."""
        ...

    def recover(self) -> int:
        """Requeue runs whose lease expired, or whose owner on this host is dead; returns how many.

        A recovered run that has reached ``MAX_ATTEMPTS`` is failed with
        ``stop_reason="crashed"`` instead.
        """
        ...

    def release(self, claim: Claim) -> int:
        """Hand a claim's runs back to the queue unapplied (``queued``, attempt not counted); returns runs released.

        For a pass abandoned on purpose (``close()`` past its timeout, a
        worker told to stop): nothing of it is applied, and its late
        ``complete`` finds the claim gone.
        """
        ...

    def complete(self, claim: Claim, result: PassResult) -> bool:
        """Apply a pass atomically; False (and nothing applied) when the claim no longer holds.

        In one transaction: each changed block value written as a new version
        (``run_id`` of the claim's first run; older versions beyond the
        history limit dropped), the vectors stored (rows of passages deleted
        meanwhile skipped), every run of the claim ``completed`` with
        ``finished_at``, learner and stats, the trace stored, and a
        consolidation queued if asked. A block deleted during the pass is
        skipped with a warning. Wakes ``wait_for_run`` waiters of those runs.
        """
        ...

    def fail(
        self,
        claim: Claim,
        *,
        learner: str,
        error: str,
        stats: RunStats,
        trace: dict[str, Any] | None = None,
    ) -> bool:
        """Mark the claim's runs ``failed`` (no block changes); False when the claim no longer holds."""
        ...

    def wait_for_work(self, timeout: float) -> None:
        """Block until a run may have become claimable (enqueued, retried, released) or ``timeout`` passed.

        May return early without work (callers then ``claim``, which decides);
        must not sleep past ``timeout``. Wakes for runs queued by this process
        at once, and for other processes' runs as soon as the backend can tell
        (a notification, or the timeout as a poll).
        """
        ...

    def wake(self, count: int = 1) -> None:
        """Wake up to ``count`` threads of this process waiting in ``wait_for_work`` (a pool that stops)."""
        ...

    def maintain(self) -> None:
        """Periodic housekeeping the worker's heartbeat calls: finish deferred purges of deleted text."""
        ...


# -- search's side ---------------------------------------------------------------------------------


class PassageIndex(Protocol):
    """Archival passages for search: lexical matching, stored vectors, and re-embedding.

    Optional: an index that can search its vectors itself (PostgreSQL with
    pgvector) also has ``nearest`` and ``similarity`` (``NearestIndex``).
    Search then asks it for the vector channel and the cosines of lexical
    candidates, and reads only passage rows through ``changes``, so no
    process holds the store's vectors in memory; without it, search reads the
    vectors through ``changes`` and compares them in process.
    """

    def changes(self, subject_pk: int, embedder: str | None, since: IndexCursor) -> IndexChanges:
        """The subject's passage rows above ``since.max_pk`` and vectors from ``embedder`` above ``since.max_seq``.

        Read in one snapshot. When ``since.generation`` is current, nothing
        changed: empty lists. When a passage or vector of the subject was
        removed since ``since`` (or ``since`` is the default cursor), ``reset``
        is true and every row of the subject is returned.
        """
        ...

    def lexical(
        self,
        subject_pk: int,
        query: str,
        k: int,
        *,
        allowed: Callable[[np.ndarray], np.ndarray] | None = None,
        subject_size: int | None = None,
        allowed_fraction: float = 1.0,
        also: Sequence[int] = (),
    ) -> list[tuple[int, float]]:
        """The subject's best ``k`` passages for ``query`` by lexical relevance: (pk, score), best first.

        ``query`` is the user's raw text (any text is valid: the backend turns
        it into its own syntax and never raises for it); a query with no
        searchable word returns ``[]``.

        Scores are absolute, so search can report them (``search.hybrid``):
        the Okapi BM25 of SQLite FTS5's ``bm25()`` (k1 1.2, b 0.75, the
        recipe's column weights, IDF ``max(ln((N - n + 0.5) / (n + 0.5)),
        1e-6)`` over the store's N passages, n passages holding the term)
        divided by the sum of the IDFs of the query's terms, n = 0 for a term
        no passage holds. 1.0 is a passage holding each term once, at the
        average length; more is possible. A backend may leave a query's most
        frequent terms out within a budget (see ``store.sqlite.index``): they
        are then left out of both.

        ``also``: pks of the subject's allowed passages whose scores are wanted
        as well (the vector channel's candidates). Those that match the query
        and are not among the best ``k`` follow them, in any order.

        ``allowed`` (optional) maps an int64 array of passage pks, of any
        subject, to a bool mask of those that may be returned: passages of
        this subject that pass the caller's tag and time filters. With it, a
        backend may rank matches store-wide and filter them, when that is
        cheaper than restricting the query to the subject. Planning hints:
        ``subject_size`` is how many passages the subject has (None: unknown),
        ``allowed_fraction`` the share of them ``allowed`` accepts.
        """
        ...

    def passages(self, pks: Sequence[int]) -> dict[int, PassageRow]:
        """The rows of these passages (pks that no longer exist are left out)."""
        ...

    def passages_without_vectors(self, embedder: str, limit: int, after_pk: int = 0) -> list[tuple[int, int, str]]:
        """(passage pk, subject pk, text) above ``after_pk`` with no vector from ``embedder``, in pk order.

        Passages of queued or running runs are left out: their pass embeds them.
        """
        ...

    def put_vectors(self, rows: Sequence[tuple[int, int, bytes]], embedder: str) -> None:
        """Store (passage pk, subject pk, float32 bytes) rows; rows of deleted passages are skipped."""
        ...

    def drop_vectors(self, *, embedder: str | None = None, keep: str | None = None) -> int:
        """Delete every vector of ``embedder`` (or of every embedder but ``keep``); returns how many."""
        ...

    def vector_dim(self, embedder: str) -> int | None:
        """The dimension of the vectors stored for ``embedder`` (None if none was ever stored)."""
        ...


@runtime_checkable
class NearestIndex(Protocol):
    """The optional vector search of a ``PassageIndex`` (see there)."""

    def nearest(
        self,
        subject_pk: int,
        embedder: str,
        vector: np.ndarray,
        k: int,
        *,
        allowed: Callable[[np.ndarray], np.ndarray] | None = None,
        subject_size: int | None = None,
        allowed_fraction: float = 1.0,
    ) -> list[tuple[int, float]]:
        """The subject's ``k`` passages whose ``embedder`` vectors are closest to ``vector``: (pk, cosine), best first.

        ``allowed``, ``subject_size`` and ``allowed_fraction`` as in
        ``PassageIndex.lexical``. A subject with no vectors of that embedder
        and dimension gives ``[]``. Exact for small subjects; a backend may
        use an approximate index for large ones.
        """
        ...

    def similarity(self, embedder: str, vector: np.ndarray, pks: Sequence[int]) -> list[tuple[int, float]]:
        """(pk, cosine) of those of these passages that have a vector of ``embedder`` and this dimension."""
        ...


# -- the engine's side -----------------------------------------------------------------------------


class Store(Protocol):
    """Subjects, blocks, messages and runs as the engine uses them; ``queue`` and ``index`` for the rest.

    Errors: an unknown block raises ``BlockNotFoundError``, an unknown run
    ``RunNotFoundError``, a run in the wrong state ``RunStateError``, a value
    over a block's limit ``ValueError`` naming the numbers, and a backend
    failure (unreachable, corrupt, read-only) ``StoreError`` naming the path.
    """

    @property
    def path(self) -> str:
        """Where the store is, for messages and logs (a URL with its password masked)."""
        ...

    @property
    def tenant(self) -> str:
        """The tenant this view is bound to (``""`` for the embedded store)."""
        ...

    @property
    def queue(self) -> RunQueue: ...

    @property
    def index(self) -> PassageIndex: ...

    def scoped(self, tenant: str) -> Store:
        """A view of the same store (same connections, queue and index) bound to ``tenant``."""
        ...

    def close(self) -> None:
        """Close this process's connections (a store closed once stays closed; views share it)."""
        ...

    # meta
    def get_meta(self, key: str) -> str | None:
        """A store-wide setting (e.g. the embedder the vectors came from)."""
        ...

    def set_meta(self, key: str, value: str) -> None: ...

    # subjects
    def agent_id(self, subject_id: str) -> str | None:
        """The subject's memory agent id (stable for the subject's life), or None if unknown."""
        ...

    def subject_pk(self, subject_id: str) -> int | None: ...

    def create_subject(self, subject_id: str, *, reset: bool, blocks: Sequence[BlockSpec] = ()) -> str:
        """Create a subject with these blocks atomically; returns its agent id.

        An existing subject raises ``SubjectExistsError`` unless ``reset``, which
        erases it (as ``delete_subject``) first, in the same transaction.
        """
        ...

    def delete_subject(self, subject_id: str) -> bool:
        """Erase every row about the subject atomically, then leave none of its text readable; False if unknown.

        Blocks, versions, messages, passages, vectors, runs, traces and the
        items of the sessions bound to the subject all go. Deleted text must not
        stay readable in the backend's files (freed pages, index segments,
        logs) beyond what the backend documents it cannot promise.
        """
        ...

    def list_subjects(self, *, query: str | None = None, offset: int = 0, limit: int = 50) -> list[SubjectSummary]:
        """Subjects ordered by ``subject_id``; ``query`` keeps those whose id contains it (case-insensitive)."""
        ...

    def count_subjects(self, *, query: str | None = None) -> int: ...

    # blocks
    def list_blocks(self, subject_id: str) -> list[Block]:
        """The subject's blocks in creation order ([] for an unknown subject)."""
        ...

    def block_text(self, subject_id: str, label: str) -> tuple[str, str] | None:
        """(description, value) of one block, or None: the hot path of prompt formatting."""
        ...

    def create_block(self, subject_id: str, spec: BlockSpec, *, reset: bool) -> str:
        """Create a block (and the subject if missing); returns its id.

        An existing label is kept as it is (its id returned) unless ``reset``,
        which replaces it and its history.
        """
        ...

    def delete_block(self, subject_id: str, label: str) -> bool:
        """Delete a block and its history; False if there was none."""
        ...

    def set_block_value(self, subject_id: str, label: str, value: str) -> None:
        """A direct edit by the application: checked against the block's limit, recorded as a version (no run)."""
        ...

    def block_history(self, subject_id: str, label: str) -> list[BlockVersion]:
        """Stored versions of a block, oldest first (the newest ``history_limit`` are kept)."""
        ...

    def restore_block(self, subject_id: str, label: str, version: int) -> str:
        """Write an earlier version's value as a new version (checked against the limit); returns the value."""
        ...

    # messages and runs
    def enqueue(
        self,
        subject_id: str,
        messages: Sequence[MessageIn],
        *,
        passages: Sequence[str | None],
        default_blocks: Sequence[BlockSpec] = (),
    ) -> str:
        """Store a batch and its queued ``learn`` run atomically; returns the run id. Wakes workers.

        The subject is created with ``default_blocks`` if it does not exist.
        ``passages[i]`` is the archived text of message i, or None when it is
        not archived; archived passages are lexically searchable as soon as
        this returns (their vectors come with the run's completion).
        """
        ...

    def consolidate(self, subject_id: str) -> str:
        """Queue a ``consolidate`` run (no messages) for an existing subject; returns its id.

        Raises ``SubjectNotFoundError`` for an unknown subject. Wakes workers.
        """
        ...

    def get_run(self, run_id: str) -> Run | None: ...

    def list_runs(self, subject_id: str, status: str | None = None) -> list[Run]:
        """The subject's runs in queue order (oldest first), optionally of one status."""
        ...

    def cancel_run(self, run_id: str) -> Run:
        """Cancel a ``queued`` run (its messages stay stored)."""
        ...

    def retry_run(self, run_id: str) -> Run:
        """Put a ``failed`` run back on the queue (attempts reset). Wakes workers."""
        ...

    def wait_for_run(self, run_id: str, timeout: float | None) -> Run:
        """Block until the run is ``completed``, ``failed`` or ``cancelled`` and return it.

        Raises ``RunNotFoundError`` at once for an unknown id and
        ``TimeoutError`` after ``timeout`` seconds (None: no limit). Wakes
        within milliseconds of a completion in this process, and without a
        tight polling loop for one in another process.
        """
        ...

    def get_messages(
        self,
        subject_id: str,
        *,
        limit: int | None = None,
        before: datetime | None = None,
        after: datetime | None = None,
    ) -> list[StoredMessage]:
        """Stored messages by ``created_at`` (then storage order), oldest first; ``limit``: the newest ones."""
        ...

    def run_messages(self, run_id: str) -> list[StoredMessage]:
        """The messages a run was queued with, in storage order ([] for a consolidation or unknown run)."""
        ...

    def delete_message(self, message_id: str) -> bool:
        """Remove a message and its passage (and vectors, and its text from the lexical index); False if unknown."""
        ...

    def get_trace(self, run_id: str) -> dict[str, Any] | None:
        """The trace stored with a run's pass (what was sent to the model, each tool call and its answer)."""
        ...

    # sessions (the OpenAI Agents SDK ``Session`` protocol)
    def session_items(self, session_id: str, limit: int | None = None) -> list[dict[str, Any]]:
        """The latest ``limit`` items of a session in chronological order (all of them when None)."""
        ...

    def add_session_items(self, session_id: str, items: Sequence[dict[str, Any]], *, subject_id: str) -> None:
        """Append items (JSON objects, stored exactly) to a session atomically.

        The session is bound to ``subject_id`` (the first binding stays):
        ``delete_subject`` erases the sessions bound to it.
        """
        ...

    def pop_session_item(self, session_id: str) -> dict[str, Any] | None:
        """Remove and return a session's latest item atomically (None when empty)."""
        ...

    def clear_session(self, session_id: str) -> None:
        """Remove every item of a session."""
        ...

    def unfinished_runs(self, run_ids: Sequence[str]) -> set[str]:
        """Those of ``run_ids`` that are ``queued`` or ``running`` (one query; not tenant-scoped: ids are unique)."""
        ...

    def run_totals(self) -> dict[str, RunTotals]:
        """Runs of every tenant by status (statuses with no run may be left out), for monitoring.

        Not tenant-scoped. May read every run: called once per metrics scrape, not per request.
        """
        ...

    # API keys of the HTTP server (not tenant-scoped: a key names its tenant)
    def create_key(self, name: str, key_hash: str) -> None:
        """Store a key's hash under ``name`` (its tenant); ``ValueError`` if an active key has that name."""
        ...

    def list_keys(self) -> list[ApiKey]: ...

    def revoke_key(self, name: str) -> bool:
        """Revoke the active key of ``name``; False if there is none."""
        ...

    def key_tenant(self, key_hash: str) -> str | None:
        """The tenant of an active key with this hash, or None."""
        ...
