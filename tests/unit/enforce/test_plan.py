"""The kernel plan (podwall/enforce/plan.py): group sets, rule tuples, modes and quarantine, and
agreement with the policy engine on connections the kernel decides alone."""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest

from podwall.core.types import PROTO_ICMP, PROTO_TCP, PROTO_UDP, Observation
from podwall.enforce.plan import (
    AddressSet,
    KernelPlan,
    PlanError,
    PortMatch,
    Verdict,
    build_plan,
    merge,
    subtract,
)
from podwall.inventory.model import Inventory, Labels, Namespace, Node, Pod, Workload
from podwall.inventory.resolver import Resolver
from podwall.policy.evaluate import PolicyEngine
from podwall.policy.model import Policy


def ips(*texts: str) -> tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, ...]:
    return tuple(ipaddress.ip_address(t) for t in texts)


INVENTORY = Inventory(
    nodes=(Node("node-1", ips("10.0.0.1", "fd00::1")),),
    namespaces=(Namespace("shop"),),
    workloads=(
        Workload(
            "web",
            "shop",
            labels=Labels({"app": "web"}),
            pods=(Pod("web-1", ips("10.0.0.2", "fd00::2")), Pod("web-2", ips("10.0.0.3"))),
        ),
        Workload("redis", "shop", labels=Labels({"app": "redis"}), pods=(Pod("redis-1", ips("10.0.0.9", "fd00::9")),)),
        Workload("batch", "shop", labels=Labels({"app": "batch"}), pods=(Pod("batch-1", ips("10.0.0.20")),)),
    ),
)

GROUPS: list[dict[str, Any]] = [
    {"name": "web", "criteria": [{"key": "app", "op": "=", "value": "web"}]},
    {"name": "redis", "criteria": [{"key": "app", "op": "=", "value": "redis"}]},
    {"name": "batch", "criteria": [{"key": "app", "op": "=", "value": "batch"}], "mode": "monitor"},
    {"name": "office", "criteria": [{"key": "address", "op": "=", "value": "192.168.0.0/16"},
                                    {"key": "address", "op": "!=", "value": "192.168.7.0/24"}]},
    {"name": "lan", "criteria": [{"key": "address", "op": "=", "value": "10.0.0.0/24"}]},
    {"name": "api", "criteria": [{"key": "address", "op": "=", "value": "*.example.com"}]},
    {"name": "zone.data", "members": ["redis", "office"]},
]  # fmt: skip


def policy(*rules: dict[str, Any], mode: str = "protect", strict: bool = False) -> Policy:
    return Policy.model_validate(
        {
            "metadata": {"name": "t"},
            "spec": {"defaultMode": mode, "strict": strict, "groups": GROUPS, "rules": list(rules)},
        }
    )


def rule(rule_id: int, src: str, dst: str, ports: list[str] | None = None, **extra: Any) -> dict[str, Any]:
    return {"id": rule_id, "from": src, "to": dst, "ports": ports or ["tcp/6379"], **extra}


def text(s: AddressSet, family: int) -> tuple[str, ...]:
    return s.elements(family)


def group_set(plan: KernelPlan, group: str) -> AddressSet:
    return next(s for s in plan.groups if s.group == group)


SET_CASES = [
    ("workload-group", "web", ("10.0.0.2/31",), ("fd00::2",)),
    ("address-group-minus-exclusion", "office", ("192.168.0.0-192.168.6.255", "192.168.8.0-192.168.255.255"), ()),
    ("zone-is-union-of-members", "zone.data",
     ("10.0.0.9", "192.168.0.0-192.168.6.255", "192.168.8.0-192.168.255.255"), ("fd00::9",)),
    ("address-group-keeps-inventory-members", "lan", ("10.0.0.0/24",), ()),
    ("nodes", "nodes", ("10.0.0.1",), ("fd00::1",)),
    ("containers", "containers", ("10.0.0.2/31", "10.0.0.9", "10.0.0.20"), ("fd00::2", "fd00::9")),
    ("hostname-group-has-no-address", "api", (), ()),
]  # fmt: skip


@pytest.mark.parametrize(("group", "v4", "v6"), [c[1:] for c in SET_CASES], ids=[c[0] for c in SET_CASES])
def test_group_sets(group: str, v4: tuple[str, ...], v6: tuple[str, ...]) -> None:
    """Each group's set holds exactly the addresses the engine puts in it, per family."""
    plan = build_plan(policy(rule(1, "web", group)), INVENTORY)
    s = group_set(plan, group)
    assert (text(s, 4), text(s, 6)) == (v4, v6)


def test_external_set_excludes_internal_ranges() -> None:
    """`external` covers public space but no internal range, loopback or inventory address."""
    plan = build_plan(policy(rule(1, "web", "external")), INVENTORY)
    ext = group_set(plan, "external")

    def inside(ip: str) -> bool:
        a = ipaddress.ip_address(ip)
        return any(lo <= int(a) <= hi for lo, hi in ext.intervals(a.version))

    probes = ("8.8.8.8", "10.0.0.2", "127.0.0.1", "192.168.1.1", "2001:db8::1", "fd00::2", "::1")
    assert [inside(ip) for ip in probes] == [True, False, False, False, True, False, False]


VERDICT_CASES = [
    ("allow", rule(1, "web", "redis"), Verdict.ALLOW, ""),
    ("deny", rule(1, "web", "redis", action="deny"), Verdict.DENY, ""),
    ("applications", rule(1, "web", "redis", applications=["redis"]), Verdict.USERSPACE, "applications redis"),
    ("l7", rule(1, "web", "redis", l7={"redis": {"commands": ["GET"]}}), Verdict.USERSPACE, "l7 redis"),
    ("hostname-group", rule(1, "web", "api", ["tcp/443"]), Verdict.USERSPACE, "hostname group"),
    ("admin-pass", rule(1, "web", "redis", tier="admin", action="pass", priority=1), Verdict.PASS, ""),
]


@pytest.mark.parametrize(("spec", "verdict", "why"), [c[1:] for c in VERDICT_CASES], ids=[c[0] for c in VERDICT_CASES])
def test_rule_verdicts(spec: dict[str, Any], verdict: Verdict, why: str) -> None:
    """A rule becomes a kernel verdict unless its outcome depends on what only userspace sees."""
    (t,) = build_plan(policy(spec), INVENTORY).tuples
    assert (t.verdict, t.why) == (verdict, why)


@pytest.mark.parametrize("flag", ["disabled", "staged"])
def test_disabled_and_staged_rules_are_not_enforced(flag: str) -> None:
    """Disabled and staged rules never reach the kernel."""
    assert build_plan(policy({**rule(1, "web", "redis"), flag: True}), INVENTORY).tuples == ()


PORT_CASES = [
    ("single", ["tcp/6379"], [PortMatch(PROTO_TCP, ((6379, 6379),))]),
    ("merged-ranges", ["tcp/80", "tcp/81-90", "tcp/443"], [PortMatch(PROTO_TCP, ((80, 90), (443, 443)))]),
    ("per-transport", ["tcp/53", "udp/53"], [PortMatch(PROTO_TCP, ((53, 53),)), PortMatch(PROTO_UDP, ((53, 53),))]),
    ("transport-any", ["udp/any"], [PortMatch(PROTO_UDP)]),
    ("icmp", ["icmp"], [PortMatch(PROTO_ICMP)]),
    ("any", ["any"], [PortMatch(None)]),
]


@pytest.mark.parametrize(("ports", "matches"), [c[1:] for c in PORT_CASES], ids=[c[0] for c in PORT_CASES])
def test_port_matches(ports: list[str], matches: list[PortMatch]) -> None:
    """A rule's ports become one match per transport with merged ranges (none for every port)."""
    plan = build_plan(policy(rule(1, "web", "redis", ports)), INVENTORY)
    assert [t.match for t in plan.tuples] == matches


def test_tuples_follow_evaluation_order() -> None:
    """Admin rules come first (by priority), baseline last, main rules by ID in between."""
    plan = build_plan(
        policy(
            rule(5, "web", "redis"),
            rule(2, "web", "redis", tier="baseline", priority=1),
            rule(3, "web", "redis", tier="admin", action="deny", priority=9),
            rule(4, "web", "redis", tier="admin", action="accept", priority=1),
            rule(1, "web", "redis"),
        ),
        INVENTORY,
    )
    assert [t.rule_id for t in plan.tuples] == [4, 3, 1, 5, 2]


def test_mode_sets() -> None:
    """Pods land in the protect or relaxed set by their mode; nodes are in neither."""
    plan = build_plan(policy(rule(1, "web", "redis")), INVENTORY)
    assert text(plan.protect, 4) == ("10.0.0.2/31", "10.0.0.9")
    assert text(plan.relaxed, 4) == ("10.0.0.20",)
    assert text(plan.pods, 6) == ("fd00::2", "fd00::9")


QUARANTINE_CASES = [
    ("workload", ["shop/web"], ("10.0.0.2/31",), ("fd00::2",)),
    ("pod", ["redis-1"], ("10.0.0.9",), ("fd00::9",)),
    ("address", ["10.0.0.20", "fd00::9"], ("10.0.0.20",), ("fd00::9",)),
]


@pytest.mark.parametrize(("refs", "v4", "v6"), [c[1:] for c in QUARANTINE_CASES], ids=[c[0] for c in QUARANTINE_CASES])
def test_quarantine(refs: list[str], v4: tuple[str, ...], v6: tuple[str, ...]) -> None:
    """Quarantine takes workloads, pods or addresses and holds all their addresses."""
    plan = build_plan(policy(), INVENTORY, quarantine=refs)
    assert (text(plan.quarantine, 4), text(plan.quarantine, 6)) == (v4, v6)


def test_quarantine_of_unknown_name_is_refused() -> None:
    """Naming nothing known is an error that names it, never a silent no-op."""
    with pytest.raises(PlanError, match="'shop/nope'"):
        build_plan(policy(), INVENTORY, quarantine=["shop/nope"])


@pytest.mark.parametrize(
    ("keep", "remove", "expected"),
    [
        ([(1, 10)], [(3, 4)], ((1, 2), (5, 10))),
        ([(1, 10)], [(0, 20)], ()),
        ([(1, 3), (4, 6)], [], ((1, 6),)),
        ([(5, 9)], [(1, 5), (9, 12)], ((6, 8),)),
    ],
    ids=["hole", "all", "adjacent-merge", "both-ends"],
)
def test_interval_arithmetic(
    keep: list[tuple[int, int]], remove: list[tuple[int, int]], expected: tuple[tuple[int, int], ...]
) -> None:
    """Subtraction cuts holes and trims ends; results are merged."""
    assert subtract(keep, remove) == expected
    assert merge(expected) == expected


# --- agreement with the engine ----------------------------------------------------------------


def kernel_decision(plan: KernelPlan, src: str, dst: str, proto: int, port: int) -> str:
    """What the rendered chains decide for a new connection (a model of nft.render_ruleset)."""
    s, d = ipaddress.ip_address(src), ipaddress.ip_address(dst)

    def has(name: str, a: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
        return any(lo <= int(a) <= hi for lo, hi in plan.set_named(name).intervals(a.version))

    def covers(m: PortMatch) -> bool:
        if m.proto is None:
            return True
        if m.proto == PROTO_ICMP:
            return proto == PROTO_ICMP
        return m.proto == proto and (not m.ranges or any(lo <= port <= hi for lo, hi in m.ranges))

    skip_admin = False
    for t in plan.tuples:
        if skip_admin and t.tier == "admin":
            continue
        if has(t.src, s) and has(t.dst, d) and covers(t.match):
            if t.verdict is Verdict.PASS:
                skip_admin = True
                continue
            if t.verdict is not Verdict.DENY:
                return t.verdict.value
            break
    order = [("mode_protect", "deny"), ("mode_relaxed", "observe")]
    if not plan.strict:
        order.reverse()
    for name, outcome in order:
        if has(name, s) or has(name, d):
            return outcome
    return "deny" if plan.default_mode == "protect" else "observe"


AGREE_POLICIES = [
    ("allow-and-default", policy(rule(1, "web", "redis"))),
    ("deny-before-allow", policy(rule(1, "web", "zone.data", action="deny"), rule(2, "containers", "redis"))),
    ("admin-pass", policy(rule(1, "web", "redis", tier="admin", action="pass", priority=1),
                          rule(2, "web", "redis", tier="admin", action="deny", priority=2), rule(3, "web", "redis"))),
    ("monitor-end", policy(rule(1, "batch", "redis", action="deny"))),
    ("strict", policy(rule(1, "web", "redis", ["udp/53"]), strict=True)),
    ("default-monitor", policy(rule(1, "nodes", "containers", ["any"]), mode="monitor")),
    ("address-groups", policy(rule(1, "web", "office", ["tcp/22"]), rule(2, "lan", "web", ["tcp/80"]))),
]  # fmt: skip

CONNECTIONS = [
    (src, dst, proto, port)
    for src in ("10.0.0.2", "10.0.0.20", "10.0.0.1", "fd00::2", "192.168.1.5")
    for dst in ("10.0.0.9", "10.0.0.3", "192.168.7.1", "192.168.9.1", "fd00::9")
    for proto, port in ((PROTO_TCP, 6379), (PROTO_TCP, 22), (PROTO_TCP, 80), (PROTO_UDP, 53))
    if ipaddress.ip_address(src).version == ipaddress.ip_address(dst).version
]


@pytest.mark.parametrize("pol", [c[1] for c in AGREE_POLICIES], ids=[c[0] for c in AGREE_POLICIES])
def test_kernel_agrees_with_engine(pol: Policy) -> None:
    """For connections without an application, the kernel's decision is the engine's verdict:
    allow → allowed, deny → rejected, alert/learn (or an allowed violation) → handed to userspace."""
    plan = build_plan(pol, INVENTORY)
    engine = PolicyEngine(pol)
    resolver = Resolver(INVENTORY)
    for src, dst, proto, port in CONNECTIONS:
        obs = Observation(resolver.resolve(src, 40000), resolver.resolve(dst, port), proto, port, None)
        if not ({src, dst} & {"10.0.0.2", "10.0.0.3", "10.0.0.9", "10.0.0.20", "fd00::2", "fd00::9"}):
            continue  # no pod at either end: the kernel does not police it
        v = engine.evaluate(obs)
        expected = "allow" if v.action == "allow" and not v.violation else "deny" if v.action == "deny" else "observe"
        assert kernel_decision(plan, src, dst, proto, port) == expected, (src, dst, proto, port, v.explanation)
