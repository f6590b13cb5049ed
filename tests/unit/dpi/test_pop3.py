"""POP3 detection by greeting or first command and parsing of commands, replies, multi-line bodies and STLS."""

from __future__ import annotations

import pytest

from podwall.core.errors import ProtocolError
from podwall.core.types import PROTO_TCP, Direction
from podwall.dpi.base import DetectContext, Detection
from podwall.dpi.protocols.dns import DnsDetector
from podwall.dpi.protocols.http1 import HttpDetector
from podwall.dpi.protocols.pop3 import Pop3Detector, Pop3Parser
from podwall.dpi.protocols.redis import RedisDetector
from podwall.dpi.protocols.tls import TlsDetector
from podwall.dpi.session import DpiSession

from .fixtures import FEED_MODES, Chunks, feed_all, split_chunks
from .fixtures import handmade as hm
from .fixtures import handmade_text as ht
from .textproto_props import property_tests

C2S, S2C = Direction.C2S, Direction.S2C
ON_110 = DetectContext(PROTO_TCP, 40000, 110)
ON_1110 = DetectContext(PROTO_TCP, 40000, 1110)


@pytest.mark.parametrize(
    ("direction", "data", "expected"),
    [
        pytest.param(S2C, ht.POP3_SESSION[0][1], Detection.MATCH, id="greeting"),
        pytest.param(S2C, b"+OK Dove", Detection.NEED_MORE, id="greeting-pending"),
        pytest.param(S2C, b"+O", Detection.NEED_MORE, id="greeting-prefix"),
        pytest.param(S2C, b"+OK\r\n", Detection.NO, id="bare-ok-is-redis-like"),
        pytest.param(S2C, b"-ERR busy\r\n", Detection.NO, id="error-greeting"),
        pytest.param(C2S, b"CAPA\r\n", Detection.MATCH, id="capa"),
        pytest.param(C2S, b"USER mrose\r\n", Detection.MATCH, id="user"),
        pytest.param(C2S, b"CAP", Detection.NEED_MORE, id="capa-prefix"),
        pytest.param(C2S, b"EHLO x\r\n", Detection.NO, id="smtp-is-not-pop3"),
        pytest.param(C2S, hm.HTTP_GET, Detection.NO, id="http-request-is-not-pop3"),
        pytest.param(S2C, b"* OK IMAP ready\r\n", Detection.NO, id="imap-is-not-pop3"),
        pytest.param(S2C, b"\x01\xfe\x00random", Detection.NO, id="random-bytes-are-not-pop3"),
    ],
)
def test_detect(direction: Direction, data: bytes, expected: Detection) -> None:
    """A `+OK text` greeting or a client's CAPA/STLS/APOP/USER decides POP3."""
    assert Pop3Detector().detect(direction, data, ON_110) is expected


def test_non_standard_port_is_still_pop3() -> None:
    """The greeting decides POP3 on port 1110."""
    session = DpiSession(
        ON_1110, detectors=[Pop3Detector(), HttpDetector(), TlsDetector(), DnsDetector(), RedisDetector()]
    )
    for direction, data in ht.POP3_SESSION:
        session.on_stream(direction, data)
    assert (session.app, session.error, session.events[0].kind) == ("pop3", None, "greeting")


@pytest.mark.parametrize("mode", FEED_MODES)
def test_session(mode: str) -> None:
    """Commands matched to replies in order (pipelined too), multi-line bodies counted, secrets never shown."""
    parser = Pop3Parser()
    events = feed_all(parser, split_chunks(ht.POP3_SESSION, mode))
    shown = str([e.fields for e in events])
    assert "tanstaaf" not in shown and "AG1yb3NlAHRhbnN0YWFm" not in shown
    commands = [e.fields for e in events if e.kind == "command"]
    assert [c["verb"] for c in commands] == ["CAPA", "USER", "PASS", "STAT", "LIST", "RETR", "DELE", "AUTH", "QUIT"]
    assert commands[1]["user"] == "mrose"
    assert commands[2]["argument"] == "***"
    replies = [(e.fields["command"], e.fields["ok"], e.fields["size"]) for e in events if e.kind == "reply"]
    assert replies == [
        ("CAPA", True, 41), ("USER", True, None), ("PASS", True, None), ("STAT", True, None), ("LIST", True, 14),
        ("RETR", True, len(ht.POP3_SESSION[10][1]) - len(b"+OK 120 octets\r\n") - 3), ("DELE", False, None),
        ("AUTH", False, None), ("QUIT", True, None),
    ]  # fmt: skip
    assert parser.finished


@pytest.mark.parametrize("mode", FEED_MODES)
def test_stls_finishes(mode: str) -> None:
    """STLS accepted: the parser is finished and the TLS bytes are not read."""
    parser = Pop3Parser()
    events = feed_all(parser, split_chunks(ht.POP3_STLS, mode))
    assert [e.kind for e in events] == ["greeting", "command", "reply"]
    assert parser.finished


def test_apop_reports_only_the_user() -> None:
    """APOP name digest: the user is reported, the digest is not."""
    events = feed_all(
        Pop3Parser(), [(S2C, b"+OK <1.2@x>\r\n"), (C2S, b"APOP mrose c4c9334bac560ecc979e58001b3e22fb\r\n")]
    )
    assert (events[1].fields["user"], events[1].fields["argument"]) == ("mrose", "mrose")


@pytest.mark.parametrize(
    ("chunks", "message"),
    [
        pytest.param([(S2C, b"OK ready\r\n")], "neither \\+OK nor -ERR", id="bad-status"),
        pytest.param([(S2C, b"+OKAY\r\n")], "neither \\+OK nor -ERR", id="okay"),
        pytest.param([(C2S, b"12 x\r\n")], "not a command", id="numeric-verb"),
        pytest.param([(C2S, b"NOOP\r\n" * 300)], "without a reply", id="too-many-pending"),
        pytest.param([(S2C, b"+OK " + b"x" * 70000)], "longer than", id="endless-line"),
    ],
)
@pytest.mark.parametrize("mode", ["whole", "byte-by-byte"])
def test_malformed_is_protocol_error(chunks: Chunks, message: str, mode: str) -> None:
    """Bad status lines, non-commands and unbounded input raise ProtocolError saying what."""
    with pytest.raises(ProtocolError, match=message):
        feed_all(Pop3Parser(), split_chunks(chunks, mode))


(
    test_random_bytes_raise_only_protocol_error,
    test_mutated_transcripts_raise_only_protocol_error,
    test_held_memory_is_bounded,
    test_any_split_gives_the_same_events,
    test_prefix_of_a_match_is_never_no,
    test_no_is_final,
) = property_tests(
    lambda limits: Pop3Parser(limits),
    [ht.POP3_SESSION, ht.POP3_STLS],
    Pop3Detector(),
    [ht.POP3_SESSION[0], (C2S, b"CAPA\r\n")],
)
