"""The threat engine: one object the datapath drives with packets, stream bytes, L7 events and flow ends.

`ThreatEngine` holds the cross-flow state (rates per destination and source, SYNs waiting
for an answer, echo payloads, DNS names per domain) and a small state per live flow, all
bounded and all timed by packet timestamps, so a capture gives the same findings however
fast it is read. Every method returns the findings it made (kind `threat`). After
`on_packet`, `packet_action` holds the strongest blocking action (drop or reset) that an
enabled threat asked for that packet, from its stream bytes and L7 events as well as from
the packet itself, even when the finding was held back by the threat's report interval (a
flood's later packets are dropped without a finding each). Findings from `on_problem` (the
frame is dropped anyway) and `on_flow_end` (the flow is gone) ask for no packet action.

Hooks, in the order the inspecting engine calls them for one frame: `on_problem` (decoder
problems, before any packet), `on_stream` / `on_event` (while the flow table feeds the DPI),
`on_packet` (after the flow table accounted the packet), `on_flow_end` (for every flow the
table ended). Pure: no I/O.
"""

from __future__ import annotations

from podwall.core.errors import Problem
from podwall.core.types import PROTO_ICMP, PROTO_ICMPV6, PROTO_TCP, PROTO_UDP, TCP_SYN, Direction, Packet
from podwall.datapath.flows import Flow
from podwall.dpi.base import L7Event
from podwall.inspect.findings import Action, Finding
from podwall.inspect.threats.catalog import ThreatSettings
from podwall.inspect.threats.dns import DNS_PORTS, DnsThreats, scan_dns
from podwall.inspect.threats.flow import FlowState, FlowThreats
from podwall.inspect.threats.http import HttpWatch
from podwall.inspect.threats.l7 import L7Threats
from podwall.inspect.threats.packet import PacketThreats
from podwall.inspect.threats.report import Reporter, evict_oldest, flow_detail, packet_detail
from podwall.inspect.threats.tls import TlsWatch, looks_like_tls

__all__ = ["MAX_FLOW_STATES", "ThreatEngine"]

MAX_FLOW_STATES = 2_000_000  # live flows followed at once (the flow table ends flows long before)
_ICMPS = frozenset({PROTO_ICMP, PROTO_ICMPV6})
_STREAM_THREATS = ("tls_heartbleed", "sslv2_cipher_overflow", "http_negative_content_length", "http_smuggling",
                   "http_slowloris", "struts_rce")  # fmt: skip
_DNS_LOOP = "compression pointer loop"  # the DPI's error for a looping name (podwall/dpi/protocols/dns.py)


class ThreatEngine:
    """Built-in network threat detection over the datapath's packets, streams, events and flows."""

    def __init__(self, settings: ThreatSettings | None = None) -> None:
        self.settings = settings if settings is not None else ThreatSettings()
        r = self._r = Reporter(self.settings)
        self._packets = PacketThreats(self.settings, r)
        self._flows = FlowThreats(self.settings, r)
        self._dns = DnsThreats(self.settings, r)
        self._l7 = L7Threats(self.settings, r, self._dns)
        self._states: dict[int, FlowState] = {}  # id(flow) -> its state, while the flow lives
        self._streams = any(r.enabled[k] for k in _STREAM_THREATS)
        self.packet_action: Action | None = None  # see the module docstring

    @property
    def flows_followed(self) -> int:
        return len(self._states)

    def wants_stream(self, flow: Flow) -> bool:
        """False once nothing more in this flow's bytes can matter here (neither TLS nor HTTP, or bytes
        were lost), so the caller may stop reassembling it for the threat engine."""
        if not self._streams:
            return False
        state = self._states.get(id(flow))
        return state is None or not state.streams_off

    def _state(self, flow: Flow) -> FlowState:
        """The flow's state; made (and the flow counted as a session) at the first hook that sees it."""
        state = self._states.get(id(flow))
        if state is None:
            evict_oldest(self._states, MAX_FLOW_STATES)
            state = self._states[id(flow)] = FlowState()
            self._flows.started(flow, state)
        return state

    # -- hooks ----------------------------------------------------------------------------

    def on_packet(self, pkt: Packet, flow: Flow | None, direction: Direction) -> list[Finding]:
        """One decoded packet, after the flow table accounted it to `flow` (None when it has none)."""
        out = self._r.start()
        proto = pkt.proto
        state = self._state(flow) if flow is not None else None
        if proto == PROTO_TCP:
            flags = pkt.tcp_flags
            if flags & TCP_SYN:
                self._packets.tcp_syn(pkt, flags)
            if flow is not None and state is not None:
                self._flows.tcp(pkt, flow, state, direction, flags)
                http = state.http
                if http is not None and http.head_start >= 0:
                    self._slowloris(flow, state, http, pkt.ts, pkt.frame)
        elif proto == PROTO_UDP:
            if (pkt.dport in DNS_PORTS or pkt.sport in DNS_PORTS) and len(pkt.payload) >= 12:
                self._dns_datagram(pkt)
        elif proto in _ICMPS:
            self._packets.icmp(pkt)
        if pkt.frag_overlap:
            self._packets.fragments(pkt)
        # What this packet's bytes and events asked for (on_stream/on_event ran before) counts too.
        self.packet_action = self._r.take_action()
        return out

    def on_stream(self, flow: Flow, direction: Direction, data: bytes) -> list[Finding]:
        """The next reassembled bytes of a TCP flow in `direction` (TLS records, HTTP request heads)."""
        out = self._r.start()
        if not self._streams or not data:
            return out
        state = self._state(flow)
        if state.streams_off:
            return out
        if flow.gaps != state.gaps:
            state.streams_off = True  # bytes were lost: record and request boundaries are unknown now
            state.tls = state.http = None
            return out
        if state.tls is None and state.http is None:
            if looks_like_tls(data):
                state.tls = TlsWatch(
                    self.settings.tls_heartbleed.min_overread, self.settings.tls_heartbleed.response_growth
                )
            elif direction == Direction.C2S:
                state.http = HttpWatch()
            else:
                return out  # the server spoke first and not TLS: wait for the client's bytes
        tls = state.tls
        if tls is not None:
            for hit in tls.feed(direction, data):
                self._r.flow_hit(
                    hit.key, hit.message, flow, direction=direction, l7={"sni": flow.server_name}, detail=hit.detail
                )
            if not tls.active:
                state.tls = None
                state.streams_off = True
            return out
        http = state.http
        if http is not None and direction == Direction.C2S:
            for found in http.feed(data, flow.last_ts):
                self._r.flow_hit(found.key, found.message, flow, direction=direction, l7=found.l7, detail=found.detail)
            if http.head_start >= 0:
                self._slowloris(flow, state, http, flow.last_ts, flow.last_frame)
            if not http.active:
                state.http = None
                state.streams_off = True
        return out

    def on_event(self, flow: Flow, event: L7Event) -> list[Finding]:
        """One L7 event the DPI completed in `flow`."""
        out = self._r.start()
        self._l7.event(flow, self._state(flow), event)
        return out

    def on_flow_end(self, flow: Flow) -> list[Finding]:
        """`flow` has ended (FIN/RST, timeout, eviction, end of input): judge what needs its whole life."""
        r = self._r
        out = r.start()
        state = self._states.pop(id(flow), None)
        if state is None:
            return out
        r.acting = False
        try:
            self._end(flow, state)
        finally:
            r.acting = True
        return out

    def _end(self, flow: Flow, state: FlowState) -> None:
        self._flows.ended(flow, state)
        http = state.http
        if http is not None and http.head_start >= 0:
            self._slowloris(flow, state, http, flow.last_ts, flow.last_frame)
        dpi = flow.dpi
        error = dpi.error if dpi is not None else None
        if error and _DNS_LOOP in error and flow.app == "dns" and flow.proto == PROTO_TCP:
            message = "DNS message over TCP whose name compression pointers loop"
            self._r.flow_hit("dns_loop_pointer", message, flow, target=(flow.client_ip, "loop"))

    def on_problem(self, problem: Problem) -> list[Finding]:
        """A decoder problem (a malformed frame, an impossible fragment); see `PacketProblem`."""
        r = self._r
        out = r.start()
        r.acting = False
        try:
            self._packets.problem(problem)
        finally:
            r.acting = True
        return out

    # -- helpers --------------------------------------------------------------------------

    def _dns_datagram(self, pkt: Packet) -> None:
        scan = scan_dns(pkt.payload)
        if scan is None:
            return
        client = pkt.dst if scan.response else pkt.src  # the querier
        self._dns.message(scan, client=client, ts=pkt.ts, frame=pkt.frame, udp=True, detail=packet_detail(pkt))

    def _slowloris(self, flow: Flow, state: FlowState, http: HttpWatch, now: float, frame: int) -> None:
        timeout = self.settings.http_slowloris.timeout
        waited = now - http.head_start
        if waited < timeout or "http_slowloris" in state.done:
            return
        state.done.add("http_slowloris")
        self._r.hit(
            "http_slowloris",
            f"request head from {flow_detail(flow)['src']} still incomplete after {waited:.1f}s (timeout {timeout:g}s)",
            ts=now,
            frame=frame,
            direction=Direction.C2S,
            detail={**flow_detail(flow), "seconds": round(waited, 3), "requests_before": http.requests},
        )
