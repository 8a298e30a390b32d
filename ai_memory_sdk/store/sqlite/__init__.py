"""The SQLite backend: one file, WAL mode; ``SQLiteStore`` with its queue and passage index."""

from .store import SQLiteStore

__all__ = ["SQLiteStore"]
