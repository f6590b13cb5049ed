"""NeuVector `NvSecurityRule` / `NvClusterSecurityRule` custom resources <-> podwall policies.

`read_neuvector` turns the text of one or many CRs (single documents, `kind: List` exports
or `Nv*SecurityRuleList` dumps) into a validated `Policy`, plus the per-target data the model
has no place for (process and file rules), or raises one `InputError` listing every fault,
located by file, document, object and field path: a bad file is rejected whole.
`export_neuvector` writes a policy back as NeuVector exports it: a `kind: List` with one CR
per group. docs/neuvector.md describes the format and every mapping decision.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml
from pydantic import ValidationError

from podwall.core.errors import InputError, Location, Problem
from podwall.inventory.fields import FieldReader
from podwall.inventory.kube import Document
from podwall.policy.formats.neuvector_maps import (
    APP_TO_NV,
    MODE_NAMES,
    NO_MODE,
    NV_MODES,
    NV_ONLY_APPS,
    NV_TO_APP,
    PODWALL_ONLY_APPS,
    import_apps,
    import_ports,
)
from podwall.policy.formats.neuvector_yaml import read_documents
from podwall.policy.model import (
    POLICY_AS_CODE_IDS,
    Criterion,
    Group,
    Metadata,
    Mode,
    Policy,
    PolicySpec,
    Rule,
    SensorConfig,
)
from podwall.policy.specs import RESERVED_GROUPS, check_group_name

NV_API_VERSION = "neuvector.com/v1"
RULE_KIND = "NvSecurityRule"
CLUSTER_RULE_KIND = "NvClusterSecurityRule"
RULE_KINDS = frozenset({RULE_KIND, CLUSTER_RULE_KIND})
LIST_KINDS = frozenset({"List", "NvSecurityRuleList", "NvClusterSecurityRuleList"})
CLUSTER_NAMESPACE = "default"  # where NeuVector puts cluster-scoped CRs in its exports

_GLOB = re.compile(r"[*?]")
_OPS = ("=", "!=", "contains", "prefix", "regex", "!regex")
_NS_KEYS = ("domain", "namespace")
_OBJECT_FIELDS = ("apiVersion", "kind", "metadata", "spec")
_SPEC_FIELDS = ("target", "ingress", "egress", "process", "process_profile", "file", "dlp", "waf")
_SELECTOR_FIELDS = (
    "name",
    "comment",
    "criteria",
    "original_name",
    "mon_metric",
    "grp_sess_cur",
    "grp_sess_rate",
    "grp_band_width",
)
_RULE_FIELDS = ("name", "action", "applications", "ports", "priority", "selector")
_PROCESS_FIELDS = ("name", "path", "action", "allow_update")
_FILE_FIELDS = ("filter", "recursive", "behavior", "app")


# --- public types --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TargetExtras:
    """What a target CR carries beyond network policy, kept as read so that export writes it back.

    `process` and `file` are NeuVector's process and file-access rules, `process_profile` its
    baseline setting; `nodes_mode` is the `policymode` of the reserved `nodes` group, which
    governs NeuVector's process rules only (it never blocks network connections of nodes).
    """

    process: tuple[dict[str, Any], ...] = ()
    file: tuple[dict[str, Any], ...] = ()
    process_profile: dict[str, Any] | None = None
    nodes_mode: str | None = None


@dataclass(frozen=True, slots=True)
class NeuVectorImport:
    """The result of reading NeuVector CRs: the policy and, per target group, its extras."""

    policy: Policy
    extras: Mapping[str, TargetExtras]


# --- import --------------------------------------------------------------------------------------


@dataclass(slots=True)
class _GroupAcc:
    """One group as seen so far, across the CRs that mention it."""

    name: str
    criteria: list[Criterion]
    where: Location
    comment: str | None = None
    mode: Mode | None = None
    mode_where: Location | None = None
    dlp: SensorConfig | None = None
    waf: SensorConfig | None = None
    target_where: Location | None = None
    target_rank: int | None = None  # the order in which groups first appeared as targets


@dataclass(slots=True)
class _RuleAcc:
    data: dict[str, Any]
    where: Location


@dataclass(slots=True)
class _State:
    problems: list[Problem] = field(default_factory=list)
    groups: dict[str, _GroupAcc] = field(default_factory=dict)
    rules: list[_RuleAcc] = field(default_factory=list)
    rule_names: dict[str, Location] = field(default_factory=dict)
    extras: dict[str, TargetExtras] = field(default_factory=dict)
    objects: int = 0


def _objects(doc: Document, problems: list[Problem]) -> Iterable[tuple[Any, FieldReader]]:
    """The objects of a document with a reader each: the document itself, or each item of a List."""
    r = FieldReader(problems, doc.file, doc.index)
    data = doc.data
    if isinstance(data, dict) and data.get("kind") in LIST_KINDS:
        items = r.sequence(data.get("items"), "items")
        for i, item in enumerate(items):
            yield item, r.child(None, f"items[{i}]")
    else:
        yield data, r


def _is_glob_free(value: str) -> bool:
    return _GLOB.search(value) is None


def _import_criteria(raw: list[tuple[str, str, str, str]], r: FieldReader) -> list[Criterion] | None:
    """NeuVector criteria (key, op, value, path) as podwall criteria; None after recording faults."""
    ns_values = [v for k, op, v, _ in raw if k in _NS_KEYS and op == "="]
    has_ns = any(k in _NS_KEYS for k, _, _, _ in raw)
    services = [1 for k, _, _, _ in raw if k == "service"]
    out: list[Criterion] = []
    added: list[Criterion] = []
    ok = True
    for key, op, value, path in raw:
        if op not in _OPS:
            r.fail(f"{path}.op", f"unknown operator {op!r}: expected one of {', '.join(_OPS)}")
            ok = False
            continue
        new_key, new_value = key, value
        if key in _NS_KEYS:
            new_key = "namespace"
        elif key == "container":
            r.fail(f"{path}.key", "podwall cannot select by container name; use service, image or labels")
            ok = False
            continue
        elif key == "label":
            label, sep, label_value = value.partition("=")
            if not sep or not label:
                r.fail(f"{path}.value", f"label criterion {value!r} must be written key=value")
                ok = False
                continue
            new_key, new_value = label.strip(), label_value.strip()
        elif key == "service" and op in ("=", "!="):
            ns = ns_values[0] if len(ns_values) == 1 else None
            if ns is not None and _is_glob_free(ns) and value.endswith(f".{ns}") and len(value) > len(ns) + 1:
                new_value = value[: -len(ns) - 1]
            elif value.endswith(".*") and len(value) > 2:
                new_value = value[:-2]
            elif op == "=" and not has_ns and len(services) == 1 and _is_glob_free(value) and "." in value:
                # A learned group's service value is <service>.<namespace>.
                new_value, _, namespace = value.rpartition(".")
                try:
                    added.append(Criterion(key="namespace", op="=", value=namespace))
                except ValidationError:
                    new_value = value
        try:
            out.append(Criterion(key=new_key, op=op, value=new_value))  # type: ignore[arg-type]
        except ValidationError as exc:
            for err in exc.errors():
                where = ".".join(str(p) for p in err["loc"]) or "value"
                message = str(err.get("msg", "invalid criterion")).removeprefix("Value error, ")
                r.fail(f"{path}.{where}", message)
            ok = False
    return out + added if ok else None


def _selector(value: Any, path: str, r: FieldReader) -> tuple[str, list[Criterion] | None, str | None] | None:
    """A selector's (name, criteria or None for a reserved group, comment); None after faults."""
    sel = r.mapping(value, path, required=True)
    if sel is None:
        return None
    r.only(sel, _SELECTOR_FIELDS, path)
    name = r.checked(sel.get("name"), f"{path}.name", _name_problem, required=True)
    comment = r.string(sel.get("comment"), f"{path}.comment") or None
    raw: list[tuple[str, str, str, str]] = []
    for i, item in enumerate(r.sequence(sel.get("criteria"), f"{path}.criteria")):
        cpath = f"{path}.criteria[{i}]"
        crit = r.mapping(item, cpath, required=True)
        if crit is None:
            continue
        r.only(crit, ("key", "op", "value"), cpath)
        key = r.string(crit.get("key"), f"{cpath}.key", required=True)
        op = r.string(crit.get("op"), f"{cpath}.op", required=True)
        val = crit.get("value")
        text = r.string(val if val is not None else "", f"{cpath}.value")
        if key is not None and op is not None and text is not None:
            raw.append((key, op, text, cpath))
    if name is None:
        return None
    if name in RESERVED_GROUPS:
        return name, None, comment  # NeuVector ignores a reserved group's criteria too
    if not raw:
        r.fail(f"{path}.criteria", f"group {name!r} needs criteria (only external, nodes and containers may omit them)")
        return None
    criteria = _import_criteria(raw, r)
    if criteria is None:
        return None
    return name, criteria, comment


def _name_problem(name: str) -> str | None:
    try:
        check_group_name(name)
    except ValueError as exc:
        return str(exc)
    return None


def _sensors(value: Any, path: str, r: FieldReader) -> SensorConfig | None:
    block = r.mapping(value, path)
    if block is None:
        return None
    r.only(block, ("status", "settings"), path)
    try:
        return SensorConfig.model_validate(
            {"status": block.get("status", False), "settings": block.get("settings") or []}
        )
    except ValidationError as exc:
        for err in exc.errors():
            sub = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in err["loc"])
            message = str(err.get("msg", "invalid value")).removeprefix("Value error, ")
            r.fail(f"{path}{sub}", message)
    return None


def _profile_items(value: Any, path: str, fields: tuple[str, ...], r: FieldReader) -> tuple[dict[str, Any], ...]:
    out: list[dict[str, Any]] = []
    for i, item in enumerate(r.sequence(value, path)):
        entry = r.mapping(item, f"{path}[{i}]", required=True)
        if entry is not None:
            r.only(entry, fields, f"{path}[{i}]")
            out.append(dict(entry))
    return tuple(out)


def _remember_group(
    st: _State, name: str, criteria: list[Criterion] | None, comment: str | None, where: Location, r: FieldReader
) -> None:
    if criteria is None:
        return  # reserved group: built in
    seen = st.groups.get(name)
    if seen is None:
        st.groups[name] = _GroupAcc(name, criteria, where, comment)
        return
    if sorted(map(str, seen.criteria)) != sorted(map(str, criteria)):
        r.problems.append(Problem(where, f"group {name!r} has other criteria than at {seen.where}"))
    if seen.comment is None:
        seen.comment = comment


def _read_object(data: Any, r: FieldReader, st: _State) -> None:
    obj = r.mapping(data, "", required=True)
    if obj is None:
        return
    kind = obj.get("kind")
    api = obj.get("apiVersion")
    if kind not in RULE_KINDS:
        if isinstance(api, str) and api.startswith("neuvector.com/"):
            r.fail("kind", f"unsupported kind {kind!r}: podwall reads {RULE_KIND} and {CLUSTER_RULE_KIND}")
        return  # other Kubernetes objects are not NeuVector policy
    st.objects += 1
    meta = r.mapping(obj.get("metadata"), "metadata", required=True) or {}
    cr_name = r.string(meta.get("name"), "metadata.name", required=True) or "?"
    namespace = r.string(meta.get("namespace"), "metadata.namespace")
    r = r.child(f"{kind} {namespace + '/' if namespace else ''}{cr_name}", r.prefix)
    r.only(obj, _OBJECT_FIELDS)
    if api != NV_API_VERSION:
        r.fail("apiVersion", f"unsupported apiVersion {api!r}: expected {NV_API_VERSION}")
    if kind == RULE_KIND and not namespace:
        r.fail("metadata.namespace", f"{RULE_KIND} is namespaced: metadata.namespace is required")
    spec = r.mapping(obj.get("spec"), "spec", required=True)
    if spec is None:
        return
    r.only(spec, _SPEC_FIELDS, "spec")
    target = r.mapping(spec.get("target"), "spec.target", required=True)
    if target is None:
        return
    r.only(target, ("policymode", "selector"), "spec.target")
    sel = _selector(target.get("selector"), "spec.target.selector", r)
    if sel is None:
        return
    name, criteria, comment = sel
    where = r.at("spec.target.selector")
    if (
        kind == RULE_KIND
        and namespace
        and criteria is not None
        and not any(c.key == "namespace" and c.op == "=" and c.value == namespace for c in criteria)
    ):
        r.fail(
            "spec.target.selector.criteria",
            f"an {RULE_KIND} in namespace {namespace!r} needs a target with the criterion domain = {namespace}",
        )
    _remember_group(st, name, criteria, comment, where, r)
    mode_text = r.string(target.get("policymode"), "spec.target.policymode")
    mode: Mode | None = None
    nodes_mode: str | None = None
    if mode_text is not None and mode_text.strip().lower() not in NO_MODE:
        mode = NV_MODES.get(mode_text.strip().lower())
        if mode is None:
            r.fail("spec.target.policymode", f"invalid policymode {mode_text!r}: expected Discover, Monitor or Protect")
        elif name == "nodes":
            nodes_mode, mode = MODE_NAMES[mode], None  # process rules only; kept for export
        elif criteria is None or all(c.key == "address" for c in criteria):
            r.fail("spec.target.policymode", f"group {name!r} has no policy mode (only workload groups do)")
            mode = None
    acc = st.groups.get(name)
    if acc is not None:
        if acc.target_where is None:
            acc.target_where, acc.target_rank = where, st.objects
        if mode is not None:
            if acc.mode is not None and acc.mode != mode:
                r.fail("spec.target.policymode", f"group {name!r} has policymode {acc.mode} at {acc.mode_where}")
            acc.mode, acc.mode_where = mode, r.at("spec.target.policymode")
    for block in ("dlp", "waf"):
        if spec.get(block) is None:
            continue
        config = _sensors(spec.get(block), f"spec.{block}", r)
        if acc is None or (bool(acc.criteria) and all(c.key == "address" for c in acc.criteria)):
            r.fail(f"spec.{block}", f"group {name!r} cannot have {block.upper()} settings (workload groups only)")
        elif config is not None:
            if getattr(acc, block) not in (None, config):
                r.fail(f"spec.{block}", f"group {name!r} has other {block.upper()} settings in another CR")
            setattr(acc, block, config)
    profile = r.mapping(spec.get("process_profile"), "spec.process_profile")
    extras = TargetExtras(
        process=_profile_items(spec.get("process"), "spec.process", _PROCESS_FIELDS, r),
        file=_profile_items(spec.get("file"), "spec.file", _FILE_FIELDS, r),
        process_profile=dict(profile) if profile else None,
        nodes_mode=nodes_mode,
    )
    if extras != TargetExtras():
        st.extras[name] = extras
    local_names: set[str] = set()
    for direction in ("ingress", "egress"):
        for i, item in enumerate(r.sequence(spec.get(direction), f"spec.{direction}")):
            _read_rule(item, f"spec.{direction}[{i}]", direction, name, cr_name, local_names, r, st)


def _read_rule(
    item: Any,
    path: str,
    direction: str,
    target: str,
    cr_name: str,
    local_names: set[str],
    r: FieldReader,
    st: _State,
) -> None:
    rule = r.mapping(item, path, required=True)
    if rule is None:
        return
    r.only(rule, _RULE_FIELDS, path)
    name = r.string(rule.get("name"), f"{path}.name", required=True)
    if name is not None:
        if name in local_names:
            r.fail(f"{path}.name", f"duplicate rule name {name!r} in this {RULE_KIND}")
        local_names.add(name)
    action_text = r.string(rule.get("action"), f"{path}.action", required=True)
    action = action_text.strip().lower() if action_text else None
    if action is not None and action not in ("allow", "deny"):
        r.fail(f"{path}.action", f"invalid action {action_text!r}: expected allow or deny")
    priority = r.integer(rule.get("priority"), f"{path}.priority", 0, 1_000_000)
    ports = import_ports(rule.get("ports"), f"{path}.ports", r)
    apps = import_apps(rule.get("applications"), f"{path}.applications", r)
    sel = _selector(rule.get("selector"), f"{path}.selector", r)
    if sel is None or name is None or action not in ("allow", "deny") or ports is None or apps is None:
        return
    peer, criteria, comment = sel
    _remember_group(st, peer, criteria, comment, r.at(f"{path}.selector"), r)
    where = r.at(path)
    if name in st.rule_names:
        # Names are unique per CR in NeuVector, per policy in podwall: qualify a repeat.
        name = f"{cr_name}/{name}"
    st.rule_names.setdefault(name, where)
    src, dst = (peer, target) if direction == "ingress" else (target, peer)
    data: dict[str, Any] = {
        "name": name,
        "from": src,
        "to": dst,
        "ports": ports,
        "applications": apps,
        "action": action,
    }
    if priority is not None:
        data["priority"] = priority
    st.rules.append(_RuleAcc(data, where))


def _policy_name(filename: str) -> str:
    base = filename.replace("\\", "/").rsplit("/", 1)[-1]
    stem = base.rsplit(".", 1)[0] if "." in base else base
    return (stem or "neuvector")[:253]


def read_neuvector(text: str, filename: str = "<neuvector>") -> NeuVectorImport:
    """Read NeuVector security-rule CRs; raises InputError listing every located fault."""
    st = _State()
    for doc in read_documents(text, filename):
        for data, reader in _objects(doc, st.problems):
            _read_object(data, reader, st)
    if st.objects == 0 and not st.problems:
        st.problems.append(Problem(Location(file=filename), f"no {RULE_KIND} or {CLUSTER_RULE_KIND} found"))
    first_id, last_id = POLICY_AS_CODE_IDS
    if len(st.rules) > last_id - first_id + 1:
        st.problems.append(
            Problem(
                Location(file=filename), f"{len(st.rules)} rules: policy-as-code IDs allow {last_id - first_id + 1}"
            )
        )
    groups: list[Group] = []
    # Targets first, then groups only linked by rules: an export (one CR per group) reads back
    # in its own order.
    for acc in sorted(st.groups.values(), key=lambda g: (g.target_rank is None, g.target_rank or 0)):
        try:
            groups.append(
                Group(
                    name=acc.name,
                    criteria=acc.criteria,
                    mode=acc.mode,
                    dlp=acc.dlp,
                    waf=acc.waf,
                    comment=acc.comment,
                )
            )
        except ValidationError as exc:
            for err in exc.errors():
                msg = str(err.get("msg", "invalid group")).removeprefix("Value error, ")
                st.problems.append(Problem(acc.mode_where or acc.where, msg))
    rules: list[Rule] = []
    for number, acc_rule in enumerate(st.rules):
        try:
            rules.append(Rule.model_validate({"id": first_id + number, **acc_rule.data}))
        except ValidationError as exc:
            for err in exc.errors():
                msg = str(err.get("msg", "invalid rule")).removeprefix("Value error, ")
                st.problems.append(Problem(acc_rule.where, msg))
    if st.problems:
        raise InputError(f"invalid NeuVector policy {filename}", list(dict.fromkeys(st.problems)))
    policy = Policy(metadata=Metadata(name=_policy_name(filename)), spec=PolicySpec(groups=groups, rules=rules))
    return NeuVectorImport(policy, dict(st.extras))


def parse_neuvector(text: str, filename: str = "<neuvector>") -> Policy:
    """The policy the NeuVector CRs in `text` describe (see `read_neuvector` for their extras)."""
    return read_neuvector(text, filename).policy


# --- export --------------------------------------------------------------------------------------


def _export_criteria(group: Group) -> list[dict[str, str]]:
    ns_values = [c.value for c in group.criteria if c.key == "namespace" and c.op == "="]
    ns = ns_values[0] if len(ns_values) == 1 and _is_glob_free(ns_values[0]) else None
    out: list[dict[str, str]] = []
    for c in group.criteria:
        key, value = c.key, c.value
        if key == "namespace":
            key = "domain"
        elif key == "service" and c.op in ("=", "!="):
            value = f"{value}.{ns}" if ns is not None else f"{value}.*"
        out.append({"key": key, "op": c.op, "value": value})
    return out


def _reserved_criteria(name: str) -> list[dict[str, str]]:
    return [{"key": "container", "op": "=", "value": "*"}] if name == "containers" else []


def _selector_out(name: str, groups: Mapping[str, Group]) -> dict[str, Any]:
    group = groups.get(name)
    out: dict[str, Any] = {"name": name}
    if group is not None and group.comment:
        out["comment"] = group.comment
    out["criteria"] = _export_criteria(group) if group is not None else _reserved_criteria(name)
    return out


def _namespace_of(group: Group | None) -> str | None:
    if group is None:
        return None
    values = [c.value for c in group.criteria if c.key == "namespace" and c.op == "="]
    return values[0] if len(values) == 1 and _is_glob_free(values[0]) else None


def _export_problems(policy: Policy) -> list[Problem]:
    problems: list[Problem] = []
    zones = {g.name for g in policy.spec.groups if g.is_zone}
    for i, g in enumerate(policy.spec.groups):
        if g.is_zone:
            problems.append(
                Problem(Location(obj=f"group {g.name}", path=f"spec.groups[{i}]"), "NeuVector CRDs have no zones")
            )
    for i, rule in enumerate(policy.spec.rules):
        if rule.disabled:
            continue
        where = Location(obj=f"rule {rule.id}", path=f"spec.rules[{i}]")
        if rule.l7 is not None:
            problems.append(Problem(where, "NeuVector CRD rules have no L7 matchers"))
        if rule.tier is not None:
            problems.append(Problem(where, f"NeuVector CRDs have no {rule.tier} tier"))
        if rule.staged:
            problems.append(Problem(where, "NeuVector CRD rules cannot be staged"))
        for end in (rule.from_, rule.to):
            if end in zones:
                problems.append(Problem(where, f"rule refers to zone {end!r}; NeuVector CRDs have no zones"))
    return problems


def _owner(rule: Rule, groups: Mapping[str, Group]) -> tuple[str, str, str]:
    """(target, direction, selector): egress of the client group, unless it cannot be a target."""
    src = groups.get(rule.from_)
    if src is None or src.is_address_group:
        return rule.to, "ingress", rule.from_
    return rule.from_, "egress", rule.to


def export_neuvector(
    policy: Policy,
    *,
    cluster_scoped: bool = False,
    extras: Mapping[str, TargetExtras] | None = None,
) -> str:
    """The policy as a NeuVector export: a `kind: List` of one CR per group (see docs/neuvector.md).

    Raises InputError, listing each, for what NeuVector CRDs cannot say (zones, L7 matchers,
    tiers, staged rules). Disabled rules are left out.
    """
    problems = _export_problems(policy)
    if problems:
        raise InputError(f"policy {policy.metadata.name} cannot be written as NeuVector CRDs", problems)
    extras = extras or {}
    groups = {g.name: g for g in policy.spec.groups}
    targets: list[str] = [g.name for g in policy.spec.groups]
    lists: dict[str, dict[str, list[dict[str, Any]]]] = {n: {"ingress": [], "egress": []} for n in targets}
    taken = {r.name for r in policy.spec.rules if r.name is not None}
    counter = 0
    for rule in sorted(policy.spec.rules, key=lambda r: r.id):
        if rule.disabled:
            continue
        target, direction, peer = _owner(rule, groups)
        if target not in lists:
            targets.append(target)
            lists[target] = {"ingress": [], "egress": []}
        name = rule.name
        while name is None:
            candidate = f"{target}-{direction}-{counter}"
            counter += 1
            name = candidate if candidate not in taken else None
        taken.add(name)
        out: dict[str, Any] = {
            "name": name,
            "action": rule.action,
            "applications": [APP_TO_NV.get(a, a) for a in rule.applications],
            "ports": ",".join(rule.ports),
        }
        if rule.priority is not None:
            out["priority"] = rule.priority
        out["selector"] = _selector_out(peer, groups)
        lists[target][direction].append(out)
    for name in RESERVED_GROUPS:
        if name in extras and name not in lists:
            targets.append(name)
            lists[name] = {"ingress": [], "egress": []}
    items = [_cr(name, groups.get(name), lists[name], extras.get(name), cluster_scoped, groups) for name in targets]
    doc = {"apiVersion": "v1", "kind": "List", "items": items, "metadata": None}
    return yaml.safe_dump(doc, sort_keys=False, allow_unicode=True, width=200, default_flow_style=False)


def _cr(
    name: str,
    group: Group | None,
    rules: dict[str, list[dict[str, Any]]],
    extra: TargetExtras | None,
    cluster_scoped: bool,
    groups: Mapping[str, Group],
) -> dict[str, Any]:
    namespace = None if cluster_scoped else _namespace_of(group)
    mode: str | None = None
    if group is not None and group.mode is not None:
        mode = MODE_NAMES[group.mode]
    elif extra is not None and extra.nodes_mode is not None:
        mode = extra.nodes_mode
    spec: dict[str, Any] = {
        "target": {"policymode": mode, "selector": _selector_out(name, groups)},
        "ingress": rules["ingress"],
        "egress": rules["egress"],
        "process": [dict(p) for p in extra.process] if extra else [],
        "file": [dict(f) for f in extra.file] if extra else [],
    }
    if extra is not None and extra.process_profile is not None:
        spec["process_profile"] = dict(extra.process_profile)
    if group is not None:
        for block in ("dlp", "waf"):
            config: SensorConfig | None = getattr(group, block)
            if config is not None:
                spec[block] = {
                    "status": config.status,
                    "settings": [{"name": s.name, "action": s.action} for s in config.settings],
                }
    return {
        "apiVersion": NV_API_VERSION,
        "kind": RULE_KIND if namespace is not None else CLUSTER_RULE_KIND,
        "metadata": {"name": name, "namespace": namespace if namespace is not None else CLUSTER_NAMESPACE},
        "spec": spec,
    }


__all__ = [
    "APP_TO_NV",
    "CLUSTER_RULE_KIND",
    "NV_API_VERSION",
    "NV_ONLY_APPS",
    "NV_TO_APP",
    "PODWALL_ONLY_APPS",
    "RULE_KIND",
    "NeuVectorImport",
    "TargetExtras",
    "export_neuvector",
    "parse_neuvector",
    "read_neuvector",
]
