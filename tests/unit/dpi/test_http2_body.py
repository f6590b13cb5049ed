"""HTTP/2 and gRPC bodies: captured per stream side, reported in `request_body` and `response`, memory bounded."""

from __future__ import annotations

from datetime import timedelta
from itertools import pairwise

import pytest
from hpack import Encoder
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from podwall.core.limits import Limits
from podwall.core.types import Direction
from podwall.dpi.base import L7Event
from podwall.dpi.protocols.http1 import BODY_CAPTURE
from podwall.dpi.protocols.http2 import Http2Parser
from podwall.dpi.protocols.http2_body import BUDGET_BODIES
from podwall.dpi.protocols.http2_frames import APP_GRPC, APP_HTTP2, MAX_STREAMS

from .fixtures import FEED_MODES, Chunks, feed_all, split_chunks, summary
from .fixtures import handmade_http2 as hh

C2S, S2C = Direction.C2S, Direction.S2C
SMALL = Limits(parser_buffer=512)  # body cap 512 bytes, budget BUDGET_BODIES x 512 per direction
FORM = "application/x-www-form-urlencoded"
GRPC = "application/grpc+proto"
BODY = b"user=alice&comment=" + b"x" * 150 + b"&id=42"
PROPS = settings(max_examples=80, deadline=timedelta(milliseconds=2000), suppress_health_check=[HealthCheck.too_slow])


def _pieces(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)] or [b""]


def _frames(sid: int, data: bytes, size: int, end: bool = True, pad: int | None = None) -> bytes:
    """`data` as DATA frames of `size` bytes on stream `sid`, the last one ending the stream if `end`."""
    parts = _pieces(data, size)
    return b"".join(hh.data(sid, p, end=end and i == len(parts) - 1, pad=pad) for i, p in enumerate(parts))


def _post(sid: int, enc: Encoder, path: str = "/form", ctype: str | None = FORM, end: bool = False) -> bytes:
    return hh.headers(enc, sid, hh.request_headers(path, ctype), end=end)


def _answer(enc: Encoder, sid: int, body: bytes = b"ok", ctype: str = "text/plain") -> bytes:
    return hh.headers(enc, sid, [(":status", "200"), ("content-type", ctype)]) + hh.data(sid, body, end=True)


def _conversation(client: bytes, server: bytes = b"") -> Chunks:
    chunks: Chunks = [(C2S, hh.client_start() + client)]
    if server:
        chunks.append((S2C, hh.settings() + server))
    return chunks


def _held(parser: Http2Parser) -> tuple[int, int]:
    """Body bytes the parser holds: requests, responses."""
    return parser._budgets[0].held, parser._budgets[1].held


def _kinds(events: list[L7Event]) -> list[tuple[str, int | None]]:
    return [(e.kind, e.fields.get("stream_id")) for e in events]


def _one(events: list[L7Event], kind: str) -> L7Event:
    (found,) = [e for e in events if e.kind == kind]
    return found


# -- request bodies reassembled ------------------------------------------------------------


def _trailers(enc: Encoder) -> bytes:
    return _post(1, enc) + _frames(1, BODY, 40, end=False) + hh.headers(enc, 1, [("x-checksum", "abc")], end=True)


REASSEMBLED: list[tuple[str, Chunks]] = [
    ("one-frame", _conversation(_post(1, Encoder()) + hh.data(1, BODY, end=True))),
    ("many-frames", _conversation(_post(1, Encoder()) + _frames(1, BODY, 7))),
    ("padded-frames", _conversation(_post(1, Encoder()) + _frames(1, BODY, 33, pad=9))),
    ("zero-padding", _conversation(_post(1, Encoder()) + _frames(1, BODY, 50, pad=0))),
    ("empty-last-frame", _conversation(_post(1, Encoder()) + _frames(1, BODY, 64, end=False) + hh.data(1, b"", True))),
    ("trailers-end-it", _conversation(_trailers(Encoder()))),
    ("h2c-upgrade", [(C2S, hh.upgrade_request(BODY)), (S2C, hh.SWITCHING), (C2S, hh.client_start())]),
]


@pytest.mark.parametrize(("chunks"), [pytest.param(c, id=i) for i, c in REASSEMBLED])
@pytest.mark.parametrize("mode", FEED_MODES)
def test_request_body_is_reassembled(chunks: Chunks, mode: str) -> None:
    """However the DATA is framed, padded and segmented, one `request_body` carries the whole body once it ends."""
    events = feed_all(Http2Parser(APP_HTTP2), split_chunks(chunks, mode))
    assert _kinds(events) == [("request", 1), ("request_body", 1)]
    request, body = events
    assert request.fields["end_stream"] is False
    assert (body.fields["body"], body.fields["complete"], body.fields["body_truncated"]) == (BODY, True, False)
    assert body.fields["request_bytes"] == len(BODY)
    assert body.fields["path"] == request.fields["path"]


def test_headers_that_end_the_stream_owe_no_body() -> None:
    """A GET whose HEADERS end the stream says so, and no `request_body` follows, even at the end."""
    enc = Encoder()
    parser = Http2Parser(APP_HTTP2)
    chunks = _conversation(hh.headers(enc, 1, hh.request_headers("/a", None, "GET"), end=True), _answer(Encoder(), 1))
    events = feed_all(parser, chunks) + parser.close()
    assert _kinds(events) == [("request", 1), ("response", 1)]
    assert events[0].fields["end_stream"] is True
    assert (events[1].fields["body"], events[1].fields["request_bytes"]) == (b"ok", 0)


# -- the cap -------------------------------------------------------------------------------

LONG = bytes(range(256)) * 8  # 2048 bytes, 4 x the SMALL cap


@pytest.mark.parametrize("mode", FEED_MODES)
@pytest.mark.parametrize(
    ("data", "complete"),
    [
        pytest.param(_frames(1, LONG, 300), False, id="cap-reached-mid-stream"),
        pytest.param(hh.data(1, LONG, end=True), True, id="cap-reached-in-the-last-frame"),
    ],
)
def test_body_beyond_the_cap(data: bytes, complete: bool, mode: str) -> None:
    """The first `cap` bytes are reported as soon as they are captured, or with the end if the same frame ends it."""
    chunks = _conversation(_post(1, Encoder()) + data, _answer(Encoder(), 1))
    events = feed_all(Http2Parser(APP_HTTP2, SMALL), split_chunks(chunks, mode))
    assert _kinds(events) == [("request", 1), ("request_body", 1), ("response", 1)]
    body = events[1].fields
    assert (body["body"], body["body_truncated"], body["complete"]) == (LONG[:512], True, complete)
    assert events[2].fields["request_bytes"] == len(LONG)


def test_cap_reported_before_the_client_ends() -> None:
    """A body that fills the cap is reported before the rest of it (or its end) has arrived."""
    parser = Http2Parser(APP_HTTP2, SMALL)
    parser.feed(C2S, hh.client_start() + _post(1, Encoder()))
    assert _kinds(parser.feed(C2S, hh.data(1, LONG[:400]))) == []
    assert _kinds(parser.feed(C2S, hh.data(1, LONG[400:1000]))) == [("request_body", 1)]
    assert parser.feed(C2S, hh.data(1, LONG[1000:], end=True)) == []


def test_default_cap_is_http1s() -> None:
    """With the default limits the capture keeps BODY_CAPTURE bytes (64 KiB), as HTTP/1 does."""
    big = bytes(range(256)) * 400  # 100 KiB
    chunks = _conversation(_post(1, Encoder()) + _frames(1, big, 16384))
    events = feed_all(Http2Parser(APP_HTTP2), chunks)
    body = _one(events, "request_body").fields
    assert (len(body["body"]), body["body"]) == (BODY_CAPTURE, big[:BODY_CAPTURE])


@pytest.mark.parametrize("mode", FEED_MODES)
def test_response_body_is_captured(mode: str) -> None:
    """The response carries its body (padding removed), cut at the cap and flagged so."""
    enc = Encoder()
    server = hh.headers(enc, 1, [(":status", "200")]) + _frames(1, LONG, 100, pad=4)
    chunks = _conversation(hh.headers(Encoder(), 1, hh.request_headers("/r", None, "GET"), end=True), server)
    response = _one(feed_all(Http2Parser(APP_HTTP2, SMALL), split_chunks(chunks, mode)), "response").fields
    assert (response["body"], response["body_truncated"], response["response_bytes"]) == (LONG[:512], True, len(LONG))


# -- gRPC ----------------------------------------------------------------------------------

M1, M2, M3 = b"\n\x05alice\x12\x03bob", b"\n\x07charlie", b"\x08\x96\x01"
COMPRESSED = b"\x01" + (4).to_bytes(4, "big") + b"\x1f\x8b\x08\x00"


def _call(app_ctype: str, data: bytes) -> Chunks:
    enc = Encoder()
    head = hh.headers(enc, 1, [*hh.request_headers("/pkg.Users/Find", app_ctype), ("te", "trailers")])
    return _conversation(head + data)


FRAMED = hh.grpc_message(M1) + hh.grpc_message(M2) + hh.grpc_message(M3)
GRPC_BODIES: list[tuple[str, str, str, bytes, bytes, int, int]] = [
    # (id, app, content-type, DATA payload, expected body, messages, compressed)
    ("one-frame", APP_GRPC, GRPC, hh.data(1, FRAMED, end=True), M1 + M2 + M3, 3, 0),
    ("prefixes-split-across-frames", APP_GRPC, GRPC, _frames(1, FRAMED, 3), M1 + M2 + M3, 3, 0),
    ("compressed-skipped", APP_GRPC, "application/grpc",
     hh.data(1, hh.grpc_message(M1) + COMPRESSED + hh.grpc_message(M2), end=True), M1 + M2, 3, 1),
    ("grpc-stream-on-an-http2-flow", APP_HTTP2, GRPC, _frames(1, FRAMED, 11), M1 + M2 + M3, 0, 0),
    ("json-stream-on-a-grpc-flow", APP_GRPC, "application/json", hh.data(1, b'{"a": 1}', end=True), b'{"a": 1}', 0, 0),
]  # fmt: skip


@pytest.mark.parametrize(
    ("app", "ctype", "data", "expected", "messages", "compressed"),
    [pytest.param(*row[1:], id=row[0]) for row in GRPC_BODIES],
)
@pytest.mark.parametrize("mode", FEED_MODES)
def test_grpc_messages_are_unframed(
    app: str, ctype: str, data: bytes, expected: bytes, messages: int, compressed: int, mode: str
) -> None:
    """A gRPC stream's body is its uncompressed messages without their prefixes; other streams keep their bytes."""
    events = feed_all(Http2Parser(app), split_chunks(_call(ctype, data), mode))
    body = _one(events, "request_body").fields
    assert body["body"] == expected
    if app == APP_GRPC:
        assert (body["request_messages"], body["request_compressed"]) == (messages, compressed)


def test_grpc_response_messages_and_trailers() -> None:
    """A gRPC response body is unframed too, and its status still comes from the trailers after the DATA."""
    enc = Encoder()
    server = (
        hh.headers(enc, 1, [(":status", "200"), ("content-type", GRPC)])
        + _frames(1, hh.grpc_message(M2) + COMPRESSED, 4, end=False)
        + hh.headers(enc, 1, [("grpc-status", "0")], end=True)
    )
    chunks = [*_call(GRPC, hh.data(1, hh.grpc_message(M1), end=True)), (S2C, hh.settings() + server)]
    events = feed_all(Http2Parser(APP_GRPC), chunks)
    assert _kinds(events) == [("request", 1), ("request_body", 1), ("response", 1)]
    response = events[2].fields
    assert (response["body"], response["grpc_status"], response["response_messages"]) == (M2, 0, 2)
    assert response["response_compressed"] == 1


# -- how streams end -----------------------------------------------------------------------


def _status(code: int) -> bytes:
    return hh.headers(Encoder(), 1, [(":status", str(code))])


def _partial(extra: bytes) -> Chunks:
    return [(C2S, hh.client_start() + _post(1, Encoder()) + hh.data(1, BODY[:50])), (C2S, extra)]


ENDINGS: list[tuple[str, Chunks, bool, list[tuple[str, int | None]]]] = [
    ("client-reset", _partial(hh.rst_stream(1, 8)), False, [("request", 1), ("reset", 1), ("request_body", 1)]),
    ("server-answers-first", [*_partial(b""), (S2C, hh.settings() + _answer(Encoder(), 1))], False,
     [("request", 1), ("request_body", 1), ("response", 1)]),
    ("connection-closes", _partial(b""), True, [("request", 1), ("request_body", 1)]),
    ("server-headers-then-close", [*_partial(b""), (S2C, hh.settings() + _status(200))],
     True, [("request", 1), ("request_body", 1), ("response", 1)]),
]  # fmt: skip


@pytest.mark.parametrize(("chunks", "close", "expected"), [pytest.param(c, x, e, id=i) for i, c, x, e in ENDINGS])
def test_stream_ending_early_reports_the_body_as_it_stands(
    chunks: Chunks, close: bool, expected: list[tuple[str, int | None]]
) -> None:
    """A reset, an early answer or the connection's end reports the body so far, incomplete, before any response."""
    parser = Http2Parser(APP_HTTP2)
    events = feed_all(parser, chunks) + (parser.close() if close else [])
    assert _kinds(events) == expected
    body = _one(events, "request_body").fields
    assert (body["body"], body["complete"]) == (BODY[:50], False)
    assert _held(parser) == (0, 0)


def test_streams_owing_no_body_are_forgotten_first() -> None:
    """Past MAX_STREAMS a stream that owes no body is forgotten before one whose body is still
    coming, so the body of the oldest stream is captured whole when it ends."""
    enc = Encoder()
    parser = Http2Parser(APP_HTTP2)
    parser.feed(C2S, hh.client_start() + _post(1, enc) + hh.data(1, b"first"))
    events: list[L7Event] = []
    for i in range(1, MAX_STREAMS + 1):
        events += parser.feed(C2S, hh.headers(enc, 2 * i + 1, hh.request_headers("/g", None, "GET"), end=True))
    assert [e for e in events if e.kind == "request_body"] == []
    events = parser.feed(C2S, hh.data(1, b" and the rest", end=True))
    body = _one(events, "request_body").fields
    assert (body["body"], body["complete"], body["body_truncated"]) == (b"first and the rest", True, False)


def test_forgotten_stream_reports_its_body_as_truncated() -> None:
    """When every stream held owes a body, the oldest is forgotten: its body is reported as it
    stands, marked truncated (what follows will not be seen)."""
    enc = Encoder()
    parser = Http2Parser(APP_HTTP2)
    parser.feed(C2S, hh.client_start() + _post(1, enc) + hh.data(1, b"first"))
    events: list[L7Event] = []
    for i in range(1, MAX_STREAMS + 1):
        events += parser.feed(C2S, _post(2 * i + 1, enc))
    bodies = [e.fields for e in events if e.kind == "request_body"]
    assert [(b["stream_id"], b["body"], b["complete"], b["body_truncated"]) for b in bodies] == [
        (1, b"first", False, True)
    ]


# -- memory bound --------------------------------------------------------------------------


def test_many_concurrent_streams_share_a_bounded_budget() -> None:
    """Concurrent open bodies hold at most the connection budget; when it is spent the oldest held
    bodies are reported early (truncated) to make room, so every stream's first bytes are captured."""
    enc = Encoder()
    parser = Http2Parser(APP_HTTP2, SMALL)
    budget = BUDGET_BODIES * 512
    streams = range(1, 81, 2)  # 40 streams x 300 bytes: 12000 bytes open at once
    parser.feed(C2S, hh.client_start())
    events: list[L7Event] = []
    for sid in streams:
        events += parser.feed(C2S, _post(sid, enc) + hh.data(sid, bytes([sid]) * 300))
        assert _held(parser)[0] <= budget
    events += parser.feed(C2S, b"".join(hh.data(sid, b"", end=True) for sid in streams))
    bodies = {e.fields["stream_id"]: e.fields for e in events if e.kind == "request_body"}
    assert sorted(bodies) == list(streams) and _held(parser) == (0, 0)
    for sid, body in bodies.items():
        assert body["body"] == bytes([sid]) * len(body["body"]) and len(body["body"]) > 0
        assert body["body_truncated"] == (not body["complete"] or len(body["body"]) < 300)
    assert all(len(bodies[sid]["body"]) == 300 for sid in streams[-BUDGET_BODIES:])
    # with the budget given back, a new stream is captured whole again
    later = parser.feed(C2S, _post(101, enc) + hh.data(101, BODY, end=True))
    assert _one(later, "request_body").fields["body"] == BODY


def test_held_responses_do_not_crowd_out_requests() -> None:
    """Unfinished responses spend only the response budget: a request body that follows is captured whole."""
    enc_c, enc_s = Encoder(), Encoder()
    parser = Http2Parser(APP_HTTP2, SMALL)
    gets = range(1, 21, 2)
    parser.feed(C2S, hh.client_start())
    for sid in gets:
        parser.feed(C2S, hh.headers(enc_c, sid, hh.request_headers("/dl", None, "GET"), end=True))
    parser.feed(S2C, hh.settings())
    for sid in gets:
        parser.feed(S2C, hh.headers(enc_s, sid, [(":status", "200")]) + hh.data(sid, b"z" * 600))
    assert _held(parser) == (0, BUDGET_BODIES * 512)
    body = _one(parser.feed(C2S, _post(21, enc_c) + hh.data(21, BODY, end=True)), "request_body").fields
    assert (body["body"], body["body_truncated"], body["body_over_budget"]) == (BODY, False, False)


@st.composite
def interleaved(draw: st.DrawFn) -> Chunks:
    """Valid client and server frames on up to 12 streams: bodies, ends, resets and answers in any order."""
    enc_c, enc_s = Encoder(), Encoder()
    client, server = [hh.client_start()], [hh.settings()]
    opened: list[int] = []
    answered: set[int] = set()
    for _ in range(draw(st.integers(1, 40))):
        op = draw(st.sampled_from(["open", "data", "end", "reset", "answer"]))
        if op == "open" or not opened:
            sid = 2 * len(opened) + 1
            opened.append(sid)
            client.append(_post(sid, enc_c, ctype=draw(st.sampled_from([FORM, GRPC]))))
            continue
        sid = draw(st.sampled_from(opened))
        if op == "data":
            client.append(hh.data(sid, draw(st.binary(max_size=700)), pad=draw(st.none() | st.integers(0, 20))))
        elif op == "end":
            client.append(hh.data(sid, b"", end=True))
        elif op == "reset":
            client.append(hh.rst_stream(sid, 8))
        elif sid not in answered:
            answered.add(sid)
            server.append(_answer(enc_s, sid, draw(st.binary(max_size=700))))
    return [(C2S, b"".join(client)), (S2C, b"".join(server))]


@PROPS
@given(chunks=interleaved(), data=st.data())
def test_budget_is_never_exceeded_and_all_given_back(chunks: Chunks, data: st.DataObject) -> None:
    """Whatever the streams do, bodies held stay within the budget, each cut of the bytes gives the same events,
    and everything held is given back when the connection closes."""
    cut: Chunks = []
    for direction, payload in chunks:
        points = sorted(data.draw(st.lists(st.integers(0, len(payload)), max_size=6)))
        cut.extend((direction, payload[a:b]) for a, b in pairwise([0, *points, len(payload)]) if b > a)
    parser = Http2Parser(APP_GRPC, SMALL)
    events: list[L7Event] = []
    for direction, payload in cut:
        events += parser.feed(direction, payload)
        assert all(0 <= b.held <= b.limit for b in parser._budgets)
    events += parser.close()
    assert _held(parser) == (0, 0)
    whole = Http2Parser(APP_GRPC, SMALL)
    assert summary(events) == summary(feed_all(whole, chunks) + whole.close())
    assert all(len(e.fields["body"]) <= 512 for e in events if "body" in e.fields)


# -- compressed gRPC messages ---------------------------------------------------------------


def _compressed(body: bytes, codec: str) -> bytes:
    """A gRPC message compressed with `codec` (gzip, or deflate = the zlib format), flag 1."""
    import gzip
    import zlib

    packed = gzip.compress(body) if codec == "gzip" else zlib.compress(body)
    return b"\x01" + len(packed).to_bytes(4, "big") + packed


def _encoded_call(codec: str | None, data: bytes) -> Chunks:
    enc = Encoder()
    extra = [("grpc-encoding", codec)] if codec else []
    head = hh.headers(enc, 1, [*hh.request_headers("/pkg.Users/Find", GRPC), ("te", "trailers"), *extra])
    return _conversation(head + data)


INFLATED: list[tuple[str, str | None, bytes, bytes, int, int]] = [
    # (id, grpc-encoding, DATA payload, expected body, inflated, errors)
    ("gzip", "gzip", _frames(1, hh.grpc_message(M1) + _compressed(M2, "gzip"), 5), M1 + M2, 1, 0),
    ("deflate", "deflate", hh.data(1, _compressed(M3, "deflate"), end=True), M3, 1, 0),
    ("gzip-upper-case", "GZIP", hh.data(1, _compressed(M2, "gzip"), end=True), M2, 1, 0),
    ("truncated", "gzip", hh.data(1, COMPRESSED + hh.grpc_message(M1), end=True), M1, 1, 1),
    ("not-gzip", "gzip", hh.data(1, b"\x01\x00\x00\x00\x04abcd" + hh.grpc_message(M1), end=True), M1, 1, 1),
    ("unread-codec", "snappy", hh.data(1, _compressed(M2, "gzip") + hh.grpc_message(M1), end=True), M1, 0, 0),
]


@pytest.mark.parametrize(
    ("codec", "data", "expected", "inflated", "errors"), [pytest.param(*row[1:], id=row[0]) for row in INFLATED]
)
@pytest.mark.parametrize("mode", FEED_MODES)
def test_compressed_grpc_messages_are_inflated(
    codec: str | None, data: bytes, expected: bytes, inflated: int, errors: int, mode: str
) -> None:
    """gzip and deflate messages join the body inflated; a corrupt one or another codec is skipped, counted."""
    events = feed_all(Http2Parser(APP_GRPC), split_chunks(_encoded_call(codec, data), mode))
    body = _one(events, "request_body").fields
    assert body["body"] == expected
    assert (body["request_inflated"], body["request_inflate_errors"]) == (inflated, errors)


def test_a_decompression_bomb_costs_at_most_the_cap() -> None:
    """10 MB of zeros in a 10 KB gzip message: the capture keeps the cap's worth and says truncated."""
    bomb = _compressed(bytes(10_000_000), "gzip")
    events = feed_all(Http2Parser(APP_GRPC, SMALL), _encoded_call("gzip", _frames(1, bomb, 4000)))
    body = _one(events, "request_body").fields
    assert body["body"] == bytes(512) and body["body_truncated"]


def test_response_messages_inflate_by_the_response_encoding() -> None:
    """The response side reads its own grpc-encoding header, not the request's."""
    enc = Encoder()
    server = (
        hh.headers(enc, 1, [(":status", "200"), ("content-type", GRPC), ("grpc-encoding", "gzip")])
        + hh.data(1, _compressed(M2, "gzip"), end=False)
        + hh.headers(enc, 1, [("grpc-status", "0")], end=True)
    )
    chunks = [*_call(GRPC, hh.data(1, hh.grpc_message(M1), end=True)), (S2C, hh.settings() + server)]
    response = _one(feed_all(Http2Parser(APP_GRPC), chunks), "response").fields
    assert (response["body"], response["response_inflated"], response["response_compressed"]) == (M2, 1, 1)


def test_a_gzip_message_of_several_members_is_read_to_its_end() -> None:
    """gzip readers (grpc-go's, Java's) read member after member: so does the capture."""
    import gzip

    packed = gzip.compress(M1) + gzip.compress(M2)
    message = b"\x01" + len(packed).to_bytes(4, "big") + packed
    events = feed_all(Http2Parser(APP_GRPC), _encoded_call("gzip", _frames(1, message, 9)))
    body = _one(events, "request_body").fields
    assert (body["body"], body["request_inflate_errors"]) == (M1 + M2, 0)


def test_no_inflating_once_the_budget_is_spent() -> None:
    """With the connection's budget spent, a compressed message is not inflated into nothing
    (CPU for no capture): no decompressor is started, the capture says over budget."""
    from podwall.dpi.protocols.http2_body import BodyBudget, BodyCapture

    budget = BodyBudget(1024)
    budget.held = 1024  # held by other streams' bodies
    capture = BodyCapture(512, budget, framed=True)
    capture.codec = "gzip"
    message = bytearray(_compressed(bytes(100_000), "gzip") * 50)
    capture.feed(message, 0, len(message))
    assert (capture.messages, capture.inflated, bytes(capture.body)) == (50, 0, b"")
    budget.held = 0
    capture.feed(message, 0, len(message))
    assert capture.inflated == 1 and len(capture.body) == 512 and capture.truncated


def test_grpc_web_text_is_not_read_as_framed_messages() -> None:
    """`application/grpc-web-text` is base64: its body is kept as it came, not unframed."""
    data = b"AAAAAAUKA2JvYg=="
    events = feed_all(Http2Parser(APP_GRPC), _call("application/grpc-web-text", hh.data(1, data, end=True)))
    assert _one(events, "request_body").fields["body"] == data


def test_held_bodies_cannot_keep_a_later_request_from_being_captured() -> None:
    """Streams holding full captures open do not starve a later request: its body is captured whole."""
    enc = Encoder()
    parser = Http2Parser(APP_HTTP2)
    parser.feed(C2S, hh.client_start())
    for sid in range(1, 2 * BUDGET_BODIES, 2):
        parser.feed(C2S, _post(sid, enc) + _frames(sid, b"x" * 65535, 16384, end=False))
    attack = b"id=1%27%20OR%201%3D1--"
    events = parser.feed(C2S, _post(99, enc) + hh.data(99, attack, end=True))
    body = [e.fields for e in events if e.kind == "request_body" and e.fields["stream_id"] == 99]
    assert body and body[0]["body"] == attack and not body[0]["body_over_budget"]


def test_room_is_made_for_what_a_compressed_message_inflates_to() -> None:
    """A small gzip message that inflates to most of the cap gets that room from the older held
    bodies, not just its few wire bytes' worth: the end of it, where an attack would sit, is kept."""
    enc = Encoder()
    parser = Http2Parser(APP_GRPC, SMALL)
    head = [*hh.request_headers("/pkg.Users/Find", GRPC), ("te", "trailers"), ("grpc-encoding", "gzip")]
    parser.feed(C2S, hh.client_start())
    for sid in range(1, 2 * BUDGET_BODIES, 2):  # each holds 500 bytes: the budget is all but spent
        parser.feed(C2S, hh.headers(enc, sid, head) + hh.data(sid, hh.grpc_message(b"p" * 500)))
    inflated = b"f" * 480 + b"' OR 1=1--"
    events = parser.feed(C2S, hh.headers(enc, 99, head) + hh.data(99, _compressed(inflated, "gzip"), end=True))
    body = [e.fields for e in events if e.kind == "request_body" and e.fields["stream_id"] == 99]
    assert body and body[0]["body"] == inflated and not body[0]["body_over_budget"]
