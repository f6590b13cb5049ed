"""Syslog (RFC 5424 and the BSD format of RFC 3164) over UDP, and over TCP (RFC 6587 framing).

A message starts with `<PRI>` (0..191, no leading zeros). RFC 5424 follows with version `1`,
an ISO timestamp or `-`, then hostname, app-name, procid and msgid; RFC 3164 with
`Mmm dd hh:mm:ss` and a hostname, then `tag[pid]:`. Detection insists on one of the two
headers. Over TCP, messages are either octet-counted (`123 <PRI>...`) or end at a newline
(or NUL); the first message decides which. Events carry facility and severity by name.
"""

from __future__ import annotations

import re
from typing import Any, ClassVar

from podwall.core.errors import ProtocolError
from podwall.core.limits import DEFAULT_LIMITS, Limits
from podwall.core.types import PROTO_TCP, PROTO_UDP, Direction
from podwall.dpi.base import DetectContext, Detection, L7Event
from podwall.dpi.wire import StreamBuffer

__all__ = ["FACILITIES", "SEVERITIES", "SyslogDetector", "SyslogParser", "parse_syslog"]

APP = "syslog"
MAX_TEXT = 256  # characters of the free-form message kept in an event
MAX_COUNT_DIGITS = 9  # an octet count longer than this is not syslog framing

FACILITIES = (
    "kern", "user", "mail", "daemon", "auth", "syslog", "lpr", "news", "uucp", "cron", "authpriv",
    "ftp", "ntp", "audit", "alert", "clock", "local0", "local1", "local2", "local3", "local4",
    "local5", "local6", "local7",
)  # fmt: skip
SEVERITIES = ("emerg", "alert", "crit", "err", "warning", "notice", "info", "debug")

_PRI = re.compile(rb"<(0|[1-9][0-9]{0,2})>")
# RFC 5424 6.2: VERSION SP TIMESTAMP SP HOSTNAME SP APP-NAME SP PROCID SP MSGID (fields are PRINTUSASCII)
_HEADER_5424 = re.compile(
    rb"([1-9][0-9]{0,2}) "
    rb"(-|[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]{1,6})?(?:Z|[+-][0-9]{2}:[0-9]{2})) "
    rb"([\x21-\x7e]{1,255}) ([\x21-\x7e]{1,48}) ([\x21-\x7e]{1,128}) ([\x21-\x7e]{1,32})(?: |$)"
)
_MONTHS = b"Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec"
# RFC 3164 4.1.2: TIMESTAMP ("Mmm dd hh:mm:ss", day space-padded) SP HOSTNAME SP; some senders add a year
_HEADER_3164 = re.compile(
    rb"((?:" + _MONTHS + rb") (?:[ 1-3][0-9]) [0-2][0-9]:[0-5][0-9]:[0-6][0-9](?: [0-9]{4})?) "
    rb"([\x21-\x7e]{1,255})(?: |$)"
)
_TAG = re.compile(rb"([A-Za-z0-9_./-]{1,48})(?:\[([0-9A-Za-z_-]{1,32})\])?:")
# Lengths for the detector: enough bytes to see a whole header of either format.
_MAX_HEADER = 5 + 4 + 40 + 256 + 49 + 129 + 33


def _nil(raw: bytes) -> str | None:
    return None if raw == b"-" else raw.decode("ascii")


def _structured_data(rest: bytes) -> tuple[bytes, str | None]:
    """Split RFC 5424 STRUCTURED-DATA (`-` or `[id k="v"]...`) off the message; ProtocolError if unclosed."""
    if rest[:1] == b"-":
        return rest[2:], None
    pos = 0
    while rest[pos : pos + 1] == b"[":
        pos += 1
        quoted = False
        while True:
            if pos >= len(rest):
                raise ProtocolError("syslog: unterminated STRUCTURED-DATA element")
            c = rest[pos]
            if quoted and c == 0x5C:
                pos += 2
                continue
            pos += 1
            if c == 0x22:
                quoted = not quoted
            elif c == 0x5D and not quoted:
                break
    if pos == 0:
        raise ProtocolError(f"syslog: RFC 5424 STRUCTURED-DATA is neither '-' nor '[...]': {rest[:16]!r}")
    sd = rest[:pos][: MAX_TEXT * 4].decode("utf-8", "backslashreplace")[:MAX_TEXT]
    return rest[pos + 1 :], sd


def parse_syslog(msg: bytes) -> dict[str, Any]:
    """Fields of one syslog message; ProtocolError when its header is neither RFC 5424 nor 3164."""
    pri = _PRI.match(msg)
    if pri is None or int(pri[1]) > 191:
        raise ProtocolError(f"syslog: message does not start with <PRI> (0..191): {msg[:16]!r}")
    value = int(pri[1])
    fields: dict[str, Any] = {
        "pri": value,
        "facility": FACILITIES[value >> 3],
        "severity": SEVERITIES[value & 7],
        "format": None,
        "timestamp": None,
        "hostname": None,
        "app_name": None,
        "procid": None,
        "msgid": None,
        "structured_data": None,
        "message": None,
    }
    rest = pri.end()
    m = _HEADER_5424.match(msg, rest)
    if m is not None:
        if m[1] != b"1":
            raise ProtocolError(f"syslog: RFC 5424 version {m[1].decode()} is not 1")
        fields.update(
            format="5424", timestamp=_nil(m[2]), hostname=_nil(m[3]), app_name=_nil(m[4]), procid=_nil(m[5]),
            msgid=_nil(m[6]),
        )  # fmt: skip
        body, fields["structured_data"] = _structured_data(msg[m.end() :])
        if body.startswith(b"\xef\xbb\xbf"):
            body = body[3:]  # the BOM RFC 5424 6.4 puts before a UTF-8 message
    else:
        m = _HEADER_3164.match(msg, rest)
        if m is None:
            raise ProtocolError(f"syslog: no RFC 5424 or RFC 3164 header after <{value}>: {msg[rest : rest + 24]!r}")
        fields.update(format="3164", timestamp=m[1].decode("ascii"), hostname=m[2].decode("ascii"))
        body = msg[m.end() :]
        tag = _TAG.match(body)
        if tag is not None:
            fields["app_name"] = tag[1].decode("ascii")
            fields["procid"] = tag[2].decode("ascii") if tag[2] else None
            body = body[tag.end() :].lstrip(b" ")
    fields["message"] = body[: MAX_TEXT * 4].decode("utf-8", "backslashreplace")[:MAX_TEXT].rstrip("\r\n\x00")
    return fields


def _header_verdict(msg: bytes, complete: bool) -> Detection:
    """Whether `msg` (the start of one message) opens with a syslog header; NEED_MORE while it might."""
    try:
        parse_syslog(msg)
    except ProtocolError:
        if complete or len(msg) >= _MAX_HEADER:
            return Detection.NO
        return Detection.NEED_MORE if _could_be_prefix(msg) else Detection.NO
    return Detection.MATCH


def _could_be_prefix(msg: bytes) -> bool:
    """A cheap check that more bytes could still complete a header (the PRI part at least)."""
    end = msg.find(b">")
    if end < 0:
        # Nothing yet (an octet count and its space came alone) or a partial PRI.
        return re.fullmatch(rb"(?:<(?:0|[1-9][0-9]{0,2})?)?", msg) is not None
    return _PRI.match(msg) is not None and int(msg[1:end]) <= 191


class _Framer:
    """TCP framing of one direction: octet counting or newline/NUL terminated, fixed by the first message."""

    __slots__ = ("counted", "stream")

    def __init__(self, cap: int) -> None:
        self.stream = StreamBuffer(cap, "syslog message")
        self.counted: bool | None = None

    def messages(self, data: bytes) -> list[bytes]:
        stream = self.stream
        stream.append(data)
        buf = stream.buf
        out: list[bytes] = []
        while stream.pos < len(buf):
            pos = stream.pos
            if self.counted is None:
                if buf[pos] in b"\r\n\x00":
                    stream.pos += 1
                    continue
                self.counted = buf[pos] != 0x3C  # "<"
            if self.counted:
                space = buf.find(b" ", pos, pos + MAX_COUNT_DIGITS + 1)
                if space < 0:
                    if len(buf) - pos > MAX_COUNT_DIGITS:
                        raise ProtocolError(f"syslog over TCP: bad octet count {bytes(buf[pos : pos + 12])!r}")
                    break
                digits = bytes(buf[pos:space])
                if not digits.isdigit() or digits[0] == 0x30:
                    raise ProtocolError(f"syslog over TCP: bad octet count {digits!r}")
                size = int(digits)
                if size > stream.cap:
                    raise ProtocolError(f"syslog over TCP: message of {size} bytes exceeds {stream.cap}")
                if len(buf) - space - 1 < size:
                    break
                out.append(bytes(buf[space + 1 : space + 1 + size]))
                stream.pos = space + 1 + size
            else:
                end = pos
                while end < len(buf) and buf[end] not in b"\n\x00":
                    end += 1
                if end == len(buf):
                    break
                line = bytes(buf[pos:end]).rstrip(b"\r")
                stream.pos = end + 1
                if line:
                    out.append(line)
        stream.compact()
        return out


class SyslogParser:
    """Sans-IO syslog parser: one `message` event per message (per datagram on UDP)."""

    finished: bool = False

    def __init__(self, ctx: DetectContext, limits: Limits = DEFAULT_LIMITS) -> None:
        self._tcp = ctx.proto == PROTO_TCP
        self._framers = (_Framer(limits.parser_buffer), _Framer(limits.parser_buffer))
        self._host: str | None = None

    def server_name(self) -> str | None:
        return None

    def feed(self, direction: Direction, data: bytes) -> list[L7Event]:
        if not self._tcp:
            return [L7Event(APP, "message", direction, parse_syslog(data.rstrip(b"\r\n\x00")))]
        return [L7Event(APP, "message", direction, parse_syslog(m)) for m in self._framers[direction].messages(data)]

    def close(self) -> list[L7Event]:
        """A last newline-framed message cut by the end of the connection still counts."""
        out: list[L7Event] = []
        for direction, framer in zip((Direction.C2S, Direction.S2C), self._framers, strict=True):
            stream = framer.stream
            rest = bytes(stream.buf[stream.pos :])
            if framer.counted is False and rest.strip():
                stream.clear()
                out.append(L7Event(APP, "message", direction, parse_syslog(rest.rstrip(b"\r"))))
        return out


class SyslogDetector:
    """Names a flow `syslog` when its first message has an RFC 5424 or RFC 3164 header."""

    name: ClassVar[str] = APP
    transports: ClassVar[frozenset[int]] = frozenset({PROTO_UDP, PROTO_TCP})
    ports: ClassVar[frozenset[int]] = frozenset({514, 601, 6514})

    def __init__(self, limits: Limits = DEFAULT_LIMITS) -> None:
        self._limits = limits

    def detect(self, direction: Direction, data: bytes, ctx: DetectContext) -> Detection:
        if ctx.proto != PROTO_TCP:
            return _header_verdict(data, complete=True)
        if direction != Direction.C2S:
            return Detection.NO  # syslog servers never speak first (or at all)
        if not data:
            return Detection.NEED_MORE
        if data[0] == 0x3C:
            end = data.find(b"\n")
            return _header_verdict(data if end < 0 else data[:end], complete=end >= 0)
        # octet counting: "<digits> <PRI>..."
        space = data.find(b" ", 0, MAX_COUNT_DIGITS + 1)
        if space < 0:
            return Detection.NEED_MORE if len(data) <= MAX_COUNT_DIGITS and data.isdigit() else Detection.NO
        digits = data[:space]
        if not digits.isdigit() or digits[0] == 0x30:
            return Detection.NO
        body = data[space + 1 : space + 1 + int(digits)]
        return _header_verdict(body, complete=len(body) == int(digits))

    def parser(self, ctx: DetectContext) -> SyslogParser:
        return SyslogParser(ctx, self._limits)
