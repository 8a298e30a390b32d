"""The command line: every command, option and argument, with help; mistakes are one line and exit status 2."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable, Sequence
from typing import Any, NoReturn, Protocol, TypeVar

from .. import __version__
from .. import _validation as check
from ._errors import USAGE, one_line

T = TypeVar("T")
N = TypeVar("N", int, float)
STATUSES = ("queued", "running", "completed", "failed", "cancelled")


Command = Callable[[argparse.Namespace, dict[str, Any]], int]
"""A command: its parsed arguments and the ``Memory`` options given on the command line, to an exit status."""
AddCommand = Callable[[str, str], argparse.ArgumentParser]
"""Adds a command (name, help) with the store options and returns its parser, for the command's own arguments."""


class CommandModule(Protocol):
    """A module of commands (``learn``, ``subjects``, ...): ``register`` adds them and returns their handlers."""

    def register(self, command: AddCommand) -> dict[str, Command]: ...


class _Parser(argparse.ArgumentParser):
    """``argparse`` whose errors are one line naming the option, with a pointer to ``--help``."""

    def error(self, message: str) -> NoReturn:
        self.exit(USAGE, f"{self.prog}: error: {one_line(message)} (see {self.prog} --help)\n")


def argument(convert: Callable[[str], T]) -> Callable[[str], T]:
    """An argparse ``type`` that reports the check's own message rather than argparse's "invalid value"."""

    def checked(text: str) -> T:
        try:
            return convert(text)
        except (TypeError, ValueError) as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    return checked


def _bounded(text: str, parse: Callable[[str], N], ok: Callable[[N], bool], what: str) -> N:
    """``text`` read by ``parse`` and accepted by ``ok``, else a ValueError saying what it must be."""
    try:
        value = parse(text)
    except ValueError:
        raise ValueError(f"must be {what}, got {text!r}") from None
    if not ok(value):
        raise ValueError(f"must be {what}, got {text!r}")
    return value


def count(text: str) -> int:
    return _bounded(text, int, lambda v: v >= 1, "a whole number of at least 1")


def seconds(text: str) -> float:
    return _bounded(text, float, lambda v: math.isfinite(v) and v > 0, "a positive number of seconds")


def port(text: str) -> int:
    return _bounded(text, int, lambda v: 0 <= v <= 65535, "a port number from 0 (any free port) to 65535")


def workers(text: str) -> int:
    return _bounded(text, int, lambda v: v >= 0, "a whole number (0: no workers in this process)")


def rate(text: str) -> float:
    return _bounded(text, float, lambda v: 0 <= v < math.inf, "a number of requests per second (0: no limit)")


def subject(text: str) -> str:
    return check.subject_id(text, "subject")


def _add_store_options(p: argparse.ArgumentParser, *, after_command: bool) -> None:
    """The options every command takes, before or after its name (``show kai --path x.db``)."""
    # After the command, an option left out must not overwrite the value given before it.
    unset = argparse.SUPPRESS if after_command else None
    p.add_argument(
        "--path",
        default=unset,
        help="the store: a SQLite file or a postgresql:// URL (default: $AI_MEMORY_PATH, else the per-user data file)",
    )
    p.add_argument(
        "--learner",
        default=unset,
        choices=["auto", "llm", "offline"],
        help="memory agent of the commands that learn (demo, ingest, worker, mcp); default: $AI_MEMORY_LEARNER or auto",
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


def build_parser(modules: Sequence[CommandModule]) -> tuple[argparse.ArgumentParser, dict[str, Command]]:
    """The parser of ``ai-memory`` (the store options, then each module's commands) and the commands' handlers."""
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

    handlers: dict[str, Command] = {}
    for module in modules:
        handlers.update(module.register(command))
    return p, handlers
