"""LoCoMo retrieval benchmark of archival search, through the library's public API.

Every turn of a conversation becomes a message of one subject
(``skip_vector_storage=False``), exactly as ``shared/data/locomo/README.md``
defines the benchmark; for each question of categories 1-4 it measures
recall@5/10/20 of the evidence turns, searching every role (``tags=[]``).
The hybrid figures come from ``Memory.search_passages``; BM25-only and
vector-only rankings come from the same store through
``ai_memory_sdk.search.hybrid.ranked`` (one channel, no public API for it).

Usage::

    .venv/bin/python benchmarks/locomo_retrieval.py [--data PATH] [--embedder SPEC] [--lexical-budget N]
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
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ai_memory_sdk import Memory  # noqa: E402
from ai_memory_sdk.search import hybrid  # noqa: E402
from ai_memory_sdk.store.sqlite.index import LEXICAL_BUDGET  # noqa: E402

DEFAULT_DATA = ROOT.parent / "shared" / "data" / "locomo" / "locomo_dev.json"
ATTRIBUTION = (
    'Data: LoCoMo (snap-research/LoCoMo, Maharana et al., "Evaluating Very Long-Term Conversational '
    'Memory of LLM Agents", ACL 2024), CC BY-NC 4.0, non-commercial benchmark use only.'
)
KS = (5, 10, 20)


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


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--embedder", default="sentence-transformers:all-MiniLM-L6-v2")
    ap.add_argument(
        "--lexical-budget",
        type=int,
        default=LEXICAL_BUDGET,
        help="passages one lexical query may score before frequent terms are dropped",
    )
    ap.add_argument("--limit", type=int, default=0, help="only the first N questions (a quick look)")
    ap.add_argument("--path", help="the store: an empty PostgreSQL database URL (default: a temporary SQLite file)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    print(ATTRIBUTION)
    samples = json.loads(args.data.read_text())
    with tempfile.TemporaryDirectory() as tmp:
        mem = Memory(path=args.path or os.path.join(tmp, "locomo.db"), learner="offline", embedder=args.embedder)
        engine: Any = mem._engine
        engine.store.index.budget = args.lexical_budget
        questions: list[tuple[str, str, set[str]]] = []
        t0 = time.perf_counter()
        n_messages = 0
        for sample in samples:
            sid, messages, qs = conversation(sample)
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
            for pk, row in engine.store.index.passages(missing).items():
                dia[pk] = row.metadata["dia_id"]
            return [dia[pk] for pk in pks]

        runs: dict[str, list[list[str]]] = {"bm25": [], "vector": [], "hybrid": []}
        latency: list[float] = []
        for sid, q, _ in questions:
            pk = engine.store.subject_pk(sid)
            for channel in ("lexical", "vector"):
                ranked = hybrid.ranked(
                    engine.store.index,
                    engine.vectors,
                    engine.indexer.embedder,
                    pk,
                    q,
                    tags=[],
                    tag_match_mode="any",
                    start=None,
                    end=None,
                    channels=channel,
                )
                runs["bm25" if channel == "lexical" else "vector"].append(ids([p for p, _ in ranked[: max(KS)]]))
            t = time.perf_counter()
            results = mem.search_passages(sid, q, tags=[], limit=max(KS))  # the budget is set on the index above
            latency.append(time.perf_counter() - t)
            runs["hybrid"].append([r.metadata["dia_id"] for r in results])
        golds = [g for _, _, g in questions]
        print(f"recall@{'/'.join(map(str, KS))} (lexical budget {args.lexical_budget}):")
        for name, label in (
            ("bm25", "BM25 only (FTS5, recipe)"),
            ("vector", "vector only (cosine)"),
            ("hybrid", "hybrid (convex 1.5:1)"),
        ):
            print(f"  {label:28s} " + "/".join(f"{x:.3f}" for x in recall(runs[name], golds)))
        latency.sort()
        print(
            f"search_passages latency (with query embedding): p50 {statistics.median(latency) * 1000:.1f} ms,"
            f" p99 {latency[int(0.99 * (len(latency) - 1))] * 1000:.1f} ms"
        )
        mem.close()


if __name__ == "__main__":
    main()
