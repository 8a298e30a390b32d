"""Absolute search scores: fusion rules compared on LoCoMo recall, and what the library's scores mean.

Research harness for ``SearchResult.score``: a score whose meaning does not
depend on the other hits of the query. It stores the LoCoMo dev conversations
through the public API (one subject per conversation, MiniLM vectors, as
``benchmarks/locomo_retrieval.py``) and takes, per question, the channels as
``ai_memory_sdk.search.hybrid`` sees them: the cosine of the vector top-50;
the lexical score ``r`` (BM25 over the sum of the IDFs of the query terms
scored) of the lexical top-50 and of the vector candidates; the cosine of
the lexical top-50; and the raw BM25 ``s = r * idf``. Then, offline:

- recall@5/10/20 of fusion rules: the min-max convex fusion of 0.3.x,
  reciprocal-rank fusion, and absolute fusions
  ``(w * lexical part + max(cos, 0)) / (w + 1)``: with the raw BM25
  (``s / (s + 12)``), without each candidate's value from the other channel,
  and a grid of lexical parts of ``r`` and weights ``w``, with a
  leave-one-conversation-out check;
- for the library's fusion (``hybrid.fuse``): how often a top-10 hit in a
  score band is evidence for the question; the best hit's score of questions
  asked of their own conversation and of another one; the score a passage
  gets when its own text is the query.

Data: LoCoMo (snap-research, Maharana et al., ACL 2024), CC BY-NC 4.0,
non-commercial benchmark use only; read in place, never copied.

Usage::

    .venv/bin/python benchmarks/research/score_fusion.py [--store PATH] [--smoke]

``--store PATH`` keeps the built store there and reuses it on the next run
(building embeds 2,760 turns: minutes on a busy CPU). ``--smoke``: the first
two conversations' first turns.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import random
import statistics
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/, for _common (a script one level down)
import _common
from locomo_retrieval import KS, conversation, truncated
from support import internals

from ai_memory_sdk import Memory
from ai_memory_sdk.search import hybrid

SMOKE_TURNS = 60
EMBEDDER = "sentence-transformers:all-MiniLM-L6-v2"
Channel = dict[int, float]
Fusion = Callable[["Question"], list[tuple[int, float]]]
Part = Callable[[float], float]


@dataclass
class Question:
    subject: str
    gold: set[int]  # evidence passage pks
    lex: Channel  # lexical score r of the lexical top-50, best first, then of the vector candidates that match
    vec: Channel  # cosine of the vector top-50
    cos: Channel  # cosine of the lexical top-50 that the vector channel did not return
    idf: float  # the sum of the IDFs of the query terms scored: BM25 = r * idf


class _Searcher:
    """The channels of one store's subjects, as ``hybrid.ranked`` computes them."""

    def __init__(self, mem: Memory) -> None:
        self.store, self.cache, self.emb = internals.store(mem), internals.vector_cache(mem), internals.embedder(mem)

    def view(self, subject: str) -> Any:
        return self.cache.view(self.store.index, self.store.subject_pk(subject), self.emb.name)

    def question(self, subject: str, query: str, gold: set[int]) -> Question:
        pk, view = self.store.subject_pk(subject), self.view(subject)
        qvec = np.asarray(self.emb.embed([query])[0], dtype=np.float32)
        vec = hybrid.semantic(view, qvec, None)
        lex = hybrid.lexical(self.store.index, view, pk, query, None, also=list(vec))
        top_lex = list(lex)[: hybrid.CANDIDATES]
        cos = hybrid.cosines(view, qvec, [p for p in top_lex if p not in vec])
        return Question(subject, gold, lex, vec, cos, self.store.index._match(query).idf)  # SQLite's internals


def collect(
    mem: Memory, samples: list[dict[str, Any]], smoke: bool
) -> tuple[list[Question], list[Question], dict[str, dict[int, str]]]:
    """(questions asked of their own conversation, the same asked of the next one, passage texts per subject)."""
    convs = []
    for sample in samples:
        sid, messages, qs = conversation(sample)
        if smoke:
            sid, messages, qs = truncated(sid, messages, qs, SMOKE_TURNS)
        convs.append((sid, qs))
        if internals.store(mem).subject_pk(sid) is None:
            mem.wait_for_run(mem.add_messages(sid, messages, skip_vector_storage=False), timeout=3600)
    searcher = _Searcher(mem)
    dia: dict[str, dict[str, int]] = {}
    texts: dict[str, dict[int, str]] = {}
    for sid, _ in convs:
        pks = [int(p) for p in searcher.view(sid).pks]
        dia[sid] = {m["dia_id"]: pk for pk, m in internals.passage_metadata(mem, pks).items()}
        texts[sid] = dict(zip(pks, internals.passage_texts(mem, pks)))
    own, other = [], []
    for i, (sid, qs) in enumerate(convs):
        for text, gold, _ in qs:
            own.append(searcher.question(sid, text, {dia[sid][g] for g in gold}))
            if len(convs) > 1:
                other.append(searcher.question(convs[(i + 1) % len(convs)][0], text, set()))
    return own, other, texts


# -- fusion rules -----------------------------------------------------------------------------------


def _top(channel: Channel) -> Channel:
    return dict(list(channel.items())[: hybrid.CANDIDATES])


def minmax(q: Question) -> list[tuple[int, float]]:
    """0.3.x: each channel's top-50 min-max scaled within the query, 1.5 : 1 (absent: 0)."""
    out: dict[int, float] = {}
    for part, w in ((_top(q.lex), 1.5), (q.vec, 1.0)):
        if part:
            lo, hi = min(part.values()), max(part.values())
            for pk, s in part.items():
                out[pk] = out.get(pk, 0.0) + w * ((s - lo) / (hi - lo) if hi > lo else 1.0)
    return sorted(out.items(), key=lambda x: (-x[1], x[0]))


def rrf(q: Question, k: int = 20, w_lex: float = 2.0) -> list[tuple[int, float]]:
    out: dict[int, float] = {}
    for part, w in ((_top(q.lex), w_lex), (q.vec, 1.0)):
        for r, pk in enumerate(part):
            out[pk] = out.get(pk, 0.0) + w / (k + r + 1)
    return sorted(out.items(), key=lambda x: (-x[1], x[0]))


def absolute(part: Part, w: float, own_values: bool = True, raw: bool = False) -> Fusion:
    """``(w * part(x) + max(cos, 0)) / (w + 1)`` with x the lexical score r (``raw``: the BM25 r * idf).

    ``own_values=False``: a channel that did not return a candidate counts 0 for it."""

    def fuse(q: Question) -> list[tuple[int, float]]:
        lex = q.lex if own_values else _top(q.lex)
        out = []
        for pk in dict.fromkeys([*_top(q.lex), *q.vec]):
            x = lex.get(pk, 0.0) * (q.idf if raw else 1.0)
            c = q.vec.get(pk, q.cos.get(pk, 0.0) if own_values else 0.0)
            out.append((pk, (w * part(x) + max(c, 0.0)) / (w + 1)))
        return sorted(out, key=lambda x: (-x[1], x[0]))

    return fuse


def library(q: Question) -> list[tuple[int, float]]:
    return hybrid.fuse(q.lex, q.vec, q.cos)


def recall(questions: Sequence[Question], fuse: Fusion) -> tuple[float, ...]:
    runs = [[pk for pk, _ in fuse(q)] for q in questions]
    return tuple(statistics.mean(len(q.gold & set(r[:k])) / len(q.gold) for q, r in zip(questions, runs)) for k in KS)


def fmt(figures: Sequence[float]) -> str:
    return "/".join(f"{x:.3f}" for x in figures)


def _quantiles(xs: Sequence[float]) -> str:
    if not xs:
        return "-"
    return " ".join(f"{x:.2f}" for x in np.quantile(np.asarray(xs), [0.1, 0.25, 0.5, 0.75, 0.9]))


# -- reports ------------------------------------------------------------------------------------------

PARTS: dict[str, Part] = {
    "min(r, 1)": lambda r: min(r, 1.0),
    "min(r / 1.25, 1)": lambda r: min(r / 1.25, 1.0),
    "r / (r + 0.5)": lambda r: r / (r + 0.5),
    "1 - exp(-r)": lambda r: 1.0 - math.exp(-r),
}
WEIGHTS = (1.0, 1.25, 1.5, 2.0, 2.5, 3.0)


def grid(own: Sequence[Question]) -> None:
    print("absolute fusion, recall@10 (rows: the lexical part; columns: its weight w, cosine 1)")
    print(f"  {'':18s}" + "".join(f"{w:>7g}" for w in WEIGHTS))
    for name, part in PARTS.items():
        print(f"  {name:18s}" + "".join(f"{recall(own, absolute(part, w))[1]:7.3f}" for w in WEIGHTS), flush=True)
    subjects = sorted({q.subject for q in own})
    if len(subjects) < 3:
        return
    held: list[tuple[int, tuple[float, ...]]] = []
    for s in subjects:
        train = [q for q in own if q.subject != s]
        test = [q for q in own if q.subject == s]
        name, w = max(
            ((n, w) for n in PARTS for w in WEIGHTS), key=lambda g: recall(train, absolute(PARTS[g[0]], g[1]))[1]
        )
        held.append((len(test), recall(test, absolute(PARTS[name], w))))
        print(f"  leave {s} out: chose {name}, w={w:g}; on {s}: {fmt(held[-1][1])}")
    n = sum(size for size, _ in held)
    print(f"  held-out recall@5/10/20: {fmt([sum(size * r[i] for size, r in held) / n for i in range(len(KS))])}")


def calibration(own: Sequence[Question], other: Sequence[Question], echo: Sequence[tuple[float, int]]) -> None:
    """What the library's scores mean on this data."""
    hits = np.zeros(10)
    total = np.zeros(10)
    for q in own:
        for pk, s in library(q)[:10]:
            b = min(int(s * 10), 9)
            total[b] += 1
            hits[b] += pk in q.gold
    print("library scores: share of top-10 hits that are evidence, by score band")
    for b in range(10):
        if total[b]:
            print(f"  {b / 10:.1f}-{(b + 1) / 10:.1f}: {hits[b] / total[b]:.3f} of {int(total[b])} hits")
    best_own = [library(q)[0][1] for q in own if library(q)]
    best_other = [library(q)[0][1] for q in other if library(q)]
    print("best hit's score, quantiles 10/25/50/75/90 %:")
    print(f"  question asked of its own conversation        {_quantiles(best_own)}")
    print(f"  question asked of another conversation        {_quantiles(best_other)}")
    evidence = [s for q in own for pk, s in library(q) if pk in q.gold]
    print(f"  evidence passages among the candidates        {_quantiles(evidence)}")
    print(f"  a passage's own text as the query (its score) {_quantiles([s for s, _ in echo])}")
    print(f"    ... ranked first for {sum(r == 0 for _, r in echo) / max(len(echo), 1):.3f} of {len(echo)} passages")
    for t in (0.4, 0.5, 0.6):
        print(
            f"  best hit >= {t}: {sum(s >= t for s in best_own) / max(len(best_own), 1):.3f} of own-conversation"
            f" questions, {sum(s >= t for s in best_other) / max(len(best_other), 1):.3f} of other-conversation ones"
        )
    best_r = [next(iter(q.lex.values())) for q in own if q.lex]
    print(f"lexical score r of the best lexical match, quantiles {_quantiles(best_r)}")


def echo_scores(mem: Memory, texts: dict[str, dict[int, str]], n: int) -> list[tuple[float, int]]:
    """(score, rank) of passages searched for with their own text, through the library's ranking."""
    rng = random.Random(3)
    pairs = [(sid, pk, t) for sid, by_pk in texts.items() for pk, t in by_pk.items()]
    out = []
    for sid, pk, text in rng.sample(pairs, min(n, len(pairs))):
        ranked = internals.ranked(mem, sid, text)
        rank = next((i for i, (p, _) in enumerate(ranked) if p == pk), len(ranked))
        out.append((dict(ranked).get(pk, 0.0), rank))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=_common.LOCOMO_DEV)
    ap.add_argument("--store", type=Path, help="build the store here, or reuse it if it exists")
    _common.add_smoke_flag(ap)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    print(_common.LOCOMO_ATTRIBUTION)
    samples = json.loads(args.data.read_text())
    if args.smoke:
        samples = samples[:2]
    with tempfile.TemporaryDirectory() as tmp:
        path = str(args.store) if args.store else os.path.join(tmp, "locomo.db")
        mem = Memory(path=path, learner="offline", embedder=EMBEDDER)
        try:
            own, other, texts = collect(mem, samples, args.smoke)
            echo = echo_scores(mem, texts, 20 if args.smoke else 300)
        finally:
            mem.close()
    print(f"{len(own)} questions; recall@{'/'.join(map(str, KS))}")
    rules: list[tuple[str, Fusion]] = [
        ("min-max convex 1.5:1 (0.3.x)", minmax),
        ("rrf k=20 2:1", rrf),
        ("absolute, raw BM25 s/(s+12), 1.5:1", absolute(lambda s: s / (s + 12.0), 1.5, raw=True)),
        ("absolute, raw BM25 s/(s+12), 2.5:1", absolute(lambda s: s / (s + 12.0), 2.5, raw=True)),
        ("absolute, min(r, 1), 1.5:1, other channel's value 0", absolute(PARTS["min(r, 1)"], 1.5, own_values=False)),
        (f"LIBRARY: hybrid.fuse, min(r, 1), {hybrid.W_LEXICAL:g}:{hybrid.W_VECTOR:g}", library),
    ]
    for name, fuse in rules:
        print(f"  {name:52s} {fmt(recall(own, fuse))}", flush=True)
    grid(own)
    calibration(own, other, echo)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
