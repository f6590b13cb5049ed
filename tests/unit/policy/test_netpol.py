"""Kubernetes NetworkPolicy / AdminNetworkPolicy / BaselineAdminNetworkPolicy semantics and parsing.

Each semantics case gives policies (YAML), a source and a destination, and the connections
netpol-analyzer would list for the pair (`""` when none). Parsing cases check located errors,
and the connlist cases check the external ranges and line format on a small directory.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from podwall.core.errors import InputError
from podwall.inventory.model import ContainerPort
from podwall.policy.connlist import connlist
from podwall.policy.formats.kubernetes import parse_kubernetes_policies
from podwall.policy.netpol import ConnSet, IPPeer, NetpolEngine, Peer, PodPeer

NS_LABEL = "kubernetes.io/metadata.name"


def pod(
    ref: str, labels: dict[str, str] | None = None, ns_labels: dict[str, str] | None = None, **ports: str
) -> PodPeer:
    """A pod `ns/name` (named `ns/name[Pod]`); `ports` maps a port name to `PROTO/number`."""
    namespace = ref.split("/")[0]
    container_ports = tuple(
        ContainerPort(name, int(spec.split("/")[1]), spec.split("/")[0]) for name, spec in ports.items()
    )
    return PodPeer(
        f"{ref}[Pod]",
        namespace,
        labels or {},
        {NS_LABEL: namespace, **(ns_labels or {})},
        container_ports,
    )


WEB = pod("shop/web", {"app": "web"}, {"team": "a"}, http="TCP/8080", dns="UDP/53")
DB = pod("shop/db", {"app": "db"}, {"team": "a"}, sql="TCP/5432")
MON = pod("ops/mon", {"app": "mon"}, {"team": "ops"})
OUT = IPPeer.of("8.8.8.8")
LAN = IPPeer.of("10.1.2.3")
PODS = (WEB, DB, MON)


def np(name: str, namespace: str, spec: str) -> str:
    body = textwrap.indent(textwrap.dedent(spec).strip("\n"), "  ")
    return (
        f"apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n"
        f"metadata:\n  name: {name}\n  namespace: {namespace}\nspec:\n{body}\n---\n"
    )


def anp(name: str, spec: str, kind: str = "AdminNetworkPolicy") -> str:
    body = textwrap.indent(textwrap.dedent(spec).strip("\n"), "  ")
    return (
        f"apiVersion: policy.networking.k8s.io/v1alpha1\nkind: {kind}\nmetadata:\n  name: {name}\nspec:\n{body}\n---\n"
    )


def banp(spec: str) -> str:
    return anp("default", spec, "BaselineAdminNetworkPolicy")


@dataclass(frozen=True)
class Case:
    """One semantics case: the connections from `src` to `dst` under `policies`."""

    id: str
    doc: str
    policies: str
    src: Peer
    dst: Peer
    expected: str


DENY_ALL_INGRESS_DB = np("deny", "shop", "podSelector: {matchLabels: {app: db}}\npolicyTypes: [Ingress]")
ANP_SUBJECT_DB = "subject: {pods: {namespaceSelector: {}, podSelector: {matchLabels: {app: db}}}}"

CASES = [
    Case("no-policy", "Without policies everything is allowed.", "", WEB, DB, "All Connections"),
    Case(
        "isolated-ingress",
        "A policy selecting the destination for ingress with no rules denies all ingress.",
        DENY_ALL_INGRESS_DB,
        WEB,
        DB,
        "",
    ),
    Case(
        "ingress-isolation-not-egress",
        "An ingress-only policy leaves the selected pod's egress open.",
        DENY_ALL_INGRESS_DB,
        DB,
        WEB,
        "All Connections",
    ),
    Case(
        "pod-selector-same-namespace",
        "A podSelector peer without namespaceSelector matches pods of the policy's namespace.",
        np(
            "p",
            "shop",
            "podSelector: {matchLabels: {app: db}}\ningress:\n- from: [{podSelector: {}}]\n  ports: [{port: 5432}]",
        ),
        WEB,
        DB,
        "TCP 5432",
    ),
    Case(
        "pod-selector-other-namespace",
        "A podSelector peer without namespaceSelector does not match pods of other namespaces.",
        np("p", "shop", "podSelector: {matchLabels: {app: db}}\ningress:\n- from: [{podSelector: {}}]"),
        MON,
        DB,
        "",
    ),
    Case(
        "namespace-selector-and-pod-selector",
        "namespaceSelector and podSelector in one peer must both match.",
        np(
            "p",
            "shop",
            "podSelector: {matchLabels: {app: db}}\ningress:\n"
            "- from: [{namespaceSelector: {matchLabels: {team: ops}}, podSelector: {matchLabels: {app: web}}}]",
        ),
        MON,
        DB,
        "",
    ),
    Case(
        "namespace-selector-alone",
        "A namespaceSelector peer alone matches every pod of the selected namespaces.",
        np(
            "p",
            "shop",
            "podSelector: {matchLabels: {app: db}}\n"
            "ingress:\n- from: [{namespaceSelector: {matchLabels: {team: ops}}}]",
        ),
        MON,
        DB,
        "All Connections",
    ),
    Case(
        "empty-namespace-selector",
        "An empty namespaceSelector matches pods of every namespace but no external address.",
        np("p", "shop", "podSelector: {}\ningress:\n- from: [{namespaceSelector: {}}]"),
        OUT,
        DB,
        "",
    ),
    Case(
        "empty-from-allows-all",
        "A rule without `from` matches every source, external ones included.",
        np("p", "shop", "podSelector: {}\ningress:\n- ports: [{port: 80}]"),
        OUT,
        DB,
        "TCP 80",
    ),
    Case(
        "implicit-egress-type",
        "A policy without policyTypes but with egress rules isolates egress too.",
        np(
            "p",
            "shop",
            "podSelector: {matchLabels: {app: web}}\negress:\n- to: [{podSelector: {matchLabels: {app: db}}}]",
        ),
        WEB,
        MON,
        "",
    ),
    Case(
        "ipblock-except",
        "An address in an ipBlock's except list is not matched by it.",
        np(
            "p",
            "shop",
            "podSelector: {}\npolicyTypes: [Egress]\n"
            "egress:\n- to: [{ipBlock: {cidr: 10.0.0.0/8, except: [10.1.0.0/16]}}]",
        ),
        WEB,
        LAN,
        "",
    ),
    Case(
        "ipblock-inside",
        "An address inside an ipBlock's CIDR (and outside its excepts) is matched.",
        np(
            "p",
            "shop",
            "podSelector: {}\npolicyTypes: [Egress]\n"
            "egress:\n- to: [{ipBlock: {cidr: 10.0.0.0/8, except: [10.9.0.0/16]}}]",
        ),
        WEB,
        LAN,
        "All Connections",
    ),
    Case(
        "ipblock-not-pods",
        "An ipBlock never matches a pod, whatever its address.",
        np("p", "shop", "podSelector: {}\npolicyTypes: [Egress]\negress:\n- to: [{ipBlock: {cidr: 0.0.0.0/0}}]"),
        WEB,
        DB,
        "",
    ),
    Case(
        "named-port-resolved-per-pod",
        "A named port becomes the destination pod's port of that name.",
        np("p", "shop", "podSelector: {}\ningress:\n- ports: [{port: http}, {port: sql}]"),
        DB,
        WEB,
        "TCP 8080",
    ),
    Case(
        "named-port-protocol-must-match",
        "A named port declared with another protocol than the rule's does not match.",
        np("p", "shop", "podSelector: {}\ningress:\n- ports: [{port: dns, protocol: TCP}]"),
        DB,
        WEB,
        "",
    ),
    Case(
        "end-port",
        "endPort makes a port range; protocols print sorted.",
        np("p", "shop", "podSelector: {}\ningress:\n- ports: [{port: 8000, endPort: 8100}, {protocol: UDP, port: 53}]"),
        DB,
        WEB,
        "TCP 8000-8100,UDP 53",
    ),
    Case(
        "protocol-without-port",
        "A ports entry without a port allows every port of its protocol.",
        np("p", "shop", "podSelector: {}\ningress:\n- ports: [{protocol: SCTP}]"),
        DB,
        WEB,
        "SCTP 1-65535",
    ),
    Case(
        "policies-union",
        "Two policies selecting the same pod allow the union of what each allows.",
        np("a", "shop", "podSelector: {}\ningress:\n- ports: [{port: 1}]")
        + np("b", "shop", "podSelector: {}\ningress:\n- ports: [{port: 2}]"),
        DB,
        WEB,
        "TCP 1-2",
    ),
    Case(
        "match-expressions",
        "NotIn matches pods without the key; DoesNotExist requires its absence.",
        np(
            "p",
            "shop",
            "podSelector: {}\ningress:\n- from:\n  - podSelector: {matchExpressions: "
            "[{key: app, operator: NotIn, values: [web]}, {key: tier, operator: DoesNotExist}]}",
        ),
        DB,
        WEB,
        "All Connections",
    ),
    Case(
        "both-directions",
        "A connection needs egress at the source and ingress at the destination.",
        np("e", "shop", "podSelector: {matchLabels: {app: web}}\negress:\n- ports: [{port: 1, endPort: 10}]")
        + np("i", "shop", "podSelector: {matchLabels: {app: db}}\ningress:\n- ports: [{port: 5, endPort: 20}]"),
        WEB,
        DB,
        "TCP 5-10",
    ),
    Case(
        "anp-deny-beats-np",
        "An ANP Deny wins over a NetworkPolicy that allows.",
        anp(
            "d",
            f"priority: 5\n{ANP_SUBJECT_DB}\ningress:\n- {{name: d, action: Deny, from: [{{namespaces: {{}}}}], "
            "ports: [{portNumber: {port: 5432, protocol: TCP}}]}",
        )
        + np("p", "shop", "podSelector: {}\ningress:\n- {}"),
        WEB,
        DB,
        "SCTP 1-65535,TCP 1-5431,5433-65535,UDP 1-65535",
    ),
    Case(
        "anp-allow-beats-isolation",
        "An ANP Allow opens what a NetworkPolicy's isolation would deny.",
        anp(
            "a",
            f"priority: 5\n{ANP_SUBJECT_DB}\ningress:\n- {{name: a, action: Allow, from: [{{namespaces: {{}}}}], "
            "ports: [{portRange: {start: 10, end: 20}}]}",
        )
        + DENY_ALL_INGRESS_DB,
        WEB,
        DB,
        "TCP 10-20",
    ),
    Case(
        "anp-pass-to-np",
        "What an ANP passes is decided by the NetworkPolicies isolating the pod.",
        anp("p", f"priority: 5\n{ANP_SUBJECT_DB}\ningress:\n- {{name: p, action: Pass, from: [{{namespaces: {{}}}}]}}")
        + np("p", "shop", "podSelector: {}\ningress:\n- ports: [{port: 80}]"),
        WEB,
        DB,
        "TCP 80",
    ),
    Case(
        "anp-pass-to-banp",
        "What an ANP passes for a pod no NetworkPolicy isolates is decided by the baseline.",
        anp("p", f"priority: 5\n{ANP_SUBJECT_DB}\ningress:\n- {{name: p, action: Pass, from: [{{namespaces: {{}}}}]}}")
        + banp(
            f"{ANP_SUBJECT_DB}\ningress:\n- {{name: d, action: Deny, from: [{{namespaces: {{}}}}], "
            "ports: [{portNumber: {port: 22, protocol: TCP}}]}"
        ),
        WEB,
        DB,
        "SCTP 1-65535,TCP 1-21,23-65535,UDP 1-65535",
    ),
    Case(
        "anp-pass-stops-lower-anps",
        "A Pass skips lower-priority ANPs: their Deny does not apply.",
        anp("p", f"priority: 1\n{ANP_SUBJECT_DB}\ningress:\n- {{name: p, action: Pass, from: [{{namespaces: {{}}}}]}}")
        + anp(
            "d", f"priority: 2\n{ANP_SUBJECT_DB}\ningress:\n- {{name: d, action: Deny, from: [{{namespaces: {{}}}}]}}"
        ),
        WEB,
        DB,
        "All Connections",
    ),
    Case(
        "anp-priority-order",
        "The ANP with the lower priority number is evaluated first.",
        anp(
            "late",
            f"priority: 9\n{ANP_SUBJECT_DB}\ningress:\n- {{name: a, action: Allow, from: [{{namespaces: {{}}}}]}}",
        )
        + anp(
            "early",
            f"priority: 3\n{ANP_SUBJECT_DB}\ningress:\n- {{name: d, action: Deny, from: [{{namespaces: {{}}}}]}}",
        ),
        WEB,
        DB,
        "",
    ),
    Case(
        "anp-rule-order",
        "Within an ANP the first matching rule decides.",
        anp(
            "o",
            f"priority: 3\n{ANP_SUBJECT_DB}\ningress:\n"
            "- {name: a, action: Allow, from: [{namespaces: {}}], ports: [{portNumber: {port: 1, protocol: UDP}}]}\n"
            "- {name: d, action: Deny, from: [{namespaces: {}}]}",
        ),
        WEB,
        DB,
        "UDP 1",
    ),
    Case(
        "anp-networks",
        "An ANP egress `networks` peer matches external addresses inside its CIDRs.",
        anp(
            "n",
            "priority: 3\nsubject: {namespaces: {}}\negress:\n"
            "- {name: d, action: Deny, to: [{networks: [8.8.8.0/24]}]}",
        ),
        WEB,
        OUT,
        "",
    ),
    Case(
        "anp-nodes-match-nothing",
        "An ANP `nodes` peer matches neither pods nor addresses (nodes are not modelled).",
        anp("n", "priority: 3\nsubject: {namespaces: {}}\negress:\n- {name: d, action: Deny, to: [{nodes: {}}]}"),
        WEB,
        OUT,
        "All Connections",
    ),
    Case(
        "anp-named-port-takes-pod-protocol",
        "An ANP namedPort takes the protocol the destination pod declares for it.",
        anp(
            "n",
            "priority: 3\nsubject: {namespaces: {matchLabels: {team: a}}}\ningress:\n"
            "- {name: a, action: Allow, from: [{namespaces: {}}], ports: [{namedPort: dns}]}\n"
            "- {name: d, action: Deny, from: [{namespaces: {}}]}",
        ),
        DB,
        WEB,
        "UDP 53",
    ),
    Case(
        "banp-ignored-when-np-isolates",
        "The baseline does not apply to a pod a NetworkPolicy isolates.",
        banp(f"{ANP_SUBJECT_DB}\ningress:\n- {{name: d, action: Deny, from: [{{namespaces: {{}}}}]}}")
        + np("p", "shop", "podSelector: {}\ningress:\n- {}"),
        WEB,
        DB,
        "All Connections",
    ),
    Case(
        "banp-first-rule-wins",
        "In the baseline an earlier Allow shields its connections from a later Deny.",
        banp(
            f"{ANP_SUBJECT_DB}\ningress:\n"
            "- {name: a, action: Allow, from: [{namespaces: {}}], ports: [{portNumber: {port: 7, protocol: TCP}}]}\n"
            "- {name: d, action: Deny, from: [{namespaces: {}}]}"
        ),
        WEB,
        DB,
        "TCP 7",
    ),
    Case(
        "anp-does-not-select-ips",
        "Admin policies never select an IP source, so its egress is unrestricted.",
        anp("d", "priority: 3\nsubject: {namespaces: {}}\negress:\n- {name: d, action: Deny, to: [{namespaces: {}}]}"),
        OUT,
        MON,
        "All Connections",
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_semantics(case: Case) -> None:
    """Each case's pair gets exactly the expected connections (see the case's `doc`)."""
    policies = parse_kubernetes_policies(case.policies, "policies.yaml")
    conns = NetpolEngine(policies, PODS).allowed(case.src, case.dst)
    assert ("" if conns.empty else str(conns)) == case.expected, case.doc


def test_engine_handles_unknown_pods() -> None:
    """A pod the engine was not built with is still evaluated against every policy."""
    policies = parse_kubernetes_policies(DENY_ALL_INGRESS_DB, "p.yaml")
    stranger = pod("shop/db2", {"app": "db"})
    assert NetpolEngine(policies, PODS).allowed(WEB, stranger).empty


# --- interval sets ------------------------------------------------------------------------------

_ports = st.lists(st.tuples(st.integers(1, 40), st.integers(0, 5)), max_size=5)


def _conns(spec: list[tuple[int, int]], protocol: str = "TCP") -> tuple[ConnSet, set[int]]:
    conns = ConnSet.none()
    points: set[int] = set()
    for start, width in spec:
        conns = conns | ConnSet.of(protocol, start, start + width)
        points.update(range(start, start + width + 1))
    return conns, points


@given(_ports, _ports)
def test_connset_operations_match_sets(a: list[tuple[int, int]], b: list[tuple[int, int]]) -> None:
    """Union, intersection and difference of interval sets agree with the same operations on port sets."""
    ca, pa = _conns(a)
    cb, pb = _conns(b)
    for result, points in ((ca | cb, pa | pb), (ca & cb, pa & pb), (ca - cb, pa - pb)):
        assert {p for p in range(1, 50) if result.allows("TCP", p)} == points
        assert result.empty == (not points)


@pytest.mark.parametrize(
    ("conns", "text"),
    [
        (ConnSet.all(), "All Connections"),
        (ConnSet.of("UDP", 53) | ConnSet.of("TCP", 80, 80) | ConnSet.of("TCP", 81, 90), "TCP 80-90,UDP 53"),
        (ConnSet.all() - ConnSet.of("TCP", 80, 80), "SCTP 1-65535,TCP 1-79,81-65535,UDP 1-65535"),
    ],
    ids=["all", "merged-adjacent", "all-but-one"],
)
def test_connset_format(conns: ConnSet, text: str) -> None:
    """Connection sets print the way netpol-analyzer prints them, adjacent ranges merged."""
    assert str(conns) == text


# --- parsing errors -----------------------------------------------------------------------------

BAD = [
    (
        "ipblock-with-selector",
        np("p", "shop", "podSelector: {}\ningress:\n- from: [{ipBlock: {cidr: 10.0.0.0/8}, podSelector: {}}]"),
        "NetworkPolicy shop/p: spec.ingress[0].from[0].ipBlock",
    ),
    (
        "bad-operator",
        np("p", "shop", "podSelector: {matchExpressions: [{key: a, operator: Is, values: [x]}]}"),
        "spec.podSelector.matchExpressions[0].operator",
    ),
    (
        "end-port-below-port",
        np("p", "shop", "podSelector: {}\ningress:\n- ports: [{port: 90, endPort: 80}]"),
        "spec.ingress[0].ports[0].endPort",
    ),
    ("bad-cidr", np("p", "shop", "podSelector: {}\negress:\n- to: [{ipBlock: {cidr: 10.0.0/8}}]"), "ipBlock.cidr"),
    (
        "except-outside",
        np("p", "shop", "podSelector: {}\negress:\n- to: [{ipBlock: {cidr: 10.0.0.0/8, except: [11.0.0.0/8]}}]"),
        "ipBlock.except[0]",
    ),
    ("typo", np("p", "shop", "podSelector: {}\ningress:\n- form: []"), "spec.ingress[0].form"),
    ("anp-no-priority", anp("a", "subject: {namespaces: {}}"), "AdminNetworkPolicy a: spec.priority"),
    (
        "banp-pass",
        banp("subject: {namespaces: {}}\ningress:\n- {name: p, action: Pass, from: [{namespaces: {}}]}"),
        "spec.ingress[0].action",
    ),
    (
        "anp-two-subjects",
        anp("a", "priority: 1\nsubject: {namespaces: {}, pods: {podSelector: {}, namespaceSelector: {}}}"),
        "spec.subject",
    ),
    (
        "anp-same-priority",
        anp("a", "priority: 1\nsubject: {namespaces: {}}") + anp("b", "priority: 1\nsubject: {namespaces: {}}"),
        "priority 1",
    ),
    (
        "anp-ingress-networks",
        anp(
            "a",
            "priority: 1\nsubject: {namespaces: {}}\n"
            "ingress:\n- {name: x, action: Allow, from: [{networks: [1.0.0.0/8]}]}",
        ),
        "spec.ingress[0].from[0].networks",
    ),
]


@pytest.mark.parametrize(("text", "where"), [(t, w) for _, t, w in BAD], ids=[i for i, _, _ in BAD])
def test_bad_policies_are_rejected_with_location(text: str, where: str) -> None:
    """A malformed policy is rejected, and the error names the file, document, object and field."""
    with pytest.raises(InputError) as info:
        parse_kubernetes_policies(text, "bad.yaml")
    text_of_error = str(info.value)
    assert "bad.yaml: document" in text_of_error
    assert where in text_of_error


def test_list_objects_and_other_kinds() -> None:
    """Policies inside a List are read, and non-policy kinds are skipped."""
    text = textwrap.dedent(
        """
        kind: List
        items:
        - {apiVersion: v1, kind: Pod, metadata: {name: x}}
        - {apiVersion: networking.k8s.io/v1, kind: NetworkPolicy, metadata: {name: p}, spec: {podSelector: {}}}
        """
    )
    policies = parse_kubernetes_policies(text, "list.yaml")
    assert [(p.namespace, p.name) for p in policies.network_policies] == [("default", "p")]


# --- connlist -----------------------------------------------------------------------------------

MANIFESTS = """
apiVersion: v1
kind: Pod
metadata: {name: a, namespace: x, labels: {app: a}}
spec: {containers: [{name: c, image: i, ports: [{name: web, containerPort: 80}]}]}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: b, namespace: x}
spec:
  selector: {matchLabels: {app: b}}
  template:
    metadata: {labels: {app: b}}
    spec: {containers: [{name: c, image: i}]}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: p, namespace: x}
spec:
  podSelector: {matchLabels: {app: a}}
  policyTypes: [Ingress, Egress]
  ingress:
  - from: [{podSelector: {matchLabels: {app: b}}}]
    ports: [{port: web}]
  egress:
  - to: [{ipBlock: {cidr: 10.0.0.0/8, except: [10.1.0.0/16]}}]
"""


def test_connlist_directory(tmp_path: Path) -> None:
    """A directory gives sorted lines, external ranges cut at ipBlock edges, named ports resolved."""
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "all.yaml").write_text(MANIFESTS)
    assert connlist([tmp_path]) == [
        "0.0.0.0-255.255.255.255[External] => x/b[Deployment] : All Connections",
        "x/a[Pod] => 10.0.0.0-10.0.255.255[External] : All Connections",
        "x/a[Pod] => 10.2.0.0-10.255.255.255[External] : All Connections",
        "x/b[Deployment] => 0.0.0.0-9.255.255.255[External] : All Connections",
        "x/b[Deployment] => 10.0.0.0-10.0.255.255[External] : All Connections",
        "x/b[Deployment] => 10.1.0.0-10.1.255.255[External] : All Connections",
        "x/b[Deployment] => 10.2.0.0-10.255.255.255[External] : All Connections",
        "x/b[Deployment] => 11.0.0.0-255.255.255.255[External] : All Connections",
        "x/b[Deployment] => x/a[Pod] : TCP 80",
    ]


def test_connlist_rejects_bad_policy(tmp_path: Path) -> None:
    """A bad policy in the directory rejects the whole input with its file named."""
    (tmp_path / "p.yaml").write_text(MANIFESTS.replace("ports: [{port: web}]", "ports: [{port: -1}]"))
    with pytest.raises(InputError) as info:
        connlist([tmp_path])
    assert "p.yaml: document 2: NetworkPolicy x/p: spec.ingress[0].ports[0].port" in str(info.value)


def test_connlist_without_workloads(tmp_path: Path) -> None:
    """Policies without any workload give an empty list, as netpol-analyzer does."""
    (tmp_path / "p.yaml").write_text(MANIFESTS.split("---")[2])
    assert connlist([tmp_path]) == []
