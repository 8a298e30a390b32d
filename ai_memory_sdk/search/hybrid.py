"""Hybrid retrieval: lexical (BM25) and cosine similarity, min-max normalised and fused 1.5 : 1.

Each channel gives its best ``CANDIDATES`` passages of the subject; each
list is scaled to [0, 1] and the fused score is ``1.5 * bm25 + 1.0 * cosine``
(0 for a channel that did not return the passage). Measured on LoCoMo this
beats reciprocal rank fusion by 0.08 recall@10 (docs/dev/search-research.md).

Per subject, a cache holds numpy arrays of its passages (pk, time, tag bits)
and of its vectors (a normalised float32 matrix and sign-bit codes). It is
brought up to date at the start of each search from the store's per-subject
changes (``PassageIndex.changes``): new rows are appended, a deletion rebuilds it. Tag and
time filters are vectorised masks over those arrays.

Vector search is exact up to ``EXACT_MAX`` vectors (one matrix-vector
product). Above that, the Hamming distance of sign-bit codes (48 bytes per
MiniLM vector) picks a few thousand candidates, which are rescored exactly:
at 100k passages 3.9 ms against 17.8 ms for the full product, which is bound
by memory bandwidth, with the same top-10 (benchmarks/search_latency.py).

The lexical channel is the store's (``PassageIndex.lexical``: FTS5 in SQLite);
this module gives it a predicate over pks for the subject and its filters.
An index that searches its own vectors (``store.base.NearestIndex``:
PostgreSQL with pgvector) runs the vector channel too, with the same
predicate, and the cache then holds passage rows only.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime

import numpy as np

from .._fork import PerProcess, gate
from ..models import SearchResult
from ..store.base import IndexCursor, NearestIndex, PassageIndex
from .embedders import Embedder

log = logging.getLogger(__name__)

CANDIDATES = 50  # per channel, before fusion
W_LEXICAL = 1.5
W_VECTOR = 1.0
EXACT_MAX = 8_192  # above this many vectors: sign-code prefilter, then exact rescoring
RESCORE_MIN = 1_024  # candidates rescored exactly: at least this many ...
RESCORE_FRACTION = 0.04  # ... or this share of the subject's vectors
CACHE_BYTES = 1 << 30  # cached arrays over all subjects; least recently used are dropped


def _popcount(x: np.ndarray) -> np.ndarray:
    """Set bits per uint64 (numpy >= 2 has it built in)."""
    if hasattr(np, "bitwise_count"):
        counted: np.ndarray = np.bitwise_count(x)
        return counted
    summed: np.ndarray = _POP8[x.view(np.uint8)].reshape(*x.shape, 8).sum(axis=-1, dtype=np.uint8)
    return summed


_POP8 = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)


def _sign_codes(vectors: np.ndarray) -> np.ndarray:
    """(rows, words) uint64 sign bits of each vector, zero-padded to whole words."""
    bits = np.packbits(vectors > 0, axis=1)
    pad = (-bits.shape[1]) % 8
    if pad:
        bits = np.pad(bits, ((0, 0), (0, pad)))
    return np.ascontiguousarray(bits).view(np.uint64)


_WORD_MASK = (1 << 64) - 1


def _grow(a: np.ndarray, need: int) -> np.ndarray:
    """``a`` with room for ``need`` rows along axis 0 (1.5x steps, so appends are amortised O(1))."""
    if need <= a.shape[0]:
        return a
    out = np.zeros((max(need, int(a.shape[0] * 1.5) + 64), *a.shape[1:]), dtype=a.dtype)
    out[: a.shape[0]] = a
    return out


@dataclass(frozen=True)
class _View:
    """A consistent, read-only view of one subject's arrays for one search."""

    pks: np.ndarray  # int64, ascending
    created: np.ndarray  # float64 epoch seconds
    tagbits: np.ndarray  # (n, words) uint64
    tag_bit: dict[str, int]
    vec_pos: np.ndarray  # positions into pks of the rows of ``vectors``
    vectors: np.ndarray  # (m, d) float32, L2-normalised
    codes: np.ndarray  # (words, m) uint64 sign bits, transposed for column-wise XOR
    aligned: bool = False  # vectors[i] belongs to pks[i] for every i (every passage embedded, in order)

    @property
    def missing(self) -> int:
        return len(self.pks) - len(self.vec_pos)


class _SubjectIndex:
    """The cached arrays of one (subject, embedder), appended to as the store grows."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self._reset()

    def _reset(self) -> None:
        self.cursor = IndexCursor()
        self.n = 0
        self.m = 0
        self.pks = np.zeros(0, np.int64)
        self.created = np.zeros(0, np.float64)
        self.tagbits = np.zeros((0, 1), np.uint64)
        self.tag_bit: dict[str, int] = {}
        self.has_vec = np.zeros(0, bool)
        self.vec_pos = np.zeros(0, np.int64)
        self.vectors = np.zeros((0, 0), np.float32)
        self.codes = np.zeros((0, 0), np.uint64)  # (words, capacity): each word's bits contiguous
        self.dim = 0
        self.aligned = True  # vec_pos == arange(m), and m == n when the view is taken
        self._bad_dim = False

    @property
    def nbytes(self) -> int:
        return sum(
            a.nbytes
            for a in (self.pks, self.created, self.tagbits, self.has_vec, self.vec_pos, self.vectors, self.codes)
        )

    def refresh(self, index: PassageIndex, subject_pk: int, embedder: str | None) -> _View:
        with self.lock:
            changes = index.changes(subject_pk, embedder, self.cursor)
            if changes.reset:
                self._reset()
            self._add_passages(changes.passages)
            self._add_vectors(changes.vectors)
            self.cursor = changes.cursor
            n, m = self.n, self.m
            return _View(
                self.pks[:n],
                self.created[:n],
                self.tagbits[:n],
                dict(self.tag_bit),
                self.vec_pos[:m],
                self.vectors[:m],
                self.codes[:, :m],
                aligned=self.aligned and m == n,
            )

    def _add_passages(self, rows: Sequence[tuple[int, float, list[str]]]) -> None:
        if not rows:
            return
        n0, n1 = self.n, self.n + len(rows)
        self.pks = _grow(self.pks, n1)
        self.created = _grow(self.created, n1)
        self.has_vec = _grow(self.has_vec, n1)
        self.tagbits = _grow(self.tagbits, n1)
        self.pks[n0:n1] = [r[0] for r in rows]
        self.created[n0:n1] = [r[1] for r in rows]
        masks = []
        for _, _, tags in rows:
            mask = 0
            for tag in tags:
                bit = self.tag_bit.get(tag)
                if bit is None:
                    bit = self.tag_bit[tag] = len(self.tag_bit)
                mask |= 1 << bit
            masks.append(mask)
        words = (len(self.tag_bit) + 63) // 64
        if words > self.tagbits.shape[1]:  # more distinct tags than bits: widen
            self.tagbits = np.hstack(
                [self.tagbits, np.zeros((self.tagbits.shape[0], words - self.tagbits.shape[1]), np.uint64)]
            )
        for w in range(words):
            self.tagbits[n0:n1, w] = np.array([(x >> (64 * w)) & _WORD_MASK for x in masks], dtype=np.uint64)
        self.n = n1

    def _add_vectors(self, rows: Sequence[tuple[int, int, bytes]]) -> None:
        if not rows:
            return
        if not self.dim:
            self.dim = len(rows[0][2]) // 4
        keep = [r for r in rows if len(r[2]) == 4 * self.dim]
        if len(keep) < len(rows) and not self._bad_dim:
            self._bad_dim = True
            log.warning("%d vector(s) of another dimension than %d were ignored", len(rows) - len(keep), self.dim)
        if not keep or not self.n:
            return
        vpks = np.fromiter((r[1] for r in keep), np.int64, len(keep))
        pos = np.minimum(np.searchsorted(self.pks[: self.n], vpks), self.n - 1)
        ok = (self.pks[pos] == vpks) & ~self.has_vec[pos]
        sel = np.flatnonzero(ok)
        if not len(sel):
            return
        mat: np.ndarray = np.frombuffer(b"".join(keep[i][2] for i in sel), dtype=np.float32).reshape(len(sel), self.dim)
        norms = np.linalg.norm(mat, axis=1, keepdims=True)
        mat = (mat / np.where(norms == 0, 1.0, norms)).astype(np.float32, copy=False)
        m0, m1 = self.m, self.m + len(sel)
        if self.vectors.shape[1] != self.dim:
            self.vectors = np.zeros((0, self.dim), np.float32)
            self.codes = np.zeros(((self.dim + 63) // 64, 0), np.uint64)
        self.vectors = _grow(self.vectors, m1)
        self.codes = _grow(self.codes.T, m1).T.copy() if m1 > self.codes.shape[1] else self.codes
        self.vec_pos = _grow(self.vec_pos, m1)
        self.vectors[m0:m1] = mat
        self.codes[:, m0:m1] = _sign_codes(mat).T
        self.vec_pos[m0:m1] = pos[sel]
        self.aligned = self.aligned and bool((pos[sel] == np.arange(m0, m1)).all())
        self.has_vec[pos[sel]] = True
        self.m = m1


class VectorCache:
    """Per (subject, embedder) arrays, kept under ``max_bytes`` by dropping the least recently used."""

    def __init__(self, max_bytes: int = CACHE_BYTES) -> None:
        self._lock = threading.Lock()
        self._entries: dict[tuple[int, str | None], _SubjectIndex] = {}
        self._max = max_bytes
        self.warned: set[tuple[int, str | None]] = set()  # subjects whose missing vectors were logged

    def view(self, index: PassageIndex, subject_pk: int, embedder: str | None) -> _View:
        key = (subject_pk, embedder)
        with gate:  # the cache's locks are held only inside the fork gate, so a forked child finds them free
            with self._lock:
                entry = self._entries.pop(key, None) or _SubjectIndex()
                self._entries[key] = entry  # most recently used last
            view = entry.refresh(index, subject_pk, embedder)
            with self._lock:
                total = sum(e.nbytes for e in self._entries.values())
                for k in list(self._entries):
                    if total <= self._max or k == key:
                        break
                    total -= self._entries.pop(k).nbytes
            return view

    def clear(self) -> None:
        with gate, self._lock:
            self._entries.clear()


# -- filters -------------------------------------------------------------------------------------


def _mask(
    view: _View, tags: Sequence[str], mode: str, start: datetime | None, end: datetime | None
) -> np.ndarray | None:
    """Allowed passages of the view (None: all of them)."""
    mask: np.ndarray | None = None
    if tags:
        bits = [view.tag_bit.get(t) for t in dict.fromkeys(tags)]
        known = [b for b in bits if b is not None]
        if not known or (mode == "all" and len(known) < len(bits)):
            return np.zeros(len(view.pks), bool)
        want = np.zeros(view.tagbits.shape[1], np.uint64)
        for b in known:
            want[b // 64] |= np.uint64(1 << (b % 64))
        hit = view.tagbits & want
        mask = np.asarray((hit == want).all(axis=1) if mode == "all" else hit.any(axis=1))
    if start is not None:
        m = view.created >= start.timestamp()
        mask = m if mask is None else mask & m
    if end is not None:
        m = view.created <= end.timestamp()
        mask = m if mask is None else mask & m
    return mask


# -- channels ------------------------------------------------------------------------------------


def _allowed(view: _View, mask: np.ndarray | None) -> Callable[[np.ndarray], np.ndarray]:
    """The predicate a store's channel filters its matches with: passages of the view that pass ``mask``."""

    def allowed(pks: np.ndarray) -> np.ndarray:
        pos = np.minimum(np.searchsorted(view.pks, pks), len(view.pks) - 1)
        ok: np.ndarray = view.pks[pos] == pks  # a passage of this subject (pks are never reused)
        if mask is not None:
            ok &= mask[pos]
        return ok

    return allowed


def lexical(
    index: PassageIndex, view: _View, subject_pk: int, query: str, mask: np.ndarray | None, k: int = CANDIDATES
) -> dict[int, float]:
    """pk -> lexical score of the subject's best ``k`` allowed passages for the query."""
    if not len(view.pks):
        return {}
    share = float(mask.mean()) if mask is not None else 1.0
    return dict(
        index.lexical(
            subject_pk, query, k, allowed=_allowed(view, mask), subject_size=len(view.pks), allowed_fraction=share
        )
    )


def _dot(matrix: np.ndarray, q: np.ndarray) -> np.ndarray:
    """``matrix @ q`` without BLAS: OpenBLAS runs every gemv above ~9k elements on all its threads, and on a busy
    machine waiting for them cost 5-15 ms per product in our measurements; einsum's own loop stays on one."""
    product: np.ndarray = np.einsum("ij,j->i", matrix, q)
    return product


def semantic(view: _View, qvec: np.ndarray, mask: np.ndarray | None, k: int = CANDIDATES) -> dict[int, float]:
    """pk -> cosine of the subject's best ``k`` allowed passages (exact, or sign-code prefilter + exact)."""
    m = len(view.vec_pos)
    if not m:
        return {}
    allowed = None if mask is None else mask if view.aligned else mask[view.vec_pos]
    rescore = max(RESCORE_MIN, int(RESCORE_FRACTION * m), k)
    if allowed is not None:
        count = int(np.count_nonzero(allowed))
        if not count:
            return {}
        if count <= rescore or m <= EXACT_MAX:
            idx = np.flatnonzero(allowed)
            return _top(view, idx, _dot(view.vectors[idx], qvec), k)
    if m <= EXACT_MAX:
        return _top(view, np.arange(m), _dot(view.vectors, qvec), k)
    qcode = _sign_codes(qvec[None, :])[0]
    dist = np.zeros(m, np.uint16)
    for w in range(view.codes.shape[0]):
        dist += _popcount(view.codes[w] ^ qcode[w])
    if allowed is not None:  # top bit set: filtered out, after every allowed one (distance <= dim < 2**15)
        dist |= np.left_shift((~allowed).astype(np.uint16), 15)  # 30x cheaper than a masked copyto
    cut = int(np.searchsorted(np.cumsum(np.bincount(dist, minlength=1)), rescore))
    cand = np.flatnonzero(dist <= cut)
    if len(cand) > 2 * rescore:  # many ties at the cut
        cand = np.argpartition(dist, rescore)[:rescore]
    if allowed is not None:
        cand = cand[allowed[cand]]
    return _top(view, cand, _dot(view.vectors[cand], qvec), k)


def _top(view: _View, idx: np.ndarray, scores: np.ndarray, k: int) -> dict[int, float]:
    if len(scores) > k:
        part = np.argpartition(-scores, k)[:k]
    else:
        part = np.arange(len(scores))
    return {int(view.pks[view.vec_pos[idx[i]]]): float(scores[i]) for i in part}


def fuse(
    lexical_scores: dict[int, float],
    vector_scores: dict[int, float],
    weights: tuple[float, float] = (W_LEXICAL, W_VECTOR),
) -> list[tuple[int, float]]:
    """Min-max normalise each list, add with weights; best first (ties: older first)."""
    out: dict[int, float] = {}
    for part, w in zip((lexical_scores, vector_scores), weights):
        if not part:
            continue
        lo, hi = min(part.values()), max(part.values())
        span = hi - lo
        for pk, s in part.items():
            out[pk] = out.get(pk, 0.0) + w * ((s - lo) / span if span > 0 else 1.0)
    return sorted(out.items(), key=lambda x: (-x[1], x[0]))


# -- the search ----------------------------------------------------------------------------------


def _vector_channel(view: _View, embedder: Embedder, query: str, mask: np.ndarray | None, k: int) -> dict[int, float]:
    qvec = np.asarray(embedder.embed([query])[0], dtype=np.float32)
    if qvec.shape[0] != view.vectors.shape[1]:
        log.warning(
            "query vector from %s has dimension %d, the stored vectors %d: lexical search only",
            embedder.name,
            qvec.shape[0],
            view.vectors.shape[1],
        )
        return {}
    return semantic(view, qvec, mask, k)


def _nearest_channel(
    index: NearestIndex, view: _View, embedder: Embedder, subject_pk: int, query: str, mask: np.ndarray | None, k: int
) -> dict[int, float]:
    """The vector channel of an index that searches its own vectors."""
    qvec = np.asarray(embedder.embed([query])[0], dtype=np.float32)
    share = float(mask.mean()) if mask is not None else 1.0
    return dict(
        index.nearest(
            subject_pk,
            embedder.name,
            qvec,
            k,
            allowed=_allowed(view, mask),
            subject_size=len(view.pks),
            allowed_fraction=share,
        )
    )


# Threads for the vector channel of searches in flight (a forked child starts its own pool).
_channel_threads = PerProcess(
    lambda: ThreadPoolExecutor(max(2, os.cpu_count() or 2), thread_name_prefix="ai-memory-search")
)


def ranked(
    index: PassageIndex,
    cache: VectorCache,
    embedder: Embedder | None,
    subject_pk: int,
    query: str,
    *,
    tags: Sequence[str],
    tag_match_mode: str,
    start: datetime | None,
    end: datetime | None,
    channels: str = "hybrid",
    k: int = CANDIDATES,
) -> list[tuple[int, float]]:
    """(pk, score) of the subject's passages for a query, best first: ``hybrid``, ``lexical`` or ``vector``.

    Each channel contributes its best ``k`` candidates.
    """
    name = embedder.name if embedder is not None else None
    nearest = index if embedder is not None and isinstance(index, NearestIndex) else None
    view = cache.view(index, subject_pk, None if nearest is not None else name)  # vectors only when compared here
    mask = _mask(view, tags, tag_match_mode, start, end)
    vec_later: Future[dict[int, float]] | None = None
    if embedder is not None and channels != "lexical" and (nearest is not None or len(view.vec_pos)):
        # The channels overlap: FTS5 and numpy both release the GIL (100k passages, tags=["user"]: 11.7 -> 6.7 ms
        # p50 in benchmarks/search_latency.py). The caller holds no gate while it waits: the helper may enter it.
        if nearest is not None:
            vec_later = _channel_threads.get().submit(
                _nearest_channel, nearest, view, embedder, subject_pk, query, mask, k
            )
        else:
            vec_later = _channel_threads.get().submit(_vector_channel, view, embedder, query, mask, k)
    lex = lexical(index, view, subject_pk, query, mask, k) if channels != "vector" else {}
    vec = vec_later.result() if vec_later is not None else {}
    if embedder is not None and nearest is None and view.missing and (subject_pk, name) not in cache.warned:
        cache.warned.add((subject_pk, name))
        log.info(
            "%d passage(s) of this subject have no vector from %s yet (being embedded); they are found"
            " by lexical search only until then",
            view.missing,
            name,
        )
    return fuse(lex, vec)


def search(
    index: PassageIndex,
    cache: VectorCache,
    embedder: Embedder | None,
    subject_pk: int,
    query: str,
    *,
    tags: Sequence[str],
    tag_match_mode: str,
    limit: int,
    start: datetime | None,
    end: datetime | None,
) -> list[SearchResult]:
    """The subject's best ``limit`` passages for a query, with their fused scores."""
    best = ranked(
        index,
        cache,
        embedder,
        subject_pk,
        query,
        tags=tags,
        tag_match_mode=tag_match_mode,
        start=start,
        end=end,
        k=max(CANDIDATES, limit),
    )[:limit]
    rows = index.passages([pk for pk, _ in best])
    return [SearchResult(score=score, **vars(rows[pk])) for pk, score in best if pk in rows]
