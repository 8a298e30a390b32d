"""LoCoMo retrieval benchmark of archival search, through the library's public API.

Every turn of a conversation becomes a message of one subject
(``skip_vector_storage=False``), exactly as the data's README
(``../shared/data/locomo/README.md``) defines the benchmark; for each question of
categories 1-4 it measures recall@5/10/20 of the evidence turns, searching every
role (``tags=[]``). The hybrid figures come from ``Memory.search_passages``;
BM25-only and vector-only rankings come from the same store through
``ai_memory_sdk.search.hybrid.ranked`` (one channel, no public API for it).

Data: LoCoMo (snap-research, Maharana et al., ACL 2024), CC BY-NC 4.0,
non-commercial benchmark use only; read in place, never copied.

Usage::

    .venv/bin/python benchmarks/locomo_retrieval.py [--data PATH] [--embedder SPEC] [--lexical-budget N] [--smoke]
        [--path postgresql://...]

``--path`` runs it on a PostgreSQL store (an empty database: its schema is
created); the default is a SQLite file in a temporary directory.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import _common
from support import internals

from ai_memory_sdk import Memory
from ai_memory_sdk.store.sqlite.index import LEXICAL_BUDGET

KS = (5, 10, 20)
SMOKE_TURNS = 60  # --smoke: the first conversation's first turns, and the questions they answer


def session_time(text: str) -> datetime:
    """'1:56 pm on 8 May, 2023' -> an aware datetime (UTC)."""
    return datetime.strptime(" ".join(text.split()), "%I:%M %p on %d %B, %Y").replace(tzinfo=timezone.utc)


def conversation(sample: dict[str, Any]) -> tuple[str, list[dict[str, Any]], list[tuple[str, set[str], int]]]:
    """(subject id, messages in order, questions as (text, evidence dia_ids, category)) of one sample."""
    c = sample["conversation"]
    sessions = sorted(int(k.split("_")[1]) for k in c if re.fullmatch(r"session_\d+", k) and isinstance(c[k], list))
    messages = []
    for s in sessions:
        when = session_time(c[f"session_{s}_date_time"])
        for turn in c[f"session_{s}"]:
            content = f"{turn['speaker']}: {turn['text']}"
            if turn.get("blip_caption"):
                content += f" [shares a photo: {turn['blip_caption']}]"
            messages.append(
                {
                    "role": "user" if turn["speaker"] == c["speaker_a"] else "assistant",
                    "name": turn["speaker"],
                    "content": content,
                    "created_at": when,
                    "metadata": {"dia_id": turn["dia_id"]},
                }
            )
    ids = {m["metadata"]["dia_id"] for m in messages}
    questions = []
    for qa in sample["qa"]:
        if qa["category"] in (1, 2, 3, 4):
            gold = {e for e in qa["evidence"] if e in ids}
            if gold:
                questions.append((qa["question"], gold, qa["category"]))
    return f"locomo-{sample['sample_id']}", messages, questions


def recall(runs: list[list[str]], golds: list[set[str]]) -> tuple[float, ...]:
    return tuple(sum(len(g & set(r[:k])) / len(g) for r, g in zip(runs, golds)) / len(golds) for k in KS)


def truncated(
    sid: str, messages: list[dict[str, Any]], questions: list[Any], turns: int
) -> tuple[str, list[dict[str, Any]], list[Any]]:
    """The first ``turns`` messages of a conversation and the questions whose evidence lies among them."""
    kept = messages[:turns]
    ids = {m["metadata"]["dia_id"] for m in kept}
    return sid, kept, [q for q in questions if q[1] <= ids]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=_common.LOCOMO_DEV)
    ap.add_argument("--embedder", default="sentence-transformers:all-MiniLM-L6-v2")
    ap.add_argument(
        "--lexical-budget",
        type=int,
        default=LEXICAL_BUDGET,
        help="passages one lexical query may score before frequent terms are dropped",
    )
    ap.add_argument("--limit", type=int, default=0, help="only the first N questions (a quick look)")
    ap.add_argument("--path", help="the store: an empty PostgreSQL database URL (default: a temporary SQLite file)")
    _common.add_smoke_flag(ap)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    print(_common.LOCOMO_ATTRIBUTION)
    samples = json.loads(args.data.read_text())
    if args.smoke:
        samples, args.limit = samples[:1], 10
    with tempfile.TemporaryDirectory() as tmp:
        mem = Memory(path=args.path or os.path.join(tmp, "locomo.db"), learner="offline", embedder=args.embedder)
        internals.set_lexical_budget(mem, args.lexical_budget)  # the public API has no budget knob
        questions: list[tuple[str, str, set[str]]] = []
        t0 = time.perf_counter()
        n_messages = 0
        for sample in samples:
            sid, messages, qs = conversation(sample)
            if args.smoke:
                sid, messages, qs = truncated(sid, messages, qs, SMOKE_TURNS)
            mem.wait_for_run(mem.add_messages(sid, messages, skip_vector_storage=False), timeout=3600)
            n_messages += len(messages)
            questions += [(sid, q, gold) for q, gold, _ in qs]
        ingest = time.perf_counter() - t0
        if args.limit:
            questions = questions[: args.limit]
        print(
            f"{len(samples)} conversations, {n_messages} turns stored and embedded in {ingest:.1f}s"
            f" ({n_messages / ingest:.0f} messages/s, embedder {args.embedder}); {len(questions)} questions"
        )

        dia: dict[int, str] = {}

        def ids(pks: list[int]) -> list[str]:
            missing = [pk for pk in pks if pk not in dia]
            for pk, metadata in internals.passage_metadata(mem, missing).items():
                dia[pk] = metadata["dia_id"]
            return [dia[pk] for pk in pks]

        runs: dict[str, list[list[str]]] = {"bm25": [], "vector": [], "hybrid": []}
        latency: list[float] = []
        for sid, q, _ in questions:
            for channel in ("lexical", "vector"):
                ranked = internals.ranked(mem, sid, q, channels=channel)
                runs["bm25" if channel == "lexical" else "vector"].append(ids([p for p, _ in ranked[: max(KS)]]))
            t = time.perf_counter()
            results = mem.search_passages(sid, q, tags=[], limit=max(KS))
            latency.append(time.perf_counter() - t)
            runs["hybrid"].append([r.metadata["dia_id"] for r in results])
        golds = [g for _, _, g in questions]
        print(f"recall@{'/'.join(map(str, KS))} (lexical budget {args.lexical_budget}):")
        for name, label in (
            ("bm25", "BM25 only (FTS5, recipe)"),
            ("vector", "vector only (cosine)"),
            ("hybrid", "hybrid (absolute 1.5:1)"),
        ):
            print(f"  {label:28s} " + "/".join(f"{x:.3f}" for x in recall(runs[name], golds)))
        print(f"search_passages latency (with query embedding): {_common.p50_p99(latency)}")
        mem.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
