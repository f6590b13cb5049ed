"""The DPI session: detection by payload, replay, give-up rules, done semantics, gaps, robustness."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import ClassVar

import pytest

from podwall.core.errors import ProtocolError
from podwall.core.limits import Limits
from podwall.core.types import PROTO_ICMP, PROTO_TCP, PROTO_UDP, Direction
from podwall.dpi import registry
from podwall.dpi.base import DetectContext, Detection, Detector, L7Event
from podwall.dpi.session import MAX_EVENTS, UNKNOWN, DpiSession

from .fixtures import CORPUS, load_chunks
from .fixtures import handmade as hm

C2S, S2C = Direction.C2S, Direction.S2C


def tcp(server_port: int) -> DetectContext:
    return DetectContext(PROTO_TCP, 40000, server_port)


def udp(server_port: int, client_port: int = 40000) -> DetectContext:
    return DetectContext(PROTO_UDP, client_port, server_port)


# -- test doubles -----------------------------------------------------------------------


@dataclass
class RecordingParser:
    """Remembers what it was fed; emits one event per feed; can be told to fail or finish."""

    fed: list[tuple[Direction, bytes]] = field(default_factory=list)
    fail_with: Exception | None = None
    finish_after: int | None = None
    finished: bool = False

    def feed(self, direction: Direction, data: bytes) -> list[L7Event]:
        if self.fail_with is not None:
            raise self.fail_with
        self.fed.append((direction, data))
        if self.finish_after is not None and len(self.fed) >= self.finish_after:
            self.finished = True
        return [L7Event("fake", "chunk", direction, {"data": data})]

    def server_name(self) -> str | None:
        return "fake.example"


class FakeDetector:
    """Answers from a script keyed by (direction, buffered bytes); NEED_MORE otherwise."""

    name: ClassVar[str] = "fake"
    transports: ClassVar[frozenset[int]] = frozenset({PROTO_TCP, PROTO_UDP})
    ports: ClassVar[frozenset[int]] = frozenset()

    def __init__(self, match_on: bytes = b"MATCH", parser: RecordingParser | None = None) -> None:
        self.match_on = match_on
        self.seen: list[tuple[Direction, bytes]] = []
        self.made = parser or RecordingParser()

    def detect(self, direction: Direction, data: bytes, ctx: DetectContext) -> Detection:
        self.seen.append((direction, data))
        if self.match_on in data:
            return Detection.MATCH
        return Detection.NO if b"NO" in data else Detection.NEED_MORE

    def parser(self, ctx: DetectContext) -> RecordingParser:
        return self.made


def _named(name: str, ports: frozenset[int], base: type[FakeDetector] = FakeDetector) -> type[FakeDetector]:
    return type(f"Fake{name}", (base,), {"name": name, "ports": ports})


# -- registry ---------------------------------------------------------------------------


def test_registry_order_and_names() -> None:
    """The registry holds every protocol once, named in lower case by its detector, HTTP/2 before HTTP/1.x."""
    names = registry.detector_names()
    assert len(names) == len(set(names))
    assert all(n == n.lower() and n.isidentifier() for n in names)
    assert {"http", "http2", "grpc", "tls", "dns", "redis"} <= set(names)
    assert names.index("http2") < names.index("http") and names.index("grpc") < names.index("http")
    for det in registry.detectors():
        assert type(det).__name__.endswith("Detector")


# -- detection by payload ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("ctx", "chunks", "app"),
    [
        pytest.param(tcp(5432), [(C2S, hm.HTTP_GET)], "http", id="http-on-5432"),
        pytest.param(tcp(8080), [(C2S, hm.resp_command(b"GET", b"k"))], "redis", id="redis-on-8080"),
        pytest.param(tcp(8443), [(C2S, hm.tls_records(hm.client_hello()))], "tls", id="tls-on-8443"),
        pytest.param(udp(5353, 5353), [(C2S, hm.mdns_announcement())], "dns", id="mdns-on-5353"),
        pytest.param(udp(5353), [(C2S, hm.dns_query("printer.local"))], "dns", id="dns-query-on-5353"),
        pytest.param(udp(5355), [(C2S, hm.llmnr_query())], "dns", id="llmnr-on-5355"),
        pytest.param(
            tcp(53),
            [(C2S, len(hm.dns_query()).to_bytes(2, "big") + hm.dns_query())],
            "dns",
            id="dns-over-tcp",
        ),
        pytest.param(tcp(6379), [(C2S, hm.HTTP_GET)], "http", id="http-on-redis-port"),
        pytest.param(tcp(80), [(C2S, hm.resp_command(b"PING"))], "redis", id="redis-on-http-port"),
        pytest.param(tcp(443), [(S2C, hm.HTTP_OK)], "http", id="server-speaks-first-http"),
        pytest.param(tcp(80), [(C2S, bytes(range(256)))], UNKNOWN, id="binary-on-80"),
        pytest.param(udp(53), [(C2S, b"\x17\x00\x03\x2a" + bytes(44))], "ntp", id="ntp-monlist-on-53-is-ntp"),
        pytest.param(udp(9999), [(C2S, hm.HTTP_GET)], UNKNOWN, id="http-text-over-udp"),
    ],
)
def test_detection_by_payload_not_port(ctx: DetectContext, chunks: list[tuple[Direction, bytes]], app: str) -> None:
    """The application comes from the first payload, whatever the port says."""
    session = DpiSession(ctx)
    for direction, data in chunks:
        (session.on_datagram if ctx.proto == PROTO_UDP else session.on_stream)(direction, data)
    assert session.app == app


def test_random_bytes_are_unknown() -> None:
    """Random payloads end as `unknown` on well-known ports, never as a protocol."""
    rng = random.Random(7)
    apps = set()
    for port in (53, 80, 443, 6379, 8080):
        for _ in range(50):
            session = DpiSession(tcp(port))
            for _ in range(rng.randint(1, 4)):
                session.on_stream(rng.choice([C2S, S2C]), rng.randbytes(rng.randint(1, 1500)))
            session.finish()
            apps.add(session.app)
    assert apps == {UNKNOWN}


@pytest.mark.parametrize("name", sorted(CORPUS))
def test_corpus_flows(name: str) -> None:
    """Each captured flow gets nDPI's master protocol and nfstream's server name, without error."""
    flow = CORPUS[name]
    session = DpiSession(DetectContext(flow.proto, flow.client_port, flow.server_port))
    feed = session.on_stream if flow.proto == PROTO_TCP else session.on_datagram
    for direction, data in load_chunks(name):
        feed(direction, data)
    session.finish()
    assert (session.app, session.server_name or "", session.error) == (
        flow.ndpi_app.lower().replace("resp", "redis"),
        flow.server_name,
        None,
    )


# -- decision and replay ----------------------------------------------------------------


def test_decision_on_first_payload() -> None:
    """A complete request line in the first chunk decides at once and its event is available."""
    session = DpiSession(tcp(80))
    session.on_stream(C2S, hm.HTTP_GET)
    assert (session.app, session.server_name, [e.kind for e in session.events]) == (
        "http",
        "www.example.com",
        ["request"],
    )
    assert not session.done


def test_replay_in_arrival_order_then_live() -> None:
    """Buffered chunks of both directions reach the parser in arrival order, then live bytes follow."""
    detector = FakeDetector()
    session = DpiSession(tcp(1), detectors=[detector])
    session.on_stream(C2S, b"a1")
    session.on_stream(S2C, b"b1")
    session.on_stream(C2S, b"a2-MATCH")
    assert session.app == "fake"
    session.on_stream(S2C, b"b2")
    assert detector.made.fed == [(C2S, b"a1"), (S2C, b"b1"), (C2S, b"a2-MATCH"), (S2C, b"b2")]
    assert [e.fields["data"] for e in session.events] == [b"a1", b"b1", b"a2-MATCH", b"b2"]
    assert session.server_name == "fake.example"


def test_detector_sees_buffered_bytes_of_one_direction() -> None:
    """On TCP a detector gets everything buffered in that direction; on UDP only the datagram."""
    stream, dgram = FakeDetector(match_on=b"never"), FakeDetector(match_on=b"never")
    tcp_session = DpiSession(tcp(1), detectors=[stream])
    udp_session = DpiSession(udp(1), detectors=[dgram])
    for direction, data in [(C2S, b"ab"), (S2C, b"x"), (C2S, b"cd")]:
        tcp_session.on_stream(direction, data)
        udp_session.on_datagram(direction, data)
    assert stream.seen == [(C2S, b"ab"), (S2C, b"x"), (C2S, b"abcd")]
    assert dgram.seen == [(C2S, b"ab"), (S2C, b"x"), (C2S, b"cd")]


def test_no_removes_candidate() -> None:
    """A detector that said NO is not asked again; when all said NO the flow is unknown at once."""
    first = _named("one", frozenset())(match_on=b"never")
    session = DpiSession(tcp(1), detectors=[first])
    session.on_stream(C2S, b"NO")
    assert (session.app, session.done, len(first.seen)) == (UNKNOWN, True, 1)
    session.on_stream(C2S, b"MATCH")
    assert len(first.seen) == 1 and session.app == UNKNOWN


def test_port_breaks_ties_between_matches() -> None:
    """When two detectors match the same bytes, the one whose ports include the server port wins."""
    a, b = _named("a", frozenset({1111})), _named("b", frozenset({2222}))
    for port, winner in ((2222, "b"), (1111, "a"), (3333, "a")):
        session = DpiSession(tcp(port), detectors=[a(), b()])
        session.on_stream(C2S, b"MATCH")
        assert session.app == winner


def test_transport_filters_candidates() -> None:
    """Detectors only see flows of their transports; a flow with no candidate is unknown immediately."""
    assert DpiSession(DetectContext(PROTO_ICMP, 0, 0)).app == UNKNOWN
    assert DpiSession(DetectContext(PROTO_ICMP, 0, 0)).done


# -- giving up --------------------------------------------------------------------------


def test_unknown_after_packet_cap() -> None:
    """After Limits.dpi_max_packets undecided chunks the flow is unknown and done."""
    limits = Limits(dpi_max_packets=5)
    session = DpiSession(tcp(1), limits, detectors=[FakeDetector()])
    for i in range(4):
        session.on_stream(C2S if i % 2 else S2C, b"x")
        assert session.app is None
    session.on_stream(C2S, b"x")
    assert (session.app, session.done) == (UNKNOWN, True)


def test_unknown_after_buffer_cap() -> None:
    """Once a direction buffered Limits.dpi_buffer bytes without a decision the flow is unknown."""
    session = DpiSession(tcp(1), Limits(dpi_buffer=100), detectors=[FakeDetector()])
    session.on_stream(C2S, b"x" * 60)
    assert session.app is None
    session.on_stream(C2S, b"x" * 60)
    assert (session.app, session.done) == (UNKNOWN, True)


def test_detector_sees_at_most_the_buffer_cap() -> None:
    """Detectors are never handed more than Limits.dpi_buffer bytes."""
    detector = FakeDetector()
    DpiSession(tcp(1), Limits(dpi_buffer=64), detectors=[detector]).on_stream(C2S, b"y" * 1000)
    assert [len(d) for _, d in detector.seen] == [64]


def test_finish_undecided_is_unknown() -> None:
    """A flow that ends before a decision is unknown."""
    session = DpiSession(tcp(80))
    session.on_stream(C2S, b"GET /inde")
    assert session.app is None
    session.finish()
    assert (session.app, session.done) == (UNKNOWN, True)


# -- done semantics ---------------------------------------------------------------------


def test_tls_done_after_server_hello() -> None:
    """TLS needs nothing after both hellos."""
    session = DpiSession(tcp(443))
    session.on_stream(C2S, hm.tls_records(hm.client_hello()))
    assert session.app == "tls" and not session.done
    session.on_stream(S2C, hm.tls_records(hm.server_hello(), version=0x0303))
    assert session.done and [e.kind for e in session.events] == ["client_hello", "server_hello"]


def test_http_keeps_parsing_past_the_event_cap() -> None:
    """HTTP keeps parsing every request: MAX_EVENTS events are kept, all are counted and judged."""
    session = DpiSession(tcp(80))
    session.on_stream(C2S, b"".join(b"GET /%d HTTP/1.1\r\nHost: h\r\n\r\n" % i for i in range(40)))
    assert (session.done, len(session.events), session.event_count) == (False, MAX_EVENTS, 40)
    assert session.events[-1].fields["path"] == f"/{MAX_EVENTS - 1}"
    assert [e.fields["path"] for e in session.requests][-1] == "/39"


def test_dns_udp_keeps_parsing_past_the_event_cap() -> None:
    """DNS over UDP parses every datagram (tunnelling and L7 names need all of them)."""
    session = DpiSession(udp(53))
    for i in range(MAX_EVENTS + 5):
        session.on_datagram(C2S, hm.dns_query(msg_id=i))
    session.on_datagram(S2C, hm.dns_response_all_types())
    assert not session.done and session.event_count == MAX_EVENTS + 6 and len(session.events) == MAX_EVENTS


def test_redis_keeps_parsing_commands_past_the_event_cap() -> None:
    """Redis commands after the first MAX_EVENTS events still reach the request list."""
    session = DpiSession(tcp(6379))
    session.on_stream(C2S, hm.resp_command(b"PING") * MAX_EVENTS + hm.resp_command(b"FLUSHALL"))
    assert not session.done
    assert [e.fields["command"] for e in session.requests] == ["PING", "FLUSHALL"]


def test_parser_finished_makes_done() -> None:
    """A parser that reports `finished` makes the session done and stops feeding it."""
    parser = RecordingParser(finish_after=2)
    session = DpiSession(tcp(1), detectors=[FakeDetector(parser=parser)])
    session.on_stream(C2S, b"MATCH")
    session.on_stream(S2C, b"reply")
    session.on_stream(C2S, b"ignored")
    assert session.done and len(parser.fed) == 2


def test_protocol_error_keeps_app() -> None:
    """A malformed message after detection records the error, keeps the app, and is done."""
    session = DpiSession(tcp(80))
    session.on_stream(C2S, b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n")
    assert (session.app, session.done) == ("http", True)
    assert session.error is not None and "conflicting Content-Length" in session.error


def test_finish_completes_a_response_delimited_by_close() -> None:
    """At the end of the flow, a response read until the close becomes an event."""
    session = DpiSession(tcp(80))
    session.on_stream(C2S, hm.HTTP_GET)
    session.on_stream(S2C, hm.HTTP_UNTIL_CLOSE)
    assert [e.kind for e in session.events] == ["request"]
    session.finish()
    assert [e.kind for e in session.events] == ["request", "response"]


# -- gaps -------------------------------------------------------------------------------


def test_gap_after_decision_stops_parsing() -> None:
    """A gap stops parsing; the decision and the events so far stay."""
    session = DpiSession(tcp(80))
    session.on_stream(C2S, hm.HTTP_GET)
    session.on_gap(S2C)
    session.on_stream(S2C, hm.HTTP_OK)
    assert (session.app, session.done, len(session.events)) == ("http", True, 1)


def test_gap_while_undecided_keeps_the_other_direction() -> None:
    """Undecided, a gap in one direction leaves detection to the other; a gap in both gives up."""
    session = DpiSession(tcp(80))
    session.on_gap(C2S)
    session.on_stream(C2S, hm.HTTP_GET)
    assert session.app is None
    session.on_stream(S2C, hm.HTTP_OK)
    assert session.app == "http"
    both = DpiSession(tcp(80))
    both.on_gap(S2C)
    both.on_gap(C2S)
    assert (both.app, both.done) == (UNKNOWN, True)


# -- robustness -------------------------------------------------------------------------


class _Boom(Exception):
    pass


def test_parser_bug_is_contained() -> None:
    """An exception other than ProtocolError from a parser becomes `error`, never escapes."""
    session = DpiSession(tcp(1), detectors=[FakeDetector(parser=RecordingParser(fail_with=_Boom("bug")))])
    session.on_stream(C2S, b"MATCH")
    assert (session.app, session.done) == ("fake", True)
    assert session.error is not None and "internal error" in session.error


def test_protocol_error_from_fake_parser() -> None:
    """A ProtocolError's message becomes `error` as is."""
    session = DpiSession(tcp(1), detectors=[FakeDetector(parser=RecordingParser(fail_with=ProtocolError("bad x")))])
    session.on_stream(C2S, b"MATCH")
    assert session.error == "bad x"


class _RaisingDetector(FakeDetector):
    name: ClassVar[str] = "raising"

    def detect(self, direction: Direction, data: bytes, ctx: DetectContext) -> Detection:
        raise _Boom("detector bug")


def test_detector_bug_counts_as_no() -> None:
    """A detector that raises is dropped as if it said NO; the others still decide."""
    detectors: list[Detector] = [_RaisingDetector(), FakeDetector()]
    session = DpiSession(tcp(1), detectors=detectors)
    session.on_stream(C2S, b"MATCH")
    assert session.app == "fake"


def test_empty_chunks_are_ignored() -> None:
    """Empty payloads count neither as bytes nor as packets."""
    session = DpiSession(tcp(1), Limits(dpi_max_packets=2), detectors=[FakeDetector()])
    for _ in range(10):
        session.on_stream(C2S, b"")
    assert session.app is None


def test_requests_are_kept_past_the_event_cap_and_deduplicated() -> None:
    """Parsing goes on past MAX_EVENTS; repeated requests are kept once; past MAX_REQUESTS the flow says so."""
    from podwall.dpi.session import MAX_EVENTS, MAX_REQUESTS

    session = DpiSession(tcp(8080))
    for i in range(MAX_EVENTS * 2):
        session.on_stream(C2S, b"GET /same HTTP/1.1\r\nHost: a\r\n\r\n")
        session.on_stream(C2S, f"GET /item/{i} HTTP/1.1\r\nHost: a\r\n\r\n".encode())
    assert not session.done and len(session.events) == MAX_EVENTS
    paths = [e.fields["path"] for e in session.requests]
    assert paths[0] == "/same" and paths.count("/same") == 1 and f"/item/{MAX_EVENTS * 2 - 1}" in paths
    assert not session.requests_truncated
    for i in range(MAX_REQUESTS):
        session.on_stream(C2S, f"GET /more/{i} HTTP/1.1\r\nHost: a\r\n\r\n".encode())
    assert len(session.requests) == MAX_REQUESTS and session.requests_truncated
