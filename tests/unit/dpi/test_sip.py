"""SIP detection and parsing: request and status lines, compact headers, Content-Length framing on TCP."""

from __future__ import annotations

from datetime import timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from podwall.core.errors import ProtocolError
from podwall.core.limits import Limits
from podwall.core.types import PROTO_TCP, PROTO_UDP, Direction
from podwall.dpi.base import DetectContext, Detection, Detector
from podwall.dpi.protocols.dns import DnsDetector
from podwall.dpi.protocols.http1 import HttpDetector
from podwall.dpi.protocols.redis import RedisDetector
from podwall.dpi.protocols.sip import SipDetector, SipParser
from podwall.dpi.protocols.tls import TlsDetector
from podwall.dpi.session import DpiSession

from .fixtures import FEED_MODES, Chunks, feed_all, split_chunks, summary
from .fixtures import handmade as hm
from .fixtures import handmade_misc as hx

C2S, S2C = Direction.C2S, Direction.S2C
TCP = DetectContext(PROTO_TCP, 40000, 5060)
TCP_OTHER = DetectContext(PROTO_TCP, 40000, 8080)
UDP = DetectContext(PROTO_UDP, 5060, 5060)


@pytest.mark.parametrize(
    ("ctx", "direction", "data", "expected"),
    [
        pytest.param(TCP, C2S, hx.SIP_INVITE, Detection.MATCH, id="invite"),
        pytest.param(TCP_OTHER, C2S, hx.SIP_INVITE, Detection.MATCH, id="non-standard-port"),
        pytest.param(TCP, S2C, hx.SIP_RINGING, Detection.MATCH, id="status-line"),
        pytest.param(UDP, C2S, hx.SIP_REGISTER_UDP, Detection.MATCH, id="udp-register-sips"),
        pytest.param(TCP, C2S, b"\r\n\r\n" + hx.SIP_ACK, Detection.MATCH, id="after-keepalive"),
        pytest.param(TCP, C2S, b"INV", Detection.NEED_MORE, id="method-prefix"),
        pytest.param(TCP, C2S, b"INVITE sip:bob@biloxi.com SI", Detection.NEED_MORE, id="version-prefix"),
        pytest.param(TCP, C2S, b"INVITE si", Detection.NEED_MORE, id="scheme-prefix"),
        pytest.param(TCP, S2C, b"SIP/2.0 1", Detection.NEED_MORE, id="status-prefix"),
        pytest.param(TCP, C2S, hm.HTTP_GET, Detection.NO, id="http-request-is-not-sip"),
        pytest.param(TCP, S2C, hm.HTTP_OK, Detection.NO, id="http-response-is-not-sip"),
        pytest.param(TCP, C2S, b"OPTIONS * HTTP/1.1\r\n", Detection.NO, id="http-options"),
        pytest.param(TCP, C2S, b"OPTIONS sip:x SIP/3.0\r\n", Detection.NO, id="sip-3"),
        pytest.param(TCP, C2S, b"FROB sip:x SIP/2.0\r\n", Detection.NO, id="unknown-method"),
        pytest.param(TCP, C2S, b"INVITE http://x SIP/2.0\r\n", Detection.NO, id="http-uri"),
        pytest.param(TCP, S2C, b"SIP/2.0 99 Odd\r\n", Detection.NO, id="two-digit-status"),
        pytest.param(UDP, C2S, b"INVITE sip:bob@biloxi.com SIP/2.0", Detection.NO, id="udp-without-line-end"),
        pytest.param(UDP, C2S, hm.dns_query(), Detection.NO, id="dns-is-not-sip"),
        pytest.param(TCP, C2S, b"\x16\x03\x01\x02\x00", Detection.NO, id="tls-is-not-sip"),
    ],
)
def test_detect(ctx: DetectContext, direction: Direction, data: bytes, expected: Detection) -> None:
    """A SIP/2.0 request line with a known method and sip/sips/tel URI, or a SIP/2.0 status line, decides SIP."""
    assert SipDetector().detect(direction, data, ctx) is expected


@given(st.binary(max_size=200))
@settings(max_examples=300)
def test_random_bytes_are_not_sip(data: bytes) -> None:
    """Random bytes are never SIP."""
    assert SipDetector().detect(C2S, data, UDP) is Detection.NO


DIALOG: Chunks = [
    (C2S, hx.SIP_INVITE),
    (S2C, hx.SIP_RINGING + hx.SIP_OK),
    (C2S, b"\r\n\r\n" + hx.SIP_ACK),
]


@pytest.mark.parametrize("mode", FEED_MODES)
def test_tcp_dialog(mode: str) -> None:
    """INVITE, 180, 200 and ACK give request/response events with dialog fields, however the stream is cut."""
    parser = SipParser(TCP)
    events = feed_all(parser, split_chunks([*DIALOG, (C2S, b"BYE sip:bob@biloxi.com SIP/2.0\r\n")], mode))
    assert [(e.kind, e.fields.get("method"), e.fields.get("status"), e.fields["cseq_method"]) for e in events] == [
        ("request", "INVITE", None, "INVITE"),
        ("response", None, 180, "INVITE"),
        ("response", None, 200, "INVITE"),
        ("request", "ACK", None, "ACK"),
    ]
    invite = events[0].fields
    assert invite["uri"] == "sip:bob@biloxi.com"
    assert invite["from"] == "Alice <sip:alice@atlanta.com>;tag=1928301774"
    assert invite["to"] == "Bob <sip:bob@biloxi.com>"
    assert invite["call_id"] == "a84b4c76e66710@pc33.atlanta.com"
    assert invite["user_agent"] == "Softphone Beta1.5"
    assert events[1].fields["call_id"] == invite["call_id"]  # compact form i:
    assert parser.server_name() == "biloxi.com"
    assert summary(events) == summary(feed_all(SipParser(TCP), DIALOG))


def test_udp_register() -> None:
    """A UDP datagram without Content-Length is one message; keep-alives give nothing."""
    parser = SipParser(UDP)
    events = parser.feed(C2S, hx.SIP_REGISTER_UDP) + parser.feed(C2S, b"\r\n\r\n")
    assert [(e.fields["method"], e.fields["uri"], e.fields["user_agent"]) for e in events] == [
        ("REGISTER", "sips:registrar.biloxi.com", "Linphone/5.0")
    ]
    assert parser.server_name() == "registrar.biloxi.com"


@pytest.mark.parametrize(
    ("ctx", "chunks", "message"),
    [
        pytest.param(TCP, [(C2S, b"INVITE sip:x SIP/2.0\r\nTo: x\r\n\r\n")], "without Content-Length", id="no-length"),
        pytest.param(TCP, [(C2S, b"INVITE sip:x SIP/2.0\r\nl: -1\r\n\r\n")], "invalid Content-Length", id="neg-len"),
        pytest.param(TCP, [(C2S, b"INVITE sip:x SIP/2.0\r\nbroken\r\n\r\n")], "malformed header", id="no-colon"),
        pytest.param(TCP, [(C2S, b"GET / HTTP/1.1\r\n\r\n")], "not a request or status", id="http"),
        pytest.param(TCP, [(C2S, b"FROB sip:x SIP/2.0\r\nl: 0\r\n\r\n")], "unknown method", id="unknown-method"),
        pytest.param(TCP, [(C2S, b"INVITE sip:x SIP/2.0\r\n" + b"X: y\r\n" * 20000)], "exceeds", id="endless-head"),
        pytest.param(UDP, [(C2S, b"MESSAGE sip:x SIP/2.0\r\nl: 50\r\n\r\nhi")], "exceeds the datagram", id="udp-len"),
    ],
)
def test_malformed(ctx: DetectContext, chunks: Chunks, message: str) -> None:
    """Missing framing, bad headers, unknown methods and unbounded heads raise ProtocolError saying what."""
    with pytest.raises(ProtocolError, match=message):
        feed_all(SipParser(ctx), chunks)


def test_session_not_confused_with_http() -> None:
    """With HTTP and the others present, a SIP stream is named `sip` and HTTP is named `http`."""
    detectors: list[Detector] = [HttpDetector(), TlsDetector(), DnsDetector(), RedisDetector(), SipDetector()]
    session = DpiSession(TCP, detectors=detectors)
    session.on_stream(C2S, hx.SIP_INVITE)
    assert session.app == "sip"
    session = DpiSession(TCP_OTHER, detectors=detectors)
    session.on_stream(C2S, hm.HTTP_GET)
    assert session.app == "http"


@given(st.lists(st.tuples(st.sampled_from([C2S, S2C]), st.binary(max_size=300)), max_size=8))
@settings(max_examples=200, deadline=timedelta(milliseconds=800))
def test_random_bytes_only_protocol_error(chunks: Chunks) -> None:
    """Random bytes on TCP or UDP: events or ProtocolError, with held bytes bounded by the cap."""
    for ctx in (TCP, UDP):
        parser = SipParser(ctx, Limits(parser_buffer=512))
        try:
            for direction, data in chunks:
                parser.feed(direction, data)
                assert len(parser._sides[direction].stream.buf) <= 512
        except ProtocolError:
            pass


@given(st.data())
@settings(max_examples=100, deadline=timedelta(milliseconds=800))
def test_any_split_and_prefix(data: st.DataObject) -> None:
    """Any cut of the dialog gives the same events; a prefix of a matching message is never NO."""
    cut = data.draw(st.integers(1, len(hx.SIP_INVITE)))
    assert SipDetector().detect(C2S, hx.SIP_INVITE[:cut], TCP) is not Detection.NO
    stream = hx.SIP_INVITE + hx.SIP_ACK
    at = data.draw(st.integers(0, len(stream)))
    parser = SipParser(TCP)
    events = parser.feed(C2S, stream[:at]) + parser.feed(C2S, stream[at:])
    assert summary(events) == summary(SipParser(TCP).feed(C2S, stream))
