"""The command line: every command, option and argument, with help; mistakes are one line and exit status 2."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from typing import NoReturn, TypeVar

from .. import __version__
from .. import _validation as check
from ._errors import USAGE, one_line

T = TypeVar("T")
STATUSES = ("queued", "running", "completed", "failed", "cancelled")


class _Parser(argparse.ArgumentParser):
    """``argparse`` whose errors are one line naming the option, with a pointer to ``--help``."""

    def error(self, message: str) -> NoReturn:
        self.exit(USAGE, f"{self.prog}: error: {one_line(message)} (see {self.prog} --help)\n")


def _argument(convert: Callable[[str], T]) -> Callable[[str], T]:
    """An argparse ``type`` that reports the check's own message rather than argparse's "invalid value"."""

    def checked(text: str) -> T:
        try:
            return convert(text)
        except (TypeError, ValueError) as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    return checked


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"must be a whole number of at least 1, got {text!r}") from None
    if value < 1:
        raise ValueError(f"must be a whole number of at least 1, got {text!r}")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"must be a number of seconds, got {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"must be a positive number of seconds, got {text!r}")
    return value


def _subject(text: str) -> str:
    return check.subject_id(text, "subject")


def _add_store_options(p: argparse.ArgumentParser, *, after_command: bool) -> None:
    """The options every command takes, before or after its name (``show kai --path x.db``)."""
    # After the command, an option left out must not overwrite the value given before it.
    unset = argparse.SUPPRESS if after_command else None
    p.add_argument(
        "--path", default=unset, help="SQLite file of the store (default: $AI_MEMORY_PATH, else the per-user data file)"
    )
    p.add_argument(
        "--learner",
        default=unset,
        choices=["auto", "llm", "offline"],
        help="memory agent of the commands that learn (demo, ingest, worker); default: $AI_MEMORY_LEARNER or auto",
    )
    p.add_argument(
        "--embedder",
        default=unset,
        help="auto, none, openai:<model> or sentence-transformers:<name> (default: $AI_MEMORY_EMBEDDER or auto)",
    )
    p.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        default=unset if after_command else False,
        help="log what the library does (INFO)",
    )


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="ai-memory", description="Long-term memory for AI applications.")
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}", help="print the version")
    _add_store_options(p, after_command=False)
    sub = p.add_subparsers(
        dest="command", required=True, metavar="COMMAND", help="what to do (COMMAND --help: its options)"
    )

    def command(name: str, help: str) -> argparse.ArgumentParser:
        c = sub.add_parser(name, help=help, description=help)
        _add_store_options(c, after_command=True)
        return c

    d = command("demo", "learn from a short built-in conversation and print the blocks (a throwaway store by default)")
    d.add_argument(
        "--timeout", type=_argument(_seconds), default=300.0, help="seconds to wait for each batch (default 300)"
    )

    i = command("ingest", "store messages from a JSON or JSON Lines file and learn them")
    i.add_argument(
        "file",
        help="a JSON list of messages, an object with a 'messages' list, or JSON Lines (one message per line)",
    )
    i.add_argument("--subject", required=True, type=_argument(_subject), help="the user (or subject) they are about")
    i.add_argument(
        "--bare",
        action="store_true",
        help="a subject without the default human and summary blocks (blocks are then created by the app)",
    )
    i.add_argument("--batch", type=_argument(_count), default=20, help="messages per stored batch (default 20)")
    i.add_argument(
        "--archive",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also archive the messages for search (default: yes)",
    )
    i.add_argument("--no-wait", action="store_true", help="return once stored; a worker learns them later")
    i.add_argument(
        "--timeout", type=_argument(_seconds), default=600.0, help="seconds to wait for each batch (default 600)"
    )

    s = command("show", "print a subject's blocks as prompt-formatted XML")
    s.add_argument("subject", type=_argument(_subject), help="the user (or subject) id")

    q = command("search", "search a subject's archived messages")
    q.add_argument("subject", type=_argument(_subject), help="the user (or subject) id")
    q.add_argument("query", type=_argument(check.query), help="words or a question")
    q.add_argument("--limit", type=_argument(_count), default=10, help="most results to print (default 10)")
    q.add_argument("--all-roles", action="store_true", help="search every role, not only user messages")

    r = command("runs", "list a subject's runs (the learning of each stored batch)")
    r.add_argument("subject", type=_argument(_subject), help="the user (or subject) id")
    r.add_argument("--status", choices=STATUSES, help="only runs in this status")

    w = command("worker", "learn the queued batches of a store whose apps use background=False")
    w.add_argument("--once", action="store_true", help="drain the queue and exit")

    x = command("delete", "erase everything stored about a subject")
    x.add_argument("subject", type=_argument(_subject), help="the user (or subject) id")
    return p
