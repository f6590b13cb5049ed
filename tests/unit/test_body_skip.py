"""Bulk HTTP bodies pass the flow table without being copied through the parser: once a body's
capture is full, in-order segments inside it are counted unread (`skippable`/`skip`), and what
the DPI reports is the same as when every byte is fed."""

from __future__ import annotations

import pytest

from podwall.core.types import TCP_ACK, TCP_PSH, Direction, Packet
from podwall.datapath.flows import FlowTable
from podwall.dpi.base import DetectContext
from podwall.dpi.protocols.http1 import BODY_CAPTURE, HttpParser
from podwall.dpi.session import DpiSession
from podwall.lab import payloads as p

from .flow_packets import CISN, SISN, A, B, handshake, tcp

BODY = 5 * BODY_CAPTURE + 123
HEAD = f"POST /upload HTTP/1.1\r\nHost: h\r\nContent-Length: {BODY}\r\n\r\n".encode()
NEXT = p.http_request("GET", "/after", "h")
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


def _segments(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


def _upload(segment: int, out_of_order: bool = False, size: int = BODY) -> list[Packet]:
    """A POST with a bulk body in `segment`-byte segments, its answer, then a GET on the same connection."""
    packets = handshake()
    head = HEAD.replace(str(BODY).encode(), str(size).encode())
    stream = head + bytes(range(256)) * (size // 256) + b"x" * (size % 256) + NEXT
    pieces = _segments(stream, segment)
    cseq = CISN + 1
    sent = []
    for i, piece in enumerate(pieces):
        sent.append(tcp(1.0 + i * 1e-4, A, 40000, B, 80, TCP_ACK | TCP_PSH, seq=cseq, ack=SISN + 1, payload=piece))
        cseq += len(piece)
    if out_of_order:
        mid = len(sent) // 2
        sent[mid], sent[mid + 1] = sent[mid + 1], sent[mid]
    packets += sent
    packets.append(tcp(2.0, B, 80, A, 40000, TCP_ACK | TCP_PSH, seq=SISN + 1, ack=cseq, payload=OK + OK))
    return packets


class _Counting(DpiSession):
    """The usual session, counting the bytes it was told to skip."""

    skipped = 0

    def skip(self, direction: Direction, n: int) -> None:
        super().skip(direction, n)
        _Counting.skipped += n


class _NoSkip(DpiSession):
    """The DPI session fed every byte: the reference the skipping one must match."""

    def skippable(self, direction: Direction) -> int:
        return 0


@pytest.mark.parametrize(
    ("segment", "out_of_order"),
    [
        pytest.param(1448, False, id="mss-segments"),
        pytest.param(65000, False, id="gso-segments"),
        pytest.param(7000, True, id="reordered-in-the-body"),
        pytest.param(333, False, id="small-odd-segments"),
    ],
)
def test_skipping_reports_what_feeding_every_byte_reports(segment: int, out_of_order: bool) -> None:
    """Same events (the POST with its first 64 KiB of body, its answer, the GET after) either way."""
    results = []
    _Counting.skipped = 0
    for factory in (lambda ctx: _Counting(ctx), lambda ctx: _NoSkip(ctx)):
        table = FlowTable(dpi_factory=factory)
        for pkt in _upload(segment, out_of_order):
            table.add(pkt)
        (flow,) = list(table)
        assert flow.dpi is not None
        results.append([(e.kind, e.fields.get("path"), len(e.fields.get("body") or b"")) for e in flow.dpi.events])
    skipping, fed = results
    assert skipping == fed
    # Most of the body went by unread: all but the capture, the segments that filled it or held
    # other bytes, and the one ending it.
    assert BODY - BODY_CAPTURE - 3 * segment < _Counting.skipped < BODY - BODY_CAPTURE
    assert skipping[:2] == [("request", "/upload", BODY_CAPTURE), ("request", "/after", 0)]


def test_parser_skips_only_inside_a_full_body() -> None:
    """Nothing is skippable before the capture is full or with bytes pending; skipping past the
    body's last byte is refused; the skipped body still completes and the next request parses."""
    parser = HttpParser()
    c2s = Direction.C2S
    assert parser.skippable(c2s) == 0
    parser.feed(c2s, HEAD + b"a" * (BODY_CAPTURE - 1))
    assert parser.skippable(c2s) == 0  # one byte short of the capture
    events = parser.feed(c2s, b"a")
    assert [e.kind for e in events] == ["request"] and len(events[0].fields["body"]) == BODY_CAPTURE
    left = BODY - BODY_CAPTURE
    assert parser.skippable(c2s) == left - 1
    assert parser.skippable(Direction.S2C) == 0
    with pytest.raises(ValueError, match="cannot skip"):
        parser.skip(c2s, left)
    parser.skip(c2s, left - 1)
    assert parser.skippable(c2s) == 0
    assert parser.feed(c2s, b"a" + NEXT)[0].fields["path"] == "/after"


def test_inspected_and_detect_sessions_skip_nothing() -> None:
    """A session without a skipping parser (undecided, or done) reports nothing skippable."""
    session = DpiSession(DetectContext(6, 40000, 80))
    assert session.skippable(Direction.C2S) == 0
    with pytest.raises(ValueError):
        session.skip(Direction.C2S, 1)


def test_detect_depth_skips_nothing() -> None:
    """At detect depth every chunk counts towards the dissection budget, so nothing is skipped."""
    from podwall.dpi.session import DETECT

    table = FlowTable(dpi_factory=lambda ctx: _Counting(ctx, depth=DETECT))
    _Counting.skipped = 0
    for pkt in _upload(4000):
        table.add(pkt)
    assert _Counting.skipped == 0


@pytest.mark.parametrize(
    ("lost", "parsed_after", "gaps", "skipped"),
    [
        pytest.param("body", True, 0, 1, id="hole-in-the-skipped-body"),
        pytest.param("head", False, 1, 0, id="hole-in-the-request-head"),
    ],
)
def test_a_hole_inside_a_skipped_body_stops_nothing(lost: str, parsed_after: bool, gaps: int, skipped: int) -> None:
    """A segment lost for good inside the part of a body the parser counts unread is skipped like
    the rest of it: the request after the upload is still parsed. A hole anywhere else is a gap."""
    packets = _upload(7000, size=12 * BODY_CAPTURE)  # more than the reassembly window after the hole
    data = [i for i, pkt in enumerate(packets) if pkt.payload and pkt.src == A]
    victim = data[20] if lost == "body" else data[-1]  # past the capture, or the one holding the GET
    if lost == "head":
        # drop the segment carrying the GET's head, then send more so the window overflows
        extra = packets[victim]
        tail = [tcp(3.0 + i, A, 40000, B, 80, TCP_ACK | TCP_PSH, seq=extra.seq + len(extra.payload) + i * 60000,
                    ack=SISN + 1, payload=b"y" * 60000) for i in range(6)]  # fmt: skip
        packets = packets[:victim] + packets[victim + 1 :] + tail
    else:
        packets = packets[:victim] + packets[victim + 1 :]
    table = FlowTable(dpi_factory=lambda ctx: _Counting(ctx))
    for pkt in packets:
        table.add(pkt)
    (flow,) = list(table)
    assert flow.dpi is not None
    paths = [e.fields.get("path") for e in flow.dpi.events if e.kind == "request"]
    assert ("/after" in paths) is parsed_after
    assert (flow.gaps, flow.holes_skipped) == (gaps, skipped)
