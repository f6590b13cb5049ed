"""Tests for a flow's life in the table: idle and active timeouts, continuations, TCP teardown and reuse."""

from __future__ import annotations

import pytest

from podwall.core.limits import Limits
from podwall.core.types import (
    PROTO_TCP,
    TCP_ACK,
    TCP_FIN,
    TCP_PSH,
    TCP_RST,
    TCP_SYN,
    Packet,
)
from podwall.datapath.flows import FlowTable, default_dpi_factory
from podwall.dpi.base import DetectContext
from tests.unit.flow_packets import (
    CISN,
    SISN,
    A,
    B,
    C,
    FakeDpi,
    Recorder,
    all_flows,
    handshake,
    run,
    tcp,
    teardown,
    udp,
)

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
