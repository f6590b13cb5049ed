"""JA4 TLS client fingerprints (FoxIO's JA4 specification) from the fields the TLS parser extracts.

`ja4(fields)` turns a `client_hello` event's fields into `t13d1516h2_8daaf6152771_e5627efa2ab1`:
transport, version, SNI or not, cipher and extension counts, ALPN first and last characters,
then truncated sha256 hashes of the sorted ciphers and of the sorted extensions (without SNI
and ALPN) followed by the signature algorithms in their original order. GREASE values are
ignored everywhere. Pure and cheap: one call per ClientHello.
"""

from __future__ import annotations

import codecs
import hashlib
from collections.abc import Mapping
from typing import Any

__all__ = ["is_grease", "ja4", "ja4_raw"]


def is_grease(value: int) -> bool:
    """GREASE values (RFC 8701) such as 0x0a0a: reserved noise, never a real choice."""
    return (value & 0x0F0F) == 0x0A0A and (value >> 8) == (value & 0xFF)


_GREASE = frozenset(0x0A0A + 0x1010 * i for i in range(16))  # what `is_grease` says yes to
_EXT_SNI = 0x0000
_EXT_ALPN = 0x0010
_EMPTY_HASH = "000000000000"

_VERSION_CODES = {
    0x0304: "13", 0x0303: "12", 0x0302: "11", 0x0301: "10", 0x0300: "s3", 0x0002: "s2",
    0xFEFF: "d1", 0xFEFD: "d2", 0xFEFC: "d3",
}  # fmt: skip
# The TLS parser reports the legacy version by name; these are the names it uses.
_VERSION_BY_NAME = {"SSLv2": 0x0002, "SSLv3": 0x0300, "TLSv1.0": 0x0301, "TLSv1.1": 0x0302, "TLSv1.2": 0x0303,
                    "TLSv1.3": 0x0304}  # fmt: skip


def _version(fields: Mapping[str, Any]) -> str:
    if fields.get("sslv2_format"):
        return "s2"
    offered = [v for v in fields.get("supported_versions") or () if isinstance(v, int) and not is_grease(v)]
    if offered:
        return _VERSION_CODES.get(max(offered), "00")
    legacy = fields.get("legacy_version")
    if isinstance(legacy, str):
        code = _VERSION_BY_NAME.get(legacy)
        if code is None and legacy.startswith("0x"):
            try:
                code = int(legacy, 16)
            except ValueError:
                code = None
        legacy = code
    return _VERSION_CODES.get(legacy, "00") if isinstance(legacy, int) else "00"


def _alpn_bytes(value: Any) -> bytes:
    """The first ALPN value as bytes (the TLS parser gives text with non-ASCII bytes as `\\xNN`)."""
    if isinstance(value, bytes | bytearray):
        return bytes(value)
    if not isinstance(value, str):
        return b""
    raw = value.encode("latin-1", "backslashreplace")
    if b"\\x" in raw:
        raw = codecs.escape_decode(raw)[0]
    return raw


def _alnum(byte: int) -> bool:
    return 0x30 <= byte <= 0x39 or 0x41 <= byte <= 0x5A or 0x61 <= byte <= 0x7A


def _alpn_code(alpn: Any) -> str:
    if not alpn:
        return "00"
    first = _alpn_bytes(alpn[0])
    if not first:
        return "00"
    if _alnum(first[0]) and _alnum(first[-1]):
        return chr(first[0]) + chr(first[-1])
    text = first.hex()
    return text[0] + text[-1]


def _hash12(text: str) -> str:
    return hashlib.sha256(text.encode("ascii")).hexdigest()[:12]


def _hex_list(values: list[int], sort: bool) -> str:
    """`values` as comma-separated hex of at least 4 digits, sorted as text when `sort`."""
    if not values:
        return ""
    if sort:
        if max(values) > 0xFFFF:  # SSLv2 cipher specs: longer texts sort differently than numbers
            return ",".join(sorted([f"{v:04x}" for v in values]))
        values = sorted(values)  # 4 digits each: text order is number order
    # One %-format for the whole list: a ClientHello lists a hundred or more values.
    return ("%04x," * len(values) % tuple(values))[:-1]


def _parts(fields: Mapping[str, Any], transport: str) -> tuple[str, str, str, str]:
    # Set lookups rather than `is_grease` calls: a ClientHello lists a hundred or more values.
    ciphers = [c for c in fields.get("ciphers") or () if c not in _GREASE]
    extensions = [e for e in fields.get("extensions") or () if e not in _GREASE]
    sigalgs = [s for s in fields.get("signature_algorithms") or () if s not in _GREASE]
    prefix = (
        f"{transport}{_version(fields)}{'d' if _EXT_SNI in extensions else 'i'}"
        f"{min(len(ciphers), 99):02d}{min(len(extensions), 99):02d}{_alpn_code(fields.get('alpn'))}"
    )
    return (
        prefix,
        _hex_list(ciphers, True),
        _hex_list([e for e in extensions if e != _EXT_SNI and e != _EXT_ALPN], True),
        _hex_list(sigalgs, False),
    )


def ja4_raw(client_hello_fields: Mapping[str, Any], transport: str = "t") -> str:
    """The unhashed form (JA4_r): prefix, sorted ciphers, sorted extensions, signature algorithms."""
    prefix, ciphers, extensions, sigalgs = _parts(client_hello_fields, transport)
    raw = f"{prefix}_{ciphers}_{extensions}"
    return f"{raw}_{sigalgs}" if sigalgs else raw


def ja4(client_hello_fields: Mapping[str, Any], transport: str = "t") -> str:
    """The JA4 fingerprint of a ClientHello given as the TLS parser's `client_hello` fields.

    `transport` is `t` (TLS over TCP), `q` (QUIC) or `d` (DTLS). An SSLv2-format hello has
    3-byte cipher specs, which are written with as many hex digits as they need.
    """
    prefix, ciphers, extensions, sigalgs = _parts(client_hello_fields, transport)
    cipher_hash = _hash12(ciphers) if ciphers else _EMPTY_HASH
    ext_hash = _hash12(f"{extensions}_{sigalgs}" if sigalgs else extensions) if extensions else _EMPTY_HASH
    return f"{prefix}_{cipher_hash}_{ext_hash}"
