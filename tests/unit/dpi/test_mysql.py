"""MySQL detection and parsing: greeting, login, SSLRequest, commands, OK/ERR, multi-packet payloads."""

from __future__ import annotations

import pytest

from podwall.core.errors import ProtocolError
from podwall.core.limits import Limits
from podwall.core.types import PROTO_TCP, Direction
from podwall.dpi.base import DetectContext, Detection
from podwall.dpi.protocols.dns import DnsDetector
from podwall.dpi.protocols.http1 import HttpDetector
from podwall.dpi.protocols.mysql import SQL_CAPTURE, MysqlDetector, MysqlParser
from podwall.dpi.protocols.redis import RedisDetector
from podwall.dpi.protocols.tls import TlsDetector
from podwall.dpi.session import DpiSession

from .binary_props import property_tests
from .fixtures import FEED_MODES, Chunks, feed_all, load_chunks, split_chunks, summary
from .fixtures import handmade as hm
from .fixtures import handmade_databases as db

C2S, S2C = Direction.C2S, Direction.S2C
ON_3306 = DetectContext(PROTO_TCP, 40000, 3306)
ON_8080 = DetectContext(PROTO_TCP, 40000, 8080)
GREETING = db.my_greeting()
MARIADB_GREETING = load_chunks("mysql_mariadb_local")[0][1]
LOGIN = db.my_login()


@pytest.mark.parametrize(
    ("ctx", "direction", "data", "expected"),
    [
        pytest.param(ON_3306, S2C, GREETING, Detection.MATCH, id="greeting"),
        pytest.param(ON_8080, S2C, GREETING, Detection.MATCH, id="greeting-non-standard-port"),
        pytest.param(ON_3306, S2C, MARIADB_GREETING, Detection.MATCH, id="mariadb-greeting"),
        pytest.param(ON_3306, S2C, GREETING[:12], Detection.NEED_MORE, id="greeting-prefix"),
        pytest.param(ON_3306, S2C, db.my_packet(0, b"\xff\x69\x04Host is not allowed"), Detection.MATCH, id="refusal"),
        pytest.param(ON_3306, S2C, db.my_packet(0, b"\x09" + GREETING[5:]), Detection.NO, id="protocol-9"),
        pytest.param(ON_3306, S2C, db.my_packet(1, GREETING[4:]), Detection.NO, id="greeting-seq-1"),
        pytest.param(ON_3306, S2C, db.my_packet(0, b"\x0a\x00" + b"\x00" * 40), Detection.NO, id="empty-version"),
        pytest.param(
            ON_3306, S2C, db.my_packet(0, b"\x0abeta\x00" + b"\x00" * 40), Detection.NO, id="version-not-digit"
        ),
        pytest.param(ON_3306, C2S, LOGIN, Detection.MATCH, id="login"),
        pytest.param(ON_8080, C2S, db.my_ssl_request(), Detection.MATCH, id="ssl-request"),
        pytest.param(ON_3306, C2S, load_chunks("mysql_mariadb")[1][1], Detection.MATCH, id="mariadb-login"),
        pytest.param(ON_3306, C2S, LOGIN[:20], Detection.NEED_MORE, id="login-prefix"),
        pytest.param(ON_3306, C2S, LOGIN[:20] + b"\x01" + LOGIN[21:], Detection.NO, id="login-dirty-filler"),
        pytest.param(ON_3306, C2S, db.my_packet(0, b"\x03SELECT 1"), Detection.NO, id="bare-query"),
        pytest.param(ON_3306, C2S, hm.HTTP_GET, Detection.NO, id="http-request-is-not-mysql"),
        pytest.param(ON_3306, S2C, hm.HTTP_OK, Detection.NO, id="http-response-is-not-mysql"),
        pytest.param(ON_3306, C2S, bytes(range(7, 200)), Detection.NO, id="random-bytes-are-not-mysql"),
        pytest.param(ON_3306, C2S, b"\x00\x00\x00\x08\x04\xd2\x16\x2f", Detection.NO, id="postgres-ssl"),
        pytest.param(ON_3306, S2C, b"SSH-2.0-OpenSSH_9.2\r\n", Detection.NO, id="ssh-banner"),
    ],
)
def test_detect(ctx: DetectContext, direction: Direction, data: bytes, expected: Detection) -> None:
    """The greeting or the client's handshake response decides mysql; anything else is ruled out."""
    assert MysqlDetector().detect(direction, data, ctx) is expected


SESSION: Chunks = [
    (S2C, GREETING),
    (C2S, LOGIN),
    (S2C, db.my_packet(2, db.MY_OK)),
    (C2S, db.my_packet(0, b"\x02shop")),
    (S2C, db.my_packet(1, db.MY_OK)),
    (C2S, db.my_packet(0, b"\x03SELECT * FROM t WHERE id = 1")),
    (S2C, db.my_packet(1, b"\x01") + db.my_packet(2, b"\x03def") + db.my_packet(3, b"\xfe\x00\x00\x02\x00")),
    (C2S, db.my_packet(0, b"\x16INSERT INTO t VALUES (?)")),
    (C2S, db.my_packet(0, b"\x19\x01\x00\x00\x00")),
    (C2S, db.my_packet(0, b"\x03DROP TABLE x")),
    (S2C, db.my_err(1, 1051, b"42S02", b"Unknown table 'x'")),
    (C2S, db.my_packet(0, b"\x01")),
]


@pytest.mark.parametrize("mode", FEED_MODES)
def test_session(mode: str) -> None:
    """Greeting, login, commands, OK and ERR give the same events however the stream is cut."""
    parser = MysqlParser()
    events = feed_all(parser, split_chunks([*SESSION, (C2S, b"trailing")], mode))
    assert [(e.kind, e.fields.get("command") or e.fields.get("phase")) for e in events] == [
        ("greeting", None),
        ("login", None),
        ("ok", "auth"),
        ("command", "INIT_DB"),
        ("ok", "command"),
        ("query", "QUERY"),
        ("query", "STMT_PREPARE"),
        ("command", "STMT_CLOSE"),
        ("query", "QUERY"),
        ("error", "command"),
        ("command", "QUIT"),
    ]
    assert parser.finished
    assert events[0].fields["server_version"] == "8.0.36" and events[0].fields["connection_id"] == 7
    assert events[0].fields["auth_plugin"] == "caching_sha2_password"
    assert (events[1].fields["user"], events[1].fields["database"]) == ("app", "shop")
    assert events[3].fields["database"] == "shop"
    assert events[5].fields["sql"] == "SELECT * FROM t WHERE id = 1"
    assert events[7].fields["statement_id"] == 1
    assert events[9].fields == {"code": 1051, "sql_state": "42S02", "message": "Unknown table 'x'", "phase": "command"}


def test_ssl_request_finishes() -> None:
    """After an SSLRequest the rest is TLS: the parser says so and stops."""
    parser = MysqlParser()
    events = feed_all(parser, [(S2C, GREETING), (C2S, db.my_ssl_request() + b"\x16\x03\x01\x00\x05hello")])
    assert [(e.kind, e.fields.get("tls")) for e in events] == [("greeting", None), ("ssl_request", True)]
    assert parser.finished


def test_login_without_database() -> None:
    """A login without CLIENT_CONNECT_WITH_DB names no database."""
    events = feed_all(MysqlParser(), [(C2S, db.my_login(database=None))])
    assert (events[0].fields["user"], events[0].fields["database"]) == ("app", None)


@pytest.mark.parametrize("mode", ["whole", "byte-by-byte"])
def test_multi_packet_query(mode: str) -> None:
    """A query over 16 MiB spans several packets; it is one event with its SQL capped."""
    sql = b"SELECT '" + b"x" * (0xFFFFFF + 10) + b"'"
    stream = db.my_packets(0, b"\x03" + sql)
    chunks: Chunks = (
        [(C2S, stream)] if mode == "whole" else [(C2S, stream[i : i + 65536]) for i in range(0, len(stream), 65536)]
    )
    parser = MysqlParser(Limits(parser_buffer=8192))
    parser._logged_in = True
    events = feed_all(parser, chunks)
    assert [(e.kind, len(e.fields["sql"]), e.fields["truncated"]) for e in events] == [("query", SQL_CAPTURE, True)]


@pytest.mark.parametrize(
    ("chunks", "message"),
    [
        pytest.param(
            [(C2S, db.my_packet(0, b"\x03x")), (C2S, db.my_packet(0, b"\x99"))], "unknown command", id="bad-command"
        ),
        pytest.param([(C2S, db.my_packet(1, b"\x00" * 32))], "CLIENT_PROTOCOL_41", id="old-login"),
        pytest.param([(C2S, db.my_packet(1, LOGIN[4:36] + b"s" * 50))], "NUL-terminated", id="unterminated-user"),
        pytest.param(
            [(C2S, b"\xff\xff\xff\x00" + b"\x03" + b"a" * 0xFFFFFE + db.my_packet(5, b"x"))],
            "continuation",
            id="bad-seq",
        ),
        pytest.param([(S2C, db.my_packet(0, b"\x0a8.0\x00\x01"))], "truncated", id="short-greeting"),
    ],
)
def test_errors(chunks: Chunks, message: str) -> None:
    """Malformed packets raise a ProtocolError that says what is wrong."""
    with pytest.raises(ProtocolError, match=message):
        feed_all(MysqlParser(), chunks)


CORPUS = ["mysql_8", "mysql_mariadb", "mysql_mariadb_local"]


@pytest.mark.parametrize("name", CORPUS)
@pytest.mark.parametrize("mode", FEED_MODES)
def test_fixtures_split_invariant(name: str, mode: str) -> None:
    """Corpus and recorded sessions give the same events fed whole, byte by byte or merged."""
    chunks = load_chunks(name)
    assert summary(feed_all(MysqlParser(), split_chunks(chunks, mode))) == summary(feed_all(MysqlParser(), chunks))


def test_corpus_mysql8_tls() -> None:
    """mysql.pcapng (MySQL 8.0.36): greeting, then the client asks for TLS."""
    events = feed_all(MysqlParser(), load_chunks("mysql_8"))
    assert [(e.kind, e.fields.get("server_version"), e.fields.get("tls")) for e in events] == [
        ("greeting", "8.0.36", None),
        ("ssl_request", None, True),
    ]


def test_recorded_mariadb() -> None:
    """A real MariaDB 10.11 session: login with a database, queries, an OK with affected rows, an ERR."""
    events = feed_all(MysqlParser(), load_chunks("mysql_mariadb_local"))
    kinds = [e.kind for e in events]
    assert kinds == ["greeting", "login", "ok", "query", "query", "ok", "query", "ok", "query", "error", "command"]
    assert events[0].fields["server_version"].startswith("10.11.") and events[0].fields["mariadb"]
    assert (events[1].fields["user"], events[1].fields["database"], events[1].fields["program_name"]) == (
        "app",
        "shop",
        "mysql",
    )
    assert events[7].fields["affected_rows"] == 1
    assert (events[9].fields["code"], events[9].fields["sql_state"]) == (1146, "42S02")


def test_session_decides_mysql() -> None:
    """In a session with the other detectors, the server greeting decides mysql and events follow."""
    session = DpiSession(
        DetectContext(PROTO_TCP, 40000, 13306),
        detectors=[MysqlDetector(), HttpDetector(), TlsDetector(), DnsDetector(), RedisDetector()],
    )
    for direction, data in load_chunks("mysql_mariadb_local"):
        session.on_stream(direction, data)
    assert session.app == "mysql" and session.error is None and session.done
    assert session.events[1].fields["user"] == "app"


# -- properties -------------------------------------------------------------------------

TRANSCRIPTS = [SESSION, load_chunks("mysql_mariadb_local"), load_chunks("mysql_mariadb"), load_chunks("mysql_8")[:3]]
DETECTED = [(S2C, GREETING), (S2C, MARIADB_GREETING), (C2S, LOGIN)]

test_random_bytes, test_mutated_fixtures, test_bounded_memory, test_detector_prefix_and_no_is_final = property_tests(
    MysqlParser,
    TRANSCRIPTS,
    lambda parser: (len(parser._client.body), len(parser._server.body)),
    MysqlDetector,
    DETECTED,
    ON_3306,
)
