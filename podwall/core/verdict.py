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

    `failed` names the criteria that did not hold, among `disabled`, `from`, `to`, `port`
    and `app`; `reasons` says the same in words, one sentence fragment per criterion.
    """

    rule_id: int
    rule_name: str | None
    action: str
    matched: bool
    failed: tuple[str, ...] = ()
    reasons: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.rule_id,
            "name": self.rule_name,
            "action": self.action,
            "matched": self.matched,
            "failed": list(self.failed),
            "reasons": list(self.reasons),
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
            },
            "modes": {
                "client": self.client.mode,
                "server": self.server.mode,
                "effective": self.effective_mode,
                "reason": self.mode_reason,
            },
            "outcome": {"action": self.action, "violation": self.violation},
        }


@dataclass(frozen=True, slots=True)
class Verdict:
    """The policy's decision on one connection.

    `action` is allow, deny, alert or learn; `violation` says whether the connection breaks
    the policy (an alert or a deny, or an explicit deny seen in discover mode). `rule_id` 0
    with `matched_rule` None is the implicit deny.
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
