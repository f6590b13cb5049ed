"""Tests for the bidirectional flow table: roles, ICMP, counters, eviction and DPI feeding."""

from __future__ import annotations

import pytest

from podwall.core.limits import Limits
from podwall.core.types import (
    PROTO_ICMP,
    PROTO_ICMPV6,
    PROTO_TCP,
    PROTO_UDP,
    TCP_ACK,
    TCP_PSH,
    FlowKey,
)
from podwall.datapath.flows import FlowTable, server_side_by_port
from podwall.dpi.base import DetectContext
from tests.unit.flow_packets import (
    C2S,
    CISN,
    S2C,
    SISN,
    V6A,
    V6B,
    A,
    B,
    Recorder,
    all_flows,
    handshake,
    icmp,
    run,
    tcp,
    teardown,
    udp,
)

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
