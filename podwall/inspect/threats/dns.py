"""DNS threats: pointer loops, oversized messages, zone transfers, NULL queries and tunnelling.

`scan_dns` walks one DNS message just enough for these checks (the questions, every record's
name, type and length, the EDNS OPT record) and reports a malformed one by what broke it:
the DPI parser gives up on a flow at its first bad message and never names a flow whose
first message has a pointer loop, so UDP DNS on the DNS ports is scanned here, per packet.
`DnsThreats` judges a scanned message (or the DPI's event for DNS over TCP) and keeps the
per-client, per-domain tables that tunnelling detection needs.
"""

from __future__ import annotations

import math
import struct
from collections import Counter
from dataclasses import dataclass, field

from podwall.core.errors import ProtocolError
from podwall.dpi.protocols.dns import read_name, type_name
from podwall.inspect.threats.catalog import ThreatSettings
from podwall.inspect.threats.report import Reporter, evict_oldest

__all__ = ["DNS_PORTS", "DnsScan", "DnsThreats", "label_entropy", "scan_dns"]

DNS_PORTS = frozenset({53, 5353, 5355})  # DNS, mDNS, LLMNR
MAX_SCOPES = 4096  # (client, domain) pairs whose names are counted at once
_HEADER = struct.Struct("!6H")
_RR = struct.Struct("!HHIH")
_TYPE_OPT = 41
# Record types whose rdata holds names (offset of the first name, number of names).
_NAME_RDATA = {2: (0, 1), 5: (0, 1), 12: (0, 1), 39: (0, 1), 15: (2, 1), 33: (6, 1), 6: (0, 2)}
# Scan errors that are threats of their own: (threat, what the finding says, the tag of its target); a
# merely malformed message is not one.
_UNPARSED = {
    "loop": ("dns_loop_pointer", "whose name compression pointers loop", "loop"),
    "long-name": ("dns_oversize", "with a name longer than 255 bytes", "name"),
}


@dataclass(slots=True)
class DnsScan:
    """What the checks need from one DNS message."""

    response: bool
    size: int
    questions: list[tuple[str, str]] = field(default_factory=list)  # (name, type name)
    edns_size: int = -1  # the OPT record's UDP payload size; -1 without EDNS
    error: str | None = None  # "loop", "long-name" or "malformed" when the message does not parse


def _error_kind(exc: ProtocolError) -> str:
    text = str(exc)
    if "pointer loop" in text:
        return "loop"
    if "longer than" in text:
        return "long-name"
    return "malformed"


def scan_dns(msg: bytes) -> DnsScan | None:
    """Scan one DNS message; None for fewer than 12 bytes (not DNS at all)."""
    if len(msg) < 12:
        return None
    _, flags, qdcount, ancount, nscount, arcount = _HEADER.unpack_from(msg)
    scan = DnsScan(bool(flags & 0x8000), len(msg))
    end = len(msg)
    if qdcount * 5 + (ancount + nscount + arcount) * 11 > end - 12:
        scan.error = "malformed"
        return scan
    pos = 12
    try:
        for _ in range(qdcount):
            name, pos = read_name(msg, pos, end)
            if pos + 4 > end:
                raise ProtocolError("question truncated")
            qtype = (msg[pos] << 8) | msg[pos + 1]
            pos += 4
            scan.questions.append((name, type_name(qtype)))
        for _ in range(ancount + nscount + arcount):
            _, pos = read_name(msg, pos, end)
            if pos + 10 > end:
                raise ProtocolError("record truncated")
            rtype, rclass, _, rdlength = _RR.unpack_from(msg, pos)
            pos += 10
            if pos + rdlength > end:
                raise ProtocolError("rdata truncated")
            if rtype == _TYPE_OPT:
                scan.edns_size = rclass
            names = _NAME_RDATA.get(rtype)
            if names is not None:
                at = pos + names[0]
                for _ in range(names[1]):
                    _, at = read_name(msg, at, pos + rdlength)
            pos += rdlength
    except (ProtocolError, IndexError) as exc:
        scan.error = _error_kind(exc) if isinstance(exc, ProtocolError) else "malformed"
    return scan


def label_entropy(label: str) -> float:
    """Shannon entropy of a label in bits per character (0 for an empty one)."""
    n = len(label)
    if not n:
        return 0.0
    return -sum(c / n * math.log2(c / n) for c in Counter(label).values())


class _Scope:
    """One client's queries under one domain within the current window."""

    __slots__ = ("encoded", "names", "start")

    def __init__(self, ts: float) -> None:
        self.start = ts
        self.names: set[int] = set()  # hashes of the distinct names (bounded by the threshold)
        self.encoded = 0


class DnsThreats:
    """Judges DNS messages; `message` is called with each scanned message or DPI event."""

    def __init__(self, settings: ThreatSettings, reporter: Reporter) -> None:
        self._s = settings
        self._r = reporter
        self._scopes: dict[tuple[bytes, str], _Scope] = {}
        self._suffixes = tuple(s.strip(".").lower() for s in settings.dns_tunnel.ignore_suffixes)

    def message(
        self,
        scan: DnsScan,
        *,
        client: bytes,
        ts: float,
        frame: int,
        udp: bool,
        detail: dict[str, object],
    ) -> None:
        """One DNS message of `client` (the querier's address), seen over UDP or TCP."""
        r = self._r
        side = "response" if scan.response else "query"
        unparsed = _UNPARSED.get(scan.error or "")
        if unparsed is not None:
            key, what, tag = unparsed
            r.hit(key, f"DNS {side} {what}", ts=ts, frame=frame, target=(client, tag), detail=detail)
            return
        if udp:
            self._size(scan, client, ts, frame, side, detail)
        if scan.response:
            return
        for name, qtype in scan.questions:
            l7: dict[str, object] = {"qname": name, "qtype": qtype}
            if qtype in ("AXFR", "IXFR"):
                r.hit("dns_zone_transfer", f"{qtype} zone transfer query for {name}", ts=ts, frame=frame, l7=l7,
                      detail=detail)  # fmt: skip
            elif qtype == "NULL":
                r.hit("dns_null_type", f"NULL type query for {name}", ts=ts, frame=frame, l7=l7,
                      target=(client, "null"), detail=detail)  # fmt: skip
            if r.enabled["dns_tunnel"]:
                self._tunnel(client, name, ts, frame, l7, detail)

    def _size(self, scan: DnsScan, client: bytes, ts: float, frame: int, side: str, detail: dict[str, object]) -> None:
        s = self._s.dns_oversize
        if scan.size > s.max_size:
            why = f"{scan.size} bytes (more than {s.max_size})"
        elif scan.edns_size < 0 and scan.size > s.max_plain_size:
            why = f"{scan.size} bytes without EDNS (more than {s.max_plain_size})"
        else:
            return
        self._r.hit(
            "dns_oversize",
            f"UDP DNS {side} of {why}",
            ts=ts,
            frame=frame,
            target=(client, "size"),
            detail={**detail, "size": scan.size, "edns_size": scan.edns_size},
        )

    def _tunnel(
        self, client: bytes, name: str, ts: float, frame: int, l7: dict[str, object], detail: dict[str, object]
    ) -> None:
        s = self._s.dns_tunnel
        if not name or name == "." or any(name == x or name.endswith("." + x) for x in self._suffixes):
            return
        labels = name.split(".")
        domain = ".".join(labels[-s.domain_labels :])
        key = (client, domain)
        scope = self._scopes.get(key)
        if scope is None or not 0 <= ts - scope.start < s.window:
            if scope is None:
                evict_oldest(self._scopes, MAX_SCOPES)
            else:
                del self._scopes[key]
            scope = self._scopes[key] = _Scope(ts)
        if len(scope.names) < s.unique_names:
            scope.names.add(hash(name))
        data = labels[: -s.domain_labels]
        if len(name) >= s.long_name or any(
            len(label) >= s.long_label and label_entropy(label) >= s.min_entropy for label in data
        ):
            scope.encoded += 1
        if len(scope.names) >= s.unique_names:
            why = f"{len(scope.names)} distinct names"
        elif scope.encoded >= s.encoded_queries:
            why = f"{scope.encoded} queries with long high-entropy labels"
        else:
            return
        self._r.hit(
            "dns_tunnel",
            f"{why} under {domain} within {s.window:g}s, last {name}",
            ts=ts,
            frame=frame,
            target=key,
            l7=l7,
            detail={**detail, "domain": domain, "names": len(scope.names), "encoded": scope.encoded},
        )
