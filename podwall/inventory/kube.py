"""Kubernetes objects as users have them (manifests, `kubectl get -o json|yaml` dumps) -> inventory.

`read_documents` turns YAML (multi-document) or JSON text into documents, rejecting syntax
errors and duplicate keys with file, line and column. `kube_part` turns the Pods, workload
controllers, Services, Namespaces and Nodes found in them (single objects or `*List` dumps)
into an `InventoryPart`; policy objects are skipped silently, other kinds with a warning.

Naming rule (docs/inventory.md): a pod's workload is its top owner, found by following
`metadata.ownerReferences` (the controller reference first) through the objects present in
the input. When a referenced owner is absent, the chain ends at the name the reference gives
(e.g. `ReplicaSet checkoutservice-69c8ff664b`), as netpol-analyzer does, unless the absent
owner can be tied to an object that is present: a ReplicaSet `<d>-<hash>` to Deployment `<d>`,
a Job `<c>-<digits>` to CronJob `<c>`. For an absent ReplicaSet the NeuVector service name is
still the Deployment's (`<d>`), so the group is the same whether or not the Deployment is given.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import yaml

from podwall.core.errors import InputError, Location, Problem
from podwall.inventory.fields import FieldReader, check_namespace_name, check_object_name, check_port_name
from podwall.inventory.model import (
    DEFAULT_NAMESPACE,
    NAMESPACE_NAME_LABEL,
    Claim,
    ContainerPort,
    InventoryPart,
    IPAddress,
    Labels,
    LoadResult,
    Namespace,
    Node,
    Pod,
    Service,
    ServicePort,
    Workload,
    build_inventory,
    stable_labels,
)

CONTROLLER_KINDS: frozenset[str] = frozenset({"Deployment", "ReplicaSet", "StatefulSet", "DaemonSet", "Job", "CronJob"})
INVENTORY_KINDS: frozenset[str] = CONTROLLER_KINDS | {"Pod", "Service", "Namespace", "Node"}
# Policy objects often sit next to workloads in the same directory; other loaders read them.
POLICY_KINDS: frozenset[str] = frozenset(
    {
        "NetworkPolicy",
        "AdminNetworkPolicy",
        "BaselineAdminNetworkPolicy",
        "ClusterNetworkPolicy",
        "CiliumNetworkPolicy",
        "CiliumClusterwideNetworkPolicy",
        "NvSecurityRule",
        "NvClusterSecurityRule",
    }
)
_CLUSTER_SCOPED = frozenset({"Namespace", "Node"})
_NODE_ADDRESS_TYPES = frozenset({"InternalIP", "ExternalIP"})
_FINISHED_PHASES = frozenset({"Succeeded", "Failed"})  # their addresses may already belong to new pods

# pod-template-hash values are a uint32 written in Kubernetes' "safe" alphabet (no vowels, no
# 0/1/3); older clusters wrote decimal digits.
_RS_HASH = re.compile(r"(?P<deploy>.+)-(?P<hash>[bcdfghjklmnpqrstvwxz2456789]{5,10}|[0-9]{5,10})")
_CRON_JOB = re.compile(r"(?P<cron>.+)-(?P<time>[0-9]+)")
_MAX_OWNER_DEPTH = 16


@dataclass(frozen=True, slots=True)
class Document:
    """One parsed YAML/JSON document: its file, its 0-based index in the file, and its content."""

    file: str
    index: int
    data: Any


def _mark(error: yaml.YAMLError) -> str:
    mark = getattr(error, "problem_mark", None) or getattr(error, "context_mark", None)
    return f"line {mark.line + 1}, column {mark.column + 1}" if mark is not None else "unknown position"


def _no_duplicate_keys(loader: yaml.SafeLoader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    # YAML silently keeps the last of two equal keys; in a manifest that hides an edit.
    seen: set[tuple[str, str]] = set()
    for key_node, _ in node.value:
        if isinstance(key_node, yaml.ScalarNode) and key_node.tag != "tag:yaml.org,2002:merge":
            key = (key_node.tag, key_node.value)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    "while constructing a mapping",
                    node.start_mark,
                    f"found duplicate key {key_node.value!r}",
                    key_node.start_mark,
                )
            seen.add(key)
    return loader.construct_mapping(node, deep=deep)


class _Loader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]
    """Safe YAML loading (libyaml when available) that rejects duplicate mapping keys."""


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _no_duplicate_keys)


def read_documents(text: str, file: str) -> list[Document]:
    """The documents of a YAML (possibly multi-document) or JSON text; empty documents are dropped.

    Raises `InputError` for a syntax error, located by file, document, line and column. A file
    whose name ends in `.json` is parsed as JSON, anything else as YAML (which JSON also is).
    """
    if file.endswith(".json"):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            where = Location(file, 0)
            raise InputError(
                file,
                [Problem(where, f"JSON syntax error at line {exc.lineno}, column {exc.colno}: {exc.msg}")],
            ) from None
        return [] if data is None else [Document(file, 0, data)]
    docs: list[Document] = []
    parsed = 0  # documents read so far: the index of the one a syntax error is in
    try:
        for data in yaml.load_all(text, Loader=_Loader):
            if data is not None:
                docs.append(Document(file, parsed, data))
            parsed += 1
    except yaml.YAMLError as exc:
        failed_at = parsed
        detail = getattr(exc, "problem", None) or str(exc)
        where = Location(file, failed_at)
        raise InputError(file, [Problem(where, f"YAML syntax error at {_mark(exc)}: {detail}")]) from None
    return docs


@dataclass(slots=True)
class _Object:
    """One Kubernetes object found in a document (possibly an item of a List)."""

    kind: str
    namespace: str
    name: str
    data: dict[str, Any]
    reader: FieldReader

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.kind, self.namespace, self.name)


@dataclass(frozen=True, slots=True)
class _Ref:
    kind: str | None
    name: str


@dataclass(slots=True)
class _Controller:
    obj: _Object
    ref: _Ref | None
    labels: dict[str, str]
    image: str | None
    ports: tuple[ContainerPort, ...] = ()


@dataclass(slots=True)
class _PodInfo:
    obj: _Object
    ref: _Ref | None
    labels: dict[str, str]
    image: str | None
    node: str | None
    host_network: bool
    ips: list[tuple[IPAddress, str]]  # (address, field path) for located conflicts
    host_ips: list[tuple[IPAddress, str]]
    ports: tuple[ContainerPort, ...] = ()


@dataclass(frozen=True, slots=True)
class _Top:
    kind: str
    name: str
    service: str
    obj: _Controller | None  # the top owner's object when the input has it


@dataclass(slots=True)
class _Aggregate:
    top: _Top
    pods: list[_PodInfo] = field(default_factory=list)
    members: list[_Controller] = field(default_factory=list)


def _deployment_name(rs_name: str, pod_hash: str | None) -> str | None:
    """The Deployment a ReplicaSet name `<deploy>-<hash>` belongs to, when the name has that shape."""
    if pod_hash is not None:
        suffix = f"-{pod_hash}"
        return rs_name[: -len(suffix)] if rs_name.endswith(suffix) and len(rs_name) > len(suffix) else None
    m = _RS_HASH.fullmatch(rs_name)
    return m.group("deploy") if m else None


class _Builder:
    """Collects objects from documents, then derives nodes, namespaces, workloads and services."""

    def __init__(self) -> None:
        self.problems: list[Problem] = []
        self.warnings: list[Problem] = []
        self.objects: dict[tuple[str, str, str], _Object] = {}
        self.controllers: dict[tuple[str, str, str], _Controller] = {}

    # -- collecting ----------------------------------------------------------------------------

    def add_document(self, doc: Document) -> None:
        reader = FieldReader(self.problems, doc.file, doc.index)
        data = reader.mapping(doc.data, "", required=True)
        if data is None:
            return
        kind = data.get("kind")
        items = data.get("items")
        if isinstance(kind, str) and kind.endswith("List") and "items" in data:
            item_kind = kind[: -len("List")] or None
            for i, item in enumerate(reader.sequence(items, "items")):
                self.add_object(item, reader.child(None, f"items[{i}]"), item_kind)
        else:
            self.add_object(data, reader, None)

    def add_object(self, value: Any, reader: FieldReader, default_kind: str | None) -> None:
        data = reader.mapping(value, "", required=True)
        if data is None:
            return
        kind = data.get("kind", default_kind)
        if kind is None:
            reader.fail("kind", "is required")
            return
        if not isinstance(kind, str):
            reader.fail("kind", f"must be a string, not {kind!r}")
            return
        if kind in POLICY_KINDS:
            return
        if kind not in INVENTORY_KINDS:
            raw_meta = data.get("metadata")
            raw_meta = raw_meta if isinstance(raw_meta, dict) else {}
            name, ns = raw_meta.get("name"), raw_meta.get("namespace")
            label = f"{kind} {ns}/{name}" if isinstance(ns, str) else f"{kind} {name}"
            label = label if isinstance(name, str) else kind
            self.warnings.append(
                Problem(reader.child(label, reader.prefix).at(""), f"kind {kind} is not inventory; ignored")
            )
            return
        meta = reader.mapping(data.get("metadata"), "metadata", required=True)
        if meta is None:
            return
        name = reader.child(kind, reader.prefix).checked(
            meta.get("name"), "metadata.name", check_object_name, required=True
        )
        if name is None:
            return
        namespace = ""
        if kind not in _CLUSTER_SCOPED:
            ns = reader.child(f"{kind} {name}", reader.prefix).checked(
                meta.get("namespace"), "metadata.namespace", check_namespace_name
            )
            namespace = ns or DEFAULT_NAMESPACE
        label = f"{kind} {namespace}/{name}" if namespace else f"{kind} {name}"
        obj = _Object(kind, namespace, name, data, reader.child(label, reader.prefix))
        seen = self.objects.get(obj.key)
        if seen is None:
            self.objects[obj.key] = obj
        elif seen.data != data:
            obj.reader.fail("", f"{label} is defined differently at {seen.reader.at('')}")

    # -- reading fields ------------------------------------------------------------------------

    def dig(self, obj: _Object, path: str) -> Any:
        """The value at a dotted path, None when absent; a non-mapping on the way is a problem."""
        data: Any = obj.data
        walked: list[str] = []
        for part in path.split("."):
            if data is None:
                return None
            if not isinstance(data, dict):
                obj.reader.mapping(data, ".".join(walked))
                return None
            walked.append(part)
            data = data.get(part)
        return data

    def owner_ref(self, obj: _Object) -> _Ref | None:
        """The controller reference (or else the first one) of an object, validated."""
        r = obj.reader
        refs: list[_Ref] = []
        chosen: _Ref | None = None
        for i, item in enumerate(r.sequence(self.dig(obj, "metadata.ownerReferences"), "metadata.ownerReferences")):
            path = f"metadata.ownerReferences[{i}]"
            ref = r.mapping(item, path, required=True)
            if ref is None:
                continue
            name = r.checked(ref.get("name"), f"{path}.name", check_object_name, required=True)
            kind = r.string(ref.get("kind"), f"{path}.kind")
            if name is None:
                continue
            refs.append(_Ref(kind or None, name))
            if chosen is None and ref.get("controller") is True:
                chosen = refs[-1]
        return chosen or (refs[0] if refs else None)

    def template(self, obj: _Object) -> tuple[dict[str, str], str | None, tuple[ContainerPort, ...]]:
        """Pod-template labels, first container image and container ports of a controller object."""
        base = "spec.jobTemplate.spec.template" if obj.kind == "CronJob" else "spec.template"
        labels = obj.reader.labels(self.dig(obj, f"{base}.metadata.labels"), f"{base}.metadata.labels")
        return labels, self.image(obj, f"{base}.spec"), self.container_ports(obj, f"{base}.spec")

    def container_ports(self, obj: _Object, spec_path: str) -> tuple[ContainerPort, ...]:
        """Every well-formed `containers[].ports[]` entry of a pod spec (named ports resolve against them).

        Malformed entries are skipped rather than rejected: the ports are detail for policy
        evaluation, and inventories that loaded before they were read must still load.
        """
        found: list[ContainerPort] = []
        containers = self.dig(obj, f"{spec_path}.containers")
        for container in containers if isinstance(containers, list) else []:
            ports = container.get("ports") if isinstance(container, dict) else None
            for port in ports if isinstance(ports, list) else []:
                if not isinstance(port, dict):
                    continue
                number, protocol, name = port.get("containerPort"), port.get("protocol", "TCP"), port.get("name")
                if (
                    isinstance(number, int)
                    and not isinstance(number, bool)
                    and 1 <= number <= 65535
                    and protocol in ("TCP", "UDP", "SCTP")
                    and (name is None or (isinstance(name, str) and check_port_name(name) is None))
                ):
                    found.append(ContainerPort(name or None, number, protocol))
        return tuple(found)

    def image(self, obj: _Object, spec_path: str) -> str | None:
        containers = obj.reader.sequence(self.dig(obj, f"{spec_path}.containers"), f"{spec_path}.containers")
        if not containers:
            return None
        first = obj.reader.mapping(containers[0], f"{spec_path}.containers[0]")
        return obj.reader.string(first.get("image"), f"{spec_path}.containers[0].image") if first else None

    def addresses(self, obj: _Object, plural: str, singular: str) -> list[tuple[IPAddress, str]]:
        """`status.<plural>[].ip` when present, else `status.<singular>`; each address once."""
        r = obj.reader
        found: list[tuple[IPAddress, str]] = []
        items = self.dig(obj, f"status.{plural}")
        if items:
            for i, item in enumerate(r.sequence(items, f"status.{plural}")):
                entry = r.mapping(item, f"status.{plural}[{i}]")
                addr = r.ip(entry.get("ip"), f"status.{plural}[{i}].ip") if entry is not None else None
                if addr is not None and all(addr != a for a, _ in found):
                    found.append((addr, f"status.{plural}[{i}].ip"))
        else:
            single = self.dig(obj, f"status.{singular}")
            if single not in (None, ""):
                addr = r.ip(single, f"status.{singular}")
                if addr is not None:
                    found.append((addr, f"status.{singular}"))
        return found

    def pod(self, obj: _Object) -> _PodInfo:
        r = obj.reader
        phase = self.dig(obj, "status.phase")
        ips = self.addresses(obj, "podIPs", "podIP")
        node = r.checked(self.dig(obj, "spec.nodeName"), "spec.nodeName", check_object_name)
        return _PodInfo(
            obj=obj,
            ref=self.owner_ref(obj),
            labels=r.labels(self.dig(obj, "metadata.labels"), "metadata.labels"),
            image=self.image(obj, "spec"),
            node=node,
            host_network=r.boolean(self.dig(obj, "spec.hostNetwork"), "spec.hostNetwork"),
            ips=[] if phase in _FINISHED_PHASES else ips,
            host_ips=self.addresses(obj, "hostIPs", "hostIP"),
            ports=self.container_ports(obj, "spec"),
        )

    # -- owners --------------------------------------------------------------------------------

    def present_owner(self, ref: _Ref, namespace: str, pod_hash: str | None) -> _Controller | None:
        """The object an absent ReplicaSet or Job is tied to by name, when the input has it."""
        if ref.kind == "ReplicaSet":
            deploy = _deployment_name(ref.name, pod_hash)
            return self.controllers.get(("Deployment", namespace, deploy)) if deploy else None
        if ref.kind == "Job":
            m = _CRON_JOB.fullmatch(ref.name)
            return self.controllers.get(("CronJob", namespace, m.group("cron"))) if m else None
        return None

    def top_owner(self, obj: _Object, ref: _Ref | None, pod_hash: str | None) -> _Top:
        current: _Controller | None = self.controllers.get(obj.key)
        kind, name = obj.kind, obj.name
        seen = {obj.key}
        while ref is not None and ref.kind != "Node":  # a Node owns only static (mirror) pods
            if current is not None and ref.kind not in CONTROLLER_KINDS:
                # A workload object owned by an operator's resource (say a StatefulSet owned by a
                # `Prometheus`) stays the workload: its name is what users and NeuVector know.
                break
            if ref.kind is None:
                self.warnings.append(
                    Problem(
                        obj.reader.at("metadata.ownerReferences"),
                        f"owner reference {ref.name!r} has no kind; the workload takes its name, as kind Pod",
                    )
                )
                return _Top("Pod", ref.name, ref.name, None)
            owner = self.controllers.get((ref.kind, obj.namespace, ref.name))
            if owner is None:
                owner = self.present_owner(ref, obj.namespace, pod_hash)
            if owner is None:
                service = ref.name
                if ref.kind == "ReplicaSet":
                    service = _deployment_name(ref.name, pod_hash) or ref.name
                return _Top(ref.kind, ref.name, service, None)
            if owner.obj.key in seen or len(seen) > _MAX_OWNER_DEPTH:
                obj.reader.fail(
                    "metadata.ownerReferences",
                    f"owner references form a cycle through {owner.obj.kind} {owner.obj.name}",
                )
                break
            seen.add(owner.obj.key)
            current, kind, name, ref, pod_hash = owner, owner.obj.kind, owner.obj.name, owner.ref, None
        return _Top(kind, name, name, current)

    # -- building ------------------------------------------------------------------------------

    def build(self) -> InventoryPart:
        part = InventoryPart()
        pods: list[_PodInfo] = []
        services: list[_Object] = []
        node_objs: list[_Object] = []
        for obj in self.objects.values():
            if obj.kind in CONTROLLER_KINDS:
                labels, image, ports = self.template(obj)
                self.controllers[obj.key] = _Controller(obj, self.owner_ref(obj), labels, image, ports)
            elif obj.kind == "Pod":
                pods.append(self.pod(obj))
            elif obj.kind == "Service":
                services.append(obj)
            elif obj.kind == "Node":
                node_objs.append(obj)
            else:
                self.namespace(obj, part)

        aggregates: dict[tuple[str, str, str], _Aggregate] = {}

        def aggregate(namespace: str, top: _Top) -> _Aggregate:
            return aggregates.setdefault((namespace, top.name, top.kind), _Aggregate(top))

        for ctrl in self.controllers.values():
            aggregate(ctrl.obj.namespace, self.top_owner(ctrl.obj, ctrl.ref, None)).members.append(ctrl)
        for info in pods:
            top = self.top_owner(info.obj, info.ref, info.labels.get("pod-template-hash"))
            aggregate(info.obj.namespace, top).pods.append(info)

        for (namespace, _, _), agg in sorted(aggregates.items()):
            self.workload(namespace, agg, part)
        self.nodes(node_objs, pods, part)
        for obj in services:
            self.service(obj, part)
        return part

    def namespace(self, obj: _Object, part: InventoryPart) -> None:
        labels = obj.reader.labels(self.dig(obj, "metadata.labels"), "metadata.labels")
        labels.setdefault(NAMESPACE_NAME_LABEL, obj.name)
        part.namespaces.append((Namespace(obj.name, Labels(labels)), obj.reader.at("")))

    def workload(self, namespace: str, agg: _Aggregate, part: InventoryPart) -> None:
        top = agg.top
        source = top.obj or (agg.members[0] if agg.members else None)
        if agg.pods:
            each = [set(stable_labels(p.labels).pairs) for p in agg.pods]
            shared = set.intersection(*each)
            if any(labels != shared for labels in each):
                self.warnings.append(
                    Problem(
                        agg.pods[0].obj.reader.at("metadata.labels"),
                        f"pods of {namespace}/{top.name}[{top.kind}] carry different labels; "
                        "the workload keeps the labels they all share",
                    )
                )
            labels = stable_labels(dict(shared))
        else:
            labels = stable_labels(source.labels) if source else stable_labels({})
        image = (top.obj.image if top.obj else None) or next((p.image for p in agg.pods if p.image), None)
        if image is None and source is not None:
            image = source.image
        pods: list[Pod] = []
        for info in sorted(agg.pods, key=lambda p: p.obj.name):
            owner = f"pod {namespace}/{info.obj.name}"
            if not info.host_network:
                part.claims.extend(Claim(ip, owner, info.obj.reader.at(path)) for ip, path in info.ips)
            pods.append(
                Pod(
                    info.obj.name,
                    () if info.host_network else tuple(ip for ip, _ in info.ips),
                    info.node,
                    info.host_network,
                    Labels(info.labels),
                    info.ports,
                )
            )
        where = source.obj.reader.at("") if source else agg.pods[0].obj.reader.at("")
        ports = source.ports if source is not None else ()
        if not ports and agg.pods:
            ports = agg.pods[0].ports
        part.workloads.append(
            (Workload(top.name, namespace, top.kind, labels, image, top.service, tuple(pods), ports), where)
        )

    def nodes(self, node_objs: list[_Object], pods: list[_PodInfo], part: InventoryPart) -> None:
        described: set[str] = set()
        for obj in node_objs:
            r = obj.reader
            ips: list[IPAddress] = []
            for i, item in enumerate(r.sequence(self.dig(obj, "status.addresses"), "status.addresses")):
                entry = r.mapping(item, f"status.addresses[{i}]")
                if entry is None or entry.get("type") not in _NODE_ADDRESS_TYPES:
                    continue
                addr = r.ip(entry.get("address"), f"status.addresses[{i}].address")
                if addr is not None and addr not in ips:
                    ips.append(addr)
                    part.claims.append(Claim(addr, f"node {obj.name}", r.at(f"status.addresses[{i}].address")))
            labels = r.labels(self.dig(obj, "metadata.labels"), "metadata.labels")
            part.nodes.append((Node(obj.name, tuple(ips), Labels(labels)), r.at("")))
            described.add(obj.name)
        # Nodes not given as objects are still known by the addresses their pods report.
        learned: dict[str, tuple[list[IPAddress], Location]] = {}
        for info in pods:
            addrs = info.host_ips + (info.ips if info.host_network else [])
            if info.node is None:
                if info.host_network and info.ips:
                    self.warnings.append(
                        Problem(
                            info.obj.reader.at("spec.nodeName"),
                            "host-network pod without a node; its addresses are not attributed",
                        )
                    )
                continue
            if info.node in described:
                continue
            ips, _ = learned.setdefault(info.node, ([], info.obj.reader.at("")))
            for addr, path in addrs:
                if addr not in ips:
                    ips.append(addr)
                    part.claims.append(Claim(addr, f"node {info.node}", info.obj.reader.at(path)))
        for name, (ips, where) in sorted(learned.items()):
            part.nodes.append((Node(name, tuple(ips)), where))

    def service(self, obj: _Object, part: InventoryPart) -> None:
        r = obj.reader
        before = len(self.problems)
        selector = r.labels(self.dig(obj, "spec.selector"), "spec.selector")
        ips: list[IPAddress] = []
        plural = self.dig(obj, "spec.clusterIPs")
        values = [(v, f"spec.clusterIPs[{i}]") for i, v in enumerate(r.sequence(plural, "spec.clusterIPs"))]
        if not plural:
            values = [(self.dig(obj, "spec.clusterIP"), "spec.clusterIP")]
        for value, path in values:
            if value in (None, "", "None"):  # headless or ExternalName: no virtual address
                continue
            addr = r.ip(value, path)
            if addr is not None and addr not in ips:
                ips.append(addr)
                part.claims.append(Claim(addr, f"service {obj.namespace}/{obj.name}", r.at(path)))
        ports: list[ServicePort] = []
        for i, item in enumerate(r.sequence(self.dig(obj, "spec.ports"), "spec.ports")):
            path = f"spec.ports[{i}]"
            entry = r.mapping(item, path, required=True)
            if entry is None:
                continue
            port = r.integer(entry.get("port"), f"{path}.port", 1, 65535, required=True)
            protocol = r.string(entry.get("protocol"), f"{path}.protocol") or "TCP"
            if protocol not in ("TCP", "UDP", "SCTP"):
                r.fail(f"{path}.protocol", f"unknown protocol {protocol!r} (TCP, UDP or SCTP)")
            target = entry.get("targetPort")
            target_port: int | str | None = None
            if isinstance(target, str) and not target.isdigit():
                target_port = r.checked(target, f"{path}.targetPort", check_port_name)
            elif target is not None:
                target_port = r.integer(
                    int(target) if isinstance(target, str) else target, f"{path}.targetPort", 1, 65535
                )
            name = r.string(entry.get("name"), f"{path}.name")
            if port is not None:
                ports.append(ServicePort(name or None, port, protocol, target_port))
        if len(self.problems) == before:
            part.services.append(
                (Service(obj.name, obj.namespace, Labels(selector), tuple(ips), tuple(ports)), r.at(""))
            )


def kube_part(documents: Iterable[Document]) -> tuple[InventoryPart, tuple[Problem, ...]]:
    """The inventory part described by Kubernetes objects, and the warnings (ignored objects).

    All documents are taken together, so owners and their pods may sit in different files.
    Raises `InputError` listing every malformed object (file, document, `Kind ns/name`, field).
    """
    builder = _Builder()
    for doc in documents:
        builder.add_document(doc)
    part = builder.build()  # also after collection problems, so that every fault is reported at once
    if builder.problems:
        # A bad intermediate field (say `spec: []`) is met by several readers; report it once,
        # and in input order although objects are read in two passes.
        problems = list(dict.fromkeys(builder.problems))
        problems.sort(key=lambda p: (p.location.file or "", p.location.document or 0))
        raise InputError("Kubernetes objects", problems)
    return part, tuple(builder.warnings)


def inventory_from_kube(documents: Iterable[Document]) -> LoadResult:
    """An inventory built from Kubernetes objects alone, with the warnings found on the way."""
    part, warnings = kube_part(documents)
    return LoadResult(build_inventory([part]), warnings)


def parse_kube_text(text: str, file: str) -> LoadResult:
    """An inventory from one text of Kubernetes objects (`file` names it in errors)."""
    return inventory_from_kube(read_documents(text, file))
