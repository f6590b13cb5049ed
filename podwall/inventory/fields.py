"""Reading parsed YAML field by field: typed access with located problems, and the name rules
(Kubernetes names, label keys and values, addresses) that the inventory and policy parsers share.

`FieldReader` records a `Problem` for every fault and returns a usable fallback, so that a
parser keeps going and reports every fault of an input at once.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from ipaddress import ip_address, ip_network
from typing import Any

from podwall.core.errors import Location, Problem
from podwall.inventory.model import RESERVED_GROUPS, IPAddress, IPNetwork

_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_LABEL_NAME = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?")
_KIND = re.compile(r"[A-Z][A-Za-z0-9]*")
_GROUP_NAME = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9_.:]*[A-Za-z0-9])?")


def check_namespace_name(name: str) -> str | None:
    """Why `name` is not a valid namespace name (an RFC 1123 label), or None."""
    if len(name) > 63 or not _DNS_LABEL.fullmatch(name):
        return f"invalid namespace name {name!r}: lower-case letters, digits and '-', at most 63 characters"
    return None


def check_object_name(name: str) -> str | None:
    """Why `name` is not a valid object name (an RFC 1123 subdomain), or None."""
    if len(name) > 253 or not _DNS_SUBDOMAIN.fullmatch(name):
        return f"invalid name {name!r}: lower-case letters, digits, '-' and '.', at most 253 characters"
    return None


def check_kind(kind: str) -> str | None:
    if not _KIND.fullmatch(kind):
        return f"invalid kind {kind!r}: a CamelCase word such as Deployment"
    return None


def check_port_name(name: str) -> str | None:
    """Why `name` cannot name a container port (an IANA service name), or None."""
    if len(name) > 15 or not _DNS_LABEL.fullmatch(name) or not any(c.isalpha() for c in name):
        return f"invalid port name {name!r}: lower-case letters, digits and '-', at most 15 characters"
    return None


def check_group_name(name: str) -> str | None:
    """Why `name` cannot name an external group, or None."""
    if not _GROUP_NAME.fullmatch(name) or len(name) > 253:
        return f"invalid group name {name!r}: letters, digits, '-', '_', '.' and ':'"
    if name in RESERVED_GROUPS:
        return f"group name {name!r} is reserved"
    if name.startswith("nv."):
        return f"group name {name!r}: the 'nv.' prefix is reserved for service groups"
    return None


def check_label_key(key: str) -> str | None:
    """Why `key` is not a valid Kubernetes label key (`[prefix/]name`), or None."""
    prefix, sep, name = key.rpartition("/")
    if sep and (not prefix or len(prefix) > 253 or not _DNS_SUBDOMAIN.fullmatch(prefix)):
        return f"invalid label key {key!r}: the prefix must be a DNS subdomain"
    if len(name) > 63 or not _LABEL_NAME.fullmatch(name):
        return f"invalid label key {key!r}: letters, digits, '-', '_' and '.', at most 63 characters"
    return None


def check_label_value(value: str) -> str | None:
    if value and (len(value) > 63 or not _LABEL_NAME.fullmatch(value)):
        return f"invalid label value {value!r}: letters, digits, '-', '_' and '.', at most 63 characters"
    return None


def parse_ip(text: str) -> IPAddress | str:
    """The address, or a message saying why `text` is not one."""
    try:
        return ip_address(text.strip())
    except ValueError:
        return f"invalid IP address {text!r}"


def parse_cidr(text: str) -> IPNetwork | str:
    """The network (a bare address counts as /32 or /128), or a message saying what is wrong."""
    try:
        return ip_network(text.strip())
    except ValueError:
        try:
            net = ip_network(text.strip(), strict=False)
        except ValueError:
            return f"invalid CIDR {text!r}"
        return f"invalid CIDR {text!r}: host bits are set (did you mean {net}?)"


def join_path(path: str, sub: str) -> str:
    """`a.b` + `c` -> `a.b.c`; `a` + `[0]` -> `a[0]`; an empty side yields the other."""
    if not path:
        return sub
    if not sub:
        return path
    return path + sub if sub.startswith("[") else f"{path}.{sub}"


class FieldReader:
    """Typed access to parsed YAML values that records a located `Problem` for every fault.

    Each method returns a usable fallback (None, empty) after recording the problem, so that a
    parser keeps going and reports every fault of an input at once.
    """

    __slots__ = ("document", "file", "obj", "prefix", "problems")

    def __init__(
        self,
        problems: list[Problem],
        file: str,
        document: int | None,
        obj: str | None = None,
        prefix: str = "",
    ) -> None:
        self.problems = problems
        self.file = file
        self.document = document
        self.obj = obj
        self.prefix = prefix

    def child(self, obj: str | None, prefix: str = "") -> FieldReader:
        """A reader for one object of the same document, sharing the problem list."""
        return FieldReader(self.problems, self.file, self.document, obj, prefix)

    def at(self, path: str) -> Location:
        return Location(self.file, self.document, self.obj, join_path(self.prefix, path) or None)

    def fail(self, path: str, message: str) -> None:
        self.problems.append(Problem(self.at(path), message))

    def mapping(self, value: Any, path: str, *, required: bool = False) -> dict[str, Any] | None:
        if value is None:
            if required:
                self.fail(path, "is required")
            return None
        if not isinstance(value, dict):
            self.fail(path, f"must be a mapping, not {_type_name(value)}")
            return None
        bad = [k for k in value if not isinstance(k, str)]
        for k in bad:
            self.fail(path, f"field names must be strings, not {_type_name(k)} {k!r}")
        return value if not bad else None

    def only(self, value: Mapping[str, Any], allowed: Iterable[str], path: str = "") -> None:
        """A problem for each field of `value` not in `allowed` (typos must not pass silently)."""
        known = set(allowed)
        for key in value:
            if key not in known:
                self.fail(join_path(path, key), f"unknown field (expected one of: {', '.join(sorted(known))})")

    def sequence(self, value: Any, path: str) -> list[Any]:
        if value is None:
            return []
        if not isinstance(value, list):
            self.fail(path, f"must be a list, not {_type_name(value)}")
            return []
        return value

    def string(self, value: Any, path: str, *, required: bool = False) -> str | None:
        if value is None:
            if required:
                self.fail(path, "is required")
            return None
        if not isinstance(value, str):
            self.fail(path, f"must be a string, not {_type_name(value)} {value!r}")
            return None
        if required and not value:
            self.fail(path, "must not be empty")
            return None
        return value

    def checked(
        self, value: Any, path: str, check: Callable[[str], str | None], *, required: bool = False
    ) -> str | None:
        """A string that must also pass `check` (a name rule)."""
        text = self.string(value, path, required=required)
        if text is None:
            return None
        error = check(text)
        if error:
            self.fail(path, error)
            return None
        return text

    def boolean(self, value: Any, path: str) -> bool:
        if value is None:
            return False
        if not isinstance(value, bool):
            self.fail(path, f"must be true or false, not {value!r}")
            return False
        return value

    def integer(self, value: Any, path: str, low: int, high: int, *, required: bool = False) -> int | None:
        if value is None:
            if required:
                self.fail(path, "is required")
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(path, f"must be an integer, not {_type_name(value)} {value!r}")
            return None
        if not low <= value <= high:
            self.fail(path, f"{value} is out of range {low}-{high}")
            return None
        return value

    def labels(self, value: Any, path: str) -> dict[str, str]:
        """A label map: string keys and values that Kubernetes would accept."""
        found = self.mapping(value, path)
        if not found:
            return {}
        good: dict[str, str] = {}
        for key, val in found.items():
            where = f'{path}["{key}"]'
            error = check_label_key(key)
            if error:
                self.fail(where, error)
            elif not isinstance(val, str):
                self.fail(where, f"label values must be strings, not {_type_name(val)} {val!r} (quote it)")
            elif error := check_label_value(val):
                self.fail(where, error)
            else:
                good[key] = val
        return good

    def ip(self, value: Any, path: str) -> IPAddress | None:
        if value is not None and not isinstance(value, str):
            # YAML 1.1 reads some unquoted IPv6 addresses (`1:2:3:4:5:6:7:8`) as numbers.
            self.fail(path, f"must be an address string, not {_type_name(value)} {value!r} (quote it)")
            return None
        text = self.string(value, path, required=True)
        if text is None:
            return None
        parsed = parse_ip(text)
        if isinstance(parsed, str):
            self.fail(path, parsed)
            return None
        return parsed

    def ips(self, value: Any, path: str) -> list[IPAddress]:
        """A list of addresses, each once."""
        found: list[IPAddress] = []
        for i, item in enumerate(self.sequence(value, path)):
            addr = self.ip(item, f"{path}[{i}]")
            if addr is not None:
                if addr in found:
                    self.fail(f"{path}[{i}]", f"address {addr} is listed twice")
                else:
                    found.append(addr)
        return found

    def cidrs(self, value: Any, path: str) -> list[IPNetwork]:
        found: list[IPNetwork] = []
        for i, item in enumerate(self.sequence(value, path)):
            text = self.string(item, f"{path}[{i}]", required=True)
            if text is None:
                continue
            net = parse_cidr(text)
            if isinstance(net, str):
                self.fail(f"{path}[{i}]", net)
            else:
                found.append(net)
        return found


def _type_name(value: Any) -> str:
    names = {
        dict: "a mapping",
        list: "a list",
        str: "a string",
        bool: "a boolean",
        int: "a number",
        float: "a number",
    }
    return "null" if value is None else names.get(type(value), type(value).__name__)
