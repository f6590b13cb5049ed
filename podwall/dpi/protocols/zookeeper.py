"""Apache ZooKeeper: detection of the client handshake or a four-letter word, and a request parser.

Every client message is a Jute record with an int32 length prefix. A session opens with a
ConnectRequest (`protocolVersion 0, lastZxidSeen, timeOut, sessionId, passwd` of 16 bytes,
optionally `readOnly`), answered by a ConnectResponse; then requests carry `xid, type` and,
for most operations, a path string; replies carry `xid, zxid, err`. Administrative clients
instead send a bare four-letter word (`ruok`, `stat`, `mntr`, ...) and read text until the
server closes. Pings (xid -2) are parsed but not reported, so they do not crowd the events.
"""

from __future__ import annotations

import re
from typing import Any, ClassVar

from podwall.core.errors import ProtocolError
from podwall.core.limits import DEFAULT_LIMITS, Limits
from podwall.core.types import PROTO_TCP, Direction
from podwall.dpi.base import DetectContext, Detection, L7Event
from podwall.dpi.wire import StreamBuffer

__all__ = ["FOUR_LETTER_WORDS", "OPS", "ZookeeperDetector", "ZookeeperParser"]

APP = "zookeeper"
_CONTROL = re.compile(rb"[\x00-\x1f\x7f]")
MAX_PACKET = 0xFFFFF + 1024  # jute.maxbuffer (1 MiB) plus header room
MAX_PATH = 4096
PING_XID = -2
NOTIFICATION_XID = -1
MAX_TIMEOUT = 24 * 3600 * 1000  # ms: far beyond any configured maxSessionTimeout

FOUR_LETTER_WORDS = frozenset(
    {b"ruok", b"stat", b"srvr", b"mntr", b"conf", b"envi", b"cons", b"crst", b"dump", b"wchs", b"wchc", b"wchp",
     b"srst", b"dirs", b"isro", b"gtmk", b"stmk", b"reqs", b"hash", b"kill"}
)  # fmt: skip
OPS: dict[int, str] = {
    0: "notification", 1: "create", 2: "delete", 3: "exists", 4: "getData", 5: "setData", 6: "getACL",
    7: "setACL", 8: "getChildren", 9: "sync", 11: "ping", 12: "getChildren2", 13: "check", 14: "multi",
    15: "create2", 16: "reconfig", 17: "checkWatches", 18: "removeWatches", 19: "createContainer",
    20: "deleteContainer", 21: "createTTL", 22: "multiRead", 100: "auth", 101: "setWatches", 102: "sasl",
    103: "getEphemerals", 104: "getAllChildrenNumber", 105: "setWatches2", 106: "addWatch", 107: "whoAmI",
    -10: "createSession", -11: "closeSession", -1: "error",
}  # fmt: skip
# Operations whose request record starts with the path.
_PATH_OPS = frozenset({1, 2, 3, 4, 5, 6, 7, 8, 9, 12, 13, 15, 17, 18, 19, 20, 21, 103, 104, 106})


def _i32(data: bytes | bytearray, pos: int) -> int:
    return int.from_bytes(data[pos : pos + 4], "big", signed=True)


def _i64(data: bytes | bytearray, pos: int) -> int:
    return int.from_bytes(data[pos : pos + 8], "big", signed=True)


def _connect_request(body: bytes | bytearray) -> dict[str, Any] | None:
    """The fields of a ConnectRequest record (without its length prefix), or None when it is not one."""
    if len(body) < 28 or _i32(body, 0) != 0:
        return None
    timeout = _i32(body, 12)
    passwd = _i32(body, 24)
    if not 0 <= timeout <= MAX_TIMEOUT or passwd not in (0, 16) or len(body) - 28 - passwd not in (0, 1):
        return None
    read_only = len(body) == 28 + passwd + 1
    if read_only and body[-1] > 1:
        return None
    return {
        "protocol_version": 0,
        "last_zxid_seen": _i64(body, 4),
        "timeout": timeout,
        "session_id": _i64(body, 16),
        "read_only": bool(read_only and body[-1]),
    }


def _connect_response(body: bytes | bytearray) -> dict[str, Any] | None:
    if len(body) < 20 or _i32(body, 0) != 0:
        return None
    passwd = _i32(body, 16)
    if passwd not in (0, 16) or len(body) - 20 - passwd not in (0, 1):
        return None
    return {"timeout": _i32(body, 4), "session_id": _i64(body, 8)}


def _path(body: bytes | bytearray, pos: int) -> str | None:
    """The path string at `pos`, or None when it is not a sane absolute path."""
    if len(body) < pos + 4:
        return None
    n = _i32(body, pos)
    if not 1 <= n <= MAX_PATH or pos + 4 + n > len(body) or body[pos + 4] != 0x2F:
        return None
    raw = bytes(body[pos + 4 : pos + 4 + n])
    if _CONTROL.search(raw):
        return None
    return raw.decode("utf-8", "backslashreplace")


def _request(body: bytes | bytearray) -> dict[str, Any] | None:
    """xid, op and path of a request record, or None when it is not a plausible one."""
    if len(body) < 8:
        return None
    xid, op = _i32(body, 0), _i32(body, 4)
    name = OPS.get(op)
    if name is None or op in (0, -1):
        return None
    path: str | None = None
    if op in _PATH_OPS:
        path = _path(body, 8)
        if path is None:
            return None
    return {"xid": xid, "op": name, "path": path}


class ZookeeperParser:
    """Sans-IO ZooKeeper parser: `connect`, `connected`, `request`, `response` and four-letter `command` events."""

    def __init__(self, limits: Limits = DEFAULT_LIMITS) -> None:
        self._cap = max(limits.parser_buffer, 64)
        self._streams = (StreamBuffer(self._cap, "ZooKeeper packet"), StreamBuffer(self._cap, "ZooKeeper packet"))
        self._skips = [0, 0]
        self._connected = [False, False]  # the connect record of that direction has been seen
        self.finished = False

    def server_name(self) -> str | None:
        return None

    def feed(self, direction: Direction, data: bytes) -> list[L7Event]:
        out: list[L7Event] = []
        if self.finished:
            return out
        stream = self._streams[direction]
        stream.append(data)
        buf = stream.buf
        while not self.finished:
            available = len(buf) - stream.pos
            if self._skips[direction]:
                n = min(self._skips[direction], available)
                stream.pos += n
                self._skips[direction] -= n
                if self._skips[direction]:
                    break
                continue
            if available < 4:
                break
            pos = stream.pos
            if direction == Direction.C2S and not self._connected[0] and bytes(buf[pos : pos + 4]) in FOUR_LETTER_WORDS:
                out.append(L7Event(APP, "command", direction, {"command": bytes(buf[pos : pos + 4]).decode()}))
                self.finished = True  # the answer is free text until the close
                break
            size = _i32(buf, pos)
            if not 0 <= size <= MAX_PACKET:
                raise ProtocolError(f"ZooKeeper: packet length {size} outside 0..{MAX_PACKET}")
            want = min(size, self._cap - 4) + 4
            if available < want:
                break
            self._record(direction, buf[pos + 4 : pos + want], size, out)
            stream.pos += want
            self._skips[direction] = size + 4 - want
        stream.compact()
        return out

    def _record(self, direction: Direction, body: bytes | bytearray, size: int, out: list[L7Event]) -> None:
        first = not self._connected[direction]
        self._connected[direction] = True
        if direction == Direction.C2S:
            if first:
                fields = _connect_request(body)
                if fields is None:
                    raise ProtocolError("ZooKeeper: the first client packet is not a ConnectRequest")
                out.append(L7Event(APP, "connect", direction, fields))
                return
            request = _request(body)
            if request is None:
                raise ProtocolError(f"ZooKeeper: implausible request header in a {size}-byte packet")
            if request["xid"] != PING_XID:
                out.append(L7Event(APP, "request", direction, request))
            return
        if first:
            fields = _connect_response(body)
            if fields is None:
                raise ProtocolError("ZooKeeper: the first server packet is not a ConnectResponse")
            out.append(L7Event(APP, "connected", direction, fields))
            return
        if len(body) < 16:
            raise ProtocolError(f"ZooKeeper: reply of {size} bytes is shorter than its header")
        xid = _i32(body, 0)
        if xid != PING_XID:
            reply: dict[str, Any] = {"xid": xid, "zxid": _i64(body, 4), "err": _i32(body, 12)}
            if xid == NOTIFICATION_XID and len(body) >= 24:
                reply["path"] = _path(body, 24)  # WatcherEvent: type, state, path
            out.append(L7Event(APP, "response", direction, reply))


def _detect_client(data: bytes) -> Detection:
    if len(data) < 4:
        if any(w.startswith(data) for w in FOUR_LETTER_WORDS):
            return Detection.NEED_MORE
        return Detection.NEED_MORE if data == b"\x00" * len(data) else Detection.NO
    if data[:4] in FOUR_LETTER_WORDS:
        # nc and friends send the word alone, sometimes with a line end
        return Detection.MATCH if data[4:] in (b"", b"\n", b"\r\n", b"\r") else Detection.NO
    size = _i32(data, 0)
    if size not in (28, 29, 44, 45):
        return Detection.NO
    if len(data) < 4 + size:
        return Detection.NEED_MORE
    return Detection.MATCH if _connect_request(data[4 : 4 + size]) is not None else Detection.NO


def _detect_server(data: bytes) -> Detection:
    if len(data) < 4:
        return Detection.NEED_MORE if data == b"\x00" * len(data) else Detection.NO
    size = _i32(data, 0)
    if size not in (20, 21, 36, 37):
        return Detection.NO
    if len(data) < 4 + size:
        return Detection.NEED_MORE
    return Detection.MATCH if _connect_response(data[4 : 4 + size]) is not None else Detection.NO


class ZookeeperDetector:
    """Names a flow `zookeeper` from a ConnectRequest/ConnectResponse or a four-letter word."""

    name: ClassVar[str] = APP
    transports: ClassVar[frozenset[int]] = frozenset({PROTO_TCP})
    ports: ClassVar[frozenset[int]] = frozenset({2181, 2182})

    def __init__(self, limits: Limits = DEFAULT_LIMITS) -> None:
        self._limits = limits

    def detect(self, direction: Direction, data: bytes, ctx: DetectContext) -> Detection:
        if not data:
            return Detection.NEED_MORE
        if direction == Direction.C2S:
            return _detect_client(data)
        return _detect_server(data)

    def parser(self, ctx: DetectContext) -> ZookeeperParser:
        return ZookeeperParser(self._limits)
