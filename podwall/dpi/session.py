"""The DPI driver for one flow: decide the application from payload, then run its parser.

While undecided, a session buffers each direction's first bytes (capped) and asks every
candidate detector, in registry order, about each new chunk: NO drops the candidate,
MATCH decides, NEED_MORE waits. Several matches go to the first whose ports hold the
server port, else to the first. So the first candidate holding the server port is asked
first (if it matches, nothing else is asked), and after a match only detectors holding
that port are still asked: no other answer could change the decision. Then the chosen
parser is created, the buffered chunks are replayed to it in arrival order, and live bytes
follow. Nothing a flow sends can make the session raise: a parser's ProtocolError is
recorded in `error` and parsing stops, the decision stays. `done` tells the caller that
further bytes would be ignored.

How far parsing goes is the session's `depth`:

- `full` (the default): parsing goes on for the whole flow unless the parser says it is
  `finished` (L7 policy must see every request of a keep-alive connection, not the first
  few): `events` keeps the first `MAX_EVENTS` events, and `requests` every distinct client
  request (up to `MAX_REQUESTS`; past that `requests_truncated` is set, and L7 rules fail
  closed on the flow).
- `detect`: parsing stops once the decision is backed by the identifying fields, as nDPI
  stops dissecting a classified flow: the first client request (request, query, command or
  ClientHello, which also carry the server name) and the first server message; or once the
  parser has been given `Limits.dpi_max_packets` payload chunks (nDPI's dissection budget;
  the chunks replayed at the decision count); or when the parser is `finished`. A large
  stream chunk is fed in doubling slices (parsers take any split), so that parsing stops
  soon after those events. The session is then `done`: the flow table stops reassembling
  and feeding it, and the rest of the flow costs no DPI. A flow cut short this way has
  `requests_truncated` set (later requests were not seen), so L7 rules fail closed on it:
  consumers that judge or inspect requests need `full`.

`on_event`, when given, is called with every event as the parser completes it (inspectors
see all of a flow's messages, not only the first `MAX_EVENTS`); it must not raise. A session
with `on_event` set parses at full depth whatever its `depth` says.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from podwall.core.errors import ProtocolError
from podwall.core.limits import DEFAULT_LIMITS, Limits
from podwall.core.types import PROTO_TCP, Direction
from podwall.dpi import registry
from podwall.dpi.base import DetectContext, Detection, Detector, L7Event, Parser

__all__ = ["DEPTHS", "DETECT", "FULL", "MAX_EVENTS", "MAX_REQUESTS", "UNKNOWN", "DpiSession"]

UNKNOWN = "unknown"
MAX_EVENTS = 32  # events kept per flow for display and forensics
MAX_REQUESTS = 256  # distinct client requests kept per flow for L7 policy; past it `requests_truncated`
REQUEST_KINDS = frozenset({"request", "query", "command", "client_hello"})
DETECT = "detect"  # parse until the identifying fields are known (see the module docstring)
FULL = "full"  # parse the whole flow
DEPTHS = (DETECT, FULL)
_SEEN_REQUEST = 1  # detect depth: a client request was parsed
_SEEN_SERVER = 2  # detect depth: a server message was parsed
_SEEN_BOTH = _SEEN_REQUEST | _SEEN_SERVER
_SLICE = 2048  # detect depth: the first slice of a large stream chunk (later ones double)


class DpiSession:
    """Detection and parsing of one flow's application layer; see the module docstring."""

    __slots__ = (
        "_candidates",
        "_chunks",
        "_ctx",
        "_detect_only",
        "_fed",
        "_gapped",
        "_holder",
        "_limits",
        "_parser",
        "_pending",
        "_request_keys",
        "_seen",
        "_sizes",
        "_skippable",
        "app",
        "depth",
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
        depth: str = FULL,
    ) -> None:
        if depth not in DEPTHS:
            raise ValueError(f"DPI depth must be one of {', '.join(DEPTHS)}, not {depth!r}")
        self._ctx = ctx
        self._limits = limits
        if detectors is None:
            self._candidates: Sequence[Detector] = _registry_candidates(limits, ctx.proto)
            self._holder = _registry_holder(limits, ctx.proto, ctx.server_port)
        else:
            self._candidates = [d for d in detectors if ctx.proto in d.transports]
            self._holder = _first_holder(self._candidates, ctx.server_port)
        self._pending: list[tuple[Direction, bytes]] = []  # chunks seen while undecided, in arrival order
        self._sizes = [0, 0]
        self._chunks = 0
        self._gapped = [False, False]
        self.depth = depth
        self._detect_only = depth == DETECT
        self._seen = 0
        self._fed = 0  # chunks given to the parser (the replayed ones included)
        self._parser: Parser | None = None
        self._skippable: Callable[[Direction], int] | None = None  # the parser's, if it can skip bytes
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

    def skippable(self, direction: Direction) -> int:
        """Coming stream bytes the parser would count without reading (see `HttpParser.skippable`)."""
        if self._skippable is None or self._parser is None or self.done or self._detect_only:
            return 0  # detect depth counts every chunk towards its dissection budget
        return self._skippable(direction)

    def skip(self, direction: Direction, n: int) -> None:
        """`n` stream bytes (at most `skippable`) went by: the parser counts them unread."""
        parser = self._parser
        if parser is None or not hasattr(parser, "skip"):
            raise ValueError("this session cannot skip stream bytes")
        parser.skip(direction, n)

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
        port = ctx.server_port
        # Ties between matches go to the first whose ports hold the server port, else to the
        # first match. So the first candidate holding the port is asked first: if it matches,
        # no other answer could change the decision (on its usual port, a flow is decided by
        # one detector).
        holder = self._holder
        ahead = Detection.NO
        if holder is not None:
            try:
                ahead = holder.detect(direction, view, ctx)
            except Exception:  # a detector that cannot read these bytes does not match them
                ahead = Detection.NO
            if ahead is Detection.MATCH:
                self._decide(holder)
                return
        keep: list[Detector] = []
        chosen: Detector | None = None
        for det in self._candidates:
            if chosen is not None and port not in getattr(det, "ports", ()):
                continue  # after a match, only a detector holding the port can change the answer
            if det is holder:
                answer = ahead
            else:
                try:
                    answer = det.detect(direction, view, ctx)
                except Exception:
                    answer = Detection.NO
            if answer is Detection.MATCH:
                if chosen is not None or port in getattr(det, "ports", ()):
                    chosen = det  # the first match that holds the port wins any tie
                    break
                chosen = det
            elif answer is Detection.NEED_MORE and chosen is None:
                keep.append(det)
        if chosen is not None:
            self._decide(chosen)
        elif keep:
            self._candidates = keep
            if holder is not None and holder not in keep:
                self._holder = _first_holder(keep, port)
        else:
            self._give_up()

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
            self._skippable = getattr(self._parser, "skippable", None)
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
        self._fed += 1
        if self._detect_only and len(data) > _SLICE and self._ctx.proto == PROTO_TCP and self.on_event is None:
            # Detect depth on a large stream chunk: feed it in doubling slices (parsers take
            # any split) so that parsing stops soon after the identifying events, not at the
            # chunk's end (a 64 KB loopback segment of a reply that names nothing more).
            start, size, end = 0, _SLICE, len(data)
            while start < end and self._parser is not None:
                self._feed_piece(direction, data[start : start + size])
                start += size
                size += size
            return
        self._feed_piece(direction, data)

    def _feed_piece(self, direction: Direction, data: bytes) -> None:
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
        elif self._detect_only and self.on_event is None:
            self._detect_depth(events)

    def _detect_depth(self, events: list[L7Event]) -> None:
        """Detect depth: stop once the first client request and a server message are parsed,
        or once the parser was given `Limits.dpi_max_packets` chunks (the dissection budget)."""
        seen = self._seen
        for event in events:
            if event.direction is Direction.S2C:
                seen |= _SEEN_SERVER
            elif event.kind in REQUEST_KINDS:
                seen |= _SEEN_REQUEST
        self._seen = seen
        if seen == _SEEN_BOTH or self._fed >= self._limits.dpi_max_packets:
            self._parser = None
            self.done = True
            self.requests_truncated = True  # whatever follows was not seen: L7 rules fail closed

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
        requests = self.requests
        if not requests:
            requests.append(event)  # its key is only needed once a second request comes
            return
        keys = self._request_keys
        if not keys:
            keys.add(_request_key(requests[0]))
        key = _request_key(event)
        if key in keys:
            return
        if len(requests) >= MAX_REQUESTS:
            self.requests_truncated = True
            return
        keys.add(key)
        requests.append(event)

    def _fail(self, message: str) -> None:
        self.error = message
        self._parser = None
        self.done = True


def _first_holder(candidates: Sequence[Detector], port: int) -> Detector | None:
    """The first detector whose `ports` hold `port` (it wins any tie it is part of), if any."""
    for det in candidates:
        if port in getattr(det, "ports", ()):
            return det
    return None


# The registry's detectors per transport, and the first one holding each server port, for the
# last `Limits` asked about: every flow of a run uses the same limits, so these are worked out
# once per transport and port, not once per flow.
_registry_memo: tuple[Limits, dict[int, tuple[Detector, ...]], dict[tuple[int, int], Detector | None]] | None = None


def _registry_memos(
    limits: Limits,
) -> tuple[Limits, dict[int, tuple[Detector, ...]], dict[tuple[int, int], Detector | None]]:
    global _registry_memo
    memo = _registry_memo
    if memo is None or memo[0] is not limits:
        memo = _registry_memo = (limits, {}, {})
    return memo


def _registry_candidates(limits: Limits, proto: int) -> tuple[Detector, ...]:
    pools = _registry_memos(limits)[1]
    found = pools.get(proto)
    if found is None:
        found = pools[proto] = tuple(d for d in registry.detectors(limits) if proto in d.transports)
    return found


def _registry_holder(limits: Limits, proto: int, port: int) -> Detector | None:
    holders = _registry_memos(limits)[2]
    key = (proto, port)
    if key in holders:
        return holders[key]
    found = holders[key] = _first_holder(_registry_candidates(limits, proto), port)
    return found


def _request_key(event: L7Event) -> str:
    return repr((event.app, event.kind, sorted((k, v) for k, v in event.fields.items() if k != "body")))
