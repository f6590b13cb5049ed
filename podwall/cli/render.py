"""Rich renderings of conversations, flows, rules, verdicts and events for the terminal."""

from __future__ import annotations

from collections.abc import Sequence

from rich.console import Console
from rich.table import Table

from podwall.analysis.check import CheckedConversation
from podwall.analysis.conversations import Conversation, iso
from podwall.analysis.inspection import NamedFinding
from podwall.analysis.runner import NamedFlow
from podwall.core.events import Event
from podwall.policy.model import Policy


def _bytes(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return str(n)


def conversations_table(convs: Sequence[Conversation], title: str = "Conversations") -> Table:
    table = Table(title=title, title_justify="left", header_style="bold")
    for col in ("client group", "server group", "port", "transport", "application"):
        table.add_column(col)
    for col in ("sessions", "packets", "bytes"):
        table.add_column(col, justify="right")
    table.add_column("first seen")
    table.add_column("last seen")
    for c in convs:
        table.add_row(
            c.client_group,
            c.server_group,
            str(c.server_port) if c.server_port else "-",
            c.transport,
            c.application,
            str(c.sessions),
            str(c.packets),
            _bytes(c.bytes),
            iso(c.first_seen),
            iso(c.last_seen),
        )
    return table


def flows_table(flows: Sequence[NamedFlow]) -> Table:
    table = Table(title="Flows", title_justify="left", header_style="bold")
    for col in ("client", "server", "proto", "application", "server name", "client group", "server group"):
        table.add_column(col)
    table.add_column("packets", justify="right")
    table.add_column("bytes", justify="right")
    for nf in flows:
        f = nf.flow
        client = f"{_host(nf.client.ip)}:{f.client_port}"
        server = f"{_host(nf.server.ip)}:{f.server_port}"
        table.add_row(
            client,
            server,
            str(f.proto),
            nf.label,
            f.server_name or "",
            nf.client.group,
            nf.server.group,
            str(f.packets_total),
            str(f.bytes_total),
        )
    return table


def _host(ip: str) -> str:
    return f"[{ip}]" if ":" in ip else ip


def rules_table(policy: Policy, title: str = "Rules") -> Table:
    table = Table(title=title, title_justify="left", header_style="bold")
    for col in ("id", "from", "to", "ports", "applications", "action", "origin"):
        table.add_column(col)
    for r in sorted(policy.spec.rules, key=lambda r: r.id):
        table.add_row(
            str(r.id),
            r.from_,
            r.to,
            ",".join(r.ports),
            ",".join(r.applications),
            r.action,
            r.origin,
        )
    return table


def verdicts_table(items: Sequence[CheckedConversation], title: str = "Verdicts") -> Table:
    table = Table(title=title, title_justify="left", header_style="bold")
    for col in (
        "client group",
        "server group",
        "port",
        "application",
        "sessions",
        "verdict",
        "rule",
        "modes",
    ):
        table.add_column(col)
    for item in items:
        c, v = item.conversation, item.verdict
        style = "red" if v.violation else ("yellow" if v.action == "learn" else "green")
        table.add_row(
            c.client_group,
            c.server_group,
            str(c.server_port) if c.server_port else "-",
            c.application,
            str(c.sessions),
            f"[{style}]{'VIOLATION ' if v.violation else ''}{v.action}[/]",
            str(v.rule_id),
            f"{v.client_mode or '-'} / {v.server_mode or '-'}",
        )
    return table


def print_violations(console: Console, items: Sequence[CheckedConversation]) -> None:
    for item in items:
        if not item.verdict.violation:
            continue
        c, v = item.conversation, item.verdict
        console.print(
            f"[bold red]violation[/] {c.client_group} -> {c.server_group} "
            f"{c.transport}/{c.server_port} {c.application} ({c.sessions} session(s)): "
            f"{v.action}, rule {v.rule_id}"
        )
        console.print(f"  {v.explanation.text}", highlight=False, markup=False)


def events_table(events: Sequence[Event]) -> Table:
    table = Table(title="Events", title_justify="left", header_style="bold")
    for col in ("time", "type", "severity", "client", "server", "application", "action", "rule", "count"):
        table.add_column(col)
    for e in events:
        table.add_row(
            e.time.isoformat(timespec="seconds"),
            e.type.value,
            e.severity.value,
            e.client.group,
            f"{e.server.group}:{e.server.port}" if e.server.port else e.server.group,
            e.application,
            e.verdict.action if e.verdict else (e.detection.action if e.detection else ""),
            str(e.verdict.rule_id) if e.verdict else (e.detection.id if e.detection else ""),
            str(e.count),
        )
    return table


def _context(l7: dict[str, object]) -> str:
    """The L7 context of a finding in a few words: method and path, the SQL, the query name."""
    if "method" in l7 or "path" in l7:
        return f"{l7.get('method', '')} {l7.get('path', '')}".strip()
    for key in ("sql", "query", "qname", "command"):
        if key in l7:
            text = str(l7[key])
            return text if len(text) <= 60 else text[:57] + "..."
    return ""


def findings_table(findings: Sequence[NamedFinding], title: str = "Findings") -> Table:
    table = Table(title=title, title_justify="left", header_style="bold")
    for col in ("type", "id", "severity", "action", "client", "server", "application", "context", "match", "frame"):
        table.add_column(col)
    for nf in findings:
        f = nf.finding
        server = f"{nf.server.group}:{nf.server.port}" if nf.server.port else nf.server.group
        table.add_row(
            f.kind.value,
            f.id,
            f.severity.value,
            f.action.value,
            nf.client.group,
            server,
            nf.application,
            _context(f.l7),
            f.match or "",
            str(f.frame) if f.frame else "",
        )
    return table


def print_findings(console: Console, findings: Sequence[NamedFinding]) -> None:
    """Each finding's sentence, under the table (what was seen and the figures that made it fire)."""
    for nf in findings:
        f = nf.finding
        where = f" [{f.location}]" if f.location else ""
        pcap = f" pcap: {nf.pcap}" if nf.pcap else ""
        console.print(f"{f.kind.value} {f.id}: {f.message}{where}{pcap}", highlight=False, markup=False)
