"""The inside of one `podwall enforce` worker process (forked by `EnforcerService`, run.py).

The worker enters the node's network namespace (setns), binds one NFQUEUE queue, runs the decision
`Worker` with podwall's marks (`WorkerConfig.podwall`), and talks to the supervisor over its control pipe:

- to the supervisor: ("ready", queue, flags, version), ("events", [Event]), ("beat", stats)
  every `HEARTBEAT` seconds, ("reloaded", version), or ("failed", reason) when it cannot start;
- from the supervisor: ("reload", policy | None, inventory | None, version) and ("stop",).

It stops by itself when the supervisor is gone (its parent changed), so that no orphan holds a queue.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import os
import signal
import time
from collections.abc import Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path

from podwall.analysis.check import dns_service_groups
from podwall.core.events import Event
from podwall.datapath.io.nfqueue import NfQueue
from podwall.enforce.inline_inspect import InlineInspection
from podwall.enforce.reset import RawResetter
from podwall.enforce.worker import Worker, WorkerConfig
from podwall.inventory.model import Inventory
from podwall.inventory.resolver import Resolver
from podwall.policy.model import Policy

__all__ = ["HEARTBEAT", "WorkerSpec", "enter_netns", "keep_freed_memory", "worker_main"]

CLONE_NEWNET = 0x40000000
NETNS_DIR = "/run/netns"
HEARTBEAT = 1.0  # seconds between a worker's heartbeats


def enter_netns(netns: str | None) -> None:
    """Move the calling (single-threaded) process into a named network namespace for good."""
    if not netns:
        return
    path = netns if "/" in netns else os.path.join(NETNS_DIR, netns)
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"setns({path})")
    finally:
        os.close(fd)


# glibc mallopt parameters: keep freed memory instead of handing it back to the kernel.
_M_TRIM_THRESHOLD = -1
_M_TOP_PAD = -2
_M_MMAP_THRESHOLD = -3


def keep_freed_memory() -> bool:
    """Tell glibc's allocator to keep freed memory in the process (True when it took the settings).

    A worker allocates and frees a copy of every queued packet (up to 64 KiB with GSO); with the
    default thresholds the heap top is trimmed and regrown again and again, and each regrowth
    page-faults fresh memory: measured here, a 64 KiB copy cost ~12 µs instead of ~2 µs. A worker
    is a process of its own, so the setting touches nothing else."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc: nothing to tune
        return False
    settings = ((_M_TRIM_THRESHOLD, 256 << 20), (_M_TOP_PAD, 64 << 20), (_M_MMAP_THRESHOLD, 4 << 20))
    return all(mallopt(param, value) == 1 for param, value in settings)


def settle_heap() -> None:
    """Move everything alive now (policy, inventory, rules, code) out of the garbage collector's
    reach: a full collection otherwise walks that whole heap again and again while the worker
    allocates per packet, a pause every queued packet behind it waits for. Called once, at start-up:
    after a reload it would also freeze the connections alive then (their sessions are cycles),
    which would outlive their flows."""
    gc.unfreeze()
    gc.collect()
    gc.freeze()


def inline_inspection(policy: Policy, source: str, pcap_dir: Path | None = None) -> InlineInspection | None:
    """The inspectors a worker runs: only when some group turns WAF or DLP on (loading the CRS
    costs each worker ~0.5 s and inspected connections stay in userspace); their findings' pcaps
    go to `pcap_dir` when given."""
    groups = policy.spec.groups
    if not any((g.waf is not None and g.waf.status) or (g.dlp is not None and g.dlp.status) for g in groups):
        return None
    from podwall.inspect.setup import InspectOptions, Inspectors

    return InlineInspection(Inspectors(policy, InspectOptions(inline=True)), source=source, pcap_dir=pcap_dir)


@dataclass(frozen=True, slots=True)
class WorkerSpec:
    """What a worker process needs; passed by fork, never pickled."""

    queue_num: int
    netns: str | None
    fail_open: bool
    policy: Policy
    inventory: Inventory | None
    version: int
    parent: int
    busy_poll: float = 0.0  # seconds of busy polling before the queue sleeps (NfQueue.recv's spin)
    pcap_dir: Path | None = None  # where the inspectors' findings leave their packets


def worker_main(spec: WorkerSpec, conn: Connection) -> None:
    """A worker process: bind one queue inside the node namespace and decide until told to stop."""
    # Ctrl-C reaches the whole process group: the supervisor decides when workers stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    keep_freed_memory()
    try:
        enter_netns(spec.netns)
        queue = NfQueue(spec.queue_num, fail_open=spec.fail_open)
    except Exception as exc:  # reported to the supervisor, which logs it and retries later
        conn.send(("failed", f"{type(exc).__name__}: {exc}"))
        return

    def send_events(events: Sequence[Event]) -> None:
        conn.send(("events", list(events)))

    def make_worker(policy: Policy, inventory: Inventory | None) -> Worker:
        resolver = Resolver(inventory)
        source = f"enforce:{spec.netns or 'host'}:q{spec.queue_num}"
        return Worker(
            policy,
            resolver,
            WorkerConfig.podwall(source=source),
            sink=send_events,
            resetter=resetter,
            dns_service_groups=dns_service_groups(inventory, resolver),
            inspection=inline_inspection(policy, source, spec.pcap_dir),
        )

    resetter = RawResetter()
    worker = make_worker(spec.policy, spec.inventory)
    settle_heap()
    version = spec.version
    conn.send(("ready", spec.queue_num, queue.flags, version))
    next_beat = time.monotonic() + HEARTBEAT
    try:
        while True:
            messages = queue.recv(0.2, 64, spec.busy_poll)
            if messages:
                worker.handle(queue, messages)
            if conn.poll():
                command = conn.recv()
                if command[0] == "stop":
                    break
                if command[0] == "reload":
                    _, policy, inventory, version = command
                    if inventory is not None or policy is not None:
                        if inventory is not None:
                            worker.resolver = Resolver(inventory)
                        worker.reload(policy if policy is not None else worker.engine)
                    conn.send(("reloaded", version))
            now = time.monotonic()
            if now >= next_beat:
                next_beat = now + HEARTBEAT
                conn.send(("beat", dict(worker.stats)))
                if os.getppid() != spec.parent:  # the supervisor is gone: do not hold the queue
                    break
    except (EOFError, BrokenPipeError, ConnectionResetError):
        pass
    finally:
        queue.close()
        resetter.close()
