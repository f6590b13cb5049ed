"""Drivers and traffic builders shared by the threat-engine tests (test_threat_*.py).

Two small drivers: `PacketDriver` feeds hand-built `Packet`s through a flow table into the
engine's packet and flow-end hooks (no DPI), `run_frames` feeds real frames through the
inspecting engine (decode, flow table, DPI, streams, events). Builders make the frames the
threats are made of: IP fragments, TCP SYNs with options, DNS messages, TLS records.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from pathlib import Path

from podwall.core.types import PROTO_ICMP, PROTO_TCP, PROTO_UDP, TCP_ACK, TCP_SYN, Packet
from podwall.datapath.flows import Flow, FlowTable
from podwall.datapath.io.pcap import CaptureReader, Frame
from podwall.inspect.findings import Finding
from podwall.inspect.pipeline import InspectingEngine, Inspection
from podwall.inspect.threats import ThreatEngine, ThreatSettings
from podwall.lab.synth import ip_frame, tcp_segment, udp_datagram

CLIENT, SERVER = "10.0.0.1", "10.0.0.2"


def settings(**threats: dict[str, object]) -> ThreatSettings:
    """Default settings with some threats' fields changed: settings(syn_flood={"threshold": 5})."""
    return ThreatSettings.model_validate(threats)


def ids(findings: Iterable[Finding]) -> list[str]:
    return [f.id for f in findings]


class PacketDriver:
    """Packets through a flow table (no DPI) into `on_packet`; ended flows into `on_flow_end`."""

    def __init__(self, config: ThreatSettings | None = None) -> None:
        self.engine = ThreatEngine(config)
        self.table = FlowTable()
        self.findings: list[Finding] = []
        self.actions: list[object] = []

    def feed(self, *packets: Packet) -> list[Finding]:
        new: list[Finding] = []
        for pkt in packets:
            ended = self.table.add(pkt)
            new += self.engine.on_packet(pkt, self.table.last_flow, self.table.last_direction)
            self.actions.append(self.engine.packet_action)
            for flow in ended:
                new += self.engine.on_flow_end(flow)
        self.findings += new
        return new

    @property
    def flow(self) -> Flow:
        flow = self.table.last_flow
        assert flow is not None
        return flow

    def finish(self) -> list[Finding]:
        new: list[Finding] = []
        for flow in self.table.flush():
            new += self.engine.on_flow_end(flow)
        self.findings += new
        return new


def run_frames(raw: Iterable[tuple[float, bytes]], config: ThreatSettings | None = None) -> list[Finding]:
    """Every finding the threat engine makes over these Ethernet frames, through the whole datapath."""
    engine = InspectingEngine(Inspection(threats=ThreatEngine(config)))
    for number, (ts, data) in enumerate(sorted(raw, key=lambda f: f[0]), start=1):
        engine.feed(Frame(number, ts, 1, data, len(data)))
    engine.finish()
    return [c.finding for c in engine.findings]


def run_capture(path: Path, config: ThreatSettings | None = None) -> list[Finding]:
    """Every finding the threat engine makes over a capture file."""
    engine = InspectingEngine(Inspection(threats=ThreatEngine(config)))
    with CaptureReader(path) as reader:
        for frame in reader:
            engine.feed(frame)
    engine.finish()
    return [c.finding for c in engine.findings]


# -- packets -------------------------------------------------------------------------------


def syn_packet(
    ts: float, src: bytes, sport: int, dst: bytes, dport: int, *, mss: int = 0, payload: bytes = b""
) -> Packet:
    return Packet(ts, src, dst, PROTO_TCP, sport, dport, 40 + len(payload), payload, TCP_SYN, seq=1, mss=mss)


def icmp_packet(
    ts: float, src: bytes, dst: bytes, icmp_type: int, payload: bytes = b"x" * 56, proto: int = PROTO_ICMP
) -> Packet:
    return Packet(ts, src, dst, proto, ip_len=28 + len(payload), payload=payload, icmp_type=icmp_type, icmp_code=0)


# -- frames --------------------------------------------------------------------------------


def ipv4_fragment(src: str, dst: str, proto: int, ident: int, offset: int, more: bool, data: bytes) -> bytes:
    """An Ethernet frame with one IPv4 fragment: `offset` in bytes (a multiple of 8), `data` its payload."""
    s, d = bytes(map(int, src.split("."))), bytes(map(int, dst.split(".")))
    flags = (0x2000 if more else 0) | (offset >> 3)
    header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(data), ident, flags, 64, proto, 0, s, d)
    return b"\x02" * 6 + b"\x04" * 6 + b"\x08\x00" + header + data  # the decoder checks no checksum


def tcp_syn_frame(src: str, sport: int, dst: str, dport: int, options: bytes, ack: bool = False) -> bytes:
    """A SYN (or SYN-ACK) frame whose TCP header carries `options` (padded to 4 bytes)."""
    options += b"\x00" * (-len(options) % 4)
    flags = TCP_SYN | (TCP_ACK if ack else 0)
    offset = (20 + len(options)) // 4
    header = struct.pack("!HHIIBBHHH", sport, dport, 100, 1 if ack else 0, offset << 4, flags, 64240, 0, 0)
    return ip_frame(src, dst, PROTO_TCP, header + options)


def udp_frame(src: str, sport: int, dst: str, dport: int, payload: bytes) -> bytes:
    return ip_frame(src, dst, PROTO_UDP, udp_datagram(src, sport, dst, dport, payload))


def qname(name: str) -> bytes:
    return b"".join(bytes([len(p)]) + p.encode("latin-1") for p in name.rstrip(".").split(".")) + b"\0"


def dns_message(
    name: str,
    qtype: int = 1,
    *,
    response: bool = False,
    answer_bytes: int = 0,
    edns: int | None = None,
    ident: int = 7,
) -> bytes:
    """A query (or response) for `name`; a response carries one TXT answer of about `answer_bytes`
    bytes; `edns` adds an OPT record with that UDP payload size."""
    answers = b""
    if response and answer_bytes:
        text = b"".join(bytes([min(255, answer_bytes - i)]) + b"t" * min(255, answer_bytes - i)
                        for i in range(0, answer_bytes, 256))  # fmt: skip
        answers = struct.pack("!HHHIH", 0xC00C, 16, 1, 60, len(text)) + text
    opt = struct.pack("!BHHIH", 0, 41, edns, 0, 0) if edns is not None else b""
    header = struct.pack("!6H", ident, 0x8180 if response else 0x0100, 1, 1 if answers else 0, 0, 1 if opt else 0)
    return header + qname(name) + struct.pack("!HH", qtype, 1) + answers + opt


def dns_loop_message() -> bytes:
    """A query whose name is a compression pointer to itself."""
    return struct.pack("!6H", 9, 0x0100, 1, 0, 0, 0) + b"\xc0\x0c" + struct.pack("!HH", 1, 1)


def tls_record(content_type: int, body: bytes, version: int = 0x0303) -> bytes:
    return struct.pack("!BHH", content_type, version, len(body)) + body


def tls_hello(version: int, *, server: bool = False) -> bytes:
    """A ClientHello (or ServerHello) record of `version` without supported_versions."""
    if server:
        body = struct.pack("!H", version) + bytes(32) + b"\x00" + struct.pack("!HB", 0x002F, 0)
        handshake = b"\x02" + len(body).to_bytes(3, "big") + body
    else:
        body = struct.pack("!H", version) + bytes(32) + b"\x00" + struct.pack("!HH", 2, 0x002F) + b"\x01\x00"
        handshake = b"\x01" + len(body).to_bytes(3, "big") + body
    return tls_record(22, handshake, 0x0301)


def heartbeat(claimed: int, payload: bytes, padding: int = 16) -> bytes:
    """A heartbeat request record: type 1, payload_length `claimed`, then `payload` and padding."""
    return tls_record(24, struct.pack("!BH", 1, claimed) + payload + b"\x00" * padding)


def sslv2_hello(cipher_len: int, ciphers: bytes = b"\x01\x00\x80" * 3, challenge: bytes = bytes(16)) -> bytes:
    """An SSLv2 CLIENT-HELLO (version 3.1) whose cipher-spec length field says `cipher_len`."""
    body = b"\x01" + struct.pack("!HHHH", 0x0301, cipher_len, 0, len(challenge)) + ciphers + challenge
    return struct.pack("!H", 0x8000 | len(body)) + body


__all__ = [
    "CLIENT",
    "SERVER",
    "PacketDriver",
    "dns_loop_message",
    "dns_message",
    "heartbeat",
    "icmp_packet",
    "ids",
    "ipv4_fragment",
    "qname",
    "run_capture",
    "run_frames",
    "settings",
    "sslv2_hello",
    "syn_packet",
    "tcp_segment",
    "tcp_syn_frame",
    "tls_hello",
    "tls_record",
    "udp_frame",
]
