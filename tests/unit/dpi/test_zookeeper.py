"""ZooKeeper detection (ConnectRequest/Response, four-letter words) and parsing of requests and replies."""

from __future__ import annotations

from datetime import timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from podwall.core.errors import ProtocolError
from podwall.core.limits import Limits
from podwall.core.types import PROTO_TCP, Direction
from podwall.dpi.base import DetectContext, Detection, Detector
from podwall.dpi.protocols.dns import DnsDetector
from podwall.dpi.protocols.http1 import HttpDetector
from podwall.dpi.protocols.memcached import MemcachedDetector
from podwall.dpi.protocols.redis import RedisDetector
from podwall.dpi.protocols.tls import TlsDetector
from podwall.dpi.protocols.zookeeper import ZookeeperDetector, ZookeeperParser
from podwall.dpi.session import DpiSession

from .fixtures import FEED_MODES, Chunks, feed_all, load_chunks, split_chunks, summary
from .fixtures import brokers_checks as bc
from .fixtures import handmade_brokers as hb

C2S, S2C = Direction.C2S, Direction.S2C
ON_2181 = DetectContext(PROTO_TCP, 40000, 2181)
ON_8080 = DetectContext(PROTO_TCP, 40000, 8080)
PROPS = settings(max_examples=120, deadline=timedelta(milliseconds=1500), suppress_health_check=[HealthCheck.too_slow])
CONNECT = hb.zk_connect()


@pytest.mark.parametrize(
    ("ctx", "direction", "data", "expected"),
    [
        pytest.param(ON_2181, C2S, CONNECT, Detection.MATCH, id="connect-read-only-byte"),
        pytest.param(ON_8080, C2S, CONNECT, Detection.MATCH, id="zookeeper on a non-standard port is still zookeeper"),
        pytest.param(ON_2181, C2S, hb.zk_connect(read_only=None), Detection.MATCH, id="connect-without-read-only"),
        pytest.param(ON_2181, C2S, CONNECT[:20], Detection.NEED_MORE, id="connect-prefix"),
        pytest.param(ON_2181, C2S, CONNECT[:2], Detection.NEED_MORE, id="length-prefix"),
        pytest.param(ON_2181, C2S, b"ruok", Detection.MATCH, id="four-letter-word"),
        pytest.param(ON_2181, C2S, b"mntr\n", Detection.MATCH, id="four-letter-word-newline"),
        pytest.param(ON_2181, C2S, b"ru", Detection.NEED_MORE, id="four-letter-prefix"),
        pytest.param(ON_2181, C2S, b"stats\r\n", Detection.NO, id="memcached-stats-is-not-stat"),
        pytest.param(ON_2181, C2S, b"abcd", Detection.NO, id="unknown-word"),
        pytest.param(ON_2181, S2C, hb.zk_connected(), Detection.MATCH, id="connect-response"),
        pytest.param(ON_2181, C2S, CONNECT[:4] + b"\x00\x00\x00\x01" + CONNECT[8:], Detection.NO, id="protocol-v1"),
        pytest.param(ON_2181, C2S, hb.zk_connect(timeout=-1), Detection.NO, id="negative-timeout"),
        pytest.param(ON_2181, C2S, CONNECT[:-1] + b"\x07", Detection.NO, id="bad-read-only-byte"),
        *[
            pytest.param(ON_2181, C2S, data, Detection.NO, id=f"{name} is not zookeeper")
            for name, data in bc.FOREIGN_FIRST_MESSAGES.items()
        ],
    ],
)
def test_detect(ctx: DetectContext, direction: Direction, data: bytes, expected: Detection) -> None:
    """A ConnectRequest/Response with the Jute layout, or a bare four-letter word, decides zookeeper."""
    assert ZookeeperDetector().detect(direction, data, ctx) is expected


TRANSCRIPT: Chunks = [
    (C2S, hb.zk_connect(timeout=15000, session=0)),
    (S2C, hb.zk_connected(timeout=15000, session=0x1234)),
    (C2S, hb.zk_request(1, 1, "/app/config", b"\x00\x00\x00\x01x")),
    (C2S, hb.zk_request(-2, 11)),  # ping: parsed, not reported
    (S2C, hb.zk_reply(1, 7, 0) + hb.zk_reply(-2, 7, 0)),
    (C2S, hb.zk_request(2, 4, "/app/config", b"\x01")),
    (S2C, hb.zk_reply(2, 7, -101)),
    (S2C, hb.zk_reply(-1, -1, 0, b"\x00\x00\x00\x03\x00\x00\x00\x03" + b"\x00\x00\x00\x04/app")),
    (C2S, hb.zk_request(3, -11)),
]


@pytest.mark.parametrize("mode", FEED_MODES)
def test_transcript(mode: str) -> None:
    """connect gives timeout and session id; requests xid, op and path; replies xid and error; however split."""
    events = feed_all(ZookeeperParser(), split_chunks([*TRANSCRIPT, (C2S, b"\x00\x00")], mode))
    assert [(e.kind, e.fields.get("op"), e.fields.get("path"), e.fields.get("err")) for e in events] == [
        ("connect", None, None, None),
        ("connected", None, None, None),
        ("request", "create", "/app/config", None),
        ("response", None, None, 0),
        ("request", "getData", "/app/config", None),
        ("response", None, None, -101),
        ("response", None, "/app", 0),
        ("request", "closeSession", None, None),
    ]
    assert (events[0].fields["timeout"], events[0].fields["session_id"]) == (15000, 0)
    assert events[1].fields["session_id"] == 0x1234


@pytest.mark.parametrize(
    ("name", "op", "path"),
    [
        pytest.param("zookeeper_create", "create", "/podwall", id="create"),
        pytest.param("zookeeper_ls", "getChildren2", "/", id="ls"),
        pytest.param("zookeeper_get", "getData", "/podwall", id="get"),
        pytest.param("zookeeper_delete", "delete", "/podwall", id="delete"),
    ],
)
@pytest.mark.parametrize("mode", FEED_MODES)
def test_recorded_sessions(name: str, op: str, path: str, mode: str) -> None:
    """Real ZooKeeper 3.8 sessions from its Java CLI: connect, one request with its path, its reply."""
    events = feed_all(ZookeeperParser(), split_chunks(load_chunks(name), mode))
    assert [(e.kind, e.fields.get("op"), e.fields.get("path")) for e in events][:4] == [
        ("connect", None, None),
        ("connected", None, None),
        ("request", op, path),
        ("response", None, None),
    ]
    assert events[0].fields["timeout"] == 30000


def test_recorded_four_letter_word() -> None:
    """A real `ruok` is a command event, after which parsing stops (the answer is free text)."""
    parser = ZookeeperParser()
    events = feed_all(parser, load_chunks("zookeeper_ruok"))
    assert [(e.kind, e.fields["command"]) for e in events] == [("command", "ruok")]
    assert parser.finished


@pytest.mark.parametrize("name", ["zookeeper_create", "zookeeper_ruok"])
def test_session_names_zookeeper(name: str) -> None:
    """Recorded flows are named zookeeper with the other detectors (memcached included) present."""
    detectors: list[Detector] = [
        ZookeeperDetector(),
        MemcachedDetector(),
        HttpDetector(),
        TlsDetector(),
        DnsDetector(),
        RedisDetector(),
    ]
    session = DpiSession(ON_2181, detectors=detectors)
    for direction, data in load_chunks(name):
        session.on_stream(direction, data)
    assert (session.app, session.error) == ("zookeeper", None)


def test_large_reply_streams_through() -> None:
    """A reply larger than the parser buffer streams through; the next one is still parsed."""
    parser = ZookeeperParser(Limits(parser_buffer=256))
    parser.feed(C2S, CONNECT)
    events = parser.feed(S2C, hb.zk_connected())
    big = hb.zk_reply(5, 1, 0, b"D" * 5000)
    for i in range(0, len(big), 300):
        events += parser.feed(S2C, big[i : i + 300])
    events += parser.feed(S2C, hb.zk_reply(6, 1, 0))
    assert [e.fields.get("xid") for e in events] == [None, 5, 6]


@pytest.mark.parametrize(
    ("chunks", "message"),
    [
        pytest.param([(C2S, hb.zk_packet(b"\x00\x00\x00\x07" + bytes(40)))], "not a ConnectRequest", id="bad-connect"),
        pytest.param([(C2S, CONNECT), (C2S, hb.zk_request(1, 55))], "implausible request", id="unknown-op"),
        pytest.param([(C2S, CONNECT), (C2S, hb.zk_request(1, 4, "no-slash"))], "implausible", id="relative-path"),
        pytest.param([(C2S, b"\xff\xff\xff\xff")], "packet length", id="negative-length"),
        pytest.param([(S2C, hb.zk_packet(bytes(8)))], "not a ConnectResponse", id="bad-connect-response"),
        pytest.param([(S2C, hb.zk_connected()), (S2C, hb.zk_packet(bytes(8)))], "shorter", id="short-reply"),
    ],
)
@pytest.mark.parametrize("mode", ["whole", "byte-by-byte"])
def test_malformed_is_protocol_error(chunks: Chunks, message: str, mode: str) -> None:
    """Bad handshakes, unknown operations, relative paths and bad lengths raise ProtocolError saying what."""
    with pytest.raises(ProtocolError, match=message):
        feed_all(ZookeeperParser(), split_chunks(chunks, mode))


TRANSCRIPTS = [TRANSCRIPT, load_chunks("zookeeper_create"), load_chunks("zookeeper_ls")]


@PROPS
@given(chunks=st.lists(st.tuples(st.sampled_from([C2S, S2C]), st.binary(max_size=300)), max_size=10))
def test_random_bytes_raise_only_protocol_error(chunks: Chunks) -> None:
    """Random bytes make the parser return events or raise ProtocolError, nothing else."""
    bc.feed_until_error(ZookeeperParser(Limits(parser_buffer=512)), chunks)


@PROPS
@given(data=st.data())
def test_mutated_fixtures_raise_only_protocol_error(data: st.DataObject) -> None:
    """Fixtures with bytes flipped, dropped, inserted or cut never make the parser fail otherwise."""
    bc.feed_until_error(ZookeeperParser(), data.draw(bc.mutated(TRANSCRIPTS)))


@PROPS
@given(data=st.binary(max_size=100))
def test_detector_prefix_rule(data: bytes) -> None:
    """On any bytes, and on prefixes of a real ConnectRequest, NO is final."""
    for sample in (data, CONNECT + data):
        assert bc.prefix_rule_holds(bc.prefix_answers(ZookeeperDetector(), C2S, sample, ON_2181))


@pytest.mark.parametrize("mode", FEED_MODES)
def test_split_invariance(mode: str) -> None:
    """Any split of the transcript gives the same events as feeding it whole."""
    whole = summary(feed_all(ZookeeperParser(), TRANSCRIPT))
    assert summary(feed_all(ZookeeperParser(), split_chunks(TRANSCRIPT, mode))) == whole
