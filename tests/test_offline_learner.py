"""The offline learner, through the public API and as a learner on its own."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta, timezone

from ai_memory_sdk import Memory
from ai_memory_sdk.learners import OfflineLearner, PassInput, split_for_passes
from ai_memory_sdk.models import Block, StoredMessage

MakeMemory = Callable[..., Memory]
T0 = datetime(2024, 6, 1, 10, 0, tzinfo=timezone.utc)
KEY_VALUE = re.compile(r"[A-Z][A-Za-z ]*: \S.*")


def _uid() -> str:
    return f"user_{uuid.uuid4().hex[:10]}"


def _learn(memory: Memory, uid: str, *texts: str, role: str = "user", at: datetime = T0) -> None:
    batch = [{"role": role, "content": t, "created_at": at + timedelta(seconds=i)} for i, t in enumerate(texts)]
    memory.wait_for_run(memory.add_messages(uid, batch), timeout=10)


def _facts(memory: Memory, uid: str) -> dict[str, str]:
    value = memory.get_user_memory(uid) or ""
    lines = [ln for ln in value.split("\n") if ln]
    assert all(KEY_VALUE.fullmatch(ln) for ln in lines), value  # nothing but "Key: value" lines
    return dict(ln.split(": ", 1) for ln in lines)


def test_learns_key_value_lines_from_first_person_statements(memory: Memory) -> None:
    uid = _uid()
    _learn(
        memory,
        uid,
        "Hi, my name is Alice Walker.",
        "I live in Lisbon and I work as a nurse.",
        "I'm 34 years old. I have a grey cat.",
        "I speak Portuguese.",
    )
    facts = _facts(memory, uid)
    assert facts["Name"] == "Alice Walker"
    assert facts["Location"] == "Lisbon"
    assert facts["Job"] == "nurse"
    assert facts["Age"] == "34"
    assert facts["Pet"] == "grey cat"
    assert facts["Language"] == "Portuguese"


def test_newer_value_supersedes_older(memory: Memory) -> None:
    uid = _uid()
    _learn(memory, uid, "I live in Paris.")
    assert _facts(memory, uid)["Location"] == "Paris"
    _learn(memory, uid, "Last month I moved to Berlin.", at=T0 + timedelta(days=1))
    facts = _facts(memory, uid)
    assert facts["Location"] == "Berlin"
    assert "Paris" not in (memory.get_user_memory(uid) or "")
    _learn(memory, uid, "Call me Ally", at=T0 + timedelta(days=2))
    _learn(memory, uid, "My name is Alexandra", at=T0 + timedelta(days=3))
    assert _facts(memory, uid)["Name"] == "Alexandra"


def test_within_one_batch_the_later_message_wins(memory: Memory) -> None:
    uid = _uid()
    _learn(memory, uid, "I live in Oslo", "Actually I live in Bergen.")
    assert _facts(memory, uid)["Location"] == "Bergen"


def test_likes_and_dislikes(memory: Memory) -> None:
    uid = _uid()
    _learn(memory, uid, "I love jazz.", "I really enjoy hiking", "I hate mornings")
    facts = _facts(memory, uid)
    assert set(facts["Likes"].split("; ")) == {"jazz", "hiking"}
    assert facts["Dislikes"] == "mornings"
    _learn(memory, uid, "Honestly I can't stand jazz anymore", "These days I like mornings.", at=T0 + timedelta(days=1))
    facts = _facts(memory, uid)
    assert "jazz" not in facts["Likes"].split("; ") and "jazz" in facts["Dislikes"].split("; ")
    assert "mornings" in facts["Likes"].split("; ") and "mornings" not in facts.get("Dislikes", "")


def test_only_the_users_statements_are_learned(memory: Memory) -> None:
    uid = _uid()
    batch = [
        {"role": "assistant", "content": "My name is Sam and I live in Mars City"},
        {"role": "system", "content": "My name is System"},
        {"role": "user", "content": "Nice to meet you"},
    ]
    memory.wait_for_run(memory.add_messages(uid, batch), timeout=10)
    assert memory.get_user_memory(uid) == ""
    assert memory.get_summary(uid)  # the batch is still summarised


def test_summary_stays_within_its_limit_over_many_batches(memory: Memory) -> None:
    uid = _uid()
    memory.initialize_user_memory(uid, summary_block_char_limit=300)
    runs = []
    for i in range(40):
        runs.append(
            memory.add_messages(
                uid,
                [
                    {
                        "role": "user",
                        "content": f"Batch {i}: let us talk about topic number {i} in some detail",
                        "created_at": T0 + timedelta(hours=i),
                    },
                    {
                        "role": "assistant",
                        "content": "Sure, tell me more.",
                        "created_at": T0 + timedelta(hours=i, seconds=1),
                    },
                ],
            )
        )
        if i % 10 == 9:
            memory.wait_for_run(runs[-1], timeout=10)
            assert len(memory.get_summary(uid) or "") <= 300
    for run in runs:
        memory.wait_for_run(run, timeout=10)
    summary = memory.get_summary(uid) or ""
    assert 0 < len(summary) <= 300
    # the newest note (dated by the last batch: T0 + 39 h) is kept, the oldest dropped
    assert summary.split("\n")[-1].startswith("2024-06-03: "), summary
    assert "topic number 0 " not in summary
    assert all(len(v.value) <= 300 for v in memory.block_history("summary", subject_id=uid))


def test_tiny_summary_limit_is_respected(memory: Memory) -> None:
    uid = _uid()
    memory.initialize_user_memory(uid, summary_block_char_limit=20)
    _learn(memory, uid, "My name is Bob and this is a rather long opening message about many things")
    assert 0 < len(memory.get_summary(uid) or "") <= 20


def test_custom_blocks_are_untouched(make_memory: MakeMemory) -> None:
    sid = _uid()
    memory = make_memory(subject_id=sid)
    memory.initialize_memory("preferences", "Known user preferences.", value="Likes: tea")
    memory.initialize_memory("human", "Who the user is", value="")
    runs = [
        memory.add_messages([{"role": "user", "content": "I love coffee and my name is Zed"}]),
        memory.add_messages([{"role": "user", "content": "I hate tea"}]),
    ]
    for run in runs:
        memory.wait_for_run(run, timeout=10)
    assert memory.get_memory("preferences") == "Likes: tea"
    assert len(memory.block_history("preferences")) == 1  # never rewritten
    assert "Name: Zed" in (memory.get_memory("human") or "")
    assert memory.get_memory("summary") is None  # no summary block: none is created


def test_a_subject_without_default_blocks_learns_nothing_and_completes(memory: Memory) -> None:
    sid = _uid()
    run = memory.add_messages_for_subject(sid, [{"role": "user", "content": "My name is Nobody"}])
    memory.wait_for_run(run, timeout=10)
    assert memory.get_run(run).status == "completed"
    assert memory.list_blocks(sid) == []


def test_deterministic_across_stores(make_memory: MakeMemory, tmp_path) -> None:
    texts = [
        "Hi, my name is Priya",
        "I live in Pune and I work at Infosys",
        "I love cricket. I hate traffic",
        "my favourite food is dosa",
    ]
    values = []
    for n in range(2):
        m = make_memory(path=str(tmp_path / f"store{n}.db"))
        _learn(m, "same-user", *texts)
        values.append((m.get_user_memory("same-user"), m.get_summary("same-user")))
        m.close()
    assert values[0] == values[1]
    facts = dict(line.split(": ", 1) for line in (values[0][0] or "").split("\n"))
    assert facts["Employer"] == "Infosys" and facts["Favorite food"] == "dosa"


def test_learner_pass_is_deterministic_and_pure() -> None:
    blocks = [
        Block(id="b1", label="human", description="H", value="Name: Old", limit=1000, subject_id="s"),
        Block(id="b2", label="summary", description="S", value="", limit=500, subject_id="s"),
        Block(id="b3", label="notes", description="N", value="keep", limit=100, subject_id="s"),
    ]
    msgs = [
        StoredMessage(id=f"m{i}", role="user", content=c, created_at=T0)
        for i, c in enumerate(["My name is New", "I enjoy chess"])
    ]
    inp = PassInput("s", blocks, msgs, T0)
    first, second = OfflineLearner().learn(inp), OfflineLearner().learn(inp)
    assert first.values == second.values
    assert first.values["human"] == "Name: New\nLikes: chess"
    assert "notes" not in first.values
    assert first.llm_calls == 0
    assert blocks[0].value == "Name: Old"  # the input is not modified


def test_a_fact_without_room_is_refused_counted_and_named_never_truncated(memory: Memory, caplog) -> None:
    uid = _uid()
    memory.initialize_user_memory(uid, user_context_block_char_limit=15, user_context_block_value="Name: Al")
    with caplog.at_level("WARNING", logger="ai_memory_sdk.learners.offline"):
        _learn(memory, uid, "I live in Llanfairpwllgwyngyll")
    assert memory.get_user_memory(uid) == "Name: Al"  # the standing fact stays, the new one is not cut to fit
    summary = memory.get_summary(uid) or ""
    assert "Not kept (no room in human): location Llanfairpwllgwyngyll." in summary, summary
    assert any("no room" in r.getMessage() and "Llanfairpwllgwyngyll" in r.getMessage() for r in caplog.records)


def test_application_text_in_human_is_kept(memory: Memory) -> None:
    uid = _uid()
    memory.initialize_user_memory(uid, user_context_block_value="Prefers tea\nVegetarian")
    _learn(memory, uid, "My name is Bob")
    value = memory.get_user_memory(uid) or ""
    assert "Name: Bob" in value
    assert "Prefers tea" in value and "Vegetarian" in value


# -- every standing fact is kept while the block has room ---------------------------------------


def _block(label: str, value: str, limit: int) -> Block:
    return Block(id=f"b-{label}", label=label, description=label, value=value, limit=limit, subject_id="s")


def _said(*texts: str, role: str = "user", at: datetime = T0) -> list[StoredMessage]:
    return [
        StoredMessage(id=f"m{i}", role=role, content=t, created_at=at + timedelta(seconds=i))
        for i, t in enumerate(texts)
    ]


def test_sixty_batches_keep_all_sixty_likes(memory: Memory) -> None:
    uid = _uid()
    for i in range(60):
        _learn(memory, uid, f"These days I love hobby{i}.", at=T0 + timedelta(hours=i))
    facts = _facts(memory, uid)
    assert facts["Likes"].split("; ") == [f"hobby{i}" for i in range(60)]  # none dropped, oldest first
    assert len(memory.get_user_memory(uid) or "") <= 10000


def test_a_full_human_block_refuses_what_does_not_fit_and_counts_it() -> None:
    human = _block("human", "Name: Al\nLikes: tea", 40)
    out = OfflineLearner().learn(
        PassInput("s", [human], _said("I love jazz.", "I live in Llanfairpwllgwyngyll.", "I love chess."), T0)
    )
    assert out.values["human"] == "Name: Al\nLikes: tea; jazz; chess" and len(out.values["human"]) <= 40
    assert out.limit_refusals == 1  # the location did not fit; what fitted was learned
    assert {"op": "refused", "label": "human", "refused": ["location Llanfairpwllgwyngyll"]} in out.trace


def test_repeated_lines_are_merged_to_make_room_within_the_pass() -> None:
    value = "Vegetarian\nvegetarian\nVEGETARIAN\nName: Al"
    human = _block("human", value, len(value) + 5)
    out = OfflineLearner().learn(PassInput("s", [human], _said("I speak Welsh."), T0))
    assert out.values["human"] == "Vegetarian\nName: Al\nLanguage: Welsh" and out.limit_refusals == 0


# -- the summary says what each batch was about, and folds rather than drops ---------------------


def test_a_batch_without_facts_is_quoted_by_its_first_sentence(memory: Memory) -> None:
    uid = _uid()
    text = "What a week it has been. " + "Then a lot of other things happened, one after another. " * 5
    _learn(memory, uid, text)
    assert memory.get_summary(uid) == '2024-06-01: 1 message(s); user: "What a week it has been.".'


def test_a_long_first_sentence_is_cut_at_a_word_with_an_ellipsis() -> None:
    summary = _block("summary", "", 1000)
    out = OfflineLearner().learn(PassInput("s", [summary], _said("lorem ipsum " * 40), T0))
    quote = out.values["summary"].split('"')[1]
    assert quote.endswith("…") and len(quote) <= 100 and quote[:-1].split()[-1] in ("lorem", "ipsum")


def test_a_huge_message_gets_one_meaningful_summary_line_and_its_facts(memory: Memory) -> None:
    uid = _uid()
    _learn(memory, uid, "I'm a baker.")
    filler = "word " * 600_000  # 3 MB
    text = "Here is my novel draft, chapter one. " + filler + " By the way, I live in Lisbon. " + filler
    _learn(memory, uid, text, at=T0 + timedelta(days=1))
    summary = memory.get_summary(uid) or ""
    assert "(part" not in summary and "word word" not in summary, summary[:300]
    assert summary.split("\n") == [
        "2024-06-01: 1 message(s); user: job baker.",
        '2024-06-02: 1 message(s); user: "Here is my novel draft, chapter one." (long message).',
        "2024-06-02: long message continued; user: location Lisbon.",
    ]
    assert _facts(memory, uid) == {"Job": "baker", "Location": "Lisbon"}


def test_old_summary_lines_fold_into_one_counted_line(memory: Memory) -> None:
    uid = _uid()
    memory.initialize_user_memory(uid, summary_block_char_limit=400)
    for i in range(30):
        _learn(memory, uid, f"I love hobby{i}.", at=T0 + timedelta(hours=i))
    summary = memory.get_summary(uid) or ""
    lines = summary.split("\n")
    assert len(summary) <= 400
    fold = re.fullmatch(r"2024-06-01(?: to 2024-06-0[12])?: (\d+) entries, (\d+) messages; about: (.*)\.", lines[0])
    assert fold, lines[0]
    assert int(fold[1]) + len(lines) - 1 == 30 and int(fold[2]) == int(fold[1])  # every batch is counted
    assert lines[-1] == "2024-06-02: 1 message(s); user: likes hobby29."
    folded = int(fold[1])  # hobby0 .. hobby{folded - 1}; the newest of them are named, the older counted
    assert fold[3].endswith(f"likes hobby{folded - 2}, likes hobby{folded - 1}"), fold[3]
    shown = fold[3].split(", ")
    earlier = int(shown.pop(0)[1:].split()[0]) if shown[0].startswith("+") else 0
    assert len(shown) + earlier == folded  # the items it cannot show are counted


def test_a_fold_line_names_its_newest_topics_and_reads_older_fold_lines() -> None:
    """After years of batches the folded line names what came last, not the long-superseded first facts."""
    old_fold = "2020-01-01 to 2020-12-31: 300 entries, 900 messages; about: location Paris, age 30, +298 more."
    notes = [f"2021-01-{d:02d}: 3 message(s); user: location City{d}." for d in range(1, 29)]
    summary = _block("summary", "\n".join([old_fold, *notes]), 1000)
    out = OfflineLearner().consolidate(PassInput("s", [summary], [], T0))
    lines = out.values["summary"].split("\n")
    fold = re.fullmatch(
        r"2020-01-01 to 2021-01-(\d\d): (\d+) entries, (\d+) messages; about: \+(\d+) earlier, (.*)\.", lines[0]
    )
    assert fold, lines[0]
    last_folded = int(fold[1])
    assert lines[1].startswith(f"2021-01-{last_folded + 1:02d}: ")
    assert int(fold[2]) == 300 + last_folded and int(fold[3]) == 900 + 3 * last_folded  # nothing lost from the count
    named = fold[5].split(", ")
    assert named[-1] == f"location City{last_folded}" and "location Paris" not in named
    assert int(fold[4]) + len(named) == 300 + last_folded  # every topic named or counted
    assert len(out.values["summary"]) <= 500


# -- consolidation -------------------------------------------------------------------------------


def test_consolidation_merges_keys_lists_and_dates_without_dropping_a_fact() -> None:
    human = _block(
        "human",
        "Name: Al\nLikes: tea\nLocation: Paris (since 2025-03-01)\nPrefers short answers\nname: Alice\n"
        "likes: jazz;  Tea\nlocation: Rome (since 2024-01-01)\nprefers  short answers\nPet: cat",
        10000,
    )
    notes = _block("notes", "call mum\nCall Mum\nbuy milk", 100)
    out = OfflineLearner().consolidate(PassInput("s", [human, notes], [], T0))
    assert out.values["human"] == (
        "Prefers short answers\nName: Alice\nLikes: jazz; Tea\nLocation: Paris (since 2025-03-01)\nPet: cat"
    )
    assert out.values["notes"] == "call mum\nbuy milk"
    assert [op.tool for op in out.ops] == ["memory_rethink", "memory_rethink"] and out.llm_calls == 0
    assert [t["label"] for t in out.trace] == ["human", "notes"] and json.dumps(out.trace)
    again = OfflineLearner().consolidate(
        PassInput("s", [human.model_copy(update={"value": out.values["human"]})], [], T0)
    )
    assert again.values == {}  # already consolidated: nothing to do


def test_consolidation_folds_the_summary_toward_half_its_limit() -> None:
    notes = [f"2024-06-{1 + i // 10:02d}: 2 message(s); user: likes hobby{i}." for i in range(25)]
    summary = _block("summary", "\n".join(notes), 1000)
    assert len(summary.value) > 900
    out = OfflineLearner().consolidate(PassInput("s", [summary], [], T0))
    lines = out.values["summary"].split("\n")
    assert len(out.values["summary"]) <= 500 and lines[-1] == notes[-1]
    fold = re.fullmatch(r"2024-06-01 to 2024-06-0\d: (\d+) entries, (\d+) messages; about: (.*)\.", lines[0])
    assert fold and int(fold[1]) + len(lines) - 1 == 25 and int(fold[2]) == 2 * int(fold[1])


def test_offline_trace_lists_the_applied_ops() -> None:
    blocks = [_block("human", "", 1000), _block("summary", "", 500)]
    out = OfflineLearner().learn(PassInput("s", blocks, _said("My name is Bo.", "I love tea."), T0))
    assert out.trace == [
        {"op": "memory_rethink", "label": "human", "chars": [0, 19], "learned": ["name Bo", "likes tea"]},
        {"op": "memory_rethink", "label": "summary", "chars": [0, len(out.values["summary"])]},
    ]
    assert len(json.dumps(out.trace)) < 300


def test_split_for_passes_marks_parts_and_drops_nothing() -> None:
    text = " ".join(f"w{i}" for i in range(60))  # 229 characters
    msgs = [*_said("short one"), *_said(text), *_said("last")]
    passes = split_for_passes(msgs, 64)
    pieces = [m.content for p in passes for m in p]
    assert all(sum(len(m.content) for m in p) <= 64 for p in passes)
    parts = [p for p in pieces if p.startswith("(part ")]
    n = len(parts)
    assert n > 1 and all(p.startswith(f"(part {i}/{n}) ") for i, p in enumerate(parts, 1))
    assert "".join(p.split(") ", 1)[1] for p in parts) == text  # nothing lost
    assert all(p.endswith(" ") for p in parts[:-1])  # cut between words
    assert pieces[0] == "short one" and pieces[-1] == "last"
