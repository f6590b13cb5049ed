"""The lab on the real kernel (root only): pods reach services by name and cluster IP through real
servers, status and inventory describe what runs, and `down` removes everything, also after a crash.

Each lab has a unique name, so parallel runs never collide; all traffic stays inside the lab's
namespaces. The state root is a temp dir that others may traverse (PostgreSQL runs as `postgres`
and must reach its data dir, which pytest's private tmp_path does not allow); it is removed after.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from podwall.inventory.loader import load_inventory
from podwall.lab import netlink
from podwall.lab.cluster import ETC_NETNS, LabError, exec_in_pod, find_lab, lab_down, lab_status, lab_up
from podwall.lab.spec import parse_lab
from podwall.lab.state import LabState


def _netns_usable() -> str | None:
    if os.geteuid() != 0:
        return "the lab tests need root (network namespaces)"
    if shutil.which("ip") is None or shutil.which("nft") is None:
        return "ip (iproute2) and nft (nftables) are needed"
    probe = f"pw-probe-{secrets.token_hex(3)}"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if made.returncode != 0:
        return f"`ip netns add` does not work here: {made.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return None


_SKIP = _netns_usable()
pytestmark = pytest.mark.skipif(_SKIP is not None, reason=_SKIP or "")

HAVE = {p: shutil.which(p) is not None for p in ("redis-server", "redis-cli", "nginx", "psql", "dnsmasq")}
HAVE["postgres"] = any(Path("/usr/lib/postgresql").glob("*/bin/postgres"))

SPEC = """\
apiVersion: podwall.io/v1
kind: Lab
name: {name}
podCIDR: 10.77.0.0/24
podCIDRv6: fd00:77::/64
serviceCIDR: 10.78.0.0/24
serviceCIDRv6: fd00:78::/112
dns: app/dns
namespaces: [{{name: app}}]
deployments:
  - {{name: redis, namespace: app, labels: {{app: redis}}, server: redis}}
  - name: web
    namespace: app
    replicas: 2
    labels: {{app: web}}
    server: {{kind: http, port: 8888, routes: {{/: {{body: "web ok\\n"}}, /r: {{redis: "redis:6379"}}}}}}
  - {{name: nginx, namespace: app, labels: {{app: nginx}}, server: {{kind: nginx, proxy: {{/api/: "http://web/"}}}}}}
  - {{name: pg, namespace: app, labels: {{app: pg}}, server: postgresql}}
  - {{name: dns, namespace: app, labels: {{app: dns}}, server: dnsmasq}}
pods:
  - {{name: client, namespace: app}}
services:
  - {{name: redis, namespace: app, selector: {{app: redis}}, clusterIP: 10.78.0.60, ports: [{{port: 6379}}]}}
  - {{name: web, namespace: app, selector: {{app: web}}, ports: [{{port: 80, targetPort: 8888}}]}}
  - {{name: nginx, namespace: app, selector: {{app: nginx}}, ports: [{{port: 80}}]}}
  - {{name: pg, namespace: app, selector: {{app: pg}}, ports: [{{port: 5432}}]}}
  - {{name: dns, namespace: app, selector: {{app: dns}}, ports: [{{port: 53, protocol: UDP}}]}}
"""

SMALL = """\
apiVersion: podwall.io/v1
kind: Lab
name: {name}
podCIDR: 10.79.0.0/24
serviceCIDR: 10.80.0.0/24
namespaces: [{{name: app}}]
deployments:
  - {{name: web, namespace: app, labels: {{app: web}}, server: {{kind: http, port: 8080}}}}
pods:
  - {{name: client, namespace: app}}
services:
  - {{name: web, namespace: app, selector: {{app: web}}, ports: [{{port: 80, targetPort: 8080}}]}}
"""


def _name() -> str:
    return "t" + secrets.token_hex(4)


@pytest.fixture(scope="module")
def root() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="podwall-lab-test-"))
    path.chmod(0o711)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def lab(root: Path) -> Iterator[LabState]:
    missing = [p for p in ("redis-server", "redis-cli", "nginx", "postgres", "psql", "dnsmasq") if not HAVE[p]]
    if missing:
        pytest.skip(f"Debian packages missing for the full lab: {', '.join(missing)} (see ./dev APT_PACKAGES)")
    name = _name()
    try:
        yield lab_up(parse_lab(SPEC.format(name=name), "lab.yaml"), root)
    finally:
        lab_down(name, root)


def _py(state: LabState, pod: str, code: str) -> str:
    done = exec_in_pod(state, pod, [sys.executable, "-c", code], timeout=30, capture=True)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def _redis_ping(host: str) -> str:
    return (
        "import socket\n"
        f"s = socket.create_connection(({host!r}, 6379), timeout=5)\n"
        "s.sendall(b'*1\\r\\n$4\\r\\nPING\\r\\n'); print(s.recv(64).decode().strip())"
    )


def _leftovers(state: LabState) -> list[str]:
    left = [f"netns {ns}" for ns in state.namespaces if netlink.netns_exists(ns)]
    left += [d for d in state.etc_netns if Path(d).exists()]
    left += [f"pid {p.pid}" for p in state.processes if _alive(p.pid, p.start_time)]
    if Path(state.state_dir).exists():
        left.append(state.state_dir)
    return left


def _alive(pid: int, start: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    fields = stat[stat.rfind(")") + 2 :].split()
    return fields[0] not in ("Z", "X") and int(fields[19]) == start


def test_redis_cli_ping_by_service_name(lab: LabState) -> None:
    """A real `redis-cli -h redis PING` from a web pod gets PONG through the service."""
    done = exec_in_pod(lab, "web", ["redis-cli", "-h", "redis", "PING"], timeout=20, capture=True)
    assert (done.returncode, done.stdout.strip()) == (0, "PONG")


@pytest.mark.parametrize(
    "host",
    ["redis", "redis.app", "redis.app.svc.cluster.local", "10.78.0.60", "fd00:78::1"],
    ids=["short-name", "namespaced-name", "fqdn", "cluster-ipv4", "cluster-ipv6"],
)
def test_client_reaches_redis(lab: LabState, host: str) -> None:
    """The client pod reaches redis by every service name and by both cluster IPs (DNAT)."""
    assert _py(lab, "client", _redis_ping(host)) == "+PONG"


def test_redis_reaches_its_own_service(lab: LabState) -> None:
    """A pod reaching itself through its service works (hairpin masquerade)."""
    assert _py(lab, "redis", _redis_ping("redis")) == "+PONG"


def test_nginx_to_web_to_redis_chain(lab: LabState) -> None:
    """nginx proxies to the web service, which relays to redis: each hop is a real connection."""
    url = "http://nginx/api/r"
    body = _py(
        lab, "client", f"import urllib.request; print(urllib.request.urlopen({url!r}, timeout=10).read().decode())"
    )
    assert body == "PONG"
    nginx_pod = next(p.name for p in lab.pods if p.workload == "nginx")
    access = (Path(lab.state_dir) / "pods" / nginx_pod / "access.log").read_text()
    assert "GET /api/r " in access


def test_both_web_replicas_serve(lab: LabState) -> None:
    """Each web replica answers on its own pod address."""
    for pod in (p for p in lab.pods if p.workload == "web"):
        url = f"http://{pod.ips[0]}:8888/"
        code = f"import urllib.request; print(urllib.request.urlopen({url!r}, timeout=10).read().decode())"
        assert _py(lab, "client", code) == "web ok"


def test_postgresql_query(lab: LabState) -> None:
    """psql from the client runs a query on the PostgreSQL pod through its service."""
    done = exec_in_pod(
        lab, "client", ["psql", "-h", "pg", "-U", "postgres", "-Atc", "select 40 + 2"], timeout=20, capture=True
    )
    assert (done.returncode, done.stdout.strip()) == (0, "42")


def test_dns_answers_service_names(lab: LabState) -> None:
    """The lab DNS (dnsmasq in a pod, reached by its cluster IP from resolv.conf) answers service names."""
    code = (
        "import socket, struct\n"
        "from podwall.lab.payloads import dns_query\n"
        "ns = [l.split()[1] for l in open('/etc/resolv.conf') if l.startswith('nameserver')][0]\n"
        "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(5)\n"
        "s.sendto(dns_query(7, 'redis.app.svc.cluster.local'), (ns, 53))\n"
        "r = s.recv(512); print(r[3] & 15, socket.inet_ntoa(r[-4:]))"
    )
    assert _py(lab, "client", code) == "0 10.78.0.60"


def test_status_reports_everything_running(lab: LabState) -> None:
    """Status lists every pod with its addresses; every server runs and listens."""
    status = lab_status(lab)
    assert status["node_present"] and status["phase"] == "up"
    servers = [p for p in status["pods"] if p["server"] != "none"]
    assert len(servers) == 6 and all(p["running"] and p["listening"] for p in servers)
    assert {p["pod"] for p in status["pods"]} == {p.name for p in lab.pods}


def test_status_cli_json(lab: LabState, root: Path) -> None:
    """`podwall lab status --json` prints the same status and exits 0."""
    from podwall.cli.main import app

    res = CliRunner().invoke(app, ["lab", "status", "--lab", lab.lab, "--state-dir", str(root), "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["lab"] == lab.lab


def test_inventory_matches_the_lab(lab: LabState) -> None:
    """The written inventory loads and names each pod with its addresses, and each service's cluster IPs."""
    inv = load_inventory([lab.inventory])
    pods = {p.name: [str(ip) for ip in p.ips] for w in inv.workloads for p in w.pods}
    assert pods == {p.name: p.ips for p in lab.pods}
    redis = next(s for s in inv.services if s.name == "redis")
    assert [str(ip) for ip in redis.cluster_ips] == ["10.78.0.60", "fd00:78::1"]


@pytest.mark.parametrize(("argv", "code"), [(["true"], 0), (["sh", "-c", "exit 3"], 3)], ids=["zero", "three"])
def test_exec_exit_codes(lab: LabState, root: Path, argv: list[str], code: int) -> None:
    """`podwall lab exec POD -- CMD` exits with the command's own code."""
    from podwall.cli.main import app

    res = CliRunner().invoke(app, ["lab", "exec", "client", "--lab", lab.lab, "--state-dir", str(root), "--", *argv])
    assert res.exit_code == code, res.output


def test_exec_unknown_pod_is_an_error(lab: LabState, root: Path) -> None:
    """An unknown pod gives exit code 2 and names the lab's pods."""
    from podwall.cli.main import app

    res = CliRunner().invoke(app, ["lab", "exec", "nosuch", "--lab", lab.lab, "--state-dir", str(root), "--", "true"])
    assert res.exit_code == 2 and "client" in res.output


def test_pod_sees_only_its_own_interfaces(lab: LabState) -> None:
    """A pod namespace holds only lo and eth0; the bridge and veths live in the node namespace."""
    client = next(p for p in lab.pods if p.name == "client")
    assert sorted(netlink.links_in(client.netns)) == ["eth0", "lo"]
    assert "pwbr0" in netlink.links_in(lab.node_netns)


def test_second_up_of_a_running_lab_is_refused(lab: LabState, root: Path) -> None:
    """Bringing up a lab that is up fails clearly and leaves the running lab untouched."""
    with pytest.raises(LabError, match="already exists"):
        lab_up(parse_lab(SPEC.format(name=lab.lab), "lab.yaml"), root)
    assert _py(lab, "client", _redis_ping("redis")) == "+PONG"


def _podwall(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "podwall.cli.main", *args], capture_output=True, text=True, timeout=120
    )


def test_down_from_a_fresh_process_removes_everything(root: Path, tmp_path: Path) -> None:
    """A lab made by one podwall process is removed by `lab down` in another; a second down is a no-op."""
    name = _name()
    spec = tmp_path / "lab.yaml"
    spec.write_text(SMALL.format(name=name))
    try:
        up = _podwall("lab", "up", str(spec), "--state-dir", str(root))
        assert up.returncode == 0, up.stderr
        state = find_lab(name, root)
        assert (
            _py(state, "client", "import urllib.request; print(urllib.request.urlopen('http://web/').read().decode())")
            == "ok"
        )
        down = _podwall("lab", "down", "--lab", name, "--state-dir", str(root))
        assert down.returncode == 0, down.stderr
        assert _leftovers(state) == []
        again = _podwall("lab", "down", "--lab", name, "--state-dir", str(root))
        assert (again.returncode, again.stdout.strip()) == (0, "nothing to remove")
    finally:
        lab_down(name, root)


def test_down_after_a_crash_mid_up(root: Path) -> None:
    """podwall killed after starting the servers (before the lab is complete) leaves a lab that down removes."""
    name = _name()
    crash = (
        "import os, sys\n"
        "from podwall.lab import cluster\n"
        "from podwall.lab.spec import parse_lab\n"
        "cluster._wait_ready = lambda records: os._exit(9)\n"
        f"cluster.lab_up(parse_lab(sys.stdin.read()), {str(root)!r})\n"
    )
    try:
        died = subprocess.run([sys.executable, "-c", crash], input=SMALL.format(name=name), text=True, timeout=60)
        assert died.returncode == 9
        state = find_lab(name, root)
        assert state.phase == "creating" and state.processes and netlink.netns_exists(state.node_netns)
        removed = lab_down(name, root)
        assert any(r.startswith("netns ") for r in removed)
        assert _leftovers(state) == []
        assert lab_down(name, root) == []
    finally:
        lab_down(name, root)


def test_failed_up_leaves_nothing_behind(root: Path) -> None:
    """A server that cannot start makes `lab up` fail with its log, and nothing of the lab remains."""
    name = _name()
    bad = SMALL.format(name=name).replace(
        "server: {kind: http, port: 8080}", "server: {kind: nginx, port: 8080, proxy: {/x/: 'http://nosuch:80'}}"
    )
    if not HAVE["nginx"]:
        pytest.skip("nginx is not installed")
    try:
        with pytest.raises(LabError, match="exited during start-up"):
            lab_up(parse_lab(bad), root)
        assert not (root / name).exists()
        assert not any(netlink.netns_exists(f"pw-{name}-{w}") for w in ("node", "client"))
        assert not (ETC_NETNS / f"pw-{name}-node").exists()
    finally:
        lab_down(name, root)


@pytest.mark.parametrize(
    ("ref", "expected"),
    [("client", "client"), ("app/client", "client"), ("web", "web-"), ("node", "node")],
    ids=["pod", "namespace-pod", "workload", "node"],
)
def test_exec_targets(lab: LabState, ref: str, expected: str) -> None:
    """`lab exec` finds a pod by name, namespace/name or workload, and the node by `node`."""
    out = exec_in_pod(lab, ref, ["cat", "/etc/hosts"], timeout=10, capture=True).stdout
    own = [line.split("\t")[1] for line in out.splitlines()[2:3]]  # the pod's own name follows localhost lines
    if expected == "node":
        assert "pwbr0" in exec_in_pod(lab, ref, ["ip", "-br", "link"], timeout=10, capture=True).stdout
    else:
        assert own and own[0].startswith(expected)
