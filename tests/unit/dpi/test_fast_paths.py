"""Fast paths in the parsers and detectors give exactly what the careful paths give.

Redis nested replies (one regex per element, reply reported at its header), DNS names read
in one pass, the DNS and HTTP/2 hand-overs from detector to parser (the parser takes what the
detector already read), JA4 lists formatted in one go, and byte-class checks done by regex.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from podwall.core.errors import ProtocolError
from podwall.core.limits import Limits
from podwall.core.types import PROTO_TCP, PROTO_UDP, Direction
from podwall.dpi.base import DetectContext
from podwall.dpi.protocols import dns, http2_frames, ja4
from podwall.dpi.protocols.http2 import Http2Parser
from podwall.dpi.protocols.http2_frames import APP_GRPC
from podwall.dpi.protocols.redis import RedisParser
from podwall.dpi.protocols.textline import is_text
from podwall.dpi.session import DpiSession

from .fixtures import FEED_MODES, feed_all, load_chunks, split_chunks, summary
from .fixtures import handmade as hm

C2S, S2C = Direction.C2S, Direction.S2C
PROPS = settings(max_examples=300, deadline=timedelta(milliseconds=1000))

# -- Redis ----------------------------------------------------------------------------------


def _replies(data: bytes, mode: str) -> list[tuple[str, object]]:
    events = feed_all(RedisParser(), split_chunks([(S2C, data)], mode))
    return [(e.fields["type"], e.fields["value"]) for e in events]


@pytest.mark.parametrize("mode", FEED_MODES)
@pytest.mark.parametrize(
    ("data", "expected"),
    [
        pytest.param(
            b"*2\r\n|1\r\n+key\r\n*2\r\n:1\r\n:2\r\n+a\r\n+b\r\n:7\r\n",
            [("array", 2), ("integer", 7)],
            id="attribute-with-aggregate-value-inside-array",
        ),
        pytest.param(
            b"*1\r\n*2\r\n$3\r\na\r\n\r\n*0\r\n+OK\r\n",
            [("array", 1), ("simple_string", "OK")],
            id="bulk-holding-crlf-and-empty-array",
        ),
        pytest.param(
            b"*3\r\n$-1\r\n%1\r\n+k\r\n:1\r\n:-5\r\n-ERR x\r\n",
            [("array", 3), ("error", "ERR x")],
            id="null-bulk-and-map-inside-array",
        ),
    ],
)
def test_redis_nested_elements_counted_alike(data: bytes, expected: list[tuple[str, object]], mode: str) -> None:
    """Nested elements end an aggregate at the same place whether read whole (fast path) or byte by byte."""
    assert _replies(data, mode) == expected


def test_redis_reply_reported_at_its_header() -> None:
    """An aggregate reply is reported as soon as its header is read: type and count are all it says."""
    parser = RedisParser()
    assert [(e.fields["type"], e.fields["value"]) for e in parser.feed(S2C, b"*240\r\n*10\r\n$3\r\nget")] == [
        ("array", 240)
    ]


def test_redis_nested_elements_are_still_checked() -> None:
    """Elements after an early-reported reply are still parsed: a malformed one is a ProtocolError."""
    parser = RedisParser()
    assert len(parser.feed(S2C, b"*2\r\n:1\r\n")) == 1
    with pytest.raises(ProtocolError, match="invalid integer"):
        parser.feed(S2C, b":1x\r\n")


def test_redis_line_cap_holds_inside_aggregates() -> None:
    """A nested simple string longer than the line cap is refused as on the general path."""
    with pytest.raises(ProtocolError, match="longer than 100 bytes"):
        RedisParser(Limits(parser_buffer=100)).feed(S2C, b"*1\r\n+" + b"a" * 200 + b"\r\n")


# -- DNS ------------------------------------------------------------------------------------

_NAME_BYTES = st.sampled_from([b"\x00", b"\x03www", b"\x07example", b"\x03com", b"\xc0\x0c", b"\xc0\x00", b"\x01."])


@PROPS
@given(
    parts=st.lists(st.one_of(_NAME_BYTES, st.binary(max_size=6)), max_size=12),
    pos=st.integers(0, 40),
    strict=st.booleans(),
)
def test_dns_read_name_matches_the_careful_reader(parts: list[bytes], pos: int, strict: bool) -> None:
    """read_name (fast path) gives the careful reader's name and offset, or its error, for any bytes."""
    msg = bytes(12) + b"".join(parts)
    pos = min(pos, len(msg))

    def outcome(fn: Callable[[bytes, int, int, bool], tuple[str, int]]) -> object:
        try:
            return fn(msg, pos, len(msg), strict)
        except ProtocolError as exc:
            return ("error", str(exc))

    assert outcome(dns.read_name) == outcome(dns._read_name)


@pytest.mark.parametrize(
    "message",
    [
        pytest.param(hm.dns_query("host.example"), id="query"),
        pytest.param(hm.dns_response_all_types(), id="response-all-types"),
        pytest.param(hm.dns_nxdomain_with_soa(), id="nxdomain"),
    ],
)
def test_dns_parser_takes_the_detector_reading(message: bytes) -> None:
    """The parser's event for the message the detector accepted equals a fresh parse of it."""
    session = DpiSession(DetectContext(PROTO_UDP, 40000, 53))
    session.on_datagram(C2S, message)
    assert session.app == "dns"
    assert session.events[0].fields == dns.parse_message(bytes(bytearray(message)))


# -- HTTP/2 ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["grpc_bidi", "grpc_server_streaming", "http2_h2c"])
def test_h2_parser_after_detection_equals_parser_alone(name: str) -> None:
    """A flow's events are the same whether the detector decoded the first header block or not."""
    chunks = load_chunks(name)
    session = DpiSession(DetectContext(PROTO_TCP, 40000, 50051))
    for direction, data in chunks:
        session.on_stream(direction, data)
    assert session.app in (APP_GRPC, "http2")
    assert http2_frames._first_block is None  # the parser took what the detector decoded
    alone = feed_all(Http2Parser(session.app, Limits()), chunks)
    assert summary(session.events) == summary(alone[: len(session.events)])
    # the hand-over is taken once: a second parser decodes on its own and still agrees
    assert summary(feed_all(Http2Parser(session.app, Limits()), chunks)) == summary(alone)


# -- JA4 and byte classes -------------------------------------------------------------------


@PROPS
@given(values=st.lists(st.integers(0, (1 << 24) - 1), max_size=40), sort=st.booleans())
def test_ja4_hex_list_formats_like_one_by_one(values: list[int], sort: bool) -> None:
    """The one-go hex list equals formatting and sorting each value as text."""
    texts = [f"{v:04x}" for v in values]
    assert ja4._hex_list(values, sort) == ",".join(sorted(texts) if sort else texts)


@PROPS
@given(data=st.binary(max_size=64))
def test_is_text_is_printable_ascii_and_tab(data: bytes) -> None:
    """is_text says yes exactly when every byte is printable ASCII or a tab."""
    assert is_text(data) == all(b == 9 or 0x20 <= b <= 0x7E for b in data)


@pytest.mark.parametrize(
    ("module", "name", "excluded"),
    [
        pytest.param("memcached", "_CONTROL", set(range(0x20)), id="memcached-control"),
        pytest.param("memcached", "_CONTROL_BUT_CR", set(range(0x20)) - {13}, id="memcached-control-but-cr"),
        pytest.param("redis", "_INLINE_CONTROL", set(range(0x20)) - {9, 13}, id="redis-inline-control"),
        pytest.param("postgres", "_CONTROL_BUT_NUL", set(range(1, 0x20)), id="postgres-control"),
        pytest.param("zookeeper", "_CONTROL", set(range(0x20)) | {0x7F}, id="zookeeper-control"),
    ],
)
def test_byte_class_patterns_match_their_bytes(module: str, name: str, excluded: set[int]) -> None:
    """Each control-byte pattern finds exactly the bytes the per-byte test it replaced refused."""
    mod = __import__(f"podwall.dpi.protocols.{module}", fromlist=[name])
    pattern: re.Pattern[bytes] = getattr(mod, name)
    assert {b for b in range(256) if pattern.search(bytes([b]))} == excluded
