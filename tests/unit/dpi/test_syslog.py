"""Syslog detection and parsing: RFC 5424 and RFC 3164 headers, UDP datagrams, TCP framing."""

from __future__ import annotations

from datetime import timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from podwall.core.errors import ProtocolError
from podwall.core.limits import Limits
from podwall.core.types import PROTO_TCP, PROTO_UDP, Direction
from podwall.dpi.base import DetectContext, Detection
from podwall.dpi.protocols.dns import DnsDetector
from podwall.dpi.protocols.http1 import HttpDetector
from podwall.dpi.protocols.redis import RedisDetector
from podwall.dpi.protocols.syslog import SyslogDetector, SyslogParser, parse_syslog
from podwall.dpi.protocols.tls import TlsDetector
from podwall.dpi.session import DpiSession

from .fixtures import FEED_MODES, Chunks, feed_all, split_chunks, summary
from .fixtures import handmade as hm
from .fixtures import handmade_misc as hx

C2S, S2C = Direction.C2S, Direction.S2C
UDP = DetectContext(PROTO_UDP, 40000, 514)
UDP_OTHER = DetectContext(PROTO_UDP, 40000, 9999)
TCP = DetectContext(PROTO_TCP, 40000, 601)


def _counted(*messages: bytes) -> bytes:
    return b"".join(b"%d %s" % (len(m), m) for m in messages)


@pytest.mark.parametrize(
    ("ctx", "data", "expected"),
    [
        pytest.param(UDP, hx.SYSLOG_5424, Detection.MATCH, id="udp-5424"),
        pytest.param(UDP, hx.SYSLOG_5424_SD, Detection.MATCH, id="udp-5424-structured-data"),
        pytest.param(UDP, hx.SYSLOG_3164, Detection.MATCH, id="udp-3164"),
        pytest.param(UDP, hx.SYSLOG_3164_PID, Detection.MATCH, id="udp-3164-space-padded-day"),
        pytest.param(UDP_OTHER, hx.SYSLOG_5424, Detection.MATCH, id="non-standard-port"),
        pytest.param(UDP, b"<192>1 - - - - - -", Detection.NO, id="pri-192"),
        pytest.param(UDP, b"<013>1 - - - - - -", Detection.NO, id="pri-leading-zero"),
        pytest.param(UDP, b"<13>2 - - - - - -", Detection.NO, id="version-2"),
        pytest.param(UDP, b"<13>hello world", Detection.NO, id="no-header"),
        pytest.param(UDP, b"<13>Foo 11 22:14:15 host x", Detection.NO, id="bad-month"),
        pytest.param(UDP, hm.dns_query(), Detection.NO, id="dns-query-is-not-syslog"),
        pytest.param(TCP, hm.HTTP_GET, Detection.NO, id="http-request-is-not-syslog"),
        pytest.param(TCP, hx.SYSLOG_3164 + b"\n", Detection.MATCH, id="tcp-newline"),
        pytest.param(TCP, _counted(hx.SYSLOG_5424), Detection.MATCH, id="tcp-octet-counted"),
        pytest.param(TCP, b"<3", Detection.NEED_MORE, id="tcp-pri-prefix"),
        pytest.param(TCP, b"12", Detection.NEED_MORE, id="tcp-count-prefix"),
        pytest.param(TCP, b"<34>1 2003-10-11T22:1", Detection.NEED_MORE, id="tcp-header-prefix"),
        pytest.param(TCP, b"<999>", Detection.NO, id="tcp-pri-too-big"),
        pytest.param(TCP, b"012 <13>", Detection.NO, id="tcp-count-leading-zero"),
        pytest.param(TCP, b"\x16\x03\x01\x00", Detection.NO, id="tls-is-not-syslog"),
    ],
)
def test_detect(ctx: DetectContext, data: bytes, expected: Detection) -> None:
    """A <PRI> (0..191) followed by an RFC 5424 or RFC 3164 header decides syslog; a prefix asks for more."""
    assert SyslogDetector().detect(C2S, data, ctx) is expected


def test_server_bytes_are_not_syslog() -> None:
    """On TCP the server never speaks syslog first."""
    assert SyslogDetector().detect(S2C, hx.SYSLOG_3164 + b"\n", TCP) is Detection.NO


@pytest.mark.parametrize(
    ("data", "fields"),
    [
        pytest.param(
            hx.SYSLOG_5424,
            {"format": "5424", "facility": "auth", "severity": "crit", "hostname": "mymachine.example.com",
             "app_name": "su", "procid": None, "msgid": "ID47", "message": "'su root' failed for lonvick"},
            id="5424",
        ),
        pytest.param(
            hx.SYSLOG_5424_SD,
            {"facility": "local4", "severity": "notice", "app_name": "evntslog", "message": "An application event",
             "structured_data": '[exampleSDID@32473 iut="3" eventSource="Application" eventID="1011"]'},
            id="5424-sd",
        ),
        pytest.param(
            hx.SYSLOG_3164,
            {"format": "3164", "pri": 34, "hostname": "mymachine", "app_name": "su", "timestamp": "Oct 11 22:14:15"},
            id="3164",
        ),
        pytest.param(hx.SYSLOG_3164_PID, {"hostname": "10.0.0.99", "app_name": "sshd", "procid": "4123"}, id="pid"),
    ],
)  # fmt: skip
def test_udp_fields(data: bytes, fields: dict[str, object]) -> None:
    """A datagram gives one `message` event with facility, severity, hostname, app name and format."""
    events = SyslogParser(UDP).feed(C2S, data)
    assert [e.kind for e in events] == ["message"]
    assert {k: events[0].fields[k] for k in fields} == fields


NEWLINE: Chunks = [(C2S, hx.SYSLOG_3164 + b"\n" + hx.SYSLOG_5424 + b"\r\n\n" + hx.SYSLOG_3164_PID + b"\n")]
COUNTED: Chunks = [(C2S, _counted(hx.SYSLOG_5424_SD, hx.SYSLOG_3164, b"<13>1 - h a - - - line1\nline2"))]


@pytest.mark.parametrize("mode", FEED_MODES)
@pytest.mark.parametrize(
    ("chunks", "hosts"),
    [
        pytest.param(NEWLINE, ["mymachine", "mymachine.example.com", "10.0.0.99"], id="newline"),
        pytest.param(COUNTED, ["mymachine.example.com", "mymachine", "h"], id="octet-counted"),
    ],
)
def test_tcp_framing(chunks: Chunks, hosts: list[str], mode: str) -> None:
    """Both TCP framings give one event per message however the stream is cut (trailing partial data waits)."""
    events = feed_all(SyslogParser(TCP), split_chunks([*chunks, (C2S, b"<13>Oct")], mode))
    assert [e.fields["hostname"] for e in events] == hosts
    assert summary(events) == summary(feed_all(SyslogParser(TCP), chunks))


def test_close_completes_last_line() -> None:
    """A newline-framed message cut by the end of the connection is reported by close()."""
    parser = SyslogParser(TCP)
    assert parser.feed(C2S, hx.SYSLOG_3164) == []
    assert [e.fields["app_name"] for e in parser.close()] == ["su"]


@pytest.mark.parametrize(
    ("chunks", "message"),
    [
        pytest.param([(C2S, b"<13>nothing here\n")], "no RFC 5424 or RFC 3164 header", id="no-header"),
        pytest.param([(C2S, b"<200>Oct 11 22:14:15 h x\n")], "0..191", id="pri-range"),
        pytest.param([(C2S, b"5x <13>")], "bad octet count", id="bad-count"),
        pytest.param([(C2S, b"1234567890123 ")], "bad octet count", id="long-count"),
        pytest.param([(C2S, b"99999999 <13>")], "exceeds", id="count-over-cap"),
        pytest.param([(C2S, b'<13>1 - - - - - [x a="1"')], "unterminated", id="open-structured-data"),
        pytest.param([(C2S, b"<13>" + b"a" * 70000)], "exceeds", id="endless-line"),
    ],
)
def test_malformed(chunks: Chunks, message: str) -> None:
    """Bad headers, bad framing and unbounded lines raise ProtocolError saying what."""
    with pytest.raises(ProtocolError, match=message):
        parser = SyslogParser(DetectContext(PROTO_TCP, 1, 514), Limits(parser_buffer=65536))
        feed_all(parser, chunks)
        parser.close()


def test_parse_rejects_bad_version() -> None:
    """An RFC 5424 header with a version other than 1 is a ProtocolError."""
    with pytest.raises(ProtocolError, match="version 7"):
        parse_syslog(b"<13>7 - - - - - -")


def test_session_tcp() -> None:
    """With the other detectors, a TCP stream of syslog lines is named `syslog`."""
    session = DpiSession(
        TCP, detectors=[SyslogDetector(), HttpDetector(), TlsDetector(), DnsDetector(), RedisDetector()]
    )
    session.on_stream(C2S, NEWLINE[0][1])
    assert session.app == "syslog"
    assert session.event_count == 3


@given(st.lists(st.binary(max_size=300), max_size=8))
@settings(max_examples=200, deadline=timedelta(milliseconds=800))
def test_random_bytes_only_protocol_error(chunks: list[bytes]) -> None:
    """Random bytes over TCP or UDP: events or ProtocolError, and memory bounded by the cap."""
    for ctx in (TCP, UDP):
        parser = SyslogParser(ctx, Limits(parser_buffer=512))
        try:
            for chunk in chunks:
                parser.feed(C2S, b"<13>" + chunk)
                assert len(parser._framers[0].stream.buf) <= 512
        except ProtocolError:
            pass


@given(st.data())
@settings(max_examples=100, deadline=timedelta(milliseconds=800))
def test_prefix_of_a_match_is_never_no(data: st.DataObject) -> None:
    """On TCP the detector never rules out a prefix of a stream it matches."""
    whole = data.draw(st.sampled_from([NEWLINE[0][1], COUNTED[0][1]]))
    assert SyslogDetector().detect(C2S, whole, TCP) is Detection.MATCH
    cut = data.draw(st.integers(1, len(whole)))
    assert SyslogDetector().detect(C2S, whole[:cut], TCP) is not Detection.NO
