"""Packet builders and fakes shared by the flow-table tests (test_flows, test_flow_lifecycle)."""

from __future__ import annotations

from podwall.core.limits import Limits
from podwall.core.types import (
    PROTO_ICMP,
    PROTO_TCP,
    PROTO_UDP,
    TCP_ACK,
    TCP_FIN,
    TCP_SYN,
    Direction,
    Packet,
    ip_packed,
)
from podwall.datapath.flows import DpiFactory, Flow, FlowTable
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

    def skippable(self, direction: Direction) -> int:
        return 0

    def skip(self, direction: Direction, n: int) -> None:
        raise AssertionError("this fake skips nothing")

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
