"""Cut the server's half of a denied TCP connection with a crafted RST.

iptables' `REJECT --reject-with tcp-reset` answers the client only: the server keeps a
half-open socket until its own timeouts. The enforcer therefore also sends the server a RST
that looks as if the client sent it: source = client address and port, destination = server,
sequence number = the next byte the server expects from the client. That number is taken
from the last ACK the server sent on the connection (its `rcv_nxt`); when no server ACK was
seen yet, from the denied client packet's own sequence number (the packet is dropped, so the
server still expects exactly that byte). An in-window but inexact number still works: the
server answers with a challenge ACK (RFC 5961), the client's kernel, whose socket is gone,
replies with an exact RST. `build_rst` is pure; `RawResetter` sends through raw sockets in
the calling thread's network namespace (the node's, where the enforcer runs).
"""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass

from podwall.core.types import PROTO_TCP, TCP_RST, ip_text

__all__ = ["RawResetter", "ResetTarget", "build_rst"]


@dataclass(frozen=True, slots=True)
class ResetTarget:
    """The connection to cut at the server: packed addresses, ports and the sequence number to use."""

    client_ip: bytes
    client_port: int
    server_ip: bytes
    server_port: int
    seq: int
    # The sequence number the client expects (its last ACK), when known: the client gets a reset
    # too, sent from the server's address through conntrack, so that a Service's DNAT is undone
    # on it (REJECT's own reset of a bridged packet leaves with the pod address and is ignored).
    client_seq: int | None = None


def _checksum(data: bytes) -> int:
    if len(data) & 1:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def build_rst(src: bytes, dst: bytes, sport: int, dport: int, seq: int, ttl: int = 64) -> bytes:
    """A whole IPv4 or IPv6 packet carrying a bare TCP RST from (src, sport) to (dst, dport)."""
    if len(src) != len(dst) or len(src) not in (4, 16):
        raise ValueError("src and dst must both be packed IPv4 (4 bytes) or IPv6 (16 bytes) addresses")
    tcp = struct.pack("!HHIIBBHHH", sport, dport, seq & 0xFFFFFFFF, 0, 5 << 4, TCP_RST, 0, 0, 0)
    if len(src) == 4:
        pseudo = src + dst + struct.pack("!BBH", 0, PROTO_TCP, len(tcp))
    else:
        pseudo = src + dst + struct.pack("!IxxxB", len(tcp), PROTO_TCP)
    tcp = tcp[:16] + struct.pack("!H", _checksum(pseudo + tcp)) + tcp[18:]
    if len(src) == 4:
        ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), 0, 0x4000, ttl, PROTO_TCP, 0, src, dst)
        ip = ip[:10] + struct.pack("!H", _checksum(ip)) + ip[12:]
    else:
        ip = struct.pack("!IHBB16s16s", 6 << 28, len(tcp), PROTO_TCP, ttl, src, dst)
    return ip + tcp


class RawResetter:
    """Sends `build_rst` packets through raw IPPROTO_RAW sockets (one per family, opened on first use)."""

    def __init__(self) -> None:
        self._socks: dict[int, socket.socket] = {}
        self.sent = 0

    def __call__(self, target: ResetTarget) -> None:
        family = socket.AF_INET if len(target.server_ip) == 4 else socket.AF_INET6
        sock = self._socks.get(family)
        if sock is None:
            # IPPROTO_RAW implies "header included" for both families on Linux.
            sock = self._socks[family] = socket.socket(family, socket.SOCK_RAW, socket.IPPROTO_RAW)
        sends = [
            (build_rst(target.client_ip, target.server_ip, target.client_port, target.server_port, target.seq),
             target.server_ip),
        ]  # fmt: skip
        if target.client_seq is not None:
            back = build_rst(
                target.server_ip, target.client_ip, target.server_port, target.client_port, target.client_seq
            )
            sends.append((back, target.client_ip))
        # Each end is reset even when the other's reset cannot be sent; the first failure is raised.
        failure: OSError | None = None
        for packet, dst in sends:
            try:
                sock.sendto(packet, (ip_text(dst), 0))
                self.sent += 1
            except OSError as exc:
                failure = failure or exc
        if failure is not None:
            raise failure

    def close(self) -> None:
        for sock in self._socks.values():
            sock.close()
        self._socks.clear()
