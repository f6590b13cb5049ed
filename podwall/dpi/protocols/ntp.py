"""NTP (RFC 5905, and the mode 6 control / mode 7 private messages of ntpd) over UDP.

Every datagram is one message. The detector is strict about the first byte (version 1-4,
a known mode) and, for the time-exchange modes 1-5, about the 48-byte header: stratum at
most 16, a poll exponent and precision real clocks use, root delay and dispersion under
256 s, a length made of whole 32-bit words. Events report the version, the mode by name,
the stratum and the reference id.
"""

from __future__ import annotations

from typing import Any, ClassVar

from podwall.core.errors import ProtocolError
from podwall.core.limits import DEFAULT_LIMITS, Limits
from podwall.core.types import PROTO_UDP, Direction
from podwall.dpi.base import DetectContext, Detection, L7Event

__all__ = ["MODE_NAMES", "NtpDetector", "NtpParser", "looks_like_ntp", "parse_ntp"]

APP = "ntp"
HEADER = 48  # RFC 5905 7.3: the fixed part of a mode 1-5 packet
MAX_MESSAGE = 1024  # header, extension fields and MAC: far below this in practice
CONTROL_HEADER = 12  # RFC 1305 appendix B: mode 6 header
PRIVATE_HEADER = 8  # ntpd mode 7 request header

MODE_NAMES = {
    0: "reserved", 1: "symmetric_active", 2: "symmetric_passive", 3: "client", 4: "server",
    5: "broadcast", 6: "control", 7: "private",
}  # fmt: skip
LEAP_NAMES = {0: "none", 1: "add_second", 2: "del_second", 3: "unsynchronized"}


def _signed8(value: int) -> int:
    return value - 256 if value > 127 else value


def _reference_id(stratum: int, raw: bytes) -> str | None:
    """Stratum 0 (kiss code) and 1 (clock source) carry ASCII; above, an IPv4 address or an IPv6 hash."""
    if raw == b"\x00\x00\x00\x00":
        return None
    if stratum <= 1:
        text = raw.rstrip(b"\x00")
        if all(0x20 <= c <= 0x7E for c in text):
            return text.decode("ascii")
        return raw.hex()
    return ".".join(str(b) for b in raw)


def looks_like_ntp(msg: bytes) -> bool:
    """True when `msg` is an NTP message as real clients, servers and ntpq send them."""
    size = len(msg)
    if size < PRIVATE_HEADER or size > MAX_MESSAGE:
        return False
    version = (msg[0] >> 3) & 7
    mode = msg[0] & 7
    if not 1 <= version <= 4 or mode == 0:
        return False
    if mode == 6:
        if size < CONTROL_HEADER or size % 4:
            return False
        opcode = msg[1] & 0x1F
        count = int.from_bytes(msg[10:12], "big")
        # data padded to 32 bits, then at most a key id and a 20-byte digest
        return 1 <= opcode <= 12 and CONTROL_HEADER + count <= size <= CONTROL_HEADER + (count + 3) // 4 * 4 + 24
    if mode == 7:
        # implementation number: 0 universal, 2 xntpd old, 3 xntpd; request codes stop below 64
        items, item_size = int.from_bytes(msg[4:6], "big") & 0xFFF, int.from_bytes(msg[6:8], "big")
        return msg[2] in (0, 2, 3) and msg[3] < 64 and item_size < 0x1000 and 8 + items * item_size <= size
    if size < HEADER or size % 4:
        return False
    stratum, poll, precision = msg[1], _signed8(msg[2]), _signed8(msg[3])
    if stratum > 16 or not 0 <= poll <= 17:
        return False
    # root delay and root dispersion (16.16 seconds) stay far below 256 s; the top byte is zero
    if msg[4] or msg[8]:
        return False
    if mode == 3:
        return -32 <= precision <= 0  # an unset precision (0) is common in client requests
    # a server or peer always states its clock's precision; unsynchronized (LI 3) goes with stratum 0 or 16
    if not -32 <= precision < 0 or (msg[0] >> 6 == 3 and stratum not in (0, 16)):
        return False
    # stratum 0 carries a kiss code: upper-case ASCII
    return stratum != 0 or all(0x41 <= c <= 0x5A or c == 0 for c in msg[12:16])


def parse_ntp(msg: bytes) -> dict[str, Any]:
    """Fields of one NTP message; ProtocolError when it is too short for its mode."""
    if not msg:
        raise ProtocolError("NTP: empty datagram")
    version = (msg[0] >> 3) & 7
    mode = msg[0] & 7
    fields: dict[str, Any] = {
        "version": version,
        "mode": MODE_NAMES[mode],
        "leap": LEAP_NAMES[msg[0] >> 6],
        "stratum": None,
        "reference_id": None,
    }
    if len(msg) > MAX_MESSAGE:
        raise ProtocolError(f"NTP: message of {len(msg)} bytes is longer than {MAX_MESSAGE}")
    if mode == 6:
        if len(msg) < CONTROL_HEADER:
            raise ProtocolError(f"NTP control message: {len(msg)} bytes, shorter than its 12-byte header")
        count = int.from_bytes(msg[10:12], "big")
        if CONTROL_HEADER + count > len(msg):
            raise ProtocolError(f"NTP control message: data count {count} overruns {len(msg)} bytes")
        fields["response"] = bool(msg[1] & 0x80)
        fields["opcode"] = msg[1] & 0x1F
        fields["sequence"] = int.from_bytes(msg[2:4], "big")
        return fields
    if mode == 7:
        if len(msg) < PRIVATE_HEADER:
            raise ProtocolError(f"NTP private message: {len(msg)} bytes, shorter than its 8-byte header")
        fields["response"] = bool(msg[0] & 0x80)
        fields["request_code"] = msg[3]
        return fields
    if len(msg) < HEADER:
        raise ProtocolError(f"NTP {MODE_NAMES[mode]} message: {len(msg)} bytes, shorter than the 48-byte header")
    stratum = msg[1]
    fields["stratum"] = stratum
    fields["poll"] = _signed8(msg[2])
    fields["precision"] = _signed8(msg[3])
    fields["reference_id"] = _reference_id(stratum, msg[12:16])
    fields["transmit_timestamp"] = int.from_bytes(msg[40:48], "big")
    return fields


class NtpParser:
    """Sans-IO NTP parser: one `message` event per datagram."""

    finished: bool = False

    def __init__(self, limits: Limits = DEFAULT_LIMITS) -> None:
        self._limits = limits

    def server_name(self) -> str | None:
        return None

    def feed(self, direction: Direction, data: bytes) -> list[L7Event]:
        return [L7Event(APP, "message", direction, parse_ntp(data))]


class NtpDetector:
    """Names a UDP flow `ntp` when its first datagram is a well-formed NTP message."""

    name: ClassVar[str] = APP
    transports: ClassVar[frozenset[int]] = frozenset({PROTO_UDP})
    ports: ClassVar[frozenset[int]] = frozenset({123})

    def __init__(self, limits: Limits = DEFAULT_LIMITS) -> None:
        self._limits = limits

    def detect(self, direction: Direction, data: bytes, ctx: DetectContext) -> Detection:
        return Detection.MATCH if looks_like_ntp(data) else Detection.NO

    def parser(self, ctx: DetectContext) -> NtpParser:
        return NtpParser(self._limits)
