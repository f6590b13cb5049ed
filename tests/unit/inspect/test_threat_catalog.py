"""The threat catalog and its settings: every threat configurable, validated with located errors, documented."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from podwall.core.errors import InputError
from podwall.core.types import Direction
from podwall.inspect.findings import Action
from podwall.inspect.threats import (
    CATALOG,
    THREATS,
    ThreatEngine,
    ThreatInfo,
    ThreatSettings,
    load_threat_settings,
    threat_info,
)
from podwall.inspect.threats.dns import scan_dns
from podwall.inspect.threats.http import HttpWatch
from podwall.inspect.threats.tls import TlsWatch
from tests.unit.inspect.threat_kit import PacketDriver, syn_packet

DOCS = Path(__file__).resolve().parents[3] / "docs" / "threats.md"


def test_every_threat_has_settings_and_every_setting_a_threat() -> None:
    """The catalog and the settings model name the same threats, once each."""
    assert set(ThreatSettings.model_fields) == set(THREATS)
    assert len(THREATS) == len(CATALOG)
    assert all(info.id == f"threat.{info.key}" for info in CATALOG)


@pytest.mark.parametrize("info", CATALOG, ids=[i.key for i in CATALOG])
def test_defaults_are_enabled_with_a_known_action(info: ThreatInfo) -> None:
    """Each threat is on by default and asks for alert, drop or reset."""
    setting = ThreatSettings().of(threat_info(info.id).key)
    assert setting.enabled
    assert setting.act in (Action.ALERT, Action.DROP, Action.RESET)


def test_settings_override_per_threat() -> None:
    """A policy's threats section changes one threat's fields and leaves the rest at their defaults."""
    config = load_threat_settings(
        {"syn_flood": {"threshold": 10, "action": "reset"}, "dns_null_type": {"enabled": False}}
    )
    assert config.syn_flood.threshold == 10 and config.syn_flood.action == "reset"
    assert config.syn_flood.window == ThreatSettings().syn_flood.window
    assert not config.dns_null_type.enabled and config.dns_zone_transfer.enabled


@pytest.mark.parametrize(
    ("data", "path"),
    [
        ({"syn_flood": {"threshold": 0}}, "syn_flood.threshold"),
        ({"syn_flood": {"action": "deny"}}, "syn_flood.action"),
        ({"syn_flud": {}}, "syn_flud"),
        ({"icmp_tunnel": {"max_payloads": 3}}, "icmp_tunnel.max_payloads"),
        ({"dns_tunnel": {"window": -1}}, "dns_tunnel.window"),
    ],
    ids=["threshold-zero", "bad-action", "unknown-threat", "unknown-field", "negative-window"],
)
def test_bad_settings_are_rejected_with_their_location(data: dict[str, object], path: str) -> None:
    """Invalid settings raise InputError naming the file, the section and the field."""
    with pytest.raises(InputError) as err:
        load_threat_settings(data, "policy.yaml")
    (problem,) = err.value.problems
    assert problem.location.file == "policy.yaml" and problem.location.path == path
    assert str(problem).startswith("policy.yaml: threats: " + path)


def test_findings_carry_the_catalog_and_the_configured_action() -> None:
    """A finding has the catalog's ID, name and severity, and the action the settings ask for."""
    driver = PacketDriver(load_threat_settings({"syn_with_data": {"action": "reset"}}))
    (finding,) = driver.feed(syn_packet(1.0, b"\x0a\x00\x00\x01", 4000, b"\x0a\x00\x00\x02", 80, payload=b"x"))
    info = THREATS["syn_with_data"]
    assert (finding.id, finding.name, finding.severity) == (info.id, info.name, info.severity)
    assert finding.action is Action.RESET and driver.actions == [Action.RESET]


def _doc_rows() -> dict[str, list[str]]:
    rows: dict[str, list[str]] = {}
    for line in DOCS.read_text(encoding="utf-8").splitlines():
        m = re.match(r"\|\s*`(threat\.[a-z0-9_]+)`\s*\|(.*)", line)
        if m:
            rows[m.group(1)] = [cell.strip() for cell in m.group(2).split("|")]
    return rows


def test_docs_list_every_threat_with_its_defaults() -> None:
    """docs/threats.md has a row per threat with its name, severity and default action."""
    rows = _doc_rows()
    assert set(rows) == {info.id for info in CATALOG}
    defaults = ThreatSettings()
    for info in CATALOG:
        name, severity, action = rows[info.id][:3]
        assert name == info.name
        assert severity == info.severity.value
        assert action == defaults.of(info.key).action


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300), st.integers(min_value=1, max_value=40))
def test_stream_watchers_and_dns_scanner_take_any_bytes(data: bytes, split: int) -> None:
    """The TLS and HTTP watchers and the DNS scanner never raise, whatever the bytes and however split."""
    tls, http = TlsWatch(), HttpWatch()
    for i in range(0, len(data), split):
        piece = data[i : i + split]
        tls.feed(Direction.C2S if i % 2 else Direction.S2C, piece)
        http.feed(piece, float(i))
    scan_dns(data)


def test_engine_with_defaults_needs_no_settings() -> None:
    """ThreatEngine() runs with the documented defaults."""
    assert ThreatEngine().settings == ThreatSettings()
