"""Let a tap stop copying connections the monitor is done with: an eBPF socket filter and its map.

The monitor needs a connection's bytes until its DPI has named it and stopped parsing (detection
gave up, or the parser is finished); after that only the flow's end matters. A bulk stream is
tens of thousands of GSO frames a second, and reading them costs the traffic itself: the copy
and the per-frame work take CPU time and memory bandwidth the workloads share (measured on this
project's 2-vCPU machines: a single iperf3 stream between pods kept 0.63-0.83 of its speed while
a monitor read it, whatever the monitor's scheduling priority).

`TapBypass` holds an LRU hash map of (address, port, address, port) tuples, one per direction of
each bypassed TCP connection, and an eBPF program of type socket filter, attached to every
socket of a tap (`SO_ATTACH_BPF`), that:

- keeps every frame that is not TCP over IPv4/IPv6 (or is a later fragment, or has IPv6
  extension headers), every TCP segment with SYN, FIN or RST, and every segment of a tuple not
  in the map;
- drops the other segments of a tuple in the map (they are never copied);
- deletes the tuple when a SYN, FIN or RST of it passes: a new connection on a reused tuple
  starts visible, and an ending one is seen to its end.

The program is assembled here (no compiler at run time). The kernel needs BPF_SYSCALL; where it
is missing or the program is refused, `TapBypass.create` returns None and the tap copies
everything, as before.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import logging
import os
import socket
import struct

__all__ = ["TapBypass", "bypass_program"]

log = logging.getLogger(__name__)

_SYS_BPF = 321  # x86_64
_MAP_CREATE, _MAP_UPDATE, _MAP_DELETE, _PROG_LOAD, _PROG_TEST_RUN = 0, 2, 3, 5, 10
_MAP_LRU_HASH = 9
_PROG_SOCKET_FILTER = 1
SO_ATTACH_BPF = 50
KEY_SIZE = 40  # family/protocol word, source (16), destination (16), source port, destination port
MAX_ENTRIES = 65536
KEEP = 0x40000

# eBPF instruction classes and fields (linux/bpf.h).
_LD_ABS_W, _LD_ABS_H, _LD_ABS_B = 0x20, 0x28, 0x30
_LD_IND_H, _LD_IND_B = 0x48, 0x50
_LD_IMM64 = 0x18
_ALU64_AND_K, _ALU64_LSH_K, _ALU64_ADD_K, _ALU64_MOV_K, _ALU64_MOV_X = 0x57, 0x67, 0x07, 0xB7, 0xBF
_JEQ_K, _JNE_K, _JSET_K, _JA = 0x15, 0x55, 0x45, 0x05
_CALL, _EXIT = 0x85, 0x95
_STX_W, _STX_H, _ST_DW = 0x63, 0x6B, 0x7A
_MAP_LOOKUP, _MAP_DELETE_HELPER = 1, 3
_R0, _R1, _R2, _R6, _R7, _R8, _R10 = 0, 1, 2, 6, 7, 8, 10
_KEY = -KEY_SIZE  # the key's place on the stack, below the frame pointer
_TCP_CONTROL = 0x07  # FIN | SYN | RST


class _Prog:
    """eBPF instructions with forward jumps to labels (16-bit offsets)."""

    def __init__(self) -> None:
        self.insns: list[tuple[int, int, int, int | str, int]] = []  # code, dst, src, offset or label, imm
        self.labels: dict[str, int] = {}

    def emit(self, code: int, dst: int = 0, src: int = 0, off: int | str = 0, imm: int = 0) -> None:
        self.insns.append((code, dst, src, off, imm))

    def label(self, name: str) -> None:
        self.labels[name] = len(self.insns)

    def encode(self) -> bytes:
        out = []
        for pos, (code, dst, src, off, imm) in enumerate(self.insns):
            if isinstance(off, str):
                off = self.labels[off] - pos - 1
            out.append(struct.pack("<BBhi", code, (src << 4) | dst, off, imm))
        return b"".join(out)


def bypass_program(map_fd: int) -> bytes:
    """The socket filter (see the module docstring), for the map with descriptor `map_fd`."""
    p = _Prog()
    p.emit(_ALU64_MOV_X, _R6, _R1)  # legacy packet loads read the packet through r6
    for i in range(KEY_SIZE // 8):
        p.emit(_ST_DW, _R10, 0, _KEY + 8 * i, 0)
    p.emit(_LD_ABS_H, imm=12)
    p.emit(_JEQ_K, _R0, 0, "v4", 0x0800)
    p.emit(_JEQ_K, _R0, 0, "v6", 0x86DD)
    p.emit(_JA, off="keep")
    # IPv4: TCP, not a later fragment; addresses in the key's first word of each 16-byte slot.
    p.label("v4")
    p.emit(_LD_ABS_B, imm=23)
    p.emit(_JNE_K, _R0, 0, "keep", 6)
    p.emit(_LD_ABS_H, imm=20)
    p.emit(_JSET_K, _R0, 0, "keep", 0x1FFF)
    p.emit(_ALU64_MOV_K, _R0, 0, 0, 4)
    p.emit(_STX_W, _R10, _R0, _KEY)
    p.emit(_LD_ABS_W, imm=26)
    p.emit(_STX_W, _R10, _R0, _KEY + 4)
    p.emit(_LD_ABS_W, imm=30)
    p.emit(_STX_W, _R10, _R0, _KEY + 20)
    p.emit(_LD_ABS_B, imm=14)
    p.emit(_ALU64_AND_K, _R0, 0, 0, 0x0F)
    p.emit(_ALU64_LSH_K, _R0, 0, 0, 2)
    p.emit(_ALU64_MOV_X, _R7, _R0)  # the IPv4 header length
    p.emit(_LD_IND_H, 0, _R7, 0, 14)
    p.emit(_STX_H, _R10, _R0, _KEY + 36)
    p.emit(_LD_IND_H, 0, _R7, 0, 16)
    p.emit(_STX_H, _R10, _R0, _KEY + 38)
    p.emit(_LD_IND_B, 0, _R7, 0, 14 + 13)
    p.emit(_ALU64_MOV_X, _R8, _R0)  # TCP flags
    p.emit(_JA, off="lookup")
    # IPv6: TCP right after the fixed header.
    p.label("v6")
    p.emit(_LD_ABS_B, imm=20)
    p.emit(_JNE_K, _R0, 0, "keep", 6)
    p.emit(_ALU64_MOV_K, _R0, 0, 0, 6)
    p.emit(_STX_W, _R10, _R0, _KEY)
    for i in range(4):
        p.emit(_LD_ABS_W, imm=22 + 4 * i)
        p.emit(_STX_W, _R10, _R0, _KEY + 4 + 4 * i)
        p.emit(_LD_ABS_W, imm=38 + 4 * i)
        p.emit(_STX_W, _R10, _R0, _KEY + 20 + 4 * i)
    p.emit(_LD_ABS_H, imm=54)
    p.emit(_STX_H, _R10, _R0, _KEY + 36)
    p.emit(_LD_ABS_H, imm=56)
    p.emit(_STX_H, _R10, _R0, _KEY + 38)
    p.emit(_LD_ABS_B, imm=54 + 13)
    p.emit(_ALU64_MOV_X, _R8, _R0)
    p.label("lookup")
    p.emit(_LD_IMM64, _R1, 1, 0, map_fd)  # src 1: BPF_PSEUDO_MAP_FD
    p.emit(0, 0, 0, 0, 0)
    p.emit(_ALU64_MOV_X, _R2, _R10)
    p.emit(_ALU64_ADD_K, _R2, 0, 0, _KEY)
    p.emit(_JSET_K, _R8, 0, "control", _TCP_CONTROL)
    p.emit(_CALL, imm=_MAP_LOOKUP)
    p.emit(_JEQ_K, _R0, 0, "keep", 0)
    p.emit(_ALU64_MOV_K, _R0, 0, 0, 0)  # bypassed: not copied
    p.emit(_EXIT)
    p.label("control")
    p.emit(_CALL, imm=_MAP_DELETE_HELPER)
    p.label("keep")
    p.emit(_ALU64_MOV_K, _R0, 0, 0, KEEP)
    p.emit(_EXIT)
    return p.encode()


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def _bpf(cmd: int, attr: ctypes.Array[ctypes.c_char]) -> int:
    libc = _libc()
    libc.syscall.restype = ctypes.c_long
    fd = int(libc.syscall(ctypes.c_long(_SYS_BPF), ctypes.c_int(cmd), attr, ctypes.c_uint(len(attr))))
    if fd < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return fd


def _key(src: bytes, sport: int, dst: bytes, dport: int) -> bytes:
    """A map key as the program writes it: the words of each address in host order, then ports."""
    family = 4 if len(src) == 4 else 6
    words = struct.unpack(f"!{len(src) // 4}I", src), struct.unpack(f"!{len(dst) // 4}I", dst)
    slot = [struct.pack("=" + "I" * len(w), *w).ljust(16, b"\0") for w in words]
    return struct.pack("=I", family) + slot[0] + slot[1] + struct.pack("=HH", sport, dport)


class TapBypass:
    """The map and the program; `add`/`remove` a connection (both directions); `attach` to sockets."""

    def __init__(self, map_fd: int, prog_fd: int) -> None:
        self.map_fd = map_fd
        self.prog_fd = prog_fd
        self.added = 0
        self.failed = 0

    @classmethod
    def create(cls, max_entries: int = MAX_ENTRIES) -> TapBypass | None:
        """Make the map and load the program; None (logged) when the kernel cannot."""
        map_fd = -1
        try:
            attr = ctypes.create_string_buffer(struct.pack("=IIIII", _MAP_LRU_HASH, KEY_SIZE, 8, max_entries, 0), 128)
            map_fd = _bpf(_MAP_CREATE, attr)
            code = bypass_program(map_fd)
            insns = ctypes.create_string_buffer(code, len(code))
            license_ = ctypes.create_string_buffer(b"GPL")
            log_buf = ctypes.create_string_buffer(65536)
            load = struct.pack(
                "=IIQQIIQ", _PROG_SOCKET_FILTER, len(code) // 8, ctypes.addressof(insns),
                ctypes.addressof(license_), 1, len(log_buf), ctypes.addressof(log_buf),
            )  # fmt: skip
            try:
                prog_fd = _bpf(_PROG_LOAD, ctypes.create_string_buffer(load, 128))
            except OSError as exc:
                raise OSError(exc.errno, f"{exc.strerror}: {log_buf.value.decode(errors='replace')[-400:]}") from None
        except (OSError, AttributeError) as exc:
            if map_fd >= 0:
                os.close(map_fd)
            log.warning("tap bypass unavailable (every frame is copied): %s", exc)
            return None
        return cls(map_fd, prog_fd)

    def attach(self, sock: socket.socket) -> None:
        sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_BPF, self.prog_fd)

    def _update(self, cmd: int, key: bytes) -> None:
        kbuf = ctypes.create_string_buffer(key, len(key))
        vbuf = ctypes.create_string_buffer(8)
        # The kernel refuses a delete whose attribute block has anything after the key.
        value = ctypes.addressof(vbuf) if cmd == _MAP_UPDATE else 0
        attr = struct.pack("=IxxxxQQQ", self.map_fd, ctypes.addressof(kbuf), value, 0)
        _bpf(cmd, ctypes.create_string_buffer(attr, 128))

    def add(self, a: bytes, a_port: int, b: bytes, b_port: int) -> bool:
        """Stop copying the TCP connection between (a, a_port) and (b, b_port); False when the map refused."""
        try:
            self._update(_MAP_UPDATE, _key(a, a_port, b, b_port))
            self._update(_MAP_UPDATE, _key(b, b_port, a, a_port))
        except OSError as exc:
            self.failed += 1
            log.debug("cannot bypass a connection: %s", exc)
            return False
        self.added += 1
        return True

    def remove(self, a: bytes, a_port: int, b: bytes, b_port: int) -> None:
        """Copy the connection again (its entries may be gone already: that is fine)."""
        for key in (_key(a, a_port, b, b_port), _key(b, b_port, a, a_port)):
            with contextlib.suppress(OSError):
                self._update(_MAP_DELETE, key)

    def run(self, frame: bytes) -> int:
        """What the program returns for an Ethernet `frame` as a tap socket would see it (0: not
        copied), run by the kernel itself (BPF_PROG_TEST_RUN), for tests."""
        # The kernel strips one Ethernet header before running a socket filter in a test run,
        # where a packet socket hands it the frame from its Ethernet header: give it one to strip.
        data = bytes(12) + frame[12:14] + frame
        buf = ctypes.create_string_buffer(data, len(data))
        attr = ctypes.create_string_buffer(
            struct.pack("=IIIIQQII", self.prog_fd, 0, len(data), 0, ctypes.addressof(buf), 0, 1, 0), 128
        )
        _bpf(_PROG_TEST_RUN, attr)
        return int(struct.unpack_from("=I", attr.raw, 4)[0])

    def close(self) -> None:
        for fd in (self.prog_fd, self.map_fd):
            with contextlib.suppress(OSError):
                os.close(fd)
        self.prog_fd = self.map_fd = -1
