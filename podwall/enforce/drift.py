"""Protocol drift: connections that change application after their verdict, seen from a tap.

The NFQUEUE worker decides a connection on its first payload and stores the verdict on the
connection (connmark); the rest of it stays in the kernel, unseen. A client allowed `redis`
could PING and then speak HTTP on the same connection. The passive AF_PACKET tap on the pod
veths (the one `podwall monitor` uses) still sees every byte, so a `DriftWatcher` runs the
DPI over it and watches each connection *after* its application was decided:

- at the start of every client turn (the first client bytes after the server spoke, or after
  the decision) and on the chunk that made the parser fail, the registry's detectors look at
  the chunk: if the decided application's own detector does not MATCH it and another one does,
  the connection drifted to that application (a small list of upgrades the original protocol
  negotiates itself, STARTTLS and HTTP's h2c, is not drift);
- a parser error (either direction) with no other protocol recognised is drift to an
  unidentified application ("unparseable after verdict"), judged as application unknown.

Only turn starts are looked at, not every segment, so the cost is per request, and a segment
that starts inside a long message (a Redis value holding an HTTP request line) is not mistaken
for a new protocol. Limits: a chunk that needs more bytes than it carries to be named is not
named; a parser that declared itself finished (TLS after the ServerHello) has stopped reading,
so bytes after it are not looked at.

A drifted connection is judged again by `PolicyEngine` with the new application. A deny
(protect mode) is cut by `DriftCutter`: the conntrack entry is re-marked `MARK_DENY` (any later
packet is rejected with a reset by the `PODWALL` chain) and crafted resets go to both ends. Any
violation (deny or monitor/discover alert) becomes an event of the enforcer's schema whose
message says the application changed from X to Y. `DriftWatcher` is pure (frames in, findings
out); `DriftCutter` and `run_drift_watch` do the I/O.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from podwall.analysis.check import CheckedConversation, conversation_event
from podwall.analysis.conversations import Conversation
from podwall.analysis.runner import NamedFlow, app_label
from podwall.core.errors import CaptureError, Problem
from podwall.core.events import Event, EventType
from podwall.core.limits import DEFAULT_LIMITS, Limits
from podwall.core.types import PROTO_ICMP, PROTO_ICMPV6, PROTO_TCP, Direction, Observation, ip_text
from podwall.core.verdict import DENY, Verdict
from podwall.datapath.decode import Decoder
from podwall.datapath.flows import Flow, FlowTable
from podwall.datapath.io.afpacket import Tap, _NetnsSwitch
from podwall.datapath.io.pcap import Frame
from podwall.dpi import registry
from podwall.dpi.base import DetectContext, Detection, Detector
from podwall.dpi.session import UNKNOWN, DpiSession
from podwall.enforce.apply import in_netns, run
from podwall.enforce.plan import MARK_DENY, MARK_MASK
from podwall.enforce.reset import RawResetter, ResetTarget
from podwall.enforce.tapfilter import dedupe_filter
from podwall.enforce.threatwatch import CutTarget, ThreatWatch
from podwall.inventory.resolver import Resolver
from podwall.policy.evaluate import PolicyEngine
from podwall.policy.model import Policy

__all__ = [
    "UPGRADES",
    "Drift",
    "DriftCutter",
    "DriftFinding",
    "DriftSession",
    "DriftThread",
    "DriftWatcher",
    "other_application",
    "reply_source",
    "run_drift_watch",
]

log = logging.getLogger(__name__)

_STARTTLS = ("smtp", "imap", "pop3", "ftp", "ldap", "postgres", "mysql", "nats", "amqp", "mqtt", "xmpp")
# Changes the original protocol negotiates itself: not drift (the policy allowed the original).
UPGRADES = frozenset({(app, "tls") for app in _STARTTLS} | {("http", "http2")})
_ICMPS = frozenset((PROTO_ICMP, PROTO_ICMPV6))


@dataclass(frozen=True, slots=True)
class Drift:
    """A decided connection's bytes stopped being its application: `new_app` None is unidentified."""

    old_app: str
    new_app: str | None
    reason: str

    @property
    def new_label(self) -> str:
        return self.new_app or UNKNOWN


def other_application(app: str, data: bytes, ctx: DetectContext, pool: Sequence[Detector]) -> str | None:
    """The application other than `app` that client bytes `data` (the start of a turn) are written
    in, or None: `app`'s own detector must not MATCH them and another detector must."""
    found: list[Detector] = []
    for det in pool:
        try:
            answer = det.detect(Direction.C2S, data, ctx)
        except Exception:  # a detector that cannot read these bytes does not match them
            continue
        if answer is not Detection.MATCH:
            continue
        if det.name == app:
            return None  # still the decided application
        found.append(det)
    if not found:
        return None
    # Registry order decides, as in a fresh session; the server port breaks a tie the same way.
    best = next((d for d in found if ctx.server_port in getattr(d, "ports", ())), found[0])
    if (app, best.name) in UPGRADES:
        return None
    return best.name


class DriftSession(DpiSession):
    """A DPI session that also watches for drift after its application is decided (see the module doc)."""

    __slots__ = ("_pool", "_turn", "drift")

    def __init__(
        self, ctx: DetectContext, limits: Limits = DEFAULT_LIMITS, detectors: Sequence[Detector] | None = None
    ) -> None:
        super().__init__(ctx, limits, detectors)
        pool = registry.detectors(limits) if detectors is None else detectors
        self._pool: tuple[Detector, ...] = tuple(d for d in pool if ctx.proto in d.transports)
        self._turn = True  # the next client bytes start a turn
        self.drift: Drift | None = None

    def on_stream(self, direction: Direction, data: bytes) -> None:
        decided, error = self._decided(), self.error
        super().on_stream(direction, data)
        if decided is not None:
            self._look(decided, error, direction, data)

    def on_datagram(self, direction: Direction, data: bytes) -> None:
        decided, error = self._decided(), self.error
        super().on_datagram(direction, data)
        if decided is not None:
            self._look(decided, error, direction, data)

    def _decided(self) -> str | None:
        app = self.app
        return None if app is None or app == UNKNOWN or self.drift is not None else app

    def _look(self, app: str, error_before: str | None, direction: Direction, data: bytes) -> None:
        failed = self.error is not None and error_before is None
        if direction is Direction.S2C:
            self._turn = True
            if failed:
                self.drift = Drift(app, None, f"unparseable after verdict: {self.error}")
            return
        if not (self._turn or failed):
            return
        self._turn = False
        new = other_application(app, data[: self._limits.dpi_buffer], self._ctx, self._pool)
        if new is not None:
            self.drift = Drift(app, new, f"the client sent {new} on a {app} connection")
        elif failed:
            self.drift = Drift(app, None, f"unparseable after verdict: {self.error}")


@dataclass(slots=True)
class DriftFinding:
    """A drifted connection, its verdict under the new application, and what to do about it."""

    proto: int
    client_ip: bytes
    client_port: int
    server_ip: bytes
    server_port: int
    drift: Drift
    verdict: Verdict
    event: Event | None  # the violation to record (None: the new application is allowed)
    server_seq: int | None  # the next byte the server expects from the client (tap's view)
    client_seq: int | None  # the next byte the client expects from the server

    @property
    def cut(self) -> bool:
        """Whether the connection must be cut (a deny: protect mode)."""
        return self.verdict.action == DENY

    @property
    def reset_target(self) -> ResetTarget | None:
        return CutTarget(self.proto, self.client_ip, self.client_port, self.server_ip, self.server_port,
                         self.server_seq, self.client_seq).reset_target  # fmt: skip


@dataclass(slots=True)
class DriftStats:
    frames: int = 0
    drifts: int = 0
    violations: int = 0
    cuts: int = 0


class DriftWatcher:
    """Frames from a tap in, drift findings out (no I/O); each connection is reported once."""

    def __init__(
        self,
        policy: PolicyEngine,
        resolver: Resolver,
        *,
        limits: Limits = DEFAULT_LIMITS,
        source: str = "drift",
        detectors: Sequence[Detector] | None = None,
        on_problem: Callable[[Problem], None] | None = None,
    ) -> None:
        self.policy = policy
        self.resolver = resolver
        self.source = source
        self.decoder = Decoder(limits, on_problem=on_problem, source=source)
        self.table = FlowTable(limits, dpi_factory=lambda ctx: DriftSession(ctx, limits, detectors))
        self.stats = DriftStats()
        self._reported: set[Flow] = set()

    def reload(self, policy: PolicyEngine, resolver: Resolver | None = None) -> None:
        """Judge later drifts by a new policy (and inventory)."""
        self.policy = policy
        if resolver is not None:
            self.resolver = resolver

    def feed(self, frames: Iterable[Frame]) -> list[DriftFinding]:
        """Process a batch of frames; returns the connections that drifted in it."""
        table = self.table
        touched: dict[Flow, None] = {}
        for frame in frames:
            self.stats.frames += 1
            pkt = self.decoder.decode(frame)
            if pkt is None:
                continue
            for gone in table.add(pkt):
                self._reported.discard(gone)
            flow = table.last_flow
            if flow is not None and isinstance(flow.dpi, DriftSession) and flow.dpi.drift is not None:
                touched[flow] = None
        return [f for f in map(self._finding, touched) if f is not None]

    def _finding(self, flow: Flow) -> DriftFinding | None:
        if flow in self._reported:
            return None
        self._reported.add(flow)
        dpi = flow.dpi
        assert isinstance(dpi, DriftSession) and dpi.drift is not None
        drift = dpi.drift
        self.stats.drifts += 1
        client = self.resolver.resolve(ip_text(flow.client_ip), flow.client_port)
        server = self.resolver.resolve(ip_text(flow.server_ip), flow.server_port)
        port = 0 if flow.proto in _ICMPS else flow.server_port
        obs = Observation(client, server, flow.proto, port, drift.new_app, (), flow.server_name)
        verdict = self.policy.evaluate(obs)
        event = None
        if verdict.violation:
            self.stats.violations += 1
            label = app_label(drift.new_app, flow.proto, flow.server_port)
            conv = Conversation(client.group, server.group, port, flow.proto, label, client, server)
            conv.add(NamedFlow(flow, client, server, self.source))
            conn = (flow.proto, flow.client_ip, flow.client_port, flow.server_ip, flow.server_port, flow.first_ts)
            event_id = hashlib.sha256(repr((self.source, "drift", conn)).encode()).hexdigest()[:32]
            event = conversation_event(
                CheckedConversation(conv, verdict), EventType.VIOLATION, self.source, event_id=event_id
            )
            event.message = (
                f"{client.group} -> {server.group}: application changed from {drift.old_app} to "
                f"{drift.new_label} after its verdict ({drift.reason}): {verdict.action} by rule {verdict.rule_id}"
            )
        if verdict.action == DENY:
            self.stats.cuts += 1
        at = CutTarget.of(flow)
        return DriftFinding(
            flow.proto,
            flow.client_ip,
            flow.client_port,
            flow.server_ip,
            flow.server_port,
            drift,
            verdict,
            event,
            at.server_seq,
            at.client_seq,
        )


class DriftCutter:
    """Cuts a drifted connection on the node: connmark → `MARK_DENY`, then resets to both ends.

    Re-marking rather than `conntrack -D`: a deleted entry is picked up again by the next
    packet (TCP loose pickup) as a new connection and judged mid-stream, while a deny mark makes
    the `PODWALL` chain reject every later packet of it with a reset. When the entry cannot be
    re-marked by its original tuple (already gone, or seen after a DNAT) it is deleted by its
    reply tuple.
    The resets are sent with the calling thread inside the node's namespace (raw sockets belong
    to the namespace they are made in; setns changes only the calling thread).
    """

    def __init__(
        self,
        netns: str | None,
        resetter: Callable[[ResetTarget], None] | None,
        runner: Callable[..., Any] = run,
    ) -> None:
        self.netns = netns
        self.resetter = resetter
        self.runner = runner

    def __call__(self, finding: DriftFinding | CutTarget) -> bool:
        """Cut the connection; True when the kernel's entry was marked or removed.

        The entry is found by its original tuple (the client's view, which the tap has); when that
        names a Service, the resets go to the backend pod the reply tuple names (see `_behind_service`).
        """
        proto = {PROTO_TCP: "tcp", 17: "udp"}.get(finding.proto)
        if proto is None:
            return False
        family = "ipv4" if len(finding.client_ip) == 4 else "ipv6"
        client, server = ip_text(finding.client_ip), ip_text(finding.server_ip)
        base = ["-f", family, "-p", proto, "-s", client, "--sport", str(finding.client_port)]
        orig = [*base, "-d", server, "--dport", str(finding.server_port)]
        done = self.runner(
            in_netns(self.netns, ["conntrack", "-U", *orig, "-m", f"{MARK_DENY:#x}/{MARK_MASK:#x}"]), None
        )
        target = finding.reset_target
        if done.returncode == 0:
            if target is not None:
                target = self._behind_service(target, orig)
        else:
            delete = ["conntrack", "-D", *base, "-r", server, "--reply-port-src", str(finding.server_port)]
            done = self.runner(in_netns(self.netns, delete), None)
        if target is not None and self.resetter is not None:
            try:
                if self.netns:
                    with _NetnsSwitch(self.netns):
                        self.resetter(target)
                else:
                    self.resetter(target)
            except (OSError, CaptureError) as exc:
                via = ip_text(target.server_ip), target.server_port
                log.warning(
                    "cannot reset %s:%d -> %s:%d (at %s:%d): %s",
                    client, finding.client_port, server, finding.server_port, *via, exc,
                )  # fmt: skip
        return done.returncode == 0

    def _behind_service(self, target: ResetTarget, orig: Sequence[str]) -> ResetTarget:
        """`target` with the server the kernel really connected the client to, when the address the
        client used (the tap's view) was DNATed to it: a Service's cluster IP to a backend pod."""
        listed = self.runner(in_netns(self.netns, ["conntrack", "-L", *orig]), None)
        if listed.returncode != 0:
            return target
        backend = reply_source(listed.stdout, len(target.server_ip))
        if backend is None or backend == (target.server_ip, target.server_port):
            return target
        # The node has no route to a cluster IP but reaches pods over the bridge; the client's reset,
        # sent from the backend, matches the entry's reply direction and leaves un-DNATed (from the
        # cluster IP), which an own packet from the cluster IP would not: conntrack would call it invalid.
        return dataclasses.replace(target, server_ip=backend[0], server_port=backend[1])


def reply_source(listing: str, size: int) -> tuple[bytes, int] | None:
    """The reply tuple's source (address, port) of the first entry of a `conntrack -L` listing whose
    addresses are `size` bytes long, or None."""
    family = socket.AF_INET if size == 4 else socket.AF_INET6
    for line in listing.splitlines():
        seen: dict[str, list[str]] = {"src": [], "sport": []}
        for word in line.split():
            key, sep, value = word.partition("=")
            if sep and key in seen:
                seen[key].append(value)
        if len(seen["src"]) < 2 or len(seen["sport"]) < 2:
            continue
        try:
            return socket.inet_pton(family, seen["src"][1]), int(seen["sport"][1])
        except (OSError, ValueError):
            continue
    return None


def run_drift_watch(
    watcher: DriftWatcher,
    tap: Tap,
    cutter: Callable[[DriftFinding | CutTarget], object] | None,
    on_events: Callable[[list[Event]], None],
    *,
    stop: threading.Event,
    poll_interval: float = 0.2,
    threats: Callable[[], ThreatWatch | None] | None = None,
) -> None:
    """Watch until `stop` is set: cut the findings that are denies (protect), hand their events on.

    Runs in its own thread; `cutter` is called in it (its resets need the node namespace: see
    `DriftCutter`). `threats` gives the current threat watch, fed the same frames: its blocking
    findings in protect mode are cut the same way. The tap is closed on return.
    """
    try:
        for batch in tap.batches(poll_interval):
            findings = watcher.feed(batch)
            events: list[Event] = []
            for finding in findings:
                if finding.cut and cutter is not None:
                    started = time.monotonic()
                    cutter(finding)
                    log.info("cut a drifted connection in %.3fs: %s", time.monotonic() - started, finding.drift.reason)
                if finding.event is not None:
                    events.append(finding.event)
            watch = threats() if threats is not None else None  # the current one: a reload swaps it
            outcomes = []
            if watch is not None:
                try:
                    outcomes = watch.feed(batch)
                except Exception:  # a threat-engine bug must not stop the drift watch: this batch is lost to it
                    log.exception("the threat engine failed on a batch of %d frame(s)", len(batch))
            for outcome in outcomes:
                if outcome.cut is not None and cutter is not None:
                    cutter(outcome.cut)
                    log.info("cut a connection for a threat: %s", outcome.reason)
                events.append(outcome.event)
            if events:
                on_events(events)
            if stop.is_set():
                break
    finally:
        tap.close()


class DriftThread:
    """The watcher, its tap and its cutter in a background thread, for `EnforcerService`.

    `take_events` hands over the violations found so far (the supervisor stays the only writer
    to the store); `reload` judges later drifts by a new policy; `stop` ends the thread.
    """

    def __init__(
        self,
        netns: str | None,
        interfaces: Sequence[str],
        addresses: Sequence[str],
        policy: PolicyEngine,
        resolver: Resolver,
        *,
        source: str = "drift",
        cut: bool = True,
        threats: ThreatWatch | None = None,
    ) -> None:
        self.watcher = DriftWatcher(policy, resolver, source=source)
        self.threats = threats  # the threat engine reads the same tap
        self._tap = Tap(interfaces, netns, bpf=dedupe_filter(addresses), local_addresses=addresses)
        self._resetter = RawResetter()
        self._cutter = DriftCutter(netns, self._resetter) if cut else None
        self._lock = threading.Lock()
        self._events: list[Event] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="podwall-drift", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            run_drift_watch(
                self.watcher, self._tap, self._cutter, self._keep, stop=self._stop, threats=lambda: self.threats
            )
        except Exception:  # the watcher must not take the service down; the tap is closed
            log.exception("the drift watcher stopped")
        finally:
            self._resetter.close()

    def _keep(self, events: list[Event]) -> None:
        with self._lock:
            self._events.extend(events)

    def take_events(self) -> list[Event]:
        with self._lock:
            events, self._events = self._events, []
        return events

    def reload(self, policy: PolicyEngine, resolver: Resolver | None = None, source: Policy | None = None) -> None:
        """Judge by a new policy (`source`: the policy itself, for the threat settings)."""
        self.watcher.reload(policy, resolver)  # an attribute swap: safe against the running thread
        threats = self.threats
        if (
            threats is not None
            and source is not None
            and not threats.judge_by(source, policy, resolver or threats.resolver)
        ):
            # New threat settings: a new watch swapped in whole (the thread uses one or the other).
            self.threats = ThreatWatch(source, policy, resolver or threats.resolver, source=threats.source,
                                       limits=threats.limits, pcap_dir=threats.pcap_dir)  # fmt: skip

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._thread.join(timeout)
