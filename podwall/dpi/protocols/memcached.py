"""memcached: strict detection of the text and binary protocols, and a parser of commands and responses.

Text: the client sends lower-case command lines (`get k1 k2`, `set k flags exptime bytes
[noreply]` followed by a data block of that length and CRLF, meta commands `mg`/`ms`/...);
the server answers with status lines (`STORED`, `END`, `VALUE k flags bytes` with a data
block, `STAT name value`, meta codes `HD`/`VA`/`EN`...). Binary: 24-byte headers, magic 0x80
for requests and 0x81 for responses, then extras, key and value. Detection checks the whole
first command line against its command's syntax (keys of at most 250 printable bytes,
numeric fields where numbers go), or a binary header with a known opcode, matching extras
length and consistent lengths. A text `get key` is also a valid Redis inline command: both
detectors then match and the port breaks the tie (the Redis detector only accepts these
verbs on port 6379 anyway). Data blocks and binary values stream through unbuffered.
"""

from __future__ import annotations

import re
from typing import Any, ClassVar

from podwall.core.errors import ProtocolError
from podwall.core.limits import DEFAULT_LIMITS, Limits
from podwall.core.types import PROTO_TCP, Direction
from podwall.dpi.base import DetectContext, Detection, L7Event
from podwall.dpi.wire import StreamBuffer

__all__ = ["BINARY_OPCODES", "MemcachedDetector", "MemcachedParser", "parse_command_line"]

APP = "memcached"
MAX_KEY = 250
MAX_DETECT_LINE = 2048  # a first command line longer than this is not taken as memcached
MAX_VALUE = 1 << 30  # memcached's item size ceiling (-I at most 1 GiB)
MAX_KEYS_KEPT = 16
BIN_HEADER = 24
REQUEST_MAGIC, RESPONSE_MAGIC = 0x80, 0x81

_STORAGE = frozenset({b"set", b"add", b"replace", b"append", b"prepend"})
_META = frozenset({b"mg", b"ms", b"md", b"ma", b"me"})
_NO_ARGS = frozenset({b"version", b"quit", b"mn", b"shutdown"})
VERBS = frozenset(
    {b"get", b"gets", b"gat", b"gats", b"cas", b"delete", b"incr", b"decr", b"touch", b"stats", b"flush_all",
     b"verbosity"}
) | _STORAGE | _META | _NO_ARGS  # fmt: skip
_VERB_PREFIXES = frozenset(v[:i] for v in VERBS for i in range(1, len(v) + 1))

_UINT = re.compile(rb"[0-9]{1,20}")
_INT = re.compile(rb"-?[0-9]{1,20}")
_META_FLAG = re.compile(rb"[A-Za-z][\x21-\x7e]*")
_FIRST_WORD = re.compile(rb"[^ \r\n]*")
_HTTP_TAIL = re.compile(rb".* HTTP/\d\.\d")
_CONTROL = re.compile(rb"[\x00-\x1f]")
_CONTROL_BUT_CR = re.compile(rb"[\x00-\x0c\x0e-\x1f]")

RESPONSE_WORDS = frozenset(
    {b"VALUE", b"STORED", b"NOT_STORED", b"EXISTS", b"NOT_FOUND", b"DELETED", b"TOUCHED", b"END", b"STAT",
     b"VERSION", b"OK", b"ERROR", b"CLIENT_ERROR", b"SERVER_ERROR", b"RESET", b"BUSY",
     b"HD", b"VA", b"EN", b"NF", b"NS", b"EX", b"MN", b"ME"}
)  # fmt: skip
_LONGEST_RESPONSE = 20

# opcode -> (name, extras length a request carries or None when it varies, needs a key)
BINARY_OPCODES: dict[int, tuple[str, int | None, bool]] = {
    0x00: ("get", 0, True), 0x01: ("set", 8, True), 0x02: ("add", 8, True), 0x03: ("replace", 8, True),
    0x04: ("delete", 0, True), 0x05: ("increment", 20, True), 0x06: ("decrement", 20, True),
    0x07: ("quit", 0, False), 0x08: ("flush", None, False), 0x09: ("getq", 0, True), 0x0A: ("noop", 0, False),
    0x0B: ("version", 0, False), 0x0C: ("getk", 0, True), 0x0D: ("getkq", 0, True), 0x0E: ("append", 0, True),
    0x0F: ("prepend", 0, True), 0x10: ("stat", 0, False), 0x11: ("setq", 8, True), 0x12: ("addq", 8, True),
    0x13: ("replaceq", 8, True), 0x14: ("deleteq", 0, True), 0x15: ("incrementq", 20, True),
    0x16: ("decrementq", 20, True), 0x17: ("quitq", 0, False), 0x18: ("flushq", None, False),
    0x19: ("appendq", 0, True), 0x1A: ("prependq", 0, True), 0x1B: ("verbosity", 4, False),
    0x1C: ("touch", 4, True), 0x1D: ("gat", 4, True), 0x1E: ("gatq", 4, True), 0x20: ("sasl_list_mechs", 0, False),
    0x21: ("sasl_auth", 0, True), 0x22: ("sasl_step", 0, True), 0x23: ("gatk", 4, True), 0x24: ("gatkq", 4, True),
}  # fmt: skip
BINARY_STATUS = {
    0x00: "no_error", 0x01: "key_not_found", 0x02: "key_exists", 0x03: "value_too_large", 0x04: "invalid_arguments",
    0x05: "item_not_stored", 0x06: "non_numeric_value", 0x07: "wrong_vbucket", 0x08: "auth_error",
    0x09: "auth_continue", 0x20: "auth_error", 0x21: "auth_continue", 0x81: "unknown_command",
    0x82: "out_of_memory", 0x83: "not_supported", 0x84: "internal_error", 0x85: "busy", 0x86: "temporary_failure",
}  # fmt: skip


def _key_ok(token: bytes) -> bool:
    return 0 < len(token) <= MAX_KEY and all(0x20 < c < 0x7F or c >= 0x80 for c in token)


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", "backslashreplace")


def parse_command_line(line: bytes) -> tuple[str, list[str], int] | None:
    """(command, keys, data block length or -1) of a valid text command line (without its line end), else None."""
    tokens = line.split(b" ")
    tokens = [t for t in tokens if t]
    if not tokens or _HTTP_TAIL.fullmatch(line):
        return None
    verb, args = tokens[0], tokens[1:]
    noreply = bool(args) and args[-1] == b"noreply"
    plain = args[:-1] if noreply else args
    keys: list[bytes] = []
    data = -1
    if verb in (b"get", b"gets"):
        if not plain or noreply or not all(_key_ok(k) for k in plain):
            return None
        keys = plain
    elif verb in (b"gat", b"gats"):
        if len(plain) < 2 or noreply or not _INT.fullmatch(plain[0]) or not all(_key_ok(k) for k in plain[1:]):
            return None
        keys = plain[1:]
    elif verb in _STORAGE or verb == b"cas":
        fields = 5 if verb == b"cas" else 4
        if len(plain) != fields or not _key_ok(plain[0]) or not _UINT.fullmatch(plain[1]):
            return None
        if not _INT.fullmatch(plain[2]) or not all(_UINT.fullmatch(f) for f in plain[3:]):
            return None
        keys, data = plain[:1], int(plain[3])
        if data > MAX_VALUE:
            return None
    elif verb == b"delete":
        if not 1 <= len(plain) <= 2 or not _key_ok(plain[0]) or plain[1:] not in ([], [b"0"]):
            return None
        keys = plain[:1]
    elif verb in (b"incr", b"decr", b"touch"):
        number = _UINT if verb != b"touch" else _INT
        if len(plain) != 2 or not _key_ok(plain[0]) or not number.fullmatch(plain[1]):
            return None
        keys = plain[:1]
    elif verb == b"stats":
        if noreply or not all(_key_ok(t) for t in plain):
            return None
    elif verb == b"flush_all":
        if len(plain) > 1 or not all(_INT.fullmatch(t) for t in plain):
            return None
    elif verb == b"verbosity":
        if len(plain) != 1 or not _UINT.fullmatch(plain[0]):
            return None
    elif verb in _NO_ARGS:
        if args:
            return None
    elif verb in _META:
        if not args or not _key_ok(args[0]):
            return None
        rest = args[1:]
        if verb == b"ms":
            if not rest or not _UINT.fullmatch(rest[0]):
                return None
            data = int(rest[0])
            if data > MAX_VALUE:
                return None
            rest = rest[1:]
        if verb == b"me" and rest:
            return None
        if not all(_META_FLAG.fullmatch(f) for f in rest):
            return None
        keys = args[:1]
    else:
        return None
    return verb.decode(), [_text(k) for k in keys[:MAX_KEYS_KEPT]], data


class _Text:
    """One direction of the text protocol: lines, and data blocks that stream through."""

    __slots__ = ("blocks", "data_left", "stats", "values")

    def __init__(self) -> None:
        self.data_left = -1  # bytes (with the closing CRLF) of a data block still to come
        self.values = 0  # VALUE lines since the last terminal response
        self.stats = 0
        self.blocks = 0


class _Binary:
    __slots__ = ("skip",)

    def __init__(self) -> None:
        self.skip = 0


def _check_block_end(buf: bytearray, start: int, n: int, data_left: int) -> None:
    """Consumed bytes that fall on a data block's closing CRLF must be exactly CRLF, however split."""
    for i in range(max(data_left, 0), n):
        if buf[start + i] != b"\r\n"[i - data_left]:
            raise ProtocolError("memcached: data block not terminated by CRLF")


class MemcachedParser:
    """Sans-IO memcached parser for one connection: `command` and `response` events, text or binary."""

    def __init__(self, limits: Limits = DEFAULT_LIMITS) -> None:
        self._cap = max(limits.parser_buffer, BIN_HEADER + MAX_KEY + 32)
        self._streams = (StreamBuffer(self._cap, "memcached line"), StreamBuffer(self._cap, "memcached line"))
        self._modes: list[_Text | _Binary | None] = [None, None]

    def server_name(self) -> str | None:
        return None

    def feed(self, direction: Direction, data: bytes) -> list[L7Event]:
        out: list[L7Event] = []
        stream = self._streams[direction]
        stream.append(data)
        mode = self._modes[direction]
        if mode is None and stream.available():
            first = stream.buf[stream.pos]
            mode = _Binary() if first in (REQUEST_MAGIC, RESPONSE_MAGIC) else _Text()
            self._modes[direction] = mode
        if isinstance(mode, _Text):
            self._text(direction, stream, mode, out)
        elif isinstance(mode, _Binary):
            self._binary(direction, stream, mode, out)
        stream.compact()
        return out

    # -- text ----------------------------------------------------------------------------

    def _text(self, direction: Direction, stream: StreamBuffer, state: _Text, out: list[L7Event]) -> None:
        buf = stream.buf
        while True:
            if state.data_left >= 0:
                available = len(buf) - stream.pos
                if not available:
                    return
                n = min(available, state.data_left)
                _check_block_end(buf, stream.pos, n, state.data_left - 2)
                stream.pos += n
                state.data_left -= n
                if state.data_left:
                    return
                state.data_left = -1
                continue
            pos = stream.pos
            nl = buf.find(b"\n", pos, pos + self._cap + 1)
            if nl < 0:
                if len(buf) - pos > self._cap:
                    raise ProtocolError(f"memcached: line longer than {self._cap} bytes")
                return
            line = bytes(buf[pos : nl - 1 if nl > pos and buf[nl - 1] == 13 else nl])
            stream.pos = nl + 1
            if direction == Direction.C2S:
                self._command(line, state, out)
            else:
                self._response(line, state, out)

    def _command(self, line: bytes, state: _Text, out: list[L7Event]) -> None:
        if not line:
            return
        parsed = parse_command_line(line)
        if parsed is None:
            raise ProtocolError(f"memcached: invalid command line {line[:60]!r}")
        command, keys, data = parsed
        if data >= 0:
            state.data_left = data + 2
        fields: dict[str, Any] = {"command": command, "key": keys[0] if keys else None, "protocol": "text"}
        if len(keys) > 1:
            fields["keys"] = keys
        out.append(L7Event(APP, "command", Direction.C2S, fields))

    def _response(self, line: bytes, state: _Text, out: list[L7Event]) -> None:
        tokens = line.split()
        if not tokens:
            raise ProtocolError("memcached: empty response line")
        word = tokens[0]
        if word == b"VALUE":
            if len(tokens) not in (4, 5) or not _UINT.fullmatch(tokens[3]):
                raise ProtocolError(f"memcached: invalid VALUE line {line[:60]!r}")
            state.values += 1
            state.data_left = int(tokens[3]) + 2
            return
        if word == b"STAT":
            state.stats += 1
            return
        fields: dict[str, Any] = {"protocol": "text"}
        if word == b"VA":
            if len(tokens) < 2 or not _UINT.fullmatch(tokens[1]):
                raise ProtocolError(f"memcached: invalid VA line {line[:60]!r}")
            state.data_left = int(tokens[1]) + 2
        if _UINT.fullmatch(word):
            fields.update(status="NUMBER", value=int(word))
        elif word in RESPONSE_WORDS:
            fields["status"] = word.decode()
            if word in (b"CLIENT_ERROR", b"SERVER_ERROR") or word == b"VERSION":
                key = "version" if word == b"VERSION" else "message"
                fields[key] = _text(line[len(word) + 1 :][:256])
            if word == b"END":
                fields.update(values=state.values, stats=state.stats)
                state.values = state.stats = 0
        else:
            raise ProtocolError(f"memcached: unknown response {line[:60]!r}")
        out.append(L7Event(APP, "response", Direction.S2C, fields))

    # -- binary --------------------------------------------------------------------------

    def _binary(self, direction: Direction, stream: StreamBuffer, state: _Binary, out: list[L7Event]) -> None:
        buf = stream.buf
        while True:
            available = len(buf) - stream.pos
            if state.skip:
                n = min(state.skip, available)
                stream.pos += n
                state.skip -= n
                if state.skip:
                    return
                continue
            if available < BIN_HEADER:
                return
            pos = stream.pos
            magic, opcode, key_len, extras, dtype = (
                buf[pos],
                buf[pos + 1],
                _u16(buf, pos + 2),
                buf[pos + 4],
                buf[pos + 5],
            )
            body = int.from_bytes(buf[pos + 8 : pos + 12], "big")
            expected = REQUEST_MAGIC if direction == Direction.C2S else RESPONSE_MAGIC
            if magic != expected:
                raise ProtocolError(f"memcached: bad binary magic 0x{magic:02x} at a header")
            if dtype != 0 or extras + key_len > body or body > MAX_VALUE or key_len > MAX_KEY:
                raise ProtocolError("memcached: inconsistent binary header lengths or data type")
            if available < BIN_HEADER + extras + key_len:
                return
            op = BINARY_OPCODES.get(opcode)
            start = pos + BIN_HEADER + extras
            key = _text(bytes(buf[start : start + key_len])) if key_len else None
            name = op[0] if op else f"0x{opcode:02x}"
            if direction == Direction.C2S:
                if op is None:
                    raise ProtocolError(f"memcached: unknown binary opcode 0x{opcode:02x}")
                fields: dict[str, Any] = {"command": name, "key": key, "protocol": "binary"}
                out.append(L7Event(APP, "command", direction, fields))
            else:
                status = _u16(buf, pos + 6)
                fields = {"command": name, "status": BINARY_STATUS.get(status, f"0x{status:04x}"), "protocol": "binary"}
                out.append(L7Event(APP, "response", direction, fields))
            stream.pos += BIN_HEADER + extras + key_len
            state.skip = body - extras - key_len


def _u16(buf: bytes | bytearray, pos: int) -> int:
    return int.from_bytes(buf[pos : pos + 2], "big")


def _detect_binary(data: bytes, direction: Direction) -> Detection:
    magic = REQUEST_MAGIC if direction == Direction.C2S else RESPONSE_MAGIC
    if data[0] != magic:
        return Detection.NO
    if len(data) >= 2 and data[1] not in BINARY_OPCODES:
        return Detection.NO
    if len(data) < BIN_HEADER:
        return Detection.NEED_MORE
    _, extras_expected, keyed = BINARY_OPCODES[data[1]]
    key_len, extras, dtype = _u16(data, 2), data[4], data[5]
    body = int.from_bytes(data[8:12], "big")
    if dtype != 0 or key_len > MAX_KEY or extras + key_len > body or body > MAX_VALUE:
        return Detection.NO
    if direction == Direction.C2S:
        if extras_expected is not None and extras != extras_expected:
            return Detection.NO
        if extras_expected is None and extras not in (0, 4):
            return Detection.NO
        if keyed != (key_len > 0):
            return Detection.NO
    elif _u16(data, 6) not in BINARY_STATUS:
        return Detection.NO
    return Detection.MATCH


def _detect_text_command(data: bytes) -> Detection:
    nl = data.find(b"\n", 0, MAX_DETECT_LINE)
    if nl < 0:
        if len(data) >= MAX_DETECT_LINE:
            return Detection.NO
        verb = data.split(b" ", 1)[0].rstrip(b"\r")
        if (b" " in data and verb not in VERBS) or (b" " not in data and verb not in _VERB_PREFIXES):
            return Detection.NO
        if _CONTROL_BUT_CR.search(data) or b"\r" in data[:-1]:
            return Detection.NO
        return Detection.NEED_MORE
    if nl == 0 or data[nl - 1] != 13:
        return Detection.NO  # clients end lines with CRLF; a bare LF is tolerated only after detection
    line = data[: nl - 1]
    if _CONTROL.search(line):
        return Detection.NO
    return Detection.MATCH if parse_command_line(line) is not None else Detection.NO


def _detect_text_response(data: bytes) -> Detection:
    """Responses never decide; a first word memcached never sends rules it out."""
    match = _FIRST_WORD.match(data)
    word = match.group(0) if match else b""
    if len(word) == len(data):  # the word may still grow
        if len(word) <= _LONGEST_RESPONSE and (word.isdigit() or any(w.startswith(word) for w in RESPONSE_WORDS)):
            return Detection.NEED_MORE
        return Detection.NO
    return Detection.NEED_MORE if word in RESPONSE_WORDS or _UINT.fullmatch(word) else Detection.NO


class MemcachedDetector:
    """Names a flow `memcached` from a valid first command (text or binary) or a binary response header."""

    name: ClassVar[str] = APP
    transports: ClassVar[frozenset[int]] = frozenset({PROTO_TCP})
    ports: ClassVar[frozenset[int]] = frozenset({11211})

    def __init__(self, limits: Limits = DEFAULT_LIMITS) -> None:
        self._limits = limits

    def detect(self, direction: Direction, data: bytes, ctx: DetectContext) -> Detection:
        if not data:
            return Detection.NEED_MORE
        if data[0] in (REQUEST_MAGIC, RESPONSE_MAGIC):
            return _detect_binary(data, direction)
        if direction == Direction.C2S:
            return _detect_text_command(data)
        return _detect_text_response(data)

    def parser(self, ctx: DetectContext) -> MemcachedParser:
        return MemcachedParser(self._limits)
