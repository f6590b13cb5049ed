"""What the policy decided about one connection, and why, in words and as JSON.

`Verdict` is what every consumer (datapath, events, CLI, API) reads; `Explanation` carries
the reasoning: the rules consulted with the criterion each one failed, the deciding rule
(or the implicit deny), and the modes of both ends. The policy engine builds them
(`podwall.policy.evaluate`, `podwall.policy.explain`); this module only holds the values.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from podwall.core.events import EventVerdict
    from podwall.policy.model import Rule

# Action names, as events record them.
ALLOW = "allow"
DENY = "deny"
ALERT = "alert"
LEARN = "learn"

IMPLICIT_DENY_ID = 0


@dataclass(frozen=True, slots=True)
class RuleCheck:
    """One rule the engine looked at, and whether it matched.

    `failed` names the criteria that did not hold, among `staged`, `disabled`, `from`,
    `to`, `port`, `app` and `l7`; `reasons` says the same in words, one sentence fragment per
    criterion. `tier` is the tier the rule sits in (admin, federated, policy-as-code, main,
    baseline). A matched admin-tier `pass` rule is listed with `matched` true.
    """

    rule_id: int
    rule_name: str | None
    action: str
    matched: bool
    failed: tuple[str, ...] = ()
    reasons: tuple[str, ...] = ()
    tier: str = "main"

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.rule_id,
            "name": self.rule_name,
            "action": self.action,
            "tier": self.tier,
            "matched": self.matched,
            "failed": list(self.failed),
            "reasons": list(self.reasons),
        }


@dataclass(frozen=True, slots=True)
class TierStep:
    """One tier the evaluation went through: how many of its rules it looked at, and the result.

    `result` is `matched` (a rule decided), `passed` (an admin Pass rule sent the connection
    on), `no match`, or for the last step `default` (the mode default, rule 0).
    """

    tier: str
    consulted: int
    result: str
    rule_id: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"tier": self.tier, "consulted": self.consulted, "result": self.result, "rule_id": self.rule_id}


@dataclass(frozen=True, slots=True)
class RequestOutcome:
    """How one L7 request of the connection fared: the rule that decided it and why."""

    index: int
    protocol: str
    summary: str
    rule_id: int
    rule_name: str | None
    allowed: bool
    reason: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "protocol": self.protocol,
            "request": self.summary,
            "rule_id": self.rule_id,
            "rule_name": self.rule_name,
            "allowed": self.allowed,
            "reason": self.reason,
        }


@dataclass(frozen=True, slots=True)
class StagedSummary:
    """The would-be result with the staged rules in force, as the enforced explanation quotes it."""

    action: str
    violation: bool
    rule_id: int
    rule_name: str | None
    differs: bool  # whether it differs from the enforced verdict (action or deciding rule)

    def to_dict(self) -> dict[str, Any]:
        return {
            "action": self.action,
            "violation": self.violation,
            "rule_id": self.rule_id,
            "rule_name": self.rule_name,
            "differs": self.differs,
        }


@dataclass(frozen=True, slots=True)
class EndSummary:
    """One end of the connection as the explanation describes it.

    `name` is the endpoint's display group; `mode_group` the policy group its mode came from.
    """

    name: str
    ip: str
    port: int
    groups: tuple[str, ...]
    mode: str | None
    mode_group: str | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "ip": self.ip,
            "port": self.port,
            "groups": list(self.groups),
            "mode": self.mode,
            "mode_group": self.mode_group,
        }


@dataclass(frozen=True, slots=True)
class Explanation:
    """Why a verdict is what it is: one paragraph (`text`) and the facts behind it (`to_dict`)."""

    text: str
    client: EndSummary
    server: EndSummary
    transport: str
    port: int
    application: str | None
    consulted: tuple[RuleCheck, ...]
    omitted: int  # consulted rules left out of `consulted` to bound its size
    deciding_rule_id: int
    deciding_rule_name: str | None
    deciding_action: str  # allow | deny (the rule's action; implicit deny is deny)
    effective_mode: str
    mode_reason: str
    action: str
    violation: bool
    deciding_tier: str | None = None  # None for the implicit deny
    deciding_hits: int | None = None  # the deciding rule's hit count, this connection included
    strict: bool = False
    tiers: tuple[TierStep, ...] = ()
    requests: tuple[RequestOutcome, ...] = ()  # the first few L7 requests' outcomes
    requests_total: int = 0
    staged: StagedSummary | None = None
    staged_only: bool = False  # this explanation is of a would-be (staged) verdict

    def to_dict(self) -> dict[str, Any]:
        return {
            "text": self.text,
            "connection": {
                "client": self.client.name,
                "server": self.server.name,
                "transport": self.transport,
                "port": self.port,
                "application": self.application,
            },
            "client": self.client.to_dict(),
            "server": self.server.to_dict(),
            "rules_consulted": [c.to_dict() for c in self.consulted],
            "rules_omitted": self.omitted,
            "deciding_rule": {
                "id": self.deciding_rule_id,
                "name": self.deciding_rule_name,
                "action": self.deciding_action,
                "implicit": self.deciding_rule_id == IMPLICIT_DENY_ID,
                "tier": self.deciding_tier,
                "hits": self.deciding_hits,
            },
            "tiers": [t.to_dict() for t in self.tiers],
            "modes": {
                "client": self.client.mode,
                "server": self.server.mode,
                "effective": self.effective_mode,
                "reason": self.mode_reason,
                "strict": self.strict,
            },
            "l7": {
                "requests": self.requests_total,
                "outcomes": [r.to_dict() for r in self.requests],
                "omitted": self.requests_total - len(self.requests),
            },
            "staged": self.staged.to_dict() if self.staged is not None else None,
            "would_be": self.staged_only,
            "outcome": {"action": self.action, "violation": self.violation},
        }


@dataclass(frozen=True, slots=True)
class Verdict:
    """The policy's decision on one connection.

    `action` is allow, deny, alert or learn; `violation` says whether the connection breaks
    the policy (an alert or a deny, or an explicit deny seen in discover mode). `rule_id` 0
    with `matched_rule` None is the implicit deny. `staged` is the would-be verdict with the
    policy's staged rules in force (None when the policy has none); it is never enforced.
    """

    action: str
    violation: bool
    rule_id: int
    rule_name: str | None
    matched_rule: Rule | None
    effective_mode: str
    client_mode: str | None
    server_mode: str | None
    client_groups: tuple[str, ...]
    server_groups: tuple[str, ...]
    explanation: Explanation
    staged: Verdict | None = None

    @property
    def allowed(self) -> bool:
        """Whether the connection may proceed (everything but a protect-mode deny)."""
        return self.action != DENY

    def to_event_verdict(self) -> EventVerdict:
        """The verdict as an event records it (explanation text plus its JSON detail)."""
        from podwall.core.events import EventVerdict

        return EventVerdict(
            action=self.action,
            rule_id=self.rule_id,
            rule_name=self.rule_name,
            mode=self.effective_mode,
            explanation=self.explanation.text,
            detail=self.explanation.to_dict(),
        )
