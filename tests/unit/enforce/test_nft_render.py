"""Golden text of the enforcer's nftables table (podwall/enforce/nft.py `render_ruleset`); the
iptables handoff chains are tested in test_iptables.py."""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest

from podwall.core.types import PROTO_ICMP, PROTO_TCP, PROTO_UDP
from podwall.enforce.nft import Match, render_delete, render_ruleset
from podwall.enforce.plan import PortMatch, build_plan
from podwall.inventory.model import Inventory, Labels, Node, Pod, Workload
from podwall.policy.model import Policy


def ips(*texts: str) -> tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, ...]:
    return tuple(ipaddress.ip_address(t) for t in texts)


INVENTORY = Inventory(
    nodes=(Node("n", ips("10.0.0.1")),),
    workloads=(
        Workload("web", "shop", labels=Labels({"app": "web"}), pods=(Pod("web-1", ips("10.0.0.2", "fd00::2")),)),
        Workload("redis", "shop", labels=Labels({"app": "redis"}), pods=(Pod("redis-1", ips("10.0.0.9", "fd00::9")),)),
    ),
)
GROUPS: list[dict[str, Any]] = [
    {"name": "web", "criteria": [{"key": "app", "op": "=", "value": "web"}], "mode": "monitor"},
    {"name": "redis", "criteria": [{"key": "app", "op": "=", "value": "redis"}]},
    {"name": "dns", "criteria": [{"key": "address", "op": "=", "value": "192.0.2.53"}]},
]
RULES: list[dict[str, Any]] = [
    {"id": 1, "from": "web", "to": "redis", "ports": ["tcp/6379"]},
    {"id": 2, "from": "web", "to": "redis", "ports": ["tcp/80", "tcp/8000-8080"], "applications": ["http"]},
    {"id": 3, "from": "web", "to": "dns", "ports": ["udp/53"], "action": "deny"},
    {"id": 4, "from": "web", "to": "redis", "ports": ["icmp"], "tier": "admin", "action": "pass", "priority": 1},
]


def policy(rules: list[dict[str, Any]], **spec: Any) -> Policy:
    return Policy.model_validate(
        {"metadata": {"name": "g"}, "spec": {"defaultMode": "protect", "groups": GROUPS, "rules": rules, **spec}}
    )


def sets(name: str, v4: str | None, v6: str | None) -> str:
    out = ""
    for fam, typ, elems in (("v4", "ipv4_addr", v4), ("v6", "ipv6_addr", v6)):
        out += f"\tset {name}_{fam} {{\n\t\ttype {typ}\n\t\tflags interval\n"
        out += f"\t\telements = {{ {elems} }}\n" if elems else ""
        out += "\t}\n"
    return out


GOLDEN = (
    "table inet podwall\ndelete table inet podwall\ntable inet podwall {\n"
    + sets("pods", "10.0.0.2, 10.0.0.9", "fd00::2, fd00::9")
    + sets("mode_protect", "10.0.0.9", "fd00::9")
    + sets("mode_relaxed", "10.0.0.2", "fd00::2")
    + sets("quarantine", None, None)
    + sets("g0_dns", "192.0.2.53", None)
    + sets("g1_redis", "10.0.0.9", "fd00::9")
    + sets("g2_web", "10.0.0.2", "fd00::2")
    + """\
\tchain prerouting {
\t\ttype filter hook prerouting priority mangle; policy accept;
\t\tct mark & 0x00700000 == 0x00200000 tcp flags & rst == 0 reject with tcp reset
\t\tct mark & 0x00700000 == 0x00200000 meta l4proto != tcp drop
\t}
\tchain forward {
\t\ttype filter hook forward priority filter - 5; policy accept;
\t\tjump police
\t}
\tchain input {
\t\ttype filter hook input priority filter - 5; policy accept;
\t\tiifname "lo" accept
\t\tjump police
\t}
\tchain output {
\t\ttype filter hook output priority filter - 5; policy accept;
\t\toifname "lo" accept
\t\ttcp flags & rst == rst accept
\t\tjump police
\t}
\tchain police {
\t\tip saddr @quarantine_v4 goto cut
\t\tip daddr @quarantine_v4 goto cut
\t\tip6 saddr @quarantine_v6 goto cut
\t\tip6 daddr @quarantine_v6 goto cut
\t\tct state established,related accept
\t\ticmpv6 type { nd-router-solicit, nd-router-advert, nd-neighbor-solicit, nd-neighbor-advert } accept
\t\tip saddr != @pods_v4 ip daddr != @pods_v4 accept
\t\tip6 saddr != @pods_v6 ip6 daddr != @pods_v6 accept
\t\tjump admin
\t\tip saddr @g2_web_v4 ip daddr @g1_redis_v4 tcp dport 6379 goto allowed comment "rule 1"
\t\tip6 saddr @g2_web_v6 ip6 daddr @g1_redis_v6 tcp dport 6379 goto allowed comment "rule 1"
\t\tip saddr @g2_web_v4 ip daddr @g1_redis_v4 RULE2
\t\tip6 saddr @g2_web_v6 ip6 daddr @g1_redis_v6 RULE2
\t\tip saddr @g2_web_v4 ip daddr @g0_dns_v4 udp dport 53 goto violation comment "rule 3"
\t\tgoto violation
\t}
\tchain admin {
\t\tip saddr @g2_web_v4 ip daddr @g1_redis_v4 meta l4proto icmp return comment "rule 4"
\t\tip6 saddr @g2_web_v6 ip6 daddr @g1_redis_v6 meta l4proto ipv6-icmp return comment "rule 4"
\t}
\tchain violation {
\t\tip saddr @mode_relaxed_v4 goto observe
\t\tip daddr @mode_relaxed_v4 goto observe
\t\tip6 saddr @mode_relaxed_v6 goto observe
\t\tip6 daddr @mode_relaxed_v6 goto observe
\t\tip saddr @mode_protect_v4 goto refuse
\t\tip daddr @mode_protect_v4 goto refuse
\t\tip6 saddr @mode_protect_v6 goto refuse
\t\tip6 daddr @mode_protect_v6 goto refuse
\t\tgoto refuse
\t}
\tchain allowed {
\t\tct mark set ct mark & 0xff0fffff | 0x00100000 accept
\t}
\tchain userspace {
\t\tct mark set ct mark & 0xff0fffff | 0x00300000 accept
\t}
\tchain observe {
\t\tct mark set ct mark & 0xff0fffff | 0x00400000 accept
\t}
\tchain refuse {
\t\tmeta l4proto tcp reject with tcp reset
\t\treject with icmpx admin-prohibited
\t}
\tchain cut {
\t\tmeta l4proto tcp reject with tcp reset
\t\tdrop
\t}
}
"""
).replace("RULE2", 'tcp dport { 80, 8000-8080 } goto userspace comment "rule 2: applications http"')


def test_render_ruleset_golden() -> None:
    """A small policy renders exactly: sets per group and family, tuples in evaluation order
    (admin in its own chain, pass as return), mode default, mark-setting verdict chains."""
    assert render_ruleset(build_plan(policy(RULES), INVENTORY)) == GOLDEN


def _chain(text: str, name: str) -> list[str]:
    lines = text.splitlines()
    start = lines.index(f"\tchain {name} {{")
    end = lines.index("\t}", start)
    return [line.strip() for line in lines[start + 1 : end]]


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ({}, ["relaxed", "protect", "refuse"]),
        ({"strict": True}, ["protect", "relaxed", "refuse"]),
        ({"defaultMode": "monitor"}, ["relaxed", "protect", "observe"]),
    ],
    ids=["less-restrictive-end", "strict", "default-monitor"],
)
def test_violation_chain_order(spec: dict[str, Any], expected: list[str]) -> None:
    """The mode default asks the deciding end first: relaxed ends unless strict; then the default mode."""
    lines = _chain(render_ruleset(build_plan(policy(RULES[:1], **spec), INVENTORY)), "violation")
    order = [line.split("@mode_")[1].split("_")[0] for line in lines[::4][:2]]
    assert [*order, lines[-1].split()[-1]] == expected


def test_no_admin_chain_without_admin_rules() -> None:
    """Without admin-tier rules there is neither an admin chain nor a jump to it."""
    text = render_ruleset(build_plan(policy(RULES[:1]), INVENTORY))
    assert "jump admin" not in text and "chain admin" not in text


def test_family_without_addresses_gets_no_rule() -> None:
    """A rule towards an IPv4-only group is rendered for IPv4 only."""
    lines = _chain(render_ruleset(build_plan(policy([RULES[2]]), INVENTORY)), "police")
    assert [line for line in lines if "rule 3" in line] == [
        'ip saddr @g1_web_v4 ip daddr @g0_dns_v4 udp dport 53 goto violation comment "rule 3"'
    ]


@pytest.mark.parametrize(
    ("family", "match", "expected"),
    [
        (4, PortMatch(PROTO_TCP, ((22, 22),)), "ip saddr @a_v4 ip daddr @b_v4 tcp dport 22 accept"),
        (
            6,
            PortMatch(PROTO_UDP, ((53, 53), (5353, 5355))),
            "ip6 saddr @a_v6 ip6 daddr @b_v6 udp dport { 53, 5353-5355 } accept",
        ),
        (4, PortMatch(PROTO_TCP), "ip saddr @a_v4 ip daddr @b_v4 meta l4proto tcp accept"),
        (6, PortMatch(PROTO_ICMP), "ip6 saddr @a_v6 ip6 daddr @b_v6 meta l4proto ipv6-icmp accept"),
        (4, PortMatch(None), "ip saddr @a_v4 ip daddr @b_v4 accept"),
        (4, PortMatch(132), "ip saddr @a_v4 ip daddr @b_v4 meta l4proto 132 accept"),
    ],
    ids=["tcp-port", "udp-set-v6", "tcp-any-port", "icmpv6", "any", "other-transport"],
)
def test_match_builder(family: int, match: PortMatch, expected: str) -> None:
    """The immutable match builder renders each port match per family."""
    base = Match().saddr(family, "a")
    built = base.daddr(family, "b").ports(family, match)
    assert built.render("accept") == expected
    assert base.parts == (f"{'ip' if family == 4 else 'ip6'} saddr @a_v{family}",)  # builders never mutate


def test_delete_script() -> None:
    """Removal works whether or not the table exists."""
    assert render_delete() == "table inet podwall\ndelete table inet podwall\n"
