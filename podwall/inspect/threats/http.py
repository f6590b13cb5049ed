"""HTTP/1.x request checks over a connection's client bytes: smuggling, negative lengths, slowloris, Struts OGNL.

The DPI's HTTP parser refuses exactly the requests these threats are made of (conflicting
Content-Length, a negative one) and then stops, so this watcher frames the client's requests
itself, loosely: it reads each request head, checks it, and skips the body by
Content-Length or chunked coding to find the next head. When a head makes the body length
ambiguous (the smuggling case) it reports and stops, rather than guess where the next
request starts. It also remembers when the current head started, for slowloris.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

from podwall.dpi.base import Detection
from podwall.dpi.protocols.http1 import detect_request

__all__ = ["MAX_HEAD", "HttpHit", "HttpWatch", "ognl_in"]

MAX_HEAD = 64 * 1024  # a request head longer than this is not followed (the DPI refuses it too)
MAX_LINE = 4096  # chunk-size and trailer lines
_HEAD_END = re.compile(rb"\r?\n\r?\n")
_REQUEST_LINE = re.compile(rb"([A-Z][A-Z_-]{0,23})[ \t]+(\S+)[ \t]+HTTP/1\.\d[ \t]*")
_NEGATIVE = re.compile(r"\s*-\s*\d+\s*")
_DIGITS = re.compile(r"\s*\d{1,18}\s*")
_CHUNK_SIZE = re.compile(rb"[ \t]*([0-9A-Fa-f]{1,16})[ \t]*(?:;.*)?")
_CODINGS = frozenset({"chunked", "gzip", "x-gzip", "deflate", "compress", "x-compress", "identity", "br", "zstd"})
# OGNL as the Struts 2 exploits (S2-045/046/052/057 and kin) carry it: an expression opener
# followed by OGNL's `#` context access or a static member call, or the member-access names.
_OGNL = re.compile(
    r"[%$]\{\s*\(?\s*#|#_memberAccess|@ognl\.OgnlContext|#context\[|"
    r"@java\.lang\.Runtime@getRuntime|@org\.apache\.struts2\.ServletActionContext|\(#_=",
)
_HEAD, _BODY, _CHUNK_LINE, _CHUNK_DATA, _CHUNK_END, _TRAILERS, _OFF = range(7)


def ognl_in(text: str) -> str | None:
    """The OGNL fragment Struts exploits use, if `text` holds one (the first 80 characters from it)."""
    m = _OGNL.search(text)
    return None if m is None else text[m.start() : m.start() + 80]


@dataclass(frozen=True, slots=True)
class HttpHit:
    """One finding in a request head: `key` is the threat, `l7` the request line's facts."""

    key: str
    message: str
    l7: dict[str, Any]
    detail: dict[str, Any] = field(default_factory=dict)


class HttpWatch:
    """The client side of one HTTP/1.x connection; `feed` returns what the complete heads showed."""

    __slots__ = ("_buf", "_line_ok", "_remaining", "_state", "head_start", "requests")

    def __init__(self) -> None:
        self._state = _HEAD
        self._buf = bytearray()
        self._line_ok = False  # the current head's request line is known to look like HTTP/1
        self._remaining = 0
        self.head_start = -1.0  # when the first byte of the incomplete head arrived (-1: none pending)
        self.requests = 0

    @property
    def active(self) -> bool:
        return self._state != _OFF

    def feed(self, data: bytes, now: float) -> list[HttpHit]:
        hits: list[HttpHit] = []
        pos, n = 0, len(data)
        while pos < n and self._state != _OFF:
            state = self._state
            if state in (_BODY, _CHUNK_DATA):
                take = min(self._remaining, n - pos)
                self._remaining -= take
                pos += take
                if not self._remaining:
                    self._state = _HEAD if state == _BODY else _CHUNK_END
            elif state == _HEAD:
                pos = self._head(data, pos, now, hits)
            else:
                pos = self._line(data, pos)
        return hits

    # -- heads ----------------------------------------------------------------------------

    def _head(self, data: bytes, pos: int, now: float, hits: list[HttpHit]) -> int:
        buf = self._buf
        if not buf:
            while pos < len(data) and data[pos] in (10, 13):  # empty lines between requests
                pos += 1
            if pos == len(data):
                return pos
            self.head_start = now
            self._line_ok = False
        old = len(buf)
        buf += data[pos:]
        if not self._line_ok:
            # Decide early, so a flow that is not HTTP costs neither buffering nor searching.
            verdict = detect_request(bytes(buf[:8192]))
            if verdict is Detection.NO:
                self._stop()
                return len(data)
            self._line_ok = verdict is Detection.MATCH
        m = _HEAD_END.search(buf, max(0, old - 3))
        if m is None:
            if len(buf) > MAX_HEAD:
                self._stop()
            return len(data)
        head = bytes(buf[: m.start()])
        used = m.end() - old
        buf.clear()
        self.head_start = -1.0
        self._request(head, hits)
        return pos + used

    def _stop(self) -> None:
        self._state = _OFF
        self._buf.clear()
        self.head_start = -1.0

    def _request(self, head: bytes, hits: list[HttpHit]) -> None:
        lines = [line[:-1] if line.endswith(b"\r") else line for line in head.split(b"\n")]
        m = _REQUEST_LINE.fullmatch(lines[0])
        if m is None:
            self._stop()  # not an HTTP/1 request (or not any more): nothing to frame
            return
        self.requests += 1
        method = m.group(1).decode("ascii")
        target = m.group(2).decode("latin-1")
        headers = _headers(lines[1:])
        host = next((v for n, v, _ in headers if n == "host"), None)
        l7: dict[str, Any] = {"method": method, "path": target[:256], "host": host}
        lengths: list[str] = []
        codings: list[str] = []
        te_headers = 0
        bent: list[str] = []  # Content-Length / Transfer-Encoding header names written oddly
        for name, value, raw_name in headers:
            if name == "content-length":
                lengths.extend(part.strip() for part in value.split(","))
            elif name == "transfer-encoding":
                te_headers += 1
                codings.extend(c.strip().lower() for c in value.split(",") if c.strip())
            else:
                continue
            if raw_name != raw_name.strip():
                bent.append(raw_name)
        negative = [v for v in lengths if _NEGATIVE.fullmatch(v)]
        if negative:
            hits.append(
                HttpHit(
                    "http_negative_content_length",
                    f"{method} request with Content-Length {negative[0]}",
                    l7,
                    {"content_length": negative[0]},
                )
            )
        reasons = _smuggling(lengths, codings, te_headers, bent)
        if reasons:
            hits.append(HttpHit("http_smuggling", f"{method} request: {'; '.join(reasons)}", l7, {"reasons": reasons}))
        ognl = ognl_in(unquote(target)) or next((frag for _, v, _ in headers if (frag := ognl_in(v)) is not None), None)
        if ognl is not None:
            hits.append(HttpHit("struts_rce", f"OGNL expression in a {method} request: {ognl!r}", l7, {"ognl": ognl}))
        if negative or reasons:
            self._stop()  # the body's length is ambiguous: the next request cannot be found reliably
            return
        upgrade = any(n == "upgrade" for n, _, _ in headers)
        if codings and codings[-1] == "chunked":
            self._state = _CHUNK_LINE
        elif lengths and _DIGITS.fullmatch(lengths[0]) and int(lengths[0]):
            self._state = _BODY
            self._remaining = int(lengths[0])
        elif method == "CONNECT" or upgrade:
            self._stop()  # what follows may not be HTTP at all
        # else: no body, the next head follows

    # -- chunked bodies -------------------------------------------------------------------

    def _line(self, data: bytes, pos: int) -> int:
        """Chunk-size lines, the CRLF after chunk data and trailers: one line at a time."""
        buf = self._buf
        nl = data.find(b"\n", pos)
        if nl < 0:
            buf += data[pos:]
            if len(buf) > MAX_LINE:
                self._stop()
            return len(data)
        buf += data[pos:nl]
        line = bytes(buf[:-1] if buf.endswith(b"\r") else buf)
        buf.clear()
        state = self._state
        if state == _CHUNK_LINE:
            m = _CHUNK_SIZE.fullmatch(line)
            if m is None:
                self._stop()
            else:
                size = int(m.group(1), 16)
                if size:
                    self._state, self._remaining = _CHUNK_DATA, size
                else:
                    self._state = _TRAILERS
        elif state == _CHUNK_END:  # the CRLF after a chunk's data
            if line:
                self._stop()
            else:
                self._state = _CHUNK_LINE
        elif not line:  # the empty line that ends the trailers ends the message
            self._state = _HEAD
        return nl + 1


def _headers(lines: list[bytes]) -> list[tuple[str, str, str]]:
    """(lower-cased name, value, name as written) per header line; folded lines join the previous one."""
    out: list[tuple[str, str, str]] = []
    for line in lines:
        if line[:1] in (b" ", b"\t"):
            if out:
                name, text, raw = out[-1]
                out[-1] = (name, f"{text} {line.strip().decode('latin-1')}", raw)
            continue
        raw_name, sep, raw_value = line.partition(b":")
        if not sep:
            continue
        raw = raw_name.decode("latin-1")
        out.append((raw.strip().lower(), raw_value.strip().decode("latin-1"), raw))
    return out


def _smuggling(lengths: list[str], codings: list[str], te_headers: int, bent: list[str]) -> list[str]:
    """Why a request's body length is ambiguous (empty when it is not)."""
    reasons: list[str] = []
    if lengths and codings:
        reasons.append("both Content-Length and Transfer-Encoding")
    values = {v for v in lengths if _DIGITS.fullmatch(v)}
    if len({int(v) for v in values}) > 1:
        reasons.append(f"conflicting Content-Length values {sorted(int(v) for v in values)}")
    if codings:
        listed = ", ".join(codings)
        if codings[-1] != "chunked" and any("chunked" in c for c in codings):
            reasons.append(f"obfuscated Transfer-Encoding {listed!r}")
        elif codings.count("chunked") > 1 or te_headers > 1:
            reasons.append(f"repeated Transfer-Encoding {listed!r}")
        elif any(c not in _CODINGS for c in codings):
            reasons.append(f"unknown Transfer-Encoding {listed!r}")
        elif codings[-1] != "chunked":
            reasons.append(f"request Transfer-Encoding {listed!r} does not end in chunked")
    if bent:
        reasons.append(f"malformed header name {bent[0]!r}")
    return reasons
