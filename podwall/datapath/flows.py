"""Bidirectional flow table: packets in, finished flows out, with TCP reassembly feeding the DPI.

A flow is one conversation between two (address, port) ends over one transport. The table
decides which end is the client, counts both directions, follows TCP's handshake and
teardown, reassembles TCP streams for the DPI until the DPI has seen enough, and ends flows
on FIN/RST, a new connection on the same 5-tuple, idle and active timeouts, eviction, or the
end of the capture. A flow that continues one cut by a timeout inherits its roles and its
application. Time is the
capture's time (packet timestamps), so the same capture always gives the same flows.
See docs/flows.md for the rules.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterator
from typing import Protocol

from podwall.core.limits import DEFAULT_LIMITS, Limits
from podwall.core.types import (
    PROTO_ICMP,
    PROTO_ICMPV6,
    PROTO_TCP,
    PROTO_UDP,
    TCP_ACK,
    TCP_FIN,
    TCP_RST,
    TCP_SYN,
    Direction,
    FlowKey,
    Packet,
)
from podwall.datapath.reassembly import StreamReassembler, seq_diff
from podwall.datapath.roles import EPHEMERAL_MIN, SERVICE_PORTS, decide_roles, is_service_port, server_side_by_port
from podwall.dpi.base import DetectContext, L7Event
from podwall.dpi.protocols.icmp import IcmpSession

__all__ = [
    "CLOSE_GRACE",
    "EPHEMERAL_MIN",
    "SERVICE_PORTS",
    "DpiFactory",
    "DpiSessionLike",
    "Flow",
    "FlowTable",
    "default_dpi_factory",
    "is_service_port",
    "server_side_by_port",
]

# Seconds a flow closed by FIN/RST stays in the table to absorb trailing ACKs and
# retransmissions (capped by the idle timeout); any SYN on the same 5-tuple ends it at once.
CLOSE_GRACE = 30.0
SWEEP_INTERVAL = 1.0  # seconds of capture time between idle sweeps
# TCP flows ended by the idle sweep whose roles and application a later packet continuing
# the same stream picks up; the oldest are forgotten past this many.
IDLE_MEMORY = 65536

_C2S = Direction.C2S
_S2C = Direction.S2C
_SYN_ACK = TCP_SYN | TCP_ACK
_SYN_FIN_RST = TCP_SYN | TCP_FIN | TCP_RST
_SEQ_MASK = 0xFFFFFFFF

_Key = tuple[int, bytes, int, bytes, int]


class DpiSessionLike(Protocol):
    """What the flow table needs from a DPI session (implemented by `podwall.dpi.session.DpiSession`)."""

    # Read-only for the flow table: properties satisfy this as well as plain attributes.
    @property
    def app(self) -> str | None: ...
    @property
    def server_name(self) -> str | None: ...
    @property
    def events(self) -> list[L7Event]: ...
    @property
    def requests(self) -> list[L7Event]: ...  # distinct client requests, for L7 policy
    @property
    def requests_truncated(self) -> bool: ...
    @property
    def error(self) -> str | None: ...
    @property
    def done(self) -> bool: ...

    def on_stream(self, direction: Direction, data: bytes) -> None: ...

    def on_datagram(self, direction: Direction, data: bytes) -> None: ...

    def on_gap(self, direction: Direction) -> None: ...

    def skippable(self, direction: Direction) -> int:
        """How many coming stream bytes in `direction` the session would count without reading
        (the rest of a message body it keeps no more of); 0 when it wants them all."""
        ...

    def skip(self, direction: Direction, n: int) -> None:
        """The next `n` stream bytes (at most `skippable`) went by unread."""
        ...

    def finish(self) -> None: ...


DpiFactory = Callable[[DetectContext], DpiSessionLike]


def default_dpi_factory(limits: Limits = DEFAULT_LIMITS, depth: str = "full") -> DpiFactory:
    """A factory making `DpiSession`s of `depth` ("full" or "detect", see `podwall.dpi.session`);
    imported here, not at module load, so flows work without DPI."""
    from podwall.dpi.session import DpiSession

    def make(ctx: DetectContext) -> DpiSessionLike:
        return DpiSession(ctx, limits, depth=depth)

    return make


class Flow:
    """One conversation, as it ends up in reports, policy and learning.

    Per-direction lists are indexed by `Direction` (0 = client to server). `bytes` sums IP
    lengths, `payload_bytes` sums transport payloads (retransmissions included). `role_by`
    says how the client was chosen: "syn", "syn-ack", "port" or "first-packet".
    `end_reason` is "" while the flow is live, then one of "idle", "active", "fin", "rst",
    "reused", "end-of-capture", "evicted". `retrans_bytes`, `ooo_segments` and `lost_bytes`
    come from TCP reassembly and are final once the flow has ended; `gaps` and
    `overlap_conflict` are current at every packet. `holes_skipped` counts the holes that fell
    inside an HTTP body past its capture (bytes the parser counts unread): those stop nothing,
    and are not among `gaps`. `inherited_app` and
    `inherited_server_name` are the DPI result of the flow this one continues (after an
    active or idle timeout split), None otherwise.
    """

    __slots__ = (
        "_close_reason",
        "_data_after_syn",
        "_fin_acked",
        "_fin_pending",
        "_fin_seq",
        "_isn",
        "_k",
        "_reasm",
        "_seq_end",
        "bytes",
        "client_ip",
        "client_port",
        "closed",
        "dpi",
        "end_reason",
        "fin_seen",
        "first_frame",
        "first_ts",
        "gaps",
        "holes_skipped",
        "icmp_code",
        "icmp_type",
        "inherited_app",
        "inherited_server_name",
        "key",
        "last_frame",
        "last_ts",
        "lost_bytes",
        "midstream",
        "ooo_segments",
        "overlap_conflict",
        "packets",
        "payload_bytes",
        "proto",
        "retrans_bytes",
        "role_by",
        "rst_seen",
        "server_ip",
        "server_port",
        "syn_seen",
        "synack_seen",
        "vlan",
    )

    def __init__(
        self,
        key: FlowKey,
        client_ip: bytes,
        client_port: int,
        server_ip: bytes,
        server_port: int,
        first: Packet,
        role_by: str,
        midstream: bool,
    ) -> None:
        self.key = key
        self.proto = key.proto
        self.client_ip = client_ip
        self.client_port = client_port
        self.server_ip = server_ip
        self.server_port = server_port
        self.first_ts = first.ts
        self.last_ts = first.ts
        self.first_frame = first.frame
        self.last_frame = first.frame
        self.vlan = first.vlan
        self.icmp_type = first.icmp_type
        self.icmp_code = first.icmp_code
        self.packets = [0, 0]
        self.bytes = [0, 0]
        self.payload_bytes = [0, 0]
        self.role_by = role_by
        self.midstream = midstream
        self.syn_seen = False
        self.synack_seen = False
        self.fin_seen = [False, False]
        self.rst_seen = False
        self.closed = False  # both FINs acknowledged, or RST: held briefly, then ended
        self.overlap_conflict = False
        self.gaps = 0
        self.holes_skipped = 0
        self.lost_bytes = 0
        self.retrans_bytes = 0
        self.ooo_segments = 0
        self.end_reason = ""
        self.dpi: DpiSessionLike | None = None
        self.inherited_app: str | None = None
        self.inherited_server_name: str | None = None
        self._k: _Key = (key.proto, key.ip_a, key.port_a, key.ip_b, key.port_b)
        self._reasm: list[StreamReassembler] | None = None
        self._fin_seq: list[int | None] = [None, None]  # sequence number each FIN occupies
        self._fin_acked = [False, False]
        self._fin_pending = False  # a FIN waits for its ACK: plain ACKs need a look
        self._isn: int | None = None  # the client's SYN sequence number, to tell retransmitted SYNs
        self._data_after_syn = False  # payload seen on a segment without SYN: the connection is in use
        # Per direction, the sequence number after the last segment seen (-1: none yet); it tells
        # whether a packet after an idle split continues the same TCP stream.
        self._seq_end = [-1, -1]
        self._close_reason = ""

    def direction_of(self, src: bytes, sport: int) -> Direction:
        """Direction of a packet sent from (src, sport) within this flow."""
        return _C2S if sport == self.client_port and src == self.client_ip else _S2C

    @property
    def app(self) -> str | None:
        """The application of the flow this one continues, else the one the DPI named, or None
        (no DPI, undecided, or "unknown")."""
        if self.inherited_app is not None:
            # The connection was named when its start was seen; mid-stream bytes are weaker evidence.
            return self.inherited_app
        dpi = self.dpi
        if dpi is None:
            return None
        app = dpi.app
        return None if app == "unknown" else app

    @property
    def server_name(self) -> str | None:
        """TLS SNI, HTTP Host or DNS name the DPI saw, else the one inherited, if any."""
        name = self.dpi.server_name if self.dpi is not None else None
        return name if name is not None else self.inherited_server_name

    @property
    def packets_total(self) -> int:
        return self.packets[0] + self.packets[1]

    @property
    def bytes_total(self) -> int:
        return self.bytes[0] + self.bytes[1]

    @property
    def duration(self) -> float:
        return self.last_ts - self.first_ts

    def __repr__(self) -> str:
        return (
            f"Flow(proto={self.proto}, client={self.client_ip.hex()}:{self.client_port}, "
            f"server={self.server_ip.hex()}:{self.server_port}, packets={self.packets}, "
            f"role_by={self.role_by!r}, end_reason={self.end_reason!r})"
        )


class _Heritage:
    """What a flow hands to the flow that continues its connection after a timeout split."""

    __slots__ = ("app", "client_ip", "client_port", "role_by", "seq_end", "server_name")

    def __init__(self, flow: Flow) -> None:
        self.client_ip = flow.client_ip
        self.client_port = flow.client_port
        self.role_by = flow.role_by
        self.app = flow.app
        self.server_name = flow.server_name
        self.seq_end = flow._seq_end


class FlowTable:
    """Tracks live flows; `add` a packet, get back the flows that ended (by timeout, close or eviction).

    Timeouts follow capture time: a packet whose flow is idle (`idle_timeout`) or too old
    (`active_timeout`) ends that flow and starts a new one; other idle flows are swept at most
    once per second of capture time. `last_flow`/`last_direction` name where the last packet went.
    """

    def __init__(
        self,
        limits: Limits = DEFAULT_LIMITS,
        dpi_factory: DpiFactory | None = None,
        close_grace: float | None = None,
    ) -> None:
        self.limits = limits
        self._dpi_factory = dpi_factory
        self._idle = limits.idle_timeout
        self._active = limits.active_timeout
        self._grace = min(CLOSE_GRACE, limits.idle_timeout) if close_grace is None else close_grace
        self._window = limits.reasm_window
        self._pieces = limits.reasm_max_segments
        self._max = limits.max_flows
        # Both ordered by last activity (oldest first), so sweeps stop at the first live flow.
        self._open: OrderedDict[_Key, Flow] = OrderedDict()
        self._closed: OrderedDict[_Key, Flow] = OrderedDict()
        self._next_sweep = float("-inf")
        self._idle_ended: dict[_Key, _Heritage] = {}  # insertion order = oldest first
        self.last_flow: Flow | None = None
        self.last_direction: Direction = _C2S
        self.flows_started = 0
        self.flows_evicted = 0

    def __len__(self) -> int:
        """Flows currently held (including closed ones in their grace period)."""
        return len(self._open) + len(self._closed)

    @property
    def active_flows(self) -> int:
        """Same as `len(table)`: flows held right now."""
        return len(self._open) + len(self._closed)

    def __iter__(self) -> Iterator[Flow]:
        yield from self._closed.values()
        yield from self._open.values()

    def add(self, pkt: Packet) -> list[Flow]:
        """Account one packet to its flow; return the flows that ended meanwhile (swept, split, evicted)."""
        ts = pkt.ts
        ended: list[Flow] = []
        src = pkt.src
        dst = pkt.dst
        sport = pkt.sport
        dport = pkt.dport
        if src < dst or (src == dst and sport <= dport):
            k: _Key = (pkt.proto, src, sport, dst, dport)
        else:
            k = (pkt.proto, dst, dport, src, sport)
        # The packet's own flow is looked at before the sweep, which would otherwise end it as
        # idle without asking whether this packet continues its stream.
        syn = pkt.tcp_flags & _SYN_ACK == TCP_SYN
        flow = self._open.get(k)
        if flow is not None and not syn and ts - flow.last_ts < self._idle and ts - flow.first_ts < self._active:
            # Most packets: a live flow goes on (no new connection, no timeout). Same steps as below.
            self._open.move_to_end(k)
            if ts >= self._next_sweep:
                self._sweep(ts, ended)
                self._next_sweep = ts + SWEEP_INTERVAL
            d = _C2S if sport == flow.client_port and src == flow.client_ip else _S2C
            self._account(flow, pkt, d)
            self.last_flow = flow
            self.last_direction = d
            return ended
        inherit = False
        split: Flow | None = None
        if flow is not None:
            # A new connection (SYN) is checked before the active timeout so that it never
            # inherits the old connection's roles and application.
            if ts - flow.last_ts >= self._idle:
                reason = "idle"
                inherit = not syn and self._continues(flow.client_ip, flow.client_port, flow._seq_end, pkt)
            elif syn:
                reason = self._syn_split(flow, pkt)
                if not reason and ts - flow.first_ts >= self._active:
                    reason = "active"
                    inherit = True
            elif ts - flow.first_ts >= self._active:
                reason = "active"
                inherit = True
            else:
                reason = ""
            if reason:
                del self._open[k]
                split = self._end(flow, reason)
                flow = None
            else:
                self._open.move_to_end(k)
        else:
            flow = self._closed.get(k)
            if flow is not None:
                # A closed flow has seen FIN or RST: any SYN is a new connection.
                if ts - flow.last_ts >= self._grace:
                    inherit = not syn and self._continues(flow.client_ip, flow.client_port, flow._seq_end, pkt)
                    end = True
                elif syn:
                    end = True
                elif ts - flow.first_ts >= self._active:
                    inherit = True
                    end = True
                else:
                    end = False
                if end:
                    del self._closed[k]
                    split = self._end(flow, "")
                    flow = None
                else:
                    self._closed.move_to_end(k)
        if ts >= self._next_sweep:
            # The packet's flow, if kept, is not idle by the same test, so the sweep leaves it.
            self._sweep(ts, ended)
            self._next_sweep = ts + SWEEP_INTERVAL
        heir: _Heritage | None = None
        if split is not None:
            ended.append(split)
            if inherit:
                heir = _Heritage(split)  # after `_end`: the DPI's decision is final
        if flow is None:
            idle_ended = self._idle_ended
            if idle_ended:
                old = idle_ended.pop(k, None)
                if (
                    old is not None
                    and heir is None
                    and not syn
                    and self._continues(old.client_ip, old.client_port, old.seq_end, pkt)
                ):
                    heir = old
            flow = self._start(k, pkt, heir, ended)
        d = _C2S if sport == flow.client_port and src == flow.client_ip else _S2C
        self._account(flow, pkt, d)
        self.last_flow = flow
        self.last_direction = d
        return ended

    def flush(self) -> list[Flow]:
        """End every remaining flow (end of capture); closed flows keep "fin"/"rst" as their reason."""
        ended = [self._end(f, "end-of-capture") for f in self._closed.values()]
        ended.extend(self._end(f, "end-of-capture") for f in self._open.values())
        self._closed.clear()
        self._open.clear()
        self._idle_ended.clear()
        self.last_flow = None
        return ended

    # -- internals -------------------------------------------------------------------------

    @staticmethod
    def _syn_split(flow: Flow, pkt: Packet) -> str:
        """Why a SYN (no ACK) on a live flow starts a new one ("fin", "rst", "reused"), or ""
        when it is a retransmission of the flow's own SYN."""
        if flow.rst_seen:
            return "rst"
        if flow.fin_seen[0] or flow.fin_seen[1]:
            return "fin"
        if (
            pkt.seq == flow._isn
            and not flow._data_after_syn
            and pkt.sport == flow.client_port
            and pkt.src == flow.client_ip
        ):
            return ""
        return "reused"

    def _continues(self, client_ip: bytes, client_port: int, ends: list[int], pkt: Packet) -> bool:
        """True when a TCP packet (no SYN) after an idle gap carries on a flow's stream: its
        sequence number, and its acknowledgement if any, lie within the reassembly window of
        where each direction stopped (`ends`, the flow's per-direction sequence ends)."""
        if pkt.proto != PROTO_TCP:
            return False
        d = _C2S if pkt.sport == client_port and pkt.src == client_ip else _S2C
        window = self._window
        checked = False
        if ends[d] >= 0:
            if abs(seq_diff(pkt.seq, ends[d])) > window:
                return False
            checked = True
        other = ends[1 - d]
        if pkt.tcp_flags & TCP_ACK and other >= 0:
            if abs(seq_diff(pkt.ack, other)) > window:
                return False
            checked = True
        return checked

    def _sweep(self, ts: float, ended: list[Flow]) -> None:
        for table, limit in ((self._open, self._idle), (self._closed, self._grace)):
            while table:
                k, flow = next(iter(table.items()))
                if ts - flow.last_ts < limit:
                    break
                del table[k]
                ended.append(self._end(flow, "idle"))
                if flow.proto == PROTO_TCP:
                    self._remember_idle(k, flow)

    def _remember_idle(self, k: _Key, flow: Flow) -> None:
        """Keep what a later packet continuing this TCP stream would inherit (bounded, oldest out)."""
        memory = self._idle_ended
        if len(memory) >= IDLE_MEMORY:
            del memory[next(iter(memory))]
        memory[k] = _Heritage(flow)

    def _start(self, k: _Key, pkt: Packet, inherit: _Heritage | None, ended: list[Flow]) -> Flow:
        while len(self._open) + len(self._closed) >= self._max and (self._open or self._closed):
            table = self._closed if self._closed else self._open
            _, old = table.popitem(last=False)
            self.flows_evicted += 1
            ended.append(self._end(old, "evicted"))
        if inherit is not None:
            src_is_client = pkt.sport == inherit.client_port and pkt.src == inherit.client_ip
            role_by, midstream = inherit.role_by, True
        else:
            src_is_client, role_by, midstream = decide_roles(pkt)
        if src_is_client:
            cip, cport, sip, sport = pkt.src, pkt.sport, pkt.dst, pkt.dport
        else:
            cip, cport, sip, sport = pkt.dst, pkt.dport, pkt.src, pkt.sport
        flow = Flow(FlowKey(*k), cip, cport, sip, sport, pkt, role_by, midstream)
        if inherit is not None:
            # The old flow has ended (its DPI is finished): its decision is final.
            flow.inherited_app = inherit.app
            flow.inherited_server_name = inherit.server_name
        proto = pkt.proto
        if self._dpi_factory is not None:
            if proto in (PROTO_TCP, PROTO_UDP):
                flow.dpi = self._dpi_factory(DetectContext(proto, cport, sport))
                if proto == PROTO_TCP:
                    window, pieces = self._window, self._pieces
                    flow._reasm = [
                        StreamReassembler(window, max_segments=pieces),
                        StreamReassembler(window, max_segments=pieces),
                    ]
            elif proto in (PROTO_ICMP, PROTO_ICMPV6):
                flow.dpi = IcmpSession(proto)
        self._open[k] = flow
        self.flows_started += 1
        return flow

    def _account(self, flow: Flow, pkt: Packet, d: Direction) -> None:
        i = 0 if d is _C2S else 1  # lists index faster with a plain int than with the enum
        flow.packets[i] += 1
        flow.bytes[i] += pkt.ip_len
        payload = pkt.payload
        n = len(payload)
        if n:
            flow.payload_bytes[i] += n
        ts = pkt.ts
        if ts > flow.last_ts:
            flow.last_ts = ts
        flow.last_frame = pkt.frame
        proto = flow.proto
        if proto == PROTO_TCP:
            flags = pkt.tcp_flags
            flow._seq_end[i] = pkt.seq + n
            if flags & _SYN_FIN_RST or flow._fin_pending:
                self._tcp_state(flow, pkt, d, flags, n)
            elif n:
                flow._data_after_syn = True
            dpi = flow.dpi
            if dpi is not None and not dpi.done and (n or flags & (TCP_SYN | TCP_FIN)):
                self._feed_stream(flow, dpi, pkt, d, flags)
        elif proto == PROTO_UDP:
            dpi = flow.dpi
            if n and dpi is not None and not dpi.done:
                dpi.on_datagram(d, payload)
        elif proto in (PROTO_ICMP, PROTO_ICMPV6):
            icmp = flow.dpi
            if isinstance(icmp, IcmpSession) and not icmp.done:
                icmp.on_icmp(d, pkt.icmp_type, pkt.icmp_code)

    def _feed_stream(self, flow: Flow, dpi: DpiSessionLike, pkt: Packet, d: Direction, flags: int) -> None:
        reasm = flow._reasm
        if reasm is None:
            return
        r = reasm[d]
        if flags & _SYN_ACK == _SYN_ACK:
            # A SYN-ACK's ACK is where the client's data starts, even if its SYN was not seen.
            reasm[d.other].start_at(pkt.ack)
        gaps, lost = r.gaps, r.lost_bytes
        data = r.add(pkt.seq, pkt.payload, bool(flags & TCP_SYN), bool(flags & TCP_FIN))
        if r.overlap_conflict:
            flow.overlap_conflict = True
        if r.gap:
            hole = r.lost_bytes - lost
            if not dpi.done and 0 < hole <= dpi.skippable(d):
                # Bytes lost inside a body the parser would not have read: parsing goes on after it.
                dpi.skip(d, hole)
                flow.holes_skipped += r.gaps - gaps
            else:
                flow.gaps += r.gaps - gaps
                dpi.on_gap(d)
        if data and not dpi.done:
            if len(data) <= dpi.skippable(d):
                dpi.skip(d, len(data))  # inside a body the parser no longer keeps: not copied through it
            else:
                dpi.on_stream(d, data)
        if dpi.done:
            self._drop_reassembly(flow)

    def _tcp_state(self, flow: Flow, pkt: Packet, d: Direction, flags: int, n: int) -> None:
        if flags & TCP_SYN:
            if flags & TCP_ACK:
                if d == _S2C:
                    flow.synack_seen = True
                    if flow._isn is None:
                        # The client's SYN was missed: its ISN is what the SYN-ACK acknowledges, less one.
                        flow._isn = (pkt.ack - 1) & _SEQ_MASK
            else:
                flow.syn_seen = True
                if d == _C2S and flow._isn is None:
                    flow._isn = pkt.seq
        elif n:
            flow._data_after_syn = True
        if flags & TCP_FIN and flow._fin_seq[d] is None:
            flow.fin_seen[d] = True
            flow._fin_seq[d] = (pkt.seq + n + (1 if flags & TCP_SYN else 0)) & 0xFFFFFFFF
            flow._fin_pending = True
        if flags & TCP_RST:
            flow.rst_seen = True
            self._close(flow, "rst")
        if flow._fin_pending and flags & TCP_ACK:
            o = d.other
            fin = flow._fin_seq[o]
            if fin is not None and not flow._fin_acked[o] and seq_diff(pkt.ack, fin) >= 1:
                flow._fin_acked[o] = True
            acked = flow._fin_acked
            if acked[0] and acked[1]:
                flow._fin_pending = False
                self._close(flow, "fin")
            else:
                seqs = flow._fin_seq
                flow._fin_pending = (seqs[0] is not None and not acked[0]) or (seqs[1] is not None and not acked[1])

    def _close(self, flow: Flow, reason: str) -> None:
        """The connection is over: keep the flow briefly (trailing packets) in the closed table."""
        if flow.closed:
            return
        flow.closed = True
        flow._close_reason = reason
        k = flow._k
        if self._open.pop(k, None) is flow:
            self._closed[k] = flow

    def _drop_reassembly(self, flow: Flow) -> None:
        """The DPI needs no more bytes: keep the reassemblers' counters, free their buffers."""
        reasm = flow._reasm
        if reasm is None:
            return
        flow._reasm = None
        for r in reasm:
            flow.retrans_bytes += r.retrans_bytes
            flow.ooo_segments += r.ooo_segments
            flow.lost_bytes += r.lost_bytes

    def _end(self, flow: Flow, reason: str) -> Flow:
        if flow.closed:
            reason = flow._close_reason
        elif reason in ("idle", "end-of-capture", "") and flow.fin_seen[0] and flow.fin_seen[1]:
            reason = "fin"  # both FINs seen, only the last ACK was missed
        elif not reason:
            reason = "idle"
        flow.end_reason = reason
        self._drop_reassembly(flow)
        if flow.dpi is not None:
            flow.dpi.finish()
        return flow
