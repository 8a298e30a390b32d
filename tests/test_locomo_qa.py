"""The LoCoMo QA harness (benchmarks/locomo_qa.py): ingestion, prompts, judging and aggregation, end to end
against the scripted OpenAI-compatible server with scripted answers and verdicts."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

import pytest
from support.openai_server import ScriptedOpenAI, fail, reply

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import locomo_qa

# Questions of every category (5, adversarial, must be left out).
QA: list[dict[str, Any]] = [
    {"question": "What is the name of Ana's cat?", "answer": "Miso", "evidence": ["D1:1"], "category": 4},
    {"question": "When did Ana adopt her cat?", "answer": "7 May 2023", "evidence": ["D1:1"], "category": 2},
    {"question": "What did Ben make for Ana?", "answer": "A vase", "evidence": ["D2:2"], "category": 1},
    {"question": "In which year did Ben take pottery?", "answer": 2023, "evidence": ["D1:2"], "category": 2},
    {"question": "Would Ana like a dog?", "answer": "Likely no", "evidence": [], "category": 3},
    {"question": "What did Ana break?", "adversarial_answer": "a plate", "evidence": ["D2:1"], "category": 5},
]
# A LoCoMo-shaped conversation: two sessions, and the questions above.
SAMPLE = {
    "sample_id": "t-1",
    "conversation": {
        "speaker_a": "Ana",
        "speaker_b": "Ben",
        "session_1_date_time": "1:56 pm on 8 May, 2023",
        "session_1": [
            {"speaker": "Ana", "dia_id": "D1:1", "text": "I adopted a cat called Miso yesterday."},
            {"speaker": "Ben", "dia_id": "D1:2", "text": "Congrats! I just started pottery classes."},
        ],
        "session_2_date_time": "9:00 am on 2 June, 2023",
        "session_2": [
            {"speaker": "Ana", "dia_id": "D2:1", "text": "Miso broke my favourite vase, ha."},
            {
                "speaker": "Ben",
                "dia_id": "D2:2",
                "text": "I made you a new one in class.",
                "blip_caption": "a blue vase",
            },
        ],
    },
    "qa": QA,
}
# The scripted judge: which answers it calls CORRECT, per system; one reply it cannot read (counted WRONG).
CORRECT = {
    "memory": {"What is the name of Ana's cat?", "What did Ben make for Ana?"},
    "full_context": {"What is the name of Ana's cat?", "When did Ana adopt her cat?", "What did Ben make for Ana?"},
}
UNREADABLE = ("full_context", "Would Ana like a dog?")


def _data(tmp_path: Path) -> Path:
    path = tmp_path / "locomo_sample.json"
    path.write_text(json.dumps([SAMPLE]), encoding="utf-8")
    return path


def _responder(req: dict[str, Any]) -> Any:
    """Memory passes insert a fact; answers name their system and question; verdicts follow CORRECT."""
    messages = req["messages"]
    if req.get("tools"):
        if any(m["role"] == "tool" for m in messages):
            return reply(tool_calls=[("memory_finish_edits", {})])
        fact = ("memory_insert", {"label": "human", "new_str": "Has a cat called Miso", "insert_line": -1})
        return reply(tool_calls=[fact, ("memory_finish_edits", {})])
    text = messages[-1]["content"]
    if "Generated answer:" in text:
        graded = re.search(r"^Generated answer: (\w+) answers (.*)$", text, re.M)
        assert graded, text
        system, question = graded.groups()
        if (system, question) == UNREADABLE:
            return reply("I cannot decide.")
        label = "CORRECT" if question in CORRECT[system] else "WRONG"
        return reply(json.dumps({"reasoning": "scripted", "label": label}))
    system = "memory" if text.startswith("Memory blocks:") else "full_context"
    asked = re.search(r"^Question: (.*)$", text, re.M)
    assert asked, text
    return reply(f"{system} answers {asked.group(1)}")


def test_parse_verdict_reads_the_label_and_nothing_else() -> None:
    assert locomo_qa.parse_verdict('{"reasoning": "same date", "label": "CORRECT"}') is True
    assert locomo_qa.parse_verdict('```json\n{"label": "wrong"}\n```') is False
    assert locomo_qa.parse_verdict("The answer names the same cat. CORRECT") is True
    assert locomo_qa.parse_verdict("Not sure: CORRECT or WRONG") is None
    assert locomo_qa.parse_verdict('{"label": "maybe"}') is None
    assert locomo_qa.parse_verdict("") is None


def test_the_harness_answers_judges_and_aggregates_by_category(
    openai_server: ScriptedOpenAI, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    openai_server.responder = _responder
    out = tmp_path / "qa.json"
    argv = ["--base-url", openai_server.base_url, "--model", "m", "--judge-model", "j", "--data", str(_data(tmp_path))]
    assert locomo_qa.main([*argv, "--embedder", "none", "--k", "3", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    result = json.loads(out.read_text(encoding="utf-8"))

    questions = [q for q in QA if q["category"] != 5]
    by_question = {g["question"]: g for g in result["questions"]}
    assert sorted(by_question) == sorted(q["question"] for q in questions)  # category 5 left out
    assert by_question["In which year did Ben take pottery?"]["gold"] == "2023"  # a number, as text
    for name in locomo_qa.SYSTEMS:
        expected = {q["question"] for q in questions if q["question"] in CORRECT[name]}
        got = {g["question"] for g in result["questions"] if g["correct"][name]}
        assert got == expected, name
        assert all(g["answers"][name] == f"{name} answers {g['question']}" for g in result["questions"])
        by_category = result["systems"][name]["by_category"]
        for cat, label in locomo_qa.CATEGORIES.items():
            in_cat = [q for q in questions if q["category"] == cat]
            right = sum(q["question"] in CORRECT[name] for q in in_cat)
            assert by_category[f"{cat} {label}"]["correct"] == right and by_category[f"{cat} {label}"]["total"] == len(
                in_cat
            )
        assert result["systems"][name]["overall"] == {
            "correct": len(expected),
            "total": 5,
            "accuracy": round(100 * len(expected) / 5, 1),
        }
    assert result["systems"]["full_context"]["unparsed_verdicts"] == 1
    assert by_question["Would Ana like a dog?"]["unparsed"] == {"full_context": "I cannot decide."}

    # The stable printed format.
    assert re.search(r"^overall\s+40\.0% \(2/5\)\s+60\.0% \(3/5\)$", printed, re.M), printed
    assert re.search(r"^2 temporal\s+0\.0% \(0/2\)\s+50\.0% \(1/2\)$", printed, re.M), printed
    assert re.search(r"^prompt tokens/q\s+[\d,]+\s+[\d,]+$", printed, re.M), printed
    assert "unparsed verdicts: memory 0, full context 1 (counted WRONG)" in printed
    assert "Letta          74.0%" in printed and "CC BY-NC 4.0" in printed

    # What was sent: one learning pass per session; answers from blocks + passages, or the whole conversation.
    chats = [r.json for r in openai_server.chat_requests]
    learning = [c for c in chats if c.get("tools")]
    assert len(learning) == 2 and result["ingestion"]["calls"] == 2
    assert result["ingestion"]["prompt_tokens"] == sum(
        len(r.body) // 4 + (len(r.body) % 4 > 0) for r in openai_server.chat_requests if r.json.get("tools")
    )
    answers = [c for c in chats if not c.get("tools") and c["model"] == "m"]
    judged = [c for c in chats if c["model"] == "j"]
    assert len(answers) == len(judged) == 10 and result["answering"]["calls"] == result["judging"]["calls"] == 10
    assert all(c["temperature"] == 0 for c in answers + judged)
    assert all(c["response_format"] == {"type": "json_object"} for c in judged)
    memory_prompt = next(
        c["messages"][1]["content"]
        for c in answers
        if c["messages"][1]["content"].startswith("Memory blocks:")
        and "name of Ana's cat" in c["messages"][1]["content"]
    )
    assert "Has a cat called Miso" in memory_prompt and '<companion description="Details about Ben' in memory_prompt
    assert "[2023-05-08 13:56] Ana: I adopted a cat called Miso yesterday." in memory_prompt
    assert len(re.findall(r"^\[\d{4}-\d\d-\d\d \d\d:\d\d\] ", memory_prompt, re.M)) <= 3  # --k 3
    full_prompt = next(
        c["messages"][1]["content"] for c in answers if not c["messages"][1]["content"].startswith("Memory")
    )
    assert "[2023-06-02 09:00] Ben: I made you a new one in class. [shares a photo: a blue vase]" in full_prompt
    assert "Ana and Ben" in answers[0]["messages"][0]["content"]
    gold_line = next(c["messages"][0]["content"] for c in judged if "name of Ana's cat" in c["messages"][0]["content"])
    assert "Gold answer: Miso\n" in gold_line


def test_no_baseline_leaves_the_full_context_column_empty(openai_server: ScriptedOpenAI, tmp_path: Path) -> None:
    openai_server.responder = _responder
    convs = locomo_qa.load(_data(tmp_path))
    result = locomo_qa.evaluate(
        convs, base_url=openai_server.base_url, api_key="k", model="m", judge_model="j", embedder="none", baseline=False
    )
    assert result["systems"]["full_context"]["overall"] == {"correct": 0, "total": 0, "accuracy": None}
    assert result["answering"]["calls"] == 5 and result["systems"]["memory"]["overall"]["correct"] == 2
    lines = locomo_qa.report_lines(result)
    assert any(re.fullmatch(r"overall\s+40\.0% \(2/5\)\s+-", line) for line in lines), lines


def test_an_endpoint_without_json_mode_is_asked_again_without_it(openai_server: ScriptedOpenAI) -> None:
    openai_server.script(
        fail(400, {"error": {"message": "'response_format' of type 'json_object' is not supported", "type": "x"}}),
        reply('{"label": "CORRECT"}'),
        reply('{"label": "WRONG"}'),
    )
    chat = locomo_qa.Chat(openai_server.base_url, "k", "j")
    assert chat([{"role": "user", "content": "judge"}], json_mode=True)[0] == '{"label": "CORRECT"}'
    assert chat([{"role": "user", "content": "judge"}], json_mode=True)[0] == '{"label": "WRONG"}'
    sent = [r.json for r in openai_server.chat_requests]
    assert ["response_format" in s for s in sent] == [True, False, False]


def test_without_an_endpoint_the_harness_asks_for_one(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        locomo_qa.main([])
    assert exc.value.code == 2 and "--base-url and --model are required" in capsys.readouterr().err


def test_failed_learning_runs_are_counted_and_every_question_still_answered(
    openai_server: ScriptedOpenAI, tmp_path: Path
) -> None:
    def never_finishes(req: dict[str, Any]) -> Any:
        if req.get("tools"):  # a weak model: an edit, never memory_finish_edits
            return reply(tool_calls=[("memory_insert", {"label": "human", "new_str": "x", "insert_line": -1})])
        return _responder(req)

    openai_server.responder = never_finishes
    result = locomo_qa.evaluate(
        locomo_qa.load(_data(tmp_path)),
        base_url=openai_server.base_url,
        api_key="k",
        model="m",
        judge_model="j",
        embedder="none",
        memory_options={"max_steps": 1},
    )
    assert result["ingestion"]["failed_runs"] == 2 and result["ingestion"]["calls"] == 2
    assert result["systems"]["memory"]["overall"]["total"] == 5 and result["answering"]["calls"] == 10
    assert "runs failed: 2" in "\n".join(locomo_qa.report_lines(result))
