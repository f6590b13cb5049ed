"""Benchmark input shared by the bench scripts: the corpus captures concatenated into one Ethernet pcap.

Frames of other link types get an Ethernet header, and each file's timestamps are shifted to
follow the previous one with a gap longer than the idle timeout, so flows do not mix (steps
inside a file are capped at 5 minutes: some captures jump by years). The concatenation can be
repeated so that fixed start-up costs do not hide the per-packet cost.
"""

from __future__ import annotations

import os
import struct
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import time  # noqa: E402

from podwall.analysis.runner import read_flows  # noqa: E402
from podwall.datapath import decode  # noqa: E402
from podwall.datapath.io.pcap import CaptureReader, Frame  # noqa: E402
from podwall.datapath.io.pcapwriter import PcapWriter  # noqa: E402
from podwall.inventory.resolver import Resolver  # noqa: E402

DEFAULT_CORPUS = Path(os.environ.get("PODWALL_CORPUS", REPO.parent / "shared" / "corpus"))

GAP = 1000.0  # seconds between concatenated files: longer than any idle timeout
MAX_STEP = 300.0  # largest time step kept between two frames of one file


def captures(corpus: Path) -> list[Path]:
    found: list[Path] = []
    for sub in ("dpi/ndpi", "dpi/grpc"):
        folder = corpus / sub
        if folder.is_dir():
            found += sorted(p for p in folder.iterdir() if p.suffix in (".pcap", ".pcapng", ".cap"))
    return found


def as_ethernet(frame: Frame) -> bytes | None:
    """The frame as Ethernet: unchanged if it is Ethernet, else its IP packet behind a new header."""
    if frame.linktype == decode.LINKTYPE_ETHERNET:
        return frame.data
    offset = {
        decode.LINKTYPE_NULL: 4,
        decode.LINKTYPE_LOOP: 4,
        decode.LINKTYPE_LINUX_SLL: 16,
        decode.LINKTYPE_LINUX_SLL2: 20,
        decode.LINKTYPE_RAW: 0,
        decode.LINKTYPE_IPV4: 0,
        decode.LINKTYPE_IPV6: 0,
    }.get(frame.linktype)
    if offset is None or len(frame.data) <= offset:
        return None
    ip = frame.data[offset:]
    ethertype = {4: 0x0800, 6: 0x86DD}.get(ip[0] >> 4)
    if ethertype is None:
        return None
    return b"\x02\x00\x00\x00\x00\x02\x02\x00\x00\x00\x00\x01" + struct.pack("!H", ethertype) + ip


def concatenate(files: list[Path], repeat: int, out: Path) -> int:
    """Write the files' frames, `repeat` times, into one Ethernet pcap; returns the frame count."""
    count = 0
    clock = 1_700_000_000.0
    with PcapWriter(out, linktype=decode.LINKTYPE_ETHERNET, nanosecond=True) as writer:
        for _ in range(repeat):
            for path in files:
                with CaptureReader(path, on_problem=lambda p: None) as reader:
                    prev: float | None = None
                    for frame in reader:
                        data = as_ethernet(frame)
                        if data is None:
                            continue
                        # Some corpus captures jump years or go backwards in time: keep the
                        # order and gaps up to MAX_STEP, so the output stays monotonic.
                        step = 0.0 if prev is None else max(0.0, min(frame.ts - prev, MAX_STEP))
                        prev = frame.ts
                        clock += step
                        writer.write(clock, data)
                        count += 1
                clock += GAP
    return count


def run_podwall(path: Path, dpi: bool = True, depth: str = "full") -> tuple[int, int, float]:
    """(packets in flows, flows, seconds) for podwall's analysis of the file, in process.

    `depth` is the DPI depth: "detect" stops parsing a flow once its application and
    identifying fields are known (as nDPI does), "full" parses every message.
    """
    start = time.perf_counter()
    packets = flows = 0
    for nf in read_flows([path], Resolver(None), on_problem=lambda p: None, dpi=dpi, depth=depth):
        flows += 1
        packets += nf.flow.packets_total
    return packets, flows, time.perf_counter() - start


def run_nfstream(path: Path) -> tuple[int, int, float]:
    from nfstream import NFStreamer

    start = time.perf_counter()
    packets = flows = 0
    streamer = NFStreamer(source=str(path), statistical_analysis=False, splt_analysis=0, n_dissections=20)
    for flow in streamer:
        flows += 1
        packets += flow.bidirectional_packets
    return packets, flows, time.perf_counter() - start
