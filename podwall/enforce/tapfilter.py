"""A socket filter that keeps one copy of each packet on a node's pod veths, in the kernel (pure).

A packet between two tapped pods crosses two veths and is seen twice; `PodViews`
(podwall/datapath/io/afpacket.py) keeps one copy by a rule on addresses and ports. Doing that
choice in userspace means copying both 25-64 KB (GSO) copies out of the kernel and throwing one
away; the copies are most of what a passive tap costs the traffic (memory bandwidth it shares).
`dedupe_filter` compiles the same rule into a classic BPF program for the tapped pods' addresses
(given up front), so the discarded copy is never copied; `PodViews` still runs behind it for
addresses it learns later. The program also drops every frame that is not IPv4 or IPv6, as
`IP_ONLY_FILTER` does.

It can also cut large frames (`cut_large`): a kept frame above a size is copied only up to a
snap length. What a tap costs the traffic is the volume it copies (measured here: an iperf3
stream between two pods kept 0.75-0.83 of its speed under a monitor copying whole 25-64 KB GSO
frames, 1.0 when frames were cut to 256 bytes); the first bytes of a frame hold what the DPI
names a connection by, the rest of a large one is mostly bulk data. The price: a cut frame is a
gap in its TCP stream, after which the DPI stops parsing that connection.

Classic BPF has two registers, sixteen scratch words and no calls, and a conditional jump
reaches at most 255 instructions ahead; `_Asm` resolves labels and refuses a program whose
jumps do not fit (too many addresses: `dedupe_filter` then returns `IP_ONLY_FILTER`, and the
choice stays in userspace). `run_filter` interprets such a program over a frame, for tests.
"""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Iterable, Sequence

from podwall.datapath.flows import EPHEMERAL_MIN, SERVICE_PORTS
from podwall.datapath.io.afpacket import IP_ONLY_FILTER, PACKET_OUTGOING, BpfProgram
from podwall.datapath.io.pcap import MAX_CAPLEN

__all__ = ["dedupe_filter", "run_filter"]

# Classic BPF opcodes used here (linux/filter.h).
LD_W_ABS, LD_H_ABS, LD_B_ABS, LD_H_IND = 0x20, 0x28, 0x30, 0x48
LD_IMM, LD_LEN, LD_MEM, LDX_MEM, LDX_MSH = 0x00, 0x80, 0x60, 0x61, 0xB1
ST, SUB_X = 0x02, 0x1C
JA, JEQ_K, JGT_K, JGE_K, JSET_K, JEQ_X, JGT_X = 0x05, 0x15, 0x25, 0x35, 0x45, 0x1D, 0x2D
RET_K, TAX = 0x06, 0x07
PKTTYPE = 0xFFFFF004  # SKF_AD_OFF + SKF_AD_PKTTYPE: `ld #type`

KEEP, DROP = MAX_CAPLEN, 0
_SPORT, _DPORT, _SSVC, _DSVC = 0, 1, 2, 3  # scratch words
_PORTED = (6, 17, 132)  # TCP, UDP, SCTP: the transports whose ports tell client from server


class FilterTooLarge(Exception):
    """The program does not fit classic BPF's jump range or length (too many addresses)."""


Target = int | str


class _Asm:
    """Instructions with symbolic jump targets (labels), resolved by `program`."""

    def __init__(self) -> None:
        self.code: list[tuple[int, Target, Target, int | str]] = []
        self.labels: dict[str, int] = {}
        self._n = 0

    def label(self, name: str) -> None:
        self.labels[name] = len(self.code)

    def fresh(self, stem: str) -> str:
        self._n += 1
        return f"{stem}{self._n}"

    def op(self, code: int, k: int = 0) -> None:
        self.code.append((code, 0, 0, k))

    def jump(self, code: int, k: int, jt: Target, jf: Target) -> None:
        self.code.append((code, jt, jf, k))

    def goto(self, target: str) -> None:
        self.code.append((JA, 0, 0, target))

    def ret(self, value: int) -> None:
        self.op(RET_K, value)

    def program(self) -> list[tuple[int, int, int, int]]:
        out = []
        for pos, (code, jt, jf, k) in enumerate(self.code):
            off = [t if isinstance(t, int) else self.labels[t] - pos - 1 for t in (jt, jf)]
            if not all(0 <= o <= 255 for o in off):
                raise FilterTooLarge(f"a conditional jump at {pos} does not reach its target")
            if isinstance(k, str):
                k = self.labels[k] - pos - 1
            out.append((code, off[0], off[1], k))
        if len(out) > 4096:
            raise FilterTooLarge(f"{len(out)} instructions (at most 4096)")
        return out


def _words(packed: bytes) -> list[int]:
    return list(struct.unpack(f"!{len(packed) // 4}I", packed))


def _member(asm: _Asm, offsets: Sequence[int], addresses: Sequence[bytes], hit: str, miss: str) -> None:
    """Jump to `hit` when the address at `offsets` (its 32-bit words) is one of `addresses`."""
    for addr in addresses:
        nxt = asm.fresh("next")
        for i, (off, word) in enumerate(zip(offsets, _words(addr), strict=True)):
            asm.op(LD_W_ABS, off)
            asm.jump(JEQ_K, word, hit if i == len(offsets) - 1 else 0, nxt)
        asm.label(nxt)
    asm.goto(miss)


def _service(asm: _Asm, port_slot: int, out_slot: int) -> None:
    """M[out_slot] = 1 when the port in M[port_slot] is a service port (`is_service_port`), else 0."""
    yes, no, done = asm.fresh("svc"), asm.fresh("nosvc"), asm.fresh("svcdone")
    asm.op(LD_MEM, port_slot)
    asm.jump(JEQ_K, 0, no, 0)
    asm.jump(JGE_K, 1024, 0, yes)
    for port in sorted(SERVICE_PORTS):
        asm.jump(JEQ_K, port, yes, 0)
    asm.label(no)
    asm.op(LD_IMM, 0)
    asm.op(ST, out_slot)
    asm.goto(done)
    asm.label(yes)
    asm.op(LD_IMM, 1)
    asm.op(ST, out_slot)
    asm.label(done)


def _verdict(asm: _Asm, keep: bool) -> None:
    """The end of a decision: drop, or jump to the tail that keeps (and may cut) the frame."""
    if keep:
        asm.goto("keep")
    else:
        asm.ret(DROP)


def _client(asm: _Asm, family: int, yes: bool, no: bool) -> None:
    """Keep the frame (`yes`) when its source is the connection's client (`_src_is_client`), else `no`.

    The ports are in M[_SPORT] / M[_DPORT] (0 when the transport has none)."""
    client, other, tie = asm.fresh("client"), asm.fresh("server"), asm.fresh("tie")
    differ, sport_high = asm.fresh("differ"), asm.fresh("shigh")
    _service(asm, _SPORT, _SSVC)
    _service(asm, _DPORT, _DSVC)
    asm.op(LDX_MEM, _SSVC)
    asm.op(LD_MEM, _DSVC)
    asm.jump(JEQ_X, 0, 0, differ)
    # Both service ports or neither: a low port against an ephemeral one is the server.
    asm.op(LDX_MEM, _DPORT)
    asm.op(LD_MEM, _SPORT)
    asm.jump(JGT_X, 0, sport_high, 0)
    asm.jump(JGE_K, EPHEMERAL_MIN, tie, 0)  # lo = sport
    asm.op(LD_MEM, _DPORT)
    asm.jump(JGE_K, EPHEMERAL_MIN, other, tie)  # hi = dport: the source holds the low port: the server
    asm.label(sport_high)
    asm.op(LD_MEM, _DPORT)
    asm.jump(JGE_K, EPHEMERAL_MIN, tie, 0)  # lo = dport
    asm.op(LD_MEM, _SPORT)
    asm.jump(JGE_K, EPHEMERAL_MIN, client, tie)  # the destination holds the low port
    asm.label(differ)
    asm.jump(JEQ_K, 1, client, other)  # A = the destination's "is a service port"
    asm.label(tie)
    # (source address, port) > (destination address, port), word by word, unsigned.
    src, dst = ((26,), (30,)) if family == 4 else ((22, 26, 30, 34), (38, 42, 46, 50))
    for s, d in zip(src, dst, strict=True):
        asm.op(LD_W_ABS, d)
        asm.op(TAX)
        asm.op(LD_W_ABS, s)
        asm.jump(JGT_X, 0, client, 0)
        asm.jump(JEQ_X, 0, 0, other)
    asm.op(LDX_MEM, _DPORT)
    asm.op(LD_MEM, _SPORT)
    asm.jump(JGT_X, 0, client, other)
    asm.label(client)
    _verdict(asm, yes)
    asm.label(other)
    _verdict(asm, no)


def _family(asm: _Asm, family: int, local: Sequence[bytes]) -> None:
    """The frame is IPv`family` and long enough for its header: keep or drop it."""
    src = (26,) if family == 4 else (22, 26, 30, 34)
    dst = (30,) if family == 4 else (38, 42, 46, 50)
    ports, noports, decide = asm.fresh("ports"), asm.fresh("noports"), asm.fresh("decide")
    # Ports, when the transport has them and they are in the frame; else 0 and 0.
    if family == 4:
        asm.op(LD_H_ABS, 20)
        asm.jump(JSET_K, 0x1FFF, noports, 0)  # a later fragment
        asm.op(LD_B_ABS, 23)
    else:
        asm.op(LD_B_ABS, 20)
    for proto in _PORTED:
        asm.jump(JEQ_K, proto, ports, 0)
    asm.goto(noports)
    asm.label(ports)
    if family == 4:
        asm.op(LDX_MSH, 14)  # X = IP header length
        asm.op(LD_LEN)
        asm.op(SUB_X)
        asm.jump(JGE_K, 14 + 4, 0, noports)
        asm.op(LD_H_IND, 14)
        asm.op(ST, _SPORT)
        asm.op(LD_H_IND, 16)
    else:
        asm.op(LD_LEN)
        asm.jump(JGE_K, 58, 0, noports)
        asm.op(LD_H_ABS, 54)
        asm.op(ST, _SPORT)
        asm.op(LD_H_ABS, 56)
    asm.op(ST, _DPORT)
    asm.goto(decide)
    asm.label(noports)
    asm.op(LD_IMM, 0)
    asm.op(ST, _SPORT)
    asm.op(ST, _DPORT)
    asm.label(decide)
    outgoing, incoming = asm.fresh("out"), asm.fresh("in")
    asm.op(LD_W_ABS, PKTTYPE)
    asm.jump(JEQ_K, PACKET_OUTGOING, 0, 1)
    asm.goto(outgoing)
    # From a pod: keep unless the destination is a tapped pod too; then only from the client.
    asm.label(incoming)
    both, keep = asm.fresh("both"), asm.fresh("keep")
    _member(asm, dst, local, both, keep)
    asm.label(keep)
    _verdict(asm, True)
    asm.label(both)
    _client(asm, family, True, False)
    # To a pod: keep what no tapped pod sent; of a tapped pod's packet, only the client's copy.
    asm.label(outgoing)
    local_src, keep2, local_dst, drop = asm.fresh("lsrc"), asm.fresh("keep"), asm.fresh("ldst"), asm.fresh("drop")
    _member(asm, src, local, local_src, keep2)
    asm.label(keep2)
    _verdict(asm, True)
    asm.label(local_src)
    _member(asm, dst, local, local_dst, drop)
    asm.label(drop)
    asm.ret(DROP)
    asm.label(local_dst)
    _client(asm, family, False, True)


def dedupe_filter(local_addresses: Iterable[str | bytes], cut_large: tuple[int, int] | None = None) -> BpfProgram:
    """The program for a tap whose tapped pods have `local_addresses` (see the module docstring);
    `IP_ONLY_FILTER` (which cuts nothing) when they are too many for classic BPF.

    `cut_large` = (size, snap): a kept frame longer than `size` bytes is copied only up to its
    first `snap` bytes (the socket still learns its real length, PACKET_AUXDATA)."""
    packed = [a if isinstance(a, bytes) else ipaddress.ip_address(a).packed for a in local_addresses]
    v4 = sorted({a for a in packed if len(a) == 4})
    v6 = sorted({a for a in packed if len(a) == 16})
    asm = _Asm()
    asm.op(LD_H_ABS, 12)
    asm.jump(JEQ_K, 0x0800, "to4", 0)
    asm.jump(JEQ_K, 0x86DD, "to6", 0)
    asm.ret(DROP)  # neither IPv4 nor IPv6
    asm.label("to4")
    asm.goto("v4")
    asm.label("to6")
    asm.goto("v6")
    asm.label("v4")
    asm.op(LD_LEN)
    asm.jump(JGE_K, 34, 1, 0)
    asm.ret(KEEP)  # too short to place (or to cut): the decoder reports it
    _family(asm, 4, v4)
    asm.label("v6")
    asm.op(LD_LEN)
    asm.jump(JGE_K, 54, 1, 0)
    asm.ret(KEEP)
    _family(asm, 6, v6)
    asm.label("keep")
    if cut_large is not None:
        size, snap = cut_large
        asm.op(LD_LEN)
        asm.jump(JGT_K, size, 0, 1)
        asm.ret(snap)
    asm.ret(KEEP)
    try:
        return asm.program()
    except FilterTooLarge:
        return IP_ONLY_FILTER


def run_filter(program: BpfProgram, frame: bytes, pkttype: int) -> int:
    """What the kernel would return for `frame` (the bytes to keep, 0: drop): an interpreter of
    the instructions `dedupe_filter` uses, for tests. A load past the frame's end drops it, as
    the kernel's does."""
    a = x = 0
    mem = [0] * 16
    pc = 0
    n = len(frame)

    def load(size: int, off: int) -> int | None:
        if off == PKTTYPE and size == 4:
            return pkttype
        if off < 0 or off + size > n:
            return None
        return int.from_bytes(frame[off : off + size], "big")

    while pc < len(program):
        code, jt, jf, k = program[pc]
        pc += 1
        if code in (LD_W_ABS, LD_H_ABS, LD_B_ABS, LD_H_IND):
            size = {LD_W_ABS: 4, LD_H_ABS: 2, LD_B_ABS: 1, LD_H_IND: 2}[code]
            got = load(size, k + (x if code == LD_H_IND else 0))
            if got is None:
                return 0
            a = got
        elif code == LD_IMM:
            a = k
        elif code == LD_LEN:
            a = n
        elif code == LD_MEM:
            a = mem[k]
        elif code == LDX_MEM:
            x = mem[k]
        elif code == LDX_MSH:
            if k >= n:
                return 0
            x = 4 * (frame[k] & 0x0F)
        elif code == ST:
            mem[k] = a
        elif code == SUB_X:
            a = (a - x) & 0xFFFFFFFF
        elif code == TAX:
            x = a
        elif code == JA:
            pc += k
        elif code in (JEQ_K, JGT_K, JGE_K, JSET_K, JEQ_X, JGT_X):
            b = x if code in (JEQ_X, JGT_X) else k
            taken = {
                JEQ_K: a == b, JEQ_X: a == b, JGT_K: a > b, JGT_X: a > b, JGE_K: a >= b, JSET_K: bool(a & b),
            }[code]  # fmt: skip
            pc += jt if taken else jf
        elif code == RET_K:
            return k
        else:
            raise ValueError(f"opcode {code:#x} at {pc - 1} is not one run_filter knows")
    raise ValueError("the program ran off its end")
