"""The DPI contract: detectors that name a flow's application and sans-IO parsers that read it.

A `Detector` looks at the first bytes of a flow (either direction) and answers MATCH, NO or
NEED_MORE. Once one matches, its `Parser` is fed the flow's reassembled bytes (TCP) or
datagrams (UDP) as they arrive and returns typed `L7Event`s. Nothing here does I/O; the only
exception a parser may raise is `ProtocolError`. See `dpi/session.py` for the driver.

Optional hooks the session uses when present (see docs/dpi.md): a parser's `finished`
attribute (nothing more to parse, e.g. TLS after the ServerHello), a parser's `close()` that
returns the events completed by the end of the flow (an HTTP body that runs to close), and a
detector's `ports` (only to break a tie between detectors that both match).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any, ClassVar, Protocol

from podwall.core.errors import ProtocolError
from podwall.core.types import Direction

__all__ = [
    "DetectContext",
    "Detection",
    "Detector",
    "L7Event",
    "Parser",
    "ProtocolError",
]


class Detection(Enum):
    """A detector's answer about the bytes seen so far."""

    MATCH = "match"
    NO = "no"
    NEED_MORE = "need_more"


@dataclass(frozen=True, slots=True)
class DetectContext:
    """What a detector may know besides the bytes: transport and ports (ports only break ties)."""

    proto: int  # PROTO_TCP or PROTO_UDP
    client_port: int
    server_port: int


@dataclass(slots=True)
class L7Event:
    """One application-level message seen in a flow.

    `kind` is e.g. `request`, `response`, `client_hello`, `server_hello`, `query`, `command`.
    `fields` holds the protocol's extracted fields with stable lower-case names (for HTTP:
    method, path, host, user_agent, content_type, status, ...). Protocol modules may
    subclass, but consumers only rely on these attributes.
    """

    app: str
    kind: str
    direction: Direction
    fields: dict[str, Any] = field(default_factory=dict)


class Parser(Protocol):
    """A sans-IO state machine for one flow of one protocol.

    `feed` takes the next bytes of one direction: for TCP, the next contiguous chunk of the
    reassembled stream (any split: whole messages, single bytes, several messages at once);
    for UDP, exactly one datagram. It returns the events completed by those bytes. Memory
    held is bounded by `Limits.parser_buffer`; past it or on malformed input it raises
    `ProtocolError`, after which it must not be fed again.
    """

    def feed(self, direction: Direction, data: bytes) -> list[L7Event]: ...

    def server_name(self) -> str | None:
        """The name the client asked for (TLS SNI, HTTP Host, DNS query), once known."""
        ...


class Detector(Protocol):
    """Names one application protocol from a flow's first bytes.

    `detect` receives all bytes buffered so far in one direction (the session keeps them,
    capped) and must be cheap and side-effect free. `transports` lists the IP protocol
    numbers it applies to.
    """

    name: ClassVar[str]
    transports: ClassVar[frozenset[int]]

    def detect(self, direction: Direction, data: bytes, ctx: DetectContext) -> Detection: ...

    def parser(self, ctx: DetectContext) -> Parser: ...
