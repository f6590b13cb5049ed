"""Hypothesis property tests shared by the Cassandra, PostgreSQL and MySQL test modules.

`property_tests` builds, for one length-framed parser and its transcripts, the four tests each
of these protocols must pass: random bytes and fixtures with one byte changed or cut short raise
only ProtocolError, the bytes the parser holds stay within one parser buffer per direction, and
the detector never says NO to a prefix of a matched message nor takes back a NO.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import TypeVar

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from podwall.core.errors import ProtocolError
from podwall.core.limits import Limits
from podwall.core.types import Direction
from podwall.dpi.base import DetectContext, Detection, Detector, Parser

from .fixtures import Chunks
from .fixtures.brokers_checks import feed_until_error

C2S, S2C = Direction.C2S, Direction.S2C
PROPS = settings(max_examples=100, deadline=timedelta(milliseconds=1500), suppress_health_check=[HealthCheck.too_slow])
BUFFER = 512
TestFn = Callable[..., None]
P = TypeVar("P", bound=Parser)


def property_tests(
    factory: Callable[[Limits], P],
    transcripts: list[Chunks],
    held: Callable[[P], tuple[int, int]],
    detector: Callable[[], Detector],
    samples: list[tuple[Direction, bytes]],
    ctx: DetectContext,
) -> tuple[TestFn, TestFn, TestFn, TestFn]:
    """The four property tests for one protocol, to be bound to `test_*` names in its module.

    `held` gives the bytes the parser buffers for each direction; `samples` are messages the
    detector matches, each with the direction it is sent in.
    """

    @PROPS
    @given(chunks=st.lists(st.tuples(st.sampled_from([C2S, S2C]), st.binary(max_size=300)), max_size=10))
    def random_bytes(chunks: Chunks) -> None:
        """Random bytes in either direction give events or a ProtocolError, nothing else."""
        feed_until_error(factory(Limits(parser_buffer=BUFFER)), chunks)

    @PROPS
    @given(data=st.data())
    def mutated_fixtures(data: st.DataObject) -> None:
        """Fixtures with a byte changed or cut short only ever raise ProtocolError."""
        chunks = list(data.draw(st.sampled_from(transcripts)))
        i = data.draw(st.integers(0, len(chunks) - 1))
        direction, blob = chunks[i]
        at = data.draw(st.integers(0, len(blob) - 1))
        if data.draw(st.booleans()):
            chunks[i] = (direction, blob[:at] + bytes([data.draw(st.integers(0, 255))]) + blob[at + 1 :])
        else:
            chunks = [*chunks[:i], (direction, blob[:at])]
        feed_until_error(factory(Limits()), chunks)

    @PROPS
    @given(seed=st.binary(min_size=1, max_size=200), repeat=st.integers(1, 100))
    def bounded_memory(seed: bytes, repeat: int) -> None:
        """Whatever is fed, the parser holds at most a parser buffer per direction."""
        parser = factory(Limits(parser_buffer=BUFFER))
        try:
            for i in range(repeat):
                parser.feed(C2S if i % 3 else S2C, seed)
                first, second = held(parser)
                assert first <= BUFFER and second <= BUFFER
        except ProtocolError:
            pass

    @PROPS
    @given(data=st.data())
    def detector_prefix_and_no_is_final(data: st.DataObject) -> None:
        """A prefix of a matched message is never NO, and a NO on random bytes stays NO with more bytes."""
        direction, sample = data.draw(st.sampled_from(samples))
        cut = data.draw(st.integers(1, len(sample)))
        assert detector().detect(direction, sample[:cut], ctx) is not Detection.NO
        noise = data.draw(st.binary(max_size=100))
        more = data.draw(st.binary(max_size=100))
        if detector().detect(direction, noise, ctx) is Detection.NO:
            assert detector().detect(direction, noise + more, ctx) is Detection.NO

    return random_bytes, mutated_fixtures, bounded_memory, detector_prefix_and_no_is_final
