"""Terminal chat with long-term memory, through any OpenAI-compatible endpoint.

    OPENAI_API_KEY=sk-... python examples/chat.py --user alice
    OPENAI_BASE_URL=http://localhost:11434/v1 OPENAI_API_KEY=ollama python examples/chat.py --model llama3.2
    python examples/chat.py --user alice --compact 12     # chat with compaction

Every turn, the user's ``human`` block and the conversation summary go into the
system prompt. The memory agent learns in the background: each exchange is
handed to ``add_messages`` (which returns at once) and the blocks are updated
by the time of a later turn. With ``--compact N`` the context keeps at most N
messages: when it grows past that, the oldest ones are sent to memory and
dropped from the context, so the summary and the ``human`` block carry what
was said. Commands: ``/memory`` shows the blocks, ``/quit`` (or Ctrl-D) ends.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from datetime import datetime, timezone
from typing import Any

from openai import OpenAI

from ai_memory_sdk import Memory

SYSTEM = "You are a helpful assistant with long-term memory of the user. Use what you remember naturally."


def _parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=os.environ.get("CHAT_MODEL", "gpt-4.1-mini"), help="chat model")
    p.add_argument(
        "--memory-model",
        default=os.environ.get("AI_MEMORY_MODEL"),
        help="model of the memory agent (default: AI_MEMORY_MODEL, else --model)",
    )
    p.add_argument("--user", default="default_user", help="whose memory to use")
    p.add_argument("--path", default=None, help="SQLite file of the memory (default: AI_MEMORY_PATH or per-user)")
    p.add_argument(
        "--compact",
        type=int,
        default=0,
        metavar="N",
        help="keep at most N messages in the context; older ones go to memory",
    )
    p.add_argument("--verbose", action="store_true", help="log what the SDK does")
    return p.parse_args()


def _system_prompt(memory: Memory, user: str) -> str:
    parts = [
        SYSTEM,
        memory.get_user_memory(user, prompt_formatted=True) or "",
        memory.get_summary(user, prompt_formatted=True) or "",
    ]
    return "\n".join(p for p in parts if p)


def _learn(memory: Memory, user: str, turns: list[dict[str, Any]]) -> str:
    """Hand messages to the memory agent; returns the run id at once (learning happens in the background)."""
    return memory.add_messages(user, turns)


def _for_chat(turns: list[dict[str, Any]]) -> list[dict[str, str]]:
    return [{"role": t["role"], "content": t["content"]} for t in turns]


def main() -> int:
    args = _parse()
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING)
    memory = Memory(model=args.memory_model or args.model, path=args.path)
    client = OpenAI()
    if memory.get_user_memory(args.user) is None:
        memory.initialize_user_memory(args.user)
    history: list[dict[str, Any]] = []  # the context: messages with the time they were said
    sent = 0  # without compaction: how many of ``history`` the memory has been given
    last_run = None
    print(f"Chatting as {args.user!r} with {args.model} ({memory.engine} memory). /memory, /quit.")
    try:
        while True:
            try:
                text = input("you> ").strip()
            except EOFError:
                print()
                break
            if not text:
                continue
            if text in ("/quit", "/exit"):
                break
            if text == "/memory":
                print(memory.get_user_memory(args.user, prompt_formatted=True))
                print(memory.get_summary(args.user, prompt_formatted=True))
                continue
            history.append({"role": "user", "content": text, "created_at": datetime.now(timezone.utc)})
            try:
                resp = client.chat.completions.create(
                    model=args.model,
                    messages=[{"role": "system", "content": _system_prompt(memory, args.user)}, *_for_chat(history)],
                )
            except Exception as exc:  # show the endpoint's error and let the user go on
                print(f"[chat failed: {exc}]")
                history.pop()
                continue
            answer = resp.choices[0].message.content or ""
            print(f"assistant> {answer}")
            history.append({"role": "assistant", "content": answer, "created_at": datetime.now(timezone.utc)})
            if args.compact:
                if len(history) > args.compact:
                    keep = max(2, args.compact // 2)
                    old, history = history[:-keep], history[-keep:]
                    last_run = _learn(memory, args.user, old)
                    print(f"[compacted: {len(old)} message(s) moved to memory, {len(history)} kept]")
            else:
                last_run = _learn(memory, args.user, history[sent:])
                sent = len(history)
    except KeyboardInterrupt:
        print()
    finally:
        if args.compact and history:  # what is still only in the context goes to memory too
            last_run = _learn(memory, args.user, history)
        if last_run is not None:
            print("[saving memory...]")
            try:
                memory.wait_for_run(last_run, timeout=120)
            except Exception as exc:  # a failed or slow run stays in the store; retry_run() requeues it
                print(f"[memory run {last_run}: {exc}]")
            print(memory.get_user_memory(args.user, prompt_formatted=True))
        memory.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
