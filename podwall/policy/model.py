"""The policy model: groups and zones, rules between them (tiers, priorities, L7 matchers), modes.

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

    Hostnames (`db.example.com`, `*.example.com`) never match an IP address: they match the
    server name a flow carries (TLS SNI, HTTP Host), see `matches_name`.
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

    def matches_name(self, name: str) -> bool:
        """Whether a server name (lower case, no trailing dot) is this hostname or under `*.domain`."""
        if self.hostname is None:
            return False
        return name_matches(self.hostname, name)


def name_matches(pattern: str, name: str) -> bool:
    """DNS-style wildcard test: `*.example.com` matches any name below example.com (not the
    domain itself); anything else matches exactly. Both sides compare case-insensitively."""
    pattern = pattern.lower().rstrip(".")
    name = name.lower().rstrip(".")
    if pattern == "*":
        return True
    if pattern.startswith("*."):
        return name.endswith(pattern[1:]) and len(name) > len(pattern) - 1
    return name == pattern


def check_name_pattern(text: str) -> str:
    """A hostname or `*.domain` pattern as L7 matchers store it (lower case); ValueError if invalid."""
    value = text.strip().lower().rstrip(".")
    if value == "*" or (_HOSTNAME_RE.match(value) and "*" not in value[2:]):
        return value
    raise ValueError(f"invalid name {text!r}: expected a hostname such as api.example.com or a wildcard *.example.com")


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
# L7 matchers


def _check_regex(value: str) -> str:
    if len(value) > MAX_VALUE_LEN:
        raise ValueError(f"regular expression is longer than {MAX_VALUE_LEN} characters")
    try:
        re.compile(value)
    except re.error as exc:
        raise ValueError(f"invalid regular expression {value!r}: {exc}") from None
    return value


def _check_method(text: str) -> str:
    value = text.strip().upper()
    if not value or not value.replace("-", "").replace("_", "").isalnum():
        raise ValueError(f"invalid method {text!r}")
    return value


def _check_token(text: str) -> str:
    value = text.strip()
    if not value or len(value) > MAX_NAME_LEN or any(ch.isspace() for ch in value):
        raise ValueError(f"invalid name {text!r}: expected a non-empty word without spaces")
    return value


Regex = Annotated[str, AfterValidator(_check_regex)]
NamePattern = Annotated[str, AfterValidator(check_name_pattern)]
Method = Annotated[str, AfterValidator(_check_method)]
Token = Annotated[str, AfterValidator(_check_token)]
SqlKind = Literal["select", "insert", "update", "delete", "ddl", "other"]
SQL_KINDS: tuple[str, ...] = ("select", "insert", "update", "delete", "ddl", "other")


class PathMatch(_Model):
    """An HTTP path test: exactly one of `exact`, `prefix` or `regex` (full match)."""

    exact: str | None = None
    prefix: str | None = None
    regex: Regex | None = None

    @model_validator(mode="after")
    def _one(self) -> PathMatch:
        given = [k for k in ("exact", "prefix", "regex") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("a path matcher takes exactly one of exact, prefix or regex")
        return self


class HeaderMatch(_Model):
    """An HTTP header test: `name` present, equal to `value`, or fully matching `regex`."""

    name: Token
    value: str | None = None
    regex: Regex | None = None

    @model_validator(mode="after")
    def _one(self) -> HeaderMatch:
        if self.value is not None and self.regex is not None:
            raise ValueError("a header matcher takes value or regex, not both")
        return self


class HttpMatch(_Model):
    """HTTP requests: method in `methods`, path matching one of `paths`, host one of `hosts`
    (wildcards `*.domain`), and every header test in `headers`. Empty lists do not constrain."""

    methods: list[Method] = Field(default_factory=list)
    paths: list[PathMatch] = Field(default_factory=list)
    hosts: list[NamePattern] = Field(default_factory=list)
    headers: list[HeaderMatch] = Field(default_factory=list)


class GrpcMatch(_Model):
    """gRPC calls: service (`pkg.Service`) one of `services`, method name one of `methods`."""

    services: list[Token] = Field(default_factory=list)
    methods: list[Token] = Field(default_factory=list)


class DnsMatch(_Model):
    """DNS queries whose name is one of `names` (wildcards `*.domain`)."""

    names: list[NamePattern] = Field(default_factory=list)


class RedisMatch(_Model):
    """Redis commands (case-insensitive) in `commands`."""

    commands: list[Method] = Field(default_factory=list)


class SqlMatch(_Model):
    """MySQL/PostgreSQL statements whose kind is in `kinds`."""

    kinds: list[SqlKind] = Field(default_factory=list)


class TlsMatch(_Model):
    """TLS handshakes whose SNI is one of `sni` (wildcards `*.domain`)."""

    sni: list[NamePattern] = Field(default_factory=list)


L7_PROTOCOLS: tuple[str, ...] = ("http", "grpc", "dns", "redis", "sql", "tls")


class L7Match(_Model):
    """A rule's `l7` block: one section per protocol; a request is admitted when the section of
    its protocol exists and holds for it (see docs/policy.md, "L7 matchers")."""

    http: HttpMatch | None = None
    grpc: GrpcMatch | None = None
    dns: DnsMatch | None = None
    redis: RedisMatch | None = None
    sql: SqlMatch | None = None
    tls: TlsMatch | None = None

    @model_validator(mode="after")
    def _some(self) -> L7Match:
        if all(getattr(self, k) is None for k in L7_PROTOCOLS):
            raise ValueError(f"l7 needs at least one of {', '.join(L7_PROTOCOLS)}")
        return self

    @property
    def sections(self) -> tuple[str, ...]:
        return tuple(k for k in L7_PROTOCOLS if getattr(self, k) is not None)


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
# Checks across objects


@dataclass(frozen=True, slots=True)
class GroupEntry:
    """What `cross_check` needs of a group: its name and where it was declared (path of the item)."""

    name: str
    location: Location
    members: tuple[str, ...] = ()  # a zone's members


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
    problems.extend(_zone_problems(seen_groups, defined))
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


def _zone_problems(groups: dict[str, GroupEntry], defined: set[str]) -> list[Problem]:
    """Zones naming undefined groups, and zones that contain themselves through other zones."""
    problems: list[Problem] = []
    for g in groups.values():
        for i, member in enumerate(g.members):
            if member not in defined and member not in RESERVED_GROUPS:
                problems.append(
                    Problem(
                        _at(g.location, f"members[{i}]"),
                        f"zone {g.name!r} names undefined group {member!r}",
                    )
                )
    state: dict[str, int] = {}  # 1: being visited, 2: done

    def visit(name: str, trail: list[str]) -> None:
        state[name] = 1
        for member in groups[name].members:
            if member not in groups:
                continue
            if state.get(member) == 1:
                cycle = " -> ".join([*trail[trail.index(member) :], member])
                entry = groups[member]
                problems.append(Problem(_at(entry.location, "members"), f"zones contain each other: {cycle}"))
            elif state.get(member) is None:
                visit(member, [*trail, member])
        state[name] = 2

    for name, g in groups.items():
        if g.members and name not in state:
            visit(name, [name])
    return problems


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
