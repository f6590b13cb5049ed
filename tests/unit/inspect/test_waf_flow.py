"""The WAF as a per-flow pipeline inspector: HTTP events paired into transactions, findings with their frames."""

from __future__ import annotations

import pytest

from podwall.core.types import PROTO_TCP, PROTO_UDP, Direction
from podwall.datapath.io.pcap import Frame
from podwall.dpi.base import DetectContext, L7Event
from podwall.inspect.findings import Action, FindingKind
from podwall.inspect.pipeline import CapturedFinding, InspectingEngine, Inspection
from podwall.inspect.waf.crs import DEFAULT_RULES_DIR
from podwall.inspect.waf.engine import WafEngine
from podwall.inspect.waf.flow import MAX_PENDING, WafFlowInspector, waf_flow_inspector
from podwall.lab.synth import tcp_exchange

pytestmark = pytest.mark.skipif(not DEFAULT_RULES_DIR.is_dir(), reason="Debian's modsecurity-crs is not installed")

HEAD = b"Host: shop.example\r\nUser-Agent: Mozilla/5.0\r\nAccept: text/html\r\n\r\n"
BENIGN = b"GET /products?page=2 HTTP/1.1\r\n" + HEAD
SQLI = b"GET /item?id=1%27%20OR%201=1-- HTTP/1.1\r\n" + HEAD
OK = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok"


@pytest.fixture(scope="module")
def engine() -> WafEngine:
    return WafEngine(paranoia=1)


def _frames(pairs: list[tuple[bytes, bytes]]) -> list[Frame]:
    raw = tcp_exchange("10.0.0.1", 40000, "10.0.0.2", 80, 1.0, pairs)
    return [Frame(i + 1, ts, 1, data, len(data)) for i, (ts, data) in enumerate(raw)]


def _run(engine: WafEngine, frames: list[Frame], action: Action = Action.DENY) -> list[CapturedFinding]:
    pipeline = InspectingEngine(Inspection(flow_inspectors=[waf_flow_inspector(engine, action_on_block=action)]))
    for frame in frames:
        pipeline.feed(frame)
    pipeline.finish()
    return pipeline.findings


EXCHANGES = [
    pytest.param([(SQLI, OK)], 200, id="sqli-with-response"),
    pytest.param([(BENIGN, OK), (SQLI, OK), (BENIGN, OK)], 200, id="sqli-amid-keep-alive"),
    pytest.param([(BENIGN, OK), (SQLI, b"")], None, id="sqli-response-never-comes"),
]


@pytest.mark.parametrize(("pairs", "status"), EXCHANGES)
def test_sqli_request_in_a_tcp_flow_gives_waf_findings(
    engine: WafEngine, pairs: list[tuple[bytes, bytes]], status: int | None
) -> None:
    """Only the SQLi transaction of the flow yields findings: kind waf, denied, located at ARGS:id, with frames."""
    found = _run(engine, _frames(pairs))
    assert found, "the SQLi request produced no finding"
    findings = [c.finding for c in found]
    assert all(f.kind == FindingKind.WAF and f.action == Action.DENY for f in findings)
    assert {f.l7["path"] for f in findings} == {"/item"}
    assert any(f.id.startswith("waf.crs.942") and f.location == "ARGS:id" for f in findings)
    assert {f.l7.get("status") for f in findings} == {status}  # paired with its own response (or none)
    assert all(c.flow is not None and c.flow.app == "http" and c.frames for c in found)
    trigger = max(f.number for f in _frames(pairs) if b"id=1%27" in f.data)
    assert all(trigger in {fr.number for fr in c.frames} for c in found)


def test_benign_flow_gives_no_finding(engine: WafEngine) -> None:
    """A keep-alive flow of ordinary requests produces no WAF finding."""
    assert _run(engine, _frames([(BENIGN, OK), (BENIGN, OK)])) == []


def test_action_on_block_replaces_deny(engine: WafEngine) -> None:
    """A blocked transaction's findings carry the factory's action_on_block."""
    found = _run(engine, _frames([(SQLI, OK)]), action=Action.ALERT)
    assert found and all(c.finding.action == Action.ALERT for c in found)


@pytest.mark.parametrize(
    ("proto", "made"), [pytest.param(PROTO_TCP, True, id="tcp"), pytest.param(PROTO_UDP, False, id="udp")]
)
def test_factory_makes_inspectors_for_tcp_only(engine: WafEngine, proto: int, made: bool) -> None:
    """HTTP runs over TCP: the factory declines UDP flows, and its inspectors want no stream bytes."""
    inspector = waf_flow_inspector(engine)(DetectContext(proto, 40000, 80))
    assert (inspector is not None) == made
    if inspector is not None:
        assert inspector.wants_bytes is False
        assert inspector.on_bytes(Direction.C2S, SQLI, False) == []


def _h2_request(stream: int | None, path: str) -> L7Event:
    fields: dict[str, object] = {
        "method": "GET",
        "path": path,
        "authority": "api.example",
        "headers": [("user-agent", "Mozilla/5.0"), ("accept", "*/*")],
    }
    if stream is not None:
        fields["stream_id"] = stream
    return L7Event("http2", "request", Direction.C2S, fields)


def _h2_response(stream: int, status: int) -> L7Event:
    return L7Event("http2", "response", Direction.S2C, {"stream_id": stream, "status": status, "headers": []})


def test_http2_pairs_by_stream_id(engine: WafEngine) -> None:
    """Interleaved HTTP/2 streams: each request is inspected when its own stream's response arrives."""
    inspector = WafFlowInspector(engine)
    assert inspector.on_event(_h2_request(1, "/item?id=1%27%20OR%201=1--")) == []
    assert inspector.on_event(_h2_request(3, "/ok")) == []
    assert inspector.on_event(_h2_response(3, 204)) == []
    found = inspector.on_event(_h2_response(1, 500))
    assert found and {f.l7["status"] for f in found} == {500}
    assert any(f.location == "ARGS:id" for f in found)
    assert inspector.finish() == []


def test_http2_request_without_stream_id_is_inspected_at_once(engine: WafEngine) -> None:
    """An HTTP/2 request event without a stream id cannot be paired, so it is inspected alone immediately."""
    found = WafFlowInspector(engine).on_event(_h2_request(None, "/item?id=1%27%20OR%201=1--"))
    assert found and all("status" not in f.l7 for f in found)


def _h1_request(path: str) -> L7Event:
    headers = [("host", "shop.example"), ("user-agent", "Mozilla/5.0"), ("accept", "text/html")]
    return L7Event("http", "request", Direction.C2S, {"method": "GET", "path": path, "headers": headers})


def test_interim_response_does_not_complete_the_request(engine: WafEngine) -> None:
    """A 100 Continue is skipped: the request is paired with the final response that follows."""
    inspector = WafFlowInspector(engine)
    inspector.on_event(_h1_request("/item?id=1%27%20OR%201=1--"))
    assert inspector.on_event(L7Event("http", "response", Direction.S2C, {"status": 100})) == []
    found = inspector.on_event(L7Event("http", "response", Direction.S2C, {"status": 403}))
    assert found and {f.l7["status"] for f in found} == {403}


def test_waiting_requests_are_bounded(engine: WafEngine) -> None:
    """Past MAX_PENDING unanswered requests the oldest is inspected alone; the rest are at finish."""
    inspector = WafFlowInspector(engine)
    attack = _h1_request("/item?id=1%27%20OR%201=1--")
    benign = _h1_request("/ok")
    assert inspector.on_event(attack) == []
    for _ in range(MAX_PENDING - 1):
        assert inspector.on_event(benign) == []
    evicted = inspector.on_event(benign)
    assert evicted and {f.l7["path"] for f in evicted} == {"/item"}
    assert inspector.finish() == []
