"""MQTT 3.1, 3.1.1 and 5.0: detection by the CONNECT packet, and a parser of control packets.

Every packet is `byte type<<4|flags | remaining length (varint, 1-4 bytes) | body`. The
client's first packet is CONNECT with protocol name `MQTT` (level 4 or 5) or `MQIsdp`
(level 3), which is what the detector checks. The parser reads both directions packet by
packet: CONNECT (never the password), CONNACK, PUBLISH (topic and flags; the payload is only
counted and streams through however large), SUBSCRIBE/UNSUBSCRIBE (topic filters), SUBACK
and DISCONNECT; acknowledgements and pings are read and not reported. MQTT 5 properties are
skipped by their length.
"""

from __future__ import annotations

from typing import Any, ClassVar

from podwall.core.errors import ProtocolError
from podwall.core.limits import DEFAULT_LIMITS, Limits
from podwall.core.types import PROTO_TCP, Direction
from podwall.dpi.base import DetectContext, Detection, L7Event
from podwall.dpi.protocols.textline import text
from podwall.dpi.wire import Reader, StreamBuffer

__all__ = ["MqttDetector", "MqttParser"]

APP = "mqtt"
MAX_TOPICS = 32  # topic filters kept per SUBSCRIBE/UNSUBSCRIBE
MAX_REMAINING = 268_435_455  # the largest 4-byte remaining length
_PROTOCOLS = ((b"\x00\x04MQTT", (4, 5)), (b"\x00\x06MQIsdp", (3,)))
_MIN_CONNECT = 12  # name (6) + level + flags + keepalive (2) + client id length (2)

CONNECT, CONNACK, PUBLISH, SUBSCRIBE, SUBACK, UNSUBSCRIBE, DISCONNECT, AUTH = 1, 2, 3, 8, 9, 10, 14, 15
_FLAGS_TWO = frozenset({6, SUBSCRIBE, UNSUBSCRIBE})  # PUBREL, SUBSCRIBE, UNSUBSCRIBE carry flags 0b0010


def _varint_prefix(data: bytes, pos: int) -> tuple[int, int] | Detection:
    """(value, offset after) of a remaining length at `pos`, NEED_MORE if cut, NO if longer than 4 bytes."""
    value = 0
    for i in range(4):
        if pos + i >= len(data):
            return Detection.NEED_MORE
        byte = data[pos + i]
        value |= (byte & 0x7F) << (7 * i)
        if not byte & 0x80:
            return value, pos + i + 1
    return Detection.NO


class MqttDetector:
    """Matches a client's MQTT CONNECT; a server's CONNACK only keeps the candidate."""

    name: ClassVar[str] = APP
    transports: ClassVar[frozenset[int]] = frozenset({PROTO_TCP})
    ports: ClassVar[frozenset[int]] = frozenset({1883, 8883})

    def __init__(self, limits: Limits = DEFAULT_LIMITS) -> None:
        self._limits = limits

    def detect(self, direction: Direction, data: bytes, ctx: DetectContext) -> Detection:
        if not data:
            return Detection.NEED_MORE
        if direction == Direction.S2C:
            return Detection.NEED_MORE if data[:1] == b"\x20" else Detection.NO
        if data[:1] != b"\x10":
            return Detection.NO
        got = _varint_prefix(data, 1)
        if isinstance(got, Detection):
            return got
        remaining, pos = got
        if remaining < _MIN_CONNECT:
            return Detection.NO
        head = data[pos : pos + 10]
        for name, levels in _PROTOCOLS:
            n = min(len(head), len(name))
            if head[:n] != name[:n]:
                continue
            if len(head) <= len(name):
                return Detection.NEED_MORE
            if head[len(name)] not in levels:
                return Detection.NO
            if len(head) == len(name) + 1:
                return Detection.NEED_MORE
            return Detection.NO if head[len(name) + 1] & 0x01 else Detection.MATCH  # reserved flag bit
        return Detection.NO

    def parser(self, ctx: DetectContext) -> MqttParser:
        return MqttParser(self._limits)


def _varint(reader: Reader, what: str) -> int:
    value = 0
    for i in range(4):
        byte = reader.u8(what)
        value |= (byte & 0x7F) << (7 * i)
        if not byte & 0x80:
            return value
    raise ProtocolError(f"MQTT: {what} longer than 4 bytes")


def _string(reader: Reader, what: str) -> str:
    return text(reader.take(reader.u16(f"{what} length"), what))


def _skip_properties(reader: Reader) -> None:
    reader.skip(_varint(reader, "properties length"), "properties")


class _Side:
    __slots__ = ("skip_left", "stream")

    def __init__(self, cap: int, what: str) -> None:
        self.stream = StreamBuffer(cap, what)
        self.skip_left = 0  # payload bytes of a large PUBLISH still streaming through


class MqttParser:
    """Sans-IO MQTT parser for one connection: `connect`, `connack`, `publish`, `subscribe`, ... events."""

    def __init__(self, limits: Limits = DEFAULT_LIMITS) -> None:
        self._cap = limits.parser_buffer
        self._sides = (_Side(self._cap, "MQTT client packet"), _Side(self._cap, "MQTT server packet"))
        self._level = 4  # until the CONNECT says otherwise (a capture may start late)

    def server_name(self) -> str | None:
        return None

    def feed(self, direction: Direction, data: bytes) -> list[L7Event]:
        if not data:
            return []
        side = self._sides[direction]
        stream = side.stream
        stream.append(data)
        out: list[L7Event] = []
        buf = stream.buf
        while True:
            if side.skip_left:
                taken = min(side.skip_left, len(buf) - stream.pos)
                stream.pos += taken
                side.skip_left -= taken
                if side.skip_left:
                    break
            start = stream.pos
            if len(buf) - start < 2:
                break
            remaining = 0
            pos = start + 1
            for i in range(4):
                if pos >= len(buf):
                    remaining = -1
                    break
                byte = buf[pos]
                pos += 1
                remaining |= (byte & 0x7F) << (7 * i)
                if not byte & 0x80:
                    break
            else:
                raise ProtocolError("MQTT: remaining length longer than 4 bytes")
            if remaining < 0:
                break
            first = buf[start]
            kind = first >> 4
            room = self._cap - (pos - start)  # what the buffer may hold after the fixed header
            head = remaining
            if kind == PUBLISH:
                head = min(remaining, room)
            elif remaining > room:
                raise ProtocolError(f"MQTT: packet type {kind} of {remaining} bytes exceeds {self._cap}")
            if len(buf) - pos < head:
                break
            reader = Reader(bytes(buf[pos : pos + head]), what=f"MQTT packet type {kind}")
            stream.pos = pos + head
            side.skip_left = remaining - head
            event = self._packet(direction, kind, first & 0x0F, remaining, reader)
            if event is not None:
                out.append(event)
        stream.compact()
        return out

    def _packet(self, direction: Direction, kind: int, flags: int, size: int, r: Reader) -> L7Event | None:
        if kind == 0 or (kind == AUTH and self._level < 5):
            raise ProtocolError(f"MQTT: reserved packet type {kind}")
        expected_flags = 2 if kind in _FLAGS_TWO else 0
        if kind != PUBLISH and flags != expected_flags:
            raise ProtocolError(f"MQTT: packet type {kind} with flags {flags:#x}")
        v5 = self._level >= 5
        fields: dict[str, Any]
        if kind == CONNECT:
            return L7Event(APP, "connect", direction, self._connect(r))
        if kind == CONNACK:
            session_present = r.u8("acknowledge flags") & 0x01
            fields = {"code": r.u8("return code"), "session_present": bool(session_present)}
            return L7Event(APP, "connack", direction, fields)
        if kind == PUBLISH:
            qos = (flags >> 1) & 3
            if qos == 3:
                raise ProtocolError("MQTT: PUBLISH with QoS 3")
            topic = _string(r, "topic")
            packet_id = r.u16("packet identifier") if qos else None
            if v5:
                _skip_properties(r)
            fields = {
                "topic": topic,
                "qos": qos,
                "retain": bool(flags & 1),
                "dup": bool(flags & 8),
                "packet_id": packet_id,
                "payload_len": size - r.pos,
            }
            return L7Event(APP, "publish", direction, fields)
        if kind in (SUBSCRIBE, UNSUBSCRIBE):
            packet_id = r.u16("packet identifier")
            if v5:
                _skip_properties(r)
            topics: list[str] = []
            while not r.at_end():
                topic = _string(r, "topic filter")
                if kind == SUBSCRIBE:
                    r.skip(1, "subscription options")
                if len(topics) < MAX_TOPICS:
                    topics.append(topic)
            if not topics:
                raise ProtocolError(f"MQTT: {'SUBSCRIBE' if kind == SUBSCRIBE else 'UNSUBSCRIBE'} without topics")
            name = "subscribe" if kind == SUBSCRIBE else "unsubscribe"
            return L7Event(APP, name, direction, {"topics": topics, "packet_id": packet_id})
        if kind == SUBACK:
            packet_id = r.u16("packet identifier")
            if v5:
                _skip_properties(r)
            codes = list(r.take(min(r.remaining(), MAX_TOPICS), "return codes"))
            return L7Event(APP, "suback", direction, {"packet_id": packet_id, "codes": codes})
        if kind == DISCONNECT:
            code = r.u8("reason code") if v5 and not r.at_end() else 0
            return L7Event(APP, "disconnect", direction, {"code": code})
        return None

    def _connect(self, r: Reader) -> dict[str, Any]:
        name = r.take(r.u16("protocol name length"), "protocol name")
        level = r.u8("protocol level")
        if (name, level) not in ((b"MQTT", 4), (b"MQTT", 5), (b"MQIsdp", 3)):
            raise ProtocolError(f"MQTT: unknown protocol {name[:10]!r} level {level}")
        self._level = level
        flags = r.u8("connect flags")
        if flags & 0x01:
            raise ProtocolError("MQTT: CONNECT reserved flag set")
        keepalive = r.u16("keep alive")
        if level >= 5:
            _skip_properties(r)
        client_id = _string(r, "client identifier")
        will_topic = None
        if flags & 0x04:
            if level >= 5:
                _skip_properties(r)
            will_topic = _string(r, "will topic")
            r.skip(r.u16("will payload length"), "will payload")
        username = _string(r, "user name") if flags & 0x80 else None
        if flags & 0x40:
            r.skip(r.u16("password length"), "password")
        return {
            "protocol_name": name.decode("latin-1"),
            "protocol_level": level,
            "client_id": client_id,
            "username": username,
            "clean_session": bool(flags & 0x02),
            "keepalive": keepalive,
            "will_topic": will_topic,
        }
