"""Inspect captures: run the inspecting engine over files, name both ends, turn findings into events.

The I/O edge of offline inspection (as runner.py is for plain analysis): it opens captures,
drives `InspectingEngine`, names each finding's workloads, and saves each finding's
triggering frames as a pcap that its event points to.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from podwall.analysis.check import event_endpoint
from podwall.analysis.runner import FrameEngine, NamedFlow, ProgressFn, app_label, read_flows
from podwall.core.errors import Problem
from podwall.core.events import Event, EventDetection, EventType
from podwall.core.limits import DEFAULT_LIMITS, Limits
from podwall.core.types import Endpoint, ip_text, proto_name
from podwall.datapath.io.pcap import Frame
from podwall.datapath.io.pcapwriter import PcapWriter
from podwall.inspect.findings import Finding, FindingKind
from podwall.inspect.pipeline import CapturedFinding, InspectingEngine, Inspection
from podwall.inspect.setup import Inspectors
from podwall.inventory.resolver import Resolver
from podwall.policy.evaluate import PolicyEngine

__all__ = [
    "InspectedRun",
    "NamedFinding",
    "attach_findings",
    "finding_event",
    "inspect_captures",
    "name_finding",
    "save_pcaps",
]

_EVENT_TYPE = {FindingKind.THREAT: EventType.THREAT, FindingKind.WAF: EventType.WAF, FindingKind.DLP: EventType.DLP}


@dataclass(slots=True)
class NamedFinding:
    """A finding with both ends named (for a cross-flow finding, the ends of its triggering packet)."""

    finding: Finding
    client: Endpoint
    server: Endpoint
    transport: str
    ip_proto: int
    application: str
    server_name: str | None
    source: str
    frames: list[Frame]
    pcap: str | None = None

    def to_dict(self) -> dict[str, object]:
        f = self.finding
        return {
            "type": f.kind.value,
            "id": f.id,
            "name": f.name,
            "severity": f.severity.value,
            "action": f.action.value,
            "message": f.message,
            "client_group": self.client.group,
            "client_ip": self.client.ip,
            "server_group": self.server.group,
            "server_ip": self.server.ip,
            "server_port": self.server.port,
            "application": self.application,
            "l7": f.l7,
            "match": f.match,
            "location": f.location,
            "frame": f.frame,
            "time": f.ts,
            "source": self.source,
            "pcap": self.pcap,
        }


@dataclass(slots=True)
class InspectedRun:
    """What an inspected read produced: flows as they end (iterate `flows`), then `findings`."""

    findings: list[NamedFinding] = field(default_factory=list)


def inspect_captures(
    paths: Sequence[str | Path],
    resolver: Resolver,
    make_inspection: Callable[[], Inspection],
    run: InspectedRun,
    *,
    limits: Limits = DEFAULT_LIMITS,
    on_problem: Callable[[Problem], None] | None = None,
    progress: ProgressFn | None = None,
) -> Iterator[NamedFlow]:
    """Yield every flow of every capture, named (as `read_flows`); findings accumulate in `run`.

    Each capture gets a fresh `Inspection` (rates and sessions do not span files).
    """

    def make_engine(source: str) -> InspectingEngine:
        return InspectingEngine(make_inspection(), limits, on_problem=on_problem, source=source)

    def collect(engine: FrameEngine, source: str) -> None:
        assert isinstance(engine, InspectingEngine)
        if engine.findings:
            run.findings.extend(name_finding(c, resolver, source) for c in engine.findings)
            engine.findings.clear()

    return read_flows(
        paths, resolver, on_problem=on_problem, progress=progress, make_engine=make_engine, after_frame=collect
    )


def name_finding(captured: CapturedFinding, resolver: Resolver, source: str) -> NamedFinding:
    """A captured finding with both ends named by the inventory."""
    flow, finding = captured.flow, captured.finding
    if flow is not None:
        client = resolver.resolve(ip_text(flow.client_ip), flow.client_port)
        server = resolver.resolve(ip_text(flow.server_ip), flow.server_port)
        app = app_label(flow.app, flow.proto, flow.server_port)
        return NamedFinding(
            finding, client, server, proto_name(flow.proto), flow.proto, app, flow.server_name, source, captured.frames
        )
    # A cross-flow finding (a flood, a malformed packet): the detector names the ends it saw.
    d = finding.detail
    client = resolver.resolve(str(d.get("src", "0.0.0.0")), int(d.get("sport", 0)))
    server = resolver.resolve(str(d.get("dst", "0.0.0.0")), int(d.get("dport", 0)))
    proto = int(d.get("proto", 0))
    name = proto_name(proto) if proto else "ip"
    return NamedFinding(finding, client, server, name, proto, name, None, source, captured.frames)


def attach_findings(
    findings: Sequence[NamedFinding], inspectors: Inspectors, engine: PolicyEngine | None
) -> list[NamedFinding]:
    """The findings the policy attaches to the groups of their ends, with the action it gives them."""
    kept: list[NamedFinding] = []
    for nf in findings:
        if engine is not None:
            client_groups = engine.member_groups(nf.client) or [nf.client.group]
            server_groups = engine.member_groups(nf.server) or [nf.server.group]
        else:
            client_groups, server_groups = [nf.client.group], [nf.server.group]
        finding = inspectors.attach(nf.finding, client_groups, server_groups)
        if finding is not None:
            nf.finding = finding
            kept.append(nf)
    return kept


def save_pcaps(findings: Sequence[NamedFinding], directory: Path) -> None:
    """Write each finding's frames to `directory/<event id>.pcap` and point the finding at it.

    The packets hold in clear what the events mask (a DLP match, a password in a query): the
    directory is made private (0700) and each file readable by its owner only (0600)."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(directory, 0o700)  # also when an earlier run made it with looser rights
    for nf in findings:
        if not nf.frames:
            continue
        linktype = nf.frames[0].linktype
        path = directory / f"{_event_id(nf)}.pcap"
        # Created owner-only before anything is written, so no one can open it in between.
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o600))
        os.chmod(path, 0o600)
        with PcapWriter(path, linktype) as writer:
            for frame in nf.frames:
                if frame.linktype == linktype:
                    writer.write(frame.ts, frame.data, frame.orig_len)
        nf.pcap = str(path)


def _utc(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


def _event_id(nf: NamedFinding) -> str:
    """Stable: inspecting the same capture twice records each finding once."""
    f = nf.finding
    key = repr((f.kind.value, f.id, nf.source, f.frame, f.ts, f.location, f.match, nf.client.ip, nf.server.ip))
    return hashlib.sha256(key.encode()).hexdigest()[:32]


def finding_event(nf: NamedFinding, *, enforced: bool = False) -> Event:
    """The stored event of a finding (type threat, waf or dlp)."""
    f = nf.finding
    return Event(
        id=_event_id(nf),
        time=_utc(f.ts),
        type=_EVENT_TYPE[f.kind],
        severity=f.severity,
        message=f"{f.name}: {f.message}",
        client=event_endpoint(nf.client),
        server=event_endpoint(nf.server),
        transport=nf.transport,
        ip_proto=nf.ip_proto,
        application=nf.application,
        server_name=nf.server_name,
        l7=dict(f.l7),
        detection=EventDetection(
            id=f.id,
            name=f.name,
            action=f.action.value,
            enforced=enforced,
            match=f.match,
            location=f.location,
            detail=dict(f.detail),
        ),
        packets=len(nf.frames),
        bytes=sum(len(fr.data) for fr in nf.frames),
        pcap=nf.pcap,
        source=nf.source,
    )
