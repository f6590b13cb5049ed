"""Inventory model: who is who in a cluster, immutable once built.

An `Inventory` names the nodes, namespaces, workloads (with their pods and addresses), services
and external groups of one cluster. Every source (podwall inventory YAML, Kubernetes objects)
produces an `InventoryPart` whose entries remember where they came from; `build_inventory`
merges parts, checks the invariants (unique names, each address claimed once) and either
returns a whole inventory or raises `InputError` listing every located problem.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address, ip_network
from typing import Any

from podwall.core.errors import InputError, Location, Problem

IPAddress = IPv4Address | IPv6Address
IPNetwork = IPv4Network | IPv6Network

DEFAULT_CLUSTER = "default"
DEFAULT_NAMESPACE = "default"  # what kubectl assumes for namespaced objects without one

# RFC 1918, RFC 6598 (carrier-grade NAT, used by some CNIs), IPv6 ULA and link-local.
DEFAULT_INTERNAL_CIDRS: tuple[IPNetwork, ...] = tuple(
    ip_network(c) for c in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "fc00::/7", "fe80::/10")
)

# Labels that differ between pods (or rollouts) of the same workload; keeping them would split
# one service into many identities. `job-name` is kept on purpose: it names the Job.
VOLATILE_LABELS: frozenset[str] = frozenset(
    {
        "pod-template-hash",
        "controller-revision-hash",
        "pod-template-generation",
        "statefulset.kubernetes.io/pod-name",
        "apps.kubernetes.io/pod-index",
        "batch.kubernetes.io/controller-uid",
        "controller-uid",
        "batch.kubernetes.io/job-completion-index",
    }
)

RESERVED_GROUPS: frozenset[str] = frozenset({"containers", "nodes", "external"})

# The API server sets this label on every namespace; we add it too so that selectors written
# against it (very common in NetworkPolicies) match the same namespaces.
NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"


def service_group(service: str, namespace: str) -> str:
    """The NeuVector-style group of a service: `nv.<service>.<namespace>`."""
    return f"nv.{service}.{namespace}"


class Labels(Mapping[str, str]):
    """An immutable, hashable label map; iteration and `pairs` are sorted by key."""

    __slots__ = ("_map", "_pairs")

    def __init__(self, items: Mapping[str, str] | Iterable[tuple[str, str]] = ()) -> None:
        pairs = tuple(sorted(dict(items).items()))
        self._pairs: tuple[tuple[str, str], ...] = pairs
        self._map: dict[str, str] = dict(pairs)

    @property
    def pairs(self) -> tuple[tuple[str, str], ...]:
        """The labels as sorted (key, value) pairs, the form `Endpoint.labels` carries."""
        return self._pairs

    def __getitem__(self, key: str) -> str:
        return self._map[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._map)

    def __len__(self) -> int:
        return len(self._pairs)

    def __hash__(self) -> int:
        return hash(self._pairs)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Labels):
            return self._pairs == other._pairs
        if isinstance(other, Mapping):
            return self._map == dict(other.items())
        return NotImplemented

    def __repr__(self) -> str:
        return f"Labels({self._map!r})"


EMPTY_LABELS = Labels()


def stable_labels(labels: Mapping[str, str]) -> Labels:
    """The labels without the volatile ones (see `VOLATILE_LABELS`)."""
    return Labels((k, v) for k, v in labels.items() if k not in VOLATILE_LABELS)


def _ips(values: Iterable[IPAddress | str]) -> tuple[IPAddress, ...]:
    return tuple(ip_address(v) for v in values)


def _labels(value: Mapping[str, str]) -> Labels:
    return value if isinstance(value, Labels) else Labels(value)


# Entities coerce their fields in __post_init__ (text addresses, plain dicts, lists) so that
# code building an inventory by hand gets the same normalised, immutable values as the loaders.


@dataclass(frozen=True, slots=True)
class Node:
    """A cluster node: its addresses identify host-network traffic (group `nodes`)."""

    name: str
    ips: tuple[IPAddress, ...] = ()
    labels: Labels = EMPTY_LABELS

    def __post_init__(self) -> None:
        object.__setattr__(self, "ips", _ips(self.ips))
        object.__setattr__(self, "labels", _labels(self.labels))


@dataclass(frozen=True, slots=True)
class Namespace:
    """A namespace and its labels (matched by `ns:<label>` criteria)."""

    name: str
    labels: Labels = EMPTY_LABELS

    def __post_init__(self) -> None:
        object.__setattr__(self, "labels", _labels(self.labels))


@dataclass(frozen=True, slots=True)
class ContainerPort:
    """A port a container declares (`containers[].ports[]`): policies may name it (named ports)."""

    name: str | None
    port: int
    protocol: str = "TCP"


@dataclass(frozen=True, slots=True)
class Pod:
    """One pod of a workload. A host-network pod has no addresses of its own: it uses its node's.

    `labels` (every label, volatile ones included) and `ports` (its containers' ports) are detail
    for policy evaluation; they are not part of the pod's identity and do not take part in equality.
    """

    name: str
    ips: tuple[IPAddress, ...] = ()
    node: str | None = None
    host_network: bool = False
    labels: Labels = field(default=EMPTY_LABELS, compare=False)
    ports: tuple[ContainerPort, ...] = field(default=(), compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "ips", _ips(self.ips))
        object.__setattr__(self, "labels", _labels(self.labels))
        object.__setattr__(self, "ports", tuple(self.ports))


@dataclass(frozen=True, slots=True)
class Workload:
    """A workload named by its top owner (Deployment, StatefulSet, ..., or a bare Pod).

    `service` is NeuVector's service name (by default the workload's name); it gives the
    workload's group `nv.<service>.<namespace>`. `labels` are the pods' labels, volatile ones
    dropped. `ports` are the container ports of the pod template (or of the first pod when no
    template is given): detail for policy evaluation, not part of equality.
    """

    name: str
    namespace: str
    kind: str = "Deployment"
    labels: Labels = EMPTY_LABELS
    image: str | None = None
    service: str = ""
    pods: tuple[Pod, ...] = ()
    ports: tuple[ContainerPort, ...] = field(default=(), compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "labels", _labels(self.labels))
        object.__setattr__(self, "pods", tuple(self.pods))
        object.__setattr__(self, "ports", tuple(self.ports))
        if not self.service:
            object.__setattr__(self, "service", self.name)

    @property
    def group(self) -> str:
        return service_group(self.service, self.namespace)

    @property
    def key(self) -> str:
        """`<namespace>/<name>`, the form `Endpoint.workload` carries."""
        return f"{self.namespace}/{self.name}"

    @property
    def ref(self) -> str:
        """`<namespace>/<name>[<kind>]`, the way netpol-analyzer names a peer."""
        return f"{self.namespace}/{self.name}[{self.kind}]"


@dataclass(frozen=True, slots=True)
class ServicePort:
    """One port of a Kubernetes Service; `target_port` is a number or a container port name."""

    name: str | None
    port: int
    protocol: str = "TCP"
    target_port: int | str | None = None

    def __post_init__(self) -> None:
        if self.target_port is None:
            object.__setattr__(self, "target_port", self.port)


@dataclass(frozen=True, slots=True)
class Service:
    """A Kubernetes Service: its virtual addresses and the pods it selects by label."""

    name: str
    namespace: str
    selector: Labels = EMPTY_LABELS
    cluster_ips: tuple[IPAddress, ...] = ()
    ports: tuple[ServicePort, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "selector", _labels(self.selector))
        object.__setattr__(self, "cluster_ips", _ips(self.cluster_ips))
        object.__setattr__(self, "ports", tuple(self.ports))

    @property
    def group(self) -> str:
        return service_group(self.name, self.namespace)

    def selects(self, workload: Workload) -> bool:
        """Kubernetes semantics: same namespace, non-empty selector, every selector label present."""
        if workload.namespace != self.namespace or not self.selector:
            return False
        labels = workload.labels
        return all(labels.get(k) == v for k, v in self.selector.items())


@dataclass(frozen=True, slots=True)
class ExternalGroup:
    """A named set of address ranges outside the cluster (e.g. `ext.github`)."""

    name: str
    cidrs: tuple[IPNetwork, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "cidrs", tuple(ip_network(c) for c in self.cidrs))


@dataclass(frozen=True, slots=True)
class Inventory:
    """Everything podwall knows about one cluster's identities. Build it with `build_inventory`
    (or the loaders) to get located errors; constructing it directly only normalises fields."""

    cluster: str = DEFAULT_CLUSTER
    internal_cidrs: tuple[IPNetwork, ...] = DEFAULT_INTERNAL_CIDRS
    nodes: tuple[Node, ...] = ()
    namespaces: tuple[Namespace, ...] = ()
    workloads: tuple[Workload, ...] = ()
    services: tuple[Service, ...] = ()
    external_groups: tuple[ExternalGroup, ...] = ()
    _namespaces: dict[str, Namespace] = field(init=False, repr=False, compare=False, hash=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "internal_cidrs", tuple(ip_network(c) for c in self.internal_cidrs))
        for name in ("nodes", "namespaces", "workloads", "services", "external_groups"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        object.__setattr__(self, "_namespaces", {ns.name: ns for ns in self.namespaces})

    def namespace_labels(self, name: str | None) -> Labels:
        """Labels of a namespace; empty for a namespace the inventory does not know."""
        ns = self._namespaces.get(name) if name is not None else None
        return ns.labels if ns is not None else EMPTY_LABELS

    def workload(self, namespace: str, name: str, kind: str | None = None) -> Workload | None:
        """The workload `namespace/name` (of `kind` when given), or None."""
        for w in self.workloads:
            if w.namespace == namespace and w.name == name and (kind is None or w.kind == kind):
                return w
        return None

    def groups(self) -> tuple[str, ...]:
        """Every workload group, sorted, each once."""
        return tuple(sorted({w.group for w in self.workloads}))


# --- assembling parts into an inventory --------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Claim:
    """An address claimed by one identity (`owner` such as "pod demo/redis-x1"), and where."""

    ip: IPAddress
    owner: str
    where: Location


@dataclass(slots=True)
class InventoryPart:
    """What one source contributes, each entry with the location it came from.

    `cluster` and `internal_cidrs` are None when the source does not set them. `claims` lists
    every address the source assigns to a pod, node or service, for the uniqueness check.
    """

    cluster: tuple[str, Location] | None = None
    internal_cidrs: tuple[tuple[IPNetwork, ...], Location] | None = None
    nodes: list[tuple[Node, Location]] = field(default_factory=list)
    namespaces: list[tuple[Namespace, Location]] = field(default_factory=list)
    workloads: list[tuple[Workload, Location]] = field(default_factory=list)
    services: list[tuple[Service, Location]] = field(default_factory=list)
    external_groups: list[tuple[ExternalGroup, Location]] = field(default_factory=list)
    claims: list[Claim] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class LoadResult:
    """An inventory and the warnings found while loading it (ignored objects, label gaps)."""

    inventory: Inventory
    warnings: tuple[Problem, ...] = ()


def _merge_setting(
    values: list[tuple[Any, Location]], what: str, problems: list[Problem], same: Any = lambda v: v
) -> Any:
    """The first source's value; any later source that says something else is an error."""
    if not values:
        return None
    first, first_loc = values[0]
    for value, loc in values[1:]:
        if same(value) != same(first):
            problems.append(Problem(loc, f"{what} conflicts with the one set at {first_loc}"))
    return first


def _merge_keyed(
    entries: Iterable[tuple[Any, Any, Location]], describe: str, problems: list[Problem]
) -> dict[Any, tuple[Any, Location]]:
    """Entries by key; the same fact stated twice merges, two different facts are an error."""
    merged: dict[Any, tuple[Any, Location]] = {}
    for key, value, loc in entries:
        seen = merged.get(key)
        if seen is None:
            merged[key] = (value, loc)
        elif seen[0] != value:
            problems.append(Problem(loc, f"{describe.format(*key)} is defined differently at {seen[1]}"))
    return merged


def build_inventory(parts: Sequence[InventoryPart]) -> Inventory:
    """Merge parts into one inventory, or raise `InputError` listing every conflict.

    Nothing is half-built: either every invariant holds and the whole inventory is returned,
    or nothing is. Namespaces and nodes that are referenced but not described are added
    without labels (namespaces get their `kubernetes.io/metadata.name` label).
    """
    problems: list[Problem] = []
    cluster = _merge_setting([p.cluster for p in parts if p.cluster], "cluster", problems)
    cidrs = _merge_setting([p.internal_cidrs for p in parts if p.internal_cidrs], "internalCIDRs", problems, frozenset)
    nodes = _merge_keyed([((n.name,), n, loc) for p in parts for n, loc in p.nodes], "node {}", problems)
    namespaces = _merge_keyed([((n.name,), n, loc) for p in parts for n, loc in p.namespaces], "namespace {}", problems)
    workloads = _merge_keyed(
        [((w.namespace, w.name, w.kind), w, loc) for p in parts for w, loc in p.workloads],
        "workload {}/{} ({})",
        problems,
    )
    services = _merge_keyed(
        [((s.namespace, s.name), s, loc) for p in parts for s, loc in p.services], "service {}/{}", problems
    )
    groups = _merge_keyed(
        [((g.name,), g, loc) for p in parts for g, loc in p.external_groups], "external group {}", problems
    )

    pods: dict[tuple[str, str], tuple[Workload, Location]] = {}
    for w, loc in workloads.values():
        for pod in w.pods:
            other = pods.setdefault((w.namespace, pod.name), (w, loc))
            if other[0] is not w:
                problems.append(
                    Problem(
                        loc,
                        f"pod {w.namespace}/{pod.name} also belongs to workload {other[0].ref} ({other[1]})",
                    )
                )

    owners: dict[IPAddress, Claim] = {}
    for claim in (c for p in parts for c in p.claims):
        first = owners.setdefault(claim.ip, claim)
        if first.owner != claim.owner:
            problems.append(
                Problem(
                    claim.where,
                    f"address {claim.ip} of {claim.owner} is already claimed by {first.owner} ({first.where})",
                )
            )

    if problems:
        raise InputError("inventory", problems)

    ns_all = {k[0]: v for k, (v, _) in namespaces.items()}
    referenced = {w.namespace for w, _ in workloads.values()} | {s.namespace for s, _ in services.values()}
    for name in referenced - ns_all.keys():
        ns_all[name] = Namespace(name, Labels({NAMESPACE_NAME_LABEL: name}))
    nodes_all = {k[0]: v for k, (v, _) in nodes.items()}
    for w, _ in workloads.values():
        for pod in w.pods:
            if pod.node and pod.node not in nodes_all:
                nodes_all[pod.node] = Node(pod.node)

    return Inventory(
        cluster=cluster if cluster is not None else DEFAULT_CLUSTER,
        internal_cidrs=cidrs if cidrs is not None else DEFAULT_INTERNAL_CIDRS,
        nodes=tuple(nodes_all[k] for k in sorted(nodes_all)),
        namespaces=tuple(ns_all[k] for k in sorted(ns_all)),
        workloads=tuple(v for _, (v, _) in sorted(workloads.items())),
        services=tuple(v for _, (v, _) in sorted(services.items())),
        external_groups=tuple(v for _, (v, _) in sorted(groups.items())),
    )
