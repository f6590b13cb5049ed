"""Inspection wired into the datapath: the engine that runs threats, WAF, SQLi and DLP on every flow.

`InspectingEngine` is the datapath engine (decode -> flow table -> DPI) with the inspectors
attached: the cross-flow threat engine sees every packet, decoder problem and finished flow;
per-flow inspectors (made by the `Inspection`'s factories) see the reassembled bytes of each
direction and every L7 event the DPI completes. An inspected flow keeps its stream bytes
flowing after the DPI has decided, for as long as one of its inspectors wants them.

Each finding comes with the frames that triggered it (the flow's first ~2 KB and its most
recent frames, up to the triggering one), so the caller can save them as the event's pcap.
Pure: frames in, flows and findings out; no files.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol

from podwall.core.errors import Problem
from podwall.core.limits import DEFAULT_LIMITS, Limits
from podwall.core.types import Direction, Packet
from podwall.datapath.decode import Decoder
from podwall.datapath.flows import DpiSessionLike, Flow, FlowTable
from podwall.datapath.io.pcap import Frame
from podwall.dpi.base import DetectContext, L7Event
from podwall.dpi.session import DpiSession
from podwall.inspect.findings import Finding

__all__ = [
    "FORENSIC_HEAD_BYTES",
    "CapturedFinding",
    "FlowInspector",
    "FlowInspectorFactory",
    "Forensics",
    "InspectedSession",
    "InspectingEngine",
    "InspectingFlowTable",
    "Inspection",
    "ThreatHooks",
]

FORENSIC_HEAD_BYTES = 2048  # a flow's first frames kept for every finding's pcap (at least this many bytes)
FORENSIC_RECENT = 8  # the flow's most recent frames kept as well (the trigger and what led to it)
MAX_FINDINGS_PER_FLOW = 64  # past this a flow's findings are counted, not kept


class FlowInspector(Protocol):
    """An inspector of one flow: fed its bytes and L7 events, returns what it found."""

    @property
    def wants_bytes(self) -> bool:
        """False once nothing more this inspector could find needs further stream bytes."""
        ...

    def on_bytes(self, direction: Direction, data: bytes, datagram: bool) -> list[Finding]: ...

    def on_event(self, event: L7Event) -> list[Finding]: ...

    def finish(self) -> list[Finding]: ...


FlowInspectorFactory = Callable[[DetectContext], "FlowInspector | None"]


class ThreatHooks(Protocol):
    """The cross-flow threat engine as the pipeline drives it (see inspect/threats)."""

    def on_packet(self, pkt: Packet, flow: Flow | None, direction: Direction) -> list[Finding]: ...

    def wants_stream(self, flow: Flow) -> bool:
        """False once this flow's further bytes cannot matter to the threat checks."""
        ...

    def on_stream(self, flow: Flow, direction: Direction, data: bytes) -> list[Finding]: ...

    def on_event(self, flow: Flow, event: L7Event) -> list[Finding]: ...

    def on_flow_end(self, flow: Flow) -> list[Finding]: ...

    def on_problem(self, problem: Problem) -> list[Finding]: ...


@dataclass(slots=True)
class Inspection:
    """What to run: the threat engine (cross-flow) and factories of per-flow inspectors."""

    threats: ThreatHooks | None = None
    flow_inspectors: Sequence[FlowInspectorFactory] = ()


@dataclass(slots=True)
class CapturedFinding:
    """A finding, the flow it was seen in (None for cross-flow ones) and its triggering frames."""

    finding: Finding
    flow: Flow | None
    frames: list[Frame] = field(default_factory=list)


class Forensics:
    """A flow's frames kept for pcaps: the first ~2 KB and the most recent few."""

    __slots__ = ("head", "head_bytes", "recent")

    def __init__(self) -> None:
        self.head: list[Frame] = []
        self.head_bytes = 0
        self.recent: deque[Frame] = deque(maxlen=FORENSIC_RECENT)

    def add(self, frame: Frame) -> None:
        if self.head_bytes < FORENSIC_HEAD_BYTES:
            self.head.append(frame)
            self.head_bytes += len(frame.data)
        else:
            self.recent.append(frame)

    def snapshot(self) -> list[Frame]:
        return [*self.head, *self.recent]


class InspectedSession:
    """A flow's DPI session with its inspectors; the flow table sees it as a DPI session.

    Bytes go to the DPI until it is done and to the inspectors while any wants them; every L7
    event the DPI completes goes to the inspectors and the threat engine. Findings land in
    `findings` (the engine collects them after each packet).
    """

    __slots__ = ("_inspectors", "_threats", "dpi", "findings", "flow", "forensics", "lost_findings")

    def __init__(self, dpi: DpiSession, inspectors: list[FlowInspector], threats: ThreatHooks | None) -> None:
        self.dpi = dpi
        self._inspectors = inspectors
        self._threats = threats
        self.flow: Flow | None = None  # set by the engine once the flow table has made the flow
        self.findings: list[Finding] = []
        self.lost_findings = 0
        self.forensics: Forensics | None = None  # the flow's frames, where the caller keeps them here
        dpi.on_event = self._on_event

    # -- what the flow table and the reports read ----------------------------------------------

    @property
    def app(self) -> str | None:
        return self.dpi.app

    @property
    def server_name(self) -> str | None:
        return self.dpi.server_name

    @property
    def events(self) -> list[L7Event]:
        return self.dpi.events

    @property
    def requests(self) -> list[L7Event]:
        return self.dpi.requests

    @property
    def requests_truncated(self) -> bool:
        return self.dpi.requests_truncated

    @property
    def error(self) -> str | None:
        return self.dpi.error

    @property
    def done(self) -> bool:
        return self.dpi.done and not self._wants_bytes()

    def _wants_bytes(self) -> bool:
        threats, flow = self._threats, self.flow
        if threats is not None and flow is not None and threats.wants_stream(flow):
            return True
        return any(i.wants_bytes for i in self._inspectors)

    # -- input -----------------------------------------------------------------------------------

    def on_stream(self, direction: Direction, data: bytes) -> None:
        if not self.dpi.done:
            self.dpi.on_stream(direction, data)
        self._bytes(direction, data, datagram=False)

    def on_datagram(self, direction: Direction, data: bytes) -> None:
        if not self.dpi.done:
            self.dpi.on_datagram(direction, data)
        self._bytes(direction, data, datagram=True)

    def on_gap(self, direction: Direction) -> None:
        self.dpi.on_gap(direction)

    def skippable(self, direction: Direction) -> int:
        return 0  # the inspectors read every byte the DPI would skip (a body past its capture)

    def skip(self, direction: Direction, n: int) -> None:
        raise ValueError("an inspected session reads every byte")

    def finish(self) -> None:
        self.dpi.finish()
        for inspector in self._inspectors:
            self._add(inspector.finish())

    def _bytes(self, direction: Direction, data: bytes, datagram: bool) -> None:
        for inspector in self._inspectors:
            if inspector.wants_bytes:
                self._add(inspector.on_bytes(direction, data, datagram))
        threats, flow = self._threats, self.flow
        if threats is not None and flow is not None and not datagram and threats.wants_stream(flow):
            self._add(threats.on_stream(flow, direction, data))

    def _on_event(self, event: L7Event) -> None:
        for inspector in self._inspectors:
            self._add(inspector.on_event(event))
        threats, flow = self._threats, self.flow
        if threats is not None and flow is not None:
            self._add(threats.on_event(flow, event))

    def _add(self, found: list[Finding]) -> None:
        if not found:
            return
        room = MAX_FINDINGS_PER_FLOW - len(self.findings)
        if room < len(found):
            self.lost_findings += len(found) - max(room, 0)
            found = found[: max(room, 0)]
        self.findings.extend(found)


class InspectingFlowTable(FlowTable):
    """The flow table, telling each inspected session its flow before the flow's first bytes reach it."""

    def _start(self, k: tuple[int, bytes, int, bytes, int], pkt: Packet, inherit: object, ended: list[Flow]) -> Flow:
        flow = super()._start(k, pkt, inherit, ended)  # type: ignore[arg-type]
        session = flow.dpi
        if isinstance(session, InspectedSession):
            session.flow = flow
        return flow


class InspectingEngine:
    """The datapath engine with inspection: frames in, ended flows out, findings collected."""

    def __init__(
        self,
        inspection: Inspection,
        limits: Limits = DEFAULT_LIMITS,
        *,
        on_problem: Callable[[Problem], None] | None = None,
        source: str | None = None,
    ) -> None:
        self.limits = limits
        self.inspection = inspection
        self._on_problem = on_problem
        self.decoder = Decoder(limits, on_problem=self._problem, source=source)
        self.table: FlowTable = InspectingFlowTable(limits, dpi_factory=self._session)
        self.packets = 0
        self.findings: list[CapturedFinding] = []
        self._forensics: dict[int, Forensics] = {}  # id(flow) -> its frames, while the flow lives
        self.frame_snap: int | None = None  # bytes of each frame kept for pcaps (None: whole)
        self._frame: Frame | None = None

    def _session(self, ctx: DetectContext) -> DpiSessionLike:
        inspectors = [i for i in (make(ctx) for make in self.inspection.flow_inspectors) if i is not None]
        return InspectedSession(DpiSession(ctx, self.limits), inspectors, self.inspection.threats)

    def _problem(self, problem: Problem) -> None:
        if self._on_problem is not None:
            self._on_problem(problem)
        threats = self.inspection.threats
        if threats is not None:
            self._captured(threats.on_problem(problem), None, None)

    def feed(self, frame: Frame) -> list[Flow]:
        """Process one frame; returns the flows it (or the time it carries) ended."""
        self._frame = frame
        pkt = self.decoder.decode(frame)
        if pkt is None:
            return []
        self.packets += 1
        table = self.table
        ended = table.add(pkt)
        flow = table.last_flow
        forensics: Forensics | None = None
        if flow is not None:
            forensics = self._forensics.get(id(flow))
            if forensics is None:
                forensics = self._forensics[id(flow)] = Forensics()
            snap = self.frame_snap
            if snap is not None and len(frame.data) > snap:
                forensics.add(Frame(frame.number, frame.ts, frame.linktype, bytes(frame.data[:snap]), frame.orig_len))
            else:
                forensics.add(frame)
        threats = self.inspection.threats
        if threats is not None:
            self._captured(threats.on_packet(pkt, flow, table.last_direction), flow, forensics)
        if flow is not None:
            session = flow.dpi
            if isinstance(session, InspectedSession) and session.findings:
                found, session.findings = session.findings, []
                self._captured(found, flow, forensics)
        for done in ended:
            self._ended(done)
        return ended

    def finish(self) -> list[Flow]:
        """End of input: every remaining flow ends (and is inspected to its end)."""
        self.decoder.finish()
        ended = self.table.flush()
        for flow in ended:
            self._ended(flow)
        return ended

    def _ended(self, flow: Flow) -> None:
        forensics = self._forensics.pop(id(flow), None)
        found: list[Finding] = []
        session = flow.dpi
        if isinstance(session, InspectedSession):
            found, session.findings = session.findings, []
        threats = self.inspection.threats
        if threats is not None:
            found.extend(threats.on_flow_end(flow))
        self._captured(found, flow, forensics)

    def _captured(self, found: list[Finding], flow: Flow | None, forensics: Forensics | None) -> None:
        if not found:
            return
        if forensics is not None:
            frames = forensics.snapshot()
        elif self._frame is not None:
            frames = [self._frame]
        else:
            frames = []
        current = self._frame
        for finding in found:
            if not finding.frame and current is not None:
                # Inspectors that work from bytes or events do not know the packet: it is this one.
                finding = replace(finding, ts=current.ts, frame=current.number)
            self.findings.append(CapturedFinding(finding, flow, frames))
