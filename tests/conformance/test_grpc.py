"""Conformance on the gRPC corpus: every gRPC flow is named `grpc` and its calls' :path are the expected ones.

Each row of `dpi/grpc/expected.csv` names one TCP flow (5-tuple) of a capture and its gRPC
`:path`; the capture runs through the whole offline pipeline (`read_flows`), as a user's would.
nDPI only says HTTP2 for these flows (it has no gRPC label); podwall must say `grpc`.
"""

from __future__ import annotations

import csv
import ipaddress

from podwall.analysis.runner import read_flows
from podwall.core.types import ip_text
from podwall.inventory.resolver import Resolver
from tests.conftest import corpus_dir


def _ends(a: tuple[str, int], b: tuple[str, int]) -> frozenset[tuple[str, int]]:
    return frozenset({(str(ipaddress.ip_address(a[0])), a[1]), (str(ipaddress.ip_address(b[0])), b[1])})


def test_grpc_flows_and_paths() -> None:
    """Each expected flow is `grpc`, and its gRPC request events carry exactly the expected :path values."""
    folder = corpus_dir("dpi", "grpc")
    with open(folder / "expected.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert rows, "expected.csv lists no flow"
    problems: list[str] = []
    for row in rows:
        want = _ends((row["src_ip"], int(row["src_port"])), (row["dst_ip"], int(row["dst_port"])))
        expected_paths = sorted(p for p in row["grpc_path"].split(";") if p)
        flows = [
            nf.flow
            for nf in read_flows([folder / row["pcap"]], Resolver(None), on_problem=lambda p: None)
            if nf.flow.proto == int(row["protocol"])
            and _ends(
                (ip_text(nf.flow.client_ip), nf.flow.client_port), (ip_text(nf.flow.server_ip), nf.flow.server_port)
            )
            == want
        ]
        if not flows:
            problems.append(f"{row['pcap']}: flow {sorted(want)} not found")
            continue
        flow = flows[0]
        dpi = flow.dpi
        paths = sorted(
            e.fields["path"] for e in (dpi.events if dpi is not None else []) if e.app == "grpc" and e.kind == "request"
        )
        if flow.app != "grpc" or paths != expected_paths:
            problems.append(f"{row['pcap']}: app={flow.app} paths={paths}, expected grpc {expected_paths}")
    assert not problems, "\n".join(problems)
