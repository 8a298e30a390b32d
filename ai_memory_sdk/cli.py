"""The ``ai-memory`` command: demo, ingest, show, search, runs, worker, delete.

The CLI may print; the library never does.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from . import config
from .memory import Memory

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


def _progress(done: int, total: int, label: str, start: float) -> None:
    """A one-line progress bar on stderr."""
    width = 30
    filled = int(width * done / total) if total else width
    rate = done / max(time.monotonic() - start, 1e-9)
    sys.stderr.write(f"\r{label} [{'#' * filled}{'.' * (width - filled)}] {done}/{total} ({rate:.0f}/s)")
    if done >= total:
        sys.stderr.write("\n")
    sys.stderr.flush()


def _read_messages(path: Path) -> list[dict[str, Any]]:
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".jsonl":
        return [json.loads(line) for line in text.splitlines() if line.strip()]
    data = json.loads(text)
    if isinstance(data, dict) and isinstance(data.get("messages"), list):
        data = data["messages"]
    if not isinstance(data, list):
        raise SystemExit(f"{path}: expected a JSON list of messages, an object with 'messages', or JSONL")
    return data


def _batches(items: Sequence[dict[str, Any]], size: int) -> Iterable[list[dict[str, Any]]]:
    for i in range(0, len(items), size):
        yield list(items[i : i + size])


def cmd_demo(mem: Memory, args: argparse.Namespace) -> int:
    uid = "demo-user"
    if mem.get_memory_agent_id(uid):
        mem.delete_user(uid)
    learner = getattr(getattr(mem._engine, "learner", None), "name", mem.settings.learner)
    print(f"engine: {mem.engine}; learner: {learner}; store: {mem.settings.path or config.default_path()}")
    for i, batch in enumerate(DEMO_CONVERSATION, 1):
        for m in batch:
            print(f"  {m['role']:>9}: {m['content']}")
        run = mem.add_messages(uid, batch, skip_vector_storage=False)
        mem.wait_for_run(run, timeout=args.timeout)
        print(f"  -- batch {i} learned (run {run})\n")
    print("Learned context blocks (what an app puts in its system prompt):\n")
    print(mem.get_context(uid))
    print("\nsearch('ocean animals'):", mem.search(uid, "octopuses ocean animals", tags=[], limit=2))
    return 0


def cmd_ingest(mem: Memory, args: argparse.Namespace) -> int:
    messages = _read_messages(Path(args.file))
    start = time.monotonic()
    runs = []
    batches = list(_batches(messages, args.batch))
    for i, batch in enumerate(batches, 1):
        runs.append(mem.add_messages_for_subject(args.subject, batch, skip_vector_storage=not args.archive))
        _progress(i, len(batches), "stored ", start)
    if args.no_wait or not mem.settings.background:
        print(f"{len(messages)} messages stored in {len(runs)} run(s); learning continues in the background/worker")
        return 0
    start = time.monotonic()
    for i, run in enumerate(runs, 1):
        mem.wait_for_run(run, timeout=args.timeout)
        _progress(i, len(runs), "learned", start)
    print(f"{len(messages)} messages learned for subject {args.subject!r}")
    return 0


def cmd_show(mem: Memory, args: argparse.Namespace) -> int:
    context = mem.get_context(args.subject)
    print(context if context else f"subject {args.subject!r} has no blocks")
    return 0


def cmd_search(mem: Memory, args: argparse.Namespace) -> int:
    tags = [] if args.all_roles else None
    for r in mem.search_passages(args.subject, args.query, tags=tags, limit=args.limit):
        print(f"{r.score:.4f}  {r.created_at:%Y-%m-%d %H:%M}  {r.role or '-':>9}  {r.content}")
    return 0


def cmd_runs(mem: Memory, args: argparse.Namespace) -> int:
    for r in mem.list_runs(args.subject, status=args.status):
        took = f"{(r.finished_at - r.started_at).total_seconds():.2f}s" if r.finished_at and r.started_at else "-"
        print(
            f"{r.id}  {r.status:<9}  {r.created_at:%Y-%m-%d %H:%M:%S}  {took:>7}  learner={r.learner or '-'}"
            f"  calls={r.llm_calls}  tokens={r.prompt_tokens}+{r.completion_tokens}"
            + (f"  error={r.error}" if r.error else "")
        )
    return 0


def cmd_delete(mem: Memory, args: argparse.Namespace) -> int:
    mem.delete_user(args.subject)
    print(f"deleted everything stored about {args.subject!r}")
    return 0


def cmd_worker(args: argparse.Namespace, options: dict[str, Any]) -> int:
    from .engines.local import LocalEngine

    settings = config.resolve(**{**options, "background": False})
    if config.choose_engine(settings) != "local":
        raise SystemExit("ai-memory worker serves the local engine only")
    engine = LocalEngine(settings)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    print(f"worker on {engine.path} (learner {engine.learner.name}); Ctrl-C to stop", file=sys.stderr)
    try:
        passes = engine.work(once=args.once, stop=stop)
        if args.once:
            print(f"{passes} pass(es) run; queue empty", file=sys.stderr)
    except KeyboardInterrupt:
        pass
    finally:
        engine.close()
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ai-memory", description="Long-term memory for AI applications.")
    p.add_argument("--path", help="SQLite file (default: $AI_MEMORY_PATH or the per-user data path)")
    p.add_argument("--learner", choices=["auto", "llm", "offline"], help="memory agent (default: auto)")
    p.add_argument("--embedder", help="auto, none, openai:<model>, sentence-transformers:<name>")
    p.add_argument("-v", "--verbose", action="store_true", help="log at INFO")
    sub = p.add_subparsers(dest="command", required=True)
    d = sub.add_parser("demo", help="learn from a short built-in conversation and print the blocks")
    d.add_argument("--timeout", type=float, default=300)
    i = sub.add_parser("ingest", help="store and learn messages from a JSON or JSONL file")
    i.add_argument("file")
    i.add_argument("--subject", required=True)
    i.add_argument("--batch", type=int, default=20, help="messages per add_messages call")
    i.add_argument(
        "--archive",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also archive messages for search (default: yes)",
    )
    i.add_argument("--no-wait", action="store_true", help="return once stored")
    i.add_argument("--timeout", type=float, default=600)
    s = sub.add_parser("show", help="print a subject's blocks as prompt-formatted XML")
    s.add_argument("subject")
    q = sub.add_parser("search", help="search a subject's archived messages")
    q.add_argument("subject")
    q.add_argument("query")
    q.add_argument("--limit", type=int, default=10)
    q.add_argument("--all-roles", action="store_true", help="search every role, not only user messages")
    r = sub.add_parser("runs", help="list a subject's runs")
    r.add_argument("subject")
    r.add_argument("--status", choices=["queued", "running", "completed", "failed", "cancelled"])
    w = sub.add_parser("worker", help="process the queue of a store opened with background=False")
    w.add_argument("--once", action="store_true", help="drain the queue and exit")
    x = sub.add_parser("delete", help="erase everything stored about a subject")
    x.add_argument("subject")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    options = {k: v for k, v in (("path", args.path), ("learner", args.learner), ("embedder", args.embedder)) if v}
    if args.command == "demo" and "path" not in options:
        options["path"] = ":memory:"
    if args.command == "worker":
        return cmd_worker(args, options)
    handlers = {
        "demo": cmd_demo,
        "ingest": cmd_ingest,
        "show": cmd_show,
        "search": cmd_search,
        "runs": cmd_runs,
        "delete": cmd_delete,
    }
    with Memory(**options) as mem:
        return handlers[args.command](mem, args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
