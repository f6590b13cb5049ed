"""Tests for IP fragment reassembly: ordering, duplicates, overlaps, expiry and caps."""

from __future__ import annotations

import random
import tracemalloc
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from podwall.core.limits import Limits
from podwall.datapath.fragments import MAX_DATAGRAM, PIECE_COST, FragmentError, FragmentReassembler

KEY = (4, b"\x0a\x00\x00\x01", b"\x0a\x00\x00\x02", 7, 17)
DATA = bytes(range(256)) * 3  # 768 bytes


def _pieces(data: bytes, size: int) -> list[tuple[int, bool, bytes]]:
    """Split data into (offset, more, bytes) fragments of `size` bytes."""
    out = []
    for off in range(0, len(data), size):
        chunk = data[off : off + size]
        out.append((off, off + size < len(data), chunk))
    return out


def _feed(
    reasm: FragmentReassembler, pieces: list[tuple[int, bool, bytes]], ts: float = 1.0
) -> list[tuple[bytes, Any] | None]:
    results: list[tuple[bytes, Any] | None] = []
    for off, more, chunk in pieces:
        results.append(reasm.add(KEY, off, more, chunk, ts, info=("first",) if off == 0 else None))
    return results


@pytest.mark.parametrize(
    "order",
    ["in-order", "reversed", "shuffled", "last-first"],
)
def test_reassembles_in_any_order(order: str) -> None:
    """The datagram completes exactly on its last missing fragment, whatever the arrival order."""
    pieces = _pieces(DATA, 104)
    if order == "reversed":
        pieces.reverse()
    elif order == "shuffled":
        random.Random(5).shuffle(pieces)
    elif order == "last-first":
        pieces = pieces[-1:] + pieces[:-1]
    reasm = FragmentReassembler()
    results = _feed(reasm, pieces)
    assert results[:-1] == [None] * (len(pieces) - 1)
    assert results[-1] == (DATA, ("first",))
    assert len(reasm) == 0
    assert reasm.stats["reassembled"] == 1


def test_duplicates_are_counted_and_harmless() -> None:
    """Repeated identical fragments change nothing and are counted as duplicates, not overlaps."""
    pieces = _pieces(DATA, 200)
    reasm = FragmentReassembler()
    results = _feed(reasm, [pieces[0], pieces[0], pieces[1], pieces[1], pieces[2], pieces[3]])
    assert results[-1] == (DATA, ("first",))
    assert reasm.stats["fragment_duplicate"] == 2
    assert reasm.stats["fragment_overlap"] == 0


def test_overlap_with_different_bytes_first_data_wins() -> None:
    """Where overlapping fragments disagree, the bytes seen first are kept and the overlap is counted."""
    reasm = FragmentReassembler()
    assert reasm.add(KEY, 0, True, b"A" * 16, 1.0) is None
    assert reasm.add(KEY, 8, True, b"B" * 16, 1.0) is None  # bytes 8..16 conflict, 16..24 new
    done = reasm.add(KEY, 24, False, b"C" * 8, 1.0)
    assert done is not None
    assert done[0] == b"A" * 16 + b"B" * 8 + b"C" * 8
    assert reasm.stats["fragment_overlap"] == 1


def test_overlap_filling_gap_between_held_ranges() -> None:
    """A fragment spanning a gap between two held ranges fills only the gap."""
    reasm = FragmentReassembler()
    reasm.add(KEY, 0, True, b"a" * 8, 1.0)
    reasm.add(KEY, 16, False, b"c" * 8, 1.0)
    done = reasm.add(KEY, 0, True, b"x" * 24, 1.0)
    assert done is not None
    assert done[0] == b"a" * 8 + b"x" * 8 + b"c" * 8
    assert reasm.stats["fragment_overlap"] == 1


def test_incomplete_datagram_expires_by_packet_time() -> None:
    """A datagram missing a fragment is dropped once packet time passes the fragment timeout."""
    reasm = FragmentReassembler(Limits(fragment_timeout=30.0))
    pieces = _pieces(DATA, 256)
    assert reasm.add(KEY, *pieces[0][:3], 100.0) is None
    other = (4, b"x" * 4, b"y" * 4, 1, 6)
    assert reasm.add(other, 0, True, b"z" * 8, 129.0) is None
    assert len(reasm) == 2
    # 131 s: the first datagram (started at 100) is older than 30 s, the other is not.
    assert reasm.add(other, 8, True, b"z" * 8, 131.0) is None
    assert len(reasm) == 1
    assert reasm.stats["fragment_expired"] == 1
    # The rest of the expired datagram cannot complete it any more.
    assert reasm.add(KEY, *pieces[1][:3], 131.0) is None
    assert reasm.add(KEY, *pieces[2][:3], 131.0) is None


def test_number_of_datagrams_is_capped() -> None:
    """Past max_fragments datagrams held, the oldest one is evicted."""
    reasm = FragmentReassembler(Limits(max_fragments=3))
    for ident in range(5):
        reasm.add((4, b"a" * 4, b"b" * 4, ident, 17), 0, True, b"q" * 8, 1.0)
    assert len(reasm) == 3
    assert reasm.stats["fragment_evicted"] == 2
    # The evicted datagram 0 restarts from scratch: its tail alone does not complete it.
    assert reasm.add((4, b"a" * 4, b"b" * 4, 0, 17), 8, False, b"q" * 8, 1.0) is None


@pytest.mark.parametrize(
    ("first", "second", "needle"),
    [
        ((65528, False, b"x" * 16), None, "datagram limit"),
        ((8, False, b"x" * 8), (16, False, b"y" * 16), "disagree"),
        ((8, False, b"x" * 8), (16, True, b"y" * 8), "after the datagram's end"),
        ((16, True, b"y" * 16), (0, False, b"x" * 8), "was seen"),
    ],
    ids=["ping-of-death", "two-lengths", "beyond-end", "last-before-data"],
)
def test_impossible_fragments_drop_the_datagram(
    first: tuple[int, bool, bytes], second: tuple[int, bool, bytes] | None, needle: str
) -> None:
    """Fragments that no valid datagram can contain raise FragmentError and forget the datagram."""
    reasm = FragmentReassembler()
    with pytest.raises(FragmentError, match=needle):
        reasm.add(KEY, *first, 1.0)
        if second is not None:
            reasm.add(KEY, *second, 1.0)
    assert len(reasm) == 0
    assert reasm.stats["fragment_dropped"] == 1


def test_datagram_limit_constant() -> None:
    """A datagram ending exactly at the limit is accepted."""
    reasm = FragmentReassembler()
    done = reasm.add(KEY, MAX_DATAGRAM - 7, False, b"z" * 7, 1.0)
    assert done is None  # earlier bytes still missing
    assert len(reasm) == 1


def test_flush_forgets_everything() -> None:
    """flush() drops every incomplete datagram and returns how many there were."""
    reasm = FragmentReassembler()
    reasm.add(KEY, 0, True, b"a" * 8, 1.0)
    assert reasm.flush() == 1
    assert len(reasm) == 0


def test_shared_stats_dict() -> None:
    """Counters land in a stats dict passed in by the caller."""
    stats: dict[str, int] = {"frames": 3}
    reasm = FragmentReassembler(stats=stats)
    reasm.add(KEY, 0, True, b"a" * 8, 1.0)
    assert stats["fragments"] == 1
    assert stats["frames"] == 3


@settings(max_examples=200, deadline=None)
@given(
    payload=st.binary(min_size=1, max_size=2000),
    size=st.integers(1, 300).map(lambda n: n * 8),
    seed=st.integers(0, 2**32),
    dups=st.integers(0, 5),
)
def test_property_any_permutation_with_duplicates(payload: bytes, size: int, seed: int, dups: int) -> None:
    """Any arrival order with duplicated fragments reassembles the original payload exactly once."""
    rng = random.Random(seed)
    pieces = _pieces(payload, size)
    pieces += [rng.choice(pieces) for _ in range(dups)]
    rng.shuffle(pieces)
    reasm = FragmentReassembler()
    results = [r for r in _feed(reasm, pieces) if r is not None]
    assert results[0] == (payload, ("first",))
    # Duplicates arriving after completion start a new, incomplete datagram; never a second result.
    assert len(results) <= 1 + dups


def test_tiny_fragment_at_high_offset_holds_only_its_bytes() -> None:
    """Each 8-byte fragment at offset 65520 costs its own bytes, not a buffer up to the offset."""
    n = 2000
    tracemalloc.start()
    try:
        reasm = FragmentReassembler(Limits(max_fragments=n))
        for i in range(n):
            assert reasm.add((4, b"\x0a\0\0\1", b"\x0a\0\0\2", i, 17), 65520, True, b"A" * 8, 0.0) is None
        current, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(reasm) == n
    assert reasm.held_bytes == n * (8 + PIECE_COST)
    assert current < 4 * 1024 * 1024  # about 132 MB when every train padded up to its offset


@pytest.mark.parametrize(
    ("budget", "datagrams", "size"),
    [(10_000, 50, 1000), (64 * 1024, 200, 1480), (4 * 1024 * 1024, 8192, 8)],
    ids=["small-budget", "mtu-sized", "default-budget-tiny-pieces"],
)
def test_byte_budget_bounds_held_fragments(budget: int, datagrams: int, size: int) -> None:
    """Held bytes never pass `fragment_bytes`; the oldest datagrams go first and are counted as evicted."""
    reasm = FragmentReassembler(Limits(fragment_bytes=budget, max_fragments=100_000))
    for i in range(datagrams):
        key = (4, b"\x0a\0\0\1", b"\x0a\0\0\2", i, 17)
        reasm.add(key, 65520 - size, True, bytes([i % 251]) * size, 0.0)
        assert reasm.held_bytes <= budget
    fits = budget // (size + PIECE_COST)
    assert len(reasm) == min(datagrams, fits)
    assert reasm.stats["fragment_evicted"] == datagrams - len(reasm)
    # The newest datagram survives eviction and still completes.
    last = (4, b"\x0a\0\0\1", b"\x0a\0\0\2", datagrams - 1, 17)
    head = reasm.add(last, 0, True, b"h" * (65520 - size), 0.0)
    done = reasm.add(last, 65520, False, b"t" * 8, 0.0) if head is None else head
    if budget >= 65528 + 3 * PIECE_COST:
        assert done is not None and len(done[0]) == 65528
    assert reasm.held_bytes <= budget


def test_held_bytes_return_to_zero_on_completion_expiry_and_errors() -> None:
    """Completed, expired, dropped and flushed datagrams give their bytes back to the budget."""
    reasm = FragmentReassembler(Limits(fragment_timeout=5.0))
    reasm.add(KEY, 0, True, DATA[:256], 1.0)
    assert reasm.held_bytes == 256 + PIECE_COST
    assert reasm.add(KEY, 256, False, DATA[256:], 1.0) is not None
    assert reasm.held_bytes == 0
    reasm.add(KEY, 0, True, DATA[:256], 1.0)
    reasm.expire(10.0)
    assert reasm.held_bytes == 0 and len(reasm) == 0
    reasm.add(KEY, 0, True, DATA[:256], 20.0)
    with pytest.raises(FragmentError):
        reasm.add(KEY, 65000, True, DATA, 20.0)
    assert reasm.held_bytes == 0
    reasm.add(KEY, 0, True, DATA[:256], 20.0)
    reasm.flush()
    assert reasm.held_bytes == 0
