"""Conformance of podwall's application names with nDPI's on the corpus captures.

For every corpus flow whose nDPI master protocol maps to a protocol podwall's registry names,
podwall must name the same application (per-flow agreement >= 98 %), and a flow nDPI calls
something else counts as a disagreement when podwall gives it one of those names. Every
disagreement is printed as a table with its pcap and 5-tuple. The mapping is documented in
docs/dpi.md.
"""

from __future__ import annotations

import csv
import ipaddress
from pathlib import Path

from podwall.analysis.runner import read_flows
from podwall.core.types import PROTO_ICMP, PROTO_ICMPV6, PROTO_TCP, PROTO_UDP, ip_text
from podwall.dpi.registry import detector_names
from podwall.inventory.resolver import Resolver
from tests.conftest import corpus_dir

# podwall name -> nDPI master names (docs/dpi.md); only names the registry has are checked.
ALL_NDPI_NAMES = {
    "http": {"HTTP"},
    "http2": {"HTTP2"},
    "tls": {"TLS"},
    "dns": {"DNS"},
    "redis": {"RESP"},
    "mysql": {"MySQL"},
    "postgresql": {"PostgreSQL"},
    "mongodb": {"MongoDB"},
    "kafka": {"Kafka"},
    "ssh": {"SSH"},
    "amqp": {"AMQP"},
    "memcached": {"Memcached"},
    "cassandra": {"Cassandra"},
    "mqtt": {"MQTT"},
    "ntp": {"NTP"},
    "dhcp": {"DHCP"},
    "icmp": {"ICMP"},
    "icmpv6": {"ICMPV6"},
}
NAMED = {*detector_names(), "icmp", "icmpv6"}  # ICMP is named by the IP protocol, not a detector
NDPI_NAMES = {ours: names for ours, names in ALL_NDPI_NAMES.items() if ours in NAMED}
CHECKED_PROTOS = (PROTO_TCP, PROTO_UDP, PROTO_ICMP, PROTO_ICMPV6)
TO_PODWALL = {ndpi: ours for ours, names in NDPI_NAMES.items() for ndpi in names}
MIN_AGREEMENT = 0.98

Key = tuple[str, int, frozenset[tuple[str, int]]]


def _key(pcap: str, proto: int, a: tuple[str, int], b: tuple[str, int]) -> Key:
    return (pcap, proto, frozenset({(str(ipaddress.ip_address(a[0])), a[1]), (str(ipaddress.ip_address(b[0])), b[1])}))


def test_application_names_agree_with_ndpi() -> None:
    """Flows nDPI names with a protocol podwall knows get that name from podwall (>= 98 % per flow)."""
    folder = corpus_dir("dpi", "ndpi")
    expected: dict[Key, str] = {}
    for flows_csv in sorted(folder.glob("*.flows.csv")):
        pcap = flows_csv.name.removesuffix(".flows.csv")
        with open(flows_csv, newline="") as fh:
            for r in csv.DictReader(fh):
                proto = int(r["protocol"])
                if proto in CHECKED_PROTOS:
                    key = _key(pcap, proto, (r["src_ip"], int(r["src_port"])), (r["dst_ip"], int(r["dst_port"])))
                    expected[key] = r["ndpi_master"]
    found: dict[Key, str | None] = {}
    for pcap_path in sorted(p for p in folder.iterdir() if p.suffix in (".pcap", ".pcapng", ".cap")):
        for nf in read_flows([pcap_path], Resolver(None), on_problem=lambda p: None):
            f = nf.flow
            if f.proto in CHECKED_PROTOS:
                key = _key(
                    pcap_path.name,
                    f.proto,
                    (ip_text(f.client_ip), f.client_port),
                    (ip_text(f.server_ip), f.server_port),
                )
                # A connection split into several flows keeps the first decision made on it.
                found[key] = found.get(key) or f.app
    rows: list[tuple[str, str, str, str]] = []
    relevant = 0
    for key, ndpi in sorted(expected.items(), key=lambda kv: (kv[0][0], sorted(kv[0][2]))):
        ours = found.get(key)
        want = TO_PODWALL.get(ndpi)
        if want is not None:
            relevant += 1
            if ours != want:
                rows.append((key[0], str(sorted(key[2])), ndpi, str(ours)))
        elif ours in NDPI_NAMES:
            rows.append((key[0], str(sorted(key[2])), ndpi, str(ours)))
    table = "\n".join(f"{p:32} {t:60} nDPI={n:12} podwall={o}" for p, t, n, o in rows)
    assert relevant >= 20, "the corpus should hold at least 20 flows of protocols podwall names"
    agreement = 1 - len(rows) / relevant
    names = ", ".join(sorted(NDPI_NAMES))
    print(f"\nagreement with nDPI on {relevant} flows ({names}): {agreement:.1%}\n{table}")
    assert agreement >= MIN_AGREEMENT, f"agreement {agreement:.1%} < {MIN_AGREEMENT:.0%}; disagreements:\n{table}"


def test_demo_flows_agree_with_nfstream() -> None:
    """podwall's application for every flow of the bundled exploit capture is nfstream's (nDPI's) too."""
    import pytest

    nfstream = pytest.importorskip("nfstream", reason="nfstream (the nDPI oracle) is a dev dependency")
    from podwall.demo import EXPLOIT

    oracle: dict[Key, str] = {}
    for fl in nfstream.NFStreamer(source=str(EXPLOIT), statistical_analysis=False, splt_analysis=0, n_dissections=20):
        if fl.protocol in (PROTO_TCP, PROTO_UDP):
            key = _key("demo", fl.protocol, (fl.src_ip, fl.src_port), (fl.dst_ip, fl.dst_port))
            oracle[key] = fl.application_name.split(".")[0]
    ours: dict[Key, str | None] = {}
    for nf in read_flows([Path(EXPLOIT)], Resolver(None)):
        f = nf.flow
        if f.proto in (PROTO_TCP, PROTO_UDP):
            key = _key("demo", f.proto, (ip_text(f.client_ip), f.client_port), (ip_text(f.server_ip), f.server_port))
            ours[key] = f.app
    assert set(ours) == set(oracle)
    mismatches = {k: (oracle[k], ours[k]) for k in oracle if TO_PODWALL.get(oracle[k]) != ours[k]}
    assert not mismatches
