"""The DPI depth through the datapath: flow table, engine and capture analysis."""

from __future__ import annotations

from pathlib import Path

import pytest

from podwall.analysis.runner import read_flows
from podwall.core.types import TCP_ACK, TCP_PSH, Packet
from podwall.datapath.engine import Engine
from podwall.datapath.flows import FlowTable, default_dpi_factory
from podwall.datapath.io.pcap import CaptureReader
from podwall.datapath.io.pcapwriter import PcapWriter
from podwall.dpi.session import DETECT, FULL, DpiSession
from podwall.inventory.resolver import Resolver
from podwall.lab import payloads as p
from podwall.lab.synth import tcp_exchange
from tests.conftest import corpus_dir

from .flow_packets import CISN, SISN, A, B, handshake, tcp

REQUESTS = [(p.http_request("GET", f"/{i}", "h.example"), b"HTTP/1.1 204 No Content\r\n\r\n") for i in range(4)]


def _keepalive() -> list[Packet]:
    """A keep-alive HTTP connection carrying four requests, as flow-table packets."""
    packets = handshake()
    cseq, sseq, ts = CISN + 1, SISN + 1, 1.0
    for request, response in REQUESTS:
        packets.append(tcp(ts, A, 40000, B, 80, TCP_ACK | TCP_PSH, seq=cseq, ack=sseq, payload=request))
        cseq += len(request)
        packets.append(tcp(ts + 0.01, B, 80, A, 40000, TCP_ACK | TCP_PSH, seq=sseq, ack=cseq, payload=response))
        sseq += len(response)
        ts += 1.0
    return packets


@pytest.mark.parametrize(
    ("depth", "requests", "reassembling"),
    [
        pytest.param(DETECT, 1, False, id="detect-stops-feeding-after-the-first-exchange"),
        pytest.param(FULL, 4, True, id="full-feeds-the-whole-connection"),
    ],
)
def test_flow_table_depth(depth: str, requests: int, reassembling: bool) -> None:
    """At detect depth the table drops a flow's reassembly once the DPI is done; at full it keeps feeding."""
    table = FlowTable(dpi_factory=default_dpi_factory(depth=depth))
    for pkt in _keepalive():
        table.add(pkt)
    (flow,) = list(table)
    assert flow.dpi is not None and isinstance(flow.dpi, DpiSession)
    assert (flow.app, len(flow.dpi.requests), flow._reasm is not None) == ("http", requests, reassembling)
    assert flow.packets_total == len(_keepalive())


def _capture(tmp_path: Path) -> Path:
    path = tmp_path / "keepalive.pcap"
    with PcapWriter(path) as writer:
        for ts, frame in tcp_exchange("10.1.0.1", 40001, "10.1.0.9", 80, 100.0, REQUESTS):
            writer.write(ts, frame)
    return path


@pytest.mark.parametrize(("depth", "requests"), [(DETECT, 1), (FULL, 4)], ids=["detect", "full"])
def test_engine_and_read_flows_pass_the_depth(tmp_path: Path, depth: str, requests: int) -> None:
    """Engine(dpi_depth=...) and read_flows(depth=...) give their sessions that depth."""
    path = _capture(tmp_path)
    engine = Engine(dpi_depth=depth)
    with CaptureReader(path) as reader:
        flows = [f for frame in reader for f in engine.feed(frame)] + engine.finish()
    (named,) = list(read_flows([path], Resolver(None), depth=depth))
    for flow in (flows[0], named.flow):
        assert flow.dpi is not None and len(flow.dpi.requests) == requests and flow.app == "http"


def test_read_flows_defaults_to_full_depth(tmp_path: Path) -> None:
    """Without a depth, analysis parses every request (what L7 policy needs)."""
    (named,) = list(read_flows([_capture(tmp_path)], Resolver(None)))
    assert named.flow.dpi is not None and len(named.flow.dpi.requests) == len(REQUESTS)


def test_detect_depth_names_every_corpus_flow_as_full_depth_does() -> None:
    """Over the corpus captures, detect depth gives every flow the application and server name full depth gives."""
    folders = [corpus_dir("dpi", "ndpi"), corpus_dir("dpi", "grpc")]
    files = sorted(f for d in folders for f in d.iterdir() if f.suffix in (".pcap", ".pcapng", ".cap"))

    def names(depth: str) -> list[tuple[str, int, int, str | None, str | None]]:
        return [
            (f.name, nf.flow.client_port, nf.flow.server_port, nf.app, nf.flow.server_name)
            for f in files
            for nf in read_flows([f], Resolver(None), on_problem=lambda _: None, depth=depth)
        ]

    detect, full = names(DETECT), names(FULL)
    assert len(detect) > 50 and detect == full
    assert sum(1 for *_, app, _ in detect if app) > 40
