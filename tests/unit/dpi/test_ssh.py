"""SSH detection by banner and parsing of banners and KEXINIT: corpus flows, hand-built packets, errors."""

from __future__ import annotations

import pytest

from podwall.core.errors import ProtocolError
from podwall.core.types import PROTO_TCP, Direction
from podwall.dpi.base import DetectContext, Detection
from podwall.dpi.protocols.dns import DnsDetector
from podwall.dpi.protocols.http1 import HttpDetector
from podwall.dpi.protocols.redis import RedisDetector
from podwall.dpi.protocols.ssh import SshDetector, SshParser
from podwall.dpi.protocols.tls import TlsDetector
from podwall.dpi.session import DpiSession

from .fixtures import FEED_MODES, Chunks, feed_all, load_chunks, split_chunks, summary
from .fixtures import handmade as hm
from .textproto_props import property_tests

C2S, S2C = Direction.C2S, Direction.S2C
ON_22 = DetectContext(PROTO_TCP, 40000, 22)
ON_8000 = DetectContext(PROTO_TCP, 40000, 8000)


def kexinit(*lists: bytes, padding: int = 4) -> bytes:
    """A clear SSH binary packet holding a KEXINIT with the given name-lists (ten, padded with empties)."""
    names = list(lists) + [b""] * (10 - len(lists))
    payload = b"\x14" + b"\x00" * 16 + b"".join(len(n).to_bytes(4, "big") + n for n in names) + b"\x00" + b"\x00" * 4
    length = 1 + len(payload) + padding
    return length.to_bytes(4, "big") + bytes([padding]) + payload + b"\x00" * padding


@pytest.mark.parametrize(
    ("direction", "data", "expected"),
    [
        pytest.param(C2S, b"SSH-2.0-OpenSSH_9.6\r\n", Detection.MATCH, id="client-banner"),
        pytest.param(S2C, b"SSH-2.0-dropbear_2022.83\r\n", Detection.MATCH, id="server-banner"),
        pytest.param(S2C, b"SSH-1.99-Cisco-1.25\r\n", Detection.MATCH, id="ssh-1.99"),
        pytest.param(C2S, b"SSH-1.5-", Detection.MATCH, id="ssh-1.5-head"),
        pytest.param(C2S, b"SSH-2", Detection.NEED_MORE, id="prefix"),
        pytest.param(C2S, b"S", Detection.NEED_MORE, id="one-byte"),
        pytest.param(S2C, b"Welcome to the host\r\nSSH-2.0-x\r\n", Detection.MATCH, id="server-lines-first"),
        pytest.param(S2C, b"Welcome to", Detection.NEED_MORE, id="server-text-line-pending"),
        pytest.param(C2S, b"Welcome\r\nSSH-2.0-x\r\n", Detection.NO, id="client-lines-first"),
        pytest.param(S2C, b"x\r\n" * 10 + b"SSH-2.0-x\r\n", Detection.NO, id="too-many-lines-first"),
        pytest.param(C2S, b"SSH-x.0-", Detection.NO, id="bad-version"),
        pytest.param(C2S, hm.HTTP_GET, Detection.NO, id="http-request-is-not-ssh"),
        pytest.param(C2S, hm.tls_records(hm.client_hello()), Detection.NO, id="tls-is-not-ssh"),
        pytest.param(C2S, b"\x10\x0c\x00\x04MQTT\x04\x02\x00\x3c\x00\x00", Detection.NO, id="mqtt-is-not-ssh"),
        pytest.param(S2C, b"\x8f\x01\x00\xfe random", Detection.NO, id="random-bytes-are-not-ssh"),
    ],
)
def test_detect(direction: Direction, data: bytes, expected: Detection) -> None:
    """The banner decides SSH from either side; a server may precede it with a few text lines."""
    assert SshDetector().detect(direction, data, ON_22) is expected


def _session(chunks: Chunks, ctx: DetectContext) -> DpiSession:
    session = DpiSession(ctx, detectors=[SshDetector(), HttpDetector(), TlsDetector(), DnsDetector(), RedisDetector()])
    for direction, data in chunks:
        session.on_stream(direction, data)
    return session


def test_non_standard_port_is_still_ssh() -> None:
    """The corpus flow on port 8000 (HTTP's tie-break port) is SSH, finished after both KEXINITs."""
    session = _session(load_chunks("ssh_port_8000"), ON_8000)
    assert (session.app, session.done, session.error) == ("ssh", True, None)
    assert [e.kind for e in session.events] == ["banner", "banner", "kexinit", "kexinit"]


@pytest.mark.parametrize("mode", FEED_MODES)
@pytest.mark.parametrize("name", ["ssh_openssh", "ssh_port_8000"])
def test_corpus(name: str, mode: str) -> None:
    """ssh.pcap: both banners and both KEXINITs, the same however split; then the parser is finished."""
    parser = SshParser()
    events = feed_all(parser, split_chunks(load_chunks(name), mode))
    assert summary(events) == summary(feed_all(SshParser(), load_chunks(name)))
    assert [(e.kind, e.direction) for e in events if e.kind == "kexinit"] == [("kexinit", C2S), ("kexinit", S2C)]
    assert parser.finished
    banners = {e.fields["side"]: e.fields for e in events if e.kind == "banner"}
    if name == "ssh_openssh":
        assert banners["server"]["software"] == "OpenSSH_5.3"
        assert "arcfour128" in events[2].fields["ciphers_c2s"]
    else:
        assert banners["client"]["comments"] == "Ubuntu-4ubuntu0.11"
        assert banners["server"]["software"] == "APACHE-SSHD-2.5.0"
        assert events[2].fields["kex_algorithms"][0] == "curve25519-sha256"


HANDMADE: Chunks = [
    (S2C, b"Authorized use only\r\nSSH-2.0-srv_1.0 extra words\r\n"),
    (S2C, kexinit(b"curve25519-sha256", b"ssh-ed25519", b"aes256-gcm@openssh.com") + b"trailing kexdh"),
    (C2S, b"SSH-1.5-oldclient\n\x00\x00\x01\x00binary ssh1"),
]


@pytest.mark.parametrize("mode", FEED_MODES)
def test_handmade(mode: str) -> None:
    """Pre-banner lines are skipped, comments kept, an SSH-1 side gives only its banner."""
    parser = SshParser()
    events = feed_all(parser, split_chunks(HANDMADE, mode))
    assert [(e.kind, e.fields.get("software"), e.fields.get("comments")) for e in events] == [
        ("banner", "srv_1.0", "extra words"),
        ("kexinit", None, None),
        ("banner", "oldclient", None),
    ]
    assert events[1].fields["ciphers_c2s"] == ["aes256-gcm@openssh.com"]
    assert events[1].fields["macs_c2s"] == []
    assert parser.finished


@pytest.mark.parametrize(
    ("chunks", "message"),
    [
        pytest.param([(C2S, b"HELLO\r\n")], "invalid version banner", id="client-not-banner"),
        pytest.param([(S2C, b"SSH-2.0\r\n")], "invalid version banner", id="banner-without-software"),
        pytest.param([(S2C, b"x\r\n" * 9)], "lines before", id="endless-pre-banner"),
        pytest.param([(C2S, b"SSH-2.0-" + b"a" * 2000)], "longer than", id="endless-banner"),
        pytest.param([(C2S, b"SSH-2.0-x\r\n\x00\x01\x00\x00\x04")], "bad packet length", id="huge-packet"),
        pytest.param([(C2S, b"SSH-2.0-x\r\n\x00\x00\x00\x04\x08")], "bad packet length", id="padding-too-long"),
        pytest.param(
            [(C2S, b"SSH-2.0-x\r\n" + (b"\x00\x00\x00\x0c\x04\x15" + b"\x00" * 10) * 4)], "no KEXINIT", id="no-kexinit"
        ),
        pytest.param([(C2S, b"SSH-2.0-x\r\n" + kexinit(b"a b"))], "not a name-list", id="space-in-list"),
        pytest.param(
            [(C2S, b"SSH-2.0-x\r\n" + b"\x00\x00\x00\x0c\x04\x14" + b"\x00" * 10)], "truncated", id="short-kexinit"
        ),
    ],
)
@pytest.mark.parametrize("mode", ["whole", "byte-by-byte"])
def test_malformed_is_protocol_error(chunks: Chunks, message: str, mode: str) -> None:
    """Bad banners, packet lengths and KEXINIT lists raise ProtocolError saying what."""
    with pytest.raises(ProtocolError, match=message):
        feed_all(SshParser(), split_chunks(chunks, mode))


(
    test_random_bytes_raise_only_protocol_error,
    test_mutated_transcripts_raise_only_protocol_error,
    test_held_memory_is_bounded,
    test_any_split_gives_the_same_events,
    test_prefix_of_a_match_is_never_no,
    test_no_is_final,
) = property_tests(
    lambda limits: SshParser(limits),
    [load_chunks("ssh_openssh"), load_chunks("ssh_port_8000"), HANDMADE],
    SshDetector(),
    [(C2S, b"SSH-2.0-OpenSSH_9.6\r\n"), (S2C, b"Hi\r\nSSH-1.99-x\r\n")],
)
