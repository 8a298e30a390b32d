"""How the CLI ends on an error: one line on stderr, no traceback, an exit status that tells the kind."""

from __future__ import annotations

import os
import sys

from pydantic import ValidationError

from .. import config

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
    """A bad setting, named as the user wrote it: ``--embedder`` or ``AI_MEMORY_LEARNER=...``."""
    if isinstance(exc, ValidationError):
        err = exc.errors()[0]
        field = str(err["loc"][0]) if err["loc"] else ""
        text = f"{field} {err['msg'].lower()}, got {err['input']!r}"
    else:
        text = str(exc)
        field = text.split(" ", 1)[0]
    if field in options:
        return UsageError(f"option --{field}: {text}")
    var = config._ENV.get(field)
    if var and os.environ.get(var):
        return UsageError(f"environment variable {var}={os.environ[var]!r}: {text}")
    return UsageError(text)
