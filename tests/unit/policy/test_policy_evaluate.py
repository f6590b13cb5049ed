"""Policy evaluation: group membership, rule matching by port and application, first match, modes."""

from __future__ import annotations

from typing import Any

import pytest

from podwall.core.types import PROTO_ICMP, PROTO_ICMPV6, PROTO_TCP, PROTO_UDP, Endpoint
from podwall.policy.evaluate import PolicyEngine, normalize_app
from tests.unit.policy.policy_testkit import (
    crit,
    ext,
    grp,
    make_policy,
    node,
    obs,
    rule,
    svc_grp,
    unmanaged,
    wl,
)

# ---------------------------------------------------------------------------------------------
# Group membership: operators, globs, OR/AND semantics

REDIS = wl("redis", labels={"app": "redis", "tier": "db"}, ns_labels={"team": "payments"}, image="redis:7.2")
WEB = wl("web", labels={"app": "web"}, ns_labels={"team": "shop"}, image="nginx:1.25", node="node-2")
WEB_ADMIN = wl("web-admin", labels={"app": "web"}, kind="StatefulSet")
KUBE = wl("coredns", "kube-system")

MEMBERSHIP_CASES: list[tuple[str, list[dict[str, str]], Endpoint, bool]] = [
    ("eq-match", [crit("service", "=", "redis")], REDIS, True),
    ("eq-no-match", [crit("service", "=", "redis")], WEB, False),
    ("ne-match", [crit("service", "!=", "redis")], WEB, True),
    ("ne-no-match", [crit("service", "!=", "redis")], REDIS, False),
    ("contains", [crit("image", "contains", "redis:7")], REDIS, True),
    ("contains-no", [crit("image", "contains", "redis:6")], REDIS, False),
    ("prefix", [crit("service", "prefix", "red")], REDIS, True),
    ("prefix-no", [crit("service", "prefix", "dis")], REDIS, False),
    ("regex", [crit("service", "regex", "^re.*s$")], REDIS, True),
    ("regex-unanchored", [crit("service", "regex", "dis")], REDIS, True),
    ("regex-no", [crit("service", "regex", "^web")], REDIS, False),
    ("not-regex-excludes", [crit("service", "!regex", "^web")], WEB_ADMIN, False),
    ("not-regex-keeps", [crit("service", "!regex", "^web")], REDIS, True),
    ("glob-star", [crit("service", "=", "red*")], REDIS, True),
    ("glob-question", [crit("service", "=", "re?is")], REDIS, True),
    ("glob-is-whole-value", [crit("service", "=", "web*n")], WEB_ADMIN, True),
    ("glob-no-partial", [crit("service", "=", "web")], WEB_ADMIN, False),
    ("glob-ne", [crit("namespace", "!=", "kube-*")], KUBE, False),
    ("glob-ne-keeps", [crit("namespace", "!=", "kube-*")], REDIS, True),
    ("brackets-literal", [crit("service", "=", "re[d]is")], REDIS, False),
    ("label", [crit("app", "=", "web")], WEB_ADMIN, True),
    ("label-absent-positive", [crit("tier", "=", "db")], WEB, False),
    ("label-absent-negative", [crit("tier", "!=", "db")], WEB, True),
    ("ns-label", [crit("ns:team", "=", "payments")], REDIS, True),
    ("ns-label-no", [crit("ns:team", "=", "payments")], WEB, False),
    ("node", [crit("node", "=", "node-2")], WEB, True),
    ("kind", [crit("kind", "=", "StatefulSet")], WEB_ADMIN, True),
    ("namespace", [crit("namespace", "=", "demo")], REDIS, True),
    ("same-key-or", [crit("service", "=", "redis"), crit("service", "=", "web")], WEB, True),
    ("different-keys-and", [crit("service", "=", "redis"), crit("namespace", "=", "prod")], REDIS, False),
    ("different-keys-and-both", [crit("service", "=", "redis"), crit("app", "=", "redis")], REDIS, True),
    ("negatives-and-first", [crit("service", "!=", "redis"), crit("service", "!=", "web")], REDIS, False),
    ("negatives-and-second", [crit("service", "!=", "redis"), crit("service", "!=", "web")], WEB, False),
    ("negatives-and-other", [crit("service", "!=", "redis"), crit("service", "!=", "web")], KUBE, True),
    (
        "positive-and-negative",
        [crit("service", "prefix", "web"), crit("service", "!=", "web-admin")],
        WEB,
        True,
    ),
    (
        "positive-and-negative-excluded",
        [crit("service", "prefix", "web"), crit("service", "!=", "web-admin")],
        WEB_ADMIN,
        False,
    ),
    ("workload-group-not-external", [crit("namespace", "!=", "kube-system")], ext(), False),
    ("workload-group-not-node", [crit("node", "!=", "x")], node(), False),
]


@pytest.mark.parametrize(
    ("criteria", "endpoint", "member"),
    [c[1:] for c in MEMBERSHIP_CASES],
    ids=[c[0] for c in MEMBERSHIP_CASES],
)
def test_criteria_membership(criteria: list[dict[str, str]], endpoint: Endpoint, member: bool) -> None:
    """A group's criteria select endpoints by operator, glob and same-key OR / different-key AND."""
    engine = PolicyEngine(make_policy([grp("g", *criteria)]))
    assert ("g" in engine.member_groups(endpoint)) is member


ADDRESS_CASES: list[tuple[str, list[dict[str, str]], Endpoint, bool]] = [
    ("ip", [crit("address", "=", "10.9.0.5")], unmanaged("10.9.0.5"), True),
    ("ip-other", [crit("address", "=", "10.9.0.5")], unmanaged("10.9.0.6"), False),
    ("cidr", [crit("address", "=", "10.0.0.0/8")], unmanaged("10.200.1.1"), True),
    ("cidr-outside", [crit("address", "=", "10.0.0.0/8")], unmanaged("192.168.1.1"), False),
    ("range-inside", [crit("address", "=", "10.0.0.10-10.0.0.20")], unmanaged("10.0.0.20"), True),
    ("range-outside", [crit("address", "=", "10.0.0.10-10.0.0.20")], unmanaged("10.0.0.21"), False),
    ("ipv6-cidr", [crit("address", "=", "fd00::/8")], unmanaged("fd00::1"), True),
    ("ipv6-vs-ipv4", [crit("address", "=", "fd00::/8")], unmanaged("10.0.0.1"), False),
    ("hostname-never-matches", [crit("address", "=", "db.example.com")], ext("93.184.216.34"), False),
    ("wildcard-domain-never-matches", [crit("address", "=", "*.example.com")], ext("93.184.216.34"), False),
    ("ne-cidr", [crit("address", "!=", "10.0.0.0/8")], ext("8.8.8.8"), True),
    ("ne-cidr-excluded", [crit("address", "!=", "10.0.0.0/8")], unmanaged("10.0.0.1"), False),
    (
        "or-of-cidrs",
        [crit("address", "=", "10.0.0.0/8"), crit("address", "=", "8.8.8.8")],
        ext("8.8.8.8"),
        True,
    ),
    ("matches-workloads-too", [crit("address", "=", "10.1.0.0/16")], wl("redis", ip="10.1.2.3"), True),
    ("matches-external", [crit("address", "=", "203.0.113.0/24")], ext(), True),
]


@pytest.mark.parametrize(
    ("criteria", "endpoint", "member"), [c[1:] for c in ADDRESS_CASES], ids=[c[0] for c in ADDRESS_CASES]
)
def test_address_membership(criteria: list[dict[str, str]], endpoint: Endpoint, member: bool) -> None:
    """Address groups select any endpoint by IP, CIDR or range; hostnames never match an IP yet."""
    engine = PolicyEngine(make_policy([grp("g", *criteria)]))
    assert ("g" in engine.member_groups(endpoint)) is member


RESERVED_CASES: list[tuple[str, Endpoint, set[str]]] = [
    ("workload", wl("redis"), {"containers"}),
    ("external-by-kind", Endpoint(ip="8.8.8.8", port=1, group="8.8.8.8", kind="External"), {"external"}),
    ("external-by-groups", Endpoint(ip="8.8.8.8", port=1, group="x", groups=("x", "external")), {"external"}),
    ("node", node(), {"nodes"}),
    ("unmanaged", unmanaged("10.9.9.9"), set()),
]


@pytest.mark.parametrize(("endpoint", "reserved"), [c[1:] for c in RESERVED_CASES], ids=[c[0] for c in RESERVED_CASES])
def test_reserved_groups(endpoint: Endpoint, reserved: set[str]) -> None:
    """external, nodes and containers are built in and follow the endpoint's kind and workload."""
    engine = PolicyEngine(make_policy([]))
    got = set(engine.member_groups(endpoint)) & {"external", "nodes", "containers"}
    assert got == reserved


def test_member_groups_order_and_cache() -> None:
    """Membership lists policy groups in declaration order then reserved ones, cached across client ports."""
    engine = PolicyEngine(make_policy([grp("zeta", crit("app", "=", "redis")), svc_grp("redis")]))
    first = wl("redis", labels={"app": "redis"}, port=40000)
    second = wl("redis", labels={"app": "redis"}, port=40001)
    assert engine.member_groups(first) == ["zeta", "nv.redis.demo", "containers"]
    assert engine.membership(first) is engine.membership(second)


# ---------------------------------------------------------------------------------------------
# Rule matching: ports, applications, order, disabled rules

PORT_CASES: list[tuple[str, str, int, int, bool]] = [
    ("exact", "tcp/80", PROTO_TCP, 80, True),
    ("exact-other-port", "tcp/80", PROTO_TCP, 81, False),
    ("exact-other-transport", "tcp/80", PROTO_UDP, 80, False),
    ("udp", "udp/53", PROTO_UDP, 53, True),
    ("range-inside", "tcp/8000-8100", PROTO_TCP, 8050, True),
    ("range-low-edge", "tcp/8000-8100", PROTO_TCP, 8000, True),
    ("range-high-edge", "tcp/8000-8100", PROTO_TCP, 8100, True),
    ("range-outside", "tcp/8000-8100", PROTO_TCP, 8101, False),
    ("tcp-any", "tcp/any", PROTO_TCP, 5, True),
    ("tcp-any-not-udp", "tcp/any", PROTO_UDP, 5, False),
    ("icmp", "icmp", PROTO_ICMP, 0, True),
    ("icmp-covers-icmpv6", "icmp", PROTO_ICMPV6, 0, True),
    ("icmp-not-tcp", "icmp", PROTO_TCP, 0, False),
    ("any-tcp", "any", PROTO_TCP, 443, True),
    ("any-icmp", "any", PROTO_ICMP, 0, True),
    ("any-other-proto", "any", 50, 0, True),
    ("tcp-not-other-proto", "tcp/any", 50, 0, False),
]


@pytest.mark.parametrize(
    ("spec", "proto", "port", "allowed"), [c[1:] for c in PORT_CASES], ids=[c[0] for c in PORT_CASES]
)
def test_port_specs(spec: str, proto: int, port: int, allowed: bool) -> None:
    """A rule applies only on the transport and server ports its port spec names."""
    engine = PolicyEngine(make_policy([svc_grp("web")], [rule(1, "external", "nv.web.demo", (spec,))]))
    verdict = engine.evaluate(obs(ext(), wl("web"), port, None, proto))
    assert (verdict.rule_id == 1) is allowed
    assert (verdict.action == "allow") is allowed


APP_CASES: list[tuple[str, tuple[str, ...], str | None, bool]] = [
    ("any-identified", ("any",), "redis", True),
    ("any-unidentified", ("any",), None, True),
    ("named", ("http",), "http", True),
    ("named-case-insensitive", ("http",), "HTTP", True),
    ("named-other", ("http",), "redis", False),
    ("named-unidentified", ("http",), None, False),
    ("named-unknown", ("http",), "unknown", False),
    ("several", ("http", "grpc"), "grpc", True),
]


@pytest.mark.parametrize(("apps", "app", "allowed"), [c[1:] for c in APP_CASES], ids=[c[0] for c in APP_CASES])
def test_application_matching(apps: tuple[str, ...], app: str | None, allowed: bool) -> None:
    """A rule naming applications needs an identified application among them; `any` takes all."""
    engine = PolicyEngine(make_policy([svc_grp("web")], [rule(1, "external", "nv.web.demo", ("tcp/80",), apps)]))
    assert (engine.evaluate(obs(ext(), wl("web"), 80, app)).rule_id == 1) is allowed


def test_normalize_app() -> None:
    """Applications compare in lower case and `unknown` or empty means unidentified."""
    assert [normalize_app(a) for a in ("HTTP", "unknown", "", None, " redis ")] == [
        "http",
        None,
        None,
        None,
        "redis",
    ]


ORDER_CASES: list[tuple[str, list[dict[str, Any]], int, str]] = [
    (
        "lowest-id-wins",
        [
            rule(20, "external", "nv.web.demo", ("tcp/80",), action="deny"),
            rule(10, "external", "nv.web.demo"),
        ],
        10,
        "allow",
    ),
    (
        "deny-first",
        [
            rule(10001, "external", "nv.web.demo"),
            rule(3, "external", "nv.web.demo", ("tcp/80",), action="deny"),
        ],
        3,
        "deny",
    ),
    (
        "any-port-before-exact",
        [rule(7, "external", "nv.web.demo", ("tcp/80",), action="deny"), rule(2, "external", "containers")],
        2,
        "allow",
    ),
    (
        "range-before-exact",
        [
            rule(9, "external", "nv.web.demo", ("tcp/80",)),
            rule(4, "external", "nv.web.demo", ("tcp/1-1024",), action="deny"),
        ],
        4,
        "deny",
    ),
    (
        "disabled-skipped",
        [
            rule(1, "external", "nv.web.demo", action="deny", disabled=True),
            rule(2, "external", "nv.web.demo"),
        ],
        2,
        "allow",
    ),
    ("disabled-only-is-implicit", [rule(1, "external", "nv.web.demo", disabled=True)], 0, "deny"),
    ("no-rule-is-implicit", [rule(1, "external", "nv.web.demo", ("tcp/81",))], 0, "deny"),
    ("wrong-direction", [rule(1, "nv.web.demo", "external")], 0, "deny"),
]


@pytest.mark.parametrize(("rules", "rule_id", "action"), [c[1:] for c in ORDER_CASES], ids=[c[0] for c in ORDER_CASES])
def test_first_match_by_id(rules: list[dict[str, Any]], rule_id: int, action: str) -> None:
    """The matching rule with the lowest ID decides; disabled rules are skipped; no match is rule 0."""
    engine = PolicyEngine(make_policy([svc_grp("web")], rules, default_mode="protect"))
    verdict = engine.evaluate(obs(ext(), wl("web"), 80, "http"))
    assert verdict.rule_id == rule_id
    assert (verdict.matched_rule.id if verdict.matched_rule else 0) == rule_id
    assert verdict.action == action


def test_candidate_index_only_holds_covering_rules() -> None:
    """The (transport, port) index offers only rules whose ports cover it, sorted by ID."""
    rules = [rule(i, "external", "nv.web.demo", (f"tcp/{1000 + i}",)) for i in range(1, 200)]
    rules += [rule(500, "external", "nv.web.demo", ("tcp/1000-1010",)), rule(600, "external", "nv.web.demo")]
    engine = PolicyEngine(make_policy([svc_grp("web")], rules))
    assert [r.id for r in engine.candidates(PROTO_TCP, 1005)] == [5, 500, 600]
    assert [r.id for r in engine.candidates(PROTO_UDP, 1005)] == [600]


# ---------------------------------------------------------------------------------------------
# Modes


def _mode_engine(client_mode: str | None, server_mode: str | None, decision: str, default: str) -> PolicyEngine:
    groups = []
    if client_mode is not None:
        groups.append(svc_grp("client", mode=client_mode))
    if server_mode is not None:
        groups.append(svc_grp("server", mode=server_mode))
    client = "nv.client.demo" if client_mode is not None else "external"
    server = "nv.server.demo" if server_mode is not None else "external"
    rules = [] if decision == "implicit" else [rule(1, client, server, action=decision)]
    return PolicyEngine(make_policy(groups, rules, default_mode=default))


MODE_CASES: list[tuple[str, str | None, str | None, str, str, str, str, bool]] = [
    # id, client mode, server mode, decision, default mode, effective mode, action, violation
    ("discover-allow", "discover", "discover", "allow", "discover", "discover", "allow", False),
    ("discover-implicit", "discover", "discover", "implicit", "discover", "discover", "learn", False),
    ("discover-explicit", "discover", "discover", "deny", "discover", "discover", "allow", True),
    ("monitor-allow", "monitor", "monitor", "allow", "discover", "monitor", "allow", False),
    ("monitor-implicit", "monitor", "monitor", "implicit", "discover", "monitor", "alert", True),
    ("monitor-explicit", "monitor", "monitor", "deny", "discover", "monitor", "alert", True),
    ("protect-allow", "protect", "protect", "allow", "discover", "protect", "allow", False),
    ("protect-implicit", "protect", "protect", "implicit", "discover", "protect", "deny", True),
    ("protect-explicit", "protect", "protect", "deny", "discover", "protect", "deny", True),
    ("protect-client-monitor-server", "protect", "monitor", "implicit", "protect", "monitor", "alert", True),
    ("monitor-client-protect-server", "monitor", "protect", "implicit", "protect", "monitor", "alert", True),
    (
        "discover-client-protect-server",
        "discover",
        "protect",
        "implicit",
        "protect",
        "discover",
        "learn",
        False,
    ),
    ("protect-client-discover-server", "protect", "discover", "deny", "protect", "discover", "allow", True),
    ("external-to-protect", None, "protect", "implicit", "discover", "protect", "deny", True),
    ("protect-to-external", "protect", None, "implicit", "discover", "protect", "deny", True),
    ("external-to-monitor-explicit", None, "monitor", "deny", "protect", "monitor", "alert", True),
    ("no-modes-default-monitor", None, None, "implicit", "monitor", "monitor", "alert", True),
    ("no-modes-default-protect", None, None, "deny", "protect", "protect", "deny", True),
    ("no-modes-default-discover", None, None, "implicit", "discover", "discover", "learn", False),
]


@pytest.mark.parametrize(
    ("client_mode", "server_mode", "decision", "default", "effective", "action", "violation"),
    [c[1:] for c in MODE_CASES],
    ids=[c[0] for c in MODE_CASES],
)
def test_modes(
    client_mode: str | None,
    server_mode: str | None,
    decision: str,
    default: str,
    effective: str,
    action: str,
    violation: bool,
) -> None:
    """The less restrictive end's mode decides (or the only end with one, or the default) what a deny does."""
    engine = _mode_engine(client_mode, server_mode, decision, default)
    client = wl("client") if client_mode is not None else ext()
    server = wl("server") if server_mode is not None else ext("198.51.100.7")
    verdict = engine.evaluate(obs(client, server, 80))
    assert verdict.client_mode == client_mode
    assert verdict.server_mode == server_mode
    assert verdict.effective_mode == effective
    assert (verdict.action, verdict.violation) == (action, violation)
    assert verdict.allowed is (action != "deny")


def test_group_without_mode_takes_default() -> None:
    """A workload group without `mode` takes the policy's defaultMode."""
    engine = PolicyEngine(make_policy([svc_grp("web")], default_mode="protect"))
    assert engine.group_of_mode(wl("web")) == "protect"


def test_most_restrictive_group_mode() -> None:
    """An endpoint in several workload groups gets the most restrictive of their modes."""
    groups = [
        grp("loose", crit("app", "=", "web"), mode="discover"),
        svc_grp("web", mode="protect"),
        grp("mid", crit("namespace", "=", "demo"), mode="monitor"),
    ]
    engine = PolicyEngine(make_policy(groups))
    assert engine.group_of_mode(wl("web", labels={"app": "web"})) == "protect"
    assert engine.membership(wl("web", labels={"app": "web"})).mode_group == "nv.web.demo"


def test_address_group_confers_no_mode() -> None:
    """Address groups have no mode, so the workload at the other end decides."""
    engine = PolicyEngine(make_policy([grp("lan", crit("address", "=", "10.9.0.0/16")), svc_grp("db", mode="protect")]))
    client = unmanaged("10.9.0.5")
    assert engine.member_groups(client) == ["lan"]
    assert engine.group_of_mode(client) is None
    verdict = engine.evaluate(obs(client, wl("db"), 5432))
    assert (verdict.effective_mode, verdict.action) == ("protect", "deny")


def test_verdict_groups() -> None:
    """A verdict lists both ends' groups."""
    engine = PolicyEngine(make_policy([svc_grp("web")], [rule(1, "external", "nv.web.demo")]))
    verdict = engine.evaluate(obs(ext(), wl("web")))
    assert verdict.client_groups == ("external",)
    assert verdict.server_groups == ("nv.web.demo", "containers")
