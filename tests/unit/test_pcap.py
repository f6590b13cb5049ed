"""Tests for the capture reader and writers (classic pcap and pcapng), with scapy as the oracle."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.l2 import CookedLinux, Ether
from scapy.utils import PcapNgWriter as ScapyPcapNgWriter
from scapy.utils import PcapWriter as ScapyPcapWriter
from scapy.utils import rdpcap

from podwall.core.errors import CaptureError, Problem
from podwall.datapath.io.pcap import MAX_CAPLEN, CaptureReader, Frame
from podwall.datapath.io.pcapwriter import PcapngWriter, PcapWriter

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _frames_bytes() -> list[bytes]:
    """A few distinct Ethernet frames of different sizes."""
    return [
        bytes(
            Ether(dst="02:00:00:00:00:02")
            / IP(src="10.0.0.1", dst="10.0.0.2")
            / TCP(sport=1000 + i, dport=80)
            / (b"x" * i * 7)
        )
        for i in range(5)
    ]


TIMES = [1_700_000_000.25, 1_700_000_000.5, 1_700_000_001.000123, 1_700_000_002.999999, 1_700_000_003.0]


def _read(path: Path) -> tuple[list[Frame], list[Problem]]:
    problems: list[Problem] = []
    with CaptureReader(path, problems.append) as reader:
        frames = list(reader)
        assert reader.bytes_read <= reader.bytes_total
    return frames, problems


def _write_scapy_pcap(path: Path, *, nano: bool, endianness: str, linktype: int = 1) -> list[bytes]:
    frames = _frames_bytes()
    writer = ScapyPcapWriter(str(path), linktype=linktype, nano=nano, endianness=endianness)
    writer.write_header(None)
    for ts, data in zip(TIMES, frames, strict=True):
        sec = int(ts)
        frac = round((ts - sec) * (1e9 if nano else 1e6))
        writer.write_packet(data, sec=sec, usec=frac)
    writer.close()
    return frames


@pytest.mark.parametrize(
    ("nano", "endianness"),
    [(False, "<"), (False, ">"), (True, "<"), (True, ">")],
    ids=["us-le", "us-be", "ns-le", "ns-be"],
)
def test_classic_pcap_variants(tmp_path: Path, nano: bool, endianness: str) -> None:
    """Classic pcap in both byte orders and both timestamp resolutions yields scapy's frames and times."""
    path = tmp_path / "c.pcap"
    expected = _write_scapy_pcap(path, nano=nano, endianness=endianness)
    frames, problems = _read(path)
    assert problems == []
    assert [f.data for f in frames] == expected
    assert [f.number for f in frames] == list(range(1, len(expected) + 1))
    assert all(f.linktype == 1 for f in frames)
    assert [f.orig_len for f in frames] == [len(d) for d in expected]
    for frame, ts in zip(frames, TIMES, strict=True):
        assert frame.ts == pytest.approx(ts, abs=2e-6)


def test_classic_pcap_bytes_read_reaches_size(tmp_path: Path) -> None:
    """After a full read, bytes_read equals the file size (progress bar reaches 100 %)."""
    path = tmp_path / "c.pcap"
    _write_scapy_pcap(path, nano=False, endianness="<")
    with CaptureReader(path) as reader:
        assert reader.bytes_total == path.stat().st_size
        assert reader.bytes_read < reader.bytes_total
        list(reader)
        assert reader.bytes_read == reader.bytes_total


def test_linktype_fcs_bits_are_masked(tmp_path: Path) -> None:
    """FCS length bits in the upper part of the link-type field do not change the link type."""
    path = tmp_path / "fcs.pcap"
    header = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1 | (4 << 28) | (1 << 27))
    data = _frames_bytes()[0]
    path.write_bytes(header + struct.pack("<IIII", 1, 2, len(data), len(data)) + data)
    frames, problems = _read(path)
    assert problems == []
    assert [f.linktype for f in frames] == [1]


def test_kuznetsov_pcap(tmp_path: Path) -> None:
    """The Linux 'modified pcap' magic with 24-byte record headers is read too."""
    data = _frames_bytes()[1]
    header = struct.pack("<IHHiIII", 0xA1B2CD34, 2, 4, 0, 0, 65535, 1)
    record = struct.pack("<IIII", 5, 500000, len(data), len(data)) + bytes(8) + data
    path = tmp_path / "k.pcap"
    path.write_bytes(header + record + record)
    frames, problems = _read(path)
    assert problems == []
    assert [f.data for f in frames] == [data, data]
    assert frames[0].ts == pytest.approx(5.5)


@pytest.mark.parametrize(
    ("nanosecond", "byteorder"),
    [(False, "<"), (True, ">")],
    ids=["us-le", "ns-be"],
)
def test_pcap_writer_round_trip_via_scapy(tmp_path: Path, nanosecond: bool, byteorder: str) -> None:
    """PcapWriter output is read back identically by scapy and by our reader."""
    path = tmp_path / "w.pcap"
    frames = _frames_bytes()
    with PcapWriter(path, 1, nanosecond=nanosecond, byteorder=byteorder) as writer:  # type: ignore[arg-type]
        for ts, data in zip(TIMES, frames, strict=True):
            writer.write(ts, data)
    oracle = rdpcap(str(path))
    assert [bytes(p) for p in oracle] == frames
    assert [float(p.time) for p in oracle] == pytest.approx(TIMES, abs=2e-6)
    ours, problems = _read(path)
    assert problems == []
    assert [f.data for f in ours] == frames
    assert [f.ts for f in ours] == pytest.approx(TIMES, abs=2e-6)


def test_pcap_writer_snaplen_keeps_wire_length(tmp_path: Path) -> None:
    """A frame longer than the snap length is cut, and its wire length is kept."""
    path = tmp_path / "s.pcap"
    data = _frames_bytes()[4]
    with PcapWriter(path, snaplen=40) as writer:
        writer.write(1.0, data)
    frames, _ = _read(path)
    assert frames[0].data == data[:40]
    assert frames[0].orig_len == len(data)


def test_pcapng_writer_round_trip_via_scapy(tmp_path: Path) -> None:
    """PcapngWriter output (nanosecond resolution, second interface) reads back in scapy and our reader."""
    path = tmp_path / "w.pcapng"
    frames = _frames_bytes()
    sll = bytes(CookedLinux(proto=0x0800) / IP(dst="10.1.1.1") / UDP(dport=53))
    with PcapngWriter(path, 1, tsresol=9, if_name="eth0") as writer:
        second = writer.add_interface(113, if_name="any")
        for ts, data in zip(TIMES, frames, strict=True):
            writer.write(ts, data)
        writer.write(TIMES[-1] + 1, sll, interface=second)
    oracle = rdpcap(str(path))
    assert [bytes(p) for p in oracle] == [*frames, sll]
    ours, problems = _read(path)
    assert problems == []
    assert [f.data for f in ours] == [*frames, sll]
    assert [f.linktype for f in ours] == [1] * len(frames) + [113]
    assert [f.ts for f in ours] == pytest.approx([*TIMES, TIMES[-1] + 1], abs=1e-6)


def test_pcapng_two_interfaces_from_scapy(tmp_path: Path) -> None:
    """A scapy pcapng with an Ethernet and a Linux-cooked interface gives each frame its own link type."""
    path = tmp_path / "two.pcapng"
    eth = Ether(dst="02:00:00:00:00:02") / IP(dst="10.0.0.9") / TCP(dport=443)
    eth.sniffed_on = "eth0"
    eth.time = 100.5
    sll = CookedLinux(proto=0x0800) / IP(dst="10.0.0.8") / UDP(dport=53)
    sll.sniffed_on = "any"
    sll.time = 101.25
    writer = ScapyPcapNgWriter(str(path))
    writer.write(eth)
    writer.write(sll)
    writer.write(eth)
    writer.close()
    frames, problems = _read(path)
    assert problems == []
    assert [f.linktype for f in frames] == [1, 113, 1]
    assert [f.data for f in frames] == [bytes(eth), bytes(sll), bytes(eth)]
    assert [f.ts for f in frames] == pytest.approx([100.5, 101.25, 100.5])


# -- hand-built pcapng: options and block kinds scapy does not write ---------------------


def _block(order: str, btype: int, body: bytes) -> bytes:
    body += bytes(-len(body) % 4)
    total = struct.pack(order + "I", len(body) + 12)
    return struct.pack(order + "I", btype) + total + body + total


def _shb(order: str) -> bytes:
    return _block(order, 0x0A0D0D0A, struct.pack(order + "IHHq", 0x1A2B3C4D, 1, 0, -1))


def _idb(order: str, linktype: int, tsresol: int | None = None, snaplen: int = 0) -> bytes:
    body = struct.pack(order + "HHI", linktype, 0, snaplen)
    if tsresol is not None:
        body += struct.pack(order + "HH", 9, 1) + bytes((tsresol, 0, 0, 0)) + struct.pack(order + "HH", 0, 0)
    return _block(order, 1, body)


def _epb(order: str, iface: int, stamp: int, data: bytes, orig: int | None = None) -> bytes:
    head = struct.pack(order + "IIIII", iface, stamp >> 32, stamp & 0xFFFFFFFF, len(data), orig or len(data))
    return _block(order, 6, head + data)


def _pb(order: str, iface: int, stamp: int, data: bytes) -> bytes:
    head = struct.pack(order + "HHIIII", iface, 0, stamp >> 32, stamp & 0xFFFFFFFF, len(data), len(data))
    return _block(order, 2, head + data)


def _spb(order: str, data: bytes, orig: int | None = None) -> bytes:
    return _block(order, 3, struct.pack(order + "I", orig or len(data)) + data)


RAW4 = bytes(IP(src="1.1.1.1", dst="2.2.2.2") / UDP(sport=5, dport=6))
ETH = bytes(Ether(dst="02:00:00:00:00:02") / IP(src="3.3.3.3", dst="4.4.4.4") / TCP())


@pytest.mark.parametrize("order", ["<", ">"], ids=["le", "be"])
def test_pcapng_interfaces_tsresol_and_block_kinds(tmp_path: Path, order: str) -> None:
    """Per-interface link type and if_tsresol (decimal, power of 2, default) apply; EPB/PB/SPB are read."""
    blob = (
        _shb(order)
        + _idb(order, 1)  # default 10^-6
        + _idb(order, 101, tsresol=9)  # nanoseconds
        + _idb(order, 228, tsresol=0x80 | 10)  # 2^-10 seconds
        + _block(order, 0x0BAD, b"ignored custom block")
        + _epb(order, 0, 1_500_000, ETH)
        + _epb(order, 1, 2_250_000_000, RAW4)
        + _epb(order, 2, 3 * 1024 + 512, RAW4)
        + _pb(order, 0, 4_000_001, ETH)
        + _block(order, 5, b"\x00" * 16)  # interface statistics, skipped
        + _spb(order, ETH)
    )
    path = tmp_path / "hand.pcapng"
    path.write_bytes(blob)
    frames, problems = _read(path)
    assert problems == []
    assert [(f.number, f.linktype) for f in frames] == [(1, 1), (2, 101), (3, 228), (4, 1), (5, 1)]
    assert [f.ts for f in frames] == pytest.approx([1.5, 2.25, 3.5, 4.000001, 4.000001])
    assert [f.data for f in frames] == [ETH, RAW4, RAW4, ETH, ETH]


def test_pcapng_multiple_sections_switch_byte_order(tmp_path: Path) -> None:
    """A second section with the other byte order resets interfaces and is read in its own order."""
    blob = _shb("<") + _idb("<", 1) + _epb("<", 0, 1_000_000, ETH)
    blob += _shb(">") + _idb(">", 101) + _epb(">", 0, 2_000_000, RAW4)
    path = tmp_path / "multi.pcapng"
    path.write_bytes(blob)
    frames, problems = _read(path)
    assert problems == []
    assert [(f.linktype, f.data, f.ts) for f in frames] == [(1, ETH, 1.0), (101, RAW4, 2.0)]


def test_pcapng_simple_packet_block_uses_snaplen(tmp_path: Path) -> None:
    """A simple packet block is cut to the interface snap length and keeps its wire length."""
    blob = _shb("<") + _idb("<", 1, snaplen=20) + _spb("<", ETH[:20], orig=len(ETH))
    path = tmp_path / "spb.pcapng"
    path.write_bytes(blob)
    frames, problems = _read(path)
    assert problems == []
    assert frames[0].data == ETH[:20]
    assert frames[0].orig_len == len(ETH)


def test_pcapng_unknown_interface_is_a_problem(tmp_path: Path) -> None:
    """A packet referring to an undescribed interface is reported and skipped; later frames still come."""
    blob = _shb("<") + _idb("<", 1) + _epb("<", 7, 0, ETH) + _epb("<", 0, 0, ETH)
    path = tmp_path / "iface.pcapng"
    path.write_bytes(blob)
    frames, problems = _read(path)
    assert [f.number for f in frames] == [2]
    assert len(problems) == 1
    assert "interface 7" in problems[0].message
    assert problems[0].location.obj == "frame 1"


# -- damaged files --------------------------------------------------------------------------


def _valid_pcap(tmp_path: Path) -> tuple[Path, list[bytes]]:
    path = tmp_path / "ok.pcap"
    frames = _write_scapy_pcap(path, nano=False, endianness="<")
    return path, frames


def test_truncated_pcap_reports_and_keeps_earlier_frames(tmp_path: Path) -> None:
    """A cut last record yields every earlier frame plus one Problem naming the frame and byte offset."""
    path, frames = _valid_pcap(tmp_path)
    blob = path.read_bytes()
    cut = tmp_path / "cut.pcap"
    cut.write_bytes(blob[:-10])
    got, problems = _read(cut)
    assert [f.data for f in got] == frames[:-1]
    assert len(problems) == 1
    last_record = len(blob) - (16 + len(frames[-1]))
    assert problems[0].location.offset == last_record
    assert problems[0].location.obj == f"frame {len(frames)}"
    assert problems[0].location.file == str(cut)
    assert "truncated" in problems[0].message


def test_truncated_pcapng_reports_and_keeps_earlier_frames(tmp_path: Path) -> None:
    """A cut last pcapng block yields the earlier frames and one located Problem."""
    blob = _shb("<") + _idb("<", 1) + _epb("<", 0, 1, ETH) + _epb("<", 0, 2, ETH)
    path = tmp_path / "cut.pcapng"
    path.write_bytes(blob[:-6])
    frames, problems = _read(path)
    assert len(frames) == 1
    assert len(problems) == 1
    assert problems[0].location.obj == "frame 2"
    assert problems[0].location.offset == len(blob) - len(_epb("<", 0, 2, ETH))


@pytest.mark.parametrize(
    ("tail", "needle"),
    [
        (struct.pack("<II", 6, 13) + bytes(5), "bad block length"),
        (struct.pack("<II", 6, 8), "bad block length"),
        (struct.pack("<II", 6, 16) + struct.pack("<II", 0, 20), "disagree"),
        (struct.pack("<II", 6, 0x7FFFFFF0), "sanity bound"),
    ],
    ids=["not-multiple-of-4", "below-minimum", "trailer-mismatch", "huge"],
)
def test_pcapng_bad_block_length(tmp_path: Path, tail: bytes, needle: str) -> None:
    """A block whose length is impossible or inconsistent ends reading with a Problem, frames kept."""
    path = tmp_path / "bad.pcapng"
    path.write_bytes(_shb("<") + _idb("<", 1) + _epb("<", 0, 1, ETH) + tail)
    frames, problems = _read(path)
    assert len(frames) == 1
    assert len(problems) == 1
    assert needle in problems[0].message


def test_huge_caplen_is_a_problem_not_an_allocation(tmp_path: Path) -> None:
    """A record claiming more than the sanity bound is reported, not read into memory."""
    path, frames = _valid_pcap(tmp_path)
    with path.open("ab") as f:
        f.write(struct.pack("<IIII", 1, 1, MAX_CAPLEN + 1, MAX_CAPLEN + 1) + b"abc")
    got, problems = _read(path)
    assert len(got) == len(frames)
    assert len(problems) == 1
    assert "sanity bound" in problems[0].message


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        (b"", "empty file"),
        (b"GIF89a garbage that is not a capture", "magic 0x47494638"),
        (b"\xd4\xc3\xb2\xa1\x02\x00", "truncated pcap file header"),
        (b"\x0a\x0d\x0d\x0a\x1c\x00\x00\x00\x11\x22\x33\x44", "byte-order magic"),
    ],
    ids=["empty", "gif", "short-header", "pcapng-bad-bom"],
)
def test_not_a_capture_raises(tmp_path: Path, content: bytes, needle: str) -> None:
    """Files that are not captures raise CaptureError naming the file and what was wrong."""
    path = tmp_path / "x.bin"
    path.write_bytes(content)
    with pytest.raises(CaptureError) as info:
        CaptureReader(path)
    assert str(path) in str(info.value)
    assert needle in str(info.value)


def test_missing_file_raises(tmp_path: Path) -> None:
    """A path that cannot be opened raises CaptureError, not OSError."""
    with pytest.raises(CaptureError, match="cannot open"):
        CaptureReader(tmp_path / "nope.pcap")


# -- fuzz -------------------------------------------------------------------------------------


def _read_all_or_capture_error(path: Path) -> tuple[list[Frame], list[Problem]] | None:
    try:
        return _read(path)
    except CaptureError:
        return None


@FUZZ
@given(
    prefix=st.sampled_from([b"", b"\xd4\xc3\xb2\xa1", b"\xa1\xb2\x3c\x4d", b"\x0a\x0d\x0d\x0a"]),
    body=st.binary(max_size=600),
)
def test_fuzz_random_bytes(tmp_path: Path, prefix: bytes, body: bytes) -> None:
    """Any byte string is either rejected with CaptureError or iterated cleanly with problems."""
    path = tmp_path / "fuzz.bin"
    path.write_bytes(prefix + body)
    _read_all_or_capture_error(path)


def _fuzz_sources(tmp_path: Path) -> dict[str, int]:
    """Write a valid pcap and pcapng once; map each name to where its first packet record starts."""
    if not (tmp_path / "ok.pcapng").exists():
        _valid_pcap(tmp_path)
        head = _shb("<") + _idb("<", 1, tsresol=9)
        blob = head + _epb("<", 0, 5, ETH) + _spb("<", ETH) + _pb("<", 0, 9, ETH)
        (tmp_path / "ok.pcapng").write_bytes(blob)
    return {"ok.pcap": 24, "ok.pcapng": len(_shb("<") + _idb("<", 1, tsresol=9))}


@FUZZ
@given(data=st.data())
def test_fuzz_truncations_and_flips_of_valid_files(tmp_path: Path, data: st.DataObject) -> None:
    """Cut or corrupted valid files give CaptureError or a prefix of their frames plus problems."""
    sources = _fuzz_sources(tmp_path)
    name = data.draw(st.sampled_from(sorted(sources)))
    source = tmp_path / name
    blob = bytearray(source.read_bytes())
    original = _read(source)[0]
    cut = data.draw(st.integers(0, len(blob)))
    flips = data.draw(st.lists(st.tuples(st.integers(0, len(blob) - 1), st.integers(0, 255)), max_size=3))
    for pos, value in flips:
        blob[pos] = value
    path = tmp_path / "mutant.bin"
    path.write_bytes(bytes(blob[:cut]))
    result = _read_all_or_capture_error(path)
    if result is not None and not flips:
        frames, problems = result
        assert [f.data for f in frames] == [f.data for f in original[: len(frames)]]
        clean_ends = _record_ends(source) | {sources[name]}
        if name.endswith(".pcapng"):
            clean_ends.add(len(_shb("<")))  # between the section header and the interface block
        if len(frames) < len(original):
            # Stopping early is silent only when the cut falls exactly between records.
            assert bool(problems) != (cut in clean_ends)


def _record_ends(path: Path) -> set[int]:
    """Byte offsets at which each packet record of a valid file ends."""
    ends: set[int] = set()
    with CaptureReader(path) as reader:
        for _ in reader:
            ends.add(reader.bytes_read)
    return ends
