"""The WAF facade: one HTTP transaction in, CRS + podwall + sensor matches, a score and a verdict out.

`WafEngine` loads everything once (ModSecurity with the CRS at the chosen paranoia level,
podwall's own layer, the custom sensors) and inspects any number of transactions:

    engine = WafEngine(paranoia=1, threshold=5)
    result = engine.inspect(parse_http(raw))                  # or engine.inspect_events(req_ev, resp_ev)
    result.verdict, result.anomaly_score, result.matches      # "block" / "pass"
    findings = result.findings(ts=..., frame=...)             # podwall.inspect.findings.Finding, kind=waf

The anomaly score is CRS's inbound score (less the points of matches podwall's narrowing
vetoed, see narrowing.py) plus 5 (CRS's critical score) for each distinct own-layer check and
sensor rule that fired; the verdict is `block` when it reaches the inbound threshold, or when
CRS's outbound (response) score reaches the outbound threshold.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from podwall.core.events import Severity
from podwall.core.types import Direction
from podwall.inspect.findings import Action, Finding, FindingKind
from podwall.inspect.waf.crs import CrsLocation, check_levels
from podwall.inspect.waf.detect import OwnDetector
from podwall.inspect.waf.http_request import HttpTransaction, from_events, parse_http
from podwall.inspect.waf.modsec import ModSecurityWaf, RuleMatch
from podwall.inspect.waf.narrowing import narrowing_for
from podwall.inspect.waf.sensors import SensorSet, WafSensor

__all__ = ["CRITICAL_SCORE", "MAX_MATCH", "WafEngine", "WafMatch", "WafResult"]

CRITICAL_SCORE = 5  # what CRS adds for a critical rule; podwall's own hits count the same
MAX_MATCH = 120  # characters of matched text kept in a match or finding


_SENSOR_LOCATIONS = {"url": "REQUEST_URI", "header": "REQUEST_HEADERS", "body": "REQUEST_BODY", "packet": "REQUEST"}


def clip(value: str, limit: int = MAX_MATCH) -> str:
    """Matched text made safe to show: control characters escaped, at most `limit` characters."""
    text = "".join(ch if ch.isprintable() else f"\\x{ord(ch):02x}" if ord(ch) < 256 else ch for ch in value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _severity(syslog_level: int) -> Severity:
    if syslog_level <= 2:
        return Severity.CRITICAL
    return {3: Severity.HIGH, 4: Severity.MEDIUM, 5: Severity.LOW}.get(syslog_level, Severity.INFO)


@dataclass(frozen=True, slots=True)
class WafMatch:
    """One rule or check that matched, whichever layer it came from."""

    id: str  # "waf.crs.942100", "waf.podwall.sqli.libinjection", "waf.sensor.<sensor>/<rule>"
    source: str  # "crs", "podwall" or "sensor"
    message: str
    category: str  # "sqli", "xss", "protocol", "leakage", ..., "sensor"
    location: str | None  # "ARGS:id", "REQUEST_FILENAME", "REQUEST_HEADERS:User-Agent", ...
    match: str  # the matched text, clipped to MAX_MATCH characters
    severity: Severity
    response: bool = False  # seen in the response (CRS phases 3-4)
    paranoia: int | None = None
    score: int = 0  # anomaly points this match added (0 for repeats of an own check or sensor rule)
    narrowed_by: str | None = None  # why podwall dropped this CRS match (narrowing.py); None when it counts

    @property
    def rule(self) -> str:
        """The short rule id: `942100`, `sqli.libinjection`, `<sensor>/<rule>`."""
        return self.id.split(".", 2)[2]

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.rule if self.source == "crs" else self.id,
            "message": self.message,
            "category": self.category,
            "location": self.location,
        }


@dataclass(slots=True)
class WafResult:
    """The outcome for one transaction."""

    matches: list[WafMatch] = field(default_factory=list)
    anomaly_score: int = 0  # inbound: CRS's plus podwall's and the sensors'
    crs_score: int = 0  # CRS's inbound score alone
    outbound_score: int = 0  # CRS's response-side score
    threshold: int = 5
    outbound_threshold: int = 4
    l7: dict[str, Any] = field(default_factory=dict)  # {method, path, host} (+ status with a response)
    narrowed: list[WafMatch] = field(default_factory=list)  # CRS matches podwall dropped (not counted)

    @property
    def verdict(self) -> str:
        blocked = self.anomaly_score >= self.threshold or self.outbound_score >= self.outbound_threshold
        return "block" if blocked else "pass"

    @property
    def blocked(self) -> bool:
        return self.verdict == "block"

    def categories(self) -> set[str]:
        return {m.category for m in self.matches}

    def category_score(self, category: str) -> int:
        """The inbound anomaly points contributed by matches of one category (`sqli`, `xss`, ...)."""
        return sum(m.score for m in self.matches if m.category == category and not m.response)

    def blocked_as(self, category: str) -> bool:
        """Blocked, and the matches of `category` alone reach the inbound threshold."""
        return self.blocked and self.category_score(category) >= self.threshold

    def to_dict(self) -> dict[str, Any]:
        return {
            "matches": [m.to_dict() for m in self.matches],
            "anomaly_score": self.anomaly_score,
            "outbound_score": self.outbound_score,
            "verdict": self.verdict,
            "narrowed": [m.rule for m in self.narrowed],
        }

    def findings(self, ts: float = 0.0, frame: int = 0, extra_l7: dict[str, Any] | None = None) -> list[Finding]:
        """One Finding per match; action `deny` when the transaction is blocked, else `alert`."""
        action = Action.DENY if self.blocked else Action.ALERT
        l7 = {**self.l7, **(extra_l7 or {})}
        score = f"anomaly score {self.anomaly_score}, threshold {self.threshold}"
        out: list[Finding] = []
        for m in self.matches:
            where = f" in {m.location}" if m.location else ""
            out.append(
                Finding(
                    kind=FindingKind.WAF,
                    id=m.id,
                    name=m.message,
                    severity=m.severity,
                    action=action,
                    message=f"{m.message}{where} ({m.category}; {score}; {self.verdict})",
                    direction=Direction.S2C if m.response else Direction.C2S,
                    ts=ts,
                    frame=frame,
                    l7=dict(l7),
                    match=m.match or None,
                    location=m.location,
                    detail={
                        "category": m.category,
                        "source": m.source,
                        "paranoia": m.paranoia,
                        "anomaly_score": self.anomaly_score,
                        "outbound_score": self.outbound_score,
                        "verdict": self.verdict,
                    },
                )
            )
        return out


def _crs_match(m: RuleMatch, narrowed_by: str | None = None) -> WafMatch:
    return WafMatch(
        id=f"waf.crs.{m.rule_id}",
        source="crs",
        message=m.message,
        category=m.category,
        location=m.location,
        match=clip(m.value),
        severity=_severity(m.severity),
        response=m.phase in (3, 4),
        paranoia=m.paranoia,
        score=m.score,
        narrowed_by=narrowed_by,
    )


def _narrow(matches: list[RuleMatch]) -> tuple[list[WafMatch], list[WafMatch], int]:
    """CRS matches split into those that count and those a narrowing vetoes, with the points vetoed."""
    kept: list[WafMatch] = []
    dropped: list[WafMatch] = []
    points = 0
    for m in matches:
        rule = narrowing_for(m.rule_id)
        if rule is not None and rule.veto(m.matched, m.value):
            dropped.append(_crs_match(m, rule.reason))
            points += m.score if m.phase <= 2 else 0
        else:
            kept.append(_crs_match(m))
    return kept, dropped, points


class WafEngine:
    """ModSecurity + CRS, podwall's own layer and custom sensors, loaded once; `inspect` per transaction.

    Not thread-safe (ModSecurity transactions and hyperscan scratch are per engine): use one
    engine per worker. The CRS files that cannot load are in `warnings`.
    """

    def __init__(
        self,
        paranoia: int = 1,
        threshold: int = 5,
        outbound_threshold: int = 4,
        sensors: Sequence[WafSensor] = (),
        crs: CrsLocation | None = None,
        own_layer: bool = True,
        body_limit: int = 1 << 20,
        narrow_crs: bool = True,
    ) -> None:
        check_levels(paranoia, threshold, outbound_threshold)
        self.paranoia = paranoia
        self.threshold = threshold
        self.outbound_threshold = outbound_threshold
        self.modsec = ModSecurityWaf(paranoia, threshold, outbound_threshold, crs, body_limit)
        self.own = OwnDetector(paranoia=paranoia) if own_layer else None
        self.sensors = SensorSet(sensors)
        self.narrow_crs = narrow_crs

    @property
    def warnings(self) -> list[str]:
        return self.modsec.load.warnings()

    def inspect(self, txn: HttpTransaction) -> WafResult:
        """Inspect one transaction (request and, when present, its response)."""
        req = txn.request
        crs = self.modsec.run(txn)
        if self.narrow_crs:
            kept, dropped, vetoed = _narrow(crs.matches)
        else:
            kept, dropped, vetoed = [_crs_match(m) for m in crs.matches], [], 0
        crs_score = max(crs.inbound_score - vetoed, 0)
        result = WafResult(
            matches=kept,
            narrowed=dropped,
            crs_score=crs_score,
            outbound_score=crs.outbound_score,
            threshold=self.threshold,
            outbound_threshold=self.outbound_threshold,
            l7={"method": req.method, "path": req.path, "host": req.host},
        )
        if txn.response is not None:
            result.l7["status"] = txn.response.status
        extra = 0
        if self.own is not None:
            seen: set[str] = set()
            for hit in self.own.inspect(req):
                points = 0 if hit.id in seen else CRITICAL_SCORE
                result.matches.append(
                    WafMatch(
                        hit.id,
                        "podwall",
                        hit.message,
                        hit.category,
                        hit.location,
                        clip(hit.value),
                        Severity.CRITICAL,
                        score=points,
                    )
                )
                seen.add(hit.id)
                extra += points
        for shit in self.sensors.match(req):
            result.matches.append(
                WafMatch(
                    shit.id,
                    "sensor",
                    f"WAF sensor {shit.sensor} rule {shit.rule}",
                    "sensor",
                    _SENSOR_LOCATIONS.get(shit.context, shit.context),
                    clip(shit.value),
                    Severity.HIGH,
                    score=CRITICAL_SCORE,
                )
            )
            extra += CRITICAL_SCORE
        result.anomaly_score = crs_score + extra
        return result

    def inspect_raw(self, data: bytes, source: str = "<input>") -> WafResult:
        """Parse a raw request (+ response) and inspect it; InputError on unparsable bytes."""
        return self.inspect(parse_http(data, source))

    def inspect_events(
        self,
        request: Any,
        response: Any | None = None,
        client: tuple[str, int] = ("0.0.0.0", 0),
        server: tuple[str, int] = ("0.0.0.0", 80),
    ) -> WafResult:
        """Inspect the DPI's HTTP `request` (and `response`) L7 events (or their `fields` dicts)."""
        return self.inspect(from_events(request, response, client, server))
