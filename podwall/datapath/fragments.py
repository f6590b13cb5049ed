"""IP fragment reassembly (IPv4 and IPv6), bounded in memory and time.

Fragments may arrive in any order, duplicated or overlapping. Where fragments overlap with
different bytes the first data wins (and the overlap is counted: it is how teardrop-style
evasions look). Each datagram keeps only the bytes it received, as (offset, bytes) pieces,
and joins them once complete, so a tiny fragment at a large offset costs a tiny piece.
Incomplete datagrams expire by packet time; the number of datagrams held at once, the
fragments per datagram and the bytes held by all of them together (`Limits.fragment_bytes`,
oldest datagrams evicted past it) are capped, so hostile traffic cannot grow memory without
bound.
"""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass, field
from typing import Any

from podwall.core.limits import DEFAULT_LIMITS, Limits

__all__ = ["MAX_DATAGRAM", "MAX_PIECES", "PIECE_COST", "FragmentError", "FragmentReassembler"]

# Largest reassembled payload (after the first header) we accept: an IPv4 datagram cannot
# exceed 65535 bytes in total, an IPv6 fragmentable part cannot exceed 65535 - 8 + offset range.
MAX_DATAGRAM = 65535
# A 64 KiB datagram over the smallest IPv4 MTU (68) needs about 1400 fragments.
MAX_PIECES = 2048
# Bytes charged against the budget per held piece on top of its data, roughly what a bytes
# object and its list slots cost, so that many tiny pieces cannot slip under the budget.
PIECE_COST = 64


class FragmentError(ValueError):
    """A fragment that cannot belong to a valid datagram; the datagram has been dropped.

    `kind` says why, for threat detection: "oversize" (the datagram would pass 65535 bytes,
    ping-of-death style), "overlap" (fragments disagree on where the datagram ends,
    teardrop style) or "pieces" (too many fragments).
    """

    def __init__(self, message: str, kind: str = "invalid") -> None:
        super().__init__(message)
        self.kind = kind


@dataclass(slots=True)
class _Train:
    """The fragments of one datagram received so far."""

    first_ts: float
    starts: list[int] = field(default_factory=list)  # sorted offsets of the held, disjoint pieces
    datas: list[bytes] = field(default_factory=list)  # the pieces' bytes, parallel to `starts`
    size: int = 0  # payload bytes held
    cost: int = 0  # what this train charges against the byte budget
    high: int = 0  # largest end offset seen
    total: int = -1  # payload length once the last fragment (more-fragments clear) is seen
    pieces: int = 0
    info: Any = None  # caller's data from the offset-0 fragment (its header facts)
    overlap: bool = False  # a fragment overlapped held bytes without being a plain duplicate of them


class FragmentReassembler:
    """Collects fragments per datagram key and hands back the payload once it is complete.

    `add` returns `(payload, info)` when the datagram is complete, where `info` is what the
    caller passed with the offset-0 fragment; it returns None while fragments are missing (or
    when the byte budget made it drop the datagram) and raises `FragmentError` (and forgets
    the datagram) when a fragment is impossible. Counters go to `stats` (shared with the
    decoder when it passes its own dict); datagrams dropped for the count or the byte budget
    are counted in `fragment_evicted`. `held_bytes` is what all incomplete datagrams charge.
    `last_overlap` tells, after `add` returned a datagram, whether its fragments overlapped.
    """

    def __init__(self, limits: Limits = DEFAULT_LIMITS, stats: dict[str, int] | None = None) -> None:
        self._max = max(1, limits.max_fragments)
        self._timeout = limits.fragment_timeout
        self._budget = max(0, limits.fragment_bytes)
        self._held = 0
        self._trains: dict[tuple[Any, ...], _Train] = {}
        self.last_overlap = False
        self._overlapped = False  # set by `_fresh`: the fragment it looked at overlapped held bytes
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

    @property
    def held_bytes(self) -> int:
        """Bytes charged by the incomplete datagrams held: their data plus `PIECE_COST` per piece."""
        return self._held

    def add(
        self, key: tuple[Any, ...], offset: int, more: bool, data: bytes, ts: float, info: Any = None
    ) -> tuple[bytes, Any] | None:
        """Add one fragment's payload at byte `offset`; `more` is the more-fragments flag."""
        stats = self.stats
        stats["fragments"] += 1
        self.expire(ts)
        trains = self._trains
        train = trains.get(key)
        if train is None:
            if len(trains) >= self._max:
                # Dicts keep insertion order: the first entry is the oldest datagram.
                self._forget(next(iter(trains)))
                stats["fragment_evicted"] += 1
            train = trains[key] = _Train(ts)
        end = offset + len(data)
        try:
            self._check(train, offset, end, more)
        except FragmentError:
            self._forget(key)
            stats["fragment_dropped"] += 1
            raise
        if offset == 0 and train.info is None:
            train.info = info
        train.pieces += 1
        if not more:
            train.total = end
        if end > train.high:
            train.high = end
        fresh = self._fresh(train, offset, data)
        if self._overlapped:
            train.overlap = True
        if fresh:
            cost = sum(len(d) for _, d in fresh) + PIECE_COST * len(fresh)
            while self._held + cost > self._budget and trains:
                # Oldest first, possibly this very datagram: then the fragment goes with it.
                old = next(iter(trains))
                self._forget(old)
                stats["fragment_evicted"] += 1
                if old == key:
                    return None
            starts, datas = train.starts, train.datas
            for s, d in fresh:
                j = bisect_right(starts, s)
                starts.insert(j, s)
                datas.insert(j, d)
                train.size += len(d)
            train.cost += cost
            self._held += cost
        if train.size == train.total:
            # Pieces are disjoint and end by `total`, so holding `total` bytes means no hole.
            self._forget(key)
            stats["reassembled"] += 1
            self.last_overlap = train.overlap
            datas = train.datas
            return (datas[0] if len(datas) == 1 else b"".join(datas)), train.info
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
            self._forget(key)
            gone += 1
        if gone:
            self.stats["fragment_expired"] += gone
        return gone

    def flush(self) -> int:
        """Forget every incomplete datagram (end of input); returns how many were incomplete."""
        gone = len(self._trains)
        self._trains.clear()
        self._held = 0
        return gone

    def _forget(self, key: tuple[Any, ...]) -> None:
        self._held -= self._trains.pop(key).cost

    @staticmethod
    def _check(train: _Train, offset: int, end: int, more: bool) -> None:
        if end > MAX_DATAGRAM:
            raise FragmentError(
                f"fragment ends at byte {end}, beyond the {MAX_DATAGRAM}-byte datagram limit", "oversize"
            )
        if train.pieces >= MAX_PIECES:
            raise FragmentError(f"more than {MAX_PIECES} fragments for one datagram", "pieces")
        if train.total >= 0:
            if not more and end != train.total:
                raise FragmentError(f"two last fragments disagree on the length ({train.total} vs {end})", "overlap")
            if end > train.total:
                raise FragmentError(f"fragment ends at byte {end}, after the datagram's end {train.total}", "overlap")
        elif not more and train.high > end:
            raise FragmentError(f"last fragment ends at byte {end}, but data up to {train.high} was seen", "overlap")

    def _fresh(self, train: _Train, start: int, data: bytes) -> list[tuple[int, bytes]]:
        """The parts of `data` (at `start`) not held yet; compares the parts already held."""
        end = start + len(data)
        self._overlapped = False
        if start == end:
            return []
        starts, datas = train.starts, train.datas
        i = bisect_right(starts, start) - 1
        if i < 0:
            i = 0
        pos = start
        overlapped = False
        differs = False
        fresh: list[tuple[int, bytes]] = []
        while i < len(starts) and starts[i] < end:
            ps = starts[i]
            pd = datas[i]
            pe = ps + len(pd)
            if pe > pos:
                overlapped = True
                if ps > pos:
                    fresh.append((pos, data[pos - start : ps - start]))
                lo = ps if ps > pos else pos
                hi = pe if pe < end else end
                if data[lo - start : hi - start] != pd[lo - ps : hi - ps]:
                    differs = True
                pos = hi
                if pos >= end:
                    break
            i += 1
        if pos < end:
            fresh.append((pos, data[pos - start :] if pos > start else data))
        if differs:
            self.stats["fragment_overlap"] += 1
        elif overlapped and not fresh:
            self.stats["fragment_duplicate"] += 1
        # Ranges that cross held ones (or bytes that differ) are how teardrop-style attacks look;
        # a fragment that only repeats held bytes is a retransmission.
        self._overlapped = differs or (overlapped and bool(fresh))
        return fresh
