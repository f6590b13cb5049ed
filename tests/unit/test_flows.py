"""Tests for the bidirectional flow table: roles, timeouts, TCP teardown, counters and DPI feeding."""

from __future__ import annotations

import pytest

from podwall.core.limits import Limits
from podwall.core.types import (
    PROTO_ICMP,
    PROTO_ICMPV6,
    PROTO_TCP,
    PROTO_UDP,
    TCP_ACK,
    TCP_FIN,
    TCP_PSH,
    TCP_RST,
    TCP_SYN,
    Direction,
    FlowKey,
    Packet,
    ip_packed,
)
from podwall.datapath.flows import DpiFactory, Flow, FlowTable, default_dpi_factory, server_side_by_port
from podwall.dpi.base import DetectContext, L7Event

A = ip_packed("10.0.0.1")
B = ip_packed("10.0.0.2")
C = ip_packed("10.0.0.3")
V6A = ip_packed("fd00::1")
V6B = ip_packed("fd00::2")
C2S, S2C = Direction.C2S, Direction.S2C
CISN, SISN = 1000, 5000  # client and server initial sequence numbers


def tcp(
    ts: float,
    src: bytes,
    sport: int,
    dst: bytes,
    dport: int,
    flags: int = TCP_ACK,
    seq: int = 0,
    ack: int = 0,
    payload: bytes = b"",
    frame: int = 0,
) -> Packet:
    return Packet(
        ts=ts,
        src=src,
        dst=dst,
        proto=PROTO_TCP,
        sport=sport,
        dport=dport,
        ip_len=40 + len(payload),
        payload=payload,
        tcp_flags=flags,
        seq=seq,
        ack=ack,
        frame=frame,
    )


def udp(ts: float, src: bytes, sport: int, dst: bytes, dport: int, payload: bytes = b"x") -> Packet:
    return Packet(
        ts=ts,
        src=src,
        dst=dst,
        proto=PROTO_UDP,
        sport=sport,
        dport=dport,
        ip_len=28 + len(payload),
        payload=payload,
    )


def icmp(ts: float, src: bytes, dst: bytes, icmp_type: int, proto: int = PROTO_ICMP) -> Packet:
    return Packet(ts=ts, src=src, dst=dst, proto=proto, ip_len=84, payload=b"p" * 56, icmp_type=icmp_type, icmp_code=0)


def handshake(ts: float = 0.0, cport: int = 40000, sport: int = 80) -> list[Packet]:
    """SYN, SYN-ACK, ACK from A:cport to B:sport."""
    return [
        tcp(ts, A, cport, B, sport, TCP_SYN, seq=CISN),
        tcp(ts + 0.01, B, sport, A, cport, TCP_SYN | TCP_ACK, seq=SISN, ack=CISN + 1),
        tcp(ts + 0.02, A, cport, B, sport, TCP_ACK, seq=CISN + 1, ack=SISN + 1),
    ]


def teardown(ts: float, csent: int, ssent: int, cport: int = 40000, sport: int = 80) -> list[Packet]:
    """FIN from the client, FIN-ACK from the server, final ACK, after csent/ssent payload bytes."""
    cseq, sseq = CISN + 1 + csent, SISN + 1 + ssent
    return [
        tcp(ts, A, cport, B, sport, TCP_FIN | TCP_ACK, seq=cseq, ack=sseq),
        tcp(ts + 0.01, B, sport, A, cport, TCP_FIN | TCP_ACK, seq=sseq, ack=cseq + 1),
        tcp(ts + 0.02, A, cport, B, sport, TCP_ACK, seq=cseq + 1, ack=sseq + 1),
    ]


class FakeDpi:
    """Records what the flow table feeds it; decides after `done_after` stream/datagram bytes."""

    def __init__(self, ctx: DetectContext, done_after: int | None = None) -> None:
        self.ctx = ctx
        self.done_after = done_after
        self.calls: list[tuple[str, Direction | None, bytes]] = []
        self.seen = 0
        self.finished = 0
        self.app: str | None = None
        self.server_name: str | None = None
        self.events: list[L7Event] = []
        self.error: str | None = None
        self.done = False

    def _got(self, n: int) -> None:
        self.seen += n
        if self.done_after is not None and self.seen >= self.done_after:
            self.app = "fake"
            self.server_name = "svc.example"
            self.done = True

    def on_stream(self, direction: Direction, data: bytes) -> None:
        assert not self.done, "fed after done"
        self.calls.append(("stream", direction, data))
        self._got(len(data))

    def on_datagram(self, direction: Direction, data: bytes) -> None:
        assert not self.done, "fed after done"
        self.calls.append(("datagram", direction, data))
        self._got(len(data))

    def on_gap(self, direction: Direction) -> None:
        self.calls.append(("gap", direction, b""))
        self.done = True

    def finish(self) -> None:
        self.finished += 1
        if self.app is None:
            self.app = "unknown"

    def stream(self, direction: Direction) -> bytes:
        return b"".join(data for kind, d, data in self.calls if kind == "stream" and d == direction)


class Recorder:
    """A DPI factory that keeps every session it made."""

    def __init__(self, done_after: int | None = None) -> None:
        self.done_after = done_after
        self.sessions: list[FakeDpi] = []

    def __call__(self, ctx: DetectContext) -> FakeDpi:
        session = FakeDpi(ctx, self.done_after)
        self.sessions.append(session)
        return session


def run(table: FlowTable, packets: list[Packet]) -> list[Flow]:
    ended: list[Flow] = []
    for p in packets:
        ended.extend(table.add(p))
    return ended


def all_flows(packets: list[Packet], limits: Limits | None = None, dpi_factory: DpiFactory | None = None) -> list[Flow]:
    table = FlowTable(limits or Limits(), dpi_factory=dpi_factory)
    ended = run(table, packets)
    return ended + table.flush()


# -- client / server ------------------------------------------------------------------------


def test_client_is_syn_sender() -> None:
    """The sender of a SYN without ACK is the client, decided by "syn", not mid-stream."""
    (flow,) = all_flows(handshake(cport=40000, sport=80))
    assert (flow.client_ip, flow.client_port, flow.server_ip, flow.server_port) == (A, 40000, B, 80)
    assert flow.role_by == "syn" and not flow.midstream
    assert flow.syn_seen and flow.synack_seen


def test_client_is_syn_ack_receiver_when_syn_ack_seen_first() -> None:
    """If a SYN-ACK is the first packet, its receiver is the client, even on unusual ports."""
    pkts = handshake(cport=2000, sport=45000)[1:]
    (flow,) = all_flows(pkts)
    assert (flow.client_ip, flow.client_port, flow.server_port) == (A, 2000, 45000)
    assert flow.role_by == "syn-ack" and not flow.midstream


@pytest.mark.parametrize(
    ("sport", "dport", "client_port", "role_by"),
    [
        (40000, 80, 40000, "port"),
        (80, 40000, 40000, "port"),
        (6379, 51000, 51000, "port"),
        (51000, 6379, 51000, "port"),
        (50051, 40000, 40000, "port"),
        (1500, 443, 1500, "port"),
        (5000, 40000, 40000, "port"),
        (40000, 5000, 40000, "port"),
        (33000, 45000, 33000, "first-packet"),
        (45000, 33000, 45000, "first-packet"),
        (2000, 3001, 2000, "first-packet"),
        (3001, 2000, 3001, "first-packet"),
        (443, 8080, 443, "first-packet"),
        (8080, 443, 8080, "first-packet"),
    ],
    ids=[
        "to-system-port",
        "from-system-port",
        "from-redis",
        "to-redis",
        "from-grpc-high-port",
        "registered-to-system",
        "lower-port-vs-ephemeral",
        "ephemeral-to-lower-port",
        "both-ephemeral",
        "both-ephemeral-reversed",
        "neither-ephemeral",
        "neither-ephemeral-reversed",
        "both-service",
        "both-service-reversed",
    ],
)
def test_midstream_client_fallbacks(sport: int, dport: int, client_port: int, role_by: str) -> None:
    """Without a handshake, ports decide the server when they can, else the first sender is the client."""
    (flow,) = all_flows([tcp(0.0, A, sport, B, dport, TCP_ACK | TCP_PSH, seq=1, payload=b"x")])
    assert flow.client_port == client_port
    assert flow.role_by == role_by
    assert flow.midstream


@pytest.mark.parametrize(
    ("sport", "dport", "expected"),
    [(40000, 53, True), (53, 40000, False), (53, 53, None), (40000, 41000, None)],
    ids=["dst-service", "src-service", "both-service", "both-ephemeral"],
)
def test_server_side_by_port(sport: int, dport: int, expected: bool | None) -> None:
    """The port heuristic names the destination (True), the source (False) or neither (None)."""
    assert server_side_by_port(sport, dport) is expected


@pytest.mark.parametrize(
    ("first", "client", "role_by"),
    [
        ((A, 40000, B, 53), (A, 40000), "first-packet"),
        ((B, 53, A, 40000), (A, 40000), "port"),
        ((A, 5353, B, 5353), (A, 5353), "first-packet"),
        ((B, 123, A, 123), (B, 123), "first-packet"),
        ((A, 40000, B, 41000), (A, 40000), "first-packet"),
    ],
    ids=["query-first", "reply-first", "same-ports", "both-service-ports", "both-high"],
)
def test_udp_client(first: tuple[bytes, int, bytes, int], client: tuple[bytes, int], role_by: str) -> None:
    """UDP: the first sender is the client, unless it sent from a service port to a non-service one."""
    src, sport, dst, dport = first
    flows = all_flows([udp(0.0, src, sport, dst, dport), udp(0.1, dst, dport, src, sport)])
    assert len(flows) == 1
    (flow,) = flows
    assert (flow.client_ip, flow.client_port) == client
    assert flow.role_by == role_by
    assert flow.packets == [1, 1]


# -- ICMP -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("proto", "echo", "reply", "a", "b"),
    [(PROTO_ICMP, 8, 0, A, B), (PROTO_ICMPV6, 128, 129, V6A, V6B)],
    ids=["icmp", "icmpv6"],
)
def test_icmp_echo_pair_is_one_flow(proto: int, echo: int, reply: int, a: bytes, b: bytes) -> None:
    """An echo request and its reply form one flow with ports 0, the pinger as client."""
    pkts = [icmp(0.0, a, b, echo, proto), icmp(0.001, b, a, reply, proto), icmp(1.0, a, b, echo, proto)]
    (flow,) = all_flows(pkts)
    assert flow.key == FlowKey.of(proto, a, 0, b, 0)
    assert (flow.client_ip, flow.server_ip, flow.client_port, flow.server_port) == (a, b, 0, 0)
    assert flow.packets == [2, 1]
    assert (flow.icmp_type, flow.icmp_code) == (echo, 0)


def test_icmp_echo_reply_first_makes_its_receiver_the_client() -> None:
    """An echo reply seen first makes its receiver (the pinger) the client."""
    (flow,) = all_flows([icmp(0.0, B, A, 0), icmp(1.0, A, B, 8)])
    assert flow.client_ip == A and flow.server_ip == B


# -- counters -------------------------------------------------------------------------------


def test_counters_per_direction() -> None:
    """Packets, IP bytes and payload bytes are summed per direction, with times and frames."""
    pkts = handshake()
    pkts.append(tcp(0.1, A, 40000, B, 80, TCP_ACK | TCP_PSH, seq=CISN + 1, ack=SISN + 1, payload=b"q" * 10))
    pkts.append(tcp(0.2, B, 80, A, 40000, TCP_ACK | TCP_PSH, seq=SISN + 1, ack=CISN + 11, payload=b"r" * 100))
    pkts.append(tcp(0.3, A, 40000, B, 80, TCP_ACK, seq=CISN + 11, ack=SISN + 101))
    for i, p in enumerate(pkts, start=7):
        p.frame = i
    (flow,) = all_flows(pkts)
    assert flow.packets == [4, 2]
    assert flow.bytes == [40 * 4 + 10, 40 * 2 + 100]
    assert flow.payload_bytes == [10, 100]
    assert flow.packets_total == 6 and flow.bytes_total == sum(flow.bytes)
    assert (flow.first_ts, flow.last_ts) == (0.0, 0.3)
    assert (flow.first_frame, flow.last_frame) == (7, 12)


def test_last_flow_and_direction_name_where_the_packet_went() -> None:
    """After each add, last_flow and last_direction name the packet's flow and direction."""
    table = FlowTable()
    syn, synack, _ = handshake()
    table.add(syn)
    first = table.last_flow
    assert table.last_direction is C2S
    table.add(synack)
    assert table.last_flow is first and table.last_direction is S2C


# -- timeouts -------------------------------------------------------------------------------


def test_idle_timeout_splits_flow_on_next_packet() -> None:
    """A packet after the idle timeout ends the old flow ("idle") and starts a new one."""
    table = FlowTable(Limits(idle_timeout=10.0))
    assert run(table, [udp(0.0, A, 40000, B, 53), udp(5.0, A, 40000, B, 53)]) == []
    ended = table.add(udp(15.0, A, 40000, B, 53))
    assert len(ended) == 1 and ended[0].end_reason == "idle"
    assert ended[0].packets == [2, 0] and ended[0].last_ts == 5.0
    assert len(table) == 1
    (rest,) = table.flush()
    assert rest.first_ts == 15.0 and rest.end_reason == "end-of-capture"


def test_idle_flows_are_swept_by_other_traffic() -> None:
    """Capture time moving on (other flows' packets) ends idle flows, each returned once."""
    table = FlowTable(Limits(idle_timeout=10.0))
    table.add(udp(0.0, A, 40000, B, 53))
    table.add(udp(3.0, A, 40001, B, 53))
    assert table.add(udp(9.5, C, 40000, B, 53)) == []
    ended = table.add(udp(11.0, C, 40000, B, 53))
    assert [(f.client_port, f.end_reason) for f in ended] == [(40000, "idle")]
    ended = table.add(udp(14.0, C, 40000, B, 53))
    assert [(f.client_port, f.end_reason) for f in ended] == [(40001, "idle")]
    assert len(table) == 1


def test_active_timeout_cuts_long_flow_and_keeps_roles() -> None:
    """A flow older than the active timeout ends ("active"); the next is mid-stream, same client."""
    table = FlowTable(Limits(idle_timeout=20.0, active_timeout=30.0))
    pkts = handshake()
    seq = CISN + 1
    for t in range(1, 6):
        pkts.append(tcp(10.0 * t, B, 80, A, 40000, TCP_ACK | TCP_PSH, seq=SISN + t, ack=seq, payload=b"d"))
    ended = run(table, pkts)
    assert [f.end_reason for f in ended] == ["active"]
    assert ended[0].last_ts == 20.0
    (current,) = table.flush()
    assert current.midstream and current.role_by == "syn"
    assert (current.client_ip, current.client_port) == (A, 40000)
    assert current.first_ts == 30.0


class FirstDecides(Recorder):
    """A factory whose first session names the app at the first byte; later ones never decide."""

    def __call__(self, ctx: DetectContext) -> FakeDpi:
        session = FakeDpi(ctx, 1 if not self.sessions else None)
        self.sessions.append(session)
        return session


def _named_connection(sport: int = 80) -> list[Packet]:
    """A handshake and one client byte, enough for the first DPI session to decide."""
    return [
        *handshake(sport=sport),
        tcp(1.0, A, 40000, B, sport, TCP_ACK | TCP_PSH, seq=CISN + 1, ack=SISN + 1, payload=b"q"),
    ]


@pytest.mark.parametrize(
    ("later", "inherited"),
    [
        (tcp(31.0, A, 40000, B, 80, TCP_ACK, seq=CISN + 2, ack=SISN + 1, payload=b"more"), True),
        (tcp(31.0, B, 80, A, 40000, TCP_ACK, seq=SISN + 1, ack=CISN + 2, payload=b"reply"), True),
        (tcp(31.0, A, 40000, B, 80, TCP_SYN, seq=CISN + 99999), False),
    ],
    ids=["client-data", "server-data", "new-connection-syn"],
)
def test_active_timeout_continuation_inherits_the_app(later: Packet, inherited: bool) -> None:
    """The flow continuing a connection cut by the active timeout keeps its app and server name; a new SYN does not."""
    rec = FirstDecides()
    keepalive = tcp(20.0, A, 40000, B, 80, TCP_ACK, seq=CISN + 2, ack=SISN + 1)
    first, second = all_flows([*_named_connection(), keepalive, later], Limits(active_timeout=30.0), rec)
    assert first.app == "fake" and first.end_reason == ("active" if inherited else "reused")
    assert len(rec.sessions) == 2 and rec.sessions[1].app == "unknown"  # the fresh session saw only the middle
    assert second.app == ("fake" if inherited else None)
    assert second.server_name == ("svc.example" if inherited else None)
    assert second.inherited_app == second.app and second.midstream == inherited


def test_active_timeout_continuation_of_udp_inherits_the_app() -> None:
    """A long UDP conversation cut by the active timeout keeps its app in the next piece."""
    rec = FirstDecides()
    pkts = [udp(20.0 * i, A, 40000, B, 53, b"d") for i in range(4)]
    flows = all_flows(pkts, Limits(active_timeout=30.0), rec)
    assert [(f.end_reason, f.app) for f in flows] == [("active", "fake"), ("end-of-capture", "fake")]


@pytest.mark.parametrize(
    ("later", "sweep_first", "inherited"),
    [
        (tcp(15.0, A, 40000, B, 80, TCP_ACK, seq=CISN + 2, ack=SISN + 1, payload=b"more"), False, True),
        (tcp(15.0, A, 40000, B, 80, TCP_ACK, seq=CISN + 2, ack=SISN + 1, payload=b"more"), True, True),
        (tcp(15.0, B, 80, A, 40000, TCP_ACK, seq=SISN + 1, ack=CISN + 2, payload=b"reply"), True, True),
        (tcp(15.0, A, 40000, B, 80, TCP_ACK, seq=CISN + 10_000_000, ack=SISN + 1, payload=b"x"), False, False),
        (tcp(15.0, A, 40000, B, 80, TCP_ACK, seq=CISN + 2, ack=SISN + 10_000_000, payload=b"x"), True, False),
        (tcp(15.0, A, 40000, B, 80, TCP_SYN, seq=CISN + 2), False, False),
    ],
    ids=["continues", "continues-after-sweep", "server-continues", "seq-elsewhere", "ack-elsewhere", "new-syn"],
)
def test_idle_split_inherits_only_when_the_stream_continues(later: Packet, sweep_first: bool, inherited: bool) -> None:
    """After an idle split the next flow keeps roles and app only if its packet carries on the old TCP stream."""
    rec = FirstDecides()
    other = [udp(12.0, C, 1, B, 53)] if sweep_first else []
    flows = [
        f
        for f in all_flows([*_named_connection(), *other, later], Limits(idle_timeout=10.0), rec)
        if f.proto == PROTO_TCP
    ]
    assert [f.end_reason for f in flows] == ["idle", "end-of-capture"]
    second = flows[1]
    assert second.app == ("fake" if inherited else None)
    assert second.role_by == ("syn" if inherited or later.tcp_flags & TCP_SYN else "port")
    assert (second.client_ip, second.client_port) == (A, 40000)


@pytest.mark.parametrize(
    ("closing", "first_reason"),
    [
        ([tcp(2.0, B, 80, A, 40000, TCP_RST, seq=SISN + 1)], "rst"),
        (teardown(2.0, 1, 0), "fin"),
    ],
    ids=["rst", "fin"],
)
def test_active_timeout_cuts_closed_flows_too(closing: list[Packet], first_reason: str) -> None:
    """Traffic that goes on after a RST or FIN is still cut every active timeout, each piece keeping the app."""
    rec = FirstDecides()
    after = [tcp(20.0 * i, A, 40000, B, 80, TCP_ACK, seq=CISN + 2, ack=SISN + 1, payload=b"x") for i in range(1, 361)]
    flows = all_flows([*_named_connection(), *closing, *after], Limits(), rec)
    assert [f.end_reason for f in flows] == [first_reason, "active", "active", "active", "end-of-capture"]
    assert all(f.duration < 1800.0 for f in flows)
    assert {f.app for f in flows} == {"fake"}
    assert sum(f.packets_total for f in flows) == 4 + len(closing) + len(after)


# -- TCP teardown ---------------------------------------------------------------------------


def test_fin_closes_flow_and_trailing_ack_does_not_start_a_new_one() -> None:
    """After FIN/FIN/ACK the flow is closed; a trailing ACK joins it instead of starting a mid-stream flow."""
    table = FlowTable()
    ended = run(table, handshake() + teardown(1.0, 0, 0))
    assert ended == []
    (flow,) = list(table)
    assert flow.closed and flow.fin_seen == [True, True]
    assert table.add(tcp(1.5, B, 80, A, 40000, TCP_ACK, seq=SISN + 2, ack=CISN + 2)) == []
    assert len(table) == 1 and table.flows_started == 1
    (flow,) = table.flush()
    assert flow.end_reason == "fin" and flow.packets == [4, 3]


def test_closed_flow_ends_after_grace_period() -> None:
    """A closed flow leaves the table (reason "fin") once the grace period passes."""
    table = FlowTable(close_grace=5.0)
    run(table, handshake() + teardown(1.0, 0, 0))
    assert table.add(udp(3.0, C, 1, B, 53)) == []
    ended = table.add(udp(7.0, C, 1, B, 53))
    assert [(f.proto, f.end_reason) for f in ended] == [(PROTO_TCP, "fin")]


def test_fin_without_final_ack_stays_open() -> None:
    """Both FINs without the last ACK do not close the flow; it ends later still labelled "fin"."""
    table = FlowTable(Limits(idle_timeout=10.0))
    run(table, handshake() + teardown(1.0, 0, 0)[:2])
    (flow,) = list(table)
    assert not flow.closed
    ended = table.add(udp(20.0, C, 1, B, 53))
    assert [f.end_reason for f in ended] == ["fin"]


@pytest.mark.parametrize(
    ("closing", "reason"),
    [
        (teardown(1.0, 0, 0), "fin"),
        ([tcp(1.0, B, 80, A, 40000, TCP_RST | TCP_ACK, seq=SISN + 1, ack=CISN + 1)], "rst"),
        ([tcp(1.0, A, 40000, B, 80, TCP_FIN | TCP_ACK, seq=CISN + 1, ack=SISN + 1)], "fin"),
    ],
    ids=["fin", "rst", "half-closed"],
)
def test_new_syn_on_finished_tuple_starts_new_flow(closing: list[Packet], reason: str) -> None:
    """A new SYN on a 5-tuple that saw FIN or RST ends the old flow at once and starts a new one."""
    table = FlowTable()
    assert run(table, handshake() + closing) == []
    ended = table.add(tcp(2.0, A, 40000, B, 80, TCP_SYN, seq=CISN + 77777))
    assert [f.end_reason for f in ended] == [reason]
    (new,) = list(table)
    assert new.first_ts == 2.0 and new.role_by == "syn" and new.packets == [1, 0]


DATA_C = tcp(0.5, A, 40000, B, 80, TCP_ACK | TCP_PSH, seq=CISN + 1, ack=SISN + 1, payload=b"hello")
SYN_AGAIN = tcp(1.0, A, 40000, B, 80, TCP_SYN, seq=CISN)


@pytest.mark.parametrize(
    ("before", "syn", "reasons"),
    [
        ([handshake()[0]], SYN_AGAIN, ["end-of-capture"]),
        (handshake(), SYN_AGAIN, ["end-of-capture"]),
        (handshake()[1:], SYN_AGAIN, ["end-of-capture"]),
        ([*handshake(), DATA_C], SYN_AGAIN, ["reused", "end-of-capture"]),
        (handshake(), tcp(1.0, A, 40000, B, 80, TCP_SYN, seq=CISN + 77777), ["reused", "end-of-capture"]),
        (handshake(), tcp(1.0, B, 80, A, 40000, TCP_SYN, seq=SISN), ["reused", "end-of-capture"]),
        ([DATA_C], SYN_AGAIN, ["reused", "end-of-capture"]),
        (
            [handshake()[0], tcp(0.01, B, 80, A, 40000, TCP_RST | TCP_ACK, seq=0, ack=CISN + 1)],
            SYN_AGAIN,
            ["rst", "end-of-capture"],
        ),
        ([*handshake(), *teardown(0.5, 0, 0)], SYN_AGAIN, ["fin", "end-of-capture"]),
    ],
    ids=[
        "retransmitted-before-answer",
        "retransmitted-after-handshake",
        "late-syn-after-syn-ack-first",
        "same-isn-after-data",
        "new-isn-without-fin",
        "syn-from-the-server-end",
        "midstream-flow-without-isn",
        "same-isn-after-rst",
        "same-isn-after-fin-in-grace",
    ],
)
def test_syn_on_existing_flow(before: list[Packet], syn: Packet, reasons: list[str]) -> None:
    """A SYN stays in its flow only as a retransmission of the flow's own SYN before any data and before FIN or RST."""
    flows = all_flows([*before, syn])
    assert [f.end_reason for f in flows] == reasons
    if len(reasons) == 2:
        assert flows[1].first_ts == 1.0 and flows[1].packets_total == 1 and not flows[1].midstream


REDIS_GET = b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n"
REDIS_REPLY = b"$1\r\nv\r\n"
HTTP_ADMIN = b"GET /admin HTTP/1.1\r\nHost: cache\r\n\r\n"


def _redis_exchange() -> list[Packet]:
    """A handshake to port 6379 and one GET with its reply."""
    c, s = CISN + 1, SISN + 1
    return [
        *handshake(sport=6379),
        tcp(0.1, A, 40000, B, 6379, TCP_ACK | TCP_PSH, seq=c, ack=s, payload=REDIS_GET),
        tcp(0.2, B, 6379, A, 40000, TCP_ACK | TCP_PSH, seq=s, ack=c + len(REDIS_GET), payload=REDIS_REPLY),
    ]


def _http_connection(ts: float, isn: int) -> list[Packet]:
    """A new handshake from the same client port with ISN `isn`, then `GET /admin`."""
    return [
        tcp(ts, A, 40000, B, 6379, TCP_SYN, seq=isn),
        tcp(ts + 0.01, B, 6379, A, 40000, TCP_SYN | TCP_ACK, seq=777000, ack=isn + 1),
        tcp(ts + 0.02, A, 40000, B, 6379, TCP_ACK, seq=isn + 1, ack=777001),
        tcp(ts + 0.1, A, 40000, B, 6379, TCP_ACK | TCP_PSH, seq=isn + 1, ack=777001, payload=HTTP_ADMIN),
    ]


@pytest.mark.parametrize(
    ("between", "isn", "first_reason"),
    [
        ([], 90000, "reused"),
        (teardown(1.0, len(REDIS_GET), len(REDIS_REPLY), sport=6379), CISN, "fin"),
    ],
    ids=["new-isn-without-fin", "old-isn-in-close-grace"],
)
def test_new_connection_on_same_tuple_gets_its_own_flow_and_app(
    between: list[Packet], isn: int, first_reason: str
) -> None:
    """A second connection on a redis flow's 5-tuple is a new flow whose HTTP request reaches policy as HTTP."""
    limits = Limits()
    flows = all_flows(
        [*_redis_exchange(), *between, *_http_connection(3.0, isn)], dpi_factory=default_dpi_factory(limits)
    )
    assert [(f.app, f.end_reason) for f in flows] == [("redis", first_reason), ("http", "end-of-capture")]
    with_admin = [
        f.end_reason for f in flows if f.dpi is not None and any(e.fields.get("path") == "/admin" for e in f.dpi.events)
    ]
    assert with_admin == ["end-of-capture"]


# -- eviction and flush ---------------------------------------------------------------------


def test_eviction_past_max_flows_removes_the_oldest() -> None:
    """Past max_flows the least recently active flow is evicted and returned."""
    table = FlowTable(Limits(max_flows=2))
    table.add(udp(0.0, A, 1001, B, 53))
    table.add(udp(0.1, A, 1002, B, 53))
    table.add(udp(0.2, A, 1001, B, 53))  # 1001 is now the most recent
    ended = table.add(udp(0.3, A, 1003, B, 53))
    assert [(f.client_port, f.end_reason) for f in ended] == [(1002, "evicted")]
    assert len(table) == table.active_flows == 2 and table.flows_evicted == 1


def test_flush_ends_everything() -> None:
    """flush returns every remaining flow once, then the table is empty."""
    table = FlowTable()
    run(table, [udp(0.0, A, 1, B, 53), *handshake(), *teardown(1.0, 0, 0)])
    ended = table.flush()
    assert sorted(f.end_reason for f in ended) == ["end-of-capture", "fin"]
    assert len(table) == 0 and table.flush() == []


# -- DPI feeding ----------------------------------------------------------------------------


def test_dpi_context_and_stream_order() -> None:
    """The DPI gets its context, then each direction's stream in order despite reordering and repeats."""
    rec = Recorder()
    table = FlowTable(dpi_factory=rec)
    c1 = tcp(0.1, A, 40000, B, 80, TCP_ACK | TCP_PSH, seq=CISN + 1, ack=SISN + 1, payload=b"GET / ")
    c2 = tcp(0.2, A, 40000, B, 80, TCP_ACK | TCP_PSH, seq=CISN + 7, ack=SISN + 1, payload=b"HTTP/1.1\r\n")
    s1 = tcp(0.3, B, 80, A, 40000, TCP_ACK | TCP_PSH, seq=SISN + 1, ack=CISN + 17, payload=b"HTTP/1.1 200")
    run(table, [*handshake(), c2, s1, c1, c1])
    (flow,) = table.flush()
    (dpi,) = rec.sessions
    assert dpi.ctx == DetectContext(PROTO_TCP, 40000, 80)
    assert [(k, d) for k, d, _ in dpi.calls] == [("stream", S2C), ("stream", C2S)]
    assert dpi.stream(C2S) == b"GET / HTTP/1.1\r\n"
    assert dpi.stream(S2C) == b"HTTP/1.1 200"
    assert dpi.finished == 1
    assert flow.app is None and flow.retrans_bytes == 6 and flow.ooo_segments == 1


def test_dpi_learns_client_stream_start_from_syn_ack() -> None:
    """When the SYN is missed, the SYN-ACK's ACK places the client's stream so early reordering is handled."""
    rec = Recorder()
    table = FlowTable(dpi_factory=rec)
    late = tcp(0.1, A, 40000, B, 80, TCP_ACK, seq=CISN + 4, ack=SISN + 1, payload=b"def")
    early = tcp(0.2, A, 40000, B, 80, TCP_ACK, seq=CISN + 1, ack=SISN + 1, payload=b"abc")
    run(table, [handshake()[1], late, early])
    assert rec.sessions[0].stream(C2S) == b"abcdef"


def test_dpi_stops_being_fed_once_done() -> None:
    """Once the DPI says done it gets no more bytes, though counters keep going, and it is finished once."""
    rec = Recorder(done_after=4)
    table = FlowTable(dpi_factory=rec)
    pkts = handshake(sport=6379)
    for i in range(5):
        pkts.append(tcp(0.1 + i, A, 40000, B, 6379, TCP_ACK, seq=CISN + 1 + 4 * i, ack=SISN + 1, payload=b"PING"))
    # After the decision a conflicting retransmission goes unnoticed: reassembly is skipped.
    pkts.append(tcp(9.0, A, 40000, B, 6379, TCP_ACK, seq=CISN + 1, ack=SISN + 1, payload=b"XXXX"))
    run(table, pkts)
    (flow,) = table.flush()
    (dpi,) = rec.sessions
    assert len(dpi.calls) == 1
    assert not flow.overlap_conflict
    assert flow.packets[C2S] == 8 and flow.payload_bytes[C2S] == 24
    assert flow.app == "fake" and flow.server_name == "svc.example"
    assert dpi.finished == 1


def test_udp_datagrams_go_to_dpi_with_direction() -> None:
    """UDP payloads are handed over one datagram at a time, with their direction; empty ones are skipped."""
    rec = Recorder()
    table = FlowTable(dpi_factory=rec)
    run(
        table,
        [udp(0.0, A, 40000, B, 53, b"q1"), udp(0.1, B, 53, A, 40000, b"r1"), udp(0.2, A, 40000, B, 53, b"")],
    )
    table.flush()
    (dpi,) = rec.sessions
    assert dpi.ctx == DetectContext(PROTO_UDP, 40000, 53)
    assert dpi.calls == [("datagram", C2S, b"q1"), ("datagram", S2C, b"r1")]
    assert dpi.finished == 1


def test_icmp_flows_are_named_by_protocol_with_type_and_code_events() -> None:
    """ICMP flows get no payload DPI: the app is `icmp` and each message is an event with type and code."""
    rec = Recorder()
    (flow,) = all_flows([icmp(0.0, A, B, 8), icmp(0.1, B, A, 0)], dpi_factory=rec)
    assert rec.sessions == [] and flow.app == "icmp"
    assert flow.dpi is not None
    assert [(e.fields["type"], e.fields["code"], e.fields["type_name"]) for e in flow.dpi.events] == [
        (8, 0, "echo-request"),
        (0, 0, "echo-reply"),
    ]


def test_undecided_dpi_gives_no_app() -> None:
    """A DPI that ends "unknown" leaves the flow's app None."""
    rec = Recorder()
    (flow,) = all_flows([udp(0.0, A, 40000, B, 53)], dpi_factory=rec)
    assert rec.sessions[0].app == "unknown" and flow.app is None


def test_gap_is_reported_to_dpi_and_counted() -> None:
    """Overflowing the reassembly window reports a gap to the DPI and counts it on the flow."""
    rec = Recorder()
    table = FlowTable(Limits(reasm_window=8), dpi_factory=rec)
    run(
        table,
        [
            *handshake(),
            tcp(0.1, A, 40000, B, 80, TCP_ACK, seq=CISN + 11, ack=SISN + 1, payload=b"late-bytes"),
        ],
    )
    (flow,) = table.flush()
    assert flow.gaps == 1 and flow.lost_bytes == 10
    assert rec.sessions[0].calls[0] == ("gap", C2S, b"")


def test_overlap_conflict_flags_flow() -> None:
    """A retransmission with different bytes flags the flow; the DPI gets the first bytes."""
    rec = Recorder()
    table = FlowTable(dpi_factory=rec)
    run(
        table,
        [
            *handshake(),
            tcp(0.1, A, 40000, B, 80, TCP_ACK, seq=CISN + 1, ack=SISN + 1, payload=b"GET /ok"),
            tcp(0.2, A, 40000, B, 80, TCP_ACK, seq=CISN + 1, ack=SISN + 1, payload=b"GET /../etc"),
        ],
    )
    (flow,) = table.flush()
    assert flow.overlap_conflict
    assert rec.sessions[0].stream(C2S) == b"GET /ok/etc"
