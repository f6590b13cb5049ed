"""What an inspector reports: one `Finding` per detection, the same shape for threats, WAF and DLP.

Inspectors are pure (bytes and L7 events in, findings out). A finding names the detector
(`id`, `name`), how bad it is, what the configuration says to do about it (`action`), where
it was seen (direction, capture time, frame number), the L7 context it was seen in (e.g. the
HTTP method and path, or the SQL statement) and, for pattern matches, the matched value
already masked with its location. Turning findings into stored events is the caller's job.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from podwall.core.events import Severity
from podwall.core.types import Direction

__all__ = ["Action", "Finding", "FindingKind", "Severity", "mask_value"]


class FindingKind(StrEnum):
    THREAT = "threat"
    WAF = "waf"
    DLP = "dlp"


class Action(StrEnum):
    """What a detection asks for: `alert` only records; `drop`, `reset` and `deny` cut in protect mode."""

    ALERT = "alert"
    DROP = "drop"  # drop the packets silently
    RESET = "reset"  # cut the connection, resets to both ends
    DENY = "deny"  # a sensor's deny: cut the connection (both ends) in protect mode

    @property
    def blocks(self) -> bool:
        return self is not Action.ALERT


@dataclass(frozen=True, slots=True)
class Finding:
    """One detection inside a flow (or, for rate-based threats, across flows)."""

    kind: FindingKind
    id: str  # stable detector id: "threat.syn_flood", "waf.crs.942100", "dlp.sensor.creditcard/visa", ...
    name: str  # human name: "TCP SYN flood", "SQL Injection Attack Detected via libinjection", ...
    severity: Severity
    action: Action
    message: str  # one sentence: what was seen, with the figures that made it fire
    direction: Direction | None = None  # which way the triggering bytes went, when it applies
    ts: float = 0.0  # capture time of the triggering packet
    frame: int = 0  # 1-based frame number of the triggering packet (0: not tied to one packet)
    l7: dict[str, Any] = field(default_factory=dict)  # context, e.g. {"method": "GET", "path": "/x"} or {"sql": ...}
    match: str | None = None  # the matched value, masked (`4111 **** **** 1111`); never the clear value
    location: str | None = None  # where in the traffic: "query arg id", "request body offset 120", "line 3"
    detail: dict[str, Any] = field(default_factory=dict)  # detector-specific figures (rate, threshold, rule ids)


def mask_value(value: str, keep_start: int = 4, keep_end: int = 4) -> str:
    """Mask every character of `value` except the first `keep_start` and last `keep_end` alphanumerics.

    Separators (spaces, dashes) stay where they are, so `4111 1111 1111 1111` becomes
    `4111 **** **** 1111`. A value too short to keep both ends is masked entirely.
    """
    alnum = [i for i, ch in enumerate(value) if ch.isalnum()]
    if len(alnum) <= keep_start + keep_end:
        keep: set[int] = set()
    else:
        keep = set(alnum[:keep_start]) | set(alnum[len(alnum) - keep_end :])
    return "".join(ch if (i in keep or not ch.isalnum()) else "*" for i, ch in enumerate(value))
