"""The NFQUEUE binding and worker on the real kernel (root only), in namespaces the tests create.

Topology: client namespace -- veth -- router namespace -- veth -- server namespace. The
router forwards between the two and holds the iptables-nft NFQUEUE rules and the queue
(as a node does for its pods); the tests add their own rules there, nothing else's. Every
namespace is removed at the end, which removes the veths and rules with it.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import pytest

from podwall.datapath.io.nfqueue import F_FAIL_OPEN, F_GSO, NF_ACCEPT, NF_DROP, NfQueue, NfQueueError
from podwall.enforce.reset import RawResetter
from podwall.enforce.worker import Worker, WorkerConfig
from podwall.inventory.resolver import Resolver
from podwall.policy.model import Policy


def _usable() -> str | None:
    if os.geteuid() != 0:
        return "the NFQUEUE tests need root (network namespaces, netfilter)"
    for tool in ("ip", "iptables"):
        if shutil.which(tool) is None:
            return f"{tool} is needed"
    return None


_SKIP = _usable()
pytestmark = pytest.mark.skipif(_SKIP is not None, reason=_SKIP or "")

if _SKIP is None:
    from pyroute2 import netns

CLIENT_IP, ROUTER_C, ROUTER_S, SERVER_IP = "10.213.1.2", "10.213.1.1", "10.213.2.1", "10.213.2.2"
ALLOW_MARK, DENY_MARK = 0x1, 0x2


def _run(*args: str) -> None:
    done = subprocess.run(list(args), capture_output=True, text=True, timeout=20)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(args)}: {done.stderr.strip()}")


@dataclass
class Topo:
    client: str
    router: str
    server: str

    def iptables(self, *args: str) -> None:
        _run("ip", "netns", "exec", self.router, "iptables", *args)


@contextmanager
def inside(name: str) -> Iterator[None]:
    """Run the block with the calling thread in namespace `name` (sockets made there stay there)."""
    back = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        netns.setns(name, flags=0)
        yield
    finally:
        netns.setns(back, flags=0)
        os.close(back)


@pytest.fixture(scope="module")
def topo() -> Iterator[Topo]:
    tag = secrets.token_hex(3)
    t = Topo(f"pwq-{tag}-c", f"pwq-{tag}-r", f"pwq-{tag}-s")
    try:
        for ns in (t.client, t.router, t.server):
            _run("ip", "netns", "add", ns)
            _run("ip", "-n", ns, "link", "set", "lo", "up")
        _run("ip", "-n", t.client, "link", "add", "eth0", "type", "veth", "peer", "name", "c0", "netns", t.router)
        _run("ip", "-n", t.server, "link", "add", "eth0", "type", "veth", "peer", "name", "s0", "netns", t.router)
        for ns, dev, addr in (
            (t.client, "eth0", f"{CLIENT_IP}/24"),
            (t.router, "c0", f"{ROUTER_C}/24"),
            (t.router, "s0", f"{ROUTER_S}/24"),
            (t.server, "eth0", f"{SERVER_IP}/24"),
        ):
            _run("ip", "-n", ns, "addr", "add", addr, "dev", dev)
            _run("ip", "-n", ns, "link", "set", dev, "up")
        _run("ip", "-n", t.client, "route", "add", "default", "via", ROUTER_C)
        _run("ip", "-n", t.server, "route", "add", "default", "via", ROUTER_S)
        _run("ip", "netns", "exec", t.router, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        yield t
    finally:
        for ns in (t.client, t.router, t.server):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=20)


@pytest.fixture()
def router(topo: Topo) -> Iterator[Topo]:
    """The topology with an empty FORWARD chain in the router after the test."""
    try:
        yield topo
    finally:
        topo.iptables("-F", "FORWARD")


def _udp_pair(topo: Topo, port: int) -> tuple[socket.socket, socket.socket]:
    with inside(topo.server):
        rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        rx.bind((SERVER_IP, port))
        rx.settimeout(0.5)
    with inside(topo.client):
        tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    return tx, rx


def _received(rx: socket.socket) -> list[bytes]:
    got = []
    try:
        while True:
            got.append(rx.recv(2048))
    except TimeoutError:
        pass
    return got


def _queue(topo: Topo, num: int, **kw: object) -> NfQueue:
    with inside(topo.router):
        return NfQueue(num, **kw)  # type: ignore[arg-type]


def test_bind_accepts_gso_and_fail_open_and_refuses_second_binder(router: Topo) -> None:
    """Binding checks each ack: GSO and fail-open are accepted; a second binder of the number is refused."""
    with _queue(router, 11, fail_open=True) as q:
        assert q.flags == F_GSO | F_FAIL_OPEN
        with pytest.raises(NfQueueError, match="bound by another process"):
            _queue(router, 11)
    with _queue(router, 11, gso=True) as again:  # unbound on close: the number is free again
        assert again.flags == F_GSO


def test_accept_passes_and_drop_blocks(router: Topo) -> None:
    """Queued datagrams reach userspace with their payload; accepted ones arrive, dropped ones do not."""
    router.iptables("-A", "FORWARD", "-p", "udp", "--dport", "9000", "-j", "NFQUEUE", "--queue-num", "12")
    tx, rx = _udp_pair(router, 9000)
    with _queue(router, 12) as q, tx, rx:
        for i in range(6):
            tx.sendto(b"keep-%d" % i if i % 2 == 0 else b"drop-%d" % i, (SERVER_IP, 9000))
        seen: list[bytes] = []
        deadline = time.monotonic() + 5
        while len(seen) < 6 and time.monotonic() < deadline:
            for m in q.recv(0.5):
                assert m.hw_protocol == 0x0800 and m.hook == 2  # FORWARD
                assert m.indev > 0 and m.outdev > 0
                body = m.payload[28:]  # after the 20-byte IPv4 and 8-byte UDP headers
                seen.append(body)
                q.verdict(m.packet_id, NF_ACCEPT if body.startswith(b"keep") else NF_DROP)
        assert sorted(seen) == sorted([b"keep-0", b"drop-1", b"keep-2", b"drop-3", b"keep-4", b"drop-5"])
        assert sorted(_received(rx)) == [b"keep-0", b"keep-2", b"keep-4"]


def test_busy_polling_receives_packets_and_still_times_out(router: Topo) -> None:
    """With `spin`, a packet that comes while the queue busy-polls is received (in a later call as
    well as the first), and an empty queue still returns [] after spin plus the timeout."""
    router.iptables("-A", "FORWARD", "-p", "udp", "--dport", "9002", "-j", "NFQUEUE", "--queue-num", "14")
    tx, rx = _udp_pair(router, 9002)
    with _queue(router, 14) as q, tx, rx:
        started = time.monotonic()
        assert q.recv(0.05, spin=0.02) == []
        assert time.monotonic() - started >= 0.06
        seen: list[bytes] = []
        for i in range(3):
            tx.sendto(b"spin-%d" % i, (SERVER_IP, 9002))
            deadline = time.monotonic() + 5
            while len(seen) <= i and time.monotonic() < deadline:
                for m in q.recv(0.5, spin=0.05):
                    seen.append(m.payload[28:])
                    q.verdict(m.packet_id, NF_ACCEPT)
        assert seen == [b"spin-0", b"spin-1", b"spin-2"]
        assert sorted(_received(rx)) == seen


def test_batch_verdict_decides_every_waiting_packet(router: Topo) -> None:
    """One batch verdict for the highest id accepts every packet waiting in the queue."""
    router.iptables("-A", "FORWARD", "-p", "udp", "--dport", "9002", "-j", "NFQUEUE", "--queue-num", "13")
    tx, rx = _udp_pair(router, 9002)
    with _queue(router, 13) as q, tx, rx:
        for i in range(5):
            tx.sendto(b"b%d" % i, (SERVER_IP, 9002))
        ids: list[int] = []
        deadline = time.monotonic() + 5
        while len(ids) < 5 and time.monotonic() < deadline:
            ids.extend(m.packet_id for m in q.recv(0.5))
        assert len(ids) == 5
        assert _received(rx) == []  # all still waiting for a verdict
        q.verdict_batch(max(ids), NF_ACCEPT)
        assert sorted(_received(rx)) == [b"b0", b"b1", b"b2", b"b3", b"b4"]
        assert q.stats["batch_verdicts"] == 1


@pytest.mark.parametrize(("bypass", "arrives"), [(True, True), (False, False)], ids=["bypass-open", "no-bypass-closed"])
def test_no_listener_follows_queue_bypass(router: Topo, bypass: bool, arrives: bool) -> None:
    """With the queue unbound, --queue-bypass lets packets through (fail open); without it they are dropped."""
    rule = ["-A", "FORWARD", "-p", "udp", "--dport", "9004", "-j", "NFQUEUE", "--queue-num", "14"]
    router.iptables(*rule, *(["--queue-bypass"] if bypass else []))
    tx, rx = _udp_pair(router, 9004)
    with tx, rx:
        _queue(router, 14).close()  # bound, then unbound: as after a worker exits
        tx.sendto(b"orphan", (SERVER_IP, 9004))
        assert _received(rx) == ([b"orphan"] if arrives else [])


def test_fail_open_flag_accepts_when_the_queue_is_full(router: Topo) -> None:
    """With F_FAIL_OPEN and a full queue (hung listener) new packets pass; unbinding drops the waiting one."""
    router.iptables("-A", "FORWARD", "-p", "udp", "--dport", "9006", "-j", "NFQUEUE", "--queue-num", "15")
    tx, rx = _udp_pair(router, 9006)
    with tx, rx:
        q = _queue(router, 15, maxlen=1, fail_open=True)
        try:
            for i in range(3):
                tx.sendto(b"f%d" % i, (SERVER_IP, 9006))
            assert sorted(_received(rx)) == [b"f1", b"f2"]  # f0 waits in the queue, never read
        finally:
            q.close()
        assert _received(rx) == []


@dataclass
class Server:
    """A TCP server in the server namespace that records what each connection delivered."""

    sock: socket.socket
    data: list[bytes] = field(default_factory=list)
    resets: int = 0
    done: threading.Event = field(default_factory=threading.Event)

    def serve(self, connections: int) -> None:
        for _ in range(connections):
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            got = b""
            with conn:
                conn.settimeout(3)
                try:
                    while True:
                        chunk = conn.recv(4096)
                        if not chunk:
                            break
                        got += chunk
                        if b"PING" in got:
                            conn.sendall(b"+PONG\r\n")
                except ConnectionResetError:
                    self.resets += 1
                except TimeoutError:
                    pass
            self.data.append(got)
        self.done.set()


def _policy(port: int) -> Policy:
    groups = [
        {"name": "client", "criteria": [{"key": "address", "op": "=", "value": CLIENT_IP}]},
        {"name": "server", "criteria": [{"key": "address", "op": "=", "value": SERVER_IP}]},
    ]
    rules = [{"id": 1, "from": "client", "to": "server", "ports": [f"tcp/{port}"], "applications": ["redis"]}]
    return Policy.model_validate(
        {"metadata": {"name": "live"}, "spec": {"defaultMode": "protect", "groups": groups, "rules": rules}}
    )


def test_worker_allows_redis_and_cuts_http_at_both_ends(router: Topo) -> None:
    """Through the real queue: Redis PING gets PONG; HTTP to the Redis port is reset at the client, the
    server receives none of its bytes, and the crafted RST resets the server's socket too."""
    port = 6390
    ports = ["-p", "tcp", "-m", "multiport", "--ports", str(port)]
    for rule in (
        ["-m", "connmark", "--mark", str(ALLOW_MARK), "-j", "ACCEPT"],
        ["-m", "connmark", "--mark", str(DENY_MARK), "-j", "REJECT", "--reject-with", "tcp-reset"],
        ["-m", "mark", "--mark", str(ALLOW_MARK), "-j", "CONNMARK", "--save-mark"],
        ["-m", "mark", "--mark", str(ALLOW_MARK), "-j", "ACCEPT"],
        ["-m", "mark", "--mark", str(DENY_MARK), "-j", "CONNMARK", "--save-mark"],
        ["-m", "mark", "--mark", str(DENY_MARK), "-j", "REJECT", "--reject-with", "tcp-reset"],
        ["-j", "NFQUEUE", "--queue-num", "16"],
    ):
        router.iptables("-A", "FORWARD", *ports, *rule)
    with inside(router.server):
        listener = socket.create_server((SERVER_IP, port))
    server = Server(listener)
    serving = threading.Thread(target=server.serve, args=(2,), daemon=True)
    serving.start()
    resetter = RawResetter()
    worker = Worker(_policy(port), Resolver(None), WorkerConfig(ALLOW_MARK, DENY_MARK), resetter=resetter)
    stop = threading.Event()
    q = _queue(router, 16)

    def loop() -> None:
        with inside(router.router):  # the resetter's raw socket is opened from this thread
            worker.run(q, stop, timeout=0.1)

    running = threading.Thread(target=loop, daemon=True)
    running.start()
    try:
        with inside(router.client):
            ok = socket.create_connection((SERVER_IP, port), timeout=5)
            bad = socket.create_connection((SERVER_IP, port), timeout=5)
        with ok:
            ok.sendall(b"*1\r\n$4\r\nPING\r\n")
            assert ok.recv(100) == b"+PONG\r\n"
        with bad:
            bad.sendall(b"GET / HTTP/1.1\r\nHost: redis\r\n\r\n")
            with pytest.raises(ConnectionResetError):
                bad.recv(100)
        assert server.done.wait(10)
    finally:
        stop.set()
        running.join(5)
        q.close()
        listener.close()
        resetter.close()
    assert server.data[0] == b"*1\r\n$4\r\nPING\r\n"
    assert server.data[1] == b""  # zero payload bytes of the denied connection reached the server
    assert server.resets == 1  # the crafted RST cut the server's half
    assert worker.stats["denied"] == 1 and worker.stats["allowed"] == 1 and worker.stats["resets"] == 1
