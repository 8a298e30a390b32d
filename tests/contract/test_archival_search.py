"""Archival search: which passages ``search`` / ``search_passages`` find, by role tags, subject, time and limit.

Engines differ in one way here: the local engine's lexical search has a relevance cut-off (no
shared word, no result); Letta's archival search is purely semantic (any query returns the
nearest passages). Assertions that depend on it ask ``backend.has("relevance_cutoff")``.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from support.backends import Backend
from support.scenario import unique_id

from ai_memory_sdk import Memory, SearchResult


def test_search_tags_semantics(memory: Memory, backend: Backend) -> None:
    uid = unique_id()
    batch = [
        {"role": "user", "content": "I adopted two cats last spring"},
        {"role": "assistant", "content": "Cats are wonderful companions"},
        {"role": "system", "content": "cats topic noted"},
    ]
    memory.wait_for_run(memory.add_messages(uid, batch, skip_vector_storage=False))
    assert memory.search(uid, "cats") == ["I adopted two cats last spring"]  # None means ["user"]
    assert memory.search(uid, "cats", tags=["assistant"]) == ["Cats are wonderful companions"]
    assert sorted(memory.search(uid, "cats", tags=[])) == sorted(m["content"] for m in batch)
    assert sorted(memory.search(uid, "cats", tags=["user", "system"])) == sorted(
        [batch[0]["content"], batch[2]["content"]]
    )
    assert memory.search(unique_id("nobody"), "cats") == []
    if backend.has("relevance_cutoff"):
        assert memory.search(uid, "giraffes") == []
    else:  # semantic: the nearest passage, no cut-off
        assert memory.search(uid, "giraffes") == ["I adopted two cats last spring"]


def test_skip_vector_storage_default_is_not_searched(memory: Memory, backend: Backend) -> None:
    uid = unique_id()
    memory.wait_for_run(memory.add_messages(uid, [{"role": "user", "content": "I love cats"}]))
    assert memory.search(uid, "cats") == []
    if backend.has("unarchived_messages"):
        assert [m.content for m in memory.get_messages(uid)] == ["I love cats"]
    else:  # not archived: Letta keeps no copy
        assert memory.get_messages(uid) == []
    assert "Likes: cats" in (memory.get_user_memory(uid) or "")  # but it was learned


def test_search_limit(memory: Memory) -> None:
    uid = unique_id()
    batch = [{"role": "user", "content": f"cats note number {i}"} for i in range(8)]
    memory.wait_for_run(memory.add_messages(uid, batch, skip_vector_storage=False))
    assert len(memory.search(uid, "cats")) == 8
    assert len(memory.search(uid, "cats", limit=3)) == 3
    assert len(memory.search_passages(uid, "cats", limit=2)) == 2


def test_search_never_returns_another_subject(memory: Memory, backend: Backend) -> None:
    a, b = unique_id(), unique_id()
    memory.wait_for_run(
        memory.add_messages(a, [{"role": "user", "content": "secret cats of a"}], skip_vector_storage=False)
    )
    memory.wait_for_run(
        memory.add_messages(b, [{"role": "user", "content": "public dogs of b"}], skip_vector_storage=False)
    )
    assert memory.search(b, "secret cats of a dogs") == ["public dogs of b"]
    if backend.has("relevance_cutoff"):
        assert memory.search(b, "cats") == []
    else:  # semantic: the other subject's very words still find only this subject's passage
        assert memory.search(b, "secret cats of a") == ["public dogs of b"]
        assert memory.search(a, "public dogs of b") == ["secret cats of a"]


def test_search_passages_fields(memory: Memory) -> None:
    uid = unique_id()
    said = datetime(2024, 3, 1, 12, 0, tzinfo=timezone.utc)
    batch = [
        {
            "role": "user",
            "content": "We went hiking in the Alps",
            "tags": ["travel"],
            "metadata": {"trip": 7},
            "created_at": said,
        },
        {"role": "user", "content": "Hiking boots are expensive", "created_at": said + timedelta(days=1)},
    ]
    memory.wait_for_run(memory.add_messages(uid, batch, skip_vector_storage=False))
    stored = memory.get_messages(uid)
    results = memory.search_passages(uid, "hiking Alps")
    assert results and all(isinstance(r, SearchResult) for r in results)
    top = results[0]
    assert top.content == "We went hiking in the Alps"
    assert isinstance(top.score, float)
    assert [r.score for r in results] == sorted((r.score for r in results), reverse=True)
    assert top.role == "user"
    assert set(top.tags) == {"user", "travel"}
    assert top.created_at == said
    assert top.message_id == stored[0].id
    assert top.metadata == {"trip": 7}

    only_travel = memory.search_passages(uid, "hiking", tags=["user", "travel"], tag_match_mode="all")
    assert [r.content for r in only_travel] == ["We went hiking in the Alps"]
    any_travel = memory.search_passages(uid, "hiking", tags=["user", "travel"], tag_match_mode="any")
    assert len(any_travel) == 2
    late = memory.search_passages(uid, "hiking", start=said + timedelta(hours=1))
    assert [r.content for r in late] == ["Hiking boots are expensive"]
    early = memory.search_passages(uid, "hiking", end=(said + timedelta(hours=1)).isoformat())
    assert [r.content for r in early] == ["We went hiking in the Alps"]


@pytest.mark.needs("absolute_scores")
def test_scores_mean_the_same_in_every_query(memory: Memory) -> None:
    """A passage holding every word of a query scores high in any query, one holding a few of them low; results
    come in score order and the last is not rescaled to 0."""
    uid = unique_id()
    notes = [
        "I planted three rows of tomatoes in the back garden",
        "The dentist said I need a filling in my left molar",
        "I am training for a half marathon in October",
        "I have an allergy to penicillin",
        "My brother is getting married in Edinburgh in June",
        "We booked a cabin by the lake for the long weekend",
        "I bake sourdough bread every Saturday morning",
        "The landlord is raising the rent from January",
        "I started learning to play the cello on Sundays",
        "The car needs new winter tyres before December",
    ]
    memory.wait_for_run(
        memory.add_messages(uid, [{"role": "user", "content": n} for n in notes], skip_vector_storage=False)
    )
    threshold = 0.5
    for query, expected in (("tomatoes back garden", notes[0]), ("penicillin allergy", notes[3])):
        hits = memory.search_passages(uid, query, tags=[], limit=10)
        assert hits[0].content == expected and hits[0].score >= threshold, hits[0]
        assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
        assert all(0.0 < h.score <= 1.0 for h in hits)  # the last one too: no per-query rescaling
    weak = memory.search_passages(uid, "which garden gnome statue did grandma paint", tags=[], limit=10)
    assert weak and weak[0].score < threshold, weak[0]  # one word of five in common
