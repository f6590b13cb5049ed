"""Cassandra CQL native protocol v3-v5 and the inter-node handshake: detection and a frame parser.

A CQL frame has a 9-byte header: version (0x03-0x05 for requests, 0x83-0x85 for responses),
flags, a 2-byte stream id, an opcode and a 4-byte body length. Drivers open with OPTIONS or
STARTUP; the detector also accepts a QUERY or PREPARE whose body holds readable CQL, for
captures that begin mid-session. Requests give `request` events (opcode, query text,
STARTUP options), responses `response` or `error` events. Compressed bodies are not
inflated: their events carry the opcode only. In v5, once the server answers STARTUP
(READY or AUTHENTICATE), frames are wrapped in checksummed segments, which this parser does
not read: it stops there. Connections between Cassandra nodes (port 7000) open with the
messaging-service magic 0xCA552DFA; nDPI names them Cassandra too, so they are `cassandra`
here with one `internode` event, after which parsing stops.
"""

from __future__ import annotations

from typing import Any, ClassVar

from podwall.core.errors import ProtocolError
from podwall.core.limits import DEFAULT_LIMITS, Limits
from podwall.core.types import PROTO_TCP, Direction
from podwall.dpi.base import DetectContext, Detection, L7Event
from podwall.dpi.wire import PiecewiseMessages, Reader

__all__ = ["INTERNODE_MAGIC", "OPCODES", "CassandraDetector", "CassandraParser"]

APP = "cassandra"
QUERY_CAPTURE = 4096  # characters of CQL text kept in an event
TEXT_CAPTURE = 256
MAX_ITEMS = 32  # entries of string maps and lists kept
MAX_FRAME = 256 * 1024 * 1024  # Cassandra's native_transport_max_frame_size ceiling
DETECT_MAX_BODY = 8192  # a first request larger than this is not decided on
HEADER = 9
INTERNODE_MAGIC = b"\xca\x55\x2d\xfa"

OPCODES = {
    0x00: "ERROR", 0x01: "STARTUP", 0x02: "READY", 0x03: "AUTHENTICATE", 0x05: "OPTIONS",
    0x06: "SUPPORTED", 0x07: "QUERY", 0x08: "RESULT", 0x09: "PREPARE", 0x0A: "EXECUTE",
    0x0B: "REGISTER", 0x0C: "EVENT", 0x0D: "BATCH", 0x0E: "AUTH_CHALLENGE", 0x0F: "AUTH_RESPONSE",
    0x10: "AUTH_SUCCESS",
}  # fmt: skip
REQUESTS = frozenset({0x01, 0x05, 0x07, 0x09, 0x0A, 0x0B, 0x0D, 0x0F})
RESPONSES = frozenset({0x00, 0x02, 0x03, 0x06, 0x08, 0x0C, 0x0E, 0x10})
FLAG_COMPRESSION, FLAG_TRACING, FLAG_CUSTOM_PAYLOAD, FLAG_WARNING, FLAG_BETA = 0x01, 0x02, 0x04, 0x08, 0x10
VALID_FLAGS = {3: 0x03, 4: 0x0F, 5: 0x1F}
RESULT_KINDS = {1: "void", 2: "rows", 3: "set_keyspace", 4: "prepared", 5: "schema_change"}
CONSISTENCY = {
    0: "ANY", 1: "ONE", 2: "TWO", 3: "THREE", 4: "QUORUM", 5: "ALL", 6: "LOCAL_QUORUM",
    7: "EACH_QUORUM", 8: "SERIAL", 9: "LOCAL_SERIAL", 10: "LOCAL_ONE",
}  # fmt: skip


def _text(raw: bytes, cap: int = TEXT_CAPTURE) -> str:
    return raw[:cap].decode("utf-8", "backslashreplace")


def _string(r: Reader, field: str) -> bytes:
    return r.take(r.u16(f"{field} length"), field)


def _long_string(r: Reader, field: str) -> bytes:
    size = r.u32(f"{field} length")
    if size >= 1 << 31:
        raise ProtocolError(f"Cassandra: negative {field} length at offset {r.pos - 4}")
    return r.take(size, field)


def _string_list(r: Reader, field: str) -> list[str]:
    items = [_text(_string(r, field)) for _ in range(r.u16(f"{field} count"))]
    return items[:MAX_ITEMS]


def _string_map(r: Reader, multi: bool) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for _ in range(r.u16("map size")):
        key = _text(_string(r, "map key"))
        value: Any = _string_list(r, "map value") if multi else _text(_string(r, "map value"))
        if len(out) < MAX_ITEMS:
            out[key] = value
    return out


def _skip_bytes_map(r: Reader) -> None:
    for _ in range(r.u16("custom payload size")):
        _string(r, "custom payload key")
        size = r.u32("custom payload value length")
        if size < 1 << 31:
            r.skip(size, "custom payload value")


def _readable(raw: bytes) -> bool:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return bool(text.strip()) and all(c.isprintable() or c in "\t\r\n" for c in text)


def _first_request(version: int, opcode: int, body: bytes) -> bool:
    """Does a whole, uncompressed first request have the body its opcode requires?"""
    r = Reader(body, what="CQL request")
    try:
        if opcode == 0x05:
            return not body
        if opcode == 0x01:
            options = _string_map(r, False)
            r.expect_end()
            return "CQL_VERSION" in options
        if opcode in (0x07, 0x09):
            return _readable(_long_string(r, "query")) and (opcode == 0x09 or r.remaining() >= 2)
    except ProtocolError:
        return False
    return False


class CassandraDetector:
    """Names a flow `cassandra` by a CQL client's first frame or the inter-node magic."""

    name: ClassVar[str] = APP
    transports: ClassVar[frozenset[int]] = frozenset({PROTO_TCP})
    ports: ClassVar[frozenset[int]] = frozenset({9042, 9142, 7000, 7001})

    def __init__(self, limits: Limits = DEFAULT_LIMITS) -> None:
        self._limits = limits

    def detect(self, direction: Direction, data: bytes, ctx: DetectContext) -> Detection:
        n = len(data)
        if n == 0:
            return Detection.NEED_MORE
        if direction == Direction.S2C:
            return Detection.NEED_MORE if 0x83 <= data[0] <= 0x85 else Detection.NO
        if data[0] == INTERNODE_MAGIC[0]:
            if not INTERNODE_MAGIC.startswith(data[:4]):
                return Detection.NO
            return Detection.MATCH if n >= 4 else Detection.NEED_MORE
        version = data[0]
        if not 3 <= version <= 5:
            return Detection.NO
        if (n >= 2 and data[1] & ~VALID_FLAGS[version] & 0xFF) or (n >= 2 and data[1] & FLAG_COMPRESSION):
            return Detection.NO
        if n >= 5 and data[4] not in (0x01, 0x05, 0x07, 0x09):
            return Detection.NO
        if n >= 6 and data[5] != 0:
            return Detection.NO  # lengths of a first request fit in far fewer bytes
        if n < HEADER:
            return Detection.NEED_MORE
        length = int.from_bytes(data[5:9], "big")
        if length > DETECT_MAX_BODY or (data[4] == 0x05) != (length == 0):
            return Detection.NO
        if n < HEADER + length:
            return Detection.NEED_MORE
        body = data[HEADER : HEADER + length]
        if data[1] & FLAG_CUSTOM_PAYLOAD:
            return Detection.NO  # drivers never open with a custom payload
        return Detection.MATCH if _first_request(version, data[4], body) else Detection.NO

    def parser(self, ctx: DetectContext) -> CassandraParser:
        return CassandraParser(self._limits)


class _Frames(PiecewiseMessages):
    """One direction's frames; bodies stream through and only `keep` bytes are held."""

    __slots__ = ("header",)

    def __init__(self, keep: int, what: str) -> None:
        super().__init__(keep, what)
        self.header = b""

    def next(self, data: bytes, pos: int, response: bool) -> tuple[int, tuple[bytes, bytes, int] | None]:
        """Consume from `data[pos:]` to the end of one frame: (new pos, (header, body prefix, size) or None)."""
        if not self.in_body:
            pos = self.gather_head(data, pos, HEADER)
            if len(self.head) < HEADER:
                return pos, None
            header = bytes(self.head)
            self.head.clear()
            version = header[0] & 0x7F
            if not 3 <= version <= 5 or bool(header[0] & 0x80) != response:
                raise ProtocolError(f"{self.what}: bad version byte 0x{header[0]:02x}")
            if header[1] & ~VALID_FLAGS[version] & 0xFF:
                raise ProtocolError(f"{self.what}: unknown flags 0x{header[1]:02x} for v{version}")
            if header[4] not in (RESPONSES if response else REQUESTS):
                raise ProtocolError(f"{self.what}: opcode 0x{header[4]:02x} not valid in this direction")
            length = int.from_bytes(header[5:9], "big")
            if length > MAX_FRAME:
                raise ProtocolError(f"{self.what}: body length {length} over {MAX_FRAME}")
            self.header = header
            self.left = length
            self.body.clear()
            self.in_body = True
        pos = self.gather_body(data, pos)
        if self.left:
            return pos, None
        self.in_body = False
        header = self.header
        return pos, (header, bytes(self.body), int.from_bytes(header[5:9], "big"))


class CassandraParser:
    """Sans-IO Cassandra parser: CQL requests and responses, or the inter-node handshake."""

    def __init__(self, limits: Limits = DEFAULT_LIMITS) -> None:
        keep = max(64, min(limits.parser_buffer, 1 << 16))
        self._requests = _Frames(keep, "CQL request frame")
        self._responses = _Frames(keep, "CQL response frame")
        self._head = bytearray()  # first client bytes, until they tell CQL from the inter-node magic
        self._mode: str | None = None  # "cql" or "internode"
        self.finished = False

    def server_name(self) -> str | None:
        return None

    def feed(self, direction: Direction, data: bytes) -> list[L7Event]:
        out: list[L7Event] = []
        if self.finished or not data:
            return out
        if self._mode is None:
            if direction == Direction.S2C:
                self._mode = "cql"
            else:
                self._head += data[: 8 - len(self._head)]
                if self._head[:1] != INTERNODE_MAGIC[:1]:
                    self._mode = "cql"
                elif len(self._head) < 8:
                    return out
                else:
                    self._internode(bytes(self._head), out)
                    return out
        pos, n = 0, len(data)
        response = direction == Direction.S2C
        frames = self._responses if response else self._requests
        while pos < n and not self.finished:
            pos, frame = frames.next(data, pos, response)
            if frame is not None:
                header, body, size = frame
                self._frame(header, body, size, out)
        return out

    def _internode(self, head: bytes, out: list[L7Event]) -> None:
        if head[:4] != INTERNODE_MAGIC:
            raise ProtocolError("Cassandra: client bytes start neither a CQL frame nor the inter-node magic")
        flags = int.from_bytes(head[4:8], "big")
        fields = {"messaging_version": (flags >> 8) & 0xFF, "header": flags}
        out.append(L7Event(APP, "internode", Direction.C2S, fields))
        self.finished = True

    def _frame(self, header: bytes, body: bytes, size: int, out: list[L7Event]) -> None:
        version, flags, opcode = header[0] & 0x7F, header[1], header[4]
        stream = int.from_bytes(header[2:4], "big", signed=True)
        response = bool(header[0] & 0x80)
        fields: dict[str, Any] = {"opcode": OPCODES[opcode], "version": version, "stream": stream}
        if flags & FLAG_COMPRESSION:
            fields["compressed"] = True
        else:
            r = Reader(body, what=f"CQL {OPCODES[opcode]} body")
            try:
                if response:
                    self._response_body(r, flags, opcode, fields)
                else:
                    if flags & FLAG_CUSTOM_PAYLOAD:
                        _skip_bytes_map(r)
                    _request_body(r, opcode, fields)
            except ProtocolError:
                if size == len(body):
                    raise
                fields["truncated"] = True  # the held prefix ended inside the body: report what was read
        kind = "request"
        if response:
            kind = "error" if opcode == 0x00 else "response"
        out.append(L7Event(APP, kind, Direction.S2C if response else Direction.C2S, fields))
        if response and version == 5 and opcode in (0x02, 0x03):
            self.finished = True  # v5 wraps every later frame in checksummed segments

    def _response_body(self, r: Reader, flags: int, opcode: int, fields: dict[str, Any]) -> None:
        if flags & FLAG_TRACING:
            r.skip(16, "tracing id")
        if flags & FLAG_WARNING:
            fields["warnings"] = _string_list(r, "warning")
        if flags & FLAG_CUSTOM_PAYLOAD:
            _skip_bytes_map(r)
        if opcode == 0x00:
            fields["code"] = r.u32("error code")
            fields["message"] = _text(_string(r, "error message"))
        elif opcode == 0x06:
            fields["options"] = _string_map(r, True)
        elif opcode == 0x03:
            fields["authenticator"] = _text(_string(r, "authenticator"))
        elif opcode == 0x08:
            result = r.u32("result kind")
            fields["result"] = RESULT_KINDS.get(result, f"kind_{result}")
            if result == 3:
                fields["keyspace"] = _text(_string(r, "keyspace"))
        elif opcode == 0x0C:
            fields["event"] = _text(_string(r, "event type"))


def _request_body(r: Reader, opcode: int, fields: dict[str, Any]) -> None:
    if opcode == 0x01:
        options = _string_map(r, False)
        fields["options"] = options
        fields["cql_version"] = options.get("CQL_VERSION")
        fields["driver_name"] = options.get("DRIVER_NAME")
        fields["compression"] = options.get("COMPRESSION")
    elif opcode in (0x07, 0x09):
        text = _long_string(r, "query")
        fields["query"] = _text(text, QUERY_CAPTURE)
        if opcode == 0x07:
            consistency = r.u16("consistency")
            fields["consistency"] = CONSISTENCY.get(consistency, str(consistency))
    elif opcode == 0x0A:
        fields["prepared_id"] = _string(r, "prepared id").hex()
    elif opcode == 0x0B:
        fields["events"] = _string_list(r, "event type")
    elif opcode == 0x0D:
        fields["batch_type"] = r.u8("batch type")
        count = r.u16("statement count")
        fields["statements"] = count
        if count and r.u8("statement kind") == 0:
            fields["query"] = _text(_long_string(r, "query"), QUERY_CAPTURE)
