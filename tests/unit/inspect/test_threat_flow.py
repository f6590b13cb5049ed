"""Per-flow threats: split handshake, connections without client data, small windows, session limits."""

from __future__ import annotations

import pytest

from podwall.core.types import TCP_ACK, TCP_FIN, TCP_PSH, TCP_RST, TCP_SYN, Packet, ip_packed
from tests.unit.flow_packets import A, B, tcp
from tests.unit.inspect.threat_kit import PacketDriver, ids, settings

SYN, SYN_ACK, ACK = TCP_SYN, TCP_SYN | TCP_ACK, TCP_ACK


def _handshake(ts: float, cport: int, *, client_scale: int = -1, server_scale: int = -1) -> list[Packet]:
    syn = tcp(ts, A, cport, B, 80, SYN, seq=100)
    syn.wscale = client_scale
    synack = tcp(ts + 0.001, B, 80, A, cport, SYN_ACK, seq=500, ack=101)
    synack.wscale = server_scale
    return [syn, synack, tcp(ts + 0.002, A, cport, B, 80, ACK, seq=101, ack=501)]


@pytest.mark.parametrize(
    ("packets", "expected"),
    [
        ([tcp(0.0, A, 40000, B, 80, SYN, seq=1), tcp(0.01, B, 80, A, 40000, SYN, seq=9)], 1),
        ([tcp(0.0, A, 40000, B, 80, SYN, seq=1), tcp(0.01, B, 80, A, 40000, ACK, ack=2),
          tcp(0.02, B, 80, A, 40000, SYN, seq=9)], 1),
        (_handshake(0.0, 40000), 0),
        ([tcp(0.0, A, 40000, B, 80, SYN, seq=1), tcp(1.0, A, 40000, B, 80, SYN, seq=1)], 0),
    ],
    ids=["syn-answered-by-syn", "ack-then-syn", "ordinary-handshake", "retransmitted-syn"],
)  # fmt: skip
def test_split_handshake(packets: list[Packet], expected: int) -> None:
    """A server that answers a SYN with a SYN of its own is a split handshake; retransmissions are not."""
    driver = PacketDriver()
    driver.feed(*packets)
    assert ids(driver.findings).count("threat.split_handshake") == expected


def _idle_connection(
    ts: float, cport: int, *, wait: float, client_data: bool = False, close: bool = True
) -> list[Packet]:
    packets = _handshake(ts, cport)
    if client_data:
        packets.append(tcp(ts + 0.5, A, cport, B, 80, TCP_PSH | ACK, seq=101, ack=501, payload=b"hello"))
    if close:
        packets.append(tcp(ts + wait, B, 80, A, cport, TCP_RST | ACK, seq=501, ack=101))
    return packets


@pytest.mark.parametrize(
    ("wait", "client_data", "expected"),
    [(31.0, False, 1), (5.0, False, 0), (31.0, True, 0)],
    ids=["idle-31s", "closed-after-5s", "client-spoke"],
)
def test_no_client_data_single_connection(wait: float, client_data: bool, expected: int) -> None:
    """With a threshold of one, a connection held 30 s without a client byte is reported."""
    driver = PacketDriver(settings(no_client_data={"threshold": 1}))
    driver.feed(*_idle_connection(0.0, 40000, wait=wait, client_data=client_data))
    driver.finish()
    assert ids(driver.findings).count("threat.no_client_data") == expected


@pytest.mark.parametrize(("connections", "expected"), [(10, 1), (9, 0)], ids=["ten", "nine"])
def test_no_client_data_counts_connections_per_server(connections: int, expected: int) -> None:
    """By default ten such connections to one server within ten seconds make one finding."""
    driver = PacketDriver()
    packets = [p for i in range(connections) for p in _idle_connection(i * 0.5, 40000 + i, wait=31.0)]
    driver.feed(*sorted(packets, key=lambda p: p.ts))
    driver.finish()
    assert ids(driver.findings).count("threat.no_client_data") == expected


def test_no_client_data_for_a_connection_the_table_ended_as_idle() -> None:
    """A silent connection that is never closed is judged when the flow table ends it as idle."""
    driver = PacketDriver(settings(no_client_data={"threshold": 1}))
    driver.feed(*_idle_connection(0.0, 40000, wait=0.0, close=False))
    driver.feed(tcp(500.0, A, 50000, B, 443, SYN, seq=1))  # a later packet lets the table sweep
    assert ids(driver.findings).count("threat.no_client_data") == 1


def _windows(cport: int, start: float, windows: list[int], step: float) -> list[Packet]:
    out = []
    for i, window in enumerate(windows):
        pkt = tcp(start + i * step, B, 80, A, cport, ACK, seq=501, ack=101)
        pkt.window = window
        out.append(pkt)
    return out


@pytest.mark.parametrize(
    ("scales", "windows", "step", "expected"),
    [
        ((-1, -1), [10] * 6, 2.0, 1),
        ((-1, -1), [10] * 6, 0.2, 0),
        ((-1, -1), [10, 10, 10, 65535, 10, 10], 2.0, 0),
        ((-1, -1), [0] * 10, 2.0, 0),
        ((7, 7), [10] * 6, 2.0, 0),
        ((7, -1), [10] * 6, 2.0, 1),
    ],
    ids=["tiny-for-10s", "tiny-for-1s", "interrupted", "zero-windows", "scaled-1280", "scale-not-agreed"],
)
def test_small_window(scales: tuple[int, int], windows: list[int], step: float, expected: int) -> None:
    """Five or more tiny non-zero windows in a row over eight seconds are reported; scaled or zero windows are not."""
    driver = PacketDriver()
    driver.feed(*_handshake(0.0, 40000, client_scale=scales[0], server_scale=scales[1]))
    driver.feed(*_windows(40000, 1.0, windows, step))
    assert ids(driver.findings).count("threat.tcp_small_window") == expected


def test_small_window_needs_the_handshake() -> None:
    """Without the handshake the real window is unknown, and nothing is judged."""
    driver = PacketDriver()
    driver.feed(*_windows(40000, 1.0, [10] * 8, 2.0))
    assert "threat.tcp_small_window" not in ids(driver.findings)


def test_session_limit_counts_open_sessions() -> None:
    """More open sessions from one source to one destination than the limit are reported; closed ones free room."""
    driver = PacketDriver(settings(session_limit={"max_concurrent": 5}))
    for i in range(5):
        driver.feed(*_handshake(i * 0.1, 41000 + i))
    assert "threat.session_limit" not in ids(driver.findings)
    for i in range(5):  # close them all: both FINs and their ACKs
        port = 41000 + i
        driver.feed(tcp(1.0 + i * 0.01, A, port, B, 80, TCP_FIN | ACK, seq=101, ack=501),
                    tcp(1.001 + i * 0.01, B, 80, A, port, TCP_FIN | ACK, seq=501, ack=102),
                    tcp(1.002 + i * 0.01, A, port, B, 80, ACK, seq=102, ack=502))  # fmt: skip
    driver.feed(tcp(100.0, ip_packed("10.0.0.9"), 1, B, 80, SYN))  # the closed flows leave the table
    for i in range(5):
        driver.feed(*_handshake(101.0 + i * 0.1, 42000 + i))
    assert "threat.session_limit" not in ids(driver.findings)
    driver.feed(*_handshake(102.0, 43000))
    found = [f for f in driver.findings if f.id == "threat.session_limit"]
    assert len(found) == 1 and found[0].detail["open"] == 6


def test_session_limit_new_session_rate() -> None:
    """With `max_new`, more new sessions from one source within the window than allowed are reported."""
    driver = PacketDriver(settings(session_limit={"max_new": 3}))
    for i in range(4):
        driver.feed(tcp(i * 0.1, A, 40000 + i, B, 80, SYN, seq=1))
    assert ids(driver.findings) == ["threat.session_limit"]
    driver = PacketDriver(settings(session_limit={"max_new": 3}))
    for i in range(4):
        driver.feed(tcp(i * 0.5, A, 40000 + i, B, 80, SYN, seq=1))
    assert driver.findings == []
