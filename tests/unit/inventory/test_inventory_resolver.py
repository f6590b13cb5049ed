"""Identity resolution: which endpoint an address stands for, with and without an inventory."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address, ip_address

import pytest
from hypothesis import given
from hypothesis import strategies as st

from podwall.inventory.loader import parse_podwall_inventory
from podwall.inventory.model import Inventory
from podwall.inventory.resolver import Resolver

INVENTORY = """
apiVersion: podwall.io/v1
kind: Inventory
cluster: test
internalCIDRs: [10.0.0.0/8, 192.168.0.0/16, fd00::/8]
nodes: [{name: node-1, ips: [192.168.56.10], labels: {zone: a}}]
namespaces: [{name: shop, labels: {team: web}}]
workloads:
  - {name: redis, namespace: shop, kind: StatefulSet, labels: {app: redis}, image: "redis:7",
     pods: [{name: redis-0, ips: [10.244.1.5, "fd00::5"], node: node-1}]}
  - {name: api-v1, namespace: shop, labels: {app: api, track: stable}, service: api, image: "api:1",
     pods: [{name: api-v1-x, ips: [10.244.1.6], node: node-1}]}
  - {name: api-v2, namespace: shop, labels: {app: api, track: canary}, service: api, image: "api:2",
     pods: [{name: api-v2-y, ips: [10.244.1.7], node: node-1}]}
  - {name: web, namespace: shop, labels: {tier: front}, pods: [{name: web-z, ips: [10.244.1.8]}]}
services:
  - {name: redis, namespace: shop, selector: {app: redis}, clusterIPs: [10.96.0.20, "fd00:96::20"]}
  - {name: api, namespace: shop, selector: {app: api}, clusterIPs: [10.96.0.30]}
  - {name: mixed, namespace: shop, selector: {}, clusterIPs: [10.96.0.40]}
  - {name: front, namespace: shop, selector: {tier: front, app: api}, clusterIPs: [10.96.0.50]}
externalGroups:
  - {name: ext.aws, cidrs: [3.0.0.0/8]}
  - {name: ext.aws-s3, cidrs: [3.5.0.0/16]}
  - {name: ext.legacy-db, cidrs: [10.50.0.0/16]}
"""

NS_LABELS = (("kubernetes.io/metadata.name", "shop"), ("team", "web"))


PARSED = parse_podwall_inventory(INVENTORY, "inv.yaml")


@pytest.fixture
def inventory() -> Inventory:
    return PARSED


CASES = [
    # id, address, expected (group, kind, workload, pod, node, groups)
    (
        "pod-v4",
        "10.244.1.5",
        ("nv.redis.shop", "StatefulSet", "shop/redis", "redis-0", "node-1", ("nv.redis.shop", "containers")),
    ),
    (
        "pod-v6",
        "fd00::5",
        ("nv.redis.shop", "StatefulSet", "shop/redis", "redis-0", "node-1", ("nv.redis.shop", "containers")),
    ),
    (
        "pod-v4-mapped",
        "::ffff:10.244.1.5",
        ("nv.redis.shop", "StatefulSet", "shop/redis", "redis-0", "node-1", ("nv.redis.shop", "containers")),
    ),
    (
        "service-one-workload",
        "10.96.0.20",
        ("nv.redis.shop", "StatefulSet", "shop/redis", None, None, ("nv.redis.shop", "containers")),
    ),
    (
        "service-v6",
        "fd00:96::20",
        ("nv.redis.shop", "StatefulSet", "shop/redis", None, None, ("nv.redis.shop", "containers")),
    ),
    (
        "service-one-group-two-workloads",
        "10.96.0.30",
        ("nv.api.shop", "Service", None, None, None, ("nv.api.shop", "containers")),
    ),
    (
        "service-selects-nothing",
        "10.96.0.40",
        ("nv.mixed.shop", "Service", None, None, None, ("nv.mixed.shop",)),
    ),
    ("service-no-match", "10.96.0.50", ("nv.front.shop", "Service", None, None, None, ("nv.front.shop",))),
    ("node", "192.168.56.10", ("nodes", "Node", None, None, "node-1", ("nodes",))),
    ("external-group", "3.1.2.3", ("ext.aws", "External", None, None, None, ("ext.aws", "external"))),
    (
        "external-group-most-specific",
        "3.5.1.1",
        ("ext.aws-s3", "External", None, None, None, ("ext.aws-s3", "ext.aws", "external")),
    ),
    (
        "external-group-inside-internal",
        "10.50.0.9",
        ("ext.legacy-db", "External", None, None, None, ("ext.legacy-db", "external")),
    ),
    ("unmanaged-internal", "10.9.9.9", ("10.9.9.9", "Unmanaged", None, None, None, ("10.9.9.9",))),
    ("unmanaged-internal-v6", "fd00::99", ("fd00::99", "Unmanaged", None, None, None, ("fd00::99",))),
    ("loopback", "127.0.0.1", ("127.0.0.1", "Unmanaged", None, None, None, ("127.0.0.1",))),
    ("outside-configured-internal", "172.16.0.1", ("external", "External", None, None, None, ("external",))),
    ("external", "8.8.8.8", ("external", "External", None, None, None, ("external",))),
    ("external-v6", "2001:db8::1", ("external", "External", None, None, None, ("external",))),
]


@pytest.mark.parametrize(("address", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_resolution_rules(inventory: Inventory, address: str, expected: tuple[object, ...]) -> None:
    """Each kind of address resolves to its group, kind, workload, pod, node and group list."""
    ep = Resolver(inventory).resolve(address, 443)
    assert (ep.group, ep.kind, ep.workload, ep.pod, ep.node, ep.groups) == expected
    assert ep.ip == str(ip_address(address)) and ep.port == 443


def test_pod_endpoint_carries_the_workload_identity(inventory: Inventory) -> None:
    """A pod's endpoint names namespace, service, image, labels and the namespace's labels."""
    ep = Resolver(inventory).resolve("10.244.1.6", 8080)
    assert (ep.namespace, ep.service, ep.image) == ("shop", "api", "api:1")
    assert ep.labels == (("app", "api"), ("track", "stable"))
    assert ep.ns_labels == NS_LABELS


def test_service_over_one_group_keeps_only_shared_labels(inventory: Inventory) -> None:
    """A service in front of two workloads of one group carries the labels both share, no single image."""
    ep = Resolver(inventory).resolve("10.96.0.30", 80)
    assert (ep.namespace, ep.service, ep.image) == ("shop", "api", None)
    assert ep.labels == (("app", "api"),)


def test_node_endpoint_has_node_labels(inventory: Inventory) -> None:
    """A node address carries the node's labels."""
    assert Resolver(inventory).resolve("192.168.56.10", 22).labels == (("zone", "a"),)


ADDRESS_FORMS = [
    ("text", "10.244.1.5"),
    ("packed-v4", ip_address("10.244.1.5").packed),
    ("ipaddress", IPv4Address("10.244.1.5")),
    ("text-v6-uncompressed", "fd00:0:0:0:0:0:0:5"),
    ("packed-v6", ip_address("fd00::5").packed),
]


@pytest.mark.parametrize("address", [c[1] for c in ADDRESS_FORMS], ids=[c[0] for c in ADDRESS_FORMS])
def test_address_forms(inventory: Inventory, address: bytes | str | IPv4Address) -> None:
    """Packed bytes, text (compressed or not) and ipaddress objects resolve alike, with canonical text."""
    ep = Resolver(inventory).resolve(address, 6379)
    assert ep.group == "nv.redis.shop"
    assert ep.ip in ("10.244.1.5", "fd00::5")


NO_INVENTORY_CASES = [
    ("rfc1918", "192.168.1.1", "192.168.1.1", "Unmanaged"),
    ("cgnat", "100.64.0.1", "100.64.0.1", "Unmanaged"),
    ("ula", "fd12::1", "fd12::1", "Unmanaged"),
    ("link-local-v6", "fe80::1", "fe80::1", "Unmanaged"),
    ("loopback-v4", "127.0.0.1", "127.0.0.1", "Unmanaged"),
    ("loopback-v6", "::1", "::1", "Unmanaged"),
    ("public", "1.1.1.1", "external", "External"),
    ("public-v6", "2606:4700::1111", "external", "External"),
]


@pytest.mark.parametrize(
    ("address", "group", "kind"), [c[1:] for c in NO_INVENTORY_CASES], ids=[c[0] for c in NO_INVENTORY_CASES]
)
def test_without_inventory(address: str, group: str, kind: str) -> None:
    """Without an inventory, default internal ranges and loopback name themselves; the rest is external."""
    ep = Resolver(None).resolve(address, 53)
    assert (ep.group, ep.kind, ep.groups, ep.workload) == (group, kind, (group,), None)


def test_answers_are_cached_per_address_and_port(inventory: Inventory) -> None:
    """The same (address, port) gets the same object back; another port the same identity."""
    resolver = Resolver(inventory)
    first = resolver.resolve("10.244.1.5", 6379)
    assert resolver.resolve("10.244.1.5", 6379) is first
    other = resolver.resolve("10.244.1.5", 40000)
    assert other.port == 40000 and other.group == first.group and other.pod == first.pod


def test_cache_stays_bounded(inventory: Inventory) -> None:
    """Past its size the cache starts over instead of growing, and answers stay right."""
    resolver = Resolver(inventory, cache_size=4)
    for port in range(1, 50):
        assert resolver.resolve("10.244.1.5", port).port == port
    assert len(resolver._cache) <= 4 and len(resolver._templates) <= 4


@pytest.mark.parametrize("bad", ["10.0.0", "not-an-ip", b"\x01\x02\x03"], ids=["short-text", "word", "3-bytes"])
def test_invalid_address_raises_value_error(bad: str | bytes) -> None:
    """Something that is not an address is a ValueError, not a wrong answer."""
    with pytest.raises(ValueError):
        Resolver(None).resolve(bad, 1)


@given(st.one_of(st.ip_addresses(v=4), st.ip_addresses(v=6)), st.integers(0, 65535))
def test_any_address_resolves_consistently(address: IPv4Address | IPv6Address, port: int) -> None:
    """Every address resolves; its group is among its groups and its text is canonical."""
    ep = Resolver(PARSED).resolve(address.packed, port)
    assert ep.group in ep.groups and ep.port == port and ep.ip == str(address)
