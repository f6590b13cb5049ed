"""MQTT detection by CONNECT and parsing of control packets (3.1, 3.1.1, 5.0): corpus flows, hand-built, errors."""

from __future__ import annotations

import pytest

from podwall.core.errors import ProtocolError
from podwall.core.limits import Limits
from podwall.core.types import PROTO_TCP, Direction
from podwall.dpi.base import DetectContext, Detection
from podwall.dpi.protocols.dns import DnsDetector
from podwall.dpi.protocols.http1 import HttpDetector
from podwall.dpi.protocols.mqtt import MqttDetector, MqttParser
from podwall.dpi.protocols.redis import RedisDetector
from podwall.dpi.protocols.tls import TlsDetector
from podwall.dpi.session import DpiSession

from .fixtures import FEED_MODES, Chunks, feed_all, load_chunks, split_chunks, summary
from .fixtures import handmade as hm
from .textproto_props import property_tests

C2S, S2C = Direction.C2S, Direction.S2C
ON_1883 = DetectContext(PROTO_TCP, 40000, 1883)
ON_9000 = DetectContext(PROTO_TCP, 40000, 9000)


def s16(value: bytes) -> bytes:
    return len(value).to_bytes(2, "big") + value


def packet(first: int, body: bytes) -> bytes:
    """A control packet: the fixed header with the remaining length as a varint, then the body."""
    size = len(body)
    varint = bytearray()
    while True:
        byte = size & 0x7F
        size >>= 7
        varint.append(byte | (0x80 if size else 0))
        if not size:
            break
    return bytes([first]) + bytes(varint) + body


CONNECT_V5 = packet(
    0x10,
    s16(b"MQTT") + b"\x05" + bytes([0x80 | 0x40 | 0x04 | 0x02]) + b"\x00\x3c" + b"\x03\x21\x00\x10"
    + s16(b"sensor-7") + b"\x00" + s16(b"will/t") + s16(b"bye") + s16(b"dev") + s16(b"pw"),
)  # fmt: skip
V5_SESSION: Chunks = [
    (C2S, CONNECT_V5),
    (S2C, packet(0x20, b"\x01\x00\x00")),
    (C2S, packet(0x82, b"\x00\x07\x00" + s16(b"a/+") + b"\x01" + s16(b"b/#") + b"\x00")),
    (S2C, packet(0x90, b"\x00\x07\x00\x01\x00")),
    (C2S, packet(0x33, s16(b"a/x") + b"\x00\x09" + b"\x02\x01\x01" + b"P" * 70000)),
    (S2C, packet(0x40, b"\x00\x09")),
    (C2S, packet(0xA2, b"\x00\x0a\x00" + s16(b"a/+"))),
    (C2S, b"\xc0\x00"),
    (S2C, b"\xd0\x00"),
    (C2S, packet(0xE0, b"\x04\x00")),
]


@pytest.mark.parametrize(
    ("direction", "data", "expected"),
    [
        pytest.param(C2S, CONNECT_V5, Detection.MATCH, id="connect-v5"),
        pytest.param(C2S, load_chunks("mqtt_session")[0][1], Detection.MATCH, id="connect-mqisdp-v3"),
        pytest.param(C2S, load_chunks("mqtt_azure_connect")[0][1], Detection.MATCH, id="connect-v311"),
        pytest.param(C2S, CONNECT_V5[:6], Detection.NEED_MORE, id="name-prefix"),
        pytest.param(C2S, b"\x10", Detection.NEED_MORE, id="first-byte"),
        pytest.param(C2S, b"\x10\xff\xff", Detection.NEED_MORE, id="length-prefix"),
        pytest.param(C2S, packet(0x10, s16(b"MQTT") + b"\x07\x02\x00\x3c\x00\x00"), Detection.NO, id="bad-level"),
        pytest.param(C2S, packet(0x10, s16(b"MQTT") + b"\x04\x03\x00\x3c\x00\x00"), Detection.NO, id="reserved-flag"),
        pytest.param(C2S, packet(0x10, s16(b"AMQP") + b"\x04\x02\x00\x3c\x00\x00"), Detection.NO, id="other-name"),
        pytest.param(C2S, b"\x10\x02\x00\x00", Detection.NO, id="too-short"),
        pytest.param(C2S, b"\x10\xff\xff\xff\xff\x01", Detection.NO, id="varint-too-long"),
        pytest.param(C2S, packet(0x30, s16(b"t") + b"x"), Detection.NO, id="publish-first"),
        pytest.param(S2C, b"\x20\x02\x00\x00", Detection.NEED_MORE, id="connack-keeps"),
        pytest.param(S2C, b"SSH-2.0-x\r\n", Detection.NO, id="server-first-is-not-mqtt"),
        pytest.param(C2S, hm.HTTP_GET, Detection.NO, id="http-request-is-not-mqtt"),
        pytest.param(C2S, hm.tls_records(hm.client_hello()), Detection.NO, id="tls-is-not-mqtt"),
        pytest.param(C2S, b"\x10\x81\xfa\x9c\x00\x01random", Detection.NO, id="random-bytes-are-not-mqtt"),
    ],
)
def test_detect(direction: Direction, data: bytes, expected: Detection) -> None:
    """A client CONNECT with a known protocol name and level decides MQTT."""
    assert MqttDetector().detect(direction, data, ON_1883) is expected


def test_non_standard_port_is_still_mqtt() -> None:
    """A v5 session on port 9000 is decided on the CONNECT and parsed."""
    session = DpiSession(
        ON_9000, detectors=[MqttDetector(), HttpDetector(), TlsDetector(), DnsDetector(), RedisDetector()]
    )
    for direction, data in V5_SESSION:
        session.on_stream(direction, data)
    assert (session.app, session.error) == ("mqtt", None)
    assert session.events[0].fields["client_id"] == "sensor-7"


@pytest.mark.parametrize("mode", FEED_MODES)
def test_v5_session(mode: str) -> None:
    """MQTT 5: properties skipped, password never reported, a 70 kB PUBLISH streams through."""
    events = feed_all(MqttParser(Limits(parser_buffer=4096)), split_chunks(V5_SESSION, mode))
    assert [e.kind for e in events] == [
        "connect",
        "connack",
        "subscribe",
        "suback",
        "publish",
        "unsubscribe",
        "disconnect",
    ]
    assert events[0].fields == {
        "protocol_name": "MQTT",
        "protocol_level": 5,
        "client_id": "sensor-7",
        "username": "dev",
        "clean_session": True,
        "keepalive": 60,
        "will_topic": "will/t",
    }
    assert events[1].fields == {"code": 0, "session_present": True}
    assert events[2].fields["topics"] == ["a/+", "b/#"]
    assert events[3].fields["codes"] == [1, 0]
    assert events[4].fields == {
        "topic": "a/x", "qos": 1, "retain": True, "dup": False, "packet_id": 9, "payload_len": 70000,
    }  # fmt: skip
    assert events[6].fields == {"code": 4}
    assert all("pw" not in str(e.fields.values()) for e in events)


@pytest.mark.parametrize("mode", FEED_MODES)
def test_corpus_session(mode: str) -> None:
    """mqtt.pcap: MQIsdp CONNECT, SUBSCRIBE, CONNACK, SUBACK, a PUBLISH each way and DISCONNECT."""
    chunks = load_chunks("mqtt_session")
    events = feed_all(MqttParser(), split_chunks(chunks, mode))
    assert summary(events) == summary(feed_all(MqttParser(), chunks))
    assert [(e.kind, e.direction) for e in events] == [
        ("connect", C2S), ("subscribe", C2S), ("connack", S2C), ("suback", S2C),
        ("publish", C2S), ("publish", S2C), ("disconnect", C2S),
    ]  # fmt: skip
    assert (events[0].fields["protocol_level"], events[0].fields["username"]) == (3, "02D5050223D3")
    assert events[4].fields["topic"] == "astr/admin/otaupd8"


def test_corpus_azure_connect() -> None:
    """mqtt.pcap's one-packet Azure IoT flow: a 3.1.1 CONNECT with the hub in the user name."""
    (event,) = feed_all(MqttParser(), load_chunks("mqtt_azure_connect"))
    assert event.fields["protocol_level"] == 4
    assert event.fields["username"].startswith("iotazewpmlithub.azure-devices.net/")


@pytest.mark.parametrize(
    ("chunks", "message"),
    [
        pytest.param([(C2S, b"\x00\x00")], "reserved packet type 0", id="type-0"),
        pytest.param([(C2S, b"\xf0\x00")], "reserved packet type 15", id="auth-before-v5"),
        pytest.param([(C2S, b"\x80\x05\x00\x01\x00\x01a")], "flags", id="subscribe-flags"),
        pytest.param([(C2S, b"\x36\x05" + s16(b"a/b") + b"x")], "QoS 3", id="qos-3"),
        pytest.param([(C2S, b"\x30\xff\xff\xff\xff\x01")], "longer than 4 bytes", id="varint-5-bytes"),
        pytest.param([(C2S, packet(0x82, b"\x00\x01"))], "without topics", id="subscribe-empty"),
        pytest.param([(C2S, packet(0x82, b"\x00\x01\x00\x09ab"))], "truncated", id="topic-overrun"),
        pytest.param(
            [(C2S, packet(0x10, s16(b"MQTT") + b"\x09\x02\x00\x3c\x00\x00"))], "unknown protocol", id="level-9"
        ),
        pytest.param([(C2S, b"\x82\xff\xff\x7f")], "exceeds", id="huge-subscribe"),
    ],
)
@pytest.mark.parametrize("mode", ["whole", "byte-by-byte"])
def test_malformed_is_protocol_error(chunks: Chunks, message: str, mode: str) -> None:
    """Reserved types and flags, bad lengths and truncated fields raise ProtocolError saying what."""
    with pytest.raises(ProtocolError, match=message):
        feed_all(MqttParser(), split_chunks(chunks, mode))


(
    test_random_bytes_raise_only_protocol_error,
    test_mutated_transcripts_raise_only_protocol_error,
    test_held_memory_is_bounded,
    test_any_split_gives_the_same_events,
    test_prefix_of_a_match_is_never_no,
    test_no_is_final,
) = property_tests(
    lambda limits: MqttParser(limits),
    [load_chunks("mqtt_session"), load_chunks("mqtt_azure_connect"), V5_SESSION[:4] + V5_SESSION[5:]],
    MqttDetector(),
    [(C2S, CONNECT_V5), (C2S, load_chunks("mqtt_session")[0][1])],
)
