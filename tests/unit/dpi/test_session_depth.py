"""The DPI session's depth (detect vs full) and the order in which it asks detectors."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import pytest

from podwall.core.limits import Limits
from podwall.core.types import PROTO_TCP, PROTO_UDP, Direction
from podwall.dpi.base import DetectContext, Detection, L7Event
from podwall.dpi.session import DETECT, FULL, DpiSession

from .fixtures import handmade as hm

C2S, S2C = Direction.C2S, Direction.S2C


def tcp(server_port: int) -> DetectContext:
    return DetectContext(PROTO_TCP, 40000, server_port)


def udp(server_port: int) -> DetectContext:
    return DetectContext(PROTO_UDP, 40000, server_port)


@dataclass
class ScriptedParser:
    """Emits, per feed, the events a script gives for (direction, bytes) (none otherwise); remembers what it was fed."""

    script: dict[tuple[Direction, bytes], list[tuple[str, Direction]]] = field(default_factory=dict)
    fed: list[tuple[Direction, bytes]] = field(default_factory=list)

    def feed(self, direction: Direction, data: bytes) -> list[L7Event]:
        self.fed.append((direction, data))
        kinds = self.script.get((direction, data), [])
        return [L7Event("fake", kind, d, {"n": len(self.fed)}) for kind, d in kinds]

    def server_name(self) -> str | None:
        return None


class Scripted:
    """A detector answering from a table keyed by the buffered bytes (NEED_MORE otherwise)."""

    name: ClassVar[str] = "fake"
    transports: ClassVar[frozenset[int]] = frozenset({PROTO_TCP, PROTO_UDP})
    ports: ClassVar[frozenset[int]] = frozenset()

    def __init__(self, answers: dict[bytes, Detection], parser: ScriptedParser | None = None) -> None:
        self.answers = answers
        self.asked: list[bytes] = []
        self.made = parser or ScriptedParser()

    def detect(self, direction: Direction, data: bytes, ctx: DetectContext) -> Detection:
        self.asked.append(data)
        return self.answers.get(data, Detection.NEED_MORE)

    def parser(self, ctx: DetectContext) -> ScriptedParser:
        return self.made


def scripted(
    name: str,
    answers: dict[bytes, Detection],
    ports: frozenset[int] = frozenset(),
    parser: ScriptedParser | None = None,
) -> Scripted:
    """A `Scripted` detector of its own class, so that `name` and `ports` are class variables."""
    cls: type[Scripted] = type(f"Scripted_{name}", (Scripted,), {"name": name, "ports": ports})
    return cls(answers, parser)


# -- detect depth ---------------------------------------------------------------------------

KEEPALIVE = [
    (C2S, b"GET /a HTTP/1.1\r\nHost: h.example\r\n\r\n"),
    (S2C, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"),
    (C2S, b"GET /b HTTP/1.1\r\nHost: h.example\r\n\r\n"),
    (S2C, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"),
    (C2S, b"DELETE /c HTTP/1.1\r\nHost: h.example\r\n\r\n"),
]


@pytest.mark.parametrize(
    ("depth", "paths", "done", "truncated"),
    [
        pytest.param(DETECT, ["/a"], True, True, id="detect-stops-after-first-exchange"),
        pytest.param(FULL, ["/a", "/b", "/c"], False, False, id="full-sees-every-request"),
    ],
)
def test_depth_of_a_keepalive_connection(depth: str, paths: list[str], done: bool, truncated: bool) -> None:
    """Detect depth stops after the first request and response (later ones unseen, so truncated); full parses all."""
    session = DpiSession(tcp(80), depth=depth)
    for direction, data in KEEPALIVE:
        session.on_stream(direction, data)
    assert (session.app, session.server_name) == ("http", "h.example")
    assert [e.fields["path"] for e in session.requests] == paths
    assert (session.done, session.requests_truncated) == (done, truncated)


def test_on_event_means_full_depth() -> None:
    """A consumer that wants every event (on_event) gets full depth whatever the session was told."""
    seen: list[str] = []
    session = DpiSession(tcp(80), depth=DETECT, on_event=lambda e: seen.append(e.kind))
    for direction, data in KEEPALIVE:
        session.on_stream(direction, data)
    assert not session.done and seen == ["request", "response", "request", "response", "request"]


def test_on_event_set_after_construction_means_full_depth() -> None:
    """on_event assigned later (as the inspection pipeline does) still keeps the session parsing."""
    session = DpiSession(tcp(80), depth=DETECT)
    seen: list[str] = []
    session.on_event = lambda e: seen.append(e.kind)
    for direction, data in KEEPALIVE:
        session.on_stream(direction, data)
    assert not session.done and len(seen) == 5


def test_detect_depth_tls_ends_as_before() -> None:
    """TLS ends after its hellos at either depth: the parser is finished, nothing is cut short."""
    outcomes = []
    for depth in (DETECT, FULL):
        session = DpiSession(tcp(443), depth=depth)
        session.on_stream(C2S, hm.tls_records(hm.client_hello(sni=b"tls.example")))
        session.on_stream(S2C, hm.tls_records(hm.server_hello(), version=0x0303))
        outcomes.append((session.done, session.requests_truncated, session.server_name, len(session.events)))
    assert outcomes == [(True, False, "tls.example", 2)] * 2


def test_detect_depth_dns_needs_query_and_response() -> None:
    """DNS over UDP at detect depth stops once a query and a response are parsed, not before."""
    session = DpiSession(udp(53), depth=DETECT)
    session.on_datagram(C2S, hm.dns_query(msg_id=1))
    session.on_datagram(C2S, hm.dns_query(msg_id=2))
    assert not session.done
    session.on_datagram(S2C, hm.dns_response_all_types())
    session.on_datagram(C2S, hm.dns_query(msg_id=3))
    assert session.done and [e.kind for e in session.events] == ["query", "query", "response"]


@pytest.mark.parametrize("budget", [3, 6])
def test_detect_depth_budget_counts_chunks_given_to_the_parser(budget: int) -> None:
    """Without a client request, detect depth stops once the parser was given dpi_max_packets chunks."""
    det = scripted("fake", {b"go": Detection.MATCH})
    session = DpiSession(tcp(1), Limits(dpi_max_packets=budget), detectors=[det], depth=DETECT)
    session.on_stream(C2S, b"go")
    for i in range(10):
        session.on_stream(S2C, b"s%d" % i)
    assert session.done and len(det.made.fed) == budget


def test_detect_depth_replays_every_buffered_chunk() -> None:
    """A decision after several chunks replays all of them, even when they reach the budget."""
    det = scripted("fake", {b"abcd": Detection.MATCH})
    session = DpiSession(tcp(1), Limits(dpi_max_packets=4), detectors=[det], depth=DETECT)
    for part in (b"a", b"b", b"c", b"d"):
        session.on_stream(C2S, part)
    assert det.made.fed == [(C2S, b"a"), (C2S, b"b"), (C2S, b"c"), (C2S, b"d")] and session.done


def test_detect_depth_feeds_large_stream_chunks_in_doubling_slices() -> None:
    """A large chunk is fed in slices of 2, 4, 8 ... KiB until the identifying events are in."""
    reply_at = 2048 + 4096  # the server message completes in the second slice
    big = bytes(40000)
    parser = ScriptedParser({(C2S, b"cmd"): [("command", C2S)], (S2C, big[2048:reply_at]): [("reply", S2C)]})
    det = scripted("fake", {b"cmd": Detection.MATCH}, parser=parser)
    session = DpiSession(tcp(1), detectors=[det], depth=DETECT)
    session.on_stream(C2S, b"cmd")
    session.on_stream(S2C, big)
    assert [len(d) for _, d in parser.fed[1:]] == [2048, 4096] and session.done


def test_full_depth_feeds_large_chunks_whole() -> None:
    """At full depth the parser gets each chunk as it came."""
    det = scripted("fake", {b"cmd": Detection.MATCH})
    session = DpiSession(tcp(1), detectors=[det], depth=FULL)
    session.on_stream(C2S, b"cmd")
    session.on_stream(S2C, bytes(40000))
    assert [len(d) for _, d in det.made.fed] == [3, 40000]


def test_datagrams_are_never_sliced() -> None:
    """A large UDP payload is one message: detect depth hands it to the parser whole."""
    det = scripted("fake", {b"q": Detection.MATCH})
    session = DpiSession(udp(1), detectors=[det], depth=DETECT)
    session.on_datagram(C2S, b"q")
    session.on_datagram(S2C, bytes(9000))
    assert [len(d) for _, d in det.made.fed] == [1, 9000]


def test_unknown_depth_is_refused() -> None:
    """A depth other than detect or full is a ValueError that names the choices."""
    with pytest.raises(ValueError, match="detect, full"):
        DpiSession(tcp(80), depth="deep")


# -- the order detectors are asked in ---------------------------------------------------


def test_port_holder_that_matches_decides_alone() -> None:
    """The first detector holding the server port is asked first; when it matches nobody else is asked."""
    early = scripted("early", {b"x": Detection.MATCH})
    holder = scripted("holder", {b"x": Detection.MATCH}, ports=frozenset({7000}))
    session = DpiSession(tcp(7000), detectors=[early, holder])
    session.on_stream(C2S, b"x")
    assert (session.app, early.asked, holder.asked) == ("holder", [], [b"x"])


def test_after_a_match_only_port_holders_are_asked() -> None:
    """Once one detector matched, later ones not holding the server port cannot win and are not asked."""
    first = scripted("first", {b"x": Detection.MATCH})
    other = scripted("other", {b"x": Detection.MATCH})
    holder = scripted("holder", {b"x": Detection.NO}, ports=frozenset({7000}))
    late = scripted("late", {b"x": Detection.MATCH}, ports=frozenset({7000}))
    session = DpiSession(tcp(7000), detectors=[first, other, holder, late])
    session.on_stream(C2S, b"x")
    assert session.app == "late"
    assert (other.asked, holder.asked, late.asked) == ([], [b"x"], [b"x"])


@pytest.mark.parametrize(
    ("port", "holder_answer", "app"),
    [
        pytest.param(7000, Detection.NEED_MORE, "first", id="holder-undecided"),
        pytest.param(7000, Detection.NO, "first", id="holder-says-no"),
        pytest.param(9999, Detection.MATCH, "first", id="no-holder-on-this-port"),
    ],
)
def test_registry_order_decides_without_a_matching_holder(port: int, holder_answer: Detection, app: str) -> None:
    """Without a matching port holder, the first match in registry order wins, as before."""
    first = scripted("first", {b"x": Detection.MATCH})
    holder = scripted("holder", {b"x": holder_answer}, ports=frozenset({7000}))
    session = DpiSession(tcp(port), detectors=[first, holder])
    session.on_stream(C2S, b"x")
    assert session.app == app


def test_holder_that_needs_more_keeps_its_place() -> None:
    """A port holder that needs more stays a candidate and decides on a later chunk."""
    other = scripted("other", {b"a": Detection.NEED_MORE, b"ab": Detection.NO})
    holder = scripted("holder", {b"a": Detection.NEED_MORE, b"ab": Detection.MATCH}, ports=frozenset({7000}))
    session = DpiSession(tcp(7000), detectors=[other, holder])
    session.on_stream(C2S, b"a")
    assert session.app is None
    session.on_stream(C2S, b"b")
    assert session.app == "holder" and holder.asked == [b"a", b"ab"]
