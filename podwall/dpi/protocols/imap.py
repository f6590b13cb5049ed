"""IMAP4rev1/rev2 (RFC 3501, 9051): detection by the greeting or a tagged command, and a parser.

The server greets with `* OK [CAPABILITY ...] text` (or `* PREAUTH`, `* BYE`); the client
sends tagged commands (`a001 LOGIN user password`, `a002 SELECT INBOX`, ...) that end with
a tagged `OK`/`NO`/`BAD`. Either side may embed literals `{n}` (or `{n+}`, `~{n}`): n raw
bytes after the line's CRLF, after which the line goes on. Literals stream through; a
client's first few short ones are held only to read command arguments (a user name, a
mailbox). Passwords and SASL responses (after AUTHENTICATE, until its tagged answer) are
never reported. A tagged OK to STARTTLS turns the rest into TLS: the parser is finished.
"""

from __future__ import annotations

import re
from typing import Any, ClassVar

from podwall.core.errors import ProtocolError
from podwall.core.limits import DEFAULT_LIMITS, Limits
from podwall.core.types import PROTO_TCP, Direction
from podwall.dpi.base import DetectContext, Detection, L7Event
from podwall.dpi.protocols.textline import LineBuffer, text

__all__ = ["ImapDetector", "ImapParser"]

APP = "imap"
MAX_PENDING = 256  # tagged commands awaiting their answer
MAX_LITERAL = 1 << 40
LITERALS_KEPT = 4  # client literals per command held for argument reading
LITERAL_CAPTURE = 256
_FIRST_VERBS = frozenset(
    {
        b"CAPABILITY", b"LOGIN", b"AUTHENTICATE", b"STARTTLS", b"ID", b"NOOP", b"LOGOUT", b"ENABLE",
        b"SELECT", b"EXAMINE", b"LIST",
    }
)  # fmt: skip
_MAILBOX_FIRST = frozenset(
    {b"SELECT", b"EXAMINE", b"CREATE", b"DELETE", b"RENAME", b"SUBSCRIBE", b"UNSUBSCRIBE", b"STATUS", b"APPEND"}
)
_MAILBOX_SECOND = frozenset({b"LIST", b"LSUB", b"COPY", b"MOVE"})
_GREETINGS = (b"* OK ", b"* PREAUTH ", b"* BYE ")
_COMMAND_HEAD = re.compile(rb"([!#$&',\-./0-9:;<=>?@A-Z\[\]^_`a-z|}~]{1,64}) ([A-Za-z]{1,16})([ \r\n])?")
_COMMAND_HEAD_PREFIX = re.compile(rb"[!#$&',\-./0-9:;<=>?@A-Z\[\]^_`a-z|}~]{0,64}(?: [A-Za-z]{0,16})?")
_LITERAL = re.compile(rb"~?\{([0-9]{1,20})\+?\}$")
_TAG = re.compile(rb"[!#$&',\-./0-9:;<=>?@A-Z\[\]^_`a-z|}~]{1,64}")
_CAPABILITY = re.compile(rb"\[CAPABILITY ([^\]]*)\]", re.IGNORECASE)
_PLACEHOLDER = 0  # a NUL, which IMAP text never holds, marks where a literal was


class ImapDetector:
    """Matches an IMAP greeting (`* OK `, `* PREAUTH `, `* BYE `) or a client's tagged first command."""

    name: ClassVar[str] = APP
    transports: ClassVar[frozenset[int]] = frozenset({PROTO_TCP})
    ports: ClassVar[frozenset[int]] = frozenset({143})

    def __init__(self, limits: Limits = DEFAULT_LIMITS) -> None:
        self._limits = limits

    def detect(self, direction: Direction, data: bytes, ctx: DetectContext) -> Detection:
        if not data:
            return Detection.NEED_MORE
        if direction == Direction.S2C:
            for greeting in _GREETINGS:
                if data.startswith(greeting):
                    return Detection.MATCH
                if greeting.startswith(data[: len(greeting)]):
                    return Detection.NEED_MORE
            return Detection.NO
        head = _COMMAND_HEAD.match(data)
        if head is not None:
            verb = head.group(2).upper()
            if head.group(3):
                return Detection.MATCH if verb in _FIRST_VERBS else Detection.NO
            if head.end() == len(data) and any(v.startswith(verb) for v in _FIRST_VERBS):
                return Detection.NEED_MORE
            return Detection.NO
        return Detection.NEED_MORE if _COMMAND_HEAD_PREFIX.fullmatch(data) else Detection.NO

    def parser(self, ctx: DetectContext) -> ImapParser:
        return ImapParser(self._limits)


class _Side:
    """One direction's logical lines: text with literal placeholders; literals skipped or captured."""

    __slots__ = ("buf", "capture", "capturing", "line", "literal_left", "literals")

    def __init__(self, cap: int, what: str, capture: bool) -> None:
        self.buf = LineBuffer(cap, what)
        self.line = bytearray()
        self.literal_left = 0
        self.literals: list[bytearray] = []
        self.capture = capture
        self.capturing = False

    def next_logical(self) -> bytes | None:
        """The next complete logical line (literals replaced by placeholders), or None for now."""
        buf = self.buf
        cap = buf.stream.cap
        while True:
            if self.literal_left:
                if self.capturing:
                    held = self.literals[-1]
                    piece = buf.take(self.literal_left)
                    held += piece[: max(LITERAL_CAPTURE - len(held), 0)]
                    taken = len(piece)
                else:
                    taken = buf.skip(self.literal_left)
                self.literal_left -= taken
                if self.literal_left:
                    return None
            raw = buf.next_line()
            if raw is None:
                return None
            if len(self.line) + len(raw) > cap:
                raise ProtocolError(f"{buf.stream.what}: line longer than {cap} bytes")
            literal = _LITERAL.search(raw)
            if literal is None:
                self.line += raw
                line = bytes(self.line)
                self.line.clear()
                return line
            size = int(literal.group(1))
            if size > MAX_LITERAL:
                raise ProtocolError(f"{buf.stream.what}: literal of {size} bytes")
            self.line += raw[: literal.start()]
            self.line.append(_PLACEHOLDER)
            self.capturing = self.capture and len(self.literals) < LITERALS_KEPT
            if self.capturing:
                self.literals.append(bytearray())
            self.literal_left = size


def _astring(line: bytes, pos: int, literals: list[bytearray]) -> tuple[bytes | None, int]:
    """(value, position after) of the atom, quoted string or literal at `pos` (after spaces)."""
    size = len(line)
    while pos < size and line[pos] == 0x20:
        pos += 1
    if pos >= size:
        return None, pos
    first = line[pos]
    if first == _PLACEHOLDER:
        index = line.count(_PLACEHOLDER, 0, pos)
        value = bytes(literals[index]) if index < len(literals) else b""
        return value, pos + 1
    if first == 0x22:  # a quoted string with backslash escapes
        out = bytearray()
        i = pos + 1
        while i < size:
            c = line[i]
            if c == 0x5C and i + 1 < size:
                out.append(line[i + 1])
                i += 2
                continue
            if c == 0x22:
                return bytes(out), i + 1
            out.append(c)
            i += 1
        raise ProtocolError("IMAP: unterminated quoted string")
    end = pos
    while end < size and line[end] not in b" ()":
        end += 1
    return line[pos:end], end


class ImapParser:
    """Sans-IO IMAP parser: `greeting`, `command` and `response` (tagged) events."""

    def __init__(self, limits: Limits = DEFAULT_LIMITS) -> None:
        self._client = _Side(limits.parser_buffer, "IMAP command", capture=True)
        self._server = _Side(limits.parser_buffer, "IMAP response", capture=False)
        self._pending: dict[bytes, bytes] = {}  # tag -> verb
        self._greeted = False
        self._sasl_tag: bytes | None = None  # client lines are SASL responses until this tag's answer
        self._idle_tag: bytes | None = None  # the client ends IDLE with an untagged DONE
        self.finished = False

    def server_name(self) -> str | None:
        return None

    def feed(self, direction: Direction, data: bytes) -> list[L7Event]:
        if not data or self.finished:
            return []
        side = self._client if direction == Direction.C2S else self._server
        side.buf.append(data)
        out: list[L7Event] = []
        while not self.finished:
            line = side.next_logical()
            if line is None:
                break
            event = self._command(line) if direction == Direction.C2S else self._response(line)
            side.literals.clear()
            if event is not None:
                out.append(event)
        if self.finished:
            side.buf.clear()
        else:
            side.buf.compact()
        return out

    def _command(self, line: bytes) -> L7Event | None:
        if self._sasl_tag is not None:
            return None  # a SASL response (credentials): never reported
        if self._idle_tag is not None and line.strip().upper() == b"DONE":
            self._idle_tag = None
            return None
        if not line.strip():
            return None
        tag, _, rest = line.partition(b" ")
        verb, _, args = rest.partition(b" ")
        if not _TAG.fullmatch(tag) or not verb.isalpha():
            raise ProtocolError(f"IMAP: not a tagged command: {line[:40]!r}")
        verb = verb.upper()
        if verb == b"UID":
            sub, _, args = args.partition(b" ")
            verb = b"UID " + sub.upper()
        if len(self._pending) >= MAX_PENDING:
            raise ProtocolError(f"IMAP: more than {MAX_PENDING} commands without an answer")
        self._pending[tag] = verb
        literals = self._client.literals
        fields: dict[str, Any] = {"tag": text(tag), "verb": text(verb)}
        if verb == b"LOGIN":
            user, _ = _astring(args, 0, literals)
            fields["user"] = None if user is None else text(user)
        elif verb == b"AUTHENTICATE":
            mechanism, _ = _astring(args, 0, literals)
            fields["mechanism"] = None if mechanism is None else text(mechanism).upper()
            self._sasl_tag = tag
        elif verb in _MAILBOX_FIRST:
            mailbox, _ = _astring(args, 0, literals)
            fields["mailbox"] = None if mailbox is None else text(mailbox)
        elif verb in _MAILBOX_SECOND:
            _, pos = _astring(args, 0, literals)
            mailbox, _ = _astring(args, pos, literals)
            fields["mailbox"] = None if mailbox is None else text(mailbox)
        elif verb == b"IDLE":
            self._idle_tag = tag
        return L7Event(APP, "command", Direction.C2S, fields)

    def _response(self, line: bytes) -> L7Event | None:
        if line[:2] == b"+ " or line == b"+":
            return None  # a continuation request
        if line[:2] == b"* ":
            if self._greeted:
                return None  # untagged data
            self._greeted = True
            status, _, rest = line[2:].partition(b" ")
            capability = _CAPABILITY.search(rest)
            fields: dict[str, Any] = {
                "status": text(status).upper(),
                "capabilities": capability.group(1).decode("latin-1").upper().split()[:64] if capability else None,
                "text": text(rest),
            }
            return L7Event(APP, "greeting", Direction.S2C, fields)
        tag, _, rest = line.partition(b" ")
        status, _, message = rest.partition(b" ")
        status = status.upper()
        if not _TAG.fullmatch(tag) or status not in (b"OK", b"NO", b"BAD"):
            raise ProtocolError(f"IMAP: not a response: {line[:40]!r}")
        verb = self._pending.pop(tag, None)
        if tag == self._sasl_tag:
            self._sasl_tag = None
        if tag == self._idle_tag:
            self._idle_tag = None
        fields = {
            "tag": text(tag),
            "status": status.decode(),
            "command": None if verb is None else verb.decode(),
            "text": text(message),
        }
        if (verb == b"STARTTLS" and status == b"OK") or verb == b"LOGOUT":
            self.finished = True
        return L7Event(APP, "response", Direction.S2C, fields)
