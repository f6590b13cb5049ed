"""The WAF as a per-flow inspector of the datapath pipeline: HTTP events in, WAF findings out.

`waf_flow_inspector(engine)` is a `FlowInspectorFactory` (see inspect/pipeline.py): for every
TCP flow it makes a `WafFlowInspector`, which works from the DPI's L7 events, not from stream
bytes. It pairs each HTTP `request` event with its `response` and runs the WAF on the pair:

- HTTP/1 (`http`): responses come back in request order on a keep-alive connection, so each
  response completes the oldest request still waiting;
- HTTP/2 and gRPC (`http2`, `grpc`): by `stream_id`; events without one are inspected as
  requests alone, at once. The DPI reports an HTTP/2 request at its HEADERS and, when the
  HEADERS did not end the stream (`end_stream` False), its body later in a `request_body`
  event (when the client ends the stream, the capture is full, or the stream ends first),
  always before the response: the body joins its request as `body`, as HTTP/1's does.

A request whose response never comes (cut connection, more than `MAX_PENDING` waiting) is
inspected on its own, at the latest when the flow ends (`finish`). Findings carry ts/frame 0:
the pipeline adds the frames. A blocked transaction's findings get `action_on_block`.

`immediate` (the inline enforcer) inspects each request as soon as it is complete (HTTP/2:
at its `request_body`, or at its HEADERS when they end the stream), so that a blocking request
is cut before the server answers it; the pair is inspected again when the response comes, and
only the response side's findings are kept from that second look.
"""

from __future__ import annotations

import dataclasses
from collections import deque
from collections.abc import Callable

from podwall.core.types import PROTO_TCP, Direction
from podwall.dpi.base import DetectContext, L7Event
from podwall.dpi.protocols.http2_frames import MAX_STREAMS
from podwall.inspect.findings import Action, Finding
from podwall.inspect.waf.engine import WafEngine, WafResult

__all__ = ["HTTP_APPS", "MAX_PENDING", "WafFlowInspector", "waf_flow_inspector"]

HTTP_APPS = frozenset({"http", "http2", "grpc"})
MAX_PENDING = 32  # HTTP/1 requests waiting for their response per flow; past this the oldest is inspected alone
MAX_PENDING_STREAMS = MAX_STREAMS  # HTTP/2 streams: as many as the DPI holds, so a body it reports finds its request
_KINDS = frozenset({"request", "request_body", "response"})
_NO_ADDRESS = "0.0.0.0"  # the pipeline's DetectContext carries ports only


class WafFlowInspector:
    """One flow's WAF: pairs request and response events and inspects each transaction once."""

    __slots__ = ("_action", "_by_stream", "_client", "_engine", "_immediate", "_in_order", "_reported", "_server")

    def __init__(
        self,
        engine: WafEngine,
        action_on_block: Action = Action.DENY,
        client_port: int = 0,
        server_port: int = 80,
        immediate: bool = False,
    ) -> None:
        self._engine = engine
        self._immediate = immediate
        self._action = action_on_block
        self._client = (_NO_ADDRESS, client_port)
        self._server = (_NO_ADDRESS, server_port)
        self._in_order: deque[L7Event] = deque()  # HTTP/1 requests waiting, oldest first
        self._by_stream: dict[int, L7Event] = {}  # HTTP/2 requests waiting, by stream id
        # immediate: per HTTP/2 stream, the request-side findings reported so far
        self._reported: dict[int, set[tuple[object, ...]]] = {}

    @property
    def wants_bytes(self) -> bool:
        return False

    def on_bytes(self, direction: Direction, data: bytes, datagram: bool) -> list[Finding]:
        return []

    def on_event(self, event: L7Event) -> list[Finding]:
        if event.app not in HTTP_APPS or event.kind not in _KINDS:
            return []
        if event.app == "http":
            return self._http1(event) if event.kind != "request_body" else []
        stream = event.fields.get("stream_id")
        if not isinstance(stream, int):
            return self._inspect(event, None) if event.kind == "request" else []
        if event.kind == "request":
            found = self._evict(len(self._by_stream), MAX_PENDING_STREAMS)
            self._by_stream[stream] = event
            return found + self._now(stream, event)
        if event.kind == "request_body":
            return self._body(stream, event)
        request = self._by_stream.pop(stream, None)
        if request is None:
            return []
        return self._inspect(request, event, self._reported.pop(stream, None))

    def finish(self) -> list[Finding]:
        found: list[Finding] = []
        if not self._immediate:  # immediate: each request was inspected when it (and its body) came
            while self._in_order:
                found += self._inspect(self._in_order.popleft(), None)
            for request in self._by_stream.values():
                found += self._inspect(request, None)
        self._in_order.clear()
        self._by_stream.clear()
        self._reported.clear()
        return found

    def _body(self, stream: int, event: L7Event) -> list[Finding]:
        """An HTTP/2 request's body arrived: it joins its request, which is complete now."""
        request = self._by_stream.get(stream)
        body = event.fields.get("body") or b""
        if request is None:
            # Its request is no longer held (evicted, or a mid-stream start): the body is
            # inspected as a request of its own, with what its event says (stream, path).
            request = L7Event(event.app, "request", event.direction, {**event.fields, "body": body})
            return self._inspect(request, None)
        request = L7Event(request.app, request.kind, request.direction, {**request.fields, "body": body})
        self._by_stream[stream] = request
        return self._now(stream, request)

    def _http1(self, event: L7Event) -> list[Finding]:
        if event.kind == "request":
            found = self._evict(len(self._in_order), MAX_PENDING) + self._now(None, event)
            self._in_order.append(event)
            return found
        status = event.fields.get("status")
        if isinstance(status, int) and 100 <= status < 200 and status != 101:
            return []  # an interim response (100 Continue, 103 Early Hints): the final one follows
        if not self._in_order:
            return []  # a response to a request this inspector never saw (mid-stream start)
        return self._inspect(self._in_order.popleft(), event, seen=self._immediate)

    def _now(self, stream: int | None, request: L7Event) -> list[Finding]:
        """Immediate mode: inspect a request as it stands now (an HTTP/2 one at its HEADERS and
        again with its body), reporting only what was not reported for it before."""
        if not self._immediate:
            return []
        found = self._inspect(request, None)
        if stream is None:
            return found
        reported = self._reported.setdefault(stream, set())
        fresh = [f for f in found if _key(f) not in reported]
        reported.update(_key(f) for f in fresh)
        return fresh

    def _evict(self, waiting: int, limit: int) -> list[Finding]:
        if waiting < limit:
            return []
        if self._in_order:
            oldest = self._in_order.popleft()
            # immediate: already inspected on its own when it came
            return [] if self._immediate else self._inspect(oldest, None)
        # the oldest stream that owes no body (as the DPI forgets them), else the oldest
        held = self._by_stream
        stream = next((k for k, r in held.items() if _owes_nothing(r)), None)
        if stream is None:
            stream = next(iter(held))
        request = held.pop(stream)
        self._reported.pop(stream, None)
        # immediate: inspected at its HEADERS (and body); a body that still comes is inspected alone
        return [] if self._immediate else self._inspect(request, None)

    def _inspect(
        self,
        request: L7Event,
        response: L7Event | None,
        reported: set[tuple[object, ...]] | None = None,
        seen: bool = False,
    ) -> list[Finding]:
        """Inspect a transaction. Immediate mode inspected its request before: `seen` (HTTP/1)
        keeps only the response's findings; `reported` (HTTP/2) also keeps request findings
        that were not reported then (its body came after its HEADERS were looked at)."""
        result = self._engine.inspect_events(request, response, self._client, self._server)
        found = self._findings(result)
        if response is not None and (seen or reported is not None):
            done = reported or set()
            found = [f for f in found if f.direction is Direction.S2C or (not seen and _key(f) not in done)]
        return found

    def _findings(self, result: WafResult) -> list[Finding]:
        found = result.findings()
        if result.blocked and self._action is not Action.DENY:
            found = [dataclasses.replace(f, action=self._action) for f in found]
        return found


def waf_flow_inspector(
    engine: WafEngine, *, action_on_block: Action = Action.DENY, immediate: bool = False
) -> Callable[[DetectContext], WafFlowInspector | None]:
    """A pipeline factory: a WAF inspector for every TCP flow (HTTP runs over TCP only), None otherwise.

    The engine is shared by the flows of one pipeline, which runs them one packet at a time.
    """

    def make(ctx: DetectContext) -> WafFlowInspector | None:
        if ctx.proto != PROTO_TCP:
            return None
        return WafFlowInspector(engine, action_on_block, ctx.client_port, ctx.server_port, immediate)

    return make


def _key(finding: Finding) -> tuple[object, ...]:
    """What makes two findings of one request the same report: the action too, since a finding
    reported as an alert on a request's head may block once its body adds to the score."""
    return (finding.id, finding.location, finding.match, finding.direction, finding.action)


def _owes_nothing(request: L7Event) -> bool:
    """An HTTP/2 request held without a body still to come (its HEADERS ended it, or the body came)."""
    return request.fields.get("end_stream") is not False or "body" in request.fields
