"""Bring a lab up, look at it, run commands in its pods, and take it down again.

`lab_up` checks everything it can before touching the kernel (root, programs, leftovers of an
earlier lab), records its intent in the state file, then builds: node namespace and bridge,
pod namespaces and veths, /etc/netns hosts and resolv.conf files, the NAT table, the servers,
and finally the inventory. Any failure undoes the whole lab. `lab_down` removes whatever of
the recorded objects exists, so it works after a crash of podwall and a second run is a no-op.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from podwall.core.errors import PodwallError
from podwall.enforce.nft import LAB_NAT_TABLE, render_lab_nat
from podwall.lab import netlink
from podwall.lab.plan import LabPlan, plan_lab
from podwall.lab.servers import Launch, ServerError, missing_programs, prepare_server
from podwall.lab.spec import LabSpec, load_lab
from podwall.lab.state import SPEC_FILE, STATE_FILE, LabState, PodRecord, ProcessRecord, load_state

DEFAULT_STATE_ROOT = Path("/run/podwall/lab")
ETC_NETNS = Path("/etc/netns")
READY_TIMEOUT = 30.0
STOP_GRACE = 5.0


class LabError(PodwallError):
    """The lab cannot be built, found or used; the message says what and where."""


def state_root(explicit: str | Path | None = None) -> Path:
    """Where labs keep their state: the argument, else $PODWALL_LAB_DIR, else /run/podwall/lab."""
    if explicit is not None:
        return Path(explicit)
    env = os.environ.get("PODWALL_LAB_DIR")
    return Path(env) if env else DEFAULT_STATE_ROOT


# ---------------------------------------------------------------------------------------------
# Processes


def _start_time(pid: int) -> int | None:
    """Start time of a live (non-zombie) process, None when there is none."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rfind(")") + 2 :].split()  # the command name may hold spaces and parentheses
    if fields[0] in ("Z", "X"):
        return None
    return int(fields[19])


def _alive(proc: ProcessRecord) -> bool:
    return _start_time(proc.pid) == proc.start_time


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError):  # not our child (another podwall started it): init reaps it
        os.waitpid(pid, os.WNOHANG)


def _listening(pid: int, proto: str, port: int) -> bool:
    """Whether the network namespace of `pid` has a listening socket (TCP) or bound socket (UDP) on port."""
    want_state = "0A" if proto == "tcp" else "07"
    for table in (proto, proto + "6"):
        try:
            lines = Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            cols = line.split()
            if cols[3] == want_state and int(cols[1].rsplit(":", 1)[1], 16) == port:
                return True
    return False


def _tail(path: str, lines: int = 8) -> str:
    try:
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


# ---------------------------------------------------------------------------------------------
# Up


@dataclass(frozen=True, slots=True)
class _Paths:
    root: Path

    def pod(self, name: str) -> Path:
        return self.root / "pods" / name


def _preflight(plan: LabPlan, lab_dir: Path) -> None:
    problems: list[str] = []
    if os.geteuid() != 0:
        problems.append("the lab needs root (network namespaces, veths, nftables)")
    for program in ("ip", "nft", "sysctl"):
        if shutil.which(program) is None and shutil.which(program, path="/usr/sbin:/sbin") is None:
            problems.append(f"{program} is not installed")
    problems += [f"{p} is not installed" for p in missing_programs(plan)]
    if (lab_dir / STATE_FILE).exists() or lab_dir.exists():
        problems.append(f"lab {plan.name!r} already exists ({lab_dir}); run `podwall lab down --lab {plan.name}`")
    for ns in [p.netns for p in plan.pods] + [plan.node_netns]:
        if netlink.netns_exists(ns):
            problems.append(f"network namespace {ns} already exists (left over?)")
        if (ETC_NETNS / ns).exists():
            problems.append(f"{ETC_NETNS / ns} already exists (left over?)")
    if problems:
        raise LabError(f"cannot bring lab {plan.name!r} up:\n" + "\n".join(f"  {p}" for p in problems))


def _initial_state(plan: LabPlan, lab_dir: Path, spec_file: str | None) -> LabState:
    pods = [
        PodRecord(
            name=p.name,
            namespace=p.namespace,
            workload=p.workload,
            kind=p.kind,
            netns=p.netns,
            veth=p.veth,
            ips=[str(ip) for ip in p.ips],
            server=p.server.kind,
            port=getattr(p.server, "port", None),
        )
        for p in plan.pods
    ]
    return LabState(
        lab=plan.name,
        state_dir=str(lab_dir),
        spec_file=spec_file,
        node_netns=plan.node_netns,
        pods=pods,
        etc_netns=[str(ETC_NETNS / ns) for ns in [p.netns for p in plan.pods] + [plan.node_netns]],
        nat_table=LAB_NAT_TABLE,
        inventory=str(lab_dir / "inventory.yaml"),
    )


def _write_etc(plan: LabPlan) -> None:
    """Per-namespace /etc/hosts and resolv.conf: `ip netns exec` bind-mounts them over /etc."""
    for pod in (*plan.pods, None):
        d = ETC_NETNS / (pod.netns if pod is not None else plan.node_netns)
        d.mkdir(parents=True, exist_ok=False)
        (d / "hosts").write_text(plan.hosts_text(pod), encoding="utf-8")
        (d / "resolv.conf").write_text(plan.resolv_text(pod), encoding="utf-8")


def _apply_nat(plan: LabPlan, lab_dir: Path) -> None:
    script = lab_dir / "nat.nft"
    script.write_text(render_lab_nat(plan.nat_services()), encoding="utf-8")
    done = subprocess.run(
        ["ip", "netns", "exec", plan.node_netns, "nft", "-f", str(script)], capture_output=True, text=True
    )
    if done.returncode != 0:
        raise LabError(f"nft -f {script} in {plan.node_netns} failed: {done.stderr.strip()}")


def _start(state: LabState, netns: str, pod: str, kind: str, launch: Launch, pod_dir: Path) -> ProcessRecord:
    log = pod_dir / "server.log"
    with open(log, "ab") as out:
        child = subprocess.Popen(
            ["ip", "netns", "exec", netns, *launch.argv],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=pod_dir,
            env={**os.environ, **launch.env},
            start_new_session=True,  # servers outlive the podwall command that started them
        )
    start = None
    for _ in range(50):
        start = _start_time(child.pid)
        if start is not None:
            break
        time.sleep(0.01)
    record = ProcessRecord(
        pod, kind, child.pid, start or -1, list(launch.argv), str(log), int(launch.stop_signal), launch.ready
    )
    state.processes.append(record)
    state.save()
    return record


def _wait_ready(records: Sequence[ProcessRecord]) -> None:
    pending = [r for r in records if r.ready is not None]
    deadline = time.monotonic() + READY_TIMEOUT
    while pending:
        for r in list(pending):
            if not _alive(r):
                _reap(r.pid)
                raise LabError(f"pod {r.pod}: {r.kind} exited during start-up; its log ({r.log}) ends:\n{_tail(r.log)}")
            assert r.ready is not None
            if _listening(r.pid, *r.ready):
                pending.remove(r)
        if pending and time.monotonic() > deadline:
            names = ", ".join(f"{r.pod} ({r.kind} {r.ready[1] if r.ready else ''})" for r in pending)
            raise LabError(f"not listening after {READY_TIMEOUT:.0f} s: {names}")
        if pending:
            time.sleep(0.05)


def lab_up(spec: LabSpec | str | Path, root: str | Path | None = None) -> LabState:
    """Build the lab; returns its state (the inventory path is `state.inventory`). All or nothing."""
    spec_file = None
    if not isinstance(spec, LabSpec):
        spec_file = str(Path(spec).resolve())
        spec = load_lab(spec)
    plan = plan_lab(spec)
    base = state_root(root)
    lab_dir = base / plan.name
    _preflight(plan, lab_dir)
    base.mkdir(parents=True, exist_ok=True)
    lab_dir.mkdir(mode=0o711)  # servers running as their own users must traverse it to their pod dirs
    os.chmod(lab_dir, 0o711)
    state = _initial_state(plan, lab_dir, spec_file)
    state.save()
    (lab_dir / SPEC_FILE).write_text(spec.model_dump_json(indent=2) + "\n", encoding="utf-8")
    try:
        netlink.create_node(plan)
        for pod in plan.pods:
            netlink.create_pod(plan, pod)
        _write_etc(plan)
        _apply_nat(plan, lab_dir)
        started = []
        for pod in plan.pods:
            pod_dir = lab_dir / "pods" / pod.name
            pod_dir.mkdir(parents=True, mode=0o755)
            os.chmod(pod_dir, 0o755)
            launch = prepare_server(plan, pod, pod_dir)
            if launch is not None:
                started.append(_start(state, pod.netns, pod.name, pod.server.kind, launch, pod_dir))
        _wait_ready(started)
        Path(state.inventory).write_text(
            "# Written by `podwall lab up`: the lab's pods, services and node.\n"
            + yaml.safe_dump(plan.inventory(), sort_keys=False),
            encoding="utf-8",
        )
        state.phase = "up"
        state.save()
    except BaseException as exc:
        try:
            lab_down(plan.name, base)
        except Exception as cleanup:  # report the first failure; mention that cleanup failed too
            raise LabError(f"lab up failed ({exc}); cleaning up failed as well: {cleanup}") from exc
        if isinstance(exc, (ServerError, netlink.NetlinkError, OSError)):
            raise LabError(f"lab up failed: {exc}") from exc
        raise
    return state


# ---------------------------------------------------------------------------------------------
# Find, status, exec


def find_lab(lab: str | None = None, root: str | Path | None = None) -> LabState:
    """The state of lab `lab`, or of the only lab under the state root when no name is given."""
    base = state_root(root)
    if lab is None:
        names = sorted(p.parent.name for p in base.glob(f"*/{STATE_FILE}")) if base.is_dir() else []
        if not names:
            raise LabError(f"no lab is up under {base} (start one with `podwall lab up LAB.yaml`)")
        if len(names) > 1:
            raise LabError(f"several labs are up under {base}: {', '.join(sorted(names))}; choose one with --lab")
        lab = names[0]
    lab_dir = base / lab
    try:
        return load_state(lab_dir)
    except FileNotFoundError:
        raise LabError(f"lab {lab!r} is not up (no {lab_dir / STATE_FILE})") from None
    except (OSError, ValueError) as exc:
        raise LabError(f"lab {lab!r}: cannot read its state: {exc}") from None


def resolve_pod(state: LabState, ref: str) -> PodRecord:
    """A pod by name, `namespace/name`, or workload name (its first pod)."""
    ns, _, name = ref.rpartition("/")
    exact = [p for p in state.pods if p.name == name and (not ns or p.namespace == ns)]
    if exact:
        return exact[0]
    by_workload = [p for p in state.pods if p.workload == name and (not ns or p.namespace == ns)]
    if by_workload:
        return by_workload[0]
    known = ", ".join(p.name for p in state.pods)
    raise LabError(f"lab {state.lab!r} has no pod or workload {ref!r} (pods: {known})")


def pod_command(state: LabState, ref: str, argv: Sequence[str]) -> list[str]:
    """The command line that runs `argv` inside a pod, or inside the node for its namespace name
    (`pw-<lab>-node`) or `node` when no workload has that name (the demo's has)."""
    if ref in state.namespaces:
        return ["ip", "netns", "exec", ref, *argv]
    try:
        netns = resolve_pod(state, ref).netns
    except LabError:
        if ref != "node":
            raise
        netns = state.node_netns
    return ["ip", "netns", "exec", netns, *argv]


def exec_in_pod(
    state: LabState, ref: str, argv: Sequence[str], timeout: float | None = None, capture: bool = False
) -> subprocess.CompletedProcess[str]:
    """Run a command inside a pod and return its result (exit code as the command's own)."""
    if not argv:
        raise LabError("no command given (podwall lab exec POD -- CMD ...)")
    return subprocess.run(pod_command(state, ref, argv), timeout=timeout, capture_output=capture, text=True)


def lab_status(state: LabState) -> dict[str, Any]:
    """What is running: each pod's namespace, addresses, server and whether it is alive and listening."""
    procs = {p.pod: p for p in state.processes}
    pods = []
    for pod in state.pods:
        proc = procs.get(pod.name)
        alive = proc is not None and _alive(proc)
        listening = bool(alive and proc is not None and proc.ready and _listening(proc.pid, *proc.ready))
        pods.append(
            {
                "pod": pod.name,
                "namespace": pod.namespace,
                "workload": f"{pod.kind}/{pod.workload}",
                "ips": pod.ips,
                "netns": pod.netns,
                "netns_present": netlink.netns_exists(pod.netns),
                "server": pod.server,
                "port": pod.port,
                "pid": proc.pid if proc else None,
                "running": alive if proc else None,
                "listening": listening if proc else None,
            }
        )
    return {
        "lab": state.lab,
        "phase": state.phase,
        "state_dir": state.state_dir,
        "inventory": state.inventory,
        "node_netns": state.node_netns,
        "node_present": netlink.netns_exists(state.node_netns),
        "pods": pods,
    }


# ---------------------------------------------------------------------------------------------
# Down


def _stop_processes(state: LabState) -> list[str]:
    removed = []
    for proc in state.processes:
        if _alive(proc):
            try:
                os.kill(proc.pid, proc.stop_signal)
                removed.append(f"process {proc.pid} ({proc.kind} in {proc.pod})")
            except ProcessLookupError:
                pass
    deadline = time.monotonic() + STOP_GRACE
    while time.monotonic() < deadline and any(_alive(p) for p in state.processes):
        for p in state.processes:
            _reap(p.pid)
        time.sleep(0.05)
    # Whatever still runs in a lab namespace (stubborn servers, their workers, commands started
    # with `lab exec`) is killed: the namespace cannot go away while a process holds it.
    for ns in state.namespaces:
        for pid in netlink.netns_pids(ns):
            try:
                os.kill(pid, signal.SIGKILL)
                removed.append(f"process {pid} (in {ns})")
            except ProcessLookupError:
                pass
    deadline = time.monotonic() + STOP_GRACE
    while time.monotonic() < deadline and any(netlink.netns_pids(ns) for ns in state.namespaces):
        for p in state.processes:
            _reap(p.pid)
        time.sleep(0.05)
    for p in state.processes:
        _reap(p.pid)
    return removed


def lab_down(lab: str | None = None, root: str | Path | None = None) -> list[str]:
    """Remove everything the lab created that still exists; returns what was removed (empty: nothing)."""
    base = state_root(root)
    if lab is None:
        lab = find_lab(None, base).lab
    lab_dir = base / lab
    try:
        state = load_state(lab_dir)
    except FileNotFoundError:
        if lab_dir.is_dir():  # up died before its first state write: nothing else exists yet
            shutil.rmtree(lab_dir)
            return [str(lab_dir)]
        return []
    except (OSError, ValueError) as exc:
        raise LabError(f"lab {lab!r}: cannot read its state, remove it by hand: {exc}") from None
    removed = _stop_processes(state)
    # The NAT table, bridge and veths live in these namespaces and go with them.
    for ns in state.namespaces:
        if netlink.remove_netns(ns):
            removed.append(f"netns {ns}")
    for d in state.etc_netns:
        path = Path(d)
        if path.parent == ETC_NETNS and path.is_dir():
            shutil.rmtree(path)
            removed.append(str(path))
    if ETC_NETNS.is_dir() and not any(ETC_NETNS.iterdir()):
        ETC_NETNS.rmdir()  # only ever created for labs; leave it if anything else uses it
    if lab_dir.is_dir():
        shutil.rmtree(lab_dir)
        removed.append(str(lab_dir))
    return removed
