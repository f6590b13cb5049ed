"""Load an inventory from files: podwall inventory YAML and/or Kubernetes objects, merged.

`load_inventory` reads files and directories (recursively: .yaml, .yml, .json); everything
else here is pure and takes text plus a file name. Each document is recognised by itself:
`apiVersion: podwall.io/v1, kind: Inventory` is a podwall inventory (docs/inventory.md),
anything else a Kubernetes object. All sources merge into one inventory; conflicts, syntax
errors and malformed entries from every file are reported together in one `InputError`,
and nothing is returned half-loaded.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from podwall.core.errors import InputError, Location, Problem
from podwall.inventory.fields import (
    FieldReader,
    check_group_name,
    check_kind,
    check_namespace_name,
    check_object_name,
    check_port_name,
)
from podwall.inventory.kube import Document, kube_part, read_documents
from podwall.inventory.model import (
    NAMESPACE_NAME_LABEL,
    Claim,
    ExternalGroup,
    Inventory,
    InventoryPart,
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

API_VERSION = "podwall.io/v1"
INVENTORY_KIND = "Inventory"
FILE_SUFFIXES = (".yaml", ".yml", ".json")

_TOP_FIELDS = (
    "apiVersion",
    "kind",
    "cluster",
    "internalCIDRs",
    "nodes",
    "namespaces",
    "workloads",
    "services",
    "externalGroups",
)
_NODE_FIELDS = ("name", "ips", "labels")
_NAMESPACE_FIELDS = ("name", "labels")
_WORKLOAD_FIELDS = ("name", "namespace", "kind", "labels", "image", "service", "pods")
_POD_FIELDS = ("name", "ips", "node", "hostNetwork")
_SERVICE_FIELDS = ("name", "namespace", "selector", "clusterIPs", "ports")
_PORT_FIELDS = ("name", "port", "protocol", "targetPort")
_GROUP_FIELDS = ("name", "cidrs")


def is_podwall_document(data: Any) -> bool:
    """True for a document that belongs to podwall (`apiVersion: podwall.io/...`), of any kind."""
    return (
        isinstance(data, dict)
        and isinstance(data.get("apiVersion"), str)
        and data["apiVersion"].startswith("podwall.io/")
    )


# What an entry parser returns: the entry's identity (for duplicate checks), its reader, and the
# function that adds it to the part (None when the entry has faults); None when it has no identity.
_Entry = tuple[tuple[str, ...], FieldReader, Callable[[], None] | None] | None
_EntryParser = Callable[[dict[str, Any], str], _Entry]


class _PodwallParser:
    """One podwall Inventory document -> an InventoryPart, recording every problem."""

    def __init__(self, doc: Document, problems: list[Problem]) -> None:
        self.doc = doc
        self.top = FieldReader(problems, doc.file, doc.index)
        self.problems = problems
        self.part = InventoryPart()

    def parse(self) -> InventoryPart:
        data = self.doc.data
        r = self.top
        r.only(data, _TOP_FIELDS)
        if data.get("apiVersion") != API_VERSION:
            r.fail("apiVersion", f"unsupported apiVersion {data.get('apiVersion')!r}; expected {API_VERSION}")
        if "cluster" in data:
            cluster = r.string(data["cluster"], "cluster", required=True)
            if cluster is not None:
                self.part.cluster = (cluster, r.at("cluster"))
        if "internalCIDRs" in data:
            before = len(self.problems)
            cidrs = r.cidrs(data["internalCIDRs"], "internalCIDRs")
            if len(self.problems) == before:
                self.part.internal_cidrs = (tuple(cidrs), r.at("internalCIDRs"))
        self.each(data, "nodes", self.node)
        self.each(data, "namespaces", self.namespace)
        self.each(data, "workloads", self.workload)
        self.each(data, "services", self.service)
        self.each(data, "externalGroups", self.external_group)
        return self.part

    def each(self, data: dict[str, Any], key: str, parse: _EntryParser) -> None:
        seen: dict[tuple[str, ...], int] = {}
        for i, item in enumerate(self.top.sequence(data.get(key), key)):
            entry = self.top.mapping(item, f"{key}[{i}]", required=True)
            if entry is not None:
                found = parse(entry, f"{key}[{i}]")
                if found is not None:
                    ident, r, commit = found
                    if ident in seen:
                        r.fail("", f"is listed twice ({key}[{seen[ident]}] and {key}[{i}])")
                    else:
                        seen[ident] = i
                        if commit is not None:
                            commit()

    def entity(self, entry: dict[str, Any], index_path: str, what: str, fields: Iterable[str]) -> FieldReader:
        """A reader named after the entry (`workload demo/redis`), or its position when unnamed."""
        name, ns = entry.get("name"), entry.get("namespace")
        named = isinstance(name, str) and name and (ns is None or isinstance(ns, str))
        if named and what in ("workload", "service"):
            label = f"{what} {ns}/{name}" if ns else f"{what} {name}"
        else:
            label = f"{what} {name}" if named else index_path
        r = self.top.child(label)
        r.only(entry, fields)
        return r

    def node(self, entry: dict[str, Any], index_path: str) -> _Entry:
        r = self.entity(entry, index_path, "node", _NODE_FIELDS)
        before = len(self.problems)
        name = r.checked(entry.get("name"), "name", check_object_name, required=True)
        ips = r.ips(entry.get("ips"), "ips")
        labels = r.labels(entry.get("labels"), "labels")
        if name is None:
            return None

        def commit() -> None:
            self.part.nodes.append((Node(name, tuple(ips), Labels(labels)), r.at("")))
            self.part.claims.extend(Claim(ip, f"node {name}", r.at(f"ips[{i}]")) for i, ip in enumerate(ips))

        return (name,), r, commit if len(self.problems) == before else None

    def namespace(self, entry: dict[str, Any], index_path: str) -> _Entry:
        r = self.entity(entry, index_path, "namespace", _NAMESPACE_FIELDS)
        before = len(self.problems)
        name = r.checked(entry.get("name"), "name", check_namespace_name, required=True)
        labels = r.labels(entry.get("labels"), "labels")
        if name is None:
            return None
        labels.setdefault(NAMESPACE_NAME_LABEL, name)

        def commit() -> None:
            self.part.namespaces.append((Namespace(name, Labels(labels)), r.at("")))

        return (name,), r, commit if len(self.problems) == before else None

    def workload(self, entry: dict[str, Any], index_path: str) -> _Entry:
        r = self.entity(entry, index_path, "workload", _WORKLOAD_FIELDS)
        before = len(self.problems)
        name = r.checked(entry.get("name"), "name", check_object_name, required=True)
        namespace = r.checked(entry.get("namespace"), "namespace", check_namespace_name, required=True)
        kind = r.checked(entry.get("kind"), "kind", check_kind) or "Deployment"
        labels = r.labels(entry.get("labels"), "labels")
        image = r.string(entry.get("image"), "image")
        service = r.checked(entry.get("service"), "service", check_object_name)
        pods: list[Pod] = []
        claims: list[Claim] = []
        pod_names: dict[str, int] = {}
        for i, item in enumerate(r.sequence(entry.get("pods"), "pods")):
            path = f"pods[{i}]"
            pod = r.mapping(item, path, required=True)
            if pod is None:
                continue
            r.only(pod, _POD_FIELDS, path)
            pod_name = r.checked(pod.get("name"), f"{path}.name", check_object_name, required=True)
            ips = r.ips(pod.get("ips"), f"{path}.ips")
            node = r.checked(pod.get("node"), f"{path}.node", check_object_name)
            host_network = r.boolean(pod.get("hostNetwork"), f"{path}.hostNetwork")
            if host_network and ips:
                r.fail(f"{path}.ips", "a hostNetwork pod uses its node's addresses; list them under nodes")
            if pod_name is None:
                continue
            if pod_name in pod_names:
                r.fail(f"{path}.name", f"pod {pod_name} is listed twice (pods[{pod_names[pod_name]}] and {path})")
                continue
            pod_names[pod_name] = i
            pods.append(Pod(pod_name, tuple(ips), node, host_network))
            if namespace is not None:
                claims.extend(
                    Claim(ip, f"pod {namespace}/{pod_name}", r.at(f"{path}.ips[{j}]")) for j, ip in enumerate(ips)
                )
        if name is None or namespace is None:
            return None
        workload = Workload(name, namespace, kind, stable_labels(labels), image, service or name, tuple(pods))

        def commit() -> None:
            self.part.workloads.append((workload, r.at("")))
            self.part.claims.extend(claims)

        return (namespace, kind, name), r, commit if len(self.problems) == before else None

    def service(self, entry: dict[str, Any], index_path: str) -> _Entry:
        r = self.entity(entry, index_path, "service", _SERVICE_FIELDS)
        before = len(self.problems)
        name = r.checked(entry.get("name"), "name", check_object_name, required=True)
        namespace = r.checked(entry.get("namespace"), "namespace", check_namespace_name, required=True)
        selector = r.labels(entry.get("selector"), "selector")
        ips = r.ips(entry.get("clusterIPs"), "clusterIPs")
        ports: list[ServicePort] = []
        for i, item in enumerate(r.sequence(entry.get("ports"), "ports")):
            path = f"ports[{i}]"
            port_entry = r.mapping(item, path, required=True)
            if port_entry is None:
                continue
            r.only(port_entry, _PORT_FIELDS, path)
            port_name = r.string(port_entry.get("name"), f"{path}.name")
            port = r.integer(port_entry.get("port"), f"{path}.port", 1, 65535, required=True)
            protocol = r.string(port_entry.get("protocol"), f"{path}.protocol") or "TCP"
            if protocol not in ("TCP", "UDP", "SCTP"):
                r.fail(f"{path}.protocol", f"unknown protocol {protocol!r} (TCP, UDP or SCTP)")
            target = port_entry.get("targetPort")
            target_port: int | str | None
            if isinstance(target, str):
                target_port = r.checked(target, f"{path}.targetPort", check_port_name)
            else:
                target_port = r.integer(target, f"{path}.targetPort", 1, 65535)
            if port is not None:
                ports.append(ServicePort(port_name or None, port, protocol, target_port))
        if name is None or namespace is None:
            return None
        service = Service(name, namespace, Labels(selector), tuple(ips), tuple(ports))

        def commit() -> None:
            self.part.services.append((service, r.at("")))
            self.part.claims.extend(
                Claim(ip, f"service {namespace}/{name}", r.at(f"clusterIPs[{i}]")) for i, ip in enumerate(ips)
            )

        return (namespace, name), r, commit if len(self.problems) == before else None

    def external_group(self, entry: dict[str, Any], index_path: str) -> _Entry:
        r = self.entity(entry, index_path, "externalGroup", _GROUP_FIELDS)
        before = len(self.problems)
        name = r.checked(entry.get("name"), "name", check_group_name, required=True)
        cidrs = r.cidrs(entry.get("cidrs"), "cidrs")
        if not cidrs and len(self.problems) == before:
            r.fail("cidrs", "an external group needs at least one CIDR")
        if name is None:
            return None
        group = ExternalGroup(name, tuple(cidrs))

        def commit() -> None:
            self.part.external_groups.append((group, r.at("")))

        return (name,), r, commit if len(self.problems) == before else None


def _parts(documents: Iterable[Document]) -> tuple[list[InventoryPart], list[Problem], list[Problem]]:
    """Podwall parts and the one part of all Kubernetes objects, with problems and warnings."""
    problems: list[Problem] = []
    warnings: list[Problem] = []
    parts: list[InventoryPart] = []
    kube_docs: list[Document] = []
    for doc in documents:
        if not is_podwall_document(doc.data):
            kube_docs.append(doc)
        elif doc.data.get("kind") == INVENTORY_KIND:
            parts.append(_PodwallParser(doc, problems).parse())
        else:
            warnings.append(
                Problem(
                    Location(doc.file, doc.index),
                    f"podwall document of kind {doc.data.get('kind')!r} is not an inventory; ignored",
                )
            )
    if kube_docs:
        try:
            part, kube_warnings = kube_part(kube_docs)
        except InputError as exc:
            problems.extend(exc.problems)
        else:
            parts.append(part)
            warnings.extend(kube_warnings)
    return parts, problems, warnings


def load_documents(documents: Iterable[Document]) -> LoadResult:
    """One inventory from parsed documents of any mix of formats; raises `InputError` with every fault."""
    parts, problems, warnings = _parts(documents)
    try:
        inventory = build_inventory(parts)
    except InputError as exc:
        problems.extend(exc.problems)
    if problems:
        raise InputError("inventory", problems)
    return LoadResult(inventory, tuple(warnings))


def parse_inventory_text(text: str, file: str) -> LoadResult:
    """An inventory from one text holding podwall and/or Kubernetes documents."""
    return load_documents(read_documents(text, file))


def parse_podwall_inventory(text: str, file: str) -> Inventory:
    """An inventory from podwall inventory YAML only; any other document is an error."""
    docs = read_documents(text, file)
    strangers = [d for d in docs if not (is_podwall_document(d.data) and d.data.get("kind") == INVENTORY_KIND)]
    if strangers:
        raise InputError(
            file,
            [
                Problem(
                    Location(d.file, d.index),
                    f"not a podwall inventory (expected apiVersion {API_VERSION}, kind {INVENTORY_KIND})",
                )
                for d in strangers
            ],
        )
    return load_documents(docs).inventory


def inventory_files(paths: Sequence[str | Path]) -> list[Path]:
    """The files to read: each path itself, or a directory's .yaml/.yml/.json files (recursive, sorted,
    hidden entries skipped). Raises `InputError` for a missing path or an empty directory."""
    files: list[Path] = []
    problems: list[Problem] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found: list[Path] = []
            for root, dirs, names in os.walk(path):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                found.extend(
                    Path(root, n) for n in sorted(names) if n.endswith(FILE_SUFFIXES) and not n.startswith(".")
                )
            if not found:
                problems.append(Problem(Location(str(path)), f"no {', '.join(FILE_SUFFIXES)} files in this directory"))
            files.extend(found)
        elif path.is_file():
            files.append(path)
        else:
            problems.append(Problem(Location(str(path)), "no such file or directory"))
    if problems:
        raise InputError("inventory", problems)
    unique: dict[Path, Path] = {}  # a file named directly and inside a named directory is read once
    for f in files:
        unique.setdefault(f.resolve(), f)
    return list(unique.values())


def read_document_files(paths: Sequence[str | Path]) -> tuple[list[Document], list[Problem]]:
    """The documents of every file given or found in a directory given, and what could not be read.

    The problems come back rather than raised, so that a caller reports them together with its own.
    """
    documents: list[Document] = []
    problems: list[Problem] = []
    for path in inventory_files(paths):
        try:
            text = path.read_text(encoding="utf-8-sig")
        except (OSError, UnicodeDecodeError) as exc:
            problems.append(Problem(Location(str(path)), f"cannot read: {exc}"))
            continue
        try:
            documents.extend(read_documents(text, str(path)))
        except InputError as exc:
            problems.extend(exc.problems)
    return documents, problems


def load_inventory_with_warnings(paths: Sequence[str | Path]) -> LoadResult:
    """Read and merge every inventory source; returns the inventory and the load warnings."""
    documents, problems = read_document_files(paths)
    try:
        result = load_documents(documents)  # still checked, so that every fault is reported at once
    except InputError as exc:
        problems.extend(exc.problems)
    if problems:
        raise InputError("inventory", problems)
    return result


def load_inventory(paths: Sequence[str | Path]) -> Inventory:
    """Read and merge every inventory source (files or directories); see `load_inventory_with_warnings`."""
    return load_inventory_with_warnings(paths).inventory
