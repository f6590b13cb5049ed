"""FTP control connection (RFC 959, 2428, 4217): detection by greeting or first command, and a parser.

The server greets with `220`, the client logs in with `USER`/`PASS` (the password is never
kept: it is reported as `***`), then navigates (`CWD`), transfers (`RETR`, `STOR`, ...)
and opens data connections (`PORT`/`EPRT` from the client, `227`/`229` replies to
`PASV`/`EPSV`); their address and port are reported so that the data flows can be related
later. `AUTH TLS` accepted with `234` turns the rest into TLS: the parser is finished.
Replies may span lines (`211-...` up to `211 ...`); 1xx replies are preliminary. SMTP also
greets with `220`: a greeting decides only when it names FTP, otherwise the client's first
command does (`USER`, `AUTH`, `FEAT`, `SYST`, ...).
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any, ClassVar

from podwall.core.limits import DEFAULT_LIMITS, Limits
from podwall.core.types import PROTO_TCP, Direction
from podwall.dpi.base import DetectContext, Detection, L7Event
from podwall.dpi.protocols.textline import CommandReplyParser, Reply, detect_220, text

__all__ = ["FtpDetector", "FtpParser", "parse_eprt", "parse_port"]

APP = "ftp"
MASKED = "***"
_FIRST_VERBS = frozenset({b"USER", b"AUTH", b"FEAT", b"SYST", b"OPTS", b"CLNT", b"HOST"})
_NEUTRAL = frozenset({b"NOOP", b"QUIT", b"HELP"})
_PATH_VERBS = frozenset(
    {
        b"CWD", b"XCWD", b"RETR", b"STOR", b"STOU", b"APPE", b"DELE", b"MKD", b"XMKD", b"RMD", b"XRMD",
        b"LIST", b"NLST", b"MLSD", b"MLST", b"SIZE", b"MDTM", b"RNFR", b"RNTO", b"SMNT",
    }
)  # fmt: skip
_SECRET_VERBS = frozenset({b"PASS", b"ACCT"})
_SIX_NUMBERS = re.compile(rb"(\d{1,3}),(\d{1,3}),(\d{1,3}),(\d{1,3}),(\d{1,3}),(\d{1,3})")
_EPSV = re.compile(r"\(([!-~])\1\1(\d{1,5})\1\)")


def parse_port(argument: bytes) -> tuple[str, int] | None:
    """(host, port) of `h1,h2,h3,h4,p1,p2` (PORT argument, 227 reply text), None when malformed."""
    match = _SIX_NUMBERS.search(argument)
    if match is None:
        return None
    numbers = [int(n) for n in match.groups()]
    if any(n > 255 for n in numbers):
        return None
    return ".".join(str(n) for n in numbers[:4]), numbers[4] * 256 + numbers[5]


def parse_eprt(argument: bytes) -> tuple[str, int] | None:
    """(host, port) of an EPRT argument `|1|192.0.2.1|6275|` (any delimiter), None when malformed."""
    if len(argument) < 7:
        return None
    parts = argument[1:].split(argument[:1])
    if len(parts) != 4 or parts[3] or parts[0] not in (b"1", b"2") or not parts[2].isdigit():
        return None
    try:
        host = ipaddress.ip_address(parts[1].decode("ascii"))
    except (ValueError, UnicodeDecodeError):
        return None
    port = int(parts[2])
    if host.version != (4 if parts[0] == b"1" else 6) or not 0 < port < 65536:
        return None
    return str(host), port


class FtpDetector:
    """Matches an FTP greeting naming FTP, or a client's first FTP command."""

    name: ClassVar[str] = APP
    transports: ClassVar[frozenset[int]] = frozenset({PROTO_TCP})
    ports: ClassVar[frozenset[int]] = frozenset({21, 2121})

    def __init__(self, limits: Limits = DEFAULT_LIMITS) -> None:
        self._limits = limits

    def detect(self, direction: Direction, data: bytes, ctx: DetectContext) -> Detection:
        return detect_220(direction, data, "ftp", _FIRST_VERBS, _NEUTRAL)

    def parser(self, ctx: DetectContext) -> FtpParser:
        return FtpParser(self._limits)


class FtpParser(CommandReplyParser):
    """Sans-IO FTP control-connection parser: `greeting`, `command` and `reply` events."""

    app: ClassVar[str] = APP
    GATED: ClassVar[frozenset[bytes]] = frozenset({b"AUTH"})

    def _greeting(self, reply: Reply) -> L7Event:
        return L7Event(APP, "greeting", Direction.S2C, {"code": reply.code, "text": reply.text})

    def _command(self, verb: bytes, argument: bytes) -> L7Event | None:
        fields: dict[str, Any] = {"verb": verb.decode(), "argument": text(argument) or None}
        if verb in _SECRET_VERBS:
            fields["argument"] = MASKED
            if verb == b"PASS":
                fields["password"] = MASKED
        elif verb == b"USER":
            fields["user"] = text(argument)
        elif verb in _PATH_VERBS:
            fields["path"] = text(argument) or None
        elif verb in (b"PORT", b"EPRT"):
            address = parse_port(argument) if verb == b"PORT" else parse_eprt(argument)
            fields["data_host"], fields["data_port"] = address or (None, None)
        return L7Event(APP, "command", Direction.C2S, fields)

    def _reply(self, reply: Reply, command: bytes | None) -> L7Event:
        fields: dict[str, Any] = {
            "code": reply.code,
            "text": reply.text,
            "command": None if command is None else command.decode(),
        }
        if reply.code == 227:
            address = parse_port(reply.text.encode())
            fields["data_host"], fields["data_port"] = address or (None, None)
        elif reply.code == 229:
            match = _EPSV.search(reply.text)
            fields["data_host"] = None  # the control connection's server address
            fields["data_port"] = int(match.group(2)) if match and 0 < int(match.group(2)) < 65536 else None
        elif (command == b"AUTH" and reply.code == 234) or (command == b"QUIT" and reply.code == 221):
            self.finished = True
        return L7Event(APP, "reply", Direction.S2C, fields)
