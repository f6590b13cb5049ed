"""The NFQUEUE decision loop: queued packets in, verdicts with marks out, violations as events.

One worker owns one queue and reuses the offline engine unchanged: each packet is decoded as
raw IP (`Decoder`), accounted to its 5-tuple flow with DPI (`FlowTable`), and, once the flow's
application is known (or the DPI gave up), the connection is judged by `PolicyEngine` with
both ends named by the inventory `Resolver` — the same `Observation` as offline analysis.

Verdicts (the iptables side saves the packet mark on the connection with `CONNMARK
--save-mark` and then accepts or rejects by that connmark):

- undecided (handshake, payload before detection): NF_ACCEPT without a mark, so the
  connection's next packet comes back to the queue;
- allowed, or a monitor/discover violation: NF_REPEAT with `mark_allow` (kernel fast path);
- denied (protect): NF_REPEAT with `mark_deny` (the rule rejects with tcp-reset, towards the
  client) and a crafted RST towards the server (`podwall.enforce.reset`);
- connections whose rules judge each L7 request (the candidate rules have `l7` matchers for
  the connection's application) never get the allow mark: every packet comes back, new
  requests are judged as they appear, and a refused one denies the connection. When L7
  inspection of such a connection is lost (a gap, a parser error, too many requests), the
  lost requests count as not admitted (fail closed);
- a packet that does not decode as IP, or a bug in the engine: NF_DROP (fail closed).

Verdicts are sticky per connection and policy version: `reload` swaps the policy and bumps
the version, and a connection's next queued packet is judged again under the new policy.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from podwall.analysis.check import CheckedConversation, conversation_event
from podwall.analysis.conversations import Conversation
from podwall.analysis.runner import NamedFlow, app_label
from podwall.core.errors import Problem
from podwall.core.events import Event, EventType
from podwall.core.limits import DEFAULT_LIMITS, Limits
from podwall.core.types import (
    PROTO_ICMP,
    PROTO_ICMPV6,
    PROTO_TCP,
    TCP_ACK,
    Direction,
    Endpoint,
    Observation,
    Packet,
    ip_text,
)
from podwall.core.verdict import DENY, Verdict
from podwall.datapath.decode import LINKTYPE_IPV4, LINKTYPE_IPV6, LINKTYPE_RAW, Decoder
from podwall.datapath.flows import Flow, FlowTable, default_dpi_factory
from podwall.datapath.io.nfqueue import NF_ACCEPT, NF_DROP, NF_REPEAT, QueueMessage
from podwall.datapath.io.pcap import Frame
from podwall.dpi.base import L7Event
from podwall.enforce.reset import ResetTarget
from podwall.inventory.resolver import Resolver
from podwall.policy.evaluate import PolicyEngine, normalize_app
from podwall.policy.l7context import requests_of, server_name_of
from podwall.policy.l7match import describe
from podwall.policy.model import Policy

__all__ = ["Decision", "EventSink", "ResetFn", "VerdictQueue", "Worker", "WorkerConfig"]

log = logging.getLogger(__name__)

Decision = tuple[int, int | None]  # (NF_* verdict, packet mark or None)
EventSink = Callable[[Sequence[Event]], None]
ResetFn = Callable[[ResetTarget], None]
Requests = tuple[Mapping[str, object], ...]

ACCEPT: Decision = (NF_ACCEPT, None)
DROP: Decision = (NF_DROP, None)
_ETH_IPV4 = 0x0800
_ETH_IPV6 = 0x86DD
_ICMPS = frozenset((PROTO_ICMP, PROTO_ICMPV6))
_L7_SHOWN = 16  # requests an event lists in its `l7` field


class VerdictQueue(Protocol):
    """What the worker needs from a queue (`podwall.datapath.io.nfqueue.NfQueue`, or a fake)."""

    def recv(self, timeout: float | None = ..., max_messages: int = ...) -> list[QueueMessage]: ...

    def verdict(self, packet_id: int, verdict: int, mark: int | None = None) -> None: ...

    def verdict_batch(self, max_id: int, verdict: int, mark: int | None = None) -> None: ...


@dataclass(frozen=True, slots=True)
class WorkerConfig:
    """Marks the verdicts set (the iptables rules test the same values), and behaviour switches.

    `batch`: send one batch verdict for a run of consecutive packet ids with the same verdict.
    `reset_server`: send the crafted RST to the server of a denied TCP connection.
    """

    mark_allow: int
    mark_deny: int
    reset_server: bool = True
    batch: bool = True
    source: str = "nfqueue"

    def __post_init__(self) -> None:
        for name in ("mark_allow", "mark_deny"):
            value = getattr(self, name)
            if not 0 < value <= 0xFFFFFFFF:
                raise ValueError(f"{name} must be a non-zero 32-bit mark, not {value!r}")
        if self.mark_allow == self.mark_deny:
            raise ValueError(f"mark_allow and mark_deny must differ (both are {self.mark_allow:#x})")


class _Conn:
    """What the worker remembers about one flow beyond the flow table."""

    __slots__ = ("client", "final", "judged", "per_request", "reset_sent", "seen", "server", "server_ack", "version")

    def __init__(self, version: int) -> None:
        self.version = version
        self.final: Decision | None = None  # the sticky decision, once there is one
        self.per_request: bool | None = None  # None: not known yet (application undecided)
        self.seen = 0  # DPI requests already judged
        self.judged = False  # some request was judged (per-request connections)
        self.client: Endpoint | None = None
        self.server: Endpoint | None = None
        self.server_ack: int | None = None  # the last ACK number the server sent
        self.reset_sent = False


class Worker:
    """Decides queued packets (see the module docstring); one per queue, not thread-safe."""

    def __init__(
        self,
        policy: Policy | PolicyEngine,
        resolver: Resolver,
        config: WorkerConfig,
        *,
        sink: EventSink | None = None,
        resetter: ResetFn | None = None,
        limits: Limits = DEFAULT_LIMITS,
        clock: Callable[[], float] = time.time,
        dns_service_groups: set[str] | None = None,
    ) -> None:
        self.config = config
        self.resolver = resolver
        self._dns = dns_service_groups
        self.engine = self._engine(policy)
        self.version = 1
        self._sink = sink
        self._resetter = resetter
        self._clock = clock
        self.decoder = Decoder(limits, on_problem=self._problem, source=config.source)
        self.table = FlowTable(limits, dpi_factory=default_dpi_factory(limits))
        self._conns: dict[Flow, _Conn] = {}
        self._frame = Frame(0, 0.0, LINKTYPE_RAW, b"", 0)
        self._events: list[Event] = []
        self._resets: list[ResetTarget] = []
        self._last_id: int | None = None  # the last packet id given a verdict
        self.stats: dict[str, int] = dict.fromkeys(
            (
                "packets",
                "undecodable",
                "undecided",
                "sticky",
                "allowed",
                "denied",
                "violations",
                "per_request",
                "errors",
                "resets",
                "verdicts",
                "batches",
            ),
            0,
        )

    def _engine(self, policy: Policy | PolicyEngine) -> PolicyEngine:
        return policy if isinstance(policy, PolicyEngine) else PolicyEngine(policy, dns_service_groups=self._dns)

    def _problem(self, problem: Problem) -> None:
        log.warning("%s", problem)

    # -- policy ---------------------------------------------------------------------------

    def reload(self, policy: Policy | PolicyEngine) -> int:
        """Use a new policy from the next packet on; returns the new policy version. Sticky
        verdicts of earlier versions are judged again when their connection's next packet comes."""
        self.engine = self._engine(policy)
        self.version += 1
        return self.version

    # -- the loop -------------------------------------------------------------------------

    def run(self, queue: VerdictQueue, stop: threading.Event, timeout: float = 0.2, max_messages: int = 64) -> None:
        """Receive and decide until `stop` is set (checked at least every `timeout` seconds)."""
        while not stop.is_set():
            messages = queue.recv(timeout, max_messages)
            if messages:
                self.handle(queue, messages)

    def handle(self, queue: VerdictQueue, messages: Sequence[QueueMessage]) -> list[Decision]:
        """Decide `messages` (in queue order), send their verdicts, then resets and events."""
        decisions: list[Decision] = []
        for msg in messages:
            try:
                decisions.append(self.decide(msg))
            except Exception:  # a bug must not stop the queue: this packet is dropped (fail closed)
                log.exception("packet %d: internal error, dropped", msg.packet_id)
                self.stats["errors"] += 1
                decisions.append(DROP)
        self._send(queue, messages, decisions)
        if self._resets:
            resets, self._resets = self._resets, []
            for target in resets:
                self._reset(target)
        if self._events and self._sink is not None:
            events, self._events = self._events, []
            try:
                self._sink(events)
            except Exception:
                log.exception("%d enforcement events could not be recorded", len(events))
        return decisions

    def take_events(self) -> list[Event]:
        """Events not handed to a sink (there is none, or `decide` was called directly)."""
        events, self._events = self._events, []
        return events

    def _send(self, queue: VerdictQueue, messages: Sequence[QueueMessage], decisions: list[Decision]) -> None:
        n = len(messages)
        i = 0
        stats = self.stats
        while i < n:
            first = decisions[i]
            j = i
            # A batch verdict covers every waiting packet up to an id: only a run of consecutive
            # ids following the last verdict is sure to hold no packet we have not judged.
            start = messages[i].packet_id
            contiguous = self._last_id is not None and start == (self._last_id + 1) & 0xFFFFFFFF
            while (
                j + 1 < n
                and decisions[j + 1] == first
                and messages[j + 1].packet_id == (messages[j].packet_id + 1) & 0xFFFFFFFF
            ):
                j += 1
            if self.config.batch and not contiguous and j > i + 1:
                # After a gap, the run's first packet alone: then the rest follows it without one.
                queue.verdict(start, first[0], first[1])
                stats["verdicts"] += 1
                i += 1
                contiguous = True
            if self.config.batch and contiguous and j > i:
                queue.verdict_batch(messages[j].packet_id, first[0], first[1])
                stats["batches"] += 1
            else:
                for k in range(i, j + 1):
                    queue.verdict(messages[k].packet_id, first[0], first[1])
                    stats["verdicts"] += 1
            self._last_id = messages[j].packet_id
            i = j + 1

    def _reset(self, target: ResetTarget) -> None:
        if self._resetter is None:
            return
        try:
            self._resetter(target)
            self.stats["resets"] += 1
        except OSError as exc:
            log.warning(
                "cannot reset %s:%d -> %s:%d: %s",
                ip_text(target.client_ip),
                target.client_port,
                ip_text(target.server_ip),
                target.server_port,
                exc,
            )

    # -- one packet -----------------------------------------------------------------------

    def decide(self, msg: QueueMessage) -> Decision:
        """The verdict and mark for one queued packet (events and resets are kept for `handle`)."""
        stats = self.stats
        stats["packets"] += 1
        frame = self._frame
        data = msg.payload
        frame.number += 1
        frame.ts = self._clock()
        hw = msg.hw_protocol
        frame.linktype = LINKTYPE_IPV4 if hw == _ETH_IPV4 else LINKTYPE_IPV6 if hw == _ETH_IPV6 else LINKTYPE_RAW
        frame.data = data
        cap = msg.cap_len
        frame.orig_len = cap if cap is not None and cap > len(data) else len(data)
        pkt = self.decoder.decode(frame)
        if pkt is None:
            stats["undecodable"] += 1
            return DROP
        table = self.table
        ended = table.add(pkt)
        if ended:
            conns = self._conns
            for gone in ended:
                conns.pop(gone, None)
        flow = table.last_flow
        if flow is None:  # pragma: no cover - add() always sets it
            return DROP
        direction = table.last_direction
        conn = self._conns.get(flow)
        if conn is None:
            conn = self._conns[flow] = _Conn(self.version)
        if direction is Direction.S2C and pkt.tcp_flags & TCP_ACK and pkt.proto == PROTO_TCP:
            conn.server_ack = pkt.ack
        if conn.version != self.version:
            conn.version = self.version
            conn.final = None
            conn.per_request = None
            conn.seen = 0
            conn.judged = False
        elif conn.final is not None:
            stats["sticky"] += 1
            return conn.final
        return self._judge(flow, conn, pkt, direction)

    def _judge(self, flow: Flow, conn: _Conn, pkt: Packet, direction: Direction) -> Decision:
        dpi = flow.dpi
        if dpi is not None and dpi.app is None and flow.inherited_app is None:
            self.stats["undecided"] += 1
            return ACCEPT
        if conn.client is None or conn.server is None:
            resolve = self.resolver.resolve
            conn.client = resolve(ip_text(flow.client_ip), flow.client_port)
            conn.server = resolve(ip_text(flow.server_ip), flow.server_port)
        if conn.per_request is None:
            conn.per_request = self._per_request(flow, conn.client, conn.server)
        if not conn.per_request:
            requests = requests_of(dpi.requests, dpi.requests_truncated) if dpi is not None else ()
            verdict = self.engine.evaluate(self._observation(flow, conn.client, conn.server, requests))
            return self._apply(flow, conn, pkt, direction, verdict, True, ())
        self.stats["per_request"] += 1
        assert dpi is not None  # per-request needs L7 candidates, which need an application
        events: list[L7Event] = dpi.requests
        lost = dpi.requests_truncated or (dpi.done and (flow.gaps > 0 or dpi.error is not None))
        finished = dpi.done  # nothing more will be parsed: this judgement is the last one
        fresh = events[conn.seen :]
        conn.seen = len(events)
        requests = requests_of(fresh, lost)
        if not requests:
            if not finished:
                return ACCEPT  # nothing new, or client messages that are no requests (a MySQL ping)
            if conn.judged:
                # Parsing ended cleanly after requests that were all admitted: no request can
                # follow that the DPI would see, so the connection may leave the queue.
                conn.final = (NF_REPEAT, self.config.mark_allow)
                return conn.final
        conn.judged = True
        verdict = self.engine.evaluate(self._observation(flow, conn.client, conn.server, requests))
        return self._apply(flow, conn, pkt, direction, verdict, finished, requests)

    def _per_request(self, flow: Flow, client: Endpoint, server: Endpoint) -> bool:
        """Whether a rule that could decide this connection judges L7 requests of its application."""
        engine = self.engine
        cm = engine.membership(client)
        sm = engine.membership(server, flow.server_name)
        port = 0 if flow.proto in _ICMPS else flow.server_port
        app = normalize_app(flow.app)
        for e in engine.compiled.candidates(cm.ordered, sm.ordered, flow.proto, port):
            if e.l7 is not None and not e.disabled and not e.staged and (e.apps is None or app in e.apps):
                return True
        return False

    @staticmethod
    def _observation(flow: Flow, client: Endpoint, server: Endpoint, requests: Requests) -> Observation:
        # As NamedFlow.observation builds it offline, with the requests chosen by the caller.
        port = 0 if flow.proto in _ICMPS else flow.server_port
        name = flow.server_name or server_name_of(requests)
        return Observation(client, server, flow.proto, port, flow.app, requests, name)

    def _apply(
        self,
        flow: Flow,
        conn: _Conn,
        pkt: Packet,
        direction: Direction,
        verdict: Verdict,
        final: bool,
        requests: Requests,
    ) -> Decision:
        config = self.config
        stats = self.stats
        if verdict.action == DENY:
            decision: Decision = (NF_REPEAT, config.mark_deny)
            final = True
            stats["denied"] += 1
            if config.reset_server and flow.proto == PROTO_TCP and not conn.reset_sent:
                conn.reset_sent = True
                self._resets.append(self._target(flow, conn, pkt, direction))
        else:
            decision = (NF_REPEAT, config.mark_allow) if final else ACCEPT
            stats["allowed"] += 1
        if verdict.violation:
            stats["violations"] += 1
            self._events.append(self._event(flow, conn, verdict, requests))
        if final:
            conn.final = decision
        return decision

    @staticmethod
    def _target(flow: Flow, conn: _Conn, pkt: Packet, direction: Direction) -> ResetTarget:
        if conn.server_ack is not None:
            seq = conn.server_ack
        elif direction is Direction.C2S:
            seq = pkt.seq
        else:  # pragma: no cover - a server packet with ACK has set server_ack already
            seq = pkt.ack
        client_seq = pkt.ack if direction is Direction.C2S and pkt.tcp_flags & TCP_ACK else None
        return ResetTarget(flow.client_ip, flow.client_port, flow.server_ip, flow.server_port, seq, client_seq)

    def _event(self, flow: Flow, conn: _Conn, verdict: Verdict, requests: Requests) -> Event:
        """A violation event in the offline check's schema (one session of one conversation)."""
        client, server = conn.client, conn.server
        assert client is not None and server is not None
        port = 0 if flow.proto in _ICMPS else flow.server_port
        label = app_label(flow.app, flow.proto, flow.server_port)
        conv = Conversation(client.group, server.group, port, flow.proto, label, client, server)
        conv.add(NamedFlow(flow, client, server, self.config.source))
        event = conversation_event(CheckedConversation(conv, verdict), EventType.VIOLATION, self.config.source)
        shown = [describe(r) for r in requests[:_L7_SHOWN]]
        if shown:
            event.l7 = {"requests": shown, "requests_total": len(requests)}
        return event
