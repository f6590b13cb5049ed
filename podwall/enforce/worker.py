"""The NFQUEUE decision loop: queued packets in, verdicts with marks out, violations as events.

One worker owns one queue and reuses the offline engine unchanged: each packet is decoded as
raw IP (`Decoder`), accounted to its 5-tuple flow with DPI (`FlowTable`), and, once the flow's
application is known (or the DPI gave up), the connection is judged by `PolicyEngine` with
both ends named by the inventory `Resolver` — the same `Observation` as offline analysis.

Verdicts (the iptables side saves the packet mark on the connection with `CONNMARK
--save-mark` and then accepts or rejects by that connmark):

- undecided (payload before detection): NF_ACCEPT without a mark, so the connection's next
  payload packet comes back to the queue;
- allowed, or a monitor/discover violation: NF_REPEAT with `mark_allow` (kernel fast path);
- denied (protect): NF_REPEAT with `mark_deny` (the rule rejects with tcp-reset, towards the
  client) and a crafted RST towards the server (`podwall.enforce.reset`);
- connections whose rules judge each L7 request (the candidate rules have `l7` matchers for
  the connection's application) never get the allow mark: every payload packet comes back, new
  requests are judged as they appear, and a refused one denies the connection. When L7
  inspection of such a connection is lost (a gap, a parser error, too many requests), the
  lost requests count as not admitted (fail closed);
- a packet that does not decode as IP, or a bug in the engine: NF_DROP (fail closed).

The verdict mark replaces only the bits of `mark_mask` (podwall's) of the packet's mark.

**What the kernel tells the worker.** Podwall's queue rules (podwall/enforce/iptables.py) queue
only packets that carry payload, and flag each (`flag_queued`): sent in the connection's reply
direction (`flag_reply`), first packet of its conntrack entry to be queued (`flag_first`). A TCP
flow whose handshake the worker did not see starts with a rebuilt SYN (from the end conntrack
calls the originator, with the sequence number the packet implies) wherever the flow table would
otherwise name the wrong end client by its ports, so client and server are conntrack's. A first
packet always starts a new flow, even on an address/port pair the worker still holds (a reused
pair is a new connection: it must not inherit the old one's verdict); so does a bare SYN, for
rules that queue handshakes and set no flags.

**Once decided, a connection leaves the flow table.** Its packets no longer reach the worker,
so the worker keeps only a small record (5-tuple, application, verdict, policy version) and
frees the flow with its DPI state. A packet that still arrives (queued before the verdict was
saved, or sent back after a reload) is answered from the record: the same decision while the
policy version is unchanged, else a new judgement with the recorded application. Verdicts
without L7 requests are also cached per (client address, server address, transport, port,
application, server name) and policy version, so a new connection between the same ends costs
no policy evaluation.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

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
    TCP_FIN,
    TCP_RST,
    TCP_SYN,
    Direction,
    Endpoint,
    Observation,
    Packet,
    ip_text,
)
from podwall.core.verdict import DENY, Verdict
from podwall.datapath.decode import LINKTYPE_IPV4, LINKTYPE_IPV6, LINKTYPE_RAW, Decoder
from podwall.datapath.flows import DpiFactory, Flow, FlowTable, default_dpi_factory, server_side_by_port
from podwall.datapath.io.nfqueue import NF_REPEAT, QueueMessage
from podwall.datapath.io.pcap import Frame
from podwall.dpi.base import DetectContext, L7Event
from podwall.enforce.connstate import ConnState, FlowKeyTuple, Record, VerdictCache, flow_key
from podwall.enforce.inline_inspect import InlineInspection
from podwall.enforce.plan import MARK_ALLOW, MARK_DENY, MARK_MASK, PKT_FIRST, PKT_QUEUED, PKT_REPLY
from podwall.enforce.reset import ResetTarget
from podwall.enforce.verdicts import ACCEPT, DROP, Decision, VerdictQueue, send_verdicts
from podwall.inventory.resolver import Resolver
from podwall.policy.evaluate import PolicyEngine, normalize_app
from podwall.policy.l7context import requests_of, server_name_of
from podwall.policy.l7match import describe
from podwall.policy.model import Policy

__all__ = ["Decision", "EventSink", "ResetFn", "VerdictQueue", "Worker", "WorkerConfig"]

log = logging.getLogger(__name__)

EventSink = Callable[[Sequence[Event]], None]
ResetFn = Callable[[ResetTarget], None]
Requests = tuple[Mapping[str, object], ...]

_ETH_IPV4 = 0x0800
_ETH_IPV6 = 0x86DD
_ICMPS = frozenset((PROTO_ICMP, PROTO_ICMPV6))
_SYN_ACK = TCP_SYN | TCP_ACK
_SYN_FIN_RST = TCP_SYN | TCP_FIN | TCP_RST
_L7_SHOWN = 16  # requests an event lists in its `l7` field
_RECORDS = 1 << 17  # decided connections remembered (oldest forgotten first)
_CACHE = 4096  # cached verdicts per policy version


@dataclass(frozen=True, slots=True)
class WorkerConfig:
    """Marks the verdicts set (the iptables rules test the same values), and behaviour switches.

    `mark_mask`: the bits of the packet mark a verdict mark replaces (the others are kept).
    `flag_queued`, `flag_first`, `flag_reply`: the packet-mark flags of the queue rules (0: the
    rules set none; see the module docstring). `batch`: send one batch verdict for a run of
    consecutive packet ids with the same verdict. `reset_server`: send the crafted RST to the
    server of a denied TCP connection.
    """

    mark_allow: int
    mark_deny: int
    reset_server: bool = True
    batch: bool = True
    source: str = "nfqueue"
    mark_mask: int = 0xFFFFFFFF
    flag_queued: int = 0
    flag_first: int = 0
    flag_reply: int = 0

    def __post_init__(self) -> None:
        for name in ("mark_allow", "mark_deny"):
            value = getattr(self, name)
            if not 0 < value <= 0xFFFFFFFF:
                raise ValueError(f"{name} must be a non-zero 32-bit mark, not {value!r}")
        if self.mark_allow == self.mark_deny:
            raise ValueError(f"mark_allow and mark_deny must differ (both are {self.mark_allow:#x})")
        for name in ("mark_allow", "mark_deny"):
            if getattr(self, name) & ~self.mark_mask:
                raise ValueError(f"{name} {getattr(self, name):#x} has bits outside mark_mask {self.mark_mask:#x}")

    @classmethod
    def podwall(cls, source: str = "nfqueue", **options: bool) -> WorkerConfig:
        """The configuration matching podwall's own ruleset (plan.py marks, iptables.py flags)."""
        return cls(
            MARK_ALLOW, MARK_DENY, source=source, mark_mask=MARK_MASK, flag_queued=PKT_QUEUED,
            flag_first=PKT_FIRST, flag_reply=PKT_REPLY, **options,
        )  # fmt: skip


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
        inspection: InlineInspection | None = None,
    ) -> None:
        self.config = config
        self.inspection = inspection
        self._resolver = resolver
        self._dns = dns_service_groups
        self.engine = self._engine(policy)
        self.version = 1
        self._sink = sink
        self._resetter = resetter
        self._clock = clock
        self.decoder = Decoder(limits, on_problem=self._problem, source=config.source)
        # The DPI of a first payload answered from the verdict cache (`_first_payload`): none when
        # inspectors watch the connections, as they need the flow table's flows.
        self._first_dpi: DpiFactory | None = None
        if inspection is not None:
            self.table = inspection.flow_table()
        else:
            self._first_dpi = default_dpi_factory(limits)
            self.table = FlowTable(limits, dpi_factory=self._first_dpi)
        self._conns: dict[FlowKeyTuple, ConnState] = {}
        self._records: OrderedDict[FlowKeyTuple, Record] = OrderedDict()
        self._verdicts = VerdictCache(_CACHE)
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
                "new_connections",
                "cached_verdicts",
                "first_payload_cached",
                "findings",
            ),
            0,
        )

    def _engine(self, policy: Policy | PolicyEngine) -> PolicyEngine:
        return policy if isinstance(policy, PolicyEngine) else PolicyEngine(policy, dns_service_groups=self._dns)

    def _problem(self, problem: Problem) -> None:
        log.warning("%s", problem)

    # -- policy ---------------------------------------------------------------------------

    @property
    def resolver(self) -> Resolver:
        return self._resolver

    @resolver.setter
    def resolver(self, resolver: Resolver) -> None:
        """A new inventory: cached verdicts named the ends by the old one."""
        self._resolver = resolver
        self._verdicts.clear()

    def reload(self, policy: Policy | PolicyEngine) -> int:
        """Use a new policy from the next packet on; returns the new policy version. Sticky
        verdicts of earlier versions are judged again when their connection's next packet comes."""
        self.engine = self._engine(policy)
        self.version += 1
        self._verdicts.clear()
        return self.version

    # -- the loop -------------------------------------------------------------------------

    def run(
        self,
        queue: VerdictQueue,
        stop: threading.Event,
        timeout: float = 0.2,
        max_messages: int = 64,
        spin: float = 0.0,
    ) -> None:
        """Receive and decide until `stop` is set (checked at least every `timeout` seconds);
        `spin`: seconds of busy polling before the queue sleeps (see `NfQueue.recv`)."""
        while not stop.is_set():
            messages = queue.recv(timeout, max_messages, spin)
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
        self._last_id = send_verdicts(queue, messages, decisions, self._last_id, self.config.batch, self.stats)
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
        decision = self._decide(msg)
        mark = decision[1]
        if mark is not None:
            mask = self.config.mark_mask
            mark |= msg.mark & ~mask & 0xFFFFFFFF
            return (decision[0], mark)
        return decision

    def _decide(self, msg: QueueMessage) -> Decision:
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
        key = flow_key(pkt)
        config = self.config
        mark = msg.mark
        flags = mark if mark & config.flag_queued else 0  # the queue rules' flags, when they set them
        # A new connection: flagged so by the queue rules, or a bare SYN (rules that queue handshakes).
        first = bool(flags & config.flag_first) or (pkt.proto == PROTO_TCP and pkt.tcp_flags & _SYN_ACK == TCP_SYN)
        conn = self._conns.get(key)
        record: Record | None = None
        if first:
            # A new conntrack entry: whatever the worker holds for this pair is another connection.
            stats["new_connections"] += 1
            self._records.pop(key, None)
            if conn is not None:
                self._forget(key, conn)
                conn = None
            if (
                self._first_dpi is not None
                and pkt.proto == PROTO_TCP
                and not flags & config.flag_reply
                and not pkt.tcp_flags & _SYN_FIN_RST
                and pkt.payload
            ):
                quick = self._first_payload(pkt, key)
                if quick is not None:
                    return quick
        elif conn is None:
            record = self._records.get(key)
            if record is not None:
                if record.version == self.version:
                    stats["sticky"] += 1
                    return record.decision
                del self._records[key]  # judged again below, as a flow that knows its application
        if conn is None and pkt.proto == PROTO_TCP and flags and not pkt.tcp_flags & TCP_SYN:
            from_server = bool(flags & config.flag_reply)
            # The flow table names a mid-stream flow's client by its ports, else its first sender:
            # a SYN is rebuilt only where that would name the wrong end.
            by_port = server_side_by_port(pkt.sport, pkt.dport)
            if (by_port is False) != from_server:
                self._handshake(pkt, from_server)
        table = self.table
        self._add(pkt)
        flow = table.last_flow
        if flow is None:  # pragma: no cover - add() always sets it
            return DROP
        direction = table.last_direction
        if conn is None or conn.flow is not flow:
            conn = self._conns[key] = ConnState(flow, self.version)
            if record is not None and flow.app is None:
                flow.inherited_app = record.app
                flow.inherited_server_name = record.server_name
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
        decision = self._judge(flow, conn, pkt, direction)
        if conn.inspect:
            assert self.inspection is not None
            self.inspection.remember(flow, frame)  # only guarded connections keep frames for pcaps
            decision = self._inspected(flow, conn, pkt, direction, decision)
        if conn.final is not None:
            self._retire(key, conn)
        return decision

    def _first_payload(self, pkt: Packet, key: FlowKeyTuple) -> Decision | None:
        """The client's first payload of a new TCP connection, answered without a flow when an
        earlier connection between the same ends with the same application and server name was
        allowed without a violation or per-request rules: the DPI runs on the payload alone and
        the verdict cache gives the answer. None: the connection takes the full path (which
        names the application again, from the same bytes)."""
        assert self._first_dpi is not None
        dpi = self._first_dpi(DetectContext(PROTO_TCP, pkt.sport, pkt.dport))
        dpi.on_stream(Direction.C2S, pkt.payload)
        app = dpi.app
        if app is None:
            return None  # undecided: the flow table keeps the bytes for the next segment
        if app == "unknown":
            app = None  # as Flow.app names it
        name = dpi.server_name
        cache_key = VerdictCache.key_of(pkt.src, pkt.dst, PROTO_TCP, pkt.dport, app, name, dpi)
        cached = self._verdicts.get_key(cache_key)
        if cached is None or cached[1] or cached[0].violation or cached[0].action == DENY:
            return None
        stats = self.stats
        stats["cached_verdicts"] += 1
        stats["first_payload_cached"] += 1
        stats["allowed"] += 1
        decision: Decision = (NF_REPEAT, self.config.mark_allow)
        records = self._records
        if len(records) >= _RECORDS:
            records.popitem(last=False)
        records[key] = Record(decision, self.version, app, name, (pkt.src, pkt.sport), (pkt.dst, pkt.dport))
        return decision

    def _add(self, pkt: Packet) -> None:
        """Account a packet in the flow table; forget the worker's state of the flows that ended."""
        conns = self._conns
        for gone in self.table.add(pkt):
            k = gone.key
            gone_key = (k.proto, k.ip_a, k.port_a, k.ip_b, k.port_b)  # FlowKey orders the ends as flow_key does
            old = conns.get(gone_key)
            if old is not None and old.flow is gone:
                del conns[gone_key]

    def _handshake(self, pkt: Packet, from_server: bool) -> None:
        """Feed the flow table the SYN this mid-connection packet implies: it names the client as
        conntrack does and starts the client's stream where the packet says it started (the
        server's stream starts at its first segment, as without a SYN-ACK)."""
        if from_server:
            client, cport, server, sport, isn = pkt.dst, pkt.dport, pkt.src, pkt.sport, pkt.ack - 1
        else:
            client, cport, server, sport, isn = pkt.src, pkt.sport, pkt.dst, pkt.dport, pkt.seq - 1
        syn = Packet(pkt.ts, client, server, PROTO_TCP, cport, sport, tcp_flags=TCP_SYN, seq=isn & 0xFFFFFFFF)
        syn.frame = pkt.frame
        self._add(syn)

    def _forget(self, key: FlowKeyTuple, conn: ConnState) -> None:
        """Drop a flow from the worker and its flow table (its DPI state goes with it)."""
        del self._conns[key]
        # The flow table has no public removal (yet): its two maps are keyed like `flow_key`. Should
        # they change, flows are left to the table's timeouts (memory, not correctness).
        table = self.table
        forget = getattr(table, "forget", None)
        if forget is not None:
            forget(conn.flow)
            return
        for held in (getattr(table, "_open", None), getattr(table, "_closed", None)):
            if isinstance(held, dict) and held.get(key) is conn.flow:
                del held[key]

    def _retire(self, key: FlowKeyTuple, conn: ConnState) -> None:
        """A final decision: keep a record of the connection, free its flow."""
        assert conn.final is not None
        records = self._records
        if len(records) >= _RECORDS:
            records.popitem(last=False)
        records[key] = Record.of(conn.flow, conn.final, conn.version)
        self._forget(key, conn)

    def _judge(self, flow: Flow, conn: ConnState, pkt: Packet, direction: Direction) -> Decision:
        dpi = flow.dpi
        if dpi is not None and dpi.app is None and flow.inherited_app is None:
            self.stats["undecided"] += 1
            return ACCEPT
        if conn.per_request is None and self.inspection is None:
            cached = self._verdicts.get(flow)
            if cached is not None:
                verdict, per_request = cached
                if not per_request and not verdict.violation:
                    self.stats["cached_verdicts"] += 1
                    return self._apply(flow, conn, pkt, direction, verdict, True, ())
        if conn.client is None or conn.server is None:
            resolve = self._resolver.resolve
            conn.client = resolve(ip_text(flow.client_ip), flow.client_port)
            conn.server = resolve(ip_text(flow.server_ip), flow.server_port)
        if conn.per_request is None:
            conn.per_request = self._per_request(flow, conn.client, conn.server)
            if self.inspection is not None:
                conn.inspect = self.inspection.guards(self.engine, conn.client, conn.server)
        if not conn.per_request:
            requests = requests_of(dpi.requests, dpi.requests_truncated) if dpi is not None else ()
            verdict = self.engine.evaluate(self._observation(flow, conn.client, conn.server, requests))
            self._verdicts.put(flow, requests, verdict, False)
            return self._apply(flow, conn, pkt, direction, verdict, True, ())
        self.stats["per_request"] += 1
        assert dpi is not None  # per-request needs L7 candidates, which need an application
        events: list[L7Event] = dpi.requests
        finished = dpi.done  # nothing more will be parsed: this judgement is the last one
        if not finished and len(events) == conn.seen and not dpi.requests_truncated:
            return ACCEPT  # the common case, a packet inside a request or a response: nothing new
        lost = dpi.requests_truncated or (finished and (flow.gaps > 0 or dpi.error is not None))
        fresh = events[conn.seen :]
        conn.seen = len(events)
        requests = requests_of(fresh, lost)
        if not requests:
            if not finished:
                return ACCEPT  # nothing new, or client messages that are no requests (a MySQL ping)
            if conn.judged:
                if conn.inspect:
                    return ACCEPT  # admitted so far; the inspectors keep it in userspace to its end
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
        conn: ConnState,
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
            if conn.inspect:
                final = False  # inspected to its end: the allow mark would take it out of userspace
            decision = (NF_REPEAT, config.mark_allow) if final else ACCEPT
            stats["allowed"] += 1
        if verdict.violation:
            stats["violations"] += 1
            self._events.append(self._event(flow, conn, verdict, requests))
        if final:
            conn.final = decision
        return decision

    def _inspected(
        self, flow: Flow, conn: ConnState, pkt: Packet, direction: Direction, decision: Decision
    ) -> Decision:
        """What the inspectors found in this packet's bytes: events, and in protect mode a cut."""
        assert self.inspection is not None and conn.client is not None and conn.server is not None
        cut, events = self.inspection.review(self.engine, flow, conn.client, conn.server)
        self._events.extend(events)
        self.stats["findings"] += len(events)
        if not cut or conn.final == (NF_REPEAT, self.config.mark_deny):
            return decision
        self.stats["denied"] += 1
        if self.config.reset_server and flow.proto == PROTO_TCP and not conn.reset_sent:
            conn.reset_sent = True
            self._resets.append(self._target(flow, conn, pkt, direction))
        conn.final = (NF_REPEAT, self.config.mark_deny)
        return conn.final

    @staticmethod
    def _target(flow: Flow, conn: ConnState, pkt: Packet, direction: Direction) -> ResetTarget:
        if conn.server_ack is not None:
            seq = conn.server_ack
        elif direction is Direction.C2S:
            seq = pkt.seq
        else:  # pragma: no cover - a server packet with ACK has set server_ack already
            seq = pkt.ack
        client_seq = pkt.ack if direction is Direction.C2S and pkt.tcp_flags & TCP_ACK else None
        return ResetTarget(flow.client_ip, flow.client_port, flow.server_ip, flow.server_port, seq, client_seq)

    def _event(self, flow: Flow, conn: ConnState, verdict: Verdict, requests: Requests) -> Event:
        """A violation event in the offline check's schema (one session of one conversation)."""
        if conn.client is None or conn.server is None:
            resolve = self._resolver.resolve
            conn.client = resolve(ip_text(flow.client_ip), flow.client_port)
            conn.server = resolve(ip_text(flow.server_ip), flow.server_port)
        client, server = conn.client, conn.server
        port = 0 if flow.proto in _ICMPS else flow.server_port
        label = app_label(flow.app, flow.proto, flow.server_port)
        conv = Conversation(client.group, server.group, port, flow.proto, label, client, server)
        conv.add(NamedFlow(flow, client, server, self.config.source))
        event = conversation_event(CheckedConversation(conv, verdict), EventType.VIOLATION, self.config.source)
        shown = [describe(r) for r in requests[:_L7_SHOWN]]
        if shown:
            event.l7 = {"requests": shown, "requests_total": len(requests)}
        return event
