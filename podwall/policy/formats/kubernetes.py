"""Kubernetes network policy objects -> a validated, immutable model.

Reads `NetworkPolicy` (networking.k8s.io/v1), `AdminNetworkPolicy` and
`BaselineAdminNetworkPolicy` (policy.networking.k8s.io/v1alpha1) from parsed documents, single
objects or `*List` dumps; every other kind is skipped (the inventory loader reads workloads).
Every fault is reported at once in one `InputError`, located by file, document, object and
field path, and nothing is returned half-parsed. The semantics live in `podwall.policy.netpol`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from ipaddress import IPv4Network, IPv6Network, ip_network
from typing import Any

from podwall.core.errors import InputError, Location, Problem
from podwall.inventory.fields import (
    FieldReader,
    check_label_key,
    check_label_value,
    check_namespace_name,
    check_port_name,
)
from podwall.inventory.kube import Document, read_documents
from podwall.inventory.model import DEFAULT_NAMESPACE

NETWORK_POLICY = "NetworkPolicy"
ADMIN_NETWORK_POLICY = "AdminNetworkPolicy"
BASELINE_ADMIN_NETWORK_POLICY = "BaselineAdminNetworkPolicy"
POLICY_KINDS = frozenset({NETWORK_POLICY, ADMIN_NETWORK_POLICY, BASELINE_ADMIN_NETWORK_POLICY})
PROTOCOLS = ("SCTP", "TCP", "UDP")  # sorted: the order netpol-analyzer prints them in
INGRESS = "Ingress"
EGRESS = "Egress"
ALLOW, DENY, PASS = "Allow", "Deny", "Pass"
MAX_ANP_PRIORITY = 1000
MAX_ADMIN_RULES = 100

IPNet = IPv4Network | IPv6Network

_OPERATORS = frozenset({"In", "NotIn", "Exists", "DoesNotExist"})


# --- model ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Requirement:
    """One `matchExpressions` entry: `key` `operator` (In, NotIn, Exists, DoesNotExist) `values`."""

    key: str
    operator: str
    values: frozenset[str] = frozenset()

    def matches(self, labels: Mapping[str, str]) -> bool:
        value = labels.get(self.key)
        if self.operator == "In":
            return value is not None and value in self.values
        if self.operator == "NotIn":
            return value is None or value not in self.values
        if self.operator == "Exists":
            return value is not None
        return value is None


@dataclass(frozen=True, slots=True)
class Selector:
    """A label selector; the empty selector matches everything."""

    match_labels: tuple[tuple[str, str], ...] = ()
    expressions: tuple[Requirement, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        return all(labels.get(k) == v for k, v in self.match_labels) and all(
            e.matches(labels) for e in self.expressions
        )

    @property
    def empty(self) -> bool:
        return not self.match_labels and not self.expressions


MATCH_ALL = Selector()


@dataclass(frozen=True, slots=True)
class IPBlock:
    """`ipBlock`: a CIDR minus the `except` CIDRs inside it."""

    cidr: IPNet
    excepts: tuple[IPNet, ...] = ()


@dataclass(frozen=True, slots=True)
class NetpolPeer:
    """One `from`/`to` entry of a NetworkPolicy rule: selectors or an ipBlock.

    `namespace_selector` None means the policy's own namespace; `pod_selector` None means every
    pod of the selected namespaces.
    """

    pod_selector: Selector | None = None
    namespace_selector: Selector | None = None
    ip_block: IPBlock | None = None


@dataclass(frozen=True, slots=True)
class NetpolPort:
    """One `ports` entry: protocol and a number, a range (`end_port`), a container port name, or all (None)."""

    protocol: str = "TCP"
    port: int | str | None = None
    end_port: int | None = None


@dataclass(frozen=True, slots=True)
class NetpolRule:
    """An ingress or egress rule: empty `peers` matches every peer, empty `ports` every port."""

    peers: tuple[NetpolPeer, ...] = ()
    ports: tuple[NetpolPort, ...] = ()


@dataclass(frozen=True, slots=True)
class NetworkPolicy:
    """A namespaced NetworkPolicy: which pods it isolates, in which directions, and what it allows."""

    name: str
    namespace: str
    pod_selector: Selector = MATCH_ALL
    ingress: tuple[NetpolRule, ...] = ()
    egress: tuple[NetpolRule, ...] = ()
    policy_types: frozenset[str] = frozenset({INGRESS})

    def affects(self, direction: str) -> bool:
        return direction in self.policy_types


@dataclass(frozen=True, slots=True)
class AdminPeer:
    """A subject or rule peer of an (Baseline)AdminNetworkPolicy.

    kind `namespaces` (every pod of matching namespaces), `pods` (both selectors), `networks`
    (egress only: CIDRs) or `nodes` (egress only; nodes are not modelled, so it matches nothing).
    """

    kind: str
    namespace_selector: Selector = MATCH_ALL
    pod_selector: Selector = MATCH_ALL
    networks: tuple[IPNet, ...] = ()


@dataclass(frozen=True, slots=True)
class AdminPort:
    """A `ports` entry: a protocol with a port range (`portNumber` is a range of one), or a `namedPort`."""

    protocol: str = "TCP"
    start: int = 0
    end: int = 0
    name: str | None = None


@dataclass(frozen=True, slots=True)
class AdminRule:
    """An admin rule: its action applies to the matching peers on `ports` (None: every port)."""

    name: str
    action: str
    peers: tuple[AdminPeer, ...]
    ports: tuple[AdminPort, ...] | None = None


@dataclass(frozen=True, slots=True)
class AdminPolicy:
    """An AdminNetworkPolicy (`priority` set, lower first) or the BaselineAdminNetworkPolicy (`priority` None)."""

    name: str
    priority: int | None
    subject: AdminPeer
    ingress: tuple[AdminRule, ...] = ()
    egress: tuple[AdminRule, ...] = ()

    @property
    def baseline(self) -> bool:
        return self.priority is None


@dataclass(frozen=True, slots=True)
class PolicySet:
    """Every policy of an input: NetworkPolicies, AdminNetworkPolicies by priority, and the baseline."""

    network_policies: tuple[NetworkPolicy, ...] = ()
    admin_policies: tuple[AdminPolicy, ...] = ()
    baseline: AdminPolicy | None = None


# --- parsing ----------------------------------------------------------------------------------


class _Parser:
    """Reads policy objects field by field, recording a located problem for every fault."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems

    # -- shared pieces ---------------------------------------------------------------------------

    def selector(self, r: FieldReader, value: Any, path: str) -> Selector | None:
        data = r.mapping(value, path)
        if data is None:
            return None if value is None else MATCH_ALL
        r.only(data, ("matchLabels", "matchExpressions"), path)
        labels = r.labels(data.get("matchLabels"), f"{path}.matchLabels")
        expressions: list[Requirement] = []
        for i, item in enumerate(r.sequence(data.get("matchExpressions"), f"{path}.matchExpressions")):
            where = f"{path}.matchExpressions[{i}]"
            entry = r.mapping(item, where, required=True)
            if entry is None:
                continue
            r.only(entry, ("key", "operator", "values"), where)
            key = r.checked(entry.get("key"), f"{where}.key", check_label_key, required=True)
            operator = r.string(entry.get("operator"), f"{where}.operator", required=True)
            if operator is not None and operator not in _OPERATORS:
                r.fail(f"{where}.operator", f"unknown operator {operator!r} (In, NotIn, Exists or DoesNotExist)")
                operator = None
            values: list[str] = []
            for j, v in enumerate(r.sequence(entry.get("values"), f"{where}.values")):
                text = r.checked(v, f"{where}.values[{j}]", check_label_value)
                if text is not None:
                    values.append(text)
            if operator in ("In", "NotIn") and not values:
                r.fail(f"{where}.values", f"operator {operator} needs at least one value")
            if operator in ("Exists", "DoesNotExist") and values:
                r.fail(f"{where}.values", f"operator {operator} takes no values")
            if key is not None and operator is not None:
                expressions.append(Requirement(key, operator, frozenset(values)))
        return Selector(tuple(sorted(labels.items())), tuple(expressions))

    def cidr(self, r: FieldReader, value: Any, path: str) -> IPNet | None:
        text = r.string(value, path, required=True)
        if text is None:
            return None
        try:
            # Kubernetes accepts host bits in a CIDR (`10.0.0.1/8` means 10.0.0.0/8).
            return ip_network(text.strip(), strict=False)
        except ValueError:
            r.fail(path, f"invalid CIDR {text!r}")
            return None

    def protocol(self, r: FieldReader, value: Any, path: str) -> str:
        text = r.string(value, path)
        if text is None:
            return "TCP"
        if text not in PROTOCOLS:
            r.fail(path, f"unknown protocol {text!r} (TCP, UDP or SCTP)")
        return text

    # -- NetworkPolicy ---------------------------------------------------------------------------

    def network_policy(self, r: FieldReader, data: dict[str, Any], name: str, namespace: str) -> NetworkPolicy | None:
        before = len(self.problems)
        spec = r.mapping(data.get("spec"), "spec", required=True) or {}
        r.only(spec, ("podSelector", "policyTypes", "ingress", "egress"), "spec")
        pod_selector = self.selector(r, spec.get("podSelector"), "spec.podSelector") or MATCH_ALL
        ingress = tuple(self.netpol_rules(r, spec.get("ingress"), "spec.ingress", "from"))
        egress = tuple(self.netpol_rules(r, spec.get("egress"), "spec.egress", "to"))
        types: set[str] = set()
        for i, item in enumerate(r.sequence(spec.get("policyTypes"), "spec.policyTypes")):
            text = r.string(item, f"spec.policyTypes[{i}]", required=True)
            if text is not None and text not in (INGRESS, EGRESS):
                r.fail(f"spec.policyTypes[{i}]", f"unknown policy type {text!r} (Ingress or Egress)")
            elif text is not None:
                types.add(text)
        if not spec.get("policyTypes"):
            # Without policyTypes a policy isolates ingress, and egress only when it has egress rules.
            types = {INGRESS} | ({EGRESS} if egress else set())
        if len(self.problems) != before:
            return None
        return NetworkPolicy(name, namespace, pod_selector, ingress, egress, frozenset(types))

    def netpol_rules(self, r: FieldReader, value: Any, path: str, peers_key: str) -> list[NetpolRule]:
        rules: list[NetpolRule] = []
        for i, item in enumerate(r.sequence(value, path)):
            where = f"{path}[{i}]"
            entry = r.mapping(item, where)
            if entry is None:
                if item is None:  # `- {}` written as `-`: a rule matching everything
                    rules.append(NetpolRule())
                continue
            r.only(entry, (peers_key, "ports"), where)
            peers = [
                self.netpol_peer(r, p, f"{where}.{peers_key}[{j}]")
                for j, p in enumerate(r.sequence(entry.get(peers_key), f"{where}.{peers_key}"))
            ]
            ports = [
                self.netpol_port(r, p, f"{where}.ports[{j}]")
                for j, p in enumerate(r.sequence(entry.get("ports"), f"{where}.ports"))
            ]
            rules.append(NetpolRule(tuple(p for p in peers if p is not None), tuple(p for p in ports if p is not None)))
        return rules

    def netpol_peer(self, r: FieldReader, value: Any, path: str) -> NetpolPeer | None:
        entry = r.mapping(value, path, required=True)
        if entry is None:
            return None
        r.only(entry, ("podSelector", "namespaceSelector", "ipBlock"), path)
        pods = self.selector(r, entry.get("podSelector"), f"{path}.podSelector")
        namespaces = self.selector(r, entry.get("namespaceSelector"), f"{path}.namespaceSelector")
        block: IPBlock | None = None
        if entry.get("ipBlock") is not None:
            if pods is not None or namespaces is not None:
                r.fail(f"{path}.ipBlock", "ipBlock cannot be combined with podSelector or namespaceSelector")
                return None
            block = self.ip_block(r, entry.get("ipBlock"), f"{path}.ipBlock")
            return NetpolPeer(ip_block=block) if block is not None else None
        if pods is None and namespaces is None:
            r.fail(path, "a peer needs podSelector, namespaceSelector or ipBlock")
            return None
        return NetpolPeer(pods, namespaces)

    def ip_block(self, r: FieldReader, value: Any, path: str) -> IPBlock | None:
        entry = r.mapping(value, path, required=True)
        if entry is None:
            return None
        r.only(entry, ("cidr", "except"), path)
        cidr = self.cidr(r, entry.get("cidr"), f"{path}.cidr")
        excepts: list[IPNet] = []
        for i, item in enumerate(r.sequence(entry.get("except"), f"{path}.except")):
            net = self.cidr(r, item, f"{path}.except[{i}]")
            if net is None or cidr is None:
                continue
            if net.version != cidr.version or not net.subnet_of(cidr):  # type: ignore[arg-type]
                r.fail(f"{path}.except[{i}]", f"{net} is not inside the ipBlock's CIDR {cidr}")
                continue
            excepts.append(net)
        return IPBlock(cidr, tuple(excepts)) if cidr is not None else None

    def netpol_port(self, r: FieldReader, value: Any, path: str) -> NetpolPort | None:
        entry = r.mapping(value, path)
        if entry is None:
            return NetpolPort() if value is None else None
        r.only(entry, ("protocol", "port", "endPort"), path)
        protocol = self.protocol(r, entry.get("protocol"), f"{path}.protocol")
        raw = entry.get("port")
        port: int | str | None = None
        if isinstance(raw, str):
            port = r.checked(raw, f"{path}.port", check_port_name)
            if port is None:
                return None
        elif raw is not None:
            port = r.integer(raw, f"{path}.port", 1, 65535)
            if port is None:
                return None
        end: int | None = None
        if entry.get("endPort") is not None:
            end = r.integer(entry.get("endPort"), f"{path}.endPort", 1, 65535)
            if end is None:
                return None
            if not isinstance(port, int):
                r.fail(f"{path}.endPort", "endPort needs a numeric port")
                return None
            if end < port:
                r.fail(f"{path}.endPort", f"endPort {end} is below port {port}")
                return None
        return NetpolPort(protocol, port, end)

    # -- AdminNetworkPolicy / BaselineAdminNetworkPolicy ------------------------------------------

    def admin_policy(self, r: FieldReader, data: dict[str, Any], name: str, baseline: bool) -> AdminPolicy | None:
        before = len(self.problems)
        spec = r.mapping(data.get("spec"), "spec", required=True) or {}
        fields = ("subject", "ingress", "egress") if baseline else ("priority", "subject", "ingress", "egress")
        r.only(spec, fields, "spec")
        priority: int | None = None
        if not baseline:
            priority = r.integer(spec.get("priority"), "spec.priority", 0, MAX_ANP_PRIORITY, required=True)
        subject = self.admin_peer(r, spec.get("subject"), "spec.subject", ("namespaces", "pods"))
        actions = (ALLOW, DENY) if baseline else (ALLOW, DENY, PASS)
        ingress = self.admin_rules(r, spec.get("ingress"), "spec.ingress", "from", ("namespaces", "pods"), actions)
        egress = self.admin_rules(
            r, spec.get("egress"), "spec.egress", "to", ("namespaces", "pods", "nodes", "networks"), actions
        )
        if len(self.problems) != before or subject is None:
            return None
        return AdminPolicy(name, priority, subject, tuple(ingress), tuple(egress))

    def admin_rules(
        self,
        r: FieldReader,
        value: Any,
        path: str,
        peers_key: str,
        peer_kinds: tuple[str, ...],
        actions: tuple[str, ...],
    ) -> list[AdminRule]:
        rules: list[AdminRule] = []
        items = r.sequence(value, path)
        if len(items) > MAX_ADMIN_RULES:
            r.fail(path, f"at most {MAX_ADMIN_RULES} rules are allowed, not {len(items)}")
        for i, item in enumerate(items):
            where = f"{path}[{i}]"
            entry = r.mapping(item, where, required=True)
            if entry is None:
                continue
            r.only(entry, ("name", "action", peers_key, "ports"), where)
            name = r.string(entry.get("name"), f"{where}.name") or ""
            action = r.string(entry.get("action"), f"{where}.action", required=True)
            if action is not None and action not in actions:
                r.fail(f"{where}.action", f"unknown action {action!r} ({', '.join(actions)})")
            raw_peers = r.sequence(entry.get(peers_key), f"{where}.{peers_key}")
            if not raw_peers:
                r.fail(f"{where}.{peers_key}", "a rule needs at least one peer")
            peers = [self.admin_peer(r, p, f"{where}.{peers_key}[{j}]", peer_kinds) for j, p in enumerate(raw_peers)]
            ports: tuple[AdminPort, ...] | None = None
            if entry.get("ports") is not None:
                raw_ports = r.sequence(entry.get("ports"), f"{where}.ports")
                found = [self.admin_port(r, p, f"{where}.ports[{j}]") for j, p in enumerate(raw_ports)]
                ports = tuple(p for p in found if p is not None)
            if action in actions:
                rules.append(AdminRule(name, action, tuple(p for p in peers if p is not None), ports))
        return rules

    def admin_peer(self, r: FieldReader, value: Any, path: str, kinds: tuple[str, ...]) -> AdminPeer | None:
        entry = r.mapping(value, path, required=True)
        if entry is None:
            return None
        r.only(entry, kinds, path)
        present = [k for k in kinds if entry.get(k) is not None]
        if len(present) != 1:
            r.fail(path, f"exactly one of {', '.join(kinds)} must be set")
            return None
        kind = present[0]
        if kind in ("namespaces", "nodes"):
            sel = self.selector(r, entry[kind], f"{path}.{kind}") or MATCH_ALL
            return AdminPeer(kind, namespace_selector=sel)
        if kind == "pods":
            pods = r.mapping(entry[kind], f"{path}.pods", required=True)
            if pods is None:
                return None
            r.only(pods, ("namespaceSelector", "podSelector"), f"{path}.pods")
            ns = self.selector(r, pods.get("namespaceSelector"), f"{path}.pods.namespaceSelector") or MATCH_ALL
            pod = self.selector(r, pods.get("podSelector"), f"{path}.pods.podSelector") or MATCH_ALL
            return AdminPeer(kind, ns, pod)
        nets = [
            self.cidr(r, v, f"{path}.networks[{i}]") for i, v in enumerate(r.sequence(entry[kind], f"{path}.networks"))
        ]
        if not nets:
            r.fail(f"{path}.networks", "needs at least one CIDR")
        return AdminPeer(kind, networks=tuple(n for n in nets if n is not None))

    def admin_port(self, r: FieldReader, value: Any, path: str) -> AdminPort | None:
        entry = r.mapping(value, path, required=True)
        if entry is None:
            return None
        kinds = ("portNumber", "portRange", "namedPort")
        r.only(entry, kinds, path)
        present = [k for k in kinds if entry.get(k) is not None]
        if len(present) != 1:
            r.fail(path, "exactly one of portNumber, portRange or namedPort must be set")
            return None
        kind = present[0]
        if kind == "namedPort":
            name = r.checked(entry[kind], f"{path}.namedPort", check_port_name, required=True)
            return AdminPort(name=name) if name is not None else None
        where = f"{path}.{kind}"
        data = r.mapping(entry[kind], where, required=True)
        if data is None:
            return None
        if kind == "portNumber":
            r.only(data, ("protocol", "port"), where)
            protocol = self.protocol(r, data.get("protocol"), f"{where}.protocol")
            port = r.integer(data.get("port"), f"{where}.port", 1, 65535, required=True)
            return AdminPort(protocol, port, port) if port is not None else None
        r.only(data, ("protocol", "start", "end"), where)
        protocol = self.protocol(r, data.get("protocol"), f"{where}.protocol")
        start = r.integer(data.get("start"), f"{where}.start", 1, 65535, required=True)
        end = r.integer(data.get("end"), f"{where}.end", 1, 65535, required=True)
        if start is None or end is None:
            return None
        if end < start:
            r.fail(f"{where}.end", f"end {end} is below start {start}")
            return None
        return AdminPort(protocol, start, end)


@dataclass(slots=True)
class _Collected:
    network: dict[tuple[str, str], tuple[NetworkPolicy, Location]]
    admin: dict[str, tuple[AdminPolicy, Location]]
    baseline: dict[str, tuple[AdminPolicy, Location]]


def _objects(doc: Document, problems: list[Problem]) -> Iterable[tuple[Any, FieldReader]]:
    """The objects of a document with a reader each: the document itself, or the items of a List."""
    r = FieldReader(problems, doc.file, doc.index)
    data = doc.data
    if not isinstance(data, dict):
        return  # the inventory loader reports documents that are not objects
    kind = data.get("kind")
    if isinstance(kind, str) and kind.endswith("List") and "items" in data:
        items = data.get("items")
        for i, item in enumerate(items if isinstance(items, list) else []):
            yield item, r.child(None, f"items[{i}]")
    else:
        yield data, r


def policies_from_documents(documents: Iterable[Document]) -> PolicySet:
    """Every NetworkPolicy, AdminNetworkPolicy and BaselineAdminNetworkPolicy of the documents.

    Raises `InputError` listing every malformed policy, duplicates that differ, two
    AdminNetworkPolicies with the same priority, and more than one baseline policy.
    """
    problems: list[Problem] = []
    parser = _Parser(problems)
    found = _Collected({}, {}, {})
    for doc in documents:
        for data, reader in _objects(doc, problems):
            if not isinstance(data, dict) or data.get("kind") not in POLICY_KINDS:
                continue
            kind = str(data["kind"])
            meta = reader.mapping(data.get("metadata"), "metadata", required=True) or {}
            # Names are not held to Kubernetes' DNS rules: analysers accept what users wrote.
            name = reader.child(kind, reader.prefix).string(meta.get("name"), "metadata.name", required=True)
            if name is None:
                continue
            if kind == NETWORK_POLICY:
                r = reader.child(f"{kind} {name}", reader.prefix)
                ns = r.checked(meta.get("namespace"), "metadata.namespace", check_namespace_name) or DEFAULT_NAMESPACE
                r = reader.child(f"{kind} {ns}/{name}", reader.prefix)
                policy = parser.network_policy(r, data, name, ns)
                if policy is not None:
                    _keep(found.network, (ns, name), policy, r, f"{kind} {ns}/{name}")
            else:
                r = reader.child(f"{kind} {name}", reader.prefix)
                baseline = kind == BASELINE_ADMIN_NETWORK_POLICY
                admin = parser.admin_policy(r, data, name, baseline)
                if admin is not None:
                    _keep(found.baseline if baseline else found.admin, name, admin, r, f"{kind} {name}")
    by_priority: dict[int, tuple[AdminPolicy, Location]] = {}
    for anp, where in found.admin.values():
        priority = anp.priority if anp.priority is not None else 0
        other = by_priority.setdefault(priority, (anp, where))
        if other[0] is not anp:
            problems.append(
                Problem(
                    where,
                    f"AdminNetworkPolicy {anp.name} has priority {priority}, "
                    f"like {other[0].name} ({other[1]}); the order between them would be undefined",
                )
            )
    if len(found.baseline) > 1:
        names = ", ".join(sorted(found.baseline))
        first = next(iter(found.baseline.values()))[1]
        problems.append(Problem(first, f"only one BaselineAdminNetworkPolicy may exist, found {names}"))
    if problems:
        problems = list(dict.fromkeys(problems))
        raise InputError("Kubernetes policies", problems)
    return PolicySet(
        network_policies=tuple(p for _, (p, _) in sorted(found.network.items())),
        admin_policies=tuple(sorted((p for p, _ in found.admin.values()), key=lambda p: p.priority or 0)),
        baseline=next((p for p, _ in found.baseline.values()), None),
    )


def _keep(store: dict[Any, tuple[Any, Location]], key: Any, value: Any, r: FieldReader, label: str) -> None:
    where = r.at("")
    seen = store.get(key)
    if seen is None:
        store[key] = (value, where)
    elif seen[0] != value:
        r.fail("", f"{label} is defined differently at {seen[1]}")


def parse_kubernetes_policies(text: str, file: str) -> PolicySet:
    """The policies in one YAML/JSON text (`file` names it in errors); other kinds are skipped."""
    return policies_from_documents(read_documents(text, file))
