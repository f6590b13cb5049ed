"""The compiled lookup: port tables, direction keys, and agreement with a naive first-match evaluator."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from podwall.core.types import PROTO_ICMP, PROTO_TCP, PROTO_UDP, Observation
from podwall.policy.compile import CompiledPolicy, PortTable, compile_rule, order_of
from podwall.policy.evaluate import PolicyEngine, normalize_app
from podwall.policy.l7match import L7Matcher
from podwall.policy.model import Policy, Rule, tier_of
from tests.unit.policy.policy_testkit import make_policy, rule, svc_grp, wl

PORT_CASES: list[tuple[str, list[tuple[int, int, int]], int, list[int]]] = [
    ("single", [(80, 80, 1)], 80, [1]),
    ("single-miss", [(80, 80, 1)], 81, []),
    ("range-inside", [(8000, 8100, 1)], 8050, [1]),
    ("range-edges", [(8000, 8100, 1)], 8100, [1]),
    ("range-past", [(8000, 8100, 1)], 8101, []),
    ("overlap-order", [(1, 65535, 9), (80, 80, 3), (70, 90, 5)], 80, [3, 5, 9]),
    ("overlap-partial", [(1, 65535, 9), (80, 80, 3), (70, 90, 5)], 75, [5, 9]),
    ("below-all", [(100, 200, 1)], 1, []),
]


@pytest.mark.parametrize(("items", "port", "ids"), [c[1:] for c in PORT_CASES], ids=[c[0] for c in PORT_CASES])
def test_port_table(items: list[tuple[int, int, int]], port: int, ids: list[int]) -> None:
    """A port table finds exactly the entries whose range covers the port, in evaluation order."""
    entries = []
    for lo, hi, rule_id in items:
        r = Rule.model_validate(rule(rule_id, "a", "b", (f"tcp/{lo}-{hi}" if lo != hi else f"tcp/{lo}",)))
        entries.append((lo, hi, compile_rule(r)[0][3]))
    table = PortTable(entries)
    assert [e.rule.id for e in table.lookup(port)] == ids
    assert table.count_before(port, None) == len(ids)


def test_lookup_by_direction_and_derived_from() -> None:
    """Ingress is keyed (server group, client group), egress the other way round; entries name their rule."""
    compiled = CompiledPolicy([Rule.model_validate(rule(7, "a", "b", ("tcp/80", "udp/53")))])
    ingress = compiled.lookup("ingress", "b", "a", PROTO_TCP, 80)
    egress = compiled.lookup("egress", "a", "b", PROTO_TCP, 80)
    assert [e.derived_from for e in ingress] == [(7,)] == [e.derived_from for e in egress]
    assert compiled.lookup("ingress", "a", "b", PROTO_TCP, 80) == ()
    assert [e.port for e in compiled.lookup("ingress", "b", "a", PROTO_UDP, 53)] == ["udp/53"]
    assert compiled.lookup("ingress", "b", "a", PROTO_UDP, 80) == ()


# ---------------------------------------------------------------------------------------------
# Naive first-match evaluator, written from docs/policy.md


def naive(policy: Policy, engine: PolicyEngine, o: Observation, staged: bool) -> tuple[int, bool]:
    """(deciding rule ID, allowed) by trying every rule in tier order, request by request."""
    cg = engine.membership(o.client).groups
    sg = engine.membership(o.server, o.server_name).groups
    app = normalize_app(o.app)
    ordered = sorted(policy.spec.rules, key=order_of)

    def one(req: Mapping[str, object] | None) -> Rule | None:
        skip_admin = False
        for r in ordered:
            if skip_admin and tier_of(r) == "admin":
                continue
            if r.disabled or (r.staged and not staged):
                continue
            if r.from_ not in cg or r.to not in sg:
                continue
            if not any(s.matches(o.proto, o.server_port) for s in r.port_specs):
                continue
            if not r.any_application and app not in r.applications:
                continue
            if r.l7 is not None and (req is None or not L7Matcher(r.l7).admits(req)):
                continue
            if r.action == "pass":
                skip_admin = True
                continue
            return r
        return None

    uses_l7 = any(r.l7 is not None for r in policy.spec.rules)
    if o.requests and uses_l7:
        results = [one(req) for req in o.requests]
        refused = [r for r in results if r is None or not r.allows]
        decided = refused[0] if refused else results[0]
        if refused:
            return (decided.id if decided is not None else 0), False
        assert decided is not None
        return decided.id, True
    r = one(None)
    return (r.id if r is not None else 0), (r is not None and r.allows)


SERVICES = ("s0", "s1", "s2")
PORTS = ("any", "icmp", "tcp/80", "tcp/70-90", "tcp/any", "udp/53", "tcp/8000-8100", "tcp/85", "udp/50-60")
ID_POOLS = {"user": (1, 9999), "learned": (10001, 99999), "federated": (100001, 109999), "pac": (110001, 119999)}


@st.composite
def rules_st(draw: st.DrawFn) -> list[dict[str, Any]]:
    n = draw(st.integers(0, 14))
    used: set[int] = set()
    out: list[dict[str, Any]] = []
    # Few groups and many admin rules, so that rules overlap and Pass, priorities and tiers interact.
    groups = ["nv.s0.demo", "nv.s1.demo", "containers", "zone.z"]
    for _ in range(n):
        pool = draw(st.sampled_from(sorted(ID_POOLS)))
        lo, _ = ID_POOLS[pool]
        rule_id = draw(st.integers(lo, lo + 40).filter(lambda i: i not in used))
        used.add(rule_id)
        tier = draw(st.sampled_from([None, "admin", "admin", "baseline"]))
        actions = {"admin": ["accept", "deny", "pass"], "baseline": ["allow", "deny"], None: ["allow", "deny"]}[tier]
        r: dict[str, Any] = rule(
            rule_id,
            draw(st.sampled_from(groups)),
            draw(st.sampled_from(groups)),
            tuple(draw(st.lists(st.sampled_from(PORTS[1:]), min_size=1, max_size=3, unique=True)))
            if draw(st.booleans())
            else ("any",),
            draw(st.sampled_from([("any",), ("http",), ("redis", "dns")])),
            draw(st.sampled_from(actions)),
            disabled=draw(st.booleans()) and draw(st.booleans()),
        )
        if tier is not None:
            r["tier"] = tier
        if tier is not None or pool == "pac":
            r["priority"] = draw(st.integers(0, 5))
        if draw(st.integers(0, 5)) == 0:
            r["staged"] = True
        if draw(st.integers(0, 3)) == 0:
            r["l7"] = {"redis": {"commands": draw(st.lists(st.sampled_from(["GET", "SET", "DEL"]), max_size=2))}}
        out.append(r)
    return out


@st.composite
def observation_st(draw: st.DrawFn) -> Observation:
    c = wl(draw(st.sampled_from(SERVICES)), ip="10.0.0.1")
    s = wl(draw(st.sampled_from(SERVICES)), ip="10.0.0.2")
    proto = draw(st.sampled_from([PROTO_TCP, PROTO_UDP, PROTO_ICMP]))
    port = 0 if proto == PROTO_ICMP else draw(st.sampled_from([53, 55, 70, 80, 85, 90, 443, 8050, 8100]))
    app = draw(st.sampled_from([None, "http", "redis", "dns"]))
    cmds = draw(st.lists(st.sampled_from(["GET", "SET", "DEL", "FLUSHALL"]), max_size=3))
    requests = tuple({"protocol": "redis", "command": cmd} for cmd in cmds)
    return Observation(c, s, proto, port, app, requests)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rules=rules_st(), observations=st.lists(observation_st(), min_size=1, max_size=6))
def test_compiled_agrees_with_naive(rules: list[dict[str, Any]], observations: list[Observation]) -> None:
    """On random policies and connections the compiled engine decides exactly as the naive evaluator, staged too."""
    groups = [svc_grp(s) for s in SERVICES] + [{"name": "zone.z", "members": ["nv.s0.demo", "nv.s1.demo"]}]
    policy = make_policy(groups, rules, default_mode="protect")
    engine = PolicyEngine(policy)
    for o in observations:
        verdict = engine.evaluate(o)
        rule_id, allowed = naive(policy, engine, o, staged=False)
        assert (verdict.rule_id, verdict.action == "allow") == (rule_id, allowed)
        if verdict.staged is not None:
            rule_id, allowed = naive(policy, engine, o, staged=True)
            assert (verdict.staged.rule_id, verdict.staged.action == "allow") == (rule_id, allowed)
