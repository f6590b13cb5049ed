"""`podwall monitor`, `podwall enforce` and `podwall quarantine add|remove` (docs/enforce.md).

`monitor` and `enforce` are top-level commands: main.py registers them on the app; the
`quarantine` sub-app is added there too.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from podwall.cli.common import (
    DbOpt,
    InventoryOpt,
    JsonlOpt,
    NoStoreOpt,
    _check_files,
    _fail,
    _handles_errors,
    err,
    out,
)
from podwall.cli.inspecting import InspectOpt, PcapDirOpt, default_pcap_dir
from podwall.core.errors import PodwallError
from podwall.core.events import Event
from podwall.policy.formats.podwall_yaml import load_policy

quarantine_app = typer.Typer(
    help="Cut a workload off entirely on the running enforcer, and undo it.", no_args_is_help=True
)
ControlDirOpt = Annotated[
    Path | None,
    typer.Option(
        "--control-dir", help="the enforcer's control directory (default: the lab's, or /run/podwall/enforce)"
    ),
]


def _control_dir(lab: str | None, state_dir: Path | None, control_dir: Path | None, use_lab: bool) -> Path:
    if control_dir is not None:
        return control_dir
    if use_lab:
        from podwall.lab.cluster import find_lab

        return Path(find_lab(lab, state_dir).state_dir) / "enforce"
    return Path("/run/podwall/enforce")


@_handles_errors
def monitor(
    policy: Annotated[Path, typer.Option("--policy", "-p", help="policy YAML to judge the traffic by")],
    lab: Annotated[str | None, typer.Option("--lab", help="the lab to tap (needed only when several are up)")] = None,
    state_dir: Annotated[Path | None, typer.Option("--state-dir", help="where labs keep their state")] = None,
    duration: Annotated[float | None, typer.Option(min=0.1, help="stop after this many seconds")] = None,
    db: DbOpt = None,
    jsonl: JsonlOpt = None,
    no_store: NoStoreOpt = False,
    inspect: InspectOpt = True,
    pcap_dir: PcapDirOpt = None,
) -> None:
    """Watch a lab's pods from a passive AF_PACKET tap on the node (no inline cost) and record each
    violation, and each threat/WAF/DLP finding the policy attaches, as it happens; stops on Ctrl-C,
    SIGTERM or after --duration (root)."""
    from podwall.enforce.monitor import monitor_lab
    from podwall.lab.cluster import find_lab
    from podwall.store.sinks import JsonlSink, Sink

    _check_files([policy], "policy file")
    pol = load_policy(policy)
    state = find_lab(lab, state_dir)
    sinks: list[Sink] = []
    if not no_store:
        from podwall.store.events import EventStore

        try:
            sinks.append(EventStore(db))
        except ValueError as exc:
            raise _fail(f"--db: {exc}") from None
    if jsonl is not None:
        sinks.append(JsonlSink(jsonl))

    def show(batch: list[Event]) -> None:
        for e in batch:
            rule = e.verdict.rule_id if e.verdict else (e.detection.id if e.detection else "-")
            out.print(f"{e.time:%H:%M:%S} {e.type.value} {e.client.group} -> {e.server.group}:{e.server.port} "
                      f"{e.application} rule {rule}", highlight=False)  # fmt: skip

    err.print(f"monitoring lab {state.lab} ({len(state.pods)} pods); Ctrl-C to stop", highlight=False)
    try:
        if inspect and pcap_dir is None and not no_store:
            pcap_dir = default_pcap_dir(db)
        stats = monitor_lab(state, pol, sinks, duration=duration, on_events=show, inspect=inspect, pcap_dir=pcap_dir)
    finally:
        for sink in sinks:
            sink.close()
    out.print(json.dumps(stats.to_dict()), highlight=False)


@_handles_errors
def enforce(
    policy: Annotated[Path, typer.Option("--policy", "-p", help="policy YAML to enforce (reloaded when it changes)")],
    inventory: InventoryOpt = None,
    lab: Annotated[str | None, typer.Option("--lab", help="enforce on this lab's node (its inventory)")] = None,
    state_dir: Annotated[Path | None, typer.Option("--state-dir", help="where labs keep their state")] = None,
    netns: Annotated[str | None, typer.Option("--netns", help="the node's network namespace (default: lab's)")] = None,
    workers: Annotated[int, typer.Option(min=1, max=64, help="worker processes, one NFQUEUE queue each")] = 2,
    fail: Annotated[str, typer.Option(help="when no worker reads a queue: open (pass) or closed (drop)")] = "open",
    queue_first: Annotated[int, typer.Option(min=0, max=65535, help="first NFQUEUE number")] = 100,
    restart_delay: Annotated[float, typer.Option(min=0.0, help="seconds before a dead worker is restarted")] = 1.0,
    busy_poll_us: Annotated[
        int,
        typer.Option(
            min=0,
            max=100_000,
            help="microseconds a worker busy-polls its queue before sleeping: faster new connections, a busy CPU",
        ),
    ] = 0,
    keep_rules: Annotated[bool, typer.Option("--keep-rules", help="leave the ruleset in place on stop")] = False,
    control_dir: ControlDirOpt = None,
    duration: Annotated[float | None, typer.Option(min=0.1, help="stop after this many seconds")] = None,
    db: DbOpt = None,
    jsonl: JsonlOpt = None,
    no_store: NoStoreOpt = False,
    pcap_dir: PcapDirOpt = None,
    threats: Annotated[
        bool, typer.Option("--threats/--no-threats", help="run the threat engine on the lab's tap (with drift)")
    ] = True,
) -> None:
    """Enforce a policy inline on a node (root): nftables L3/L4 ruleset, NFQUEUE workers for L7
    decisions, supervisor; SIGHUP or a changed file reloads; stops on Ctrl-C, SIGTERM or --duration."""
    import logging
    import threading

    from podwall.enforce.run import EnforcerService, signals_handled
    from podwall.store.sinks import JsonlSink, Sink

    if fail not in ("open", "closed"):
        raise _fail(f"--fail: {fail!r} is not open or closed")
    _check_files([policy], "policy file")
    use_lab = lab is not None or not inventory
    inv_paths: list[Path] = list(inventory or [])
    drift_interfaces: tuple[str, ...] = ()
    drift_addresses: tuple[str, ...] = ()
    if use_lab:
        from podwall.enforce.monitor import lab_target
        from podwall.lab.cluster import find_lab

        state = find_lab(lab, state_dir)
        netns = netns or state.node_netns
        inv_paths = inv_paths or [Path(state.inventory)]
        target = lab_target(state)  # the pod veths: protocol drift is watched there
        drift_interfaces, drift_addresses = target.interfaces, target.addresses
    _check_files(inv_paths, "inventory file or directory")
    where = _control_dir(lab, state_dir, control_dir, use_lab)
    sinks: list[Sink] = []
    if not no_store:
        from podwall.store.events import EventStore

        try:
            sinks.append(EventStore(db))
        except ValueError as exc:
            raise _fail(f"--db: {exc}") from None
    if jsonl is not None:
        sinks.append(JsonlSink(jsonl))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr)

    def show(batch: list[Event]) -> None:
        for e in batch:
            rule = e.verdict.rule_id if e.verdict else (e.detection.id if e.detection else "-")
            action = e.verdict.action if e.verdict else "-"
            out.print(f"{e.time:%H:%M:%S} {e.type.value} {action} {e.client.group} -> {e.server.group}:"
                      f"{e.server.port} {e.application} rule {rule}", highlight=False)  # fmt: skip

    service = EnforcerService(
        policy, inv_paths, netns, workers=workers, fail=fail, sinks=sinks, control_dir=where,
        keep_rules=keep_rules, queue_first=queue_first, restart_delay=restart_delay, on_events=show,
        drift_interfaces=drift_interfaces, drift_addresses=drift_addresses, busy_poll=busy_poll_us / 1e6,
        pcap_dir=pcap_dir if pcap_dir is not None or no_store else default_pcap_dir(db), threats=threats,
    )  # fmt: skip
    stop = threading.Event()
    try:
        with signals_handled(service, stop):
            service.run(duration=duration, stop=stop)
    finally:
        for sink in sinks:
            sink.close()
    out.print(json.dumps(service.status("stopped")), highlight=False)


def _quarantine(ref: str, add: bool, lab: str | None, state_dir: Path | None, control_dir: Path | None) -> None:
    from podwall.enforce.control import request_quarantine

    try:
        where = _control_dir(lab, state_dir, control_dir, control_dir is None)
    except PodwallError:
        if lab is not None or state_dir is not None:
            raise
        where = _control_dir(lab, state_dir, control_dir, False)  # no lab: a node's enforcer
    done = request_quarantine(where, ref, add)
    verb = "quarantined" if add else "released"
    if done["applied"]:
        out.print(f"{ref} {verb}; quarantine: {', '.join(done['workloads']) or 'nothing'}", highlight=False)
    else:
        out.print(f"{ref} {verb} in the saved list (no enforcer running: applied when `podwall enforce` starts)",
                  highlight=False)  # fmt: skip


@quarantine_app.command("add")
@_handles_errors
def quarantine_add(
    workload: Annotated[str, typer.Argument(help="namespace/workload, a workload or pod name, or an IP address")],
    lab: Annotated[str | None, typer.Option("--lab", help="the lab whose enforcer to ask")] = None,
    state_dir: Annotated[Path | None, typer.Option("--state-dir", help="where labs keep their state")] = None,
    control_dir: ControlDirOpt = None,
) -> None:
    """Cut WORKLOAD off entirely (established connections too) on the running enforcer."""
    _quarantine(workload, True, lab, state_dir, control_dir)


@quarantine_app.command("remove")
@_handles_errors
def quarantine_remove(
    workload: Annotated[str, typer.Argument(help="as given to `quarantine add`")],
    lab: Annotated[str | None, typer.Option("--lab", help="the lab whose enforcer to ask")] = None,
    state_dir: Annotated[Path | None, typer.Option("--state-dir", help="where labs keep their state")] = None,
    control_dir: ControlDirOpt = None,
) -> None:
    """Release WORKLOAD from quarantine."""
    _quarantine(workload, False, lab, state_dir, control_dir)
