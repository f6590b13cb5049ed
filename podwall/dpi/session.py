"""The DPI driver for one flow: decide the application from payload, then run its parser.

While undecided, a session buffers each direction's first bytes (capped) and asks every
candidate detector, in registry order, about each new chunk: NO drops the candidate,
MATCH decides, NEED_MORE waits. Then the chosen parser is created, the buffered chunks are
replayed to it in arrival order, and live bytes follow. Nothing a flow sends can make the
session raise: a parser's ProtocolError is recorded in `error` and parsing stops, the
decision stays. `done` tells the caller that further bytes would be ignored.

Parsing goes on for the whole flow unless the parser says it is `finished` (L7 policy must
see every request of a keep-alive connection, not the first few): `events` keeps the first
`MAX_EVENTS` events, and `requests` every distinct client request (up to `MAX_REQUESTS`;
past that `requests_truncated` is set, and L7 rules fail closed on the flow).

`on_event`, when given, is called with every event as the parser completes it (inspectors
see all of a flow's messages, not only the first `MAX_EVENTS`); it must not raise.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from podwall.core.errors import ProtocolError
from podwall.core.limits import DEFAULT_LIMITS, Limits
from podwall.core.types import Direction
from podwall.dpi import registry
from podwall.dpi.base import DetectContext, Detection, Detector, L7Event, Parser

__all__ = ["MAX_EVENTS", "MAX_REQUESTS", "UNKNOWN", "DpiSession"]

UNKNOWN = "unknown"
MAX_EVENTS = 32  # events kept per flow for display and forensics
MAX_REQUESTS = 256  # distinct client requests kept per flow for L7 policy; past it `requests_truncated`
REQUEST_KINDS = frozenset({"request", "query", "command", "client_hello"})


class DpiSession:
    """Detection and parsing of one flow's application layer; see the module docstring."""

    __slots__ = (
        "_candidates",
        "_chunks",
        "_ctx",
        "_gapped",
        "_limits",
        "_parser",
        "_pending",
        "_request_keys",
        "_sizes",
        "app",
        "done",
        "error",
        "event_count",
        "events",
        "on_event",
        "requests",
        "requests_truncated",
        "server_name",
    )

    def __init__(
        self,
        ctx: DetectContext,
        limits: Limits = DEFAULT_LIMITS,
        detectors: Sequence[Detector] | None = None,
        on_event: Callable[[L7Event], None] | None = None,
    ) -> None:
        self._ctx = ctx
        self._limits = limits
        pool = registry.detectors(limits) if detectors is None else detectors
        self._candidates: list[Detector] = [d for d in pool if ctx.proto in d.transports]
        self._pending: list[tuple[Direction, bytes]] = []  # chunks seen while undecided, in arrival order
        self._sizes = [0, 0]
        self._chunks = 0
        self._gapped = [False, False]
        self._parser: Parser | None = None
        self.app: str | None = None
        self.server_name: str | None = None
        self.events: list[L7Event] = []
        self.event_count = 0
        self.requests: list[L7Event] = []
        self.requests_truncated = False
        self._request_keys: set[str] = set()
        self.error: str | None = None
        self.done = False
        self.on_event = on_event
        if not self._candidates:
            self._give_up()

    # -- input ---------------------------------------------------------------------------

    def on_stream(self, direction: Direction, data: bytes) -> None:
        """The next contiguous bytes of the TCP stream in `direction`."""
        self._input(direction, data, datagram=False)

    def on_datagram(self, direction: Direction, data: bytes) -> None:
        """One UDP payload."""
        self._input(direction, data, datagram=True)

    def on_gap(self, direction: Direction) -> None:
        """Bytes were lost in `direction`: parsing stops; undecided, detection goes on with the other side."""
        if self.done:
            return
        self._gapped[direction] = True
        if self._parser is not None:
            self._parser = None
            self.done = True
        elif all(self._gapped):
            self._give_up()

    def finish(self) -> None:
        """The flow ended: an undecided flow is `unknown`; a parser gets to complete what the close ends."""
        if self.app is None:
            self._give_up()
        parser = self._parser
        if parser is not None:
            self._parser = None
            close = getattr(parser, "close", None)
            if close is not None:
                try:
                    self._record(close())
                except ProtocolError as exc:
                    self.error = str(exc) or type(exc).__name__
                except Exception as exc:  # a parser bug must not take the flow table down
                    self.error = f"internal error in the {self.app} parser: {exc!r}"
        self.done = True

    def _input(self, direction: Direction, data: bytes, datagram: bool) -> None:
        if self.done or not data or self._gapped[direction]:
            return
        if self._parser is not None:
            self._feed(direction, data)
            return
        self._chunks += 1
        self._pending.append((direction, data))
        size = self._sizes[direction] = self._sizes[direction] + len(data)
        cap = self._limits.dpi_buffer
        if datagram:
            view = data[:cap]
        elif size == len(data):
            view = data[:cap]  # the first chunk of this direction: no join needed
        else:
            view = b"".join(chunk for d, chunk in self._pending if d == direction)[:cap]
        self._detect(direction, view)
        if self.app is None and (size >= cap or self._chunks >= self._limits.dpi_max_packets):
            self._give_up()

    # -- detection -----------------------------------------------------------------------

    def _detect(self, direction: Direction, view: bytes) -> None:
        ctx = self._ctx
        keep: list[Detector] = []
        matched: list[Detector] = []
        for det in self._candidates:
            try:
                answer = det.detect(direction, view, ctx)
            except Exception:  # a detector that cannot read these bytes does not match them
                answer = Detection.NO
            if answer is Detection.MATCH:
                matched.append(det)
            elif answer is Detection.NEED_MORE:
                keep.append(det)
        if matched:
            self._decide(self._tie_break(matched))
        elif keep:
            self._candidates = keep
        else:
            self._give_up()

    def _tie_break(self, matched: list[Detector]) -> Detector:
        if len(matched) > 1:
            for det in matched:
                if self._ctx.server_port in getattr(det, "ports", ()):
                    return det
        return matched[0]

    def _give_up(self) -> None:
        self.app = UNKNOWN
        self.done = True
        self._candidates = []
        self._pending = []

    def _decide(self, det: Detector) -> None:
        self.app = det.name
        self._candidates = []
        pending, self._pending = self._pending, []
        try:
            self._parser = det.parser(self._ctx)
        except Exception as exc:
            self.error = f"cannot start the {det.name} parser: {exc!r}"
            self.done = True
            return
        for direction, chunk in pending:
            if self._parser is None:
                break
            self._feed(direction, chunk)

    # -- parsing -------------------------------------------------------------------------

    def _feed(self, direction: Direction, data: bytes) -> None:
        parser = self._parser
        assert parser is not None
        try:
            events = parser.feed(direction, data)
            name = parser.server_name()
            if name:
                self.server_name = name
        except ProtocolError as exc:
            self._fail(str(exc) or type(exc).__name__)
            return
        except Exception as exc:  # a parser bug must not take the flow table down
            self._fail(f"internal error in the {self.app} parser: {exc!r}")
            return
        self._record(events)
        if getattr(parser, "finished", False):
            self._parser = None
            self.done = True

    def _record(self, events: list[L7Event]) -> None:
        if not events:
            return
        self.event_count += len(events)
        room = MAX_EVENTS - len(self.events)
        if room > 0:
            self.events.extend(events[:room])
        on_event = self.on_event
        for event in events:
            if event.direction is Direction.C2S and event.kind in REQUEST_KINDS:
                self._request(event)
            if on_event is not None:
                on_event(event)

    def _request(self, event: L7Event) -> None:
        """Keep one event per distinct request (bodies aside): repeats add nothing for policy."""
        key = repr((event.app, event.kind, sorted((k, v) for k, v in event.fields.items() if k != "body")))
        if key in self._request_keys:
            return
        if len(self.requests) >= MAX_REQUESTS:
            self.requests_truncated = True
            return
        self._request_keys.add(key)
        self.requests.append(event)

    def _fail(self, message: str) -> None:
        self.error = message
        self._parser = None
        self.done = True
