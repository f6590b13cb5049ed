"""Cassandra detection and parsing: CQL v3-v5 frames (requests, responses, errors) and the inter-node magic."""

from __future__ import annotations

import pytest

from podwall.core.errors import ProtocolError
from podwall.core.limits import Limits
from podwall.core.types import PROTO_TCP, Direction
from podwall.dpi.base import DetectContext, Detection
from podwall.dpi.protocols.cassandra import QUERY_CAPTURE, CassandraDetector, CassandraParser
from podwall.dpi.protocols.dns import DnsDetector
from podwall.dpi.protocols.http1 import HttpDetector
from podwall.dpi.protocols.redis import RedisDetector
from podwall.dpi.protocols.tls import TlsDetector
from podwall.dpi.session import DpiSession

from .binary_props import property_tests
from .fixtures import FEED_MODES, Chunks, feed_all, load_chunks, split_chunks, summary
from .fixtures import handmade as hm
from .fixtures import handmade_databases as db

C2S, S2C = Direction.C2S, Direction.S2C
ON_9042 = DetectContext(PROTO_TCP, 40000, 9042)
ON_8080 = DetectContext(PROTO_TCP, 40000, 8080)
OPTIONS = db.cql_frame(4, 0x05)
STARTUP = db.cql_startup()
QUERY = db.cql_query("SELECT * FROM ks.users WHERE id = 1")
GOSSIP = load_chunks("cassandra_gossip")[0][1]


@pytest.mark.parametrize(
    ("ctx", "direction", "data", "expected"),
    [
        pytest.param(ON_9042, C2S, OPTIONS, Detection.MATCH, id="options"),
        pytest.param(ON_9042, C2S, db.cql_frame(3, 0x05), Detection.MATCH, id="options-v3"),
        pytest.param(ON_9042, C2S, STARTUP, Detection.MATCH, id="startup"),
        pytest.param(ON_8080, C2S, STARTUP, Detection.MATCH, id="startup-non-standard-port"),
        pytest.param(ON_9042, C2S, QUERY, Detection.MATCH, id="query-mid-session"),
        pytest.param(ON_9042, C2S, GOSSIP, Detection.MATCH, id="internode-magic"),
        pytest.param(ON_9042, C2S, GOSSIP[:2], Detection.NEED_MORE, id="internode-prefix"),
        pytest.param(ON_9042, C2S, STARTUP[:12], Detection.NEED_MORE, id="startup-prefix"),
        pytest.param(ON_9042, C2S, db.cql_frame(2, 0x05), Detection.NO, id="v2"),
        pytest.param(ON_9042, C2S, db.cql_frame(4, 0x05, b"x"), Detection.NO, id="options-with-body"),
        pytest.param(ON_9042, C2S, db.cql_frame(4, 0x01, b"\x00\x00"), Detection.NO, id="startup-without-version"),
        pytest.param(ON_9042, C2S, db.cql_frame(4, 0x0A, b"\x00\x01x"), Detection.NO, id="execute-first"),
        pytest.param(ON_9042, C2S, db.cql_frame(4, 0x05, flags=0x01), Detection.NO, id="compressed"),
        pytest.param(ON_9042, C2S, db.cql_frame(3, 0x05, flags=0x04), Detection.NO, id="v3-unknown-flag"),
        pytest.param(
            ON_9042,
            C2S,
            db.cql_frame(4, 0x07, db.cql_long_string("\x00\x01\x02") + b"\x00\x01"),
            Detection.NO,
            id="binary-query",
        ),
        pytest.param(ON_9042, S2C, db.cql_frame(0x84, 0x06, b"\x00\x00"), Detection.NEED_MORE, id="response-keeps"),
        pytest.param(ON_9042, S2C, b"+OK\r\n", Detection.NO, id="other-response"),
        pytest.param(ON_9042, C2S, hm.HTTP_GET, Detection.NO, id="http-request-is-not-cassandra"),
        pytest.param(ON_9042, C2S, bytes(range(7, 200)), Detection.NO, id="random-bytes-are-not-cassandra"),
        pytest.param(ON_9042, C2S, db.my_login(), Detection.NO, id="mysql-login"),
    ],
)
def test_detect(ctx: DetectContext, direction: Direction, data: bytes, expected: Detection) -> None:
    """A driver's first frame or the inter-node magic decides cassandra; anything else is ruled out."""
    assert CassandraDetector().detect(direction, data, ctx) is expected


SUPPORTED = db.cql_frame(0x84, 0x06, b"\x00\x01" + db.cql_string("CQL_VERSION") + b"\x00\x01" + db.cql_string("3.4.5"))
BATCH = (
    b"\x00\x00\x02"
    + b"\x00"
    + db.cql_long_string("INSERT INTO t (a) VALUES (1)")
    + b"\x00\x00"
    + b"\x01\x00\x02ab\x00\x00"
)
SESSION: Chunks = [
    (C2S, OPTIONS),
    (S2C, SUPPORTED),
    (C2S, STARTUP),
    (S2C, db.cql_frame(0x84, 0x03, db.cql_string("org.apache.cassandra.auth.PasswordAuthenticator"), 1)),
    (C2S, db.cql_frame(4, 0x0F, b"\x00\x00\x00\x05\x00u\x00pw", 2)),
    (S2C, db.cql_frame(0x84, 0x10, b"\xff\xff\xff\xff", 2)),
    (C2S, db.cql_query("USE shop", stream=3) + db.cql_frame(4, 0x09, db.cql_long_string("SELECT * FROM t"), 4)),
    (S2C, db.cql_frame(0x84, 0x08, b"\x00\x00\x00\x03" + db.cql_string("shop"), 3)),
    (C2S, db.cql_frame(4, 0x0D, BATCH, 5) + db.cql_frame(4, 0x0B, b"\x00\x01" + db.cql_string("SCHEMA_CHANGE"), 6)),
    (C2S, db.cql_frame(4, 0x0A, b"\x00\x02\xab\xcd" + b"\x00\x01\x00", 7)),
    (S2C, db.cql_error(0x2200, "unconfigured table t", stream=7)),
]


@pytest.mark.parametrize("mode", FEED_MODES)
def test_session(mode: str) -> None:
    """Options, startup, auth, queries, batch, register, execute and an error: same events however cut."""
    events = feed_all(CassandraParser(), split_chunks([*SESSION, (C2S, OPTIONS[:4])], mode))
    assert [(e.kind, e.fields["opcode"], e.fields["stream"]) for e in events] == [
        ("request", "OPTIONS", 0),
        ("response", "SUPPORTED", 0),
        ("request", "STARTUP", 1),
        ("response", "AUTHENTICATE", 1),
        ("request", "AUTH_RESPONSE", 2),
        ("response", "AUTH_SUCCESS", 2),
        ("request", "QUERY", 3),
        ("request", "PREPARE", 4),
        ("response", "RESULT", 3),
        ("request", "BATCH", 5),
        ("request", "REGISTER", 6),
        ("request", "EXECUTE", 7),
        ("error", "ERROR", 7),
    ]
    assert events[1].fields["options"] == {"CQL_VERSION": ["3.4.5"]}
    assert events[2].fields["cql_version"] == "3.0.0"
    assert events[3].fields["authenticator"].endswith("PasswordAuthenticator")
    assert (events[6].fields["query"], events[6].fields["consistency"]) == ("USE shop", "ONE")
    assert events[7].fields["query"] == "SELECT * FROM t"
    assert (events[8].fields["result"], events[8].fields["keyspace"]) == ("set_keyspace", "shop")
    assert (events[9].fields["statements"], events[9].fields["query"]) == (2, "INSERT INTO t (a) VALUES (1)")
    assert events[10].fields["events"] == ["SCHEMA_CHANGE"]
    assert events[11].fields["prepared_id"] == "abcd"
    assert (events[12].fields["code"], events[12].fields["message"]) == (0x2200, "unconfigured table t")


def test_v5_stops_at_segments() -> None:
    """In v5, after READY the frames are wrapped in segments: the parser stops."""
    parser = CassandraParser()
    events = feed_all(
        parser, [(C2S, db.cql_startup(5)), (S2C, db.cql_frame(0x85, 0x02, stream=1)), (C2S, b"\x01\x02\x03")]
    )
    assert [e.fields["opcode"] for e in events] == ["STARTUP", "READY"]
    assert parser.finished


def test_compressed_and_flags() -> None:
    """A compressed body is not read; tracing ids and warnings before a response body are skipped."""
    warned = b"\x00" * 16 + b"\x00\x01" + db.cql_string("careful") + b"\x00\x00\x00\x01"
    events = feed_all(
        CassandraParser(),
        [(C2S, db.cql_frame(4, 0x07, b"\x12\x34", flags=0x01)), (S2C, db.cql_frame(0x84, 0x08, warned, flags=0x0A))],
    )
    assert events[0].fields.get("compressed") is True and "query" not in events[0].fields
    assert (events[1].fields["result"], events[1].fields["warnings"]) == ("void", ["careful"])


def test_long_query_is_capped() -> None:
    """A query larger than the parser buffer streams through; its text is capped and marked truncated."""
    frame = db.cql_query("SELECT '" + "x" * 100_000 + "'")
    events = feed_all(
        CassandraParser(Limits(parser_buffer=8192)), [(C2S, frame[i : i + 999]) for i in range(0, len(frame), 999)]
    )
    assert [(e.fields["opcode"], len(e.fields.get("query", "")), e.fields.get("truncated")) for e in events] == [
        ("QUERY", 0, True)
    ]


def test_short_query_text_capped() -> None:
    """A query that fits the buffer but exceeds the text capture keeps its first characters."""
    events = feed_all(CassandraParser(), [(C2S, db.cql_query("SELECT '" + "y" * 10_000 + "'"))])
    assert len(events[0].fields["query"]) == QUERY_CAPTURE


@pytest.mark.parametrize(
    ("chunks", "message"),
    [
        pytest.param([(C2S, db.cql_frame(0x84, 0x05))], "bad version byte", id="response-from-client"),
        pytest.param([(C2S, db.cql_frame(6, 0x05))], "bad version byte", id="v6"),
        pytest.param([(C2S, db.cql_frame(4, 0x02))], "opcode", id="ready-from-client"),
        pytest.param([(S2C, db.cql_frame(0x84, 0x07))], "opcode", id="query-from-server"),
        pytest.param([(C2S, db.cql_frame(3, 0x05, flags=0x08))], "unknown flags", id="flags"),
        pytest.param([(C2S, db.cql_frame(4, 0x07, b"\x00\x00\x00\x09abc"))], "truncated", id="short-query"),
        pytest.param([(C2S, b"\x04\x00\x00\x00\x07\x7f\xff\xff\xff")], "body length", id="huge-frame"),
        pytest.param([(C2S, b"\xca\x55\x00\x00\x00\x00\x00\x00")], "neither", id="bad-magic"),
    ],
)
def test_errors(chunks: Chunks, message: str) -> None:
    """Malformed frames raise a ProtocolError that says what is wrong."""
    with pytest.raises(ProtocolError, match=message):
        feed_all(CassandraParser(), chunks)


CORPUS = ["cassandra_local", "cassandra_remote", "cassandra_gossip"]


@pytest.mark.parametrize("name", CORPUS)
@pytest.mark.parametrize("mode", FEED_MODES)
def test_fixtures_split_invariant(name: str, mode: str) -> None:
    """Corpus flows give the same events fed whole, byte by byte or merged."""
    chunks = load_chunks(name)
    assert summary(feed_all(CassandraParser(), split_chunks(chunks, mode))) == summary(
        feed_all(CassandraParser(), chunks)
    )


def test_corpus_flows() -> None:
    """cassandra.pcap: v4 and v5 OPTIONS/SUPPORTED/STARTUP, and the port-7000 inter-node handshake."""
    local = feed_all(CassandraParser(), load_chunks("cassandra_local"))
    assert [(e.fields["opcode"], e.fields["version"]) for e in local] == [
        ("OPTIONS", 4),
        ("SUPPORTED", 4),
        ("STARTUP", 4),
    ]
    remote = feed_all(CassandraParser(), load_chunks("cassandra_remote"))
    assert remote[2].fields["driver_name"] == "DataStax Python Driver"
    assert remote[1].fields["options"]["PROTOCOL_VERSIONS"] == ["3/v3", "4/v4", "5/v5", "6/v6-beta"]
    gossip = CassandraParser()
    events = feed_all(gossip, load_chunks("cassandra_gossip"))
    assert [(e.kind, e.fields["messaging_version"]) for e in events] == [("internode", 12)]
    assert gossip.finished


def test_session_decides_cassandra() -> None:
    """In a session with the other detectors, OPTIONS decides cassandra and events follow."""
    session = DpiSession(
        DetectContext(PROTO_TCP, 40000, 19042),
        detectors=[CassandraDetector(), HttpDetector(), TlsDetector(), DnsDetector(), RedisDetector()],
    )
    for direction, data in load_chunks("cassandra_remote"):
        session.on_stream(direction, data)
    assert session.app == "cassandra" and session.error is None
    assert [e.fields["opcode"] for e in session.events] == ["OPTIONS", "SUPPORTED", "STARTUP"]


# -- properties -------------------------------------------------------------------------

TRANSCRIPTS = [SESSION, *[load_chunks(n) for n in CORPUS]]
DETECTED = [(C2S, m) for m in [OPTIONS, STARTUP, QUERY, GOSSIP, load_chunks("cassandra_remote")[2][1]]]

test_random_bytes, test_mutated_fixtures, test_bounded_memory, test_detector_prefix_and_no_is_final = property_tests(
    CassandraParser,
    TRANSCRIPTS,
    lambda parser: (len(parser._requests.body), len(parser._responses.body)),
    CassandraDetector,
    DETECTED,
    ON_9042,
)
