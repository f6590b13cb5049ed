"""Pods added to and removed from a running lab (root only): a Deployment's next replica and a bare
pod get the next addresses, serve, join their Service and the inventory, and go away again with
`lab_remove_pod` or `lab down`. (That a running enforcer covers them from their first packet is
tested in test_enforce_demo.py.)"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from podwall.lab import netlink
from podwall.lab.cluster import ETC_NETNS, LabError, exec_in_pod, lab_down
from podwall.lab.scale import lab_add_pod, lab_remove_pod
from podwall.lab.spec import PodSpec
from podwall.lab.state import LabState, load_state
from tests.labkit import needs_root, running_lab

pytestmark = needs_root("the lab tests (network namespaces)", ("ip", "nft"))

SPEC = """\
apiVersion: podwall.io/v1
kind: Lab
name: {name}
podCIDR: 10.83.0.0/24
serviceCIDR: 10.84.0.0/24
namespaces: [{{name: app}}]
deployments:
  - {{name: web, namespace: app, labels: {{app: web}}, server: {{kind: http, port: 8080}}}}
pods:
  - {{name: client, namespace: app}}
services:
  - {{name: web, namespace: app, selector: {{app: web}}, ports: [{{port: 80, targetPort: 8080}}]}}
"""

# Fetches a URL `count` times, each on a fresh connection; prints each answer's status.
_GET = """
import sys, urllib.request
for _ in range(int(sys.argv[2])):
    print(urllib.request.urlopen(sys.argv[1], timeout=5).status)
"""


@pytest.fixture()
def lab() -> Iterator[LabState]:
    with running_lab(lambda name: SPEC.format(name=name), "s", "podwall-scale-") as state:
        yield state


def _inventory_pods(lab: LabState) -> dict[str, list[str]]:
    data = yaml.safe_load(Path(lab.inventory).read_text())
    return {p["name"]: p["ips"] for w in data["workloads"] for p in w.get("pods", [])}


def _nat(lab: LabState) -> str:
    done = subprocess.run(["ip", "netns", "exec", lab.node_netns, "nft", "list", "table", "inet", "podwall-lab"],
                          capture_output=True, text=True, timeout=30)  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_a_new_replica_serves_and_joins_its_service(lab: LabState) -> None:
    """The next replica of `web` gets the next address, runs its server, is in the inventory and
    in the Service's DNAT, and answers through the Service."""
    first = next(p for p in lab.pods if p.workload == "web")
    pod = lab_add_pod(lab, replica_of="app/web")
    assert pod.name.startswith("web-") and pod.name != first.name and pod.kind == "Deployment"
    assert pod.ips == ["10.83.0.4"]  # web-0 .2, client .3: the next one
    assert _inventory_pods(lab)[pod.name] == ["10.83.0.4"]
    assert "10.83.0.4" in _nat(lab) and first.ips[0] in _nat(lab)
    direct = exec_in_pod(lab, "client", [sys.executable, "-c", _GET, "http://10.83.0.4:8080/", "1"], 30, True)
    assert direct.stdout.split() == ["200"], direct.stderr
    via = exec_in_pod(lab, "client", [sys.executable, "-c", _GET, "http://web/", "6"], 60, True)
    assert via.stdout.split() == ["200"] * 6, via.stderr
    assert load_state(Path(lab.state_dir)).pods[-1].name == pod.name  # a fresh reader sees it too


def test_a_bare_pod_is_added_and_removed_without_a_trace(lab: LabState) -> None:
    """A bare pod can be added, used and removed: its namespace, /etc/netns files, inventory entry
    and state record all go."""
    pod = lab_add_pod(lab, pod=PodSpec(name="extra", namespace="app", labels={"app": "extra"}))
    assert netlink.netns_exists(pod.netns) and (ETC_NETNS / pod.netns / "hosts").exists()
    ping = exec_in_pod(lab, "extra", [sys.executable, "-c", _GET, "http://web/", "1"], 30, True)
    assert ping.stdout.split() == ["200"], ping.stderr
    removed = lab_remove_pod(lab, "extra")
    assert f"netns {pod.netns}" in removed
    assert not netlink.netns_exists(pod.netns) and not (ETC_NETNS / pod.netns).exists()
    assert "extra" not in _inventory_pods(lab)
    assert all(p.name != "extra" for p in load_state(Path(lab.state_dir)).pods)


def test_lab_down_removes_added_pods(lab: LabState) -> None:
    """`lab down` takes the added pods with everything else."""
    pod = lab_add_pod(lab, replica_of="web")
    root = Path(lab.state_dir).parent
    lab_down(lab.lab, root)
    assert not netlink.netns_exists(pod.netns) and not (ETC_NETNS / pod.netns).exists()


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda lab: lab_add_pod(lab, replica_of="app/nope"), "no Deployment 'app/nope'"),
        (lambda lab: lab_add_pod(lab, pod=PodSpec(name="client", namespace="app")), "already has a pod 'client'"),
        (lambda lab: lab_remove_pod(lab, "client"), "only added pods can be removed"),
        (lambda lab: lab_add_pod(lab), "either the Deployment"),
    ],
    ids=["unknown-deployment", "name-taken", "remove-spec-pod", "nothing-to-add"],
)
def test_bad_requests_are_refused_with_the_reason(lab: LabState, call: object, message: str) -> None:
    """Adding what cannot be added, or removing a pod of the spec, is a LabError that says why."""
    with pytest.raises(LabError, match=message):
        call(lab)  # type: ignore[operator]


def test_scale_and_remove_pod_through_the_command(lab: LabState) -> None:
    """`podwall lab scale` adds the next replica to the inventory and `podwall lab remove-pod` takes it away."""
    state_dir = Path(lab.state_dir).parent  # the root the fixture made the lab under
    cmd = [sys.executable, "-m", "podwall.cli.main", "lab"]
    where = ["--lab", lab.lab, "--state-dir", str(state_dir)]
    added = subprocess.run([*cmd, "scale", "app/web", *where, "--wait", "0"], capture_output=True, text=True,
                           timeout=120)  # fmt: skip
    assert added.returncode == 0, added.stdout + added.stderr
    name = added.stdout.split("added pod app/", 1)[1].split()[0]
    assert name in _inventory_pods(load_state(Path(lab.state_dir)))
    removed = subprocess.run([*cmd, "remove-pod", name, *where], capture_output=True, text=True, timeout=120)
    assert removed.returncode == 0, removed.stdout + removed.stderr
    assert name not in _inventory_pods(load_state(Path(lab.state_dir)))
