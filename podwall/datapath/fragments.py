"""IP fragment reassembly (IPv4 and IPv6), bounded in memory and time.

Fragments may arrive in any order, duplicated or overlapping. Where fragments overlap with
different bytes the first data wins (and the overlap is counted: it is how teardrop-style
evasions look). Incomplete datagrams expire by packet time, the number of datagrams held at
once and the size of each are capped, so hostile traffic cannot grow memory without bound.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from podwall.core.limits import DEFAULT_LIMITS, Limits

__all__ = ["MAX_DATAGRAM", "MAX_PIECES", "FragmentError", "FragmentReassembler"]

# Largest reassembled payload (after the first header) we accept: an IPv4 datagram cannot
# exceed 65535 bytes in total, an IPv6 fragmentable part cannot exceed 65535 - 8 + offset range.
MAX_DATAGRAM = 65535
# A 64 KiB datagram over the smallest IPv4 MTU (68) needs about 1400 fragments.
MAX_PIECES = 2048


class FragmentError(ValueError):
    """A fragment that cannot belong to a valid datagram; the datagram has been dropped."""


@dataclass(slots=True)
class _Train:
    """The fragments of one datagram received so far."""

    first_ts: float
    buf: bytearray = field(default_factory=bytearray)
    spans: list[list[int]] = field(default_factory=list)  # sorted, merged [start, end) ranges held
    total: int = -1  # payload length once the last fragment (more-fragments clear) is seen
    pieces: int = 0
    info: Any = None  # caller's data from the offset-0 fragment (its header facts)


class FragmentReassembler:
    """Collects fragments per datagram key and hands back the payload once it is complete.

    `add` returns `(payload, info)` when the datagram is complete, where `info` is what the
    caller passed with the offset-0 fragment; it returns None while fragments are missing and
    raises `FragmentError` (and forgets the datagram) when a fragment is impossible.
    Counters go to `stats` (shared with the decoder when it passes its own dict).
    """

    def __init__(self, limits: Limits = DEFAULT_LIMITS, stats: dict[str, int] | None = None) -> None:
        self._max = max(1, limits.max_fragments)
        self._timeout = limits.fragment_timeout
        self._trains: dict[tuple[Any, ...], _Train] = {}
        self.stats: dict[str, int] = stats if stats is not None else {}
        for name in (
            "fragments",
            "reassembled",
            "fragment_duplicate",
            "fragment_overlap",
            "fragment_expired",
            "fragment_evicted",
            "fragment_dropped",
        ):
            self.stats.setdefault(name, 0)

    def __len__(self) -> int:
        """Number of incomplete datagrams held."""
        return len(self._trains)

    def add(
        self, key: tuple[Any, ...], offset: int, more: bool, data: bytes, ts: float, info: Any = None
    ) -> tuple[bytes, Any] | None:
        """Add one fragment's payload at byte `offset`; `more` is the more-fragments flag."""
        stats = self.stats
        stats["fragments"] += 1
        self.expire(ts)
        train = self._trains.get(key)
        if train is None:
            if len(self._trains) >= self._max:
                # Dicts keep insertion order: the first entry is the oldest datagram.
                del self._trains[next(iter(self._trains))]
                stats["fragment_evicted"] += 1
            train = self._trains[key] = _Train(ts)
        end = offset + len(data)
        try:
            self._check(train, offset, end, more)
        except FragmentError:
            del self._trains[key]
            stats["fragment_dropped"] += 1
            raise
        if offset == 0 and train.info is None:
            train.info = info
        train.pieces += 1
        if not more:
            train.total = end
        self._place(train, offset, end, data)
        spans = train.spans
        if train.total >= 0 and len(spans) == 1 and spans[0][0] == 0 and spans[0][1] == train.total:
            del self._trains[key]
            stats["reassembled"] += 1
            return bytes(train.buf[: train.total]), train.info
        return None

    def expire(self, now: float) -> int:
        """Forget datagrams whose first fragment is older than the timeout; returns how many."""
        trains = self._trains
        limit = now - self._timeout
        gone = 0
        # Oldest first; packet times may step back a little, so stop at the first fresh train.
        while trains:
            key = next(iter(trains))
            if trains[key].first_ts >= limit:
                break
            del trains[key]
            gone += 1
        if gone:
            self.stats["fragment_expired"] += gone
        return gone

    def flush(self) -> int:
        """Forget every incomplete datagram (end of input); returns how many were incomplete."""
        gone = len(self._trains)
        self._trains.clear()
        return gone

    @staticmethod
    def _check(train: _Train, offset: int, end: int, more: bool) -> None:
        if end > MAX_DATAGRAM:
            raise FragmentError(f"fragment ends at byte {end}, beyond the {MAX_DATAGRAM}-byte datagram limit")
        if train.pieces >= MAX_PIECES:
            raise FragmentError(f"more than {MAX_PIECES} fragments for one datagram")
        if train.total >= 0:
            if not more and end != train.total:
                raise FragmentError(f"two last fragments disagree on the length ({train.total} vs {end})")
            if end > train.total:
                raise FragmentError(f"fragment ends at byte {end}, after the datagram's end {train.total}")
        elif not more and train.spans and train.spans[-1][1] > end:
            raise FragmentError(f"last fragment ends at byte {end}, but data up to {train.spans[-1][1]} was seen")

    def _place(self, train: _Train, start: int, end: int, data: bytes) -> None:
        """Copy the parts of [start, end) not yet held; compare the parts already held."""
        buf = train.buf
        if len(buf) < end:
            buf.extend(bytes(end - len(buf)))
        spans = train.spans
        cursor = start
        overlapped = False
        differs = False
        for span in spans:
            a, b = span
            if b <= start:
                continue
            if a >= end:
                break
            overlapped = True
            lo = a if a > start else start
            hi = b if b < end else end
            if buf[lo:hi] != data[lo - start : hi - start]:
                differs = True
            if a > cursor:
                buf[cursor:a] = data[cursor - start : a - start]
            if b > cursor:
                cursor = b
        if cursor < end:
            buf[cursor:end] = data[cursor - start :]
        if differs:
            self.stats["fragment_overlap"] += 1
        elif overlapped and _covered(spans, start, end):
            self.stats["fragment_duplicate"] += 1
        _merge(spans, start, end)


def _covered(spans: list[list[int]], start: int, end: int) -> bool:
    """True when [start, end) was already held entirely (checked before merging)."""
    return any(a <= start and end <= b for a, b in spans)


def _merge(spans: list[list[int]], start: int, end: int) -> None:
    """Insert [start, end) into the sorted list of disjoint ranges, joining touching ones."""
    if start == end:
        return
    i = 0
    n = len(spans)
    while i < n and spans[i][1] < start:
        i += 1
    j = i
    while j < n and spans[j][0] <= end:
        start = min(start, spans[j][0])
        end = max(end, spans[j][1])
        j += 1
    spans[i:j] = [[start, end]]
