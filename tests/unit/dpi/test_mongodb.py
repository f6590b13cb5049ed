"""MongoDB detection and wire-protocol parsing: OP_MSG, OP_QUERY, OP_REPLY, OP_COMPRESSED, BSON bounds."""

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
from podwall.dpi.protocols.mongodb import MongoDetector, MongoParser
from podwall.dpi.protocols.redis import RedisDetector
from podwall.dpi.protocols.tls import TlsDetector
from podwall.dpi.session import DpiSession

from .fixtures import FEED_MODES, Chunks, feed_all, load_chunks, split_chunks, summary
from .fixtures import brokers_checks as bc
from .fixtures import handmade_brokers as hb

C2S, S2C = Direction.C2S, Direction.S2C
ON_27017 = DetectContext(PROTO_TCP, 40000, 27017)
ON_8080 = DetectContext(PROTO_TCP, 40000, 8080)
PROPS = settings(max_examples=120, deadline=timedelta(milliseconds=1500), suppress_health_check=[HealthCheck.too_slow])

FIND = hb.mongo_find()


@pytest.mark.parametrize(
    ("ctx", "direction", "data", "expected"),
    [
        pytest.param(ON_27017, C2S, FIND, Detection.MATCH, id="op-msg-find"),
        pytest.param(ON_8080, C2S, FIND, Detection.MATCH, id="mongodb on a non-standard port is still mongodb"),
        pytest.param(ON_27017, C2S, FIND[:10], Detection.NEED_MORE, id="header-prefix"),
        pytest.param(ON_27017, C2S, FIND[:3], Detection.NEED_MORE, id="length-prefix"),
        pytest.param(ON_27017, C2S, load_chunks("mongodb_pymongo")[0][1], Detection.MATCH, id="op-query-ismaster"),
        pytest.param(ON_27017, S2C, hb.mongo_ok_reply(), Detection.MATCH, id="op-msg-reply"),
        pytest.param(ON_27017, S2C, hb.mongo_op_reply(), Detection.MATCH, id="op-reply"),
        pytest.param(ON_27017, C2S, hb.mongo_compressed(), Detection.MATCH, id="op-compressed"),
        pytest.param(ON_27017, C2S, hb.mongo_message(1, bytes(40)), Detection.NO, id="op-reply-as-request"),
        pytest.param(ON_27017, C2S, hb.mongo_message(4242, bytes(40)), Detection.NO, id="unknown-opcode"),
        pytest.param(ON_27017, C2S, struct.pack("<i", 60 * 1000 * 1000) + bytes(12), Detection.NO, id="too-long"),
        pytest.param(ON_27017, C2S, struct.pack("<i", 10) + bytes(12), Detection.NO, id="too-short"),
        pytest.param(ON_27017, C2S, hb.op_msg(hb.bson(), flags=0x4), Detection.NO, id="unknown-msg-flag"),
        pytest.param(
            ON_27017,
            C2S,
            hb.mongo_message(2013, b"\x00\x00\x00\x00\x05" + bytes(10)),
            Detection.NO,
            id="unknown-section-kind",
        ),
        *[
            pytest.param(ON_27017, C2S, data, Detection.NO, id=f"{name} is not mongodb")
            for name, data in bc.FOREIGN_FIRST_MESSAGES.items()
        ],
    ],
)
def test_detect(ctx: DetectContext, direction: Direction, data: bytes, expected: Detection) -> None:
    """A sane header with a known opcode and a plausible body start decides mongodb; anything else is NO."""
    assert MongoDetector().detect(direction, data, ctx) is expected


TRANSCRIPT: Chunks = [
    (C2S, FIND),
    (S2C, hb.mongo_ok_reply(7)),
    (C2S, hb.mongo_insert_with_sequence()),
    (S2C, hb.mongo_error_reply(8)),
    (C2S, hb.mongo_compressed()),
]


@pytest.mark.parametrize("mode", FEED_MODES)
def test_transcript(mode: str) -> None:
    """Commands give command, collection, database and request id; replies give ok/errmsg/code; however split."""
    events = feed_all(MongoParser(), split_chunks([*TRANSCRIPT, (C2S, FIND[:5])], mode))
    assert [
        (e.kind, e.fields.get("command"), e.fields.get("collection"), e.fields.get("database")) for e in events
    ] == [
        ("command", "find", "users", "shop"),
        ("reply", None, None, None),
        ("command", "insert", "orders", "shop"),
        ("reply", None, None, None),
        ("compressed", None, None, None),
    ]
    assert events[0].fields["request_id"] == 7
    assert events[1].fields["ok"] is True
    assert events[2].fields["sequences"] == ["documents"]
    assert (events[3].fields["ok"], events[3].fields["errmsg"], events[3].fields["code"]) == (
        False,
        "not authorized",
        13,
    )
    assert events[4].fields["original_opcode"] == "OP_MSG"
    assert events[4].fields["compressor"] == "zlib"


@pytest.mark.parametrize(
    ("name", "command", "database", "response_to"),
    [
        pytest.param("mongodb_pymongo", "ismaster", "admin", 0, id="pymongo"),
        pytest.param("mongodb_getnonce", "getnonce", "abtest", 0, id="getnonce"),
        pytest.param("mongodb_shell", "isMaster", "admin", 0, id="shell"),
        pytest.param("mongodb_port_30000", "getnonce", "InactiveUserIdentity", -1, id="port-30000"),
    ],
)
@pytest.mark.parametrize("mode", FEED_MODES)
def test_corpus(name: str, command: str, database: str, response_to: int, mode: str) -> None:
    """mongodb.pcap: each OP_QUERY on <db>.$cmd names its command and database, however split."""
    events = feed_all(MongoParser(), split_chunks(load_chunks(name), mode))
    assert [(e.kind, e.fields["opcode"], e.fields["command"], e.fields["database"]) for e in events] == [
        ("command", "OP_QUERY", command, database)
    ]
    assert events[0].fields["response_to"] == response_to


def test_op_reply() -> None:
    """OP_REPLY gives the number of documents and the first document's ok."""
    (event,) = MongoParser().feed(S2C, hb.mongo_op_reply())
    assert (event.kind, event.fields["number_returned"], event.fields["ok"]) == ("reply", 1, True)


def test_large_message_streams_through() -> None:
    """A message larger than the parser buffer is read from its head; the rest passes unbuffered."""
    big = hb.op_msg(hb.bson(hb.b_str("insert", "logs"), hb.b_str("$db", "app"), hb.b_str("blob", "x" * 5000)))
    parser = MongoParser(Limits(parser_buffer=512))
    events = [e for i in range(0, len(big), 700) for e in parser.feed(C2S, big[i : i + 700])]
    events += parser.feed(C2S, FIND)
    assert [(e.fields["command"], e.fields["collection"], e.fields["database"]) for e in events] == [
        ("insert", "logs", "app"),
        ("find", "users", "shop"),
    ]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        pytest.param(struct.pack("<iiii", 8, 0, 0, 2013), "message length", id="short-length"),
        pytest.param(struct.pack("<iiii", 100, 0, 0, 77), "unknown opcode", id="unknown-opcode"),
        pytest.param(hb.mongo_message(2013, b"\x00\x00\x00\x00\x07" + bytes(8)), "section kind", id="bad-section"),
        pytest.param(hb.op_msg(b"\x03\x00\x00\x00\x00"), "BSON document length", id="tiny-bson"),
        pytest.param(hb.op_msg(hb.bson(b"\x99x\x00")), "unknown BSON type", id="bad-bson-type"),
        pytest.param(hb.op_msg(hb.bson(b"\x02s\x00\xff\xff\x00\x00x\x00")), "string length", id="bad-string-length"),
        pytest.param(hb.op_msg(hb.bson(hb.b_int("a", 1)) + b"zz"), "section kind", id="trailing-garbage"),
        pytest.param(
            hb.op_msg(hb.bson(hb.b_int("a", 1)) + b"\x00" + hb.bson(hb.b_int("a", 1))),
            "two body sections",
            id="two-bodies",
        ),
        pytest.param(hb.mongo_message(1, bytes(8)), "OP_REPLY", id="short-op-reply"),
    ],
)
@pytest.mark.parametrize("mode", ["whole", "byte-by-byte"])
def test_malformed_is_protocol_error(data: bytes, message: str, mode: str) -> None:
    """Bad lengths, opcodes, sections and BSON raise ProtocolError saying what."""
    with pytest.raises(ProtocolError, match=message):
        feed_all(MongoParser(), split_chunks([(C2S, data)], mode))


def test_session_names_mongodb() -> None:
    """Through a session with the other detectors, an OP_MSG flow on port 8080 is mongodb."""
    session = DpiSession(
        ON_8080, detectors=[MongoDetector(), HttpDetector(), TlsDetector(), DnsDetector(), RedisDetector()]
    )
    for direction, data in TRANSCRIPT:
        session.on_stream(direction, data)
    assert session.app == "mongodb"
    assert session.error is None
    assert [e.kind for e in session.events] == ["command", "reply", "command", "reply", "compressed"]


TRANSCRIPTS = [TRANSCRIPT, load_chunks("mongodb_pymongo"), [(S2C, hb.mongo_op_reply())]]


@PROPS
@given(chunks=st.lists(st.tuples(st.sampled_from([C2S, S2C]), st.binary(max_size=300)), max_size=10))
def test_random_bytes_raise_only_protocol_error(chunks: Chunks) -> None:
    """Random bytes make the parser return events or raise ProtocolError, nothing else."""
    bc.feed_until_error(MongoParser(Limits(parser_buffer=512)), chunks)


@PROPS
@given(data=st.data())
def test_mutated_fixtures_raise_only_protocol_error(data: st.DataObject) -> None:
    """Fixtures with bytes flipped, dropped, inserted or cut never make the parser fail otherwise."""
    bc.feed_until_error(MongoParser(), data.draw(bc.mutated(TRANSCRIPTS)))


@PROPS
@given(data=st.binary(max_size=200))
def test_detector_prefix_rule(data: bytes) -> None:
    """On any bytes, and on prefixes of a real message, NO is final."""
    for sample in (data, FIND + data):
        assert bc.prefix_rule_holds(bc.prefix_answers(MongoDetector(), C2S, sample, ON_27017))


@pytest.mark.parametrize("mode", FEED_MODES)
def test_split_invariance(mode: str) -> None:
    """Any split of the transcript gives the same events as feeding it whole."""
    assert summary(feed_all(MongoParser(), split_chunks(TRANSCRIPT, mode))) == summary(
        feed_all(MongoParser(), TRANSCRIPT)
    )
