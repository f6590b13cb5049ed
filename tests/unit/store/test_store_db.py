"""Database location, engine set-up and schema versioning (podwall.store.db)."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import Connection, select, text, update

import podwall.store.db as db
from podwall.core.events import Event
from podwall.store.db import (
    SCHEMA_VERSION,
    SchemaVersionRow,
    StoreError,
    default_db_path,
    default_db_url,
    display_url,
    ensure_schema,
    make_engine,
    to_url,
)
from podwall.store.events import EventStore

URL_CASES: list[tuple[str, str, str]] = [
    ("absolute-path", "/var/lib/podwall/x.db", "sqlite:////var/lib/podwall/x.db"),
    ("path-with-spaces", "/tmp/my data/x.db", "sqlite:////tmp/my data/x.db"),
    ("sqlite-url-kept", "sqlite:////srv/p.db", "sqlite:////srv/p.db"),
    ("memory", ":memory:", "sqlite://"),
    ("postgresql-gets-psycopg", "postgresql://u@db.local/podwall", "postgresql+psycopg://u@db.local/podwall"),
    ("postgres-alias", "postgres://u@db.local:5433/p", "postgresql+psycopg://u@db.local:5433/p"),
    ("explicit-driver-kept", "postgresql+psycopg2://u@h/p", "postgresql+psycopg2://u@h/p"),
    ("surrounding-space", "  /tmp/x.db\n", "sqlite:////tmp/x.db"),
]


@pytest.mark.parametrize(("given", "expected"), [c[1:] for c in URL_CASES], ids=[c[0] for c in URL_CASES])
def test_to_url(given: str, expected: str) -> None:
    """Plain paths become absolute SQLite URLs; URLs are kept, bare postgresql uses psycopg 3."""
    assert to_url(given).render_as_string(hide_password=False) == expected


def test_relative_and_home_paths_become_absolute(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A relative path resolves against the working directory and ~ against the home directory."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert to_url("rel/x.db").database == str(tmp_path / "rel" / "x.db")
    assert to_url("~/x.db").database == str(tmp_path / "home" / "x.db")


BAD_LOCATIONS: list[tuple[str, str, str]] = [
    ("empty", "   ", "database location is empty"),
    ("unparsable", "://nowhere", "is not valid"),
    ("password-hidden", "bad url://user:hunter2@host/db", r"user:\*\*\*@host"),
]


@pytest.mark.parametrize(("given", "message"), [c[1:] for c in BAD_LOCATIONS], ids=[c[0] for c in BAD_LOCATIONS])
def test_bad_location(given: str, message: str) -> None:
    """A location that is no URL and no path is refused with a message that hides any password."""
    with pytest.raises(ValueError, match=message) as caught:
        to_url(given)
    assert "hunter2" not in str(caught.value)


def test_display_url_hides_password() -> None:
    """display_url never shows the password."""
    shown = display_url("postgresql://alice:s3cret@db.local/podwall")
    assert "s3cret" not in shown
    assert shown == "postgresql+psycopg://alice:***@db.local/podwall"


DEFAULT_CASES: list[tuple[str, dict[str, str | None], str]] = [
    ("env-path", {"PODWALL_DB": "{tmp}/chosen.db"}, "sqlite:///{tmp}/chosen.db"),
    ("env-url", {"PODWALL_DB": "postgresql://u@h/p"}, "postgresql+psycopg://u@h/p"),
    (
        "env-blank-ignored",
        {"PODWALL_DB": "  ", "XDG_DATA_HOME": "{tmp}/xdg"},
        "sqlite:///{tmp}/xdg/podwall/podwall.db",
    ),
    ("xdg", {"PODWALL_DB": None, "XDG_DATA_HOME": "{tmp}/xdg"}, "sqlite:///{tmp}/xdg/podwall/podwall.db"),
    (
        "xdg-relative-ignored",
        {"PODWALL_DB": None, "XDG_DATA_HOME": "relative/dir"},
        "sqlite:///{tmp}/home/.local/share/podwall/podwall.db",
    ),
    (
        "home-fallback",
        {"PODWALL_DB": None, "XDG_DATA_HOME": None},
        "sqlite:///{tmp}/home/.local/share/podwall/podwall.db",
    ),
]


@pytest.mark.parametrize(("env", "expected"), [c[1:] for c in DEFAULT_CASES], ids=[c[0] for c in DEFAULT_CASES])
def test_default_db_url(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, env: dict[str, str | None], expected: str
) -> None:
    """PODWALL_DB wins; otherwise the file lives under $XDG_DATA_HOME, or ~/.local/share."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    for name, value in env.items():
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value.format(tmp=tmp_path))
    assert default_db_url() == expected.format(tmp=tmp_path)


def test_default_path_is_created_on_first_use(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """EventStore() with no location creates the default directory and database file."""
    monkeypatch.delenv("PODWALL_DB", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert not default_db_path().parent.exists()
    with EventStore() as store:
        assert store.count() == 0
    assert default_db_path() == tmp_path / "xdg" / "podwall" / "podwall.db"
    assert default_db_path().is_file()


def test_sqlite_settings(tmp_path: Path) -> None:
    """SQLite connections use WAL, full sync, foreign keys and a busy timeout; missing parents are made."""
    path = tmp_path / "a" / "b" / "c" / "events.db"
    engine = make_engine(str(path))
    try:
        assert path.is_file()
        with engine.connect() as conn:
            settings = {
                name: conn.exec_driver_sql(f"PRAGMA {name}").scalar()
                for name in ("journal_mode", "synchronous", "foreign_keys", "busy_timeout")
            }
    finally:
        engine.dispose()
    assert settings == {
        "journal_mode": "wal",
        "synchronous": 2,  # FULL
        "foreign_keys": 1,
        "busy_timeout": int(db.BUSY_TIMEOUT_S * 1000),
    }


def test_commit_is_visible_to_a_plain_sqlite_reader(tmp_path: Path, make_event: Callable[..., Event]) -> None:
    """After add returns, another connection outside SQLAlchemy sees the rows (they are committed)."""
    path = tmp_path / "events.db"
    with EventStore(str(path)) as store:
        store.add([make_event("committed")])
        other = sqlite3.connect(path)
        try:
            assert other.execute("SELECT id FROM events").fetchall() == [("committed",)]
        finally:
            other.close()


def test_in_memory_database_is_shared_between_threads() -> None:
    """':memory:' gives one database that every connection (and thread) of the engine sees."""
    engine = make_engine(":memory:")
    try:
        with engine.begin() as conn:
            conn.execute(text("CREATE TABLE t (x INTEGER)"))
            conn.execute(text("INSERT INTO t VALUES (1)"))
        seen: list[int] = []

        def read() -> None:
            with engine.connect() as conn:
                seen.append(int(conn.execute(text("SELECT count(*) FROM t")).scalar_one()))

        thread = threading.Thread(target=read)
        thread.start()
        thread.join(timeout=10)
        assert seen == [1]
    finally:
        engine.dispose()


def _version(path: Path) -> int:
    engine = make_engine(str(path))
    try:
        with engine.connect() as conn:
            return int(conn.execute(select(SchemaVersionRow.version)).scalar_one())
    finally:
        engine.dispose()


def test_schema_version_recorded_and_stable(tmp_path: Path) -> None:
    """A new database records the current schema version and reopening leaves it unchanged."""
    path = tmp_path / "v.db"
    assert _version(path) == SCHEMA_VERSION
    assert _version(path) == SCHEMA_VERSION


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    """A database written by a newer podwall is refused instead of being misread."""
    path = tmp_path / "v.db"
    engine = make_engine(str(path))
    with engine.begin() as conn:
        conn.execute(update(SchemaVersionRow).values(version=SCHEMA_VERSION + 5))
    engine.dispose()
    with pytest.raises(StoreError, match=f"schema version {SCHEMA_VERSION + 5}, newer than this podwall"):
        make_engine(str(path))


def test_pending_migrations_run_in_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Opening an older database runs each pending migration once, in order, and records the new version."""
    path = tmp_path / "v.db"
    make_engine(str(path)).dispose()
    ran: list[int] = []

    def migration(step: int) -> object:
        def apply(conn: Connection) -> None:
            ran.append(step)
            conn.execute(text(f"CREATE TABLE migrated_{step} (x INTEGER)"))

        return apply

    target = SCHEMA_VERSION + 2
    monkeypatch.setattr(db, "SCHEMA_VERSION", target)
    monkeypatch.setattr(db, "MIGRATIONS", {SCHEMA_VERSION + 1: migration(1), SCHEMA_VERSION + 2: migration(2)})
    engine = make_engine(str(path))
    try:
        assert ran == [1, 2]
        assert ensure_schema(engine) == target
        assert ran == [1, 2]
        with engine.connect() as conn:
            assert conn.execute(select(SchemaVersionRow.version)).scalar_one() == target
    finally:
        engine.dispose()


def test_failed_migration_changes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A migration that fails leaves the database at its old version, without half its changes."""
    path = tmp_path / "v.db"
    make_engine(str(path)).dispose()

    def broken(conn: Connection) -> None:
        conn.execute(text("CREATE TABLE half_done (x INTEGER)"))
        conn.execute(text("SELECT * FROM no_such_table"))

    monkeypatch.setattr(db, "SCHEMA_VERSION", SCHEMA_VERSION + 1)
    monkeypatch.setattr(db, "MIGRATIONS", {SCHEMA_VERSION + 1: broken})
    with pytest.raises(StoreError, match="no_such_table"):
        make_engine(str(path))
    monkeypatch.undo()
    assert _version(path) == SCHEMA_VERSION
    plain = sqlite3.connect(path)
    try:
        tables = {row[0] for row in plain.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    finally:
        plain.close()
    assert "half_done" not in tables


OPEN_FAILURES: list[tuple[str, str]] = [
    ("not-a-database", "file is not a database"),
    ("parent-is-a-file", "cannot create database directory"),
    ("unsupported-backend", "backend 'mysql' is not supported"),
    ("missing-driver", "unknown dialect or driver not installed"),
]


@pytest.mark.parametrize(("case", "message"), OPEN_FAILURES, ids=[c[0] for c in OPEN_FAILURES])
def test_open_failures_are_store_errors(tmp_path: Path, case: str, message: str) -> None:
    """A database that cannot be opened raises StoreError naming it and the reason."""
    if case == "not-a-database":
        location = tmp_path / "junk.db"
        location.write_bytes(b"this is not sqlite" * 100)
        target = str(location)
    elif case == "parent-is-a-file":
        (tmp_path / "file").write_text("x")
        target = str(tmp_path / "file" / "events.db")
    elif case == "unsupported-backend":
        target = "mysql://host/db"
    else:
        target = "postgresql+nosuchdriver://host/db"
    with pytest.raises(StoreError, match=message) as caught:
        make_engine(target)
    assert display_url(target) in str(caught.value) or target in str(caught.value)
