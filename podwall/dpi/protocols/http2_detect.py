"""h2c and gRPC detection: one answer per flow, from the client's first request.

Two ways into h2c are recognised (RFC 9113 3.3 and RFC 7540 3.2): prior knowledge, where
the client opens with the connection preface `PRI * HTTP/2.0\\r\\n\\r\\nSM\\r\\n\\r\\n` and a
SETTINGS frame, and the HTTP/1.1 `Upgrade: h2c` request. HTTP/2 over TLS (ALPN h2) is
encrypted and belongs to the TLS detector.

Detection waits for the first client request (the HEADERS block, decoded with a fresh
HPACK decoder) so that one answer names the flow: `grpc` when that request's content-type
is `application/grpc*`, `http2` otherwise. The two detectors share that reading and
always disagree, so they never tie.
"""

from __future__ import annotations

import re
from typing import ClassVar

from podwall.core.errors import ProtocolError
from podwall.core.limits import DEFAULT_LIMITS, Limits
from podwall.core.types import PROTO_TCP, Direction
from podwall.dpi.base import DetectContext, Detection
from podwall.dpi.protocols.http2 import Http2Parser
from podwall.dpi.protocols.http2_frames import (
    ACK,
    APP_GRPC,
    APP_HTTP2,
    CONTINUATION,
    END_HEADERS,
    GOAWAY,
    HEAD_END,
    HEADERS,
    PING,
    PREFACE,
    PRINTABLE_LINE,
    PRIORITY,
    REQUEST_LINE,
    SETTINGS,
    WINDOW_UPDATE,
    control_frame_ok,
    decode_block,
    first_header,
    header_fragment,
    http1_headers,
    is_grpc,
    new_decoder,
    remember_first_block,
    settings_start,
    upgrades_to_h2c,
)

__all__ = ["GrpcDetector", "Http2Detector", "classify_client", "detect_server"]

_DETECT_HEAD = 8192  # an upgrade request head longer than this is not taken as h2c by the detector
# An h2c upgrade needs an HTTP2-Settings header: without one, the head's lines need no parsing.
_SETTINGS_HEADER = re.compile(rb"(?i)http2-settings:")
# The last bytes both detectors read and what they said: the session asks them one after the
# other about the same bytes object (immutable, and kept alive here, so identity is equality).
_last: tuple[bytes, Limits, Detection | str] | None = None


def _name_for(content_type: str | None) -> str:
    return APP_GRPC if is_grpc(content_type) else APP_HTTP2


def classify_client(data: bytes, limits: Limits = DEFAULT_LIMITS) -> Detection | str:
    """Read a client's first bytes: the app name (`http2`/`grpc`) once its first request is read.

    NO when the bytes are neither the h2c preface followed by sane frames nor an HTTP/1.1
    request upgrading to h2c; NEED_MORE on a prefix of either.
    """
    if data[:1] == b"P" and PREFACE.startswith(data[:24]):
        if len(data) < len(PREFACE):
            return Detection.NEED_MORE
        return _classify_frames(data, len(PREFACE), limits)
    return _classify_upgrade(data)


def _classify_frames(data: bytes, pos: int, limits: Limits) -> Detection | str:
    size = len(data)
    first = True
    block: bytearray | None = None
    block_sid = 0
    while True:
        if first and not settings_start(data[pos : pos + 9]):
            return Detection.NO  # the client's first frame must be its SETTINGS
        if size - pos < 9:
            return Detection.NEED_MORE
        length = int.from_bytes(data[pos : pos + 3], "big")
        ftype, flags = data[pos + 3], data[pos + 4]
        sid = int.from_bytes(data[pos + 5 : pos + 9], "big") & 0x7FFFFFFF
        first = False
        if size - pos - 9 < length:
            return Detection.NEED_MORE
        payload = data[pos + 9 : pos + 9 + length]
        pos += 9 + length
        if block is not None:
            if ftype != CONTINUATION or sid != block_sid:
                return Detection.NO
            block += payload
            if flags & END_HEADERS:
                return _classify_request(bytes(block), limits)
            continue
        if ftype == SETTINGS:
            if sid or length % 6 or (flags & ACK and length):
                return Detection.NO
        elif ftype in (PING, WINDOW_UPDATE, PRIORITY):
            if not control_frame_ok(ftype, length, sid):
                return Detection.NO
        elif ftype == HEADERS:
            if sid == 0 or sid % 2 == 0:
                return Detection.NO
            try:
                fragment = header_fragment(ftype, flags, payload)
            except ProtocolError:
                return Detection.NO
            if flags & END_HEADERS:
                return _classify_request(fragment, limits)
            block, block_sid = bytearray(fragment), sid
        elif ftype == GOAWAY:
            # An HTTP/2 connection closed before any request: still HTTP/2, and no gRPC seen.
            return APP_HTTP2 if sid == 0 and length >= 8 else Detection.NO
        elif ftype <= CONTINUATION:
            return Detection.NO  # DATA, RST_STREAM, PUSH_PROMISE or CONTINUATION before a request
        # Unknown frame types are extensions, which RFC 9113 5.5 says to ignore.


def _classify_request(block: bytes, limits: Limits) -> Detection | str:
    decoder = new_decoder(limits)
    try:
        headers = decode_block(decoder, block, "of the first request")
    except ProtocolError:
        return Detection.NO
    remember_first_block(block, decoder, headers)
    if first_header(headers, ":method") is None:
        return Detection.NO
    return _name_for(first_header(headers, "content-type"))


def _classify_upgrade(data: bytes) -> Detection | str:
    if not data:
        return Detection.NEED_MORE
    if not 65 <= data[0] <= 90:
        return Detection.NO
    nl = data.find(b"\n", 0, _DETECT_HEAD)
    if nl < 0:
        if len(data) >= _DETECT_HEAD or not PRINTABLE_LINE.fullmatch(data):
            return Detection.NO
        return Detection.NEED_MORE
    m = REQUEST_LINE.fullmatch(data, 0, nl)
    if m is None or m.group(1) == b"PRI":
        return Detection.NO
    end = HEAD_END.search(data, nl - 1, _DETECT_HEAD)
    if end is None:
        return Detection.NO if len(data) >= _DETECT_HEAD else Detection.NEED_MORE
    if _SETTINGS_HEADER.search(data, nl + 1, end.start()) is None:
        return Detection.NO
    headers = http1_headers(data[nl + 1 : end.start()])
    if headers is None or not upgrades_to_h2c(headers):
        return Detection.NO
    return _name_for(first_header(headers, "content-type"))


def detect_server(data: bytes) -> Detection:
    """NEED_MORE when the server's bytes start like its preface (a SETTINGS frame), NO otherwise."""
    return Detection.NEED_MORE if settings_start(data[:9]) else Detection.NO


class _H2DetectorBase:
    """Shared detection for the two names of an h2c flow; see `classify_client`."""

    name: ClassVar[str]
    transports: ClassVar[frozenset[int]] = frozenset({PROTO_TCP})

    def __init__(self, limits: Limits = DEFAULT_LIMITS) -> None:
        self._limits = limits

    def detect(self, direction: Direction, data: bytes, ctx: DetectContext) -> Detection:
        if direction != Direction.C2S:
            # The server's SETTINGS may come first; only the client's request decides.
            return detect_server(data)
        global _last
        last = _last
        if last is not None and last[0] is data and last[1] is self._limits:
            answer = last[2]
        else:
            answer = classify_client(data, self._limits)
            if type(data) is bytes:
                _last = (data, self._limits, answer)
        if isinstance(answer, Detection):
            return answer
        return Detection.MATCH if answer == self.name else Detection.NO

    def parser(self, ctx: DetectContext) -> Http2Parser:
        return Http2Parser(self.name, self._limits)


class Http2Detector(_H2DetectorBase):
    """Names a flow `http2`: h2c (preface or Upgrade) whose first request is not gRPC."""

    name: ClassVar[str] = APP_HTTP2
    # h2c upgrades happen where HTTP/1.1 runs: these let it win the tie with `http` there.
    ports: ClassVar[frozenset[int]] = frozenset({80, 8000, 8008, 8080, 8888})


class GrpcDetector(_H2DetectorBase):
    """Names a flow `grpc`: h2c whose first request has content-type application/grpc*."""

    name: ClassVar[str] = APP_GRPC
    ports: ClassVar[frozenset[int]] = frozenset({50051})
