"""Semantic diff of two podwall policies: which connections a change newly allows or denies.

Not a text diff: every connection (captured traffic, or a synthetic universe built from the
rules of both policies) is decided by both policies' engines, and the connections whose
enforced outcome changes are reported, grouped by client group, server group, transport,
port, application and the two outcomes. docs/policy.md, "Semantic diff".
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from podwall.core.types import PROTO_ICMP, PROTO_TCP, PROTO_UDP, Endpoint, Observation, proto_name
from podwall.core.verdict import Verdict
from podwall.inventory.model import Inventory
from podwall.policy.endpoints import GroupMembers, Representative, representatives
from podwall.policy.evaluate import PolicyEngine, normalize_app
from podwall.policy.model import Policy
from podwall.policy.specs import PortSpec

NEWLY_ALLOWED = "newly-allowed"
NEWLY_DENIED = "newly-denied"
ACTION_CHANGED = "action-changed"
SAME_OUTCOME = "same-outcome"
DIFF_KINDS: tuple[str, ...] = (NEWLY_DENIED, NEWLY_ALLOWED, ACTION_CHANGED, SAME_OUTCOME)

CLIENT_PORT = 49152  # synthetic clients use the first ephemeral port
REPRESENTATIVES = 1  # endpoints tried per group in the synthetic universe


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one policy decided about a connection: action, violation, deciding rule, mode."""

    action: str
    violation: bool
    rule_id: int
    rule_name: str | None
    mode: str
    rule_allows: bool  # the deciding rule admits the connection (False: a deny or the implicit deny)

    @staticmethod
    def of(verdict: Verdict) -> Outcome:
        rule = verdict.matched_rule
        return Outcome(
            action=verdict.action,
            violation=verdict.violation,
            rule_id=verdict.rule_id,
            rule_name=verdict.rule_name,
            mode=verdict.effective_mode,
            rule_allows=rule is not None and rule.allows,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "action": self.action,
            "violation": self.violation,
            "rule_id": self.rule_id,
            "rule_name": self.rule_name,
            "mode": self.mode,
        }

    def __str__(self) -> str:
        flag = ", violation" if self.violation else ""
        return f"{self.action} (rule {self.rule_id}{flag})"


@dataclass(slots=True)
class DiffEntry:
    """Connections of one kind of change between one pair of groups on one port and application.

    `kind`: `newly-denied` (was no violation, now is), `newly-allowed` (was a violation, now
    is not), `action-changed` (same violation status, different action, e.g. alert to deny or
    learn to allow), `same-outcome` (only the deciding rule changed). `count`: connections.
    """

    kind: str
    client: str
    server: str
    transport: str
    port: int
    application: str | None
    old: Outcome
    new: Outcome
    count: int
    explanation: str  # why the new policy decides as it does

    def to_dict(self) -> dict[str, Any]:
        return {
            "change": self.kind,
            "client_group": self.client,
            "server_group": self.server,
            "transport": self.transport,
            "port": self.port,
            "application": self.application,
            "before": self.old.to_dict(),
            "after": self.new.to_dict(),
            "connections": self.count,
            "explanation": self.explanation,
        }


def classify(old: Outcome, new: Outcome) -> str | None:
    """The kind of change between two outcomes; None when nothing changed."""
    if old.violation and not new.violation:
        return NEWLY_ALLOWED
    if new.violation and not old.violation:
        return NEWLY_DENIED
    if old.action != new.action:
        return ACTION_CHANGED
    if old.rule_id != new.rule_id:
        return SAME_OUTCOME
    return None


def diff_policies(
    old: Policy,
    new: Policy,
    observations: Iterable[Observation],
    *,
    dns_service_groups: set[str] | None = None,
    include_same: bool = False,
) -> list[DiffEntry]:
    """Decide every observation under both policies and return the changes, grouped.

    Entries of kind `same-outcome` (only the deciding rule differs) are included only with
    `include_same`. Ordered by kind (newly denied first), then groups, transport and port.
    """
    before = PolicyEngine(old, dns_service_groups=dns_service_groups)
    after = PolicyEngine(new, dns_service_groups=dns_service_groups)
    found: dict[tuple[object, ...], DiffEntry] = {}
    for obs in observations:
        was, now = Outcome.of(before.evaluate(obs)), after.evaluate(obs)
        is_ = Outcome.of(now)
        kind = classify(was, is_)
        if kind is None or (kind == SAME_OUTCOME and not include_same):
            continue
        app = normalize_app(obs.app)
        transport = proto_name(obs.proto)
        key = (kind, obs.client.group, obs.server.group, transport, obs.server_port, app, was, is_)
        entry = found.get(key)
        if entry is None:
            found[key] = DiffEntry(
                kind,
                obs.client.group,
                obs.server.group,
                transport,
                obs.server_port,
                app,
                was,
                is_,
                1,
                now.explanation.text,
            )
        else:
            entry.count += 1
    rank = {k: i for i, k in enumerate(DIFF_KINDS)}
    return sorted(
        found.values(),
        key=lambda e: (rank[e.kind], e.client, e.server, e.transport, e.port, e.application or "", e.old.rule_id),
    )


# ---------------------------------------------------------------------------------------------
# The synthetic universe


def _free_port(policies: Iterable[Policy], proto: int) -> int:
    """The highest port of `proto` that no rule names explicitly (a stand-in for "any port")."""
    taken: list[tuple[int, int]] = []
    for policy in policies:
        for rule in policy.spec.rules:
            for spec in rule.port_specs:
                if spec.proto == proto and not (spec.lo == 1 and spec.hi == 65535):
                    taken.append((spec.lo, spec.hi))
    port = 65535
    while port > 1 and any(lo <= port <= hi for lo, hi in taken):
        port -= 1
    return port


def _points(spec: PortSpec, free: dict[int, int]) -> tuple[int, int]:
    """One (transport, port) standing for a port spec: its first port, or a port no rule names."""
    if spec.is_any:
        return PROTO_TCP, free[PROTO_TCP]
    if spec.is_icmp:
        return PROTO_ICMP, 0
    proto = spec.proto if spec.proto is not None else PROTO_TCP
    if spec.lo == 1 and spec.hi == 65535:
        return proto, free[proto]
    return proto, spec.lo


def _at(ep: Endpoint, port: int) -> Endpoint:
    return Endpoint(
        ep.ip, port, ep.group, ep.workload, ep.namespace, ep.service, ep.pod, ep.kind, ep.node, ep.image,
        ep.labels, ep.ns_labels, ep.groups,
    )  # fmt: skip


def synthetic_observations(old: Policy, new: Policy, inventory: Inventory | None = None) -> list[Observation]:
    """One observation per (client group, server group, transport/port, application) that a rule
    of either policy names, between endpoints standing for the groups (the inventory's workloads
    they select, else synthetic endpoints: see `podwall.policy.endpoints`).

    A rule's `any` port stands for the highest port no rule names; `applications: [any]` for an
    unidentified application. Groups no endpoint can be built for (criteria with regexes or
    globs and no inventory workload) are skipped. No L7 request is synthesised, so rules with
    `l7` matchers (which need a parsed request) never match these observations.
    """
    free = {proto: _free_port((old, new), proto) for proto in (PROTO_TCP, PROTO_UDP)}
    out: dict[tuple[object, ...], Observation] = {}
    for policy in (old, new):
        members = GroupMembers(policy, inventory)
        reps: dict[str, list[Representative]] = {}

        def of(
            group: str, members: GroupMembers = members, reps: dict[str, list[Representative]] = reps
        ) -> list[Representative]:
            if group not in reps:
                reps[group] = representatives(group, members, REPRESENTATIVES)
            return reps[group]

        for rule in policy.spec.rules:
            clients, servers = of(rule.from_), of(rule.to)
            if not clients or not servers:
                continue
            points = dict.fromkeys(_points(s, free) for s in rule.port_specs)
            apps: list[str | None] = [None] if rule.any_application else list(rule.applications)
            for proto, port in points:
                for app in apps:
                    for c in clients:
                        for s in servers:
                            client = _at(c.endpoint, CLIENT_PORT if proto != PROTO_ICMP else 0)
                            server = _at(s.endpoint, port)
                            key = (client, server, proto, port, app, s.server_name)
                            if key not in out:
                                out[key] = Observation(client, server, proto, port, app, (), s.server_name)
    return list(out.values())
