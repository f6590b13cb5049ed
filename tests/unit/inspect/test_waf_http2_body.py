"""The WAF on HTTP/2 and gRPC bodies: request bodies reach it, gRPC protobuf string fields are inspected."""

from __future__ import annotations

import random

import pytest
from hpack import Encoder

from podwall.core.limits import Limits
from podwall.core.types import Direction
from podwall.datapath.io.pcap import Frame
from podwall.dpi.base import L7Event
from podwall.dpi.protocols.http2 import Http2Parser
from podwall.dpi.protocols.http2_frames import APP_GRPC, APP_HTTP2
from podwall.inspect.findings import Action, Finding
from podwall.inspect.pipeline import CapturedFinding, InspectingEngine, Inspection
from podwall.inspect.waf.crs import DEFAULT_RULES_DIR
from podwall.inspect.waf.engine import WafEngine
from podwall.inspect.waf.flow import WafFlowInspector, waf_flow_inspector
from podwall.inspect.waf.http_request import parse_http
from podwall.inspect.waf.protobuf import MAX_DEPTH, MAX_STEPS, grpc_unframe, protobuf_strings, text_runs
from podwall.inspect.waf.targets import request_targets
from podwall.lab.synth import TcpConversation
from tests.unit.dpi.fixtures import handmade_http2 as hh

C2S, S2C = Direction.C2S, Direction.S2C
FORM = "application/x-www-form-urlencoded"
JSON = "application/json"
GRPC = "application/grpc"
SQLI = "1' UNION SELECT password FROM users--"

needs_crs = pytest.mark.skipif(not DEFAULT_RULES_DIR.is_dir(), reason="Debian's modsecurity-crs is not installed")


def ld(field: int, value: bytes) -> bytes:
    """A protobuf length-delimited field (wire type 2) with a varint length."""
    out = bytearray([field << 3 | 2])
    size = len(value)
    while size >= 0x80:
        out.append(size & 0x7F | 0x80)
        size >>= 7
    out.append(size)
    return bytes(out) + value


def varint_field(field: int, value: int) -> bytes:
    return bytes([field << 3, value])


def user_query(name: str, filter_text: str) -> bytes:
    """A protobuf `Find { string user = 1; Filter filter = 2 { string where = 1; int32 limit = 2; } }`."""
    return ld(1, name.encode()) + ld(2, ld(1, filter_text.encode()) + varint_field(2, 20))


# -- protobuf reading ----------------------------------------------------------------------

BLOB = random.Random(7).randbytes(3000)
PROTOBUF = [
    ("nested-string", user_query("alice", SQLI), {("ARGS:protobuf.1", "alice"), ("ARGS:protobuf.2.1", SQLI)}),
    ("cut-in-a-string", user_query("alice", SQLI)[:-10], {("ARGS:protobuf.2.1", SQLI[:-8])}),
    ("invalid-utf8-salted", ld(3, SQLI.encode() + b"\xff"), {("ARGS:protobuf.3", SQLI)}),
    ("control-salted", ld(3, b"\x01" + SQLI.encode() + b"\x02"), {("ARGS:protobuf.3", SQLI)}),
    ("text-in-binary", ld(4, BLOB[:500] + b"x' OR 'a'='a' -- long enough" + BLOB[500:]),
     {("ARGS:protobuf.4", "x' OR 'a'='a' -- long enough")}),
    ("not-protobuf", b"id=1' OR 1=1 and more text", {("REQUEST_BODY", "id=1' OR 1=1 and more text")}),
    ("unicode", ld(1, "café ' OR 1=1".encode()), {("ARGS:protobuf.1", "café ' OR 1=1")}),
    ("string-that-reads-as-a-message", ld(3, b"1' OR 1=1 -- aaa"), {("ARGS:protobuf.3", "1' OR 1=1 -- aaa")}),
    ("fixed-and-varint-fields", bytes([0x09]) + bytes(8) + bytes([0x15]) + bytes(4) + ld(7, b"hello"),
     {("ARGS:protobuf.7", "hello")}),
]  # fmt: skip


@pytest.mark.parametrize(("body", "expected"), [pytest.param(b, e, id=i) for i, b, e in PROTOBUF])
def test_protobuf_strings_finds_the_text(body: bytes, expected: set[tuple[str, str]]) -> None:
    """String fields, nested or cut or salted, and text inside binary or non-protobuf bytes become named values."""
    found = list(protobuf_strings(body))
    for location, text in expected:
        assert any(where == location and text in value for where, value in found), found


@pytest.mark.parametrize("length", [9, 10, 13, 34, 39, 96])  # length bytes \t \n \r " ' `
def test_nested_message_of_strings_is_not_read_whole(length: int) -> None:
    """A nested message of string fields yields those strings, not itself as text with key and length bytes."""
    text = ("order by price " * 8)[:length]
    assert list(protobuf_strings(ld(2, ld(1, text.encode())))) == [("ARGS:protobuf.2.1", text)]


def test_random_binary_gives_no_short_runs() -> None:
    """Binary data yields only printable runs of 16 or more characters (short ones are chance, not text)."""
    values = [v for _, v in protobuf_strings(ld(1, BLOB))]
    assert all(len(v) >= 16 for v in values)


def test_walk_is_bounded_but_hides_nothing() -> None:
    """Past the depth or step bound the walk stops, and the bytes left are read as text, so no string is lost."""
    deep = b"hello"
    for _ in range(MAX_DEPTH + 40):
        deep = ld(1, deep)
    found = list(protobuf_strings(deep))
    assert all(where.count(".") <= MAX_DEPTH + 1 for where, _ in found)
    assert any("hello" in value for _, value in found)
    many = varint_field(2, 1) * (MAX_STEPS * 2) + ld(1, b"late")
    assert ("REQUEST_BODY", "late") in set(protobuf_strings(many))


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        pytest.param(hh.grpc_message(b"ab") + hh.grpc_message(b"cd"), b"abcd", id="two-messages"),
        pytest.param(hh.grpc_message(b"ab") + b"\x01\x00\x00\x00\x02zz" + hh.grpc_message(b"c"), b"abc",
                     id="compressed-left-out"),
        pytest.param(hh.grpc_message(b"abcdef")[:-2], b"abcd", id="cut"),
        pytest.param(hh.grpc_message(b"ab") + b"\x80\x00\x00\x00\x0fgrpc-status:0\r\n", b"ab", id="grpc-web-trailers"),
        pytest.param(user_query("a", "b"), None, id="protobuf-is-not-framed"),
        pytest.param(b"\x00\x00", None, id="too-short"),
        pytest.param(hh.grpc_message(b"ab") + b"\x05\x00\x00\x00\x01x", None, id="bad-flag"),
    ],
)  # fmt: skip
def test_grpc_unframe(body: bytes, expected: bytes | None) -> None:
    """gRPC framing is stripped (compressed messages left out); unframed protobuf is told apart by its first byte."""
    assert grpc_unframe(body) == expected


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        pytest.param(b"plain text", ["plain text"], id="clean"),
        pytest.param(b"ab\x01cdef\x02ghij", ["cdef", "ghij"], id="control-cut"),
        pytest.param(b"abcdefgh\xffijklmnop", ["abcdefgh", "ijklmnop"], id="stray-byte"),
        pytest.param(b"", [], id="empty"),
    ],
)
def test_text_runs(data: bytes, expected: list[str]) -> None:
    """Clean text is one piece; text cut by controls or a stray byte gives its pieces of 4+ characters."""
    assert text_runs(data) == expected


def _targets(content_type: str, body: bytes) -> set[tuple[str, str]]:
    raw = f"POST /x HTTP/1.1\r\nHost: h\r\nContent-Type: {content_type}\r\n\r\n".encode() + body
    return {(t.location, t.value) for t in request_targets(parse_http(raw).request)}


@pytest.mark.parametrize(
    ("content_type", "body", "expected"),
    [
        pytest.param("application/grpc-web+proto", hh.grpc_message(user_query("bob", SQLI)),
                     ("ARGS:protobuf.2.1", SQLI), id="grpc-web-framed"),
        pytest.param("application/grpc", user_query("bob", SQLI), ("ARGS:protobuf.2.1", SQLI), id="grpc-unframed"),
        pytest.param("application/x-protobuf", user_query("bob", SQLI), ("ARGS:protobuf.2.1", SQLI), id="protobuf"),
        pytest.param("application/grpc+json", b'{"q": "a"}\n{"q": "' + SQLI.encode() + b'"}', ("ARGS:json.q", SQLI),
                     id="grpc-json-messages"),
        pytest.param("application/grpc+thrift", b"\x0b\x00\x01" + SQLI.encode(), ("REQUEST_BODY", SQLI),
                     id="unknown-codec"),
    ],
)  # fmt: skip
def test_message_bodies_become_targets(content_type: str, body: bytes, expected: tuple[str, str]) -> None:
    """gRPC (framed or not), protobuf and gRPC-JSON bodies yield their strings as the own layer's targets."""
    assert expected in _targets(content_type, body)


# -- the WAF on HTTP/2 conversations ---------------------------------------------------------


@pytest.fixture(scope="module")
def engine() -> WafEngine:
    return WafEngine(paranoia=1)


def _h2_post(
    app: str, content_type: str, body: bytes, path: str, extra: tuple[tuple[str, str], ...] = ()
) -> tuple[bytes, bytes]:
    """Client and server bytes of one POST whose body goes in 16-byte DATA frames, answered 200."""
    enc_c, enc_s = Encoder(), Encoder()
    headers = [*hh.request_headers(path, content_type), ("te", "trailers"), *extra] if app == APP_GRPC else None
    head = hh.headers(enc_c, 1, headers or hh.request_headers(path, content_type))
    data = b"".join(hh.data(1, body[i : i + 16], pad=3 if i % 32 else None) for i in range(0, len(body), 16))
    client = hh.client_start() + head + data + hh.data(1, b"", end=True)
    status = [(":status", "200"), ("content-type", content_type)]
    server = (
        hh.settings() + hh.headers(enc_s, 1, status) + hh.data(1, b"\x00\x00\x00\x00\x00" if app == APP_GRPC else b"ok")
    )
    if app == APP_GRPC:
        server += hh.headers(enc_s, 1, [("grpc-status", "0")], end=True)
    else:
        server += hh.data(1, b"", end=True)
    return client, server


def _run(engine: WafEngine, client: bytes, server: bytes, port: int, immediate: bool) -> list[CapturedFinding]:
    """The conversation as TCP frames of at most 90 bytes through the inspecting pipeline with the WAF."""
    conv = TcpConversation("10.0.0.1", 40000, "10.0.0.2", port, 1.0, mss=90)
    raw = conv.send(True, client).send(False, server).close()
    pipeline = InspectingEngine(Inspection(flow_inspectors=[waf_flow_inspector(engine, immediate=immediate)]))
    for i, (ts, data) in enumerate(raw):
        pipeline.feed(Frame(i + 1, ts, 1, data, len(data)))
    pipeline.finish()
    return pipeline.findings


CONVERSATIONS = [
    ("form-sqli", APP_HTTP2, FORM, b"user=alice&id=1%27%20OR%201%3D1--&x=2", "ARGS:id"),
    ("json-sqli", APP_HTTP2, JSON, b'{"user": "alice", "filter": {"where": "' + SQLI.encode() + b'"}}',
     "ARGS:json.filter.where"),
    ("grpc-sqli", APP_GRPC, GRPC, hh.grpc_message(user_query("alice", SQLI)), "ARGS:protobuf.2.1"),
    ("form-benign", APP_HTTP2, FORM, b"user=alice&comment=It%27s+a+nice+day%2C+isn%27t+it%3F&id=42", None),
    ("json-benign", APP_HTTP2, JSON, b'{"user": "O\'Brien", "tags": ["a", "b"], "note": "10% off, ok?"}', None),
    ("grpc-benign", APP_GRPC, GRPC, hh.grpc_message(user_query("O'Brien", "status = open")) +
     hh.grpc_message(ld(9, BLOB)), None),
]  # fmt: skip


@needs_crs
@pytest.mark.parametrize(("app", "ctype", "body", "location"), [pytest.param(*c[1:], id=c[0]) for c in CONVERSATIONS])
@pytest.mark.parametrize("immediate", [False, True], ids=["offline", "immediate"])
def test_http2_bodies_reach_the_waf(
    engine: WafEngine, app: str, ctype: str, body: bytes, location: str | None, immediate: bool
) -> None:
    """An SQLi in an HTTP/2 form or JSON body or a gRPC string field is found there; benign bodies give nothing."""
    client, server = _h2_post(app, ctype, body, "/pkg.Users/Find" if app == APP_GRPC else "/search")
    found = _run(engine, client, server, 50051 if app == APP_GRPC else 8080, immediate)
    assert {c.flow.app for c in found if c.flow is not None} <= {app}
    if location is None:
        assert found == []
        return
    assert any(c.finding.location == location for c in found), [c.finding.location for c in found]
    assert all(c.finding.direction is C2S for c in found)
    assert len({c.finding.id for c in found}) == len(found)  # each check once: no second report with the response


def _events(app: str, chunks: list[tuple[Direction, bytes]], limits: Limits | None = None) -> list[L7Event]:
    parser = Http2Parser(app, limits) if limits is not None else Http2Parser(app)
    return [e for d, data in chunks for e in parser.feed(d, data)]


def _by_event(inspector: WafFlowInspector, events: list[L7Event]) -> list[tuple[str, list[Finding]]]:
    return [(e.kind, inspector.on_event(e)) for e in events]


@needs_crs
def test_immediate_inspects_the_request_when_its_body_ends(engine: WafEngine) -> None:
    """Inline, a body-carrying request is judged at its `request_body`, before the response, and only once."""
    client, server = _h2_post(APP_HTTP2, FORM, b"id=1%27%20OR%201%3D1--", "/search")
    steps = _by_event(WafFlowInspector(engine, immediate=True), _events(APP_HTTP2, [(C2S, client), (S2C, server)]))
    assert [(kind, bool(found)) for kind, found in steps] == [
        ("request", False),
        ("request_body", True),
        ("response", False),
    ]
    assert any(f.location == "ARGS:id" for f in steps[1][1])


@needs_crs
def test_immediate_inspects_at_the_cap_before_the_body_ends(engine: WafEngine) -> None:
    """A body past the capture cap is judged on its first bytes as soon as they are captured."""
    enc = Encoder()
    body = b"id=1%27%20OR%201%3D1--&pad=" + b"a" * 2000
    head = hh.client_start() + hh.headers(enc, 1, hh.request_headers("/upload", FORM))
    parser = Http2Parser(APP_HTTP2, Limits(parser_buffer=512))
    inspector = WafFlowInspector(engine, immediate=True)
    found = [f for e in parser.feed(C2S, head + hh.data(1, body[:1000])) for f in inspector.on_event(e)]
    assert any(f.location == "ARGS:id" for f in found)
    later = [f for e in parser.feed(C2S, hh.data(1, body[1000:], end=True)) for f in inspector.on_event(e)]
    assert later == []


@needs_crs
@pytest.mark.parametrize("immediate", [False, True], ids=["offline", "immediate"])
def test_request_whose_body_never_comes_is_inspected(engine: WafEngine, immediate: bool) -> None:
    """A request announced with a body that never arrives is inspected without it: inline at its
    HEADERS (a server may start on them, so a client holding the body back gains nothing),
    offline when the flow ends."""
    enc = Encoder()
    client = hh.client_start() + hh.headers(enc, 1, hh.request_headers("/item?id=1%27%20OR%201=1--", FORM))
    inspector = WafFlowInspector(engine, immediate=immediate)
    at_headers = [f for e in _events(APP_HTTP2, [(C2S, client)]) for f in inspector.on_event(e)]
    at_end = inspector.finish()
    assert any(f.location == "ARGS:id" for f in (at_headers if immediate else at_end))
    assert (at_end if immediate else at_headers) == []


@needs_crs
def test_a_body_after_its_inspected_headers_reports_only_what_is_new(engine: WafEngine) -> None:
    """Inline, an attack in the URL is reported at HEADERS; the body's own attack comes at
    `request_body` without the URL's findings again; the response adds nothing twice."""
    client, server = _h2_post(
        APP_HTTP2, FORM, b"q=%3Cscript%3Ealert(1)%3C%2Fscript%3E", "/search?id=1%27%20OR%201%3D1--"
    )
    steps = _by_event(WafFlowInspector(engine, immediate=True), _events(APP_HTTP2, [(C2S, client), (S2C, server)]))
    (kinds, found) = zip(*steps, strict=True)
    assert kinds == ("request", "request_body", "response")
    assert any(f.location == "ARGS:id" for f in found[0])
    assert found[1] and not any(f.location == "ARGS:id" for f in found[1])
    assert any(f.location == "ARGS:q" for f in found[1])
    assert found[2] == []


@needs_crs
@pytest.mark.parametrize("immediate", [False, True], ids=["offline", "immediate"])
def test_a_body_outlived_by_many_streams_is_still_inspected(engine: WafEngine, immediate: bool) -> None:
    """Past the pending-stream limit, streams that owe no body are dropped first (by the DPI and
    the WAF alike): the oldest stream's body, when it comes, is inspected with its request."""
    from podwall.inspect.waf.flow import MAX_PENDING_STREAMS

    enc = Encoder()
    client = hh.client_start() + hh.headers(enc, 1, hh.request_headers("/first", FORM))
    for sid in range(3, 3 + 2 * MAX_PENDING_STREAMS, 2):
        client += hh.headers(enc, sid, hh.request_headers("/other", FORM), end=True)
    client += hh.data(1, b"id=1%27%20OR%201%3D1--", end=True)
    inspector = WafFlowInspector(engine, immediate=immediate)
    found = [f for e in _events(APP_HTTP2, [(C2S, client)]) for f in inspector.on_event(e)] + inspector.finish()
    assert any(f.location == "ARGS:id" for f in found), [f.location for f in found]


@needs_crs
@pytest.mark.parametrize("immediate", [False, True], ids=["offline", "immediate"])
def test_an_sqli_in_a_gzip_grpc_message_is_found(engine: WafEngine, immediate: bool) -> None:
    """A gzip-compressed gRPC message (grpc-encoding: gzip) is inflated by the DPI and its string field inspected."""
    import gzip

    packed = gzip.compress(user_query("alice", SQLI))
    body = b"\x01" + len(packed).to_bytes(4, "big") + packed
    client, server = _h2_post(APP_GRPC, GRPC, body, "/pkg.Users/Find", (("grpc-encoding", "gzip"),))
    found = _run(engine, client, server, 50051, immediate)
    assert any(c.finding.location == "ARGS:protobuf.2.1" for c in found), [c.finding.location for c in found]


@needs_crs
def test_many_small_fields_do_not_hide_one_past_the_target_limit(engine: WafEngine) -> None:
    """600 one-character string fields then an SQLi field: the values past the target limit are
    still inspected (joined), so the request is blocked though no CRS rule reads protobuf."""
    from podwall.inspect.waf.http_request import HttpRequest, HttpTransaction

    body = b"".join(ld(3, b"a") for _ in range(600)) + user_query("bob", SQLI)
    headers = (("Host", "h"), ("Content-Type", "application/x-protobuf"), ("Content-Length", str(len(body))))
    result = engine.inspect(HttpTransaction(HttpRequest("POST", "/x", "1.1", headers, body)))
    assert result.blocked and "sqli" in result.categories()


@needs_crs
def test_a_value_that_blocks_only_with_the_body_is_reported_again_as_a_block() -> None:
    """With a threshold the URL alone does not reach, the same value in the body raises the score
    past it: inline, the findings are reported again with the blocking action (offline blocks too)."""
    from urllib.parse import quote

    engine = WafEngine(paranoia=1, threshold=10)
    q = quote("../", safe="")
    client, server = _h2_post(APP_HTTP2, FORM, ("q=" + q).encode(), "/search?q=" + q)
    for immediate in (True, False):
        inspector = WafFlowInspector(engine, immediate=immediate)
        events = _events(APP_HTTP2, [(C2S, client), (S2C, server)])
        found = [f for e in events for f in inspector.on_event(e)] + inspector.finish()
        assert any(f.action is Action.DENY for f in found), (immediate, [(f.id, f.action) for f in found])


@needs_crs
def test_padding_the_query_does_not_hide_the_body(engine: WafEngine) -> None:
    """512 query arguments, then a protobuf body with an SQLi: the values past the limit (the
    body's among them) are still inspected."""
    from podwall.inspect.waf.http_request import HttpRequest, HttpTransaction

    query = "&".join(f"a{i}=1" for i in range(512))
    body = user_query("bob", SQLI)
    headers = (("Host", "h"), ("Content-Type", "application/x-protobuf"), ("Content-Length", str(len(body))))
    result = engine.inspect(HttpTransaction(HttpRequest("POST", f"/x?{query}", "1.1", headers, body)))
    assert "sqli" in result.categories()
