"""DNS (also mDNS and LLMNR): strict detection by header sanity, and a message parser.

Over UDP each datagram is one message; over TCP messages carry a two-byte length prefix
(RFC 1035 4.2.2). The detector is deliberately strict (counts, opcode, the Z bit, a question
with printable labels and a known class, the whole message parsing with nothing left over)
so that random UDP payloads are not called DNS. Names follow compression pointers with loop
detection and are limited to 255 bytes on the wire; they are given in presentation form,
lower-cased, without the final dot, with unusual bytes escaped as `\\DDD`.
"""

from __future__ import annotations

import re
import struct
from typing import Any, ClassVar

from podwall.core.errors import ProtocolError
from podwall.core.limits import DEFAULT_LIMITS, Limits
from podwall.core.types import PROTO_TCP, PROTO_UDP, Direction, ip_text
from podwall.dpi.base import DetectContext, Detection, L7Event
from podwall.dpi.wire import Reader, StreamBuffer

__all__ = ["DnsDetector", "DnsParser", "looks_like_dns", "parse_message", "read_name"]

APP = "dns"
MAX_NAME_WIRE = 255  # RFC 1035 3.1
MAX_RECORDS_KEPT = 32  # answers listed in an event (all records are still parsed)
MAX_RDATA_HEX = 256  # rdata bytes shown as hex for types without a text form
MDNS_PORTS = frozenset({5353})
MAX_QUESTIONS = 4  # unicast DNS sends one question; allow a few
MAX_QUESTIONS_MDNS = 64  # mDNS queries ask about many services at once

TYPE_NAMES = {
    1: "A", 2: "NS", 5: "CNAME", 6: "SOA", 10: "NULL", 11: "WKS", 12: "PTR", 13: "HINFO", 15: "MX",
    16: "TXT", 17: "RP", 18: "AFSDB", 24: "SIG", 25: "KEY", 28: "AAAA", 29: "LOC", 33: "SRV",
    35: "NAPTR", 36: "KX", 37: "CERT", 39: "DNAME", 41: "OPT", 42: "APL", 43: "DS", 44: "SSHFP",
    45: "IPSECKEY", 46: "RRSIG", 47: "NSEC", 48: "DNSKEY", 49: "DHCID", 50: "NSEC3",
    51: "NSEC3PARAM", 52: "TLSA", 53: "SMIMEA", 55: "HIP", 59: "CDS", 60: "CDNSKEY",
    61: "OPENPGPKEY", 62: "CSYNC", 63: "ZONEMD", 64: "SVCB", 65: "HTTPS", 99: "SPF",
    249: "TKEY", 250: "TSIG", 251: "IXFR", 252: "AXFR", 253: "MAILB", 254: "MAILA", 255: "ANY",
    256: "URI", 257: "CAA",
}  # fmt: skip
CLASS_NAMES = {1: "IN", 3: "CH", 4: "HS", 254: "NONE", 255: "ANY"}
OPCODE_NAMES = {0: "QUERY", 1: "IQUERY", 2: "STATUS", 4: "NOTIFY", 5: "UPDATE"}
RCODE_NAMES = {
    0: "NOERROR", 1: "FORMERR", 2: "SERVFAIL", 3: "NXDOMAIN", 4: "NOTIMP", 5: "REFUSED",
    6: "YXDOMAIN", 7: "YXRRSET", 8: "NXRRSET", 9: "NOTAUTH", 10: "NOTZONE",
}  # fmt: skip
_FLAG_BITS = (("aa", 0x0400), ("tc", 0x0200), ("rd", 0x0100), ("ra", 0x0080), ("ad", 0x0020), ("cd", 0x0010))
_NAME_TYPES = frozenset({2, 5, 12, 39})  # NS, CNAME, PTR, DNAME: rdata is one name
_HEADER = struct.Struct("!6H")
_QUESTION = struct.Struct("!HH")
_RECORD = struct.Struct("!HHIH")
_PLAIN_LABEL = re.compile(rb"[\x21\x23-\x2d\x2f-\x5b\x5d-\x7e]+")  # printable, no . \ " space
_PLAIN_NAME = re.compile(rb"[\x21\x23-\x5b\x5d-\x7e]+")  # plain labels joined by dots
_MAX_JUMPS = 8  # compression pointers the fast path follows before leaving a name to the careful one


def type_name(code: int) -> str:
    return TYPE_NAMES.get(code) or f"TYPE{code}"


def class_name(code: int) -> str:
    return CLASS_NAMES.get(code) or f"CLASS{code}"


# How each byte that is not plain printable ASCII is written in a name: RFC 4343 escapes.
_ESCAPES = {
    c: ("\\" + chr(c)) if c in (0x2E, 0x5C, 0x22) else f"\\{c:03d}"
    for c in range(256)
    if c in (0x2E, 0x5C, 0x22) or not 0x21 <= c <= 0x7E
}
_CONTROL = re.compile(rb"[\x00-\x1f\x7f]")


def _label_text(label: bytes) -> str:
    if _PLAIN_LABEL.fullmatch(label):
        return label.decode("ascii").lower()
    # latin-1 maps each byte to one code point; the escapes replace every non-printable one,
    # so lower() afterwards only touches ASCII letters.
    return label.decode("latin-1").translate(_ESCAPES).lower()


def read_name(msg: bytes, pos: int, end: int, strict: bool = False) -> tuple[str, int]:
    """The name at `pos` (its inline part must end by `end`) and the offset just after it.

    Pointers may lead anywhere in `msg`; a pointer seen twice is a loop. With `strict`,
    labels holding control bytes are refused (the detector's view of "looks like DNS").
    """
    # Fast path for the usual name (printable labels, a few pointers, well-formed): the
    # labels are joined as bytes and converted once. Anything else, valid or not, is read
    # again by `_read_name`, which gives every answer and every error.
    parts: list[bytes] = []
    p = pos
    limit = end
    after = -1
    jumps = 0
    while True:
        if p >= limit:
            return _read_name(msg, pos, end, strict)
        length = msg[p]
        if length == 0:
            p += 1
            break
        if length >= 0xC0:
            if p + 1 >= limit or jumps >= _MAX_JUMPS:
                return _read_name(msg, pos, end, strict)
            if after < 0:
                after = p + 2
            limit = len(msg)
            p = ((length & 0x3F) << 8) | msg[p + 1]
            jumps += 1
            continue
        if length & 0xC0:
            return _read_name(msg, pos, end, strict)
        start = p + 1
        p = start + length
        if p > limit:
            return _read_name(msg, pos, end, strict)
        parts.append(msg[start:p])
    if not parts:
        return ".", (p if after < 0 else after)
    raw = b".".join(parts)
    # The wire form is the labels' bytes plus one length octet each plus the root's: len(raw) + 2.
    if len(raw) + 2 > MAX_NAME_WIRE or not _PLAIN_NAME.fullmatch(raw) or raw.count(b".") != len(parts) - 1:
        return _read_name(msg, pos, end, strict)
    return raw.decode("ascii").lower(), (p if after < 0 else after)


def _read_name(msg: bytes, pos: int, end: int, strict: bool) -> tuple[str, int]:
    """`read_name` for every name, escapes and errors included."""
    labels: list[str] = []
    wire = 1  # the root label's length octet
    after = -1
    limit = end
    visited: set[int] = set()
    while True:
        if pos >= limit:
            raise ProtocolError(f"DNS name: truncated at offset {pos}")
        length = msg[pos]
        if length == 0:
            pos += 1
            break
        tag = length & 0xC0
        if tag == 0xC0:
            if pos + 1 >= limit:
                raise ProtocolError(f"DNS name: truncated compression pointer at offset {pos}")
            target = ((length & 0x3F) << 8) | msg[pos + 1]
            if after < 0:
                after = pos + 2
            if target in visited:
                raise ProtocolError("compression pointer loop")
            visited.add(target)
            limit = len(msg)
            if target >= limit:
                raise ProtocolError(f"DNS name: compression pointer to {target} beyond the message")
            pos = target
            continue
        if tag:
            raise ProtocolError(f"DNS name: unsupported label type 0x{length:02x} at offset {pos}")
        start = pos + 1
        pos = start + length
        if pos > limit:
            raise ProtocolError(f"DNS name: label of {length} bytes truncated at offset {start}")
        wire += length + 1
        if wire > MAX_NAME_WIRE:
            raise ProtocolError(f"DNS name: longer than {MAX_NAME_WIRE} bytes")
        label = msg[start:pos]
        if strict and _CONTROL.search(label):
            raise ProtocolError("DNS name: control byte in a label")
        labels.append(_label_text(label))
    return (".".join(labels) if labels else "."), (pos if after < 0 else after)


def _text_strings(msg: bytes, start: int, end: int) -> str:
    parts: list[str] = []
    pos = start
    while pos < end:
        length = msg[pos]
        if pos + 1 + length > end:
            raise ProtocolError(f"DNS TXT: character-string truncated at offset {pos}")
        raw = msg[pos + 1 : pos + 1 + length]
        text = "".join(
            "\\" + chr(c) if c in (0x22, 0x5C) else chr(c) if 0x20 <= c <= 0x7E else f"\\{c:03d}" for c in raw
        )
        parts.append(f'"{text}"')
        pos += 1 + length
    return " ".join(parts)


def _rdata_text(msg: bytes, rtype: int, start: int, end: int) -> str:
    size = end - start
    if rtype == 1 or rtype == 28:
        if size != (4 if rtype == 1 else 16):
            raise ProtocolError(f"DNS {type_name(rtype)} record: rdata of {size} bytes")
        if rtype == 1:  # the dotted quad directly: this runs for every A record of every answer
            return f"{msg[start]}.{msg[start + 1]}.{msg[start + 2]}.{msg[start + 3]}"
        return ip_text(msg[start:end])
    if rtype in _NAME_TYPES or rtype == 15 or rtype == 33:
        r = Reader(msg, start, end, f"DNS {type_name(rtype)} rdata")
        prefix = ""
        if rtype == 15:
            prefix = f"{r.u16('preference')} "
        elif rtype == 33:
            prefix = f"{r.u16('priority')} {r.u16('weight')} {r.u16('port')} "
        name, after = read_name(msg, r.pos, end)
        if after != end:
            raise ProtocolError(f"DNS {type_name(rtype)} record: rdata length mismatch")
        return prefix + name
    if rtype == 6:
        mname, pos = read_name(msg, start, end)
        rname, pos = read_name(msg, pos, end)
        r = Reader(msg, pos, end, "DNS SOA rdata")
        numbers = [r.u32("SOA counter") for _ in range(5)]
        r.expect_end()
        return " ".join([mname, rname, *map(str, numbers)])
    if rtype == 16:
        return _text_strings(msg, start, end)
    shown = msg[start : min(end, start + MAX_RDATA_HEX)].hex()
    return shown + ("..." if size > MAX_RDATA_HEX else "")


def _flags(flags: int) -> list[str]:
    names = ["qr"] if flags & 0x8000 else []
    names.extend(name for name, bit in _FLAG_BITS if flags & bit)
    return names


def parse_message(msg: bytes, strict: bool = False) -> dict[str, Any]:
    """Fields of one DNS message; ProtocolError when it does not parse.

    With `strict`, also refuse what real resolvers never send (see `looks_like_dns`).
    """
    if len(msg) < 12:
        raise ProtocolError(f"DNS message: truncated header ({len(msg)} of 12 bytes)")
    msg_id, flags, qdcount, ancount, nscount, arcount = _HEADER.unpack_from(msg)
    end = len(msg)
    # every question takes at least 5 bytes and every record 11: refuse impossible counts early
    if qdcount * 5 + (ancount + nscount + arcount) * 11 > len(msg) - 12:
        raise ProtocolError(
            f"DNS message: counts {qdcount}/{ancount}/{nscount}/{arcount} do not fit in {len(msg)} bytes"
        )
    opcode = (flags >> 11) & 0xF
    questions: list[dict[str, Any]] = []
    pos = 12
    for _ in range(qdcount):
        qname, pos = read_name(msg, pos, end, strict)
        if pos + 4 > end:
            raise ProtocolError(f"DNS question: truncated at offset {pos}")
        qtype, qclass = _QUESTION.unpack_from(msg, pos)
        pos += 4
        if strict and (qtype == 0 or (qclass & 0x7FFF) not in CLASS_NAMES):
            raise ProtocolError(f"DNS question: type {qtype} class {qclass}")
        # mDNS uses the top bit of the class to ask for a unicast answer (RFC 6762 5.4)
        questions.append({"qname": qname, "qtype": type_name(qtype), "qclass": class_name(qclass & 0x7FFF)})
    answers: list[dict[str, Any]] = []
    for index in range(ancount + nscount + arcount):
        name, pos = read_name(msg, pos, end, strict)
        if pos + 10 > end:
            raise ProtocolError(f"DNS record: truncated at offset {pos}")
        rtype, rclass, ttl, rdlength = _RECORD.unpack_from(msg, pos)
        pos += 10
        if pos + rdlength > end:
            raise ProtocolError(f"DNS {type_name(rtype)} rdata: truncated ({rdlength} bytes declared at offset {pos})")
        text = _rdata_text(msg, rtype, pos, pos + rdlength)
        pos += rdlength
        if index < ancount and len(answers) < MAX_RECORDS_KEPT:
            answers.append(
                {"name": name, "type": type_name(rtype), "class": class_name(rclass & 0x7FFF), "ttl": ttl,
                 "rdata": text}
            )  # fmt: skip
    if strict and pos != end:
        raise ProtocolError(f"DNS message: {end - pos} bytes after the last record")
    first = questions[0] if questions else None
    return {
        "id": msg_id,
        "qr": bool(flags & 0x8000),
        "opcode": OPCODE_NAMES.get(opcode) or f"OPCODE{opcode}",
        "rcode": RCODE_NAMES.get(flags & 0xF) or f"RCODE{flags & 0xF}",
        "flags": _flags(flags),
        "questions": questions,
        "qname": first["qname"] if first else None,
        "qtype": first["qtype"] if first else None,
        "answers": answers,
        "ancount": ancount,
        "nscount": nscount,
        "arcount": arcount,
    }


def _header_sane(msg: bytes, mdns: bool) -> bool:
    """What the first 12 bytes must look like for the message to be taken as DNS."""
    flags = (msg[2] << 8) | msg[3]
    qdcount = (msg[4] << 8) | msg[5]
    ancount = (msg[6] << 8) | msg[7]
    opcode = (flags >> 11) & 0xF
    if opcode > 5 or flags & 0x0040:  # the Z bit is zero in DNS, mDNS and LLMNR
        return False
    is_response = bool(flags & 0x8000)
    if not is_response and opcode == 0 and flags & 0xF:
        return False  # a query with an error code
    if qdcount == 0:
        # mDNS answers carry no question; nothing else legitimately does
        return mdns and is_response and ancount > 0
    return qdcount <= (MAX_QUESTIONS_MDNS if mdns else MAX_QUESTIONS)


# The last message `looks_like_dns` accepted and its fields: the session replays that same
# bytes object (immutable, kept alive here, so identity is equality) to the parser of the flow
# it has just named DNS, which takes the fields instead of parsing the message again.
_accepted: tuple[bytes, dict[str, Any]] | None = None


def looks_like_dns(msg: bytes, ctx: DetectContext) -> bool:
    """True when `msg` is one well-formed DNS message as a resolver would send it."""
    global _accepted
    if len(msg) < 12:
        return False
    mdns = ctx.server_port in MDNS_PORTS or ctx.client_port in MDNS_PORTS
    if not _header_sane(msg, mdns):
        return False
    try:
        fields = parse_message(msg, strict=True)
    except ProtocolError:
        return False
    if type(msg) is bytes:
        _accepted = (msg, fields)
    return True


class DnsParser:
    """Sans-IO DNS parser: one message per datagram (UDP) or per length prefix (TCP)."""

    def __init__(self, ctx: DetectContext, limits: Limits = DEFAULT_LIMITS) -> None:
        self._tcp = ctx.proto == PROTO_TCP
        self._streams = (
            StreamBuffer(limits.parser_buffer + 2, "DNS client message"),
            StreamBuffer(limits.parser_buffer + 2, "DNS server message"),
        )
        self._query_name: str | None = None
        self._answer_name: str | None = None

    def server_name(self) -> str | None:
        """The first query's name; a response's only until a query is seen (captures start late)."""
        return self._query_name or self._answer_name

    def _event(self, direction: Direction, msg: bytes) -> L7Event:
        global _accepted
        accepted = _accepted
        if accepted is not None and accepted[0] is msg:
            _accepted = None  # its fields go to this one event
            fields = accepted[1]
        else:
            fields = parse_message(msg)
        qname = fields["qname"]
        if qname is not None and qname != ".":  # a query for the root (e.g. NSID, priming) names no server
            if not fields["qr"]:
                self._query_name = self._query_name or qname
            else:
                self._answer_name = self._answer_name or qname
        return L7Event(APP, "response" if fields["qr"] else "query", direction, fields)

    def feed(self, direction: Direction, data: bytes) -> list[L7Event]:
        if not self._tcp:
            return [self._event(direction, data)]
        stream = self._streams[direction]
        stream.append(data)
        out: list[L7Event] = []
        buf = stream.buf
        while len(buf) - stream.pos >= 2:
            pos = stream.pos
            length = (buf[pos] << 8) | buf[pos + 1]
            if length < 12:
                raise ProtocolError(f"DNS over TCP: message length {length} is shorter than a header")
            if len(buf) - pos < 2 + length:
                break
            stream.pos = pos + 2 + length
            out.append(self._event(direction, bytes(buf[pos + 2 : pos + 2 + length])))
        stream.compact()
        return out


class DnsDetector:
    """Names a flow `dns` when its first message is well-formed DNS, over UDP or TCP."""

    name: ClassVar[str] = APP
    transports: ClassVar[frozenset[int]] = frozenset({PROTO_UDP, PROTO_TCP})
    ports: ClassVar[frozenset[int]] = frozenset({53, 5353, 5355})

    def __init__(self, limits: Limits = DEFAULT_LIMITS) -> None:
        self._limits = limits

    def detect(self, direction: Direction, data: bytes, ctx: DetectContext) -> Detection:
        if ctx.proto != PROTO_TCP:
            return Detection.MATCH if looks_like_dns(data, ctx) else Detection.NO
        if len(data) < 2:
            return Detection.NEED_MORE
        length = (data[0] << 8) | data[1]
        if length < 12:
            return Detection.NO
        if len(data) < 2 + length:
            if len(data) >= 14 and not _header_sane(data[2:14], False):
                return Detection.NO
            return Detection.NEED_MORE
        return Detection.MATCH if looks_like_dns(data[2 : 2 + length], ctx) else Detection.NO

    def parser(self, ctx: DetectContext) -> DnsParser:
        return DnsParser(ctx, self._limits)
