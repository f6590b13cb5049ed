"""`podwall lab`: up, exec, status, scale and down of a lab of network-namespace pods (docs/lab.md).

Exit codes: 0 success, 2 bad input or a lab that cannot be built/found; `exec` exits with the
command's own code; `status` exits 1 when a pod or server of the lab is not running.
"""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from podwall.core.errors import PodwallError

lab_app = typer.Typer(
    help="A lab cluster on this machine: pods as network namespaces on a bridge, real servers inside.",
    no_args_is_help=True,
)

_out = Console(soft_wrap=False)
_err = Console(stderr=True, soft_wrap=True)
if not _out.is_terminal:
    _out.width = 200  # as the other commands: piped tables are read in logs, not squeezed to 80 columns

StateDirOpt = Annotated[
    Path | None,
    typer.Option("--state-dir", help="where labs keep their state (default $PODWALL_LAB_DIR or /run/podwall/lab)"),
]
LabOpt = Annotated[str | None, typer.Option("--lab", help="the lab's name (needed only when several are up)")]


def _errors(fn: Callable[..., None]) -> Callable[..., None]:
    """Report podwall's errors as one message and exit code 2."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        try:
            fn(*args, **kwargs)
        except PodwallError as exc:
            _err.print(f"[bold red]error:[/] {exc}", highlight=False)
            raise typer.Exit(2) from None

    return wrapper


@lab_app.command("up")
@_errors
def lab_up_cmd(
    spec: Annotated[Path, typer.Argument(help="the lab description (LAB.yaml)", show_default=False)],
    state_dir: StateDirOpt = None,
) -> None:
    """Build the lab: node namespace and bridge, pods, services (DNAT), names, servers; write the inventory."""
    from podwall.lab.cluster import lab_status, lab_up

    state = lab_up(spec, state_dir)
    _out.print(_pods_table(lab_status(state)))
    _out.print(f"lab {state.lab} is up; inventory: {state.inventory}", highlight=False)


@lab_app.command("exec", context_settings={"ignore_unknown_options": True})
@_errors
def lab_exec_cmd(
    pod: Annotated[
        str, typer.Argument(help="pod name, namespace/pod, a workload (its first pod), or the node (pw-<lab>-node)")
    ],
    command: Annotated[list[str], typer.Argument(help="the command, after --", show_default=False)],
    lab: LabOpt = None,
    state_dir: StateDirOpt = None,
) -> None:
    """Run a command inside a pod's network namespace (with the pod's /etc/hosts and resolv.conf)."""
    from podwall.lab.cluster import exec_in_pod, find_lab

    state = find_lab(lab, state_dir)
    if command[:1] == ["--"]:
        command = command[1:]
    sys.stdout.flush()
    done = exec_in_pod(state, pod, command)
    raise typer.Exit(done.returncode)


@lab_app.command("status")
@_errors
def lab_status_cmd(
    lab: LabOpt = None,
    state_dir: StateDirOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON document")] = False,
) -> None:
    """Pods, addresses and servers of the lab; exit 1 when anything is not running."""
    from podwall.lab.cluster import find_lab, lab_status

    status = lab_status(find_lab(lab, state_dir))
    if as_json:
        sys.stdout.write(json.dumps(status, indent=2) + "\n")
    else:
        _out.print(_pods_table(status))
        _out.print(f"lab {status['lab']} ({status['phase']}); inventory: {status['inventory']}", highlight=False)
    healthy = status["node_present"] and all(
        p["netns_present"] and p["running"] is not False and p["listening"] is not False for p in status["pods"]
    )
    if not healthy:
        raise typer.Exit(1)


@lab_app.command("scale")
@_errors
def lab_scale_cmd(
    deployment: Annotated[str, typer.Argument(help="the Deployment to add a replica to (name or namespace/name)")],
    lab: LabOpt = None,
    state_dir: StateDirOpt = None,
    wait: Annotated[float, typer.Option(help="seconds to wait for a running enforcer to cover the new pod")] = 15.0,
) -> None:
    """Add a replica to a running lab; a running enforcer covers it before its first packet."""
    from podwall.lab.cluster import find_lab
    from podwall.lab.scale import lab_add_pod

    pod = lab_add_pod(find_lab(lab, state_dir), replica_of=deployment, enforcer_wait=wait)
    _out.print(f"added pod {pod.namespace}/{pod.name} ({', '.join(pod.ips)})", highlight=False)


@lab_app.command("remove-pod")
@_errors
def lab_remove_pod_cmd(
    pod: Annotated[str, typer.Argument(help="a pod added with `podwall lab scale`")],
    lab: LabOpt = None,
    state_dir: StateDirOpt = None,
) -> None:
    """Remove a pod that `podwall lab scale` added (the pods of the lab's description stay)."""
    from podwall.lab.cluster import find_lab
    from podwall.lab.scale import lab_remove_pod

    for item in lab_remove_pod(find_lab(lab, state_dir), pod):
        _out.print(f"removed {item}", highlight=False)


@lab_app.command("down")
@_errors
def lab_down_cmd(lab: LabOpt = None, state_dir: StateDirOpt = None) -> None:
    """Remove everything the lab created (processes, namespaces, links, NAT, /etc/netns files, state)."""
    from podwall.lab.cluster import lab_down

    removed = lab_down(lab, state_dir)
    for item in removed:
        _out.print(f"removed {item}", highlight=False)
    _out.print(f"{len(removed)} item(s) removed" if removed else "nothing to remove", highlight=False)


def _pods_table(status: dict[str, Any]) -> Table:
    table = Table(title=f"lab {status['lab']}")
    for col in ("pod", "namespace", "workload", "ips", "server", "state"):
        table.add_column(col)
    for p in status["pods"]:
        if not p["netns_present"]:
            state = "[red]no netns[/]"
        elif p["running"] is None:
            state = "-"
        elif not p["running"]:
            state = "[red]stopped[/]"
        else:
            state = f"pid {p['pid']}" + ("" if p["listening"] else " [yellow]not listening[/]")
        server = p["server"] if p["port"] is None else f"{p['server']}:{p['port']}"
        table.add_row(p["pod"], p["namespace"], p["workload"], " ".join(p["ips"]), server, state)
    return table
