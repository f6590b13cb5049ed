"""The policy model: port specs, addresses, criteria, rule IDs and checks across objects."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from podwall.core.errors import InputError
from podwall.core.types import PROTO_ICMP, PROTO_TCP, PROTO_UDP
from podwall.policy.model import (
    Criterion,
    Group,
    PolicySpec,
    Rule,
    parse_address,
    parse_port_spec,
    validate_policy,
)
from tests.unit.policy.policy_testkit import crit, grp, make_policy, rule, svc_grp

PORT_OK: list[tuple[str, str, int | None, int, int]] = [
    ("any", "any", None, 0, 0),
    ("icmp", "icmp", PROTO_ICMP, 0, 0),
    ("tcp/80", "tcp/80", PROTO_TCP, 80, 80),
    ("UDP/53", "udp/53", PROTO_UDP, 53, 53),
    ("tcp/8000-8100", "tcp/8000-8100", PROTO_TCP, 8000, 8100),
    ("tcp/80-80", "tcp/80", PROTO_TCP, 80, 80),
    ("tcp/any", "tcp/any", PROTO_TCP, 1, 65535),
    ("udp/65535", "udp/65535", PROTO_UDP, 65535, 65535),
]


@pytest.mark.parametrize(("text", "canon", "proto", "lo", "hi"), PORT_OK, ids=[c[0] for c in PORT_OK])
def test_port_spec_parses(text: str, canon: str, proto: int | None, lo: int, hi: int) -> None:
    """Valid port entries parse to their canonical text, transport and inclusive range."""
    spec = parse_port_spec(text)
    assert (spec.text, spec.proto, spec.lo, spec.hi) == (canon, proto, lo, hi)


PORT_BAD: list[tuple[str, str, str]] = [
    ("too-high", "tcp/65536", "out of range 1-65535"),
    ("zero", "tcp/0", "out of range"),
    ("reversed", "tcp/9000-8000", "reversed"),
    ("unknown-transport", "sctp/80", "unknown transport 'sctp'"),
    ("no-port", "tcp", "needs a port"),
    ("no-transport", "80", "needs a transport"),
    ("garbage", "http", "invalid port"),
    ("not-a-number", "tcp/eighty", "expected a number"),
    ("open-range", "tcp/80-", "expected a number"),
]


@pytest.mark.parametrize(("text", "message"), [c[1:] for c in PORT_BAD], ids=[c[0] for c in PORT_BAD])
def test_port_spec_rejects(text: str, message: str) -> None:
    """Invalid port entries are rejected with a message saying what is wrong."""
    with pytest.raises(ValueError, match=message):
        parse_port_spec(text)


ADDRESS_BAD: list[tuple[str, str, str]] = [
    ("bad-octet", "10.0.0.256", "invalid address"),
    ("bad-prefix", "10.0.0.0/33", "invalid address"),
    ("reversed-range", "10.0.0.9-10.0.0.1", "reversed"),
    ("mixed-range", "10.0.0.1-fd00::1", "mixes IPv4 and IPv6"),
    ("half-range", "10.0.0.1-foo", "both ends"),
    ("spaces", "not a host", "expected an IP"),
    ("empty", "", "must not be empty"),
]


@pytest.mark.parametrize(("text", "message"), [c[1:] for c in ADDRESS_BAD], ids=[c[0] for c in ADDRESS_BAD])
def test_address_rejects(text: str, message: str) -> None:
    """Invalid address values are rejected with the reason."""
    with pytest.raises(ValueError, match=message):
        parse_address(text)


def test_address_hostname_parses_but_never_contains() -> None:
    """A hostname or *.domain is a valid address value that matches no IP (no DNS information yet)."""
    import ipaddress

    spec = parse_address("*.Example.com")
    assert spec.hostname == "*.example.com"
    assert not spec.contains(ipaddress.ip_address("93.184.216.34"))


CRITERION_BAD: list[tuple[str, dict[str, Any], str]] = [
    ("bad-op", crit("service", "eq", "x"), "op"),
    ("bad-regex", crit("service", "regex", "a("), "invalid regular expression"),
    ("bad-not-regex", crit("service", "!regex", "[z-a]"), "invalid regular expression"),
    ("address-regex", crit("address", "regex", "10\\..*"), "address criteria support = and != only"),
    ("address-invalid", crit("address", "=", "10.0.0.300"), "invalid address"),
    ("bad-key", crit("my key", "=", "x"), "invalid criterion key"),
    ("bad-ns-label", crit("ns:bad key", "=", "x"), "invalid namespace label name"),
    ("empty-prefix", crit("service", "prefix", ""), "must not be empty"),
    ("number-value", {"key": "version", "op": "=", "value": 2}, "valid string"),
    ("extra-field", {**crit("service", "=", "x"), "note": "n"}, "Extra inputs"),
]


@pytest.mark.parametrize(("data", "message"), [c[1:] for c in CRITERION_BAD], ids=[c[0] for c in CRITERION_BAD])
def test_criterion_rejects(data: dict[str, Any], message: str) -> None:
    """Invalid criteria (operator, regex, address, key, value type, unknown field) are rejected."""
    with pytest.raises(ValidationError, match=message):
        Criterion.model_validate(data)


def test_criterion_label_keys_accepted() -> None:
    """Label names with a DNS prefix and `ns:` keys are valid criterion keys."""
    for key in ("app.kubernetes.io/name", "ns:kubernetes.io/metadata.name", "tier"):
        assert Criterion(key=key, op="=", value="x").key == key


GROUP_BAD: list[tuple[str, dict[str, Any], str]] = [
    ("no-criteria", {"name": "g", "criteria": []}, "needs criteria, or members"),
    ("mixed", grp("g", crit("address", "=", "10.0.0.0/8"), crit("service", "=", "x")), "not both"),
    ("address-with-mode", grp("g", crit("address", "=", "10.0.0.0/8"), mode="protect"), "no mode"),
    ("bad-mode", grp("g", crit("service", "=", "x"), mode="enforce"), "discover"),
    ("bad-name", grp("bad name", crit("service", "=", "x")), "invalid group name"),
]


@pytest.mark.parametrize(("data", "message"), [c[1:] for c in GROUP_BAD], ids=[c[0] for c in GROUP_BAD])
def test_group_rejects(data: dict[str, Any], message: str) -> None:
    """Groups need criteria, may not mix addresses and workloads, and address groups have no mode."""
    with pytest.raises(ValidationError, match=message):
        Group.model_validate(data)


RULE_BAD: list[tuple[str, dict[str, Any], str]] = [
    ("id-zero", rule(0, "a", "b"), "reserved for the implicit deny"),
    ("id-gap", rule(10000, "a", "b"), "in no range"),
    ("id-gap", rule(100000, "a", "b"), "in no range"),
    ("id-above-ranges", rule(120000, "a", "b"), "in no range"),
    ("id-string", {**rule(1, "a", "b"), "id": "1"}, "valid integer"),
    ("origin-user-high", {**rule(10001, "a", "b"), "origin": "user"}, "origin user needs an ID in 1-9999"),
    ("origin-learned-low", {**rule(5, "a", "b"), "origin": "learned"}, "origin learned needs an ID in 10001"),
    ("any-with-port", rule(1, "a", "b", ("any", "tcp/80")), "cannot be combined"),
    ("any-with-app", rule(1, "a", "b", apps=("any", "http")), "cannot be combined"),
    ("bad-app", rule(1, "a", "b", apps=("h t t p",)), "invalid application name"),
    ("no-ports", rule(1, "a", "b", ()), "at least 1 item"),
    ("bad-action", rule(1, "a", "b", action="permit"), "'allow', 'deny', 'accept' or 'pass'"),
    ("disabled-string", {**rule(1, "a", "b"), "disabled": "yes"}, "valid boolean"),
]


@pytest.mark.parametrize(("data", "message"), [c[1:] for c in RULE_BAD], ids=[c[0] for c in RULE_BAD])
def test_rule_rejects(data: dict[str, Any], message: str) -> None:
    """Rules reject out-of-range IDs, origins that contradict the ID, and malformed ports or apps."""
    with pytest.raises(ValidationError, match=message):
        Rule.model_validate(data)


def test_rule_defaults() -> None:
    """A rule defaults to any port, any application, allow, and the origin its ID range implies."""
    user = Rule.model_validate({"id": 3, "from": "a", "to": "b"})
    learned = Rule(id=10003, from_="a", to="b", ports=["TCP/80"], applications=["Redis"])
    assert (user.ports, user.applications, user.action, user.origin) == (["any"], ["any"], "allow", "user")
    assert (learned.origin, learned.ports, learned.applications) == ("learned", ["tcp/80"], ["redis"])
    assert learned.model_dump()["from"] == "a"


CROSS_BAD: list[tuple[str, list[dict[str, Any]], list[dict[str, Any]], str, str]] = [
    (
        "undefined-from",
        [svc_grp("a")],
        [rule(1, "nv.x.demo", "nv.a.demo")],
        "spec.rules[0].from",
        "undefined group",
    ),
    (
        "undefined-to",
        [svc_grp("a")],
        [rule(1, "nv.a.demo", "nv.y.demo")],
        "spec.rules[0].to",
        "undefined group",
    ),
    (
        "duplicate-id",
        [],
        [rule(1, "external", "containers"), rule(1, "nodes", "containers")],
        "spec.rules[1].id",
        "duplicate rule ID 1",
    ),
    (
        "duplicate-name",
        [],
        [rule(1, "external", "containers", name="n"), rule(2, "nodes", "containers", name="n")],
        "spec.rules[1].name",
        "duplicate rule name",
    ),
    ("duplicate-group", [svc_grp("a"), svc_grp("a")], [], "spec.groups[1].name", "duplicate group name"),
    ("reserved-group", [grp("nodes", crit("node", "=", "n1"))], [], "spec.groups[0].name", "built in"),
]


@pytest.mark.parametrize(
    ("groups", "rules", "path", "message"), [c[1:] for c in CROSS_BAD], ids=[c[0] for c in CROSS_BAD]
)
def test_policy_cross_checks(
    groups: list[dict[str, Any]], rules: list[dict[str, Any]], path: str, message: str
) -> None:
    """A policy built in code is checked across objects and fails with a located InputError."""
    with pytest.raises(InputError) as info:
        make_policy(groups, rules)
    assert [p.location.path for p in info.value.problems] == [path]
    assert message in info.value.problems[0].message


def test_reserved_groups_usable_without_definition() -> None:
    """Rules may name external, nodes and containers without defining them."""
    policy = make_policy([], [rule(1, "external", "containers"), rule(2, "nodes", "containers")])
    assert [r.id for r in policy.spec.rules] == [1, 2]


def test_validate_policy_after_copy() -> None:
    """validate_policy re-checks a policy changed without validation (model_copy) and locates the fault."""
    policy = make_policy([svc_grp("a")], [rule(1, "external", "nv.a.demo")])
    assert validate_policy(policy) == policy
    broken = policy.model_copy(update={"spec": PolicySpec(groups=[], rules=policy.spec.rules)})
    with pytest.raises(InputError) as info:
        validate_policy(broken)
    assert [(p.location.obj, p.location.path) for p in info.value.problems] == [("rule 1", "spec.rules[0].to")]
