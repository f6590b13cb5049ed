"""Explanations in words: why a rule did not apply, and the paragraph that goes with a verdict.

The evaluator hands over facts (which criteria each consulted rule failed, the deciding
rule, both ends' modes); this module turns them into specific sentences that name the
failing criterion, so that a reader can fix the policy or the workload without guessing.
"""

from __future__ import annotations

from collections.abc import Sequence

from podwall.core.verdict import ALERT, ALLOW, DENY, LEARN, EndSummary, Explanation, RuleCheck
from podwall.policy.model import Rule

# Failed-criterion codes, in the order they are checked and reported.
DISABLED = "disabled"
FROM = "from"
TO = "to"
PORT = "port"
APP = "app"

MAX_CONSULTED = 32  # rules listed in an explanation; the rest are counted in `omitted`
MAX_NEAR_MISSES = 3  # rules named in the paragraph

MODE_REASON_LESS_RESTRICTIVE = "less restrictive side wins"
MODE_REASON_SAME = "both sides agree"
MODE_REASON_CLIENT_ONLY = "only the client has a mode"
MODE_REASON_SERVER_ONLY = "only the server has a mode"
MODE_REASON_DEFAULT = "policy default"


def connection_text(transport: str, port: int, app: str | None) -> str:
    """`tcp/6379 (redis)`, `tcp/6379 (application not identified)` or `icmp`."""
    if transport.startswith("icmp"):
        return transport
    where = f"{transport}/{port}"
    return f"{where} ({app})" if app else f"{where} (application not identified)"


def reasons(rule: Rule, failed: Sequence[str], transport: str, port: int, app: str | None) -> tuple[str, ...]:
    """One phrase per failed criterion of `rule`, naming what was required and what was seen.

    No square brackets: explanations end up in consoles that read them as markup.
    """
    out: list[str] = []
    for code in failed:
        if code == DISABLED:
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


def rule_check(rule: Rule, failed: Sequence[str], transport: str, port: int, app: str | None) -> RuleCheck:
    """A consulted rule with its failed criteria (empty: it matched)."""
    return RuleCheck(
        rule_id=rule.id,
        rule_name=rule.name,
        action=rule.action,
        matched=not failed,
        failed=tuple(failed),
        reasons=reasons(rule, failed, transport, port, app),
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


def _near_misses(consulted: Sequence[RuleCheck]) -> str:
    if not consulted:
        return ""
    # The rules that came closest (fewest failed criteria) are the ones a reader wants to see.
    ranked = sorted(consulted, key=lambda c: (len(c.failed), c.rule_id))[:MAX_NEAR_MISSES]
    parts = [f"{_rule_words(c.rule_id, c.rule_name)} does not apply: {'; '.join(c.reasons)}" for c in ranked]
    more = len(consulted) - len(ranked)
    tail = f" ({more} more rule(s) consulted)" if more > 0 else ""
    text = ". ".join(_cap(p) for p in parts)
    return f" {text}{tail}."


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
) -> Explanation:
    """Assemble the explanation of one verdict: the paragraph and the structured facts."""
    conn = connection_text(transport, port, app)
    pair = f"{client.name} → {server.name}"
    if deciding is None:
        first = f"No rule allows {pair} on {conn}: implicit deny (rule 0)."
        where = transport if transport.startswith("icmp") else f"{transport}/{port}"
        detail = _near_misses(consulted) or f" No rule covers these groups on {where}."
    else:
        verb = "allows" if deciding.action == ALLOW else "denies"
        first = f"{_cap(_rule_words(deciding.id, deciding.name))} {verb} {pair} on {conn}."
        detail = "" if deciding.action == ALLOW else _near_misses(consulted)
    modes = _modes_sentence(client, server, effective_mode, mode_reason)
    text = f"{first}{detail} {modes}: {_outcome_words(action, violation)}."
    listed = tuple(consulted[:MAX_CONSULTED])
    return Explanation(
        text=text,
        client=client,
        server=server,
        transport=transport,
        port=port,
        application=app,
        consulted=listed,
        omitted=len(consulted) - len(listed),
        deciding_rule_id=deciding.id if deciding is not None else 0,
        deciding_rule_name=deciding.name if deciding is not None else None,
        deciding_action=deciding.action if deciding is not None else DENY,
        effective_mode=effective_mode,
        mode_reason=mode_reason,
        action=action,
        violation=violation,
    )
