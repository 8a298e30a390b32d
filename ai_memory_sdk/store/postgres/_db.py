"""The PostgreSQL connection layer: a connection pool per process, transactions, schema migration, errors.

Each process has its own ``psycopg_pool`` pool (``_fork.PerProcess``: a
forked child builds a new one and never touches its parent's sockets), of
autocommit connections on which ``tx()`` opens explicit transactions.
Connecting runs under the fork gate (a fork must not copy a resolver or TLS
lock held by a pool thread). Every connection works in the schema
``ai_memory`` (``search_path``), so the store shares a database with other
applications' tables without touching them.

The schema is created and migrated on first open under an advisory lock, so
any number of processes on any number of machines may open a new database
at once. A database of a newer schema is refused; a process that sees the
schema migrated past it while it runs (a notification on
``ai_memory_schema``, or a new pooled connection) refuses every later call,
so two package versions never write one database with different ideas of
its schema.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import psycopg
from psycopg import sql
from psycopg_pool import ConnectionPool, PoolTimeout

from ..._fork import PerProcess, gate
from ..._process import process_owner
from ...errors import StoreError
from .. import mask_url
from ._schema import MIGRATIONS, SCHEMA, SCHEMA_VERSION

log = logging.getLogger(__name__)

_LOCK_KEY = 0x61695F6D656D6F72  # pg_advisory_lock key of schema migrations ("ai_memor")
SCHEMA_CHANNEL = "ai_memory_schema"
POOL_TIMEOUT = 30.0  # seconds a call waits for a free pooled connection
CONNECT_TIMEOUT = 10  # seconds, libpq connect_timeout


_C = TypeVar("_C", bound="_GatedConnection")


class _GatedConnection(psycopg.Connection[Any]):
    """A connection whose connect runs under the fork gate (the pool connects from its own threads)."""

    @classmethod
    def connect(cls: type[_C], conninfo: str = "", **kwargs: Any) -> _C:
        with gate:
            return super().connect(conninfo, **kwargs)


class Database:
    """One PostgreSQL database: this process's pool, ``tx()``/``read()`` transactions and schema migration."""

    def __init__(self, url: str, *, pool_size: int = 16) -> None:
        self.url = url
        self.path = mask_url(url)
        self.pool_size = pool_size
        self.closed = False
        self.newer_schema: int | None = None  # set when another process migrated past this package
        self.vectors = "bytea"  # or "pgvector": how passage vectors are stored (decided when the store is created)
        self.search_path = SCHEMA
        self.vector_indexes: set[tuple[str, int]] = set()  # (embedder, dimension) whose HNSW index exists
        self.listener: Any = None  # the store's ``notify.Listener``: it hears of newer schemas
        self._owner = PerProcess(process_owner)
        self._pool = PerProcess(self._new_pool)
        self._pools: list[tuple[int, ConnectionPool[_GatedConnection]]] = []  # (pid, pool)
        self._pools_lock = PerProcess(threading.Lock)
        with self.translated():
            self._migrate()

    @property
    def owner(self) -> str:
        """``host:pid:nonce`` of this process: lease owner of its claims, sender of its notifications."""
        return self._owner.get()

    # -- connections -------------------------------------------------------------------------------

    def _configure(self, conn: psycopg.Connection[Any]) -> None:
        conn.execute(
            sql.SQL("SET search_path TO {}; SET idle_in_transaction_session_timeout = '60s'").format(
                sql.SQL(", ").join(sql.Identifier(s) for s in self.search_path.split(","))
            )
        )
        row = conn.execute("SELECT max(version) FROM schema_version").fetchone()
        if row and row[0] is not None and row[0] > SCHEMA_VERSION:
            self.newer_schema = int(row[0])

    def _new_pool(self) -> ConnectionPool[_GatedConnection]:
        pool = ConnectionPool(
            self.url,
            connection_class=_GatedConnection,
            kwargs={"autocommit": True, "connect_timeout": CONNECT_TIMEOUT},
            min_size=1,
            max_size=self.pool_size,
            configure=self._configure,
            timeout=POOL_TIMEOUT,
            name=f"ai-memory {self.path}",
            open=True,
        )
        with self._pools_lock.get():
            self._pools.append((os.getpid(), pool))
        return pool

    def _check(self) -> None:
        if self.closed:
            raise StoreError(self.path, "the store is closed")
        if self.newer_schema is None and self.listener is not None:
            self.newer_schema = self.listener.newer_schema
        if self.newer_schema is not None:
            raise StoreError(
                self.path,
                f"was migrated to schema version {self.newer_schema} by a newer ai_memory_sdk while this process ran"
                f" (this one knows up to {SCHEMA_VERSION}); upgrade the package on every machine that uses it",
            )

    @contextmanager
    def conn(self) -> Iterator[psycopg.Connection[Any]]:
        """A pooled autocommit connection for the duration of the block (each statement its own transaction)."""
        self._check()
        with gate, self._pool.get().connection() as conn:
            yield conn

    @contextmanager
    def tx(self) -> Iterator[psycopg.Connection[Any]]:
        """A read-committed write transaction: committed when the block ends, rolled back on an exception."""
        with self.conn() as conn, conn.transaction():
            yield conn

    @contextmanager
    def read(self) -> Iterator[psycopg.Connection[Any]]:
        """A read-only transaction in one snapshot (repeatable read): everything read sees one state."""
        with self.conn() as conn, conn.transaction():
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            yield conn

    def close(self) -> None:
        """Close this process's pools (a forked child's inherited ones are never touched)."""
        self.closed = True
        with self._pools_lock.get():
            pools, self._pools = self._pools, []
        for pid, pool in pools:
            if pid == os.getpid():
                try:
                    pool.close(timeout=5.0)
                except Exception:  # pragma: no cover - closing is best effort
                    log.debug("closing the pool of %s failed", self.path, exc_info=True)

    errors: tuple[type[Exception], ...] = (psycopg.Error, PoolTimeout)
    """The driver's exceptions ``store_error`` turns into ``StoreError`` (``store._guard.guarded``)."""

    def store_error(self, exc: Exception) -> StoreError:
        """PostgreSQL's error as a ``StoreError`` naming the URL (password masked)."""
        if isinstance(exc, PoolTimeout):
            return StoreError(self.path, f"no database connection within {POOL_TIMEOUT:g}s ({exc}): is the server up?")
        if isinstance(exc, psycopg.OperationalError):
            return StoreError(self.path, _cause(exc))
        return StoreError(self.path, f"{type(exc).__name__}: {_first_line(exc)}")

    @contextmanager
    def translated(self) -> Iterator[None]:
        """PostgreSQL's errors as ``StoreError`` around a block of driver calls."""
        try:
            yield
        except self.errors as exc:
            raise self.store_error(exc) from exc

    # -- schema ------------------------------------------------------------------------------------

    def _migrate(self) -> None:
        """Create or migrate the schema under an advisory lock; refuse a newer or foreign one."""
        with gate:
            conn = psycopg.Connection.connect(self.url, autocommit=True, connect_timeout=CONNECT_TIMEOUT)
        with conn:
            conn.execute("SELECT pg_advisory_lock(%s)", (_LOCK_KEY,))
            try:
                version = _version(conn)
                if version > SCHEMA_VERSION:
                    raise StoreError(
                        self.path,
                        f"has schema version {version}; this ai_memory_sdk knows up to {SCHEMA_VERSION}."
                        " Upgrade the package to open it (nothing was changed)",
                    )
                if version < SCHEMA_VERSION:
                    with conn.transaction():
                        self._upgrade(conn, version)
                self.vectors, vector_schema = _vector_mode(conn)
                paths = [SCHEMA, *([vector_schema] if vector_schema else []), "public"]
                self.search_path = ",".join(dict.fromkeys(paths))
            finally:
                conn.execute("SELECT pg_advisory_unlock(%s)", (_LOCK_KEY,))

    def _upgrade(self, conn: psycopg.Connection[Any], version: int) -> None:
        if version == 0:
            foreign = [
                r[0]
                for r in conn.execute(
                    "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid=c.relnamespace"
                    " WHERE n.nspname=%s AND c.relkind IN ('r', 'v', 'm', 'p') ORDER BY 1",
                    (SCHEMA,),
                )
            ]
            if foreign:
                raise StoreError(
                    self.path,
                    f"has a schema {SCHEMA!r} that is not ai_memory_sdk's (tables: {', '.join(foreign[:8])});"
                    " refusing to add tables to it",
                )
            conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(SCHEMA)))
            conn.execute(sql.SQL("SET LOCAL search_path TO {}, public").format(sql.Identifier(SCHEMA)))
            conn.execute("CREATE TABLE schema_version (version integer NOT NULL)")
            conn.execute("INSERT INTO schema_version(version) VALUES (0)")
        else:
            conn.execute(sql.SQL("SET LOCAL search_path TO {}, public").format(sql.Identifier(SCHEMA)))
        for i in range(version, SCHEMA_VERSION):
            log.info("migrating %s to schema version %d", self.path, i + 1)
            conn.execute(MIGRATIONS[i].encode())
            conn.execute("UPDATE schema_version SET version=%s", (i + 1,))
        if version == 0:
            _choose_vectors(conn)
        conn.execute("SELECT pg_notify(%s, %s)", (SCHEMA_CHANNEL, str(SCHEMA_VERSION)))


def _version(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute(
        "SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid=c.relnamespace"
        " WHERE n.nspname=%s AND c.relname='schema_version'",
        (SCHEMA,),
    ).fetchone()
    if not row:
        return 0
    got = conn.execute(sql.SQL("SELECT max(version) FROM {}.schema_version").format(sql.Identifier(SCHEMA))).fetchone()
    return int(got[0]) if got and got[0] is not None else 0


def _choose_vectors(conn: psycopg.Connection[Any]) -> None:
    """A new store: pgvector when the ``vector`` extension exists or can be created here, else float32 bytea."""
    mode = "bytea"
    try:
        with conn.transaction():  # a savepoint: a refused CREATE EXTENSION leaves the migration intact
            conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
        mode = "pgvector"
    except psycopg.Error as exc:
        log.info("pgvector is not available (%s): vectors are stored as bytea and searched in process", exc)
    if mode == "pgvector":
        schema = _extension_schema(conn)
        conn.execute(
            sql.SQL("ALTER TABLE passage_vectors ADD COLUMN embedding {}.vector").format(sql.Identifier(schema))
        )
    conn.execute("INSERT INTO meta(key, value) VALUES ('vectors', %s)", (mode,))


def _extension_schema(conn: psycopg.Connection[Any]) -> str:
    row = conn.execute(
        "SELECT n.nspname FROM pg_extension e JOIN pg_namespace n ON n.oid=e.extnamespace WHERE e.extname='vector'"
    ).fetchone()
    return str(row[0]) if row else "public"


def _vector_mode(conn: psycopg.Connection[Any]) -> tuple[str, str | None]:
    row = conn.execute(
        sql.SQL("SELECT value FROM {}.meta WHERE key='vectors'").format(sql.Identifier(SCHEMA))
    ).fetchone()
    mode = str(row[0]) if row else "bytea"
    return mode, (_extension_schema(conn) if mode == "pgvector" else None)


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def _cause(exc: psycopg.OperationalError) -> str:
    text = " ".join(str(exc).split())
    if "password authentication failed" in text or "authentication failed" in text:
        return f"cannot log in ({text}): check the user and password of the URL"
    if "does not exist" in text and "database" in text:
        return f"cannot connect ({text}): create the database first (createdb), the schema is created on open"
    if "connection" in text or "could not" in text or "timeout" in text:
        return f"cannot connect ({text})"
    return text
