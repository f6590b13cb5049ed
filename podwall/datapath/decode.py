"""Link, network and transport decoding: a captured `Frame` in, a `Packet` (or None) out.

This runs once per packet on every path (capture files, live taps, NFQUEUE), so it works on
byte offsets into the frame with precompiled structs and builds exactly one object per packet.
Addresses stay packed bytes. Anything malformed is counted in `stats`, reported (rate-limited)
as a located `Problem`, and dropped; the decoder never raises for any input bytes.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from podwall.core.errors import Location, Problem
from podwall.core.limits import DEFAULT_LIMITS, Limits
from podwall.core.types import PROTO_ICMP, PROTO_ICMPV6, PROTO_TCP, PROTO_UDP, Packet
from podwall.datapath.fragments import FragmentError, FragmentReassembler
from podwall.datapath.io.pcap import Frame

__all__ = [
    "LINKTYPE_ETHERNET",
    "LINKTYPE_IPV4",
    "LINKTYPE_IPV6",
    "LINKTYPE_LINUX_SLL",
    "LINKTYPE_LINUX_SLL2",
    "LINKTYPE_LOOP",
    "LINKTYPE_NULL",
    "LINKTYPE_RAW",
    "SUPPORTED_LINKTYPES",
    "Decoder",
    "PacketProblem",
]

LINKTYPE_NULL = 0
LINKTYPE_ETHERNET = 1
LINKTYPE_RAW = 101
_LINKTYPE_RAW_ALIASES = (12, 14)  # DLT_RAW as some platforms number it
LINKTYPE_LOOP = 108
LINKTYPE_LINUX_SLL = 113
LINKTYPE_IPV4 = 228
LINKTYPE_IPV6 = 229
LINKTYPE_LINUX_SLL2 = 276

SUPPORTED_LINKTYPES = frozenset(
    (
        LINKTYPE_NULL,
        LINKTYPE_ETHERNET,
        LINKTYPE_RAW,
        *_LINKTYPE_RAW_ALIASES,
        LINKTYPE_LOOP,
        LINKTYPE_LINUX_SLL,
        LINKTYPE_IPV4,
        LINKTYPE_IPV6,
        LINKTYPE_LINUX_SLL2,
    )
)

_ETH_IPV4 = 0x0800
_ETH_IPV6 = 0x86DD
_ETH_PPPOE_SESSION = 0x8864
_ETH_MPLS_TYPES = frozenset((0x8847, 0x8848))  # unicast, multicast
_PPP_IPV4 = 0x0021
_PPP_IPV6 = 0x0057
_VLAN_TPIDS = frozenset((0x8100, 0x88A8, 0x9100))  # 802.1Q, 802.1ad, pre-standard QinQ
_AF_INET = 2
_AF_INET6 = frozenset((24, 28, 30))  # BSD/NetBSD, FreeBSD, macOS values of AF_INET6

# IPv6 extension headers we walk through; ESP (50) and no-next-header (59) end the walk.
_EXT_HOP = 0
_EXT_ROUTING = 43
_EXT_FRAGMENT = 44
_EXT_AH = 51
_EXT_DSTOPTS = 60
_EXT_SIMPLE = frozenset((_EXT_HOP, _EXT_ROUTING, _EXT_DSTOPTS, _EXT_AH))  # walked by their length byte
_ICMPS = frozenset((PROTO_ICMP, PROTO_ICMPV6))
_LOOPBACKS = frozenset((LINKTYPE_NULL, LINKTYPE_LOOP))
# Link layers that end in an EtherType: header length, offset of the EtherType, name for messages.
_ETHERTYPE_LINKS: dict[int, tuple[int, int, str]] = {
    LINKTYPE_ETHERNET: (14, 12, "Ethernet"),
    LINKTYPE_LINUX_SLL: (16, 14, "Linux cooked"),
    LINKTYPE_LINUX_SLL2: (20, 0, "Linux cooked v2"),
}

_IPV4 = struct.Struct("!BxHHHBBxx4s4s")  # version/IHL, total, id, flags/offset, ttl, proto, src, dst
_IPV6 = struct.Struct("!4xHBB16s16s")  # payload length, next header, hop limit, src, dst
_TCP = struct.Struct("!HHIIBBH")  # ports, seq, ack, data offset, flags, window
_UDP = struct.Struct("!HHH")  # ports, length

_TCP_SYN = 0x02
_TCPOPT_END, _TCPOPT_NOP, _TCPOPT_MSS, _TCPOPT_WSCALE = 0, 1, 2, 3


@dataclass(frozen=True, slots=True)
class PacketProblem(Problem):
    """A malformed frame's problem with what threat detection needs: when, what kind, which ends.

    `kind` is "malformed", or "fragment-<why>" for a fragment that cannot belong to a valid
    datagram (see `FragmentError.kind`); `src`/`dst`/`proto` are set when the IP header was read.
    """

    kind: str = "malformed"
    ts: float = 0.0
    frame: int = 0
    src: bytes = b""
    dst: bytes = b""
    proto: int = 0


def _syn_options(buf: bytes, p: int, end: int) -> tuple[int, int]:
    """(MSS, window scale) from the TCP options in `buf[p:end]`; 0 / -1 for the ones absent."""
    mss, wscale = 0, -1
    while p < end:
        kind = buf[p]
        if kind == _TCPOPT_END:
            break
        if kind == _TCPOPT_NOP:
            p += 1
            continue
        if p + 1 >= end:
            break
        size = buf[p + 1]
        if size < 2 or p + size > end:
            break  # a malformed option list: keep what was read before it
        if kind == _TCPOPT_MSS and size == 4:
            mss = (buf[p + 2] << 8) | buf[p + 3]
        elif kind == _TCPOPT_WSCALE and size == 3:
            wscale = buf[p + 2]
        p += size
    return mss, wscale


_STATS = (
    "frames",
    "decoded",
    "tcp",
    "udp",
    "icmp",
    "other_ip",
    "non_ip",
    "malformed",
    "truncated",
    "unsupported_linktype",
    "decode_error",
    "problems_reported",
    "problems_suppressed",
    "fragment_incomplete",
    "tso",
)


class Decoder:
    """Turns frames into `Packet`s: link layer, IPv4/IPv6 (with fragment reassembly), TCP/UDP/ICMP.

    `decode` returns None for non-IP frames (counted as `non_ip`), malformed ones (counted as
    `malformed` and reported), frames of an unsupported link type (one report per type) and
    fragments whose datagram is not complete yet. The first `report_limit` problems go to
    `on_problem`; the rest are only counted (`problems_suppressed`). Call `finish` at the end
    of the input to drop incomplete datagrams and get a summary report.
    """

    def __init__(
        self,
        limits: Limits = DEFAULT_LIMITS,
        on_problem: Callable[[Problem], None] | None = None,
        *,
        source: str | None = None,
        report_limit: int = 20,
    ) -> None:
        self.stats: dict[str, int] = dict.fromkeys(_STATS, 0)
        self.fragments = FragmentReassembler(limits, self.stats)
        self._on_problem = on_problem
        self._source = source
        self._report_limit = report_limit
        self._bad_linktypes: set[int] = set()
        self._summarised = 0  # suppressed problems already summed up by finish()

    # -- reporting ------------------------------------------------------------------------

    def _report(
        self, number: int | None, message: str, *, limited: bool = True, packet: tuple[Any, ...] | None = None
    ) -> None:
        """Report a problem; `packet` = (kind, ts, src, dst, proto) makes it a `PacketProblem`."""
        stats = self.stats
        if limited and stats["problems_reported"] >= self._report_limit:
            stats["problems_suppressed"] += 1
            return
        stats["problems_reported"] += 1
        if self._on_problem is not None:
            obj = f"frame {number}" if number is not None else None
            location = Location(file=self._source, obj=obj)
            if packet is None:
                self._on_problem(Problem(location, message))
            else:
                kind, ts, src, dst, proto = packet
                self._on_problem(PacketProblem(location, message, kind, ts, number or 0, src, dst, proto))

    def _malformed(
        self, frame: Frame, message: str, kind: str = "malformed", src: bytes = b"", dst: bytes = b"", proto: int = 0
    ) -> None:
        self.stats["malformed"] += 1
        self._report(frame.number, message, packet=(kind, frame.ts, src, dst, proto))

    def finish(self) -> None:
        """End of input: forget incomplete fragmented datagrams and report what was left unsaid."""
        incomplete = self.fragments.flush()
        self.stats["fragment_incomplete"] += incomplete
        if incomplete:
            self._report(None, f"{incomplete} fragmented datagram(s) never completed", limited=False)
        suppressed = self.stats["problems_suppressed"] - self._summarised
        self._summarised += suppressed
        if suppressed:
            self._report(None, f"{suppressed} more malformed frame(s) were not reported one by one", limited=False)

    # -- link layer -----------------------------------------------------------------------

    def decode(self, frame: Frame) -> Packet | None:
        """Decode one frame; None when it carries no complete IP packet (see the class doc)."""
        self.stats["frames"] += 1
        try:
            data = frame.data
            # The common case first: untagged Ethernet carrying IPv4, without the link dispatch.
            if frame.linktype == LINKTYPE_ETHERNET and len(data) >= 34 and data[12] == 8 and data[13] == 0:
                vihl, total, _ident, frag, ttl, proto, src, dst = _IPV4.unpack_from(data, 14)
                if vihl == 0x45 and 20 <= total <= len(data) - 14 and not frag & 0x3FFF:
                    # No options, not a fragment, all captured: what `_ipv4` would do, without its checks.
                    return self._transport(frame, None, src, dst, ttl, total, proto, data, 34, 14 + total, 14 + total)
                return self._ipv4(frame, data, 14, None)
            return self._link(frame)
        except (IndexError, ValueError, struct.error) as exc:
            # Every length is checked before use; this is the fail-closed net for what was missed.
            self.stats["decode_error"] += 1
            self._malformed(frame, f"undecodable frame ({type(exc).__name__}: {exc})")
            return None

    def _link(self, frame: Frame) -> Packet | None:
        data = frame.data
        n = len(data)
        lt = frame.linktype
        if lt in _ETHERTYPE_LINKS:
            off, at, name = _ETHERTYPE_LINKS[lt]
            if n < off:
                self._malformed(frame, f"{name} frame of {n} bytes is shorter than its {off}-byte header")
                return None
            ethertype = (data[at] << 8) | data[at + 1]
        elif lt == LINKTYPE_RAW or lt in _LINKTYPE_RAW_ALIASES:
            version = data[0] >> 4 if n else 0
            if version == 4:
                return self._ipv4(frame, data, 0, None)
            if version == 6:
                return self._ipv6(frame, data, 0, None)
            self._malformed(frame, f"raw IP frame with IP version {version}")
            return None
        elif lt == LINKTYPE_IPV4:
            return self._ipv4(frame, data, 0, None)
        elif lt == LINKTYPE_IPV6:
            return self._ipv6(frame, data, 0, None)
        elif lt in _LOOPBACKS:
            if n < 4:
                self._malformed(frame, f"loopback frame of {n} bytes is shorter than its 4-byte header")
                return None
            if lt == LINKTYPE_LOOP:
                family = int.from_bytes(data[:4], "big")
            else:
                # Host byte order of the capturing machine: a small number read the wrong way is huge.
                family = int.from_bytes(data[:4], "little")
                if family > 0xFFFF:
                    family = int.from_bytes(data[:4], "big")
            if family == _AF_INET:
                return self._ipv4(frame, data, 4, None)
            if family in _AF_INET6:
                return self._ipv6(frame, data, 4, None)
            self.stats["non_ip"] += 1
            return None
        else:
            self.stats["unsupported_linktype"] += 1
            if lt not in self._bad_linktypes:
                self._bad_linktypes.add(lt)
                self._report(frame.number, f"unsupported link type {lt}; its frames are skipped", limited=False)
            return None

        vlan: int | None = None
        while ethertype in _VLAN_TPIDS:
            if n < off + 4:
                self._malformed(frame, f"VLAN tag at byte {off} is truncated")
                return None
            if vlan is None:
                vlan = ((data[off] << 8) | data[off + 1]) & 0x0FFF
            ethertype = (data[off + 2] << 8) | data[off + 3]
            off += 4
        if ethertype == _ETH_IPV4:
            return self._ipv4(frame, data, off, vlan)
        if ethertype == _ETH_IPV6:
            return self._ipv6(frame, data, off, vlan)
        if ethertype == _ETH_PPPOE_SESSION:
            # 6-byte PPPoE header, then the 2-byte PPP protocol number.
            if n < off + 8:
                self._malformed(frame, f"PPPoE header at byte {off} is truncated")
                return None
            ppp = (data[off + 6] << 8) | data[off + 7]
            if ppp == _PPP_IPV4:
                return self._ipv4(frame, data, off + 8, vlan)
            if ppp == _PPP_IPV6:
                return self._ipv6(frame, data, off + 8, vlan)
        elif ethertype in _ETH_MPLS_TYPES:
            while True:  # label stack entries until the bottom-of-stack bit
                if n < off + 4:
                    self._malformed(frame, f"MPLS label at byte {off} is truncated")
                    return None
                off += 4
                if data[off - 2] & 1:
                    break
            version = data[off] >> 4 if n > off else 0
            if version == 4:
                return self._ipv4(frame, data, off, vlan)
            if version == 6:
                return self._ipv6(frame, data, off, vlan)
        self.stats["non_ip"] += 1
        return None

    # -- network layer --------------------------------------------------------------------

    def _cut_end(self, frame: Frame, data: bytes, off: int, length: int, what: str) -> int | None:
        """Where captured IP bytes stop when the frame holds less than the IP length says.

        That is fine when the capture cut the frame (snaplen): the payload is what was captured.
        It is malformed when the wire frame itself was that short. (When the frame holds more,
        the IP length wins, which trims Ethernet padding.)
        """
        n = len(data)
        if n >= frame.orig_len:
            self._malformed(frame, f"{what} length {length} exceeds the {n - off} bytes in the frame")
            return None
        self.stats["truncated"] += 1
        return n

    def _ipv4(self, frame: Frame, data: bytes, off: int, vlan: int | None) -> Packet | None:
        if len(data) - off < 20:
            self._malformed(frame, f"IPv4 header truncated ({len(data) - off} of 20 bytes)")
            return None
        vihl, total, ident, frag, ttl, proto, src, dst = _IPV4.unpack_from(data, off)
        if vihl >> 4 != 4:
            self._malformed(frame, f"IP version {vihl >> 4} where IPv4 was expected")
            return None
        ihl = (vihl & 0x0F) << 2
        if total == 0 and proto == PROTO_TCP and not frag & 0x3FFF:
            # A segmentation-offloaded send captured on its own host, before the NIC cut it:
            # the kernel leaves the total length 0, the frame's length is the real one.
            self.stats["tso"] += 1
            total = max(len(data), frame.orig_len) - off
        if ihl < 20 or total < ihl:
            self._malformed(frame, f"IPv4 header length {ihl} / total length {total} are inconsistent")
            return None
        end = off + total
        if end <= len(data):
            cap_end = end
        else:
            cut = self._cut_end(frame, data, off, total, "IPv4 total")
            if cut is None:
                return None
            cap_end = cut
        p = off + ihl
        if p > cap_end:
            self._malformed(frame, "IPv4 options cut by the capture length")
            return None
        if frag & 0x3FFF:  # more-fragments set or a non-zero offset (DF alone is no fragment)
            if cap_end < end:
                self._malformed(frame, "IPv4 fragment cut by the capture length cannot be reassembled")
                return None
            try:
                done = self.fragments.add(
                    (4, src, dst, ident, proto),
                    (frag & 0x1FFF) << 3,
                    bool(frag & 0x2000),
                    data[p:end],
                    frame.ts,
                    (ihl, ttl),
                )
            except FragmentError as exc:
                self._malformed(frame, f"IPv4 fragment dropped: {exc}", f"fragment-{exc.kind}", src, dst, proto)
                return None
            if done is None:
                return None
            payload, (ihl0, ttl0) = done
            size = len(payload)
            pkt = self._transport(frame, vlan, src, dst, ttl0, ihl0 + size, proto, payload, 0, size, size)
            if pkt is not None and self.fragments.last_overlap:
                pkt.frag_overlap = True
            return pkt
        return self._transport(frame, vlan, src, dst, ttl, total, proto, data, p, end, cap_end)

    def _ipv6(self, frame: Frame, data: bytes, off: int, vlan: int | None) -> Packet | None:
        if len(data) - off < 40:
            self._malformed(frame, f"IPv6 header truncated ({len(data) - off} of 40 bytes)")
            return None
        if data[off] >> 4 != 6:
            self._malformed(frame, f"IP version {data[off] >> 4} where IPv6 was expected")
            return None
        plen, nh, hlim, src, dst = _IPV6.unpack_from(data, off)
        p = off + 40
        end = p + plen
        if end <= len(data):
            cap_end = end
        else:
            cut = self._cut_end(frame, data, p, plen, "IPv6 payload")
            if cut is None:
                return None
            cap_end = cut
        return self._ipv6_chain(frame, vlan, src, dst, hlim, nh, data, p, end, cap_end, 40 + plen, p)

    def _ipv6_chain(
        self,
        frame: Frame,
        vlan: int | None,
        src: bytes,
        dst: bytes,
        hlim: int,
        nh: int,
        data: bytes,
        p: int,
        end: int,
        cap_end: int,
        ip_len: int,
        unfrag_start: int,
    ) -> Packet | None:
        """Walk the extension headers from `p`; `unfrag_start` < 0 means we are inside a reassembly."""
        while True:
            if nh in _EXT_SIMPLE:
                if p + 2 > cap_end:
                    self._malformed(frame, f"IPv6 extension header {nh} truncated")
                    return None
                size = (data[p + 1] + 2) << 2 if nh == _EXT_AH else (data[p + 1] + 1) << 3
                nh = data[p]
                p += size
                if p > cap_end:
                    self._malformed(frame, "IPv6 extension header runs past the packet")
                    return None
            elif nh == _EXT_FRAGMENT:
                if p + 8 > cap_end:
                    self._malformed(frame, "IPv6 fragment header truncated")
                    return None
                next_nh = data[p]
                offset_flags = (data[p + 2] << 8) | data[p + 3]
                ident = int.from_bytes(data[p + 4 : p + 8], "big")
                p += 8
                if not offset_flags & 0xFFF9:  # atomic fragment (offset 0, no more): just a header
                    nh = next_nh
                    continue
                if unfrag_start < 0:
                    self._malformed(frame, "IPv6 fragment header inside a reassembled datagram")
                    return None
                if cap_end < end:
                    self._malformed(frame, "IPv6 fragment cut by the capture length cannot be reassembled")
                    return None
                try:
                    done = self.fragments.add(
                        (6, src, dst, ident),
                        offset_flags & 0xFFF8,
                        bool(offset_flags & 1),
                        data[p:end],
                        frame.ts,
                        (next_nh, p - 8 - unfrag_start, hlim),
                    )
                except FragmentError as exc:
                    self._malformed(frame, f"IPv6 fragment dropped: {exc}", f"fragment-{exc.kind}", src, dst, next_nh)
                    return None
                if done is None:
                    return None
                payload, (nh0, unfrag_len, hlim0) = done
                size = len(payload)
                pkt = self._ipv6_chain(
                    frame, vlan, src, dst, hlim0, nh0, payload, 0, size, size, 40 + unfrag_len + size, -1
                )
                if pkt is not None and self.fragments.last_overlap:
                    pkt.frag_overlap = True
                return pkt
            else:
                return self._transport(frame, vlan, src, dst, hlim, ip_len, nh, data, p, end, cap_end)

    # -- transport layer ------------------------------------------------------------------

    def _transport(
        self,
        frame: Frame,
        vlan: int | None,
        src: bytes,
        dst: bytes,
        ttl: int,
        ip_len: int,
        proto: int,
        buf: bytes,
        p: int,
        end: int,
        cap_end: int,
    ) -> Packet | None:
        """Build the packet from the transport header at `p` (`end`: IP end, `cap_end`: captured end)."""
        stats = self.stats
        if proto == PROTO_TCP:
            if p + 20 > cap_end:
                self._malformed(frame, self._short("TCP", 20, p, end, cap_end))
                return None
            sport, dport, seq, ack, doff, flags, window = _TCP.unpack_from(buf, p)
            doff = (doff >> 4) << 2
            if doff < 20 or p + doff > end:
                self._malformed(frame, f"TCP data offset {doff} does not fit the {end - p}-byte segment")
                return None
            start = p + doff
            stats["decoded"] += 1
            stats["tcp"] += 1
            pkt = Packet(
                frame.ts,
                src,
                dst,
                PROTO_TCP,
                sport,
                dport,
                ip_len,
                buf[start:cap_end] if start < cap_end else b"",
                flags,
                seq,
                ack,
                window,
                -1,
                -1,
                ttl,
                frame.number,
                vlan,
            )
            if flags & _TCP_SYN and doff > 20:
                pkt.mss, pkt.wscale = _syn_options(buf, p + 20, start if start < cap_end else cap_end)
            return pkt
        if proto == PROTO_UDP:
            if p + 8 > cap_end:
                self._malformed(frame, self._short("UDP", 8, p, end, cap_end))
                return None
            sport, dport, ulen = _UDP.unpack_from(buf, p)
            if ulen < 8 or p + ulen > end:
                self._malformed(frame, f"UDP length {ulen} does not fit the {end - p}-byte IP payload")
                return None
            stop = p + ulen
            stats["decoded"] += 1
            stats["udp"] += 1
            # Positional, as for TCP: keyword arguments cost more, and this runs per packet.
            return Packet(
                frame.ts,
                src,
                dst,
                PROTO_UDP,
                sport,
                dport,
                ip_len,
                buf[p + 8 : stop if stop < cap_end else cap_end],
                0,
                0,
                0,
                0,
                -1,
                -1,
                ttl,
                frame.number,
                vlan,
            )
        if proto in _ICMPS:
            if p + 8 > end or p + 2 > cap_end:
                self._malformed(frame, self._short("ICMP", 8, p, end, cap_end))
                return None
            stats["decoded"] += 1
            stats["icmp"] += 1
            return Packet(
                frame.ts,
                src,
                dst,
                proto,
                0,
                0,
                ip_len,
                buf[p + 8 : cap_end],
                0,
                0,
                0,
                0,
                buf[p],
                buf[p + 1],
                ttl,
                frame.number,
                vlan,
            )
        stats["decoded"] += 1
        stats["other_ip"] += 1
        return Packet(
            frame.ts,
            src,
            dst,
            proto,
            ip_len=ip_len,
            payload=buf[p:cap_end],
            ttl=ttl,
            frame=frame.number,
            vlan=vlan,
        )

    @staticmethod
    def _short(what: str, need: int, p: int, end: int, cap_end: int) -> str:
        if p + need > end:
            return f"{what} header needs {need} bytes, the IP payload has {end - p}"
        return f"{what} header cut by the capture length ({cap_end - p} of {need} bytes captured)"
