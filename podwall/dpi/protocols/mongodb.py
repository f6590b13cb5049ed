"""MongoDB wire protocol: strict detection by message header, and a parser of commands and replies.

Every message starts with a little-endian header `messageLength, requestID, responseTo,
opCode`. Commands travel as OP_MSG (a kind-0 BSON body whose first key names the command and
whose value is usually the collection; `$db` names the database) or, from older drivers and
for the handshake, OP_QUERY on `<db>.$cmd`. Replies are OP_MSG or OP_REPLY documents with
`ok`, `errmsg`, `code`. OP_COMPRESSED is reported but not decompressed. Only the first
`Limits.parser_buffer` bytes of a message are read (commands and their names come first);
the rest streams through unbuffered. BSON is read flat: nested documents are skipped by
their length, so nesting costs nothing and needs no recursion.
"""

from __future__ import annotations

import struct
from typing import Any, ClassVar

from podwall.core.errors import ProtocolError
from podwall.core.limits import DEFAULT_LIMITS, Limits
from podwall.core.types import PROTO_TCP, Direction
from podwall.dpi.base import DetectContext, Detection, L7Event
from podwall.dpi.wire import FramedStream

__all__ = ["OPCODES", "MongoDetector", "MongoParser", "bson_fields"]

APP = "mongodb"
HEADER = 16
MAX_MESSAGE = 48 * 1000 * 1000  # maxMessageSizeBytes of every MongoDB server
CAPTURE = 256  # characters of a string value kept in an event

OP_REPLY, OP_UPDATE, OP_INSERT, OP_QUERY = 1, 2001, 2002, 2004
OP_GET_MORE, OP_DELETE, OP_KILL_CURSORS, OP_COMPRESSED, OP_MSG = 2005, 2006, 2007, 2012, 2013
OPCODES = {
    OP_REPLY: "OP_REPLY", OP_UPDATE: "OP_UPDATE", OP_INSERT: "OP_INSERT", OP_QUERY: "OP_QUERY",
    OP_GET_MORE: "OP_GET_MORE", OP_DELETE: "OP_DELETE", OP_KILL_CURSORS: "OP_KILL_CURSORS",
    OP_COMPRESSED: "OP_COMPRESSED", OP_MSG: "OP_MSG",
}  # fmt: skip
# Legacy write/read opcodes: the command they stand for, and where the collection name starts.
_LEGACY = {OP_UPDATE: ("update", 4), OP_INSERT: ("insert", 4), OP_GET_MORE: ("getmore", 4), OP_DELETE: ("delete", 4)}
_MSG_FLAGS = 0x1 | 0x2 | 0x10000  # checksumPresent, moreToCome, exhaustAllowed
_COMPRESSORS = {0: "noop", 1: "snappy", 2: "zlib", 3: "zstd"}

# Fixed value sizes of BSON element types; strings, documents and binaries carry their own length.
_FIXED = {0x01: 8, 0x06: 0, 0x07: 12, 0x08: 1, 0x09: 8, 0x0A: 0, 0x10: 4, 0x11: 8, 0x12: 8, 0x13: 16, 0xFF: 0, 0x7F: 0}
_DOUBLE = struct.Struct("<d")
_STRINGS = frozenset({0x02, 0x0D, 0x0E})
_DOCUMENTS = frozenset({0x03, 0x04})


def _i32(data: bytes | bytearray, pos: int) -> int:
    return int.from_bytes(data[pos : pos + 4], "little", signed=True)


def _text(raw: bytes | bytearray) -> str:
    return bytes(raw[:CAPTURE]).decode("utf-8", "backslashreplace")


def _cstring(data: bytes | bytearray, pos: int, end: int, what: str) -> tuple[bytes, int]:
    nul = data.find(b"\x00", pos, end)
    if nul < 0:
        raise ProtocolError(f"MongoDB: unterminated {what} at offset {pos}")
    return bytes(data[pos:nul]), nul + 1


class _Truncated(Exception):
    """The document runs past the bytes we have: fine for a message cut at the capture cap.

    `first`, `value` and `found` hold what was read before the cut.
    """

    def __init__(self, first: str | None = None, value: Any = None, found: dict[str, Any] | None = None) -> None:
        super().__init__("truncated BSON document")
        self.first = first
        self.value = value
        self.found = found or {}


def bson_fields(
    data: bytes | bytearray, pos: int, end: int, wanted: frozenset[str]
) -> tuple[str | None, Any, dict[str, Any], int]:
    """Read the top level of the BSON document at `pos`: (first key, its value, wanted scalars, end offset).

    Nested documents, arrays and binaries are skipped by their length; scalar values are
    decoded only for the first key and `wanted` keys. A document that runs past `end` raises
    `_Truncated`; anything malformed within `end` raises ProtocolError.
    """
    if pos + 4 > end:
        raise _Truncated
    size = _i32(data, pos)
    if size < 5 or size > MAX_MESSAGE:
        raise ProtocolError(f"MongoDB: bad BSON document length {size} at offset {pos}")
    state: list[Any] = [None, None, {}]
    try:
        return _walk(data, pos, size, end, wanted, state)
    except _Truncated:
        raise _Truncated(*state) from None


def _walk(
    data: bytes | bytearray, pos: int, size: int, end: int, wanted: frozenset[str], state: list[Any]
) -> tuple[str | None, Any, dict[str, Any], int]:
    """The element loop of `bson_fields`; `state` is [first key, its value, found] as read so far."""
    doc_end = pos + size
    limit = min(doc_end, end)
    i = pos + 4
    found: dict[str, Any] = state[2]
    while True:
        if i >= limit:
            raise _Truncated
        kind = data[i]
        if kind == 0:
            if i + 1 != doc_end:
                raise ProtocolError(f"MongoDB: BSON document ends at {i + 1}, its length says {doc_end}")
            return state[0], state[1], found, doc_end
        nul = data.find(b"\x00", i + 1, limit)
        if nul < 0:
            raise _Truncated
        name = bytes(data[i + 1 : nul]).decode("utf-8", "backslashreplace")
        i = nul + 1
        value: Any = None
        if kind in _FIXED:
            n = _FIXED[kind]
            if i + n > limit:
                raise _Truncated
            if kind == 0x01:
                value = _DOUBLE.unpack_from(data, i)[0]
            elif kind == 0x08:
                value = data[i] != 0
            elif kind == 0x10:
                value = _i32(data, i)
            elif kind == 0x12:
                value = int.from_bytes(data[i : i + 8], "little", signed=True)
            i += n
        elif kind in _STRINGS:
            if i + 4 > limit:
                raise _Truncated
            n = _i32(data, i)
            if n < 1 or i + 4 + n > doc_end:
                raise ProtocolError(f"MongoDB: bad BSON string length {n} for {name!r}")
            if i + 4 + n > limit:
                raise _Truncated
            value = _text(data[i + 4 : i + 3 + n])
            i += 4 + n
        elif kind in _DOCUMENTS or kind == 0x0F:
            if i + 4 > limit:
                raise _Truncated
            n = _i32(data, i)
            if n < 5 or i + n > doc_end:
                raise ProtocolError(f"MongoDB: bad BSON nested length {n} for {name!r}")
            i += n
        elif kind == 0x05:
            if i + 4 > limit:
                raise _Truncated
            n = _i32(data, i)
            if n < 0 or i + 5 + n > doc_end:
                raise ProtocolError(f"MongoDB: bad BSON binary length {n} for {name!r}")
            i += 5 + n
        elif kind == 0x0B:
            for _ in range(2):
                nul = data.find(b"\x00", i, limit)
                if nul < 0:
                    raise _Truncated
                i = nul + 1
        elif kind == 0x0C:
            if i + 4 > limit:
                raise _Truncated
            n = _i32(data, i)
            if n < 1 or i + 16 + n > doc_end:
                raise ProtocolError(f"MongoDB: bad BSON DBPointer length {n} for {name!r}")
            i += 16 + n
        else:
            raise ProtocolError(f"MongoDB: unknown BSON type 0x{kind:02x} for {name!r}")
        if i > doc_end:
            raise ProtocolError(f"MongoDB: BSON element {name!r} runs past its document")
        if state[0] is None:
            state[0], state[1] = name, value
        elif name in wanted and name not in found:
            found[name] = value


_COMMAND_KEYS = frozenset({"$db"})
_REPLY_KEYS = frozenset({"ok", "errmsg", "code", "codeName"})


def _command_fields(body: bytes | bytearray, pos: int, end: int) -> dict[str, Any]:
    """command, collection and database from a command document (as far as the bytes go)."""
    try:
        first, value, found, _ = bson_fields(body, pos, end, _COMMAND_KEYS)
    except _Truncated as cut:
        first, value, found = cut.first, cut.value, cut.found
    return {
        "command": first,
        "collection": value if isinstance(value, str) else None,
        "database": found.get("$db"),
    }


def _reply_fields(body: bytes | bytearray, pos: int, end: int) -> dict[str, Any]:
    try:
        first, value, found, _ = bson_fields(body, pos, end, _REPLY_KEYS)
    except _Truncated as cut:
        first, value, found = cut.first, cut.value, cut.found
    if first in _REPLY_KEYS and first not in found:
        found[first] = value
    ok = found.get("ok")
    fields: dict[str, Any] = {"ok": None if ok is None else bool(ok)}
    for key in ("errmsg", "code", "codeName"):
        if key in found:
            fields[key.lower() if key != "codeName" else "code_name"] = found[key]
    return fields


def _message(head: bytes | bytearray, size: int, direction: Direction) -> L7Event:
    """The event for one message; `head` holds its first bytes (all of them when len(head) == size)."""
    complete = len(head) == size
    request_id = _i32(head, 4)
    response_to = _i32(head, 8)
    opcode = _i32(head, 12)
    fields: dict[str, Any] = {"request_id": request_id, "response_to": response_to, "opcode": OPCODES[opcode]}
    end = len(head)
    kind = "command"
    if opcode == OP_MSG:
        if end < 21:
            raise ProtocolError(f"MongoDB: OP_MSG of {size} bytes has no section")
        flags = _i32(head, 16) & 0xFFFFFFFF
        if flags & 0xFFFF & ~_MSG_FLAGS:
            raise ProtocolError(f"MongoDB: OP_MSG sets unknown required flag bits 0x{flags:08x}")
        body_end = end - 4 if complete and flags & 1 else end
        pos = 20
        body: dict[str, Any] | None = None
        sequences: list[str] = []
        while pos < body_end:
            section = head[pos]
            if section == 0:
                if body is not None:
                    raise ProtocolError("MongoDB: OP_MSG with two body sections")
                reader = _command_fields if direction == Direction.C2S and response_to == 0 else _reply_fields
                body = reader(head, pos + 1, body_end)
                if pos + 5 > body_end:
                    break
                pos += 1 + _i32(head, pos + 1)
            elif section == 1:
                if pos + 5 > body_end:
                    break
                length = _i32(head, pos + 1)
                if length < 5 or (complete and pos + 1 + length > body_end):
                    raise ProtocolError(f"MongoDB: bad document sequence length {length}")
                ident, _ = _cstring(head, pos + 5, min(pos + 1 + length, body_end), "sequence identifier")
                sequences.append(_text(ident))
                pos += 1 + length
            else:
                raise ProtocolError(f"MongoDB: unknown OP_MSG section kind {section}")
        if complete and pos != body_end:
            raise ProtocolError("MongoDB: OP_MSG sections overrun the message")
        if body is None:
            raise ProtocolError("MongoDB: OP_MSG without a body section")
        fields.update(body)
        if sequences:
            fields["sequences"] = sequences
        if "command" not in body:
            kind = "reply"
    elif opcode == OP_QUERY:
        name, pos = _cstring(head, 20, end, "fullCollectionName")
        database, _, collection = _text(name).partition(".")
        body = _command_fields(head, pos + 8, end) if pos + 8 <= end else {"command": None, "collection": None}
        if collection == "$cmd" or collection.endswith(".$cmd"):
            fields.update(body)
        else:
            fields.update({"command": "query", "collection": collection})
        fields["database"] = database
    elif opcode in _LEGACY:
        command, skip = _LEGACY[opcode]
        name, _ = _cstring(head, HEADER + skip, end, "fullCollectionName")
        database, _, collection = _text(name).partition(".")
        fields.update({"command": command, "collection": collection, "database": database})
    elif opcode == OP_KILL_CURSORS:
        fields.update({"command": "killcursors", "collection": None, "database": None})
    elif opcode == OP_REPLY:
        kind = "reply"
        if end < 36:
            raise ProtocolError(f"MongoDB: OP_REPLY of {size} bytes is shorter than its fixed fields")
        fields["number_returned"] = _i32(head, 32)
        fields.update(_reply_fields(head, 36, end) if end > 36 else {"ok": None})
    else:  # OP_COMPRESSED
        kind = "compressed"
        if end < 25:
            raise ProtocolError(f"MongoDB: OP_COMPRESSED of {size} bytes is shorter than its fixed fields")
        original = _i32(head, 16)
        fields["original_opcode"] = OPCODES.get(original, str(original))
        fields["compressor"] = _COMPRESSORS.get(head[24], str(head[24]))
    return L7Event(APP, kind, direction, fields)


def _check_header(size: int, opcode: int) -> None:
    if not HEADER <= size <= MAX_MESSAGE:
        raise ProtocolError(f"MongoDB: message length {size} outside {HEADER}..{MAX_MESSAGE}")
    if opcode not in OPCODES:
        raise ProtocolError(f"MongoDB: unknown opcode {opcode}")


class MongoParser:
    """Sans-IO MongoDB parser for one connection: `command`, `reply` and `compressed` events."""

    def __init__(self, limits: Limits = DEFAULT_LIMITS) -> None:
        cap = max(limits.parser_buffer, HEADER + 24)
        self._sides = (FramedStream(cap, "MongoDB message"), FramedStream(cap, "MongoDB message"))

    def server_name(self) -> str | None:
        return None

    def feed(self, direction: Direction, data: bytes) -> list[L7Event]:
        out: list[L7Event] = []
        side = self._sides[direction]
        stream = side.stream
        stream.append(data)
        buf = stream.buf
        while (pos := side.next_frame(HEADER)) >= 0:
            size = _i32(buf, pos)
            _check_header(size, _i32(buf, pos + 12))
            head = side.take_frame(size)
            if head is None:
                break
            out.append(_message(head, size, direction))
        stream.compact()
        return out


def _detect_header(data: bytes, direction: Direction) -> Detection:
    """Header sanity, then enough of the body to rule out look-alikes."""
    n = len(data)
    if n >= 4:
        size = _i32(data, 0)
        if not 26 <= size <= MAX_MESSAGE:
            return Detection.NO
    if n < HEADER:
        return Detection.NEED_MORE
    response_to = _i32(data, 8)
    opcode = _i32(data, 12)
    if opcode not in OPCODES:
        return Detection.NO
    request = response_to in (0, -1)  # -1 is what some mongos/drivers put in a request's responseTo
    if direction == Direction.C2S and not request and opcode != OP_MSG:
        return Detection.NO
    if opcode == OP_REPLY and request:
        return Detection.NO
    need = min(size, 64)
    if n < need:
        return Detection.NEED_MORE
    if opcode == OP_MSG:
        flags = _i32(data, 16) & 0xFFFFFFFF
        if flags & ~_MSG_FLAGS or data[20] not in (0, 1):
            return Detection.NO
        doc = _i32(data, 21)
        return Detection.MATCH if 5 <= doc <= size - 21 else Detection.NO
    if opcode == OP_QUERY:
        nul = data.find(b"\x00", 20, min(n, size, 20 + 256))
        if nul < 0:
            return Detection.NEED_MORE if n < size and n < 20 + 256 else Detection.NO
        name = data[20:nul]
        if b"." not in name or not all(0x20 < c < 0x7F for c in name):
            return Detection.NO
        if nul + 13 > n:
            return Detection.NEED_MORE if n < size else Detection.NO
        doc = _i32(data, nul + 9)
        return Detection.MATCH if 5 <= doc <= size - (nul + 9) else Detection.NO
    if opcode == OP_REPLY:
        return Detection.MATCH if size >= 36 and _i32(data, 32) >= 0 else Detection.NO
    if opcode == OP_COMPRESSED:
        return Detection.MATCH if _i32(data, 16) in OPCODES and data[24] in _COMPRESSORS else Detection.NO
    return Detection.NO  # legacy writes alone are too rare to decide on


class MongoDetector:
    """Names a flow `mongodb` from a sane message header and body start, in either direction."""

    name: ClassVar[str] = APP
    transports: ClassVar[frozenset[int]] = frozenset({PROTO_TCP})
    ports: ClassVar[frozenset[int]] = frozenset({27017, 27018, 27019})

    def __init__(self, limits: Limits = DEFAULT_LIMITS) -> None:
        self._limits = limits

    def detect(self, direction: Direction, data: bytes, ctx: DetectContext) -> Detection:
        if not data:
            return Detection.NEED_MORE
        return _detect_header(data, direction)

    def parser(self, ctx: DetectContext) -> MongoParser:
        return MongoParser(self._limits)
