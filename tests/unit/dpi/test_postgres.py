"""PostgreSQL detection and parsing: startup, SSL/GSS/cancel requests, auth, queries, errors, framing."""

from __future__ import annotations

import pytest

from podwall.core.errors import ProtocolError
from podwall.core.limits import Limits
from podwall.core.types import PROTO_TCP, Direction
from podwall.dpi.base import DetectContext, Detection
from podwall.dpi.protocols.dns import DnsDetector
from podwall.dpi.protocols.http1 import HttpDetector
from podwall.dpi.protocols.postgres import SQL_CAPTURE, PostgresDetector, PostgresParser
from podwall.dpi.protocols.redis import RedisDetector
from podwall.dpi.protocols.tls import TlsDetector
from podwall.dpi.session import DpiSession

from .binary_props import property_tests
from .fixtures import FEED_MODES, Chunks, feed_all, load_chunks, split_chunks, summary
from .fixtures import handmade as hm
from .fixtures import handmade_databases as db

C2S, S2C = Direction.C2S, Direction.S2C
ON_5432 = DetectContext(PROTO_TCP, 40000, 5432)
ON_8080 = DetectContext(PROTO_TCP, 40000, 8080)
STARTUP = db.pg_startup(user="app", database="shop", application_name="billing")


@pytest.mark.parametrize(
    ("ctx", "direction", "data", "expected"),
    [
        pytest.param(ON_5432, C2S, STARTUP, Detection.MATCH, id="startup"),
        pytest.param(ON_8080, C2S, STARTUP, Detection.MATCH, id="startup-non-standard-port"),
        pytest.param(ON_5432, C2S, STARTUP[:20], Detection.NEED_MORE, id="startup-prefix"),
        pytest.param(ON_5432, C2S, db.PG_SSL_REQUEST, Detection.MATCH, id="ssl-request"),
        pytest.param(ON_5432, C2S, db.PG_GSSENC_REQUEST, Detection.MATCH, id="gssenc-request"),
        pytest.param(ON_5432, C2S, db.PG_CANCEL, Detection.MATCH, id="cancel-request"),
        pytest.param(ON_5432, C2S, db.PG_SSL_REQUEST[:6], Detection.NEED_MORE, id="ssl-prefix"),
        pytest.param(ON_5432, C2S, db.pg_startup(database="x"), Detection.NO, id="startup-without-user"),
        pytest.param(ON_5432, C2S, STARTUP[:8] + b"us\x01er\x00", Detection.NO, id="control-byte"),
        pytest.param(ON_5432, C2S, b"\x00\x00\x00\x08\x00\x02\x00\x00", Detection.NO, id="protocol-2"),
        pytest.param(ON_5432, C2S, b"\x00\x00\x00\x0c\x04\xd2\x16\x2f", Detection.NO, id="ssl-wrong-length"),
        pytest.param(ON_5432, C2S, db.pg_query("SELECT 1"), Detection.NO, id="bare-query"),
        pytest.param(ON_5432, C2S, hm.HTTP_GET, Detection.NO, id="http-request-is-not-postgresql"),
        pytest.param(ON_5432, C2S, bytes(range(7, 200)), Detection.NO, id="random-bytes-are-not-postgresql"),
        pytest.param(ON_5432, C2S, db.my_login(), Detection.NO, id="mysql-login"),
        pytest.param(ON_5432, S2C, b"N", Detection.NEED_MORE, id="ssl-answer-keeps"),
        pytest.param(ON_5432, S2C, b"SSH-2.0-x\r\n", Detection.NEED_MORE, id="s2c-s-keeps"),
        pytest.param(ON_5432, S2C, b"+OK\r\n", Detection.NO, id="s2c-other"),
    ],
)
def test_detect(ctx: DetectContext, direction: Direction, data: bytes, expected: Detection) -> None:
    """A well-formed first client message decides postgresql; server bytes never decide."""
    assert PostgresDetector().detect(direction, data, ctx) is expected


SESSION: Chunks = [
    (C2S, db.PG_SSL_REQUEST),
    (S2C, b"N"),
    (C2S, STARTUP),
    (S2C, db.pg_msg(b"R", b"\x00\x00\x00\x0aSCRAM-SHA-256\x00\x00")),
    (S2C, db.pg_msg(b"R", b"\x00\x00\x00\x0bdata") + db.PG_AUTH_OK + db.PG_READY),
    (C2S, db.pg_query("SELECT 1")),
    (S2C, db.pg_msg(b"C", b"SELECT 1\x00") + db.pg_msg(b"Z", b"I")),
    (C2S, db.pg_parse("s1", "SELECT $1", 1) + db.pg_msg(b"B", b"\x00s1\x00" + b"\x00" * 6) + db.pg_msg(b"S", b"")),
    (C2S, db.pg_query("SELECT * FROM nope")),
    (S2C, db.pg_error("42P01", 'relation "nope" does not exist') + db.pg_msg(b"N", b"SNOTICE\x00Mhi\x00\x00")),
    (C2S, db.pg_msg(b"X", b"")),
]


@pytest.mark.parametrize("mode", FEED_MODES)
def test_session(mode: str) -> None:
    """SSL refused, startup, SASL, ready, simple and extended queries, an error: same events however cut."""
    parser = PostgresParser()
    events = feed_all(parser, split_chunks([*SESSION, (C2S, b"trailing")], mode))
    assert [e.kind for e in events] == [
        "ssl_request", "startup", "auth", "auth", "ready", "query", "query", "query", "error", "notice", "command"
    ]  # fmt: skip
    assert parser.finished
    assert events[0].fields == {"tls": False}
    assert (events[1].fields["user"], events[1].fields["database"], events[1].fields["application_name"]) == (
        "app",
        "shop",
        "billing",
    )
    assert events[2].fields == {"method": "sasl", "mechanisms": ["SCRAM-SHA-256"]}
    assert (events[4].fields["server_version"], events[4].fields["backend_pid"]) == ("16.2", 4242)
    assert [(e.fields["sql"], e.fields["kind"]) for e in events[5:8]] == [
        ("SELECT 1", "simple"),
        ("SELECT $1", "extended"),
        ("SELECT * FROM nope", "simple"),
    ]
    assert events[6].fields["statement"] == "s1"
    assert (events[8].fields["code"], events[8].fields["severity"], events[8].fields["phase"]) == (
        "42P01",
        "ERROR",
        "query",
    )


@pytest.mark.parametrize(
    ("chunks", "kind", "fields"),
    [
        pytest.param([(C2S, db.PG_SSL_REQUEST), (S2C, b"S\x16\x03\x03")], "ssl_request", {"tls": True}, id="ssl"),
        pytest.param([(C2S, db.PG_GSSENC_REQUEST), (S2C, b"G`")], "gssenc_request", {"gss": True}, id="gss"),
        pytest.param([(C2S, db.PG_CANCEL)], "cancel", {"backend_pid": 4242}, id="cancel"),
    ],
)
def test_finishing_requests(chunks: Chunks, kind: str, fields: dict[str, object]) -> None:
    """Accepted encryption and a cancel request end the useful part of the connection."""
    parser = PostgresParser()
    events = feed_all(parser, chunks)
    assert [(e.kind, e.fields) for e in events] == [(kind, fields)]
    assert parser.finished


def test_database_defaults_to_user() -> None:
    """Without a database parameter the server uses the user name; the event says so."""
    events = feed_all(PostgresParser(), [(C2S, db.pg_startup(user="alice"))])
    assert events[0].fields["database"] == "alice"


def test_long_query_streams_through() -> None:
    """A query far larger than the parser buffer is reported with its SQL capped."""
    sql = "SELECT '" + "x" * 200_000 + "'"
    parser = PostgresParser(Limits(parser_buffer=8192))
    data = STARTUP + db.pg_query(sql)
    events = feed_all(parser, [(C2S, data[i : i + 1000]) for i in range(0, len(data), 1000)])
    assert [(e.kind, len(e.fields.get("sql", "")), e.fields.get("truncated")) for e in events] == [
        ("startup", 0, None),
        ("query", SQL_CAPTURE, True),
    ]


@pytest.mark.parametrize(
    ("chunks", "message"),
    [
        pytest.param([(C2S, b"\x00\x00\x00\x08\x00\x02\x00\x00")], "unsupported protocol", id="protocol-2"),
        pytest.param([(C2S, STARTUP + b"?\x00\x00\x00\x04")], "unknown message type", id="bad-client-type"),
        pytest.param([(S2C, b"R\x00\x00\x00\x02")], "bad message length", id="short-length"),
        pytest.param([(S2C, db.pg_msg(b"R", b"\x00\x00\x00\x63"))], "authentication type", id="bad-auth"),
        pytest.param([(C2S, db.PG_SSL_REQUEST), (S2C, b"X")], "unexpected answer", id="bad-ssl-answer"),
        pytest.param([(C2S, b"\x00\x00\x00\x0e\x00\x03\x00\x00user\x00a")], "NUL", id="bad-params"),
        pytest.param([(C2S, STARTUP + db.pg_msg(b"P", b"s\x00SELECT 1\x00\x00"))], "truncated", id="short-parse"),
    ],
)
def test_errors(chunks: Chunks, message: str) -> None:
    """Malformed messages raise a ProtocolError that says what is wrong."""
    with pytest.raises(ProtocolError, match=message):
        feed_all(PostgresParser(), chunks)


CORPUS = ["pgsql_local", "pgsql_local_2", "pgsql_remote", "pgsql_psql", "pgsql_psycopg"]


@pytest.mark.parametrize("name", CORPUS)
@pytest.mark.parametrize("mode", FEED_MODES)
def test_fixtures_split_invariant(name: str, mode: str) -> None:
    """Corpus and recorded sessions give the same events fed whole, byte by byte or merged."""
    chunks = load_chunks(name)
    assert summary(feed_all(PostgresParser(), split_chunks(chunks, mode))) == summary(
        feed_all(PostgresParser(), chunks)
    )


def test_corpus_pgsql_local() -> None:
    """pgsql.pcap (PostgreSQL 7.4): md5 login and extended-protocol queries."""
    events = feed_all(PostgresParser(), load_chunks("pgsql_local"))
    assert events[0].fields["user"] == "oryx" and events[0].fields["database"] == "mailstore"
    assert events[3].fields["server_version"] == "7.4.6"
    assert [e.fields["sql"] for e in events if e.kind == "query"][:3] == [
        "begin",
        "select revision from mailstore for update",
        "commit",
    ]


def test_recorded_psql_and_psycopg() -> None:
    """Real PostgreSQL 15 sessions: psql's simple query with an error, psycopg's parameterised query."""
    psql = feed_all(PostgresParser(), load_chunks("pgsql_psql"))
    assert [e.kind for e in psql] == ["ssl_request", "startup", "auth", "ready", "query", "error", "command"]
    assert psql[5].fields["code"] == "42P01"
    psycopg = feed_all(PostgresParser(), load_chunks("pgsql_psycopg"))
    queries = [(e.fields["sql"], e.fields["kind"]) for e in psycopg if e.kind == "query"]
    assert ("SELECT $1::int + 1 AS answer", "extended") in queries
    assert [e.fields["code"] for e in psycopg if e.kind == "error"] == ["22012"]
    assert psycopg[0].fields["application_name"] == "psycopg-test"


def test_session_decides_postgresql() -> None:
    """In a session with the other detectors, the startup message decides postgresql and events follow."""
    session = DpiSession(
        DetectContext(PROTO_TCP, 40000, 15432),
        detectors=[PostgresDetector(), HttpDetector(), TlsDetector(), DnsDetector(), RedisDetector()],
    )
    for direction, data in load_chunks("pgsql_psycopg"):
        session.on_stream(direction, data)
    assert session.app == "postgresql" and session.error is None
    assert session.events[0].kind == "startup"


# -- properties -------------------------------------------------------------------------

TRANSCRIPTS = [SESSION, *[load_chunks(n) for n in CORPUS]]
DETECTED = [(C2S, m) for m in [STARTUP, db.PG_SSL_REQUEST, db.PG_CANCEL, load_chunks("pgsql_remote")[2][1]]]

test_random_bytes, test_mutated_fixtures, test_bounded_memory, test_detector_prefix_and_no_is_final = property_tests(
    PostgresParser,
    TRANSCRIPTS,
    lambda parser: (len(parser._client.body), len(parser._server.body)),
    PostgresDetector,
    DETECTED,
    ON_5432,
)
