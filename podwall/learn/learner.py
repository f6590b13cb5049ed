"""Discover mode: turn observed connections into a proposed whitelist policy, as NeuVector learns.

`learn` is deterministic: the same observations in any order give the same policy. It
works from `Observation`s and the policy model only (never from kernel state), and its
output is an ordinary `Policy` that a user reviews, edits and accepts. docs/policy.md
("Learning") states the rules; in short:

- one allow rule per (client group, server group, application) for identified
  applications, listing the ports it was seen on;
- one port rule per (client group, server group) for TCP connections whose application
  was not identified, with `applications: [any]`; a port that also carried an identified
  application belongs to the application rule only;
- more than `MAX_LEARNED_PORTS` distinct ports between a pair collapse to `ports: [any]`;
- UDP without an identified application is not learned, except DNS (port 53) to a
  server group named in `dns_service_groups`, which is learned as `dns`;
- ICMP is learned as `ports: [icmp]` in the pair's port rule;
- a connection between two non-workloads (external, nodes, unmanaged addresses) is not
  learned: there is no workload to protect on either side.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from typing import cast

from podwall.core.types import PROTO_ICMP, PROTO_ICMPV6, PROTO_TCP, PROTO_UDP, Endpoint, Observation
from podwall.policy.evaluate import DNS_PORT, PolicyEngine, is_external, is_node, normalize_app
from podwall.policy.model import LEARNED_IDS, MODES, Criterion, Group, Metadata, Mode, Policy, PolicySpec, Rule
from podwall.policy.specs import check_app_name, check_group_name

MAX_LEARNED_PORTS = 20  # beyond this many distinct ports between two groups, learn `any`
DEFAULT_NAME = "learned"

_WORKLOAD = "workload"
_EXTERNAL = "external"
_NODES = "nodes"
_UNMANAGED = "unmanaged"

_ICMP_KEY = (PROTO_ICMP, 0)
_PROTO_ORDER = {PROTO_TCP: 0, PROTO_UDP: 1, PROTO_ICMP: 2}
_TRANSPORT = {PROTO_TCP: "tcp", PROTO_UDP: "udp"}

PortKey = tuple[int, int]  # (proto, server port); ICMP is (PROTO_ICMP, 0)


@dataclass(frozen=True, slots=True)
class _End:
    """How learning names one end: a group name, what it is, and the group to define for it."""

    name: str
    kind: str
    group: Group | None  # None for reserved groups


def _safe(text: str) -> str:
    return "".join(ch if (ch.isascii() and ch.isalnum()) or ch in "._-" else "-" for ch in text).strip("-.") or "x"


def _workload_end(ep: Endpoint, mode: Mode) -> _End:
    service = ep.service or (ep.workload or "").rpartition("/")[2] or "unnamed"
    namespace = ep.namespace
    name = f"nv.{service}.{namespace}" if namespace else f"nv.{service}"
    try:
        check_group_name(name)
    except ValueError:
        name = f"nv.{_safe(service)}.{_safe(namespace)}" if namespace else f"nv.{_safe(service)}"
    criteria = [Criterion(key="service", op="=", value=service)]
    if namespace:
        criteria.append(Criterion(key="namespace", op="=", value=namespace))
    return _End(name, _WORKLOAD, Group(name=name, criteria=criteria, mode=mode))


def _end(ep: Endpoint, mode: Mode) -> _End | None:
    """How learning names the endpoint; None when it cannot be named (no workload and no valid IP)."""
    if ep.workload is not None:
        return _workload_end(ep, mode)
    if is_external(ep):
        return _End("external", _EXTERNAL, None)
    if is_node(ep):
        return _End("nodes", _NODES, None)
    # An internal address with no workload behind it: an address group named by the address.
    # Address groups have no mode; the workload at the other end decides the mode.
    try:
        ip = str(ipaddress.ip_address(ep.ip))
    except ValueError:
        return None
    group = Group(name=ip, criteria=[Criterion(key="address", op="=", value=ip)])
    return _End(ip, _UNMANAGED, group)


def _port_text(key: PortKey) -> str:
    proto, port = key
    if proto == PROTO_ICMP:
        return "icmp"
    return f"{_TRANSPORT[proto]}/{port}"


def _sorted_ports(keys: Iterable[PortKey]) -> list[str]:
    return [_port_text(k) for k in sorted(keys, key=lambda k: (_PROTO_ORDER[k[0]], k[1]))]


def _is_dns_server(ep: Endpoint, end: _End, dns_groups: set[str]) -> bool:
    return end.name in dns_groups or ep.group in dns_groups or any(g in dns_groups for g in ep.groups)


def _port_label(ports: list[str]) -> str:
    if len(ports) <= 3:
        return ",".join(ports)
    return f"{ports[0]} and {len(ports) - 1} more ports"


@dataclass(frozen=True, slots=True)
class _Proposal:
    """A rule before it has an ID: the sort key fixes the ID order."""

    from_: str
    to: str
    app: str  # `any` for a port rule
    ports: tuple[str, ...]
    name: str

    @property
    def key(self) -> tuple[str, str, str, tuple[str, ...]]:
        return (self.from_, self.to, self.app, self.ports)


def _pair_proposals(src: str, dst: str, apps: dict[str, set[PortKey]], unknown: set[PortKey]) -> list[_Proposal]:
    seen_with_app: set[PortKey] = set().union(*apps.values()) if apps else set()
    unknown = unknown - seen_with_app  # an application rule replaces a port rule on its ports
    distinct = {k for k in seen_with_app | unknown if k[0] in (PROTO_TCP, PROTO_UDP)}
    pair = f"{src} → {dst}"
    out: list[_Proposal] = []
    if len(distinct) > MAX_LEARNED_PORTS:
        if any(k[0] == PROTO_TCP for k in unknown):
            # Unidentified traffic on many ports: only `any` on any port describes it.
            return [_Proposal(src, dst, "any", ("any",), f"{pair} any")]
        for app in sorted(apps):
            out.append(_Proposal(src, dst, app, ("any",), f"{pair} {app}"))
        if _ICMP_KEY in unknown:
            out.append(_Proposal(src, dst, "any", ("icmp",), f"{pair} icmp"))
        return out
    for app in sorted(apps):
        out.append(_Proposal(src, dst, app, tuple(_sorted_ports(apps[app])), f"{pair} {app}"))
    if unknown:
        ports = _sorted_ports(unknown)
        out.append(_Proposal(src, dst, "any", tuple(ports), f"{pair} {_port_label(ports)}"))
    return out


def _covered_by(existing: Policy) -> PolicyEngine:
    # Disabled rules count as decided too: re-learning a rule the user switched off would undo that.
    enabled = [r.model_copy(update={"disabled": False}) for r in existing.spec.rules]
    probe = Policy(
        metadata=existing.metadata,
        spec=PolicySpec(defaultMode=existing.spec.defaultMode, groups=existing.spec.groups, rules=enabled),
    )
    return PolicyEngine(probe)


def learn(
    observations: Iterable[Observation],
    *,
    mode: str = "monitor",
    dns_service_groups: set[str] | None = None,
    existing: Policy | None = None,
    name: str | None = None,
) -> Policy:
    """Propose a policy that allows the observed connections (see the module docstring).

    New groups get `mode`. With `existing`, its groups and rules are kept unchanged and only
    connections that no existing rule decides (allow, deny, or disabled) are learned, with IDs
    after the highest learned ID in it; a learned group is added for a workload only if a new
    rule names it or the workload is in none of the existing workload groups.
    """
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}: expected one of {', '.join(MODES)}")
    group_mode = cast(Mode, mode)
    dns_groups = dns_service_groups or set()
    engine = _covered_by(existing) if existing is not None else None

    groups: dict[str, Group] = {}
    # With an existing policy, a workload already in one of its workload groups keeps that
    # group's mode: its learned group is added only if a new rule needs it.
    modeless: set[str] = set()
    app_conns: dict[tuple[str, str], dict[str, set[PortKey]]] = {}
    port_conns: dict[tuple[str, str], set[PortKey]] = {}
    ends: dict[tuple[object, ...], _End | None] = {}

    def end_of(ep: Endpoint) -> _End | None:
        # Building groups validates them; do it once per endpoint identity, not per connection.
        key = (ep.ip, ep.workload, ep.service, ep.namespace, ep.kind, ep.group, ep.groups)
        if key not in ends:
            ends[key] = _end(ep, group_mode)
        return ends[key]

    for obs in observations:
        client, server = end_of(obs.client), end_of(obs.server)
        if client is None or server is None:
            continue
        for ep, end in ((obs.client, client), (obs.server, server)):
            if end.kind == _WORKLOAD and end.group is not None:
                groups.setdefault(end.name, end.group)
                if engine is None or engine.group_of_mode(ep) is None:
                    modeless.add(end.name)
        if client.kind != _WORKLOAD and server.kind != _WORKLOAD:
            continue
        app = normalize_app(obs.app)
        if app is not None:
            try:
                app = check_app_name(app)
            except ValueError:
                app = None
        proto, port = obs.proto, obs.server_port
        if proto in (PROTO_ICMP, PROTO_ICMPV6):
            key: PortKey = _ICMP_KEY
            app = None
        elif proto in (PROTO_TCP, PROTO_UDP) and 1 <= port <= 65535:
            key = (proto, port)
            if app is None and port == DNS_PORT and _is_dns_server(obs.server, server, dns_groups):
                app = "dns"
            if app is None and proto == PROTO_UDP:
                continue
        else:
            continue  # other transports have no port spec to learn them with
        if engine is not None:
            probe = obs if app == normalize_app(obs.app) else Observation(obs.client, obs.server, proto, port, app)
            if engine.evaluate(probe).rule_id != 0:
                continue
        pair = (client.name, server.name)
        for end in (client, server):
            if end.kind == _UNMANAGED and end.group is not None:
                groups.setdefault(end.name, end.group)
        if app is None:
            port_conns.setdefault(pair, set()).add(key)
        else:
            app_conns.setdefault(pair, {}).setdefault(app, set()).add(key)

    proposals: list[_Proposal] = []
    for src, dst in sorted(set(app_conns) | set(port_conns)):
        proposals.extend(_pair_proposals(src, dst, app_conns.get((src, dst), {}), port_conns.get((src, dst), set())))
    proposals.sort(key=lambda p: p.key)

    kept_groups = list(existing.spec.groups) if existing is not None else []
    kept_rules = list(existing.spec.rules) if existing is not None else []
    known_groups = {g.name for g in kept_groups}
    referenced = {p.from_ for p in proposals} | {p.to for p in proposals}
    new_groups = [groups[n] for n in sorted(groups) if n not in known_groups and (n in referenced or n in modeless)]
    learned_ids = [r.id for r in kept_rules if r.id >= LEARNED_IDS[0]]
    next_id = max(learned_ids, default=LEARNED_IDS[0] - 1) + 1
    if next_id + len(proposals) - 1 > LEARNED_IDS[1]:
        raise ValueError(f"learned rule IDs exhausted: {len(proposals)} new rules do not fit below 99999")
    taken_names = {r.name for r in kept_rules if r.name}
    new_rules: list[Rule] = []
    for offset, p in enumerate(proposals):
        rule_id = next_id + offset
        rule_name = p.name if p.name not in taken_names else f"{p.name} #{rule_id}"
        taken_names.add(rule_name)
        new_rules.append(
            Rule(
                id=rule_id,
                name=rule_name,
                from_=p.from_,
                to=p.to,
                ports=list(p.ports),
                applications=[p.app],
                action="allow",
                origin="learned",
            )
        )
    return Policy(
        metadata=Metadata(name=name or (existing.metadata.name if existing is not None else DEFAULT_NAME)),
        spec=PolicySpec(
            defaultMode=existing.spec.defaultMode if existing is not None else group_mode,
            groups=kept_groups + new_groups,
            rules=kept_rules + new_rules,
        ),
    )
