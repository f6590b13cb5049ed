"""Custom WAF sensors (NeuVector's shape): validation with located errors, hyperscan matching per context."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from podwall.core.errors import InputError
from podwall.inspect.waf.http_request import HttpRequest
from podwall.inspect.waf.sensors import SensorSet, load_sensors, parse_sensors


def _sensor(patterns: list[dict[str, Any]], name: str = "shop", rule: str = "r1") -> dict[str, Any]:
    return {"name": name, "comment": "test", "rules": [{"name": rule, "patterns": patterns}]}


def _pat(value: str, context: str = "packet", op: str = "regex") -> dict[str, str]:
    return {"key": "pattern", "op": op, "value": value, "context": context}


REQ = HttpRequest(
    "POST",
    "/admin/export?fmt=csv",
    headers=(("Host", "shop"), ("X-Debug", "true")),
    body=b"token=internal-42",
)

MATCHING = [
    pytest.param([_pat(r"/admin/", "url")], "url", id="url"),
    pytest.param([_pat(r"x-debug:\s*true", "header")], "header", id="header-caseless"),
    pytest.param([_pat(r"internal-\d+", "body")], "body", id="body"),
    pytest.param([_pat(r"^POST /admin", "packet")], "packet", id="packet"),
    pytest.param([_pat(r"/admin/", "url"), _pat(r"token=", "body")], "url", id="and-of-patterns"),
    pytest.param([_pat(r"/admin/", "url"), _pat(r"x-admin-key", "header", "!regex")], "url", id="negated-absent"),
]


@pytest.mark.parametrize(("patterns", "context"), MATCHING)
def test_rule_fires_when_all_patterns_hold(patterns: list[dict[str, Any]], context: str) -> None:
    """A rule fires when every regex matches its context and no !regex does; the hit names sensor/rule."""
    hits = SensorSet(parse_sensors(_sensor(patterns))).match(REQ)
    assert [(h.id, h.context) for h in hits] == [("waf.sensor.shop/r1", context)]


NOT_MATCHING = [
    pytest.param([_pat(r"/admin/", "body")], id="wrong-context"),
    pytest.param([_pat(r"/admin/", "url"), _pat(r"nothere", "body")], id="one-pattern-missing"),
    pytest.param([_pat(r"/admin/", "url"), _pat(r"x-debug", "header", "!regex")], id="negated-present"),
]


@pytest.mark.parametrize("patterns", NOT_MATCHING)
def test_rule_does_not_fire_otherwise(patterns: list[dict[str, Any]]) -> None:
    """A missing positive pattern or a present negated one keeps the rule silent."""
    assert SensorSet(parse_sensors(_sensor(patterns))).match(REQ) == []


BAD = [
    pytest.param(_sensor([_pat("(unclosed", "url")]), "rules.0.patterns.0.value", id="bad-regex"),
    pytest.param(_sensor([_pat("x", "cookie")]), "rules.0.patterns.0.context", id="bad-context"),
    pytest.param(_sensor([_pat("x", "url", "contains")]), "rules.0.patterns.0.op", id="bad-op"),
    pytest.param(_sensor([_pat("x", "url", "!regex")]), "at least one `regex`", id="only-negated"),
    pytest.param({"name": "s", "rules": []}, "rules", id="no-rules"),
    pytest.param({"name": "bad name!", "rules": [{"name": "r", "patterns": [_pat("x")]}]}, "name", id="bad-name"),
    pytest.param({**_sensor([_pat("x")]), "action": "deny"}, "action", id="unknown-field"),
    pytest.param([_sensor([_pat("x")]), _sensor([_pat("y")])], "more than once", id="duplicate-sensor"),
]


@pytest.mark.parametrize(("data", "needle"), BAD)
def test_invalid_sensors_are_rejected_with_location(data: Any, needle: str) -> None:
    """Every fault is an InputError naming the file, the sensor and the field."""
    with pytest.raises(InputError) as info:
        parse_sensors(data, "sensors.yaml")
    text = str(info.value)
    assert "sensors.yaml" in text and needle in text


def test_load_sensors_reads_list_and_wrapper_forms(tmp_path: Path) -> None:
    """A file may hold one sensor, a list, or `sensors: [...]`."""
    path = tmp_path / "s.yaml"
    path.write_text(
        "sensors:\n"
        "  - name: a\n    rules:\n      - name: r\n        patterns:\n"
        "          - {key: pattern, op: regex, value: 'wp-login', context: url}\n"
    )
    sensors = load_sensors(path)
    assert [s.name for s in sensors] == ["a"]
    hits = SensorSet(sensors).match(HttpRequest("GET", "/wp-login.php"))
    assert [h.id for h in hits] == ["waf.sensor.a/r"]


def test_load_sensors_reports_yaml_and_io_errors(tmp_path: Path) -> None:
    """Broken YAML and missing files are InputErrors with the path."""
    broken = tmp_path / "b.yaml"
    broken.write_text("name: [unclosed\n")
    for path in (broken, tmp_path / "missing.yaml"):
        with pytest.raises(InputError) as info:
            load_sensors(path)
        assert str(path) in str(info.value)


def test_empty_sensor_set_matches_nothing() -> None:
    """No sensors, no hits (and no hyperscan database)."""
    sensors = SensorSet([])
    assert not sensors
    assert sensors.match(REQ) == []
