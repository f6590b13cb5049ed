"""The passive monitor: frames from a tap through the engine and the policy, violations out as they happen.

`Monitor` is the part without I/O: it feeds frames to the same `Engine` offline analysis uses
and judges connections while they are still open, not only when they end. A connection is
judged once its application is known (or the DPI gave up, or it stayed undecided for
`undecided_packets` packets), judged again whenever its client sends a new distinct L7 request
or its application changes, and a last time when it ends. Each (connection, deciding rule,
action, application) that is a violation is reported exactly once, with the event schema and
helpers of `podwall.analysis.check`, so a live violation reads like an offline one.

`run_monitor` is the loop around a `Tap`: batches of frames in, events to the store and sinks
after every batch (a failed write is kept and retried, never dropped), until a duration passes,
a stop flag is set or SIGINT/SIGTERM arrives. `monitor_lab` wires it to a lab's node.
"""

from __future__ import annotations

import contextlib
import hashlib
import signal
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from types import FrameType

from podwall.analysis.check import checked_flow, conversation_event, dns_service_groups
from podwall.analysis.runner import NamedFlow
from podwall.core.errors import Problem
from podwall.core.events import Event, EventType
from podwall.core.limits import DEFAULT_LIMITS, Limits
from podwall.core.types import PROTO_ICMPV6, Endpoint, ip_text
from podwall.datapath.engine import Engine
from podwall.datapath.flows import Flow
from podwall.datapath.io.afpacket import Tap, TapStats
from podwall.datapath.io.pcap import Frame
from podwall.inventory.model import Inventory
from podwall.inventory.resolver import Resolver
from podwall.lab.state import LabState
from podwall.policy.evaluate import PolicyEngine
from podwall.policy.model import Policy
from podwall.store.sinks import Sink

__all__ = [
    "DEFAULT_UNDECIDED_PACKETS",
    "LINK_CONTROL_ICMPV6",
    "LabTarget",
    "Monitor",
    "MonitorStats",
    "lab_target",
    "monitor_lab",
    "run_monitor",
]

# A connection whose application the DPI has not named after this many packets is judged by
# its port: most protocols are named on their first payload, and a live monitor must not wait
# for the end of a long connection to report it.
DEFAULT_UNDECIDED_PACKETS = 24

# IGMP, and ICMPv6 multicast listener (130-132, 143) and neighbour discovery (133-137) messages:
# the link's own plumbing, which every interface (the node's bridge too) sends by itself and no
# network policy governs (Kubernetes NetworkPolicy cannot block it). Reports of it would bury
# the real violations, so such connections are counted, not judged.
LINK_CONTROL_ICMPV6 = frozenset((130, 131, 132, 133, 134, 135, 136, 137, 143))
PROTO_IGMP = 2


@dataclass(slots=True)
class MonitorStats:
    """What a monitor run saw and did; `tap` holds the capture side's own counters."""

    frames: int = 0
    flows_ended: int = 0
    link_control: int = 0  # connections not judged: IGMP, ICMPv6 neighbour discovery and MLD
    evaluations: int = 0
    violations: int = 0
    events_written: int = 0
    write_errors: int = 0
    last_write_error: str | None = None
    started: float = field(default_factory=time.time)
    stopped: float | None = None
    tap: TapStats | None = None

    def to_dict(self) -> dict[str, object]:
        out: dict[str, object] = {
            "frames": self.frames,
            "flows_ended": self.flows_ended,
            "link_control": self.link_control,
            "evaluations": self.evaluations,
            "violations": self.violations,
            "events_written": self.events_written,
            "write_errors": self.write_errors,
            "last_write_error": self.last_write_error,
            "seconds": (self.stopped or time.time()) - self.started,
        }
        if self.tap is not None:
            t = self.tap
            out["tap"] = {
                "frames_read": t.frames_read,
                "frames_kept": t.frames_kept,
                "bytes_read": t.bytes_read,
                "truncated": t.truncated,
                "kernel_drops": t.kernel_drops,
                "per_interface": dict(t.per_interface),
            }
        return out


@dataclass(slots=True)
class _Watch:
    """What the monitor remembers about one open connection."""

    client: Endpoint
    server: Endpoint
    evaluated: bool = False
    requests: int = 0
    app: str | None = None
    reported: set[tuple[int, str, str]] = field(default_factory=set)


class Monitor:
    """Frames in, violation events out, while connections are open (no I/O; see the module doc)."""

    def __init__(
        self,
        policy: PolicyEngine,
        resolver: Resolver,
        *,
        limits: Limits = DEFAULT_LIMITS,
        source: str = "monitor",
        undecided_packets: int = DEFAULT_UNDECIDED_PACKETS,
        on_problem: Callable[[Problem], None] | None = None,
    ) -> None:
        if undecided_packets < 1:
            raise ValueError(f"undecided_packets must be at least 1, not {undecided_packets}")
        self.policy = policy
        self.resolver = resolver
        self.source = source
        self.undecided_packets = undecided_packets
        self.engine = Engine(limits, dpi=True, on_problem=on_problem, source=source)
        self.stats = MonitorStats()
        self._watch: dict[Flow, _Watch] = {}

    @classmethod
    def for_policy(
        cls,
        policy: Policy,
        inventory: Inventory | None,
        *,
        limits: Limits = DEFAULT_LIMITS,
        source: str = "monitor",
        undecided_packets: int = DEFAULT_UNDECIDED_PACKETS,
        on_problem: Callable[[Problem], None] | None = None,
    ) -> Monitor:
        """A monitor judging by `policy`, naming endpoints from `inventory` (as `podwall check` does)."""
        resolver = Resolver(inventory)
        engine = PolicyEngine(policy, dns_service_groups=dns_service_groups(inventory, resolver))
        return cls(
            engine, resolver, limits=limits, source=source, undecided_packets=undecided_packets, on_problem=on_problem
        )

    def feed(self, frames: Iterable[Frame]) -> list[Event]:
        """Process a batch of frames; returns the violations it revealed (each reported once)."""
        engine = self.engine
        table = engine.table
        events: list[Event] = []
        touched: dict[Flow, None] = {}
        for frame in frames:
            self.stats.frames += 1
            before = engine.packets
            ended = engine.feed(frame)
            for flow in ended:
                events += self._final(flow)
            if engine.packets != before and table.last_flow is not None:
                touched[table.last_flow] = None
        # Judged after the batch, not per packet: the DPI state of a flow is current by now and
        # a busy flow costs one look per batch.
        for flow in touched:
            if not flow.end_reason:
                events += self._live(flow)
        return events

    def finish(self) -> list[Event]:
        """End of monitoring: every open connection ends and gets its last look."""
        events: list[Event] = []
        for flow in self.engine.finish():
            events += self._final(flow)
        return events

    # -- judging ---------------------------------------------------------------------------

    def _watch_of(self, flow: Flow) -> _Watch:
        watch = self._watch.get(flow)
        if watch is None:
            client = self.resolver.resolve(ip_text(flow.client_ip), flow.client_port)
            server = self.resolver.resolve(ip_text(flow.server_ip), flow.server_port)
            watch = self._watch[flow] = _Watch(client, server)
        return watch

    def _live(self, flow: Flow) -> list[Event]:
        watch = self._watch_of(flow)
        dpi = flow.dpi
        requests = len(dpi.requests) if dpi is not None else 0
        if watch.evaluated:
            if requests == watch.requests and flow.app == watch.app:
                return []
        elif dpi is not None and dpi.app is None and flow.packets_total < self.undecided_packets:
            return []  # the DPI has not decided yet (a bare handshake is not judged)
        return self._judge(flow, watch, requests)

    def _final(self, flow: Flow) -> list[Event]:
        self.stats.flows_ended += 1
        watch = self._watch.pop(flow, None)
        if watch is None:
            watch = _Watch(
                self.resolver.resolve(ip_text(flow.client_ip), flow.client_port),
                self.resolver.resolve(ip_text(flow.server_ip), flow.server_port),
            )
        dpi = flow.dpi
        requests = len(dpi.requests) if dpi is not None else 0
        if watch.evaluated and requests == watch.requests and flow.app == watch.app:
            return []
        return self._judge(flow, watch, requests)

    def _judge(self, flow: Flow, watch: _Watch, requests: int) -> list[Event]:
        first = not watch.evaluated
        watch.evaluated = True
        watch.requests = requests
        watch.app = flow.app
        if flow.proto == PROTO_IGMP or (flow.proto == PROTO_ICMPV6 and flow.icmp_type in LINK_CONTROL_ICMPV6):
            self.stats.link_control += first
            return []
        nf = NamedFlow(flow, watch.client, watch.server, self.source)
        obs = nf.observation()
        verdict = self.policy.evaluate(obs)
        self.stats.evaluations += 1
        if not verdict.violation:
            return []
        label = nf.label
        key = (verdict.rule_id, verdict.action, label)
        if key in watch.reported:
            return []
        watch.reported.add(key)
        self.stats.violations += 1
        item = checked_flow(nf, verdict, obs)
        return [conversation_event(item, EventType.VIOLATION, self.source, event_id=self._event_id(flow, key))]

    def _event_id(self, flow: Flow, key: tuple[int, str, str]) -> str:
        """Names the violation by its connection, so the same one is never stored twice."""
        conn = (flow.proto, flow.client_ip, flow.client_port, flow.server_ip, flow.server_port, flow.first_ts)
        return hashlib.sha256(repr((self.source, conn, key)).encode()).hexdigest()[:32]


# ---------------------------------------------------------------------------------------------
# The loop


class _Writer:
    """Hands events to every sink; a batch a sink refused is kept and offered again next time."""

    def __init__(self, sinks: Sequence[Sink], stats: MonitorStats) -> None:
        self._pending: list[tuple[Sink, list[Event]]] = [(s, []) for s in sinks]
        self._stats = stats

    def write(self, events: Sequence[Event]) -> None:
        for sink, pending in self._pending:
            pending.extend(events)
            if not pending:
                continue
            try:
                sink.write(pending)
            except Exception as exc:  # a store or disk fault must not stop the capture
                self._stats.write_errors += 1
                self._stats.last_write_error = f"{type(sink).__name__}: {exc}"
                continue
            self._stats.events_written += len(pending)
            pending.clear()

    @property
    def unwritten(self) -> int:
        return sum(len(p) for _s, p in self._pending)


@contextlib.contextmanager
def _signals_set(stop: threading.Event) -> Iterator[None]:
    """SIGINT/SIGTERM set `stop` (only possible, and only done, in the main thread)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def run_monitor(
    monitor: Monitor,
    tap: Tap,
    sinks: Sequence[Sink] = (),
    *,
    duration: float | None = None,
    stop: threading.Event | None = None,
    on_events: Callable[[list[Event]], None] | None = None,
    poll_interval: float = 0.2,
) -> MonitorStats:
    """Monitor until `duration` seconds pass, `stop` is set, or SIGINT/SIGTERM (main thread).

    Events are written to `sinks` after each batch and handed to `on_events` (e.g. to print
    them). The tap is closed on return; open connections get their last look first.
    """
    stop = stop if stop is not None else threading.Event()
    writer = _Writer(sinks, monitor.stats)
    deadline = None if duration is None else time.monotonic() + duration

    def emit(events: list[Event]) -> None:
        if events:
            writer.write(events)
            if on_events is not None:
                on_events(events)
        elif writer.unwritten:
            writer.write([])

    try:
        with _signals_set(stop):
            for batch in tap.batches(poll_interval):
                emit(monitor.feed(batch))
                if stop.is_set() or (deadline is not None and time.monotonic() >= deadline):
                    break
    finally:
        tap.kernel_drops()
        tap.close()
        emit(monitor.finish())
        monitor.stats.stopped = time.time()
        monitor.stats.tap = tap.stats
    return monitor.stats


# ---------------------------------------------------------------------------------------------
# A lab's node


@dataclass(frozen=True, slots=True)
class LabTarget:
    """Where to tap a lab: its node namespace, the node ends of the pod veths, the pods' addresses."""

    netns: str
    interfaces: tuple[str, ...]
    addresses: tuple[str, ...]


def lab_target(state: LabState) -> LabTarget:
    """The tap target of a lab (every pod's veth in the node namespace)."""
    return LabTarget(
        state.node_netns,
        tuple(p.veth for p in state.pods),
        tuple(ip for p in state.pods for ip in p.ips),
    )


def monitor_lab(
    state: LabState,
    policy: Policy,
    sinks: Sequence[Sink] = (),
    *,
    inventory: Inventory | None = None,
    duration: float | None = None,
    stop: threading.Event | None = None,
    ready: threading.Event | None = None,
    on_events: Callable[[list[Event]], None] | None = None,
    limits: Limits = DEFAULT_LIMITS,
) -> MonitorStats:
    """Monitor a lab's pods from its node by `policy` (inventory: the lab's own unless given).

    `ready` is set once the tap is open, so a caller can start traffic without losing any.
    """
    if inventory is None:
        from podwall.inventory.loader import load_inventory

        inventory = load_inventory([state.inventory])
    target = lab_target(state)
    monitor = Monitor.for_policy(policy, inventory, limits=limits, source=f"monitor:{target.netns}")
    tap = Tap(target.interfaces, target.netns, local_addresses=target.addresses)
    if ready is not None:
        ready.set()
    return run_monitor(monitor, tap, sinks, duration=duration, stop=stop, on_events=on_events)
