"""Where podwall's database lives, how it is opened, and its schema.

SQLite by default (one file under $XDG_DATA_HOME), PostgreSQL for production; `PODWALL_DB`
picks either. Opening a database creates its directory and tables on first use and records a
schema version, so that later releases can migrate an existing database in place.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import (
    JSON,
    DateTime,
    Dialect,
    Engine,
    Index,
    Integer,
    String,
    create_engine,
    event,
    insert,
    select,
    text,
    update,
)
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, SQLAlchemyError
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.pool import StaticPool
from sqlalchemy.types import TypeDecorator

from podwall.core.errors import PodwallError

ENV_VAR = "PODWALL_DB"
SUPPORTED_BACKENDS = ("sqlite", "postgresql")
SCHEMA_VERSION = 1

# Migrations from version N-1 to N, keyed by N; run in order inside one transaction.
MIGRATIONS: dict[int, Callable[[Connection], None]] = {}

# A writer waits this long for another writer's lock before giving up.
BUSY_TIMEOUT_S = 30.0

# Execution option that makes a SQLite transaction take the write lock up front, so that a
# read-then-write transaction cannot fail half-way on a lock upgrade.
WRITE_OPTION = "podwall_write"

# Serialises schema creation between processes opening the same PostgreSQL database at once.
_PG_SCHEMA_LOCK = 0x706F6477  # "podw"


class StoreError(PodwallError):
    """The database could not be opened, read or written; the message says which and why."""


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware datetime kept in UTC, the same on SQLite (no zone support) and PostgreSQL."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.utcoffset() is None:
            raise ValueError(f"naive datetime {value.isoformat()} has no timezone; podwall stores UTC")
        value = value.astimezone(UTC)
        # SQLite stores a fixed-width text form without a zone; strings then sort as instants.
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    """Declarative base of every podwall table."""


class SchemaVersionRow(Base):
    """The single row saying which schema version the database has."""

    __tablename__ = "podwall_schema"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    version: Mapped[int] = mapped_column(Integer)


class EventRow(Base):
    """One stored event: indexed columns to filter on, and the whole event as JSON."""

    __tablename__ = "events"
    __table_args__ = (Index("ix_events_time_id", "time", "id"),)

    id: Mapped[str] = mapped_column(String, primary_key=True)
    time: Mapped[datetime] = mapped_column(UTCDateTime)
    type: Mapped[str] = mapped_column(String(16), index=True)
    severity: Mapped[str] = mapped_column(String(16), index=True)
    client_group: Mapped[str] = mapped_column(String, index=True)
    server_group: Mapped[str] = mapped_column(String, index=True)
    application: Mapped[str] = mapped_column(String, index=True)
    rule_id: Mapped[int | None] = mapped_column(Integer, index=True, nullable=True)
    # Plain JSON, not JSONB: JSONB rejects \u0000, which captured L7 fields may contain.
    data: Mapped[dict[str, Any]] = mapped_column(JSON)


def default_db_url() -> str:
    """The database URL to use: $PODWALL_DB (URL or file path), else the per-user SQLite file."""
    configured = os.environ.get(ENV_VAR, "").strip()
    if configured:
        return to_url(configured).render_as_string(hide_password=False)
    return to_url(str(default_db_path())).render_as_string(hide_password=False)


def default_db_path() -> Path:
    """$XDG_DATA_HOME/podwall/podwall.db, with ~/.local/share when XDG_DATA_HOME is unset."""
    base = os.environ.get("XDG_DATA_HOME", "")
    # The XDG spec says relative values are invalid and must be ignored.
    root = Path(base) if base and os.path.isabs(base) else Path.home() / ".local" / "share"
    return root / "podwall" / "podwall.db"


def to_url(url_or_path: str) -> URL:
    """A SQLAlchemy URL from a URL or a plain file path (which becomes an absolute SQLite URL)."""
    location = url_or_path.strip()
    if not location:
        raise ValueError("database location is empty: give a SQLAlchemy URL or a file path")
    if "://" not in location:
        if location == ":memory:":
            return URL.create("sqlite")
        return URL.create("sqlite", database=str(Path(location).expanduser().absolute()))
    try:
        url = make_url(location)
    except ArgumentError as exc:
        raise ValueError(
            f"database URL {_mask(location)!r} is not valid ({exc}); "
            "expected dialect+driver://user:password@host:port/database or a file path"
        ) from None
    # Bare postgresql:// would mean psycopg2 to SQLAlchemy; podwall ships with psycopg 3.
    if url.drivername in ("postgresql", "postgres"):
        url = url.set(drivername="postgresql+psycopg")
    return url


def display_url(url_or_path: str | URL) -> str:
    """The URL with its password hidden, for messages and logs."""
    url = url_or_path if isinstance(url_or_path, URL) else to_url(url_or_path)
    return url.render_as_string(hide_password=True)


def make_engine(url_or_path: str) -> Engine:
    """An engine for the database, created with its directory and schema if missing."""
    url = to_url(url_or_path)
    shown = display_url(url)
    if url.get_backend_name() not in SUPPORTED_BACKENDS:
        raise StoreError(
            f"cannot open database {shown}: backend {url.get_backend_name()!r} is not supported "
            f"(podwall stores events in {' or '.join(SUPPORTED_BACKENDS)})"
        )
    try:
        if url.get_backend_name() == "sqlite":
            engine = _sqlite_engine(url, shown)
        else:
            engine = create_engine(url, pool_pre_ping=True)
    except (NoSuchModuleError, ModuleNotFoundError) as exc:
        hint = " (pip install 'psycopg[binary]')" if url.drivername == "postgresql+psycopg" else ""
        raise StoreError(
            f"cannot open database {shown}: unknown dialect or driver not installed{hint}: {exc}"
        ) from None
    try:
        ensure_schema(engine)
    except BaseException:
        engine.dispose()
        raise
    return engine


def _sqlite_engine(url: URL, shown: str) -> Engine:
    database = url.database or ""
    in_memory = database in ("", ":memory:") or url.query.get("mode") == "memory"
    if in_memory:
        # One shared connection, or every pooled connection would see its own empty database.
        engine = create_engine(url, poolclass=StaticPool, connect_args={"check_same_thread": False})
    else:
        if not database.startswith("file:"):
            parent = Path(database).parent
            try:
                parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StoreError(f"cannot create database directory {parent} for {shown}: {exc}") from None
        engine = create_engine(url, connect_args={"timeout": BUSY_TIMEOUT_S})

    busy_ms = int(BUSY_TIMEOUT_S * 1000)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy's "begin" below issue BEGIN; pysqlite's own would start too late.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout = {busy_ms}")
            cursor.execute("PRAGMA journal_mode = WAL")
            # FULL: a committed transaction survives power loss in WAL mode (NORMAL would not).
            cursor.execute("PRAGMA synchronous = FULL")
            cursor.execute("PRAGMA foreign_keys = ON")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Connection) -> None:
        write = connection.get_execution_options().get(WRITE_OPTION, False)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")

    return engine


def write_connection(engine: Engine) -> Connection:
    """A connection whose transactions are writes (on SQLite: take the write lock at BEGIN)."""
    return engine.connect().execution_options(**{WRITE_OPTION: True})


def ensure_schema(engine: Engine) -> int:
    """Create missing tables, run pending migrations, and return the schema version."""
    shown = display_url(engine.url)
    try:
        with write_connection(engine) as conn, conn.begin():
            if engine.dialect.name == "postgresql":
                conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_SCHEMA_LOCK})
            fresh = not engine.dialect.has_table(conn, SchemaVersionRow.__tablename__)
            if fresh:
                Base.metadata.create_all(conn)
                conn.execute(insert(SchemaVersionRow).values(id=1, version=SCHEMA_VERSION))
                return SCHEMA_VERSION
            found = conn.execute(select(SchemaVersionRow.version).where(SchemaVersionRow.id == 1)).scalar()
            version = int(found) if found is not None else 0
            if version > SCHEMA_VERSION:
                raise StoreError(
                    f"database {shown} has schema version {version}, newer than this podwall "
                    f"understands ({SCHEMA_VERSION}); upgrade podwall"
                )
            for target in range(version + 1, SCHEMA_VERSION + 1):
                MIGRATIONS[target](conn)
            Base.metadata.create_all(conn)
            if version != SCHEMA_VERSION:
                _set_version(conn, found is not None)
            return SCHEMA_VERSION
    except SQLAlchemyError as exc:
        raise StoreError(f"cannot open database {shown}: {reason(exc)}") from exc


def _set_version(conn: Connection, exists: bool) -> None:
    if exists:
        conn.execute(update(SchemaVersionRow).where(SchemaVersionRow.id == 1).values(version=SCHEMA_VERSION))
    else:
        conn.execute(insert(SchemaVersionRow).values(id=1, version=SCHEMA_VERSION))


def reason(exc: SQLAlchemyError) -> str:
    """The driver's own message when there is one: SQLAlchemy's wrapper adds SQL and a link."""
    orig = getattr(exc, "orig", None)
    return str(orig).strip() if orig is not None else str(exc)


def _mask(location: str) -> str:
    return re.sub(r"://([^:/@]*):[^@/]*@", r"://\1:***@", location)
