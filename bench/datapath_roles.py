"""The programs bench/datapath.py runs inside the lab's pods and node: traffic servers and clients,
the enforcer's worker, an allow-everything worker (mode q) and the passive tap.

    python bench/datapath_roles.py ROLE ARGS...   (started by bench/datapath.py, not by hand)
"""

from __future__ import annotations

import json
import signal
import socket
import struct
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any, TypeVar

T = TypeVar("T")


ANSWER = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 3\r\nConnection: close\r\n\r\nok\n"
REQUEST = b"GET /ping HTTP/1.1\r\nHost: server\r\nUser-Agent: podwall-bench\r\nConnection: close\r\n\r\n"


def _listen(port: int) -> socket.socket:
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("0.0.0.0", port))
    srv.listen(1024)
    return srv


def serve_sink(port: int) -> None:
    """Bulk receiver: reads each connection to its end, then answers with the byte count."""
    srv = _listen(port)
    buf = bytearray(1 << 20)
    while True:
        conn, _peer = srv.accept()
        total = 0
        try:
            while n := conn.recv_into(buf):
                total += n
            body = str(total).encode()
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
        except OSError:
            pass
        finally:
            conn.close()


def serve_answer(port: int) -> None:
    """One short HTTP answer per connection (the connection-rate server)."""
    srv = _listen(port)
    while True:
        conn, _peer = srv.accept()
        try:
            conn.recv(4096)
            conn.sendall(ANSWER)
        except OSError:
            pass
        finally:
            conn.close()


def run_stream(host: str, port: int, seconds: float) -> None:
    """Single-stream HTTP upload for `seconds`; prints the bytes the receiver counted and the time."""
    chunk = memoryview(bytes(1 << 20))
    head = (
        f"POST /upload HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/octet-stream\r\n"
        f"Content-Length: {1 << 50}\r\n\r\n"
    ).encode()
    sock = socket.create_connection((host, port), timeout=30)
    start = time.monotonic()
    deadline = start + seconds
    sock.sendall(head)
    while time.monotonic() < deadline:
        sock.sendall(chunk)
    sock.shutdown(socket.SHUT_WR)
    reply = b""
    while data := sock.recv(4096):
        reply += data
    elapsed = time.monotonic() - start
    sock.close()
    _head, _, body = reply.partition(b"\r\n\r\n")
    print(json.dumps({"bytes": int(body or b"0"), "seconds": elapsed}))


def run_connections(host: str, port: int, seconds: float) -> None:
    """New connections one after the other for `seconds` (request, answer, close with RST)."""
    linger = struct.pack("ii", 1, 0)
    done = errors = 0
    start = time.monotonic()
    deadline = start + seconds
    while time.monotonic() < deadline:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
        sock.settimeout(3.0)
        try:
            sock.connect((host, port))
            sock.sendall(REQUEST)
            if sock.recv(4096):
                done += 1
            else:
                errors += 1
        except OSError:
            errors += 1
        finally:
            sock.close()
    print(json.dumps({"connections": done, "errors": errors, "seconds": time.monotonic() - start}))


def _stop_on_term() -> threading.Event:
    stop = threading.Event()

    def handler(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
    return stop


def _profiled(path: str, fn: Callable[[], T]) -> T:
    """`fn()`, under cProfile when `path` is not empty (the statistics are written there)."""
    if not path:
        return fn()
    import cProfile

    prof = cProfile.Profile()
    try:
        return prof.runcall(fn)
    finally:
        prof.dump_stats(path)


def run_worker(queue_num: int, policy_path: str, inventory_path: str, profile: str, busy_poll_us: int) -> None:
    """The NFQUEUE worker on one queue (run inside the node namespace) until SIGTERM; prints its counters."""
    from podwall.datapath.io.nfqueue import NfQueue
    from podwall.enforce.reset import RawResetter
    from podwall.enforce.worker import Worker, WorkerConfig
    from podwall.enforce.worker_process import keep_freed_memory, settle_heap
    from podwall.inventory.loader import load_inventory
    from podwall.inventory.resolver import Resolver
    from podwall.policy.model import Policy

    keep_freed_memory()  # as `podwall enforce` workers do
    stop = _stop_on_term()
    policy = Policy.model_validate(json.loads(Path(policy_path).read_text(encoding="utf-8")))
    inventory = load_inventory([inventory_path])
    resetter = RawResetter()
    worker = Worker(policy, Resolver(inventory), WorkerConfig.podwall(), resetter=resetter)
    settle_heap()  # as `podwall enforce` workers do
    with NfQueue(queue_num, fail_open=False) as queue:
        print("ready", flush=True)
        _profiled(profile, lambda: worker.run(queue, stop, spin=busy_poll_us / 1e6))
        stats: dict[str, Any] = dict(worker.stats)
        stats["queue"] = dict(queue.stats)
    resetter.close()
    print(json.dumps(stats), flush=True)


def run_allow_all(queue_num: int, marking: str) -> None:
    """A stand-in worker, nothing decoded: every queued packet gets the allow mark (mode q,
    `marking` "mark"), or is accepted without it and so keeps coming (mode r, "none")."""
    from podwall.datapath.io.nfqueue import NF_ACCEPT, NF_REPEAT, NfQueue
    from podwall.enforce.plan import MARK_ALLOW

    verdict, mark = (NF_REPEAT, MARK_ALLOW) if marking == "mark" else (NF_ACCEPT, None)
    stop = _stop_on_term()
    packets = 0
    with NfQueue(queue_num, fail_open=False) as queue:
        print("ready", flush=True)
        while not stop.is_set():
            messages = queue.recv(0.2, 64)
            if messages:
                packets += len(messages)
                queue.verdict_batch(messages[-1].packet_id, verdict, mark)
        stats: dict[str, Any] = {"packets": packets, "queue": dict(queue.stats)}
    print(json.dumps(stats), flush=True)


def run_tap(root: str, lab: str, policy_path: str, profile: str) -> None:
    """The passive monitor on the lab's pod veths until SIGTERM; prints its counters."""
    from podwall.enforce.monitor import Monitor, lab_target, run_monitor, tap_for
    from podwall.inventory.loader import load_inventory
    from podwall.lab.cluster import find_lab
    from podwall.policy.model import Policy

    state = find_lab(lab, root)
    policy = Policy.model_validate(json.loads(Path(policy_path).read_text(encoding="utf-8")))
    target = lab_target(state)
    monitor = Monitor.for_policy(policy, load_inventory([state.inventory]), source=f"bench:{target.netns}")
    tap, bypass = tap_for(target)  # as `podwall monitor` taps a lab
    print("ready", flush=True)
    stats = _profiled(profile, lambda: run_monitor(monitor, tap, bypass=bypass))  # SIGTERM/SIGINT end it
    out = stats.to_dict()
    if bypass is not None:
        out["bypassed_connections"] = bypass.added
        bypass.close()
    print(json.dumps(out), flush=True)


ROLES: dict[str, Callable[[list[str]], None]] = {
    "_sink": lambda a: serve_sink(int(a[0])),
    "_answer": lambda a: serve_answer(int(a[0])),
    "_stream": lambda a: run_stream(a[0], int(a[1]), float(a[2])),
    "_connect": lambda a: run_connections(a[0], int(a[1]), float(a[2])),
    "_worker": lambda a: run_worker(int(a[0]), a[1], a[2], a[3], int(a[4])),
    "_allow_all": lambda a: run_allow_all(int(a[0]), a[1]),
    "_tap": lambda a: run_tap(a[0], a[1], a[2], a[3]),
}


if __name__ == "__main__":
    ROLES[sys.argv[1]](sys.argv[2:])
