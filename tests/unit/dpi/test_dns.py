"""DNS detection and parsing: strict header sanity, names and compression, rdata, UDP and TCP."""

from __future__ import annotations

import random

import pytest

from podwall.core.errors import ProtocolError
from podwall.core.types import PROTO_TCP, PROTO_UDP, Direction
from podwall.dpi.base import DetectContext, Detection
from podwall.dpi.protocols.dns import DnsDetector, DnsParser, parse_message, read_name

from .fixtures import CORPUS, FEED_MODES, feed_all, load_chunks, split_chunks, summary
from .fixtures import handmade as hm

C2S, S2C = Direction.C2S, Direction.S2C
UDP = DetectContext(PROTO_UDP, 40000, 53)
TCP = DetectContext(PROTO_TCP, 40000, 53)
MDNS = DetectContext(PROTO_UDP, 5353, 5353)
LLMNR = DetectContext(PROTO_UDP, 40000, 5355)


def _tcp(msg: bytes) -> bytes:
    return len(msg).to_bytes(2, "big") + msg


@pytest.mark.parametrize(
    ("ctx", "data", "expected"),
    [
        pytest.param(UDP, hm.dns_query(), Detection.MATCH, id="query"),
        pytest.param(UDP, hm.dns_response_all_types(), Detection.MATCH, id="response"),
        pytest.param(UDP, hm.dns_nxdomain_with_soa(), Detection.MATCH, id="nxdomain"),
        pytest.param(MDNS, hm.mdns_announcement(), Detection.MATCH, id="mdns-announcement"),
        pytest.param(UDP, hm.mdns_announcement(), Detection.NO, id="no-question-off-mdns-port"),
        pytest.param(LLMNR, hm.llmnr_query(), Detection.MATCH, id="llmnr"),
        pytest.param(UDP, hm.dns_query(qtype=252), Detection.MATCH, id="axfr-query"),
        pytest.param(UDP, hm.dns_query()[:-1], Detection.NO, id="truncated"),
        pytest.param(UDP, hm.dns_query() + b"\x00", Detection.NO, id="trailing-byte"),
        pytest.param(UDP, hm.dns_query(flags=0x3100), Detection.NO, id="opcode-6"),
        pytest.param(UDP, hm.dns_query(flags=0x0140), Detection.NO, id="z-bit"),
        pytest.param(UDP, hm.dns_query(flags=0x0103), Detection.NO, id="query-with-rcode"),
        pytest.param(UDP, hm.dns_query(qtype=0), Detection.NO, id="qtype-0"),
        pytest.param(
            UDP,
            hm.dns_header(1, 0x0100) + hm.dns_name("a.b") + b"\x00\x01\x00\x09",
            Detection.NO,
            id="class-9",
        ),
        pytest.param(
            UDP,
            hm.dns_header(1, 0x0100) + b"\x03a\x01b\x00\x00\x01\x00\x01",
            Detection.NO,
            id="control-byte-label",
        ),
        pytest.param(UDP, hm.dns_header(1, 0x0100, qd=5) + hm.dns_question("a") * 5, Detection.NO, id="five-questions"),
        pytest.param(UDP, hm.dns_header(1, 0x0100, qd=0), Detection.NO, id="no-question"),
        pytest.param(UDP, b"\x17\x00\x03\x2a" + bytes(44), Detection.NO, id="ntp-like"),
        pytest.param(UDP, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", Detection.NO, id="http-text"),
        pytest.param(TCP, _tcp(hm.dns_query()), Detection.MATCH, id="tcp-query"),
        pytest.param(TCP, _tcp(hm.dns_query())[:1], Detection.NEED_MORE, id="tcp-one-byte"),
        pytest.param(TCP, _tcp(hm.dns_query())[:20], Detection.NEED_MORE, id="tcp-partial"),
        pytest.param(TCP, _tcp(hm.dns_query(flags=0x3100))[:20], Detection.NO, id="tcp-partial-bad-header"),
        pytest.param(TCP, b"\x00\x05hello", Detection.NO, id="tcp-short-length"),
        pytest.param(TCP, b"*1\r\n$4\r\nPING\r\n", Detection.NO, id="tcp-redis"),
    ],
)
def test_detect(ctx: DetectContext, data: bytes, expected: Detection) -> None:
    """Only a message a resolver would send is dns; mDNS answers without a question only on 5353."""
    assert DnsDetector().detect(C2S, data, ctx) is expected


def test_random_datagrams_are_not_dns() -> None:
    """Thousands of random datagrams of DNS-like sizes are never taken for DNS."""
    rng = random.Random(1035)
    detector = DnsDetector()
    hits = sum(detector.detect(C2S, rng.randbytes(rng.randint(12, 200)), UDP) is Detection.MATCH for _ in range(5000))
    assert hits == 0


def test_response_rdata_as_text() -> None:
    """Answers give name, type, TTL and rdata as text (hex for types without a text form)."""
    fields = parse_message(hm.dns_response_all_types())
    assert (fields["id"], fields["qr"], fields["opcode"], fields["rcode"]) == (
        0xBEEF,
        True,
        "QUERY",
        "NOERROR",
    )
    assert fields["flags"] == ["qr", "rd", "ra"]
    assert fields["questions"] == [{"qname": "www.example.com", "qtype": "A", "qclass": "IN"}]
    assert [(a["type"], a["rdata"]) for a in fields["answers"]] == [
        ("CNAME", "web.example.com"),
        ("A", "192.0.2.1"),
        ("AAAA", "2001:db8::1"),
        ("MX", "10 mail.example.com"),
        ("TXT", '"v=spf1 -all" "say \\"hi\\""'),
        ("PTR", "host.example.net"),
        ("NS", "ns1.example.com"),
        ("SRV", "1 5 443 svc.example.com"),
        ("SPF", "0102ff"),
    ]
    assert {(a["name"], a["ttl"]) for a in fields["answers"]} == {("www.example.com", 300)}


def test_soa_in_authority() -> None:
    """An NXDOMAIN answer counts its SOA in the authority section and lists no answers."""
    fields = parse_message(hm.dns_nxdomain_with_soa())
    assert (fields["rcode"], fields["answers"], fields["nscount"]) == ("NXDOMAIN", [], 1)


def test_mdns_announcement() -> None:
    """mDNS records with the cache-flush bit parse, the class without it."""
    fields = parse_message(hm.mdns_announcement())
    assert fields["answers"] == [
        {
            "name": "_ipp._tcp.local",
            "type": "PTR",
            "class": "IN",
            "ttl": 4500,
            "rdata": "printer._ipp._tcp.local",
        }
    ]


@pytest.mark.parametrize(
    ("wire", "text"),
    [
        pytest.param(b"\x03WwW\x07ExAmPlE\x03CoM\x00", "www.example.com", id="lower-cased"),
        pytest.param(b"\x00", ".", id="root"),
        pytest.param(b"\x03a.b\x01c\x00", "a\\.b.c", id="dot-in-label"),
        pytest.param(b"\x04a b\x01\x00", "a\\032b\\001", id="space-and-control"),
        pytest.param(b"\x02\xc3\xa9\x00", "\\195\\169", id="utf8"),
    ],
)
def test_name_presentation(wire: bytes, text: str) -> None:
    """Names print like dig: lower-cased, unusual bytes escaped as \\DDD, no final dot."""
    assert read_name(wire, 0, len(wire)) == (text, len(wire))


@pytest.mark.parametrize(
    ("msg", "message"),
    [
        pytest.param(
            hm.dns_header(1, 0x0100) + b"\xc0\x0c\x00\x01\x00\x01",
            "compression pointer loop",
            id="self-pointer",
        ),
        pytest.param(
            hm.dns_header(1, 0x0100) + b"\x01a\xc0\x0e\xc0\x0c\x00\x01\x00\x01",
            "compression pointer loop",
            id="two-pointer-cycle",
        ),
        pytest.param(
            hm.dns_header(1, 0x0100) + b"\x01a" + b"\x3f" + b"b" * 63 + b"\xc0\x0c",
            "compression pointer loop",
            id="labels-then-pointer-to-start",
        ),
        pytest.param(
            hm.dns_header(1, 0x0100) + (b"\x3f" + b"x" * 63) * 4 + b"\x00\x00\x01\x00\x01",
            "longer than 255",
            id="name-too-long",
        ),
        pytest.param(hm.dns_header(1, 0x0100) + b"\x41a\x00\x00\x01\x00\x01", "label type", id="extended-label"),
        pytest.param(
            hm.dns_header(1, 0x0100) + b"\xc0\xff\x00\x01\x00\x01",
            "beyond the message",
            id="pointer-out-of-range",
        ),
        pytest.param(hm.dns_header(1, 0x0100) + b"\x3fab\x00\x00\x01\x00\x01", "truncated", id="label-truncated"),
        pytest.param(
            hm.dns_header(1, 0x8180, 1, 1) + hm.dns_question("a") + hm.dns_rr(b"\xc0\x0c", 1, b"\x01\x02"),
            "rdata of 2 bytes",
            id="short-a",
        ),
        pytest.param(
            hm.dns_header(1, 0x8180, 1, 1)
            + hm.dns_question("a")
            + b"\xc0\x0c\x00\x01\x00\x01\x00\x00"
            + b"\x00\x01\x00\x08\x01\x02",
            "truncated",
            id="rdlength-past-end",
        ),
        pytest.param(
            hm.dns_header(1, 0x8180, 1, 1)
            + hm.dns_question("a")
            + hm.dns_rr(b"\xc0\x0c", 5, hm.dns_name("b") + b"\x00"),
            "length mismatch",
            id="cname-rdata-longer-than-name",
        ),
        pytest.param(
            hm.dns_header(1, 0x8180, 1, 1) + hm.dns_question("a") + hm.dns_rr(b"\xc0\x0c", 16, b"\x05ab"),
            "character-string truncated",
            id="txt-truncated",
        ),
        pytest.param(hm.dns_header(1, 0x8180, 1, 9000), "do not fit", id="impossible-counts"),
        pytest.param(b"\x00\x01\x01", "truncated", id="short-header"),
    ],
)
def test_malformed_is_protocol_error(msg: bytes, message: str) -> None:
    """Malformed messages, pointer loops and over-long names raise ProtocolError saying so."""
    with pytest.raises(ProtocolError, match=message):
        parse_message(msg)


def test_udp_parser_one_message_per_datagram() -> None:
    """Each datagram is one message: a query event, then a response event; server_name is the query name."""
    parser = DnsParser(UDP)
    events = feed_all(parser, [(C2S, hm.dns_query()), (S2C, hm.dns_response_all_types())])
    assert [(e.kind, e.direction, e.fields["qname"]) for e in events] == [
        ("query", C2S, "www.example.com"),
        ("response", S2C, "www.example.com"),
    ]
    assert parser.server_name() == "www.example.com"


def test_udp_trailing_bytes_are_tolerated_by_the_parser() -> None:
    """Bytes after the last record do not change the event (the detector, stricter, refuses them)."""
    with_trailing = feed_all(DnsParser(UDP), [(C2S, hm.dns_query() + b"\x00\x00")])
    assert summary(with_trailing) == summary(feed_all(DnsParser(UDP), [(C2S, hm.dns_query())]))


@pytest.mark.parametrize("mode", FEED_MODES)
def test_tcp_messages_any_split(mode: str) -> None:
    """Length-prefixed messages over TCP give the same events however split, and with trailing data."""
    stream = [
        (C2S, _tcp(hm.dns_query()) + _tcp(hm.dns_query("b.example", 28))),
        (S2C, _tcp(hm.dns_nxdomain_with_soa())),
    ]
    events = feed_all(DnsParser(TCP), split_chunks(stream, mode))
    assert [(e.kind, e.fields["qname"], e.fields["qtype"]) for e in events] == [
        ("query", "www.example.com", "A"),
        ("query", "b.example", "AAAA"),
        ("response", "nope.example.com", "A"),
    ]
    trailing = feed_all(DnsParser(TCP), [*split_chunks(stream, mode), (C2S, b"\x00\x30\x12")])
    assert summary(trailing) == summary(events)


def test_tcp_length_shorter_than_header() -> None:
    """A TCP length prefix too small for a header is a ProtocolError."""
    with pytest.raises(ProtocolError, match="shorter than a header"):
        DnsParser(TCP).feed(C2S, b"\x00\x03abc")


@pytest.mark.parametrize("name", ["dns_example", "dns_whatsapp", "dns_long_name"])
def test_corpus_flows(name: str) -> None:
    """Captured DNS flows parse fully and name the query nfstream names."""
    flow = CORPUS[name]
    parser = DnsParser(DetectContext(flow.proto, flow.client_port, flow.server_port))
    events = feed_all(parser, load_chunks(name))
    assert len(events) == len(load_chunks(name))
    assert parser.server_name() == flow.server_name


def test_corpus_whatsapp_answers() -> None:
    """The e7.whatsapp.net response lists its eight A records with their TTL."""
    response = feed_all(DnsParser(UDP), load_chunks("dns_whatsapp"))[1].fields
    assert response["ancount"] == len(response["answers"]) == 8
    assert response["answers"][0] == {
        "name": "e7.whatsapp.net",
        "type": "A",
        "class": "IN",
        "ttl": 491,
        "rdata": "169.45.219.235",
    }


def test_root_query_names_no_server() -> None:
    """A query for the root (as NSID probes send) is reported but gives no server_name."""
    parser = DnsParser(UDP)
    events = feed_all(parser, [(C2S, hm.dns_query(".", qtype=2))])
    assert (events[0].fields["qname"], parser.server_name()) == (".", None)
