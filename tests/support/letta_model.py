"""The scripted sleeptime model the ``letta`` engine's tests run behind the session's Letta server.

Used by the contract suite's ``letta`` backend and by tests/test_letta_engine.py:
``letta_llm.responder = responder``.
"""

from __future__ import annotations

import json
from typing import Any

from support.letta_server import _TAG, _text_of, block_value, extract_facts
from support.openai_server import Reply, reply


def said(content: str) -> str | None:
    """The application's text of a user message; None for Letta's JSON envelopes (heartbeats)."""
    try:
        data = json.loads(content)
    except ValueError:
        return content
    return None if isinstance(data, dict) and data.get("type") else content


def responder(req: dict[str, Any]) -> Reply | None:
    """Plays the sleeptime agent's model: record first-person facts in ``human``, a line in ``summary``, finish.

    Unlike ``SleeptimeResponder(summary_label=...)``, which re-plans from the blocks on every
    call and so finishes right after its first edit, each call here makes the first edit
    the blocks still lack (at most 4), then ``memory_finish_edits``.
    """
    if "memory_finish_edits" not in {(t.get("function") or {}).get("name") for t in req.get("tools") or []}:
        return None
    messages = req.get("messages") or []
    turn, text = -1, ""
    for i, m in enumerate(messages):
        if m.get("role") == "user":
            spoken = said(_text_of(m.get("content")))
            if spoken is not None:
                turn, text = i, spoken
    done = sum(len(m.get("tool_calls") or []) for m in messages[turn + 1 :] if m.get("role") == "assistant")
    system = "\n".join(_text_of(m.get("content")) for m in messages if m.get("role") == "system")
    facts = extract_facts(_TAG.sub(" ", text)) if turn >= 0 else []
    human, summary = block_value(system, "human"), block_value(system, "summary")
    call: tuple[str, dict[str, Any]] = ("memory_finish_edits", {})
    if facts and done < 4:
        new = [f for f in facts if f not in (human or "")]
        line = "The user shared: " + "; ".join(facts) + "."
        if human is not None and new:
            call = (
                ("memory_insert", {"label": "human", "new_str": "\n".join(new), "insert_line": -1})
                if human.strip()
                else ("memory_rethink", {"label": "human", "new_memory": "\n".join(new)})
            )
        elif summary is not None and summary != line:
            call = ("memory_rethink", {"label": "summary", "new_memory": line})
    args = dict(call[1], thinking="Recording what the user said." if call[1] else "Done.")
    if call[1]:
        args["request_heartbeat"] = True
    return reply(tool_calls=[(call[0], args)])
