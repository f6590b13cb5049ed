"""TLS (and SSL 2/3): detection of a handshake start, and a parser of the two hello messages.

The parser reassembles handshake messages across records and TCP segments, reads the
ClientHello (legacy and supported versions, cipher suites, SNI, ALPN, extension list and
the lists fingerprinting needs) and the ServerHello (chosen version and cipher, ALPN). After
the ServerHello everything else is encrypted or of no use to policy, so the parser reports
`finished` and ignores further bytes. An SSLv2-compatible ClientHello (RFC 5246 appendix
E.2) and an alert instead of a hello are understood too.
"""

from __future__ import annotations

import re
import struct
from typing import Any, ClassVar

from podwall.core.errors import ProtocolError
from podwall.core.limits import DEFAULT_LIMITS, Limits
from podwall.core.types import PROTO_TCP, Direction
from podwall.dpi.base import DetectContext, Detection, L7Event
from podwall.dpi.protocols.ja4 import is_grease, ja4
from podwall.dpi.wire import Reader, StreamBuffer

__all__ = ["TlsDetector", "TlsParser", "is_grease", "version_name"]

APP = "tls"
MAX_RECORD = (1 << 14) + 2048  # TLSCiphertext limit (RFC 8446 5.2); plaintext records are smaller

CT_CHANGE_CIPHER_SPEC, CT_ALERT, CT_HANDSHAKE, CT_APPLICATION_DATA, CT_HEARTBEAT = 20, 21, 22, 23, 24
HS_CLIENT_HELLO, HS_SERVER_HELLO = 1, 2

EXT_SERVER_NAME = 0
EXT_SUPPORTED_GROUPS = 10
EXT_EC_POINT_FORMATS = 11
EXT_SIGNATURE_ALGORITHMS = 13
EXT_ALPN = 16
EXT_SUPPORTED_VERSIONS = 43

# The ServerHello.random value that marks a HelloRetryRequest (RFC 8446 4.1.3).
_HRR_RANDOM = bytes.fromhex("cf21ad74e59a6111be1d8c021e65b891c2a211167abb8c5e079e09e2c8a8339c")

_VERSION_NAMES = {
    0x0002: "SSLv2",
    0x0300: "SSLv3",
    0x0301: "TLSv1.0",
    0x0302: "TLSv1.1",
    0x0303: "TLSv1.2",
    0x0304: "TLSv1.3",
}
_ALERT_LEVELS = {1: "warning", 2: "fatal"}
_NAME = re.compile(rb"[\x21-\x7e]+")  # a host name as sent: printable ASCII, no spaces


def version_name(code: int) -> str:
    """`TLSv1.2` for 0x0303; drafts as `TLSv1.3-draft-NN`; anything else as hex."""
    name = _VERSION_NAMES.get(code)
    if name is not None:
        return name
    if code >> 8 == 0x7F:
        return f"TLSv1.3-draft-{code & 0xFF}"
    return f"0x{code:04x}"


def _u16_list(r: Reader, what: str) -> list[int]:
    size = r.remaining()
    if size % 2:
        raise ProtocolError(f"TLS {what}: odd length {size}")
    return list(struct.unpack(f"!{size // 2}H", r.take(size, what)))


def _ascii_name(raw: bytes, what: str) -> str:
    if not _NAME.fullmatch(raw):
        raise ProtocolError(f"TLS {what}: not a printable ASCII name: {raw[:64]!r}")
    return raw.decode("ascii").lower()


def _alpn_list(r: Reader) -> list[str]:
    names: list[str] = []
    body = r.vec16("ALPN list")
    while not body.at_end():
        proto = body.take(body.u8("ALPN name length"), "ALPN name")
        if not proto:
            raise ProtocolError("TLS ALPN: empty protocol name")
        names.append(proto.decode("ascii", "backslashreplace"))
    body.expect_end()
    r.expect_end()
    return names


def _server_name(r: Reader) -> str | None:
    body = r.vec16("server_name list")
    sni: str | None = None
    while not body.at_end():
        kind = body.u8("server name type")
        raw = body.take(body.u16("server name length"), "server name")
        if kind == 0 and sni is None:
            sni = _ascii_name(raw, "SNI")
    r.expect_end()
    return sni


def _extensions(r: Reader, what: str) -> list[tuple[int, Reader]]:
    exts: list[tuple[int, Reader]] = []
    seen: set[int] = set()
    block = r.vec16(f"{what} extensions")
    while not block.at_end():
        ext_type = block.u16("extension type")
        body = block.vec16(f"extension {ext_type}")
        if ext_type in seen:
            raise ProtocolError(f"TLS {what}: duplicate extension {ext_type}")
        seen.add(ext_type)
        exts.append((ext_type, body))
    return exts


def parse_client_hello(body: bytes) -> dict[str, Any]:
    """Fields of a ClientHello handshake body (without the 4-byte handshake header)."""
    r = Reader(body, what="TLS ClientHello")
    legacy = r.u16("legacy_version")
    if legacy >> 8 != 3:
        raise ProtocolError(f"TLS ClientHello: legacy_version 0x{legacy:04x} is not 3.x")
    r.skip(32, "random")
    sid_len = r.u8("session_id length")
    if sid_len > 32:
        raise ProtocolError("TLS ClientHello: session_id longer than 32 bytes")
    r.skip(sid_len, "session_id")
    suites = r.vec16("cipher_suites")
    ciphers = _u16_list(suites, "cipher_suites")
    if not ciphers:
        raise ProtocolError("TLS ClientHello: no cipher suites")
    if r.vec8("compression_methods").remaining() < 1:
        raise ProtocolError("TLS ClientHello: no compression methods")
    fields: dict[str, Any] = {
        "legacy_version": version_name(legacy),
        "sni": None,
        "alpn": [],
        "ciphers": ciphers,
        "extensions": [],
        "supported_versions": [],
        "supported_groups": [],
        "ec_point_formats": [],
        "signature_algorithms": [],
    }
    if not r.at_end():
        exts = _extensions(r, "ClientHello")
        r.expect_end()
        fields["extensions"] = [t for t, _ in exts]
        for ext_type, ext in exts:
            if ext_type == EXT_SERVER_NAME:
                fields["sni"] = _server_name(ext)
            elif ext_type == EXT_ALPN:
                fields["alpn"] = _alpn_list(ext)
            elif ext_type == EXT_SUPPORTED_VERSIONS:
                fields["supported_versions"] = _u16_list(ext.vec8("supported_versions"), "supported_versions")
            elif ext_type == EXT_SUPPORTED_GROUPS:
                fields["supported_groups"] = _u16_list(ext.vec16("supported_groups"), "supported_groups")
            elif ext_type == EXT_EC_POINT_FORMATS:
                fields["ec_point_formats"] = list(ext.take(ext.u8("ec_point_formats length")))
            elif ext_type == EXT_SIGNATURE_ALGORITHMS:
                fields["signature_algorithms"] = _u16_list(ext.vec16("signature_algorithms"), "signature_algorithms")
    offered = [v for v in fields["supported_versions"] if not is_grease(v)]
    fields["version"] = version_name(max(offered) if offered else legacy)
    return fields


def parse_server_hello(body: bytes) -> dict[str, Any]:
    """Fields of a ServerHello handshake body (without the 4-byte handshake header)."""
    r = Reader(body, what="TLS ServerHello")
    legacy = r.u16("legacy_version")
    if legacy >> 8 != 3:
        raise ProtocolError(f"TLS ServerHello: legacy_version 0x{legacy:04x} is not 3.x")
    random = r.take(32, "random")
    sid_len = r.u8("session_id length")
    if sid_len > 32:
        raise ProtocolError("TLS ServerHello: session_id longer than 32 bytes")
    r.skip(sid_len, "session_id")
    cipher = r.u16("cipher_suite")
    r.u8("compression_method")
    version = legacy
    alpn: str | None = None
    ext_types: list[int] = []
    if not r.at_end():
        exts = _extensions(r, "ServerHello")
        r.expect_end()
        ext_types = [t for t, _ in exts]
        for ext_type, ext in exts:
            if ext_type == EXT_SUPPORTED_VERSIONS:
                version = ext.u16("selected_version")
                ext.expect_end()
            elif ext_type == EXT_ALPN:
                chosen = _alpn_list(ext)
                if len(chosen) != 1:
                    raise ProtocolError(f"TLS ServerHello: ALPN must name one protocol, got {len(chosen)}")
                alpn = chosen[0]
    return {
        "version": version_name(version),
        "legacy_version": version_name(legacy),
        "cipher": cipher,
        "alpn": alpn,
        "extensions": ext_types,
        "hello_retry_request": random == _HRR_RANDOM,
    }


def parse_sslv2_client_hello(record: bytes) -> dict[str, Any]:
    """Fields of an SSLv2-format ClientHello record body (after the 2-byte record header)."""
    r = Reader(record, what="SSLv2 ClientHello")
    if r.u8("message type") != 1:
        raise ProtocolError("SSLv2 record: not a CLIENT-HELLO")
    version = r.u16("version")
    spec_len = r.u16("cipher_specs length")
    sid_len = r.u16("session_id length")
    challenge_len = r.u16("challenge length")
    if spec_len == 0 or spec_len % 3:
        raise ProtocolError(f"SSLv2 ClientHello: cipher_specs length {spec_len} is not a positive multiple of 3")
    if sid_len not in (0, 16) or not 16 <= challenge_len <= 32:
        raise ProtocolError("SSLv2 ClientHello: bad session_id or challenge length")
    specs = r.take(spec_len, "cipher_specs")
    r.skip(sid_len, "session_id")
    r.skip(challenge_len, "challenge")
    r.expect_end()
    ciphers = [int.from_bytes(specs[i : i + 3], "big") for i in range(0, spec_len, 3)]
    return {
        "version": version_name(version),
        "legacy_version": version_name(version),
        "sni": None,
        "alpn": [],
        "ciphers": ciphers,
        "extensions": [],
        "supported_versions": [],
        "supported_groups": [],
        "ec_point_formats": [],
        "signature_algorithms": [],
        "sslv2_format": True,
    }


# Progress of one direction.
_EXPECT_HELLO, _DONE = 0, 1


class _Side:
    __slots__ = ("handshake", "records", "state")

    def __init__(self, cap: int, what: str) -> None:
        self.records = StreamBuffer(cap, f"TLS {what} record")
        self.handshake = bytearray()  # handshake bytes reassembled from records
        self.state = _EXPECT_HELLO


class TlsParser:
    """Sans-IO TLS hello parser for one connection: `client_hello`, `server_hello`, `alert` events."""

    def __init__(self, limits: Limits = DEFAULT_LIMITS) -> None:
        self._limit = limits.parser_buffer
        self._sides = (_Side(limits.parser_buffer, "client"), _Side(limits.parser_buffer, "server"))
        self._sni: str | None = None
        self._first = [True, True]
        self.finished = False  # True once the ServerHello (or a refusal) has been seen

    def server_name(self) -> str | None:
        return self._sni

    def feed(self, direction: Direction, data: bytes) -> list[L7Event]:
        side = self._sides[direction]
        if self.finished or side.state == _DONE or not data:
            return []
        stream = side.records
        stream.append(data)
        out: list[L7Event] = []
        if self._first[direction] and stream.buf[0] & 0x80:
            self._sslv2(direction, side, out)
        else:
            self._first[direction] = False
            self._records(direction, side, out)
        if side.state == _DONE or self.finished:
            stream.clear()
        else:
            stream.compact()
        return out

    def _sslv2(self, direction: Direction, side: _Side, out: list[L7Event]) -> None:
        buf = side.records.buf
        if len(buf) < 2:
            return
        length = ((buf[0] & 0x7F) << 8) | buf[1]
        if len(buf) < 2 + length:
            return
        self._first[direction] = False
        record = bytes(buf[2 : 2 + length])
        side.records.pos = 2 + length
        side.state = _DONE
        if direction == Direction.C2S:
            out.append(L7Event(APP, "client_hello", direction, parse_sslv2_client_hello(record)))
            return
        r = Reader(record, what="SSLv2 ServerHello")
        if r.u8("message type") != 4:
            raise ProtocolError("SSLv2 record from the server: not a SERVER-HELLO")
        r.skip(2, "session_id_hit, certificate_type")
        version = r.u16("version")
        out.append(
            L7Event(
                APP,
                "server_hello",
                direction,
                {"version": version_name(version), "legacy_version": version_name(version), "cipher": None,
                 "alpn": None, "extensions": [], "hello_retry_request": False, "sslv2_format": True},
            )
        )  # fmt: skip
        self.finished = True

    def _records(self, direction: Direction, side: _Side, out: list[L7Event]) -> None:
        stream = side.records
        buf = stream.buf
        while side.state != _DONE and not self.finished:
            pos = stream.pos
            if len(buf) - pos < 5:
                return
            content_type = buf[pos]
            version = (buf[pos + 1] << 8) | buf[pos + 2]
            length = (buf[pos + 3] << 8) | buf[pos + 4]
            if not CT_CHANGE_CIPHER_SPEC <= content_type <= CT_HEARTBEAT:
                raise ProtocolError(f"TLS record: unknown content type {content_type} at offset {pos}")
            if version >> 8 != 3 or length > MAX_RECORD:
                raise ProtocolError(f"TLS record: bad version 0x{version:04x} or length {length} at offset {pos}")
            if len(buf) - pos < 5 + length:
                return
            fragment = bytes(buf[pos + 5 : pos + 5 + length])
            stream.pos = pos + 5 + length
            self._record(direction, side, content_type, fragment, out)

    def _record(
        self, direction: Direction, side: _Side, content_type: int, fragment: bytes, out: list[L7Event]
    ) -> None:
        if content_type == CT_HANDSHAKE:
            if not fragment:
                raise ProtocolError("TLS record: empty handshake fragment")
            side.handshake += fragment
            self._handshake(direction, side, out)
            return
        if side.handshake:
            raise ProtocolError(f"TLS record: content type {content_type} inside a fragmented handshake message")
        if content_type == CT_ALERT:
            r = Reader(fragment, what="TLS alert")
            level = r.u8("alert level")
            description = r.u8("alert description")
            out.append(
                L7Event(APP, "alert", direction,
                        {"level": _ALERT_LEVELS.get(level, str(level)), "description": description})
            )  # fmt: skip
            side.state = _DONE
            if direction == Direction.S2C:
                self.finished = True
            return
        raise ProtocolError(f"TLS record: content type {content_type} before the hello")

    def _handshake(self, direction: Direction, side: _Side, out: list[L7Event]) -> None:
        hs = side.handshake
        if len(hs) < 4:
            return
        length = (hs[1] << 16) | (hs[2] << 8) | hs[3]
        if length > self._limit:
            raise ProtocolError(f"TLS handshake message of {length} bytes exceeds {self._limit}")
        if len(hs) < 4 + length:
            return
        msg_type = hs[0]
        body = bytes(hs[4 : 4 + length])
        side.handshake = bytearray()
        side.state = _DONE
        if direction == Direction.C2S:
            if msg_type != HS_CLIENT_HELLO:
                raise ProtocolError(f"TLS: expected ClientHello, got handshake type {msg_type}")
            fields = parse_client_hello(body)
            fields["ja4"] = ja4(fields)
            if self._sni is None:
                self._sni = fields["sni"]
            out.append(L7Event(APP, "client_hello", direction, fields))
        else:
            if msg_type != HS_SERVER_HELLO:
                raise ProtocolError(f"TLS: expected ServerHello, got handshake type {msg_type}")
            out.append(L7Event(APP, "server_hello", direction, parse_server_hello(body)))
            self.finished = True


def _detect_record(data: bytes, hello_type: int) -> Detection:
    n = len(data)
    if data[0] != CT_HANDSHAKE:
        return Detection.NO
    if n >= 3 and (data[1] != 3 or data[2] > 4):
        return Detection.NO
    if n >= 5:
        length = (data[3] << 8) | data[4]
        if not 4 <= length <= MAX_RECORD:
            return Detection.NO
    if n >= 6 and data[5] != hello_type:
        return Detection.NO
    if n >= 9:
        hs_length = (data[6] << 16) | (data[7] << 8) | data[8]
        if hs_length < 38:  # version + random + session_id length + at least one more byte
            return Detection.NO
    if n >= 10 and data[9] != 3:
        return Detection.NO
    if n >= 11:
        return Detection.MATCH if data[10] <= 4 else Detection.NO
    return Detection.NEED_MORE


def _detect_sslv2(data: bytes) -> Detection:
    n = len(data)
    if n >= 3 and data[2] != 1:
        return Detection.NO
    if n >= 5 and not ((data[3] == 0 and data[4] == 2) or (data[3] == 3 and data[4] <= 3)):
        return Detection.NO
    if n < 11:
        return Detection.NEED_MORE
    length = ((data[0] & 0x7F) << 8) | data[1]
    spec_len = (data[5] << 8) | data[6]
    sid_len = (data[7] << 8) | data[8]
    challenge_len = (data[9] << 8) | data[10]
    ok = (
        spec_len > 0
        and spec_len % 3 == 0
        and sid_len in (0, 16)
        and 16 <= challenge_len <= 32
        and length == 9 + spec_len + sid_len + challenge_len
    )
    return Detection.MATCH if ok else Detection.NO


class TlsDetector:
    """Names a flow `tls` from a ClientHello record (or an SSLv2 one), or a ServerHello mid-stream."""

    name: ClassVar[str] = APP
    transports: ClassVar[frozenset[int]] = frozenset({PROTO_TCP})
    ports: ClassVar[frozenset[int]] = frozenset({443, 465, 636, 853, 993, 995, 5061, 6443, 8443})

    def __init__(self, limits: Limits = DEFAULT_LIMITS) -> None:
        self._limits = limits

    def detect(self, direction: Direction, data: bytes, ctx: DetectContext) -> Detection:
        if not data:
            return Detection.NEED_MORE
        if direction == Direction.C2S:
            if data[0] & 0x80:
                return _detect_sslv2(data)
            return _detect_record(data, HS_CLIENT_HELLO)
        # a capture that starts after the ClientHello still shows the server's answer
        return _detect_record(data, HS_SERVER_HELLO)

    def parser(self, ctx: DetectContext) -> TlsParser:
        return TlsParser(self._limits)
