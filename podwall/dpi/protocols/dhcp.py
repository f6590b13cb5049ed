"""DHCP (BOOTP with the RFC 2131 magic cookie) and DHCPv6 (RFC 8415) over UDP.

DHCPv4 is recognised by a BOOTP op (1 request, 2 reply), a hardware address length that fits
the 16-byte field, and the magic cookie 0x63825363 at offset 236; DHCPv6 by a message type
1-13 whose options chain parses exactly to the end of the datagram and carries a client or
server identifier. Events report the message type by name, the client's hardware address,
hostname, requested address, server identifier and vendor class.
"""

from __future__ import annotations

from typing import Any, ClassVar

from podwall.core.errors import ProtocolError
from podwall.core.limits import DEFAULT_LIMITS, Limits
from podwall.core.types import PROTO_UDP, Direction, ip_text
from podwall.dpi.base import DetectContext, Detection, L7Event
from podwall.dpi.wire import Reader

__all__ = ["DhcpDetector", "DhcpParser", "looks_like_dhcp", "looks_like_dhcpv6", "parse_dhcp", "parse_dhcpv6"]

APP = "dhcp"
COOKIE = b"\x63\x82\x53\x63"
COOKIE_AT = 236
MAX_TEXT = 256  # characters of a hostname / vendor class kept

MESSAGE_TYPES = {
    1: "DISCOVER", 2: "OFFER", 3: "REQUEST", 4: "DECLINE", 5: "ACK", 6: "NAK", 7: "RELEASE",
    8: "INFORM", 9: "FORCERENEW", 10: "LEASEQUERY", 11: "LEASEUNASSIGNED", 12: "LEASEUNKNOWN",
    13: "LEASEACTIVE", 14: "BULKLEASEQUERY", 15: "LEASEQUERYDONE", 16: "ACTIVELEASEQUERY",
    17: "LEASEQUERYSTATUS", 18: "TLS",
}  # fmt: skip
V6_MESSAGE_TYPES = {
    1: "SOLICIT", 2: "ADVERTISE", 3: "REQUEST", 4: "CONFIRM", 5: "RENEW", 6: "REBIND", 7: "REPLY",
    8: "RELEASE", 9: "DECLINE", 10: "RECONFIGURE", 11: "INFORMATION-REQUEST", 12: "RELAY-FORW",
    13: "RELAY-REPL",
}  # fmt: skip
OPT_PAD, OPT_END = 0, 255
OPT_HOSTNAME, OPT_REQUESTED_IP, OPT_MESSAGE_TYPE, OPT_SERVER_ID, OPT_VENDOR_CLASS, OPT_CLIENT_ID = (
    12,
    50,
    53,
    54,
    60,
    61,
)
V6_CLIENT_ID, V6_SERVER_ID, V6_ELAPSED, V6_RELAY_MSG, V6_VENDOR_CLASS, V6_FQDN = 1, 2, 8, 9, 16, 39
V6_MAX_OPTION = 150  # IANA has assigned codes up to ~145; a larger one is not DHCPv6
V6_RELAY_HEADER = 34  # msg-type, hop-count, link-address, peer-address


def _text(raw: bytes) -> str:
    return raw[:MAX_TEXT].decode("utf-8", "backslashreplace")


def looks_like_dhcp(msg: bytes) -> bool:
    """True when `msg` is a BOOTP message carrying the DHCP magic cookie."""
    return (
        len(msg) >= COOKIE_AT + 4
        and msg[0] in (1, 2)
        and 1 <= msg[2] <= 16
        and msg[3] <= 16  # hops: RFC 1542 relays discard past 16
        and msg[COOKIE_AT : COOKIE_AT + 4] == COOKIE
    )


def _v6_options(r: Reader) -> list[tuple[int, bytes]]:
    options: list[tuple[int, bytes]] = []
    while not r.at_end():
        code = r.u16("option code")
        options.append((code, r.take(r.u16(f"option {code} length"), f"option {code}")))
    return options


def looks_like_dhcpv6(msg: bytes) -> bool:
    """True when `msg` is a DHCPv6 message whose options parse exactly and identify a party."""
    if len(msg) < 8 or not 1 <= msg[0] <= 13:
        return False
    start = V6_RELAY_HEADER if msg[0] >= 12 else 4
    try:
        options = _v6_options(Reader(msg, min(start, len(msg)), what="DHCPv6 options"))
    except ProtocolError:
        return False
    codes = {code for code, _ in options}
    if not codes or max(codes) > V6_MAX_OPTION or 0 in codes:
        return False
    if msg[0] >= 12:
        return V6_RELAY_MSG in codes
    return bool(codes & {V6_CLIENT_ID, V6_SERVER_ID})


def parse_dhcp(msg: bytes) -> dict[str, Any]:
    """Fields of one DHCPv4 message; ProtocolError on a missing cookie or an option overrun."""
    r = Reader(msg, what="DHCP message")
    op = r.u8("op")
    r.u8("htype")
    hlen = r.u8("hlen")
    r.u8("hops")
    xid = r.u32("xid")
    r.skip(4, "secs and flags")
    ciaddr = r.take(4, "ciaddr")
    yiaddr = r.take(4, "yiaddr")
    r.skip(8, "siaddr and giaddr")
    chaddr = r.take(16, "chaddr")
    r.skip(192, "sname and file")
    if r.take(4, "magic cookie") != COOKIE:
        raise ProtocolError("DHCP message: no magic cookie at offset 236")
    if hlen > 16:
        raise ProtocolError(f"DHCP message: hardware address length {hlen} exceeds 16")
    fields: dict[str, Any] = {
        "op": "request" if op == 1 else "reply" if op == 2 else f"op{op}",
        "transaction_id": xid,
        "message_type": None,
        "client_mac": ":".join(f"{b:02x}" for b in chaddr[:hlen]),
        "client_ip": ip_text(ciaddr),
        "your_ip": ip_text(yiaddr),
        "hostname": None,
        "requested_ip": None,
        "server_id": None,
        "vendor_class": None,
        "client_id": None,
    }
    while not r.at_end():
        code = r.u8("option code")
        if code == OPT_PAD:
            continue
        if code == OPT_END:
            break
        length = r.u8(f"option {code} length")
        if length > r.remaining():
            raise ProtocolError(
                f"DHCP option {code}: length {length} overruns the message at offset {r.pos - 2} "
                f"({r.remaining()} bytes left)"
            )
        value = r.take(length, f"option {code}")
        if code == OPT_MESSAGE_TYPE and length == 1:
            fields["message_type"] = MESSAGE_TYPES.get(value[0]) or f"TYPE{value[0]}"
        elif code == OPT_HOSTNAME:
            fields["hostname"] = _text(value)
        elif code in (OPT_REQUESTED_IP, OPT_SERVER_ID) and length == 4:
            fields["requested_ip" if code == OPT_REQUESTED_IP else "server_id"] = ip_text(value)
        elif code == OPT_VENDOR_CLASS:
            fields["vendor_class"] = _text(value)
        elif code == OPT_CLIENT_ID:
            fields["client_id"] = value[:64].hex()
    return fields


def parse_dhcpv6(msg: bytes) -> dict[str, Any]:
    """Fields of one DHCPv6 message (a relay message's own options, not the relayed one's)."""
    r = Reader(msg, what="DHCPv6 message")
    msg_type = r.u8("msg-type")
    fields: dict[str, Any] = {
        "version": 6,
        "message_type": V6_MESSAGE_TYPES.get(msg_type) or f"TYPE{msg_type}",
        "transaction_id": None,
        "client_mac": None,
        "hostname": None,
        "requested_ip": None,
        "vendor_class": None,
        "client_id": None,
        "server_id": None,
    }
    if msg_type >= 12:
        r.skip(V6_RELAY_HEADER - 1, "relay header")
    else:
        fields["transaction_id"] = r.u24("transaction-id")
    for code, value in _v6_options(r):
        if code == V6_CLIENT_ID:
            fields["client_id"] = value[:64].hex()
            # DUID-LLT (1) and DUID-LL (3) with hardware type 1 end in the client's MAC address
            if len(value) >= 10 and value[:4] in (b"\x00\x01\x00\x01", b"\x00\x03\x00\x01"):
                fields["client_mac"] = ":".join(f"{b:02x}" for b in value[-6:])
        elif code == V6_SERVER_ID:
            fields["server_id"] = value[:64].hex()
        elif code == V6_VENDOR_CLASS and len(value) > 6:
            fields["vendor_class"] = _text(value[6:])  # enterprise number, then length-prefixed data
        elif code == V6_FQDN and value:
            fields["hostname"] = _fqdn(value[1:])
    return fields


def _fqdn(raw: bytes) -> str:
    """A DNS wire-format name (RFC 4704 client FQDN option) as dotted text."""
    labels: list[str] = []
    r = Reader(raw, what="DHCPv6 FQDN")
    while not r.at_end():
        length = r.u8("label length")
        if length == 0:
            break
        labels.append(_text(r.take(length, "label")))
    return ".".join(labels)


class DhcpParser:
    """Sans-IO DHCP parser: one `message` event per datagram, v4 or v6 as the flow's first one was."""

    finished: bool = False

    def __init__(self, limits: Limits = DEFAULT_LIMITS) -> None:
        self._v6: bool | None = None
        self._limits = limits

    def server_name(self) -> str | None:
        return None

    def feed(self, direction: Direction, data: bytes) -> list[L7Event]:
        if self._v6 is None:
            # a cookie at offset 236 is what DHCPv4 is; anything else (after detection) is v6
            self._v6 = not (len(data) >= COOKIE_AT + 4 and data[COOKIE_AT : COOKIE_AT + 4] == COOKIE)
        fields = parse_dhcpv6(data) if self._v6 else parse_dhcp(data)
        return [L7Event(APP, "message", direction, fields)]


class DhcpDetector:
    """Names a UDP flow `dhcp` by the BOOTP header and magic cookie, or a well-formed DHCPv6 message."""

    name: ClassVar[str] = APP
    transports: ClassVar[frozenset[int]] = frozenset({PROTO_UDP})
    ports: ClassVar[frozenset[int]] = frozenset({67, 68, 546, 547})

    def __init__(self, limits: Limits = DEFAULT_LIMITS) -> None:
        self._limits = limits

    def detect(self, direction: Direction, data: bytes, ctx: DetectContext) -> Detection:
        if looks_like_dhcp(data) or looks_like_dhcpv6(data):
            return Detection.MATCH
        return Detection.NO

    def parser(self, ctx: DetectContext) -> DhcpParser:
        return DhcpParser(self._limits)
