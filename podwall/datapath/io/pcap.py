"""Capture file reader for classic pcap and pcapng, written to fail closed.

Every length read from the file is checked against what is left and against a sanity bound
before anything is allocated. A damaged record ends the reading with a located `Problem`
(earlier frames are still delivered); a file that is not a capture at all, or that cannot be
read, raises `CaptureError`. No third-party packet library is used at run time.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import BinaryIO

from podwall.core.errors import CaptureError, Location, Problem

__all__ = [
    "MAX_BLOCK_LEN",
    "MAX_CAPLEN",
    "CaptureReader",
    "Frame",
]

# Larger than any real link MTU or GRO super-frame (Wireshark's own ceiling); a bigger record
# length means the file is corrupt, and believing it would cost memory.
MAX_CAPLEN = 256 * 1024
# Non-packet pcapng blocks (name resolution, decryption secrets, custom) may be larger than
# a packet, but not without bound.
MAX_BLOCK_LEN = 16 * 1024 * 1024

_BUFFER = 1 << 20

_PCAP_US = 0xA1B2C3D4
_PCAP_NS = 0xA1B23C4D
_PCAP_KUZNETSOV = 0xA1B2CD34  # Linux "modified" pcap: 8 extra bytes per record header
_PCAPNG_SHB = 0x0A0D0D0A
_PCAPNG_BOM = 0x1A2B3C4D

_BT_IDB = 1
_BT_PB = 2  # obsolete Packet Block
_BT_SPB = 3
_BT_EPB = 6

_OPT_END = 0
_OPT_IF_TSRESOL = 9
_OPT_IF_TSOFFSET = 14

_LINKTYPE_MASK = 0xFFFF  # the upper bits carry FCS length/flags, not the link type


@dataclass(slots=True)
class Frame:
    """One captured link-layer frame: 1-based number, timestamp (s), link type, bytes, wire length."""

    number: int
    ts: float
    linktype: int
    data: bytes
    orig_len: int


@dataclass(slots=True)
class _Interface:
    """What a pcapng Interface Description Block says about the frames that reference it."""

    linktype: int
    snaplen: int
    divisor: int  # timestamp units per second
    offset: int  # if_tsoffset, seconds added to every timestamp


class CaptureReader:
    """Iterates the frames of a pcap or pcapng file; problems go to `on_problem`, fatal faults raise.

    The file is opened and its header checked in the constructor, so a wrong file fails early
    with `CaptureError`. Iterating yields `Frame`s; iterating again continues where it stopped.
    """

    def __init__(self, path: str | Path, on_problem: Callable[[Problem], None] | None = None) -> None:
        self._name = str(path)
        self._on_problem = on_problem
        self._offset = 0
        self._last_ts = 0.0
        self.problems: list[Problem] = []
        try:
            self._file: BinaryIO = open(path, "rb", buffering=_BUFFER)  # noqa: SIM115 - closed by close()
        except OSError as exc:
            raise CaptureError(f"{self._name}: cannot open capture: {exc.strerror or exc}") from exc
        try:
            self._bytes_total = Path(path).stat().st_size
            self._frames = self._start()
        except BaseException:
            self._file.close()
            raise

    # -- public surface -------------------------------------------------------------------

    @property
    def bytes_total(self) -> int:
        """Size of the file in bytes."""
        return self._bytes_total

    @property
    def bytes_read(self) -> int:
        """Bytes consumed so far (for a progress bar)."""
        return self._offset

    @property
    def name(self) -> str:
        """The file name as given, used in every message."""
        return self._name

    def __iter__(self) -> Iterator[Frame]:
        return self._frames

    def close(self) -> None:
        """Close the file; iteration ends."""
        self._file.close()

    def __enter__(self) -> CaptureReader:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- low-level reading ----------------------------------------------------------------

    def _read(self, n: int) -> bytes:
        """Read up to n bytes (fewer only at end of file), turning I/O failure into CaptureError."""
        try:
            data = self._file.read(n)
        except (OSError, ValueError) as exc:
            raise self._read_failed(self._offset, exc) from exc
        self._offset += len(data)
        return data

    def _read_failed(self, offset: int, exc: Exception) -> CaptureError:
        return CaptureError(f"{self._name}: read failed at offset {offset}: {exc}")

    def _problem(self, offset: int, number: int, message: str) -> None:
        problem = Problem(Location(file=self._name, obj=f"frame {number}", offset=offset), message)
        self.problems.append(problem)
        if self._on_problem is not None:
            self._on_problem(problem)

    def _not_capture(self, magic: bytes) -> CaptureError:
        shown = f"magic 0x{magic.hex()}" if magic else "empty file"
        return CaptureError(f"{self._name}: not a pcap or pcapng file ({shown})")

    def _start(self) -> Iterator[Frame]:
        magic = self._read(4)
        if len(magic) < 4:
            raise self._not_capture(magic)
        le = int.from_bytes(magic, "little")
        be = int.from_bytes(magic, "big")
        if le == _PCAPNG_SHB:
            order = self._read_shb(self._read(8), 0, 1, fatal=True)
            assert order is not None  # fatal=True raises instead
            return self._pcapng(order)
        for value, order in ((le, "<"), (be, ">")):
            if value in (_PCAP_US, _PCAP_NS, _PCAP_KUZNETSOV):
                return self._pcap(value, order)
        raise self._not_capture(magic)

    # -- classic pcap ---------------------------------------------------------------------

    def _pcap(self, magic: int, order: str) -> Iterator[Frame]:
        header = self._read(20)
        if len(header) < 20:
            raise CaptureError(f"{self._name}: truncated pcap file header ({4 + len(header)} of 24 bytes)")
        major, _minor, _zone, _sigfigs, _snaplen, linktype = struct.unpack(order + "HHiIII", header)
        if major != 2:
            raise CaptureError(f"{self._name}: unsupported pcap version {major} (expected 2)")
        return self._pcap_records(
            order, 1e9 if magic == _PCAP_NS else 1e6, linktype & _LINKTYPE_MASK, magic == _PCAP_KUZNETSOV
        )

    def _pcap_records(self, order: str, divisor: float, linktype: int, extended: bool) -> Iterator[Frame]:
        head_len = 24 if extended else 16
        unpack = struct.Struct(order + "IIII").unpack_from
        # This runs once per frame: the file is read directly, not through `_read` (the
        # try blocks cost nothing until an I/O failure, which becomes CaptureError as there).
        read = self._file.read
        number = 0
        start = self._offset
        while True:
            try:
                raw = read(head_len)
            except (OSError, ValueError) as exc:
                raise self._read_failed(start, exc) from exc
            if len(raw) < head_len:
                self._offset = start + len(raw)
                if raw:
                    self._problem(start, number + 1, f"truncated record header ({len(raw)} of {head_len} bytes)")
                return
            number += 1
            sec, frac, caplen, orig_len = unpack(raw)
            if caplen > MAX_CAPLEN:
                self._offset = start + head_len
                self._problem(
                    start,
                    number,
                    f"captured length {caplen} exceeds the {MAX_CAPLEN}-byte sanity bound; file is corrupt",
                )
                return
            try:
                data = read(caplen)
            except (OSError, ValueError) as exc:
                raise self._read_failed(start + head_len, exc) from exc
            if len(data) < caplen:
                self._offset = start + head_len + len(data)
                self._problem(start, number, f"truncated record: header says {caplen} bytes, only {len(data)} left")
                return
            start += head_len + caplen
            self._offset = start
            yield Frame(number, sec + frac / divisor, linktype, data, orig_len)

    # -- pcapng ---------------------------------------------------------------------------

    def _read_shb(self, raw: bytes, start: int, number: int, fatal: bool) -> str | None:
        """Finish reading a Section Header Block from its length and byte-order fields (`raw`).

        Returns the section's byte order; a fault raises (first section) or is reported (later).
        """

        def fail(message: str) -> None:
            if fatal:
                raise CaptureError(f"{self._name}: {message}")
            self._problem(start, number, message)

        if len(raw) < 8:
            fail(f"truncated pcapng section header ({4 + len(raw)} of 12 bytes)")
            return None
        bom = raw[4:8]
        if int.from_bytes(bom, "little") == _PCAPNG_BOM:
            order = "<"
        elif int.from_bytes(bom, "big") == _PCAPNG_BOM:
            order = ">"
        else:
            fail(f"not a pcapng file (byte-order magic 0x{bom.hex()})")
            return None
        (total,) = struct.unpack_from(order + "I", raw)
        if total < 28 or total % 4 or total > MAX_BLOCK_LEN:
            fail(f"bad section header block length {total}")
            return None
        rest = self._read(total - 12)
        if len(rest) < total - 12:
            fail(f"truncated section header block ({12 + len(rest)} of {total} bytes)")
            return None
        (trailer,) = struct.unpack_from(order + "I", rest, len(rest) - 4)
        if trailer != total:
            fail(f"section header block lengths disagree ({total} vs {trailer})")
            return None
        (major,) = struct.unpack_from(order + "H", rest, 0)
        if major != 1:
            fail(f"unsupported pcapng version {major} (expected 1)")
            return None
        return order

    def _pcapng(self, order: str) -> Iterator[Frame]:
        interfaces: list[_Interface] = []
        number = 0
        read = self._read
        while True:
            start = self._offset
            raw = read(8)
            if len(raw) < 8:
                if raw:
                    self._problem(start, number + 1, f"truncated block header ({len(raw)} of 8 bytes)")
                return
            if raw[:4] == b"\x0a\x0d\x0d\x0a":
                # A new section: its own byte order, its own interfaces.
                section = self._read_shb(raw[4:] + read(4), start, number + 1, fatal=False)
                if section is None:
                    return
                order = section
                interfaces = []
                continue
            btype, total = struct.unpack(order + "II", raw)
            if total < 12 or total % 4:
                self._problem(start, number + 1, f"bad block length {total} (block type {btype})")
                return
            if total > MAX_BLOCK_LEN:
                self._problem(
                    start,
                    number + 1,
                    f"block length {total} exceeds the {MAX_BLOCK_LEN}-byte sanity bound (block type {btype})",
                )
                return
            body = read(total - 8)
            if len(body) < total - 8:
                self._problem(
                    start,
                    number + 1,
                    f"truncated block (type {btype}): length says {total} bytes, only {8 + len(body)} left",
                )
                return
            (trailer,) = struct.unpack_from(order + "I", body, len(body) - 4)
            if trailer != total:
                self._problem(start, number + 1, f"block lengths disagree ({total} vs {trailer})")
                return
            body_len = total - 12
            if btype in (_BT_EPB, _BT_PB):
                number += 1
                frame = self._packet_block(btype, order, body, body_len, interfaces, start, number)
                if frame is not None:
                    yield frame
            elif btype == _BT_SPB:
                number += 1
                frame = self._simple_block(order, body, body_len, interfaces, start, number)
                if frame is not None:
                    yield frame
            elif btype == _BT_IDB:
                iface = self._interface(order, body, body_len, start, number + 1)
                if iface is None:
                    return
                interfaces.append(iface)
            # every other block type is skipped by its length

    def _packet_block(
        self,
        btype: int,
        order: str,
        body: bytes,
        body_len: int,
        interfaces: list[_Interface],
        start: int,
        number: int,
    ) -> Frame | None:
        if body_len < 20:
            self._problem(start, number, f"packet block too short ({body_len + 12} bytes)")
            return None
        if btype == _BT_EPB:
            iface_id, hi, lo, caplen, orig_len = struct.unpack_from(order + "IIIII", body)
        else:
            iface_id, _drops, hi, lo, caplen, orig_len = struct.unpack_from(order + "HHIIII", body)
        if caplen > MAX_CAPLEN:
            self._problem(start, number, f"captured length {caplen} exceeds the {MAX_CAPLEN}-byte sanity bound")
            return None
        if 20 + caplen > body_len:
            self._problem(start, number, f"captured length {caplen} does not fit in a {body_len + 12}-byte block")
            return None
        if iface_id >= len(interfaces):
            self._problem(start, number, f"packet refers to interface {iface_id}, which was not described")
            return None
        iface = interfaces[iface_id]
        ts = ((hi << 32) | lo) / iface.divisor + iface.offset
        self._last_ts = ts
        return Frame(number, ts, iface.linktype, body[20 : 20 + caplen], orig_len)

    def _simple_block(
        self, order: str, body: bytes, body_len: int, interfaces: list[_Interface], start: int, number: int
    ) -> Frame | None:
        if not interfaces:
            self._problem(start, number, "simple packet block before any interface description")
            return None
        if body_len < 4:
            self._problem(start, number, f"simple packet block too short ({body_len + 12} bytes)")
            return None
        (orig_len,) = struct.unpack_from(order + "I", body)
        iface = interfaces[0]
        caplen = min(orig_len, body_len - 4)
        if iface.snaplen:
            caplen = min(caplen, iface.snaplen)
        if caplen > MAX_CAPLEN:
            self._problem(start, number, f"captured length {caplen} exceeds the {MAX_CAPLEN}-byte sanity bound")
            return None
        # A simple packet block has no timestamp; reuse the last one so that time never goes back.
        return Frame(number, self._last_ts, iface.linktype, body[4 : 4 + caplen], orig_len)

    def _interface(self, order: str, body: bytes, body_len: int, start: int, number: int) -> _Interface | None:
        if body_len < 8:
            self._problem(start, number, f"interface description block too short ({body_len + 12} bytes)")
            return None
        linktype, _reserved, snaplen = struct.unpack_from(order + "HHI", body)
        divisor = 1_000_000
        ts_offset = 0
        pos = 8
        while pos + 4 <= body_len:
            code, length = struct.unpack_from(order + "HH", body, pos)
            pos += 4
            if code == _OPT_END:
                break
            if pos + length > body_len:
                self._problem(start, number, f"interface option {code} overruns its block")
                return None
            if code == _OPT_IF_TSRESOL and length >= 1:
                value = body[pos]
                exponent = value & 0x7F
                divisor = (1 << exponent) if value & 0x80 else 10**exponent
            elif code == _OPT_IF_TSOFFSET and length >= 8:
                (ts_offset,) = struct.unpack_from(order + "q", body, pos)
            pos += (length + 3) & ~3
        return _Interface(linktype & _LINKTYPE_MASK, snaplen, divisor, ts_offset)
