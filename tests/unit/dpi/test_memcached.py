"""memcached detection (strict text syntax, binary headers, ambiguity with Redis) and parsing of both protocols."""

from __future__ import annotations

from datetime import timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from podwall.core.errors import ProtocolError
from podwall.core.limits import Limits
from podwall.core.types import PROTO_TCP, Direction
from podwall.dpi.base import DetectContext, Detection, Detector
from podwall.dpi.protocols.dns import DnsDetector
from podwall.dpi.protocols.http1 import HttpDetector
from podwall.dpi.protocols.memcached import MemcachedDetector, MemcachedParser
from podwall.dpi.protocols.redis import RedisDetector
from podwall.dpi.protocols.tls import TlsDetector
from podwall.dpi.session import DpiSession

from .fixtures import FEED_MODES, Chunks, feed_all, load_chunks, split_chunks, summary
from .fixtures import brokers_checks as bc

C2S, S2C = Direction.C2S, Direction.S2C
ON_11211 = DetectContext(PROTO_TCP, 40000, 11211)
ON_6379 = DetectContext(PROTO_TCP, 40000, 6379)
ON_8080 = DetectContext(PROTO_TCP, 40000, 8080)
PROPS = settings(max_examples=120, deadline=timedelta(milliseconds=1500), suppress_health_check=[HealthCheck.too_slow])
BINARY_GET = bytes([0x80, 0x00, 0x00, 0x03, 0, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0, 1]) + bytes(8) + b"key"
BINARY_REPLY = bytes([0x81, 0x00, 0, 0, 4, 0, 0, 1, 0, 0, 0, 4, 0, 0, 0, 1]) + bytes(8) + b"\x00\x00\x00\x00"


@pytest.mark.parametrize(
    ("ctx", "direction", "data", "expected"),
    [
        pytest.param(ON_11211, C2S, b"get user:1\r\n", Detection.MATCH, id="get"),
        pytest.param(ON_8080, C2S, b"stats\r\n", Detection.MATCH, id="memcached on a non-standard port is still it"),
        pytest.param(ON_11211, C2S, b"get a b c\r\n", Detection.MATCH, id="multi-get"),
        pytest.param(ON_11211, C2S, b"set k 0 60 5\r\nhello\r\n", Detection.MATCH, id="set"),
        pytest.param(ON_11211, C2S, b"cas k 0 0 5 99 noreply\r\n", Detection.MATCH, id="cas-noreply"),
        pytest.param(ON_11211, C2S, b"incr hits 1\r\n", Detection.MATCH, id="incr"),
        pytest.param(ON_11211, C2S, b"delete k 0 noreply\r\n", Detection.MATCH, id="delete-legacy-zero"),
        pytest.param(ON_11211, C2S, b"gat 60 a b\r\n", Detection.MATCH, id="gat"),
        pytest.param(ON_11211, C2S, b"mg key v t k\r\n", Detection.MATCH, id="meta-get"),
        pytest.param(ON_11211, C2S, b"ms key 5 T60 F0\r\nhello\r\n", Detection.MATCH, id="meta-set"),
        pytest.param(ON_11211, C2S, b"version\r\n", Detection.MATCH, id="version"),
        pytest.param(ON_11211, C2S, b"ge", Detection.NEED_MORE, id="verb-prefix"),
        pytest.param(ON_11211, C2S, b"get user", Detection.NEED_MORE, id="line-incomplete"),
        pytest.param(ON_11211, C2S, b"GET user\r\n", Detection.NO, id="upper-case-is-redis-not-memcached"),
        pytest.param(ON_11211, C2S, b"set k x 0 5\r\n", Detection.NO, id="set-non-numeric-flags"),
        pytest.param(ON_11211, C2S, b"set k 0 0\r\n", Detection.NO, id="set-missing-bytes"),
        pytest.param(ON_11211, C2S, b"get " + b"k" * 251 + b"\r\n", Detection.NO, id="key-too-long"),
        pytest.param(ON_11211, C2S, b"get\r\n", Detection.NO, id="get-without-key"),
        pytest.param(ON_11211, C2S, b"incr k x\r\n", Detection.NO, id="incr-non-numeric"),
        pytest.param(ON_11211, C2S, b"version now\r\n", Detection.NO, id="version-with-argument"),
        pytest.param(ON_11211, C2S, b"get k\n", Detection.NO, id="bare-lf"),
        pytest.param(ON_11211, C2S, b"get / HTTP/1.1\r\n", Detection.NO, id="http-in-lower-case"),
        pytest.param(ON_11211, C2S, b"frob k\r\n", Detection.NO, id="unknown-verb"),
        pytest.param(ON_11211, C2S, BINARY_GET, Detection.MATCH, id="binary-get"),
        pytest.param(ON_11211, C2S, BINARY_GET[:10], Detection.NEED_MORE, id="binary-prefix"),
        pytest.param(ON_11211, C2S, bytes([0x80, 0x01]) + BINARY_GET[2:], Detection.NO, id="binary-set-no-extras"),
        pytest.param(ON_11211, C2S, bytes([0x80, 0x7F]) + BINARY_GET[2:], Detection.NO, id="binary-unknown-opcode"),
        pytest.param(ON_11211, S2C, BINARY_REPLY, Detection.MATCH, id="binary-response"),
        pytest.param(ON_11211, S2C, b"STAT pid 1\r\n", Detection.NEED_MORE, id="text-response-supports"),
        pytest.param(ON_11211, S2C, b"HTTP/1.1 200 OK\r\n", Detection.NO, id="http-response"),
        *[
            pytest.param(ON_11211, C2S, data, Detection.NO, id=f"{name} is not memcached")
            for name, data in bc.FOREIGN_FIRST_MESSAGES.items()
        ],
    ],
)
def test_detect(ctx: DetectContext, direction: Direction, data: bytes, expected: Detection) -> None:
    """A first command line valid for its verb, or a consistent binary header, decides memcached."""
    assert MemcachedDetector().detect(direction, data, ctx) is expected


@pytest.mark.parametrize(
    ("ctx", "app"),
    [
        pytest.param(ON_11211, "memcached", id="on-11211-memcached"),
        pytest.param(ON_6379, "redis", id="on-6379-redis-wins-the-tie"),
        pytest.param(ON_8080, "memcached", id="elsewhere-memcached-redis-declines-the-verb"),
    ],
)
def test_ambiguous_get_is_decided_by_port(ctx: DetectContext, app: str) -> None:
    """`get key` is valid memcached and Redis inline: both match on 6379 and the port breaks the tie."""
    detectors: list[Detector] = [RedisDetector(), MemcachedDetector(), HttpDetector(), TlsDetector(), DnsDetector()]
    session = DpiSession(ctx, detectors=detectors)
    session.on_stream(C2S, b"get user:1\r\n")
    assert session.app == app


@pytest.mark.parametrize("mode", FEED_MODES)
def test_recorded_text_session(mode: str) -> None:
    """A real memcached 1.6 text session: every command with its key, every response with its status."""
    events = feed_all(MemcachedParser(), split_chunks(load_chunks("memcached_text"), mode))
    commands = [(e.fields["command"], e.fields["key"]) for e in events if e.kind == "command"]
    assert commands == [
        ("version", None), ("set", "user:42"), ("get", "user:42"), ("gets", "user:42"), ("append", "user:42"),
        ("incr", "counter"), ("add", "counter"), ("incr", "counter"), ("touch", "user:42"), ("mn", None),
        ("ms", "meta:1"), ("mg", "meta:1"), ("delete", "user:42"), ("delete", "user:42"), ("quit", None),
    ]  # fmt: skip
    statuses = [e.fields["status"] for e in events if e.kind == "response"]
    assert statuses == [
        "VERSION", "STORED", "END", "END", "NOT_FOUND", "STORED", "NUMBER", "TOUCHED", "MN", "HD", "VA", "DELETED",
        "NOT_FOUND",
    ]  # fmt: skip
    get = next(e for e in events if e.fields.get("command") == "get")
    assert get.fields["keys"] == ["user:42", "missing"]
    end = next(e for e in events if e.fields.get("status") == "END")
    assert end.fields["values"] == 1


@pytest.mark.parametrize("mode", FEED_MODES)
def test_recorded_binary_session(mode: str) -> None:
    """A real memcached binary session: opcodes, keys and response statuses."""
    events = feed_all(MemcachedParser(), split_chunks(load_chunks("memcached_binary"), mode))
    assert [(e.kind, e.fields["command"], e.fields.get("key"), e.fields.get("status")) for e in events] == [
        ("command", "version", None, None),
        ("response", "version", None, "no_error"),
        ("command", "set", "bin:1", None),
        ("response", "set", None, "no_error"),
        ("command", "get", "bin:1", None),
        ("response", "get", None, "no_error"),
        ("command", "get", "bin:missing", None),
        ("response", "get", None, "key_not_found"),
        ("command", "delete", "bin:1", None),
        ("response", "delete", None, "no_error"),
    ]


@pytest.mark.parametrize("mode", FEED_MODES)
def test_corpus_stats(mode: str) -> None:
    """memcached.cap: `stats` and its 48 STAT lines closed by END."""
    events = feed_all(MemcachedParser(), split_chunks(load_chunks("memcached_stats"), mode))
    assert [(e.kind, e.fields.get("command"), e.fields.get("status"), e.fields.get("stats")) for e in events] == [
        ("command", "stats", None, None),
        ("response", None, "END", 48),
    ]


def test_large_value_streams_through() -> None:
    """A data block far larger than the parser buffer streams through; the next command is still parsed."""
    parser = MemcachedParser(Limits(parser_buffer=512))
    events = parser.feed(C2S, b"set big 0 0 100000\r\n")
    for _ in range(100):
        events += parser.feed(C2S, b"v" * 1000)
    events += parser.feed(C2S, b"\r\nget big\r\n")
    assert [(e.fields["command"], e.fields["key"]) for e in events] == [("set", "big"), ("get", "big")]


@pytest.mark.parametrize(
    ("chunks", "message"),
    [
        pytest.param([(C2S, b"frob\r\n")], "invalid command line", id="unknown-verb"),
        pytest.param([(C2S, b"set k 0 0 3\r\nabcd\r\n")], "not terminated by CRLF", id="block-overrun"),
        pytest.param([(S2C, b"VALUE k 0 x\r\n")], "invalid VALUE", id="bad-value-line"),
        pytest.param([(S2C, b"WHAT\r\n")], "unknown response", id="unknown-response"),
        pytest.param([(C2S, b"get " + b"k" * 70000)], "longer than", id="endless-line"),
        pytest.param([(C2S, BINARY_GET), (C2S, BINARY_REPLY)], "bad binary magic", id="binary-wrong-magic"),
        pytest.param([(C2S, bytes([0x80, 0x00, 0x00, 0x03, 0, 1]) + bytes(18))], "inconsistent", id="binary-dtype"),
    ],
)
@pytest.mark.parametrize("mode", ["whole", "byte-by-byte"])
def test_malformed_is_protocol_error(chunks: Chunks, message: str, mode: str) -> None:
    """Invalid command lines, data blocks, responses and binary headers raise ProtocolError saying what."""
    with pytest.raises(ProtocolError, match=message):
        feed_all(MemcachedParser(), split_chunks(chunks, mode))


TRANSCRIPTS = [load_chunks("memcached_text"), load_chunks("memcached_binary"), load_chunks("memcached_stats")]


@PROPS
@given(chunks=st.lists(st.tuples(st.sampled_from([C2S, S2C]), st.binary(max_size=300)), max_size=10))
def test_random_bytes_raise_only_protocol_error(chunks: Chunks) -> None:
    """Random bytes make the parser return events or raise ProtocolError, nothing else."""
    bc.feed_until_error(MemcachedParser(Limits(parser_buffer=512)), chunks)


@PROPS
@given(data=st.data())
def test_mutated_fixtures_raise_only_protocol_error(data: st.DataObject) -> None:
    """Fixtures with bytes flipped, dropped, inserted or cut never make the parser fail otherwise."""
    bc.feed_until_error(MemcachedParser(), data.draw(bc.mutated(TRANSCRIPTS)))


@PROPS
@given(data=st.binary(max_size=100))
def test_detector_prefix_rule(data: bytes) -> None:
    """On any bytes, and on prefixes of real commands, NO is final."""
    for sample in (data, b"set k 0 0 5\r\nhello\r\n" + data, BINARY_GET + data):
        assert bc.prefix_rule_holds(bc.prefix_answers(MemcachedDetector(), C2S, sample, ON_11211))


@pytest.mark.parametrize("mode", FEED_MODES)
def test_split_invariance(mode: str) -> None:
    """Any split of a recorded session gives the same events as feeding it whole."""
    chunks = load_chunks("memcached_text")
    assert summary(feed_all(MemcachedParser(), split_chunks(chunks, mode))) == summary(
        feed_all(MemcachedParser(), chunks)
    )
