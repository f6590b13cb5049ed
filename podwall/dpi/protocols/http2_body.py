"""HTTP/2 message bodies captured for inspection (the WAF, DLP), with memory bounded per connection.

Each side of a stream (request, response) has a `BodyCapture` that counts its DATA payload
(padding already removed) and keeps its first `cap` bytes: HTTP/1's `BODY_CAPTURE` (64 KiB),
at most `Limits.parser_buffer`, as the HTTP/1 parser does. The request captures of a connection
share one `BodyBudget` of `BUDGET_BODIES` x `cap` bytes held at once, its response captures
another, so that many concurrent streams cannot make a connection hold 128 x 2 x 64 KiB, and
slow responses cannot crowd out requests: past the budget, bytes are counted but not kept, and
the capture says so (`truncated`, `over_budget`). A request body is held only until it is
reported (at its end or at the cap), a response body until the response is.

gRPC streams (request content-type `application/grpc*`) carry length-prefixed messages
(1-byte compressed flag, 4-byte big-endian length, the message). Their capture keeps the
messages without the prefixes, concatenated: for protobuf that is itself a valid message (the
fields of all of them, merged), so inspection sees the string fields as sent. Compressed messages
(flag 1) are inflated when the side's `grpc-encoding` is `gzip` or `deflate` (zlib), the only
codecs the Python standard library reads: never more output than the capture has room for, so
a decompression bomb costs at most the cap; a message that does not inflate is counted
(`inflate_errors`) and skipped. Other codecs (snappy, zstd) are counted and skipped.
"""

from __future__ import annotations

import zlib
from typing import Any

from podwall.dpi.protocols.http1 import BODY_CAPTURE

__all__ = ["BODY_CAPTURE", "BUDGET_BODIES", "BodyBudget", "BodyCapture", "request_body_fields", "response_body_fields"]

BUDGET_BODIES = 4  # full-size bodies held at once per connection and direction: the budget is this x the cap
_WBITS = {"gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}  # grpc-encoding -> zlib's container


class BodyBudget:
    """The body bytes the captures of one connection and direction may hold together."""

    __slots__ = ("held", "limit")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.held = 0


class BodyCapture:
    """One stream side's DATA: counted, the first bytes kept, gRPC messages counted and unframed."""

    __slots__ = (
        "body",
        "budget",
        "cap",
        "codec",
        "compressed",
        "framed",
        "inflate_errors",
        "inflated",
        "inflater",
        "left",
        "messages",
        "over_budget",
        "prefix",
        "seen",
        "skip",
        "taken",
        "truncated",
    )

    def __init__(self, cap: int, budget: BodyBudget, framed: bool) -> None:
        self.cap = cap
        self.budget = budget
        self.framed = framed  # gRPC length-prefixed messages
        self.body = bytearray()
        self.seen = 0  # DATA payload bytes, prefixes included
        self.truncated = False  # bytes seen were not kept (cap or budget)
        self.over_budget = False  # ... because the connection's budget was spent, before the cap
        self.taken = False  # the body went into an event: nothing more is kept
        self.messages = 0
        self.compressed = 0  # compressed messages, skipped
        self.left = 0  # bytes of the current message still to come
        self.skip = False  # the current message is compressed
        self.prefix = bytearray()
        self.codec: str | None = None  # the side's grpc-encoding, lower-cased
        self.inflater: Any = None  # zlib's decompressor of the current compressed message, if readable
        self.inflated = 0  # compressed messages inflated (at least in part)
        self.inflate_errors = 0

    @property
    def full(self) -> bool:
        return len(self.body) >= self.cap

    def feed(self, buf: bytearray, start: int, end: int) -> None:
        """Take `buf[start:end]`, the next bytes of this side's DATA payload."""
        if end <= start:
            return
        self.seen += end - start
        if not self.framed:
            self._keep(buf, start, end)
            return
        pos = start
        prefix = self.prefix
        while pos < end:
            if self.left:
                step = min(self.left, end - pos)
                if not self.skip:
                    self._keep(buf, pos, pos + step)
                elif self.inflater is not None:
                    self._inflate(bytes(buf[pos : pos + step]))
                self.left -= step
                if not self.left and self.inflater is not None:
                    if not self.inflater.eof:  # the message ended inside its compressed stream
                        self.inflate_errors += 1
                    self.inflater = None
                pos += step
                continue
            if not prefix and end - pos >= 5:  # the usual case: a whole prefix at hand
                flag = buf[pos]
                self.left = int.from_bytes(buf[pos + 1 : pos + 5], "big")
                pos += 5
            else:
                take = min(5 - len(prefix), end - pos)
                prefix += buf[pos : pos + take]
                pos += take
                if len(prefix) < 5:
                    continue
                flag = prefix[0]
                self.left = int.from_bytes(prefix[1:5], "big")
                prefix.clear()
            self.messages += 1
            self.skip = bool(flag & 1)
            self.compressed += self.skip
            self.inflater = None
            wbits = _WBITS.get(self.codec or "") if self.skip else None
            if wbits is not None and self.left and not self.taken and self._room() > 0:
                self.inflater = zlib.decompressobj(wbits)
                self.inflated += 1

    def _room(self) -> int:
        """Bytes the capture may still keep: its cap's room, within the connection's budget."""
        return min(self.cap - len(self.body), self.budget.limit - self.budget.held)

    def _inflate(self, data: bytes) -> None:
        """Inflate the next bytes of a compressed message into the capture, never past its room
        (so inflating costs at most the room, whatever the ratio). A gzip message may hold
        several gzip members, which servers read one after another: so is it read here."""
        while data:
            room = self._room()
            if room <= 0 or self.taken:
                self.truncated = True
                self.over_budget = self.over_budget or self.cap > len(self.body)
                self.inflater = None
                return
            try:
                out = self.inflater.decompress(data, room)
            except zlib.error:
                self.inflate_errors += 1
                self.inflater = None
                return
            if out:
                self._keep(out, 0, len(out))
            if self.inflater.unconsumed_tail:  # more output than room: the rest is not kept
                self.truncated = True
                self.over_budget = self.over_budget or len(self.body) < self.cap
                self.inflater = None
                return
            if not self.inflater.eof:
                return
            data = self.inflater.unused_data
            if data and self.codec == "gzip":
                self.inflater = zlib.decompressobj(_WBITS["gzip"])
            elif data:  # bytes after a zlib stream: not part of the message's data
                self.inflate_errors += 1
                self.inflater = None
                return

    def _keep(self, buf: bytearray | bytes, start: int, end: int) -> None:
        if self.taken:
            return
        if len(self.body) >= self.cap:
            self.truncated = True  # the common case once the cap is reached: nothing more to weigh
            return
        budget = self.budget
        n = end - start
        room = self.cap - len(self.body)
        spare = budget.limit - budget.held
        if spare < min(n, room):
            self.over_budget = True
            room = spare
        if n > room:
            self.truncated = True
            n = max(room, 0)
        if n:
            self.body += buf[start : start + n]
            budget.held += n

    def take(self) -> bytes:
        """The body kept so far, for an event; the capture keeps nothing after this."""
        data = bytes(self.body)
        self.release()
        self.taken = True
        return data

    def release(self) -> None:
        """Give the bytes held back to the connection's budget."""
        self.budget.held -= len(self.body)
        self.body = bytearray()


def request_body_fields(request: BodyCapture, complete: bool, grpc: bool) -> dict[str, Any]:
    """A `request_body` event's body fields (its capture is taken: it keeps nothing more)."""
    fields: dict[str, Any] = {
        # reported at the cap, before the stream ended: whether bytes followed is not known yet
        "body_truncated": request.truncated or (request.full and not complete),
        "body_over_budget": request.over_budget,
        "body": request.take(),
        "request_bytes": request.seen,
        "complete": complete,
    }
    if grpc:
        fields.update(request_messages=request.messages, request_compressed=request.compressed)
        if request.compressed:
            fields.update(request_inflated=request.inflated, request_inflate_errors=request.inflate_errors)
    return fields


def response_body_fields(request: BodyCapture, response: BodyCapture, complete: bool, grpc: bool) -> dict[str, Any]:
    """A `response` event's body fields and both sides' counts (the response capture is taken)."""
    fields: dict[str, Any] = {
        "request_bytes": request.seen,
        "response_bytes": response.seen,
        "complete": complete,
        "body_truncated": response.truncated or (response.full and not complete),
        "body_over_budget": response.over_budget,
        "body": response.take(),
    }
    if grpc:
        fields.update(
            request_messages=request.messages,
            response_messages=response.messages,
            response_compressed=response.compressed,
        )
        if response.compressed:
            fields.update(response_inflated=response.inflated, response_inflate_errors=response.inflate_errors)
    return fields
