"""The `podwall` command: analyze, learn, check, events, policy and demo.

Exit codes: 0 success (and, for `check`, no violation), 1 violations found, 2 bad input.
"""

from __future__ import annotations

import functools
import json
import re
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn

from podwall.analysis.check import check as check_flows
from podwall.analysis.check import dns_service_groups, learn_policy, violation_events
from podwall.analysis.conversations import aggregate
from podwall.analysis.runner import NamedFlow, read_flows
from podwall.cli import render
from podwall.cli.lab import lab_app
from podwall.core.errors import PodwallError, Problem
from podwall.core.events import Event, EventType
from podwall.inventory.loader import load_inventory
from podwall.inventory.model import Inventory
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
policy_app = typer.Typer(
    help="Policy files: validate, explain, analyze, diff, connlist, import and export (NeuVector).",
    no_args_is_help=True,
)
app.add_typer(policy_app, name="policy")
app.add_typer(lab_app, name="lab")  # podwall/cli/lab.py: up, exec, status, down

out = Console(soft_wrap=False)
err = Console(stderr=True, soft_wrap=True)
if not out.is_terminal:
    # Piped output is read by people in logs and CI; do not squeeze tables into 80 columns.
    out.width = 200

Captures = Annotated[list[Path], typer.Argument(help="pcap or pcapng files", show_default=False)]
InventoryOpt = Annotated[
    list[Path] | None,
    typer.Option("--inventory", "-i", help="inventory YAML or Kubernetes objects (file or directory); repeatable"),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="print one JSON document instead of tables")]
JsonlOpt = Annotated[Path | None, typer.Option("--jsonl", help="also append the events to this JSON-lines file")]
DbOpt = Annotated[
    str | None,
    typer.Option(
        "--db",
        help="event store: a SQLite path or SQLAlchemy URL (default $PODWALL_DB or ~/.local/share/podwall)",
    ),
]
NoStoreOpt = Annotated[bool, typer.Option("--no-store", help="do not write events to the store")]
AllowDamagedOpt = Annotated[
    bool, typer.Option("--allow-damaged", help="accept captures that end in damage (results cover the part read)")
]


class _Problems:
    """Collects capture problems; prints the first few as warnings and counts the rest."""

    def __init__(self, quiet: bool = False, shown: int = 10) -> None:
        self.items: list[Problem] = []
        self.quiet = quiet
        self.shown = shown

    def __call__(self, problem: Problem) -> None:
        self.items.append(problem)
        if not self.quiet and len(self.items) <= self.shown:
            err.print(f"[yellow]warning:[/] {problem}", highlight=False)

    def summary(self) -> None:
        if not self.quiet and len(self.items) > self.shown:
            err.print(f"[yellow]warning:[/] {len(self.items) - self.shown} more problem(s) not shown")

    @property
    def damaged(self) -> list[Problem]:
        """Problems that stopped a capture early (the reader locates them by byte offset); a
        malformed packet inside an intact capture is only skipped and does not count."""
        return [p for p in self.items if p.location.offset is not None]


def _fail(message: str) -> typer.Exit:
    err.print(f"[bold red]error:[/] {message}", highlight=False)
    return typer.Exit(2)


def _check_files(paths: Sequence[Path], what: str) -> None:
    for p in paths:
        if not p.exists():
            raise _fail(f"{p}: no such {what}")


def _load_inventory(paths: Sequence[Path] | None) -> Inventory | None:
    if not paths:
        return None
    _check_files(paths, "inventory file or directory")
    return load_inventory([str(p) for p in paths])


@contextmanager
def _progress(paths: Sequence[Path]) -> Iterator[Callable[[int], None]]:
    total = sum(p.stat().st_size for p in paths)
    show = err.is_terminal and total > 2 * 1024 * 1024
    with Progress(
        TextColumn("reading captures"),
        BarColumn(),
        DownloadColumn(),
        TimeRemainingColumn(),
        console=err,
        transient=True,
        disable=not show,
    ) as progress:
        task = progress.add_task("read", total=total)
        yield lambda n: progress.advance(task, n)


def _flows(captures: Sequence[Path], resolver: Resolver, problems: _Problems) -> list[NamedFlow]:
    _check_files(captures, "capture file")
    with _progress(captures) as advance:
        flows = list(read_flows(captures, resolver, on_problem=problems, progress=advance))
    problems.summary()
    return flows


class _Recorder:
    """Where a command's events go: opened before the work (a bad --db fails at once, before
    captures are read), written after the results are printed."""

    def __init__(self, db: str | None, no_store: bool, jsonl: Path | None) -> None:
        # The store pulls in SQLAlchemy (~0.4 s): imported only by the commands that write events.
        from podwall.store.events import EventStore

        self.jsonl = jsonl
        self.store = None
        if not no_store:
            try:
                self.store = EventStore(db)
            except ValueError as exc:
                raise _fail(f"--db: {exc}") from None

    def write(self, events: Sequence[Event]) -> None:
        from podwall.store.sinks import JsonlSink

        try:
            if self.jsonl is not None:
                with JsonlSink(self.jsonl) as sink:
                    sink.write(events)
            if self.store is not None and events:
                self.store.add(events)
        finally:
            if self.store is not None:
                self.store.close()


def _dump(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")


def _handles_errors(fn: Callable[..., None]) -> Callable[..., None]:
    """Report podwall's own errors (bad input) as a located message and exit code 2."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        try:
            fn(*args, **kwargs)
        except PodwallError as exc:
            raise _fail(str(exc)) from None
        except OSError as exc:
            raise _fail(f"{exc.filename or ''}: {exc.strerror or exc}") from None

    return wrapper


@app.command()
@_handles_errors
def analyze(
    captures: Captures,
    inventory: InventoryOpt = None,
    as_json: JsonOpt = False,
    flows: Annotated[bool, typer.Option("--flows", help="list individual flows instead of conversations")] = False,
) -> None:
    """Name every connection in the captures and print the conversations (or flows)."""
    inv = _load_inventory(inventory)
    resolver = Resolver(inv)
    problems = _Problems(quiet=as_json)
    named = _flows(captures, resolver, problems)
    if flows:
        if as_json:
            _dump({"flows": [nf.to_dict() for nf in named], "problems": [str(p) for p in problems.items]})
        else:
            out.print(render.flows_table(named))
        return
    convs = aggregate(named)
    if as_json:
        _dump({"conversations": [c.to_dict() for c in convs], "problems": [str(p) for p in problems.items]})
    else:
        out.print(render.conversations_table(convs))


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
) -> None:
    """Evaluate every connection against a policy; exit 1 when there are violations.

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
    named = _flows(captures, resolver, problems)
    items = check_flows(named, PolicyEngine(pol, dns_service_groups=dns_service_groups(inv, resolver)))
    events = violation_events(items, ",".join(map(str, captures)))
    violations = [i for i in items if i.verdict.violation]
    if as_json:
        _dump(
            {
                "policy": str(policy),
                "verdicts": [i.to_dict() for i in items],
                "violations": len(violations),
                "sessions_in_violation": sum(i.conversation.sessions for i in violations),
                "problems": [str(p) for p in problems.items],
                "complete": not problems.damaged,
            }
        )
    else:
        out.print(render.verdicts_table(items))
        render.print_violations(out, items)
        out.print(f"{len(violations)} violation(s) in {len(items)} conversation(s)")
    recorder.write(events)
    if problems.damaged and not allow_damaged:
        # A verdict over part of a capture must not pass as a clean bill of health.
        raise _fail(_damaged_message(problems, "the verdicts above cover only the traffic before the damage"))
    if violations:
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


@policy_app.command("validate")
@_handles_errors
def policy_validate(files: Annotated[list[Path], typer.Argument(help="policy YAML files")]) -> None:
    """Check policy files; report every error with its file, document and field path."""
    failed = False
    for f in files:
        try:
            pol = load_policy(f)
        except PodwallError as exc:
            failed = True
            err.print(f"[bold red]invalid:[/] {exc}", highlight=False)
            continue
        out.print(f"{f}: valid ({len(pol.spec.groups)} group(s), {len(pol.spec.rules)} rule(s))", highlight=False)
    if failed:
        raise typer.Exit(2)


@policy_app.command("import")
@_handles_errors
def policy_import(
    source: Annotated[
        Path, typer.Argument(help="NeuVector NvSecurityRule / NvClusterSecurityRule YAML (one or a List)")
    ],
    output: Annotated[Path | None, typer.Option("--output", "-o", help="write the podwall policy here")] = None,
) -> None:
    """Convert NeuVector security-rule CRDs into a podwall policy (rules become policy-as-code)."""
    from podwall.policy.formats.neuvector import parse_neuvector

    _check_files([source], "file")
    text = dump_policy(parse_neuvector(source.read_text(), str(source)))
    _emit(text, output)


@policy_app.command("export")
@_handles_errors
def policy_export(
    policy: Annotated[Path, typer.Argument(help="podwall policy YAML")],
    output: Annotated[Path | None, typer.Option("--output", "-o", help="write the CRDs here")] = None,
    cluster: Annotated[bool, typer.Option("--cluster", help="NvClusterSecurityRule objects only")] = False,
) -> None:
    """Export a podwall policy as NeuVector NvSecurityRule CRDs (fails on what NeuVector cannot express)."""
    from podwall.policy.formats.neuvector import export_neuvector

    _check_files([policy], "policy file")
    _emit(export_neuvector(load_policy(policy), cluster_scoped=cluster), output)


def _emit(text: str, output: Path | None) -> None:
    if output is None:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
    else:
        output.write_text(text)
        err.print(f"written to {output}", highlight=False)


@policy_app.command("connlist")
@_handles_errors
def policy_connlist(
    paths: Annotated[list[Path], typer.Argument(help="Kubernetes objects: files or directories (recursive)")],
    as_json: JsonOpt = False,
) -> None:
    """Allowed connections between workloads under Kubernetes NetworkPolicy / ANP / BANP, one per line
    in np-guard netpol-analyzer's format (`ns/name[Kind] => ns/name[Kind] : TCP 80`)."""
    from podwall.policy.connlist import connlist

    _check_files(paths, "file or directory")
    lines = connlist([str(p) for p in paths])
    if as_json:
        _dump([_connlist_record(line) for line in lines])
    else:
        sys.stdout.write("".join(line + "\n" for line in lines))


def _connlist_record(line: str) -> dict[str, str]:
    src, rest = line.split(" => ", 1)
    dst, conns = rest.split(" : ", 1)
    return {"src": src, "dst": dst, "conn": conns}


_PODWALL_KIND = re.compile(r"^kind:\s*['\"]?Policy['\"]?\s*(#.*)?$", re.MULTILINE)


def _is_podwall_policy(path: Path) -> bool:
    """A podwall policy file (a YAML file with a `kind: Policy` document), as opposed to
    Kubernetes objects (directories, or files of NetworkPolicies)."""
    if not path.is_file():
        return False
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return False
    return _PODWALL_KIND.search(text) is not None


@policy_app.command("diff")
@_handles_errors
def policy_diff(
    old: Annotated[Path, typer.Argument(help="the current policy: a podwall policy file or Kubernetes objects")],
    new: Annotated[Path, typer.Argument(help="the proposed policy: a podwall policy file or Kubernetes objects")],
    inventory: InventoryOpt = None,
    capture: Annotated[
        list[Path] | None,
        typer.Option("--capture", "-c", help="podwall policies: compare on this traffic (pcap/pcapng); repeatable"),
    ] = None,
    show_all: Annotated[
        bool, typer.Option("--all", help="podwall policies: also list connections whose deciding rule changed only")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Semantic diff: which connections the change newly allows, newly denies or changes (exit 1 if any).

    Two podwall policy files are compared on captured traffic (--capture) or on a synthetic
    connection per group pair, port and application their rules name (--inventory gives the
    workloads); directories or files of Kubernetes objects are compared connection by connection."""
    _check_files([old, new], "file or directory")
    podwall_files = [_is_podwall_policy(p) for p in (old, new)]
    if all(podwall_files):
        _podwall_diff(old, new, inventory, capture or [], show_all, as_json)
        return
    if any(podwall_files):
        which = old if podwall_files[0] else new
        raise _fail(f"{which} is a podwall policy and the other is not: compare two podwall policies or two sets of "
                    "Kubernetes objects")  # fmt: skip
    if inventory or capture or show_all:
        raise _fail("--inventory, --capture and --all apply to podwall policy files only")
    from podwall.policy.connlist import connlist

    before = {(r["src"], r["dst"]): r["conn"] for r in map(_connlist_record, connlist([str(old)]))}
    after = {(r["src"], r["dst"]): r["conn"] for r in map(_connlist_record, connlist([str(new)]))}
    changes = []
    for pair in sorted(before.keys() | after.keys()):
        was, now = before.get(pair), after.get(pair)
        if was == now:
            continue
        kind = "added" if was is None else "removed" if now is None else "changed"
        changes.append(
            {
                "change": kind,
                "src": pair[0],
                "dst": pair[1],
                "before": was or "No Connections",
                "after": now or "No Connections",
            }
        )
    if as_json:
        _dump(changes)
    else:
        for c in changes:
            out.print(f"{c['change']:8} {c['src']} => {c['dst']} : {c['before']} -> {c['after']}", highlight=False)
        out.print(f"{len(changes)} connection(s) differ", highlight=False)
    if changes:
        raise typer.Exit(1)


def _podwall_diff(
    old: Path, new: Path, inventory: Sequence[Path] | None, captures: Sequence[Path], show_all: bool, as_json: bool
) -> None:
    from podwall.core.types import Observation
    from podwall.policy.diff import SAME_OUTCOME, diff_policies, synthetic_observations

    before, after = load_policy(old), load_policy(new)
    inv = _load_inventory(inventory)
    resolver = Resolver(inv)
    observations: list[Observation]
    if captures:
        universe = "capture"
        observations = [nf.observation() for nf in _flows(captures, resolver, _Problems(quiet=as_json))]
    else:
        universe = "synthetic"
        observations = synthetic_observations(before, after, inv)
    entries = diff_policies(
        before, after, observations, dns_service_groups=dns_service_groups(inv, resolver), include_same=show_all
    )
    changes = [e for e in entries if e.kind != SAME_OUTCOME]
    if as_json:
        _dump(
            {
                "old": str(old),
                "new": str(new),
                "universe": universe,
                "observations": len(observations),
                "changes": [e.to_dict() for e in entries],
            }
        )
    else:
        for e in entries:
            port = f"{e.transport}/{e.port}" if e.port else e.transport
            app = f" {e.application}" if e.application else ""
            out.print(
                f"{e.kind:14} {e.client} → {e.server} {port}{app}: {e.old} -> {e.new} [{e.count} connection(s)]",
                highlight=False,
            )
        counts = {
            k: sum(1 for e in changes if e.kind == k) for k in ("newly-denied", "newly-allowed", "action-changed")
        }
        detail = ", ".join(f"{n} {k.replace('-', ' ')}" for k, n in counts.items() if n)
        out.print(
            f"{len(changes)} change(s){': ' + detail if detail else ''} "
            f"over {len(observations)} {universe} connection(s)",
            highlight=False,
        )
    if changes:
        raise typer.Exit(1)


@policy_app.command("explain")
@_handles_errors
def policy_explain(
    policy: Annotated[Path, typer.Argument(help="policy YAML")],
    from_: Annotated[
        str, typer.Option("--from", help="client: a group or zone, a reserved group, an inventory workload, or an IP")
    ],
    to: Annotated[
        str, typer.Option("--to", help="server: a group or zone, a reserved group, an inventory workload, or an IP")
    ],
    port: Annotated[str, typer.Option("--port", help="transport and server port: tcp/6379, udp/53 or icmp")],
    app_name: Annotated[str | None, typer.Option("--app", help="the application, as the DPI names it")] = None,
    inventory: InventoryOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Decide one hypothetical connection and explain the verdict: tiers, rules, modes, outcome."""
    from podwall.core.types import PROTO_ICMP, Observation
    from podwall.policy.endpoints import GroupMembers, endpoint_for
    from podwall.policy.model import parse_port_spec

    _check_files([policy], "policy file")
    pol = load_policy(policy)
    try:
        spec = parse_port_spec(port)
    except ValueError as exc:
        raise _fail(f"--port: {exc}") from None
    if spec.proto is None or (not spec.is_icmp and spec.lo != spec.hi):
        raise _fail(f"--port: {port!r} is not one port: write tcp/<port>, udp/<port> or icmp")
    proto, server_port = (PROTO_ICMP, 0) if spec.is_icmp else (spec.proto, spec.lo)
    inv = _load_inventory(inventory)
    dns = dns_service_groups(inv, Resolver(inv))
    engine = PolicyEngine(pol, dns_service_groups=dns)
    members = GroupMembers(pol, inv, engine)
    client = endpoint_for(from_, 49152 if proto != PROTO_ICMP else 0, members, inv)
    server = endpoint_for(to, server_port, members, inv)
    for option, text, found in (("--from", from_, client), ("--to", to, server)):
        if found is None:
            raise _fail(
                f"{option}: {text!r} is no IP address, no group of {policy} that an endpoint can be built for, "
                "and no workload of the inventory"
            )
    assert client is not None and server is not None
    obs = Observation(client.endpoint, server.endpoint, proto, server_port, app_name, (), server.server_name)
    verdict = engine.evaluate(obs)
    if as_json:
        _dump(
            {
                "policy": str(policy),
                "client": client.endpoint.as_dict(),
                "server": server.endpoint.as_dict(),
                "action": verdict.action,
                "violation": verdict.violation,
                "rule_id": verdict.rule_id,
                "rule_name": verdict.rule_name,
                "effective_mode": verdict.effective_mode,
                "explanation": verdict.explanation.to_dict(),
            }
        )
        return
    rule = f"rule {verdict.rule_id}" + (f" ({verdict.rule_name})" if verdict.rule_name else "")
    if verdict.rule_id == 0:
        rule = "rule 0 (implicit deny)"
    flag = ", violation" if verdict.violation else ""
    out.print(
        f"{client.endpoint.group} ({client.endpoint.ip or '-'}) → "
        f"{server.endpoint.group} ({server.endpoint.ip or '-'}) {port}{' ' + app_name if app_name else ''}",
        highlight=False,
    )
    out.print(f"verdict: {verdict.action}{flag} by {rule}, effective mode {verdict.effective_mode}", highlight=False)
    out.print(verdict.explanation.text, highlight=False)


@policy_app.command("analyze")
@_handles_errors
def policy_analyze(
    policy: Annotated[Path, typer.Argument(help="policy YAML")],
    inventory: InventoryOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Find shadowed, redundant and conflicting rules, empty and unused groups, disabled rules
    (exit 1 when a finding is a warning or worse)."""
    from podwall.policy.analyze import SEVERITY_RANK, WARNING, analyze_policy

    _check_files([policy], "policy file")
    pol = load_policy(policy)
    inv = _load_inventory(inventory)
    findings = analyze_policy(pol, inv)
    by_severity = {s: sum(1 for f in findings if f.severity == s) for s in SEVERITY_RANK}
    if as_json:
        _dump({"policy": str(policy), "findings": [f.to_dict() for f in findings], "summary": by_severity})
    else:
        style = {"info": "cyan", "warning": "yellow", "error": "bold red"}
        for f in findings:
            out.print(f"[{style[f.severity]}]{f.severity:7}[/] {f.kind:12} {f.message}", highlight=False)
        detail = ", ".join(f"{n} {s}" for s, n in by_severity.items() if n)
        out.print(f"{len(findings)} finding(s){': ' + detail if detail else ''}", highlight=False)
    if any(SEVERITY_RANK[f.severity] >= SEVERITY_RANK[WARNING] for f in findings):
        raise typer.Exit(1)


@app.command()
@_handles_errors
def monitor(
    policy: Annotated[Path, typer.Option("--policy", "-p", help="policy YAML to judge the traffic by")],
    lab: Annotated[str | None, typer.Option("--lab", help="the lab to tap (needed only when several are up)")] = None,
    state_dir: Annotated[Path | None, typer.Option("--state-dir", help="where labs keep their state")] = None,
    duration: Annotated[float | None, typer.Option(min=0.1, help="stop after this many seconds")] = None,
    db: DbOpt = None,
    jsonl: JsonlOpt = None,
    no_store: NoStoreOpt = False,
) -> None:
    """Watch a lab's pods from a passive AF_PACKET tap on the node (no inline cost) and record each
    violation as it happens; stops on Ctrl-C, SIGTERM or after --duration (root)."""
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
            rule = e.verdict.rule_id if e.verdict else "-"
            out.print(f"{e.time:%H:%M:%S} {e.type.value} {e.client.group} -> {e.server.group}:{e.server.port} "
                      f"{e.application} rule {rule}", highlight=False)  # fmt: skip

    err.print(f"monitoring lab {state.lab} ({len(state.pods)} pods); Ctrl-C to stop", highlight=False)
    try:
        stats = monitor_lab(state, pol, sinks, duration=duration, on_events=show)
    finally:
        for sink in sinks:
            sink.close()
    out.print(json.dumps(stats.to_dict()), highlight=False)


# --- enforce and quarantine (podwall/enforce/run.py, docs/enforce.md) ------------------------

quarantine_app = typer.Typer(
    help="Cut a workload off entirely on the running enforcer, and undo it.", no_args_is_help=True
)
app.add_typer(quarantine_app, name="quarantine")
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


@app.command()
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
    keep_rules: Annotated[bool, typer.Option("--keep-rules", help="leave the ruleset in place on stop")] = False,
    control_dir: ControlDirOpt = None,
    duration: Annotated[float | None, typer.Option(min=0.1, help="stop after this many seconds")] = None,
    db: DbOpt = None,
    jsonl: JsonlOpt = None,
    no_store: NoStoreOpt = False,
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
    if use_lab:
        from podwall.lab.cluster import find_lab

        state = find_lab(lab, state_dir)
        netns = netns or state.node_netns
        inv_paths = inv_paths or [Path(state.inventory)]
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
            rule = e.verdict.rule_id if e.verdict else "-"
            action = e.verdict.action if e.verdict else "-"
            out.print(f"{e.time:%H:%M:%S} {e.type.value} {action} {e.client.group} -> {e.server.group}:"
                      f"{e.server.port} {e.application} rule {rule}", highlight=False)  # fmt: skip

    service = EnforcerService(
        policy, inv_paths, netns, workers=workers, fail=fail, sinks=sinks, control_dir=where,
        keep_rules=keep_rules, queue_first=queue_first, restart_delay=restart_delay, on_events=show,
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


# --- end of enforce and quarantine -------------------------------------------------------------


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
