"""HTTP/2 (h2c) and gRPC: detection from the first request, frame and HPACK parsing, errors, bounds."""

from __future__ import annotations

from datetime import timedelta
from itertools import pairwise

import pytest
from hpack import Encoder
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from podwall.core.errors import ProtocolError
from podwall.core.limits import Limits
from podwall.core.types import PROTO_TCP, Direction
from podwall.dpi.base import DetectContext, Detection, Detector
from podwall.dpi.protocols.dns import DnsDetector
from podwall.dpi.protocols.http1 import HttpDetector
from podwall.dpi.protocols.http2 import Http2Parser
from podwall.dpi.protocols.http2_detect import GrpcDetector, Http2Detector
from podwall.dpi.protocols.http2_frames import (
    APP_GRPC,
    APP_HTTP2,
    CONTINUATION,
    DATA,
    END_HEADERS,
    HEADERS,
    MAX_STREAMS,
    PREFACE,
    PUSH_PROMISE,
    split_grpc_path,
)
from podwall.dpi.protocols.redis import RedisDetector
from podwall.dpi.protocols.tls import TlsDetector
from podwall.dpi.session import DpiSession

from .fixtures import FEED_MODES, Chunks, feed_all, load_chunks, split_chunks, summary
from .fixtures import handmade as hm
from .fixtures import handmade_http2 as hh

C2S, S2C = Direction.C2S, Direction.S2C
ON_8080 = DetectContext(PROTO_TCP, 40000, 8080)
ON_ODD = DetectContext(PROTO_TCP, 40000, 12345)
SMALL = Limits(parser_buffer=512)
PROPS = settings(max_examples=120, deadline=timedelta(milliseconds=1500), suppress_health_check=[HealthCheck.too_slow])


def _client_bytes(chunks: Chunks) -> bytes:
    return b"".join(c for d, c in chunks if d is C2S)


def _first_request(content_type: str | None = "application/json", split: int = 0) -> bytes:
    return hh.client_start() + hh.headers(Encoder(), 1, hh.request_headers("/x", content_type), split=split)


# (id, direction, bytes, answer of Http2Detector, answer of GrpcDetector)
M, N, W = Detection.MATCH, Detection.NO, Detection.NEED_MORE
DETECTION = [
    ("h2c-request", C2S, _first_request(), M, N),
    ("grpc-request", C2S, _first_request("application/grpc"), N, M),
    ("grpc-proto-request", C2S, _first_request("application/grpc+proto"), N, M),
    ("no-content-type", C2S, _first_request(None), M, N),
    ("continuation", C2S, _first_request("application/grpc", split=3), N, M),
    ("preface-prefix", C2S, PREFACE[:8], W, W),
    ("preface-only", C2S, PREFACE, W, W),
    ("preface-and-settings", C2S, hh.client_start(), W, W),
    ("settings-ack-window-ping-first", C2S, hh.client_start() + hh.settings(ack=True) + hh.window_update() + hh.ping(),
     W, W),
    ("half-frame-header", C2S, hh.client_start() + b"\x00\x00", W, W),
    ("headers-cut", C2S, _first_request()[:-4], W, W),
    ("goaway-before-request", C2S, hh.client_start() + hh.goaway(0), M, N),
    ("first-frame-not-settings", C2S, PREFACE + hh.window_update(), N, N),
    ("first-settings-is-ack", C2S, PREFACE + hh.settings(ack=True), N, N),
    ("data-before-request", C2S, hh.client_start() + hh.data(1, b"x"), N, N),
    ("headers-on-even-stream", C2S, hh.client_start() + hh.headers(Encoder(), 2, hh.request_headers("/")), N, N),
    ("bad-hpack", C2S, hh.client_start() + hh.frame(HEADERS, END_HEADERS, 1, b"\xff\xff\xff\xff\xff\xff\xff"), N, N),
    ("response-headers-from-client", C2S, hh.client_start() + hh.headers(Encoder(), 1, [(":status", "200")]), N, N),
    ("frame-inside-header-block", C2S, hh.client_start() + hh.frame(HEADERS, 0, 1, b"\x83") + hh.ping(), N, N),
    ("wrong-preface", C2S, b"PRI * HTTP/2.1\r\n\r\nSM\r\n\r\n", N, N),
    ("h2c-upgrade", C2S, hh.upgrade_request(), M, N),
    ("h2c-upgrade-grpc", C2S, hh.upgrade_request(content_type="application/grpc"), N, M),
    ("h2c-upgrade-head-cut", C2S, hh.upgrade_request()[:60], W, W),
    ("request-line-cut", C2S, b"POST /upl", W, W),
    ("HTTP request is not http2", C2S, hm.HTTP_GET, N, N),
    ("websocket-upgrade", C2S, b"GET / HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n", N, N),
    ("h2c-without-http2-settings", C2S, b"GET / HTTP/1.1\r\nUpgrade: h2c\r\n\r\n", N, N),
    ("random bytes are not http2", C2S, bytes(range(7, 200, 3)), N, N),
    ("tls-client-hello", C2S, hm.tls_records(hm.client_hello()), N, N),
    ("redis-command", C2S, hm.resp_command(b"PING"), N, N),
    ("lower-case-start", C2S, b"pri * HTTP/2.0", N, N),
    ("server-settings", S2C, hh.settings((3, 100)), W, W),
    ("server-settings-prefix", S2C, b"\x00\x00", W, W),
    ("server-http-response", S2C, hm.HTTP_OK, N, N),
    ("server-ssh-banner", S2C, b"SSH-2.0-OpenSSH_9.6\r\n", N, N),
    ("server-settings-bad-length", S2C, b"\x00\x00\x05\x04\x00\x00\x00\x00\x00", N, N),
]  # fmt: skip


@pytest.mark.parametrize(
    ("direction", "data", "h2", "grpc"), [pytest.param(d, b, h, g, id=i) for i, d, b, h, g in DETECTION]
)
@pytest.mark.parametrize("ctx", [ON_8080, ON_ODD], ids=["port-8080", "non-standard-port"])
def test_detect(direction: Direction, data: bytes, h2: Detection, grpc: Detection, ctx: DetectContext) -> None:
    """http2 and grpc are decided by the first client request (preface or h2c upgrade), whatever the port."""
    assert Http2Detector().detect(direction, data, ctx) is h2
    assert GrpcDetector().detect(direction, data, ctx) is grpc


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        pytest.param("/greet.GreetService/GreetEveryone", ("greet.GreetService", "GreetEveryone"), id="grpc"),
        pytest.param("/Svc/M", ("Svc", "M"), id="no-package"),
        pytest.param("/a/b/c", (None, None), id="three-segments"),
        pytest.param("/only", (None, None), id="one-segment"),
        pytest.param(None, (None, None), id="none"),
    ],
)
def test_split_grpc_path(path: str | None, expected: tuple[str | None, str | None]) -> None:
    """A gRPC :path splits into service and method only when it has exactly that shape."""
    assert split_grpc_path(path) == expected


def _session(chunks: Chunks, port: int) -> DpiSession:
    detectors: list[Detector] = [
        Http2Detector(),
        GrpcDetector(),
        HttpDetector(),
        TlsDetector(),
        DnsDetector(),
        RedisDetector(),
    ]
    session = DpiSession(DetectContext(PROTO_TCP, 40000, port), detectors=detectors)
    for direction, data in chunks:
        session.on_stream(direction, data)
    session.finish()
    return session


@pytest.mark.parametrize(
    ("name", "port", "app", "paths"),
    [
        pytest.param("http2_h2c", 29518, APP_HTTP2, ["/namf-comm/v1/subscriptions"], id="ndpi-http2"),
        pytest.param("grpc_bidi", 50051, APP_GRPC, ["/greet.GreetService/GreetEveryone"], id="grpc-bidi"),
        pytest.param("grpc_server_streaming", 50051, APP_GRPC, ["/greet.GreetService/GreetManyTimes"], id="grpc-ss"),
    ],
)
def test_corpus_sessions(name: str, port: int, app: str, paths: list[str]) -> None:
    """The corpus flows (preface and HEADERS in separate segments for gRPC) get their name, path and status."""
    session = _session(load_chunks(name), port)
    assert (session.app, session.error) == (app, None)
    assert session.server_name in ("127.0.0.1", "localhost")
    requests = [e for e in session.events if e.kind == "request"]
    responses = [e for e in session.events if e.kind == "response"]
    assert [e.fields["path"] for e in requests] == paths
    assert [e.fields["complete"] for e in responses] == [True]
    if app == APP_GRPC:
        assert [(e.fields["service"], e.fields["method"]) for e in requests] == [tuple(paths[0][1:].split("/"))]
        assert responses[0].fields["grpc_status"] == 0
        assert responses[0].fields["response_messages"] >= 3


@pytest.mark.parametrize("name", ["http2_h2c", "grpc_bidi", "grpc_server_streaming"])
@pytest.mark.parametrize("mode", FEED_MODES)
def test_corpus_split_invariance(name: str, mode: str) -> None:
    """The corpus transcripts give the same events however the bytes are cut."""
    chunks = load_chunks(name)
    app = APP_GRPC if name.startswith("grpc") else APP_HTTP2
    whole = feed_all(Http2Parser(app), chunks)
    assert len(whole) >= 2
    assert summary(feed_all(Http2Parser(app), split_chunks(chunks, mode))) == summary(whole)


@pytest.mark.parametrize("mode", FEED_MODES)
def test_h2c_transcript(mode: str) -> None:
    """Padding, priority, CONTINUATION, 1xx, PUSH_PROMISE (HPACK kept in step), RST_STREAM and GOAWAY."""
    parser = Http2Parser(APP_HTTP2)
    events = feed_all(parser, split_chunks(hh.h2c_transcript(), mode)) + parser.close()
    assert [(e.kind, e.direction.name, e.fields.get("stream_id")) for e in events] == [
        ("request", "C2S", 1),
        ("request_body", "C2S", 1),
        ("request", "C2S", 3),
        ("response", "S2C", 1),
        ("reset", "C2S", 3),
        ("response", "S2C", 3),
        ("goaway", "S2C", None),
    ]
    first, body1, second, resp1, reset, resp3, bye = events
    assert (first.fields["end_stream"], second.fields["end_stream"]) == (False, True)
    assert (body1.fields["body"], body1.fields["complete"], resp1.fields["body"]) == (
        b'{"name":"x"}',
        True,
        b'{"id":7}',
    )
    assert (first.fields["method"], first.fields["path"], first.fields["authority"]) == (
        "POST",
        "/v1/items",
        "api.example:8080",
    )
    assert (second.fields["method"], second.fields["content_type"], second.fields["user_agent"]) == (
        "GET",
        "application/json",
        "handmade/1.0",
    )
    assert (resp1.fields["status"], resp1.fields["request_bytes"], resp1.fields["response_bytes"]) == (201, 12, 8)
    assert (reset.fields["error"], resp3.fields["status"], resp3.fields["complete"]) == ("CANCEL", 200, False)
    assert (bye.fields["last_stream_id"], bye.fields["debug"]) == (3, "bye")
    assert parser.server_name() == "api.example"


@pytest.mark.parametrize("mode", FEED_MODES)
def test_grpc_transcript(mode: str) -> None:
    """gRPC calls give service/method, message counts and the status from trailers (or trailers-only)."""
    every = feed_all(Http2Parser(APP_GRPC), split_chunks(hh.grpc_transcript(), mode))
    bodies = [e for e in every if e.kind == "request_body"]
    assert [(e.fields["body"], e.fields["request_messages"]) for e in bodies] == [(b"\n\x03bob", 2), (b"", 0)]
    events = [e for e in every if e.kind != "request_body"]
    got = [
        (e.kind, e.fields.get("service"), e.fields["method"] if e.kind == "request" else e.fields["grpc_status"])
        for e in events
    ]
    assert got == [
        ("request", "pkg.Greeter", "SayHello"),
        ("response", None, 0),
        ("request", "pkg.Greeter", "Fail"),
        ("response", None, 5),
    ]
    assert (events[0].fields["http_method"], events[0].fields["content_type"]) == ("POST", "application/grpc+proto")
    assert (events[1].fields["request_messages"], events[1].fields["response_messages"]) == (2, 1)
    assert events[3].fields["grpc_message"] == "not found"


@pytest.mark.parametrize("mode", FEED_MODES)
def test_upgrade_transcript(mode: str) -> None:
    """An h2c upgrade: the HTTP/1.1 request is stream 1, its answer comes in HTTP/2 frames after the 101."""
    parser = Http2Parser(APP_HTTP2)
    events = feed_all(parser, split_chunks(hh.upgrade_transcript(), mode))
    assert [(e.kind, e.fields["stream_id"], e.fields["path"], e.fields.get("status")) for e in events] == [
        ("request", 1, "/upload", None), ("request_body", 1, "/upload", None), ("response", 1, "/upload", 200)
    ]  # fmt: skip
    assert (events[0].fields["upgrade"], events[2].fields["request_bytes"], events[2].fields["response_bytes"]) == (
        True,
        5,
        6,
    )
    assert (events[1].fields["body"], events[2].fields["body"]) == (b"hello", b"stored")
    assert parser.server_name() == "files.example"


def test_refused_upgrade_finishes() -> None:
    """A server that answers the upgrade with a plain response keeps HTTP/1.1: the parser reports it and stops."""
    parser = Http2Parser(APP_HTTP2)
    events = parser.feed(C2S, hh.upgrade_request())
    events += parser.feed(S2C, hm.HTTP_OK)
    assert [(e.kind, e.fields.get("status")) for e in events] == [("request", None), ("response", 200)]
    assert parser.finished
    assert parser.feed(C2S, b"garbage") == []


def test_trailing_bytes_wait_for_more() -> None:
    """Bytes after the last complete frame are kept, not reported, until the frame completes."""
    chunks = hh.grpc_transcript()
    chunks.append((C2S, hh.frame(HEADERS, END_HEADERS, 5, b"\x83")[:6]))
    events = feed_all(Http2Parser(APP_GRPC), chunks)
    assert [e.kind for e in events] == ["request", "request_body", "response", "request", "request_body", "response"]


def test_streams_tracked_are_bounded() -> None:
    """Requests never answered are forgotten past MAX_STREAMS; a later answer to one is ignored."""
    parser = Http2Parser(APP_HTTP2)
    enc = Encoder()
    parser.feed(C2S, hh.client_start())
    for i in range(MAX_STREAMS + 50):
        parser.feed(C2S, hh.headers(enc, 2 * i + 1, hh.request_headers("/p"), end=True))
    assert len(parser._streams) == MAX_STREAMS
    events = parser.feed(S2C, hh.settings() + hh.headers(Encoder(), 1, [("grpc-status", "0")], end=True))
    assert events == []


def _bad_block(limits_cap: int) -> bytes:
    return hh.frame(HEADERS, 0, 1, b"\x83") + hh.frame(CONTINUATION, 0, 1, b"\x00" * (limits_cap + 1))


ERRORS: list[tuple[str, Chunks, str]] = [
    ("bad-preface-after-upgrade", [(C2S, hh.upgrade_request() + b"GET / HTTP/1.1\r\n\r\n")], "preface expected"),
    ("first-frame-not-settings", [(C2S, PREFACE + hh.ping())], "not SETTINGS"),
    ("server-first-frame-not-settings", [(S2C, hh.ping())], "not SETTINGS"),
    ("continuation-alone", [(C2S, hh.client_start() + hh.frame(CONTINUATION, END_HEADERS, 1, b"\x83"))],
     "without a header block"),
    ("frame-inside-header-block", [(C2S, hh.client_start() + hh.frame(HEADERS, 0, 1, b"\x83") + hh.ping())],
     "inside a header block"),
    ("headers-on-stream-0", [(C2S, hh.client_start() + hh.frame(HEADERS, END_HEADERS, 0, b"\x83"))], "stream 0"),
    ("data-on-stream-0", [(C2S, hh.client_start() + hh.frame(DATA, 0, 0, b"x"))], "DATA on stream 0"),
    ("frame-over-limit", [(C2S, hh.client_start() + b"\x00\x10\x00\x06\x00\x00\x00\x00\x00")], "exceeds 512"),
    ("header-block-over-limit", [(C2S, hh.client_start() + _bad_block(512))], "exceeds 512"),
    ("undecodable-hpack", [(C2S, hh.client_start() + hh.frame(HEADERS, END_HEADERS, 1, b"\xff\xff\xff\xff\xff\xff"))],
     "cannot decode"),
    ("unknown-table-index", [(C2S, hh.client_start() + hh.frame(HEADERS, END_HEADERS, 1, b"\xfe"))], "cannot decode"),
    ("even-client-stream", [(C2S, hh.client_start() + hh.headers(Encoder(), 2, hh.request_headers("/")))],
     "even-numbered"),
    ("request-without-method", [(C2S, hh.client_start() + hh.headers(Encoder(), 1, [(":path", "/")]))],
     "without :method"),
    ("invalid-status", [(C2S, _first_request()), (S2C, hh.settings() + hh.headers(Encoder(), 1, [(":status", "2x")]))],
     "invalid :status"),
    ("informational-ends-stream",
     [(C2S, _first_request()), (S2C, hh.settings() + hh.headers(Encoder(), 1, [(":status", "103")], end=True))],
     "informational"),
    ("padding-exceeds-headers", [(C2S, hh.client_start() + hh.frame(HEADERS, END_HEADERS | 0x8, 1, b"\x09\x83"))],
     "padding"),
    ("padding-exceeds-data", [(C2S, hh.client_start() + hh.frame(DATA, 0x8, 1, b"\x05ab"))], "padding"),
    ("settings-bad-length", [(C2S, hh.client_start() + hh.frame(4, 0, 0, b"\x00" * 5))], "malformed SETTINGS"),
    ("settings-ack-with-payload", [(C2S, hh.client_start() + hh.frame(4, 1, 0, b"\x00" * 6))], "malformed SETTINGS"),
    ("settings-bad-value", [(C2S, PREFACE + hh.settings((2, 7)))], "invalid SETTINGS value"),
    ("settings-bad-frame-size", [(C2S, PREFACE + hh.settings((5, 100)))], "invalid SETTINGS value"),
    ("ping-bad-length", [(C2S, hh.client_start() + hh.frame(6, 0, 0, b"1234"))], "malformed frame type 6"),
    ("priority-on-stream-0", [(C2S, hh.client_start() + hh.frame(2, 0, 0, b"12345"))], "malformed frame type 2"),
    ("rst-bad-length", [(C2S, hh.client_start() + hh.frame(3, 0, 1, b"12"))], "malformed RST_STREAM"),
    ("goaway-short", [(S2C, hh.settings() + hh.frame(7, 0, 0, b"1234"))], "malformed GOAWAY"),
    ("push-promise-from-client",
     [(C2S, hh.client_start() + hh.frame(PUSH_PROMISE, END_HEADERS, 1, b"\x00\x00\x00\x02"))],
     "PUSH_PROMISE from the client"),
    ("upgrade-without-h2c", [(C2S, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")], "does not ask for h2c"),
    ("upgrade-bad-request-line", [(C2S, b"get / HTTP/1.1\r\nUpgrade: h2c\r\nHTTP2-Settings: x\r\n\r\n")],
     "invalid request line"),
    ("upgrade-chunked", [(C2S, hh.upgrade_request().replace(b"Content-Length: 0", b"Transfer-Encoding: chunked"))],
     "Transfer-Encoding"),
    ("upgrade-head-too-long", [(C2S, b"GET /" + b"a" * 600)], "exceeds 512"),
    ("upgrade-bad-status-line", [(S2C, b"HTTP/1.1 abc\r\n\r\n")], "invalid status line"),
]  # fmt: skip


@pytest.mark.parametrize(("chunks", "message"), [pytest.param(c, m, id=i) for i, c, m in ERRORS])
@pytest.mark.parametrize("mode", ["whole", "byte-by-byte"])
def test_malformed_is_protocol_error(chunks: Chunks, message: str, mode: str) -> None:
    """Frame, HPACK, stream and upgrade violations raise ProtocolError saying what, however split."""
    with pytest.raises(ProtocolError, match=message):
        feed_all(Http2Parser(APP_HTTP2, SMALL), split_chunks(chunks, mode))


def test_hpack_state_is_per_direction() -> None:
    """A server block that indexes an entry only the client's table holds fails: tables are not shared."""
    enc = Encoder()
    client = hh.client_start() + hh.headers(enc, 1, [*hh.request_headers("/a"), ("x-custom", "v")])
    second = hh.headers(enc, 3, [*hh.request_headers("/a"), ("x-custom", "v")])
    parser = Http2Parser(APP_HTTP2)
    assert [e.fields["headers"][-1] for e in parser.feed(C2S, client + second)] == [("x-custom", "v")] * 2
    with pytest.raises(ProtocolError, match="cannot decode"):
        parser.feed(S2C, hh.settings() + second)


# -- properties ----------------------------------------------------------------------------

TRANSCRIPTS: list[tuple[str, Chunks]] = [
    (APP_HTTP2, load_chunks("http2_h2c")),
    (APP_GRPC, load_chunks("grpc_bidi")),
    (APP_HTTP2, hh.h2c_transcript()),
    (APP_GRPC, hh.grpc_transcript()),
    (APP_HTTP2, hh.upgrade_transcript()),
]
directions = st.sampled_from([C2S, S2C])


def _feed_until_error(parser: Http2Parser, chunks: Chunks) -> None:
    try:
        for direction, data in chunks:
            parser.feed(direction, data)
        parser.close()
    except ProtocolError:
        pass


@PROPS
@given(
    app=st.sampled_from([APP_HTTP2, APP_GRPC]),
    start=st.sampled_from([b"", hh.client_start(), hh.upgrade_request()]),
    chunks=st.lists(st.tuples(directions, st.binary(max_size=300)), max_size=12),
)
def test_random_bytes_raise_only_protocol_error(app: str, start: bytes, chunks: Chunks) -> None:
    """Random bytes, raw or after a valid start, only ever raise ProtocolError, and buffers stay bounded."""
    parser = Http2Parser(app, SMALL)
    _feed_until_error(parser, [(C2S, start), *chunks])
    assert len(parser._client.stream.buf) <= SMALL.parser_buffer
    assert len(parser._server.stream.buf) <= SMALL.parser_buffer


@st.composite
def mutated(draw: st.DrawFn) -> tuple[str, Chunks]:
    """A transcript with a few bytes flipped, dropped or inserted, possibly cut short."""
    app, chunks = draw(st.sampled_from(TRANSCRIPTS))
    chunks = list(chunks)
    for _ in range(draw(st.integers(1, 4))):
        index = draw(st.integers(0, len(chunks) - 1))
        direction, data = chunks[index]
        if not data:
            continue
        at = draw(st.integers(0, len(data) - 1))
        op = draw(st.sampled_from(["flip", "drop", "insert", "truncate"]))
        if op == "flip":
            data = data[:at] + bytes([draw(st.integers(0, 255))]) + data[at + 1 :]
        elif op == "drop":
            data = data[:at] + data[at + draw(st.integers(1, 16)) :]
        elif op == "insert":
            data = data[:at] + draw(st.binary(min_size=1, max_size=16)) + data[at:]
        else:
            chunks = chunks[:index]
            data = data[:at]
            chunks.append((direction, data))
        if index < len(chunks):
            chunks[index] = (direction, data)
    return app, chunks


@PROPS
@given(sample=mutated())
def test_mutated_transcripts_raise_only_protocol_error(sample: tuple[str, Chunks]) -> None:
    """Mutated or truncated transcripts never make the parser fail with anything but ProtocolError."""
    app, chunks = sample
    _feed_until_error(Http2Parser(app), chunks)


@PROPS
@given(sample=mutated(), more=st.binary(max_size=100))
def test_detectors_never_raise_and_no_is_final(sample: tuple[str, Chunks], more: bytes) -> None:
    """On mutated client bytes both detectors answer, and a NO stays NO whatever follows."""
    _, chunks = sample
    data = _client_bytes(chunks)
    for det in (Http2Detector(), GrpcDetector()):
        answer = det.detect(C2S, data, ON_ODD)
        if answer is Detection.NO:
            assert det.detect(C2S, data + more, ON_ODD) is Detection.NO


@PROPS
@given(index=st.integers(0, len(TRANSCRIPTS) - 1), cut=st.integers(0, 4000))
def test_prefix_of_a_match_is_never_no(index: int, cut: int) -> None:
    """The detector that matches a transcript's client bytes never says NO to a prefix of them."""
    app, chunks = TRANSCRIPTS[index]
    data = _client_bytes(chunks)
    det = Http2Detector() if app == APP_HTTP2 else GrpcDetector()
    assert det.detect(C2S, data, ON_ODD) is Detection.MATCH
    assert det.detect(C2S, data[:cut], ON_ODD) is not Detection.NO


@PROPS
@given(data=st.data(), index=st.integers(0, len(TRANSCRIPTS) - 1))
def test_any_split_gives_the_same_events(data: st.DataObject, index: int) -> None:
    """A transcript cut at arbitrary points yields the same events as fed whole."""
    app, chunks = TRANSCRIPTS[index]
    cut: Chunks = []
    for direction, payload in chunks:
        points = sorted(data.draw(st.lists(st.integers(0, len(payload)), max_size=5)))
        edges = [0, *points, len(payload)]
        cut.extend((direction, payload[a:b]) for a, b in pairwise(edges) if b > a)
    assert summary(feed_all(Http2Parser(app), cut)) == summary(feed_all(Http2Parser(app), chunks))
