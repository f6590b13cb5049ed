"""ModSecurity v3 driven directly, without a web server: one transaction in, CRS matches and scores out.

`ModSecurityWaf` loads the rule set once (see crs.py) and then runs any number of
transactions through libmodsecurity's phases: connection, URI, request headers, request
body, and, when a response is known, response headers and body. The engine runs
detection-only, so every phase runs to the end and every rule that matches is collected
(`Transaction.get_rule_messages`); the inbound and outbound anomaly scores come from two
podwall rules that log CRS's totals last in phases 2 and 4.
"""

from __future__ import annotations

import re
import weakref
from dataclasses import dataclass, field

import libmodsecurity

from podwall.inspect.waf.crs import (
    INBOUND_SCORE_RULE,
    OUTBOUND_SCORE_RULE,
    PODWALL_RULE_IDS,
    CrsLoad,
    CrsLocation,
    load_crs,
    locate_crs,
)
from podwall.inspect.waf.http_request import HttpTransaction

__all__ = ["SEVERITY_SCORES", "ModSecResult", "ModSecurityWaf", "RuleMatch", "crs_category"]

# CRS rule files by the hundred their ids live in; a rule's category is its file's attack class.
_CATEGORIES = {
    911: "method",
    912: "dos",
    913: "scanner",
    920: "protocol",
    921: "protocol",
    922: "multipart",
    930: "lfi",
    931: "rfi",
    932: "rce",
    933: "php",
    934: "nodejs",
    941: "xss",
    942: "sqli",
    943: "session-fixation",
    944: "java",
    950: "leakage",
    951: "leakage",
    952: "leakage",
    953: "leakage",
    954: "leakage",
}
# Rules that only sum or report scores (blocking evaluation, correlation): not findings of their own.
_SUMMARY_FAMILIES = frozenset({949, 959, 980})
_WITHIN = re.compile(r"found within ((?:[A-Z_]+)(?::[^:\s]*)?)")
_AGAINST = re.compile(r"against variable `([^`']*)'")
_VALUE = re.compile(r"\(Value: `(.*)' \)", re.S)
_PARANOIA_TAG = "paranoia-level/"
_MATCHED_DATA = "Matched Data: "
# CRS 3.3.4's tx.critical/error/warning/notice_anomaly_score defaults, by syslog severity
SEVERITY_SCORES = {2: 5, 3: 4, 4: 3, 5: 2}


def crs_category(rule_id: int) -> str:
    """The attack class of a CRS rule from its id (942xxx -> `sqli`, 941xxx -> `xss`, ...)."""
    return _CATEGORIES.get(rule_id // 1000, "generic")


@dataclass(frozen=True, slots=True)
class RuleMatch:
    """One CRS rule that matched: id, message, where, what (raw, unmasked: the caller masks it)."""

    rule_id: int
    message: str
    category: str
    severity: int  # syslog scale, as CRS uses it: 2 critical, 3 error, 4 warning, 5 notice
    phase: int
    paranoia: int | None
    location: str | None  # "ARGS:id", "REQUEST_HEADERS:User-Agent", "REQUEST_FILENAME", ...
    value: str  # the value the rule matched in (MATCHED_VAR, after the rule's transformations)
    tags: tuple[str, ...] = ()
    matched: str = ""  # the part of the value the rule's pattern matched (TX.0), when CRS logs it

    @property
    def score(self) -> int:
        """The anomaly points CRS adds for this match (its severity's score)."""
        return SEVERITY_SCORES.get(self.severity, 0)


@dataclass(slots=True)
class ModSecResult:
    """What ModSecurity found in one transaction."""

    matches: list[RuleMatch] = field(default_factory=list)
    inbound_score: int = 0
    outbound_score: int = 0


def _ignore(_line: str) -> None:
    return None


def _score(data: str) -> int:
    try:
        return int(data.strip() or 0)
    except ValueError:
        return 0


def _text(msg: libmodsecurity.RuleMessage, attr: str) -> str:
    try:
        return str(getattr(msg, attr))
    except UnicodeDecodeError:  # the bindings decode logged request bytes as UTF-8, which they need not be
        return ""


def _to_match(msg: libmodsecurity.RuleMessage) -> RuleMatch:
    paranoia = next((int(t[len(_PARANOIA_TAG) :]) for t in msg.tags if t.startswith(_PARANOIA_TAG)), None)
    data = _text(msg, "data")
    match = _text(msg, "match")
    located = _AGAINST.search(match)
    within = _WITHIN.search(data)
    location = located.group(1) if located else within.group(1) if within else None
    value = data
    matched = ""
    if within is not None:
        # CRS logdata reads "Matched Data: X found within VAR:name: <value>"; keep both parts
        rest = data[within.end() :]
        value = rest[2:] if rest.startswith(": ") else rest
        if data.startswith(_MATCHED_DATA):
            matched = data[len(_MATCHED_DATA) : within.start()].removesuffix(" ")
    elif not data and (v := _VALUE.search(match)):
        value = v.group(1)
    return RuleMatch(
        rule_id=msg.rule_id,
        message=msg.message,
        category=crs_category(msg.rule_id),
        severity=msg.severity,
        phase=msg.phase,
        paranoia=paranoia,
        location=location,
        value=value,
        tags=tuple(msg.tags),
        matched=matched,
    )


class ModSecurityWaf:
    """libmodsecurity with the CRS loaded once; `run` inspects one transaction (not thread-safe)."""

    def __init__(
        self,
        paranoia: int = 1,
        threshold: int = 5,
        outbound_threshold: int = 4,
        location: CrsLocation | None = None,
        body_limit: int = 1 << 20,
    ) -> None:
        self.paranoia = paranoia
        self.threshold = threshold
        self.outbound_threshold = outbound_threshold
        self._ms = libmodsecurity.ModSecurity()
        self._ms.set_connector_information("podwall WAF (libmodsecurity, no web server)")
        # Without a callback libmodsecurity prints every match to stderr; the matches are read per transaction.
        self._ms.set_log_callback(_ignore)
        weakref.finalize(self, self._ms.set_log_callback, None)
        self._rules = libmodsecurity.RulesSet()
        self.load: CrsLoad = load_crs(
            self._rules,
            location or locate_crs(),
            paranoia=paranoia,
            threshold=threshold,
            outbound_threshold=outbound_threshold,
            body_limit=body_limit,
        )

    def run(self, txn: HttpTransaction) -> ModSecResult:
        """Drive one transaction through every phase and collect the matches and scores."""
        req = txn.request
        tx = libmodsecurity.Transaction(self._ms, self._rules)
        tx.process_connection(txn.client_ip, txn.client_port, txn.server_ip, txn.server_port)
        tx.process_uri(req.uri, req.method, req.version)
        for name, value in req.headers:
            tx.add_request_header(name, value)
        tx.process_request_headers()
        if req.body:
            tx.append_request_body(req.body)
        tx.process_request_body()
        resp = txn.response
        if resp is not None:
            for name, value in resp.headers:
                tx.add_response_header(name, value)
            tx.process_response_headers(resp.status, f"HTTP/{resp.version}")
            if resp.body:
                tx.append_response_body(resp.body)
            tx.process_response_body()
        result = ModSecResult()
        for msg in tx.get_rule_messages():
            rid = msg.rule_id
            if rid == INBOUND_SCORE_RULE:
                result.inbound_score = _score(_text(msg, "data"))
            elif rid == OUTBOUND_SCORE_RULE:
                result.outbound_score = _score(_text(msg, "data"))
            elif rid in PODWALL_RULE_IDS or rid // 1000 in _SUMMARY_FAMILIES:
                continue
            else:
                result.matches.append(_to_match(msg))
        return result
