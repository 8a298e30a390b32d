"""Store-level invariants shared by the reliability tests and ``benchmarks/soak.py``.

They read the SQLite file directly (a plain ``sqlite3`` connection), so what
they check is what is on disk, not what the engine's caches say.
"""

from __future__ import annotations

import re
import sqlite3
from collections import Counter
from collections.abc import Iterable

MARKER = re.compile(r"B(\d+)-M(\d+)")


def connect(path: str) -> sqlite3.Connection:
    conn = sqlite3.connect(path, timeout=60, isolation_level=None)
    conn.execute("PRAGMA busy_timeout=60000")
    return conn


def invariant_problems(path: str, *, drained: bool = True, vectors: bool = False) -> list[str]:
    """Every broken invariant of the store, as readable lines (empty list: all hold).

    - SQLite and FTS5 integrity checks pass;
    - each block's value is its newest history entry (no half-written block);
    - every history entry comes from a direct edit (run_id NULL) or a completed run,
      and no run wrote the same block twice (no pass applied twice);
    - every message belongs to a run of its own subject; every passage to a message of its subject;
    - with ``drained``: no run is queued or running; with ``vectors``: every passage of a completed run has a vector.
    """
    conn = connect(path)
    out: list[str] = []
    try:
        ok = conn.execute("PRAGMA integrity_check").fetchall()
        if ok != [("ok",)]:
            out.append(f"integrity_check: {ok[:5]}")
        try:
            conn.execute("INSERT INTO passages_fts(passages_fts, rank) VALUES ('integrity-check', 1)")
        except sqlite3.DatabaseError as exc:
            out.append(f"fts integrity-check: {exc}")
        for pk, label, value, version in conn.execute("SELECT pk, label, value, version FROM blocks"):
            last = conn.execute(
                "SELECT version, value FROM block_versions WHERE block_pk=? ORDER BY version DESC LIMIT 1", (pk,)
            ).fetchone()
            if last is None or last[0] != version or last[1] != value:
                out.append(f"block {label!r} (pk {pk}) v{version} does not match its newest history entry")
        for run_id, status in conn.execute(
            "SELECT v.run_id, r.status FROM block_versions v LEFT JOIN runs r ON r.id=v.run_id"
            " WHERE v.run_id IS NOT NULL"
        ):
            if status != "completed":
                out.append(f"history entry from run {run_id} whose status is {status}")
        for block_pk, run_id, n in conn.execute(
            "SELECT block_pk, run_id, count(*) FROM block_versions WHERE run_id IS NOT NULL"
            " GROUP BY block_pk, run_id HAVING count(*) > 1"
        ):
            out.append(f"run {run_id} wrote block pk {block_pk} {n} times")
        n = conn.execute(
            "SELECT count(*) FROM messages m LEFT JOIN runs r ON r.seq=m.run_seq"
            " WHERE r.seq IS NULL OR r.subject_pk != m.subject_pk"
        ).fetchone()[0]
        if n:
            out.append(f"{n} message(s) without a run of their subject")
        n = conn.execute(
            "SELECT count(*) FROM passages p LEFT JOIN messages m ON m.seq=p.message_seq"
            " WHERE m.seq IS NULL OR m.subject_pk != p.subject_pk"
        ).fetchone()[0]
        if n:
            out.append(f"{n} passage(s) without a message of their subject")
        n = conn.execute(
            "SELECT count(*) FROM passage_vectors v JOIN passages p ON p.pk=v.passage_pk"
            " WHERE v.subject_pk != p.subject_pk"
        ).fetchone()[0]
        if n:
            out.append(f"{n} vector(s) filed under another subject")
        if drained:
            left = conn.execute(
                "SELECT status, count(*) FROM runs WHERE status IN ('queued','running') GROUP BY status"
            ).fetchall()
            if left:
                out.append(f"runs not finished: {left}")
        if vectors:
            n = conn.execute(
                "SELECT count(*) FROM passages p JOIN messages m ON m.seq=p.message_seq JOIN runs r ON r.seq=m.run_seq"
                " LEFT JOIN passage_vectors v ON v.passage_pk=p.pk WHERE r.status='completed' AND v.passage_pk IS NULL"
            ).fetchone()[0]
            if n:
                out.append(f"{n} passage(s) of completed runs without a vector")
    finally:
        conn.close()
    return out


def marker_counts(path: str, table: str = "messages") -> Counter:
    """How many rows of ``table`` carry each ``B<n>-M<j>`` marker (a message stored twice counts 2)."""
    conn = connect(path)
    try:
        counts: Counter = Counter()
        for (content,) in conn.execute(f"SELECT content FROM {table}"):
            for m in MARKER.finditer(content):
                counts[(int(m.group(1)), int(m.group(2)))] += 1
        return counts
    finally:
        conn.close()


def batch_problems(counts: Counter, confirmed: Iterable[int], attempted: Iterable[int], per_batch: int) -> list[str]:
    """Confirmed batches stored exactly once, whole; attempted-but-unconfirmed ones whole or not at all."""
    out = []
    confirmed = set(confirmed)
    for b in sorted(set(attempted) | confirmed):
        seen = [counts.get((b, j), 0) for j in range(per_batch)]
        if b in confirmed and seen != [1] * per_batch:
            out.append(f"confirmed batch {b}: message counts {seen} (want all 1)")
        elif b not in confirmed and seen not in ([0] * per_batch, [1] * per_batch):
            out.append(f"unconfirmed batch {b}: message counts {seen} (want all 0 or all 1)")
    stray = {b for b, _ in counts} - set(attempted) - confirmed
    if stray:
        out.append(f"messages of batches never sent: {sorted(stray)[:10]}")
    return out


def overlap_problems(path: str) -> list[str]:
    """Passes (claims) of one subject never overlap in time: runs of a subject are never applied two at once."""
    conn = connect(path)
    out = []
    try:
        rows = conn.execute(
            "SELECT subject_pk, started_at, max(finished_at) FROM runs WHERE status='completed'"
            " GROUP BY subject_pk, started_at ORDER BY subject_pk, started_at"
        ).fetchall()
    finally:
        conn.close()
    prev: dict[int, float] = {}
    for subject_pk, started, finished in rows:
        if subject_pk in prev and started < prev[subject_pk]:
            out.append(
                f"subject pk {subject_pk}: a pass started at {started:.6f} before the previous ended"
                f" at {prev[subject_pk]:.6f}"
            )
        prev[subject_pk] = max(finished, prev.get(subject_pk, 0.0))
    return out


def order_problems(path: str) -> list[str]:
    """A subject's block versions written by runs come in run order (runs of one subject applied in order)."""
    conn = connect(path)
    out = []
    try:
        rows = conn.execute(
            "SELECT v.block_pk, v.version, r.seq FROM block_versions v JOIN runs r ON r.id=v.run_id"
            " ORDER BY v.block_pk, v.version"
        ).fetchall()
    finally:
        conn.close()
    last: dict[int, int] = {}
    for block_pk, version, seq in rows:
        if block_pk in last and seq < last[block_pk]:
            out.append(f"block pk {block_pk} v{version} written by run seq {seq} after run seq {last[block_pk]}")
        last[block_pk] = seq
    return out
