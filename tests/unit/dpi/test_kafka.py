"""Kafka detection (also mid-stream) and parsing: request headers, topics, correlation of responses."""

from __future__ import annotations

import struct
from datetime import timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from podwall.core.errors import ProtocolError
from podwall.core.limits import Limits
from podwall.core.types import PROTO_TCP, Direction
from podwall.dpi.base import DetectContext, Detection
from podwall.dpi.protocols.dns import DnsDetector
from podwall.dpi.protocols.http1 import HttpDetector
from podwall.dpi.protocols.kafka import MAX_PENDING, KafkaDetector, KafkaParser
from podwall.dpi.protocols.redis import RedisDetector
from podwall.dpi.protocols.tls import TlsDetector
from podwall.dpi.session import DpiSession

from .fixtures import FEED_MODES, Chunks, feed_all, load_chunks, split_chunks, summary
from .fixtures import brokers_checks as bc
from .fixtures import handmade_brokers as hb

C2S, S2C = Direction.C2S, Direction.S2C
ON_9092 = DetectContext(PROTO_TCP, 40000, 9092)
ON_8080 = DetectContext(PROTO_TCP, 40000, 8080)
PROPS = settings(max_examples=120, deadline=timedelta(milliseconds=1500), suppress_health_check=[HealthCheck.too_slow])

METADATA = hb.kafka_request(3, 1, 11, hb.metadata_v1("orders", "payments"))


@pytest.mark.parametrize(
    ("ctx", "direction", "data", "expected"),
    [
        pytest.param(ON_9092, C2S, METADATA, Detection.MATCH, id="metadata-v1"),
        pytest.param(ON_8080, C2S, METADATA, Detection.MATCH, id="kafka on a non-standard port is still kafka"),
        pytest.param(ON_9092, C2S, METADATA[:12], Detection.NEED_MORE, id="header-prefix"),
        pytest.param(ON_9092, C2S, METADATA[:21], Detection.MATCH, id="header-enough"),
        pytest.param(ON_9092, C2S, hb.kafka_request(18, 3, 1, b"", flexible=True), Detection.MATCH, id="api-versions"),
        pytest.param(ON_9092, C2S, hb.kafka_request(3, 1, 1, b"", client=None), Detection.MATCH, id="null-client-id"),
        pytest.param(
            ON_9092, S2C, hb.kafka_request(99, 0, 1, b""), Detection.NEED_MORE, id="unknown-api-may-be-a-response"
        ),
        pytest.param(ON_9092, C2S, hb.kafka_request(99, 0, 1, b""), Detection.NO, id="client-sends-only-requests"),
        pytest.param(ON_9092, C2S, bytes(range(256)), Detection.NO, id="binary-counting-bytes"),
        pytest.param(ON_9092, S2C, b"\x00\x01\x02\x03" + bytes(8), Detection.NO, id="reply-larger-than-dpi-buffer"),
        pytest.param(
            ON_9092,
            S2C,
            hb.kafka_request(3, 40, 1, b""),
            Detection.NEED_MORE,
            id="implausible-version-may-be-a-response",
        ),
        pytest.param(
            ON_9092,
            S2C,
            hb.kafka_request(3, 1, 1, b"", client="bad\x01id"),
            Detection.NEED_MORE,
            id="binary-client-may-be-a-response",
        ),
        pytest.param(
            ON_9092, S2C, hb.kafka_response(5, bytes(40)) + METADATA, Detection.MATCH, id="request-after-reply"
        ),
        pytest.param(ON_9092, S2C, hb.kafka_response(0x00810000, bytes(20)), Detection.NEED_MORE, id="reply-only"),
        pytest.param(ON_9092, C2S, struct.pack(">i", 1 << 30) + bytes(8), Detection.NO, id="huge-size"),
        pytest.param(ON_9092, C2S, hb.kafka_request(99, 0, 1, b"") + b"\xff" * 4, Detection.NO, id="then-garbage"),
        pytest.param(ON_9092, C2S, struct.pack(">i", 2 << 20) + b"\xff" * 8, Detection.NO, id="big-non-request"),
        pytest.param(ON_9092, C2S, hb.kafka_response(7, b"\x00") * 8 + METADATA, Detection.NO, id="request-too-late"),
        *[
            pytest.param(ON_9092, C2S, data, Detection.NO, id=f"{name} is not kafka")
            for name, data in bc.FOREIGN_FIRST_MESSAGES.items()
            if name not in ("zeros", "postgres-startup")
        ],
    ],
)
def test_detect(ctx: DetectContext, direction: Direction, data: bytes, expected: Detection) -> None:
    """A plausible request header among the first messages decides kafka; sane-sized others only wait."""
    assert KafkaDetector().detect(direction, data, ctx) is expected


TRANSCRIPT: Chunks = [
    (C2S, METADATA),
    (S2C, hb.kafka_response(11)),
    (C2S, hb.kafka_request(0, 3, 12, hb.produce_v3("orders"), client="svc")),
    (C2S, hb.kafka_request(0, 9, 13, hb.produce_v9("a", "b"), flexible=True)),
    (C2S, hb.kafka_request(1, 4, 14, hb.fetch_v4("payments"))),
    (C2S, hb.kafka_request(1, 12, 15, hb.fetch_v12("t1", "t2"), flexible=True)),
    (C2S, hb.kafka_request(3, 12, 16, hb.metadata_v12("m1"), flexible=True)),
    (C2S, hb.kafka_request(3, 1, 17, b"\x00\x00\x00\x05\x00")),  # topic count says 5, body ends
    (S2C, hb.kafka_response(13) + hb.kafka_response(99)),
]


@pytest.mark.parametrize("mode", FEED_MODES)
def test_transcript(mode: str) -> None:
    """Requests give api, version, correlation id, client id and topics; responses their request's api."""
    events = feed_all(KafkaParser(), split_chunks([*TRANSCRIPT, (C2S, METADATA[:7])], mode))
    requests = [
        (e.fields["api_name"], e.fields["api_version"], e.fields["correlation_id"], e.fields["topics"])
        for e in events
        if e.kind == "request"
    ]
    assert requests == [
        ("Metadata", 1, 11, ["orders", "payments"]),
        ("Produce", 3, 12, ["orders"]),
        ("Produce", 9, 13, ["a", "b"]),
        ("Fetch", 4, 14, ["payments"]),
        ("Fetch", 12, 15, ["t1", "t2"]),
        ("Metadata", 12, 16, ["m1"]),
        ("Metadata", 1, 17, []),
    ]
    responses = [(e.fields["correlation_id"], e.fields["api_name"]) for e in events if e.kind == "response"]
    assert responses == [(11, "Metadata"), (13, "Produce"), (99, None)]
    assert events[2].fields["client_id"] == "svc"


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        pytest.param(
            "kafka_console_producer",
            [("request", "ApiVersions", []), ("response", "ApiVersions", None), ("request", "InitProducerId", []),
             ("response", "InitProducerId", None), ("request", "Metadata", ["sampleTopic"]),
             ("response", "Metadata", None), ("request", "Produce", ["sampleTopic"]), ("response", "Produce", None)],
            id="java-flexible-versions",
        ),
        pytest.param(
            "kafka_rdkafka_produce",
            [("request", "Produce", ["LB_MAIN_LOG_INPUT"]), ("response", "Produce", None)] * 2,
            id="rdkafka-produce-v3",
        ),
        pytest.param(
            "kafka_midstream",
            [("response", None, None), ("response", None, None), ("request", "Metadata", ["LB_MAIN_LOG_INPUT"]),
             ("response", "Metadata", None)],
            id="capture-starts-with-responses",
        ),
    ],
)  # fmt: skip
@pytest.mark.parametrize("mode", FEED_MODES)
def test_corpus(name: str, expected: list[tuple[str, str | None, list[str] | None]], mode: str) -> None:
    """kafka.pcapng flows: requests with topics, responses matched by correlation id, however split."""
    events = feed_all(KafkaParser(), split_chunks(load_chunks(name), mode))
    assert [(e.kind, e.fields["api_name"], e.fields.get("topics")) for e in events] == expected


@pytest.mark.parametrize(
    ("name", "app"),
    [
        pytest.param("kafka_console_producer", "kafka", id="from-first-request"),
        pytest.param("kafka_rdkafka_produce", "kafka", id="produce"),
        pytest.param("kafka_midstream", "kafka", id="mid-stream-from-later-request"),
        pytest.param("kafka_api_versions", "kafka", id="rdkafka-api-versions"),
    ],
)
def test_session_per_flow(name: str, app: str) -> None:
    """Each corpus flow is named kafka by a session with the other detectors, even when it starts mid-stream."""
    session = DpiSession(
        ON_9092, detectors=[KafkaDetector(), HttpDetector(), TlsDetector(), DnsDetector(), RedisDetector()]
    )
    for direction, data in load_chunks(name):
        session.on_stream(direction, data)
    assert (session.app, session.error) == (app, None)


def test_pending_map_is_bounded() -> None:
    """Unanswered correlation ids are forgotten oldest first past MAX_PENDING."""
    parser = KafkaParser()
    for i in range(MAX_PENDING + 10):
        parser.feed(C2S, hb.kafka_request(12, 0, i, b""))
    (oldest, newest) = parser.feed(S2C, hb.kafka_response(0) + hb.kafka_response(MAX_PENDING + 9))
    assert (oldest.fields["api_name"], newest.fields["api_name"]) == (None, "Heartbeat")


def test_large_message_streams_through() -> None:
    """A request larger than the parser buffer is read from its head; the rest passes unbuffered."""
    parser = KafkaParser(Limits(parser_buffer=256))
    big = hb.kafka_request(0, 3, 1, hb.produce_v3("big", b"R" * 5000))
    events = [e for i in range(0, len(big), 300) for e in parser.feed(C2S, big[i : i + 300])]
    events += parser.feed(C2S, METADATA)
    assert [(e.fields["api_name"], e.fields["topics"]) for e in events] == [
        ("Produce", ["big"]),
        ("Metadata", ["orders", "payments"]),
    ]


@pytest.mark.parametrize(
    ("chunks", "message"),
    [
        pytest.param([(C2S, struct.pack(">i", -5))], "message size", id="negative-size"),
        pytest.param([(C2S, struct.pack(">i", 1 << 30))], "message size", id="huge-size"),
        pytest.param([(C2S, METADATA), (C2S, hb.kafka_request(99, 0, 1, b""))], "unknown API", id="bad-request"),
    ],
)
@pytest.mark.parametrize("mode", ["whole", "byte-by-byte"])
def test_malformed_is_protocol_error(chunks: Chunks, message: str, mode: str) -> None:
    """Bad sizes and implausible requests on the request side raise ProtocolError saying what."""
    with pytest.raises(ProtocolError, match=message):
        feed_all(KafkaParser(), split_chunks(chunks, mode))


TRANSCRIPTS = [TRANSCRIPT, load_chunks("kafka_console_producer"), load_chunks("kafka_midstream")]


@PROPS
@given(chunks=st.lists(st.tuples(st.sampled_from([C2S, S2C]), st.binary(max_size=300)), max_size=10))
def test_random_bytes_raise_only_protocol_error(chunks: Chunks) -> None:
    """Random bytes make the parser return events or raise ProtocolError, nothing else."""
    bc.feed_until_error(KafkaParser(Limits(parser_buffer=512)), chunks)


@PROPS
@given(data=st.data())
def test_mutated_fixtures_raise_only_protocol_error(data: st.DataObject) -> None:
    """Fixtures with bytes flipped, dropped, inserted or cut never make the parser fail otherwise."""
    bc.feed_until_error(KafkaParser(), data.draw(bc.mutated(TRANSCRIPTS)))


@PROPS
@given(data=st.binary(max_size=200))
def test_detector_prefix_rule(data: bytes) -> None:
    """On any bytes, and on prefixes of a real request, NO is final."""
    for sample in (data, METADATA + data):
        assert bc.prefix_rule_holds(bc.prefix_answers(KafkaDetector(), C2S, sample, ON_9092))


@pytest.mark.parametrize("mode", FEED_MODES)
def test_split_invariance(mode: str) -> None:
    """Any split of the transcript gives the same events as feeding it whole."""
    whole = summary(feed_all(KafkaParser(), TRANSCRIPT))
    assert summary(feed_all(KafkaParser(), split_chunks(TRANSCRIPT, mode))) == whole
