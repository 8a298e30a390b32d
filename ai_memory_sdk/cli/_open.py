"""Opening the store for a command: settings from options and environment, mistakes named as the user wrote them."""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import Any

from .. import config
from ..memory import Memory
from ._errors import UsageError, config_error

_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")  # postgresql://..., not a file to look for


def store_options(args: argparse.Namespace) -> dict[str, Any]:
    """The ``Memory(...)`` options given on the command line (the environment fills the rest)."""
    return {k: getattr(args, k) for k in ("path", "learner", "embedder") if getattr(args, k, None)}


def settings(options: dict[str, Any]) -> config.Settings:
    try:
        return config.resolve(**options)
    except (TypeError, ValueError) as exc:
        raise config_error(exc, options) from None


def open_memory(options: dict[str, Any], *, learns: bool) -> Memory:
    """A ``Memory`` for a command; one that does not learn opens an existing store, without workers or learner.

    Without workers, ``show`` cannot start learning other subjects' queued
    batches (paid LLM calls from a read); without a learner there is no
    "no LLM configured" warning where no LLM would be used.
    """
    if not learns:
        options = {"learner": "offline", **options, "background": False}
        _require_store(settings(options))
    else:
        settings(options)
    try:
        return Memory(**options)
    except (TypeError, ValueError) as exc:  # e.g. an embedder the store cannot build
        raise config_error(exc, options) from None


def _require_store(s: config.Settings) -> None:
    """A mistyped ``--path`` must not create directories and an empty store just to print nothing."""
    if config.choose_engine(s) != "local":
        return
    path = s.path or str(config.default_path())
    if not _URL.match(path) and not Path(path).is_file():
        raise UsageError(f"no store at {path} (--path or $AI_MEMORY_PATH)")
