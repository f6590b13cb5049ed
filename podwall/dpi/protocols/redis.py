"""Redis (RESP2 and RESP3): detection by a known command, and a parser of commands and replies.

Clients send arrays of bulk strings (`*2\\r\\n$3\\r\\nGET\\r\\n$1\\r\\nk\\r\\n`) or inline commands
(`PING\\r\\n`); servers answer with any RESP3 type. Both directions are parsed incrementally:
bytes are consumed element by element, large bulk strings stream through (only their first
`CAPTURE` bytes are kept), and nesting depth and element counts are bounded. A client that
sends anything but a flat array of bulk strings, or a reply that breaks the grammar, is a
ProtocolError. An aggregate reply is reported as soon as its header is read (its type and
element count are all its event says); its elements are then checked and skipped. Detection
needs a client command whose name Redis knows; replies alone only keep the candidate alive.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, ClassVar

from podwall.core.errors import ProtocolError
from podwall.core.limits import DEFAULT_LIMITS, Limits
from podwall.core.types import PROTO_TCP, Direction
from podwall.dpi.base import DetectContext, Detection, L7Event
from podwall.dpi.wire import StreamBuffer

__all__ = ["COMMANDS", "RedisDetector", "RedisParser", "command_key"]

APP = "redis"
CAPTURE = 256  # bytes of a string value kept in an event
MAX_ARGS_KEPT = 16  # command arguments kept to find the key (all are still parsed)
MAX_DEPTH = 32  # nesting of aggregate replies
MAX_ELEMENTS = 1 << 24  # declared elements of one aggregate
MAX_BULK = 512 * 1024 * 1024  # Redis's own proto-max-bulk-len default
DEFAULT_PORT = 6379

# Commands whose first key is their first argument.
_KEY_AT_1 = frozenset(
    {
        "APPEND", "BITCOUNT", "BITFIELD", "BITFIELD_RO", "BITPOS", "BLMOVE", "BLPOP", "BRPOP", "BRPOPLPUSH",
        "BZPOPMAX", "BZPOPMIN", "COPY", "DECR", "DECRBY", "DEL", "DUMP", "EXISTS", "EXPIRE", "EXPIREAT",
        "EXPIRETIME", "GEOADD", "GEODIST", "GEOHASH", "GEOPOS", "GEORADIUS", "GEORADIUS_RO",
        "GEORADIUSBYMEMBER", "GEORADIUSBYMEMBER_RO", "GEOSEARCH", "GEOSEARCHSTORE", "GET", "GETBIT",
        "GETDEL", "GETEX", "GETRANGE", "GETSET", "HDEL", "HEXISTS", "HEXPIRE", "HGET", "HGETALL", "HINCRBY",
        "HINCRBYFLOAT", "HKEYS", "HLEN", "HMGET", "HMSET", "HPERSIST", "HRANDFIELD", "HSCAN", "HSET",
        "HSETNX", "HSTRLEN", "HTTL", "HVALS", "INCR", "INCRBY", "INCRBYFLOAT", "LCS", "LINDEX", "LINSERT",
        "LLEN", "LMOVE", "LPOP", "LPOS", "LPUSH", "LPUSHX", "LRANGE", "LREM", "LSET", "LTRIM", "MGET",
        "MOVE", "MSET", "MSETNX", "PERSIST", "PEXPIRE", "PEXPIREAT", "PEXPIRETIME", "PFADD", "PFCOUNT",
        "PFMERGE", "PSETEX", "PTTL", "RENAME", "RENAMENX", "RESTORE", "RPOP", "RPOPLPUSH", "RPUSH",
        "RPUSHX", "SADD", "SCARD", "SDIFF", "SDIFFSTORE", "SET", "SETBIT", "SETEX", "SETNX", "SETRANGE",
        "SINTER", "SINTERSTORE", "SISMEMBER", "SMEMBERS", "SMISMEMBER", "SMOVE", "SORT", "SORT_RO", "SPOP",
        "SRANDMEMBER", "SREM", "SSCAN", "STRLEN", "SUBSTR", "SUNION", "SUNIONSTORE", "TOUCH", "TTL", "TYPE",
        "UNLINK", "WATCH", "XACK", "XADD", "XAUTOCLAIM", "XCLAIM", "XDEL", "XLEN", "XPENDING", "XRANGE",
        "XREVRANGE", "XSETID", "XTRIM", "ZADD", "ZCARD", "ZCOUNT", "ZDIFFSTORE", "ZINCRBY", "ZINTERSTORE",
        "ZLEXCOUNT", "ZMSCORE", "ZPOPMAX", "ZPOPMIN", "ZRANDMEMBER", "ZRANGE", "ZRANGEBYLEX",
        "ZRANGEBYSCORE", "ZRANGESTORE", "ZRANK", "ZREM", "ZREMRANGEBYLEX", "ZREMRANGEBYRANK",
        "ZREMRANGEBYSCORE", "ZREVRANGE", "ZREVRANGEBYLEX", "ZREVRANGEBYSCORE", "ZREVRANK", "ZSCAN",
        "ZSCORE", "ZUNIONSTORE"
    }
)  # fmt: skip
# Commands whose key comes after a count of keys: the count's index.
_NUMKEYS_AT = {
    "EVAL": 2, "EVALSHA": 2, "EVAL_RO": 2, "EVALSHA_RO": 2, "FCALL": 2, "FCALL_RO": 2,
    "ZINTER": 1, "ZUNION": 1, "ZDIFF": 1, "ZINTERCARD": 1, "SINTERCARD": 1, "LMPOP": 1, "ZMPOP": 1,
    "BLMPOP": 2, "BZMPOP": 2,
}  # fmt: skip
# Commands whose key is the second argument (after a sub-command or an operation).
_KEY_AT_2 = frozenset({"BITOP", "OBJECT", "XGROUP", "XINFO", "MEMORY"})
_KEY_AFTER_STREAMS = frozenset({"XREAD", "XREADGROUP"})
_NO_KEY = frozenset(
    {
        "ACL", "ASKING", "AUTH", "BGREWRITEAOF", "BGSAVE", "CLIENT", "CLUSTER", "COMMAND", "CONFIG",
        "DBSIZE", "DEBUG", "DISCARD", "ECHO", "EXEC", "FAILOVER", "FLUSHALL", "FLUSHDB", "FUNCTION",
        "HELLO", "INFO", "KEYS", "LASTSAVE", "LATENCY", "LOLWUT", "MIGRATE", "MODULE", "MONITOR", "MULTI",
        "PING", "PSUBSCRIBE", "PSYNC", "PUBLISH", "PUBSUB", "PUNSUBSCRIBE", "QUIT", "RANDOMKEY", "READONLY",
        "READWRITE", "REPLCONF", "REPLICAOF", "RESET", "ROLE", "SAVE", "SCAN", "SCRIPT", "SELECT",
        "SHUTDOWN", "SLAVEOF", "SLOWLOG", "SPUBLISH", "SSUBSCRIBE", "SUBSCRIBE", "SUNSUBSCRIBE", "SWAPDB",
        "SYNC", "TIME", "UNSUBSCRIBE", "UNWATCH", "WAIT", "WAITAOF"
    }
)  # fmt: skip
COMMANDS = _KEY_AT_1 | _NUMKEYS_AT.keys() | _KEY_AT_2 | _KEY_AFTER_STREAMS | _NO_KEY
_COMMANDS_BYTES = tuple(c.encode() for c in COMMANDS)
_MAX_COMMAND = max(len(c) for c in COMMANDS)
# Verbs of the memcached text protocol: inline, they say Redis only on Redis's own port.
_MEMCACHED_VERBS = frozenset({"GET", "SET", "APPEND", "INCR", "DECR", "TOUCH", "QUIT"})

_INT = re.compile(rb"[-+]?[0-9]{1,20}")
_DOUBLE = re.compile(rb"[-+]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][-+]?[0-9]+)?|[-+]?inf|nan")
_INLINE_HTTP = re.compile(rb".*[ \t]HTTP/\d\.\d[ \t]*\r?")
_INLINE_CONTROL = re.compile(rb"[\x00-\x08\x0a-\x0c\x0e-\x1f]")  # control bytes but tab and CR

_TYPE_NAMES = {
    43: "simple_string", 45: "error", 58: "integer", 36: "bulk_string", 42: "array", 37: "map",
    126: "set", 44: "double", 35: "boolean", 95: "null", 40: "big_number", 61: "verbatim",
    62: "push", 124: "attribute", 33: "blob_error",
}  # fmt: skip
_AGGREGATES = frozenset(b"*%~>|")
_BLOBS = frozenset(b"$=!")


# One plain element inside an aggregate: a bulk string header (group 1: its length), an array
# header (group 2: its count), a simple string or an integer. Compiled once per line cap.
_PLAIN = rb"\$([0-9]{1,18})\r\n|\*([0-9]{1,18})\r\n|\+[^\r\n]{0,%d}\r\n|:[-+]?[0-9]{1,20}\r\n"
_plain_matchers: dict[int, Callable[[bytearray, int], re.Match[bytes] | None]] = {}


def _plain_matcher(cap: int) -> Callable[[bytearray, int], re.Match[bytes] | None]:
    matcher = _plain_matchers.get(cap)
    if matcher is None:
        # A simple string's line (type byte, text, CR) is at most `cap` bytes, as on the general path.
        matcher = _plain_matchers[cap] = re.compile(_PLAIN % max(cap - 2, 0)).match
    return matcher


def _text(raw: bytes | bytearray) -> str:
    return bytes(raw[:CAPTURE]).decode("utf-8", "backslashreplace")


def command_key(command: str, args: list[bytes]) -> str | None:
    """The first key a command names (args[0] is the command itself), when it has one."""
    index: int | None = None
    if command in _KEY_AT_1:
        index = 1
    elif command in _KEY_AT_2:
        index = 2
    elif command in _NUMKEYS_AT:
        at = _NUMKEYS_AT[command]
        if at < len(args) and args[at].isdigit() and int(args[at]) > 0:
            index = at + 1
    elif command in _KEY_AFTER_STREAMS:
        for i, arg in enumerate(args):
            if arg.upper() == b"STREAMS":
                index = i + 1
                break
    if index is None or index >= len(args):
        return None
    return _text(args[index])


def _check_crlf(buf: bytearray, start: int, n: int, data_left: int, what: str) -> None:
    """The consumed bytes `buf[start:start+n]` that fall on a blob's closing CRLF must be exactly that.

    `data_left` is how many payload bytes preceded the CRLF at `start` (negative when the CR
    was consumed by an earlier feed), so the check holds however the blob is split.
    """
    for i in range(max(data_left, 0), n):
        if buf[start + i] != b"\r\n"[i - data_left]:
            raise ProtocolError(f"{what} not terminated by CRLF")


def _number(line: bytes, what: str) -> int:
    if line.isdigit() and len(line) < 20:
        return int(line)
    if not _INT.fullmatch(line):
        raise ProtocolError(f"RESP: invalid {what} {line[:40]!r}")
    return int(line)


class _Frame:
    """An aggregate reply being read: how many elements are still to come."""

    __slots__ = ("attribute", "remaining")

    def __init__(self, remaining: int, attribute: bool) -> None:
        self.remaining = remaining
        self.attribute = attribute


class _Replies:
    """Incremental reader of RESP3 values from the server."""

    __slots__ = ("blob_left", "blob_type", "captured", "stack", "stream", "top_size")

    def __init__(self, cap: int) -> None:
        self.stream = StreamBuffer(cap, "Redis reply line")
        self.stack: list[_Frame] = []
        self.blob_left = -1  # bytes (with CRLF) of a bulk/verbatim/blob error still to come
        self.blob_type = 0
        self.captured = bytearray()
        self.top_size = 0

    def run(self, out: list[L7Event]) -> None:
        stream = self.stream
        buf = stream.buf
        while True:
            if self.blob_left >= 0:
                if not self._blob(out):
                    return
                continue
            if self.stack:
                self._nested(out)
            pos = stream.pos
            nl = buf.find(b"\n", pos, pos + stream.cap + 1)
            if nl < 0:
                if len(buf) - pos > stream.cap:
                    raise ProtocolError(f"RESP: reply line longer than {stream.cap} bytes")
                return
            if nl == pos or buf[nl - 1] != 13:
                raise ProtocolError("RESP: line not terminated by CRLF")
            kind = buf[pos]
            line = bytes(buf[pos + 1 : nl - 1])
            stream.pos = nl + 1
            self._item(kind, line, out)

    def _nested(self, out: list[L7Event]) -> None:
        """Fast path: consume the complete, plain elements inside an aggregate in one tight loop.

        Nested values are only counted, never reported, and big replies (COMMAND's is ~10,000
        elements) are mostly flat bulk strings, integers, simple strings and arrays: one regex
        match per element checks its grammar, and the innermost count lives in a local.
        Anything else, anything incomplete and anything malformed is left to the general path
        (`_item`), which reports errors and handles partial data.
        """
        stack = self.stack
        frame = stack[-1]
        if frame.attribute:
            return
        stream = self.stream
        buf = stream.buf
        pos = stream.pos
        end = len(buf)
        match = _plain_matcher(stream.cap)
        left = frame.remaining
        depth = len(stack)
        while True:
            m = match(buf, pos)
            if m is None:
                break
            which = m.lastindex
            if which is None:  # simple string or integer
                pos = m.end()
            elif which == 1:  # bulk string: its bytes and CRLF must be buffered
                after = m.end() + int(m[1])
                if after + 2 > end or buf[after] != 13 or buf[after + 1] != 10:
                    break
                pos = after + 2
            else:  # array
                size = int(m[2])
                if size > MAX_ELEMENTS or depth >= MAX_DEPTH:
                    break
                pos = m.end()
                if size:
                    frame.remaining = left
                    frame = _Frame(size, False)
                    stack.append(frame)
                    left = size
                    depth += 1
                    continue
            left -= 1
            while not left:
                stack.pop()
                if not stack:  # the reply was reported at its header
                    stream.pos = pos
                    return
                frame = stack[-1]
                if frame.attribute:
                    # The completed element counts against an attribute: the general rules apply.
                    stream.pos = pos
                    self._countdown(out)
                    return
                left = frame.remaining - 1
                depth -= 1
        frame.remaining = left
        stream.pos = pos

    def _item(self, kind: int, line: bytes, out: list[L7Event]) -> None:
        if kind in _BLOBS:
            size = _number(line, "length")
            if size == -1 and kind == 36:  # RESP2 null bulk string
                self._value(kind, None, out)
                return
            if not 0 <= size <= MAX_BULK:
                raise ProtocolError(f"RESP: bad {_TYPE_NAMES[kind]} length {size}")
            self.blob_type = kind
            self.blob_left = size + 2
            self.top_size = size
            self.captured = bytearray()
            return
        if kind in _AGGREGATES:
            count = _number(line, "element count")
            if count == -1 and kind in (42, 62):  # RESP2 null array
                self._value(kind, None, out)
                return
            if not 0 <= count <= MAX_ELEMENTS:
                raise ProtocolError(f"RESP: bad {_TYPE_NAMES[kind]} count {count}")
            elements = count * 2 if kind in (37, 124) else count
            if elements == 0:
                self._value(kind, count, out)
                return
            if len(self.stack) >= MAX_DEPTH:
                raise ProtocolError(f"RESP: nesting deeper than {MAX_DEPTH}")
            if not self.stack:
                # Type and element count are all a reply event says: report it now, so that a
                # consumer that stops after the first reply (detect depth) skips its elements.
                self._reply(kind, count, out)
            self.stack.append(_Frame(elements, kind == 124))
            return
        value: Any
        if kind in (43, 45):
            value = None if self.stack else _text(line)  # nested values are counted, not reported
        elif kind == 58:
            value = _number(line, "integer")
        elif kind == 44:
            if not _DOUBLE.fullmatch(line):
                raise ProtocolError(f"RESP: invalid double {line[:40]!r}")
            value = float(line)
        elif kind == 35:
            if line not in (b"t", b"f"):
                raise ProtocolError(f"RESP: invalid boolean {line[:10]!r}")
            value = line == b"t"
        elif kind == 95:
            if line:
                raise ProtocolError("RESP: null with a payload")
            value = None
        elif kind == 40:
            if not re.fullmatch(rb"[-+]?[0-9]+", line):
                raise ProtocolError(f"RESP: invalid big number {line[:40]!r}")
            value = _text(line)
        else:
            raise ProtocolError(f"RESP: unknown type byte {chr(kind)!r}")
        self._value(kind, value, out)

    def _blob(self, out: list[L7Event]) -> bool:
        stream = self.stream
        available = len(stream.buf) - stream.pos
        if available == 0:
            return False
        n = min(available, self.blob_left)
        start = stream.pos
        data_left = self.blob_left - 2  # bytes before the closing CRLF
        keep = min(n, max(data_left, 0), CAPTURE - len(self.captured))
        if keep > 0 and not self.stack:
            self.captured += stream.buf[start : start + keep]
        _check_crlf(stream.buf, start, n, data_left, "RESP: bulk string")
        stream.pos += n
        self.blob_left -= n
        if self.blob_left > 0:
            return True
        kind = self.blob_type
        self.blob_left = -1
        raw = bytes(self.captured)
        if kind == 61 and not self.stack:
            if self.top_size < 4 or raw[3:4] != b":":
                raise ProtocolError("RESP: verbatim string without a format prefix")
            raw = raw[4:]
        self._value(kind, _text(raw), out)
        return True

    def _value(self, kind: int, value: Any, out: list[L7Event]) -> None:
        """One complete value: at the top it is a reply, inside an aggregate it counts down."""
        stack = self.stack
        if not stack:
            self._reply(kind, value, out)
            return
        if kind == 124:
            return  # an (empty) attribute annotates the next element and is not one itself
        self._countdown(out)

    def _countdown(self, out: list[L7Event]) -> None:
        """One element of the innermost aggregate is complete; close the aggregates it completes."""
        stack = self.stack
        stack[-1].remaining -= 1
        while stack and stack[-1].remaining == 0:
            frame = stack.pop()
            if not stack:
                return  # a reply is reported at its header; an attribute is not a reply
            if not frame.attribute:
                stack[-1].remaining -= 1

    def _reply(self, kind: int, value: Any, out: list[L7Event]) -> None:
        if kind == 124:
            return  # attributes describe the reply that follows them
        fields: dict[str, Any] = {"type": _TYPE_NAMES[kind], "value": value}
        if kind in _BLOBS and value is not None:
            fields["size"] = self.top_size
        out.append(L7Event(APP, "reply", Direction.S2C, fields))


class _Commands:
    """Incremental reader of client commands: arrays of bulk strings, or inline lines."""

    __slots__ = ("argc", "args", "bulk_left", "expected", "stream")

    def __init__(self, cap: int) -> None:
        self.stream = StreamBuffer(cap, "Redis command line")
        self.expected = 0  # bulk strings still to come in the current array
        self.argc = 0
        self.args: list[bytes] = []
        self.bulk_left = -1

    def run(self, out: list[L7Event]) -> None:
        stream = self.stream
        buf = stream.buf
        while True:
            if self.bulk_left >= 0:
                if not self._bulk(out):
                    return
                continue
            pos = stream.pos
            nl = buf.find(b"\n", pos, pos + stream.cap + 1)
            if nl < 0:
                if len(buf) - pos > stream.cap:
                    raise ProtocolError(f"Redis command: line longer than {stream.cap} bytes")
                return
            line_end = nl - 1 if nl > pos and buf[nl - 1] == 13 else nl
            line = bytes(buf[pos:line_end])
            stream.pos = nl + 1
            if self.expected:
                if line[:1] != b"$":
                    raise ProtocolError(f"Redis command: expected '$', got {line[:1]!r}")
                if line_end == nl:
                    raise ProtocolError("Redis command: line not terminated by CRLF")
                size = _number(line[1:], "bulk length")
                if not 0 <= size <= MAX_BULK:
                    raise ProtocolError(f"Redis command: bad bulk length {size}")
                self.bulk_left = size + 2
                self.args.append(b"")
            elif line[:1] == b"*":
                if line_end == nl:
                    raise ProtocolError("Redis command: line not terminated by CRLF")
                count = _number(line[1:], "argument count")
                if count > MAX_ELEMENTS:
                    raise ProtocolError(f"Redis command: {count} arguments")
                if count > 0:  # Redis ignores `*0` and `*-1` from clients
                    self.expected = count
                    self.argc = count
                    self.args = []
            else:
                words = line.split()
                if words:
                    self._emit(words, len(words), True, out)

    def _bulk(self, out: list[L7Event]) -> bool:
        stream = self.stream
        available = len(stream.buf) - stream.pos
        if available == 0:
            return False
        n = min(available, self.bulk_left)
        start = stream.pos
        data_left = self.bulk_left - 2
        keep = min(n, max(data_left, 0), CAPTURE - len(self.args[-1]))
        if keep > 0 and len(self.args) <= MAX_ARGS_KEPT:
            self.args[-1] += stream.buf[start : start + keep]
        _check_crlf(stream.buf, start, n, data_left, "Redis command: bulk string")
        stream.pos += n
        self.bulk_left -= n
        if self.bulk_left > 0:
            return True
        self.bulk_left = -1
        self.expected -= 1
        if len(self.args) > MAX_ARGS_KEPT:
            self.args.pop()
        if self.expected == 0:
            self._emit(self.args, self.argc, False, out)
        return True

    def _emit(self, args: list[bytes], argc: int, inline: bool, out: list[L7Event]) -> None:
        command = _text(args[0]).upper()
        fields = {"command": command, "key": command_key(command, args), "argc": argc, "inline": inline}
        out.append(L7Event(APP, "command", Direction.C2S, fields))


class RedisParser:
    """Sans-IO Redis parser for one connection: `command` and `reply` events."""

    def __init__(self, limits: Limits = DEFAULT_LIMITS) -> None:
        self._commands = _Commands(limits.parser_buffer)
        self._replies = _Replies(limits.parser_buffer)

    def server_name(self) -> str | None:
        return None

    def feed(self, direction: Direction, data: bytes) -> list[L7Event]:
        if not data:
            return []
        out: list[L7Event] = []
        side = self._commands if direction == Direction.C2S else self._replies
        side.stream.append(data)
        side.run(out)
        side.stream.compact()
        return out


def _is_command_prefix(word: bytes) -> bool:
    upper = word.upper()
    return any(c.startswith(upper) for c in _COMMANDS_BYTES)


def _digits_then_crlf(data: bytes, i: int, most: int) -> tuple[int, int] | Detection:
    """(value, offset after CRLF) of the decimal at `i`, or NEED_MORE on a prefix, NO otherwise."""
    j = i
    n = len(data)
    while j < n and j - i < most and 48 <= data[j] <= 57:
        j += 1
    if j == n:
        return Detection.NEED_MORE
    if j == i or data[j] != 13:
        return Detection.NO
    if j + 1 == n:
        return Detection.NEED_MORE
    if data[j + 1] != 10:
        return Detection.NO
    return int(data[i:j]), j + 2


def _detect_array(data: bytes) -> Detection:
    """`*<n>\r\n$<len>\r\n<name>` with a known command name, checked as far as bytes go."""
    count = _digits_then_crlf(data, 1, 7)
    if isinstance(count, Detection):
        return count
    if count[0] == 0:
        return Detection.NO
    i = count[1]
    if i == len(data):
        return Detection.NEED_MORE
    if data[i] != 36:  # $
        return Detection.NO
    size = _digits_then_crlf(data, i + 1, 3)
    if isinstance(size, Detection):
        return size
    length, start = size
    name = bytes(data[start : start + length])
    if len(name) == length:
        return Detection.MATCH if name.upper().decode("latin-1") in COMMANDS else Detection.NO
    return Detection.NEED_MORE if _is_command_prefix(name) else Detection.NO


def detect_command(data: bytes, server_port: int) -> Detection:
    """MATCH when the client's first bytes are a Redis command Redis knows."""
    if data[:1] == b"*":
        return _detect_array(data)
    # inline: a known command name, then arguments, on one line that is not an HTTP request line
    nl = data.find(b"\n", 0, 1024)
    line = data if nl < 0 else data[:nl]
    word = line.split(b" ", 1)[0].rstrip(b"\r")
    if not word or len(word) > _MAX_COMMAND or not word.isalpha():
        return Detection.NO
    if nl < 0:
        if len(data) >= 1024:
            return Detection.NO
        if b" " not in line:
            return Detection.NEED_MORE if _is_command_prefix(word) else Detection.NO
    name = word.upper().decode()
    if name not in COMMANDS:
        return Detection.NO
    if name in _MEMCACHED_VERBS and server_port != DEFAULT_PORT:
        return Detection.NO
    if nl < 0:
        return Detection.NEED_MORE
    if _INLINE_HTTP.fullmatch(line) or _INLINE_CONTROL.search(line):
        return Detection.NO
    return Detection.MATCH


def detect_reply(data: bytes) -> Detection:
    """Replies never decide on their own; anything else from the server rules Redis out."""
    return Detection.NEED_MORE if data[0] in _TYPE_NAMES else Detection.NO


class RedisDetector:
    """Names a flow `redis` from a client command; server replies only keep it a candidate."""

    name: ClassVar[str] = APP
    transports: ClassVar[frozenset[int]] = frozenset({PROTO_TCP})
    ports: ClassVar[frozenset[int]] = frozenset({DEFAULT_PORT, 6380, 26379})

    def __init__(self, limits: Limits = DEFAULT_LIMITS) -> None:
        self._limits = limits

    def detect(self, direction: Direction, data: bytes, ctx: DetectContext) -> Detection:
        if not data:
            return Detection.NEED_MORE
        if direction == Direction.C2S:
            return detect_command(data, ctx.server_port)
        return detect_reply(data)

    def parser(self, ctx: DetectContext) -> RedisParser:
        return RedisParser(self._limits)
