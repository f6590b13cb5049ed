"""Per-packet threats: floods, ping of death, teardrop, SYN with data, small MSS, invalid frames, ICMP tunnels."""

from __future__ import annotations

import struct

import pytest

from podwall.core.errors import Location, Problem
from podwall.core.types import PROTO_ICMP, PROTO_ICMPV6, PROTO_UDP, ip_packed
from podwall.datapath.decode import Decoder, PacketProblem
from podwall.datapath.io.pcap import Frame
from podwall.inspect.findings import Action, FindingKind
from podwall.inspect.threats import ThreatEngine
from podwall.lab.synth import icmp_echo, ip_frame
from tests.unit.inspect.threat_kit import (
    CLIENT,
    SERVER,
    PacketDriver,
    icmp_packet,
    ids,
    ipv4_fragment,
    run_frames,
    settings,
    syn_packet,
    tcp_syn_frame,
)

A, B = ip_packed(CLIENT), ip_packed(SERVER)


def _syns(count: int, seconds: float, dst: bytes = B) -> list:
    return [syn_packet(i * seconds / count, A, 20000 + i, dst, 80) for i in range(count)]


@pytest.mark.parametrize(
    ("count", "seconds", "expected"),
    [(250, 0.9, 1), (150, 0.9, 0), (250, 5.0, 0), (2000, 0.9, 1)],
    ids=["250-in-1s", "150-in-1s", "250-over-5s", "2000-in-1s-one-report"],
)
def test_syn_flood_reports_once_per_target_above_the_rate(count: int, seconds: float, expected: int) -> None:
    """More than 200 SYNs to one address within a second is a flood, reported once per interval."""
    driver = PacketDriver()
    driver.feed(*_syns(count, seconds))
    assert ids(driver.findings).count("threat.syn_flood") == expected


def test_syn_flood_drops_every_syn_over_the_threshold() -> None:
    """While the rate is exceeded each further SYN asks to be dropped, with or without a new finding."""
    driver = PacketDriver()
    driver.feed(*_syns(260, 0.9))
    assert driver.actions[:200] == [None] * 200
    assert set(driver.actions[200:]) == {Action.DROP}
    finding = next(f for f in driver.findings if f.id == "threat.syn_flood")
    assert finding.kind is FindingKind.THREAT
    assert finding.detail["dst"] == SERVER and finding.detail["count"] == 201


def test_syn_flood_counts_each_destination_apart() -> None:
    """SYNs spread over several destinations, each under the rate, are no flood."""
    driver = PacketDriver()
    c = ip_packed("10.0.0.3")
    driver.feed(*sorted(_syns(150, 0.9) + _syns(150, 0.9, c), key=lambda p: p.ts))
    assert "threat.syn_flood" not in ids(driver.findings)


def test_a_disabled_threat_neither_reports_nor_acts() -> None:
    """`enabled: false` silences a threat completely."""
    driver = PacketDriver(settings(syn_flood={"enabled": False}))
    driver.feed(*_syns(300, 0.5))
    assert driver.findings == [] and set(driver.actions) == {None}


@pytest.mark.parametrize(
    ("count", "proto", "icmp_type", "expected"),
    [(150, PROTO_ICMP, 8, 1), (80, PROTO_ICMP, 8, 0), (500, PROTO_ICMPV6, 135, 0), (150, PROTO_ICMPV6, 128, 1)],
    ids=["echo-flood", "echo-under", "neighbour-solicitations", "icmpv6-echo-flood"],
)
def test_icmp_flood(count: int, proto: int, icmp_type: int, expected: int) -> None:
    """More than 100 ICMP messages to one address in a second is a flood; neighbour discovery never is."""
    driver = PacketDriver()
    driver.feed(*[icmp_packet(i / (count + 1), A, B, icmp_type, proto=proto) for i in range(count)])
    assert ids(driver.findings).count("threat.icmp_flood") == expected


@pytest.mark.parametrize(("size", "expected"), [(40000, 1), (32000, 0), (1500, 0)], ids=["40000", "32000", "1500"])
def test_ping_of_death_by_size(size: int, expected: int) -> None:
    """An ICMP packet over 32,000 IP bytes (after reassembly) is a ping of death."""
    driver = PacketDriver()
    pkt = icmp_packet(1.0, A, B, 8, payload=b"x" * 10)
    pkt.ip_len = size
    driver.feed(pkt)
    assert ids(driver.findings).count("threat.ping_of_death") == expected


def _fragments(data: bytes, size: int, ident: int = 5, proto: int = PROTO_ICMP) -> list[tuple[float, bytes]]:
    return [
        (
            1.0 + i * 0.001,
            ipv4_fragment(CLIENT, SERVER, proto, ident, off, off + size < len(data), data[off : off + size]),
        )
        for i, off in enumerate(range(0, len(data), size))
    ]


def test_ping_of_death_from_reassembled_fragments() -> None:
    """A 40,000-byte echo request reassembled from fragments is a ping of death; a 3,000-byte one is not."""
    big = icmp_echo(1, 1, bytes(40000))
    small = icmp_echo(2, 1, bytes(3000))
    found = ids(run_frames(_fragments(big, 1480) + _fragments(small, 1480, ident=6)))
    assert found.count("threat.ping_of_death") == 1


def test_ping_of_death_from_fragments_past_65535_bytes() -> None:
    """Fragments that would make an ICMP datagram larger than 65,535 bytes are a ping of death."""
    frames = _fragments(icmp_echo(1, 1, bytes(8000)), 1480)
    frames[-1] = (2.0, ipv4_fragment(CLIENT, SERVER, PROTO_ICMP, 5, 65000, False, bytes(1000)))
    assert "threat.ping_of_death" in ids(run_frames(frames))


_UDP = struct.pack("!HHHH", 1000, 2000, 48, 0) + b"A" * 40  # a 48-byte UDP datagram to fragment


@pytest.mark.parametrize(
    ("pieces", "expected"),
    [
        ([(0, True, _UDP[:40]), (24, False, b"B" * 4)], 1),  # classic teardrop: ends inside the first
        ([(0, True, _UDP[:24]), (16, False, b"B" * 32)], 1),  # overlapping with other bytes, reassembles
        ([(0, True, _UDP[:24]), (24, False, _UDP[24:])], 0),  # ordinary fragments
        ([(0, True, _UDP[:24]), (0, True, _UDP[:24]), (24, False, _UDP[24:])], 0),  # a duplicate
    ],
    ids=["teardrop", "overlap", "plain", "duplicate"],
)
def test_teardrop(pieces: list[tuple[int, bool, bytes]], expected: int) -> None:
    """Fragments whose ranges overlap (or disagree on the datagram's end) are teardrop; duplicates are not."""
    frames = [
        (1.0 + i * 0.01, ipv4_fragment(CLIENT, SERVER, PROTO_UDP, 77, off, more, data))
        for i, (off, more, data) in enumerate(pieces)
    ]
    found = ids(run_frames(frames))
    assert found.count("threat.teardrop") == expected
    assert "threat.invalid_packet" not in found


def test_invalid_packet_from_the_decoder() -> None:
    """A frame the decoder rejects (a TCP data offset past the segment) is an invalid packet, with its ends."""
    bad = bytearray(ip_frame(CLIENT, SERVER, 6, bytes(20)))
    bad[14 + 20 + 12] = 0xF0  # data offset 60 in a 20-byte segment
    found = run_frames([(1.0, bytes(bad)), (2.0, tcp_syn_frame(CLIENT, 4000, SERVER, 80, b""))])
    invalid = [f for f in found if f.id == "threat.invalid_packet"]
    assert len(invalid) == 1
    assert invalid[0].frame == 1 and "data offset" in invalid[0].message


def test_problems_that_are_not_about_a_frame_are_ignored() -> None:
    """Summary problems (no frame, no packet facts) make no finding; packet problems are held per source."""
    engine = ThreatEngine()
    assert engine.on_problem(Problem(Location(file="x.pcap"), "3 fragmented datagram(s) never completed")) == []
    problem = PacketProblem(Location(obj="frame 4"), "IPv4 header truncated", "malformed", 1.0, 4, A, B, 6)
    assert ids(engine.on_problem(problem)) == ["threat.invalid_packet"]
    assert engine.on_problem(problem) == []  # the same source again within the report interval


@pytest.mark.parametrize(
    ("payload", "expected"), [(b"GET / HTTP/1.1\r\n\r\n", 1), (b"", 0)], ids=["with-data", "plain"]
)
def test_syn_with_data(payload: bytes, expected: int) -> None:
    """A SYN that carries payload is reported; an ordinary SYN is not."""
    driver = PacketDriver()
    driver.feed(syn_packet(1.0, A, 40000, B, 80, payload=payload))
    assert ids(driver.findings).count("threat.syn_with_data") == expected


@pytest.mark.parametrize(("mss", "expected"), [(48, 1), (255, 1), (256, 0), (1460, 0), (0, 0)],
                         ids=["48", "255", "256", "1460", "no-option"])  # fmt: skip
def test_small_mss(mss: int, expected: int) -> None:
    """A SYN whose MSS option is below 256 is a small-MSS (SACK panic style) threat."""
    driver = PacketDriver()
    driver.feed(syn_packet(1.0, A, 40000, B, 80, mss=mss))
    assert ids(driver.findings).count("threat.tcp_small_mss") == expected


def test_small_mss_read_from_real_syn_options() -> None:
    """The decoder reads MSS and window scale from a SYN's options, and a small MSS frame triggers the threat."""
    options_small = b"\x02\x04\x00\x30\x01\x03\x03\x07"  # MSS 48, NOP, window scale 7
    options_ok = b"\x02\x04\x05\xb4\x04\x02"  # MSS 1460, SACK permitted
    found = run_frames(
        [
            (1.0, tcp_syn_frame(CLIENT, 4000, SERVER, 80, options_small)),
            (2.0, tcp_syn_frame(CLIENT, 4001, SERVER, 80, options_ok)),
        ]
    )
    small = [f for f in found if f.id == "threat.tcp_small_mss"]
    assert len(small) == 1 and small[0].detail["mss"] == 48 and small[0].frame == 1


def _pings(count: int, *, reply: bytes | None = None, sizes: list[int] | None = None) -> list:
    out = []
    for i in range(count):
        size = sizes[i % len(sizes)] if sizes else 56
        body = bytes([i % 251]) * size
        out.append(icmp_packet(i * 1.0, A, B, 8, payload=body))
        out.append(icmp_packet(i * 1.0 + 0.001, B, A, 0, payload=body if reply is None else reply + bytes([i])))
    return out


@pytest.mark.parametrize(
    ("packets", "expected"),
    [
        (_pings(10), 0),
        (_pings(10, reply=b"tunnelled data"), 1),
        (_pings(2, reply=b"tunnelled data"), 0),
        (_pings(10, sizes=[56, 120, 300, 700, 1000, 64, 80, 999]), 1),
        (_pings(10, sizes=[56, 1472]), 0),
    ],
    ids=["ordinary-ping", "replies-differ", "two-odd-replies", "eight-sizes", "two-sizes"],
)
def test_icmp_tunnel(packets: list, expected: int) -> None:
    """Replies that do not echo their requests, or requests of many sizes, look like an ICMP tunnel."""
    driver = PacketDriver()
    driver.feed(*packets)
    assert ids(driver.findings).count("threat.icmp_tunnel") == expected


def test_icmp_tunnel_huge_echo_payload() -> None:
    """An echo request carrying more than a jumbo frame's payload is a tunnel sign; a 1472-byte one is not."""
    driver = PacketDriver()
    driver.feed(icmp_packet(1.0, A, B, 8, payload=bytes(1472)), icmp_packet(2.0, A, B, 8, payload=bytes(9000)))
    found = [f for f in driver.findings if f.id == "threat.icmp_tunnel"]
    assert len(found) == 1 and "9000 bytes" in found[0].message


@pytest.mark.parametrize(
    ("options", "ack", "expected"),
    [
        (b"\x02\x04\x05\xb4\x01\x03\x03\x07\x04\x02", False, (1460, 7)),
        (b"\x02\x04\x05\x78\x04\x02\x08\x0a" + bytes(8) + b"\x01\x03\x03\x0e", True, (1400, 14)),
        (b"\x01\x01\x04\x02", False, (0, -1)),
        (b"\x02\x00\x05\xb4", False, (0, -1)),
        (b"\x00\x02\x04\x05\xb4", False, (0, -1)),
    ],
    ids=["syn-mss-wscale", "synack-with-timestamps", "no-mss", "zero-length-option", "end-of-options-first"],
)
def test_decoder_reads_syn_options(options: bytes, ack: bool, expected: tuple[int, int]) -> None:
    """The decoder takes MSS and window scale from SYN options, stopping cleanly at a malformed option."""
    frame = tcp_syn_frame(CLIENT, 4000, SERVER, 80, options, ack=ack)
    pkt = Decoder().decode(Frame(1, 1.0, 1, frame, len(frame)))
    assert pkt is not None and (pkt.mss, pkt.wscale) == expected


def test_decoder_reports_impossible_fragments_with_their_kind_and_ends() -> None:
    """An impossible fragment becomes a PacketProblem naming why, when, which frame and both ends."""
    problems: list[Problem] = []
    decoder = Decoder(on_problem=problems.append)
    for number, (off, more, data) in enumerate([(0, True, bytes(40)), (24, False, bytes(4))], start=1):
        raw = ipv4_fragment(CLIENT, SERVER, PROTO_UDP, 9, off, more, data)
        assert decoder.decode(Frame(number, float(number), 1, raw, len(raw))) is None
    (problem,) = problems
    assert isinstance(problem, PacketProblem)
    assert (problem.kind, problem.frame, problem.ts, problem.src, problem.dst, problem.proto) == (
        "fragment-overlap",
        2,
        2.0,
        A,
        B,
        PROTO_UDP,
    )
    assert str(problem).startswith("frame 2: IPv4 fragment dropped")


def test_report_interval_holds_back_and_counts_repeats() -> None:
    """Repeats within the report interval make no finding; the next finding counts them as held back."""
    driver = PacketDriver(settings(ping_of_death={"report_interval": 10.0}))
    for ts in (1.0, 2.0, 3.0, 4.0, 12.0):
        pkt = icmp_packet(ts, A, B, 8, payload=b"x")
        pkt.ip_len = 40000
        driver.feed(pkt)
    found = [f for f in driver.findings if f.id == "threat.ping_of_death"]
    assert [f.ts for f in found] == [1.0, 12.0]
    assert "held_back" not in found[0].detail and found[1].detail["held_back"] == 3
    assert set(driver.actions) == {Action.DROP}
