"""Explanations: the paragraph and the JSON name the deciding rule, the failing criteria and the modes."""

from __future__ import annotations

import json
from typing import Any

import pytest

from podwall.core.types import PROTO_ICMP
from podwall.policy.evaluate import PolicyEngine
from tests.unit.policy.policy_testkit import ext, make_policy, obs, rule, svc_grp, wl

EXPLOIT = wl("exploit", ip="10.1.0.66")
NODE = wl("node", ip="10.1.0.7")
REDIS = wl("redis", ip="10.1.0.9", port=6379)
GROUPS = [
    svc_grp("exploit", mode="protect"),
    svc_grp("node", mode="monitor"),
    svc_grp("redis", mode="monitor"),
]


def test_implicit_deny_paragraph() -> None:
    """An implicit deny reads: no rule allows, rule 0, both modes and the less restrictive side."""
    engine = PolicyEngine(make_policy(GROUPS))
    text = engine.evaluate(obs(EXPLOIT, REDIS, 6379, "redis")).explanation.text
    assert text.startswith(
        "No rule allows nv.exploit.demo → nv.redis.demo on tcp/6379 (redis): implicit deny (rule 0)."
    )
    assert text.endswith(
        "Client group nv.exploit.demo is in protect mode, server group nv.redis.demo in monitor mode; "
        "effective mode monitor (the less restrictive side wins): violation alerted."
    )
    assert "No rule covers these groups on tcp/6379." in text


def test_allow_paragraph_names_rule() -> None:
    """An allowed connection names the rule that allowed it."""
    rules = [rule(10003, "nv.node.demo", "nv.redis.demo", ("tcp/6379",), ("redis",), name="node to redis")]
    engine = PolicyEngine(make_policy(GROUPS, rules))
    verdict = engine.evaluate(obs(NODE, REDIS, 6379, "redis"))
    assert verdict.explanation.text == (
        "Rule 10003 (node to redis) allows nv.node.demo → nv.redis.demo on tcp/6379 (redis). "
        "Client group nv.node.demo is in monitor mode, server group nv.redis.demo in monitor mode; "
        "effective mode monitor: allowed."
    )
    detail = verdict.explanation.to_dict()
    assert detail["deciding_rule"] == {
        "id": 10003,
        "name": "node to redis",
        "action": "allow",
        "implicit": False,
        "tier": "main",
        "hits": 1,
    }
    assert detail["outcome"] == {"action": "allow", "violation": False}


FAIL_CASES: list[tuple[str, dict[str, Any], str | None, list[str], str]] = [
    (
        "from",
        rule(10003, "nv.node.demo", "nv.redis.demo", ("tcp/6379",), ("redis",)),
        "redis",
        ["from"],
        "the client is not in group nv.node.demo",
    ),
    (
        "port",
        rule(10005, "nv.exploit.demo", "nv.redis.demo", ("tcp/6380", "udp/6379")),
        "redis",
        ["port"],
        "tcp/6379 is not among its ports (tcp/6380, udp/6379)",
    ),
    (
        "app",
        rule(10006, "nv.exploit.demo", "nv.redis.demo", ("tcp/6379",), ("http",)),
        "redis",
        ["app"],
        "application redis is not among its applications (http)",
    ),
    (
        "app-unidentified",
        rule(10007, "nv.exploit.demo", "nv.redis.demo", ("tcp/6379",), ("redis",)),
        None,
        ["app"],
        "the application was not identified and the rule requires redis",
    ),
    (
        "disabled",
        rule(10008, "nv.exploit.demo", "nv.redis.demo", ("tcp/6379",), disabled=True),
        "redis",
        ["disabled"],
        "the rule is disabled",
    ),
    (
        "from-and-app",
        rule(10009, "nv.node.demo", "nv.redis.demo", ("tcp/6379",), ("http",)),
        "redis",
        ["from", "app"],
        "the client is not in group nv.node.demo; application redis is not among its applications (http)",
    ),
]


@pytest.mark.parametrize(
    ("the_rule", "app", "failed", "reason"), [c[1:] for c in FAIL_CASES], ids=[c[0] for c in FAIL_CASES]
)
def test_failing_criterion_named(the_rule: dict[str, Any], app: str | None, failed: list[str], reason: str) -> None:
    """A consulted rule that did not match is listed with the criterion it failed, in JSON and in words."""
    engine = PolicyEngine(make_policy(GROUPS, [the_rule]))
    verdict = engine.evaluate(obs(EXPLOIT, REDIS, 6379, app))
    assert verdict.rule_id == 0
    consulted = verdict.explanation.to_dict()["rules_consulted"]
    assert len(consulted) == 1
    assert consulted[0]["id"] == the_rule["id"]
    assert consulted[0]["failed"] == failed
    assert "; ".join(consulted[0]["reasons"]) == reason
    assert f"Rule {the_rule['id']} does not apply: {reason}." in verdict.explanation.text


def test_rules_towards_other_servers_not_consulted() -> None:
    """Only rules towards the server's groups on that port are consulted, so the list stays relevant."""
    rules = [
        rule(10004, "nv.exploit.demo", "nv.node.demo", ("tcp/6379",)),
        rule(10005, "nv.node.demo", "containers", ("tcp/6379",), ("http",)),
    ]
    engine = PolicyEngine(make_policy(GROUPS, rules))
    consulted = engine.evaluate(obs(EXPLOIT, REDIS, 6379, "redis")).explanation.to_dict()["rules_consulted"]
    assert [(c["id"], c["failed"]) for c in consulted] == [(10005, ["from", "app"])]


def test_explicit_deny_explained() -> None:
    """An explicit deny names the denying rule and the rules before it that did not apply."""
    rules = [
        rule(5, "nv.exploit.demo", "nv.redis.demo", ("tcp/6379",), ("http",)),
        rule(7, "nv.exploit.demo", "containers", action="deny", name="quarantine"),
        rule(9, "nv.exploit.demo", "nv.redis.demo", ("tcp/6379",)),
    ]
    engine = PolicyEngine(make_policy(GROUPS, rules, default_mode="protect"))
    verdict = engine.evaluate(obs(EXPLOIT, REDIS, 6379, "redis"))
    text = verdict.explanation.text
    assert text.startswith("Rule 7 (quarantine) denies nv.exploit.demo → nv.redis.demo on tcp/6379 (redis).")
    assert "Rule 5 does not apply: application redis is not among its applications (http)." in text
    assert "rule 9" not in text.lower()
    ids = [c["id"] for c in verdict.explanation.to_dict()["rules_consulted"]]
    assert ids == [5]
    assert text.endswith("effective mode monitor (the less restrictive side wins): violation alerted.")


def test_discover_outcomes_in_words() -> None:
    """Discover mode says a connection was learned, or that an explicit deny was recorded but allowed."""
    groups = [svc_grp("a", mode="discover"), svc_grp("b", mode="discover")]
    implicit = PolicyEngine(make_policy(groups)).evaluate(obs(wl("a"), wl("b"), 80, "http"))
    assert implicit.explanation.text.endswith("not a violation in discover mode, allowed and learned.")
    explicit = PolicyEngine(make_policy(groups, [rule(1, "nv.a.demo", "nv.b.demo", action="deny")])).evaluate(
        obs(wl("a"), wl("b"), 80, "http")
    )
    assert explicit.explanation.text.endswith("violation recorded, connection allowed (discover mode does not block).")


def test_modes_in_words_when_one_side_has_none() -> None:
    """An end without a mode is said to be in no workload group; the other end's mode applies."""
    engine = PolicyEngine(make_policy(GROUPS))
    verdict = engine.evaluate(obs(ext(), REDIS, 6379, None))
    assert (
        "Client external is in no workload group and has no mode, server group nv.redis.demo is in "
        "monitor mode; effective mode monitor: violation alerted." in verdict.explanation.text
    )
    assert verdict.explanation.to_dict()["modes"] == {
        "client": None,
        "server": "monitor",
        "effective": "monitor",
        "reason": "only the server has a mode",
        "strict": False,
    }


def test_icmp_and_default_mode_in_words() -> None:
    """ICMP is named as such, and with no modes the explanation cites the policy default."""
    engine = PolicyEngine(make_policy([], default_mode="protect"))
    text = engine.evaluate(obs(ext(), ext("198.51.100.1"), 0, None, PROTO_ICMP)).explanation.text
    assert text.startswith("No rule allows external → external on icmp: implicit deny (rule 0).")
    assert text.endswith("effective mode protect (the policy default): violation blocked.")


def test_json_is_complete_and_serialisable() -> None:
    """The JSON form carries the connection, both ends with groups and modes, and serialises as JSON."""
    engine = PolicyEngine(make_policy(GROUPS, [rule(10003, "nv.node.demo", "nv.redis.demo", ("tcp/6379",))]))
    detail = engine.evaluate(obs(EXPLOIT, REDIS, 6379, "redis")).explanation.to_dict()
    json.dumps(detail)
    assert detail["connection"] == {
        "client": "nv.exploit.demo",
        "server": "nv.redis.demo",
        "transport": "tcp",
        "port": 6379,
        "application": "redis",
    }
    assert detail["client"]["groups"] == ["nv.exploit.demo", "containers"]
    assert detail["client"]["mode_group"] == "nv.exploit.demo"
    assert detail["server"]["ip"] == "10.1.0.9"
    assert detail["deciding_rule"]["implicit"] is True
    assert detail["modes"]["reason"] == "less restrictive side wins"


def test_consulted_list_is_bounded() -> None:
    """Many failing candidates are listed up to a cap and the rest counted, and the text stays short."""
    rules = [rule(i, "nv.node.demo", "nv.redis.demo", ("tcp/6379",)) for i in range(1, 41)]
    engine = PolicyEngine(make_policy(GROUPS, rules))
    explanation = engine.evaluate(obs(EXPLOIT, REDIS, 6379, "redis")).explanation
    detail = explanation.to_dict()
    assert len(detail["rules_consulted"]) == 32
    assert detail["rules_omitted"] == 8
    assert "(37 more rule(s) consulted)" in explanation.text


def test_event_verdict() -> None:
    """A verdict converts to the event schema's verdict with its explanation text and detail."""
    engine = PolicyEngine(make_policy(GROUPS))
    verdict = engine.evaluate(obs(EXPLOIT, REDIS, 6379, "redis"))
    event = verdict.to_event_verdict()
    assert (event.action, event.rule_id, event.mode) == ("alert", 0, "monitor")
    assert event.explanation == verdict.explanation.text
    assert event.detail["outcome"]["violation"] is True
