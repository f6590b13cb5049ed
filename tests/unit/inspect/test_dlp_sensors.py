"""DLP sensor definitions: validation with located errors, hyperscan failures mapped to their pattern,
the YAML loader's accepted shapes, and engines built from a policy group's `dlp` settings."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from podwall.core.errors import InputError, Location
from podwall.inspect.dlp import (
    DlpEngine,
    Sensor,
    action_for,
    builtin_sensors,
    engine_for_config,
    parse_sensors,
    sensor_catalog,
)
from podwall.inspect.dlp.loader import load_sensors
from podwall.inspect.dlp.model import parse_sensor
from podwall.inspect.findings import Action
from podwall.policy.model import SensorConfig


def _sensor(**over: Any) -> dict[str, Any]:
    pattern = {"key": "pattern", "op": "regex", "value": "AKIA[0-9A-Z]{16}", "context": "packet"}
    base: dict[str, Any] = {"name": "sensor.keys", "comment": "keys", "rules": [{"name": "aws", "patterns": [pattern]}]}
    base.update(over)
    return base


def _rules(*patterns: dict[str, Any], name: str = "r", **extra: Any) -> list[dict[str, Any]]:
    return [{"name": name, "patterns": list(patterns), **extra}]


INVALID = [
    ("bad-op", _sensor(rules=_rules({"op": "contains", "value": "x"})), "rules[0].patterns[0].op", "invalid value"),
    ("bad-context", _sensor(rules=_rules({"value": "x", "context": "cookie"})), "rules[0].patterns[0].context",
     "invalid value 'cookie'"),
    ("bad-key", _sensor(rules=_rules({"key": "name", "value": "x"})), "rules[0].patterns[0].key", "invalid value"),
    ("empty-regex", _sensor(rules=_rules({"value": ""})), "rules[0].patterns[0].value", "at least 1 character"),
    ("blank-regex", _sensor(rules=_rules({"value": "  "})), "rules[0].patterns[0].value", "blank"),
    ("nul-in-regex", _sensor(rules=_rules({"value": "a\x00b"})), "rules[0].patterns[0].value", r"\x00"),
    ("no-patterns", _sensor(rules=_rules()), "rules[0].patterns", "must not be empty"),
    ("no-rules", _sensor(rules=[]), "rules", "must not be empty"),
    ("only-have-not", _sensor(rules=_rules({"op": "!regex", "value": "x"})), "rules[0]", "only '!regex'"),
    ("duplicate-rule", _sensor(rules=_rules({"value": "x"}) * 2), "rules", "defined twice"),
    ("bad-sensor-name", _sensor(name="sensor keys"), "name", "invalid sensor name"),
    ("bad-rule-name", _sensor(rules=_rules({"value": "x"}, name="a/b")), "rules[0].name", "invalid rule name"),
    ("bad-verify", _sensor(rules=_rules({"value": "x"}, verify="iban")), "rules[0].verify", "invalid value"),
    ("unknown-field", _sensor(owner="me"), "owner", "unknown field 'owner'"),
    ("missing-rules", {"name": "sensor.x"}, "rules", "missing required field 'rules'"),
]  # fmt: skip


@pytest.mark.parametrize("data,path,message", [c[1:] for c in INVALID], ids=[c[0] for c in INVALID])
def test_invalid_sensors_are_rejected_with_a_located_message(data: dict[str, Any], path: str, message: str) -> None:
    """Each structural fault is reported at its field path inside the named sensor, with a clear message."""
    sensor, problems = parse_sensor(data, "s.yaml")
    assert sensor is None
    assert [(p.location.file, p.location.path) for p in problems] == [("s.yaml", path)]
    assert message in problems[0].message
    if isinstance(data.get("name"), str):
        assert problems[0].location.obj == data["name"]


HS_ERRORS = [
    ("lookbehind", "(?<=card)[0-9]{16}", "Zero-width assertions"),
    ("backreference", "(a)\\1", "Back-references"),
    ("matches-empty", "x*", "empty buffer"),
    ("unbalanced", "(abc", "Missing close parenthesis"),
]


@pytest.mark.parametrize("regex,message", [c[1:] for c in HS_ERRORS], ids=[c[0] for c in HS_ERRORS])
def test_hyperscan_refusals_name_the_sensor_rule_and_regex(tmp_path: Path, regex: str, message: str) -> None:
    """A pattern hyperscan cannot compile becomes an InputError naming its sensor, rule, regex and the reason."""
    good = {"value": "AKIA[0-9A-Z]{16}"}
    sensor = Sensor.model_validate(
        _sensor(rules=[*_rules(good, name="ok"), *_rules(good, {"value": regex}, name="bad")])
    )
    with pytest.raises(InputError) as exc:
        DlpEngine([sensor], cache_dir=tmp_path, source="keys.yaml")
    (problem,) = exc.value.problems
    assert problem.location == Location(file="keys.yaml", obj="sensor.keys", path="rules[1] (bad).patterns[1].value")
    assert regex in problem.message and message.lower() in problem.message.lower()
    assert list(tmp_path.iterdir()) == []  # nothing cached for a set that does not compile


def test_every_failing_pattern_is_reported_at_once(tmp_path: Path) -> None:
    """Two bad patterns in two sensors give two problems in one error."""
    bad1 = Sensor.model_validate(_sensor(name="sensor.a", rules=_rules({"value": "(?<=x)y"})))
    bad2 = Sensor.model_validate(_sensor(name="sensor.b", rules=_rules({"value": "(b)\\1"}, name="q")))
    with pytest.raises(InputError) as exc:
        DlpEngine([*builtin_sensors(), bad1, bad2], cache_dir=tmp_path)
    assert [(p.location.obj, p.location.path) for p in exc.value.problems] == [
        ("sensor.a", "rules[0] (r).patterns[0].value"),
        ("sensor.b", "rules[0] (q).patterns[0].value"),
    ]


def test_pcre_syntax_python_lacks_is_accepted(tmp_path: Path) -> None:
    """Patterns are hyperscan's (PCRE) syntax: `\\x{41}` and POSIX classes compile and match."""
    sensor = Sensor.model_validate(_sensor(rules=_rules({"value": "\\x{41}KIA[[:upper:][:digit:]]{16}"})))
    engine = DlpEngine([sensor], cache_dir=tmp_path)
    assert [f.id for f in engine.scan(b"key=AKIAABCDEFGHIJ0123456 ")] == ["dlp.sensor.keys/r"]


YAML_SHAPES = [
    ("one-sensor", "name: sensor.keys\nrules:\n- name: aws\n  patterns:\n  - {key: pattern, op: regex, value: AKIA}\n"),
    ("list", "- name: sensor.keys\n  rules:\n  - name: aws\n    patterns: [{value: 'AKIA'}]\n"),
    ("sensors-key", "sensors:\n- name: sensor.keys\n  rules: [{name: aws, patterns: [{value: AKIA}]}]\n"),
    ("neuvector-crd", "apiVersion: neuvector.com/v1\nkind: NvDlpSecurityRule\nmetadata: {name: sensor.keys}\n"
                      "spec:\n  sensor:\n    name: sensor.keys\n    rules: [{name: aws, patterns: [{value: AKIA}]}]\n"),
    ("neuvector-list", "kind: List\nitems:\n- kind: NvDlpSecurityRule\n  spec:\n    sensor:\n      name: sensor.keys\n"
                       "      rules: [{name: aws, patterns: [{value: AKIA}]}]\n"),
    ("two-documents", "name: sensor.keys\nrules: [{name: aws, patterns: [{value: AKIA}]}]\n---\n"
                      "name: sensor.other\nrules: [{name: x, patterns: [{value: zz}]}]\n"),
]  # fmt: skip


@pytest.mark.parametrize("text", [t for _, t in YAML_SHAPES], ids=[i for i, _ in YAML_SHAPES])
def test_sensor_files_in_each_accepted_shape(text: str) -> None:
    """podwall lists, single sensors and NeuVector's sensor objects all load to the same first sensor."""
    sensors = parse_sensors(text, "s.yaml")
    assert sensors[0].name == "sensor.keys"
    assert sensors[0].rules[0].name == "aws"
    assert sensors[0].rules[0].patterns[0].context == "packet"


BAD_FILES = [
    ("yaml-syntax", "name: [unclosed\n", Location(file="s.yaml"), "YAML syntax error"),
    ("unquoted-have-not", "name: a\nrules: [{name: r, patterns: [{op: !regex, value: x}]}]\n", Location(file="s.yaml"),
     "quote '!regex'"),
    ("unquoted-have-not-block", "name: a\nrules:\n- name: r\n  patterns:\n  - op: !regex\n    value: x\n",
     Location(file="s.yaml"), "quote '!regex'"),
    ("scalar-document", "just text\n", Location(file="s.yaml", document=0), "expected a sensor"),
    ("other-kind", "kind: NvSecurityRule\nspec: {}\n", Location(file="s.yaml", document=0), "unsupported kind"),
    ("duplicate-sensor", "- {name: a, rules: [{name: r, patterns: [{value: x}]}]}\n"
                         "- {name: a, rules: [{name: r, patterns: [{value: y}]}]}\n",
     Location(file="s.yaml", document=0, obj="a", path="[1]"), "sensor defined twice"),
    ("nothing", "---\n", Location(file="s.yaml"), "no sensor defined"),
    ("field-error-in-second-document", "name: ok\nrules: [{name: r, patterns: [{value: x}]}]\n---\n"
                                       "name: bad\nrules: [{name: r, patterns: [{value: x, context: cookie}]}]\n",
     Location(file="s.yaml", document=1, obj="bad", path="rules[0].patterns[0].context"), "invalid value 'cookie'"),
]  # fmt: skip


@pytest.mark.parametrize("text,where,message", [c[1:] for c in BAD_FILES], ids=[c[0] for c in BAD_FILES])
def test_bad_sensor_files_are_located(text: str, where: Location | None, message: str) -> None:
    """A faulty sensors file raises InputError whose problem says where (file, document, sensor, path) and what."""
    with pytest.raises(InputError) as exc:
        parse_sensors(text, "s.yaml")
    problem = exc.value.problems[0]
    if where is not None:
        assert problem.location == where
    assert message in problem.message


def test_load_sensors_reports_unreadable_files(tmp_path: Path) -> None:
    """A missing file or a binary one is a located InputError, not a crash."""
    with pytest.raises(InputError, match="No such file"):
        load_sensors(tmp_path / "absent.yaml")
    binary = tmp_path / "bin.yaml"
    binary.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(InputError, match="not UTF-8"):
        load_sensors(binary)


def test_custom_sensors_may_not_take_a_builtin_name() -> None:
    """The catalog holds the built-ins plus custom sensors; reusing `sensor.creditcard` is an error."""
    custom = Sensor.model_validate(_sensor())
    assert list(sensor_catalog([custom])) == ["sensor.creditcard", "sensor.ssn", "sensor.keys"]
    clash = Sensor.model_validate(_sensor(name="sensor.creditcard"))
    with pytest.raises(InputError, match="built-in sensor"):
        sensor_catalog([clash], "s.yaml")


def test_engine_for_a_group_dlp_block(tmp_path: Path) -> None:
    """`dlp: {status: true, settings: [...]}` builds an engine with each setting's action; off gives None."""
    config = SensorConfig.model_validate(
        {
            "status": True,
            "settings": [{"name": "sensor.creditcard", "action": "deny"}, {"name": "sensor.keys", "action": "allow"}],
        }
    )
    engine = engine_for_config(config, [Sensor.model_validate(_sensor())], cache_dir=tmp_path)
    assert engine is not None
    assert [s.name for s in engine.sensors] == ["sensor.creditcard", "sensor.keys"]
    found = {f.id: f.action for f in engine.scan(b"4111111111111111 AKIA0123456789ABCDEF 123-45-6789")}
    assert found == {"dlp.sensor.creditcard/visa": Action.DENY, "dlp.sensor.keys/aws": Action.ALERT}
    assert engine_for_config(SensorConfig(status=False, settings=config.settings), cache_dir=tmp_path) is None
    assert engine_for_config(None) is None


def test_unknown_sensor_in_settings_is_located_at_the_group(tmp_path: Path) -> None:
    """A setting naming no known sensor is an InputError at the group's dlp.settings index."""
    config = SensorConfig.model_validate({"status": True, "settings": [{"name": "sensor.nope"}]})
    where = Location(file="policy.yaml", document=0, obj="nv.shop.default", path="spec.groups[2]")
    with pytest.raises(InputError) as exc:
        engine_for_config(config, cache_dir=tmp_path, where=where)
    (problem,) = exc.value.problems
    assert problem.location.path == "spec.groups[2].dlp.settings[0].name"
    assert "sensor.nope" in problem.message and "sensor.creditcard" in problem.message


ACTIONS = [("allow", Action.ALERT), ("deny", Action.DENY)]


@pytest.mark.parametrize("setting,action", ACTIONS, ids=[a for a, _ in ACTIONS])
def test_setting_actions(setting: str, action: Action) -> None:
    """NeuVector's `allow` only alerts; `deny` asks the enforcer to cut the connection."""
    assert action_for(setting) is action


def test_unknown_setting_action_is_refused() -> None:
    """An action other than allow/deny is a ValueError naming it."""
    with pytest.raises(ValueError, match="drop"):
        action_for("drop")


@pytest.mark.parametrize(
    ("kind", "fields", "found"),
    [
        pytest.param("request_body", {"stream_id": 1, "body": b"token=AKIA0123456789ABCDEF"}, True, id="h2-body"),
        pytest.param("request_body", {"stream_id": 1, "body": b"token=none"}, False, id="h2-body-clean"),
        pytest.param("request", {"stream_id": 1, "path": "/AKIA0123456789ABCDEF", "headers": []}, False, id="url-only"),
    ],
)
def test_body_rules_see_http2_request_bodies(tmp_path: Path, kind: str, fields: dict[str, Any], found: bool) -> None:
    """A body-context rule judges the body an HTTP/2 request sends after its headers (`request_body`)."""
    from podwall.core.types import Direction
    from podwall.dpi.base import L7Event

    sensor = Sensor.model_validate(_sensor(rules=_rules({"value": "AKIA[0-9A-Z]{16}", "context": "body"})))
    config = SensorConfig.model_validate({"status": True, "settings": [{"name": "sensor.keys", "action": "deny"}]})
    engine = engine_for_config(config, [sensor], cache_dir=tmp_path)
    assert engine is not None
    hits = engine.scan_message(L7Event("http2", kind, Direction.C2S, fields))
    assert bool(hits) is found
    assert all(h.action is Action.DENY and "AKIA0123456789ABCDEF" not in str(h.match) for h in hits)
