"""Which groups and zones an endpoint belongs to, and the mode they give it.

Each group's criteria compile once into clauses (criteria of one key OR-ed, keys AND-ed,
negative ops excluding). So that resolving an endpoint does not test every group of a large
policy, groups with an exact-value clause (`service = web`, `namespace = shop`, a label
`app = redis`) are filed under that (key, value): an endpoint is tested only against the
groups filed under its own attribute values, plus the groups that have no such anchor.
Hostname `address` criteria match the flow's server name. Zones contain the endpoints of
their members and are resolved after groups, inner zones first. Results are cached per
endpoint identity (and server name when the policy has hostname criteria).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from dataclasses import dataclass

from podwall.core.types import Endpoint
from podwall.policy.model import MODE_RANK, Criterion, Group, zone_order
from podwall.policy.specs import parse_address

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
CACHE_MAX = 65536  # endpoint identities kept; the cache is dropped whole when full
_ATTRS = ("namespace", "service", "image", "node", "kind")


def _glob_regex(pattern: str) -> re.Pattern[str]:
    # NeuVector globs know only `*` and `?`; everything else is literal.
    body = "".join(".*" if ch == "*" else "." if ch == "?" else re.escape(ch) for ch in pattern)
    return re.compile(body, re.DOTALL)


def _is_glob(value: str) -> bool:
    return "*" in value or "?" in value


def _value_test(criterion: Criterion) -> Callable[[str], bool]:
    """A test on the endpoint's attribute value; for negative ops, the value being excluded."""
    op, value = criterion.op, criterion.value
    if op in ("=", "!="):
        if _is_glob(value):
            glob = _glob_regex(value)
            return lambda v: glob.fullmatch(v) is not None
        return lambda v: v == value
    if op == "contains":
        return lambda v: value in v
    if op == "prefix":
        return lambda v: v.startswith(value)
    rx = re.compile(value)
    return lambda v: rx.search(v) is not None


@dataclass(frozen=True, slots=True)
class Facts:
    """An endpoint's attributes as criteria read them, built once per endpoint identity."""

    ip: IPAddress | None
    name: str | None  # the server name the flow asked for (server end only)
    attrs: dict[str, str | None]
    labels: dict[str, str]
    ns_labels: dict[str, str]

    def get(self, key: str) -> str | None:
        if key in self.attrs:
            return self.attrs[key]
        if key.startswith("ns:"):
            return self.ns_labels.get(key[3:])
        return self.labels.get(key)


def facts_of(ep: Endpoint, name: str | None = None) -> Facts:
    try:
        ip: IPAddress | None = ipaddress.ip_address(ep.ip)
    except ValueError:
        ip = None
    return Facts(
        ip=ip,
        name=name.lower().rstrip(".") if name else None,
        attrs={key: getattr(ep, key) for key in _ATTRS},
        labels=dict(ep.labels),
        ns_labels=dict(ep.ns_labels),
    )


@dataclass(frozen=True, slots=True)
class _Clause:
    """All criteria of one key: some positive test must hold (if any) and no negative one."""

    key: str
    positives: tuple[Callable[[str], bool], ...]
    negatives: tuple[Callable[[str], bool], ...]

    def holds(self, facts: Facts) -> bool:
        value = facts.get(self.key)
        if value is None:
            # An absent attribute equals nothing: positive tests fail, negative ones hold.
            return not self.positives
        if self.positives and not any(t(value) for t in self.positives):
            return False
        return not any(t(value) for t in self.negatives)


AddressTest = Callable[[IPAddress | None, str | None], bool]


def _address_test(value: str) -> AddressTest:
    spec = parse_address(value)
    if spec.hostname is not None:
        return lambda ip, name: name is not None and spec.matches_name(name)
    return lambda ip, name: ip is not None and spec.contains(ip)


@dataclass(frozen=True, slots=True)
class _AddressClause:
    positives: tuple[AddressTest, ...]
    negatives: tuple[AddressTest, ...]

    def holds(self, facts: Facts) -> bool:
        ip, name = facts.ip, facts.name
        if self.positives and not any(t(ip, name) for t in self.positives):
            return False
        return not any(t(ip, name) for t in self.negatives)


@dataclass(frozen=True, slots=True)
class GroupMatcher:
    name: str
    index: int  # declaration order
    workload_only: bool
    clauses: tuple[_Clause | _AddressClause, ...]
    mode: str | None  # None for address groups, which confer no mode
    anchor: tuple[str, frozenset[str]] | None  # a key whose value must be one of these

    def matches(self, ep: Endpoint, facts: Facts) -> bool:
        if self.workload_only and ep.workload is None:
            return False
        return all(c.holds(facts) for c in self.clauses)


def compile_group(group: Group, index: int, default_mode: str) -> GroupMatcher:
    by_key: dict[str, list[Criterion]] = {}
    for criterion in group.criteria:
        by_key.setdefault(criterion.key, []).append(criterion)
    clauses: list[_Clause | _AddressClause] = []
    anchor: tuple[str, frozenset[str]] | None = None
    for key, criteria in by_key.items():
        if key == "address":
            pos_a = tuple(_address_test(c.value) for c in criteria if not c.negative)
            neg_a = tuple(_address_test(c.value) for c in criteria if c.negative)
            clauses.append(_AddressClause(pos_a, neg_a))
            continue
        positives = [c for c in criteria if not c.negative]
        negatives = tuple(_value_test(c) for c in criteria if c.negative)
        clauses.append(_Clause(key, tuple(_value_test(c) for c in positives), negatives))
        if anchor is None and positives and all(c.op == "=" and not _is_glob(c.value) for c in positives):
            anchor = (key, frozenset(c.value for c in positives))
    address = group.is_address_group
    return GroupMatcher(
        name=group.name,
        index=index,
        workload_only=not address,
        clauses=tuple(clauses),
        mode=None if address else (group.mode or default_mode),
        anchor=anchor,
    )


@dataclass(frozen=True, slots=True)
class Membership:
    """The groups (and zones) an endpoint belongs to and the mode they give it."""

    groups: frozenset[str]
    ordered: tuple[str, ...]  # policy groups and zones in declaration order, then reserved groups
    mode: str | None
    mode_group: str | None
    token: int = 0  # distinct per distinct `ordered`, for cheap cache keys


def is_external(ep: Endpoint) -> bool:
    """Whether the endpoint is in the reserved `external` group."""
    return (ep.kind or "").lower() == "external" or ep.group == "external" or "external" in ep.groups


def is_node(ep: Endpoint) -> bool:
    """Whether the endpoint is in the reserved `nodes` group."""
    return (ep.kind or "").lower() == "node" or ep.group == "nodes" or "nodes" in ep.groups


def _identity(ep: Endpoint) -> tuple[object, ...]:
    return (
        ep.ip,
        ep.group,
        ep.workload,
        ep.namespace,
        ep.service,
        ep.kind,
        ep.node,
        ep.image,
        ep.labels,
        ep.ns_labels,
        ep.groups,
    )


@dataclass(frozen=True, slots=True)
class _Zone:
    name: str
    index: int
    members: frozenset[str]
    mode: str | None


class Resolver:
    """Resolves endpoints to memberships for one policy's groups and zones."""

    def __init__(self, groups: list[Group], default_mode: str) -> None:
        self.names_by_hostname = any(
            c.key == "address" and parse_address(c.value).hostname is not None for g in groups for c in g.criteria
        )
        plain = [(i, g) for i, g in enumerate(groups) if not g.is_zone]
        self.matchers = tuple(compile_group(g, i, default_mode) for i, g in plain)
        index = {g.name: i for i, g in enumerate(groups)}
        self.zones = tuple(_Zone(z.name, index[z.name], frozenset(z.members), z.mode) for z in zone_order(groups))
        self._anchored: dict[str, dict[str, list[GroupMatcher]]] = {}
        self._scan: list[GroupMatcher] = []
        for m in self.matchers:
            if m.anchor is None:
                self._scan.append(m)
            else:
                key, values = m.anchor
                for value in values:
                    self._anchored.setdefault(key, {}).setdefault(value, []).append(m)
        self._cache: dict[tuple[object, ...], Membership] = {}
        self._tokens: dict[tuple[str, ...], int] = {}
        self._next_token = 0  # never reused, so tokens stay unique after the cache is dropped

    def resolve(self, endpoint: Endpoint, name: str | None = None) -> Membership:
        """Groups and mode of an endpoint; `name` is the server name (matters to hostname criteria)."""
        key = _identity(endpoint)
        if self.names_by_hostname:
            key = (*key, name)
        found = self._cache.get(key)
        if found is not None:
            return found
        facts = facts_of(endpoint, name if self.names_by_hostname else None)
        candidates = list(self._scan)
        for attr, by_value in self._anchored.items():
            value = facts.get(attr)
            if value is not None:
                candidates.extend(by_value.get(value, ()))
        hits: dict[int, str] = {}
        mode: str | None = None
        mode_group: str | None = None
        modes: list[tuple[int, str, str]] = []
        for g in candidates:
            if g.index not in hits and g.matches(endpoint, facts):
                hits[g.index] = g.name
                if g.mode is not None:
                    modes.append((g.index, g.name, g.mode))
        reserved: list[str] = []
        if is_external(endpoint):
            reserved.append("external")
        if is_node(endpoint):
            reserved.append("nodes")
        if endpoint.workload is not None:
            reserved.append("containers")
        present = set(hits.values()) | set(reserved)
        for zone in self.zones:
            if not zone.members.isdisjoint(present):
                hits[zone.index] = zone.name
                present.add(zone.name)
                if zone.mode is not None and endpoint.workload is not None:
                    modes.append((zone.index, zone.name, zone.mode))
        for _, group_name, group_mode in sorted(modes):
            if mode is None or MODE_RANK[group_mode] > MODE_RANK[mode]:
                mode, mode_group = group_mode, group_name
        ordered = tuple(hits[i] for i in sorted(hits)) + tuple(reserved)
        token = self._tokens.get(ordered)
        if token is None:
            if len(self._tokens) >= CACHE_MAX:
                self._tokens.clear()
            self._next_token += 1
            token = self._tokens[ordered] = self._next_token
        found = Membership(frozenset(ordered), ordered, mode, mode_group, token)
        if len(self._cache) >= CACHE_MAX:
            self._cache.clear()
        self._cache[key] = found
        return found
