"""FTP detection (greeting or first command, told apart from SMTP) and parsing of the control connection."""

from __future__ import annotations

import pytest

from podwall.core.errors import ProtocolError
from podwall.core.types import PROTO_TCP, Direction
from podwall.dpi.base import DetectContext, Detection, Detector
from podwall.dpi.protocols.dns import DnsDetector
from podwall.dpi.protocols.ftp import FtpDetector, FtpParser, parse_eprt, parse_port
from podwall.dpi.protocols.http1 import HttpDetector
from podwall.dpi.protocols.redis import RedisDetector
from podwall.dpi.protocols.smtp import SmtpDetector
from podwall.dpi.protocols.tls import TlsDetector
from podwall.dpi.session import DpiSession

from .fixtures import FEED_MODES, Chunks, feed_all, split_chunks
from .fixtures import handmade as hm
from .fixtures import handmade_text as ht
from .textproto_props import property_tests

C2S, S2C = Direction.C2S, Direction.S2C
ON_21 = DetectContext(PROTO_TCP, 40000, 21)
ON_8021 = DetectContext(PROTO_TCP, 40000, 8021)


@pytest.mark.parametrize(
    ("direction", "data", "expected"),
    [
        pytest.param(S2C, ht.FTP_AUTH_TLS[0][1], Detection.MATCH, id="proftpd-greeting"),
        pytest.param(
            S2C, b"220-Welcome to the FTP archive\r\n220-rules\r\n220 go\r\n", Detection.MATCH, id="multi-line"
        ),
        pytest.param(S2C, b"220-Welcome to the FTP archive\r\n", Detection.NEED_MORE, id="greeting-pending"),
        pytest.param(S2C, ht.FTP_SESSION[0][1], Detection.MATCH, id="vsftpd-names-ftp"),
        pytest.param(S2C, b"220 Service ready\r\n", Detection.NEED_MORE, id="bare-220-waits-for-client"),
        pytest.param(S2C, b"220 mx ESMTP Postfix\r\n", Detection.NO, id="smtp-greeting"),
        pytest.param(C2S, b"USER anonymous\r\n", Detection.MATCH, id="user"),
        pytest.param(C2S, b"AUTH TLS\r\n", Detection.MATCH, id="auth-tls"),
        pytest.param(C2S, b"feat\r\n", Detection.MATCH, id="feat-lower-case"),
        pytest.param(C2S, b"US", Detection.NEED_MORE, id="user-prefix"),
        pytest.param(C2S, b"EHLO x\r\n", Detection.NO, id="smtp-ehlo-is-not-ftp"),
        pytest.param(C2S, hm.HTTP_GET, Detection.NO, id="http-request-is-not-ftp"),
        pytest.param(S2C, b"SSH-2.0-x\r\n", Detection.NO, id="ssh-is-not-ftp"),
        pytest.param(C2S, b"\x00\x9f\x11random", Detection.NO, id="random-bytes-are-not-ftp"),
    ],
)
def test_detect(direction: Direction, data: bytes, expected: Detection) -> None:
    """A greeting naming FTP or a client's first FTP command decides FTP; a bare 220 waits."""
    assert FtpDetector().detect(direction, data, ON_21) is expected


def test_non_standard_port_is_still_ftp() -> None:
    """A bare 220 greeting then USER decides FTP on port 8021, not SMTP."""
    detectors: list[Detector] = [
        SmtpDetector(),
        FtpDetector(),
        HttpDetector(),
        TlsDetector(),
        DnsDetector(),
        RedisDetector(),
    ]
    session = DpiSession(ON_8021, detectors=detectors)
    for direction, data in [(S2C, b"220 Service ready\r\n"), *ht.FTP_SESSION[1:]]:
        session.on_stream(direction, data)
    assert (session.app, session.error, session.events[0].kind) == ("ftp", None, "greeting")


@pytest.mark.parametrize(
    ("argument", "expected"),
    [
        pytest.param(b"192,0,2,1,7,138", ("192.0.2.1", 1930), id="port"),
        pytest.param(b"Entering Passive Mode (10,0,0,1,0,21).", ("10.0.0.1", 21), id="pasv-reply"),
        pytest.param(b"300,0,2,1,7,138", None, id="octet-too-big"),
        pytest.param(b"1,2,3", None, id="too-few"),
    ],
)
def test_parse_port(argument: bytes, expected: tuple[str, int] | None) -> None:
    """PORT arguments and 227 texts give the data address, malformed ones None."""
    assert parse_port(argument) == expected


@pytest.mark.parametrize(
    ("argument", "expected"),
    [
        pytest.param(b"|1|132.235.1.2|6275|", ("132.235.1.2", 6275), id="ipv4"),
        pytest.param(b"!2!2001:db8::1!21!", ("2001:db8::1", 21), id="ipv6-other-delimiter"),
        pytest.param(b"|1|2001:db8::1|21|", None, id="family-mismatch"),
        pytest.param(b"|1|1.2.3.4|0|", None, id="port-zero"),
        pytest.param(b"|3|1.2.3.4|21|", None, id="bad-family"),
    ],
)
def test_parse_eprt(argument: bytes, expected: tuple[str, int] | None) -> None:
    """EPRT arguments give the data address; wrong family, port or shape give None."""
    assert parse_eprt(argument) == expected


@pytest.mark.parametrize("mode", FEED_MODES)
def test_session(mode: str) -> None:
    """Login (password masked), CWD, data connections (PASV/EPSV/EPRT/PORT), transfers and 1xx replies."""
    parser = FtpParser()
    events = feed_all(parser, split_chunks(ht.FTP_SESSION, mode))
    assert "secret@example.org" not in str([e.fields for e in events])
    commands = {e.fields["verb"]: e.fields for e in events if e.kind == "command"}
    assert commands["USER"]["user"] == "anonymous"
    assert (commands["PASS"]["password"], commands["PASS"]["argument"]) == ("***", "***")
    assert (commands["CWD"]["path"], commands["RETR"]["path"], commands["STOR"]["path"]) == (
        "/pub",
        "file.txt",
        "up.bin",
    )
    assert (commands["EPRT"]["data_host"], commands["EPRT"]["data_port"]) == ("2001:db8::1", 6275)
    assert (commands["PORT"]["data_host"], commands["PORT"]["data_port"]) == ("192.0.2.1", 1930)
    replies = [e.fields for e in events if e.kind == "reply"]
    assert [(r["code"], r["command"]) for r in replies] == [
        (331, "USER"), (230, "PASS"), (250, "CWD"), (227, "PASV"), (150, "RETR"), (226, "RETR"), (229, "EPSV"),
        (200, "EPRT"), (200, "PORT"), (150, "STOR"), (226, "STOR"), (221, "QUIT"),
    ]  # fmt: skip
    assert (replies[3]["data_host"], replies[3]["data_port"]) == ("192.0.2.10", 50000)
    assert replies[6]["data_port"] == 40001
    assert parser.finished


@pytest.mark.parametrize("mode", FEED_MODES)
def test_auth_tls_finishes(mode: str) -> None:
    """A multi-line FEAT reply, then AUTH TLS accepted with 234: finished, TLS bytes unread."""
    parser = FtpParser()
    events = feed_all(parser, split_chunks(ht.FTP_AUTH_TLS, mode))
    assert [(e.kind, e.fields["code"]) for e in events if e.kind != "command"] == [
        ("greeting", 220), ("reply", 211), ("reply", 234),
    ]  # fmt: skip
    assert parser.finished


@pytest.mark.parametrize(
    ("chunks", "message"),
    [
        pytest.param([(S2C, b"OK ready\r\n")], "without a 3-digit code", id="reply-without-code"),
        pytest.param([(C2S, b"US3R x\r\n")], "not a command", id="digit-in-verb"),
        pytest.param([(C2S, b"USER " + b"x" * 70000)], "longer than", id="endless-line"),
    ],
)
@pytest.mark.parametrize("mode", ["whole", "byte-by-byte"])
def test_malformed_is_protocol_error(chunks: Chunks, message: str, mode: str) -> None:
    """Replies without codes, non-commands and unbounded lines raise ProtocolError saying what."""
    with pytest.raises(ProtocolError, match=message):
        feed_all(FtpParser(), split_chunks(chunks, mode))


(
    test_random_bytes_raise_only_protocol_error,
    test_mutated_transcripts_raise_only_protocol_error,
    test_held_memory_is_bounded,
    test_any_split_gives_the_same_events,
    test_prefix_of_a_match_is_never_no,
    test_no_is_final,
) = property_tests(
    lambda limits: FtpParser(limits),
    [ht.FTP_SESSION, ht.FTP_AUTH_TLS],
    FtpDetector(),
    [ht.FTP_AUTH_TLS[0], (C2S, b"USER anonymous\r\n")],
)
