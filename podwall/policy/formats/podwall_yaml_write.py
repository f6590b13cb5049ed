"""Writing podwall's policy format: `dump_policy`, the stable form that `parse_policy` reads back.

Groups keep their order, rules are sorted by ID; short lists (ports, applications, members) and
criteria are written on one line, multi-line text as a block.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import yaml

from podwall.policy.l7model import L7Match
from podwall.policy.model import Criterion, Group, Policy, Rule, SensorConfig

__all__ = ["dump_policy"]

_YAML_STR = "tag:yaml.org,2002:str"


class _Flow(list[Any]):
    """A list written on one line: ports, applications."""


class _FlowMap(dict[str, Any]):
    """A mapping written on one line: criteria."""


class _Dumper(yaml.SafeDumper):
    pass


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar(_YAML_STR, value, style=style)


_Dumper.add_representer(_Flow, lambda d, v: d.represent_sequence("tag:yaml.org,2002:seq", list(v), flow_style=True))
_Dumper.add_representer(_FlowMap, lambda d, v: d.represent_mapping("tag:yaml.org,2002:map", dict(v), flow_style=True))
_Dumper.add_representer(str, _represent_str)


def _criterion(c: Criterion) -> _FlowMap:
    return _FlowMap(key=c.key, op=c.op, value=c.value)


def _sensors(config: SensorConfig) -> dict[str, Any]:
    return {"status": config.status, "settings": [_FlowMap(name=s.name, action=s.action) for s in config.settings]}


def _group(g: Group) -> dict[str, Any]:
    out: dict[str, Any] = {"name": g.name}
    if g.mode is not None:
        out["mode"] = g.mode
    if g.members:
        out["members"] = _Flow(g.members)
    else:
        out["criteria"] = [_criterion(c) for c in g.criteria]
    if g.dlp is not None:
        out["dlp"] = _sensors(g.dlp)
    if g.waf is not None:
        out["waf"] = _sensors(g.waf)
    if g.comment is not None:
        out["comment"] = g.comment
    return out


def _l7(m: L7Match) -> dict[str, Any]:
    # exclude_none drops unset alternatives (a path's exact/prefix/regex, a header's value/regex).
    data = m.model_dump(exclude_none=True)
    out: dict[str, Any] = {}
    for section, fields in data.items():
        body: dict[str, Any] = {}
        for key, value in fields.items():
            if not value:
                continue
            body[key] = [_FlowMap(v) if isinstance(v, dict) else v for v in value]
            if all(not isinstance(v, dict) for v in value):
                body[key] = _Flow(value)
        out[section] = body
    return out


def _rule(r: Rule, hits: Mapping[int, int] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"id": r.id}
    if r.name is not None:
        out["name"] = r.name
    out["from"] = r.from_
    out["to"] = r.to
    out["ports"] = _Flow(r.ports)
    out["applications"] = _Flow(r.applications)
    if r.l7 is not None:
        out["l7"] = _l7(r.l7)
    out["action"] = r.action
    if r.tier is not None:
        out["tier"] = r.tier
    if r.priority is not None:
        out["priority"] = r.priority
    out["origin"] = r.origin
    if r.disabled:
        out["disabled"] = True
    if r.staged:
        out["staged"] = True
    if hits is not None:
        out["hits"] = hits.get(r.id, 0)
    if r.comment is not None:
        out["comment"] = r.comment
    return out


def dump_policy(policy: Policy, *, hits: Mapping[int, int] | None = None) -> str:
    """The policy as one YAML document: groups in declaration order, then rules sorted by ID.

    `hits` (e.g. `PolicyEngine.hit_counts()`) adds each rule's hit count; reading the dump
    back ignores them.
    """
    spec: dict[str, Any] = {"defaultMode": policy.spec.defaultMode}
    if policy.spec.strict:
        spec["strict"] = True
    spec["groups"] = [_group(g) for g in policy.spec.groups]
    spec["rules"] = [_rule(r, hits) for r in sorted(policy.spec.rules, key=lambda r: r.id)]
    if not policy.spec.inspection.is_default():
        spec["inspection"] = policy.spec.inspection.model_dump(mode="json", exclude_defaults=True)
    doc = {
        "apiVersion": policy.apiVersion,
        "kind": policy.kind,
        "metadata": {"name": policy.metadata.name},
        "spec": spec,
    }
    return yaml.dump(doc, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=200, default_flow_style=False)
