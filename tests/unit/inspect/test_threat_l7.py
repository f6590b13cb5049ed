"""Threats read from L7 events: SSH version 1, old SSL/TLS versions, MySQL login brute force, SQL injection."""

from __future__ import annotations

import struct

import pytest

from podwall.core.types import TCP_ACK, TCP_SYN, Direction
from podwall.dpi.base import L7Event
from podwall.lab.synth import tcp_exchange
from tests.unit.flow_packets import A, B, tcp
from tests.unit.inspect.threat_kit import CLIENT, SERVER, PacketDriver, ids, run_frames, tls_hello


@pytest.mark.parametrize(
    ("server", "client", "expected"),
    [(b"SSH-1.5-OldSSH_1.2\r\n", b"SSH-1.5-client\r\n", 1), (b"SSH-1.99-OpenSSH_3.9\r\n", b"SSH-2.0-client\r\n", 0),
     (b"SSH-2.0-OpenSSH_9.6\r\n", b"SSH-2.0-client\r\n", 0)],
    ids=["ssh-1.5", "ssh-1.99", "ssh-2.0"],
)  # fmt: skip
def test_ssh_version_1(server: bytes, client: bytes, expected: int) -> None:
    """An SSH-1.x banner (not 1.99) is reported once per connection."""
    frames = tcp_exchange(CLIENT, 40000, SERVER, 22, 1.0, [(b"", server), (client, b"")])
    assert ids(run_frames(frames)).count("threat.ssh_v1") == expected


@pytest.mark.parametrize(
    ("client", "server", "expected"),
    [
        (0x0301, 0x0301, ["threat.tls_1_0_1_1"]),
        (0x0303, 0x0302, ["threat.tls_1_0_1_1"]),
        (0x0300, 0x0300, ["threat.ssl_v2_v3"]),
        (0x0303, 0x0303, []),
    ],
    ids=["tls-1.0", "server-chose-1.1", "sslv3", "tls-1.2"],
)
def test_old_tls_versions(client: int, server: int, expected: list[str]) -> None:
    """SSLv3 and TLS 1.0/1.1, offered at best or chosen, are reported once per connection; TLS 1.2 is not."""
    frames = tcp_exchange(CLIENT, 40000, SERVER, 443, 1.0, [(tls_hello(client), tls_hello(server, server=True))])
    assert ids(run_frames(frames)) == expected


def _mysql_driver() -> PacketDriver:
    driver = PacketDriver()
    driver.feed(tcp(0.0, A, 40000, B, 3306, TCP_SYN, seq=1), tcp(0.001, B, 3306, A, 40000, TCP_SYN | TCP_ACK, ack=2))
    return driver


def _denied(code: int = 1045) -> L7Event:
    return L7Event("mysql", "error", Direction.S2C, {"code": code, "message": "Access denied for user 'root'"})


@pytest.mark.parametrize(("failures", "code", "expected"), [(5, 1045, 1), (4, 1045, 0), (8, 1064, 0)],
                         ids=["five-denied", "four-denied", "syntax-errors"])  # fmt: skip
def test_mysql_access_denied_brute_force(failures: int, code: int, expected: int) -> None:
    """Five access-denied answers to one client within a minute are a brute force; other errors are not."""
    driver = _mysql_driver()
    found = []
    for _ in range(failures):
        found += driver.engine.on_event(driver.flow, _denied(code))
    assert ids(found).count("threat.mysql_access_denied") == expected


def test_sql_injection_from_a_mysql_query_event() -> None:
    """A MySQL COM_QUERY with a tautology is SQL injection, the statement kept in the finding's L7 context."""
    driver = _mysql_driver()
    sql = "SELECT * FROM users WHERE name = 'x' OR '1'='1'"
    event = L7Event("mysql", "query", Direction.C2S, {"command": "QUERY", "sql": sql, "truncated": False})
    found = driver.engine.on_event(driver.flow, event)
    assert ids(found) == ["threat.sqli"]
    assert found[0].l7 == {"app": "mysql", "sql": sql}
    assert [h["kind"] for h in found[0].detail["hits"]] == ["tautology"]
    ordinary = L7Event("mysql", "query", Direction.C2S, {"sql": "SELECT * FROM users WHERE name = 'x'"})
    assert driver.engine.on_event(driver.flow, ordinary) == []


def _pg_message(kind: bytes, body: bytes) -> bytes:
    return kind + struct.pack("!I", len(body) + 4) + body


def test_sql_injection_in_postgresql_frames() -> None:
    """A PostgreSQL simple query carrying a time delay is found through the whole datapath."""
    params = b"user\x00app\x00database\x00shop\x00\x00"
    startup = struct.pack("!II", len(params) + 8, 196608) + params
    ready = _pg_message(b"R", struct.pack("!I", 0)) + _pg_message(b"Z", b"I")
    attack = _pg_message(b"Q", b"SELECT id FROM items WHERE id = 1 AND 1=(SELECT 1 FROM pg_sleep(5))\x00")
    normal = _pg_message(b"Q", b"SELECT id FROM items WHERE name = 'O''Brien'\x00")
    frames = tcp_exchange(CLIENT, 40000, SERVER, 5432, 1.0, [(startup, ready), (normal, b""), (attack, b"")])
    found = [f for f in run_frames(frames) if f.id == "threat.sqli"]
    assert len(found) == 1 and found[0].l7["app"] == "postgresql" and "pg_sleep" in found[0].l7["sql"]
    assert found[0].detail["hits"][0]["kind"] == "time_delay"


def test_events_of_other_apps_make_no_finding() -> None:
    """Events the threat engine has no check for pass without a finding."""
    driver = _mysql_driver()
    event = L7Event("redis", "command", Direction.C2S, {"command": "GET"})
    assert driver.engine.on_event(driver.flow, event) == []
    driver.feed(tcp(0.002, A, 40000, B, 3306, TCP_ACK, seq=2, ack=1))
    assert driver.findings == []
