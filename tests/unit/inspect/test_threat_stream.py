"""Threats in stream bytes: heartbleed and the SSLv2 cipher overflow (TLS records), HTTP smuggling,
negative lengths, slowloris and Struts OGNL (HTTP request heads)."""

from __future__ import annotations

import pytest

from podwall.core.errors import Location
from podwall.core.types import TCP_ACK, TCP_PSH, Direction
from podwall.datapath.decode import PacketProblem
from podwall.inspect.findings import Action
from podwall.inspect.threats.http import HttpWatch
from podwall.inspect.threats.tls import TlsWatch
from podwall.lab.payloads import tls_client_hello, tls_server_hello
from podwall.lab.synth import TcpConversation, tcp_exchange
from tests.unit.flow_packets import A, B, tcp
from tests.unit.inspect.threat_kit import (
    CLIENT,
    SERVER,
    PacketDriver,
    heartbeat,
    ids,
    run_frames,
    sslv2_hello,
    tls_record,
)

C2S, S2C = Direction.C2S, Direction.S2C


def _feed_tls(chunks: list[tuple[Direction, bytes]], split: int | None = None) -> list[str]:
    watch = TlsWatch()
    keys: list[str] = []
    for direction, data in chunks:
        pieces = [data] if split is None else [data[i : i + split] for i in range(0, len(data), split)]
        for piece in pieces:
            keys += [h.key for h in watch.feed(direction, piece)]
    return keys


HELLO = [(C2S, tls_client_hello("shop", ["h2"])), (S2C, tls_server_hello("h2"))]


@pytest.mark.parametrize(
    ("chunks", "expected"),
    [
        ([*HELLO, (C2S, heartbeat(16384, b"x"))], 1),
        ([*HELLO, (C2S, heartbeat(16, b"p" * 16))], 0),
        ([(C2S, tls_client_hello("shop", [])), (C2S, heartbeat(65535, b"", padding=0))], 1),
        ([*HELLO, (C2S, tls_record(24, bytes(40))), (S2C, tls_record(24, bytes(16000)))], 1),
        ([*HELLO, (C2S, tls_record(24, bytes(40))), (S2C, tls_record(24, bytes(40)))], 0),
        ([*HELLO, (C2S, tls_record(23, bytes(2000)) * 3)], 0),
    ],
    ids=["overread", "honest", "right-after-hello", "leaking-response", "echoed-response", "application-data"],
)
@pytest.mark.parametrize("split", [None, 1, 7], ids=["whole", "byte-by-byte", "7-byte-chunks"])
def test_heartbleed(chunks: list[tuple[Direction, bytes]], split: int | None, expected: int) -> None:
    """A heartbeat claiming bytes past its record, or a response far larger than its request, is heartbleed."""
    assert _feed_tls(chunks, split).count("tls_heartbleed") == expected


@pytest.mark.parametrize(("declared", "expected"), [(900, 1), (9, 0)], ids=["overflow", "honest"])
def test_sslv2_cipher_overflow(declared: int, expected: int) -> None:
    """An SSLv2 ClientHello whose cipher-spec length overruns its record is the cipher overflow."""
    assert _feed_tls([(C2S, sslv2_hello(declared))], 3).count("sslv2_cipher_overflow") == expected


def test_tls_watch_stops_on_what_is_not_tls() -> None:
    """Bytes that do not start like TLS turn the watcher off; records that go bad later do too."""
    watch = TlsWatch()
    assert watch.feed(C2S, b"GET / HTTP/1.1\r\n\r\n") == []
    assert not watch.active or watch.feed(S2C, b"HTTP/1.1 200 OK\r\n\r\n") == []
    assert not watch.active
    watch = TlsWatch()
    watch.feed(C2S, tls_client_hello("x", []) + b"\x63garbage")
    watch.feed(S2C, b"\x00\x00")
    assert not watch.active


def _watch_http(data: bytes, split: int | None = None, start: float = 0.0, step: float = 0.0) -> list[str]:
    watch = HttpWatch()
    pieces = [data] if split is None else [data[i : i + split] for i in range(0, len(data), split)]
    keys: list[str] = []
    for i, piece in enumerate(pieces):
        keys += [h.key for h in watch.feed(piece, start + i * step)]
    return keys


GET = b"GET /a HTTP/1.1\r\nHost: shop\r\n\r\n"


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"POST /a HTTP/1.1\r\nHost: shop\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
         ["http_smuggling"]),
        (b"POST /a HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 7\r\n\r\nhello", ["http_smuggling"]),
        (b"POST /a HTTP/1.1\r\nContent-Length: 5, 6\r\n\r\nhello", ["http_smuggling"]),
        (b"POST /a HTTP/1.1\r\nTransfer-Encoding: xchunked\r\n\r\n", ["http_smuggling"]),
        (b"POST /a HTTP/1.1\r\nTransfer-Encoding: chunked, identity\r\n\r\n", ["http_smuggling"]),
        (b"POST /a HTTP/1.1\r\nTransfer-Encoding : chunked\r\n\r\n", ["http_smuggling"]),
        (b"POST /a HTTP/1.1\r\nContent-Length: -5\r\n\r\n", ["http_negative_content_length"]),
        (b"POST /a HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello" + GET, []),
        (b"POST /a HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n5;x=1\r\nhello\r\n0\r\nT: 1\r\n\r\n" + GET, []),
        (b"POST /a HTTP/1.1\r\nContent-Length: 11\r\n\r\nhello world" + GET, []),
    ],
    ids=["cl-and-te", "two-lengths", "length-list", "te-xchunked", "te-not-last", "space-before-colon",
         "negative", "same-length-twice", "chunked-with-trailer", "plain-post"],
)  # fmt: skip
@pytest.mark.parametrize("split", [None, 1, 5], ids=["whole", "byte-by-byte", "5-byte-chunks"])
def test_http_request_framing(data: bytes, split: int | None, expected: list[str]) -> None:
    """Requests whose body length is ambiguous are smuggling; a negative length is its own threat."""
    assert _watch_http(data, split) == expected


def test_http_watch_follows_keep_alive_requests() -> None:
    """Bodies are skipped by length and chunks, so a threat in the fourth request of a connection is found."""
    bodies = (
        b"POST /1 HTTP/1.1\r\nContent-Length: 40\r\n\r\n" + b"Transfer-Encoding: chunked\r\n\r\n" + b"x" * 10
        + b"POST /2 HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
        + GET
        + b"POST /4 HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"
    )  # fmt: skip
    watch = HttpWatch()
    hits = watch.feed(bodies, 0.0)
    assert [h.key for h in hits] == ["http_smuggling"]
    assert hits[0].l7["path"] == "/4" and watch.requests == 4


def test_http_watch_ignores_what_is_not_http() -> None:
    """A client that does not send an HTTP request line is not followed (and not buffered)."""
    watch = HttpWatch()
    assert watch.feed(b"SSH-2.0-OpenSSH_9.6\r\n" + bytes(70000), 0.0) == []
    assert not watch.active and watch.head_start < 0


@pytest.mark.parametrize(
    ("head", "expected"),
    [
        (b"POST /upload.action HTTP/1.1\r\nContent-Type: %{(#_='multipart/form-data').(#dm=@ognl.OgnlContext@"
         b"DEFAULT_MEMBER_ACCESS).(#_memberAccess=#dm)}\r\n\r\n", 1),
        (b"GET /%24%7B%23context%5B%27xwork.MethodAccessor.denyMethodExecution%27%5D%3Dfalse%7D/x.action "
         b"HTTP/1.1\r\n\r\n", 1),
        (b"POST /upload HTTP/1.1\r\nContent-Type: multipart/form-data; boundary=----x\r\nContent-Length: 0\r\n\r\n", 0),
        (b"GET /search?q=%25%7Bprice%7D HTTP/1.1\r\n\r\n", 0),
    ],
    ids=["s2-045-content-type", "s2-057-path", "ordinary-upload", "percent-brace-in-query"],
)  # fmt: skip
def test_struts_ognl(head: bytes, expected: int) -> None:
    """OGNL expressions in a request head (Struts 2 exploits) are reported; look-alikes are not."""
    assert _watch_http(head).count("struts_rce") == expected


@pytest.mark.parametrize(
    ("pieces", "step", "expected"),
    [(20, 2.0, 1), (20, 0.05, 0), (3, 15.0, 1)],
    ids=["trickled-over-38s", "complete-in-1s", "three-pieces-30s"],
)
def test_slowloris_through_the_datapath(pieces: int, step: float, expected: int) -> None:
    """A request head still incomplete 20 s after it started is slowloris; a head sent briskly is not."""
    head = b"GET / HTTP/1.1\r\nHost: shop\r\n" + b"".join(b"X-%d: %d\r\n" % (i, i) for i in range(pieces)) + b"\r\n"
    size = -(-len(head) // pieces)
    conv = TcpConversation(CLIENT, 40000, SERVER, 80, 1.0, step=step)
    for off in range(0, len(head), size):
        conv.send(True, head[off : off + size])
    conv.send(False, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
    assert ids(run_frames(conv.close())).count("threat.http_slowloris") == expected


def test_keep_alive_idle_is_not_slowloris() -> None:
    """A connection idle a minute between complete requests is no slowloris."""
    conv = TcpConversation(CLIENT, 40000, SERVER, 80, 1.0, step=0.001)
    conv.send(True, GET).send(False, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
    conv.t += 60.0
    conv.send(True, GET).send(False, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
    assert run_frames(conv.close()) == []


def test_stream_threats_through_the_datapath() -> None:
    """Smuggling, heartbleed and the SSLv2 overflow are found in real frames, with their request facts."""
    smuggle = b"POST /pay HTTP/1.1\r\nHost: shop\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
    frames = tcp_exchange(CLIENT, 40000, SERVER, 80, 1.0, [(smuggle, b"")])
    frames += tcp_exchange(
        CLIENT,
        40001,
        SERVER,
        443,
        2.0,
        [(tls_client_hello("shop", []), tls_server_hello()), (heartbeat(16384, b"x"), b"")],
    )
    frames += tcp_exchange(CLIENT, 40002, SERVER, 443, 3.0, [(sslv2_hello(900), b"")])  # fmt: skip
    found = run_frames(frames)
    assert sorted(ids(found)) == ["threat.http_smuggling", "threat.sslv2_cipher_overflow", "threat.tls_heartbleed"]
    smuggling = next(f for f in found if f.id == "threat.http_smuggling")
    assert smuggling.l7["path"] == "/pay" and smuggling.direction is C2S and smuggling.frame > 0


def test_a_stream_threat_asks_its_action_for_the_packet_that_carried_it() -> None:
    """A smuggling request found in the stream makes `packet_action` drop that packet, and only that one."""
    driver = PacketDriver()
    ack = tcp(1.0, A, 40000, B, 80, TCP_ACK | TCP_PSH, seq=1, ack=1, payload=b"x")
    driver.feed(ack)
    engine, flow = driver.engine, driver.flow
    smuggle = b"POST / HTTP/1.1\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n"
    assert ids(engine.on_stream(flow, C2S, smuggle)) == ["threat.http_smuggling"]
    engine.on_packet(ack, flow, C2S)
    assert engine.packet_action is Action.DROP
    engine.on_packet(ack, flow, C2S)
    assert engine.packet_action is None
    engine.on_problem(PacketProblem(Location(obj="frame 9"), "bad", "malformed", 2.0, 9, A, B, 6))
    engine.on_packet(ack, flow, C2S)
    assert engine.packet_action is None


@pytest.mark.parametrize(
    ("first", "wanted"),
    [(b"GET / HTTP/1.1\r\n", True), (tls_client_hello("x", []), True), (b"*1\r\n$4\r\nPING\r\n", False)],
    ids=["http", "tls", "redis"],
)
def test_wants_stream_only_while_tls_or_http(first: bytes, wanted: bool) -> None:
    """The engine keeps wanting a flow's bytes while they are TLS or HTTP, and says so when they are not."""
    driver = PacketDriver()
    driver.feed(tcp(1.0, A, 40000, B, 6379, TCP_ACK | TCP_PSH, seq=1, ack=1, payload=first))
    engine, flow = driver.engine, driver.flow
    assert engine.wants_stream(flow)
    engine.on_stream(flow, C2S, first)
    assert engine.wants_stream(flow) is wanted
