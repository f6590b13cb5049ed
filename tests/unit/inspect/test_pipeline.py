"""The inspecting engine: per-flow inspectors see every byte and L7 event, findings carry their frames."""

from __future__ import annotations

from dataclasses import dataclass, field

from podwall.core.events import Severity
from podwall.core.types import Direction
from podwall.datapath.io.pcap import Frame
from podwall.dpi.base import DetectContext, L7Event
from podwall.inspect.findings import Action, Finding, FindingKind
from podwall.inspect.pipeline import FORENSIC_HEAD_BYTES, InspectingEngine, Inspection
from podwall.lab.synth import tcp_exchange

REQUEST = b"GET /a HTTP/1.1\r\nHost: shop\r\n\r\n"
RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


@dataclass
class Recorder:
    """Records what it is given and reports one finding per client request event."""

    seen: dict[Direction, bytearray] = field(default_factory=lambda: {d: bytearray() for d in Direction})
    events: list[L7Event] = field(default_factory=list)
    finished: bool = False

    @property
    def wants_bytes(self) -> bool:
        return True

    def on_bytes(self, direction: Direction, data: bytes, datagram: bool) -> list[Finding]:
        self.seen[direction] += data
        return []

    def on_event(self, event: L7Event) -> list[Finding]:
        self.events.append(event)
        if event.kind != "request":
            return []
        path = event.fields.get("path")
        return [Finding(FindingKind.WAF, "waf.test", "test", Severity.LOW, Action.ALERT, f"saw {path}")]

    def finish(self) -> list[Finding]:
        self.finished = True
        return []


def _frames(n_requests: int) -> list[Frame]:
    pairs = [(REQUEST.replace(b"/a", f"/{i}".encode()), RESPONSE) for i in range(n_requests)]
    raw = tcp_exchange("10.0.0.1", 40000, "10.0.0.2", 80, 1.0, pairs)
    return [Frame(i + 1, ts, 1, data, len(data)) for i, (ts, data) in enumerate(raw)]


def _run(frames: list[Frame]) -> tuple[InspectingEngine, list[Recorder]]:
    made: list[Recorder] = []

    def factory(ctx: DetectContext) -> Recorder:
        made.append(Recorder())
        return made[-1]

    engine = InspectingEngine(Inspection(flow_inspectors=[factory]))
    for frame in frames:
        engine.feed(frame)
    engine.finish()
    return engine, made


def test_inspector_sees_every_byte_after_the_dpi_decided() -> None:
    """A per-flow inspector receives both directions' whole streams, not only the bytes the DPI needed."""
    _, made = _run(_frames(40))
    assert len(made) == 1
    rec = made[0]
    assert bytes(rec.seen[Direction.C2S]).count(b"GET /") == 40
    assert bytes(rec.seen[Direction.S2C]).count(b"HTTP/1.1 200") == 40
    assert rec.finished


def test_every_event_reaches_the_inspector_and_findings_are_collected() -> None:
    """All 40 requests (more than the DPI keeps for display) reach the inspector, each finding is collected."""
    engine, made = _run(_frames(40))
    requests = [e for e in made[0].events if e.kind == "request"]
    assert [e.fields["path"] for e in requests] == [f"/{i}" for i in range(40)]
    assert [c.finding.message for c in engine.findings] == [f"saw /{i}" for i in range(40)]
    assert all(c.flow is not None and c.flow.app == "http" for c in engine.findings)


def test_findings_carry_the_flow_head_and_the_triggering_frame() -> None:
    """A finding's frames start with the flow's first ~2 KB and end with the frame that triggered it."""
    frames = _frames(40)
    engine, _ = _run(frames)
    last = engine.findings[-1]
    numbers = [f.number for f in last.frames]
    assert numbers[0] == 1  # the SYN: the head is kept
    assert sum(len(f.data) for f in last.frames if f.number < 10) <= FORENSIC_HEAD_BYTES + 1600
    trigger_request = max(f.number for f in frames if b"GET /39 " in f.data)
    assert trigger_request in numbers
    assert numbers == sorted(numbers)
