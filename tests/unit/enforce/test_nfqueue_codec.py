"""The NFQUEUE netlink codec: golden bytes of config and verdict messages, packet decoding, bad input."""

from __future__ import annotations

import socket
import struct
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from podwall.datapath.io import nfqueue as nq

pytestmark = pytest.mark.skipif(sys.byteorder != "little", reason="golden netlink headers are little-endian")


def _h(text: str) -> bytes:
    return bytes.fromhex("".join(text.split()))


GOLDEN = [
    (
        "bind",
        nq.encode_config_cmd(5, nq.CMD_BIND, socket.AF_UNSPEC, seq=1),
        # nlmsghdr: len 28, type 0x0302 (queue/config), flags request|ack, seq 1, pid 0
        "1c000000 0203 0500 01000000 00000000"
        # nfgenmsg: AF_UNSPEC, v0, queue 5 (big-endian); attr CFG_CMD: command 1, pad, pf 0
        "00 00 0005  0800 0100 01 00 0000",
    ),
    (
        "pf-bind-inet6",
        nq.encode_config_cmd(5, nq.CMD_PF_BIND, socket.AF_INET6, seq=2),
        "1c000000 0203 0500 02000000 00000000 00 00 0005  0800 0100 03 00 000a",
    ),
    (
        "unbind-no-ack",
        nq.encode_config_cmd(300, nq.CMD_UNBIND, seq=3, ack=False),
        "1c000000 0203 0100 03000000 00000000 00 00 012c  0800 0100 02 00 0000",
    ),
    (
        "params",
        nq.encode_config_params(5, nq.COPY_PACKET, 0xFFFF, seq=4),
        # attr CFG_PARAMS: 9 bytes (copy range be32, mode u8) padded to 12
        "20000000 0203 0500 04000000 00000000 00 00 0005  0900 0200 0000ffff 02 000000",
    ),
    (
        "maxlen",
        nq.encode_config_maxlen(5, 4096, seq=5),
        "1c000000 0203 0500 05000000 00000000 00 00 0005  0800 0300 00001000",
    ),
    (
        "flags-gso",
        nq.encode_config_flags(5, nq.F_GSO, nq.F_GSO | nq.F_FAIL_OPEN, seq=6),
        # attr CFG_FLAGS 4, then CFG_MASK 5 (the kernel refuses flags without a mask)
        "24000000 0203 0500 06000000 00000000 00 00 0005  0800 0500 00000004  0800 0400 00000005",
    ),
    (
        "verdict-accept",
        nq.encode_verdict(5, 7, nq.NF_ACCEPT),
        # type 0x0301 (queue/verdict), flags request; attr VERDICT_HDR: verdict 1, id 7
        "20000000 0103 0100 00000000 00000000 00 00 0005  0c00 0200 00000001 00000007",
    ),
    (
        "verdict-repeat-mark",
        nq.encode_verdict(5, 7, nq.NF_REPEAT, mark=0x10),
        "28000000 0103 0100 00000000 00000000 00 00 0005  0c00 0200 00000004 00000007  0800 0300 00000010",
    ),
    (
        "batch-drop",
        nq.encode_verdict_batch(5, 0xFFFFFFFF, nq.NF_DROP),
        # type 0x0303 (queue/verdict batch): every id up to the given one
        "20000000 0303 0100 00000000 00000000 00 00 0005  0c00 0200 00000000 ffffffff",
    ),
]


@pytest.mark.parametrize(("got", "want"), [g[1:] for g in GOLDEN], ids=[g[0] for g in GOLDEN])
def test_encoding_matches_golden_bytes(got: bytes, want: str) -> None:
    """Each config and verdict message encodes to the exact bytes the kernel expects."""
    assert got == _h(want)


@pytest.mark.parametrize(
    ("call", "args"),
    [
        (nq.encode_config_cmd, (70000, nq.CMD_BIND)),
        (nq.encode_config_params, (1, 7, 100)),
        (nq.encode_config_params, (1, nq.COPY_PACKET, 0x10000)),
        (nq.encode_config_maxlen, (1, 0)),
        (nq.encode_verdict, (1, 1, 3)),
        (nq.encode_verdict, (1, -1, nq.NF_ACCEPT)),
        (nq.encode_verdict_batch, (1, 1, nq.NF_ACCEPT, 1 << 32)),
    ],
    ids=["queue-range", "copy-mode", "copy-range", "maxlen-zero", "verdict-queue-target", "negative-id", "mark-range"],
)
def test_encoding_rejects_out_of_range_values(call: object, args: tuple[int, ...]) -> None:
    """Values the wire format cannot carry are refused before anything is sent."""
    with pytest.raises(ValueError):
        call(*args)  # type: ignore[operator]


def _attr(kind: int, value: bytes) -> bytes:
    size = 4 + len(value)
    return struct.pack("=HH", size, kind) + value + b"\0" * (-size & 3)


def _packet_msg(attrs: bytes, queue: int = 5, length: int | None = None) -> bytes:
    body = struct.pack("!BBH", socket.AF_INET, 0, queue) + attrs
    size = 16 + len(body) if length is None else length
    return struct.pack("=IHHII", size, 0x0300, 0, 0, 0) + body


IP = bytes.fromhex("450000140000400040060000") + bytes([10, 0, 0, 1, 10, 0, 0, 2])
FULL = (
    _attr(nq.NFQA_PACKET_HDR, struct.pack("!IHB", 42, 0x0800, 2))
    + _attr(nq.NFQA_MARK, struct.pack("!I", 0x100))
    + _attr(nq.NFQA_TIMESTAMP, struct.pack("!QQ", 1700000000, 250000))
    + _attr(nq.NFQA_IFINDEX_INDEV, struct.pack("!I", 3))
    + _attr(nq.NFQA_IFINDEX_OUTDEV, struct.pack("!I", 4))
    + _attr(nq.NFQA_IFINDEX_PHYSINDEV, struct.pack("!I", 7))
    + _attr(nq.NFQA_IFINDEX_PHYSOUTDEV, struct.pack("!I", 8))
    + _attr(nq.NFQA_CAP_LEN, struct.pack("!I", 1500))
    + _attr(nq.NFQA_SKB_INFO | 0x4000, struct.pack("!I", 2))  # byte-order flag bit must be ignored
    + _attr(nq.NFQA_PAYLOAD, IP)
)


def test_decode_full_packet_message() -> None:
    """Every attribute of a packet message lands in its QueueMessage field."""
    got = nq.decode_messages(_packet_msg(FULL, queue=9))
    assert got.problems == [] and got.bad_ids == [] and got.acks == []
    (m,) = got.packets
    assert (m.packet_id, m.hw_protocol, m.hook, m.queue) == (42, 0x0800, 2, 9)
    assert (m.mark, m.indev, m.outdev, m.physindev, m.physoutdev) == (0x100, 3, 4, 7, 8)
    assert (m.cap_len, m.skb_info, m.payload) == (1500, 2, IP)
    assert m.timestamp == pytest.approx(1700000000.25)


def test_decode_minimal_packet_and_several_messages() -> None:
    """A header-only packet decodes with defaults; two messages in one datagram both come out."""
    hdr = _attr(nq.NFQA_PACKET_HDR, struct.pack("!IHB", 1, 0x86DD, 3))
    data = _packet_msg(hdr) + _packet_msg(hdr.replace(struct.pack("!I", 1), struct.pack("!I", 2), 1))
    got = nq.decode_messages(data)
    assert [(m.packet_id, m.hw_protocol, m.payload, m.cap_len, m.timestamp) for m in got.packets] == [
        (1, 0x86DD, b"", None, None),
        (2, 0x86DD, b"", None, None),
    ]


@pytest.mark.parametrize(("code", "error"), [(0, 0), (-16, 16), (-1, 1)], ids=["ok", "ebusy", "eperm"])
def test_decode_ack_and_error(code: int, error: int) -> None:
    """NLMSG_ERROR messages come out as acks carrying a positive errno (0 = success)."""
    original = nq.encode_config_cmd(5, nq.CMD_BIND, seq=77)
    msg = struct.pack("=IHHII", 16 + 4 + 16, 2, 0, 77, 0) + struct.pack("=i", code) + original[:16]
    got = nq.decode_messages(msg)
    assert got.acks == [nq.Ack(77, error)]


HDR = _attr(nq.NFQA_PACKET_HDR, struct.pack("!IHB", 9, 0x0800, 2))
MALFORMED = [
    ("short-netlink-header", b"\x10\x00\x00", None),
    ("length-too-small", struct.pack("=IHHII", 8, 0x0300, 0, 0, 0), None),
    ("length-overruns", _packet_msg(HDR, length=400), None),
    ("no-packet-header", _packet_msg(_attr(nq.NFQA_PAYLOAD, IP)), None),
    ("short-packet-header", _packet_msg(_attr(nq.NFQA_PACKET_HDR, b"\x00\x00\x00\x09\x08")), None),
    ("attr-overruns", _packet_msg(HDR + struct.pack("=HH", 200, nq.NFQA_PAYLOAD) + IP), 9),
    ("attr-length-below-header", _packet_msg(HDR + struct.pack("=HH", 2, nq.NFQA_PAYLOAD) + IP), 9),
    ("short-mark", _packet_msg(HDR + _attr(nq.NFQA_MARK, b"\x01\x02")), 9),
    ("nfgen-missing", struct.pack("=IHHII", 18, 0x0300, 0, 0, 0) + b"\x02\x00", None),
    ("error-without-code", struct.pack("=IHHII", 16, 2, 0, 0, 0), None),
    ("unknown-type", struct.pack("=IHHII", 20, 0x0999, 0, 0, 0) + b"\0" * 4, None),
]


@pytest.mark.parametrize(("data", "bad_id"), [m[1:] for m in MALFORMED], ids=[m[0] for m in MALFORMED])
def test_malformed_messages_are_reported_not_raised(data: bytes, bad_id: int | None) -> None:
    """Damaged messages give a problem (and the packet id to drop, when readable), never an exception."""
    got = nq.decode_messages(data)
    assert got.packets == []
    assert got.problems, "a problem must be reported"
    assert got.bad_ids == ([] if bad_id is None else [(5, bad_id)])


def test_malformed_message_does_not_hide_the_next_one() -> None:
    """A bad packet message is skipped by its length; the good one after it still decodes."""
    bad = _packet_msg(HDR + _attr(nq.NFQA_MARK, b"\x01"))
    good = _packet_msg(FULL)
    got = nq.decode_messages(bad + good)
    assert [m.packet_id for m in got.packets] == [42]
    assert got.bad_ids == [(5, 9)]


def test_decode_respects_the_size_argument() -> None:
    """Only the first `size` bytes of a reused receive buffer are read."""
    data = bytearray(_packet_msg(FULL)) + bytearray(b"\xff" * 64)
    got = nq.decode_messages(memoryview(data), len(data) - 64)
    assert [m.packet_id for m in got.packets] == [42] and got.problems == []


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_decode_never_raises_on_random_bytes(data: bytes) -> None:
    """Any byte string decodes to packets, acks and problems without raising."""
    got = nq.decode_messages(data)
    assert isinstance(got.problems, list)


@settings(max_examples=200, deadline=None)
@given(st.integers(0, len(_packet_msg(FULL)) - 1), st.integers(0, 255))
def test_decode_never_raises_on_corrupted_packets(pos: int, value: int) -> None:
    """A real packet message with any one byte changed still decodes without raising."""
    data = bytearray(_packet_msg(FULL))
    data[pos] = value
    got = nq.decode_messages(bytes(data))
    assert all(len(m.payload) <= len(data) for m in got.packets)
    assert all(isinstance(problem, str) and problem for problem in got.problems)
