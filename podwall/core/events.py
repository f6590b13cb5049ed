"""The one event schema: violations, learned connections, threats, WAF and DLP detections.

Every event carries forensic detail: when, both workloads, transport and application, the
L7 fields, the verdict with its rule and explanation, severity, count and an optional pcap
reference. The store persists these; sinks (JSONL, ...) serialise `Event.to_dict()`.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class EventType(StrEnum):
    VIOLATION = "violation"
    LEARNED = "learned"
    THREAT = "threat"
    DLP = "dlp"
    WAF = "waf"


class Severity(StrEnum):
    INFO = "info"
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    CRITICAL = "critical"


class EventEndpoint(BaseModel):
    """One end of the connection as the event records it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    group: str
    ip: str
    port: int
    workload: str | None = None
    namespace: str | None = None
    service: str | None = None
    pod: str | None = None
    kind: str | None = None
    node: str | None = None
    mode: str | None = None  # the group's policy mode at the time


class EventVerdict(BaseModel):
    """What the policy decided and why."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    action: str  # allow | deny | alert | learn
    rule_id: int  # 0 = implicit deny
    rule_name: str | None = None
    mode: str | None = None  # the effective mode that decided the action
    explanation: str = ""
    detail: dict[str, Any] = Field(default_factory=dict)


class EventDetection(BaseModel):
    """What an inspector found (threat, WAF or DLP events): the detector, the action, the masked match."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str  # detector id: threat.syn_flood, waf.crs.942100, dlp.sensor.creditcard/visa, ...
    name: str
    action: str  # alert | drop | reset | deny: what the configuration asks for
    enforced: bool = False  # the connection was cut (protect mode on the enforcer)
    match: str | None = None  # masked; never the clear value
    location: str | None = None
    detail: dict[str, Any] = Field(default_factory=dict)


def _now() -> datetime:
    return datetime.now(UTC)


class Event(BaseModel):
    """A recorded fact about traffic. `time` is when the traffic happened (capture time)."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(default_factory=lambda: uuid.uuid4().hex)
    time: datetime = Field(default_factory=_now)
    last_seen: datetime | None = None
    recorded: datetime = Field(default_factory=_now)
    type: EventType
    severity: Severity = Severity.INFO
    message: str = ""
    client: EventEndpoint
    server: EventEndpoint
    transport: str  # tcp | udp | icmp | icmpv6 | ip-N
    ip_proto: int
    application: str  # as the DPI names it, or tcp/PORT when unknown
    server_name: str | None = None
    l7: dict[str, Any] = Field(default_factory=dict)
    verdict: EventVerdict | None = None
    detection: EventDetection | None = None  # threat, waf and dlp events
    count: int = 1  # flows (sessions) this event stands for
    packets: int = 0
    bytes: int = 0
    pcap: str | None = None  # path of the saved triggering packets, when recorded
    source: str | None = None  # capture file or live interface the traffic came from

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")
