"""How the CLI ends on an error: one line on stderr, no traceback, an exit status that tells the kind."""

from __future__ import annotations

import sys

USAGE = 2  # a mistake in the command line, a file or the environment: nothing was done
FAILED = 1  # the command was right but its work failed (the LLM endpoint, the store, a timeout)
INTERRUPTED = 130


class UsageError(Exception):
    """A mistake the user can fix: the message names the file and line, the option or the variable."""


def one_line(text: str) -> str:
    """Error texts can span lines (pydantic, HTTP bodies); a report is one line."""
    return " ".join(text.split())


def report(message: str, status: int) -> int:
    sys.stderr.write(f"ai-memory: error: {one_line(message)}\n")
    sys.stderr.flush()
    return status


def config_error(exc: ValueError | TypeError, options: dict[str, object]) -> UsageError:
    """A bad setting, named as the user wrote it: ``option --embedder`` or ``environment variable AI_MEMORY_...``.

    ``config.resolve`` names the source as ``argument NAME`` or ``environment variable VAR``.
    """
    text = str(exc)
    name, sep, rest = text.removeprefix("argument ").partition(": ")
    if text.startswith("argument ") and sep and name in options:
        return UsageError(f"option --{name.replace('_', '-')}: {rest}")
    return UsageError(text)
