"""Inspection in the enforcer's worker: a WAF-guarded connection stays in userspace, an SQL injection
into it is cut (deny mark, server reset, event marked enforced) in protect mode and only recorded in
monitor mode, and an ordinary request passes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from podwall.core.events import Event, EventType
from podwall.datapath.io.nfqueue import NF_REPEAT, QueueMessage
from podwall.datapath.io.pcap import CaptureReader
from podwall.enforce.inline_inspect import PCAP_BUDGET, InlineInspection
from podwall.enforce.reset import ResetTarget
from podwall.enforce.worker import Decision, Worker, WorkerConfig
from podwall.inspect.setup import InspectOptions, Inspectors
from podwall.inventory.loader import parse_inventory_text
from podwall.inventory.resolver import Resolver
from podwall.lab.synth import tcp_exchange
from podwall.policy.model import Policy
from tests.unit.enforce.worker_testkit import ALLOW_MARK, DENY_MARK, HOOK_FORWARD, INVENTORY, FakeQueue

SQLI = b"GET /item?id=1%27%20OR%20%271%27%3D%271 HTTP/1.1\r\nHost: api\r\n\r\n"
PLAIN = b"GET /item?id=42 HTTP/1.1\r\nHost: api\r\n\r\n"
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


def _policy(mode: str, l7: bool = False) -> Policy:
    groups: list[dict[str, Any]] = [
        {"name": f"nv.{s}.shop", "criteria": [{"key": "service", "op": "=", "value": s}], "mode": mode}
        for s in ("web", "cache", "api")
    ]
    groups[2]["waf"] = {"status": True, "settings": [{"name": "crs", "action": "deny"}]}
    rules: list[dict[str, Any]] = [
        {"id": 1, "from": "nv.web.shop", "to": "nv.api.shop", "ports": ["tcp/8080"], "applications": ["http"]}
    ]
    if l7:
        rules[0]["l7"] = {"http": {"methods": ["GET"]}}
    spec = {"defaultMode": mode, "groups": groups, "rules": rules}
    return Policy.model_validate({"metadata": {"name": "t"}, "spec": spec})


@pytest.fixture(scope="module")
def inspectors() -> dict[str, Inspectors]:
    return {mode: Inspectors(_policy(mode), InspectOptions(inline=True)) for mode in ("protect", "monitor")}


def _run(
    mode: str, inspectors: Inspectors, request: bytes, l7: bool = False, inline: InlineInspection | None = None
) -> tuple[list[Decision], list[Event], list[ResetTarget]]:
    inventory = parse_inventory_text(INVENTORY, "inv.yaml").inventory
    events: list[Event] = []
    resets: list[ResetTarget] = []
    worker = Worker(
        _policy(mode, l7),
        Resolver(inventory),
        WorkerConfig(ALLOW_MARK, DENY_MARK),
        sink=events.extend,
        resetter=resets.append,
        inspection=inline or InlineInspection(inspectors),
    )
    frames = tcp_exchange("10.1.0.1", 40000, "10.1.0.5", 8080, 1.0, [(request, OK), (PLAIN, OK)])
    queue = FakeQueue()
    decisions: list[Decision] = []
    for i, (_, frame) in enumerate(frames):
        decisions += worker.handle(queue, [QueueMessage(i + 1, 0x0800, HOOK_FORWARD, frame[14:], 0)])
    events.extend(worker.take_events())
    return decisions, events, resets


def test_protect_cuts_an_sql_injection_into_a_waf_group(inspectors: dict[str, Inspectors]) -> None:
    """The packet carrying the injection gets the deny mark, the server a reset, and the WAF event says enforced."""
    decisions, events, resets = _run("protect", inspectors["protect"], SQLI)
    assert (NF_REPEAT, DENY_MARK) in decisions
    assert (NF_REPEAT, ALLOW_MARK) not in decisions  # guarded: never handed to the kernel's fast path
    waf = [e for e in events if e.type is EventType.WAF and e.detection is not None and e.detection.action == "deny"]
    assert waf and all(e.detection is not None and e.detection.enforced for e in waf)
    assert resets


def test_monitor_records_the_injection_and_lets_it_pass(inspectors: dict[str, Inspectors]) -> None:
    """In monitor mode the same traffic is never denied; the finding is recorded, not enforced."""
    decisions, events, resets = _run("monitor", inspectors["monitor"], SQLI)
    assert (NF_REPEAT, DENY_MARK) not in decisions and not resets
    waf = [e for e in events if e.type is EventType.WAF]
    assert waf and not any(e.detection is not None and e.detection.enforced for e in waf)


def test_an_ordinary_request_passes_in_protect_mode(inspectors: dict[str, Inspectors]) -> None:
    """Inspected but clean: no deny, no reset, no blocking finding."""
    decisions, events, resets = _run("protect", inspectors["protect"], PLAIN)
    assert (NF_REPEAT, DENY_MARK) not in decisions and not resets
    assert not [e for e in events if e.detection is not None and e.detection.action == "deny"]


def test_a_guarded_connection_judged_per_request_is_not_denied_at_its_end(inspectors: dict[str, Inspectors]) -> None:
    """With an L7 rule (GET only) on the guarded connection, ordinary GETs pass to the connection's end:
    the end of parsing is not mistaken for a request the rule refuses."""
    decisions, events, resets = _run("protect", inspectors["protect"], PLAIN, l7=True)
    assert (NF_REPEAT, DENY_MARK) not in decisions and not resets
    assert not [e for e in events if e.verdict is not None and e.verdict.action == "deny"]


def test_findings_leave_a_pcap_with_the_triggering_packet(inspectors: dict[str, Inspectors], tmp_path: Path) -> None:
    """Each WAF event points to a pcap under the worker's pcap directory that holds the guarded
    connection's packets up to the one carrying the injection, which a capture reader reads back."""
    inline = InlineInspection(inspectors["protect"], pcap_dir=tmp_path / "pcaps")
    _, events, _ = _run("protect", inspectors["protect"], SQLI, inline=inline)
    waf = [e for e in events if e.type is EventType.WAF]
    assert waf and all(e.pcap for e in waf)
    for event in waf:
        assert event.pcap is not None and Path(event.pcap).parent == tmp_path / "pcaps"
        with CaptureReader(Path(event.pcap)) as reader:
            payloads = [frame.data for frame in reader]
        assert payloads and all(data[9] == 6 for data in payloads)  # IPv4 TCP, the guarded connection's packets
        assert any(SQLI in data for data in payloads), "the injection's packet is in the pcap"
    assert inline.pcaps is not None
    assert inline.pcaps.written == len({e.pcap for e in waf}) and inline.pcaps.bytes > 0
    # The packets hold what the events mask: private directory, owner-only files.
    assert (tmp_path / "pcaps").stat().st_mode & 0o777 == 0o700
    assert all(Path(str(e.pcap)).stat().st_mode & 0o777 == 0o600 for e in waf)


def test_pcaps_stay_within_the_budget_and_events_survive_a_full_disk(
    inspectors: dict[str, Inspectors], tmp_path: Path
) -> None:
    """Past PCAP_BUDGET files in a minute no pcap is written (the event says none); an unwritable
    directory loses the pcaps but not the events."""
    ticks = iter([0.0] * 4 + [61.0] * 100)
    inline = InlineInspection(inspectors["protect"], pcap_dir=tmp_path / "p", clock=lambda: next(ticks))
    assert inline.pcaps is not None
    inline.pcaps.minute = (0.0, PCAP_BUDGET)  # the minute's budget is spent
    _, events, _ = _run("protect", inspectors["protect"], SQLI, inline=inline)
    waf = [e for e in events if e.type is EventType.WAF]
    assert waf and not any(e.pcap for e in waf) and inline.pcaps.skipped == len(waf)
    blocked = tmp_path / "file"
    blocked.write_text("not a directory")
    inline = InlineInspection(inspectors["protect"], pcap_dir=blocked / "pcaps")
    _, events, _ = _run("protect", inspectors["protect"], SQLI, inline=inline)
    waf = [e for e in events if e.type is EventType.WAF]
    assert inline.pcaps is not None
    assert waf and not any(e.pcap for e in waf) and inline.pcaps.written == 0


def test_an_existing_pcap_directory_is_made_private(inspectors: dict[str, Inspectors], tmp_path: Path) -> None:
    """A pcap directory made with looser rights (an earlier version, by hand) becomes 0700 when pcaps go in."""
    loose = tmp_path / "pcaps"
    loose.mkdir(mode=0o755)
    loose.chmod(0o755)
    inline = InlineInspection(inspectors["protect"], pcap_dir=loose)
    _, events, _ = _run("protect", inspectors["protect"], SQLI, inline=inline)
    assert any(e.pcap for e in events)
    assert loose.stat().st_mode & 0o777 == 0o700
