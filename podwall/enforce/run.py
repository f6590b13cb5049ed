"""`podwall enforce`: the L3/L4 ruleset, the NFQUEUE worker processes and their supervisor, together.

`EnforcerService` owns one node's enforcement:

- it builds the plan (`build_plan`) and applies it (`Enforcer.apply`) once the workers are bound,
  so that no connection is queued to a queue nobody reads;
- one worker process per queue number of the `QueueConfig` range (multiprocessing, fork; its
  inside is worker_process.py). Each enters the node's network namespace (setns) before binding
  its queue, runs the decision `Worker` with `MARK_ALLOW` / `MARK_DENY`, and sends its violation
  events, heartbeats and acknowledgements to the supervisor over its control pipe; the supervisor
  writes the events to the sinks (the event store of `podwall check`, same schema);
- the supervisor loop restarts a worker that died (after `restart_delay`) or stopped sending
  heartbeats for `hang_timeout` (killed, then restarted), and logs it;
- reload on SIGHUP or when the policy / inventory files change: parse and plan first (a bad file
  changes nothing), then the workers switch policy (control pipe, acknowledged), then the
  table is replaced atomically (`Enforcer.apply`), then connections whose verdict came from the
  old version are sent back to the workers (see `requeue_decided`);
- quarantine: the plan is re-applied with the quarantine set (the table cuts established
  connections of quarantined addresses too);
- fail mode: `QueueConfig.fail_open` (`--queue-bypass` and the queue's F_FAIL_OPEN flag);
- stop: workers told to stop, the ruleset removed unless `keep_rules`.

Re-evaluation after a reload: established connections carry their verdict in the conntrack
mark, and the kernel never asks again. After a policy change, every connection marked
`MARK_ALLOW` is re-marked `MARK_DECIDE | MARK_SEEN` (`conntrack -U --mark ...`, per connection):
its next payload packet is queued (not as a new connection's first), the worker (whose sticky
verdict is of the old version) judges it under the new policy with the application it recorded,
and an allowed connection gets its allow mark back without losing a packet. Denied connections
were already reset at both ends and are left alone.

A changed inventory is a reload too; once the new table is applied, `service.json` reports the
inventory's digest (`inventory_digest`), which a pod added to a running lab waits for before it
may send (podwall/lab/scale.py).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from pathlib import Path
from types import FrameType
from typing import Any

from podwall.analysis.check import dns_service_groups
from podwall.core.errors import PodwallError
from podwall.core.events import Event
from podwall.enforce.apply import Enforcer
from podwall.enforce.conntrack import requeue_decided
from podwall.enforce.control import STATUS_FILE, inventory_digest, read_quarantine, write_json
from podwall.enforce.drift import DriftThread
from podwall.enforce.iptables import QueueConfig
from podwall.enforce.plan import KernelPlan, build_plan
from podwall.enforce.threatwatch import ThreatWatch
from podwall.enforce.worker_process import WorkerSpec, worker_main
from podwall.inventory.loader import load_inventory
from podwall.inventory.model import Inventory
from podwall.inventory.resolver import Resolver
from podwall.policy.evaluate import PolicyEngine
from podwall.policy.formats.podwall_yaml import parse_policy
from podwall.policy.model import Policy
from podwall.store.sinks import Sink

__all__ = ["EnforcerService", "ServiceError", "requeue_decided", "signals_handled"]

log = logging.getLogger(__name__)


class ServiceError(PodwallError):
    """The enforcer cannot start (bad policy or inventory, a queue already bound, no root)."""


# ---------------------------------------------------------------------------------------------
# The worker processes, as the supervisor sees them (their inside: worker_process.py)


@dataclass(slots=True)
class _WorkerSlot:
    """One queue number and the process currently serving it."""

    queue_num: int
    process: multiprocessing.process.BaseProcess | None = None
    conn: Connection | None = None
    ready: bool = False
    restarts: int = 0
    last_beat: float = 0.0
    restart_at: float = 0.0  # monotonic time before which a dead worker is not restarted
    version: int = 0
    stats: dict[str, int] = field(default_factory=dict)
    error: str | None = None

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None


# ---------------------------------------------------------------------------------------------
# The service


def _digest(paths: Sequence[Path]) -> str:
    h = hashlib.sha256()
    for p in paths:
        try:
            h.update(p.read_bytes())
        except OSError as exc:
            h.update(f"unreadable {exc}".encode())
    return h.hexdigest()


def _stamp(paths: Sequence[Path]) -> tuple[tuple[float, int], ...]:
    out = []
    for p in paths:
        try:
            st = p.stat()
            out.append((st.st_mtime, st.st_size))
        except OSError:
            out.append((0.0, -1))
    return tuple(out)


class EnforcerService:
    """Ruleset + worker processes + supervisor for one node (see the module docstring).

    `inventory`: inventory file paths (watched for changes), or an Inventory object (fixed).
    `control_dir`: where `service.json` and `quarantine.json` live (docs/enforce.md); None: no
    status file and no external quarantine requests.
    """

    def __init__(
        self,
        policy_path: str | Path,
        inventory: Sequence[str | Path] | Inventory | None,
        netns: str | None,
        *,
        workers: int = 2,
        fail: str = "open",
        quarantine: Sequence[str] = (),
        sinks: Sequence[Sink] = (),
        control_dir: str | Path | None = None,
        keep_rules: bool = False,
        queue_first: int = 100,
        restart_delay: float = 1.0,
        hang_timeout: float = 10.0,
        reconcile_interval: float = 10.0,
        on_events: Callable[[list[Event]], None] | None = None,
        drift_interfaces: Sequence[str] = (),
        drift_addresses: Sequence[str] = (),
        drift_refresh: Callable[[], tuple[Sequence[str], Sequence[str]]] | None = None,
        busy_poll: float = 0.0,
        pcap_dir: Path | None = None,
        threats: bool = True,
    ) -> None:
        if fail not in ("open", "closed"):
            raise ServiceError(f"fail mode must be open or closed, not {fail!r}")
        if workers < 1:
            raise ServiceError(f"at least one worker is needed, not {workers}")
        if not 0.0 <= busy_poll <= 0.1:
            raise ServiceError(f"busy polling must be between 0 and 0.1 seconds, not {busy_poll}")
        self.busy_poll = busy_poll
        self.pcap_dir = pcap_dir
        self.threats = threats  # the threat engine on the drift watcher's tap (threatwatch.py)
        self.policy_path = Path(policy_path)
        if isinstance(inventory, Inventory):
            self._inventory_paths: list[Path] = []
            self._fixed_inventory: Inventory | None = inventory
        else:
            self._inventory_paths = [Path(p) for p in inventory or ()]
            self._fixed_inventory = None
        self.netns = netns
        self.fail = fail
        self.queue = QueueConfig(first=queue_first, count=workers, fail_open=fail == "open")
        self.enforcer = Enforcer(netns, self.queue)
        self.sinks = list(sinks)
        self.control_dir = Path(control_dir) if control_dir is not None else None
        self.keep_rules = keep_rules
        self.restart_delay = restart_delay
        self.hang_timeout = hang_timeout
        self.reconcile_interval = reconcile_interval
        self.on_events = on_events
        # Protocol drift after the verdict is watched from a tap on these pod veths (none: off).
        self.drift_interfaces = tuple(drift_interfaces)
        self.drift_addresses = tuple(drift_addresses)
        # Called at start and on each reload for the current (interfaces, addresses), e.g. a lab's
        # pods after one was added: the watcher follows them.
        self.drift_refresh = drift_refresh
        self.drift: DriftThread | None = None
        self.inventory_digest: str | None = None
        self.quarantine: list[str] = list(quarantine)
        self.quarantine_generation = 0
        self.quarantine_error: str | None = None
        self.quarantine_error_generation: int | None = None
        self.version = 0
        self.reloads = 0
        self.requeued = 0
        self.events_written = 0
        self.last_error: str | None = None
        self.policy: Policy | None = None
        self.inventory: Inventory | None = None
        self.plan: KernelPlan | None = None
        self._ctx = multiprocessing.get_context("fork")
        self._slots = [_WorkerSlot(n) for n in self.queue.numbers]
        self._unwritten: list[Event] = []
        self._reload_wanted = False
        self._watch_stamp: tuple[tuple[float, int], ...] = ()
        self._digest = ""
        self._quarantine_stamp: tuple[tuple[float, int], ...] = ()
        self._next_reconcile = 0.0
        self._started = False
        self._status_dirty = True

    # -- loading ---------------------------------------------------------------------------

    @property
    def _watched(self) -> list[Path]:
        return [self.policy_path, *self._inventory_paths]

    def _load(self) -> tuple[Policy, Inventory | None, KernelPlan, str | None]:
        """Parse and plan without touching anything (raises PodwallError on bad input); the last
        item is the inventory files' digest (`control.inventory_digest`), None for a fixed one."""
        policy = parse_policy(self.policy_path.read_text(encoding="utf-8-sig"), str(self.policy_path))
        inventory = self._fixed_inventory
        digest = None
        if self._inventory_paths:
            # Read for the digest just before loading: a change in between is caught by the next poll.
            digest = inventory_digest([p.read_bytes() for p in self._inventory_paths])
            inventory = load_inventory([str(p) for p in self._inventory_paths])
        plan = build_plan(policy, inventory or Inventory(), quarantine=self.quarantine)
        return policy, inventory, plan, digest

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        """Load, bind the workers, then apply the ruleset. Raises ServiceError; nothing is left
        behind when start fails."""
        if self.control_dir is not None:
            self.quarantine_generation, persisted = read_quarantine(self.control_dir)
            self.quarantine = sorted(set(self.quarantine) | set(persisted))
            self._quarantine_stamp = _stamp([self.control_dir / "quarantine.json"])
        self._watch_stamp = _stamp(self._watched)
        self._digest = _digest(self._watched)
        try:
            self.policy, self.inventory, self.plan, digest = self._load()
        except OSError as exc:
            raise ServiceError(f"{exc.filename or self.policy_path}: {exc.strerror or exc}") from None
        self.version = 1
        self._started = True
        try:
            for slot in self._slots:
                self._spawn(slot)
            self._wait_ready(timeout=20.0)
            self.enforcer.apply(self.plan)
            self.inventory_digest = digest
            if self.drift_refresh is not None:
                self.drift_interfaces, self.drift_addresses = self._drift_targets()
            self._start_drift()
        except BaseException:
            self.stop()
            raise
        self._next_reconcile = time.monotonic() + self.reconcile_interval
        log.info(
            "enforcing %s in %s: %d worker(s) on queues %d-%d, fail-%s, quarantine: %s",
            self.policy_path,
            self.netns or "the current namespace",
            len(self._slots),
            self.queue.first,
            self.queue.first + self.queue.count - 1,
            self.fail,
            ", ".join(self.quarantine) or "none",
        )
        self._write_status("running")

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not all(s.ready for s in self._slots):
            self._pump(0.1)
            failed = [s for s in self._slots if s.error is not None]
            if failed:
                raise ServiceError(f"worker for queue {failed[0].queue_num} cannot start: {failed[0].error}")
            if time.monotonic() > deadline:
                raise ServiceError(f"workers not ready within {timeout:.0f}s")

    def stop(self) -> None:
        """Remove the ruleset (unless keep_rules) and stop the workers; idempotent."""
        if not self._started:
            return
        self._started = False
        if self.drift is not None:
            self.drift.stop()
            self._unwritten.extend(self.drift.take_events())
            self.drift = None
        if not self.keep_rules:
            try:
                self.enforcer.remove()
            except PodwallError as exc:
                log.error("cannot remove the ruleset: %s", exc)
        for slot in self._slots:
            if slot.conn is not None:
                with contextlib.suppress(OSError, ValueError):
                    slot.conn.send(("stop",))
        deadline = time.monotonic() + 5.0
        for slot in self._slots:
            proc = slot.process
            if proc is None:
                continue
            proc.join(max(0.1, deadline - time.monotonic()))
            if proc.is_alive():
                proc.kill()
                proc.join(2.0)
        self._pump(0.0)  # the last events the workers sent
        self._flush()
        for slot in self._slots:
            if slot.conn is not None:
                slot.conn.close()
            slot.process, slot.conn, slot.ready = None, None, False
        if self.control_dir is not None:
            with contextlib.suppress(OSError):
                (self.control_dir / STATUS_FILE).unlink()

    def run(self, duration: float | None = None, stop: threading.Event | None = None, tick: float = 0.2) -> None:
        """Start, supervise until `stop` is set or `duration` passes, then stop."""
        stop = stop if stop is not None else threading.Event()
        deadline = None if duration is None else time.monotonic() + duration
        self.start()
        try:
            while not stop.is_set() and (deadline is None or time.monotonic() < deadline):
                self.poll(tick)
        finally:
            self.stop()

    def request_reload(self) -> None:
        """Ask for a reload at the next supervisor turn (safe from a signal handler)."""
        self._reload_wanted = True

    # -- the supervisor turn ---------------------------------------------------------------

    def poll(self, timeout: float = 0.2) -> None:
        """One supervisor turn: worker messages and events, dead or hung workers, file changes,
        quarantine requests, drift."""
        self._pump(timeout)
        if self.drift is not None:
            self._unwritten.extend(self.drift.take_events())
        self._flush()
        now = time.monotonic()
        for slot in self._slots:
            self._supervise(slot, now)
        stamp = _stamp(self._watched)
        if stamp != self._watch_stamp:
            self._watch_stamp = stamp
            digest = _digest(self._watched)
            if digest != self._digest:
                log.info("policy or inventory file changed: reloading")
                self._reload_wanted = True
        if self._reload_wanted:
            self._reload_wanted = False
            self.reload()
        self._check_quarantine_request()
        if now >= self._next_reconcile:
            self._next_reconcile = now + self.reconcile_interval
            try:
                drift = self.enforcer.reconcile()
                if drift:
                    log.warning("ruleset drifted (%s): re-applied", "; ".join(drift))
            except PodwallError as exc:
                self._error(f"cannot re-apply the ruleset: {exc}")
        if self._status_dirty:
            self._write_status("running")

    def _spawn(self, slot: _WorkerSlot) -> None:
        assert self.policy is not None
        spec = WorkerSpec(slot.queue_num, self.netns, self.queue.fail_open, self.policy, self.inventory,
                          self.version, os.getpid(), self.busy_poll, self.pcap_dir)  # fmt: skip
        parent, child = self._ctx.Pipe()
        proc = self._ctx.Process(target=worker_main, args=(spec, child), name=f"podwall-q{slot.queue_num}")
        proc.daemon = True
        proc.start()
        child.close()
        slot.process, slot.conn, slot.ready, slot.error = proc, parent, False, None
        slot.last_beat = time.monotonic()
        slot.version = self.version
        self._status_dirty = True

    def _supervise(self, slot: _WorkerSlot, now: float) -> None:
        proc = slot.process
        if proc is not None and proc.is_alive():
            if slot.ready and now - slot.last_beat > self.hang_timeout:
                log.error("worker for queue %d (pid %s) sent no heartbeat for %.0fs: killing it",
                          slot.queue_num, proc.pid, now - slot.last_beat)  # fmt: skip
                proc.kill()
                proc.join(2.0)
            else:
                return
        if proc is not None:
            proc.join(0)
            reason = slot.error or f"exit code {proc.exitcode}"
            log.error("worker for queue %d (pid %s) died (%s); restarting in %.1fs",
                      slot.queue_num, proc.pid, reason, self.restart_delay)  # fmt: skip
            if slot.conn is not None:
                slot.conn.close()
            slot.process, slot.conn, slot.ready = None, None, False
            slot.restart_at = now + self.restart_delay
            self._status_dirty = True
            return
        if now >= slot.restart_at:
            slot.restarts += 1
            self._spawn(slot)
            log.info("worker for queue %d restarted (pid %s, restart %d)", slot.queue_num, slot.pid, slot.restarts)

    def _pump(self, timeout: float) -> None:
        """Read every worker message waiting (up to `timeout` for the first)."""
        slots = [slot for slot in self._slots if slot.conn is not None]
        if not slots:
            if timeout:
                time.sleep(timeout)
            return
        ready = {id(c) for c in wait([s.conn for s in slots if s.conn is not None], timeout)}
        for slot in slots:
            conn = slot.conn
            if conn is None or id(conn) not in ready:
                continue
            try:
                while conn.poll():
                    self._message(slot, conn.recv())
            except (EOFError, OSError):
                pass  # the worker exited: _supervise sees it

    def _message(self, slot: _WorkerSlot, message: tuple[Any, ...]) -> None:
        kind = message[0]
        slot.last_beat = time.monotonic()
        if kind == "events":
            self._unwritten.extend(message[1])
        elif kind == "ready":
            slot.ready = True
            slot.version = message[3]
            self._status_dirty = True
            if slot.version != self.version:  # spawned before a reload finished: bring it up to date
                self._send_reload(slot)
        elif kind == "reloaded":
            slot.version = message[1]
            self._status_dirty = True
        elif kind == "beat":
            if message[1] != slot.stats:  # the status file shows the counters as of the last beat
                slot.stats = message[1]
                self._status_dirty = True
        elif kind == "failed":
            slot.error = message[1]

    def _flush(self) -> None:
        """Hand new events to the sinks; a failing sink gets them again next turn."""
        if not self._unwritten:
            return
        events, self._unwritten = self._unwritten, []
        if self.on_events is not None:
            self.on_events(events)
        for sink in self.sinks:
            try:
                sink.write(events)
            except Exception as exc:
                self._error(f"cannot record {len(events)} event(s): {exc}")
                self._unwritten = events + self._unwritten
                return
        self.events_written += len(events)
        self._status_dirty = True

    # -- reload and quarantine -------------------------------------------------------------

    def _send_reload(self, slot: _WorkerSlot) -> None:
        if slot.conn is None:
            return
        try:
            slot.conn.send(("reload", self.policy, self.inventory, self.version))
        except (OSError, ValueError) as exc:
            log.warning("cannot reach worker for queue %d: %s", slot.queue_num, exc)

    def reload(self) -> bool:
        """Re-read the policy and inventory and switch to them; False (and nothing changed) when
        they do not load."""
        try:
            policy, inventory, plan, digest = self._load()
        except (PodwallError, OSError) as exc:
            self._error(f"reload refused, still enforcing version {self.version}: {exc}")
            return False
        self._digest = _digest(self._watched)
        self.policy, self.inventory, self.plan = policy, inventory, plan
        self.version += 1
        # Workers first: a connection re-queued below must meet the new policy, not a sticky old verdict.
        for slot in self._slots:
            if slot.ready:
                self._send_reload(slot)
        deadline = time.monotonic() + 10.0
        while any(s.ready and s.version != self.version for s in self._slots) and time.monotonic() < deadline:
            self._pump(0.1)
        try:
            self.enforcer.apply(plan)
        except PodwallError as exc:
            self._error(f"cannot apply version {self.version}: {exc} (the previous ruleset stays in force)")
            return False
        # The address sets now hold the new inventory: say so at once (`lab_add_pod` waits for it
        # before a new pod may send), then send decided connections back for a new look.
        self.inventory_digest = digest
        self._write_status("running")
        self.requeued = requeue_decided(self.netns)
        self._refresh_drift()
        self.reloads += 1
        log.info("policy version %d in force; %d decided connection(s) sent back for re-evaluation",
                 self.version, self.requeued)  # fmt: skip
        self._status_dirty = True
        return True

    def _drift_targets(self) -> tuple[tuple[str, ...], tuple[str, ...]]:
        assert self.drift_refresh is not None
        try:
            interfaces, addresses = self.drift_refresh()
        except Exception as exc:  # a lab that cannot be read keeps the interfaces already watched
            log.warning("cannot refresh the drift watcher's interfaces: %s", exc)
            return self.drift_interfaces, self.drift_addresses
        return tuple(interfaces), tuple(addresses)

    def _start_drift(self) -> None:
        if self.drift_interfaces:
            engine, resolver = self._drift_judge()
            threats = None
            if self.threats:
                assert self.policy is not None
                threats = ThreatWatch(self.policy, engine, resolver, source=f"threats:{self.netns or 'host'}",
                                      pcap_dir=self.pcap_dir)  # fmt: skip
            self.drift = DriftThread(
                self.netns, self.drift_interfaces, self.drift_addresses, engine, resolver,
                source=f"drift:{self.netns or 'host'}", threats=threats,
            )  # fmt: skip

    def _refresh_drift(self) -> None:
        """A reload: judge drift by the new policy; tap new pod interfaces (`drift_refresh`)."""
        if self.drift_refresh is not None:
            targets = self._drift_targets()
            if targets != (self.drift_interfaces, self.drift_addresses):
                self.drift_interfaces, self.drift_addresses = targets
                if self.drift is not None:
                    self.drift.stop()
                    self._unwritten.extend(self.drift.take_events())
                    self.drift = None
                try:
                    self._start_drift()
                except PodwallError as exc:
                    self._error(f"cannot watch protocol drift on the new interfaces: {exc}")
                return
        if self.drift is not None:
            self.drift.reload(*self._drift_judge(), source=self.policy)

    def _drift_judge(self) -> tuple[PolicyEngine, Resolver]:
        """The engine and identities the drift watcher judges a changed application by."""
        assert self.policy is not None, "the policy is loaded before drift is watched"
        resolver = Resolver(self.inventory)
        engine = PolicyEngine(self.policy, dns_service_groups=dns_service_groups(self.inventory, resolver))
        return engine, resolver

    def set_quarantine(self, names: Sequence[str]) -> None:
        """Re-apply the plan with exactly `names` quarantined (PodwallError when one is unknown;
        then nothing changes)."""
        if self.policy is None:
            self.quarantine = list(names)
            return
        plan = build_plan(self.policy, self.inventory or Inventory(), quarantine=names)
        self.enforcer.apply(plan)
        self.plan, self.quarantine = plan, list(names)
        log.info("quarantine: %s", ", ".join(self.quarantine) or "none")
        self._status_dirty = True

    def quarantine_add(self, name: str) -> None:
        if name not in self.quarantine:
            self.set_quarantine([*self.quarantine, name])

    def quarantine_remove(self, name: str) -> None:
        self.set_quarantine([n for n in self.quarantine if n != name])

    def _check_quarantine_request(self) -> None:
        if self.control_dir is None:
            return
        path = self.control_dir / "quarantine.json"
        stamp = _stamp([path])
        if stamp == self._quarantine_stamp:
            return
        self._quarantine_stamp = stamp
        try:
            generation, names = read_quarantine(self.control_dir)
        except PodwallError as exc:
            self._error(str(exc))
            return
        if generation <= self.quarantine_generation:
            return
        try:
            self.set_quarantine(sorted(set(names)))
        except PodwallError as exc:
            self.quarantine_error, self.quarantine_error_generation = str(exc), generation
            self._error(f"quarantine request {generation} refused: {exc}")
        self.quarantine_generation = generation
        self._status_dirty = True

    # -- status ----------------------------------------------------------------------------

    def _error(self, message: str) -> None:
        log.error("%s", message)
        self.last_error = message
        self._status_dirty = True

    def status(self, state: str = "running") -> dict[str, Any]:
        return {
            "state": state,
            "pid": os.getpid(),
            "netns": self.netns,
            "policy": str(self.policy_path),
            "version": self.version,
            "reloads": self.reloads,
            "requeued": self.requeued,
            "fail": self.fail,
            "queues": list(self.queue.numbers),
            "workers": [
                {
                    "queue": s.queue_num,
                    "pid": s.pid,
                    "ready": s.ready,
                    "restarts": s.restarts,
                    "version": s.version,
                    "stats": s.stats,
                }
                for s in self._slots
            ],
            "inventory_digest": self.inventory_digest,
            "quarantine": self.quarantine,
            "quarantine_generation": self.quarantine_generation,
            "quarantine_error": self.quarantine_error,
            "quarantine_error_generation": self.quarantine_error_generation,
            "events": self.events_written,
            "last_error": self.last_error,
            "updated": time.time(),
        }

    def _write_status(self, state: str) -> None:
        self._status_dirty = False
        if self.control_dir is None:
            return
        try:
            write_json(self.control_dir / STATUS_FILE, self.status(state))
        except OSError as exc:
            log.warning("cannot write %s: %s", self.control_dir / STATUS_FILE, exc)


@contextlib.contextmanager
def signals_handled(service: EnforcerService, stop: threading.Event) -> Iterator[None]:
    """SIGINT/SIGTERM stop the service, SIGHUP reloads it (main thread only); handlers restored after."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_stop(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    def on_hup(_signum: int, _frame: FrameType | None) -> None:
        service.request_reload()

    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    signal.signal(signal.SIGINT, on_stop)
    signal.signal(signal.SIGTERM, on_stop)
    signal.signal(signal.SIGHUP, on_hup)
    try:
        yield
    finally:
        for s, handler in saved.items():
            signal.signal(s, handler)
