"""The h2c/gRPC frame parser: one sans-IO Http2Parser per connection, both directions.

It reads h2c from prior knowledge (the client's connection preface) or from an HTTP/1.1
`Upgrade: h2c` request answered by `101` (RFC 9113 3.3, RFC 7540 3.2), keeps one HPACK decoder
per direction fed with every header block in order (its dynamic table must stay in sync, so a
block that fails to decode is a ProtocolError), and reports a `request` per client HEADERS
block and a `response` once the server ends the stream (trailers carry gRPC's status), plus
`reset` and `goaway`. DATA streams through each stream's body capture (`http2_body`: counted,
gRPC messages counted and unframed, the first 64 KiB kept): the response carries its body, and
a request whose HEADERS did not end the stream is followed by one `request_body` event when the
client ends the stream, when the capture is full, or when the stream ends first. The request
itself is still reported at its HEADERS, so that L7 policy judges a call (a streaming gRPC call
above all) before its body has gone through. Detection lives in `http2_detect`, shared wire
facts in `http2_frames`.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote

from podwall.core.errors import ProtocolError
from podwall.core.limits import DEFAULT_LIMITS, Limits
from podwall.core.types import Direction
from podwall.dpi.base import L7Event
from podwall.dpi.protocols.http1 import host_without_port
from podwall.dpi.protocols.http2_body import (
    BODY_CAPTURE,
    BUDGET_BODIES,
    BodyBudget,
    BodyCapture,
    request_body_fields,
    response_body_fields,
)
from podwall.dpi.protocols.http2_frames import (
    ACK,
    APP_GRPC,
    APP_HTTP2,
    CONTINUATION,
    DATA,
    END_HEADERS,
    END_STREAM,
    ERROR_CODES,
    GOAWAY,
    HEAD_END,
    HEADERS,
    HELD_HEADER_BYTES,
    HELD_PATH,
    MAX_STREAMS,
    PADDED,
    PING,
    PREFACE,
    PRIORITY,
    PUSH_PROMISE,
    REQUEST_LINE,
    RST_STREAM,
    SETTINGS,
    STATUS_LINE,
    TEXT_CAP,
    WINDOW_UPDATE,
    check_settings,
    control_frame_ok,
    decode_block,
    decode_first_block,
    first_header,
    frame_error,
    header_fragment,
    http1_headers,
    is_grpc,
    kept_headers,
    new_decoder,
    request_fields,
    split_grpc_path,
    upgrades_to_h2c,
)
from podwall.dpi.wire import StreamBuffer

__all__ = ["Http2Parser"]

# States of one direction.
_START, _HTTP1_HEAD, _HTTP1_BODY, _PREFACE, _FRAMES, _STOPPED = range(6)


class _Stream:
    """What is known of one stream until its response is reported."""

    __slots__ = ("body_due", "fields", "final", "path", "request", "response", "stream_id")

    def __init__(
        self, stream_id: int, path: str | None, framed: bool, cap: int, budgets: tuple[BodyBudget, BodyBudget]
    ) -> None:
        self.stream_id = stream_id
        self.path = path
        self.final = False  # the final (non-1xx) response headers were seen
        self.fields: dict[str, Any] = {}
        self.request = BodyCapture(cap, budgets[0], framed)
        self.response = BodyCapture(cap, budgets[1], framed)
        self.body_due = False  # a `request_body` event is owed: the request's HEADERS did not end the stream

    def release(self) -> None:
        self.request.release()
        self.response.release()


class _Side:
    """Parsing state of one direction."""

    __slots__ = (
        "block",
        "block_flags",
        "block_sid",
        "block_type",
        "body_left",
        "data_end",
        "data_left",
        "data_sid",
        "decoder",
        "direction",
        "expect_settings",
        "fresh",
        "in_data",
        "pad_left",
        "scan",
        "state",
        "stream",
    )

    def __init__(self, direction: Direction, limits: Limits) -> None:
        self.direction = direction
        what = "HTTP/2 client bytes" if direction == Direction.C2S else "HTTP/2 server bytes"
        self.stream = StreamBuffer(limits.parser_buffer, what)
        self.decoder = new_decoder(limits)
        self.fresh = True  # the decoder has read no header block yet
        self.state = _START
        self.expect_settings = True  # each side's first frame is its SETTINGS (the preface)
        self.block: bytearray | None = None  # a header block waiting for CONTINUATION frames
        self.block_sid = 0
        self.block_type = 0
        self.block_flags = 0
        self.in_data = False
        self.data_sid = 0
        self.data_left = 0
        self.pad_left = 0
        self.data_end = False
        self.body_left = 0  # body bytes of the HTTP/1.1 upgrade request
        self.scan = 0  # bytes of an HTTP/1.1 head already searched for its end


class Http2Parser:
    """Sans-IO h2c parser for one connection; `app` names its events (`http2` or `grpc`)."""

    def __init__(self, app: str = APP_HTTP2, limits: Limits = DEFAULT_LIMITS) -> None:
        self.app = app
        self._grpc = app == APP_GRPC
        self._limits = limits
        self._limit = limits.parser_buffer
        self._body_cap = min(BODY_CAPTURE, limits.parser_buffer)
        # requests and responses each have their own budget: slow responses cannot crowd out requests
        self._budgets = (BodyBudget(BUDGET_BODIES * self._body_cap), BodyBudget(BUDGET_BODIES * self._body_cap))
        self._client = _Side(Direction.C2S, limits)
        self._server = _Side(Direction.S2C, limits)
        self._streams: dict[int, _Stream] = {}
        self._last_client_sid = 0  # new client streams must use increasing ids (RFC 9113 5.1.1)
        self._server_name: str | None = None
        self.finished = False  # True when an h2c upgrade was refused: the rest is HTTP/1.1

    def server_name(self) -> str | None:
        return self._server_name

    def feed(self, direction: Direction, data: bytes) -> list[L7Event]:
        side = self._client if direction == Direction.C2S else self._server
        if self.finished or side.state == _STOPPED or not data:
            return []
        side.stream.append(data)
        out: list[L7Event] = []
        self._run(side, out)
        side.stream.compact()
        return out

    def close(self) -> list[L7Event]:
        """The connection ended: owed request bodies and streams with response headers are reported as they stand."""
        out: list[L7Event] = []
        for stream in list(self._streams.values()):
            self._drop(stream, out)
        self._streams.clear()
        self._client.state = self._server.state = _STOPPED
        return out

    # -- driving -------------------------------------------------------------------------

    def _run(self, side: _Side, out: list[L7Event]) -> None:
        while not self.finished:
            state = side.state
            if state == _FRAMES:
                progressed = self._frames(side, out)
            elif state == _START:
                progressed = self._start(side)
            elif state == _PREFACE:
                progressed = self._preface(side)
            elif state == _HTTP1_HEAD:
                progressed = self._http1_head(side, out)
            elif state == _HTTP1_BODY:
                stream = side.stream
                step = min(side.body_left, stream.available())
                known = self._streams.get(1)
                if known is not None:
                    known.request.feed(stream.buf, stream.pos, stream.pos + step)
                stream.pos += step
                side.body_left -= step
                if side.body_left == 0:
                    side.state = _PREFACE
                    self._end_stream(side, 1, out)
                elif known is not None:
                    self._body_at_cap(known, out)
                progressed = step > 0 or side.body_left == 0
            else:
                side.stream.clear()
                progressed = False
            if not progressed:
                return

    def _start(self, side: _Side) -> bool:
        """Tell prior knowledge (preface, or frames from the server) from an HTTP/1.1 upgrade."""
        stream = side.stream
        head = bytes(stream.buf[stream.pos : stream.pos + len(PREFACE)])
        if side.direction == Direction.S2C:
            if not head:
                return False
            side.state = _HTTP1_HEAD if head[:1] == b"H" else _FRAMES
            return True
        if PREFACE.startswith(head):
            if len(head) < len(PREFACE):
                return False
            side.state = _PREFACE
            return True
        side.state = _HTTP1_HEAD
        return True

    def _preface(self, side: _Side) -> bool:
        stream = side.stream
        head = bytes(stream.buf[stream.pos : stream.pos + len(PREFACE)])
        if not PREFACE.startswith(head):
            raise frame_error(f"client connection preface expected, got {head[:24]!r}")
        if len(head) < len(PREFACE):
            return False
        stream.pos += len(PREFACE)
        side.state = _FRAMES
        return True

    # -- the HTTP/1.1 upgrade ------------------------------------------------------------

    def _http1_head(self, side: _Side, out: list[L7Event]) -> bool:
        stream = side.stream
        buf, pos = stream.buf, stream.pos
        m = HEAD_END.search(buf, pos + side.scan)
        if m is None:
            if len(buf) - pos > self._limit:
                raise ProtocolError(f"HTTP/2 upgrade: HTTP/1.1 head exceeds {self._limit} bytes")
            side.scan = max(0, len(buf) - pos - 3)
            return False
        side.scan = 0
        if m.end() - pos > self._limit:
            raise ProtocolError(f"HTTP/2 upgrade: HTTP/1.1 head exceeds {self._limit} bytes")
        block = bytes(buf[pos : m.start()])
        stream.pos = m.end()
        line, _, rest = block.partition(b"\n")
        headers = http1_headers(rest) if rest else []
        if headers is None:
            raise ProtocolError(f"HTTP/2 upgrade: invalid header line in {block[:80]!r}")
        if side.direction == Direction.C2S:
            self._upgrade_request(side, line, headers, out)
        else:
            self._upgrade_response(side, line, headers, out)
        return True

    def _upgrade_request(self, side: _Side, line: bytes, headers: list[tuple[str, str]], out: list[L7Event]) -> None:
        m = REQUEST_LINE.fullmatch(line)
        if m is None:
            raise ProtocolError(f"HTTP/2 upgrade: invalid request line {line[:80]!r}")
        if not upgrades_to_h2c(headers):
            raise ProtocolError("HTTP/2 upgrade: the request does not ask for h2c (Upgrade and HTTP2-Settings)")
        if any(n == "transfer-encoding" for n, _ in headers):
            raise ProtocolError("HTTP/2 upgrade: a request body with Transfer-Encoding is not supported")
        length = first_header(headers, "content-length") or "0"
        if not length.isdigit() or len(length) > 18:
            raise ProtocolError(f"HTTP/2 upgrade: invalid Content-Length {length[:40]!r}")
        pseudo = [
            (":method", m.group(1).decode("ascii")),
            (":path", m.group(2).decode("latin-1")),
            (":scheme", "http"),
            (":authority", first_header(headers, "host") or ""),
        ]
        side.body_left = int(length)
        # The upgrade request is stream 1 (RFC 7540 3.2), half-closed by the client once its body is sent.
        self._request(1, pseudo + [h for h in headers if h[0] != "host"], out, end=not side.body_left, upgrade=True)
        side.state = _HTTP1_BODY if side.body_left else _PREFACE

    def _upgrade_response(self, side: _Side, line: bytes, headers: list[tuple[str, str]], out: list[L7Event]) -> None:
        m = STATUS_LINE.fullmatch(line)
        if m is None:
            raise ProtocolError(f"HTTP/2 upgrade: invalid status line {line[:80]!r}")
        status = int(m.group(1))
        if status == 101:
            side.state = _FRAMES
            return
        if 100 <= status < 200:
            return  # 100 Continue and friends come before the answer to the upgrade
        # Refused: the connection stays HTTP/1.1, which is the `http` parser's business.
        stream = self._streams.get(1) or self._open(1, None, self._grpc, out)
        stream.final = True
        stream.fields.update(
            status=status,
            content_type=first_header(headers, "content-type"),
            headers=kept_headers(headers, HELD_HEADER_BYTES),
        )
        self._respond(stream, out, complete=True)
        self.finished = True

    # -- frames --------------------------------------------------------------------------

    def _frames(self, side: _Side, out: list[L7Event]) -> bool:
        stream = side.stream
        buf = stream.buf
        if side.in_data:
            return self._data(side, out)
        pos = stream.pos
        available = len(buf) - pos
        if available < 9:
            return False
        length = int.from_bytes(buf[pos : pos + 3], "big")
        ftype, flags = buf[pos + 3], buf[pos + 4]
        sid = int.from_bytes(buf[pos + 5 : pos + 9], "big") & 0x7FFFFFFF
        who = "client" if side.direction == Direction.C2S else "server"
        if side.expect_settings:
            if ftype != SETTINGS or flags & ACK:
                raise frame_error(f"the {who}'s first frame is type {ftype}, not SETTINGS")
            side.expect_settings = False
        if side.block is not None and ftype != CONTINUATION:
            raise frame_error(f"frame type {ftype} inside a header block of stream {side.block_sid}")
        if ftype == DATA:
            if sid == 0:
                raise frame_error("DATA on stream 0")
            padded = 1 if flags & PADDED else 0
            if available < 9 + padded:
                return False
            pad = buf[pos + 9] if padded else 0
            size = length - padded - pad
            if size < 0:
                raise frame_error(f"DATA padding {pad} exceeds the {length}-byte frame on stream {sid}")
            stream.pos = pos + 9 + padded
            side.in_data = True
            side.data_sid, side.data_left, side.pad_left = sid, size, pad
            side.data_end = bool(flags & END_STREAM)
            self._data(side, out)
            return True
        # Every other frame is read whole: check its size before waiting for it.
        if length > self._limit:
            raise frame_error(f"{who} frame type {ftype} of {length} bytes exceeds {self._limit}")
        if available < 9 + length:
            return False
        payload = bytes(buf[pos + 9 : pos + 9 + length])
        stream.pos = pos + 9 + length
        self._frame(side, ftype, flags, sid, payload, out)
        return True

    def _data(self, side: _Side, out: list[L7Event]) -> bool:
        """Stream a DATA payload through its stream's body capture (counted, the first bytes kept)."""
        stream = side.stream
        start = stream.pos
        end = len(stream.buf)
        request = side.direction == Direction.C2S
        known = self._streams.get(side.data_sid)
        if side.data_left:
            n = min(side.data_left, end - start)
            if known is not None and n:
                if request:
                    self._make_room(known, n, out)
                (known.request if request else known.response).feed(stream.buf, start, start + n)
            side.data_left -= n
            start += n
        if not side.data_left and side.pad_left:
            n = min(side.pad_left, end - start)
            side.pad_left -= n
            start += n
        stream.pos = start
        done = not (side.data_left or side.pad_left)
        if done:
            side.in_data = False
        if side.data_end:
            if done:
                self._end_stream(side, side.data_sid, out)
        elif request and known is not None:
            # A frame that ends the stream completes the body; otherwise a full capture is reported now.
            self._body_at_cap(known, out)
        return done

    def _frame(self, side: _Side, ftype: int, flags: int, sid: int, payload: bytes, out: list[L7Event]) -> None:
        length = len(payload)
        if ftype in (HEADERS, PUSH_PROMISE):
            if sid == 0:
                raise frame_error(f"frame type {ftype} on stream 0")
            if ftype == PUSH_PROMISE and side.direction == Direction.C2S:
                raise frame_error("PUSH_PROMISE from the client")
            fragment = header_fragment(ftype, flags, payload)
            side.block_type, side.block_flags, side.block_sid = ftype, flags, sid
            if flags & END_HEADERS:
                self._header_block(side, fragment, out)
            else:
                side.block = bytearray(fragment)
        elif ftype == CONTINUATION:
            if side.block is None or sid != side.block_sid:
                raise frame_error(f"CONTINUATION on stream {sid} without a header block in progress")
            side.block += payload
            if len(side.block) > self._limit:
                raise frame_error(f"header block on stream {sid} exceeds {self._limit} bytes")
            if flags & END_HEADERS:
                block, side.block = bytes(side.block), None
                self._header_block(side, block, out)
        elif ftype == SETTINGS:
            if sid or length % 6 or (flags & ACK and length):
                raise frame_error(f"malformed SETTINGS ({length} bytes, stream {sid}, flags {flags:#x})")
            check_settings(payload)
        elif ftype == RST_STREAM:
            if sid == 0 or length != 4:
                raise frame_error(f"malformed RST_STREAM ({length} bytes, stream {sid})")
            code = int.from_bytes(payload, "big")
            out.append(
                L7Event(
                    self.app,
                    "reset",
                    side.direction,
                    {"stream_id": sid, "error_code": code, "error": ERROR_CODES.get(code, f"0x{code:x}")},
                )
            )
            known = self._streams.pop(sid, None)
            if known is not None:
                self._drop(known, out)
        elif ftype == GOAWAY:
            if sid or length < 8:
                raise frame_error(f"malformed GOAWAY ({length} bytes, stream {sid})")
            code = int.from_bytes(payload[4:8], "big")
            fields = {
                "last_stream_id": int.from_bytes(payload[:4], "big") & 0x7FFFFFFF,
                "error_code": code,
                "error": ERROR_CODES.get(code, f"0x{code:x}"),
                "debug": payload[8 : 8 + TEXT_CAP].decode("utf-8", "backslashreplace"),
            }
            out.append(L7Event(self.app, "goaway", side.direction, fields))
        elif ftype in (PING, WINDOW_UPDATE, PRIORITY) and not control_frame_ok(ftype, length, sid):
            raise frame_error(f"malformed frame type {ftype} ({length} bytes, stream {sid})")
        # Unknown types are extensions and are ignored (RFC 9113 5.5).

    # -- header blocks and streams -------------------------------------------------------

    def _header_block(self, side: _Side, block: bytes, out: list[L7Event]) -> None:
        sid = side.block_sid
        if side.fresh:
            side.fresh = False
            side.decoder, headers = decode_first_block(side.decoder, block, f"on stream {sid}")
        else:
            headers = decode_block(side.decoder, block, f"on stream {sid}")
        if side.block_type == PUSH_PROMISE:
            return  # decoded only to keep the server's HPACK table in step
        if side.direction == Direction.C2S:
            self._request(sid, headers, out, end=bool(side.block_flags & END_STREAM))
        else:
            self._response_headers(sid, side.block_flags, headers, out)

    def _open(self, sid: int, path: str | None, framed: bool, out: list[L7Event]) -> _Stream:
        streams = self._streams
        held = streams.pop(sid, None)
        if held is not None:  # opened before by the server's HEADERS: give its bodies back first
            self._flush_body(held, out)
            held.release()
        if len(streams) >= MAX_STREAMS:
            # Forget the oldest stream that owes no request body (else the oldest): its response
            # goes unreported; a body it owed is reported as it stands, marked truncated, as the
            # rest of it will not be seen.
            victim = next((k for k, s in streams.items() if not s.body_due), next(iter(streams)))
            oldest = streams.pop(victim)
            self._flush_body(oldest, out, more=True)
            oldest.release()
        stream = streams[sid] = _Stream(sid, path, framed, self._body_cap, self._budgets)
        return stream

    def _request(
        self, sid: int, headers: list[tuple[str, str]], out: list[L7Event], end: bool, upgrade: bool = False
    ) -> None:
        if sid % 2 == 0:
            raise frame_error(f"the client sent HEADERS on even-numbered stream {sid}")
        if sid <= self._last_client_sid:
            # trailers of a stream already open (or already reported): they may end its body
            if end:
                self._end_stream(self._client, sid, out)
            return
        self._last_client_sid = sid
        fields = request_fields(sid, headers, self._limit)
        fields["end_stream"] = end
        if upgrade:
            fields["upgrade"] = True
        path, authority = fields["path"], fields["authority"]
        grpc = is_grpc(fields["content_type"])
        if self._grpc:
            service, rpc = split_grpc_path(path) if grpc else (None, None)
            fields.update(http_method=fields["method"], service=service, method=rpc)
        stream = self._open(sid, path[:HELD_PATH] if path else path, grpc, out)
        stream.request.codec = _codec(headers)
        stream.body_due = not end
        if self._server_name is None and authority:
            self._server_name = host_without_port(authority)
        out.append(L7Event(self.app, "request", Direction.C2S, fields))

    def _response_headers(self, sid: int, flags: int, headers: list[tuple[str, str]], out: list[L7Event]) -> None:
        status_text = first_header(headers, ":status")
        stream = self._streams.get(sid)
        if stream is None:
            if status_text is None:
                return  # trailers of a stream already reported or forgotten
            stream = self._open(sid, None, self._grpc, out)
        fields = stream.fields
        if not stream.final:
            status_text = status_text or ""
            if len(status_text) != 3 or not status_text.isdigit():
                raise frame_error(f"response on stream {sid} with invalid :status {status_text[:20]!r}")
            status = int(status_text)
            if status < 200:
                if flags & END_STREAM:
                    raise frame_error(f"informational response {status} ends stream {sid}")
                return
            stream.final = True
            stream.response.codec = _codec(headers)
            fields.update(
                status=status,
                content_type=first_header(headers, "content-type"),
                headers=kept_headers(headers, HELD_HEADER_BYTES),
            )
        # Trailers, or a trailers-only gRPC response, carry the call's outcome.
        grpc_status = first_header(headers, "grpc-status")
        if grpc_status is not None:
            fields["grpc_status"] = int(grpc_status) if grpc_status.isdigit() and len(grpc_status) < 10 else None
        grpc_message = first_header(headers, "grpc-message")
        if grpc_message is not None:
            fields["grpc_message"] = unquote(grpc_message[: TEXT_CAP * 3])[:TEXT_CAP]
        if flags & END_STREAM:
            self._end_stream(self._server, sid, out)

    def _end_stream(self, side: _Side, sid: int, out: list[L7Event]) -> None:
        stream = self._streams.get(sid)
        if stream is None:
            return
        if side.direction == Direction.C2S:
            # the request body ended; the response is what completes the exchange
            if stream.body_due:
                self._request_body(stream, out, complete=True)
            return
        del self._streams[sid]
        self._drop(stream, out, complete=True)

    def _drop(self, stream: _Stream, out: list[L7Event], complete: bool = False) -> None:
        """A stream is over: report what it still owes (its request body, its response) and free its bodies."""
        if stream.final:
            self._respond(stream, out, complete)
        else:
            self._flush_body(stream, out)
        stream.release()

    def _body_at_cap(self, stream: _Stream, out: list[L7Event]) -> None:
        if stream.body_due and stream.request.full:
            self._request_body(stream, out, complete=False)

    def _flush_body(self, stream: _Stream, out: list[L7Event], more: bool = False) -> None:
        """The request body is reported as it stands (the stream ends before the client ended
        it); `more`: bytes of it may still come that will not be seen (truncated)."""
        if stream.body_due:
            self._request_body(stream, out, complete=False)
            if more:
                out[-1].fields["body_truncated"] = True

    def _make_room(self, current: _Stream, n: int, out: list[L7Event]) -> None:
        """Request bodies held by other streams give way to this one's next `n` bytes when the
        connection's budget is spent: reported as they stand, oldest first (marked truncated),
        so that holding bodies open cannot keep a later request's body from being captured."""
        capture = current.request
        # a compressed message may inflate to the whole cap: its wire size says nothing of that
        need = capture.cap - len(capture.body) if capture.codec else min(n, capture.cap - len(capture.body))
        budget = self._budgets[0]
        if need <= 0 or capture.taken or budget.limit - budget.held >= need:
            return
        for other in list(self._streams.values()):
            if budget.limit - budget.held >= need:
                break
            if other is not current and other.body_due and other.request.body:
                self._flush_body(other, out, more=True)

    def _request_body(self, stream: _Stream, out: list[L7Event], complete: bool) -> None:
        stream.body_due = False
        fields: dict[str, Any] = {"stream_id": stream.stream_id, "path": stream.path}
        fields.update(request_body_fields(stream.request, complete, self._grpc))
        out.append(L7Event(self.app, "request_body", Direction.C2S, fields))

    def _respond(self, stream: _Stream, out: list[L7Event], complete: bool) -> None:
        self._flush_body(stream, out)
        fields: dict[str, Any] = {
            "stream_id": stream.stream_id,
            "path": stream.path,
            "status": None,
            "content_type": None,
            "headers": [],
        }
        fields.update(stream.fields)
        fields.update(response_body_fields(stream.request, stream.response, complete, self._grpc))
        fields.setdefault("grpc_status", None)
        fields.setdefault("grpc_message", None)
        stream.release()
        out.append(L7Event(self.app, "response", Direction.S2C, fields))


def _codec(headers: list[tuple[str, str]]) -> str | None:
    """A side's gRPC message encoding (`grpc-encoding`), lower-cased; None for identity or absent."""
    value = first_header(headers, "grpc-encoding")
    return value.strip().lower() if value else None
