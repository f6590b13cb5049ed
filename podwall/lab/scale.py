"""Add pods to a running lab (a Deployment's next replica, or a new bare pod) and remove them again.

A pod added while `podwall enforce` runs must be covered from its first packet. So the new pod
is built with the node's end of its veth down, the inventory is rewritten (atomically) with the
pod in it, and only once the running enforcer reports that inventory in force
(`service.json`'s `inventory_digest`: its address sets hold the new pod) does the veth come up
and the pod's server start. Without a running enforcer there is nothing to wait for.

What was added is kept beside the lab's state (`added.json`) and the spec it was built from
(`spec.json`), so the plan of the grown lab can always be recomputed; `lab down` removes added
pods like the others (they are in the state file).
"""

from __future__ import annotations

import contextlib
import dataclasses
import ipaddress
import json
import os
import shutil
import signal
from pathlib import Path
from typing import Any

import yaml

from podwall.enforce.control import ControlError, inventory_digest, wait_for_inventory
from podwall.lab import netlink
from podwall.lab.cluster import (
    ETC_NETNS,
    LabError,
    _alive,
    _apply_nat,
    _reap,
    _start,
    _wait_ready,
)
from podwall.lab.plan import LabPlan, PodTemplate, plan_lab, pod_plan, replica_name
from podwall.lab.servers import missing_programs, prepare_server
from podwall.lab.spec import DeploymentSpec, LabSpec, PodSpec
from podwall.lab.state import ADDED_FILE, SPEC_FILE, LabState, PodRecord

__all__ = ["ENFORCER_WAIT", "current_plan", "lab_add_pod", "lab_remove_pod"]

ENFORCER_WAIT = 15.0  # seconds a running enforcer gets to put a new pod's address in its sets


def _spec(state: LabState) -> LabSpec:
    path = Path(state.state_dir) / SPEC_FILE
    try:
        return LabSpec.model_validate_json(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        why = f"lab {state.lab!r} has no {SPEC_FILE} (brought up by an older podwall)"
        raise LabError(f"{why}: pods cannot be added") from None
    except (OSError, ValueError) as exc:
        raise LabError(f"lab {state.lab!r}: cannot read {path}: {exc}") from None


def _added(state: LabState) -> list[dict[str, Any]]:
    path = Path(state.state_dir) / ADDED_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return []
    except (OSError, ValueError) as exc:
        raise LabError(f"lab {state.lab!r}: cannot read {path}: {exc}") from None
    if not isinstance(data, list):
        raise LabError(f"lab {state.lab!r}: {path} is not a list of added pods")
    return data


def _write_added(state: LabState, added: list[dict[str, Any]]) -> None:
    path = Path(state.state_dir) / ADDED_FILE
    tmp = path.with_name(f".{ADDED_FILE}.{os.getpid()}")
    tmp.write_text(json.dumps(added, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def _template(entry: dict[str, Any]) -> PodTemplate:
    if entry["kind"] == "Deployment":
        return DeploymentSpec.model_validate(entry["template"])
    return PodSpec.model_validate(entry["template"])


def current_plan(state: LabState) -> LabPlan:
    """The plan of the lab as it runs now: its spec's pods plus the ones added since."""
    spec = _spec(state)
    extra = tuple(
        pod_plan(spec, a["name"], a["workload"], a["kind"], _template(a), int(a["index"])) for a in _added(state)
    )
    return plan_lab(spec).with_pods(extra)


def _index(spec: LabSpec, plan: LabPlan) -> int:
    """The next free address index of the pod CIDR (after every pod's, never reusing one)."""
    base = ipaddress.IPv4Network(spec.podCIDR).network_address
    return max((int(p.ipv4) - int(base) for p in plan.pods), default=1) + 1


def _write_inventory(state: LabState, plan: LabPlan) -> bytes:
    """Rewrite the lab's inventory atomically (the enforcer must never read half a file); its bytes."""
    text = "# Written by `podwall lab up`: the lab's pods, services and node.\n" + yaml.safe_dump(
        plan.inventory(), sort_keys=False
    )
    data = text.encode("utf-8")
    path = Path(state.inventory)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, path)
    return data


def _refresh_dns(state: LabState, plan: LabPlan) -> None:
    """Lab DNS servers learn the new pod names (dnsmasq re-reads its hosts file on SIGHUP)."""
    for proc in state.processes:
        pod = next((p for p in plan.pods if p.name == proc.pod), None)
        if proc.kind != "dnsmasq" or pod is None or not _alive(proc):
            continue
        hosts = Path(state.state_dir) / "pods" / pod.name / "lab-hosts"
        with contextlib.suppress(OSError):
            hosts.write_text(plan.lab_hosts_text(), encoding="utf-8")
            os.kill(proc.pid, signal.SIGHUP)


def _enforced(state: LabState, inventory: bytes, wait: float) -> bool:
    """Wait until a running enforcer of the lab has the inventory in force (False: none runs)."""
    try:
        return wait_for_inventory(Path(state.state_dir) / "enforce", inventory_digest([inventory]), wait)
    except ControlError as exc:
        raise LabError(f"lab {state.lab!r}: {exc}; the new pod was removed again") from None


def lab_add_pod(
    state: LabState,
    *,
    replica_of: str | None = None,
    pod: PodSpec | None = None,
    enforcer_wait: float = ENFORCER_WAIT,
) -> PodRecord:
    """Add the next replica of Deployment `replica_of` (`name` or `namespace/name`), or the bare
    pod `pod`, to a running lab; returns its record. See the module docstring for the order of
    steps; a failure removes the pod again."""
    if (replica_of is None) == (pod is None):
        raise LabError("give either the Deployment to scale up or a pod to add")
    spec = _spec(state)
    added = _added(state)
    plan = current_plan(state)
    template: PodTemplate
    if replica_of is not None:
        ns, _, name = replica_of.rpartition("/")
        found = [d for d in spec.deployments if d.name == name and (not ns or d.namespace == ns)]
        if not found:
            names = ", ".join(f"{d.namespace}/{d.name}" for d in spec.deployments) or "none"
            raise LabError(f"lab {state.lab!r} has no Deployment {replica_of!r} (Deployments: {names})")
        template = found[0]
        replicas = template.replicas + sum(1 for a in added if a["kind"] == "Deployment" and a["workload"] == name)
        pod_name, workload, kind = replica_name(spec, template, replicas), template.name, "Deployment"
    else:
        assert pod is not None
        template, pod_name, workload, kind = pod, pod.name, pod.name, "Pod"
    if any(p.name == pod_name for p in plan.pods):
        raise LabError(f"lab {state.lab!r} already has a pod {pod_name!r}")
    try:
        new = pod_plan(spec, pod_name, workload, kind, template, _index(spec, plan))
    except ValueError as exc:
        raise LabError(f"lab {state.lab!r}: {exc}") from None
    grown = plan.with_pods((new,))
    missing = missing_programs(dataclasses.replace(grown, pods=(new,)))
    if missing:
        raise LabError(f"cannot add pod {pod_name}: {', '.join(missing)} not installed")
    if netlink.netns_exists(new.netns) or (ETC_NETNS / new.netns).exists():
        raise LabError(f"network namespace {new.netns} already exists (left over?)")

    # Recorded before anything exists, so that `lab down` removes it whatever happens next.
    added.append(
        {"name": pod_name, "workload": workload, "kind": kind, "index": _index(spec, plan),
         "template": template.model_dump(mode="json")}
    )  # fmt: skip
    _write_added(state, added)
    record = PodRecord(
        name=new.name, namespace=new.namespace, workload=new.workload, kind=new.kind, netns=new.netns,
        veth=new.veth, ips=[str(ip) for ip in new.ips], server=new.server.kind, port=getattr(new.server, "port", None),
    )  # fmt: skip
    state.pods.append(record)
    state.etc_netns.append(str(ETC_NETNS / new.netns))
    state.save()
    try:
        netlink.create_pod(grown, new, attach=False)
        etc = ETC_NETNS / new.netns
        etc.mkdir(parents=True, exist_ok=False)
        (etc / "hosts").write_text(grown.hosts_text(new), encoding="utf-8")
        (etc / "resolv.conf").write_text(grown.resolv_text(new), encoding="utf-8")
        _apply_nat(grown, Path(state.state_dir))
        inventory = _write_inventory(state, grown)
        _refresh_dns(state, grown)
        _enforced(state, inventory, enforcer_wait)
        netlink.attach_pod(grown, new)
        pod_dir = Path(state.state_dir) / "pods" / new.name
        pod_dir.mkdir(parents=True, mode=0o755)
        os.chmod(pod_dir, 0o755)
        launch = prepare_server(grown, new, pod_dir)
        if launch is not None:
            _wait_ready([_start(state, new.netns, new.name, new.server.kind, launch, pod_dir)])
    except BaseException:
        with contextlib.suppress(Exception):
            lab_remove_pod(state, pod_name, enforcer_wait=0)
        raise
    return record


def lab_remove_pod(state: LabState, name: str, *, enforcer_wait: float = ENFORCER_WAIT) -> list[str]:
    """Remove a pod added with `lab_add_pod` (pods of the lab's spec stay); returns what was removed.

    The pod goes first (its processes, then its namespace), then the inventory and NAT forget it."""
    added = _added(state)
    if not any(a["name"] == name for a in added):
        raise LabError(f"pod {name!r} was not added to lab {state.lab!r} (only added pods can be removed)")
    removed: list[str] = []
    record = next((p for p in state.pods if p.name == name), None)
    for proc in [p for p in state.processes if p.pod == name]:
        if _alive(proc):
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGKILL)
                removed.append(f"process {proc.pid} ({proc.kind} in {name})")
        _reap(proc.pid)
        state.processes.remove(proc)
    if record is not None:
        for pid in netlink.netns_pids(record.netns):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if netlink.remove_netns(record.netns):
            removed.append(f"netns {record.netns}")
        etc = ETC_NETNS / record.netns
        if etc.is_dir():
            shutil.rmtree(etc)
            removed.append(str(etc))
        with contextlib.suppress(ValueError):
            state.etc_netns.remove(str(etc))
        state.pods.remove(record)
    shutil.rmtree(Path(state.state_dir) / "pods" / name, ignore_errors=True)
    _write_added(state, [a for a in added if a["name"] != name])
    state.save()
    plan = current_plan(state)
    _apply_nat(plan, Path(state.state_dir))
    inventory = _write_inventory(state, plan)
    _refresh_dns(state, plan)
    if enforcer_wait > 0:
        with contextlib.suppress(ControlError):
            wait_for_inventory(Path(state.state_dir) / "enforce", inventory_digest([inventory]), enforcer_wait)
    return removed
