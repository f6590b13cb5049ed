"""Aggregate named flows into conversations: client group -> server group, port, transport, app."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from podwall.analysis.runner import NamedFlow
from podwall.core.types import Endpoint, Observation, proto_name

ConversationKey = tuple[str, str, int, int, str]  # client group, server group, server port, proto, app


@dataclass(slots=True)
class Conversation:
    """All sessions between two groups on one server port, transport and application."""

    client_group: str
    server_group: str
    server_port: int
    proto: int
    application: str
    client: Endpoint  # a representative endpoint of each side, for events
    server: Endpoint
    sessions: int = 0
    packets: int = 0
    bytes: int = 0
    first_seen: float = float("inf")
    last_seen: float = 0.0
    server_names: set[str] = field(default_factory=set)

    @property
    def key(self) -> ConversationKey:
        return (self.client_group, self.server_group, self.server_port, self.proto, self.application)

    @property
    def transport(self) -> str:
        return proto_name(self.proto)

    def add(self, nf: NamedFlow) -> None:
        f = nf.flow
        self.sessions += 1
        self.packets += f.packets_total
        self.bytes += f.bytes_total
        self.first_seen = min(self.first_seen, f.first_ts)
        self.last_seen = max(self.last_seen, f.last_ts)
        if f.server_name:
            self.server_names.add(f.server_name)

    def to_dict(self) -> dict[str, object]:
        return {
            "client_group": self.client_group,
            "server_group": self.server_group,
            "server_port": self.server_port,
            "transport": self.transport,
            "ip_proto": self.proto,
            "application": self.application,
            "sessions": self.sessions,
            "packets": self.packets,
            "bytes": self.bytes,
            "first_seen": iso(self.first_seen),
            "last_seen": iso(self.last_seen),
            "server_names": sorted(self.server_names),
        }


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def conversation_key(nf: NamedFlow, obs: Observation | None = None) -> ConversationKey:
    """The conversation a flow belongs to; pass its observation when it is already built."""
    server_port = (obs or nf.observation()).server_port
    return (nf.client.group, nf.server.group, server_port, nf.flow.proto, nf.label)


def aggregate(flows: Iterable[NamedFlow]) -> list[Conversation]:
    """Group flows into conversations, sorted by client group, server group, port, app."""
    convs: dict[ConversationKey, Conversation] = {}
    for nf in flows:
        key = conversation_key(nf)
        conv = convs.get(key)
        if conv is None:
            conv = convs[key] = Conversation(key[0], key[1], key[2], key[3], key[4], nf.client, nf.server)
        conv.add(nf)
    return sorted(convs.values(), key=lambda c: c.key)
