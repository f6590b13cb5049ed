"""Offline policy checks and learning over named flows, and the events they produce.

`check` evaluates every flow against a policy and groups the verdicts per conversation and
deciding rule; `learn_policy` turns observed flows into a whitelist. Both return events in
the one schema of `core/events.py`, ready for the store and the sinks.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from podwall.analysis.conversations import Conversation, ConversationKey, conversation_key
from podwall.analysis.runner import NamedFlow
from podwall.core.events import Event, EventEndpoint, EventType, EventVerdict, Severity
from podwall.core.types import Endpoint, Observation, proto_name
from podwall.core.verdict import Verdict
from podwall.inventory.model import Inventory
from podwall.inventory.resolver import Resolver
from podwall.learn.learner import learn
from podwall.policy.evaluate import PolicyEngine
from podwall.policy.model import Policy

DNS_SERVICE_NAMES = frozenset({"kube-dns", "coredns", "dns-default", "rke2-coredns-rke2-coredns"})


@dataclass(slots=True)
class CheckedConversation:
    """A conversation and the verdict every one of its sessions got."""

    conversation: Conversation
    verdict: Verdict

    def to_dict(self) -> dict[str, object]:
        d = self.conversation.to_dict()
        v = self.verdict
        d.update(
            {
                "action": v.action,
                "violation": v.violation,
                "rule_id": v.rule_id,
                "rule_name": v.rule_name,
                "client_mode": v.client_mode,
                "server_mode": v.server_mode,
                "effective_mode": v.effective_mode,
                "explanation": v.explanation.text,
                "explain": v.explanation.to_dict(),
            }
        )
        return d


def check(flows: Iterable[NamedFlow], engine: PolicyEngine) -> list[CheckedConversation]:
    """Evaluate every flow; sessions of one conversation decided by one rule are grouped."""
    out: dict[tuple[ConversationKey, int, str], CheckedConversation] = {}
    for nf in flows:
        obs = nf.observation()
        verdict = engine.evaluate(obs)
        ckey = conversation_key(nf, obs)
        key = (ckey, verdict.rule_id, verdict.action)
        item = out.get(key)
        if item is None:
            item = out[key] = checked_flow(nf, verdict, obs)
        else:
            item.conversation.add(nf)
    return sorted(out.values(), key=lambda c: (c.conversation.key, c.verdict.rule_id))


def _utc(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


def event_endpoint(ep: Endpoint, mode: str | None = None) -> EventEndpoint:
    """An endpoint as events record it, with its group's mode when known."""
    return EventEndpoint(
        group=ep.group,
        ip=ep.ip,
        port=ep.port,
        workload=ep.workload,
        namespace=ep.namespace,
        service=ep.service,
        pod=ep.pod,
        kind=ep.kind,
        node=ep.node,
        mode=mode,
    )


def _severity(verdict: Verdict) -> Severity:
    if verdict.action == "deny":
        return Severity.HIGH
    return Severity.MEDIUM if verdict.violation else Severity.INFO


def checked_flow(nf: NamedFlow, verdict: Verdict, obs: Observation | None = None) -> CheckedConversation:
    """One flow as a conversation of one session with its verdict (a live monitor's unit of report)."""
    ckey = conversation_key(nf, obs)
    conv = Conversation(ckey[0], ckey[1], ckey[2], ckey[3], ckey[4], nf.client, nf.server)
    conv.add(nf)
    return CheckedConversation(conv, verdict)


def conversation_event(
    item: CheckedConversation, etype: EventType, source: str | None, *, event_id: str | None = None
) -> Event:
    """The event of a checked conversation; `event_id` replaces the id derived from its content
    (a live monitor names an event by its connection, whose counters still grow)."""
    conv, v = item.conversation, item.verdict
    if etype is EventType.VIOLATION:
        message = f"{conv.client_group} -> {conv.server_group} {conv.application}: {v.action} by rule {v.rule_id}"
    else:
        message = f"learned {conv.client_group} -> {conv.server_group} {conv.application} (rule {v.rule_id})"
    # Ports of a representative session: the client port differs per session, so the event
    # records the server port only.
    client = replace(conv.client, port=0)
    return Event(
        id=event_id if event_id is not None else _event_id(etype, source, conv, v.rule_id),
        time=_utc(conv.first_seen),
        last_seen=_utc(conv.last_seen),
        type=etype,
        severity=_severity(v) if etype is EventType.VIOLATION else Severity.INFO,
        message=message,
        client=event_endpoint(client, v.client_mode),
        server=event_endpoint(conv.server, v.server_mode),
        transport=proto_name(conv.proto),
        ip_proto=conv.proto,
        application=conv.application,
        server_name=min(conv.server_names) if conv.server_names else None,
        verdict=EventVerdict(
            action=v.action,
            rule_id=v.rule_id,
            rule_name=v.rule_name,
            mode=v.effective_mode,
            explanation=v.explanation.text,
            detail=v.explanation.to_dict(),
        ),
        count=conv.sessions,
        packets=conv.packets,
        bytes=conv.bytes,
        source=source,
    )


def _event_id(etype: EventType, source: str | None, conv: Conversation, rule_id: int) -> str:
    """A stable id, so that analysing the same traffic twice records each event once (the store
    ignores an id it already holds)."""
    key = repr((etype.value, source, conv.key, rule_id, conv.first_seen, conv.last_seen, conv.sessions))
    return hashlib.sha256(key.encode()).hexdigest()[:32]


def violation_events(items: Iterable[CheckedConversation], source: str | None) -> list[Event]:
    return [conversation_event(i, EventType.VIOLATION, source) for i in items if i.verdict.violation]


def dns_service_groups(inventory: Inventory | None, resolver: Resolver) -> set[str]:
    """Groups that answer for the cluster DNS service (kube-dns and its usual names)."""
    groups: set[str] = set()
    if inventory is None:
        return groups
    for svc in inventory.services:
        if svc.name in DNS_SERVICE_NAMES or svc.selector.get("k8s-app") == "kube-dns":
            for ip in svc.cluster_ips:
                groups.add(resolver.resolve(ip, 53).group)
    return groups


def learn_policy(
    flows: list[NamedFlow],
    inventory: Inventory | None,
    resolver: Resolver,
    *,
    mode: str = "monitor",
    existing: Policy | None = None,
    source: str | None = None,
) -> tuple[Policy, list[Event]]:
    """Learn a whitelist from flows; each learned conversation also becomes a `learned` event."""
    observations: list[Observation] = [nf.observation() for nf in flows]
    dns_groups = dns_service_groups(inventory, resolver)
    policy = learn(observations, mode=mode, dns_service_groups=dns_groups, existing=existing)
    engine = PolicyEngine(policy, dns_service_groups=dns_groups)
    learned = [item for item in check(flows, engine) if item.verdict.rule_id != 0]
    return policy, [conversation_event(i, EventType.LEARNED, source) for i in learned]
