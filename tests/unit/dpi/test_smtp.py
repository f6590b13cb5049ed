"""SMTP detection (greeting or EHLO, told apart from FTP) and parsing of commands, replies, bodies and STARTTLS."""

from __future__ import annotations

import pytest

from podwall.core.errors import ProtocolError
from podwall.core.types import PROTO_TCP, Direction
from podwall.dpi.base import DetectContext, Detection, Detector
from podwall.dpi.protocols.dns import DnsDetector
from podwall.dpi.protocols.ftp import FtpDetector
from podwall.dpi.protocols.http1 import HttpDetector
from podwall.dpi.protocols.redis import RedisDetector
from podwall.dpi.protocols.smtp import SmtpDetector, SmtpParser
from podwall.dpi.protocols.tls import TlsDetector
from podwall.dpi.session import DpiSession

from .fixtures import FEED_MODES, Chunks, feed_all, split_chunks
from .fixtures import handmade as hm
from .fixtures import handmade_text as ht
from .textproto_props import property_tests

C2S, S2C = Direction.C2S, Direction.S2C
ON_25 = DetectContext(PROTO_TCP, 40000, 25)
ON_2500 = DetectContext(PROTO_TCP, 40000, 2500)


@pytest.mark.parametrize(
    ("direction", "data", "expected"),
    [
        pytest.param(S2C, b"220 mx.example.org ESMTP Postfix\r\n", Detection.MATCH, id="esmtp-greeting"),
        pytest.param(S2C, ht.SMTP_STARTTLS[0][1], Detection.MATCH, id="multi-line-greeting"),
        pytest.param(S2C, b"220 mx.example.org ESMTP", Detection.NEED_MORE, id="greeting-line-pending"),
        pytest.param(S2C, b"220 mail.example.org ready\r\n", Detection.NEED_MORE, id="plain-220-waits-for-client"),
        pytest.param(S2C, b"220 ftp.example.org ESMTP\r\n", Detection.NEED_MORE, id="names-both-waits"),
        pytest.param(S2C, b"220 (vsFTPd 3.0.3) FTP\r\n", Detection.NO, id="ftp-greeting"),
        pytest.param(S2C, b"+OK POP3 ready\r\n", Detection.NO, id="pop3-greeting"),
        pytest.param(C2S, b"EHLO client.example\r\n", Detection.MATCH, id="ehlo"),
        pytest.param(C2S, b"helo x\r\n", Detection.MATCH, id="helo-lower-case"),
        pytest.param(C2S, b"EHL", Detection.NEED_MORE, id="ehlo-prefix"),
        pytest.param(C2S, b"NOOP\r\nEHLO x\r\n", Detection.MATCH, id="noop-first"),
        pytest.param(C2S, b"USER anonymous\r\n", Detection.NO, id="ftp-user-is-not-smtp"),
        pytest.param(C2S, hm.HTTP_GET, Detection.NO, id="http-request-is-not-smtp"),
        pytest.param(C2S, b"\x16\x03\x01\x02\x00\x01", Detection.NO, id="tls-is-not-smtp"),
        pytest.param(S2C, b"\x93\x00\xffrandom", Detection.NO, id="random-bytes-are-not-smtp"),
    ],
)
def test_detect(direction: Direction, data: bytes, expected: Detection) -> None:
    """An ESMTP greeting or a client's EHLO/HELO decides SMTP; a bare 220 waits for the client."""
    assert SmtpDetector().detect(direction, data, ON_25) is expected


def _session(chunks: Chunks, ctx: DetectContext) -> DpiSession:
    detectors: list[Detector] = [
        SmtpDetector(),
        FtpDetector(),
        HttpDetector(),
        TlsDetector(),
        DnsDetector(),
        RedisDetector(),
    ]
    session = DpiSession(ctx, detectors=detectors)
    for direction, data in chunks:
        session.on_stream(direction, data)
    return session


@pytest.mark.parametrize(
    ("greeting", "client", "app"),
    [
        pytest.param(b"220 host ready\r\n", b"EHLO me\r\n", "smtp", id="ehlo-decides-smtp"),
        pytest.param(b"220 host ready\r\n", b"USER me\r\n", "ftp", id="user-decides-ftp"),
        pytest.param(b"220 host ESMTP\r\n", b"USER me\r\n", "smtp", id="greeting-decides-first"),
    ],
)
def test_smtp_or_ftp_on_a_non_standard_port(greeting: bytes, client: bytes, app: str) -> None:
    """A bare 220 greeting leaves SMTP and FTP open; the client's first command decides (port 2500)."""
    assert _session([(S2C, greeting), (C2S, client)], ON_2500).app == app


@pytest.mark.parametrize("mode", FEED_MODES)
def test_session(mode: str) -> None:
    """EHLO extensions, AUTH without credentials, pipelined MAIL/RCPT/DATA, a dot-stuffed body, BDAT, QUIT."""
    parser = SmtpParser()
    events = feed_all(parser, split_chunks(ht.SMTP_SESSION, mode))
    greeting = events[0].fields
    assert (greeting["domain"], greeting["software"]) == ("mx.example.org", "ESMTP Postfix (Debian/GNU)")
    commands = [(e.fields["verb"], e.fields["argument"]) for e in events if e.kind == "command"]
    assert commands[:2] == [("EHLO", "client.example.com"), ("AUTH", "LOGIN")]
    assert [v for v, _ in commands[2:]] == ["MAIL", "RCPT", "RCPT", "DATA", "BDAT", "QUIT"]
    assert "YWxpY2U=" not in str([e.fields for e in events]) and "c2VjcmV0" not in str([e.fields for e in events])
    domains = [e.fields.get("mail_from_domain") or e.fields.get("rcpt_domain") for e in events if e.kind == "command"]
    assert domains[2:5] == [
        "example.com", "example.net", "example.net",
    ]  # fmt: skip
    replies = [(e.fields["code"], e.fields["command"]) for e in events if e.kind == "reply"]
    assert replies == [
        (250, "EHLO"), (334, "AUTH"), (334, "AUTH"), (235, "AUTH"), (250, "MAIL"), (250, "RCPT"), (550, "RCPT"),
        (354, "DATA"), (250, "DATA"), (250, "BDAT"), (221, "QUIT"),
    ]  # fmt: skip
    assert events[2].fields["extensions"] == ["PIPELINING", "SIZE", "STARTTLS", "AUTH", "8BITMIME"]
    (message,) = [e for e in events if e.kind == "message"]
    assert message.fields["size"] == len(ht.SMTP_SESSION[12][1]) - 3
    assert parser.finished


@pytest.mark.parametrize("mode", FEED_MODES)
def test_starttls_finishes(mode: str) -> None:
    """After STARTTLS is accepted the parser is finished and the TLS bytes are not read."""
    parser = SmtpParser()
    events = feed_all(parser, split_chunks(ht.SMTP_STARTTLS, mode))
    assert [e.kind for e in events] == ["greeting", "command", "reply", "command", "reply"]
    assert parser.finished


def test_rejected_data_keeps_commands() -> None:
    """When DATA is refused, the client's next lines are commands again, not a body."""
    chunks: Chunks = [(S2C, b"220 x ESMTP\r\n"), (C2S, b"DATA\r\n"), (S2C, b"503 need MAIL\r\n"), (C2S, b"RSET\r\n")]
    events = feed_all(SmtpParser(), chunks)
    assert [e.fields.get("verb") for e in events if e.kind == "command"] == ["DATA", "RSET"]


@pytest.mark.parametrize(
    ("chunks", "message"),
    [
        pytest.param([(S2C, b"hello\r\n")], "without a 3-digit code", id="reply-without-code"),
        pytest.param([(S2C, b"250x\r\n")], "followed by", id="bad-separator"),
        pytest.param([(C2S, b"EH\x01LO x\r\n")], "not a command", id="binary-verb"),
        pytest.param([(C2S, b"MAIL alice\r\n")], "MAIL without FROM", id="mail-without-path"),
        pytest.param([(C2S, b"RCPT TO:bob\r\n")], "RCPT without TO", id="rcpt-without-path"),
        pytest.param([(C2S, b"BDAT lots\r\n")], "BDAT with a bad size", id="bdat-bad-size"),
        pytest.param([(C2S, b"NOOP\r\n" * 300)], "without a reply", id="too-many-pending"),
        pytest.param([(C2S, b"EHLO " + b"x" * 70000)], "longer than", id="endless-line"),
    ],
)
@pytest.mark.parametrize("mode", ["whole", "byte-by-byte"])
def test_malformed_is_protocol_error(chunks: Chunks, message: str, mode: str) -> None:
    """Replies without codes, non-commands, bad paths and unbounded input raise ProtocolError saying what."""
    with pytest.raises(ProtocolError, match=message):
        feed_all(SmtpParser(), split_chunks(chunks, mode))


(
    test_random_bytes_raise_only_protocol_error,
    test_mutated_transcripts_raise_only_protocol_error,
    test_held_memory_is_bounded,
    test_any_split_gives_the_same_events,
    test_prefix_of_a_match_is_never_no,
    test_no_is_final,
) = property_tests(
    lambda limits: SmtpParser(limits),
    [ht.SMTP_SESSION, ht.SMTP_STARTTLS],
    SmtpDetector(),
    [ht.SMTP_SESSION[0], ht.SMTP_STARTTLS[0], (C2S, b"EHLO x\r\n")],
)
