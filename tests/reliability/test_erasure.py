"""Erasure: after ``delete_user`` nothing about the subject is left, in any table or in the file's bytes.

The victim's messages are archived (so they have passages, FTS5 entries
and, with an ``openai:`` embedder against the scripted server, vectors), its
blocks have a history, and a search has run. Afterwards every table (FTS5
shadow tables included) and the raw bytes of the database file and its -wal
are scanned for the subject id, its agent/run/message/block ids, unique
marker words from its messages and blocks, and its vectors' bytes. The
memory agent's pass traces (the inspector's run pages) hold the same text,
and must go with it: the scans first check the traces do hold it.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from support.openai_server import ScriptedOpenAI, reply


def _marker() -> str:
    # lowercase (FTS5 stores folded tokens) and ending in a digit (the porter stemmer leaves it whole)
    return f"zqv{uuid.uuid4().hex}7"


def _needles_of(markers: list[str]) -> list[bytes]:
    """A marker and its middle (FTS5 leaves may store a term as a suffix after a prefix shared with the previous one)."""
    out = []
    for m in markers:
        out += [m.encode(), m[8:-2].encode()]
    return out


def _table_hits(path: str, needles: list[bytes], only: str | None = None) -> list[str]:
    conn = sqlite3.connect(path, timeout=60)
    hits = []
    try:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        tables = [t for t in tables if only in (None, t)]
        for table in tables:
            for row in conn.execute(f'SELECT * FROM "{table}"'):
                for cell in row:
                    raw = cell.encode() if isinstance(cell, str) else cell if isinstance(cell, bytes) else None
                    if raw is None:
                        continue
                    for n in needles:
                        if n in raw:
                            hits.append(f"{table}: {n[:40]!r}")
    finally:
        conn.close()
    return hits


def _file_hits(path: str, needles: list[bytes]) -> list[str]:
    hits = []
    for suffix in ("", "-wal", "-shm", "-journal"):
        f = Path(path + suffix)
        if not f.exists():
            continue
        data = f.read_bytes()
        hits += [f"{f.name} ({len(data)} bytes): {n[:40]!r}" for n in needles if n in data]
    return hits


def _populate(mem: Any, victim: str, bystander: str) -> list[str]:
    """Give both subjects archived messages, blocks with history and searches; return the victim's markers."""
    markers = [_marker() for _ in range(8)]
    other = [_marker() for _ in range(4)]
    mem.initialize_user_memory(victim, user_context_block_value=f"Note: {markers[0]}")
    mem.initialize_memory("projects", f"Projects of {markers[1]}", value=f"works on {markers[2]}", subject_id=victim)
    mem.set_memory("projects", f"now works on {markers[3]}", subject_id=victim)
    runs = []
    for i in range(6):  # several batches: several FTS5 segments before the delete
        batch = [
            {
                "role": "user",
                "content": f"I like {markers[4]} and item{i} with {markers[5 + i % 3]}",
                "name": f"name-{markers[6]}",
                "metadata": {"secret": markers[7]},
                "tags": ["t1"],
            },
            {"role": "assistant", "content": f"Noted {markers[5]} number {i}"},
        ]
        runs.append(mem.add_messages(victim, batch, skip_vector_storage=False))
        runs.append(
            mem.add_messages(
                bystander,
                [{"role": "user", "content": f"I like {other[i % 4]} and item{i}"}],
                skip_vector_storage=False,
            )
        )
    for r in runs:
        mem.wait_for_run(r)
    assert mem.search(victim, f"{markers[4]} item3", tags=[]), "the victim's passages must be searchable first"
    assert mem.search(bystander, "item3", tags=[])
    return markers


def _victim_ids(path: str, victim: str) -> list[bytes]:
    conn = sqlite3.connect(path, timeout=60)
    try:
        pk, agent = conn.execute("SELECT pk, agent_id FROM subjects WHERE subject_id=?", (victim,)).fetchone()
        ids = [agent]
        ids += [r[0] for r in conn.execute("SELECT id FROM runs WHERE subject_pk=?", (pk,))]
        ids += [r[0] for r in conn.execute("SELECT id FROM messages WHERE subject_pk=?", (pk,))]
        ids += [r[0] for r in conn.execute("SELECT id FROM blocks WHERE subject_pk=?", (pk,))]
        vectors = [r[0] for r in conn.execute("SELECT vector FROM passage_vectors WHERE subject_pk=?", (pk,))]
    finally:
        conn.close()
    return [i.encode() for i in ids] + vectors


@pytest.mark.parametrize("embedder", ["none", "openai"])
def test_delete_user_leaves_no_trace_in_tables_or_file_bytes(make_memory, tmp_path, embedder):
    victim = f"victim-{uuid.uuid4().hex}@example.com"
    bystander = f"bystander-{uuid.uuid4().hex}"
    with ScriptedOpenAI(embedding_dim=64) as server:
        opts: dict[str, Any] = {"embedder": "none"}
        if embedder == "openai":
            opts = {
                "embedder": "openai:text-embedding-3-small",
                "llm_base_url": server.base_url,
                "llm_api_key": "sk-test",
            }
        path = str(tmp_path / "erase.db")
        mem = make_memory(path=path, **opts)
        markers = _populate(mem, victim, bystander)
        ids = _victim_ids(path, victim)
        n_vectors = sum(1 for i in ids if len(i) == 64 * 4)
        assert n_vectors == (12 if embedder == "openai" else 0)
        needles = [victim.encode()] + ids + _needles_of(markers)
        assert _file_hits(path, needles[:1] + _needles_of(markers[4:5])), "the scan must see the data before the delete"
        assert _table_hits(path, _needles_of(markers), only="traces"), "the victim's traces must hold its text"

        mem.delete_user(victim)

        assert _table_hits(path, needles) == []
        assert _file_hits(path, needles) == [], "deleted data left in the file's bytes (open store)"
        assert mem.get_user_memory(victim) is None and mem.search(victim, markers[4]) == []
        assert mem.search(bystander, "item3", tags=[]), "the bystander's data must survive"
        mem.close()
        assert _file_hits(path, needles) == [], "deleted data left in the file's bytes (closed store)"


def test_delete_user_erases_the_llm_learners_traces(make_memory, tmp_path):
    """A pass of the LLM memory agent stores its trace (request, tool calls, edits); deleting the user erases it."""
    victim, marker, kept = "victim", _marker(), _marker()

    def model(request: dict[str, Any]) -> Any:
        said = json.dumps(request["messages"])
        fact = marker if marker in said else kept
        edit = ("memory_insert", {"label": "human", "new_str": f"likes {fact}", "insert_line": -1})
        return reply(tool_calls=[edit, ("memory_finish_edits", {})])

    with ScriptedOpenAI() as server:
        server.responder = model
        path = str(tmp_path / "erase.db")
        mem = make_memory(path=path, learner="llm", llm_base_url=server.base_url, llm_api_key="sk-test")
        run = mem.add_messages(victim, [{"role": "user", "content": f"I like {marker}"}])
        mem.wait_for_run(run)
        mem.wait_for_run(mem.add_messages("bystander", [{"role": "user", "content": f"I like {kept}"}]))
        assert marker in json.dumps(mem._engine.get_trace(run))
        assert _table_hits(path, _needles_of([marker]), only="traces"), "the trace must hold the victim's text"

        mem.delete_user(victim)

        assert mem._engine.get_trace(run) is None
        assert _table_hits(path, _needles_of([marker]) + [run.encode()]) == []
        assert _file_hits(path, _needles_of([marker]) + [run.encode()]) == []
        assert _table_hits(path, _needles_of([kept]), only="traces"), "the bystander's trace must survive"


def test_delete_message_leaves_no_trace(make_memory, tmp_path):
    path = str(tmp_path / "erase.db")
    mem = make_memory(path=path)
    keep, gone = _marker(), _marker()
    run = mem.add_messages(
        "u",
        [{"role": "user", "content": f"keep {keep}"}, {"role": "user", "content": f"forget {gone}"}],
        skip_vector_storage=False,
    )
    mem.wait_for_run(run)
    doomed = next(m for m in mem.get_messages("u") if gone in m.content)
    mem.delete_message(doomed.id)
    # The offline learner's summary quotes the first message only, so nothing learned holds ``gone``.
    needles = _needles_of([gone]) + [doomed.id.encode()]
    assert _table_hits(path, needles) == []
    assert _file_hits(path, needles) == []
    assert mem.search("u", keep)


def test_delete_user_waits_for_a_reader_then_erases(make_memory, tmp_path):
    """A reader inside a read transaction delays the checkpoint; the delete must still leave the -wal clean."""
    path = str(tmp_path / "erase.db")
    mem = make_memory(path=path)
    marker = _marker()
    mem.wait_for_run(
        mem.add_messages("victim", [{"role": "user", "content": f"hello {marker}"}], skip_vector_storage=False)
    )
    mem.wait_for_run(mem.add_messages("other", [{"role": "user", "content": "hello there"}], skip_vector_storage=False))
    reader = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    reader.execute("BEGIN")
    reader.execute("SELECT count(*) FROM messages").fetchone()  # holds a snapshot that still has the victim
    release = threading.Timer(1.0, lambda: reader.execute("COMMIT"))
    release.start()
    t0 = time.monotonic()
    mem.delete_user("victim")
    waited = time.monotonic() - t0
    release.join()
    reader.close()
    assert _file_hits(path, _needles_of([marker]) + [b"victim"]) == []
    assert waited < 30


def _pending_mark(path: str) -> object:
    conn = sqlite3.connect(path, timeout=60)
    try:
        row = conn.execute("SELECT value FROM meta WHERE key='purge_pending'").fetchone()
    finally:
        conn.close()
    return row and row[0]


@pytest.mark.parametrize("finisher", ["close", "next_open"])
def test_purge_deferred_by_a_long_reader_is_finished_later(make_memory, tmp_path, finisher):
    """A reader holding a snapshot past the busy timeout defers the -wal truncation; it is not forgotten."""
    path = str(tmp_path / "erase.db")
    mem = make_memory(path=path, busy_timeout=0.3)
    marker = _marker()
    mem.wait_for_run(
        mem.add_messages("victim", [{"role": "user", "content": f"hello {marker}"}], skip_vector_storage=False)
    )
    mem.wait_for_run(mem.add_messages("other", [{"role": "user", "content": "hello there"}], skip_vector_storage=False))
    reader = sqlite3.connect(path, isolation_level=None)
    reader.execute("BEGIN")
    reader.execute("SELECT count(*) FROM messages").fetchone()
    mem.delete_user("victim")  # returns after the busy timeout, the truncation deferred
    assert _pending_mark(path) == "checkpoint"
    assert _file_hits(path, _needles_of([marker])), "expected: the old page images are still in the -wal"
    reader.execute("COMMIT")
    reader.close()
    if finisher == "close":
        mem.close()
    else:
        make_memory(path=path)  # another process opening the store finishes the purge
    assert _pending_mark(path) is None
    assert _file_hits(path, _needles_of([marker]) + [b"victim"]) == []
