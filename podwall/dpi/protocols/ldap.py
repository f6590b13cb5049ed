"""LDAP (RFC 4511) over TCP and CLDAP over UDP: a bounded BER reader and the LDAPMessage operations.

Every message is `SEQUENCE { messageID INTEGER, protocolOp [APPLICATION n], controls [0] OPTIONAL }`
in BER with definite lengths only (long-form lengths of at most 4 bytes; indefinite lengths
and multi-byte tags are ProtocolErrors). Requests (bind, search, modify, add, delete, modDN,
compare, abandon, extended, unbind) and responses are reported by name; bind passwords are
never copied into events. A successful StartTLS exchange ends parsing: TLS follows.
"""

from __future__ import annotations

from typing import Any, ClassVar

from podwall.core.errors import ProtocolError
from podwall.core.limits import DEFAULT_LIMITS, Limits
from podwall.core.types import PROTO_TCP, PROTO_UDP, Direction
from podwall.dpi.base import DetectContext, Detection, L7Event
from podwall.dpi.wire import Reader, StreamBuffer

__all__ = ["OPERATIONS", "LdapDetector", "LdapParser", "parse_message", "read_tlv"]

APP = "ldap"
STARTTLS_OID = "1.3.6.1.4.1.1466.20037"
MAX_TEXT = 512  # characters of a DN, filter or message kept in an event
MAX_FILTER_DEPTH = 32
MAX_ATTRIBUTES = 32  # attribute names listed for a search

# application tag number -> (name, is a request, constructed)
OPERATIONS: dict[int, tuple[str, bool, bool]] = {
    0: ("bindRequest", True, True), 1: ("bindResponse", False, True), 2: ("unbindRequest", True, False),
    3: ("searchRequest", True, True), 4: ("searchResEntry", False, True), 5: ("searchResDone", False, True),
    6: ("modifyRequest", True, True), 7: ("modifyResponse", False, True), 8: ("addRequest", True, True),
    9: ("addResponse", False, True), 10: ("delRequest", True, False), 11: ("delResponse", False, True),
    12: ("modDNRequest", True, True), 13: ("modDNResponse", False, True), 14: ("compareRequest", True, True),
    15: ("compareResponse", False, True), 16: ("abandonRequest", True, False),
    19: ("searchResRef", False, True), 23: ("extendedRequest", True, True), 24: ("extendedResponse", False, True),
    25: ("intermediateResponse", False, True),
}  # fmt: skip
_OP_TAGS = {(0x60 if constructed else 0x40) | n: n for n, (_, _, constructed) in OPERATIONS.items()}
_LDAP_RESULTS = frozenset({1, 5, 7, 9, 11, 13, 15, 24})
RESULT_NAMES = {
    0: "success", 1: "operationsError", 2: "protocolError", 3: "timeLimitExceeded", 4: "sizeLimitExceeded",
    5: "compareFalse", 6: "compareTrue", 7: "authMethodNotSupported", 8: "strongerAuthRequired", 10: "referral",
    11: "adminLimitExceeded", 12: "unavailableCriticalExtension", 13: "confidentialityRequired",
    14: "saslBindInProgress", 16: "noSuchAttribute", 17: "undefinedAttributeType", 18: "inappropriateMatching",
    19: "constraintViolation", 20: "attributeOrValueExists", 21: "invalidAttributeSyntax", 32: "noSuchObject",
    33: "aliasProblem", 34: "invalidDNSyntax", 36: "aliasDereferencingProblem",
    48: "inappropriateAuthentication", 49: "invalidCredentials", 50: "insufficientAccessRights", 51: "busy",
    52: "unavailable", 53: "unwillingToPerform", 54: "loopDetect", 64: "namingViolation",
    65: "objectClassViolation", 66: "notAllowedOnNonLeaf", 67: "notAllowedOnRDN", 68: "entryAlreadyExists",
    69: "objectClassModsProhibited", 71: "affectsMultipleDSAs", 80: "other",
}  # fmt: skip
SCOPES = {0: "base", 1: "one", 2: "sub", 3: "children"}
_SEQUENCE, _INTEGER, _OCTETS, _ENUMERATED, _BOOLEAN, _SET = 0x30, 0x02, 0x04, 0x0A, 0x01, 0x31


def read_length(r: Reader) -> int:
    """A BER definite length: short form, or long form of 1 to 4 bytes."""
    first = r.u8("BER length")
    if first < 0x80:
        return first
    count = first & 0x7F
    if count == 0:
        raise ProtocolError(f"{r.what}: indefinite BER length at offset {r.pos - 1}")
    if count > 4:
        raise ProtocolError(f"{r.what}: BER length of {count} bytes at offset {r.pos - 1}")
    return int.from_bytes(r.take(count, "BER long length"), "big")


def read_tlv(r: Reader, what: str) -> tuple[int, Reader]:
    """The next element's tag byte and a reader over its contents."""
    tag = r.u8(f"{what} tag")
    if tag & 0x1F == 0x1F:
        raise ProtocolError(f"{r.what}: multi-byte BER tag at offset {r.pos - 1}")
    return tag, r.sub(read_length(r), what)


def _expect(r: Reader, tag: int, what: str) -> Reader:
    got, body = read_tlv(r, what)
    if got != tag:
        raise ProtocolError(f"LDAP {what}: tag 0x{got:02x} where 0x{tag:02x} was expected")
    return body


def _int(body: Reader, what: str) -> int:
    size = body.remaining()
    if not 1 <= size <= 8:
        raise ProtocolError(f"LDAP {what}: integer of {size} bytes")
    return int.from_bytes(body.take(size, what), "big", signed=True)


def _str(body: Reader, what: str) -> str:
    raw = body.take(body.remaining(), what)
    return raw[: MAX_TEXT * 4].decode("utf-8", "backslashreplace")[:MAX_TEXT]


def _escape(value: str) -> str:
    """An assertion value in RFC 4515 string form."""
    return "".join(f"\\{ord(c):02x}" if c in "*()\\\x00" else c for c in value)


def _filter(r: Reader, depth: int) -> str:
    """One search filter in RFC 4515 string form (bounded in depth; the caller bounds the length)."""
    if depth > MAX_FILTER_DEPTH:
        raise ProtocolError(f"LDAP filter: nested deeper than {MAX_FILTER_DEPTH}")
    tag, body = read_tlv(r, "filter")
    if tag in (0xA0, 0xA1):
        parts = []
        while not body.at_end():
            parts.append(_filter(body, depth + 1))
        return "(" + ("&" if tag == 0xA0 else "|") + "".join(parts) + ")"
    if tag == 0xA2:
        inner = _filter(body, depth + 1)
        body.expect_end()
        return f"(!{inner})"
    if tag in (0xA3, 0xA5, 0xA6, 0xA8):
        attr = _str(_expect(body, _OCTETS, "filter attribute"), "attribute")
        value = _str(_expect(body, _OCTETS, "filter value"), "value")
        body.expect_end()
        op = {0xA3: "=", 0xA5: ">=", 0xA6: "<=", 0xA8: "~="}[tag]
        return f"({attr}{op}{_escape(value)})"
    if tag == 0xA4:
        attr = _str(_expect(body, _OCTETS, "filter attribute"), "attribute")
        subs = _expect(body, _SEQUENCE, "substrings")
        initial, middle, final = "", [], ""
        while not subs.at_end():
            kind, part = read_tlv(subs, "substring")
            text = _escape(_str(part, "substring"))
            if kind == 0x80:
                initial = text
            elif kind == 0x81:
                middle.append(text)
            elif kind == 0x82:
                final = text
            else:
                raise ProtocolError(f"LDAP filter: substring choice 0x{kind:02x}")
        return f"({attr}={initial}*{''.join(m + '*' for m in middle)}{final})"
    if tag == 0x87:
        return f"({_str(body, 'attribute')}=*)"
    if tag == 0xA9:
        rule = attr = value = ""
        dn = False
        while not body.at_end():
            kind, part = read_tlv(body, "extensible match")
            if kind == 0x81:
                rule = _str(part, "matching rule")
            elif kind == 0x82:
                attr = _str(part, "attribute")
            elif kind == 0x83:
                value = _str(part, "value")
            elif kind == 0x84:
                dn = part.remaining() == 1 and part.u8("dnAttributes") != 0
            else:
                raise ProtocolError(f"LDAP filter: extensible match element 0x{kind:02x}")
        return f"({attr}{':dn' if dn else ''}{':' + rule if rule else ''}:={_escape(value)})"
    raise ProtocolError(f"LDAP filter: unknown filter choice 0x{tag:02x}")


def _result(body: Reader, fields: dict[str, Any]) -> None:
    code = _int(_expect(body, _ENUMERATED, "resultCode"), "resultCode")
    fields["result_code"] = code
    fields["result"] = RESULT_NAMES.get(code) or f"result{code}"
    fields["matched_dn"] = _str(_expect(body, _OCTETS, "matchedDN"), "matchedDN")
    fields["diagnostic_message"] = _str(_expect(body, _OCTETS, "diagnosticMessage"), "diagnosticMessage")


def _operation(number: int, body: Reader, fields: dict[str, Any]) -> None:
    """Read the fields policy needs from one protocolOp's contents."""
    if number in _LDAP_RESULTS:
        _result(body, fields)
        if number == 24 and not body.at_end():
            tag, part = read_tlv(body, "extended response element")
            if tag == 0x8A:
                fields["oid"] = _str(part, "responseName")
        return
    if number == 0:
        fields["version"] = _int(_expect(body, _INTEGER, "bind version"), "bind version")
        fields["dn"] = _str(_expect(body, _OCTETS, "bind name"), "bind name")
        tag, auth = read_tlv(body, "bind authentication")
        if tag == 0x80:
            fields["auth"] = "simple" if auth.remaining() else "anonymous"
        elif tag == 0xA3:
            fields["auth"] = "sasl"
            fields["sasl_mechanism"] = _str(_expect(auth, _OCTETS, "SASL mechanism"), "SASL mechanism")
        else:
            fields["auth"] = f"0x{tag:02x}"
        return
    if number == 3:
        fields["base"] = fields["dn"] = _str(_expect(body, _OCTETS, "baseObject"), "baseObject")
        scope = _int(_expect(body, _ENUMERATED, "scope"), "scope")
        fields["scope"] = SCOPES.get(scope) or f"scope{scope}"
        _expect(body, _ENUMERATED, "derefAliases")
        fields["size_limit"] = _int(_expect(body, _INTEGER, "sizeLimit"), "sizeLimit")
        fields["time_limit"] = _int(_expect(body, _INTEGER, "timeLimit"), "timeLimit")
        _expect(body, _BOOLEAN, "typesOnly")
        text = _filter(body, 0)
        fields["filter"] = text if len(text) <= MAX_TEXT else text[:MAX_TEXT] + "..."
        attrs = _expect(body, _SEQUENCE, "attributes")
        names: list[str] = []
        while not attrs.at_end():
            name = _str(_expect(attrs, _OCTETS, "attribute"), "attribute")
            if len(names) < MAX_ATTRIBUTES:
                names.append(name)
        fields["attributes"] = names
        return
    if number in (4, 6, 8, 12, 14):
        fields["dn"] = _str(_expect(body, _OCTETS, "entry name"), "entry name")
        if number == 12:
            fields["new_rdn"] = _str(_expect(body, _OCTETS, "newrdn"), "newrdn")
        elif number == 14:
            ava = _expect(body, _SEQUENCE, "compare assertion")
            fields["attribute"] = _str(_expect(ava, _OCTETS, "attribute"), "attribute")
        return
    if number == 10:
        fields["dn"] = _str(body, "delete DN")
    elif number == 16:
        fields["abandon_id"] = _int(body, "abandoned messageID")
    elif number == 23:
        fields["oid"] = _str(_expect(body, 0x80, "requestName"), "requestName")
    elif number == 19:
        urls: list[str] = []
        while not body.at_end():
            url = _str(_expect(body, _OCTETS, "referral URL"), "URL")
            if len(urls) < MAX_ATTRIBUTES:
                urls.append(url)
        fields["urls"] = urls
    elif number == 25 and not body.at_end():
        tag, part = read_tlv(body, "intermediate response element")
        if tag == 0x80:
            fields["oid"] = _str(part, "responseName")


def parse_message(msg: bytes) -> dict[str, Any]:
    """Fields of one whole LDAPMessage (its SEQUENCE header included)."""
    outer = Reader(msg, what="LDAP message")
    body = _expect(outer, _SEQUENCE, "LDAPMessage")
    outer.expect_end()
    message_id = _int(_expect(body, _INTEGER, "messageID"), "messageID")
    if not 0 <= message_id <= 0x7FFFFFFF:
        raise ProtocolError(f"LDAP message: messageID {message_id} out of range")
    tag, op = read_tlv(body, "protocolOp")
    number = _OP_TAGS.get(tag)
    if number is None:
        raise ProtocolError(f"LDAP message: unknown protocolOp tag 0x{tag:02x}")
    name, is_request, _ = OPERATIONS[number]
    fields: dict[str, Any] = {"message_id": message_id, "operation": name, "request": is_request}
    if is_request:
        fields.update(dn=None)
    else:
        fields.update(result_code=None)
    _operation(number, op, fields)
    if not body.at_end():
        controls = _expect(body, 0xA0, "controls")
        oids: list[str] = []
        while not controls.at_end():
            control = _expect(controls, _SEQUENCE, "control")
            oids.append(_str(_expect(control, _OCTETS, "controlType"), "controlType"))
        fields["controls"] = oids[:MAX_ATTRIBUTES]
    return fields


def _header(data: bytes | bytearray, pos: int) -> tuple[int, int] | None:
    """(header size, content length) of the SEQUENCE at `pos`; None while incomplete."""
    if len(data) - pos < 2:
        return None
    if data[pos] != _SEQUENCE:
        raise ProtocolError(f"LDAP: message does not start with a SEQUENCE (0x{data[pos]:02x})")
    first = data[pos + 1]
    if first < 0x80:
        return 2, first
    count = first & 0x7F
    if count == 0 or count > 4:
        raise ProtocolError(f"LDAP: unsupported BER length form 0x{first:02x}")
    if len(data) - pos < 2 + count:
        return None
    return 2 + count, int.from_bytes(data[pos + 2 : pos + 2 + count], "big")


class LdapParser:
    """Sans-IO LDAP parser: `request` and `response` events, one per LDAPMessage."""

    def __init__(self, ctx: DetectContext, limits: Limits = DEFAULT_LIMITS) -> None:
        self._tcp = ctx.proto == PROTO_TCP
        self._streams = (StreamBuffer(limits.parser_buffer, "LDAP client message"),
                         StreamBuffer(limits.parser_buffer, "LDAP server message"))  # fmt: skip
        self._starttls_id: int | None = None
        self.finished = False

    def server_name(self) -> str | None:
        return None

    def _event(self, direction: Direction, msg: bytes) -> L7Event:
        fields = parse_message(msg)
        is_request = fields.pop("request")
        if fields.get("oid") == STARTTLS_OID and fields["operation"] == "extendedRequest":
            self._starttls_id = fields["message_id"]
        elif (
            fields["operation"] == "extendedResponse"
            and fields["message_id"] == self._starttls_id
            and fields["result_code"] == 0
        ):
            self.finished = True  # TLS starts now; the rest of the stream is not LDAP
        return L7Event(APP, "request" if is_request else "response", direction, fields)

    def feed(self, direction: Direction, data: bytes) -> list[L7Event]:
        if self.finished:
            return []
        if not self._tcp:
            return self._messages(direction, data)
        stream = self._streams[direction]
        stream.append(data)
        out: list[L7Event] = []
        buf = stream.buf
        while not self.finished:
            head = _header(buf, stream.pos)
            if head is None:
                break
            size = head[0] + head[1]
            if size > stream.cap:
                raise ProtocolError(f"LDAP: message of {size} bytes exceeds {stream.cap}")
            if len(buf) - stream.pos < size:
                break
            out.append(self._event(direction, bytes(buf[stream.pos : stream.pos + size])))
            stream.pos += size
        if self.finished:
            stream.clear()
        stream.compact()
        return out

    def _messages(self, direction: Direction, data: bytes) -> list[L7Event]:
        out: list[L7Event] = []
        pos = 0
        while pos < len(data):
            head = _header(data, pos)
            if head is None or pos + head[0] + head[1] > len(data):
                raise ProtocolError(f"CLDAP: datagram of {len(data)} bytes ends inside a message at {pos}")
            size = head[0] + head[1]
            out.append(self._event(direction, data[pos : pos + size]))
            pos += size
        return out


def _detect(data: bytes) -> Detection:
    """SEQUENCE, length, messageID INTEGER, an application tag of a known operation that fits."""
    r = Reader(data, what="LDAP message")
    try:
        if r.u8("tag") != _SEQUENCE:
            return Detection.NO
        total = read_length(r)
        start = r.pos
        if r.u8("messageID tag") != _INTEGER:
            return Detection.NO
        id_len = r.u8("messageID length")
        if not 1 <= id_len <= 4:
            return Detection.NO
        if r.take(id_len, "messageID")[0] & 0x80:
            return Detection.NO  # negative message ids do not exist
        number = _OP_TAGS.get(r.u8("protocolOp tag"))
        if number is None:
            return Detection.NO
        op_len = read_length(r)
        if r.pos + op_len > start + total or total > 16 * 1024 * 1024:
            return Detection.NO
    except ProtocolError as exc:
        # running out of bytes asks for more; a BER length form LDAP never uses rules it out
        return Detection.NEED_MORE if str(exc).startswith("truncated") else Detection.NO
    if len(data) >= start + total:
        try:
            parse_message(data[: start + total])
        except ProtocolError:
            return Detection.NO
    return Detection.MATCH


class LdapDetector:
    """Names a flow `ldap` by the shape of its first LDAPMessage (either direction, TCP or UDP)."""

    name: ClassVar[str] = APP
    transports: ClassVar[frozenset[int]] = frozenset({PROTO_TCP, PROTO_UDP})
    ports: ClassVar[frozenset[int]] = frozenset({389, 3268})

    def __init__(self, limits: Limits = DEFAULT_LIMITS) -> None:
        self._limits = limits

    def detect(self, direction: Direction, data: bytes, ctx: DetectContext) -> Detection:
        if not data:
            return Detection.NEED_MORE
        verdict = _detect(data)
        if ctx.proto == PROTO_UDP and verdict is Detection.NEED_MORE:
            return Detection.NO
        return verdict

    def parser(self, ctx: DetectContext) -> LdapParser:
        return LdapParser(ctx, self._limits)
