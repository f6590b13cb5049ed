"""The L3/L4 enforcer on the real kernel (root only): table `inet podwall` and the NFQUEUE handoff
chain in a lab's node namespace, checked with real clients and servers in pods.

One small dual-stack lab (unique name, temp state dir, always taken down): redis and an HTTP
service as servers, `client` allowed to both, `intruder` allowed nothing, protect mode.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest

from podwall.enforce.apply import Enforcer
from podwall.enforce.iptables import QueueConfig
from podwall.enforce.plan import build_plan
from podwall.inventory.loader import load_inventory
from podwall.inventory.model import Inventory
from podwall.lab.cluster import exec_in_pod, pod_command, resolve_pod
from podwall.lab.state import LabState
from podwall.policy.model import Policy
from tests.labkit import needs_root, running_lab

pytestmark = needs_root(
    "the enforcer lab tests (network namespaces, nftables)",
    ("ip", "nft", "iptables-restore", "ip6tables-restore", "redis-server"),
)

SPEC = """\
apiVersion: podwall.io/v1
kind: Lab
name: {name}
podCIDR: 10.81.0.0/24
podCIDRv6: fd00:81::/64
serviceCIDR: 10.82.0.0/24
namespaces: [{{name: app}}]
deployments:
  - {{name: redis, namespace: app, labels: {{app: redis}}, server: redis}}
  - {{name: web, namespace: app, labels: {{app: web}}, server: {{kind: http, port: 8080}}}}
pods:
  - {{name: client, namespace: app, labels: {{app: client}}}}
  - {{name: intruder, namespace: app, labels: {{app: intruder}}}}
services:
  - {{name: redis, namespace: app, selector: {{app: redis}}, ports: [{{port: 6379}}]}}
"""


def _policy(*extra: dict[str, Any]) -> Policy:
    groups = [
        {"name": n, "criteria": [{"key": "app", "op": "=", "value": n}]} for n in ("client", "intruder", "redis", "web")
    ]
    rules = [
        {"id": 1, "from": "client", "to": "redis", "ports": ["tcp/6379"]},
        {"id": 2, "from": "client", "to": "web", "ports": ["tcp/8080"]},
        *extra,
    ]
    return Policy.model_validate(
        {"metadata": {"name": "l34"}, "spec": {"defaultMode": "protect", "groups": groups, "rules": rules}}
    )


@pytest.fixture(scope="module")
def lab() -> Iterator[LabState]:
    with running_lab(lambda name: SPEC.format(name=name), "e", "podwall-enforce-test-") as state:
        yield state


@pytest.fixture(scope="module")
def inventory(lab: LabState) -> Inventory:
    return load_inventory([lab.inventory])


@pytest.fixture()
def enforcer(lab: LabState) -> Iterator[Enforcer]:
    e = Enforcer(lab.node_netns)
    try:
        yield e
    finally:
        e.remove()


def _ip(lab: LabState, pod: str, family: int) -> str:
    return next(ip for ip in resolve_pod(lab, pod).ips if (":" in ip) == (family == 6))


# A client that reports what happened and how long it took, so failures are visible as text.
_CONNECT = """
import socket, sys, time
host, port, payload = sys.argv[1], int(sys.argv[2]), sys.argv[3].encode().decode('unicode_escape').encode()
t = time.monotonic()
try:
    s = socket.create_connection((host, port), timeout=float(sys.argv[4]))
    s.sendall(payload)
    print('ok', s.recv(200).decode(errors='replace').split('\\r\\n')[0], round(time.monotonic() - t, 3))
except OSError as exc:
    print('error', type(exc).__name__, round(time.monotonic() - t, 3))
"""

PING = "*1\\r\\n$4\\r\\nPING\\r\\n"
GET = "GET / HTTP/1.0\\r\\n\\r\\n"


def _connect(lab: LabState, pod: str, host: str, port: int, payload: str, timeout: float = 3.0) -> list[str]:
    argv = [sys.executable, "-c", _CONNECT, host, str(port), payload, str(timeout)]
    done = exec_in_pod(lab, pod, argv, timeout=30, capture=True)
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


def _redis_stat(lab: LabState, name: str) -> int:
    """One of redis's `INFO stats` counters (this question's own connection and command included),
    asked inside the redis pod over loopback, which the node's ruleset does not see."""
    done = exec_in_pod(lab, "redis", ["redis-cli", "-h", "127.0.0.1", "INFO", "stats"], timeout=20, capture=True)
    assert done.returncode == 0, done.stderr
    line = next(x for x in done.stdout.splitlines() if x.startswith(name + ":"))
    return int(line.split(":")[1])


def _redis_connections(lab: LabState) -> int:
    return _redis_stat(lab, "total_connections_received")


@pytest.mark.parametrize("family", [4, 6], ids=["ipv4", "ipv6"])
def test_allowed_connections_work(lab: LabState, inventory: Inventory, enforcer: Enforcer, family: int) -> None:
    """In protect mode the allowed client gets PONG from redis and a page from the HTTP service."""
    enforcer.apply(build_plan(_policy(), inventory))
    assert _connect(lab, "client", _ip(lab, "redis", family), 6379, PING)[:2] == ["ok", "+PONG"]
    assert _connect(lab, "client", _ip(lab, "web", family), 8080, GET)[:2] == ["ok", "HTTP/1.0"]


@pytest.mark.parametrize("family", [4, 6], ids=["ipv4", "ipv6"])
def test_denied_connection_fails_fast_and_reaches_nothing(
    lab: LabState, inventory: Inventory, enforcer: Enforcer, family: int
) -> None:
    """A connection no rule allows is reset at once, and redis never sees a connection or a byte."""
    enforcer.apply(build_plan(_policy(), inventory))
    before = _redis_connections(lab)
    result = _connect(lab, "intruder", _ip(lab, "redis", family), 6379, PING)
    assert result[:2] == ["error", "ConnectionRefusedError"]
    assert float(result[2]) < 1.0
    assert _redis_connections(lab) == before + 1  # the second question only


def test_reload_keeps_established_connection(lab: LabState, inventory: Inventory, enforcer: Enforcer) -> None:
    """Re-applying a changed policy keeps an established allowed connection working, and the
    change takes effect for new connections."""
    enforcer.apply(build_plan(_policy(), inventory))
    code = (
        "import socket, sys\n"
        f"s = socket.create_connection(({_ip(lab, 'redis', 4)!r}, 6379), timeout=5)\n"
        "for line in sys.stdin:\n"
        "    s.sendall(b'*1\\r\\n$4\\r\\nPING\\r\\n'); print(s.recv(64).decode().strip(), flush=True)\n"
    )
    argv = pod_command(lab, "client", [sys.executable, "-u", "-c", code])
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdin is not None and proc.stdout is not None
    try:
        proc.stdin.write("go\n")
        proc.stdin.flush()
        assert proc.stdout.readline().strip() == "+PONG"
        assert _connect(lab, "intruder", _ip(lab, "web", 4), 8080, GET)[0] == "error"
        enforcer.apply(
            build_plan(_policy({"id": 3, "from": "intruder", "to": "web", "ports": ["tcp/8080"]}), inventory)
        )
        proc.stdin.write("again\n")
        proc.stdin.flush()
        assert proc.stdout.readline().strip() == "+PONG"
        assert _connect(lab, "intruder", _ip(lab, "web", 4), 8080, GET)[:2] == ["ok", "HTTP/1.0"]
    finally:
        proc.kill()
        proc.wait()


def test_reconcile_restores_a_deleted_table(lab: LabState, inventory: Inventory, enforcer: Enforcer) -> None:
    """When someone deletes the table, reconcile notices and the denial is back."""
    enforcer.apply(build_plan(_policy(), inventory))
    subprocess.run(["ip", "netns", "exec", lab.node_netns, "nft", "delete", "table", "inet", "podwall"], check=True)
    assert _connect(lab, "intruder", _ip(lab, "redis", 4), 6379, PING)[:2] == ["ok", "+PONG"]
    assert "table inet podwall is missing" in enforcer.reconcile()
    assert enforcer.drift() == []
    assert _connect(lab, "intruder", _ip(lab, "redis", 4), 6379, PING)[:2] == ["error", "ConnectionRefusedError"]


@pytest.mark.parametrize(("fail_open", "expected"), [(True, "ok"), (False, "error")], ids=["fail-open", "fail-closed"])
def test_userspace_connection_without_worker_follows_fail_mode(
    lab: LabState, inventory: Inventory, fail_open: bool, expected: str
) -> None:
    """A connection whose rule names an application goes to NFQUEUE; with no worker listening it
    passes when failing open and gets nowhere when failing closed: the handshake completes (only
    payload is queued) but the command never reaches redis."""
    e = Enforcer(lab.node_netns, QueueConfig(fail_open=fail_open))
    rule = {"id": 3, "from": "intruder", "to": "redis", "ports": ["tcp/6379"], "applications": ["redis"]}
    try:
        e.apply(build_plan(_policy(rule), inventory))
        before = _redis_stat(lab, "total_commands_processed")
        t = time.monotonic()
        result = _connect(lab, "intruder", _ip(lab, "redis", 4), 6379, PING, timeout=1.5)
        assert result[0] == expected, result
        if not fail_open:
            assert result[1] in ("TimeoutError", "timeout") and time.monotonic() - t >= 1.0
            assert _redis_stat(lab, "total_commands_processed") == before + 1  # the second question only
    finally:
        e.remove()


def test_quarantine_cuts_a_pod_off_and_release_restores_it(
    lab: LabState, inventory: Inventory, enforcer: Enforcer
) -> None:
    """Quarantining the client cuts its allowed traffic; a plan without the quarantine restores it."""
    enforcer.apply(build_plan(_policy(), inventory, quarantine=["app/client"]))
    assert _connect(lab, "client", _ip(lab, "redis", 4), 6379, PING)[:2] == ["error", "ConnectionRefusedError"]
    enforcer.apply(build_plan(_policy(), inventory))
    assert _connect(lab, "client", _ip(lab, "redis", 4), 6379, PING)[:2] == ["ok", "+PONG"]
