"""IMAP detection by greeting or tagged command and parsing of commands, literals, tagged responses and STARTTLS."""

from __future__ import annotations

import pytest

from podwall.core.errors import ProtocolError
from podwall.core.limits import Limits
from podwall.core.types import PROTO_TCP, Direction
from podwall.dpi.base import DetectContext, Detection
from podwall.dpi.protocols.dns import DnsDetector
from podwall.dpi.protocols.http1 import HttpDetector
from podwall.dpi.protocols.imap import ImapDetector, ImapParser
from podwall.dpi.protocols.redis import RedisDetector
from podwall.dpi.protocols.tls import TlsDetector
from podwall.dpi.session import DpiSession

from .fixtures import FEED_MODES, Chunks, feed_all, split_chunks
from .fixtures import handmade as hm
from .fixtures import handmade_text as ht
from .textproto_props import property_tests

C2S, S2C = Direction.C2S, Direction.S2C
ON_143 = DetectContext(PROTO_TCP, 40000, 143)
ON_1143 = DetectContext(PROTO_TCP, 40000, 1143)


@pytest.mark.parametrize(
    ("direction", "data", "expected"),
    [
        pytest.param(S2C, ht.IMAP_SESSION[0][1], Detection.MATCH, id="greeting-with-capabilities"),
        pytest.param(S2C, b"* PREAUTH ready\r\n", Detection.MATCH, id="preauth"),
        pytest.param(S2C, b"* O", Detection.NEED_MORE, id="greeting-prefix"),
        pytest.param(S2C, b"* NO go away\r\n", Detection.NO, id="no-greeting"),
        pytest.param(C2S, b"a001 CAPABILITY\r\n", Detection.MATCH, id="capability"),
        pytest.param(C2S, b"A1 login alice secret\r\n", Detection.MATCH, id="login-lower-case"),
        pytest.param(C2S, b"a001 LOG", Detection.NEED_MORE, id="verb-prefix"),
        pytest.param(C2S, b"a001", Detection.NEED_MORE, id="tag-only"),
        pytest.param(C2S, b"a001 FROB\r\n", Detection.NO, id="unknown-first-verb"),
        pytest.param(C2S, b"EHLO mail.example\r\n", Detection.NO, id="smtp-is-not-imap"),
        pytest.param(C2S, hm.HTTP_GET, Detection.NO, id="http-request-is-not-imap"),
        pytest.param(S2C, b"+OK POP3\r\n", Detection.NO, id="pop3-is-not-imap"),
        pytest.param(C2S, b"\x05\x01\x00random", Detection.NO, id="random-bytes-are-not-imap"),
    ],
)
def test_detect(direction: Direction, data: bytes, expected: Detection) -> None:
    """An untagged OK/PREAUTH/BYE greeting or a tagged first command decides IMAP."""
    assert ImapDetector().detect(direction, data, ON_143) is expected


def test_non_standard_port_is_still_imap() -> None:
    """The greeting decides IMAP on port 1143."""
    session = DpiSession(
        ON_1143, detectors=[ImapDetector(), HttpDetector(), TlsDetector(), DnsDetector(), RedisDetector()]
    )
    for direction, data in ht.IMAP_SESSION:
        session.on_stream(direction, data)
    assert (session.app, session.error, session.events[0].kind) == ("imap", None, "greeting")


@pytest.mark.parametrize("mode", FEED_MODES)
def test_session(mode: str) -> None:
    """Literal arguments, quoted mailboxes, UID commands, IDLE, AUTHENTICATE (secrets skipped), tagged responses."""
    parser = ImapParser()
    events = feed_all(parser, split_chunks(ht.IMAP_SESSION, mode))
    assert events[0].fields["capabilities"][:2] == ["IMAP4REV1", "SASL-IR"]
    shown = str([e.fields for e in events])
    assert "s3cret" not in shown and "AGFsaWNlAHMzY3JldA==" not in shown
    commands = [e.fields for e in events if e.kind == "command"]
    assert [c["verb"] for c in commands] == [
        "CAPABILITY", "LOGIN", "SELECT", "LIST", "UID FETCH", "IDLE", "AUTHENTICATE", "LOGOUT",
    ]  # fmt: skip
    assert commands[1]["user"] == "alice"
    assert commands[2]["mailbox"] == 'Sent "Items"'
    assert commands[3]["mailbox"] == "*"
    assert commands[6]["mechanism"] == "PLAIN"
    responses = [(e.fields["tag"], e.fields["status"], e.fields["command"]) for e in events if e.kind == "response"]
    assert responses == [
        ("a001", "OK", "CAPABILITY"), ("a002", "OK", "LOGIN"), ("a003", "OK", "SELECT"), ("a004", "OK", "LIST"),
        ("a005", "OK", "UID FETCH"), ("a006", "OK", "IDLE"), ("a007", "NO", "AUTHENTICATE"), ("a008", "OK", "LOGOUT"),
    ]  # fmt: skip
    assert parser.finished


@pytest.mark.parametrize("mode", FEED_MODES)
def test_starttls_finishes(mode: str) -> None:
    """A tagged OK to STARTTLS finishes the parser; the TLS bytes are not read."""
    parser = ImapParser()
    events = feed_all(parser, split_chunks(ht.IMAP_STARTTLS, mode))
    assert [e.kind for e in events] == ["greeting", "command", "response"]
    assert parser.finished


def test_large_literal_streams_through() -> None:
    """A FETCH literal far larger than the parser buffer is skipped, not held."""
    parser = ImapParser(Limits(parser_buffer=1024))
    parser.feed(S2C, b"* OK ready\r\n")
    parser.feed(C2S, b"f1 FETCH 1 BODY[]\r\n")
    events = parser.feed(S2C, b"* 1 FETCH (BODY[] {100000}\r\n")
    for _ in range(100):
        events += parser.feed(S2C, b"m" * 1000)
    events += parser.feed(S2C, b")\r\nf1 OK done\r\n")
    assert [(e.kind, e.fields["status"]) for e in events] == [("response", "OK")]


@pytest.mark.parametrize(
    ("chunks", "message"),
    [
        pytest.param([(C2S, b"a1\r\n")], "not a tagged command", id="tag-only"),
        pytest.param([(C2S, b"a(1 NOOP\r\n")], "not a tagged command", id="bad-tag"),
        pytest.param([(C2S, b'a1 SELECT "unterminated\r\n')], "unterminated quoted", id="unterminated-quote"),
        pytest.param([(S2C, b"* OK hi\r\nx1 MAYBE\r\n")], "not a response", id="bad-status"),
        pytest.param([(C2S, b"a1 APPEND x {99999999999999}\r\n")], "invalid|literal of", id="huge-literal"),
        pytest.param(
            [(C2S, b"".join(b"a%d NOOP\r\n" % i for i in range(300)))], "without an answer", id="too-many-pending"
        ),
        pytest.param([(C2S, b"a1 LOGIN " + b"x" * 70000)], "longer than", id="endless-line"),
    ],
)
@pytest.mark.parametrize("mode", ["whole", "byte-by-byte"])
def test_malformed_is_protocol_error(chunks: Chunks, message: str, mode: str) -> None:
    """Untagged commands, bad tags or statuses, huge literals and unbounded lines raise ProtocolError."""
    with pytest.raises(ProtocolError, match=message):
        feed_all(ImapParser(), split_chunks(chunks, mode))


(
    test_random_bytes_raise_only_protocol_error,
    test_mutated_transcripts_raise_only_protocol_error,
    test_held_memory_is_bounded,
    test_any_split_gives_the_same_events,
    test_prefix_of_a_match_is_never_no,
    test_no_is_final,
) = property_tests(
    lambda limits: ImapParser(limits),
    [ht.IMAP_SESSION, ht.IMAP_STARTTLS],
    ImapDetector(),
    [ht.IMAP_SESSION[0], (C2S, b"a001 CAPABILITY\r\n")],
)
