"""LAB.yaml: the description of a lab cluster (node, CIDRs, namespaces, deployments, pods, services).

The schema is pydantic; `parse_lab` turns every schema and consistency fault of one file into a
located `Problem` (field path and YAML line) and raises one `InputError` listing them all, so a
lab is either accepted whole or not built at all. Pure: `load_lab` is the thin file reader.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from podwall.core.errors import InputError, Location, Problem

API_VERSION = "podwall.io/v1"
LAB_KIND = "Lab"
NODE_POD_NAME = "node"  # the node's namespace is `pw-<lab>-node`: no pod may take that name

_LAB_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,14}[a-z0-9])?$")
_DNS_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
_LABEL_KEY = re.compile(r"^([a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")
_LABEL_VALUE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$")
_HOST_PORT = re.compile(r"^[A-Za-z0-9.-]+:[0-9]{1,5}$")


def _dns_label(value: str) -> str:
    if not _DNS_LABEL.match(value):
        raise ValueError(f"{value!r} is not a DNS label (lower-case letters, digits and '-', at most 63)")
    return value


def _labels(value: dict[str, str]) -> dict[str, str]:
    for key, val in value.items():
        if not _LABEL_KEY.match(key):
            raise ValueError(f"{key!r} is not a valid label key")
        if not _LABEL_VALUE.match(val):
            raise ValueError(f"label {key}: {val!r} is not a valid label value")
    return value


Name = Annotated[str, Field(min_length=1, max_length=63)]
Port = Annotated[int, Field(ge=1, le=65535)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RedisServer(_Strict):
    """redis-server from Debian, no persistence."""

    kind: Literal["redis"]
    port: Port = 6379


class NginxServer(_Strict):
    """nginx from Debian with a generated config: a fixed page, optional reverse-proxy paths."""

    kind: Literal["nginx"]
    port: Port = 80
    body: str = "hello from nginx\n"
    proxy: dict[str, str] = Field(default_factory=dict)  # path prefix -> upstream URL (http://node:8888)

    @field_validator("proxy")
    @classmethod
    def _proxy(cls, value: dict[str, str]) -> dict[str, str]:
        for path, url in value.items():
            if not path.startswith("/"):
                raise ValueError(f"proxy path {path!r} must start with '/'")
            if not re.match(r"^http://[A-Za-z0-9.-]+(:[0-9]{1,5})?(/\S*)?$", url):
                raise ValueError(f"proxy {path}: {url!r} is not an http://host[:port] URL")
        return value


class PostgresServer(_Strict):
    """PostgreSQL from Debian: a fresh cluster (initdb) in the pod's state dir, trust auth."""

    kind: Literal["postgresql"]
    port: Port = 5432


class HttpRoute(_Strict):
    """One path of the Python HTTP service: a fixed answer, or a Redis command relayed to `redis`."""

    status: Annotated[int, Field(ge=100, le=599)] = 200
    body: str = ""
    contentType: str = "text/plain"
    redis: str | None = None  # host:port; the answer is the Redis reply
    command: list[str] = Field(default_factory=lambda: ["PING"])

    @field_validator("redis")
    @classmethod
    def _redis(cls, value: str | None) -> str | None:
        if value is not None and not _HOST_PORT.match(value):
            raise ValueError(f"{value!r} is not host:port")
        return value


class HttpServer(_Strict):
    """The small Python HTTP service of podwall/lab/services (routes by exact path, 404 otherwise)."""

    kind: Literal["http"]
    port: Port = 8080
    routes: dict[str, HttpRoute] = Field(default_factory=lambda: {"/": HttpRoute(body="ok\n")})

    @field_validator("routes")
    @classmethod
    def _routes(cls, value: dict[str, HttpRoute]) -> dict[str, HttpRoute]:
        for path in value:
            if not path.startswith("/"):
                raise ValueError(f"route {path!r} must start with '/'")
        return value


class DnsServer(_Strict):
    """dnsmasq answering the lab's names (services and pods) from the lab hosts file."""

    kind: Literal["dnsmasq"]
    port: Port = 53


class NoServer(_Strict):
    """Nothing runs in the pod (a client, or an attacker's foothold)."""

    kind: Literal["none"]


Server = Annotated[
    RedisServer | NginxServer | PostgresServer | HttpServer | DnsServer | NoServer, Field(discriminator="kind")
]
SERVER_KINDS = ("redis", "nginx", "postgresql", "http", "dnsmasq", "none")


def _server_shorthand(value: Any) -> Any:
    """`server: redis` means `server: {kind: redis}`."""
    return {"kind": value} if isinstance(value, str) else value


class NamespaceSpec(_Strict):
    name: Name
    labels: dict[str, str] = Field(default_factory=dict)

    _name = field_validator("name")(_dns_label)
    _check_labels = field_validator("labels")(_labels)


class _PodTemplate(_Strict):
    name: Name
    namespace: Name = "default"
    labels: dict[str, str] = Field(default_factory=dict)
    image: str | None = None
    server: Server = Field(default_factory=lambda: NoServer(kind="none"))

    _name = field_validator("name", "namespace")(_dns_label)
    _check_labels = field_validator("labels")(_labels)

    @field_validator("server", mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        return _server_shorthand(value)


class DeploymentSpec(_PodTemplate):
    replicas: Annotated[int, Field(ge=0, le=64)] = 1


class PodSpec(_PodTemplate):
    """A bare pod (no owner)."""


class ServicePortSpec(_Strict):
    name: str | None = None
    port: Port
    targetPort: Port | None = None
    protocol: Literal["TCP", "UDP"] = "TCP"


class ServiceSpec(_Strict):
    name: Name
    namespace: Name = "default"
    selector: dict[str, str]
    ports: Annotated[list[ServicePortSpec], Field(min_length=1)]
    clusterIP: str | None = None
    clusterIPv6: str | None = None

    _name = field_validator("name", "namespace")(_dns_label)
    _check_labels = field_validator("selector")(_labels)


class NodeSpec(_Strict):
    name: Name = "node-1"
    labels: dict[str, str] = Field(default_factory=dict)

    _check_labels = field_validator("labels")(_labels)


class LabSpec(_Strict):
    """A whole LAB.yaml document."""

    apiVersion: Literal["podwall.io/v1"]
    kind: Literal["Lab"]
    name: str
    cluster: str | None = None
    node: NodeSpec = Field(default_factory=NodeSpec)
    podCIDR: str = "10.244.0.0/16"
    podCIDRv6: str | None = None
    serviceCIDR: str = "10.96.0.0/16"
    serviceCIDRv6: str | None = None
    dns: str | None = None  # namespace/service whose cluster IP goes in the pods' resolv.conf
    namespaces: list[NamespaceSpec] = Field(default_factory=list)
    deployments: list[DeploymentSpec] = Field(default_factory=list)
    pods: list[PodSpec] = Field(default_factory=list)
    services: list[ServiceSpec] = Field(default_factory=list)

    @field_validator("name")
    @classmethod
    def _lab_name(cls, value: str) -> str:
        if not _LAB_NAME.match(value):
            raise ValueError(f"{value!r} is not a lab name (lower-case letters, digits and '-', at most 16)")
        return value

    @property
    def cluster_name(self) -> str:
        return self.cluster or self.name


# ---------------------------------------------------------------------------------------------
# Located errors


def _path(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in SERVER_KINDS and out.endswith(".server"):
            continue  # pydantic names the union member; the user wrote no such field
        else:
            out = f"{out}.{part}" if out else str(part)
    return out


def _lines(node: yaml.Node, path: str, out: dict[str, int]) -> None:
    out.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            if isinstance(key, yaml.ScalarNode):
                child = f"{path}.{key.value}" if path else str(key.value)
                out.setdefault(child, key.start_mark.line + 1)
                _lines(value, child, out)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _lines(item, f"{path}[{i}]", out)


def _line_of(lines: dict[str, int], path: str) -> int | None:
    while path:
        if path in lines:
            return lines[path]
        cut = max(path.rfind("."), path.rfind("["))
        path = path[:cut] if cut > 0 else ""
    return None


def _message(err: Any) -> str:
    kind, value, ctx = err["type"], err.get("input"), err.get("ctx") or {}
    name = str(err["loc"][-1]) if err["loc"] else ""
    if kind == "extra_forbidden":
        return f"unknown field {name!r}"
    if kind == "missing":
        return f"missing required field {name!r}"
    if kind == "literal_error":
        return f"invalid value {value!r}: expected {ctx.get('expected', 'another value')}"
    if kind == "union_tag_invalid":
        return f"unknown server kind {ctx.get('tag')!r}: expected one of {', '.join(SERVER_KINDS)}"
    if kind in ("int_type", "int_parsing"):
        return f"expected an integer, got {value!r}"
    if kind == "string_type":
        return f"expected a string, got {value!r}"
    if kind in ("greater_than_equal", "less_than_equal"):
        return f"{value!r} is out of range ({err.get('msg', '')})"
    return str(err.get("msg", "invalid value")).removeprefix("Value error, ")


class _Checker:
    """Cross-field checks pydantic cannot express; collects every fault with its path."""

    def __init__(self, spec: LabSpec) -> None:
        self.spec = spec
        self.faults: list[tuple[str, str]] = []

    def fail(self, path: str, message: str) -> None:
        self.faults.append((path, message))

    def network(
        self, path: str, text: str | None, version: int
    ) -> ipaddress.IPv4Network | ipaddress.IPv6Network | None:
        if text is None:
            return None
        try:
            net = ipaddress.ip_network(text, strict=True)
        except ValueError as exc:
            self.fail(path, f"{text!r} is not a CIDR: {exc}")
            return None
        if net.version != version:
            self.fail(path, f"{text} is not an IPv{version} CIDR")
            return None
        return net

    def run(self) -> list[tuple[str, str]]:
        s = self.spec
        pod4 = self.network("podCIDR", s.podCIDR, 4)
        pod6 = self.network("podCIDRv6", s.podCIDRv6, 6)
        svc4 = self.network("serviceCIDR", s.serviceCIDR, 4)
        svc6 = self.network("serviceCIDRv6", s.serviceCIDRv6, 6)
        for a, b, where in ((pod4, svc4, "serviceCIDR"), (pod6, svc6, "serviceCIDRv6")):
            if a is not None and b is not None and a.overlaps(b):
                self.fail(where, f"{b} overlaps the pod CIDR {a}")
        namespaces = {ns.name for ns in s.namespaces}
        self.unique("namespaces", [(ns.name,) for ns in s.namespaces])
        self.unique("deployments", [(d.namespace, d.name) for d in s.deployments])
        # Pod names are unique lab-wide, not only per namespace: they name the network namespaces.
        self.unique("pods", [(p.name,) for p in s.pods])
        self.unique("services", [(v.namespace, v.name) for v in s.services])
        pod_count = sum(d.replicas for d in s.deployments) + len(s.pods)
        for net, where in ((pod4, "podCIDR"), (pod6, "podCIDRv6")):
            if net is not None and net.num_addresses - 3 < pod_count:  # network, gateway, broadcast
                self.fail(where, f"{net} has room for {max(net.num_addresses - 3, 0)} pods; the lab has {pod_count}")
        for kind, items in (("deployments", s.deployments), ("pods", s.pods)):
            for i, item in enumerate(items):
                if item.namespace not in namespaces:
                    self.fail(f"{kind}[{i}].namespace", f"namespace {item.namespace!r} is not listed under namespaces")
        for i, pod in enumerate(s.pods):
            if pod.name == NODE_POD_NAME:
                self.fail(f"pods[{i}].name", f"{NODE_POD_NAME!r} names the node's network namespace; choose another")
        for i, svc in enumerate(s.services):
            if svc.namespace not in namespaces:
                self.fail(f"services[{i}].namespace", f"namespace {svc.namespace!r} is not listed under namespaces")
            self.cluster_ip(f"services[{i}].clusterIP", svc.clusterIP, svc4, "serviceCIDR")
            self.cluster_ip(f"services[{i}].clusterIPv6", svc.clusterIPv6, svc6, "serviceCIDRv6")
            self.unique(f"services[{i}].ports", [(p.protocol, str(p.port)) for p in svc.ports])
        self.unique_ips()
        if s.dns is not None:
            ns, _, name = s.dns.partition("/")
            if not any(v.namespace == ns and v.name == name for v in s.services):
                self.fail("dns", f"{s.dns!r} is not a service of this lab (write namespace/name)")
        return self.faults

    def cluster_ip(self, path: str, text: str | None, net: Any, cidr_field: str) -> None:
        if text is None:
            return
        if net is None:
            self.fail(path, f"needs {cidr_field}")
            return
        try:
            ip = ipaddress.ip_address(text)
        except ValueError:
            self.fail(path, f"{text!r} is not an IP address")
            return
        if ip not in net or ip in (net.network_address, net.broadcast_address):
            self.fail(path, f"{ip} is not a usable address of {cidr_field} {net}")

    def unique(self, path: str, keys: list[tuple[str, ...]]) -> None:
        seen: dict[tuple[str, ...], int] = {}
        for i, key in enumerate(keys):
            if key in seen:
                self.fail(f"{path}[{i}]", f"{'/'.join(key)} is listed twice ({path}[{seen[key]}] and {path}[{i}])")
            else:
                seen[key] = i

    def unique_ips(self) -> None:
        seen: dict[str, int] = {}
        for i, svc in enumerate(self.spec.services):
            for field, ip in (("clusterIP", svc.clusterIP), ("clusterIPv6", svc.clusterIPv6)):
                if ip is None:
                    continue
                if ip in seen:
                    self.fail(f"services[{i}].{field}", f"{ip} is also the cluster IP of services[{seen[ip]}]")
                seen[ip] = i


def _yaml_problems(text: str, file: str) -> tuple[Any, dict[str, int], list[Problem]]:
    try:
        docs = [d for d in yaml.compose_all(text) if d is not None]
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        return None, {}, [Problem(Location(file), f"not valid YAML{where}: {getattr(exc, 'problem', exc)}")]
    if len(docs) != 1:
        return None, {}, [Problem(Location(file), f"expected one YAML document, found {len(docs)}")]
    lines: dict[str, int] = {}
    _lines(docs[0], "", lines)
    data = yaml.safe_load(text)
    if not isinstance(data, dict):
        return None, lines, [Problem(Location(file), "a lab is a YAML mapping (apiVersion, kind, name, ...)")]
    return data, lines, []


def _located(file: str, lines: dict[str, int], faults: Iterator[tuple[str, str]]) -> list[Problem]:
    problems = []
    for path, message in faults:
        line = _line_of(lines, path)
        suffix = f" (line {line})" if line is not None else ""
        problems.append(Problem(Location(file, path=path or None), message + suffix))
    return problems


def parse_lab(text: str, file: str = "<lab>") -> LabSpec:
    """A validated lab from YAML text; raises `InputError` listing every located fault."""
    data, lines, problems = _yaml_problems(text, file)
    if problems:
        raise InputError(file, problems)
    try:
        spec = LabSpec.model_validate(data)
    except ValidationError as exc:
        faults = ((_path(tuple(e["loc"])), _message(e)) for e in exc.errors())
        raise InputError(file, _located(file, lines, faults)) from None
    faults_list = _Checker(spec).run()
    if faults_list:
        raise InputError(file, _located(file, lines, iter(faults_list)))
    return spec


def load_lab(path: str | Path) -> LabSpec:
    """Read and validate a LAB.yaml file."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(str(p), [Problem(Location(str(p)), f"cannot read: {exc}")]) from None
    return parse_lab(text, str(p))
