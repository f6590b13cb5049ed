"""AMQP detection (protocol header or 0-9-1 frames, either side) and parsing of 0-9-1 method frames."""

from __future__ import annotations

from datetime import timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from podwall.core.errors import ProtocolError
from podwall.core.limits import Limits
from podwall.core.types import PROTO_TCP, Direction
from podwall.dpi.base import DetectContext, Detection
from podwall.dpi.protocols.amqp import AmqpDetector, AmqpParser
from podwall.dpi.protocols.dns import DnsDetector
from podwall.dpi.protocols.http1 import HttpDetector
from podwall.dpi.protocols.redis import RedisDetector
from podwall.dpi.protocols.tls import TlsDetector
from podwall.dpi.session import DpiSession

from .fixtures import FEED_MODES, Chunks, feed_all, load_chunks, split_chunks, summary
from .fixtures import brokers_checks as bc
from .fixtures import handmade_brokers as hb

C2S, S2C = Direction.C2S, Direction.S2C
ON_5672 = DetectContext(PROTO_TCP, 40000, 5672)
ON_8080 = DetectContext(PROTO_TCP, 40000, 8080)
PROPS = settings(max_examples=120, deadline=timedelta(milliseconds=1500), suppress_health_check=[HealthCheck.too_slow])
CLIENT = hb.amqp_client_session()
SERVER = hb.amqp_server_session()
PUBLISH = hb.amqp_method(60, 40, b"\x00\x00" + hb.shortstr("ex") + hb.shortstr("rk") + b"\x00", channel=1)


@pytest.mark.parametrize(
    ("ctx", "direction", "data", "expected"),
    [
        pytest.param(ON_5672, C2S, hb.AMQP_HEADER, Detection.MATCH, id="header-0-9-1"),
        pytest.param(ON_8080, C2S, hb.AMQP_HEADER, Detection.MATCH, id="amqp on a non-standard port is still amqp"),
        pytest.param(ON_5672, C2S, b"AMQP\x00\x01\x00\x00", Detection.MATCH, id="header-1.0"),
        pytest.param(ON_5672, C2S, b"AMQP\x03\x01\x00\x00", Detection.MATCH, id="header-sasl"),
        pytest.param(ON_5672, C2S, b"AMQP\x02\x01\x00\x00", Detection.MATCH, id="header-tls"),
        pytest.param(ON_5672, C2S, b"AMQP\x00", Detection.NEED_MORE, id="header-prefix"),
        pytest.param(ON_5672, C2S, b"AMQP\x00\x00\x09\x07", Detection.NO, id="unknown-version"),
        pytest.param(ON_5672, C2S, b"AMQX", Detection.NO, id="not-amqp-magic"),
        pytest.param(ON_5672, S2C, SERVER, Detection.MATCH, id="server-connection-start"),
        pytest.param(ON_5672, C2S, PUBLISH, Detection.MATCH, id="mid-stream-publish"),
        pytest.param(ON_5672, C2S, PUBLISH[:9], Detection.NEED_MORE, id="frame-prefix"),
        pytest.param(ON_5672, C2S, hb.amqp_frame(3, 1, b"body") + PUBLISH, Detection.MATCH, id="body-then-method"),
        pytest.param(ON_5672, C2S, PUBLISH[:-1] + b"\x00", Detection.NO, id="bad-frame-end"),
        pytest.param(ON_5672, C2S, hb.amqp_method(60, 99, b""), Detection.NO, id="unknown-method"),
        pytest.param(ON_5672, C2S, hb.amqp_frame(8, 0, b"x"), Detection.NO, id="heartbeat-with-payload"),
        *[
            pytest.param(ON_5672, C2S, data, Detection.NO, id=f"{name} is not amqp")
            for name, data in bc.FOREIGN_FIRST_MESSAGES.items()
        ],
    ],
)
def test_detect(ctx: DetectContext, direction: Direction, data: bytes, expected: Detection) -> None:
    """A protocol header or a whole method frame with a known method decides amqp, from either side."""
    assert AmqpDetector().detect(direction, data, ctx) is expected


@pytest.mark.parametrize("mode", FEED_MODES)
def test_session_transcript(mode: str) -> None:
    """Methods give class, method and their policy arguments (vhost, exchange, routing key, queue, user)."""
    start_end = SERVER.index(b"\xce") + 1  # connection.start, the server's first frame
    chunks = split_chunks([(S2C, SERVER[:start_end]), (C2S, CLIENT), (S2C, SERVER[start_end:])], mode)
    events = feed_all(AmqpParser(), chunks)
    got = [(e.kind, e.direction.name, e.fields.get("class"), e.fields.get("method")) for e in events]
    assert got == [
        ("method", "S2C", "connection", "start"),
        ("protocol_header", "C2S", None, None),
        ("method", "C2S", "connection", "start-ok"),
        ("method", "C2S", "connection", "tune-ok"),
        ("method", "C2S", "connection", "open"),
        ("method", "C2S", "channel", "open"),
        ("method", "C2S", "exchange", "declare"),
        ("method", "C2S", "queue", "declare"),
        ("method", "C2S", "queue", "bind"),
        ("method", "C2S", "basic", "publish"),
        ("method", "C2S", "basic", "consume"),
        ("method", "S2C", "connection", "tune"),
        ("method", "S2C", "connection", "open-ok"),
        ("method", "S2C", "channel", "open-ok"),
        ("method", "S2C", "basic", "deliver"),
    ]
    by_method = {(e.fields.get("class"), e.fields.get("method")): e.fields for e in events}
    assert by_method[("connection", "start")]["mechanisms"] == ["PLAIN", "AMQPLAIN"]
    assert by_method[("connection", "start-ok")]["user"] == "guest"
    assert "secret" not in str(by_method[("connection", "start-ok")])
    assert by_method[("connection", "open")]["vhost"] == "/prod"
    assert by_method[("exchange", "declare")]["exchange"] == "orders"
    assert by_method[("queue", "bind")]["routing_key"] == "order.*"
    assert (by_method[("basic", "publish")]["exchange"], by_method[("basic", "publish")]["routing_key"]) == (
        "orders",
        "order.created",
    )
    assert by_method[("basic", "consume")]["queue"] == "billing"
    assert by_method[("basic", "deliver")]["routing_key"] == "order.created"
    assert events[1].fields["version"] == "0-9-1"


@pytest.mark.parametrize(
    ("name", "count", "first"),
    [
        pytest.param("amqp_celery_publish", 4, ("publish", "celeryev", "worker.heartbeat"), id="celery-publish"),
        pytest.param("amqp_celery_deliver", 13, ("deliver", "celeryev", "worker.heartbeat"), id="celery-deliver"),
    ],
)
@pytest.mark.parametrize("mode", FEED_MODES)
def test_corpus(name: str, count: int, first: tuple[str, str, str], mode: str) -> None:
    """amqp.pcap (mid-connection celery traffic): basic.publish/deliver/ack with exchange and routing key."""
    events = feed_all(AmqpParser(), split_chunks(load_chunks(name), mode))
    assert len(events) == count
    assert (events[0].fields["method"], events[0].fields["exchange"], events[0].fields["routing_key"]) == first


@pytest.mark.parametrize("name", ["amqp_celery_publish", "amqp_celery_deliver"])
def test_session_names_corpus_flows(name: str) -> None:
    """Both corpus flows, captured mid-connection, are named amqp with the other detectors present."""
    session = DpiSession(
        ON_5672, detectors=[AmqpDetector(), HttpDetector(), TlsDetector(), DnsDetector(), RedisDetector()]
    )
    for direction, data in load_chunks(name):
        session.on_stream(direction, data)
    assert (session.app, session.error) == ("amqp", None)


def test_amqp_1_0_is_named_not_parsed() -> None:
    """An AMQP 1.0 header is reported and parsing stops (1.0 framing is not decoded)."""
    parser = AmqpParser()
    events = parser.feed(C2S, b"AMQP\x00\x01\x00\x00" + b"\x00\x00\x00\x20\x02\x00\x00\x00")
    assert [(e.kind, e.fields["version"]) for e in events] == [("protocol_header", "1.0")]
    assert parser.finished


def test_large_body_streams_through() -> None:
    """A content body frame larger than the parser buffer streams through unbuffered."""
    parser = AmqpParser(Limits(parser_buffer=256))
    body = hb.amqp_frame(3, 1, b"B" * 10000)
    events = [e for i in range(0, len(body), 512) for e in parser.feed(C2S, body[i : i + 512])]
    assert events + parser.feed(C2S, PUBLISH) != []


@pytest.mark.parametrize(
    ("data", "message"),
    [
        pytest.param(b"AMQP\x09\x09\x09\x09", "unknown protocol header", id="bad-header"),
        pytest.param(hb.amqp_frame(7, 0, b""), "unknown frame type", id="bad-frame-type"),
        pytest.param(PUBLISH[:-1] + b"\x01", "not terminated", id="bad-frame-end"),
        pytest.param(hb.amqp_frame(3, 1, b"abc")[:-1] + b"\x00", "not terminated", id="bad-body-frame-end"),
        pytest.param(hb.amqp_method(60, 99, b""), "unknown method", id="unknown-method"),
        pytest.param(hb.amqp_method(60, 40, b"\x00\x00\x10ab"), "truncated", id="truncated-argument"),
        pytest.param(hb.amqp_frame(1, 0, b"\x00" * 70000), "over the parser buffer", id="huge-method"),
    ],
)
@pytest.mark.parametrize("mode", ["whole", "byte-by-byte"])
def test_malformed_is_protocol_error(data: bytes, message: str, mode: str) -> None:
    """Bad headers, frame types, frame ends, unknown methods and truncated arguments raise ProtocolError."""
    with pytest.raises(ProtocolError, match=message):
        feed_all(AmqpParser(), split_chunks([(C2S, data)], mode))


TRANSCRIPTS: list[Chunks] = [[(C2S, CLIENT), (S2C, SERVER)], load_chunks("amqp_celery_publish")]


@PROPS
@given(chunks=st.lists(st.tuples(st.sampled_from([C2S, S2C]), st.binary(max_size=300)), max_size=10))
def test_random_bytes_raise_only_protocol_error(chunks: Chunks) -> None:
    """Random bytes make the parser return events or raise ProtocolError, nothing else."""
    bc.feed_until_error(AmqpParser(Limits(parser_buffer=512)), chunks)


@PROPS
@given(data=st.data())
def test_mutated_fixtures_raise_only_protocol_error(data: st.DataObject) -> None:
    """Fixtures with bytes flipped, dropped, inserted or cut never make the parser fail otherwise."""
    bc.feed_until_error(AmqpParser(), data.draw(bc.mutated(TRANSCRIPTS)))


@PROPS
@given(data=st.binary(max_size=200))
def test_detector_prefix_rule(data: bytes) -> None:
    """On any bytes, and on prefixes of real frames, NO is final."""
    for sample in (data, hb.AMQP_HEADER + data, PUBLISH + data):
        assert bc.prefix_rule_holds(bc.prefix_answers(AmqpDetector(), C2S, sample, ON_5672))


@pytest.mark.parametrize("mode", FEED_MODES)
def test_split_invariance(mode: str) -> None:
    """Any split of a transcript gives the same events as feeding it whole."""
    whole = summary(feed_all(AmqpParser(), TRANSCRIPTS[0]))
    assert summary(feed_all(AmqpParser(), split_chunks(TRANSCRIPTS[0], mode))) == whole
