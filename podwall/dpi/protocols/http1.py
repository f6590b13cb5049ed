"""HTTP/1.x: detection by request or status line, and a sans-IO parser of both directions.

The parser follows RFC 9112 framing: Content-Length, chunked transfer coding (with trailers),
responses delimited by the end of the connection, 1xx interim responses, no body for HEAD,
204 and 304, pipelined requests, and Upgrade/CONNECT, after which the bytes are no longer
HTTP and the parser reports `finished`. It is lenient where servers are (runs of spaces in
the request line, bare LF line ends, empty lines between messages) and strict where
leniency lets requests be smuggled past inspection (conflicting Content-Length, a request
Transfer-Encoding that does not end in chunked, duplicate Host, whitespace before a colon).

One `request` or `response` event is emitted per message when its body is complete, or
earlier when the captured body reaches `BODY_CAPTURE` bytes (the rest is skipped, not held).
"""

from __future__ import annotations

import re
from collections import deque
from typing import Any, ClassVar

from podwall.core.errors import ProtocolError
from podwall.core.limits import DEFAULT_LIMITS, Limits
from podwall.core.types import PROTO_TCP, Direction
from podwall.dpi.base import DetectContext, Detection, L7Event
from podwall.dpi.wire import StreamBuffer

__all__ = ["BODY_CAPTURE", "METHODS", "HttpDetector", "HttpParser"]

APP = "http"
BODY_CAPTURE = 64 * 1024  # body bytes kept per message for inspection (at most Limits.parser_buffer)
MAX_HEADERS_KEPT = 64  # headers listed in an event (all of them are still parsed)
MAX_CHUNK_LINE = 4096  # a chunk-size line (with extensions) longer than this is an attack, not HTTP
_DETECT_LINE = 8192  # request lines longer than this are not taken as HTTP by the detector

METHODS = frozenset(
    {
        # RFC 9110 and PATCH (RFC 5789)
        "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
        # WebDAV (RFC 4918), versioning (RFC 3253), ordering, ACL, binding, search, CalDAV
        "PROPFIND", "PROPPATCH", "MKCOL", "COPY", "MOVE", "LOCK", "UNLOCK",
        "VERSION-CONTROL", "REPORT", "CHECKOUT", "CHECKIN", "UNCHECKOUT", "MKWORKSPACE",
        "UPDATE", "LABEL", "MERGE", "BASELINE-CONTROL", "MKACTIVITY", "ORDERPATCH", "ACL",
        "BIND", "UNBIND", "REBIND", "SEARCH", "MKCALENDAR", "MKREDIRECTREF", "UPDATEREDIRECTREF",
        # widely deployed extensions (cache purge, link)
        "PURGE", "LINK", "UNLINK",
    }
)  # fmt: skip
_METHODS_BYTES = tuple(m.encode() for m in METHODS)
_MAX_METHOD = max(len(m) for m in METHODS)

_TOKEN = rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_TARGET = rb"[\x21-\x7e\x80-\xff]+"
_REQUEST_LINE = re.compile(rb"(" + _TOKEN + rb")[ \t]+(" + _TARGET + rb")[ \t]+HTTP/(\d)\.(\d)[ \t]*")
_REQUEST_REST_PREFIX = re.compile(
    rb"[\x21-\x7e\x80-\xff]*(?:[ \t]+(?:H(?:T(?:T(?:P(?:/(?:1(?:\.(?:\d[ \t]*\r?)?)?)?)?)?)?)?)?)?"
)
_STATUS_LINE = re.compile(rb"HTTP/(\d)\.(\d)[ \t]+(\d{3})(?:[ \t]+([^\x00\r]*?))?[ \t]*")
_HEADER_LINE = re.compile(rb"(" + _TOKEN + rb"):[ \t]*([^\x00\r]*?)[ \t]*")
_CHUNK_SIZE = re.compile(rb"[ \t]*([0-9A-Fa-f]{1,16})[ \t]*(?:;[^\r]*)?")
_BLOCK_END = re.compile(rb"\n\r?\n")
_CL_VALUE = re.compile(r"[0-9]{1,18}")

# States of one direction.
_HEAD, _LENGTH, _CHUNK_LINE, _CHUNK_DATA, _CHUNK_END, _TRAILERS, _UNTIL_CLOSE, _PAUSED, _STOPPED = range(9)
_COUNTED = (_LENGTH, _CHUNK_DATA)  # states that count body bytes (side.remaining)


def _lines(block: bytes) -> list[bytes]:
    lines = block.split(b"\n")
    return [line[:-1] if line.endswith(b"\r") else line for line in lines]


def _parse_headers(lines: list[bytes], kind: str) -> list[tuple[str, str]]:
    headers: list[tuple[str, str]] = []
    for line in lines:
        if line[:1] in (b" ", b"\t"):
            # obs-fold: a continuation of the previous value (RFC 9112 5.2)
            if not headers:
                raise ProtocolError(f"HTTP {kind}: continuation line before any header")
            name, value = headers[-1]
            folded = line.strip(b" \t").decode("latin-1")
            headers[-1] = (name, f"{value} {folded}")
            continue
        m = _HEADER_LINE.fullmatch(line)
        if m is None:
            raise ProtocolError(f"HTTP {kind}: invalid header line {line[:80]!r}")
        headers.append((m.group(1).decode("ascii").lower(), m.group(2).decode("latin-1")))
    return headers


def _content_length(headers: list[tuple[str, str]], kind: str) -> int | None:
    found: int | None = None
    for name, value in headers:
        if name != "content-length":
            continue
        for part in value.split(","):
            text = part.strip()
            if not _CL_VALUE.fullmatch(text):
                raise ProtocolError(f"HTTP {kind}: invalid Content-Length {value!r}")
            number = int(text)
            if found is not None and number != found:
                raise ProtocolError(f"HTTP {kind}: conflicting Content-Length values {found} and {number}")
            found = number
    return found


def _transfer_codings(headers: list[tuple[str, str]]) -> list[str]:
    codings: list[str] = []
    for name, value in headers:
        if name == "transfer-encoding":
            codings.extend(c.strip().lower() for c in value.split(",") if c.strip())
    return codings


def _header(headers: list[tuple[str, str]], name: str) -> str | None:
    for n, v in headers:
        if n == name:
            return v
    return None


def host_without_port(value: str) -> str | None:
    """`example.com:8080` -> `example.com`, `[::1]:80` -> `::1`, lower-cased; None when empty."""
    value = value.strip()
    if value.startswith("["):
        end = value.find("]")
        host = value[1:end] if end > 0 else value[1:]
    else:
        head, sep, tail = value.rpartition(":")
        host = head if sep and (tail.isdigit() or not tail) and ":" not in head else value
    host = host.lower()
    return host or None


def _host_from_target(target: str) -> str | None:
    lowered = target[:8].lower()
    if not (lowered.startswith("http://") or lowered.startswith("https://")):
        return None
    rest = target.split("://", 1)[1]
    authority = re.split(r"[/?#]", rest, maxsplit=1)[0].rpartition("@")[2]
    return host_without_port(authority)


class _Side:
    """Parsing state of one direction (requests from the client, responses from the server)."""

    __slots__ = (
        "body",
        "body_seen",
        "emitted",
        "fields",
        "is_request",
        "kind",
        "remaining",
        "scan",
        "state",
        "stream",
    )

    def __init__(self, is_request: bool, cap: int) -> None:
        self.is_request = is_request
        self.kind = "request" if is_request else "response"
        self.stream = StreamBuffer(cap, f"HTTP {self.kind}")
        self.state = _HEAD
        self.scan = 0  # bytes of the current block already searched for its end, from stream.pos
        self.remaining = 0
        self.fields: dict[str, Any] = {}
        self.body = bytearray()
        self.body_seen = 0
        self.emitted = False


class HttpParser:
    """Sans-IO HTTP/1.x parser for one connection; see the module docstring for its rules."""

    def __init__(self, limits: Limits = DEFAULT_LIMITS) -> None:
        self._limit = limits.parser_buffer
        self._body_cap = min(BODY_CAPTURE, limits.parser_buffer)
        self._client = _Side(True, limits.parser_buffer)
        self._server = _Side(False, limits.parser_buffer)
        self._pending: deque[str] = deque()  # methods of requests still waiting for a final response
        self._server_name: str | None = None
        self.finished = False  # True after a protocol switch (101, CONNECT 2xx): the rest is not HTTP

    def server_name(self) -> str | None:
        return self._server_name

    def feed(self, direction: Direction, data: bytes) -> list[L7Event]:
        side = self._client if direction == Direction.C2S else self._server
        if self.finished or side.state == _STOPPED or not data:
            return []
        side.stream.append(data)
        out: list[L7Event] = []
        self._run(side, out)
        side.stream.compact()
        return out

    def skippable(self, direction: Direction) -> int:
        """Coming bytes of `direction` this parser would count without reading: the rest of a
        Content-Length body or chunk whose capture is full, less its last byte (which completes
        it the usual way); 0 while anything else is pending. A caller that skips them (`skip`)
        saves copying bulk bodies through the parser's buffer."""
        side = self._client if direction == Direction.C2S else self._server
        if side.state not in _COUNTED or len(side.body) < self._body_cap or self.finished:
            return 0
        stream = side.stream
        if len(stream.buf) > stream.pos:
            return 0
        return side.remaining - 1

    def skip(self, direction: Direction, n: int) -> None:
        """Count `n` body bytes (at most `skippable(direction)`) as seen, unread."""
        if n <= 0:
            return
        side = self._client if direction == Direction.C2S else self._server
        # the cheap half of `skippable`'s test on the hot path; the caller asked that one already
        if side.state not in _COUNTED or n >= side.remaining:
            raise ValueError(f"cannot skip {n} bytes here: only {self.skippable(direction)} are skippable")
        side.body_seen += n
        side.remaining -= n

    def close(self) -> list[L7Event]:
        """The connection ended: a response delimited by the close is complete now."""
        out: list[L7Event] = []
        side = self._server
        if side.state == _UNTIL_CLOSE:
            self._complete(side, out)
        side.state = self._client.state = _STOPPED
        return out

    # -- driving -------------------------------------------------------------------------

    def _run(self, side: _Side, out: list[L7Event]) -> None:
        while not self.finished:
            state = side.state
            if state == _HEAD:
                progressed = self._head(side, out)
            elif state in (_LENGTH, _CHUNK_DATA):
                progressed = self._counted_body(side, out)
            elif state == _CHUNK_LINE:
                progressed = self._chunk_line(side)
            elif state == _CHUNK_END:
                progressed = self._chunk_end(side)
            elif state == _TRAILERS:
                progressed = self._trailers(side, out)
            elif state == _UNTIL_CLOSE:
                stream = side.stream
                self._capture(side, stream.buf, stream.pos, len(stream.buf), out)
                stream.pos = len(stream.buf)
                progressed = False
            elif state == _STOPPED:
                side.stream.clear()
                progressed = False
            else:  # _PAUSED: keep the bytes until the response says whether the protocol switched
                progressed = False
            if not progressed:
                return

    def _block(self, side: _Side, what: str) -> bytes | None:
        """The next header/trailer block (without its final empty line), once complete."""
        stream = side.stream
        buf, pos = stream.buf, stream.pos
        m = _BLOCK_END.search(buf, pos + side.scan)
        if m is None:
            if len(buf) - pos > self._limit:
                raise ProtocolError(f"HTTP {side.kind}: {what} exceeds {self._limit} bytes")
            side.scan = max(0, len(buf) - pos - 2)
            return None
        if m.end() - pos > self._limit:
            raise ProtocolError(f"HTTP {side.kind}: {what} exceeds {self._limit} bytes")
        block = bytes(buf[pos : m.start()])
        stream.pos = m.end()
        side.scan = 0
        return block

    # -- message heads -------------------------------------------------------------------

    def _head(self, side: _Side, out: list[L7Event]) -> bool:
        stream = side.stream
        if side.scan == 0:
            # RFC 9112 2.2: tolerate empty lines before a start line
            buf, pos, end = stream.buf, stream.pos, len(stream.buf)
            while pos < end and buf[pos] in (10, 13):
                pos += 1
            stream.pos = pos
            if pos == end:
                return False
        block = self._block(side, "header block")
        if block is None:
            return False
        lines = _lines(block)
        if side.is_request:
            self._request_head(side, lines, out)
        else:
            self._response_head(side, lines, out)
        return True

    def _start(self, side: _Side, fields: dict[str, Any]) -> None:
        side.fields = fields
        side.body = bytearray()
        side.body_seen = 0
        side.emitted = False

    def _request_head(self, side: _Side, lines: list[bytes], out: list[L7Event]) -> None:
        m = _REQUEST_LINE.fullmatch(lines[0])
        if m is None:
            raise ProtocolError(f"HTTP request: invalid request line {lines[0][:80]!r}")
        if m.group(3) != b"1":
            raise ProtocolError(f"HTTP request: unsupported version HTTP/{m.group(3).decode()}.{m.group(4).decode()}")
        method = m.group(1).decode("ascii")
        target = m.group(2).decode("latin-1")
        headers = _parse_headers(lines[1:], "request")
        hosts = {v.strip().lower() for n, v in headers if n == "host"}
        if len(hosts) > 1:
            raise ProtocolError(f"HTTP request: conflicting Host headers {sorted(hosts)}")
        host_value = _header(headers, "host")
        host = host_without_port(host_value) if host_value is not None else _host_from_target(target)
        if self._server_name is None and host:
            self._server_name = host
        length = _content_length(headers, "request")
        codings = _transfer_codings(headers)
        chunked = False
        if codings:
            if codings[-1] != "chunked" or codings.count("chunked") > 1:
                raise ProtocolError(f"HTTP request: Transfer-Encoding {', '.join(codings)!r} does not end in chunked")
            chunked = True
        self._start(
            side,
            {
                "method": method,
                "path": target,
                "version": f"{m.group(3).decode()}.{m.group(4).decode()}",
                "host": host,
                "user_agent": _header(headers, "user-agent"),
                "content_type": _header(headers, "content-type"),
                "content_length": length,
                "chunked": chunked,
                "headers": headers[:MAX_HEADERS_KEPT],
            },
        )
        self._pending.append(method)
        # a switching request is followed by the new protocol only if the server agrees
        side.fields["_switch"] = method == "CONNECT" or _header(headers, "upgrade") is not None
        if chunked:
            side.state = _CHUNK_LINE
        elif length:
            side.state = _LENGTH
            side.remaining = length
        else:
            self._complete(side, out)

    def _response_head(self, side: _Side, lines: list[bytes], out: list[L7Event]) -> None:
        m = _STATUS_LINE.fullmatch(lines[0])
        if m is None:
            raise ProtocolError(f"HTTP response: invalid status line {lines[0][:80]!r}")
        if m.group(1) != b"1":
            raise ProtocolError(f"HTTP response: unsupported version HTTP/{m.group(1).decode()}.{m.group(2).decode()}")
        status = int(m.group(3))
        headers = _parse_headers(lines[1:], "response")
        length = _content_length(headers, "response")
        codings = _transfer_codings(headers)
        chunked = bool(codings) and codings[-1] == "chunked"
        self._start(
            side,
            {
                "status": status,
                "reason": (m.group(4) or b"").decode("latin-1"),
                "version": f"{m.group(1).decode()}.{m.group(2).decode()}",
                "content_type": _header(headers, "content-type"),
                "content_length": length,
                "chunked": chunked,
                "headers": headers[:MAX_HEADERS_KEPT],
            },
        )
        if status < 200:
            self._complete(side, out, final=False)
            if status == 101:
                self._switch(out)
            return
        method = self._pending.popleft() if self._pending else None
        if method == "CONNECT" and status < 300:
            self._complete(side, out)
            self._switch(out)
            return
        if method == "HEAD" or status in (204, 304):
            self._complete(side, out)
        elif chunked:
            side.state = _CHUNK_LINE
        elif codings:
            side.state = _UNTIL_CLOSE  # RFC 9112 6.3: a non-chunked coding runs to the close
        elif length is not None:
            if length:
                side.state = _LENGTH
                side.remaining = length
            else:
                self._complete(side, out)
        else:
            side.state = _UNTIL_CLOSE

    def _switch(self, out: list[L7Event]) -> None:
        self.finished = True
        for side in (self._client, self._server):
            side.state = _STOPPED
            side.stream.clear()

    # -- bodies --------------------------------------------------------------------------

    def _capture(self, side: _Side, buf: bytearray, start: int, end: int, out: list[L7Event]) -> None:
        if end <= start:
            return
        side.body_seen += end - start
        room = self._body_cap - len(side.body)
        if room > 0:
            side.body += buf[start : min(end, start + room)]
            if len(side.body) >= self._body_cap and not side.emitted:
                # inspection gets the first bytes now instead of after an unbounded body
                self._emit(side, out)

    def _counted_body(self, side: _Side, out: list[L7Event]) -> bool:
        stream = side.stream
        available = len(stream.buf) - stream.pos
        if available <= 0:
            return False
        n = min(available, side.remaining)
        self._capture(side, stream.buf, stream.pos, stream.pos + n, out)
        stream.pos += n
        side.remaining -= n
        if side.remaining == 0:
            if side.state == _CHUNK_DATA:
                side.state = _CHUNK_END
            else:
                self._complete(side, out)
        return True

    def _chunk_line(self, side: _Side) -> bool:
        stream = side.stream
        buf, pos = stream.buf, stream.pos
        nl = buf.find(b"\n", pos, pos + MAX_CHUNK_LINE + 1)
        if nl < 0:
            if len(buf) - pos > MAX_CHUNK_LINE:
                raise ProtocolError(f"HTTP {side.kind}: chunk-size line exceeds {MAX_CHUNK_LINE} bytes")
            return False
        line = bytes(buf[pos:nl])
        if line.endswith(b"\r"):
            line = line[:-1]
        m = _CHUNK_SIZE.fullmatch(line)
        if m is None:
            raise ProtocolError(f"HTTP {side.kind}: invalid chunk-size line {line[:40]!r}")
        size = int(m.group(1), 16)
        stream.pos = nl + 1
        if size == 0:
            side.state = _TRAILERS
        else:
            side.state = _CHUNK_DATA
            side.remaining = size
        return True

    def _chunk_end(self, side: _Side) -> bool:
        stream = side.stream
        buf, pos = stream.buf, stream.pos
        available = len(buf) - pos
        if available == 0:
            return False
        if buf[pos] == 10:
            stream.pos = pos + 1
        elif buf[pos] == 13:
            if available < 2:
                return False
            if buf[pos + 1] != 10:
                raise ProtocolError(f"HTTP {side.kind}: chunk data not followed by CRLF")
            stream.pos = pos + 2
        else:
            raise ProtocolError(f"HTTP {side.kind}: chunk data not followed by CRLF")
        side.state = _CHUNK_LINE
        return True

    def _trailers(self, side: _Side, out: list[L7Event]) -> bool:
        stream = side.stream
        buf, pos = stream.buf, stream.pos
        available = len(buf) - pos
        if available == 0:
            return False
        if side.scan == 0:
            if buf[pos] == 10:
                stream.pos = pos + 1
                self._complete(side, out)
                return True
            if buf[pos] == 13:
                if available < 2:
                    return False
                if buf[pos + 1] == 10:
                    stream.pos = pos + 2
                    self._complete(side, out)
                    return True
        block = self._block(side, "trailer block")
        if block is None:
            return False
        _parse_headers(_lines(block), side.kind)
        self._complete(side, out)
        return True

    # -- completion ----------------------------------------------------------------------

    def _emit(self, side: _Side, out: list[L7Event]) -> None:
        fields = dict(side.fields)
        fields.pop("_switch", None)
        fields["body"] = bytes(side.body)
        side.emitted = True
        direction = Direction.C2S if side.is_request else Direction.S2C
        out.append(L7Event(APP, side.kind, direction, fields))

    def _complete(self, side: _Side, out: list[L7Event], final: bool = True) -> None:
        if not side.emitted:
            self._emit(side, out)
        switching = bool(side.fields.get("_switch"))
        side.state = _HEAD
        side.scan = 0
        side.body = bytearray()
        if side.is_request:
            if switching:
                side.state = _PAUSED
            return
        client = self._client
        if final and client.state == _PAUSED and not self._pending and not self.finished:
            # the switch was refused: what the client sent meanwhile is HTTP again
            client.state = _HEAD
            self._run(client, out)
            client.stream.compact()


class HttpDetector:
    """Names a flow `http` from a request line (client) or a status line (server)."""

    name: ClassVar[str] = APP
    transports: ClassVar[frozenset[int]] = frozenset({PROTO_TCP})
    ports: ClassVar[frozenset[int]] = frozenset({80, 8000, 8008, 8080, 8888, 3128})

    def __init__(self, limits: Limits = DEFAULT_LIMITS) -> None:
        self._limits = limits

    def detect(self, direction: Direction, data: bytes, ctx: DetectContext) -> Detection:
        if direction == Direction.C2S:
            return detect_request(data)
        return detect_response(data)

    def parser(self, ctx: DetectContext) -> HttpParser:
        return HttpParser(self._limits)


def detect_request(data: bytes) -> Detection:
    """MATCH on a complete `METHOD SP target SP HTTP/1.x` line, NEED_MORE on a valid prefix of one."""
    n = len(data)
    j = 0
    while j < n and j <= _MAX_METHOD and (65 <= data[j] <= 90 or data[j] == 45):
        j += 1
    if j == n:
        head = bytes(data)
        return Detection.NEED_MORE if any(m.startswith(head) for m in _METHODS_BYTES) else Detection.NO
    if data[j] not in (32, 9) or bytes(data[:j]).decode("ascii") not in METHODS:
        return Detection.NO
    nl = data.find(b"\n", j, _DETECT_LINE)
    if nl < 0:
        if n >= _DETECT_LINE:
            return Detection.NO
        k = j
        while k < n and data[k] in (32, 9):
            k += 1
        return Detection.NEED_MORE if _REQUEST_REST_PREFIX.fullmatch(data, k) else Detection.NO
    line = data[: nl - 1] if nl and data[nl - 1] == 13 else data[:nl]
    m = _REQUEST_LINE.fullmatch(line)
    return Detection.MATCH if m is not None and m.group(3) == b"1" else Detection.NO


def detect_response(data: bytes) -> Detection:
    """MATCH on `HTTP/1.x NNN`, NEED_MORE on a prefix of that shape."""
    for i in range(min(len(data), 12)):
        c = data[i]
        if i < 7:
            ok = c == b"HTTP/1."[i]
        elif i == 8:
            ok = c == 32
        else:
            ok = 48 <= c <= 57
        if not ok:
            return Detection.NO
    return Detection.MATCH if len(data) >= 12 else Detection.NEED_MORE
