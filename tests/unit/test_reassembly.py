"""Tests for the per-direction TCP stream reassembler."""

from __future__ import annotations

import random
import time
import tracemalloc

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from podwall.core.limits import DEFAULT_LIMITS
from podwall.datapath.reassembly import MERGE_MAX, SEQ_MOD, StreamReassembler, seq_diff

ISN = 1000


def started(isn: int = ISN, window: int = 1 << 20) -> StreamReassembler:
    r = StreamReassembler(window=window)
    r.syn(isn)
    return r


def feed(r: StreamReassembler, segments: list[tuple[int, bytes]]) -> bytes:
    return b"".join(r.add(seq, data) for seq, data in segments)


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        (5, 3, 2),
        (3, 5, -2),
        (2, SEQ_MOD - 3, 5),
        (SEQ_MOD - 3, 2, -5),
        (0, 0, 0),
    ],
    ids=["ahead", "behind", "ahead-across-wrap", "behind-across-wrap", "equal"],
)
def test_seq_diff(a: int, b: int, expected: int) -> None:
    """Sequence distance is signed and correct across the 32-bit wrap."""
    assert seq_diff(a, b) == expected


def test_in_order_returns_payload_object_without_copy() -> None:
    """In-order segments come back as the very same bytes objects, with no counters raised."""
    r = started()
    p1, p2 = b"hello ", b"world"
    out1 = r.add(ISN + 1, p1)
    out2 = r.add(ISN + 1 + len(p1), p2)
    assert out1 is p1 and out2 is p2
    assert (r.retrans_bytes, r.ooo_segments, r.gaps, r.overlap_conflict) == (0, 0, 0, False)
    assert r.next_seq == ISN + 1 + 11


@pytest.mark.parametrize(
    ("order", "expected_ooo"),
    [
        ([0, 1, 2], 0),
        ([2, 1, 0], 2),
        ([1, 0, 2], 1),
        ([0, 2, 1], 1),
        ([2, 0, 1], 1),
    ],
    ids=["in-order", "reversed", "first-two-swapped", "last-two-swapped", "last-first"],
)
def test_out_of_order_segments_are_buffered_and_released(order: list[int], expected_ooo: int) -> None:
    """Segments in any order deliver the stream in order, and early arrivals are counted."""
    segs = [(ISN + 1, b"aaa"), (ISN + 4, b"bbbb"), (ISN + 8, b"cc")]
    r = started()
    out = feed(r, [segs[i] for i in order])
    assert out == b"aaabbbbcc"
    assert r.ooo_segments == expected_ooo
    assert r.pending_bytes == 0


def test_nothing_is_released_while_a_hole_remains() -> None:
    """A segment after a hole returns nothing and stays buffered."""
    r = started()
    assert r.add(ISN + 4, b"later") == b""
    assert r.pending_bytes == 5
    assert r.add(ISN + 1, b"abc") == b"abclater"


def test_full_retransmission_is_ignored_and_counted() -> None:
    """Data already delivered is not delivered again; its bytes count as retransmitted."""
    r = started()
    r.add(ISN + 1, b"abcdef")
    assert r.add(ISN + 1, b"abcdef") == b""
    assert r.add(ISN + 3, b"cd") == b""
    assert r.retrans_bytes == 8
    assert not r.overlap_conflict


@pytest.mark.parametrize(
    ("segments", "expected"),
    [
        ([(1, b"abcd"), (3, b"cdef")], b"abcdef"),
        ([(1, b"abcd"), (1, b"abcdefgh")], b"abcdefgh"),
        ([(5, b"efgh"), (3, b"cdefg"), (1, b"ab")], b"abcdefgh"),
        ([(3, b"cd"), (1, b"abcdef")], b"abcdef"),
        ([(3, b"cd"), (7, b"gh"), (1, b"abcdefghij")], b"abcdefghij"),
    ],
    ids=[
        "tail-overlaps-delivered",
        "superset-of-delivered",
        "overlaps-buffered",
        "covers-buffered",
        "covers-two-buffered",
    ],
)
def test_partial_overlap_with_same_data(segments: list[tuple[int, bytes]], expected: bytes) -> None:
    """Overlapping segments carrying the same bytes reassemble cleanly and raise no conflict."""
    r = started()
    out = feed(r, [(ISN + off, data) for off, data in segments])
    assert out == expected
    assert not r.overlap_conflict
    assert r.retrans_bytes > 0


@pytest.mark.parametrize(
    ("segments", "expected"),
    [
        ([(1, b"abcd"), (3, b"XYef")], b"abcdef"),
        ([(1, b"abcd"), (1, b"abcX")], b"abcd"),
        ([(3, b"cd"), (1, b"abXYef")], b"abcdef"),
        ([(5, b"ef"), (3, b"cdXY"), (1, b"ab")], b"abcdef"),
    ],
    ids=["against-delivered", "full-retransmission-differs", "against-buffered", "tail-against-buffered"],
)
def test_overlap_with_different_data_first_wins(segments: list[tuple[int, bytes]], expected: bytes) -> None:
    """When overlapping bytes differ, the first copy is delivered and overlap_conflict is set."""
    r = started()
    out = feed(r, [(ISN + off, data) for off, data in segments])
    assert out == expected
    assert r.overlap_conflict


def test_sequence_wrap_around() -> None:
    """A stream whose sequence numbers wrap past 2**32 reassembles, in and out of order."""
    isn = SEQ_MOD - 4
    r = started(isn)
    data = b"0123456789"
    first = (isn + 1) % SEQ_MOD
    mid = (isn + 1 + 5) % SEQ_MOD  # past the wrap
    assert mid < first
    assert r.add(mid, data[5:]) == b""
    assert r.add(first, data[:5]) == data
    assert r.next_seq == (isn + 1 + 10) % SEQ_MOD
    assert r.add(first, data[:3]) == b""  # an old retransmission from before the wrap
    assert r.retrans_bytes == 3


def test_window_overflow_declares_gap_and_skips_to_lowest_buffered() -> None:
    """Past the out-of-order window the stream skips to the lowest buffered segment and reports a gap."""
    r = started(window=8)
    assert r.add(ISN + 1, b"ab") == b"ab"
    assert r.add(ISN + 11, b"kl") == b""  # hole at offsets 2..9
    assert r.add(ISN + 15, b"opqrst") == b""  # 8 bytes buffered: at the window, still waiting
    assert not r.gap
    out = r.add(ISN + 13, b"mn")  # 10 bytes buffered: over the window
    assert r.gap and r.gaps == 1
    assert out == b"klmnopqrst"
    assert r.lost_bytes == 8
    assert r.pending_bytes == 0
    assert r.add(ISN + 21, b"u") == b"u"
    assert not r.gap  # the flag describes the last add only


def test_window_overflow_skips_repeatedly_until_within_window() -> None:
    """Several holes are skipped in one call when needed, and each counts as a gap."""
    r = started(window=4)
    assert r.add(ISN + 3, b"cd") == b""
    assert r.add(ISN + 7, b"gh") == b""
    out = r.add(ISN + 11, b"kl")  # 6 buffered > 4: skip to 3 (drains cd), still 4 buffered: stop
    assert r.gap and r.gaps == 1
    assert out == b"cd"
    assert r.pending_bytes == 4


def test_bytes_between_two_holes_are_dropped_not_joined() -> None:
    """When one segment forces two skips, only bytes after the last hole come back; the rest are lost."""
    r = started(window=1)
    assert r.add(ISN + 2, b"b") == b""
    out = r.add(ISN + 4, b"de")  # skip to "b", still over the window, skip to "de"
    assert out == b"de"
    assert r.gap and r.gaps == 2
    assert r.lost_bytes == 3  # "a" and "c" never seen, "b" stranded between them
    assert r.delivered == 5


def test_bytes_before_a_gap_are_never_returned_with_bytes_after_it() -> None:
    """Filling the hole delivers without a gap: a gap only happens on segments beyond the hole."""
    r = started(window=6)
    r.add(ISN + 5, b"efgh")
    out = r.add(ISN + 1, b"abcd")
    assert out == b"abcdefgh" and not r.gap


def test_midstream_start_from_first_data_segment() -> None:
    """Without a SYN, the first data segment starts the stream; earlier bytes are treated as old."""
    r = StreamReassembler()
    assert r.add(5000, b"") == b""  # a pure ACK does not start the stream
    assert not r.started
    assert r.add(5000, b"middle") == b"middle"
    assert r.add(4990, b"0123456789") == b""
    assert r.add(5006, b"-end") == b"-end"


@pytest.mark.parametrize(
    ("steps", "expected_next", "expected_out"),
    [
        ([("syn", 0, b"")], 1, b""),
        ([("syn", 0, b"tfo")], 4, b"tfo"),
        ([("syn", 0, b""), ("data", 1, b"abc"), ("fin", 4, b"")], 5, b"abc"),
        ([("syn", 0, b""), ("fin", 1, b"abc")], 5, b"abc"),
        ([("syn", 0, b""), ("fin", 4, b""), ("data", 1, b"abc")], 5, b"abc"),
        ([("syn", 0, b""), ("fin", 1, b"abc"), ("data", 4, b"late")], 5, b"abc"),
        ([("syn", 0, b""), ("data", 1, b"ab"), ("syn", 0, b"")], 3, b"ab"),
        ([("syn", 0, b""), ("fin", 1, b"ab"), ("fin", 1, b"ab")], 4, b"ab"),
    ],
    ids=[
        "syn-consumes-one",
        "syn-with-data",
        "data-then-bare-fin",
        "fin-with-data",
        "fin-before-data",
        "data-after-fin-ignored",
        "retransmitted-syn",
        "retransmitted-fin",
    ],
)
def test_syn_and_fin_sequence_accounting(
    steps: list[tuple[str, int, bytes]], expected_next: int, expected_out: bytes
) -> None:
    """SYN and FIN each consume one sequence number; bytes past the FIN are not part of the stream."""
    r = StreamReassembler()
    out = b"".join(r.add(ISN + off, data, syn=kind == "syn", fin=kind == "fin") for kind, off, data in steps)
    assert out == expected_out
    assert r.next_seq == ISN + expected_next


def test_late_fin_trims_buffered_bytes_beyond_it() -> None:
    """Buffered bytes that a later FIN places beyond the end of the stream are dropped."""
    r = started()
    assert r.add(ISN + 6, b"zzzz") == b""
    assert r.add(ISN + 1, b"ab", fin=True) == b"ab"  # FIN at offset 2; the rest is bogus
    assert r.pending_bytes == 0
    assert r.finished
    assert r.add(ISN + 3, b"cd") == b""


def test_finished_only_after_bytes_up_to_fin_arrive() -> None:
    """`finished` becomes true only once the bytes before an early FIN are delivered."""
    r = started()
    r.add(ISN + 4, b"de", fin=True)
    assert not r.finished
    assert r.add(ISN + 1, b"abc") == b"abcde"
    assert r.finished


@st.composite
def segmented_streams(draw: st.DrawFn) -> tuple[int, bytes, list[tuple[int, int]]]:
    """A byte stream, an ISN (often near the wrap) and shuffled, possibly duplicated and
    overlapping ranges covering it."""
    data = draw(st.binary(min_size=1, max_size=300))
    isn = draw(st.one_of(st.integers(0, SEQ_MOD - 1), st.integers(SEQ_MOD - 400, SEQ_MOD - 1)))
    cuts = sorted(set(draw(st.lists(st.integers(1, len(data) - 1), max_size=20)))) if len(data) > 1 else []
    bounds = [0, *cuts, len(data)]
    ranges = [(bounds[i], bounds[i + 1]) for i in range(len(bounds) - 1)]
    extra = draw(
        st.lists(
            st.tuples(st.integers(0, len(data) - 1), st.integers(1, 40)).map(
                lambda t: (t[0], min(len(data), t[0] + t[1]))
            ),
            max_size=10,
        )
    )
    dups = draw(st.lists(st.sampled_from(ranges), max_size=5))
    ranges = draw(st.permutations(ranges + extra + dups))
    return isn, data, ranges


@settings(max_examples=200, deadline=None)
@given(segmented_streams())
def test_any_order_with_duplicates_reassembles_original(
    case: tuple[int, bytes, list[tuple[int, int]]],
) -> None:
    """Any ordering, duplication or overlap of a stream's segments reassembles to the original bytes."""
    isn, data, ranges = case
    r = StreamReassembler(window=1 << 16)
    r.syn(isn)
    out = b"".join(r.add((isn + 1 + s) % SEQ_MOD, data[s:e]) for s, e in ranges)
    assert out == data
    assert not r.overlap_conflict
    assert r.gaps == 0
    assert r.pending_bytes == 0
    assert r.next_seq == (isn + 1 + len(data)) % SEQ_MOD


@settings(max_examples=200, deadline=None)
@given(segmented_streams(), st.integers(1, 64))
def test_small_window_stays_bounded_and_delivers_true_bytes(
    case: tuple[int, bytes, list[tuple[int, int]]], window: int
) -> None:
    """With a small window, buffering stays within it and every delivered byte is the original one."""
    isn, data, ranges = case
    r = StreamReassembler(window=window)
    r.syn(isn)
    for s, e in ranges:
        out = r.add((isn + 1 + s) % SEQ_MOD, data[s:e])
        assert r.pending_bytes <= window
        assert out == data[r.delivered - len(out) : r.delivered]
    assert not r.overlap_conflict


def _holey_offsets(order: str, n: int) -> list[int]:
    """Stream offsets of `n` one-byte segments, each after its own one-byte hole, in `order`."""
    offsets = [i * 2 + 10 for i in range(n, 0, -1)]
    if order == "shuffled":
        random.Random(3).shuffle(offsets)
    elif order == "ascending":
        offsets.reverse()
    return offsets


@pytest.mark.parametrize("order", ["descending", "shuffled"])
def test_many_tiny_segments_behind_holes_are_fast_and_bounded(order: str) -> None:
    """200,000 one-byte segments, each behind a hole, finish fast and never buffer more than the piece cap."""
    cap = DEFAULT_LIMITS.reasm_max_segments
    r = StreamReassembler()
    r.start_at(0)
    started_at = time.perf_counter()
    for off in _holey_offsets(order, 200_000):
        r.add(off, b"x")
        assert r.pending_segments <= cap
    elapsed = time.perf_counter() - started_at
    assert elapsed < 2.0, f"{elapsed:.1f} s"  # about 15 s when every insert shifted all the pieces
    assert r.pending_bytes <= cap
    assert r.gaps >= 1


def test_many_tiny_segments_behind_holes_hold_little_memory() -> None:
    """Under the descending one-byte attack the reassembler's memory stays near the piece cap's worth."""
    tracemalloc.start()
    try:
        r = StreamReassembler()
        r.start_at(0)
        for off in _holey_offsets("descending", 20_000):
            r.add(off, b"x")
        current, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert current < 512 * 1024  # about 1 MB per 20,000 pieces without the cap


@pytest.mark.parametrize(
    ("offsets", "cap", "outs", "gaps"),
    [
        ([2, 4, 6], 3, [b"", b"", b""], 0),
        ([2, 4, 6, 8], 3, [b"", b"", b"", b"c"], 1),
        ([8, 6, 4, 2], 3, [b"", b"", b"", b"c"], 1),
        ([2, 4, 6, 8, 10], 3, [b"", b"", b"", b"c", b"e"], 2),
        ([2, 3, 4, 5, 6], 1, [b"", b"", b"", b"", b""], 0),
    ],
    ids=["at-cap", "one-past-cap", "descending-past-cap", "two-past-cap", "touching-pieces-merge"],
)
def test_piece_cap_skips_to_lowest_piece(offsets: list[int], cap: int, outs: list[bytes], gaps: int) -> None:
    """Past `max_segments` buffered pieces the stream skips its first hole and reports a gap, as for the window."""
    data = b"abcdefghijkl"
    r = StreamReassembler(max_segments=cap)
    r.syn(ISN)
    got = [r.add(ISN + 1 + off, data[off : off + 1]) for off in offsets]
    assert got == outs
    assert r.gaps == gaps
    assert r.pending_segments <= cap


def test_touching_segments_after_a_hole_do_not_trip_the_piece_cap() -> None:
    """Thousands of small in-order segments behind one hole are joined, so only the byte window limits them."""
    data = bytes(random.Random(9).randrange(256) for _ in range(50_000))
    r = StreamReassembler(window=1 << 20, max_segments=16)
    r.syn(ISN)
    for off in range(10, len(data), 10):
        assert r.add(ISN + 1 + off, data[off : off + 10]) == b""
    assert r.gaps == 0
    assert r.pending_segments <= len(data) // MERGE_MAX + 2
    assert r.add(ISN + 1, data[:10]) == data
