"""HTTP/2 wire facts and helpers shared by the h2c/gRPC detector and parser.

Frame types and flags (RFC 9113 6), the connection preface, the app names, memory bounds,
HPACK decoding of header blocks (RFC 7541), header-fragment extraction, frame sanity tests,
and the HTTP/1.1 `Upgrade: h2c` header reading (RFC 7540 3.2). Pure functions, no state.
"""

from __future__ import annotations

import re
from typing import Any

from hpack import Decoder

from podwall.core.errors import ProtocolError
from podwall.core.limits import Limits

__all__ = [
    "ACK",
    "APP_GRPC",
    "APP_HTTP2",
    "CONTINUATION",
    "DATA",
    "DEFAULT_MAX_FRAME",
    "END_HEADERS",
    "END_STREAM",
    "ERROR_CODES",
    "GOAWAY",
    "HEADERS",
    "HEAD_END",
    "HELD_HEADER_BYTES",
    "HELD_PATH",
    "HPACK_TABLE_CAP",
    "MAX_HEADERS_KEPT",
    "MAX_STREAMS",
    "PADDED",
    "PING",
    "PREFACE",
    "PRINTABLE_LINE",
    "PRIORITY",
    "PRIORITY_FLAG",
    "PUSH_PROMISE",
    "REQUEST_LINE",
    "RST_STREAM",
    "SETTINGS",
    "STATUS_LINE",
    "TEXT_CAP",
    "WINDOW_UPDATE",
    "check_settings",
    "control_frame_ok",
    "decode_block",
    "decode_first_block",
    "first_header",
    "frame_error",
    "header_fragment",
    "http1_headers",
    "is_grpc",
    "kept_headers",
    "new_decoder",
    "remember_first_block",
    "request_fields",
    "settings_start",
    "split_grpc_path",
    "upgrades_to_h2c",
]

APP_HTTP2 = "http2"
APP_GRPC = "grpc"
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
MAX_STREAMS = 128  # streams tracked at once; the oldest is forgotten past it
MAX_HEADERS_KEPT = 64  # headers listed in an event (all of them are still decoded)
HELD_HEADER_BYTES = 4096  # response header text held per open stream (streams x this bounds memory)
HELD_PATH = 2048  # characters of a request's :path held until its response is reported
TEXT_CAP = 256  # characters kept of grpc-message and GOAWAY debug data
HPACK_TABLE_CAP = 64 * 1024  # largest dynamic table an encoder may ask for (memory bound)
DEFAULT_MAX_FRAME = 16384  # SETTINGS_MAX_FRAME_SIZE before any SETTINGS (RFC 9113 6.5.2)

# Frame types (RFC 9113 6) and flags.
DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = range(10)
END_STREAM = 0x1
ACK = 0x1
END_HEADERS = 0x4
PADDED = 0x8
PRIORITY_FLAG = 0x20

ERROR_CODES = {
    0x0: "NO_ERROR", 0x1: "PROTOCOL_ERROR", 0x2: "INTERNAL_ERROR", 0x3: "FLOW_CONTROL_ERROR",
    0x4: "SETTINGS_TIMEOUT", 0x5: "STREAM_CLOSED", 0x6: "FRAME_SIZE_ERROR", 0x7: "REFUSED_STREAM",
    0x8: "CANCEL", 0x9: "COMPRESSION_ERROR", 0xA: "CONNECT_ERROR", 0xB: "ENHANCE_YOUR_CALM",
    0xC: "INADEQUATE_SECURITY", 0xD: "HTTP_1_1_REQUIRED",
}  # fmt: skip

REQUEST_LINE = re.compile(rb"([A-Z][A-Z-]{0,19}) ([\x21-\x7e]+) HTTP/1\.1\r?")
STATUS_LINE = re.compile(rb"HTTP/1\.[01] (\d{3})(?: [^\r\n]*)?\r?")
_HEADER_LINE = re.compile(rb"([!#$%&'*+\-.^_`|~0-9A-Za-z]+):[ \t]*(.*?)[ \t]*\r?")
HEAD_END = re.compile(rb"\r?\n\r?\n")
PRINTABLE_LINE = re.compile(rb"[\x20-\x7e]*\r?")
_GRPC_PATH = re.compile(r"/([^/]+)/([^/]+)")


def frame_error(what: str) -> ProtocolError:
    """A ProtocolError for a malformed HTTP/2 connection."""
    return ProtocolError(f"HTTP/2: {what}")


def is_grpc(content_type: str | None) -> bool:
    """Whether a content-type names gRPC (`application/grpc`, `application/grpc+proto`, ...);
    not gRPC-Web's text form (`application/grpc-web-text`), which is base64, not framed bytes."""
    if content_type is None or content_type[:16].lower() != "application/grpc":
        return False
    return not content_type.lower().startswith("application/grpc-web-text")


def split_grpc_path(path: str | None) -> tuple[str | None, str | None]:
    """`/pkg.Service/Method` -> (`pkg.Service`, `Method`); (None, None) for any other shape."""
    m = _GRPC_PATH.fullmatch(path or "")
    return (m.group(1), m.group(2)) if m else (None, None)


def new_decoder(limits: Limits) -> Decoder:
    """A fresh HPACK decoder whose header list and dynamic table sizes are bounded."""
    decoder = Decoder(max_header_list_size=limits.parser_buffer)
    decoder.max_allowed_table_size = HPACK_TABLE_CAP
    return decoder


# The last first header block the h2c detector decoded with a fresh decoder, with that decoder
# afterwards and the headers: the parser of the flow it has just named reads the same block
# with its own fresh decoder next, and takes these instead (once), so the block is decoded once.
_first_block: tuple[bytes, Decoder, list[tuple[str, str]]] | None = None


def remember_first_block(block: bytes, decoder: Decoder, headers: list[tuple[str, str]]) -> None:
    """Keep a fresh decoder's reading of `block` for `decode_first_block`."""
    global _first_block
    _first_block = (bytes(block), decoder, headers)


def decode_first_block(decoder: Decoder, block: bytes, where: str) -> tuple[Decoder, list[tuple[str, str]]]:
    """`decode_block` for a fresh `decoder`'s first block: (the decoder to go on with, the headers)."""
    global _first_block
    memo = _first_block
    if (
        memo is not None
        and memo[0] == block
        and memo[1].max_header_list_size == decoder.max_header_list_size
        and memo[1].max_allowed_table_size == decoder.max_allowed_table_size
    ):
        _first_block = None  # a decoder has one owner
        return memo[1], memo[2]
    return decoder, decode_block(decoder, block, where)


def decode_block(decoder: Decoder, block: bytes, where: str) -> list[tuple[str, str]]:
    """One complete header block as (name, value) text pairs; any HPACK failure is a ProtocolError."""
    try:
        raw = decoder.decode(block, raw=True)
    except Exception as exc:  # hpack's errors, and whatever else garbage might provoke in it
        raise ProtocolError(f"HTTP/2: cannot decode the header block {where}: {str(exc)[:120]}") from None
    return [(bytes(n).decode("latin-1").lower(), bytes(v).decode("latin-1")) for n, v in raw]


def header_fragment(ftype: int, flags: int, payload: bytes) -> bytes:
    """The header block fragment of a HEADERS or PUSH_PROMISE payload, padding and priority removed."""
    start = 0
    pad = 0
    if flags & PADDED:
        if not payload:
            raise frame_error("padded frame without a pad length")
        pad = payload[0]
        start = 1
    if ftype == HEADERS and flags & PRIORITY_FLAG:
        start += 5
    elif ftype == PUSH_PROMISE:
        start += 4
    if start + pad > len(payload):
        raise frame_error(f"padding and fixed fields ({start + pad} bytes) exceed the {len(payload)}-byte frame")
    return payload[start : len(payload) - pad]


def first_header(headers: list[tuple[str, str]], name: str) -> str | None:
    """The value of the first header called `name` (lower case), None if there is none."""
    for n, v in headers:
        if n == name:
            return v
    return None


def settings_start(head: bytes) -> bool:
    """Whether up to 9 bytes can begin a non-ACK SETTINGS frame on stream 0 of at most 16384 bytes."""
    if head[:1] not in (b"", b"\x00"):
        return False  # most flows: their first byte already rules it out
    for i, b in enumerate(head[:9]):
        if (i == 0 and b) or (i == 3 and b != SETTINGS) or (i == 4 and b & ACK) or (i >= 5 and b):
            return False
    if len(head) < 9:
        return True
    length = int.from_bytes(head[:3], "big")
    return length % 6 == 0 and length <= DEFAULT_MAX_FRAME


def control_frame_ok(ftype: int, length: int, sid: int) -> bool:
    """PING (8 bytes, stream 0), WINDOW_UPDATE (4 bytes) and PRIORITY (5 bytes, a stream) are sane."""
    if ftype == PING:
        return length == 8 and sid == 0
    if ftype == PRIORITY:
        return length == 5 and sid != 0
    return length == 4


def check_settings(payload: bytes) -> None:
    """Reject SETTINGS values RFC 9113 6.5.2 forbids (ENABLE_PUSH, INITIAL_WINDOW_SIZE, MAX_FRAME_SIZE)."""
    for i in range(0, len(payload), 6):
        ident = int.from_bytes(payload[i : i + 2], "big")
        value = int.from_bytes(payload[i + 2 : i + 6], "big")
        if (
            (ident == 2 and value > 1)
            or (ident == 4 and value > 0x7FFFFFFF)
            or (ident == 5 and not DEFAULT_MAX_FRAME <= value <= 0xFFFFFF)
        ):
            raise frame_error(f"invalid SETTINGS value {value} for setting {ident}")


def request_fields(sid: int, headers: list[tuple[str, str]], budget: int) -> dict[str, Any]:
    """The `request` event fields every HTTP/2 request has, from its decoded header block."""
    method = first_header(headers, ":method")
    if method is None:
        raise frame_error(f"request on stream {sid} without :method")
    return {
        "stream_id": sid,
        "method": method,
        "path": first_header(headers, ":path"),
        "authority": first_header(headers, ":authority") or first_header(headers, "host"),
        "scheme": first_header(headers, ":scheme"),
        "content_type": first_header(headers, "content-type"),
        "user_agent": first_header(headers, "user-agent"),
        "headers": kept_headers(headers, budget),
    }


def kept_headers(headers: list[tuple[str, str]], budget: int) -> list[tuple[str, str]]:
    """The regular (non-pseudo) headers, at most MAX_HEADERS_KEPT and `budget` characters of them."""
    kept: list[tuple[str, str]] = []
    for name, value in headers:
        if name.startswith(":"):
            continue
        budget -= len(name) + len(value)
        if budget < 0 or len(kept) == MAX_HEADERS_KEPT:
            break
        kept.append((name, value))
    return kept


def http1_headers(block: bytes) -> list[tuple[str, str]] | None:
    """The header lines of an HTTP/1.1 head as (lower-case name, value) pairs; None if one is invalid."""
    headers: list[tuple[str, str]] = []
    for line in block.split(b"\n"):
        m = _HEADER_LINE.fullmatch(line)
        if m is None:
            return None
        headers.append((m.group(1).decode("ascii").lower(), m.group(2).decode("latin-1")))
    return headers


def upgrades_to_h2c(headers: list[tuple[str, str]]) -> bool:
    """Whether HTTP/1.1 request headers ask for h2c: `Upgrade: h2c` and an HTTP2-Settings header."""
    upgrade = first_header(headers, "upgrade") or ""
    tokens = {t.strip().lower() for t in upgrade.split(",")}
    return "h2c" in tokens and first_header(headers, "http2-settings") is not None
