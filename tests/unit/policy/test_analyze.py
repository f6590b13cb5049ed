"""Policy analysis: shadowed, redundant and conflicting rules, empty and unused groups, disabled rules."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from podwall.inventory.loader import load_inventory
from podwall.inventory.model import Inventory
from podwall.policy.analyze import (
    Finding,
    analyze_policy,
    evaluation_order,
    l7_covers,
    ports_cover,
    worst_severity,
)
from podwall.policy.model import L7Match, parse_port_spec
from tests.unit.policy.policy_testkit import crit, grp, make_policy, svc_grp

GROUPS = [
    svc_grp("web"),
    svc_grp("api"),
    svc_grp("db"),
    grp("db-any-ns", crit("service", "=", "db")),
    grp("labelled", crit("app", "=", "db-pod")),
    grp("outside", crit("address", "=", "203.0.113.0/24")),
    grp("outside-host", crit("address", "=", "203.0.113.7")),
    {"name": "zone.back", "members": ["nv.api.demo", "nv.db.demo"]},
]


def r(rule_id: int, frm: str, to: str, **extra: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"id": rule_id, "from": frm, "to": to}
    out.update(extra)
    return out


def kinds(findings: list[Finding], *only: str) -> set[tuple[str, tuple[int, ...]]]:
    return {(f.kind, f.rule_ids) for f in findings if not only or f.kind in only}


RULE_CASES = [
    pytest.param(
        [
            r(1, "containers", "nv.db.demo", ports=["tcp/5432"], action="deny"),
            r(2, "nv.api.demo", "nv.db.demo", ports=["tcp/5432"]),
        ],
        {("shadowed", (2, 1))},
        id="broad-deny-shadows-later-allow",
    ),
    pytest.param(
        [
            r(1, "nv.api.demo", "nv.db.demo", ports=["tcp/5000-5500"]),
            r(2, "nv.api.demo", "nv.db.demo", ports=["tcp/5432"]),
        ],
        {("redundant", (2, 1))},
        id="range-covers-port-same-action-redundant",
    ),
    pytest.param(
        [
            r(1, "nv.api.demo", "nv.db.demo", ports=["tcp/5000-5432"]),
            r(2, "nv.api.demo", "nv.db.demo", ports=["tcp/5433-6000"]),
            r(3, "nv.api.demo", "nv.db.demo", ports=["tcp/5400-5500"]),
        ],
        set(),
        id="union-of-two-rules-is-not-one-rule",
    ),
    pytest.param(
        [
            r(1, "nv.api.demo", "nv.db.demo", ports=["tcp/5000-5432", "tcp/5433-6000"]),
            r(2, "nv.api.demo", "nv.db.demo", ports=["tcp/5400-5500"]),
        ],
        {("redundant", (2, 1))},
        id="adjacent-ranges-of-one-rule-cover",
    ),
    pytest.param(
        [
            r(1, "nv.api.demo", "nv.db.demo", ports=["tcp/5432"], action="deny"),
            r(2, "nv.api.demo", "nv.db.demo", ports=["tcp/5432-5433"]),
        ],
        {("conflict", (1, 2))},
        id="partial-port-overlap-is-a-conflict",
    ),
    pytest.param(
        [
            r(1, "nv.api.demo", "nv.db.demo", ports=["udp/5432"], action="deny"),
            r(2, "nv.api.demo", "nv.db.demo", ports=["tcp/5432"]),
        ],
        set(),
        id="other-transport-no-finding",
    ),
    pytest.param(
        [
            r(1, "nv.api.demo", "nv.db.demo", applications=["any"], action="deny"),
            r(2, "nv.api.demo", "nv.db.demo", applications=["postgresql"]),
        ],
        {("shadowed", (2, 1))},
        id="any-application-covers-a-named-one",
    ),
    pytest.param(
        [
            r(1, "nv.api.demo", "nv.db.demo", applications=["mysql"], action="deny"),
            r(2, "nv.api.demo", "nv.db.demo", applications=["postgresql"]),
        ],
        set(),
        id="disjoint-applications-no-finding",
    ),
    pytest.param(
        [r(1, "nv.api.demo", "zone.back", action="deny"), r(2, "nv.api.demo", "nv.db.demo")],
        {("shadowed", (2, 1))},
        id="zone-covers-its-member",
    ),
    pytest.param(
        [r(1, "nv.api.demo", "nv.db.demo", action="deny"), r(2, "nv.api.demo", "zone.back")],
        {("conflict", (1, 2))},
        id="member-does-not-cover-zone",
    ),
    pytest.param(
        [r(1, "nv.web.demo", "db-any-ns", action="deny"), r(2, "nv.web.demo", "nv.db.demo")],
        {("shadowed", (2, 1))},
        id="fewer-criteria-cover-more",
    ),
    pytest.param(
        [r(1, "nv.web.demo", "labelled", action="deny"), r(2, "nv.web.demo", "nv.db.demo")],
        set(),
        id="unrelated-criteria-prove-nothing-without-inventory",
    ),
    pytest.param(
        [r(1, "nv.web.demo", "outside", action="deny"), r(2, "nv.web.demo", "outside-host")],
        {("shadowed", (2, 1))},
        id="cidr-covers-address",
    ),
    pytest.param(
        [r(1, "nv.web.demo", "external", action="deny"), r(2, "nv.web.demo", "outside")],
        set(),
        id="external-does-not-provably-cover-address-group",
    ),
    pytest.param(
        [
            r(1, "nv.web.demo", "nv.api.demo", action="deny"),
            r(2, "nv.web.demo", "nv.api.demo", l7={"http": {"methods": ["GET"]}}),
        ],
        {("shadowed", (2, 1))},
        id="rule-without-l7-covers-l7-rule",
    ),
    pytest.param(
        [
            r(1, "nv.web.demo", "nv.api.demo", l7={"http": {"methods": ["GET"]}}, action="deny"),
            r(2, "nv.web.demo", "nv.api.demo"),
        ],
        {("conflict", (1, 2))},
        id="l7-rule-does-not-cover-plain-rule",
    ),
    pytest.param(
        [
            r(1, "nv.web.demo", "nv.api.demo", l7={"http": {"paths": [{"prefix": "/api/"}]}}, action="deny"),
            r(2, "nv.web.demo", "nv.api.demo", l7={"http": {"paths": [{"exact": "/api/v1"}], "methods": ["GET"]}}),
        ],
        {("shadowed", (2, 1))},
        id="l7-prefix-covers-exact-path",
    ),
    pytest.param(
        [r(1, "nv.api.demo", "nv.db.demo", action="deny", disabled=True), r(2, "nv.api.demo", "nv.db.demo")],
        {("disabled", (1,))},
        id="disabled-rule-shadows-nothing",
    ),
    pytest.param(
        [r(1, "nv.api.demo", "nv.db.demo", action="deny", staged=True), r(2, "nv.api.demo", "nv.db.demo")],
        set(),
        id="staged-rule-does-not-shadow-enforced-rule",
    ),
    pytest.param(
        [r(1, "nv.api.demo", "nv.db.demo", action="deny"), r(2, "nv.api.demo", "nv.db.demo", staged=True)],
        {("shadowed", (2, 1))},
        id="enforced-rule-shadows-staged-rule",
    ),
    pytest.param(
        [
            r(1, "nv.api.demo", "nv.db.demo"),
            r(50, "containers", "nv.db.demo", tier="admin", priority=10, action="deny"),
        ],
        {("shadowed", (1, 50))},
        id="admin-tier-comes-before-lower-id",
    ),
    pytest.param(
        [r(1, "nv.api.demo", "nv.db.demo", tier="baseline", action="deny"), r(2, "nv.api.demo", "nv.db.demo")],
        {("shadowed", (1, 2))},
        id="main-tier-shadows-baseline",
    ),
    pytest.param(
        [
            r(1, "containers", "nv.db.demo", tier="admin", priority=1, action="pass"),
            r(2, "nv.api.demo", "nv.db.demo", tier="admin", priority=2, action="deny"),
            r(3, "nv.api.demo", "nv.db.demo"),
        ],
        {("shadowed", (2, 1))},
        id="pass-shadows-later-admin-rules-only",
    ),
    pytest.param(
        [
            r(1, "nv.api.demo", "nv.db.demo", tier="admin", priority=9, action="deny"),
            r(2, "containers", "nv.db.demo", tier="admin", priority=1, action="accept"),
        ],
        {("shadowed", (1, 2))},
        id="admin-priority-beats-id",
    ),
    pytest.param(
        [r(1, "nv.api.demo", "nv.db.demo", tier="admin", action="deny"), r(2, "containers", "nv.db.demo")],
        set(),
        id="no-conflict-across-tiers",
    ),
]


@pytest.mark.parametrize(("rules", "expected"), RULE_CASES)
def test_rule_findings(rules: list[dict[str, Any]], expected: set[tuple[str, tuple[int, ...]]]) -> None:
    """Each policy gives exactly the expected rule findings (shadowed, redundant, conflict, disabled)."""
    policy = make_policy(GROUPS, rules)
    found = kinds(analyze_policy(policy), "shadowed", "redundant", "conflict", "disabled")
    assert found == expected


@pytest.mark.parametrize(
    ("rules", "severity"),
    [
        pytest.param(
            [r(1, "nv.api.demo", "nv.db.demo", ports=["tcp/5432"], action="deny"), r(2, "containers", "nv.db.demo")],
            "info",
            id="narrow-deny-before-broad-allow-is-an-exception",
        ),
        pytest.param(
            [
                r(1, "nv.api.demo", "nv.db.demo", ports=["tcp/5432"], action="deny"),
                r(2, "nv.api.demo", "zone.back", ports=["tcp/5000-5500"], applications=["postgresql"]),
            ],
            "warning",
            id="neither-contains-the-other-is-a-warning",
        ),
    ],
)
def test_conflict_severity(rules: list[dict[str, Any]], severity: str) -> None:
    """A conflict is info when the earlier rule is carved out of the later one, else a warning, and names the winner."""
    findings = [f for f in analyze_policy(make_policy(GROUPS, rules)) if f.kind == "conflict"]
    assert len(findings) == 1
    assert findings[0].severity == severity
    assert findings[0].detail["winner"] == 1
    assert "rule 1 comes first" in findings[0].message


@pytest.fixture(scope="module")
def demo_inventory() -> Inventory:
    from podwall.demo import INVENTORY

    return load_inventory([str(INVENTORY)])


def test_inventory_proves_containment_criteria_cannot(demo_inventory: Inventory) -> None:
    """A label group and a service group selecting the same workloads shadow each other only with an inventory."""
    groups = [svc_grp("node"), svc_grp("redis"), grp("by-label", crit("app", "=", "redis-pod"))]
    rules = [r(1, "nv.node.demo", "by-label", action="deny"), r(2, "nv.node.demo", "nv.redis.demo")]
    policy = make_policy(groups, rules)
    assert kinds(analyze_policy(policy), "shadowed") == set()
    found = [f for f in analyze_policy(policy, demo_inventory) if f.kind == "shadowed"]
    assert [(f.rule_ids, f.detail["basis"]) for f in found] == [((2, 1), "inventory")]


def test_empty_and_unused_groups(demo_inventory: Inventory) -> None:
    """Groups selecting no inventory workload are empty (zones when all members are); unreferenced ones unused."""
    groups = [
        svc_grp("redis"),
        grp("ghost", crit("app", "=", "nothing-has-this")),
        grp("ghost2", crit("service", "=", "none")),
        grp("outside", crit("address", "=", "203.0.113.0/24")),
        {"name": "zone.ghosts", "members": ["ghost", "ghost2"]},
        {"name": "zone.mixed", "members": ["ghost", "nv.redis.demo"]},
        grp("spare", crit("service", "=", "redis"), mode="protect"),
    ]
    rules = [
        r(1, "ghost", "nv.redis.demo"),
        r(2, "zone.ghosts", "outside"),
        r(3, "zone.mixed", "nv.redis.demo"),
    ]
    findings = analyze_policy(make_policy(groups, rules), demo_inventory)
    empty = {f.groups[0]: f.rule_ids for f in findings if f.kind == "empty-group"}
    assert empty == {"ghost": (1,), "ghost2": (), "zone.ghosts": (2,)}
    unused = [f for f in findings if f.kind == "unused-group"]
    assert [f.groups for f in unused] == [("spare",)]
    assert "protect" in unused[0].message and unused[0].severity == "info"
    assert not [f for f in analyze_policy(make_policy(groups, rules)) if f.kind == "empty-group"]


def test_clean_policy_has_no_warning() -> None:
    """A policy of disjoint allow rules gives no finding of warning severity."""
    rules = [
        r(1, "nv.web.demo", "nv.api.demo", ports=["tcp/80"]),
        r(2, "nv.api.demo", "nv.db.demo", ports=["tcp/5432"]),
    ]
    groups = GROUPS[:3]
    findings = analyze_policy(make_policy(groups, rules))
    assert worst_severity(findings) is None


def test_evaluation_order_follows_tiers() -> None:
    """Rules sort admin (priority) → federated → policy-as-code → main (ID) → baseline."""
    rules = [
        r(5, "nv.web.demo", "nv.api.demo"),
        r(100001, "nv.web.demo", "nv.api.demo"),
        r(3, "nv.web.demo", "nv.api.demo", tier="baseline", priority=1),
        r(7, "nv.web.demo", "nv.api.demo", tier="admin", priority=2, action="accept"),
        r(8, "nv.web.demo", "nv.api.demo", tier="admin", priority=1, action="deny"),
        r(110001, "nv.web.demo", "nv.api.demo", priority=3),
        r(10001, "nv.web.demo", "nv.api.demo"),
    ]
    policy = make_policy(GROUPS, rules)
    assert [x.id for x in evaluation_order(policy.spec.rules)] == [8, 7, 100001, 110001, 5, 10001, 3]


@pytest.mark.parametrize(
    ("outer", "inner", "expected"),
    [
        pytest.param(["any"], ["icmp", "udp/53"], True, id="any-covers-all"),
        pytest.param(["tcp/any"], ["tcp/1-65535"], True, id="tcp-any-is-full-range"),
        pytest.param(["tcp/any"], ["any"], False, id="tcp-any-not-every-transport"),
        pytest.param(["icmp"], ["icmp"], True, id="icmp"),
        pytest.param(["tcp/80"], ["udp/80"], False, id="transport-differs"),
        pytest.param(["tcp/1-10", "tcp/12-20"], ["tcp/5-15"], False, id="gap-in-union"),
        pytest.param(["tcp/1-10", "tcp/11-20"], ["tcp/5-15"], True, id="adjacent-union"),
    ],
)
def test_ports_cover(outer: list[str], inner: list[str], expected: bool) -> None:
    """Port coverage handles any, ICMP, ranges and unions of ranges."""
    assert ports_cover([parse_port_spec(p) for p in outer], [parse_port_spec(p) for p in inner]) is expected


_SPECS = st.one_of(
    st.just("any"),
    st.just("icmp"),
    st.builds(
        lambda t, a, b: f"{t}/{min(a, b)}-{max(a, b)}",
        st.sampled_from(["tcp", "udp"]),
        st.integers(1, 30),
        st.integers(1, 30),
    ),
)


@settings(max_examples=200, deadline=None)
@given(st.lists(_SPECS, min_size=1, max_size=4), st.lists(_SPECS, min_size=1, max_size=3))
def test_ports_cover_agrees_with_enumeration(outer: list[str], inner: list[str]) -> None:
    """On small port universes, coverage equals 'every point the inner specs admit is admitted by the outer'."""
    if ("any" in outer and len(outer) > 1) or ("any" in inner and len(inner) > 1):
        return
    o = [parse_port_spec(p) for p in outer]
    i = [parse_port_spec(p) for p in inner]
    points = [(proto, port) for proto in (1, 6, 17, 58) for port in range(0, 32)] + [(6, 40000)]
    brute = all(any(s.matches(*pt) for s in o) for pt in points if any(s.matches(*pt) for s in i))
    # Ports above 30 stand for the rest of the range: `any` admits them, ranges here do not.
    assert ports_cover(o, i) is brute


@pytest.mark.parametrize(
    ("outer", "inner", "expected"),
    [
        pytest.param(None, {"redis": {"commands": ["GET"]}}, True, id="none-covers-all"),
        pytest.param({"redis": {"commands": ["GET"]}}, None, False, id="l7-does-not-cover-none"),
        pytest.param(
            {"redis": {"commands": ["GET", "SET"]}}, {"redis": {"commands": ["GET"]}}, True, id="command-subset"
        ),
        pytest.param(
            {"redis": {"commands": ["GET"]}}, {"redis": {"commands": ["GET", "SET"]}}, False, id="command-superset"
        ),
        pytest.param(
            {"dns": {"names": ["*.example.com"]}},
            {"dns": {"names": ["a.example.com", "*.b.example.com"]}},
            True,
            id="dns-wildcard",
        ),
        pytest.param(
            {"dns": {"names": ["*.example.com"]}},
            {"dns": {"names": ["example.com"]}},
            False,
            id="dns-wildcard-not-apex",
        ),
        pytest.param({"http": {}}, {"http": {"methods": ["GET"]}, "grpc": {}}, False, id="missing-section"),
        pytest.param({"http": {}, "grpc": {"services": ["a.B"]}}, {"http": {}}, False, id="grpc-fallback-differs"),
        pytest.param(
            {"http": {"headers": [{"name": "x-env"}]}},
            {"http": {"headers": [{"name": "X-Env", "value": "prod"}]}},
            True,
            id="header-presence-implied",
        ),
        pytest.param(
            {"http": {"paths": [{"regex": "/v[0-9]+/.*"}]}},
            {"http": {"paths": [{"exact": "/v1/x"}]}},
            True,
            id="regex-covers-exact",
        ),
        pytest.param({"sql": {"kinds": ["select", "insert"]}}, {"sql": {"kinds": ["select"]}}, True, id="sql-kinds"),
    ],
)
def test_l7_covers(outer: dict[str, Any] | None, inner: dict[str, Any] | None, expected: bool) -> None:
    """L7 coverage is proved section by section and never claimed when unprovable."""
    a = L7Match.model_validate(outer) if outer is not None else None
    b = L7Match.model_validate(inner) if inner is not None else None
    assert l7_covers(a, b) is expected


@pytest.mark.parametrize(("rules", "expected"), RULE_CASES)
def test_shadowed_rules_never_decide_in_the_engine(
    rules: list[dict[str, Any]], expected: set[tuple[str, tuple[int, ...]]]
) -> None:
    """No synthetic connection of any rule's traffic is decided by a rule reported shadowed or redundant."""
    from podwall.policy.diff import synthetic_observations
    from podwall.policy.evaluate import PolicyEngine

    policy = make_policy(GROUPS, rules)
    never = {f.rule_ids[0] for f in analyze_policy(policy) if f.kind in ("shadowed", "redundant")}
    engine = PolicyEngine(policy)
    decided = {engine.evaluate(o).rule_id for o in synthetic_observations(policy, policy)}
    assert not (never & decided)
