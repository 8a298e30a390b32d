"""The memory agent against a real local model: SmolLM2-135M-Instruct behind llama-cpp-python's server.

Starts the server (``bash .ci/setup-llama.sh`` installs it), points ``Memory`` at it the
way a user points it at any OpenAI-compatible server (``OPENAI_BASE_URL`` and
``AI_MEMORY_MODEL`` in the environment, no API key) through a recording proxy on
127.0.0.1, and runs N passes over the LoCoMo dev conversations
(``../shared/data/locomo/locomo_dev.json``, CC BY-NC 4.0, Maharana et al., ACL 2024; one
subject per conversation, batches of consecutive turns). Every pass is audited by
replaying its recorded tool calls with an independent reference implementation of the
tools (tests/support/agent_audit.py): a block counts as corrupted when its stored value
or history entry differs from the valid calls applied in order, a failed run changed a
block, a block is over its limit, or a refused call was not answered ``Error:`` in the
next request (tool message and user turn).

Usage::

    .venv/bin/python benchmarks/local_model.py [--passes 30] [--batch 8] [--max-steps 3] [--smoke]

``--smoke``: one pass of 4 messages, one step.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import _common
from support.agent_audit import PassAudit, RecordingProxy, audit_run, block_state, conversation_batches
from support.llama_server import LlamaServer, find_model

from ai_memory_sdk import Memory
from ai_memory_sdk.errors import RunFailedError


def _interleave(passes: int, size: int) -> list[tuple[str, list[dict[str, Any]]]]:
    """Up to ``passes`` batches, round-robin over the conversations, each conversation in order."""
    per: dict[str, list[list[dict[str, Any]]]] = {}
    for conv, batch in conversation_batches(size=size):
        per.setdefault(conv, []).append(batch)
    out: list[tuple[str, list[dict[str, Any]]]] = []
    i = 0
    while len(out) < passes and any(i < len(b) for b in per.values()):
        out += [(conv, batches[i]) for conv, batches in per.items() if i < len(batches)]
        i += 1
    return out[:passes]


def _pct(n: int, d: int) -> str:
    return f"{100 * n / d:.0f}%" if d else "-"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--passes", type=int, default=30)
    ap.add_argument("--batch", type=int, default=8, help="messages per add_messages batch")
    ap.add_argument("--max-steps", type=int, default=3)
    ap.add_argument("--human-limit", type=int, default=600)
    ap.add_argument("--summary-limit", type=int, default=300)
    ap.add_argument("--llm-timeout", type=float, default=240.0)
    ap.add_argument("--json", type=Path, help="write every pass's audit here")
    ap.add_argument("-v", "--verbose", action="store_true", help="print every tool call")
    _common.add_smoke_flag(ap)
    args = ap.parse_args(argv)
    if args.smoke:
        args.passes, args.batch, args.max_steps = 1, 4, 1
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("ai_memory_sdk.worker").setLevel(logging.ERROR)  # failed runs are counted below
    print(_common.LOCOMO_ATTRIBUTION)

    work = _interleave(args.passes, args.batch)
    audits: list[PassAudit] = []
    runs: list[Any] = []
    with (
        LlamaServer() as server,
        RecordingProxy(server.base_url) as proxy,
        tempfile.TemporaryDirectory(prefix="ai-memory-local-model-") as tmp,
    ):
        os.environ["OPENAI_BASE_URL"] = proxy.base_url
        os.environ["AI_MEMORY_MODEL"] = server.model
        os.environ.pop("OPENAI_API_KEY", None)
        print(
            f"llama.cpp server ready in {server.startup_seconds:.1f}s:"
            f" {' '.join(server._command(server.model_path or find_model()))}"
        )
        print(
            f"{len(work)} passes of {args.batch} messages, max_steps {args.max_steps},"
            f" block limits {args.human_limit}/{args.summary_limit}, llm_timeout {args.llm_timeout:g}s",
            flush=True,
        )
        mem = Memory(path=f"{tmp}/m.db", embedder="none", max_steps=args.max_steps, llm_timeout=args.llm_timeout)
        try:
            for conv in dict.fromkeys(c for c, _ in work):
                mem.initialize_user_memory(
                    conv, user_context_block_char_limit=args.human_limit, summary_block_char_limit=args.summary_limit
                )
            started = time.monotonic()
            for n, (conv, batch) in enumerate(work, 1):
                before, limits, _ = block_state(mem, conv)
                t0 = time.monotonic()
                run = mem.add_messages(conv, batch)
                try:
                    mem.wait_for_run(run, timeout=1800)
                except RunFailedError:
                    pass
                exchanges = proxy.take()
                audit = audit_run(mem, conv, run, exchanges, before, limits, time.monotonic() - t0)
                audits.append(audit)
                runs.append(mem.get_run(run))
                print(
                    f"[{n:3d}/{len(work)} {time.monotonic() - started:6.0f}s] {conv} {audit.status:9s}"
                    f" {audit.stop_reason or '':9s} calls {audit.llm_calls} tools {audit.valid_calls}/{audit.calls}"
                    f" valid {audit.request_bytes:6d} B {audit.seconds:5.1f}s"
                    + (f" PROBLEMS {audit.problems}" if audit.problems else ""),
                    flush=True,
                )
                if args.verbose:
                    for ex in exchanges:
                        msg = ((ex.response or {}).get("choices") or [{}])[0].get("message") or {}
                        for c in msg.get("tool_calls") or []:
                            print(f"      {c['function']['name']} {c['function']['arguments'][:160]!r}")
            final = {c: block_state(mem, c)[0] for c in dict.fromkeys(c for c, _ in work)}
        finally:
            mem.close()
        rss = server.rss_bytes(peak=True)
    _report(audits, runs, final, rss)
    if args.json:
        args.json.write_text(json.dumps([a.__dict__ for a in audits], indent=1, default=str))
    return 1 if any(a.problems for a in audits) else 0


def _report(audits: list[PassAudit], runs: list[Any], final: dict[str, dict[str, str]], rss: int) -> None:
    n = len(audits)
    completed = sum(a.status == "completed" for a in audits)
    limited = sum(a.stop_reason == "max_steps" for a in audits)
    other = n - completed - limited
    calls = sum(a.calls for a in audits)
    valid = sum(a.valid_calls for a in audits)
    secs = [a.seconds for a in audits]
    llm = sum(a.llm_calls for a in audits)
    verdicts: Counter[str] = Counter()
    tools: Counter[str] = Counter()
    for a in audits:
        verdicts.update(a.verdicts)
        tools.update(a.tools)
    corrupted = [p for a in audits for p in a.problems]
    print(f"\n== {n} passes of the memory agent against SmolLM2-135M (llama.cpp) ==")
    print(
        f"passes: completed {_pct(completed, n)} ({completed}), failed at the step limit {_pct(limited, n)}"
        f" ({limited}), failed otherwise {_pct(other, n)} ({other})"
    )
    print(f"LLM calls per pass: {llm / n:.2f} (requests incl. retries {sum(a.requests for a in audits) / n:.2f})")
    print(
        f"tool calls: {calls} ({calls / n:.2f} per pass), valid {_pct(valid, calls)} ({valid});"
        f" by tool: {dict(tools.most_common())}"
    )
    print("verdicts of the reference replay:")
    for key, count in verdicts.most_common():
        print(f"   {count:4d}  {key}")
    kept = sum(a.valid_edits for a in audits if a.status == "completed")
    print(
        f"valid edits: {sum(a.valid_edits for a in audits)}, kept (in completed passes) {kept},"
        f" discarded with their failed pass {sum(a.valid_edits for a in audits) - kept}"
    )
    print(
        f"request bytes per pass: mean {statistics.mean(a.request_bytes for a in audits):.0f},"
        f" max {max(a.request_bytes for a in audits)}"
    )
    print(
        f"tokens per pass: prompt {statistics.mean(r.prompt_tokens for r in runs):.0f},"
        f" completion {statistics.mean(r.completion_tokens for r in runs):.0f}"
    )
    print(
        f"seconds per pass: mean {statistics.mean(secs):.1f}, median {statistics.median(secs):.1f},"
        f" max {max(secs):.1f}; per LLM call {sum(secs) / max(llm, 1):.1f}"
    )
    print(f"server peak RSS: {rss / 2**20:.0f} MiB")
    print(
        f"corrupted blocks: {len(corrupted)} (every pass replayed with an independent implementation of the"
        " tools: stored value and history entry = valid calls applied in order; failed runs changed nothing;"
        " values within limits; every refused call answered 'Error:' in the next request's tool message and"
        " user turn)"
    )
    for p in corrupted:
        print(f"   {p}")
    print("final blocks:")
    for conv, values in final.items():
        print(f"   {conv}: {json.dumps(values)[:300]}")


if __name__ == "__main__":
    sys.exit(main())
