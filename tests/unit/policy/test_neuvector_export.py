"""NeuVector NvSecurityRule / NvClusterSecurityRule export and the round trips
(export -> import, import -> export -> import), including a property test on random policies.
"""

from __future__ import annotations

from typing import cast

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from podwall.core.errors import InputError
from podwall.policy.formats.neuvector import (
    TargetExtras,
    export_neuvector,
    parse_neuvector,
    read_neuvector,
)
from podwall.policy.model import Criterion, Group, Metadata, Mode, Policy, PolicySpec, Rule, SensorConfig, SensorSetting
from tests.unit.policy.neuvector_samples import (
    DOCS_EXPORT,
    GLOBAL_RULES,
    HAND_WRITTEN,
    WITH_SENSORS,
    canon,
)

# --- export ---------------------------------------------------------------------------------------


def crit(key: str, op: str, value: str) -> Criterion:
    return Criterion(key=key, op=op, value=value)  # type: ignore[arg-type]


def sample_policy() -> Policy:
    groups = [
        Group(
            name="nv.web.shop",
            mode="monitor",
            criteria=[crit("service", "=", "web"), crit("namespace", "=", "shop")],
            dlp=SensorConfig(status=True, settings=[SensorSetting(name="sensor.ssn", action="deny")]),
            waf=SensorConfig(status=False, settings=[SensorSetting(name="sensor.sqli", action="allow")]),
            comment="front end",
        ),
        Group(
            name="nv.api.shop", mode="protect", criteria=[crit("service", "=", "api"), crit("namespace", "=", "shop")]
        ),
        Group(name="nv.db.shop", criteria=[crit("service", "=", "db"), crit("namespace", "=", "shop")]),
        Group(name="admins", criteria=[crit("app", "prefix", "admin"), crit("namespace", "!=", "kube-system")]),
        Group(
            name="web-any-ns",
            mode="discover",
            criteria=[crit("service", "=", "web"), crit("image", "contains", "nginx")],
        ),
        Group(
            name="partners", criteria=[crit("address", "=", "203.0.113.0/24"), crit("address", "=", "*.example.com")]
        ),
    ]
    rules = [
        Rule(id=1, name="web to api", from_="nv.web.shop", to="nv.api.shop", ports=["tcp/8080"], applications=["http"]),
        Rule(
            id=2,
            name="api to db",
            from_="nv.api.shop",
            to="nv.db.shop",
            ports=["tcp/5432"],
            applications=["postgresql"],
        ),
        Rule(id=3, name="partners in", from_="partners", to="nv.api.shop", ports=["tcp/443"], applications=["tls"]),
        Rule(id=4, name="internet in", from_="external", to="nv.web.shop", ports=["tcp/80", "tcp/443"]),
        Rule(
            id=5, name="no ssh", from_="admins", to="containers", ports=["tcp/22"], applications=["ssh"], action="deny"
        ),
        Rule(id=10001, name="dns", from_="containers", to="nodes", ports=["udp/53", "tcp/53"], applications=["dns"]),
        Rule(
            id=110001,
            name="pac",
            from_="web-any-ns",
            to="external",
            ports=["icmp"],
            priority=7,
            origin="policy-as-code",
        ),
    ]
    return Policy(metadata=Metadata(name="shop"), spec=PolicySpec(groups=groups, rules=rules))


def test_export_then_import_is_the_same_policy() -> None:
    """Export -> import gives the same groups, criteria, modes, DLP/WAF and rule set (IDs aside)."""
    policy = sample_policy()
    again = parse_neuvector(export_neuvector(policy))
    assert canon(again) == canon(policy)
    assert {r.origin for r in again.spec.rules} == {"policy-as-code"}


def test_export_then_import_cluster_scoped() -> None:
    """With cluster_scoped every CR is an NvClusterSecurityRule, and the round trip still holds."""
    text = export_neuvector(sample_policy(), cluster_scoped=True)
    kinds = {item["kind"] for item in yaml.safe_load(text)["items"]}
    assert kinds == {"NvClusterSecurityRule"}
    assert canon(parse_neuvector(text)) == canon(sample_policy())


@pytest.mark.parametrize(
    "source", [DOCS_EXPORT, GLOBAL_RULES, HAND_WRITTEN, WITH_SENSORS], ids=["docs", "global", "hand", "sensors"]
)
def test_import_export_import_fixed_point(source: str) -> None:
    """Import -> export -> import gives the same policy and extras; a second export is the same text."""
    first = read_neuvector(source)
    text = export_neuvector(first.policy, extras=first.extras)
    second = read_neuvector(text)
    assert canon(second.policy) == canon(first.policy)
    assert dict(second.extras) == dict(first.extras)
    assert export_neuvector(second.policy, extras=second.extras) == text


def test_export_shape() -> None:
    """The export is a kind: List of one CR per group with NeuVector's field names and spellings."""
    out = yaml.safe_load(export_neuvector(sample_policy()))
    assert (out["apiVersion"], out["kind"]) == ("v1", "List")
    items = {item["metadata"]["name"]: item for item in out["items"]}
    web = items["nv.web.shop"]
    assert (web["kind"], web["metadata"]["namespace"]) == ("NvSecurityRule", "shop")
    assert web["spec"]["target"]["policymode"] == "Monitor"
    assert web["spec"]["target"]["selector"]["criteria"] == [
        {"key": "service", "op": "=", "value": "web.shop"},
        {"key": "domain", "op": "=", "value": "shop"},
    ]
    assert web["spec"]["dlp"] == {"status": True, "settings": [{"name": "sensor.ssn", "action": "deny"}]}
    egress = web["spec"]["egress"][0]
    assert (egress["name"], egress["applications"], egress["ports"]) == ("web to api", ["HTTP"], "tcp/8080")
    assert items["web-any-ns"]["kind"] == "NvClusterSecurityRule"
    assert items["web-any-ns"]["spec"]["target"]["selector"]["criteria"][0]["value"] == "web.*"
    assert items["web-any-ns"]["spec"]["egress"][0]["priority"] == 7
    assert items["nv.api.shop"]["spec"]["ingress"][0]["selector"]["name"] == "partners"
    assert items["nv.web.shop"]["spec"]["ingress"][0]["selector"] == {"name": "external", "criteria": []}
    nodes = items["nodes"]["spec"]
    assert items["nodes"]["kind"] == "NvClusterSecurityRule"
    assert nodes["target"]["selector"] == {"name": "nodes", "criteria": []}
    assert nodes["ingress"][0]["selector"] == {
        "name": "containers",
        "criteria": [{"key": "container", "op": "=", "value": "*"}],
    }


def test_unnamed_rules_get_neuvector_style_names() -> None:
    """Rules without a name are written as <group>-<direction>-<n>, and then keep that name."""
    policy = sample_policy()
    rules = [r.model_copy(update={"name": None}) if r.id == 2 else r for r in policy.spec.rules]
    unnamed = Policy(metadata=policy.metadata, spec=policy.spec.model_copy(update={"rules": rules}))
    again = parse_neuvector(export_neuvector(unnamed))
    names = {r.name for r in again.spec.rules if (r.from_, r.to) == ("nv.api.shop", "nv.db.shop")}
    assert names == {"nv.api.shop-egress-0"}


def test_disabled_rules_are_left_out() -> None:
    """A disabled rule is not exported: the CRD cannot say disabled, and leaving it out keeps the meaning."""
    policy = sample_policy()
    rules = [r.model_copy(update={"disabled": True}) if r.id == 1 else r for r in policy.spec.rules]
    text = export_neuvector(Policy(metadata=policy.metadata, spec=policy.spec.model_copy(update={"rules": rules})))
    assert "web to api" not in text
    assert len(parse_neuvector(text).spec.rules) == len(rules) - 1


def test_inexpressible_policy_is_rejected() -> None:
    """Zones, L7 matchers and staged rules cannot be written as CRDs: every one is reported."""
    base = sample_policy()
    policy = Policy.model_validate(
        {
            "metadata": {"name": "x"},
            "spec": {
                "groups": [g.model_dump(by_alias=True, exclude_none=True) for g in base.spec.groups]
                + [{"name": "zone.cde", "members": ["nv.db.shop"]}],
                "rules": [
                    {"id": 1, "from": "nv.web.shop", "to": "zone.cde"},
                    {
                        "id": 2,
                        "from": "nv.web.shop",
                        "to": "nv.api.shop",
                        "applications": ["http"],
                        "l7": {"http": {"methods": ["GET"]}},
                    },
                    {"id": 3, "from": "nv.web.shop", "to": "nv.db.shop", "staged": True},
                ],
            },
        }
    )
    with pytest.raises(InputError) as info:
        export_neuvector(policy)
    messages = " | ".join(p.message for p in info.value.problems)
    assert "no zones" in messages and "L7" in messages and "staged" in messages


def test_nodes_mode_is_carried_as_extra() -> None:
    """The `nodes` policymode (process rules only in NeuVector) is kept aside and written back."""
    text = GLOBAL_RULES.replace("name: containers\n      policymode: null", "name: nodes\n      policymode: Protect")
    text = text.replace("name: containers, namespace", "name: nodes, namespace").replace(
        "name: containers-ingress-0", "name: nodes-in"
    )
    imported = read_neuvector(text)
    assert imported.extras["nodes"] == TargetExtras(
        process=({"action": "deny", "name": "ssh", "path": "/bin/ssh"},), nodes_mode="Protect"
    )
    out = yaml.safe_load(export_neuvector(imported.policy, extras=imported.extras))
    nodes = next(i for i in out["items"] if i["metadata"]["name"] == "nodes")
    assert nodes["spec"]["target"]["policymode"] == "Protect"


# --- property: random policies survive export -> import ------------------------------------------

_LABELS = st.sampled_from(["app", "tier", "team"])
_VALUES = st.sampled_from(["web", "api", "db", "a.b", "x*"])
_OPS = st.sampled_from(["=", "!=", "prefix", "contains", "regex"])


@st.composite
def policies(draw: st.DrawFn) -> Policy:
    n = draw(st.integers(1, 4))
    groups: list[Group] = []
    for i in range(n):
        criteria = [crit(draw(_LABELS), draw(_OPS), draw(_VALUES)) for _ in range(draw(st.integers(0, 2)))]
        if draw(st.booleans()):
            criteria.append(crit("service", draw(st.sampled_from(["=", "!="])), draw(_VALUES)))
        namespaces = draw(st.lists(st.sampled_from(["shop", "ops", "q*"]), max_size=2, unique=True))
        criteria += [crit("namespace", "=", ns) for ns in namespaces]
        if not criteria:
            criteria = [crit("app", "=", f"g{i}")]
        mode = cast(Mode | None, draw(st.sampled_from([None, "discover", "monitor", "protect"])))
        groups.append(Group(name=f"g{i}", criteria=criteria, mode=mode))
    names = [g.name for g in groups] + ["external", "containers"]
    rules = []
    for k in range(draw(st.integers(0, 6))):
        rules.append(
            Rule(
                id=k + 1,
                name=f"r{k}",
                from_=draw(st.sampled_from(names)),
                to=draw(st.sampled_from(names)),
                ports=draw(st.sampled_from([["any"], ["tcp/80"], ["udp/53", "tcp/53"], ["icmp"], ["tcp/1-1024"]])),
                applications=draw(st.sampled_from([["any"], ["http"], ["tls", "grpc"], ["amqp"], ["mqtt"]])),
                action=draw(st.sampled_from(["allow", "deny"])),
            )
        )
    return Policy(metadata=Metadata(name="p"), spec=PolicySpec(groups=groups, rules=rules))


@settings(max_examples=60, deadline=None)
@given(policies())
def test_round_trip_property(policy: Policy) -> None:
    """Any policy of groups, modes and plain rules comes back the same after export -> import."""
    assert canon(parse_neuvector(export_neuvector(policy))) == canon(policy)
