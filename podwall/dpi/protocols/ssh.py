"""SSH: detection by the version banner, and a parser of both banners and both KEXINIT messages.

Each side first sends `SSH-protoversion-softwareversion [SP comments] CRLF` (RFC 4253 4.2);
a server may send a few text lines before it. Then come binary packets
(`uint32 packet_length | byte padding_length | payload | padding`), clear until the key
exchange ends; the parser reads each side's KEXINIT (message 20) for the algorithm lists
and is finished once both are seen, since everything after is encrypted. SSH-1 sides
(`SSH-1.5`) have a different packet format: only their banner is reported.
"""

from __future__ import annotations

import re
from typing import Any, ClassVar

from podwall.core.errors import ProtocolError
from podwall.core.limits import DEFAULT_LIMITS, Limits
from podwall.core.types import PROTO_TCP, Direction
from podwall.dpi.base import DetectContext, Detection, L7Event
from podwall.dpi.protocols.textline import LineBuffer, is_text, text
from podwall.dpi.wire import Reader

__all__ = ["SshDetector", "SshParser"]

APP = "ssh"
MAX_BANNER = 255  # RFC 4253: the version line including CRLF
MAX_PRE_LINES = 8  # text lines a server may send before its banner
MAX_PACKET = 35000  # RFC 4253 6.1: packets every implementation must accept (and about what they send)
MAX_PACKETS_BEFORE_KEXINIT = 4
MAX_NAMES = 64  # algorithm names kept per list
MSG_KEXINIT = 20

_BANNER = re.compile(rb"SSH-(\d{1,3}\.\d{1,3})-([\x21-\x7e]*)(?: (.*))?")
_BANNER_HEAD = re.compile(rb"SSH-\d{1,3}\.\d{1,3}-")
_KEXINIT_LISTS = (
    "kex_algorithms",
    "host_key_algorithms",
    "ciphers_c2s",
    "ciphers_s2c",
    "macs_c2s",
    "macs_s2c",
    "compression_c2s",
    "compression_s2c",
    "languages_c2s",
    "languages_s2c",
)


def _banner_prefix(line: bytes) -> Detection:
    """MATCH once `SSH-<digits>.<digits>-` is complete, NEED_MORE on a prefix of that, else NO."""
    if _BANNER_HEAD.match(line):
        return Detection.MATCH
    if re.fullmatch(rb"S(S(H(-(\d{1,3}(\.(\d{1,3})?)?)?)?)?)?", line):
        return Detection.NEED_MORE
    return Detection.NO


class SshDetector:
    """Matches an SSH version banner from either side (a server's may follow a few text lines)."""

    name: ClassVar[str] = APP
    transports: ClassVar[frozenset[int]] = frozenset({PROTO_TCP})
    ports: ClassVar[frozenset[int]] = frozenset({22, 2222})

    def __init__(self, limits: Limits = DEFAULT_LIMITS) -> None:
        self._limits = limits

    def detect(self, direction: Direction, data: bytes, ctx: DetectContext) -> Detection:
        if not data:
            return Detection.NEED_MORE
        if direction == Direction.C2S:
            return _banner_prefix(data[:16])
        pos = 0
        for _ in range(MAX_PRE_LINES + 1):
            nl = data.find(b"\n", pos, pos + MAX_BANNER)
            line = data[pos : len(data) if nl < 0 else nl]
            verdict = _banner_prefix(line[:16])
            if verdict is not Detection.NO:
                return verdict
            if not is_text(line.rstrip(b"\r")) or line.startswith(b"SSH-"):
                return Detection.NO
            if nl < 0:
                return Detection.NEED_MORE if len(line) < MAX_BANNER else Detection.NO
            pos = nl + 1
        return Detection.NO

    def parser(self, ctx: DetectContext) -> SshParser:
        return SshParser(self._limits)


class _Side:
    """One direction: banner, then packets up to KEXINIT, then done."""

    __slots__ = ("buf", "done", "packets", "pre_lines", "state")

    def __init__(self, cap: int, what: str) -> None:
        self.buf = LineBuffer(min(cap, MAX_BANNER * 4), what)
        self.state = "banner"
        self.pre_lines = 0
        self.packets = 0
        self.done = False


class SshParser:
    """Sans-IO SSH parser for one connection: `banner` and `kexinit` events of each side."""

    def __init__(self, limits: Limits = DEFAULT_LIMITS) -> None:
        self._cap = limits.parser_buffer
        self._sides = (
            _Side(limits.parser_buffer, "SSH client banner"),
            _Side(limits.parser_buffer, "SSH server banner"),
        )
        self.finished = False

    def server_name(self) -> str | None:
        return None

    def feed(self, direction: Direction, data: bytes) -> list[L7Event]:
        side = self._sides[direction]
        if not data or side.done:
            return []
        out: list[L7Event] = []
        side.buf.append(data)
        while not side.done:
            if side.state == "banner":
                if not self._banner(side, direction, out):
                    break
            elif not self._packet(side, direction, out):
                break
        if side.done:
            side.buf.clear()
        else:
            side.buf.compact()
        self.finished = self._sides[0].done and self._sides[1].done
        return out

    def _banner(self, side: _Side, direction: Direction, out: list[L7Event]) -> bool:
        line = side.buf.next_line()
        if line is None:
            return False
        match = _BANNER.fullmatch(line)
        if match is None:
            if direction == Direction.C2S or line.startswith(b"SSH-"):
                raise ProtocolError(f"SSH: invalid version banner {line[:40]!r}")
            side.pre_lines += 1
            if side.pre_lines > MAX_PRE_LINES:
                raise ProtocolError(f"SSH: more than {MAX_PRE_LINES} lines before the server banner")
            return True
        version = match.group(1).decode()
        comments = match.group(3)
        fields: dict[str, Any] = {
            "side": "client" if direction == Direction.C2S else "server",
            "proto_version": version,
            "software": text(match.group(2)),
            "comments": None if comments is None else text(comments),
        }
        out.append(L7Event(APP, "banner", direction, fields))
        if version.startswith("1.") and version != "1.99":
            side.done = True  # SSH-1 packets are framed differently and carry no KEXINIT
        else:
            side.state = "packets"
            side.buf.stream.cap = self._cap
        return True

    def _packet(self, side: _Side, direction: Direction, out: list[L7Event]) -> bool:
        head = side.buf.peek(5)
        if len(head) < 5:
            return False
        length = int.from_bytes(head[:4], "big")
        padding = head[4]
        if not 1 + padding < length <= MAX_PACKET or length > self._cap:
            raise ProtocolError(f"SSH: bad packet length {length} (padding {padding})")
        if side.buf.available() < 4 + length:
            return False
        packet = side.buf.take(4 + length)
        side.packets += 1
        if packet[5] == MSG_KEXINIT:
            reader = Reader(packet, 6, 4 + length - padding, "SSH KEXINIT")
            out.append(L7Event(APP, "kexinit", direction, _kexinit(reader)))
            side.done = True
        elif side.packets >= MAX_PACKETS_BEFORE_KEXINIT:
            raise ProtocolError(f"SSH: no KEXINIT in the first {MAX_PACKETS_BEFORE_KEXINIT} packets")
        return True


def _kexinit(reader: Reader) -> dict[str, Any]:
    reader.skip(16, "cookie")
    fields: dict[str, Any] = {}
    for name in _KEXINIT_LISTS:
        raw = reader.take(reader.u32(f"{name} length"), name)
        if not is_text(raw) or b" " in raw:
            raise ProtocolError(f"SSH KEXINIT: {name} is not a name-list")
        fields[name] = [text(n, 64) for n in raw.split(b",")[:MAX_NAMES]] if raw else []
    fields["first_kex_follows"] = reader.u8("first_kex_packet_follows") != 0
    reader.skip(4, "reserved")
    return fields
