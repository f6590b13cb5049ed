"""DHCP detection and parsing: BOOTP with the magic cookie, options, DHCPv6, the fuzzed corpus packet."""

from __future__ import annotations

import contextlib
from datetime import timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from podwall.core.errors import ProtocolError
from podwall.core.types import PROTO_UDP, Direction
from podwall.dpi.base import DetectContext, Detection
from podwall.dpi.protocols.dhcp import DhcpDetector, DhcpParser, looks_like_dhcpv6, parse_dhcp
from podwall.dpi.protocols.dns import DnsDetector
from podwall.dpi.protocols.ntp import NtpDetector
from podwall.dpi.session import DpiSession

from .fixtures import handmade as hm
from .fixtures import handmade_misc as hx
from .fixtures import load_chunks

C2S, S2C = Direction.C2S, Direction.S2C
ON_67 = DetectContext(PROTO_UDP, 68, 67)
ON_547 = DetectContext(PROTO_UDP, 546, 547)
ON_9999 = DetectContext(PROTO_UDP, 40000, 9999)
FUZZ = load_chunks("dhcp_fuzz")[0][1]


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        pytest.param(hx.DHCP_DISCOVER, Detection.MATCH, id="discover"),
        pytest.param(hx.DHCP_ACK, Detection.MATCH, id="ack"),
        pytest.param(FUZZ, Detection.MATCH, id="corpus-fuzzed-but-cookie"),
        pytest.param(hx.DHCPV6_SOLICIT, Detection.MATCH, id="dhcpv6-solicit"),
        pytest.param(hx.DHCP_DISCOVER[:239], Detection.NO, id="cut-before-cookie"),
        pytest.param(hx.DHCP_DISCOVER[:236] + b"\x63\x82\x53\x64", Detection.NO, id="wrong-cookie"),
        pytest.param(b"\x03" + hx.DHCP_DISCOVER[1:], Detection.NO, id="bad-op"),
        pytest.param(hx.DHCP_DISCOVER[:2] + b"\x20" + hx.DHCP_DISCOVER[3:], Detection.NO, id="hlen-32"),
        pytest.param(hx.DHCPV6_SOLICIT + b"\x00", Detection.NO, id="dhcpv6-trailing-byte"),
        pytest.param(b"\x0e" + hx.DHCPV6_SOLICIT[1:], Detection.NO, id="dhcpv6-type-14"),
        pytest.param(hx.DHCPV6_SOLICIT[:4] + hx.dhcpv6_option(8, b"\0\0"), Detection.NO, id="dhcpv6-no-duid"),
        pytest.param(hm.dns_query(), Detection.NO, id="dns-query-is-not-dhcp"),
        pytest.param(hm.HTTP_GET, Detection.NO, id="http-request-is-not-dhcp"),
        pytest.param(bytes(300), Detection.NO, id="zeros"),
    ],
)
def test_detect(data: bytes, expected: Detection) -> None:
    """The magic cookie at 236 after a BOOTP header, or a DHCPv6 message that parses exactly, decide DHCP."""
    assert DhcpDetector().detect(C2S, data, ON_67) is expected


def test_non_standard_port() -> None:
    """DHCP on a non-standard port is still DHCP."""
    assert DhcpDetector().detect(C2S, hx.DHCP_DISCOVER, ON_9999) is Detection.MATCH


@given(st.binary(min_size=4, max_size=300))
@settings(max_examples=300)
def test_random_bytes_are_not_dhcp(data: bytes) -> None:
    """Random datagrams are not DHCP (v4 needs the cookie; v6 an exact option chain with a DUID)."""
    assert DhcpDetector().detect(C2S, data, ON_9999) is Detection.NO or looks_like_dhcpv6(data)


@pytest.mark.parametrize(
    ("data", "fields"),
    [
        pytest.param(
            hx.DHCP_DISCOVER,
            {"message_type": "DISCOVER", "client_mac": "00:11:22:aa:bb:cc", "hostname": "laptop",
             "vendor_class": "MSFT 5.0", "requested_ip": None, "client_id": "01001122aabbcc"},
            id="discover",
        ),
        pytest.param(
            hx.DHCP_REQUEST,
            {"message_type": "REQUEST", "requested_ip": "192.168.1.100", "server_id": "192.168.1.1"},
            id="request-with-pads",
        ),
        pytest.param(hx.DHCP_ACK, {"op": "reply", "message_type": "ACK", "your_ip": "192.168.1.100"}, id="ack"),
    ],
)  # fmt: skip
def test_message_fields(data: bytes, fields: dict[str, object]) -> None:
    """Each datagram gives one `message` event with type name, MAC, hostname, requested IP and vendor class."""
    events = DhcpParser().feed(C2S, data)
    assert [e.kind for e in events] == ["message"]
    assert {k: events[0].fields[k] for k in fields} == fields


def test_dhcpv6_fields() -> None:
    """A DHCPv6 Solicit gives its type, transaction id, the MAC from a DUID-LLT and the FQDN hostname."""
    fields = DhcpParser().feed(C2S, hx.DHCPV6_SOLICIT)[0].fields
    assert (fields["version"], fields["message_type"], fields["transaction_id"]) == (6, "SOLICIT", 0xABCDEF)
    assert (fields["client_mac"], fields["hostname"]) == ("00:11:22:aa:bb:cc", "laptop.example")


def test_fuzzed_corpus_packet() -> None:
    """dhcp-fuzz.pcapng: the cookie makes it DHCP; its fuzzed vendor-class length is a ProtocolError."""
    session = DpiSession(ON_67, detectors=[DnsDetector(), NtpDetector(), DhcpDetector()])
    session.on_datagram(C2S, FUZZ)
    assert session.app == "dhcp"
    assert session.error is not None and "option 60" in session.error


@pytest.mark.parametrize(
    ("data", "message"),
    [
        pytest.param(hx.DHCP_DISCOVER[:200], "truncated", id="truncated-header"),
        pytest.param(hx.DHCP_DISCOVER[:236] + b"abcd", "no magic cookie", id="no-cookie"),
        pytest.param(hx.dhcp_packet(options=b"\x35\x05\x01"), "overruns", id="option-overrun"),
        pytest.param(hx.dhcp_packet(options=b"\x35"), "truncated", id="option-without-length"),
    ],
)
def test_malformed(data: bytes, message: str) -> None:
    """Truncation, a missing cookie and option overruns raise ProtocolError saying what and where."""
    with pytest.raises(ProtocolError, match=message):
        parse_dhcp(data)


def test_v6_parser_follows_the_first_datagram() -> None:
    """A flow that started with DHCPv6 parses later datagrams as DHCPv6, whatever the port."""
    parser = DhcpParser()
    assert parser.feed(C2S, hx.DHCPV6_SOLICIT)[0].fields["version"] == 6
    assert DhcpDetector().detect(C2S, hx.DHCPV6_SOLICIT, ON_547) is Detection.MATCH


@given(st.binary(max_size=600))
@settings(max_examples=200, deadline=timedelta(milliseconds=500))
def test_random_bytes_only_protocol_error(data: bytes) -> None:
    """Any datagram: an event or ProtocolError, nothing else."""
    with contextlib.suppress(ProtocolError):
        DhcpParser().feed(C2S, data)


@given(st.data())
@settings(max_examples=200, deadline=timedelta(milliseconds=500))
def test_mutated_fixtures_only_protocol_error(data: st.DataObject) -> None:
    """Fixtures with a byte changed or cut short: an event or ProtocolError."""
    msg = bytearray(data.draw(st.sampled_from([hx.DHCP_DISCOVER, hx.DHCP_REQUEST, hx.DHCPV6_SOLICIT, FUZZ])))
    msg[data.draw(st.integers(0, len(msg) - 1))] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(msg)))
    with contextlib.suppress(ProtocolError):
        DhcpParser().feed(C2S, bytes(msg[:cut]))
