"""Turning detections into findings, and the bounded counters the rate-based threats share.

A detector says "threat X seen, here is why" through `Reporter.hit`; the reporter drops it
when the threat is disabled, applies the threat's `report_interval` per target (the hits in
between are counted and reported with the next finding), builds the `Finding` and, while
`acting`, remembers the strongest blocking action asked for until `take_action` is called.
Every table here is bounded: the oldest entries go first, so hostile traffic cannot grow
memory without bound.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any, TypedDict, Unpack

from podwall.core.types import Direction, Packet, ip_text
from podwall.datapath.flows import Flow
from podwall.inspect.findings import Action, Finding, FindingKind
from podwall.inspect.threats.catalog import THREATS, ThreatSettings

__all__ = ["MAX_KEYS", "Reporter", "Where", "WindowCounter", "evict_oldest", "flow_detail", "packet_detail"]

MAX_KEYS = 65536  # entries per table (targets, sources, address pairs) before the oldest are forgotten
_RANK = {Action.ALERT: 0, Action.DROP: 1, Action.RESET: 2, Action.DENY: 2}


class Where(TypedDict, total=False):
    """What else places a hit besides its time and frame (see `Reporter.hit`)."""

    direction: Direction | None
    target: Hashable | None
    l7: dict[str, Any] | None


def _ends(src: bytes, dst: bytes, sport: int, dport: int, proto: int) -> dict[str, object]:
    return {"src": ip_text(src), "dst": ip_text(dst), "sport": sport, "dport": dport, "proto": proto}


def packet_detail(pkt: Packet) -> dict[str, object]:
    """The addresses, ports and transport of a packet, as cross-flow findings report them."""
    return _ends(pkt.src, pkt.dst, pkt.sport, pkt.dport, pkt.proto)


def flow_detail(flow: Flow) -> dict[str, object]:
    """Both ends of a flow (client first), as findings report them."""
    return _ends(flow.client_ip, flow.server_ip, flow.client_port, flow.server_port, flow.proto)


def evict_oldest(table: dict[Any, Any], limit: int) -> None:
    """Make room for one more entry: dicts keep insertion order, the first entries are the oldest."""
    while len(table) >= limit:
        del table[next(iter(table))]


class WindowCounter:
    """Counts events per key in fixed windows of `window` seconds (a window starts at a key's
    first event after the previous one ran out), by packet time."""

    __slots__ = ("_counts", "_limit", "window")

    def __init__(self, window: float, limit: int = MAX_KEYS) -> None:
        self.window = window
        self._limit = limit
        self._counts: dict[Hashable, list[float]] = {}  # key -> [window start, count]

    def __len__(self) -> int:
        return len(self._counts)

    def add(self, key: Hashable, ts: float, n: int = 1) -> int:
        """Count `n` events for `key` at `ts`; returns the key's count in its current window."""
        entry = self._counts.get(key)
        if entry is None or not 0 <= ts - entry[0] < self.window:
            if entry is not None:
                del self._counts[key]  # re-inserted below: the table stays ordered by window start
            else:
                evict_oldest(self._counts, self._limit)
            entry = self._counts[key] = [ts, 0.0]
        entry[1] += n
        return int(entry[1])


class Reporter:
    """Findings of the threat engine: enabled check, once per `report_interval` per target, actions."""

    __slots__ = ("_action", "_last", "_limit", "_settings", "acting", "enabled", "out")

    def __init__(self, settings: ThreatSettings, limit: int = MAX_KEYS) -> None:
        self._settings = settings
        self._limit = limit
        self.enabled: dict[str, bool] = {key: settings.of(key).enabled for key in THREATS}
        self._last: dict[tuple[str, Hashable], list[float]] = {}  # (threat, target) -> [last report, held]
        self.out: list[Finding] = []
        self.acting = True  # hits ask for their action on the packet being processed
        self._action: Action | None = None

    def start(self) -> list[Finding]:
        """Begin one engine call: a fresh list for its findings."""
        self.out = []
        return self.out

    def take_action(self) -> Action | None:
        """The strongest blocking action asked since the last call (None: none was), and forget it."""
        action, self._action = self._action, None
        return action

    def hit(
        self,
        key: str,
        message: str,
        *,
        ts: float,
        frame: int = 0,
        direction: Direction | None = None,
        target: Hashable | None = None,
        l7: dict[str, Any] | None = None,
        detail: dict[str, Any] | None = None,
    ) -> bool:
        """Threat `key` was seen; returns True when a finding was made (False: disabled or held back).

        With a `target`, one finding per target per `report_interval`; the hits held back in
        between are counted in the next finding's `detail["held_back"]`.
        """
        if not self.enabled.get(key, False):
            return False
        setting = self._settings.of(key)
        action = setting.act
        if self.acting and action is not Action.ALERT and (self._action is None or _RANK[action] > _RANK[self._action]):
            self._action = action
        held = 0
        if target is not None:
            slot = (key, target)
            last = self._last.get(slot)
            if last is not None and 0 <= ts - last[0] < setting.report_interval:
                last[1] += 1
                return False
            if last is not None:
                held = int(last[1])
                del self._last[slot]
            else:
                evict_oldest(self._last, self._limit)
            self._last[slot] = [ts, 0.0]
        info = THREATS[key]
        found_detail = dict(detail or {})
        if held:
            found_detail["held_back"] = held
        self.out.append(
            Finding(
                FindingKind.THREAT,
                info.id,
                info.name,
                info.severity,
                action,
                message,
                direction=direction,
                ts=ts,
                frame=frame,
                l7=l7 or {},
                detail=found_detail,
            )
        )
        return True

    def packet_hit(
        self, key: str, message: str, pkt: Packet, *, detail: Mapping[str, Any] | None = None, **where: Unpack[Where]
    ) -> bool:
        """`hit` at `pkt`'s time and frame, its addresses and ports first in the detail."""
        ends = packet_detail(pkt)
        return self.hit(key, message, ts=pkt.ts, frame=pkt.frame, detail={**ends, **(detail or {})}, **where)

    def flow_hit(
        self, key: str, message: str, flow: Flow, *, detail: Mapping[str, Any] | None = None, **where: Unpack[Where]
    ) -> bool:
        """`hit` at the flow's latest packet, both ends of the flow first in the detail."""
        ends = flow_detail(flow)
        return self.hit(
            key, message, ts=flow.last_ts, frame=flow.last_frame, detail={**ends, **(detail or {})}, **where
        )
