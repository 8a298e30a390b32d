"""Vectors for archived passages: embedding a pass's passages, and re-embedding old ones in idle time.

Learning never waits on or fails with the embedder: when embedding a pass's
passages fails, the pass is applied without them (they stay lexically
searchable), one WARNING names the error, and idle-time re-embedding picks
them up later. After a failure the embedder is left alone for
``RETRY_SECONDS``, so a dead endpoint costs later passes nothing. With
``embedder="auto"``, an embeddings endpoint that answers it has no such model
is dropped for good in favour of ``embedders.fallback_embedder()`` (logged).

The store records the embedder its vectors come from (meta ``embedder``) and
each embedder's dimension; vectors of two embedders are never compared: a
changed embedder (or dimension) re-embeds every passage in the background and
drops the old vectors once none is left.
"""

from __future__ import annotations

import logging
import threading
import time

import numpy as np

from ..store.base import Claim, RunQueue, Store
from .embedders import Embedder, EmbedderModelMissing, fallback_embedder

log = logging.getLogger(__name__)

BATCH = 64  # passages embedded per idle step
RETRY_SECONDS = 60.0  # after a failure, the embedder is tried again this much later


class Indexer:
    """The store's current embedder and the work of giving every passage its vector."""

    def __init__(self, store: Store, embedder: Embedder | None, *, auto: bool) -> None:
        self.store = store
        self.embedder = embedder
        self.auto = auto
        self._lock = threading.Lock()
        self._retry_at = 0.0
        self._warned_at = 0.0
        self._pending = embedder is not None  # look once for passages without this embedder's vectors
        self._after = 0
        self._done = 0
        self._dim_checked = False
        self._restart = False
        self.failures = 0  # embedding attempts that failed (the server's metrics)

    @property
    def name(self) -> str | None:
        return self.embedder.name if self.embedder else None

    # -- a pass's passages ---------------------------------------------------------------------------

    def embed_claim(self, queue: RunQueue, claim: Claim) -> tuple[list[tuple[int, bytes]], str | None]:
        """(passage pk, float32 bytes) for the claim's passages, and the embedder's name; never raises."""
        embedder = self.embedder
        if embedder is None or time.monotonic() < self._retry_at:
            return [], None
        try:
            pending = queue.claim_passages(claim, embedder.name)
            if not pending:
                return [], embedder.name
            matrix = self._vectors(embedder, [text for _, text in pending])
        except Exception as exc:
            self._failed(embedder, exc)
            return [], None
        return [(pk, _blob(row)) for (pk, _), row in zip(pending, matrix)], embedder.name

    def _vectors(self, embedder: Embedder, texts: list[str]) -> np.ndarray:
        """Embed; the first time, check the dimension against the one the store recorded for this embedder."""
        matrix = embedder.embed(texts)
        if matrix.ndim != 2 or matrix.shape[0] != len(texts):
            raise ValueError(f"{embedder.name} returned {matrix.shape} for {len(texts)} texts")
        if not self._dim_checked:
            self._dim_checked = True
            recorded = self.store.index.vector_dim(embedder.name)
            if recorded is not None and recorded != matrix.shape[1]:
                log.warning(
                    "%s now gives %d-dimensional vectors, the store's are %d-dimensional: they are dropped"
                    " and the passages re-embedded in the background",
                    embedder.name,
                    matrix.shape[1],
                    recorded,
                )
                self.store.index.drop_vectors(embedder=embedder.name)
                self._pending, self._after, self._restart = True, 0, True
        return matrix

    def _failed(self, embedder: Embedder, exc: Exception) -> None:
        self.failures += 1
        if isinstance(exc, EmbedderModelMissing) and self.auto:
            replacement = fallback_embedder()
            log.warning(
                "%s; embedder auto falls back to %s",
                exc,
                replacement.name
                if replacement
                else "lexical search only (pip install 'ai-memory-sdk[local]' for offline semantic search)",
            )
            self.embedder, self._dim_checked = replacement, False
            if replacement is not None:
                self.store.set_meta("embedder", replacement.name)
                self._pending, self._after = True, 0
            return
        self._retry_at = time.monotonic() + RETRY_SECONDS
        self._pending, self._after = True, 0  # what it missed is embedded in idle time once it works again
        if time.monotonic() - self._warned_at > RETRY_SECONDS:
            self._warned_at = time.monotonic()
            log.warning(
                "embedding with %s failed (%s: %s): runs complete without vectors; their passages are found by"
                " lexical search until the embedder works again (retried in %gs)",
                embedder.name,
                type(exc).__name__,
                exc,
                RETRY_SECONDS,
            )

    # -- idle time -----------------------------------------------------------------------------------

    def backfill_step(self) -> bool:
        """Embed one batch of stored passages that lack this embedder's vectors; True if it did.

        That happens after the store's embedder changed, or a run completed
        without vectors. When none is left, other embedders' vectors are dropped.
        """
        embedder = self.embedder
        if not self._pending or embedder is None or time.monotonic() < self._retry_at:
            return False
        if not self._lock.acquire(blocking=False):
            return False
        try:
            recorded = self.store.get_meta("embedder")
            if recorded is not None and recorded != embedder.name:
                log.warning(
                    "the store's embedder is now %s (set by another process); this process embeds with %s"
                    " and does not re-embed old passages",
                    recorded,
                    embedder.name,
                )
                self._pending = False
                return False
            rows = self.store.index.passages_without_vectors(embedder.name, limit=BATCH, after_pk=self._after)
            if not rows:
                self._pending = False
                if self._done:
                    log.info("re-embedding with %s finished: %d passage(s)", embedder.name, self._done)
                dropped = self.store.index.drop_vectors(keep=embedder.name)
                if dropped:
                    log.info("dropped %d vector(s) of previous embedders", dropped)
                return False
            try:
                matrix = self._vectors(embedder, [r[2] for r in rows])
            except Exception as exc:
                self._failed(embedder, exc)
                return False
            if not self._done:
                log.info("embedding stored passages with %s in the background", embedder.name)
            self.store.index.put_vectors([(pk, spk, _blob(v)) for (pk, spk, _), v in zip(rows, matrix)], embedder.name)
            self._after = 0 if self._restart else rows[-1][0]
            self._restart = False
            self._done += len(rows)
            return True
        finally:
            self._lock.release()


def _blob(row: np.ndarray) -> bytes:
    return np.ascontiguousarray(row, dtype=np.float32).tobytes()
