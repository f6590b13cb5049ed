"""Live protocol drift (root): a redis connection that switches to HTTP after its verdict is cut.

A small lab (client pod, redis pod), the enforcer's ruleset allowing client → redis with
application `redis` in protect mode, one decision `Worker` bound to the queue inside the node
namespace, and a `DriftThread` (watcher on a tap of the pod veths, cutting) as the service runs it. Everything
is removed at the end (ruleset, lab, temp dir).
"""

from __future__ import annotations

import contextlib
import sys
import threading
from collections.abc import Iterator

import pytest

from podwall.analysis.check import dns_service_groups
from podwall.datapath.io.afpacket import _NetnsSwitch
from podwall.datapath.io.nfqueue import NfQueue
from podwall.enforce.apply import Enforcer
from podwall.enforce.drift import DriftThread
from podwall.enforce.iptables import QueueConfig
from podwall.enforce.monitor import lab_target
from podwall.enforce.plan import build_plan
from podwall.enforce.reset import RawResetter
from podwall.enforce.worker import Worker, WorkerConfig
from podwall.inventory.loader import load_inventory
from podwall.inventory.resolver import Resolver
from podwall.lab.cluster import exec_in_pod, resolve_pod
from podwall.lab.state import LabState
from podwall.policy.evaluate import PolicyEngine
from podwall.policy.model import Policy
from tests.labkit import needs_root, running_lab

PROGRAMS = ("ip", "nft", "iptables-restore", "ip6tables-restore", "conntrack", "redis-server")


pytestmark = needs_root("the drift lab test (network namespaces, nftables, NFQUEUE, AF_PACKET)", PROGRAMS)

LAB = """
apiVersion: podwall.io/v1
kind: Lab
name: NAME
cluster: drift
node: {name: node-1}
podCIDR: 10.245.0.0/16
serviceCIDR: 10.97.0.0/16
namespaces:
  - {name: t}
deployments:
  - {name: redis, namespace: t, labels: {app: redis}, image: redis:7.2, server: {kind: redis, port: 6379}}
pods:
  - {name: client, namespace: t, labels: {app: client}, image: busybox:1.36, server: none}
"""

# PING on one connection, then (when asked) HTTP on the same one; then PINGs until the
# connection is cut or `seconds` pass. Prints the replies seen and how it ended.
_CLIENT = r"""
import socket, sys, time
host, http, seconds = sys.argv[1], sys.argv[2] == "http", float(sys.argv[3])
s = socket.create_connection((host, 6379), timeout=3)
s.sendall(b"PING\r\n")
print("first:", s.recv(100).decode().strip())
time.sleep(0.5)
if http:
    s.sendall(b"GET / HTTP/1.0\r\n\r\n")
deadline = time.monotonic() + seconds
s.settimeout(0.3)
try:
    while time.monotonic() < deadline:
        try:
            data = s.recv(100)
        except socket.timeout:
            s.sendall(b"PING\r\n")
            continue
        if not data:
            print("end: eof")
            break
        print("reply:", data.decode(errors="replace").strip())
    else:
        print("end: open")
except OSError as exc:
    print("end: reset", type(exc).__name__)
"""


def _policy() -> Policy:
    groups = [
        {"name": f"nv.{s}.t", "criteria": [{"key": "service", "op": "=", "value": s}], "mode": "protect"}
        for s in ("client", "redis")
    ]
    rule = {"id": 1, "from": "nv.client.t", "to": "nv.redis.t", "ports": ["tcp/6379"], "applications": ["redis"]}
    return Policy.model_validate(
        {"metadata": {"name": "drift"}, "spec": {"defaultMode": "protect", "groups": groups, "rules": [rule]}}
    )


@pytest.fixture(scope="module")
def lab() -> Iterator[LabState]:
    with running_lab(lambda name: LAB.replace("NAME", name), "dr", "podwall-drift-") as state:
        yield state


@pytest.fixture
def enforced(lab: LabState) -> Iterator[DriftThread]:
    """Ruleset + one worker thread in the node namespace + the drift watcher thread (yielded)."""
    policy = _policy()
    inventory = load_inventory([lab.inventory])
    resolver = Resolver(inventory)
    queue_cfg = QueueConfig(first=100, count=1, fail_open=False)
    enforcer = Enforcer(lab.node_netns, queue_cfg)
    stop = threading.Event()
    bound = threading.Event()
    errors: list[BaseException] = []

    def serve() -> None:
        resetter = RawResetter()
        worker = Worker(
            policy,
            resolver,
            WorkerConfig.podwall(),
            resetter=resetter,
            dns_service_groups=dns_service_groups(inventory, resolver),
        )
        try:
            with _NetnsSwitch(lab.node_netns), NfQueue(100, fail_open=False) as queue:
                bound.set()
                worker.run(queue, stop)
        except BaseException as exc:
            errors.append(exc)
            bound.set()
        finally:
            resetter.close()

    target = lab_target(lab)
    worker_thread = threading.Thread(target=serve, daemon=True)
    worker_thread.start()
    assert bound.wait(10) and not errors, errors
    drift = DriftThread(lab.node_netns, target.interfaces, target.addresses, PolicyEngine(policy), resolver)
    try:
        enforcer.apply(build_plan(policy, inventory))
        yield drift
    finally:
        with contextlib.suppress(Exception):
            enforcer.remove()
        stop.set()
        drift.stop()
        worker_thread.join(5)
        assert not enforcer.read().present
        assert not errors, errors


def _client(lab: LabState, http: bool, seconds: float = 4.0) -> list[str]:
    host = resolve_pod(lab, "redis").ips[0]
    argv = [sys.executable, "-c", _CLIENT, host, "http" if http else "redis", str(seconds)]
    done = exec_in_pod(lab, "client", argv, timeout=30, capture=True)
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()


def test_redis_connection_switching_to_http_is_cut_and_recorded(lab: LabState, enforced: DriftThread) -> None:
    """PING gets PONG; HTTP on the same connection afterwards gets it cut, with a violation event."""
    lines = _client(lab, http=True)
    assert lines[0] == "first: +PONG", lines
    assert lines[-1].startswith(("end: reset", "end: eof")), lines
    events = enforced.take_events()
    drift = [e for e in events if "application changed from redis to http" in e.message]
    assert len(drift) == 1, [e.message for e in events]
    assert drift[0].application == "http" and drift[0].verdict is not None and drift[0].verdict.action == "deny"


def test_redis_connection_that_stays_redis_is_not_cut(lab: LabState, enforced: DriftThread) -> None:
    """A connection that only sends redis commands keeps working and records nothing."""
    lines = _client(lab, http=False, seconds=3.0)
    assert lines[0] == "first: +PONG", lines
    assert lines[-1] == "end: open", lines
    assert "reply: +PONG" in lines
    assert enforced.take_events() == []
