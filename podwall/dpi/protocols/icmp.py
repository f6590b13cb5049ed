"""ICMP and ICMPv6 messages as L7 events: a message's type and code, with a readable type name.

ICMP is not a payload protocol that a detector could name from bytes: the flow table gives
each ICMP flow an `IcmpSession`, which names the app `icmp` or `icmpv6` and records an event
per message (type, code, type name).
"""

from __future__ import annotations

from podwall.core.types import PROTO_ICMPV6, Direction
from podwall.dpi.base import L7Event

__all__ = ["ICMP6_TYPE_NAMES", "ICMP_TYPE_NAMES", "IcmpSession", "icmp_event", "icmp_type_name"]

ICMP_TYPE_NAMES: dict[int, str] = {
    0: "echo-reply", 3: "dest-unreachable", 4: "source-quench", 5: "redirect", 8: "echo-request",
    9: "router-advertisement", 10: "router-solicitation", 11: "time-exceeded", 12: "parameter-problem",
    13: "timestamp-request", 14: "timestamp-reply", 15: "info-request", 16: "info-reply",
    17: "address-mask-request", 18: "address-mask-reply", 30: "traceroute", 42: "extended-echo-request",
    43: "extended-echo-reply",
}  # fmt: skip
ICMP6_TYPE_NAMES: dict[int, str] = {
    1: "dest-unreachable", 2: "packet-too-big", 3: "time-exceeded", 4: "parameter-problem",
    128: "echo-request", 129: "echo-reply", 130: "mld-query", 131: "mld-report", 132: "mld-done",
    133: "router-solicitation", 134: "router-advertisement", 135: "neighbor-solicitation",
    136: "neighbor-advertisement", 137: "redirect", 138: "router-renumbering", 139: "node-info-query",
    140: "node-info-response", 141: "inverse-nd-solicitation", 142: "inverse-nd-advertisement",
    143: "mldv2-report", 151: "multicast-router-advertisement", 152: "multicast-router-solicitation",
    153: "multicast-router-termination", 160: "extended-echo-request", 161: "extended-echo-reply",
}  # fmt: skip


def icmp_type_name(proto: int, icmp_type: int) -> str:
    """`echo-request` and friends; `type-N` for types without a name."""
    names = ICMP6_TYPE_NAMES if proto == PROTO_ICMPV6 else ICMP_TYPE_NAMES
    return names.get(icmp_type) or f"type-{icmp_type}"


def icmp_event(proto: int, icmp_type: int, icmp_code: int, direction: Direction) -> L7Event:
    """The `message` event of one ICMP (proto 1) or ICMPv6 (proto 58) packet."""
    return L7Event(
        "icmpv6" if proto == PROTO_ICMPV6 else "icmp",
        "message",
        direction,
        {"type": icmp_type, "code": icmp_code, "type_name": icmp_type_name(proto, icmp_type)},
    )


class IcmpSession:
    """The DPI session of an ICMP/ICMPv6 flow: the app is known from the IP protocol, and each
    message's type and code become an event (the first `MAX_EVENTS`, then nothing more is needed)."""

    MAX_EVENTS = 32

    def __init__(self, proto: int) -> None:
        self.proto = proto
        self.app: str | None = "icmpv6" if proto == PROTO_ICMPV6 else "icmp"
        self.server_name: str | None = None
        self.events: list[L7Event] = []
        self.event_count = 0
        self.requests: list[L7Event] = []  # ICMP carries no requests L7 rules judge
        self.requests_truncated = False
        self.error: str | None = None
        self.done = False

    def on_icmp(self, direction: Direction, icmp_type: int, icmp_code: int) -> None:
        self.events.append(icmp_event(self.proto, icmp_type, icmp_code, direction))
        self.event_count += 1
        self.done = self.event_count >= self.MAX_EVENTS

    # The stream/datagram hooks of the session contract never apply to ICMP.
    def on_stream(self, direction: Direction, data: bytes) -> None:
        return None

    def on_datagram(self, direction: Direction, data: bytes) -> None:
        return None

    def on_gap(self, direction: Direction) -> None:
        return None

    def skippable(self, direction: Direction) -> int:
        return 0

    def skip(self, direction: Direction, n: int) -> None:
        raise ValueError("ICMP has no stream to skip")

    def finish(self) -> None:
        return None
