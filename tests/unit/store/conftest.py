"""Store test fixtures: a throw-away PostgreSQL cluster, a fresh database per test on each backend,
and an event factory.

The cluster lives in a temporary directory owned by the `postgres` OS user (initdb refuses to
run as root), listens on 127.0.0.1 only with a free port, and is stopped and removed at the end
of the session, also when a test or the start-up fails.
"""

from __future__ import annotations

import glob
import itertools
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from podwall.core.events import Event, EventEndpoint, EventVerdict
from podwall.store.events import EventStore

MISSING_SERVER = "PostgreSQL server binaries not found: apt-get install postgresql"
MISSING_DRIVER = "psycopg not installed: pip install 'psycopg[binary]'"


def _pg_bindir() -> Path | None:
    """The newest /usr/lib/postgresql/<version>/bin that has initdb and pg_ctl."""
    found: list[tuple[int, Path]] = []
    for entry in glob.glob("/usr/lib/postgresql/*/bin"):
        bindir = Path(entry)
        if (bindir / "initdb").is_file() and (bindir / "pg_ctl").is_file():
            version = bindir.parent.name
            found.append((int(version) if version.isdigit() else 0, bindir))
    return max(found)[1] if found else None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass(frozen=True)
class PgServer:
    """A running throw-away PostgreSQL server reachable on 127.0.0.1."""

    port: int
    user: str = "postgres"
    host: str = "127.0.0.1"

    def url(self, database: str) -> str:
        return f"postgresql+psycopg://{self.user}@{self.host}:{self.port}/{database}"

    def admin(self, sql: str) -> None:
        """Run one statement in the maintenance database, outside a transaction (CREATE DATABASE)."""
        import psycopg

        with psycopg.connect(
            host=self.host, port=self.port, user=self.user, dbname="postgres", autocommit=True
        ) as conn:
            conn.execute(sql.encode())


def _run(command: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "LC_ALL": "C", "LANG": "C"}
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=120, check=False)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    """A PostgreSQL cluster for the whole session, removed afterwards; skips when not installed."""
    bindir = _pg_bindir()
    if bindir is None:
        pytest.skip(MISSING_SERVER)
    try:
        import psycopg  # noqa: F401
    except ImportError:
        pytest.skip(MISSING_DRIVER)
    prefix: list[str] = []
    owner: pwd.struct_passwd | None = None
    if os.geteuid() == 0:
        runuser = shutil.which("runuser")
        try:
            owner = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("no 'postgres' OS user to run the server as (initdb refuses root): apt-get install postgresql")
        if runuser is None:
            pytest.skip("runuser not found: needed to run PostgreSQL as the postgres user")
        prefix = [runuser, "-u", "postgres", "--"]

    # Not under pytest's tmp_path: its parent is private to root, and the server runs as postgres.
    workdir = Path(tempfile.mkdtemp(prefix="podwall-pg-"))
    data, sockets, log = workdir / "data", workdir / "sockets", workdir / "server.log"
    pg_ctl = str(bindir / "pg_ctl")
    started = False
    try:
        sockets.mkdir()
        if owner is not None:
            for path in (workdir, sockets):
                os.chown(path, owner.pw_uid, owner.pw_gid)
        initdb = [str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust"]
        init = _run([*prefix, *initdb, "-E", "UTF8", "--no-locale", "--no-sync"], workdir)
        if init.returncode != 0:
            pytest.fail(f"initdb failed ({init.returncode}):\n{init.stdout}\n{init.stderr}")
        failures: list[str] = []
        for _attempt in range(3):  # the free port may be taken before the server binds it
            port = _free_port()
            options = (
                f"-c listen_addresses=127.0.0.1 -p {port} -k {sockets} "
                "-c fsync=off -c full_page_writes=off -c max_connections=40"
            )
            start = _run(
                [*prefix, pg_ctl, "-D", str(data), "-l", str(log), "-w", "-t", "60", "-o", options, "start"],
                workdir,
            )
            if start.returncode == 0:
                started = True
                break
            failures.append(start.stdout + start.stderr + (log.read_text() if log.exists() else ""))
        if not started:
            pytest.fail("PostgreSQL did not start:\n" + "\n---\n".join(failures))
        yield PgServer(port=port)
    finally:
        if started:
            stop = _run([*prefix, pg_ctl, "-D", str(data), "-m", "fast", "-w", "-t", "30", "stop"], workdir)
            if stop.returncode != 0:
                _run([*prefix, pg_ctl, "-D", str(data), "-m", "immediate", "-w", "stop"], workdir)
        shutil.rmtree(workdir, ignore_errors=True)


_database_numbers = itertools.count()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A location of a database that does not exist yet: a SQLite file path, or a new PostgreSQL database."""
    if request.param == "sqlite":
        yield str(tmp_path / "missing" / "dirs" / "events.db")
        return
    server: PgServer = request.getfixturevalue("pg_server")
    name = f"podwall_test_{os.getpid()}_{next(_database_numbers)}"
    server.admin(f'CREATE DATABASE "{name}"')
    try:
        yield server.url(name)
    finally:
        server.admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def store(db_url: str) -> Iterator[EventStore]:
    """An EventStore on a fresh database, closed after the test."""
    opened = EventStore(db_url)
    try:
        yield opened
    finally:
        opened.close()


BASE_TIME = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)

MakeEvent = Callable[..., Event]


@pytest.fixture
def make_event() -> MakeEvent:
    """A factory of valid events: `make_event(id=..., minutes=..., client=..., server=..., **fields)`."""

    def build(
        id: str,
        *,
        minutes: float = 0,
        client: str = "frontend",
        server: str = "backend",
        **fields: Any,
    ) -> Event:
        values: dict[str, Any] = {
            "id": id,
            "time": BASE_TIME + timedelta(minutes=minutes),
            "recorded": BASE_TIME + timedelta(minutes=minutes, seconds=1),
            "type": "violation",
            "client": EventEndpoint(group=client, ip="10.0.0.1", port=40000, namespace="shop"),
            "server": EventEndpoint(group=server, ip="10.0.0.2", port=8080, namespace="shop"),
            "transport": "tcp",
            "ip_proto": 6,
            "application": "http",
            "verdict": EventVerdict(action="deny", rule_id=0, explanation="implicit deny"),
        }
        values.update(fields)
        return Event(**values)

    return build
