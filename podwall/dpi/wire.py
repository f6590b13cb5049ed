"""Bounds-checked reading of binary wire formats for the protocol parsers.

A `Reader` walks a complete message and fails closed: every read past its end raises
`ProtocolError` saying what was being read and at which offset, never `IndexError` or
`struct.error`. Parsers first make sure a whole message is buffered (by its length field)
and then read it with a `Reader`, so an overrun always means a malformed message.
`StreamBuffer` is the bounded per-direction receive buffer that TCP parsers share;
`FramedStream` cuts it into length-framed messages, holding at most a cap of each (Kafka,
MongoDB); `PiecewiseMessages` is the base of parsers that take each message as it trickles in, holding
only the first bytes of its body (PostgreSQL, MySQL, Cassandra).
"""

from __future__ import annotations

from podwall.core.errors import ProtocolError

__all__ = ["FramedStream", "PiecewiseMessages", "Reader", "StreamBuffer"]


class Reader:
    """A cursor over `data[pos:end]` whose every read is checked against `end`."""

    __slots__ = ("_data", "_end", "_pos", "what")

    def __init__(self, data: bytes, pos: int = 0, end: int | None = None, what: str = "message") -> None:
        size = len(data)
        stop = size if end is None else end
        if not 0 <= pos <= stop <= size:
            raise ProtocolError(f"{what}: bad bounds {pos}..{stop} for {size} bytes")
        self._data = data
        self._pos = pos
        self._end = stop
        self.what = what

    @property
    def data(self) -> bytes:
        """The whole underlying buffer (for formats with absolute offsets, such as DNS names)."""
        return self._data

    @property
    def pos(self) -> int:
        return self._pos

    @property
    def end(self) -> int:
        return self._end

    def remaining(self) -> int:
        return self._end - self._pos

    def at_end(self) -> bool:
        return self._pos >= self._end

    def seek(self, pos: int) -> None:
        """Move to an absolute offset within the reader's bounds (after following a pointer)."""
        if not 0 <= pos <= self._end:
            raise ProtocolError(f"{self.what}: offset {pos} outside 0..{self._end}")
        self._pos = pos

    def _need(self, n: int, field: str) -> int:
        start = self._pos
        if n < 0 or start + n > self._end:
            raise ProtocolError(
                f"truncated {self.what}: {field} needs {n} bytes at offset {start}, {self._end - start} left"
            )
        self._pos = start + n
        return start

    def u8(self, field: str = "u8") -> int:
        start = self._need(1, field)
        return self._data[start]

    def u16(self, field: str = "u16") -> int:
        start = self._need(2, field)
        return int.from_bytes(self._data[start : start + 2], "big")

    def u24(self, field: str = "u24") -> int:
        start = self._need(3, field)
        return int.from_bytes(self._data[start : start + 3], "big")

    def u32(self, field: str = "u32") -> int:
        start = self._need(4, field)
        return int.from_bytes(self._data[start : start + 4], "big")

    def take(self, n: int, field: str = "bytes") -> bytes:
        start = self._need(n, field)
        return bytes(self._data[start : start + n])

    def skip(self, n: int, field: str = "bytes") -> None:
        self._need(n, field)

    def sub(self, n: int, what: str) -> Reader:
        """A reader over the next `n` bytes (this one moves past them)."""
        start = self._need(n, what)
        return Reader(self._data, start, start + n, what)

    def vec8(self, what: str) -> Reader:
        """A sub-reader over a vector with a one-byte length prefix."""
        return self.sub(self.u8(f"{what} length"), what)

    def vec16(self, what: str) -> Reader:
        """A sub-reader over a vector with a two-byte length prefix."""
        return self.sub(self.u16(f"{what} length"), what)

    def expect_end(self) -> None:
        """Fail when bytes are left over where the format says the structure ends."""
        if self._pos != self._end:
            raise ProtocolError(f"{self.what}: {self._end - self._pos} unexpected trailing bytes at offset {self._pos}")


class StreamBuffer:
    """Unparsed bytes of one TCP direction, with a read position and a hard cap.

    Parsers append a chunk, consume from `pos` as far as whole elements allow, then call
    `compact()`, which drops consumed bytes once per feed (not per element, which would be
    quadratic) and raises `ProtocolError` when what is left exceeds the cap.
    """

    __slots__ = ("buf", "cap", "pos", "what")

    def __init__(self, cap: int, what: str) -> None:
        self.buf = bytearray()
        self.pos = 0
        self.cap = cap
        self.what = what

    def append(self, data: bytes) -> None:
        self.buf += data

    def available(self) -> int:
        return len(self.buf) - self.pos

    def compact(self) -> None:
        if self.pos:
            del self.buf[: self.pos]
            self.pos = 0
        if len(self.buf) > self.cap:
            raise ProtocolError(f"{self.what} exceeds {self.cap} bytes without completing")

    def clear(self) -> None:
        self.buf.clear()
        self.pos = 0


class FramedStream:
    """One direction's length-framed messages: each is held up to `cap` bytes, the rest of a
    longer one streams through unbuffered (`skip` counts what is still to pass over).

    A parser appends to `stream`, asks `next_frame` where the next header starts, reads its
    length there, and `take_frame` gives the held part once buffered; then `stream.compact()`.
    """

    __slots__ = ("cap", "skip", "stream")

    def __init__(self, cap: int, what: str) -> None:
        self.stream = StreamBuffer(cap, what)
        self.cap = cap
        self.skip = 0

    def next_frame(self, header: int) -> int:
        """Where the next frame starts once its first `header` bytes are buffered, else -1."""
        stream = self.stream
        available = len(stream.buf) - stream.pos
        if self.skip:
            n = min(self.skip, available)
            stream.pos += n
            self.skip -= n
            if self.skip:
                return -1
            available -= n
        return stream.pos if available >= header else -1

    def take_frame(self, size: int, start: int = 0) -> bytearray | None:
        """The held part of the `size`-byte frame at the read position, from its offset `start`.

        None until that part is buffered; otherwise the read position moves past it and the
        rest of a frame longer than `cap` is to be skipped.
        """
        stream = self.stream
        pos = stream.pos
        want = min(size, self.cap)
        if len(stream.buf) - pos < want:
            return None
        stream.pos = pos + want
        self.skip = size - want
        return stream.buf[pos + start : pos + want]


class PiecewiseMessages:
    """One direction's messages taken piece by piece: a fixed-size header gathered whole in
    `head`, then a body of `left` bytes streamed through, of which only the first `keep` are
    held in `body`. Subclasses decode the header and say when a message starts and ends.
    """

    __slots__ = ("body", "head", "in_body", "keep", "left", "what")

    def __init__(self, keep: int, what: str) -> None:
        self.keep = keep
        self.what = what
        self.head = bytearray()
        self.body = bytearray()
        self.in_body = False
        self.left = 0  # body bytes still to come

    def gather_head(self, data: bytes, pos: int, need: int) -> int:
        """Add bytes from `data[pos:]` to `head` until it holds `need`; the new position."""
        take = min(need - len(self.head), len(data) - pos)
        self.head += data[pos : pos + take]
        return pos + take

    def gather_body(self, data: bytes, pos: int) -> int:
        """Pass over up to `left` body bytes of `data[pos:]`, held while `body` is under `keep`; the new position."""
        take = min(self.left, len(data) - pos)
        room = self.keep - len(self.body)
        if room > 0 and take:
            self.body += data[pos : pos + min(take, room)]
        self.left -= take
        return pos + take
