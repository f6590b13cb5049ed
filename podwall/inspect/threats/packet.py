"""Per-packet threats: floods, oversized and overlapping IP packets, SYN abuse, ICMP tunnels, bad frames.

Each check looks at one decoded packet (or one decoder problem) and at most a small bounded
table keyed by address: SYN and ICMP rates per destination, echo request payloads per pair
of hosts. Nothing here needs the flow.
"""

from __future__ import annotations

from collections import deque

from podwall.core.errors import Problem
from podwall.core.types import PROTO_ICMP, PROTO_ICMPV6, TCP_ACK, Packet, ip_text, proto_name
from podwall.datapath.decode import PacketProblem
from podwall.inspect.threats.catalog import ThreatSettings
from podwall.inspect.threats.report import Reporter, WindowCounter, evict_oldest

__all__ = ["ECHO_REPLY", "ECHO_REQUEST", "PacketThreats"]

ECHO_REQUEST = {PROTO_ICMP: 8, PROTO_ICMPV6: 128}
ECHO_REPLY = {PROTO_ICMP: 0, PROTO_ICMPV6: 129}
# ICMPv6 neighbour discovery and multicast listener messages: a busy segment sends many, none is a flood.
_ICMPV6_LINK = frozenset({130, 131, 132, 133, 134, 135, 136, 137, 143})
RECENT_ECHOES = 64  # echo request payloads remembered per pair of hosts
MAX_PAIRS = 16384  # pairs of hosts whose echoes are followed


class _EchoPair:
    """Echoes between a requester and a responder within the current window."""

    __slots__ = ("mismatches", "recent", "sizes", "start")

    def __init__(self, ts: float) -> None:
        self.start = ts
        self.recent: deque[int] = deque(maxlen=RECENT_ECHOES)  # hashes of request payloads
        self.sizes: set[int] = set()
        self.mismatches = 0


class PacketThreats:
    """The per-packet checks; `tcp_syn`, `icmp` and `fragments` are called by the engine."""

    def __init__(self, settings: ThreatSettings, reporter: Reporter) -> None:
        self._s = settings
        self._r = reporter
        self._syns = WindowCounter(settings.syn_flood.window)
        self._icmps = WindowCounter(settings.icmp_flood.window)
        self._echoes: dict[tuple[bytes, bytes], _EchoPair] = {}

    # -- TCP ------------------------------------------------------------------------------

    def tcp_syn(self, pkt: Packet, flags: int) -> None:
        """A segment with SYN set: flood rate (pure SYNs), data on the SYN, a small MSS."""
        r, s = self._r, self._s
        if not flags & TCP_ACK and r.enabled["syn_flood"]:
            self._flood("syn_flood", pkt, self._syns, s.syn_flood.threshold, "SYNs")
        if pkt.payload:
            r.packet_hit(
                "syn_with_data",
                f"{'SYN-ACK' if flags & TCP_ACK else 'SYN'} from {ip_text(pkt.src)}:{pkt.sport} "
                f"carries {len(pkt.payload)} bytes",
                pkt,
                target=(pkt.src, pkt.dst),
                detail={"bytes": len(pkt.payload)},
            )
        if 0 < pkt.mss < s.tcp_small_mss.min_mss:
            r.packet_hit(
                "tcp_small_mss",
                f"MSS {pkt.mss} from {ip_text(pkt.src)}:{pkt.sport} is below {s.tcp_small_mss.min_mss}",
                pkt,
                target=(pkt.src, pkt.dst),
                detail={"mss": pkt.mss, "min_mss": s.tcp_small_mss.min_mss},
            )

    def _flood(self, key: str, pkt: Packet, counter: WindowCounter, threshold: int, what: str) -> None:
        """Count `pkt` against its destination; more than `threshold` within the counter's window is a flood."""
        count = counter.add(pkt.dst, pkt.ts)
        if count > threshold:
            self._r.packet_hit(
                key,
                f"{count} {what} to {ip_text(pkt.dst)} within {counter.window:g}s (threshold {threshold})",
                pkt,
                target=pkt.dst,
                detail={"count": count, "threshold": threshold},
            )

    # -- ICMP -----------------------------------------------------------------------------

    def icmp(self, pkt: Packet) -> None:
        """An ICMP/ICMPv6 message: flood rate, ping of death, tunnelling in echoes."""
        r, s = self._r, self._s
        proto, icmp_type = pkt.proto, pkt.icmp_type
        if r.enabled["icmp_flood"] and not (proto == PROTO_ICMPV6 and icmp_type in _ICMPV6_LINK):
            self._flood("icmp_flood", pkt, self._icmps, s.icmp_flood.threshold, f"{proto_name(proto)} messages")
        if pkt.ip_len > s.ping_of_death.max_size:
            self._ping_of_death(pkt.ts, pkt.frame, pkt.src, pkt.dst, proto, f"{pkt.ip_len}-byte {proto_name(proto)}")
        if r.enabled["icmp_tunnel"]:
            if icmp_type == ECHO_REQUEST.get(proto):
                self._echo_request(pkt)
            elif icmp_type == ECHO_REPLY.get(proto):
                self._echo_reply(pkt)

    def _ping_of_death(self, ts: float, frame: int, src: bytes, dst: bytes, proto: int, what: str) -> None:
        limit = self._s.ping_of_death.max_size
        self._r.hit(
            "ping_of_death",
            f"{what} packet from {ip_text(src)} to {ip_text(dst)} exceeds {limit} bytes",
            ts=ts,
            frame=frame,
            target=(src, dst),
            detail={"src": ip_text(src), "dst": ip_text(dst), "proto": proto, "max_size": limit},
        )

    def _pair(self, key: tuple[bytes, bytes], ts: float) -> _EchoPair:
        pair = self._echoes.get(key)
        if pair is None:
            evict_oldest(self._echoes, MAX_PAIRS)
            pair = self._echoes[key] = _EchoPair(ts)
        elif not 0 <= ts - pair.start < self._s.icmp_tunnel.window:
            pair.start = ts
            pair.sizes.clear()
            pair.mismatches = 0
        return pair

    def _echo_request(self, pkt: Packet) -> None:
        s = self._s.icmp_tunnel
        payload = pkt.payload
        pair = self._pair((pkt.src, pkt.dst), pkt.ts)
        pair.recent.append(hash(payload))
        if len(pair.sizes) < s.distinct_sizes:
            pair.sizes.add(len(payload))
        if len(payload) > s.max_payload:
            self._tunnel(
                pkt, pkt.src, pkt.dst, f"an echo request carries {len(payload)} bytes (more than {s.max_payload})"
            )
        elif len(pair.sizes) >= s.distinct_sizes:
            self._tunnel(pkt, pkt.src, pkt.dst, f"echo requests came in {len(pair.sizes)} different sizes")

    def _echo_reply(self, pkt: Packet) -> None:
        s = self._s.icmp_tunnel
        pair = self._echoes.get((pkt.dst, pkt.src))
        if pair is None or not pair.recent:
            return  # no request seen: the capture may have started late
        self._pair((pkt.dst, pkt.src), pkt.ts)  # rolls the window over when it ran out
        if hash(pkt.payload) in pair.recent:
            return
        pair.mismatches += 1
        if pair.mismatches >= s.mismatches:
            self._tunnel(pkt, pkt.dst, pkt.src, f"{pair.mismatches} echo replies did not echo their request")

    def _tunnel(self, pkt: Packet, requester: bytes, responder: bytes, why: str) -> None:
        self._r.packet_hit(
            "icmp_tunnel",
            f"ICMP echoes between {ip_text(requester)} and {ip_text(responder)} look like a tunnel: {why}",
            pkt,
            target=(requester, responder),
            detail={"requester": ip_text(requester), "responder": ip_text(responder)},
        )

    # -- IP fragments and malformed frames --------------------------------------------------

    def fragments(self, pkt: Packet) -> None:
        """A datagram reassembled from overlapping fragments."""
        self._r.packet_hit(
            "teardrop",
            f"{proto_name(pkt.proto)} datagram from {ip_text(pkt.src)} to {ip_text(pkt.dst)} "
            "was reassembled from overlapping fragments",
            pkt,
            target=(pkt.src, pkt.dst),
        )

    def problem(self, problem: Problem) -> None:
        """A frame the decoder rejected: teardrop or ping of death for impossible fragments,
        else an invalid packet. Problems that are not about one frame (summaries) are ignored."""
        if not isinstance(problem, PacketProblem):
            return
        kind = problem.kind
        src, dst = problem.src, problem.dst
        if kind == "fragment-oversize" and problem.proto in ECHO_REQUEST:
            self._ping_of_death(problem.ts, problem.frame, src, dst, problem.proto, "fragmented ICMP")
            return
        ends: dict[str, object] = {"src": ip_text(src), "dst": ip_text(dst)} if src else {}
        if kind == "fragment-overlap":
            self._r.hit(
                "teardrop",
                f"overlapping IP fragments from {ip_text(src)} to {ip_text(dst)}: {problem.message}",
                ts=problem.ts,
                frame=problem.frame,
                target=(src, dst),
                detail={**ends, "proto": problem.proto},
            )
            return
        self._r.hit(
            "invalid_packet",
            f"frame {problem.frame}: {problem.message}",
            ts=problem.ts,
            frame=problem.frame,
            target=src or "unknown",
            detail={**ends, "problem": problem.message},
        )
