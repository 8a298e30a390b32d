"""An OpenAI Agents SDK agent with long-term memory: one turn per run, nothing forgotten between runs.

    pip install 'ai-memory-sdk[agents]'
    OPENAI_API_KEY=sk-... python examples/agents_session.py --user ada "Hi, I'm Ada and I live in Lisbon."
    OPENAI_API_KEY=sk-... python examples/agents_session.py --user ada "Where do I live?" --show-memory
    OPENAI_BASE_URL=http://localhost:11434/v1 OPENAI_API_KEY=ollama \\
        python examples/agents_session.py --model llama3.2 --chat-completions "Hello"

The conversation is a ``MemorySession`` in the memory's store (``--path`` or
``AI_MEMORY_PATH``), so the next run carries it on. Every item the agent
adds to the session is also queued for the memory agent, which learns the
user's profile and a summary in the background; ``memory_instructions``
puts what was learned into the agent's instructions at every run. The
process waits (up to ``close_timeout``) for that learning before it ends.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os

from agents import Agent, Runner, set_default_openai_api, set_tracing_disabled

from ai_memory_sdk import Memory
from ai_memory_sdk.integrations.openai_agents import MemorySession, memory_instructions

INSTRUCTIONS = "You are a helpful assistant. Use what you know about the user naturally; be brief."


def _parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("message", help="what the user says this turn")
    p.add_argument("--user", default="default_user", help="whose memory (the subject)")
    p.add_argument("--session", default=None, help="the conversation (default: USER-chat)")
    p.add_argument("--model", default=os.environ.get("AGENT_MODEL", "gpt-4.1-mini"), help="the agent's model")
    p.add_argument("--chat-completions", action="store_true", help="use Chat Completions, not the Responses API")
    p.add_argument("--path", default=None, help="the memory's store (default: AI_MEMORY_PATH or per-user)")
    p.add_argument("--show-memory", action="store_true", help="wait for learning, then print the user's context")
    p.add_argument("--verbose", action="store_true", help="log what the SDK does")
    return p.parse_args()


async def turn(memory: Memory, args: argparse.Namespace) -> str:
    agent = Agent(
        name="Assistant",
        model=args.model,
        instructions=memory_instructions(memory, args.user, INSTRUCTIONS),
    )
    session = MemorySession(args.session or f"{args.user}-chat", memory=memory, subject_id=args.user)
    result = await Runner.run(agent, args.message, session=session)
    return str(result.final_output)


def main() -> None:
    args = _parse()
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING)
    if args.chat_completions:
        set_default_openai_api("chat_completions")
    if os.environ.get("OPENAI_BASE_URL"):
        set_tracing_disabled(True)  # traces go to OpenAI's platform; not for another endpoint
    with Memory(path=args.path) as memory:
        print(asyncio.run(turn(memory, args)))
        if args.show_memory:
            for run in memory.list_runs(args.user):
                if run.status in ("queued", "running"):
                    memory.wait_for_run(run.id)
            print("\n--- what memory holds about", args.user)
            print(memory.get_context(args.user))


if __name__ == "__main__":
    main()
