"""Value types shared by every layer: decoded packets, flow keys, endpoints and directions.

These are the contracts between the datapath (decode, flow table), the DPI, identity,
policy and the store. They carry no behaviour beyond small, pure helpers.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import IntEnum

# IP protocol numbers used throughout (flows report the number, names are for display).
PROTO_ICMP = 1
PROTO_TCP = 6
PROTO_UDP = 17
PROTO_ICMPV6 = 58

PROTO_NAMES: dict[int, str] = {PROTO_ICMP: "icmp", PROTO_TCP: "tcp", PROTO_UDP: "udp", PROTO_ICMPV6: "icmpv6"}

# TCP flag bits as they appear in the TCP header.
TCP_FIN = 0x01
TCP_SYN = 0x02
TCP_RST = 0x04
TCP_PSH = 0x08
TCP_ACK = 0x10
TCP_URG = 0x20


def proto_name(proto: int) -> str:
    """Lower-case transport name for an IP protocol number (`ip-50` for the ones we do not name)."""
    return PROTO_NAMES.get(proto, f"ip-{proto}")


def ip_text(packed: bytes) -> str:
    """Printable form of a packed IPv4 (4 bytes) or IPv6 (16 bytes) address, IPv6 compressed."""
    return str(ipaddress.ip_address(packed))


def ip_packed(text: str) -> bytes:
    """Packed form of an address given as text; raises ValueError for anything else."""
    return ipaddress.ip_address(text).packed


class Direction(IntEnum):
    """Which way bytes travel within a flow: from the client or from the server."""

    C2S = 0
    S2C = 1

    @property
    def other(self) -> Direction:
        return Direction.S2C if self is Direction.C2S else Direction.C2S


@dataclass(slots=True)
class Packet:
    """One decoded IP packet (after fragment reassembly), as the flow table consumes it.

    `src`/`dst` are packed addresses (4 or 16 bytes). For ICMP/ICMPv6, ports are 0 and
    `icmp_type`/`icmp_code` are set (`payload` starts after the 8-byte ICMP header). `ip_len`
    is the packet's size at the IP layer (header included), which is what byte counters add
    up, as nfstream does.
    """

    ts: float
    src: bytes
    dst: bytes
    proto: int
    sport: int = 0
    dport: int = 0
    ip_len: int = 0
    payload: bytes = b""
    tcp_flags: int = 0
    seq: int = 0
    ack: int = 0
    window: int = 0
    icmp_type: int = -1
    icmp_code: int = -1
    ttl: int = 0
    frame: int = 0  # 1-based frame number in the capture, for error messages and forensics
    vlan: int | None = None
    # TCP options of SYN and SYN-ACK segments (0 / -1 when absent or not a SYN): the threat
    # engine needs the MSS (SACK-panic style small MSS) and the window scale (real window sizes).
    mss: int = 0
    wscale: int = -1
    frag_overlap: bool = False  # reassembled from fragments whose ranges overlapped (teardrop-style)


@dataclass(frozen=True, slots=True)
class FlowKey:
    """Direction-free identity of a flow: the 5-tuple with the two ends in canonical order.

    Build it with `FlowKey.of(packet)`; the end with the smaller (address, port) comes first,
    so both directions of a conversation map to the same key.
    """

    proto: int
    ip_a: bytes
    port_a: int
    ip_b: bytes
    port_b: int

    @staticmethod
    def of(proto: int, src: bytes, sport: int, dst: bytes, dport: int) -> FlowKey:
        if (src, sport) <= (dst, dport):
            return FlowKey(proto, src, sport, dst, dport)
        return FlowKey(proto, dst, dport, src, sport)


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One end of a connection, named: address, port and the identity it resolved to.

    `group` is the learned group (`nv.<service>.<namespace>`) or a reserved group
    (`external`, `nodes`) or, without an inventory, the address itself. `groups` lists every
    group the endpoint belongs to for policy matching (always includes `group`).
    """

    ip: str
    port: int
    group: str
    workload: str | None = None  # "<namespace>/<name>" of the top owner
    namespace: str | None = None
    service: str | None = None
    pod: str | None = None
    kind: str | None = None  # Deployment, StatefulSet, ..., Pod, Node, External
    node: str | None = None
    image: str | None = None
    labels: tuple[tuple[str, str], ...] = ()
    ns_labels: tuple[tuple[str, str], ...] = ()  # labels of the endpoint's namespace (`ns:<label>` criteria)
    groups: tuple[str, ...] = field(default_factory=tuple)

    def as_dict(self) -> dict[str, object]:
        return {
            "ip": self.ip,
            "port": self.port,
            "group": self.group,
            "workload": self.workload,
            "namespace": self.namespace,
            "service": self.service,
            "pod": self.pod,
            "kind": self.kind,
            "node": self.node,
        }


@dataclass(frozen=True, slots=True)
class Observation:
    """One connection as policy and learning see it: who to whom, how, and with what application.

    `app` is the DPI's protocol name, or None when the application was not identified (then
    policy and learning treat the connection by its port). `server_port` is 0 for ICMP.
    `requests` holds one mapping per L7 request of the client (see `podwall.policy.l7context`)
    for L7 rules; `server_name` is the name the client asked for (TLS SNI, HTTP Host), which
    hostname `address` criteria match.
    """

    client: Endpoint
    server: Endpoint
    proto: int
    server_port: int
    app: str | None
    requests: tuple[Mapping[str, object], ...] = ()
    server_name: str | None = None
