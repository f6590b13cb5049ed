"""HTTP transactions as the WAF inspects them: from a raw request (+ response) or from DPI events.

A raw file holds one HTTP/1.x request, optionally followed by its response. The request body is
framed by Content-Length or chunked coding; a request with neither has no body unless the rest
of the file does not start a response, in which case the rest is taken as the body (hand-written
files often omit Content-Length). The response body runs to Content-Length, the chunks, or the
end of the file. Bare LF line ends are accepted. Every fault is an `InputError` located by line.

`from_events` builds the same transaction from the DPI's HTTP `request`/`response` L7 events,
which carry the method, target, version, headers (first 64) and body (first 64 KiB).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from podwall.core.errors import InputError, Location, Problem

__all__ = ["HttpRequest", "HttpResponse", "HttpTransaction", "from_events", "load_http_file", "parse_http"]

Headers = tuple[tuple[str, str], ...]

_REQUEST_LINE = re.compile(r"([!#$%&'*+.^_`|~0-9A-Za-z-]+)[ \t]+(\S+)[ \t]+HTTP/(\d)(?:\.(\d))?")
_STATUS_LINE = re.compile(r"HTTP/(\d)(?:\.(\d))?[ \t]+(\d{3})(?:[ \t]+(.*))?")
_HEADER_LINE = re.compile(r"([!#$%&'*+.^_`|~0-9A-Za-z-]+):[ \t]*(.*?)[ \t]*")
_HEAD_END = re.compile(rb"\r?\n\r?\n")
MAX_FILE = 16 << 20  # a request file larger than this is not a single hand-made transaction


@dataclass(frozen=True, slots=True)
class HttpRequest:
    """One HTTP request: the target as sent (path and query, still encoded), headers in order, body bytes."""

    method: str
    uri: str
    version: str = "1.1"
    headers: Headers = ()
    body: bytes = b""

    def header(self, name: str) -> str | None:
        """The first value of header `name` (case-insensitive), or None."""
        return _header(self.headers, name)

    @property
    def path(self) -> str:
        return self.uri.split("?", 1)[0]

    @property
    def query(self) -> str:
        return self.uri.split("?", 1)[1] if "?" in self.uri else ""

    @property
    def host(self) -> str:
        """The Host header without its port, lower-case ("" when absent)."""
        value = (self.header("host") or "").strip().lower()
        if value.startswith("["):
            return value[1 : value.find("]")] if "]" in value else value
        return value.split(":", 1)[0] if value.count(":") == 1 else value


@dataclass(frozen=True, slots=True)
class HttpResponse:
    """The server's answer: status, headers in order, body bytes."""

    status: int
    version: str = "1.1"
    headers: Headers = ()
    body: bytes = b""
    reason: str = ""

    def header(self, name: str) -> str | None:
        return _header(self.headers, name)


@dataclass(frozen=True, slots=True)
class HttpTransaction:
    """A request, its response when known, and the connection's addresses (for CRS's REMOTE_ADDR)."""

    request: HttpRequest
    response: HttpResponse | None = None
    client_ip: str = "0.0.0.0"
    client_port: int = 0
    server_ip: str = "0.0.0.0"
    server_port: int = 80


def _header(headers: Headers, name: str) -> str | None:
    lname = name.lower()
    return next((v for n, v in headers if n.lower() == lname), None)


class _Reader:
    """A cursor over the file's bytes that knows line numbers for error messages."""

    def __init__(self, data: bytes, source: str) -> None:
        self.data = data
        self.pos = 0
        self.source = source

    def line_at(self, pos: int) -> int:
        return self.data.count(b"\n", 0, pos) + 1

    def fail(self, pos: int, message: str) -> InputError:
        where = Location(file=self.source, path=f"line {self.line_at(pos)}")
        return InputError("invalid HTTP request file", [Problem(where, message)])

    def head(self, what: str) -> tuple[list[tuple[int, str]], int]:
        """The start line and header lines of the next message, each with its offset."""
        start = self.pos
        while self.data.startswith((b"\r\n", b"\n"), start):  # blank lines before a message are tolerated
            start += 2 if self.data.startswith(b"\r\n", start) else 1
        m = _HEAD_END.search(self.data, start)
        end = m.start() if m else len(self.data)
        self.pos = m.end() if m else len(self.data)
        if start >= end:
            raise self.fail(start, f"the {what} is empty")
        lines: list[tuple[int, str]] = []
        offset = start
        for raw in self.data[start:end].split(b"\n"):
            lines.append((offset, raw.rstrip(b"\r").decode("latin-1")))
            offset += len(raw) + 1
        return lines, end

    def body(self, headers: Headers, what: str, to_end: bool, head_end: int) -> bytes:
        length = _header(headers, "content-length")
        coding = (_header(headers, "transfer-encoding") or "").lower()
        if "chunked" in coding:
            return self._chunked(what)
        if length is not None:
            if not length.strip().isdigit():
                raise self.fail(head_end, f"{what} Content-Length {length!r} is not a number")
            n = int(length)
            if self.pos + n > len(self.data):
                have = len(self.data) - self.pos
                raise self.fail(head_end, f"{what} body is truncated: Content-Length {n} but {have} byte(s) follow")
            body = self.data[self.pos : self.pos + n]
            self.pos += n
            return body
        if to_end:
            body = self.data[self.pos :]
            self.pos = len(self.data)
            return body
        return b""

    def _chunked(self, what: str) -> bytes:
        out = bytearray()
        while True:
            eol = self.data.find(b"\n", self.pos)
            if eol < 0:
                raise self.fail(self.pos, f"{what} chunked body ends without its last chunk")
            size_text = self.data[self.pos : eol].split(b";", 1)[0].strip()
            try:
                size = int(size_text, 16)
            except ValueError:
                raise self.fail(self.pos, f"{what} chunk size {size_text[:20]!r} is not hexadecimal") from None
            self.pos = eol + 1
            if size == 0:
                # trailers, then the blank line that ends the message
                while True:
                    eol = self.data.find(b"\n", self.pos)
                    line = self.data[self.pos : eol if eol >= 0 else len(self.data)]
                    self.pos = eol + 1 if eol >= 0 else len(self.data)
                    if not line.strip() or eol < 0:
                        return bytes(out)
            if self.pos + size > len(self.data):
                raise self.fail(self.pos, f"{what} chunk of {size} byte(s) is truncated")
            out += self.data[self.pos : self.pos + size]
            self.pos += size
            for crlf in (b"\r\n", b"\n"):
                if self.data.startswith(crlf, self.pos):
                    self.pos += len(crlf)
                    break
            else:
                raise self.fail(self.pos, f"{what} chunk data is not followed by a line end")


def _headers(reader: _Reader, lines: list[tuple[int, str]], what: str) -> Headers:
    out: list[tuple[str, str]] = []
    for offset, line in lines:
        if line[:1] in (" ", "\t") and out:
            name, value = out[-1]
            out[-1] = (name, f"{value} {line.strip()}")  # obs-fold continues the previous header
            continue
        m = _HEADER_LINE.fullmatch(line)
        if m is None:
            raise reader.fail(offset, f"{what} header line {line[:60]!r} is not `Name: value`")
        out.append((m.group(1), m.group(2)))
    return tuple(out)


def _starts_response(data: bytes, pos: int) -> bool:
    return data[pos:].lstrip(b"\r\n").startswith(b"HTTP/")


def parse_http(data: bytes, source: str = "<input>") -> HttpTransaction:
    """Parse one raw request, optionally followed by its response; InputError says what and on which line."""
    reader = _Reader(data, source)
    if not data.strip():
        raise reader.fail(0, "the file is empty: expected an HTTP request")
    lines, head_end = reader.head("request")
    offset, first = lines[0]
    m = _REQUEST_LINE.fullmatch(first.strip())
    if m is None:
        raise reader.fail(offset, f"request line {first[:80]!r} is not `METHOD target HTTP/x.y`")
    version = m.group(3) + (f".{m.group(4)}" if m.group(4) is not None else "")
    headers = _headers(reader, lines[1:], "request")
    to_end = not _starts_response(data, reader.pos)
    body = reader.body(headers, "request", to_end=to_end, head_end=head_end)
    request = HttpRequest(m.group(1), m.group(2), version, headers, body)
    response = None
    if reader.pos < len(data) and data[reader.pos :].strip():
        if not _starts_response(data, reader.pos):
            raise reader.fail(reader.pos, "data after the request body is not an HTTP response (`HTTP/x.y NNN`)")
        lines, head_end = reader.head("response")
        offset, first = lines[0]
        sm = _STATUS_LINE.fullmatch(first.strip())
        if sm is None:
            raise reader.fail(offset, f"status line {first[:80]!r} is not `HTTP/x.y NNN reason`")
        rheaders = _headers(reader, lines[1:], "response")
        rbody = reader.body(rheaders, "response", to_end=True, head_end=head_end)
        rversion = sm.group(1) + (f".{sm.group(2)}" if sm.group(2) is not None else "")
        response = HttpResponse(int(sm.group(3)), rversion, rheaders, rbody, sm.group(4) or "")
        if reader.pos < len(data) and data[reader.pos :].strip():
            raise reader.fail(reader.pos, "unexpected data after the response: one transaction per file")
    return HttpTransaction(request, response)


def load_http_file(path: Path) -> HttpTransaction:
    """Read and parse a request file (the thin loader); unreadable files are InputErrors too."""
    where = Location(file=str(path))
    try:
        size = path.stat().st_size
        if size > MAX_FILE:
            raise InputError("invalid HTTP request file", [Problem(where, f"{size} bytes is over {MAX_FILE}")])
        data = path.read_bytes()
    except IsADirectoryError:
        raise InputError("cannot read HTTP request file", [Problem(where, "is a directory")]) from None
    except OSError as exc:
        raise InputError("cannot read HTTP request file", [Problem(where, exc.strerror or str(exc))]) from None
    return parse_http(data, str(path))


def _fields(event: Any) -> Mapping[str, Any]:
    fields = getattr(event, "fields", event)
    if not isinstance(fields, Mapping):
        raise TypeError(f"expected an L7Event or its fields, got {type(event).__name__}")
    return fields


def _event_headers(fields: Mapping[str, Any]) -> Headers:
    # HTTP/2 pseudo-headers (":path", ...) are already the request line, not headers
    return tuple((str(n), str(v)) for n, v in fields.get("headers") or () if not str(n).startswith(":"))


def from_events(
    request: Any,
    response: Any | None = None,
    client: tuple[str, int] = ("0.0.0.0", 0),
    server: tuple[str, int] = ("0.0.0.0", 80),
) -> HttpTransaction:
    """A transaction from the DPI's HTTP `request` (and `response`) L7 events, or their `fields` dicts.

    Both carry headers and the captured body (an HTTP/2 request's body is joined to it from its
    `request_body` event by the WAF's flow inspector); in HTTP/2 and gRPC events `authority`
    stands for Host, and gRPC's `http_method` for the HTTP method.
    """
    f = _fields(request)
    h2 = getattr(request, "app", None) in ("http2", "grpc")
    headers = _event_headers(f)
    host = f.get("host") or f.get("authority")
    if not any(n.lower() == "host" for n, _ in headers) and host:
        headers = (("host", str(host)), *headers)
    req = HttpRequest(
        str(f.get("http_method") or f.get("method") or "GET"),
        str(f.get("path") or "/"),
        str(f.get("version") or ("2.0" if h2 else "1.1")),
        headers,
        bytes(f.get("body") or b""),
    )
    resp = None
    if response is not None:
        r = _fields(response)
        resp = HttpResponse(
            int(r.get("status") or 0),
            str(r.get("version") or ("2.0" if h2 else "1.1")),
            _event_headers(r),
            bytes(r.get("body") or b""),
            str(r.get("reason") or ""),
        )
    return HttpTransaction(req, resp, client[0], client[1], server[0], server[1])
