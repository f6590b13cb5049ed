"""Per-flow threats: TCP handshake tricks, idle connections without client data, tiny windows, session counts.

`FlowState` is what the engine keeps per live flow (created at the flow's first packet,
dropped when the flow ends): the window scale of each side, the small-window streak, the
threats already reported for the flow, and the stream watchers (TLS records, HTTP heads).
`FlowThreats` holds the cross-flow tables these checks need: SYNs waiting for their SYN-ACK,
open sessions per source and destination, idle connections per server.
"""

from __future__ import annotations

from podwall.core.types import PROTO_TCP, TCP_ACK, TCP_RST, TCP_SYN, Direction, Packet, ip_text
from podwall.datapath.flows import Flow
from podwall.inspect.threats.catalog import ThreatSettings
from podwall.inspect.threats.http import HttpWatch
from podwall.inspect.threats.report import MAX_KEYS, Reporter, WindowCounter, evict_oldest, flow_detail
from podwall.inspect.threats.tls import TlsWatch

__all__ = ["FlowState", "FlowThreats"]

_SYN_ACK = TCP_SYN | TCP_ACK
_SYN_RST = TCP_SYN | TCP_RST


class FlowState:
    """What the threat engine remembers about one live flow."""

    __slots__ = (
        "done",
        "gaps",
        "http",
        "session",
        "small_count",
        "small_since",
        "streams_off",
        "tls",
        "wscale",
    )

    def __init__(self) -> None:
        self.done: set[str] = set()  # threats reported once per flow and already reported
        self.session: tuple[bytes, bytes] | None = None  # (client, server) counted as an open session
        self.wscale = [-1, -1]  # window scale option of each side's SYN (-1: none seen)
        self.small_count = [0, 0]  # consecutive small windows advertised by each side
        self.small_since = [0.0, 0.0]
        self.gaps = 0  # the flow's gap count when the stream watchers last saw bytes
        self.streams_off = False  # bytes were lost or are not TLS/HTTP: the watchers stopped
        self.tls: TlsWatch | None = None
        self.http: HttpWatch | None = None


class FlowThreats:
    """Checks over a flow's TCP segments and its life; the engine calls these per packet and at the end."""

    def __init__(self, settings: ThreatSettings, reporter: Reporter) -> None:
        self._s = settings
        self._r = reporter
        self._pending_syn: dict[tuple[bytes, int, bytes, int], float] = {}  # SYNs without a SYN-ACK yet
        self._sessions: dict[tuple[bytes, bytes], int] = {}
        self._new_sessions = WindowCounter(settings.session_limit.window)
        self._idle = WindowCounter(settings.no_client_data.window)

    # -- the flow's first packet and its end ------------------------------------------------

    def started(self, flow: Flow, state: FlowState) -> None:
        """A new flow: count it as an open session of its client towards its server."""
        r, s = self._r, self._s.session_limit
        if not r.enabled["session_limit"]:
            return
        key = (flow.client_ip, flow.server_ip)
        count = self._sessions.get(key, 0) + 1
        if count == 1:
            evict_oldest(self._sessions, MAX_KEYS)
        self._sessions[key] = count
        state.session = key
        if count > s.max_concurrent:
            r.hit(
                "session_limit",
                f"{count} open sessions from {ip_text(flow.client_ip)} to {ip_text(flow.server_ip)} "
                f"(limit {s.max_concurrent})",
                ts=flow.first_ts,
                frame=flow.first_frame,
                target=key,
                detail={**flow_detail(flow), "open": count, "limit": s.max_concurrent},
            )
        if s.max_new:
            new = self._new_sessions.add(flow.client_ip, flow.first_ts)
            if new > s.max_new:
                r.hit(
                    "session_limit",
                    f"{new} new sessions from {ip_text(flow.client_ip)} within {s.window:g}s (limit {s.max_new})",
                    ts=flow.first_ts,
                    frame=flow.first_frame,
                    target=flow.client_ip,
                    detail={**flow_detail(flow), "new": new, "limit": s.max_new},
                )

    def ended(self, flow: Flow, state: FlowState) -> None:
        """The flow is over: release its session, judge it idle if it was held open without client data."""
        key = state.session
        if key is not None:
            left = self._sessions.get(key, 0) - 1
            if left > 0:
                self._sessions[key] = left
            else:
                self._sessions.pop(key, None)
            state.session = None
        if flow.proto == PROTO_TCP:
            # A connection the table ended as idle was still open (no FIN, no RST) a whole idle timeout later.
            held = flow.end_reason == "idle" and not flow.closed
            self._no_client_data(flow, state, flow.last_ts, flow.last_frame, held)

    # -- TCP segments ---------------------------------------------------------------------

    def tcp(self, pkt: Packet, flow: Flow, state: FlowState, direction: Direction, flags: int) -> None:
        """One TCP segment of a flow (after the flow table accounted it)."""
        if flags & TCP_SYN:
            self._handshake(pkt, flow, state, direction, flags)
            return
        if flags & TCP_RST:
            return
        if flow.payload_bytes[0] == 0 and flow.synack_seen:
            self._no_client_data(flow, state, pkt.ts, pkt.frame)
        self._window(pkt, flow, state, direction)

    def _handshake(self, pkt: Packet, flow: Flow, state: FlowState, direction: Direction, flags: int) -> None:
        if pkt.wscale >= 0:
            state.wscale[direction] = pkt.wscale
        if flags & _SYN_ACK == _SYN_ACK:
            self._pending_syn.pop((pkt.dst, pkt.dport, pkt.src, pkt.sport), None)
            return
        if not self._r.enabled["split_handshake"]:
            return
        pending = self._pending_syn
        first = pending.pop((pkt.dst, pkt.dport, pkt.src, pkt.sport), None)
        if first is not None:
            self._r.packet_hit(
                "split_handshake",
                f"{ip_text(pkt.src)}:{pkt.sport} answered the SYN of {ip_text(pkt.dst)}:{pkt.dport} "
                f"with a SYN of its own {pkt.ts - first:.3f}s later (split handshake or simultaneous open)",
                pkt,
                direction=direction,
                target=(pkt.src, pkt.sport, pkt.dst, pkt.dport),
            )
            return
        key = (pkt.src, pkt.sport, pkt.dst, pkt.dport)
        if key not in pending:
            evict_oldest(pending, MAX_KEYS)
        pending[key] = pkt.ts

    def _no_client_data(self, flow: Flow, state: FlowState, now: float, frame: int, held: bool = False) -> None:
        """An established connection open `timeout` seconds without one client byte counts against its server."""
        s = self._s.no_client_data
        if (
            flow.payload_bytes[0]
            or not (flow.syn_seen and flow.synack_seen)
            or flow.midstream
            or (now - flow.first_ts < s.timeout and not held)
            or "no_client_data" in state.done
            or not self._r.enabled["no_client_data"]
        ):
            return
        state.done.add("no_client_data")
        count = self._idle.add(flow.server_ip, now)
        if count >= s.threshold:
            self._r.hit(
                "no_client_data",
                f"{count} connections to {ip_text(flow.server_ip)} stayed open {s.timeout:g}s or more without "
                f"client data within {s.window:g}s (threshold {s.threshold})",
                ts=now,
                frame=frame,
                target=flow.server_ip,
                detail={**flow_detail(flow), "count": count, "threshold": s.threshold},
            )

    def _window(self, pkt: Packet, flow: Flow, state: FlowState, direction: Direction) -> None:
        """Tiny non-zero windows, one after the other, from one side after the handshake.

        The real window is the field shifted by the side's window scale, which applies only
        when both SYNs carried the option (RFC 7323); without the handshake it is unknown and
        nothing is judged. A zero window is ordinary flow control and neither counts nor resets.
        """
        raw = pkt.window
        counts = state.small_count
        if raw == 0:
            return
        s = self._s.tcp_small_window
        if raw >= s.min_window:
            counts[direction] = 0
            return
        if not (flow.syn_seen and flow.synack_seen) or "tcp_small_window" in state.done:
            return
        scales = state.wscale
        real = raw << scales[direction] if scales[0] >= 0 and scales[1] >= 0 else raw
        if real >= s.min_window:
            counts[direction] = 0
            return
        if counts[direction] == 0:
            state.small_since[direction] = pkt.ts
        counts[direction] += 1
        lasted = pkt.ts - state.small_since[direction]
        if counts[direction] >= s.count and lasted >= s.duration:
            state.done.add("tcp_small_window")
            side = "client" if direction == Direction.C2S else "server"
            self._r.hit(
                "tcp_small_window",
                f"the {side} {ip_text(pkt.src)}:{pkt.sport} advertised {counts[direction]} windows below "
                f"{s.min_window} bytes in a row over {lasted:.1f}s (last {real})",
                ts=pkt.ts,
                frame=pkt.frame,
                direction=direction,
                detail={**flow_detail(flow), "window": real, "count": counts[direction], "seconds": round(lasted, 3)},
            )
