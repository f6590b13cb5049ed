"""Kernel plumbing of the lab through pyroute2: network namespaces, the node's bridge, pod veths.

Everything but the namespace files under /run/netns lives inside the lab's namespaces, so
deleting the namespaces deletes the bridge, the veths, the routes and the NAT table with them.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from pyroute2 import NetNS, netns

from podwall.lab.plan import BRIDGE, POD_IFNAME, LabPlan, PodPlan

NETNS_DIR = Path("/run/netns")
IFA_F_NODAD = 0x02  # the lab's addresses are unique by construction: skip IPv6 duplicate detection


class NetlinkError(Exception):
    """A kernel operation of the lab failed (message names the namespace and the step)."""


def netns_exists(name: str) -> bool:
    return (NETNS_DIR / name).exists()


def netns_pids(name: str) -> list[int]:
    """Every process whose network namespace is `name` (what `ip netns pids` prints)."""
    try:
        target = os.stat(NETNS_DIR / name)
    except OSError:
        return []
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            st = os.stat(f"/proc/{entry}/ns/net")
        except OSError:
            continue  # gone, or a kernel thread
        if (st.st_ino, st.st_dev) == (target.st_ino, target.st_dev):
            pids.append(int(entry))
    return pids


def remove_netns(name: str) -> bool:
    """Remove a namespace file if present; True when something was removed."""
    if not netns_exists(name):
        return False
    netns.remove(name)
    return True


def sysctl(ns: str, settings: dict[str, str]) -> None:
    """Set sysctls inside a namespace (`/proc/sys/net` is per namespace)."""
    args = [f"{k}={v}" for k, v in settings.items()]
    done = subprocess.run(["ip", "netns", "exec", ns, "sysctl", "-qw", *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise NetlinkError(f"{ns}: sysctl {' '.join(args)}: {done.stderr.strip()}")


def _up(ipr: NetNS, ifname: str) -> int:
    index = ipr.link_lookup(ifname=ifname)[0]
    ipr.link("set", index=index, state="up")
    return int(index)


def create_node(plan: LabPlan) -> None:
    """The node namespace: loopback, the bridge with the pods' gateway addresses, forwarding on."""
    name = plan.node_netns
    netns.create(name)
    with NetNS(name) as ipr:
        _up(ipr, "lo")
        ipr.link("add", ifname=BRIDGE, kind="bridge", br_nf_call_iptables=1, br_nf_call_ip6tables=1)
        index = ipr.link_lookup(ifname=BRIDGE)[0]
        ipr.addr("add", index=index, address=str(plan.gateway4.ip), prefixlen=plan.gateway4.network.prefixlen)
        if plan.gateway6 is not None:
            ipr.addr(
                "add",
                index=index,
                address=str(plan.gateway6.ip),
                prefixlen=plan.gateway6.network.prefixlen,
                IFA_FLAGS=IFA_F_NODAD,
            )
        ipr.link("set", index=index, state="up")
    settings = {
        "net.ipv4.ip_forward": "1",
        # br_netfilter is built into this kernel: bridged pod-to-pod traffic must pass the node's
        # ip/inet hooks, both for the enforcer and so that replies of DNATed connections are un-NATed.
        "net.bridge.bridge-nf-call-iptables": "1",
        "net.bridge.bridge-nf-call-ip6tables": "1",
    }
    if plan.gateway6 is not None:
        settings["net.ipv6.conf.all.forwarding"] = "1"
    sysctl(name, settings)


def create_pod(plan: LabPlan, pod: PodPlan, attach: bool = True) -> None:
    """A pod namespace whose eth0 is one end of a veth; the other end is a port of the node's bridge.

    With `attach` False the node's end stays down: the pod is fully configured but can send
    nothing until `attach_pod` (a pod added to a running lab waits for the enforcer first)."""
    netns.create(pod.netns)
    with NetNS(plan.node_netns) as node:
        node.link("add", ifname=pod.veth, kind="veth", peer={"ifname": POD_IFNAME, "net_ns_fd": pod.netns})
        bridge = node.link_lookup(ifname=BRIDGE)[0]
        index = node.link_lookup(ifname=pod.veth)[0]
        node.link("set", index=index, master=bridge)
        # Hairpin: with br_netfilter, a pod reaching itself through its service is DNATed on the
        # bridge path and must leave by the port it came in on (the bridge CNI's hairpinMode).
        node.brport("set", index=index, mode=1)
        if attach:
            node.link("set", index=index, state="up")
    with NetNS(pod.netns) as ipr:
        _up(ipr, "lo")
        eth = ipr.link_lookup(ifname=POD_IFNAME)[0]
        ipr.addr("add", index=eth, address=str(pod.ipv4), prefixlen=plan.gateway4.network.prefixlen)
        if pod.ipv6 is not None and plan.gateway6 is not None:
            ipr.addr(
                "add",
                index=eth,
                address=str(pod.ipv6),
                prefixlen=plan.gateway6.network.prefixlen,
                IFA_FLAGS=IFA_F_NODAD,
            )
        ipr.link("set", index=eth, state="up")
        ipr.route("add", dst="0.0.0.0/0", gateway=str(plan.gateway4.ip))
        if pod.ipv6 is not None and plan.gateway6 is not None:
            ipr.route("add", dst="::/0", gateway=str(plan.gateway6.ip), family=10)


def attach_pod(plan: LabPlan, pod: PodPlan) -> None:
    """Bring the node's end of a pod's veth up: from now on the pod reaches the bridge."""
    with NetNS(plan.node_netns) as node:
        node.link("set", index=node.link_lookup(ifname=pod.veth)[0], state="up")


def links_in(ns: str) -> list[str]:
    """Interface names inside a namespace (for status and tests)."""
    with NetNS(ns) as ipr:
        return [str(link.get_attr("IFLA_IFNAME")) for link in ipr.get_links()]
