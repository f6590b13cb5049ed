"""From a validated lab spec to everything `lab up` will create: names, addresses, files, NAT, inventory.

Pure and deterministic: the same LAB.yaml always gives the same pod names, addresses, cluster
IPs, interface names, hosts files and inventory, so a plan can be shown, tested and compared
without touching the kernel.
"""

from __future__ import annotations

import dataclasses
import hashlib
import ipaddress
from dataclasses import dataclass
from typing import Any

from podwall.enforce.nft import NatService
from podwall.lab.spec import DeploymentSpec, LabSpec, PodSpec, Server

PodTemplate = DeploymentSpec | PodSpec

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

BRIDGE = "pwbr0"
POD_IFNAME = "eth0"
CLUSTER_DOMAIN = "cluster.local"
_SUFFIX_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"  # the alphabet Kubernetes uses for generated names


def netns_name(lab: str, what: str) -> str:
    """The network namespace of a pod (or of the node, `what="node"`)."""
    return f"pw-{lab}-{what}"


def _token(seed: str, length: int) -> str:
    digest = hashlib.sha256(seed.encode()).digest()
    return "".join(_SUFFIX_ALPHABET[b % len(_SUFFIX_ALPHABET)] for b in digest[:length])


def veth_name(lab: str, pod: str) -> str:
    """The node-side veth of a pod: 14 characters, inside the 15 that Linux allows."""
    return "pw" + hashlib.sha256(f"{lab}/{pod}".encode()).hexdigest()[:12]


@dataclass(frozen=True, slots=True)
class PodPlan:
    name: str
    namespace: str
    workload: str
    kind: str  # Deployment or Pod
    labels: dict[str, str]
    image: str | None
    server: Server
    netns: str
    veth: str
    ipv4: ipaddress.IPv4Address
    ipv6: ipaddress.IPv6Address | None

    @property
    def ips(self) -> tuple[IPAddress, ...]:
        return (self.ipv4,) if self.ipv6 is None else (self.ipv4, self.ipv6)


@dataclass(frozen=True, slots=True)
class PortPlan:
    name: str | None
    port: int
    target_port: int
    protocol: str  # TCP or UDP


@dataclass(frozen=True, slots=True)
class ServicePlan:
    name: str
    namespace: str
    selector: dict[str, str]
    cluster_ips: tuple[IPAddress, ...]
    ports: tuple[PortPlan, ...]
    endpoints: tuple[str, ...]  # pod names

    def names(self, from_namespace: str | None = None) -> list[str]:
        """Host names of the service; the short name only for pods of its own namespace."""
        fqdn = f"{self.name}.{self.namespace}.svc.{CLUSTER_DOMAIN}"
        out = [fqdn, f"{self.name}.{self.namespace}.svc", f"{self.name}.{self.namespace}"]
        if from_namespace == self.namespace:
            out.append(self.name)
        return out


@dataclass(frozen=True, slots=True)
class LabPlan:
    spec: LabSpec
    node_netns: str
    gateway4: ipaddress.IPv4Interface
    gateway6: ipaddress.IPv6Interface | None
    pods: tuple[PodPlan, ...]
    services: tuple[ServicePlan, ...]

    @property
    def name(self) -> str:
        return self.spec.name

    def pod(self, name: str) -> PodPlan:
        for p in self.pods:
            if p.name == name:
                return p
        raise KeyError(name)

    @property
    def dns_ip(self) -> IPAddress | None:
        if self.spec.dns is None:
            return None
        ns, _, name = self.spec.dns.partition("/")
        for svc in self.services:
            if svc.namespace == ns and svc.name == name and svc.cluster_ips:
                return svc.cluster_ips[0]
        return None

    def hosts_text(self, pod: PodPlan | None) -> str:
        """/etc/hosts for a pod (short service names of its namespace) or the node (pod=None)."""
        lines = ["127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback"]
        if pod is not None:
            lines += [f"{ip}\t{pod.name}" for ip in pod.ips]
        for svc in self.services:
            names = " ".join(svc.names(pod.namespace if pod is not None else None))
            lines += [f"{ip}\t{names}" for ip in svc.cluster_ips]
        return "\n".join(lines) + "\n"

    def lab_hosts_text(self) -> str:
        """Every service and pod name of the lab, fully qualified (what the lab's DNS answers)."""
        lines = []
        for svc in self.services:
            lines += [f"{ip}\t{' '.join(svc.names())}" for ip in svc.cluster_ips]
        for pod in self.pods:
            dashed = {ip: str(ip).replace(".", "-").replace(":", "-") for ip in pod.ips}
            lines += [f"{ip}\t{dashed[ip]}.{pod.namespace}.pod.{CLUSTER_DOMAIN}" for ip in pod.ips]
        return "\n".join(lines) + "\n"

    def resolv_text(self, pod: PodPlan | None) -> str:
        search = [f"svc.{CLUSTER_DOMAIN}", CLUSTER_DOMAIN]
        if pod is not None:
            search.insert(0, f"{pod.namespace}.svc.{CLUSTER_DOMAIN}")
        dns = self.dns_ip
        # Without a lab DNS, point at the pod's own loopback: lookups fail fast instead of leaking out.
        lines = [f"search {' '.join(search)}", f"nameserver {dns if dns is not None else '127.0.0.1'}"]
        return "\n".join(lines) + "\n"

    def with_pods(self, extra: tuple[PodPlan, ...]) -> LabPlan:
        """This plan with pods added to the running lab (`lab_add_pod`): services select them too."""
        pods = self.pods + extra
        services = tuple(
            dataclasses.replace(svc, endpoints=_endpoints(svc.selector, svc.namespace, pods)) for svc in self.services
        )
        return dataclasses.replace(self, pods=pods, services=services)

    def nat_services(self) -> list[NatService]:
        out: list[NatService] = []
        for svc in self.services:
            pods = [self.pod(n) for n in svc.endpoints]
            for ip in svc.cluster_ips:
                eps = tuple(a for p in pods for a in p.ips if a.version == ip.version)
                for port in svc.ports:
                    label = f"{svc.namespace}/{svc.name}:{port.port}/{port.protocol.lower()}"
                    out.append(NatService(label, ip, port.protocol.lower(), port.port, port.target_port, eps))
        return out

    def inventory(self) -> dict[str, Any]:
        """The podwall inventory (docs/inventory.md) of the running lab."""
        s = self.spec
        workloads: dict[tuple[str, str, str], dict[str, Any]] = {}
        for pod in self.pods:
            key = (pod.namespace, pod.kind, pod.workload)
            w = workloads.setdefault(
                key,
                {"name": pod.workload, "namespace": pod.namespace, "kind": pod.kind, "labels": dict(pod.labels)},
            )
            if pod.image:
                w["image"] = pod.image
            w.setdefault("pods", []).append({"name": pod.name, "ips": [str(ip) for ip in pod.ips], "node": s.node.name})
        cidrs = [s.podCIDR, s.serviceCIDR] + [c for c in (s.podCIDRv6, s.serviceCIDRv6) if c]
        node_ips = [str(self.gateway4.ip)] + ([str(self.gateway6.ip)] if self.gateway6 else [])
        return {
            "apiVersion": "podwall.io/v1",
            "kind": "Inventory",
            "cluster": s.cluster_name,
            "internalCIDRs": cidrs,
            "nodes": [{"name": s.node.name, "ips": node_ips, "labels": dict(s.node.labels)}],
            "namespaces": [{"name": ns.name, "labels": dict(ns.labels)} for ns in s.namespaces],
            "workloads": list(workloads.values()),
            "services": [
                {
                    "name": svc.name,
                    "namespace": svc.namespace,
                    "selector": dict(svc.selector),
                    "clusterIPs": [str(ip) for ip in svc.cluster_ips],
                    "ports": [
                        {
                            **({"name": p.name} if p.name else {}),
                            "port": p.port,
                            "protocol": p.protocol,
                            "targetPort": p.target_port,
                        }
                        for p in svc.ports
                    ],
                }
                for svc in self.services
            ],
        }


def _allocate(net: ipaddress.IPv4Network | ipaddress.IPv6Network, taken: set[IPAddress]) -> IPAddress:
    for i in range(1, min(net.num_addresses - 1, 1 << 20)):
        ip = net[i]
        if ip not in taken:
            taken.add(ip)
            return ip
    raise ValueError(f"{net} has no free address left")  # spec checks leave room; this is a guard


def replica_name(spec: LabSpec, deployment: DeploymentSpec, replica: int) -> str:
    """The pod name of a Deployment's replica: `<name>-<template hash>-<suffix>`, as Kubernetes forms it."""
    template_hash = _token(f"{spec.name}/{deployment.namespace}/{deployment.name}", 9)
    return f"{deployment.name}-{template_hash}-{_token(f'{template_hash}/{replica}', 5)}"


def pod_plan(spec: LabSpec, name: str, workload: str, kind: str, template: PodTemplate, index: int) -> PodPlan:
    """One pod of the lab: its names and the `index`-th addresses of the pod CIDRs (.1 is the node's)."""
    pod4 = ipaddress.IPv4Network(spec.podCIDR)
    pod6 = ipaddress.IPv6Network(spec.podCIDRv6) if spec.podCIDRv6 else None
    if not 2 <= index < pod4.num_addresses - 1 or (pod6 is not None and index >= pod6.num_addresses - 1):
        raise ValueError(f"the pod CIDR {spec.podCIDR} has no address left for pod {name}")
    return PodPlan(
        name=name,
        namespace=template.namespace,
        workload=workload,
        kind=kind,
        labels=dict(template.labels),
        image=template.image,
        server=template.server,
        netns=netns_name(spec.name, name),
        veth=veth_name(spec.name, name),
        ipv4=pod4[index],
        ipv6=pod6[index] if pod6 else None,
    )


def _endpoints(selector: dict[str, str], namespace: str, pods: tuple[PodPlan, ...]) -> tuple[str, ...]:
    return tuple(
        p.name for p in pods if p.namespace == namespace and all(p.labels.get(k) == v for k, v in selector.items())
    )


def plan_lab(spec: LabSpec) -> LabPlan:
    """Names and addresses of everything in the lab, in file order (deployments, then bare pods)."""
    pod4 = ipaddress.IPv4Network(spec.podCIDR)
    pod6 = ipaddress.IPv6Network(spec.podCIDRv6) if spec.podCIDRv6 else None
    gateway4 = ipaddress.IPv4Interface(f"{pod4[1]}/{pod4.prefixlen}")
    gateway6 = ipaddress.IPv6Interface(f"{pod6[1]}/{pod6.prefixlen}") if pod6 else None
    pods: list[PodPlan] = []
    for d in spec.deployments:
        for r in range(d.replicas):
            pods.append(pod_plan(spec, replica_name(spec, d, r), d.name, "Deployment", d, 2 + len(pods)))
    for p in spec.pods:
        pods.append(pod_plan(spec, p.name, p.name, "Pod", p, 2 + len(pods)))

    taken4: set[IPAddress] = {ipaddress.ip_address(s.clusterIP) for s in spec.services if s.clusterIP}
    taken6: set[IPAddress] = {ipaddress.ip_address(s.clusterIPv6) for s in spec.services if s.clusterIPv6}
    svc4 = ipaddress.IPv4Network(spec.serviceCIDR)
    svc6 = ipaddress.IPv6Network(spec.serviceCIDRv6) if spec.serviceCIDRv6 else None
    services: list[ServicePlan] = []
    all_pods = tuple(pods)
    for s in spec.services:
        ips: list[IPAddress] = [ipaddress.ip_address(s.clusterIP) if s.clusterIP else _allocate(svc4, taken4)]
        if s.clusterIPv6:
            ips.append(ipaddress.ip_address(s.clusterIPv6))
        elif svc6 is not None:
            ips.append(_allocate(svc6, taken6))
        endpoints = _endpoints(s.selector, s.namespace, all_pods)
        ports = tuple(PortPlan(p.name, p.port, p.targetPort or p.port, p.protocol) for p in s.ports)
        services.append(ServicePlan(s.name, s.namespace, dict(s.selector), tuple(ips), ports, endpoints))
    return LabPlan(spec, netns_name(spec.name, "node"), gateway4, gateway6, all_pods, tuple(services))
