"""`podwall policy`: validate, explain, analyze, diff, connlist, import and export (NeuVector).

Exit codes: 0 success, 1 findings or differences (`analyze`, `diff`), 2 bad input.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated

import typer

from podwall.analysis.check import dns_service_groups
from podwall.cli.common import (
    InventoryOpt,
    JsonOpt,
    _check_files,
    _dump,
    _fail,
    _flows,
    _handles_errors,
    _load_inventory,
    _Problems,
    err,
    out,
)
from podwall.core.errors import PodwallError
from podwall.inventory.resolver import Resolver
from podwall.policy.evaluate import PolicyEngine
from podwall.policy.formats.podwall_yaml import dump_policy, load_policy

policy_app = typer.Typer(
    help="Policy files: validate, explain, analyze, diff, connlist, import and export (NeuVector).",
    no_args_is_help=True,
)


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
