"""nftables rendering: the only module of podwall that writes nftables syntax.

Each renderer is pure (values in, an `nft -f` script out) so that its output can be compared
with golden text; applying a script is the caller's business. Scripts replace their table
atomically: `table X` (create if absent), `delete table X`, then the full definition, all in
one transaction, so the kernel never holds a half-written table.

Sections:
- lab NAT (`render_lab_nat`): the lab's Service cluster IPs, DNATed to their pods inside the
  node's network namespace, as kube-proxy's nftables mode does.
- the enforcer (`render_ruleset`): table `inet podwall`, the L3/L4 half of enforcement, from a
  `KernelPlan` (podwall/enforce/plan.py); docs/enforce.md describes its layout.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address

from podwall.core.types import PROTO_ICMP, PROTO_TCP, PROTO_UDP
from podwall.enforce.plan import (
    MARK_ALLOW,
    MARK_DECIDE,
    MARK_DENY,
    MARK_MASK,
    MARK_OBSERVE,
    MARK_VALUE,
    AddressSet,
    KernelPlan,
    PortMatch,
    RuleTuple,
    Verdict,
)

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


# ---------------------------------------------------------------------------------------------
# The enforcer's table

TABLE = "podwall"
PRIORITY = "filter - 5"  # before iptables-nft's filter chains (priority 0), which hold the NFQUEUE handoff
_ADDR = {4: "ip", 6: "ip6"}
_ADDR_TYPE = {4: "ipv4_addr", 6: "ipv6_addr"}
_ICMP = {4: "icmp", 6: "ipv6-icmp"}
_TRANSPORT = {PROTO_TCP: "tcp", PROTO_UDP: "udp"}
_VERDICT = {
    Verdict.ALLOW: "goto allowed",
    Verdict.DENY: "goto violation",
    Verdict.USERSPACE: "goto userspace",
    Verdict.PASS: "return",
}
# Neighbour discovery is not connection traffic: no policy speaks of it and IPv6 dies without it.
_ND_TYPES = "nd-router-solicit, nd-router-advert, nd-neighbor-solicit, nd-neighbor-advert"


def set_name(base: str, family: int) -> str:
    """The nft set holding the addresses of one family of an `AddressSet`."""
    return f"{base}_v{family}"


@dataclass(frozen=True, slots=True)
class Match:
    """An immutable nft match expression: each method returns a new, longer match."""

    parts: tuple[str, ...] = ()

    def _and(self, text: str) -> Match:
        return Match((*self.parts, text))

    def saddr(self, family: int, base: str, negate: bool = False) -> Match:
        return self._and(f"{_ADDR[family]} saddr {'!= ' if negate else ''}@{set_name(base, family)}")

    def daddr(self, family: int, base: str, negate: bool = False) -> Match:
        return self._and(f"{_ADDR[family]} daddr {'!= ' if negate else ''}@{set_name(base, family)}")

    def ports(self, family: int, match: PortMatch) -> Match:
        if match.proto is None:
            return self
        if match.proto == PROTO_ICMP:
            return self._and(f"meta l4proto {_ICMP[family]}")
        name = _TRANSPORT.get(match.proto)
        if name is None:
            return self._and(f"meta l4proto {match.proto}")
        if not match.ranges:
            return self._and(f"meta l4proto {name}")
        items = [str(lo) if lo == hi else f"{lo}-{hi}" for lo, hi in match.ranges]
        ports = items[0] if len(items) == 1 else "{ " + ", ".join(items) + " }"
        return self._and(f"{name} dport {ports}")

    def render(self, verdict: str, comment: str | None = None) -> str:
        tail = f" comment {_quote(comment)}" if comment else ""
        return " ".join((*self.parts, verdict)) + tail


def _mark(value: int) -> str:
    return f"ct mark set ct mark & 0x{~MARK_MASK & 0xFFFFFFFF:08x} | 0x{value:08x}"


def _set_lines(s: AddressSet, family: int) -> list[str]:
    lines = [f"\tset {set_name(s.name, family)} {{", f"\t\ttype {_ADDR_TYPE[family]}", "\t\tflags interval"]
    elements = s.elements(family)
    if elements:
        lines.append("\t\telements = { " + ", ".join(elements) + " }")
    lines.append("\t}")
    return lines


def _tuple_lines(plan: KernelPlan, t: RuleTuple) -> list[str]:
    src, dst = plan.set_named(t.src), plan.set_named(t.dst)
    comment = f"rule {t.rule_id}" + (f": {t.why}" if t.why else "")
    out = []
    for family in (4, 6):
        if not src.intervals(family) or not dst.intervals(family):
            continue  # no address of this family on one side: the rule cannot match
        match = Match().saddr(family, t.src).daddr(family, t.dst).ports(family, t.match)
        out.append("\t\t" + match.render(_VERDICT[t.verdict], comment))
    return out


def _mode_lines(plan: KernelPlan) -> list[str]:
    """The mode default for a violation (a deny rule or no rule): protect rejects, monitor and
    discover let userspace record (and learn); `spec.strict` lets the more restrictive end decide."""
    order = [("mode_protect", "refuse"), ("mode_relaxed", "observe")]
    if not plan.strict:
        order.reverse()
    lines = []
    for base, target in order:
        for family in (4, 6):
            for side in (Match().saddr, Match().daddr):
                lines.append("\t\t" + side(family, base).render(f"goto {target}"))
    default = "refuse" if plan.default_mode == "protect" else "observe"
    lines.append(f"\t\tgoto {default}")
    return lines


def render_ruleset(plan: KernelPlan, table: str = TABLE) -> str:
    """The enforcer's `inet` table for one plan, as one atomic `nft -f` script (docs/enforce.md).

    New connections walk the rule tuples in evaluation order; the verdict is written into the
    conntrack mark (bits `MARK_MASK`) so that the iptables chain after this table knows which
    connections go to NFQUEUE. Established and related packets leave at the fast path.
    """
    lines = [f"table inet {table}", f"delete table inet {table}", f"table inet {table} {{"]
    for s in plan.sets:
        for family in (4, 6):
            lines += _set_lines(s, family)
    hook = f"type filter hook {{}} priority {PRIORITY}; policy accept;"
    # A connection the worker (or the drift watcher) denied is refused here, before the Service
    # DNAT: the reset is built from the packet as its sender addressed it (a cluster IP), so the
    # client accepts it, and a bridged packet's reset leaves without passing NAT again. Later in
    # the path (forward) the reset would carry the backend's address and be ignored.
    denied = f"ct mark & 0x{MARK_VALUE:08x} == 0x{MARK_DENY:08x}"
    lines += [
        "\tchain prerouting {",
        "\t\ttype filter hook prerouting priority mangle; policy accept;",
        f"\t\t{denied} tcp flags & rst == 0 reject with tcp reset",
        f"\t\t{denied} meta l4proto != tcp drop",
        "\t}",
    ]
    lines += ["\tchain forward {", "\t\t" + hook.format("forward"), "\t\tjump police", "\t}"]
    lines += ["\tchain input {", "\t\t" + hook.format("input"), '\t\tiifname "lo" accept', "\t\tjump police", "\t}"]
    # The node's own resets (the enforcer's, cutting a connection at both ends) carry no data and
    # belong to no new connection: the policy has nothing to say about them.
    lines += [
        "\tchain output {",
        "\t\t" + hook.format("output"),
        '\t\toifname "lo" accept',
        "\t\ttcp flags & rst == rst accept",
        "\t\tjump police",
        "\t}",
    ]
    lines.append("\tchain police {")
    for family in (4, 6):
        for side in (Match().saddr, Match().daddr):
            lines.append("\t\t" + side(family, plan.quarantine.name).render("goto cut"))
    lines += [
        "\t\tct state established,related accept",
        f"\t\ticmpv6 type {{ {_ND_TYPES} }} accept",
    ]
    for family in (4, 6):
        not_pods = Match().saddr(family, plan.pods.name, negate=True).daddr(family, plan.pods.name, negate=True)
        lines.append("\t\t" + not_pods.render("accept"))
    admin = [t for t in plan.tuples if t.tier == "admin"]
    if admin:
        lines.append("\t\tjump admin")
    for t in plan.tuples:
        if t.tier != "admin":
            lines += _tuple_lines(plan, t)
    lines += ["\t\tgoto violation", "\t}"]
    if admin:
        lines.append("\tchain admin {")
        for t in admin:
            lines += _tuple_lines(plan, t)
        lines.append("\t}")
    lines += ["\tchain violation {", *_mode_lines(plan), "\t}"]
    lines += ["\tchain allowed {", f"\t\t{_mark(MARK_ALLOW)} accept", "\t}"]
    lines += ["\tchain userspace {", f"\t\t{_mark(MARK_DECIDE)} accept", "\t}"]
    lines += ["\tchain observe {", f"\t\t{_mark(MARK_OBSERVE)} accept", "\t}"]
    reject = ["\t\tmeta l4proto tcp reject with tcp reset", "\t\treject with icmpx admin-prohibited"]
    lines += ["\tchain refuse {", *reject, "\t}"]
    lines += ["\tchain cut {", "\t\tmeta l4proto tcp reject with tcp reset", "\t\tdrop", "\t}"]
    lines.append("}")
    return "\n".join(lines) + "\n"


def render_delete(table: str = TABLE) -> str:
    """A script that removes the enforcer's table whether or not it exists."""
    return render_delete_table(table)
