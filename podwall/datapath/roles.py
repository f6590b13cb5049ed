"""Which end of a flow is the client, when the first packet seen does not say (pure).

A SYN names its sender the client and a SYN-ACK its receiver; a flow picked up mid-stream is
named by its ports: a system port (1-1023) or a well-known service port against an ephemeral
one is the server's. UDP and ICMP have their own rules (a reply seen first). Used by the flow
table, the enforcer's worker (which rebuilds a SYN where the ports would name the wrong end)
and the tap's in-kernel filter. See docs/flows.md.
"""

from __future__ import annotations

from podwall.core.types import PROTO_ICMP, PROTO_ICMPV6, PROTO_TCP, PROTO_UDP, TCP_ACK, TCP_SYN, Packet

__all__ = ["EPHEMERAL_MIN", "SERVICE_PORTS", "decide_roles", "is_service_port", "server_side_by_port"]

# Well-known service ports above 1023 that decide who is the server when the handshake was
# not seen (databases, brokers, caches, coordination, HTTP alternates, Kubernetes, gRPC).
SERVICE_PORTS: frozenset[int] = frozenset(
    {
        1433, 1521, 1883, 2181, 2379, 2380, 3000, 3306, 4222, 4317, 4318, 5432, 5601, 5671, 5672,
        6379, 6443, 6650, 7000, 7001, 8000, 8080, 8086, 8443, 8500, 8883, 8888, 9042, 9090, 9092,
        9200, 9300, 9411, 10250, 11211, 15672, 26257, 27017, 50051,
    }
)  # fmt: skip
EPHEMERAL_MIN = 32768  # start of the client port range (Linux 32768-60999, IANA 49152-65535)

_SYN_ACK = TCP_SYN | TCP_ACK
_ECHO_REPLY = {PROTO_ICMP: 0, PROTO_ICMPV6: 129}


def is_service_port(port: int) -> bool:
    """True for a system port (1-1023) or one of the well-known service ports above it."""
    return 0 < port < 1024 or port in SERVICE_PORTS


def server_side_by_port(sport: int, dport: int) -> bool | None:
    """Which end of a packet looks like the server by its port: True = destination,
    False = source, None = the ports do not tell."""
    s_svc = is_service_port(sport)
    d_svc = is_service_port(dport)
    if s_svc != d_svc:
        return d_svc
    lo, hi = (sport, dport) if sport < dport else (dport, sport)
    if lo < EPHEMERAL_MIN <= hi:
        return dport == lo
    return None


def decide_roles(pkt: Packet) -> tuple[bool, str, bool]:
    """For a flow's first packet: (its sender is the client, how that was decided, mid-stream)."""
    proto = pkt.proto
    if proto == PROTO_TCP:
        flags = pkt.tcp_flags & _SYN_ACK
        if flags == TCP_SYN:
            return True, "syn", False
        if flags == _SYN_ACK:
            return False, "syn-ack", False
        by_port = server_side_by_port(pkt.sport, pkt.dport)
        if by_port is not None:
            return by_port, "port", True
        return True, "first-packet", True
    if proto == PROTO_UDP:
        if is_service_port(pkt.sport) and not is_service_port(pkt.dport):
            return False, "port", False  # a reply seen first
        return True, "first-packet", False
    if _ECHO_REPLY.get(proto) == pkt.icmp_type:
        return False, "first-packet", False  # an echo reply seen first: its receiver pinged
    return True, "first-packet", False
