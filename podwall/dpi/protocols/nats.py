"""NATS client protocol: detection by `INFO {...}` or `CONNECT {...}`, and a parser of its operations.

The server speaks first with `INFO {json}`, the client answers `CONNECT {json}`; then
`PUB subject [reply] size` / `HPUB subject [reply] hdr_size size` followed by the payload,
`SUB subject [queue] sid`, `UNSUB sid [max]`, `PING`/`PONG`, and from the server
`MSG`/`HMSG` (with payloads), `+OK` and `-ERR 'text'`. Operation names are case
insensitive. Payloads stream through (only their size is reported); JSON is parsed within
the line bound. Passwords, tokens and signatures in CONNECT are never reported, only which
kinds of credential were sent.
"""

from __future__ import annotations

import json
import re
from typing import Any, ClassVar

from podwall.core.errors import ProtocolError
from podwall.core.limits import DEFAULT_LIMITS, Limits
from podwall.core.types import PROTO_TCP, Direction
from podwall.dpi.base import DetectContext, Detection, L7Event
from podwall.dpi.protocols.textline import LineBuffer, text

__all__ = ["NatsDetector", "NatsParser"]

APP = "nats"
MAX_PAYLOAD = 64 * 1024 * 1024  # the largest max_payload a NATS server may be configured with
_CREDENTIALS = ("user", "pass", "auth_token", "nkey", "jwt", "sig")

_INFO = re.compile(rb"(?i)INFO[ \t]{1,8}\{")
_INFO_PREFIX = re.compile(rb"(?i)I(N(F(O[ \t]{0,8})?)?)?")
_CONNECT = re.compile(rb"(?i)CONNECT[ \t]{1,8}\{")
_CONNECT_PREFIX = re.compile(rb"(?i)C(O(N(N(E(C(T[ \t]{0,8})?)?)?)?)?)?")
_SIZE = re.compile(rb"[0-9]{1,10}")


class NatsDetector:
    """Matches the server's `INFO {` or the client's `CONNECT {`."""

    name: ClassVar[str] = APP
    transports: ClassVar[frozenset[int]] = frozenset({PROTO_TCP})
    ports: ClassVar[frozenset[int]] = frozenset({4222, 6222})

    def __init__(self, limits: Limits = DEFAULT_LIMITS) -> None:
        self._limits = limits

    def detect(self, direction: Direction, data: bytes, ctx: DetectContext) -> Detection:
        if not data:
            return Detection.NEED_MORE
        full, prefix = (_INFO, _INFO_PREFIX) if direction == Direction.S2C else (_CONNECT, _CONNECT_PREFIX)
        head = data[:20]
        if full.match(head):
            return Detection.MATCH
        return Detection.NEED_MORE if prefix.fullmatch(head) else Detection.NO

    def parser(self, ctx: DetectContext) -> NatsParser:
        return NatsParser(self._limits)


def _json(raw: bytes, what: str) -> dict[str, Any]:
    try:
        value = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise ProtocolError(f"NATS: {what} is not valid JSON: {str(exc)[:80]}") from None
    if not isinstance(value, dict):
        raise ProtocolError(f"NATS: {what} is not a JSON object")
    return value


def _str(value: Any) -> str | None:
    return text(value.encode("utf-8", "backslashreplace")) if isinstance(value, str) else None


def _bool(value: Any) -> bool | None:
    return value if isinstance(value, bool) else None


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _size(raw: bytes, what: str) -> int:
    if not _SIZE.fullmatch(raw) or int(raw) > MAX_PAYLOAD:
        raise ProtocolError(f"NATS: bad {what} {raw[:20]!r}")
    return int(raw)


class _Side:
    __slots__ = ("buf", "crlf", "payload_left")

    def __init__(self, cap: int, what: str) -> None:
        self.buf = LineBuffer(cap, what)
        self.payload_left = 0
        self.crlf = False  # a payload was read: its closing CRLF comes next


class NatsParser:
    """Sans-IO NATS parser for one connection: `info`, `connect`, `publish`, `subscribe`, `message`, `error`."""

    def __init__(self, limits: Limits = DEFAULT_LIMITS) -> None:
        self._sides = (_Side(limits.parser_buffer, "NATS client"), _Side(limits.parser_buffer, "NATS server"))

    def server_name(self) -> str | None:
        return None

    def feed(self, direction: Direction, data: bytes) -> list[L7Event]:
        if not data:
            return []
        side = self._sides[direction]
        buf = side.buf
        buf.append(data)
        out: list[L7Event] = []
        while True:
            if side.payload_left:
                side.payload_left -= buf.skip(side.payload_left)
                if side.payload_left:
                    break
            if side.crlf:
                if buf.available() < 2:
                    break
                if buf.take(2) != b"\r\n":
                    raise ProtocolError("NATS: payload not followed by CRLF")
                side.crlf = False
            line = buf.next_line()
            if line is None:
                break
            event = self._operation(side, direction, line)
            if event is not None:
                out.append(event)
        buf.compact()
        return out

    def _operation(self, side: _Side, direction: Direction, line: bytes) -> L7Event | None:
        op, _, rest = line.partition(b" ")
        if b"\t" in op:
            op, _, rest = line.partition(b"\t")
        verb = op.upper()
        args = rest.split()
        client = direction == Direction.C2S
        if verb in (b"PING", b"PONG") or (verb == b"+OK" and not client):
            return None
        if verb == b"CONNECT" and client:
            info = _json(rest, "CONNECT")
            fields: dict[str, Any] = {
                "name": _str(info.get("name")),
                "lang": _str(info.get("lang")),
                "version": _str(info.get("version")),
                "user": _str(info.get("user")),
                "protocol": _int(info.get("protocol")),
                "verbose": _bool(info.get("verbose")),
                "tls_required": _bool(info.get("tls_required")),
                "headers": _bool(info.get("headers")),
                "auth": [k for k in _CREDENTIALS if k in info],
            }
            return L7Event(APP, "connect", direction, fields)
        if verb == b"INFO" and not client:
            info = _json(rest, "INFO")
            fields = {
                "server_id": _str(info.get("server_id")),
                "server_name": _str(info.get("server_name")),
                "version": _str(info.get("version")),
                "proto": _int(info.get("proto")),
                "headers": _bool(info.get("headers")),
                "auth_required": _bool(info.get("auth_required")),
                "tls_required": _bool(info.get("tls_required")),
                "max_payload": _int(info.get("max_payload")),
            }
            return L7Event(APP, "info", direction, fields)
        if verb in (b"PUB", b"HPUB") and client:
            headers = verb == b"HPUB"
            counts = 2 if headers else 1
            if not 1 + counts <= len(args) <= 2 + counts:
                raise ProtocolError(f"NATS: {verb.decode()} with {len(args)} arguments")
            size = _size(args[-1], "payload size")
            if headers and _size(args[-2], "header size") > size:
                raise ProtocolError("NATS: HPUB header size larger than the total size")
            reply = args[1] if len(args) == 2 + counts else None
            self._payload(side, size)
            fields = {
                "subject": text(args[0]),
                "reply": None if reply is None else text(reply),
                "size": size,
                "headers": headers,
            }
            return L7Event(APP, "publish", direction, fields)
        if verb in (b"MSG", b"HMSG") and not client:
            headers = verb == b"HMSG"
            counts = 2 if headers else 1
            if not 2 + counts <= len(args) <= 3 + counts:
                raise ProtocolError(f"NATS: {verb.decode()} with {len(args)} arguments")
            size = _size(args[-1], "payload size")
            if headers and _size(args[-2], "header size") > size:
                raise ProtocolError("NATS: HMSG header size larger than the total size")
            reply = args[2] if len(args) == 3 + counts else None
            self._payload(side, size)
            fields = {
                "subject": text(args[0]),
                "sid": text(args[1]),
                "reply": None if reply is None else text(reply),
                "size": size,
                "headers": headers,
            }
            return L7Event(APP, "message", direction, fields)
        if verb == b"SUB" and client:
            if len(args) not in (2, 3):
                raise ProtocolError(f"NATS: SUB with {len(args)} arguments")
            queue = args[1] if len(args) == 3 else None
            fields = {"subject": text(args[0]), "queue": None if queue is None else text(queue), "sid": text(args[-1])}
            return L7Event(APP, "subscribe", direction, fields)
        if verb == b"UNSUB" and client:
            if len(args) not in (1, 2):
                raise ProtocolError(f"NATS: UNSUB with {len(args)} arguments")
            fields = {"sid": text(args[0]), "max": _size(args[1], "max messages") if len(args) == 2 else None}
            return L7Event(APP, "unsubscribe", direction, fields)
        if verb == b"-ERR" and not client:
            return L7Event(APP, "error", direction, {"message": text(rest.strip().strip(b"'"))})
        side_name = "client" if client else "server"
        raise ProtocolError(f"NATS: unknown {side_name} operation {op[:20]!r}")

    @staticmethod
    def _payload(side: _Side, size: int) -> None:
        side.payload_left = size
        side.crlf = True
