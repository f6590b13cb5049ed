"""A deterministic packet builder: whole TCP conversations and UDP exchanges as Ethernet frames.

Used to make the bundled demo captures and test traffic without a network: each call lays
down a three-way handshake, the payload segments of both sides (split at the MSS, each
acknowledged), and a FIN teardown, with valid IPv4/IPv6, TCP and UDP checksums. Time moves
forward by small fixed steps so the same script always gives the same bytes.
"""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Iterable
from dataclasses import dataclass, field

from podwall.core.types import PROTO_ICMP, PROTO_TCP, PROTO_UDP, TCP_ACK, TCP_FIN, TCP_PSH, TCP_SYN

ETH_IPV4 = 0x0800
ETH_IPV6 = 0x86DD


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def _mac(ip: bytes) -> bytes:
    # A stable, locally administered MAC derived from the address keeps captures readable.
    return b"\x02\x42" + ip[-4:]


@dataclass
class Capture:
    """Frames in time order (timestamp, Ethernet frame bytes)."""

    frames: list[tuple[float, bytes]] = field(default_factory=list)

    def extend(self, frames: Iterable[tuple[float, bytes]]) -> None:
        self.frames.extend(frames)

    def sorted(self) -> list[tuple[float, bytes]]:
        return sorted(self.frames, key=lambda f: f[0])


def ip_frame(src: str, dst: str, proto: int, l4: bytes, ttl: int = 64, ident: int = 0) -> bytes:
    """An Ethernet frame carrying one IPv4 or IPv6 packet with the given L4 bytes."""
    s = ipaddress.ip_address(src).packed
    d = ipaddress.ip_address(dst).packed
    if len(s) == 4:
        header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(l4), ident, 0x4000, ttl, proto, 0, s, d)
        header = header[:10] + struct.pack("!H", _checksum(header)) + header[12:]
        return _mac(d) + _mac(s) + struct.pack("!H", ETH_IPV4) + header + l4
    header = struct.pack("!IHBB16s16s", 6 << 28, len(l4), proto, ttl, s, d)
    return _mac(d) + _mac(s) + struct.pack("!H", ETH_IPV6) + header + l4


def _pseudo(src: str, dst: str, proto: int, length: int) -> bytes:
    s = ipaddress.ip_address(src).packed
    d = ipaddress.ip_address(dst).packed
    if len(s) == 4:
        return s + d + struct.pack("!BBH", 0, proto, length)
    return s + d + struct.pack("!IxxxB", length, proto)


def tcp_segment(
    src: str, sport: int, dst: str, dport: int, seq: int, ack: int, flags: int, payload: bytes = b""
) -> bytes:
    """A TCP segment (20-byte header, window 64240) with a correct checksum."""
    header = struct.pack("!HHIIBBHHH", sport, dport, seq & 0xFFFFFFFF, ack & 0xFFFFFFFF, 5 << 4, flags, 64240, 0, 0)
    csum = _checksum(_pseudo(src, dst, PROTO_TCP, len(header) + len(payload)) + header + payload)
    return header[:16] + struct.pack("!H", csum) + header[18:] + payload


def udp_datagram(src: str, sport: int, dst: str, dport: int, payload: bytes) -> bytes:
    header = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0)
    csum = _checksum(_pseudo(src, dst, PROTO_UDP, len(header) + len(payload)) + header + payload) or 0xFFFF
    return header[:6] + struct.pack("!H", csum) + payload


def icmp_echo(ident: int, seq: int, payload: bytes, reply: bool = False) -> bytes:
    header = struct.pack("!BBHHH", 0 if reply else 8, 0, 0, ident, seq)
    csum = _checksum(header + payload)
    return header[:2] + struct.pack("!H", csum) + header[4:] + payload


@dataclass
class TcpConversation:
    """One TCP connection laid down as frames: handshake, exchanges, teardown."""

    client: str
    cport: int
    server: str
    sport: int
    start: float
    mss: int = 1448
    step: float = 0.0005
    isn_c: int = 1000
    isn_s: int = 5000
    frames: list[tuple[float, bytes]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.t = self.start
        self.seq_c = self.isn_c
        self.seq_s = self.isn_s
        self._emit(True, TCP_SYN, b"", ack=0)
        self.seq_c += 1
        self._emit(False, TCP_SYN | TCP_ACK, b"", ack=self.seq_c)
        self.seq_s += 1
        self._emit(True, TCP_ACK, b"", ack=self.seq_s)

    def _emit(self, from_client: bool, flags: int, payload: bytes, ack: int) -> None:
        if from_client:
            seg = tcp_segment(self.client, self.cport, self.server, self.sport, self.seq_c, ack, flags, payload)
            frame = ip_frame(self.client, self.server, PROTO_TCP, seg)
        else:
            seg = tcp_segment(self.server, self.sport, self.client, self.cport, self.seq_s, ack, flags, payload)
            frame = ip_frame(self.server, self.client, PROTO_TCP, seg)
        self.frames.append((round(self.t, 6), frame))
        self.t += self.step

    def send(self, from_client: bool, data: bytes) -> TcpConversation:
        """Send `data` from one side in MSS-sized segments, each acknowledged by the other side."""
        for off in range(0, len(data), self.mss):
            chunk = data[off : off + self.mss]
            if from_client:
                self._emit(True, TCP_PSH | TCP_ACK, chunk, ack=self.seq_s)
                self.seq_c += len(chunk)
                self._emit(False, TCP_ACK, b"", ack=self.seq_c)
            else:
                self._emit(False, TCP_PSH | TCP_ACK, chunk, ack=self.seq_c)
                self.seq_s += len(chunk)
                self._emit(True, TCP_ACK, b"", ack=self.seq_s)
        return self

    def close(self) -> list[tuple[float, bytes]]:
        """Client-initiated FIN teardown; returns every frame of the conversation."""
        self._emit(True, TCP_FIN | TCP_ACK, b"", ack=self.seq_s)
        self.seq_c += 1
        self._emit(False, TCP_FIN | TCP_ACK, b"", ack=self.seq_c)
        self.seq_s += 1
        self._emit(True, TCP_ACK, b"", ack=self.seq_s)
        return self.frames


def tcp_exchange(
    client: str,
    cport: int,
    server: str,
    sport: int,
    start: float,
    exchanges: Iterable[tuple[bytes, bytes]],
    isn: int = 1000,
) -> list[tuple[float, bytes]]:
    """A whole connection: for each (request, response) pair the client sends, the server answers."""
    conv = TcpConversation(client, cport, server, sport, start, isn_c=isn, isn_s=isn * 7 + 13)
    for request, response in exchanges:
        if request:
            conv.send(True, request)
        if response:
            conv.send(False, response)
    return conv.close()


def udp_exchange(
    client: str, cport: int, server: str, sport: int, start: float, request: bytes, response: bytes | None
) -> list[tuple[float, bytes]]:
    """One UDP request and (optionally) its reply."""
    frames = [(start, ip_frame(client, server, PROTO_UDP, udp_datagram(client, cport, server, sport, request)))]
    if response is not None:
        seg = udp_datagram(server, sport, client, cport, response)
        frames.append((round(start + 0.0003, 6), ip_frame(server, client, PROTO_UDP, seg)))
    return frames


def ping(client: str, server: str, start: float, count: int = 1, ident: int = 1) -> list[tuple[float, bytes]]:
    """ICMP echo requests and replies."""
    frames = []
    for i in range(count):
        body = bytes(range(48))
        t = round(start + i, 6)
        frames.append((t, ip_frame(client, server, PROTO_ICMP, icmp_echo(ident, i + 1, body))))
        frames.append((round(t + 0.0002, 6), ip_frame(server, client, PROTO_ICMP, icmp_echo(ident, i + 1, body, True))))
    return frames
