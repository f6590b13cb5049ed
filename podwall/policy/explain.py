"""Explanations in words: why a rule did not apply, and the paragraph that goes with a verdict.

The evaluator hands over facts (which criteria each consulted rule failed, the deciding
rule, both ends' modes); this module turns them into specific sentences that name the
failing criterion, so that a reader can fix the policy or the workload without guessing.
"""

from __future__ import annotations

from collections.abc import Sequence

from podwall.core.verdict import (
    ALERT,
    ALLOW,
    DENY,
    LEARN,
    EndSummary,
    Explanation,
    RequestOutcome,
    RuleCheck,
    StagedSummary,
    TierStep,
)
from podwall.policy.model import Rule, tier_of

# Failed-criterion codes, in the order they are checked and reported.
STAGED = "staged"
DISABLED = "disabled"
FROM = "from"
TO = "to"
PORT = "port"
APP = "app"
L7 = "l7"

MAX_CONSULTED = 32  # rules listed in an explanation; the rest are counted in `omitted`
MAX_NEAR_MISSES = 3  # rules named in the paragraph

MODE_REASON_LESS_RESTRICTIVE = "less restrictive side wins"
MODE_REASON_SAME = "both sides agree"
MODE_REASON_CLIENT_ONLY = "only the client has a mode"
MODE_REASON_SERVER_ONLY = "only the server has a mode"
MODE_REASON_DEFAULT = "policy default"
MODE_REASON_STRICT = "strict: each side applies its own mode"
MAX_REQUESTS_SHOWN = 16  # L7 request outcomes listed in an explanation

TIER_WORDS = {
    "admin": "admin tier",
    "federated": "federated rules",
    "policy-as-code": "policy-as-code rules",
    "main": "user and learned rules",
    "baseline": "baseline tier",
}


def connection_text(transport: str, port: int, app: str | None) -> str:
    """`tcp/6379 (redis)`, `tcp/6379 (application not identified)` or `icmp`."""
    if transport.startswith("icmp"):
        return transport
    where = f"{transport}/{port}"
    return f"{where} ({app})" if app else f"{where} (application not identified)"


def reasons(
    rule: Rule, failed: Sequence[str], transport: str, port: int, app: str | None, l7_reason: str | None = None
) -> tuple[str, ...]:
    """One phrase per failed criterion of `rule`, naming what was required and what was seen.

    No square brackets: explanations end up in consoles that read them as markup.
    """
    out: list[str] = []
    for code in failed:
        if code == STAGED:
            out.append("the rule is staged (it counts for the would-be verdict only)")
        elif code == L7:
            out.append(l7_reason or "its l7 matchers do not admit the request")
        elif code == DISABLED:
            out.append("the rule is disabled")
        elif code == FROM:
            out.append(f"the client is not in group {rule.from_}")
        elif code == TO:
            out.append(f"the server is not in group {rule.to}")
        elif code == PORT:
            seen = transport if transport.startswith("icmp") else f"{transport}/{port}"
            out.append(f"{seen} is not among its ports ({', '.join(rule.ports)})")
        elif code == APP:
            wanted = ", ".join(rule.applications)
            if app is None:
                out.append(f"the application was not identified and the rule requires {wanted}")
            else:
                out.append(f"application {app} is not among its applications ({wanted})")
    return tuple(out)


def rule_check(
    rule: Rule, failed: Sequence[str], transport: str, port: int, app: str | None, l7_reason: str | None = None
) -> RuleCheck:
    """A consulted rule with its failed criteria (empty: it matched)."""
    return RuleCheck(
        rule_id=rule.id,
        rule_name=rule.name,
        action=rule.action,
        matched=not failed,
        failed=tuple(failed),
        reasons=reasons(rule, failed, transport, port, app, l7_reason),
        tier=tier_of(rule),
    )


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def _rule_words(rule_id: int, name: str | None) -> str:
    return f"rule {rule_id} ({name})" if name else f"rule {rule_id}"


def _modes_sentence(client: EndSummary, server: EndSummary, effective: str, reason: str) -> str:
    if client.mode is not None and server.mode is not None:
        text = (
            f"Client group {client.mode_group} is in {client.mode} mode, "
            f"server group {server.mode_group} in {server.mode} mode; effective mode {effective}"
        )
        if reason == MODE_REASON_LESS_RESTRICTIVE:
            text += " (the less restrictive side wins)"
        elif reason == MODE_REASON_STRICT and client.mode != server.mode:
            text += " (strict: each side applies its own mode, so the more restrictive one decides)"
        return text
    if server.mode is not None:
        return (
            f"Client {client.name} is in no workload group and has no mode, server group "
            f"{server.mode_group} is in {server.mode} mode; effective mode {effective}"
        )
    if client.mode is not None:
        return (
            f"Client group {client.mode_group} is in {client.mode} mode, server {server.name} is in no "
            f"workload group and has no mode; effective mode {effective}"
        )
    return f"Neither end is in a workload group with a mode; effective mode {effective} (the policy default)"


def _outcome_words(action: str, violation: bool) -> str:
    if action == ALLOW:
        return "violation recorded, connection allowed (discover mode does not block)" if violation else "allowed"
    if action == LEARN:
        return "not a violation in discover mode, allowed and learned"
    if action == ALERT:
        return "violation alerted"
    if action == DENY:
        return "violation blocked"
    return action


def near_misses(consulted: Sequence[RuleCheck], total: int | None = None) -> str:
    """The sentences naming the closest rules that did not apply (empty when there are none)."""
    consulted = [c for c in consulted if not c.matched]
    if not consulted:
        return ""
    # The rules that came closest (fewest failed criteria) are the ones a reader wants to see.
    ranked = sorted(consulted, key=lambda c: (len(c.failed), c.rule_id))[:MAX_NEAR_MISSES]
    parts = [f"{_rule_words(c.rule_id, c.rule_name)} does not apply: {'; '.join(c.reasons)}" for c in ranked]
    more = (total if total is not None else len(consulted)) - len(ranked)
    tail = f" ({more} more rule(s) consulted)" if more > 0 else ""
    text = ". ".join(_cap(p) for p in parts)
    return f" {text}{tail}."


def _tiers_sentence(tiers: Sequence[TierStep]) -> str:
    passes = [t for t in tiers if t.result == "passed"]
    if not passes:
        return ""
    return " " + " ".join(
        f"Rule {t.rule_id} passed the connection on from the {TIER_WORDS.get(t.tier, t.tier)} to the next tiers."
        for t in passes
    )


def _requests_sentence(requests: Sequence[RequestOutcome], total: int, deciding: Rule | None) -> str:
    if total == 0:
        return ""
    refused = [r for r in requests if not r.allowed]
    if not refused:
        rules = sorted({r.rule_id for r in requests})
        by = ", ".join(str(i) for i in rules)
        return f" All {total} L7 request(s) admitted (by rule {by})."
    first = refused[0]
    who = "no rule admits it" if first.rule_id == 0 else f"rule {first.rule_id} denies it"
    why = f": {first.reason}" if first.reason else ""
    others = len(refused) - 1
    tail = f"; {others} more request(s) not admitted" if others > 0 else ""
    return f" L7 request {first.index + 1} of {total} ({first.summary}) is not admitted, {who}{why}{tail}."


def _staged_sentence(staged: StagedSummary | None) -> str:
    if staged is None:
        return ""
    rule = "the implicit deny (rule 0)" if staged.rule_id == 0 else _rule_words(staged.rule_id, staged.rule_name)
    outcome = _outcome_words(staged.action, staged.violation)
    if not staged.differs:
        return f" With the staged rules in force it would be the same ({rule}: {outcome})."
    return f" With the staged rules in force it would be decided by {rule}: {outcome}."


def build_explanation(
    *,
    client: EndSummary,
    server: EndSummary,
    transport: str,
    port: int,
    app: str | None,
    consulted: Sequence[RuleCheck],
    deciding: Rule | None,
    effective_mode: str,
    mode_reason: str,
    action: str,
    violation: bool,
    consulted_total: int | None = None,
    tiers: Sequence[TierStep] = (),
    requests: Sequence[RequestOutcome] = (),
    requests_total: int = 0,
    hits: int | None = None,
    staged: StagedSummary | None = None,
    staged_only: bool = False,
    strict: bool = False,
    near_text: str | None = None,
) -> Explanation:
    """Assemble the explanation of one verdict: the paragraph and the structured facts.

    `consulted_total` counts every consulted rule when `consulted` holds only the first ones;
    `near_text` is `near_misses(consulted, consulted_total)` when the caller has it already.
    """
    conn = connection_text(transport, port, app)
    pair = f"{client.name} → {server.name}"
    total = consulted_total if consulted_total is not None else len(consulted)
    near = near_text if near_text is not None else near_misses(consulted, total)
    prefix = "Would be: " if staged_only else ""
    tier = tier_of(deciding) if deciding is not None else None
    if deciding is None:
        first = f"No rule allows {pair} on {conn}: implicit deny (rule 0)."
        where = transport if transport.startswith("icmp") else f"{transport}/{port}"
        detail = near or f" No rule covers these groups on {where}."
    else:
        verb = {"allow": "allows", "accept": "accepts", "deny": "denies"}.get(deciding.action, deciding.action)
        in_tier = f" in the {TIER_WORDS[tier]}" if tier in ("admin", "baseline") else ""
        first = f"{_cap(_rule_words(deciding.id, deciding.name))}{in_tier} {verb} {pair} on {conn}."
        detail = "" if deciding.allows else near
    detail += _tiers_sentence(tiers) + _requests_sentence(requests, requests_total, deciding)
    modes = _modes_sentence(client, server, effective_mode, mode_reason)
    text = f"{prefix}{first}{detail} {modes}: {_outcome_words(action, violation)}.{_staged_sentence(staged)}"
    listed = tuple(consulted[:MAX_CONSULTED])
    return Explanation(
        text=text,
        client=client,
        server=server,
        transport=transport,
        port=port,
        application=app,
        consulted=listed,
        omitted=total - len(listed),
        deciding_rule_id=deciding.id if deciding is not None else 0,
        deciding_rule_name=deciding.name if deciding is not None else None,
        deciding_action=deciding.action if deciding is not None else DENY,
        effective_mode=effective_mode,
        mode_reason=mode_reason,
        action=action,
        violation=violation,
        deciding_tier=tier,
        deciding_hits=hits,
        strict=strict,
        tiers=tuple(tiers),
        requests=tuple(requests[:MAX_REQUESTS_SHOWN]),
        requests_total=requests_total,
        staged=staged,
        staged_only=staged_only,
    )
