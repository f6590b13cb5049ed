"""Located validation errors for newer fields: L7 matchers, zones, tiers, priorities, origins, staged, hits."""

from __future__ import annotations

import textwrap

import pytest

from podwall.core.errors import InputError, Problem
from podwall.policy.formats.podwall_yaml import dump_policy, parse_policy
from podwall.policy.model import Policy

HEADER = "apiVersion: podwall.io/v1\nkind: Policy\nmetadata:\n  name: test\n"
GROUPS = """
groups:
  - {name: a, criteria: [{key: service, op: '=', value: a}]}
  - {name: b, criteria: [{key: service, op: '=', value: b}]}
"""


def doc(spec: str, extra_groups: tuple[str, ...] = ()) -> str:
    """A one-document policy with groups a and b (plus `extra_groups`, one flow mapping each) and `spec`."""
    groups = textwrap.dedent(GROUPS).strip("\n") + "".join(f"\n  - {g}" for g in extra_groups)
    body = groups + "\n" + textwrap.dedent(spec).strip("\n")
    return HEADER + "spec:\n" + textwrap.indent(body, "  ") + "\n"


def problems_of(text: str) -> list[Problem]:
    with pytest.raises(InputError) as info:
        parse_policy(text, "p.yaml")
    return info.value.problems


CASES: list[tuple[str, str, str, str]] = [
    (
        "l7-bad-regex",
        "rules: [{id: 1, from: a, to: b, l7: {http: {paths: [{regex: 'a('}]}}}]",
        "spec.rules[0].l7.http.paths[0].regex",
        "invalid regular expression",
    ),
    (
        "l7-header-bad-regex",
        "rules: [{id: 1, from: a, to: b, l7: {http: {headers: [{name: x, regex: '['}]}}}]",
        "spec.rules[0].l7.http.headers[0].regex",
        "invalid regular expression",
    ),
    (
        "l7-unknown-key",
        "rules: [{id: 1, from: a, to: b, l7: {http: {method: [GET]}}}]",
        "spec.rules[0].l7.http.method",
        "unknown field 'method'; did you mean 'methods'?",
    ),
    (
        "l7-unknown-protocol",
        "rules: [{id: 1, from: a, to: b, l7: {mongo: {}}}]",
        "spec.rules[0].l7.mongo",
        "unknown field 'mongo'",
    ),
    (
        "l7-empty",
        "rules: [{id: 1, from: a, to: b, l7: {}}]",
        "spec.rules[0].l7",
        "l7 needs at least one of",
    ),
    (
        "l7-path-two-kinds",
        "rules: [{id: 1, from: a, to: b, l7: {http: {paths: [{exact: /a, prefix: /b}]}}}]",
        "spec.rules[0].l7.http.paths[0]",
        "exactly one of exact, prefix or regex",
    ),
    (
        "l7-bad-sql-kind",
        "rules: [{id: 1, from: a, to: b, l7: {sql: {kinds: [drop]}}}]",
        "spec.rules[0].l7.sql.kinds[0]",
        "invalid value 'drop'",
    ),
    (
        "l7-bad-sni",
        "rules: [{id: 1, from: a, to: b, l7: {tls: {sni: ['a.*.com']}}}]",
        "spec.rules[0].l7.tls.sni[0]",
        "invalid name",
    ),
    (
        "zone-undefined-member",
        "GROUPS:{name: zone.x, members: [a, nope]}",
        "spec.groups[2].members[1]",
        "undefined group 'nope'",
    ),
    (
        "zone-cycle",
        "GROUPS:{name: zone.x, members: [zone.y]}|{name: zone.y, members: [zone.x]}",
        "spec.groups[2].members",
        "zones contain each other",
    ),
    (
        "zone-and-criteria",
        "GROUPS:{name: zone.x, members: [a], criteria: [{key: service, op: '=', value: c}]}",
        "spec.groups[2]",
        "not both",
    ),
    (
        "priority-on-user-rule",
        "rules: [{id: 1, from: a, to: b, priority: 3}]",
        "spec.rules[0]",
        "priority orders only admin, baseline and policy-as-code rules",
    ),
    (
        "priority-negative",
        "rules: [{id: 1, from: a, to: b, tier: admin, action: deny, priority: -1}]",
        "spec.rules[0].priority",
        "out of range",
    ),
    (
        "origin-federated-range",
        "rules: [{id: 5, from: a, to: b, origin: federated}]",
        "spec.rules[0].origin",
        "origin federated needs an ID in 100001-109999",
    ),
    (
        "origin-pac-range",
        "rules: [{id: 100001, from: a, to: b, origin: policy-as-code}]",
        "spec.rules[0].origin",
        "origin policy-as-code needs an ID in 110001-119999",
    ),
    (
        "admin-allow",
        "rules: [{id: 1, from: a, to: b, tier: admin, action: allow}]",
        "spec.rules[0]",
        "not valid for admin-tier rules: expected accept, deny, pass",
    ),
    (
        "baseline-pass",
        "rules: [{id: 1, from: a, to: b, tier: baseline, action: Pass}]",
        "spec.rules[0]",
        "not valid for baseline-tier rules",
    ),
    (
        "pass-without-tier",
        "rules: [{id: 1, from: a, to: b, action: pass}]",
        "spec.rules[0]",
        "not valid for rules without a tier",
    ),
    (
        "unknown-tier",
        "rules: [{id: 1, from: a, to: b, tier: top}]",
        "spec.rules[0].tier",
        "invalid value 'top'",
    ),
    (
        "bad-hits",
        "rules: [{id: 1, from: a, to: b, hits: -2}]",
        "spec.rules[0].hits",
        "hits must be a count",
    ),
    (
        "dlp-bad-action",
        "GROUPS:{name: c, criteria: [{key: service, op: '=', value: c}], "
        "dlp: {status: true, settings: [{name: cc, action: block}]}}",
        "spec.groups[2].dlp.settings[0].action",
        "invalid value 'block'",
    ),
    (
        "waf-unknown-field",
        "GROUPS:{name: c, criteria: [{key: service, op: '=', value: c}], waf: {enabled: true}}",
        "spec.groups[2].waf.enabled",
        "unknown field 'enabled'",
    ),
    ("strict-not-bool", "strict: maybe", "spec.strict", "expected true or false"),
]


@pytest.mark.parametrize(("spec", "path", "message"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_located_error(spec: str, path: str, message: str) -> None:
    """Each fault is reported with the file, document and field path, saying what is wrong."""
    extra = tuple(spec.removeprefix("GROUPS:").split("|")) if spec.startswith("GROUPS:") else ()
    text = doc("rules: []" if extra else spec, extra)
    problems = problems_of(text)
    found = [p for p in problems if p.location.path == path]
    assert found, [(p.location.path, p.message) for p in problems]
    assert message in found[0].message
    assert found[0].location.file == "p.yaml"
    assert found[0].location.document == 0


def test_full_round_trip_of_new_fields() -> None:
    """Zones, sensors, tiers, priorities, L7 matchers, staged, strict and hits dump and read back unchanged."""
    text = doc(
        """
        strict: true
        rules:
          - {id: 1, from: a, to: zone.z, tier: admin, priority: 2, action: Accept}
          - {id: 2, from: a, to: b, tier: baseline, action: deny, staged: true}
          - {id: 110001, from: b, to: a, priority: 7,
             l7: {http: {methods: [get], paths: [{prefix: /api}, {regex: '/v[0-9]+'}], hosts: ['*.x.io'],
                         headers: [{name: X-A, value: '1'}, {name: x-b}]},
                  grpc: {services: [s.S], methods: [M]}, dns: {names: ['*.svc']}, redis: {commands: [get]},
                  sql: {kinds: [select, ddl]}, tls: {sni: [a.io]}}}
        """,
        (
            "{name: zone.z, members: [a, b], mode: protect}",
            "{name: c, criteria: [{key: service, op: '=', value: c}], "
            "dlp: {status: true, settings: [{name: sensor.creditcard, action: deny}]}, "
            "waf: {status: false, settings: [{name: crs, action: allow}]}}",
        ),
    )
    policy = parse_policy(text)
    again = parse_policy(dump_policy(policy, hits={1: 4}))
    assert again == policy.model_copy(
        update={"spec": policy.spec.model_copy(update={"rules": sorted(policy.spec.rules, key=lambda r: r.id)})}
    )
    assert "hits: 4" in dump_policy(policy, hits={1: 4})
    assert policy.spec.strict is True
    assert policy.group("zone.z") is not None and policy.group("zone.z").is_zone  # type: ignore[union-attr]
    assert policy.rule(1).action == "accept"  # type: ignore[union-attr]


def test_document_staged_applies_to_its_rules_only() -> None:
    """`spec.staged: true` in one document stages that document's rules and no others."""
    first = doc("rules: [{id: 1, from: a, to: b}]")
    second = "---\n" + HEADER + "spec:\n  staged: true\n  rules: [{id: 2, from: b, to: a}]\n"
    policy = parse_policy(first + second)
    assert {r.id: r.staged for r in policy.spec.rules} == {1: False, 2: True}


def test_example_policy_shows_new_features() -> None:
    """examples/policy.yaml validates and shows tiers, an L7 rule and a zone."""
    from pathlib import Path

    from podwall.policy.formats.podwall_yaml import load_policy

    policy: Policy = load_policy(Path(__file__).parents[3] / "examples" / "policy.yaml")
    assert any(g.is_zone for g in policy.spec.groups)
    assert any(r.tier == "admin" for r in policy.spec.rules)
    assert any(r.tier == "baseline" for r in policy.spec.rules)
    assert any(r.l7 is not None for r in policy.spec.rules)
