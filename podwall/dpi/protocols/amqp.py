"""AMQP: detection by protocol header or 0-9-1 frame, and a parser of 0-9-1 method frames.

A connection opens with an 8-byte protocol header, `AMQP` and four version bytes: 0-9-1
(`0 0 9 1`), 1.0 (`0 1 0 0`), 1.0 with SASL (`3 1 0 0`) or TLS (`2 1 0 0`), or an older 0-9/0-8.
0-9-1 then exchanges frames `type (1) | channel (2) | size (4) | payload | 0xCE`; method
frames name a class and method and carry the arguments policy cares about (virtual host,
exchange, routing key, queue). Content header and body frames stream through unbuffered.
Either side may be seen first and captures often start mid-connection, so a well-formed
method frame with a known class and method decides too. AMQP 1.0 is named, not parsed.
"""

from __future__ import annotations

from typing import Any, ClassVar

from podwall.core.errors import ProtocolError
from podwall.core.limits import DEFAULT_LIMITS, Limits
from podwall.core.types import PROTO_TCP, Direction
from podwall.dpi.base import DetectContext, Detection, L7Event
from podwall.dpi.wire import Reader, StreamBuffer

__all__ = ["METHODS", "AmqpDetector", "AmqpParser", "protocol_version"]

APP = "amqp"
FRAME_END = 0xCE
FRAME_HEADER = 7
MAX_FRAME = 1 << 28  # frame-max is negotiated as a 32-bit value; anything this large is not a real frame
DETECT_FRAMES = 8  # frames the detector walks looking for a method frame

VERSIONS = {
    b"\x00\x00\x09\x01": "0-9-1",
    b"\x01\x01\x00\x09": "0-9",
    b"\x01\x01\x08\x00": "0-8",
    b"\x01\x01\x09\x01": "0-9-1",  # what some pre-standard 0-9-1 clients sent
    b"\x00\x01\x00\x00": "1.0",
    b"\x02\x01\x00\x00": "1.0-tls",
    b"\x03\x01\x00\x00": "1.0-sasl",
}
_CLASSES = {
    10: "connection", 20: "channel", 30: "access", 40: "exchange", 50: "queue", 60: "basic", 85: "confirm", 90: "tx"
}  # fmt: skip
METHODS: dict[tuple[int, int], str] = {
    (10, 10): "start", (10, 11): "start-ok", (10, 20): "secure", (10, 21): "secure-ok", (10, 30): "tune",
    (10, 31): "tune-ok", (10, 40): "open", (10, 41): "open-ok", (10, 50): "close", (10, 51): "close-ok",
    (10, 60): "blocked", (10, 61): "unblocked", (10, 70): "update-secret", (10, 71): "update-secret-ok",
    (20, 10): "open", (20, 11): "open-ok", (20, 20): "flow", (20, 21): "flow-ok", (20, 40): "close",
    (20, 41): "close-ok", (30, 10): "request", (30, 11): "request-ok",
    (40, 10): "declare", (40, 11): "declare-ok", (40, 20): "delete", (40, 21): "delete-ok", (40, 30): "bind",
    (40, 31): "bind-ok", (40, 40): "unbind", (40, 51): "unbind-ok",
    (50, 10): "declare", (50, 11): "declare-ok", (50, 20): "bind", (50, 21): "bind-ok", (50, 30): "purge",
    (50, 31): "purge-ok", (50, 40): "delete", (50, 41): "delete-ok", (50, 50): "unbind", (50, 51): "unbind-ok",
    (60, 10): "qos", (60, 11): "qos-ok", (60, 20): "consume", (60, 21): "consume-ok", (60, 30): "cancel",
    (60, 31): "cancel-ok", (60, 40): "publish", (60, 50): "return", (60, 60): "deliver", (60, 70): "get",
    (60, 71): "get-ok", (60, 72): "get-empty", (60, 80): "ack", (60, 90): "reject", (60, 100): "recover-async",
    (60, 110): "recover", (60, 111): "recover-ok", (60, 120): "nack",
    (85, 10): "select", (85, 11): "select-ok",
    (90, 10): "select", (90, 11): "select-ok", (90, 20): "commit", (90, 21): "commit-ok", (90, 30): "rollback",
    (90, 31): "rollback-ok",
}  # fmt: skip
_FRAME_TYPES = frozenset({1, 2, 3, 8})  # method, content header, content body, heartbeat


def protocol_version(header: bytes) -> str | None:
    """The AMQP version an 8-byte protocol header names, or None."""
    if header[:4] != b"AMQP":
        return None
    return VERSIONS.get(bytes(header[4:8]))


def _text(r: Reader, what: str) -> str:
    raw = r.take(r.u8(f"{what} length"), what)
    return raw.decode("utf-8", "backslashreplace")


def _long(r: Reader, what: str) -> bytes:
    return r.take(r.u32(f"{what} length"), what)


def _arguments(class_id: int, method_id: int, r: Reader) -> dict[str, Any]:
    """The arguments policy cares about, for the methods that have them."""
    key = (class_id, method_id)
    fields: dict[str, Any] = {}
    if key == (10, 10):
        r.skip(2, "version")
        _long(r, "server-properties")
        fields["mechanisms"] = _long(r, "mechanisms").decode("utf-8", "backslashreplace").split()
    elif key == (10, 11):
        _long(r, "client-properties")
        mechanism = _text(r, "mechanism")
        fields["mechanism"] = mechanism
        response = _long(r, "response")
        if mechanism == "PLAIN":
            parts = response.split(b"\x00")
            if len(parts) == 3:  # authzid NUL authcid NUL password: only the user is kept
                fields["user"] = parts[1].decode("utf-8", "backslashreplace")
    elif key == (10, 40):
        fields["vhost"] = _text(r, "virtual-host")
    elif key in ((10, 50), (20, 40)):
        fields["reply_code"] = r.u16("reply-code")
        fields["reply_text"] = _text(r, "reply-text")
    elif key == (40, 10):
        r.skip(2, "reserved")
        fields["exchange"] = _text(r, "exchange")
        fields["type"] = _text(r, "type")
    elif key in ((40, 20),):
        r.skip(2, "reserved")
        fields["exchange"] = _text(r, "exchange")
    elif key in ((50, 10), (50, 30), (50, 40), (60, 70)):
        r.skip(2, "reserved")
        fields["queue"] = _text(r, "queue")
    elif key in ((50, 20), (50, 50)):
        r.skip(2, "reserved")
        fields["queue"] = _text(r, "queue")
        fields["exchange"] = _text(r, "exchange")
        fields["routing_key"] = _text(r, "routing-key")
    elif key == (60, 20):
        r.skip(2, "reserved")
        fields["queue"] = _text(r, "queue")
        fields["consumer_tag"] = _text(r, "consumer-tag")
    elif key == (60, 40):
        r.skip(2, "reserved")
        fields["exchange"] = _text(r, "exchange")
        fields["routing_key"] = _text(r, "routing-key")
    elif key == (60, 50):
        fields["reply_code"] = r.u16("reply-code")
        fields["reply_text"] = _text(r, "reply-text")
        fields["exchange"] = _text(r, "exchange")
        fields["routing_key"] = _text(r, "routing-key")
    elif key == (60, 60):
        fields["consumer_tag"] = _text(r, "consumer-tag")
        r.skip(8 + 1, "delivery-tag, redelivered")
        fields["exchange"] = _text(r, "exchange")
        fields["routing_key"] = _text(r, "routing-key")
    elif key == (60, 71):
        r.skip(8 + 1, "delivery-tag, redelivered")
        fields["exchange"] = _text(r, "exchange")
        fields["routing_key"] = _text(r, "routing-key")
    return fields


def _method(payload: bytes | bytearray, channel: int, direction: Direction) -> L7Event:
    r = Reader(bytes(payload), what="AMQP method frame")
    class_id = r.u16("class-id")
    method_id = r.u16("method-id")
    name = METHODS.get((class_id, method_id))
    if name is None:
        raise ProtocolError(f"AMQP: unknown method {class_id}.{method_id} on channel {channel}")
    fields: dict[str, Any] = {"class": _CLASSES[class_id], "method": name, "channel": channel}
    fields.update(_arguments(class_id, method_id, r))
    return L7Event(APP, "method", direction, fields)


class _Side:
    __slots__ = ("header_checked", "skip", "stream")

    def __init__(self, cap: int) -> None:
        self.stream = StreamBuffer(cap, "AMQP frame")
        self.skip = 0  # body bytes (then the frame end) of a frame streaming through
        self.header_checked = False


class AmqpParser:
    """Sans-IO AMQP parser for one connection: `protocol_header` and 0-9-1 `method` events."""

    def __init__(self, limits: Limits = DEFAULT_LIMITS) -> None:
        self._cap = max(limits.parser_buffer, 64)
        self._sides = (_Side(self._cap), _Side(self._cap))
        self.finished = False

    def server_name(self) -> str | None:
        return None

    def feed(self, direction: Direction, data: bytes) -> list[L7Event]:
        out: list[L7Event] = []
        if self.finished:
            return out
        side = self._sides[direction]
        stream = side.stream
        stream.append(data)
        buf = stream.buf
        while not self.finished:
            available = len(buf) - stream.pos
            pos = stream.pos
            if side.skip:
                n = min(side.skip, available)
                if n and n == side.skip and buf[pos + n - 1] != FRAME_END:
                    raise ProtocolError("AMQP: frame not terminated by 0xCE")
                stream.pos += n
                side.skip -= n
                if side.skip:
                    break
                continue
            if not side.header_checked:
                if available < 1 or (buf[pos] == 0x41 and available < 8):  # 'A': maybe a protocol header
                    break
                side.header_checked = True
                if buf[pos] == 0x41:
                    version = protocol_version(bytes(buf[pos : pos + 8]))
                    if version is None:
                        raise ProtocolError(f"AMQP: unknown protocol header {bytes(buf[pos : pos + 8])!r}")
                    stream.pos += 8
                    out.append(L7Event(APP, "protocol_header", direction, {"version": version}))
                    if version != "0-9-1" or direction == Direction.S2C:
                        self.finished = True  # 1.0 is not parsed; a server header refuses the client's version
                    continue
            if available < FRAME_HEADER:
                break
            kind = buf[pos]
            channel = int.from_bytes(buf[pos + 1 : pos + 3], "big")
            size = int.from_bytes(buf[pos + 3 : pos + 7], "big")
            if kind not in _FRAME_TYPES:
                raise ProtocolError(f"AMQP: unknown frame type {kind}")
            if size > MAX_FRAME:
                raise ProtocolError(f"AMQP: frame size {size} over {MAX_FRAME}")
            if kind != 1:
                stream.pos += FRAME_HEADER
                side.skip = size + 1
                continue
            if size + FRAME_HEADER + 1 > self._cap:
                raise ProtocolError(f"AMQP: method frame of {size} bytes over the parser buffer")
            if available < size + FRAME_HEADER + 1:
                break
            if buf[pos + FRAME_HEADER + size] != FRAME_END:
                raise ProtocolError("AMQP: frame not terminated by 0xCE")
            out.append(_method(buf[pos + FRAME_HEADER : pos + FRAME_HEADER + size], channel, direction))
            stream.pos += FRAME_HEADER + size + 1
        stream.compact()
        return out


def _detect_frames(data: bytes) -> Detection:
    """MATCH on a whole method frame with a known class and method among the first frames."""
    pos = 0
    n = len(data)
    for _ in range(DETECT_FRAMES):
        if n - pos < FRAME_HEADER:
            return Detection.NEED_MORE if n - pos < 1 or data[pos] in _FRAME_TYPES else Detection.NO
        kind = data[pos]
        size = int.from_bytes(data[pos + 3 : pos + 7], "big")
        if kind not in _FRAME_TYPES or size > MAX_FRAME or (kind == 8 and size != 0):
            return Detection.NO
        if kind == 1:
            if size < 4 or size > 65536:
                return Detection.NO
            if n - pos >= FRAME_HEADER + 4:
                key = (int.from_bytes(data[pos + 7 : pos + 9], "big"), int.from_bytes(data[pos + 9 : pos + 11], "big"))
                if key not in METHODS:
                    return Detection.NO
        end = pos + FRAME_HEADER + size + 1
        if end > n:
            return Detection.NEED_MORE if size <= 65536 else Detection.NO
        if data[end - 1] != FRAME_END:
            return Detection.NO
        if kind == 1:
            return Detection.MATCH
        pos = end
    return Detection.NO


def detect_amqp(data: bytes) -> Detection:
    """A protocol header (either side), else 0-9-1 frames (a capture that began late, or the server's start)."""
    if data[:1] == b"A":
        head = data[:8]
        if any(v.startswith(head) for v in (b"AMQP" + k for k in VERSIONS)):
            return Detection.MATCH if len(head) == 8 else Detection.NEED_MORE
        return Detection.NO
    return _detect_frames(data)


class AmqpDetector:
    """Names a flow `amqp` from a protocol header or a well-formed 0-9-1 method frame, either direction."""

    name: ClassVar[str] = APP
    transports: ClassVar[frozenset[int]] = frozenset({PROTO_TCP})
    ports: ClassVar[frozenset[int]] = frozenset({5672, 5671})

    def __init__(self, limits: Limits = DEFAULT_LIMITS) -> None:
        self._limits = limits

    def detect(self, direction: Direction, data: bytes, ctx: DetectContext) -> Detection:
        if not data:
            return Detection.NEED_MORE
        return detect_amqp(data)

    def parser(self, ctx: DetectContext) -> AmqpParser:
        return AmqpParser(self._limits)
