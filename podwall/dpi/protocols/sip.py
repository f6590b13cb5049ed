"""SIP (RFC 3261) over UDP and TCP: requests and responses with the dialog-identifying headers.

A request line is `METHOD SP Request-URI SP SIP/2.0` with a known method and a sip:, sips:
or tel: URI; a status line is `SIP/2.0 SP 3DIGIT SP reason`. Requiring `SIP/2.0` keeps SIP
apart from HTTP (whose detector requires HTTP/1.x). Over UDP each datagram holds one message;
over TCP messages are framed by their Content-Length (RFC 3261 18.3) and CRLF keep-alives
between them are skipped. Header names are matched case-insensitively, compact forms too.
"""

from __future__ import annotations

import re
from typing import Any, ClassVar

from podwall.core.errors import ProtocolError
from podwall.core.limits import DEFAULT_LIMITS, Limits
from podwall.core.types import PROTO_TCP, PROTO_UDP, Direction
from podwall.dpi.base import DetectContext, Detection, L7Event
from podwall.dpi.wire import StreamBuffer

__all__ = ["METHODS", "SipDetector", "SipParser", "parse_head"]

APP = "sip"
MAX_VALUE = 256  # characters of a header value kept in an event
MAX_BODY = 1 << 24  # a Content-Length beyond this is not a SIP body

METHODS = frozenset(
    {"INVITE", "REGISTER", "OPTIONS", "BYE", "ACK", "CANCEL", "SUBSCRIBE", "NOTIFY", "MESSAGE", "INFO",
     "PRACK", "UPDATE", "REFER", "PUBLISH"}
)  # fmt: skip
_MAX_METHOD = max(len(m) for m in METHODS)
_COMPACT = {"v": "via", "f": "from", "t": "to", "i": "call-id", "l": "content-length", "m": "contact",
            "c": "content-type", "k": "supported", "s": "subject", "e": "content-encoding"}  # fmt: skip
_REQUEST_LINE = re.compile(rb"([A-Z]{2,16}) ((?:sips?|tel):[\x21-\x7e]{1,2048}) SIP/2\.0")
_STATUS_LINE = re.compile(rb"SIP/2\.0 ([1-6][0-9]{2})(?: ([^\x00-\x08\x0a-\x1f\x7f]*))?")
_CSEQ = re.compile(r"\s*([0-9]{1,10})\s+([A-Za-z]+)\s*")
_URI_HOST = re.compile(r"sips?:(?:[^@;?>]*@)?(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+)")
_STATUS_PREFIX = b"SIP/2.0 "


def _value(raw: str) -> str:
    return raw.strip()[:MAX_VALUE]


def parse_head(head: bytes) -> tuple[dict[str, Any], int | None]:
    """Fields of a start line and headers (without the blank line), and the Content-Length if any."""
    lines = head.split(b"\n")
    start = lines[0].rstrip(b"\r")
    fields: dict[str, Any] = {}
    req = _REQUEST_LINE.fullmatch(start)
    if req is not None:
        method = req[1].decode("ascii")
        if method not in METHODS:
            raise ProtocolError(f"SIP: unknown method {method!r}")
        fields.update(method=method, uri=req[2].decode("ascii"))
    else:
        status = _STATUS_LINE.fullmatch(start)
        if status is None:
            raise ProtocolError(f"SIP: not a request or status line: {start[:64]!r}")
        fields.update(status=int(status[1]), reason=(status[2] or b"").decode("utf-8", "backslashreplace"))
    headers: dict[str, str] = {}
    name = ""
    for raw in lines[1:]:
        line = raw.rstrip(b"\r").decode("utf-8", "backslashreplace")
        if line[:1] in (" ", "\t") and name:
            headers[name] = headers[name] + " " + line.strip()  # header folding (RFC 3261 7.3.1)
            continue
        colon = line.find(":")
        if colon <= 0:
            raise ProtocolError(f"SIP: malformed header line {line[:64]!r}")
        name = line[:colon].strip().lower()
        name = _COMPACT.get(name, name)
        value = line[colon + 1 :].strip()
        # only the first of repeated headers (Via, ...) is kept
        headers.setdefault(name, value)
    length: int | None = None
    if "content-length" in headers:
        text = headers["content-length"]
        if not text.isdigit() or int(text) > MAX_BODY:
            raise ProtocolError(f"SIP: invalid Content-Length {text[:20]!r}")
        length = int(text)
    cseq = _CSEQ.fullmatch(headers.get("cseq", ""))
    common = {
        "from": _value(headers["from"]) if "from" in headers else None,
        "to": _value(headers["to"]) if "to" in headers else None,
        "call_id": _value(headers["call-id"]) if "call-id" in headers else None,
        "cseq": int(cseq[1]) if cseq else None,
        "cseq_method": cseq[2].upper() if cseq else None,
        "via": _value(headers["via"]) if "via" in headers else None,
        "user_agent": _value(headers["user-agent"]) if "user-agent" in headers else None,
        "server": _value(headers["server"]) if "server" in headers else None,
        "content_type": _value(headers["content-type"]) if "content-type" in headers else None,
        "content_length": length,
    }
    fields.update(common)
    return fields, length


def _event(direction: Direction, head: bytes) -> tuple[L7Event, int | None]:
    fields, length = parse_head(head)
    return L7Event(APP, "request" if "method" in fields else "response", direction, fields), length


def _start_line_verdict(data: bytes) -> Detection:
    """MATCH on a complete SIP start line, NEED_MORE on a prefix of one, NO otherwise."""
    end = data.find(b"\n")
    line = data if end < 0 else data[:end].rstrip(b"\r")
    if line.startswith(b"SIP/"):
        if end < 0:
            if len(line) < len(_STATUS_PREFIX) + 4:
                return Detection.NEED_MORE if (_STATUS_PREFIX + b"000 ").startswith(line[:8]) else Detection.NO
            return Detection.MATCH if _STATUS_LINE.match(line) and line[11:12] == b" " else Detection.NO
        return Detection.MATCH if _STATUS_LINE.fullmatch(line) else Detection.NO
    if len(_STATUS_PREFIX) > len(line) and _STATUS_PREFIX.startswith(line):
        return Detection.NEED_MORE
    space = line.find(b" ")
    if space < 0:
        if len(line) > _MAX_METHOD or not any(m.encode().startswith(line) for m in METHODS):
            return Detection.NO
        return Detection.NEED_MORE
    if line[:space].decode("ascii", "replace") not in METHODS:
        return Detection.NO
    if end >= 0:
        return Detection.MATCH if _REQUEST_LINE.fullmatch(line) else Detection.NO
    rest = line[space + 1 :]
    if not any(rest.startswith(p) or p.startswith(rest) for p in (b"sip:", b"sips:", b"tel:")):
        return Detection.NO
    second = rest.find(b" ")
    if second < 0:
        return Detection.NEED_MORE if len(rest) <= 2060 and b"\t" not in rest else Detection.NO
    tail = rest[second + 1 :]
    if not (tail.startswith(b"SIP/2.0") or b"SIP/2.0".startswith(tail)):
        return Detection.NO
    return Detection.NEED_MORE if len(tail) <= 8 else Detection.NO


class _Side:
    __slots__ = ("body_left", "stream")

    def __init__(self, cap: int, what: str) -> None:
        self.stream = StreamBuffer(cap, what)
        self.body_left = 0


class SipParser:
    """Sans-IO SIP parser: `request` / `response` events; TCP messages framed by Content-Length."""

    finished: bool = False

    def __init__(self, ctx: DetectContext, limits: Limits = DEFAULT_LIMITS) -> None:
        self._tcp = ctx.proto == PROTO_TCP
        self._sides = (_Side(limits.parser_buffer, "SIP client header block"),
                       _Side(limits.parser_buffer, "SIP server header block"))  # fmt: skip
        self._host: str | None = None

    def server_name(self) -> str | None:
        """The host of the first request's URI (a domain or an address)."""
        return self._host

    def _note(self, event: L7Event) -> L7Event:
        if self._host is None and event.kind == "request":
            m = _URI_HOST.match(event.fields["uri"])
            if m is not None:
                self._host = m[1].lower()
        return event

    def feed(self, direction: Direction, data: bytes) -> list[L7Event]:
        if not self._tcp:
            return self._datagram(direction, data)
        side = self._sides[direction]
        stream = side.stream
        stream.append(data)
        buf = stream.buf
        out: list[L7Event] = []
        while stream.pos < len(buf):
            if side.body_left:
                take = min(side.body_left, len(buf) - stream.pos)
                stream.pos += take
                side.body_left -= take
                continue
            pos = stream.pos
            if buf[pos] in b"\r\n":
                stream.pos += 1  # CRLF keep-alives (RFC 5626 4.4.1) and blank lines between messages
                continue
            end = buf.find(b"\r\n\r\n", pos)
            bare = buf.find(b"\n\n", pos)
            if bare >= 0 and (end < 0 or bare < end):
                end, gap = bare, 2
            else:
                gap = 4
            if end < 0:
                if len(buf) - pos > stream.cap:
                    raise ProtocolError(f"{stream.what} exceeds {stream.cap} bytes without completing")
                break
            event, length = _event(direction, bytes(buf[pos:end]))
            if length is None:
                raise ProtocolError("SIP over TCP: message without Content-Length")
            out.append(self._note(event))
            stream.pos = end + gap
            side.body_left = length
        stream.compact()
        return out

    def _datagram(self, direction: Direction, data: bytes) -> list[L7Event]:
        if not data.strip(b"\r\n"):
            return []  # keep-alive
        end = data.find(b"\r\n\r\n")
        head = data if end < 0 else data[:end]
        event, length = _event(direction, head.rstrip(b"\r\n"))
        if length is not None and end >= 0 and length > len(data) - end - 4:
            raise ProtocolError(f"SIP over UDP: Content-Length {length} exceeds the datagram's body")
        return [self._note(event)]


class SipDetector:
    """Names a flow `sip` by a SIP/2.0 request line with a known method, or a SIP/2.0 status line."""

    name: ClassVar[str] = APP
    transports: ClassVar[frozenset[int]] = frozenset({PROTO_UDP, PROTO_TCP})
    ports: ClassVar[frozenset[int]] = frozenset({5060, 5061})

    def __init__(self, limits: Limits = DEFAULT_LIMITS) -> None:
        self._limits = limits

    def detect(self, direction: Direction, data: bytes, ctx: DetectContext) -> Detection:
        if ctx.proto == PROTO_TCP:
            stripped = data.lstrip(b"\r\n")
            if not stripped:
                return Detection.NEED_MORE if len(data) <= 8 else Detection.NO
            return _start_line_verdict(stripped)
        verdict = _start_line_verdict(data)
        return Detection.MATCH if verdict is Detection.MATCH and b"\n" in data else Detection.NO

    def parser(self, ctx: DetectContext) -> SipParser:
        return SipParser(ctx, self._limits)
