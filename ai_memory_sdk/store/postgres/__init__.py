"""The PostgreSQL backend: one database shared by any number of processes and machines; ``PostgresStore``."""

from .store import PostgresStore

__all__ = ["PostgresStore"]
