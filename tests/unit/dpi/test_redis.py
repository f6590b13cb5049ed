"""Redis detection and RESP parsing: commands (array and inline), every RESP3 reply type, bounds."""

from __future__ import annotations

import pytest

from podwall.core.errors import ProtocolError
from podwall.core.limits import Limits
from podwall.core.types import PROTO_TCP, Direction
from podwall.dpi.base import DetectContext, Detection
from podwall.dpi.protocols.redis import CAPTURE, MAX_DEPTH, RedisDetector, RedisParser, command_key

from .fixtures import FEED_MODES, Chunks, feed_all, load_chunks, split_chunks, summary
from .fixtures import handmade as hm

C2S, S2C = Direction.C2S, Direction.S2C
ON_6379 = DetectContext(PROTO_TCP, 40000, 6379)
ON_8080 = DetectContext(PROTO_TCP, 40000, 8080)
ON_11211 = DetectContext(PROTO_TCP, 40000, 11211)


@pytest.mark.parametrize(
    ("ctx", "direction", "data", "expected"),
    [
        pytest.param(ON_8080, C2S, hm.resp_command(b"PING"), Detection.MATCH, id="array-ping"),
        pytest.param(ON_8080, C2S, hm.resp_command(b"set", b"k", b"v"), Detection.MATCH, id="array-lower-case"),
        pytest.param(ON_8080, C2S, b"*3\r\n$3\r\nSE", Detection.NEED_MORE, id="array-name-prefix"),
        pytest.param(ON_8080, C2S, b"*", Detection.NEED_MORE, id="star"),
        pytest.param(ON_8080, C2S, b"*2\r", Detection.NEED_MORE, id="count"),
        pytest.param(ON_8080, C2S, b"*2\r\n$", Detection.NEED_MORE, id="dollar"),
        pytest.param(ON_8080, C2S, hm.resp_command(b"FROB", b"x"), Detection.NO, id="unknown-command"),
        pytest.param(ON_8080, C2S, b"*0\r\n", Detection.NO, id="empty-array"),
        pytest.param(ON_8080, C2S, b"*1\r\n:1\r\n", Detection.NO, id="not-bulk"),
        pytest.param(ON_8080, C2S, b"*1\n$4\nPING\n", Detection.NO, id="bare-lf"),
        pytest.param(ON_8080, C2S, b"PING\r\n", Detection.MATCH, id="inline-ping"),
        pytest.param(ON_8080, C2S, b"info server\r\n", Detection.MATCH, id="inline-with-argument"),
        pytest.param(ON_8080, C2S, b"PI", Detection.NEED_MORE, id="inline-prefix"),
        pytest.param(ON_8080, C2S, b"AUTH secret", Detection.NEED_MORE, id="inline-without-line-end"),
        pytest.param(ON_8080, C2S, b"GET / HTTP/1.1\r\n", Detection.NO, id="http-request-line"),
        pytest.param(ON_11211, C2S, b"get key\r\n", Detection.NO, id="memcached-verb-off-port"),
        pytest.param(ON_6379, C2S, b"get key\r\n", Detection.MATCH, id="memcached-verb-on-6379"),
        pytest.param(ON_8080, C2S, b"HELO mail.example\r\n", Detection.NO, id="smtp"),
        pytest.param(ON_8080, C2S, b"PING\x00\x01\r\n", Detection.NO, id="binary-inline"),
        pytest.param(ON_8080, S2C, b"+PONG\r\n", Detection.NEED_MORE, id="reply-supports"),
        pytest.param(ON_8080, S2C, b"-ERR\r\n", Detection.NEED_MORE, id="error-supports"),
        pytest.param(ON_8080, S2C, b"SSH-2.0-x\r\n", Detection.NO, id="banner-rules-out"),
    ],
)
def test_detect(ctx: DetectContext, direction: Direction, data: bytes, expected: Detection) -> None:
    """A known client command decides redis; replies only keep it a candidate."""
    assert RedisDetector().detect(direction, data, ctx) is expected


@pytest.mark.parametrize(
    ("args", "key"),
    [
        pytest.param([b"GET", b"user:1"], "user:1", id="get"),
        pytest.param([b"SET", b"k", b"v", b"EX", b"10"], "k", id="set"),
        pytest.param([b"MGET", b"a", b"b"], "a", id="mget-first"),
        pytest.param([b"PING"], None, id="ping"),
        pytest.param([b"AUTH", b"secret"], None, id="auth-has-no-key"),
        pytest.param([b"EVAL", b"return 1", b"1", b"lock"], "lock", id="eval"),
        pytest.param([b"EVAL", b"return 1", b"0"], None, id="eval-no-keys"),
        pytest.param([b"ZUNION", b"2", b"z1", b"z2"], "z1", id="numkeys-first"),
        pytest.param([b"BITOP", b"AND", b"dest", b"a"], "dest", id="bitop"),
        pytest.param([b"XREAD", b"COUNT", b"2", b"STREAMS", b"s1", b"0"], "s1", id="xread"),
        pytest.param([b"GET"], None, id="missing-key"),
        pytest.param([b"FROB", b"x"], None, id="unknown-command"),
    ],
)
def test_command_key(args: list[bytes], key: str | None) -> None:
    """The key is taken from the position the command's syntax gives it."""
    assert command_key(args[0].decode(), args) == key


COMMANDS: Chunks = [
    (C2S, hm.resp_command(b"HELLO", b"3")),
    (C2S, hm.resp_command(b"set", b"session:42", b"x" * 1000)),
    (C2S, b"PING\r\n\r\n"),  # inline, then an empty line that Redis ignores
    (C2S, b"*0\r\n" + hm.resp_command(b"GET", b"")),
]


@pytest.mark.parametrize("mode", FEED_MODES)
def test_commands(mode: str) -> None:
    """Array and inline commands give name (upper-case), key and argument count, however split."""
    events = feed_all(RedisParser(), split_chunks(COMMANDS, mode))
    assert [(e.kind, e.fields["command"], e.fields["key"], e.fields["argc"], e.fields["inline"]) for e in events] == [
        ("command", "HELLO", None, 2, False),
        ("command", "SET", "session:42", 3, False),
        ("command", "PING", None, 1, True),
        ("command", "GET", "", 2, False),
    ]


@pytest.mark.parametrize(("data", "kind", "value"), [pytest.param(d, k, v, id=i) for i, d, k, v in hm.RESP3_REPLIES])
@pytest.mark.parametrize("mode", FEED_MODES)
def test_replies(data: bytes, kind: str, value: object, mode: str) -> None:
    """Every RESP3 type yields one reply event with its type and value (aggregates: their element count)."""
    events = feed_all(RedisParser(), split_chunks([(S2C, data), (S2C, b"+trailing")], mode))
    assert [(e.kind, e.fields["type"], e.fields["value"]) for e in events] == [("reply", kind, value)]


def test_big_bulk_streams_through() -> None:
    """A bulk string far larger than the parser buffer streams through; its start and size are reported."""
    size = 5 * 64 * 1024
    parser = RedisParser()
    events = parser.feed(S2C, b"$%d\r\n" % size)
    for _ in range(size // 4096):
        events += parser.feed(S2C, b"v" * 4096)
    events += parser.feed(S2C, b"\r\n")
    assert [(e.fields["type"], len(e.fields["value"]), e.fields["size"]) for e in events] == [
        ("bulk_string", CAPTURE, size)
    ]


@pytest.mark.parametrize(
    ("chunks", "message"),
    [
        pytest.param([(S2C, b"$3\r\nabcd\r\n")], "not terminated by CRLF", id="bulk-overrun"),
        pytest.param([(S2C, b"$-2\r\n")], "bad bulk_string length", id="negative-length"),
        pytest.param([(S2C, b"*-5\r\n")], "bad array count", id="negative-count"),
        pytest.param([(S2C, b":12a\r\n")], "invalid integer", id="bad-integer"),
        pytest.param([(S2C, b",1.2.3\r\n")], "invalid double", id="bad-double"),
        pytest.param([(S2C, b"#x\r\n")], "invalid boolean", id="bad-boolean"),
        pytest.param([(S2C, b"_x\r\n")], "null with a payload", id="null-payload"),
        pytest.param([(S2C, b"(12x\r\n")], "invalid big number", id="bad-big-number"),
        pytest.param([(S2C, b"=3\r\nabc\r\n")], "verbatim", id="verbatim-without-format"),
        pytest.param([(S2C, b"?what\r\n")], "unknown type byte", id="unknown-type"),
        pytest.param([(S2C, b"+OK\n")], "CRLF", id="bare-lf-reply"),
        pytest.param([(S2C, b"*1\r\n" * (MAX_DEPTH + 1))], "nesting deeper", id="too-deep"),
        pytest.param([(S2C, b"*99999999999\r\n")], "bad array count", id="too-many-elements"),
        pytest.param([(S2C, b"+" + b"a" * 70000)], "longer than", id="endless-line"),
        pytest.param([(C2S, b"*1\r\n:1\r\n")], "expected '\\$'", id="client-sends-integer"),
        pytest.param([(C2S, b"*1\r\n$x\r\n")], "invalid bulk length", id="client-bad-length"),
        pytest.param([(C2S, b"*1\n$4\r\nPING\r\n")], "not terminated by CRLF", id="client-bare-lf"),
        pytest.param([(C2S, b"*1\r\n$4\r\nPINGxx")], "not terminated by CRLF", id="client-bulk-overrun"),
        pytest.param([(C2S, b"PING " + b"x" * 70000)], "longer than", id="endless-inline"),
    ],
)
@pytest.mark.parametrize("mode", ["whole", "byte-by-byte"])
def test_malformed_is_protocol_error(chunks: Chunks, message: str, mode: str) -> None:
    """Grammar violations, excessive nesting and unbounded lines raise ProtocolError saying what."""
    with pytest.raises(ProtocolError, match=message):
        feed_all(RedisParser(), split_chunks(chunks, mode))


def test_line_cap_follows_limits() -> None:
    """Lines are bounded by Limits.parser_buffer."""
    with pytest.raises(ProtocolError, match="longer than 100 bytes"):
        RedisParser(Limits(parser_buffer=100)).feed(S2C, b"+" + b"a" * 200 + b"\r\n")


@pytest.mark.parametrize("mode", FEED_MODES)
def test_corpus_resp(mode: str) -> None:
    """resp.pcap: COMMAND (a 240-element reply), PING, SET and GET, each with its reply, however split."""
    chunks = load_chunks("resp")
    events = feed_all(RedisParser(), split_chunks(chunks, mode))
    assert summary(events) == summary(feed_all(RedisParser(), chunks))
    assert [(e.kind, e.fields.get("command") or e.fields["type"], e.fields.get("key")) for e in events] == [
        ("command", "COMMAND", None),
        ("reply", "array", None),
        ("command", "PING", None),
        ("reply", "simple_string", None),
        ("command", "SET", "test"),
        ("reply", "simple_string", None),
        ("command", "GET", "test"),
        ("reply", "bulk_string", None),
    ]
    assert events[1].fields["value"] == 240
    assert events[7].fields["value"] == "Hello world!"
