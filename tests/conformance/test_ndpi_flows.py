"""Conformance smoke test over nDPI's captures: every capture reads without an exception and the
TCP/UDP flows podwall finds are exactly the 5-tuples nfstream found (`<pcap>.flows.csv`)."""

from __future__ import annotations

import csv
import ipaddress
from pathlib import Path

import pytest

from podwall.analysis.runner import read_flows
from podwall.core.types import PROTO_TCP, PROTO_UDP, ip_text
from podwall.inventory.resolver import Resolver
from tests.conftest import CORPUS, corpus_dir

FiveTuple = tuple[int, frozenset[tuple[str, int]]]


def _captures() -> list[Path]:
    folders = [CORPUS / "dpi" / "ndpi", CORPUS / "dpi" / "grpc"]
    return sorted(p for d in folders if d.is_dir() for p in d.iterdir() if p.suffix in (".pcap", ".pcapng", ".cap"))


def _norm(ip: str) -> str:
    return str(ipaddress.ip_address(ip))


def expected_tuples(pcap: Path) -> set[FiveTuple]:
    with open(f"{pcap}.flows.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    return {
        (
            int(r["protocol"]),
            frozenset({(_norm(r["src_ip"]), int(r["src_port"])), (_norm(r["dst_ip"]), int(r["dst_port"]))}),
        )
        for r in rows
        if int(r["protocol"]) in (PROTO_TCP, PROTO_UDP)
    }


def found_tuples(pcap: Path) -> set[FiveTuple]:
    problems: list[object] = []
    flows = list(read_flows([pcap], Resolver(None), on_problem=problems.append))
    return {
        (
            nf.flow.proto,
            frozenset(
                {
                    (ip_text(nf.flow.client_ip), nf.flow.client_port),
                    (ip_text(nf.flow.server_ip), nf.flow.server_port),
                }
            ),
        )
        for nf in flows
        if nf.flow.proto in (PROTO_TCP, PROTO_UDP)
    }


CAPTURES = _captures()


def test_corpus_present() -> None:
    """The corpus holds the nDPI and gRPC captures this suite checks (skips with a message if absent)."""
    corpus_dir("dpi", "ndpi")
    assert len(CAPTURES) >= 30


@pytest.mark.parametrize("pcap", CAPTURES, ids=[p.name for p in CAPTURES])
def test_flows_match_nfstream(pcap: Path) -> None:
    """Reading the capture raises nothing and yields the same set of TCP/UDP 5-tuples as nfstream."""
    expected = expected_tuples(pcap)
    found = found_tuples(pcap)
    missing, extra = expected - found, found - expected
    assert not missing and not extra, f"missing {sorted(map(str, missing))}, extra {sorted(map(str, extra))}"
