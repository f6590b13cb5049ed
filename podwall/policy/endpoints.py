"""Endpoints that stand for a policy group: inventory workloads it selects, or synthetic ones.

Analysis, the semantic diff and `podwall policy explain` reason about groups rather than
captured traffic. They need (a) which workloads of an inventory each group selects, judged
by the policy engine itself (`GroupMembers`), and (b) one concrete endpoint per group to build
hypothetical connections from (`representatives`, `endpoint_for`). Synthetic endpoints use
documentation address ranges (RFC 5737) so they never collide with a real peer.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from podwall.core.types import Endpoint
from podwall.inventory.model import Inventory, Workload
from podwall.inventory.resolver import Resolver
from podwall.policy.evaluate import PolicyEngine
from podwall.policy.model import Group, Policy
from podwall.policy.specs import RESERVED_GROUPS, parse_address

EXTERNAL_IP = "203.0.113.10"  # TEST-NET-3: an address on the internet
NODE_IP = "198.51.100.10"  # TEST-NET-2: a host-network peer
_WORKLOAD_NET = ipaddress.ip_network("192.0.2.0/24")  # TEST-NET-1: synthetic workloads
CONTAINERS = "containers"


@dataclass(frozen=True, slots=True)
class Representative:
    """An endpoint standing for a group, and the server name to present when the group is a
    hostname address group (`*.example.com` matches the name a client asked for, not an IP)."""

    endpoint: Endpoint
    server_name: str | None = None


def workload_endpoint(inventory: Inventory, workload: Workload, resolver: Resolver | None = None) -> Endpoint:
    """The endpoint of a workload as traffic would name it: resolved on its first pod address,
    or built from the workload itself when it has no address."""
    for pod in workload.pods:
        for ip in pod.ips:
            return (resolver or Resolver(inventory)).resolve(ip, 0)
    return Endpoint(
        "",
        0,
        workload.group,
        workload=workload.key,
        namespace=workload.namespace,
        service=workload.service,
        kind=workload.kind,
        image=workload.image,
        labels=workload.labels.pairs,
        ns_labels=inventory.namespace_labels(workload.namespace).pairs,
        groups=(workload.group, CONTAINERS),
    )


def inventory_endpoints(inventory: Inventory) -> list[Endpoint]:
    """One endpoint per workload of the inventory (in its order), then one per node with an address."""
    resolver = Resolver(inventory)
    out = [workload_endpoint(inventory, w, resolver) for w in inventory.workloads]
    out.extend(resolver.resolve(node.ips[0], 0) for node in inventory.nodes if node.ips)
    return out


class GroupMembers:
    """Which endpoints of an inventory each group (and zone, and reserved group) selects.

    Membership is the engine's own (`PolicyEngine.member_groups`), so analysis agrees with
    enforcement. Without an inventory every group selects nothing known.
    """

    def __init__(self, policy: Policy, inventory: Inventory | None, engine: PolicyEngine | None = None) -> None:
        self.engine = engine or PolicyEngine(policy)
        self.endpoints: list[Endpoint] = inventory_endpoints(inventory) if inventory is not None else []
        self.inventory = inventory
        members: dict[str, set[int]] = {}
        for i, ep in enumerate(self.endpoints):
            for name in self.engine.member_groups(ep):
                members.setdefault(name, set()).add(i)
        self._members = {name: frozenset(ids) for name, ids in members.items()}

    def of(self, group: str) -> frozenset[int]:
        """Indices (into `endpoints`) of the endpoints the group selects."""
        return self._members.get(group, frozenset())

    def workloads_of(self, group: str) -> list[str]:
        """The workloads (`namespace/name`) the group selects, in inventory order."""
        return [w for i in sorted(self.of(group)) if (w := self.endpoints[i].workload) is not None]


def _synthetic_ip(group: str) -> str:
    # Stable per group name, so the same group gets the same address in both policies of a diff.
    offset = 1 + sum(group.encode()) % 253
    return str(_WORKLOAD_NET.network_address + offset)


def external_endpoint(group: str = "external") -> Endpoint:
    return Endpoint(
        EXTERNAL_IP, 0, group, kind="External", groups=(group, "external") if group != "external" else (group,)
    )


def node_endpoint() -> Endpoint:
    return Endpoint(NODE_IP, 0, "nodes", kind="Node", groups=("nodes",))


def _from_criteria(group: Group) -> Endpoint | None:
    """A synthetic workload satisfying the group's positive criteria, or None when a criterion
    (a regex, a glob) gives no value to copy."""
    attrs: dict[str, str] = {}
    labels: dict[str, str] = {}
    ns_labels: dict[str, str] = {}
    for c in group.criteria:
        if c.negative:
            continue
        if c.op == "regex" or (c.op == "=" and ("*" in c.value or "?" in c.value)):
            return None
        target = attrs if c.key in ("namespace", "service", "image", "node", "kind") else labels
        key = c.key
        if key.startswith("ns:"):
            target, key = ns_labels, key[3:]
        target.setdefault(key, c.value)
    namespace = attrs.get("namespace", "synthetic")
    return Endpoint(
        _synthetic_ip(group.name),
        0,
        group.name,
        workload=f"{namespace}/{group.name}",
        namespace=namespace,
        service=attrs.get("service", group.name),
        kind=attrs.get("kind", "Deployment"),
        node=attrs.get("node"),
        image=attrs.get("image"),
        labels=tuple(sorted(labels.items())),
        ns_labels=tuple(sorted(ns_labels.items())),
        groups=(group.name, CONTAINERS),
    )


def _from_address(group: Group, resolver: Resolver) -> Representative | None:
    for c in group.criteria:
        if c.negative:
            continue
        spec = parse_address(c.value)
        if spec.hostname is not None:
            name = spec.hostname.replace("*", "www", 1) if spec.hostname.startswith("*.") else spec.hostname
            return Representative(external_endpoint(), server_name=name)
        if spec.network is not None:
            net = spec.network
            ip = net.network_address + 1 if net.num_addresses > 2 else net.network_address
        else:
            ip = ipaddress.ip_address(spec.first) if spec.version == 4 else ipaddress.IPv6Address(spec.first)
        return Representative(resolver.resolve(ip, 0))
    return None


def representatives(group: str, members: GroupMembers, limit: int = 1) -> list[Representative]:
    """Up to `limit` endpoints standing for `group`, each verified to be in it by the engine:
    inventory endpoints it selects first, else a synthetic endpoint (external, node, an address of
    an address group, a workload built from the group's criteria). Empty when none can be built."""
    engine = members.engine
    found = [Representative(members.endpoints[i]) for i in sorted(members.of(group))[:limit]]
    if found:
        return found
    policy = engine.policy
    candidates: list[Representative] = []
    if group == "external":
        candidates.append(Representative(external_endpoint()))
    elif group == "nodes":
        candidates.append(Representative(node_endpoint()))
    elif group == CONTAINERS:
        synthetic = Endpoint(_synthetic_ip(group), 0, CONTAINERS, workload="synthetic/workload", groups=(CONTAINERS,))
        candidates.append(Representative(synthetic))
    else:
        definition = policy.group(group)
        if definition is None:
            return []
        if definition.is_zone:
            for member in definition.members:
                candidates.extend(representatives(member, members, limit))
        elif definition.is_address_group:
            rep = _from_address(definition, Resolver(members.inventory))
            if rep is not None:
                candidates.append(rep)
        else:
            ep = _from_criteria(definition)
            if ep is not None:
                candidates.append(Representative(ep))
    out: list[Representative] = []
    for rep in candidates:
        # Hostname groups match the server name, which `member_groups` does not take: trusted.
        if rep.server_name is not None or group in engine.member_groups(rep.endpoint):
            out.append(rep)
        if len(out) >= limit:
            break
    return out


def endpoint_for(text: str, port: int, members: GroupMembers, inventory: Inventory | None) -> Representative | None:
    """The endpoint a user names on the command line: an IP address (resolved through the
    inventory), a group or zone of the policy or a reserved group, or a workload of the inventory
    (its group `nv.<service>.<namespace>`, `namespace/name`, or a unique name). None if none."""
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        pass
    else:
        return _with_port(Representative(Resolver(inventory).resolve(ip, 0)), port)
    if text in RESERVED_GROUPS or members.engine.policy.group(text) is not None:
        reps = representatives(text, members)
        return _with_port(reps[0], port) if reps else None
    if inventory is not None:
        matches = [w for w in inventory.workloads if text in (w.group, w.key)]
        if not matches:
            matches = [w for w in inventory.workloads if w.name == text]
        if matches:
            return _with_port(Representative(workload_endpoint(inventory, matches[0])), port)
    return None


def _with_port(rep: Representative, port: int) -> Representative:
    ep = rep.endpoint
    moved = Endpoint(
        ep.ip, port, ep.group, ep.workload, ep.namespace, ep.service, ep.pod, ep.kind, ep.node, ep.image,
        ep.labels, ep.ns_labels, ep.groups,
    )  # fmt: skip
    return Representative(moved, rep.server_name)
