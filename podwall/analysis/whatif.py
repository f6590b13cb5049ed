"""What-if: which recorded connections a proposed policy would block, before anyone enforces it.

A connection "would block" when the proposed policy's deciding rule does not admit it (an
explicit deny or the implicit deny, rule 0): that is what protect mode would do with it,
whatever mode the proposed policy's groups are in today. The action the proposed policy
takes under its own modes is reported too (`deny` only for groups already in protect).
Connections come from captures (named flows) or from the event store (`learned` and
`violation` events, which record both ends, transport, port and application).
docs/policy.md, "What-if".
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from podwall.core.events import Event, EventEndpoint
from podwall.core.types import PROTO_TCP, PROTO_UDP, Endpoint, Observation, proto_name
from podwall.inventory.resolver import Resolver
from podwall.policy.diff import Outcome
from podwall.policy.evaluate import PolicyEngine, normalize_app

CONTAINERS = "containers"


@dataclass(slots=True)
class WhatIf:
    """Connections between one pair of endpoints' groups on one port and application, with the
    current policy's outcome (when one was given) and the proposed policy's."""

    client: str
    server: str
    transport: str
    port: int
    application: str | None
    sessions: int
    current: Outcome | None
    proposed: Outcome
    explanation: str  # why the proposed policy decides as it does

    @property
    def would_block(self) -> bool:
        """The proposed policy does not admit it: protect mode would block it."""
        return not self.proposed.rule_allows

    @property
    def newly_blocked(self) -> bool:
        """It would block, and the current policy admits it (always true without a current policy)."""
        return self.would_block and (self.current is None or self.current.rule_allows)

    def to_dict(self) -> dict[str, Any]:
        return {
            "client_group": self.client,
            "server_group": self.server,
            "transport": self.transport,
            "port": self.port,
            "application": self.application,
            "sessions": self.sessions,
            "current": self.current.to_dict() if self.current is not None else None,
            "proposed": self.proposed.to_dict(),
            "would_block": self.would_block,
            "newly_blocked": self.newly_blocked,
            "explanation": self.explanation,
        }


def what_if(
    connections: Iterable[tuple[Observation, int]],
    proposed: PolicyEngine,
    current: PolicyEngine | None = None,
) -> list[WhatIf]:
    """Decide every (observation, sessions) under the proposed (and current) policy, grouped by
    groups, transport, port, application and outcomes; blocked connections first."""
    found: dict[tuple[object, ...], WhatIf] = {}
    for obs, sessions in connections:
        verdict = proposed.evaluate(obs)
        new = Outcome.of(verdict)
        old = Outcome.of(current.evaluate(obs)) if current is not None else None
        app = normalize_app(obs.app)
        transport = proto_name(obs.proto)
        key = (obs.client.group, obs.server.group, transport, obs.server_port, app, old, new)
        item = found.get(key)
        if item is None:
            found[key] = WhatIf(
                obs.client.group, obs.server.group, transport, obs.server_port, app, sessions, old, new,
                verdict.explanation.text,
            )  # fmt: skip
        else:
            item.sessions += sessions
    return sorted(
        found.values(),
        key=lambda w: (not w.would_block, w.client, w.server, w.transport, w.port, w.application or ""),
    )


def _endpoint(ep: EventEndpoint, port: int, resolver: Resolver | None) -> Endpoint:
    if resolver is not None:
        found = resolver.resolve(ep.ip, port)
        if found.group == ep.group:
            return found
    # Without an inventory (or when it no longer knows the address) the event's own record
    # of the endpoint is the identity; labels and images are not recorded in events.
    groups = (ep.group, CONTAINERS) if ep.workload is not None else (ep.group,)
    return Endpoint(
        ep.ip, port, ep.group, workload=ep.workload, namespace=ep.namespace, service=ep.service, pod=ep.pod,
        kind=ep.kind, node=ep.node, groups=groups,
    )  # fmt: skip


def _app(event: Event) -> str | None:
    label = event.application
    # Unidentified connections are recorded as `tcp/8080`, `udp/53` or the transport name.
    if "/" in label or label in (event.transport, proto_name(event.ip_proto)):
        return None
    return label


def observations_from_events(
    events: Iterable[Event], resolver: Resolver | None = None
) -> list[tuple[Observation, int]]:
    """The distinct connections the events record, each with its session count.

    Only `learned` and `violation` events describe connections. A connection recorded by
    several events (learned, then checked; or runs repeated on the same capture) counts once,
    with the largest session count any of its events gives. With a resolver (an inventory),
    endpoints are re-resolved so that label and image criteria can match.
    """
    out: dict[tuple[object, ...], tuple[Observation, int]] = {}
    for event in events:
        if event.type not in ("learned", "violation"):
            continue
        port = event.server.port if event.ip_proto in (PROTO_TCP, PROTO_UDP) else 0
        client = _endpoint(event.client, 0, resolver)
        server = _endpoint(event.server, port, resolver)
        app = _app(event)
        obs = Observation(client, server, event.ip_proto, port, app, (), event.server_name)
        key = (client.group, client.ip, server.group, server.ip, event.ip_proto, port, app, event.server_name)
        seen = out.get(key)
        if seen is None or event.count > seen[1]:
            out[key] = (obs, max(event.count, 1))
    return list(out.values())
