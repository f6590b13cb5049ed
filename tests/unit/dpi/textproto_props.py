"""Hypothesis property tests shared by the SSH, MQTT, NATS, SMTP, FTP, POP3 and IMAP test modules.

`property_tests` builds, for one parser and its transcripts, the tests every protocol must
pass: random bytes and mutated transcripts raise only ProtocolError, held memory stays
bounded by the limits, any split gives the events of the whole, and the detector never says
NO to a prefix of bytes it matches nor takes back a NO.
"""

from __future__ import annotations

from collections.abc import Callable

from hypothesis import given
from hypothesis import strategies as st

from podwall.core.errors import ProtocolError
from podwall.core.limits import Limits
from podwall.core.types import PROTO_TCP, Direction
from podwall.dpi.base import DetectContext, Detection, Detector, Parser

from .fixtures import Chunks, feed_all, summary
from .test_properties import PROPS, SMALL, _feed_until_error, _held_bytes, random_chunks, resplit

C2S, S2C = Direction.C2S, Direction.S2C
TestFn = Callable[..., None]


@st.composite
def mutated(draw: st.DrawFn, transcripts: list[Chunks]) -> Chunks:
    """One of `transcripts` with a few bytes flipped, dropped or inserted, possibly cut short."""
    chunks = list(draw(st.sampled_from(transcripts)))
    for _ in range(draw(st.integers(1, 4))):
        index = draw(st.integers(0, len(chunks) - 1))
        direction, data = chunks[index]
        if not data:
            continue
        at = draw(st.integers(0, len(data) - 1))
        op = draw(st.sampled_from(["flip", "drop", "insert", "truncate"]))
        if op == "flip":
            data = data[:at] + bytes([draw(st.integers(0, 255))]) + data[at + 1 :]
        elif op == "drop":
            data = data[:at] + data[at + draw(st.integers(1, 16)) :]
        elif op == "insert":
            data = data[:at] + draw(st.binary(min_size=1, max_size=16)) + data[at:]
        else:
            data = data[:at]
            chunks = chunks[: index + 1]
        chunks[index] = (direction, data)
    return chunks


def property_tests(
    factory: Callable[[Limits], Parser],
    transcripts: list[Chunks],
    detector: Detector,
    positives: list[tuple[Direction, bytes]],
) -> tuple[TestFn, TestFn, TestFn, TestFn, TestFn, TestFn]:
    """The six property tests for one protocol, to be bound to `test_*` names in its module."""

    @PROPS
    @given(chunks=random_chunks)
    def random_bytes(chunks: Chunks) -> None:
        """Any bytes in any direction: the parser returns events or raises ProtocolError, nothing else."""
        _feed_until_error(factory(SMALL), chunks)

    @PROPS
    @given(data=st.data())
    def mutated_transcripts(data: st.DataObject) -> None:
        """Transcripts with bytes flipped, dropped, inserted or cut off never make the parser fail otherwise."""
        _feed_until_error(factory(Limits()), data.draw(mutated(transcripts)))

    @PROPS
    @given(seed=st.binary(min_size=1, max_size=300), repeat=st.integers(1, 200))
    def bounded(seed: bytes, repeat: int) -> None:
        """However much is fed, what the parser holds stays within a bound set by Limits.parser_buffer."""
        parser = factory(SMALL)
        try:
            for i in range(repeat):
                parser.feed(C2S if i % 3 else S2C, seed)
                assert _held_bytes(parser) <= 8 * SMALL.parser_buffer + 8 * 1024
        except ProtocolError:
            pass

    @PROPS
    @given(data=st.data())
    def any_split(data: st.DataObject) -> None:
        """A transcript cut at arbitrary points yields the same events as fed whole."""
        chunks = data.draw(st.sampled_from(transcripts))
        whole = feed_all(factory(Limits()), chunks)
        assert summary(feed_all(factory(Limits()), data.draw(resplit(chunks)))) == summary(whole)

    ctx = DetectContext(PROTO_TCP, 40000, 9999)

    @PROPS
    @given(sample=st.sampled_from(positives), cut=st.integers(1, 400))
    def prefix_never_no(sample: tuple[Direction, bytes], cut: int) -> None:
        """The detector never rules out a prefix of bytes it matches (segments arrive cut anywhere)."""
        direction, data = sample
        assert detector.detect(direction, data, ctx) is Detection.MATCH
        assert detector.detect(direction, data[: min(cut, len(data))], ctx) is not Detection.NO

    @PROPS
    @given(direction=st.sampled_from([C2S, S2C]), data=st.binary(max_size=600), more=st.binary(max_size=200))
    def no_is_final(direction: Direction, data: bytes, more: bytes) -> None:
        """The detector answers any bytes; a NO stays NO however many bytes follow."""
        if detector.detect(direction, data, ctx) is Detection.NO:
            assert detector.detect(direction, data + more, ctx) is Detection.NO

    return random_bytes, mutated_transcripts, bounded, any_split, prefix_never_no, no_is_final
