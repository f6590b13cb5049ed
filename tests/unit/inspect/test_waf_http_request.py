"""The WAF's HTTP transaction reader: raw request files (+ response) and DPI events."""

from __future__ import annotations

from pathlib import Path

import pytest

from podwall.core.errors import InputError
from podwall.core.types import Direction
from podwall.dpi.base import L7Event
from podwall.inspect.waf.http_request import from_events, load_http_file, parse_http

GOOD = [
    pytest.param(
        b"GET /a/b?x=1 HTTP/1.1\r\nHost: Example.COM:8080\r\nUser-Agent: t\r\n\r\n",
        ("GET", "/a/b?x=1", "1.1", "example.com", b"", None),
        id="plain-get",
    ),
    pytest.param(
        b"POST /p HTTP/1.0\r\nHost: h\r\nContent-Length: 5\r\n\r\nx=123",
        ("POST", "/p", "1.0", "h", b"x=123", None),
        id="content-length",
    ),
    pytest.param(
        b"POST /p HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;ext=1\r\nde\r\n0\r\n\r\n",
        ("POST", "/p", "1.1", "h", b"abcde", None),
        id="chunked",
    ),
    pytest.param(
        b"POST /p HTTP/1.1\nHost: h\n\nq=hand written",
        ("POST", "/p", "1.1", "h", b"q=hand written", None),
        id="bare-lf-body-without-length",
    ),
    pytest.param(
        b"GET / HTTP/1.1\r\nHost: h\r\n\r\nHTTP/1.1 404 Not Found\r\nContent-Length: 3\r\n\r\nno!",
        ("GET", "/", "1.1", "h", b"", (404, b"no!")),
        id="with-response",
    ),
    pytest.param(
        b"GET / HTTP/1.1\r\nHost: [::1]:80\r\n\r\nHTTP/1.1 200 OK\r\n\r\nbody runs to the end",
        ("GET", "/", "1.1", "::1", b"", (200, b"body runs to the end")),
        id="response-to-eof-ipv6-host",
    ),
]


@pytest.mark.parametrize(("raw", "expected"), GOOD)
def test_parse_http_reads_request_and_response(raw: bytes, expected: tuple) -> None:
    """A raw file yields the method, target, version, host, body and, when present, the response."""
    method, uri, version, host, body, response = expected
    txn = parse_http(raw)
    assert (txn.request.method, txn.request.uri, txn.request.version) == (method, uri, version)
    assert txn.request.host == host
    assert txn.request.body == body
    if response is None:
        assert txn.response is None
    else:
        assert txn.response is not None
        assert (txn.response.status, txn.response.body) == response


def test_obs_fold_joins_header_lines() -> None:
    """A continuation line extends the previous header's value."""
    txn = parse_http(b"GET / HTTP/1.1\r\nX-Long: a\r\n  b\r\nHost: h\r\n\r\n")
    assert txn.request.header("x-long") == "a b"


BAD = [
    pytest.param(b"", "empty", id="empty"),
    pytest.param(b"HELLO\r\n\r\n", "request line", id="bad-request-line"),
    pytest.param(b"GET / HTTP/1.1\r\nno colon here\r\n\r\n", "line 2", id="bad-header"),
    pytest.param(b"POST / HTTP/1.1\r\nContent-Length: 10\r\n\r\nabc", "truncated", id="truncated-body"),
    pytest.param(b"POST / HTTP/1.1\r\nContent-Length: ten\r\n\r\n", "not a number", id="bad-length"),
    pytest.param(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "hexadecimal", id="bad-chunk"),
    pytest.param(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab", "truncated", id="short-chunk"),
    pytest.param(b"GET / HTTP/1.1\r\n\r\nHTTP/1.1 xx\r\n\r\n", "status line", id="bad-status"),
    pytest.param(
        b"GET / HTTP/1.1\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nxGET / HTTP/1.1\r\n\r\n",
        "one transaction per file",
        id="two-transactions",
    ),
    pytest.param(b"POST / HTTP/1.1\r\nContent-Length: 1\r\n\r\nxjunk", "not an HTTP response", id="junk-after-body"),
]


@pytest.mark.parametrize(("raw", "needle"), BAD)
def test_parse_http_rejects_with_located_message(raw: bytes, needle: str) -> None:
    """Unparsable input raises InputError naming the source, the line and what is wrong."""
    with pytest.raises(InputError) as info:
        parse_http(raw, "req.http")
    text = str(info.value)
    assert "req.http" in text
    assert needle in text


def test_load_http_file_reports_missing_and_directory(tmp_path: Path) -> None:
    """A missing file or a directory is an InputError with the path, never an OSError."""
    for path, needle in ((tmp_path / "nope.http", "No such file"), (tmp_path, "directory")):
        with pytest.raises(InputError) as info:
            load_http_file(path)
        assert str(path) in str(info.value)
        assert needle in str(info.value)


def test_load_http_file_reads_a_file(tmp_path: Path) -> None:
    """The loader parses the file's bytes."""
    path = tmp_path / "r.http"
    path.write_bytes(b"DELETE /item/7 HTTP/1.1\r\nHost: shop\r\n\r\n")
    assert load_http_file(path).request.method == "DELETE"


def test_from_events_builds_transaction_from_dpi_fields() -> None:
    """DPI request/response events carry what the WAF needs: headers, body, status."""
    req = L7Event(
        "http",
        "request",
        Direction.C2S,
        {"method": "POST", "path": "/x?a=1", "version": "1.1", "host": "svc",
         "headers": [("content-type", "text/plain")], "body": b"hello"},
    )  # fmt: skip
    resp = L7Event("http", "response", Direction.S2C, {"status": 500, "version": "1.1", "headers": [], "body": b"e"})
    txn = from_events(req, resp, client=("10.0.0.1", 40000), server=("10.0.0.2", 8080))
    assert txn.request.host == "svc"  # Host added from the event's host field
    assert txn.request.body == b"hello"
    assert txn.response is not None and txn.response.status == 500
    assert (txn.client_ip, txn.server_port) == ("10.0.0.1", 8080)


def test_from_events_reads_http2_and_grpc_fields() -> None:
    """HTTP/2 events name the host `authority`, gRPC's HTTP method is `http_method`; pseudo-headers are dropped."""
    event = L7Event(
        "grpc",
        "request",
        Direction.C2S,
        {"method": "SayHello", "http_method": "POST", "path": "/greet.Greeter/SayHello", "authority": "svc:50051",
         "headers": [(":path", "/greet.Greeter/SayHello"), ("content-type", "application/grpc")]},
    )  # fmt: skip
    txn = from_events(event)
    assert (txn.request.method, txn.request.version, txn.request.host) == ("POST", "2.0", "svc")
    assert [n for n, _ in txn.request.headers] == ["host", "content-type"]
