"""SMTP (RFC 5321): detection by the greeting or EHLO/HELO, and a parser of commands and replies.

The server greets with `220 domain text`; the client says `EHLO`/`HELO`, then `MAIL FROM:`,
`RCPT TO:`, `DATA` and the message up to a line holding a single dot (counted, never
kept), or `BDAT size` chunks. `AUTH` reports the mechanism only: initial responses and the
SASL exchange after each `334` are skipped. After `STARTTLS` is accepted (`220`) the rest is
TLS and the parser is finished. Replies may span lines (`250-...`); the EHLO reply's lines
are reported as extensions. FTP also greets with `220`: a greeting decides only when it
names ESMTP/SMTP, otherwise the client's EHLO/HELO does.
"""

from __future__ import annotations

import re
from typing import Any, ClassVar

from podwall.core.errors import ProtocolError
from podwall.core.limits import DEFAULT_LIMITS, Limits
from podwall.core.types import PROTO_TCP, Direction
from podwall.dpi.base import DetectContext, Detection, L7Event
from podwall.dpi.protocols.textline import CommandReplyParser, DotBody, Reply, detect_220, text

__all__ = ["SmtpDetector", "SmtpParser"]

APP = "smtp"
MAX_BDAT = 1 << 40
_HELLO = frozenset({b"EHLO", b"HELO", b"LHLO"})
_NEUTRAL = frozenset({b"NOOP", b"QUIT", b"RSET", b"HELP"})
_PATH = re.compile(rb"(?i)(?:FROM|TO):[ \t]*<([^>]*)>")
_MAX_EXTENSIONS = 32


class SmtpDetector:
    """Matches an SMTP greeting naming (E)SMTP, or a client's EHLO/HELO/LHLO."""

    name: ClassVar[str] = APP
    transports: ClassVar[frozenset[int]] = frozenset({PROTO_TCP})
    ports: ClassVar[frozenset[int]] = frozenset({25, 587, 2525, 24})

    def __init__(self, limits: Limits = DEFAULT_LIMITS) -> None:
        self._limits = limits

    def detect(self, direction: Direction, data: bytes, ctx: DetectContext) -> Detection:
        return detect_220(direction, data, "smtp", _HELLO, _NEUTRAL)

    def parser(self, ctx: DetectContext) -> SmtpParser:
        return SmtpParser(self._limits)


def _domain(argument: bytes) -> tuple[str | None, bool]:
    """(domain of the first `<path>` in a MAIL/RCPT argument, whether a path was found)."""
    match = _PATH.match(argument)
    if match is None:
        return None, False
    address = match.group(1)
    at = address.rfind(b"@")
    return (text(address[at + 1 :]).lower() if at >= 0 else None), True


class SmtpParser(CommandReplyParser):
    """Sans-IO SMTP parser: `greeting`, `command`, `reply` and `message` (size of each body) events."""

    app: ClassVar[str] = APP
    GATED: ClassVar[frozenset[bytes]] = frozenset({b"DATA", b"AUTH", b"STARTTLS"})
    SASL_CODES: ClassVar[frozenset[int]] = frozenset({334})

    def __init__(self, limits: Limits = DEFAULT_LIMITS) -> None:
        super().__init__(limits)
        self._body = DotBody()
        self._bdat_left = 0

    def _greeting(self, reply: Reply) -> L7Event:
        domain, _, software = reply.text.partition(" ")
        fields = {"code": reply.code, "domain": domain or None, "software": software or None, "text": reply.text}
        return L7Event(APP, "greeting", Direction.S2C, fields)

    def _command(self, verb: bytes, argument: bytes) -> L7Event | None:
        name = verb.decode()
        fields: dict[str, Any] = {"verb": name, "argument": text(argument) or None}
        if verb == b"AUTH":
            fields["argument"] = text(argument.split(b" ", 1)[0]).upper() or None
        elif verb == b"MAIL":
            domain, found = _domain(argument)
            if not found:
                raise ProtocolError(f"SMTP: MAIL without FROM:<path>: {argument[:40]!r}")
            fields["mail_from_domain"] = domain
        elif verb == b"RCPT":
            domain, found = _domain(argument)
            if not found:
                raise ProtocolError(f"SMTP: RCPT without TO:<path>: {argument[:40]!r}")
            fields["rcpt_domain"] = domain
        elif verb == b"BDAT":
            size = argument.split(b" ", 1)[0]
            if not size.isdigit() or int(size) > MAX_BDAT:
                raise ProtocolError(f"SMTP: BDAT with a bad size {size[:20]!r}")
            self._bdat_left = int(size)
        return L7Event(APP, "command", Direction.C2S, fields)

    def _reply(self, reply: Reply, command: bytes | None) -> L7Event:
        fields: dict[str, Any] = {
            "code": reply.code,
            "text": reply.text,
            "command": None if command is None else command.decode(),
        }
        if command == b"EHLO" and reply.code == 250:
            fields["extensions"] = [line.split(" ", 1)[0].upper() for line in reply.lines[1 : 1 + _MAX_EXTENSIONS]]
        elif command == b"DATA" and reply.code == 354:
            self._body.start()
            self._pending.appendleft(b"DATA")  # the final reply comes after the message
        elif (command == b"STARTTLS" and reply.code == 220) or (command == b"QUIT" and reply.code == 221):
            self.finished = True
        return L7Event(APP, "reply", Direction.S2C, fields)

    def _client_bytes(self, out: list[L7Event]) -> bool | None:
        client = self._client
        if self._bdat_left:
            self._bdat_left -= client.skip(self._bdat_left)
            return not self._bdat_left
        if not self._body.active:
            return None
        progress = self._body.run(client)
        if progress and not self._body.active:
            out.append(L7Event(APP, "message", Direction.C2S, {"size": self._body.size}))
        return progress
