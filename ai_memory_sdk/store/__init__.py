"""Durable stores behind one protocol (``base``): SQLite (``sqlite/``), PostgreSQL (``postgres/``)."""

from __future__ import annotations

import os
import re

from ..errors import StoreError
from .base import Claim, PassageIndex, PassResult, RunQueue, RunStats, Store


def is_postgres_url(path: str) -> bool:
    return path.startswith(("postgresql://", "postgres://"))


def mask_url(url: str) -> str:
    """The URL with its password replaced by ``***`` (in the authority and in a ``password=`` parameter)."""
    masked = re.sub(r"^([A-Za-z][A-Za-z0-9+.-]*://[^:/@?#]*):[^@/?#]*@", r"\1:***@", url)
    return re.sub(r"([?&]password=)[^&#]*", r"\1***", masked)


def open_store(
    path: str | os.PathLike[str], *, history_limit: int = 100, busy_timeout: float = 60.0, secure_delete: bool = True
) -> Store:
    """Open (creating and migrating) the store at ``path``: a SQLite file or a ``postgresql://`` URL."""
    path = os.fspath(path)
    if is_postgres_url(path):
        try:
            from .postgres import PostgresStore
        except ImportError as exc:
            if exc.name not in ("psycopg", "psycopg_pool"):
                raise
            raise StoreError(
                mask_url(path), "a PostgreSQL store needs the postgres extra: pip install 'ai-memory-sdk[postgres]'"
            ) from None
        return PostgresStore(path, history_limit=history_limit, secure_delete=secure_delete)
    from .sqlite import SQLiteStore

    return SQLiteStore(path, history_limit=history_limit, busy_timeout=busy_timeout, secure_delete=secure_delete)


__all__ = [
    "Claim",
    "PassResult",
    "PassageIndex",
    "RunQueue",
    "RunStats",
    "Store",
    "is_postgres_url",
    "mask_url",
    "open_store",
]
