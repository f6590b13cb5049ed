"""Policy evaluation: which groups an endpoint is in, which rule decides a connection, and the mode.

`PolicyEngine` precomputes everything a decision needs once per policy: a membership
predicate per group, the rules by ID, and an index from (transport, server port) and then
`to` group to the rules that can apply there, so a decision looks only at the rules towards
the server's groups on that port rather than at every rule. Group membership is cached per
endpoint identity (the port and pod name do not change membership, so they are not part of
the cache key).

Semantics (docs/policy.md has the full reference): user and learned rules, first match by
ID, disabled rules skipped, no match is the implicit deny (rule 0). Each end's mode is that
of the workload groups it belongs to (the most restrictive if several); the effective mode
is the less restrictive of the two ends (NeuVector's mixed-mode rule), or the one end that
has a mode, or `spec.defaultMode` when neither has.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from dataclasses import dataclass

from podwall.core.types import (
    PROTO_ICMP,
    PROTO_ICMPV6,
    PROTO_TCP,
    PROTO_UDP,
    Endpoint,
    Observation,
    proto_name,
)
from podwall.core.verdict import ALERT, ALLOW, DENY, LEARN, EndSummary, RuleCheck, Verdict
from podwall.policy.explain import (
    APP,
    DISABLED,
    FROM,
    MODE_REASON_CLIENT_ONLY,
    MODE_REASON_DEFAULT,
    MODE_REASON_LESS_RESTRICTIVE,
    MODE_REASON_SAME,
    MODE_REASON_SERVER_ONLY,
    PORT,
    TO,
    build_explanation,
    rule_check,
)
from podwall.policy.model import MODE_RANK, Criterion, Group, Policy, Rule, parse_address, parse_port_spec

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

DNS_PORT = 53
_CACHE_MAX = 65536  # endpoint identities kept; the cache is dropped whole when full
_UNIDENTIFIED = frozenset({"", "unknown"})


def normalize_app(app: str | None) -> str | None:
    """The application as rules compare it: lower case; None for an unidentified one (`unknown` too)."""
    if app is None:
        return None
    name = app.strip().lower()
    return None if name in _UNIDENTIFIED else name


def _glob_regex(pattern: str) -> re.Pattern[str]:
    # NeuVector globs know only `*` and `?`; everything else is literal.
    body = "".join(".*" if ch == "*" else "." if ch == "?" else re.escape(ch) for ch in pattern)
    return re.compile(body, re.DOTALL)


def _value_test(criterion: Criterion) -> Callable[[str], bool]:
    """A test on the endpoint's attribute value; for negative ops, the value being excluded."""
    op, value = criterion.op, criterion.value
    if op in ("=", "!="):
        if "*" in value or "?" in value:
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
class _Facts:
    """An endpoint's attributes as criteria read them, built once per endpoint identity."""

    ip: IPAddress | None
    attrs: dict[str, str | None]
    labels: dict[str, str]
    ns_labels: dict[str, str]

    def get(self, key: str) -> str | None:
        if key in self.attrs:
            return self.attrs[key]
        if key.startswith("ns:"):
            return self.ns_labels.get(key[3:])
        return self.labels.get(key)


def _facts(ep: Endpoint) -> _Facts:
    try:
        ip: IPAddress | None = ipaddress.ip_address(ep.ip)
    except ValueError:
        ip = None
    return _Facts(
        ip=ip,
        attrs={
            "namespace": ep.namespace,
            "service": ep.service,
            "image": ep.image,
            "node": ep.node,
            "kind": ep.kind,
        },
        labels=dict(ep.labels),
        ns_labels=dict(ep.ns_labels),
    )


@dataclass(frozen=True, slots=True)
class _Clause:
    """All criteria of one key: some positive test must hold (if any) and no negative one."""

    key: str
    positives: tuple[Callable[[str], bool], ...]
    negatives: tuple[Callable[[str], bool], ...]

    def holds(self, facts: _Facts) -> bool:
        value = facts.get(self.key)
        if value is None:
            # An absent attribute equals nothing: positive tests fail, negative ones hold.
            return not self.positives
        if self.positives and not any(t(value) for t in self.positives):
            return False
        return not any(t(value) for t in self.negatives)


@dataclass(frozen=True, slots=True)
class _AddressClause:
    positives: tuple[Callable[[IPAddress], bool], ...]
    negatives: tuple[Callable[[IPAddress], bool], ...]

    def holds(self, facts: _Facts) -> bool:
        ip = facts.ip
        if ip is None:
            return not self.positives
        if self.positives and not any(t(ip) for t in self.positives):
            return False
        return not any(t(ip) for t in self.negatives)


@dataclass(frozen=True, slots=True)
class _GroupMatcher:
    name: str
    workload_only: bool
    clauses: tuple[_Clause | _AddressClause, ...]
    mode: str | None  # None for address groups, which confer no mode

    def matches(self, ep: Endpoint, facts: _Facts) -> bool:
        if self.workload_only and ep.workload is None:
            return False
        return all(c.holds(facts) for c in self.clauses)


def _compile_group(group: Group, default_mode: str) -> _GroupMatcher:
    by_key: dict[str, list[Criterion]] = {}
    for criterion in group.criteria:
        by_key.setdefault(criterion.key, []).append(criterion)
    clauses: list[_Clause | _AddressClause] = []
    for key, criteria in by_key.items():
        if key == "address":
            pos_a = tuple(parse_address(c.value).contains for c in criteria if not c.negative)
            neg_a = tuple(parse_address(c.value).contains for c in criteria if c.negative)
            clauses.append(_AddressClause(pos_a, neg_a))
        else:
            pos = tuple(_value_test(c) for c in criteria if not c.negative)
            neg = tuple(_value_test(c) for c in criteria if c.negative)
            clauses.append(_Clause(key, pos, neg))
    address = group.is_address_group
    return _GroupMatcher(
        name=group.name,
        workload_only=not address,
        clauses=tuple(clauses),
        mode=None if address else (group.mode or default_mode),
    )


@dataclass(frozen=True, slots=True)
class Membership:
    """The groups an endpoint belongs to and the mode they give it."""

    groups: frozenset[str]
    ordered: tuple[str, ...]  # policy groups in declaration order, then reserved groups
    mode: str | None
    mode_group: str | None


@dataclass(frozen=True, slots=True)
class _CompiledRule:
    rule: Rule
    id: int
    from_: str
    to: str
    apps: frozenset[str] | None  # None: any application
    deny: bool
    disabled: bool


def is_external(ep: Endpoint) -> bool:
    """Whether the endpoint is in the reserved `external` group."""
    return (ep.kind or "").lower() == "external" or ep.group == "external" or "external" in ep.groups


def is_node(ep: Endpoint) -> bool:
    """Whether the endpoint is in the reserved `nodes` group."""
    return (ep.kind or "").lower() == "node" or ep.group == "nodes" or "nodes" in ep.groups


def _membership_key(ep: Endpoint) -> tuple[object, ...]:
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


class PolicyEngine:
    """Decides connections against one policy; build once per policy version, reuse for every flow."""

    def __init__(self, policy: Policy, *, dns_service_groups: set[str] | None = None) -> None:
        """`dns_service_groups`: servers in these groups have unidentified port-53 traffic read as
        `dns`, as the learner does, so that learned `dns` rules match such connections."""
        self.policy = policy
        self.dns_service_groups = frozenset(dns_service_groups or ())
        self.default_mode: str = policy.spec.defaultMode
        self._groups = tuple(_compile_group(g, self.default_mode) for g in policy.spec.groups)
        self.rules: tuple[Rule, ...] = tuple(sorted(policy.spec.rules, key=lambda r: r.id))
        self._by_id = {r.id: r for r in self.rules}
        self._exact: dict[tuple[int, int], list[_CompiledRule]] = {}
        self._ranges: dict[int, list[tuple[int, int, _CompiledRule]]] = {}
        self._icmp: list[_CompiledRule] = []
        self._any: list[_CompiledRule] = []
        self._pairs: dict[tuple[str, str], list[_CompiledRule]] = {}
        for rule in self.rules:
            self._index(rule)
        self._port_memo: dict[tuple[int, int], dict[str, tuple[_CompiledRule, ...]]] = {}
        self._members: dict[tuple[object, ...], Membership] = {}

    def _index(self, rule: Rule) -> None:
        apps = None if rule.applications == ["any"] else frozenset(rule.applications)
        cr = _CompiledRule(rule, rule.id, rule.from_, rule.to, apps, rule.action == DENY, rule.disabled)
        self._pairs.setdefault((cr.from_, cr.to), []).append(cr)
        for spec in (parse_port_spec(p) for p in rule.ports):
            if spec.proto is None:
                self._any.append(cr)
            elif spec.proto == PROTO_ICMP:
                self._icmp.append(cr)
            elif spec.lo == spec.hi:
                self._exact.setdefault((spec.proto, spec.lo), []).append(cr)
            else:
                self._ranges.setdefault(spec.proto, []).append((spec.lo, spec.hi, cr))

    # -- lookups ---------------------------------------------------------------------------

    def candidates(self, proto: int, port: int) -> tuple[Rule, ...]:
        """The rules whose ports cover (proto, server port), by ID (disabled ones included)."""
        by_to = self._port_index(proto, port)
        return tuple(cr.rule for cr in sorted((cr for crs in by_to.values() for cr in crs), key=lambda c: c.id))

    def _port_index(self, proto: int, port: int) -> dict[str, tuple[_CompiledRule, ...]]:
        """Rules covering (proto, port), by their `to` group, each list sorted by ID (memoised)."""
        key = (proto, port)
        found = self._port_memo.get(key)
        if found is not None:
            return found
        pool: dict[int, _CompiledRule] = {cr.id: cr for cr in self._any}
        if proto in (PROTO_ICMP, PROTO_ICMPV6):
            pool.update((cr.id, cr) for cr in self._icmp)
        elif proto in (PROTO_TCP, PROTO_UDP):
            pool.update((cr.id, cr) for cr in self._exact.get(key, ()))
            pool.update((cr.id, cr) for lo, hi, cr in self._ranges.get(proto, ()) if lo <= port <= hi)
        grouped: dict[str, list[_CompiledRule]] = {}
        for rule_id in sorted(pool):
            grouped.setdefault(pool[rule_id].to, []).append(pool[rule_id])
        found = {to: tuple(crs) for to, crs in grouped.items()}
        if len(self._port_memo) >= _CACHE_MAX:
            self._port_memo.clear()
        self._port_memo[key] = found
        return found

    def _candidates(self, proto: int, port: int, server: Membership) -> tuple[_CompiledRule, ...]:
        # Only rules towards one of the server's groups can match; on a busy port such as 80
        # that is a handful of rules however large the policy.
        by_to = self._port_index(proto, port)
        lists = [by_to[g] for g in server.ordered if g in by_to]
        if not lists:
            return ()
        if len(lists) == 1:
            return lists[0]
        return tuple(sorted((cr for crs in lists for cr in crs), key=lambda c: c.id))

    def membership(self, endpoint: Endpoint) -> Membership:
        """Groups and mode of an endpoint (cached per endpoint identity)."""
        key = _membership_key(endpoint)
        found = self._members.get(key)
        if found is not None:
            return found
        facts = _facts(endpoint)
        names: list[str] = []
        mode: str | None = None
        mode_group: str | None = None
        for g in self._groups:
            if g.matches(endpoint, facts):
                names.append(g.name)
                if g.mode is not None and (mode is None or MODE_RANK[g.mode] > MODE_RANK[mode]):
                    mode, mode_group = g.mode, g.name
        if is_external(endpoint):
            names.append("external")
        if is_node(endpoint):
            names.append("nodes")
        if endpoint.workload is not None:
            names.append("containers")
        found = Membership(frozenset(names), tuple(names), mode, mode_group)
        if len(self._members) >= _CACHE_MAX:
            self._members.clear()
        self._members[key] = found
        return found

    def member_groups(self, endpoint: Endpoint) -> list[str]:
        """Every group the endpoint is in: policy groups in declaration order, then reserved ones."""
        return list(self.membership(endpoint).ordered)

    def group_of_mode(self, endpoint: Endpoint) -> str | None:
        """The endpoint's mode: the most restrictive mode of its workload groups, None if it has none."""
        return self.membership(endpoint).mode

    mode_of = group_of_mode

    def rule(self, rule_id: int) -> Rule | None:
        return self._by_id.get(rule_id)

    # -- decisions -------------------------------------------------------------------------

    def effective_mode(self, client_mode: str | None, server_mode: str | None) -> tuple[str, str]:
        """The mode that decides, and why (see module docstring)."""
        if client_mode is not None and server_mode is not None:
            if client_mode == server_mode:
                return client_mode, MODE_REASON_SAME
            less = client_mode if MODE_RANK[client_mode] < MODE_RANK[server_mode] else server_mode
            return less, MODE_REASON_LESS_RESTRICTIVE
        if client_mode is not None:
            return client_mode, MODE_REASON_CLIENT_ONLY
        if server_mode is not None:
            return server_mode, MODE_REASON_SERVER_ONLY
        return self.default_mode, MODE_REASON_DEFAULT

    def evaluate(self, obs: Observation) -> Verdict:
        """Decide one connection: first matching rule by ID, else the implicit deny; then the mode."""
        cm = self.membership(obs.client)
        sm = self.membership(obs.server)
        app = normalize_app(obs.app)
        transport = proto_name(obs.proto)
        port = obs.server_port
        if (
            app is None
            and port == DNS_PORT
            and self.dns_service_groups
            and obs.proto in (PROTO_TCP, PROTO_UDP)
            and (obs.server.group in self.dns_service_groups or not self.dns_service_groups.isdisjoint(sm.groups))
        ):
            app = "dns"
        consulted: list[RuleCheck] = []
        matched: _CompiledRule | None = None
        seen: set[int] = set()
        for cr in self._candidates(obs.proto, port, sm):
            failed = self._failed(cr, cm, sm, app)
            if not failed:
                matched = cr
                break
            seen.add(cr.id)
            consulted.append(rule_check(cr.rule, failed, transport, port, app))
        if matched is None or matched.deny:
            # Rules written for these very groups that missed on the port explain most denials.
            limit = matched.id if matched is not None else None
            for f in cm.ordered:
                for t in sm.ordered:
                    for cr in self._pairs.get((f, t), ()):
                        if cr.id not in seen and (limit is None or cr.id < limit):
                            seen.add(cr.id)
                            failed = self._failed(cr, cm, sm, app, port_ok=False)
                            consulted.append(rule_check(cr.rule, failed, transport, port, app))
            consulted.sort(key=lambda c: c.rule_id)

        effective, reason = self.effective_mode(cm.mode, sm.mode)
        if matched is not None and not matched.deny:
            action, violation = ALLOW, False
        elif effective == "discover":
            # Discover mode never blocks; an explicit deny is still a violation worth recording.
            action, violation = (ALLOW, True) if matched is not None else (LEARN, False)
        elif effective == "monitor":
            action, violation = ALERT, True
        else:
            action, violation = DENY, True

        rule = matched.rule if matched is not None else None
        explanation = build_explanation(
            client=EndSummary(obs.client.group, obs.client.ip, obs.client.port, cm.ordered, cm.mode, cm.mode_group),
            server=EndSummary(obs.server.group, obs.server.ip, port, sm.ordered, sm.mode, sm.mode_group),
            transport=transport,
            port=port,
            app=app,
            consulted=consulted,
            deciding=rule,
            effective_mode=effective,
            mode_reason=reason,
            action=action,
            violation=violation,
        )
        return Verdict(
            action=action,
            violation=violation,
            rule_id=rule.id if rule is not None else 0,
            rule_name=rule.name if rule is not None else None,
            matched_rule=rule,
            effective_mode=effective,
            client_mode=cm.mode,
            server_mode=sm.mode,
            client_groups=cm.ordered,
            server_groups=sm.ordered,
            explanation=explanation,
        )

    @staticmethod
    def _failed(
        cr: _CompiledRule, cm: Membership, sm: Membership, app: str | None, port_ok: bool = True
    ) -> tuple[str, ...]:
        failed: list[str] = []
        if cr.disabled:
            failed.append(DISABLED)
        if not port_ok:
            failed.append(PORT)
        if cr.from_ not in cm.groups:
            failed.append(FROM)
        if cr.to not in sm.groups:
            failed.append(TO)
        if cr.apps is not None and (app is None or app not in cr.apps):
            failed.append(APP)
        return tuple(failed)
