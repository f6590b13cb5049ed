"""End to end through `podwall analyze` / `podwall check` with the inspectors on: attacks in the corpus
captures are reported, DLP attaches to a group's boundary as the policy says, each finding is recorded
as an event with its masked match and a pcap of its packets, and blocking findings make `check` exit 1."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from podwall.datapath.io.pcap import CaptureReader
from podwall.datapath.io.pcapwriter import PcapWriter
from podwall.lab.synth import tcp_exchange
from podwall.store.events import EventStore
from tests.conftest import corpus_dir
from tests.inspect_shop import INVENTORY, shop_policy

NDPI = corpus_dir() / "dpi" / "ndpi"
needs_corpus = pytest.mark.skipif(not NDPI.is_dir(), reason=f"corpus not found at {NDPI} (set PODWALL_CORPUS)")

CARD = b"4111 1111 1111 1111"


def podwall(*args: str | Path) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "podwall.cli.main", *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ), timeout=300)


def _post(server: str, port: int, body: bytes) -> bytes:
    head = f"POST /charge HTTP/1.1\r\nHost: pay\r\nContent-Type: text/plain\r\nContent-Length: {len(body)}\r\n\r\n"
    return head.encode() + body


@pytest.fixture
def shop(tmp_path: Path) -> Path:
    """A capture: web sends a card number to pay (DLP on) and the same to logs (DLP off)."""
    ok = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
    frames = tcp_exchange("10.1.0.10", 40001, "10.1.0.20", 8080, 1.0, [(_post("pay", 8080, b"card=" + CARD), ok)])
    frames += tcp_exchange("10.1.0.10", 40002, "10.1.0.30", 8080, 2.0, [(_post("logs", 8080, b"n=" + CARD), ok)])
    path = tmp_path / "shop.pcap"
    with PcapWriter(path) as writer:
        for ts, data in sorted(frames):
            writer.write(ts, data)
    (tmp_path / "inventory.yaml").write_text(INVENTORY)
    return path


@needs_corpus
def test_analyze_reports_the_sql_injection_and_the_dns_tunnel(tmp_path: Path) -> None:
    """The nDPI captures with attacks give a WAF SQLi finding and a DNS tunnelling finding, each with a pcap."""
    pcaps = tmp_path / "pcaps"
    res = podwall(
        "analyze", NDPI / "sql_injection.pcap", NDPI / "dns-tunnel-iodine.pcap", "--json", "--pcap-dir", pcaps
    )
    assert res.returncode == 0, res.stderr
    findings = json.loads(res.stdout)["findings"]
    ids = {f["id"] for f in findings}
    assert "threat.dns_tunnel" in ids
    sqli = [f for f in findings if f["type"] == "waf" and f["id"].startswith(("waf.crs.942", "waf.podwall.sqli"))]
    assert sqli and all(f["action"] == "deny" and f["l7"]["method"] == "GET" for f in sqli)
    assert all(f["location"] for f in sqli)
    for f in findings:
        with CaptureReader(f["pcap"]) as reader:
            numbers = len(list(reader))
        assert numbers >= 1


@needs_corpus
@pytest.mark.parametrize("capture", ["http.pcapng", "dns.pcap", "443-curl.pcap", "resp.pcap"])
def test_ordinary_captures_give_no_attack_finding(capture: str) -> None:
    """Ordinary traffic raises neither WAF blocks nor tunnelling findings."""
    res = podwall("analyze", NDPI / capture, "--json")
    assert res.returncode == 0, res.stderr
    findings = json.loads(res.stdout)["findings"]
    assert not [f for f in findings if f["action"] == "deny" or "tunnel" in f["id"]], findings


def test_check_applies_dlp_at_the_group_boundary_and_records_events(shop: Path, tmp_path: Path) -> None:
    """A card sent to the DLP-guarded group is a deny finding (exit 1), stored masked with its pcap;
    the same card sent to a group without DLP is not reported."""
    policy = tmp_path / "policy.yaml"
    policy.write_text(shop_policy("deny"))
    db = tmp_path / "events.db"
    pcaps = tmp_path / "pcaps"
    inventory = tmp_path / "inventory.yaml"
    res = podwall("check", shop, "-i", inventory, "-p", policy, "--json", "--db", db, "--pcap-dir", pcaps)
    assert res.returncode == 1, res.stdout + res.stderr
    doc = json.loads(res.stdout)
    assert doc["violations"] == 0
    dlp = [f for f in doc["findings"] if f["type"] == "dlp"]
    assert [(f["server_group"], f["match"], f["action"]) for f in dlp] == [
        ("nv.pay.shop", "4111 **** **** 1111", "deny")
    ]
    events = EventStore(str(db)).query(type="dlp")
    assert len(events) == 1
    event = events[0]
    assert event.detection is not None and event.detection.match == "4111 **** **** 1111"
    assert "4111 1111 1111 1111" not in event.model_dump_json()
    assert event.pcap is not None and Path(event.pcap).is_file()
    with CaptureReader(event.pcap) as reader:
        frames = [f.data for f in reader]
    assert any(CARD in data for data in frames)


def test_check_with_an_allow_setting_alerts_without_failing(shop: Path, tmp_path: Path) -> None:
    """With `action: allow` the finding is an alert: recorded, but `check` exits 0 (no violation, nothing blocking)."""
    policy = tmp_path / "policy.yaml"
    policy.write_text(shop_policy("allow"))
    res = podwall("check", shop, "-i", tmp_path / "inventory.yaml", "-p", policy, "--json", "--no-store")
    assert res.returncode == 0, res.stdout + res.stderr
    dlp = [f for f in json.loads(res.stdout)["findings"] if f["type"] == "dlp"]
    assert [f["action"] for f in dlp] == ["alert"]


def test_no_inspect_turns_the_inspectors_off(shop: Path, tmp_path: Path) -> None:
    """--no-inspect reads the traffic without inspectors: no findings, exit 0."""
    policy = tmp_path / "policy.yaml"
    policy.write_text(shop_policy("deny"))
    res = podwall("check", shop, "-i", tmp_path / "inventory.yaml", "-p", policy, "--no-store", "--no-inspect")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "0 finding(s)" in res.stdout


@pytest.mark.parametrize(
    ("db", "env", "expected"),
    [
        pytest.param("{tmp}/a/events.db", None, "{tmp}/a/pcaps", id="db-file"),
        pytest.param("sqlite:///{tmp}/b/events.db", None, "{tmp}/b/pcaps", id="sqlite-url"),
        pytest.param(None, "{tmp}/c/env.db", "{tmp}/c/pcaps", id="podwall-db-env"),
        pytest.param("postgresql+psycopg://u@h/db", None, "{tmp}/xdg/podwall/pcaps", id="server-db-uses-xdg"),
        pytest.param(None, None, "{tmp}/xdg/podwall/pcaps", id="default-store"),
    ],
)
def test_default_pcap_dir_lies_beside_the_event_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, db: str | None, env: str | None, expected: str
) -> None:
    """Without --pcap-dir, finding pcaps go next to the SQLite store the command writes to."""
    from podwall.cli.inspecting import default_pcap_dir

    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    if env is None:
        monkeypatch.delenv("PODWALL_DB", raising=False)
    else:
        monkeypatch.setenv("PODWALL_DB", env.format(tmp=tmp_path))
    got = default_pcap_dir(db.format(tmp=tmp_path) if db is not None else None)
    assert got == Path(expected.format(tmp=tmp_path))
