"""POP3 (RFC 1939, 2449, 2595, 5034): detection by the `+OK` greeting or a first command, and a parser.

The server greets with `+OK text`; the client sends `USER`/`PASS` (the password is never
kept) or `APOP name digest`, `CAPA`, `STLS`, `AUTH`, `STAT`, `LIST`, `RETR`, ... and
each gets `+OK` or `-ERR`, matched in order (commands may be pipelined). Replies to CAPA,
RETR, TOP and to LIST/UIDL without an argument go on until a line holding a single dot:
they are counted, never kept. SASL exchanges after `AUTH` (`+ ` challenges) are skipped.
`STLS` accepted turns the rest into TLS: the parser is finished.
"""

from __future__ import annotations

import re
from collections import deque
from typing import Any, ClassVar

from podwall.core.errors import ProtocolError
from podwall.core.limits import DEFAULT_LIMITS, Limits
from podwall.core.types import PROTO_TCP, Direction
from podwall.dpi.base import DetectContext, Detection, L7Event
from podwall.dpi.protocols.textline import DotBody, LineConversation, client_verb, is_text, text

__all__ = ["Pop3Detector", "Pop3Parser"]

APP = "pop3"
MASKED = "***"
MAX_PENDING = 256
_FIRST_VERBS = frozenset({b"CAPA", b"STLS", b"APOP", b"USER"})
_NEUTRAL = frozenset({b"QUIT", b"NOOP"})
_VERB = re.compile(rb"[A-Za-z]{3,8}")
_ALWAYS_MULTI = frozenset({b"CAPA", b"RETR", b"TOP"})
_MULTI_WITHOUT_ARGUMENT = frozenset({b"LIST", b"UIDL", b"AUTH"})
_GATED = frozenset({b"AUTH", b"STLS"})


class Pop3Detector:
    """Matches a `+OK text` greeting, or a client's CAPA/STLS/APOP/USER."""

    name: ClassVar[str] = APP
    transports: ClassVar[frozenset[int]] = frozenset({PROTO_TCP})
    ports: ClassVar[frozenset[int]] = frozenset({110})

    def __init__(self, limits: Limits = DEFAULT_LIMITS) -> None:
        self._limits = limits

    def detect(self, direction: Direction, data: bytes, ctx: DetectContext) -> Detection:
        if not data:
            return Detection.NEED_MORE
        if direction == Direction.C2S:
            return client_verb(data, _FIRST_VERBS, _NEUTRAL)
        head = data[:4]
        if b"+OK "[: len(head)] != head:
            return Detection.NO
        nl = data.find(b"\n", 0, 512)
        line = data[: len(data) if nl < 0 else nl].rstrip(b"\r")
        if not is_text(line):
            return Detection.NO
        if nl < 0:
            return Detection.NEED_MORE if len(data) < 512 else Detection.NO
        return Detection.MATCH if line[4:].strip() else Detection.NO

    def parser(self, ctx: DetectContext) -> Pop3Parser:
        return Pop3Parser(self._limits)


class Pop3Parser(LineConversation):
    """Sans-IO POP3 parser: `greeting`, `command` and `reply` events."""

    def __init__(self, limits: Limits = DEFAULT_LIMITS) -> None:
        super().__init__(limits, "POP3 command", "POP3 reply")
        self._pending: deque[tuple[bytes, bool]] = deque()  # (verb, whether +OK starts a multi-line reply)
        self._greeted = False
        self._gate = False  # AUTH/STLS sent: the client waits for the answer
        self._sasl = False  # a `+ ` challenge came: the next client line is a SASL response
        self._body = DotBody()
        self._reply: dict[str, Any] = {}

    def _client_run(self, out: list[L7Event]) -> None:
        while not self.finished and not self._gate:
            line = self._client.next_line()
            if line is None:
                return
            if self._sasl:
                self._sasl = False
                self._gate = True
                continue
            if not line.strip():
                continue
            verb, _, argument = line.partition(b" ")
            if not _VERB.fullmatch(verb):
                raise ProtocolError(f"POP3: not a command: {line[:40]!r}")
            verb = verb.upper()
            argument = argument.strip()
            if len(self._pending) >= MAX_PENDING:
                raise ProtocolError(f"POP3: more than {MAX_PENDING} commands without a reply")
            multi = verb in _ALWAYS_MULTI or (verb in _MULTI_WITHOUT_ARGUMENT and not argument)
            self._pending.append((verb, multi))
            self._gate = verb in _GATED
            fields: dict[str, Any] = {"verb": verb.decode(), "argument": text(argument) or None}
            if verb == b"PASS":
                fields["argument"] = MASKED
            elif verb == b"AUTH":
                fields["argument"] = text(argument.split(b" ", 1)[0]).upper() or None
            elif verb in (b"USER", b"APOP"):
                user = argument.split(b" ", 1)[0] if verb == b"APOP" else argument
                fields["user"] = text(user)
                if verb == b"APOP":
                    fields["argument"] = fields["user"]
            out.append(L7Event(APP, "command", Direction.C2S, fields))

    def _server_run(self, out: list[L7Event]) -> None:
        server = self._server
        while not self.finished:
            if self._body.active:
                if not self._body.run(server):
                    return
                if not self._body.active:
                    self._reply["size"] = self._body.size
                    out.append(L7Event(APP, "reply", Direction.S2C, self._reply))
                continue
            line = server.next_line()
            if line is None:
                return
            ok = line[:3] == b"+OK" and line[3:4] in (b"", b" ")
            if not ok and not (line[:4] == b"-ERR" and line[4:5] in (b"", b" ")):
                if line[:1] == b"+" and line[1:2] in (b"", b" ") and self._gate and self._pending:
                    self._sasl = True  # a SASL challenge: the AUTH is still pending
                    self._gate = False
                    continue
                raise ProtocolError(f"POP3: reply is neither +OK nor -ERR: {line[:40]!r}")
            message = text(line[4:] if ok else line[5:])
            if not self._greeted:
                self._greeted = True
                out.append(L7Event(APP, "greeting", Direction.S2C, {"ok": ok, "text": message}))
                continue
            verb, multi = self._pending.popleft() if self._pending else (None, False)
            self._gate = False
            fields: dict[str, Any] = {
                "ok": ok,
                "command": None if verb is None else verb.decode(),
                "text": message,
                "size": None,
            }
            if ok and multi:
                self._reply = fields
                self._body.start()
                continue
            out.append(L7Event(APP, "reply", Direction.S2C, fields))
            if ok and verb in (b"STLS", b"QUIT"):
                self.finished = True
