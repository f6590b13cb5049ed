"""LAB.yaml validation (located errors) and the plan derived from it: names, addresses, files, inventory."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

import podwall.lab
from podwall.core.errors import InputError
from podwall.inventory.loader import parse_podwall_inventory
from podwall.lab.plan import plan_lab, veth_name
from podwall.lab.spec import load_lab, parse_lab

DEMO = Path(podwall.lab.__file__).with_name("demo.yaml")

BASE = """\
apiVersion: podwall.io/v1
kind: Lab
name: t1
podCIDR: 10.1.0.0/24
serviceCIDR: 10.2.0.0/24
namespaces: [{name: app}]
deployments:
  - {name: redis, namespace: app, labels: {app: redis}, server: redis}
  - {name: web, namespace: app, replicas: 2, labels: {app: web}, server: {kind: http, port: 8888}}
pods:
  - {name: client, namespace: app}
services:
  - {name: redis, namespace: app, selector: {app: redis}, ports: [{port: 6379}]}
  - {name: web, namespace: app, selector: {app: web}, clusterIP: 10.2.0.50, ports: [{port: 80, targetPort: 8888}]}
"""


def _with(old: str, new: str) -> str:
    assert old in BASE
    return BASE.replace(old, new)


BAD = [
    ("unknown-field", _with("name: t1", "name: t1\nnodes: 3"), "nodes", "unknown field 'nodes'"),
    ("bad-lab-name", _with("name: t1", "name: Bad_Name"), "name", "is not a lab name"),
    ("bad-server-kind", _with("server: redis", "server: mysql"), "deployments[0].server", "unknown server kind"),
    ("server-field-typo", _with("{kind: http, port: 8888}", "{kind: http, prot: 8888}"), "prot", "unknown field"),
    ("replicas-range", _with("replicas: 2", "replicas: -1"), "deployments[1].replicas", "out of range"),
    ("pod-cidr-family", _with("podCIDR: 10.1.0.0/24", "podCIDR: fd00::/64"), "podCIDR", "not an IPv4 CIDR"),
    ("pod-cidr-host-bits", _with("podCIDR: 10.1.0.0/24", "podCIDR: 10.1.0.1/24"), "podCIDR", "not a CIDR"),
    ("cidr-overlap", _with("serviceCIDR: 10.2.0.0/24", "serviceCIDR: 10.1.0.0/25"), "serviceCIDR", "overlaps"),
    ("cidr-too-small", _with("podCIDR: 10.1.0.0/24", "podCIDR: 10.1.0.0/30"), "podCIDR", "room for 1 pods"),
    (
        "unknown-namespace",
        _with("{name: client, namespace: app}", "{name: client, namespace: x}"),
        "pods[0].namespace",
        "not listed",
    ),
    (
        "pod-named-node",
        _with("{name: client, namespace: app}", "{name: node, namespace: app}"),
        "pods[0].name",
        "node's network",
    ),
    (
        "cluster-ip-outside",
        _with("clusterIP: 10.2.0.50", "clusterIP: 10.9.0.50"),
        "services[1].clusterIP",
        "not a usable",
    ),
    (
        "duplicate-service",
        _with("{name: web, namespace: app, selector", "{name: redis, namespace: app, selector"),
        "services[1]",
        "listed twice",
    ),
    (
        "bad-proxy",
        _with("server: redis}", "server: {kind: nginx, proxy: {api: 'http://x'}}}"),
        "proxy",
        "must start with '/'",
    ),
    ("unknown-dns", _with("name: t1", "name: t1\ndns: app/nope"), "dns", "not a service"),
    ("not-yaml", "name: [", "", "not valid YAML"),
]


@pytest.mark.parametrize(("text", "path", "message"), [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_lab_is_rejected_with_location(text: str, path: str, message: str) -> None:
    """Each fault is reported with the file, the field path (and line) and a clear message."""
    with pytest.raises(InputError) as caught:
        parse_lab(text, "lab.yaml")
    found = [(str(p.location.path or ""), p.message) for p in caught.value.problems]
    assert any(path in where and message in msg for where, msg in found), found
    assert all(p.location.file == "lab.yaml" for p in caught.value.problems)


def test_every_fault_is_reported_at_once() -> None:
    """Two independent faults give two problems, not the first only."""
    text = _with("name: t1", "name: T1").replace("replicas: 2", "replicas: 99")
    with pytest.raises(InputError) as caught:
        parse_lab(text, "lab.yaml")
    assert len(caught.value.problems) == 2


def test_line_numbers_point_at_the_field() -> None:
    """A fault's message names the YAML line of the offending field."""
    with pytest.raises(InputError) as caught:
        parse_lab(_with("server: redis", "server: mysql"), "lab.yaml")
    line = next(i for i, t in enumerate(BASE.splitlines(), 1) if "server: redis" in t)
    assert f"(line {line})" in caught.value.problems[0].message


def test_plan_names_and_addresses() -> None:
    """Pods get sequential addresses after the gateway, Kubernetes-like names, and short veth names."""
    plan = plan_lab(parse_lab(BASE))
    assert str(plan.gateway4) == "10.1.0.1/24"
    assert [str(p.ipv4) for p in plan.pods] == ["10.1.0.2", "10.1.0.3", "10.1.0.4", "10.1.0.5"]
    web = [p for p in plan.pods if p.workload == "web"]
    assert len({p.name for p in web}) == 2 and all(p.name.startswith("web-") for p in web)
    assert all(len(p.veth) <= 15 and p.netns == f"pw-t1-{p.name}" for p in plan.pods)
    assert plan.node_netns == "pw-t1-node"
    assert veth_name("t1", "client") != veth_name("t2", "client")


def test_plan_is_deterministic() -> None:
    """The same spec always gives the same plan (names, addresses)."""
    assert plan_lab(parse_lab(BASE)) == plan_lab(parse_lab(BASE))


def test_services_get_cluster_ips_and_endpoints() -> None:
    """Explicit cluster IPs are kept, the others are allocated around them; selectors pick the pods."""
    plan = plan_lab(parse_lab(BASE))
    redis, web = plan.services
    assert [str(ip) for ip in web.cluster_ips] == ["10.2.0.50"]
    assert [str(ip) for ip in redis.cluster_ips] == ["10.2.0.1"]
    assert len(web.endpoints) == 2 and redis.endpoints == (plan.pods[0].name,)
    nat = {(s.name, s.target_port): len(s.endpoints) for s in plan.nat_services()}
    assert nat == {("app/redis:6379/tcp", 6379): 1, ("app/web:80/tcp", 8888): 2}


def test_hosts_file_names_services_for_the_pod_namespace() -> None:
    """A pod resolves short service names of its own namespace and qualified names of all."""
    plan = plan_lab(parse_lab(BASE))
    client = plan.pod("client")
    hosts = plan.hosts_text(client)
    assert "10.2.0.1\tredis.app.svc.cluster.local redis.app.svc redis.app redis\n" in hosts
    assert "10.1.0.5\tclient\n" in hosts
    node_hosts = plan.hosts_text(None)
    assert " redis\n" not in node_hosts and "redis.app.svc.cluster.local" in node_hosts
    assert plan.resolv_text(client).startswith("search app.svc.cluster.local ")


def test_dual_stack_pods_and_services() -> None:
    """With IPv6 CIDRs, every pod and service also gets an IPv6 address and its own NAT entries."""
    text = _with(
        "serviceCIDR: 10.2.0.0/24", "serviceCIDR: 10.2.0.0/24\npodCIDRv6: fd00:1::/64\nserviceCIDRv6: fd00:2::/112"
    )
    plan = plan_lab(parse_lab(text))
    assert all(p.ipv6 is not None and p.ipv6 in ipaddress.ip_network("fd00:1::/64") for p in plan.pods)
    assert all(len(s.cluster_ips) == 2 for s in plan.services)
    assert {s.address.version for s in plan.nat_services()} == {4, 6}


def test_inventory_is_a_valid_podwall_inventory() -> None:
    """The inventory the lab writes loads with podwall's own inventory loader and names every pod."""
    import yaml

    plan = plan_lab(load_lab(DEMO))
    inv = parse_podwall_inventory(yaml.safe_dump(plan.inventory()), "inventory.yaml")
    pods = {p.name: [str(ip) for ip in p.ips] for w in inv.workloads for p in w.pods}
    assert pods == {p.name: [str(ip) for ip in p.ips] for p in plan.pods}
    assert {w.name for w in inv.workloads} == {"nginx", "node", "redis", "coredns", "exploit"}
    assert {s.name: [str(ip) for ip in s.cluster_ips] for s in inv.services}["redis"] == ["10.96.0.60", "fd00:10:96::3"]


def test_demo_lab_matches_the_demo_application() -> None:
    """The demo lab is the demo: node has 2 replicas, exploit runs nothing, DNS comes from kube-dns."""
    spec = load_lab(DEMO)
    assert {d.name: d.replicas for d in spec.deployments}["node"] == 2
    assert [(p.name, p.server.kind) for p in spec.pods] == [("exploit", "none")]
    assert str(plan_lab(spec).dns_ip) == "10.96.0.10"
