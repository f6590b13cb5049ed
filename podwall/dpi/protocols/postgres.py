"""PostgreSQL frontend/backend protocol 3.x: detection by the client's first message, and a session parser.

The client speaks first with an untyped message (4-byte length including itself, 4-byte
code): a StartupMessage (protocol 3.x, then NUL-terminated key/value pairs such as `user`,
`database`, `application_name`), an SSLRequest or GSSENCRequest (answered by one byte,
`S`/`G` to switch to TLS/GSS encryption, `N` to continue in clear), or a CancelRequest.
Every later message is typed: one type byte, then the 4-byte length. Policy wants the
startup parameters, the queries (simple `Q` and extended `P`), and errors; the rest is
framed and skipped. Messages of any size stream through: only their first bytes are held.
"""

from __future__ import annotations

import re
from typing import Any, ClassVar

from podwall.core.errors import ProtocolError
from podwall.core.limits import DEFAULT_LIMITS, Limits
from podwall.core.types import PROTO_TCP, Direction
from podwall.dpi.base import DetectContext, Detection, L7Event
from podwall.dpi.wire import PiecewiseMessages, Reader

__all__ = ["PostgresDetector", "PostgresParser"]

APP = "postgresql"
_CONTROL_BUT_NUL = re.compile(rb"[\x01-\x1f]")
SQL_CAPTURE = 4096  # characters of SQL text kept in an event
TEXT_CAPTURE = 256  # characters of other strings kept in an event
MAX_PARAMETERS = 32  # startup and server parameters kept
MAX_STARTUP = 10000  # the server's own limit on a startup packet
MAX_MESSAGE = 1 << 30  # the server's limit on any message

SSL_REQUEST = 80877103
GSSENC_REQUEST = 80877104
CANCEL_REQUEST = 80877102
PROTOCOL_MAJOR = 3

CLIENT_TYPES = frozenset(b"QPBEDSHCXFpdcf")
SERVER_TYPES = frozenset(b"RSKZENCDTtIn1s23AGHWdcVv")
AUTH_METHODS = {
    0: "ok", 2: "kerberos_v5", 3: "cleartext", 5: "md5", 7: "gss", 8: "gss_continue", 9: "sspi",
    10: "sasl", 11: "sasl_continue", 12: "sasl_final",
}  # fmt: skip
_ERROR_FIELDS = {ord("S"): "severity", ord("C"): "code", ord("M"): "message", ord("D"): "detail", ord("H"): "hint"}


def _text(raw: bytes, cap: int = TEXT_CAPTURE) -> str:
    return raw[:cap].decode("utf-8", "backslashreplace")


def _cstring(r: Reader, field: str) -> bytes:
    end = r.data.find(b"\x00", r.pos, r.end)
    if end < 0:
        raise ProtocolError(f"PostgreSQL: {field} at offset {r.pos} is not NUL-terminated")
    value = r.take(end - r.pos, field)
    r.skip(1, field)
    return value


def _startup_parameters(body: bytes) -> dict[str, str]:
    """The key/value pairs after the protocol version; the list ends with an empty key."""
    r = Reader(body, 4, what="PostgreSQL startup message")
    params: dict[str, str] = {}
    while True:
        key = _cstring(r, "parameter name")
        if not key:
            break
        value = _cstring(r, "parameter value")
        if not all(0x21 <= b < 0x7F for b in key):
            raise ProtocolError(f"PostgreSQL: startup parameter name {key[:40]!r} is not printable")
        if len(params) < MAX_PARAMETERS:
            params[_text(key)] = _text(value)
    r.expect_end()
    return params


class PostgresDetector:
    """Names a flow `postgresql` by its first client message (startup, SSL/GSS or cancel request)."""

    name: ClassVar[str] = APP
    transports: ClassVar[frozenset[int]] = frozenset({PROTO_TCP})
    ports: ClassVar[frozenset[int]] = frozenset({5432, 5433, 6432})

    def __init__(self, limits: Limits = DEFAULT_LIMITS) -> None:
        self._limits = limits

    def detect(self, direction: Direction, data: bytes, ctx: DetectContext) -> Detection:
        n = len(data)
        if n == 0:
            return Detection.NEED_MORE
        if direction == Direction.S2C:
            # Servers only answer; a one-byte SSL answer or an error keeps the candidate.
            return Detection.NEED_MORE if data[0] in b"SNGER" else Detection.NO
        if data[:2].count(0) != min(n, 2):
            return Detection.NO  # lengths are at most MAX_STARTUP
        if n >= 4:
            length = int.from_bytes(data[:4], "big")
            if not 8 <= length <= MAX_STARTUP:
                return Detection.NO
        head = data[4:8]
        special = (SSL_REQUEST, GSSENC_REQUEST, CANCEL_REQUEST)
        if not any(code.to_bytes(4, "big").startswith(head) for code in special) and not b"\x00\x03".startswith(
            head[:2]
        ):
            return Detection.NO
        if n < 8:
            return Detection.NEED_MORE
        code = int.from_bytes(head, "big")
        if code in (SSL_REQUEST, GSSENC_REQUEST):
            return Detection.MATCH if length == 8 else Detection.NO
        if code == CANCEL_REQUEST:
            if length != 16:
                return Detection.NO
            return Detection.MATCH if n >= 16 else Detection.NEED_MORE
        if code >> 16 != PROTOCOL_MAJOR or length < 10:
            return Detection.NO
        body = data[8:length]
        if _CONTROL_BUT_NUL.search(body):
            return Detection.NO
        if n < length:
            return Detection.NEED_MORE
        try:
            params = _startup_parameters(data[4:length])
        except ProtocolError:
            return Detection.NO
        return Detection.MATCH if "user" in params else Detection.NO

    def parser(self, ctx: DetectContext) -> PostgresParser:
        return PostgresParser(self._limits)


class _Messages(PiecewiseMessages):
    """One direction's messages, typed or untyped; bodies stream through and only `keep` bytes are held."""

    __slots__ = ("kind", "size")

    def __init__(self, keep: int, what: str) -> None:
        super().__init__(keep, what)
        self.kind = 0
        self.size = 0

    def next(
        self, data: bytes, pos: int, typed: bool, types: frozenset[int]
    ) -> tuple[int, tuple[int, bytes, int] | None]:
        """Consume from `data[pos:]` up to the end of one message: (new pos, (type, body, size) or None)."""
        if not self.in_body:
            need = 5 if typed else 4
            pos = self.gather_head(data, pos, need)
            if len(self.head) < need:
                return pos, None
            kind = self.head[0] if typed else 0
            if typed and kind not in types:
                raise ProtocolError(f"{self.what}: unknown message type {chr(kind)!r}")
            length = int.from_bytes(self.head[need - 4 : need], "big")
            self.head.clear()
            limit = MAX_MESSAGE if typed else MAX_STARTUP
            if not (4 if typed else 8) <= length <= limit:
                raise ProtocolError(f"{self.what}: bad message length {length}")
            self.kind = kind
            self.size = self.left = length - 4
            self.body.clear()
            self.in_body = True
        pos = self.gather_body(data, pos)
        if self.left:
            return pos, None
        self.in_body = False
        return pos, (self.kind, bytes(self.body), self.size)


class PostgresParser:
    """Sans-IO PostgreSQL parser: startup, authentication, queries, errors; stops at TLS/GSS encryption."""

    def __init__(self, limits: Limits = DEFAULT_LIMITS) -> None:
        keep = max(64, min(limits.parser_buffer, 1 << 16))
        self._client = _Messages(keep, "PostgreSQL client message")
        self._server = _Messages(keep, "PostgreSQL server message")
        self._client_typed = False  # the startup message was seen: client messages now have a type byte
        self._answer: str | None = None  # "ssl"/"gss": the server's next byte answers that request
        self._params: dict[str, str] = {}
        self._backend_pid: int | None = None
        self._ready = False
        self.finished = False

    def server_name(self) -> str | None:
        return None

    def feed(self, direction: Direction, data: bytes) -> list[L7Event]:
        out: list[L7Event] = []
        pos, n = 0, len(data)
        while pos < n and not self.finished:
            if direction == Direction.C2S:
                pos, msg = self._client.next(data, pos, self._client_typed, CLIENT_TYPES)
                if msg is not None:
                    self._client_message(*msg, out)
            elif self._answer is not None and data[pos] != ord("E"):
                self._encryption_answer(data[pos], out)
                pos += 1
            else:
                self._answer = None  # an old server may answer a request with an error
                pos, msg = self._server.next(data, pos, True, SERVER_TYPES)
                if msg is not None:
                    self._server_message(*msg, out)
        return out

    # -- client ------------------------------------------------------------------------

    def _client_message(self, kind: int, body: bytes, size: int, out: list[L7Event]) -> None:
        if not self._client_typed:
            self._untyped(body, size, out)
            return
        fields: dict[str, Any]
        if kind == 0x51:  # Q
            text = body.split(b"\x00", 1)[0]
            fields = {"sql": _text(text, SQL_CAPTURE), "kind": "simple", "truncated": len(text) > SQL_CAPTURE}
            fields["truncated"] |= size > len(body) and b"\x00" not in body
            out.append(L7Event(APP, "query", Direction.C2S, fields))
        elif kind == 0x50:  # P
            name, _, rest = body.partition(b"\x00")
            text = rest.split(b"\x00", 1)[0]
            if size == len(body):
                r = Reader(body, what="PostgreSQL Parse message")
                _cstring(r, "statement name")
                _cstring(r, "query")
                r.skip(4 * r.u16("parameter type count"), "parameter types")
                r.expect_end()
            fields = {
                "sql": _text(text, SQL_CAPTURE),
                "kind": "extended",
                "statement": _text(name),
                "truncated": len(text) > SQL_CAPTURE or (size > len(body) and b"\x00" not in rest),
            }
            out.append(L7Event(APP, "query", Direction.C2S, fields))
        elif kind == 0x58:  # X
            out.append(L7Event(APP, "command", Direction.C2S, {"command": "terminate"}))
            self.finished = True
        elif kind == 0x46:  # F
            oid = int.from_bytes(body[:4], "big") if len(body) >= 4 else None
            out.append(L7Event(APP, "command", Direction.C2S, {"command": "function_call", "oid": oid}))

    def _untyped(self, body: bytes, size: int, out: list[L7Event]) -> None:
        r = Reader(body, what="PostgreSQL startup message")
        code = r.u32("protocol version")
        if code in (SSL_REQUEST, GSSENC_REQUEST):
            if size != 4:
                raise ProtocolError(f"PostgreSQL: encryption request of {size + 4} bytes, expected 8")
            self._answer = "ssl" if code == SSL_REQUEST else "gss"
        elif code == CANCEL_REQUEST:
            if size != 12:
                raise ProtocolError(f"PostgreSQL: cancel request of {size + 4} bytes, expected 16")
            out.append(L7Event(APP, "cancel", Direction.C2S, {"backend_pid": r.u32("process id")}))
            self.finished = True
        elif code >> 16 == PROTOCOL_MAJOR:
            params = _startup_parameters(body)
            user = params.get("user")
            fields = {
                "user": user,
                "database": params.get("database") or user,  # the server defaults it to the user name
                "application_name": params.get("application_name"),
                "replication": params.get("replication"),
                "protocol": f"{code >> 16}.{code & 0xFFFF}",
                "parameters": params,
            }
            out.append(L7Event(APP, "startup", Direction.C2S, fields))
            self._client_typed = True
        else:
            raise ProtocolError(f"PostgreSQL: unsupported protocol version {code >> 16}.{code & 0xFFFF}")

    # -- server ------------------------------------------------------------------------

    def _encryption_answer(self, byte: int, out: list[L7Event]) -> None:
        request, self._answer = self._answer, None
        accepted = b"S" if request == "ssl" else b"G"
        if byte not in (accepted[0], ord("N")):
            raise ProtocolError(f"PostgreSQL: unexpected answer {chr(byte)!r} to an {request} request")
        encrypted = byte != ord("N")
        kind = "ssl_request" if request == "ssl" else "gssenc_request"
        out.append(L7Event(APP, kind, Direction.S2C, {"tls" if request == "ssl" else "gss": encrypted}))
        if encrypted:
            self.finished = True  # the rest of the connection is encrypted

    def _server_message(self, kind: int, body: bytes, size: int, out: list[L7Event]) -> None:
        if kind == 0x52:  # R
            r = Reader(body, what="PostgreSQL authentication request")
            code = r.u32("authentication type")
            method = AUTH_METHODS.get(code)
            if method is None:
                raise ProtocolError(f"PostgreSQL: unknown authentication type {code}")
            if code in (8, 11, 12):
                return  # continuation steps carry only mechanism data
            fields: dict[str, Any] = {"method": method}
            if code == 10:
                fields["mechanisms"] = [_text(m) for m in body[4:].split(b"\x00") if m]
            out.append(L7Event(APP, "auth", Direction.S2C, fields))
        elif kind == 0x53:  # S
            key, _, rest = body.partition(b"\x00")
            if len(self._params) < MAX_PARAMETERS:
                self._params[_text(key)] = _text(rest.split(b"\x00", 1)[0])
        elif kind == 0x4B:  # K
            if len(body) >= 4:
                self._backend_pid = int.from_bytes(body[:4], "big")
        elif kind == 0x5A:  # Z
            if not self._ready:
                self._ready = True
                fields = {
                    "server_version": self._params.get("server_version"),
                    "backend_pid": self._backend_pid,
                    "transaction_status": _text(body[:1]),
                    "parameters": dict(self._params),
                }
                out.append(L7Event(APP, "ready", Direction.S2C, fields))
        elif kind in (0x45, 0x4E):  # E, N
            fields = _error_fields(body)
            fields["phase"] = "query" if self._ready else "startup"
            out.append(L7Event(APP, "error" if kind == 0x45 else "notice", Direction.S2C, fields))


def _error_fields(body: bytes) -> dict[str, Any]:
    """ErrorResponse/NoticeResponse: (code byte, NUL-terminated text) pairs; V is the unlocalized severity."""
    fields: dict[str, Any] = {"severity": None, "code": None, "message": None, "detail": None, "hint": None}
    for part in body.split(b"\x00"):
        if not part:
            continue
        name = _ERROR_FIELDS.get(part[0])
        if part[0] == ord("V"):
            fields["severity"] = _text(part[1:])
        elif name is not None and not (name == "severity" and fields["severity"]):
            fields[name] = _text(part[1:])
    return fields
