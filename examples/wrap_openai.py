"""Long-term memory for an existing OpenAI app, by wrapping its client: one turn per run.

    OPENAI_API_KEY=sk-... python examples/wrap_openai.py --user alice "I'm Alice and I love hiking."
    OPENAI_API_KEY=sk-... python examples/wrap_openai.py --user alice "Plan my weekend." --stream
    OPENAI_API_KEY=sk-... python examples/wrap_openai.py --user alice "What do I like?" --responses

``memory.wrap(client)`` returns the same client, but each call with
``user=...`` gets what memory holds about that user in its system message,
and the turn (the user's message and the reply) is queued for the memory
agent. If memory is unavailable or slow, calls go on without it.
"""

from __future__ import annotations

import argparse
import logging
import os

from openai import OpenAI

from ai_memory_sdk import Memory

SYSTEM = "You are a helpful assistant. Be brief."


def _parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("message", help="what the user says this turn")
    p.add_argument("--user", default="default_user", help="whose memory")
    p.add_argument("--model", default=os.environ.get("CHAT_MODEL", "gpt-4.1-mini"), help="chat model")
    p.add_argument("--path", default=None, help="the memory's store (default: AI_MEMORY_PATH or per-user)")
    p.add_argument("--stream", action="store_true", help="stream the reply")
    p.add_argument("--responses", action="store_true", help="use the Responses API, not Chat Completions")
    p.add_argument("--verbose", action="store_true", help="log what the SDK does")
    return p.parse_args()


def main() -> None:
    args = _parse()
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING)
    with Memory(path=args.path) as memory:
        client = memory.wrap(OpenAI())
        if args.responses:
            response = client.responses.create(
                model=args.model, instructions=SYSTEM, input=args.message, user=args.user
            )
            print(response.output_text)
            return
        messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": args.message}]
        if not args.stream:
            completion = client.chat.completions.create(model=args.model, messages=messages, user=args.user)
            print(completion.choices[0].message.content)
            return
        stream = client.chat.completions.create(model=args.model, messages=messages, user=args.user, stream=True)
        for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                print(chunk.choices[0].delta.content, end="", flush=True)
        print()


if __name__ == "__main__":
    main()
