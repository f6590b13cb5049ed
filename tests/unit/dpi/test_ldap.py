"""LDAP detection and parsing: BER LDAPMessages, operations by name, filters, StartTLS, real slapd traffic."""

from __future__ import annotations

import contextlib
from datetime import timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from podwall.core.errors import ProtocolError
from podwall.core.limits import Limits
from podwall.core.types import PROTO_TCP, PROTO_UDP, Direction
from podwall.dpi.base import DetectContext, Detection
from podwall.dpi.protocols.dns import DnsDetector
from podwall.dpi.protocols.http1 import HttpDetector
from podwall.dpi.protocols.ldap import LdapDetector, LdapParser, parse_message
from podwall.dpi.protocols.redis import RedisDetector
from podwall.dpi.protocols.tls import TlsDetector
from podwall.dpi.session import DpiSession

from .fixtures import FEED_MODES, Chunks, feed_all, load_chunks, split_chunks, summary
from .fixtures import handmade as hm
from .fixtures import handmade_misc as hx

C2S, S2C = Direction.C2S, Direction.S2C
TCP = DetectContext(PROTO_TCP, 40000, 389)
TCP_OTHER = DetectContext(PROTO_TCP, 40000, 10389)
UDP = DetectContext(PROTO_UDP, 40000, 389)
SLAPD = ("add", "search", "modify", "starttls_refused")


@pytest.mark.parametrize(
    ("ctx", "direction", "data", "expected"),
    [
        pytest.param(TCP, C2S, hx.ldap_bind(), Detection.MATCH, id="bind"),
        pytest.param(TCP_OTHER, C2S, hx.ldap_bind(), Detection.MATCH, id="non-standard-port"),
        pytest.param(TCP, C2S, hx.ldap_search(), Detection.MATCH, id="search"),
        pytest.param(TCP, C2S, hx.ldap_delete(), Detection.MATCH, id="delete-primitive"),
        pytest.param(TCP, S2C, hx.ldap_result(0x61, 1), Detection.MATCH, id="bind-response"),
        pytest.param(UDP, C2S, hx.ldap_search(), Detection.MATCH, id="cldap-search"),
        pytest.param(TCP, C2S, hx.ldap_bind()[:7], Detection.MATCH, id="header-enough"),
        pytest.param(TCP, C2S, hx.ldap_bind()[:4], Detection.NEED_MORE, id="prefix"),
        pytest.param(UDP, C2S, hx.ldap_bind()[:4], Detection.NO, id="cldap-truncated"),
        pytest.param(TCP, C2S, b"\x30\x80\x02\x01\x01\x60\x00", Detection.NO, id="indefinite-length"),
        pytest.param(TCP, C2S, b"\x30\x85" + bytes(5), Detection.NO, id="five-byte-length"),
        pytest.param(TCP, C2S, b"\x30\x05\x04\x01\x01\x60\x00", Detection.NO, id="id-not-integer"),
        pytest.param(TCP, C2S, b"\x30\x05\x02\x01\x01\x71\x00", Detection.NO, id="application-17"),
        pytest.param(TCP, C2S, b"\x30\x05\x02\x01\x01\x40\x00", Detection.NO, id="bind-not-constructed"),
        pytest.param(TCP, C2S, b"\x30\x05\x02\x01\x01\x60\x09", Detection.NO, id="op-overruns-message"),
        pytest.param(TCP, C2S, hx.ber(0x30, hx.ber_int(1) + hx.ber(0x60, b"\x05\x00")), Detection.NO, id="bad-bind"),
        pytest.param(TCP, C2S, hm.HTTP_GET, Detection.NO, id="http-request-is-not-ldap"),
        pytest.param(TCP, C2S, load_chunks("tls_curl")[0][1], Detection.NO, id="tls-is-not-ldap"),
        pytest.param(UDP, C2S, hm.dns_query(), Detection.NO, id="dns-is-not-ldap"),
    ],
)
def test_detect(ctx: DetectContext, direction: Direction, data: bytes, expected: Detection) -> None:
    """SEQUENCE, an INTEGER messageID and a known application tag that fits decide LDAP."""
    assert LdapDetector().detect(direction, data, ctx) is expected


@given(st.binary(max_size=200))
@settings(max_examples=300)
def test_random_bytes_are_not_ldap(data: bytes) -> None:
    """Random bytes are (essentially) never LDAP: anything matched starts like an LDAPMessage."""
    if LdapDetector().detect(C2S, data, UDP) is Detection.MATCH:
        assert data[0] == 0x30


@pytest.mark.parametrize(
    ("data", "kind", "fields"),
    [
        pytest.param(
            hx.ldap_bind(), "request",
            {"message_id": 1, "operation": "bindRequest", "dn": "cn=admin,dc=example,dc=org", "version": 3,
             "auth": "simple"},
            id="simple-bind",
        ),
        pytest.param(hx.ldap_bind(dn="", password=""), "request", {"auth": "anonymous", "dn": ""}, id="anonymous"),
        pytest.param(hx.ldap_sasl_bind(), "request", {"auth": "sasl", "sasl_mechanism": "EXTERNAL"}, id="sasl"),
        pytest.param(
            hx.ldap_search(), "request",
            {"operation": "searchRequest", "base": "dc=example,dc=org", "scope": "sub", "attributes": ["cn", "mail"],
             "filter": "(&(objectClass=person)(|(cn=J*o*n)(!(uid>=m)))(mail=*))"},
            id="search-filter",
        ),
        pytest.param(hx.ldap_search(scope=0), "request", {"scope": "base"}, id="scope-base"),
        pytest.param(
            hx.ldap_result(0x65, 2, 32, "dc=example,dc=org", "no such"), "response",
            {"operation": "searchResDone", "result_code": 32, "result": "noSuchObject",
             "matched_dn": "dc=example,dc=org", "diagnostic_message": "no such"},
            id="search-done-error",
        ),
        pytest.param(hx.ldap_search_entry(), "response", {"operation": "searchResEntry", "result_code": None,
                                                         "dn": "cn=John,dc=example,dc=org"}, id="entry"),
        pytest.param(hx.ldap_modify(), "request", {"operation": "modifyRequest"}, id="modify"),
        pytest.param(hx.ldap_delete(), "request", {"operation": "delRequest", "dn": "cn=old,dc=example,dc=org"},
                     id="delete"),
        pytest.param(hx.LDAP_ABANDON, "request", {"operation": "abandonRequest", "abandon_id": 5}, id="abandon"),
        pytest.param(hx.LDAP_UNBIND, "request", {"operation": "unbindRequest", "message_id": 9}, id="unbind"),
        pytest.param(hx.ldap_starttls(), "request", {"operation": "extendedRequest",
                                                     "oid": "1.3.6.1.4.1.1466.20037"}, id="starttls"),
    ],
)  # fmt: skip
def test_operations(data: bytes, kind: str, fields: dict[str, object]) -> None:
    """Each LDAPMessage gives one request/response event with its operation's fields; passwords are never kept."""
    events = LdapParser(TCP).feed(C2S, data)
    assert [e.kind for e in events] == [kind]
    assert {k: events[0].fields[k] for k in fields} == fields
    assert "secret" not in repr(events[0].fields)


@pytest.mark.parametrize("mode", FEED_MODES)
@pytest.mark.parametrize("name", SLAPD)
def test_slapd_recordings(name: str, mode: str) -> None:
    """Real slapd exchanges give the same events however the stream is cut, with trailing bytes waiting."""
    chunks = load_chunks(f"ldap_slapd_{name}")
    whole = feed_all(LdapParser(TCP), chunks)
    events = feed_all(LdapParser(TCP), split_chunks([*chunks, (C2S, b"\x30\x05\x02")], mode))
    assert summary(events) == summary(whole)
    assert all(e.kind == ("request" if e.direction is C2S else "response") for e in events)
    assert events[-1].fields["operation"] == "unbindRequest"


def test_slapd_search_fields() -> None:
    """The recorded ldapsearch shows base, scope, filter, the entry found and the final result."""
    events = feed_all(LdapParser(TCP), load_chunks("ldap_slapd_search"))
    ops = [(e.fields["operation"], e.fields.get("result_code")) for e in events]
    assert ops == [
        ("bindRequest", None), ("bindResponse", 0), ("searchRequest", None), ("searchResEntry", None),
        ("searchResDone", 0), ("unbindRequest", None),
    ]  # fmt: skip
    assert events[2].fields["filter"] == "(&(objectClass=person)(cn=J*))"
    assert events[3].fields["dn"] == "cn=John Smith,dc=example,dc=org"


def test_starttls_finishes() -> None:
    """After a successful StartTLS response the parser is finished and ignores the TLS bytes that follow."""
    parser = LdapParser(TCP)
    parser.feed(C2S, hx.ldap_starttls())
    assert not parser.finished
    assert [e.fields["operation"] for e in parser.feed(S2C, hx.ldap_starttls_ok())] == ["extendedResponse"]
    assert parser.finished
    assert parser.feed(C2S, load_chunks("tls_curl")[0][1]) == []


def test_refused_starttls_continues() -> None:
    """A refused StartTLS (the slapd recording) leaves the parser reading LDAP."""
    parser = LdapParser(TCP)
    feed_all(parser, load_chunks("ldap_slapd_starttls_refused"))
    assert not parser.finished


@pytest.mark.parametrize(
    ("data", "message"),
    [
        pytest.param(b"\x30\x80\x02\x01\x01", "unsupported BER length", id="indefinite"),
        pytest.param(b"\x04\x00", "does not start with a SEQUENCE", id="not-sequence"),
        pytest.param(hx.ber(0x30, hx.ber_int(1) + b"\x71\x00"), "unknown protocolOp", id="unknown-op"),
        pytest.param(hx.ber(0x30, hx.ber_int(1) + hx.ber(0x63, hx.octets("x"))), "truncated", id="short-search"),
        pytest.param(hx.ber(0x30, b"\x02\x00" + b"\x42\x00"), "integer of 0 bytes", id="empty-id"),
        pytest.param(hx.ber(0x30, hx.ber_int(1) + b"\x5f\x1f\x00"), "multi-byte BER tag", id="long-tag"),
        pytest.param(
            hx.ldap_message(1, hx.ber(0x61, hx.ber_int(0) + hx.octets("") + hx.octets(""))),
            "tag 0x02 where 0x0a was expected",
            id="result-code-not-enumerated",
        ),
    ],
)
def test_malformed(data: bytes, message: str) -> None:
    """Unsupported BER forms, unknown operations and truncated operations raise ProtocolError saying what."""
    with pytest.raises(ProtocolError, match=message):
        feed_all(LdapParser(TCP), [(C2S, data)])


def test_deep_filter_is_refused() -> None:
    """A filter nested deeper than the bound is a ProtocolError, not a recursion error."""
    filt = hx.octets("cn", 0x87)
    for _ in range(40):
        filt = hx.ber(0xA2, filt)
    body = (hx.octets("") + hx.ber_int(0, 0x0A) + hx.ber_int(0, 0x0A) + hx.ber_int(0) + hx.ber_int(0)
            + hx.ber(0x01, b"\x00") + filt + hx.ber(0x30, b""))  # fmt: skip
    with pytest.raises(ProtocolError, match="nested deeper"):
        parse_message(hx.ldap_message(1, hx.ber(0x63, body)))


def test_message_over_cap() -> None:
    """A declared message larger than Limits.parser_buffer is refused before it is buffered."""
    with pytest.raises(ProtocolError, match="exceeds 100"):
        LdapParser(TCP, Limits(parser_buffer=100)).feed(C2S, b"\x30\x82\x10\x00")


def test_cldap_datagram() -> None:
    """Over UDP each datagram holds whole messages; one cut short is a ProtocolError."""
    parser = LdapParser(UDP)
    assert [e.fields["operation"] for e in parser.feed(C2S, hx.ldap_search())] == ["searchRequest"]
    with pytest.raises(ProtocolError, match="ends inside a message"):
        LdapParser(UDP).feed(C2S, hx.ldap_search()[:-3])


def test_session() -> None:
    """With HTTP, TLS, DNS and Redis present, the recorded slapd flow is named `ldap`."""
    session = DpiSession(TCP, detectors=[LdapDetector(), HttpDetector(), TlsDetector(), DnsDetector(), RedisDetector()])
    for direction, data in load_chunks("ldap_slapd_search"):
        session.on_stream(direction, data)
    assert session.app == "ldap" and session.error is None
    assert session.event_count == 6


@given(st.lists(st.tuples(st.sampled_from([C2S, S2C]), st.binary(max_size=300)), max_size=8))
@settings(max_examples=200, deadline=timedelta(milliseconds=800))
def test_random_bytes_only_protocol_error(chunks: Chunks) -> None:
    """Random bytes on TCP or UDP: events or ProtocolError, with held bytes bounded by the cap."""
    for ctx in (TCP, UDP):
        parser = LdapParser(ctx, Limits(parser_buffer=512))
        try:
            for direction, data in chunks:
                parser.feed(direction, b"\x30" + data)
                assert len(parser._streams[direction].buf) <= 512
        except ProtocolError:
            pass


@given(st.data())
@settings(max_examples=200, deadline=timedelta(milliseconds=800))
def test_mutated_and_split(data: st.DataObject) -> None:
    """Mutated recordings raise only ProtocolError; unmutated ones give the same events at any cut."""
    chunks = load_chunks(f"ldap_slapd_{data.draw(st.sampled_from(SLAPD))}")
    index = data.draw(st.integers(0, len(chunks) - 1))
    direction, chunk = chunks[index]
    at = data.draw(st.integers(0, len(chunk) - 1))
    mutated = [*chunks[:index], (direction, chunk[:at] + bytes([data.draw(st.integers(0, 255))]) + chunk[at + 1 :])]
    with contextlib.suppress(ProtocolError):
        feed_all(LdapParser(TCP), mutated)
    whole = b"".join(c for d, c in chunks if d is C2S)
    cut = data.draw(st.integers(0, len(whole)))
    parser = LdapParser(TCP)
    assert summary(parser.feed(C2S, whole[:cut]) + parser.feed(C2S, whole[cut:])) == summary(
        LdapParser(TCP).feed(C2S, whole)
    )
    assert LdapDetector().detect(C2S, whole[: max(cut, 1)], TCP) is not Detection.NO
