"""The policy model: groups and zones, rules between them (tiers, priorities, L7 matchers), modes.

Everything a policy file can say is validated here (pydantic v2, unknown fields rejected),
so that the evaluator, compiler and exporters can trust what they receive. Field-level
checks live on the models; checks across objects (duplicate names or IDs, rules naming
undefined groups) live in `podwall.policy.crosscheck`, which the YAML loader also runs on raw
documents so that it can locate every fault at once. The grammar of ports, addresses and names
is in `podwall.policy.specs`, the L7 matcher models in `podwall.policy.l7model`.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    ValidationInfo,
    field_validator,
    model_validator,
)

from podwall.core.errors import InputError, Location, Problem
from podwall.policy.crosscheck import GroupEntry, RuleEntry, cross_check
from podwall.policy.inspection import InspectionSpec
from podwall.policy.l7model import L7Match
from podwall.policy.specs import (
    MAX_NAME_LEN,
    MAX_VALUE_LEN,
    AppName,
    GroupName,
    PortSpec,
    PortText,
    parse_address,
    parse_port_spec,
)

API_VERSION: Literal["podwall.io/v1"] = "podwall.io/v1"
KIND: Literal["Policy"] = "Policy"

Mode = Literal["discover", "monitor", "protect"]
MODES: tuple[str, ...] = ("discover", "monitor", "protect")
# Higher is more restrictive; the mixed-mode rule compares these ranks.
MODE_RANK: dict[str, int] = {"discover": 0, "monitor": 1, "protect": 2}

Op = Literal["=", "!=", "contains", "prefix", "regex", "!regex"]
NEGATIVE_OPS = frozenset({"!=", "!regex"})

# Criterion keys with a fixed meaning; any other key is a workload label name.
BUILTIN_KEYS = frozenset({"namespace", "service", "image", "node", "address", "kind"})
NS_LABEL_PREFIX = "ns:"

USER_IDS = (1, 9999)
LEARNED_IDS = (10001, 99999)
FEDERATED_IDS = (100001, 109999)
POLICY_AS_CODE_IDS = (110001, 119999)

Origin = Literal["user", "learned", "federated", "policy-as-code"]
ORIGINS: tuple[str, ...] = ("user", "learned", "federated", "policy-as-code")
ID_RANGES: dict[str, tuple[int, int]] = {
    "user": USER_IDS,
    "learned": LEARNED_IDS,
    "federated": FEDERATED_IDS,
    "policy-as-code": POLICY_AS_CODE_IDS,
}

# Tiers, in evaluation order (docs/policy.md, "Evaluation order"). `tier` on a rule places it
# in the admin or baseline tier; rules without one sit in the tier their origin implies.
Tier = Literal["admin", "baseline"]
TIER_ORDER: tuple[str, ...] = ("admin", "federated", "policy-as-code", "main", "baseline")
TIER_RANK: dict[str, int] = {name: i for i, name in enumerate(TIER_ORDER)}
# Actions each tier accepts (files may write them in any case, e.g. Accept, Pass).
TIER_ACTIONS: dict[str, tuple[str, ...]] = {
    "admin": ("accept", "deny", "pass"),
    "baseline": ("allow", "deny"),
    "main": ("allow", "deny"),
}
MAX_PRIORITY = 1_000_000

MAX_TEXT_LEN = 1024
MAX_PORT_RANGE_SPECS = 4096

# Kubernetes label key: optional DNS-subdomain prefix and a name of at most 63 characters.
_LABEL_KEY_RE = re.compile(
    r"^(?:[a-z0-9](?:[-a-z0-9]*[a-z0-9])?(?:\.[a-z0-9](?:[-a-z0-9]*[a-z0-9])?)*/)?"
    r"[A-Za-z0-9](?:[-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$"
)


# ---------------------------------------------------------------------------------------------
# Models


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Criterion(_Model):
    """One selector `{key, op, value}`; see docs/policy.md for keys, operators and globs."""

    key: str
    op: Op
    value: str

    @field_validator("key")
    @classmethod
    def _key(cls, key: str) -> str:
        if key in BUILTIN_KEYS:
            return key
        if key.startswith(NS_LABEL_PREFIX):
            label = key[len(NS_LABEL_PREFIX) :]
            if not _LABEL_KEY_RE.match(label):
                raise ValueError(f"invalid namespace label name {label!r} in key {key!r}")
            return key
        if not _LABEL_KEY_RE.match(key):
            raise ValueError(
                f"invalid criterion key {key!r}: expected namespace, service, image, node, address, kind, "
                "ns:<label> or a label name"
            )
        return key

    @field_validator("value")
    @classmethod
    def _value(cls, value: str, info: ValidationInfo) -> str:
        key = info.data.get("key")
        op = info.data.get("op")
        if len(value) > MAX_VALUE_LEN:
            raise ValueError(f"value is longer than {MAX_VALUE_LEN} characters")
        if key == "address":
            if op not in (None, "=", "!="):
                raise ValueError(f"address criteria support = and != only, not {op}")
            parse_address(value)
            return value
        if op in ("regex", "!regex"):
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"invalid regular expression {value!r}: {exc}") from None
        elif op in ("contains", "prefix") and not value:
            raise ValueError(f"value must not be empty for {op}")
        return value

    @property
    def negative(self) -> bool:
        return self.op in NEGATIVE_OPS

    def __str__(self) -> str:
        return f"{self.key} {self.op} {self.value}"


class SensorSetting(_Model):
    """One DLP or WAF sensor attached to a group, NeuVector-shaped: its name and what a hit does."""

    name: Annotated[str, Field(min_length=1, max_length=MAX_NAME_LEN)]
    action: Literal["allow", "deny"] = "deny"


class SensorConfig(_Model):
    """A group's `dlp` or `waf` block (`status` on or off, the sensors); carried, enforced by inspect/."""

    status: StrictBool = False
    settings: list[SensorSetting] = Field(default_factory=list)

    @field_validator("settings")
    @classmethod
    def _unique(cls, settings: list[SensorSetting]) -> list[SensorSetting]:
        names = [s.name for s in settings]
        dup = next((n for i, n in enumerate(names) if n in names[:i]), None)
        if dup is not None:
            raise ValueError(f"sensor {dup!r} is listed twice")
        return settings


class Group(_Model):
    """A named set of endpoints: a workload group, an address group, or a zone.

    A workload or address group has `criteria`; a zone (e.g. `zone.cde`) has `members`, the
    names of other groups or zones, and contains every endpoint of any member. `mode` is the
    group's policy mode (None: the policy's `spec.defaultMode` for a workload group; no mode
    of its own for a zone). Address groups have no mode: they may be any endpoint, so the mode
    is decided by the workload at the other end. `dlp` and `waf` are carried for inspect/.
    """

    name: GroupName
    criteria: list[Criterion] = Field(default_factory=list)
    members: list[GroupName] = Field(default_factory=list)
    mode: Mode | None = None
    dlp: SensorConfig | None = None
    waf: SensorConfig | None = None
    comment: Annotated[str, Field(max_length=MAX_TEXT_LEN)] | None = None

    @field_validator("criteria")
    @classmethod
    def _criteria(cls, criteria: list[Criterion]) -> list[Criterion]:
        keys = {c.key for c in criteria}
        if "address" in keys and len(keys) > 1:
            others = ", ".join(sorted(keys - {"address"}))
            raise ValueError(f"a group selects either addresses or workloads, not both (address with {others})")
        return criteria

    @field_validator("members")
    @classmethod
    def _members(cls, members: list[str]) -> list[str]:
        dup = next((m for i, m in enumerate(members) if m in members[:i]), None)
        if dup is not None:
            raise ValueError(f"member {dup!r} is listed twice")
        return members

    @field_validator("mode")
    @classmethod
    def _mode(cls, mode: str | None, info: ValidationInfo) -> str | None:
        criteria = info.data.get("criteria")
        if mode is not None and criteria and all(c.key == "address" for c in criteria):
            raise ValueError("address groups have no mode: the mode of the workload at the other end applies")
        return mode

    @model_validator(mode="after")
    def _shape(self) -> Group:
        if self.criteria and self.members:
            raise ValueError("a group has either criteria (a group) or members (a zone), not both")
        if not self.criteria and not self.members:
            raise ValueError("a group needs criteria, or members to make it a zone")
        if self.name in self.members:
            raise ValueError(f"zone {self.name!r} cannot be a member of itself")
        return self

    @property
    def is_zone(self) -> bool:
        return bool(self.members)

    @property
    def is_address_group(self) -> bool:
        return bool(self.criteria) and all(c.key == "address" for c in self.criteria)


# ---------------------------------------------------------------------------------------------
# Rules


def id_problem(rule_id: int) -> str | None:
    """Why a rule ID is not allowed in a policy file, or None when it is."""
    if rule_id == 0:
        return "rule ID 0 is reserved for the implicit deny"
    if rule_id < 0:
        return f"rule ID {rule_id} is negative"
    if any(lo <= rule_id <= hi for lo, hi in ID_RANGES.values()):
        return None
    return (
        f"rule ID {rule_id} is in no range: user rules take 1-9999, learned 10001-99999, "
        "federated 100001-109999, policy-as-code 110001-119999"
    )


def origin_of(rule_id: int) -> Origin:
    """The origin an ID's range implies (user when the ID is in no range)."""
    for origin, (lo, hi) in ID_RANGES.items():
        if lo <= rule_id <= hi:
            return origin  # type: ignore[return-value]
    return "user"


def tier_of(rule: Rule) -> str:
    """The tier a rule is evaluated in: admin, federated, policy-as-code, main or baseline."""
    if rule.tier is not None:
        return rule.tier
    if rule.origin in ("federated", "policy-as-code"):
        return rule.origin
    return "main"


class Rule(_Model):
    """A connection rule: `from` group to `to` group on ports with applications and L7 matchers.

    Python code uses `from_`; files and dumps use `from`. `origin` defaults to what the ID
    range implies and must agree with it. `tier` puts the rule in the admin tier (actions
    accept, deny, pass) or the baseline tier (allow, deny); `priority` orders the admin,
    baseline and policy-as-code tiers (lower first, then by ID). `staged` rules are evaluated
    for the would-be verdict only. Hit counts are runtime state, kept by the engine.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, serialize_by_alias=True)

    id: StrictInt
    name: Annotated[str, Field(min_length=1, max_length=MAX_TEXT_LEN)] | None = None
    from_: GroupName = Field(validation_alias=AliasChoices("from", "from_"), serialization_alias="from")
    to: GroupName
    ports: list[PortText] = Field(default_factory=lambda: ["any"], min_length=1)
    applications: list[AppName] = Field(default_factory=lambda: ["any"], min_length=1)
    l7: L7Match | None = None
    action: Literal["allow", "deny", "accept", "pass"] = "allow"
    tier: Tier | None = None
    priority: StrictInt | None = None
    origin: Origin = "user"
    disabled: StrictBool = False
    staged: StrictBool = False
    comment: Annotated[str, Field(max_length=MAX_TEXT_LEN)] | None = None

    @model_validator(mode="before")
    @classmethod
    def _defaults(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        out = dict(data)
        if "origin" not in out:
            rule_id = out.get("id")
            if isinstance(rule_id, int) and not isinstance(rule_id, bool):
                out["origin"] = origin_of(rule_id)
        action = out.get("action")
        if isinstance(action, str):
            # Kubernetes writes Accept, Deny, Pass; NeuVector allow, deny.
            out["action"] = action.strip().lower()
        return out

    @field_validator("id")
    @classmethod
    def _id(cls, rule_id: int) -> int:
        problem = id_problem(rule_id)
        if problem:
            raise ValueError(problem)
        return rule_id

    @field_validator("ports")
    @classmethod
    def _ports(cls, ports: list[str]) -> list[str]:
        if len(ports) > MAX_PORT_RANGE_SPECS:
            raise ValueError(f"more than {MAX_PORT_RANGE_SPECS} port entries")
        if len(ports) > 1 and "any" in ports:
            raise ValueError("any covers every port: it cannot be combined with other entries")
        return ports

    @field_validator("applications")
    @classmethod
    def _applications(cls, apps: list[str]) -> list[str]:
        if len(apps) > 1 and "any" in apps:
            raise ValueError("any covers every application: it cannot be combined with other names")
        return apps

    @field_validator("origin")
    @classmethod
    def _origin(cls, origin: str, info: ValidationInfo) -> str:
        rule_id = info.data.get("id")
        if isinstance(rule_id, int) and origin != origin_of(rule_id):
            lo, hi = ID_RANGES[origin]
            raise ValueError(f"origin {origin} needs an ID in {lo}-{hi}, but the rule's ID is {rule_id}")
        return origin

    @field_validator("priority")
    @classmethod
    def _priority_range(cls, priority: int | None) -> int | None:
        if priority is not None and not 0 <= priority <= MAX_PRIORITY:
            raise ValueError(f"priority {priority} is out of range 0-{MAX_PRIORITY}")
        return priority

    @model_validator(mode="after")
    def _tier_fields(self) -> Rule:
        tier = self.tier or "main"
        allowed = TIER_ACTIONS[tier]
        if self.action not in allowed:
            where = {"admin": "admin-tier rules", "baseline": "baseline-tier rules", "main": "rules without a tier"}
            raise ValueError(f"action {self.action!r} is not valid for {where[tier]}: expected {', '.join(allowed)}")
        if self.priority is not None and self.tier is None and self.origin != "policy-as-code":
            raise ValueError(
                "priority orders only admin, baseline and policy-as-code rules; "
                f"{self.origin} rules are evaluated by ID"
            )
        return self

    @property
    def port_specs(self) -> tuple[PortSpec, ...]:
        return tuple(parse_port_spec(p) for p in self.ports)

    @property
    def any_application(self) -> bool:
        return self.applications == ["any"]

    @property
    def allows(self) -> bool:
        """Whether a match admits the connection (allow or accept)."""
        return self.action in ("allow", "accept")


class Metadata(_Model):
    """Policy metadata: its name."""

    name: Annotated[str, Field(min_length=1, max_length=MAX_NAME_LEN)]


class PolicySpec(_Model):
    """The policy's content: default mode, groups (and zones) and rules.

    `strict`: each end applies its own mode (the more restrictive decides) instead of
    NeuVector's mixed-mode rule. `staged: true` in input is a shorthand that marks every rule
    of the spec staged; it is folded into the rules and not kept.
    """

    defaultMode: Mode = "discover"  # the file's field name
    strict: StrictBool = False
    groups: list[Group] = Field(default_factory=list)
    rules: list[Rule] = Field(default_factory=list)
    inspection: InspectionSpec = Field(default_factory=InspectionSpec)

    @model_validator(mode="before")
    @classmethod
    def _fold_staged(cls, data: Any) -> Any:
        if isinstance(data, dict) and "staged" in data:
            out = dict(data)
            staged = out.pop("staged")
            if not isinstance(staged, bool):
                raise ValueError("staged must be true or false")
            if staged:
                out["rules"] = [_staged(r) for r in out.get("rules") or []]
            return out
        return data


def sensor_problems(groups: list[Group], inspection: InspectionSpec) -> list[Problem]:
    """Sensors a group names must exist (built in or defined under `spec.inspection`).

    Checked when a podwall policy file is read, not on every Policy: a NeuVector import names
    sensors defined in CRDs of their own, which podwall reports as unknown at inspection time.
    """
    problems: list[Problem] = []
    known = {"dlp": inspection.dlp_names(), "waf": inspection.waf_names()}
    for i, group in enumerate(groups):
        for kind in ("dlp", "waf"):
            config: SensorConfig | None = getattr(group, kind)
            for j, setting in enumerate(config.settings if config is not None else ()):
                if setting.name not in known[kind]:
                    choices = ", ".join(sorted(known[kind]))
                    problems.append(
                        Problem(
                            Location(obj=f"group {group.name}", path=f"spec.groups[{i}].{kind}.settings[{j}].name"),
                            f"unknown {kind.upper()} sensor {setting.name!r} (known: {choices})",
                        )
                    )
    return problems


def _staged(rule: Any) -> Any:
    if isinstance(rule, Rule):
        return rule.model_copy(update={"staged": True})
    if isinstance(rule, dict):
        return {**rule, "staged": True}
    return rule


class Policy(_Model):
    """A whole policy (one or several YAML documents merged), checked across objects."""

    apiVersion: Literal["podwall.io/v1"] = API_VERSION
    kind: Literal["Policy"] = KIND
    metadata: Metadata
    spec: PolicySpec = Field(default_factory=PolicySpec)

    @model_validator(mode="after")
    def _cross(self) -> Policy:
        problems = cross_check(
            [
                GroupEntry(g.name, Location(obj=f"group {g.name}", path=f"spec.groups[{i}]"), tuple(g.members))
                for i, g in enumerate(self.spec.groups)
            ],
            [
                RuleEntry(r.id, r.name, r.from_, r.to, Location(obj=f"rule {r.id}", path=f"spec.rules[{i}]"))
                for i, r in enumerate(self.spec.rules)
            ],
        )
        if problems:
            # Not a ValueError on purpose: pydantic lets other exceptions through unchanged, so
            # callers get the same located InputError as from the YAML loader.
            raise InputError(f"invalid policy {self.metadata.name!r}", problems)
        return self

    def group(self, name: str) -> Group | None:
        for group in self.spec.groups:
            if group.name == name:
                return group
        return None

    def rule(self, rule_id: int) -> Rule | None:
        for rule in self.spec.rules:
            if rule.id == rule_id:
                return rule
        return None


# ---------------------------------------------------------------------------------------------
# Zones


def zone_order(groups: list[Group]) -> list[Group]:
    """Zones ordered so that every zone comes after the zones it contains (input is acyclic)."""
    zones = {g.name: g for g in groups if g.is_zone}
    done: set[str] = set()
    out: list[Group] = []

    def visit(g: Group) -> None:
        done.add(g.name)
        for member in g.members:
            sub = zones.get(member)
            if sub is not None and sub.name not in done:
                visit(sub)
        out.append(g)

    for g in zones.values():
        if g.name not in done:
            visit(g)
    return out


def validate_policy(policy: Policy) -> Policy:
    """Re-run the cross-object checks (e.g. after `model_copy`); raises InputError, returns the policy."""
    return Policy.model_validate(policy.model_dump(by_alias=True))


# Besides this module's own names: the parsers and L7 model that callers of the policy model use.
__all__ = [
    "API_VERSION",
    "BUILTIN_KEYS",
    "FEDERATED_IDS",
    "ID_RANGES",
    "KIND",
    "LEARNED_IDS",
    "MAX_PORT_RANGE_SPECS",
    "MAX_PRIORITY",
    "MAX_TEXT_LEN",
    "MODES",
    "MODE_RANK",
    "NEGATIVE_OPS",
    "NS_LABEL_PREFIX",
    "ORIGINS",
    "POLICY_AS_CODE_IDS",
    "TIER_ACTIONS",
    "TIER_ORDER",
    "TIER_RANK",
    "USER_IDS",
    "Criterion",
    "Group",
    "L7Match",
    "Metadata",
    "Mode",
    "Op",
    "Origin",
    "Policy",
    "PolicySpec",
    "Rule",
    "SensorConfig",
    "SensorSetting",
    "Tier",
    "id_problem",
    "origin_of",
    "parse_address",
    "parse_port_spec",
    "tier_of",
    "validate_policy",
    "zone_order",
]
