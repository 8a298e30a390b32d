"""The ``ai-memory`` command: demo, ingest, show, search, runs, worker, delete, migrate, mcp, ui, serve, keys.

The CLI prints; the library only logs. A mistake (command line, file,
environment) ends with one line on stderr and exit status 2; a failure of
the work itself (LLM endpoint, store, timeout) with one line and status 1.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from ..errors import AIMemoryError
from . import learn, mcp, server, stores, subjects, ui
from ._errors import FAILED, INTERRUPTED, USAGE, UsageError, report
from ._open import store_options
from ._parser import CommandModule, build_parser

# Each module registers its commands; a new command group is one module and one entry here.
MODULES: tuple[CommandModule, ...] = (learn, subjects, stores, mcp, ui, server)


def main(argv: Sequence[str] | None = None) -> int:
    parser, commands = build_parser(MODULES)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    try:
        return commands[args.command](args, store_options(args))
    except UsageError as exc:
        return report(str(exc), USAGE)
    except KeyboardInterrupt:
        return report("interrupted", INTERRUPTED)
    except (AIMemoryError, TimeoutError, OSError) as exc:  # RunFailedError carries the learner's error
        return report(str(exc), FAILED)


__all__ = ["MODULES", "build_parser", "main"]
