"""`podwall inspect`: run podwall's inspectors on saved traffic; `http` sends HTTP transactions through the WAF.

Exit codes: 0 every transaction passes, 1 at least one is blocked, 2 bad input (a file that
cannot be read or parsed, a bad option or sensors file). The WAF (and its rule set) is loaded
once for all the files given.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from podwall.cli.common import _dump, _handles_errors, err, out
from podwall.core.errors import InputError

if TYPE_CHECKING:
    from podwall.inspect.waf.engine import WafResult

inspect_app = typer.Typer(
    help="Inspect saved traffic with podwall's inspectors (WAF).",
    no_args_is_help=True,
)


@inspect_app.command("http")
@_handles_errors
def http(
    files: Annotated[
        list[Path],
        typer.Argument(
            help="files each holding one raw HTTP request, optionally followed by its response", show_default=False
        ),
    ],
    paranoia: Annotated[int, typer.Option("--paranoia", min=1, max=4, help="CRS paranoia level, 1 to 4")] = 1,
    threshold: Annotated[int, typer.Option("--threshold", min=1, help="inbound anomaly score that blocks")] = 5,
    sensors: Annotated[
        Path | None, typer.Option("--sensors", help="custom WAF sensors YAML (NeuVector's sensor shape)")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print a JSON array, one object per file")] = False,
    no_narrowing: Annotated[
        bool,
        typer.Option("--no-narrowing", help="count every CRS 3.3.4 match, also those CRS 4 no longer makes"),
    ] = False,
) -> None:
    """Inspect HTTP transactions with ModSecurity + OWASP CRS, podwall's own checks and custom sensors."""
    from podwall.inspect.waf.engine import WafEngine
    from podwall.inspect.waf.http_request import HttpTransaction, load_http_file
    from podwall.inspect.waf.sensors import WafSensor, load_sensors

    txns: list[tuple[Path, HttpTransaction]] = []
    problems = []
    for path in files:
        try:
            txns.append((path, load_http_file(path)))
        except InputError as exc:
            problems.extend(exc.problems)
    if problems:
        raise InputError("invalid HTTP request file(s)", problems)
    sensor_list: list[WafSensor] = load_sensors(sensors) if sensors is not None else []
    engine = WafEngine(paranoia=paranoia, threshold=threshold, sensors=sensor_list, narrow_crs=not no_narrowing)
    if not as_json:
        for warning in engine.warnings:
            err.print(f"[yellow]warning:[/] CRS: {warning}", highlight=False)
    results = [(path, engine.inspect(txn)) for path, txn in txns]
    if as_json:
        _dump([{"file": str(path), **result.to_dict()} for path, result in results])
    else:
        out.print(_table(results, paranoia, threshold))
        blocked = sum(1 for _, r in results if r.blocked)
        out.print(
            f"{blocked} of {len(results)} transaction(s) blocked (paranoia level {paranoia}, threshold {threshold})"
        )
    if any(r.blocked for _, r in results):
        raise typer.Exit(1)


def _table(results: list[tuple[Path, WafResult]], paranoia: int, threshold: int) -> Table:
    table = Table(title=f"WAF verdicts (CRS paranoia level {paranoia}, inbound threshold {threshold})")
    for col in ("file", "request", "verdict", "score", "rule", "category", "location", "message"):
        table.add_column(col, overflow="fold")
    for path, r in results:
        request = f"{r.l7.get('method', '')} {r.l7.get('path', '')}"
        verdict = "[red]block[/]" if r.blocked else "[green]pass[/]"
        score = f"{r.anomaly_score}" + (f" / out {r.outbound_score}" if r.outbound_score else "")
        if not r.matches:
            table.add_row(str(path), request, verdict, score, "-", "-", "-", "-")
        for i, m in enumerate(r.matches):
            first = i == 0
            table.add_row(
                str(path) if first else "",
                request if first else "",
                verdict if first else "",
                score if first else "",
                m.rule,
                m.category,
                m.location or "-",
                m.message,
            )
    return table
