"""NTP detection and parsing: the 48-byte header, control messages, the nDPI corpus datagram."""

from __future__ import annotations

import contextlib
from datetime import timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from podwall.core.errors import ProtocolError
from podwall.core.types import PROTO_UDP, Direction
from podwall.dpi.base import DetectContext, Detection
from podwall.dpi.protocols.dhcp import DhcpDetector
from podwall.dpi.protocols.dns import DnsDetector
from podwall.dpi.protocols.ntp import NtpDetector, NtpParser, parse_ntp
from podwall.dpi.protocols.sip import SipDetector
from podwall.dpi.protocols.syslog import SyslogDetector
from podwall.dpi.session import DpiSession

from .fixtures import handmade as hm
from .fixtures import handmade_misc as hx
from .fixtures import load_chunks

C2S, S2C = Direction.C2S, Direction.S2C
ON_123 = DetectContext(PROTO_UDP, 123, 123)
ON_9999 = DetectContext(PROTO_UDP, 40000, 9999)
CORPUS = load_chunks("ntp_v4")[0][1]


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        pytest.param(hx.NTP_CLIENT, Detection.MATCH, id="v4-client"),
        pytest.param(hx.NTP_SERVER, Detection.MATCH, id="v4-server-stratum-1"),
        pytest.param(hx.NTP_KOD, Detection.MATCH, id="kiss-of-death"),
        pytest.param(hx.ntp_packet(version=3), Detection.MATCH, id="v3"),
        pytest.param(hx.ntp_packet(version=1), Detection.MATCH, id="v1"),
        pytest.param(hx.NTP_CONTROL, Detection.MATCH, id="control-mode-6"),
        pytest.param(CORPUS, Detection.MATCH, id="corpus-ntpv4"),
        pytest.param(hx.NTP_CLIENT + bytes(20), Detection.MATCH, id="with-mac"),
        pytest.param(hx.ntp_packet(version=0), Detection.NO, id="version-0"),
        pytest.param(hx.ntp_packet(version=5), Detection.NO, id="version-5"),
        pytest.param(hx.ntp_packet(mode=0), Detection.NO, id="mode-0"),
        pytest.param(hx.ntp_packet(stratum=17), Detection.NO, id="stratum-17"),
        pytest.param(hx.ntp_packet(poll=40), Detection.NO, id="absurd-poll"),
        pytest.param(hx.ntp_packet(precision=5), Detection.NO, id="positive-precision"),
        pytest.param(hx.NTP_CLIENT[:47], Detection.NO, id="short"),
        pytest.param(hx.NTP_CLIENT + b"x", Detection.NO, id="not-word-aligned"),
        pytest.param(hm.dns_query(), Detection.NO, id="dns-query-is-not-ntp"),
        pytest.param(hm.HTTP_GET, Detection.NO, id="http-request-is-not-ntp"),
        pytest.param(bytes(range(48)), Detection.NO, id="counting-bytes"),
        pytest.param(b"\x16\x11" + bytes(46), Detection.NO, id="control-padded-with-zeros"),
        pytest.param(b"\x17\x00\x03\x2a" + bytes(4), Detection.MATCH, id="private-mode-7"),
    ],
)
def test_detect(data: bytes, expected: Detection) -> None:
    """Version 1-4, a real mode, stratum at most 16 and sane poll/precision decide NTP."""
    assert NtpDetector().detect(C2S, data, ON_123) is expected


def test_non_standard_port() -> None:
    """NTP on a non-standard port is still NTP (detection is by payload)."""
    assert NtpDetector().detect(C2S, hx.NTP_CLIENT, ON_9999) is Detection.MATCH


@given(st.binary(min_size=48, max_size=48))
@settings(max_examples=300)
def test_random_datagrams_rarely_match(data: bytes) -> None:
    """Random 48-byte datagrams almost never pass; those that do have a sane header."""
    if NtpDetector().detect(C2S, data, ON_9999) is Detection.MATCH:
        assert 1 <= (data[0] >> 3) & 7 <= 4
        assert data[0] & 7 >= 6 or data[1] <= 16


@pytest.mark.parametrize(
    ("data", "fields"),
    [
        pytest.param(hx.NTP_CLIENT, {"version": 4, "mode": "client", "stratum": 0, "reference_id": None}, id="client"),
        pytest.param(hx.NTP_SERVER, {"mode": "server", "stratum": 1, "reference_id": "GPS"}, id="gps-server"),
        pytest.param(hx.NTP_STRATUM2, {"stratum": 2, "reference_id": "192.0.2.1"}, id="stratum-2-address"),
        pytest.param(hx.NTP_KOD, {"stratum": 0, "reference_id": "RATE"}, id="kiss-code"),
        pytest.param(hx.NTP_CONTROL, {"version": 2, "mode": "control", "opcode": 2, "response": False}, id="control"),
        pytest.param(
            CORPUS,
            {"version": 4, "mode": "client", "stratum": 2, "reference_id": "131.188.3.223", "poll": 7,
             "precision": -21},
            id="corpus",
        ),
    ],
)  # fmt: skip
def test_message_fields(data: bytes, fields: dict[str, object]) -> None:
    """Each datagram gives one `message` event with version, mode name, stratum and reference id."""
    events = NtpParser().feed(C2S, data)
    assert [e.kind for e in events] == ["message"]
    assert {k: events[0].fields[k] for k in fields} == fields


@pytest.mark.parametrize(
    ("data", "message"),
    [
        pytest.param(b"", "empty", id="empty"),
        pytest.param(hx.NTP_CLIENT[:30], "shorter than the 48-byte header", id="short-client"),
        pytest.param(hx.NTP_CONTROL[:8], "shorter than its 12-byte header", id="short-control"),
        pytest.param(hx.NTP_CONTROL[:10] + b"\x00\x40", "overruns", id="control-count-overrun"),
        pytest.param(hx.NTP_CLIENT * 30, "longer than", id="huge"),
    ],
)
def test_malformed(data: bytes, message: str) -> None:
    """Messages too short for their mode raise ProtocolError saying so."""
    with pytest.raises(ProtocolError, match=message):
        parse_ntp(data)


def test_session() -> None:
    """Among other UDP detectors, the corpus datagram and its answer make an `ntp` flow with two events."""
    session = DpiSession(
        ON_123, detectors=[SipDetector(), SyslogDetector(), DhcpDetector(), DnsDetector(), NtpDetector()]
    )
    session.on_datagram(C2S, CORPUS)
    session.on_datagram(S2C, hx.NTP_SERVER)
    assert session.app == "ntp"
    assert [e.fields["mode"] for e in session.events] == ["client", "server"]


@given(st.binary(max_size=1200))
@settings(max_examples=200, deadline=timedelta(milliseconds=500))
def test_random_bytes_only_protocol_error(data: bytes) -> None:
    """Any datagram: an event or ProtocolError, nothing else."""
    with contextlib.suppress(ProtocolError):
        NtpParser().feed(C2S, data)
