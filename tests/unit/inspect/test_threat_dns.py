"""DNS threats: pointer loops, oversized messages, zone transfers, NULL queries and tunnelling."""

from __future__ import annotations

import random
import string
import struct

import pytest

from podwall.inspect.threats.dns import label_entropy, scan_dns
from podwall.lab.synth import tcp_exchange
from tests.unit.inspect.threat_kit import (
    CLIENT,
    SERVER,
    dns_loop_message,
    dns_message,
    ids,
    qname,
    run_frames,
    udp_frame,
)


def _udp(messages: list[bytes], *, start: float = 1.0, step: float = 0.1, port: int = 53) -> list[tuple[float, bytes]]:
    """Each message from the client (queries) or the server (responses) on one client port."""
    frames = []
    for i, msg in enumerate(messages):
        response = bool(msg[2] & 0x80)
        src, dst = (SERVER, CLIENT) if response else (CLIENT, SERVER)
        sport, dport = (port, 45000) if response else (45000, port)
        frames.append((start + i * step, udp_frame(src, sport, dst, dport, msg)))
    return frames


def test_scan_reads_questions_edns_and_errors() -> None:
    """The scanner reads every question's type, the OPT record's size, and names what broke a message."""
    scan = scan_dns(dns_message("example.com", 252, edns=1232))
    assert scan is not None and scan.questions == [("example.com", "AXFR")] and scan.edns_size == 1232
    loop = scan_dns(dns_loop_message())
    assert loop is not None and loop.error == "loop"
    long_name = struct.pack("!6H", 1, 0x0100, 1, 0, 0, 0) + (b"\x3f" + b"a" * 63) * 5 + b"\x00" + b"\x00\x01\x00\x01"
    assert scan_dns(long_name).error == "long-name"  # type: ignore[union-attr]
    assert scan_dns(b"\x00" * 11) is None


@pytest.mark.parametrize(
    ("messages", "threat", "expected"),
    [
        ([dns_loop_message()], "threat.dns_loop_pointer", 1),
        ([dns_message("shop.example.com"), dns_message("shop.example.com", response=True, answer_bytes=80)],
         "threat.dns_loop_pointer", 0),
        ([dns_message("big.example.com", 16, response=True, answer_bytes=600)], "threat.dns_oversize", 1),
        ([dns_message("big.example.com", 16, response=True, answer_bytes=600, edns=1232)], "threat.dns_oversize", 0),
        ([dns_message("big.example.com", 16, response=True, answer_bytes=5000, edns=65000)],
         "threat.dns_oversize", 1),
        ([dns_message("example.com", 252)], "threat.dns_zone_transfer", 1),
        ([dns_message("example.com", 251)], "threat.dns_zone_transfer", 1),
        ([dns_message("example.com", 1)], "threat.dns_zone_transfer", 0),
        ([dns_message("x.example.com", 10)], "threat.dns_null_type", 1),
        ([dns_message("x.example.com", 16)], "threat.dns_null_type", 0),
    ],
    ids=["loop", "valid-pointer", "600-bytes-plain", "600-bytes-edns", "5000-bytes", "axfr", "ixfr", "a-query",
         "null-query", "txt-query"],
)  # fmt: skip
def test_dns_message_threats_over_udp(messages: list[bytes], threat: str, expected: int) -> None:
    """Each DNS message threat fires on its trigger and not on the ordinary message next to it."""
    assert ids(run_frames(_udp(messages))).count(threat) == expected


def test_dns_loop_on_mdns_port_and_with_a_finding_frame() -> None:
    """A looping name is found on the mDNS port too, tied to its frame."""
    found = [f for f in run_frames(_udp([dns_loop_message()], port=5353)) if f.id == "threat.dns_loop_pointer"]
    assert len(found) == 1 and found[0].frame == 1


def test_zone_transfer_over_tcp() -> None:
    """An AXFR query over TCP (from the DPI's event) is a zone transfer."""
    query = dns_message("corp.example", 252)
    frames = tcp_exchange(CLIENT, 40000, SERVER, 53, 1.0, [(struct.pack("!H", len(query)) + query, b"")])
    found = [f for f in run_frames(frames) if f.id == "threat.dns_zone_transfer"]
    assert len(found) == 1 and found[0].l7 == {"qname": "corp.example", "qtype": "AXFR"}


def _random_label(rng: random.Random, size: int) -> str:
    return "".join(rng.choice(string.ascii_lowercase + string.digits) for _ in range(size))


def test_dns_tunnel_by_many_unique_names() -> None:
    """Fifty distinct names under one domain from one client within a minute look like a tunnel."""
    rng = random.Random(1)
    names = [f"{_random_label(rng, 8)}.t.evil.example" for _ in range(60)]
    found = [f for f in run_frames(_udp([dns_message(n) for n in names], step=0.3)) if f.id == "threat.dns_tunnel"]
    assert len(found) == 1 and found[0].detail["domain"] == "evil.example"


def test_dns_tunnel_by_encoded_labels() -> None:
    """Five queries with long high-entropy labels under one domain look like a tunnel."""
    rng = random.Random(2)
    names = [f"{_random_label(rng, 50)}.evil.example" for _ in range(5)]
    assert ids(run_frames(_udp([dns_message(n) for n in names]))).count("threat.dns_tunnel") == 1


@pytest.mark.parametrize(
    "names",
    [
        [f"host{i % 3}.example.com" for i in range(200)],
        [f"{'a' * 50}{i}.example.com" for i in range(10)],
        [f"svc{i}.default.svc.cluster.local" for i in range(80)],
        [f"{i}.2.0.192.in-addr.arpa" for i in range(80)],
        [f"{_random_label(random.Random(i), 8)}.domain{i}.example" for i in range(80)],
    ],
    ids=["repeated-names", "long-low-entropy-labels", "cluster-local", "reverse-lookups", "many-domains"],
)
def test_no_dns_tunnel_for_ordinary_lookups(names: list[str]) -> None:
    """Repeated names, plain long labels, cluster-local and reverse lookups, and many domains are no tunnel."""
    assert "threat.dns_tunnel" not in ids(run_frames(_udp([dns_message(n) for n in names], step=0.2)))


def test_label_entropy() -> None:
    """Entropy is 0 for one repeated character and log2(n) for n distinct ones."""
    assert label_entropy("aaaa") == 0.0
    assert label_entropy("abcd") == pytest.approx(2.0)
    assert label_entropy("") == 0.0


def test_qname_builder_matches_the_wire_format() -> None:
    """The test builder encodes names as length-prefixed labels ending in the root label."""
    assert qname("a.bc") == b"\x01a\x02bc\x00"
