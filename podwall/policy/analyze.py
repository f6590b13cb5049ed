"""Static analysis of a policy: rules that can never decide, allow/deny conflicts, redundant
rules, groups that select nothing or are never used, disabled rules.

Everything here is a proof, never a guess: a rule is reported shadowed only when an earlier
rule (in evaluation order: admin by priority, federated, policy-as-code by priority, user and
learned by ID, baseline by priority) provably matches every connection and every L7 request
it could match. Group containment is proved from the policy's structure (same group,
`containers` over workload groups, zones over their members, criteria that imply each other)
or, given an inventory, from the workloads each group selects there (judged by the policy
engine itself). Anything not provable is not reported, so an empty result does not mean the
policy is free of overlaps, only that none could be proved. docs/policy.md, "Analysis".
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from podwall.inventory.model import Inventory
from podwall.policy.endpoints import GroupMembers
from podwall.policy.evaluate import PolicyEngine
from podwall.policy.l7model import GrpcMatch, HeaderMatch, HttpMatch, L7Match, PathMatch
from podwall.policy.model import MAX_PRIORITY, TIER_RANK, Criterion, Group, Policy, Rule, tier_of
from podwall.policy.specs import PortSpec, name_matches, parse_address

SHADOWED = "shadowed"
REDUNDANT = "redundant"
CONFLICT = "conflict"
EMPTY_GROUP = "empty-group"
UNUSED_GROUP = "unused-group"
DISABLED = "disabled"
KINDS: tuple[str, ...] = (SHADOWED, REDUNDANT, CONFLICT, EMPTY_GROUP, UNUSED_GROUP, DISABLED)

INFO = "info"
WARNING = "warning"
ERROR = "error"
SEVERITY_RANK: dict[str, int] = {INFO: 0, WARNING: 1, ERROR: 2}

_PRIORITY_TIERS = frozenset({"admin", "policy-as-code", "baseline"})


@dataclass(frozen=True, slots=True)
class Finding:
    """One result of the analysis: what (`kind`), how bad (`severity`: info, warning, error),
    the rules and groups involved, one sentence for people, and the facts as JSON (`detail`)."""

    kind: str
    severity: str
    rule_ids: tuple[int, ...]
    groups: tuple[str, ...]
    message: str
    detail: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "severity": self.severity,
            "rule_ids": list(self.rule_ids),
            "groups": list(self.groups),
            "message": self.message,
            "detail": self.detail,
        }


def order_key(rule: Rule) -> tuple[int, int, int]:
    """The rule's place in evaluation order (smaller first): tier, then priority where the tier
    has one (a rule without a priority comes after those with one), then ID."""
    tier = tier_of(rule)
    priority = 0
    if tier in _PRIORITY_TIERS:
        priority = rule.priority if rule.priority is not None else MAX_PRIORITY + 1
    return (TIER_RANK[tier], priority, rule.id)


def evaluation_order(rules: Iterable[Rule]) -> list[Rule]:
    """The rules in the order the engine tries them."""
    return sorted(rules, key=order_key)


# ---------------------------------------------------------------------------------------------
# Ports, applications


def _union_covers(intervals: list[tuple[int, int]], lo: int, hi: int) -> bool:
    cur = lo
    for a, b in sorted(intervals):
        if a > cur:
            break
        cur = max(cur, b + 1)
        if cur > hi:
            return True
    return cur > hi


def ports_cover(outer: Sequence[PortSpec], inner: Sequence[PortSpec]) -> bool:
    """Whether every (transport, port) some spec of `inner` admits is admitted by `outer`."""
    if any(s.is_any for s in outer):
        return True
    for spec in inner:
        if spec.is_any:
            return False
        if spec.is_icmp:
            if not any(s.is_icmp for s in outer):
                return False
            continue
        same = [(s.lo, s.hi) for s in outer if s.proto == spec.proto]
        if not _union_covers(same, spec.lo, spec.hi):
            return False
    return True


def ports_overlap(a: Sequence[PortSpec], b: Sequence[PortSpec]) -> bool:
    """Whether some (transport, port) is admitted by both."""
    for x in a:
        for y in b:
            if x.is_any or y.is_any or (x.is_icmp and y.is_icmp):
                return True
            if x.proto == y.proto and not x.is_icmp and x.lo <= y.hi and y.lo <= x.hi:
                return True
    return False


def apps_cover(outer: Sequence[str], inner: Sequence[str]) -> bool:
    if "any" in outer:
        return True
    return "any" not in inner and set(inner) <= set(outer)


def apps_overlap(a: Sequence[str], b: Sequence[str]) -> bool:
    return "any" in a or "any" in b or bool(set(a) & set(b))


# ---------------------------------------------------------------------------------------------
# L7 matchers


def _pattern_covers(outer: str, inner: str) -> bool:
    """DNS-style name patterns: every name `inner` matches is matched by `outer`."""
    if outer in ("*", inner):
        return True
    if outer.startswith("*."):
        bare = inner[2:] if inner.startswith("*.") else inner
        return name_matches(outer, bare) or (inner.startswith("*.") and bare == outer[2:])
    return False


def _list_covers(outer: Sequence[str], inner: Sequence[str]) -> bool:
    # An empty list does not constrain.
    return not outer or (bool(inner) and set(inner) <= set(outer))


def _names_cover(outer: Sequence[str], inner: Sequence[str]) -> bool:
    return not outer or (bool(inner) and all(any(_pattern_covers(o, i) for o in outer) for i in inner))


def _path_covers(outer: PathMatch, inner: PathMatch) -> bool:
    if outer.exact is not None:
        return inner.exact == outer.exact
    if outer.prefix is not None:
        text = inner.exact if inner.exact is not None else inner.prefix
        return text is not None and text.startswith(outer.prefix)
    if inner.regex is not None:
        return inner.regex == outer.regex
    return inner.exact is not None and re.fullmatch(outer.regex or "", inner.exact) is not None


def _header_implied(outer: HeaderMatch, inner: Sequence[HeaderMatch]) -> bool:
    name = outer.name.lower()
    for h in inner:
        if h.name.lower() != name:
            continue
        if outer.value is None and outer.regex is None:
            return True
        if h.value == outer.value and h.regex == outer.regex:
            return True
        if outer.regex is not None and h.value is not None and re.fullmatch(outer.regex, h.value):
            return True
    return False


def _http_covers(outer: HttpMatch, inner: HttpMatch) -> bool:
    if not _list_covers(outer.methods, inner.methods):
        return False
    if outer.paths and not (inner.paths and all(any(_path_covers(o, i) for o in outer.paths) for i in inner.paths)):
        return False
    if not _names_cover(outer.hosts, inner.hosts):
        return False
    return all(_header_implied(h, inner.headers) for h in outer.headers)


def _grpc_covers(outer: GrpcMatch, inner: GrpcMatch) -> bool:
    return _list_covers(outer.services, inner.services) and _list_covers(outer.methods, inner.methods)


def l7_covers(outer: L7Match | None, inner: L7Match | None) -> bool:
    """Whether every L7 request `inner` admits is admitted by `outer` (no `l7`: every request).

    A rule with `l7` never matches a connection without parsed requests, so a rule without `l7`
    covers it; the converse does not hold."""
    if outer is None:
        return True
    if inner is None:
        return False
    for section in inner.sections:
        if getattr(outer, section) is None:
            return False
    # gRPC calls fall back to the http section when a rule has no grpc section.
    if inner.grpc is None and inner.http is not None and outer.grpc is not None:
        return False
    if inner.http is not None and outer.http is not None and not _http_covers(outer.http, inner.http):
        return False
    if inner.grpc is not None and outer.grpc is not None and not _grpc_covers(outer.grpc, inner.grpc):
        return False
    if inner.dns is not None and outer.dns is not None and not _names_cover(outer.dns.names, inner.dns.names):
        return False
    redis_a, redis_b = outer.redis, inner.redis
    if redis_a is not None and redis_b is not None and not _list_covers(redis_a.commands, redis_b.commands):
        return False
    if inner.sql is not None and outer.sql is not None and not _list_covers(outer.sql.kinds, inner.sql.kinds):
        return False
    return not (inner.tls is not None and outer.tls is not None and not _names_cover(outer.tls.sni, inner.tls.sni))


def l7_overlap(a: L7Match | None, b: L7Match | None) -> bool:
    """Whether some request is provably admitted by both (one side unconstrained, or containment)."""
    return a is None or b is None or l7_covers(a, b) or l7_covers(b, a)


# ---------------------------------------------------------------------------------------------
# Criteria


def _glob(value: str) -> bool:
    return "*" in value or "?" in value


def _holds(c: Criterion, value: str) -> bool:
    """The positive form of criterion `c` on a concrete attribute value (engine semantics)."""
    if c.op in ("=", "!="):
        if _glob(c.value):
            body = "".join(".*" if ch == "*" else "." if ch == "?" else re.escape(ch) for ch in c.value)
            return re.fullmatch(body, value, re.DOTALL) is not None
        return value == c.value
    if c.op == "contains":
        return c.value in value
    if c.op == "prefix":
        return value.startswith(c.value)
    return re.search(c.value, value) is not None


def _value_covers(outer: Criterion, inner: Criterion) -> bool:
    """Positive criteria on one key: every value `inner` admits is admitted by `outer`."""
    if outer.op == inner.op and outer.value == inner.value:
        return True
    if inner.op == "=" and not _glob(inner.value):
        return _holds(outer, inner.value)
    if outer.op == "=" and outer.value == "*":
        return True
    if outer.op == "prefix" and inner.op == "prefix":
        return inner.value.startswith(outer.value)
    if outer.op == "contains" and inner.op in ("contains", "prefix"):
        return outer.value in inner.value
    return False


def _excluded(neg: Criterion, positives: Sequence[Criterion]) -> bool:
    """Whether no value admitted by `positives` can be one that negative `neg` excludes."""
    return bool(positives) and all(p.op == "=" and not _glob(p.value) and not _holds(neg, p.value) for p in positives)


_Range = tuple[int, int, int]  # IP version, first, last


def _address_range(value: str) -> _Range | None:
    spec = parse_address(value)
    if spec.hostname is not None:
        return None
    if spec.network is not None:
        net = spec.network
        return (net.version, int(net.network_address), int(net.broadcast_address))
    return (spec.version, spec.first, spec.last)


def _address_covers(outer: Criterion, inner: Criterion) -> bool:
    a, b = parse_address(outer.value), parse_address(inner.value)
    if a.hostname is not None or b.hostname is not None:
        return a.hostname is not None and b.hostname is not None and _pattern_covers(a.hostname, b.hostname)
    ra, rb = _address_range(outer.value), _address_range(inner.value)
    return ra is not None and rb is not None and ra[0] == rb[0] and ra[1] <= rb[1] and rb[2] <= ra[2]


def _address_disjoint(neg: Criterion, positives: Sequence[Criterion]) -> bool:
    rn = _address_range(neg.value)
    if rn is None or not positives:
        return False
    for p in positives:
        rp = _address_range(p.value)
        if rp is None or (rp[0] == rn[0] and rp[1] <= rn[2] and rn[1] <= rp[2]):
            return False
    return True


def _split(group: Group) -> dict[str, tuple[list[Criterion], list[Criterion]]]:
    out: dict[str, tuple[list[Criterion], list[Criterion]]] = {}
    for c in group.criteria:
        pos, neg = out.setdefault(c.key, ([], []))
        (neg if c.negative else pos).append(c)
    return out


def criteria_cover(outer: Group, inner: Group) -> bool:
    """Whether every endpoint `inner`'s criteria select is selected by `outer`'s (keys AND-ed,
    positive values of one key OR-ed, negative ones excluded; see docs/policy.md)."""
    if outer.is_address_group != inner.is_address_group:
        return False
    mine, theirs = _split(outer), _split(inner)
    for key, (pos_a, neg_a) in mine.items():
        pos_b, neg_b = theirs.get(key, ([], []))
        covers = _address_covers if key == "address" else _value_covers
        if pos_a and not (pos_b and all(any(covers(x, y) for x in pos_a) for y in pos_b)):
            return False
        for n in neg_a:
            if any(m.op == n.op and m.value == n.value for m in neg_b):
                continue
            if not (_address_disjoint(n, pos_b) if key == "address" else _excluded(n, pos_b)):
                return False
    return True


# ---------------------------------------------------------------------------------------------
# Groups


class _Groups:
    """Provable containment and overlap between group names (policy groups, zones, reserved)."""

    def __init__(self, policy: Policy, members: GroupMembers | None) -> None:
        self.policy = policy
        self.members = members
        self._by_name = {g.name: g for g in policy.spec.groups}
        self._structural: dict[tuple[str, str], bool] = {}
        self._covers: dict[tuple[str, str], bool] = {}

    def structural(self, outer: str, inner: str) -> bool:
        key = (outer, inner)
        found = self._structural.get(key)
        if found is None:
            self._structural[key] = False  # zones are acyclic; this only guards re-entry
            found = self._structural[key] = self._prove(outer, inner)
        return found

    def _prove(self, outer: str, inner: str) -> bool:
        if outer == inner:
            return True
        gi, go = self._by_name.get(inner), self._by_name.get(outer)
        if gi is not None and gi.is_zone:
            return all(self.structural(outer, m) for m in gi.members)
        if go is not None and go.is_zone:
            return any(self.structural(m, inner) for m in go.members)
        if outer == "containers":
            return gi is not None and not gi.is_address_group
        return go is not None and gi is not None and criteria_cover(go, gi)

    def closed(self, name: str) -> bool:
        """Whether every endpoint of the group is an inventory workload (so the inventory can
        prove containment): workload groups, `containers`, zones of such."""
        if name == "containers":
            return True
        g = self._by_name.get(name)
        if g is None:
            return False
        if g.is_zone:
            return all(self.closed(m) for m in g.members)
        return not g.is_address_group

    def by_inventory(self, outer: str, inner: str) -> bool:
        if self.members is None or not self.closed(inner):
            return False
        selected = self.members.of(inner)
        return bool(selected) and selected <= self.members.of(outer)

    def covers(self, outer: str, inner: str) -> bool:
        key = (outer, inner)
        found = self._covers.get(key)
        if found is None:
            found = self._covers[key] = self.structural(outer, inner) or self.by_inventory(outer, inner)
        return found

    def overlap(self, a: str, b: str) -> bool:
        if self.covers(a, b) or self.covers(b, a):
            return True
        return self.members is not None and bool(self.members.of(a) & self.members.of(b))


# ---------------------------------------------------------------------------------------------
# The analysis


def _describe(rule: Rule) -> str:
    name = f" ({rule.name})" if rule.name else ""
    return f"rule {rule.id}{name}"


def _traffic(rule: Rule) -> str:
    apps = "" if rule.applications == ["any"] else f" {','.join(rule.applications)}"
    l7 = f" l7 {'+'.join(rule.l7.sections)}" if rule.l7 is not None else ""
    return f"{rule.from_} → {rule.to} {','.join(rule.ports)}{apps}{l7}"


def _counts_before(earlier: Rule, later: Rule) -> bool:
    """Whether `earlier` can take a decision away from `later` at all."""
    if earlier.staged and not later.staged:
        return False  # staged rules decide only the would-be verdict
    # A Pass rule skips the rest of the admin tier only.
    return earlier.action != "pass" or tier_of(later) == "admin"


def _kind_of_action(rule: Rule) -> str:
    return "pass" if rule.action == "pass" else "allow" if rule.allows else "deny"


class _Analysis:
    def __init__(self, policy: Policy, inventory: Inventory | None) -> None:
        self.policy = policy
        engine = PolicyEngine(policy)
        self.members = GroupMembers(policy, inventory, engine) if inventory is not None else None
        self.groups = _Groups(policy, self.members)
        self.findings: list[Finding] = []
        self._dead: set[int] = set()  # positions (in evaluation order) of rules that never decide

    def rule_covers(self, outer: Rule, inner: Rule) -> bool:
        return (
            self.groups.covers(outer.from_, inner.from_)
            and self.groups.covers(outer.to, inner.to)
            and ports_cover(outer.port_specs, inner.port_specs)
            and apps_cover(outer.applications, inner.applications)
            and l7_covers(outer.l7, inner.l7)
        )

    def basis(self, outer: Rule, inner: Rule) -> str:
        structural = self.groups.structural(outer.from_, inner.from_) and self.groups.structural(outer.to, inner.to)
        return "structure" if structural else "inventory"

    def run(self) -> list[Finding]:
        rules = evaluation_order(self.policy.spec.rules)
        for r in rules:
            if r.disabled:
                self.findings.append(
                    Finding(DISABLED, INFO, (r.id,), (r.from_, r.to), f"{_describe(r)} is disabled: it never matches")
                )
        active = [r for r in rules if not r.disabled]
        self._rules(active)
        self._group_findings()
        order = {k: i for i, k in enumerate(KINDS)}
        return sorted(self.findings, key=lambda f: (order[f.kind], f.rule_ids, f.groups))

    def _rules(self, active: list[Rule]) -> None:
        by_pair: dict[tuple[str, str], list[tuple[int, Rule]]] = {}
        for pos, r in enumerate(active):
            by_pair.setdefault((r.from_, r.to), []).append((pos, r))
        froms = sorted({r.from_ for r in active})
        tos = sorted({r.to for r in active})
        # Candidate earlier rules are found through their group pair, so the cost follows the
        # number of group pairs that can contain or overlap a rule's pair, not the rule count.
        cover_from = {b: [a for a in froms if self.groups.covers(a, b)] for b in froms}
        cover_to = {b: [a for a in tos if self.groups.covers(a, b)] for b in tos}
        overlap_from = {b: [a for a in froms if self.groups.overlap(a, b)] for b in froms}
        overlap_to = {b: [a for a in tos if self.groups.overlap(a, b)] for b in tos}
        # A rule that never decides takes no decision from a later one (an admin Pass can hide
        # a deny that would otherwise have covered a main-tier rule).
        self._dead.clear()
        for pos, later in enumerate(active):
            earlier = self._first_cover(later, pos, by_pair, cover_from[later.from_], cover_to[later.to])
            if earlier is not None:
                self._dead.add(pos)
                self._shadow(earlier, later)
                continue
            for f in overlap_from[later.from_]:
                for t in overlap_to[later.to]:
                    for p, rule in by_pair.get((f, t), ()):
                        if p < pos and p not in self._dead:
                            self._conflict(rule, later)

    def _first_cover(
        self,
        later: Rule,
        pos: int,
        by_pair: dict[tuple[str, str], list[tuple[int, Rule]]],
        froms: list[str],
        tos: list[str],
    ) -> Rule | None:
        best: tuple[int, Rule] | None = None
        for f in froms:
            for t in tos:
                for p, rule in by_pair.get((f, t), ()):
                    if p >= pos or (best is not None and p >= best[0]):
                        break
                    if p in self._dead:
                        continue
                    if _counts_before(rule, later) and self.rule_covers(rule, later):
                        best = (p, rule)
                        break
        return best[1] if best is not None else None

    def _shadow(self, earlier: Rule, later: Rule) -> None:
        same = _kind_of_action(earlier) == _kind_of_action(later)
        detail = {
            "rule": later.id,
            "by": earlier.id,
            "action": later.action,
            "by_action": earlier.action,
            "tier": tier_of(later),
            "by_tier": tier_of(earlier),
            "basis": self.basis(earlier, later),
        }
        if same:
            message = (
                f"{_describe(later)} is redundant: {_describe(earlier)} comes first, covers all its traffic "
                f"({_traffic(later)}) and takes the same action ({earlier.action})"
            )
            self.findings.append(
                Finding(REDUNDANT, INFO, (later.id, earlier.id), (later.from_, later.to), message, detail)
            )
            return
        if earlier.action == "pass":
            how = "passes all its traffic on past the admin tier"
        else:
            how = f"decides all its traffic first ({earlier.action})"
        message = f"{_describe(later)} ({later.action}, {_traffic(later)}) can never decide: {_describe(earlier)} {how}"
        self.findings.append(
            Finding(SHADOWED, WARNING, (later.id, earlier.id), (later.from_, later.to), message, detail)
        )

    def _conflict(self, earlier: Rule, later: Rule) -> None:
        if earlier.action == "pass" or later.action == "pass" or earlier.allows == later.allows:
            return
        if tier_of(earlier) != tier_of(later) or not _counts_before(earlier, later):
            return
        if not (
            ports_overlap(earlier.port_specs, later.port_specs)
            and apps_overlap(earlier.applications, later.applications)
            and l7_overlap(earlier.l7, later.l7)
        ):
            return
        exception = self.rule_covers(later, earlier)
        message = (
            f"{_describe(earlier)} ({earlier.action}, {_traffic(earlier)}) and {_describe(later)} "
            f"({later.action}, {_traffic(later)}) overlap: {_describe(earlier)} comes first and decides "
            "the traffic they share"
        )
        if exception:
            message += f" (it is an exception carved out of rule {later.id})"
        detail = {
            "winner": earlier.id,
            "loser": later.id,
            "tier": tier_of(later),
            "exception": exception,
        }
        groups = tuple(dict.fromkeys((earlier.from_, earlier.to, later.from_, later.to)))
        self.findings.append(
            Finding(CONFLICT, INFO if exception else WARNING, (earlier.id, later.id), groups, message, detail)
        )

    def _group_findings(self) -> None:
        defined = self.policy.spec.groups
        used: set[str] = set()
        pending = [n for r in self.policy.spec.rules for n in (r.from_, r.to)]
        while pending:
            name = pending.pop()
            if name in used:
                continue
            used.add(name)
            g = self.policy.group(name)
            if g is not None:
                pending.extend(g.members)
        for g in defined:
            if g.name not in used:
                mode = f"; it still sets the {g.mode} mode of its workloads" if g.mode and not g.is_zone else ""
                message = f"group {g.name} is referenced by no rule{mode}"
                self.findings.append(Finding(UNUSED_GROUP, INFO, (), (g.name,), message, {"mode": g.mode}))
        if self.members is None:
            return
        for g in defined:
            if g.is_address_group or not self._empty(g.name):
                continue
            rules = tuple(sorted(r.id for r in self.policy.spec.rules if g.name in (r.from_, r.to)))
            what = "zone" if g.is_zone else "group"
            message = f"{what} {g.name} selects no workload of the inventory"
            if rules:
                message += f": rule(s) {', '.join(map(str, rules))} match nothing there"
            self.findings.append(Finding(EMPTY_GROUP, WARNING, rules, (g.name,), message, {"zone": g.is_zone}))

    def _empty(self, name: str) -> bool:
        g = self.policy.group(name)
        if g is None or g.is_address_group:
            return False  # reserved and address groups are never reported empty
        if g.is_zone:
            return all(self._empty(m) for m in g.members)
        assert self.members is not None
        return not self.members.of(name)


def analyze_policy(policy: Policy, inventory: Inventory | None = None) -> list[Finding]:
    """Every finding on the policy, ordered by kind (shadowed, redundant, conflict, empty-group,
    unused-group, disabled) then rule IDs. With an inventory, group containment may also be
    proved from the workloads each group selects there, and empty groups are reported."""
    return _Analysis(policy, inventory).run()


def worst_severity(findings: Iterable[Finding]) -> str | None:
    """The highest severity among the findings, None when there are none."""
    worst: str | None = None
    for f in findings:
        if worst is None or SEVERITY_RANK[f.severity] > SEVERITY_RANK[worst]:
            worst = f.severity
    return worst


__all__ = [
    "KINDS",
    "Finding",
    "analyze_policy",
    "apps_cover",
    "criteria_cover",
    "evaluation_order",
    "l7_covers",
    "order_key",
    "ports_cover",
    "worst_severity",
]
