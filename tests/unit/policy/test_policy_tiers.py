"""Tiers, priorities, zones, DNS-name groups, strict mode, staged rules, hit counts and their explanations."""

from __future__ import annotations

from typing import Any

import pytest

from podwall.core.types import Endpoint, Observation
from podwall.policy.evaluate import PolicyEngine
from podwall.policy.model import Policy
from tests.unit.policy.policy_testkit import crit, ext, grp, make_policy, obs, rule, svc_grp, wl

WEB, API, DB = wl("web", ip="10.1.0.1"), wl("api", ip="10.1.0.2"), wl("db", ip="10.1.0.3")
GROUPS = [svc_grp("web"), svc_grp("api"), svc_grp("db")]


def tiered(
    rule_id: int, frm: str, to: str, action: str, tier: str | None = None, priority: int | None = None, **extra: Any
) -> dict[str, Any]:
    out = rule(rule_id, frm, to, action=action)
    if tier is not None:
        out["tier"] = tier
    if priority is not None:
        out["priority"] = priority
    out.update(extra)
    return out


TIER_CASES: list[tuple[str, list[dict[str, Any]], int, str]] = [
    (
        "admin-deny-beats-user-allow",
        [tiered(1, "nv.web.demo", "nv.db.demo", "allow"), tiered(2, "nv.web.demo", "nv.db.demo", "Deny", "admin", 5)],
        2,
        "deny",
    ),
    (
        "admin-accept-beats-user-deny",
        [tiered(1, "nv.web.demo", "nv.db.demo", "deny"), tiered(2, "nv.web.demo", "nv.db.demo", "Accept", "admin", 5)],
        2,
        "allow",
    ),
    (
        "admin-priority-before-id",
        [
            tiered(3, "nv.web.demo", "nv.db.demo", "accept", "admin", 50),
            tiered(9, "nv.web.demo", "nv.db.demo", "deny", "admin", 10),
        ],
        9,
        "deny",
    ),
    (
        "admin-same-priority-by-id",
        [
            tiered(9, "nv.web.demo", "nv.db.demo", "deny", "admin", 10),
            tiered(3, "nv.web.demo", "nv.db.demo", "accept", "admin", 10),
        ],
        3,
        "allow",
    ),
    (
        "pass-skips-rest-of-admin",
        [
            tiered(1, "nv.web.demo", "nv.db.demo", "pass", "admin", 1),
            tiered(2, "nv.web.demo", "nv.db.demo", "deny", "admin", 2),
            tiered(5, "nv.web.demo", "nv.db.demo", "allow"),
        ],
        5,
        "allow",
    ),
    (
        "federated-before-user",
        [tiered(1, "nv.web.demo", "nv.db.demo", "allow"), tiered(100001, "nv.web.demo", "nv.db.demo", "deny")],
        100001,
        "deny",
    ),
    (
        "policy-as-code-by-priority",
        [
            tiered(110001, "nv.web.demo", "nv.db.demo", "allow", priority=9),
            tiered(110002, "nv.web.demo", "nv.db.demo", "deny", priority=1),
        ],
        110002,
        "deny",
    ),
    (
        "federated-before-policy-as-code",
        [
            tiered(110001, "nv.web.demo", "nv.db.demo", "allow", priority=0),
            tiered(100005, "nv.web.demo", "nv.db.demo", "deny"),
        ],
        100005,
        "deny",
    ),
    (
        "user-before-learned",
        [tiered(10001, "nv.web.demo", "nv.db.demo", "allow"), tiered(7, "nv.web.demo", "nv.db.demo", "deny")],
        7,
        "deny",
    ),
    (
        "baseline-after-user",
        [
            tiered(1, "nv.web.demo", "nv.db.demo", "allow"),
            tiered(2, "nv.web.demo", "nv.db.demo", "deny", "baseline", 0),
        ],
        1,
        "allow",
    ),
    (
        "baseline-when-nothing-else",
        [
            tiered(2, "nv.web.demo", "nv.db.demo", "deny", "baseline", 20),
            tiered(3, "nv.web.demo", "nv.db.demo", "allow", "baseline", 10),
        ],
        3,
        "allow",
    ),
    ("mode-default", [tiered(2, "nv.api.demo", "nv.db.demo", "allow", "baseline", 1)], 0, "deny"),
]


@pytest.mark.parametrize(("rules", "rule_id", "action"), [c[1:] for c in TIER_CASES], ids=[c[0] for c in TIER_CASES])
def test_tier_order(rules: list[dict[str, Any]], rule_id: int, action: str) -> None:
    """Tiers go admin (Pass skips the rest) → federated → policy-as-code → user/learned → baseline → default."""
    engine = PolicyEngine(make_policy(GROUPS, rules, default_mode="protect"))
    verdict = engine.evaluate(obs(WEB, DB, 5432, "postgresql"))
    assert (verdict.rule_id, verdict.action) == (rule_id, action)


def test_tiers_in_explanation() -> None:
    """The explanation lists the tiers consulted in order and says which rule passed the connection on."""
    rules = [
        tiered(1, "nv.web.demo", "nv.db.demo", "pass", "admin", 1, name="hand over"),
        tiered(4, "nv.web.demo", "nv.db.demo", "allow", "baseline", 3),
    ]
    verdict = PolicyEngine(make_policy(GROUPS, rules)).evaluate(obs(WEB, DB, 5432))
    detail = verdict.explanation.to_dict()
    assert [(t["tier"], t["result"], t["rule_id"]) for t in detail["tiers"]] == [
        ("admin", "passed", 1),
        ("baseline", "matched", 4),
    ]
    assert "Rule 1 passed the connection on from the admin tier" in verdict.explanation.text
    assert "in the baseline tier allows" in verdict.explanation.text
    assert detail["deciding_rule"]["tier"] == "baseline"


def test_default_tier_step() -> None:
    """With no matching rule, the last tier step is the mode default (rule 0)."""
    rules = [tiered(2, "nv.api.demo", "nv.db.demo", "deny", "admin", 1)]
    steps = PolicyEngine(make_policy(GROUPS, rules)).evaluate(obs(WEB, DB, 5432)).explanation.tiers
    assert [(s.tier, s.result) for s in steps] == [("default", "default")]


ZONE_GROUPS = [
    *GROUPS,
    {"name": "zone.cde", "members": ["nv.db.demo", "zone.inner"]},
    {"name": "zone.inner", "members": ["nv.api.demo"]},
    {"name": "zone.locked", "members": ["nv.db.demo"], "mode": "protect"},
]

ZONE_CASES: list[tuple[str, Endpoint, bool]] = [
    ("direct-member", DB, True),
    ("nested-zone-member", API, True),
    ("not-member", WEB, False),
]


@pytest.mark.parametrize(("endpoint", "member"), [c[1:] for c in ZONE_CASES], ids=[c[0] for c in ZONE_CASES])
def test_zone_membership(endpoint: Endpoint, member: bool) -> None:
    """A zone contains the endpoints of its member groups, nested zones included."""
    engine = PolicyEngine(make_policy(ZONE_GROUPS))
    assert ("zone.cde" in engine.member_groups(endpoint)) is member


def test_zone_as_rule_target_and_mode() -> None:
    """A zone is usable as a rule's `to`, and a zone's mode applies to its workloads."""
    rules = [rule(1, "nv.web.demo", "zone.cde", ("tcp/5432",))]
    engine = PolicyEngine(make_policy(ZONE_GROUPS, rules, default_mode="monitor"))
    assert engine.evaluate(obs(WEB, DB, 5432)).rule_id == 1
    assert engine.evaluate(obs(WEB, API, 5432)).rule_id == 1
    assert engine.membership(DB).mode == "protect"
    assert engine.membership(DB).mode_group == "zone.locked"


DNS_GROUPS = [
    *GROUPS,
    grp("payments", crit("address", "=", "*.pay.example.com")),
    grp("exact", crit("address", "=", "api.example.com")),
]

NAME_CASES: list[tuple[str, str | None, str, bool]] = [
    ("wildcard-subdomain", "eu.pay.example.com", "payments", True),
    ("wildcard-deep", "a.b.pay.example.com", "payments", True),
    ("wildcard-not-apex", "pay.example.com", "payments", False),
    ("wildcard-case", "EU.Pay.Example.COM.", "payments", True),
    ("exact", "api.example.com", "exact", True),
    ("exact-other", "www.example.com", "exact", False),
    ("no-name", None, "payments", False),
]


@pytest.mark.parametrize(("name", "group", "member"), [c[1:] for c in NAME_CASES], ids=[c[0] for c in NAME_CASES])
def test_dns_name_address(name: str | None, group: str, member: bool) -> None:
    """Hostname `address` criteria match the flow's server name (wildcards cover names below the domain)."""
    engine = PolicyEngine(make_policy(DNS_GROUPS, [rule(1, "nv.web.demo", group, ("tcp/443",))]))
    verdict = engine.evaluate(Observation(WEB, ext(port=443), 6, 443, "tls", server_name=name))
    assert (group in verdict.server_groups) is member
    assert (verdict.rule_id == 1) is member


MODE_CASES: list[tuple[str, str, str, bool, str, str]] = [
    ("mixed-less-restrictive", "protect", "monitor", False, "monitor", "alert"),
    ("strict-more-restrictive", "protect", "monitor", True, "protect", "deny"),
    ("strict-client-discover", "discover", "protect", True, "protect", "deny"),
    ("strict-same", "monitor", "monitor", True, "monitor", "alert"),
    ("mixed-discover-wins", "discover", "protect", False, "discover", "learn"),
]


@pytest.mark.parametrize(
    ("client_mode", "server_mode", "strict", "effective", "action"),
    [c[1:] for c in MODE_CASES],
    ids=[c[0] for c in MODE_CASES],
)
def test_modes_strict(client_mode: str, server_mode: str, strict: bool, effective: str, action: str) -> None:
    """Without strict the less restrictive side wins; with strict each side applies its own mode."""
    groups = [svc_grp("web", mode=client_mode), svc_grp("db", mode=server_mode)]
    policy = Policy.model_validate({"metadata": {"name": "t"}, "spec": {"strict": strict, "groups": groups}})
    verdict = PolicyEngine(policy).evaluate(obs(WEB, DB, 5432))
    assert (verdict.effective_mode, verdict.action) == (effective, action)
    assert verdict.explanation.to_dict()["modes"]["strict"] is strict


STAGED_CASES: list[tuple[str, list[dict[str, Any]], tuple[str, int], tuple[str, int] | None]] = [
    ("no-staged-rules", [rule(1, "nv.web.demo", "nv.db.demo")], ("allow", 1), None),
    (
        "staged-deny-would-block",
        [
            rule(1, "nv.web.demo", "nv.db.demo"),
            {**tiered(2, "nv.web.demo", "nv.db.demo", "deny", "admin", 1), "staged": True},
        ],
        ("allow", 1),
        ("deny", 2),
    ),
    (
        "staged-allow-would-admit",
        [{**rule(5, "nv.web.demo", "nv.db.demo"), "staged": True}],
        ("deny", 0),
        ("allow", 5),
    ),
    (
        "staged-same-result",
        [rule(1, "nv.web.demo", "nv.db.demo"), {**rule(9, "nv.web.demo", "nv.db.demo"), "staged": True}],
        ("allow", 1),
        ("allow", 1),
    ),
]


@pytest.mark.parametrize(
    ("rules", "enforced", "would_be"), [c[1:] for c in STAGED_CASES], ids=[c[0] for c in STAGED_CASES]
)
def test_staged_verdicts(
    rules: list[dict[str, Any]], enforced: tuple[str, int], would_be: tuple[str, int] | None
) -> None:
    """Staged rules never change the enforced verdict; the would-be verdict applies them in their place."""
    engine = PolicyEngine(make_policy(GROUPS, rules, default_mode="protect"))
    verdict = engine.evaluate(obs(WEB, DB, 5432))
    assert (verdict.action, verdict.rule_id) == enforced
    if would_be is None:
        assert verdict.staged is None
        assert verdict.explanation.to_dict()["staged"] is None
    else:
        assert verdict.staged is not None
        assert (verdict.staged.action, verdict.staged.rule_id) == would_be
        staged = verdict.explanation.to_dict()["staged"]
        assert (staged["action"], staged["rule_id"]) == would_be
        assert staged["differs"] is (would_be != enforced)
        assert "With the staged rules in force" in verdict.explanation.text
        assert verdict.staged.explanation.text.startswith("Would be: ")


def test_staged_rule_consulted_with_reason() -> None:
    """In the enforced verdict a staged rule is listed as consulted, failing `staged`."""
    rules = [{**rule(5, "nv.web.demo", "nv.db.demo"), "staged": True}]
    verdict = PolicyEngine(make_policy(GROUPS, rules)).evaluate(obs(WEB, DB, 5432))
    consulted = verdict.explanation.to_dict()["rules_consulted"]
    assert [(c["id"], c["failed"]) for c in consulted] == [(5, ["staged"])]


def test_spec_staged_marks_every_rule() -> None:
    """`spec.staged: true` stages every rule of the spec."""
    rules = [rule(1, "nv.web.demo", "nv.db.demo"), rule(2, "nv.api.demo", "nv.db.demo")]
    policy = Policy.model_validate(
        {"metadata": {"name": "t"}, "spec": {"staged": True, "groups": GROUPS, "rules": rules}}
    )
    assert all(r.staged for r in policy.spec.rules)


def test_hit_counts() -> None:
    """The engine counts enforced decisions per rule (0 for the implicit deny) and explanations quote them."""
    engine = PolicyEngine(make_policy(GROUPS, [rule(1, "nv.web.demo", "nv.db.demo", ("tcp/5432",))]))
    for _ in range(3):
        last = engine.evaluate(obs(WEB, DB, 5432))
    engine.evaluate(obs(API, DB, 5432))
    assert engine.hit_counts() == {1: 3, 0: 1}
    assert last.explanation.to_dict()["deciding_rule"]["hits"] == 3
