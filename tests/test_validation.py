"""The input rules of docs/api.md: a bad input is refused with an error naming what is wrong; nothing of it is stored."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from ai_memory_sdk import Memory

MakeMemory = Callable[..., Memory]
OK = {"role": "user", "content": "fine"}


def _uid(prefix: str = "user") -> str:
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


# (batch, exception type, regex the message must match: the index and the field)
BAD_BATCHES: list[tuple[str, Any, type[Exception], str]] = [
    ("not a list", "hello", TypeError, r"messages must be a list"),
    ("a dict", {"role": "user", "content": "x"}, TypeError, r"messages must be a list"),
    ("empty", [], ValueError, r"at least one message"),
    ("not a dict", [OK, "hello"], TypeError, r"messages\[1\]"),
    ("missing role", [OK, {"content": "x"}], ValueError, r"messages\[1\]\.role"),
    ("bad role", [OK, OK, {"role": "robot", "content": "x"}], ValueError, r"messages\[2\]\.role"),
    ("missing content", [{"role": "user"}], ValueError, r"messages\[0\]\.content"),
    ("None content on user", [OK, {"role": "user", "content": None}], ValueError, r"messages\[1\]\.content"),
    (
        "None content, assistant w/o tool_calls",
        [{"role": "assistant", "content": None}],
        ValueError,
        r"messages\[0\]\.content",
    ),
    (
        "None content, empty tool_calls",
        [{"role": "assistant", "content": None, "tool_calls": []}],
        ValueError,
        r"messages\[0\]\.content",
    ),
    ("content int", [{"role": "user", "content": 42}], TypeError, r"messages\[0\]\.content"),
    (
        "content part without type",
        [{"role": "user", "content": [{"text": "x"}]}],
        TypeError,
        r"messages\[0\]\.content\[0\]",
    ),
    (
        "content part text not str",
        [{"role": "user", "content": [{"type": "text", "text": 3}]}],
        TypeError,
        r"messages\[0\]\.content\[0\]\.text",
    ),
    ("name not str", [OK, {"role": "user", "content": "x", "name": 5}], TypeError, r"messages\[1\]\.name"),
    ("metadata not dict", [{"role": "user", "content": "x", "metadata": "m"}], TypeError, r"messages\[0\]\.metadata"),
    (
        "metadata not JSON",
        [{"role": "user", "content": "x", "metadata": {"s": {1, 2}}}],
        TypeError,
        r"messages\[0\]\.metadata",
    ),
    (
        "metadata NaN",
        [{"role": "user", "content": "x", "metadata": {"n": float("nan")}}],
        TypeError,
        r"messages\[0\]\.metadata",
    ),
    (
        "created_at garbage",
        [OK, {"role": "user", "content": "x", "created_at": "yesterday"}],
        ValueError,
        r"messages\[1\]\.created_at",
    ),
    (
        "created_at number",
        [{"role": "user", "content": "x", "created_at": 1700000000}],
        TypeError,
        r"messages\[0\]\.created_at",
    ),
    ("tags a string", [{"role": "user", "content": "x", "tags": "travel"}], TypeError, r"messages\[0\]\.tags"),
    ("tag empty", [{"role": "user", "content": "x", "tags": [""]}], ValueError, r"messages\[0\]\.tags\[0\]"),
    (
        "tag too long",
        [{"role": "user", "content": "x", "tags": ["ok", "t" * 65]}],
        ValueError,
        r"messages\[0\]\.tags\[1\]",
    ),
    ("tag not str", [{"role": "user", "content": "x", "tags": [1]}], TypeError, r"messages\[0\]\.tags\[0\]"),
    (
        "unknown field",
        [OK, OK, OK, {"role": "user", "content": "x", "colour": "red"}],
        ValueError,
        r"messages\[3\].*colour",
    ),
]


@pytest.mark.parametrize("batch,exc,pattern", [b[1:] for b in BAD_BATCHES], ids=[b[0] for b in BAD_BATCHES])
def test_bad_batch_refused_whole(make_memory: MakeMemory, batch: Any, exc: type[Exception], pattern: str) -> None:
    memory = make_memory(background=False)
    uid = _uid()
    memory.add_messages(uid, [OK])
    before_msgs, before_runs = len(memory.get_messages(uid)), len(memory.list_runs(uid))
    with pytest.raises(exc, match=pattern):
        memory.add_messages(uid, batch)
    with pytest.raises(exc, match=pattern):
        memory.add_messages_for_subject(uid, batch)
    assert len(memory.get_messages(uid)) == before_msgs == 1
    assert len(memory.list_runs(uid)) == before_runs == 1
    # a refused batch for a new user creates nothing either
    newcomer = _uid()
    with pytest.raises(exc, match=pattern):
        memory.add_messages(newcomer, batch)
    assert memory.get_memory_agent_id(newcomer) is None
    assert memory.list_runs(newcomer) == [] and memory.get_messages(newcomer) == []


def test_valid_messages_are_normalised(make_memory: MakeMemory) -> None:
    memory = make_memory(background=False)
    uid = _uid()
    said = datetime(2024, 5, 1, 8, 30, tzinfo=timezone(timedelta(hours=2)))
    tool_calls = [{"id": "call_1", "type": "function", "function": {"name": "lookup", "arguments": "{}"}}]
    batch = [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "first part"},
                {"type": "image_url", "image_url": {"url": "https://x.invalid/a.png"}},
                {"type": "text", "text": "second part"},
            ],
        },
        {"role": "assistant", "content": None, "tool_calls": tool_calls},
        {"role": "tool", "content": "42", "tool_call_id": "call_1", "metadata": {"source": "calc"}},
        {"role": "user", "content": "zulu time", "created_at": "2024-05-01T06:30:00Z"},
        {"role": "user", "content": "offset time", "created_at": said},
        {"role": "user", "content": "naive time", "created_at": datetime(2024, 5, 1, 6, 30)},
        {"role": "developer", "content": "dev note", "name": "ops", "tags": ["internal"]},
        {"role": "system", "content": "sys", "created_at": None, "metadata": None, "tags": None},
        {"role": "function", "content": "fn result", "name": "lookup"},
    ]
    run = memory.add_messages(uid, batch)
    msgs = memory.get_messages(uid)
    by_content = {m.content: m for m in msgs}
    assert len(msgs) == len(batch) and all(m.run_id == run for m in msgs)

    parts = next(m.content for m in msgs if "first part" in m.content)
    assert parts.index("first part") < parts.index("second part")
    assert "image" not in parts and "x.invalid" not in parts

    assistant = next(m for m in msgs if m.role == "assistant")
    assert assistant.content == "" and assistant.metadata["tool_calls"] == tool_calls
    tool = by_content["42"]
    assert tool.metadata == {"source": "calc", "tool_call_id": "call_1"}

    utc = datetime(2024, 5, 1, 6, 30, tzinfo=timezone.utc)
    assert by_content["zulu time"].created_at == utc
    assert by_content["offset time"].created_at == utc
    assert by_content["naive time"].created_at == utc  # naive times are UTC
    assert by_content["dev note"].name == "ops"
    assert by_content["sys"].metadata == {}
    assert by_content["fn result"].role == "function"


def test_any_batch_size_is_accepted_and_learned_in_full(make_memory: MakeMemory) -> None:
    memory = make_memory(max_pass_chars=1000)
    uid = _uid()
    long = "word " * 1000  # 5,000 characters: more than one pass
    batch = [{"role": "user", "content": f"note {i}"} for i in range(300)] + [{"role": "user", "content": long}]
    run = memory.add_messages(uid, batch)
    memory.wait_for_run(run, timeout=30)
    msgs = memory.get_messages(uid)
    assert len(msgs) == 301 and msgs[-1].content == long  # stored whole, never truncated


@pytest.mark.parametrize(
    "bad,exc",
    [
        ("", ValueError),
        ("x" * 257, ValueError),
        ("a\nb", ValueError),
        ("tab\there", ValueError),
        ("nul\x00", ValueError),
        (42, TypeError),
        (None, TypeError),
    ],
)
def test_subject_id_rules(memory: Memory, bad: Any, exc: type[Exception]) -> None:
    with pytest.raises(exc, match=r"user_id|subject_id"):
        memory.add_messages_for_subject(bad, [OK])
    with pytest.raises(exc, match="user_id"):
        memory.initialize_user_memory(bad)
    if bad is not None:  # None means "the bound subject" in the subject API
        with pytest.raises(exc, match="subject_id"):
            memory.initialize_subject(bad)
    with pytest.raises(exc):
        memory.get_user_memory(bad)


@pytest.mark.parametrize("good", ["alice@example.com", "x" * 256, "ünïcödé 用户", "with space/and:colon", "1"])
def test_subject_id_allowed(make_memory: MakeMemory, good: str) -> None:
    memory = make_memory(background=False)
    memory.initialize_user_memory(good)
    assert memory.get_user_memory(good) == ""
    memory.add_messages(good, [OK])
    assert [m.content for m in memory.get_messages(good)] == ["fine"]


@pytest.mark.parametrize(
    "bad,exc",
    [
        ("", ValueError),
        ("1abc", ValueError),
        ("a b", ValueError),
        ("<x>", ValueError),
        ("a" * 65, ValueError),
        ("naïve", ValueError),
        ("-x", ValueError),
        (7, TypeError),
    ],
)
def test_label_rules(memory: Memory, bad: Any, exc: type[Exception]) -> None:
    sid = _uid("labels")
    with pytest.raises(exc, match="label"):
        memory.initialize_memory(bad, "desc", subject_id=sid)
    with pytest.raises(exc, match="label"):
        memory.get_memory(bad, subject_id=sid)
    with pytest.raises(exc, match="label"):
        memory.set_memory(bad, "v", subject_id=sid)
    assert memory.list_blocks(sid) == []


@pytest.mark.parametrize("good", ["a", "_x", "A" * 64, "v1.2-beta_3", "human"])
def test_label_allowed(memory: Memory, good: str) -> None:
    sid = _uid("labels")
    memory.initialize_memory(good, "desc", value="v", subject_id=sid)
    assert memory.get_memory(good, subject_id=sid) == "v"


def test_description_char_limit_and_value_rules(memory: Memory) -> None:
    sid = _uid("blocks")
    with pytest.raises(ValueError, match=r"user_context_block_prompt|description"):
        memory.initialize_memory("b", "d" * 2001, subject_id=sid)
    with pytest.raises(TypeError, match="description"):
        memory.initialize_memory("b", None, subject_id=sid)  # type: ignore[arg-type]
    memory.initialize_memory("at_limit", "d" * 2000, subject_id=sid)
    for bad, exc in (
        (0, ValueError),
        (-5, ValueError),
        (1_000_001, ValueError),
        (True, TypeError),
        ("10", TypeError),
        (10.0, TypeError),
    ):
        with pytest.raises(exc, match="char_limit"):
            memory.initialize_memory("b", "d", char_limit=bad, subject_id=sid)
    memory.initialize_memory("one", "d", value="x", char_limit=1, subject_id=sid)
    memory.initialize_memory("big", "d", char_limit=1_000_000, subject_id=sid)
    with pytest.raises(ValueError, match="limit"):
        memory.initialize_memory("b", "d", value="xx", char_limit=1, subject_id=sid)
    with pytest.raises(TypeError, match="value"):
        memory.initialize_memory("b", "d", value=None, subject_id=sid)  # type: ignore[arg-type]
    assert [b.label for b in memory.list_blocks(sid)] == ["at_limit", "one", "big"]

    uid = _uid()
    with pytest.raises(ValueError, match="user_context_block_value"):
        memory.initialize_user_memory(uid, user_context_block_char_limit=3, user_context_block_value="abcd")
    with pytest.raises(ValueError, match="summary_block_char_limit"):
        memory.initialize_user_memory(uid, summary_block_char_limit=0)
    with pytest.raises(ValueError, match=r"user_context_block_prompt|description"):
        memory.initialize_user_memory(uid, user_context_block_prompt="p" * 2001)
    assert memory.get_memory_agent_id(uid) is None  # nothing created by a refused call


def test_query_tags_and_limit_rules(memory: Memory) -> None:
    uid = _uid()
    memory.wait_for_run(
        memory.add_messages(uid, [{"role": "user", "content": "I love cats"}], skip_vector_storage=False)
    )
    for bad in ("", "   "):
        with pytest.raises(ValueError, match="query"):
            memory.search(uid, bad)
    with pytest.raises(TypeError, match="query"):
        memory.search(uid, None)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="tags"):
        memory.search(uid, "cats", tags="user")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"tags\[1\]"):
        memory.search(uid, "cats", tags=["user", ""])
    with pytest.raises(ValueError, match=r"tags\[0\]"):
        memory.search(uid, "cats", tags=["t" * 65])
    for bad, exc in ((0, ValueError), (-1, ValueError), (True, TypeError), ("3", TypeError)):
        with pytest.raises(exc, match="limit"):
            memory.search(uid, "cats", limit=bad)
        with pytest.raises(exc, match="limit"):
            memory.get_messages(uid, limit=bad)
    with pytest.raises(ValueError, match="tag_match_mode"):
        memory.search_passages(uid, "cats", tag_match_mode="some")
    with pytest.raises(ValueError, match="start"):
        memory.search_passages(uid, "cats", start="not a date")
    with pytest.raises(ValueError, match="before"):
        memory.get_messages(uid, before="soon")
    assert memory.search(uid, "cats") == ["I love cats"]


def test_add_files_input_rules(memory: Memory, tmp_path: Any) -> None:
    sid = _uid("files")
    good = tmp_path / "a.txt"
    good.write_text("hello", encoding="utf-8")
    binary = tmp_path / "b.bin"
    binary.write_bytes(b"\xff\xfe\x00\x80")
    with pytest.raises(TypeError, match="files"):
        memory.add_files("a.txt")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="at least one"):
        memory.add_files([])
    with pytest.raises(ValueError, match=r"files\[0\]\.file_path"):
        memory.add_files([{"label": "x", "subject_id": sid}])
    with pytest.raises(ValueError, match=r"files\[0\].*colour"):
        memory.add_files([{"file_path": str(good), "colour": "red", "subject_id": sid}])
    with pytest.raises(ValueError, match=r"files\[1\]"):
        memory.add_files([{"file_path": str(good), "subject_id": sid}, {"file_path": str(binary), "subject_id": sid}])
    with pytest.raises(ValueError, match="label"):
        memory.add_files([{"file_path": str(good), "label": "bad label", "subject_id": sid}])
    with pytest.raises(ValueError, match="No subject_id"):
        memory.add_files([{"file_path": str(good)}])
    assert memory.get_messages(sid) == [] and memory.list_runs(sid) == []


def test_unknown_option_and_bad_settings() -> None:
    with pytest.raises(TypeError, match="colour"):
        Memory(path=":memory:", colour="red")
    with pytest.raises(ValueError, match="learner"):
        Memory(path=":memory:", learner="magic")
    with pytest.raises(ValueError, match="engine"):
        Memory(path=":memory:", engine="cloud")
