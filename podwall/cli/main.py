"""The `podwall` command: analyze, learn, check, events, policy and demo.

Exit codes: 0 success (and, for `check`, no violation), 1 violations found, 2 bad input.

This module assembles the app; the command families live beside it: `policy` in policy.py,
`monitor` / `enforce` / `quarantine` in enforce.py, `lab` in lab.py, shared helpers in common.py.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

import typer

from podwall.analysis.check import check as check_flows
from podwall.analysis.check import dns_service_groups, learn_policy, violation_events
from podwall.analysis.conversations import aggregate
from podwall.analysis.inspection import finding_event
from podwall.cli import render
from podwall.cli.common import (
    AllowDamagedOpt,
    Captures,
    DbOpt,
    InventoryOpt,
    JsonlOpt,
    JsonOpt,
    NoStoreOpt,
    _check_files,
    _dump,
    _fail,
    _flows,
    _handles_errors,
    _load_inventory,
    _Problems,
    _Recorder,
    err,
    out,
)
from podwall.cli.dlp import dlp_app
from podwall.cli.enforce import enforce, monitor, quarantine_app
from podwall.cli.inspect import inspect_app
from podwall.cli.inspecting import (
    InspectOpt,
    ParanoiaOpt,
    PcapDirOpt,
    default_pcap_dir,
    inspected_flows,
    keep_pcaps,
)
from podwall.cli.lab import lab_app
from podwall.cli.policy import policy_app
from podwall.core.errors import PodwallError
from podwall.core.events import EventType
from podwall.inventory.resolver import Resolver
from podwall.policy.evaluate import PolicyEngine
from podwall.policy.formats.podwall_yaml import dump_policy, load_policy

app = typer.Typer(
    name="podwall",
    help="Layer-7 container segmentation firewall: see, learn and check service-to-service traffic.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.add_typer(policy_app, name="policy")
app.add_typer(lab_app, name="lab")  # podwall/cli/lab.py: up, exec, status, down
app.add_typer(inspect_app, name="inspect")  # podwall/cli/inspect.py: http (the WAF)
app.add_typer(dlp_app, name="dlp")  # podwall/cli/dlp.py: scan, sensors


@app.command()
@_handles_errors
def analyze(
    captures: Captures,
    inventory: InventoryOpt = None,
    as_json: JsonOpt = False,
    flows: Annotated[bool, typer.Option("--flows", help="list individual flows instead of conversations")] = False,
    inspect: InspectOpt = True,
    paranoia: ParanoiaOpt = None,
    pcap_dir: PcapDirOpt = None,
) -> None:
    """Name every connection in the captures and print the conversations (or flows), and what the
    inspectors (network threats, WAF, DLP) found in them."""
    inv = _load_inventory(inventory)
    resolver = Resolver(inv)
    problems = _Problems(quiet=as_json)
    if inspect:
        named, findings = inspected_flows(captures, resolver, problems, None, paranoia)
        keep_pcaps(findings, pcap_dir)
    else:
        named, findings = _flows(captures, resolver, problems, depth="detect"), []
    found = {"findings": [f.to_dict() for f in findings]} if inspect else {}
    if flows:
        if as_json:
            _dump({"flows": [nf.to_dict() for nf in named], **found, "problems": [str(p) for p in problems.items]})
        else:
            out.print(render.flows_table(named))
    else:
        convs = aggregate(named)
        if as_json:
            problem_list = [str(p) for p in problems.items]
            _dump({"conversations": [c.to_dict() for c in convs], **found, "problems": problem_list})
        else:
            out.print(render.conversations_table(convs))
    if findings and not as_json:
        out.print(render.findings_table(findings))
        render.print_findings(out, findings)


@app.command()
@_handles_errors
def learn(
    captures: Captures,
    inventory: InventoryOpt = None,
    output: Annotated[Path, typer.Option("--output", "-o", help="where to write the learned policy YAML")] = Path(
        "policy.yaml"
    ),
    mode: Annotated[str, typer.Option(help="mode of the learned groups: discover, monitor or protect")] = "monitor",
    merge: Annotated[Path | None, typer.Option(help="an existing policy to extend")] = None,
    db: DbOpt = None,
    jsonl: JsonlOpt = None,
    no_store: NoStoreOpt = False,
    allow_damaged: AllowDamagedOpt = False,
) -> None:
    """Learn the whitelist from the traffic (discover mode) and write it as a policy file."""
    if mode not in ("discover", "monitor", "protect"):
        raise _fail(f"--mode: {mode!r} is not one of discover, monitor, protect")
    inv = _load_inventory(inventory)
    existing = load_policy(merge) if merge else None
    recorder = _Recorder(db, no_store, jsonl)
    resolver = Resolver(inv)
    problems = _Problems()
    named = _flows(captures, resolver, problems)
    if problems.damaged and not allow_damaged:
        raise _fail(_damaged_message(problems, "nothing was learned"))
    policy, events = learn_policy(
        named, inv, resolver, mode=mode, existing=existing, source=",".join(map(str, captures))
    )
    output.write_text(dump_policy(policy))
    out.print(render.rules_table(policy, title=f"Learned rules -> {output}"))
    recorder.write(events)


@app.command()
@_handles_errors
def check(
    captures: Annotated[
        list[Path] | None,
        typer.Argument(help="pcap or pcapng files (optional with --what-if: then the stored connections)"),
    ] = None,
    policy: Annotated[
        Path | None,
        typer.Option("--policy", "-p", help="policy YAML to check against (the current one with --what-if)"),
    ] = None,
    what_if: Annotated[
        Path | None,
        typer.Option("--what-if", help="a proposed policy: list the recorded connections it would block"),
    ] = None,
    inventory: InventoryOpt = None,
    as_json: JsonOpt = False,
    db: DbOpt = None,
    jsonl: JsonlOpt = None,
    no_store: NoStoreOpt = False,
    allow_damaged: AllowDamagedOpt = False,
    inspect: InspectOpt = True,
    paranoia: ParanoiaOpt = None,
    pcap_dir: PcapDirOpt = None,
) -> None:
    """Evaluate every connection against a policy; exit 1 when there are violations.

    The inspectors run as the policy attaches them (threats everywhere, DLP and WAF on the groups
    that turn them on); a finding whose action is deny/drop/reset also makes the exit 1, and each
    finding is recorded as a threat, waf or dlp event with its packets saved as a pcap.

    With --what-if PROPOSED: which connections (of the captures, or of the event store when no
    capture is given) the proposed policy would block in protect mode; exit 1 if any. Nothing
    is recorded in that case."""
    if what_if is not None:
        _what_if(captures or [], policy, what_if, inventory, as_json, db)
        return
    if not captures:
        raise _fail("give one or more capture files (or --what-if PROPOSED to use the stored connections)")
    if policy is None:
        raise _fail("missing option --policy / -p: the policy to check against")
    _check_files([policy], "policy file")
    pol = load_policy(policy)
    inv = _load_inventory(inventory)
    recorder = _Recorder(db, no_store, jsonl)
    resolver = Resolver(inv)
    problems = _Problems(quiet=as_json)
    if inspect:
        named, findings = inspected_flows(captures, resolver, problems, pol, paranoia)
        keep_pcaps(findings, pcap_dir or (default_pcap_dir(db) if recorder.store is not None else None))
    else:
        depth = "full" if any(r.l7 is not None for r in pol.spec.rules) else "detect"
        named, findings = _flows(captures, resolver, problems, depth=depth), []
    items = check_flows(named, PolicyEngine(pol, dns_service_groups=dns_service_groups(inv, resolver)))
    events = violation_events(items, ",".join(map(str, captures)))
    events.extend(finding_event(f) for f in findings)
    violations = [i for i in items if i.verdict.violation]
    blocking = [f for f in findings if f.finding.action.blocks]
    if as_json:
        _dump(
            {
                "policy": str(policy),
                "verdicts": [i.to_dict() for i in items],
                "violations": len(violations),
                "sessions_in_violation": sum(i.conversation.sessions for i in violations),
                "findings": [f.to_dict() for f in findings],
                "problems": [str(p) for p in problems.items],
                "complete": not problems.damaged,
            }
        )
    else:
        out.print(render.verdicts_table(items))
        render.print_violations(out, items)
        if findings:
            out.print(render.findings_table(findings))
            render.print_findings(out, findings)
        out.print(
            f"{len(violations)} violation(s) in {len(items)} conversation(s); "
            f"{len(findings)} finding(s), {len(blocking)} with a blocking action"
        )
    recorder.write(events)
    if problems.damaged and not allow_damaged:
        # A verdict over part of a capture must not pass as a clean bill of health.
        raise _fail(_damaged_message(problems, "the verdicts above cover only the traffic before the damage"))
    if violations or blocking:
        raise typer.Exit(1)


def _damaged_message(problems: _Problems, consequence: str) -> str:
    where = "; ".join(str(p) for p in problems.damaged[:3])
    return f"damaged capture ({where}): {consequence}; use --allow-damaged to accept a partial reading"


def _what_if(
    captures: Sequence[Path], current: Path | None, proposed: Path, inventory: Sequence[Path] | None, as_json: bool,
    db: str | None,
) -> None:  # fmt: skip
    from podwall.analysis.whatif import observations_from_events, what_if
    from podwall.core.types import Observation

    _check_files([proposed, *([current] if current is not None else [])], "policy file")
    new_pol = load_policy(proposed)
    old_pol = load_policy(current) if current is not None else None
    inv = _load_inventory(inventory)
    resolver = Resolver(inv)
    dns = dns_service_groups(inv, resolver)
    connections: list[tuple[Observation, int]]
    if captures:
        source = ",".join(map(str, captures))
        connections = [(nf.observation(), 1) for nf in _flows(captures, resolver, _Problems(quiet=as_json))]
    else:
        from podwall.store.events import EventStore

        store = EventStore(db)
        try:
            stored = store.query()
        finally:
            store.close()
        source = "event store"
        connections = observations_from_events(stored, resolver if inv is not None else None)
        if not connections:
            raise _fail("the event store holds no recorded connection: give capture files, or run learn/check first")
    items = what_if(
        connections,
        PolicyEngine(new_pol, dns_service_groups=dns),
        PolicyEngine(old_pol, dns_service_groups=dns) if old_pol is not None else None,
    )
    blocked = [i for i in items if i.would_block]
    if as_json:
        _dump(
            {
                "proposed": str(proposed),
                "current": str(current) if current is not None else None,
                "source": source,
                "connections": [i.to_dict() for i in items],
                "would_block": len(blocked),
                "sessions_blocked": sum(i.sessions for i in blocked),
                "newly_blocked": sum(1 for i in blocked if i.newly_blocked),
            }
        )
    else:
        out.print(render_what_if(items, proposed))
        for i in blocked:
            out.print(f"[bold]{i.client} → {i.server} {i.transport}/{i.port}[/]: {i.explanation}", highlight=False)
        out.print(
            f"{len(blocked)} of {len(items)} connection group(s) ({sum(i.sessions for i in blocked)} session(s)) "
            f"would be blocked by {proposed} in protect mode ({source})",
            highlight=False,
        )
    if blocked:
        raise typer.Exit(1)


def render_what_if(items: Sequence[Any], proposed: Path) -> Any:
    """The what-if table: one row per connection group, blocked ones first."""
    from rich.table import Table

    table = Table(title=f"What if {proposed} were enforced")
    for col in ("client", "server", "port", "application", "sessions", "current", "proposed", "would block"):
        table.add_column(col)
    for i in items:
        table.add_row(
            i.client,
            i.server,
            f"{i.transport}/{i.port}" if i.port else i.transport,
            i.application or "-",
            str(i.sessions),
            str(i.current) if i.current is not None else "-",
            str(i.proposed),
            ("[red]yes, new[/]" if i.newly_blocked else "[red]yes[/]") if i.would_block else "no",
        )
    return table


@app.command()
@_handles_errors
def events(
    type_: Annotated[EventType | None, typer.Option("--type", help="the event type")] = None,
    group: Annotated[str | None, typer.Option(help="only events with this client or server group")] = None,
    since: Annotated[str | None, typer.Option(help="ISO 8601 time or a duration such as 30m, 2h, 7d")] = None,
    limit: Annotated[int | None, typer.Option(min=1, help="at most this many events (newest)")] = None,
    as_json: JsonOpt = False,
    db: DbOpt = None,
) -> None:
    """List the stored events."""
    from podwall.store.events import EventStore, parse_since

    try:
        since_dt = parse_since(since) if since else None
    except ValueError as exc:
        raise _fail(f"--since: {exc}") from None
    try:
        store = EventStore(db)
    except ValueError as exc:
        raise _fail(f"--db: {exc}") from None
    try:
        rows = store.query(
            type=type_.value if type_ else None,
            group=group,
            since=since_dt,
            limit=limit,
            order="desc" if limit else "asc",
        )
    finally:
        store.close()
    if limit:
        rows.reverse()
    if as_json:
        _dump([e.to_dict() for e in rows])
    else:
        out.print(render.events_table(rows))


# Registered here so that `podwall --help` lists the commands in their usual order.
app.command()(monitor)
app.command()(enforce)
app.add_typer(quarantine_app, name="quarantine")  # podwall/cli/enforce.py: add, remove


@app.command()
@_handles_errors
def demo(
    db: DbOpt = None,
    no_store: NoStoreOpt = False,
    workdir: Annotated[
        Path | None, typer.Option(help="where to write the learned policy (default: a temp dir)")
    ] = None,
) -> None:
    """Learn the demo application's policy from its normal traffic, then catch the exploit."""
    from podwall.demo import run_demo

    code = run_demo(out, db=db, no_store=no_store, workdir=workdir)
    raise typer.Exit(code)


def main() -> None:
    """Entry point: map podwall's errors to exit code 2 with their located message."""
    try:
        app()
    except PodwallError as exc:
        err.print(f"[bold red]error:[/] {exc}", highlight=False)
        sys.exit(2)


if __name__ == "__main__":
    main()
