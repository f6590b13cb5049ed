"""Capture file writers: classic pcap and pcapng, for demo captures and forensic event pcaps.

Both write to a path or an already open binary file, truncate frames to the snap length (keeping
the wire length), and convert float timestamps to the file's integer units with correct rounding.
"""

from __future__ import annotations

import struct
from pathlib import Path
from types import TracebackType
from typing import BinaryIO, Literal

__all__ = ["PcapWriter", "PcapngWriter"]

DEFAULT_SNAPLEN = 262144

ByteOrder = Literal["<", ">"]


def _split(ts: float, units: int) -> tuple[int, int]:
    """Whole seconds and fractional units of a timestamp; rounding never yields a full second."""
    return divmod(round(ts * units), units)


class _Output:
    """A binary sink that we may have opened ourselves (and then must close)."""

    def __init__(self, target: str | Path | BinaryIO) -> None:
        if isinstance(target, str | Path):
            self._file: BinaryIO = open(target, "wb")  # noqa: SIM115 - closed by close()
            self._owned = True
        else:
            self._file = target
            self._owned = False
        self._closed = False

    def write(self, data: bytes) -> None:
        if self._closed:
            raise ValueError("write to a closed capture writer")
        self._file.write(data)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._owned:
            self._file.close()
        else:
            self._file.flush()


class PcapWriter:
    """Writes a classic pcap file: one global header, then one record per `write`."""

    def __init__(
        self,
        target: str | Path | BinaryIO,
        linktype: int = 1,
        *,
        nanosecond: bool = False,
        snaplen: int = DEFAULT_SNAPLEN,
        byteorder: ByteOrder = "<",
    ) -> None:
        self._order = byteorder
        self._units = 1_000_000_000 if nanosecond else 1_000_000
        self._snaplen = snaplen
        self._record = struct.Struct(byteorder + "IIII")
        self._out = _Output(target)
        magic = 0xA1B23C4D if nanosecond else 0xA1B2C3D4
        self._out.write(struct.pack(byteorder + "IHHiIII", magic, 2, 4, 0, 0, snaplen, linktype))

    def write(self, ts: float, data: bytes, orig_len: int | None = None) -> None:
        """Append one frame captured at `ts` (seconds); `orig_len` defaults to the data length."""
        wire = len(data) if orig_len is None else orig_len
        if len(data) > self._snaplen:
            data = data[: self._snaplen]
        sec, frac = _split(ts, self._units)
        self._out.write(self._record.pack(sec, frac, len(data), wire) + data)

    def close(self) -> None:
        """Flush and close (a file object passed in is flushed, not closed)."""
        self._out.close()

    def __enter__(self) -> PcapWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class PcapngWriter:
    """Writes a pcapng file: a Section Header Block, one Interface Description Block, then EPBs.

    `tsresol` is the number of decimal digits of the timestamp fraction (6 = microseconds, the
    pcapng default, 9 = nanoseconds). `add_interface` adds further interfaces (other link types).
    """

    def __init__(
        self,
        target: str | Path | BinaryIO,
        linktype: int = 1,
        *,
        tsresol: int = 6,
        snaplen: int = DEFAULT_SNAPLEN,
        byteorder: ByteOrder = "<",
        if_name: str | None = None,
        application: str = "podwall",
    ) -> None:
        self._order = byteorder
        self._interfaces: list[tuple[int, int]] = []  # (units per second, snaplen)
        self._out = _Output(target)
        shb_options = self._option(4, application.encode()) + self._option(0, b"")
        # Section length -1: not specified, so readers do not rely on it.
        self._block(0x0A0D0D0A, struct.pack(byteorder + "IHHq", 0x1A2B3C4D, 1, 0, -1) + shb_options)
        self.add_interface(linktype, tsresol=tsresol, snaplen=snaplen, if_name=if_name)

    def add_interface(
        self, linktype: int, *, tsresol: int = 6, snaplen: int = DEFAULT_SNAPLEN, if_name: str | None = None
    ) -> int:
        """Describe another interface; returns its id for `write(..., interface=id)`."""
        if not 0 <= tsresol <= 19:
            raise ValueError(f"tsresol {tsresol} is outside 0..19 decimal digits")
        options = b""
        if if_name:
            options += self._option(2, if_name.encode())
        if tsresol != 6:
            options += self._option(9, bytes((tsresol,)))
        if options:
            options += self._option(0, b"")
        self._block(1, struct.pack(self._order + "HHI", linktype, 0, snaplen) + options)
        self._interfaces.append((10**tsresol, snaplen))
        return len(self._interfaces) - 1

    def write(self, ts: float, data: bytes, orig_len: int | None = None, interface: int = 0) -> None:
        """Append one frame captured at `ts` (seconds) on `interface` as an Enhanced Packet Block."""
        units, snaplen = self._interfaces[interface]
        wire = len(data) if orig_len is None else orig_len
        if snaplen and len(data) > snaplen:
            data = data[:snaplen]
        stamp = round(ts * units)
        head = struct.pack(
            self._order + "IIIII", interface, (stamp >> 32) & 0xFFFFFFFF, stamp & 0xFFFFFFFF, len(data), wire
        )
        self._block(6, head + data + bytes(-len(data) % 4))

    def _option(self, code: int, value: bytes) -> bytes:
        return struct.pack(self._order + "HH", code, len(value)) + value + bytes(-len(value) % 4)

    def _block(self, btype: int, body: bytes) -> None:
        total = len(body) + 12
        length = struct.pack(self._order + "I", total)
        self._out.write(struct.pack(self._order + "I", btype) + length + body + length)

    def close(self) -> None:
        """Flush and close (a file object passed in is flushed, not closed)."""
        self._out.close()

    def __enter__(self) -> PcapngWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
