"""TLS record-layer checks over a connection's stream bytes: heartbleed and the SSLv2 cipher overflow.

The DPI's TLS parser stops after the ServerHello, but heartbeats can come at any time, so
this follows the record layer itself (type, version, length per record; only the first
three bytes of a plaintext heartbeat are looked into). A heartbeat request whose
payload_length claims more bytes than its record holds is the heartbleed over-read (RFC 6520
requires payload_length + 3 + 16 bytes of padding <= the record); a heartbeat answered with a
record much larger than the request is what a leaking server sends back, even encrypted.
An SSLv2 ClientHello whose cipher-spec length overruns the record is the SSLv2 cipher
overflow. Anything that does not start like TLS or SSLv2 turns the watcher off.
"""

from __future__ import annotations

from dataclasses import dataclass

from podwall.core.types import Direction

__all__ = ["MAX_RECORD", "TlsHit", "TlsWatch", "looks_like_tls"]

CT_CHANGE_CIPHER_SPEC, CT_HEARTBEAT = 20, 24
MAX_RECORD = (1 << 14) + 2048  # the largest TLSCiphertext (RFC 8446 5.2)
HB_REQUEST = 1
SSL2_CLIENT_HELLO = 1
_START, _RECORDS, _OFF = 0, 1, 2


def looks_like_tls(data: bytes) -> bool:
    """True when `data` starts like a TLS record (content type 20-24, version 3.x) or an SSLv2 record."""
    if not data:
        return False
    first = data[0]
    if first & 0x80:
        return True
    return 20 <= first <= 24 and (len(data) < 2 or data[1] == 3)


@dataclass(frozen=True, slots=True)
class TlsHit:
    """One record-layer finding: `key` is the threat, `message` says what was seen."""

    key: str
    message: str
    detail: dict[str, int]


class _Side:
    __slots__ = ("ccs", "hb", "hb_len", "hdr", "last_hb", "remaining", "state")

    def __init__(self) -> None:
        self.state = _START
        self.hdr = bytearray()  # a record header (or the SSLv2 hello's first bytes) being collected
        self.remaining = 0  # bytes of the current record still to pass
        self.ccs = False  # ChangeCipherSpec sent: this side's records are encrypted from now on
        self.hb = bytearray()  # the first bytes of a plaintext heartbeat being collected
        self.hb_len = -1  # length of the heartbeat record whose first bytes are wanted (-1: none)
        self.last_hb = -1  # length of this side's latest heartbeat record


class TlsWatch:
    """The record layer of both directions of one connection; `feed` returns what it found."""

    __slots__ = ("_growth", "_overread", "_sides")

    def __init__(self, min_overread: int = 1, response_growth: int = 1024) -> None:
        self._overread = min_overread
        self._growth = response_growth
        self._sides = (_Side(), _Side())

    @property
    def active(self) -> bool:
        """False once neither direction is followed any more."""
        return any(side.state != _OFF for side in self._sides)

    def feed(self, direction: Direction, data: bytes) -> list[TlsHit]:
        side = self._sides[direction]
        hits: list[TlsHit] = []
        pos, n = 0, len(data)
        while pos < n and side.state != _OFF:
            if side.state == _START:
                pos = self._start(side, direction, data, pos, hits)
            elif side.remaining:
                take = min(side.remaining, n - pos)
                if side.hb_len >= 0:
                    self._heartbeat_bytes(side, direction, data[pos : pos + take], hits)
                side.remaining -= take
                pos += take
            else:
                pos = self._header(side, direction, data, pos, hits)
        return hits

    def _start(self, side: _Side, direction: Direction, data: bytes, pos: int, hits: list[TlsHit]) -> int:
        if not side.hdr and not looks_like_tls(data[pos : pos + 2]):
            side.state = _OFF
            return pos
        if not (data[pos] if not side.hdr else side.hdr[0]) & 0x80:
            side.state = _RECORDS
            return pos
        # SSLv2: only the ClientHello's header matters (11 bytes: length, type, version, three lengths).
        need = 11 - len(side.hdr)
        side.hdr += data[pos : pos + need]
        pos += min(need, len(data) - pos)
        if len(side.hdr) < 11:
            return pos
        h = side.hdr
        side.state = _OFF
        if direction == Direction.C2S and h[2] == SSL2_CLIENT_HELLO:
            length = ((h[0] & 0x7F) << 8) | h[1]
            ciphers = (h[5] << 8) | h[6]
            session_id = (h[7] << 8) | h[8]
            challenge = (h[9] << 8) | h[10]
            room = length - 9 - session_id - challenge
            if ciphers > room:
                hits.append(
                    TlsHit(
                        "sslv2_cipher_overflow",
                        f"SSLv2 ClientHello declares {ciphers} bytes of cipher specs where its record leaves {room}",
                        {"cipher_specs": ciphers, "room": room, "record": length},
                    )
                )
        side.hdr.clear()
        return pos

    def _header(self, side: _Side, direction: Direction, data: bytes, pos: int, hits: list[TlsHit]) -> int:
        need = 5 - len(side.hdr)
        side.hdr += data[pos : pos + need]
        pos += min(need, len(data) - pos)
        if len(side.hdr) < 5:
            return pos
        h = side.hdr
        content_type, major, length = h[0], h[1], (h[3] << 8) | h[4]
        side.hdr.clear()
        if not 20 <= content_type <= 24 or major != 3 or length > MAX_RECORD:
            side.state = _OFF  # not (or no longer) TLS records: stop rather than guess
            return pos
        side.remaining = length
        if content_type == CT_CHANGE_CIPHER_SPEC:
            side.ccs = True
        elif content_type == CT_HEARTBEAT:
            self._heartbeat(side, direction, length, hits)
        return pos

    def _heartbeat(self, side: _Side, direction: Direction, length: int, hits: list[TlsHit]) -> None:
        other = self._sides[1 - direction]
        if other.last_hb >= 0 and length > other.last_hb + self._growth:
            hits.append(
                TlsHit(
                    "tls_heartbleed",
                    f"a {length}-byte heartbeat answered a {other.last_hb}-byte one (memory leaking back)",
                    {"record": length, "request_record": other.last_hb},
                )
            )
        side.last_hb = length
        if not side.ccs:
            side.hb_len = length
            side.hb.clear()
            if length < 3:
                self._judge_heartbeat(side, hits)

    def _heartbeat_bytes(self, side: _Side, direction: Direction, chunk: bytes, hits: list[TlsHit]) -> None:
        side.hb += chunk[: 3 - len(side.hb)]
        if len(side.hb) >= 3:
            self._judge_heartbeat(side, hits)

    def _judge_heartbeat(self, side: _Side, hits: list[TlsHit]) -> None:
        length, hb = side.hb_len, side.hb
        side.hb_len = -1
        if len(hb) < 3:
            return  # a heartbeat too short to hold its own header: the peer rejects it
        if hb[0] != HB_REQUEST:
            return
        claimed = (hb[1] << 8) | hb[2]
        overread = claimed - (length - 3)
        if overread >= self._overread:
            hits.append(
                TlsHit(
                    "tls_heartbleed",
                    f"heartbeat request claims {claimed} payload bytes in a {length}-byte record "
                    f"({overread} bytes past its end)",
                    {"payload_length": claimed, "record": length, "overread": overread},
                )
            )
