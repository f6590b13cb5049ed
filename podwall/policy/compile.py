"""Rules compiled once into lookups whose cost does not grow with the number of rules.

In the manner of Cilium's policy maps: every enabled-or-not rule becomes one `Entry` per port
spec, filed under (direction, local group, remote group, transport) in a `PortTable` that
finds the entries covering a port by bisection over precomputed port segments. Wildcard
buckets hold `any` (every transport) and `icmp` entries. Each entry keeps the rule it came
from (`derived_from`) and an integer `order` that sorts entries in evaluation order:

    admin (priority, ID) → federated (ID) → policy-as-code (priority, ID)
    → user and learned (ID) → baseline (priority, ID)

Ingress entries are keyed (server group, client group); an egress lookup asks the same
table with the roles swapped, so one table serves both directions. A second table keyed by
the server group alone finds the rules that point at a server but not from this client:
the near misses an explanation names.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from podwall.core.types import PROTO_ICMP, PROTO_ICMPV6
from podwall.policy.l7match import L7Matcher
from podwall.policy.model import MAX_PRIORITY, TIER_RANK, Rule, tier_of
from podwall.policy.specs import parse_port_spec

Direction = Literal["ingress", "egress"]

ANY_PROTO = -1  # bucket of `any` entries: every transport and port
ICMP_BUCKET = PROTO_ICMP  # `icmp` entries match ICMP and ICMPv6

_PRIORITY_TIERS = frozenset({"admin", "policy-as-code", "baseline"})
_ID_BITS = 17  # IDs stay below 2**17 (119999)
_PRIORITY_BITS = 20  # priorities stay below 2**20 (MAX_PRIORITY + 1 for "none")


def order_of(rule: Rule) -> int:
    """The rule's place in evaluation order as one integer (smaller is earlier)."""
    tier = tier_of(rule)
    priority = 0
    if tier in _PRIORITY_TIERS:
        priority = rule.priority if rule.priority is not None else MAX_PRIORITY + 1
    return (TIER_RANK[tier] << (_PRIORITY_BITS + _ID_BITS)) | (priority << _ID_BITS) | rule.id


def tier_of_order(order: int) -> int:
    """The tier rank encoded in an order key."""
    return order >> (_PRIORITY_BITS + _ID_BITS)


@dataclass(frozen=True, slots=True)
class Entry:
    """One compiled rule on one port spec; `derived_from` names the rule IDs it came from."""

    order: int
    tier: str
    rule: Rule
    from_: str
    to: str
    apps: frozenset[str] | None  # None: any application
    l7: L7Matcher | None
    action: str  # allow | deny | accept | pass
    allows: bool
    disabled: bool
    staged: bool
    port: str
    derived_from: tuple[int, ...]

    @property
    def rule_id(self) -> int:
        return self.rule.id


_EMPTY: tuple[Entry, ...] = ()


class PortTable:
    """Entries over server ports: `lookup(port)` is a bisection, whatever the number of entries.

    Ports 1..65535 are cut into segments at every range boundary; each segment holds the
    entries covering it, in evaluation order, with their order keys for counting.
    """

    __slots__ = ("bounds", "orders", "segments")

    def __init__(self, items: Sequence[tuple[int, int, Entry]]) -> None:
        if len(items) == 1:
            # The common case: one rule on one port (range) between two groups.
            lo, hi, entry = items[0]
            self.bounds = [lo, hi + 1]
            self.segments = [(entry,), _EMPTY]
            self.orders = [(entry.order,), ()]
            return
        events: dict[int, list[tuple[bool, Entry]]] = {}
        for lo, hi, entry in items:
            events.setdefault(lo, []).append((True, entry))
            events.setdefault(hi + 1, []).append((False, entry))
        bounds: list[int] = []
        segments: list[tuple[Entry, ...]] = []
        active: dict[int, Entry] = {}  # id(entry) -> entry
        for point in sorted(events):
            for starts, entry in events[point]:
                if starts:
                    active[id(entry)] = entry
                else:
                    active.pop(id(entry), None)
            seg = _unique_sorted(list(active.values()))
            if segments and segments[-1] == seg:
                continue
            bounds.append(point)
            segments.append(seg)
        self.bounds = bounds
        self.segments = segments
        self.orders = [tuple(e.order for e in seg) for seg in segments]

    def lookup(self, port: int) -> tuple[Entry, ...]:
        i = bisect_right(self.bounds, port) - 1
        return self.segments[i] if i >= 0 else _EMPTY

    def count_before(self, port: int, order: int | None) -> int:
        """How many entries cover `port` and come before `order` (all when None)."""
        i = bisect_right(self.bounds, port) - 1
        if i < 0:
            return 0
        if order is None:
            return len(self.segments[i])
        return bisect_right(self.orders[i], order - 1)


def _unique_sorted(entries: Iterable[Entry]) -> tuple[Entry, ...]:
    # A rule with overlapping port specs (tcp/80 and tcp/1-100) is listed once.
    items = entries if isinstance(entries, list | tuple) else list(entries)
    if len(items) <= 1:
        return tuple(items)
    best: dict[int, Entry] = {}
    for e in items:
        best.setdefault(e.rule.id, e)
    if len(best) == 1:
        return (next(iter(best.values())),)
    return tuple(sorted(best.values(), key=lambda e: e.order))


@dataclass(slots=True)
class _Buckets:
    ranges: dict[int, list[tuple[int, int, Entry]]]
    wild: dict[int, list[Entry]]


class _Index:
    """(proto) -> port tables and wildcard lists for one key."""

    __slots__ = ("tables", "wild")

    def __init__(self, buckets: _Buckets) -> None:
        self.tables = {proto: PortTable(items) for proto, items in buckets.ranges.items()}
        self.wild = {proto: _unique_sorted(items) for proto, items in buckets.wild.items()}

    def lookup(self, proto: int, port: int) -> list[tuple[Entry, ...]]:
        out: list[tuple[Entry, ...]] = []
        table = self.tables.get(proto)
        if table is not None:
            seg = table.lookup(port)
            if seg:
                out.append(seg)
        if proto in (PROTO_ICMP, PROTO_ICMPV6):
            icmp = self.wild.get(ICMP_BUCKET)
            if icmp:
                out.append(icmp)
        anyp = self.wild.get(ANY_PROTO)
        if anyp:
            out.append(anyp)
        return out

    def count_before(self, proto: int, port: int, order: int | None) -> int:
        total = 0
        table = self.tables.get(proto)
        if table is not None:
            total += table.count_before(port, order)
        buckets = [self.wild.get(ANY_PROTO, _EMPTY)]
        if proto in (PROTO_ICMP, PROTO_ICMPV6):
            buckets.append(self.wild.get(ICMP_BUCKET, _EMPTY))
        for entries in buckets:
            total += _count_sorted(entries, order)
        return total


def _count_sorted(entries: tuple[Entry, ...], order: int | None) -> int:
    if order is None:
        return len(entries)
    lo, hi = 0, len(entries)
    while lo < hi:
        mid = (lo + hi) // 2
        if entries[mid].order < order:
            lo = mid + 1
        else:
            hi = mid
    return lo


def _merge(lists: list[tuple[Entry, ...]]) -> tuple[Entry, ...]:
    if not lists:
        return _EMPTY
    if len(lists) == 1:
        return lists[0]
    return _unique_sorted(e for lst in lists for e in lst)


def compile_rule(rule: Rule) -> list[tuple[int | None, int, int, Entry]]:
    """The entries of one rule: (proto or None for any, first port, last port, entry) per port spec."""
    apps = None if rule.any_application else frozenset(rule.applications)
    l7 = L7Matcher(rule.l7) if rule.l7 is not None else None
    order = order_of(rule)
    tier = tier_of(rule)
    out: list[tuple[int | None, int, int, Entry]] = []
    for spec in (parse_port_spec(p) for p in rule.ports):
        entry = Entry(
            order=order,
            tier=tier,
            rule=rule,
            from_=rule.from_,
            to=rule.to,
            apps=apps,
            l7=l7,
            action=rule.action,
            allows=rule.allows,
            disabled=rule.disabled,
            staged=rule.staged,
            port=spec.text,
            derived_from=(rule.id,),
        )
        out.append((spec.proto, spec.lo, spec.hi, entry))
    return out


def _file(buckets: _Buckets, proto: int | None, lo: int, hi: int, entry: Entry) -> None:
    if proto is None:
        buckets.wild.setdefault(ANY_PROTO, []).append(entry)
    elif proto == PROTO_ICMP:
        buckets.wild.setdefault(ICMP_BUCKET, []).append(entry)
    else:
        buckets.ranges.setdefault(proto, []).append((lo, hi, entry))


class CompiledPolicy:
    """Every rule of a policy, compiled; build once per policy version."""

    def __init__(self, rules: Iterable[Rule]) -> None:
        pairs: dict[tuple[str, str], _Buckets] = {}
        towards: dict[str, _Buckets] = {}
        by_pair: dict[tuple[str, str], list[Entry]] = {}
        self.has_l7 = False
        self.has_staged = False
        self.entries = 0
        for rule in rules:
            self.has_l7 = self.has_l7 or rule.l7 is not None
            self.has_staged = self.has_staged or rule.staged
            for proto, lo, hi, entry in compile_rule(rule):
                self.entries += 1
                key = (rule.to, rule.from_)
                b = pairs.get(key)
                if b is None:
                    b = pairs[key] = _Buckets({}, {})
                _file(b, proto, lo, hi, entry)
                t = towards.get(rule.to)
                if t is None:
                    t = towards[rule.to] = _Buckets({}, {})
                _file(t, proto, lo, hi, entry)
                by_pair.setdefault((rule.from_, rule.to), []).append(entry)
        # (local, remote) -> index; nested so that a lookup touches only groups that have rules.
        self._ingress: dict[str, dict[str, _Index]] = {}
        for (local, remote), b in pairs.items():
            self._ingress.setdefault(local, {})[remote] = _Index(b)
        self._towards = {group: _Index(b) for group, b in towards.items()}
        self._by_pair = {key: _unique_sorted(entries) for key, entries in by_pair.items()}

    def lookup(self, direction: Direction, local: str, remote: str, proto: int, port: int) -> tuple[Entry, ...]:
        """Entries for one (direction, local group, remote group, transport, port), in evaluation order.

        Ingress: local is the server's group, remote the client's; egress the other way round.
        """
        server, client = (local, remote) if direction == "ingress" else (remote, local)
        index = self._ingress.get(server, {}).get(client)
        return _merge(index.lookup(proto, port)) if index is not None else _EMPTY

    def candidates(
        self, client_groups: Sequence[str], server_groups: Sequence[str], proto: int, port: int
    ) -> tuple[Entry, ...]:
        """Every entry from one of the client's groups to one of the server's on (proto, port), in order."""
        lists: list[tuple[Entry, ...]] = []
        ingress = self._ingress
        for s in server_groups:
            remotes = ingress.get(s)
            if remotes is None:
                continue
            for c in client_groups:
                index = remotes.get(c)
                if index is not None:
                    lists.extend(index.lookup(proto, port))
        return _merge(lists)

    def towards(self, server_groups: Sequence[str], proto: int, port: int) -> list[tuple[Entry, ...]]:
        """Sorted entry lists towards the server's groups on (proto, port), any client."""
        out: list[tuple[Entry, ...]] = []
        for s in server_groups:
            index = self._towards.get(s)
            if index is not None:
                out.extend(index.lookup(proto, port))
        return out

    def count_towards(self, server_groups: Sequence[str], proto: int, port: int, before: int | None) -> int:
        """How many entries point at the server's groups on (proto, port) ahead of order `before`."""
        total = 0
        for s in server_groups:
            index = self._towards.get(s)
            if index is not None:
                total += index.count_before(proto, port, before)
        return total

    def between(self, from_group: str, to_group: str) -> tuple[Entry, ...]:
        """Every entry of the rules from one group to another, any port, in order."""
        return self._by_pair.get((from_group, to_group), _EMPTY)
