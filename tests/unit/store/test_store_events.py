"""EventStore behaviour, run against SQLite and a real PostgreSQL (the `db_url` fixture)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
import sqlalchemy
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import select
from sqlalchemy.exc import OperationalError

import podwall.store.events as events_module
from podwall.core.events import Event, EventEndpoint, EventType, EventVerdict, Severity
from podwall.store.db import SCHEMA_VERSION, EventRow, SchemaVersionRow, StoreError
from podwall.store.events import EventStore
from podwall.store.sinks import Sink

MakeEvent = Any

# The time conftest's make_event gives an event with minutes=0.
BASE_TIME = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def ids(found: list[Event]) -> list[str]:
    return [event.id for event in found]


def test_first_use_creates_schema(db_url: str) -> None:
    """Opening a database that does not exist yet creates the tables and records the schema version."""
    with EventStore(db_url) as opened:
        assert opened.count() == 0
        with opened.engine.connect() as conn:
            assert conn.execute(select(SchemaVersionRow.version)).scalar_one() == SCHEMA_VERSION
    with EventStore(db_url) as reopened:
        assert reopened.count() == 0


def test_round_trip_is_exact(store: EventStore, make_event: MakeEvent) -> None:
    """Events come back equal to what was added: offsets turned into UTC instants, odd text kept."""
    plus_two = timezone(timedelta(hours=2))
    minus_five = timezone(timedelta(hours=-5, minutes=-30))
    added = [
        make_event(
            "tz-plus-two",
            time=datetime(2024, 5, 1, 14, 0, 0, 123456, tzinfo=plus_two),
            last_seen=datetime(2024, 5, 1, 14, 5, tzinfo=plus_two),
            recorded=datetime(2024, 5, 1, 6, 31, tzinfo=minus_five),
            severity=Severity.HIGH,
            message='caf\u00e9 \U0001f512 nul:\x00 quote:" backslash:\\',
            l7={
                "method": "GET",
                "path": "/a\x00b",
                "headers": {"x": ["1", "2"]},
                "n": 3,
                "f": 0.1,
                "ok": True,
            },
            verdict=EventVerdict(action="alert", rule_id=7, rule_name="r7", detail={"k": None}),
            server_name="api.example",
            count=3,
            packets=10,
            bytes=1234,
            pcap="/tmp/x.pcap",
            source="eth0",
        ),
        make_event("no-verdict", minutes=1, verdict=None, type="learned"),
    ]
    assert store.add(added) == 2
    found = store.query()
    assert found == added
    assert all(event.time.utcoffset() == timedelta(0) for event in found)
    assert found[0].time == datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=UTC)


def test_returned_events_are_utc(store: EventStore, make_event: MakeEvent) -> None:
    """Stored times are normalised to UTC, whatever offset the event was created with."""
    local = timezone(timedelta(hours=9))
    store.add([make_event("tokyo", time=datetime(2024, 5, 1, 21, 0, tzinfo=local))])
    (found,) = store.query()
    assert found.time.utcoffset() == timedelta(0)
    assert found.time.hour == 12


FILTER_EVENTS: list[tuple[str, float, str, str, str]] = [
    # id, minutes after BASE_TIME, type, client group, server group
    ("e1", 0, "violation", "frontend", "backend"),
    ("e2", 10, "learned", "frontend", "db"),
    ("e3", 20, "violation", "backend", "db"),
    ("e4", 30, "threat", "batch", "frontend"),
    ("e5", 40, "violation", "batch", "cache"),
]

FILTER_CASES: list[tuple[str, dict[str, Any], list[str]]] = [
    ("everything", {}, ["e1", "e2", "e3", "e4", "e5"]),
    ("type", {"type": "violation"}, ["e1", "e3", "e5"]),
    ("type-absent", {"type": "dlp"}, []),
    ("group-client-side", {"group": "batch"}, ["e4", "e5"]),
    ("group-server-side", {"group": "db"}, ["e2", "e3"]),
    ("group-either-side", {"group": "frontend"}, ["e1", "e2", "e4"]),
    ("group-unknown", {"group": "nobody"}, []),
    ("since-inclusive", {"since": BASE_TIME + timedelta(minutes=20)}, ["e3", "e4", "e5"]),
    ("until-exclusive", {"until": BASE_TIME + timedelta(minutes=20)}, ["e1", "e2"]),
    (
        "since-until",
        {"since": BASE_TIME + timedelta(minutes=5), "until": BASE_TIME + timedelta(minutes=35)},
        ["e2", "e3", "e4"],
    ),
    (
        "since-other-offset",
        {"since": datetime(2024, 5, 1, 14, 30, tzinfo=timezone(timedelta(hours=2)))},
        ["e4", "e5"],
    ),
    ("combined", {"type": "violation", "group": "db"}, ["e3"]),
    ("combined-empty", {"type": "learned", "group": "batch"}, []),
]


@pytest.fixture
def filled(store: EventStore, make_event: MakeEvent) -> EventStore:
    assert make_event("probe").time == BASE_TIME
    # Added out of time order, so that the result order must come from the query.
    batch = [
        make_event(event_id, minutes=minutes, type=kind, client=client, server=server)
        for event_id, minutes, kind, client, server in reversed(FILTER_EVENTS)
    ]
    assert store.add(batch) == len(batch)
    return store


@pytest.mark.parametrize(("filters", "expected"), [c[1:] for c in FILTER_CASES], ids=[c[0] for c in FILTER_CASES])
def test_query_filters(filled: EventStore, filters: dict[str, Any], expected: list[str]) -> None:
    """Each filter keeps exactly the matching events, in time order, and count agrees with query."""
    assert ids(filled.query(**filters)) == expected
    assert filled.count(**filters) == len(expected)


ORDER_CASES: list[tuple[str, dict[str, Any], list[str]]] = [
    ("asc-default", {}, ["e1", "e2", "e3", "e4", "e5"]),
    ("desc", {"order": "desc"}, ["e5", "e4", "e3", "e2", "e1"]),
    ("limit-asc", {"limit": 2}, ["e1", "e2"]),
    ("limit-desc", {"limit": 2, "order": "desc"}, ["e5", "e4"]),
    ("limit-zero", {"limit": 0}, []),
    ("limit-beyond", {"limit": 50}, ["e1", "e2", "e3", "e4", "e5"]),
    ("limit-with-filter", {"limit": 1, "type": "violation", "order": "desc"}, ["e5"]),
]


@pytest.mark.parametrize(("options", "expected"), [c[1:] for c in ORDER_CASES], ids=[c[0] for c in ORDER_CASES])
def test_query_order_and_limit(filled: EventStore, options: dict[str, Any], expected: list[str]) -> None:
    """order sorts by time either way and limit keeps the first N of that order."""
    assert ids(filled.query(**options)) == expected


def test_equal_times_sort_by_id(store: EventStore, make_event: MakeEvent) -> None:
    """Events with the same time come back in id order (reversed for desc), so paging is stable."""
    store.add([make_event(name) for name in ("b", "c", "a")])
    assert ids(store.query()) == ["a", "b", "c"]
    assert ids(store.query(order="desc")) == ["c", "b", "a"]


def test_readding_is_idempotent(store: EventStore, make_event: MakeEvent) -> None:
    """Adding stored events again stores nothing twice and add counts only the new ones."""
    first = [make_event("a"), make_event("b", minutes=1)]
    assert store.add(first) == 2
    assert store.add(first) == 0
    assert store.add([*first, make_event("c", minutes=2)]) == 1
    assert ids(store.query()) == ["a", "b", "c"]


def test_repeat_inside_batch_is_stored_once(store: EventStore, make_event: MakeEvent) -> None:
    """The same event twice in one batch is stored once and counted once."""
    event = make_event("twice")
    assert store.add([event, event, make_event("once", minutes=1)]) == 2
    assert store.count() == 2


def test_same_id_other_content_is_refused(store: EventStore, make_event: MakeEvent) -> None:
    """A different event under a stored id is refused, and the rest of its batch is not stored."""
    store.add([make_event("a", message="original")])
    with pytest.raises(ValueError, match="'a' is already stored with different content"):
        store.add([make_event("new", minutes=1), make_event("a", message="changed")])
    assert [(e.id, e.message) for e in store.query()] == [("a", "original")]


def test_same_event_written_again_later_is_not_a_conflict(store: EventStore, make_event: MakeEvent) -> None:
    """Re-running an analysis records the same fact again with a new `recorded` time: it is skipped, not refused."""
    event = make_event("again")
    assert store.add([event]) == 1
    later = event.model_copy(update={"recorded": event.recorded + timedelta(hours=1)})
    assert store.add([later]) == 0
    assert store.count() == 1


def test_conflict_inside_batch_stores_nothing(store: EventStore, make_event: MakeEvent) -> None:
    """A batch holding two different events with one id is refused whole."""
    batch = [make_event("ok"), make_event("dup", message="one"), make_event("dup", message="two")]
    with pytest.raises(ValueError, match=r"batch item 2: event id 'dup'"):
        store.add(batch)
    assert store.count() == 0


_POISON_TRIGGER = {
    # The database itself refuses one row, after the rows before it were inserted.
    "sqlite": [
        "CREATE TRIGGER poison BEFORE INSERT ON events WHEN NEW.id = 'poison' "
        "BEGIN SELECT RAISE(ABORT, 'poison row refused'); END"
    ],
    "postgresql": [
        "CREATE FUNCTION poison() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
        "IF NEW.id = 'poison' THEN RAISE EXCEPTION 'poison row refused'; END IF; RETURN NEW; END $$",
        "CREATE TRIGGER poison BEFORE INSERT ON events FOR EACH ROW EXECUTE FUNCTION poison()",
    ],
}


@pytest.mark.parametrize("failure", ["database-refuses-row", "statement-fails", "stored-id-differs"])
def test_failed_batch_stores_nothing(
    store: EventStore, make_event: MakeEvent, monkeypatch: pytest.MonkeyPatch, failure: str
) -> None:
    """A batch that fails after some of its rows reached the database leaves none of them stored."""
    store.add([make_event("old", message="original")])
    monkeypatch.setattr(events_module, "_CHUNK", 1)  # one INSERT per row: earlier rows really are sent
    batch = [make_event(f"new{i}", minutes=i + 1) for i in range(3)]
    inserts: list[str] = []

    def watch(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.lstrip().upper().startswith("INSERT INTO EVENTS"):
            inserts.append(statement)
            if failure == "statement-fails" and len(inserts) == 3:
                raise OperationalError(statement, {}, Exception("disk I/O error (simulated)"))

    sqlalchemy.event.listen(store.engine, "before_cursor_execute", watch)
    expected_error: type[Exception] = StoreError
    if failure == "database-refuses-row":
        with store.engine.begin() as conn:
            for ddl in _POISON_TRIGGER[store.engine.dialect.name]:
                conn.exec_driver_sql(ddl)
        batch.append(make_event("poison", minutes=9))
    elif failure == "stored-id-differs":
        batch.append(make_event("old", message="changed"))
        expected_error = ValueError
    try:
        with pytest.raises(expected_error, match="nothing from this batch was stored"):
            store.add(batch)
    finally:
        sqlalchemy.event.remove(store.engine, "before_cursor_execute", watch)
    assert len(inserts) >= 3  # earlier rows of the batch had been sent inside the transaction
    assert [(e.id, e.message) for e in store.query()] == [("old", "original")]
    assert store.add(batch[:3]) == 3  # and the store is still usable


def test_naive_time_is_refused(store: EventStore, make_event: MakeEvent) -> None:
    """An event with a naive datetime is refused with its field named, and nothing is stored."""
    batch = [make_event("ok"), make_event("naive", last_seen=datetime(2024, 5, 1, 12, 0))]
    with pytest.raises(ValueError, match=r"batch item 1 \(event 'naive'\): last_seen .* has no timezone"):
        store.add(batch)
    assert store.count() == 0


def test_non_event_is_refused(store: EventStore, make_event: MakeEvent) -> None:
    """Something that is not an Event in a batch is refused before anything is stored."""
    with pytest.raises(ValueError, match="batch item 1 is a dict, not an Event"):
        store.add([make_event("ok"), {"id": "x"}])  # type: ignore[list-item]
    assert store.count() == 0


def test_empty_batch(store: EventStore) -> None:
    """An empty batch stores nothing and returns 0."""
    assert store.add([]) == 0
    assert store.count() == 0


BAD_QUERIES: list[tuple[str, dict[str, Any], str]] = [
    ("order", {"order": "newest"}, "order must be 'asc' or 'desc'"),
    ("negative-limit", {"limit": -1}, "limit must be a whole number >= 0"),
    ("bool-limit", {"limit": True}, "limit must be a whole number >= 0"),
    ("unknown-type", {"type": "violaton"}, "unknown event type 'violaton'; expected one of"),
    ("naive-since", {"since": datetime(2024, 5, 1)}, "since .* has no timezone"),
    ("naive-until", {"until": datetime(2024, 5, 1)}, "until .* has no timezone"),
]


@pytest.mark.parametrize(("options", "message"), [c[1:] for c in BAD_QUERIES], ids=[c[0] for c in BAD_QUERIES])
def test_bad_query_arguments(store: EventStore, options: dict[str, Any], message: str) -> None:
    """Invalid query arguments raise ValueError saying which argument is wrong."""
    with pytest.raises(ValueError, match=message):
        store.query(**options)


def test_closed_store_refuses_use(db_url: str, make_event: MakeEvent) -> None:
    """After close, every operation raises StoreError instead of silently reopening."""
    opened = EventStore(db_url)
    opened.close()
    opened.close()  # closing twice is harmless
    with pytest.raises(StoreError, match="is closed"):
        opened.add([make_event("a")])
    with pytest.raises(StoreError, match="is closed"):
        opened.query()


def test_two_stores_share_a_database(db_url: str, make_event: MakeEvent) -> None:
    """Events acknowledged by one store are seen by another opened on the same database."""
    with EventStore(db_url) as writer, EventStore(db_url) as reader:
        writer.add([make_event("a")])
        assert ids(reader.query()) == ["a"]
        assert reader.add([make_event("a")]) == 0


def test_concurrent_readers_see_whole_batches(db_url: str, make_event: MakeEvent) -> None:
    """Readers running while a writer adds batches only ever see whole batches, never part of one."""
    batch_size, batches, readers = 5, 12, 3
    with EventStore(db_url) as writer, EventStore(db_url) as reading:
        done = threading.Event()
        seen: list[list[int]] = [[] for _ in range(readers)]
        errors: list[BaseException] = []

        def read(slot: int) -> None:
            try:
                while not done.is_set():
                    seen[slot].append(reading.count())
                    seen[slot].append(len(reading.query(group="backend")))
            except BaseException as exc:  # reported by the main thread
                errors.append(exc)

        threads = [threading.Thread(target=read, args=(slot,)) for slot in range(readers)]
        for thread in threads:
            thread.start()
        try:
            for number in range(batches):
                writer.add([make_event(f"b{number}-{i}", minutes=number) for i in range(batch_size)])
        finally:
            done.set()
            for thread in threads:
                thread.join(timeout=60)
        assert not errors
        assert all(not thread.is_alive() for thread in threads)
        observed = [value for values in seen for value in values]
        assert observed, "readers did not run"
        assert all(value % batch_size == 0 for value in observed)
        assert all(values == sorted(values) for values in seen)
        assert reading.count() == batch_size * batches


def test_store_is_a_sink(store: EventStore, make_event: MakeEvent) -> None:
    """The store satisfies the Sink protocol, so a pipeline can fan out to it like any sink."""
    assert isinstance(store, Sink)
    store.write([make_event("via-sink")])
    assert ids(store.query()) == ["via-sink"]


def test_indexed_columns_match_event(store: EventStore, make_event: MakeEvent) -> None:
    """The indexed columns hold the event's own values, so filters agree with the stored JSON."""
    event = make_event(
        "cols",
        client="web",
        server="pay",
        application="grpc",
        severity=Severity.CRITICAL,
        verdict=EventVerdict(action="deny", rule_id=42),
    )
    store.add([event])
    with store.engine.connect() as conn:
        row = conn.execute(select(EventRow)).one()
    assert (row.client_group, row.server_group, row.application, row.severity, row.rule_id, row.type) == (
        event.client.group,
        event.server.group,
        event.application,
        str(event.severity),
        42,
        str(event.type),
    )
    assert row.time == event.time


def test_unserialisable_event_stores_nothing(store: EventStore, make_event: MakeEvent) -> None:
    """An event whose L7 fields cannot become JSON is refused by id, and its batch is not stored."""
    with pytest.raises(ValueError, match=r"batch item 1 \(event 'raw'\): cannot be written as JSON"):
        store.add([make_event("fine"), make_event("raw", l7={"body": b"\xff\xfe"})])
    assert store.count() == 0


@pytest.fixture(scope="module")
def shared_sqlite_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EventStore]:
    with EventStore(str(tmp_path_factory.mktemp("prop") / "events.db")) as opened:
        yield opened


_json_scalars = st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=20)
_json_values = st.recursive(
    _json_scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)


@settings(max_examples=60, deadline=None)
@given(
    moment=st.datetimes(min_value=datetime(1971, 1, 1), max_value=datetime(9998, 12, 31)),
    offset_minutes=st.integers(min_value=-14 * 60, max_value=14 * 60),
    message=st.text(max_size=40),
    l7=st.dictionaries(st.text(max_size=10), _json_values, max_size=4),
)
def test_round_trip_property(
    shared_sqlite_store: EventStore, moment: datetime, offset_minutes: int, message: str, l7: dict[str, Any]
) -> None:
    """Any event with JSON-native L7 fields and any UTC offset comes back equal from the store."""
    zone = timezone(timedelta(minutes=offset_minutes))
    end = EventEndpoint(group="g", ip="10.0.0.1", port=1)
    event = Event(
        type=EventType.VIOLATION,
        time=moment.replace(tzinfo=zone),
        recorded=moment.replace(tzinfo=zone),
        client=end,
        server=end,
        transport="tcp",
        ip_proto=6,
        application="http",
        message=message,
        l7=l7,
    )
    assert shared_sqlite_store.add([event]) == 1
    window = shared_sqlite_store.query(since=event.time, until=event.time + timedelta(microseconds=1))
    assert [found for found in window if found.id == event.id] == [event]


def test_concurrent_writers_of_the_same_events(db_url: str, make_event: MakeEvent) -> None:
    """Writers racing to add the same events store each once, and their add counts sum to that."""
    writers, batches, batch_size = 3, 8, 4
    planned = [[make_event(f"r{n}-{i}", minutes=n) for i in range(batch_size)] for n in range(batches)]
    with EventStore(db_url) as store:
        added = [0] * writers
        errors: list[BaseException] = []
        start = threading.Barrier(writers)

        def write(slot: int) -> None:
            try:
                start.wait(timeout=30)
                for batch in planned:
                    added[slot] += store.add(batch)
            except BaseException as exc:  # reported by the main thread
                errors.append(exc)

        threads = [threading.Thread(target=write, args=(slot,)) for slot in range(writers)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
        assert not errors
        assert sum(added) == batches * batch_size
        assert store.count() == batches * batch_size
