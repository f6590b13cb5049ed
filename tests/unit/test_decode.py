"""Tests for L2-L4 decoding: link types, VLANs, IPv4/IPv6, transports, truncation, fragments, corpus."""

from __future__ import annotations

import csv
import ipaddress
import os
import random
import struct
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.contrib.mpls import MPLS
from scapy.layers.inet import ICMP, IP, TCP, UDP, IPOption_RR, fragment
from scapy.layers.inet6 import (
    ICMPv6EchoRequest,
    IPv6,
    IPv6ExtHdrDestOpt,
    IPv6ExtHdrFragment,
    IPv6ExtHdrHopByHop,
    IPv6ExtHdrRouting,
    fragment6,
)
from scapy.layers.ipsec import AH, ESP
from scapy.layers.l2 import ARP, CookedLinux, CookedLinuxV2, Dot1AD, Dot1Q, Ether
from scapy.layers.ppp import PPP, PPPoE
from scapy.packet import Packet as ScapyPacket
from scapy.packet import Raw

from podwall.core.errors import Problem
from podwall.core.types import PROTO_ICMP, PROTO_ICMPV6, PROTO_TCP, PROTO_UDP, TCP_ACK, TCP_PSH, Packet
from podwall.datapath.decode import SUPPORTED_LINKTYPES, Decoder
from podwall.datapath.io.pcap import CaptureReader, Frame

A4, B4 = "10.1.2.3", "192.168.9.8"
A6, B6 = "2001:db8::1", "fd00::abcd"
PA4, PB4, PA6, PB6 = (ipaddress.ip_address(a).packed for a in (A4, B4, A6, B6))
MAC = "02:00:00:00:00:02"  # explicit, so scapy does not try to resolve neighbours
BODY = b"GET / HTTP/1.1\r\n\r\n"


def _frame(pkt: ScapyPacket | bytes, linktype: int = 1, number: int = 1, ts: float = 10.0) -> Frame:
    data = bytes(pkt)
    return Frame(number, ts, linktype, data, len(data))


def _decode(frame: Frame) -> tuple[Packet | None, Decoder, list[Problem]]:
    problems: list[Problem] = []
    decoder = Decoder(on_problem=problems.append, source="test.pcap")
    return decoder.decode(frame), decoder, problems


TCP4 = IP(src=A4, dst=B4, ttl=33) / TCP(sport=40000, dport=80, flags="PA", seq=1000, ack=2000, window=512) / BODY
TCP6 = IPv6(src=A6, dst=B6, hlim=44) / TCP(sport=40000, dport=80, flags="PA", seq=1000, ack=2000, window=512) / BODY


@pytest.mark.parametrize(
    ("frame_bytes", "linktype", "vlan"),
    [
        (Ether(dst=MAC) / TCP4, 1, None),
        (Ether(dst=MAC) / TCP6, 1, None),
        (Ether(dst=MAC) / Dot1Q(vlan=42) / TCP4, 1, 42),
        (Ether(dst=MAC) / Dot1AD(vlan=100) / Dot1Q(vlan=7) / TCP4, 1, 100),
        (Ether(dst=MAC, type=0x9100) / Dot1Q(vlan=300) / Dot1Q(vlan=5) / TCP6, 1, 300),
        (Ether(dst=MAC) / PPPoE() / PPP(proto=0x0021) / TCP4, 1, None),
        (Ether(dst=MAC) / MPLS(label=16, s=0) / MPLS(label=17, s=1) / TCP4, 1, None),
        (CookedLinux(proto=0x0800) / TCP4, 113, None),
        (CookedLinux(proto=0x86DD) / TCP6, 113, None),
        (CookedLinux(proto=0x8100) / Dot1Q(vlan=9) / TCP4, 113, 9),
        (CookedLinuxV2(proto=0x0800) / TCP4, 276, None),
        (CookedLinuxV2(proto=0x86DD) / TCP6, 276, None),
        (TCP4, 101, None),
        (TCP6, 101, None),
        (TCP4, 12, None),
        (TCP6, 14, None),
        (TCP4, 228, None),
        (TCP6, 229, None),
        (struct.pack("<I", 2) + bytes(TCP4), 0, None),
        (struct.pack(">I", 2) + bytes(TCP4), 0, None),
        (struct.pack("<I", 24) + bytes(TCP6), 0, None),
        (struct.pack("<I", 28) + bytes(TCP6), 0, None),
        (struct.pack(">I", 30) + bytes(TCP6), 0, None),
        (struct.pack(">I", 2) + bytes(TCP4), 108, None),
        (struct.pack(">I", 30) + bytes(TCP6), 108, None),
    ],
    ids=[
        "eth-v4",
        "eth-v6",
        "dot1q",
        "qinq-88a8",
        "qinq-9100-v6",
        "pppoe",
        "mpls",
        "sll-v4",
        "sll-v6",
        "sll-vlan",
        "sll2-v4",
        "sll2-v6",
        "raw101-v4",
        "raw101-v6",
        "raw12",
        "raw14-v6",
        "ipv4-228",
        "ipv6-229",
        "null-le-inet",
        "null-be-inet",
        "null-inet6-24",
        "null-inet6-28",
        "null-be-inet6-30",
        "loop-inet",
        "loop-inet6",
    ],
)
def test_link_types(frame_bytes: ScapyPacket | bytes, linktype: int, vlan: int | None) -> None:
    """Every supported link type yields the same TCP packet, with the outermost VLAN id recorded."""
    pkt, decoder, problems = _decode(_frame(frame_bytes, linktype))
    assert problems == []
    assert pkt is not None
    six = len(pkt.src) == 16
    assert (pkt.src, pkt.dst) == ((PA6, PB6) if six else (PA4, PB4))
    assert (pkt.proto, pkt.sport, pkt.dport, pkt.payload) == (PROTO_TCP, 40000, 80, BODY)
    assert pkt.vlan == vlan
    assert pkt.ttl == (44 if six else 33)
    assert decoder.stats["tcp"] == 1
    assert linktype in SUPPORTED_LINKTYPES


def test_tcp_fields() -> None:
    """TCP ports, flags, sequence, acknowledgement, window and payload after options are decoded."""
    seg = TCP(
        sport=5,
        dport=6,
        flags="PA",
        seq=0xFFFFFFF0,
        ack=77,
        window=65535,
        options=[("MSS", 1460), ("NOP", None)],
    )
    pkt, _, _ = _decode(_frame(Ether(dst=MAC) / IP(src=A4, dst=B4) / seg / b"data"))
    assert pkt is not None
    assert (pkt.sport, pkt.dport, pkt.seq, pkt.ack, pkt.window) == (5, 6, 0xFFFFFFF0, 77, 65535)
    assert pkt.tcp_flags == TCP_PSH | TCP_ACK
    assert pkt.payload == b"data"
    assert pkt.icmp_type == -1


def test_udp_and_ip_len() -> None:
    """UDP ports and payload are decoded and ip_len is the IPv4 total length."""
    ip = IP(src=A4, dst=B4) / UDP(sport=53, dport=3333) / b"answer"
    pkt, _, _ = _decode(_frame(Ether(dst=MAC) / ip))
    assert pkt is not None
    assert (pkt.proto, pkt.sport, pkt.dport, pkt.payload) == (PROTO_UDP, 53, 3333, b"answer")
    assert pkt.ip_len == len(bytes(ip))


def test_udp_length_trims_trailing_bytes() -> None:
    """Bytes after the UDP length (inside the IP packet) are not payload."""
    ip = IP(src=A4, dst=B4) / UDP(sport=1, dport=2, len=8 + 3) / b"abcXYZ"
    pkt, _, _ = _decode(_frame(Ether(dst=MAC) / ip))
    assert pkt is not None
    assert pkt.payload == b"abc"


@pytest.mark.parametrize(
    ("ip", "proto", "icmp"),
    [
        (IP(src=A4, dst=B4) / ICMP(type=8, code=0, id=1, seq=2) / b"ping", PROTO_ICMP, (8, 0)),
        (IP(src=A4, dst=B4) / ICMP(type=3, code=3) / b"orig", PROTO_ICMP, (3, 3)),
        (IPv6(src=A6, dst=B6) / ICMPv6EchoRequest(id=1, seq=2, data=b"ping"), PROTO_ICMPV6, (128, 0)),
    ],
    ids=["echo", "unreachable", "icmpv6-echo"],
)
def test_icmp(ip: ScapyPacket, proto: int, icmp: tuple[int, int]) -> None:
    """ICMP/ICMPv6 give type and code, ports 0, and the body after the 8-byte header as payload."""
    pkt, _, _ = _decode(_frame(Ether(dst=MAC) / ip))
    assert pkt is not None
    assert (pkt.proto, pkt.icmp_type, pkt.icmp_code, pkt.sport, pkt.dport) == (proto, *icmp, 0, 0)
    assert pkt.payload == bytes(ip)[-4:]


def test_ipv4_options() -> None:
    """IPv4 options are skipped using IHL; the transport header after them is read."""
    ip = IP(src=A4, dst=B4, options=[IPOption_RR(routers=["1.2.3.4", "5.6.7.8"])]) / UDP(sport=7, dport=9) / b"x"
    assert bytes(ip)[0] & 0x0F > 5
    pkt, _, _ = _decode(_frame(Ether(dst=MAC) / ip))
    assert pkt is not None
    assert (pkt.sport, pkt.dport, pkt.payload, pkt.ip_len) == (7, 9, b"x", len(bytes(ip)))


@pytest.mark.parametrize(
    ("ext", "proto"),
    [
        (IPv6ExtHdrHopByHop() / UDP(sport=1, dport=2) / b"p", PROTO_UDP),
        (
            IPv6ExtHdrHopByHop() / IPv6ExtHdrRouting() / IPv6ExtHdrDestOpt() / UDP(sport=1, dport=2) / b"p",
            PROTO_UDP,
        ),
        (IPv6ExtHdrDestOpt() / TCP(sport=1, dport=2) / b"p", PROTO_TCP),
        (IPv6ExtHdrFragment(offset=0, m=0, id=9) / UDP(sport=1, dport=2) / b"p", PROTO_UDP),
        (AH(nh=17, payloadlen=4, icv=b"\x00" * 12) / UDP(sport=1, dport=2) / b"p", PROTO_UDP),
        (IPv6ExtHdrHopByHop() / ESP(spi=1, seq=1, data=b"secret"), 50),
        (IPv6ExtHdrDestOpt(nh=59) / b"", 59),
    ],
    ids=["hop-by-hop", "hop-route-dst", "dstopts-tcp", "atomic-fragment", "ah", "esp-stops", "no-next"],
)
def test_ipv6_extension_headers(ext: ScapyPacket, proto: int) -> None:
    """Extension headers are walked to the transport; ESP and no-next-header stop with that proto."""
    ip = IPv6(src=A6, dst=B6) / ext
    pkt, _, problems = _decode(_frame(Ether(dst=MAC) / ip))
    assert problems == []
    assert pkt is not None
    assert pkt.proto == proto
    assert pkt.ip_len == len(bytes(ip))
    if proto in (PROTO_TCP, PROTO_UDP):
        assert (pkt.sport, pkt.dport, pkt.payload) == (1, 2, b"p")
    else:
        assert (pkt.sport, pkt.dport) == (0, 0)


def test_other_ip_protocol() -> None:
    """An IP protocol without a decoder (GRE) gives a packet with that number and ports 0."""
    ip = IP(src=A4, dst=B4, proto=47) / Raw(b"\x00\x00\x08\x00grepayload")
    pkt, decoder, _ = _decode(_frame(Ether(dst=MAC) / ip))
    assert pkt is not None
    assert (pkt.proto, pkt.sport, pkt.dport, pkt.payload) == (47, 0, 0, b"\x00\x00\x08\x00grepayload")
    assert decoder.stats["other_ip"] == 1


def test_ethernet_padding_is_trimmed() -> None:
    """Ethernet padding after the IP packet is not taken as payload."""
    ip = IP(src=A4, dst=B4) / TCP(sport=1, dport=2, flags="A")
    frame = _frame(bytes(Ether(dst=MAC) / ip) + b"\xaa" * 6)
    pkt, _, problems = _decode(frame)
    assert problems == []
    assert pkt is not None
    assert pkt.payload == b""
    assert pkt.ip_len == 40


def test_snaplen_truncated_frame() -> None:
    """A frame cut by the snap length keeps the captured payload and the header's ip_len."""
    full = bytes(Ether(dst=MAC) / IP(src=A4, dst=B4) / TCP(sport=1, dport=2) / (b"z" * 200))
    frame = Frame(3, 1.0, 1, full[:96], len(full))
    pkt, decoder, problems = _decode(frame)
    assert problems == []
    assert pkt is not None
    assert pkt.payload == b"z" * (96 - 14 - 40)
    assert pkt.ip_len == len(full) - 14
    assert decoder.stats["truncated"] == 1


def test_ip_length_beyond_untruncated_frame_is_malformed() -> None:
    """An IP length larger than a frame that was not cut by the capture is reported with its frame number."""
    full = bytes(Ether(dst=MAC) / IP(src=A4, dst=B4) / TCP(sport=1, dport=2) / (b"z" * 200))
    pkt, decoder, problems = _decode(Frame(7, 1.0, 1, full[:96], 96))
    assert pkt is None
    assert decoder.stats["malformed"] == 1
    assert len(problems) == 1
    assert problems[0].location.obj == "frame 7"
    assert problems[0].location.file == "test.pcap"
    assert "exceeds" in problems[0].message


ETH4 = bytes(Ether(dst=MAC, type=0x0800))


@pytest.mark.parametrize(
    ("linktype", "head", "captured"),
    [(1, ETH4, None), (101, b"", None), (1, ETH4, 100)],
    ids=["ethernet", "raw", "snaplen-cut"],
)
def test_tso_frame_with_ipv4_total_length_0(linktype: int, head: bytes, captured: int | None) -> None:
    """A TCP frame whose IPv4 total length is 0 (a host's own offloaded send) is decoded from the captured length."""
    body = b"q" * 3000  # larger than any MTU, as a TSO/GSO send is
    ip = bytearray(bytes(IP(src=A4, dst=B4) / TCP(sport=40000, dport=80, flags="PA", seq=7) / body))
    ip[2:4] = b"\x00\x00"
    full = head + bytes(ip)
    data = full if captured is None else full[:captured]
    pkt, decoder, problems = _decode(Frame(5, 1.0, linktype, data, len(full)))
    assert problems == []
    assert pkt is not None and pkt.proto == PROTO_TCP and pkt.seq == 7
    assert pkt.payload == body[: len(data) - len(head) - 40]
    assert pkt.ip_len == len(ip)
    assert decoder.stats["tso"] == 1 and decoder.stats["malformed"] == 0


def test_ipv4_total_length_0_stays_malformed_for_udp() -> None:
    """Only TCP gets the offload reading of a zero IPv4 total length; other protocols are still malformed."""
    pkt, decoder, problems = _decode(Frame(4, 1.0, 101, _v4_header(total=0) + bytes(8), 28))
    assert pkt is None
    assert decoder.stats["malformed"] == 1 and decoder.stats["tso"] == 0
    assert "inconsistent" in problems[0].message


def _v4_header(**over: int) -> bytes:
    fields = {"vihl": 0x45, "total": 28, "proto": 17}
    fields.update(over)
    return struct.pack("!BBHHHBBH4s4s", fields["vihl"], 0, fields["total"], 0, 0, 64, fields["proto"], 0, PA4, PB4)


@pytest.mark.parametrize(
    ("data", "linktype", "needle"),
    [
        (b"\x00" * 10, 1, "shorter than its 14-byte header"),
        (bytes(Ether(dst=MAC, type=0x8100)) + b"\x00\x01", 1, "VLAN tag"),
        (bytes(Ether(dst=MAC, type=0x0800)) + b"\x45\x00", 1, "IPv4 header truncated"),
        (_v4_header(vihl=0x44) + bytes(8), 101, "inconsistent"),
        (_v4_header(total=10) + bytes(8), 101, "inconsistent"),
        (_v4_header(vihl=0x55) + bytes(8), 228, "IP version 5"),
        (_v4_header(total=40, proto=6) + bytes(20), 101, "data offset 0"),
        (_v4_header(total=30, proto=6) + bytes(10), 101, "TCP header needs 20 bytes"),
        (_v4_header() + struct.pack("!HHHH", 1, 2, 40, 0), 101, "UDP length 40"),
        (_v4_header() + struct.pack("!HHHH", 1, 2, 4, 0), 101, "UDP length 4"),
        (_v4_header(proto=1, total=24) + bytes(4), 101, "ICMP header needs 8"),
        (bytes(IPv6(nh=0, plen=4)) + bytes(4), 101, "runs past"),
        (bytes(IPv6(nh=44, plen=4)) + bytes(4), 229, "fragment header truncated"),
        (b"\x00\x00", 0, "loopback frame"),
        (b"\x75" + bytes(30), 101, "IP version 7"),
        (b"", 101, "IP version 0"),
    ],
    ids=[
        "short-ethernet",
        "short-vlan",
        "short-ipv4",
        "ihl-below-20",
        "total-below-ihl",
        "wrong-version",
        "tcp-doff-0",
        "tcp-short",
        "udp-len-long",
        "udp-len-short",
        "icmp-short",
        "v6-ext-overrun",
        "v6-frag-short",
        "null-short",
        "raw-version",
        "raw-empty",
    ],
)
def test_malformed_frames(data: bytes, linktype: int, needle: str) -> None:
    """Malformed frames give None, count as malformed and report a Problem saying what was wrong."""
    pkt, decoder, problems = _decode(Frame(4, 1.0, linktype, data, len(data)))
    assert pkt is None
    assert decoder.stats["malformed"] == 1
    assert decoder.stats["decode_error"] == 0
    assert len(problems) == 1
    assert needle in problems[0].message
    assert problems[0].location.obj == "frame 4"


@pytest.mark.parametrize(
    ("data", "linktype"),
    [
        (Ether(dst=MAC) / ARP(), 1),
        (Ether(dst=MAC, type=0x88CC) / b"lldp", 1),
        (Ether(dst=MAC) / Dot1Q(vlan=3) / ARP(), 1),
        (CookedLinux(proto=0x0806) / ARP(), 113),
        (struct.pack("<I", 7) + b"xxxx", 0),
    ],
    ids=["arp", "lldp", "vlan-arp", "sll-arp", "null-other-af"],
)
def test_non_ip_frames_are_counted_silently(data: ScapyPacket | bytes, linktype: int) -> None:
    """Non-IP frames give None, count as non_ip and report nothing."""
    pkt, decoder, problems = _decode(_frame(data, linktype))
    assert pkt is None
    assert problems == []
    assert decoder.stats["non_ip"] == 1


def test_unsupported_linktype_reported_once() -> None:
    """Frames of an unsupported link type are skipped with one Problem per link type."""
    problems: list[Problem] = []
    decoder = Decoder(on_problem=problems.append)
    for n in range(5):
        assert decoder.decode(Frame(n + 1, 0.0, 127, b"radiotap", 8)) is None
    decoder.decode(Frame(6, 0.0, 105, b"wifi", 4))
    assert [p.message for p in problems] == [
        "unsupported link type 127; its frames are skipped",
        "unsupported link type 105; its frames are skipped",
    ]
    assert decoder.stats["unsupported_linktype"] == 6


def test_problem_reports_are_rate_limited() -> None:
    """Only the first report_limit problems are reported; the rest are counted and summarised by finish()."""
    problems: list[Problem] = []
    decoder = Decoder(on_problem=problems.append, report_limit=20)
    for n in range(25):
        decoder.decode(Frame(n + 1, 0.0, 1, b"\x00", 1))
    assert len(problems) == 20
    assert decoder.stats["malformed"] == 25
    assert decoder.stats["problems_suppressed"] == 5
    decoder.finish()
    assert "5 more malformed frame(s)" in problems[-1].message


# -- fragments through the decoder ------------------------------------------------------------


def _v4_fragments(order: str) -> tuple[list[Frame], bytes]:
    ip = IP(src=A4, dst=B4, id=4242) / UDP(sport=1111, dport=2222) / (bytes(range(256)) * 8)
    frags = [bytes(Ether(dst=MAC) / f) for f in fragment(ip, fragsize=400)]
    if order == "reversed":
        frags.reverse()
    elif order == "shuffled":
        random.Random(3).shuffle(frags)
    elif order == "duplicated":
        frags = [frags[0], *frags, frags[1]]
    frames = [Frame(i + 1, 100.0 + i, 1, f, len(f)) for i, f in enumerate(frags)]
    return frames, bytes(ip)


@pytest.mark.parametrize("order", ["in-order", "reversed", "shuffled", "duplicated"])
def test_ipv4_fragments_reassemble(order: str) -> None:
    """IPv4 fragments in any order (or duplicated) yield one packet with the whole datagram's payload."""
    frames, whole = _v4_fragments(order)
    decoder = Decoder()
    out = [(f, decoder.decode(f)) for f in frames]
    done = [(f, p) for f, p in out if p is not None]
    assert len(done) == 1
    last, pkt = done[0]
    assert (pkt.proto, pkt.sport, pkt.dport) == (PROTO_UDP, 1111, 2222)
    assert pkt.payload == bytes(range(256)) * 8
    assert pkt.ip_len == len(whole)
    assert (pkt.ts, pkt.frame) == (last.ts, last.number)
    assert decoder.stats["reassembled"] == 1


def test_ipv4_overlapping_fragments_counted() -> None:
    """Overlapping IPv4 fragments with different bytes are counted; the first data is kept."""
    udp = bytes(UDP(sport=1, dport=2, len=8 + 24)) + b"A" * 24
    first = IP(src=A4, dst=B4, id=1, proto=17, flags="MF", frag=0) / udp[:16]
    evil = IP(src=A4, dst=B4, id=1, proto=17, flags="MF", frag=1) / (b"B" * 16)
    last = IP(src=A4, dst=B4, id=1, proto=17, frag=2) / udp[16:]
    decoder = Decoder()
    results = [decoder.decode(_frame(Ether(dst=MAC) / p, number=i)) for i, p in enumerate((first, evil, last), 1)]
    assert results[0] is None and results[1] is None
    pkt = results[2]
    assert pkt is not None
    assert pkt.payload == b"A" * 8 + b"B" * 8 + b"A" * 8
    assert decoder.stats["fragment_overlap"] == 2  # the evil fragment, then the last one against it


def test_incomplete_fragments_expire_and_finish_reports() -> None:
    """A datagram missing a fragment expires by packet time; finish() reports what is left."""
    frames, _ = _v4_fragments("in-order")
    problems: list[Problem] = []
    decoder = Decoder(on_problem=problems.append)
    assert decoder.decode(frames[0]) is None
    late = Frame(99, frames[0].ts + 31.0, 1, frames[1].data, len(frames[1].data))
    assert decoder.decode(late) is None
    assert decoder.stats["fragment_expired"] == 1
    decoder.finish()
    assert decoder.stats["fragment_incomplete"] == 1
    assert "never completed" in problems[-1].message


def test_ping_of_death_is_reported() -> None:
    """A fragment reaching past 65535 bytes drops the datagram and is reported."""
    ip = IP(src=A4, dst=B4, id=5, proto=1, frag=8189) / (b"x" * 100)
    pkt, decoder, problems = _decode(_frame(Ether(dst=MAC) / ip))
    assert pkt is None
    assert "datagram limit" in problems[0].message
    assert decoder.stats["fragment_dropped"] == 1


@pytest.mark.parametrize("order", ["in-order", "reversed"])
def test_ipv6_fragments_reassemble(order: str) -> None:
    """IPv6 fragments reassemble into one packet whose ip_len counts the whole datagram."""
    base = IPv6(src=A6, dst=B6) / IPv6ExtHdrFragment(id=77) / UDP(sport=5353, dport=5353) / (b"q" * 3000)
    frags = [bytes(Ether(dst=MAC) / f) for f in fragment6(base, 1280)]
    assert len(frags) > 1
    if order == "reversed":
        frags.reverse()
    decoder = Decoder()
    results = [decoder.decode(Frame(i + 1, float(i), 1, f, len(f))) for i, f in enumerate(frags)]
    assert results[:-1] == [None] * (len(frags) - 1)
    pkt = results[-1]
    assert pkt is not None
    assert (pkt.proto, pkt.sport, pkt.dport, pkt.payload) == (PROTO_UDP, 5353, 5353, b"q" * 3000)
    assert pkt.ip_len == 40 + 8 + 3000
    assert pkt.frame == len(frags)


# -- fuzz ---------------------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(
    linktype=st.sampled_from([*sorted(SUPPORTED_LINKTYPES), 127]),
    data=st.binary(max_size=200),
    cut=st.booleans(),
)
def test_fuzz_decoder_never_raises(linktype: int, data: bytes, cut: bool) -> None:
    """Any bytes under any link type decode to a Packet or None without raising or hitting the safety net."""
    decoder = Decoder()
    decoder.decode(Frame(1, 0.0, linktype, data, len(data) + (50 if cut else 0)))
    assert decoder.stats["decode_error"] == 0


@settings(max_examples=300, deadline=None)
@given(
    base=st.sampled_from(
        [
            bytes(Ether(dst=MAC) / TCP4),
            bytes(Ether(dst=MAC) / TCP6),
            bytes(Ether(dst=MAC) / IPv6(src=A6) / IPv6ExtHdrHopByHop() / UDP()),
        ]
    ),
    flips=st.lists(st.tuples(st.integers(0, 200), st.integers(0, 255)), min_size=1, max_size=4),
    cut=st.integers(0, 200),
)
def test_fuzz_mutated_real_frames(base: bytes, flips: list[tuple[int, int]], cut: int) -> None:
    """Corrupted and cut real frames never raise and never reach the safety net."""
    data = bytearray(base)
    for pos, value in flips:
        if pos < len(data):
            data[pos] = value
    decoder = Decoder()
    decoder.decode(Frame(1, 0.0, 1, bytes(data[:cut]), len(base)))
    assert decoder.stats["decode_error"] == 0


# -- external corpus ------------------------------------------------------------------------------

CORPUS = Path(os.environ.get("PODWALL_CORPUS", "/work/shared/corpus")) / "dpi"
CAPTURES = sorted(p for p in CORPUS.glob("*/*") if p.suffix in (".pcap", ".pcapng", ".cap")) if CORPUS.is_dir() else []


@pytest.mark.skipif(not CAPTURES, reason=f"corpus not found at {CORPUS} (set PODWALL_CORPUS)")
@pytest.mark.parametrize("path", CAPTURES, ids=[p.name for p in CAPTURES])
def test_corpus_decodes_like_nfstream(path: Path) -> None:
    """Every corpus frame decodes without error, and per-protocol packet and byte counts equal nfstream's."""
    problems: list[Problem] = []
    decoder = Decoder(on_problem=problems.append, source=str(path))
    packets: Counter[int] = Counter()
    wire_bytes: Counter[int] = Counter()
    with CaptureReader(path, problems.append) as reader:
        for frame in reader:
            pkt = decoder.decode(frame)
            if pkt is not None:
                packets[pkt.proto] += 1
                wire_bytes[pkt.proto] += frame.orig_len  # nfstream counts link-layer bytes by default
    decoder.finish()
    assert problems == []
    assert decoder.stats["decode_error"] == 0
    expected_packets: Counter[int] = Counter()
    expected_bytes: Counter[int] = Counter()
    with open(f"{path}.flows.csv", newline="") as f:
        for row in csv.DictReader(f):
            expected_packets[int(row["protocol"])] += int(row["packets"])
            expected_bytes[int(row["protocol"])] += int(row["bytes"])
    assert packets == expected_packets
    assert wire_bytes == expected_bytes
    if expected_packets[PROTO_TCP] + expected_packets[PROTO_UDP]:
        assert packets[PROTO_TCP] + packets[PROTO_UDP] > 0
    else:
        assert sum(packets.values()) > 0
