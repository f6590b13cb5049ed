"""The tap's eBPF bypass (podwall/enforce/tapbypass.py), run by the kernel itself: segments of a
connection in the map are not copied, control segments always are and reopen the connection,
everything else is copied. Needs root and a kernel that loads eBPF; skips otherwise."""

from __future__ import annotations

import ipaddress
import os
import struct
from collections.abc import Iterator

import pytest

from podwall.enforce.tapbypass import KEEP, TapBypass

A4, B4 = ipaddress.ip_address("10.0.0.2").packed, ipaddress.ip_address("10.0.0.9").packed
A6, B6 = ipaddress.ip_address("fd00::2").packed, ipaddress.ip_address("fd00::9").packed
SYN, ACK, FIN, RST, PSH = 0x02, 0x10, 0x01, 0x04, 0x08


def _frame(src: bytes, sport: int, dst: bytes, dport: int, flags: int, proto: int = 6, frag: int = 0x4000) -> bytes:
    l4 = struct.pack("!HHIIBBHHH", sport, dport, 1, 1, 5 << 4, flags, 65535, 0, 0) + b"x" * 100
    if len(src) == 16:
        return bytes(12) + b"\x86\xdd" + struct.pack("!IHBB16s16s", 6 << 28, len(l4), proto, 64, src, dst) + l4
    head = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(l4), 0, frag, 64, proto, 0, src, dst)
    return bytes(12) + b"\x08\x00" + head + l4


@pytest.fixture
def bypass() -> Iterator[TapBypass]:
    if os.geteuid() != 0:
        pytest.skip("loading eBPF needs root")
    made = TapBypass.create()
    if made is None:
        pytest.skip("this kernel does not load the tap's eBPF program")
    try:
        yield made
    finally:
        made.close()


@pytest.mark.parametrize(("a", "b"), [(A4, B4), (A6, B6)], ids=["ipv4", "ipv6"])
def test_a_bypassed_connection_is_not_copied_in_either_direction(bypass: TapBypass, a: bytes, b: bytes) -> None:
    """Data segments of an added connection return 0 both ways; another connection's are kept."""
    assert bypass.run(_frame(a, 40000, b, 6379, ACK | PSH)) == KEEP
    assert bypass.add(a, 40000, b, 6379)
    assert bypass.run(_frame(a, 40000, b, 6379, ACK | PSH)) == 0
    assert bypass.run(_frame(b, 6379, a, 40000, ACK)) == 0
    assert bypass.run(_frame(a, 40001, b, 6379, ACK | PSH)) == KEEP


@pytest.mark.parametrize("flags", [SYN, FIN | ACK, RST], ids=["syn", "fin", "rst"])
def test_a_control_segment_is_kept_and_reopens_the_direction(bypass: TapBypass, flags: int) -> None:
    """SYN, FIN and RST always reach the monitor and delete their direction's entry."""
    bypass.add(A4, 40000, B4, 6379)
    assert bypass.run(_frame(A4, 40000, B4, 6379, flags)) == KEEP
    assert bypass.run(_frame(A4, 40000, B4, 6379, ACK | PSH)) == KEEP
    assert bypass.run(_frame(B4, 6379, A4, 40000, ACK)) == 0  # the other direction until its own


def test_remove_copies_the_connection_again(bypass: TapBypass) -> None:
    """After `remove`, both directions are copied again."""
    bypass.add(A4, 40000, B4, 6379)
    bypass.remove(A4, 40000, B4, 6379)
    assert bypass.run(_frame(A4, 40000, B4, 6379, ACK)) == KEEP
    assert bypass.run(_frame(B4, 6379, A4, 40000, ACK)) == KEEP


@pytest.mark.parametrize(
    "frame",
    [_frame(A4, 40000, B4, 6379, ACK, proto=17), _frame(A4, 40000, B4, 6379, ACK, frag=0x2001),
     bytes(12) + b"\x08\x06" + bytes(28)],
    ids=["udp", "ipv4-fragment", "arp"],
)  # fmt: skip
def test_what_the_bypass_cannot_key_is_kept(bypass: TapBypass, frame: bytes) -> None:
    """Non-TCP, later fragments and non-IP frames are always copied, even with the tuple in the map."""
    bypass.add(A4, 40000, B4, 6379)
    assert bypass.run(frame) == KEEP
