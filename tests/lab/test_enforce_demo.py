"""`podwall enforce` in the demo lab (root only): the whole inline enforcer against real pods.

One demo lab (podwall/lab/demo.yaml under a unique name, temp state dir, always taken down).
The whitelist is *learned from the lab's own traffic*: while a passive AF_PACKET tap on the
node records every pod veth into a pcap, the demo's normal requests run (the node namespace
asks nginx for /api/cart, which nginx proxies to `node`, which PINGs redis; a node pod PINGs
redis with redis-cli); then `podwall learn` turns that capture plus the lab inventory into the
policy (protect and monitor variants). Each test runs `podwall enforce` as a subprocess and
stops it (ruleset removed) in its teardown.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from podwall.datapath.io.afpacket import Tap
from podwall.datapath.io.pcap import CaptureReader
from podwall.datapath.io.pcapwriter import PcapWriter
from podwall.enforce.apply import remove_ruleset
from podwall.enforce.control import QUARANTINE_FILE, read_status
from podwall.enforce.monitor import lab_target
from podwall.enforce.plan import build_plan
from podwall.inventory.loader import load_inventory
from podwall.lab.cluster import exec_in_pod, lab_down, lab_up, pod_command, resolve_pod
from podwall.lab.scale import lab_add_pod, lab_remove_pod
from podwall.lab.spec import PodSpec, parse_lab
from podwall.lab.state import LabState
from podwall.policy.formats.podwall_yaml import parse_policy
from podwall.store.events import EventStore
from tests.labkit import needs_root

DEMO = Path(__file__).resolve().parents[2] / "podwall" / "lab" / "demo.yaml"
PROGRAMS = ("ip", "nft", "iptables-restore", "ip6tables-restore", "conntrack", "redis-server", "redis-cli",
            "nginx", "dnsmasq", "curl")  # fmt: skip


pytestmark = needs_root("the enforce demo tests (network namespaces, nftables, NFQUEUE)", PROGRAMS)

PODWALL = [sys.executable, "-m", "podwall.cli.main"]


# ---------------------------------------------------------------------------------------------
# The lab and the learned policy


@pytest.fixture(scope="module")
def root() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="podwall-enforce-demo-"))
    path.chmod(0o711)  # servers running as other users must traverse it
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def lab(root: Path) -> Iterator[LabState]:
    name = "d" + secrets.token_hex(4)
    text = DEMO.read_text().replace("\nname: demo\n", f"\nname: {name}\n", 1)
    try:
        yield lab_up(parse_lab(text, "demo.yaml"), root)
    finally:
        with contextlib.suppress(Exception):  # the namespace may already be gone
            remove_ruleset(f"pw-{name}-node")
        lab_down(name, root)


def _normal_traffic(lab: LabState) -> None:
    """The demo application's normal requests, through its real servers."""
    # The node namespace has no route to the service CIDR: it asks the nginx pod directly.
    url = f"http://{resolve_pod(lab, 'nginx').ips[0]}/api/cart"
    for _ in range(3):
        done = exec_in_pod(lab, lab.node_netns, ["curl", "-sf", "-m", "5", url], timeout=30, capture=True)
        assert done.returncode == 0, (done.returncode, done.stderr)
    for _ in range(2):
        assert _redis_cli(lab, "node") == "PONG"


@pytest.fixture(scope="module")
def policies(lab: LabState, root: Path) -> dict[str, Path]:
    """Protect and monitor policies learned from a tap capture of the lab's normal traffic."""
    capture = root / "normal.pcap"
    target = lab_target(lab)
    stop = threading.Event()
    tap = Tap(target.interfaces, target.netns, local_addresses=target.addresses)

    def record() -> None:
        with PcapWriter(capture) as writer:
            for batch in tap.batches(0.2):
                for frame in batch:
                    writer.write(frame.ts, frame.data, frame.orig_len)
                if stop.is_set():
                    break
        tap.close()

    recorder = threading.Thread(target=record, daemon=True)
    recorder.start()
    try:
        _normal_traffic(lab)
        time.sleep(0.5)
    finally:
        stop.set()
        recorder.join(10)
    out = {}
    for mode in ("protect", "monitor"):
        path = root / f"{mode}.yaml"
        done = subprocess.run([*PODWALL, "learn", str(capture), "-i", lab.inventory, "--mode", mode, "-o", str(path),
                               "--no-store"], capture_output=True, text=True, timeout=120)  # fmt: skip
        assert done.returncode == 0, done.stderr
        out[mode] = path
    learned = yaml.safe_load(out["protect"].read_text())
    pairs = {(r["from"], r["to"], tuple(r.get("applications", []))) for r in learned["spec"]["rules"]}
    assert ("nv.node.demo", "nv.redis.demo", ("redis",)) in pairs, pairs  # learned, not written by hand
    return out


# ---------------------------------------------------------------------------------------------
# Clients and server-side evidence

# Connect, send one payload, report the first answer line or the error, as text.
_CLIENT = """
import socket, sys
host, port, payload, timeout = sys.argv[1], int(sys.argv[2]), sys.argv[3], float(sys.argv[4])
try:
    s = socket.create_connection((host, port), timeout=timeout)
    s.sendall(payload.encode().decode('unicode_escape').encode())
    data = s.recv(200)
    print('ok', data.decode(errors='replace').split('\\r\\n')[0] if data else 'closed')
except OSError as exc:
    print('error', type(exc).__name__)
"""

# Keeps one Redis connection open: PING at start and after each line read on stdin.
_HOLDER = """
import socket, sys
s = socket.create_connection(('redis', 6379), timeout=5)
while True:
    try:
        s.sendall(b'*1\\r\\n$4\\r\\nPING\\r\\n')
        print(s.recv(100).decode().strip() or 'closed', flush=True)
    except OSError as exc:
        print('error', type(exc).__name__, flush=True)
    if not sys.stdin.readline():
        break
"""

PING = "*1\\r\\n$4\\r\\nPING\\r\\n"
HTTP = "GET / HTTP/1.1\\r\\nHost: redis\\r\\n\\r\\n"


def _redis_cli(lab: LabState, pod: str, timeout: float = 4.0) -> str:
    done = exec_in_pod(lab, pod, ["timeout", str(timeout), "redis-cli", "-h", "redis", "PING"], timeout=30,
                       capture=True)  # fmt: skip
    return (done.stdout + done.stderr).strip() or f"exit {done.returncode}"


def _client(lab: LabState, pod: str, payload: str, timeout: float = 3.0) -> str:
    argv = [sys.executable, "-c", _CLIENT, "redis", "6379", payload, str(timeout)]
    done = exec_in_pod(lab, pod, argv, timeout=30, capture=True)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def _redis_stats(lab: LabState) -> dict[str, int]:
    """Redis's own counters, asked over loopback inside its pod (not seen by the node's ruleset)."""
    done = exec_in_pod(lab, "redis", ["redis-cli", "-h", "127.0.0.1", "INFO", "stats"], timeout=20, capture=True)
    assert done.returncode == 0, done.stderr
    keys = ("total_connections_received", "total_commands_processed")
    return {k: int(line.split(":")[1]) for line in done.stdout.splitlines() for k in keys if line.startswith(k + ":")}


def _redis_clients(lab: LabState) -> list[str]:
    """The peer addresses of redis's open client connections."""
    done = exec_in_pod(lab, "redis", ["redis-cli", "-h", "127.0.0.1", "CLIENT", "LIST"], timeout=20, capture=True)
    return [f.split("=", 1)[1] for line in done.stdout.splitlines() for f in line.split() if f.startswith("addr=")]


def _until(what: Callable[[], Any], timeout: float = 15.0, step: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = what()
        if got:
            return got
        time.sleep(step)
    return what()


# ---------------------------------------------------------------------------------------------
# The enforcer as a subprocess


class Enforcing:
    """A running `podwall enforce` for the lab, its log and its event store."""

    def __init__(self, lab: LabState, root: Path, policy: Path, db: Path, *args: str) -> None:
        self.lab = lab
        self.db = db
        self.control = Path(lab.state_dir) / "enforce"
        self.log = root / f"enforce-{secrets.token_hex(3)}.log"
        cmd = [*PODWALL, "enforce", "--policy", str(policy), "--lab", lab.lab, "--state-dir", str(root),
               "--db", str(db), *args]  # fmt: skip
        with self.log.open("w") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        status = _until(self._ready, timeout=60)
        assert status, f"enforce did not come up:\n{self.text()}"

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def status(self) -> dict[str, Any]:
        status = read_status(self.control)
        assert status is not None, f"enforce is not running:\n{self.text()}"
        return status

    def _ready(self) -> dict[str, Any] | None:
        if self.proc.poll() is not None:
            raise AssertionError(f"enforce exited with {self.proc.returncode}:\n{self.text()}")
        status = read_status(self.control)
        if status and status["state"] == "running" and all(w["ready"] for w in status["workers"]):
            return status
        return None

    def events(self) -> list[Any]:
        with EventStore(str(self.db)) as store:
            return store.query()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def _table_present(lab: LabState) -> bool:
    done = subprocess.run(["ip", "netns", "exec", lab.node_netns, "nft", "list", "table", "inet", "podwall"],
                          capture_output=True, text=True, timeout=30)  # fmt: skip
    return done.returncode == 0


@pytest.fixture()
def enforce(lab: LabState, root: Path, tmp_path: Path) -> Iterator[Callable[..., Enforcing]]:
    """Start `podwall enforce` (factory); stopped, ruleset and quarantine list removed afterwards."""
    started: list[Enforcing] = []

    def start(policy: Path, *args: str) -> Enforcing:
        e = Enforcing(lab, root, policy, tmp_path / f"events{len(started)}.db", *args)
        started.append(e)
        return e

    try:
        yield start
    finally:
        for e in started:
            e.stop()
        remove_ruleset(lab.node_netns)
        (Path(lab.state_dir) / "enforce" / QUARANTINE_FILE).unlink(missing_ok=True)
    for e in started:
        assert e.proc.returncode == 0, e.text()
    assert not _table_present(lab), "enforce left its table behind"


# ---------------------------------------------------------------------------------------------
# Tests


@pytest.mark.parametrize("args", [(), ("--busy-poll-us", "500")], ids=["sleeping-workers", "busy-polling-workers"])
def test_protect_allows_redis_and_cuts_everything_else(
    lab: LabState, policies: dict[str, Path], enforce: Callable[..., Enforcing], args: tuple[str, ...]
) -> None:
    """Protect mode: node's redis-cli PING gets PONG, again on a second connection (answered from
    the workers' verdict cache); the exploit pod's connection is reset and delivers no byte to
    redis; HTTP from node to the redis port is cut at both ends and recorded with its explanation."""
    e = enforce(policies["protect"], *args)
    assert _redis_cli(lab, "node") == "PONG"
    assert _redis_cli(lab, "node") == "PONG"
    cached = _until(lambda: sum((w.get("stats") or {}).get("first_payload_cached", 0) for w in e.status()["workers"]))
    assert cached >= 1, json.dumps(e.status()["workers"])

    before = _redis_stats(lab)
    assert _redis_cli(lab, "exploit") != "PONG"
    assert _client(lab, "exploit", PING).startswith("error")
    after = _redis_stats(lab)
    # Only the INFO questions themselves reached redis: the exploit's SYN never did.
    assert after["total_connections_received"] - before["total_connections_received"] == 1
    assert after["total_commands_processed"] - before["total_commands_processed"] == 1

    node_ip = resolve_pod(lab, "node").ips[0]
    before = _redis_stats(lab)
    assert _client(lab, "node", HTTP) == "error ConnectionResetError"
    after = _redis_stats(lab)
    assert after["total_commands_processed"] - before["total_commands_processed"] == 1  # no GET parsed
    assert after["total_connections_received"] - before["total_connections_received"] == 2  # handshake + INFO
    assert not [a for a in _redis_clients(lab) if a.startswith(node_ip + ":")], "redis kept the cut connection"

    events = _until(lambda: [x for x in e.events() if x.application == "http"])
    assert len(events) == 1, e.text()
    ev = events[0]
    assert (ev.client.group, ev.server.group, ev.server.port) == ("nv.node.demo", "nv.redis.demo", 6379)
    assert ev.verdict is not None and ev.verdict.action == "deny" and ev.verdict.explanation
    assert "http" in ev.verdict.explanation.lower() or "redis" in ev.verdict.explanation.lower()


def test_monitor_lets_violations_through_and_records_each(
    lab: LabState, policies: dict[str, Path], enforce: Callable[..., Enforcing]
) -> None:
    """Monitor mode: the exploit's PING and node's HTTP to redis both get redis's answer, and each
    is recorded once as an alert with its explanation."""
    e = enforce(policies["monitor"])
    assert _redis_cli(lab, "node") == "PONG"
    assert _client(lab, "exploit", PING) == "ok +PONG"
    # Without a Host line, so that redis answers instead of closing on a cross-protocol request.
    assert _client(lab, "node", "GET / HTTP/1.0\\r\\n\\r\\n").startswith("ok -ERR")  # redis parsed the GET

    def violations() -> list[Any]:
        found = [x for x in e.events() if x.type.value == "violation"]
        return found if len(found) >= 2 else []

    events = _until(violations)
    assert {(x.client.group, x.application) for x in events} >= {("nv.node.demo", "http")}, e.text()
    assert any(x.client.ip in resolve_pod(lab, "exploit").ips and x.application == "redis" for x in events)
    assert len(events) == 2, [(x.client.group, x.application) for x in events]
    assert all(x.verdict is not None and x.verdict.action == "alert" and x.verdict.explanation for x in events)


def test_quarantine_cuts_a_workload_off_and_release_restores_it(
    lab: LabState, root: Path, policies: dict[str, Path], enforce: Callable[..., Enforcing]
) -> None:
    """`podwall quarantine add demo/node` cuts node's redis access, `remove` restores it."""
    e = enforce(policies["protect"])
    assert _redis_cli(lab, "node") == "PONG"

    def quarantine(verb: str) -> None:
        done = subprocess.run([*PODWALL, "quarantine", verb, "demo/node", "--lab", lab.lab, "--state-dir", str(root)],
                              capture_output=True, text=True, timeout=60)  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr + e.text()

    quarantine("add")
    assert e.status()["quarantine"] == ["demo/node"]
    assert _redis_cli(lab, "node") != "PONG"
    assert _client(lab, "node", PING).startswith("error")
    quarantine("remove")
    assert e.status()["quarantine"] == []
    assert _redis_cli(lab, "node") == "PONG"


@pytest.mark.parametrize("fail", ["open", "closed"])
def test_killed_workers_follow_the_fail_mode_and_come_back(
    lab: LabState, policies: dict[str, Path], enforce: Callable[..., Enforcing], fail: str
) -> None:
    """With every worker killed, a new L7-decided connection passes (fail open) or does not
    (fail closed); the supervisor restarts the workers and connections work again."""
    e = enforce(policies["protect"], "--fail", fail, "--restart-delay", "5")
    assert _redis_cli(lab, "node") == "PONG"
    old = {w["queue"]: w["pid"] for w in e.status()["workers"]}
    for pid in old.values():
        os.kill(pid, signal.SIGKILL)
    time.sleep(0.5)  # the queues are unbound when the processes are gone
    answer = _client(lab, "node", PING, timeout=2.0)
    if fail == "open":
        assert answer == "ok +PONG"
    else:
        assert answer.startswith("error"), answer

    def back() -> bool:
        workers = e.status()["workers"]
        return all(w["ready"] and w["pid"] != old[w["queue"]] and w["restarts"] >= 1 for w in workers)

    assert _until(back, timeout=30), e.text()
    assert "died" in e.text() and "restarted" in e.text()
    assert _redis_cli(lab, "node") == "PONG"


def test_reload_keeps_established_connections_and_applies_new_rules(
    lab: LabState, root: Path, policies: dict[str, Path], enforce: Callable[..., Enforcing]
) -> None:
    """SIGHUP after editing the policy: a redis connection open across the reload still gets
    PONG (it is re-evaluated, not dropped), and the new rule (exploit may use redis) applies
    to new connections."""
    policy = root / "reload.yaml"
    shutil.copy(policies["protect"], policy)
    e = enforce(policy)
    assert _client(lab, "exploit", PING).startswith("error")
    holder = subprocess.Popen(pod_command(lab, "node", [sys.executable, "-c", _HOLDER]), stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdin is not None
        assert holder.stdout.readline().strip() == "+PONG"
        data = yaml.safe_load(policy.read_text())
        data["spec"]["groups"].append(
            {"name": "exploit", "mode": "protect", "criteria": [{"key": "app", "op": "=", "value": "exploit"}]}
        )
        data["spec"]["rules"].append(
            {"id": 20001, "from": "exploit", "to": "nv.redis.demo", "ports": ["tcp/6379"], "applications": ["redis"],
             "action": "allow"}
        )  # fmt: skip
        policy.write_text(yaml.safe_dump(data, sort_keys=False))
        e.proc.send_signal(signal.SIGHUP)
        assert _until(lambda: e.status()["version"] >= 2 and e.status()["reloads"] >= 1), e.text()
        assert e.status()["requeued"] >= 1  # the held connection was sent back for re-evaluation
        holder.stdin.write("\n")
        holder.stdin.flush()
        assert holder.stdout.readline().strip() == "+PONG"
        assert _client(lab, "exploit", PING) == "ok +PONG"
    finally:
        holder.kill()
        holder.wait(10)


def _set_holds(lab: LabState, set_name: str, ip: str) -> bool:
    """Whether the enforcer's nft set `set_name` (of table inet podwall) holds address `ip`."""
    done = subprocess.run(["ip", "netns", "exec", lab.node_netns, "nft", "-j", "list", "set", "inet", "podwall",
                           set_name], capture_output=True, text=True, timeout=30)  # fmt: skip
    assert done.returncode == 0, done.stderr
    addr = ipaddress.ip_address(ip)
    for obj in json.loads(done.stdout)["nftables"]:
        for elem in obj.get("set", {}).get("elem", []):
            if isinstance(elem, str):
                held = ipaddress.ip_address(elem) == addr
            elif "prefix" in elem:
                held = addr in ipaddress.ip_network(f"{elem['prefix']['addr']}/{elem['prefix']['len']}")
            else:
                lo, hi = (ipaddress.ip_address(x) for x in elem["range"])
                held = lo <= addr <= hi
            if held:
                return True
    return False


def _group_set(lab: LabState, policy: Path, group: str) -> str:
    """The name of the IPv4 set standing for `group` in the table the enforcer renders."""
    plan = build_plan(parse_policy(policy.read_text(), str(policy)), load_inventory([lab.inventory]))
    return next(s.name for s in plan.groups if s.group == group) + "_v4"


def test_new_pod_is_covered_from_its_first_packet(
    lab: LabState, policies: dict[str, Path], enforce: Callable[..., Enforcing]
) -> None:
    """Pods added to the running lab are in the enforcer's address sets before they can send: a new
    replica of `node` gets PONG from redis on its very first connection (an address the sets do not
    know is refused in protect mode), and a new pod of an unknown workload is refused with nothing
    reaching redis. Removed again, they leave the sets."""
    enforce(policies["protect"])
    added: list[str] = []
    try:
        replica = lab_add_pod(lab, replica_of="demo/node")
        added.append(replica.name)
        # lab_add_pod returned: the pod may send now, and the enforcer already knows it.
        assert _set_holds(lab, _group_set(lab, policies["protect"], "nv.node.demo"), replica.ips[0])
        assert _redis_cli(lab, replica.name) == "PONG"
        stranger = lab_add_pod(lab, pod=PodSpec(name="stranger", namespace="demo", labels={"app": "stranger"}))
        added.append(stranger.name)
        assert _set_holds(lab, "pods_v4", stranger.ips[0])
        before = _redis_stats(lab)
        assert _client(lab, "stranger", PING).startswith("error")
        after = _redis_stats(lab)
        assert after["total_connections_received"] - before["total_connections_received"] == 1  # INFO only
        assert after["total_commands_processed"] - before["total_commands_processed"] == 1
    finally:
        for name in reversed(added):
            lab_remove_pod(lab, name)
    assert not _set_holds(lab, "pods_v4", replica.ips[0]) and not _set_holds(lab, "pods_v4", stranger.ips[0])


_DRIFT_CLIENT = """
import socket, sys, time
family = socket.AF_INET6 if sys.argv[1] == "6" else socket.AF_INET
addr = socket.getaddrinfo("redis", 6379, family, socket.SOCK_STREAM)[0][4]
s = socket.socket(family, socket.SOCK_STREAM)
s.settimeout(5)
s.connect(addr)
print("port", s.getsockname()[1])
s.sendall(b"*1\\r\\n$4\\r\\nPING\\r\\n")
print("first", s.recv(64).decode().strip()); sys.stdout.flush()
time.sleep(0.5)
s.sendall(b"GET / HTTP/1.0\\r\\n\\r\\n")
try:
    end = time.monotonic() + 8
    while time.monotonic() < end:
        s.settimeout(1)
        try:
            data = s.recv(64)
        except socket.timeout:
            s.sendall(b"*1\\r\\n$4\\r\\nPING\\r\\n")  # keep talking: a cut connection must fail
            continue
        if not data:
            print("closed"); break
    else:
        print("still open")
except ConnectionResetError:
    print("reset")
"""


@pytest.mark.parametrize("family", ["4", "6"], ids=["ipv4", "ipv6"])
def test_protocol_change_after_the_verdict_is_cut_through_a_service(
    lab: LabState, policies: dict[str, Path], enforce: Callable[..., Enforcing], family: str
) -> None:
    """A node pod that speaks Redis (allowed, decided once) and then HTTP on the same connection
    through the Service address: `podwall enforce`'s drift watcher cuts it at both ends (the client
    sees a reset, redis no longer holds the connection) and records a deny, every time."""
    e = enforce(policies["protect"])
    node_ip = resolve_pod(lab, "node").ips[0 if family == "4" else 1]
    for attempt in range(3):
        done = exec_in_pod(lab, "node", [sys.executable, "-c", _DRIFT_CLIENT, family], timeout=60, capture=True)
        assert done.returncode == 0, done.stderr
        out = done.stdout.split()
        assert out[2:4] == ["first", "+PONG"], done.stdout
        assert out[-1] in ("reset", "closed"), (attempt, done.stdout, e.text())
        port = out[1]
        peer = f"{node_ip}:{port}"  # redis writes an IPv6 peer as [address]:port
        gone = _until(lambda p=peer: p not in [a.replace("[", "").replace("]", "") for a in _redis_clients(lab)], 5)
        assert gone, f"redis still holds the cut connection from {peer}"
    events = _until(lambda: [x for x in e.events() if x.application == "http"] if len(e.events()) >= 3 else [])
    assert len(events) == 3, [x.message for x in e.events()]
    assert all(x.verdict is not None and x.verdict.action == "deny" for x in events)
    assert all("application changed from redis to http" in x.message for x in events)
    assert _redis_cli(lab, "node") == "PONG"  # a new, plain Redis connection is still fine


def test_protect_waf_cuts_an_sql_injection_before_nginx_sees_it(
    lab: LabState, policies: dict[str, Path], enforce: Callable[..., Enforcing], tmp_path: Path
) -> None:
    """WAF on the nginx group in protect mode: an ordinary request is served; a request carrying an SQL
    injection is cut before nginx receives it (absent from nginx's access log), and the WAF event
    records that the cut was enforced."""
    doc = yaml.safe_load(policies["protect"].read_text())
    nginx_group = next(g for g in doc["spec"]["groups"] if "nginx" in g["name"])
    nginx_group["waf"] = {"status": True, "settings": [{"name": "crs", "action": "deny"}]}
    policy = tmp_path / "waf.yaml"
    policy.write_text(yaml.safe_dump(doc, sort_keys=False))
    e = enforce(policy)
    ip = resolve_pod(lab, "nginx").ips[0]
    nginx_pod = next(p.name for p in lab.pods if p.workload == "nginx")
    access = Path(lab.state_dir) / "pods" / nginx_pod / "access.log"
    before = access.read_text()

    def curl(path: str) -> Any:
        cmd = ["curl", "-sf", "-m", "5", f"http://{ip}{path}"]
        return exec_in_pod(lab, lab.node_netns, cmd, timeout=30, capture=True)

    assert curl("/api/cart?id=42").returncode == 0
    cut = curl("/api/cart?id=1%27%20OR%20%271%27%3D%271")
    assert cut.returncode != 0, cut.stdout
    logged = access.read_text()[len(before) :]
    assert "/api/cart?id=42 " in logged
    assert "%27" not in logged and "OR" not in logged, logged
    events = _until(lambda: [x for x in e.events() if x.detection is not None and x.detection.enforced])
    assert events and all(x.type.value == "waf" and x.server.group == nginx_group["name"] for x in events), e.text()
    # The triggering packets are saved beside the event store (no --pcap-dir given) and read back.
    for event in events:
        assert event.pcap is not None and Path(event.pcap).parent == e.db.parent / "pcaps", event.pcap
        with CaptureReader(Path(event.pcap)) as reader:
            assert any(b"%27%20OR%20" in frame.data for frame in reader)


def test_protect_records_and_cuts_a_threat_seen_on_the_tap(
    lab: LabState, policies: dict[str, Path], enforce: Callable[..., Enforcing]
) -> None:
    """Request smuggling on an allowed HTTP connection to nginx, which no worker looks at after its
    first payload (the connection is then on the kernel's fast path): the threat engine on the
    enforcer's tap records it as an enforced threat event, with its pcap."""
    e = enforce(policies["protect"])
    ip = resolve_pod(lab, "nginx").ips[0]
    head = "POST / HTTP/1.1\\r\\nHost: nginx\\r\\nContent-Length: 5\\r\\n"
    smuggle = head + "Transfer-Encoding: chunked\\r\\n\\r\\n0\\r\\n\\r\\n"
    plain = "GET / HTTP/1.1\\r\\nHost: nginx\\r\\n\\r\\n"

    def send(payload: str) -> str:
        argv = [sys.executable, "-c", _CLIENT, ip, "80", payload, "3"]
        return exec_in_pod(lab, lab.node_netns, argv, timeout=30, capture=True).stdout.strip()

    assert send(plain).startswith("ok HTTP/1.1 200")
    send(smuggle)

    def smuggled() -> list[Any]:
        return [x for x in e.events() if x.detection is not None and "smuggling" in x.detection.id]

    events = _until(smuggled)
    assert events, e.text()
    event = events[0]
    assert event.type.value == "threat" and event.detection is not None and event.detection.enforced
    assert "nginx" in event.server.group and event.server.port == 80
    assert event.pcap is not None and Path(event.pcap).is_file()
