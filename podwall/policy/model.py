"""The policy model: groups selected by criteria, rules between groups, and per-group modes.

Everything a policy file can say is validated here (pydantic v2, unknown fields rejected),
so that the evaluator, compiler and exporters can trust what they receive. Field-level
checks live on the models; checks across objects (duplicate names or IDs, rules naming
undefined groups) live in `cross_check`, which the YAML loader also runs on raw documents
so that it can locate every fault at once.
"""

from __future__ import annotations

import contextlib
import ipaddress
import re
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
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
from podwall.core.types import PROTO_ICMP, PROTO_ICMPV6, PROTO_TCP, PROTO_UDP

API_VERSION: Literal["podwall.io/v1"] = "podwall.io/v1"
KIND: Literal["Policy"] = "Policy"

Mode = Literal["discover", "monitor", "protect"]
MODES: tuple[str, ...] = ("discover", "monitor", "protect")
# Higher is more restrictive; the mixed-mode rule compares these ranks.
MODE_RANK: dict[str, int] = {"discover": 0, "monitor": 1, "protect": 2}

Op = Literal["=", "!=", "contains", "prefix", "regex", "!regex"]
NEGATIVE_OPS = frozenset({"!=", "!regex"})

RESERVED_GROUPS: tuple[str, ...] = ("external", "nodes", "containers")

# Criterion keys with a fixed meaning; any other key is a workload label name.
BUILTIN_KEYS = frozenset({"namespace", "service", "image", "node", "address", "kind"})
NS_LABEL_PREFIX = "ns:"

USER_IDS = (1, 9999)
LEARNED_IDS = (10001, 99999)

MAX_VALUE_LEN = 1024  # bounds regex compile cost and keeps files reviewable
MAX_NAME_LEN = 253
MAX_TEXT_LEN = 1024
MAX_PORT_RANGE_SPECS = 4096

# A leading colon admits IPv6 addresses such as ::1, which name unmanaged-address groups.
_GROUP_NAME_RE = re.compile(r"^[A-Za-z0-9:][A-Za-z0-9._:/@-]*$")
_APP_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_.+-]*$")
# Kubernetes label key: optional DNS-subdomain prefix and a name of at most 63 characters.
_LABEL_KEY_RE = re.compile(
    r"^(?:[a-z0-9](?:[-a-z0-9]*[a-z0-9])?(?:\.[a-z0-9](?:[-a-z0-9]*[a-z0-9])?)*/)?"
    r"[A-Za-z0-9](?:[-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$"
)
_HOSTNAME_RE = re.compile(
    r"^(?:\*\.)?(?:[A-Za-z0-9](?:[-A-Za-z0-9]{0,61}[A-Za-z0-9])?\.)*"
    r"[A-Za-z0-9](?:[-A-Za-z0-9]{0,61}[A-Za-z0-9])?\.?$"
)


# ---------------------------------------------------------------------------------------------
# Port specifications


@dataclass(frozen=True, slots=True)
class PortSpec:
    """One parsed entry of a rule's `ports`: `any`, `icmp`, `tcp/any`, `tcp/80`, `udp/1000-2000`.

    `proto` is None for `any` (every transport, ICMP included); `icmp` matches ICMP and
    ICMPv6. For TCP/UDP, `lo`..`hi` is the inclusive server-port range (1..65535 for `/any`).
    """

    text: str
    proto: int | None
    lo: int = 0
    hi: int = 0

    @property
    def is_any(self) -> bool:
        return self.proto is None

    @property
    def is_icmp(self) -> bool:
        return self.proto == PROTO_ICMP

    def matches(self, proto: int, port: int) -> bool:
        if self.proto is None:
            return True
        if self.proto == PROTO_ICMP:
            return proto in (PROTO_ICMP, PROTO_ICMPV6)
        return proto == self.proto and self.lo <= port <= self.hi


_TRANSPORTS = {"tcp": PROTO_TCP, "udp": PROTO_UDP}


def parse_port_spec(text: str) -> PortSpec:
    """Parse one `ports` entry (case-insensitive); raises ValueError saying what is wrong."""
    spec = text.strip().lower()
    if spec == "any":
        return PortSpec("any", None)
    if spec in ("icmp", "icmpv6"):
        return PortSpec("icmp", PROTO_ICMP)
    transport, sep, ports = spec.partition("/")
    if not sep:
        if transport in _TRANSPORTS:
            raise ValueError(f"port {text!r} needs a port: write {transport}/any or {transport}/<port>")
        if transport.isdigit():
            raise ValueError(f"port {text!r} needs a transport: write tcp/{transport} or udp/{transport}")
        raise ValueError(f"invalid port {text!r}: expected any, icmp, tcp/<port>, udp/<port> or a range")
    if transport not in _TRANSPORTS:
        raise ValueError(f"unknown transport {transport!r} in port {text!r}: expected tcp or udp")
    proto = _TRANSPORTS[transport]
    if ports == "any":
        return PortSpec(f"{transport}/any", proto, 1, 65535)
    lo_text, dash, hi_text = ports.partition("-")
    if not lo_text.isdigit() or (dash and not hi_text.isdigit()):
        raise ValueError(f"invalid port {text!r}: expected a number, a range a-b or any after {transport}/")
    lo = int(lo_text)
    hi = int(hi_text) if dash else lo
    for value in (lo, hi):
        if not 1 <= value <= 65535:
            raise ValueError(f"port {value} in {text!r} is out of range 1-65535")
    if lo > hi:
        raise ValueError(f"port range {text!r} is reversed: {lo} is greater than {hi}")
    canon = f"{transport}/{lo}" if lo == hi else f"{transport}/{lo}-{hi}"
    return PortSpec(canon, proto, lo, hi)


def _check_port(text: str) -> str:
    return parse_port_spec(text).text


def check_app_name(text: str) -> str:
    """The application name as rules store it (lower case); ValueError if it is not a valid name."""
    name = text.strip().lower()
    if not _APP_NAME_RE.match(name):
        raise ValueError(f"invalid application name {text!r}: use the DPI's name such as http, redis, dns or any")
    return name


def check_group_name(text: str) -> str:
    """The group name unchanged; ValueError saying why if it is not a valid name."""
    if not text:
        raise ValueError("group name must not be empty")
    if len(text) > MAX_NAME_LEN:
        raise ValueError(f"group name is longer than {MAX_NAME_LEN} characters")
    if not _GROUP_NAME_RE.match(text):
        raise ValueError(
            f"invalid group name {text!r}: use letters, digits and . _ - : / @, starting with a letter, digit or colon"
        )
    return text


PortText = Annotated[str, AfterValidator(_check_port)]
AppName = Annotated[str, AfterValidator(check_app_name)]
GroupName = Annotated[str, AfterValidator(check_group_name)]


# ---------------------------------------------------------------------------------------------
# Addresses


@dataclass(frozen=True, slots=True)
class AddressSpec:
    """A parsed `address` criterion value: a network (IP or CIDR), an inclusive range, or a hostname.

    Hostnames (`db.example.com`, `*.example.com`) need DNS information to match, which policy
    evaluation does not have yet, so they never match an IP address.
    """

    text: str
    network: ipaddress.IPv4Network | ipaddress.IPv6Network | None = None
    first: int = 0
    last: int = 0
    version: int = 0
    hostname: str | None = None

    def contains(self, ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
        if self.hostname is not None:
            return False
        if ip.version != self.version:
            return False
        if self.network is not None:
            return ip in self.network
        return self.first <= int(ip) <= self.last


def parse_address(text: str) -> AddressSpec:
    """Parse an `address` value (IP, CIDR, `a-b` range, hostname or `*.domain`); ValueError if none."""
    value = text.strip()
    if not value:
        raise ValueError("address must not be empty")
    if "-" in value:
        lo_text, _, hi_text = value.partition("-")
        ends = []
        for end in (lo_text.strip(), hi_text.strip()):
            with contextlib.suppress(ValueError):
                ends.append(ipaddress.ip_address(end))
        if len(ends) == 2:
            lo, hi = ends
            if lo.version != hi.version:
                raise ValueError(f"address range {text!r} mixes IPv4 and IPv6")
            if int(lo) > int(hi):
                raise ValueError(f"address range {text!r} is reversed: {lo} is greater than {hi}")
            return AddressSpec(value, first=int(lo), last=int(hi), version=lo.version)
        if ends:
            raise ValueError(f"invalid address range {text!r}: both ends must be IP addresses")
    try:
        net = ipaddress.ip_network(value, strict=False)
    except ValueError as exc:
        if "/" in value or ":" in value or value.replace(".", "").isdigit():
            raise ValueError(f"invalid address {text!r}: {exc}") from None
    else:
        return AddressSpec(value, network=net, version=net.version)
    if _HOSTNAME_RE.match(value):
        return AddressSpec(value, hostname=value.lower().rstrip("."))
    raise ValueError(f"invalid address {text!r}: expected an IP, CIDR, range a-b, hostname or *.domain")


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


class Group(_Model):
    """A named set of endpoints: a workload group (labels, service, ...) or an address group.

    `mode` is the group's policy mode (None: the policy's `spec.defaultMode`). Address groups
    (only `address` criteria) have no mode: they may be any endpoint, so the mode is decided by
    the workload at the other end.
    """

    name: GroupName
    criteria: list[Criterion] = Field(min_length=1)
    mode: Mode | None = None
    comment: Annotated[str, Field(max_length=MAX_TEXT_LEN)] | None = None

    @field_validator("criteria")
    @classmethod
    def _criteria(cls, criteria: list[Criterion]) -> list[Criterion]:
        keys = {c.key for c in criteria}
        if "address" in keys and len(keys) > 1:
            others = ", ".join(sorted(keys - {"address"}))
            raise ValueError(f"a group selects either addresses or workloads, not both (address with {others})")
        return criteria

    @field_validator("mode")
    @classmethod
    def _mode(cls, mode: str | None, info: ValidationInfo) -> str | None:
        criteria = info.data.get("criteria")
        if mode is not None and criteria and all(c.key == "address" for c in criteria):
            raise ValueError("address groups have no mode: the mode of the workload at the other end applies")
        return mode

    @property
    def is_address_group(self) -> bool:
        return all(c.key == "address" for c in self.criteria)


def id_problem(rule_id: int) -> str | None:
    """Why a rule ID is not allowed in a policy file, or None when it is."""
    if rule_id == 0:
        return "rule ID 0 is reserved for the implicit deny"
    if rule_id < 0:
        return f"rule ID {rule_id} is negative"
    if USER_IDS[0] <= rule_id <= USER_IDS[1] or LEARNED_IDS[0] <= rule_id <= LEARNED_IDS[1]:
        return None
    if rule_id > LEARNED_IDS[1]:
        return (
            f"rule ID {rule_id} is above 99999: federated (100001-109999) and policy-as-code "
            "(110001-119999) rules are not supported here"
        )
    return f"rule ID {rule_id} is in no range: user rules take 1-9999, learned rules 10001-99999"


def origin_of(rule_id: int) -> Literal["user", "learned"]:
    """The origin an ID's range implies (user for 1-9999, learned for 10001-99999)."""
    return "learned" if rule_id >= LEARNED_IDS[0] else "user"


class Rule(_Model):
    """A connection rule: `from` group to `to` group on ports with applications, allow or deny.

    Python code uses `from_`; files and dumps use `from`. `origin` defaults to what the ID
    range implies and must agree with it.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, serialize_by_alias=True)

    id: StrictInt
    name: Annotated[str, Field(min_length=1, max_length=MAX_TEXT_LEN)] | None = None
    from_: GroupName = Field(validation_alias=AliasChoices("from", "from_"), serialization_alias="from")
    to: GroupName
    ports: list[PortText] = Field(default_factory=lambda: ["any"], min_length=1)
    applications: list[AppName] = Field(default_factory=lambda: ["any"], min_length=1)
    action: Literal["allow", "deny"] = "allow"
    origin: Literal["user", "learned"] = "user"
    disabled: StrictBool = False
    comment: Annotated[str, Field(max_length=MAX_TEXT_LEN)] | None = None

    @model_validator(mode="before")
    @classmethod
    def _default_origin(cls, data: Any) -> Any:
        if isinstance(data, dict) and "origin" not in data:
            rule_id = data.get("id")
            if isinstance(rule_id, int) and not isinstance(rule_id, bool):
                return {**data, "origin": origin_of(rule_id)}
        return data

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
            expected = "1-9999" if origin == "user" else "10001-99999"
            raise ValueError(f"origin {origin} needs an ID in {expected}, but the rule's ID is {rule_id}")
        return origin

    @property
    def port_specs(self) -> tuple[PortSpec, ...]:
        return tuple(parse_port_spec(p) for p in self.ports)

    @property
    def any_application(self) -> bool:
        return self.applications == ["any"]


class Metadata(_Model):
    """Policy metadata: its name."""

    name: Annotated[str, Field(min_length=1, max_length=MAX_NAME_LEN)]


class PolicySpec(_Model):
    """The policy's content: default mode, groups and rules."""

    defaultMode: Mode = "discover"  # the file's field name
    groups: list[Group] = Field(default_factory=list)
    rules: list[Rule] = Field(default_factory=list)


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
                GroupEntry(g.name, Location(obj=f"group {g.name}", path=f"spec.groups[{i}]"))
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
# Checks across objects


@dataclass(frozen=True, slots=True)
class GroupEntry:
    """What `cross_check` needs of a group: its name and where it was declared (path of the item)."""

    name: str
    location: Location


@dataclass(frozen=True, slots=True)
class RuleEntry:
    """What `cross_check` needs of a rule (fields may be None when the raw item lacked them)."""

    id: int | None
    name: str | None
    from_: str | None
    to: str | None
    location: Location


def _at(loc: Location, field: str) -> Location:
    path = f"{loc.path}.{field}" if loc.path else field
    return Location(file=loc.file, document=loc.document, obj=loc.obj, path=path)


def _where(loc: Location) -> str:
    parts = []
    if loc.document is not None:
        parts.append(f"document {loc.document}")
    if loc.path:
        parts.append(loc.path)
    return " ".join(parts) if parts else "earlier"


def cross_check(groups: list[GroupEntry], rules: list[RuleEntry]) -> list[Problem]:
    """Faults across objects: reserved or duplicate group names, duplicate rule IDs or names,
    rules whose `from`/`to` name no group. Returns every fault, located."""
    problems: list[Problem] = []
    seen_groups: dict[str, GroupEntry] = {}
    for g in groups:
        if g.name in RESERVED_GROUPS:
            problems.append(Problem(_at(g.location, "name"), f"group {g.name!r} is built in and cannot be redefined"))
            continue
        first = seen_groups.get(g.name)
        if first is not None:
            problems.append(
                Problem(
                    _at(g.location, "name"),
                    f"duplicate group name {g.name!r} (first defined at {_where(first.location)})",
                )
            )
            continue
        seen_groups[g.name] = g
    defined = set(seen_groups)
    seen_ids: dict[int, RuleEntry] = {}
    seen_names: dict[str, RuleEntry] = {}
    for r in rules:
        if r.id is not None:
            prior = seen_ids.get(r.id)
            if prior is not None:
                problems.append(
                    Problem(
                        _at(r.location, "id"),
                        f"duplicate rule ID {r.id} (first used at {_where(prior.location)})",
                    )
                )
            else:
                seen_ids[r.id] = r
        if r.name is not None:
            prior = seen_names.get(r.name)
            if prior is not None:
                problems.append(
                    Problem(
                        _at(r.location, "name"),
                        f"duplicate rule name {r.name!r} (first used at {_where(prior.location)})",
                    )
                )
            else:
                seen_names[r.name] = r
        for field_name, ref in (("from", r.from_), ("to", r.to)):
            if ref is not None and ref not in defined and ref not in RESERVED_GROUPS:
                problems.append(
                    Problem(
                        _at(r.location, field_name),
                        f"undefined group {ref!r}: define it under spec.groups or use external, nodes or containers",
                    )
                )
    return problems


def validate_policy(policy: Policy) -> Policy:
    """Re-run the cross-object checks (e.g. after `model_copy`); raises InputError, returns the policy."""
    return Policy.model_validate(policy.model_dump(by_alias=True))
