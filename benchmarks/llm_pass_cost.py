"""Cost of one memory-agent pass: request bytes, prompt size, tokens and LLM calls, versus Letta's sleeptime pass.

Runs the real learner end to end (Memory -> SQLite -> worker -> openai client)
against the scripted OpenAI-compatible server of the tests, whose responder
behaves like a well-behaved model: every edit plus ``memory_finish_edits`` in
one response. Letta's figures are reconstructed from the numbers in issue 3
(4.1 kB system message with two empty blocks, 3.7 kB of tool schemas resent
on every step, 2 calls per pass) and from the history growth measured against
a real Letta 0.11.7 server (20.5 kB on the first run, about +6.4 kB per run).

Usage::

    .venv/bin/python benchmarks/llm_pass_cost.py [--passes 5] [--smoke]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import _common
from support.openai_server import ScriptedOpenAI, reply

from ai_memory_sdk import Memory
from ai_memory_sdk.learners.llm import tool_schemas

STANDARD_BATCH = [  # 10 messages of about 80 characters (the project's reference batch)
    ("user", "Hi! I'm Priya, I just moved to Lisbon from Toronto for a new job at a fintech."),
    ("assistant", "Welcome to Lisbon, Priya! How are you finding the city so far? Settling in ok?"),
    ("user", "Loving it, though the hills are brutal. I cycle to work, so my legs are dying."),
    ("assistant", "Lisbon's hills are famous. An e-bike might help. What do you do at the firm?"),
    ("user", "I'm a backend engineer, mostly Go and Postgres. Team of six, very relaxed vibe."),
    ("assistant", "Sounds like a nice team. Go and Postgres are a solid pair for payments work."),
    ("user", "My sister Anika visits next Friday; I want to take her somewhere for fado music."),
    ("assistant", "Alfama has the most traditional fado houses. Book ahead on weekend evenings."),
    ("user", "Great tip. Also I'm vegetarian, so any restaurant ideas should keep that in mind."),
    ("assistant", "Noted: vegetarian. I'll suggest places with good meat-free options next time."),
]
LETTA_SYSTEM = 4100  # bytes, two empty blocks (issue 3)
LETTA_TOOLS = 3700  # bytes of tool schemas, resent on every step (issue 3)
LETTA_CALLS = 2  # a typical Letta sleeptime pass (issue 3; measured: each run is 2 LLM calls)
LETTA_FIRST_RUN = 20_500  # measured request bytes of the first run (letta-server README)
LETTA_GROWTH = 6_400  # measured growth per run: its message history is never cleared


def _batch(day: int) -> list[dict[str, Any]]:
    start = datetime(2025, 3, 14, 18, 0, tzinfo=timezone.utc) + timedelta(days=day)
    return [
        {"role": r, "content": c, "created_at": (start + timedelta(minutes=2 * i)).isoformat()}
        for i, (r, c) in enumerate(STANDARD_BATCH)
    ]


def _well_behaved(req: dict[str, Any]) -> Any:
    """All edits and memory_finish_edits in one response, as a good model does."""
    user = req["messages"][1]["content"]
    day = user.split("[", 1)[1][:10]
    return reply(
        tool_calls=[
            (
                "memory_insert",
                {
                    "label": "human",
                    "new_str": f"Priya; moved Toronto -> Lisbon ({day}); backend engineer"
                    " (Go, Postgres) at a fintech; cycles to work; vegetarian.",
                },
            ),
            ("memory_insert", {"label": "human", "new_str": "Sister Anika visits Lisbon on 2025-03-21; wants fado."}),
            (
                "memory_rethink",
                {
                    "label": "summary",
                    "new_memory": f"{day}: Priya settling into Lisbon and her new job;"
                    " planning fado in Alfama with her sister.",
                },
            ),
            ("memory_finish_edits", {}),
        ]
    )


def _tokens(text: str) -> str:
    approx = f"~{len(text) / 4:,.0f} (chars/4)"
    try:  # optional; never a dependency
        import tiktoken  # type: ignore[import-not-found,unused-ignore]

        enc = tiktoken.get_encoding("o200k_base")
        return f"{approx}, {len(enc.encode(text)):,} (tiktoken o200k_base)"
    except Exception:  # not installed, or its encoding file is not cached locally
        return approx


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--passes", type=int, default=5, help="memory-agent passes, one batch each")
    _common.add_smoke_flag(ap)
    args = ap.parse_args(argv)
    passes = 2 if args.smoke else args.passes
    with ScriptedOpenAI() as server, tempfile.TemporaryDirectory() as tmp:
        server.responder = _well_behaved
        mem = Memory(
            path=str(Path(tmp) / "bench.db"),
            learner="llm",
            llm_base_url=server.base_url,
            llm_api_key="sk-bench",
            embedder="none",
        )
        try:
            mem.initialize_user_memory("priya")
            per_pass: list[tuple[int, int, float]] = []  # (calls, request bytes, ms)
            first_body: bytes | None = None
            for day in range(passes):
                seen = len(server.chat_requests)
                t0 = time.perf_counter()
                mem.wait_for_run(mem.add_messages("priya", _batch(day)), timeout=30)
                ms = (time.perf_counter() - t0) * 1000
                reqs = server.chat_requests[seen:]
                per_pass.append((len(reqs), sum(len(r.body) for r in reqs), ms))
                if first_body is None:
                    first_body = reqs[0].body
            run = mem.list_runs("priya")[0]
        finally:
            mem.close()
    assert first_body is not None
    sample = json.loads(first_body)
    system = sample["messages"][0]["content"]
    user = sample["messages"][1]["content"]
    tools_bytes = len(json.dumps(tool_schemas(["human", "summary"]), separators=(",", ":")))
    first_bytes = per_pass[0][1]
    calls = [c for c, _, _ in per_pass]

    print("== ai_memory_sdk llm learner: standard 10-message batch (~80 chars each), default blocks empty ==")
    print(f"request body (pass 1):           {first_bytes:,} bytes of JSON (goal: < 7,000)")
    print(f"system prompt:                   {len(system):,} chars, tokens {_tokens(system)}")
    print(f"tool schemas (4 tools):          {tools_bytes:,} bytes, tokens {_tokens(json.dumps(sample['tools']))}")
    print(f"user turn (transcript):          {len(user):,} chars")
    print(f"request tokens (pass 1):         {_tokens(first_body.decode())}")
    print(
        f"run 1 usage (scripted server):   {run.llm_calls} call(s), {run.prompt_tokens} prompt +"
        f" {run.completion_tokens} completion tokens"
    )
    print(f"LLM calls per pass ({passes} passes):   {calls} -> mean {sum(calls) / len(calls):.2f}")
    print(f"request bytes per pass:          {[b for _, b, _ in per_pass]} (blocks grow, history is never sent)")
    print(
        f"add -> wait_for_run, ms:         {[round(ms) for _, _, ms in per_pass]} (scripted server, no model time; pass 1 includes imports)"
    )

    transcript = len(user.encode())
    framing = first_bytes - len(system.encode()) - transcript - tools_bytes  # JSON keys, model, tool_choice...
    letta_call1 = LETTA_SYSTEM + LETTA_TOOLS + transcript + framing
    step = sum(len(json.dumps(c)) for c in (_well_behaved(sample).tool_calls)) + 300  # its edits + tool returns
    letta_pass = letta_call1 * LETTA_CALLS + step
    ours_pass = first_bytes * (sum(calls) / len(calls))
    print()
    print("== Letta sleeptime pass, reconstructed (issue 3 figures) ==")
    print(
        f"per call: system {LETTA_SYSTEM:,} + tools {LETTA_TOOLS:,} + same transcript {transcript:,} + framing"
        f" {framing:,} = {letta_call1:,} bytes; call 2 adds call 1's tool calls and returns (~{step:,} bytes)"
    )
    print(f"per pass: {LETTA_CALLS} calls, {letta_pass:,} bytes, tokens ~{letta_pass / 4:,.0f} (bytes/4)")
    print(
        f"fixed prompt (system + tools):   Letta {LETTA_SYSTEM + LETTA_TOOLS:,} B vs ours"
        f" {len(system.encode()) + tools_bytes:,} B -> {(LETTA_SYSTEM + LETTA_TOOLS) / (len(system.encode()) + tools_bytes):.1f}x"
    )
    print(
        f"first pass, request bytes:       Letta {letta_pass:,} vs ours {ours_pass:,.0f} ->"
        f" {letta_pass / ours_pass:.1f}x;  calls {LETTA_CALLS} vs {sum(calls) / len(calls):.2f}"
    )
    full = first_bytes + 10_000 + 1_000  # both default blocks full: the most a pass of this batch can cost
    last = per_pass[-1][1] * (sum(calls) / len(calls))
    print(
        "with Letta's history growth (measured on a real Letta server, requests of one run); ours never grows"
        f" with history: {last:,.0f} B at pass {passes} (blocks grew), at most ~{full:,} B with both blocks full:"
    )
    for n in (1, 10, 26):
        letta_n = LETTA_FIRST_RUN + LETTA_GROWTH * (n - 1)
        ours_n = ours_pass if n == 1 else last
        print(
            f"  run {n:>2}: Letta ~{letta_n:,} B (~{letta_n / 4:,.0f} tokens) vs ours ~{ours_n:,.0f} B"
            f" (~{ours_n / 4:,.0f} tokens) -> {letta_n / ours_n:.1f}x (blocks full: {letta_n / full:.1f}x)"
        )
    print()
    print("== sample request body (pass 1, as sent) ==")
    print(json.dumps(sample, indent=1, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
