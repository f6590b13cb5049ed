"""NATS detection by INFO/CONNECT and parsing of the client protocol's operations, payloads and errors."""

from __future__ import annotations

import pytest

from podwall.core.errors import ProtocolError
from podwall.core.types import PROTO_TCP, Direction
from podwall.dpi.base import DetectContext, Detection
from podwall.dpi.protocols.dns import DnsDetector
from podwall.dpi.protocols.http1 import HttpDetector
from podwall.dpi.protocols.nats import NatsDetector, NatsParser
from podwall.dpi.protocols.redis import RedisDetector
from podwall.dpi.protocols.tls import TlsDetector
from podwall.dpi.session import DpiSession

from .fixtures import FEED_MODES, Chunks, feed_all, split_chunks
from .fixtures import handmade as hm
from .fixtures import handmade_text as ht
from .textproto_props import property_tests

C2S, S2C = Direction.C2S, Direction.S2C
ON_4222 = DetectContext(PROTO_TCP, 40000, 4222)
ON_8080 = DetectContext(PROTO_TCP, 40000, 8080)


@pytest.mark.parametrize(
    ("direction", "data", "expected"),
    [
        pytest.param(S2C, ht.NATS_SESSION[0][1], Detection.MATCH, id="info"),
        pytest.param(C2S, ht.NATS_SESSION[1][1], Detection.MATCH, id="connect"),
        pytest.param(C2S, b"connect\t{}", Detection.MATCH, id="lower-case-tab"),
        pytest.param(S2C, b"INF", Detection.NEED_MORE, id="info-prefix"),
        pytest.param(C2S, b"CONNECT ", Detection.NEED_MORE, id="connect-prefix"),
        pytest.param(C2S, b"CONNECT example.com:443 HTTP/1.1\r\n", Detection.NO, id="http-connect-is-not-nats"),
        pytest.param(C2S, hm.HTTP_GET, Detection.NO, id="http-request-is-not-nats"),
        pytest.param(C2S, b"PUB a 1\r\nx\r\n", Detection.NO, id="pub-without-connect"),
        pytest.param(S2C, b"INFO server\r\n", Detection.NO, id="info-without-json"),
        pytest.param(S2C, b"+OK\r\n", Detection.NO, id="redis-reply-is-not-nats"),
        pytest.param(C2S, b"\xc3\x00\x17random", Detection.NO, id="random-bytes-are-not-nats"),
    ],
)
def test_detect(direction: Direction, data: bytes, expected: Detection) -> None:
    """The server's INFO or the client's CONNECT, each with a JSON object, decide NATS."""
    assert NatsDetector().detect(direction, data, ON_4222) is expected


def test_non_standard_port_is_still_nats() -> None:
    """On port 8080 the INFO greeting still decides NATS."""
    session = DpiSession(
        ON_8080, detectors=[NatsDetector(), HttpDetector(), TlsDetector(), DnsDetector(), RedisDetector()]
    )
    for direction, data in ht.NATS_SESSION:
        session.on_stream(direction, data)
    assert (session.app, session.error, session.events[0].kind) == ("nats", None, "info")


@pytest.mark.parametrize("mode", FEED_MODES)
def test_session(mode: str) -> None:
    """INFO, CONNECT (credentials named, never shown), SUB, PUB/HPUB, MSG/HMSG, UNSUB and -ERR, however split."""
    events = feed_all(NatsParser(), split_chunks(ht.NATS_SESSION, mode))
    assert [e.kind for e in events] == [
        "info", "connect", "subscribe", "subscribe", "publish", "publish", "message", "message", "publish",
        "unsubscribe", "error",
    ]  # fmt: skip
    info, connect = events[0].fields, events[1].fields
    assert (info["server_id"], info["version"], info["headers"], info["max_payload"]) == (
        "NCXYZ",
        "2.10.7",
        True,
        1048576,
    )
    assert (connect["name"], connect["lang"], connect["user"], connect["auth"]) == (
        "orders",
        "go",
        "svc",
        ["user", "pass"],
    )
    assert "hunter2" not in str([e.fields for e in events])
    assert events[2].fields == {"subject": "orders.*", "queue": "workers", "sid": "1"}
    assert events[4].fields == {"subject": "orders.new", "reply": "_INBOX.x", "size": 5, "headers": False}
    assert (events[5].fields["size"], events[5].fields["headers"]) == (len(ht.NATS_HEADERS) + 5, True)
    assert events[8].fields["size"] == 100000
    assert events[9].fields == {"sid": "1", "max": 10}
    assert events[10].fields["message"] == "Permissions Violation for Publish to big"


@pytest.mark.parametrize(
    ("chunks", "message"),
    [
        pytest.param([(S2C, b"INFO {bad json}\r\n")], "not valid JSON", id="bad-json"),
        pytest.param([(S2C, b"INFO [1]\r\n")], "not a JSON object", id="json-array"),
        pytest.param([(S2C, b"INFO " + b"[" * 100000 + b"\r\n")], "longer than", id="deep-json-over-cap"),
        pytest.param([(C2S, b"PUB a 3\r\nabcd\r\n")], "not followed by CRLF", id="payload-overrun"),
        pytest.param([(C2S, b"PUB a x\r\n")], "bad payload size", id="bad-size"),
        pytest.param([(C2S, b"PUB a 99999999999\r\n")], "bad payload size", id="huge-size"),
        pytest.param([(C2S, b"PUB\r\n")], "PUB with 0 arguments", id="pub-no-subject"),
        pytest.param([(C2S, b"HPUB a 9 5\r\n")], "header size larger", id="hpub-header-too-big"),
        pytest.param([(C2S, b"SUB a\r\n")], "SUB with 1 arguments", id="sub-no-sid"),
        pytest.param([(C2S, b"MSG a 1 1\r\n")], "unknown client operation", id="client-sends-msg"),
        pytest.param([(S2C, b"FROB\r\n")], "unknown server operation", id="unknown-op"),
    ],
)
@pytest.mark.parametrize("mode", ["whole", "byte-by-byte"])
def test_malformed_is_protocol_error(chunks: Chunks, message: str, mode: str) -> None:
    """Bad JSON, sizes, argument counts and unknown operations raise ProtocolError saying what."""
    with pytest.raises(ProtocolError, match=message):
        feed_all(NatsParser(), split_chunks(chunks, mode))


(
    test_random_bytes_raise_only_protocol_error,
    test_mutated_transcripts_raise_only_protocol_error,
    test_held_memory_is_bounded,
    test_any_split_gives_the_same_events,
    test_prefix_of_a_match_is_never_no,
    test_no_is_final,
) = property_tests(
    lambda limits: NatsParser(limits),
    [[*ht.NATS_SESSION[:7], (C2S, b"UNSUB 1\r\n")]],
    NatsDetector(),
    [ht.NATS_SESSION[0], ht.NATS_SESSION[1]],
)
