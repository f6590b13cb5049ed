"""MySQL and MariaDB client/server protocol: detection by the handshake, and a parser of the session.

The server speaks first with an Initial Handshake packet (protocol 10, server version,
connection id, capabilities, auth plugin); the client answers with a HandshakeResponse41
(user, database, auth plugin, connection attributes) or, to start TLS, a 32-byte
SSLRequest after which the rest of the connection is TLS and parsing stops. Every packet
has a 4-byte header (3-byte little-endian length, sequence number); a payload of 0xffffff
bytes continues in the next packet. After the login the client sends commands (sequence 0)
and the server answers with OK, ERR, or result sets. The detector matches the greeting
(S2C) or, when the capture missed it, the client's handshake response (23 filler bytes, of
which MariaDB uses the last 4 for its own capabilities, so only the first 19 must be zero).
"""

from __future__ import annotations

import re
from typing import Any, ClassVar

from podwall.core.errors import ProtocolError
from podwall.core.limits import DEFAULT_LIMITS, Limits
from podwall.core.types import PROTO_TCP, Direction
from podwall.dpi.base import DetectContext, Detection, L7Event
from podwall.dpi.wire import PiecewiseMessages, Reader

__all__ = ["COMMAND_NAMES", "MysqlDetector", "MysqlParser"]

APP = "mysql"
SQL_CAPTURE = 4096  # characters of SQL text kept in an event
TEXT_CAPTURE = 256  # characters of other strings kept in an event
MAX_ATTRIBUTES = 16  # connection attributes kept
MAX_PAYLOAD = 0xFFFFFF  # a packet this long continues in the next one

# Capability flags (https://dev.mysql.com/doc/dev/mysql-server/latest/group__group__cs__capabilities__flags.html)
CLIENT_CONNECT_WITH_DB = 0x8
CLIENT_COMPRESS = 0x20
CLIENT_PROTOCOL_41 = 0x200
CLIENT_SSL = 0x800
CLIENT_SECURE_CONNECTION = 0x8000
CLIENT_PLUGIN_AUTH = 0x80000
CLIENT_CONNECT_ATTRS = 0x100000
CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA = 0x200000
CLIENT_ZSTD_COMPRESSION = 0x4000000

COMMAND_NAMES = {
    0x00: "SLEEP", 0x01: "QUIT", 0x02: "INIT_DB", 0x03: "QUERY", 0x04: "FIELD_LIST", 0x05: "CREATE_DB",
    0x06: "DROP_DB", 0x07: "REFRESH", 0x08: "SHUTDOWN", 0x09: "STATISTICS", 0x0A: "PROCESS_INFO",
    0x0B: "CONNECT", 0x0C: "PROCESS_KILL", 0x0D: "DEBUG", 0x0E: "PING", 0x0F: "TIME",
    0x10: "DELAYED_INSERT", 0x11: "CHANGE_USER", 0x12: "BINLOG_DUMP", 0x13: "TABLE_DUMP",
    0x14: "CONNECT_OUT", 0x15: "REGISTER_SLAVE", 0x16: "STMT_PREPARE", 0x17: "STMT_EXECUTE",
    0x18: "STMT_SEND_LONG_DATA", 0x19: "STMT_CLOSE", 0x1A: "STMT_RESET", 0x1B: "SET_OPTION",
    0x1C: "STMT_FETCH", 0x1D: "DAEMON", 0x1E: "BINLOG_DUMP_GTID", 0x1F: "RESET_CONNECTION",
    0x20: "CLONE", 0xFA: "STMT_BULK_EXECUTE",
}  # fmt: skip
_STATEMENT_COMMANDS = frozenset({0x17, 0x18, 0x19, 0x1A, 0x1C, 0xFA})  # first argument: statement id
_VERSION = re.compile(rb"[0-9][\x20-\x7e]{0,79}")
_PRINTABLE_TEXT = re.compile(rb"[\x20-\x7e]*")
_MARIADB_PREFIX = "5.5.5-"  # MariaDB's replication-compatibility prefix before its real version


def _text(raw: bytes, cap: int = TEXT_CAPTURE) -> str:
    return raw[:cap].decode("utf-8", "backslashreplace")


def _lenenc(r: Reader, field: str) -> int:
    first = r.u8(field)
    if first < 0xFB:
        return first
    if first == 0xFC:
        return int.from_bytes(r.take(2, field), "little")
    if first == 0xFD:
        return int.from_bytes(r.take(3, field), "little")
    if first == 0xFE:
        return int.from_bytes(r.take(8, field), "little")
    raise ProtocolError(f"MySQL: bad length-encoded integer 0x{first:02x} for {field} at offset {r.pos - 1}")


def _cstring(r: Reader, field: str) -> bytes:
    data = r.data
    end = data.find(b"\x00", r.pos, r.end)
    if end < 0:
        raise ProtocolError(f"MySQL: {field} at offset {r.pos} is not NUL-terminated")
    value = r.take(end - r.pos, field)
    r.skip(1, field)
    return value


def _greeting_answer(data: bytes) -> Detection:
    """Is `data` (S2C) the start of an Initial Handshake v10, or of an ERR packet sent instead?"""
    n = len(data)
    if n >= 3:
        length = int.from_bytes(data[:3], "little")
        if not 16 <= length <= 1024:
            return Detection.NO
    if n >= 4 and data[3] != 0:
        return Detection.NO
    if n < 5:
        return Detection.NEED_MORE
    if data[4] == 0xFF:  # the server refuses the connection before the handshake
        if n >= 7 and not 1000 <= int.from_bytes(data[5:7], "little") <= 2999:
            return Detection.NO
        message = data[7 : 4 + length]
        if message and not _PRINTABLE_TEXT.fullmatch(message):
            return Detection.NO
        return Detection.MATCH if n >= 4 + length else Detection.NEED_MORE
    if data[4] != 10:
        return Detection.NO
    end = data.find(b"\x00", 5, 4 + length)
    if end == 5:
        return Detection.NO  # an empty server version
    version = data[5:end] if end >= 0 else data[5 : 4 + length]
    if (version and not _VERSION.fullmatch(version[:80])) or len(version) > 80:
        return Detection.NO
    if end < 0:
        return Detection.NO if n >= 4 + length else Detection.NEED_MORE
    filler = end + 1 + 4 + 8  # after the NUL: connection id, auth data part 1, then a zero filler
    if filler + 3 > 4 + length:
        return Detection.NO
    if n <= filler + 2:
        return Detection.NEED_MORE
    if data[filler] != 0 or not int.from_bytes(data[filler + 1 : filler + 3], "little") & CLIENT_PROTOCOL_41:
        return Detection.NO
    return Detection.MATCH


def _response_answer(data: bytes) -> Detection:
    """Is `data` (C2S) the start of a HandshakeResponse41 or an SSLRequest (sequence 1)?"""
    n = len(data)
    if n >= 3 and not 32 <= int.from_bytes(data[:3], "little") <= 0x10000:
        return Detection.NO
    if n >= 4 and data[3] != 1:
        return Detection.NO
    if n >= 6 and not (data[4] | data[5] << 8) & CLIENT_PROTOCOL_41:
        return Detection.NO
    if n >= 13 and data[12] == 0:  # character set
        return Detection.NO
    zeros = data[13:32]  # the first 19 of the 23 filler bytes (MariaDB uses the last 4)
    if zeros.count(0) != len(zeros):
        return Detection.NO
    return Detection.MATCH if n >= 36 else Detection.NEED_MORE


class MysqlDetector:
    """Names a flow `mysql` by the server's greeting or the client's handshake response."""

    name: ClassVar[str] = APP
    transports: ClassVar[frozenset[int]] = frozenset({PROTO_TCP})
    ports: ClassVar[frozenset[int]] = frozenset({3306, 3307, 33060})

    def __init__(self, limits: Limits = DEFAULT_LIMITS) -> None:
        self._limits = limits

    def detect(self, direction: Direction, data: bytes, ctx: DetectContext) -> Detection:
        if not data:
            return Detection.NEED_MORE
        if direction == Direction.S2C:
            return _greeting_answer(data)
        return _response_answer(data)

    def parser(self, ctx: DetectContext) -> MysqlParser:
        return MysqlParser(self._limits)


class _Packets(PiecewiseMessages):
    """One direction's packets reassembled into logical payloads; only the first `keep` bytes are held.

    `left` counts the body bytes still to come in the current packet; `body` holds the start
    of the whole logical payload, across continuation packets.
    """

    __slots__ = ("expect_seq", "more", "seq", "size")

    def __init__(self, keep: int, what: str) -> None:
        super().__init__(keep, what)
        self.more = False  # the current logical payload continues in the next packet
        self.seq = 0  # sequence number of the logical payload's first packet
        self.expect_seq = 0
        self.size = 0  # the logical payload's full size

    def feed(self, data: bytes) -> list[tuple[int, bytes, int]]:
        """Complete payloads in `data`: (sequence id, first `keep` bytes, full size)."""
        done: list[tuple[int, bytes, int]] = []
        pos, n = 0, len(data)
        while pos < n:
            if not self.in_body:
                pos = self.gather_head(data, pos, 4)
                if len(self.head) < 4:
                    break
                length = int.from_bytes(self.head[:3], "little")
                seq = self.head[3]
                self.head.clear()
                if self.more:
                    if seq != self.expect_seq:
                        raise ProtocolError(
                            f"{self.what}: continuation packet has sequence {seq}, expected {self.expect_seq}"
                        )
                else:
                    self.seq = seq
                    self.size = 0
                    self.body.clear()
                self.expect_seq = (seq + 1) & 0xFF
                self.more = length == MAX_PAYLOAD
                self.left = length
                self.size += length
                self.in_body = True
            pos = self.gather_body(data, pos)
            if self.left == 0:
                self.in_body = False
                if not self.more:
                    done.append((self.seq, bytes(self.body), self.size))
                    self.body.clear()
        return done


class MysqlParser:
    """Sans-IO MySQL parser: greeting, login, commands, OK and ERR replies; stops at TLS or compression."""

    def __init__(self, limits: Limits = DEFAULT_LIMITS) -> None:
        keep = max(64, limits.parser_buffer)
        self._client = _Packets(keep, "MySQL client packet")
        self._server = _Packets(keep, "MySQL server packet")
        self._logged_in = False  # the server accepted the login: packets are now commands and replies
        self._compress = False  # the server offered compression (it is used when the client asks too)
        self._server_caps = 0
        self.finished = False

    def server_name(self) -> str | None:
        return None

    def feed(self, direction: Direction, data: bytes) -> list[L7Event]:
        out: list[L7Event] = []
        if self.finished or not data:
            return out
        if direction == Direction.C2S:
            for seq, body, size in self._client.feed(data):
                self._client_packet(seq, body, size, out)
                if self.finished:
                    break
        else:
            for seq, body, size in self._server.feed(data):
                self._server_packet(seq, body, size, out)
                if self.finished:
                    break
        return out

    # -- client ------------------------------------------------------------------------

    def _client_packet(self, seq: int, body: bytes, size: int, out: list[L7Event]) -> None:
        if not self._logged_in:
            if seq == 1 and size >= 32:
                self._handshake_response(body, size, out)
            elif seq == 0 and body:  # the capture started after the login
                self._logged_in = True
                self._command(body, size, out)
            return  # auth-switch and other auth exchange packets carry secrets only
        if seq == 0 and body:
            self._command(body, size, out)

    def _handshake_response(self, body: bytes, size: int, out: list[L7Event]) -> None:
        if size != len(body):
            raise ProtocolError(f"MySQL: handshake response of {size} bytes exceeds the parser buffer")
        r = Reader(body, what="MySQL handshake response")
        caps = int.from_bytes(r.take(4, "capabilities"), "little")
        if not caps & CLIENT_PROTOCOL_41:
            raise ProtocolError("MySQL: handshake response without CLIENT_PROTOCOL_41")
        r.skip(4, "max packet size")
        charset = r.u8("character set")
        r.skip(23, "filler")
        if size == 32:
            if not caps & CLIENT_SSL:
                raise ProtocolError("MySQL: 32-byte handshake response without CLIENT_SSL")
            fields: dict[str, Any] = {"tls": True, "capabilities": caps, "charset": charset}
            out.append(L7Event(APP, "ssl_request", Direction.C2S, fields))
            self.finished = True  # the rest of the connection is TLS
            return
        user = _text(_cstring(r, "user"))
        if caps & CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA:
            r.skip(_lenenc(r, "auth data length"), "auth data")
        elif caps & CLIENT_SECURE_CONNECTION:
            r.skip(r.u8("auth data length"), "auth data")
        else:
            _cstring(r, "auth data")
        database = None
        if caps & CLIENT_CONNECT_WITH_DB and not r.at_end():
            database = _text(_cstring(r, "database"))
        plugin = None
        if caps & CLIENT_PLUGIN_AUTH and not r.at_end():
            plugin = _text(_cstring(r, "auth plugin"))
        attributes: dict[str, str] = {}
        if caps & CLIENT_CONNECT_ATTRS and not r.at_end():
            attrs = r.sub(_lenenc(r, "attributes length"), "MySQL connection attributes")
            while not attrs.at_end():
                key = attrs.take(_lenenc(attrs, "attribute name length"), "attribute name")
                value = attrs.take(_lenenc(attrs, "attribute value length"), "attribute value")
                if len(attributes) < MAX_ATTRIBUTES:
                    attributes[_text(key)] = _text(value)
        compress = bool(caps & self._server_caps & (CLIENT_COMPRESS | CLIENT_ZSTD_COMPRESSION))
        fields = {
            "user": user,
            "database": database,
            "auth_plugin": plugin,
            "capabilities": caps,
            "charset": charset,
            "tls": False,
            "compression": compress,
            "attributes": attributes,
            "program_name": attributes.get("program_name"),
            "client_name": attributes.get("_client_name"),
        }
        out.append(L7Event(APP, "login", Direction.C2S, fields))
        self._compress = compress

    def _command(self, body: bytes, size: int, out: list[L7Event]) -> None:
        code = body[0]
        name = COMMAND_NAMES.get(code)
        if name is None:
            raise ProtocolError(f"MySQL: unknown command byte 0x{code:02x}")
        fields: dict[str, Any] = {"command": name}
        if code in (0x03, 0x16):  # QUERY, STMT_PREPARE
            text = body[1:]
            fields["sql"] = _text(text, SQL_CAPTURE)
            fields["truncated"] = size - 1 > SQL_CAPTURE or len(text) > SQL_CAPTURE
            out.append(L7Event(APP, "query", Direction.C2S, fields))
            return
        if code == 0x02:  # INIT_DB
            fields["database"] = _text(body[1:])
        elif code in _STATEMENT_COMMANDS and len(body) >= 5:
            fields["statement_id"] = int.from_bytes(body[1:5], "little")
        elif code == 0x11 and len(body) > 1:  # CHANGE_USER
            end = body.find(b"\x00", 1)
            fields["user"] = _text(body[1 : end if end >= 0 else len(body)])
        out.append(L7Event(APP, "command", Direction.C2S, fields))
        if code == 0x01:
            self.finished = True

    # -- server ------------------------------------------------------------------------

    def _server_packet(self, seq: int, body: bytes, size: int, out: list[L7Event]) -> None:
        if not body:
            return
        first = body[0]
        if first == 0xFF:
            out.append(L7Event(APP, "error", Direction.S2C, _err(body, self._logged_in)))
            return
        if not self._logged_in:
            if seq == 0 and first == 10:
                self._greeting(body, size, out)
            elif first == 0x00 and seq >= 2:
                out.append(L7Event(APP, "ok", Direction.S2C, _ok(body, "auth")))
                self._logged_in = True
                if self._compress:
                    self.finished = True  # everything after the login is in compressed packets
            elif first == 0xFE and seq >= 2 and len(body) > 1:
                end = body.find(b"\x00", 1)
                plugin = _text(body[1 : end if end >= 0 else len(body)])
                out.append(L7Event(APP, "auth_switch", Direction.S2C, {"auth_plugin": plugin}))
            return
        if seq == 1 and first == 0x00 and len(body) >= 7:
            out.append(L7Event(APP, "ok", Direction.S2C, _ok(body, "command")))

    def _greeting(self, body: bytes, size: int, out: list[L7Event]) -> None:
        if size != len(body):
            raise ProtocolError(f"MySQL: greeting of {size} bytes exceeds the parser buffer")
        r = Reader(body, what="MySQL greeting")
        r.skip(1, "protocol version")
        version = _text(_cstring(r, "server version"))
        if version.startswith(_MARIADB_PREFIX) and "MariaDB" in version:
            version = version[len(_MARIADB_PREFIX) :]
        connection_id = int.from_bytes(r.take(4, "connection id"), "little")
        r.skip(8, "auth data part 1")
        r.skip(1, "filler")
        caps = int.from_bytes(r.take(2, "capabilities"), "little")
        charset = None
        plugin = None
        if not r.at_end():
            charset = r.u8("character set")
            r.skip(2, "status flags")
            caps |= int.from_bytes(r.take(2, "capabilities (upper)"), "little") << 16
            auth_len = r.u8("auth data length")
            r.skip(10, "reserved")
            if caps & CLIENT_SECURE_CONNECTION:
                r.skip(min(max(13, auth_len - 8), r.remaining()), "auth data part 2")
            if caps & CLIENT_PLUGIN_AUTH and not r.at_end():
                end = body.find(b"\x00", r.pos)
                plugin = _text(body[r.pos : end if end >= 0 else len(body)])
        self._server_caps = caps
        fields = {
            "server_version": version,
            "protocol_version": 10,
            "connection_id": connection_id,
            "capabilities": caps,
            "charset": charset,
            "auth_plugin": plugin,
            "mariadb": "mariadb" in version.lower(),
        }
        out.append(L7Event(APP, "greeting", Direction.S2C, fields))


def _err(body: bytes, logged_in: bool) -> dict[str, Any]:
    r = Reader(body, 1, what="MySQL ERR packet")
    code = int.from_bytes(r.take(2, "error code"), "little")
    rest = body[r.pos :]
    sql_state = None
    if rest[:1] == b"#" and len(rest) >= 6:
        sql_state = _text(rest[1:6])
        rest = rest[6:]
    return {"code": code, "sql_state": sql_state, "message": _text(rest), "phase": "command" if logged_in else "auth"}


def _ok(body: bytes, phase: str) -> dict[str, Any]:
    r = Reader(body, 1, what="MySQL OK packet")
    fields: dict[str, Any] = {"phase": phase, "affected_rows": None, "last_insert_id": None}
    if r.remaining() >= 2:
        fields["affected_rows"] = _lenenc(r, "affected rows")
        fields["last_insert_id"] = _lenenc(r, "last insert id")
    return fields
