"""Property tests: parsers and the session survive any bytes, stay bounded and do not depend on splits.

Hypothesis feeds random bytes and mutated or truncated fixtures to every parser (only
ProtocolError may come out), checks that memory held stays within a bound set by the limits
whatever the input size, that any split of a transcript gives the events of the whole, that
detectors never take back a NO and never say NO to a prefix of what they match, and that the
session never raises. The deadline turns a hang or a quadratic blow-up into a failure.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from datetime import timedelta
from enum import Enum
from itertools import pairwise

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from podwall.core.errors import ProtocolError
from podwall.core.limits import Limits
from podwall.core.types import PROTO_TCP, PROTO_UDP, Direction
from podwall.dpi import registry
from podwall.dpi.base import DetectContext, Detection, Parser
from podwall.dpi.protocols.dns import DnsParser
from podwall.dpi.protocols.http1 import HttpParser
from podwall.dpi.protocols.redis import RedisParser
from podwall.dpi.protocols.tls import TlsParser
from podwall.dpi.session import MAX_EVENTS, UNKNOWN, DpiSession

from .fixtures import Chunks, feed_all, load_chunks, summary
from .fixtures import handmade as hm

C2S, S2C = Direction.C2S, Direction.S2C
SMALL = Limits(parser_buffer=512, dpi_buffer=1024, dpi_max_packets=8)
TCP_CTX = DetectContext(PROTO_TCP, 40000, 80)
UDP_CTX = DetectContext(PROTO_UDP, 40000, 53)

PROPS = settings(max_examples=150, deadline=timedelta(milliseconds=1500), suppress_health_check=[HealthCheck.too_slow])

PARSERS: dict[str, Callable[[Limits], Parser]] = {
    "http": lambda limits: HttpParser(limits),
    "tls": lambda limits: TlsParser(limits),
    "dns-udp": lambda limits: DnsParser(UDP_CTX, limits),
    "dns-tcp": lambda limits: DnsParser(DetectContext(PROTO_TCP, 40000, 53), limits),
    "redis": lambda limits: RedisParser(limits),
}


def _tcp_dns(*messages: bytes) -> bytes:
    return b"".join(len(m).to_bytes(2, "big") + m for m in messages)


# Transcripts per parser: corpus flows (the long ones cut short) and hand-built ones.
TRANSCRIPTS: dict[str, list[Chunks]] = {
    "http": [
        load_chunks("http_google"),
        load_chunks("http_lines_split"),
        load_chunks("http_sql_injection"),
        *[chunks for _, chunks, _ in hm.HTTP_TRANSCRIPTS],
    ],
    "tls": [
        load_chunks("tls_curl")[:3],
        load_chunks("tls_ech")[:2],
        [
            (C2S, hm.tls_records(hm.client_hello(), size=50)),
            (S2C, hm.tls_records(hm.server_hello(alpn=b"h2"))),
        ],
        [(C2S, hm.sslv2_client_hello())],
    ],
    "dns-udp": [
        load_chunks("dns_example"),
        load_chunks("dns_whatsapp"),
        [(C2S, hm.dns_query()), (S2C, hm.dns_response_all_types()), (S2C, hm.dns_nxdomain_with_soa())],
        [(S2C, hm.mdns_announcement())],
    ],
    "dns-tcp": [
        [
            (C2S, _tcp_dns(hm.dns_query(), hm.dns_query("x.example"))),
            (S2C, _tcp_dns(hm.dns_response_all_types())),
        ]
    ],
    "redis": [
        load_chunks("resp")[:1] + load_chunks("resp")[-6:],
        [
            (C2S, hm.resp_command(b"SET", b"k", b"v") + b"PING\r\n"),
            *[(S2C, d) for _, d, _, _ in hm.RESP3_REPLIES],
        ],
    ],
}


def _held_bytes(obj: object, seen: set[int] | None = None) -> int:
    """Bytes held by an object graph (bytes/bytearray reachable through attributes and containers)."""
    if isinstance(obj, bytes | bytearray):
        return len(obj)
    if obj is None or isinstance(obj, str | int | float | Enum):
        return 0
    seen = set() if seen is None else seen
    if id(obj) in seen:
        return 0
    seen.add(id(obj))
    if isinstance(obj, dict):
        return sum(_held_bytes(k, seen) + _held_bytes(v, seen) for k, v in obj.items())
    if isinstance(obj, list | tuple | deque | set | frozenset):
        return sum(_held_bytes(item, seen) for item in obj)
    values = list(getattr(obj, "__dict__", {}).values())
    for cls in type(obj).__mro__:
        for slot in getattr(cls, "__slots__", ()):
            if hasattr(obj, slot):
                values.append(getattr(obj, slot))
    return sum(_held_bytes(v, seen) for v in values)


def _feed_until_error(parser: Parser, chunks: Chunks) -> None:
    """Feed every chunk; a ProtocolError ends the flow (the parser must not be fed again)."""
    try:
        for direction, data in chunks:
            parser.feed(direction, data)
    except ProtocolError:
        pass


directions = st.sampled_from([C2S, S2C])
random_chunks = st.lists(st.tuples(directions, st.binary(max_size=400)), max_size=12)


@st.composite
def mutated_transcript(draw: st.DrawFn, name: str) -> Chunks:
    """A transcript of `name` with a few bytes flipped, dropped or inserted, possibly truncated."""
    chunks = list(draw(st.sampled_from(TRANSCRIPTS[name])))
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
        index = min(index, len(chunks) - 1)
    return chunks


@st.composite
def resplit(draw: st.DrawFn, chunks: Chunks) -> Chunks:
    """The same bytes in the same order, each chunk cut at random points."""
    out: Chunks = []
    for direction, data in chunks:
        cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=6)))
        edges = [0, *cuts, len(data)]
        out.extend((direction, data[a:b]) for a, b in pairwise(edges) if b > a)
    return out


# -- parsers ----------------------------------------------------------------------------


@PROPS
@given(name=st.sampled_from(sorted(PARSERS)), chunks=random_chunks)
def test_random_bytes_raise_only_protocol_error(name: str, chunks: Chunks) -> None:
    """Any bytes in any direction: a parser returns events or raises ProtocolError, nothing else."""
    _feed_until_error(PARSERS[name](SMALL), chunks)


@PROPS
@given(data=st.data(), name=st.sampled_from(sorted(PARSERS)))
def test_mutated_fixtures_raise_only_protocol_error(data: st.DataObject, name: str) -> None:
    """Fixtures with bytes flipped, dropped, inserted or cut off never make a parser fail otherwise."""
    chunks = data.draw(mutated_transcript(name))
    _feed_until_error(PARSERS[name](Limits()), chunks)


@PROPS
@given(
    name=st.sampled_from(sorted(PARSERS)),
    seed=st.binary(min_size=1, max_size=300),
    repeat=st.integers(1, 200),
)
def test_held_memory_is_bounded(name: str, seed: bytes, repeat: int) -> None:
    """However much is fed, what a parser holds stays within a bound set by Limits.parser_buffer."""
    parser = PARSERS[name](SMALL)
    bound = 8 * SMALL.parser_buffer + 8 * 1024  # buffers per direction plus the fixed event captures
    try:
        for i in range(repeat):
            parser.feed(C2S if i % 3 else S2C, seed)
            assert _held_bytes(parser) <= bound
    except ProtocolError:
        pass


@PROPS
@given(data=st.data(), name=st.sampled_from(["http", "tls", "dns-tcp", "redis"]))
def test_any_split_gives_the_same_events(data: st.DataObject, name: str) -> None:
    """A stream cut at arbitrary points yields the same events as fed whole."""
    chunks = data.draw(st.sampled_from(TRANSCRIPTS[name]))
    whole = feed_all(PARSERS[name](Limits()), chunks)
    split = feed_all(PARSERS[name](Limits()), data.draw(resplit(chunks)))
    assert summary(split) == summary(whole)


# -- detectors --------------------------------------------------------------------------

contexts = st.builds(
    DetectContext,
    st.sampled_from([PROTO_TCP, PROTO_UDP]),
    st.sampled_from([1024, 5353, 40000]),
    st.sampled_from([53, 80, 443, 5353, 6379, 8080]),
)


@PROPS
@given(ctx=contexts, direction=directions, data=st.binary(max_size=600), more=st.binary(max_size=200))
def test_detectors_never_raise_and_no_is_final(
    ctx: DetectContext, direction: Direction, data: bytes, more: bytes
) -> None:
    """Detectors answer any bytes; on a stream, a NO stays NO however many bytes follow."""
    for det in registry.detectors():
        if ctx.proto not in det.transports:
            continue
        answer = det.detect(direction, data, ctx)
        assert isinstance(answer, Detection)
        if ctx.proto == PROTO_TCP and answer is Detection.NO:
            assert det.detect(direction, data + more, ctx) is Detection.NO


POSITIVES: list[tuple[str, Direction, bytes]] = [
    ("http", C2S, hm.HTTP_GET),
    ("http", C2S, load_chunks("http_manipulated")[0][1]),
    ("http", S2C, hm.HTTP_OK),
    ("tls", C2S, load_chunks("tls_curl")[0][1]),
    ("tls", C2S, hm.sslv2_client_hello()),
    ("tls", S2C, load_chunks("tls_ech")[1][1]),
    ("dns", C2S, _tcp_dns(hm.dns_query())),
    ("redis", C2S, load_chunks("resp")[0][1]),
    ("redis", C2S, b"PING\r\n"),
]


@PROPS
@given(sample=st.sampled_from(POSITIVES), cut=st.integers(1, 2000))
def test_prefix_of_a_match_is_never_no(sample: tuple[str, Direction, bytes], cut: int) -> None:
    """A detector never rules out a prefix of bytes it would match (segments arrive cut anywhere)."""
    name, direction, data = sample
    ctx = DetectContext(PROTO_TCP, 40000, 6379)
    detector = next(d for d in registry.detectors() if d.name == name)
    assert detector.detect(direction, data, ctx) is Detection.MATCH
    assert detector.detect(direction, data[: min(cut, len(data))], ctx) is not Detection.NO


# -- session ----------------------------------------------------------------------------

actions = st.lists(
    st.one_of(
        st.tuples(st.just("data"), directions, st.binary(max_size=300)),
        st.tuples(st.just("gap"), directions, st.just(b"")),
    ),
    max_size=30,
)


def _check_invariants(session: DpiSession) -> None:
    names = {*registry.detector_names(), UNKNOWN}
    assert session.app is None or session.app in names
    assert len(session.events) <= MAX_EVENTS
    assert session.event_count >= len(session.events)
    assert not session.done or session.app is not None


@PROPS
@given(ctx=contexts, steps=actions, limits=st.sampled_from([SMALL, Limits()]))
def test_session_never_raises(ctx: DetectContext, steps: list[tuple[str, Direction, bytes]], limits: Limits) -> None:
    """Whatever arrives (bytes, gaps, in any order), the session never raises and keeps its invariants."""
    session = DpiSession(ctx, limits)
    feed = session.on_stream if ctx.proto == PROTO_TCP else session.on_datagram
    for kind, direction, data in steps:
        if kind == "gap":
            session.on_gap(direction)
        else:
            feed(direction, data)
        _check_invariants(session)
    session.finish()
    _check_invariants(session)
    assert session.done and session.app is not None


@PROPS
@given(data=st.data(), name=st.sampled_from(sorted(TRANSCRIPTS)))
def test_session_on_mutated_fixtures(data: st.DataObject, name: str) -> None:
    """Mutated real traffic through the whole session: no exception, invariants hold, errors are messages."""
    chunks = data.draw(mutated_transcript(name))
    ctx = DetectContext(PROTO_UDP if name == "dns-udp" else PROTO_TCP, 40000, 53)
    session = DpiSession(ctx)
    feed = session.on_stream if ctx.proto == PROTO_TCP else session.on_datagram
    for direction, chunk in data.draw(resplit(chunks)):
        feed(direction, chunk)
        _check_invariants(session)
    session.finish()
    assert session.error is None or "internal error" not in session.error
