"""Sessions recorded from real servers (nginx, Redis, dnsmasq, OpenSSH, Mosquitto) through the full registry.

The fixtures were made once by `fixtures/record_servers.py` (see `fixtures/servers_SOURCES.md`).
Each flow must be named and read the same on its usual server port and on another protocol's
port, and each protocol parser must give the same events however the bytes are cut.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import pytest

from podwall.core.types import PROTO_TCP, PROTO_UDP, Direction
from podwall.dpi.base import DetectContext, Detector, L7Event
from podwall.dpi.registry import detectors
from podwall.dpi.session import DpiSession

from .fixtures import FEED_MODES, HERE, Chunks, feed_all, load_chunks, split_chunks, summary

C2S, S2C = Direction.C2S, Direction.S2C
CLIENT_PORT = 40312
HOST = "app.podwall.test"
JA4 = re.compile(r"^t1[23]d\d{4}[0-9a-z]{2}_[0-9a-f]{12}_[0-9a-f]{12}$")

Expected = list[tuple[str, Direction, dict[str, Any]]]


@dataclass(frozen=True)
class Recorded:
    """One recorded flow: where it ran, a port of another protocol, and what must be read from it."""

    fixture: str
    proto: int
    port: int
    wrong_port: int
    app: str
    server_name: str | None
    events: Expected  # every event in order: kind, direction and the fields that must have these values


HTTP_KEEPALIVE: Expected = [
    ("request", C2S, {"method": "GET", "path": "/index.html", "host": HOST, "user_agent": "curl/7.88.1"}),
    ("response", S2C, {"status": 200, "content_type": "text/html", "content_length": 44, "chunked": False}),
    ("request", C2S, {"method": "GET", "path": "/missing.html", "host": HOST, "user_agent": "curl/7.88.1"}),
    ("response", S2C, {"status": 404, "reason": "Not Found", "content_type": "text/html", "chunked": False}),
]
HTTP_POST: Expected = [
    ("request", C2S, {"method": "POST", "path": "/api/items", "content_type": "application/json",
                      "content_length": 22, "body": b'{"name":"pen","qty":3}'}),
    ("response", S2C, {"status": 201, "reason": "Created", "body": b'{"created":true,"received":22}'}),
]  # fmt: skip
HTTP_CHUNKED: Expected = [
    ("request", C2S, {"method": "GET", "path": "/notes.txt", "host": HOST}),
    ("response", S2C, {"status": 200, "content_type": "text/plain", "content_length": None, "chunked": True}),
]
TLS13: Expected = [
    ("client_hello", C2S, {"version": "TLSv1.3", "sni": HOST, "alpn": ["http/1.1"]}),
    ("server_hello", S2C, {"version": "TLSv1.3", "cipher": 0x1302, "hello_retry_request": False}),
]
TLS12: Expected = [
    ("client_hello", C2S, {"version": "TLSv1.2", "sni": HOST, "alpn": ["http/1.1"], "supported_versions": []}),
    ("server_hello", S2C, {"version": "TLSv1.2", "cipher": 0xC02C, "alpn": "http/1.1"}),
]


def _cmd(command: str, key: str | None, argc: int) -> tuple[str, Direction, dict[str, Any]]:
    return ("command", C2S, {"command": command, "key": key, "argc": argc})


def _reply(kind: str, value: Any) -> tuple[str, Direction, dict[str, Any]]:
    return ("reply", S2C, {"type": kind, "value": value})


# redis-cli asks for COMMAND DOCS first (its hints): a 170 KB nested reply of 480 entries
REDIS_RESP2: Expected = [
    _cmd("COMMAND", None, 2), _reply("array", 480),
    _cmd("PING", None, 1), _reply("simple_string", "PONG"),
    _cmd("SET", "user:42", 3), _reply("simple_string", "OK"),
    _cmd("GET", "user:42", 2), _reply("bulk_string", "alice"),
    _cmd("HSET", "session:9", 6), _reply("integer", 2),
    _cmd("MULTI", None, 1), _reply("simple_string", "OK"),
    _cmd("INCR", "visits", 2), _reply("simple_string", "QUEUED"),
    _cmd("EXPIRE", "visits", 3), _reply("simple_string", "QUEUED"),
    _cmd("EXEC", None, 1), _reply("array", 2),
    _cmd("HGET", "user:42", 3), _reply("error", "WRONGTYPE Operation against a key holding the wrong kind of value"),
    _cmd("INFO", None, 1), ("reply", S2C, {"type": "bulk_string"}),
]  # fmt: skip
# a raw RESP client (redis-cli would add COMMAND DOCS again): HELLO 3 switches the replies to RESP3
REDIS_RESP3: Expected = [
    _cmd("HELLO", None, 2), _reply("map", 7),
    _cmd("HSET", "profile:1", 6), _reply("integer", 2),
    _cmd("HGETALL", "profile:1", 2), _reply("map", 2),
    _cmd("SMEMBERS", "nosuchset", 2), _reply("set", 0),
    _cmd("ZADD", "board", 4), _reply("integer", 1),
    _cmd("ZSCORE", "board", 3), _reply("double", 1.5),
    _cmd("GET", "missing:key", 2), _reply("null", None),
]  # fmt: skip


def _dns(qname: str, qtype: str, rcode: str = "NOERROR", ancount: int = 1) -> Expected:
    query = {"qname": qname, "qtype": qtype, "rcode": "NOERROR", "qr": False}
    response = {"qname": qname, "qtype": qtype, "rcode": rcode, "qr": True, "ancount": ancount}
    return [("query", C2S, query), ("response", S2C, response)]


DNS_A = _dns(HOST, "A")
DNS_AAAA = _dns(HOST, "AAAA")
DNS_NX = _dns("nosuch.podwall.test", "A", "NXDOMAIN", ancount=0)
DNS_TXT = _dns("info.podwall.test", "TXT")
DNS_TCP = [*DNS_A, *_dns("db.podwall.test", "A"), *DNS_NX, *DNS_TXT]
# the rdata each answer must carry, by fixture (checked apart: answers are lists of dicts)
DNS_RDATA = {
    "dns_dnsmasq_udp_a": ["192.0.2.10"],
    "dns_dnsmasq_udp_aaaa": ["2001:db8::10"],
    "dns_dnsmasq_udp_nxdomain": [],
    "dns_dnsmasq_udp_txt": ['"v=podwall1 policy=strict"'],
    "dns_dnsmasq_tcp": ["192.0.2.10", "192.0.2.53", '"v=podwall1 policy=strict"'],
}

SSH_BANNER = {"proto_version": "2.0", "software": "OpenSSH_9.2p1", "comments": "Debian-2+deb12u10"}
SSH: Expected = [
    ("banner", C2S, {"side": "client", **SSH_BANNER}),
    ("banner", S2C, {"side": "server", **SSH_BANNER}),
    ("kexinit", C2S, {"compression_c2s": ["none", "zlib@openssh.com", "zlib"], "first_kex_follows": False}),
    ("kexinit", S2C, {"host_key_algorithms": ["ssh-ed25519"], "compression_s2c": ["none", "zlib@openssh.com"]}),
]

TOPIC = "sensors/kitchen/temperature"
MQTT_SUB: Expected = [
    ("connect", C2S, {"protocol_name": "MQTT", "protocol_level": 4, "client_id": "podwall-sub", "username": None}),
    ("connack", S2C, {"code": 0, "session_present": False}),
    ("subscribe", C2S, {"topics": ["sensors/+/temperature", "alerts/#"], "packet_id": 1}),
    ("suback", S2C, {"packet_id": 1, "codes": [1, 1]}),
    ("publish", S2C, {"topic": TOPIC, "qos": 1, "packet_id": 1, "payload_len": 4}),
    ("disconnect", C2S, {"code": 0}),
]
MQTT_PUB: Expected = [
    ("connect", C2S, {"protocol_level": 4, "client_id": "podwall-pub", "clean_session": True, "keepalive": 60}),
    ("connack", S2C, {"code": 0}),
    ("publish", C2S, {"topic": TOPIC, "qos": 1, "retain": False, "packet_id": 1, "payload_len": 4}),
    ("disconnect", C2S, {"code": 0}),
]
MQTT_PUB5: Expected = [
    ("connect", C2S, {"protocol_level": 5, "client_id": "podwall-pub5", "username": "device7"}),
    ("connack", S2C, {"code": 0}),
    ("publish", C2S, {"topic": "alerts/door", "qos": 0, "packet_id": None, "payload_len": 4}),
    ("disconnect", C2S, {"code": 0}),
]

T, U = PROTO_TCP, PROTO_UDP
RECORDED = [
    Recorded("http_nginx_keepalive", T, 80, 6379, "http", HOST, HTTP_KEEPALIVE),
    Recorded("http_nginx_post", T, 80, 22, "http", HOST, HTTP_POST),
    Recorded("http_nginx_chunked", T, 8080, 5432, "http", HOST, HTTP_CHUNKED),
    Recorded("tls_nginx_tls13_curl", T, 443, 80, "tls", HOST, TLS13),
    Recorded("tls_nginx_tls12_openssl", T, 443, 6379, "tls", HOST, TLS12),
    Recorded("redis_cli_resp2", T, 6379, 5432, "redis", None, REDIS_RESP2),
    Recorded("redis_raw_resp3", T, 6379, 11211, "redis", None, REDIS_RESP3),
    Recorded("dns_dnsmasq_udp_a", U, 53, 5060, "dns", HOST, DNS_A),
    Recorded("dns_dnsmasq_udp_aaaa", U, 53, 123, "dns", HOST, DNS_AAAA),
    Recorded("dns_dnsmasq_udp_nxdomain", U, 53, 514, "dns", "nosuch.podwall.test", DNS_NX),
    Recorded("dns_dnsmasq_udp_txt", U, 53, 67, "dns", "info.podwall.test", DNS_TXT),
    Recorded("dns_dnsmasq_tcp", T, 53, 80, "dns", HOST, DNS_TCP),
    Recorded("ssh_openssh_batch", T, 22, 443, "ssh", None, SSH),
    Recorded("mqtt_mosquitto_sub", T, 1883, 6379, "mqtt", None, MQTT_SUB),
    Recorded("mqtt_mosquitto_pub", T, 1883, 80, "mqtt", None, MQTT_PUB),
    Recorded("mqtt_mosquitto_pub_v5", T, 1883, 4222, "mqtt", None, MQTT_PUB5),
]
BY_NAME = {r.fixture: r for r in RECORDED}
ON_PORTS = [
    pytest.param(r, port, id=f"{r.fixture}-{where}")
    for r in RECORDED
    for where, port in (("usual-port", r.port), ("wrong-port", r.wrong_port))
]


def _session(flow: Recorded, port: int, chunks: Chunks) -> DpiSession:
    session = DpiSession(DetectContext(flow.proto, CLIENT_PORT, port))
    for direction, data in chunks:
        if flow.proto == PROTO_UDP:
            session.on_datagram(direction, data)
        else:
            session.on_stream(direction, data)
    session.finish()
    return session


def _picked(events: list[L7Event], expected: Expected) -> Expected:
    """The events cut down to the fields `expected` names, event by event (extra events kept whole)."""
    out: Expected = []
    for i, event in enumerate(events):
        keys = expected[i][2].keys() if i < len(expected) else event.fields.keys()
        out.append((event.kind, event.direction, {k: event.fields.get(k, "<missing>") for k in keys}))
    return out


def _detector(name: str) -> Detector:
    return next(d for d in detectors() if d.name == name)


def test_every_recorded_fixture_is_listed() -> None:
    """Every fixture record_servers.py writes has a row in the table (and every row a file)."""
    prefixes = (
        "http_nginx_",
        "tls_nginx_",
        "redis_cli_",
        "redis_raw_",
        "dns_dnsmasq_",
        "ssh_openssh_batch",
        "mqtt_mosquitto_",
    )
    on_disk = {p.name.removesuffix(".chunks.bin") for p in HERE.glob("*.chunks.bin") if p.name.startswith(prefixes)}
    assert on_disk == set(BY_NAME)


@pytest.mark.parametrize(("flow", "port"), ON_PORTS)
def test_full_registry_names_and_reads_the_flow(flow: Recorded, port: int) -> None:
    """The full registry names a real server's flow by its payload, on its port or another's, and reads its fields."""
    session = _session(flow, port, load_chunks(flow.fixture))
    assert (session.app, session.error) == (flow.app, None)
    assert session.server_name == flow.server_name
    assert _picked(session.events, flow.events) == flow.events
    assert session.event_count == len(flow.events)


@pytest.mark.parametrize("flow", [r for r in RECORDED if r.app == "tls"], ids=lambda r: r.fixture)
def test_tls_client_hello_has_a_well_formed_ja4(flow: Recorded) -> None:
    """A real ClientHello gets a JA4 whose version part matches the hello and whose hashes are 12 hex digits."""
    hello = _session(flow, flow.port, load_chunks(flow.fixture)).events[0]
    fingerprint = hello.fields["ja4"]
    assert JA4.match(fingerprint), fingerprint
    assert fingerprint[1:3] == {"TLSv1.3": "13", "TLSv1.2": "12"}[hello.fields["version"]]
    assert fingerprint[3] == "d"  # an SNI was sent
    assert fingerprint[8:10] == "h1"  # ALPN http/1.1: first and last characters


@pytest.mark.parametrize("name", sorted(DNS_RDATA), ids=str)
def test_dns_answers_carry_the_served_records(name: str) -> None:
    """dnsmasq's answers (A, AAAA, TXT; none for NXDOMAIN) come out as presentation-form rdata."""
    flow = BY_NAME[name]
    events = _session(flow, flow.port, load_chunks(name)).events
    rdata = [a["rdata"] for e in events if e.kind == "response" for a in e.fields["answers"]]
    assert rdata == DNS_RDATA[name]


def test_redis_info_reply_is_a_big_bulk_string() -> None:
    """INFO's multi-kilobyte bulk reply is reported with its full size and a value cut to 256 bytes."""
    flow = BY_NAME["redis_cli_resp2"]
    reply = _session(flow, flow.port, load_chunks(flow.fixture)).events[-1]
    assert reply.fields["size"] > 4000
    assert reply.fields["value"].startswith("# Server\r\nredis_version:7.0.15")
    assert len(reply.fields["value"]) == 256


CUTS = [
    pytest.param(r, mode, id=f"{r.fixture}-{mode}")
    for r in RECORDED
    for mode in FEED_MODES
    if r.proto == PROTO_TCP or mode == "whole"  # a UDP parser takes each datagram whole
]


@pytest.mark.parametrize(("flow", "mode"), CUTS)
def test_parser_gives_the_same_events_however_the_bytes_are_cut(flow: Recorded, mode: str) -> None:
    """The protocol's own parser yields identical events fed whole, byte by byte or merged per direction."""
    ctx = DetectContext(flow.proto, CLIENT_PORT, flow.port)
    detector = _detector(flow.app)
    chunks = load_chunks(flow.fixture)
    reference = summary(feed_all(detector.parser(ctx), chunks))
    assert [(kind, Direction[d]) for kind, d, _ in reference] == [(k, d) for k, d, _ in flow.events]
    assert summary(feed_all(detector.parser(ctx), split_chunks(chunks, mode))) == reference
