"""The policy's `inspection` block: sensors and WAF level validate and round-trip; groups name only known sensors."""

from __future__ import annotations

import pytest

from podwall.core.errors import InputError
from podwall.policy.formats.podwall_yaml import dump_policy, parse_policy

HEAD = "apiVersion: podwall.io/v1\nkind: Policy\nmetadata: {name: t}\nspec:\n"
GROUP = (
    "  groups:\n"
    "    - name: nv.web.demo\n"
    "      criteria: [{key: service, op: '=', value: web.demo}]\n"
    "      dlp: {status: true, settings: [{name: %s, action: deny}]}\n"
    "      waf: {status: true, settings: [{name: %s}]}\n"
)
SENSORS = (
    "  inspection:\n"
    "    waf: {paranoia: %s, threshold: 7}\n"
    "    dlpSensors:\n"
    "      - {name: sensor.apikey, rules: [{name: key, patterns: [{op: regex, value: 'sk_[a-z0-9]{24}'}]}]}\n"
    "    wafSensors:\n"
    "      - {name: sensor.noadmin, rules: [{name: admin, patterns: [{value: '/admin', context: url}]}]}\n"
)


def test_inspection_block_round_trips() -> None:
    """Custom sensors, the WAF level and the groups that name them survive a dump and a re-read."""
    policy = parse_policy(HEAD + SENSORS % 2 + GROUP % ("sensor.apikey", "sensor.noadmin"))
    assert policy.spec.inspection.waf.paranoia == 2
    assert [s.name for s in policy.spec.inspection.dlpSensors] == ["sensor.apikey"]
    assert parse_policy(dump_policy(policy)) == policy


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(HEAD + GROUP % ("sensor.nope", "crs"), "unknown DLP sensor 'sensor.nope'", id="unknown-dlp"),
        pytest.param(HEAD + GROUP % ("sensor.ssn", "sensor.x"), "unknown WAF sensor 'sensor.x'", id="unknown-waf"),
        pytest.param(HEAD + SENSORS % 5, "spec.inspection.waf.paranoia", id="paranoia-out-of-range"),
        pytest.param(
            HEAD + SENSORS.replace("sensor.apikey", "sensor.ssn") % 1,
            "sensor 'sensor.ssn' is built in",
            id="builtin-name",
        ),
    ],
)
def test_bad_inspection_is_rejected_with_its_place(text: str, expected: str) -> None:
    """A bad sensor reference or setting is an error naming the field (and the line) where it is."""
    with pytest.raises(InputError) as info:
        parse_policy(text, "p.yaml")
    assert expected in str(info.value)
    assert "line " in str(info.value)


def test_inspection_set_twice_is_a_conflict() -> None:
    """Two documents that both set `inspection` are refused rather than silently merged."""
    doc = HEAD + SENSORS % 1
    with pytest.raises(InputError, match="inspection is already set in document 0"):
        parse_policy(doc + "---\n" + doc)
