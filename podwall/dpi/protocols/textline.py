"""Shared pieces of the CRLF line protocols (SMTP, FTP, POP3, IMAP, NATS, the SSH banner).

`LineBuffer` is a bounded per-direction receive buffer that yields whole lines and can skip
a counted run of bytes (a literal, a payload) without holding it. `ReplyReader` assembles
the numbered, possibly multi-line replies of SMTP and FTP (`250-...` / `250 ...`). The
detection helpers read the first lines of a direction without ever buffering: they answer
from the bytes a detector is given.
"""

from __future__ import annotations

import re
from collections import deque
from typing import ClassVar

from podwall.core.errors import ProtocolError
from podwall.core.limits import DEFAULT_LIMITS, Limits
from podwall.core.types import Direction
from podwall.dpi.base import Detection, L7Event
from podwall.dpi.wire import StreamBuffer

__all__ = [
    "TEXT_CAPTURE",
    "CommandReplyParser",
    "DotBody",
    "LineBuffer",
    "LineConversation",
    "Reply",
    "ReplyReader",
    "client_verb",
    "complete_lines",
    "detect_220",
    "greeting_220",
    "is_text",
    "text",
]

TEXT_CAPTURE = 256  # characters of a free-text field (argument, reply text) kept in an event

_TEXT = re.compile(rb"[\t\x20-\x7e]*")  # printable ASCII and tabs


def text(raw: bytes | bytearray, limit: int = TEXT_CAPTURE) -> str:
    """A capped, printable rendering of wire text (non-UTF-8 bytes escaped)."""
    return bytes(raw[:limit]).decode("utf-8", "backslashreplace")


def is_text(line: bytes | bytearray) -> bool:
    """Only printable ASCII and tabs (what greetings and commands are made of)."""
    return _TEXT.fullmatch(line) is not None


def complete_lines(data: bytes, max_lines: int, max_len: int) -> tuple[list[bytes], bytes] | None:
    """The first complete lines of `data` (CRLF or LF stripped) and the bytes after them.

    None when a line is longer than `max_len`: no line protocol a detector looks for starts so.
    At most `max_lines` lines are returned; the rest is then whatever follows them.
    """
    lines: list[bytes] = []
    pos = 0
    while len(lines) < max_lines:
        nl = data.find(b"\n", pos, pos + max_len + 1)
        if nl < 0:
            if len(data) - pos > max_len:
                return None
            break
        end = nl - 1 if nl > pos and data[nl - 1] == 13 else nl
        lines.append(data[pos:end])
        pos = nl + 1
    return lines, data[pos:]


def client_verb(data: bytes, match: frozenset[bytes], neutral: frozenset[bytes], max_lines: int = 3) -> Detection:
    """A client's first commands: MATCH on a verb in `match`, lines with `neutral` verbs are passed over.

    A partial first word that could still become one of those verbs is NEED_MORE; anything
    else, or only neutral lines up to `max_lines`, is NO.
    """
    got = complete_lines(data, max_lines, 512)
    if got is None:
        return Detection.NO
    lines, rest = got
    for line in lines:
        verb = line.split(b" ", 1)[0].upper()
        if not is_text(line):
            return Detection.NO
        if verb in match:
            return Detection.MATCH
        if verb not in neutral:
            return Detection.NO
    if len(lines) >= max_lines or not is_text(rest.rstrip(b"\r")):
        return Detection.NO
    word, space, _ = rest.partition(b" ")
    word = word.rstrip(b"\r").upper()
    if space:
        if word in match:
            return Detection.MATCH
        return Detection.NEED_MORE if word in neutral else Detection.NO
    return Detection.NEED_MORE if any(v.startswith(word) for v in match | neutral) else Detection.NO


def greeting_220(data: bytes) -> str:
    """A server's first bytes as a `220` greeting: `more`, `no`, `smtp`, `ftp` or `either`.

    SMTP and FTP both greet with `220`; the greeting decides only when its text names exactly
    one of them (`ESMTP`, `FTP`), otherwise the client's first command must (`either`).
    """
    head = data[:4]
    if b"220 "[: len(head)] != head and b"220-"[: len(head)] != head:
        return "no"
    got = complete_lines(data, MAX_GREETING_LINES, 1024)
    if got is None:
        return "no"
    lines, rest = got
    if not is_text(rest.rstrip(b"\r")):
        return "no"
    words = bytearray()
    for line in lines:
        if not is_text(line):
            return "no"
        words += line.upper() + b" "
        if line[:4] in (b"220 ", b"220"):
            break
    else:
        if len(lines) < MAX_GREETING_LINES:
            return "more"
    smtp = b"SMTP" in words
    ftp = b"FTP" in words
    if smtp != ftp:
        return "smtp" if smtp else "ftp"
    return "either"


MAX_GREETING_LINES = 8


def detect_220(
    direction: Direction, data: bytes, app: str, first: frozenset[bytes], neutral: frozenset[bytes]
) -> Detection:
    """SMTP/FTP detection: the client's first verbs (`client_verb`), or a `220` greeting naming `app`.

    A greeting that names neither protocol (`either`) keeps the candidate: the client decides.
    """
    if not data:
        return Detection.NEED_MORE
    if direction == Direction.C2S:
        return client_verb(data, first, neutral)
    verdict = greeting_220(data)
    if verdict == app:
        return Detection.MATCH
    return Detection.NEED_MORE if verdict in ("more", "either") else Detection.NO


class LineBuffer:
    """Unparsed bytes of one direction, read as lines or skipped as counted runs; bounded."""

    __slots__ = ("stream",)

    def __init__(self, cap: int, what: str) -> None:
        self.stream = StreamBuffer(cap, what)

    def append(self, data: bytes) -> None:
        self.stream.append(data)

    def available(self) -> int:
        return self.stream.available()

    def next_line(self) -> bytes | None:
        """The next whole line without its CRLF (a bare LF is tolerated), or None until one is complete."""
        stream = self.stream
        buf = stream.buf
        pos = stream.pos
        nl = buf.find(b"\n", pos, pos + stream.cap + 1)
        if nl < 0:
            if len(buf) - pos > stream.cap:
                raise ProtocolError(f"{stream.what}: line longer than {stream.cap} bytes")
            return None
        end = nl - 1 if nl > pos and buf[nl - 1] == 13 else nl
        stream.pos = nl + 1
        return bytes(buf[pos:end])

    def peek(self, n: int) -> bytes:
        """Up to `n` unconsumed bytes, left in place."""
        pos = self.stream.pos
        return bytes(self.stream.buf[pos : pos + n])

    def skip(self, n: int) -> int:
        """Consume up to `n` buffered bytes (a payload streaming through); how many were consumed."""
        stream = self.stream
        taken = min(n, len(stream.buf) - stream.pos)
        stream.pos += taken
        return taken

    def take(self, n: int) -> bytes:
        """Consume and return up to `n` buffered bytes."""
        stream = self.stream
        start = stream.pos
        taken = min(n, len(stream.buf) - start)
        stream.pos = start + taken
        return bytes(stream.buf[start : start + taken])

    def compact(self) -> None:
        self.stream.compact()

    def clear(self) -> None:
        self.stream.clear()


class Reply:
    """One complete numbered reply: its code and the text of each line (capped)."""

    __slots__ = ("code", "lines")

    def __init__(self, code: int, lines: list[str]) -> None:
        self.code = code
        self.lines = lines

    @property
    def text(self) -> str:
        return self.lines[0] if self.lines else ""


MAX_REPLY_LINES = 64  # lines of a multi-line reply kept (the rest are read and dropped)


class ReplyReader:
    """Assembles SMTP/FTP replies: `NNN text`, or `NNN-text` ... up to a line `NNN text`.

    FTP lets the lines between the first and the last say anything; SMTP repeats the code on
    each. Both are read by waiting for the code followed by a space (or alone) at a line start.
    """

    __slots__ = ("app", "code", "lines")

    def __init__(self, app: str) -> None:
        self.app = app
        self.code = -1
        self.lines: list[str] = []

    def line(self, line: bytes) -> Reply | None:
        """Take one reply line; the complete reply when this line ends it."""
        if self.code < 0:
            code = self._code(line)
            if code is None:
                raise ProtocolError(f"{self.app}: reply line without a 3-digit code: {line[:40]!r}")
            sep = line[3:4]
            if sep not in (b"", b" ", b"-"):
                raise ProtocolError(f"{self.app}: reply code {code} followed by {sep!r}")
            if sep == b"-":
                self.code = code
                self.lines = [text(line[4:])]
                return None
            return Reply(code, [text(line[4:])])
        if self._code(line) == self.code and line[3:4] in (b"", b" "):
            lines = self.lines
            if len(lines) < MAX_REPLY_LINES:
                lines.append(text(line[4:]))
            reply = Reply(self.code, lines)
            self.code = -1
            self.lines = []
            return reply
        if len(self.lines) < MAX_REPLY_LINES:
            body = line[4:] if self._code(line) == self.code else line
            self.lines.append(text(body))
        return None

    @staticmethod
    def _code(line: bytes) -> int | None:
        head = line[:3]
        if len(head) == 3 and head.isdigit() and 49 <= head[0] <= 53:
            return int(head)
        return None


MAX_PENDING = 256  # commands awaiting their replies (SMTP/FTP pipelining)
_VERB_CHARS = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ")


class LineConversation:
    """Client lines and server lines of one connection, each direction in a bounded `LineBuffer`.

    `feed` runs the server side first when server bytes arrive (a reply may let the client's
    waiting bytes be read), then the client side; once `finished`, both buffers are dropped.
    Subclasses read the lines in `_client_run` and `_server_run`.
    """

    def __init__(self, limits: Limits, client_what: str, server_what: str) -> None:
        self._client = LineBuffer(limits.parser_buffer, client_what)
        self._server = LineBuffer(limits.parser_buffer, server_what)
        self.finished = False

    def server_name(self) -> str | None:
        return None

    def feed(self, direction: Direction, data: bytes) -> list[L7Event]:
        if not data or self.finished:
            return []
        out: list[L7Event] = []
        if direction == Direction.C2S:
            self._client.append(data)
        else:
            self._server.append(data)
            self._server_run(out)
            self._server.compact()
        self._client_run(out)
        if self.finished:
            self._client.clear()
            self._server.clear()
        else:
            self._client.compact()
        return out

    def _client_run(self, out: list[L7Event]) -> None:
        raise NotImplementedError

    def _server_run(self, out: list[L7Event]) -> None:
        raise NotImplementedError


class CommandReplyParser(LineConversation):
    """The SMTP/FTP skeleton: client command lines, numbered server replies, matched in order.

    The first complete reply is the greeting. Each later final reply (2xx-5xx) answers the
    oldest command still pending; 1xx replies are preliminary. After a verb in `GATED` the
    client waits for its reply before sending more (DATA, AUTH, STARTTLS), so its later bytes
    are only read once that reply is in: they may be a message body, a SASL response or TLS.
    A reply code in `SASL_CODES` to a gated AUTH makes the next client line a SASL response,
    which is skipped and never reported. Subclasses make the events and may take over client
    bytes (`_client_bytes`, for a message body).
    """

    app: ClassVar[str] = ""
    GATED: ClassVar[frozenset[bytes]] = frozenset()
    SASL_CODES: ClassVar[frozenset[int]] = frozenset()

    def __init__(self, limits: Limits = DEFAULT_LIMITS) -> None:
        super().__init__(limits, f"{self.app} command", f"{self.app} reply")
        self._replies = ReplyReader(self.app)
        self._pending: deque[bytes] = deque()
        self._greeted = False
        self._gate: bytes | None = None
        self._sasl = False

    def _client_bytes(self, out: list[L7Event]) -> bool | None:
        """Client bytes that are not command lines: None when there are none pending, else progress."""
        return None

    def _client_run(self, out: list[L7Event]) -> None:
        while not self.finished:
            special = self._client_bytes(out)
            if special is False:
                return
            if special:
                continue
            if self._gate is not None:
                return
            line = self._client.next_line()
            if line is None:
                return
            if self._sasl:
                self._sasl = False
                self._gate = b"AUTH"
                continue
            if not line.strip():
                continue
            verb, _, argument = line.partition(b" ")
            verb = verb.upper()
            if not 0 < len(verb) <= 16 or not all(c in _VERB_CHARS for c in verb):
                raise ProtocolError(f"{self.app}: not a command: {line[:40]!r}")
            if len(self._pending) >= MAX_PENDING:
                raise ProtocolError(f"{self.app}: more than {MAX_PENDING} commands without a reply")
            self._pending.append(verb)
            if verb in self.GATED:
                self._gate = verb
            event = self._command(verb, argument.strip())
            if event is not None:
                out.append(event)

    def _server_run(self, out: list[L7Event]) -> None:
        while not self.finished:
            line = self._server.next_line()
            if line is None:
                return
            reply = self._replies.line(line)
            if reply is None:
                continue
            if not self._greeted:
                self._greeted = True
                out.append(self._greeting(reply))
                continue
            if reply.code < 200:
                out.append(self._reply(reply, self._pending[0] if self._pending else None))
                continue
            if reply.code in self.SASL_CODES and self._gate == b"AUTH":
                self._sasl = True
                self._gate = None
                out.append(self._reply(reply, b"AUTH"))
                continue
            command = self._pending.popleft() if self._pending else None
            if command is not None and command == self._gate:
                self._gate = None
            out.append(self._reply(reply, command))

    def _greeting(self, reply: Reply) -> L7Event:
        raise NotImplementedError

    def _command(self, verb: bytes, argument: bytes) -> L7Event | None:
        raise NotImplementedError

    def _reply(self, reply: Reply, command: bytes | None) -> L7Event:
        raise NotImplementedError


class DotBody:
    """A body that ends with a line holding a single `.` (SMTP DATA, POP3 multi-line replies).

    Its bytes are counted and dropped as they arrive, whatever the line lengths; only the
    start of a line is looked at, for the terminating dot.
    """

    __slots__ = ("active", "line_start", "size")

    def __init__(self) -> None:
        self.active = False
        self.line_start = True
        self.size = 0

    def start(self) -> None:
        self.active = True
        self.line_start = True
        self.size = 0

    def run(self, buf: LineBuffer) -> bool:
        """Consume body bytes: False when more are needed, True on progress (`active` drops at the end)."""
        stream = buf.stream
        data = stream.buf
        pos = stream.pos
        if pos == len(data):
            return False
        if self.line_start and data[pos] == 0x2E:  # '.': the end, or a dot-stuffed line
            head = bytes(data[pos : pos + 3])
            if head in (b".", b".\r"):
                return False
            if head[:2] == b".\n" or head == b".\r\n":
                stream.pos = pos + (2 if head[:2] == b".\n" else 3)
                self.active = False
                return True
        nl = data.find(b"\n", pos)
        end = len(data) if nl < 0 else nl + 1
        self.size += end - pos
        stream.pos = end
        self.line_start = nl >= 0
        return True
