"""The passive monitor with inspection on: findings the policy attaches become events as frames arrive,
with their packets saved; without inspection the same traffic gives no finding."""

from __future__ import annotations

from pathlib import Path

from podwall.core.events import EventType
from podwall.datapath.io.pcap import CaptureReader, Frame
from podwall.enforce.monitor import Monitor
from podwall.inventory.loader import load_inventory
from podwall.lab.synth import tcp_exchange
from podwall.policy.formats.podwall_yaml import parse_policy
from tests.inspect_shop import INVENTORY, shop_policy

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"


def _frames() -> list[Frame]:
    card = b"POST /charge HTTP/1.1\r\nHost: pay\r\nContent-Length: 24\r\n\r\ncard=4111 1111 1111 1111"
    sqli = b"GET /item?id=1%27%20OR%20%271%27%3D%271 HTTP/1.1\r\nHost: pay\r\n\r\n"
    raw = tcp_exchange("10.1.0.10", 40001, "10.1.0.20", 8080, 1.0, [(card, OK), (sqli, OK)])
    return [Frame(i + 1, ts, 1, data, len(data)) for i, (ts, data) in enumerate(raw)]


def _monitor(tmp_path: Path, inspect: bool) -> Monitor:
    inv_file = tmp_path / "inventory.yaml"
    inv_file.write_text(INVENTORY)
    return Monitor.for_policy(
        parse_policy(shop_policy(waf=True)), load_inventory([inv_file]), inspect=inspect, pcap_dir=tmp_path / "pcaps"
    )


def test_monitor_records_attached_findings_with_pcaps(tmp_path: Path) -> None:
    """A card sent into the DLP group and an SQL injection into the WAF group are recorded while the
    connection is open; each event has the masked match or the WAF rule, and a readable pcap."""
    monitor = _monitor(tmp_path, inspect=True)
    frames = _frames()
    events = monitor.feed(frames[:-3])  # before the teardown: the connection is still open
    events += monitor.finish()
    dlp = [e for e in events if e.type is EventType.DLP]
    waf = [e for e in events if e.type is EventType.WAF and e.detection is not None and e.detection.action == "deny"]
    assert [e.detection.match for e in dlp if e.detection] == ["4111 **** **** 1111"]
    assert waf and all(e.server.group == "nv.pay.shop" for e in waf)
    assert monitor.stats.findings == len([e for e in events if e.detection is not None])
    for event in dlp + waf:
        assert event.pcap is not None
        with CaptureReader(event.pcap) as reader:
            assert len(list(reader)) >= 3


def test_monitor_without_inspection_reports_no_finding(tmp_path: Path) -> None:
    """With inspection off the monitor only judges the connection (allowed here): no event at all."""
    monitor = _monitor(tmp_path, inspect=False)
    events = monitor.feed(_frames()) + monitor.finish()
    assert events == []
