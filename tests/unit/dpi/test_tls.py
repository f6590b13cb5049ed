"""TLS detection and hello parsing: records, fragmentation, SSLv2, alerts, malformed hellos."""

from __future__ import annotations

import pytest

from podwall.core.errors import ProtocolError
from podwall.core.limits import Limits
from podwall.core.types import PROTO_TCP, Direction
from podwall.dpi.base import DetectContext, Detection
from podwall.dpi.protocols.tls import TlsDetector, TlsParser, is_grease, version_name

from .fixtures import CORPUS, FEED_MODES, Chunks, feed_all, load_chunks, split_chunks, summary
from .fixtures import handmade as hm

C2S, S2C = Direction.C2S, Direction.S2C
CTX = DetectContext(PROTO_TCP, 40000, 443)
HELLO = hm.tls_records(hm.client_hello())
SERVER_HELLO = hm.tls_records(hm.server_hello(alpn=b"h2"), version=0x0303)


@pytest.mark.parametrize(
    ("direction", "data", "expected"),
    [
        pytest.param(C2S, HELLO, Detection.MATCH, id="client-hello"),
        pytest.param(C2S, HELLO[:11], Detection.MATCH, id="eleven-bytes-suffice"),
        pytest.param(C2S, HELLO[:1], Detection.NEED_MORE, id="one-byte"),
        pytest.param(C2S, HELLO[:6], Detection.NEED_MORE, id="record-header"),
        pytest.param(C2S, hm.sslv2_client_hello(), Detection.MATCH, id="sslv2-client-hello"),
        pytest.param(C2S, hm.sslv2_client_hello()[:4], Detection.NEED_MORE, id="sslv2-prefix"),
        pytest.param(S2C, SERVER_HELLO, Detection.MATCH, id="server-hello-mid-stream"),
        pytest.param(C2S, SERVER_HELLO, Detection.NO, id="server-hello-from-client"),
        pytest.param(C2S, b"\x17\x03\x03\x00\x20" + bytes(32), Detection.NO, id="application-data"),
        pytest.param(C2S, b"\x16\x03\x05\x00\x40\x01", Detection.NO, id="unknown-minor-version"),
        pytest.param(C2S, b"\x16\x03\x01\x00\x00\x01", Detection.NO, id="empty-record"),
        pytest.param(C2S, b"\x16\x03\x01\x02\x00\x02", Detection.NO, id="not-a-client-hello"),
        pytest.param(C2S, b"\x16\x03\x01\x02\x00\x01\x00\x00\x10\x03", Detection.NO, id="hello-too-short"),
        pytest.param(C2S, b"GET / HTTP/1.1\r\n", Detection.NO, id="http"),
        pytest.param(C2S, b"\x80\x2e\x02\x00\x02", Detection.NO, id="sslv2-not-client-hello"),
    ],
)
def test_detect(direction: Direction, data: bytes, expected: Detection) -> None:
    """A handshake record starting a ClientHello (or a ServerHello from the server) is tls, nothing else."""
    assert TlsDetector().detect(direction, data, CTX) is expected


@pytest.mark.parametrize("mode", FEED_MODES)
def test_handmade_hellos(mode: str) -> None:
    """Both hellos give their fields (GREASE listed but not taken as the version); then the parser is done."""
    parser = TlsParser()
    events = feed_all(parser, split_chunks([(C2S, HELLO), (S2C, SERVER_HELLO)], mode))
    assert [e.kind for e in events] == ["client_hello", "server_hello"]
    hello, server = events[0].fields, events[1].fields
    assert hello["sni"] == "example.com"
    assert hello["alpn"] == ["h2", "http/1.1"]
    assert hello["version"] == "TLSv1.3" and hello["legacy_version"] == "TLSv1.2"
    assert hello["supported_versions"] == [0x0A0A, 0x0304, 0x0303]
    assert hello["ciphers"] == [0x1301, 0x1302, 0xC02F]
    assert hello["extensions"] == [0, 10, 11, 13, 16, 43]
    assert hello["supported_groups"] == [0x1D, 0x17]
    assert hello["signature_algorithms"] == [0x0403, 0x0804]
    assert hello["ec_point_formats"] == [0]
    assert (server["version"], server["cipher"], server["alpn"]) == ("TLSv1.3", 0x1301, "h2")
    assert server["hello_retry_request"] is False
    assert parser.server_name() == "example.com"
    assert parser.finished


@pytest.mark.parametrize("size", [1, 7, 100], ids=["1-byte-records", "7-byte-records", "100-byte-records"])
def test_client_hello_across_records(size: int) -> None:
    """A ClientHello fragmented over many handshake records reassembles to the same event."""
    whole = feed_all(TlsParser(), [(C2S, HELLO)])
    fragmented = feed_all(TlsParser(), [(C2S, hm.tls_records(hm.client_hello(), size=size))])
    assert summary(fragmented) == summary(whole)


def test_trailing_data_after_hellos_is_ignored() -> None:
    """Records after the hellos (encrypted or not) add no event and no error."""
    base = [(C2S, HELLO), (S2C, SERVER_HELLO)]
    trailing = [
        (C2S, HELLO),
        (S2C, SERVER_HELLO + b"\x17\x03\x03\x00\x05abc"),
        (C2S, b"\x14\x03\x03\x00\x01\x01"),
    ]
    assert summary(feed_all(TlsParser(), trailing)) == summary(feed_all(TlsParser(), base))


def test_tls12_hello_without_extensions() -> None:
    """A ClientHello without extensions (allowed before TLS 1.3) reports its legacy version and no SNI."""
    events = feed_all(TlsParser(), [(C2S, hm.tls_records(hm.client_hello(with_extensions=False, legacy=0x0301)))])
    assert (events[0].fields["version"], events[0].fields["sni"], events[0].fields["extensions"]) == (
        "TLSv1.0",
        None,
        [],
    )


def test_hello_retry_request_is_flagged() -> None:
    """A ServerHello carrying the HelloRetryRequest random is reported as such."""
    hrr_random = bytes.fromhex("cf21ad74e59a6111be1d8c021e65b891c2a211167abb8c5e079e09e2c8a8339c")
    events = feed_all(TlsParser(), [(C2S, HELLO), (S2C, hm.tls_records(hm.server_hello(random=hrr_random)))])
    assert events[1].fields["hello_retry_request"] is True


def test_sslv2_client_hello() -> None:
    """An SSLv2-compatible ClientHello yields its version and 3-byte cipher specs."""
    events = feed_all(TlsParser(), [(C2S, hm.sslv2_client_hello())])
    fields = events[0].fields
    assert (events[0].kind, fields["version"], fields["ciphers"], fields["sslv2_format"]) == (
        "client_hello",
        "TLSv1.0",
        [0x2F, 0x35, 0x010080],
        True,
    )


def test_server_alert_finishes() -> None:
    """A server answering the ClientHello with an alert ends the handshake: alert event, parser finished."""
    parser = TlsParser()
    events = feed_all(parser, [(C2S, HELLO), (S2C, b"\x15\x03\x03\x00\x02\x02\x28")])
    assert [(e.kind, e.fields.get("level"), e.fields.get("description")) for e in events][1] == (
        "alert",
        "fatal",
        40,
    )
    assert parser.finished


@pytest.mark.parametrize(
    ("chunks", "message"),
    [
        pytest.param(
            [(C2S, hm.tls_records(hm.client_hello(extra=hm.sni_ext(b"x.example"))))],
            "duplicate extension",
            id="duplicate-sni",
        ),
        pytest.param([(C2S, hm.tls_records(hm.client_hello(sni=b"bad host")))], "printable ASCII", id="space-in-sni"),
        pytest.param([(C2S, hm.tls_records(hm.client_hello(sni=b"\xff\xfe")))], "printable ASCII", id="binary-sni"),
        pytest.param([(C2S, hm.tls_records(hm.client_hello(ciphers=())))], "no cipher suites", id="no-ciphers"),
        pytest.param([(C2S, hm.tls_records(hm.client_hello(alpn=(b"",))))], "empty protocol", id="empty-alpn"),
        pytest.param([(C2S, hm.tls_records(hm.client_hello(legacy=0x0200)))], "not 3.x", id="legacy-version"),
        pytest.param([(C2S, hm.tls_records(b"\x01\x00\x00\x05" + b"\x03\x03abc"))], "truncated", id="truncated-body"),
        pytest.param(
            [(C2S, hm.tls_records(b"\x02" + hm.client_hello()[1:]))],
            "expected ClientHello",
            id="server-hello-from-client",
        ),
        pytest.param(
            [(C2S, HELLO), (S2C, hm.tls_records(hm.client_hello(), version=0x0303))],
            "expected ServerHello",
            id="client-hello-from-server",
        ),
        pytest.param([(C2S, b"\x19\x03\x01\x00\x01\x00")], "unknown content type", id="record-type-25"),
        pytest.param([(C2S, b"\x16\x04\x01\x00\x01\x00")], "bad version", id="record-version"),
        pytest.param([(C2S, b"\x17\x03\x03\x00\x01\x00")], "before the hello", id="data-before-hello"),
        pytest.param([(C2S, b"\x16\x03\x01\x00\x04\x01\x01\x01\x00")], "exceeds", id="hello-longer-than-cap"),
        pytest.param(
            [(C2S, b"\x16\x03\x01\x00\x02\x01\x00\x17\x03\x03\x00\x01\x00")],
            "inside a fragmented handshake",
            id="interleaved-record",
        ),
    ],
)
@pytest.mark.parametrize("mode", ["whole", "byte-by-byte"])
def test_malformed_is_protocol_error(chunks: Chunks, message: str, mode: str) -> None:
    """Malformed records and hellos raise ProtocolError saying what is wrong."""
    with pytest.raises(ProtocolError, match=message):
        feed_all(TlsParser(), split_chunks(chunks, mode))


def test_handshake_cap_follows_limits() -> None:
    """A handshake message announced larger than Limits.parser_buffer is refused before it is buffered."""
    with pytest.raises(ProtocolError, match="exceeds 512"):
        TlsParser(Limits(parser_buffer=512)).feed(C2S, hm.tls_records(hm.client_hello(sni=b"a" * 600)))


@pytest.mark.parametrize(
    ("code", "name"),
    [
        (0x0300, "SSLv3"),
        (0x0303, "TLSv1.2"),
        (0x0304, "TLSv1.3"),
        (0x7F1C, "TLSv1.3-draft-28"),
        (0xFEFD, "0xfefd"),
    ],
    ids=["ssl3", "tls12", "tls13", "draft", "dtls-unknown"],
)
def test_version_names(code: int, name: str) -> None:
    """Version codes print as nDPI and Wireshark users expect."""
    assert version_name(code) == name


def test_grease_values() -> None:
    """Exactly the sixteen RFC 8701 values are GREASE."""
    assert [v for v in range(0x10000) if is_grease(v)] == [0x0A0A + 0x1010 * i for i in range(16)]


@pytest.mark.parametrize(
    ("name", "version", "alpn", "cipher", "server_alpn"),
    [
        pytest.param("tls_curl", "TLSv1.2", ["h2", "http/1.1"], 0xC02F, "h2", id="443-curl"),
        pytest.param("tls_ech", "TLSv1.3", ["h2", "http/1.1"], 0x1301, None, id="tls-ech"),
    ],
)
@pytest.mark.parametrize("mode", FEED_MODES)
def test_corpus_flows(
    name: str, version: str, alpn: list[str], cipher: int, server_alpn: str | None, mode: str
) -> None:
    """Captured handshakes give nfstream's SNI and the versions, ALPN and cipher that nDPI reports."""
    parser = TlsParser()
    events = feed_all(parser, split_chunks(load_chunks(name), mode))
    assert [e.kind for e in events] == ["client_hello", "server_hello"]
    hello, server = events[0].fields, events[1].fields
    assert hello["sni"] == parser.server_name() == CORPUS[name].server_name
    assert (hello["version"], hello["alpn"]) == (version, alpn)
    assert (server["version"], server["cipher"], server["alpn"]) == (version, cipher, server_alpn)
