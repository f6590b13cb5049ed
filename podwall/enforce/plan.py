"""The desired kernel state of the L3/L4 enforcer, computed from a policy and an inventory (pure).

`build_plan` answers, without touching the kernel, what `enforce/nft.py` must render:

- one address set per policy group (and zone, and reserved group) that an enforced rule names,
  IPv4 and IPv6 kept apart, filled by the policy engine's own membership of every inventory
  address plus the address ranges of address groups (so the kernel and the engine agree);
- the rules as tuples (source set, destination set, transport, port ranges, verdict) in the
  engine's evaluation order. A tuple whose outcome depends on what only userspace can see (an
  `applications` list, `l7` matchers, a hostname group) gets the verdict `userspace`: the
  connection is handed to NFQUEUE and the engine decides on its first payload;
- the sets that carry the mode default (`protect` ends versus `monitor`/`discover` ends), the
  managed pod addresses, and the quarantined addresses.

Marks: the kernel remembers per connection what was decided in the bits `MARK_MASK` of the
conntrack mark. The userspace worker returns a verdict by setting the packet mark to
`MARK_ALLOW` or `MARK_DENY` (with NF_REPEAT); iptables saves it to the connection.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from enum import StrEnum

from podwall.core.errors import PodwallError
from podwall.core.types import PROTO_ICMP, Endpoint
from podwall.inventory.model import Inventory
from podwall.inventory.resolver import Resolver
from podwall.policy.compile import order_of
from podwall.policy.evaluate import PolicyEngine
from podwall.policy.model import Group, Policy, Rule, parse_address, parse_port_spec, tier_of

# Conntrack/packet mark bits owned by podwall. Bits 20-23 stay clear of kube-proxy (0x4000,
# 0x8000) and Cilium (0x0f00); Calico users must move Calico's mark mask off these bits.
MARK_MASK = 0x00F00000
MARK_ALLOW = 0x00100000  # decided allowed: fast path for the rest of the connection
MARK_DENY = 0x00200000  # decided denied: every further packet is reset/dropped
MARK_DECIDE = 0x00300000  # the verdict needs userspace (application / L7): queue until decided
MARK_OBSERVE = 0x00400000  # monitor/discover violation: queue so that userspace records it; accepted
# The values above live in the low three bits of podwall's nibble; the fourth is a flag. On the
# connection it says "a payload packet of this connection was queued already"; on a queued packet
# it says "the flags below are set", and they tell the worker what only conntrack knows.
MARK_VALUE = 0x00700000
MARK_SEEN = 0x00800000  # conntrack mark: the connection has been queued before
PKT_QUEUED = 0x00800000  # packet mark: podwall's queue rules flagged this packet
PKT_FIRST = 0x00100000  # ... it is the first packet of its connection to be queued (a new connection)
PKT_REPLY = 0x00200000  # ... it travels in the connection's reply direction (sent by the server)

FAMILIES = (4, 6)
Interval = tuple[int, int]  # inclusive, as integers of one address family
_MAX = {4: (1 << 32) - 1, 6: (1 << 128) - 1}
_LOOPBACK = {4: ipaddress.ip_network("127.0.0.0/8"), 6: ipaddress.ip_network("::1/128")}


class PlanError(PodwallError):
    """The plan cannot be built (e.g. a quarantine names nothing in the inventory)."""


class Verdict(StrEnum):
    """What a tuple decides for a new connection it matches."""

    ALLOW = "allow"  # accept, mark the connection allowed
    DENY = "deny"  # a violation: protect rejects it, monitor/discover hand it to userspace to record
    USERSPACE = "userspace"  # the engine must see the payload to decide
    PASS = "pass"  # admin tier: skip the rest of the admin tier


@dataclass(frozen=True, slots=True)
class AddressSet:
    """Addresses standing for one group (or role), as merged inclusive integer intervals."""

    name: str  # the nft set name without its family suffix
    group: str  # the policy group, zone or role (pods, protect, ...) it stands for
    v4: tuple[Interval, ...] = ()
    v6: tuple[Interval, ...] = ()

    def intervals(self, family: int) -> tuple[Interval, ...]:
        return self.v4 if family == 4 else self.v6

    def elements(self, family: int) -> tuple[str, ...]:
        """The intervals as nft elements: an address, a prefix, or a `first-last` range."""
        out = []
        bits = 32 if family == 4 else 128
        for lo, hi in self.intervals(family):
            size = hi - lo + 1
            if size & (size - 1) == 0 and lo % size == 0:  # exactly one prefix
                prefix = bits - (size.bit_length() - 1)
                out.append(str(_ip(family, lo)) + ("" if prefix == bits else f"/{prefix}"))
            else:
                out.append(f"{_ip(family, lo)}-{_ip(family, hi)}")
        return tuple(out)


@dataclass(frozen=True, slots=True)
class PortMatch:
    """A transport and its server-port ranges; proto None is every transport, no ranges every port."""

    proto: int | None
    ranges: tuple[Interval, ...] = ()


@dataclass(frozen=True, slots=True)
class RuleTuple:
    """One rule on one transport between two address sets, in evaluation order."""

    rule_id: int
    tier: str
    src: str  # AddressSet.name
    dst: str
    match: PortMatch
    verdict: Verdict
    why: str = ""  # for userspace tuples: what the kernel cannot see


@dataclass(frozen=True, slots=True)
class KernelPlan:
    """Everything the L3/L4 ruleset holds; `nft.render_ruleset` turns it into one nft script."""

    groups: tuple[AddressSet, ...]
    tuples: tuple[RuleTuple, ...]
    pods: AddressSet  # every managed pod address: traffic with no pod at either end is not policed
    protect: AddressSet  # pod addresses whose mode is protect
    relaxed: AddressSet  # pod addresses whose mode is monitor or discover
    quarantine: AddressSet
    default_mode: str  # the mode when neither end has one
    strict: bool  # each end applies its own mode (the more restrictive wins)

    @property
    def sets(self) -> tuple[AddressSet, ...]:
        return (self.pods, self.protect, self.relaxed, self.quarantine, *self.groups)

    def set_named(self, name: str) -> AddressSet:
        for s in self.sets:
            if s.name == name:
                return s
        raise KeyError(name)

    @property
    def needs_userspace(self) -> bool:
        """Whether some connections are handed to NFQUEUE (rule verdicts or relaxed modes)."""
        return (
            any(t.verdict is Verdict.USERSPACE for t in self.tuples)
            or bool(self.relaxed.v4 or self.relaxed.v6)
            or self.default_mode != "protect"
        )


# ---------------------------------------------------------------------------------------------
# Interval arithmetic


def _ip(family: int, value: int) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    return ipaddress.IPv4Address(value) if family == 4 else ipaddress.IPv6Address(value)


def merge(intervals: Iterable[Interval]) -> tuple[Interval, ...]:
    """Sorted, non-overlapping, non-adjacent intervals covering the same addresses."""
    out: list[list[int]] = []
    for lo, hi in sorted(intervals):
        if out and lo <= out[-1][1] + 1:
            out[-1][1] = max(out[-1][1], hi)
        else:
            out.append([lo, hi])
    return tuple((a, b) for a, b in out)


def subtract(keep: Iterable[Interval], remove: Iterable[Interval]) -> tuple[Interval, ...]:
    """`keep` minus `remove` (both any intervals of one family)."""
    cuts = merge(remove)
    out: list[Interval] = []
    for lo, hi in merge(keep):
        cur = lo
        for clo, chi in cuts:
            if chi < cur or clo > hi:
                continue
            if clo > cur:
                out.append((cur, clo - 1))
            cur = max(cur, chi + 1)
            if cur > hi:
                break
        if cur <= hi:
            out.append((cur, hi))
    return tuple(out)


def _net(net: ipaddress.IPv4Network | ipaddress.IPv6Network) -> Interval:
    return int(net.network_address), int(net.broadcast_address)


@dataclass(slots=True)
class _Space:
    """Addresses of both families, accumulated."""

    v4: list[Interval]
    v6: list[Interval]

    def add(self, family: int, interval: Interval) -> None:
        (self.v4 if family == 4 else self.v6).append(interval)

    def extend(self, other: _Space) -> None:
        self.v4.extend(other.v4)
        self.v6.extend(other.v6)


def _empty() -> _Space:
    return _Space([], [])


# ---------------------------------------------------------------------------------------------
# Groups


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")[:40] or "group"


def _address_part(group: Group) -> tuple[_Space, bool]:
    """Addresses an address group covers outside the inventory, and whether it has hostnames."""
    space, hostnames = _empty(), False
    positives: list[tuple[int, Interval]] = []
    negatives: list[tuple[int, Interval]] = []
    for c in group.criteria:
        spec = parse_address(c.value)
        if spec.hostname is not None:
            hostnames = hostnames or not c.negative
            continue
        interval = _net(spec.network) if spec.network is not None else (spec.first, spec.last)
        (negatives if c.negative else positives).append((spec.version, interval))
    has_ip_positive = bool(positives)
    for family in FAMILIES:
        if has_ip_positive:
            keep = [iv for f, iv in positives if f == family]
        elif hostnames:
            keep = []  # only names: no address belongs by its address alone
        else:
            keep = [(0, _MAX[family])]  # only exclusions: everything else belongs
        for iv in subtract(keep, [iv for f, iv in negatives if f == family]):
            space.add(family, iv)
    return space, hostnames


def _external_part(inventory: Inventory) -> _Space:
    """What the resolver calls external: outside the internal ranges and loopback, or in an
    external group of the inventory."""
    space = _empty()
    for family in FAMILIES:
        inside = [_net(n) for n in inventory.internal_cidrs if n.version == family]
        inside.append(_net(_LOOPBACK[family]))
        for iv in subtract([(0, _MAX[family])], inside):
            space.add(family, iv)
        for g in inventory.external_groups:
            for n in g.cidrs:
                if n.version == family:
                    space.add(family, _net(n))
    return space


class _Groups:
    """Non-inventory address coverage per group, zones resolved through their members."""

    def __init__(self, policy: Policy, inventory: Inventory) -> None:
        self.policy = policy
        self.inventory = inventory
        self._memo: dict[str, tuple[_Space, bool]] = {}

    def part(self, name: str, trail: frozenset[str] = frozenset()) -> tuple[_Space, bool]:
        found = self._memo.get(name)
        if found is not None:
            return found
        space, hostnames = _empty(), False
        if name == "external":
            space = _external_part(self.inventory)
        else:
            group = self.policy.group(name)
            if group is not None and group.is_zone:
                for member in group.members:
                    if member not in trail:  # zones are acyclic once validated; stay safe anyway
                        sub, names = self.part(member, trail | {name})
                        space.extend(sub)
                        hostnames = hostnames or names
            elif group is not None and group.is_address_group:
                space, hostnames = _address_part(group)
        self._memo[name] = (space, hostnames)
        return space, hostnames


# ---------------------------------------------------------------------------------------------
# The plan


def _inventory_endpoints(inventory: Inventory) -> list[tuple[Endpoint, bool]]:
    """Every pod address and node address as the resolver names it; the flag says pod."""
    resolver = Resolver(inventory)
    out: list[tuple[Endpoint, bool]] = []
    for w in inventory.workloads:
        for pod in w.pods:
            out.extend((resolver.resolve(ip, 0), True) for ip in pod.ips)
    for node in inventory.nodes:
        out.extend((resolver.resolve(ip, 0), False) for ip in node.ips)
    return out


def _point(ip_text: str) -> tuple[int, Interval]:
    ip = ipaddress.ip_address(ip_text)
    return ip.version, (int(ip), int(ip))


def _set(name: str, group: str, space: _Space) -> AddressSet:
    return AddressSet(name, group, merge(space.v4), merge(space.v6))


def _port_matches(rule: Rule) -> list[PortMatch]:
    """The rule's ports grouped by transport (`any` swallows the rest)."""
    by_proto: dict[int | None, list[Interval]] = {}
    for text in rule.ports:
        spec = parse_port_spec(text)
        if spec.proto is None:
            return [PortMatch(None)]
        ranges = by_proto.setdefault(spec.proto, [])
        if spec.proto != PROTO_ICMP:
            ranges.append((spec.lo, spec.hi))
    out = []
    for proto, ranges in by_proto.items():
        merged = merge(ranges)
        out.append(PortMatch(proto, () if merged == ((1, 65535),) else merged))
    return out


def _quarantined(inventory: Inventory, refs: Collection[str]) -> _Space:
    space = _empty()
    unknown = []
    for ref in refs:
        try:
            family, point = _point(ref)
        except ValueError:
            pass
        else:
            space.add(family, point)
            continue
        ns, _, name = ref.rpartition("/")
        hits = [
            ip
            for w in inventory.workloads
            for pod in w.pods
            if (w.name == name or pod.name == name) and (not ns or w.namespace == ns)
            for ip in pod.ips
        ]
        if not hits:
            unknown.append(ref)
        for ip in hits:
            space.add(ip.version, (int(ip), int(ip)))
    if unknown:
        raise PlanError(
            f"cannot quarantine {', '.join(map(repr, unknown))}: no workload, pod or address of the inventory "
            "(write namespace/workload, a pod name or an IP address)"
        )
    return space


def _inspected(policy: Policy, rule: Rule) -> bool:
    """Whether traffic this rule allows is inspected: WAF or DLP on its server group, DLP on its client group."""
    server, client = policy.group(rule.to), policy.group(rule.from_)
    if server is not None and any(c is not None and c.status for c in (server.waf, server.dlp)):
        return True
    return client is not None and client.dlp is not None and client.dlp.status


def build_plan(policy: Policy, inventory: Inventory, *, quarantine: Collection[str] = ()) -> KernelPlan:
    """The L3/L4 kernel state for `policy` over `inventory`; `quarantine` names workloads
    (`namespace/name`), pods or addresses cut off entirely. Raises PlanError for unknown names."""
    engine = PolicyEngine(policy)
    groups = _Groups(policy, inventory)
    enforced = sorted((r for r in policy.spec.rules if not r.disabled and not r.staged), key=order_of)

    members: dict[str, _Space] = {}
    pods, protect, relaxed = _empty(), _empty(), _empty()
    inventory_points: list[tuple[int, Interval]] = []
    for ep, is_pod in _inventory_endpoints(inventory):
        family, point = _point(ep.ip)
        inventory_points.append((family, point))
        ship = engine.membership(ep)
        for name in ship.ordered:
            members.setdefault(name, _empty()).add(family, point)
        if is_pod:
            pods.add(family, point)
            if ship.mode == "protect":
                protect.add(family, point)
            elif ship.mode is not None:
                relaxed.add(family, point)

    names = sorted({n for r in enforced for n in (r.from_, r.to)})
    set_names = {n: f"g{i}_{_slug(n)}" for i, n in enumerate(names)}
    address_sets = []
    hostname_groups = set()
    for name in names:
        part, hostnames = groups.part(name)
        if hostnames:
            hostname_groups.add(name)
        space = _empty()
        # Inventory addresses are decided by the engine's membership alone, never by ranges.
        for family in FAMILIES:
            cut = [p for f, p in inventory_points if f == family]
            for iv in subtract(part.v4 if family == 4 else part.v6, cut):
                space.add(family, iv)
        space.extend(members.get(name, _empty()))
        address_sets.append(_set(set_names[name], name, space))

    tuples = []
    for rule in enforced:
        tier = tier_of(rule)
        why = ""
        if not rule.any_application:
            why = "applications " + ",".join(rule.applications)
        elif rule.l7 is not None:
            why = "l7 " + ",".join(rule.l7.sections)
        elif rule.from_ in hostname_groups or rule.to in hostname_groups:
            why = "hostname group"
        elif rule.allows and _inspected(policy, rule):
            why = "inspection (waf/dlp)"  # the inspectors must see the whole connection
        if why:
            verdict = Verdict.USERSPACE
        elif rule.action == "pass":
            verdict = Verdict.PASS
        else:
            verdict = Verdict.ALLOW if rule.allows else Verdict.DENY
        for match in _port_matches(rule):
            tuples.append(RuleTuple(rule.id, tier, set_names[rule.from_], set_names[rule.to], match, verdict, why))

    return KernelPlan(
        groups=tuple(address_sets),
        tuples=tuple(tuples),
        pods=_set("pods", "pods", pods),
        protect=_set("mode_protect", "protect", protect),
        relaxed=_set("mode_relaxed", "monitor+discover", relaxed),
        quarantine=_set("quarantine", "quarantine", _quarantined(inventory, quarantine)),
        default_mode=policy.spec.defaultMode,
        strict=policy.spec.strict,
    )
