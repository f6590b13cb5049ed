"""Scanning with compiled sensors: `DlpStream` over one direction's byte stream, `scan_message` over HTTP messages.

Stream rules are matched with a hyperscan stream, so a value split across TCP segments is
found once, whatever the split. Hyperscan reports where a match ends and (with SOM_LEFTMOST)
where it starts; the matched bytes come from the chunk just fed plus a bounded tail of earlier
bytes (`tail_bytes`: the longest match a pattern can make, capped), which is all the history a
stream keeps. A verifier (Luhn, SSN) then accepts or drops the candidate and the value is
masked at once: the clear value never leaves this module.

A pattern that can match several lengths from one start (`ab+`) reports each end; only the
first (shortest) is kept, so one occurrence makes one finding. A rule with several patterns
fires when the last of them has matched in the stream, then starts over.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import hyperscan

from podwall.core.types import Direction
from podwall.dpi.base import L7Event
from podwall.inspect.dlp.model import Context, Sensor, SensorRule
from podwall.inspect.dlp.validators import VERIFIERS, Verifier, mask_match
from podwall.inspect.findings import Action, Finding, FindingKind

__all__ = [
    "DlpStream",
    "MessageSet",
    "RuleInfo",
    "Slot",
    "StreamSet",
    "http_parts",
    "rule_info",
    "scan_message",
    "value_of",
]

_HTTP_APPS = frozenset({"http", "http2", "grpc"})


@dataclass(frozen=True, slots=True)
class RuleInfo:
    """A compiled rule: what its findings say and do, its verifier, how many patterns must match."""

    sensor: Sensor
    rule: SensorRule
    id: str  # dlp.sensor.creditcard/visa
    name: str  # Credit card number (visa)
    action: Action
    verifier: Verifier | None
    needed: int  # positive patterns that must all match

    def finding(
        self,
        masked: str,
        location: str,
        direction: Direction | None,
        detail: dict[str, Any],
        l7: dict[str, Any] | None = None,
    ) -> Finding:
        return Finding(
            kind=FindingKind.DLP,
            id=self.id,
            name=self.name,
            severity=self.sensor.severity,
            action=self.action,
            message=f"{self.name}: {masked} at {location}",
            direction=direction,
            l7=l7 or {},
            match=masked,
            location=location,
            detail={"sensor": self.sensor.name, "rule": self.rule.name, **detail},
        )


def rule_info(sensor: Sensor, index: int, action: Action) -> RuleInfo:
    """The compiled form of `sensor.rules[index]`, whose findings ask for `action`."""
    rule = sensor.rules[index]
    return RuleInfo(
        sensor=sensor,
        rule=rule,
        id=f"dlp.{sensor.name}/{rule.name}",
        name=f"{sensor.label} ({rule.name})",
        action=action,
        verifier=VERIFIERS[rule.verify] if rule.verify else None,
        needed=sum(1 for p in rule.patterns if not p.negative),
    )


@dataclass(frozen=True, slots=True)
class Slot:
    """One compiled pattern (its hyperscan id is its index): the rule it belongs to and where it looks."""

    rule: int
    index: int  # position among the rule's patterns
    context: Context
    negative: bool


@dataclass(frozen=True, slots=True)
class StreamSet:
    """The stream database and what its pattern ids mean."""

    database: hyperscan.Database
    rules: Sequence[RuleInfo]
    slots: Sequence[Slot]
    tail_bytes: int


@dataclass(frozen=True, slots=True)
class MessageSet:
    """The block database of the rules judged per HTTP message, its patterns grouped by rule."""

    database: hyperscan.Database
    rules: Sequence[RuleInfo]
    slots: Sequence[Slot]
    by_rule: Mapping[int, Sequence[int]]  # rule index -> its pattern ids
    contexts: frozenset[str]  # the message parts some pattern looks at (the others are not scanned)

    @classmethod
    def build(cls, database: hyperscan.Database, rules: Sequence[RuleInfo], slots: Sequence[Slot]) -> MessageSet:
        by_rule: dict[int, list[int]] = {}
        for pid, slot in enumerate(slots):
            by_rule.setdefault(slot.rule, []).append(pid)
        return cls(database, tuple(rules), tuple(slots), by_rule, frozenset(s.context for s in slots))


def value_of(raw: bytes, verifier: Verifier | None, truncated: bool) -> tuple[int, int, str] | None:
    """(start, end, masked) of the value inside a raw match, or None when the verifier drops it."""
    if verifier is None:
        masked = mask_match(raw.decode("utf-8", "replace"))
        return 0, len(raw), ("…" + masked) if truncated else masked
    if truncated:
        return None  # a verifier needs the whole value
    span = verifier.span(raw)
    if span is None:
        return None
    start, end = span
    return start, end, verifier.mask(raw[start:end].decode("ascii", "replace"))


class DlpStream:
    """Scans one direction of one flow (or one file): `feed` each next chunk, then `close`.

    Offsets count from `offset_base` (the stream offset of the first byte fed). With
    `track_lines`, findings also carry the 1-based line number of their first byte.
    """

    __slots__ = (
        "_base",
        "_closed",
        "_direction",
        "_handler",
        "_hits",
        "_hs",
        "_last_start",
        "_lines",
        "_newlines",
        "_pending",
        "_pos",
        "_set",
        "_tail",
    )

    def __init__(
        self, compiled: StreamSet, offset_base: int = 0, track_lines: bool = False, direction: Direction | None = None
    ) -> None:
        self._set = compiled
        self._base = offset_base
        self._lines = track_lines
        self._direction = direction
        self._hits: list[tuple[int, int, int]] = []
        self._tail = b""
        self._pos = 0  # bytes fed so far: hyperscan's offsets count from here
        self._newlines = 0
        self._last_start: dict[int, int] = {}
        self._pending: dict[int, set[int]] = {}
        self._closed = False
        # The binding keeps a borrowed reference to the handler: hold it for the stream's life.
        self._handler = self._on_match
        self._hs = compiled.database.stream(match_event_handler=self._handler)
        self._hs.__enter__()  # opens the hyperscan stream (the binding's context manager protocol)

    def _on_match(self, pattern: int, start: int, end: int, flags: int, context: object) -> None:
        self._hits.append((pattern, start, end))

    @property
    def offset(self) -> int:
        """The stream offset just past the last byte fed."""
        return self._base + self._pos

    @property
    def closed(self) -> bool:
        return self._closed

    def feed(self, data: bytes) -> list[Finding]:
        """Scan the next chunk; returns the findings whose match ends in it."""
        if self._closed:
            raise RuntimeError("feed() on a closed DLP stream")
        if not data:
            return []
        self._hs.scan(data)
        found = self._resolve(data) if self._hits else []
        if self._lines:
            self._newlines += data.count(b"\n")
        self._pos += len(data)
        keep = self._set.tail_bytes
        self._tail = data[-keep:] if len(data) >= keep else (self._tail + data)[-keep:]
        return found

    def close(self) -> list[Finding]:
        """End the stream: findings of matches that end with it (a number at the very end); idempotent."""
        if self._closed:
            return []
        self._closed = True
        self._hs.close()
        return self._resolve(b"") if self._hits else []

    def __del__(self) -> None:
        # An unclosed hyperscan stream leaks its state; nothing here may raise.
        if not getattr(self, "_closed", True):
            self._closed = True
            with contextlib.suppress(Exception):
                self._hs.close()

    def _resolve(self, data: bytes) -> list[Finding]:
        tail = self._tail
        window = tail + data if tail else data
        wbase = self._pos - len(tail)  # hyperscan offset of window[0]
        rules, slots = self._set.rules, self._set.slots
        found: list[Finding] = []
        for pattern, start, end in self._hits:
            if self._last_start.get(pattern) == start:
                continue  # the same occurrence growing longer
            self._last_start[pattern] = start
            slot = slots[pattern]
            info = rules[slot.rule]
            truncated = start < wbase or start > end  # older than the tail, or past hyperscan's horizon
            s = wbase if truncated else start
            got = value_of(window[s - wbase : end - wbase], info.verifier, truncated)
            if got is None:
                continue
            if info.needed > 1:
                seen = self._pending.setdefault(slot.rule, set())
                seen.add(slot.index)
                if len(seen) < info.needed:
                    continue
                del self._pending[slot.rule]
            vstart, vend, masked = got
            at = s + vstart
            detail: dict[str, Any] = {"offset": self._base + at, "length": vend - vstart, "context": "packet"}
            location = f"offset {self._base + at}"
            if self._lines:
                line = self._newlines - tail.count(b"\n") + window.count(b"\n", 0, at - wbase) + 1
                detail["line"] = line
                location = f"line {line}, offset {self._base + at}"
            found.append(info.finding(masked, location, self._direction, detail))
        self._hits.clear()
        return found


def http_parts(event: L7Event) -> dict[str, bytes] | None:
    """An HTTP request's or response's url, header and body text, and all of it as `packet`; an
    HTTP/2 `request_body` (its request's headers came in an event before) as body alone; None
    for other events."""
    if event.app not in _HTTP_APPS or event.kind not in ("request", "request_body", "response"):
        return None
    f = event.fields
    if event.kind == "request_body":
        data = f.get("body") or b""
        data = bytes(data) if isinstance(data, bytes | bytearray | memoryview) else str(data).encode("utf-8", "replace")
        return {"body": data, "packet": data}
    # The DPI lower-cases header names; patterns are written against the usual spelling (Content-Type).
    headers = b"".join(
        f"{_canonical(str(name))}: {value}\r\n".encode("latin-1", "replace") for name, value in (f.get("headers") or ())
    )
    body = f.get("body") or b""
    body = bytes(body) if isinstance(body, bytes | bytearray | memoryview) else str(body).encode("utf-8", "replace")
    version = f.get("version") or "1.1"
    parts: dict[str, bytes] = {"header": headers, "body": body}
    if event.kind == "request":
        path = str(f.get("path") or "").encode("latin-1", "replace")
        parts["url"] = path
        start = f"{f.get('method') or '-'} ".encode("latin-1", "replace") + path + f" HTTP/{version}\r\n".encode()
    else:
        start = f"HTTP/{version} {f.get('status')} {f.get('reason') or ''}\r\n".encode("latin-1", "replace")
    parts["packet"] = start + headers + b"\r\n" + body
    return parts


def _canonical(name: str) -> str:
    return "-".join(part[:1].upper() + part[1:] for part in name.split("-"))


def scan_message(compiled: MessageSet, event: L7Event) -> list[Finding]:
    """Judge the message-scoped rules on one HTTP message: one finding per rule that holds."""
    parts = http_parts(event)
    if parts is None:
        return []
    hits: dict[int, list[tuple[str, int, int]]] = {}
    slots = compiled.slots

    def on_match(pattern: int, start: int, end: int, flags: int, context: object) -> None:
        hits.setdefault(pattern, []).append((str(context), start, end))

    for part, data in parts.items():
        if data and part in compiled.contexts:
            compiled.database.scan(data, match_event_handler=on_match, context=part)
    matched: dict[int, list[tuple[str, int, int]]] = {
        pid: where for pid, found in hits.items() if (where := [h for h in found if h[0] == slots[pid].context])
    }
    found_list: list[Finding] = []
    l7 = {"app": event.app, "kind": event.kind}
    for rule_index, pids in compiled.by_rule.items():
        info = compiled.rules[rule_index]
        if any(slots[p].negative and p in matched for p in pids):
            continue
        positives = [p for p in pids if not slots[p].negative]
        if not all(p in matched for p in positives):
            continue
        first = _first_valid(matched[positives[0]], parts, info.verifier)
        if first is None:
            continue
        part, at, length, masked = first
        location = f"{event.kind} {part}" + (f", offset {at}" if part in ("body", "packet") else "")
        detail = {"offset": at, "length": length, "context": part}
        found_list.append(info.finding(masked, location, event.direction, detail, l7))
    return found_list


def _first_valid(
    where: list[tuple[str, int, int]], parts: Mapping[str, bytes], verifier: Verifier | None
) -> tuple[str, int, int, str] | None:
    for part, start, end in where:
        got = value_of(parts[part][start:end], verifier, False)
        if got is not None:
            vstart, vend, masked = got
            return part, start + vstart, vend - vstart, masked
    return None
