"""A connectivity list in np-guard netpol-analyzer's text format, from a directory of manifests.

`connlist(paths)` reads workloads (through the inventory loader) and NetworkPolicy / ANP / BANP
objects (through `podwall.policy.formats.kubernetes`), then lists every allowed pair among
the workloads and the external address ranges the policies distinguish:

    <src> => <dst> : <connections>

sorted, a workload's connection to itself left out, a pair without connectivity left out. The
external ranges are the pieces IPv4 space is cut into by the policies' addresses, as
netpol-analyzer cuts it: sources by the ipBlocks of ingress rules, destinations by those of
egress rules and the admin policies' `networks`. Only `load_connlist_inputs` reads files.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

from podwall.core.errors import InputError, Problem
from podwall.inventory.kube import Document
from podwall.inventory.loader import load_documents, read_document_files
from podwall.inventory.model import Inventory, Workload
from podwall.policy.formats.kubernetes import IPNet, PolicySet, policies_from_documents
from podwall.policy.netpol import IPPeer, NetpolEngine, Peer, PodPeer, block_ranges

_IPV4_LAST = (1 << 32) - 1


def workload_peer(workload: Workload, inventory: Inventory) -> PodPeer:
    """The pod standing for a workload: its first pod (all labels), else its pod template."""
    pod = min(workload.pods, key=lambda p: p.name) if workload.pods else None
    labels = pod.labels if pod is not None and pod.labels else workload.labels
    ports = pod.ports if pod is not None and pod.ports else workload.ports
    return PodPeer(workload.ref, workload.namespace, labels, inventory.namespace_labels(workload.namespace), ports)


def _cuts(ranges: Iterable[tuple[int, int]]) -> list[IPPeer]:
    """IPv4 space cut at every range boundary: the pieces no given range partly covers."""
    points = {0}
    for lo, hi in ranges:
        points.add(lo)
        if hi < _IPV4_LAST:
            points.add(hi + 1)
    starts = sorted(points)
    ends = [s - 1 for s in starts[1:]] + [_IPV4_LAST]
    return [IPPeer(s, e) for s, e in zip(starts, ends, strict=True)]


def external_ranges(policies: PolicySet) -> tuple[list[IPPeer], list[IPPeer]]:
    """The external sources and destinations netpol-analyzer lists for these policies."""
    sources: list[tuple[int, int]] = []
    destinations: list[tuple[int, int]] = []

    def add(into: list[tuple[int, int]], cidr: IPNet, excepts: Sequence[IPNet] = ()) -> None:
        if cidr.version == 4:
            into.extend(block_ranges(cidr, excepts))

    for np in policies.network_policies:
        for into, rules in ((sources, np.ingress), (destinations, np.egress)):
            for rule in rules:
                for peer in rule.peers:
                    if peer.ip_block is not None:
                        add(into, peer.ip_block.cidr, peer.ip_block.excepts)
    admins = list(policies.admin_policies) + ([policies.baseline] if policies.baseline else [])
    for admin in admins:
        for arule in admin.egress:
            for apeer in arule.peers:
                for net in apeer.networks:
                    add(destinations, net)
    return _cuts(sources), _cuts(destinations)


def connlist_from_documents(documents: Sequence[Document]) -> list[str]:
    """The sorted connectivity lines for the workloads and policies of parsed documents."""
    problems: list[Problem] = []
    inventory: Inventory | None = None
    policies: PolicySet | None = None
    try:
        inventory = load_documents(documents).inventory
    except InputError as exc:
        problems.extend(exc.problems)
    try:
        policies = policies_from_documents(documents)
    except InputError as exc:
        problems.extend(exc.problems)
    if problems or inventory is None or policies is None:
        raise InputError("connectivity input", problems)
    pods = [workload_peer(w, inventory) for w in inventory.workloads]
    if not pods:
        return []
    engine = NetpolEngine(policies, pods)
    ext_sources, ext_destinations = external_ranges(policies)
    sources: list[Peer] = [*ext_sources, *pods]
    destinations: list[Peer] = [*ext_destinations, *pods]
    lines: list[str] = []
    for src in sources:
        for dst in destinations:
            if isinstance(src, IPPeer) and isinstance(dst, IPPeer):
                continue
            if src.ref == dst.ref:
                continue
            conns = engine.allowed(src, dst)
            if not conns.empty:
                lines.append(f"{src.ref} => {dst.ref} : {conns}")
    return sorted(lines)


def load_connlist_inputs(paths: Sequence[str | Path]) -> list[Document]:
    """Every document of the given files and directories (recursively: .yaml, .yml, .json)."""
    documents, problems = read_document_files(paths)
    if problems:
        raise InputError("connectivity input", problems)
    return documents


def connlist(paths: Sequence[str | Path]) -> list[str]:
    """netpol-analyzer's `list` output for manifests in files or directories, one line per allowed pair."""
    return connlist_from_documents(load_connlist_inputs(paths))
