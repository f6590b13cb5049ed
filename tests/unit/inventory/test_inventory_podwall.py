"""The podwall inventory YAML format: valid files load whole; every fault is located, all at once."""

from __future__ import annotations

from ipaddress import ip_address, ip_network
from pathlib import Path

import pytest

from podwall.core.errors import InputError
from podwall.inventory.loader import parse_inventory_text, parse_podwall_inventory
from podwall.inventory.model import DEFAULT_INTERNAL_CIDRS, NAMESPACE_NAME_LABEL

FIXTURES = Path(__file__).parent / "fixtures"
HEADER = "apiVersion: podwall.io/v1\nkind: Inventory\n"


def load_fixture() -> str:
    return (FIXTURES / "podwall_inventory.yaml").read_text()


def test_valid_inventory_loads_every_entity() -> None:
    """The documented example loads with every node, namespace, workload, pod, service and external group."""
    inv = parse_podwall_inventory(load_fixture(), "inv.yaml")
    assert inv.cluster == "demo"
    assert inv.internal_cidrs == (
        ip_network("10.0.0.0/8"),
        ip_network("192.168.0.0/16"),
        ip_network("fd00::/8"),
    )
    assert [n.name for n in inv.nodes] == ["node-1", "node-2"]  # node-2 only referenced by a pod
    assert inv.nodes[0].ips == (ip_address("192.168.56.10"),) and inv.nodes[0].labels == {"zone": "a"}
    assert [w.ref for w in inv.workloads] == [
        "demo/redis[Deployment]",
        "demo/web[StatefulSet]",
        "kube-system/agent[DaemonSet]",
    ]
    redis = inv.workloads[0]
    assert redis.group == "nv.redis.demo"
    assert redis.image == "redis:7"
    assert redis.pods[0].ips == (ip_address("10.244.1.5"), ip_address("fd00::5"))
    assert redis.pods[0].node == "node-1"
    web = inv.workloads[1]
    assert web.service == "frontend" and web.group == "nv.frontend.demo"
    agent = inv.workloads[2]
    assert agent.kind == "DaemonSet" and agent.pods[0].host_network and agent.pods[0].ips == ()
    assert agent.service == "agent"
    svc = {s.name: s for s in inv.services}
    assert svc["redis"].cluster_ips == (ip_address("10.96.0.20"),)
    assert svc["redis"].ports[0].port == 6379 and svc["redis"].ports[0].target_port == 6379
    assert svc["web-http"].ports[0].protocol == "TCP" and svc["web-http"].ports[0].target_port == "http"
    assert inv.external_groups[0].name == "ext.github"
    assert inv.external_groups[0].cidrs == (ip_network("140.82.112.0/20"),)


def test_volatile_labels_are_dropped_and_namespace_name_label_added() -> None:
    """pod-template-hash never reaches a workload's labels; namespaces carry kubernetes.io/metadata.name."""
    inv = parse_podwall_inventory(load_fixture(), "inv.yaml")
    assert dict(inv.workloads[0].labels) == {"app": "redis"}
    assert inv.namespace_labels("demo") == {"team": "web", NAMESPACE_NAME_LABEL: "demo"}
    assert inv.namespace_labels("kube-system") == {NAMESPACE_NAME_LABEL: "kube-system"}  # implied by a workload


def test_minimal_inventory_uses_defaults() -> None:
    """A bare header is a valid empty inventory with the default cluster name and internal ranges."""
    inv = parse_podwall_inventory(HEADER, "inv.yaml")
    assert inv.cluster == "default"
    assert inv.internal_cidrs == DEFAULT_INTERNAL_CIDRS
    assert inv.workloads == () and inv.nodes == ()


def test_workload_defaults() -> None:
    """A workload without kind or service is a Deployment whose service is its own name."""
    inv = parse_podwall_inventory(HEADER + "workloads: [{name: api, namespace: prod}]\n", "inv.yaml")
    assert inv.workloads[0].kind == "Deployment"
    assert inv.workloads[0].group == "nv.api.prod"


ERROR_CASES = [
    ("unknown-top-field", "colour: blue\n", None, "colour", "unknown field"),
    ("bad-api-version", None, None, "apiVersion", "unsupported apiVersion"),
    ("bad-internal-cidr", "internalCIDRs: [10.0.0.0/33]\n", None, "internalCIDRs[0]", "invalid CIDR"),
    ("host-bits-cidr", "internalCIDRs: [10.0.0.1/8]\n", None, "internalCIDRs[0]", "did you mean 10.0.0.0/8"),
    ("node-bad-ip", "nodes: [{name: n1, ips: [300.1.1.1]}]\n", "node n1", "ips[0]", "invalid IP address"),
    ("node-unknown-field", "nodes: [{name: n1, ip: 1.2.3.4}]\n", "node n1", "ip", "unknown field"),
    (
        "namespace-bad-name",
        "namespaces: [{name: Demo}]\n",
        "namespace Demo",
        "name",
        "invalid namespace name",
    ),
    (
        "label-not-string",
        "namespaces: [{name: d, labels: {tier: 1}}]\n",
        "namespace d",
        'labels["tier"]',
        "quote it",
    ),
    (
        "label-bad-key",
        "namespaces: [{name: d, labels: {'-x': a}}]\n",
        "namespace d",
        'labels["-x"]',
        "label key",
    ),
    (
        "workload-missing-namespace",
        "workloads: [{name: w}]\n",
        "workload w",
        "namespace",
        "is required",
    ),
    ("workload-unnamed", "workloads: [{namespace: d}]\n", "workloads[0]", "name", "is required"),
    (
        "pod-bad-ip",
        "workloads: [{name: redis, namespace: demo, pods: [{name: p, ips: [10.0.0.1, 'fd00::zz']}]}]\n",
        "workload demo/redis",
        "pods[0].ips[1]",
        "invalid IP address",
    ),
    (
        "pod-unknown-field",
        "workloads: [{name: w, namespace: d, pods: [{name: p, ip: 10.0.0.1}]}]\n",
        "workload d/w",
        "pods[0].ip",
        "unknown field",
    ),
    (
        "hostnetwork-pod-with-ips",
        "workloads: [{name: w, namespace: d, pods: [{name: p, hostNetwork: true, ips: [10.0.0.1]}]}]\n",
        "workload d/w",
        "pods[0].ips",
        "node's addresses",
    ),
    (
        "duplicate-workload",
        "workloads: [{name: w, namespace: d}, {name: w, namespace: d}]\n",
        "workload d/w",
        None,
        "listed twice",
    ),
    (
        "duplicate-pod",
        "workloads: [{name: w, namespace: d, pods: [{name: p}, {name: p}]}]\n",
        "workload d/w",
        "pods[1].name",
        "listed twice",
    ),
    (
        "pod-ip-claimed-twice",
        "workloads: [{name: a, namespace: d, pods: [{name: a1, ips: [10.0.0.1]}]},"
        " {name: b, namespace: d, pods: [{name: b1, ips: [10.0.0.1]}]}]\n",
        "workload d/b",
        "pods[0].ips[0]",
        "already claimed by pod d/a1",
    ),
    (
        "service-ip-is-node-ip",
        "nodes: [{name: n, ips: [10.0.0.9]}]\nservices: [{name: s, namespace: d, clusterIPs: [10.0.0.9]}]\n",
        "service d/s",
        "clusterIPs[0]",
        "already claimed by node n",
    ),
    (
        "port-out-of-range",
        "services: [{name: s, namespace: d, ports: [{port: 70000}]}]\n",
        "service d/s",
        "ports[0].port",
        "out of range",
    ),
    (
        "port-bad-protocol",
        "services: [{name: s, namespace: d, ports: [{port: 53, protocol: ICMP}]}]\n",
        "service d/s",
        "ports[0].protocol",
        "unknown protocol",
    ),
    (
        "port-missing",
        "services: [{name: s, namespace: d, ports: [{name: http}]}]\n",
        "service d/s",
        "ports[0].port",
        "is required",
    ),
    (
        "group-reserved-name",
        "externalGroups: [{name: external, cidrs: [1.0.0.0/8]}]\n",
        "externalGroup external",
        "name",
        "reserved",
    ),
    (
        "group-no-cidrs",
        "externalGroups: [{name: ext.x, cidrs: []}]\n",
        "externalGroup ext.x",
        "cidrs",
        "at least one",
    ),
    ("list-not-list", "nodes: {name: n}\n", None, "nodes", "must be a list"),
    ("entry-not-mapping", "nodes: [n1]\n", None, "nodes[0]", "must be a mapping"),
]


@pytest.mark.parametrize(
    ("extra", "obj", "path", "message"), [c[1:] for c in ERROR_CASES], ids=[c[0] for c in ERROR_CASES]
)
def test_each_fault_is_located(extra: str | None, obj: str | None, path: str | None, message: str) -> None:
    """Each kind of fault raises InputError naming the file, document, object and field path."""
    text = "apiVersion: podwall.io/v2\nkind: Inventory\n" if extra is None else HEADER + extra
    with pytest.raises(InputError) as info:
        parse_podwall_inventory(text, "inv.yaml")
    found = [
        p for p in info.value.problems if p.location.obj == obj and p.location.path == path and message in p.message
    ]
    assert found, [str(p) for p in info.value.problems]
    assert found[0].location.file == "inv.yaml" and found[0].location.document == 0


def test_every_fault_is_reported_at_once() -> None:
    """A document with several faults in different entities reports all of them in one error."""
    text = HEADER + (
        "colour: blue\n"
        "nodes: [{name: n1, ips: [1.2.3]}]\n"
        "workloads:\n"
        "  - {name: redis, namespace: demo, pods: [{name: r1, ips: [10.244.1.5, 'fd00::zz']}]}\n"
        "  - {name: web, namespace: demo, pods: [{name: w1, ips: [10.244.1.5]}]}\n"
        "services: [{name: s, namespace: demo, ports: [{port: 0}]}]\n"
    )
    with pytest.raises(InputError) as info:
        parse_podwall_inventory(text, "inv.yaml")
    where = {(p.location.obj, p.location.path) for p in info.value.problems}
    assert where == {
        (None, "colour"),
        ("node n1", "ips[0]"),
        ("workload demo/redis", "pods[0].ips[1]"),
        ("service demo/s", "ports[0].port"),
    }
    # The claim conflict needs redis' pod to be valid first; it is the only fault left once fixed.
    fixed = text.replace(", 'fd00::zz'", "").replace("colour: blue\n", "").replace("1.2.3]", "1.2.3.4]")
    fixed = fixed.replace("{port: 0}", "{port: 80}")
    with pytest.raises(InputError) as info:
        parse_podwall_inventory(fixed, "inv.yaml")
    assert [(p.location.obj, p.location.path) for p in info.value.problems] == [("workload demo/web", "pods[0].ips[0]")]


def test_later_document_is_located_by_index() -> None:
    """A fault in the second document of a file names document 1."""
    text = HEADER + "---\n" + HEADER + "nodes: [{name: n, ips: [x]}]\n"
    with pytest.raises(InputError) as info:
        parse_podwall_inventory(text, "inv.yaml")
    assert [p.location.document for p in info.value.problems] == [1]


def test_non_inventory_document_is_rejected_by_the_strict_parser() -> None:
    """parse_podwall_inventory refuses a Kubernetes object; parse_inventory_text would accept it."""
    text = "apiVersion: v1\nkind: Namespace\nmetadata: {name: demo}\n"
    with pytest.raises(InputError, match="not a podwall inventory"):
        parse_podwall_inventory(text, "inv.yaml")
    assert [n.name for n in parse_inventory_text(text, "inv.yaml").inventory.namespaces] == ["demo"]


def test_identical_entries_merge_but_different_ones_conflict() -> None:
    """Two documents may state the same node; stating it differently is a located conflict."""
    first = HEADER + "nodes: [{name: n, ips: [10.0.0.1]}]\n"
    assert len(parse_podwall_inventory(first + "---\n" + first, "inv.yaml").nodes) == 1
    second = first.replace("10.0.0.1", "10.0.0.2")
    with pytest.raises(InputError) as info:
        parse_podwall_inventory(first + "---\n" + second, "inv.yaml")
    assert any("node n is defined differently" in p.message and p.location.document == 1 for p in info.value.problems)


def test_conflicting_cluster_names_are_an_error() -> None:
    """Two inventory documents that name different clusters cannot be merged."""
    text = HEADER + "cluster: a\n---\n" + HEADER + "cluster: b\n"
    with pytest.raises(InputError, match="cluster conflicts"):
        parse_podwall_inventory(text, "inv.yaml")
