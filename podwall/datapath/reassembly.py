"""TCP stream reassembly for one direction of a connection: segments in, contiguous bytes out.

Sequence numbers are 32-bit and wrap; internally every byte gets an unbounded stream offset
(0 = first data byte) so that comparisons never wrap. The first copy of any byte wins: a
retransmission or overlap that carries different bytes is not delivered, it only raises
`overlap_conflict` (a classic IDS-evasion signal). Out-of-order bytes are buffered up to a
window of bytes and a number of pieces (touching pieces are joined while small, so the piece
cap only bites when many holes separate them); past either, the stream skips to the lowest
buffered segment and reports a gap.
"""

from __future__ import annotations

from bisect import bisect_right
from collections import deque

from podwall.core.limits import DEFAULT_LIMITS

SEQ_MOD = 1 << 32
_SEQ_MASK = SEQ_MOD - 1
_SEQ_HALF = 1 << 31

# Delivered bytes remembered to check retransmissions against. Only references to payloads
# the caller already holds are kept (no copies); it bounds how far back a conflicting
# retransmission can be noticed.
HISTORY_BYTES = 16 * 1024
# Buffered pieces that touch are joined while the result stays this small: it keeps the piece
# count low for ordinary reordering without copying large buffers again and again.
MERGE_MAX = 4096


def seq_diff(a: int, b: int) -> int:
    """Signed distance `a - b` in 32-bit sequence space, in [-2**31, 2**31)."""
    d = (a - b) & _SEQ_MASK
    return d - SEQ_MOD if d >= _SEQ_HALF else d


class StreamReassembler:
    """Orders one direction's TCP segments into the byte stream the receiver would read.

    Start it with `syn(isn)` (data begins at ISN+1) or `start_at(seq)`; otherwise the first
    segment with data starts it (mid-stream). `add` returns the bytes that became contiguous.

    Flags and counters, readable at any time:
    `gap` (the last `add` skipped missing bytes: what it returned follows a hole),
    `gaps` (holes skipped so far), `lost_bytes` (bytes in those holes),
    `overlap_conflict` (some byte was seen twice with different values),
    `retrans_bytes` (bytes received again), `ooo_segments` (segments that arrived early).
    """

    __slots__ = (
        "_datas",
        "_delivered",
        "_fin",
        "_hist",
        "_hist_bytes",
        "_hist_cap",
        "_max_segments",
        "_next",
        "_pending",
        "_starts",
        "_window",
        "gap",
        "gaps",
        "lost_bytes",
        "ooo_segments",
        "overlap_conflict",
        "retrans_bytes",
        "started",
    )

    def __init__(
        self,
        window: int = DEFAULT_LIMITS.reasm_window,
        history: int = HISTORY_BYTES,
        max_segments: int = DEFAULT_LIMITS.reasm_max_segments,
    ) -> None:
        self._window = window
        self._max_segments = max(1, max_segments)
        self._hist_cap = history
        self._next = 0  # sequence number of the next expected data byte
        self._delivered = 0  # stream offset of the next expected data byte
        self._fin: int | None = None  # stream offset the FIN occupies, once seen
        # Buffered out-of-order pieces: sorted, non-overlapping, all at or after `_delivered`.
        self._starts: list[int] = []
        self._datas: list[bytes] = []
        self._pending = 0
        # Recently delivered pieces (offset, bytes), contiguous and ending at `_delivered`.
        self._hist: deque[tuple[int, bytes]] = deque()
        self._hist_bytes = 0
        self.started = False
        self.gap = False
        self.gaps = 0
        self.lost_bytes = 0
        self.overlap_conflict = False
        self.retrans_bytes = 0
        self.ooo_segments = 0

    def syn(self, isn: int) -> None:
        """Start from a SYN: the SYN consumes `isn`, data begins at `isn + 1`. No-op once started."""
        if not self.started:
            self.start_at((isn + 1) & _SEQ_MASK)

    def start_at(self, seq: int) -> None:
        """Start with `seq` as the first data byte's sequence number. No-op once started."""
        if not self.started:
            self.started = True
            self._next = seq & _SEQ_MASK
            self._delivered = 0

    @property
    def next_seq(self) -> int:
        """The sequence number the receiver acknowledges next (counts the FIN once it is reached)."""
        if self._fin is not None and self._delivered >= self._fin:
            return (self._next + 1) & _SEQ_MASK
        return self._next

    @property
    def delivered(self) -> int:
        """Stream bytes delivered so far, holes skipped by gaps included."""
        return self._delivered

    @property
    def pending_bytes(self) -> int:
        """Out-of-order bytes currently buffered."""
        return self._pending

    @property
    def pending_segments(self) -> int:
        """Out-of-order pieces currently buffered."""
        return len(self._starts)

    @property
    def finished(self) -> bool:
        """True once every byte up to the FIN has been delivered."""
        return self._fin is not None and self._delivered >= self._fin

    def add(self, seq: int, payload: bytes, syn: bool = False, fin: bool = False) -> bytes:
        """Take one segment; return the bytes that are now contiguous (often b"" or `payload` itself).

        `syn`/`fin` say the segment carries those flags: each consumes one sequence number
        (a SYN's data starts at `seq + 1`; a FIN sits right after the segment's data).
        """
        self.gap = False
        if syn:
            seq = (seq + 1) & _SEQ_MASK
            if not self.started:
                self.start_at(seq)
        n = len(payload)
        if not n and not fin:
            return b""
        if not self.started:
            if not n:
                return b""  # a bare FIN cannot place the stream
            self.start_at(seq)
        rel = (seq - self._next) & _SEQ_MASK
        if rel == 0 and not fin and not self._starts and self._fin is None:
            # In-order fast path: nothing buffered, deliver the caller's object as is.
            self._delivered += n
            self._next = (self._next + n) & _SEQ_MASK
            if self._hist_cap:
                self._remember(self._delivered - n, payload)
            return payload
        off = self._delivered + (rel - SEQ_MOD if rel >= _SEQ_HALF else rel)
        return self._add_slow(off, payload, fin)

    def _add_slow(self, off: int, payload: bytes, fin: bool) -> bytes:
        end = off + len(payload)
        if fin and self._fin is None:
            self._fin = end
            self._drop_after_fin()
        if self._fin is not None and end > self._fin:
            # Bytes after the FIN are not part of the stream.
            payload = payload[: max(0, self._fin - off)]
            end = off + len(payload)
        if off < self._delivered and payload:
            old_end = min(end, self._delivered)
            self.retrans_bytes += old_end - off
            self._check_history(off, payload[: old_end - off])
            payload = payload[old_end - off :]
            off = old_end
        if payload:
            if off > self._delivered:
                self.ooo_segments += 1
            self._insert(off, payload)
        out = self._drain()
        # Only a segment that lands beyond the hole can push the buffer over the window, and
        # such a segment delivers nothing before the hole: `out` is empty at the first skip.
        # The piece cap bounds the per-piece overhead and the cost of keeping pieces sorted
        # (many tiny segments, each behind its own hole, fit easily in the byte window).
        while self._pending > self._window or len(self._starts) > self._max_segments:
            if out:
                # Bytes between two holes cannot be returned without hiding the second hole.
                self.lost_bytes += len(out)
            first = self._starts[0]
            self.lost_bytes += first - self._delivered
            self._next = (self._next + first - self._delivered) & _SEQ_MASK
            self._delivered = first
            self._hist.clear()
            self._hist_bytes = 0
            self.gap = True
            self.gaps += 1
            out = self._drain()
        return out

    def _insert(self, off: int, data: bytes) -> None:
        """Buffer the parts of `data` (at stream offset `off`) that no earlier piece covers."""
        starts, datas = self._starts, self._datas
        end = off + len(data)
        i = max(bisect_right(starts, off) - 1, 0)
        pos = off
        fresh: list[tuple[int, bytes]] = []
        while i < len(starts) and starts[i] < end:
            ps = starts[i]
            pd = datas[i]
            pe = ps + len(pd)
            if pe > pos:
                if ps > pos:
                    fresh.append((pos, data[pos - off : ps - off]))
                lo = ps if ps > pos else pos
                hi = pe if pe < end else end
                self.retrans_bytes += hi - lo
                if data[lo - off : hi - off] != pd[lo - ps : hi - ps]:
                    self.overlap_conflict = True
                pos = hi
                if pos >= end:
                    break
            i += 1
        if pos < end:
            fresh.append((pos, data[pos - off :] if pos > off else data))
        for s, d in fresh:
            self._pending += len(d)
            j = bisect_right(starts, s)
            if j and starts[j - 1] + len(datas[j - 1]) == s and len(datas[j - 1]) + len(d) <= MERGE_MAX:
                j -= 1
                datas[j] += d
            else:
                starts.insert(j, s)
                datas.insert(j, d)
            k = j + 1
            if (
                k < len(starts)
                and starts[k] == starts[j] + len(datas[j])
                and len(datas[j]) + len(datas[k]) <= MERGE_MAX
            ):
                datas[j] += datas[k]
                del starts[k]
                del datas[k]

    def _drain(self) -> bytes:
        """Deliver the buffered pieces that now follow the stream without a hole."""
        starts, datas = self._starts, self._datas
        k = 0
        pos = self._delivered
        while k < len(starts) and starts[k] == pos:
            pos += len(datas[k])
            k += 1
        if not k:
            return b""
        chunks = datas[:k]
        del starts[:k]
        del datas[:k]
        size = pos - self._delivered
        self._pending -= size
        if self._hist_cap:
            at = self._delivered
            for c in chunks:
                self._remember(at, c)
                at += len(c)
        self._delivered = pos
        self._next = (self._next + size) & _SEQ_MASK
        return chunks[0] if k == 1 else b"".join(chunks)

    def _remember(self, off: int, data: bytes) -> None:
        hist = self._hist
        hist.append((off, data))
        self._hist_bytes += len(data)
        while self._hist_bytes - len(hist[0][1]) >= self._hist_cap:
            self._hist_bytes -= len(hist.popleft()[1])

    def _check_history(self, off: int, data: bytes) -> None:
        """Flag a conflict if `data` (already-delivered offsets) differs from what was delivered."""
        end = off + len(data)
        for hs, hd in self._hist:
            he = hs + len(hd)
            if he <= off:
                continue
            if hs >= end:
                break
            lo = hs if hs > off else off
            hi = he if he < end else end
            if data[lo - off : hi - off] != hd[lo - hs : hi - hs]:
                self.overlap_conflict = True
                return

    def _drop_after_fin(self) -> None:
        """Forget buffered bytes that a (late) FIN shows lie beyond the end of the stream."""
        fin = self._fin
        assert fin is not None
        starts, datas = self._starts, self._datas
        while starts and starts[-1] + len(datas[-1]) > fin:
            s = starts[-1]
            d = datas[-1]
            if s >= fin:
                starts.pop()
                datas.pop()
                self._pending -= len(d)
            else:
                datas[-1] = d[: fin - s]
                self._pending -= len(d) - (fin - s)
