"""Kubernetes network policy semantics: which connections one peer may open to another.

Pure evaluation of a `PolicySet` (NetworkPolicy, AdminNetworkPolicy, BaselineAdminNetworkPolicy)
for a (source, destination) pair of peers, pods or IP ranges, as a `ConnSet`: per protocol
(SCTP, TCP, UDP), a set of port intervals. A connection must pass egress at the source and
ingress at the destination; each direction is decided in three tiers (docs/netpol.md):

1. AdminNetworkPolicies by priority (lower first), rules in order: the first rule matching a
   (protocol, port) decides it, Allow, Deny or Pass.
2. What no ANP decided or what an ANP passed: if a NetworkPolicy selects the pod for that
   direction, the pod is isolated and only what some selecting policy allows gets through.
3. Otherwise the BaselineAdminNetworkPolicy's first matching rule (Allow or Deny), else allowed.

Policies never select IP ranges, so traffic leaving an IP range or arriving at one is only
judged at the pod end. Rule matches are computed once per rule and pod (`NetpolEngine`).
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv6Address, ip_address

from podwall.inventory.model import ContainerPort
from podwall.policy.formats.kubernetes import (
    ALLOW,
    DENY,
    PROTOCOLS,
    AdminPeer,
    AdminPolicy,
    AdminRule,
    IPNet,
    NetpolRule,
    NetworkPolicy,
    PolicySet,
)

MIN_PORT = 1
MAX_PORT = 65535

Intervals = tuple[tuple[int, int], ...]
_IntervalOp = Callable[[Intervals, Intervals], Intervals]
_FULL: Intervals = ((MIN_PORT, MAX_PORT),)
_PROTO_INDEX = {p: i for i, p in enumerate(PROTOCOLS)}


# --- interval sets ----------------------------------------------------------------------------


def _union(a: Intervals, b: Intervals) -> Intervals:
    if not a:
        return b
    if not b:
        return a
    merged: list[tuple[int, int]] = []
    for lo, hi in sorted(a + b):
        if merged and lo <= merged[-1][1] + 1:
            if hi > merged[-1][1]:
                merged[-1] = (merged[-1][0], hi)
        else:
            merged.append((lo, hi))
    return tuple(merged)


def _intersect(a: Intervals, b: Intervals) -> Intervals:
    out: list[tuple[int, int]] = []
    i = j = 0
    while i < len(a) and j < len(b):
        lo = max(a[i][0], b[j][0])
        hi = min(a[i][1], b[j][1])
        if lo <= hi:
            out.append((lo, hi))
        if a[i][1] < b[j][1]:
            i += 1
        else:
            j += 1
    return tuple(out)


def _subtract(a: Intervals, b: Intervals) -> Intervals:
    if not a or not b:
        return a
    out: list[tuple[int, int]] = []
    j = 0
    for lo, hi in a:
        cur = lo
        while j < len(b) and b[j][1] < cur:
            j += 1
        k = j
        while k < len(b) and b[k][0] <= hi:
            if b[k][0] > cur:
                out.append((cur, b[k][0] - 1))
            cur = max(cur, b[k][1] + 1)
            k += 1
        if cur <= hi:
            out.append((cur, hi))
    return tuple(out)


@dataclass(frozen=True, slots=True)
class ConnSet:
    """A set of connections: for each protocol of `PROTOCOLS` (SCTP, TCP, UDP), sorted disjoint port intervals."""

    ports: tuple[Intervals, Intervals, Intervals] = ((), (), ())

    @staticmethod
    def all() -> ConnSet:
        return ALL_CONNECTIONS

    @staticmethod
    def none() -> ConnSet:
        return NO_CONNECTIONS

    @staticmethod
    def of(protocol: str, start: int | None = None, end: int | None = None) -> ConnSet:
        """Ports `start`..`end` of one protocol: every port without `start`, one port without `end`."""
        ports: list[Intervals] = [(), (), ()]
        low = MIN_PORT if start is None else start
        high = (MAX_PORT if start is None else start) if end is None else end
        ports[_PROTO_INDEX[protocol]] = ((low, high),)
        return ConnSet((ports[0], ports[1], ports[2]))

    def _combine(self, other: ConnSet, op: _IntervalOp) -> ConnSet:
        a, b = self.ports, other.ports
        return ConnSet((op(a[0], b[0]), op(a[1], b[1]), op(a[2], b[2])))

    def __or__(self, other: ConnSet) -> ConnSet:
        return self._combine(other, _union)

    def __and__(self, other: ConnSet) -> ConnSet:
        return self._combine(other, _intersect)

    def __sub__(self, other: ConnSet) -> ConnSet:
        return self._combine(other, _subtract)

    @property
    def empty(self) -> bool:
        return not any(self.ports)

    @property
    def complete(self) -> bool:
        return all(p == _FULL for p in self.ports)

    def allows(self, protocol: str, port: int) -> bool:
        return any(lo <= port <= hi for lo, hi in self.ports[_PROTO_INDEX[protocol]])

    def __str__(self) -> str:
        """netpol-analyzer's form: `All Connections`, or `TCP 80,8080-8090,UDP 53` (protocols sorted)."""
        if self.complete:
            return "All Connections"
        if self.empty:
            return "No Connections"
        parts: list[str] = []
        for name, ranges in zip(PROTOCOLS, self.ports, strict=True):
            if ranges:
                text = ",".join(str(lo) if lo == hi else f"{lo}-{hi}" for lo, hi in ranges)
                parts.append(f"{name} {text}")
        return ",".join(parts)


ALL_CONNECTIONS = ConnSet((_FULL, _FULL, _FULL))
NO_CONNECTIONS = ConnSet()


# --- peers ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PodPeer:
    """A pod (or the representative pod of a workload) as policies see it.

    `ref` names it in results (`ns/name[Kind]`); `labels`, the namespace's labels and the container
    `ports` (for named ports) are what selectors and rules match.
    """

    ref: str
    namespace: str
    labels: Mapping[str, str] = field(default_factory=dict)
    namespace_labels: Mapping[str, str] = field(default_factory=dict)
    ports: tuple[ContainerPort, ...] = ()

    def named_port(self, name: str) -> ContainerPort | None:
        return next((p for p in self.ports if p.name == name), None)


@dataclass(frozen=True, slots=True)
class IPPeer:
    """A range of addresses outside the cluster, `start`..`end` inclusive, of one IP version."""

    start: int
    end: int
    version: int = 4
    ref: str = field(init=False, compare=False)  # `start-end[External]`, the way results name it

    def __post_init__(self) -> None:
        text = f"{_ip_text(self.start, self.version)}-{_ip_text(self.end, self.version)}[External]"
        object.__setattr__(self, "ref", text)

    @staticmethod
    def of(first: str, last: str | None = None) -> IPPeer:
        a = ip_address(first)
        b = ip_address(last) if last is not None else a
        return IPPeer(int(a), int(b), a.version)


Peer = PodPeer | IPPeer


def _ip_text(value: int, version: int) -> str:
    return str(IPv4Address(value) if version == 4 else IPv6Address(value))


def _net_range(net: IPNet) -> tuple[int, int]:
    return int(net.network_address), int(net.broadcast_address)


def block_ranges(cidr: IPNet, excepts: Iterable[IPNet] = ()) -> Intervals:
    """The address intervals of `cidr` minus `excepts` (as integers)."""
    return _subtract((_net_range(cidr),), _union((), tuple(sorted(_net_range(e) for e in excepts))))


@dataclass(frozen=True, slots=True)
class _Blocks:
    """The addresses a rule names, merged per IP version, with the interval starts for bisection."""

    ranges: dict[int, Intervals]
    starts: dict[int, list[int]]

    @staticmethod
    def of(pieces: Iterable[tuple[int, Intervals]]) -> _Blocks:
        ranges: dict[int, Intervals] = {}
        for version, intervals in pieces:
            ranges[version] = _union(ranges.get(version, ()), intervals)
        return _Blocks(ranges, {v: [lo for lo, _ in r] for v, r in ranges.items()})

    def covers(self, peer: IPPeer) -> bool:
        """Whether every address of `peer` is named."""
        ranges = self.ranges.get(peer.version)
        if not ranges:
            return False
        i = bisect_right(self.starts[peer.version], peer.start) - 1
        return i >= 0 and ranges[i][1] >= peer.end


# --- the engine -------------------------------------------------------------------------------


class NetpolEngine:
    """Allowed connections between peers under a `PolicySet`; selections are computed once per pod."""

    def __init__(self, policies: PolicySet, pods: Sequence[PodPeer]) -> None:
        self.policies = policies
        self.pods = {p.ref: p for p in pods}
        self._blocks: dict[int, _Blocks] = {}
        nps = policies.network_policies
        self._np_ingress: dict[str, list[NetworkPolicy]] = {ref: [] for ref in self.pods}
        self._np_egress: dict[str, list[NetworkPolicy]] = {ref: [] for ref in self.pods}
        for np in nps:
            for pod in pods:
                if pod.namespace == np.namespace and np.pod_selector.matches(pod.labels):
                    if np.affects("Ingress"):
                        self._np_ingress[pod.ref].append(np)
                    if np.affects("Egress"):
                        self._np_egress[pod.ref].append(np)
        self._rule_pods: dict[int, frozenset[str]] = {}
        for np in nps:
            for rule in np.ingress + np.egress:
                self._rule_pods[id(rule)] = frozenset(p.ref for p in pods if self._np_rule_selects_pod(np, rule, p))
                self._blocks[id(rule)] = _np_blocks(rule)
        admin = list(policies.admin_policies) + ([policies.baseline] if policies.baseline else [])
        self._subjects: dict[int, frozenset[str]] = {}
        for policy in admin:
            self._subjects[id(policy)] = frozenset(p.ref for p in pods if _admin_peer_selects(policy.subject, p))
            for arule in policy.ingress + policy.egress:
                self._rule_pods[id(arule)] = frozenset(
                    p.ref for p in pods if any(_admin_peer_selects(peer, p) for peer in arule.peers)
                )
                self._blocks[id(arule)] = _admin_blocks(arule)
        self._rule_conns: dict[tuple[int, str], ConnSet] = {}

    # -- public ---------------------------------------------------------------------------------

    def allowed(self, src: Peer, dst: Peer) -> ConnSet:
        """The connections `src` may open to `dst`: allowed on egress at `src` and on ingress at `dst`."""
        egress = self.direction(src, dst, ingress=False)
        if egress.empty:
            return egress
        return egress & self.direction(src, dst, ingress=True)

    def direction(self, src: Peer, dst: Peer, *, ingress: bool) -> ConnSet:
        """What one direction allows: ingress at `dst` (from `src`) or egress at `src` (to `dst`)."""
        subject, other = (dst, src) if ingress else (src, dst)
        if not isinstance(subject, PodPeer):
            return ALL_CONNECTIONS  # policies select pods only
        allow, deny, _ = self._admin_tier(self.policies.admin_policies, subject, other, dst, ingress)
        if (allow | deny).complete:
            return allow
        isolating = (self._np_ingress if ingress else self._np_egress).get(subject.ref)
        if isolating is None:
            isolating = self._isolating(subject, ingress)
        if isolating:
            allowed = NO_CONNECTIONS
            for np in isolating:
                for rule in np.ingress if ingress else np.egress:
                    if self._np_rule_selects(np, rule, other):
                        allowed = allowed | self._np_rule_conns(rule, dst)
                        if allowed.complete:
                            break
            return allow | (allowed - deny)
        baseline_deny = NO_CONNECTIONS
        if self.policies.baseline is not None:
            # Passed connections are still open here: the baseline judges them.
            _, baseline_deny, _ = self._admin_tier(
                (self.policies.baseline,), subject, other, dst, ingress, allow | deny
            )
        return allow | (ALL_CONNECTIONS - deny - baseline_deny)

    # -- tiers ----------------------------------------------------------------------------------

    def _admin_tier(
        self,
        policies: Iterable[AdminPolicy],
        subject: PodPeer,
        other: Peer,
        dst: Peer,
        ingress: bool,
        decided: ConnSet = NO_CONNECTIONS,
    ) -> tuple[ConnSet, ConnSet, ConnSet]:
        """Allowed, denied and decided (incl. passed) connections; the first matching rule wins."""
        allow = deny = NO_CONNECTIONS
        for policy in policies:
            rules = policy.ingress if ingress else policy.egress
            if not rules or not self._admin_selects(policy, subject):
                continue
            for rule in rules:
                if not self._admin_rule_selects(rule, other):
                    continue
                conns = self._admin_rule_conns(rule, dst) - decided
                if conns.empty:
                    continue
                if rule.action == ALLOW:
                    allow = allow | conns
                elif rule.action == DENY:
                    deny = deny | conns
                decided = decided | conns
                if decided.complete:
                    return allow, deny, decided
        return allow, deny, decided

    def _isolating(self, pod: PodPeer, ingress: bool) -> list[NetworkPolicy]:
        """Policies selecting a pod the engine was not built with."""
        kind = "Ingress" if ingress else "Egress"
        return [
            np
            for np in self.policies.network_policies
            if np.namespace == pod.namespace and np.affects(kind) and np.pod_selector.matches(pod.labels)
        ]

    # -- matching -------------------------------------------------------------------------------

    def _admin_selects(self, policy: AdminPolicy, pod: PodPeer) -> bool:
        known = self._subjects.get(id(policy))
        if known is not None and pod.ref in self.pods:
            return pod.ref in known
        return _admin_peer_selects(policy.subject, pod)

    def _admin_rule_selects(self, rule: AdminRule, peer: Peer) -> bool:
        if isinstance(peer, IPPeer):
            blocks = self._blocks.get(id(rule)) or _admin_blocks(rule)
            return blocks.covers(peer)
        known = self._rule_pods.get(id(rule))
        if known is not None and peer.ref in self.pods:
            return peer.ref in known
        return any(_admin_peer_selects(p, peer) for p in rule.peers)

    def _np_rule_selects(self, np: NetworkPolicy, rule: NetpolRule, peer: Peer) -> bool:
        if not rule.peers:
            return True
        if isinstance(peer, IPPeer):
            blocks = self._blocks.get(id(rule)) or _np_blocks(rule)
            return blocks.covers(peer)
        known = self._rule_pods.get(id(rule))
        if known is not None and peer.ref in self.pods:
            return peer.ref in known
        return self._np_rule_selects_pod(np, rule, peer)

    @staticmethod
    def _np_rule_selects_pod(np: NetworkPolicy, rule: NetpolRule, pod: PodPeer) -> bool:
        if not rule.peers:
            return True
        for peer in rule.peers:
            if peer.ip_block is not None:
                continue  # an ipBlock describes addresses outside the cluster, never pods
            if peer.namespace_selector is None:
                if pod.namespace != np.namespace:
                    continue
            elif not peer.namespace_selector.matches(pod.namespace_labels):
                continue
            if peer.pod_selector is None or peer.pod_selector.matches(pod.labels):
                return True
        return False

    # -- ports ----------------------------------------------------------------------------------

    def _np_rule_conns(self, rule: NetpolRule, dst: Peer) -> ConnSet:
        if not rule.ports:
            return ALL_CONNECTIONS
        key = (id(rule), dst.ref)
        found = self._rule_conns.get(key)
        if found is not None:
            return found
        conns = NO_CONNECTIONS
        for port in rule.ports:
            if port.port is None:
                conns = conns | ConnSet.of(port.protocol)
            elif isinstance(port.port, int):
                conns = conns | ConnSet.of(port.protocol, port.port, port.end_port or port.port)
            elif isinstance(dst, PodPeer):
                # A named port counts only where the destination pod declares it with the rule's protocol.
                named = dst.named_port(port.port)
                if named is not None and named.protocol == port.protocol:
                    conns = conns | ConnSet.of(named.protocol, named.port, named.port)
        self._rule_conns[key] = conns
        return conns

    def _admin_rule_conns(self, rule: AdminRule, dst: Peer) -> ConnSet:
        if rule.ports is None:
            return ALL_CONNECTIONS
        key = (id(rule), dst.ref)
        found = self._rule_conns.get(key)
        if found is not None:
            return found
        conns = NO_CONNECTIONS
        for port in rule.ports:
            if port.name is None:
                conns = conns | ConnSet.of(port.protocol, port.start, port.end)
            elif isinstance(dst, PodPeer):
                # An admin named port takes its protocol from the destination pod's declaration.
                named = dst.named_port(port.name)
                if named is not None:
                    conns = conns | ConnSet.of(named.protocol, named.port, named.port)
        self._rule_conns[key] = conns
        return conns


def _np_blocks(rule: NetpolRule) -> _Blocks:
    return _Blocks.of(
        (p.ip_block.cidr.version, block_ranges(p.ip_block.cidr, p.ip_block.excepts))
        for p in rule.peers
        if p.ip_block is not None
    )


def _admin_blocks(rule: AdminRule) -> _Blocks:
    return _Blocks.of((n.version, (_net_range(n),)) for p in rule.peers if p.kind == "networks" for n in p.networks)


def _admin_peer_selects(peer: AdminPeer, pod: PodPeer) -> bool:
    if peer.kind == "namespaces":
        return peer.namespace_selector.matches(pod.namespace_labels)
    if peer.kind == "pods":
        return peer.namespace_selector.matches(pod.namespace_labels) and peer.pod_selector.matches(pod.labels)
    return False  # networks hold addresses; nodes are not modelled


def allowed_connections(policies: PolicySet, src: Peer, dst: Peer) -> ConnSet:
    """The connections `src` may open to `dst` (convenience for a single pair)."""
    pods = [p for p in (src, dst) if isinstance(p, PodPeer)]
    return NetpolEngine(policies, pods).allowed(src, dst)
