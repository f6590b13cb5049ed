"""A passive AF_PACKET tap on pod interfaces: copies of frames in, nothing ever sent or held back.

One `SOCK_RAW` packet socket per interface, created inside the node's network namespace (a
socket stays bound to the namespace it was made in, so the caller's thread returns to its own
namespace at once). Each socket gets a classic BPF program before it is bound, so only IPv4 and
IPv6 frames are copied to userspace, and kernel receive timestamps (`SO_TIMESTAMPNS`).

**Every packet once.** A packet between two pods of the node crosses two veths: it leaves the
sender's (received by the node, pkttype HOST/OTHERHOST) and enters the receiver's (sent by the
node, PACKET_OUTGOING). Capturing only one direction per veth would lose the other half of
every connection to or from something that is not a tapped pod (the node itself, the outside
world) and would split Service connections, whose two halves carry different addresses on each
side of the DNAT (client veth: client <-> cluster IP; server veth: client <-> server pod).
`PodViews` therefore keeps both directions of a connection on exactly one veth, the client's
when the client is a tapped pod (so a Service connection is seen as the client sent it, both
ways, cluster IP included, as a capture on the client would show it), else the only veth that
sees it. See `PodViews` for the rule and docs/monitor.md for its limits.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import ipaddress
import os
import select
import socket
import struct
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from types import TracebackType

from podwall.core.errors import CaptureError
from podwall.datapath.decode import LINKTYPE_ETHERNET
from podwall.datapath.flows import server_side_by_port
from podwall.datapath.io.pcap import MAX_CAPLEN, Frame

__all__ = [
    "IP_ONLY_FILTER",
    "BpfProgram",
    "PodViews",
    "Tap",
    "TapStats",
]

ETH_P_ALL = 0x0003
PACKET_OUTGOING = 4
SOL_PACKET = 263
PACKET_STATISTICS = 6
SO_ATTACH_FILTER = 26
SO_ATTACH_BPF = 50
SO_TIMESTAMPNS = 35  # SO_TIMESTAMPNS_OLD: a `struct timespec` of native longs (what Python's cmsg gets)
SO_RCVBUFFORCE = 33
CLONE_NEWNET = 0x40000000
NETNS_DIR = "/run/netns"

# (code, jt, jf, k) instructions of the classic BPF machine, as `tcpdump -dd` prints them.
BpfProgram = Sequence[tuple[int, int, int, int]]

# ldh [12]; jeq #0x800 -> accept; jeq #0x86dd -> accept; ret #0; accept: ret #MAX_CAPLEN.
# Veths carry no VLAN tags, so the EtherType sits right after the two MAC addresses.
IP_ONLY_FILTER: BpfProgram = (
    (0x28, 0, 0, 12),
    (0x15, 1, 0, 0x0800),
    (0x15, 0, 1, 0x86DD),
    (0x06, 0, 0, MAX_CAPLEN),
    (0x06, 0, 0, 0),
)

# GSO super-frames from veths reach 64 KiB (an IP packet's own length limit) plus the link header.
# A larger frame (BIG TCP) is cut here and counted as truncated. Not larger: every frame is
# received into a bytes object of this size, and above 128 KiB glibc maps and unmaps each one
# (measured: 51 µs per 60 KB frame against 9 µs at this size).
_BUFFER = 65536 + 64
_RCVBUF = 16 << 20  # bursts of 25 KB frames: a small socket buffer drops under load
_BATCH = 256  # frames read from one socket before the others get their turn
_TIMESPEC = struct.Struct("@ll")
_AUXDATA = struct.Struct("@IIIHHHH")  # struct tpacket_auxdata: status, len, snaplen, mac, net, vlan tci, tpid
PACKET_AUXDATA = 8
_ANCILLARY = socket.CMSG_SPACE(_TIMESPEC.size) + socket.CMSG_SPACE(_AUXDATA.size)
_TPACKET_STATS = struct.Struct("@II")
_PORTS = struct.Struct("!HH")
_TCP, _UDP, _SCTP = 6, 17, 132


@dataclass(slots=True)
class TapStats:
    """Counters of a tap: frames read and kept, and what the kernel dropped (socket buffer full)."""

    frames_read: int = 0
    frames_kept: int = 0
    bytes_read: int = 0
    truncated: int = 0
    cut: int = 0  # frames the socket filter copied only in part (their real length is known)
    kernel_drops: int = 0
    per_interface: dict[str, int] = field(default_factory=dict)


class PodViews:
    """Decides, per frame, whether this copy of a packet is the one to keep (pure; no sockets).

    For a frame on a pod's veth, `outgoing` means the node sent it to the pod. With L = the
    addresses of tapped pods (given, plus every source address seen leaving a pod):

    - from the pod (src is the pod): kept unless dst is in L too, in which case the packet is
      also seen entering dst's veth and is kept here only when src is the connection's client;
    - to the pod: kept when src is not in L (node, outside, a Service's un-NATed reply); when
      src is in L, kept only when dst (this pod) is the client; a flooded multicast or
      broadcast from a tapped pod (dst not in L) is dropped, its sender's copy is kept.

    The client is the end the flow table would pick by port (a service port against an
    ephemeral one); when ports do not tell, the higher address/port pair. The choice depends
    only on the packet's addresses and ports, so both copies agree and both directions of a
    connection land on the same veth.
    """

    __slots__ = ("_learn_cap", "local")

    def __init__(self, local: Iterable[str | bytes] = (), learn_cap: int = 65536) -> None:
        self.local: set[bytes] = {_packed(a) for a in local}
        self._learn_cap = learn_cap

    def keep(self, data: bytes | memoryview, outgoing: bool) -> bool:
        """Whether to keep this copy of an Ethernet frame captured on a pod veth."""
        if len(data) < 34:
            return True  # not an IP packet we can place: the decoder counts and reports it
        etype = (data[12] << 8) | data[13]
        if etype == 0x0800:
            ihl = (data[14] & 0x0F) << 2
            proto = data[23]
            src = bytes(data[26:30])
            dst = bytes(data[30:34])
            l4 = 14 + ihl
            fragment = (data[20] << 8 | data[21]) & 0x1FFF
            unspecified = src == b"\0\0\0\0"
        elif etype == 0x86DD and len(data) >= 54:
            proto = data[20]
            src = bytes(data[22:38])
            dst = bytes(data[38:54])
            l4 = 54
            fragment = 0
            unspecified = src == bytes(16)
        else:
            return True
        local = self.local
        if not outgoing:
            if not unspecified and src not in local and len(local) < self._learn_cap:
                local.add(src)  # a pod sends from its own address: learn pods not given up front
            if dst not in local:
                return True
            return _src_is_client(data, proto, src, dst, l4, fragment)
        if src not in local:
            return True
        if dst not in local:
            return False
        return not _src_is_client(data, proto, src, dst, l4, fragment)


def _src_is_client(data: bytes | memoryview, proto: int, src: bytes, dst: bytes, l4: int, fragment: int) -> bool:
    sport = dport = 0
    if proto in (_TCP, _UDP, _SCTP) and not fragment and len(data) >= l4 + 4:
        sport, dport = _PORTS.unpack_from(data, l4)
        by_port = server_side_by_port(sport, dport)
        if by_port is not None:
            return by_port
    # Ports do not tell (or none, as in ICMP or a later fragment): any order both copies agree on.
    return (src, sport) > (dst, dport)


def _packed(addr: str | bytes) -> bytes:
    return addr if isinstance(addr, bytes) else ipaddress.ip_address(addr).packed


class _NetnsSwitch:
    """Enters a named network namespace for the calling thread, and returns to where it was.

    setns(2) with CLONE_NEWNET changes only the calling thread, so other threads of the
    process are unaffected while the sockets are made.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self._home: int | None = None

    def __enter__(self) -> None:
        path = name_path(self.name)
        libc = _libc()
        self._home = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        try:
            target = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            os.close(self._home)
            raise CaptureError(f"network namespace {self.name}: cannot open {path}: {exc.strerror}") from None
        try:
            if libc.setns(target, CLONE_NEWNET) != 0:
                err = ctypes.get_errno()
                os.close(self._home)
                raise CaptureError(f"cannot enter network namespace {self.name}: {os.strerror(err)}")
        finally:
            os.close(target)

    def __exit__(self, *exc: object) -> None:
        assert self._home is not None
        try:
            if _libc().setns(self._home, CLONE_NEWNET) != 0:
                # The thread would stay in the wrong namespace: nothing sane can continue.
                raise CaptureError(f"cannot leave network namespace {self.name}: {os.strerror(ctypes.get_errno())}")
        finally:
            os.close(self._home)


def name_path(netns: str) -> str:
    """The file of a named namespace (`ip netns` names), or the path itself when one is given."""
    return netns if "/" in netns else os.path.join(NETNS_DIR, netns)


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def _attach_filter(sock: socket.socket, program: BpfProgram) -> None:
    raw = b"".join(struct.pack("@HBBI", code, jt, jf, k) for code, jt, jf, k in program)
    buf = ctypes.create_string_buffer(raw, len(raw))
    fprog = struct.pack("@HP", len(program), ctypes.addressof(buf))
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)


class Tap:
    """Packet sockets on `interfaces` (inside network namespace `netns`, or the caller's when None).

    Iterate `frames(timeout)` for Ethernet `Frame`s with kernel timestamps, `batches(timeout)`
    for lists of them; both end when `close` is called or the timeout passes without a frame
    (the timeout is how a caller gets control back to check its clock). Frames are already
    reduced to one copy per packet unless `dedupe` is False (then `views` is None).
    `local_addresses` are the tapped pods' addresses, when known (they are also learned).
    `bpf`: the classic BPF program each socket gets; `ebpf`: instead, the descriptor of a loaded
    eBPF socket filter (e.g. podwall/enforce/tapbypass.py's).
    """

    def __init__(
        self,
        interfaces: Sequence[str],
        netns: str | None = None,
        *,
        bpf: BpfProgram | None = IP_ONLY_FILTER,
        dedupe: bool = True,
        local_addresses: Iterable[str | bytes] = (),
        rcvbuf: int = _RCVBUF,
        ebpf: int | None = None,
    ) -> None:
        if not interfaces:
            raise CaptureError("no interfaces to tap")
        if len(set(interfaces)) != len(interfaces):
            raise CaptureError(f"interfaces given twice: {', '.join(interfaces)}")
        self.interfaces = list(interfaces)
        self.netns = netns
        self.views = PodViews(local_addresses) if dedupe else None
        self.stats = TapStats(per_interface=dict.fromkeys(self.interfaces, 0))
        self._socks: list[tuple[socket.socket, str]] = []
        self._poll = select.poll()
        self._by_fd: dict[int, tuple[socket.socket, str]] = {}
        self._number = 0
        self._closed = False
        try:
            if netns is None:
                self._open_all(bpf, rcvbuf, ebpf)
            else:
                with _NetnsSwitch(netns):
                    self._open_all(bpf, rcvbuf, ebpf)
        except BaseException:
            self.close()
            raise

    def _open_all(self, bpf: BpfProgram | None, rcvbuf: int, ebpf: int | None) -> None:
        where = f" in network namespace {self.netns}" if self.netns else ""
        for name in self.interfaces:
            try:
                # Protocol 0 receives nothing until bind: no frame of another interface slips
                # in between socket() and bind(), and the filter is on before the first one.
                sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
            except PermissionError:
                raise CaptureError("AF_PACKET sockets need root (CAP_NET_RAW)") from None
            self._socks.append((sock, name))
            try:
                if ebpf is not None:
                    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_BPF, ebpf)
                elif bpf is not None:
                    _attach_filter(sock, bpf)
                sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
                # The real length of a frame the filter cut (pcap's orig_len: the decoder then
                # takes it for a capture cut short, not for a malformed packet).
                sock.setsockopt(SOL_PACKET, PACKET_AUXDATA, 1)
                try:
                    sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, rcvbuf)
                except PermissionError:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
                sock.bind((name, ETH_P_ALL))
            except OSError as exc:
                raise CaptureError(f"cannot tap interface {name}{where}: {exc.strerror or exc}") from None
            sock.setblocking(False)
            self._by_fd[sock.fileno()] = (sock, name)
            self._poll.register(sock.fileno(), select.POLLIN)

    # -- reading ---------------------------------------------------------------------------

    def batches(self, timeout: float = 0.5) -> Iterator[list[Frame]]:
        """Lists of frames as they arrive; an empty list whenever `timeout` seconds pass quietly."""
        while not self._closed:
            try:
                ready = self._poll.poll(timeout * 1000)
            except InterruptedError:  # a signal: let the caller look at its stop flag
                ready = []
            if self._closed:
                return
            batch: list[Frame] = []
            for fd, _events in ready:
                entry = self._by_fd.get(fd)
                if entry is not None:
                    self._drain(entry[0], entry[1], batch)
            yield batch

    def frames(self, timeout: float = 0.5) -> Iterator[Frame]:
        """Frames one by one, until `close` (an idle `timeout` just loops)."""
        for batch in self.batches(timeout):
            yield from batch

    def _drain(self, sock: socket.socket, name: str, out: list[Frame]) -> None:
        views = self.views
        stats = self.stats
        recvmsg = sock.recvmsg
        for _ in range(_BATCH):
            try:
                # `recvmsg` (not `_into`): the kernel copies the frame straight into the bytes object
                # the engine keeps, one copy per frame instead of two (a copy of a 25-64 KB GSO frame
                # is what a tap costs: memory bandwidth the traffic itself needs).
                data, anc, flags, addr = recvmsg(_BUFFER, _ANCILLARY)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return  # the interface went away (pod deleted): its socket just stops delivering
            n = len(data)
            stats.frames_read += 1
            stats.bytes_read += n
            if flags & socket.MSG_TRUNC:
                stats.truncated += 1  # longer than the buffer: its real length is unknown
            outgoing = addr[2] == PACKET_OUTGOING
            if views is not None and not views.keep(data, outgoing):
                continue
            ts, length = _meta(anc)
            if length > n:
                stats.cut += 1
            else:
                length = n
            self._number += 1
            stats.frames_kept += 1
            stats.per_interface[name] += 1
            out.append(Frame(self._number, ts, LINKTYPE_ETHERNET, data, length))

    def kernel_drops(self) -> int:
        """Frames the kernel dropped since the last call (reading resets its counters), summed."""
        dropped = 0
        for sock, _name in self._socks:
            try:
                raw = sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, _TPACKET_STATS.size)
            except OSError:
                continue
            dropped += _TPACKET_STATS.unpack(raw)[1]
        self.stats.kernel_drops += dropped
        return dropped

    # -- lifetime --------------------------------------------------------------------------

    def close(self) -> None:
        """Close every socket; safe to call twice, and from another thread to end the iteration."""
        if self._closed:
            return
        self._closed = True
        for sock, _name in self._socks:
            with contextlib.suppress(KeyError, ValueError, OSError):
                self._poll.unregister(sock.fileno())
            sock.close()
        self._socks.clear()
        self._by_fd.clear()

    @property
    def closed(self) -> bool:
        return self._closed

    def __enter__(self) -> Tap:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def _meta(anc: list[tuple[int, int, bytes]]) -> tuple[float, int]:
    """(kernel receive time, the frame's real length; 0 when the kernel gave none) of a frame."""
    ts: float | None = None
    length = 0
    for level, kind, data in anc:
        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(data) >= _TIMESPEC.size:
            sec, nsec = _TIMESPEC.unpack_from(data)
            ts = sec + nsec / 1e9
        elif level == SOL_PACKET and kind == PACKET_AUXDATA and len(data) >= _AUXDATA.size:
            length = _AUXDATA.unpack_from(data)[1]
    return (time.time() if ts is None else ts), length
