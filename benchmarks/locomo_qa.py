"""LoCoMo question answering end to end through the public API, judged by an LLM (the "J" score).

For each LoCoMo conversation, one subject:

1. ingest: every turn becomes a message as the data's README defines it (role
   ``user`` for the first speaker, ``assistant`` for the second, the speaker
   as ``name``, the session's date as ``created_at``), one ``add_messages``
   batch per session with ``skip_vector_storage=False``; the configured
   learner (default: the LLM memory agent) learns the blocks ``human`` (the
   first speaker), ``companion`` (the second) and ``summary``;
2. answer each question of categories 1-4 (category 5, adversarial, is left
   out as in the published evaluations) with ``get_context`` (the blocks) plus
   the ``search_passages`` results for the question (``--k``, every role) in
   the prompt; and, as the baseline, with the whole conversation in the prompt;
3. judge each answer with an LLM: CORRECT or WRONG against the gold answer,
   generously (same topic, same date or period in any format), as a JSON
   object with a ``label`` key, temperature 0: the convention of the
   published LoCoMo evaluations (gpt-4o-mini as answerer and judge).

It prints accuracy by category and overall, prompt tokens per question
(memory vs. full context), what ingestion cost (LLM calls and tokens), and
the published reference points; ``--json FILE`` writes the same figures and
every question's answers and verdicts. Cost per conversation: the learning
passes (about one LLM call per session, plus consolidations) and 4 calls
per question (2 answers, 2 verdicts); docs/quality.md has the figures.

Usage (from the project root; ``--smoke`` without ``--base-url``: one
conversation's first sessions against the tests' scripted server)::

    .venv/bin/python benchmarks/locomo_qa.py [--base-url URL --model NAME] [--api-key KEY] [--judge-model NAME] [--conversations N] [--questions N] [--k 10] [--json FILE] [--smoke]

Data: LoCoMo (snap-research/LoCoMo, Maharana et al., "Evaluating Very
Long-Term Conversational Memory of LLM Agents", ACL 2024), CC BY-NC 4.0,
non-commercial benchmark use only; read in place from ``../shared/data/locomo``,
never copied.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import _common
from locomo_retrieval import conversation
from support.openai_server import ScriptedOpenAI, Step, reply

from ai_memory_sdk import Memory, RunFailedError

CATEGORIES = {1: "multi-hop", 2: "temporal", 3: "open-domain", 4: "single-hop"}
SYSTEMS = ("memory", "full_context")
REFERENCE = [  # LoCoMo (all 10 conversations), categories 1-4, J score, gpt-4o-mini answering and judging
    ("full context", 72.9, "Mem0 paper (Chhikara et al. 2025, arXiv:2504.19413)"),
    ("Mem0", 66.9, "Mem0 paper (Chhikara et al. 2025, arXiv:2504.19413)"),
    ("Letta", 74.0, 'Letta blog, "Benchmarking AI Agent Memory: Is a Filesystem All You Need?" (2025)'),
    ("Zep", 75.1, "Zep blog, corrected LoCoMo evaluation (2025)"),
]
SMOKE_SESSIONS, SMOKE_QUESTIONS = 2, 8
COMPANION = "companion"

ANSWER_SYSTEM = """You answer questions about a long conversation between {a} and {b}, using only the memory below.
- Answer in a few words (at most about six): a name, a place, a date, a short phrase.
- Each past message shows when it was said. Turn relative times ("last week", "yesterday", "next month") into
  absolute dates from that time, and answer with the date, month or year.
- When the memory holds facts that conflict, the most recent one is right.
- If the memory does not say, give your best short guess from what it does say."""
ANSWER_USER = "{memory}\n\nQuestion: {question}\nShort answer:"
JUDGE_PROMPT = """You grade an answer to a question about a conversation between two people.
You get the question, the gold (correct) answer, and a generated answer to grade.
Label it CORRECT when it refers to the same thing, person, place, date or period as the gold answer, even if it
is longer, worded differently, or gives a date in another format or relative to the conversation. Label it WRONG
when it names something else, misses the point of the gold answer, or says it does not know.

Question: {question}
Gold answer: {gold}
Generated answer: {answer}

Reply with a JSON object: {{"reasoning": "<one sentence>", "label": "CORRECT" or "WRONG"}}."""


# -- data --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Question:
    text: str
    gold: str
    category: int


@dataclass
class Conversation:
    subject: str
    speakers: tuple[str, str]
    sessions: list[list[dict[str, Any]]]  # each session's messages, in order
    questions: list[Question]


def load(path: Path, conversations: int | None = None, sessions: int | None = None) -> list[Conversation]:
    """The conversations (the first ``conversations``), their first ``sessions`` sessions, questions of 1-4."""
    out: list[Conversation] = []
    for sample in json.loads(path.read_text(encoding="utf-8"))[:conversations]:
        subject, messages, _ = conversation(sample)
        grouped: dict[datetime, list[dict[str, Any]]] = {}
        for m in messages:
            grouped.setdefault(m["created_at"], []).append(m)
        questions = [
            Question(qa["question"], str(qa["answer"]), qa["category"])
            for qa in sample["qa"]
            if qa["category"] in CATEGORIES and "answer" in qa
        ]
        c = sample["conversation"]
        out.append(
            Conversation(
                subject, (c["speaker_a"], c["speaker_b"]), [grouped[k] for k in sorted(grouped)][:sessions], questions
            )
        )
    return out


def _line(when: datetime, content: str) -> str:
    return f"[{when:%Y-%m-%d %H:%M}] {content}"


def transcript(conv: Conversation) -> str:
    """The whole conversation, one dated line per turn (the full-context baseline's memory)."""
    return "\n".join(_line(m["created_at"], m["content"]) for session in conv.sessions for m in session)


# -- calls -------------------------------------------------------------------------------------------


@dataclass
class Usage:
    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    failed_runs: int = 0  # ingestion: learning runs that failed (e.g. a local model that reached max_steps)

    def add(self, other: Usage) -> None:
        self.calls += other.calls
        self.prompt_tokens += other.prompt_tokens
        self.completion_tokens += other.completion_tokens
        self.failed_runs += other.failed_runs


class Chat:
    """``chat.completions`` at temperature 0 on one endpoint; JSON mode dropped once if the endpoint refuses it."""

    def __init__(self, base_url: str, api_key: str, model: str, timeout: float = 120.0) -> None:
        from openai import OpenAI

        self.client = OpenAI(base_url=base_url, api_key=api_key, timeout=timeout, max_retries=6)
        self.base_url = base_url
        self.model = model
        self.json_mode = True

    def __call__(self, messages: list[dict[str, str]], json_mode: bool = False) -> tuple[str, Usage]:
        import openai

        request: dict[str, Any] = {"model": self.model, "messages": messages, "temperature": 0}
        if json_mode and self.json_mode:
            request["response_format"] = {"type": "json_object"}
        try:
            response = self.client.chat.completions.create(**request)
        except openai.BadRequestError as exc:
            if "response_format" not in request:
                raise
            logging.getLogger(__name__).warning("%s refused JSON mode (%s); asking without it", self.base_url, exc)
            self.json_mode = False
            return self(messages, json_mode)
        usage = response.usage
        text = response.choices[0].message.content or ""
        return text, Usage(1, usage.prompt_tokens if usage else 0, usage.completion_tokens if usage else 0)


def parse_verdict(text: str) -> bool | None:
    """The judge's label: True (CORRECT), False (WRONG), None when it gave neither or both."""
    match = re.search(r"\{.*\}", text, re.S)
    if match:
        try:
            label = json.loads(match.group(0)).get("label")
        except (ValueError, AttributeError):
            label = None
        if isinstance(label, str) and label.strip().upper() in ("CORRECT", "WRONG"):
            return label.strip().upper() == "CORRECT"
    words = set(re.findall(r"\b(CORRECT|WRONG)\b", text.upper()))
    return None if len(words) != 1 else words == {"CORRECT"}


# -- one conversation --------------------------------------------------------------------------------


@dataclass
class Graded:
    """One question's answers and verdicts, by system."""

    conversation: str
    question: str
    category: int
    gold: str
    answers: dict[str, str] = field(default_factory=dict)
    correct: dict[str, bool] = field(default_factory=dict)
    unparsed: dict[str, str] = field(default_factory=dict)  # system -> the judge's reply it could not read
    prompt_tokens: dict[str, int] = field(default_factory=dict)


def memory_prompt(mem: Memory, conv: Conversation, question: str, k: int) -> str:
    """What the memory system answers from: the blocks, and the passages found for the question."""
    found = mem.search_passages(conv.subject, question, tags=[], limit=k)
    lines = [_line(r.created_at, r.content) for r in found]
    return (
        f"Memory blocks:\n{mem.get_context(conv.subject)}\n\nPast messages found for this question (best first):\n"
        + ("\n".join(lines) or "(none)")
    )


def ingest(mem: Memory, conv: Conversation) -> Usage:
    """One batch per session, learned and archived; the learning runs' LLM usage.

    Each session is learned before the next is added, so no two batches are coalesced into one
    pass (coalesced runs each carry the whole pass's figures) and every run's usage is its own.
    """
    a, b = conv.speakers
    mem.initialize_user_memory(conv.subject, reset=True)
    mem.initialize_memory(
        COMPANION, f"Details about {b}, the other person in {a}'s conversations.", subject_id=conv.subject
    )
    for session in conv.sessions:  # sessions are days apart: each is learned before the next one comes
        run_id = mem.add_messages(conv.subject, session, skip_vector_storage=False)
        for wait in (run_id, *_queued(mem, conv.subject)):  # its run, then a consolidation its pass queued
            try:
                mem.wait_for_run(wait, timeout=3600)
            except RunFailedError as exc:  # counted below: the session stays searchable, its blocks unlearned
                logging.getLogger(__name__).warning("%s: %s", conv.subject, exc)
    usage = Usage()
    for r in mem.list_runs(conv.subject):
        usage.add(Usage(r.llm_calls, r.prompt_tokens, r.completion_tokens, int(r.status == "failed")))
    return usage


def _queued(mem: Memory, subject: str) -> list[str]:
    return [r.id for r in mem.list_runs(subject, "queued") + mem.list_runs(subject, "running")]


def grade(
    conv: Conversation,
    questions: Sequence[Question],
    memories: dict[str, list[str]],
    answer: Chat,
    judge: Chat,
    concurrency: int,
) -> tuple[list[Graded], Usage, Usage]:
    """Answer each question from each system's memory and judge the answers; (graded, answer usage, judge usage)."""
    a, b = conv.speakers
    system = ANSWER_SYSTEM.format(a=a, b=b)
    answer_usage, judge_usage = Usage(), Usage()
    graded = [Graded(conv.subject, q.text, q.category, q.gold) for q in questions]

    def one(i: int, name: str) -> tuple[int, str, str, Usage, str, Usage]:
        q = questions[i]
        user = ANSWER_USER.format(memory=memories[name][i], question=q.text)
        text, used = answer([{"role": "system", "content": system}, {"role": "user", "content": user}])
        said = " ".join(text.split())
        verdict, judged = judge(
            [{"role": "user", "content": JUDGE_PROMPT.format(question=q.text, gold=q.gold, answer=said)}],
            json_mode=True,
        )
        return i, name, said, used, verdict, judged

    jobs = [(i, name) for i in range(len(questions)) for name in SYSTEMS if name in memories]
    with ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
        for i, name, said, used, verdict, judged in pool.map(lambda job: one(*job), jobs):
            g = graded[i]
            g.answers[name] = said
            g.prompt_tokens[name] = used.prompt_tokens
            label = parse_verdict(verdict)
            g.correct[name] = bool(label)
            if label is None:
                g.unparsed[name] = verdict
            answer_usage.add(used)
            judge_usage.add(judged)
    return graded, answer_usage, judge_usage


# -- aggregation and report --------------------------------------------------------------------------


def tally(graded: Sequence[Graded]) -> dict[str, Any]:
    """Accuracy by category and overall, and mean prompt tokens per question, for each system."""
    out: dict[str, Any] = {}
    for name in SYSTEMS:
        rows = [g for g in graded if name in g.correct]
        by_category = {}
        for cat, label in CATEGORIES.items():
            in_cat = [g for g in rows if g.category == cat]
            right = sum(g.correct[name] for g in in_cat)
            by_category[f"{cat} {label}"] = _score(right, len(in_cat))
        tokens = [g.prompt_tokens[name] for g in rows]
        out[name] = {
            "overall": _score(sum(g.correct[name] for g in rows), len(rows)),
            "by_category": by_category,
            "prompt_tokens_per_question": round(sum(tokens) / len(tokens), 1) if tokens else None,
            "unparsed_verdicts": sum(name in g.unparsed for g in rows),
        }
    return out


def _score(correct: int, total: int) -> dict[str, Any]:
    return {"correct": correct, "total": total, "accuracy": round(100 * correct / total, 1) if total else None}


def _cell(score: dict[str, Any]) -> str:
    if not score["total"]:
        return "-"
    return f"{score['accuracy']:5.1f}% ({score['correct']}/{score['total']})"


def report_lines(result: dict[str, Any]) -> list[str]:
    """The printed report (stable format: tests and docs read it)."""
    systems = result["systems"]
    mem, full = systems["memory"], systems["full_context"]
    ing = result["ingestion"]
    lines = [
        "== LoCoMo QA, categories 1-4, J (an LLM judge labels each answer CORRECT or WRONG against the gold answer) ==",
        f"answer model {result['model']} (judge {result['judge_model']}) at {result['base_url']}; learner"
        f" {result['learner']}; embedder {result['embedder']}; search k={result['k']}",
        f"conversations {result['conversations']}, questions {mem['overall']['total']}",
        f"{'category':<16} {'memory':>20} {'full context':>20}",
    ]
    for key in mem["by_category"]:
        lines.append(f"{key:<16} {_cell(mem['by_category'][key]):>20} {_cell(full['by_category'][key]):>20}")
    lines.append(f"{'overall':<16} {_cell(mem['overall']):>20} {_cell(full['overall']):>20}")
    tokens = [s["prompt_tokens_per_question"] for s in (mem, full)]
    lines.append(f"{'prompt tokens/q':<16} " + " ".join(f"{'-' if t is None else f'{t:,.0f}':>20}" for t in tokens))
    per = max(1, result["conversations"])
    lines.append(
        f"ingestion: {ing['calls']} LLM calls, {ing['prompt_tokens']:,} prompt + {ing['completion_tokens']:,}"
        f" completion tokens ({ing['calls'] / per:.1f} calls, {ing['prompt_tokens'] / per:,.0f} prompt tokens"
        f" per conversation); runs failed: {ing['failed_runs']}"
    )
    ans, jud = result["answering"], result["judging"]
    lines.append(
        f"answering: {ans['calls']} calls, {ans['prompt_tokens']:,} prompt tokens; judging: {jud['calls']} calls,"
        f" {jud['prompt_tokens']:,} prompt tokens; unparsed verdicts: memory {mem['unparsed_verdicts']},"
        f" full context {full['unparsed_verdicts']} (counted WRONG)"
    )
    lines.append("published, gpt-4o-mini answering and judging, all 10 LoCoMo conversations (this is the dev split):")
    for name, score, source in REFERENCE:
        lines.append(f"  {name:<13} {score:5.1f}%  {source}")
    return lines


def evaluate(
    convs: Sequence[Conversation],
    *,
    base_url: str,
    api_key: str,
    model: str,
    judge_model: str,
    judge_base_url: str | None = None,
    learner: Literal["llm", "offline"] = "llm",
    embedder: str = "auto",
    k: int = 10,
    questions: int | None = None,
    concurrency: int = 4,
    baseline: bool = True,
    memory_options: dict[str, Any] | None = None,
    progress: Callable[[str], None] = lambda _: None,
) -> dict[str, Any]:
    """Run the protocol over ``convs``; the result dict that ``--json`` writes."""
    answer = Chat(base_url, api_key, model)
    judge = Chat(judge_base_url or base_url, api_key, judge_model)
    graded: list[Graded] = []
    ingestion, answering, judging = Usage(), Usage(), Usage()
    per_conversation = []
    started = time.perf_counter()
    with (
        tempfile.TemporaryDirectory() as tmp,
        Memory(
            path=Path(tmp) / "locomo_qa.db",
            learner=learner,
            llm_base_url=base_url,
            llm_api_key=api_key,
            model=model,
            embedder=embedder,
            **(memory_options or {}),
        ) as mem,
    ):
        for conv in convs:
            t0 = time.perf_counter()
            used = ingest(mem, conv)
            ingestion.add(used)
            qs = conv.questions[:questions]
            memories = {"memory": [memory_prompt(mem, conv, q.text, k) for q in qs]}
            if baseline:
                memories["full_context"] = [transcript(conv)] * len(qs)
            rows, ans, jud = grade(conv, qs, memories, answer, judge, concurrency)
            graded += rows
            answering.add(ans)
            judging.add(jud)
            per_conversation.append({"conversation": conv.subject, "ingestion": asdict(used), "questions": len(qs)})
            progress(f"{conv.subject}: {len(qs)} questions, {time.perf_counter() - t0:.0f} s")
    return {
        "benchmark": "locomo_qa",
        "data": _common.LOCOMO_ATTRIBUTION,
        "model": model,
        "judge_model": judge_model,
        "base_url": base_url,
        "learner": learner,
        "embedder": embedder,
        "k": k,
        "conversations": len(convs),
        "seconds": round(time.perf_counter() - started, 1),
        "systems": tally(graded),
        "ingestion": asdict(ingestion),
        "per_conversation": per_conversation,
        "answering": asdict(answering),
        "judging": asdict(judging),
        "reference": [{"system": n, "j": s, "source": src} for n, s, src in REFERENCE],
        "questions": [asdict(g) for g in graded],
    }


# -- the smoke run's scripted model ------------------------------------------------------------------


def scripted_model(golds: dict[str, str]) -> Callable[[dict[str, Any]], Step]:
    """A stand-in for an LLM (``--smoke`` without ``--base-url``): finishes every memory pass without edits,
    answers with the gold answer when it appears in the prompt's memory (else "unknown"), and judges by
    exact match."""

    def respond(req: dict[str, Any]) -> Step:
        messages = req["messages"]
        text = messages[-1]["content"] if messages else ""
        if req.get("tools"):
            return reply(tool_calls=[("memory_finish_edits", {})])
        if "Generated answer:" in text:
            expected = re.search(r"^Gold answer: (.*)$", text, re.M)
            said = re.search(r"^Generated answer: (.*)$", text, re.M)
            same = bool(expected and said and expected.group(1).strip().lower() == said.group(1).strip().lower())
            return reply(json.dumps({"reasoning": "scripted", "label": "CORRECT" if same else "WRONG"}))
        question = re.search(r"^Question: (.*)$", text, re.M)
        gold = golds.get(question.group(1) if question else "", "")
        memory = text.rsplit("\n\nQuestion: ", 1)[0]
        return reply(gold if gold and gold.lower() in memory.lower() else "unknown")

    return respond


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--base-url", help="OpenAI-compatible endpoint (e.g. https://api.openai.com/v1)")
    parser.add_argument("--model", help="answer model and memory-agent model (e.g. gpt-4o-mini)")
    parser.add_argument("--api-key", default=os.environ.get("OPENAI_API_KEY", "not-needed"))
    parser.add_argument("--judge-model", help="judge model (default: --model)")
    parser.add_argument("--judge-base-url", help="judge endpoint (default: --base-url)")
    parser.add_argument("--learner", choices=("llm", "offline"), default="llm")
    parser.add_argument("--embedder", default="auto", help="embedder spec (default auto)")
    parser.add_argument("--k", type=int, default=10, help="search results per question (default 10)")
    parser.add_argument("--conversations", type=int, help="only the first N conversations")
    parser.add_argument("--questions", type=int, help="only the first N questions of each conversation")
    parser.add_argument("--max-steps", type=int, help="LLM calls per learning pass (library default 10)")
    parser.add_argument("--llm-timeout", type=float, help="seconds per memory-agent LLM call (library default 60)")
    parser.add_argument("--no-baseline", action="store_true", help="skip the full-context baseline (~25k tokens/q)")
    parser.add_argument("--concurrency", type=int, default=4, help="LLM calls in flight (default 4)")
    parser.add_argument("--data", type=Path, default=_common.LOCOMO_DEV, help="locomo_dev.json")
    parser.add_argument("--json", type=Path, help="write the figures and every verdict to this file")
    _common.add_smoke_flag(parser)  # one conversation, its first SMOKE_SESSIONS sessions, SMOKE_QUESTIONS questions
    args = parser.parse_args(argv)
    if args.base_url is None and not args.smoke:
        parser.error("--base-url and --model are required (or --smoke, to run against a scripted server)")
    if args.base_url is not None and not args.model:
        parser.error("--model is required with --base-url")
    logging.basicConfig(level=logging.WARNING)
    print(_common.LOCOMO_ATTRIBUTION)
    convs = load(args.data, 1 if args.smoke else args.conversations, SMOKE_SESSIONS if args.smoke else None)
    questions = SMOKE_QUESTIONS if args.smoke else args.questions
    options: dict[str, Any] = {
        "learner": args.learner,
        "embedder": args.embedder,
        "k": args.k,
        "questions": questions,
        "concurrency": args.concurrency,
        "baseline": not args.no_baseline,
        "memory_options": {
            k: v for k, v in (("max_steps", args.max_steps), ("llm_timeout", args.llm_timeout)) if v is not None
        },
        "progress": print,
    }
    if args.base_url is None:  # --smoke: the tests' scripted server plays every model
        with ScriptedOpenAI() as server:
            server.responder = scripted_model({q.text: q.gold for c in convs for q in c.questions})
            result = evaluate(
                convs,
                base_url=server.base_url,
                api_key="sk-smoke",
                model="scripted",
                judge_model="scripted",
                **{**options, "embedder": "none"},
            )
    else:
        result = evaluate(
            convs,
            base_url=args.base_url,
            api_key=args.api_key,
            model=args.model,
            judge_model=args.judge_model or args.model,
            judge_base_url=args.judge_base_url,
            **options,
        )
    print("\n".join(report_lines(result)))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
        print(f"json: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
