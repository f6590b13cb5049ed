"""Golden text of the lab's NAT table (podwall/enforce/nft.py `render_lab_nat`)."""

from __future__ import annotations

from ipaddress import ip_address

import pytest

from podwall.enforce.nft import NatService, render_delete_table, render_lab_nat

HEAD = "table inet podwall-lab\ndelete table inet podwall-lab\ntable inet podwall-lab {\n"
HOOKS = """\
\tchain prerouting {
\t\ttype nat hook prerouting priority dstnat; policy accept;
\t\tjump services
\t}
\tchain output {
\t\ttype nat hook output priority -100; policy accept;
\t\tjump services
\t}
\tchain postrouting {
\t\ttype nat hook postrouting priority srcnat; policy accept;
"""


def svc(name: str, addr: str, proto: str, port: int, target: int, *eps: str) -> NatService:
    return NatService(name, ip_address(addr), proto, port, target, tuple(ip_address(e) for e in eps))


CASES = [
    (
        "one-endpoint",
        [svc("app/redis:6379/tcp", "10.96.0.60", "tcp", 6379, 6379, "10.244.0.2")],
        "\tchain services {\n"
        '\t\tip daddr 10.96.0.60 tcp dport 6379 dnat ip to 10.244.0.2:6379 comment "app/redis:6379/tcp"\n\t}\n'
        + HOOKS
        + "\t\tct status dnat ip saddr 10.244.0.2 ip daddr 10.244.0.2 masquerade\n\t}\n}\n",
    ),
    (
        "two-endpoints-ipv6-udp",
        [svc("k/dns:53/udp", "fd00::a", "udp", 53, 5353, "fd00:1::2", "fd00:1::3")],
        "\tchain services {\n"
        "\t\tip6 daddr fd00::a udp dport 53 numgen random mod 2 vmap { 0 : goto svc0-ep0, 1 : goto svc0-ep1 }"
        ' comment "k/dns:53/udp"\n\t}\n'
        "\tchain svc0-ep0 {\n\t\tmeta l4proto udp dnat ip6 to [fd00:1::2]:5353\n\t}\n"
        "\tchain svc0-ep1 {\n\t\tmeta l4proto udp dnat ip6 to [fd00:1::3]:5353\n\t}\n"
        + HOOKS
        + "\t\tct status dnat ip6 saddr fd00:1::2 ip6 daddr fd00:1::2 masquerade\n"
        "\t\tct status dnat ip6 saddr fd00:1::3 ip6 daddr fd00:1::3 masquerade\n\t}\n}\n",
    ),
    (
        "no-endpoints",
        [svc("app/empty:80/tcp", "10.96.0.9", "tcp", 80, 80)],
        "\tchain services {\n\t}\n" + HOOKS + "\t}\n}\n",
    ),
]


@pytest.mark.parametrize(("services", "body"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_render_lab_nat_golden(services: list[NatService], body: str) -> None:
    """The rendered script is exactly the golden text: atomic replace, DNAT per endpoint, hairpin masquerade."""
    assert render_lab_nat(services) == HEAD + body


def test_comment_cannot_break_out_of_its_string() -> None:
    """Quotes and backslashes in a service label never reach the nft script."""
    text = render_lab_nat([svc('a"; drop\\', "10.0.0.1", "tcp", 1, 1, "10.1.0.2")])
    assert 'comment "a; drop"' in text


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"protocol": "sctp"}, "not tcp or udp"),
        ({"endpoints": (ip_address("fd00::1"),)}, "family"),
    ],
    ids=["protocol", "mixed-family"],
)
def test_nat_service_rejects_bad_values(kwargs: dict[str, object], message: str) -> None:
    """A NAT entry with an unknown protocol or endpoints of another family is refused."""
    base: dict[str, object] = {
        "name": "x", "address": ip_address("10.0.0.1"), "protocol": "tcp", "port": 1, "target_port": 1,
        "endpoints": (ip_address("10.1.0.2"),),
    }  # fmt: skip
    with pytest.raises(ValueError, match=message):
        NatService(**{**base, **kwargs})  # type: ignore[arg-type]


def test_delete_table_script() -> None:
    """Deleting works whether or not the table exists (create-then-delete)."""
    assert render_delete_table() == "table inet podwall-lab\ndelete table inet podwall-lab\n"
