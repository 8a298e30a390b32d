"""Messages: add, list, delete; files; deleting a user. The first scenarios are ai-memory-sdk 0.2.0's own.

Where engines differ: Letta keeps only archived messages (``unarchived_messages``: the local
engine lists every stored message) and returns a long text as re-joined overlapping chunks
(``exact_parts``); without a relevance cut-off a search still returns the nearest passages.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from support import internals
from support.backends import Backend, MakeMemory
from support.scenario import CONVERSATION, unique_id

from ai_memory_sdk import Memory, StoredMessage


def test_conversational_memory(memory: Memory) -> None:
    user_id = unique_id()
    memory.initialize_user_memory(user_id, reset=True)
    run = memory.add_messages(user_id, messages=CONVERSATION, skip_vector_storage=False)
    memory.wait_for_run(run)

    value = memory.get_user_memory(user_id)
    assert value is not None and "Bob" in value, value

    results = memory.search(user_id, "cats")
    assert results, "expected search results for 'cats'"
    assert "cats" in results[0]
    memory.delete_user(user_id)
    assert memory.get_user_memory(user_id) is None


def test_bound_subject_helpers(make_memory: MakeMemory, backend: Backend) -> None:
    sid = unique_id("bound")
    memory = make_memory(subject_id=sid)
    assert memory.subject_id == sid
    skip = backend.has("unarchived_messages")  # else only archived messages are listed
    memory.wait_for_run(
        memory.add_messages_here([{"role": "user", "content": "My name is Dana"}], skip_vector_storage=skip)
    )
    assert [m.content for m in memory.get_messages(sid)] == ["My name is Dana"]


def test_add_messages_argument_errors(memory: Memory) -> None:
    with pytest.raises(ValueError, match="messages must be provided"):
        memory.add_messages(unique_id())
    with pytest.raises(ValueError, match="First argument must be"):
        memory.add_messages(42)


def test_get_messages_order_limit_window_and_run(memory: Memory, backend: Backend) -> None:
    uid = unique_id()
    t0 = datetime(2024, 1, 1, 9, 0, tzinfo=timezone.utc)
    first: list[dict[str, Any]] = [
        {"role": "user", "content": "m0", "created_at": t0, "metadata": {"k": [1, 2]}},
        {"role": "assistant", "content": "m1", "created_at": t0 + timedelta(hours=1), "name": "Sam"},
    ]
    second: list[dict[str, Any]] = [
        {"role": "user", "content": "m2", "created_at": (t0 + timedelta(hours=2)).isoformat()},
        {"role": "user", "content": "m3", "created_at": t0 + timedelta(hours=3)},
        {"role": "user", "content": "m4 same time", "created_at": t0 + timedelta(hours=3)},
    ]
    skip = backend.has("unarchived_messages")  # else only archived messages are listed
    r1 = memory.add_messages(uid, first, skip_vector_storage=skip)
    r2 = memory.add_messages(uid, second, skip_vector_storage=skip)
    memory.wait_for_run(r2)
    msgs = memory.get_messages(uid)
    assert all(isinstance(m, StoredMessage) for m in msgs)
    assert [m.content for m in msgs] == ["m0", "m1", "m2", "m3", "m4 same time"]
    assert [m.run_id for m in msgs] == [r1, r1, r2, r2, r2]
    assert [m.role for m in msgs] == ["user", "assistant", "user", "user", "user"]
    assert msgs[1].name == "Sam" and msgs[0].name is None and msgs[0].metadata == {"k": [1, 2]}
    assert msgs[0].created_at == t0
    assert len({m.id for m in msgs}) == 5
    assert [m.content for m in memory.get_messages(uid, limit=2)] == ["m3", "m4 same time"]
    assert [m.content for m in memory.get_messages(uid, before=t0 + timedelta(hours=1))] == ["m0"]
    assert [m.content for m in memory.get_messages(uid, after=t0 + timedelta(hours=2))] == ["m3", "m4 same time"]
    window = memory.get_messages(uid, after=t0, before=(t0 + timedelta(hours=3)).isoformat())
    assert [m.content for m in window] == ["m1", "m2"]
    assert memory.get_messages(unique_id("nobody")) == []


def test_delete_message_removes_it_everywhere(memory: Memory, backend: Backend) -> None:
    uid = unique_id()
    memory.wait_for_run(memory.add_messages(uid, CONVERSATION, skip_vector_storage=False))
    cats = next(m for m in memory.get_messages(uid) if "cats" in m.content)
    assert memory.search(uid, "cats")[0] == "I love cats"
    memory.delete_message(cats.id)
    assert cats.id not in [m.id for m in memory.get_messages(uid)]
    assert len(memory.get_messages(uid)) == 2
    assert "I love cats" not in memory.search(uid, "cats")
    assert "I love cats" not in [r.content for r in memory.search_passages(uid, "cats", tags=[])]
    if backend.has("relevance_cutoff"):  # no other passage mentions cats
        assert memory.search(uid, "cats") == []
        assert memory.search_passages(uid, "cats", tags=[]) == []
    memory.delete_message(cats.id)  # already gone: no error
    memory.delete_message("not-a-message-id")


def test_add_files(memory: Memory, tmp_path: Path, backend: Backend) -> None:
    sid = unique_id("files")
    words = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta", "iota", "kappa", "lambda", "mu"]
    paragraphs = [  # not periodic: Letta's re-joining of overlapping chunks needs text that does not repeat
        f"Paragraph {i}: "
        + " ".join(
            f"Sentence {j} of part {i} mentions {words[(i * 7 + j) % 12]} and {words[(i + j * 5) % 12]}."
            for j in range(12)
        )
        for i in range(15)
    ]
    paragraphs[-1] += " The treasure is buried in Zanzibar."
    text = "\n\n".join(paragraphs) + "\n"
    assert len(text) > 8000
    path = tmp_path / "notes.txt"
    path.write_text(text, encoding="utf-8")
    small = tmp_path / "small.txt"
    small.write_text("My favourite colour is teal.\n", encoding="utf-8")

    runs = memory.add_files(
        [
            {"file_path": str(path), "label": "notes_file", "description": "Project notes", "subject_id": sid},
            {"file_path": str(small), "subject_id": sid},
        ]
    )
    assert isinstance(runs, list) and len(runs) == 2
    for run in runs:
        memory.wait_for_run(run)

    msgs = [m for m in memory.get_messages(sid) if m.run_id == runs[0]]
    n = len(msgs)
    assert n >= 3
    body = []
    for i, m in enumerate(msgs, 1):
        assert f"(part {i}/{n})" in m.content
        header, _, part = m.content.partition("\n")
        assert "notes.txt" in header
        body.append(part)
    if backend.has("exact_parts"):
        assert "".join(body) == text  # split, never truncated
    else:  # stored as overlapping chunks in no order; joined back, every word is there in order
        assert " ".join(body).split() == text.split()
    hits = memory.search(sid, "Zanzibar treasure")
    assert hits and "Zanzibar" in hits[0]
    assert memory.get_memory("notes_file", subject_id=sid) == ""
    assert memory.list_blocks(sid)[0].description == "Project notes"


def test_add_files_unreadable_file_stores_nothing(memory: Memory, tmp_path: Path) -> None:
    sid = unique_id("files")
    good = tmp_path / "good.txt"
    good.write_text("hello", encoding="utf-8")
    with pytest.raises(ValueError, match=r"files\[1\]"):
        memory.add_files(
            [
                {"file_path": str(good), "subject_id": sid},
                {"file_path": str(tmp_path / "missing.txt"), "subject_id": sid},
            ]
        )
    assert memory.get_messages(sid) == []


def test_delete_user_erases_everything(memory: Memory, capsys: pytest.CaptureFixture[str]) -> None:
    uid, other = unique_id(), unique_id()
    memory.wait_for_run(memory.add_messages(uid, CONVERSATION, skip_vector_storage=False))
    memory.wait_for_run(memory.add_messages(other, CONVERSATION, skip_vector_storage=False))
    memory.delete_user(uid)
    assert capsys.readouterr().out == ""  # unlike 0.2.0, nothing is printed
    assert memory.get_user_memory(uid) is None
    assert memory.get_summary(uid) is None
    assert memory.get_memory_agent_id(uid) is None
    assert memory.search(uid, "cats") == []
    assert memory.get_messages(uid) == []
    assert memory.list_runs(uid) == []
    # the other user is untouched
    assert "Bob" in (memory.get_user_memory(other) or "")
    assert memory.search(other, "cats")
    memory.delete_user(uid)  # deleting an unknown user is a no-op


@pytest.mark.needs("sqlite_file")
def test_delete_user_leaves_no_rows(memory: Memory) -> None:
    uid, other = unique_id(), unique_id()
    memory.wait_for_run(memory.add_messages(uid, CONVERSATION, skip_vector_storage=False))
    memory.wait_for_run(memory.add_messages(other, CONVERSATION, skip_vector_storage=False))
    memory.set_memory("human", "edited", subject_id=uid)
    memory.delete_user(uid)
    db = internals.connect(memory)
    try:
        tables = ["messages", "runs", "passages", "blocks", "passage_vectors", "block_versions"]
        remaining = {t: db.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in tables}
        assert db.execute("SELECT count(*) FROM subjects WHERE subject_id=?", (uid,)).fetchone()[0] == 0
        # only the other user's rows remain: 3 messages, 1 run, 3 passages, 2 blocks
        assert remaining["messages"] == 3 and remaining["runs"] == 1 and remaining["passages"] == 3
        assert remaining["blocks"] == 2
        hits = db.execute("SELECT count(*) FROM passages_fts WHERE passages_fts MATCH 'cats'").fetchone()[0]
        assert hits == 1
    finally:
        db.close()
