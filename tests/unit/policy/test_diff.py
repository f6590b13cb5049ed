"""Semantic diff of two podwall policies, its synthetic universe, and the what-if evaluation."""

from __future__ import annotations

from typing import Any

import pytest

from podwall.analysis.whatif import observations_from_events, what_if
from podwall.core.events import Event, EventEndpoint, EventType
from podwall.core.types import PROTO_ICMP, PROTO_TCP, PROTO_UDP
from podwall.inventory.loader import load_inventory
from podwall.inventory.model import Inventory
from podwall.inventory.resolver import Resolver
from podwall.policy.diff import (
    ACTION_CHANGED,
    NEWLY_ALLOWED,
    NEWLY_DENIED,
    SAME_OUTCOME,
    Outcome,
    classify,
    diff_policies,
    synthetic_observations,
)
from podwall.policy.evaluate import PolicyEngine
from podwall.policy.model import Policy
from tests.unit.policy.policy_testkit import crit, grp, make_policy, obs, svc_grp, wl

GROUPS = [svc_grp("web", mode="monitor"), svc_grp("api", mode="monitor"), svc_grp("db", mode="monitor")]
BASE = [
    {"id": 1, "from": "nv.web.demo", "to": "nv.api.demo", "ports": ["tcp/8080"], "applications": ["http"]},
    {"id": 2, "from": "nv.api.demo", "to": "nv.db.demo", "ports": ["tcp/5432"]},
]


def pol(rules: list[dict[str, Any]], groups: list[dict[str, Any]] | None = None, mode: str = "monitor") -> Policy:
    return make_policy(groups if groups is not None else GROUPS, rules, default_mode=mode)


def with_mode(mode: str) -> list[dict[str, Any]]:
    return [svc_grp(s, mode=mode) for s in ("web", "api", "db")]


WEB, API, DB = wl("web", ip="10.1.0.1"), wl("api", ip="10.1.0.2"), wl("db", ip="10.1.0.3")
TRAFFIC = [obs(WEB, API, 8080, "http"), obs(API, DB, 5432), obs(API, DB, 5432), obs(WEB, DB, 5432)]


def o(action: str, violation: bool, rule_id: int, allows: bool | None = None) -> Outcome:
    return Outcome(action, violation, rule_id, None, "monitor", allows if allows is not None else not violation)


@pytest.mark.parametrize(
    ("old", "new", "kind"),
    [
        pytest.param(o("alert", True, 0), o("allow", False, 3), NEWLY_ALLOWED, id="violation-to-allowed"),
        pytest.param(o("allow", False, 2), o("deny", True, 0), NEWLY_DENIED, id="allowed-to-denied"),
        pytest.param(o("alert", True, 0), o("deny", True, 0), ACTION_CHANGED, id="alert-to-deny"),
        pytest.param(o("learn", False, 0, False), o("allow", False, 4), ACTION_CHANGED, id="learn-to-allow"),
        pytest.param(o("allow", False, 2), o("allow", False, 7), SAME_OUTCOME, id="rule-only"),
        pytest.param(o("allow", False, 2), o("allow", False, 2), None, id="unchanged"),
    ],
)
def test_classify(old: Outcome, new: Outcome, kind: str | None) -> None:
    """Outcome pairs classify by violation first, then action, then deciding rule."""
    assert classify(old, new) == kind


@pytest.mark.parametrize(
    ("new_rules", "new_groups", "expected"),
    [
        pytest.param(BASE, None, [], id="same-policy-no-change"),
        pytest.param(
            BASE[:1],
            None,
            [(NEWLY_DENIED, "nv.api.demo", "nv.db.demo", 5432, 2)],
            id="removed-rule-newly-denies-its-traffic",
        ),
        pytest.param(
            [*BASE, {"id": 3, "from": "nv.web.demo", "to": "nv.db.demo", "ports": ["tcp/5432"]}],
            None,
            [(NEWLY_ALLOWED, "nv.web.demo", "nv.db.demo", 5432, 1)],
            id="added-rule-newly-allows",
        ),
        pytest.param(
            [*BASE, {"id": 3, "from": "nv.web.demo", "to": "nv.db.demo", "action": "deny"}],
            None,
            [],
            id="explicit-deny-of-violating-traffic-is-same-outcome",
        ),
        pytest.param(
            BASE,
            with_mode("protect"),
            [(ACTION_CHANGED, "nv.web.demo", "nv.db.demo", 5432, 1)],
            id="monitor-to-protect-turns-alerts-into-denies",
        ),
    ],
)
def test_diff_on_traffic(
    new_rules: list[dict[str, Any]],
    new_groups: list[dict[str, Any]] | None,
    expected: list[tuple[str, str, str, int, int]],
) -> None:
    """Each change reports exactly the connections whose outcome changed, grouped with their count."""
    old = pol(BASE)
    new = pol(new_rules, new_groups)
    entries = diff_policies(old, new, TRAFFIC)
    assert [(e.kind, e.client, e.server, e.port, e.count) for e in entries] == expected


def test_same_outcome_listed_only_on_request() -> None:
    """A change of deciding rule with the same outcome is listed only with include_same."""
    old = pol(BASE)
    new = pol([{**BASE[0], "id": 5}, BASE[1]])
    assert diff_policies(old, new, TRAFFIC) == []
    entries = diff_policies(old, new, TRAFFIC, include_same=True)
    assert [(e.kind, e.old.rule_id, e.new.rule_id) for e in entries] == [(SAME_OUTCOME, 1, 5)]
    assert entries[0].to_dict()["after"]["rule_id"] == 5


@pytest.fixture(scope="module")
def demo_inventory() -> Inventory:
    from podwall.demo import INVENTORY

    return load_inventory([str(INVENTORY)])


DEMO_GROUPS = [svc_grp("node", mode="monitor"), svc_grp("redis", mode="monitor"), svc_grp("nginx", mode="monitor")]
DEMO_RULES = [
    {"id": 1, "from": "nv.node.demo", "to": "nv.redis.demo", "ports": ["tcp/6379"], "applications": ["redis"]},
    {"id": 2, "from": "nv.nginx.demo", "to": "nv.node.demo", "ports": ["tcp/8888"]},
]


def test_synthetic_universe_uses_inventory_workloads(demo_inventory: Inventory) -> None:
    """With an inventory, the synthetic connections run between the workloads' pod addresses."""
    old = pol(DEMO_RULES, DEMO_GROUPS)
    new = pol(DEMO_RULES[1:], DEMO_GROUPS)
    universe = synthetic_observations(old, new, demo_inventory)
    assert {(x.client.ip, x.server.ip, x.server_port, x.app) for x in universe} == {
        ("10.244.1.20", "10.244.2.30", 6379, "redis"),
        ("10.244.1.10", "10.244.1.20", 8888, None),
    }
    entries = diff_policies(old, new, universe)
    assert [(e.kind, e.client, e.server, e.application) for e in entries] == [
        (NEWLY_DENIED, "nv.node.demo", "nv.redis.demo", "redis")
    ]


@pytest.mark.parametrize(
    ("groups", "rule", "expected"),
    [
        pytest.param(
            GROUPS,
            {"from": "nv.web.demo", "to": "nv.api.demo", "ports": ["tcp/80"]},
            [("nv.web.demo", PROTO_TCP, 80)],
            id="criteria-built-workload",
        ),
        pytest.param(
            GROUPS,
            {"from": "nv.web.demo", "to": "external", "ports": ["udp/any"]},
            [("nv.web.demo", PROTO_UDP, 65535)],
            id="any-port-is-a-port-no-rule-names",
        ),
        pytest.param(
            GROUPS,
            {"from": "nodes", "to": "nv.web.demo", "ports": ["icmp"]},
            [("nodes", PROTO_ICMP, 0)],
            id="node-icmp",
        ),
        pytest.param(
            [*GROUPS, grp("net", crit("address", "=", "10.9.0.0/16"))],
            {"from": "nv.web.demo", "to": "net", "ports": ["tcp/1000-2000"]},
            [("nv.web.demo", PROTO_TCP, 1000)],
            id="address-group-and-range",
        ),
        pytest.param(
            [*GROUPS, grp("rx", crit("service", "regex", "^w"))],
            {"from": "rx", "to": "nv.web.demo", "ports": ["tcp/80"]},
            [],
            id="regex-group-cannot-be-synthesised",
        ),
    ],
)
def test_synthetic_universe_without_inventory(
    groups: list[dict[str, Any]], rule: dict[str, Any], expected: list[tuple[str, int, int]]
) -> None:
    """Without an inventory, endpoints are synthesised per group and verified to be in it."""
    policy = pol([{"id": 1, **rule}], groups)
    universe = synthetic_observations(policy, policy)
    assert [(x.client.group, x.proto, x.server_port) for x in universe] == expected
    engine = PolicyEngine(policy)
    for x in universe:
        assert rule["from"] in engine.member_groups(x.client)
        assert rule["to"] in engine.member_groups(x.server)


def _event(etype: EventType, app: str, count: int, port: int = 6379) -> Event:
    return Event(
        type=etype,
        client=EventEndpoint(
            group="nv.node.demo", ip="10.244.1.20", port=0, workload="demo/node", namespace="demo", service="node"
        ),
        server=EventEndpoint(
            group="nv.redis.demo", ip="10.244.2.30", port=port, workload="demo/redis", namespace="demo", service="redis"
        ),
        transport="tcp",
        ip_proto=PROTO_TCP,
        application=app,
        count=count,
    )


@pytest.mark.parametrize(
    "with_inventory", [pytest.param(False, id="event-identity"), pytest.param(True, id="re-resolved")]
)
def test_what_if_on_stored_events(demo_inventory: Inventory, with_inventory: bool) -> None:
    """Stored events become one connection each (largest count), and removing their rule makes them would-block."""
    events = [
        _event(EventType.LEARNED, "redis", 12),
        _event(EventType.VIOLATION, "redis", 3),
        _event(EventType.LEARNED, "tcp/7000", 2, port=7000),
    ]
    resolver = Resolver(demo_inventory) if with_inventory else None
    connections = observations_from_events(events, resolver)
    assert sorted((c.server_port, c.app, n) for c, n in connections) == [(6379, "redis", 12), (7000, None, 2)]
    current = PolicyEngine(pol(DEMO_RULES, DEMO_GROUPS))
    proposed = PolicyEngine(pol(DEMO_RULES[1:], DEMO_GROUPS))
    items = what_if(connections, proposed, current)
    summary = [(i.port, i.would_block, i.newly_blocked, i.sessions) for i in items]
    assert summary == [(6379, True, True, 12), (7000, True, False, 2)]
    assert items[0].proposed.action == "alert"  # monitor mode today; protect would block
