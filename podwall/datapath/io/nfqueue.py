"""A small NFQUEUE client over raw netlink: bind a queue, receive packets, send (batch) verdicts.

NetfilterQueue 1.1.0 cannot set `NFQA_CFG_F_GSO` (every GSO super-packet is segmented before
userspace sees it) nor `NFQA_CFG_F_FAIL_OPEN`, and has no batch verdicts; this binding speaks
the nfnetlink_queue protocol itself with `struct` over an `AF_NETLINK` socket. The codec
(`encode_*`, `decode_messages`) is pure and bounds-checked; `NfQueue` is the socket around it.
A malformed message never raises: it is counted, logged (rate-limited), and when its packet
id is readable the packet is dropped (fail closed). See docs/nfqueue.md for the formats.
"""

from __future__ import annotations

import errno
import logging
import os
import select
import socket
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType

__all__ = [
    "COPY_META",
    "COPY_NONE",
    "COPY_PACKET",
    "F_CONNTRACK",
    "F_FAIL_OPEN",
    "F_GSO",
    "MAX_COPY_RANGE",
    "NF_ACCEPT",
    "NF_DROP",
    "NF_REPEAT",
    "NF_STOP",
    "Ack",
    "Decoded",
    "NfQueue",
    "NfQueueError",
    "QueueMessage",
    "decode_messages",
    "encode_config_cmd",
    "encode_config_flags",
    "encode_config_maxlen",
    "encode_config_params",
    "encode_verdict",
    "encode_verdict_batch",
]

log = logging.getLogger(__name__)

NETLINK_NETFILTER = 12
SOL_NETLINK = 270
NETLINK_NO_ENOBUFS = 5

# netlink message header
NLMSG_ERROR = 2
NLMSG_DONE = 3
NLM_F_REQUEST = 0x1
NLM_F_ACK = 0x4
NLA_TYPE_MASK = 0x3FFF  # strips NLA_F_NESTED / NLA_F_NET_BYTEORDER

# nfnetlink_queue subsystem and its messages
NFNL_SUBSYS_QUEUE = 3
NFQNL_MSG_PACKET = 0
NFQNL_MSG_VERDICT = 1
NFQNL_MSG_CONFIG = 2
NFQNL_MSG_VERDICT_BATCH = 3
NFNETLINK_V0 = 0

# NFQA_CFG_* attributes of a CONFIG message
NFQA_CFG_CMD = 1
NFQA_CFG_PARAMS = 2
NFQA_CFG_QUEUE_MAXLEN = 3
NFQA_CFG_MASK = 4
NFQA_CFG_FLAGS = 5

# NFQNL_CFG_CMD_* commands
CMD_BIND = 1
CMD_UNBIND = 2
CMD_PF_BIND = 3  # obsolete since Linux 3.8 (accepted as a no-op), needed by older kernels
CMD_PF_UNBIND = 4

COPY_NONE = 0
COPY_META = 1
COPY_PACKET = 2
MAX_COPY_RANGE = 0xFFFF

F_FAIL_OPEN = 1
F_CONNTRACK = 2
F_GSO = 4

# NFQA_* attributes of PACKET and VERDICT messages
NFQA_PACKET_HDR = 1
NFQA_VERDICT_HDR = 2
NFQA_MARK = 3
NFQA_TIMESTAMP = 4
NFQA_IFINDEX_INDEV = 5
NFQA_IFINDEX_OUTDEV = 6
NFQA_IFINDEX_PHYSINDEV = 7
NFQA_IFINDEX_PHYSOUTDEV = 8
NFQA_PAYLOAD = 10
NFQA_CAP_LEN = 13
NFQA_SKB_INFO = 14

NF_DROP = 0
NF_ACCEPT = 1
NF_REPEAT = 4
NF_STOP = 5
_VERDICTS = frozenset((NF_DROP, NF_ACCEPT, NF_REPEAT, NF_STOP))

_NLMSG = struct.Struct("=IHHII")  # length, type, flags, seq, port id (host order)
_NFGEN = struct.Struct("!BBH")  # family, version, resource id (queue number, network order)
_NLA = struct.Struct("=HH")  # attribute length, type (host order)
_PKT_HDR = struct.Struct("!IHB")  # packet id, hw protocol, hook
_U32 = struct.Struct("!I")
_TS = struct.Struct("!QQ")
_ERRNO = struct.Struct("=i")
_HDR_LEN = _NLMSG.size + _NFGEN.size  # 20

_U32_ATTRS = {
    NFQA_MARK: "mark",
    NFQA_IFINDEX_INDEV: "indev",
    NFQA_IFINDEX_OUTDEV: "outdev",
    NFQA_IFINDEX_PHYSINDEV: "physindev",
    NFQA_IFINDEX_PHYSOUTDEV: "physoutdev",
    NFQA_CAP_LEN: "cap_len",
    NFQA_SKB_INFO: "skb_info",
}

_U32_SLOTS = max(_U32_ATTRS) + 1

_RECV_BUFFER = 256 * 1024  # one message: a 64 KiB payload plus headers, with room to spare
_DEFAULT_RCVBUF = 8 * 1024 * 1024
_REPORT_LIMIT = 20


class NfQueueError(Exception):
    """The kernel refused to set up or use a queue; the message says which step and why."""


@dataclass(slots=True)
class QueueMessage:
    """One queued packet: `payload` is the IP packet (up to the copy range), `cap_len` its full
    length when the copy was cut (else None). Interface indexes are 0 when absent."""

    packet_id: int
    hw_protocol: int
    hook: int
    payload: bytes
    mark: int = 0
    indev: int = 0
    outdev: int = 0
    physindev: int = 0
    physoutdev: int = 0
    cap_len: int | None = None
    skb_info: int = 0
    timestamp: float | None = None
    queue: int = 0


@dataclass(frozen=True, slots=True)
class Ack:
    """A netlink acknowledgement or error: `error` is 0 (success) or a positive errno."""

    seq: int
    error: int


@dataclass(slots=True)
class Decoded:
    """What one received datagram held: packets, acks, and the ids of malformed packets.

    `bad_ids` are packet ids read from messages that were otherwise unusable: the caller must
    drop them, or they would wait in the kernel queue forever. `problems` says what was wrong.
    """

    packets: list[QueueMessage] = field(default_factory=list)
    acks: list[Ack] = field(default_factory=list)
    bad_ids: list[tuple[int, int]] = field(default_factory=list)  # (queue, packet id)
    problems: list[str] = field(default_factory=list)


# -- encoding ---------------------------------------------------------------------------------


def _attr(kind: int, value: bytes) -> bytes:
    size = _NLA.size + len(value)
    return _NLA.pack(size, kind) + value + b"\0" * (-size & 3)


def _message(msg: int, queue: int, attrs: bytes, seq: int, flags: int, family: int = socket.AF_UNSPEC) -> bytes:
    if not 0 <= queue <= 0xFFFF:
        raise ValueError(f"queue number {queue} is outside 0-65535")
    body = _NFGEN.pack(family, NFNETLINK_V0, queue) + attrs
    return _NLMSG.pack(_NLMSG.size + len(body), (NFNL_SUBSYS_QUEUE << 8) | msg, flags, seq & 0xFFFFFFFF, 0) + body


def encode_config_cmd(queue: int, command: int, pf: int = socket.AF_UNSPEC, seq: int = 0, ack: bool = True) -> bytes:
    """A CONFIG message carrying one command (bind, unbind, pf bind, pf unbind) for `pf`."""
    attrs = _attr(NFQA_CFG_CMD, struct.pack("!BxH", command, pf))
    return _message(NFQNL_MSG_CONFIG, queue, attrs, seq, NLM_F_REQUEST | (NLM_F_ACK if ack else 0))


def encode_config_params(queue: int, copy_mode: int, copy_range: int, seq: int = 0, ack: bool = True) -> bytes:
    """A CONFIG message setting the copy mode and how many bytes of each packet are copied."""
    if copy_mode not in (COPY_NONE, COPY_META, COPY_PACKET):
        raise ValueError(f"copy mode {copy_mode} is not none (0), meta (1) or packet (2)")
    if not 0 <= copy_range <= MAX_COPY_RANGE:
        raise ValueError(f"copy range {copy_range} is outside 0-{MAX_COPY_RANGE}")
    attrs = _attr(NFQA_CFG_PARAMS, struct.pack("!IB", copy_range, copy_mode))
    return _message(NFQNL_MSG_CONFIG, queue, attrs, seq, NLM_F_REQUEST | (NLM_F_ACK if ack else 0))


def encode_config_maxlen(queue: int, maxlen: int, seq: int = 0, ack: bool = True) -> bytes:
    """A CONFIG message setting how many packets may wait in the kernel for a verdict."""
    if not 1 <= maxlen <= 0xFFFFFFFF:
        raise ValueError(f"queue maxlen {maxlen} is outside 1-{0xFFFFFFFF}")
    attrs = _attr(NFQA_CFG_QUEUE_MAXLEN, _U32.pack(maxlen))
    return _message(NFQNL_MSG_CONFIG, queue, attrs, seq, NLM_F_REQUEST | (NLM_F_ACK if ack else 0))


def encode_config_flags(queue: int, flags: int, mask: int, seq: int = 0, ack: bool = True) -> bytes:
    """A CONFIG message setting the bits of `mask` in the queue flags to those of `flags`."""
    attrs = _attr(NFQA_CFG_FLAGS, _U32.pack(flags)) + _attr(NFQA_CFG_MASK, _U32.pack(mask))
    return _message(NFQNL_MSG_CONFIG, queue, attrs, seq, NLM_F_REQUEST | (NLM_F_ACK if ack else 0))


def _verdict_attrs(packet_id: int, verdict: int, mark: int | None) -> bytes:
    if verdict not in _VERDICTS:
        raise ValueError(f"verdict {verdict} is not drop (0), accept (1), repeat (4) or stop (5)")
    if not 0 <= packet_id <= 0xFFFFFFFF:
        raise ValueError(f"packet id {packet_id} is outside 0-{0xFFFFFFFF}")
    attrs = _attr(NFQA_VERDICT_HDR, struct.pack("!II", verdict, packet_id))
    if mark is not None:
        if not 0 <= mark <= 0xFFFFFFFF:
            raise ValueError(f"mark {mark} is outside 0-{0xFFFFFFFF}")
        attrs += _attr(NFQA_MARK, _U32.pack(mark))
    return attrs


def encode_verdict(queue: int, packet_id: int, verdict: int, mark: int | None = None, seq: int = 0) -> bytes:
    """A VERDICT message for one packet, optionally setting its mark."""
    return _message(NFQNL_MSG_VERDICT, queue, _verdict_attrs(packet_id, verdict, mark), seq, NLM_F_REQUEST)


def encode_verdict_batch(queue: int, max_id: int, verdict: int, mark: int | None = None, seq: int = 0) -> bytes:
    """A VERDICT_BATCH message: the verdict (and mark) for every queued packet with id <= `max_id`."""
    return _message(NFQNL_MSG_VERDICT_BATCH, queue, _verdict_attrs(max_id, verdict, mark), seq, NLM_F_REQUEST)


# -- decoding ---------------------------------------------------------------------------------


def _packet(data: bytes | memoryview, off: int, end: int, queue: int) -> QueueMessage:
    # The hot path of every queued packet: one pass over the attributes, no helper calls; the
    # 32-bit attributes land in `values` by type.
    nla = _NLA.unpack_from
    u32 = _U32.unpack_from
    header: tuple[int, int, int] | None = None
    values = [0] * _U32_SLOTS
    values[NFQA_CAP_LEN] = -1
    ts: float | None = None
    payload = b""
    while off + 4 <= end:
        size, kind = nla(data, off)
        stop = off + size
        if size < 4 or stop > end:
            raise ValueError(f"attribute of length {size} at byte {off} overruns the message (ends at {end})")
        kind &= NLA_TYPE_MASK
        if kind == NFQA_PAYLOAD:
            payload = bytes(data[off + 4 : stop])
        elif kind in _U32_ATTRS:
            if size < 8:
                raise ValueError(f"{_U32_ATTRS[kind]} attribute holds {size - 4} bytes, 4 needed")
            values[kind] = u32(data, off + 4)[0]
        elif kind == NFQA_PACKET_HDR:
            if size < 4 + _PKT_HDR.size:
                raise ValueError(f"packet header attribute holds {size - 4} bytes, {_PKT_HDR.size} needed")
            header = _PKT_HDR.unpack_from(data, off + 4)
        elif kind == NFQA_TIMESTAMP and size >= 4 + _TS.size:
            sec, usec = _TS.unpack_from(data, off + 4)
            ts = sec + usec / 1e6
        off += (size + 3) & ~3
    if header is None:
        raise ValueError("packet message without a packet header attribute")
    cap_len = values[NFQA_CAP_LEN]
    return QueueMessage(
        header[0],
        header[1],
        header[2],
        payload,
        values[NFQA_MARK],
        values[NFQA_IFINDEX_INDEV],
        values[NFQA_IFINDEX_OUTDEV],
        values[NFQA_IFINDEX_PHYSINDEV],
        values[NFQA_IFINDEX_PHYSOUTDEV],
        None if cap_len < 0 else cap_len,
        values[NFQA_SKB_INFO],
        ts,
        queue,
    )


def _salvage_id(data: bytes | memoryview, off: int, end: int) -> int | None:
    """The packet id of a message whose attributes are damaged, if its header attribute is readable."""
    if off + _NLA.size + _PKT_HDR.size > end:
        return None
    size, kind = _NLA.unpack_from(data, off)
    if kind & NLA_TYPE_MASK == NFQA_PACKET_HDR and size >= _NLA.size + _PKT_HDR.size and off + size <= end:
        return int(_U32.unpack_from(data, off + _NLA.size)[0])
    return None


def decode_messages(data: bytes | memoryview, size: int | None = None, out: Decoded | None = None) -> Decoded:
    """Decode the netlink messages in `data[:size]`; never raises, whatever the bytes."""
    res = out if out is not None else Decoded()
    end_all = len(data) if size is None else min(size, len(data))
    off = 0
    while off < end_all:
        if end_all - off < _NLMSG.size:
            res.problems.append(f"{end_all - off} trailing bytes at {off} are shorter than a netlink header")
            break
        length, mtype, _flags, seq, _pid = _NLMSG.unpack_from(data, off)
        if length < _NLMSG.size or off + length > end_all:
            res.problems.append(f"netlink message at byte {off} claims {length} bytes, {end_all - off} left")
            break
        end = off + length
        try:
            if mtype == NLMSG_ERROR:
                if length < _NLMSG.size + 4:
                    raise ValueError(f"error message of {length} bytes has no error code")
                code = _ERRNO.unpack_from(data, off + _NLMSG.size)[0]
                res.acks.append(Ack(seq, -code if code < 0 else code))
            elif mtype == NLMSG_DONE or mtype < 0x10:
                pass  # control messages other than errors carry nothing for us
            elif mtype == (NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_PACKET:
                if length < _HDR_LEN:
                    raise ValueError(f"packet message of {length} bytes is shorter than its 20-byte header")
                queue = _NFGEN.unpack_from(data, off + _NLMSG.size)[2]
                try:
                    res.packets.append(_packet(data, off + _HDR_LEN, end, queue))
                except (ValueError, struct.error) as exc:
                    pid = _salvage_id(data, off + _HDR_LEN, end)
                    if pid is not None:
                        res.bad_ids.append((queue, pid))
                    raise ValueError(f"packet message at byte {off}: {exc}") from None
            else:
                res.problems.append(f"unexpected netlink message type {mtype:#x} at byte {off}")
        except (ValueError, struct.error) as exc:
            res.problems.append(str(exc))
        off += (length + 3) & ~3
    return res


# -- the socket -------------------------------------------------------------------------------


class NfQueue:
    """One bound NFQUEUE queue number (see the module docstring).

    The constructor binds and configures the queue and checks every step's acknowledgement,
    so a queue that exists is configured as asked (`flags` holds the accepted flags). Only one
    process may bind a queue number: another binder gets EBUSY, reported as `NfQueueError`.
    Use as a context manager, or call `close` (idempotent), which unbinds the queue.
    """

    def __init__(
        self,
        queue_num: int,
        *,
        copy_range: int = MAX_COPY_RANGE,
        maxlen: int | None = 4096,
        gso: bool = True,
        fail_open: bool = False,
        rcvbuf: int = _DEFAULT_RCVBUF,
        legacy_pf: bool = True,
    ) -> None:
        if not 0 <= queue_num <= 0xFFFF:
            raise ValueError(f"queue number {queue_num} is outside 0-65535")
        self.queue_num = queue_num
        self.flags = 0
        self.stats: dict[str, int] = dict.fromkeys(
            ("received", "malformed", "dropped_malformed", "verdicts", "batch_verdicts", "errors", "enobufs"), 0
        )
        self._seq = 0
        self._pending: list[QueueMessage] = []
        self._got = Decoded()
        self._poller = select.poll()
        self._buf = bytearray(_RECV_BUFFER)
        self._view = memoryview(self._buf)
        self._reports = 0
        self._bound = False
        try:
            self._sock: socket.socket | None = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
        except OSError as exc:
            raise NfQueueError(f"cannot open a netfilter netlink socket: {exc.strerror or exc}") from exc
        try:
            self._setup(copy_range, maxlen, gso, fail_open, rcvbuf, legacy_pf)
        except BaseException:
            self.close()
            raise

    def _setup(self, copy_range: int, maxlen: int | None, gso: bool, fail_open: bool, rcvbuf: int, pf: bool) -> None:
        sock = self._socket()
        sock.bind((0, 0))
        self._poller.register(sock.fileno(), select.POLLIN)
        try:
            sock.setsockopt(socket.SOL_SOCKET, 33, rcvbuf)  # SO_RCVBUFFORCE: beyond rmem_max (root)
        except OSError:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        q = self.queue_num
        if pf:
            # Kernels before 3.8 needed the family bound per queue; later ones accept these as no-ops.
            for family in (socket.AF_INET, socket.AF_INET6):
                self._request(encode_config_cmd(q, CMD_PF_UNBIND, family, self._next()), f"unbind family {family}")
                self._request(encode_config_cmd(q, CMD_PF_BIND, family, self._next()), f"bind family {family}")
        self._request(encode_config_cmd(q, CMD_BIND, socket.AF_UNSPEC, self._next()), "bind")
        self._bound = True
        self._request(encode_config_params(q, COPY_PACKET, copy_range, self._next()), "set copy mode")
        if maxlen is not None:
            self._request(encode_config_maxlen(q, maxlen, self._next()), "set queue maxlen")
        wanted = (F_GSO if gso else 0) | (F_FAIL_OPEN if fail_open else 0)
        self._request(encode_config_flags(q, wanted, F_GSO | F_FAIL_OPEN, self._next()), "set flags")
        self.flags = wanted  # the ack said 0: the kernel took every bit of the mask as given

    # -- plumbing -----------------------------------------------------------------------------

    def _socket(self) -> socket.socket:
        if self._sock is None:
            raise NfQueueError(f"queue {self.queue_num} is closed")
        return self._sock

    def _next(self) -> int:
        self._seq = (self._seq + 1) & 0xFFFFFFFF or 1
        return self._seq

    def _request(self, message: bytes, step: str) -> None:
        """Send a CONFIG message with NLM_F_ACK and wait for its acknowledgement."""
        sock = self._socket()
        seq = _NLMSG.unpack_from(message, 0)[3]
        sock.send(message)
        while True:
            ready, _, _ = select.select([sock], [], [], 5.0)
            if not ready:
                raise NfQueueError(f"queue {self.queue_num}: no answer from the kernel to '{step}'")
            n = self._recv_one(0)
            if n <= 0:
                continue
            got = decode_messages(self._view, n)
            mine = [ack for ack in got.acks if ack.seq == seq]
            got.acks = [ack for ack in got.acks if ack.seq != seq]
            self._absorb(got)
            if mine:
                if mine[0].error:
                    raise NfQueueError(self._explain(step, mine[0].error))
                return

    def _explain(self, step: str, code: int) -> str:
        text = os.strerror(code)
        q = self.queue_num
        if code == errno.EBUSY or (code == errno.EPERM and step == "bind"):
            # The kernel answers EPERM when another socket owns the queue number.
            return (
                f"queue {q}: '{step}' refused: the queue is bound by another process, or CAP_NET_ADMIN "
                f"is missing ({text})"
            )
        if code == errno.EPERM:
            return f"queue {q}: '{step}' refused: CAP_NET_ADMIN is needed ({text})"
        if code == errno.EOPNOTSUPP:
            return f"queue {q}: '{step}' refused: this kernel does not support it ({text})"
        return f"queue {q}: '{step}' failed: {text} (errno {code})"

    def _recv_one(self, flags: int) -> int:
        try:
            return self._socket().recv_into(self._buf, _RECV_BUFFER, flags)
        except BlockingIOError:
            return -1
        except OSError as exc:
            if exc.errno == errno.ENOBUFS:
                # The socket buffer overflowed: the kernel dropped (or, fail-open, accepted)
                # those packets itself; none of them waits for us.
                self.stats["enobufs"] += 1
                return 0
            raise

    def _absorb(self, got: Decoded) -> None:
        """Keep the packets, drop the malformed ones (fail closed), log problems and errors."""
        if got.packets:
            self.stats["received"] += len(got.packets)
            self._pending.extend(got.packets)
        for ack in got.acks:
            if ack.error:
                self.stats["errors"] += 1
                self._report(f"queue {self.queue_num}: kernel error {os.strerror(ack.error)} for request {ack.seq}")
        if got.problems:
            self.stats["malformed"] += len(got.problems)
            for problem in got.problems:
                self._report(f"queue {self.queue_num}: malformed netlink message dropped: {problem}")
        for queue, pid in got.bad_ids:
            if queue == self.queue_num:
                self._send(encode_verdict(queue, pid, NF_DROP))
                self.stats["dropped_malformed"] += 1
        got.packets.clear()

    def _report(self, message: str) -> None:
        if self._reports < _REPORT_LIMIT:
            self._reports += 1
            log.warning(message)

    def _send(self, message: bytes) -> None:
        self._socket().send(message)

    # -- public surface -----------------------------------------------------------------------

    def fileno(self) -> int:
        """The socket's descriptor, for a caller's own poll loop."""
        return self._socket().fileno()

    def recv(self, timeout: float | None = None, max_messages: int = 64, spin: float = 0.0) -> list[QueueMessage]:
        """Queued packets, waiting up to `timeout` seconds (None: forever) for the first one, then
        taking whatever else is already there (at most `max_messages`). [] on timeout.

        `spin` > 0 busy-polls for up to that many seconds before sleeping: a packet that comes
        within it is taken without the wake-up of a sleeping process (tens of microseconds on a
        virtual machine, paid by every queued packet otherwise), at the price of a busy CPU."""
        pending = self._pending
        if pending:
            out, self._pending = pending[:max_messages], pending[max_messages:]
            return out
        sock = self._socket()
        poll = self._poller.poll
        waited = spin > 0 and self._spin(poll, spin)
        if not waited and not poll(-1 if timeout is None else max(0, int(timeout * 1000))):
            return []
        got = self._got
        view = self._view
        recv_into = sock.recv_into
        while len(pending) < max_messages:
            try:
                n = recv_into(self._buf, _RECV_BUFFER, socket.MSG_DONTWAIT)
            except BlockingIOError:
                break
            except OSError as exc:
                if exc.errno != errno.ENOBUFS:
                    raise
                # The socket buffer overflowed: the kernel dropped (or, fail-open, accepted)
                # those packets itself; none of them waits for us.
                self.stats["enobufs"] += 1
                continue
            if n <= 0:
                continue
            decode_messages(view, n, got)
            if got.acks or got.problems or got.bad_ids:
                self._absorb(got)
                got.acks.clear()
                got.problems.clear()
                got.bad_ids.clear()
            else:
                self.stats["received"] += len(got.packets)
                pending.extend(got.packets)
                got.packets.clear()
        if len(pending) <= max_messages:
            self._pending = []
            return pending
        out, self._pending = pending[:max_messages], pending[max_messages:]
        return out

    @staticmethod
    def _spin(poll: Callable[[int], list[tuple[int, int]]], seconds: float) -> bool:
        """Poll without sleeping for up to `seconds`; whether a packet came."""
        clock = time.perf_counter
        deadline = clock() + seconds
        while clock() < deadline:
            if poll(0):
                return True
        return False

    def verdict(self, packet_id: int, verdict: int, mark: int | None = None) -> None:
        """Decide one packet: NF_ACCEPT, NF_DROP or NF_REPEAT (re-run the hook: with a mark, the
        rules after the queue see it), optionally setting the packet mark."""
        self._send(encode_verdict(self.queue_num, packet_id, verdict, mark))
        self.stats["verdicts"] += 1

    def verdict_batch(self, max_id: int, verdict: int, mark: int | None = None) -> None:
        """Decide every packet still waiting with an id up to `max_id` (wrapping ids compare as
        the kernel does) in one message."""
        self._send(encode_verdict_batch(self.queue_num, max_id, verdict, mark))
        self.stats["batch_verdicts"] += 1

    def close(self) -> None:
        """Unbind the queue (packets still waiting are then dropped by the kernel, or bypassed
        with --queue-bypass) and close the socket; safe to call twice."""
        sock, self._sock = self._sock, None
        if sock is None:
            return
        try:
            if self._bound:
                self._bound = False
                sock.send(encode_config_cmd(self.queue_num, CMD_UNBIND, socket.AF_UNSPEC, self._next(), ack=False))
        except OSError as exc:
            log.warning("queue %d: unbind failed: %s", self.queue_num, exc)
        finally:
            sock.close()

    @property
    def closed(self) -> bool:
        return self._sock is None

    def __enter__(self) -> NfQueue:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
