"""The commands that read or erase one subject: ``show``, ``search``, ``runs``, ``delete``.

They open an existing store without workers (see ``_open.open_memory``), so
reading never learns, and refuse a subject the store does not have.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from .. import _validation as check
from ..memory import Memory
from . import _display
from ._errors import UsageError
from ._open import open_memory
from ._parser import STATUSES, AddCommand, Command, argument, count, subject


def _require_subject(mem: Memory, subject: str) -> None:
    if mem.get_memory_agent_id(subject) is None:
        info = mem._engine.info()
        raise UsageError(f"no subject {subject!r} in {info.get('store', 'the ' + info['engine'] + ' engine')}")


def show(args: argparse.Namespace, options: dict[str, Any]) -> int:
    with open_memory(options, learns=False) as mem:
        _require_subject(mem, args.subject)
        context = mem.get_context(args.subject)
    print(context if context else f"subject {args.subject!r} has no blocks")
    return 0


def search(args: argparse.Namespace, options: dict[str, Any]) -> int:
    with open_memory(options, learns=False) as mem:
        _require_subject(mem, args.subject)
        results = mem.search_passages(args.subject, args.query, tags=[] if args.all_roles else None, limit=args.limit)
    if not results:
        print(f"no archived message of {args.subject!r} matches {args.query!r}", file=sys.stderr)
        return 0
    rows = [
        [f"{r.score:.4f}", f"{r.created_at:%Y-%m-%d %H:%M}", r.role or "-", r.content.replace("\n", "\\n")]
        for r in results
    ]
    print(_display.table(["score", "time", "role", "message"], rows))
    return 0


def runs(args: argparse.Namespace, options: dict[str, Any]) -> int:
    with open_memory(options, learns=False) as mem:
        _require_subject(mem, args.subject)
        found = mem.list_runs(args.subject, status=args.status)
    if not found:
        print(f"subject {args.subject!r} has no {args.status + ' ' if args.status else ''}runs", file=sys.stderr)
        return 0
    rows = []
    for r in found:
        took = f"{(r.finished_at - r.started_at).total_seconds():.2f}s" if r.finished_at and r.started_at else "-"
        rows.append(
            [
                r.id,
                r.status,
                f"{r.created_at:%Y-%m-%d %H:%M:%S}",
                took,
                r.learner or "-",
                str(r.llm_calls),
                f"{r.prompt_tokens}+{r.completion_tokens}",
                r.stop_reason or "-",
                " ".join((r.error or "").split()),
            ]
        )
    header = ["run", "status", "created", "took", "learner", "calls", "tokens", "stop", "error"]
    print(_display.table(header, rows))
    return 0


def delete(args: argparse.Namespace, options: dict[str, Any]) -> int:
    with open_memory(options, learns=False) as mem:
        _require_subject(mem, args.subject)
        mem.delete_user(args.subject)
    print(f"deleted everything stored about {args.subject!r}")
    return 0


def register(command: AddCommand) -> dict[str, Command]:
    s = command("show", "print a subject's blocks as prompt-formatted XML")
    s.add_argument("subject", type=argument(subject), help="the user (or subject) id")

    q = command("search", "search a subject's archived messages")
    q.add_argument("subject", type=argument(subject), help="the user (or subject) id")
    q.add_argument("query", type=argument(check.query), help="words or a question")
    q.add_argument("--limit", type=argument(count), default=10, help="most results to print (default 10)")
    q.add_argument("--all-roles", action="store_true", help="search every role, not only user messages")

    r = command("runs", "list a subject's runs (the learning of each stored batch)")
    r.add_argument("subject", type=argument(subject), help="the user (or subject) id")
    r.add_argument("--status", choices=STATUSES, help="only runs in this status")

    x = command("delete", "erase everything stored about a subject")
    x.add_argument("subject", type=argument(subject), help="the user (or subject) id")
    return {"show": show, "search": search, "runs": runs, "delete": delete}
