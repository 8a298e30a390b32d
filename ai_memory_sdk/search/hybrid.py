"""Hybrid retrieval: lexical (BM25) and cosine similarity, fused into an absolute score in [0, 1].

Each channel gives its best ``CANDIDATES`` passages of the subject. Every
candidate of either channel is then scored from two values that belong to
the (query, passage) pair alone, never to the other hits:

    score = (W_LEXICAL * min(r, 1) + W_VECTOR * max(cosine, 0)) / (W_LEXICAL + W_VECTOR)

``r`` is the store's lexical score (``PassageIndex.lexical``): the passage's
BM25 divided by the sum of the IDFs of the query's terms, so 1.0 means
"each of the query's words, once, in a passage of average length" (0: no
word in common). The lexical query scores the vector channel's candidates
too (``also``, or every match when the channels overlap: ``ranked``);
``cosine`` is computed for a lexical candidate from the cached vectors (0
without a vector). With one channel the score is that channel's part alone.
On LoCoMo this ranks better than the min-max fusion of 0.3.x, which rescaled
each query's scores to its own hits (docs/dev/search-research.md).

Per subject, a cache holds numpy arrays of its passages (pk, time, tag bits)
and of its vectors (a normalised float32 matrix, an int8 copy and sign-bit
codes). It is brought up to date at the start of each search from the
store's per-subject changes (``PassageIndex.changes``): new rows are
appended, a deletion rebuilds it. Tag and time filters are vectorised masks
over those arrays; a tag filter's mask is kept until the subject changes.

Vector search: above ``EXACT_MAX`` vectors, the Hamming distance of sign-bit
codes (48 bytes per MiniLM vector) picks a few thousand candidates; int8 dot
products of those keep the best ``REFINE``, which are rescored exactly in
float32 (the float32 rows are the memory traffic that dominated: 6 MB per
query at 100k passages, against 1.5 MB of int8 rows).

The lexical channel is the store's (``PassageIndex.lexical``: FTS5 in SQLite);
this module gives it a predicate over pks for the subject and its filters.
An index that searches its own vectors (``store.base.NearestIndex``:
PostgreSQL with pgvector) runs the vector channel too, with the same
predicate, and gives the cosines of lexical candidates (``similarity``); the
cache then holds passage rows only.
"""

from __future__ import annotations

import functools
import itertools
import logging
import os
import threading
import time
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
EXACT_MAX = 8_192  # above this many vectors: sign-code prefilter, then rescoring
RESCORE_MIN = 1_024  # sign-code candidates: at least this many ...
RESCORE_FRACTION = 0.04  # ... or this share of the subject's vectors
REFINE = 200  # candidates above this many are narrowed to it by int8 dot products before the float32 ones
_INT8_SCALE = 127.0  # components of a unit vector are within [-1, 1]
_MASKS_KEPT = 16  # tag-filter masks cached per subject
EVERY_MATCH = 1 << 30  # ``k`` that asks the lexical channel for every match (within its budget)
LOAD_CHECK_S = 1.0  # how long a reading of the load average is used
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
    quant: np.ndarray | None = None  # (m, d) int8: round(127 * vectors)
    vec_row: np.ndarray | None = None  # row of ``vectors`` of each passage (-1: none; may be >= m: ignore)
    masks: dict[tuple[object, ...], np.ndarray] | None = None  # tag-filter masks of this subject, by filter and n

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
        self.vec_row = np.zeros(0, np.int64)  # per passage: its row in ``vectors``, -1 without one
        self.vec_pos = np.zeros(0, np.int64)
        self.vectors = np.zeros((0, 0), np.float32)
        self.quant = np.zeros((0, 0), np.int8)
        self.codes = np.zeros((0, 0), np.uint64)  # (words, capacity): each word's bits contiguous
        self.dim = 0
        self.aligned = True  # vec_pos == arange(m), and m == n when the view is taken
        self.masks: dict[tuple[object, ...], np.ndarray] = {}
        self._bad_dim = False

    @property
    def nbytes(self) -> int:
        arrays: list[np.ndarray] = [self.pks, self.created, self.tagbits, self.vec_row, self.vec_pos, self.vectors]
        arrays += [self.quant, self.codes, *tuple(self.masks.values())]  # a snapshot: searches add masks unlocked
        return sum(a.nbytes for a in arrays)

    def refresh(self, index: PassageIndex, subject_pk: int, embedder: str | None) -> _View:
        with self.lock:
            changes = index.changes(subject_pk, embedder, self.cursor)
            if changes.reset:
                self._reset()
            self._add_passages(changes.passages)
            self._add_vectors(changes.vectors)
            self.cursor = changes.cursor
            if len(self.masks) > _MASKS_KEPT:
                self.masks.clear()
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
                quant=self.quant[:m],
                vec_row=self.vec_row[:n],
                masks=self.masks,
            )

    def _add_passages(self, rows: Sequence[tuple[int, float, list[str]]]) -> None:
        if not rows:
            return
        n0, n1 = self.n, self.n + len(rows)
        self.pks = _grow(self.pks, n1)
        self.created = _grow(self.created, n1)
        self.vec_row = _grow(self.vec_row, n1)
        self.tagbits = _grow(self.tagbits, n1)
        self.pks[n0:n1] = [r[0] for r in rows]
        self.created[n0:n1] = [r[1] for r in rows]
        self.vec_row[n0:n1] = -1
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
        ok = (self.pks[pos] == vpks) & (self.vec_row[pos] < 0)
        sel = np.flatnonzero(ok)
        if not len(sel):
            return
        mat: np.ndarray = np.frombuffer(b"".join(keep[i][2] for i in sel), dtype=np.float32).reshape(len(sel), self.dim)
        norms = np.linalg.norm(mat, axis=1, keepdims=True)
        mat = (mat / np.where(norms == 0, 1.0, norms)).astype(np.float32, copy=False)
        m0, m1 = self.m, self.m + len(sel)
        if self.vectors.shape[1] != self.dim:
            self.vectors = np.zeros((0, self.dim), np.float32)
            self.quant = np.zeros((0, self.dim), np.int8)
            self.codes = np.zeros(((self.dim + 63) // 64, 0), np.uint64)
        self.vectors = _grow(self.vectors, m1)
        self.quant = _grow(self.quant, m1)
        self.codes = _grow(self.codes.T, m1).T.copy() if m1 > self.codes.shape[1] else self.codes
        self.vec_pos = _grow(self.vec_pos, m1)
        self.vectors[m0:m1] = mat
        self.quant[m0:m1] = np.rint(mat * _INT8_SCALE).astype(np.int8)
        self.codes[:, m0:m1] = _sign_codes(mat).T
        self.vec_pos[m0:m1] = pos[sel]
        self.aligned = self.aligned and bool((pos[sel] == np.arange(m0, m1)).all())
        self.vec_row[pos[sel]] = np.arange(m0, m1)
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


def _tag_mask(view: _View, tags: Sequence[str], mode: str) -> np.ndarray:
    """Passages of the view with the tags (kept in ``view.masks`` until the subject changes: never written to)."""
    wanted = tuple(dict.fromkeys(tags))
    key = (wanted, mode, len(view.pks))
    cached = view.masks.get(key) if view.masks is not None else None
    if cached is not None:
        return cached
    bits = [view.tag_bit.get(t) for t in wanted]
    known = [b for b in bits if b is not None]
    if not known or (mode == "all" and len(known) < len(bits)):
        mask = np.zeros(len(view.pks), bool)
    else:
        want = np.zeros(view.tagbits.shape[1], np.uint64)
        for b in known:
            want[b // 64] |= np.uint64(1 << (b % 64))
        hit = view.tagbits & want
        mask = np.asarray((hit == want).all(axis=1) if mode == "all" else hit.any(axis=1))
    if view.masks is not None:
        view.masks[key] = mask
    return mask


def _mask(
    view: _View, tags: Sequence[str], mode: str, start: datetime | None, end: datetime | None
) -> np.ndarray | None:
    """Allowed passages of the view (None: all of them)."""
    mask: np.ndarray | None = _tag_mask(view, tags, mode) if tags else None
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


def _share(mask: np.ndarray | None) -> float:
    return np.count_nonzero(mask) / len(mask) if mask is not None and len(mask) else 1.0


def lexical(
    index: PassageIndex,
    view: _View,
    subject_pk: int,
    query: str,
    mask: np.ndarray | None,
    k: int = CANDIDATES,
    also: Sequence[int] = (),
) -> dict[int, float]:
    """pk -> lexical score of the subject's best ``k`` allowed passages for the query, best first, then of
    those of ``also`` (allowed passages) that match the query too."""
    if not len(view.pks):
        return {}
    return dict(
        index.lexical(
            subject_pk,
            query,
            k,
            allowed=_allowed(view, mask),
            subject_size=len(view.pks),
            allowed_fraction=_share(mask),
            also=also,
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
            return _rescored(view, np.flatnonzero(allowed), qvec, k)
    if m <= EXACT_MAX:
        return _rescored(view, np.arange(m), qvec, k)
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
    return _rescored(view, cand, qvec, k)


def _rescored(view: _View, rows: np.ndarray, qvec: np.ndarray, k: int) -> dict[int, float]:
    """The best ``k`` of these vector rows by exact cosine; many rows are first narrowed by int8 dot products."""
    refine = max(REFINE, 4 * k)
    if view.quant is not None and len(rows) > 2 * refine:
        approx = _dot(view.quant[rows], qvec)  # int8 x float32: a quarter of the float32 rows' memory traffic
        rows = rows[np.argpartition(-approx, refine)[:refine]]
    return _top(view, rows, _dot(view.vectors[rows], qvec), k)


def _top(view: _View, idx: np.ndarray, scores: np.ndarray, k: int) -> dict[int, float]:
    if len(scores) > k:
        part = np.argpartition(-scores, k)[:k]
    else:
        part = np.arange(len(scores))
    return {int(view.pks[view.vec_pos[idx[i]]]): float(scores[i]) for i in part}


def cosines(view: _View, qvec: np.ndarray, pks: Sequence[int]) -> dict[int, float]:
    """pk -> cosine of those of these passages of the view that have a vector."""
    if not len(pks) or not len(view.pks) or view.vec_row is None:
        return {}
    want = np.asarray(pks, np.int64)
    pos = np.minimum(np.searchsorted(view.pks, want), len(view.pks) - 1)
    rows = np.where(view.pks[pos] == want, view.vec_row[pos], -1)
    ok = (rows >= 0) & (rows < len(view.vec_pos))  # a vector newer than the view is not in it
    sims = _dot(view.vectors[rows[ok]], qvec)
    return dict(zip(want[ok].tolist(), sims.tolist()))


def scores(lexical_score: np.ndarray, cosine: np.ndarray, *, lexical: bool = True, vector: bool = True) -> np.ndarray:
    """Absolute scores of passages from their lexical score and cosine for the query (see the module docstring).

    ``lexical``/``vector``: the channels the search has; one alone gives its own part, in [0, 1].
    """
    lex = np.clip(np.asarray(lexical_score, np.float64), 0.0, 1.0)
    total = np.zeros(lex.shape)
    if lexical:
        total += W_LEXICAL * lex
    if vector:
        total += W_VECTOR * np.clip(np.asarray(cosine, np.float64), 0.0, 1.0)  # float32 rounding: 1.0000001
    out: np.ndarray = total / ((W_LEXICAL if lexical else 0.0) + (W_VECTOR if vector else 0.0))
    return out


def fuse(
    lexical_scores: dict[int, float],
    vector_scores: dict[int, float],
    cosine_of: dict[int, float] | None = None,
    *,
    k: int = CANDIDATES,
    lexical: bool = True,
    vector: bool = True,
) -> list[tuple[int, float]]:
    """(pk, score) of the candidates, best first (equal scores: the higher lexical score, then the older first).

    Candidates: the first ``k`` of ``lexical_scores`` (pk -> lexical score, best first; it may hold more matches,
    which give their score to vector candidates) and of ``vector_scores`` (pk -> cosine). ``cosine_of`` gives the cosine
    of lexical candidates that the vector channel did not return. A value found nowhere counts 0.
    """
    cosine_of = cosine_of or {}
    pks = list(dict.fromkeys([*itertools.islice(lexical_scores, k), *itertools.islice(vector_scores, k)]))
    if not pks:
        return []
    lex = np.fromiter((lexical_scores.get(pk, 0.0) for pk in pks), np.float64, len(pks))
    cos = np.fromiter((vector_scores.get(pk, cosine_of.get(pk, 0.0)) for pk in pks), np.float64, len(pks))
    fused = scores(lex, cos, lexical=lexical, vector=vector)
    order = np.lexsort((np.asarray(pks, np.int64), -lex, -fused))  # equal scores: the stronger lexical match
    return [(pks[i], float(fused[i])) for i in order.tolist()]


# -- the search ----------------------------------------------------------------------------------


def _vector_channel(
    view: _View, embedder: Embedder, query: str, mask: np.ndarray | None, k: int
) -> tuple[dict[int, float], np.ndarray | None]:
    """(pk -> cosine of the best ``k``, the query vector; None if it cannot be compared with the view's)."""
    qvec = np.asarray(embedder.embed([query])[0], dtype=np.float32)
    if qvec.shape[0] != view.vectors.shape[1]:
        log.warning(
            "query vector from %s has dimension %d, the stored vectors %d: lexical search only",
            embedder.name,
            qvec.shape[0],
            view.vectors.shape[1],
        )
        return {}, None
    return semantic(view, qvec, mask, k), qvec


def _nearest_channel(
    index: NearestIndex, view: _View, embedder: Embedder, subject_pk: int, query: str, mask: np.ndarray | None, k: int
) -> tuple[dict[int, float], np.ndarray]:
    """The vector channel of an index that searches its own vectors: (pk -> cosine of the best ``k``, query vector)."""
    qvec = np.asarray(embedder.embed([query])[0], dtype=np.float32)
    found = index.nearest(
        subject_pk,
        embedder.name,
        qvec,
        k,
        allowed=_allowed(view, mask),
        subject_size=len(view.pks),
        allowed_fraction=_share(mask),
    )
    return dict(found), qvec


# Threads for the vector channel of searches in flight (a forked child starts its own pool).
_channel_threads = PerProcess(
    lambda: ThreadPoolExecutor(max(2, os.cpu_count() or 2), thread_name_prefix="ai-memory-search")
)
_load_seen: list[float] = [-LOAD_CHECK_S, 0.0]  # [when, whether a core was idle]


def _core_idle() -> bool:
    """Whether a CPU core is likely idle: the 1-minute load average (which counts a searching thread too) is below
    the number of cores. Read at most once a second."""
    now = time.monotonic()
    if now - _load_seen[0] >= LOAD_CHECK_S:
        try:
            load = os.getloadavg()[0]
        except (AttributeError, OSError):  # no load average on this platform: assume cores to spare
            load = 0.0
        _load_seen[:] = [now, float(load < (os.cpu_count() or 1))]
    return bool(_load_seen[1])


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
    overlap: bool | None = None,
) -> list[tuple[int, float]]:
    """(pk, score) of the subject's passages for a query, best first: ``hybrid``, ``lexical`` or ``vector``.

    Each channel contributes its best ``k`` candidates; scores are ``scores()``'s, for the channels asked, and
    every candidate gets both values. Two ways to get them, with the same result:

    - one after the other in the caller's thread: the vector channel, then the lexical query, which scores
      the vector candidates too (``also``);
    - overlapped: the vector channel on a helper thread while the lexical query returns every match (the
      vector candidates' among them). Faster with a core to spare; on a busy machine the helper's wake-ups
      and GIL hand-offs cost more than the overlap saves (docs/dev/search-research.md).

    ``overlap`` chooses; None: overlapped when the index searches its own vectors (network round trips) or
    a core is idle (``_core_idle``).
    """
    name = embedder.name if embedder is not None else None
    use_lexical, use_vector = channels != "vector", embedder is not None and channels != "lexical"
    nearest = index if embedder is not None and isinstance(index, NearestIndex) else None
    view = cache.view(index, subject_pk, None if nearest is not None else name)  # vectors only when compared here
    mask = _mask(view, tags, tag_match_mode, start, end)
    vec: dict[int, float] = {}
    qvec: np.ndarray | None = None
    vector_job: Callable[[], tuple[dict[int, float], np.ndarray | None]] | None = None
    if embedder is not None and use_vector and nearest is not None:
        vector_job = functools.partial(_nearest_channel, nearest, view, embedder, subject_pk, query, mask, k)
    elif embedder is not None and use_vector and len(view.vec_pos):
        vector_job = functools.partial(_vector_channel, view, embedder, query, mask, k)
    later: Future[tuple[dict[int, float], np.ndarray | None]] | None = None
    if vector_job is not None:
        if overlap is None:
            overlap = nearest is not None or _core_idle()
        if overlap and use_lexical:  # the caller holds no gate while it waits: the helper may enter it
            later = _channel_threads.get().submit(vector_job)
        else:
            vec, qvec = vector_job()
    lex: dict[int, float] = {}
    if use_lexical:
        lex = lexical(index, view, subject_pk, query, mask, EVERY_MATCH if later else k, also=list(vec))
    if later is not None:
        vec, qvec = later.result()
    fill: dict[int, float] = {}
    if qvec is not None and embedder is not None:
        only_lexical = [pk for pk in itertools.islice(lex, k) if pk not in vec]
        if nearest is not None:
            fill = dict(nearest.similarity(embedder.name, qvec, only_lexical)) if only_lexical else {}
        else:
            fill = cosines(view, qvec, only_lexical)
    if embedder is not None and nearest is None and view.missing and (subject_pk, name) not in cache.warned:
        cache.warned.add((subject_pk, name))
        log.info(
            "%d passage(s) of this subject have no vector from %s yet (being embedded); they are found"
            " by lexical search only until then",
            view.missing,
            name,
        )
    return fuse(lex, vec, fill, k=k, lexical=use_lexical, vector=use_vector)


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
    """The subject's best ``limit`` passages for a query, with their absolute scores."""
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
