"""The commands that learn: ``demo``, ``ingest`` and ``worker``."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from .. import config
from . import _display
from ._errors import UsageError, config_error
from ._files import read_messages
from ._open import open_memory, settings
from ._parser import AddCommand, Command, argument, count, seconds, subject

DEMO_USER = "demo-user"
DEMO_CONVERSATION: list[list[dict[str, str]]] = [
    [
        {"role": "user", "content": "Hi! My name is Maya and I live in Lisbon."},
        {"role": "assistant", "content": "Nice to meet you, Maya! How is Lisbon these days?"},
        {"role": "user", "content": "Sunny as always. I work as a marine biologist at the aquarium."},
        {"role": "assistant", "content": "That sounds fascinating. What do you study there?"},
    ],
    [
        {"role": "user", "content": "Mostly octopuses. I love octopuses and I also love bouldering."},
        {"role": "assistant", "content": "Octopuses are brilliant climbers too, in their way!"},
        {"role": "user", "content": "Ha, true. I don't like crowded beaches though, so I surf at dawn."},
        {"role": "assistant", "content": "Dawn surf sessions sound peaceful."},
    ],
]
# Semantic search finds the octopus messages from a query without the word; lexical search needs the word.
DEMO_QUERIES = {"semantic": "ocean animals", "lexical": "octopuses"}


def demo(args: argparse.Namespace, options: dict[str, Any]) -> int:
    options.setdefault("path", ":memory:")
    with open_memory(options, learns=True) as mem:
        if mem.get_memory_agent_id(DEMO_USER):
            mem.delete_user(DEMO_USER)
        info = mem._engine.info()
        store = "a throwaway temporary store" if options["path"] == ":memory:" else info.get("store", "-")
        print(f"engine: {info['engine']}; learner: {info.get('learner', '-')}; store: {store}")
        for i, batch in enumerate(DEMO_CONVERSATION, 1):
            for m in batch:
                print(f"  {m['role']:>9}: {m['content']}")
            run = mem.add_messages(DEMO_USER, batch, skip_vector_storage=False)
            _display.wait_for_runs(mem, [run], f"learning batch {i}", args.timeout)
            print(f"  -- batch {i} learned (run {run})\n")
        print("Learned context blocks (what an app puts in its system prompt):\n")
        print(mem.get_context(DEMO_USER))
        query = DEMO_QUERIES["lexical" if info.get("embedder", "none") == "none" else "semantic"]
        results = mem.search(DEMO_USER, query, tags=[], limit=2)
        print(f"\nmemory.search({DEMO_USER!r}, {query!r}, tags=[], limit=2) -> {results!r}")
    return 0


def ingest(args: argparse.Namespace, options: dict[str, Any]) -> int:
    path = Path(args.file)
    messages = [record.message for record in read_messages(path)]  # the whole file, checked before storing
    if args.no_wait:
        options["background"] = False  # nothing to start here: a worker learns them
    with open_memory(options, learns=True) as mem:
        runs = []
        with _display.progress(len(messages), "storing", "msg") as bar:
            for start in range(0, len(messages), args.batch):
                batch = messages[start : start + args.batch]
                if args.bare:
                    run = mem.add_messages_for_subject(args.subject, batch, skip_vector_storage=not args.archive)
                else:  # the user API: creates the human and summary blocks the memory agent fills
                    run = mem.add_messages(args.subject, batch, skip_vector_storage=not args.archive)
                runs.append(run)
                bar.update(len(batch))
        if args.no_wait:
            print(
                f"{len(messages)} messages stored for subject {args.subject!r} in {len(runs)} run(s);"
                " a process with workers on this store (ai-memory worker) learns them"
            )
            return 0
        _display.wait_for_runs(mem, runs, f"learning {len(runs)} batch(es) of {path}", args.timeout)
        unlearned = any(mem.get_run(run).stop_reason == "no_blocks" for run in runs)
    if unlearned:
        print(
            f"{len(messages)} messages stored for subject {args.subject!r}; nothing learned: it has no blocks"
            " (ingest without --bare creates the human and summary blocks)"
        )
        return 0
    print(f"{len(messages)} messages learned for subject {args.subject!r}")
    return 0


def worker(args: argparse.Namespace, options: dict[str, Any]) -> int:
    from ..engines.local import LocalEngine

    s = settings({**options, "background": False, **({"workers": args.concurrency} if args.concurrency else {})})
    if config.choose_engine(s) != "local":
        raise UsageError("ai-memory worker serves the local engine only (unset LETTA_API_KEY / AI_MEMORY_ENGINE)")
    try:
        engine = LocalEngine(s)
    except (TypeError, ValueError) as exc:
        raise config_error(exc, options) from None
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    info = engine.info()
    until = "until the queue is empty" if args.once else "until Ctrl-C"
    print(f"worker on {info['store']} with {_display.learner_text(info, s)}, {until}", file=sys.stderr, flush=True)
    try:
        passes = engine.work(once=args.once, stop=stop)
        if args.once:
            print(f"{passes} pass(es) run; queue empty", file=sys.stderr)
    except KeyboardInterrupt:
        pass  # Ctrl-C is how a foreground worker is stopped
    finally:
        engine.close()
    return 0


def register(command: AddCommand) -> dict[str, Command]:
    d = command("demo", "learn from a short built-in conversation and print the blocks (a throwaway store by default)")
    d.add_argument(
        "--timeout", type=argument(seconds), default=300.0, help="seconds to wait for each batch (default 300)"
    )

    i = command("ingest", "store messages from a JSON or JSON Lines file and learn them")
    i.add_argument(
        "file",
        help="a JSON list of messages, an object with a 'messages' list, or JSON Lines (one message per line)",
    )
    i.add_argument("--subject", required=True, type=argument(subject), help="the user (or subject) they are about")
    i.add_argument(
        "--bare",
        action="store_true",
        help="a subject without the default human and summary blocks (blocks are then created by the app)",
    )
    i.add_argument("--batch", type=argument(count), default=20, help="messages per stored batch (default 20)")
    i.add_argument(
        "--archive",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also archive the messages for search (default: yes)",
    )
    i.add_argument("--no-wait", action="store_true", help="return once stored; a worker learns them later")
    i.add_argument(
        "--timeout", type=argument(seconds), default=600.0, help="seconds to wait for each batch (default 600)"
    )

    w = command("worker", "learn the queued batches of a store whose apps use background=False")
    w.add_argument("--once", action="store_true", help="drain the queue and exit")
    w.add_argument(
        "--concurrency",
        type=argument(count),
        help="passes learned at once by this process (default 4); SIGTERM finishes or hands back each",
    )
    return {"demo": demo, "ingest": ingest, "worker": worker}
