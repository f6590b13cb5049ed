"""nftables rendering: the only module of podwall that writes nftables syntax.

Each renderer is pure (values in, an `nft -f` script out) so that its output can be compared
with golden text; applying a script is the caller's business. Scripts replace their table
atomically: `table X` (create if absent), `delete table X`, then the full definition, all in
one transaction, so the kernel never holds a half-written table.

Sections:
- lab NAT (`render_lab_nat`): the lab's Service cluster IPs, DNATed to their pods inside the
  node's network namespace, as kube-proxy's nftables mode does.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address

IPAddress = IPv4Address | IPv6Address

LAB_NAT_TABLE = "podwall-lab"


def _family(ip: IPAddress) -> str:
    return "ip" if ip.version == 4 else "ip6"


def _endpoint(ip: IPAddress, port: int) -> str:
    return f"{ip}:{port}" if ip.version == 4 else f"[{ip}]:{port}"


def _quote(text: str) -> str:
    """An nft string literal; comments come from names the lab validated, but never trust that."""
    return '"' + "".join(c for c in text if c.isprintable() and c not in '"\\') + '"'


# ---------------------------------------------------------------------------------------------
# Lab NAT


@dataclass(frozen=True, slots=True)
class NatService:
    """One service port on one cluster IP, and the pod addresses it balances over (same family)."""

    name: str  # for the rule comment: namespace/service:port/proto
    address: IPAddress
    protocol: str  # "tcp" or "udp"
    port: int
    target_port: int
    endpoints: tuple[IPAddress, ...]

    def __post_init__(self) -> None:
        if self.protocol not in ("tcp", "udp"):
            raise ValueError(f"protocol {self.protocol!r} is not tcp or udp")
        if any(ep.version != self.address.version for ep in self.endpoints):
            raise ValueError(f"{self.name}: endpoints must have the family of {self.address}")


def render_lab_nat(services: Sequence[NatService], table: str = LAB_NAT_TABLE) -> str:
    """The lab's `inet` NAT table: DNAT of each cluster IP:port to one of its endpoints (random),
    for traffic arriving from pods (prerouting) and from the node itself (output), and masquerade
    of a pod reaching itself through its own service (otherwise its reply would bypass the NAT).

    Services without endpoints get no rule: their cluster IP is simply unreachable.
    """
    lines = [f"table inet {table}", f"delete table inet {table}", f"table inet {table} {{"]
    dispatch: list[str] = []
    chains: list[str] = []
    hairpin: dict[IPAddress, None] = {}
    for n, svc in enumerate(s for s in services if s.endpoints):
        fam = _family(svc.address)
        match = f"{fam} daddr {svc.address} {svc.protocol} dport {svc.port}"
        comment = f"comment {_quote(svc.name)}"
        if len(svc.endpoints) == 1:
            dispatch.append(f"\t\t{match} dnat {fam} to {_endpoint(svc.endpoints[0], svc.target_port)} {comment}")
        else:
            targets = ", ".join(f"{i} : goto svc{n}-ep{i}" for i in range(len(svc.endpoints)))
            dispatch.append(f"\t\t{match} numgen random mod {len(svc.endpoints)} vmap {{ {targets} }} {comment}")
            for i, ep in enumerate(svc.endpoints):
                dnat = f"meta l4proto {svc.protocol} dnat {fam} to {_endpoint(ep, svc.target_port)}"
                chains += [f"\tchain svc{n}-ep{i} {{", f"\t\t{dnat}", "\t}"]
        for ep in svc.endpoints:
            hairpin[ep] = None
    lines += ["\tchain services {", *dispatch, "\t}", *chains]
    lines += [
        "\tchain prerouting {",
        "\t\ttype nat hook prerouting priority dstnat; policy accept;",
        "\t\tjump services",
        "\t}",
        "\tchain output {",
        "\t\ttype nat hook output priority -100; policy accept;",  # nft 1.0.6 knows no `dstnat` here
        "\t\tjump services",
        "\t}",
        "\tchain postrouting {",
        "\t\ttype nat hook postrouting priority srcnat; policy accept;",
    ]
    for ep in hairpin:
        fam = _family(ep)
        lines.append(f"\t\tct status dnat {fam} saddr {ep} {fam} daddr {ep} masquerade")
    lines += ["\t}", "}"]
    return "\n".join(lines) + "\n"


def render_delete_table(table: str = LAB_NAT_TABLE) -> str:
    """A script that removes an `inet` table whether or not it exists."""
    return f"table inet {table}\ndelete table inet {table}\n"
