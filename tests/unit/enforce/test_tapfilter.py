"""The tap's in-kernel copy choice (podwall/enforce/tapfilter.py): the classic BPF program decides
exactly as `PodViews.keep` does, and the kernel accepts it."""

from __future__ import annotations

import ctypes
import ipaddress
import socket
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from podwall.datapath.flows import SERVICE_PORTS
from podwall.datapath.io.afpacket import IP_ONLY_FILTER, SO_ATTACH_FILTER, PodViews
from podwall.enforce.tapfilter import dedupe_filter, run_filter

LOCAL = ["10.0.0.2", "10.0.0.3", "10.0.0.9", "fd00::2", "fd00::3"]
OTHERS = ["10.0.0.50", "10.96.0.1", "8.8.8.8", "fd00::50", "2001:db8::1", "fd00::2:1"]
PORTS = [0, 22, 80, 1023, 1024, 8080, 9000, 30000, 32767, 32768, 40000, 65535, *sorted(SERVICE_PORTS)[:6]]
PROGRAM = dedupe_filter(LOCAL)
OUTGOING = 4


def _frame(src: str, dst: str, proto: int, sport: int, dport: int, l4_len: int, ihl: int, frag: int) -> bytes:
    s, d = ipaddress.ip_address(src).packed, ipaddress.ip_address(dst).packed
    l4 = (struct.pack("!HH", sport, dport) + bytes(16))[:l4_len]
    if len(s) == 16:
        return bytes(12) + b"\x86\xdd" + struct.pack("!IHBB16s16s", 6 << 28, len(l4), proto, 64, s, d) + l4
    options = bytes(4 * (ihl - 5))
    length = 20 + len(options) + len(l4)
    head = struct.pack("!BBHHHBBH4s4s", 0x40 | ihl, 0, length, 0, frag, 64, proto, 0, s, d)
    return bytes(12) + b"\x08\x00" + head + options + l4


@st.composite
def frames(draw: st.DrawFn) -> bytes:
    family = draw(st.sampled_from([4, 6]))
    pool = [a for a in LOCAL + OTHERS if (":" in a) == (family == 6)]
    return _frame(
        draw(st.sampled_from(pool)),
        draw(st.sampled_from(pool)),
        draw(st.sampled_from([6, 17, 132, 1, 58, 47])),
        draw(st.sampled_from(PORTS)),
        draw(st.sampled_from(PORTS)),
        draw(st.sampled_from([0, 2, 4, 20])),
        draw(st.sampled_from([5, 6])),
        draw(st.sampled_from([0, 0x4000, 0x0010])),
    )


@settings(max_examples=1500, deadline=None)
@given(frame=frames(), outgoing=st.booleans())
def test_the_program_keeps_what_podviews_keeps(frame: bytes, outgoing: bool) -> None:
    """For IPv4 and IPv6 frames of any transport, ports and direction, the kernel-side choice and
    `PodViews.keep` (without learning) agree, so one copy of each packet is read."""
    want = PodViews(LOCAL, learn_cap=0).keep(frame, outgoing)
    assert (run_filter(PROGRAM, frame, OUTGOING if outgoing else 0) != 0) is want


@pytest.mark.parametrize(
    ("frame", "outgoing", "kept"),
    [
        (_frame("10.0.0.2", "10.0.0.9", 6, 40000, 6379, 20, 5, 0), False, True),  # client's copy, at its veth
        (_frame("10.0.0.2", "10.0.0.9", 6, 40000, 6379, 20, 5, 0), True, False),  # same packet at the server's
        (_frame("10.0.0.9", "10.0.0.2", 6, 6379, 40000, 20, 5, 0), False, False),  # the reply leaving the server
        (_frame("10.0.0.9", "10.0.0.2", 6, 6379, 40000, 20, 5, 0), True, True),  # ... entering the client
        (_frame("10.0.0.2", "10.96.0.1", 6, 40000, 6379, 20, 5, 0), False, True),  # to a Service address
        (_frame("8.8.8.8", "10.0.0.2", 17, 53, 40000, 20, 5, 0), True, True),  # from outside
        (bytes(12) + b"\x08\x06" + bytes(28), False, False),  # ARP: not IP
    ],
    ids=["pod-to-pod-client-side", "pod-to-pod-server-side", "reply-at-server", "reply-at-client", "to-service",
         "from-outside", "arp"],
)  # fmt: skip
def test_each_packet_is_kept_once(frame: bytes, outgoing: bool, kept: bool) -> None:
    """Between two tapped pods each packet is kept at the client's veth only; others are kept; non-IP is not."""
    assert (run_filter(PROGRAM, frame, OUTGOING if outgoing else 0) != 0) is kept


def test_too_many_addresses_fall_back_to_the_ip_only_filter() -> None:
    """Beyond what classic BPF's short jumps reach, the choice stays in userspace (the IP-only filter)."""
    many = [str(ipaddress.ip_address("fd00::1") + i) for i in range(100)]
    assert dedupe_filter(many) is IP_ONLY_FILTER
    assert dedupe_filter(LOCAL) is not IP_ONLY_FILTER


def test_the_kernel_accepts_the_program() -> None:
    """The kernel's checker takes the program (jump ranges, opcodes, the packet-type load) on a socket."""
    raw = b"".join(struct.pack("@HBBI", code, jt, jf, k) for code, jt, jf, k in PROGRAM)
    buf = ctypes.create_string_buffer(raw, len(raw))
    fprog = struct.pack("@HP", len(PROGRAM), ctypes.addressof(buf))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)


@pytest.mark.parametrize(
    ("size", "outgoing", "expected"),
    [(1000, False, 1 << 18), (30000, False, 4096), (30000, True, 0)],
    ids=["small-kept-whole", "large-kept-cut", "large-dropped"],
)
def test_large_frames_are_cut_when_asked(size: int, outgoing: bool, expected: int) -> None:
    """With `cut_large`, a kept frame above the size is copied up to the snap length only; smaller
    frames are copied whole and the copy choice is unchanged."""
    program = dedupe_filter(LOCAL, cut_large=(16384, 4096))
    frame = _frame("10.0.0.2", "10.0.0.9", 6, 40000, 6379, 20, 5, 0) + bytes(size)
    assert run_filter(program, frame, OUTGOING if outgoing else 0) == expected
