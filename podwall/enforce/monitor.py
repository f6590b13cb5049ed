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
import os
import signal
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

from podwall.analysis.check import checked_flow, conversation_event, dns_service_groups
from podwall.analysis.inspection import attach_findings, finding_event, name_finding, save_pcaps
from podwall.analysis.runner import NamedFlow
from podwall.core.errors import Problem
from podwall.core.events import Event, EventType
from podwall.core.limits import DEFAULT_LIMITS, Limits
from podwall.core.types import PROTO_ICMPV6, PROTO_TCP, Endpoint, ip_text
from podwall.datapath.engine import Engine
from podwall.datapath.flows import Flow
from podwall.datapath.io.afpacket import Tap, TapStats
from podwall.datapath.io.pcap import Frame
from podwall.enforce.tapbypass import TapBypass
from podwall.enforce.tapfilter import dedupe_filter
from podwall.inspect.pipeline import InspectingEngine
from podwall.inspect.setup import Inspectors
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
    "background_priority",
    "lab_target",
    "monitor_lab",
    "run_monitor",
    "tap_for",
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
    findings: int = 0  # threat, WAF and DLP findings the policy attaches (with inspection on)
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
                "cut": t.cut,
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
        inspectors: Inspectors | None = None,
        pcap_dir: Path | None = None,
    ) -> None:
        if undecided_packets < 1:
            raise ValueError(f"undecided_packets must be at least 1, not {undecided_packets}")
        self.policy = policy
        self.resolver = resolver
        self.source = source
        self.undecided_packets = undecided_packets
        # With inspectors, the tap copy is also inspected (threats, WAF, DLP): findings become
        # events as they are found, their packets saved under `pcap_dir` when given.
        self.inspectors = inspectors
        self.pcap_dir = pcap_dir
        if inspectors is not None:
            self.engine: Engine | InspectingEngine = InspectingEngine(
                inspectors.inspection(), limits, on_problem=on_problem, source=source
            )
        else:
            self.engine = Engine(limits, dpi=True, on_problem=on_problem, source=source)
        self.stats = MonitorStats()
        self._watch: dict[Flow, _Watch] = {}
        # With `collect_done` set (run_monitor sets it when its tap can skip connections), flows
        # whose remaining bytes the monitor does not need go to `done_flows` once, and those of
        # them that end to `ended_done`, for the caller to tell the tap (tapbypass.py).
        self.collect_done = False
        self.done_flows: list[Flow] = []
        self.ended_done: list[Flow] = []
        self._done: set[Flow] = set()

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
        inspect: bool = False,
        pcap_dir: Path | None = None,
    ) -> Monitor:
        """A monitor judging by `policy`, naming endpoints from `inventory` (as `podwall check` does);
        with `inspect`, the inspectors run as the policy attaches them."""
        resolver = Resolver(inventory)
        engine = PolicyEngine(policy, dns_service_groups=dns_service_groups(inventory, resolver))
        inspectors = Inspectors(policy) if inspect else None
        return cls(
            engine,
            resolver,
            limits=limits,
            source=source,
            undecided_packets=undecided_packets,
            on_problem=on_problem,
            inspectors=inspectors,
            pcap_dir=pcap_dir,
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
        collect = self.collect_done
        for flow in touched:
            if not flow.end_reason:
                events += self._live(flow)
                if collect and flow not in self._done and self._needs_no_more(flow):
                    self._done.add(flow)
                    self.done_flows.append(flow)
        return events + self._findings()

    def finish(self) -> list[Event]:
        """End of monitoring: every open connection ends and gets its last look."""
        events: list[Event] = []
        for flow in self.engine.finish():
            events += self._final(flow)
        return events + self._findings()

    def _findings(self) -> list[Event]:
        """The inspectors' findings since the last look, as the policy attaches them, as events."""
        engine, inspectors = self.engine, self.inspectors
        if inspectors is None or not isinstance(engine, InspectingEngine) or not engine.findings:
            return []
        named = [name_finding(c, self.resolver, self.source) for c in engine.findings]
        engine.findings.clear()
        kept = attach_findings(named, inspectors, self.policy)
        if self.pcap_dir is not None and kept:
            save_pcaps(kept, self.pcap_dir)
        self.stats.findings += len(kept)
        return [finding_event(nf) for nf in kept]

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

    def _needs_no_more(self, flow: Flow) -> bool:
        """A TCP connection judged and whose DPI stopped (named and finished, or given up): its
        later bytes change nothing the monitor reports; its end (FIN/RST) still reaches it."""
        if flow.proto != PROTO_TCP:
            return False
        watch = self._watch.get(flow)
        dpi = flow.dpi
        return watch is not None and watch.evaluated and (dpi is None or dpi.done)

    def _final(self, flow: Flow) -> list[Event]:
        self.stats.flows_ended += 1
        if flow in self._done:
            self._done.discard(flow)
            self.ended_done.append(flow)
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


def _tell(bypass: TapBypass, monitor: Monitor) -> None:
    """Hand the flows the monitor is done with (and those of them that ended) to the tap's filter."""
    for flow in monitor.done_flows:
        bypass.add(flow.client_ip, flow.client_port, flow.server_ip, flow.server_port)
    for flow in monitor.ended_done:
        bypass.remove(flow.client_ip, flow.client_port, flow.server_ip, flow.server_port)
    monitor.done_flows.clear()
    monitor.ended_done.clear()


@contextlib.contextmanager
def background_priority(enabled: bool = True) -> Iterator[bool]:
    """Run the calling thread at the scheduler's idle priority (SCHED_IDLE) for the block.

    A passive monitor must not take CPU from the workloads it watches: at idle priority it
    reads frames only with CPU time nothing else wants, and when it falls behind the kernel
    drops copies from the tap's socket buffers (`stats.tap.kernel_drops`), never packets of
    the traffic. Yields whether the priority was lowered (not where SCHED_IDLE is missing)."""
    policy = getattr(os, "SCHED_IDLE", None)
    if not enabled or policy is None:
        yield False
        return
    try:
        before = os.sched_getscheduler(0), os.sched_getparam(0)
        os.sched_setscheduler(0, policy, os.sched_param(0))  # pid 0: this thread only, on Linux
    except OSError:
        yield False
        return
    try:
        yield True
    finally:
        with contextlib.suppress(OSError):
            os.sched_setscheduler(0, *before)


def run_monitor(
    monitor: Monitor,
    tap: Tap,
    sinks: Sequence[Sink] = (),
    *,
    duration: float | None = None,
    stop: threading.Event | None = None,
    on_events: Callable[[list[Event]], None] | None = None,
    poll_interval: float = 0.2,
    background: bool = True,
    bypass: TapBypass | None = None,
) -> MonitorStats:
    """Monitor until `duration` seconds pass, `stop` is set, or SIGINT/SIGTERM (main thread).

    Events are written to `sinks` after each batch and handed to `on_events` (e.g. to print
    them). The tap is closed on return; open connections get their last look first. With
    `background` (the default) the loop runs at idle CPU priority (`background_priority`). With
    `bypass` (the eBPF filter the tap's sockets carry), connections the monitor is done with are
    no longer copied to it (`TapBypass`); the caller closes it.
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
        with _signals_set(stop), background_priority(background):
            monitor.collect_done = bypass is not None
            for batch in tap.batches(poll_interval):
                emit(monitor.feed(batch))
                if bypass is not None:
                    _tell(bypass, monitor)
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


# Frames above LARGE_FRAME bytes are copied up to CUT_SNAP bytes by default (`tap_for`). The first
# 4 KiB of a frame hold what names a connection (request lines and headers, a TLS ClientHello,
# a command); a frame of 16 KiB or more is a GSO burst of bulk data.
LARGE_FRAME = 16 * 1024
CUT_SNAP = 4096


def tap_for(target: LabTarget, *, full_frames: bool = False) -> tuple[Tap, TapBypass | None]:
    """The monitor's tap on a lab, and the bypass its sockets carry (to pass to `run_monitor` and
    close after it), or None.

    Where the kernel loads eBPF, each socket gets `TapBypass`'s filter: connections the monitor
    is done with stop being copied, everything else is copied whole (`PodViews` keeps one copy
    per packet). Elsewhere the classic filter `dedupe_filter` keeps one copy per packet in the
    kernel and, unless `full_frames`, cuts large frames to their first `CUT_SNAP` bytes: a cut
    frame is a gap in its TCP stream, after which the DPI stops parsing that connection, so L7
    requests after a large transfer on it are not seen (docs/monitor.md)."""
    bypass = TapBypass.create()
    if bypass is not None:
        try:
            tap = Tap(target.interfaces, target.netns, ebpf=bypass.prog_fd, local_addresses=target.addresses)
        except BaseException:
            bypass.close()
            raise
        return tap, bypass
    program = dedupe_filter(target.addresses, cut_large=None if full_frames else (LARGE_FRAME, CUT_SNAP))
    return Tap(target.interfaces, target.netns, bpf=program, local_addresses=target.addresses), None


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
    background: bool = True,
    full_frames: bool = False,
    inspect: bool = False,
    pcap_dir: Path | None = None,
) -> MonitorStats:
    """Monitor a lab's pods from its node by `policy` (inventory: the lab's own unless given).

    `ready` is set once the tap is open, so a caller can start traffic without losing any;
    `background`: at idle CPU priority (see `run_monitor`); `full_frames`: see `tap_for`;
    `inspect`: also run the inspectors the policy attaches (threats, WAF, DLP) on the tap copy.
    """
    if inventory is None:
        from podwall.inventory.loader import load_inventory

        inventory = load_inventory([state.inventory])
    target = lab_target(state)
    monitor = Monitor.for_policy(
        policy, inventory, limits=limits, source=f"monitor:{target.netns}", inspect=inspect, pcap_dir=pcap_dir
    )
    tap, bypass = tap_for(target, full_frames=full_frames)
    if ready is not None:
        ready.set()
    try:
        return run_monitor(
            monitor, tap, sinks, duration=duration, stop=stop, on_events=on_events, background=background, bypass=bypass
        )
    finally:
        if bypass is not None:
            bypass.close()
