"""The iptables handoff chains (podwall/enforce/iptables.py): golden text, queue settings, and the
u32 payload tests evaluated the way xt_u32 does over real packet bytes."""

from __future__ import annotations

import ipaddress
import struct

import pytest

from podwall.enforce.iptables import QueueConfig, chain_rules, jump_rules, payload_tests, render_restore

_MAIN = """\
-A PODWALL -m mark --mark 0x100000/0xf00000 -j CONNMARK --save-mark --nfmask 0xf00000 --ctmask 0xf00000
-A PODWALL -m mark --mark 0x200000/0xf00000 -j CONNMARK --save-mark --nfmask 0xf00000 --ctmask 0xf00000
-A PODWALL -m connmark --mark 0x100000/0x700000 -j ACCEPT
-A PODWALL -p tcp -m tcp --tcp-flags RST RST -m connmark --mark 0x200000/0x700000 -j ACCEPT
-A PODWALL -p tcp -m connmark --mark 0x200000/0x700000 -j REJECT --reject-with tcp-reset
-A PODWALL -m connmark --mark 0x200000/0x700000 -j DROP
-A PODWALL -m connmark --mark 0x300000/0x700000 -j PODWALL-Q
-A PODWALL -m connmark --mark 0x300000/0x700000 -j NFQUEUE --queue-balance 100:101 --queue-bypass
-A PODWALL -m connmark --mark 0x400000/0x700000 -j PODWALL-Q
-A PODWALL -m connmark --mark 0x400000/0x700000 -j NFQUEUE --queue-balance 100:101 --queue-bypass
-A PODWALL-Q -p tcp -j PODWALL-PAYLOAD
-A PODWALL-Q -j MARK --set-xmark 0x800000/0xf00000
-A PODWALL-Q -m conntrack --ctdir REPLY -j MARK --set-xmark 0x200000/0x200000
-A PODWALL-Q -m connmark --mark 0x0/0x800000 -j MARK --set-xmark 0x100000/0x100000
-A PODWALL-Q -j CONNMARK --set-xmark 0x800000/0x800000
"""

GOLDEN_V4 = (
    "*filter\n:PODWALL - [0:0]\n:PODWALL-Q - [0:0]\n:PODWALL-PAYLOAD - [0:0]\n"
    + _MAIN
    + """\
-A PODWALL-PAYLOAD -m u32 ! --u32 "0x0>>0x16&0x3c=0x14" -j RETURN
-A PODWALL-PAYLOAD -m u32 --u32 "0x0&0xffff=0x0" -j RETURN
-A PODWALL-PAYLOAD -m u32 --u32 "0x20>>0x1c=0x8&&0x0&0xffff=0x35:0xffff" -j RETURN
-A PODWALL-PAYLOAD -m u32 --u32 "0x20>>0x1c=0x5&&0x0&0xffff=0x29:0xffff" -j RETURN
-A PODWALL-PAYLOAD -m u32 --u32 "0x20>>0x1c=0x6&&0x0&0xffff=0x2d:0xffff" -j RETURN
-A PODWALL-PAYLOAD -m u32 --u32 "0x20>>0x1c=0x7&&0x0&0xffff=0x31:0xffff" -j RETURN
-A PODWALL-PAYLOAD -m u32 --u32 "0x20>>0x1c=0x9&&0x0&0xffff=0x39:0xffff" -j RETURN
-A PODWALL-PAYLOAD -m u32 --u32 "0x20>>0x1c=0xa&&0x0&0xffff=0x3d:0xffff" -j RETURN
-A PODWALL-PAYLOAD -m u32 --u32 "0x20>>0x1c=0xb&&0x0&0xffff=0x41:0xffff" -j RETURN
-A PODWALL-PAYLOAD -m u32 --u32 "0x20>>0x1c=0xc&&0x0&0xffff=0x45:0xffff" -j RETURN
-A PODWALL-PAYLOAD -m u32 --u32 "0x20>>0x1c=0xd&&0x0&0xffff=0x49:0xffff" -j RETURN
-A PODWALL-PAYLOAD -m u32 --u32 "0x20>>0x1c=0xe&&0x0&0xffff=0x4d:0xffff" -j RETURN
-A PODWALL-PAYLOAD -m u32 --u32 "0x20>>0x1c=0xf&&0x0&0xffff=0x51:0xffff" -j RETURN
-A PODWALL-PAYLOAD -j ACCEPT
COMMIT
"""
)

GOLDEN_V6_PAYLOAD = """\
-A PODWALL-PAYLOAD -m u32 ! --u32 "0x4>>0x8&0xff=0x6" -j RETURN
-A PODWALL-PAYLOAD -m u32 --u32 "0x34>>0x1c=0x8&&0x4>>0x10=0x21:0xffff" -j RETURN
-A PODWALL-PAYLOAD -m u32 --u32 "0x34>>0x1c=0x5&&0x4>>0x10=0x15:0xffff" -j RETURN
"""


def test_iptables_restore_golden_ipv4() -> None:
    """The IPv4 handoff renders exactly: save the worker's verdict, fast paths, queues, flags, payload tests."""
    assert render_restore(QueueConfig(), 4) == GOLDEN_V4


def test_iptables_restore_ipv6_differs_only_in_payload_tests() -> None:
    """IPv6 shares every rule but the u32 payload tests, which read the IPv6 header."""
    v6 = render_restore(QueueConfig(), 6)
    assert _MAIN in v6
    assert GOLDEN_V6_PAYLOAD in v6
    assert "0x0>>0x16" not in v6 and v6.endswith("-A PODWALL-PAYLOAD -j ACCEPT\nCOMMIT\n")


@pytest.mark.parametrize(
    ("queue", "decide", "observe"),
    [
        (QueueConfig(fail_open=False), "-j NFQUEUE --queue-balance 100:101", "--queue-balance 100:101 --queue-bypass"),
        (QueueConfig(first=7, count=1), "-j NFQUEUE --queue-num 7 --queue-bypass", "--queue-num 7 --queue-bypass"),
    ],
    ids=["fail-closed", "single-queue"],
)
def test_queue_settings(queue: QueueConfig, decide: str, observe: str) -> None:
    """Failing closed drops the bypass for undecided connections only; observed ones always bypass."""
    queued = [r for r in chain_rules(queue) if "NFQUEUE" in r]
    assert len(queued) == 2
    assert "0x300000/" in queued[0] and queued[0].endswith(decide)
    assert "0x400000/" in queued[1] and queued[1].endswith(observe)


@pytest.mark.parametrize(("first", "count"), [(-1, 1), (65535, 2), (0, 0)], ids=["negative", "overflow", "none"])
def test_bad_queue_numbers_are_refused(first: int, count: int) -> None:
    """Queue numbers outside 0-65535 (or no queue at all) are refused."""
    with pytest.raises(ValueError, match="outside"):
        QueueConfig(first=first, count=count)


def test_jumps_from_every_hook() -> None:
    """Forwarded, incoming and outgoing traffic all pass the handoff chain."""
    assert jump_rules() == [("FORWARD", ["-j", "PODWALL"]), ("INPUT", ["-j", "PODWALL"]), ("OUTPUT", ["-j", "PODWALL"])]


# --- the u32 payload tests, as xt_u32 evaluates them ------------------------------------------------


def _u32_matches(test: str, packet: bytes) -> bool:
    """xt_u32 semantics for the subset podwall renders: `pos[&m|>>n|<<n]...=lo[:hi]` joined by `&&`;
    a read past the end of the packet fails the whole test."""
    for clause in test.split("&&"):
        location, _, ranges = clause.partition("=")
        tokens = location.replace("&", " & ").replace(">>", " >> ").replace("<<", " << ").split()
        pos = int(tokens[0], 0)
        if pos + 4 > len(packet):
            return False
        value = struct.unpack_from("!I", packet, pos)[0]
        for op, arg in zip(tokens[1::2], tokens[2::2], strict=True):
            n = int(arg, 0)
            value = value & n if op == "&" else value >> n if op == ">>" else (value << n) & 0xFFFFFFFF
        lo, _, hi = ranges.partition(":")
        if not int(lo, 0) <= value <= int(hi or lo, 0):
            return False
    return True


def _queued(family: int, packet: bytes) -> bool:
    """Whether PODWALL-PAYLOAD returns the packet (to be queued) rather than accepting it."""
    return any(_u32_matches(test, packet) != negate for test, negate in payload_tests(family))


def _tcp(options: int, payload: bytes) -> bytes:
    """A TCP header with `options` bytes of options (a multiple of 4), then the payload."""
    doff = 5 + options // 4
    return struct.pack("!HHIIBBHHH", 40000, 6379, 1, 1, doff << 4, 0x18, 65535, 0, 0) + b"\x01" * options + payload


def _ipv4(l4: bytes, ip_options: int = 0, total: int | None = None) -> bytes:
    ihl = 5 + ip_options // 4
    length = 20 + ip_options + len(l4) if total is None else total
    head = struct.pack("!BBHHHBBH4s4s", 0x40 | ihl, 0, length, 0, 0x4000, 64, 6, 0, b"\n\0\0\1", b"\n\0\0\2")
    return head + b"\x01" * ip_options + l4


def _ipv6(l4: bytes, next_header: int = 6) -> bytes:
    src, dst = ipaddress.ip_address("fd00::1").packed, ipaddress.ip_address("fd00::2").packed
    return struct.pack("!IHBB16s16s", 6 << 28, len(l4), next_header, 64, src, dst) + l4


@pytest.mark.parametrize("family", [4, 6], ids=["ipv4", "ipv6"])
@pytest.mark.parametrize("options", [0, 4, 12, 40], ids=["no-options", "mss", "timestamps", "full"])
@pytest.mark.parametrize(("size", "queued"), [(0, False), (1, True), (3, True), (4, True), (1400, True)],
                         ids=["bare", "1-byte", "3-bytes", "4-bytes", "full-segment"])  # fmt: skip
def test_a_segment_is_queued_exactly_when_it_carries_payload(
    family: int, options: int, size: int, queued: bool
) -> None:
    """Whatever the TCP options, a segment with even one payload byte is queued and a bare one is not."""
    l4 = _tcp(options, b"x" * size)
    packet = _ipv4(l4) if family == 4 else _ipv6(l4)
    assert _queued(family, packet) is queued


@pytest.mark.parametrize(
    ("family", "packet"),
    [
        (4, _ipv4(_tcp(0, b""), ip_options=4)),
        (4, _ipv4(_tcp(12, b""), total=0)),
        (6, _ipv6(b"\x06\x00" + b"\0" * 6 + _tcp(0, b""), next_header=0)),
    ],
    ids=["ipv4-options", "ipv4-gso-length-0", "ipv6-extension-header"],
)
def test_headers_u32_cannot_measure_are_queued(family: int, packet: bytes) -> None:
    """IP options, a zero IPv4 length (GSO beyond 64 KiB) and IPv6 extension headers are queued, bare or not."""
    assert _queued(family, packet)
