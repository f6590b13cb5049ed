"""The passive monitor: one copy of every packet from the pod veths, violations recorded once, live.

The first tests need nothing special: the copy-choosing rule of the tap (`PodViews`) on
hand-made frames, and the monitor's engine over the demo capture against offline `check`.
The lab test runs as root (skipped with the reason otherwise): it brings up a small lab with a
unique name, taps the node's pod veths, sends real traffic from the pods (by Service name,
so through the DNAT, and by pod address) and checks what the store recorded. Every lab is
taken down in a `finally`.
"""

from __future__ import annotations

import ipaddress
import os
import secrets
import shutil
import struct
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from podwall.analysis.check import check, learn_policy, violation_events
from podwall.analysis.runner import read_flows
from podwall.core.events import Event
from podwall.datapath.io.afpacket import PodViews
from podwall.datapath.io.pcap import CaptureReader
from podwall.enforce.monitor import Monitor, MonitorStats, monitor_lab
from podwall.enforce.tapbypass import TapBypass
from podwall.inventory.loader import load_inventory
from podwall.inventory.resolver import Resolver
from podwall.lab.cluster import exec_in_pod
from podwall.lab.state import LabState
from podwall.policy.formats.podwall_yaml import parse_policy
from podwall.store.events import EventStore
from podwall.store.sinks import JsonlSink
from tests.labkit import running_lab

DEMO = Path(__file__).resolve().parents[2] / "podwall" / "demo"

A, B, C = "10.1.0.2", "10.1.0.3", "10.1.0.4"
VIP, NODE = "10.2.0.60", "10.1.0.1"


def _frame(src: str, dst: str, sport: int = 0, dport: int = 0, proto: int = 6) -> bytes:
    """An Ethernet + IPv4 (+ first 4 bytes of TCP/UDP) frame, enough for the copy rule."""
    ip = struct.pack(
        "!BBHHHBBH4s4s", 0x45, 0, 40, 1, 0, 64, proto, 0,
        ipaddress.ip_address(src).packed, ipaddress.ip_address(dst).packed,
    )  # fmt: skip
    return bytes(12) + b"\x08\x00" + ip + struct.pack("!HH", sport, dport) + bytes(16)


def _copies(views: PodViews, packets: list[tuple[str, str, int, int]]) -> dict[str, list[str]]:
    """Feed each packet as the veths would show it; returns, per packet, on which veths it was kept.

    A packet leaves the veth of its source pod (if a tapped pod) and enters that of its
    destination pod (if tapped); `packets` give the addresses each side sees.
    """
    kept: dict[str, list[str]] = {}
    for src, dst, sport, dport in packets:
        name = f"{src}:{sport}>{dst}:{dport}"
        where = kept.setdefault(name, [])
        if src in (A, B, C) and views.keep(_frame(src, dst, sport, dport), outgoing=False):
            where.append(f"from {src}")
        if dst in (A, B, C) and views.keep(_frame(src, dst, sport, dport), outgoing=True):
            where.append(f"to {dst}")
    return kept


COPY_CASES = [
    pytest.param(
        [(A, B, 40000, 6379), (B, A, 6379, 40000)],
        {"10.1.0.2:40000>10.1.0.3:6379": ["from 10.1.0.2"], "10.1.0.3:6379>10.1.0.2:40000": ["to 10.1.0.2"]},
        id="pod-to-pod-kept-on-the-client-veth",
    ),
    pytest.param(
        [(B, A, 40000, 6379), (A, B, 6379, 40000)],
        {"10.1.0.3:40000>10.1.0.2:6379": ["from 10.1.0.3"], "10.1.0.2:6379>10.1.0.3:40000": ["to 10.1.0.3"]},
        id="pod-to-pod-other-way-round",
    ),
    pytest.param(
        [(A, B, 0, 0), (B, A, 0, 0)],
        {"10.1.0.2:0>10.1.0.3:0": ["to 10.1.0.3"], "10.1.0.3:0>10.1.0.2:0": ["from 10.1.0.3"]},
        id="portless-kept-once-on-one-veth",
    ),
    pytest.param(
        [(NODE, B, 45000, 6379), (B, NODE, 6379, 45000)],
        {"10.1.0.1:45000>10.1.0.3:6379": ["to 10.1.0.3"], "10.1.0.3:6379>10.1.0.1:45000": ["from 10.1.0.3"]},
        id="node-to-pod-both-directions",
    ),
    pytest.param(
        [(A, "192.0.2.9", 41000, 443), ("192.0.2.9", A, 443, 41000)],
        {"10.1.0.2:41000>192.0.2.9:443": ["from 10.1.0.2"], "192.0.2.9:443>10.1.0.2:41000": ["to 10.1.0.2"]},
        id="pod-to-outside-both-directions",
    ),
    pytest.param(
        [(A, "224.0.0.251", 5353, 5353)],
        {"10.1.0.2:5353>224.0.0.251:5353": ["from 10.1.0.2"]},
        id="multicast-kept-at-the-sender",
    ),
]


@pytest.mark.parametrize(("packets", "expected"), COPY_CASES)
def test_each_packet_kept_once_with_its_connection(
    packets: list[tuple[str, str, int, int]], expected: dict[str, list[str]]
) -> None:
    """Every packet is kept exactly once, and both directions of a connection on the same veth."""
    assert _copies(PodViews([A, B, C]), packets) == expected


def test_service_connection_seen_from_the_client_only() -> None:
    """A connection through a Service's DNAT is kept as the client sees it (cluster IP), both ways."""
    views = PodViews([A, B, C])
    kept = [
        views.keep(_frame(A, VIP, 40000, 6379), outgoing=False),  # client veth, request
        views.keep(_frame(VIP, A, 6379, 40000), outgoing=True),  # client veth, un-NATed reply
        views.keep(_frame(A, B, 40000, 6379), outgoing=True),  # server veth, DNATed request
        views.keep(_frame(B, A, 6379, 40000), outgoing=False),  # server veth, reply
    ]
    assert kept == [True, True, False, False]


def test_pods_are_learned_from_what_they_send() -> None:
    """A pod not given up front is learned from its first frame, so later copies are deduplicated."""
    views = PodViews([A])
    views.keep(_frame(B, NODE, 6379, 45000), outgoing=False)
    assert views.local == {ipaddress.ip_address(a).packed for a in (A, B)}
    assert not views.keep(_frame(A, B, 40000, 6379), outgoing=True)


def _demo_violations() -> tuple[list[Event], list[Event]]:
    inv = load_inventory([DEMO / "inventory.yaml"])
    resolver = Resolver(inv)
    policy, _ = learn_policy(list(read_flows([DEMO / "normal.pcapng"], resolver)), inv, resolver)
    offline = violation_events(
        check(read_flows([DEMO / "exploit.pcapng"], resolver), Monitor.for_policy(policy, inv).policy), "x"
    )
    monitor = Monitor.for_policy(policy, inv, source="x")
    with CaptureReader(DEMO / "exploit.pcapng") as reader:
        live = monitor.feed(reader) + monitor.finish()
    return offline, live


def test_monitor_agrees_with_offline_check() -> None:
    """Over the demo's exploit capture, the monitor finds the conversations `podwall check` finds."""
    offline, live = _demo_violations()

    def key(e: Event) -> tuple[str, str, str, int]:
        assert e.verdict is not None
        return (e.client.group, e.server.group, e.application, e.verdict.rule_id)

    assert offline and {key(e) for e in live} == {key(e) for e in offline}
    assert sum(e.count for e in offline) == len(live)  # one live event per violating connection
    assert len({e.id for e in live}) == len(live)


# ---------------------------------------------------------------------------------------------
# On the real kernel


def _netns_usable() -> str | None:
    if os.geteuid() != 0:
        return "the monitor lab test needs root (network namespaces, AF_PACKET)"
    if shutil.which("ip") is None or shutil.which("nft") is None:
        return "ip (iproute2) and nft (nftables) are needed"
    if shutil.which("redis-server") is None:
        return "redis-server is not installed (see ./dev APT_PACKAGES)"
    probe = f"pw-probe-{secrets.token_hex(3)}"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if made.returncode != 0:
        return f"`ip netns add` does not work here: {made.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return None


LAB = """\
apiVersion: podwall.io/v1
kind: Lab
name: {name}
podCIDR: 10.83.0.0/24
serviceCIDR: 10.84.0.0/24
namespaces: [{{name: app}}]
deployments:
  - {{name: redis, namespace: app, labels: {{app: redis}}, server: redis}}
  - {{name: node, namespace: app, labels: {{app: node}}}}
pods:
  - {{name: exploit, namespace: app, labels: {{app: exploit}}}}
services:
  - {{name: redis, namespace: app, selector: {{app: redis}}, clusterIP: 10.84.0.60, ports: [{{port: 6379}}]}}
"""

POLICY = """\
apiVersion: podwall.io/v1
kind: Policy
metadata: {name: lab}
spec:
  defaultMode: monitor
  groups:
    - {name: nv.redis.app, mode: monitor, criteria: [{key: service, op: "=", value: redis}]}
    - {name: nv.node.app, mode: monitor, criteria: [{key: service, op: "=", value: node}]}
    - {name: nv.exploit.app, mode: monitor, criteria: [{key: service, op: "=", value: exploit}]}
  rules:
    - {id: 10, name: node uses redis, from: nv.node.app, to: nv.redis.app, ports: [tcp/6379], applications: [redis]}
"""

PING = b"*1\r\n$4\r\nPING\r\n"
# No Host header: redis drops a connection that sends one (cross-protocol guard) without answering.
HTTP = b"GET /admin HTTP/1.0\r\nUser-Agent: probe\r\n\r\n"


def _send(host: str, payload: bytes, hold: float = 0.0) -> str:
    """Python run inside a pod: send `payload`, print what came back, keep the connection `hold` s."""
    return (
        "import socket, sys, time\n"
        f"s = socket.create_connection(({host!r}, 6379), timeout=5)\n"
        f"s.sendall({payload!r})\n"
        "print(s.recv(256).decode(errors='replace').strip()); sys.stdout.flush()\n"
        f"time.sleep({hold})\n"
        "s.close()\n"
    )


def _run(state: LabState, pod: str, code: str) -> str:
    done = exec_in_pod(state, pod, [sys.executable, "-c", code], timeout=30, capture=True)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


@pytest.fixture
def lab() -> Iterator[LabState]:
    skip = _netns_usable()
    if skip is not None:
        pytest.skip(skip)
    with running_lab(lambda name: LAB.format(name=name), "m", "podwall-monitor-test-") as state:
        yield state


def test_monitor_records_each_violation_once_and_lets_traffic_pass(lab: LabState, tmp_path: Path) -> None:
    """Allowed redis gives no event; HTTP to redis and redis from an unlisted pod are each recorded
    once with explanation, groups and application, while the clients still get their answers."""
    store = EventStore(str(tmp_path / "events.db"))
    jsonl = JsonlSink(tmp_path / "events.jsonl")
    stop, ready = threading.Event(), threading.Event()
    result: dict[str, MonitorStats | BaseException] = {}

    def run() -> None:
        try:
            result["stats"] = monitor_lab(lab, parse_policy(POLICY), [store, jsonl], stop=stop, ready=ready)
        except BaseException as exc:  # surfaced by the test thread below
            result["error"] = exc
            ready.set()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        assert ready.wait(10) and "error" not in result, result.get("error")
        redis_pod = next(p for p in lab.pods if p.workload == "redis")
        answers = {
            "node redis by service": _run(lab, "node", _send("redis", PING)),
            "node redis by pod address": _run(lab, "node", _send(redis_pod.ips[0], PING)),
            "node http": _run(lab, "node", _send("redis", HTTP)),
            "exploit http": _run(lab, "exploit", _send("redis", HTTP)),
        }
        # Held open until the event is stored: the violation is reported while the connection lives.
        holder = subprocess.Popen(
            ["ip", "netns", "exec", next(p.netns for p in lab.pods if p.name == "exploit"),
             sys.executable, "-c", _send("redis", PING, hold=15)],
            stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            assert holder.stdout is not None
            answers["exploit redis"] = holder.stdout.readline().strip()
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and not any(
                e.client.group == "nv.exploit.app" and e.application == "redis" for e in store.query(type="violation")
            ):
                time.sleep(0.1)
            live_before_close = holder.poll() is None
        finally:
            holder.kill()
            holder.wait()
        time.sleep(0.5)
    finally:
        stop.set()
        thread.join(20)
    assert not thread.is_alive() and "error" not in result, result.get("error")
    stats = result["stats"]
    assert isinstance(stats, MonitorStats) and stats.tap is not None

    assert answers["node redis by service"] == answers["node redis by pod address"] == "+PONG"
    assert answers["exploit redis"] == "+PONG"
    # Redis's own error for `GET /admin HTTP/1.0`: the request reached the server and was answered.
    assert answers["node http"].startswith("-ERR") and answers["exploit http"].startswith("-ERR")
    assert live_before_close

    events = store.query(type="violation")
    seen = Counter(
        (e.client.group, e.server.group, e.application, e.verdict.rule_id if e.verdict else -1) for e in events
    )
    assert seen == Counter(
        {
            ("nv.node.app", "nv.redis.app", "http", 0): 1,
            ("nv.exploit.app", "nv.redis.app", "http", 0): 1,
            ("nv.exploit.app", "nv.redis.app", "redis", 0): 1,
        }
    )
    for e in events:
        assert e.verdict is not None and e.verdict.action == "alert" and e.verdict.mode == "monitor"
        assert e.verdict.explanation and e.server.port == 6379 and e.source == f"monitor:{lab.node_netns}"
    node_http = next(e for e in events if e.client.group == "nv.node.app")
    assert node_http.verdict is not None
    assert "Rule 10 (node uses redis) does not apply: application http" in node_http.verdict.explanation
    lines = (tmp_path / "events.jsonl").read_text().splitlines()
    assert len(lines) == len(events) == stats.events_written // 2  # both sinks got every event
    assert stats.tap.frames_kept <= stats.tap.frames_read  # second copies of pod-to-pod packets dropped
    assert stats.write_errors == 0
    store.close()
    jsonl.close()


def test_monitor_command_records_violations_from_a_lab(lab: LabState, tmp_path: Path) -> None:
    """`podwall monitor --duration` taps the lab, prints each violation and stores it (exit 0)."""
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    db = tmp_path / "events.db"
    cmd = [sys.executable, "-m", "podwall.cli.main", "monitor", "-p", str(policy), "--lab", lab.lab,
           "--state-dir", str(Path(lab.state_dir).parent), "--duration", "6", "--db", str(db)]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(2.5)  # the command starts and opens its tap
        assert _run(lab, "exploit", _send("redis", PING)) == "+PONG"
        out, errs = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, errs
    assert "nv.exploit.app -> nv.redis.app:6379 redis rule 0" in out
    stored = EventStore(str(db)).query(type="violation")
    assert [(e.client.group, e.server.group, e.application) for e in stored] == [
        ("nv.exploit.app", "nv.redis.app", "redis")
    ]


_SINK = """
import socket, sys
srv = socket.socket(); srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("0.0.0.0", 7000)); srv.listen(1); print("ready", flush=True)
conn, _ = srv.accept(); total = 0
while data := conn.recv(1 << 20):
    total += len(data)
conn.sendall(str(total).encode()); conn.close()
"""

# 1 MiB every 25 ms: the monitor must see the start, judge it and tell the tap before most of it.
_BULK = """
import socket, sys, time
s = socket.create_connection((sys.argv[1], 7000), timeout=30)
chunk = bytes(1 << 20)
for _ in range(int(sys.argv[2])):
    s.sendall(chunk)
    time.sleep(0.025)
s.shutdown(socket.SHUT_WR)
print(s.recv(64).decode())
"""


def test_a_bulk_connection_stops_being_copied_once_judged(lab: LabState, tmp_path: Path) -> None:
    """A 64 MiB upload between two pods is judged (its violation recorded) and then no longer copied
    to the monitor: the tap reads a small part of the bytes sent, and the connection's end is seen."""
    if TapBypass.create() is None:
        pytest.skip("this kernel does not load the tap's eBPF filter")
    store = EventStore(str(tmp_path / "events.db"))
    stop, ready = threading.Event(), threading.Event()
    result: dict[str, MonitorStats | BaseException] = {}

    def run() -> None:
        try:
            result["stats"] = monitor_lab(lab, parse_policy(POLICY), [store], stop=stop, ready=ready)
        except BaseException as exc:
            result["error"] = exc
            ready.set()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    sink_pod = next(p for p in lab.pods if p.name == "exploit")
    sink = subprocess.Popen(["ip", "netns", "exec", sink_pod.netns, sys.executable, "-c", _SINK],
                            stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert ready.wait(10) and "error" not in result, result.get("error")
        assert sink.stdout is not None and sink.stdout.readline().strip() == "ready"
        sent = 64
        got = _run(lab, "node", _BULK.replace("sys.argv[1]", repr(sink_pod.ips[0])).replace("sys.argv[2]", str(sent)))
        assert got == str(sent << 20)
        time.sleep(1.0)
    finally:
        sink.kill()
        sink.wait()
        stop.set()
        thread.join(20)
    assert "error" not in result, result.get("error")
    stats = result["stats"]
    assert isinstance(stats, MonitorStats) and stats.tap is not None
    assert stats.tap.bytes_read < (sent << 20) // 4, stats.tap  # most of the upload was never copied
    events = [e for e in store.query(type="violation") if e.server.port == 7000]
    assert len(events) == 1 and events[0].client.group == "nv.node.app"  # judged before it was skipped
    store.close()
