"""Policy evaluation: which groups an endpoint is in, which rule decides a connection, and the mode.

`PolicyEngine` compiles a policy once (`podwall.policy.compile`: entries keyed by group pair,
transport and port; `podwall.policy.membership`: group and zone resolution) and then decides
each connection by looking up the entries from the client's groups to the server's groups on
the server port and taking the first that matches in evaluation order:

    admin tier (Accept / Deny / Pass, by priority) → federated (by ID)
    → policy-as-code (by priority) → user and learned (first match by ID)
    → baseline tier (by priority) → the mode default (implicit deny, rule 0)

An admin `pass` rule skips the rest of the admin tier. A rule with `l7` matchers is judged
per L7 request: each request of the connection is decided on its own, and the connection is
admitted only when every request is; the first request not admitted decides the verdict.
When the flow carries no parsed request, rules with `l7` matchers cannot be decided and do
not match (the explanation says so). Disabled rules never match; staged rules match only in
the would-be evaluation (`Verdict.staged`), which is computed when the policy has any.

Modes: each end's mode is that of the workload groups (and zones) it belongs to (the most
restrictive if several). The effective mode is the less restrictive of the two ends
(NeuVector's mixed-mode rule) or, with `spec.strict`, the more restrictive (each side
applies its own mode); the one end that has a mode when the other has none; else
`spec.defaultMode`. An allowing match (allow, accept) is no violation in any mode; a deny or
no match is a violation that discover allows (a bare no-match there is learned), monitor
alerts and protect blocks.

Hit counts (`hits`) are kept per rule ID (0: the implicit deny) for enforced verdicts only.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from podwall.core.types import PROTO_TCP, PROTO_UDP, Endpoint, Observation, proto_name
from podwall.core.verdict import (
    ALERT,
    ALLOW,
    DENY,
    LEARN,
    EndSummary,
    RequestOutcome,
    RuleCheck,
    StagedSummary,
    TierStep,
    Verdict,
)
from podwall.policy.compile import CompiledPolicy, Entry
from podwall.policy.explain import (
    APP,
    DISABLED,
    FROM,
    L7,
    MAX_CONSULTED,
    MAX_REQUESTS_SHOWN,
    MODE_REASON_CLIENT_ONLY,
    MODE_REASON_DEFAULT,
    MODE_REASON_LESS_RESTRICTIVE,
    MODE_REASON_SAME,
    MODE_REASON_SERVER_ONLY,
    MODE_REASON_STRICT,
    PORT,
    STAGED,
    TO,
    build_explanation,
    near_misses,
    rule_check,
)
from podwall.policy.l7match import describe
from podwall.policy.membership import Membership, Resolver, is_external, is_node
from podwall.policy.model import MODE_RANK, TIER_ORDER, Policy, Rule

__all__ = ["DNS_PORT", "Membership", "PolicyEngine", "is_external", "is_node", "normalize_app"]

DNS_PORT = 53
_CACHE_MAX = 65536
_UNIDENTIFIED = frozenset({"", "unknown"})
NO_REQUEST = "no L7 request was parsed on this connection, so its l7 matchers cannot be decided"


def normalize_app(app: str | None) -> str | None:
    """The application as rules compare it: lower case; None for an unidentified one (`unknown` too)."""
    if app is None:
        return None
    name = app.strip().lower()
    return None if name in _UNIDENTIFIED else name


@dataclass(slots=True)
class _Walk:
    """The result of walking the candidates for one request (or the connection without one)."""

    entry: Entry | None
    checks: list[tuple[Entry, tuple[str, ...], str | None]]  # failed entries before the decision
    passes: list[Entry]


class PolicyEngine:
    """Decides connections against one policy; build once per policy version, reuse for every flow."""

    def __init__(self, policy: Policy, *, dns_service_groups: set[str] | None = None) -> None:
        """`dns_service_groups`: servers in these groups have unidentified port-53 traffic read as
        `dns`, as the learner does, so that learned `dns` rules match such connections."""
        self.policy = policy
        self.dns_service_groups = frozenset(dns_service_groups or ())
        self.default_mode: str = policy.spec.defaultMode
        self.strict: bool = policy.spec.strict
        self.rules: tuple[Rule, ...] = tuple(sorted(policy.spec.rules, key=lambda r: r.id))
        self._by_id = {r.id: r for r in self.rules}
        self.compiled = CompiledPolicy(self.rules)
        self._resolver = Resolver(list(policy.spec.groups), self.default_mode)
        self._memo: dict[tuple[int, int, int, int], tuple[Entry, ...]] = {}
        # The rules an explanation lists depend only on the connection's class (both ends'
        # groups, transport, port, application) when no L7 request is judged, so they are
        # computed once per class: explaining stays cheap however many rules are near misses.
        self._consulted_memo: dict[tuple[object, ...], tuple[list[RuleCheck], int, str]] = {}
        self.hits: dict[int, int] = {}

    # -- lookups ---------------------------------------------------------------------------

    def candidates(self, proto: int, port: int) -> tuple[Rule, ...]:
        """The rules whose ports cover (proto, server port), by ID (disabled ones included)."""
        found = {r.id: r for r in self.rules if any(s.matches(proto, port) for s in r.port_specs)}
        return tuple(found[i] for i in sorted(found))

    def membership(self, endpoint: Endpoint, server_name: str | None = None) -> Membership:
        """Groups, zones and mode of an endpoint (cached per endpoint identity)."""
        return self._resolver.resolve(endpoint, server_name)

    def member_groups(self, endpoint: Endpoint) -> list[str]:
        """Every group the endpoint is in: policy groups and zones in declaration order, then reserved ones."""
        return list(self.membership(endpoint).ordered)

    def group_of_mode(self, endpoint: Endpoint) -> str | None:
        """The endpoint's mode: the most restrictive mode of its workload groups, None if it has none."""
        return self.membership(endpoint).mode

    mode_of = group_of_mode

    def rule(self, rule_id: int) -> Rule | None:
        return self._by_id.get(rule_id)

    def hit_counts(self) -> dict[int, int]:
        """Enforced decisions per rule ID so far (0 is the implicit deny)."""
        return dict(self.hits)

    def reset_hits(self) -> None:
        self.hits.clear()

    # -- decisions -------------------------------------------------------------------------

    def effective_mode(self, client_mode: str | None, server_mode: str | None) -> tuple[str, str]:
        """The mode that decides, and why (see module docstring)."""
        if client_mode is not None and server_mode is not None:
            if self.strict:
                more = client_mode if MODE_RANK[client_mode] >= MODE_RANK[server_mode] else server_mode
                return more, MODE_REASON_STRICT
            if client_mode == server_mode:
                return client_mode, MODE_REASON_SAME
            less = client_mode if MODE_RANK[client_mode] < MODE_RANK[server_mode] else server_mode
            return less, MODE_REASON_LESS_RESTRICTIVE
        if client_mode is not None:
            return client_mode, MODE_REASON_CLIENT_ONLY
        if server_mode is not None:
            return server_mode, MODE_REASON_SERVER_ONLY
        return self.default_mode, MODE_REASON_DEFAULT

    def _candidates(self, cm: Membership, sm: Membership, proto: int, port: int) -> tuple[Entry, ...]:
        key = (cm.token, sm.token, proto, port)
        found = self._memo.get(key)
        if found is None:
            found = self.compiled.candidates(cm.ordered, sm.ordered, proto, port)
            if len(self._memo) >= _CACHE_MAX:
                self._memo.clear()
            self._memo[key] = found
        return found

    def _app(self, obs: Observation, sm: Membership) -> str | None:
        app = normalize_app(obs.app)
        if (
            app is None
            and obs.server_port == DNS_PORT
            and self.dns_service_groups
            and obs.proto in (PROTO_TCP, PROTO_UDP)
            and (obs.server.group in self.dns_service_groups or not self.dns_service_groups.isdisjoint(sm.groups))
        ):
            return "dns"
        return app

    @staticmethod
    def _walk(
        cands: tuple[Entry, ...], app: str | None, req: Mapping[str, object] | None, staged: bool, explain: bool
    ) -> _Walk:
        checks: list[tuple[Entry, tuple[str, ...], str | None]] = []
        passes: list[Entry] = []
        skip_admin = False
        for e in cands:
            if skip_admin and e.tier == "admin":
                continue
            failed: tuple[str, ...] = ()
            why: str | None = None
            if e.staged and not staged:
                failed += (STAGED,)
            if e.disabled:
                failed += (DISABLED,)
            if e.apps is not None and (app is None or app not in e.apps):
                failed += (APP,)
            if not failed and e.l7 is not None:
                why = NO_REQUEST if req is None else e.l7.why_not(req)
                if why is not None:
                    failed = (L7,)
            if failed:
                if explain:
                    checks.append((e, failed, why))
                continue
            if e.action == "pass":
                passes.append(e)
                skip_admin = True
                continue
            return _Walk(e, checks, passes)
        return _Walk(None, checks, passes)

    def evaluate(self, obs: Observation) -> Verdict:
        """Decide one connection (see module docstring); the verdict carries its explanation."""
        cm = self.membership(obs.client)
        sm = self.membership(obs.server, obs.server_name)
        app = self._app(obs, sm)
        cands = self._candidates(cm, sm, obs.proto, obs.server_port)
        staged: Verdict | None = None
        if self.compiled.has_staged:
            staged = self._decide(obs, cm, sm, app, cands, staged=True, would_be=None)
        return self._decide(obs, cm, sm, app, cands, staged=False, would_be=staged)

    def _decide(
        self,
        obs: Observation,
        cm: Membership,
        sm: Membership,
        app: str | None,
        cands: tuple[Entry, ...],
        *,
        staged: bool,
        would_be: Verdict | None,
    ) -> Verdict:
        requests = obs.requests
        per_request = bool(requests) and any(e.l7 is not None for e in cands)
        outcomes: list[RequestOutcome] = []
        if per_request:
            walks = [self._walk(cands, app, req, staged, True) for req in requests]
            refused = [i for i, w in enumerate(walks) if w.entry is None or not w.entry.allows]
            decisive = walks[refused[0]] if refused else walks[0]
            # Explanations show a bounded number of requests: the refused ones first, so the
            # request that decided is never among those left out.
            shown = refused[:MAX_REQUESTS_SHOWN]
            taken = set(shown)
            for i in range(len(walks)):
                if len(shown) >= MAX_REQUESTS_SHOWN:
                    break
                if i not in taken:
                    shown.append(i)
            outcomes = [_outcome(i, requests[i], walks[i]) for i in sorted(shown)]
            decided = {w.entry.rule.id if w.entry is not None else 0 for w in walks}
        else:
            decisive = self._walk(cands, app, None, staged, True)
            decided = {decisive.entry.rule.id if decisive.entry is not None else 0}
        matched = decisive.entry

        effective, reason = self.effective_mode(cm.mode, sm.mode)
        if matched is not None and matched.allows:
            action, violation = ALLOW, False
        elif effective == "discover":
            # Discover mode never blocks; an explicit deny is still a violation worth recording.
            action, violation = (ALLOW, True) if matched is not None else (LEARN, False)
        elif effective == "monitor":
            action, violation = ALERT, True
        else:
            action, violation = DENY, True

        rule = matched.rule if matched is not None else None
        hits: int | None = None
        if not staged:
            for rule_id in decided:
                self.hits[rule_id] = self.hits.get(rule_id, 0) + 1
            hits = self.hits.get(rule.id if rule is not None else 0)

        transport = proto_name(obs.proto)
        port = obs.server_port
        if per_request:
            consulted, total = self._consulted(decisive, matched, cm, sm, obs.proto, port, app, transport)
            near = near_misses(consulted, total)
        else:
            key = (cm.token, sm.token, obs.proto, port, app, staged)
            memo = self._consulted_memo.get(key)
            if memo is None:
                listed, counted = self._consulted(decisive, matched, cm, sm, obs.proto, port, app, transport)
                memo = (listed, counted, near_misses(listed, counted))
                if len(self._consulted_memo) >= _CACHE_MAX:
                    self._consulted_memo.clear()
                self._consulted_memo[key] = memo
            consulted, total, near = memo
        summary = None
        if would_be is not None:
            differs = would_be.action != action or would_be.rule_id != (rule.id if rule is not None else 0)
            summary = StagedSummary(would_be.action, would_be.violation, would_be.rule_id, would_be.rule_name, differs)
        explanation = build_explanation(
            client=EndSummary(obs.client.group, obs.client.ip, obs.client.port, cm.ordered, cm.mode, cm.mode_group),
            server=EndSummary(obs.server.group, obs.server.ip, port, sm.ordered, sm.mode, sm.mode_group),
            transport=transport,
            port=port,
            app=app,
            consulted=consulted,
            consulted_total=total,
            deciding=rule,
            effective_mode=effective,
            mode_reason=reason,
            action=action,
            violation=violation,
            tiers=_tiers(decisive, cands, matched),
            requests=outcomes,
            requests_total=len(requests) if per_request else 0,
            hits=hits,
            staged=summary,
            staged_only=staged,
            strict=self.strict,
            near_text=near,
        )
        return Verdict(
            action=action,
            violation=violation,
            rule_id=rule.id if rule is not None else 0,
            rule_name=rule.name if rule is not None else None,
            matched_rule=rule,
            effective_mode=effective,
            client_mode=cm.mode,
            server_mode=sm.mode,
            client_groups=cm.ordered,
            server_groups=sm.ordered,
            explanation=explanation,
            staged=would_be,
        )

    def _consulted(
        self,
        walk: _Walk,
        matched: Entry | None,
        cm: Membership,
        sm: Membership,
        proto: int,
        port: int,
        app: str | None,
        transport: str,
    ) -> tuple[list[RuleCheck], int]:
        """The rules an explanation lists (the first MAX_CONSULTED in order) and how many there were.

        Besides the candidates that failed, rules towards the server's groups on this port from
        other groups (failed `from`) are near misses; for a denial, rules between these very
        groups on other ports (failed `port`) too.
        """
        limit = matched.order if matched is not None else None
        seen: set[int] = set()
        items: list[tuple[int, RuleCheck]] = []
        for e, failed, why in walk.checks:
            if e.rule.id not in seen:
                seen.add(e.rule.id)
                items.append((e.order, rule_check(e.rule, failed, transport, port, app, why)))
        for e in walk.passes:
            seen.add(e.rule.id)
            items.append((e.order, rule_check(e.rule, (), transport, port, app)))
        total_towards = self.compiled.count_towards(sm.ordered, proto, port, limit)
        walked_before = sum(1 for e, _, _ in walk.checks if limit is None or e.order < limit) + len(walk.passes)
        near_total = max(0, total_towards - walked_before)
        budget = MAX_CONSULTED
        for entries in self.compiled.towards(sm.ordered, proto, port):
            taken = 0
            for e in entries:
                if limit is not None and e.order >= limit:
                    break
                if e.rule.id in seen or e.from_ in cm.groups:
                    continue
                seen.add(e.rule.id)
                items.append((e.order, rule_check(e.rule, _failed(e, cm, sm, app), transport, port, app)))
                taken += 1
                if taken >= budget:
                    break
        extra = 0
        if matched is None or not matched.allows:
            # Rules written for these very groups that missed on the port explain most denials.
            for f in cm.ordered:
                for t in sm.ordered:
                    for e in self.compiled.between(f, t):
                        if limit is not None and e.order >= limit:
                            break
                        if e.rule.id in seen:
                            continue
                        seen.add(e.rule.id)
                        extra += 1
                        if extra <= budget:
                            failed = _failed(e, cm, sm, app, port_ok=False)
                            items.append((e.order, rule_check(e.rule, failed, transport, port, app)))
        items.sort(key=lambda item: item[0])
        listed = [c for _, c in items]
        total = len(walk.checks) + len(walk.passes) + near_total + extra
        return listed, max(total, len(listed))


def _failed(e: Entry, cm: Membership, sm: Membership, app: str | None, port_ok: bool = True) -> tuple[str, ...]:
    failed: list[str] = []
    if e.disabled:
        failed.append(DISABLED)
    if not port_ok:
        failed.append(PORT)
    if e.from_ not in cm.groups:
        failed.append(FROM)
    if e.to not in sm.groups:
        failed.append(TO)
    if e.apps is not None and (app is None or app not in e.apps):
        failed.append(APP)
    return tuple(failed)


def _outcome(index: int, req: Mapping[str, object], walk: _Walk) -> RequestOutcome:
    e = walk.entry
    allowed = e is not None and e.allows
    reason: str | None = None
    if not allowed:
        l7_misses = [why for _, failed, why in walk.checks if L7 in failed and why]
        if e is None:
            reason = l7_misses[0] if l7_misses else "no rule covers it"
        else:
            reason = f"it matches deny rule {e.rule.id}"
    return RequestOutcome(
        index=index,
        protocol=str(req.get("protocol")),
        summary=describe(req),
        rule_id=e.rule.id if e is not None else 0,
        rule_name=e.rule.name if e is not None else None,
        allowed=allowed,
        reason=reason,
    )


def _tiers(walk: _Walk, cands: Sequence[Entry], matched: Entry | None) -> list[TierStep]:
    counts: dict[str, int] = {}
    for e, _, _ in walk.checks:
        counts[e.tier] = counts.get(e.tier, 0) + 1
    for e in walk.passes:
        counts[e.tier] = counts.get(e.tier, 0) + 1
    if matched is not None:
        counts[matched.tier] = counts.get(matched.tier, 0) + 1
    steps: list[TierStep] = []
    passed = {e.tier: e.rule.id for e in walk.passes}
    for tier in TIER_ORDER:
        if tier not in counts:
            continue
        if matched is not None and tier == matched.tier:
            steps.append(TierStep(tier, counts[tier], "matched", matched.rule.id))
            return steps
        if tier in passed:
            steps.append(TierStep(tier, counts[tier], "passed", passed[tier]))
        else:
            steps.append(TierStep(tier, counts[tier], "no match"))
    steps.append(TierStep("default", 0, "default", 0))
    return steps
