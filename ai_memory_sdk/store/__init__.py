"""Durable stores (SQLite now; PostgreSQL later)."""

from .sqlite import Claim, SQLiteStore

__all__ = ["Claim", "SQLiteStore"]
