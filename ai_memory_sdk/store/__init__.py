"""Durable stores behind one protocol (``base``): SQLite (``sqlite/``), PostgreSQL (``postgres/``)."""

from __future__ import annotations

import os

from .base import Claim, PassageIndex, PassResult, RunQueue, RunStats, Store


def is_postgres_url(path: str) -> bool:
    return path.startswith(("postgresql://", "postgres://"))


def open_store(
    path: str | os.PathLike[str], *, history_limit: int = 100, busy_timeout: float = 60.0, secure_delete: bool = True
) -> Store:
    """Open (creating and migrating) the store at ``path``: a SQLite file or a ``postgresql://`` URL."""
    path = os.fspath(path)
    if is_postgres_url(path):
        from .postgres import PostgresStore

        return PostgresStore(path, history_limit=history_limit, secure_delete=secure_delete)
    from .sqlite import SQLiteStore

    return SQLiteStore(path, history_limit=history_limit, busy_timeout=busy_timeout, secure_delete=secure_delete)


__all__ = ["Claim", "PassResult", "PassageIndex", "RunQueue", "RunStats", "Store", "is_postgres_url", "open_store"]
