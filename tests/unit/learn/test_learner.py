"""The learner: observed connections to proposed rules and groups, deterministically, NeuVector style."""

from __future__ import annotations

import random
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from podwall.core.types import PROTO_ICMP, PROTO_TCP, PROTO_UDP, Endpoint, Observation
from podwall.learn.learner import MAX_LEARNED_PORTS, learn
from podwall.policy.evaluate import PolicyEngine
from podwall.policy.formats.podwall_yaml import dump_policy, parse_policy
from podwall.policy.model import Policy


def wl(service: str, ns: str = "demo", ip: str = "10.1.0.1", port: int = 40000) -> Endpoint:
    group = f"nv.{service}.{ns}"
    return Endpoint(
        ip=ip,
        port=port,
        group=group,
        workload=f"{ns}/{service}",
        namespace=ns,
        service=service,
        kind="Deployment",
        groups=(group,),
    )


EXT = Endpoint(ip="203.0.113.9", port=40000, group="external", kind="External", groups=("external",))
NODE = Endpoint(ip="192.168.1.10", port=40000, group="nodes", kind="Node", node="node-1", groups=("nodes",))
UNMANAGED = Endpoint(ip="10.9.0.5", port=40000, group="10.9.0.5")
A, B, C = wl("a", ip="10.1.0.1"), wl("b", ip="10.1.0.2"), wl("c", ip="10.1.0.3")
DNS = wl("kube-dns", "kube-system", ip="10.96.0.10")


def o(client: Endpoint, server: Endpoint, port: int, app: str | None = None, proto: int = PROTO_TCP) -> Observation:
    return Observation(client=client, server=server, proto=proto, server_port=port, app=app)


def summary(policy: Policy) -> list[tuple[Any, ...]]:
    """Rules as (id, from, to, ports, applications) for compact comparison."""
    return [(r.id, r.from_, r.to, r.ports, r.applications) for r in policy.spec.rules]


RULE_CASES: list[tuple[str, list[Observation], list[tuple[Any, ...]]]] = [
    (
        "app-rule",
        [o(A, B, 6379, "redis")],
        [(10001, "nv.a.demo", "nv.b.demo", ["tcp/6379"], ["redis"])],
    ),
    (
        "app-ports-sorted-and-merged",
        [o(A, B, 8888, "http"), o(A, B, 80, "http"), o(A, B, 8888, "http")],
        [(10001, "nv.a.demo", "nv.b.demo", ["tcp/80", "tcp/8888"], ["http"])],
    ),
    (
        "one-rule-per-app",
        [o(A, B, 80, "http"), o(A, B, 6379, "redis")],
        [
            (10001, "nv.a.demo", "nv.b.demo", ["tcp/80"], ["http"]),
            (10002, "nv.a.demo", "nv.b.demo", ["tcp/6379"], ["redis"]),
        ],
    ),
    (
        "port-rule-for-unidentified",
        [o(A, B, 9000), o(A, B, 7000, "unknown")],
        [(10001, "nv.a.demo", "nv.b.demo", ["tcp/7000", "tcp/9000"], ["any"])],
    ),
    (
        "app-replaces-port",
        [o(A, B, 80), o(A, B, 81), o(A, B, 80, "http")],
        [
            (10001, "nv.a.demo", "nv.b.demo", ["tcp/81"], ["any"]),
            (10002, "nv.a.demo", "nv.b.demo", ["tcp/80"], ["http"]),
        ],
    ),
    (
        "port-rule-dropped-when-empty",
        [o(A, B, 80), o(A, B, 80, "http")],
        [(10001, "nv.a.demo", "nv.b.demo", ["tcp/80"], ["http"])],
    ),
    (
        "many-unidentified-ports-collapse",
        [o(A, B, 1000 + i) for i in range(MAX_LEARNED_PORTS + 1)] + [o(A, B, 80, "http")],
        [(10001, "nv.a.demo", "nv.b.demo", ["any"], ["any"])],
    ),
    (
        "many-app-ports-collapse",
        [o(A, B, 1000 + i, "http") for i in range(MAX_LEARNED_PORTS + 1)] + [o(A, B, 6379, "redis")],
        [
            (10001, "nv.a.demo", "nv.b.demo", ["any"], ["http"]),
            (10002, "nv.a.demo", "nv.b.demo", ["any"], ["redis"]),
        ],
    ),
    (
        "collapse-keeps-icmp",
        [o(A, B, 1000 + i, "http") for i in range(MAX_LEARNED_PORTS + 1)] + [o(A, B, 0, None, PROTO_ICMP)],
        [
            (10001, "nv.a.demo", "nv.b.demo", ["icmp"], ["any"]),
            (10002, "nv.a.demo", "nv.b.demo", ["any"], ["http"]),
        ],
    ),
    (
        "twenty-ports-do-not-collapse",
        [o(A, B, 1000 + i) for i in range(MAX_LEARNED_PORTS)],
        [(10001, "nv.a.demo", "nv.b.demo", [f"tcp/{1000 + i}" for i in range(MAX_LEARNED_PORTS)], ["any"])],
    ),
    (
        "collapse-is-per-pair",
        [o(A, B, 1000 + i) for i in range(MAX_LEARNED_PORTS + 1)] + [o(A, C, 5432)],
        [
            (10001, "nv.a.demo", "nv.b.demo", ["any"], ["any"]),
            (10002, "nv.a.demo", "nv.c.demo", ["tcp/5432"], ["any"]),
        ],
    ),
    ("udp-unidentified-not-learned", [o(A, B, 5000, None, PROTO_UDP)], []),
    (
        "udp-identified",
        [o(A, B, 5353, "dns", PROTO_UDP)],
        [(10001, "nv.a.demo", "nv.b.demo", ["udp/5353"], ["dns"])],
    ),
    (
        "dns-to-dns-service",
        [o(A, DNS, 53, None, PROTO_UDP), o(A, DNS, 53, None, PROTO_TCP)],
        [(10001, "nv.a.demo", "nv.kube-dns.kube-system", ["tcp/53", "udp/53"], ["dns"])],
    ),
    (
        "port-53-elsewhere-by-port",
        [o(A, B, 53, None, PROTO_UDP), o(A, B, 53, None, PROTO_TCP)],
        [(10001, "nv.a.demo", "nv.b.demo", ["tcp/53"], ["any"])],
    ),
    (
        "icmp",
        [o(A, B, 0, None, PROTO_ICMP), o(A, B, 0, "icmp", PROTO_ICMP)],
        [(10001, "nv.a.demo", "nv.b.demo", ["icmp"], ["any"])],
    ),
    (
        "icmp-joins-port-rule",
        [o(A, B, 0, None, PROTO_ICMP), o(A, B, 22)],
        [(10001, "nv.a.demo", "nv.b.demo", ["tcp/22", "icmp"], ["any"])],
    ),
    ("other-transport-skipped", [o(A, B, 0, None, 50)], []),
    ("external-to-external", [o(EXT, EXT, 443, "tls")], []),
    ("node-to-unmanaged", [o(NODE, UNMANAGED, 22, "ssh")], []),
    ("external-to-node", [o(EXT, NODE, 10250, "tls")], []),
    (
        "external-to-workload",
        [o(EXT, A, 443, "tls")],
        [(10001, "external", "nv.a.demo", ["tcp/443"], ["tls"])],
    ),
    (
        "workload-to-nodes",
        [o(A, NODE, 10250)],
        [(10001, "nv.a.demo", "nodes", ["tcp/10250"], ["any"])],
    ),
    (
        "unmanaged-to-workload",
        [o(UNMANAGED, A, 5432, "postgres")],
        [(10001, "10.9.0.5", "nv.a.demo", ["tcp/5432"], ["postgres"])],
    ),
    (
        "ids-in-sorted-order",
        [o(C, A, 80, "http"), o(B, A, 80, "http"), o(A, C, 80, "http"), o(A, B, 443, "tls")],
        [
            (10001, "nv.a.demo", "nv.b.demo", ["tcp/443"], ["tls"]),
            (10002, "nv.a.demo", "nv.c.demo", ["tcp/80"], ["http"]),
            (10003, "nv.b.demo", "nv.a.demo", ["tcp/80"], ["http"]),
            (10004, "nv.c.demo", "nv.a.demo", ["tcp/80"], ["http"]),
        ],
    ),
]


@pytest.mark.parametrize(("observations", "expected"), [c[1:] for c in RULE_CASES], ids=[c[0] for c in RULE_CASES])
def test_learned_rules(observations: list[Observation], expected: list[tuple[Any, ...]]) -> None:
    """Observed connections become app, port, collapsed or no rules, as NeuVector learns them."""
    policy = learn(observations, dns_service_groups={"nv.kube-dns.kube-system"})
    assert summary(policy) == expected
    assert all(r.origin == "learned" and r.action == "allow" for r in policy.spec.rules)


def test_rule_names() -> None:
    """Learned rules are named after the pair and the application or ports."""
    policy = learn([o(A, B, 6379, "redis"), o(A, B, 22), o(A, B, 23), o(A, B, 24), o(A, B, 25), o(A, C, 22)])
    assert [r.name for r in policy.spec.rules] == [
        "nv.a.demo → nv.b.demo tcp/22 and 3 more ports",
        "nv.a.demo → nv.b.demo redis",
        "nv.a.demo → nv.c.demo tcp/22",
    ]


def test_learned_groups() -> None:
    """Each workload seen gets an nv.<service>.<namespace> group with the mode; reserved ones are built in."""
    policy = learn([o(EXT, A, 443, "tls"), o(A, DNS, 53, None, PROTO_UDP), o(UNMANAGED, B, 80)], mode="protect")
    groups = {g.name: g for g in policy.spec.groups}
    assert list(groups) == ["10.9.0.5", "nv.a.demo", "nv.b.demo", "nv.kube-dns.kube-system"]
    assert [(c.key, c.op, c.value) for c in groups["nv.kube-dns.kube-system"].criteria] == [
        ("service", "=", "kube-dns"),
        ("namespace", "=", "kube-system"),
    ]
    assert {groups[n].mode for n in groups if n.startswith("nv.")} == {"protect"}
    assert groups["10.9.0.5"].mode is None
    assert [(c.key, c.value) for c in groups["10.9.0.5"].criteria] == [("address", "10.9.0.5")]
    assert policy.spec.defaultMode == "protect"


def test_bad_mode_rejected() -> None:
    """An unknown mode is refused before anything is learned."""
    with pytest.raises(ValueError, match="unknown mode"):
        learn([], mode="enforce")


SAMPLE = [
    o(A, B, 6379, "redis"),
    o(A, B, 6380, "redis"),
    o(A, B, 80),
    o(A, B, 80, "http"),
    o(A, B, 81),
    o(EXT, A, 443, "tls"),
    o(A, DNS, 53, None, PROTO_UDP),
    o(B, C, 0, None, PROTO_ICMP),
    o(UNMANAGED, C, 5432, "postgres"),
    o(C, NODE, 10250),
    o(B, C, 9000, None, PROTO_UDP),
    *[o(C, A, 2000 + i) for i in range(25)],
]


@settings(max_examples=40, deadline=None)
@given(st.permutations(SAMPLE))
def test_deterministic_under_any_order(observations: list[Observation]) -> None:
    """The same observations in any order give the same policy, byte for byte."""
    expected = dump_policy(learn(SAMPLE, dns_service_groups={"nv.kube-dns.kube-system"}))
    assert dump_policy(learn(observations, dns_service_groups={"nv.kube-dns.kube-system"})) == expected


def test_learned_policy_allows_what_it_learned() -> None:
    """Every learnable observation is allowed by the learned policy, and the policy round-trips as YAML."""
    random.seed(7)
    policy = learn(random.sample(SAMPLE, len(SAMPLE)), dns_service_groups={"nv.kube-dns.kube-system"})
    engine = PolicyEngine(policy, dns_service_groups={"nv.kube-dns.kube-system"})
    # UDP without an application is not learned, and an unidentified connection on a port that also
    # carried an identified application is left to the application rule (NeuVector semantics).
    not_allowed = {(B.ip, PROTO_UDP, 9000, None), (A.ip, PROTO_TCP, 80, None)}
    for ob in SAMPLE:
        verdict = engine.evaluate(ob)
        allowed = (ob.client.ip, ob.proto, ob.server_port, ob.app) not in not_allowed
        assert (verdict.action == "allow") is allowed, verdict.explanation.text
    assert parse_policy(dump_policy(policy), "learned.yaml") == policy


EXISTING = parse_policy(
    """
apiVersion: podwall.io/v1
kind: Policy
metadata: {name: prod}
spec:
  defaultMode: protect
  groups:
    - {name: nv.a.demo, mode: protect, criteria: [{key: service, op: '=', value: a}]}
    - {name: nv.b.demo, mode: monitor, criteria: [{key: service, op: '=', value: b}]}
  rules:
    - {id: 7, from: nv.a.demo, to: nv.b.demo, ports: [tcp/25], action: deny}
    - {id: 10004, name: nv.a.demo → nv.b.demo redis, from: nv.a.demo, to: nv.b.demo, ports: [tcp/6379],
       applications: [redis]}
    - {id: 10009, from: nv.a.demo, to: nv.b.demo, ports: [tcp/8080], disabled: true}
""",
    "existing.yaml",
)


def test_existing_policy_merge() -> None:
    """Existing rules stay; only connections no rule decides are added, numbered after the existing IDs."""
    observations = [
        o(A, B, 6379, "redis"),  # allowed by 10004
        o(A, B, 25),  # denied by user rule 7
        o(A, B, 8080),  # covered by the disabled 10009
        o(A, B, 6380, "redis"),  # new port for redis: a new rule, its name made unique
        o(A, C, 5432, "postgres"),  # new pair and group
    ]
    merged = learn(observations, mode="monitor", existing=EXISTING)
    assert merged.metadata.name == "prod"
    assert merged.spec.defaultMode == "protect"
    assert merged.spec.rules[:3] == EXISTING.spec.rules
    assert summary(merged)[3:] == [
        (10010, "nv.a.demo", "nv.b.demo", ["tcp/6380"], ["redis"]),
        (10011, "nv.a.demo", "nv.c.demo", ["tcp/5432"], ["postgres"]),
    ]
    assert merged.spec.rules[3].name == "nv.a.demo → nv.b.demo redis #10010"
    assert merged.spec.groups[:2] == EXISTING.spec.groups
    assert [(g.name, g.mode) for g in merged.spec.groups[2:]] == [("nv.c.demo", "monitor")]


def test_existing_policy_nothing_new() -> None:
    """Relearning connections the existing policy already allows adds nothing."""
    merged = learn([o(A, B, 6379, "redis")], existing=EXISTING)
    assert merged == EXISTING


def test_existing_without_learned_rules_starts_at_10001() -> None:
    """User rule IDs do not move the learned numbering, which starts at 10001."""
    existing = parse_policy(
        "apiVersion: podwall.io/v1\nkind: Policy\nmetadata: {name: p}\n"
        "spec: {rules: [{id: 9999, from: external, to: containers, ports: [tcp/1]}]}\n",
        "p.yaml",
    )
    merged = learn([o(EXT, A, 443, "tls")], existing=existing)
    assert [r.id for r in merged.spec.rules] == [9999, 10001]


def test_existing_groups_keep_their_workloads() -> None:
    """With an existing policy, workloads it already groups get no extra group unless a new rule needs one."""
    existing = parse_policy(
        "apiVersion: podwall.io/v1\nkind: Policy\nmetadata: {name: p}\nspec:\n"
        "  groups: [{name: frontend, mode: monitor, criteria: [{key: service, op: '=', value: a}]}]\n"
        "  rules: [{id: 10001, from: frontend, to: external, ports: [tcp/443]}]\n",
        "p.yaml",
    )
    merged = learn([o(A, EXT, 443, "tls"), o(B, EXT, 443, "tls")], mode="protect", existing=existing)
    assert [g.name for g in merged.spec.groups] == ["frontend", "nv.b.demo"]
    assert summary(merged)[1:] == [(10002, "nv.b.demo", "external", ["tcp/443"], ["tls"])]
