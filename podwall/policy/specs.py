"""What a name, port or address in a policy file may be: the grammar of `ports` entries,
`address` values, group, application and host names, and their parsed forms.

Plain functions and frozen dataclasses with no pydantic models, so that the policy models, the
L7 matchers, the compiler and the format readers can all use them without importing each other.
"""

from __future__ import annotations

import contextlib
import ipaddress
import re
from dataclasses import dataclass
from typing import Annotated

from pydantic import AfterValidator

from podwall.core.types import PROTO_ICMP, PROTO_ICMPV6, PROTO_TCP, PROTO_UDP

# Built-in groups: every policy has them, no policy may define them.
RESERVED_GROUPS: tuple[str, ...] = ("external", "nodes", "containers")

MAX_VALUE_LEN = 1024  # bounds regex compile cost and keeps files reviewable
MAX_NAME_LEN = 253

# A leading colon admits IPv6 addresses such as ::1, which name unmanaged-address groups.
_GROUP_NAME_RE = re.compile(r"^[A-Za-z0-9:][A-Za-z0-9._:/@-]*$")
_APP_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_.+-]*$")
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
