"""The event store: events in, filtered events out, on SQLite or PostgreSQL.

`add` stores a batch in one transaction: when it returns, every event of the batch is
committed (durable); when it raises, none is. An event's id is its primary key, so adding an
event that is already stored changes nothing (first write wins); the same id with different
content is refused. Times are stored in UTC and events come back equal to what was added.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Any, Literal

from pydantic import ValidationError
from sqlalchemy import ColumnElement, Connection, Engine, func, or_, select
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import SQLAlchemyError

from podwall.core.events import Event, EventType
from podwall.store.db import (
    EventRow,
    StoreError,
    default_db_url,
    display_url,
    make_engine,
    reason,
    write_connection,
)

Order = Literal["asc", "desc"]

# Rows per INSERT statement and ids per IN (...) list: well under SQLite's parameter limit.
_CHUNK = 500

_EVENT_TYPES = frozenset(t.value for t in EventType)


class EventStore:
    """Stored events of one database; safe to share between threads."""

    def __init__(self, url_or_path: str | None = None) -> None:
        self.url = url_or_path if url_or_path is not None else default_db_url()
        self._engine: Engine | None = make_engine(self.url)
        self._shown = display_url(self.url)

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            raise StoreError(f"event store {self._shown} is closed")
        return self._engine

    def add(self, events: Sequence[Event]) -> int:
        """Store a batch atomically; return how many were new (already stored ones are skipped)."""
        rows = _rows(events)
        if not rows:
            return 0
        engine = self.engine
        try:
            with write_connection(engine) as conn, conn.begin():
                return _insert_new(conn, rows)
        except SQLAlchemyError as exc:
            raise StoreError(
                f"cannot store {len(rows)} events in {self._shown}: {reason(exc)}; nothing from this batch was stored"
            ) from exc

    def write(self, events: Sequence[Event]) -> None:
        """Sink interface: store the batch (see `add`)."""
        self.add(events)

    def query(
        self,
        *,
        type: str | None = None,
        group: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int | None = None,
        order: Order = "asc",
    ) -> list[Event]:
        """Events matching every given filter, by time (then id); `since` <= time < `until`."""
        if order not in ("asc", "desc"):
            raise ValueError(f"order must be 'asc' or 'desc', not {order!r}")
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
            raise ValueError(f"limit must be a whole number >= 0, not {limit!r}")
        stmt = select(EventRow.id, EventRow.data).where(*_filters(type, group, since, until))
        if order == "asc":
            stmt = stmt.order_by(EventRow.time.asc(), EventRow.id.asc())
        else:
            stmt = stmt.order_by(EventRow.time.desc(), EventRow.id.desc())
        if limit is not None:
            stmt = stmt.limit(limit)
        try:
            with self.engine.connect() as conn:
                found = conn.execute(stmt).all()
        except SQLAlchemyError as exc:
            raise StoreError(f"cannot read events from {self._shown}: {reason(exc)}") from exc
        return [_event(event_id, data, self._shown) for event_id, data in found]

    def count(
        self,
        *,
        type: str | None = None,
        group: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> int:
        """How many stored events match every given filter (same filters as `query`)."""
        stmt = select(func.count()).select_from(EventRow).where(*_filters(type, group, since, until))
        try:
            with self.engine.connect() as conn:
                return int(conn.execute(stmt).scalar_one())
        except SQLAlchemyError as exc:
            raise StoreError(f"cannot count events in {self._shown}: {reason(exc)}") from exc

    def close(self) -> None:
        """Release the database connections; the store cannot be used afterwards."""
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None

    def __enter__(self) -> EventStore:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _rows(events: Sequence[Event]) -> dict[str, dict[str, Any]]:
    """Table rows by id, validated before the database is touched; repeats of an event collapse."""
    rows: dict[str, dict[str, Any]] = {}
    for index, event in enumerate(events):
        if not isinstance(event, Event):
            raise ValueError(f"batch item {index} is a {type(event).__name__}, not an Event")
        row = _row(event, index)
        previous = rows.get(event.id)
        if previous is not None and previous["data"] != row["data"]:
            raise ValueError(
                f"batch item {index}: event id {event.id!r} appears earlier in the batch with "
                "different content; nothing from this batch was stored"
            )
        rows[event.id] = row
    return rows


def _row(event: Event, index: int) -> dict[str, Any]:
    where = f"batch item {index} (event {event.id!r})"
    for name in ("time", "recorded", "last_seen"):
        value: datetime | None = getattr(event, name)
        if value is not None and value.utcoffset() is None:
            raise ValueError(f"{where}: {name} {value.isoformat()} has no timezone; podwall stores UTC")
    utc = event.model_copy(
        update={
            "time": event.time.astimezone(UTC),
            "recorded": event.recorded.astimezone(UTC),
            "last_seen": event.last_seen.astimezone(UTC) if event.last_seen is not None else None,
        }
    )
    try:
        data = utc.to_dict()
    except Exception as exc:  # pydantic raises several types for unserialisable l7/detail values
        raise ValueError(f"{where}: cannot be written as JSON: {exc}") from None
    return {
        "id": event.id,
        "time": utc.time,
        "type": str(event.type),
        "severity": str(event.severity),
        "client_group": event.client.group,
        "server_group": event.server.group,
        "application": event.application,
        "rule_id": event.verdict.rule_id if event.verdict is not None else None,
        "data": data,
    }


def _insert_new(conn: Connection, rows: dict[str, dict[str, Any]]) -> int:
    """Insert the rows whose id is not stored yet; refuse (roll back) if a stored one differs."""
    insert = sqlite_insert if conn.dialect.name == "sqlite" else postgresql_insert
    # ON CONFLICT DO NOTHING rather than look-then-insert: a concurrent writer of the same
    # event then cannot make this transaction fail (PostgreSQL waits for it, then skips).
    statement = insert(EventRow).on_conflict_do_nothing(index_elements=["id"]).returning(EventRow.id)
    pending = list(rows.values())
    inserted: set[str] = set()
    for start in range(0, len(pending), _CHUNK):
        inserted.update(conn.execute(statement, pending[start : start + _CHUNK]).scalars())
    skipped = [event_id for event_id in rows if event_id not in inserted]
    for start in range(0, len(skipped), _CHUNK):
        chunk = skipped[start : start + _CHUNK]
        for event_id, data in conn.execute(select(EventRow.id, EventRow.data).where(EventRow.id.in_(chunk))):
            if not _same_event(data, rows[event_id]["data"]):
                raise ValueError(
                    f"event id {event_id!r} is already stored with different content; "
                    "nothing from this batch was stored"
                )
    return len(inserted)


def _comparable(data: Any) -> Any:
    """An event's stored content as it compares: read through the current schema (a field added
    since it was stored reads as its default) and without `recorded`, the time it was written."""
    try:
        normal = Event.model_validate(data).to_dict()
    except ValidationError:
        return data
    normal.pop("recorded", None)
    return normal


def _same_event(stored: Any, new: Any) -> bool:
    """Whether a stored event and a new one with its id are the same fact (re-running an analysis)."""
    return stored == new or _comparable(stored) == _comparable(new)


def _filters(
    type_: str | None, group: str | None, since: datetime | None, until: datetime | None
) -> Iterator[ColumnElement[bool]]:
    if type_ is not None:
        if type_ not in _EVENT_TYPES:
            known = ", ".join(sorted(_EVENT_TYPES))
            raise ValueError(f"unknown event type {type_!r}; expected one of {known}")
        yield EventRow.type == str(type_)
    if group is not None:
        yield or_(EventRow.client_group == group, EventRow.server_group == group)
    for name, bound in (("since", since), ("until", until)):
        if bound is not None and bound.utcoffset() is None:
            raise ValueError(f"{name} {bound.isoformat()} has no timezone; give an aware datetime (UTC)")
    if since is not None:
        yield EventRow.time >= since
    if until is not None:
        yield EventRow.time < until


def _event(event_id: str, data: Any, shown: str) -> Event:
    try:
        return Event.model_validate(data)
    except ValidationError as exc:
        raise StoreError(f"stored event {event_id!r} in {shown} cannot be read back: {exc}") from exc


_RELATIVE = re.compile(r"(\d+)\s*([smhd])")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def parse_since(text: str, now: datetime | None = None) -> datetime:
    """An aware UTC datetime from ISO 8601 (date, or datetime with Z/offset) or an age: 45s 30m 2h 7d.

    A date means its midnight UTC; a datetime without an offset is taken as UTC. An age is
    counted back from `now` (default: the current time).
    """
    value = text.strip()
    if now is not None and now.utcoffset() is None:
        raise ValueError(f"now {now.isoformat()} has no timezone; give an aware datetime")
    relative = _RELATIVE.fullmatch(value)
    if relative is not None:
        amount, unit = int(relative.group(1)), relative.group(2)
        base = now if now is not None else datetime.now(UTC)
        try:
            return (base - timedelta(**{_UNITS[unit]: amount})).astimezone(UTC)
        except OverflowError:
            raise ValueError(f"time {text!r} reaches too far back") from None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(
            f"cannot read {text!r} as a time: expected ISO 8601 (2024-05-01, 2024-05-01T10:00:00Z, "
            "2024-05-01T12:00:00+02:00) or an age such as 45s, 30m, 2h, 7d"
        ) from None
    if parsed.utcoffset() is None:
        return parsed.replace(tzinfo=UTC)
    try:
        return parsed.astimezone(UTC)
    except OverflowError:
        raise ValueError(f"time {text!r} is out of range in UTC") from None
