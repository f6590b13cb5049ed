"""HTTP/1.x detection and parsing: request/status line detection, framing, events, errors."""

from __future__ import annotations

from typing import Any

import pytest

from podwall.core.errors import ProtocolError
from podwall.core.limits import Limits
from podwall.core.types import PROTO_TCP, Direction
from podwall.dpi.base import DetectContext, Detection
from podwall.dpi.protocols.http1 import BODY_CAPTURE, HttpDetector, HttpParser, host_without_port

from .fixtures import CORPUS, FEED_MODES, Chunks, feed_all, load_chunks, split_chunks, summary
from .fixtures import handmade as hm

C2S, S2C = Direction.C2S, Direction.S2C
CTX = DetectContext(PROTO_TCP, 40000, 80)


def _matches(events: list[Any], expected: list[tuple[str, Direction, dict[str, object]]]) -> None:
    got = [
        (e.kind, e.direction, {k: e.fields.get(k) for k in want})
        for e, (_, _, want) in zip(events, expected, strict=False)
    ]
    assert len(events) == len(expected), summary(events)
    assert got == expected


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        pytest.param(b"GET / HTTP/1.1\r\n", Detection.MATCH, id="get"),
        pytest.param(b"GET / HTTP/1.0\n", Detection.MATCH, id="bare-lf"),
        pytest.param(b"POST /x?y=1 HTTP/1.1\r\nHost: a\r\n", Detection.MATCH, id="post-with-headers"),
        pytest.param(b"PROPFIND /dav HTTP/1.1\r\n", Detection.MATCH, id="webdav"),
        pytest.param(b"OPTIONS * HTTP/1.1\r\n", Detection.MATCH, id="asterisk-form"),
        pytest.param(b"GET    /spaced    HTTP/1.1\r\n", Detection.MATCH, id="runs-of-spaces"),
        pytest.param(b"G", Detection.NEED_MORE, id="method-prefix"),
        pytest.param(b"GET", Detection.NEED_MORE, id="method-only"),
        pytest.param(b"GET /index.ht", Detection.NEED_MORE, id="target-prefix"),
        pytest.param(b"GET / HTT", Detection.NEED_MORE, id="version-prefix"),
        pytest.param(b"GET / HTTP/1.1\r", Detection.NEED_MORE, id="before-lf"),
        pytest.param(b"get / HTTP/1.1\r\n", Detection.NO, id="lower-case-method"),
        pytest.param(b"FETCH / HTTP/1.1\r\n", Detection.NO, id="unknown-method"),
        pytest.param(b"GET / HTTP/2.0\r\n", Detection.NO, id="http2-version"),
        pytest.param(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", Detection.NO, id="h2-preface"),
        pytest.param(b"GET /\x00 HTTP/1.1\r\n", Detection.NO, id="control-in-target"),
        pytest.param(b"GET / FTP/1.1\r\n", Detection.NO, id="wrong-protocol"),
        pytest.param(b"\x16\x03\x01\x02\x00\x01", Detection.NO, id="tls-record"),
        pytest.param(b"*1\r\n$4\r\nPING\r\n", Detection.NO, id="redis"),
        pytest.param(b"GET /" + b"a" * 9000, Detection.NO, id="endless-target"),
    ],
)
def test_detect_request(data: bytes, expected: Detection) -> None:
    """The client side is http exactly when it starts with a known method and an HTTP/1.x request line."""
    assert HttpDetector().detect(C2S, data, CTX) is expected


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        pytest.param(b"HTTP/1.1 200 OK\r\n", Detection.MATCH, id="ok"),
        pytest.param(b"HTTP/1.0 404", Detection.MATCH, id="no-reason-yet"),
        pytest.param(b"HTTP/1.", Detection.NEED_MORE, id="prefix"),
        pytest.param(b"HTTP/1.1 2", Detection.NEED_MORE, id="status-prefix"),
        pytest.param(b"HTTP/2 200", Detection.NO, id="http2"),
        pytest.param(b"SSH-2.0-OpenSSH\r\n", Detection.NO, id="ssh-banner"),
        pytest.param(b"+PONG\r\n", Detection.NO, id="redis-reply"),
    ],
)
def test_detect_response(data: bytes, expected: Detection) -> None:
    """The server side is http when it starts with `HTTP/1.x NNN`."""
    assert HttpDetector().detect(S2C, data, CTX) is expected


@pytest.mark.parametrize(("chunks", "expected"), [pytest.param(c, e, id=name) for name, c, e in hm.HTTP_TRANSCRIPTS])
@pytest.mark.parametrize("mode", FEED_MODES)
def test_transcripts(chunks: Chunks, expected: list[tuple[str, Direction, dict[str, object]]], mode: str) -> None:
    """Hand-built RFC 9112 exchanges give the same events whole, byte by byte and merged."""
    _matches(feed_all(HttpParser(), split_chunks(chunks, mode)), expected)


@pytest.mark.parametrize(("chunks", "expected"), [pytest.param(c, e, id=n) for n, c, e in hm.HTTP_TRANSCRIPTS])
def test_trailing_data_changes_nothing(
    chunks: Chunks, expected: list[tuple[str, Direction, dict[str, object]]]
) -> None:
    """An incomplete next request after a transcript adds no event and no error."""
    _matches(feed_all(HttpParser(), [*chunks, (C2S, b"GET /next HTTP/1.1\r\nHost: x\r\nAcc")]), expected)


def test_response_until_close_is_emitted_on_close() -> None:
    """A response without length is complete when the connection closes."""
    parser = HttpParser()
    assert feed_all(parser, [(C2S, hm.HTTP_GET), (S2C, hm.HTTP_UNTIL_CLOSE)])[1:] == []
    closed = parser.close()
    assert [(e.kind, e.fields["status"], e.fields["body"]) for e in closed] == [
        ("response", 200, b"all of this until the end")
    ]


@pytest.mark.parametrize(
    ("request_bytes", "reply"),
    [
        pytest.param(hm.HTTP_WEBSOCKET, hm.HTTP_SWITCHING, id="websocket-101"),
        pytest.param(hm.HTTP_CONNECT, b"HTTP/1.1 200 Connection established\r\n\r\n", id="connect-200"),
    ],
)
def test_protocol_switch_finishes(request_bytes: bytes, reply: bytes) -> None:
    """After 101 or a successful CONNECT the parser is finished and ignores the tunnelled bytes."""
    parser = HttpParser()
    events = feed_all(parser, [(C2S, request_bytes), (S2C, reply)])
    assert [e.kind for e in events] == ["request", "response"]
    assert parser.finished
    assert feed_all(parser, [(C2S, b"\x16\x03\x01\x00\x05hello"), (S2C, b"\x81\x05hello")]) == []


def test_large_body_is_captured_up_to_the_cap() -> None:
    """A body larger than the capture is reported once, with its first BODY_CAPTURE bytes, before it ends."""
    size = BODY_CAPTURE * 3
    parser = HttpParser()
    head = b"POST /big HTTP/1.1\r\nHost: b\r\nContent-Length: %d\r\n\r\n" % size
    early = parser.feed(C2S, head + b"x" * (BODY_CAPTURE + 10))
    assert [len(e.fields["body"]) for e in early] == [BODY_CAPTURE]
    assert parser.feed(C2S, b"x" * (size - BODY_CAPTURE - 10)) == []
    assert [e.fields["path"] for e in parser.feed(C2S, b"GET /after HTTP/1.1\r\n\r\n")] == ["/after"]


@pytest.mark.parametrize(
    ("chunks", "message"),
    [
        pytest.param(
            [(C2S, b"POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n")],
            "conflicting Content-Length",
            id="duplicate-conflicting-length",
        ),
        pytest.param(
            [(C2S, b"POST / HTTP/1.1\r\nContent-Length: 3, 4\r\n\r\n")],
            "conflicting Content-Length",
            id="list-conflicting-length",
        ),
        pytest.param(
            [(C2S, b"POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n")],
            "invalid Content-Length",
            id="negative-length",
        ),
        pytest.param(
            [(C2S, b"POST / HTTP/1.1\r\nContent-Length: 0x10\r\n\r\n")],
            "invalid Content-Length",
            id="hex-length",
        ),
        pytest.param(
            [(C2S, b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked, gzip\r\n\r\n")],
            "does not end in chunked",
            id="request-coding-not-chunked",
        ),
        pytest.param([(C2S, b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n")], "conflicting Host", id="two-hosts"),
        pytest.param([(C2S, b"GET / HTTP/1.1\r\nHost : a\r\n\r\n")], "invalid header line", id="space-before-colon"),
        pytest.param([(C2S, b"GET / HTTP/1.1\r\nno colon here\r\n\r\n")], "invalid header line", id="no-colon"),
        pytest.param([(C2S, b"GET / HTTP/1.1\r\n folded-first\r\n\r\n")], "continuation", id="fold-first"),
        pytest.param([(C2S, b"GET / HTTP/2.0\r\n\r\n")], "unsupported version", id="request-version"),
        pytest.param([(C2S, b"GET /a b HTTP/1.1\r\n\r\n")], "invalid request line", id="space-in-target"),
        pytest.param(
            [(C2S, b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n")],
            "invalid chunk-size",
            id="bad-chunk-size",
        ),
        pytest.param(
            [(C2S, b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabX")],
            "not followed by CRLF",
            id="chunk-without-crlf",
        ),
        pytest.param([(C2S, hm.HTTP_GET), (S2C, b"HTTP/1.1 OK\r\n\r\n")], "invalid status line", id="no-status"),
        pytest.param([(C2S, b"GET / HTTP/1.1\r\nX: " + b"a" * 70000)], "exceeds", id="header-block-too-big"),
        pytest.param(
            [(C2S, b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n" + b"1" * 5000)],
            "chunk-size line exceeds",
            id="chunk-line-too-long",
        ),
    ],
)
@pytest.mark.parametrize("mode", ["whole", "merged"])
def test_malformed_is_protocol_error(chunks: Chunks, message: str, mode: str) -> None:
    """Framing that would let a request be smuggled or read two ways is a ProtocolError that says why."""
    with pytest.raises(ProtocolError, match=message):
        feed_all(HttpParser(), split_chunks(chunks, mode))


def test_header_block_cap_follows_limits() -> None:
    """The header block is bounded by Limits.parser_buffer, whatever the chunking."""
    small = Limits(parser_buffer=256)
    data = b"GET / HTTP/1.1\r\nX-Pad: " + b"p" * 300 + b"\r\n\r\n"
    for mode in ("whole", "byte-by-byte"):
        with pytest.raises(ProtocolError, match="exceeds 256 bytes"):
            feed_all(HttpParser(small), split_chunks([(C2S, data)], mode))


@pytest.mark.parametrize(
    ("value", "host"),
    [
        pytest.param("Example.COM:8080", "example.com", id="port"),
        pytest.param("example.com", "example.com", id="plain"),
        pytest.param("[2001:db8::1]:443", "2001:db8::1", id="ipv6-port"),
        pytest.param("[::1]", "::1", id="ipv6"),
        pytest.param("10.0.0.1:", "10.0.0.1", id="empty-port"),
        pytest.param("", None, id="empty"),
    ],
)
def test_host_without_port(value: str, host: str | None) -> None:
    """server_name is the Host header without its port, lower-cased."""
    assert host_without_port(value) == host


@pytest.mark.parametrize("name", ["http_google", "http_lines_split", "http_sql_injection", "http_manipulated"])
@pytest.mark.parametrize("mode", FEED_MODES)
def test_corpus_flows(name: str, mode: str) -> None:
    """Captured flows parse to the same events however split, and name the host nfstream names."""
    chunks = load_chunks(name)
    parser = HttpParser()
    events = feed_all(parser, split_chunks(chunks, mode))
    reference = feed_all(HttpParser(), chunks)
    assert summary(events) == summary(reference)
    assert events[0].kind == "request"
    assert any(e.kind == "response" for e in events)
    assert parser.server_name() == CORPUS[name].server_name


def test_corpus_google_fields() -> None:
    """The http.pcapng exchange yields curl's GET and Google's 301 with its declared body."""
    events = feed_all(HttpParser(), load_chunks("http_google"))
    request, response = events
    assert (request.fields["method"], request.fields["path"], request.fields["user_agent"]) == (
        "GET",
        "/",
        "curl/7.68.0",
    )
    assert (response.fields["status"], response.fields["reason"]) == (301, "Moved Permanently")
    assert len(response.fields["body"]) == response.fields["content_length"] == 219


def test_corpus_sql_injection_path_is_kept_verbatim() -> None:
    """The request target is reported as sent (percent-encoding intact) for later inspection."""
    request = feed_all(HttpParser(), load_chunks("http_sql_injection"))[0]
    assert request.fields["path"].startswith("/DVWA-master/vulnerabilities/sqli/?id=%3Fid%3Da%27+UNION")
    assert ("cookie", "PHPSESSID=ua7oumqch4h2qelubpvo21dec6; security=low") in request.fields["headers"]
