"""Application payloads for synthetic traffic: HTTP/1.1, DNS, RESP (Redis) and TLS hellos.

Each function returns the bytes a real client or server would put on the wire, built from
the protocol specifications, so that the DPI sees traffic of the real shape.
"""

from __future__ import annotations

import ipaddress
import struct


def http_request(method: str, path: str, host: str, body: bytes = b"", user_agent: str = "curl/8.5.0") -> bytes:
    headers = [f"{method} {path} HTTP/1.1", f"Host: {host}", f"User-Agent: {user_agent}", "Accept: */*"]
    if body:
        headers += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
    return ("\r\n".join(headers) + "\r\n\r\n").encode() + body


def http_response(status: int, body: bytes, content_type: str = "text/html", server: str = "nginx/1.22.1") -> bytes:
    reasons = {200: "OK", 201: "Created", 204: "No Content", 403: "Forbidden", 404: "Not Found"}
    head = [
        f"HTTP/1.1 {status} {reasons.get(status, 'OK')}",
        f"Server: {server}",
        "Date: Sat, 28 Nov 2026 10:00:00 GMT",
        f"Content-Type: {content_type}",
        f"Content-Length: {len(body)}",
        "Connection: keep-alive",
    ]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


def resp_command(*args: str | bytes) -> bytes:
    """A Redis command as a RESP array of bulk strings."""
    out = [f"*{len(args)}\r\n".encode()]
    for arg in args:
        raw = arg.encode() if isinstance(arg, str) else arg
        out.append(f"${len(raw)}\r\n".encode() + raw + b"\r\n")
    return b"".join(out)


def _qname(name: str) -> bytes:
    return b"".join(bytes([len(p)]) + p.encode() for p in name.rstrip(".").split(".")) + b"\0"


def dns_query(ident: int, name: str, qtype: int = 1) -> bytes:
    return struct.pack("!HHHHHH", ident, 0x0100, 1, 0, 0, 0) + _qname(name) + struct.pack("!HH", qtype, 1)


def dns_response(ident: int, name: str, addresses: list[str], qtype: int = 1, ttl: int = 30) -> bytes:
    """A response answering with A/AAAA records, names compressed to the question (offset 12)."""
    rcode = 0 if addresses else 3
    header = struct.pack("!HHHHHH", ident, 0x8180 | rcode, 1, len(addresses), 0, 0)
    body = _qname(name) + struct.pack("!HH", qtype, 1)
    for addr in addresses:
        packed = ipaddress.ip_address(addr).packed
        rtype = 1 if len(packed) == 4 else 28
        body += struct.pack("!HHHIH", 0xC00C, rtype, 1, ttl, len(packed)) + packed
    return header + body


def _ext(ext_type: int, data: bytes) -> bytes:
    return struct.pack("!HH", ext_type, len(data)) + data


def tls_client_hello(sni: str, alpn: list[str], random: bytes = bytes(range(32))) -> bytes:
    """A TLS 1.3-capable ClientHello record with SNI, ALPN, supported_versions and a key share."""
    ciphers = [0x1301, 0x1302, 0x1303, 0xC02B, 0xC02F, 0xC02C, 0xC030]
    host = sni.encode()
    sni_ext = _ext(0, struct.pack("!HBH", len(host) + 3, 0, len(host)) + host)
    alpn_list = b"".join(bytes([len(p)]) + p.encode() for p in alpn)
    alpn_ext = _ext(16, struct.pack("!H", len(alpn_list)) + alpn_list)
    versions_ext = _ext(43, bytes([4]) + struct.pack("!HH", 0x0304, 0x0303))
    groups_ext = _ext(10, struct.pack("!HHH", 4, 0x001D, 0x0017))
    sigalgs_ext = _ext(13, struct.pack("!HHHH", 6, 0x0403, 0x0804, 0x0401))
    key_share = _ext(51, struct.pack("!HHH", 36, 0x001D, 32) + bytes(32))
    exts = sni_ext + groups_ext + sigalgs_ext + alpn_ext + versions_ext + key_share
    body = (
        struct.pack("!H", 0x0303)
        + random
        + bytes([32])
        + bytes(range(32, 64))
        + struct.pack("!H", 2 * len(ciphers))
        + b"".join(struct.pack("!H", c) for c in ciphers)
        + b"\x01\x00"
        + struct.pack("!H", len(exts))
        + exts
    )
    handshake = b"\x01" + len(body).to_bytes(3, "big") + body
    return b"\x16\x03\x01" + struct.pack("!H", len(handshake)) + handshake


def tls_server_hello(alpn: str | None = None, cipher: int = 0x1301) -> bytes:
    """A TLS 1.3 ServerHello record (supported_versions 1.3) followed by a ChangeCipherSpec and
    an opaque application-data record, as servers send them."""
    exts = _ext(43, struct.pack("!H", 0x0304)) + _ext(51, struct.pack("!HH", 0x001D, 32) + bytes(32))
    if alpn:
        p = alpn.encode()
        exts += _ext(16, struct.pack("!HB", len(p) + 1, len(p)) + p)
    body = struct.pack("!H", 0x0303) + bytes(range(100, 132)) + bytes([32]) + bytes(range(32, 64))
    body += struct.pack("!HB", cipher, 0) + struct.pack("!H", len(exts)) + exts
    handshake = b"\x02" + len(body).to_bytes(3, "big") + body
    record = b"\x16\x03\x03" + struct.pack("!H", len(handshake)) + handshake
    return record + b"\x14\x03\x03\x00\x01\x01" + b"\x17\x03\x03\x00\x40" + bytes(64)
