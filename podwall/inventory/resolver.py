"""Identity resolution: an address (and port) to the named `Endpoint` policy and events use.

Rules, first match wins (docs/inventory.md):
  1. a pod's address -> its workload, group `nv.<service>.<namespace>`, groups (group, "containers");
  2. a service cluster IP -> the group of the workloads it selects when they share one group,
     else the service's own group `nv.<service>.<namespace>` (kind "Service");
  3. a node address -> group "nodes";
  4. an address in an external group's CIDRs -> that group (the most specific one first);
  5. an unknown address inside the internal ranges (or loopback) -> group = the address text;
  6. anything else -> group "external".
Without an inventory only rules 5 and 6 apply, with the default internal ranges.

Identities are cached per address and answers per (address, port), since flows ask about the
same few servers again and again; both caches are bounded and simply start over when full.
"""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address, ip_address

from podwall.core.types import Endpoint
from podwall.inventory.model import (
    DEFAULT_INTERNAL_CIDRS,
    Inventory,
    IPAddress,
    IPNetwork,
    Labels,
    Service,
    Workload,
)

CONTAINERS = "containers"
NODES = "nodes"
EXTERNAL = "external"

AddressLike = bytes | str | IPv4Address | IPv6Address


def _ns_labels(inventory: Inventory, namespace: str) -> tuple[tuple[str, str], ...]:
    return inventory.namespace_labels(namespace).pairs


class Resolver:
    """Names addresses from an inventory (or, given None, by address range only)."""

    __slots__ = ("_cache", "_cache_size", "_exact", "_external", "_internal", "_templates", "inventory")

    def __init__(self, inventory: Inventory | None, *, cache_size: int = 65536) -> None:
        self.inventory = inventory
        self._templates: dict[AddressLike, Endpoint] = {}  # per address, port 0
        self._cache: dict[tuple[AddressLike, int], Endpoint] = {}  # per (address, port): the answer itself
        self._cache_size = cache_size
        self._exact: dict[IPAddress, Endpoint] = {}  # port-0 templates for pods, services and nodes
        self._external: list[tuple[IPNetwork, str]] = []
        self._internal: tuple[IPNetwork, ...] = DEFAULT_INTERNAL_CIDRS
        if inventory is not None:
            self._index(inventory)

    def _index(self, inv: Inventory) -> None:
        self._internal = inv.internal_cidrs
        for node in inv.nodes:
            for ip in node.ips:
                self._exact[ip] = Endpoint(
                    str(ip), 0, NODES, kind="Node", node=node.name, labels=node.labels.pairs, groups=(NODES,)
                )
        by_namespace: dict[str, list[Workload]] = {}
        for w in inv.workloads:
            by_namespace.setdefault(w.namespace, []).append(w)
        for svc in inv.services:
            candidates = by_namespace.get(svc.namespace, [])
            for ip in svc.cluster_ips:
                self._exact[ip] = self._service_endpoint(inv, svc, candidates, str(ip))
        for w in inv.workloads:
            ns_labels = _ns_labels(inv, w.namespace)
            for pod in w.pods:
                for ip in pod.ips:
                    self._exact[ip] = self._workload_endpoint(w, str(ip), ns_labels, pod=pod.name, node=pod.node)
        self._external = sorted(
            ((net, g.name) for g in inv.external_groups for net in g.cidrs),
            key=lambda item: -item[0].prefixlen,
        )

    @staticmethod
    def _workload_endpoint(
        w: Workload,
        ip: str,
        ns_labels: tuple[tuple[str, str], ...],
        pod: str | None = None,
        node: str | None = None,
    ) -> Endpoint:
        return Endpoint(
            ip,
            0,
            w.group,
            workload=w.key,
            namespace=w.namespace,
            service=w.service,
            pod=pod,
            kind=w.kind,
            node=node,
            image=w.image,
            labels=w.labels.pairs,
            ns_labels=ns_labels,
            groups=(w.group, CONTAINERS),
        )

    def _service_endpoint(self, inv: Inventory, svc: Service, pool: list[Workload], ip: str) -> Endpoint:
        ns_labels = _ns_labels(inv, svc.namespace)
        selected = [w for w in pool if svc.selects(w)]  # pool: the workloads of its namespace
        groups = {w.group for w in selected}
        if len(selected) == 1:
            return self._workload_endpoint(selected[0], ip, ns_labels)
        if len(groups) == 1:
            # Several workloads behind one group: name the group, keep only what they share.
            shared = set(selected[0].labels.pairs).intersection(*(w.labels.pairs for w in selected[1:]))
            images = {w.image for w in selected}
            group = groups.pop()
            return Endpoint(
                ip,
                0,
                group,
                namespace=svc.namespace,
                service=selected[0].service,
                kind="Service",
                image=images.pop() if len(images) == 1 else None,
                labels=Labels(shared).pairs,
                ns_labels=ns_labels,
                groups=(group, CONTAINERS),
            )
        return Endpoint(
            ip, 0, svc.group, namespace=svc.namespace, service=svc.name, kind="Service", ns_labels=ns_labels,
            groups=(svc.group,),
        )  # fmt: skip

    def resolve(self, ip: AddressLike, port: int) -> Endpoint:
        """The endpoint an address (packed bytes, text or ipaddress object) and port stand for.

        Raises ValueError when `ip` is not an IPv4 or IPv6 address.
        """
        key = (ip, port)
        found = self._cache.get(key)
        if found is not None:
            return found
        template = self._templates.get(ip)
        if template is None:
            template = self._identify(ip)
            if len(self._templates) >= self._cache_size:
                self._templates.clear()
            self._templates[ip] = template
        found = _with(template, template.ip, port)
        if len(self._cache) >= self._cache_size:
            self._cache.clear()
        self._cache[key] = found
        return found

    def _identify(self, raw: AddressLike) -> Endpoint:
        addr: IPAddress = raw if isinstance(raw, IPv4Address | IPv6Address) else ip_address(raw)
        text = str(addr)
        if isinstance(addr, IPv6Address) and addr.ipv4_mapped is not None:
            addr = addr.ipv4_mapped  # a dual-stack socket's view of an IPv4 peer is that peer
        known = self._exact.get(addr)
        if known is not None:
            return known if known.ip == text else _with(known, text, 0)
        names = [name for net, name in self._external if addr.version == net.version and addr in net]
        if names:
            groups = tuple(dict.fromkeys(names))
            return Endpoint(text, 0, groups[0], kind="External", groups=(*groups, EXTERNAL))
        if addr.is_loopback or any(addr.version == net.version and addr in net for net in self._internal):
            return Endpoint(text, 0, text, kind="Unmanaged", groups=(text,))
        return Endpoint(text, 0, EXTERNAL, kind="External", groups=(EXTERNAL,))

    def clear_cache(self) -> None:
        self._cache.clear()
        self._templates.clear()


def _with(ep: Endpoint, text: str, port: int) -> Endpoint:
    return Endpoint(
        text, port, ep.group, ep.workload, ep.namespace, ep.service, ep.pod, ep.kind, ep.node, ep.image,
        ep.labels, ep.ns_labels, ep.groups,
    )  # fmt: skip
