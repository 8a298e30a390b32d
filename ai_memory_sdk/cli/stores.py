"""Commands on whole stores: ``migrate`` copies one into another (a SQLite file <-> a PostgreSQL database)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from ..store import is_postgres_url, open_store
from ..store.base import Store
from ..store.transfer import NotEmptyError, copy_store, count_rows
from . import _display
from ._errors import UsageError
from ._parser import AddCommand, Command


def _open(path: str, *, source: bool) -> Store:
    if not is_postgres_url(path):
        path = os.path.expanduser(path)
        if source and not Path(path).is_file():
            raise UsageError(f"option --from: no store at {path}")
        if not source and Path(path).is_dir():
            raise UsageError(f"option --to: {path} is a directory; give the path of a SQLite file")
    return open_store(path)


def migrate(args: argparse.Namespace, options: dict[str, Any]) -> int:
    if args.source == args.target:
        raise UsageError("options --from and --to name the same store")
    source = _open(args.source, source=True)
    try:
        target = _open(args.target, source=False)
        try:
            total = count_rows(source)
            print(f"copying {source.path} to {target.path} ({total} rows)", file=sys.stderr, flush=True)
            with _display.progress(total, "copying", "row") as bar:
                try:
                    copied = copy_store(source, target, bar.update)
                except NotEmptyError as exc:
                    raise UsageError(str(exc)) from None
        finally:
            target.close()
    finally:
        source.close()
    shown = ", ".join(f"{n} {table}" for table, n in copied.items() if n and table != "meta")
    print(f"copied {shown or 'an empty store'} to {target.path}")
    return 0


def register(command: AddCommand) -> dict[str, Command]:
    m = command(
        "migrate",
        "copy a whole store into an empty one: a SQLite file to a PostgreSQL database, or back",
    )
    m.add_argument("--from", dest="source", required=True, help="the store to copy: a SQLite file or postgresql:// URL")
    m.add_argument(
        "--to",
        dest="target",
        required=True,
        help="an empty store to copy into (created if missing; a PostgreSQL database must exist, empty)",
    )
    return {"migrate": migrate}
